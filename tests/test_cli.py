"""``botstate demo`` end to end: a real process, a real SQLite file, state carried between runs."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from botstate.cli import main

SMALL = ["--updates", "400", "--chats", "20", "--concurrency", "16", "--seed", "7"]


def demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "botstate.cli", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in output:\n{text}"
    return int(found.group(1).replace(",", ""))


def test_demo_state_survives_a_second_run(tmp_path: Path) -> None:
    first = demo(tmp_path, *SMALL)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no earlier run found" in first.stdout
    assert "FAIL" not in first.stdout
    assert (tmp_path / "botstate-demo.db").exists()
    stored = number(r"([\d,]+) messages = 0 carried over", first.stdout)
    assert number(r"([\d,]+) never loaded \(lazy\)", first.stdout) > 0
    assert number(r"([\d,]+) read but unchanged, not written", first.stdout) > 0
    assert number(r"([\d,]+) updates arrived while another update of their chat", first.stdout) > 0

    second = demo(tmp_path, *SMALL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "state left by 1 earlier run(s)" in second.stdout
    assert f"ok   {stored:,} messages stored, {stored:,} acknowledged" in second.stdout
    assert number(r"[\d,]+ messages = ([\d,]+) carried over", second.stdout) == stored
    assert "state saved (2 run(s) so far)" in second.stdout

    reset = demo(tmp_path, *SMALL, "--reset")
    assert reset.returncode == 0
    assert "no earlier run found" in reset.stdout


def new_chats_stored(path: Path) -> bool:
    """Whether the demo's file holds a chat above the fifth (read as another process would)."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        keys = conn.execute("SELECT key FROM botstate WHERE key LIKE 'demo-chat:%'").fetchall()
    finally:
        conn.close()
    return any(int(key.rsplit(":", 1)[1]) > 5 for (key,) in keys)


def test_a_run_interrupted_with_more_chats_leaves_later_runs_checking_right(tmp_path: Path) -> None:
    small = ["--updates", "200", "--chats", "5", "--seed", "3"]
    assert demo(tmp_path, *small).returncode == 0
    # A run over 50 chats, interrupted (Ctrl-C) once it has written chats the earlier run had not.
    command = [sys.executable, "-m", "botstate.cli", "demo", "--updates", "200000", "--chats", "50"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL) as big:
        deadline = time.monotonic() + 60
        while not new_chats_stored(tmp_path / "botstate-demo.db"):
            assert big.poll() is None, "the run ended before it was interrupted"
            assert time.monotonic() < deadline, "no chat beyond the fifth was stored"
            time.sleep(0.05)
        big.send_signal(signal.SIGINT)
        assert big.wait(timeout=60) == 130
    # Later runs, over fewer chats and then all of them, find what complete runs acknowledged.
    for run in (small, ["--updates", "200", "--chats", "50", "--seed", "4"]):
        result = demo(tmp_path, *run)
        assert result.returncode == 0, result.stdout
        assert "FAIL" not in result.stdout


def test_path_is_a_file_name_whatever_its_characters(tmp_path: Path) -> None:
    result = demo(tmp_path, "--updates", "20", "--chats", "2", "--path", "a%41b?c d.db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".db"] == ["a%41b?c d.db"]


def test_path_and_storage_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--storage", "memory://", "--path", "x.db"])
    assert exited.value.code == 2
    assert "give --storage or --path" in capsys.readouterr().err


def table_rows(text: str) -> list[tuple[int, ...]]:
    """The per-chat table: ``(chat, earlier, sent, expected, stored)`` for each row."""
    table = text.split("per chat", 1)[1].split("checks:", 1)[0]
    return [
        tuple(int(n.replace(",", "")) for n in row.split()[:5])
        for row in table.splitlines()[2:]
        if row.strip()
    ]


def test_demo_shows_expected_and_stored_counters_per_chat(tmp_path: Path) -> None:
    demo(tmp_path, *SMALL)
    second = demo(tmp_path, *SMALL)
    rows = table_rows(second.stdout)
    assert 1 <= len(rows) <= 5
    for chat, earlier, sent, expected, stored in rows:
        assert earlier + sent == expected == stored, (chat, second.stdout)
        assert earlier > 0  # the first run's count, carried over
    sent_counts = [row[2] for row in rows]
    assert sent_counts == sorted(sent_counts, reverse=True)  # the busiest chats of this run


def test_demo_exits_non_zero_when_a_check_fails(tmp_path: Path) -> None:
    # Without isolation, concurrent updates of one chat overwrite each other: the counters miss some.
    failed = demo(tmp_path, "--updates", "200", "--chats", "1", "--concurrency", "16", "--isolation", "none")
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout
    assert "checks FAILED" in failed.stdout
    [(_, earlier, sent, expected, stored)] = table_rows(failed.stdout)
    assert stored < expected == earlier + sent
    assert "lost updates" in failed.stdout


def test_the_console_script_entry_point_runs_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the installed `botstate` command calls, found the way the launcher finds it.
    [script] = entry_points(group="console_scripts", name="botstate")
    entry = script.load()
    monkeypatch.chdir(tmp_path)
    assert entry(["demo", "--updates", "50", "--chats", "3", "--seed", "1"]) == 0
    assert "state saved (1 run(s) so far)" in capsys.readouterr().out
    assert (tmp_path / "botstate-demo.db").exists()


def test_progress_bar_goes_to_stderr_when_asked(tmp_path: Path) -> None:
    result = demo(tmp_path, "--updates", "100", "--chats", "5", "--progress")
    assert result.returncode == 0
    assert "100/100" in result.stderr
    assert "100/100" not in result.stdout


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--updates", "0"])
    assert exited.value.code == 2
    assert "at least 1" in capsys.readouterr().err
