"""Engines for :class:`~botstate.storages.sqlalchemy.SQLAlchemyStorage`: URLs, checks, error kinds.

Everything here is about the driver rather than the data: which async driver a botstate URL
means, which engines cannot work (and what fixes them), and which database errors are a lost race
worth rerunning versus a database that is not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigError
from ..urls import parse_query
from ..urls import redacted as redacted_url

__all__ = [
    "DEFAULT_DRIVERS",
    "URL_OPTIONS",
    "check_engine",
    "engine_defaults",
    "is_retryable",
    "is_unavailable",
    "redacted",
    "split_url",
]

DEFAULT_DRIVERS = {"mysql": "aiomysql", "mariadb": "aiomysql", "postgresql": "asyncpg", "sqlite": "aiosqlite"}
"""The async driver a ``sqlalchemy+<dialect>://`` URL gets when it names none."""

URL_OPTIONS = frozenset({"table", "default_ttl", "sweep_interval", "operation_timeout"})
"""Query parameters that configure the storage; all others stay in the URL for the driver."""

# Error codes that mean "the transaction lost a race, run it again": deadlocks and lock-wait
# timeouts (MySQL/MariaDB), deadlock and serialization failures (PostgreSQL).
_MYSQL_RETRY = frozenset({1205, 1213})
_PG_RETRY = frozenset({"40P01", "40001"})

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    OSError,
    TimeoutError,
)


# A database that stops answering must become StorageUnavailable, not a bot that hangs.
_DRIVER_TIMEOUTS: dict[str, dict[str, Any]] = {
    "asyncpg": {"timeout": 10.0, "command_timeout": 10.0},
    "aiomysql": {"connect_timeout": 10},
}


def engine_defaults(url: URL, options: Mapping[str, Any]) -> dict[str, Any]:
    """``create_async_engine`` keywords for an engine the storage owns; ``options`` override them.

    ``pool_pre_ping`` replaces connections a restarted server closed before they fail an
    operation; the driver's timeouts (connect and, on asyncpg, each statement) are merged under
    any ``connect_args`` given.
    """
    merged: dict[str, Any] = {"pool_pre_ping": True, **options}
    timeouts = _DRIVER_TIMEOUTS.get(url.get_driver_name(), {})
    merged["connect_args"] = {**timeouts, **merged.get("connect_args", {})}
    return merged


def split_url(url: str) -> tuple[URL, dict[str, Any]]:
    """``sqlalchemy+<dialect>[+<driver>]://...`` as a SQLAlchemy URL and the storage's options."""
    scheme, sep, rest = url.partition("://")
    parts = scheme.lower().split("+")
    if not sep or parts[0] != "sqlalchemy" or len(parts) not in (2, 3):
        raise ConfigError(f"{redacted(url)!r}: expected sqlalchemy+<dialect>[+<driver>]://...")
    dialect = parts[1]
    driver = parts[2] if len(parts) == 3 else DEFAULT_DRIVERS.get(dialect)
    if driver is None:
        raise ConfigError(f"{redacted(url)!r}: name the async driver, as in sqlalchemy+{dialect}+<driver>://")
    location, _, query = rest.partition("?")
    ours: list[tuple[str, str]] = []
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        (ours if name in URL_OPTIONS else theirs).append((name, value))
    options = parse_query("?" + urlencode(ours), URL_OPTIONS)
    try:
        parsed = make_url(f"{dialect}+{driver}://{location}" + (f"?{urlencode(theirs)}" if theirs else ""))
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"{redacted(url)!r}: {exc}") from exc
    return parsed, options


def redacted(url: object) -> str:
    """A URL fit for an error message: the password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return redacted_url(str(url))


def check_engine(engine: AsyncEngine) -> None:
    """Refuse engines the storage cannot work on, with the fix in the message."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or "mode=memory" in database or url.query.get("mode") == "memory":
            # One connection shared by concurrent transactions: they would interleave.
            raise ConfigError(
                "in-memory SQLite is private to one connection; give a file path, or use MemoryStorage"
            )
    if engine.dialect.driver == "aiomysql":
        _check_aiomysql()


def _check_aiomysql() -> None:
    """aiomysql 0.3.2 cannot send ``bytes`` with PyMySQL 1.2.3+ (aio-libs/aiomysql#1080).

    Every key of the storage is bytes, so nothing would work. Probed by behaviour, not versions.
    """
    from aiomysql.connection import Connection

    try:
        Connection.escape(None, b"")  # the bytes path never touches self
    except TypeError as exc:
        raise ConfigError(
            "this aiomysql cannot send bytes parameters with the installed PyMySQL "
            f"(aio-libs/aiomysql#1080: {exc}); install 'PyMySQL<1.2'"
        ) from None
    except Exception:  # a fixed aiomysql that escapes differently: nothing to refuse
        pass


def is_retryable(exc: sa_exc.DBAPIError) -> bool:
    """Whether a failed transaction lost a race (deadlock, lock timeout, insert race) and may be rerun."""
    if isinstance(exc, sa_exc.IntegrityError):
        return True
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code in _PG_RETRY:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_RETRY


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database is unreachable or slow (retrying later may succeed)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _UNAVAILABLE)
