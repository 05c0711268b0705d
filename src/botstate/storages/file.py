"""Storage in a directory: one file per key, written atomically, shared safely between processes.

Layout of ``directory``::

    <sha256(key)>.entry          one entry: a JSON object {"key", "expires_at", "value"}
    <sha256(key)>.<random>.tmp   a write in progress (or left by a crash; ``sweep`` removes it)
    .locks/<2 hex digits>.write  one of 256 write-lock stripes, held (flock) while an entry changes
    .locks/<sha256(key)>.lock    held (flock) by the owner of ``lock(key)``; holds token and lease
    .locks/guard                 serialises lock hand-overs; holds the fencing-token counter

File names are the hex SHA-256 of the key's UTF-8 bytes: 70 lower-case ASCII characters for any
key, so no key can escape the directory, exceed the 255-byte name limit or collide with another
key on a case-insensitive filesystem. The key itself is stored in the file, which is how
``keys()`` returns it and how a file that does not belong to its name is detected.

An entry is one JSON document, so the directory can be read with any JSON tool::

    {"key":"chat:1","expires_at":1767225600000,"value":{"step":"menu"}}

``expires_at`` is wall-clock milliseconds or null. With ``JsonCodec`` the codec's bytes are the
value, embedded as they are; any other codec's bytes (pickle, raw bytes, models) are stored as
``"value_b64"`` instead. Reads hand the codec back exactly the bytes it wrote (compare-and-set
compares them), so the writer fixes field order and spacing and the reader cuts the value out
without parsing it.

Writes go to a temporary file in the same directory, are fsynced, ``os.replace``-d over the entry
and the directory is fsynced: a reader sees the old or the new entry, never a mix, and a crash
leaves at worst a stray temporary file. Every change of a key (``set``, ``delete``,
``compare_and_set``, ``increment``, ``touch``) runs under the ``flock`` of the key's write-lock
stripe, so read-modify-write is atomic across processes. All blocking I/O runs in worker threads
(``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import fcntl
import hashlib
import json
import os
import secrets
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from json.encoder import encode_basestring, encode_basestring_ascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar

from .._glob import compile_glob, is_literal, literal_prefix
from .._locks import KeyedLocks
from .._ttl import TTL, monotonic_ms, now_ms
from ..codecs import Codec, JsonCodec
from ..errors import ConfigError, CorruptValueError, StorageError
from ..urls import url_path
from ._base import ScanningStorage, V, add_to_counter, bad_key
from ._lease import Busy, LeaseLock

__all__ = ["FileLock", "FileStorage"]

R = TypeVar("R")

# An entry file is one JSON object, its fields always written in this order and spacing, so a
# reader finds the value's bytes without parsing it: the key (a JSON string, so it holds no
# unescaped quote), the expiry (wall-clock ms or null), then the value last, up to the final "}".
_KEY = b'{"key":'
_KEY_OPEN = _KEY + b'"'
# The key's closing quote and the next field: as every quote inside a JSON string follows a
# backslash, the first match is where the key ends, whatever the key holds.
_KEY_END = b'","expires_at":'
_EXPIRES = _KEY_END[1:]
_VALUE = b',"value":'  # the JSON codec's bytes, verbatim
_VALUE_B64 = b',"value_b64":"'  # any other codec's bytes, in base64
_END = b"}\n"
_B64_END = b'"' + _END
# Lock file: fencing token, lease end in monotonic ms (the monotonic clock is system-wide, so processes
# agree on it and a clock change cannot end a lease early).
_RECORD = struct.Struct(">qq")
_ENTRY = ".entry"
_TMP = ".tmp"
_LOCKS = ".locks"
_HEX_LEN = 64
_SCAN_CHUNK = 256  # entry files read per worker-thread call while iterating
# Errors after which the same call may succeed later; everything else is a plain StorageError.
_TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EMFILE, errno.ENFILE, errno.EAGAIN})


class _Unreadable(Exception):
    """An entry file that is not in the layout ``_pack`` writes, or holds another key than its name says."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# (key, expires at in wall-clock ms or 0 for never, payload, whether stored as JSON, not base64).
# A plain tuple: a NamedTuple would cost a read more than the rest of the parsing.
_Entry = tuple[str, int, bytes, bool]


class _Held(NamedTuple):
    fd: int
    dev: int
    ino: int
    token: int


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")  # any str is a valid key, lone surrogates included


def _name(key: str) -> str:
    return hashlib.sha256(_key_bytes(key)).hexdigest()


def _deadline(ttl_ms: int | None) -> int:
    return 0 if ttl_ms is None else now_ms() + ttl_ms


def _bad(where: Path, what: str) -> _Unreadable:
    return _Unreadable(f"entry file {where} {what}: set() or delete() the key to replace it")


def _key_json(key: str) -> bytes:
    """The key as a JSON string, UTF-8 where it can be; a key with lone surrogates is escaped."""
    try:
        return encode_basestring(key).encode()
    except UnicodeEncodeError:
        return encode_basestring_ascii(key).encode()


def _pack(key: str, expires_at: int, payload: bytes, verbatim: bool) -> bytes:
    expiry = str(expires_at).encode() if expires_at else b"null"
    if verbatim:
        return b"".join((_KEY, _key_json(key), _EXPIRES, expiry, _VALUE, payload, _END))
    value = base64.b64encode(payload)
    return b"".join((_KEY, _key_json(key), _EXPIRES, expiry, _VALUE_B64, value, _B64_END))


def _unpack(raw: bytes, where: Path) -> _Entry:
    """Split an entry file without parsing its value, which comes back as the exact bytes written."""
    end = raw.find(_KEY_END, len(_KEY) + 1) if raw.startswith(_KEY_OPEN) else -1
    if end < 0:
        if raw.startswith(b"BSF1"):
            raise _bad(where, "is in the binary format of botstate's development versions, which is not read")
        raise _bad(where, "is not an entry: no JSON object starting with its key")
    inner = raw[len(_KEY_OPEN) : end]
    plain = 0x5C not in inner and 0x22 not in inner  # else escapes, or a stray quote json refuses
    try:
        key = inner.decode() if plain else json.loads(raw[len(_KEY) : end + 1])
    except ValueError:  # UnicodeDecodeError included
        raise _bad(where, "has an unreadable key") from None
    start = end + len(_KEY_END)
    comma = raw.find(b",", start)
    expiry = raw[start:comma]
    if expiry == b"null":
        expires_at = 0
    elif expiry.isdigit() and comma > 0:
        expires_at = int(expiry)
    else:
        raise _bad(where, "has an unreadable expires_at")
    at = comma + len(_VALUE)
    if raw.startswith(_VALUE, comma) and raw.endswith(_END) and len(raw) > at + len(_END):
        return key, expires_at, raw[at : -len(_END)], True
    at = comma + len(_VALUE_B64)
    if raw.startswith(_VALUE_B64, comma) and raw.endswith(_B64_END) and len(raw) >= at + len(_B64_END):
        try:
            return key, expires_at, base64.b64decode(raw[at : -len(_B64_END)], validate=True), False
        except binascii.Error:
            pass
    raise _bad(where, "has no readable value (truncated or edited)")


def _stripe(name: str) -> str:
    """The write-lock stripe of an entry: 256 lock files, so the lock directory never grows."""
    return name[:2]


class _Files:
    """The blocking filesystem side of :class:`FileStorage`: every method runs in a worker thread."""

    def __init__(self, root: Path, fsync: bool, verbatim: bool) -> None:
        self.root = root
        self.locks = root / _LOCKS
        self.fsync = fsync
        self.verbatim = verbatim  # the codec's bytes are JSON: stored as they are, not in base64

    # -- basics ----------------------------------------------------------------------------------

    def ensure(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)  # parents get the default mode
        try:
            os.mkdir(self.locks, 0o700)
        except FileExistsError:
            pass

    def _create(self, path: Path, flags: int) -> int:
        """Open with ``O_CREAT`` (mode 0600), creating the storage's directories if they are missing."""
        try:
            return os.open(path, flags | os.O_CREAT, 0o600)
        except FileNotFoundError:
            self.ensure()
            return os.open(path, flags | os.O_CREAT, 0o600)

    def sync_dir(self) -> None:
        """Make renames and unlinks in the directory durable."""
        if self.fsync:
            try:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return  # nothing was ever written here
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def healthy(self) -> bool:
        try:
            self.ensure()
        except OSError:
            return False
        return os.access(self.root, os.W_OK | os.X_OK) and os.access(self.locks, os.W_OK | os.X_OK)

    # -- entries ------------------------------------------------------------------------------------

    def _entry(self, name: str) -> Path:
        return self.root / (name + _ENTRY)

    def _read(self, name: str) -> _Entry | None:
        path = self._entry(name)
        try:
            with open(path, "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            return None
        return _unpack(raw, path)

    def _current(self, key: str, name: str) -> _Entry | None:
        """The key's unexpired entry, or None."""
        found = self._read(name)
        if found is None:
            return None
        stored_key, expires_at = found[:2]
        if stored_key != key:
            raise _Unreadable(f"entry file {self._entry(name)} holds another key ({stored_key!r})", key)
        if expires_at and expires_at <= now_ms():
            return None
        return found

    def live(self, key: str) -> bytes | None:
        try:
            current = self._current(key, _name(key))
        except _Unreadable as exc:
            exc.key = key
            raise
        return None if current is None else current[2]

    def live_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.live(key) for key in keys]

    def _write(self, name: str, blob: bytes) -> None:
        """Replace the entry atomically. The caller holds the key's write lock (see ``_sweep_temps``)."""
        tmp = self.root / f"{name}.{secrets.token_hex(6)}{_TMP}"
        fd = self._create(tmp, os.O_WRONLY | os.O_EXCL)
        try:
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._entry(name))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @contextmanager
    def _write_lock(self, name: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the entry's write-lock stripe (yields True), or yield False if ``wait`` is off and
        it is busy. Stripe files are never removed: creating and unlinking a lock file per write
        would double the metadata operations of every write."""
        fd = self._create(self.locks / f"{_stripe(name)}.write", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def put_many(self, pairs: list[tuple[str, bytes]], ttl_ms: int | None) -> None:
        for key, payload in pairs:
            name = _name(key)
            with self._write_lock(name):
                self._write(name, _pack(key, _deadline(ttl_ms), payload, self.verbatim))
        self.sync_dir()  # once for the batch: every rename above is durable when this returns

    def modify(self, key: str, change: Callable[[bytes | None, int], tuple[bytes, int] | None]) -> bool:
        """Read-modify-write under the key's lock. ``change(payload or None, expires_at)`` returns
        the new ``(payload, expires_at)`` or None to write nothing; returns whether it wrote."""
        name = _name(key)
        with self._write_lock(name):
            current = self._current(key, name)
            new = change(None, 0) if current is None else change(current[2], current[1])
            if new is None:
                return False
            verbatim = self.verbatim
            if current is not None and new[0] is current[2]:
                verbatim = current[3]  # bytes kept (touch) keep their form: another codec's?
            self._write(name, _pack(key, new[1], new[0], verbatim))
        self.sync_dir()
        return True

    def delete(self, key: str) -> bool:
        name = _name(key)
        with self._write_lock(name):
            try:
                existed = self._current(key, name) is not None
            except _Unreadable:
                existed = True  # deleting is how a damaged entry is repaired
            try:
                os.unlink(self._entry(name))
            except FileNotFoundError:
                return False
        self.sync_dir()
        return existed

    # -- iteration, clear, sweep --------------------------------------------------------------------

    def names(self) -> list[str]:
        """The hashed names of every entry file in the directory."""
        try:
            files = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [f[:_HEX_LEN] for f in files if len(f) == _HEX_LEN + len(_ENTRY) and f.endswith(_ENTRY)]

    def read_matching(self, names: list[str], match: Callable[[str], object]) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        now = now_ms()
        for name in names:
            entry = self._read(name)
            if entry is None:
                continue
            key, expires_at, payload, _ = entry
            if _name(key) != name:
                raise _Unreadable(f"entry file {self._entry(name)} is not named after its key", key)
            if (not expires_at or expires_at > now) and match(key):
                found.append((key, payload))
        return found

    def clear(self) -> int:
        """Remove every entry; returns how many were unexpired (damaged ones count as unexpired)."""
        removed = 0
        for name in self.names():
            with self._write_lock(name):
                try:
                    entry = self._read(name)
                except _Unreadable:
                    entry = ("", 0, b"", False)
                if entry is None:
                    continue
                self._unlink_quietly(self._entry(name))
                expires_at = entry[1]
                removed += not expires_at or expires_at > now_ms()
        self._sweep_temps()
        self.sync_dir()
        return removed

    def sweep(self) -> int:
        """Remove expired entries and whatever crashed writers and lock holders left behind."""
        removed = 0
        for name in self.names():
            try:
                entry = self._read(name)
            except _Unreadable:
                continue  # kept for inspection, as a damaged value is
            if entry is None or not entry[1] or entry[1] > now_ms():
                continue
            with self._write_lock(name, wait=False) as held:
                if not held:
                    continue  # being written right now: not expired for long
                try:
                    entry = self._read(name)
                except _Unreadable:
                    continue
                if entry is not None and entry[1] and entry[1] <= now_ms():
                    self._unlink_quietly(self._entry(name))
                    removed += 1
        self._sweep_temps()
        self._sweep_locks()
        if removed:
            self.sync_dir()
        return removed

    def _sweep_temps(self) -> None:
        """Remove temporary files of crashed writers.

        A writer holds the key's write lock for the whole life of its temporary file, so a temporary
        file found while holding that lock belongs to nobody.
        """
        try:
            files = os.listdir(self.root)
        except FileNotFoundError:
            return
        for file in files:
            if not file.endswith(_TMP) or len(file) <= _HEX_LEN or file[_HEX_LEN] != ".":
                continue
            with self._write_lock(file[:_HEX_LEN], wait=False) as held:
                if held:
                    self._unlink_quietly(self.root / file)

    def _sweep_locks(self) -> None:
        """Remove lock files left by holders that died (their flock went with them)."""
        try:
            files = os.listdir(self.locks)
        except FileNotFoundError:
            return
        if any(file.endswith((".lock", ".steal")) for file in files):
            with self._guard():
                for file in files:
                    path = self.locks / file
                    if file.endswith(".steal"):  # a hand-over interrupted by a crash
                        self._unlink_quietly(path)
                    elif file.endswith(".lock"):
                        try:
                            fd = os.open(path, os.O_RDWR)
                        except FileNotFoundError:
                            continue
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            self._unlink_quietly(path)
                        except BlockingIOError:
                            pass
                        finally:
                            os.close(fd)

    @staticmethod
    def _unlink_quietly(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # -- locks ----------------------------------------------------------------------------------------
    #
    # A lock is held as an flock on .locks/<name>.lock, so a holder that dies releases it at once.
    # The file also records the holder's token and lease end; a waiter that finds the lease over
    # replaces the file (os.replace) with one it has flocked: the old holder keeps an flock on a
    # file no longer at the path, which is how it learns it lost the lock. Every hand-over (take,
    # steal, renew, release) happens under the storage-wide guard flock, so none of them race.

    @contextmanager
    def _guard(self) -> Iterator[int]:
        fd = self._create(self.locks / "guard", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _next_token(self, guard: int) -> int:
        data = os.pread(guard, 8, 0)
        token = (int.from_bytes(data, "big") if len(data) == 8 else 0) + 1
        os.pwrite(guard, token.to_bytes(8, "big"), 0)
        if self.fsync:
            os.fsync(guard)  # tokens must keep growing after a power loss too
        return token

    def lock_try(self, name: str, lease_ms: int) -> _Held | float:
        """Take the lock, or return the seconds until the current holder's lease ends."""
        path = self.locks / (name + ".lock")
        with self._guard() as guard:
            fd = self._create(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = os.pread(fd, _RECORD.size, 0)
                os.close(fd)
                if len(record) == _RECORD.size:
                    lease_end: int = _RECORD.unpack(record)[1]
                    if lease_end > monotonic_ms():
                        return (lease_end - monotonic_ms()) / 1000
                fd = self._steal(path)
            except BaseException:
                os.close(fd)
                raise
            try:
                token = self._next_token(guard)
                os.pwrite(fd, _RECORD.pack(token, int(monotonic_ms()) + lease_ms), 0)
                stat = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            return _Held(fd, stat.st_dev, stat.st_ino, token)

    def _steal(self, path: Path) -> int:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.steal")
        fd = self._create(tmp, os.O_RDWR | os.O_EXCL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            self._unlink_quietly(tmp)
            raise
        return fd

    def _owns(self, held: _Held, path: Path) -> bool:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == (held.dev, held.ino)

    def lock_extend(self, name: str, held: _Held, lease_ms: int) -> bool:
        path = self.locks / (name + ".lock")
        with self._guard():
            if not self._owns(held, path):
                return False
            os.pwrite(held.fd, _RECORD.pack(held.token, int(monotonic_ms()) + lease_ms), 0)
            return True

    def lock_release(self, name: str, held: _Held) -> bool:
        """Release; returns False if the lock had been taken over after its lease ran out."""
        path = self.locks / (name + ".lock")
        with self._guard():
            try:
                owned = self._owns(held, path)
                if owned:
                    os.unlink(path)
            finally:
                os.close(held.fd)
        return owned


class FileLock(LeaseLock[_Held]):
    """A lock of a :class:`FileStorage` key, shared by every process using the directory.

    Held as an ``flock``: if the holder's process dies, the OS releases it at once. ``lease``
    bounds how long a live but stuck holder can block others: after it, a waiter takes the lock
    over, and the old holder's ``extend`` (and the end of its ``async with`` block) raises
    ``LockError``. ``token`` comes from a counter kept in the directory, so it grows with every
    acquisition, across processes and restarts (a fencing token).
    """

    __slots__ = ("_name", "_storage")

    min_delay = 0.002  # a local file: polling is cheap
    max_delay = 0.05
    report_known_loss = True  # the end of the block reports a take-over even after extend() did

    def __init__(self, storage: FileStorage[Any], key: str, *, lease: float, timeout: float | None) -> None:
        super().__init__(key, storage.backend, lease=lease, timeout=timeout)
        self._storage = storage
        self._name = _name(key)

    async def _try_acquire(self, lease_ms: int) -> _Held | Busy:
        storage = self._storage
        result = await storage._call(storage._files.lock_try, self._name, lease_ms, key=self._key)
        return result if isinstance(result, _Held) else Busy(result)

    async def _extend(self, handle: _Held, lease_ms: int) -> bool:
        storage = self._storage
        return await storage._call(storage._files.lock_extend, self._name, handle, lease_ms, key=self._key)

    async def _release(self, handle: _Held) -> bool:
        storage = self._storage
        return await storage._call(storage._files.lock_release, self._name, handle, key=self._key)

    def _token_of(self, handle: _Held) -> int:
        return handle.token

    def __del__(self) -> None:
        # An abandoned holder: closing the descriptor frees the flock, as the death of its process would.
        held = getattr(self, "_handle", None)
        if held is not None:
            try:
                os.close(held.fd)
            except OSError:
                pass


class FileStorage(ScanningStorage[V]):
    """Storage in a local directory: one file per key, crash-safe, shared by processes on one host.

    ``fsync=False`` skips the fsyncs: writes stay atomic (never half-written) but the last ones may
    be lost on power failure. The directory must be on a local filesystem (``flock`` is not
    reliable over NFS). Files are created with mode 0600, the directories with 0700.
    """

    backend = "file"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        default_ttl: TTL | None = None,
        sweep_interval: float | None = None,
        codec: Codec[V] | None = None,
        fsync: bool = True,
    ) -> None:
        super().__init__(codec=codec, default_ttl=default_ttl, sweep_interval=sweep_interval)
        self.directory = Path(os.path.abspath(directory))  # immune to a later chdir
        # Only JsonCodec's own output is known to be JSON; any other codec's bytes go in base64.
        self._files = _Files(self.directory, fsync, type(self.codec) is JsonCodec)
        # Writers of one stripe queue here, so no worker thread sits blocked on a stripe's flock.
        self._writers = KeyedLocks()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``file:///relative/dir`` or ``file:////absolute/dir``, options in the query string."""
        if url.split("://", 1)[0].lower() != "file":
            raise ConfigError(f"{url!r} is not a file:// URL")
        return cls(url_path(url), **cls._url_options(url, options))

    async def _call(self, fn: Callable[..., R], *args: Any, key: str | None = None) -> R:
        """Run blocking I/O in a worker thread; turn OS errors into botstate's, naming the key."""
        try:
            return await asyncio.to_thread(fn, *args)
        except _Unreadable as exc:
            raise CorruptValueError(str(exc), key=exc.key or key, backend=self.backend) from exc
        except OSError as exc:
            message = f"{type(exc).__name__}: {exc}"
            if exc.errno in _TRANSIENT:
                raise self._unavailable(exc, key) from exc
            raise StorageError(message, key=key, backend=self.backend) from exc

    async def _open(self) -> None:
        await self._call(self._files.ensure)

    # -- Storage ----------------------------------------------------------------------------------

    async def _get(self, key: str, default: Any = None) -> Any:
        if type(key) is not str or not key:
            bad_key(key)
        data = await self._call(self._files.live, key, key=key)
        return default if data is None else self._decode_value(key, data)

    if not TYPE_CHECKING:
        get = _get

    async def set(self, key: str, value: V, *, ttl: TTL | None = None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        async with self._writers.hold(_stripe(_name(key))):
            await self._call(self._files.put_many, [(key, data)], ttl_ms, key=key)

    async def delete(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        async with self._writers.hold(_stripe(_name(key))):
            return await self._call(self._files.delete, key, key=key)

    async def has(self, key: str) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        return await self._call(self._files.live, key, key=key) is not None

    async def get_many(self, keys: Iterable[str]) -> list[V | None]:
        wanted = list(keys)
        for key in wanted:
            if type(key) is not str or not key:
                bad_key(key)
        found = await self._call(self._files.live_many, wanted)
        return [
            None if data is None else self._decode_value(key, data)
            for key, data in zip(wanted, found, strict=True)
        ]

    async def set_many(self, mapping: Mapping[str, V], *, ttl: TTL | None = None) -> None:
        """Store every pair, each atomically; nothing is written if any value cannot be encoded.

        The batch as a whole is not atomic: a crash midway leaves the first pairs written.
        """
        ttl_ms = self._ttl(ttl)
        pairs = []
        for key, value in mapping.items():
            if type(key) is not str or not key:
                bad_key(key)
            pairs.append((key, self._encode_value(key, value)))
        if pairs:
            await self._call(self._files.put_many, pairs, ttl_ms)

    async def _modify(
        self, key: str, change: Callable[[bytes | None, int], tuple[bytes, int] | None]
    ) -> bool:
        async with self._writers.hold(_stripe(_name(key))):
            return await self._call(self._files.modify, key, change, key=key)

    # -- TtlStorage -------------------------------------------------------------------------------

    async def touch(self, key: str, ttl: TTL | None = None) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)

        def restart(data: bytes | None, expires_at: int) -> tuple[bytes, int] | None:
            return None if data is None else (data, _deadline(ttl_ms))

        return await self._modify(key, restart)

    async def sweep(self) -> int:
        return await self._call(self._files.sweep)

    # -- IterableStorage ------------------------------------------------------------------------------

    async def _scan(self, pattern: str, values: bool) -> AsyncIterator[tuple[str, bytes]]:
        if is_literal(pattern):
            key = literal_prefix(pattern)
            data = await self._call(self._files.live, key, key=key) if key else None
            if data is not None:
                yield key, data
            return
        match = compile_glob(pattern).fullmatch
        names = await self._call(self._files.names)
        for start in range(0, len(names), _SCAN_CHUNK):
            chunk = names[start : start + _SCAN_CHUNK]
            for item in await self._call(self._files.read_matching, chunk, match):
                yield item

    async def clear(self) -> int:
        return await self._call(self._files.clear)

    # -- AtomicStorage ----------------------------------------------------------------------------------

    async def compare_and_set(
        self, key: str, value: V, *, expected: V | None, ttl: TTL | None = None
    ) -> bool:
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        data = self._encode_value(key, value)
        wanted = None if expected is None else self._encode_value(key, expected)

        def swap(current: bytes | None, expires_at: int) -> tuple[bytes, int] | None:
            if wanted is None:
                ok = current is None
            else:
                ok = current is not None and self._matches(key, current, wanted)
            return (data, _deadline(ttl_ms)) if ok else None

        return await self._modify(key, swap)

    async def increment(self, key: str, amount: int = 1, *, ttl: TTL | None = None) -> int:
        self._check_increment(key, amount)
        if type(key) is not str or not key:
            bad_key(key)
        ttl_ms = self._ttl(ttl)
        total = 0

        def add(current: bytes | None, expires_at: int) -> tuple[bytes, int]:
            nonlocal total
            if current is None:
                total = amount
                return str(total).encode(), _deadline(ttl_ms)
            total = add_to_counter(self, key, current, amount)
            return str(total).encode(), expires_at  # a fixed window: the expiry is kept

        await self._modify(key, add)
        return total

    # -- LockingStorage ---------------------------------------------------------------------------------

    def lock(self, key: str, *, lease: float = 30.0, timeout: float | None = None) -> FileLock:
        """A lock shared by every process using the directory (see :class:`FileLock`)."""
        return FileLock(self, key, lease=lease, timeout=timeout)

    async def health(self) -> bool:
        return await asyncio.to_thread(self._files.healthy)

    def __repr__(self) -> str:
        return (
            f"FileStorage({str(self.directory)!r}, codec={self.codec!r}, "
            f"default_ttl_ms={self.default_ttl_ms}, fsync={self._files.fsync})"
        )
