"""Server backends: botstate's Redis and PostgreSQL storages against raw clients and peers.

The raw baselines are what a bot author writes by hand: redis-py's asyncio client doing GET/SET
with the same codec as botstate (orjson), and an asyncpg pool running one statement per operation
(without asyncpg's reset query on release, as botstate's own pool). Everything lives under one unique name per run (a Redis key prefix in db 15, a
PostgreSQL table prefix) and is removed afterwards, also when the run fails.
"""

from __future__ import annotations

import inspect
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
from _embedded import aiogram_keys
from _report import Check, GroupReport, ops_table, ratio_check
from _workload import Bound, Result, Skip, Subject, Workload, has_module, measure, need

RAW_REDIS = "redis-py asyncio GET/SET"
REDIS = "botstate RedisStorage"
RAW_PG = "asyncpg pool (no reset), one statement per op"
PG = "botstate PostgresStorage"


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def namespaced(cls: Any, url: str, value: str, names: tuple[str, ...]) -> Any:
    """``cls.from_url(url)`` with ``value`` passed as whichever of ``names`` the class accepts."""
    params = inspect.signature(cls.__init__).parameters
    name = next((n for n in names if n in params), None)
    if name is None:
        raise Skip(f"{cls.__name__} takes none of {', '.join(names)}: cannot isolate the run")
    return cls.from_url(url, **{name: value})


def check_thresholds(results: list[Result], subject: str, raw: str, concurrency: int) -> list[Check]:
    """Sequential at least as fast as raw (within 5 %); concurrent well ahead of it."""
    return [
        ratio_check(results, subject, "get seq", raw, 0.95),
        ratio_check(results, subject, "set seq", raw, 0.95),
        ratio_check(results, subject, f"get x{concurrency}", raw, 1.5),
        ratio_check(results, subject, f"set x{concurrency}", raw, 1.5),
    ]


def skipped_report(title: str, reason: str, checks: list[Check]) -> GroupReport:
    for check in checks:
        check.why_missing = reason
    return GroupReport(title, f"{title}\n  skipped: {reason}", checks)


# -- Redis ---------------------------------------------------------------------------------------


def _redis_client(url: str) -> Any:
    return need("redis.asyncio", "redis[hiredis]>=5.0").Redis.from_url(url)


@asynccontextmanager
async def raw_redis(w: Workload, url: str, prefix: str) -> AsyncIterator[Bound]:
    client = _redis_client(url)
    loads, dumps = orjson.loads, orjson.dumps

    async def get(key: str) -> Any:
        data = await client.get(key)
        return None if data is None else loads(data)

    async def put(key: str, value: Any) -> None:
        await client.set(key, dumps(value))

    try:
        yield Bound(get, put, [f"{prefix}:raw:{k}" for k in w.key_names()])
    finally:
        await client.aclose()


@asynccontextmanager
async def botstate_redis(w: Workload, url: str, prefix: str) -> AsyncIterator[Bound]:
    if not has_module("botstate.storages.redis"):
        raise Skip("botstate.storages.redis does not exist yet")
    from botstate.storages.redis import RedisStorage

    storage = namespaced(RedisStorage, url, f"{prefix}:botstate:", ("prefix", "namespace", "key_prefix"))
    async with storage:
        yield Bound(storage.get, storage.set)


@asynccontextmanager
async def aiogram_redis(w: Workload, url: str, prefix: str) -> AsyncIterator[Bound]:
    redis_fsm = need("aiogram.fsm.storage.redis", "aiogram>=3.10")
    keys = aiogram_keys(w)
    storage = redis_fsm.RedisStorage(
        redis=_redis_client(url), key_builder=redis_fsm.DefaultKeyBuilder(prefix=f"{prefix}:aiogram")
    )
    try:
        yield Bound(storage.get_data, storage.set_data, keys)
    finally:
        await storage.close()


@asynccontextmanager
async def kv_redis(w: Workload, url: str, prefix: str) -> AsyncIterator[Bound]:
    stores = need("key_value.aio.stores.redis", "py-key-value-aio[redis]")
    async with stores.RedisStore(url=url, default_collection=f"{prefix}_kv") as store:
        yield Bound(store.get, store.put)


@asynccontextmanager
async def kurigram_redis(w: Workload, url: str, prefix: str) -> AsyncIterator[Bound]:
    storages = need("pyrogram_patch.fsm.storages.redis_storage", "kurigram-addons")
    client = _redis_client(url)
    storage = storages.RedisStorage(client, prefix=f"{prefix}:kurigram")
    await storage.start()
    try:
        yield Bound(storage.get_state, storage.set_state)
    finally:
        await storage.stop()
        await client.aclose()


async def _drop_redis_keys(url: str, prefix: str) -> None:
    client = _redis_client(url)
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def redis_group(ctx: Any) -> GroupReport:
    w = ctx.workload
    title = w.title("Redis")
    checks = check_thresholds([], REDIS, RAW_REDIS, w.concurrency)
    if not reachable(ctx.redis_url):
        return skipped_report(title, f"no Redis at {ctx.redis_url}", checks)
    prefix = f"bsbench_{uuid.uuid4().hex[:10]}"

    def at(factory: Any) -> Any:
        return lambda w: factory(w, ctx.redis_url, prefix)

    subjects = ctx.pick(
        [
            Subject(RAW_REDIS, at(raw_redis), baseline=True, note="orjson, default connection pool"),
            Subject(REDIS, at(botstate_redis)),
            Subject("aiogram RedisStorage", at(aiogram_redis), note="get_data/set_data; stdlib json"),
            Subject("py-key-value-aio RedisStore", at(kv_redis)),
            Subject("kurigram-addons RedisStorage", at(kurigram_redis), note="pydantic-validated states"),
        ]
    )
    try:
        results = await measure(subjects, w, ctx.log)
    finally:
        try:
            await _drop_redis_keys(ctx.redis_url, prefix)
        except Exception as exc:
            ctx.log(f"  could not delete keys {prefix}*: {exc}")
    checks = check_thresholds(results, REDIS, RAW_REDIS, w.concurrency)
    return GroupReport(title, ops_table(title, results, w.cases, ctx.markdown), checks)


# -- PostgreSQL ------------------------------------------------------------------------------------


def _asyncpg() -> Any:
    return need("asyncpg", "asyncpg>=0.29")


@asynccontextmanager
async def raw_asyncpg(w: Workload, dsn: str, table: str, single: bool) -> AsyncIterator[Bound]:
    asyncpg = _asyncpg()

    class NoReset(asyncpg.Connection):  # type: ignore[misc]
        """asyncpg's pool resets every released connection (one more round trip per operation,
        0.3-0.75x the throughput); botstate's pool skips it, so a fair baseline does too."""

        def get_reset_query(self) -> str:
            return ""

    target = await (asyncpg.connect(dsn) if single else asyncpg.create_pool(dsn, connection_class=NoReset))
    await target.execute(f"CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, value bytea NOT NULL)")
    select = f"SELECT value FROM {table} WHERE key = $1"
    upsert = f"INSERT INTO {table} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    loads, dumps, fetchval, execute = orjson.loads, orjson.dumps, target.fetchval, target.execute

    async def get(key: str) -> Any:
        data = await fetchval(select, key)
        return None if data is None else loads(data)

    async def put(key: str, value: Any) -> None:
        await execute(upsert, key, dumps(value))

    try:
        yield Bound(get, put, max_width=1 if single else None)
    finally:
        await target.close()


@asynccontextmanager
async def botstate_postgres(w: Workload, dsn: str, table: str) -> AsyncIterator[Bound]:
    if not has_module("botstate.storages.postgres"):
        raise Skip("botstate.storages.postgres does not exist yet")
    from botstate.storages.postgres import PostgresStorage

    storage = namespaced(PostgresStorage, dsn, table, ("table", "table_name"))
    async with storage:
        yield Bound(storage.get, storage.set)


@asynccontextmanager
async def kv_postgres(w: Workload, dsn: str, table: str) -> AsyncIterator[Bound]:
    stores = need("key_value.aio.stores.postgresql", "py-key-value-aio[postgresql]")
    async with stores.PostgreSQLStore(url=dsn, table_name=table, default_collection="bench") as store:
        yield Bound(store.get, store.put)


async def _drop_tables(dsn: str, prefix: str) -> None:
    conn = await _asyncpg().connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1",
            prefix.replace("_", "\\_") + "%",
        )
        for row in rows:
            await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
        if await conn.fetchval("SELECT to_regclass('botstate_meta')") is not None:
            await conn.execute("DELETE FROM botstate_meta WHERE starts_with(table_name, $1)", prefix)
    finally:
        await conn.close()


async def postgres_group(ctx: Any) -> GroupReport:
    w = ctx.workload
    title = w.title("PostgreSQL")
    checks = check_thresholds([], PG, RAW_PG, w.concurrency)
    if not reachable(ctx.postgres_dsn):
        return skipped_report(title, f"no PostgreSQL at {ctx.postgres_dsn}", checks)
    prefix = f"bsbench_{uuid.uuid4().hex[:10]}"
    dsn = ctx.postgres_dsn

    subjects = ctx.pick(
        [
            Subject(
                RAW_PG,
                lambda w: raw_asyncpg(w, dsn, f"{prefix}_raw", single=False),
                baseline=True,
                note="asyncpg.create_pool() (10 connections) without the reset query on release, as"
                " botstate's pool; bytea + orjson",
            ),
            Subject(
                "asyncpg, one connection",
                lambda w: raw_asyncpg(w, dsn, f"{prefix}_conn", single=True),
                note="no pool: the sequential floor (one connection runs one query at a time)",
            ),
            Subject(PG, lambda w: botstate_postgres(w, dsn, f"{prefix}_botstate")),
            Subject("py-key-value-aio PostgreSQLStore", lambda w: kv_postgres(w, dsn, f"{prefix}_kv")),
        ]
    )
    try:
        results = await measure(subjects, w, ctx.log)
    finally:
        try:
            await _drop_tables(dsn, prefix)
        except Exception as exc:
            ctx.log(f"  could not drop tables {prefix}*: {exc}")
    checks = check_thresholds(results, PG, RAW_PG, w.concurrency)
    return GroupReport(title, ops_table(title, results, w.cases, ctx.markdown), checks)
