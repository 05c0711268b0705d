"""What every built-in backend shares: key checks, codec error wrapping, TTL defaults, lifecycle.

Backends subclass :class:`BaseStorage` and implement the contract's methods directly (no generic
"raw" layer in between: the hot paths stay one call deep). The helpers here are what keeps the
semantics identical across backends.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self, overload

from typing_extensions import TypeVar

from .._ttl import TTL, ttl_to_ms
from ..codecs import JSON, Codec
from ..contract import Storage
from ..errors import (
    ConfigError,
    CorruptValueError,
    SerializationError,
    StorageError,
    StorageUnavailable,
    WrongTypeError,
)
from ..urls import parse_query

V = TypeVar("V", default=Any)
D = TypeVar("D")

log = logging.getLogger("botstate")


def same_value(a: Any, b: Any) -> bool:
    """Strict value equality: ``1``, ``1.0`` and ``True`` differ, dict order does not matter."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def not_text(key: str | None, exc: UnicodeEncodeError, backend: str, why: str) -> ValueError:
    """The error for a key (or pattern) that is not valid text: a lone surrogate (``"\\ud800"``)
    cannot become the UTF-8 ``why`` says the backend needs."""
    what = "a key or pattern" if key is None else f"key {key!r}"
    return ValueError(
        f"{what} is not valid text: {exc.reason} at position {exc.start}, and {why} "
        f"(backend={backend}, key={key!r})"
    )


def bad_key(key: object) -> NoReturn:
    """Explain why ``key`` was refused. Backends test ``type(key) is str``, the fastest check."""
    if not isinstance(key, str):
        raise TypeError(f"storage keys are str, not {type(key).__name__}")
    if type(key) is not str:  # a StrEnum member or another subclass: its str() may differ
        raise TypeError(
            f"storage keys must be plain str, not the str subclass {type(key).__name__} "
            "(a StrEnum member, for instance): pass str(key)"
        )
    raise ValueError("storage keys must not be empty")


def refuse_derived_table(table: str, derived: Mapping[str, str]) -> None:
    """Refuse a table name that another table's parts are named by (``derived`` maps each suffix
    to what it names): with ``x`` and ``x_locks`` both in use, one storage's entries would be the
    other's lock rows, and its ``clear()`` would delete held locks."""
    for suffix, part in derived.items():
        if table.endswith(suffix):
            raise ConfigError(
                f"invalid table name {table!r}: a name ending in {suffix!r} is the {part} of table"
                f" {table.removesuffix(suffix)!r}; choose a name without that ending"
            )


def _stores_ints_as_json(codec: Codec[Any]) -> bool:
    try:
        return codec.encode(-12) == b"-12" and codec.decode(b"-12") == -12
    except Exception:
        return False


def parse_counter(storage: BaseStorage[Any], key: str, data: bytes) -> int:
    """Read a stored counter: counters are decimal ASCII (the JSON form of an int) on every backend."""
    if len(data) <= 20 and (data.isdigit() or (data[:1] == b"-" and data[1:].isdigit())):
        return int(data)  # 20 characters hold every 64-bit counter; a longer number is none
    raise WrongTypeError(
        "cannot increment a value that is not a 64-bit integer", key=key, backend=storage.backend
    )


_COUNTER_MIN, _COUNTER_MAX = -(2**63), 2**63 - 1


def check_amount(amount: int) -> None:
    """What ``increment`` accepts as an amount: an int (not a bool) within signed 64 bits."""
    if type(amount) is not int:
        raise TypeError(f"increment amount must be int, not {type(amount).__name__}")
    if not _COUNTER_MIN <= amount <= _COUNTER_MAX:
        raise ValueError(f"increment amount must fit in a signed 64-bit int, got {amount}")


def check_counter(total: int, key: str, backend: str) -> int:
    """``total``, refused when it left the signed 64-bit range.

    Redis INCRBY and SQL BIGINT stop there, and the JSON codec refuses larger ints: a counter that
    works on one backend must work on every other.
    """
    if not _COUNTER_MIN <= total <= _COUNTER_MAX:
        raise StorageError("the counter would leave the signed 64-bit range", key=key, backend=backend)
    return total


def add_to_counter(storage: BaseStorage[Any], key: str, data: bytes, amount: int) -> int:
    """The stored counter ``data`` plus ``amount``, within signed 64 bits."""
    return check_counter(parse_counter(storage, key, data) + amount, key, storage.backend)


_NOT_IN_URLS = frozenset({"codec"})


class BaseStorage(Storage[V]):
    """Common base of the built-in backends. ``V`` is the value type the codec produces."""

    backend: ClassVar[str] = "storage"
    """Short backend name used in error messages and URLs."""

    def __init__(
        self,
        *,
        codec: Codec[V] | None = None,
        default_ttl: TTL | None = None,
        sweep_interval: float | None = None,
    ) -> None:
        self.codec: Codec[V] = codec if codec is not None else JSON
        self._encode = self.codec.encode
        self._decode = self.codec.decode
        self.default_ttl_ms = ttl_to_ms(default_ttl)
        self._int_codec = _stores_ints_as_json(self.codec)
        if sweep_interval is not None and not sweep_interval > 0:
            raise ValueError("sweep_interval must be positive seconds or None")
        self.sweep_interval = sweep_interval
        """Seconds between background ``sweep()`` calls, or None for no sweeper.

        The sweeper runs once the storage is started (``async with storage:`` or ``await
        storage.start()``). Backends that open a connection on first use (SQLite, PostgreSQL,
        SQLAlchemy) also start it then, so a storage used without ``start()`` sweeps as configured;
        the in-process ones (memory, LRU, files) open nothing, and their hot paths stay free of the
        check: start them to sweep. ``stop()`` ends the sweeper.
        """
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False

    if TYPE_CHECKING:
        # Backends implement ``_get`` and bind ``get = _get`` at run time (no extra call on the
        # hottest path); the checker sees these typed overloads.
        @overload
        async def get(self, key: str) -> V | None: ...
        @overload
        async def get(self, key: str, default: V) -> V: ...
        @overload
        async def get(self, key: str, default: D) -> V | D: ...
        async def get(self, key: str, default: Any = None) -> Any: ...

        async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None: ...
        def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]: ...

    # -- shared semantics -------------------------------------------------------------------

    def _ttl(self, ttl: TTL | None) -> int | None:
        return ttl_to_ms(ttl, self.default_ttl_ms)

    def _encode_value(self, key: str, value: V) -> bytes:
        try:
            return self._encode(value)
        except Exception as exc:
            raise SerializationError(
                f"cannot encode {type(value).__name__} with {self.codec!r}: {exc}",
                key=key,
                backend=self.backend,
            ) from exc

    def _decode_value(self, key: str, data: bytes) -> V:
        try:
            return self._decode(data)
        except Exception as exc:
            raise self._corrupt(key, exc) from exc

    def _corrupt(self, key: str, exc: Exception) -> CorruptValueError:
        return CorruptValueError(
            f"stored value cannot be decoded with {self.codec!r}: {exc}", key=key, backend=self.backend
        )

    def _unavailable(self, exc: BaseException, key: str | None = None) -> StorageUnavailable:
        detail = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "")
        return StorageUnavailable(f"{type(exc).__name__}: {detail}", key=key, backend=self.backend)

    def _error(self, message: str, key: str | None = None) -> StorageError:
        return StorageError(message, key=key, backend=self.backend)

    def _check_increment(self, key: str, amount: int) -> None:
        """Refuse what ``increment`` cannot do before touching the backend.

        Counters are stored as decimal ASCII on every backend (what Redis ``INCRBY`` and SQL
        arithmetic work on), which is the JSON codec's form of an int: with a codec that writes
        ints otherwise (pickle, raw bytes) ``get`` could not read a counter back.
        """
        check_amount(amount)
        if not self._int_codec:
            raise ConfigError(
                f"increment needs a codec that stores ints as JSON numbers; {self.codec!r} does not "
                f"(key={key!r}, backend={self.backend})"
            )

    def _matches(self, key: str, stored: bytes, expected: bytes) -> bool:
        """Whether stored bytes hold the value ``expected`` encodes (the CAS comparison)."""
        if stored == expected:
            return True
        return same_value(self._decode_value(key, stored), self._decode(expected))

    # -- defaults backends may override with something faster -------------------------------

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        get = self.get
        return [await get(key) for key in keys]

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        """Store every pair. Built-in backends override this with one atomic write."""
        for key, value in mapping.items():
            await self.set(key, value, ttl=ttl)

    async def values(self, pattern: str = "*") -> AsyncIterator[V]:
        async for _, value in self.entries(pattern):
            yield value

    async def sweep(self) -> int:
        """Remove expired entries now; returns how many. Expired entries are invisible anyway."""
        return 0

    async def health(self) -> bool:
        """True when the backend answers."""
        return True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from ``scheme://...?option=value``; keyword options override the query string.

        Backends whose URL carries a location (a path, a server) override this.
        """
        return cls(**cls._url_options(url, options))

    @classmethod
    def _url_options(cls, url: str, options: dict[str, Any]) -> dict[str, Any]:
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]
        allowed = {p.name for p in params} - _NOT_IN_URLS  # objects, not text: keyword options only
        # Options annotated as text (``table: str``, ``prefix: str``) keep their value as written.
        text = {p.name for p in params if str(p.annotation).split(" |")[0] in ("str", "<class 'str'>")}
        return {**parse_query(url, allowed, text), **options}

    # -- lifecycle ---------------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect; backends that need it override. Called by ``start`` (and lazily by some)."""

    async def _close(self) -> None:
        """Release connections; backends that need it override."""

    async def start(self) -> None:
        """Open connections now (fail fast) and start the background sweeper, if configured.

        Optional: storages open on first use. Safe to call more than once.
        """
        if self._started:
            return
        await self._open()
        self._started = True
        self._start_sweeper()

    def _start_sweeper(self) -> None:
        """Start the background sweeper if configured and not running on this loop yet.

        Called by ``start()`` and by backends when they open lazily on first use.
        """
        if self.sweep_interval is None:
            return
        loop = asyncio.get_running_loop()
        sweeper = self._sweeper
        if sweeper is not None and not sweeper.done() and sweeper.get_loop() is loop:
            return
        self._sweeper = loop.create_task(
            self._sweep_forever(self.sweep_interval), name=f"botstate-sweep-{self.backend}"
        )

    async def stop(self) -> None:
        """Stop the sweeper and close connections. Idempotent; the storage may be started again."""
        await self._stop_sweeper()
        if self._started:
            self._started = False
        await self._close()
        await self._stop_sweeper()  # one a call reopening the storage meanwhile may have started

    async def _stop_sweeper(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.get_loop() is asyncio.get_running_loop():
            sweeper.cancel()
            try:
                await sweeper
            except asyncio.CancelledError:
                pass
        elif sweeper is not None:  # its loop is another one's, maybe closed: nothing to wait for
            try:
                sweeper.cancel()
            except RuntimeError:  # the loop is closed: the task went with it
                pass

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:  # a failed sweep must not end the sweeper; next round retries
                log.exception("botstate: background sweep of %s failed", self.backend)

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(codec={self.codec!r}, default_ttl_ms={self.default_ttl_ms})"


class ScanningStorage(BaseStorage[V]):
    """A backend that lists entries by scanning its own table or directory: ``keys`` and
    ``entries`` are built on its ``_scan``."""

    def _scan(self, pattern: str, values: bool) -> AsyncIterator[tuple[str, bytes]]:
        """Live ``(key, stored bytes)`` pairs matching ``pattern``; without ``values`` a backend
        may leave the bytes out (empty) where that saves reading them."""
        raise NotImplementedError

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        async for key, _ in self._scan(pattern, False):
            yield key

    async def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]:
        async for key, data in self._scan(pattern, True):
            yield key, self._decode_value(key, data)
