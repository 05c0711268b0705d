"""Storages for the session tests: a counting one for the I/O rules, and every real backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from _services import require_module
from botstate import Lock, MemoryStorage, open_storage
from botstate._ttl import TTL


class CountingStorage:
    """MemoryStorage underneath; ``calls`` counts each backend method used."""

    backend = "counting"

    def __init__(self, **options: Any) -> None:
        self.inner: MemoryStorage[Any] = MemoryStorage(**options)
        self.codec = self.inner.codec
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        self.calls.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def get(self, key: str, default: Any = None) -> Any:
        self.calls["get"] += 1
        return await self.inner.get(key, default)

    async def set(self, key: str, value: Any, *, ttl: TTL | None = None) -> None:
        self.calls["set"] += 1
        await self.inner.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        self.calls["delete"] += 1
        return await self.inner.delete(key)

    async def has(self, key: str) -> bool:
        self.calls["has"] += 1
        return await self.inner.has(key)

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        self.calls["touch"] += 1
        return await self.inner.touch(key, ttl)

    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Lock]:
        self.calls["lock"] += 1

        @asynccontextmanager
        async def held() -> AsyncIterator[Lock]:
            async with self.inner.lock(key, lease=lease, timeout=timeout) as lock:
                yield lock

        return held()


@pytest.fixture
def counting() -> CountingStorage:
    return CountingStorage()


MODULES = {
    "sqlite": "botstate.storages.sqlite",
    "redis": "botstate.storages.redis",
    "postgres": "botstate.storages.postgres",
}


@pytest.fixture(params=list(MODULES))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend with locks shared between processes (its client library is required)."""
    require_module(MODULES[request.param])
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    fixture = "redis_url" if request.param == "redis" else "postgres_dsn"
    return str(request.getfixturevalue(fixture))


@pytest_asyncio.fixture
async def storage(url: str, unique: str) -> AsyncIterator[Any]:
    """The backend at ``url``; tests name their sessions ``unique``, whose keys are removed after."""
    async with open_storage(url) as storage:
        yield storage
        for key in [key async for key in storage.keys(f"{unique}:*")]:
            await storage.delete(key)
