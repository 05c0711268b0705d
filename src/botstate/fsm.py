"""Finite-state-machine context for conversations: a state name and a data dict per key.

State and data live in *one* record, ``{"state": str | None, "data": {...}}``, so every change
(``set_state``, ``update_data``, ``clear``) is one atomic write: no reader ever sees a new state
with old data, and ``clear()`` cannot leave half a conversation behind.

Read-modify-write calls never lose a concurrent update: over a storage with ``compare_and_set``
they retry on conflict (bounded, with backoff); over one with only ``lock`` they hold the key's
lock; over a plain ``Storage`` they serialise within this process, which is all such a storage
allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._ttl import TTL, ttl_to_ms
from .contract import Storage, is_atomic_storage
from .errors import CorruptValueError
from .storages._base import bad_key
from .wrappers._base import RETRY, Retry, backend_name, key_lock, retry_cas

__all__ = ["StateContext"]

_Record = tuple[str | None, dict[str, Any]]


class StateContext:
    """The FSM context of one conversation, stored under ``key`` (e.g. ``f"{chat_id}:{user_id}"``).

    Share one storage with other uses through a namespace: ``StateContext(namespace(storage,
    "fsm:"), key)``. ``ttl`` (optional) expires an abandoned conversation; every write restarts it.
    """

    __slots__ = ("_storage", "_ttl", "key")

    def __init__(self, storage: Storage[Any], key: str, *, ttl: TTL | None = None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_to_ms(ttl)  # a bad ttl fails here, not at the first write
        self._storage = storage
        self.key = key
        self._ttl = ttl

    def _parse(self, raw: Any) -> _Record:
        if raw is None:
            return None, {}
        if type(raw) is dict and raw.keys() == {"state", "data"}:
            state, data = raw["state"], raw["data"]
            if (state is None or type(state) is str) and type(data) is dict:
                return state, data
        raise CorruptValueError("not an FSM record", key=self.key, backend=backend_name(self._storage))

    async def _read(self) -> _Record:
        return self._parse(await self._storage.get(self.key))

    async def _change(self, change: Callable[[str | None, dict[str, Any]], _Record]) -> _Record:
        """Apply ``change`` to the stored record atomically and return the new record."""
        storage, key = self._storage, self.key

        if is_atomic_storage(storage):

            async def attempt() -> _Record | Retry:
                raw = await storage.get(key)
                new = change(*self._parse(raw))
                record = {"state": new[0], "data": new[1]}
                written = await storage.compare_and_set(key, record, expected=raw, ttl=self._ttl)
                return new if written else RETRY

            return await retry_cas(attempt, key=key, backend=backend_name(storage))
        async with key_lock(storage, key):
            new = change(*await self._read())
            await storage.set(key, {"state": new[0], "data": new[1]}, ttl=self._ttl)
            return new

    async def get_state(self) -> str | None:
        """The current state name, or None."""
        return (await self._read())[0]

    async def get_data(self) -> dict[str, Any]:
        """A copy of the conversation's data (mutating it changes nothing stored)."""
        return (await self._read())[1]

    async def set_state(self, state: str | None) -> None:
        """Move to ``state`` (None: no state), keeping the data."""
        if state is not None and type(state) is not str:
            raise TypeError(f"a state is a str or None, not {type(state).__name__}")
        await self._change(lambda _, data: (state, data))

    async def set_data(self, data: Mapping[str, Any]) -> None:
        """Replace the data, keeping the state."""
        new = dict(data)
        await self._change(lambda state, _: (state, new))

    async def update_data(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Merge ``data`` and ``kwargs`` into the data atomically; returns the merged data."""
        changes = {**(data or {}), **kwargs}
        return (await self._change(lambda state, old: (state, {**old, **changes})))[1]

    async def clear(self) -> None:
        """Forget state and data at once (one delete of the one record)."""
        storage = self._storage
        if is_atomic_storage(storage):  # a racing change's compare-and-set then fails and retries
            await storage.delete(self.key)
            return
        async with key_lock(storage, self.key):  # else a racing change would write the old back
            await storage.delete(self.key)

    def __repr__(self) -> str:
        return f"StateContext({self._storage!r}, {self.key!r})"
