"""The generics catch misuse: files in tests/typing must pass, or fail exactly where marked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _services import require_module

mypy_api = require_module("mypy.api")

HERE = Path(__file__).parent / "typing"
MARK = re.compile(r"#\s*E:\s*([\w-]+)")


def _mypy(path: Path) -> tuple[list[tuple[int, str]], str]:
    out, _, _ = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "--hide-error-context", str(path)]
    )
    errors = []
    for line in out.splitlines():
        match = re.match(rf".*{re.escape(path.name)}:(\d+): error: .*\[([\w-]+)\]$", line)
        if match:
            errors.append((int(match.group(1)), match.group(2)))
    return errors, out


@pytest.mark.parametrize("path", sorted(HERE.glob("pass_*.py")), ids=lambda p: p.name)
def test_correct_use_type_checks(path: Path) -> None:
    errors, out = _mypy(path)
    assert errors == []
    assert "Success: no issues found" in out, out


@pytest.mark.parametrize("path", sorted(HERE.glob("fail_*.py")), ids=lambda p: p.name)
def test_misuse_is_caught_exactly_where_marked(path: Path) -> None:
    expected = sorted(
        (number, match.group(1))
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARK.search(text))
    )
    assert expected, "a fail_ file must mark its expected errors"
    errors, out = _mypy(path)
    assert sorted(errors) == expected, out
