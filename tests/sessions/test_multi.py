"""Several named sessions per update follow the same I/O rules, part by part."""

from __future__ import annotations

from typing import Any

import pytest

from botstate.sessions import MultiSessions, Sessions, UpdateInfo, user_key

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
