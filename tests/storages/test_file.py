from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import stat
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from botstate import ConfigError, CorruptValueError, LockError, open_storage
from botstate.codecs import JSON, BytesCodec, PickleCodec
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


def _entry_of(storage: FileStorage[Any], key: str) -> Path:
    name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return storage.directory / f"{name}.entry"


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


# Keys that would break a reader looking for the value by searching the file for a field name.
TRICKY_KEYS = [
    "chat:1",
    '","value":1}',
    '"expires_at":null,"value":',
    '"',
    "\\",
    'a\\"',
    '\\\\"',
    "\\u0041",
    "line\nbreak\ttab\x00nul\x1f",
    "\ud800",
    "\udfff\ud800",
    "😀 ключ \u2028",
    *SPECIAL_KEYS,
]
STORED = {"n": 1e16, "f": [0.1, -0.0, 2**64 - 1, -(2**63)], "s": 'é😀"\\\n\u2028', "none": None}


@pytest.mark.parametrize("ttl", [None, 3600], ids=["no-ttl", "ttl"])
async def test_entry_files_are_json_documents(storage: FileStorage[Any], ttl: int | None) -> None:
    before = time.time_ns() // 1_000_000
    for key in TRICKY_KEYS:
        await storage.set(key, STORED, ttl=ttl)
    after = time.time_ns() // 1_000_000 + 1
    for key in TRICKY_KEYS:
        raw = _entry_of(storage, key).read_bytes()
        document = json.loads(raw)
        assert list(document) == ["key", "expires_at", "value"]
        assert document["key"] == key
        assert document["value"] == STORED
        if ttl is None:
            assert document["expires_at"] is None
        else:
            assert before + ttl * 1000 <= document["expires_at"] <= after + ttl * 1000
        assert b'"value":' + JSON.encode(STORED) + b"}" in raw  # the codec's bytes, not re-encoded
        assert await storage._call(storage._files.live, key) == JSON.encode(STORED)
        assert await storage.get(key) == STORED
        assert await storage.compare_and_set(key, "next", expected=STORED, ttl=ttl) is True
    assert sorted(await _collect(storage.keys())) == sorted(TRICKY_KEYS)


@pytest.mark.parametrize(
    ("codec", "value"),
    [(BytesCodec(), b'\x00\xff"}\n,"value":'), (BytesCodec(), b""), (PickleCodec(), {"a": (1, 2)})],
    ids=["bytes", "empty-bytes", "pickle"],
)
async def test_other_codecs_store_base64(tmp_path: Path, codec: Any, value: Any) -> None:
    storage = FileStorage(tmp_path / "db", codec=codec)
    await storage.set('","value":', value)
    document = json.loads(_entry_of(storage, '","value":').read_bytes())
    assert list(document) == ["key", "expires_at", "value_b64"]
    assert base64.b64decode(document["value_b64"]) == codec.encode(value)
    assert await storage.get('","value":') == value
    assert await storage.compare_and_set('","value":', value, expected=value) is True


async def test_touch_keeps_the_form_another_codec_wrote(tmp_path: Path) -> None:
    raw = FileStorage(tmp_path / "db", codec=BytesCodec())
    await raw.set("blob", b"\xff not json")
    assert await FileStorage(tmp_path / "db").touch("blob", 60) is True  # a JSON-codec storage
    document = json.loads(_entry_of(raw, "blob").read_bytes())
    assert base64.b64decode(document["value_b64"]) == b"\xff not json"
    assert document["expires_at"] is not None
    assert await raw.get("blob") == b"\xff not json"


async def test_entries_of_the_old_binary_format_are_refused_clearly(storage: FileStorage[Any]) -> None:
    await storage.set("k", 1)
    _entry_of(storage, "k").write_bytes(struct.pack(">4sqI", b"BSF1", 0, 1) + b"k" + b"1")
    with pytest.raises(CorruptValueError, match="binary format") as info:
        await storage.get("k")
    assert info.value.key == "k"
    await storage.set("k", 2)  # repairs it
    assert json.loads(_entry_of(storage, "k").read_bytes())["value"] == 2


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


GOOD = b'{"key":"k","expires_at":null,"value":1}\n'


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"garbage",
        GOOD[:-1],
        GOOD[:20],
        b'{"key":"k\\"',
        b'{"key":"k","expires_at":-5,"value":1}\n',
        b'{"key":"k","expires_at":null,"value":}\n',
        b'{"key":"k","expires_at":null,"value_b64":"}\n',
        b'{"key":"k","expires_at":null,"value_b64":"not base64!"}\n',
        b'{"key":"\xff","expires_at":null,"value":1}\n',
        b'{"key": "k", "expires_at": null, "value": 1}',
        b'["k", null, 1]',
        b"BSF1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xffk",
    ],
    ids=[
        "empty",
        "garbage",
        "no-newline",
        "truncated",
        "unterminated-key",
        "negative-expiry",
        "empty-value",
        "empty-base64",
        "bad-base64",
        "key-not-utf8",
        "reformatted",
        "array",
        "old-format",
    ],
)
async def test_unreadable_entry_is_corrupt_not_missing(storage: FileStorage[Any], damage: bytes) -> None:
    await storage.set("k", 1)
    await storage.set("other", 2)
    entry = _entry_of(storage, "k")
    assert entry.read_bytes() == GOOD
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
    _entry_of(storage, "a").replace(_entry_of(storage, "b"))  # b's file now holds a's entry
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


# Writes values of changing size to five keys and to "last", printing each acknowledged i. With a
# second argument, the write of that i stops just before its rename, to be killed there.
CRASH_CHILD = """
import asyncio, os, sys, time
from botstate.storages.file import FileStorage

def stuck(src, dst):
    print("renaming", flush=True)
    time.sleep(60)

async def main():
    storage = FileStorage(sys.argv[1])
    for i in range(1, 100_000):
        if i == int(sys.argv[2]):
            os.replace = stuck
        value = {"n": i, "pad": "x" * (i * 997 % 20_000)}
        await storage.set(f"k{i % 5}", value)
        await storage.set("last", value)
        print(i, flush=True)

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


@pytest.mark.parametrize("stop_at", [0, 30], ids=["anywhere", "before-a-rename"])
async def test_a_writer_killed_mid_write_leaves_whole_entries(tmp_path: Path, stop_at: int) -> None:
    directory = tmp_path / "db"
    child = await _child(CRASH_CHILD, str(directory), str(stop_at))
    acked = 0
    try:
        assert child.stdout is not None
        for _ in range(stop_at or 40):
            line = (await asyncio.wait_for(child.stdout.readline(), 30)).strip()
            assert line, "the writer died on its own"
            if line == b"renaming":
                break
            acked = int(line)
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        _kill(child)
    assert acked == (stop_at - 1 if stop_at else 40)
    temps = [path for path in directory.iterdir() if path.name.endswith(".tmp")]
    if stop_at:
        assert temps  # the write it died in

    storage = FileStorage(directory)
    for path in directory.glob("*.entry"):
        assert list(json.loads(path.read_bytes())) == ["key", "expires_at", "value"]
    entries = dict(await _collect(storage.entries()))  # any damaged entry raises here
    assert set(entries) == {"last", "k0", "k1", "k2", "k3", "k4"}
    for key, value in entries.items():
        assert value["pad"] == "x" * (value["n"] * 997 % 20_000), key  # one write, whole
        if key != "last":
            assert value["n"] % 5 == int(key[1:])
    assert entries["last"]["n"] >= acked
    if stop_at:  # the interrupted write of k0 never became visible
        assert entries["k0"]["n"] == stop_at - 5
        assert entries["last"]["n"] == acked

    assert await storage.sweep() == 0
    assert [path for path in directory.iterdir() if path.name.endswith(".tmp")] == []
    assert dict(await _collect(storage.entries())) == entries
    await storage.set("last", {"n": 0})
    assert await storage.get("last") == {"n": 0}
