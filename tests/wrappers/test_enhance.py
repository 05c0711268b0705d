from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wrapper_backends import Minimal, any_storage

__all__ = ["any_storage"]  # the fixture, imported for pytest

from botstate import MemoryStorage, PickleCodec, is_atomic_storage, is_ttl_storage
from botstate._ttl import now_ms
from botstate.errors import CorruptValueError
from botstate.testing import StorageConformance, SwitchableCodec
from botstate.wrappers import enhance_storage, namespace


class EnhancedConformance(StorageConformance):
    """Envelopes must be invisible: the wrapped storage keeps the whole contract."""

    async def test_corrupt_stored_value_raises_and_is_kept(self, open_storage: Callable[..., Any]) -> None:
        # Replaces the suite's version, which writes raw bytes through the wrapper: an envelope
        # is a dict, so the corrupt bytes go into the storage underneath instead.
        codec = SwitchableCodec()
        storage = await open_storage(codec=codec)
        await storage.clear()
        codec.raw = True
        await storage.wrapped.set("bad", b"\xff\xfe{not json")
        codec.raw = False
        with pytest.raises(CorruptValueError) as info:
            await storage.get("bad")
        assert info.value.key == "bad"
        assert await storage.has("bad") is True
        await storage.set("bad", "repaired")
        assert await storage.get("bad") == "repaired"
        codec.raw = True
        await storage.wrapped.set("bad", b"\xff")
        codec.raw = False
        assert await storage.delete("bad") is True
        await storage.clear()

    async def test_typed_values_with_model_codec(self) -> None:
        pytest.skip("envelopes are dicts: the wrapped storage needs a JSON codec, not a ModelCodec")

    async def test_increment_needs_a_codec_that_stores_ints_as_json(
        self, open_storage: Callable[..., Any]
    ) -> None:
        # Counters live inside envelopes here, so any codec the wrapped storage uses holds them.
        storage = await open_storage(codec=PickleCodec())
        await storage.clear()
        assert await storage.increment("n", 2) == 2
        assert await storage.get("n") == 2
        await storage.clear()


class TestEnhancedOverMemory(EnhancedConformance):
    @pytest.fixture
    def storage_factory(self) -> Callable[..., Any]:
        return lambda **options: enhance_storage(MemoryStorage(**options))


class TestEnhancedOverSQLite(EnhancedConformance):
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        from botstate.storages.sqlite import SQLiteStorage

        return lambda **options: enhance_storage(SQLiteStorage(tmp_path / "state.db", **options))


def _v1(data: Any) -> dict[str, Any]:
    return {"name": data}


def _v2(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first": first, "last": last}


MIGRATIONS = {1: _v1, 2: _v2}


async def test_legacy_value_is_migrated_in_order_and_written_back(any_storage: Any) -> None:
    await any_storage.set("user:1", "Ada Lovelace")
    await any_storage.set("user:2", {"__v": 1, "__exp": None, "data": {"name": "Grace Hopper"}})
    users = enhance_storage(any_storage, migrations=MIGRATIONS, ttl=60)
    before = now_ms()
    assert await users.get("user:1") == {"first": "Ada", "last": "Lovelace"}
    assert await users.get("user:2") == {"first": "Grace", "last": "Hopper"}
    stored = await any_storage.get("user:1")
    assert stored["__v"] == 2
    assert stored["data"] == {"first": "Ada", "last": "Lovelace"}
    assert before + 60_000 <= stored["__exp"] <= now_ms() + 60_000  # the wrapper's ttl, from now
    assert (await any_storage.get("user:2"))["__exp"] is None  # an envelope keeps its own expiry


async def test_a_legacy_value_with_a_ttl_underneath_keeps_it(any_storage: Any) -> None:
    # Without a wrapper ttl the expiry underneath is unknowable: writing back would make it permanent.
    await any_storage.set("u", "A B", ttl=0.2)
    users = enhance_storage(any_storage, migrations=MIGRATIONS)
    assert await users.get("u") == {"first": "A", "last": "B"}
    assert await any_storage.get("u") == "A B"  # migrated on read, not written back
    await asyncio.sleep(0.3)
    assert await any_storage.has("u") is False
    assert await users.get("u") is None


async def test_a_legacy_counter_keeps_its_ttl_underneath_when_incremented(any_storage: Any) -> None:
    await any_storage.increment("hits", 1, ttl=0.3)  # counted before the wrapper was added
    counters = enhance_storage(any_storage)
    assert await counters.increment("hits") == 2
    assert await counters.get("hits") == 2
    await asyncio.sleep(0.5)
    assert await any_storage.has("hits") is False  # expired as it was set to, not made permanent
    assert await counters.increment("hits") == 1


class WriteDuringRead(MemoryStorage[Any]):
    """Lets ``write`` land right after the next read: another task's write, in between."""

    write: Any = None

    async def get(self, key: str, default: Any = None) -> Any:
        value = await super().get(key, default)
        write, self.write = self.write, None
        if write is not None:
            await write()
        return value


async def test_a_legacy_counter_replaced_while_incremented_is_counted_on_what_replaced_it() -> None:
    inner = WriteDuringRead()
    await inner.increment("hits", 5, ttl=60)  # legacy
    counters = enhance_storage(inner)
    inner.write = lambda: counters.set("hits", 7)  # an envelope, written after the legacy read
    assert await counters.increment("hits") == 8
    assert await counters.get("hits") == 8


async def test_a_legacy_counter_incremented_with_a_ttl_takes_that_ttl() -> None:
    inner: MemoryStorage[Any] = MemoryStorage()
    await inner.set("hits", 5)  # permanent, from before the wrapper
    counters = enhance_storage(inner, migrations={1: lambda n: n * 10})
    assert await counters.increment("hits", ttl=0.2) == 51  # migrated, then counted
    assert (await inner.get("hits"))["__exp"] is not None
    await asyncio.sleep(0.3)
    assert await counters.get("hits") is None


async def test_write_back_keeps_the_expiry(any_storage: Any) -> None:
    old = enhance_storage(any_storage, ttl=0.3)
    await old.set("u", "A B")
    users = enhance_storage(any_storage, migrations=MIGRATIONS)
    assert await users.get("u") == {"first": "A", "last": "B"}
    assert (await any_storage.get("u"))["__v"] == 2
    await asyncio.sleep(0.5)
    assert await any_storage.has("u") is False  # before users.get could delete it
    assert await users.get("u") is None


async def test_values_are_stored_at_the_latest_version() -> None:
    inner: MemoryStorage[Any] = MemoryStorage()
    await enhance_storage(inner, migrations=MIGRATIONS).set("u", {"first": "A", "last": "B"})
    assert (await inner.get("u"))["__v"] == 2
    assert await enhance_storage(inner, migrations=MIGRATIONS).get("u") == {"first": "A", "last": "B"}


class WriterInBetween:
    """A real storage where another writer stores ``fresh`` just before each write that depends on
    an earlier read: every compare-and-set, and a delete."""

    def __init__(self, storage: Any, fresh: Any) -> None:
        self.storage = storage
        self.fresh = fresh

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    async def compare_and_set(self, key: str, value: Any, *, expected: Any, ttl: Any = None) -> bool:
        await self.storage.set(key, self.fresh)
        return bool(await self.storage.compare_and_set(key, value, expected=expected, ttl=ttl))

    async def delete(self, key: str) -> bool:
        await self.storage.set(key, self.fresh)
        return bool(await self.storage.delete(key))


async def test_write_back_never_overwrites_a_concurrent_writer(any_storage: Any) -> None:
    await any_storage.set("u", "Old Name")
    fresh = {"__v": 2, "__exp": None, "data": {"first": "New", "last": "Name"}}
    racing = enhance_storage(WriterInBetween(any_storage, fresh), migrations=MIGRATIONS, ttl=60)  # type: ignore[arg-type]
    assert await racing.get("u") == {"first": "Old", "last": "Name"}  # what this reader saw
    assert await any_storage.get("u") == fresh  # the concurrent write survived


async def test_without_compare_and_set_nothing_is_written_back() -> None:
    inner = Minimal()
    inner.data["u"] = "Alan Turing"
    users = enhance_storage(inner, migrations=MIGRATIONS)  # type: ignore[arg-type]
    assert await users.get("u") == {"first": "Alan", "last": "Turing"}
    assert inner.data["u"] == "Alan Turing"
    assert not is_atomic_storage(users)
    assert not is_ttl_storage(users)


async def test_reading_does_not_change_what_the_migration_gets() -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"u": {"__v": 1, "__exp": None, "data": {"name": "A B"}}})
    seen: list[Any] = []
    users = enhance_storage(inner, migrations={1: _v1, 2: lambda d: seen.append(dict(d)) or _v2(d)})
    assert await users.get_many(["u", "missing"]) == [{"first": "A", "last": "B"}, None]
    assert seen == [{"name": "A B"}]
    assert await users.get("u") == {"first": "A", "last": "B"}
    assert len(seen) == 1  # migrated once, then read at the latest version


async def test_iteration_migrates_without_writing() -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"u:1": "A B", "u:2": "C D"})
    users = enhance_storage(inner, migrations=MIGRATIONS)
    assert sorted([v["first"] async for v in users.values("u:*")]) == ["A", "C"]
    assert await inner.get("u:1") == "A B"


async def test_a_value_from_newer_code_is_refused_and_kept() -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"u": {"__v": 3, "__exp": None, "data": 1}})
    with pytest.raises(CorruptValueError, match="version 3") as info:
        await enhance_storage(inner, migrations=MIGRATIONS).get("u")
    assert info.value.key == "u"
    assert await inner.has("u")


async def test_a_failing_migration_names_the_key_and_keeps_the_value() -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"u": 42})
    users = enhance_storage(inner, migrations=MIGRATIONS)  # _v2 cannot split an int
    with pytest.raises(CorruptValueError, match="migration to version 2") as info:
        await users.get("u")
    assert info.value.key == "u"
    assert await inner.get("u") == 42


async def test_wrapper_ttl_is_an_absolute_expiry_in_the_envelope() -> None:
    inner: MemoryStorage[Any] = MemoryStorage()
    cache = enhance_storage(inner, ttl=60)
    before = now_ms()
    await cache.set("a", 1)
    await cache.set("b", 2, ttl=0.1)
    envelope = await inner.get("a")
    assert before + 60_000 <= envelope["__exp"] <= now_ms() + 60_000
    await asyncio.sleep(0.25)
    assert await cache.get("b") is None
    assert await inner.has("b") is False  # the wrapped storage freed it too
    assert await cache.get("a") == 1


@pytest.mark.parametrize("read", ["get", "has"])
async def test_an_expired_envelope_reads_as_missing_and_is_removed(any_storage: Any, read: str) -> None:
    await any_storage.set("gone", {"__v": 0, "__exp": now_ms() - 1, "data": 1})
    cache = enhance_storage(any_storage)
    assert await getattr(cache, read)("gone") in (None, False)
    await asyncio.sleep(0.05)  # removal is an expiry of the shortest TTL
    assert await any_storage.has("gone") is False


@pytest.mark.parametrize("read", ["get", "has", "get_many"])
async def test_removing_an_expired_envelope_never_destroys_a_concurrent_write(
    any_storage: Any, read: str
) -> None:
    await any_storage.set("k", {"__v": 0, "__exp": now_ms() - 1, "data": "old"})
    fresh = {"__v": 0, "__exp": None, "data": "new"}
    racing = enhance_storage(WriterInBetween(any_storage, fresh))  # type: ignore[arg-type]
    result = await (racing.get_many(["k"]) if read == "get_many" else getattr(racing, read)("k"))
    assert result in (None, False, [None])  # what this reader saw: expired
    await asyncio.sleep(0.05)
    assert await any_storage.get("k") == fresh  # the write that landed in between survived


async def test_without_compare_and_set_an_expired_envelope_is_left_alone() -> None:
    inner = Minimal()
    inner.data["k"] = {"__v": 0, "__exp": now_ms() - 1, "data": 1}
    cache = enhance_storage(inner)  # type: ignore[arg-type]
    assert await cache.get("k") is None
    assert await cache.has("k") is False
    assert "k" in inner.data  # no safe way to remove it: it reads as missing until overwritten


@pytest.mark.parametrize(
    "envelope",
    [
        {"__v": 0, "__exp": "soon", "data": 1},
        {"__v": 0, "__exp": True, "data": 1},
        {"__v": -1, "__exp": None, "data": 1},
        {"__v": "1", "__exp": None, "data": 1},
    ],
    ids=["str-exp", "bool-exp", "negative-version", "str-version"],
)
async def test_a_malformed_envelope_is_corrupt_and_kept(envelope: dict[str, Any]) -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"bad": envelope, "good": 1})
    cache = enhance_storage(inner)
    for read in (cache.get("bad"), cache.get_many(["bad"]), cache.touch("bad"), cache.increment("bad")):
        with pytest.raises(CorruptValueError) as info:
            await read
        assert (info.value.key, info.value.backend) == ("bad", "memory")
    with pytest.raises(CorruptValueError, match="envelope") as listing:
        [key async for key in cache.keys("*")]
    assert listing.value.key == "bad"
    assert await cache.has("bad") is True  # present, kept for inspection
    assert await inner.get("bad") == envelope
    assert await cache.delete("bad") is True  # and deleting repairs it
    assert [key async for key in cache.keys("*")] == ["good"]


async def test_cas_compares_data_not_envelopes() -> None:
    inner: MemoryStorage[Any] = MemoryStorage({"n": 1})  # legacy, no envelope
    store = enhance_storage(inner, ttl=60)
    assert await store.compare_and_set("n", 2, expected=1) is True
    assert await store.compare_and_set("n", 3, expected=1) is False
    assert await store.get("n") == 2


@pytest.mark.parametrize(
    "migrations",
    [{}, {2: _v1}, {1: _v1, 3: _v2}, {0: _v1}, {"1": _v1}, {True: _v1}],
    ids=["empty", "starts-at-2", "gap", "zero", "str-key", "bool-key"],
)
def test_bad_migrations_are_a_value_error(migrations: Any) -> None:
    with pytest.raises(ValueError):
        enhance_storage(MemoryStorage(), migrations=migrations)


async def test_expiry_follows_the_default_of_the_storage_underneath() -> None:
    inner: MemoryStorage[Any] = MemoryStorage(default_ttl=60)
    before = now_ms()
    await enhance_storage(namespace(inner, "ns:")).set("k", 1)
    exp = (await inner.get("ns:k"))["__exp"]
    assert before + 60_000 <= exp <= now_ms() + 60_000
