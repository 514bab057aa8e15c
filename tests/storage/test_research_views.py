"""The research views of 0006 on hand-made rows, on plain PostgreSQL and on TimescaleDB.

Each view is checked against what the rows say by construction: a snapshot's top of book,
the rebuilt book's top, VWAP from the trades, stream sessions closed / never closed / open
and the gaps between them, a fill missing from the tape, a candle missing where the tape
has trades.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder.research.export import Selection, export
from recorder.storage.migrate import migrate

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
S1, S2, S3 = (uuid.UUID(int=n) for n in (1, 2, 3))
SNAP = uuid.UUID(int=10)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "INSERT INTO pairs VALUES ('BTC_USD', 'BTC', 'USD', 2, 0.001, 100, %s, %s)", (T0, T0)
        )
        # Sessions: closed at 60 s; never closed (recorder killed; last event at 130 s);
        # the newest, still open.
        conn.execute(
            "INSERT INTO stream_sessions VALUES (%s, %s, %s, 'transport close'), "
            "(%s, %s, NULL, NULL), (%s, %s, NULL, NULL)",
            (S1, s(0), s(60), S2, s(70), S3, s(200)),
        )
        # A snapshot at 1 s: bids 100 (2 orders), 99; asks 101.
        conn.execute(
            "INSERT INTO book_snapshots VALUES (%s, 'BTC_USD', %s, %s, false, 'connect')",
            (SNAP, s(1), s(1)),
        )
        book = [
            ("buy", 0, 1, "100", "0.5"), ("buy", 1, 2, "100", "0.25"), ("buy", 2, 3, "99", "1"),
            ("sell", 0, 4, "101", "0.75"),
        ]  # fmt: skip
        for side, pos, oid, price, amount in book:
            conn.execute(
                "INSERT INTO book_snapshot_orders VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (SNAP, side, pos, oid, Decimal(price), Decimal(amount), s(0), s(1)),
            )
        # At 5 s a new ask at 100.5; at 6 s order 1 is cancelled; at 130 s an event in S2.
        events = [
            (5, "new", "sell", "100.5", "0.1", None, S1), (6, "cancel", "buy", "100", "0.5", 1, S1),
            (130, "new", "buy", "90", "1", None, S2),
        ]  # fmt: skip
        for n, (at, kind, side, price, amount, cancel, session) in enumerate(events):
            conn.execute(
                "INSERT INTO book_events VALUES ('BTC_USD', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (100 + n if cancel is None else cancel, kind, s(at), side, Decimal(price),
                 Decimal(amount), cancel, s(at), session),
            )  # fmt: skip
        # Trades at 0.5 s, 10 s, 30 s; a fill at 20 s (tid 7) is missing from the tape.
        trades = [(1, 0.5, "100", "1"), (5, 10, "102", "3"), (9, 30, "101", "0.5")]
        for tid, at, price, amount in trades:
            conn.execute(
                "INSERT INTO trades VALUES ('BTC_USD', %s, %s, 'buy', %s, %s, %s)",
                (tid, s(at), Decimal(price), Decimal(amount), s(at)),
            )
        conn.execute(
            "INSERT INTO book_fills VALUES ('BTC_USD', 7, 1, 2, 'sell', 100, 0.1, %s, %s)",
            (s(20), s(20)),
        )
        # Candles at 12:00 and 12:03 (1m): 12:01 and 12:02 are missing; the tape has a
        # trade at 12:01:30 (added below), none at 12:02.
        for minute in (0, 3):
            conn.execute(
                "INSERT INTO candles VALUES ('BTC_USD', '1', %s, 1, 1, 1, 1, 1, %s)",
                (s(60 * minute), T0),
            )
        conn.execute(
            "INSERT INTO trades VALUES ('BTC_USD', 11, %s, 'sell', 100, 1, %s)", (s(90), s(90))
        )
    return db_dsn


def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), params or None).fetchall()


def test_top_of_book_of_a_snapshot(dsn: str) -> None:
    got = rows(dsn, "SELECT best_bid, bid_size, best_ask, ask_size, spread, mid "
               "FROM top_of_book_snapshots WHERE snapshot_id = %s", SNAP)  # fmt: skip
    assert got == [(100, Decimal("0.75"), 101, Decimal("0.75"), 1, Decimal("100.5"))]


def test_top_of_book_of_the_rebuilt_book(dsn: str) -> None:
    at_2 = rows(dsn, "SELECT * FROM top_of_book_at('BTC_USD', %s)", s(2))
    assert at_2 == [(100, Decimal("0.75"), 101, Decimal("0.75"), 1, Decimal("100.5"))]
    # After the new ask at 100.5 and the cancel of order 1 (0.5 at 100).
    at_7 = rows(dsn, "SELECT * FROM top_of_book_at('BTC_USD', %s)", s(7))
    assert at_7 == [(100, Decimal("0.25"), Decimal("100.5"), Decimal("0.1"), Decimal("0.5"),
                     Decimal("100.25"))]  # fmt: skip
    # Before any snapshot: one row of nulls.
    assert rows(dsn, "SELECT * FROM top_of_book_at('BTC_USD', %s)", s(0)) == [(None,) * 6]
    series = rows(dsn, "SELECT at, spread FROM top_of_book_series('BTC_USD', %s, %s, %s)",
                  s(2), s(8), timedelta(seconds=3))  # fmt: skip
    assert series == [(s(2), 1), (s(5), Decimal("0.5")), (s(8), Decimal("0.5"))]


def test_vwap(dsn: str) -> None:
    # Trades in [0, 31): 100 x 1, 102 x 3, 101 x 0.5 (and 100 x 1 at 90 s, outside).
    expected = (Decimal(100) + Decimal(306) + Decimal("50.5")) / Decimal("4.5")
    (got,) = rows(dsn, "SELECT vwap('BTC_USD', %s, %s)", s(0), s(31))[0]
    assert abs(got - expected) < Decimal("1e-15")
    assert rows(dsn, "SELECT vwap('BTC_USD', %s, %s)", s(40), s(50)) == [(None,)]
    minute = rows(dsn, "SELECT vwap, volume, trades FROM vwap_1m WHERE bucket = %s", T0)
    assert minute == [(pytest.approx(expected), Decimal("4.5"), 3)]


def test_stream_sessions_and_gaps(dsn: str) -> None:
    sessions = rows(dsn, "SELECT session_id, ended_at, status, reason FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert sessions[0] == (S1, s(60), "closed", "transport close")
    # Never closed: its end is its last event (130 s), before the next session.
    assert sessions[1] == (S2, s(130), "unclosed", "recorder died (session never closed)")
    assert sessions[2][0] == S3
    assert sessions[2][2:] == ("open", None)
    gaps = rows(dsn, "SELECT gap_start, gap_end, cause FROM stream_gaps ORDER BY gap_start")
    assert gaps == [
        (s(60), s(70), "transport close"),
        (s(130), s(200), "recorder died (session never closed)"),
    ]
    book = rows(dsn, "SELECT pair, session_id, valid_from, valid_to FROM book_coverage")
    assert book == [("BTC_USD", S1, s(1), s(60))]


def test_tape_holes_and_quiet_stretches(dsn: str) -> None:
    assert rows(dsn, "SELECT pair, tid FROM trade_tape_holes") == [("BTC_USD", 7)]
    stretches = rows(dsn, "SELECT gap_start, gap_end, stream_live, fills "
                     "FROM trade_quiet_stretches(%s)", timedelta(seconds=15))  # fmt: skip
    assert stretches == [
        (s(10), s(30), timedelta(seconds=20), 1),  # a fill in it: the hole above
        (s(30), s(90), timedelta(seconds=50), 0),  # stream down 60-70 s
    ]


def test_candle_gaps_and_the_coverage_row(dsn: str) -> None:
    gaps = rows(dsn, "SELECT pair, resolution, gap_start, gap_end, missing_buckets, trades "
                "FROM candle_gaps")  # fmt: skip
    assert gaps == [("BTC_USD", "1", s(60), s(180), 2, 1)]
    (row,) = rows(dsn, "SELECT pair, trades, book_events, book_fills, snapshots, candles, "
                  "tape_holes, candle_holes FROM coverage")  # fmt: skip
    assert row == ("BTC_USD", 4, 3, 1, 1, 2, 1, 1)


def test_researchers_may_read_the_views(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'recorder_research'")
        if not role.fetchone():
            pytest.skip("no recorder_research role on this server")
        for view in ("coverage", "stream_gaps", "candle_gaps", "vwap_1h", "top_of_book_snapshots"):
            (allowed,) = conn.execute(
                "SELECT has_table_privilege('recorder_research', %s, 'SELECT')", (view,)
            ).fetchone() or (False,)
            assert allowed, view
        (allowed,) = conn.execute(
            "SELECT has_function_privilege('recorder_research', "
            "'top_of_book_at(text, timestamptz)', 'EXECUTE')"
        ).fetchone() or (False,)
        assert allowed


@pytest.mark.parametrize(
    "table",
    [
        "trades",
        "book_snapshot_orders",
        "book_events",
        "candles",
        "ohlcv_1m",
        "vwap_1m",
        "top_of_book_snapshots",
    ],
)
def test_export_reads_back_equal_on_both_backends(dsn: str, tmp_path: Path, table: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    selection = Selection(table, pair="BTC_USD")
    query, params = selection.query()
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(query, params)
        expected = [tuple(str(v) if isinstance(v, uuid.UUID) else v for v in row)
                    for row in cursor.fetchall()]  # fmt: skip
        names = [c.name for c in cursor.description or []]
    out = tmp_path / "out.parquet"
    assert export(dsn, selection, "parquet", out, batch_rows=2, progress=False) == len(expected)
    got = [tuple(row[n] for n in names) for row in pq.read_table(out).to_pylist()]
    assert got == expected
    assert export(dsn, selection, "csv", tmp_path / "out.csv", progress=False) == len(expected)


def test_numerics_too_wide_for_decimal128_stay_exact(dsn: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    wide = Decimal("123456789012345678901234567890.0000000001")  # 40 digits
    huge = Decimal("1" + "0" * 80 + ".5")  # 82 digits
    with psycopg.connect(dsn) as conn:
        for tid, (pair, amount) in enumerate([("WIDE", wide), ("HUGE", huge)], start=1000):
            conn.execute(
                "INSERT INTO trades VALUES (%s, %s, %s, 'buy', 1, %s, %s)",
                (pair, tid, T0, amount, T0),
            )
    for pair, amount, arrow_type in [
        ("WIDE", wide, pa.decimal256(76, 10)),
        ("HUGE", huge, pa.string()),
    ]:
        out = tmp_path / f"{pair}.parquet"
        export(dsn, Selection("trades", pair=pair), "parquet", out, progress=False)
        column = pq.read_table(out).column("amount")
        assert column.type == arrow_type
        assert Decimal(column.to_pylist()[0]) == amount
