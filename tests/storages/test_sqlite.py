from __future__ import annotations

import asyncio
import enum
import gc
import os
import signal
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _keyed_calls import keyed_calls
from _sweeping import check_sweeps_without_start
from botstate import (
    ConfigError,
    CorruptValueError,
    LockError,
    SQLiteStorage,
    StorageUnavailable,
    WrongTypeError,
    open_storage,
)
from botstate.storages._sqlite_schema import SCHEMA_VERSION
from botstate.storages.sqlite import PAGE
from botstate.testing import StorageConformance


class TestSQLiteStorage(StorageConformance):
    full_contract = True
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: SQLiteStorage(tmp_path / "state.db", **options)

    @pytest.fixture
    def sibling_storage(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: SQLiteStorage(tmp_path / "state.db", table="other", **options)


# -- helpers -------------------------------------------------------------------------------------

CHILD_PRELUDE = """
import asyncio, sys
from botstate import SQLiteStorage
path = sys.argv[1]
"""

# Each worker: N increments of "hits", then N lock-protected read-modify-writes of "doc".
WORKER = (
    CHILD_PRELUDE
    + """
async def main(n):
    async with SQLiteStorage(path) as storage:
        for _ in range(n):
            await storage.increment("hits")
        for _ in range(n):
            async with storage.lock("doc", lease=10, timeout=60):
                value = await storage.get("doc", 0)
                await asyncio.sleep(0.001)  # widen the race a lock must close
                await storage.set("doc", value + 1)
asyncio.run(main(int(sys.argv[2])))
"""
)

# Writes forever, printing each key once its write was acknowledged.
WRITER = (
    CHILD_PRELUDE
    + """
async def main():
    async with SQLiteStorage(path) as storage:
        i = 0
        while True:
            async def one(j):
                await storage.set(f"k{j}", {"n": j, "pad": "x" * 200})
                print(f"k{j}", flush=True)
            await asyncio.gather(*(one(i + j) for j in range(10)))
            i += 10
asyncio.run(main())
"""
)

# Takes a lock, reports its token, then hangs until killed.
HOLDER = (
    CHILD_PRELUDE
    + """
async def main():
    storage = SQLiteStorage(path)
    await storage.start()
    context = storage.lock("job", lease=float(sys.argv[2]))  # referenced: never exited
    held = await context.__aenter__()
    print(held.token, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""
)


async def spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE
    )


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line, "child process exited early"
    return line.decode().strip()


async def kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)
    await asyncio.wait_for(process.wait(), timeout=10)


# -- configuration and schema --------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        'x"; DROP TABLE botstate; --',
        "x; DROP TABLE botstate",
        "a b",
        "",
        "1abc",
        "x$expires",
        "ключ",
        "t" * 64,
        "sqlite_master",
        "botstate_locks",
        "BOTSTATE_TABLES",
        None,
    ],
)
def test_unsafe_or_reserved_table_names_are_refused(tmp_path: Path, table: Any) -> None:
    with pytest.raises(ConfigError):
        SQLiteStorage(tmp_path / "db", table=table)


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SQLiteStorage(tmp_path / "db", busy_timeout=-1)
    with pytest.raises(ConfigError):
        SQLiteStorage(tmp_path / "db", synchronous="off")


async def test_schema_version_is_recorded_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path, table="chats") as storage:
        await storage.set("k", 1)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = conn.execute("SELECT name, version FROM botstate_tables").fetchall()
        assert versions == [("chats", SCHEMA_VERSION)]
        index = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'chats'")
        assert ("chats$expires",) in index.fetchall()
    finally:
        conn.close()


async def _newer_schema_file(path: Path) -> Path:
    """A file whose table a later release wrote (its schema version is one ahead)."""
    async with SQLiteStorage(path) as storage:
        await storage.set("k", 1)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE botstate_tables SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    return path


async def test_a_table_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = await _newer_schema_file(tmp_path / "db")
    with pytest.raises(ConfigError, match="newer"):
        await SQLiteStorage(path).start()


async def test_table_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    """SQLite names ignore case: ``Chats`` and ``chats`` would silently share one table."""
    path = tmp_path / "db"
    async with SQLiteStorage(path, table="Chats") as chats:
        await chats.set("k", "ours")
        async with chats.lock("L", lease=5):
            for spelling in ("chats", "CHATS"):
                other = SQLiteStorage(path, table=spelling)
                with pytest.raises(ConfigError, match="Chats") as info:
                    await other.start()
                assert isinstance(info.value, ValueError)
                with pytest.raises(ConfigError):
                    await other.get("k")  # a lazily opened storage is refused the same way
                await other.stop()
        assert await chats.get("k") == "ours"
    async with SQLiteStorage(path, table="Chats") as again:  # the registered spelling still opens
        assert await again.get("k") == "ours"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT name FROM botstate_tables").fetchall() == [("Chats",)]
    finally:
        conn.close()


async def test_a_foreign_table_of_the_same_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE botstate_tables (name TEXT PRIMARY KEY, version INTEGER, lock_seq INTEGER)")
    conn.execute("INSERT INTO botstate_tables VALUES ('users', 1, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="not a botstate table"):
        await SQLiteStorage(path, table="users").start()


async def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "no" / "such" / "dir" / "state.db")
    with pytest.raises(ConfigError, match="directory does not exist"):
        await storage.start()
    with pytest.raises(ConfigError):
        await storage.get("k")  # lazily opened operations report the same
    assert await storage.health() is False  # a probe reports it, and does not raise


async def test_health_is_false_for_a_file_that_cannot_be_used(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not an SQLite database " * 100)
    newer = await _newer_schema_file(tmp_path / "newer.db")
    for path in (junk, newer):
        assert await SQLiteStorage(path).health() is False, path
    async with SQLiteStorage(tmp_path / "fine.db") as fine:
        assert await fine.health() is True


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    with pytest.raises(StorageUnavailable) as info:
        await SQLiteStorage(path).start()
    assert info.value.backend == "sqlite"


async def test_corrupt_bytes_in_the_table_raise_and_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path) as storage:
        await storage.set("bad", "fine")
        conn = sqlite3.connect(path)
        conn.execute("UPDATE botstate SET value = ? WHERE key = 'bad'", (b"\xff{not json",))
        conn.commit()
        conn.close()
        with pytest.raises(CorruptValueError) as info:
            await storage.get("bad")
        assert info.value.key == "bad"
        assert info.value.backend == "sqlite"
        assert await storage.has("bad")
        assert await storage.delete("bad") is True


def test_from_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStorage.from_url("sqlite:///state.db?table=chats&busy_timeout=1")
    assert (relative.path, relative.table, relative.busy_timeout) == (
        os.path.join(os.getcwd(), "state.db"),
        "chats",
        1.0,
    )
    absolute = open_storage(f"sqlite:///{tmp_path}/abs.db", default_ttl=60)
    assert isinstance(absolute, SQLiteStorage)
    assert absolute.path == f"{tmp_path}/abs.db"
    assert absolute.default_ttl_ms == 60_000
    assert SQLiteStorage.from_url("sqlite://:memory:").path == ":memory:"
    with pytest.raises(ConfigError):
        SQLiteStorage.from_url("sqlite:///state.db?tabel=typo")
    with pytest.raises(ConfigError):
        SQLiteStorage.from_url("sqlite:///state.db?table=a%22b")


async def test_in_memory_database(tmp_path: Path) -> None:
    async with SQLiteStorage.from_url("sqlite://:memory:") as storage:
        assert await storage.increment("n") == 1
        async with storage.lock("n", timeout=1) as held:
            assert held.token == 1


async def test_operations_open_the_file_without_start(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "db")
    try:
        results = await asyncio.gather(storage.set("a", 1), storage.get("a"), storage.increment("n"))
        assert results[2] == 1
        assert await storage.get("a") == 1
    finally:
        await storage.stop()


async def test_sweep_interval_sweeps_a_storage_never_started(tmp_path: Path) -> None:
    path = tmp_path / "db"
    raw = sqlite3.connect(path)

    async def count_rows() -> int:
        return int(raw.execute("SELECT count(*) FROM botstate").fetchone()[0])

    try:
        await check_sweeps_without_start(SQLiteStorage(path, sweep_interval=0.01), count_rows)
    finally:
        raw.close()


# -- group commit ------------------------------------------------------------------------------------


async def test_a_failing_write_fails_only_its_own_caller(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "db") as storage:
        await storage.set("text", "not a number")
        results = await asyncio.gather(
            *(storage.set(f"k{i}", i) for i in range(20)),
            storage.increment("text"),
            storage.compare_and_set("text", "new", expected="not a number"),
            *(storage.increment("n") for _ in range(20)),
            return_exceptions=True,
        )
        assert isinstance(results[20], WrongTypeError)
        assert results[21] is True
        assert [r for i, r in enumerate(results) if i not in (20, 21) and isinstance(r, BaseException)] == []
        assert await storage.get_many([f"k{i}" for i in range(20)]) == list(range(20))
        assert await storage.get("n") == 20
        assert await storage.get("text") == "new"


async def test_a_full_disk_fails_only_the_write_that_needed_the_space(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "db") as storage:
        await storage.set("x", 1)
        assert storage._conn is not None
        pages = storage._conn.execute("PRAGMA page_count").fetchone()[0]
        storage._conn.execute(f"PRAGMA max_page_count = {pages + 20}")  # a nearly full disk
        results = await asyncio.gather(
            *(storage.set(f"k{i}", i) for i in range(10)),
            storage.set_many({f"big{i}": "x" * 5000 for i in range(200)}),
            *(storage.increment("n") for _ in range(10)),
            return_exceptions=True,
        )
        assert isinstance(results[10], StorageUnavailable)
        assert [r for i, r in enumerate(results) if i != 10] == [None] * 10 + list(range(1, 11))
        assert await storage.get_many([f"k{i}" for i in range(10)]) == list(range(10))
        assert await storage.has("big0") is False  # set_many wrote all or nothing
        assert storage._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_sweep_and_clear_span_many_pages(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "db") as storage:
        await storage.set_many({f"e{i}": i for i in range(1100)}, ttl=0.05)
        await storage.set_many({f"live{i}": i for i in range(1100)})
        await asyncio.sleep(0.1)
        assert await storage.sweep() == 1100
        assert await storage.clear() == 1100
        assert await storage.clear() == 0


async def test_keys_with_nul_and_prefixes_are_scanned_exactly(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "db") as storage:
        keys = ["a\x00b", "a\x00", "a", "a\x01", "b", "a\U0010ffff", "a\U0010ffff\x00"]
        await storage.set_many({key: i for i, key in enumerate(keys)})
        assert sorted([key async for key in storage.keys("a\x00*")]) == ["a\x00", "a\x00b"]
        assert sorted([key async for key in storage.keys("a\U0010ffff*")]) == [
            "a\U0010ffff",
            "a\U0010ffff\x00",
        ]
        assert sorted([key async for key in storage.keys("a*")]) == sorted(k for k in keys if k != "b")
        assert await storage.get("a\x00b") == 0


# -- sharing one file ------------------------------------------------------------------------------


async def test_two_connections_share_writes_and_counters(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path) as first, SQLiteStorage(path) as second:
        await first.set("greeting", {"text": "hi"})
        assert await second.get("greeting") == {"text": "hi"}
        assert await second.delete("greeting") is True
        assert await first.has("greeting") is False
        results = await asyncio.gather(*(s.increment("hits") for _ in range(50) for s in (first, second)))
        assert sorted(results) == list(range(1, 101))
        assert await first.get("hits") == await second.get("hits") == 100


async def test_lock_extend_renews_and_fails_once_lost(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with (
        SQLiteStorage(path) as first,
        SQLiteStorage(path) as second,
        first.lock("job", lease=1.0) as held,
    ):
        await asyncio.sleep(0.5)
        await held.extend()
        await asyncio.sleep(0.7)  # past the first lease, within the extended one
        with pytest.raises(LockError):
            async with second.lock("job", lease=5, timeout=0.05):
                pass
        await asyncio.sleep(0.5)  # the lease runs out; another holder takes over
        async with second.lock("job", lease=5, timeout=1) as other:
            assert other.token > held.token
            with pytest.raises(LockError) as info:
                await held.extend()
            assert info.value.key == "job"


async def test_lock_timeout_zero_tries_once(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "db") as storage:
        async with storage.lock("job", timeout=0) as held:
            with pytest.raises(LockError):
                async with storage.lock("job", timeout=0):
                    pass
        async with storage.lock("job", timeout=0) as again:
            assert again.token > held.token


async def test_a_counter_too_long_for_64_bits_is_a_wrong_type_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path) as storage:
        await storage.set("n", 1)
        conn = sqlite3.connect(path)  # written by another tool
        conn.execute("UPDATE botstate SET value = ? WHERE key = 'n'", (b"9" * 5000,))
        conn.commit()
        conn.close()
        with pytest.raises(WrongTypeError) as info:
            await storage.increment("n")
        assert info.value.key == "n"


async def test_starts_arriving_together_open_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "db"
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    blocker.execute("BEGIN IMMEDIATE")  # creating the table has to wait: the callers overlap

    async def release() -> None:
        await asyncio.sleep(0.2)
        blocker.execute("ROLLBACK")

    storage: SQLiteStorage[Any] = SQLiteStorage(path, busy_timeout=5)
    await asyncio.gather(storage.start(), storage.start(), storage.get("k"), release())
    await storage.stop()
    blocker.close()
    # stop() closed every connection it opened: none is left holding the WAL file open.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    other.close()


async def test_a_stop_overtaking_a_start_leaves_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    blocker.execute("BEGIN IMMEDIATE")  # opening has to wait for the file
    storage: SQLiteStorage[Any] = SQLiteStorage(path, busy_timeout=5)
    starting = asyncio.ensure_future(storage.start())
    await asyncio.sleep(0.05)
    stopping = asyncio.ensure_future(storage.stop())  # while the start still waits
    await asyncio.sleep(0.05)
    blocker.execute("ROLLBACK")
    blocker.close()
    await asyncio.wait_for(asyncio.gather(starting, stopping), 10)
    other = sqlite3.connect(path)  # nothing of the storage's holds the file open now
    assert other.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    other.close()


async def test_health_is_false_once_the_file_was_deleted_under_it(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path) as storage:
        await storage.set("k", 1)
        assert await storage.health() is True
        for name in ("db", "db-wal", "db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        assert await storage.health() is False  # its writes would go nowhere anyone can read


async def test_busy_file_does_not_block_the_loop_and_ends_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path, busy_timeout=0.3) as storage:
        await storage.set("k", "before")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        try:
            with pytest.raises(StorageUnavailable) as info:
                await storage.set("k", "during")
            assert info.value.key == "k"
            assert "locked" in str(info.value)
            assert ticks >= 10  # the loop kept running while the write retried
            assert await storage.get("k") == "before"  # WAL: reads are not blocked
        finally:
            task.cancel()
            blocker.execute("ROLLBACK")
            blocker.close()
        await storage.set("k", "after")
        assert await storage.get("k") == "after"


# -- several processes ---------------------------------------------------------------------------


async def test_processes_share_counters_and_locks_exactly(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SQLiteStorage(path) as storage:
        workers = [await spawn(WORKER, str(path), "40") for _ in range(4)]
        try:
            codes = await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), timeout=90)
        finally:
            for worker in workers:
                await kill(worker)
        assert codes == [0, 0, 0, 0]
        assert await storage.get("hits") == 160
        assert await storage.get("doc") == 160


async def test_kill_9_mid_write_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "db"
    writer = await spawn(WRITER, str(path))
    acknowledged = []
    try:
        while len(acknowledged) < 300:
            acknowledged.append(await read_line(writer))
    finally:
        await kill(writer)
    assert writer.stdout is not None
    acknowledged += (await writer.stdout.read()).decode().split()  # acked just before the kill
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    async with SQLiteStorage(path) as storage:
        values = await storage.get_many(acknowledged)
        assert [v["n"] if v else None for v in values] == [int(key[1:]) for key in acknowledged]


async def test_lock_of_a_killed_process_frees_within_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "db"
    lease = 2.0
    holder = await spawn(HOLDER, str(path), str(lease))
    try:
        child_token = int(await read_line(holder))
        async with SQLiteStorage(path) as storage:
            with pytest.raises(LockError):
                async with storage.lock("job", timeout=0.1):
                    pass
            await kill(holder)
            # Bounded by the lease, plus a margin for a loaded machine: a longer wait raises LockError.
            async with storage.lock("job", lease=5, timeout=lease + 2) as held:
                assert held.token > child_token
    finally:
        await kill(holder)


async def test_a_large_set_many_yields_to_the_loop_and_appears_at_once(tmp_path: Path) -> None:
    pages = 20
    count = pages * PAGE
    async with SQLiteStorage(tmp_path / "db") as storage:
        done = False
        ticks = 0
        partial: list[bool] = []  # whether the last key was there whenever the first one was

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                if await storage.has("bulk:0"):
                    partial.append(not await storage.has(f"bulk:{count - 1}"))
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = ticks
        other = asyncio.create_task(storage.set("written-meanwhile", 1))
        await storage.set_many({f"bulk:{i}": i for i in range(count)})
        during = ticks - start
        done = True
        await task
        await other
        assert during >= pages - 1  # the loop ran between every two pages
        assert not any(partial)  # readers never saw part of the batch
        assert await storage.get_many(["bulk:0", f"bulk:{count - 1}", "written-meanwhile"]) == [
            0,
            count - 1,
            1,
        ]


async def test_a_large_set_many_failing_on_its_last_page_writes_nothing(tmp_path: Path) -> None:
    count = 5 * PAGE
    mapping: dict[str, Any] = {f"bulk:{i}": i for i in range(count)}
    mapping["\ud800"] = "unencodable key, last"
    async with SQLiteStorage(tmp_path / "db") as storage:
        with pytest.raises(ValueError):
            await storage.set_many(mapping)
        assert await storage.get_many(["bulk:0", f"bulk:{count - 1}"]) == [None, None]
        await storage.set("after", 1)  # the write lock was released
        assert [key async for key in storage.keys("*")] == ["after"]


async def test_wal_checkpoints_run_in_a_thread_and_keep_the_wal_small(tmp_path: Path) -> None:
    path = tmp_path / "db"
    wal = tmp_path / "db-wal"
    value = "x" * 4000  # about one database page per entry
    rounds, per_round = 10, 200
    async with SQLiteStorage(path) as storage:
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        assert storage._conn is not None
        assert storage._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # none in a COMMIT
        largest = 0
        for r in range(rounds):
            runs = checkpointer.runs
            await storage.set_many({f"r{r}:{i}": value for i in range(per_round)})
            largest = max(largest, wal.stat().st_size)
            for _ in range(300):  # bounded wait for the thread's checkpoint of this round
                if checkpointer.runs > runs:
                    break
                await asyncio.sleep(0.01)
            assert checkpointer.runs > runs
        # Without checkpoints the WAL would hold every round; it is rewound after each one instead.
        assert largest < 3 * per_round * len(value)
        assert len([key async for key in storage.keys("*")]) == rounds * per_round
    assert not checkpointer._thread.is_alive()  # stop() ended the thread


async def test_a_lone_surrogate_key_is_a_value_error_naming_key_and_backend(tmp_path: Path) -> None:
    bad = "chat:\ud800"
    async with SQLiteStorage(tmp_path / "db") as storage:
        await storage.set("fine", 0)
        calls = {
            **keyed_calls(storage, bad),
            "set_many_paged": lambda: storage.set_many({**{f"n{i}": i for i in range(2 * PAGE)}, bad: 2}),
        }
        for name, call in calls.items():
            with pytest.raises(ValueError, match="not valid text") as info:
                await call()
            assert repr(bad) in str(info.value), name
            assert "sqlite" in str(info.value), name
        with pytest.raises(ValueError, match="sqlite"):
            async with storage.lock(bad, lease=5, timeout=1):
                pass
        for pattern in (bad, "chat:\ud800*"):
            with pytest.raises(ValueError, match="sqlite"):
                [key async for key in storage.keys(pattern)]
        # A bad key fails alone: a write committed with it in the same batch still lands.
        results = await asyncio.gather(storage.set("ok", 1), storage.set(bad, 1), return_exceptions=True)
        assert results[0] is None
        assert isinstance(results[1], ValueError)
        assert sorted([key async for key in storage.keys("*")]) == ["fine", "ok"]


async def test_a_str_subclass_key_is_refused_saying_how_to_pass_it(tmp_path: Path) -> None:
    class Chat(enum.StrEnum):
        MAIN = "chat:main"

    async with SQLiteStorage(tmp_path / "db") as storage:
        for call in (
            storage.get,
            storage.has,
            storage.delete,
            storage.increment,
            lambda k: storage.set(k, 1),
        ):
            with pytest.raises(TypeError, match=r"plain str.*str\(key\)"):
                await call(Chat.MAIN)
        await storage.set(str(Chat.MAIN), 1)
        assert await storage.get("chat:main") == 1


async def test_a_relative_path_is_one_file_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    opened = SQLiteStorage("bot.db")
    constructed = SQLiteStorage("later.db")  # resolved now, opened after the chdir below
    await opened.set("small", 1)
    monkeypatch.chdir(elsewhere)
    try:
        # A batch this large is written on a connection of its own, opened now.
        await opened.set_many({f"bulk:{i}": i for i in range(PAGE + 100)})
        await constructed.set_many({f"bulk:{i}": i for i in range(PAGE + 100)})
        for storage in (opened, constructed):
            assert await storage.get_many(["bulk:0", f"bulk:{PAGE + 99}"]) == [0, PAGE + 99]
    finally:
        await opened.stop()
        await constructed.stop()
    assert list(elsewhere.iterdir()) == []
    for name in ("bot.db", "later.db"):
        async with SQLiteStorage(tmp_path / name) as reopened:
            assert len([key async for key in reopened.keys("bulk:*")]) == PAGE + 100


async def test_storages_dropped_without_stop_leave_no_thread_or_connection(tmp_path: Path) -> None:
    threads_before = threading.active_count()
    paths = [tmp_path / f"db{i}" for i in range(5)]
    dropped: list[weakref.ref[SQLiteStorage[Any]]] = []

    async def use_and_drop() -> None:
        for path in paths:
            storage: SQLiteStorage[Any] = SQLiteStorage(path)
            await storage.set("k", 1)  # a commit, after which the checkpointer thread runs
            checkpointer = storage._checkpointer
            assert checkpointer is not None
            for _ in range(500):
                if checkpointer.runs:
                    break
                await asyncio.sleep(0.01)
            assert checkpointer.runs
            dropped.append(weakref.ref(storage))

    await use_and_drop()
    gc.collect()
    assert [ref() for ref in dropped] == [None] * len(paths)  # nothing kept a storage alive
    for _ in range(500):  # bounded wait for the threads to finish their last round
        if threading.active_count() <= threads_before:
            break
        await asyncio.sleep(0.01)
    assert threading.active_count() <= threads_before
    for path in paths:  # leaving WAL mode needs the only connection to the file
        conn = sqlite3.connect(path, timeout=0)
        try:
            assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
        finally:
            conn.close()


async def test_a_cancelled_stop_still_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "db"
    storage: SQLiteStorage[Any] = SQLiteStorage(path)
    await storage.set("k", 1)
    checkpointer = storage._checkpointer
    assert checkpointer is not None
    stopping = asyncio.create_task(storage.stop())
    await asyncio.sleep(0)  # stop() now waits for the checkpointer thread to end
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    for _ in range(500):  # the thread ends on its own, having been told to
        if not checkpointer._thread.is_alive():
            break
        await asyncio.sleep(0.01)
    conn = sqlite3.connect(path, timeout=0)
    try:  # leaving WAL mode needs the only connection to the file
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    finally:
        conn.close()
    assert await storage.get("k") == 1  # and the storage opens again on use
    await storage.stop()
