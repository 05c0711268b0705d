"""RedisStorage when its server dies, restarts or stalls.

Runs against a throwaway server (``tests/_redis_servers.py``) with ``appendfsync always``, never
the shared one: the server is SIGKILLed mid-traffic and restarted on the same port and directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from _services import require_module
from botstate.errors import StorageUnavailable

redis = require_module("redis.asyncio")

from _redis_servers import RedisServer, redis_server_or_skip  # noqa: E402
from botstate.storages.redis import RedisStorage  # noqa: E402

BOUND = 20.0
"""Generous upper bound for anything that must not hang; not a speed expectation."""


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server_or_skip() as server:
        yield server


async def test_kill_mid_traffic_then_restart_keeps_acknowledged_writes(server: RedisServer) -> None:
    storage: RedisStorage[Any] = RedisStorage(server.url, prefix="faults:", timeout=2)
    await storage.start()
    acknowledged: dict[str, int] = {}
    counted = 0
    failures: list[BaseException] = []
    killed = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal counted
        for i in range(100_000):
            try:
                await storage.set(f"w{w}:{i}", i)
                acknowledged[f"w{w}:{i}"] = i
                await storage.increment("counter")
                counted += 1
            except StorageUnavailable as exc:
                failures.append(exc)
                return
            if len(acknowledged) >= 300 and not killed.is_set():
                killed.set()
                server.kill(signal.SIGKILL)

    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(20))), BOUND)
    assert killed.is_set()
    assert len(failures) == 20  # every writer got botstate's error, none hung or saw a client error
    assert all(isinstance(exc, StorageUnavailable) and exc.backend == "redis" for exc in failures)
    assert await storage.health() is False
    with pytest.raises(StorageUnavailable):
        await storage.get("w0:0")

    server.start()  # same port, same directory: the append-only file is replayed
    # The same storage object, never recreated, works again.
    assert await asyncio.wait_for(storage.health(), BOUND) is True
    keys = list(acknowledged)
    assert await storage.get_many(keys) == [acknowledged[key] for key in keys]
    total = await storage.get("counter")
    assert counted <= total <= counted + 20  # each writer may have had one unacknowledged hit
    await storage.clear()
    await storage.stop()


async def test_a_stalled_server_times_out_then_recovers(server: RedisServer) -> None:
    storage: RedisStorage[Any] = RedisStorage(server.url, prefix="stall:", timeout=0.5)
    async with storage:
        await storage.set("k", 1)
        process = server.process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(storage.get("k") for _ in range(10)), return_exceptions=True), BOUND
            )
            assert all(isinstance(result, StorageUnavailable) for result in results)
            assert await asyncio.wait_for(storage.health(), BOUND) is False
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert await storage.get("k") == 1
        await storage.clear()


async def test_a_batch_the_server_ran_before_dropping_the_connection_is_not_run_twice(
    server: RedisServer,
) -> None:
    """An increment whose connection dies after the server ran it must not be applied again."""
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    storage = RedisStorage(server.url, prefix=f"dup{uuid.uuid4().hex[:6]}:")
    try:
        async with storage:
            await storage.set("big", "x" * 300_000)
            await storage.get("warm")  # the storage's connection is open and will be reused
            await admin.config_set("client-output-buffer-limit", "normal 64kb 64kb 0")
            try:
                results = await asyncio.gather(
                    storage.get("warm"), storage.increment("n"), storage.get("big"), return_exceptions=True
                )
            finally:
                await admin.config_set("client-output-buffer-limit", "normal 0 0 0")
            assert any(isinstance(result, StorageUnavailable) for result in results)
            assert await storage.get("n") == 1  # the server ran it before the drop; not run again
            await storage.clear()
    finally:
        await admin.aclose()
