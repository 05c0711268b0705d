"""What consumers of one storage share, whichever wrapper objects they were given."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from botstate import MemoryStorage
from botstate.wrappers import enhance_storage, namespace
from botstate.wrappers._base import shared_locks, underlying


def test_views_of_one_storage_are_seen_through() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    assert underlying(storage) == (storage, "")
    assert underlying(namespace(storage, "fsm:")) == (storage, "fsm:")
    assert underlying(enhance_storage(namespace(namespace(storage, "bot1:"), "fsm:"))) == (
        storage,
        "bot1:fsm:",
    )


def test_views_with_one_prefix_share_one_lock_table() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    table = shared_locks(namespace(storage, "fsm:"))
    assert shared_locks(namespace(storage, "fsm:")) is table  # a view made per call
    assert shared_locks(enhance_storage(namespace(storage, "fsm:"))) is table
    assert shared_locks(namespace(storage, "files:")) is not table
    assert shared_locks(namespace(MemoryStorage(), "fsm:")) is not table


def test_a_table_nobody_uses_is_dropped() -> None:
    # One view per chat or tenant must not leave a table behind for each.
    storage: MemoryStorage[Any] = MemoryStorage()
    tables = [weakref.ref(shared_locks(namespace(storage, f"tenant{i}:"))) for i in range(100)]
    gc.collect()
    assert all(table() is None for table in tables)
