"""PostgresStorage when the server misbehaves: killed connections, interrupted writes, a restart.

Runs against a throwaway server (``tests/_pg_server.py``), never the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from _pg_server import PgServer, pg_server_or_skip
from _services import require_module
from botstate import StorageUnavailable
from botstate.storages.postgres import PostgresStorage

asyncpg = require_module("asyncpg")

APP = "botstate-under-test"
"""The application_name of the storage's connections, so the tests can find and kill them."""


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    server = pg_server_or_skip()
    try:
        yield server
    finally:
        server.destroy()


@pytest_asyncio.fixture
async def storage(server: PgServer, unique: str) -> AsyncIterator[PostgresStorage]:
    if server.pid() is None:  # a previous test left it stopped
        server.start()
    storage: PostgresStorage = PostgresStorage(
        server.dsn, table=unique, min_size=2, max_size=4, server_settings={"application_name": APP}
    )
    await storage.start()
    try:
        yield storage
    finally:
        await storage.stop()


async def terminate_backends(dsn: str, where: str = "true") -> int:
    """pg_terminate_backend on the storage's connections matching ``where``; returns how many."""
    conn = await asyncpg.connect(dsn)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE application_name = $1 AND pid <> pg_backend_pid() AND {where}",
            APP,
        )
        return killed
    finally:
        await conn.close()


async def test_terminated_connections_are_retried_or_reported_then_recover(
    server: PgServer, storage: PostgresStorage
) -> None:
    await storage.set("k", {"v": 1})
    for _ in range(3):
        assert await terminate_backends(server.dsn) >= 1
        (result,) = await asyncio.gather(storage.get("k"), return_exceptions=True)
        if isinstance(result, BaseException):  # both pooled connections were dead: reported
            assert isinstance(result, StorageUnavailable)
            assert result.key == "k"
        else:  # transparently retried on a fresh connection
            assert result == {"v": 1}
        assert await storage.get("k") == {"v": 1}
        assert await storage.health() is True
    await storage.set("k", 2)
    assert await storage.get("k") == 2


async def test_an_interrupted_set_many_is_not_half_applied(
    server: PgServer, storage: PostgresStorage
) -> None:
    await storage.set("k:0500", "old")
    admin = await asyncpg.connect(server.dsn)
    try:
        # Hold one row's lock so that set_many stops midway, with half its rows already written by
        # the statement, then kill its connection while it waits (and the retry's, if it retries).
        async with admin.transaction():
            await admin.execute(f'SELECT 1 FROM "{storage.table}" WHERE id = $1 FOR UPDATE', b"k:0500")
            task = asyncio.ensure_future(storage.set_many({f"k:{i:04}": i for i in range(1000)}))
            for _ in range(400):
                if task.done():
                    break
                await terminate_backends(server.dsn, "wait_event_type = 'Lock'")
                await asyncio.sleep(0.025)
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(task, 10)
        assert await storage.get("k:0500") == "old"
        assert await storage.get_many(["k:0000", "k:0499", "k:0501", "k:0999"]) == [None] * 4
        assert [key async for key in storage.keys("*")] == ["k:0500"]
    finally:
        await admin.close()


async def test_a_stopped_server_is_unavailable_and_a_restart_recovers(
    server: PgServer, storage: PostgresStorage
) -> None:
    await storage.set("k", "before")
    server.stop()
    try:
        with pytest.raises(StorageUnavailable) as info:
            await asyncio.wait_for(storage.get("k"), 15)  # refused at once; the bound only guards a hang
        assert info.value.key == "k"
        keys = [f"k:{i}" for i in range(20)]  # concurrent calls share statements: each gets its error
        results = await asyncio.wait_for(
            asyncio.gather(*(storage.get(key) for key in keys), return_exceptions=True), 15
        )
        assert [type(result) for result in results] == [StorageUnavailable] * 20
        assert [result.key for result in results if isinstance(result, StorageUnavailable)] == keys
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(storage.set("k", "during"), 15)
        assert await asyncio.wait_for(storage.health(), 15) is False
    finally:
        server.start()
    assert await storage.health() is True
    assert await storage.get("k") == "before"
    await storage.set("k", "after")
    assert await storage.get("k") == "after"
