from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from collections.abc import Callable
from typing import Any

import pytest

from botstate import LruMemoryStorage, MemoryStorage
from botstate.testing import StorageConformance


class TestMemoryStorage(StorageConformance):
    full_contract = True

    @pytest.fixture
    def storage_factory(self) -> Callable[..., Any]:
        return MemoryStorage


async def test_seeded_from_mapping_and_pairs() -> None:
    assert await MemoryStorage({"a": 1}).get("a") == 1
    assert await MemoryStorage([("b", [2])]).get("b") == [2]


async def test_expired_entries_free_their_memory_on_access() -> None:
    storage = MemoryStorage()
    await storage.set("k", 1, ttl=0.001)
    await asyncio.sleep(0.01)
    assert len(storage) == 1
    assert await storage.get("k") is None
    assert len(storage) == 0


@pytest.mark.parametrize(
    ("lease", "timeout"), [(-1, None), (math.nan, None), ("5", None), (5, -5), (5, math.nan)]
)
def test_lock_settings_are_checked_as_on_every_backend(lease: Any, timeout: Any) -> None:
    with pytest.raises(ValueError, match=r"lease|timeout"):
        MemoryStorage().lock("k", lease=lease, timeout=timeout)


async def test_a_pattern_that_is_not_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="pattern must be str"):
        [key async for key in MemoryStorage().keys(5)]  # type: ignore[arg-type]


async def test_per_key_lock_table_is_pruned() -> None:
    storage = MemoryStorage()
    for i in range(1000):
        async with storage.lock(f"chat:{i}"):
            pass
    assert len(storage._locks) == 0


async def test_lru_drops_expired_entries_before_evicting_a_live_one() -> None:
    storage: LruMemoryStorage[Any] = LruMemoryStorage(max=2)
    await storage.set("live", 1)
    await storage.set("brief", 2, ttl=0.001)
    await asyncio.sleep(0.01)
    await storage.set("new", 3)  # one slot too many: the expired entry goes, not the live one
    assert await storage.get("live") == 1
    assert await storage.get("new") == 3
    assert len(storage) == 2


class TestLruMemoryStorage(StorageConformance):
    full_contract = True

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


async def test_lru_has_does_not_bump_recency() -> None:
    storage = LruMemoryStorage(max=2)
    await storage.set("a", 1)
    await storage.set("b", 2)
    assert await storage.has("a") is True  # an existing key: a bump would save it
    await storage.set("c", 3)
    assert await storage.has("a") is False
    assert await storage.get_many(["b", "c"]) == [2, 3]


async def test_lru_delete_does_not_bump_recency() -> None:
    storage = LruMemoryStorage(max=3)
    await storage.set_many({"a": 1, "b": 2, "c": 3})
    assert await storage.delete("b") is True  # deleting another, existing key leaves a oldest
    await storage.set("d", 4)
    await storage.set("e", 5)
    assert await storage.has("a") is False
    assert await storage.get_many(["c", "d", "e"]) == [3, 4, 5]


@pytest.mark.parametrize(
    ("use", "bumps"),
    [
        (lambda s: s.get("hot"), True),
        (lambda s: s.set("hot", 2), True),
        (lambda s: s.increment("hot"), True),  # a hot counter (a rate limit) is not evicted
        (lambda s: s.compare_and_set("hot", 2, expected=1), True),
        (lambda s: s.touch("hot", 60), True),  # a touched session is in use
        (lambda s: s.compare_and_set("hot", 2, expected=5), False),  # a failed CAS wrote nothing
        (lambda s: s.has("hot"), False),
    ],
    ids=["get", "set", "increment", "cas", "touch", "failed-cas", "has"],
)
async def test_lru_recency_of_each_operation(use: Callable[[Any], Any], bumps: bool) -> None:
    storage = LruMemoryStorage(max=2)
    await storage.set("hot", 1)
    await storage.set("other", 1)  # "hot" is now the least recently used
    await use(storage)
    await storage.set("new", 1)  # evicts one of the two
    assert await storage.has("hot") is bumps
    assert await storage.has("other") is not bumps


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


# -- encoded access (what sessions use to skip a decode/encode round trip) ---------------------


@pytest.mark.parametrize("factory", [MemoryStorage, LruMemoryStorage])
async def test_encoded_access_reads_and_writes_what_set_and_get_see(factory: Any) -> None:
    storage = factory()
    await storage.set("a", {"n": 1})
    assert await storage._get_encoded("a") == storage.codec.encode({"n": 1})
    assert await storage._get_encoded("missing") is None
    await storage._set_encoded("b", storage.codec.encode([1, 2]), None)
    assert await storage.get("b") == [1, 2]
    await storage._set_encoded("c", b"3", 1)  # ttl_ms, already resolved
    await asyncio.sleep(0.01)
    assert await storage._get_encoded("c") is None
    with pytest.raises(TypeError):
        await storage._get_encoded(1)
    with pytest.raises(ValueError):
        await storage._get_encoded("")
    with pytest.raises(ValueError):
        await storage._set_encoded("", b"1", None)


async def test_lru_encoded_access_keeps_recency_and_eviction() -> None:
    storage = LruMemoryStorage(max=2)
    await storage.set("a", 1)
    await storage.set("b", 2)
    assert await storage._get_encoded("a") == b"1"  # a is now the most recent
    await storage._set_encoded("c", b"3", None)  # evicts b, like set
    assert await storage.get_many(["a", "b", "c"]) == [1, None, 3]


class Chat(enum.StrEnum):
    MAIN = "chat:main"


@pytest.mark.parametrize("factory", [MemoryStorage, lambda: LruMemoryStorage(max=10)], ids=["memory", "lru"])
async def test_a_str_subclass_key_is_refused_saying_how_to_pass_it(factory: Any) -> None:
    storage = factory()
    for call in (storage.get, storage.has, storage.delete, lambda k: storage.set(k, 1)):
        with pytest.raises(TypeError, match=r"plain str.*StrEnum.*str\(key\)"):
            await call(Chat.MAIN)
    await storage.set(str(Chat.MAIN), 1)  # what the message says to do works
    assert await storage.get("chat:main") == 1


# -- decoded reads (a flat value read again is a copy of its decoded form) ---------------------

FACTORIES = pytest.mark.parametrize(
    "factory", [MemoryStorage, lambda: LruMemoryStorage(max=10)], ids=["memory", "lru"]
)


@FACTORIES
@pytest.mark.parametrize(
    "value",
    [
        {"state": "menu", "count": 1, "lang": "en", "ok": True, "rate": 0.5, "none": None},
        {"state": "menu", "cart": [1, 2], "profile": {"name": "Ann"}},
        {"text": "a [bracket] and a {brace}"},
        [1, 2, 3],
        "plain",
    ],
    ids=["flat", "nested", "brackets-in-text", "list", "scalar"],
)
async def test_every_read_hands_out_its_own_value(factory: Any, value: Any) -> None:
    storage = factory()
    await storage.set("a", value)
    await storage.set("b", value)  # same bytes under another key
    for _ in range(4):  # past the read that keeps the decoded form
        got = await storage.get("a")
        assert got == value
        if isinstance(got, dict):
            got["state"] = "changed"
            for item in got.values():
                if isinstance(item, (dict, list)):
                    item.clear()
        elif isinstance(got, list):
            got.append(4)
    assert await storage.get("a") == value
    assert await storage.get("b") == value
    assert [v async for _, v in storage.entries()] == [value, value]


@FACTORIES
async def test_a_write_after_repeated_reads_is_what_the_next_read_sees(factory: Any) -> None:
    storage = factory()
    await storage.set("chat", {"count": 0})
    for count in range(1, 6):
        assert await storage.get("chat") == {"count": count - 1}
        assert await storage.get("chat") == {"count": count - 1}
        await storage.set("chat", {"count": count})
    assert await storage.compare_and_set("chat", {"count": 9}, expected={"count": 5})
    assert await storage.get("chat") == {"count": 9}
    await storage.delete("chat")
    assert await storage.get("chat") is None


async def test_repeated_reads_keep_a_bounded_number_of_decoded_values() -> None:
    from botstate.storages.memory import _READS_MAX

    storage = MemoryStorage[Any]()
    for i in range(_READS_MAX + 10):
        await storage.set(f"k{i}", {"n": i})
        assert await storage.get(f"k{i}") == {"n": i}
        assert await storage.get(f"k{i}") == {"n": i}
    assert len(storage._reads) <= _READS_MAX
    assert await storage.get("k0") == {"n": 0}
    assert await storage.get(f"k{_READS_MAX + 9}") == {"n": _READS_MAX + 9}


@dataclasses.dataclass
class Profile:
    name: str
    visits: int


@pytest.mark.parametrize("cls", [MemoryStorage, LruMemoryStorage])
async def test_repeated_reads_with_a_model_codec_each_build_their_own_object(cls: Any) -> None:
    from botstate import ModelCodec

    storage = cls(codec=ModelCodec(Profile))
    await storage.set("p", Profile("Ann", 1))
    seen = []
    for _ in range(4):
        got = await storage.get("p")
        assert got == Profile("Ann", 1)
        got.visits += 10
        seen.append(got)
    assert len({id(profile) for profile in seen}) == 4
    assert await storage.get("p") == Profile("Ann", 1)


async def test_corrupt_bytes_read_twice_raise_both_times() -> None:
    from botstate import CorruptValueError

    storage = MemoryStorage[Any]()
    await storage._set_encoded("a", b'{"n": ', None)
    for _ in range(3):
        with pytest.raises(CorruptValueError, match="'a'"):
            await storage.get("a")


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [
        {"state": "menu", "none": None, "ok": False},
        {"nested": {"list": [1, None, 2.5]}},
        ("a", 1),
        {"colour": Colour.RED, "level": Level.HIGH},
        {"big": 2**64 - 1},
        {"too big": 2**64},
        {"nan": float("nan")},
        [None, [float("inf")]],
        {1: "int key"},
        {"when": __import__("datetime").date(2026, 1, 1)},
        {"set": {1, 2}},
        {"sub": Chat.MAIN},
    ],
    ids=lambda v: repr(v)[:30],
)
async def test_set_stores_exactly_what_the_json_codec_encodes_or_refuses_the_same(value: Any) -> None:
    """MemoryStorage.set encodes JSON inline; it must agree with JsonCodec on every value."""
    from botstate import JSON, SerializationError

    storage = MemoryStorage[Any]()
    refusal: str | None = None
    try:
        expected = JSON.encode(value)
    except Exception as exc:
        refusal = str(exc)
    if refusal is None:
        await storage.set("k", value)
        assert storage._peek_encoded("k") == expected
    else:
        with pytest.raises(SerializationError, match="'k'") as raised:
            await storage.set("k", value)
        assert refusal in str(raised.value)
        assert await storage.has("k") is False
