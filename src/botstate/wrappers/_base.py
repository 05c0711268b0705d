"""What the storage wrappers and the consumers share.

- :class:`StorageWrapper` delegates lifecycle to the wrapped storage and *mirrors its
  capabilities*: a wrapper method whose wrapped storage lacks what it needs is hidden, so
  ``is_atomic_storage(wrapper)`` answers for the storage underneath instead of promising methods
  that could only fail.
- :func:`retry_cas` runs an optimistic read-compare-and-set attempt until it lands, with jittered
  backoff and a bound, so contended updates neither spin nor loop forever.
- :func:`shared_locks` gives every consumer of the same entries (sessions, FSM contexts, file-id
  caches, through any views) one in-process lock table, whichever wrapper objects they were given.
"""

from __future__ import annotations

import asyncio
import enum
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from functools import cache
from types import TracebackType
from typing import Any, ClassVar, Literal, NoReturn, Self, TypeAlias, TypeVar

from .._locks import KeyedLocks
from ..contract import Storage, is_locking_storage
from ..errors import StorageError

__all__ = [
    "RETRY",
    "Retry",
    "StorageWrapper",
    "backend_name",
    "key_lock",
    "retry_cas",
    "shared_locks",
    "underlying",
]

V = TypeVar("V")
R = TypeVar("R")


class _Retry(enum.Enum):
    RETRY = "retry"


RETRY: Literal[_Retry.RETRY] = _Retry.RETRY
"""Returned by a :func:`retry_cas` attempt whose compare-and-set lost a race."""
Retry: TypeAlias = Literal[_Retry.RETRY]

MAX_ATTEMPTS = 200
"""Enough for hundreds of writers racing on one key; past it something is writing in a loop."""


async def retry_cas(attempt: Callable[[], Awaitable[R | Retry]], *, key: str, backend: str) -> R:
    """Run ``attempt`` until it returns something other than :data:`RETRY`.

    The first retries only yield to the loop (the winner is usually done by then); later ones
    sleep a random, growing delay (capped at 50 ms) so that writers on a shared server spread out
    instead of colliding again in lockstep.
    """
    for n in range(MAX_ATTEMPTS):
        result = await attempt()
        if result is not RETRY:
            return result
        await asyncio.sleep(0 if n < 2 else random.uniform(0, min(0.05, 0.0005 * 2**n)))
    raise StorageError(
        f"gave up after {MAX_ATTEMPTS} conflicting concurrent writes", key=key, backend=backend
    )


def backend_name(storage: object) -> str:
    """The name errors use for ``storage``: its ``backend`` attribute, else its class name."""
    name = getattr(storage, "backend", None)
    return name if isinstance(name, str) else type(storage).__name__


class _Absent:
    """Stands in for a wrapper method the wrapped storage cannot back: reading it is AttributeError."""

    __slots__ = ("name", "needs")

    def __init__(self, name: str, needs: tuple[str, ...]) -> None:
        self.name = name
        self.needs = needs

    def __get__(self, obj: object, owner: type | None = None) -> NoReturn:
        raise AttributeError(
            f"{self.name}() needs a wrapped storage with {', '.join(n + '()' for n in self.needs)}"
        )


@cache
def _without(cls: type, missing: frozenset[tuple[str, tuple[str, ...]]]) -> type:
    """``cls`` with the ``missing`` methods hidden; one cached subclass per capability set."""
    namespace: dict[str, Any] = {name: _Absent(name, needs) for name, needs in missing}
    namespace.update(__module__=cls.__module__, __qualname__=cls.__qualname__, __slots__=())
    return type(cls.__name__, (cls,), namespace)


class StorageWrapper(Storage[V]):
    """Base of storage wrappers: holds the wrapped storage and mirrors its capabilities.

    ``_needs`` maps each optional method to the wrapped storage's methods it is built on. The
    instance's class is swapped once, at construction, for a cached subclass hiding the methods
    that cannot work, so present methods cost nothing extra per call.
    """

    _needs: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, storage: Storage[Any]) -> None:
        self._inner = storage
        self.backend = backend_name(storage)
        missing = frozenset(
            (name, needs)
            for name, needs in self._needs.items()
            if not all(callable(getattr(storage, need, None)) for need in needs)
        )
        if missing:
            cls: type = type(self)
            object.__setattr__(self, "__class__", _without(cls, missing))

    @property
    def wrapped(self) -> Storage[Any]:
        """The storage underneath."""
        return self._inner

    @property
    def _key_prefix(self) -> str:
        """What this wrapper puts before a key in the storage underneath (a namespace's prefix)."""
        return ""

    async def start(self) -> None:
        """Start the wrapped storage (a wrapper owns nothing else)."""
        start = getattr(self._inner, "start", None)
        if callable(start):
            await start()

    async def stop(self) -> None:
        """Stop the wrapped storage: a wrapper that is stopped stops what it wraps."""
        stop = getattr(self._inner, "stop", None)
        if callable(stop):
            await stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def underlying(storage: object) -> tuple[object, str]:
    """The storage under every wrapper of ``storage``, and the prefix its keys get there: views
    giving the same answer hold the same entries."""
    prefix = ""
    while isinstance(storage, StorageWrapper):
        prefix = storage._key_prefix + prefix
        storage = storage.wrapped
    return storage, prefix


_Tables = weakref.WeakValueDictionary[str, KeyedLocks]
_TABLES: weakref.WeakKeyDictionary[object, _Tables] = weakref.WeakKeyDictionary()
_PINNED: dict[int, tuple[object, _Tables]] = {}  # storages that cannot be weakly referenced


def shared_locks(storage: object) -> KeyedLocks:
    """The in-process lock table of the entries ``storage`` holds (keys as ``storage`` names them).

    Sessions, FSM contexts and file-id caches often get a wrapper of their own for each call
    (``namespace(storage, "fsm:")``); a table per wrapper object would let two updates for one chat
    run at once and lose a change. So the table belongs to the storage underneath and the view's
    prefix. It lives as long as someone uses it (a ``Sessions``, a held or awaited lock): a table
    nobody refers to holds nothing, so it is dropped and made afresh when needed.
    """
    root, prefix = underlying(storage)
    try:
        tables = _TABLES.get(root)
        if tables is None:
            tables = _TABLES[root] = weakref.WeakValueDictionary()
    except TypeError:  # kept, with the storage itself, so that its id is never another's
        tables = _PINNED.setdefault(id(root), (root, weakref.WeakValueDictionary()))[1]
    table = tables.get(prefix)
    if table is None:
        table = tables[prefix] = KeyedLocks()
    return table


def key_lock(storage: object, key: str, *, lease: float = 30.0) -> AbstractAsyncContextManager[object]:
    """A lock on ``key``: the storage's own (across processes) when it has one, else in-process."""
    if is_locking_storage(storage):
        return storage.lock(key, lease=lease)
    return shared_locks(storage).hold(key)
