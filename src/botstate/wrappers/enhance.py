"""Versioned values with migrations and an absolute expiry, over any storage.

``enhance_storage(storage, migrations={1: f, 2: g}, ttl=...)`` stores every value as the envelope
``{"__v": version, "__exp": unix_ms | None, "data": value}``. A value stored before the wrapper
existed (not an envelope) is version 0. Reading runs the missing migrations in order, so
handlers only ever see the latest shape.

When migrated data is written back: lazily, on ``get``/``get_many``, with ``compare_and_set``
against the exact envelope that was read, keeping its expiry. A concurrent writer therefore always
wins (its newer value is never overwritten by an upgraded copy of the old one), and each value is
migrated once, not on every read. A legacy value carries no expiry the wrapper can read (the
wrapped storage may hold it with a TTL of its own), so it is written back only when the wrapper has
a ttl, which then starts afresh; otherwise it is migrated on each read until the next ``set``,
rather than turned permanent. Over a storage without ``compare_and_set`` nothing is written back.
Iteration never writes.

``__exp`` is an absolute wall-clock time, so it survives restarts and copies between stores; the
same TTL is also given to the wrapped storage, which frees the memory. An expired envelope reads as
missing; it is removed only if unchanged (there is no compare-and-delete, so it is compare-and-set
onto itself with the shortest TTL), so a writer landing between the read and the removal survives.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, overload

from .._ttl import TTL, now_ms, ttl_to_ms
from ..contract import Lock, Storage, is_atomic_storage
from ..errors import CorruptValueError, WrongTypeError
from ..storages._base import check_amount, check_counter, same_value
from ._base import RETRY, Retry, StorageWrapper, retry_cas

__all__ = ["EnhancedStorage", "Migration", "enhance_storage"]

T = TypeVar("T")
V = TypeVar("V")
D = TypeVar("D")

Migration = Callable[[Any], Any]
"""Upgrades the data of one version to the next; it may mutate its argument (it gets a copy)."""

_ENVELOPE_KEYS = frozenset(("__v", "__exp", "data"))


class _Gone(enum.Enum):
    MISSING = "missing"
    EXPIRED = "expired"


MISSING: Literal[_Gone.MISSING] = _Gone.MISSING
EXPIRED: Literal[_Gone.EXPIRED] = _Gone.EXPIRED


class _Opened(NamedTuple):
    data: Any
    stale: bool  # stored at an older version: worth writing back
    exp: int | None
    legacy: bool  # stored before the wrapper (no envelope): its expiry, if any, lies underneath


_SHORTEST_TTL = 0.001
"""Millisecond precision: the soonest expiry every backend can be given."""


def _is_envelope(raw: Any, key: str, backend: str) -> bool:
    """True for an envelope; a dict shaped like one but with bad fields is corrupt, not data."""
    if type(raw) is not dict or raw.keys() != _ENVELOPE_KEYS:
        return False
    version, exp = raw["__v"], raw["__exp"]
    if type(version) is not int or version < 0:
        problem = f"envelope version {version!r} is not an int >= 0"
    elif exp is not None and not (type(exp) is int or (type(exp) is float and math.isfinite(exp))):
        problem = f"envelope expiry {exp!r} is not a number or None"
    else:
        return True
    raise CorruptValueError(problem, key=key, backend=backend)


def _check_migrations(migrations: Mapping[int, Migration] | None) -> list[Migration]:
    if migrations is None:
        return []
    if not migrations:
        raise ValueError("migrations must not be empty: pass None for no migrations")
    if any(type(version) is not int for version in migrations):
        raise ValueError("migration versions must be int")
    versions = sorted(migrations)
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, ... without gaps, got {versions}")
    if not all(callable(fn) for fn in migrations.values()):
        raise TypeError("every migration must be callable")
    return [migrations[version] for version in versions]


class EnhancedStorage(StorageWrapper[V]):
    """A storage of versioned, optionally expiring envelopes. See :func:`enhance_storage`."""

    _needs: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "touch": ("touch", "compare_and_set"),
        "keys": ("entries",),
        "values": ("entries",),
        "entries": ("entries",),
        "compare_and_set": ("compare_and_set",),
        "increment": ("compare_and_set",),
        "lock": ("lock",),
        "get_many": ("get_many",),
        "set_many": ("set_many",),
        "clear": ("clear",),
        "health": ("health",),
        "sweep": ("sweep",),
    }

    def __init__(
        self,
        storage: Storage[Any],
        *,
        migrations: Mapping[int, Migration] | None = None,
        ttl: TTL | None = None,
    ) -> None:
        super().__init__(storage)
        self._migrations = _check_migrations(migrations)
        self.version = len(self._migrations)
        """The version every value is stored at."""
        inner_default = getattr(storage, "default_ttl_ms", None)
        # Mirror the wrapped storage's default so that ``__exp`` always tells the real expiry.
        self.ttl_ms = (
            ttl_to_ms(ttl) if ttl is not None else inner_default if type(inner_default) is int else None
        )
        self._any: Any = storage  # for the methods ``_needs`` guarantees it has

    # -- envelopes ---------------------------------------------------------------------------------

    def _expiry(self, ttl: TTL | None) -> tuple[int | None, float | None]:
        """``(__exp, ttl for the wrapped storage)`` for a write now."""
        ms = ttl_to_ms(ttl, self.ttl_ms)
        return (None, None) if ms is None else (now_ms() + ms, ms / 1000)

    def _envelope(self, data: Any, exp: int | None) -> dict[str, Any]:
        return {"__v": self.version, "__exp": exp, "data": data}

    def _expired(self, key: str, raw: Any) -> bool:
        exp = raw["__exp"] if _is_envelope(raw, key, self.backend) else None
        return exp is not None and exp <= now_ms()

    def _open(self, key: str, raw: Any) -> _Opened | Literal[_Gone.EXPIRED]:
        """Unwrap and migrate ``raw`` (left unchanged: it is the expected value of a write-back)."""
        legacy = not _is_envelope(raw, key, self.backend)
        if legacy:
            version, data, exp = 0, raw, None
        else:
            version, data, exp = raw["__v"], raw["data"], raw["__exp"]
            if exp is not None and exp <= now_ms():
                return EXPIRED
        if version == self.version:
            return _Opened(data, False, exp, legacy)
        if version > self.version:
            raise CorruptValueError(
                f"stored at version {version}, newer than this code's {self.version}",
                key=key,
                backend=self.backend,
            )
        data = copy.deepcopy(data)
        for target in range(version + 1, self.version + 1):
            try:
                data = self._migrations[target - 1](data)
            except Exception as exc:
                raise CorruptValueError(
                    f"migration to version {target} failed: {exc!r}", key=key, backend=self.backend
                ) from exc
        return _Opened(data, True, exp, legacy)

    async def _expire(self, key: str, raw: Any) -> None:
        """Remove the expired envelope ``raw`` if it is still what is stored.

        An unconditional delete would destroy a value written since the read. Without
        ``compare_and_set`` the envelope is left: it reads as missing until overwritten.
        """
        if is_atomic_storage(self._inner):
            await self._inner.compare_and_set(key, raw, expected=raw, ttl=_SHORTEST_TTL)

    @staticmethod
    def _remaining(exp: int | None) -> float | None:
        return None if exp is None else max(exp - now_ms(), 1) / 1000

    async def _resolve(self, key: str, raw: Any) -> Any:
        """The data ``raw`` holds, or MISSING; deletes an expired envelope, writes back a migration."""
        opened = self._open(key, raw)
        if opened is EXPIRED:
            await self._expire(key, raw)
            return MISSING
        if opened.stale and is_atomic_storage(self._inner):
            if not opened.legacy:
                exp, inner_ttl = opened.exp, self._remaining(opened.exp)
            elif self.ttl_ms is not None:  # legacy: its expiry underneath is unknown
                exp, inner_ttl = self._expiry(None)
            else:
                return opened.data
            new = self._envelope(opened.data, exp)
            await self._inner.compare_and_set(key, new, expected=raw, ttl=inner_ttl)
        return opened.data

    async def _update(
        self,
        key: str,
        step: Callable[[Any], tuple[Any, Any] | None],
        ttl: TTL | None,
        *,
        keep_expiry: bool,
        in_place: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Compare-and-set loop: ``step(current data or MISSING)`` gives ``(new data, result)``, or
        None to stop with False. A new entry gets ``ttl``; with ``keep_expiry`` an existing one
        keeps its own (a counter's fixed window).

        A legacy value's own expiry lies underneath, where it cannot be read: it gets ``ttl`` (or
        the wrapper's) afresh, or, with neither, ``in_place()`` updates it where it is, keeping
        that expiry (a counter at the current version); without ``in_place`` it becomes permanent.
        """

        async def attempt() -> Any | Retry:
            raw = await self._inner.get(key, MISSING)
            opened = EXPIRED if raw is MISSING else self._open(key, raw)
            outcome = step(MISSING if opened is EXPIRED else opened.data)
            if outcome is None:
                return False
            if opened is EXPIRED or not keep_expiry:
                exp, inner_ttl = self._expiry(ttl)
            elif opened.legacy:
                exp, inner_ttl = self._expiry(ttl)
                if exp is None and in_place is not None:
                    try:
                        return await in_place()
                    except WrongTypeError:  # replaced since the read (by an envelope): again
                        return RETRY
            else:
                exp, inner_ttl = opened.exp, self._remaining(opened.exp)
            expected = None if raw is MISSING else raw
            written = await self._any.compare_and_set(
                key, self._envelope(outcome[0], exp), expected=expected, ttl=inner_ttl
            )
            return outcome[1] if written else RETRY

        return await retry_cas(attempt, key=key, backend=self.backend)

    # -- Storage ------------------------------------------------------------------------------------

    @overload
    async def get(self, key: str) -> V | None: ...
    @overload
    async def get(self, key: str, default: V) -> V: ...
    @overload
    async def get(self, key: str, default: D) -> V | D: ...
    async def get(self, key: str, default: Any = None) -> Any:
        raw = await self._inner.get(key, MISSING)
        if raw is MISSING:
            return default
        data = await self._resolve(key, raw)
        return default if data is MISSING else data

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        exp, inner_ttl = self._expiry(ttl)
        await self._inner.set(key, self._envelope(value, exp), ttl=inner_ttl)

    async def delete(self, key: str) -> bool:
        try:
            raw = await self._inner.get(key, MISSING)
        except CorruptValueError:
            raw = None  # unreadable but present: deleting is how such an entry gets repaired
        removed = await self._inner.delete(key)
        try:
            return removed and raw is not MISSING and not self._expired(key, raw)
        except CorruptValueError:
            return removed

    async def has(self, key: str) -> bool:
        try:
            raw = await self._inner.get(key, MISSING)
        except CorruptValueError:
            return True  # present, kept for inspection: what every backend's has() says
        if raw is MISSING:
            return False
        try:
            expired = self._expired(key, raw)
        except CorruptValueError:
            return True
        if expired:
            await self._expire(key, raw)
            return False
        return True

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        keys = list(keys)
        raws = await self._any.get_many(keys)
        out: list[V | None] = []
        for key, raw in zip(keys, raws, strict=True):
            data = None if raw is None else await self._resolve(key, raw)
            out.append(None if data is MISSING else data)
        return out

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        exp, inner_ttl = self._expiry(ttl)
        await self._any.set_many({k: self._envelope(v, exp) for k, v in mapping.items()}, ttl=inner_ttl)

    # -- TtlStorage, AtomicStorage: compare-and-set on the envelope, comparing unwrapped data -------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        async def attempt() -> bool | Retry:
            raw = await self._inner.get(key, MISSING)
            if raw is MISSING or self._expired(key, raw):
                return False
            exp, inner_ttl = self._expiry(ttl)
            if not _is_envelope(raw, key, self.backend):  # a legacy value carries no expiry of its own
                return bool(await self._any.touch(key, inner_ttl))
            new = {**raw, "__exp": exp}
            written = await self._any.compare_and_set(key, new, expected=raw, ttl=inner_ttl)
            return True if written else RETRY

        return await retry_cas(attempt, key=key, backend=self.backend)

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        """Write ``value`` if the current *data* equals ``expected`` (None: if absent).

        Envelope details (version, expiry) never make a comparison fail; a write always
        starts a new expiry, as ``set`` does.
        """

        def step(current: Any) -> tuple[Any, bool] | None:
            if current is MISSING:
                return None if expected is not None else (value, True)
            return (value, True) if expected is not None and same_value(current, expected) else None

        ttl_to_ms(ttl)  # a bad ttl fails before anything is read
        written: bool = await self._update(key, step, ttl, keep_expiry=False)
        return written

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        """Add ``amount`` to an int stored in an envelope; ``ttl`` applies when it is created."""
        check_amount(amount)
        ttl_to_ms(ttl)

        def step(current: Any) -> tuple[int, int]:
            if current is MISSING:
                return amount, amount
            if type(current) is not int:
                raise WrongTypeError(
                    "cannot increment a value that is not an integer", key=key, backend=self.backend
                )
            total = check_counter(current + amount, key, self.backend)
            return total, total

        in_place = None
        if self.version == 0 and is_atomic_storage(self._inner):  # legacy ints are current values
            in_place = partial(self._inner.increment, key, amount)
        total: int = await self._update(key, step, ttl, keep_expiry=True, in_place=in_place)
        return total

    # -- IterableStorage (never writes) -------------------------------------------------------------

    async def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]:
        async for key, raw in self._any.entries(pattern):
            opened = self._open(key, raw)
            if opened is not EXPIRED:
                yield key, opened.data

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        async for key, raw in self._any.entries(pattern):
            if not self._expired(key, raw):
                yield key

    async def values(self, pattern: str = "*") -> AsyncIterator[V]:
        async for _, value in self.entries(pattern):
            yield value

    # -- pass-through ----------------------------------------------------------------------------

    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Lock]:
        lock: AbstractAsyncContextManager[Lock] = self._any.lock(key, lease=lease, timeout=timeout)
        return lock

    async def clear(self) -> int:
        return int(await self._any.clear())

    async def health(self) -> bool:
        return bool(await self._any.health())

    async def sweep(self) -> int:
        return int(await self._any.sweep())

    def __repr__(self) -> str:
        return f"enhance_storage({self._inner!r}, version={self.version}, ttl_ms={self.ttl_ms})"


@overload
def enhance_storage(
    storage: Storage[V], *, migrations: None = None, ttl: TTL | None = None
) -> EnhancedStorage[V]: ...
@overload
def enhance_storage(
    storage: Storage[Any], *, migrations: Mapping[int, Callable[[Any], T]], ttl: TTL | None = None
) -> EnhancedStorage[T]: ...
@overload
def enhance_storage(
    storage: Storage[Any], *, migrations: Mapping[int, Migration], ttl: TTL | None = None
) -> EnhancedStorage[Any]: ...
def enhance_storage(
    storage: Storage[Any], *, migrations: Mapping[int, Migration] | None = None, ttl: TTL | None = None
) -> EnhancedStorage[Any]:
    """Wrap ``storage`` in versioned envelopes: ``migrations`` upgrade old values on read.

    ``migrations={1: f, 2: g}``: ``f`` upgrades version 0 (anything stored without an envelope)
    to 1, ``g`` 1 to 2; values are stored at version 2. ``ttl`` is the default expiry of every
    write (a per-call ``ttl`` overrides it).

    Typing: without migrations the value type is the wrapped storage's; with migrations it is
    what they return, or whatever the assignment declares when they return different types
    (``users: EnhancedStorage[UserV2] = enhance_storage(...)``).
    """
    return EnhancedStorage(storage, migrations=migrations, ttl=ttl)
