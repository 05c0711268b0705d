"""Importing botstate stays cheap: optional client libraries load only with the backend using them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OPTIONAL = ["redis", "asyncpg", "sqlalchemy", "pydantic", "aiomysql", "aiosqlite"]

SCRIPT = """
import json, sys
import botstate, botstate.codecs, botstate.sessions, botstate.wrappers, botstate.fsm, botstate.ratelimit
from botstate import open_storage
open_storage("memory://")
open_storage("sqlite:///state.db")
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {optional!r})))
"""


def _loaded_optional(script: str, tmp_path: Path) -> list[str]:
    """The optional libraries a fresh interpreter has loaded after running ``script``."""
    src = Path(__file__).resolve().parents[1] / "src"
    result = subprocess.run(
        [sys.executable, "-c", script.format(optional=set(OPTIONAL))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_botstate_imports_no_optional_client_library(tmp_path: Path) -> None:
    assert _loaded_optional(SCRIPT, tmp_path) == []


def test_the_check_sees_an_optional_library_once_its_backend_is_used(tmp_path: Path) -> None:
    """The probe above is not blind: naming redis:// and connecting nothing still loads redis-py."""
    script = SCRIPT.replace('open_storage("memory://")', 'open_storage("redis://127.0.0.1:6379/0")')
    assert "redis" in _loaded_optional(script, tmp_path)
