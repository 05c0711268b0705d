"""Sessions over the built-in backends' encoded access keep every rule of the plain path.

On memory, LRU and SQLite a session reads the stored bytes, keeps them as its baseline and writes
the value's one encoding: these tests pin what that must not change (what is written, what is
not, the errors) and that a subclass overriding ``get``/``set`` is not bypassed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from botstate import CorruptValueError, LruMemoryStorage, MemoryStorage, SerializationError, SQLiteStorage
from botstate.sessions import MultiSessions, Sessions
from botstate.sessions.session import has_encoded_access

KEY = "session:chat"


def build(kind: str, tmp_path: Path, name: str = "s") -> Any:
    if kind == "memory":
        return MemoryStorage[Any]()
    if kind == "lru":
        return LruMemoryStorage[Any](max=10)
    return SQLiteStorage[Any](str(tmp_path / f"{name}.db"))


@pytest_asyncio.fixture(params=["memory", "lru", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with build(request.param, tmp_path) as storage:
        assert has_encoded_access(storage)
        yield storage


async def test_in_place_nested_edit_is_written_as_set_would_write_it(storage: Any, tmp_path: Path) -> None:
    await storage.set(KEY, {"profile": {"tags": ["a"]}, "n": 1.5})
    sessions = Sessions(storage)
    async with sessions.open("chat") as session:
        session.data["profile"]["tags"].append("b")
    expected = {"profile": {"tags": ["a", "b"]}, "n": 1.5}
    assert await storage.get(KEY) == expected
    assert sessions.stats.writes == 1
    async with build(type(storage).backend, tmp_path, "reference") as reference:
        await reference.set(KEY, expected)
        assert await storage._get_encoded(KEY) == await reference._get_encoded(KEY)


async def test_a_value_left_as_it_was_is_not_written(storage: Any) -> None:
    await storage.set(KEY, {"n": 1, "items": ["tea"]}, ttl=0.15)
    sessions = Sessions(storage)
    async with sessions.open("chat") as session:
        assert session.data["items"] == ["tea"]
        session.data = {"n": 1, "items": ["tea"]}  # an equal value is no change either
    assert (sessions.stats.writes, sessions.stats.unchanged) == (0, 1)
    await asyncio.sleep(0.3)
    assert await storage.has(KEY) is False  # a write (no ttl) would have kept it


async def test_new_and_deleted_sessions(storage: Any) -> None:
    sessions: Sessions[dict[str, list[str]]] = Sessions(storage, initial=lambda: {"items": []})
    async with sessions.open("chat") as session:
        assert session.data == {"items": []}
    assert await storage.has(KEY) is False  # an untouched initial value is not stored
    async with sessions.open("chat") as session:
        session.data["items"].append("tea")
    assert await storage.get(KEY) == {"items": ["tea"]}
    async with sessions.open("chat") as session:
        session.data = None
    assert await storage.has(KEY) is False


async def test_corrupt_stored_bytes_raise_naming_the_key_and_release_the_lock(storage: Any) -> None:
    await storage._set_encoded(KEY, b"{not json", None)
    sessions = Sessions(storage, lock_timeout=1)
    with pytest.raises(CorruptValueError) as raised:
        async with sessions.open("chat"):
            pass
    assert raised.value.key == KEY
    await storage.set(KEY, {"n": 1})
    async with sessions.open("chat") as session:  # the key's lock was let go
        assert session.data == {"n": 1}


async def test_an_unencodable_value_raises_naming_the_key_and_writes_nothing(storage: Any) -> None:
    await storage.set(KEY, {"n": 1})
    sessions = Sessions(storage)
    with pytest.raises(SerializationError) as raised:
        async with sessions.open("chat") as session:
            session.data["when"] = {1, 2}
    assert raised.value.key == KEY
    assert await storage.get(KEY) == {"n": 1}
    with pytest.raises(SerializationError) as raised:
        async with sessions.open("other") as session:
            session.data = {"when": {1, 2}}  # nothing stored yet: refused like set() refuses it
    assert raised.value.key == "session:other"
    assert await storage.has("session:other") is False
    assert sessions.stats.writes == 0


async def test_with_ttl_a_session_expired_during_its_body_is_stored_again(storage: Any) -> None:
    await storage.set(KEY, {"n": 1}, ttl=0.3)
    sessions = Sessions(storage, ttl=60)
    async with sessions.open("chat") as session:
        assert session.data == {"n": 1}
        await asyncio.sleep(0.5)  # gone by the end: touch finds nothing, the value is written
    assert (sessions.stats.touches, sessions.stats.writes) == (1, 1)
    assert await storage.get(KEY) == {"n": 1}


async def test_lru_sessions_keep_recency_and_eviction() -> None:
    storage = LruMemoryStorage[Any](max=2)
    await storage.set("session:a", 1)
    await storage.set("session:b", 2)
    sessions = Sessions(storage)
    async with sessions.open("a") as session:  # a read: "a" is now the most recently used
        assert session.data == 1
    async with sessions.open("c") as session:  # a write: evicts the least recently used, "b"
        session.data = 3
    assert [await storage.has(f"session:{key}") for key in "abc"] == [True, False, True]


async def test_a_subclass_overriding_set_is_not_bypassed() -> None:
    class Audited(MemoryStorage[Any]):
        def __init__(self) -> None:
            super().__init__()
            self.written: list[str] = []

        async def set(self, key: str, value: Any, *, ttl: Any = None) -> None:
            self.written.append(key)
            await super().set(key, value, ttl=ttl)

    storage = Audited()
    assert not has_encoded_access(storage)
    async with Sessions(storage).open("chat") as session:
        session.data = {"n": 1}
    assert storage.written == [KEY]
    assert await storage.get(KEY) == {"n": 1}


@pytest.mark.parametrize("isolation", ["local", "distributed"])
@pytest.mark.parametrize("lazy", [False, True])
async def test_concurrent_updates_of_one_key_are_serialised(storage: Any, isolation: Any, lazy: bool) -> None:
    sessions: Sessions[int] = Sessions(storage, initial=int, isolation=isolation, lazy=lazy)

    async def bump() -> None:
        async with sessions.open("chat") as session:
            await session.load()
            value = session.data
            await asyncio.sleep(0)  # let the others run between the read and the write
            session.data = value + 1

    await asyncio.gather(*(bump() for _ in range(10)))
    assert await storage.get(KEY) == 10


async def test_multi_sessions_read_and_write_each_part(storage: Any) -> None:
    multi = MultiSessions(
        settings=Sessions(storage, name="settings", initial=lambda: {"lang": "en"}),
        cart=Sessions(storage, name="cart", initial=list, lazy=True),
    )
    async with multi.open("chat") as session:
        assert session.settings.data == {"lang": "en"}
        (await session.cart.load()).append("tea")
    assert await storage.has("settings:chat") is False
    assert await storage.get("cart:chat") == ["tea"]
