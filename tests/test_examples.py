"""The examples the README points to keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_quickstart_state_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    script = str(EXAMPLES / "quickstart.py")
    first = subprocess.run([sys.executable, script, str(db)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "run #1" in first.stdout
    second = subprocess.run([sys.executable, script, str(db)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "run #2" in second.stdout
    assert "chat:303: {'messages': 6" in second.stdout
    assert "state survived" in second.stdout
