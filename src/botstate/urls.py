"""``open_storage(url)``: one string in a config file picks the backend.

Built-in schemes are imported lazily, so naming ``redis://`` never imports redis-py until used.
Third-party adapters add schemes through the ``botstate.storages`` entry-point group; the entry
point names a class with a ``from_url(url, **options)`` classmethod, or a factory callable taking
the same arguments.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import BotstateError, ConfigError

__all__ = ["open_storage", "parse_query", "url_path", "known_schemes"]

_BUILTIN: Mapping[str, str] = {
    "memory": "botstate.storages.memory:MemoryStorage",
    "lru": "botstate.storages.lru:LruMemoryStorage",
    "sqlite": "botstate.storages.sqlite:SQLiteStorage",
    "file": "botstate.storages.file:FileStorage",
    "redis": "botstate.storages.redis:RedisStorage",
    "rediss": "botstate.storages.redis:RedisStorage",
    "redis+cluster": "botstate.storages.redis:RedisStorage",
    "rediss+cluster": "botstate.storages.redis:RedisStorage",
    "valkey": "botstate.storages.redis:RedisStorage",
    "valkeys": "botstate.storages.redis:RedisStorage",
    "valkey+cluster": "botstate.storages.redis:RedisStorage",
    "valkeys+cluster": "botstate.storages.redis:RedisStorage",
    "postgresql": "botstate.storages.postgres:PostgresStorage",
    "postgres": "botstate.storages.postgres:PostgresStorage",
    "sqlalchemy+mysql": "botstate.storages.sqlalchemy:SQLAlchemyStorage",
    "sqlalchemy+mariadb": "botstate.storages.sqlalchemy:SQLAlchemyStorage",
    "sqlalchemy+postgresql": "botstate.storages.sqlalchemy:SQLAlchemyStorage",
    "sqlalchemy+sqlite": "botstate.storages.sqlalchemy:SQLAlchemyStorage",
}

ENTRY_POINT_GROUP = "botstate.storages"

_NO_LOCATION = frozenset({"memory", "lru"})
"""Schemes whose storage lives in the process: a host or path in the URL would be ignored."""


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    """Every scheme ``open_storage`` accepts here, built-in and installed plugins."""
    return sorted({*_BUILTIN, *_plugins()})


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def open_storage(url: str, **options: Any) -> Any:
    """Create a storage from a URL such as ``sqlite:///bot.db`` or ``redis://localhost/0``.

    Keyword ``options`` are passed to the backend (and override options in the query string).
    The storage is not started: use ``async with open_storage(...) as storage:``.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = redacted(url) if isinstance(url, str) else url
        raise ConfigError(f"not a storage URL: {shown!r} (expected scheme://..., one of {known_schemes()})")
    refuse_unescaped_password(url)
    if any(name == "codec" for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)):
        raise ConfigError(
            f"{redacted(url)!r}: a codec is an object, not a URL option: pass open_storage(url, codec=...)"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("sqlalchemy+"):  # sqlalchemy+mysql+asyncmy:// names a driver as well
        scheme = "+".join(scheme.split("+")[:2])
    factory: Callable[..., Any]
    if scheme in _BUILTIN:
        try:
            factory = _load(_BUILTIN[scheme])
        except ImportError as exc:
            raise ConfigError(f"the {scheme}:// backend needs an optional dependency: {exc}") from exc
    else:
        plugin = _plugins().get(scheme)
        if plugin is None:
            raise ConfigError(
                f"unknown storage scheme {scheme!r}; known schemes: {', '.join(known_schemes())}"
            )
        factory = plugin.load()
    if scheme in _NO_LOCATION and url.split("://", 1)[1].split("?", 1)[0] not in ("", "/"):
        raise ConfigError(
            f"{redacted(url)!r}: {scheme}:// takes no host or path, only options ({scheme}://?...)"
        )
    from_url = getattr(factory, "from_url", None)
    try:
        return from_url(url, **options) if from_url is not None else factory(url, **options)
    except (ValueError, TypeError) as exc:  # an option's value, from the query or a keyword
        if (isinstance(exc, BotstateError) and not isinstance(exc, ConfigError)) or redacted(url) in str(exc):
            raise
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        given = [f"{name}={'***' if 'password' in name.lower() else value}" for name, value in query]
        given += [f"{name}={value!r}" for name, value in options.items()]
        where = redacted(url)
        raise ConfigError(f"invalid option in {where!r} ({', '.join(given) or 'none given'}): {exc}") from exc


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/@:?#]*:)([^?#]*)@")
"""``scheme://user:password@`` up to the last ``@`` before the query: passwords may hold ``@`` or
``/``. Only right after ``scheme://``: a path (``sqlite:///a:b@c.db``) holds no password."""


def _password(url: str) -> re.Match[str] | None:
    """Where ``url``'s password is, if it has one; ``host:5432/path@x`` is a port, not a password."""
    found = _USERINFO_PASSWORD.match(url)
    if found is None:
        return None
    before_slash, slash, _ = found.group(2).partition("/")
    return None if slash and before_slash.isdigit() else found


def redacted(url: str) -> str:
    """``url`` fit for an error message or a log: its password (``user:***@``, ``?password=***``)
    hidden."""
    found = _password(url)
    if found is not None:
        url = found.group(1) + "***@" + url[found.end() :]
    return re.sub(r"([?&][^=&#]*password[^=&#]*=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


def refuse_unescaped_password(url: str) -> None:
    """A password holding ``/`` splits the URL elsewhere than meant, and the client's error would
    quote a piece of it: refuse it, saying how to write it, before any client sees it."""
    found = _password(url)
    if found is not None and "/" in found.group(2):
        raise ConfigError(f"{redacted(url)!r}: the password holds '/'; write it as %2F in a URL")


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null", ""):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_query(
    url: str, allowed: set[str] | frozenset[str], text: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Options from a URL's query string; unknown names refused.

    Numbers and booleans are converted, except for the ``text`` options, which stay as written:
    ``?prefix=2024`` is the prefix ``"2024"``, and ``?prefix=`` the empty one.
    """
    options = {
        name: value if name in text else _coerce(value)
        for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True)
    }
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} in {redacted(url)!r}; allowed: {sorted(allowed)}")
    return options


def url_path(url: str) -> str:
    """The filesystem path of ``scheme:///relative`` or ``scheme:////absolute`` URLs."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if rest.startswith("/"):
        rest = rest[1:]
    elif rest:  # scheme://host/... : only an empty host is a path URL
        raise ConfigError(f"{url!r}: expected {url.split('://')[0]}:///relative or :////absolute path")
    path = unquote(rest)
    if not path:
        raise ConfigError(f"{url!r} names no path")
    return path
