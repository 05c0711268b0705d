"""TTL normalisation shared by every backend, so ``ttl`` means the same thing everywhere."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import TypeAlias

TTL: TypeAlias = "float | int | timedelta"
"""A time to live: seconds (``int``/``float``) or a ``timedelta``; millisecond precision."""


MAX_TTL_SECONDS = 100 * 365.25 * 24 * 3600
"""The longest TTL: every backend can add it to a timestamp (PostgreSQL intervals, 64-bit ms)."""


def ttl_to_ms(ttl: TTL | None, default_ms: int | None = None) -> int | None:
    """Return ``ttl`` in whole milliseconds (at least 1), or ``default_ms`` when ``ttl`` is None.

    Milliseconds are the finest unit every backend can honour (Redis ``PX``), so the value is
    rounded there once instead of being truncated differently by each backend.
    """
    if ttl is None:
        return default_ms
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        if isinstance(ttl, int) and abs(ttl) > MAX_TTL_SECONDS:  # float() of a huge int overflows
            seconds = math.inf if ttl > 0 else -math.inf
        else:
            seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds (int or float) or a timedelta, not {type(ttl).__name__}")
    if not seconds > 0:  # also rejects NaN
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    if not seconds <= MAX_TTL_SECONDS:  # also rejects infinity
        raise ValueError(
            f"ttl must be at most {MAX_TTL_SECONDS:.0f} seconds (100 years), got {ttl!r}; "
            "pass ttl=None for no expiry"
        )
    return max(1, round(seconds * 1000))


def now_ms() -> int:
    """Wall-clock milliseconds: what persistent backends store, since it survives restarts."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> float:
    """Monotonic milliseconds: what in-process backends use, immune to clock changes."""
    return time.monotonic() * 1000.0
