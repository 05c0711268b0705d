"""Backends the wrapper and consumer tests run over: memory, SQLite, Redis and PostgreSQL.

Server backends get a namespace unique to the test, so runs never see each other's keys.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from botstate import MemoryStorage, open_storage
from botstate.wrappers import namespace

BACKENDS = ["memory", "sqlite", "redis", "postgres"]


class Minimal:
    """A third-party adapter implementing only the four ``Storage`` methods."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def set(self, key: str, value: Any, *, ttl: Any = None) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def has(self, key: str) -> bool:
        return key in self.data


class Yielding:
    """Forwards to ``inner``, letting other tasks run before and after each call it awaits.

    Memory and simple adapters never yield, so a naive read-then-write looks atomic over them:
    through this wrapper, concurrent callers really interleave between the read and the write.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def interleaved(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            result = await attribute(*args, **kwargs)
            await asyncio.sleep(0)
            return result

        return interleaved


def _open(name: str, request: pytest.FixtureRequest) -> Any:
    if name == "memory":
        return MemoryStorage()
    if name == "sqlite":
        return open_storage(f"sqlite:///{request.getfixturevalue('tmp_path') / 'state.db'}")
    url = request.getfixturevalue("redis_url" if name == "redis" else "postgres_dsn")
    return namespace(open_storage(url), request.getfixturevalue("unique") + ":")


@pytest_asyncio.fixture(params=BACKENDS)
async def any_storage(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A started, empty storage of each backend."""
    storage = _open(request.param, request)
    async with storage:
        try:
            yield storage
        finally:
            await storage.clear()
