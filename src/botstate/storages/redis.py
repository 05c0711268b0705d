"""Redis (and Valkey, and Redis Cluster) storage on redis-py's asyncio client.

Every entry is one Redis string at ``prefix + key`` holding the codec's bytes, with a native
millisecond expiry (``PX``), so other processes and tools see plain keys. On a standalone server
every command goes through a :class:`~._redis_lane.Lane`: one connection of the storage's own that
coalesces concurrent commands into pipelined round trips. Compare-and-set, windowed counters
and locks are Lua scripts, atomic on the server.

On a cluster the storage uses redis-py's cluster client as it is: multi-key operations are split
by hash slot, iteration visits every primary.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from .._glob import _tokens, compile_glob, escape, is_literal, literal_prefix
from .._ttl import TTL, ttl_to_ms
from ..codecs import Codec
from ..errors import ConfigError, StorageError, WrongTypeError
from ..urls import redacted, refuse_unescaped_password
from . import _redis_scripts as scripts
from ._base import BaseStorage, V, bad_key, not_text, parse_counter
from ._lease import BUSY, Busy, LeaseLock
from ._redis_lane import Command, Lane

__all__ = ["RedisLock", "RedisStorage"]

K = TypeVar("K", bound=bytes | str)
T = TypeVar("T")

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError, RedisClusterException)
_CLIENT_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)
_SCHEMES = {
    "redis": ("redis", False),
    "valkey": ("redis", False),
    "rediss": ("rediss", False),
    "valkeys": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
    "valkey+cluster": ("redis", True),
    "valkeys+cluster": ("rediss", True),
}
_URL_OPTIONS = frozenset({"prefix", "lock_prefix", "default_ttl", "sweep_interval", "timeout", "scan_count"})
"""Query options that configure the storage; redis-py gets the rest of the query string."""
_TOKEN_KEEP_MS = 3_600_000
"""How long a lock's token counter outlives its last lease (it is re-seeded from the clock after)."""


def _server_match(pattern: str) -> str:
    """A ``SCAN MATCH`` pattern selecting at least every key ``pattern`` matches.

    Redis matches bytes where botstate matches characters (``?`` is one byte there, and a set of
    non-ASCII characters a set of bytes), so only literals and ``*`` are sent as they are; ``?``
    and sets widen to ``*`` and the exact check is done in Python.
    """
    out = []
    for kind, text in _tokens(pattern):
        if kind == "lit":
            out.append(escape(text))
        elif not out or out[-1] != "*":
            out.append("*")
    return "".join(out)


def _text(key: bytes | str) -> str | None:
    """A key from the server as text; None for bytes that are not UTF-8 (not written by botstate)."""
    if isinstance(key, str):
        return key
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


class _ClusterCalls:
    """Commands through redis-py's cluster client, initialised once before first use.

    redis-py's cluster client fails a command outright when a node's ``max_connections`` are all
    in use; commands here wait for a permit instead, so a burst of handlers queues, not fails.
    """

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._ready = False
        self._lock = asyncio.Lock()
        self._permits = asyncio.Semaphore(1)

    async def ready(self) -> None:
        # An uninitialised RedisCluster hit by many concurrent commands can apply some twice.
        async with self._lock:
            if not self._ready:
                await self.client.initialize()
                # Each permit holder uses at most one connection per node.
                limit = min((node.max_connections for node in self.client.get_nodes()), default=1)
                self._permits = asyncio.Semaphore(limit)
                self._ready = True

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        if not self._ready:
            await self.ready()
        async with self._permits:
            return await work()

    async def call(self, *args: Any) -> Any:
        return await self.run(lambda: self.client.execute_command(*args, **{NEVER_DECODE: True}))

    def ready_again(self) -> None:
        """After the client was closed: initialise it again on next use."""
        self._ready = False


def _unknown_options(client: Redis) -> list[str]:
    """Options of ``client``'s connections that redis-py would refuse only when connecting (a
    misspelt query option of a URL): the connection class's keyword parameters, up its ``__init__``
    chain for as long as each passes ``**kwargs`` on."""
    pool = client.connection_pool
    accepted: set[str] = set()
    if not isinstance(pool.connection_class, type):  # redis-py's own error, on connecting
        return []
    for klass in pool.connection_class.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        accepted.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return sorted(set(pool.connection_kwargs) - accepted)
    return []  # a connection class taking anything: nothing to tell


class RedisStorage(BaseStorage[V]):
    """Storage on Redis, Valkey or Redis Cluster.

    ``client_or_url`` is a URL (``redis://``, ``rediss://`` for TLS, ``redis+cluster://``,
    ``rediss+cluster://``, or the same with ``valkey`` for ``redis``) or an existing
    ``redis.asyncio.Redis`` or ``RedisCluster``, which the storage uses but never closes.
    ``prefix`` namespaces the entries (``clear`` and ``keys`` never look outside it); lock keys
    live under ``lock_prefix``, outside the entries. ``timeout`` bounds every round trip and
    connection attempt, in seconds.
    """

    backend = "redis"

    def __init__(
        self,
        client_or_url: str | Redis | RedisCluster = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "botstate:",
        lock_prefix: str = "botstate-lock:",
        default_ttl: TTL | None = None,
        codec: Codec[V] | None = None,
        sweep_interval: float | None = None,
        timeout: float | None = 5.0,
        scan_count: int = 1000,
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        if not isinstance(prefix, str) or not isinstance(lock_prefix, str) or not lock_prefix:
            raise ConfigError("prefix must be a str and lock_prefix a non-empty str")
        if timeout is not None and not timeout > 0:
            raise ConfigError("timeout must be positive seconds or None")
        if not (isinstance(scan_count, int) and scan_count > 0):
            raise ConfigError("scan_count must be a positive int")
        self.prefix = prefix
        self.lock_prefix = lock_prefix
        self.timeout = timeout
        self.scan_count = scan_count
        self._owns_client = isinstance(client_or_url, str)
        if isinstance(client_or_url, str):
            client = self._client_from_url(client_or_url, timeout)
        elif isinstance(client_or_url, (Redis, RedisCluster)):
            client = client_or_url
        else:
            kind = type(client_or_url).__name__
            raise ConfigError(f"expected a URL or a redis.asyncio client, not {kind}")
        self.client: Redis | RedisCluster = client
        self._cluster: _ClusterCalls | None = None
        self._lane: Lane | None = None
        self._call: Callable[..., Awaitable[Any]]
        if isinstance(client, RedisCluster):
            self._cluster = _ClusterCalls(client)
            self._call = self._cluster.call
        else:
            self._lane = Lane(self._make_connection, timeout)
            self._call = self._lane.call
        # With an empty prefix, lock keys fall inside the entries' namespace: iteration skips them
        # and every method refuses them (see _full).
        self._hide_locks = lock_prefix.startswith(prefix)
        self._lock_prefix_bytes = lock_prefix.encode()
        self._bare_prefix = (prefix, prefix.encode())
        self._prefix_match = escape(prefix)

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _client_from_url(url: str, timeout: float | None) -> Redis | RedisCluster:
        refuse_unescaped_password(url)
        parts = urlsplit(url)
        scheme, cluster = _SCHEMES.get(parts.scheme.lower(), (None, False))
        if scheme is None:
            raise ConfigError(f"not a Redis URL: {redacted(url)!r} (schemes: {', '.join(sorted(_SCHEMES))})")
        client_url = urlunsplit((scheme, *parts[1:]))
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        try:
            if cluster:
                return RedisCluster.from_url(client_url, **options)
            client = Redis.from_url(client_url, **options)
        except (ValueError, TypeError, RedisError, RedisClusterException) as exc:
            raise ConfigError(f"bad Redis URL {redacted(url)!r}: {exc}") from exc
        unknown = _unknown_options(client)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}: neither botstate's nor redis-py's")
        return client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from a Redis URL. Query options botstate knows (``prefix``, ``default_ttl``,
        ``timeout``...) configure the storage; the others are redis-py's (``ssl_cert_reqs``...).
        """
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        ours = urlencode([(k, v) for k, v in pairs if k in _URL_OPTIONS])
        theirs = urlencode([(k, v) for k, v in pairs if k not in _URL_OPTIONS])
        return cls(urlunsplit((*parts[:3], theirs, "")), **cls._url_options(f"redis://?{ours}", options))

    def _make_connection(self) -> AbstractConnection:
        """The lane's own connection, configured like the client's pool.

        Replies are never decoded (values are codec bytes, whatever the client's
        ``decode_responses``), failures are not retried by redis-py (the lane bounds and reports
        them itself) and the lane's ``timeout`` covers the whole round trip.
        """
        pool = cast(Redis, self.client).connection_pool
        kwargs = {
            **pool.connection_kwargs,
            "decode_responses": False,
            "socket_timeout": None,
            "retry": Retry(NoBackoff(), 0),
        }
        if self.timeout is not None:
            kwargs["socket_connect_timeout"] = self.timeout
        return pool.connection_class(**kwargs)

    async def _open(self) -> None:
        try:
            await self._ping()
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc) from exc

    async def _ping(self) -> None:
        await (self._call("PING") if self._cluster is None else self._cluster.run(self._cluster.client.ping))

    async def _close(self) -> None:
        if self._lane is not None:
            await self._lane.close()
        if self._owns_client:
            await self.client.aclose()
            if self._cluster is not None:
                self._cluster.ready_again()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prefix={self.prefix!r}, cluster={self._cluster is not None}, "
            f"codec={self.codec!r}, default_ttl_ms={self.default_ttl_ms})"
        )

    # -- errors ------------------------------------------------------------------------------------

    def _wrap(self, exc: BaseException, key: str | None = None) -> StorageError:
        """botstate's exception for a client exception (kept as ``__cause__`` by the caller)."""
        if isinstance(exc, _UNAVAILABLE):
            return self._unavailable(exc, key)
        message = str(exc)
        if "WRONGTYPE" in message or "not an integer" in message:
            return WrongTypeError(message, key=key, backend=self.backend)
        return self._error(f"{type(exc).__name__}: {message}", key)

    async def _script(self, script: scripts.Script, keys: list[str], *args: Any) -> Any:
        try:
            return await self._call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._call("EVAL", script.source, len(keys), *keys, *args)

    # -- Storage ----------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        """The Redis key of an entry, after checking ``key`` names one.

        With a prefix that ``lock_prefix`` starts with (``prefix=""``), some names fall on lock
        keys: reading them would show a lock as an entry and writing them would break the lock,
        so they are refused rather than silently mixed up.
        """
        if type(key) is not str or not key:
            bad_key(key)
        full = self.prefix + key
        self._check_text(key, key)
        if self._hide_locks and full.startswith(self.lock_prefix):
            raise ConfigError(
                f"key {key!r} is reserved: with prefix {self.prefix!r} it falls under "
                f"lock_prefix {self.lock_prefix!r} (backend={self.backend}); use another key or prefix"
            )
        return full

    def _check_text(self, text: str, key: str | None) -> None:
        """Refuse a key or pattern that cannot be sent (a lone surrogate); only the rare text that
        is not ASCII pays for the encoding."""
        if text.isascii():
            return
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise not_text(key, exc, self.backend, "Redis keys are sent as UTF-8") from None

    def _is_lock_key(self, full: bytes | str) -> bool:
        if isinstance(full, bytes):
            return self._hide_locks and full.startswith(self._lock_prefix_bytes)
        return self._hide_locks and full.startswith(self.lock_prefix)

    async def _get(self, key: str, default: Any = None) -> Any:
        full = self._full(key)
        try:
            data = await self._call("GET", full)
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc
        if data is None:
            return default
        try:
            return self._decode(data)
        except Exception as exc:
            raise self._corrupt(key, exc) from exc

    if not TYPE_CHECKING:
        get = _get

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        full = self._full(key)
        ttl_ms = self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)
        data = self._encode_value(key, value)
        try:
            if ttl_ms is None:
                await self._call("SET", full, data)
            else:
                await self._call("SET", full, data, "PX", ttl_ms)
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc

    async def delete(self, key: str) -> bool:
        full = self._full(key)
        try:
            return bool(await self._call("DEL", full))
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc

    async def has(self, key: str) -> bool:
        full = self._full(key)
        try:
            return bool(await self._call("EXISTS", full))
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        keys = list(keys)
        fulls = [self._full(key) for key in keys]
        if not keys:
            return []
        try:
            raw = await self._mget(fulls)
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, keys[0] if len(keys) == 1 else None) from exc
        return [
            None if data is None else self._decode_value(key, data)
            for key, data in zip(keys, raw, strict=True)
        ]

    async def _mget(self, full_keys: Sequence[bytes | str]) -> list[bytes | None]:
        """Stored bytes of full keys: one ``MGET``, or one per hash slot on a cluster."""
        if self._cluster is None:
            return cast(list[bytes | None], await self._call("MGET", *full_keys))
        found: dict[bytes | str, bytes | None] = {}
        for group, values in await self._per_slot(full_keys, lambda group: ("MGET", *group)):
            found.update(zip(group, values, strict=True))
        return [found[key] for key in full_keys]

    async def _per_slot(
        self,
        full_keys: Iterable[K],
        command: Callable[[list[K]], Command],
        script: scripts.Script | None = None,
    ) -> list[tuple[list[K], Any]]:
        """Run ``command(keys)`` once per hash slot of a cluster, in one pipeline (one round trip
        per primary), and pair each group of keys with its reply.

        With ``script``, the commands are its ``EVALSHA``: those a node answers with ``NOSCRIPT``
        (nothing ran) are sent again in full, so the source crosses the network once per node.
        """
        cluster = cast(_ClusterCalls, self._cluster)
        slots: dict[int, list[K]] = {}
        for key in full_keys:
            slots.setdefault(cluster.client.keyslot(key), []).append(key)
        commands = [command(group) for group in slots.values()]
        replies = await self._pipeline(commands)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if script is not None and unknown:
            sent_in_full = await self._pipeline([("EVAL", script.source, *commands[i][2:]) for i in unknown])
            for i, reply in zip(unknown, sent_in_full, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(zip(slots.values(), replies, strict=True))

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        """Replies of one cluster pipeline; a command's error is its reply, not raised."""
        cluster = cast(_ClusterCalls, self._cluster)
        pipe = cluster.client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args, **{NEVER_DECODE: True})
        return cast(list[Any], await cluster.run(partial(pipe.execute, raise_on_error=False)))

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        """Write every pair at once: one atomic command (one per hash slot on a cluster)."""
        ttl_ms = self._ttl(ttl)
        encoded: dict[str, bytes] = {}
        for key, value in mapping.items():
            encoded[self._full(key)] = self._encode_value(key, value)
        if not encoded:
            return
        try:
            if self._cluster is None and ttl_ms is not None:
                await self._script(scripts.SET_MANY, list(encoded), ttl_ms, *encoded.values())
            elif self._cluster is None:
                await self._call(*self._set_many_command(list(encoded), encoded, ttl_ms))
            else:
                command = partial(self._set_many_command, encoded=encoded, ttl_ms=ttl_ms)
                await self._per_slot(encoded, command, scripts.SET_MANY)
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, next(iter(mapping)) if len(mapping) == 1 else None) from exc

    @staticmethod
    def _set_many_command(keys: list[str], encoded: dict[str, bytes], ttl_ms: int | None) -> Command:
        if ttl_ms is None:
            return ("MSET", *[part for key in keys for part in (key, encoded[key])])
        return ("EVALSHA", scripts.SET_MANY.sha, len(keys), *keys, ttl_ms, *[encoded[key] for key in keys])

    async def health(self) -> bool:
        """True when the server answers a PING within the timeout; never raises."""
        try:
            await self._ping()
        except Exception:  # whatever the client raises (a connection made in a closed loop, say)
            return False
        return True

    # -- TtlStorage ----------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        full = self._full(key)
        ttl_ms = self._ttl(ttl)
        try:
            if ttl_ms is None:
                return bool(await self._script(scripts.TOUCH_PERSIST, [full]))
            return bool(await self._call("PEXPIRE", full, ttl_ms))
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc

    async def sweep(self) -> int:
        """Nothing to do: Redis removes expired keys itself."""
        return 0

    # -- IterableStorage ----------------------------------------------------------------------

    async def _scan(self, pattern: str) -> AsyncIterator[list[tuple[str, bytes | str]]]:
        """Pages of ``(key, full key)`` under this prefix matching ``pattern``, every page of
        every primary. A key is re-checked here since the server only narrows the search."""
        literal = is_literal(pattern)  # refuses a pattern that is not a str, as on every backend
        self._check_text(pattern, None)
        if literal:
            key = literal_prefix(pattern)
            if key and not self._is_lock_key(self.prefix + key) and await self.has(key):
                yield [(key, self.prefix + key)]
            return
        check = None if pattern == "*" else compile_glob(pattern).fullmatch
        start = len(self.prefix)
        async for page in self._entry_pages(_server_match(pattern)):
            out = []
            for full in page:
                text = _text(full)
                if text is None:  # not UTF-8: no str key names it, only clear() sees it
                    continue
                key = text[start:]
                if check is None or check(key):
                    out.append((key, full))
            if out:
                yield out

    async def _entry_pages(self, match: str) -> AsyncIterator[list[bytes | str]]:
        """Pages of full keys under this prefix (lock keys left out) matching ``match``."""
        try:
            async for page in self._scan_pages(self._prefix_match + match):
                yield [full for full in page if full not in self._bare_prefix and not self._is_lock_key(full)]
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc) from exc

    async def _scan_pages(self, match: str) -> AsyncIterator[list[bytes | str]]:
        count = self.scan_count
        if self._cluster is None:
            cursor: Any = b"0"
            while True:
                cursor, page = await self._call("SCAN", cursor, "MATCH", match, "COUNT", count)
                yield page
                if cursor in (b"0", 0):
                    return
        cluster = self._cluster
        await cluster.ready()
        for node in cluster.client.get_primaries():
            node_cursor = 0
            while True:
                args = ("SCAN", node_cursor, "MATCH", match, "COUNT", count)
                scan = partial(
                    cluster.client.execute_command, *args, target_nodes=node, **{NEVER_DECODE: True}
                )
                cursors, page = await cluster.run(scan)
                yield page
                node_cursor = cursors[node.name]
                if not node_cursor:
                    break

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        async for page in self._scan(pattern):
            for key, _ in page:
                yield key

    async def entries(self, pattern: str = "*") -> AsyncIterator[tuple[str, V]]:
        async for page in self._scan(pattern):
            try:
                values = await self._mget([full for _, full in page])
            except _CLIENT_ERRORS as exc:
                raise self._wrap(exc) from exc
            for (key, _), data in zip(page, values, strict=True):
                if data is not None:  # deleted or expired since the scan saw it
                    yield key, self._decode_value(key, data)

    async def clear(self) -> int:
        """Delete every key under the prefix (``UNLINK`` per scanned page); returns the count.

        Keys that are not UTF-8 (written by another client) go too: they are under the prefix,
        and a cleared namespace must be empty.
        """
        removed = 0
        async for fulls in self._entry_pages("*"):
            if not fulls:
                continue
            try:
                if self._cluster is None:
                    removed += int(await self._call("UNLINK", *fulls))
                else:
                    replies = await self._per_slot(fulls, lambda group: ("UNLINK", *group))
                    removed += sum(int(count) for _, count in replies)
            except _CLIENT_ERRORS as exc:
                raise self._wrap(exc) from exc
        return removed

    # -- AtomicStorage ----------------------------------------------------------------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        full = self._full(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        try:
            if expected is None:
                px = () if ttl_ms is None else ("PX", ttl_ms)
                return await self._call("SET", full, data, "NX", *px) is not None
            want = self._encode_value(key, expected)
            while True:
                reply = await self._script(scripts.CAS, [full], want, data, "" if ttl_ms is None else ttl_ms)
                if not isinstance(reply, (bytes, str)):
                    return bool(reply)
                stored = reply.encode() if isinstance(reply, str) else reply
                # Different bytes may still hold an equal value (dict order): retry on those
                # exact bytes, so the write stays conditional on nothing having changed since.
                if not self._matches(key, stored, want):
                    return False
                want = stored
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        full = self._full(key)
        ttl_ms = self._ttl(ttl)
        try:
            if ttl_ms is None:
                return int(await self._call("INCRBY", full, amount))
            total = await self._script(scripts.INCREMENT, [full], amount, ttl_ms)
        except _CLIENT_ERRORS as exc:
            raise self._wrap(exc, key) from exc
        return parse_counter(self, key, total.encode() if isinstance(total, str) else total)

    # -- LockingStorage ---------------------------------------------------------------------------

    def lock(self, key: str, *, lease: float = 30.0, timeout: float | None = None) -> RedisLock:
        """A lease lock shared by every process using this Redis (see :class:`RedisLock`)."""
        return RedisLock(self, key, lease=lease, timeout=timeout)

    def _lock_keys(self, key: str) -> list[str]:
        # One hash tag for both keys (same cluster slot); "@" keeps the tag non-empty, since an
        # empty tag ("{}") would make Redis hash each whole key on its own.
        lock = f"{self.lock_prefix}{{@{self.prefix}{key}}}"
        self._check_text(key, key)
        return [lock, lock + ":token"]


class RedisLock(LeaseLock[tuple[str, int]]):
    """A Redis lease lock: ``token`` is the fencing token, ``extend`` renews the lease.

    The lock is a key holding a random owner id with a ``PX`` expiry, taken, renewed and released
    by Lua scripts that check the owner, so a holder whose lease ran out cannot free or renew a
    successor's lock. Tokens come from a counter key in the same hash slot.
    """

    __slots__ = ("_keys", "_storage")

    min_delay = 0.002
    max_delay = 0.1

    def __init__(self, storage: RedisStorage[Any], key: str, *, lease: float, timeout: float | None) -> None:
        super().__init__(key, storage.backend, lease=lease, timeout=timeout)
        self._storage = storage
        self._keys = storage._lock_keys(key)

    async def _run(self, script: scripts.Script, keys: list[str], *args: Any) -> Any:
        storage = self._storage
        try:
            return await storage._script(script, keys, *args)
        except _CLIENT_ERRORS as exc:
            raise storage._wrap(exc, self._key) from exc

    async def _try_acquire(self, lease_ms: int) -> tuple[str, int] | Busy:
        owner = os.urandom(16).hex()  # per acquisition: a late give-back never frees a later one
        token = await self._run(scripts.LOCK_ACQUIRE, self._keys, owner, lease_ms, lease_ms + _TOKEN_KEEP_MS)
        return (owner, int(token)) if token else BUSY

    async def _extend(self, handle: tuple[str, int], lease_ms: int) -> bool:
        return bool(await self._run(scripts.LOCK_EXTEND, self._keys[:1], handle[0], lease_ms))

    async def _release(self, handle: tuple[str, int]) -> bool:
        return bool(await self._run(scripts.LOCK_RELEASE, self._keys[:1], handle[0]))

    def _token_of(self, handle: tuple[str, int]) -> int:
        return handle[1]
