"""The session layer: per-update state on any storage, framework-neutral.

See docs/sessions.md. ``Sessions`` opens one session per update key; ``MultiSessions`` several
named ones; key functions map an ``UpdateInfo`` to a key.
"""

from __future__ import annotations

from .isolation import IsolationMode
from .keys import KeyFunction, UpdateInfo, chat_key, session_keys, topic_key, user_in_chat_key, user_key
from .multi import MultiSession, MultiSessions
from .session import (
    NoSessionError,
    Session,
    SessionError,
    SessionNotLoadedError,
    Sessions,
    SessionStats,
)

__all__ = [
    "IsolationMode",
    "KeyFunction",
    "MultiSession",
    "MultiSessions",
    "NoSessionError",
    "Session",
    "SessionError",
    "SessionNotLoadedError",
    "SessionStats",
    "Sessions",
    "UpdateInfo",
    "chat_key",
    "session_keys",
    "topic_key",
    "user_in_chat_key",
    "user_key",
]
