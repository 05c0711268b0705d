"""Key-prefix views, so sessions, FSM, rate limits and caches can share one Redis or SQLite file.

``namespace(storage, "fsm:")`` is a storage of its own: every key is stored as ``"fsm:" + key``,
iteration and ``clear`` see only the view's keys (the prefix is glob-escaped, so a prefix holding
``*`` or ``[`` never widens a pattern), locks are prefixed too, and errors name the key as the view
knows it. Nothing is copied or cached: a view costs one string concatenation per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar, NoReturn, TypeVar, cast, overload

from .._glob import escape
from .._ttl import TTL
from ..contract import Lock, Storage, _Full
from ..errors import StorageError
from ..storages._base import bad_key
from ._base import StorageWrapper

__all__ = ["Namespace", "namespace"]

V = TypeVar("V")
D = TypeVar("D")


class Namespace(StorageWrapper[V]):
    """A view of ``storage`` under the key prefix ``prefix``. See :func:`namespace`."""

    _needs: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "touch": ("touch",),
        "keys": ("keys",),
        "values": ("entries",),
        "entries": ("entries",),
        "clear": ("keys",),
        "compare_and_set": ("compare_and_set",),
        "increment": ("increment",),
        "lock": ("lock",),
        "get_many": ("get_many",),
        "set_many": ("set_many",),
        "health": ("health",),
        "sweep": ("sweep",),
    }

    def __init__(self, storage: Storage[Any], prefix: str) -> None:
        if type(prefix) is not str or not prefix:
            raise ValueError("a namespace prefix is a non-empty str")
        super().__init__(storage)
        self.prefix = prefix
        self._glob = escape(prefix)
        self._any = cast("_Full[V]", storage)  # for the methods ``_needs`` guarantees it has

    @property
    def _key_prefix(self) -> str:
        return self.prefix

    @property
    def default_ttl_ms(self) -> int | None:
        """The wrapped storage's default TTL: a view writes with it."""
        default = getattr(self._inner, "default_ttl_ms", None)
        return default if type(default) is int else None

    def _reraise(self, exc: StorageError) -> NoReturn:
        """Re-raise ``exc`` naming the key as this view's caller knows it."""
        key = exc.key
        if key is not None and key.startswith(self.prefix):
            raise type(exc)(exc.message, key=key[len(self.prefix) :], backend=exc.backend) from exc
        raise exc

    def _key(self, key: str) -> str:
        # Checked here: "" or a non-str would otherwise pass once prefixed.
        if type(key) is not str or not key:
            bad_key(key)
        return self.prefix + key

    # -- Storage ------------------------------------------------------------------------------

    @overload
    async def get(self, key: str) -> V | None: ...
    @overload
    async def get(self, key: str, default: V) -> V: ...
    @overload
    async def get(self, key: str, default: D) -> V | D: ...
    async def get(self, key: str, default: Any = None) -> Any:
        try:
            return await self._inner.get(self._key(key), default)
        except StorageError as exc:
            self._reraise(exc)

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        try:
            await self._inner.set(self._key(key), value, ttl=ttl)
        except StorageError as exc:
            self._reraise(exc)

    async def delete(self, key: str) -> bool:
        try:
            return await self._inner.delete(self._key(key))
        except StorageError as exc:
            self._reraise(exc)

    async def has(self, key: str) -> bool:
        try:
            return await self._inner.has(self._key(key))
        except StorageError as exc:
            self._reraise(exc)

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        try:
            return await self._any.get_many([self._key(key) for key in keys])
        except StorageError as exc:
            self._reraise(exc)

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        try:
            await self._any.set_many({self._key(key): value for key, value in mapping.items()}, ttl=ttl)
        except StorageError as exc:
            self._reraise(exc)

    # -- TtlStorage, AtomicStorage --------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        try:
            return await self._any.touch(self._key(key), ttl)
        except StorageError as exc:
            self._reraise(exc)

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        try:
            return await self._any.compare_and_set(self._key(key), value, expected=expected, ttl=ttl)
        except StorageError as exc:
            self._reraise(exc)

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        try:
            return await self._any.increment(self._key(key), amount, ttl=ttl)
        except StorageError as exc:
            self._reraise(exc)

    # -- IterableStorage: the escaped prefix keeps patterns inside the view -------------------------

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        start = len(self.prefix)
        try:
            async for key in self._any.keys(self._glob + pattern):
                yield key[start:]
        except StorageError as exc:
            self._reraise(exc)

    async def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]:
        start = len(self.prefix)
        try:
            async for key, value in self._any.entries(self._glob + pattern):
                yield key[start:], value
        except StorageError as exc:
            self._reraise(exc)

    async def values(self, pattern: str = "*") -> AsyncIterator[V]:
        async for _, value in self.entries(pattern):
            yield value

    async def clear(self) -> int:
        """Delete this view's keys only; returns how many (unexpired) were removed.

        Keys are deleted one by one, so a concurrent writer may add keys while ``clear`` runs.
        """
        keys = [key async for key in self._any.keys(self._glob + "*")]
        removed = 0
        for key in keys:
            removed += await self._inner.delete(key)
        return removed

    # -- LockingStorage ------------------------------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AsyncIterator[Lock]:
        full = self._key(key)
        in_body = False
        try:
            async with self._any.lock(full, lease=lease, timeout=timeout) as held:
                in_body = True
                yield _ViewLock(self, held)
                in_body = False
        except StorageError as exc:
            if in_body:  # the caller's own error: not ours to rename
                raise
            self._reraise(exc)

    # -- maintenance -----------------------------------------------------------------------------

    async def health(self) -> bool:
        return await self._any.health()

    async def sweep(self) -> int:
        """Sweep the whole wrapped storage: expired entries are invisible anyway, this frees them."""
        return await self._any.sweep()  # type: ignore[attr-defined, no-any-return]

    def __repr__(self) -> str:
        return f"namespace({self._inner!r}, {self.prefix!r})"


def namespace(storage: Storage[V], prefix: str) -> Namespace[V]:
    """A view of ``storage`` under ``prefix``: ``namespace(storage, "fsm:")``.

    A view of a view stores under both prefixes joined, without an extra layer of calls.
    ``start``/``stop`` pass through to ``storage``: when several views share one storage, manage
    the storage's lifecycle once (``async with storage:``) and use the views inside it.
    """
    if isinstance(storage, Namespace):
        if type(prefix) is not str or not prefix:
            raise ValueError("a namespace prefix is a non-empty str")
        return Namespace(storage.wrapped, storage.prefix + prefix)
    return Namespace(storage, prefix)


class _ViewLock:
    """A held lock of the wrapped storage, whose errors name the key as the view's caller knows it."""

    __slots__ = ("_held", "_view")

    def __init__(self, view: Namespace[Any], held: Lock) -> None:
        self._view = view
        self._held = held

    @property
    def token(self) -> int:
        return self._held.token

    async def extend(self, lease: float | None = None) -> None:
        try:
            await self._held.extend(lease)
        except StorageError as exc:
            self._view._reraise(exc)
