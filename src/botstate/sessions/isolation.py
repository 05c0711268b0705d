"""How sessions keep concurrent updates for one key from losing each other's changes.

A session reads, lets the handler change the value, and writes it back; two updates for the same
chat doing that at once would each write their own version and one change would be lost. A guard
held from the read to the write serialises them:

- ``"local"`` (the default): an in-process lock per key, pruned when unused. Different keys run in
  parallel; enough for a bot that runs as one process.
- ``"distributed"``: the backend's ``lock(key, lease=...)`` as well, so bodies for one key also run
  one after another across processes and hosts. The local lock is taken first, so tasks of one
  process queue in memory instead of all polling the backend. The lease bounds how long a crashed
  holder blocks the key; a live holder renews it while its handler runs.
- ``"none"``: no guard, for bots that already serialise updates per chat themselves.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeAlias

from .._locks import KeyedLocks
from ..contract import Lock, Storage, is_locking_storage
from ..errors import ConfigError, LockError, StorageError
from ..storages._lease import check_timeout, lease_ms
from ..wrappers._base import shared_locks

__all__ = ["Guard", "Isolation", "IsolationMode", "LeaseGuard", "LocalIsolation", "make_isolation"]

IsolationMode: TypeAlias = Literal["local", "distributed", "none"]

log = logging.getLogger("botstate")


Guard: TypeAlias = AbstractAsyncContextManager[Any]
"""Held by one session from its read to its write."""


class Isolation(Protocol):
    def guard(self, key: str) -> Guard | None:
        """A guard for ``key``, or ``None`` when nothing needs holding."""
        ...


class _NoIsolation:
    __slots__ = ()

    def guard(self, key: str) -> None:
        return None


class LocalIsolation:
    __slots__ = ("locks", "timeout")

    def __init__(self, locks: KeyedLocks, timeout: float | None) -> None:
        self.locks = locks
        self.timeout = timeout

    def guard(self, key: str) -> Guard:
        return self.locks.hold(key, timeout=self.timeout)


class LeaseGuard:
    """The local lock, then the backend's lock, renewed every third of its lease while held."""

    __slots__ = (
        "_backend",
        "_key",
        "_lease",
        "_local",
        "_lock",
        "_lost",
        "_remote",
        "_renewal",
        "_renewed",
        "_storage",
        "_timeout",
        "_timer",
    )

    def __init__(self, isolation: _DistributedIsolation, key: str) -> None:
        self._storage = isolation.storage
        self._backend = isolation.backend
        self._key = key
        self._lease = isolation.lease
        self._timeout = isolation.timeout
        self._local = isolation.locks.hold(key, timeout=isolation.timeout)
        self._remote: AbstractAsyncContextManager[Lock] | None = None
        self._lock: Lock | None = None
        self._lost: BaseException | None = None
        self._renewed = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._renewal: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseGuard:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._local.__aenter__()
        try:
            timeout = self._timeout  # one bound for both waits, the local and the backend's
            if timeout is not None:
                timeout = max(0.0, timeout - (loop.time() - started))
            remote = self._storage.lock(self._key, lease=self._lease, timeout=timeout)
            self._lock = await remote.__aenter__()
            self._remote = remote
        except BaseException:
            await self._local.__aexit__(None, None, None)
            raise
        self._renewed = loop.time()
        self._timer = loop.call_later(self._lease / 3, self._renew)
        return self

    def _renew(self) -> None:
        self._timer = None
        self._renewal = asyncio.get_running_loop().create_task(self._extend())

    async def _extend(self) -> None:
        assert self._lock is not None
        try:
            await self._lock.extend(self._lease)
        except LockError as exc:
            self._lost = exc  # another holder may have the key: this session must not write
            return
        except StorageError:
            pass  # unreachable for now: the next round, or verify(), tries again
        else:
            self._renewed = asyncio.get_running_loop().time()
        self._timer = asyncio.get_running_loop().call_later(self._lease / 3, self._renew)

    async def verify(self) -> None:
        """Called right before writing: raises ``LockError`` if the lock was lost meanwhile."""
        if self._lost is not None:
            raise LockError(
                f"the session lock was lost (lease {self._lease}s ran out); changes were not saved",
                key=self._key,
                backend=self._backend,
            ) from self._lost
        if asyncio.get_running_loop().time() - self._renewed > self._lease / 2:
            assert self._lock is not None  # renewals fell behind (a blocked loop?): renew before writing
            await self._lock.extend(self._lease)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        renewal, self._renewal = self._renewal, None
        try:
            if renewal is not None:
                renewal.cancel()
                # ``wait`` (not ``await renewal``): the renewal's own cancellation is not raised
                # here, so a cancellation of this task that arrives meanwhile is not mistaken for
                # it and swallowed; the locks are released below either way.
                await asyncio.wait((renewal,))
        finally:
            if renewal is not None and renewal.done() and not renewal.cancelled():
                error = renewal.exception()
                if error is not None:  # failed unexpectedly: the lease still bounds the lock
                    log.error("botstate: renewing the session lock of %r failed", self._key, exc_info=error)
            remote, self._remote = self._remote, None
            try:
                if remote is not None:
                    await remote.__aexit__(None, None, None)
            except StorageError as exc:
                # Correctness does not depend on the release: the lease frees the key anyway.
                log.warning("botstate: releasing the session lock failed, its lease will free it: %s", exc)
            finally:
                await self._local.__aexit__(None, None, None)


class _DistributedIsolation:
    __slots__ = ("backend", "lease", "locks", "storage", "timeout")

    def __init__(self, storage: Any, backend: str, lease: float, timeout: float | None) -> None:
        self.storage = storage
        self.backend = backend
        self.lease = lease
        self.timeout = timeout
        self.locks = shared_locks(storage)

    def guard(self, key: str) -> LeaseGuard:
        return LeaseGuard(self, key)


def make_isolation(
    mode: IsolationMode, storage: Storage[Any], backend: str, *, lease: float, timeout: float | None
) -> Isolation:
    """The isolation for ``mode``; refuses a distributed mode the storage cannot provide, and
    settings that would only fail once two updates meet (``ValueError``)."""
    check_timeout(timeout)
    lease_ms(lease)
    if mode == "local":
        return LocalIsolation(shared_locks(storage), timeout)
    if mode == "none":
        return _NoIsolation()
    if mode == "distributed":
        if not is_locking_storage(storage):
            raise ConfigError(f"isolation='distributed' needs a storage with lock(); {backend} has none")
        return _DistributedIsolation(storage, backend, lease, timeout)
    raise ConfigError(f"isolation must be 'local', 'distributed' or 'none', not {mode!r}")
