"""Remember Telegram ``file_id``s, so a file is uploaded once and then re-sent by id.

Keys are whatever identifies the content for the caller: a path, a URL, a content hash.
``get_or_upload`` takes the key's lock around the check-upload-remember sequence, so concurrent
calls for one key (in this process, or in every process sharing a storage with distributed locks)
upload once and the others reuse the id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._ttl import TTL, ttl_to_ms
from .contract import Storage
from .errors import CorruptValueError
from .wrappers._base import backend_name, key_lock

__all__ = ["FileIdCache"]


class FileIdCache:
    """``file_id``s by key. Share a storage with other uses through ``namespace(storage, "files:")``.

    ``ttl`` (optional) forgets ids after a while; ``lease`` bounds how long a crashed uploader can
    hold a distributed lock (an upload taking longer may be repeated by another process).
    """

    __slots__ = ("_lease", "_storage", "_ttl")

    def __init__(self, storage: Storage[Any], *, ttl: TTL | None = None, lease: float = 120.0) -> None:
        ttl_to_ms(ttl)  # a bad ttl fails here, not at the first upload
        if not lease > 0:
            raise ValueError("lease must be positive seconds")
        self._storage = storage
        self._ttl = ttl
        self._lease = lease

    async def get(self, key: str) -> str | None:
        """The remembered ``file_id``, or None."""
        file_id = await self._storage.get(key)
        if file_id is None or type(file_id) is str:
            return file_id
        raise CorruptValueError(
            "a file_id cache entry is not a str", key=key, backend=backend_name(self._storage)
        )

    async def remember(self, key: str, file_id: str) -> None:
        """Store ``file_id`` for ``key`` (e.g. from the message Telegram returned after an upload)."""
        if type(file_id) is not str or not file_id:
            raise ValueError(f"a file_id is a non-empty str, got {file_id!r}")
        await self._storage.set(key, file_id, ttl=self._ttl)

    async def forget(self, key: str) -> bool:
        """Drop ``key``'s id, e.g. after Telegram rejected it; True when one was remembered."""
        return await self._storage.delete(key)

    async def get_or_upload(self, key: str, upload: Callable[[], Awaitable[str]]) -> str:
        """The remembered id, or the one ``upload()`` returns (remembered for next time).

        If ``upload`` raises, nothing is remembered and the error propagates; a caller waiting
        for the same key then tries the upload itself.
        """
        file_id = await self.get(key)
        if file_id is not None:
            return file_id
        async with key_lock(self._storage, key, lease=self._lease):
            file_id = await self.get(key)  # uploaded by whoever held the lock before us
            if file_id is None:
                file_id = await upload()
                await self.remember(key, file_id)
            return file_id

    def __repr__(self) -> str:
        return f"FileIdCache({self._storage!r})"
