"""Group commit for SQLite: many concurrent writes share one transaction, on the event loop itself.

A write is a small function ``op(cursor, now_ms, *args)`` queued with a future. A flusher,
scheduled with ``call_soon`` when the first write arrives, runs every queued op inside one
``BEGIN IMMEDIATE ... COMMIT`` and resolves the futures only after the commit: a write is
acknowledged once it is durable, fifty concurrent writers pay for one commit, and a lone write
still commits on the next loop iteration. The group commit uses no thread: each statement is a few
microseconds, and SQLite is opened with ``busy_timeout=0`` so it never sleeps inside the loop. Only
WAL checkpoints, which copy pages into the database file, run in a thread (``Checkpointer``).
When another process holds the write lock, ``BEGIN IMMEDIATE`` fails at once with SQLITE_BUSY and
the flush is retried with ``call_later`` backoff, each write failing with ``StorageUnavailable``
once it has waited ``busy_timeout`` seconds.

Ops read before they write, so a Python exception (a wrong type, a corrupt value) leaves nothing
behind and fails only its own caller. An op whose statement fails inside SQLite fails alone, too:
SQLite undoes just that statement, and if it had to abandon the whole transaction instead (disk
full, I/O error) the ops that ran before it are queued again for a fresh transaction.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._ttl import now_ms
from ..errors import StorageError

__all__ = ["Checkpointer", "GroupCommit", "Op", "is_busy"]

Op = Callable[..., Any]
"""``op(cursor, now_ms, *args) -> result``; runs inside the shared write transaction."""

MAX_BATCH = 512
"""Ops per transaction: bounds how long one flush holds the event loop."""

_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` means "another connection holds the lock": worth retrying later."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _BUSY_CODES


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 1 ms doubling to 50 ms, jittered."""
    return min(0.05, 0.001 * 2.0**attempt) * (0.5 + random.random())


class _Entry:
    __slots__ = ("args", "deadline", "future", "key", "op")

    def __init__(
        self, op: Op, args: tuple[Any, ...], key: str | None, future: asyncio.Future[Any], deadline: float
    ):
        self.op = op
        self.args = args
        self.key = key
        self.future = future
        self.deadline = deadline


class GroupCommit:
    """The write queue of one connection. ``wrap`` turns a sqlite3 error into the storage's error."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        busy_timeout: float,
        wrap: Callable[[BaseException, str | None], StorageError],
        committed: Callable[[], None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._committed = committed
        self._cursor = conn.cursor()
        self._busy_timeout = busy_timeout
        self._wrap = wrap
        self._pending: list[_Entry] = []
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy_attempts = 0

    def submit(self, op: Op, args: tuple[Any, ...], key: str | None) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves with its result once the transaction has committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(_Entry(op, args, key, future, loop.time() + self._busy_timeout))
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_soon(self._flush)
        return future

    async def drain(self) -> None:
        """Wait until every queued write has committed or failed."""
        while self._pending:
            waiting = [entry.future for entry in self._pending if not entry.future.done()]
            if waiting:
                await asyncio.wait(waiting)
            else:
                await asyncio.sleep(0.001)  # only cancelled writes left: the next flush drops them

    def close(self) -> None:
        """Stop flushing; writes still queued fail (call ``drain`` first to let them finish)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending, self._pending = self._pending, []
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(self._wrap(RuntimeError("storage was closed"), entry.key))

    # -- the flusher ---------------------------------------------------------------------------

    def _schedule(self, delay: float = 0.0) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._handle = loop.call_soon(self._flush) if delay <= 0 else loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._handle = None
        pending = self._pending
        batch = [entry for entry in pending[:MAX_BATCH] if not entry.future.done()]
        del pending[:MAX_BATCH]
        if batch:
            try:
                self._cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._not_begun(batch, exc)
            else:
                self._busy_attempts = 0
                try:
                    self._run(batch)
                except BaseException as exc:  # KeyboardInterrupt mid-batch: never keep the write lock
                    self._abandon(batch, exc)
                    raise
        if self._pending and self._handle is None:
            self._schedule()

    def _not_begun(self, batch: list[_Entry], exc: sqlite3.Error) -> None:
        """BEGIN failed: retry later if another process holds the lock and time remains."""
        if not is_busy(exc):
            for entry in batch:
                entry.future.set_exception(self._wrap(exc, entry.key))
            return
        assert self._loop is not None
        now = self._loop.time()
        waiting = []
        for entry in batch:
            if entry.deadline <= now:
                gave_up = sqlite3.OperationalError(
                    f"database is locked by another connection; gave up after {self._busy_timeout}s"
                )
                entry.future.set_exception(self._wrap(gave_up, entry.key))
            else:
                waiting.append(entry)
        self._pending[:0] = waiting
        if self._pending:
            self._schedule(backoff(self._busy_attempts))
            self._busy_attempts += 1

    def _abandon(self, batch: list[_Entry], exc: BaseException) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(self._wrap(exc, entry.key))

    def _run(self, batch: list[_Entry]) -> None:
        conn = self._conn
        cursor = self._cursor
        now = now_ms()
        ran: list[tuple[_Entry, Any, bool]] = []  # (entry, result or exception, failed)
        for index, entry in enumerate(batch):
            try:
                result = entry.op(cursor, now, *entry.args)
            except sqlite3.Error as exc:
                error = self._wrap(exc, entry.key)
                if not conn.in_transaction:
                    # SQLite abandoned the whole transaction: the ops before this one are undone
                    # too. Fail only this op; the others run again in a fresh transaction.
                    entry.future.set_exception(error)
                    self._pending[:0] = [e for e, _, _ in ran] + batch[index + 1 :]
                    return
                ran.append((entry, error, True))
            except Exception as exc:  # the op's own error (WrongTypeError, ...): nothing was written
                ran.append((entry, exc, True))
            else:
                ran.append((entry, result, False))
        try:
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon([entry for entry, _, _ in ran], exc)
            return
        self._committed()
        for entry, value, failed in ran:
            if entry.future.done():  # cancelled while queued behind a BEGIN retry
                continue
            if failed:
                entry.future.set_exception(value)
            else:
                entry.future.set_result(value)


class Checkpointer:
    """WAL checkpoints in a thread of their own, so no COMMIT on the event loop copies pages.

    The storage's connections run with ``wal_autocheckpoint=0``; after a commit the writer pokes
    this thread, which runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection, at most once
    per ``interval`` seconds. PASSIVE never waits for readers or writers, and the first write after
    a complete checkpoint rewinds the WAL, so it stays about as large as the writes of one interval
    (as with SQLite's own automatic checkpoint, a reader that never finishes can hold it longer).
    The thread refers to nothing but this object, so the storage owning it can be collected.
    """

    def __init__(self, path: str, *, interval: float = 0.1) -> None:
        self._path = path
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.runs = 0
        """Checkpoints attempted so far (read by tests)."""
        self._thread = threading.Thread(target=self._work, name="botstate-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def halt(self) -> None:
        """Tell the thread to end (it closes its connection) without waiting: safe from any thread."""
        self._stop.set()
        self._wake.set()

    async def stop(self) -> None:
        """End the thread and wait for it off the loop: it may be in the middle of a checkpoint."""
        self.halt()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _work(self) -> None:
        conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy, or the file went away: the next commit pokes again
                self.runs += 1
                if self._stop.wait(self._interval):
                    return
        finally:
            conn.close()
