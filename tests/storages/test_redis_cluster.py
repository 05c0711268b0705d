"""RedisStorage on a real 3-primary Redis Cluster that this module starts and stops itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from _services import require_module
from botstate import open_storage
from botstate.testing import StorageConformance

redis = require_module("redis.asyncio")

from _redis_servers import RedisCluster, redis_cluster_or_skip  # noqa: E402
from botstate.storages.redis import RedisStorage  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster_or_skip() as cluster:
        yield cluster


async def _connection_ids(client: Any) -> dict[str, int]:
    """The server's id of the client's connection to each primary: a reconnect changes it."""
    return {
        node.name: await client.execute_command("CLIENT ID", target_nodes=node)
        for node in client.get_primaries()
    }


class TestRedisClusterStorage(StorageConformance):
    persistent = True
    native_expiry = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, cluster: RedisCluster, unique: str) -> Callable[..., Any]:
        return lambda **options: RedisStorage(cluster.url, prefix=f"{unique}:", **options)

    @pytest.fixture
    def sibling_storage(self, cluster: RedisCluster, unique: str) -> Callable[..., Any]:
        return lambda: RedisStorage(cluster.url, prefix=f"{unique}-sibling:")


@pytest_asyncio.fixture
async def storage(cluster: RedisCluster, unique: str) -> AsyncIterator[RedisStorage[Any]]:
    async with open_storage(cluster.url, prefix=f"{unique}:") as storage:
        yield storage
        await storage.clear()


async def test_keys_spread_over_every_primary_are_all_found(storage: RedisStorage[Any]) -> None:
    client = storage.client
    assert isinstance(client, redis.RedisCluster)
    mapping = {f"spread:{i}": i for i in range(300)}
    await storage.set_many(mapping, ttl=60)
    nodes = {client.get_node_from_key(f"{storage.prefix}{key}").name for key in mapping}
    assert len(nodes) == 3  # the data really lives on all three primaries
    assert sorted([key async for key in storage.keys("spread:*")]) == sorted(mapping)
    assert await storage.get_many(list(mapping)) == list(mapping.values())
    assert await storage.clear() == 300


async def test_an_existing_cluster_client_with_decoding(cluster: RedisCluster, unique: str) -> None:
    client = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"), decode_responses=True)
    try:
        await client.initialize()
        connection_ids = await _connection_ids(client)
        async with RedisStorage(client, prefix=f"{unique}:") as storage:
            await storage.set_many({"a": {"x": 1}, "b": [2]})
            assert await storage.get_many(["a", "b", "c"]) == [{"x": 1}, [2], None]
            assert sorted([entry async for entry in storage.entries()]) == [("a", {"x": 1}), ("b", [2])]
            assert await storage.increment("n", ttl=5) == 1
            assert await storage.clear() == 3
        assert await _connection_ids(client) == connection_ids  # not closed (and reopened) by stop()
    finally:
        await client.aclose()


async def test_more_concurrent_commands_than_a_node_has_connections(storage: RedisStorage[Any]) -> None:
    # redis-py's cluster client refuses work beyond max_connections per node (100 by default)
    # instead of waiting: the storage has to queue instead of failing.
    await storage.set("hot", 1)
    assert await asyncio.gather(*(storage.get("hot") for _ in range(500))) == [1] * 500
    assert sorted(await asyncio.gather(*(storage.increment("n") for _ in range(300)))) == list(range(1, 301))


@pytest.mark.parametrize("own_client", [False, True], ids=["url", "user-client"])
async def test_a_burst_before_first_use_applies_each_increment_once(
    cluster: RedisCluster, unique: str, own_client: bool
) -> None:
    # redis-py's cluster client hit by concurrent commands before initialize() applied some of
    # them twice; the storage is not started and the client never used, so the burst is first.
    client = (
        redis.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis")) if own_client else None
    )
    storage: RedisStorage[Any] = RedisStorage(client or cluster.url, prefix=f"{unique}:")
    try:
        totals = await asyncio.gather(*(storage.increment("n") for _ in range(300)))
        assert sorted(totals) == list(range(1, 301))
        assert await storage.get("n") == 300
        await storage.clear()
    finally:
        await storage.stop()
        if client is not None:
            await client.aclose()


async def test_every_primary_is_scanned_page_by_page(cluster: RedisCluster, unique: str) -> None:
    nodes = [redis.Redis(port=node.port) for node in cluster.nodes]
    mapping = {f"page:{i}": i for i in range(120)}
    try:
        async with RedisStorage(cluster.url, prefix=f"{unique}:", scan_count=2) as storage:
            await storage.set_many(mapping)
            for node in nodes:
                await node.config_resetstat()
            assert sorted([key async for key in storage.keys("*")]) == sorted(mapping)
            assert sorted([entry async for entry in storage.entries("page:*")]) == sorted(mapping.items())
            assert await storage.clear() == len(mapping)
            for node in nodes:
                stats = await node.info("commandstats")
                assert "cmdstat_keys" not in stats
                assert stats["cmdstat_scan"]["calls"] > 3  # several pages on each primary, 3 passes
            assert [key async for key in storage.keys("*")] == []
    finally:
        for node in nodes:
            await node.aclose()


async def test_valkey_cluster_urls_and_clear_of_keys_that_are_not_utf8(
    cluster: RedisCluster, unique: str
) -> None:
    raw = redis.Redis(port=cluster.nodes[0].port)
    try:
        async with open_storage(cluster.url.replace("redis+", "valkey+"), prefix=f"{unique}:") as storage:
            assert isinstance(storage.client, redis.RedisCluster)
            await storage.set_many({f"k{i}": i for i in range(30)})
            # A key on this node's slots, not UTF-8, written by another client.
            foreign = next(
                key
                for i in range(10_000)
                if storage.client.get_node_from_key(key := f"{unique}:".encode() + b"\xff%d" % i).port
                == cluster.nodes[0].port
            )
            await raw.set(foreign, b"x")
            assert len([key async for key in storage.keys("*")]) == 30
            assert await storage.clear() == 31
            assert await raw.exists(foreign) == 0
    finally:
        await raw.aclose()


async def test_set_many_with_a_ttl_sends_its_script_in_full_only_to_nodes_lacking_it(
    cluster: RedisCluster, unique: str
) -> None:
    nodes = [redis.Redis(port=node.port) for node in cluster.nodes]
    mapping = {f"ttl:{i}": i for i in range(60)}
    try:
        async with RedisStorage(cluster.url, prefix=f"{unique}:") as storage:
            for node in nodes:
                await node.script_flush()  # as after a restart or a failover
            await storage.set_many(mapping, ttl=60)  # NOSCRIPT everywhere: sent again in full
            assert await storage.get_many(list(mapping)) == list(mapping.values())
            assert 0 < await storage.client.pttl(f"{storage.prefix}ttl:7") <= 60_000
            for node in nodes:
                await node.config_resetstat()
            await storage.set_many({key: -value for key, value in mapping.items()}, ttl=60)
            assert await storage.get_many(list(mapping)) == [-value for value in mapping.values()]
            for node in nodes:
                stats = await node.info("commandstats")
                assert "cmdstat_eval" not in stats  # by SHA alone, now that every node knows it
                assert stats["cmdstat_evalsha"]["calls"] > 0
            await storage.clear()
    finally:
        for node in nodes:
            await node.aclose()
