"""Distributed isolation across real processes on every backend with shared locks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from _processes import children, finish, kill, spawn
from botstate.sessions import Sessions

SCRIPT = Path(__file__).with_name("_increment.py")


async def test_four_processes_never_lose_an_increment(storage: Any, url: str, unique: str) -> None:
    async with children(SCRIPT, [(url, unique, "increment", 250, 10)] * 4) as processes:
        outputs = [await finish(process, 90) for process in processes]
    assert all(out.strip() == b"done" for out in outputs)
    assert [process.returncode for process in processes] == [0] * 4
    assert await storage.get(f"{unique}:counter") == 1000


async def test_a_killed_holder_blocks_the_session_no_longer_than_its_lease(
    storage: Any, url: str, unique: str
) -> None:
    lease = 1.0
    holder = await spawn(SCRIPT, url, unique, "hold", 1, lease)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"holding\n"
    finally:
        await kill(holder)
    # The lease bounds the wait (plus a margin for a loaded machine): a longer one raises LockError.
    sessions = Sessions(storage, initial=int, name=unique, isolation="distributed", lock_timeout=lease + 2)
    async with sessions.open("counter") as session:
        assert session.data == 0  # the killed holder's change was never written
        session.data += 1
    assert await storage.get(f"{unique}:counter") == 1


async def test_a_live_holder_keeps_its_lease_while_the_body_runs(storage: Any, unique: str) -> None:
    # Two Sessions stand for two processes: each has its own in-process lock table.
    first, second = (
        Sessions(storage, initial=int, name=unique, isolation="distributed", lease=1, lock_timeout=20)
        for _ in range(2)
    )
    entered = asyncio.Event()

    async def slow() -> None:
        async with first.open("counter") as session:
            entered.set()
            await asyncio.sleep(2.2)  # over two leases: renewals keep the lock
            session.data += 1

    async def fast() -> int:
        await entered.wait()
        async with second.open("counter") as session:
            seen: int = session.data
            session.data += 1
        return seen

    _, seen = await asyncio.gather(slow(), fast())
    assert seen == 1
    assert await storage.get(f"{unique}:counter") == 2
