from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wrapper_backends import Minimal, any_storage

__all__ = ["any_storage"]  # the fixture, imported for pytest

from botstate import MemoryStorage, is_atomic_storage, is_iterable_storage, is_locking_storage, is_ttl_storage
from botstate.errors import CorruptValueError, LockError, WrongTypeError
from botstate.testing import StorageConformance
from botstate.wrappers import Namespace, namespace


async def _keys(storage: Any) -> list[str]:
    return sorted([key async for key in storage.keys("*")])


class TestNamespaceOverMemory(StorageConformance):
    """A view must keep the whole contract, sharing its storage with a sibling view."""

    @pytest.fixture
    def shared(self) -> MemoryStorage[Any]:
        return MemoryStorage()

    @pytest.fixture
    def storage_factory(self, shared: MemoryStorage[Any]) -> Callable[..., Any]:
        return lambda **options: namespace(MemoryStorage(**options) if options else shared, "ns:")

    @pytest.fixture
    def sibling_storage(self, shared: MemoryStorage[Any]) -> Callable[..., Any]:
        return lambda: namespace(shared, "other:")


async def test_views_share_a_storage_without_seeing_each_other() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    fsm, sessions = namespace(storage, "fsm:"), namespace(storage, "session:")
    await fsm.set("42", "form:name")
    await sessions.set("42", {"lang": "en"})
    assert await fsm.get("42") == "form:name"
    assert await sessions.get("42") == {"lang": "en"}
    assert await _keys(storage) == ["fsm:42", "session:42"]
    assert await _keys(fsm) == ["42"]
    assert await fsm.clear() == 1
    assert await sessions.get("42") == {"lang": "en"}


async def test_a_prefix_with_glob_characters_matches_only_itself() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    await storage.set_many({"a*:1": 1, "ab:1": 2, "a?:1": 3, "[a]:1": 4, "a:1": 5})
    view = namespace(storage, "a*:")
    assert await _keys(view) == ["1"]
    assert await namespace(storage, "[a]:").clear() == 1
    assert await storage.has("a:1")


# Each prefix with keys an unescaped glob (or SQL LIKE pattern) made of it would also match.
GLOB_PREFIXES = {
    "a*:": ["ab:1", "a:1", "axyz:1"],
    "a?:": ["ab:1", "a::1"],
    "[ab]:": ["a:1", "b:1"],
    "a]:": ["a:1"],
    "a\\b:": ["ab:1", "a\\xb:1"],
    "a%:": ["a:1", "axyz:1"],
    "a_:": ["ab:1", "a::1"],
    "*?[]\\%_:": ["x:1", "*?[]%_:1"],
}


@pytest.mark.parametrize("prefix", list(GLOB_PREFIXES))
async def test_a_prefix_with_glob_characters_matches_only_itself_on_every_backend(
    any_storage: Any, prefix: str
) -> None:
    decoys = GLOB_PREFIXES[prefix]
    await any_storage.set_many({prefix + "1": "mine", prefix + "2": "mine", **dict.fromkeys(decoys, "other")})
    view = namespace(any_storage, prefix)
    assert await _keys(view) == ["1", "2"]
    assert sorted([entry async for entry in view.entries("*")]) == [("1", "mine"), ("2", "mine")]
    assert [key async for key in view.keys("1")] == ["1"]
    assert await view.clear() == 2
    assert sorted(await _keys(any_storage)) == sorted(decoys)


async def test_errors_name_the_key_the_view_was_given() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    await storage.set("ns:counter", "text")
    view = namespace(storage, "ns:")
    with pytest.raises(WrongTypeError) as info:
        await view.increment("counter")
    assert info.value.key == "counter"
    assert info.value.backend == "memory"
    await storage.set("ns:bad", "x")
    storage._data["ns:bad"] = b"\xff not json"
    with pytest.raises(CorruptValueError) as corrupt:
        await view.get("bad")
    assert corrupt.value.key == "bad"
    assert corrupt.value.backend == "memory"


async def test_locks_are_prefixed_so_views_do_not_block_each_other() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    async with (
        namespace(storage, "a:").lock("chat", timeout=1),
        namespace(storage, "b:").lock("chat", timeout=1),
    ):
        with pytest.raises(LockError) as info:
            async with storage.lock("a:chat", timeout=0.05):
                pass
        with pytest.raises(LockError) as info:
            async with namespace(storage, "a:").lock("chat", timeout=0.05):
                pass
        assert info.value.key == "chat"


async def test_an_error_raised_inside_a_lock_reaches_the_caller_unchanged() -> None:
    view = namespace(MemoryStorage(), "ns:")
    error = LockError("the handler's own", key="ns:x", backend="mine")
    with pytest.raises(LockError) as info:
        async with view.lock("k"):
            raise error
    assert info.value is error


async def test_nested_views_join_their_prefixes() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    inner = namespace(namespace(storage, "bot1:"), "fsm:")
    await inner.set("7", 1)
    assert await _keys(storage) == ["bot1:fsm:7"]
    assert inner.prefix == "bot1:fsm:"


async def test_capabilities_mirror_the_wrapped_storage() -> None:
    full = namespace(MemoryStorage(), "x:")
    assert is_ttl_storage(full)
    assert is_iterable_storage(full)
    assert is_atomic_storage(full)
    assert is_locking_storage(full)
    minimal = namespace(Minimal(), "x:")  # type: ignore[arg-type]
    assert isinstance(minimal, Namespace)
    assert not is_ttl_storage(minimal)
    assert not is_iterable_storage(minimal)
    assert not is_atomic_storage(minimal)
    assert not is_locking_storage(minimal)
    with pytest.raises(AttributeError, match="compare_and_set"):
        minimal.compare_and_set  # noqa: B018
    await minimal.set("k", 1)
    assert await minimal.get("k") == 1
    assert minimal.wrapped.data == {"x:k": 1}  # type: ignore[attr-defined]
    async with minimal:  # lifecycle works even when the wrapped storage has none
        assert await minimal.delete("k") is True


@pytest.mark.parametrize("prefix", ["", None, 1])
def test_prefix_must_be_a_non_empty_str(prefix: Any) -> None:
    with pytest.raises(ValueError):
        namespace(MemoryStorage(), prefix)


class TestNamespaceOverSQLite(StorageConformance):
    """Views over one SQLite file: what lets sessions, FSM and rate limits share it."""

    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        from botstate.storages.sqlite import SQLiteStorage

        return lambda **options: namespace(SQLiteStorage(tmp_path / "state.db", **options), "ns:")

    @pytest.fixture
    def sibling_storage(self, tmp_path: Path) -> Callable[..., Any]:
        from botstate.storages.sqlite import SQLiteStorage

        return lambda: namespace(SQLiteStorage(tmp_path / "state.db"), "other:")


class TestNamespaceOverRedis(StorageConformance):
    persistent = True
    native_expiry = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, redis_url: str, unique: str) -> Callable[..., Any]:
        from botstate.storages.redis import RedisStorage

        return lambda **options: namespace(RedisStorage(redis_url, prefix=f"{unique}:", **options), "ns:")

    @pytest.fixture
    def sibling_storage(self, redis_url: str, unique: str) -> Callable[..., Any]:
        from botstate.storages.redis import RedisStorage

        return lambda: namespace(RedisStorage(redis_url, prefix=f"{unique}:"), "other:")
