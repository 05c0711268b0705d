from __future__ import annotations

from typing import Any

import pytest

from botstate.errors import ConfigError
from botstate.sessions import (
    Sessions,
    UpdateInfo,
    chat_key,
    session_keys,
    topic_key,
    user_in_chat_key,
    user_key,
)
from wrappers.wrapper_backends import Minimal, any_storage

__all__ = ["any_storage"]  # the fixture, imported for pytest


def test_keys_per_chat_user_member_and_topic() -> None:
    update = UpdateInfo(bot_id=1, chat_id=-100, user_id=7, thread_id=3)
    assert chat_key(update) == "1:chat:-100"
    assert user_key(update) == "1:user:7"
    assert user_in_chat_key(update) == "1:chat:-100:user:7"
    assert topic_key(update) == "1:chat:-100:topic:3"


def test_a_private_chat_and_its_user_have_different_keys() -> None:
    update = UpdateInfo(bot_id=1, chat_id=7, user_id=7)
    assert chat_key(update) != user_key(update)


def test_two_bots_sharing_a_storage_get_different_keys() -> None:
    assert chat_key(UpdateInfo(bot_id=1, chat_id=5)) != chat_key(UpdateInfo(bot_id=2, chat_id=5))


def test_business_connections_are_a_separate_space() -> None:
    plain = UpdateInfo(bot_id=1, chat_id=5, user_id=6)
    business = UpdateInfo(bot_id=1, chat_id=5, user_id=6, business_connection_id="bc1")
    for key in (chat_key, user_key, user_in_chat_key):
        assert key(plain) != key(business)
    assert chat_key(business) == "1:biz:bc1:chat:5"


@pytest.mark.parametrize(
    ("update", "other"),
    [
        (UpdateInfo(bot_id=1, chat_id="5:user:7"), UpdateInfo(bot_id=1, chat_id=5, user_id=7)),
        (
            UpdateInfo(bot_id="1:biz:x", chat_id=5),
            UpdateInfo(bot_id=1, business_connection_id="x", chat_id=5),
        ),
        (
            UpdateInfo(bot_id=1, business_connection_id="x:chat:5", user_id=7),
            UpdateInfo(bot_id=1, business_connection_id="x", chat_id=5, user_id=7),
        ),
    ],
)
def test_str_ids_holding_separators_never_make_two_keys_meet(update: UpdateInfo, other: UpdateInfo) -> None:
    kinds = (chat_key, user_key, user_in_chat_key, topic_key)
    made = {key(update) for key in kinds} | {key(other) for key in kinds}
    assert len(made - {None}) == sum(key(u) is not None for key in kinds for u in (update, other))


def test_plain_ids_keep_their_keys() -> None:
    # Keys already stored stay where they are: ints and separator-free strs are not escaped.
    assert chat_key(UpdateInfo(bot_id=1, chat_id=-100123)) == "1:chat:-100123"
    assert chat_key(UpdateInfo(chat_id="@channel")) == "chat:@channel"


@pytest.mark.parametrize(
    ("function", "update"),
    [
        (chat_key, UpdateInfo(bot_id=1, user_id=7)),
        (user_key, UpdateInfo(bot_id=1, chat_id=7)),
        (user_in_chat_key, UpdateInfo(bot_id=1, chat_id=7)),
        (user_in_chat_key, UpdateInfo(bot_id=1, user_id=7)),
        (topic_key, UpdateInfo(bot_id=1, chat_id=7, user_id=7)),
    ],
)
def test_missing_ids_mean_no_session(function: object, update: UpdateInfo) -> None:
    assert function(update) is None  # type: ignore[operator]


def test_update_info_is_frozen_and_hashable() -> None:
    update = UpdateInfo(chat_id=1)
    with pytest.raises(AttributeError):
        update.chat_id = 2  # type: ignore[misc]
    assert {update: 1}[UpdateInfo(chat_id=1)] == 1
    assert chat_key(update) == "chat:1"


async def test_session_keys_lists_one_kind_of_sessions_without_the_prefix(any_storage: Any) -> None:
    carts = Sessions(any_storage, name="cart[*]", initial=list)
    decoy = Sessions(any_storage, name="cartX", initial=list)  # what an unescaped name would match
    for sessions, chat in ((carts, 1), (carts, 2), (decoy, 3)):
        async with sessions.open(UpdateInfo(bot_id=1, chat_id=chat)) as session:
            session.data.append("tea")
    async with carts.open(UpdateInfo(bot_id=2, chat_id=9)) as session:
        session.data.append("milk")
    assert sorted([key async for key in session_keys(carts)]) == ["1:chat:1", "1:chat:2", "2:chat:9"]
    assert sorted([key async for key in session_keys(carts, "1:*")]) == ["1:chat:1", "1:chat:2"]
    async for key in session_keys(carts, "2:*"):  # each key opens its session, as a broadcast would
        async with carts.open(key) as session:
            assert session.data == ["milk"]


async def test_session_keys_needs_a_storage_that_lists_keys() -> None:
    with pytest.raises(ConfigError, match="keys"):
        [key async for key in session_keys(Sessions(Minimal()))]  # type: ignore[arg-type]
