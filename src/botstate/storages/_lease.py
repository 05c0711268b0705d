"""The lease lock every distributed backend shares: polling, lease bookkeeping, release rules.

A backend supplies three small operations on its own lock record (take it if free, renew it,
delete it if still ours) by subclassing :class:`LeaseLock`; everything a user can observe is
decided here once, so every backend's ``lock()`` behaves the same:

- ``lease`` is positive, finite seconds and ``timeout`` ``None`` or seconds >= 0 (``ValueError``
  when ``lock()`` is called, before any I/O). One attempt always happens: ``timeout=0`` means
  "now or never".
- Waiters poll with jittered exponential backoff (so they do not poll in lockstep), wake early
  when the backend knows when the current lease ends, and never sleep past their deadline; a
  timeout raises ``LockError`` naming the key and the backend.
- A lock is lost once its lease ran out, as measured by the holder from before each request (so
  never later than the backend's own clock), or when the backend finds it no longer holds it.
  ``extend()`` on a lost lock raises ``LockError``; so does a clean exit of the ``async with``
  block, unless ``extend()`` already reported that loss. When the body raised, its exception is
  the one that propagates: a failed release is only logged (the lease frees the lock anyway).
- Release is shielded from cancellation, and an acquisition cancelled after the backend granted
  the lock gives it back at once instead of blocking others for a whole lease.
"""

from __future__ import annotations

import asyncio
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

from ..errors import LockError
from ._base import bad_key, log

__all__ = ["BUSY", "Busy", "LeaseLock", "acquire", "check_timeout", "lease_ms"]

T = TypeVar("T")
H = TypeVar("H")

_MIN_PAUSE = 0.001
"""Shortest wait when the backend says the current lease is about to end: no busy spinning."""


def lease_ms(lease: float) -> int:
    """A lock lease in whole milliseconds (at least 1); ``ValueError`` unless positive finite seconds."""
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < math.inf:
        raise ValueError(f"lock lease must be positive finite seconds, got {lease!r}")
    return max(1, round(lease * 1000))


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` itself if it is ``None`` or seconds >= 0 (``inf`` waits forever); else ``ValueError``."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ValueError(f"lock timeout must be seconds >= 0 or None, got {timeout!r}")
    return timeout


class Busy:
    """An attempt found the lock held; ``ends_in`` is when its lease ends (seconds), if known."""

    __slots__ = ("ends_in",)

    def __init__(self, ends_in: float | None = None) -> None:
        self.ends_in = ends_in

    def __repr__(self) -> str:
        return f"Busy(ends_in={self.ends_in!r})"


BUSY: Final = Busy()
"""The answer of a backend that cannot tell when the current lease ends."""


async def acquire(
    try_once: Callable[[], Awaitable[T | Busy]],
    *,
    key: str,
    backend: str,
    timeout: float | None,
    min_delay: float,
    max_delay: float,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    give_back: Callable[[T], Awaitable[object]] | None = None,
) -> T:
    """Call ``try_once`` until it returns something other than :class:`Busy`, or ``timeout`` passes.

    Between attempts it waits ``pause(seconds)``: a random 50-100 % of a delay that starts at
    ``min_delay`` and doubles up to ``max_delay``, shortened to when the current lease ends if the
    backend said so, and never past the deadline. ``LockError`` (naming key and backend) once an
    attempt at or after the deadline failed too. Each attempt is shielded: if the caller is
    cancelled while the backend is granting the lock, the grant is handed to ``give_back``.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = min_delay
    while True:
        result = await _shielded(try_once(), _giving_back(give_back))
        if not isinstance(result, Busy):
            return result
        now = loop.time()
        if deadline is not None and now >= deadline:
            raise LockError(f"lock not acquired within {timeout}s", key=key, backend=backend)
        wait = delay * random.uniform(0.5, 1.0)  # jitter: waiters do not poll in lockstep
        if result.ends_in is not None:
            wait = min(wait, max(result.ends_in, _MIN_PAUSE))
        if deadline is not None:
            wait = min(wait, deadline - now)
        await pause(wait)
        delay = min(delay * 2, max_delay)


class LeaseLock(ABC, Generic[H]):
    """A lease lock on one key: the async context manager ``lock()`` returns, and the held lock.

    ``H`` is the backend's handle of one acquisition (its fencing token, or whatever else it
    needs to renew and release exactly that acquisition). Subclasses implement ``_try_acquire``,
    ``_extend``, ``_release`` and ``_token_of``, and may tune the polling delays.
    """

    __slots__ = ("_backend", "_expires", "_handle", "_key", "_lease_ms", "_reported", "_timeout", "_token")

    min_delay: ClassVar[float] = 0.005
    """First wait between attempts, in seconds; it doubles up to ``max_delay``."""
    max_delay: ClassVar[float] = 0.1
    """Longest wait between attempts: how late a waiter may notice that the lock came free."""
    report_known_loss: ClassVar[bool] = False
    """Whether a clean exit raises for a loss that a failed ``extend()`` already reported."""

    def __init__(self, key: str, backend: str, *, lease: float, timeout: float | None) -> None:
        if type(key) is not str or not key:
            bad_key(key)
        self._key = key
        self._backend = backend
        self._lease_ms = lease_ms(lease)
        self._timeout = check_timeout(timeout)
        self._handle: H | None = None
        self._token = 0
        self._expires = 0.0  # loop time at which the lease ends, as far as this holder knows
        self._reported = False

    # -- what a backend provides --------------------------------------------------------------

    @abstractmethod
    async def _try_acquire(self, lease_ms: int) -> H | Busy:
        """One attempt: take the lock for ``lease_ms`` if it is free (or its lease ran out)."""

    @abstractmethod
    async def _extend(self, handle: H, lease_ms: int) -> bool:
        """Restart the lease from now if ``handle`` still holds the lock; False if it does not."""

    @abstractmethod
    async def _release(self, handle: H) -> bool:
        """Free the lock if ``handle`` still holds it; False if someone else took it meanwhile."""

    @abstractmethod
    def _token_of(self, handle: H) -> int:
        """The fencing token of an acquisition."""

    async def _pause(self, seconds: float) -> None:
        """Wait between attempts; a backend that learns of releases may end the wait early."""
        await asyncio.sleep(seconds)

    # -- the Lock protocol --------------------------------------------------------------------

    @property
    def token(self) -> int:
        """The fencing token of the last acquisition (0 before the first); it grows with each."""
        return self._token

    async def extend(self, lease: float | None = None) -> None:
        """Restart the lease from now: ``lease`` seconds, else the lease the lock was taken with.

        ``LockError`` if the lock is not held, or was lost (its lease ran out, or another holder
        took it), since then another holder may be running.
        """
        ms = self._lease_ms if lease is None else lease_ms(lease)
        handle = self._handle
        if handle is None:
            raise LockError(
                "lock not held: extend() only works inside its 'async with' block", **self._where()
            )
        started = asyncio.get_running_loop().time()
        if started >= self._expires or not await self._extend(handle, ms):
            self._reported = True
            raise LockError("lock lost: its lease ran out", **self._where())
        self._expires = started + ms / 1000

    async def __aenter__(self) -> Self:
        if self._handle is not None:
            raise RuntimeError("this lock is already held; call storage.lock() again for another")
        loop = asyncio.get_running_loop()
        ms = self._lease_ms
        started = 0.0

        async def try_once() -> H | Busy:
            nonlocal started
            started = loop.time()
            return await self._try_acquire(ms)

        handle = await acquire(
            try_once,
            key=self._key,
            backend=self._backend,
            timeout=self._timeout,
            min_delay=self.min_delay,
            max_delay=self.max_delay,
            pause=self._pause,
            give_back=self._release,
        )
        self._handle = handle
        self._token = self._token_of(handle)
        self._expires = started + ms / 1000
        self._reported = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        expired = asyncio.get_running_loop().time() >= self._expires
        try:
            owned = await _shielded(self._release(handle), _log_failure)
        except Exception as error:
            if exc_type is None:
                raise
            log.warning(
                "botstate: could not release the lock on %r (%s); its lease frees it: %s",
                self._key,
                self._backend,
                error,
            )
            return
        if exc_type is not None or (owned and not expired):
            return
        if self._reported and not self.report_known_loss:
            return
        raise LockError("lock lost before release: its lease ran out", **self._where())

    def _where(self) -> dict[str, Any]:
        return {"key": self._key, "backend": self._backend}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self._key!r}, token={self._token})"


# -- cancellation ----------------------------------------------------------------------------------

_background: set[asyncio.Task[Any]] = set()
"""Give-backs running after their caller was cancelled: referenced until done."""


async def _shielded(step: Awaitable[T], after_cancel: Callable[[asyncio.Future[T]], None]) -> T:
    """Await ``step`` to the end even if the caller is cancelled; ``after_cancel`` then sees its outcome."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(after_cancel)
        raise


def _log_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.warning("botstate: a lock operation failed after its caller was cancelled: %s", error)


def _giving_back(
    give_back: Callable[[T], Awaitable[object]] | None,
) -> Callable[[asyncio.Future[T | Busy]], None]:
    """A done-callback: an attempt that took the lock for a cancelled caller releases it at once."""

    def done(attempt: asyncio.Future[T | Busy]) -> None:
        if attempt.cancelled() or attempt.exception() is not None:
            return
        grant = attempt.result()
        if give_back is None or isinstance(grant, Busy):
            return
        task: asyncio.Task[Any] = attempt.get_loop().create_task(_quietly(give_back(grant)))
        _background.add(task)
        task.add_done_callback(_background.discard)

    return done


async def _quietly(step: Awaitable[object]) -> None:
    try:
        await step
    except Exception as error:  # nobody is left to tell; the lease frees the lock anyway
        log.warning("botstate: giving back a lock after a cancelled acquisition failed: %s", error)
