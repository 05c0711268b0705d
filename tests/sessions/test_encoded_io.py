"""The I/O rules on the encoded fast path, counted at the backend rather than by ``sessions.stats``.

The storages here are real backends whose subclass counts each call and then runs the backend's
own method. Overriding ``get``/``set`` alone would make sessions refuse the fast path (so the
override is not bypassed), hence the encoded methods are overridden in the same class, and every
test checks that the fast path is the one in use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from botstate import LruMemoryStorage, MemoryStorage, SQLiteStorage
from botstate._ttl import TTL
from botstate.sessions import Sessions
from botstate.sessions.session import has_encoded_access, has_sync_access

KEY = "session:chat"


class _CountsCalls:
    """Counts the public calls sessions can make, then makes them."""

    calls: Counter[str]

    async def get(self, key: str, default: Any = None) -> Any:
        self.calls["get"] += 1
        return await super().get(key, default)  # type: ignore[misc]

    async def set(self, key: str, value: Any, *, ttl: TTL | None = None) -> None:
        self.calls["set"] += 1
        await super().set(key, value, ttl=ttl)  # type: ignore[misc]

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        self.calls["touch"] += 1
        return bool(await super().touch(key, ttl))  # type: ignore[misc]

    async def delete(self, key: str) -> bool:
        self.calls["delete"] += 1
        return bool(await super().delete(key))  # type: ignore[misc]


class _Counted(_CountsCalls):
    """And the awaited encoded access (every backend with encoded access has it)."""

    async def _get_encoded(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        data: bytes | None = await super()._get_encoded(key)  # type: ignore[misc]
        return data

    async def _set_encoded(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        self.calls["set"] += 1
        await super()._set_encoded(key, data, ttl_ms)  # type: ignore[misc]


class _CountedPlainCalls(_CountsCalls):
    """And the in-memory backends' fast path: encoded access by plain calls."""

    def _peek_encoded(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        data: bytes | None = super()._peek_encoded(key)  # type: ignore[misc]
        return data

    def _put_encoded(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        self.calls["set"] += 1
        super()._put_encoded(key, data, ttl_ms)  # type: ignore[misc]


class CountedMemory(_Counted, MemoryStorage[Any]):
    pass


class CountedPlainMemory(_CountedPlainCalls, MemoryStorage[Any]):
    pass


class CountedPlainLru(_CountedPlainCalls, LruMemoryStorage[Any]):
    pass


class CountedSQLite(_Counted, SQLiteStorage[Any]):
    pass


@pytest_asyncio.fixture(params=["memory", "memory-plain-calls", "lru-plain-calls", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kinds: dict[str, Any] = {"memory": CountedMemory, "memory-plain-calls": CountedPlainMemory}
    kinds["lru-plain-calls"] = CountedPlainLru
    storage: Any = kinds[request.param]() if request.param in kinds else CountedSQLite(str(tmp_path / "s.db"))
    storage.calls = Counter()
    async with storage:
        assert has_encoded_access(storage)  # the fast path, not the plain one
        assert has_sync_access(storage) is request.param.endswith("plain-calls")
        yield storage


async def _stored(storage: Any, value: Any) -> None:
    await storage.set(KEY, value)
    storage.calls.clear()


def test_the_counting_override_is_the_one_in_use() -> None:
    # Overriding the encoded methods and get/set in one class keeps the fast path...
    assert has_encoded_access(CountedMemory())

    # ...where overriding only get/set below them gives it up, so they are never bypassed.
    class OnlyGet(MemoryStorage[Any]):
        async def get(self, key: str, default: Any = None) -> Any:
            return await super().get(key, default)

    assert not has_encoded_access(OnlyGet())

    # Memory's encoded access by plain calls is used only while nothing overrides it: an override
    # of the awaited encoded methods (as CountedMemory's) keeps sessions on those.
    assert has_sync_access(MemoryStorage())
    assert has_sync_access(LruMemoryStorage())
    assert has_sync_access(CountedPlainMemory())
    assert not has_sync_access(CountedMemory())
    assert not has_sync_access(OnlyGet())
    assert not has_sync_access(SQLiteStorage(":memory:"))


async def test_untouched_lazy_session_does_no_io(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    async with Sessions(storage, lazy=True).open("chat"):
        pass
    assert storage.calls == {}


async def test_read_and_unchanged_is_one_read(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    async with Sessions(storage).open("chat") as session:
        assert session.data == {"n": 1}
    assert storage.calls == {"get": 1}


async def test_with_ttl_read_and_unchanged_is_one_read_and_one_touch(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    async with Sessions(storage, ttl=60).open("chat") as session:
        assert session.data == {"n": 1}
    assert storage.calls == {"get": 1, "touch": 1}


async def test_changed_is_one_read_and_one_write(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    async with Sessions(storage).open("chat") as session:
        session.data["n"] += 1
    assert storage.calls == {"get": 1, "set": 1}
    assert await storage.get(KEY) == {"n": 2}


async def test_none_deletes(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    async with Sessions(storage).open("chat") as session:
        session.data = None
    assert storage.calls == {"get": 1, "delete": 1}
    assert await storage.has(KEY) is False


async def test_untouched_initial_value_is_not_stored(storage: Any) -> None:
    async with Sessions(storage, initial=lambda: {"n": 0}).open("chat") as session:
        assert session.data == {"n": 0}
    assert storage.calls == {"get": 1}
    assert await storage.has(KEY) is False


async def test_a_body_that_raises_writes_nothing(storage: Any) -> None:
    await _stored(storage, {"n": 1})
    sessions = Sessions(storage, ttl=60)

    async def handler() -> None:
        async with sessions.open("chat") as session:
            session.data["n"] = 2
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        await handler()
    assert storage.calls == {"get": 1}
    assert await storage.get(KEY) == {"n": 1}
