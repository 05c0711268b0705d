"""Shared fixtures: where the test servers are, and how a missing one is reported.

A server is found through its environment variable, else on its standard loopback port. Without
it the tests that need it skip with the reason, except under ``CI=true``, where a missing service
fails the run instead of passing silently. Test modules needing a client library call
``require_module`` from ``_services``, which applies the same rule.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from _services import unavailable

SERVICES = {
    "redis": ("BOTSTATE_REDIS_URL", "redis://127.0.0.1:6379/0", 6379),
    "postgres": ("BOTSTATE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test", 5432),
    "mysql": ("BOTSTATE_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test", 3306),
}


def _unix_socket(url: str) -> bool:
    """Whether ``url`` names a unix socket rather than a TCP address.

    ``unix:///run/redis.sock``, ``redis+unix://``, a DSN with ``?host=/run/postgresql`` or
    ``?unix_socket=...``, a percent-encoded path as host, or PostgreSQL without any host (libpq
    then uses its default socket).
    """
    parts = urlsplit(url)
    if "unix" in parts.scheme.lower().split("+"):
        return True
    query = parse_qs(parts.query)
    if "unix_socket" in query or any(host.startswith("/") for host in query.get("host", [])):
        return True
    host = unquote(parts.netloc.rpartition("@")[2])
    return host.startswith("/") or (not parts.hostname and parts.scheme.lower().startswith("postgres"))


def _reachable(url: str, default_port: int) -> bool:
    """Whether something listens at ``url``; a unix socket, or a libpq keyword DSN
    (``host=/run/postgresql dbname=test``), is left for the client to try."""
    if "://" not in url or _unix_socket(url):
        return True
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def service_url(name: str) -> str:
    """The URL of a test server, or skip (fail under CI=true) when it is not reachable."""
    env, default, port = SERVICES[name]
    url = os.environ.get(env, default)
    if not _reachable(url, port):
        unavailable(f"{name} not reachable at {url} (set {env} to point at one)")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_url("redis")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return service_url("postgres")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return service_url("mysql")


@pytest.fixture
def unique() -> str:
    """A short name unique to this test, for prefixes, tables and databases on shared servers."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _no_redis_keys_left(request: pytest.FixtureRequest, unique: str) -> Iterator[None]:
    """After a test that used the shared Redis, remove every key naming its ``unique``.

    Storages' ``clear()`` stays inside their prefix, but lock keys live outside it (``lock_prefix +
    "{@" + prefix + key + "}"``) and a fencing-token counter outlives its lock by an hour: without
    this the shared database collects them run after run. ``unique`` is in every key a test
    writes there (its prefix, its session names), lock keys included.
    """
    yield
    if "redis_url" not in request.fixturenames:
        return
    import redis

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        leftovers = list(client.scan_iter(match=f"*{unique}*", count=1000))
        for start in range(0, len(leftovers), 500):
            client.unlink(*leftovers[start : start + 500])
    finally:
        client.close()
