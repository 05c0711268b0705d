"""The session API's types: ``data`` is what ``initial`` builds, checked by mypy --strict."""

from __future__ import annotations

from pathlib import Path

from _services import require_module

mypy_api = require_module("mypy.api")


def test_session_types_check() -> None:
    path = Path(__file__).with_name("typing_sessions.py")
    out, _, _ = mypy_api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", str(path)])
    assert "Success: no issues found" in out, out
