"""Fixed-window rate limits on any storage with atomic ``increment``.

Each window is one counter created by ``increment`` with a TTL (see below), so the count is exact
across processes sharing the storage (one atomic increment per hit, no read-then-write). Windows
are aligned to the wall clock (``period`` multiples since the epoch), so every process agrees on
where a window starts and ``reset_after`` needs no extra read.

Memory stays bounded without setup. A key's windows take turns in two slots, ``f"{key}:0"`` and
``f"{key}:1"``: a counter lives until half a period after its window ends and its slot comes back
half a period after that, so ``increment`` starts it from 0 (unless a hit's increment arrived over
half a period late and made a fresh counter then), and an active key never holds more
than two entries, even on backends that only hide expired entries until a sweep. The half period
is for increments that arrive late (a slow round trip, a storage's clock a little ahead): one sent
just before its window ended still lands on that window's counter, and is counted and denied
there, instead of starting a fresh counter that would admit it. Two slots rather than one also keep
a denied hit's give-back in its own window. Keys that stop being hit are removed by the limiter
calling the storage's ``sweep()`` now and then (``sweep_every``), inside the hit that finds it due:
no task outlives the storage it sweeps, and a failing sweep (a server that went away) is logged,
never turned into a failed hit.

A denied hit is given back (its cost is subtracted again): a rejected ``cost=10`` request does not
eat the budget of cheaper ones, and ``remaining`` stays what a caller can still spend. Between the
two increments a concurrent hit sees the count with the denied cost still in it and may be denied
as well: the limiter errs towards denying and never admits more than ``limit``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta
from typing import Any

from ._ttl import TTL, ttl_to_ms
from .contract import AtomicStorage, Storage, is_atomic_storage
from .errors import WrongTypeError
from .storages._base import bad_key
from .wrappers._base import backend_name

__all__ = ["RateLimitResult", "RateLimiter"]

log = logging.getLogger("botstate")

_DEFAULT_SWEEP: Any = object()
"""``sweep_every`` not given: sweep every ``max(period, 60 s)``."""


def _milliseconds(name: str, value: TTL | None) -> int | None:
    """``value`` in milliseconds (``None`` stays ``None``); a bad one is refused under ``name``."""
    try:
        return ttl_to_ms(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("ttl", name, 1)) from None


def _check_cost(cost: int) -> None:
    if type(cost) is not int or cost < 1:
        raise ValueError(f"cost must be a positive int, got {cost!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of a hit. True in a boolean context when the hit was allowed."""

    allowed: bool
    limit: int
    remaining: int
    """How much cost the caller may still spend in this window."""
    reset_after: float
    """Seconds until the window ends and the full ``limit`` is available again."""
    resets_at: float
    """Unix time (seconds) at which the window ends."""

    @property
    def retry_after(self) -> float:
        """Seconds to wait before retrying: 0 when allowed (e.g. for a ``Retry-After`` reply)."""
        return 0.0 if self.allowed else self.reset_after

    def __bool__(self) -> bool:
        return self.allowed


class RateLimiter:
    """At most ``limit`` hits (or units of ``cost``) per key in each ``period``.

    ``storage`` needs ``increment`` (every built-in backend has it); share it with other uses
    through ``namespace(storage, "ratelimit:")``.
    """

    __slots__ = ("_next_sweep", "_period_ms", "_storage", "_sweep", "_sweep_every", "limit")

    def __init__(
        self, storage: Storage[Any], *, limit: int, period: TTL, sweep_every: TTL | None = _DEFAULT_SWEEP
    ) -> None:
        """``sweep_every``: at most how often a hit calls ``storage.sweep()`` (by default the longer
        of ``period`` and a minute; ``None``: never, e.g. when the storage sweeps on its own)."""
        if not is_atomic_storage(storage):
            raise TypeError(f"RateLimiter needs a storage with atomic increment, not {storage!r}")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        period_ms = _milliseconds("period", period)
        if period_ms is None:
            raise ValueError("period is required")
        self._storage: AtomicStorage[Any] = storage
        self.limit = limit
        self._period_ms = period_ms
        sweep = getattr(storage, "sweep", None)
        if sweep_every is _DEFAULT_SWEEP:
            sweep_every = max(period_ms, 60_000) / 1000
        self._sweep_every = _milliseconds("sweep_every", sweep_every)
        self._sweep = sweep if callable(sweep) and self._sweep_every is not None else None
        self._next_sweep = time.monotonic_ns() // 1_000_000 + (self._sweep_every or 0)

    @property
    def period(self) -> timedelta:
        return timedelta(milliseconds=self._period_ms)

    def _window(self, key: str) -> tuple[str, int, int]:
        """``(counter key, ms left in the window, window end in unix ms)`` for now."""
        if type(key) is not str or not key:
            bad_key(key)
        now = time.time_ns() // 1_000_000
        number = now // self._period_ms
        end = (number + 1) * self._period_ms
        return f"{key}:{number % 2}", end - now, end

    async def _maybe_sweep(self) -> None:
        """Remove expired entries of keys no longer hit, at most once per ``sweep_every``."""
        now = time.monotonic_ns() // 1_000_000
        if now < self._next_sweep:
            return
        self._next_sweep = now + (self._sweep_every or 0)  # before awaiting: one hit sweeps
        try:
            await self._sweep()  # type: ignore[misc]  # only called with a sweep
        except Exception:  # housekeeping: the hit goes on, the next round retries
            log.exception("botstate: RateLimiter's sweep of %r failed", self._storage)

    def _result(self, allowed: bool, used: int, left_ms: int, end_ms: int) -> RateLimitResult:
        remaining = min(self.limit, max(0, self.limit - used))
        return RateLimitResult(allowed, self.limit, remaining, left_ms / 1000, end_ms / 1000)

    async def hit(self, key: str, cost: int = 1) -> RateLimitResult:
        """Count ``cost`` against ``key``'s current window; ``allowed`` says whether it fit."""
        _check_cost(cost)
        if self._sweep is not None:
            await self._maybe_sweep()
        counter, left_ms, end_ms = self._window(key)  # after the sweep, however long it took
        total = await self._storage.increment(counter, cost, ttl=self._counter_ttl(left_ms))
        if total <= self.limit:
            return self._result(True, total, left_ms, end_ms)
        left_now = end_ms - time.time_ns() // 1_000_000
        if left_now > 0:  # a finished window needs nothing given back
            await self._storage.increment(counter, -cost, ttl=self._counter_ttl(left_now))
        return self._result(False, total - cost, left_ms, end_ms)

    def _counter_ttl(self, left_ms: int) -> float:
        """Seconds a window's counter lives when ``left_ms`` of the window are left: half a period
        more, for increments that arrive late (see the module docstring)."""
        return (left_ms + self._period_ms // 2) / 1000

    async def peek(self, key: str, cost: int = 1) -> RateLimitResult:
        """Whether a hit of ``cost`` would be allowed now, without counting it."""
        _check_cost(cost)
        counter, left_ms, end_ms = self._window(key)
        used = await self._storage.get(counter, 0)
        if type(used) is not int:
            raise WrongTypeError(
                "rate-limit counter is not an int", key=counter, backend=backend_name(self._storage)
            )
        return self._result(used + cost <= self.limit, used, left_ms, end_ms)

    async def reset(self, key: str) -> bool:
        """Forget ``key``'s current window (e.g. after an admin lifts a limit)."""
        return await self._storage.delete(self._window(key)[0])

    def __repr__(self) -> str:
        return f"RateLimiter({self._storage!r}, limit={self.limit}, period={self._period_ms / 1000}s)"
