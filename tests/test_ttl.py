"""TTL normalisation: every backend turns ``ttl`` into the same whole milliseconds."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest

from botstate._ttl import monotonic_ms, now_ms, ttl_to_ms


@pytest.mark.parametrize(
    ("ttl", "ms"),
    [
        (1, 1000),
        (60, 60_000),
        (0.25, 250),
        (1.0006, 1001),  # rounded, not truncated
        (1.0004, 1000),
        (0.0004, 1),  # anything positive lasts at least 1 ms
        (1e-9, 1),
        (10**6, 10**9),
        (timedelta(hours=1), 3_600_000),
        (timedelta(milliseconds=250), 250),
        (timedelta(microseconds=1600), 2),
        (timedelta(microseconds=1), 1),
    ],
)
def test_ttl_to_ms(ttl: Any, ms: int) -> None:
    result = ttl_to_ms(ttl)
    assert result == ms
    assert type(result) is int


def test_none_means_the_default() -> None:
    assert ttl_to_ms(None) is None
    assert ttl_to_ms(None, 5000) == 5000
    assert ttl_to_ms(2, 5000) == 2000


@pytest.mark.parametrize(
    "ttl",
    [
        *(0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, timedelta(0), timedelta(seconds=-1)),
        *(10**400, -(10**400)),  # too big for a float
    ],
)
def test_non_positive_or_non_finite_ttl_is_a_value_error(ttl: Any) -> None:
    with pytest.raises(ValueError):
        ttl_to_ms(ttl)


@pytest.mark.parametrize("ttl", [True, False, "60", b"60", [60], object()])
def test_wrong_type_is_a_type_error(ttl: Any) -> None:
    with pytest.raises(TypeError):
        ttl_to_ms(ttl)


def test_now_ms_is_wall_clock_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    now = now_ms()
    after = time.time_ns() // 1_000_000
    assert type(now) is int
    assert before <= now <= after


def test_monotonic_ms_never_goes_back() -> None:
    readings = [monotonic_ms() for _ in range(100)]
    assert readings == sorted(readings)


def test_ttl_up_to_a_hundred_years_is_accepted() -> None:
    from botstate._ttl import MAX_TTL_SECONDS

    assert ttl_to_ms(MAX_TTL_SECONDS) == round(MAX_TTL_SECONDS * 1000)
    with pytest.raises(ValueError, match="100 years"):
        ttl_to_ms(MAX_TTL_SECONDS + 1)
