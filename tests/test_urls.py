"""open_storage(url): one string in a config file picks and configures the backend."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from _services import require_module
from botstate import ConfigError, LruMemoryStorage, MemoryStorage, open_storage
from botstate.urls import known_schemes, parse_query, redacted, refuse_unescaped_password, url_path

# -- built-in schemes ---------------------------------------------------------------------------------


async def test_memory_url_gives_a_memory_storage() -> None:
    storage = open_storage("memory://")
    assert type(storage) is MemoryStorage
    async with storage:
        await storage.set("k", 1)
        assert await storage.get("k") == 1


def test_lru_url_with_a_query_option() -> None:
    storage = open_storage("lru://?max=5")
    assert type(storage) is LruMemoryStorage
    assert storage.max == 5


def test_scheme_is_case_insensitive() -> None:
    assert type(open_storage("MEMORY://")) is MemoryStorage


def test_query_options_are_coerced() -> None:
    storage = open_storage("memory://?default_ttl=1.5&sweep_interval=2")
    assert storage.default_ttl_ms == 1500
    assert storage.sweep_interval == 2


def test_keyword_options_override_the_query() -> None:
    storage = open_storage("lru://?max=5", max=7)
    assert storage.max == 7


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1),
        ("-3", -3),
        ("1.5", 1.5),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("none", None),
        ("null", None),
        ("", None),
        ("text", "text"),
        ("a%20b", "a b"),
    ],
)
def test_parse_query_coerces_values(raw: str, value: Any) -> None:
    got = parse_query(f"x://host/?opt={raw}", {"opt"})
    assert got == {"opt": value}
    assert type(got["opt"]) is type(value)


def test_unknown_option_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="colour"):
        open_storage("memory://?colour=blue")


@pytest.mark.parametrize(
    ("url", "option"),
    [
        ("lru://?max=0", "max=0"),
        ("lru://?max=1e3", "max=1e3"),
        ("lru://?max=many", "max=many"),
        ("memory://?default_ttl=-1", "default_ttl=-1"),
        ("memory://?default_ttl=soon", "default_ttl=soon"),
        ("lru://?max=3&sweep_interval=0", "sweep_interval=0"),
    ],
)
def test_a_bad_option_value_is_a_config_error_naming_url_and_option(url: str, option: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert isinstance(info.value, ValueError)  # what code catching ValueError already expects
    assert repr(url) in str(info.value)
    assert option in str(info.value)


def test_a_bad_keyword_option_is_a_config_error_too() -> None:
    with pytest.raises(ConfigError, match="max=0"):
        open_storage("lru://", max=0)


@pytest.mark.parametrize(
    "url",
    [
        "memory://?codec=json",
        "lru://?max=3&codec=bytes",
        "sqlite:///bot.db?codec=json",
        "file:///tmp/botstate-never-made?codec=pickle",
        "redis://127.0.0.1:6379/0?codec=json",
        "postgresql://127.0.0.1/test?codec=json",
        "sqlalchemy+sqlite:///bot.db?codec=json",
    ],
)
def test_a_codec_in_a_url_is_a_config_error_saying_how_to_give_one(url: str) -> None:
    # It would reach the backend as the text "json" (memory, SQLite: an AttributeError on first
    # use) or the database driver as a setting it does not know.
    with pytest.raises(ConfigError, match=r"not a URL option: pass open_storage\(url, codec=...\)"):
        open_storage(url)


@pytest.mark.parametrize(
    "url", ["memory://somehost/path", "memory://somehost", "lru://x/?max=3", "lru:///db"]
)
def test_in_process_schemes_refuse_a_host_or_path(url: str) -> None:
    with pytest.raises(ConfigError, match="takes no host or path"):
        open_storage(url)


@pytest.mark.parametrize("url", ["memory://", "memory:///", "lru://?max=3", "lru:///?max=3"])
def test_in_process_schemes_take_an_empty_location(url: str) -> None:
    assert isinstance(open_storage(url), MemoryStorage)


def test_unknown_scheme_is_a_config_error_listing_known_schemes() -> None:
    with pytest.raises(ConfigError) as info:
        open_storage("nosuchdb://localhost/0")
    message = str(info.value)
    assert "'nosuchdb'" in message
    for scheme in ("memory", "redis", "sqlite", "file"):
        assert scheme in message


@pytest.mark.parametrize("url", ["memory", "", "localhost:6379", None, 42])
def test_not_a_url_is_a_config_error(url: Any) -> None:
    with pytest.raises(ConfigError, match="not a storage URL"):
        open_storage(url)


def test_missing_optional_dependency_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botstate.storages.redis", None)  # its import now fails
    with pytest.raises(ConfigError, match="optional dependency"):
        open_storage("redis://127.0.0.1:6379/0")


# -- url_path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///bot.db", "bot.db"),
        ("sqlite:///data/bot.db", "data/bot.db"),
        ("sqlite:////var/lib/bot.db", "/var/lib/bot.db"),
        ("file:///state?fsync=false", "state"),
        ("file:///with%20space/%3F", "with space/?"),
    ],
)
def test_url_path(url: str, path: str) -> None:
    assert url_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://host/bot.db", "file://localhost/state", "sqlite:///", "file://"])
def test_url_path_refuses_hosts_and_empty_paths(url: str) -> None:
    with pytest.raises(ConfigError):
        url_path(url)


# -- third-party schemes ----------------------------------------------------------------------------------

PLUGIN = """
class PluginStorage:
    def __init__(self, url, **options):
        self.url = url
        self.options = options

    @classmethod
    def from_url(cls, url, **options):
        return cls(url, via="from_url", **options)


def make(url, **options):
    return ("factory", url, options)
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution declaring two schemes in the ``botstate.storages`` group."""
    (tmp_path / "botstate_testplugin.py").write_text(PLUGIN)
    info = tmp_path / "botstate_testplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: botstate-testplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[botstate.storages]\n"
        "plugdb = botstate_testplugin:PluginStorage\n"
        "plugfactory = botstate_testplugin:make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "botstate_testplugin", raising=False)


@pytest.mark.usefixtures("plugin")
def test_entry_point_scheme_with_from_url() -> None:
    storage = open_storage("plugdb://somewhere/0?x=1", timeout=3)
    assert type(storage).__name__ == "PluginStorage"
    assert storage.url == "plugdb://somewhere/0?x=1"
    assert storage.options == {"via": "from_url", "timeout": 3}


@pytest.mark.usefixtures("plugin")
def test_entry_point_scheme_with_a_factory_callable() -> None:
    assert open_storage("plugfactory://x", a=1) == ("factory", "plugfactory://x", {"a": 1})


@pytest.mark.usefixtures("plugin")
def test_known_schemes_include_plugins() -> None:
    schemes = known_schemes()
    assert {"plugdb", "plugfactory", "memory", "file"} <= set(schemes)
    assert schemes == sorted(schemes)


def test_plugin_schemes_are_unknown_once_uninstalled() -> None:
    with pytest.raises(ConfigError):
        open_storage("plugdb://somewhere/0")


def test_sqlalchemy_scheme_may_name_a_driver() -> None:
    require_module("sqlalchemy")
    from botstate.storages.sqlalchemy import SQLAlchemyStorage

    storage = open_storage("sqlalchemy+sqlite+aiosqlite:///driver-named.db")
    assert isinstance(storage, SQLAlchemyStorage)


def test_text_options_stay_as_written(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/t.db?table=on&default_ttl=5")
    assert storage.table == "on"
    assert storage.default_ttl_ms == 5000
    require_module("redis")
    assert open_storage("redis://127.0.0.1:6379/0?prefix=2024").prefix == "2024"
    assert open_storage("redis://127.0.0.1:6379/0?prefix=").prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///a:b/c@d.db",
        "sqlite:////data//bots:2024/x@y.db",
        "file:///dir:1/f@x",
        "redis://user@127.0.0.1:6379/0",
        "postgresql://127.0.0.1:5432/db@x",
    ],
)
def test_colons_and_at_signs_outside_a_password_are_no_password(url: str) -> None:
    refuse_unescaped_password(url)  # no error
    assert "***" not in redacted(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:s3cret@127.0.0.1:5432/test?table=x_locks",
        "redis://:s3cret@127.0.0.1:6379/0?scan_count=0",
        "redis://bob:s3cret@127.0.0.1:6379/0?scan_count=-1",
        "memory://bob:s3cret@host/",
        "sqlite:///bot.db?password=s3cret&nonsense=1",
        "sqlalchemy+postgresql+asyncpg://bob:s3cret@127.0.0.1/test?table=x_locks",
        "postgresql://bob:s3@cret@127.0.0.1:5432/test?table=x_locks",
        "redis://u:s3cret/pw@127.0.0.1:6379/0?bogus=1",
        "postgresql://bob:s3cret/pw@127.0.0.1:5432/test",
    ],
)
def test_errors_never_show_a_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_storage(url)
    assert "s3cret" not in str(raised.value)
    assert "cret" not in str(raised.value)
    assert "***" in str(raised.value) or "password" not in url
