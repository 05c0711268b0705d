"""A storage used without ``start()`` still sweeps when given ``sweep_interval``.

Shared by the backends that open on first use (SQLite, PostgreSQL, SQLAlchemy): each counts its
rows with its own raw client, so the check sees the table, not what the storage chooses to show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def _sweepers(backend: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"botstate-sweep-{backend}" and not t.done()]


async def check_sweeps_without_start(storage: Any, count_rows: Callable[[], Awaitable[int]]) -> None:
    """``storage`` is fresh (never started) with a short ``sweep_interval``; it is stopped here."""
    try:
        await storage.set("gone", 1, ttl=0.001)
        await storage.set("kept", 2)
        for _ in range(250):  # bounded: the sweeper runs every few ms
            if await count_rows() == 1:
                break
            await asyncio.sleep(0.02)
        assert await count_rows() == 1  # the expired row is deleted, not only hidden
        assert await storage.get("kept") == 2
        assert len(_sweepers(storage.backend)) == 1
    finally:
        await storage.stop()
    assert _sweepers(storage.backend) == []
