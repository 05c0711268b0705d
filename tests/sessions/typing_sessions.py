"""Must type-check under mypy --strict: what ``session.data`` is, with and without ``initial``."""

from __future__ import annotations

from typing import Any, assert_type

from botstate import MemoryStorage
from botstate.sessions import MultiSessions, Session, Sessions, UpdateInfo, user_key


async def typed_by_initial() -> None:
    carts = Sessions(MemoryStorage(), initial=lambda: {"items": 0})
    assert_type(carts, Sessions[dict[str, int]])
    async with carts.open(UpdateInfo(chat_id=1)) as session:
        assert_type(session, Session[dict[str, int]])
        assert_type(session.data, dict[str, int])
        assert_type(await session.load(), dict[str, int])
        session.data = {"items": 1}
        session.data = None  # deletes


async def optional_without_initial() -> None:
    forms: Sessions[dict[str, str] | None] = Sessions(MemoryStorage(), key=user_key)
    async with forms.open(UpdateInfo(user_id=1)) as session:
        assert_type(session.data, dict[str, str] | None)
    async with Sessions(MemoryStorage()).open("k") as untyped:
        assert_type(untyped.data, Any)


async def multi() -> None:
    parts = MultiSessions(cart=Sessions(MemoryStorage(), initial=list))
    async with parts.open(UpdateInfo(chat_id=1)) as session:
        assert_type(session["cart"], Session[Any])
