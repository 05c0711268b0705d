"""``Sessions`` and ``Session``: per-update state with as little I/O as the handler allows.

The I/O rules, which the tests pin by counting backend calls:

- an untouched lazy session costs nothing (no read, no lock, no write);
- a session read and left unchanged is not written (with ``ttl``: one ``touch`` keeps it alive);
- a changed session is written once; ``data = None`` deletes it;
- an ``initial()`` value nobody changed is never stored, so a lookup does not create an entry;
- a body that raises writes nothing, and the exception propagates.

"Changed" compares the value's encoding with a snapshot taken when the loaded value was first
handed out, so in-place edits of nested data count, and re-assigning an equal value does not.

On the built-in backends that offer encoded access (``_get_encoded``/``_set_encoded``) the snapshot
is free: the bytes read are the baseline, and the value is encoded once at the end, compared with
them and, when changed, written as they are. Other storages (wrappers, adapters) snapshot with
their codec, or with deep copies when they have none.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import operator
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, NoReturn, TypeVar, overload

from .._locks import KeyedLocks
from .._ttl import TTL, ttl_to_ms
from ..contract import Storage, is_ttl_storage
from ..errors import BotstateError, ConfigError, SerializationError
from ..storages._base import BaseStorage, same_value
from .isolation import Guard, IsolationMode, LeaseGuard, LocalIsolation, make_isolation
from .keys import BUILT_IN_KEYS, KeyFunction, chat_key

__all__ = [
    "NoSessionError",
    "Session",
    "SessionError",
    "SessionNotLoadedError",
    "SessionStats",
    "Sessions",
]

T = TypeVar("T")
V = TypeVar("V")


class SessionError(BotstateError, RuntimeError):
    """A session was used in a way that cannot work; the message says why."""


class NoSessionError(SessionError):
    """The update has no session: its key function returned ``None`` (no chat, no user...)."""


class SessionNotLoadedError(SessionError):
    """A lazy session's data was used before ``await session.load()``."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final[Any] = _Missing()
"""No value: nothing stored, or deleted by ``data = None``."""

_NEW, _OPEN, _CLOSED = 0, 1, 2
_KEEP, _WRITE, _DELETE, _TOUCH = 0, 1, 2, 3
_RESOLVE: Final[Any] = object()


def _overrides_nothing(storage: object, fast: tuple[str, ...], slow: tuple[str, ...]) -> bool:
    """Whether ``storage``'s class defines every ``fast`` method, none of them above an override of
    a ``slow`` one: an override (a user's logging or counting subclass) must not be bypassed."""
    if not isinstance(storage, BaseStorage):
        return False
    mro = type(storage).__mro__

    def depth(name: str) -> int:  # how far from the storage's own class ``name`` is defined
        return next((i for i, klass in enumerate(mro) if name in vars(klass)), len(mro))

    deepest = max(depth(name) for name in fast)
    return deepest < len(mro) and min(depth(name) for name in slow) >= deepest


def has_encoded_access(storage: object) -> bool:
    """Whether sessions may read and write ``storage``'s stored bytes directly.

    Only a built-in backend offering both encoded methods (awaited, or as plain calls) qualifies,
    and only while no subclass overrides ``get`` or ``set`` below the classes that define them.
    """
    return has_sync_access(storage) or _overrides_nothing(
        storage, ("_get_encoded", "_set_encoded"), ("get", "set")
    )


def has_sync_access(storage: object) -> bool:
    """Whether the encoded access also exists as plain calls (the in-memory backends), by the
    same rule: a subclass overriding the encoded methods keeps them in use."""
    return _overrides_nothing(
        storage, ("_peek_encoded", "_put_encoded"), ("get", "set", "_get_encoded", "_set_encoded")
    )


@dataclass(slots=True)
class SessionStats:
    """What sessions did and what the I/O rules saved; cheap counters for metrics and the demo."""

    opened: int = 0
    without_key: int = 0
    """Updates whose key function returned ``None``: no I/O at all."""
    reads: int = 0
    writes: int = 0
    deletes: int = 0
    touches: int = 0
    unchanged: int = 0
    """Sessions read and left as they were: not written."""
    untouched: int = 0
    """Lazy sessions never loaded: no read, no lock, no write."""
    initial_not_saved: int = 0
    """Fresh ``initial()`` values nobody changed: not stored."""
    discarded: int = 0
    """Loaded sessions whose body raised: nothing written."""


class Sessions(Generic[T]):
    """Sessions stored in ``storage``, one per key; ``session.data`` is a ``T``.

    - ``initial``: builds the value of a key with nothing stored (called for each new session, so
      every session gets its own object). Without it, such a session's data is ``None``.
    - ``name``: prefixes storage keys (``name:key``), so several kinds of sessions share a storage.
    - ``ttl``: sessions expire after this long without use (sliding: reading one renews it).
    - ``lazy``: read only on ``await session.load()``.
    - ``key``: maps what ``open()`` gets to a session key (sync or async); default ``chat_key``.
    - ``isolation``: ``"local"`` (default), ``"distributed"`` (also takes the backend's lock with
      ``lease``), or ``"none"``. ``lock_timeout`` bounds the wait for the key (``LockError``),
      both locks together with ``"distributed"``.
    """

    # ``T`` comes from ``initial`` (mypy cannot infer a value type through the Storage protocol);
    # without ``initial`` it is ``Any``: annotate ``Sessions[X | None]`` for a typed ``data``.
    @overload
    def __init__(
        self: Sessions[V],
        storage: Storage[Any],
        *,
        initial: Callable[[], V],
        name: str = "session",
        ttl: TTL | None = None,
        lazy: bool = False,
        key: KeyFunction = chat_key,
        isolation: IsolationMode = "local",
        lease: float = 30.0,
        lock_timeout: float | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Sessions[Any],
        storage: Storage[Any],
        *,
        initial: None = None,
        name: str = "session",
        ttl: TTL | None = None,
        lazy: bool = False,
        key: KeyFunction = chat_key,
        isolation: IsolationMode = "local",
        lease: float = 30.0,
        lock_timeout: float | None = None,
    ) -> None: ...
    def __init__(
        self,
        storage: Storage[Any],
        *,
        initial: Callable[[], Any] | None = None,
        name: str = "session",
        ttl: TTL | None = None,
        lazy: bool = False,
        key: KeyFunction = chat_key,
        isolation: IsolationMode = "local",
        lease: float = 30.0,
        lock_timeout: float | None = None,
    ) -> None:
        self.storage = storage
        self.backend: str = getattr(storage, "backend", type(storage).__name__)
        self.initial = initial
        self.name = name
        self.prefix = f"{name}:" if name else ""
        self._ttl_ms = ttl_to_ms(ttl)  # validates early
        if ttl is not None and not is_ttl_storage(storage):
            raise ConfigError(f"ttl needs a storage with touch(); {self.backend} has none")
        self.ttl = ttl
        self.lazy = lazy
        self.key = key
        self.isolation = make_isolation(isolation, storage, self.backend, lease=lease, timeout=lock_timeout)
        # The default isolation's keyed locks, taken directly: no guard object on the hot path.
        self._locks = self.isolation.locks if type(self.isolation) is LocalIsolation else None
        self._held = self._locks._held if self._locks is not None else None  # for inlined try_acquire
        self._lock_timeout = lock_timeout
        self._sync_access = has_sync_access(storage)
        self._encoded_access = self._sync_access or has_encoded_access(storage)
        self.stats = SessionStats()
        codec = getattr(storage, "codec", None)
        # The storage's own codec makes the snapshot exactly what would be stored (bytes compare
        # with ``==``); a storage without one (a wrapper, an adapter) gets deep copies compared
        # strictly, so that changing ``1`` to ``True`` still counts.
        self.freeze: Callable[[Any], Any] = codec.encode if codec is not None else copy.deepcopy
        self.same: Callable[[Any, Any], bool] = operator.eq if codec is not None else same_value

    def open(self, update: Any) -> Session[T]:
        """The session for ``update``: a session key (str), ``None`` (no session), or anything the
        key function understands (an ``UpdateInfo`` for the built-in ones). Use with ``async with``.
        """
        return Session(self, update)

    def storage_key(self, key: str) -> str:
        """Where the session with session key ``key`` is stored (for admin tools and broadcasts)."""
        return self.prefix + key

    async def resolve(self, update: Any) -> str | None:
        """The storage key for ``update``, or ``None`` when it has no session."""
        if update is None:
            return None
        if type(update) is str:
            if not update:
                raise ValueError("session keys are non-empty str, got ''")
            key: Any = update
        else:
            try:
                key = self.key(update)
            except AttributeError:
                if not any(self.key is built_in for built_in in BUILT_IN_KEYS):
                    raise
                raise TypeError(  # a chat id, say, given where an update was expected
                    f"sessions.open() takes a session key (str), an UpdateInfo or None, "
                    f"not {type(update).__name__} (a custom key function takes anything else)"
                ) from None
        if key is not None and type(key) is not str and inspect.isawaitable(key):
            key = await key  # an async key function
        if key is None:
            return None
        if type(key) is not str or not key:
            raise TypeError(f"session keys are non-empty str, the key function returned {key!r}")
        return self.prefix + key

    def __repr__(self) -> str:
        return f"Sessions({self.backend}, name={self.name!r}, lazy={self.lazy})"


class Session(Generic[T]):
    """One update's session. Created by ``Sessions.open``; use it as ``async with``.

    ``key`` is the storage key (``None``: the update has no session).
    """

    __slots__ = ("_baseline", "_encoded", "_fresh", "_fresh_value", "_guard", "_loaded", "_loading",
                 "_original", "_sessions", "_state", "_stored", "_update", "_value", "key")  # fmt: skip

    def __init__(self, sessions: Sessions[T], update: Any) -> None:
        self._sessions = sessions
        self._update = update
        self.key: str | None = None
        self._state = _NEW
        self._loaded = False  # True only while open and loaded: the one check on the hot path
        self._loading: asyncio.Future[None] | None = None
        self._guard: Guard | KeyedLocks | None = None
        self._original: Any = _MISSING  # the value read
        self._stored: bytes | None = None  # the bytes it was decoded from (encoded access)
        self._baseline: Any = _MISSING  # its snapshot, taken when first handed out
        self._encoded: bytes | None = None  # what to write (encoded access): encoded once, at the end
        self._value: Any = _MISSING  # the current value
        self._fresh_value: Any = _MISSING  # an initial() value handed out, and its snapshot
        self._fresh: Any = None

    # -- the value -----------------------------------------------------------------------------

    @property
    def data(self) -> T:
        """The session's value; ``initial()`` (or ``None``) when nothing is stored."""
        if not self._loaded:
            self._unavailable()
        value = self._value
        if value is _MISSING:
            initial = self._sessions.initial
            if initial is None:
                return None  # type: ignore[return-value]  # T includes None without initial
            value = self._value = self._fresh_value = initial()
            self._fresh = self._freeze(value)
        elif value is self._original and self._baseline is _MISSING:
            stored = self._stored  # before the handler can change it in place:
            self._baseline = self._freeze(value) if stored is None else stored
        return value  # type: ignore[no-any-return]

    @data.setter
    def data(self, value: T | None) -> None:
        """Replace the value; ``None`` deletes the session when the body ends."""
        if not self._loaded:
            self._unavailable()
        self._value = _MISSING if value is None else value

    async def load(self) -> T:
        """Read the session now (lazy sessions); returns ``data``. Reads once however often awaited."""
        while not self._loaded:
            key = self.key
            if self._state != _OPEN or key is None:
                self._unavailable()
            waiter = self._loading
            if waiter is not None:  # another task of this body is reading it
                await asyncio.shield(waiter)  # cancelling this wait must not cancel the others'
                continue
            waiter = self._loading = asyncio.get_running_loop().create_future()
            try:
                await self._read(key)
            finally:
                self._loading = None
                if not waiter.done():
                    waiter.set_result(None)
        return self.data

    @property
    def loaded(self) -> bool:
        return self._loaded

    def _unavailable(self) -> NoReturn:
        sessions = self._sessions
        if self._state == _NEW:
            raise SessionError(f"{sessions.name!r} session used outside 'async with sessions.open(...)'")
        if self._state == _CLOSED:
            raise SessionError(
                f"{sessions.name!r} session used after its 'async with' block: changes would be lost"
            )
        if self.key is None:
            raise NoSessionError(
                f"this update has no {sessions.name!r} session: its key function returned None "
                f"(e.g. an update without a chat); check 'session.key is not None' first"
            )
        raise SessionNotLoadedError(
            f"lazy {sessions.name!r} session {self.key!r} is not loaded: 'await session.load()' first"
        )

    def _freeze(self, value: Any) -> Any:
        try:
            return self._sessions.freeze(value)
        except Exception as exc:
            raise SerializationError(
                f"cannot encode the session value {type(value).__name__}: {exc}",
                key=self.key,
                backend=self._sessions.backend,
            ) from exc

    # -- lifecycle -----------------------------------------------------------------------------
    # It runs once per update, so the usual case (a str key, an eager session, the default local
    # isolation, a backend with encoded access) is flattened into ``__aenter__`` and ``__aexit__``
    # with the helpers' work inlined: per update only the lock, the read and the write await.
    # Every other case takes the general helpers below, which the same rules hold for.

    async def __aenter__(self) -> Session[T]:
        if self._state != _NEW:
            raise SessionError("a session can be entered only once; call sessions.open() again")
        sessions = self._sessions
        sessions.stats.opened += 1
        update = self._update
        if type(update) is str and update:
            key: str | None = sessions.prefix + update
        else:
            key = await sessions.resolve(update)
        self.key = key
        self._state = _OPEN
        if key is None:
            sessions.stats.without_key += 1
        elif not sessions.lazy:
            locks = sessions._locks
            if locks is None or not sessions._encoded_access:
                await self._read(key)
                return self
            # ``_read``, inlined, with ``locks.try_acquire`` (sessions need no fencing token).
            held: Any = sessions._held
            if key in held:
                await locks.acquire(key, sessions._lock_timeout)
            else:
                held[key] = None
            self._guard = locks
            storage: Any = sessions.storage
            try:
                if sessions._sync_access:
                    data = storage._peek_encoded(key)
                else:
                    data = await storage._get_encoded(key)
                if data is not None:
                    try:
                        self._original = self._value = storage._decode(data)
                    except Exception:
                        storage._decode_value(key, data)  # raises CorruptValueError naming the key
                        raise
                    self._stored = data
            except BaseException:
                self._guard = None
                locks.release(key)
                raise
            sessions.stats.reads += 1
            self._loaded = True
        return self

    def _start(self) -> Any:
        """Check and count the opening; the storage key when it is known without awaiting."""
        if self._state != _NEW:
            raise SessionError("a session can be entered only once; call sessions.open() again")
        sessions = self._sessions
        sessions.stats.opened += 1
        update = self._update
        if type(update) is str and update:
            return sessions.prefix + update
        return _RESOLVE

    def _opened(self, key: str | None) -> bool:
        """The session is open for ``key``; True when it is to be read now (not lazy)."""
        self.key = key
        self._state = _OPEN
        if key is None:
            self._sessions.stats.without_key += 1
            return False
        return not self._sessions.lazy

    async def _lock(self, key: str) -> None:
        sessions = self._sessions
        locks = sessions._locks
        if locks is not None:  # the default isolation: the keyed lock itself, no guard object
            if locks.try_acquire(key) is None:
                await locks.acquire(key, sessions._lock_timeout)
            self._guard = locks
            return
        guard = sessions.isolation.guard(key)
        if guard is not None:
            await guard.__aenter__()
            self._guard = guard

    async def _read(self, key: str, lock: bool = True) -> None:
        """Take the guard (unless already taken) and read; on failure nothing is held or loaded.

        A load still running when the body ends (a task the body left behind) must not keep the
        lock or load a closed session: it lets go and raises once it sees the session closed.
        """
        sessions = self._sessions
        if lock:
            await self._lock(key)
        try:
            if self._state != _OPEN:
                self._unavailable()
            storage: Any = sessions.storage
            if sessions._encoded_access:
                data = await storage._get_encoded(key)
                if data is not None:
                    self._original = self._value = storage._decode_value(key, data)
                    self._stored = data
            else:
                self._original = self._value = await storage.get(key, _MISSING)
            if self._state != _OPEN:
                self._unavailable()
        except BaseException:
            await self._release()
            raise
        sessions.stats.reads += 1
        self._loaded = True

    async def _release(self) -> None:
        guard = self._guard
        if guard is not None:
            self._guard = None
            if type(guard) is KeyedLocks:
                guard.release(self.key)  # type: ignore[arg-type]  # only held with a key
            else:
                await guard.__aexit__(None, None, None)  # type: ignore[union-attr]

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Write back what changed, unless the body raised; then let go of the guard."""
        loaded = self._loaded
        self._loaded = False
        self._state = _CLOSED
        sessions = self._sessions
        try:
            if not loaded:
                if self.key is not None and sessions.lazy and self._loading is None:
                    sessions.stats.untouched += 1
            elif exc_type is not None:
                sessions.stats.discarded += 1
            else:
                value = self._value
                if (
                    value is self._original
                    and self._baseline is not _MISSING
                    and self._fresh_value is _MISSING
                    and sessions._encoded_access
                ):  # ``_plan`` for the usual case: the stored value was handed out, maybe edited
                    try:
                        encoded = sessions.freeze(value)
                    except Exception:
                        encoded = self._freeze(value)  # raises SerializationError naming the key
                    if encoded == self._baseline:
                        sessions.stats.unchanged += 1
                        action = _KEEP if sessions.ttl is None else _TOUCH
                    else:
                        self._encoded = encoded
                        action = _WRITE
                else:
                    action = self._plan()
                if action == _KEEP:
                    pass
                elif action == _WRITE and sessions._encoded_access and type(self._guard) is not LeaseGuard:
                    storage: Any = sessions.storage  # ``_apply``, inlined for the usual write
                    ttl = sessions.ttl
                    ttl_ms = storage.default_ttl_ms if ttl is None else sessions._ttl_ms
                    if sessions._sync_access:
                        storage._put_encoded(self.key, self._encoded, ttl_ms)
                    else:
                        await storage._set_encoded(self.key, self._encoded, ttl_ms)
                    sessions.stats.writes += 1
                else:
                    await self._apply(action)
        finally:
            guard = self._guard
            if type(guard) is KeyedLocks:  # ``_release``, inlined for the default isolation
                self._guard = None
                key: Any = self.key  # only held with a key
                held: Any = sessions._held
                if held[key] is None:  # nobody waits: ``guard.release``, inlined
                    del held[key]
                else:
                    guard.release(key)
            elif guard is not None:
                await self._release()

    def _plan(self) -> int:
        """What the end of the body needs: keep, write, delete or touch. Counts what it saves.

        The value is encoded at most once here; with encoded access those bytes are what is written.
        """
        sessions = self._sessions
        value, original = self._value, self._original
        same = sessions.same
        encoded: Any = _MISSING
        if value is self._fresh_value and value is not _MISSING:
            encoded = self._freeze(value)
            if same(encoded, self._fresh):
                value = self._value = _MISSING  # an initial() value nobody changed: not worth storing
                if original is _MISSING:
                    sessions.stats.initial_not_saved += 1
                    return _KEEP
        if value is _MISSING:
            return _KEEP if original is _MISSING else _DELETE
        if original is _MISSING:
            if sessions._encoded_access:  # encoded (or refused) exactly as ``set`` would
                storage: Any = sessions.storage
                self._encoded = storage._encode_value(self.key, value) if encoded is _MISSING else encoded
            return _WRITE
        baseline = self._baseline
        if value is not original or baseline is not _MISSING:  # else never handed out: unchanged
            if encoded is _MISSING:
                try:
                    encoded = sessions.freeze(value)
                except Exception:
                    encoded = self._freeze(value)  # raises SerializationError naming the key
            if baseline is _MISSING:  # replaced without being read
                baseline = self._freeze(original) if self._stored is None else self._stored
            if not same(encoded, baseline):
                self._encoded = encoded
                return _WRITE
        sessions.stats.unchanged += 1
        return _KEEP if sessions.ttl is None else _TOUCH

    async def _apply(self, action: int) -> None:
        sessions, key, stats = self._sessions, self.key, self._sessions.stats
        assert key is not None
        guard = self._guard
        if type(guard) is LeaseGuard:
            await guard.verify()
        storage: Any = sessions.storage
        if action == _WRITE:
            if sessions._encoded_access:
                await storage._set_encoded(key, self._encoded, storage._ttl(sessions.ttl))
            else:
                await storage.set(key, self._value, ttl=sessions.ttl)
            stats.writes += 1
        elif action == _DELETE:
            await storage.delete(key)
            stats.deletes += 1
        else:  # sliding expiry for an unchanged session; rewritten if it expired since the read
            stats.touches += 1
            if not await storage.touch(key, sessions.ttl):
                if sessions._encoded_access:  # unchanged: the bytes read are the value's encoding
                    await storage._set_encoded(key, self._stored, storage._ttl(sessions.ttl))
                else:
                    await storage.set(key, self._value, ttl=sessions.ttl)
                stats.writes += 1

    def __repr__(self) -> str:
        state = ("new", "open", "closed")[self._state]
        return f"<Session {self.key!r} {state}{' loaded' if self._loaded else ''}>"
