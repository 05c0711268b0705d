from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from botstate import MemoryStorage
from botstate.errors import CorruptValueError
from botstate.filecache import FileIdCache
from botstate.wrappers import namespace
from wrappers.wrapper_backends import Minimal, any_storage

__all__ = ["any_storage"]  # the fixture, imported for pytest


class Uploader:
    def __init__(self, file_id: str = "AgAC-file-id") -> None:
        self.calls = 0
        self.file_id = file_id

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0.02)  # long enough for every concurrent caller to arrive
        return self.file_id


async def test_concurrent_calls_for_one_key_upload_once(any_storage: Any) -> None:
    cache = FileIdCache(any_storage)
    upload = Uploader()
    ids = await asyncio.gather(*(cache.get_or_upload("photo.jpg", upload) for _ in range(10)))
    assert ids == ["AgAC-file-id"] * 10
    assert upload.calls == 1
    assert await cache.get("photo.jpg") == "AgAC-file-id"


async def test_remember_get_forget(any_storage: Any) -> None:
    cache = FileIdCache(any_storage)
    assert await cache.get("sha256:ab") is None
    await cache.remember("sha256:ab", "id-1")
    assert await cache.get("sha256:ab") == "id-1"
    assert await cache.forget("sha256:ab") is True
    assert await cache.forget("sha256:ab") is False
    upload = Uploader("id-2")
    assert await cache.get_or_upload("sha256:ab", upload) == "id-2"  # a forgotten id is re-uploaded
    assert upload.calls == 1


async def test_a_failed_upload_remembers_nothing_and_the_next_caller_retries() -> None:
    cache = FileIdCache(MemoryStorage())

    async def failing() -> str:
        raise ConnectionError("telegram unreachable")

    with pytest.raises(ConnectionError):
        await cache.get_or_upload("k", failing)
    assert await cache.get("k") is None
    assert await cache.get_or_upload("k", Uploader("id")) == "id"


async def test_without_storage_locks_uploads_are_coalesced_in_process() -> None:
    cache = FileIdCache(Minimal())  # type: ignore[arg-type]
    upload = Uploader()
    await asyncio.gather(*(cache.get_or_upload("k", upload) for _ in range(5)))
    assert upload.calls == 1


async def test_uploads_are_coalesced_through_a_view_made_per_call() -> None:
    storage = Minimal()
    upload = Uploader()
    await asyncio.gather(
        *(FileIdCache(namespace(storage, "files:")).get_or_upload("k", upload) for _ in range(5))
    )  # type: ignore[arg-type]
    assert upload.calls == 1


async def test_ttl_forgets_ids() -> None:
    cache = FileIdCache(MemoryStorage(), ttl=0.1)
    await cache.remember("k", "id")
    await asyncio.sleep(0.25)
    assert await cache.get("k") is None


async def test_bad_values_are_refused() -> None:
    cache = FileIdCache(MemoryStorage({"k": 5}))
    with pytest.raises(CorruptValueError) as info:
        await cache.get("k")
    assert info.value.key == "k"
    with pytest.raises(ValueError):
        await cache.remember("k", "")

    async def no_id() -> str:
        return None  # type: ignore[return-value]

    with pytest.raises(ValueError):
        await cache.get_or_upload("new", no_id)
    with pytest.raises(ValueError):
        FileIdCache(MemoryStorage(), ttl=-1)


async def test_two_connections_to_one_file_upload_once(tmp_path: Path) -> None:
    from botstate.storages.sqlite import SQLiteStorage

    upload = Uploader()
    async with SQLiteStorage(tmp_path / "s.db") as one, SQLiteStorage(tmp_path / "s.db") as two:
        caches = [FileIdCache(one), FileIdCache(two)]
        ids = await asyncio.gather(*(caches[i % 2].get_or_upload("k", upload) for i in range(6)))
    assert set(ids) == {"AgAC-file-id"}
    assert upload.calls == 1
