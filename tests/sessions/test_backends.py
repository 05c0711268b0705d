"""Sessions on each real backend: state survives a restart, expiry slides, nothing extra stored."""

from __future__ import annotations

import asyncio
from typing import Any

from botstate import open_storage
from botstate.sessions import Sessions, UpdateInfo

CHAT = UpdateInfo(bot_id=1, chat_id=5)


async def test_state_survives_a_new_storage_instance(storage: Any, url: str, unique: str) -> None:
    sessions = Sessions(storage, name=unique, initial=lambda: {"items": []})
    async with sessions.open(CHAT) as session:
        session.data["items"].append("tea")
    async with open_storage(url) as reopened:
        again = Sessions(reopened, name=unique, initial=lambda: {"items": []})
        async with again.open(CHAT) as session:
            assert session.data == {"items": ["tea"]}


async def test_untouched_new_sessions_and_deleted_ones_leave_no_entry(storage: Any, unique: str) -> None:
    sessions = Sessions(storage, name=unique, initial=dict)
    async with sessions.open(CHAT) as session:
        assert session.data == {}
    assert await storage.has(f"{unique}:1:chat:5") is False
    async with sessions.open(CHAT) as session:
        session.data = {"step": 1}
    assert await storage.has(f"{unique}:1:chat:5") is True  # the key checked above is the real one
    async with sessions.open(CHAT) as session:
        session.data = None
    assert await storage.has(f"{unique}:1:chat:5") is False


async def test_reading_a_session_renews_its_ttl(storage: Any, unique: str) -> None:
    sessions = Sessions(storage, name=unique, initial=int, ttl=0.8)
    async with sessions.open(CHAT) as session:
        session.data = 1
    for _ in range(2):  # 1.0 s in all, more than the ttl: only the touches keep it
        await asyncio.sleep(0.5)
        async with sessions.open(CHAT) as session:
            assert session.data == 1
    await asyncio.sleep(1.2)
    async with sessions.open(CHAT) as session:
        assert session.data == 0
