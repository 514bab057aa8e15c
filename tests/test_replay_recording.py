"""The replay of a small recording written by hand: what each recorded row becomes on the
wire and in the served book, where the round trip (tests/test_replay.py) would only show
that both sides agree.

The recording: one pair; a snapshot asked for one second before the period; in the period,
fills of a snapshot order, and a cancel whose other id names another resting order; the
tape around the period; candles.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recorder.sim import wire
from recorder.sim.ahead import packet_text
from recorder.sim.engine import Event
from recorder.sim.replay import ReplaySettings, run_replay
from recorder.storage.migrate import migrate
from tests.harness.postgres import query
from tests.harness.waiting import eventually

SINCE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(seconds=10)
SESSION = "00000000-0000-0000-0000-000000000001"
SNAPSHOT = "00000000-0000-0000-0000-000000000002"


def at(seconds: float) -> datetime:
    return SINCE + timedelta(seconds=seconds)


def write_recording(dsn: str) -> None:
    statements: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT INTO pairs VALUES ('BTC_USD', 'BTC', 'USD', 2, 0.00000001, 100000000, %s, %s)",
         (SINCE, SINCE)),
        # asked for at -1 s, holding the events up to -1.2 s (none of those after its request)
        ("INSERT INTO book_snapshots VALUES (%s, 'BTC_USD', %s, %s, false, 'connect', %s)",
         (SNAPSHOT, at(-1), at(-0.5), at(-1.2))),
        ("INSERT INTO book_snapshot_orders VALUES (%s, 'buy', 0, 1, 100.00, 1.50000000, %s, %s),"
         " (%s, 'sell', 0, 2, 101.00, 2.50000000, %s, %s),"
         " (%s, 'sell', 1, 3, 102.50, 0.1, %s, %s)",
         (SNAPSHOT, at(-30), at(-1), SNAPSHOT, at(-20), at(-1), SNAPSHOT, at(-10), at(-1))),
        # 0.2 s: order 9 filled order 2 by 0.5
        ("INSERT INTO book_events VALUES ('BTC_USD', 9, 'new', %s, 'buy', 101.00, 0E-8, "
         "NULL, %s, %s)", (at(0.2), at(0.21), SESSION)),
        ("INSERT INTO book_fills VALUES ('BTC_USD', 3, 9, 2, 'sell', 101.00, 0.50000000, %s, %s)",
         (at(0.2), at(0.21))),
        # 1 s: order 11 filled order 2 by 0.00000100 and rests 0.25 at 100.50
        ("INSERT INTO book_events VALUES ('BTC_USD', 11, 'new', %s, 'buy', 100.50, 0.25000000, "
         "NULL, %s, %s)", (at(1), at(1.01), SESSION)),
        ("INSERT INTO book_fills VALUES ('BTC_USD', 5, 11, 2, 'sell', 101.00, 0.00000100, %s, %s)",
         (at(1), at(1.01))),
        # 2 s: a cancel of order 1 whose cancel_order_id (3) names another resting order
        ("INSERT INTO book_events VALUES ('BTC_USD', 1, 'cancel', %s, 'buy', 100.00, "
         "1.50000000, 3, %s, %s)", (at(2), at(2.01), SESSION)),
        ("INSERT INTO trades VALUES ('BTC_USD', 2, %s, 'buy', 99.90, 0.3, %s),"
         " ('BTC_USD', 3, %s, 'sell', 101.00, 0.50000000, %s),"
         " ('BTC_USD', 5, %s, 'sell', 101.00, 0.00000100, %s),"
         " ('BTC_USD', 7, %s, 'sell', 101.00, 1, %s)",
         (at(-60), at(-59), at(0.2), at(1), at(1), at(2), at(11), at(12))),
        ("INSERT INTO candles VALUES ('BTC_USD', '1', %s, 99.90, 101.00, 99.90, 101.00, "
         "0.80000100, %s), ('BTC_USD', '1', %s, 101, 101, 101, 101, 1, %s)",
         (SINCE, at(3), SINCE + timedelta(minutes=1), at(61))),
    ]  # fmt: skip
    for statement, params in statements:
        query(dsn, statement + " RETURNING 1", *params)


@pytest.fixture
def recording(db: str) -> str:
    migrate(db)
    write_recording(db)
    return db


async def test_recorded_rows_go_out_as_they_were_stored(recording: str) -> None:
    settings = ReplaySettings(recording, ("BTC_USD",), SINCE, UNTIL, speed=None, start="now")
    async with run_replay(settings) as replay:
        sent: list[str] = []

        def written(event: Event) -> None:
            payload = wire.book_payload(event, replay.settings.cancel_id)
            sent.append(packet_text(*replay.book_emission(f"book_{event.pair}", payload)))

        replay.engine.subscribe(written)  # before the source task has first run
        await eventually(lambda: replay.state()["replay"]["done"], what="the replay at its end")
        await replay.drained()
        assert replay.emitted_count == 3
        assert sent == [
            '2["book_BTC_USD",{"success":true,"date":1795608000.200000,"oid":9,"type":"buy",'
            '"price":101.00,"amount":0.00000000,"trades":[{"tid":3,"type":"sell",'
            '"price":"101.00","amount":"0.50000000","o_id":2}]}]',
            '2["book_BTC_USD",{"success":true,"date":1795608001.000000,"oid":11,"type":"buy",'
            '"price":100.50,"amount":0.25000000,"trades":[{"tid":5,"type":"sell",'
            '"price":"101.00","amount":"0.00000100","o_id":2}]}]',
            '2["book_BTC_USD",{"success":true,"date":1795608002.000000,"oid":1,'
            '"cancel_order_id":3,"price":100.00,"type":"buy","amount":1.50000000,'
            '"pair":"BTC_USD","cancelled":true}]',
        ]
        book = replay.engine.books["BTC_USD"]
        # order 2: 2.5 in the snapshot, less the two fills after it; order 3 stays although
        # the cancel's other id names it; order 11 rests, dated by its event
        assert [(o.oid, str(o.amount), str(o.timestamp)) for o in book.orders("sell")] == [
            (2, "1.99999900", "1795607980.000000"),
            (3, "0.1", "1795607990.000000"),
        ]
        assert [(o.oid, str(o.amount), str(o.timestamp)) for o in book.orders("buy")] == [
            (11, "0.25000000", "1795608001.000000")
        ]
        # the tape up to `until`, never the trade after it
        assert [(t.tid, str(t.price), str(t.amount)) for t in replay.engine.trades] == [
            (2, "99.90", "0.3"),
            (3, "101.00", "0.50000000"),
            (5, "101.00", "0.00000100"),
        ]
        # the candle of the period's minute, as recorded; not the next minute's
        candles = replay.charts.series["BTC_USD"]["1"].select()
        assert [(c.time, str(c.volume)) for c in candles] == [(1795608000, "0.80000100")]
        pairs = replay.engine.specs["BTC_USD"]
        assert (pairs.price_precision, str(pairs.minimum_order_size)) == (2, "1E-8")
