"""Candles from trades: buckets, since/until/limit, totals."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from recorder.config import CANDLE_WIDTH_S
from recorder.sim.candles import CandleSeries, candles
from recorder.sim.engine import Fill

DAY = 1_700_006_400  # a UTC midnight


def trade(tid: int, at_s: float, price: str, amount: str) -> Fill:
    return Fill(tid, "BTC_USD", "buy", Decimal(price), Decimal(amount), 1, 2, Decimal(str(at_s)))


TRADES = [
    trade(1, DAY + 10, "100", "1"),
    trade(2, DAY + 50, "105", "2"),
    trade(3, DAY + 59.999, "99", "0.5"),
    trade(4, DAY + 60, "101", "1"),
    trade(5, DAY + 3 * 60 + 1, "102", "0.25"),
]


def test_one_minute_buckets() -> None:
    chart = candles(TRADES, "1")
    assert [(c.time, c.open, c.high, c.low, c.close, c.volume) for c in chart] == [
        (DAY, Decimal(100), Decimal(105), Decimal(99), Decimal(99), Decimal("3.5")),
        (DAY + 60, Decimal(101), Decimal(101), Decimal(101), Decimal(101), Decimal(1)),
        (DAY + 180, Decimal(102), Decimal(102), Decimal(102), Decimal(102), Decimal("0.25")),
    ]


def test_day_bucket_starts_at_utc_midnight() -> None:
    [day] = candles(TRADES, "D")
    assert day.time == DAY
    assert day.volume == Decimal("4.75")


def test_since_until_and_limit_select_bucket_starts() -> None:
    assert [c.time for c in candles(TRADES, "1", since=DAY + 1)] == [DAY + 60, DAY + 180]
    assert [c.time for c in candles(TRADES, "1", until=DAY + 60)] == [DAY, DAY + 60]
    assert [c.time for c in candles(TRADES, "1", since=DAY, until=DAY + 59)] == [DAY]
    assert [c.time for c in candles(TRADES, "1", limit=2)] == [DAY + 60, DAY + 180]
    assert candles(TRADES, "1", limit=0) == []


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * 86400), st.integers(1, 10**6), st.integers(1, 10**6)),
        max_size=60,
    ),
    st.sampled_from(sorted(CANDLE_WIDTH_S)),
)
def test_candle_totals_equal_the_trades(rows: list[tuple[int, int, int]], chart_type: str) -> None:
    trades = [
        trade(i, DAY + at, str(Decimal(p) / 100), str(Decimal(a) / 10**8))
        for i, (at, p, a) in enumerate(sorted(rows))
    ]
    chart = candles(trades, chart_type)
    assert sum((c.volume for c in chart), Decimal(0)) == sum((t.amount for t in trades), Decimal(0))
    for c in chart:
        inside = [t for t in trades if c.time <= t.timestamp < c.time + CANDLE_WIDTH_S[chart_type]]
        assert c.open == inside[0].price
        assert c.close == inside[-1].price
        assert c.high == max(t.price for t in inside)
        assert c.low == min(t.price for t in inside)


@given(
    st.lists(
        st.tuples(st.integers(0, 3 * 86400), st.integers(1, 10**6), st.integers(1, 10**6)),
        max_size=60,
    ),
    st.sampled_from(sorted(CANDLE_WIDTH_S)),
    st.one_of(st.none(), st.integers(0, 3 * 86400)),
    st.one_of(st.none(), st.integers(0, 3 * 86400)),
    st.one_of(st.none(), st.integers(0, 20)),
)
def test_incremental_series_matches_the_reference(
    rows: list[tuple[int, int, int]],
    chart_type: str,
    since: int | None,
    until: int | None,
    limit: int | None,
) -> None:
    trades = [
        trade(i, DAY + at, str(Decimal(p) / 100), str(Decimal(a) / 10**8))
        for i, (at, p, a) in enumerate(sorted(rows))
    ]
    series = CandleSeries(chart_type)
    for t in trades:
        series.add(t)
    since_s = None if since is None else DAY + since
    until_s = None if until is None else DAY + until
    assert series.select(since=since_s, until=until_s, limit=limit) == candles(
        trades, chart_type, since=since_s, until=until_s, limit=limit
    )
