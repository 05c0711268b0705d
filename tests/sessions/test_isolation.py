"""In-process isolation: same-key bodies one after another, other keys in parallel, bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from botstate import LockError, MemoryStorage
from botstate.sessions import Sessions
from botstate.wrappers import namespace


async def increments(sessions: Sessions[Any], count: int) -> None:
    async def one() -> None:
        async with sessions.open("counter") as session:
            value = session.data
            await asyncio.sleep(0)  # a handler awaiting something between read and write
            session.data = value + 1

    await asyncio.gather(*(one() for _ in range(count)))


async def test_same_key_bodies_run_one_after_another() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    await increments(Sessions(storage, initial=int), 200)
    assert await storage.get("session:counter") == 200


async def test_without_isolation_concurrent_bodies_lose_updates() -> None:
    # What the default prevents; "none" is for bots that serialise updates themselves.
    storage: MemoryStorage[Any] = MemoryStorage()
    await increments(Sessions(storage, initial=int, isolation="none"), 200)
    assert await storage.get("session:counter") < 200


async def test_two_sessions_objects_on_one_storage_do_not_lose_updates() -> None:
    # One Sessions per handler module, both on the bot's storage: they still queue per key.
    storage: MemoryStorage[Any] = MemoryStorage()

    async def both() -> None:
        await asyncio.gather(
            increments(Sessions(storage, initial=int), 100), increments(Sessions(storage, initial=int), 100)
        )

    await both()
    assert await storage.get("session:counter") == 200


async def test_sessions_on_two_views_of_one_storage_queue_for_the_same_entries() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    await asyncio.gather(
        increments(Sessions(namespace(storage, "bot:"), initial=int), 100),
        increments(Sessions(namespace(storage, "bot:"), initial=int), 100),
    )
    assert await storage.get("bot:session:counter") == 200


async def test_different_keys_run_in_parallel() -> None:
    sessions = Sessions(MemoryStorage(), initial=int)
    first_inside = asyncio.Event()
    second_done = asyncio.Event()

    async def first() -> None:
        async with sessions.open("a"):
            first_inside.set()
            await second_done.wait()  # would deadlock if "b" waited for "a"

    async def second() -> None:
        await first_inside.wait()
        async with sessions.open("b") as session:
            session.data = 1
        second_done.set()

    await asyncio.wait_for(asyncio.gather(first(), second()), 5)


async def test_lock_table_is_pruned_after_use() -> None:
    sessions = Sessions(MemoryStorage(), initial=int)
    for i in range(2000):
        async with sessions.open(f"chat{i}") as session:
            session.data += 1
    assert len(sessions.isolation.locks) == 0  # type: ignore[attr-defined]


class LostLease:
    def __init__(self, token: int, key: str) -> None:
        self.token = token
        self.key = key

    async def extend(self, lease: float | None = None) -> None:
        raise LockError("lease ran out", key=self.key, backend="memory")


class SlowRenewal:
    """A lock whose renewal is a slow round trip, with some clean-up when it is cancelled."""

    def __init__(self, token: int, storage: SlowRenewals) -> None:
        self.token = token
        self.storage = storage

    async def extend(self, lease: float | None = None) -> None:
        self.storage.renewing.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.storage.cleaning.set()
            await self.storage.cleaned.wait()  # a client closing its connection, say
            raise


class CustomLocks(MemoryStorage[Any]):
    """A memory storage whose locks are what ``make_lock`` returns (each test's odd lock)."""

    def make_lock(self, token: int, key: str) -> Any:
        raise NotImplementedError

    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def held() -> AsyncIterator[Any]:
            async with super(CustomLocks, self).lock(key, lease=lease, timeout=timeout) as lock:
                yield self.make_lock(lock.token, key)

        return held()


class LosingLocks(CustomLocks):
    """Locks that report, on renewal, that their lease ran out."""

    def make_lock(self, token: int, key: str) -> Any:
        return LostLease(token, key)


class SlowRenewals(CustomLocks):
    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.cleaning = asyncio.Event()
        self.cleaned = asyncio.Event()

    def make_lock(self, token: int, key: str) -> Any:
        return SlowRenewal(token, self)


async def test_a_session_whose_lock_was_lost_writes_nothing() -> None:
    storage = LosingLocks()
    sessions = Sessions(storage, initial=int, isolation="distributed", lease=0.03)

    async def handler() -> None:
        async with sessions.open("counter") as session:
            session.data = 5
            await asyncio.sleep(0.1)  # renewal runs, and finds the lock lost

    with pytest.raises(LockError, match="changes were not saved"):
        await handler()
    assert await storage.has("session:counter") is False


async def test_a_task_cancelled_while_its_session_lets_go_of_the_lock_is_cancelled() -> None:
    # Closing waits for the renewal in flight to end; a cancellation arriving meanwhile (a shutdown,
    # an asyncio.timeout) is the task's own and must reach it, with both locks let go.
    storage = SlowRenewals()
    sessions = Sessions(storage, initial=int, isolation="distributed", lease=1.5)
    went_on = False

    async def handler() -> None:
        nonlocal went_on
        async with sessions.open("counter") as session:
            session.data += 1
            await storage.renewing.wait()  # a renewal (after lease / 3) is in flight
        went_on = True

    task = asyncio.create_task(handler())
    await asyncio.wait_for(storage.cleaning.wait(), 5)  # closing cancelled the renewal
    task.cancel()  # while closing waits for the renewal's clean-up
    await asyncio.sleep(0)
    storage.cleaned.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on
    async with sessions.open("counter") as session:  # nothing is left held
        assert session.data == 1


class RecordingLocks(MemoryStorage[Any]):
    """Records the timeout each backend lock is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Any]:
        self.timeouts.append(timeout)
        return super().lock(key, lease=lease, timeout=timeout)


async def test_distributed_lock_timeout_bounds_both_waits_together() -> None:
    storage = RecordingLocks()
    sessions = Sessions(storage, initial=int, isolation="distributed", lock_timeout=5)
    first_inside = asyncio.Event()

    async def first() -> None:
        async with sessions.open("k") as session:
            first_inside.set()
            await asyncio.sleep(0.05)
            session.data += 1

    async def second() -> None:
        await first_inside.wait()
        async with sessions.open("k") as session:  # waits in the process first
            session.data += 1

    await asyncio.gather(first(), second())
    assert await storage.get("session:k") == 2
    # The first asks the backend for the whole bound; the second only for what its local wait left.
    first_timeout, second_timeout = storage.timeouts
    assert first_timeout is not None
    assert 4.5 < first_timeout <= 5
    assert second_timeout is not None
    assert 0 <= second_timeout < first_timeout - 0.04


async def test_lock_timeout_bounds_the_wait_for_a_busy_key() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    sessions = Sessions(storage, initial=int, lock_timeout=0.05)
    release = asyncio.Event()

    async def holder() -> None:
        async with sessions.open("counter") as session:
            session.data = 1
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)

    async def waiter() -> None:
        async with sessions.open("counter") as session:
            session.data = 2

    with pytest.raises(LockError):
        await waiter()
    release.set()
    await task
    assert await storage.get("session:counter") == 1


async def test_distributed_session_takes_the_backend_lock_once_around_read_and_write(counting: Any) -> None:
    sessions = Sessions(counting, initial=int, isolation="distributed")
    async with sessions.open("counter") as session:
        session.data += 1
    assert counting.calls == {"lock": 1, "get": 1, "set": 1}
