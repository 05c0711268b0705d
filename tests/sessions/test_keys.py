from __future__ import annotations

import pytest

from botstate.sessions import UpdateInfo, chat_key, topic_key, user_in_chat_key, user_key


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
