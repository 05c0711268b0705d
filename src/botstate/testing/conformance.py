"""The contract, test by test. Each test names the behaviour a bot author relies on."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from ..codecs import JSON, ModelCodec, PickleCodec
from ..contract import (
    is_atomic_storage,
    is_iterable_storage,
    is_locking_storage,
    is_ttl_storage,
)
from ..errors import (
    ConfigError,
    CorruptValueError,
    LockError,
    SerializationError,
    StorageError,
    WrongTypeError,
)

__all__ = ["StorageConformance", "SwitchableCodec", "SPECIAL_KEYS"]

# A TTL short enough to keep the suite fast, long enough for a network round trip.
TTL = 0.25
# Waited from the moment the last write returned: the backend stored the entry (and started its
# TTL) before that, so the margin covers clock granularity only, not round trips.
PAST_TTL = TTL + 0.1
# For tests that act twice within one window: each step gets a margin a loaded machine keeps.
WINDOW_TTL = 0.6

BAD_TTLS = [0, -1, -0.5, math.nan, math.inf, timedelta(0), timedelta.max, 10**17]
BAD_KEYS = ["", 1, None, b"bytes"]
BAD_KEY_IDS = ["empty", "int", "none", "bytes"]

SPECIAL_KEYS = [
    "a/b/c",
    "../../etc/passwd",
    "..",
    ".",
    "a:b:c",
    "with space",
    " leading and trailing ",
    "ключ",
    "日本語キー",
    "🙂 emoji",
    "*?[]\\",
    "'; DROP TABLE botstate; --",
    "\"double\" and 'single'",
    "100%_sure",
    "CON",
    "line\nbreak\ttab",
    "nul\x00byte",
    "x" * 1024,
    "я" * 1024,
    "🙂" * 1024,
    "UPPER",
    "upper",
]


class SwitchableCodec:
    """JSON, or raw bytes while ``raw`` is set: lets the suite write corrupt bytes through any backend."""

    def __init__(self) -> None:
        self.raw = False

    def encode(self, value: Any) -> bytes:
        return bytes(value) if self.raw else JSON.encode(value)

    def decode(self, data: bytes) -> Any:
        return bytes(data) if self.raw else JSON.decode(data)


@dataclasses.dataclass
class _User:
    id: int
    name: str
    tags: list[str]


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


_CAPABILITIES: dict[str, tuple[Callable[[object], bool], str]] = {
    "ttl": (is_ttl_storage, "expiry (touch(): TtlStorage)"),
    "iteration": (is_iterable_storage, "iteration (keys/values/entries: IterableStorage)"),
    "atomic": (is_atomic_storage, "compare_and_set/increment (AtomicStorage)"),
    "locks": (is_locking_storage, "lock() (LockingStorage)"),
}


def _lacks(storage: Any, need: str) -> str | None:
    """What ``storage`` is missing for ``need`` (a capability name or a method name), or None."""
    if need in _CAPABILITIES:
        check, what = _CAPABILITIES[need]
        return None if check(storage) else what
    return None if callable(getattr(storage, need, None)) else f"{need}()"


def _need(storage: Any, *needs: str) -> None:
    """Skip the test unless ``storage`` has every capability it exercises.

    An adapter implements the four ``Storage`` methods plus what it can honour, so the suite tests
    what is there and says, per test, what was not.
    """
    missing = [what for need in needs if (what := _lacks(storage, need)) is not None]
    if missing:
        pytest.skip(f"{type(storage).__name__} does not implement {', '.join(missing)}")


def _has(storage: Any, need: str) -> bool:
    return _lacks(storage, need) is None


def _unaccepted(factory: Callable[..., Any], options: dict[str, Any]) -> list[str]:
    """Options the factory's signature cannot take (a minimal adapter's factory may take none)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    return [name for name in options if name not in parameters]


async def _clear(storage: Any) -> None:
    if _has(storage, "clear"):
        await storage.clear()


class StorageConformance:
    """Mix into a test class and provide ``storage_factory``. See the package docstring.

    A test of a capability the storage lacks (``touch``, iteration, ``compare_and_set`` and
    ``increment``, ``lock``, ``get_many``/``set_many``, ``sweep``, ``clear``, ``health``, the
    ``start``/``stop`` lifecycle, a factory option such as ``codec``) is skipped with the reason.
    A storage without ``clear()`` must come empty from ``storage_factory`` (a fresh one per test).
    """

    pytestmark = pytest.mark.asyncio

    persistent: ClassVar[bool] = False
    """A new instance at the same location sees earlier data (files, SQL, Redis)."""
    native_expiry: ClassVar[bool] = False
    """The backend removes expired entries itself (Redis): ``sweep()`` finds nothing to do."""
    distributed_locks: ClassVar[bool] = False
    """``lock()`` is shared between processes and enforces its lease."""
    full_contract: ClassVar[bool | None] = None
    """Assert that the storage has every capability. ``None``: only for botstate's own classes."""

    @pytest.fixture
    def storage_factory(self) -> Callable[..., Any]:
        raise NotImplementedError("define a storage_factory fixture in your test class")

    @pytest.fixture
    def sibling_storage(self) -> Callable[..., Any] | None:
        """Optionally: a factory for the same backend and location under another namespace."""
        return None

    @pytest_asyncio.fixture
    async def open_storage(self, storage_factory: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
        opened: list[Any] = []

        async def _open(**options: Any) -> Any:
            unaccepted = _unaccepted(storage_factory, options)
            if unaccepted:
                pytest.skip(f"storage_factory takes no {', '.join(unaccepted)} option")
            storage = storage_factory(**options)
            if _has(storage, "start"):
                await storage.start()
            opened.append(storage)
            await _clear(storage)
            return storage

        yield _open
        for storage in opened:
            try:
                await _clear(storage)
            finally:
                if _has(storage, "stop"):
                    await storage.stop()

    @pytest_asyncio.fixture
    async def storage(self, open_storage: Callable[..., Any]) -> Any:
        return await open_storage()

    # -- capabilities ------------------------------------------------------------------------

    async def test_implements_every_capability(self, storage: Any) -> None:
        full = self.full_contract
        if full is None:
            full = type(storage).__module__.partition(".")[0] == "botstate"
        if not full:
            pytest.skip("full_contract is off: an adapter implements the capabilities it can honour")
        assert is_ttl_storage(storage)
        assert is_iterable_storage(storage)
        assert is_atomic_storage(storage)
        assert is_locking_storage(storage)
        for method in ("get_many", "set_many", "sweep", "clear", "health", "start", "stop"):
            assert _has(storage, method), method

    # -- CRUD -----------------------------------------------------------------------------------

    async def test_missing_key_returns_default(self, storage: Any) -> None:
        assert await storage.get("missing") is None
        assert await storage.get("missing", "fallback") == "fallback"
        assert await storage.has("missing") is False

    async def test_get_does_not_create_entries(self, storage: Any) -> None:
        _need(storage, "iteration")
        for i in range(20):
            await storage.get(f"probe:{i}")
            await storage.has(f"probe:{i}")
        assert await _collect(storage.keys()) == []

    async def test_set_then_get(self, storage: Any) -> None:
        await storage.set("k", {"count": 1})
        assert await storage.get("k") == {"count": 1}
        assert await storage.has("k") is True

    async def test_set_overwrites(self, storage: Any) -> None:
        await storage.set("k", 1)
        await storage.set("k", "two")
        assert await storage.get("k") == "two"

    async def test_delete_returns_whether_something_was_removed(self, storage: Any) -> None:
        await storage.set("k", 1)
        assert await storage.delete("k") is True
        assert await storage.delete("k") is False
        assert await storage.get("k") is None
        assert await storage.has("k") is False

    @pytest.mark.parametrize("value", [0, 0.0, "", False, [], {}, None])
    async def test_falsy_values_are_values_not_missing(self, storage: Any, value: Any) -> None:
        await storage.set("falsy", value)
        assert await storage.has("falsy") is True
        got = await storage.get("falsy", "MISSING")
        assert got == value
        assert type(got) is type(value)

    async def test_nested_values_round_trip_exactly(self, storage: Any) -> None:
        value: dict[str, Any] = {
            "int": 2**63 - 1,
            "negative": -(2**63),
            "float": 0.1,
            "tiny": 1e-300,
            "str": "héllo 🙂 \x00 \n",
            "bool": True,
            "none": None,
            "list": [1, "2", [3, [4, {"five": 5}]]],
            "z_then_a": {"z": 1, "a": 2},
            "": "empty key",
        }
        await storage.set("nested", value)
        got = await storage.get("nested")
        assert got == value
        assert list(got) == list(value)
        assert list(got["z_then_a"]) == ["z", "a"]
        assert type(got["float"]) is float
        assert type(got["int"]) is int

    async def test_mutating_the_value_after_set_changes_nothing(self, storage: Any) -> None:
        value: dict[str, Any] = {"items": [1, 2], "inner": {"n": 1}}
        await storage.set("iso", value)
        value["items"].append(3)
        value["inner"]["n"] = 99
        assert await storage.get("iso") == {"items": [1, 2], "inner": {"n": 1}}

    async def test_mutating_a_read_value_changes_nothing(self, storage: Any) -> None:
        await storage.set("iso", {"items": [1, 2], "inner": {"n": 1}})
        await storage.set("flat", {"state": "menu", "n": 1})
        for _ in range(3):  # a storage may keep what it read before: each read is its own value
            got = await storage.get("iso")
            got["items"].append(3)
            got["inner"]["n"] = 99
            got["new"] = True
            flat = await storage.get("flat")
            flat["state"] = "changed"
            del flat["n"]
        assert await storage.get("iso") == {"items": [1, 2], "inner": {"n": 1}}
        assert await storage.get("flat") == {"state": "menu", "n": 1}

    @pytest.mark.parametrize(
        "bad",
        [
            datetime(2026, 1, 1),
            {1, 2},
            {1: "int key"},
            {"nested": {"deep": object()}},
            math.nan,
            {"list": [1.0, math.inf]},
            2**64,
        ],
        ids=["datetime", "set", "int-dict-key", "object", "nan", "inf", "big-int"],
    )
    async def test_unencodable_value_raises_and_writes_nothing(self, storage: Any, bad: Any) -> None:
        await storage.set("existing", "old")
        for key in ("existing", "fresh"):
            with pytest.raises(SerializationError) as info:
                await storage.set(key, bad)
            assert repr(key) in str(info.value)
            assert info.value.key == key
            assert info.value.backend
        assert await storage.get("existing") == "old"
        assert await storage.has("fresh") is False

    async def test_set_many_with_one_bad_value_writes_nothing(self, storage: Any) -> None:
        _need(storage, "set_many", "get_many")
        with pytest.raises(SerializationError) as info:
            await storage.set_many({"a": 1, "b": datetime(2026, 1, 1), "c": 3})
        assert info.value.key == "b"
        assert await storage.get_many(["a", "b", "c"]) == [None, None, None]

    async def test_set_many_with_one_bad_key_writes_nothing(self, storage: Any) -> None:
        _need(storage, "set_many")
        with pytest.raises(ValueError):
            await storage.set_many({"a": 1, "": 2})
        with pytest.raises(TypeError):
            await storage.set_many({"a": 1, 3: 2})
        assert await storage.has("a") is False

    @pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
    async def test_bad_keys_are_rejected(self, storage: Any, key: Any) -> None:
        error = ValueError if key == "" else TypeError
        with pytest.raises(error):
            await storage.get(key)
        with pytest.raises(error):
            await storage.set(key, 1)
        with pytest.raises(error):
            await storage.delete(key)
        with pytest.raises(error):
            await storage.has(key)

    @pytest.mark.parametrize("key", BAD_KEYS, ids=BAD_KEY_IDS)
    async def test_bad_keys_are_rejected_by_every_other_method(self, storage: Any, key: Any) -> None:
        error = ValueError if key == "" else TypeError
        if _has(storage, "ttl"):
            with pytest.raises(error):
                await storage.touch(key, 10)
        if _has(storage, "atomic"):
            with pytest.raises(error):
                await storage.increment(key)
            with pytest.raises(error):
                await storage.compare_and_set(key, 1, expected=None)
        if _has(storage, "get_many"):
            with pytest.raises(error):
                await storage.get_many(["fine", key])
        if _has(storage, "locks"):
            with pytest.raises(error):
                async with storage.lock(key, lease=5, timeout=1):
                    pass
        if _has(storage, "iteration"):
            assert await _collect(storage.keys()) == []  # nothing was written on the way

    async def test_special_and_long_keys_are_distinct_and_safe(self, storage: Any) -> None:
        _need(storage, "iteration")
        for i, key in enumerate(SPECIAL_KEYS):
            await storage.set(key, i)
        for i, key in enumerate(SPECIAL_KEYS):
            assert await storage.get(key) == i, key
        assert sorted(await _collect(storage.keys())) == sorted(SPECIAL_KEYS)
        for key in SPECIAL_KEYS:
            assert await storage.delete(key) is True, key
        assert await _collect(storage.keys()) == []

    # -- iteration and globs ------------------------------------------------------------------------

    GLOB_KEYS: ClassVar[list[str]] = [
        "user:1",
        "user:2",
        "user:10",
        "User:3",
        "admin:1",
        "user:*",
        "user:[x]",
        "u%er",
        "u_er",
        "uXer",
        "back\\slash",
    ]

    @pytest.mark.parametrize(
        ("pattern", "expected"),
        [
            ("*", GLOB_KEYS),
            ("user:*", ["user:1", "user:2", "user:10", "user:*", "user:[x]"]),
            ("User:*", ["User:3"]),
            ("user:?", ["user:1", "user:2", "user:*"]),
            ("user:[12]", ["user:1", "user:2"]),
            ("user:[0-9]*", ["user:1", "user:2", "user:10"]),
            ("user:[^1]", ["user:2", "user:*"]),
            ("user:\\*", ["user:*"]),
            ("user:\\[x\\]", ["user:[x]"]),
            ("u%er", ["u%er"]),
            ("u_er", ["u_er"]),
            ("u?er", ["u%er", "u_er", "uXer"]),
            ("back\\\\slash", ["back\\slash"]),
            ("*:1", ["user:1", "admin:1"]),
            ("nothing*", []),
            ("user:1", ["user:1"]),
        ],
    )
    async def test_glob_patterns(self, storage: Any, pattern: str, expected: list[str]) -> None:
        _need(storage, "iteration")
        for i, key in enumerate(self.GLOB_KEYS):
            await storage.set(key, i)
        assert sorted(await _collect(storage.keys(pattern))) == sorted(expected)

    async def test_values_and_entries(self, storage: Any) -> None:
        _need(storage, "iteration", "set_many")
        await storage.set_many({"a:1": 1, "a:2": 2, "b:1": 3})
        assert sorted(await _collect(storage.values("a:*"))) == [1, 2]
        assert sorted(await _collect(storage.entries())) == [("a:1", 1), ("a:2", 2), ("b:1", 3)]

    async def test_iteration_over_many_keys(self, storage: Any) -> None:
        _need(storage, "iteration", "set_many")
        await storage.set_many({f"bulk:{i}": i for i in range(1200)})
        keys = await _collect(storage.keys("bulk:*"))
        assert len(keys) == len(set(keys)) == 1200

    # -- get_many / set_many ----------------------------------------------------------------------------

    async def test_get_many_keeps_order_and_reports_missing(self, storage: Any) -> None:
        _need(storage, "get_many", "set_many")
        await storage.set_many({"a": 1, "b": {"x": [2]}})
        assert await storage.get_many(["b", "missing", "a", "b"]) == [{"x": [2]}, None, 1, {"x": [2]}]
        assert await storage.get_many([]) == []

    async def test_set_many_with_ttl(self, storage: Any) -> None:
        _need(storage, "ttl", "set_many", "get_many")
        await storage.set_many({"a": 1, "b": 2}, ttl=TTL)
        await storage.set("c", 3)
        await asyncio.sleep(PAST_TTL)
        assert await storage.get_many(["a", "b", "c"]) == [None, None, 3]

    # -- TTL -------------------------------------------------------------------------------------------------

    async def test_expired_entry_is_invisible_to_every_method(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("gone", {"v": 1}, ttl=TTL)
        await storage.set("stays", 1)
        assert await storage.get("gone") == {"v": 1}
        await asyncio.sleep(PAST_TTL)
        assert await storage.get("gone") is None
        assert await storage.get("gone", "d") == "d"
        assert await storage.has("gone") is False
        if _has(storage, "iteration"):
            assert await _collect(storage.keys()) == ["stays"]
            assert await _collect(storage.entries("g*")) == []
        if _has(storage, "get_many"):
            assert await storage.get_many(["gone"]) == [None]
        assert await storage.touch("gone") is False
        if _has(storage, "atomic"):
            assert await storage.compare_and_set("gone", 2, expected={"v": 1}) is False
        assert await storage.delete("gone") is False
        if _has(storage, "atomic"):
            assert await storage.compare_and_set("gone", 2, expected=None) is True
            assert await storage.get("gone") == 2

    async def test_iteration_hides_expired_entries(self, storage: Any) -> None:
        _need(storage, "ttl", "iteration")
        await storage.set("gone:1", "old", ttl=TTL)
        await storage.set("gone:2", {"v": 2}, ttl=TTL)
        await storage.set("kept", "new")
        assert sorted(map(str, await _collect(storage.values()))) == sorted(["old", "{'v': 2}", "new"])
        await asyncio.sleep(PAST_TTL)
        assert await _collect(storage.values()) == ["new"]
        assert await _collect(storage.values("gone:*")) == []
        assert await _collect(storage.entries()) == [("kept", "new")]
        assert await _collect(storage.keys("gone:?")) == []

    async def test_expired_counter_restarts_from_zero(self, storage: Any) -> None:
        _need(storage, "ttl", "atomic")
        assert await storage.increment("hits", 5, ttl=TTL) == 5
        await asyncio.sleep(PAST_TTL)
        assert await storage.increment("hits") == 1

    @pytest.mark.parametrize("ttl", BAD_TTLS, ids=str)
    async def test_non_positive_or_unbounded_ttl_is_a_value_error(self, storage: Any, ttl: Any) -> None:
        _need(storage, "ttl")
        with pytest.raises(ValueError):
            await storage.set("k", 1, ttl=ttl)
        assert await storage.has("k") is False

    async def test_ttl_of_wrong_type_is_a_type_error(self, storage: Any) -> None:
        _need(storage, "ttl")
        with pytest.raises(TypeError):
            await storage.set("k", 1, ttl="60")

    @pytest.mark.parametrize(
        ("ttl", "error"),
        [*((ttl, ValueError) for ttl in BAD_TTLS), ("60", TypeError), ([60], TypeError)],
        ids=str,
    )
    async def test_bad_ttl_is_rejected_by_every_writer_and_writes_nothing(
        self, storage: Any, ttl: Any, error: type[Exception]
    ) -> None:
        _need(storage, "ttl")
        await storage.set("kept", "old")
        with pytest.raises(error):
            await storage.touch("kept", ttl)
        if _has(storage, "atomic"):
            with pytest.raises(error):
                await storage.increment("n", ttl=ttl)
            with pytest.raises(error):
                await storage.compare_and_set("c", 1, expected=None, ttl=ttl)
            with pytest.raises(error):
                await storage.compare_and_set("kept", "new", expected="old", ttl=ttl)
        if _has(storage, "set_many"):
            with pytest.raises(error):
                await storage.set_many({"a": 1, "b": 2}, ttl=ttl)
        assert await storage.get("kept") == "old"
        for key in ("n", "c", "a", "b"):
            assert await storage.has(key) is False, key
        if _has(storage, "iteration"):
            assert sorted(await _collect(storage.entries())) == [("kept", "old")]

    async def test_timedelta_and_subsecond_ttl(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("td", 1, ttl=timedelta(milliseconds=TTL * 1000))
        await storage.set("long", 1, ttl=timedelta(hours=1))
        assert await storage.has("td")
        await asyncio.sleep(PAST_TTL)
        assert not await storage.has("td")
        assert await storage.has("long")

    async def test_default_ttl_and_override(self, open_storage: Callable[..., Any]) -> None:
        storage = await open_storage(default_ttl=TTL)
        _need(storage, "ttl")
        await storage.set("default", 1)
        await storage.set("longer", 1, ttl=60)
        await asyncio.sleep(PAST_TTL)
        assert await storage.has("default") is False
        assert await storage.has("longer") is True

    async def test_set_without_ttl_removes_an_earlier_expiry(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("k", 1, ttl=TTL)
        await storage.set("k", 2)
        await asyncio.sleep(PAST_TTL)
        assert await storage.get("k") == 2

    async def test_touch_slides_the_expiry(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("s", 1, ttl=WINDOW_TTL)
        await asyncio.sleep(WINDOW_TTL * 0.6)
        assert await storage.touch("s", WINDOW_TTL) is True
        await asyncio.sleep(WINDOW_TTL * 0.6)  # past the first expiry, within the touched one
        assert await storage.get("s") == 1
        await asyncio.sleep(WINDOW_TTL)
        assert await storage.has("s") is False

    async def test_touch_missing_key_is_false_and_creates_nothing(self, storage: Any) -> None:
        _need(storage, "ttl")
        assert await storage.touch("missing", 10) is False
        assert await storage.has("missing") is False

    async def test_touch_without_ttl_or_default_makes_the_key_permanent(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("p", 1, ttl=TTL)
        assert await storage.touch("p") is True
        await asyncio.sleep(PAST_TTL)
        assert await storage.get("p") == 1

    async def test_touch_without_ttl_applies_the_default_ttl(self, open_storage: Callable[..., Any]) -> None:
        storage = await open_storage(default_ttl=TTL)
        _need(storage, "ttl")
        await storage.set("t", 1, ttl=60)
        assert await storage.touch("t") is True
        await asyncio.sleep(PAST_TTL)
        assert await storage.has("t") is False

    async def test_ttls_keep_millisecond_precision(self, storage: Any) -> None:
        _need(storage, "ttl")
        await storage.set("ms", 1, ttl=0.35)  # neither rounded down to 0 s nor up to 1 s
        await asyncio.sleep(0.15)
        assert await storage.has("ms") is True
        await asyncio.sleep(0.6)
        assert await storage.has("ms") is False

    async def test_sweep_removes_expired_entries(self, storage: Any) -> None:
        _need(storage, "ttl", "sweep", "set_many", "iteration")
        await storage.set_many({"e1": 1, "e2": 2, "e3": 3}, ttl=TTL)
        await storage.set("live", 1)
        await asyncio.sleep(PAST_TTL)
        removed = await storage.sweep()
        assert removed == (0 if self.native_expiry else 3)
        assert await storage.sweep() == 0
        assert await _collect(storage.keys()) == ["live"]

    async def test_background_sweep(self, open_storage: Callable[..., Any]) -> None:
        if self.native_expiry:
            pytest.skip("the backend expires entries itself: sweep() has nothing to find either way")
        storage = await open_storage(sweep_interval=0.05)
        _need(storage, "ttl", "sweep", "set_many")
        await storage.set_many({"e1": 1, "e2": 2}, ttl=0.05)
        await asyncio.sleep(0.5)
        assert await storage.sweep() == 0  # the background sweeper got there first

    # -- compare_and_set ---------------------------------------------------------------------------------

    async def test_cas_expected_none_means_only_if_absent(self, storage: Any) -> None:
        _need(storage, "atomic")
        assert await storage.compare_and_set("c", 1, expected=None) is True
        assert await storage.compare_and_set("c", 2, expected=None) is False
        assert await storage.get("c") == 1

    async def test_cas_wrong_expected_changes_nothing(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("c", {"n": 1, "items": [1]})
        assert await storage.compare_and_set("c", {"n": 9}, expected={"n": 2, "items": [1]}) is False
        assert await storage.compare_and_set("c", {"n": 9}, expected={"n": 1}) is False
        assert await storage.compare_and_set("c", {"n": 9}, expected={"n": 1, "items": [1, 2]}) is False
        assert await storage.get("c") == {"n": 1, "items": [1]}

    async def test_cas_compares_the_stored_value_strictly(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("b", True)
        assert await storage.compare_and_set("b", "x", expected=1) is False
        await storage.set("f", 1)
        assert await storage.compare_and_set("f", "x", expected=1.0) is False
        assert await storage.compare_and_set("f", "x", expected="1") is False
        assert await storage.get("b") is True
        assert await storage.get("f") == 1

    @pytest.mark.parametrize(
        ("stored", "expected"),
        [
            ({"n": 1}, {"n": 1.0}),
            ({"n": 1}, {"n": True}),
            ({"n": 1.0}, {"n": 1}),
            ({"n": True}, {"n": 1}),
            ([1, [1.0]], [1, [1]]),
            (1.0, 1),
            (1, True),
        ],
        ids=str,
    )
    async def test_cas_strictness_holds_nested_and_both_ways(
        self, storage: Any, stored: Any, expected: Any
    ) -> None:
        _need(storage, "atomic")
        await storage.set("c", stored)
        assert await storage.compare_and_set("c", "x", expected=expected) is False
        got = await storage.get("c")
        assert got == stored
        assert repr(got) == repr(stored)  # 1 did not become 1.0 or True

    async def test_cas_right_expected_writes(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("c", {"a": 1, "b": [1, 2]})
        assert await storage.compare_and_set("c", {"a": 2}, expected={"b": [1, 2], "a": 1}) is True
        assert await storage.get("c") == {"a": 2}

    async def test_cas_with_ttl(self, storage: Any) -> None:
        _need(storage, "atomic", "ttl")
        assert await storage.compare_and_set("c", 1, expected=None, ttl=TTL) is True
        await asyncio.sleep(PAST_TTL)
        assert await storage.has("c") is False

    async def test_cas_and_set_many_without_ttl_remove_an_earlier_expiry(self, storage: Any) -> None:
        _need(storage, "atomic", "ttl", "set_many", "get_many")
        await storage.set_many({"c": 1, "m": 1}, ttl=TTL)
        assert await storage.compare_and_set("c", 2, expected=1) is True
        await storage.set_many({"m": 2})
        await asyncio.sleep(PAST_TTL)
        assert await storage.get_many(["c", "m"]) == [2, 2]

    async def test_cas_unencodable_value_raises(self, storage: Any) -> None:
        _need(storage, "atomic")
        with pytest.raises(SerializationError):
            await storage.compare_and_set("c", {1, 2}, expected=None)
        assert await storage.has("c") is False

    async def test_concurrent_cas_read_modify_write_loses_no_update(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("doc", {"n": 0, "seen": []})

        async def add(i: int) -> None:
            for _ in range(200):
                current = await storage.get("doc")
                new = {"n": current["n"] + 1, "seen": [*current["seen"], i]}
                if await storage.compare_and_set("doc", new, expected=current):
                    return
                await asyncio.sleep(0)
            raise AssertionError("CAS loop did not converge")

        await asyncio.gather(*(add(i) for i in range(50)))
        final = await storage.get("doc")
        assert final["n"] == 50
        assert sorted(final["seen"]) == list(range(50))

    # -- increment ----------------------------------------------------------------------------------------

    async def test_increment_counts_from_zero_and_returns_totals(self, storage: Any) -> None:
        _need(storage, "atomic")
        assert await storage.increment("n") == 1
        assert await storage.increment("n", 5) == 6
        assert await storage.increment("n", -10) == -4
        assert await storage.get("n") == -4

    async def test_increment_an_existing_int_value(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("n", 41)
        assert await storage.increment("n") == 42

    async def test_increment_a_non_integer_raises_and_keeps_the_value(self, storage: Any) -> None:
        _need(storage, "atomic")
        for value in ("text", 1.5, True, {"n": 1}):
            await storage.set("v", value)
            with pytest.raises(WrongTypeError) as info:
                await storage.increment("v")
            assert info.value.key == "v"
            assert info.value.backend
            assert await storage.get("v") == value

    async def test_increment_amount_must_be_int(self, storage: Any) -> None:
        _need(storage, "atomic")
        with pytest.raises(TypeError):
            await storage.increment("n", 1.5)
        with pytest.raises(TypeError):
            await storage.increment("n", True)

    async def test_increment_needs_a_codec_that_stores_ints_as_json(
        self, open_storage: Callable[..., Any]
    ) -> None:
        storage = await open_storage(codec=PickleCodec())
        _need(storage, "atomic")
        with pytest.raises(ConfigError):
            await storage.increment("n")
        assert await storage.has("n") is False

    async def test_counters_stay_within_signed_64_bits(self, storage: Any) -> None:
        _need(storage, "atomic")
        await storage.set("n", 2**63 - 2)
        assert await storage.increment("n") == 2**63 - 1
        with pytest.raises(StorageError) as info:
            await storage.increment("n")
        assert info.value.key == "n"
        assert await storage.get("n") == 2**63 - 1
        await storage.set("m", -(2**63) + 1)
        with pytest.raises(StorageError):
            await storage.increment("m", -2)
        assert await storage.get("m") == -(2**63) + 1
        with pytest.raises(ValueError):
            await storage.increment("x", 2**64)
        assert await storage.has("x") is False

    async def test_increment_ttl_is_a_fixed_window(self, storage: Any) -> None:
        _need(storage, "atomic", "ttl")
        assert await storage.increment("w", ttl=WINDOW_TTL) == 1
        await asyncio.sleep(WINDOW_TTL * 0.6)
        assert await storage.increment("w", ttl=WINDOW_TTL) == 2  # does not extend the window
        await asyncio.sleep(WINDOW_TTL * 0.6)
        assert await storage.get("w") is None
        assert await storage.increment("w") == 1

    async def test_100_concurrent_increments_give_exactly_100(self, storage: Any) -> None:
        _need(storage, "atomic")
        results = await asyncio.gather(*(storage.increment("hits") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
        assert await storage.get("hits") == 100

    # -- clear, health, lifecycle ---------------------------------------------------------------------------

    async def test_clear_removes_everything_and_counts_it(self, storage: Any) -> None:
        _need(storage, "clear", "set_many", "iteration")
        await storage.set_many({"a": 1, "b": 2, "c": 3})
        assert await storage.clear() == 3
        assert await _collect(storage.keys()) == []
        assert await storage.clear() == 0

    async def test_clear_counts_only_live_entries(self, storage: Any) -> None:
        _need(storage, "clear", "ttl")
        await storage.set("expired", 1, ttl=TTL)
        await storage.set("live", 1)
        await asyncio.sleep(PAST_TTL)
        assert await storage.clear() == 1
        assert await storage.has("live") is False

    async def test_clear_leaves_other_namespaces_alone(
        self, storage: Any, sibling_storage: Callable[..., Any] | None
    ) -> None:
        _need(storage, "clear", "iteration")
        if sibling_storage is None:
            pytest.skip("this backend has no namespaces sharing one location")
        other = sibling_storage()
        await other.start()
        try:
            await other.set("shared-name", "theirs")
            await storage.set("shared-name", "ours")
            assert await storage.clear() == 1
            assert await other.get("shared-name") == "theirs"
            assert await _collect(other.keys()) == ["shared-name"]
            assert await _collect(storage.keys()) == []
        finally:
            await other.clear()
            await other.stop()

    async def test_health(self, storage: Any) -> None:
        _need(storage, "health")
        assert await storage.health() is True

    async def test_lifecycle_is_idempotent(self, storage_factory: Callable[..., Any]) -> None:
        storage = storage_factory()
        _need(storage, "start", "stop", "__aenter__")
        async with storage as entered:
            assert entered is storage
            await storage.start()
            await storage.set("life", 1)
            assert await storage.get("life") == 1
            await storage.delete("life")
        await storage.stop()
        await storage.stop()

    async def test_reopen_keeps_data(self, storage_factory: Callable[..., Any]) -> None:
        if not self.persistent:
            pytest.skip("not a persistent backend")
        first = storage_factory()
        _need(first, "ttl", "__aenter__")
        async with first:
            await _clear(first)
            await first.set("kept", {"v": [1, 2]}, ttl=60)
            await first.set("temporary", 1, ttl=TTL)
        await asyncio.sleep(PAST_TTL)
        second = storage_factory()
        async with second:
            assert await second.get("kept") == {"v": [1, 2]}
            assert await second.has("temporary") is False
            await _clear(second)

    async def test_restart_after_stop(self, storage_factory: Callable[..., Any]) -> None:
        storage = storage_factory()
        _need(storage, "start", "stop")
        await storage.start()
        await _clear(storage)
        await storage.set("k", 1)
        await storage.stop()
        await storage.start()
        try:
            if self.persistent:
                assert await storage.get("k") == 1
            await storage.set("k", 2)
            assert await storage.get("k") == 2
        finally:
            await _clear(storage)
            await storage.stop()

    # -- codecs and corruption ------------------------------------------------------------------

    async def test_corrupt_stored_value_raises_and_is_kept(self, open_storage: Callable[..., Any]) -> None:
        codec = SwitchableCodec()
        storage = await open_storage(codec=codec)
        codec.raw = True
        await storage.set("bad", b"\xff\xfe{not json")
        codec.raw = False
        await storage.set("good", {"ok": True})
        with pytest.raises(CorruptValueError) as info:
            await storage.get("bad")
        assert info.value.key == "bad"
        assert "bad" in str(info.value)
        assert info.value.backend
        assert isinstance(info.value, StorageError)
        assert await storage.has("bad") is True  # kept for inspection, not deleted
        if _has(storage, "get_many"):
            with pytest.raises(CorruptValueError):
                await storage.get_many(["good", "bad"])
        if _has(storage, "iteration"):
            with pytest.raises(CorruptValueError):
                await _collect(storage.entries())
        assert await storage.get("good") == {"ok": True}
        await storage.set("bad", "repaired")
        assert await storage.get("bad") == "repaired"

    async def test_typed_values_with_model_codec(self, open_storage: Callable[..., Any]) -> None:
        storage = await open_storage(codec=ModelCodec(_User))
        user = _User(id=1, name="Ann", tags=["a"])
        await storage.set("u", user)
        got = await storage.get("u")
        assert isinstance(got, _User)
        assert got == user
        with pytest.raises(SerializationError):
            await storage.set("u", {"id": 1})

    # -- locks ---------------------------------------------------------------------------------

    async def test_lock_excludes_and_tokens_grow(self, storage: Any) -> None:
        _need(storage, "locks")
        order: list[str] = []
        tokens: list[int] = []

        async def worker(name: str) -> None:
            async with storage.lock("chat:1", lease=5) as held:
                tokens.append(held.token)
                order.append(f"{name}-in")
                await asyncio.sleep(0.05)
                order.append(f"{name}-out")

        await asyncio.gather(worker("a"), worker("b"), worker("c"))
        for i in range(0, 6, 2):
            assert order[i].endswith("-in")
            assert order[i + 1] == order[i].replace("-in", "-out")
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 3

    async def test_locks_are_not_entries(self, storage: Any) -> None:
        _need(storage, "locks", "iteration", "clear")
        async with storage.lock("chat:1", lease=5):
            assert await _collect(storage.keys()) == []
            assert await storage.has("chat:1") is False
        assert await storage.clear() == 0

    async def test_lock_on_other_keys_does_not_wait(self, storage: Any) -> None:
        _need(storage, "locks")
        async with storage.lock("chat:1", lease=5), storage.lock("chat:2", lease=5, timeout=1):
            pass

    async def test_lock_timeout_raises_lock_error(self, storage: Any) -> None:
        _need(storage, "locks")
        async with storage.lock("chat:1", lease=5):
            with pytest.raises(LockError) as info:
                async with storage.lock("chat:1", lease=5, timeout=0.2):
                    pass
        assert info.value.key == "chat:1"
        assert info.value.backend

    async def test_extend_while_held_and_lock_error_after_release(self, storage: Any) -> None:
        _need(storage, "locks")
        async with storage.lock("chat:1", lease=5) as held:
            await held.extend()
            await held.extend(10)
        with pytest.raises(LockError) as info:
            await held.extend()
        assert info.value.key == "chat:1"
        assert info.value.backend
        async with storage.lock("chat:1", lease=5, timeout=1):  # the failed extend took nothing
            pass

    async def test_lock_is_released_when_the_body_raises(self, storage: Any) -> None:
        _need(storage, "locks")
        with pytest.raises(RuntimeError):
            async with storage.lock("chat:1", lease=5):
                raise RuntimeError("handler failed")
        async with storage.lock("chat:1", lease=5, timeout=1):
            pass

    async def test_abandoned_lock_frees_after_its_lease(self, storage: Any) -> None:
        _need(storage, "locks")
        if not self.distributed_locks:
            pytest.skip("in-process locks are released by their task, not by a lease")
        abandoned = storage.lock("chat:9", lease=0.3)
        old = await abandoned.__aenter__()  # a holder that "crashes": never exits
        async with storage.lock("chat:9", lease=5, timeout=3) as held:
            assert held.token > old.token  # a write fenced by the old token is refused
            with pytest.raises(LockError) as info:
                await old.extend()  # the lost holder learns it no longer owns the key
            assert info.value.key == "chat:9"
