"""In-process storage: a dict of encoded values.

Values are stored encoded (JSON by default), which is what makes them isolated: nothing a handler
does to an object after ``set`` or ``get`` reaches the store, and a value that works here works on
every other backend. Expiry is checked on every access and swept in the background when asked.

Decoding is most of what a read costs, so with the JSON codec stored bytes read a second time are
kept decoded when they hold a small *flat* object (a dict of strings, numbers, booleans and nulls,
the usual chat state): later reads hand out a shallow copy, which for such a dict is as isolated as
a fresh decode, at a fraction of the cost. The decoded form is kept per key with the very bytes
object it came from and used only while that object is still what the key holds, so a write, which
stores a new one, can never be answered by a stale value; at most ``_READS_MAX`` keys are tracked
(the table is emptied when full), ``clear()`` empties it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from orjson import dumps

from .._glob import compile_glob, is_literal, literal_prefix
from .._locks import KeyedLocks, LocalLock
from .._ttl import TTL, monotonic_ms, ttl_to_ms
from ..codecs import _ORJSON_OPTIONS, Codec, JsonCodec, _has_non_finite, _reject
from ._base import BaseStorage, V, add_to_counter, bad_key
from ._lease import check_timeout, lease_ms

__all__ = ["MemoryStorage"]

_READS_MAX = 4096  # keys whose reads are tracked; the table is emptied when full
_READ_BYTES = 512  # larger values are decoded on every read


class MemoryStorage(BaseStorage[V]):
    """Storage in a dict, for tests, development and single-process bots that may forget.

    ``data`` seeds the storage from a mapping or an iterable of ``(key, value)`` pairs.
    """

    backend = "memory"

    def __init__(
        self,
        data: Mapping[str, V] | Iterable[tuple[str, V]] | None = None,
        *,
        default_ttl: TTL | None = None,
        codec: Codec[V] | None = None,
        sweep_interval: float | None = None,
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        self._data: dict[str, bytes] = self._new_table()
        self._expires: dict[str, float] = {}  # key -> monotonic ms; only keys that expire
        self._locks = KeyedLocks(self.backend)
        # what reads of each key found (see ``_decoded``)
        self._reads: dict[str, bytes | tuple[bytes, dict[str, Any] | None]] = {}
        self._json = type(self.codec) is JsonCodec  # the codec whose fast paths are inlined here
        if data is not None:
            pairs = data.items() if isinstance(data, Mapping) else data
            for key, value in pairs:
                self._put(key, self._encode_value(key, value), self.default_ttl_ms)

    def _new_table(self) -> dict[str, bytes]:
        return {}

    # -- internals shared with LruMemoryStorage -------------------------------------------

    def _live(self, key: str) -> bytes | None:
        """The stored bytes if present and unexpired; drops an expired entry on the way."""
        data = self._data.get(key)
        if data is not None and self._expires:
            at = self._expires.get(key)
            if at is not None and at <= monotonic_ms():
                del self._data[key]
                del self._expires[key]
                return None
        return data

    def _put(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        self._data[key] = data
        if ttl_ms is not None:
            self._expires[key] = monotonic_ms() + ttl_ms
        elif self._expires:
            self._expires.pop(key, None)

    # -- encoded access (the sessions' fast path: no decode/encode round trip to compare) --------
    # Memory answers without awaiting, so sessions call the plain ``_peek_encoded``/``_put_encoded``
    # directly: two coroutines fewer per update, on a path that costs about a microsecond in all.

    def _peek_encoded(self, key: str) -> bytes | None:
        """The stored bytes of ``key`` if present and unexpired; bad keys raise as in ``get``."""
        data = self._data.get(key)  # ``_get``'s checks, in its order
        if data is None:
            if type(key) is not str or not key:
                bad_key(key)
            return None
        if self._expires and self._live(key) is None:
            return None
        return data

    # Store bytes the codec already produced; ``ttl_ms`` is resolved (``self._ttl(ttl)``).
    _put_encoded = _put

    async def _get_encoded(self, key: str) -> bytes | None:
        return self._peek_encoded(key)

    async def _set_encoded(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        self._put_encoded(key, data, ttl_ms)

    # -- Storage ----------------------------------------------------------------------------

    async def _get(self, key: str, default: Any = None) -> Any:
        data = self._data.get(key)
        if data is None:
            if type(key) is not str or not key:  # checked on a miss only: stored keys are valid
                bad_key(key)
            return default
        if self._expires and self._live(key) is None:
            return default
        kept = self._reads.get(key)
        if type(kept) is tuple and kept[0] is data and kept[1] is not None:
            return kept[1].copy()  # a small flat dict read before: a copy instead of a decode
        return self._decoded(key, data, kept)

    if not TYPE_CHECKING:
        get = _get

    def _decoded(self, key: str, data: bytes, kept: Any) -> Any:
        """Decode ``key``'s stored ``data``: note a first read of these bytes, and keep a small
        flat dict on the second (see the module docstring).

        ``kept`` is what ``_reads`` holds for ``key``: the bytes object read once, or ``(bytes
        read again, their decoded dict, or None when not flat)``; either counts only while it is
        still the object ``key`` holds.
        """
        try:
            value: Any = self._decode(data)
        except Exception as exc:
            raise self._corrupt(key, exc) from exc
        if not self._json:
            return value
        if kept is data:  # flat: a dict (one "{") with no "[" and no other "{" in its text
            flat = type(value) is dict and len(data) <= _READ_BYTES and 91 not in data and 123 not in data[1:]
            self._reads[key] = (data, value if flat else None)
            return value.copy() if flat else value
        if type(kept) is not tuple or kept[0] is not data:
            reads = self._reads
            if kept is None and len(reads) >= _READS_MAX:
                reads.clear()
            reads[key] = data
        return value

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        # _put inlined: this is the hottest write path. With the JSON codec, so is the codec's
        # usual case (``JsonCodec.encode`` without its call); anything unusual (an error, a null
        # that may stand for NaN) goes through the codec itself, which raises what it raises.
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)
        text = None
        if self._json:
            try:
                text = dumps(value, default=_reject, option=_ORJSON_OPTIONS).decode()
            except Exception:
                pass
            else:
                if "null" in text and _has_non_finite(value):
                    text = None
        data = self._encode_value(key, value) if text is None else text.encode()
        self._data[key] = data
        if ttl_ms is not None:
            self._expires[key] = monotonic_ms() + ttl_ms
        elif self._expires:
            self._expires.pop(key, None)

    async def delete(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        if self._live(key) is None:
            return False
        del self._data[key]
        self._expires.pop(key, None)
        return True

    async def has(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        return self._live(key) is not None

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        get = self._get
        return [await get(key) for key in keys]

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        ttl_ms = self._ttl(ttl)
        encoded = []
        for key, value in mapping.items():  # every key and value checked before anything is written
            if type(key) is not str or not key:
                bad_key(key)
            encoded.append((key, self._encode_value(key, value)))
        for key, data in encoded:
            self._put(key, data, ttl_ms)

    # -- TtlStorage ---------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        if self._live(key) is None:
            return False
        if ttl_ms is None:
            self._expires.pop(key, None)
        else:
            self._expires[key] = monotonic_ms() + ttl_ms
        return True

    async def sweep(self) -> int:
        return self._remove_expired()

    def _remove_expired(self) -> int:
        """Delete the entries that expired; how many."""
        now = monotonic_ms()
        expired = [key for key, at in self._expires.items() if at <= now]
        for key in expired:
            del self._expires[key]
            del self._data[key]
        return len(expired)

    # -- IterableStorage ------------------------------------------------------------------------

    def _matching(self, pattern: str) -> list[str]:
        if is_literal(pattern):
            key = literal_prefix(pattern)
            return [key] if key and self._live(key) is not None else []
        match = compile_glob(pattern).fullmatch
        return [key for key in list(self._data) if match(key) and self._live(key) is not None]

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        for key in self._matching(pattern):
            yield key

    async def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]:
        for key in self._matching(pattern):
            data = self._live(key)
            if data is not None:
                yield key, self._decode_value(key, data)

    async def clear(self) -> int:
        count = len(self._data)
        if self._expires:
            now = monotonic_ms()
            count -= sum(1 for at in self._expires.values() if at <= now)
        self._data.clear()
        self._expires.clear()
        self._reads.clear()
        return count

    # -- AtomicStorage (atomic because nothing awaits between read and write) -----------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        current = self._live(key) if type(key) is str and key else bad_key(key)
        if expected is None:
            if current is not None:
                return False
        elif current is None or not self._matches(key, current, self._encode_value(key, expected)):
            return False
        self._put(key, data, ttl_ms)
        return True

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        ttl_ms = self._ttl(ttl)
        current = self._live(key) if type(key) is str and key else bad_key(key)
        if current is None:
            total = amount
            self._put(key, str(total).encode(), ttl_ms)
            return total
        total = add_to_counter(self, key, current, amount)
        self._data[key] = str(total).encode()  # keeps the window's expiry
        return total

    # -- LockingStorage -----------------------------------------------------------------------

    def lock(
        self, key: str, *, lease: float = 30.0, timeout: float | None = None
    ) -> AbstractAsyncContextManager[LocalLock]:
        """An in-process lock: memory is never shared between processes. ``lease`` and ``timeout``
        are checked as on every backend, so settings that work here work elsewhere."""
        if type(key) is not str or not key:
            bad_key(key)
        lease_ms(lease)
        return self._locks.hold(key, timeout=check_timeout(timeout))

    async def health(self) -> bool:
        return True

    def __len__(self) -> int:
        """Entries held, expired ones not yet swept included."""
        return len(self._data)
