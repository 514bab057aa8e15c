"""Token buckets on a fake clock: exact spacing, no window over the limit, FIFO waiters."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from recorder.exchange.ratelimit import TokenBucket


class FakeClock:
    """Time stands still until someone sleeps; sleeping moves it on."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.now_s += delay_s
        await asyncio.sleep(0)


def max_in_any_window(times_s: list[float], window_s: float) -> int:
    times_s = sorted(times_s)
    return max(sum(1 for t in times_s if start <= t < start + window_s - 1e-9) for start in times_s)


@pytest.mark.parametrize("rate_per_s", [100.0, 2.0, 7.5])
async def test_calls_never_exceed_the_rate_in_any_second(rate_per_s: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s, clock=clock, sleep=clock.sleep)
    taken: list[float] = []

    async def caller() -> None:
        for _ in range(int(rate_per_s) + 3):
            await bucket.acquire()
            taken.append(clock())

    await asyncio.gather(*(caller() for _ in range(3)))
    assert len(taken) == 3 * (int(rate_per_s) + 3)
    assert max_in_any_window(taken, 1.0) == math.ceil(rate_per_s)
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert min(gaps) == pytest.approx(1 / rate_per_s)


async def test_capacity_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, capacity=3, clock=clock, sleep=clock.sleep)
    taken = []
    for _ in range(5):
        await bucket.acquire()
        taken.append(clock() - 100.0)
    assert taken == pytest.approx([0, 0, 0, 0.5, 1.0])


async def test_idle_time_refills_only_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    clock.now_s += 60
    await bucket.acquire()
    before = clock()
    await bucket.acquire()
    assert clock() - before == pytest.approx(0.1)


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(1, capacity=0.5)
