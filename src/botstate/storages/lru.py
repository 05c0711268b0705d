"""In-process storage bounded by entry count, evicting the least recently used."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._ttl import TTL, monotonic_ms
from ..codecs import Codec
from ..errors import ConfigError
from ._base import V, bad_key
from .memory import MemoryStorage

__all__ = ["LruMemoryStorage"]

_DROP_EVERY_MS = 1000  # at most one scan for expired entries a second (_drop_expired)


class LruMemoryStorage(MemoryStorage[V]):
    """A ``MemoryStorage`` holding at most ``max`` entries: bounded memory for caches.

    Reads and writes of a key make it the most recently used: ``get``, every write (``set``,
    ``set_many``, a successful ``compare_and_set``, ``increment``, so a hot counter such as a rate
    limit is never the one evicted) and a successful ``touch``, which says the key is in use.
    ``has``, ``delete`` and iteration do not, so checking for a key never keeps it alive.
    Entries that expired are dropped before a live one is evicted.
    """

    backend = "lru"
    _data: OrderedDict[str, bytes]

    def __init__(
        self,
        data: Mapping[str, V] | Iterable[tuple[str, V]] | None = None,
        *,
        max: int = 1000,
        default_ttl: TTL | None = None,
        codec: Codec[V] | None = None,
        sweep_interval: float | None = None,
    ) -> None:
        if type(max) is not int or max < 1:
            raise ConfigError(f"max must be an int >= 1, got {max!r}")
        self.max = max
        self._next_drop = 0.0  # monotonic ms of the next scan for expired entries (_drop_expired)
        super().__init__(data, default_ttl=default_ttl, codec=codec, sweep_interval=sweep_interval)

    def _new_table(self) -> dict[str, bytes]:
        return OrderedDict()

    def _put(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        super()._put(key, data, ttl_ms)
        self._bump_and_evict(key)

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        await super().set(key, value, ttl=ttl)
        self._bump_and_evict(key)

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        total = await super().increment(key, amount, ttl=ttl)
        self._data.move_to_end(key)  # an existing counter is updated in place, without ``_put``
        return total

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        touched = await super().touch(key, ttl)
        if touched:
            self._data.move_to_end(key)
        return touched

    def _bump_and_evict(self, key: str) -> None:
        table = self._data
        table.move_to_end(key)
        if len(table) > self.max and self._expires:
            self._drop_expired()
        while len(table) > self.max:
            evicted, _ = table.popitem(last=False)
            self._expires.pop(evicted, None)

    def _drop_expired(self) -> None:
        """Before evicting a live entry, drop entries that expired: they hold slots but no value.
        A scan of the expiring entries, so at most once a second; in between an entry expired
        since the last scan can still cost a live one its slot."""
        now = monotonic_ms()
        if now >= self._next_drop:
            self._next_drop = now + _DROP_EVERY_MS
            self._remove_expired()

    async def _get(self, key: str, default: Any = None) -> Any:
        if type(key) is not str or not key:
            bad_key(key)
        data = self._live(key)
        if data is None:
            return default
        self._data.move_to_end(key)
        kept = self._reads.get(key)
        if type(kept) is tuple and kept[0] is data and kept[1] is not None:
            return kept[1].copy()
        return self._decoded(key, data, kept)

    if not TYPE_CHECKING:
        get = _get

    def _put_encoded(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        self._put(key, data, ttl_ms)  # bumps and evicts, like set

    def _peek_encoded(self, key: str) -> bytes | None:
        """Like ``get``, a read makes the key the most recently used."""
        if type(key) is not str or not key:
            bad_key(key)
        data = self._live(key)
        if data is not None:
            self._data.move_to_end(key)
        return data
