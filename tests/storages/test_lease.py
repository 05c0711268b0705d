"""The rules every backend's lease lock shares, on a small in-process lock table.

``Table`` keeps lock records the way a server would (token, lease end); ``TableLock`` is a
complete backend lock built on it, so these tests exercise ``LeaseLock`` and ``acquire`` exactly
as the real backends use them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta
from typing import Any

import pytest

from botstate.errors import LockError, StorageUnavailable
from botstate.storages._lease import BUSY, Busy, LeaseLock, acquire, lease_ms


class Table:
    """Lock records by key: ``(token, lease end in loop time)``."""

    def __init__(self, *, hint: bool = False) -> None:
        self.records: dict[str, tuple[int, float]] = {}
        self.tokens = 0
        self.hint = hint  # answer Busy with the time left on the current lease
        self.release_fails = False
        self.granting: asyncio.Event | None = None  # when set: a grant waits for it before answering

    def now(self) -> float:
        return asyncio.get_running_loop().time()


class TableLock(LeaseLock[int]):
    __slots__ = ("pauses", "table")

    min_delay = 0.001
    max_delay = 0.02

    def __init__(self, table: Table, key: str, *, lease: float = 5, timeout: float | None = None) -> None:
        super().__init__(key, "table", lease=lease, timeout=timeout)
        self.table = table
        self.pauses: list[float] = []

    async def _try_acquire(self, lease_ms: int) -> int | Busy:
        table, now = self.table, self.table.now()
        record = table.records.get(self._key)
        if record is not None and record[1] > now:
            return Busy(record[1] - now) if table.hint else BUSY
        table.tokens += 1
        table.records[self._key] = (table.tokens, now + lease_ms / 1000)
        if table.granting is not None:
            await table.granting.wait()  # the answer is still on its way when the caller gives up
        return table.tokens

    async def _extend(self, handle: int, lease_ms: int) -> bool:
        table, now = self.table, self.table.now()
        record = table.records.get(self._key)
        if record is None or record[0] != handle or record[1] <= now:
            return False
        table.records[self._key] = (handle, now + lease_ms / 1000)
        return True

    async def _release(self, handle: int) -> bool:
        if self.table.release_fails:
            raise StorageUnavailable("server went away", key=self._key, backend="table")
        await asyncio.sleep(0)  # a round trip: a cancellation may land here
        record = self.table.records.get(self._key)
        if record is None or record[0] != handle:
            return False
        del self.table.records[self._key]
        return True

    def _token_of(self, handle: int) -> int:
        return handle

    async def _pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(seconds)


# -- arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lease", [0, -1, math.nan, math.inf, True, None, "5", timedelta(seconds=5)])
def test_a_lease_is_positive_finite_seconds(lease: Any) -> None:
    with pytest.raises(ValueError, match="lease"):
        TableLock(Table(), "k", lease=lease)


@pytest.mark.parametrize("timeout", [-1, math.nan, False, "1"])
def test_a_timeout_is_none_or_seconds_at_least_zero(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TableLock(Table(), "k", timeout=timeout)


def test_leases_are_whole_milliseconds_of_at_least_one() -> None:
    assert (lease_ms(30), lease_ms(0.25), lease_ms(1e-6)) == (30_000, 250, 1)


@pytest.mark.parametrize("key", ["", b"k", None])
def test_bad_keys_are_refused_before_any_io(key: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        TableLock(Table(), key)


# -- acquiring ----------------------------------------------------------------------------------------


async def test_a_timeout_raises_lock_error_naming_key_and_backend() -> None:
    table = Table()
    async with TableLock(table, "chat:1"):
        with pytest.raises(LockError) as info:
            async with TableLock(table, "chat:1", timeout=0.05):
                pass
    assert (info.value.key, info.value.backend) == ("chat:1", "table")
    assert "not acquired within 0.05s" in str(info.value)


async def test_timeout_zero_tries_once() -> None:
    table = Table()
    async with TableLock(table, "k", timeout=0) as held:
        assert held.token == 1
        waiter = TableLock(table, "k", timeout=0)
        with pytest.raises(LockError):
            await waiter.__aenter__()
        assert waiter.pauses == []


async def test_waits_are_bounded_by_max_delay_and_never_pass_the_deadline() -> None:
    table = Table()
    async with TableLock(table, "k"):
        waiter = TableLock(table, "k", timeout=0.2)
        with pytest.raises(LockError):
            await waiter.__aenter__()
    assert len(waiter.pauses) > 3  # it kept polling until the deadline
    assert all(0 < pause <= TableLock.max_delay for pause in waiter.pauses)
    assert sum(waiter.pauses) <= 0.2  # each wait is cut to what is left before the deadline


async def test_a_known_lease_end_shortens_the_wait() -> None:
    table = Table(hint=True)
    holder = TableLock(table, "k", lease=0.005)
    await holder.__aenter__()  # abandoned: only its lease frees the key
    waiter = TableLock(table, "k", timeout=5)
    async with waiter as held:
        assert held.token == 2
    assert waiter.pauses
    assert all(pause <= 0.005 for pause in waiter.pauses)


async def test_acquire_returns_the_first_grant() -> None:
    answers: list[str | Busy] = [BUSY, Busy(0.001), "grant"]

    async def try_once() -> str | Busy:
        return answers.pop(0)

    granted = await acquire(
        try_once, key="k", backend="table", timeout=None, min_delay=0.001, max_delay=0.002
    )
    assert granted == "grant"
    assert answers == []


async def test_a_cancelled_acquisition_that_was_granted_gives_the_lock_back() -> None:
    table = Table()
    table.granting = asyncio.Event()
    waiter = asyncio.create_task(TableLock(table, "k").__aenter__())
    await asyncio.sleep(0.01)
    assert "k" in table.records  # granted, but the answer has not arrived yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    table.granting.set()
    table.granting = None
    async with TableLock(table, "k", timeout=1) as held:
        assert held.token == 2


# -- holding and releasing -------------------------------------------------------------------------------


async def test_tokens_grow_and_the_lock_can_be_taken_again_after_release() -> None:
    table = Table()
    lock = TableLock(table, "k")
    assert lock.token == 0
    async with lock as held:
        assert held is lock
        assert held.token == 1
        with pytest.raises(RuntimeError, match="already held"):
            await lock.__aenter__()
    assert table.records == {}
    async with lock as held:
        assert held.token == 2


async def test_extend_keeps_the_lock_past_its_first_lease() -> None:
    table = Table()
    async with TableLock(table, "k", lease=0.1) as held:
        await held.extend(5)
        await asyncio.sleep(0.15)
        await held.extend()
    assert table.records == {}


async def test_extend_outside_the_block_raises_lock_error() -> None:
    lock = TableLock(Table(), "k")
    with pytest.raises(LockError, match="not held"):
        await lock.extend()
    async with lock:
        pass
    with pytest.raises(LockError, match="not held"):
        await lock.extend()


async def test_a_clean_exit_after_the_lease_ran_out_raises_lock_error() -> None:
    table = Table()
    with pytest.raises(LockError, match="lock lost before release") as info:
        async with TableLock(table, "k", lease=0.02):
            await asyncio.sleep(0.05)  # nobody took it, but the body ran unprotected
    assert (info.value.key, info.value.backend) == ("k", "table")
    assert table.records == {}  # still released


async def test_a_clean_exit_after_a_take_over_raises_lock_error() -> None:
    table = Table()
    lost = TableLock(table, "k", lease=0.02)
    await lost.__aenter__()
    async with TableLock(table, "k", timeout=1) as taker:
        assert taker.token > lost.token
        with pytest.raises(LockError):
            await lost.__aexit__(None, None, None)
        assert table.records["k"][0] == taker.token  # the taker's record is left alone


async def test_a_loss_reported_by_extend_is_not_reported_again_at_exit() -> None:
    table = Table()
    async with TableLock(table, "k", lease=0.02) as held:
        await asyncio.sleep(0.05)
        with pytest.raises(LockError, match="lock lost: its lease ran out"):
            await held.extend()


async def test_the_bodys_exception_wins_over_a_failed_release(caplog: pytest.LogCaptureFixture) -> None:
    table = Table()

    async def failing_body() -> None:
        async with TableLock(table, "k"):
            table.release_fails = True
            raise KeyError("the handler failed")

    with caplog.at_level(logging.WARNING, logger="botstate"), pytest.raises(KeyError):
        await failing_body()
    assert "could not release the lock on 'k'" in caplog.text


async def test_the_bodys_exception_wins_over_a_lost_lock() -> None:
    async def outlive_the_lease_and_fail() -> None:
        async with TableLock(Table(), "k", lease=0.02):
            await asyncio.sleep(0.05)
            raise KeyError("the handler failed")

    with pytest.raises(KeyError):
        await outlive_the_lease_and_fail()


async def test_a_failed_release_after_a_clean_exit_raises() -> None:
    table = Table()
    with pytest.raises(StorageUnavailable):
        async with TableLock(table, "k"):
            table.release_fails = True


async def test_a_holder_cancelled_while_releasing_still_releases() -> None:
    table = Table()
    entered = asyncio.Event()
    lock = TableLock(table, "k")

    async def hold() -> None:
        async with lock:
            entered.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    holder.cancel()  # cancels the body; the release then starts
    await asyncio.sleep(0)
    holder.cancel()  # and again, while the release is in flight
    with pytest.raises(asyncio.CancelledError):
        await holder
    async with TableLock(table, "k", timeout=1) as held:
        assert held.token == 2
