"""What RedisStorage sends to the server, counted by the server itself (``INFO commandstats``).

Runs against a throwaway server (``tests/_redis_servers.py``), so the counts are this module's
alone: iteration never uses ``KEYS`` (it blocks a production server) and really pages with
``SCAN``; multi-key calls cost one command, not one per key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from _services import require_module

redis = require_module("redis.asyncio")

from _redis_servers import RedisServer, redis_server_or_skip  # noqa: E402
from botstate.storages.redis import RedisStorage  # noqa: E402

ENTRIES = 60
SCAN_COUNT = 4


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server_or_skip() as server:
        yield server


@pytest_asyncio.fixture
async def raw(server: RedisServer) -> AsyncIterator[Any]:
    client = redis.Redis.from_url(server.url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def storage(server: RedisServer, unique: str) -> AsyncIterator[RedisStorage[Any]]:
    async with RedisStorage(server.url, prefix=f"{unique}:", scan_count=SCAN_COUNT) as storage:
        yield storage
        await storage.clear()


async def commands(raw: Any) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT``, without this client's own."""
    stats = await raw.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }


async def test_iteration_and_clear_page_with_scan_never_keys(storage: RedisStorage[Any], raw: Any) -> None:
    mapping = {f"k{i}": i for i in range(ENTRIES)}
    await storage.set_many(mapping)
    runs: dict[str, Callable[[], AsyncIterator[Any]]] = {
        "keys": storage.keys,
        "keys with a pattern": lambda: storage.keys("k1*"),
        "values": storage.values,
        "entries": storage.entries,
    }
    expected = {
        "keys": sorted(mapping),
        "keys with a pattern": sorted(key for key in mapping if key.startswith("k1")),
        "values": sorted(mapping.values()),
        "entries": sorted(mapping.items()),
    }
    for name, run in runs.items():
        await raw.config_resetstat()
        assert sorted([item async for item in run()]) == expected[name], name
        sent = await commands(raw)
        assert "keys" not in sent, name
        assert sent["scan"] > 1, name  # several pages, each with the small COUNT
    await raw.config_resetstat()
    assert await storage.clear() == ENTRIES
    sent = await commands(raw)
    assert "keys" not in sent
    assert sent["scan"] > 1
    assert [key async for key in storage.keys("*")] == []


async def test_get_many_and_set_many_are_one_command_each(storage: RedisStorage[Any], raw: Any) -> None:
    mapping = {f"k{i}": i for i in range(ENTRIES)}
    await storage.set_many({"warm": 0}, ttl=60)  # the script is known to the server from now on
    for ttl in (None, 60):
        await raw.config_resetstat()
        await storage.set_many(mapping, ttl=ttl)
        # One command from the client; the server counts the SETs its script runs as well.
        assert await commands(raw) == ({"mset": 1} if ttl is None else {"evalsha": 1, "set": ENTRIES})
    await raw.config_resetstat()
    assert await storage.get_many([*mapping, "missing"]) == [*mapping.values(), None]
    assert await commands(raw) == {"mget": 1}


async def test_set_many_with_a_ttl_sends_its_script_in_full_only_when_the_server_lacks_it(
    storage: RedisStorage[Any], raw: Any
) -> None:
    await raw.script_flush()  # as after a restart or a failover
    await raw.config_resetstat()
    await storage.set_many({"a": 1, "b": 2}, ttl=60)
    assert await commands(raw) == {"evalsha": 1, "eval": 1, "set": 2}
    assert await storage.get_many(["a", "b"]) == [1, 2]
    assert 0 < await raw.pttl(f"{storage.prefix}a") <= 60_000
