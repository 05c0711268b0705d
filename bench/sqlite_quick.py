"""Quick SQLiteStorage throughput check against raw ``sqlite3`` on the event loop.

    .venv/bin/python bench/sqlite_quick.py [N]

Raw: one connection, WAL, synchronous=NORMAL, one commit per write. SQLiteStorage: sequential
gets, and sets from 50 concurrent writers (group commit). Prints ops/s and the ratios.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from botstate import SQLiteStorage

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
VALUE = {"state": "menu", "data": {"lang": "en", "count": 3}}


def raw(path: Path) -> tuple[float, float]:
    import orjson

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB, expires_at INTEGER) WITHOUT ROWID")
    start = time.perf_counter()
    for i in range(N):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, NULL)", (f"k{i}", orjson.dumps(VALUE)))
        conn.execute("COMMIT")
    sets = N / (time.perf_counter() - start)
    cur = conn.cursor()
    start = time.perf_counter()
    for i in range(N):
        row = cur.execute("SELECT value, expires_at FROM kv WHERE key = ?", (f"k{i}",)).fetchone()
        orjson.loads(row[0])
    gets = N / (time.perf_counter() - start)
    conn.close()
    return gets, sets


async def ours(path: Path) -> tuple[float, float, float]:
    async with SQLiteStorage(path) as storage:
        keys = [f"k{i}" for i in range(N)]

        async def writer(chunk: list[str]) -> None:
            for key in chunk:
                await storage.set(key, VALUE)

        start = time.perf_counter()
        await asyncio.gather(*(writer(keys[w::50]) for w in range(50)))
        sets50 = N / (time.perf_counter() - start)
        start = time.perf_counter()
        for key in keys[: N // 4]:
            await storage.set(key, VALUE)
        sets1 = (N // 4) / (time.perf_counter() - start)
        start = time.perf_counter()
        for key in keys:
            await storage.get(key)
        gets = N / (time.perf_counter() - start)
        return gets, sets50, sets1


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw_get, raw_set = raw(Path(tmp) / "raw.db")
        get, set50, set1 = asyncio.run(ours(Path(tmp) / "ours.db"))
    print(f"raw sqlite3      get {raw_get:>9,.0f}/s   set (commit each) {raw_set:>9,.0f}/s")
    print(
        f"SQLiteStorage    get {get:>9,.0f}/s   set x50 concurrent {set50:>9,.0f}/s   set sequential {set1:,.0f}/s"
    )
    print(f"ratios           get {get / raw_get:.2f}x           set x50 {set50 / raw_set:.2f}x")


if __name__ == "__main__":
    main()
