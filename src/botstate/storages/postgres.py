"""PostgreSQL storage through asyncpg: one table per storage, shared by every process using it.

Every operation is a single SQL statement (upserts, ``UPDATE ... WHERE value = $n``, ``INSERT ... ON
CONFLICT``), so a failure never leaves a write half-applied and compare-and-set, increments and locks
are atomic against every other client. Concurrent ``get``/``set`` calls are coalesced into one
statement while another is in flight (see ``_pg_lane``); a lone call is sent straight away, on a
connection its lane keeps (``_Held``) rather than one borrowed from the pool per statement.
The table layout and statements live in ``_pg_sql``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .._glob import compile_glob, is_literal, literal_prefix, prefix_upper_bound, to_byte_like
from .._ttl import TTL, ttl_to_ms
from ..codecs import Codec
from ..errors import ConfigError, StorageError, StorageUnavailable
from ..urls import parse_query
from ._base import ScanningStorage, V, bad_key, log, parse_counter
from ._lease import BUSY, Busy, LeaseLock
from ._pg_lane import Lane
from ._pg_sql import (
    INLINE_KEY_BYTES,
    LAYOUT_QUERY,
    LOCK_SWEEP_EVERY,
    LONG_KEY_MARK,
    META_TABLE,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    Statements,
    key_id,
    key_text,
)

__all__ = ["PostgresLock", "PostgresStorage"]

_PAGE = 500
"""Rows per page when iterating keys or entries."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, statement timeout, crash recovery
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # a closed connection or pool
    asyncpg.exceptions.InternalClientError,  # a connection the server killed while it sat idle
)
_RETRYABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # A pooled connection the server terminated while idle fails its next statement with a protocol
    # state error ("cannot switch to state ..."): the statement never ran.
    asyncpg.exceptions.InternalClientError,
)
"""Failures of a connection that was dead before the statement ran: a read may safely retry once."""


class _NoResetConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection returned to the pool as it is.

    asyncpg's default reset query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL``) costs a round trip on every release, which cuts throughput to 0.3-0.75x. botstate never
    leaves session state behind (no ``SET``, cursors, listeners or session advisory locks; every
    statement is autocommitted), so there is nothing to reset. An open transaction is still rolled
    back by asyncpg itself.
    """

    def get_reset_query(self) -> str:
        return ""


class _Held:
    """The pooled connection a lane keeps between its statements while the storage is open.

    A lane never has two statements in flight, so one connection serves all of them; keeping it
    saves the pool's acquire and release (a queue, a shielded task and a reset check) on every
    operation, which is most of what a sequential ``get`` costs besides the round trip itself.
    ``conn`` is None while a statement runs on it: ``stop()`` releases only an idle one and leaves
    a busy one to be handed back by its statement.
    """

    __slots__ = ("conn", "pool")

    def __init__(self) -> None:
        self.conn: Any = None  # an asyncpg PoolConnectionProxy
        self.pool: Any = None  # the pool it came from


def _alive(conn: Any) -> bool:
    """Whether a kept connection can take a statement. One the server closed while it was idle is
    detached by asyncpg, which returns it to its pool itself: then even asking raises."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _hand_back(pool: asyncpg.Pool, conn: Any) -> None:
    """Return a kept connection to its pool: a closed one is replaced there, a cancelled statement
    is waited for first, and a connection already returned is left alone."""
    try:
        await pool.release(conn)
    except Exception:  # the pool was closed meanwhile (stop()): its connections went with it
        pass


_Row = tuple[bytes, bytes | None, bytes, int | None]
"""A row to write: its id, the key when too long to be the id (else None), the value, its ttl in ms."""


def _raw_key(key: str) -> bytes:
    """UTF-8, lone surrogates included: every Python str is a valid key and comes back unchanged."""
    return key.encode("utf-8", "surrogatepass")


def _ids(key: str) -> tuple[bytes, bytes | None]:
    """A key's primary-key bytes and, for a long key, the full key to store beside its digest."""
    raw = _raw_key(key)
    if len(raw) <= INLINE_KEY_BYTES:
        return raw, None
    return key_id(raw), raw


class PostgresLock(LeaseLock[int]):
    """A lock row in ``<table>_locks``. ``token`` comes from a sequence: it grows with every acquisition.

    Taken by one atomic upsert when the row is free or its lease ran out; the token also identifies
    the holder, so renewing and deleting the row only ever touch this acquisition's row.
    """

    __slots__ = ("_id", "_storage")

    min_delay = 0.005
    max_delay = 0.25  # each attempt borrows a pooled connection: poll gently

    def __init__(
        self, storage: PostgresStorage[Any], key: str, *, lease: float, timeout: float | None
    ) -> None:
        super().__init__(key, storage.backend, lease=lease, timeout=timeout)
        self._storage = storage
        self._id = _ids(key)[0]

    async def _try_acquire(self, lease_ms: int) -> int | Busy:
        storage = self._storage
        token = await storage._run("fetchval", storage._sql.lock_acquire, self._id, lease_ms, key=self._key)
        return BUSY if token is None else int(token)

    async def _extend(self, handle: int, lease_ms: int) -> bool:
        storage = self._storage
        sql = storage._sql.lock_extend
        return bool(await storage._run("fetchval", sql, self._id, handle, lease_ms, key=self._key))

    async def _release(self, handle: int) -> bool:
        storage = self._storage
        status = await storage._run("execute", storage._sql.lock_release, self._id, handle, key=self._key)
        await storage._maybe_sweep_locks()
        return bool(status != "UPDATE 0")  # no row of ours: a successor took it over

    def _token_of(self, handle: int) -> int:
        return handle


class PostgresStorage(ScanningStorage[V]):
    """Entries in a PostgreSQL table, for bots that already run PostgreSQL or need several processes.

    ``dsn_or_pool`` is a DSN (``postgresql://user:password@host:5432/db``) or an asyncpg pool you
    manage (it is never closed here). ``table`` names the table (created if missing, along with
    ``<table>_locks``); several storages may share a database under different tables.
    ``command_timeout`` bounds every statement and ``connect_timeout`` every connection attempt
    (seconds) so that a stalled server surfaces as ``StorageUnavailable`` instead of a hang. Pool
    sizes and any further keyword (``ssl``, ``server_settings``, ``statement_cache_size``...) go to
    ``asyncpg.create_pool`` when the storage makes its own pool.

    With its own pool of at least 3 connections, the ``get`` and ``set`` lanes each keep one pooled
    connection while the storage is open (see :class:`_Held`); a pool you pass is only ever borrowed
    from per statement, so the storage never holds connections the rest of your program may need.
    """

    backend = "postgres"

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool,
        *,
        table: str = "botstate",
        default_ttl: TTL | None = None,
        sweep_interval: float | None = None,
        codec: Codec[V] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float | None = 10.0,
        connect_timeout: float = 10.0,
        **pool_options: Any,
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        self._sql = Statements(table)
        self.table = table
        if isinstance(dsn_or_pool, asyncpg.Pool):
            self._dsn: str | None = None
            self._external: asyncpg.Pool | None = dsn_or_pool
        elif isinstance(dsn_or_pool, str):
            self._dsn, self._external = dsn_or_pool, None
        else:
            raise ConfigError(
                f"expected a PostgreSQL DSN or an asyncpg pool, not {type(dsn_or_pool).__name__}"
            )
        for name, seconds in (("command_timeout", command_timeout), ("connect_timeout", connect_timeout)):
            if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
                raise ConfigError(f"{name} must be positive seconds, got {seconds!r}")
        self._pool_options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "command_timeout": command_timeout,
            "timeout": connect_timeout,
            "connection_class": _NoResetConnection,
            **pool_options,
        }
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._next_lock_sweep = 0.0  # monotonic seconds: the first release sweeps
        # Two kept connections must leave at least one for every other statement, or they would wait
        # for ever for a free one.
        keep = self._external is None and max_size >= 3
        self._reader: _Held | None = _Held() if keep else None
        self._writer: _Held | None = _Held() if keep else None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool was opened in
        self._gets, self._sets = self._lanes()

    # -- connections and errors ---------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``postgresql://user@host/db?table=bot&default_ttl=3600``: botstate's own options are taken
        from the query string, every other parameter (``sslmode``...) stays in the DSN for asyncpg."""
        parts = urlsplit(url)
        ours = {
            "table",
            "default_ttl",
            "sweep_interval",
            "min_size",
            "max_size",
            "command_timeout",
            "connect_timeout",
        }
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        own = [(name, value) for name, value in pairs if name in ours]
        rest = [(name, value) for name, value in pairs if name not in ours]
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        parsed = parse_query("?" + urlencode(own), ours)
        parsed.update((name, value) for name, value in own if name == "table")  # a name, never coerced
        return cls(dsn, **{**parsed, **options})

    async def _open(self) -> None:
        async with self._opening:
            if self._pool is not None:
                return
            pool = self._external
            try:
                if pool is None:
                    pool = await asyncpg.create_pool(self._dsn, **self._pool_options)
                try:
                    await self._ensure_schema(pool)
                except BaseException:
                    if pool is not self._external:
                        pool.terminate()
                    raise
            except (StorageError, ConfigError):
                raise
            except ValueError as exc:  # asyncpg's ClientConfigurationError: a malformed DSN or option
                raise ConfigError(f"invalid PostgreSQL connection settings: {exc}") from exc
            except Exception as exc:
                raise self._failed(exc, None) from exc
            self._pool = pool
            self._loop = asyncio.get_running_loop()

    def _lanes(self) -> tuple[Lane[bytes, bytes | None], Lane[_Row, None]]:
        """The coalescing lanes of reads and writes (see ``_pg_lane``)."""
        return Lane(partial(self._get_batch, held=self._reader)), Lane(self._set_batch)

    def _forget_connections(self) -> None:
        """Drop the pool, kept connections and lanes of an event loop that is gone (a second
        ``asyncio.run`` without ``stop()`` in between): the next call opens afresh in this loop."""
        pool, self._pool, self._loop = self._pool, None, None
        for held in (self._reader, self._writer):
            if held is not None:
                held.conn = None
        self._gets, self._sets = self._lanes()
        self._opening = asyncio.Lock()
        if pool is not None and pool is not self._external:
            try:
                pool.terminate()
            except Exception:  # its loop is closed: the connections went with it
                pass

    async def _ensure_schema(self, pool: asyncpg.Pool) -> None:
        """Create the tables once, under a transaction-level advisory lock: concurrent creators
        (several processes starting at once) wait for each other instead of failing."""
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (table_name text PRIMARY KEY,"
                " schema_version integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            )
            version = await conn.fetchval(
                f"SELECT schema_version FROM {META_TABLE} WHERE table_name = $1", self.table
            )
            if version is not None and version > SCHEMA_VERSION:
                raise ConfigError(
                    f"table {self.table!r} has schema version {version}, newer than this botstate's"
                    f" ({SCHEMA_VERSION}): upgrade botstate"
                )
            existing, indexed = await self._layout(conn)
            if version == SCHEMA_VERSION and existing and indexed:
                return  # no DDL when nothing is missing: CREATE INDEX would lock out writers meanwhile
            # A new table (or one dropped by hand since): no older layout exists yet to migrate from.
            for statement in self._sql.schema:
                await conn.execute(statement)
            if not indexed:
                await conn.execute(self._sql.expiry_index)
            await conn.execute(
                f"INSERT INTO {META_TABLE} (table_name, schema_version) VALUES ($1, $2)"
                " ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version,"
                " updated_at = now()",
                self.table,
                SCHEMA_VERSION,
            )

    async def _layout(self, conn: asyncpg.Connection) -> tuple[bool, bool]:
        """Whether the tables and sequence all exist, and whether the expiry index does.

        ``CREATE ... IF NOT EXISTS`` silently keeps whatever already has the name, so a relation of
        that name with another layout (another program's table, a view) is refused here rather than
        written to.
        """
        rows = await conn.fetch(LAYOUT_QUERY, self._sql.relations)
        existing = True
        for name, (kind, columns), row in zip(self._sql.relations, self._sql.layout, rows, strict=True):
            if row[0] is None:
                existing = False
                continue
            found = (row[0], row[1] and sorted(row[1]), row[2] and list(row[2]))
            if found[0] != kind or (columns is not None and found[1:] != (columns, ["id"])):
                raise ConfigError(
                    f"{name} exists but is not what PostgresStorage(table={self.table!r}) creates"
                    f" (kind {row[0]!r}, columns {found[1]}, primary key {found[2]}): it belongs to"
                    " something else, so choose another table name"
                )
        return existing, bool(rows[0][3])  # [3]: whether the entries table has its expiry index

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        for held in (self._reader, self._writer):
            if held is not None and held.conn is not None:
                conn, held.conn = held.conn, None
                await _hand_back(held.pool, conn)
        if pool is None or pool is self._external:
            return
        try:
            await asyncio.wait_for(pool.close(), 5)
        except Exception:  # a dead server or a stuck connection: drop the connections instead
            pool.terminate()

    async def _connected(self) -> asyncpg.Pool:
        """The pool, opening the storage (and its sweeper, if configured) on first use."""
        if self._pool is None:
            await self._open()
            self._start_sweeper()
        assert self._pool is not None
        return self._pool

    def _failed(self, exc: BaseException, key: str | None) -> StorageError:
        """The botstate error for a client exception; botstate's own errors pass unchanged, but
        for naming ``key`` when they were raised without one (opening the pool on first use)."""
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._forget_connections()
            return StorageUnavailable(
                "the storage was opened in another event loop, which ended without stop(); it opens"
                " again in this one from the next call",
                key=key,
                backend=self.backend,
            )
        if isinstance(exc, StorageError):
            if exc.key is None and key is not None:
                return type(exc)(exc.message, key=key, backend=exc.backend)
            return exc
        if isinstance(exc, _UNAVAILABLE) and not isinstance(exc, ValueError):  # ValueError: bad arguments
            return self._unavailable(exc, key)
        return self._error(f"{type(exc).__name__}: {exc}", key)

    async def _run(
        self, method: str, sql: str, *args: Any, key: str | None = None, retry: bool = False
    ) -> Any:
        """Run one statement through the pool (``fetchval``/``fetch``/``execute``), errors wrapped.

        ``retry``: the statement is idempotent, so a connection found dead is replaced and the
        statement sent once more.
        """
        try:
            if retry:
                return await self._idempotent(None, method, sql, *args)
            pool = self._pool or await self._connected()
            return await getattr(pool, method)(sql, *args)
        except Exception as exc:
            raise self._failed(exc, key) from exc

    async def _idempotent(self, held: _Held | None, method: str, sql: str, *args: Any) -> Any:
        """Run an idempotent statement (a read, an upsert of given values): on the lane's kept
        connection if ``held``, else on one borrowed from the pool; errors are not wrapped.

        A connection found dead (``_RETRYABLE``) is replaced and the statement sent once more. A
        kept connection that fails in any way, cancellation included, goes back to the pool, which
        waits for a cancelled statement to end or replaces a broken connection; the next statement
        takes a fresh one.
        """
        if held is None:
            pool = self._pool or await self._connected()
            try:
                return await getattr(pool, method)(sql, *args)
            except _RETRYABLE:
                return await getattr(pool, method)(sql, *args)
        conn, held.conn = held.conn, None
        try:
            if conn is None or not _alive(conn):
                conn = await self._keep(held, conn)
            try:
                result = await getattr(conn, method)(sql, *args)
            except _RETRYABLE:
                conn = await self._keep(held, conn)
                result = await getattr(conn, method)(sql, *args)
        except BaseException:
            if conn is not None:
                await _hand_back(held.pool, conn)
            raise
        if self._pool is held.pool:
            held.conn = conn
        else:  # stop() ran meanwhile
            await _hand_back(held.pool, conn)
        return result

    async def _keep(self, held: _Held, old: Any) -> Any:
        """A fresh connection for ``held``, after handing back the one it replaces."""
        if old is not None:
            await _hand_back(held.pool, old)
        pool = self._pool or await self._connected()
        conn = await pool.acquire()
        held.pool = pool
        return conn

    # -- Storage: get and set go through their lanes -------------------------------------------

    async def _get_batch(self, ids: Sequence[bytes], held: _Held | None = None) -> list[bytes | None]:
        rows = await self._idempotent(held, "fetch", self._sql.get_many, list(set(ids)))
        found = {row[0]: row[1] for row in rows}
        return [found.get(id_) for id_ in ids]

    async def _get(self, key: str, default: Any = None) -> Any:
        if type(key) is not str or not key:
            bad_key(key)
        raw = key.encode("utf-8", "surrogatepass")
        id_ = raw if len(raw) <= INLINE_KEY_BYTES else key_id(raw)
        lane = self._gets
        try:
            if lane.busy:
                data = await lane.join(id_)
            else:
                lane.busy = True
                try:
                    data = await self._idempotent(self._reader, "fetchval", self._sql.get, id_)
                finally:
                    lane.done()
        except Exception as exc:
            raise self._failed(exc, key) from exc
        if data is None:
            return default
        try:
            return self._decode(data)
        except Exception as exc:
            raise self._corrupt(key, exc) from exc

    if not TYPE_CHECKING:
        get = _get

    async def _set_batch(self, rows: Sequence[_Row]) -> list[None]:
        latest = {row[0]: row for row in rows}  # one statement cannot write a row twice: last one wins
        await self._write_rows(list(latest.values()), self._writer)
        return [None] * len(rows)

    async def _write_rows(self, rows: list[_Row], held: _Held | None = None) -> None:
        """Upsert distinct rows in one statement (all or nothing); retried once on a dead connection,
        which is safe because writing the same rows twice leaves the same result."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        await self._idempotent(held, "execute", self._sql.set_many, *columns)

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)
        try:
            data = self._encode(value)
        except Exception:
            data = self._encode_value(key, value)  # raises SerializationError naming the key
        id_, long_key = _ids(key)
        lane = self._sets
        try:
            if lane.busy:
                await lane.join((id_, long_key, data, ttl_ms))
                return
            lane.busy = True
            try:
                await self._idempotent(self._writer, "execute", self._sql.set, id_, long_key, data, ttl_ms)
            finally:
                lane.done()
        except Exception as exc:
            raise self._failed(exc, key) from exc

    async def delete(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        return bool(await self._run("fetchval", self._sql.delete, _ids(key)[0], key=key))

    async def has(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        return bool(await self._run("fetchval", self._sql.has, _ids(key)[0], key=key, retry=True))

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        keys = list(keys)
        for key in keys:
            if type(key) is not str or not key:
                bad_key(key)
        if not keys:
            return []
        ids = [_ids(key)[0] for key in keys]
        try:
            found = await self._get_batch(ids)
        except Exception as exc:
            raise self._failed(exc, None) from exc
        return [
            None if data is None else self._decode_value(key, data)
            for key, data in zip(keys, found, strict=True)
        ]

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        """Store every pair in one statement: all of them are written, or none."""
        ttl_ms = self._ttl(ttl)
        rows = []
        for key, value in mapping.items():
            if type(key) is not str or not key:
                bad_key(key)
            rows.append((*_ids(key), self._encode_value(key, value), ttl_ms))
        if not rows:
            return
        try:
            await self._write_rows(rows)
        except Exception as exc:
            raise self._failed(exc, None) from exc

    # -- TtlStorage -------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        return bool(await self._run("fetchval", self._sql.touch, _ids(key)[0], ttl_ms, key=key))

    async def sweep(self) -> int:
        """Delete expired entries (and lock rows free for a while) now; returns how many entries."""
        removed: int = await self._run("fetchval", self._sql.sweep)
        await self._run("execute", self._sql.sweep_locks)
        return removed

    async def _maybe_sweep_locks(self) -> None:
        """Delete lock rows free for a while, at most once a minute, from a release: released rows
        are kept (see ``_pg_sql``), and without a sweeper they would pile up, one per key ever
        locked. A failure is logged: the release itself succeeded."""
        now = time.monotonic()
        if now < self._next_lock_sweep:
            return
        self._next_lock_sweep = now + LOCK_SWEEP_EVERY
        try:
            await self._run("execute", self._sql.sweep_locks)
        except StorageError as exc:
            log.warning("botstate: deleting free lock rows failed, the next release retries: %s", exc)

    # -- IterableStorage --------------------------------------------------------------------

    async def _scan(self, pattern: str, values: bool) -> AsyncIterator[tuple[str, bytes]]:
        """Matching unexpired rows, page by page.

        Short keys are their own index entries, so the pattern's literal prefix becomes a byte range
        of the primary key; long keys (digests, all from ``0xFF`` on) are a second range. The server
        filters both with a byte ``LIKE`` (case-sensitive, ``%``/``_``/``\\`` in keys escaped),
        which is exact for ``*`` and a superset for ``?`` and sets (one character is one to four
        bytes): every candidate is re-checked with the exact glob in Python.
        """
        if is_literal(pattern):
            key = literal_prefix(pattern)
            if key:
                data = await self._run("fetchval", self._sql.get, _ids(key)[0], key=key, retry=True)
                if data is not None:
                    yield key, data
            return
        match = compile_glob(pattern).fullmatch
        like = _raw_key(to_byte_like(pattern))
        prefix = literal_prefix(pattern)
        raw = _raw_key(prefix)
        ranges: list[tuple[bytes, bytes | None]] = []
        if len(raw) <= INLINE_KEY_BYTES:
            upper = prefix_upper_bound(prefix)
            ranges.append((raw, LONG_KEY_MARK if upper is None else _raw_key(upper)))
        ranges.append((LONG_KEY_MARK, None))
        sql = self._sql.scan_entries if values else self._sql.scan_keys
        for low, high in ranges:
            while True:
                rows = await self._run("fetch", sql, low, high, _PAGE, like, retry=True)
                for row in rows:
                    key = key_text(row[0], row[1])
                    if match(key):
                        yield key, (row[2] if values else b"")
                if len(rows) < _PAGE:
                    break
                low = rows[-1][0] + b"\x00"  # the smallest id after the last one seen

    async def clear(self) -> int:
        """Delete every entry of this table (locks excepted); returns how many were unexpired."""
        count: int = await self._run("fetchval", self._sql.clear)
        return count

    # -- AtomicStorage ---------------------------------------------------------------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        if type(key) is not str or not key:
            bad_key(key)
        id_, long_key = _ids(key)
        if expected is None:
            return bool(
                await self._run("fetchval", self._sql.cas_create, id_, long_key, data, ttl_ms, key=key)
            )
        want = self._encode_value(key, expected)
        while True:
            if await self._run("fetchval", self._sql.cas_replace, id_, data, want, ttl_ms, key=key):
                return True
            # The bytes differ; the stored value may still equal ``expected`` in another encoding
            # (dict order, whitespace from another writer). Then retry with those exact bytes.
            current = await self._run("fetchval", self._sql.get, id_, key=key, retry=True)
            if current is None or current == want or not self._matches(key, current, want):
                return False
            want = current

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        ttl_ms = self._ttl(ttl)
        if type(key) is not str or not key:
            bad_key(key)
        id_, long_key = _ids(key)
        while True:
            data = await self._run(
                "fetchval", self._sql.increment, id_, long_key, str(amount), ttl_ms, key=key
            )
            if data is not None:
                return parse_counter(self, key, data)
            # A live value that is not a decimal integer: nothing was written. Read it to report it
            # (parse_counter raises WrongTypeError), unless it vanished meanwhile: then count again.
            current = await self._run("fetchval", self._sql.get, id_, key=key, retry=True)
            if current is not None:
                return parse_counter(self, key, current)

    # -- LockingStorage --------------------------------------------------------------------------

    def lock(self, key: str, *, lease: float = 30.0, timeout: float | None = None) -> PostgresLock:
        """A lock row in ``<table>_locks`` shared by every client of the table.

        Taken by one atomic upsert when the row is free or its lease ran out, polled with
        exponential backoff up to ``timeout``. Unlike a session advisory lock it ties up no pooled
        connection while held, and a crashed holder blocks others for at most ``lease`` seconds.
        """
        return PostgresLock(self, key, lease=lease, timeout=timeout)

    async def health(self) -> bool:
        """True when the server answers; False (never an exception) when it does not."""
        try:
            pool = self._pool or await self._connected()
            return bool(await pool.fetchval("SELECT true", timeout=5))
        except Exception:
            return False

    def __repr__(self) -> str:
        return (
            f"PostgresStorage(table={self.table!r}, codec={self.codec!r},"
            f" default_ttl_ms={self.default_ttl_ms})"
        )
