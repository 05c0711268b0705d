from __future__ import annotations

import asyncio

import pytest

from botstate import LockError
from botstate._locks import KeyedLocks


async def test_same_key_runs_in_arrival_order_other_keys_in_parallel() -> None:
    locks = KeyedLocks()
    events: list[str] = []

    async def worker(key: str, name: str) -> None:
        async with locks.hold(key):
            events.append(f"{name}+")
            await asyncio.sleep(0.01)
            events.append(f"{name}-")

    await asyncio.gather(worker("a", "a1"), worker("a", "a2"), worker("b", "b1"))
    assert events.index("a1-") < events.index("a2+")
    assert events.index("b1+") < events.index("a1-")  # b did not wait for a
    assert len(locks) == 0


async def test_tokens_grow() -> None:
    locks = KeyedLocks()
    tokens = []
    for _ in range(3):
        async with locks.hold("k") as held:
            tokens.append(held.token)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 3


async def test_timeout_raises_lock_error_and_leaves_no_waiter() -> None:
    locks = KeyedLocks()
    async with locks.hold("k"):
        with pytest.raises(LockError):
            await locks.acquire("k", timeout=0.02)
    assert len(locks) == 0
    async with locks.hold("k", timeout=0.1):
        pass


async def test_cancelled_waiter_does_not_keep_the_key() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    waiter = asyncio.ensure_future(locks.acquire("k"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    locks.release("k")
    assert len(locks) == 0


async def test_waiters_that_gave_up_do_not_pile_up_behind_a_held_key() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    for _ in range(50):  # a stuck holder, and every update for its key timing out behind it
        with pytest.raises(LockError):
            await locks.acquire("k", timeout=0)
    assert not locks._held["k"]  # nothing queued is left: memory does not grow with the timeouts
    locks.release("k")
    assert len(locks) == 0


async def test_waiter_cancelled_after_handover_passes_the_key_on() -> None:
    locks = KeyedLocks()
    await locks.acquire("k")
    first = asyncio.ensure_future(locks.acquire("k"))
    second = asyncio.ensure_future(locks.acquire("k"))
    await asyncio.sleep(0)
    locks.release("k")  # handed to `first`, which has not resumed yet
    first.cancel()
    assert await asyncio.wait_for(second, 1) > 0
    locks.release("k")
    assert len(locks) == 0


async def test_table_is_pruned_after_many_keys() -> None:
    locks = KeyedLocks()
    for i in range(10_000):
        async with locks.hold(f"chat:{i}"):
            pass
    assert len(locks) == 0


async def test_try_acquire_takes_only_a_free_key() -> None:
    locks = KeyedLocks()
    token = locks.try_acquire("k")
    assert token is not None
    assert locks.try_acquire("k") is None
    locks.release("k")
    assert locks.try_acquire("k") is not None
    locks.release("k")
    assert len(locks) == 0


async def test_extend_works_while_held_and_raises_after_release() -> None:
    locks = KeyedLocks()
    async with locks.hold("chat:1") as held:
        await held.extend(5)
    with pytest.raises(LockError) as info:
        await held.extend(5)
    assert info.value.key == "chat:1"
    assert info.value.backend == "local"


async def test_lock_errors_name_the_owning_backend() -> None:
    locks = KeyedLocks(backend="MemoryStorage")
    async with locks.hold("k") as held:
        with pytest.raises(LockError) as timed_out:
            await locks.acquire("k", timeout=0.02)
    with pytest.raises(LockError) as released:
        await held.extend()
    assert timed_out.value.backend == released.value.backend == "MemoryStorage"
    assert timed_out.value.key == released.value.key == "k"
