"""In-process per-key locks with a pruned table.

Used by the memory backends' ``lock()`` and by sessions' default isolation. An entry lives only
while someone holds or waits for its key, so a million distinct chats leave no table behind.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import LockError

__all__ = ["KeyedLocks", "LocalLock"]


class LocalLock:
    """A held in-process lock. ``token`` grows with every acquisition (a fencing token)."""

    __slots__ = ("_token",)

    def __init__(self, token: int) -> None:
        self._token = token

    @property
    def token(self) -> int:
        return self._token

    async def extend(self, lease: float | None = None) -> None:
        """Nothing to renew: an in-process lock is released when its holder's task ends."""


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """One ``asyncio.Lock`` per key, created on demand and dropped when nobody needs it."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: str, *, timeout: float | None = None) -> AsyncIterator[LocalLock]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            try:
                if timeout is None:
                    await entry.lock.acquire()
                else:
                    await asyncio.wait_for(entry.lock.acquire(), timeout)
            except TimeoutError:
                raise LockError(f"lock not acquired within {timeout}s", key=key, backend="local") from None
            try:
                yield LocalLock(next(self._tokens))
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
