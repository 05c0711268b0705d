"""Running bot processes from tests: spawn Python scripts, release them at once, reap them by pid.

Every wait is bounded; a child that outlives its test is killed by its pid, never by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from _services import require_module

Process = asyncio.subprocess.Process


async def spawn(script: Path, *args: object) -> Process:
    """``python script args...`` with stdin and stdout piped to the test."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *map(str, args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def kill(process: Process) -> None:
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()


async def finish(process: Process, timeout: float) -> bytes:
    """The rest of the child's output once it exits; killed when it takes longer than ``timeout``."""
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        await kill(process)
        raise
    return out


@asynccontextmanager
async def children(script: Path, runs: Sequence[Sequence[object]]) -> AsyncIterator[list[Process]]:
    """One child per argument list; any still running when the block ends is killed."""
    spawned: list[Process] = []
    try:
        for args in runs:
            spawned.append(await spawn(script, *args))
        yield spawned
    finally:
        for process in spawned:
            await kill(process)


async def release_together(processes: Sequence[Process], timeout: float) -> None:
    """Wait for each child's ``ready`` line (its storage open), then let all of them go at once."""
    for process in processes:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), timeout) == b"ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    await asyncio.gather(*(process.stdin.drain() for process in processes if process.stdin is not None))


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> str:
    """A storage URL several processes share: a temporary SQLite file, or Redis under a prefix
    naming the test (whose keys the Redis clean-up removes)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    require_module("botstate.storages.redis")
    base = str(request.getfixturevalue("redis_url"))
    return f"{base}{'&' if '?' in base else '?'}prefix={unique}:"
