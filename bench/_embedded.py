"""Embedded storages: in-memory ones against a plain dict, on-disk ones against raw sqlite3.

Raw baselines use the same codec as botstate (orjson) so that a ratio shows what the storage layer
costs, not what JSON costs. The SQLite baselines use WAL with ``synchronous=NORMAL`` and commit
every write on its own (autocommit), the cheapest durable way to use SQLite one write at a time.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from _report import Check, GroupReport, ops_table, ratio_check
from _workload import Bound, Skip, Subject, Workload, has_module, measure, need

from botstate import LruMemoryStorage, MemoryStorage

DICT = "dict behind an async function"
MEMORY = "botstate MemoryStorage"
LRU = "botstate LruMemoryStorage"
RAW_SQLITE = "sqlite3 in the loop"
SQLITE = "botstate SQLiteStorage"

_UPSERT = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_SELECT = "SELECT value FROM kv WHERE key = ?"
_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)"


# -- in memory -----------------------------------------------------------------------------------


@asynccontextmanager
async def plain_dict(w: Workload) -> AsyncIterator[Bound]:
    data: dict[str, Any] = {}

    async def get(key: str) -> Any:
        return data.get(key)

    async def put(key: str, value: Any) -> None:
        data[key] = value

    yield Bound(get, put)


@asynccontextmanager
async def botstate_memory(w: Workload) -> AsyncIterator[Bound]:
    async with MemoryStorage[Any]() as storage:
        yield Bound(storage.get, storage.set)


@asynccontextmanager
async def botstate_lru(w: Workload) -> AsyncIterator[Bound]:
    async with LruMemoryStorage[Any](max=w.keys) as storage:
        yield Bound(storage.get, storage.set)


def aiogram_keys(w: Workload) -> list[Any]:
    base = need("aiogram.fsm.storage.base", "aiogram>=3.10")
    return [base.StorageKey(bot_id=1, chat_id=i, user_id=i) for i in range(w.keys)]


@asynccontextmanager
async def aiogram_memory(w: Workload) -> AsyncIterator[Bound]:
    memory = need("aiogram.fsm.storage.memory", "aiogram>=3.10")
    storage = memory.MemoryStorage()
    try:
        yield Bound(storage.get_data, storage.set_data, aiogram_keys(w))
    finally:
        await storage.close()


@asynccontextmanager
async def kurigram_memory(w: Workload) -> AsyncIterator[Bound]:
    storages = need("pyrogram_patch.fsm.storages", "kurigram-addons")
    storage = storages.MemoryStorage()
    await storage.start()
    try:
        yield Bound(storage.get_state, storage.set_state)
    finally:
        await storage.stop()


@asynccontextmanager
async def kv_memory(w: Workload) -> AsyncIterator[Bound]:
    memory = need("key_value.aio.stores.memory", "py-key-value-aio[memory]")
    store = memory.MemoryStore(default_collection="bench")  # not a context manager: nothing to close
    yield Bound(store.get, store.put)


MEMORY_SUBJECTS = [
    Subject(DICT, plain_dict, baseline=True, note="holds live references: no codec, no isolation"),
    Subject(MEMORY, botstate_memory),
    Subject(LRU, botstate_lru),
    Subject("aiogram MemoryStorage", aiogram_memory, note="get_data/set_data; shallow copies"),
    Subject("kurigram-addons MemoryStorage", kurigram_memory, note="get_state/set_state; deep copies"),
    Subject("py-key-value-aio MemoryStore", kv_memory),
]


# -- on disk -------------------------------------------------------------------------------------


def _tune(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)


@asynccontextmanager
async def raw_sqlite(w: Workload, directory: Path) -> AsyncIterator[Bound]:
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)  # autocommit: one commit per write
    _tune(conn)
    loads, dumps = orjson.loads, orjson.dumps

    async def get(key: str) -> Any:
        row = conn.execute(_SELECT, (key,)).fetchone()
        return None if row is None else loads(row[0])

    async def put(key: str, value: Any) -> None:
        conn.execute(_UPSERT, (key, dumps(value)))

    try:
        yield Bound(get, put)
    finally:
        conn.close()


@asynccontextmanager
async def raw_aiosqlite(w: Workload, directory: Path) -> AsyncIterator[Bound]:
    aiosqlite = need("aiosqlite", "aiosqlite>=0.20")
    conn = await aiosqlite.connect(directory / "aiosqlite.db", isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute(_SCHEMA)
    loads, dumps = orjson.loads, orjson.dumps

    async def get(key: str) -> Any:
        rows = await conn.execute_fetchall(_SELECT, (key,))
        return loads(rows[0][0]) if rows else None

    async def put(key: str, value: Any) -> None:
        await conn.execute(_UPSERT, (key, dumps(value)))

    try:
        yield Bound(get, put)
    finally:
        await conn.close()


@asynccontextmanager
async def botstate_sqlite(w: Workload, directory: Path) -> AsyncIterator[Bound]:
    if not has_module("botstate.storages.sqlite"):
        raise Skip("botstate.storages.sqlite does not exist yet")
    from botstate import SQLiteStorage

    async with SQLiteStorage[Any](str(directory / "botstate.db")) as storage:
        yield Bound(storage.get, storage.set)


@asynccontextmanager
async def kurigram_sqlite(w: Workload, directory: Path) -> AsyncIterator[Bound]:
    storages = need("pyrogram_patch.fsm.storages.sqlite_storage", "kurigram-addons")
    storage = storages.SQLiteStorage(str(directory / "kurigram.db"))
    await storage.start()
    try:
        yield Bound(storage.get_state, storage.set_state)
    finally:
        await storage.stop()


@asynccontextmanager
async def kv_disk(w: Workload, directory: Path) -> AsyncIterator[Bound]:
    disk = need("key_value.aio.stores.disk", "py-key-value-aio[disk]")
    async with disk.DiskStore(directory=directory / "diskstore", default_collection="bench") as store:
        yield Bound(store.get, store.put)


def disk_subjects(directory: Path) -> list[Subject]:
    def at(factory: Any) -> Any:
        return lambda w: factory(w, directory)

    return [
        Subject(
            RAW_SQLITE, at(raw_sqlite), baseline=True, note="sqlite3, WAL, synchronous=NORMAL, autocommit"
        ),
        Subject(SQLITE, at(botstate_sqlite)),
        Subject("aiosqlite", at(raw_aiosqlite), note="same settings, one thread hop per statement"),
        Subject(
            "kurigram-addons SQLiteStorage",
            at(kurigram_sqlite),
            note="aiosqlite, WAL, SQLite's default synchronous=FULL",
        ),
        Subject("py-key-value-aio DiskStore", at(kv_disk), note="diskcache: sync SQLite calls in the loop"),
    ]


# -- groups --------------------------------------------------------------------------------------


async def memory_group(ctx: Any) -> GroupReport:
    subjects = ctx.pick(MEMORY_SUBJECTS)
    results = await measure(subjects, ctx.workload, ctx.log)
    checks: list[Check] = [ratio_check(results, MEMORY, case, DICT, 0.25) for case in ("get seq", "set seq")]
    title = ctx.workload.title("In memory")
    return GroupReport(title, ops_table(title, results, ctx.workload.cases, ctx.markdown), checks)


async def disk_group(ctx: Any) -> GroupReport:
    with tempfile.TemporaryDirectory(prefix="botstate-bench-") as tmp:
        subjects = ctx.pick(disk_subjects(Path(tmp)))
        results = await measure(subjects, ctx.workload, ctx.log)
    checks = [
        ratio_check(results, SQLITE, "get seq", RAW_SQLITE, 0.5),
        ratio_check(
            results,
            SQLITE,
            f"set x{ctx.workload.concurrency}",
            RAW_SQLITE,
            0.5,
            label=f"{SQLITE} set x{ctx.workload.concurrency} vs {RAW_SQLITE} (commit per write)",
        ),
    ]
    title = ctx.workload.title("On disk")
    return GroupReport(title, ops_table(title, results, ctx.workload.cases, ctx.markdown), checks)
