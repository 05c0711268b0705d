"""Several named sessions per update follow the same I/O rules, part by part."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from botstate import MemoryStorage
from botstate.errors import ConfigError
from botstate.sessions import MultiSessions, NoSessionError, SessionError, Sessions, UpdateInfo, user_key
from botstate.wrappers import namespace
from wrappers.wrapper_backends import Minimal

UPDATE = UpdateInfo(bot_id=1, chat_id=42, user_id=7)


def build(settings: Any, cart: Any, *, lazy_cart: bool = False) -> MultiSessions:
    return MultiSessions(
        settings=Sessions(settings, name="settings", key=user_key, initial=lambda: {"lang": "en"}),
        cart=Sessions(cart, name="cart", initial=list, lazy=lazy_cart),
    )


async def test_each_part_has_its_own_storage_key_and_initial_value(counting: Any) -> None:
    other = type(counting)()
    multi = build(counting, other)
    async with multi.open(UPDATE) as session:
        assert session["settings"].data == {"lang": "en"}
        session.cart.data.append("tea")
    assert counting.calls == {"get": 1}  # settings: read, untouched initial not stored
    assert other.calls == {"get": 1, "set": 1}
    assert await other.inner.get("cart:1:chat:42") == ["tea"]
    assert await counting.inner.has("settings:1:user:7") is False


async def test_lazy_part_untouched_does_no_io(counting: Any) -> None:
    other = type(counting)()
    multi = build(counting, other, lazy_cart=True)
    async with multi.open(UPDATE) as session:
        session.settings.data["lang"] = "de"
    assert other.total == 0
    assert counting.calls == {"get": 1, "set": 1}
    async with multi.open(UPDATE) as session:
        await session.load("cart")
        assert session.cart.data == []
        assert session.settings.data == {"lang": "de"}
    assert other.calls == {"get": 1}


async def test_a_body_that_raises_writes_no_part(counting: Any) -> None:
    multi = build(counting, counting)

    async def handler() -> None:
        async with multi.open(UPDATE) as session:
            session.settings.data["lang"] = "fr"
            session.cart.data.append("tea")
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        await handler()
    assert "set" not in counting.calls


async def test_parts_with_no_key_have_no_session_while_others_work(counting: Any) -> None:
    multi = build(counting, counting)
    async with multi.open(UpdateInfo(bot_id=1, chat_id=42)) as session:  # no user
        assert session.settings.key is None
        session.cart.data.append("tea")
    assert counting.calls == {"get": 1, "set": 1}


def test_unknown_part_is_an_attribute_error(counting: Any) -> None:
    session = build(counting, counting).open(UPDATE)
    with pytest.raises(AttributeError, match="parts"):
        _ = session.wallet
    assert list(session) == ["settings", "cart"]


# -- configurations that cannot work are refused ------------------------------------------------


def test_the_same_sessions_object_twice_is_refused(counting: Any) -> None:
    # It would wait for its own lock on the first update.
    shared = Sessions(counting, name="shared")
    with pytest.raises(ConfigError, match=r"'a' and 'b'.*same Sessions object"):
        MultiSessions(a=shared, b=shared)


def test_two_parts_on_the_same_keys_of_one_storage_are_refused(counting: Any) -> None:
    with pytest.raises(ConfigError, match="same keys"):
        MultiSessions(a=Sessions(counting, name="s"), b=Sessions(counting, name="s"))
    inner: MemoryStorage[Any] = MemoryStorage()
    with pytest.raises(ConfigError, match="same keys"):  # the same place, reached through views
        MultiSessions(
            a=Sessions(namespace(inner, "bot:"), name="s"), b=Sessions(namespace(inner, "bot:s:"), name="")
        )
    # A different name, key function or storage is a different place.
    MultiSessions(a=Sessions(counting, name="a"), b=Sessions(counting, name="b"))
    MultiSessions(settings=Sessions(counting, name="s", key=user_key), cart=Sessions(counting, name="s"))
    MultiSessions(a=Sessions(counting, name="s"), b=Sessions(type(counting)(), name="s"))


async def test_two_key_functions_agreeing_on_a_shared_name_are_refused_when_opened() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    cart: Sessions[list[str]] = Sessions(storage, name="s", initial=list, key=str, lock_timeout=1)
    multi = MultiSessions(settings=Sessions(storage, name="s", initial=dict, key=lambda u: str(u)), cart=cart)
    with pytest.raises(ConfigError, match="same stored key"):
        async with multi.open(42):
            pass
    assert len(storage) == 0
    async with cart.open(42) as session:  # nothing was left locked (LockError after 1 s otherwise)
        session.data.append("apple")
    assert await storage.get("s:42") == ["apple"]


async def test_loading_an_unknown_part_names_it(counting: Any) -> None:
    multi = build(counting, counting, lazy_cart=True)
    async with multi.open(UPDATE) as session:
        with pytest.raises(KeyError, match="wallet"):
            await session.load("cart", "wallet")
        assert session.cart.loaded is False  # nothing loaded by a call that could not be right


async def test_load_takes_lazy_parts_in_declaration_order() -> None:
    order: list[str] = []

    class Recording(Minimal):
        async def get(self, key: str, default: Any = None) -> Any:
            order.append(key.split(":")[0])
            return await super().get(key, default)

    storage = Recording()
    multi = MultiSessions(a=Sessions(storage, name="a", lazy=True), b=Sessions(storage, name="b", lazy=True))
    async with multi.open(UPDATE) as session:
        await session.load("b", "a")
    assert order == ["a", "b"]


# -- the I/O rules, part by part -------------------------------------------------------------------


async def test_load_without_names_skips_parts_this_update_has_no_key_for() -> None:
    # A channel post: no user, so no per-user settings; the lazy per-chat cart still loads.
    storage: MemoryStorage[Any] = MemoryStorage()
    multi = build(storage, storage, lazy_cart=True)
    async with multi.open(UpdateInfo(bot_id=1, chat_id=-100)) as sessions:
        await sessions.load()
        assert sessions.cart.data == []
        assert sessions.settings.key is None
        with pytest.raises(NoSessionError):
            await sessions.load("settings")  # named explicitly: that part has no session


async def test_entering_a_multi_session_twice_leaves_it_open() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    opened = build(storage, storage).open(UPDATE)
    async with opened as sessions:
        with pytest.raises(SessionError, match="only once"):
            await opened.__aenter__()
        sessions.cart.data.append("still open")  # not closed by the refused second entry
    assert await storage.get("cart:1:chat:42") == ["still open"]


async def test_replacing_a_parts_whole_value_is_written(counting: Any) -> None:
    multi = build(counting, counting)
    async with multi.open(UPDATE) as session:
        session.cart.data = ["tea", "milk"]
        session["settings"].data = {"lang": "uk"}
    assert counting.calls == {"get": 2, "set": 2}
    async with multi.open(UPDATE) as session:
        assert session.cart.data == ["tea", "milk"]
        assert session.settings.data == {"lang": "uk"}


async def test_assigning_none_deletes_only_that_part(counting: Any) -> None:
    multi = build(counting, counting)
    async with multi.open(UPDATE) as session:
        session.cart.data.append("tea")
        session.settings.data["lang"] = "de"
    async with multi.open(UPDATE) as session:
        session.cart.data = None
    assert await counting.inner.has("cart:1:chat:42") is False
    assert await counting.inner.get("settings:1:user:7") == {"lang": "de"}


async def test_a_ttl_part_read_and_unchanged_is_touched_once(counting: Any) -> None:
    multi = MultiSessions(
        settings=Sessions(counting, name="settings", key=user_key, ttl=60),
        cart=Sessions(counting, name="cart", initial=list),
    )
    await counting.inner.set("settings:1:user:7", {"lang": "en"})
    await counting.inner.set("cart:1:chat:42", ["tea"])
    async with multi.open(UPDATE) as session:
        assert session.settings.data == {"lang": "en"}
        assert session.cart.data == ["tea"]
    assert counting.calls == {"get": 2, "touch": 1}


class BothReadsAtOnce(Minimal):
    """Each ``get`` waits until ``expected`` reads are in flight together: read one after another,
    the first would wait for ever (bounded here, so such a failure is quick)."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.in_flight = 0
        self.all_in = asyncio.Event()

    async def get(self, key: str, default: Any = None) -> Any:
        self.in_flight += 1
        if self.in_flight == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=5)
        return await super().get(key, default)


async def test_eager_parts_are_read_concurrently() -> None:
    storage = BothReadsAtOnce(expected=2)
    multi = build(storage, storage)
    async with multi.open(UPDATE) as session:
        assert session.cart.data == []
    assert storage.all_in.is_set()


async def test_a_body_that_raises_writes_deletes_and_touches_no_part(counting: Any) -> None:
    multi = MultiSessions(
        settings=Sessions(counting, name="settings", key=user_key, ttl=60),
        cart=Sessions(counting, name="cart", initial=list),
        note=Sessions(counting, name="note"),
    )
    await counting.inner.set("settings:1:user:7", {"lang": "en"})
    await counting.inner.set("note:1:chat:42", "keep")

    async def handler() -> None:
        async with multi.open(UPDATE) as session:
            session.cart.data.append("tea")
            session.note.data = None
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        await handler()
    assert counting.calls == {"get": 3}
    assert await counting.inner.get("note:1:chat:42") == "keep"
