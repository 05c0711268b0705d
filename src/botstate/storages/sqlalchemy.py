"""SQLAlchemyStorage: one adapter for every database SQLAlchemy's async engines reach.

Tested on MariaDB (aiomysql), PostgreSQL (asyncpg) and SQLite (aiosqlite). Rows are found by the
SHA-256 of the key (see ``_sqla_schema``); writes are dialect-native upserts; compare-and-set,
increment and lock acquisition read the row under a lock (``SELECT ... FOR UPDATE``, or
``BEGIN IMMEDIATE`` on SQLite) and write in the same transaction, rerun a bounded number of times
when the database reports a deadlock or a lost insert race. Expiry is wall-clock milliseconds, so
it survives restarts and is shared by every process whose clock agrees.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from .._glob import compile_glob, is_literal, literal_prefix, prefix_upper_bound
from .._ttl import TTL, now_ms
from ..codecs import Codec
from ..errors import ConfigError, StorageError
from ._base import ScanningStorage, V, add_to_counter, bad_key
from ._lease import BUSY, Busy, LeaseLock
from ._sqla_engine import (
    DEFAULT_DRIVERS,
    check_engine,
    engine_defaults,
    is_retryable,
    is_unavailable,
    redacted,
    split_url,
)
from ._sqla_schema import SCAN_PAGE, SCHEMA_VERSION, Schema, Statements, digest, encode_key

__all__ = ["DEFAULT_DRIVERS", "SQLAlchemyLock", "SQLAlchemyStorage"]

T = TypeVar("T")

_ATTEMPTS = 10  # reruns of a transaction that lost a race (deadlock, insert race) before giving up
_LOCK_ROW_RETENTION_MS = 3_600_000  # released lock rows older than this are swept
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError)


async def _scalar(conn: AsyncConnection, stmt: Executable, params: dict[str, Any]) -> Any:
    return (await conn.execute(stmt, params)).scalar()


async def _rowcount(conn: AsyncConnection, stmt: Executable, params: dict[str, Any]) -> int:
    return (await conn.execute(stmt, params)).rowcount


async def _rows(conn: AsyncConnection, stmt: Executable, params: dict[str, Any]) -> list[Any]:
    return list((await conn.execute(stmt, params)).all())


def _live(exp: int | None, now: int) -> bool:
    return exp is None or exp > now


class SQLAlchemyLock(LeaseLock[tuple[str, int]]):
    """A lock row in ``<table>_locks``. ``token`` grows with every acquisition of the key (a fencing token).

    Taken in a transaction that reads the row under a lock and writes a new owner when it is free
    or its lease ran out. Tokens are ``max(previous + 1, now in ms)``, so they keep growing even
    after ``sweep()`` removed a long-released lock row. Renewing and releasing match the owner, so
    a holder whose lease ran out never touches its successor's row.
    """

    __slots__ = ("_kh", "_storage")

    min_delay = 0.005
    max_delay = 0.1

    def __init__(
        self, storage: SQLAlchemyStorage[Any], key: str, *, lease: float, timeout: float | None
    ) -> None:
        super().__init__(key, storage.backend, lease=lease, timeout=timeout)
        self._storage = storage
        self._kh = digest(encode_key(key))

    async def _try_acquire(self, lease_ms: int) -> tuple[str, int] | Busy:
        storage, sql, kh = self._storage, self._storage._sql, self._kh
        owner = uuid.uuid4().hex  # per acquisition: a late give-back never frees a later one

        async def attempt(conn: AsyncConnection) -> tuple[str, int] | Busy:
            now = now_ms()
            row = (await conn.execute(sql.lock_lock, {"p_kh": kh})).first()
            if row is not None and row.exp > now:
                return BUSY
            token = now if row is None else max(now, row.token + 1)
            if row is None:
                row_values = {"kh": kh, "owner": owner, "exp": now + lease_ms, "token": token}
                await storage._insert_absent(conn, sql.insert_lock, row_values)
            else:
                update = {"p_kh": kh, "p_owner": owner, "p_exp": now + lease_ms, "p_token": token}
                await conn.execute(sql.update_lock, update)
            return owner, token

        return await storage._tx(self._key, attempt, locking=True)

    async def _extend(self, handle: tuple[str, int], lease_ms: int) -> bool:
        storage, now = self._storage, now_ms()
        params = {"p_kh": self._kh, "p_owner": handle[0], "p_now": now, "p_exp": now + lease_ms}
        return bool(await storage._fetch_rowcount(self._key, storage._sql.extend_lock, params))

    async def _release(self, handle: tuple[str, int]) -> bool:
        storage = self._storage
        params = {"p_kh": self._kh, "p_owner": handle[0], "p_now": now_ms()}
        return bool(await storage._fetch_rowcount(self._key, storage._sql.release_lock, params))

    def _token_of(self, handle: tuple[str, int]) -> int:
        return handle[1]


class SQLAlchemyStorage(ScanningStorage[V]):
    """Storage in one table of any SQL database SQLAlchemy's asyncio extension supports.

    ``engine_or_url`` is an ``AsyncEngine`` (shared with the application, never disposed here) or a
    SQLAlchemy URL such as ``mysql+aiomysql://user@host/db``, for which the storage creates, and on
    ``stop()`` disposes, its own engine with ``engine_options`` (defaults: ``pool_pre_ping``, and
    10-second connect and statement timeouts where the driver has them).
    ``table`` names the entries table; ``<table>_locks`` and ``<table>_version`` sit beside it. The
    tables are created on first use.
    """

    backend = "sqlalchemy"

    def __init__(
        self,
        engine_or_url: AsyncEngine | URL | str,
        *,
        table: str = "botstate",
        default_ttl: TTL | None = None,
        sweep_interval: float | None = None,
        codec: Codec[V] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        operation_timeout: float = 30.0,
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        if (
            isinstance(operation_timeout, bool)
            or not isinstance(operation_timeout, (int, float))
            or not (0 < operation_timeout < math.inf)
        ):
            raise ValueError(f"operation_timeout must be positive seconds, got {operation_timeout!r}")
        # Each transaction attempt is bounded: aiomysql has no statement timeout, so a server that
        # stops answering mid-statement would otherwise keep the caller waiting for ever.
        self.operation_timeout = float(operation_timeout)
        self._schema = Schema(table)
        if isinstance(engine_or_url, AsyncEngine):
            if engine_options:
                raise ConfigError("engine_options apply only when the storage creates its engine from a URL")
            self._engine = engine_or_url
            self._owns_engine = False
        else:
            try:
                options = engine_defaults(make_url(engine_or_url), engine_options or {})
                self._engine = create_async_engine(engine_or_url, **options)
            except (sa_exc.SQLAlchemyError, ImportError, ValueError) as exc:  # e.g. a sync driver
                where = redacted(engine_or_url)
                raise ConfigError(f"cannot create an engine for {where!r}: {exc}") from exc
            self._owns_engine = True
        check_engine(self._engine)
        self._sql = Statements(self._schema, self._engine.dialect)
        # Shares the engine's pool; on asyncpg switching a connection to autocommit is a flag.
        self._autocommit: AsyncEngine | None = None
        if self._sql.dialect == "postgresql":
            self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._ready = False
        self._ready_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def table(self) -> str:
        return self._schema.name

    # -- transactions -----------------------------------------------------------------------

    def _wrap(self, exc: BaseException, key: str | None) -> StorageError:
        """A botstate error naming key and backend, with the driver's message (not the SQL) in it."""
        cause: BaseException = exc
        if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
            cause = exc.orig
        if is_unavailable(exc):
            if not str(cause):  # asyncio's TimeoutError says nothing by itself
                cause = type(cause)("the database did not answer in time")
            return self._unavailable(cause, key)
        return self._error(f"{type(cause).__name__}: {cause}", key)

    async def _tx(
        self,
        key: str | None,
        body: Callable[[AsyncConnection], Awaitable[T]],
        *,
        locking: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``body`` in one transaction and commit; rerun it when it lost a race to another writer.

        ``locking`` transactions read rows they will write: on SQLite they take the write lock
        first (``BEGIN IMMEDIATE``), since SQLite has no ``FOR UPDATE``. A ``single`` statement is
        atomic by itself and runs in autocommit where that saves round trips (PostgreSQL: no
        ``BEGIN``/``COMMIT`` around it).
        """
        if not self._ready:  # first use without start(): open, and sweep if configured
            await self._ensure_schema(key)
            self._start_sweeper()
        engine = self._autocommit if single and self._autocommit is not None else self._engine
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with asyncio.timeout(self.operation_timeout), engine.connect() as conn:
                    if locking and self._sql.begin_immediate:
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    result = await body(conn)
                    await conn.commit()
                return result
            except sa_exc.DBAPIError as exc:
                if not is_retryable(exc):
                    raise self._wrap(exc, key) from exc
                if attempt == _ATTEMPTS:  # contention, not a broken request: later may succeed
                    raise self._unavailable(exc.orig or exc, key) from exc
            except _DB_ERRORS as exc:
                raise self._wrap(exc, key) from exc
            await asyncio.sleep(random.uniform(0.0, 0.004 * attempt))
        raise AssertionError("unreachable")

    async def _fetch_scalar(self, key: str | None, stmt: Executable, params: dict[str, Any]) -> Any:
        return await self._tx(key, lambda conn: _scalar(conn, stmt, params), single=True)

    async def _fetch_rowcount(self, key: str | None, stmt: Executable, params: dict[str, Any]) -> int:
        return await self._tx(key, lambda conn: _rowcount(conn, stmt, params), single=True)

    async def _fetch_rows(self, key: str | None, stmt: Executable, params: dict[str, Any]) -> list[Any]:
        return await self._tx(key, lambda conn: _rows(conn, stmt, params), single=True)

    async def _insert_absent(self, conn: AsyncConnection, stmt: Executable, params: dict[str, Any]) -> None:
        """Insert a row the locking read found absent.

        On MySQL/MariaDB the read left a gap lock that would deadlock against another transaction
        inserting the same key, so that transaction is ended first; a duplicate-key error then
        means another writer won, and ``_tx`` reruns the whole read-modify-write.
        """
        if self._sql.insert_outside_lock:
            await conn.rollback()
        await conn.execute(stmt, params)

    async def _ensure_schema(self, key: str | None = None) -> None:
        """Create the tables if missing and check their layout; ``key`` is the operation that asked."""
        async with self._ready_lock:
            if self._ready:
                return
            for attempt in range(1, 4):
                try:
                    await self._create_schema()
                    break
                except TimeoutError as exc:  # no answer: not a race worth another attempt
                    raise self._wrap(exc, key) from exc
                except _DB_ERRORS as exc:  # e.g. another process created the tables at the same time
                    if attempt == 3:
                        raise self._wrap(exc, key) from exc
                await asyncio.sleep(0.05 * attempt)
            self._ready = True

    async def _create_schema(self) -> None:
        """One attempt at creating and checking the tables, bounded like every transaction."""
        async with asyncio.timeout(self.operation_timeout):
            try:
                async with self._engine.connect() as conn:
                    if self._owns_engine and self._sql.dialect == "sqlite":
                        # Readers never block the writer; only an engine we own is configured.
                        await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            except TypeError as exc:  # the driver's connect() refused an option of the URL
                refused = f"SQLAlchemyStorage: the database driver refused its settings: {exc}"
                raise ConfigError(refused) from exc
            async with self._engine.begin() as conn:
                conflict = await conn.run_sync(self._schema.conflict)
                if conflict is not None:
                    raise ConfigError(
                        f"SQLAlchemyStorage(table={self.table!r}): {conflict} (another program's,"
                        " or another botstate backend's): choose another table="
                    )
                await conn.run_sync(self._schema.create)
                await self._check_version(conn)

    async def _check_version(self, conn: AsyncConnection) -> None:
        meta = self._schema.meta
        found = (await conn.execute(select(meta.c.version).where(meta.c.name == "schema"))).scalar()
        if found is None:
            await conn.execute(insert(meta).values(name="schema", version=SCHEMA_VERSION))
        elif found > SCHEMA_VERSION:
            raise self._error(
                f"table {self.table!r} has schema version {found}; this botstate reads up to {SCHEMA_VERSION}"
            )

    # -- lifecycle ---------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            await self._ensure_schema()
        except BaseException:
            if self._owns_engine:  # a failed ``async with`` never reaches stop(): close what we opened
                await self._engine.dispose()
            raise

    async def _close(self) -> None:
        self._ready = False
        if self._owns_engine:
            await self._engine.dispose()

    async def health(self) -> bool:
        try:
            async with asyncio.timeout(5.0), self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception:  # a probe answers, it does not raise (a driver refusing its settings)
            return False
        return True

    # -- Storage ----------------------------------------------------------------------------

    async def _get(self, key: str, default: Any = None) -> Any:
        if type(key) is not str or not key:
            bad_key(key)
        params = {"p_kh": digest(encode_key(key)), "p_now": now_ms()}
        data = await self._fetch_scalar(key, self._sql.get, params)
        if data is None:
            return default
        return self._decode_value(key, data)

    if not TYPE_CHECKING:
        get = _get

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        kb = encode_key(key)
        exp = None if ttl_ms is None else now_ms() + ttl_ms
        await self._write(key, [{"kh": digest(kb), "k": kb, "v": data, "exp": exp}])

    async def _write(self, key: str | None, rows: list[dict[str, Any]]) -> None:
        """Upsert rows in one transaction: all of them or, on any error, none."""
        sql = self._sql
        upsert = sql.upsert
        if upsert is not None:
            params: Any = rows[0] if len(rows) == 1 else rows
            await self._tx(key, lambda conn: conn.execute(upsert, params), single=len(rows) == 1)
            return

        async def generic(conn: AsyncConnection) -> None:  # dialects without a known upsert
            for row in rows:
                update = {"p_kh": row["kh"], "p_v": row["v"], "p_exp": row["exp"]}
                if not (await conn.execute(sql.update, update)).rowcount:
                    await conn.execute(sql.insert, row)

        await self._tx(key, generic)

    async def delete(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        params = {"p_kh": digest(encode_key(key)), "p_now": now_ms()}
        return bool(await self._fetch_rowcount(key, self._sql.delete, params))

    async def has(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        params = {"p_kh": digest(encode_key(key)), "p_now": now_ms()}
        return await self._fetch_scalar(key, self._sql.has, params) is not None

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        keys = list(keys)
        for key in keys:
            if type(key) is not str or not key:
                bad_key(key)
        if not keys:
            return []
        hashes = [digest(encode_key(key)) for key in keys]
        unique = list(dict.fromkeys(hashes))
        stmt, now = self._sql.get_many, now_ms()

        async def fetch(conn: AsyncConnection) -> dict[bytes, bytes]:
            found: dict[bytes, bytes] = {}
            for i in range(0, len(unique), SCAN_PAGE):
                params = {"p_khs": unique[i : i + SCAN_PAGE], "p_now": now}
                for kh, data in await _rows(conn, stmt, params):
                    found[bytes(kh)] = data
            return found

        found = await self._tx(None, fetch, single=len(unique) <= SCAN_PAGE)
        out: list[V | None] = []
        for key, kh in zip(keys, hashes, strict=True):
            data = found.get(kh)
            out.append(None if data is None else self._decode_value(key, data))
        return out

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        ttl_ms = self._ttl(ttl)
        exp = None if ttl_ms is None else now_ms() + ttl_ms
        rows: list[dict[str, Any]] = []
        for key, value in mapping.items():  # every value encoded before anything is written
            if type(key) is not str or not key:
                bad_key(key)
            kb = encode_key(key)
            rows.append({"kh": digest(kb), "k": kb, "v": self._encode_value(key, value), "exp": exp})
        if rows:
            await self._write(None, rows)

    # -- TtlStorage ---------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        now = now_ms()
        params = {
            "p_kh": digest(encode_key(key)),
            "p_now": now,
            "p_exp": None if ttl_ms is None else now + ttl_ms,
        }
        return bool(await self._fetch_rowcount(key, self._sql.touch, params))

    async def sweep(self) -> int:
        """Delete expired entries (returns how many) and lock rows released over an hour ago."""
        sql, now = self._sql, now_ms()

        async def body(conn: AsyncConnection) -> int:
            removed = await _rowcount(conn, sql.sweep, {"p_now": now})
            await conn.execute(sql.sweep_locks, {"p_now": now - _LOCK_ROW_RETENTION_MS})
            return removed

        return await self._tx(None, body)

    # -- IterableStorage ------------------------------------------------------------------------

    async def _scan(self, pattern: str, values: bool) -> AsyncIterator[tuple[str, bytes]]:
        """Matching live keys (and stored bytes when ``values``), a page per query.

        The literal prefix narrows the query to a byte range of the binary key column (UTF-8
        preserves code point order); the glob itself is matched here, case-sensitively.
        """
        if is_literal(pattern):
            key = literal_prefix(pattern)
            if key:
                found = {"p_kh": digest(encode_key(key)), "p_now": now_ms()}
                data = await self._fetch_scalar(key, self._sql.get, found)
                if data is not None:
                    yield key, data
            return
        match = compile_glob(pattern).fullmatch
        prefix = literal_prefix(pattern)
        params: dict[str, Any] = {}
        if prefix:
            params["p_low"] = encode_key(prefix)
            upper = prefix_upper_bound(prefix)
            if upper is not None:
                params["p_high"] = encode_key(upper)
        while True:
            params["p_now"] = now_ms()
            stmt = self._sql.scan(
                values=values, low="p_low" in params, high="p_high" in params, after="p_after" in params
            )
            rows = await self._fetch_rows(None, stmt, params)
            for row in rows:
                key = bytes(row.k).decode("utf-8", "surrogatepass")
                if match(key):
                    yield key, (row.v if values else b"")
            if len(rows) < SCAN_PAGE:
                return
            params["p_after"] = rows[-1].kh

    async def clear(self) -> int:
        """Empty this table (only it: sibling tables and lock rows stay); returns the live rows removed."""
        sql, now = self._sql, now_ms()

        async def body(conn: AsyncConnection) -> int:
            removed = await _rowcount(conn, sql.clear_live, {"p_now": now})
            await conn.execute(sql.clear_rest)
            return removed

        return await self._tx(None, body)

    # -- AtomicStorage --------------------------------------------------------------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        want = None if expected is None else self._encode_value(key, expected)
        kb = encode_key(key)
        kh = digest(kb)
        sql = self._sql

        async def body(conn: AsyncConnection) -> bool:
            now = now_ms()
            row = (await conn.execute(sql.lock_entry, {"p_kh": kh})).first()
            current = row.v if row is not None and _live(row.exp, now) else None
            if want is None:
                if current is not None:
                    return False
            elif current is None or not self._matches(key, current, want):
                return False
            exp = None if ttl_ms is None else now + ttl_ms
            if row is None:
                await self._insert_absent(conn, sql.insert, {"kh": kh, "k": kb, "v": data, "exp": exp})
            else:
                await conn.execute(sql.update, {"p_kh": kh, "p_v": data, "p_exp": exp})
            return True

        return await self._tx(key, body, locking=True)

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        kb = encode_key(key)
        kh = digest(kb)
        sql = self._sql

        async def body(conn: AsyncConnection) -> int:
            now = now_ms()
            row = (await conn.execute(sql.lock_entry, {"p_kh": kh})).first()
            if row is not None and _live(row.exp, now):
                total = add_to_counter(self, key, bytes(row.v), amount)
                await conn.execute(sql.update_value, {"p_kh": kh, "p_v": str(total).encode()})  # keeps exp
                return total
            exp = None if ttl_ms is None else now + ttl_ms
            first = str(amount).encode()
            if row is None:
                await self._insert_absent(conn, sql.insert, {"kh": kh, "k": kb, "v": first, "exp": exp})
            else:  # an expired counter starts a new window
                await conn.execute(sql.update, {"p_kh": kh, "p_v": first, "p_exp": exp})
            return amount

        return await self._tx(key, body, locking=True)

    # -- LockingStorage -----------------------------------------------------------------------

    def lock(self, key: str, *, lease: float = 30.0, timeout: float | None = None) -> SQLAlchemyLock:
        """A lock row in ``<table>_locks``, shared by every process on the database.

        Waiters poll with capped exponential backoff; a holder that crashed blocks them at most
        ``lease`` seconds (see :class:`SQLAlchemyLock`).
        """
        return SQLAlchemyLock(self, key, lease=lease, timeout=timeout)

    # -- URLs -----------------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``sqlalchemy+<dialect>[+<driver>]://...``: the SQLAlchemy URL after ``sqlalchemy+``.

        Without a driver the dialect's default async one is used (``DEFAULT_DRIVERS``). Query
        options named like this class's keyword arguments (``table``, ``default_ttl``,
        ``sweep_interval``, ``operation_timeout``) configure the storage; the rest stay in the URL
        for the driver.
        """
        sa_url, url_options = split_url(url)
        return cls(sa_url, **{**url_options, **options})

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}({url!r}, table={self.table!r}, codec={self.codec!r})"
