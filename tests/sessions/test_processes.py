"""Distributed isolation across real processes on every backend with shared locks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from botstate.sessions import Sessions

SCRIPT = Path(__file__).with_name("_increment.py")


async def spawn(*args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *map(str, args), stdout=asyncio.subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process, timeout: float) -> bytes:
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        raise
    return out


async def test_four_processes_never_lose_an_increment(storage: Any, url: str, unique: str) -> None:
    processes = [await spawn(url, unique, "increment", 250, 10) for _ in range(4)]
    outputs = [await finish(process, 90) for process in processes]
    assert all(out.strip() == b"done" for out in outputs)
    assert [process.returncode for process in processes] == [0] * 4
    assert await storage.get(f"{unique}:counter") == 1000


async def test_a_killed_holder_blocks_the_session_no_longer_than_its_lease(
    storage: Any, url: str, unique: str
) -> None:
    lease = 1.0
    holder = await spawn(url, unique, "hold", 1, lease)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"holding\n"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        await holder.wait()
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
