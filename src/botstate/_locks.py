"""In-process per-key locks with a pruned table.

Used by the memory backends' ``lock()``, by sessions' default isolation and by consumers on
storages without locks. An entry lives only while someone holds or waits for its key, so a million
distinct chats leave no table behind. The uncontended path allocates nothing but the table entry:
most updates are the only one for their chat, and this lock sits on every session's path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from types import TracebackType

from .errors import LockError

__all__ = ["KeyedLocks", "LocalLock"]


class LocalLock:
    """A held in-process lock. ``token`` grows with every acquisition (a fencing token).

    It has no lease to renew, but ``extend`` after the ``async with`` block still raises
    ``LockError`` like the distributed locks do: a holder that renews a lock it no longer holds has
    a bug, and keeping quiet would let it go on believing it owns the key.
    """

    __slots__ = ("_backend", "_held", "_key", "_token")

    def __init__(self, token: int, key: str, backend: str = "local") -> None:
        self._token = token
        self._key = key
        self._backend = backend
        self._held = True

    @property
    def token(self) -> int:
        return self._token

    async def extend(self, lease: float | None = None) -> None:
        """Nothing to renew while held; ``LockError`` once released."""
        if not self._held:
            raise LockError("lock already released", key=self._key, backend=self._backend)

    def _release(self) -> None:
        self._held = False


class KeyedLocks:
    """One FIFO lock per key, created on demand and dropped when nobody needs it.

    ``_held`` maps a held key to its waiters (``None`` until someone waits). ``release`` hands
    the key straight to the first waiter, so a key never looks free while others queue for it.
    Sessions inline ``try_acquire`` and the waiter-less ``release`` on ``_held`` (their hot path,
    in sessions/session.py): a change of this layout changes them too.
    """

    __slots__ = ("__weakref__", "_held", "_tokens", "backend")

    def __init__(self, backend: str = "local") -> None:
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}
        self._tokens = itertools.count(1)
        self.backend = backend
        """Named by ``LockError``: the storage class that owns these locks, else ``"local"``."""

    def __len__(self) -> int:
        return len(self._held)

    def try_acquire(self, key: str) -> int | None:
        """Take ``key`` if nobody holds it (a token), else ``None``: no coroutine for the common case."""
        held = self._held
        if key in held:
            return None
        held[key] = None
        return next(self._tokens)

    async def acquire(self, key: str, timeout: float | None = None) -> int:
        """Wait for ``key`` (at most ``timeout`` seconds, else ``LockError``); returns a token."""
        held = self._held
        if key not in held:
            held[key] = None
            return next(self._tokens)
        waiters = held[key]
        if waiters is None:
            waiters = held[key] = deque()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            if timeout is None:
                await waiter
            else:
                async with asyncio.timeout(timeout):
                    await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                if waiter in waiters:  # unless release() already skipped it: waiters that gave
                    waiters.remove(waiter)  # up must not pile up behind a long-held key
            if isinstance(exc, TimeoutError):
                raise LockError(
                    f"lock not acquired within {timeout}s", key=key, backend=self.backend
                ) from None
            raise
        return next(self._tokens)

    def release(self, key: str) -> None:
        waiters = self._held[key]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the key stays held, now by that waiter
                return
        del self._held[key]

    def hold(self, key: str, *, timeout: float | None = None) -> _Hold:
        """``async with locks.hold(key):`` holds ``key`` for the block, yielding a ``LocalLock``."""
        return _Hold(self, key, timeout)


class _Hold:
    __slots__ = ("_key", "_lock", "_locks", "_timeout")

    def __init__(self, locks: KeyedLocks, key: str, timeout: float | None) -> None:
        self._locks = locks
        self._key = key
        self._timeout = timeout
        self._lock: LocalLock | None = None

    async def __aenter__(self) -> LocalLock:
        token = await self._locks.acquire(self._key, self._timeout)
        self._lock = LocalLock(token, self._key, self._locks.backend)
        return self._lock

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lock is not None:
            self._lock._release()
            self._lock = None
        self._locks.release(self._key)
