from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from _processes import children, finish, release_together, shared_url
from botstate import MemoryStorage, StorageUnavailable
from botstate.ratelimit import RateLimiter, RateLimitResult
from botstate.wrappers import namespace
from wrappers.wrapper_backends import Minimal, any_storage

__all__ = ["any_storage", "shared_url"]  # the fixtures, imported for pytest

CONSUMER = Path(__file__).with_name("_consumer.py")


async def test_allows_up_to_the_limit_then_denies(any_storage: Any) -> None:
    limiter = RateLimiter(any_storage, limit=3, period=60)
    results = [await limiter.hit("user:1") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert not results[3]
    assert 0 < results[3].retry_after <= 60
    assert results[0].retry_after == 0
    assert (await limiter.hit("user:2")).allowed  # keys are independent


async def test_concurrent_hits_are_counted_exactly(any_storage: Any) -> None:
    limiter = RateLimiter(any_storage, limit=10, period=60)
    results = await asyncio.gather(*(limiter.hit("flood") for _ in range(30)))
    assert sum(r.allowed for r in results) == 10


async def test_a_new_window_restores_the_limit() -> None:
    limiter = RateLimiter(MemoryStorage(), limit=1, period=0.2)
    assert (await limiter.hit("k")).allowed
    denied = await limiter.hit("k")
    assert not denied.allowed
    await asyncio.sleep(denied.reset_after + 0.02)
    assert (await limiter.hit("k")).allowed


async def test_memory_stays_bounded_over_many_windows_without_sweeping() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()  # no background sweeper
    limiter = RateLimiter(storage, limit=5, period=0.05, sweep_every=None)
    keys = [f"user:{i}" for i in range(200)]
    windows = set()
    while len(windows) < 6:  # bounded: a window is 50 ms
        results = await asyncio.gather(*(limiter.hit(key) for key in keys))
        assert all(results)
        windows.add(results[0].resets_at)
        assert len(storage) <= 2 * len(keys)  # expired entries count here until swept
        await asyncio.sleep(0.03)


async def test_keys_no_longer_hit_are_swept_by_the_limiter() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    limiter = RateLimiter(storage, limit=5, period=0.05, sweep_every=0.05)
    await asyncio.gather(*(limiter.hit(f"user:{i}") for i in range(100)))
    assert len(storage) == 100
    await asyncio.sleep(0.12)  # every window of those keys has ended, and a sweep is due
    await limiter.hit("someone else")
    assert len(storage) == 1


async def test_a_failing_sweep_does_not_fail_the_hit(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenSweeps(MemoryStorage[Any]):
        sweeps = 0

        async def sweep(self) -> int:
            self.sweeps += 1
            raise StorageUnavailable("server went away", backend="memory")

    storage = BrokenSweeps()
    limiter = RateLimiter(storage, limit=5, period=60, sweep_every=0.01)
    await asyncio.sleep(0.02)
    assert (await limiter.hit("k")).remaining == 4
    assert storage.sweeps == 1
    assert "StorageUnavailable" in caplog.text
    await asyncio.sleep(0.02)
    assert (await limiter.hit("k")).remaining == 3  # and the next round tries again
    assert storage.sweeps == 2


async def test_by_default_the_limiter_sweeps_at_most_once_a_minute() -> None:
    class CountingSweeps(MemoryStorage[Any]):
        sweeps = 0

        async def sweep(self) -> int:
            self.sweeps += 1
            return await super().sweep()

    storage = CountingSweeps()
    limiter = RateLimiter(storage, limit=1000, period=0.01)
    for _ in range(50):
        await limiter.hit("k")
    assert storage.sweeps == 0  # the first is due a minute after start


async def test_a_denied_cost_is_not_counted() -> None:
    limiter = RateLimiter(MemoryStorage(), limit=5, period=60)
    assert (await limiter.hit("k", cost=3)).remaining == 2
    denied = await limiter.hit("k", cost=3)
    assert not denied.allowed
    assert denied.remaining == 2
    assert (await limiter.hit("k", cost=2)).allowed


async def test_peek_does_not_count_and_reset_restarts() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    limiter = RateLimiter(namespace(storage, "rl:"), limit=2, period=60)
    await limiter.hit("k")
    peeked = await limiter.peek("k")
    assert peeked.allowed
    assert peeked.remaining == 1
    assert not (await limiter.peek("k", cost=2)).allowed
    assert (await limiter.hit("k")).remaining == 0
    assert await limiter.reset("k") is True
    assert (await limiter.peek("k")).remaining == 2
    assert all(key.startswith("rl:k:") for key in storage._data)


async def test_result_reports_the_window_end() -> None:
    limiter = RateLimiter(MemoryStorage(), limit=1, period=timedelta(minutes=1))
    result = await limiter.hit("k")
    assert isinstance(result, RateLimitResult)
    assert result.resets_at % 60 == 0
    assert 0 < result.reset_after <= 60
    assert limiter.period == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("limit", "period"),
    [(0, 1), (-1, 1), (1.5, 1), (True, 1), (1, 0), (1, -1), (1, math.inf), (1, None)],
)
def test_bad_limit_or_period_is_a_value_error(limit: Any, period: Any) -> None:
    with pytest.raises(ValueError):
        RateLimiter(MemoryStorage(), limit=limit, period=period)


@pytest.mark.parametrize(
    ("options", "name"), [({"period": 0}, "period"), ({"sweep_every": 0}, "sweep_every")]
)
def test_a_bad_duration_is_refused_under_its_own_name(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be positive"):
        RateLimiter(MemoryStorage(), limit=1, **{"period": 1, **options})


@pytest.mark.parametrize("cost", [0, -5, "1", 1.0])
async def test_bad_cost_and_key(cost: Any) -> None:
    limiter = RateLimiter(MemoryStorage(), limit=1, period=1)
    with pytest.raises(ValueError, match="cost must be a positive int"):
        await limiter.hit("k", cost=cost)
    with pytest.raises(ValueError, match="cost must be a positive int"):
        await limiter.peek("k", cost=cost)  # not "allowed" for a cost that could never be hit
    with pytest.raises(ValueError):
        await limiter.hit("")


class LateIncrements(MemoryStorage[Any]):
    """Delivers one increment ``late`` seconds after it was sent (a slow round trip)."""

    late: float | None = None

    async def increment(self, key: str, amount: int = 1, *, ttl: Any = None) -> int:
        late, self.late = self.late, None
        if late is not None:
            await asyncio.sleep(late)
        return await super().increment(key, amount, ttl=ttl)


async def test_a_hit_sent_before_its_window_ended_but_arriving_after_is_still_counted_there() -> None:
    # Margins for a busy machine: the hit is sent up to 0.5 s late and still falls in the window,
    # and its increment arrives up to 0.8 s later than aimed and still finds the counter.
    storage = LateIncrements()
    limiter = RateLimiter(storage, limit=1, period=2)
    first = await limiter.hit("k")
    if first.reset_after < 0.6:  # too close to its end to aim at: take the next window
        await asyncio.sleep(first.reset_after + 0.01)
        first = await limiter.hit("k")
    assert first.allowed
    await asyncio.sleep(first.reset_after - 0.5)  # the window's last moments
    storage.late = 0.7  # this hit's increment reaches the storage after its window ended
    late = await limiter.hit("k")
    assert late.resets_at == first.resets_at  # sent in the first hit's window
    assert not late.allowed  # one hit per window: that window's was the first
    assert late.remaining == 0


def test_needs_atomic_increment() -> None:
    with pytest.raises(TypeError):
        RateLimiter(Minimal(), limit=1, period=1)  # type: ignore[arg-type]


async def test_two_connections_to_one_file_share_the_count_exactly(tmp_path: Path) -> None:
    from botstate.storages.sqlite import SQLiteStorage

    async with SQLiteStorage(tmp_path / "s.db") as one, SQLiteStorage(tmp_path / "s.db") as two:
        limiters = [RateLimiter(one, limit=7, period=60), RateLimiter(two, limit=7, period=60)]
        results = await asyncio.gather(*(limiters[i % 2].hit("user") for i in range(20)))
    assert sum(r.allowed for r in results) == 7


async def test_four_processes_hitting_one_key_share_the_limit_exactly(shared_url: str, unique: str) -> None:
    limit, hits = 30, 25  # 100 concurrent hits from 4 processes, 30 allowed in the window
    runs = [(shared_url, "ratelimit", f"{unique}:flood", hits, limit)] * 4
    async with children(CONSUMER, runs) as processes:
        await release_together(processes, 30)
        outputs = [await finish(process, 30) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4
    assert sum(int(out) for out in outputs) == limit
