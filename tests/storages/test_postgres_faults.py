"""PostgresStorage when the server misbehaves: killed connections, interrupted writes, a restart.

Runs against a throwaway server (``tests/_pg_server.py``), never the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from _pg_server import PgServer, pg_server_or_skip
from _services import require_module
from botstate import StorageUnavailable

asyncpg = require_module("asyncpg")

from botstate.storages.postgres import PostgresStorage  # noqa: E402

APP = "botstate-under-test"
"""The application_name of the storage's connections, so the tests can find and kill them."""


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    with pg_server_or_skip() as server:
        yield server


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


# A non-idempotent write, as (value before, the call, what it returns, value after): it must be
# applied exactly once or not at all, whatever happens to its connection.
WRITES: dict[str, tuple[Any, Callable[[PostgresStorage], Awaitable[Any]], Any, Any]] = {
    "increment": (5, lambda storage: storage.increment("k", 10), 15, 15),
    "compare_and_set": (
        {"n": 1},
        lambda storage: storage.compare_and_set("k", {"n": 2}, expected={"n": 1}),
        True,
        {"n": 2},
    ),
    "delete": ("here", lambda storage: storage.delete("k"), True, None),
}


async def _kill_while_waiting(server: PgServer, storage: PostgresStorage, call: Any) -> Any:
    """Start ``call`` while another transaction holds the row, kill its connection once it waits for
    the row lock, then let the row go: a call retried after the kill would now get through."""
    admin = await asyncpg.connect(server.dsn)
    try:
        async with admin.transaction():
            await admin.execute(f'SELECT 1 FROM "{storage.table}" WHERE id = $1 FOR UPDATE', b"k")
            task = asyncio.ensure_future(call(storage))
            killed = 0
            for _ in range(400):
                killed = await terminate_backends(server.dsn, "wait_event_type = 'Lock'")
                if killed or task.done():
                    break
                await asyncio.sleep(0.025)
            assert killed == 1
    finally:
        await admin.close()
    (outcome,) = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
    return outcome


async def _kill_while_idle(server: PgServer, storage: PostgresStorage, call: Any) -> Any:
    """Kill every pooled connection just before the call: the pool may or may not have noticed."""
    assert await terminate_backends(server.dsn) >= 1
    (outcome,) = await asyncio.wait_for(asyncio.gather(call(storage), return_exceptions=True), 15)
    return outcome


@pytest.mark.parametrize("when", [_kill_while_waiting, _kill_while_idle], ids=["mid-statement", "idle"])
@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_on_a_killed_connection_is_applied_once_or_not_at_all(
    server: PgServer, storage: PostgresStorage, write: str, when: Any
) -> None:
    before, call, returns, after = WRITES[write]
    await storage.set("k", before)
    outcome = await when(server, storage, call)
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, StorageUnavailable), outcome
        assert outcome.key == "k"
        assert await storage.get("k") == before  # not applied
    else:
        assert outcome == returns
        assert await storage.get("k") == after  # applied once: an increment by 10 is 15, never 25
    # The same storage object works again.
    await storage.set("k", before)
    assert await call(storage) == returns
    assert await storage.get("k") == after


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


async def test_a_server_down_on_first_use_is_unavailable_naming_each_key(
    server: PgServer, unique: str
) -> None:
    server.stop()
    try:
        storage: PostgresStorage = PostgresStorage(server.dsn, table=unique, connect_timeout=5)
        keys = ["a", "b", "c"]  # opening on first use is shared: each call still names its own key
        results = await asyncio.wait_for(
            asyncio.gather(*(storage.get(key) for key in keys), return_exceptions=True), 15
        )
        assert [type(result) for result in results] == [StorageUnavailable] * 3
        assert [result.key for result in results if isinstance(result, StorageUnavailable)] == keys
        with pytest.raises(StorageUnavailable) as info:
            await asyncio.wait_for(storage.increment("n"), 15)
        assert info.value.key == "n"
    finally:
        server.start()
