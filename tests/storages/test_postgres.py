"""PostgresStorage: the conformance suite against a real server, plus what is specific to SQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from _services import require_module
from _sweeping import check_sweeps_without_start
from botstate import ConfigError, CorruptValueError, LockError, StorageUnavailable, open_storage
from botstate.testing import StorageConformance, SwitchableCodec

asyncpg = require_module("asyncpg")

from botstate.storages._pg_sql import SCHEMA_VERSION  # noqa: E402
from botstate.storages.postgres import PostgresStorage  # noqa: E402


async def drop_tables(dsn: str, *tables: str) -> None:
    """Remove what a storage created for ``tables``: data, locks, token sequence, meta row."""
    conn = await asyncpg.connect(dsn)
    try:
        for table in tables:
            await conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_locks"')
            await conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_lock_token"')
            if await conn.fetchval("SELECT to_regclass('botstate_meta')") is not None:
                await conn.execute("DELETE FROM botstate_meta WHERE table_name = $1", table)
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def table(postgres_dsn: str, unique: str) -> AsyncIterator[str]:
    yield unique
    await drop_tables(postgres_dsn, unique, f"{unique}_sibling")


class TestPostgresStorage(StorageConformance):
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, postgres_dsn: str, table: str) -> Callable[..., Any]:
        return lambda **options: PostgresStorage(postgres_dsn, table=table, **options)

    @pytest.fixture
    def sibling_storage(self, postgres_dsn: str, table: str) -> Callable[..., Any]:
        return lambda: PostgresStorage(postgres_dsn, table=f"{table}_sibling")


class TestPostgresStorageQuotedTable(TestPostgresStorage):
    """The suite again on a table whose name needs quoting (upper case, a dash): every statement
    (delete, clear, scans, locks, sweeps) must quote it, or it fails or acts on another table."""

    @pytest_asyncio.fixture
    async def table(self, postgres_dsn: str, unique: str) -> AsyncIterator[str]:
        name = f"Bot-{unique.upper()}"
        yield name
        await drop_tables(postgres_dsn, name, f"{name}_sibling")


# Tests of argument checks and client-side behaviour send no statement the plain class has not
# sent already: skipped here to keep the suite short.
_CLIENT_SIDE = re.compile(
    r"unencodable|non_positive|wrong_type|bad_ttl|millisecond|timedelta|health|lifecycle"
)
for _name in dir(TestPostgresStorageQuotedTable):
    if _name.startswith("test_") and _CLIENT_SIDE.search(_name):
        setattr(TestPostgresStorageQuotedTable, _name, None)


async def test_sweep_interval_sweeps_a_storage_never_started(postgres_dsn: str, table: str) -> None:
    raw = await asyncpg.connect(postgres_dsn)

    async def count_rows() -> int:
        return int(await raw.fetchval(f'SELECT count(*) FROM "{table}"'))

    try:
        await check_sweeps_without_start(
            PostgresStorage(postgres_dsn, table=table, sweep_interval=0.01), count_rows
        )
    finally:
        await raw.close()


async def test_a_table_name_that_needs_quotes_works(postgres_dsn: str, unique: str) -> None:
    name = f"Bot-State-{unique}"
    try:
        async with PostgresStorage(postgres_dsn, table=name) as storage:
            await storage.set("k", 1)
            assert await storage.get("k") == 1
        conn = await asyncpg.connect(postgres_dsn)
        try:
            assert await conn.fetchval(f'SELECT count(*) FROM "{name}"') == 1
        finally:
            await conn.close()
    finally:
        await drop_tables(postgres_dsn, name)


@pytest.mark.parametrize(
    "name",
    ['x"; DROP TABLE botstate_meta; --', "a b", "schema.table", "1abc", "", "x" * 41, "q'uote", None],
)
def test_an_unsafe_table_name_is_a_config_error(postgres_dsn: str, name: Any) -> None:
    with pytest.raises(ConfigError):
        PostgresStorage(postgres_dsn, table=name)


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("bot_locks", "lock table"),
        ("bot_lock_token", "lock token sequence"),
        ("bot_expires", "expiry index"),
        ("bot_pkey", "primary key index"),
        ("botstate_meta", "schema versions"),
    ],
)
def test_a_name_another_table_derives_is_refused(postgres_dsn: str, name: str, part: str) -> None:
    # With "bot" and "bot_locks" both allowed, the second storage's entries would be the first
    # one's lock rows: its clear() would free locks that are held.
    with pytest.raises(ConfigError, match=part) as info:
        PostgresStorage(postgres_dsn, table=name)
    assert repr(name) in str(info.value)


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("relation", "ddl"),
    [
        ("{t}", 'CREATE TABLE "{t}" (id int PRIMARY KEY, name text)'),
        ("{t}", 'CREATE TABLE "{t}" (id bytea, key bytea, value bytea NOT NULL, expires_at timestamptz)'),
        ("{t}", 'CREATE VIEW "{t}" AS SELECT 1 AS id'),
        ("{t}_locks", 'CREATE TABLE "{t}_locks" (id bytea PRIMARY KEY, payload text)'),
        ("{t}_lock_token", 'CREATE TABLE "{t}_lock_token" (n int)'),
    ],
    ids=["other-columns", "no-primary-key", "a-view", "other-locks", "token-not-a-sequence"],
)
async def test_a_foreign_relation_with_our_name_is_refused_and_left_alone(
    postgres_dsn: str, unique: str, relation: str, ddl: str
) -> None:
    name = relation.format(t=unique)
    await _execute(postgres_dsn, ddl.format(t=unique))
    try:
        with pytest.raises(ConfigError, match=name) as info:
            await PostgresStorage(postgres_dsn, table=unique).start()
        assert "another table name" in str(info.value)
        conn = await asyncpg.connect(postgres_dsn)
        try:  # nothing was created, recorded or commented on: the DDL was rolled back
            ours = [unique, f"{unique}_locks", f"{unique}_lock_token"]
            found = await conn.fetch("SELECT relname FROM pg_class WHERE relname = ANY($1::text[])", ours)
            assert [row[0] for row in found] == [name]
            assert (
                await conn.fetchval("SELECT count(*) FROM botstate_meta WHERE table_name = $1", unique) == 0
            )
        finally:
            await conn.close()
    finally:
        await _execute(
            postgres_dsn,
            f'DROP VIEW IF EXISTS "{unique}"' if "VIEW" in ddl else "SELECT 1",
            f'DROP TABLE IF EXISTS "{unique}", "{unique}_locks", "{unique}_lock_token"',
        )


async def test_another_relation_named_like_the_old_expiry_index_does_not_skip_it(
    postgres_dsn: str, table: str
) -> None:
    await _execute(postgres_dsn, f'CREATE TABLE "{table}_expires" (n int)')
    try:
        async with PostgresStorage(postgres_dsn, table=table) as storage:
            await storage.set("k", 1, ttl=60)
        async with PostgresStorage(postgres_dsn, table=table) as again:  # found, not built twice
            assert await again.get("k") == 1
        conn = await asyncpg.connect(postgres_dsn)
        try:
            indexed = await conn.fetchval(
                "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = 'expires_at'",
                f'"{table}"',
            )
            assert indexed == 1
        finally:
            await conn.close()
    finally:
        await _execute(postgres_dsn, f'DROP TABLE IF EXISTS "{table}_expires"')


async def test_schema_version_is_recorded(postgres_dsn: str, table: str) -> None:
    async with PostgresStorage(postgres_dsn, table=table):
        pass
    conn = await asyncpg.connect(postgres_dsn)
    try:
        version = await conn.fetchval("SELECT schema_version FROM botstate_meta WHERE table_name = $1", table)
        assert version == SCHEMA_VERSION
        await conn.execute("UPDATE botstate_meta SET schema_version = $2 WHERE table_name = $1", table, 99)
    finally:
        await conn.close()
    with pytest.raises(ConfigError, match="newer"):
        await PostgresStorage(postgres_dsn, table=table).start()


async def test_an_existing_pool_is_used_and_not_closed(postgres_dsn: str, table: str) -> None:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        async with PostgresStorage(pool, table=table) as storage:
            await storage.set("k", "v")
        assert not pool.is_closing()
        assert await pool.fetchval("SELECT 1") == 1
        async with PostgresStorage(pool, table=table) as again:  # the pool is reused after stop()
            assert await again.get("k") == "v"
    finally:
        await pool.close()


async def test_concurrent_schema_creation(postgres_dsn: str, table: str) -> None:
    storages = [PostgresStorage(postgres_dsn, table=table) for _ in range(4)]
    try:
        await asyncio.gather(*(storage.start() for storage in storages))
        await storages[0].set("k", 1)
        assert [await storage.get("k") for storage in storages] == [1, 1, 1, 1]
    finally:
        for storage in storages:
            await storage.stop()


async def test_open_storage_url_takes_botstate_options(postgres_dsn: str, table: str) -> None:
    for scheme in ("postgresql", "postgres"):
        url = postgres_dsn.replace("postgresql://", f"{scheme}://", 1)
        storage = open_storage(f"{url}?table={table}&default_ttl=60&application_name=bot")
        assert isinstance(storage, PostgresStorage)
        assert storage.table == table
        assert storage.default_ttl_ms == 60_000
        async with storage:
            assert await storage.health() is True


async def test_concurrent_gets_and_sets_see_their_own_writes(postgres_dsn: str, table: str) -> None:
    async with PostgresStorage(postgres_dsn, table=table) as storage:

        async def user(i: int) -> None:
            for n in range(5):
                await storage.set(f"u:{i}", n)
                assert await storage.get(f"u:{i}") == n

        await asyncio.gather(*(user(i) for i in range(40)))
        assert await storage.get_many([f"u:{i}" for i in range(40)]) == [4] * 40


async def test_globs_find_long_keys_beside_short_ones(postgres_dsn: str, table: str) -> None:
    long_key = "я" * 1024  # 2 KB of UTF-8: indexed by its digest, not by its bytes
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        await storage.set_many({long_key: 1, "я:1": 2, "other": 3, "я\x00nul": 4})
        assert sorted([key async for key in storage.keys("я*")]) == sorted([long_key, "я:1", "я\x00nul"])
        assert [key async for key in storage.keys("я" * 600 + "*")] == [long_key]
        assert [key async for key in storage.keys("я" * 1023 + "?")] == [long_key]
        assert sorted([value async for value in storage.values("*")]) == [1, 2, 3, 4]


LIKE_KEYS = [
    "a%c",
    "a_c",
    "abc",
    "aXc",
    "ABC",
    "a\\c",
    "a\\\\c",
    "100%",
    "x_y",
    "ключ",
    "日本",
    "é",
    "e",
    "🙂",
    "a🙂c",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*%*", ["a%c", "100%"]),
        ("*\\%", ["100%"]),
        ("a_c", ["a_c"]),
        ("*_*", ["a_c", "x_y"]),
        ("a?c", ["a%c", "a_c", "abc", "aXc", "a\\c", "a🙂c"]),
        ("a\\\\c", ["a\\c"]),
        ("a\\\\*", ["a\\c", "a\\\\c"]),
        ("?", ["é", "e", "🙂"]),
        ("??", ["日本"]),
        ("????", ["ключ", "100%", "a\\\\c"]),
        ("[a]*", ["a%c", "a_c", "abc", "aXc", "a\\c", "a\\\\c", "a🙂c"]),
        ("a[^b]c", ["a%c", "a_c", "aXc", "a\\c", "a🙂c"]),
        ("[A-Z]*", ["ABC"]),
        ("*[лю]ч", ["ключ"]),
        ("abc", ["abc"]),
        ("*C", ["ABC"]),
        ("*c", ["a%c", "a_c", "abc", "aXc", "a\\c", "a\\\\c", "a🙂c"]),
    ],
)
async def test_globs_match_characters_not_bytes_nor_like_wildcards(
    postgres_dsn: str, table: str, pattern: str, expected: list[str]
) -> None:
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        await storage.set_many({key: i for i, key in enumerate(LIKE_KEYS)})
        assert sorted([key async for key in storage.keys(pattern)]) == sorted(expected)
        assert sorted(key for key, _ in [item async for item in storage.entries(pattern)]) == sorted(expected)


async def test_a_glob_without_prefix_finds_long_keys_on_later_pages(postgres_dsn: str, table: str) -> None:
    long_keys = [f"{i:04}" + "й" * 700 + ":settings" for i in range(3)]
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        await storage.set_many({f"chat:{i:04}:state": i for i in range(1200)})  # past two pages
        await storage.set_many({f"chat:{i:04}:settings": i for i in range(0, 1200, 100)})
        await storage.set_many(dict.fromkeys(long_keys, 0))
        found = sorted([key async for key in storage.keys("*:settings")])
        assert found == sorted([f"chat:{i:04}:settings" for i in range(0, 1200, 100)] + long_keys)
        assert len([key async for key in storage.keys("chat:*:state")]) == 1200


async def test_a_bad_lock_lease_is_refused(postgres_dsn: str, table: str) -> None:
    storage: PostgresStorage = PostgresStorage(postgres_dsn, table=table)
    for lease in (0, -1, float("inf")):
        with pytest.raises(ValueError):
            storage.lock("k", lease=lease)


async def test_lock_extend_renews_and_fails_once_lost(postgres_dsn: str, table: str) -> None:
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        async with storage.lock("job", lease=1) as held:
            await asyncio.sleep(0.5)
            await held.extend(5)
            await asyncio.sleep(0.7)  # past the first lease: only the extension keeps it
            with pytest.raises(LockError):
                async with storage.lock("job", lease=1, timeout=0.1):
                    pass
        async with storage.lock("job", lease=0.1) as lost:
            await asyncio.sleep(0.3)
            async with storage.lock("job", lease=5, timeout=1) as taker:
                assert taker.token > lost.token
                with pytest.raises(LockError):
                    await lost.extend()


async def test_a_table_dropped_by_hand_is_created_again(postgres_dsn: str, table: str) -> None:
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        await storage.set("k", 1)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'DROP TABLE "{table}", "{table}_locks"')  # the token sequence goes too
        assert await conn.fetchval("SELECT to_regclass($1)", f"{table}_lock_token") is None
    finally:
        await conn.close()
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        assert await storage.get("k") is None
        await storage.set("k", 2)
        async with storage.lock("k") as held:
            assert held.token >= 1


async def test_malformed_connection_settings_are_a_config_error(postgres_dsn: str, table: str) -> None:
    storage: PostgresStorage = PostgresStorage(f"{postgres_dsn}?sslmode=bogus", table=table)
    with pytest.raises(ConfigError):
        await storage.start()


async def test_any_str_is_a_key_lone_surrogates_included(postgres_dsn: str, table: str) -> None:
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        await storage.set("half \ud83d pair", 1)
        assert await storage.get("half \ud83d pair") == 1
        assert [key async for key in storage.keys("half*")] == ["half \ud83d pair"]


async def test_a_corrupt_value_fails_only_its_own_caller_among_concurrent_gets(
    postgres_dsn: str, table: str
) -> None:
    codec = SwitchableCodec()
    async with PostgresStorage(postgres_dsn, table=table, codec=codec) as storage:
        await storage.set_many({f"ok:{i}": i for i in range(30)})
        codec.raw = True
        await storage.set("bad", b"\xff not json")
        codec.raw = False
        keys = [f"ok:{i}" for i in range(15)] + ["bad"] + [f"ok:{i}" for i in range(15, 30)]
        results = await asyncio.gather(*(storage.get(key) for key in keys), return_exceptions=True)
        assert isinstance(results[15], CorruptValueError)
        assert results[15].key == "bad"
        assert results[:15] + results[16:] == list(range(30))


async def test_lock_rows_do_not_pile_up(postgres_dsn: str, table: str) -> None:
    """A released lock frees its row and an abandoned one keeps it until its lease ran out; sweep()
    deletes rows free for a minute. Tokens keep growing either way (they come from a sequence)."""
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        tokens = []
        for i in range(60):
            async with storage.lock(f"chat:{i}", lease=5) as held:
                tokens.append(held.token)
        conn = await asyncpg.connect(postgres_dsn)
        try:
            count = f'SELECT count(*) FROM "{table}_locks"'
            abandoned = storage.lock("crashed", lease=5)
            await abandoned.__aenter__()  # a holder that dies without releasing
            await storage.sweep()
            assert await conn.fetchval(count) == 61  # freed a moment ago, or held
            await conn.execute(f"UPDATE \"{table}_locks\" SET expires_at = now() - interval '2 minutes'")
            await storage.sweep()
            assert await conn.fetchval(count) == 0
        finally:
            await conn.close()
        async with storage.lock("crashed", lease=5) as again:
            assert again.token > abandoned.token > max(tokens)
            assert tokens == sorted(set(tokens))


async def test_releases_delete_old_free_lock_rows_without_a_sweeper(postgres_dsn: str, table: str) -> None:
    # One row per key ever locked (a distributed session per chat) must not stay for ever.
    async with PostgresStorage(postgres_dsn, table=table) as storage:
        for i in range(50):
            async with storage.lock(f"chat:{i}", lease=5):
                pass
    conn = await asyncpg.connect(postgres_dsn)
    try:
        count = f'SELECT count(*) FROM "{table}_locks"'
        assert await conn.fetchval(count) == 50
        await conn.execute(f"UPDATE \"{table}_locks\" SET expires_at = now() - interval '2 minutes'")
        async with PostgresStorage(postgres_dsn, table=table) as fresh, fresh.lock("chat:new", lease=5):
            pass  # no sweep_interval: the release deletes rows free for a minute (once a minute)
        assert await conn.fetchval(count) == 1
    finally:
        await conn.close()


async def test_a_lock_taken_after_waiting_for_its_row_gets_a_newer_token(
    postgres_dsn: str, table: str, unique: str
) -> None:
    # Tokens fence writes, so they must grow in the order the lock is granted, even for a caller
    # whose statement had to wait for the row while a token was drawn elsewhere.
    async with PostgresStorage(
        postgres_dsn, table=table, server_settings={"application_name": unique}
    ) as storage:
        async with storage.lock("k", lease=5):
            pass  # the row exists, free
        conn = await asyncpg.connect(postgres_dsn)
        try:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(f'SELECT 1 FROM "{table}_locks" FOR UPDATE')  # another statement holds it
            taking = asyncio.ensure_future(storage.lock("k", lease=5).__aenter__())
            await _wait_for_lock_waiter(conn, unique)
            drawn_meanwhile = await conn.fetchval(f"SELECT nextval('\"{table}_lock_token\"')")
            await transaction.commit()
            held = await asyncio.wait_for(taking, 10)
            assert held.token > drawn_meanwhile
        finally:
            await conn.close()


async def _wait_for_lock_waiter(conn: Any, app: str) -> None:
    """Until a backend of ``app`` waits for a row lock (bounded)."""
    for _ in range(400):
        if await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            app,
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement never waited for the row lock")


async def test_cancelled_sets_neither_break_nor_leak_connections(
    postgres_dsn: str, table: str, unique: str
) -> None:
    """A set cancelled mid-statement must hand its connection back: with three connections in the
    pool, three cancelled sets would otherwise leave none for what follows."""
    app = f"bs-{unique}"[:60]
    storage = PostgresStorage(
        postgres_dsn, table=table, min_size=1, max_size=3, server_settings={"application_name": app}
    )
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await storage.set("k", "old")
        for n in range(3):
            async with admin.transaction():
                await admin.execute(f'SELECT 1 FROM "{table}" WHERE id = $1 FOR UPDATE', b"k")
                task = asyncio.ensure_future(storage.set("k", f"cancelled {n}"))
                await _wait_for_lock_waiter(admin, app)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        bounded = asyncio.gather(storage.set("k", "new"), storage.delete("other"), storage.has("k"))
        assert await asyncio.wait_for(bounded, 15) == [None, False, True]
        assert await asyncio.wait_for(storage.get("k"), 15) == "new"
    finally:
        await admin.close()
        await storage.stop()


@pytest.mark.parametrize("max_size", [1, 2])
async def test_a_small_pool_serves_every_operation_at_once(
    postgres_dsn: str, table: str, max_size: int
) -> None:
    """gets and sets keep no connection a pool this small needs for everything else."""
    async with PostgresStorage(postgres_dsn, table=table, min_size=1, max_size=max_size) as storage:
        await storage.set("n", 0)

        async def locked_increment() -> int:
            async with storage.lock("n-lock", timeout=10):
                return await storage.increment("n")

        calls = asyncio.gather(
            *(storage.get("n") for _ in range(3)),
            storage.set("k", 1),
            locked_increment(),
            storage.delete("k2"),
        )
        results = await asyncio.wait_for(calls, 15)
        assert results[3:] == [None, 1, False]
        assert await asyncio.wait_for(storage.get("k"), 15) == 1


async def test_a_pool_you_pass_is_not_held_between_operations(postgres_dsn: str, table: str) -> None:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1)
    try:
        async with PostgresStorage(pool, table=table) as storage:
            await storage.set("k", "v")
            assert await storage.get("k") == "v"
            # The only connection is free for the rest of the program while the storage is open.
            assert await asyncio.wait_for(pool.fetchval("SELECT 1"), 15) == 1
    finally:
        await pool.close()


def test_a_storage_used_from_a_new_event_loop_opens_again_there(postgres_dsn: str, unique: str) -> None:
    # Two asyncio.run() calls without stop() in between (a script, a test per loop): the pool and
    # kept connections of the first loop are gone with it.
    storage: PostgresStorage[Any] = PostgresStorage(postgres_dsn, table=unique)

    async def first() -> None:
        await storage.set("k", 1)
        assert await storage.get("k") == 1

    async def second() -> None:
        try:
            with pytest.raises(StorageUnavailable, match="another event loop"):
                await storage.get("k")  # the first call finds the old loop's connection, and says so
            assert [await storage.get("k") for _ in range(3)] == [1, 1, 1]
            await storage.set("k", 2)
            assert await storage.get("k") == 2
        finally:
            await storage.stop()
            await drop_tables(postgres_dsn, unique)

    asyncio.run(first())
    asyncio.run(second())
