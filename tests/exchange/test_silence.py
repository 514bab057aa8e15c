"""A silent channel is told from a quiet market by the trade tape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recorder.exchange.silence import SilenceWatch
from tests.harness.fakeclock import FakeClock

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def watch_at(clock: FakeClock) -> SilenceWatch:
    watch = SilenceWatch(60.0, skew_s=2.0, clock=clock.monotonic)
    for connection in (0, 1):
        watch.subscribed(connection, "BTC_USD", T0)
    return watch


def wall(clock: FakeClock) -> datetime:
    return T0 + timedelta(seconds=clock.now)


def test_a_quiet_market_is_never_silent() -> None:
    clock = FakeClock()
    watch = watch_at(clock)
    watch.tape("BTC_USD", T0 - timedelta(minutes=5))  # the tape's newest trade predates us
    for _ in range(100):
        clock.advance(30)
        assert watch.silent(wall(clock)) == []


def test_a_connection_that_misses_trades_is_resubscribed_then_reconnected() -> None:
    clock = FakeClock()
    watch = watch_at(clock)
    clock.advance(10)
    watch.heard(0, "BTC_USD", wall(clock))
    watch.heard(1, "BTC_USD", wall(clock))
    # Connection 1 goes silent; the market trades on, connection 0 hears it.
    for _ in range(5):
        clock.advance(10)
        watch.tape("BTC_USD", wall(clock))
        watch.heard(0, "BTC_USD", wall(clock))
        assert watch.silent(wall(clock)) == []
    clock.advance(10)  # 60 s since connection 1 last heard anything
    watch.tape("BTC_USD", wall(clock))
    watch.heard(0, "BTC_USD", wall(clock))
    [silent] = watch.silent(wall(clock))
    assert (silent.connection, silent.pair, silent.action) == (1, "BTC_USD", "resubscribe")
    assert silent.behind_s == 60.0
    # Still silent a whole period later while the pair keeps trading: reconnect.
    for _ in range(6):
        clock.advance(10)
        watch.tape("BTC_USD", wall(clock))
        watch.heard(0, "BTC_USD", wall(clock))
    [again] = watch.silent(wall(clock))
    assert (again.connection, again.action) == (1, "reconnect")


def test_resubscribing_helps_if_the_connection_delivers_again() -> None:
    clock = FakeClock()
    watch = watch_at(clock)
    clock.advance(61)
    watch.tape("BTC_USD", wall(clock))
    assert {s.connection for s in watch.silent(wall(clock))} == {0, 1}
    clock.advance(5)
    watch.heard(1, "BTC_USD", wall(clock))
    for _ in range(6):
        clock.advance(10)
        watch.tape("BTC_USD", wall(clock))
        watch.heard(1, "BTC_USD", wall(clock))
    assert [(s.connection, s.action) for s in watch.silent(wall(clock))] == [(0, "reconnect")]


def test_a_trade_made_before_a_connection_subscribed_is_not_held_against_it() -> None:
    clock = FakeClock()
    watch = watch_at(clock)
    # The tape poller learns late of a trade made a second before the subscription.
    clock.advance(3)
    watch.tape("BTC_USD", T0 - timedelta(seconds=1))
    clock.advance(120)
    assert watch.silent(wall(clock)) == []


def test_a_connection_that_went_down_is_forgotten() -> None:
    clock = FakeClock()
    watch = watch_at(clock)
    watch.forget(1)
    clock.advance(61)
    watch.tape("BTC_USD", wall(clock))
    assert [s.connection for s in watch.silent(wall(clock))] == [0]
