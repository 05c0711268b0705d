from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from botstate import SQLiteStorage
from botstate.testing import StorageConformance


class TestSQLiteStorage(StorageConformance):
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: SQLiteStorage(tmp_path / "state.db", **options)

    @pytest.fixture
    def sibling_storage(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: SQLiteStorage(tmp_path / "state.db", table="other", **options)
