"""Session keys: which updates share a session.

Integrations describe an update with :class:`UpdateInfo` (a few ids, nothing framework-specific),
and a key function turns it into the session key, or ``None`` when the update has no such session
(an inline query has no chat, a channel post has no user). Keys carry the bot id, so several bots
can share one storage, and the business connection, whose chats are a separate space.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from .._glob import escape
from ..contract import is_iterable_storage
from ..errors import ConfigError

if TYPE_CHECKING:
    from .session import Sessions

__all__ = [
    "KeyFunction",
    "UpdateInfo",
    "chat_key",
    "session_keys",
    "topic_key",
    "user_in_chat_key",
    "user_key",
]

Id: TypeAlias = "int | str"

KeyFunction: TypeAlias = "Callable[[Any], str | Awaitable[str | None] | None]"
"""Maps an update to its session key (``None``: no session). May be sync or async."""


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    """What a session key can be built from; every id is optional.

    ``thread_id`` is the forum topic (message thread); ``business_connection_id`` is set for
    updates a bot handles on behalf of a business account.
    """

    bot_id: Id | None = None
    chat_id: Id | None = None
    user_id: Id | None = None
    thread_id: Id | None = None
    business_connection_id: Id | None = None


def _id(value: Id) -> str:
    """An id as one part of a key: an int as it is; a str with ``\\`` and ``:`` escaped, so that no
    id (a business connection's, say) can pass for several parts and make two keys meet."""
    text = str(value)
    if type(value) is not int and (":" in text or "\\" in text):
        return text.replace("\\", "\\\\").replace(":", "\\:")
    return text


def _scope(update: UpdateInfo) -> str:
    """The key prefix that keeps bots and business connections apart."""
    scope = "" if update.bot_id is None else f"{_id(update.bot_id)}:"
    if update.business_connection_id is not None:
        scope += f"biz:{_id(update.business_connection_id)}:"
    return scope


def chat_key(update: UpdateInfo) -> str | None:
    """One session per chat (the default): everyone in a group shares it."""
    if update.chat_id is None:
        return None
    return f"{_scope(update)}chat:{_id(update.chat_id)}"


def user_key(update: UpdateInfo) -> str | None:
    """One session per user, following them across chats (settings, language)."""
    if update.user_id is None:
        return None
    return f"{_scope(update)}user:{_id(update.user_id)}"


def user_in_chat_key(update: UpdateInfo) -> str | None:
    """One session per user in each chat (a form a member fills in inside a group)."""
    if update.chat_id is None or update.user_id is None:
        return None
    return f"{_scope(update)}chat:{_id(update.chat_id)}:user:{_id(update.user_id)}"


def topic_key(update: UpdateInfo) -> str | None:
    """One session per forum topic. ``None`` outside topics: combine with ``or chat_key(update)``."""
    if update.chat_id is None or update.thread_id is None:
        return None
    return f"{_scope(update)}chat:{_id(update.chat_id)}:topic:{_id(update.thread_id)}"


BUILT_IN_KEYS: tuple[KeyFunction, ...] = (chat_key, user_key, user_in_chat_key, topic_key)
"""The key functions above: they read an ``UpdateInfo`` (or anything with its attributes)."""


async def session_keys(sessions: Sessions[Any], pattern: str = "*") -> AsyncIterator[str]:
    """The session keys stored by ``sessions`` (without its name prefix), e.g. for a broadcast.

    ``pattern`` is a glob over session keys (``"1:chat:*"``: bot 1's chats); order is unspecified.
    Each key opens with ``sessions.open(key)``. Needs a storage with ``keys()``.
    """
    storage = sessions.storage
    if not is_iterable_storage(storage):
        raise ConfigError(f"listing sessions needs a storage with keys(); {sessions.backend} has none")
    skip = len(sessions.prefix)
    async for key in storage.keys(escape(sessions.prefix) + pattern):
        yield key[skip:]
