from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from botstate import ConfigError, CorruptValueError, LockError, open_storage
from botstate.storages.file import FileStorage
from botstate.testing import StorageConformance
from botstate.testing.conformance import SPECIAL_KEYS

ENTRY_NAME = re.compile(r"[0-9a-f]{64}\.entry")


class TestFileStorage(StorageConformance):
    full_contract = True
    persistent = True
    distributed_locks = True

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> Callable[..., Any]:
        return lambda **options: FileStorage(tmp_path / "db", **options)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[FileStorage[Any]]:
    async with FileStorage(tmp_path / "db") as storage:
        yield storage


def _tree(root: Path) -> set[Path]:
    return {Path(dirpath, name) for dirpath, dirs, files in os.walk(root) for name in [*dirs, *files]}


def _entry_files(storage: FileStorage[Any]) -> list[Path]:
    return sorted(p for p in storage.directory.iterdir() if ENTRY_NAME.fullmatch(p.name))


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


# -- what lands on disk ----------------------------------------------------------------------------


async def test_hostile_keys_create_nothing_outside_the_directory(tmp_path: Path) -> None:
    hostile = [*SPECIAL_KEYS, "/etc/passwd", "..\\..\\x", "~root", "C:\\x", "a/../../b", "\ud800", ".locks"]
    storage = FileStorage(tmp_path / "outer" / "db")
    for i, key in enumerate(hostile):
        await storage.set(key, i)
        async with storage.lock(key, lease=5):
            pass
    created = _tree(tmp_path)
    assert all(path.is_relative_to(storage.directory) for path in created - {tmp_path / "outer"})
    names = [path.name for path in _entry_files(storage)]
    assert len(names) == len(hostile)
    assert len({name.lower() for name in names}) == len(hostile)  # case-insensitive filesystems too
    assert sorted(await _collect(storage.keys())) == sorted(hostile)
    for i, key in enumerate(hostile):
        assert await storage.get(key) == i


async def test_lock_files_do_not_grow_with_the_number_of_keys(storage: FileStorage[Any]) -> None:
    await storage.set_many({f"k{i}": i for i in range(600)})
    for i in range(20):
        await storage.increment(f"n{i}")
        async with storage.lock(f"chat:{i}", lease=5):
            pass
    files = {p.name for p in (storage.directory / ".locks").iterdir()}
    assert "guard" in files
    stripes = files - {"guard"}
    assert all(re.fullmatch(r"[0-9a-f]{2}\.write", name) for name in stripes), stripes
    assert len(stripes) <= 256


async def test_files_are_private_to_the_user(storage: FileStorage[Any]) -> None:
    await storage.set("secret", "token")
    (entry,) = _entry_files(storage)
    for path in (entry, storage.directory, storage.directory / ".locks"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


async def test_clear_removes_only_entries(storage: FileStorage[Any]) -> None:
    (storage.directory / "notes.txt").write_text("mine")
    (storage.directory / "sub").mkdir()
    await storage.set_many({"a": 1, "b": 2})
    assert await storage.clear() == 2
    assert (storage.directory / "notes.txt").read_text() == "mine"
    assert (storage.directory / "sub").is_dir()
    assert await _collect(storage.keys()) == []


# -- crashes and damage ------------------------------------------------------------------------------


async def test_temp_file_left_by_a_crash_is_ignored_and_swept(storage: FileStorage[Any]) -> None:
    await storage.set("k", {"v": 1})
    (entry,) = _entry_files(storage)
    stale = storage.directory / f"{entry.stem}.0123456789ab.tmp"
    stale.write_bytes(b"half a write")
    orphan = storage.directory / f"{'0' * 64}.ba9876543210.tmp"
    orphan.write_bytes(b"")
    assert await _collect(storage.keys()) == ["k"]
    assert await storage.get("k") == {"v": 1}
    assert await storage.sweep() == 0  # temporary files are not entries
    assert not stale.exists()
    assert not orphan.exists()
    assert await storage.get("k") == {"v": 1}


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage", b"BSF1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xffk"],
    ids=["empty", "garbage", "key-length-past-the-end"],
)
async def test_unreadable_header_is_corrupt_not_missing(storage: FileStorage[Any], damage: bytes) -> None:
    await storage.set("k", 1)
    await storage.set("other", 2)
    entry = next(p for p in _entry_files(storage) if p.read_bytes().endswith(b"k1"))
    entry.write_bytes(damage)
    for call in (storage.get("k"), storage.has("k"), storage.increment("k"), storage.touch("k")):
        with pytest.raises(CorruptValueError) as info:
            await call
        assert info.value.key == "k"
        assert info.value.backend == "file"
    with pytest.raises(CorruptValueError):
        await _collect(storage.keys())
    assert await storage.sweep() == 0
    assert entry.read_bytes() == damage  # kept for inspection
    assert await storage.delete("k") is True
    assert await storage.get("other") == 2
    await storage.set("k", "repaired")
    assert await storage.get("k") == "repaired"


async def test_entry_file_under_another_keys_name_is_corrupt(storage: FileStorage[Any]) -> None:
    await storage.set("a", 1)
    await storage.set("b", 2)
    files = {p.read_bytes()[-1:]: p for p in _entry_files(storage)}
    files[b"1"].replace(files[b"2"])  # b's file now holds a's entry
    with pytest.raises(CorruptValueError) as info:
        await storage.get("b")
    assert info.value.key == "b"
    with pytest.raises(CorruptValueError):
        await _collect(storage.keys())


# -- several processes ----------------------------------------------------------------------------------

INCREMENT_CHILD = """
import asyncio, sys
from botstate.storages.file import FileStorage

async def main():
    storage = FileStorage(sys.argv[1], fsync=False)
    for _ in range(int(sys.argv[2])):
        await storage.increment("hits")

asyncio.run(main())
"""

LOCK_CHILD = """
import asyncio, sys
from botstate.storages.file import FileStorage

async def main():
    async with FileStorage(sys.argv[1]).lock("chat", lease=30) as held:
        print(held.token, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def _child(code: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)


async def test_increments_from_several_processes_total_exactly(storage: FileStorage[Any]) -> None:
    children = [await _child(INCREMENT_CHILD, str(storage.directory), "100") for _ in range(3)]
    try:
        for _ in range(100):
            await storage.increment("hits")
        codes = [await asyncio.wait_for(child.wait(), 60) for child in children]
    finally:
        for child in children:
            _kill(child)
    assert codes == [0, 0, 0]
    assert await storage.get("hits") == 400


async def test_lock_of_a_killed_process_is_free_at_once(storage: FileStorage[Any]) -> None:
    child = await _child(LOCK_CHILD, str(storage.directory))
    try:
        assert child.stdout is not None
        child_token = int(await asyncio.wait_for(child.stdout.readline(), 30))
        with pytest.raises(LockError):
            async with storage.lock("chat", timeout=0.2):
                pass
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        _kill(child)
    # The child's lease (30 s) is far from over: only the OS releasing its flock lets this through.
    async with storage.lock("chat", lease=5, timeout=5) as held:
        assert held.token > child_token


# -- leases and tokens ---------------------------------------------------------------------------------------


async def test_expired_lease_is_taken_over_and_the_old_holder_learns_it(storage: FileStorage[Any]) -> None:
    stale = storage.lock("chat", lease=0.1)
    await stale.__aenter__()
    async with storage.lock("chat", lease=5, timeout=5) as fresh:
        assert fresh.token > stale.token
        with pytest.raises(LockError):
            await stale.extend()
        with pytest.raises(LockError):
            await stale.__aexit__(None, None, None)
        await fresh.extend(10)
    async with storage.lock("chat", lease=5, timeout=1):
        pass


async def test_extend_keeps_a_lock_past_its_first_lease(storage: FileStorage[Any]) -> None:
    async with storage.lock("chat", lease=1) as held:
        for _ in range(3):  # 1.5 s in all: only the renewals keep it
            await asyncio.sleep(0.5)
            await held.extend()
        with pytest.raises(LockError):
            async with storage.lock("chat", timeout=0.1):
                pass


async def test_tokens_keep_growing_across_instances(tmp_path: Path) -> None:
    async with FileStorage(tmp_path / "db").lock("a") as first:
        pass
    async with FileStorage(tmp_path / "db").lock("b") as second:
        assert second.token > first.token


@pytest.mark.parametrize("lease", [0, -1, float("nan"), float("inf")])
def test_invalid_lease_is_a_value_error(tmp_path: Path, lease: float) -> None:
    with pytest.raises(ValueError):
        FileStorage(tmp_path).lock("k", lease=lease)


# -- URLs --------------------------------------------------------------------------------------------


def test_from_url_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_storage("file:///state/bot?fsync=false&default_ttl=60")
    assert isinstance(relative, FileStorage)
    assert relative.directory == tmp_path / "state" / "bot"
    assert relative.default_ttl_ms == 60_000
    assert "fsync=False" in repr(relative)
    absolute = FileStorage.from_url(f"file:///{tmp_path}/abs", sweep_interval=5)
    assert absolute.directory == tmp_path / "abs"
    assert absolute.sweep_interval == 5


@pytest.mark.parametrize("url", ["file://host/dir", "file:///", "file:///dir?unknown=1", "sqlite:///dir"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        FileStorage.from_url(url)


async def test_health_is_false_when_the_directory_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    assert await FileStorage(tmp_path / "file" / "db").health() is False
    assert await FileStorage(tmp_path / "db").health() is True


async def test_a_storage_used_before_start_creates_its_directory(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "later" / "db")
    assert await storage.get("k") is None
    assert await storage.clear() == 0
    await storage.set("k", 1)
    assert await storage.get("k") == 1
