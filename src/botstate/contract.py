"""The storage contract: what every botstate storage promises, in one place.

``Storage`` is the minimum a third-party adapter implements. The capability protocols add TTL,
iteration, atomic operations and locks; the ``is_*`` guards let code check for a capability at
run time and narrow the type for the checker. Every built-in backend implements all of them.

Semantics shared by all backends (the conformance suite in ``botstate.testing`` pins each one):

- keys are non-empty ``str`` of any characters; values go through the storage's codec;
- ``ttl`` is seconds or a ``timedelta`` (millisecond precision, ``<= 0`` is a ValueError), ``None``
  meaning the storage's ``default_ttl``; an expired entry is invisible to every method at once;
- values are isolated: mutating what you passed to ``set`` or got from ``get`` changes nothing stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

from typing_extensions import TypeIs

from ._ttl import TTL

__all__ = [
    "AtomicStorage",
    "IterableStorage",
    "Lock",
    "LockingStorage",
    "Storage",
    "TtlStorage",
    "is_atomic_storage",
    "is_iterable_storage",
    "is_locking_storage",
    "is_ttl_storage",
]

V = TypeVar("V")
D = TypeVar("D")


@runtime_checkable
class Storage(Protocol[V]):
    """Async key-value storage: the four methods every adapter implements."""

    @overload
    async def get(self, key: str) -> V | None: ...
    @overload
    async def get(self, key: str, default: V) -> V: ...
    @overload
    async def get(self, key: str, default: D) -> V | D: ...
    async def get(self, key: str, default: Any = None) -> Any:
        """The stored value, or ``default`` when the key is missing or expired."""
        ...

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        """Store ``value``; ``ttl`` overrides the storage's ``default_ttl``."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the key; True when something (unexpired) was removed."""
        ...

    async def has(self, key: str) -> bool:
        """True when the key holds an unexpired value."""
        ...


class TtlStorage(Storage[V], Protocol[V]):
    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        """Restart the key's expiry (sliding expiry); False when the key is missing or expired.

        ``ttl=None`` applies the storage's ``default_ttl``; with no default the key stops expiring.
        """
        ...


class IterableStorage(Storage[V], Protocol[V]):
    def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        """Unexpired keys matching a Redis-style, case-sensitive glob; order is unspecified."""
        ...

    def values(self, pattern: str = "*") -> AsyncIterator[V]: ...

    def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]: ...


class AtomicStorage(Storage[V], Protocol[V]):
    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        """Write ``value`` only if the current value equals ``expected`` (``None``: only if absent).

        Equality is of values, strictly typed (``1`` is not ``True`` nor ``1.0``); an expired entry
        counts as absent. Atomic against every other writer of the backend.
        """
        ...

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        """Add ``amount`` atomically and return the new total; missing or expired counts from 0.

        ``ttl`` applies when the counter is created (a fixed window) and is not extended later.
        """
        ...


class Lock(Protocol):
    """A held lock. ``token`` is a fencing token: it grows with every acquisition of the key."""

    @property
    def token(self) -> int: ...

    async def extend(self, lease: float | None = None) -> None:
        """Renew the lease; raises ``LockError`` if the lock was lost."""
        ...


class LockingStorage(Storage[V], Protocol[V]):
    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[Lock]:
        """A lock on ``key`` shared by every process using the backend.

        ``lease`` bounds how long a crashed holder can block others; ``timeout`` how long to wait
        (``None``: forever) before ``LockError``.
        """
        ...


class _Full(TtlStorage[V], IterableStorage[V], AtomicStorage[V], LockingStorage[V], Protocol[V]):
    """Internal: a storage with every capability (what built-in backends are)."""

    async def get_many(self, keys: Iterable[str]) -> list[V | None]: ...
    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None: ...
    async def clear(self) -> int: ...
    async def health(self) -> bool: ...


def _has(obj: object, *names: str) -> bool:
    return all(callable(getattr(obj, name, None)) for name in names)


# Each guard has a second overload for concrete classes: mypy cannot infer ``V`` of a protocol
# with overloaded members (``get``) from a class, so ``is_ttl_storage(MemoryStorage[int]())``
# would otherwise fail to type-check. A concrete class keeps its own precise type when narrowed.


@overload
def is_ttl_storage(storage: Storage[V]) -> TypeIs[TtlStorage[V]]: ...
@overload
def is_ttl_storage(storage: object) -> TypeIs[TtlStorage[Any]]: ...
def is_ttl_storage(storage: object) -> bool:
    return _has(storage, "touch")


@overload
def is_iterable_storage(storage: Storage[V]) -> TypeIs[IterableStorage[V]]: ...
@overload
def is_iterable_storage(storage: object) -> TypeIs[IterableStorage[Any]]: ...
def is_iterable_storage(storage: object) -> bool:
    return _has(storage, "keys", "values", "entries")


@overload
def is_atomic_storage(storage: Storage[V]) -> TypeIs[AtomicStorage[V]]: ...
@overload
def is_atomic_storage(storage: object) -> TypeIs[AtomicStorage[Any]]: ...
def is_atomic_storage(storage: object) -> bool:
    return _has(storage, "compare_and_set", "increment")


@overload
def is_locking_storage(storage: Storage[V]) -> TypeIs[LockingStorage[V]]: ...
@overload
def is_locking_storage(storage: object) -> TypeIs[LockingStorage[Any]]: ...
def is_locking_storage(storage: object) -> bool:
    return _has(storage, "lock")
