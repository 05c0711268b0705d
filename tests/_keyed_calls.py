"""Every storage method that takes a key, as calls to make with one key: for tests of bad keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def keyed_calls(storage: Any, key: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Calls of ``storage`` with ``key`` by method name; batches mix it with the valid key ``"a"``."""
    return {
        "get": lambda: storage.get(key),
        "set": lambda: storage.set(key, 1),
        "has": lambda: storage.has(key),
        "delete": lambda: storage.delete(key),
        "touch": lambda: storage.touch(key, 10),
        "increment": lambda: storage.increment(key),
        "compare_and_set": lambda: storage.compare_and_set(key, 1, expected=None),
        "get_many": lambda: storage.get_many(["a", key]),
        "set_many": lambda: storage.set_many({"a": 1, key: 2}),
    }
