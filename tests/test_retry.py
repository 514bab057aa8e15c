"""The one retry policy: capped, jittered exponential delays with a reset on success or
after a healthy attempt, and the same delays for tenacity's own retrying."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from recorder.retry import STREAM_RECONNECT, Backoff
from tests.harness.fakeclock import FakeClock

BACKOFF = Backoff(initial_s=1.0, max_s=8.0, healthy_after_s=60.0)


def test_delays_grow_to_the_cap_each_in_the_upper_half_of_its_ceiling() -> None:
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (200, 8.0)]:
        delays = [BACKOFF.delay_s(failures) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), failures
        assert len(set(delays)) > 1, "jittered"


def test_failures_grow_the_delay_and_a_success_resets_it() -> None:
    attempts = BACKOFF.attempts(FakeClock())
    assert [attempts.failed() <= c for c in (1.0, 2.0, 4.0)] == [True] * 3
    assert attempts.failures == 3
    assert attempts.failed() >= 4.0
    attempts.succeeded()
    assert attempts.failures == 0
    assert attempts.failed() <= 1.0


def test_an_attempt_that_ran_healthy_long_enough_starts_over() -> None:
    clock = FakeClock()
    attempts = BACKOFF.attempts(clock)
    for _ in range(4):
        attempts.started()
        clock.advance(59.0)  # short of healthy: the failures add up
        attempts.failed()
    assert attempts.failures == 4
    attempts.started()
    clock.advance(60.0)
    assert attempts.failed() <= 1.0
    assert attempts.failures == 1


def test_without_healthy_after_only_a_success_resets() -> None:
    clock = FakeClock()
    attempts = Backoff(initial_s=1.0, max_s=8.0).attempts(clock)
    attempts.failed()
    attempts.started()
    clock.advance(10_000.0)
    attempts.failed()
    assert attempts.failures == 2


async def test_tenacity_retrying_waits_the_same_delays() -> None:
    waited: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waited.append(seconds)

    calls = 0

    async def always_down() -> None:
        nonlocal calls
        async for attempt in AsyncRetrying(
            wait=BACKOFF.wait(),
            stop=stop_after_attempt(5),
            retry=retry_if_exception_type(ConnectionError),
            sleep=record_sleep,
            reraise=True,
        ):
            with attempt:
                calls += 1
                raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        await always_down()
    assert calls == 5
    assert len(waited) == 4
    for delay, ceiling in zip(waited, [1.0, 2.0, 4.0, 8.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_refusing_exchange_sees_one_stream_attempt_per_cap() -> None:
    backoff = replace(STREAM_RECONNECT, max_s=10.0)
    delays = [backoff.delay_s(n) for n in range(1, 30)]
    assert delays[0] < 1.0  # the first retry within a second
    growing = [d for d in delays if d < backoff.max_s]
    assert len(growing) == 5  # below 0.5, 1, 2, 4, 8: each jittered in its upper half
    assert all(d > 0 for d in growing)
    assert delays[len(growing) :] == [10.0] * (len(delays) - len(growing))
