"""The replay clock (`recorder.sim.replay.ReplayClock`): real seconds come in as numbers, so
its speed, pauses and bounds are checked without waiting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recorder.sim.replay import (
    ReplayClock,
    micros_date,
    micros_datetime,
    parse_speed,
    to_micros,
)

SINCE = 1_700_000_000_000_000
UNTIL = SINCE + 60_000_000
SECOND = 1_000_000


def test_a_clock_stands_at_since_until_it_runs() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=2.0)
    assert clock.now(100.0) == SINCE
    assert clock.seconds_until(SINCE + SECOND, 100.0) is None
    assert not clock.running


def test_a_running_clock_moves_speed_times_real_time() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=2.0)
    clock.run(100.0)
    assert clock.now(101.5) == SINCE + 3 * SECOND
    # 5 s of replay ahead at 3 s in: 2 s of replay, 1 real second at twice real time
    assert clock.seconds_until(SINCE + 5 * SECOND, 101.5) == pytest.approx(1.0)
    assert clock.seconds_until(SINCE + 2 * SECOND, 101.5) == 0.0


def test_a_slow_clock_moves_less_than_real_time() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=0.5)
    clock.run(0.0)
    assert clock.now(4.0) == SINCE + 2 * SECOND
    assert clock.seconds_until(SINCE + 3 * SECOND, 4.0) == pytest.approx(2.0)


def test_a_stopped_clock_keeps_its_time_and_resumes_from_it() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=1.0)
    clock.run(10.0)
    clock.stop(12.0)
    assert clock.now(50.0) == SINCE + 2 * SECOND
    clock.stop(60.0)  # stopping twice changes nothing
    clock.run(70.0)
    clock.run(75.0)  # nor does running twice
    assert clock.now(71.0) == SINCE + 3 * SECOND


def test_a_clock_never_passes_until() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=10.0)
    clock.run(0.0)
    assert clock.now(1_000.0) == UNTIL
    assert clock.seconds_until(UNTIL + SECOND, 0.0) == pytest.approx(6.0)
    clock.reach(UNTIL + SECOND, 1.0)
    assert clock.now(1.0) == UNTIL


def test_as_fast_as_possible_the_clock_moves_with_the_events() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=None)
    assert clock.seconds_until(SINCE + SECOND, 0.0) is None  # stopped: waits
    clock.run(0.0)
    assert clock.seconds_until(SINCE + 50 * SECOND, 0.0) == 0.0
    assert clock.now(1_000.0) == SINCE  # real time alone does not move it
    clock.reach(SINCE + 7, 1.0)
    assert clock.now(2.0) == SINCE + 7
    clock.reach(SINCE + 3, 3.0)  # never back
    assert clock.now(3.0) == SINCE + 7


def test_reaching_a_date_at_speed_carries_on_from_it() -> None:
    clock = ReplayClock(SINCE, UNTIL, speed=1.0)
    clock.run(0.0)
    clock.reach(SINCE + 2 * SECOND, 2.0)
    assert clock.now(3.0) == SINCE + 3 * SECOND


def test_until_before_since_is_refused() -> None:
    with pytest.raises(ValueError, match="until is before since"):
        ReplayClock(UNTIL, SINCE, speed=1.0)


SPEEDS = [("1", 1.0), ("2.5", 2.5), ("0", None), ("max", None), ("MAX", None), ("0.1", 0.1)]


@pytest.mark.parametrize(("text", "speed"), SPEEDS)
def test_speeds(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["-1", "fast", "inf", "nan", ""])
def test_speeds_refused(text: str) -> None:
    with pytest.raises(ValueError, match="speed: a number > 0, 0 or max"):
        parse_speed(text)


def test_dates_are_written_with_six_decimals_as_the_simulator_writes_them() -> None:
    moment = datetime(2026, 1, 1, 0, 0, 0, 120_000, tzinfo=UTC)
    assert format(micros_date(to_micros(moment)), "f") == "1767225600.120000"
    assert micros_datetime(to_micros(moment)) == moment
