"""botstate: one async storage contract for chat bots, and everything built on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._ttl import TTL
from .codecs import JSON, BytesCodec, Codec, JsonCodec, ModelCodec, PickleCodec
from .contract import (
    AtomicStorage,
    IterableStorage,
    Lock,
    LockingStorage,
    Storage,
    TtlStorage,
    is_atomic_storage,
    is_iterable_storage,
    is_locking_storage,
    is_ttl_storage,
)
from .errors import (
    BotstateError,
    ConfigError,
    CorruptValueError,
    LockError,
    SerializationError,
    StorageError,
    StorageUnavailable,
    WrongTypeError,
)
from .filecache import FileIdCache
from .fsm import StateContext
from .ratelimit import RateLimiter, RateLimitResult
from .sessions import (
    MultiSession,
    MultiSessions,
    NoSessionError,
    Session,
    SessionError,
    SessionNotLoadedError,
    Sessions,
    SessionStats,
    UpdateInfo,
    chat_key,
    session_keys,
    topic_key,
    user_in_chat_key,
    user_key,
)
from .storages.lru import LruMemoryStorage
from .storages.memory import MemoryStorage
from .urls import open_storage
from .wrappers import EnhancedStorage, Namespace, enhance_storage, namespace

if TYPE_CHECKING:
    from .storages.file import FileStorage
    from .storages.postgres import PostgresStorage
    from .storages.redis import RedisStorage
    from .storages.sqlalchemy import SQLAlchemyStorage
    from .storages.sqlite import SQLiteStorage

__version__ = "0.1.0"

# Backends whose modules are imported on first use: importing botstate never imports a client
# library (redis, asyncpg, sqlalchemy) nor opens anything.
_LAZY = {
    "SQLiteStorage": "botstate.storages.sqlite",
    "FileStorage": "botstate.storages.file",
    "RedisStorage": "botstate.storages.redis",
    "PostgresStorage": "botstate.storages.postgres",
    "SQLAlchemyStorage": "botstate.storages.sqlalchemy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'botstate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "JSON",
    "TTL",
    "AtomicStorage",
    "BotstateError",
    "BytesCodec",
    "Codec",
    "ConfigError",
    "CorruptValueError",
    "EnhancedStorage",
    "FileIdCache",
    "FileStorage",
    "IterableStorage",
    "JsonCodec",
    "Lock",
    "LockError",
    "LockingStorage",
    "LruMemoryStorage",
    "MemoryStorage",
    "ModelCodec",
    "MultiSession",
    "MultiSessions",
    "Namespace",
    "NoSessionError",
    "PickleCodec",
    "PostgresStorage",
    "RateLimitResult",
    "RateLimiter",
    "RedisStorage",
    "SQLAlchemyStorage",
    "SQLiteStorage",
    "SerializationError",
    "Session",
    "SessionError",
    "SessionNotLoadedError",
    "SessionStats",
    "Sessions",
    "StateContext",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "TtlStorage",
    "UpdateInfo",
    "WrongTypeError",
    "chat_key",
    "enhance_storage",
    "is_atomic_storage",
    "is_iterable_storage",
    "is_locking_storage",
    "is_ttl_storage",
    "namespace",
    "open_storage",
    "session_keys",
    "topic_key",
    "user_in_chat_key",
    "user_key",
    "__version__",
]
