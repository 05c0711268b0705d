"""Must type-check cleanly under mypy --strict: how the generics are meant to be used."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, assert_type

from botstate import (
    LruMemoryStorage,
    MemoryStorage,
    ModelCodec,
    Storage,
    is_atomic_storage,
    is_iterable_storage,
    is_ttl_storage,
    open_storage,
)
from botstate.wrappers import enhance_storage, namespace

T = TypeVar("T")


@dataclasses.dataclass
class User:
    id: int
    name: str


async def untyped_default_is_any() -> None:
    storage = MemoryStorage()
    assert_type(storage, MemoryStorage[Any])
    assert_type(await storage.get("k"), Any | None)


async def typed_by_codec() -> None:
    users = MemoryStorage(codec=ModelCodec(User))
    assert_type(users, MemoryStorage[User])
    await users.set("u:1", User(1, "Ann"))
    assert_type(await users.get("u:1"), User | None)
    assert_type(await users.get("u:1", User(0, "nobody")), User)
    assert_type(await users.get("u:1", "fallback"), User | str)
    assert_type(await users.get_many(["u:1"]), list[User | None])
    async for key, user in users.entries():
        assert_type(key, str)
        assert_type(user, User)


async def typed_by_annotation() -> None:
    counters: Storage[int] = MemoryStorage()
    await counters.set("n", 1)
    assert_type(await counters.get("n"), int | None)
    lru: LruMemoryStorage[int] = LruMemoryStorage(max=10)
    assert_type(await lru.increment("n"), int)


async def capability_guards(storage: Storage[int]) -> None:
    if is_ttl_storage(storage):
        assert_type(await storage.touch("k", 5), bool)
    if is_atomic_storage(storage):
        assert_type(await storage.compare_and_set("k", 2, expected=1), bool)
    if is_iterable_storage(storage):
        async for value in storage.values():
            assert_type(value, int)


async def guards_on_concrete_classes() -> None:
    storage: MemoryStorage[int] = MemoryStorage()
    if is_atomic_storage(storage) and is_iterable_storage(storage):
        assert_type(await storage.increment("n"), int)
        async for value in storage.values():
            assert_type(value, int)


async def read(storage: Storage[T], key: str) -> T | None:
    return await storage.get(key)


async def generic_functions_infer_the_value_type() -> None:
    ints: MemoryStorage[int] = MemoryStorage()
    assert_type(await read(ints, "k"), int | None)
    assert_type(await read(namespace(ints, "n:"), "k"), int | None)
    assert_type(await read(enhance_storage(ints), "k"), int | None)


def open_by_url() -> None:
    storage = open_storage("memory://")
    assert_type(storage, Any)
