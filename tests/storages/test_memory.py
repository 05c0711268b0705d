from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from botstate import LruMemoryStorage, MemoryStorage
from botstate.testing import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[..., Any]:
        return MemoryStorage


async def test_seeded_from_mapping_and_pairs() -> None:
    assert await MemoryStorage({"a": 1}).get("a") == 1
    assert await MemoryStorage([("b", [2])]).get("b") == [2]


async def test_expired_entries_free_their_memory_on_access() -> None:
    storage = MemoryStorage()
    await storage.set("k", 1, ttl=0.001)
    import asyncio

    await asyncio.sleep(0.01)
    assert len(storage) == 1
    assert await storage.get("k") is None
    assert len(storage) == 0


async def test_per_key_lock_table_is_pruned() -> None:
    storage = MemoryStorage()
    for i in range(1000):
        async with storage.lock(f"chat:{i}"):
            pass
    assert len(storage._locks) == 0


class TestLruMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[..., Any]:
        return lambda **options: LruMemoryStorage(max=5000, **options)


async def test_lru_evicts_least_recently_used() -> None:
    storage = LruMemoryStorage(max=3)
    await storage.set_many({"a": 1, "b": 2, "c": 3})
    await storage.get("a")  # a is now the most recent
    await storage.set("d", 4)
    assert await storage.has("b") is False
    assert await storage.get_many(["a", "c", "d"]) == [1, 3, 4]


async def test_lru_has_and_delete_do_not_bump_recency() -> None:
    storage = LruMemoryStorage(max=2)
    await storage.set("a", 1)
    await storage.set("b", 2)
    assert await storage.has("a")
    await storage.delete("missing")
    await storage.set("c", 3)
    assert await storage.has("a") is False
    assert await storage.get("b") == 2


async def test_lru_set_bumps_recency() -> None:
    storage = LruMemoryStorage(max=2)
    await storage.set("a", 1)
    await storage.set("b", 2)
    await storage.set("a", 10)
    await storage.set("c", 3)
    assert await storage.get_many(["a", "b", "c"]) == [10, None, 3]


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_lru_max_must_be_positive_int(bad: Any) -> None:
    with pytest.raises(ValueError):
        LruMemoryStorage(max=bad)
