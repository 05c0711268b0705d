from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from _pg_server import PgServer, pg_server_or_skip
from _services import require_module
from _sweeping import check_sweeps_without_start
from botstate import ConfigError, LockError, StorageError, StorageUnavailable, open_storage
from botstate.testing import StorageConformance

# The module's tests run every dialect (MariaDB, PostgreSQL, SQLite), so each async driver is needed.
for _module in ("sqlalchemy", "aiomysql", "asyncpg", "aiosqlite"):
    require_module(_module)

from sqlalchemy import inspect  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from botstate.storages.sqlalchemy import SQLAlchemyStorage  # noqa: E402


async def _drop_tables(engine: AsyncEngine, *tables: str) -> None:
    async with engine.begin() as conn:
        for table in tables:
            for name in (f"{table}_locks", f"{table}_version", table):
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


class _SQLAlchemyConformance(StorageConformance):
    """The conformance suite on one dialect; subclasses provide the ``url`` fixture."""

    persistent = True
    distributed_locks = True

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def engine(self, url: str, unique: str) -> AsyncIterator[AsyncEngine]:
        engine = create_async_engine(url, pool_pre_ping=True)
        try:
            yield engine
        finally:
            await _drop_tables(engine, unique, f"{unique}_sib")
            await engine.dispose()

    @pytest.fixture
    def storage_factory(self, engine: AsyncEngine, unique: str) -> Callable[..., Any]:
        return lambda **options: SQLAlchemyStorage(engine, table=unique, **options)

    @pytest.fixture
    def sibling_storage(self, engine: AsyncEngine, unique: str) -> Callable[..., Any]:
        return lambda **options: SQLAlchemyStorage(engine, table=f"{unique}_sib", **options)


class TestMariaDB(_SQLAlchemyConformance):
    @pytest.fixture
    def url(self, mysql_url: str) -> str:
        return mysql_url


class TestPostgreSQL(_SQLAlchemyConformance):
    @pytest.fixture
    def url(self, postgres_dsn: str) -> str:
        return postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


class TestSQLite(_SQLAlchemyConformance):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        SQLAlchemyStorage(url)


@pytest.mark.parametrize("table", ["", "Bot", "1st", "a-b", "x; DROP TABLE y", "t" * 49, "ключ", 5, None])
def test_table_name_is_validated(table: Any) -> None:
    with pytest.raises(ConfigError):
        SQLAlchemyStorage("sqlite+aiosqlite:///bot.db", table=table)


def test_from_url_picks_the_async_driver_and_splits_options() -> None:
    storage = SQLAlchemyStorage.from_url(
        "sqlalchemy+mysql://root:secret@127.0.0.1:3306/test?table=bot_state&default_ttl=5&charset=utf8mb4"
    )
    url = storage.engine.url
    assert url.drivername == "mysql+aiomysql"
    assert (url.host, url.port, url.database) == ("127.0.0.1", 3306, "test")
    assert dict(url.query) == {"charset": "utf8mb4"}
    assert storage.table == "bot_state"
    assert storage.default_ttl_ms == 5000
    assert "secret" not in repr(storage)
    assert SQLAlchemyStorage.from_url("sqlalchemy+postgresql://u@h/db").engine.url.drivername == (
        "postgresql+asyncpg"
    )
    assert SQLAlchemyStorage.from_url("sqlalchemy+mariadb+aiomysql://u@h/db").engine.url.drivername == (
        "mariadb+aiomysql"
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlalchemy+oracle://u@h/db",  # no default async driver: name one
        "sqlalchemy+mysql+pymysql://u@h/db",  # not an async driver
        "sqlalchemy://u@h/db",
        "sqlalchemy+sqlite",
    ],
)
def test_from_url_rejects_urls_it_cannot_map(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLAlchemyStorage.from_url(url)


def test_config_errors_never_show_the_password() -> None:
    for url in ("sqlalchemy+oracle://bot:s3cret@h/db", "sqlalchemy+mysql+pymysql://bot:s3cret@h/db"):
        with pytest.raises(ConfigError) as info:
            SQLAlchemyStorage.from_url(url)
        assert "s3cret" not in str(info.value)
        assert "bot:***@h" in str(info.value)


async def test_open_storage_with_a_url_owns_and_disposes_its_engine(tmp_path: Path) -> None:
    storage = open_storage(f"sqlalchemy+sqlite:///{tmp_path / 'bot.db'}?table=states")
    async with storage:
        await storage.set("chat:1", {"step": 2})
        assert await storage.get("chat:1") == {"step": 2}
        assert storage.engine.pool.checkedin() > 0
    assert storage.engine.pool.checkedin() == 0  # disposed by stop()
    async with open_storage(f"sqlalchemy+sqlite:///{tmp_path / 'bot.db'}?table=states") as again:
        assert await again.get("chat:1") == {"step": 2}


async def test_stop_never_disposes_an_engine_it_was_given(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    try:
        pool = engine.pool
        async with SQLAlchemyStorage(engine) as storage:
            await storage.set("k", 1)
        assert engine.pool is pool  # dispose() would have replaced the pool
        assert pool.checkedin() > 0  # the application's pooled connections are still open
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM botstate")).scalar() == 1
    finally:
        await engine.dispose()


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    async with SQLAlchemyStorage(url) as storage:
        await storage.set("k", 1)
        async with storage.engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE botstate_version SET version = 99")
    newer = SQLAlchemyStorage(url)
    with pytest.raises(StorageError, match="schema version 99"):
        await newer.start()
    assert newer.engine.pool.checkedin() == 0  # the failed start closed what it opened


async def test_a_table_of_another_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE sessions (id INTEGER PRIMARY KEY, data TEXT)")
            await conn.exec_driver_sql("INSERT INTO sessions VALUES (1, 'theirs')")
        with pytest.raises(ConfigError, match="'sessions' exists"):
            await SQLAlchemyStorage(engine, table="sessions").start()
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT data FROM sessions")).scalar() == "theirs"
    finally:
        await engine.dispose()


async def test_sweep_interval_sweeps_a_storage_never_started(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    storage = SQLAlchemyStorage(f"sqlite+aiosqlite:///{path}", sweep_interval=0.01)
    raw = sqlite3.connect(path)

    async def count_rows() -> int:
        return int(raw.execute("SELECT count(*) FROM botstate").fetchone()[0])

    try:
        await check_sweeps_without_start(storage, count_rows)
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("table", "part"),
    [
        ("x_locks", "lock table"),
        ("x_version", "schema version table"),
        ("x_exp", "expiry index"),
        ("x_k", "key index"),
    ],
)
def test_a_table_named_like_another_tables_part_is_refused(table: str, part: str) -> None:
    # With tables x and x_locks both allowed, x_locks's entries would be x's lock rows.
    with pytest.raises(ConfigError, match=f"{table}.*{part} of table 'x'"):
        SQLAlchemyStorage("sqlite+aiosqlite:///bot.db", table=table)


@pytest_asyncio.fixture(
    params=["mysql_url", "postgres_dsn", "sqlite"], ids=["mariadb", "postgresql", "sqlite"]
)
async def dialect_engine(
    request: pytest.FixtureRequest, unique: str, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on each dialect; the test's tables, another program's ``other_<unique>`` and view
    ``<unique>_locks`` are removed after."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    else:
        url = request.getfixturevalue(request.param).replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            for name in (f"other_{unique}", f"{unique}_exp"):  # other_...: with its index
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            await conn.exec_driver_sql(f"DROP VIEW IF EXISTS {unique}_locks")
        await _drop_tables(engine, unique)
        await engine.dispose()


async def _relation_exists(engine: AsyncEngine, name: str) -> bool:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: inspect(sync).has_table(name))


@pytest.mark.parametrize(
    ("ddl", "shared_namespace_only"),
    [
        # Index names share the tables' namespace on PostgreSQL and SQLite, not on MariaDB.
        (["CREATE TABLE {u}_exp (a integer)"], True),
        (["CREATE TABLE other_{u} (a integer)", "CREATE INDEX {u}_locks ON other_{u} (a)"], True),
        (["CREATE VIEW {u}_locks AS SELECT 1 AS a"], False),
    ],
    ids=[
        "table-named-like-the-expiry-index",
        "index-named-like-the-lock-table",
        "view-named-like-the-lock-table",
    ],
)
async def test_another_relation_holding_a_derived_name_is_refused_before_any_ddl(
    dialect_engine: AsyncEngine, unique: str, ddl: list[str], shared_namespace_only: bool
) -> None:
    async with dialect_engine.begin() as conn:
        for statement in ddl:
            await conn.exec_driver_sql(statement.format(u=unique))
    storage = SQLAlchemyStorage(dialect_engine, table=unique)
    if shared_namespace_only and dialect_engine.dialect.name not in ("postgresql", "sqlite"):
        async with storage:  # no clash on MariaDB: the storage works
            await storage.set("k", 1)
            async with storage.lock("k"):
                assert await storage.get("k") == 1
        return
    with pytest.raises(ConfigError, match=f"table='{unique}'.*'{unique}_(exp|locks)', the name of its"):
        await storage.start()
    assert not await _relation_exists(dialect_engine, unique)  # refused before creating anything


async def test_an_index_missing_from_an_existing_table_is_created(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    async with SQLAlchemyStorage(url) as storage, storage.engine.begin() as conn:
        await conn.exec_driver_sql("DROP INDEX botstate_exp")
    async with SQLAlchemyStorage(url) as storage, storage.engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("botstate"))
        assert {"botstate_exp", "botstate_k"} <= {index["name"] for index in indexes}


# -- unavailable servers ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("driver", ["mysql+aiomysql", "postgresql+asyncpg"])
async def test_unreachable_server_is_unavailable_and_unhealthy(driver: str) -> None:
    storage = SQLAlchemyStorage(f"{driver}://root@127.0.0.1:{_closed_port()}/test")
    try:
        assert await storage.health() is False
        with pytest.raises(StorageUnavailable) as info:
            await storage.get("chat:1")
        assert (info.value.key, info.value.backend) == ("chat:1", "sqlalchemy")
        with pytest.raises(StorageUnavailable):
            await storage.set("chat:1", 1)
    finally:
        await storage.stop()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never says a word; its port."""
    release = asyncio.Event()
    handlers: list[asyncio.Task[Any]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        release.set()
        await asyncio.gather(*handlers)
        server.close()


async def test_a_mysql_server_that_never_answers_is_unavailable_after_operation_timeout() -> None:
    # aiomysql bounds only the TCP connect: the handshake and every read wait for ever unless the
    # storage bounds each operation itself.
    async with silent_server() as port:
        storage = open_storage(f"sqlalchemy+mysql://root@127.0.0.1:{port}/test?operation_timeout=0.5")
        try:
            assert storage.operation_timeout == 0.5
            with pytest.raises(StorageUnavailable) as info:
                await asyncio.wait_for(storage.get("chat:1"), 20)  # the bound guards a regression only
            assert info.value.key == "chat:1"
            assert await storage.health() is False
        finally:
            await storage.stop()


@pytest.mark.parametrize("driver", ["mysql", "postgresql"])
async def test_a_driver_option_the_driver_refuses_is_a_config_error(driver: str) -> None:
    storage = open_storage(f"sqlalchemy+{driver}://root@127.0.0.1:1/test?bogus=1")
    try:
        assert await storage.health() is False  # a probe answers, it does not raise
        with pytest.raises(ConfigError, match=r"driver refused its settings.*bogus"):
            await storage.get("k")
    finally:
        await storage.stop()


async def test_a_server_that_never_answers_is_unavailable() -> None:
    async with silent_server() as port:
        options = {"connect_args": {"timeout": 0.3}}  # asyncpg's connect timeout; the default is 10 s
        storage = SQLAlchemyStorage(f"postgresql+asyncpg://u@127.0.0.1:{port}/db", engine_options=options)
        try:
            with pytest.raises(StorageUnavailable) as info:
                await storage.get("chat:1")
            assert info.value.key == "chat:1"
            assert "did not answer in time" in str(info.value)
        finally:
            await storage.stop()


# -- key ranges, lock rows -------------------------------------------------------------------------


@pytest_asyncio.fixture(
    params=["mysql_url", "postgres_dsn", "sqlite"], ids=["mariadb", "postgresql", "sqlite"]
)
async def each_dialect(
    request: pytest.FixtureRequest, unique: str, tmp_path: Path
) -> AsyncIterator[SQLAlchemyStorage]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    else:
        url = request.getfixturevalue(request.param).replace("postgresql://", "postgresql+asyncpg://", 1)
    storage = SQLAlchemyStorage(url, table=unique)
    try:
        await storage.start()
        yield storage
    finally:
        await _drop_tables(storage.engine, unique)
        await storage.stop()


MULTIBYTE_KEYS = [
    "ключ:1",
    "ключ:2",
    "ключа",
    "ключ",
    "🙂:a",
    "🙂🙂",
    "\U0010ffff:x",
    "\U0010ffff\U0010ffff",
    "\x00:nul",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ключ:*", ["ключ:1", "ключ:2"]),
        ("ключ*", ["ключ:1", "ключ:2", "ключа", "ключ"]),
        ("🙂*", ["🙂:a", "🙂🙂"]),
        ("\U0010ffff*", ["\U0010ffff:x", "\U0010ffff\U0010ffff"]),  # no upper bound exists
        ("\x00*", ["\x00:nul"]),
    ],
)
async def test_glob_prefixes_of_multibyte_keys(
    each_dialect: SQLAlchemyStorage, pattern: str, expected: list[str]
) -> None:
    await each_dialect.set_many({key: i for i, key in enumerate(MULTIBYTE_KEYS)})
    found = [key async for key in each_dialect.keys(pattern)]
    assert sorted(found) == sorted(expected)


async def test_swept_lock_rows_keep_tokens_growing(each_dialect: SQLAlchemyStorage) -> None:
    async with each_dialect.lock("chat:1", lease=5) as first:
        pass
    locks = f"{each_dialect.table}_locks"
    async with each_dialect.engine.begin() as conn:  # the release, two hours ago
        await conn.exec_driver_sql(f"UPDATE {locks} SET exp = exp - 7200000")
    await each_dialect.sweep()
    async with each_dialect.engine.connect() as conn:
        assert (await conn.exec_driver_sql(f"SELECT count(*) FROM {locks}")).scalar() == 0
    async with each_dialect.lock("chat:1", lease=5) as second:
        assert second.token > first.token


# -- concurrency and locks across engines ---------------------------------------------------------


@pytest_asyncio.fixture(params=["mysql_url", "postgres_dsn"], ids=["mariadb", "postgresql"])
async def two_engines(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[list[SQLAlchemyStorage]]:
    """Two storages on one table through two engines: two processes, as far as the database can tell.

    They start at the same moment on a table that does not exist yet, so both create it at once.
    """
    url = request.getfixturevalue(request.param).replace("postgresql://", "postgresql+asyncpg://", 1)
    storages = [SQLAlchemyStorage(url, table=unique), SQLAlchemyStorage(url, table=unique)]
    try:
        await asyncio.gather(*(storage.start() for storage in storages))
        yield storages
    finally:
        await _drop_tables(storages[0].engine, unique)
        for storage in storages:
            await storage.stop()


async def test_increments_from_two_engines_total_exactly(two_engines: list[SQLAlchemyStorage]) -> None:
    first, second = two_engines
    # A fresh key: every increment races to create the row (on MariaDB, the gap-lock case) first.
    results = await asyncio.gather(*(storage.increment("hits") for _ in range(50) for storage in two_engines))
    assert sorted(results) == list(range(1, 101))
    assert await first.get("hits") == 100
    assert await second.get("hits") == 100


async def test_insert_if_absent_from_two_engines_has_one_winner(two_engines: list[SQLAlchemyStorage]) -> None:
    won = await asyncio.gather(
        *(storage.compare_and_set("owner", i, expected=None) for i, storage in enumerate(two_engines * 10))
    )
    assert won.count(True) == 1
    assert await two_engines[1].get("owner") == won.index(True)


async def test_lock_excludes_across_engines(two_engines: list[SQLAlchemyStorage]) -> None:
    inside: list[int] = []
    tokens: list[int] = []

    async def worker(storage: SQLAlchemyStorage) -> None:
        async with storage.lock("chat:1", lease=5, timeout=10) as held:
            inside.append(1)
            assert len(inside) == 1, "two holders at once"
            tokens.append(held.token)
            await asyncio.sleep(0.01)
            inside.pop()

    await asyncio.gather(*(worker(storage) for storage in two_engines * 4))
    assert len(tokens) == 8
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 8


async def test_a_lost_lease_cannot_be_extended(each_dialect: SQLAlchemyStorage) -> None:
    async with each_dialect.lock("chat:1", lease=1) as held:
        await held.extend(5)  # still ours: renewed
        await held.extend(0.3)  # and shortened: an extension sets the lease, it does not add to it
        await asyncio.sleep(0.6)
        async with each_dialect.lock("chat:1", lease=5, timeout=2) as other:
            assert other.token > held.token
            with pytest.raises(LockError):
                await held.extend()


# -- a server that goes away and comes back --------------------------------------------------------


@pytest.fixture
def throwaway_postgres() -> Iterator[PgServer]:
    with pg_server_or_skip() as server:
        yield server


async def test_a_restarted_server_is_unavailable_then_recovers(throwaway_postgres: PgServer) -> None:
    storage = SQLAlchemyStorage(throwaway_postgres.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        await storage.set("chat:1", {"step": 1})
        throwaway_postgres.stop()
        assert await storage.health() is False
        with pytest.raises(StorageUnavailable) as info:
            await storage.get("chat:1")
        assert info.value.key == "chat:1"
        throwaway_postgres.start()
        # The pooled connection died with the server: pre-ping replaces it, no error reaches the bot.
        assert await storage.get("chat:1") == {"step": 1}
        assert await storage.health() is True
    finally:
        await storage.stop()
