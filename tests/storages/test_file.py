from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from botstate.storages.file import FileStorage
from botstate.testing import StorageConformance


class TestFileStorage(StorageConformance):
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: FileStorage(tmp_path / "db", **options)
