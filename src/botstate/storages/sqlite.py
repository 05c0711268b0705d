"""SQLite storage: the embedded default, safe for several processes sharing one file.

One ``sqlite3`` connection is used directly on the event loop. That is deliberate: a point read
or write costs microseconds, far less than handing it to a thread (aiosqlite manages ~5k ops/s
here), and SQLite is opened with ``busy_timeout=0`` so it never sleeps inside the loop. When
another process holds the write lock, writes are retried with ``asyncio.sleep`` backoff (see
``_sqlite_writer``) and fail with ``StorageUnavailable`` after ``busy_timeout`` seconds.

Writes go through group commit: concurrent writes share one ``BEGIN IMMEDIATE ... COMMIT`` and
each is acknowledged only after that commit. Compare-and-set, increment and lock acquisition run
inside the same transaction, which holds SQLite's write lock, so they are atomic across processes.
The file is in WAL mode: readers never wait for writers, and a ``kill -9`` at any moment loses at
most writes that were not acknowledged yet. WAL checkpoints copy whole pages, so they run in a
thread rather than inside a ``COMMIT`` on the loop (``_sqlite_writer.Checkpointer``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .._glob import compile_glob, is_literal, literal_prefix, prefix_upper_bound
from .._ttl import TTL, now_ms, ttl_to_ms
from ..codecs import Codec
from ..errors import ConfigError, StorageError, StorageUnavailable
from ..urls import url_path
from ._base import ScanningStorage, V, add_to_counter, bad_key, not_text
from ._lease import Busy, LeaseLock
from ._sqlite_schema import Sql, check_schema, create_schema_sql, validate_table
from ._sqlite_writer import Checkpointer, GroupCommit, Op, backoff, is_busy

__all__ = ["SQLiteLock", "SQLiteStorage"]

PAGE = 500
"""Rows per statement when iterating, clearing or sweeping: keeps each statement small."""

_SYNCHRONOUS = ("normal", "full", "extra")

_SLOW = object()


def _abandoned(conn: sqlite3.Connection, checkpointer: Checkpointer) -> None:
    """A storage collected without ``stop()``: free its thread and file as its connection once was."""
    checkpointer.halt()
    conn.close()


class SQLiteLock(LeaseLock[int]):
    """A lock row in ``botstate_locks``; ``token`` comes from a per-table sequence, so it always grows.

    Acquiring is a conditional upsert in the write transaction. Waiters never sleep past the
    holder's lease, and one in this process wakes as soon as a holder here releases.
    """

    __slots__ = ("_owner", "_storage")

    min_delay = 0.005
    max_delay = 0.1

    def __init__(self, storage: SQLiteStorage[Any], key: str, *, lease: float, timeout: float | None) -> None:
        super().__init__(key, storage.backend, lease=lease, timeout=timeout)
        self._storage = storage
        self._owner = f"{storage._host}:{os.getpid()}"

    async def _try_acquire(self, lease_ms: int) -> int | Busy:
        storage = self._storage
        op, args = storage._op_lock_acquire, (self._key, lease_ms, self._owner)
        token, held_until = await storage._write(op, args, self._key)
        return int(token) if token else Busy(max(0.0, (held_until - now_ms()) / 1000))

    async def _extend(self, handle: int, lease_ms: int) -> bool:
        storage = self._storage
        return bool(await storage._write(storage._op_lock_extend, (self._key, handle, lease_ms), self._key))

    async def _release(self, handle: int) -> bool:
        storage = self._storage
        try:
            return bool(await storage._write(storage._op_lock_release, (self._key, handle), self._key))
        finally:
            storage._signal_release()

    def _token_of(self, handle: int) -> int:
        return handle

    async def _pause(self, seconds: float) -> None:
        await self._storage._wait_for_release(seconds)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class SQLiteStorage(ScanningStorage[V]):
    """Entries in one table of an SQLite file; several storages and processes may share the file.

    ``table`` names this storage's table (letters, digits, underscores), so one file can hold
    several independent storages. ``busy_timeout`` is how many seconds a write keeps retrying
    while another process holds the write lock. ``synchronous`` is SQLite's setting: ``"normal"``
    (default) survives any process crash; ``"full"`` also survives power loss, at a cost per commit.
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "botstate",
        default_ttl: TTL | None = None,
        sweep_interval: float | None = None,
        codec: Codec[V] | None = None,
        busy_timeout: float = 5.0,
        synchronous: str = "normal",
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        name = os.fspath(path)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"SQLite path must be a non-empty str path, got {path!r}")
        # Resolved once: a large set_many and the checkpointer open connections of their own
        # later, and must reach this file even if the working directory has changed since.
        self.path = name if name == ":memory:" else os.path.abspath(name)
        self.table = validate_table(table)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) or busy_timeout < 0:
            raise ConfigError(f"busy_timeout must be seconds >= 0, got {busy_timeout!r}")
        self.busy_timeout = float(busy_timeout)
        if not isinstance(synchronous, str) or synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        self.synchronous = synchronous.lower()
        self._sql = Sql.for_table(self.table)
        self._conn: sqlite3.Connection | None = None
        self._cur: sqlite3.Cursor | None = None
        self._writer: GroupCommit | None = None
        self._checkpointer: Checkpointer | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._open_lock: asyncio.Lock | None = None
        self._released: asyncio.Future[None] | None = None
        self._host = socket.gethostname()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://:memory:``."""
        rest = url.split("://", 1)[1].split("?", 1)[0] if "://" in url else ""
        path = ":memory:" if rest in (":memory:", "/:memory:") else url_path(url)
        return cls(path, **cls._url_options(url, options))

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r}, table={self.table!r}, codec={self.codec!r})"

    # -- connection -----------------------------------------------------------------------------

    def _wrap(self, exc: BaseException, key: str | None = None) -> StorageError:
        error = self._unavailable(exc, key)
        error.__cause__ = exc
        return error

    async def _open(self) -> None:
        """Open the file once, however many callers (``start()``, first uses) arrive together:
        opening awaits (a busy file is retried), so a second caller must wait for the first."""
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            await self._open_file()

    async def _open_file(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:" and not Path(self.path).parent.is_dir():
            raise ConfigError(f"cannot open SQLite file {self.path!r}: its directory does not exist")
        try:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False, cached_statements=128
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(
                f"cannot open SQLite file {self.path!r}: {exc}", backend=self.backend
            ) from exc
        try:
            await self._retrying(lambda: self._prepare(conn))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._cur = conn.cursor()
        if self.path == ":memory:":
            self._writer = GroupCommit(conn, busy_timeout=self.busy_timeout, wrap=self._wrap)
        else:
            self._file = _identity(self.path)
            checkpointer = self._checkpointer = Checkpointer(self.path)
            self._writer = GroupCommit(
                conn, busy_timeout=self.busy_timeout, wrap=self._wrap, committed=checkpointer.poke
            )
            # start()/stop() are optional: an unstopped storage must not pin a thread and a file
            # once nothing refers to it. The finalizer holds the connection and thread, never self.
            self._finalizer = weakref.finalize(self, _abandoned, conn, checkpointer)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Settings, then the schema; each step is safe to repeat after SQLITE_BUSY."""
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal" and self.path != ":memory:":
            raise StorageUnavailable(
                f"SQLite file {self.path!r} cannot use WAL (journal_mode={mode})", backend=self.backend
            )
        self._configure(conn)
        cursor = conn.cursor()
        if not check_schema(cursor, self.table):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Again under the write lock: another process may have registered a spelling since.
                if not check_schema(cursor, self.table):
                    for statement in create_schema_sql(self.table):
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            check_schema(cursor, self.table)
        try:
            cursor.execute(f'SELECT key, value, expires_at FROM "{self.table}" LIMIT 0')
        except sqlite3.OperationalError as exc:
            raise ConfigError(
                f"table {self.table!r} in {self.path!r} exists but is not a botstate table: {exc}"
            ) from exc

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Per-connection settings. Checkpoints are the ``Checkpointer`` thread's, not a COMMIT's."""
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        if self.path != ":memory:":
            conn.execute("PRAGMA wal_autocheckpoint=0")

    async def _retrying(self, step: Callable[[], Any], doing: str = "open SQLite file") -> None:
        """Run a synchronous step, retrying with ``asyncio.sleep`` while the file is busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_timeout
        attempt = 0
        while True:
            try:
                step()
                return
            except sqlite3.Error as exc:
                if not is_busy(exc) or loop.time() >= deadline:
                    raise StorageUnavailable(
                        f"cannot {doing} {self.path!r}: {exc}", backend=self.backend
                    ) from exc
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def _connected(self) -> tuple[sqlite3.Cursor, GroupCommit]:
        """Open on first use (``start`` is optional), once even under concurrent first calls.

        The sweeper starts here too: ``sweep_interval`` must not depend on calling ``start()``.
        """
        opening = self._writer is None
        await self._open()
        if opening:  # not on every call: a call during stop() must not start one that outlives it
            self._start_sweeper()
        assert self._cur is not None
        assert self._writer is not None
        return self._cur, self._writer

    async def _close(self) -> None:
        opening = self._open_lock
        if opening is not None and opening.locked():
            async with opening:  # an open in progress (a start() stop() overtook) ends first
                pass  # and what it opened is closed below, not left behind
        writer, conn, checkpointer, finalizer = self._writer, self._conn, self._checkpointer, self._finalizer
        if writer is not None:
            await writer.drain()
            writer.close()
        self._writer = self._cur = self._conn = self._checkpointer = self._finalizer = self._file = None
        self._open_lock = None
        if finalizer is not None:
            finalizer.detach()
        try:
            if checkpointer is not None:
                await checkpointer.stop()
        finally:  # a cancelled stop() still closes the file: nothing refers to this connection now
            if conn is not None:
                conn.close()

    # -- reads (inline) and writes (group commit) ---------------------------------------------------

    async def _query(self, sql: str, params: tuple[Any, ...], key: str | None) -> list[Any]:
        """All rows of a read, retried with async backoff while the file is busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_timeout
        attempt = 0
        while True:
            cur = self._cur or (await self._connected())[0]
            try:
                return cur.execute(sql, params).fetchall()
            except UnicodeEncodeError as exc:
                raise self._not_text(key, exc) from exc
            except sqlite3.Error as exc:
                if not is_busy(exc) or loop.time() >= deadline:
                    raise self._wrap(exc, key) from exc
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    def _fetch(self, key: str) -> Any:
        """The row of ``key`` (live or not) read inline, or ``_SLOW`` when only ``_row`` can tell.

        Synchronous, so the hottest path (``get``) pays for no extra coroutine.
        """
        cur = self._cur
        if cur is not None:
            try:
                return cur.execute(self._sql.get, (key,)).fetchone()
            except (sqlite3.Error, UnicodeEncodeError):
                pass  # busy, or a key sqlite3 cannot bind: ``_query`` retries or says why
        return _SLOW

    async def _row(self, key: str) -> Any:
        """The live ``(value, expires_at)`` row of ``key``, or None when missing or expired."""
        row = self._fetch(key)
        if row is _SLOW:
            rows = await self._query(self._sql.get, (key,), key)  # opens the file if need be
            row = rows[0] if rows else None
        if row is None or (row[1] is not None and row[1] <= now_ms()):
            return None
        return row

    async def _write(self, op: Op, args: tuple[Any, ...], key: str | None) -> Any:
        writer = self._writer or (await self._connected())[1]
        try:
            return await writer.submit(op, args, key)
        except UnicodeEncodeError as exc:
            # Writes bind no text but keys, so a batch's culprit is the text sqlite3 could not bind.
            raise self._not_text(key or exc.object, exc) from exc

    def _not_text(self, key: str | None, exc: UnicodeEncodeError) -> ValueError:
        # Raised where sqlite3 fails to bind the key, so valid keys pay for no check.
        return not_text(key, exc, self.backend, "SQLite stores text as UTF-8")

    @staticmethod
    def _op_execute(cur: sqlite3.Cursor, now: int, sql: str, params: tuple[Any, ...]) -> None:
        cur.execute(sql, params)

    # -- Storage --------------------------------------------------------------------------------

    async def _get(self, key: str, default: Any = None) -> Any:
        if type(key) is not str or not key:
            bad_key(key)
        row = self._fetch(key)
        if row is _SLOW:
            row = await self._row(key)
        if row is None or (row[1] is not None and row[1] <= now_ms()):
            return default
        try:
            return self._decode(row[0])
        except Exception as exc:
            raise self._corrupt(key, exc) from exc

    if not TYPE_CHECKING:
        get = _get

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)
        try:
            data = self._encode(value)
        except Exception:
            data = self._encode_value(key, value)  # raises SerializationError naming the key
        expires = None if ttl_ms is None else now_ms() + ttl_ms
        await self._write(self._op_execute, (self._sql.set, (key, data, expires)), key)

    async def _get_encoded(self, key: str) -> bytes | None:
        """The stored bytes of a live entry (the sessions' fast path: no decode to compare)."""
        if type(key) is not str or not key:
            bad_key(key)
        row = await self._row(key)
        return None if row is None else row[0]

    async def _set_encoded(self, key: str, data: bytes, ttl_ms: int | None) -> None:
        """Store bytes the codec already produced, through the group commit like ``set``."""
        if type(key) is not str or not key:
            bad_key(key)
        expires = None if ttl_ms is None else now_ms() + ttl_ms
        await self._write(self._op_execute, (self._sql.set, (key, data, expires)), key)

    async def delete(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        result: bool = await self._write(self._op_delete, (key,), key)
        return result

    def _op_delete(self, cur: sqlite3.Cursor, now: int, key: str) -> bool:
        rows = cur.execute(self._sql.delete, (key,)).fetchall()
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

    async def has(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        return await self._row(key) is not None

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        get = self._get
        values: list[V | None] = []
        for index, key in enumerate(keys, 1):
            values.append(await get(key))
            if index % PAGE == 0:
                await asyncio.sleep(0)  # a huge batch of reads must not starve the loop
        return values

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        """Store every pair in one transaction: all of them or, on any error, none."""
        ttl_ms = self._ttl(ttl)
        rows: list[tuple[str, bytes, int | None]] = []
        for key, value in mapping.items():
            if type(key) is not str or not key:
                bad_key(key)
            rows.append((key, self._encode_value(key, value), None))
        if not rows:
            return
        if ttl_ms is not None:
            expires = now_ms() + ttl_ms
            rows = [(key, data, expires) for key, data, _ in rows]
        if len(rows) > PAGE and self.path != ":memory:":
            await self._set_many_paged(rows)
        else:
            await self._write(self._op_set_many, (rows,), None)

    async def _set_many_paged(self, rows: list[tuple[str, bytes, int | None]]) -> None:
        """A big batch: one transaction on a connection of its own, yielding to the loop per page.

        The transaction holds SQLite's write lock across the pauses, so this storage's other writes
        wait (with the usual busy backoff) as they would for another process, and cannot land
        inside the batch; reads keep seeing the last commit, so the batch appears all at once.
        """
        await self._connected()  # the schema exists
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        try:
            self._configure(conn)
            await self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"), "write to SQLite file")
            try:
                for start in range(0, len(rows), PAGE):
                    if start:
                        await asyncio.sleep(0)
                    conn.executemany(self._sql.set, rows[start : start + PAGE])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        except UnicodeEncodeError as exc:
            raise self._not_text(exc.object, exc) from exc
        finally:
            conn.close()
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _op_set_many(self, cur: sqlite3.Cursor, now: int, rows: list[tuple[str, bytes, int | None]]) -> None:
        cur.execute("SAVEPOINT botstate_set_many")
        try:
            cur.executemany(self._sql.set, rows)
        except BaseException:
            if cur.connection.in_transaction:
                cur.execute("ROLLBACK TO botstate_set_many")
                cur.execute("RELEASE botstate_set_many")
            raise
        cur.execute("RELEASE botstate_set_many")

    # -- TtlStorage -------------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        result: bool = await self._write(self._op_touch, (key, self._ttl(ttl)), key)
        return result

    def _op_touch(self, cur: sqlite3.Cursor, now: int, key: str, ttl_ms: int | None) -> bool:
        expires = None if ttl_ms is None else now + ttl_ms
        return cur.execute(self._sql.touch, (expires, key, now)).rowcount > 0

    async def sweep(self) -> int:
        """Delete expired entries (and expired lock rows) now, a page per transaction."""
        removed = 0
        while True:
            count: int = await self._write(self._op_sweep_page, (), None)
            removed += count
            if count < PAGE:
                return removed

    def _op_sweep_page(self, cur: sqlite3.Cursor, now: int) -> int:
        count = cur.execute(self._sql.sweep_chunk, (now, PAGE)).rowcount
        if count < PAGE:
            cur.execute(self._sql.lock_sweep, (now,))
        return count

    # -- IterableStorage --------------------------------------------------------------------------

    async def _scan(self, pattern: str, values: bool) -> AsyncIterator[tuple[str, bytes]]:
        """Live ``(key, stored bytes)`` matching ``pattern``, a page per statement, in key order.

        The glob's literal prefix becomes an index range (case-sensitive, nothing to escape),
        and the compiled glob filters the rest: ``LIKE`` is never used.
        """
        if is_literal(pattern):
            key = literal_prefix(pattern)
            row = await self._row(key) if key else None
            if row is not None:
                yield key, row[0]
            return
        prefix = literal_prefix(pattern)
        upper = prefix_upper_bound(prefix) if prefix else None
        match = None if pattern == "*" else compile_glob(pattern).fullmatch
        sql = self._sql
        first, after = (
            (sql.scan_from, sql.scan_after) if upper is None else (sql.scan_from_below, sql.scan_after_below)
        )
        statement, bound = first, prefix
        while True:
            params = (bound, PAGE) if upper is None else (bound, upper, PAGE)
            rows = await self._query(statement, params, None)
            now = now_ms()
            for key, value, expires in rows:
                if (expires is None or expires > now) and (match is None or match(key)):
                    yield key, value
            if len(rows) < PAGE:
                return
            statement, bound = after, rows[-1][0]
            await asyncio.sleep(0)  # let other tasks run between pages

    async def clear(self) -> int:
        """Delete this table's entries (not other tables', not locks); returns how many were live."""
        live = 0
        while True:
            deleted: int
            page_live: int
            deleted, page_live = await self._write(self._op_clear_page, (), None)
            live += page_live
            if deleted < PAGE:
                return live

    def _op_clear_page(self, cur: sqlite3.Cursor, now: int) -> tuple[int, int]:
        rows = cur.execute(self._sql.clear_chunk, (PAGE,)).fetchall()
        return len(rows), sum(1 for (expires,) in rows if expires is None or expires > now)

    # -- AtomicStorage (inside the write transaction: atomic across processes) -------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        wanted = None if expected is None else self._encode_value(key, expected)
        result: bool = await self._write(self._op_cas, (key, data, wanted, ttl_ms), key)
        return result

    def _op_cas(
        self, cur: sqlite3.Cursor, now: int, key: str, data: bytes, wanted: bytes | None, ttl_ms: int | None
    ) -> bool:
        row = cur.execute(self._sql.get, (key,)).fetchone()
        live = row is not None and (row[1] is None or row[1] > now)
        if wanted is None:
            if live:
                return False
        elif not live or not self._matches(key, row[0], wanted):
            return False
        cur.execute(self._sql.set, (key, data, None if ttl_ms is None else now + ttl_ms))
        return True

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        if type(key) is not str or not key:
            bad_key(key)
        total: int = await self._write(self._op_increment, (key, amount, self._ttl(ttl)), key)
        return total

    def _op_increment(self, cur: sqlite3.Cursor, now: int, key: str, amount: int, ttl_ms: int | None) -> int:
        row = cur.execute(self._sql.get, (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] <= now):
            expires = None if ttl_ms is None else now + ttl_ms  # a new fixed window
            cur.execute(self._sql.set, (key, str(amount).encode(), expires))
            return amount
        total = add_to_counter(self, key, row[0], amount)
        cur.execute(self._sql.update_value, (str(total).encode(), key))  # keeps the window's expiry
        return total

    # -- LockingStorage ---------------------------------------------------------------------------

    def lock(self, key: str, *, lease: float = 30.0, timeout: float | None = None) -> SQLiteLock:
        """A lock shared by every process using this file and table (a row in ``botstate_locks``).

        A holder that crashed blocks others for at most ``lease`` seconds; a long job renews with
        ``extend()`` (see :class:`SQLiteLock`).
        """
        return SQLiteLock(self, key, lease=lease, timeout=timeout)

    def _op_lock_acquire(
        self, cur: sqlite3.Cursor, now: int, key: str, lease_ms: int, owner: str
    ) -> tuple[int, int]:
        row = cur.execute(self._sql.lock_get, (key,)).fetchone()
        if row is not None and row[0] > now:
            return 0, int(row[0])
        token: int = cur.execute(self._sql.lock_next_token, ()).fetchone()[0]
        cur.execute(self._sql.lock_put, (key, owner, token, now + lease_ms))
        return token, 0

    def _op_lock_extend(self, cur: sqlite3.Cursor, now: int, key: str, token: int, lease_ms: int) -> bool:
        return bool(cur.execute(self._sql.lock_extend, (now + lease_ms, key, token, now)).rowcount)

    def _op_lock_release(self, cur: sqlite3.Cursor, now: int, key: str, token: int) -> bool:
        return bool(cur.execute(self._sql.lock_release, (key, token)).rowcount)

    async def _wait_for_release(self, delay: float) -> None:
        """Sleep up to ``delay``; a release by this process ends the wait early."""
        loop = asyncio.get_running_loop()
        signal = self._released
        if signal is None or signal.done() or signal.get_loop() is not loop:
            signal = self._released = loop.create_future()
        await asyncio.wait([signal], timeout=delay)

    def _signal_release(self) -> None:
        signal, self._released = self._released, None
        if signal is not None and not signal.done():
            signal.set_result(None)

    async def health(self) -> bool:
        """False for a backend that cannot serve: unreachable, unopenable or misconfigured file."""
        try:
            await self._query("SELECT 1", (), None)
        except Exception:  # a probe answers, it does not raise (ConfigError: a missing directory)
            return False
        # A file deleted or replaced under an open connection still takes writes, into an inode
        # nobody will open again: they would be lost at close, so the storage is not healthy.
        return self._file is None or _identity(self.path) == self._file
