"""RedisStorage against the shared test server: the conformance suite and Redis-specific promises."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from _keyed_calls import keyed_calls
from _services import require_module
from botstate import open_storage
from botstate.errors import ConfigError, LockError, StorageUnavailable
from botstate.testing import StorageConformance

redis = require_module("redis.asyncio")

from _redis_servers import redis_server_or_skip  # noqa: E402
from botstate.storages.redis import RedisStorage  # noqa: E402


@pytest.fixture
def lock_prefix(unique: str) -> str:
    """This test's own lock prefix: the shared database's lock keys are never another test's
    (tests/conftest.py removes every key naming ``unique`` afterwards)."""
    return f"{unique}-lock:"


class TestRedisStorage(StorageConformance):
    persistent = True
    native_expiry = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, redis_url: str, unique: str, lock_prefix: str) -> Callable[..., Any]:
        return lambda **options: RedisStorage(
            redis_url, prefix=f"{unique}:", **{"lock_prefix": lock_prefix, **options}
        )

    @pytest.fixture
    def sibling_storage(self, redis_url: str, unique: str, lock_prefix: str) -> Callable[..., Any]:
        return lambda: RedisStorage(redis_url, prefix=f"{unique}-sibling:", lock_prefix=lock_prefix)


class TestRedisStorageOnDecodingClient(StorageConformance):
    """The same suite through a client that decodes replies to str, as many bots configure it."""

    persistent = True
    native_expiry = True
    distributed_locks = True

    @pytest_asyncio.fixture
    async def client(self, redis_url: str) -> AsyncIterator[Any]:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        yield client
        await client.aclose()

    @pytest.fixture
    def storage_factory(self, client: Any, unique: str, lock_prefix: str) -> Callable[..., Any]:
        return lambda **options: RedisStorage(
            client, prefix=f"{unique}:", **{"lock_prefix": lock_prefix, **options}
        )

    @pytest.fixture
    def sibling_storage(self, client: Any, unique: str, lock_prefix: str) -> Callable[..., Any]:
        return lambda: RedisStorage(client, prefix=f"{unique}-sibling:", lock_prefix=lock_prefix)


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


@pytest_asyncio.fixture
async def raw(redis_url: str) -> AsyncIterator[Any]:
    """A plain client, to look at what the storage wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def storage(redis_url: str, unique: str, lock_prefix: str) -> AsyncIterator[RedisStorage[Any]]:
    async with RedisStorage(redis_url, prefix=f"{unique}:", lock_prefix=lock_prefix) as storage:
        yield storage
        await storage.clear()


async def test_ttl_keeps_millisecond_precision(storage: RedisStorage[Any], raw: Any) -> None:
    async def pttl_after(write: Awaitable[Any], key: str) -> tuple[int, int]:
        """The key's PTTL right after ``write``, and the most that can have run off meanwhile."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await write
        pttl: int = await raw.pttl(f"{storage.prefix}{key}")
        return pttl, math.ceil((loop.time() - started) * 1000) + 1

    # Whole seconds would give 1000 or 2000; the slack is measured, so a slow machine stays green.
    pttl, slack = await pttl_after(storage.set("k", 1, ttl=1.5), "k")
    assert 1500 - slack <= pttl <= 1500
    pttl, slack = await pttl_after(storage.touch("k", 2.25), "k")
    assert 2250 - slack <= pttl <= 2250
    pttl, slack = await pttl_after(storage.set_many({"m": 1}, ttl=0.75), "m")
    assert 750 - slack <= pttl <= 750


async def test_values_are_plain_strings_under_the_prefix(storage: RedisStorage[Any], raw: Any) -> None:
    await storage.set("user:1", {"name": "Ann"})
    assert await raw.get(f"{storage.prefix}user:1") == b'{"name":"Ann"}'
    assert await raw.pttl(f"{storage.prefix}user:1") == -1


async def test_glob_characters_in_the_prefix_do_not_widen_it(
    redis_url: str, unique: str, lock_prefix: str
) -> None:
    async with (
        RedisStorage(redis_url, prefix=f"{unique}a*[b]:") as tricky,
        RedisStorage(redis_url, prefix=f"{unique}aX[b]:") as other,
        RedisStorage(redis_url, prefix=f"{unique}ab:") as third,
    ):
        await tricky.set("k", 1)
        await other.set("k", 2)
        await third.set("k", 3)
        assert await collect(tricky.keys()) == ["k"]
        assert await collect(tricky.entries("*")) == [("k", 1)]
        assert await tricky.clear() == 1
        assert await other.get("k") == 2
        assert await third.get("k") == 3
        await other.clear()
        await third.clear()


async def test_clear_removes_keys_under_the_prefix_that_are_not_utf8(
    storage: RedisStorage[Any], raw: Any
) -> None:
    foreign = storage.prefix.encode() + b"\xff\xfe"  # written by another client; no str names it
    await raw.set(foreign, b"x")
    await storage.set("k", 1)
    assert await collect(storage.keys()) == ["k"]
    assert await storage.clear() == 2
    assert await raw.exists(foreign) == 0


async def test_keys_that_look_like_lock_keys_are_entries(storage: RedisStorage[Any]) -> None:
    lock_key, token_key = storage._lock_keys("chat:1")
    async with storage.lock("chat:1", lease=5):
        await storage.set(lock_key, "entry")
        await storage.set(token_key, "entry")
        assert sorted(await collect(storage.keys())) == sorted([lock_key, token_key])
        assert await storage.get(lock_key) == "entry"
    assert await storage.clear() == 2


async def test_an_empty_prefix_keeps_lock_keys_out_of_the_entries(
    redis_url: str, unique: str, lock_prefix: str, raw: Any
) -> None:
    # Database 0 is shared with other tests: only look at our own keys, and never clear().
    storage: RedisStorage[Any] = RedisStorage(redis_url, prefix="", lock_prefix=lock_prefix)
    lock_key, token_key = storage._lock_keys("chat:1")
    async with storage, storage.lock("chat:1", lease=5):
        assert await raw.exists(lock_key, token_key) == 2
        assert await collect(storage.keys(f"{unique}-lock:*")) == []
        assert await collect(storage.keys(lock_key)) == []  # a literal pattern is no way round
        assert await collect(storage.entries(token_key)) == []
        for key in (lock_key, token_key, f"{unique}-lock:anything"):
            with pytest.raises(ConfigError, match="reserved") as info:
                await storage.has(key)
            assert key in str(info.value)
            assert "backend=redis" in str(info.value)
        calls = [
            storage.get(lock_key),
            storage.set(lock_key, "entry"),
            storage.delete(lock_key),
            storage.touch(lock_key, 5),
            storage.increment(token_key),
            storage.compare_and_set(lock_key, 1, expected=None),
            storage.get_many([f"{unique}:ok", lock_key]),
            storage.set_many({f"{unique}:ok": 1, token_key: 2}),
        ]
        for call in calls:
            with pytest.raises(ConfigError, match="reserved"):
                await call
        assert await raw.exists(lock_key, token_key) == 2  # the lock is untouched
        assert await storage.get(f"{unique}:ok") is None  # set_many refused as a whole
        await storage.set(f"{unique}:entry", 1)  # any other key is an entry as usual
        assert await collect(storage.keys(f"{unique}*")) == [f"{unique}:entry"]
        assert await storage.delete(f"{unique}:entry") is True


async def test_an_existing_client_is_not_closed_by_stop(
    redis_url: str, unique: str, lock_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        # redis-py reconnects silently after aclose(), so a working client proves nothing: the
        # server's id of the client's connection does, since a reconnect gets a new one.
        connection_id = await client.client_id()
        storage = RedisStorage(client, prefix=f"{unique}:")
        async with storage:
            await storage.set("k", 1)
        assert await client.client_id() == connection_id
        assert await client.get(f"{unique}:k") == b"1"
        await client.delete(f"{unique}:k")
    finally:
        await client.aclose()


async def test_a_resp3_client_works(redis_url: str, unique: str, lock_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, protocol=3, decode_responses=True)
    try:
        async with RedisStorage(client, prefix=f"{unique}:", lock_prefix=lock_prefix) as storage:
            await storage.set_many({"a": 1, "b": {"x": [1]}}, ttl=5)
            assert await storage.get_many(["a", "b", "c"]) == [1, {"x": [1]}, None]
            assert sorted(await collect(storage.keys())) == ["a", "b"]
            assert await storage.compare_and_set("a", 2, expected=1) is True
            assert await storage.increment("n", ttl=5) == 1
            async with storage.lock("a", lease=5) as held:
                assert held.token > 0
            assert await storage.clear() == 3
    finally:
        await client.aclose()


async def test_open_storage_urls(redis_url: str, unique: str, lock_prefix: str) -> None:
    query = f"?prefix={unique}:&lock_prefix={lock_prefix}&default_ttl=60&timeout=2"
    storage = open_storage(redis_url.replace("redis://", "valkey://") + query)
    assert isinstance(storage, RedisStorage)
    assert (storage.prefix, storage.lock_prefix) == (f"{unique}:", lock_prefix)
    assert (storage.default_ttl_ms, storage.timeout) == (60_000, 2)
    async with storage:
        await storage.set("k", 1)
        assert await storage.get("k") == 1
        assert await storage.clear() == 1
    with pytest.raises(ConfigError):
        RedisStorage("http://localhost")


async def test_a_lone_surrogate_key_is_a_value_error_naming_it(storage: RedisStorage[Any]) -> None:
    bad = "chat:\ud800"
    await storage.set("fine", 0)
    for name, call in keyed_calls(storage, bad).items():
        with pytest.raises(ValueError, match=r"not valid text: .* at position 5") as info:
            await call()
        assert repr(bad) in str(info.value), name
        assert "backend=redis" in str(info.value), name
    with pytest.raises(ValueError, match="backend=redis"):
        storage.lock(bad, lease=5)
    with pytest.raises(ValueError, match="pattern is not valid text"):
        [key async for key in storage.keys(bad + "*")]
    assert await storage.get("a") is None  # set_many wrote nothing
    assert await storage.get("fine") == 0


@pytest.mark.parametrize("query", ["prefx=x:", "socket_keepalive=true&sockettimeout=2"])
def test_a_misspelt_url_option_is_refused_at_once(query: str) -> None:
    # redis-py itself would only fail when connecting, with a TypeError about its own classes.
    misspelt = query.split("&")[-1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"unknown option\(s\) \['{misspelt}'\]"):
        open_storage(f"redis://127.0.0.1:6379/0?{query}")


async def test_tls_url_with_redis_py_options(unique: str) -> None:
    with redis_server_or_skip(tls=True) as server:
        url = f"{server.url}?ssl_ca_certs={server.certificate}&prefix={unique}:&timeout=5"
        async with open_storage(url) as storage, open_storage(url.replace("rediss", "valkeys")) as valkey:
            await storage.set("k", {"over": "tls"})
            assert await valkey.get("k") == {"over": "tls"}
            async with storage.lock("k", lease=5) as held:
                assert held.token > 0


async def test_cas_honours_equal_values_stored_in_another_order(storage: RedisStorage[Any], raw: Any) -> None:
    await raw.set(f"{storage.prefix}doc", b'{"b":2,"a":1}')
    assert await storage.compare_and_set("doc", {"new": True}, expected={"a": 1, "b": 2}) is True
    assert await storage.get("doc") == {"new": True}


async def test_counters_are_decimal_text(storage: RedisStorage[Any], raw: Any) -> None:
    await storage.set("n", 2**62)
    assert await storage.increment("n", 5, ttl=10) == 2**62 + 5  # beyond a double's precision
    assert await raw.get(f"{storage.prefix}n") == str(2**62 + 5).encode()
    assert await raw.pttl(f"{storage.prefix}n") == -1  # the ttl applies only on creation


async def test_lock_extend_and_loss(storage: RedisStorage[Any]) -> None:
    async with storage.lock("job", lease=0.2) as held:
        await held.extend(5)
        await asyncio.sleep(0.3)
        with pytest.raises(LockError):
            async with storage.lock("job", lease=5, timeout=0):
                pass

    async def outlive_the_lease() -> None:
        async with storage.lock("job", lease=0.1) as held:
            await asyncio.sleep(0.25)
            await held.extend()

    with pytest.raises(LockError, match="lock lost: its lease ran out"):
        await outlive_the_lease()


async def test_lock_raises_when_lost_before_release(storage: RedisStorage[Any]) -> None:
    async def outlive_the_lease() -> None:
        async with storage.lock("job", lease=0.1):
            await asyncio.sleep(0.25)

    with pytest.raises(LockError, match="lock lost before release"):
        await outlive_the_lease()


async def test_tokens_grow_across_a_lost_token_counter(storage: RedisStorage[Any], raw: Any) -> None:
    async with storage.lock("job") as first:
        pass
    await raw.delete(storage._lock_keys("job")[1])
    async with storage.lock("job") as second:
        assert second.token > first.token


async def test_coalesced_commands_keep_per_caller_order_and_errors(storage: RedisStorage[Any]) -> None:
    await storage.set("text", "x")

    async def writer(i: int) -> int:
        await storage.set(f"k{i}", i)
        return int(await storage.get(f"k{i}"))

    async def bad() -> None:
        await storage.increment("text")

    results = await asyncio.gather(*(writer(i) for i in range(50)), bad(), return_exceptions=True)
    assert results[:50] == list(range(50))
    assert type(results[50]).__name__ == "WrongTypeError"
    assert await storage.get_many([f"k{i}" for i in range(50)]) == list(range(50))


async def test_a_cancelled_caller_does_not_break_the_others(storage: RedisStorage[Any]) -> None:
    await storage.set_many({f"k{i}": i for i in range(20)})
    tasks = [asyncio.ensure_future(storage.get(f"k{i}")) for i in range(20)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    tasks[10].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i in (3, 10):
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == i
    assert await storage.get("k3") == 3


async def test_replies_reach_their_own_callers_while_others_are_cancelled(storage: RedisStorage[Any]) -> None:
    async def worker(i: int) -> None:
        for step in range(5):
            await storage.set(f"c{i}", [i, step])
            assert await storage.get(f"c{i}") == [i, step]

    tasks = [asyncio.ensure_future(worker(i)) for i in range(100)]
    for i in range(0, 100, 7):  # cancel a spread of callers at different points of their work
        for _ in range(i % 3):
            await asyncio.sleep(0)
        tasks[i].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 7:
            assert result is None, result  # finished, every read saw its own write
    assert await storage.get_many([f"c{i}" for i in range(1, 7)]) == [[i, 4] for i in range(1, 7)]


async def test_two_storages_on_one_prefix_lose_no_update(
    redis_url: str, unique: str, lock_prefix: str
) -> None:
    # Each storage has its own connection: their commands interleave on the server, not in a lane.
    def open_one() -> RedisStorage[Any]:
        return RedisStorage(redis_url, prefix=f"{unique}:", lock_prefix=lock_prefix)

    async def add_one(storage: RedisStorage[Any]) -> int:
        """Read-modify-write with compare_and_set; returns how many attempts lost a race."""
        for attempt in range(10_000):
            current = await storage.get("doc")
            if await storage.compare_and_set("doc", {"n": current["n"] + 1}, expected=current):
                return attempt
        raise AssertionError("compare_and_set never succeeded")

    async def worker(storage: RedisStorage[Any], times: int) -> int:
        lost = 0
        for _ in range(times):
            lost += await add_one(storage)
            await storage.increment("hits")
        return lost

    async with open_one() as first, open_one() as second:
        await first.set("doc", {"n": 0})
        lost = await asyncio.gather(*(worker(storage, 50) for storage in (first, second) for _ in range(4)))
        assert await second.get("doc") == {"n": 400}
        assert await first.get("hits") == 400
        assert sum(lost) > 0  # the writers did collide, so the count above proves something


async def test_unreachable_server_is_storage_unavailable(unused_tcp_port: int) -> None:
    storage: RedisStorage[Any] = RedisStorage(f"redis://127.0.0.1:{unused_tcp_port}/0", timeout=1)
    with pytest.raises(StorageUnavailable) as info:
        await storage.get("k")
    assert info.value.key == "k"
    assert await storage.health() is False
    await storage.stop()
