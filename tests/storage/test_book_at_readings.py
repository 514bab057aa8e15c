"""book_at_many keeps a closed window's cancel reading (book_window_readings, migrations/0016)
and never serves one that rows committed later have made stale.

The flow: the simulator's matching engine, its snapshots and events taking the real path
into the database (the exchange's JSON, the client's parser and classifier, the writer),
cancels named by `oid` and by `cancel_order_id`. Part of the day is held back and written
after book_at_many has stored its readings: events and fills late into a closed window, and
a snapshot late inside a closed window (which ends that window earlier). Every book is then
compared with the engine's and with a computation from nothing stored.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from recorder import records as r
from recorder.sim.engine import Engine
from recorder.sim.flow import FlowSettings, OrderFlow, pair_spec, wall_clock
from recorder.storage.migrate import migrate
from tests.storage import book_history as h
from tests.storage.test_book_at_sim import at_s, engine_book, event_records, snapshot_records

PAIR = "BTC_USD"
Book = list[tuple[str, int, Any, Any]]
WINDOW_STEPS = 250


def flow_records(cancel_id: str) -> tuple[list[list[r.Record]], dict[datetime, Book]]:
    """Four snapshot windows of a flow, as the records of each window (its snapshot first),
    and the engine's book after every step."""
    microseconds = itertools.count(1_700_000_000_000_000, 1000)
    engine = Engine([pair_spec(PAIR)], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=5, settings=FlowSettings(target_orders_per_side=40))
    for _ in range(200):
        flow.step()
    windows: list[list[r.Record]] = []
    books: dict[datetime, Book] = {}
    engine.subscribe(lambda event: windows[-1].extend(event_records(event, cancel_id)))  # type: ignore[arg-type]
    for step in range(4 * WINDOW_STEPS):
        if step % WINDOW_STEPS == 0:
            windows.append(snapshot_records(engine, PAIR, at_s(engine.clock())))
        flow.step()
        books[at_s(engine.clock())] = engine_book(engine, PAIR)
    return windows, books


def many(conn: psycopg.Connection[Any], instants: list[datetime]) -> dict[datetime, Book]:
    rows = conn.execute(
        "SELECT at, side, order_id, price, amount FROM book_at_many(%s, %s)", (PAIR, instants)
    ).fetchall()
    out: dict[datetime, Book] = {instant: [] for instant in instants}
    for at, *order in rows:
        out[at].append(tuple(order))  # type: ignore[arg-type]
    return out


def fresh(conn: psycopg.Connection[Any], instants: list[datetime]) -> dict[datetime, Book]:
    """book_at_many with nothing stored: every window's cancels read from its rows."""
    with conn.transaction():
        conn.execute("TRUNCATE book_window_readings")
        result = many(conn, instants)
        conn.execute("TRUNCATE book_window_readings")
    return result


def readings(conn: psycopg.Connection[Any]) -> dict[Any, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT snapshot_id, until, events, fills, snapshot_orders, cancel_ts, removed "
        "FROM book_window_readings"
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


@pytest.fixture
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE book_events, book_fills_stored, book_snapshot_orders, book_snapshots, "
            "book_window_readings"
        )
    return db_dsn


@pytest.mark.parametrize("cancel_id", ["oid", "cancel_order_id"])
def test_rows_late_into_a_closed_window_make_its_reading_read_again(
    dsn: str, tmp_path: Path, cancel_id: str
) -> None:
    windows, books = flow_records(cancel_id)
    instants = sorted(books)
    # late: the first window's every third event and fill, and the third window's snapshot
    # (until it comes, the second window runs on to the fourth snapshot)
    late_events = [rec for i, rec in enumerate(windows[0]) if i % 3 == 0 and
                   isinstance(rec, r.BookEvent | r.BookFill)]  # fmt: skip
    late_snapshot = [rec for rec in windows[2] if isinstance(rec, r.BookSnapshot | r.SnapshotOrder)]
    assert sum(isinstance(rec, r.BookEvent) and rec.kind == "cancel" for rec in late_events) > 5
    held = {id(rec) for rec in [*late_events, *late_snapshot]}
    first = [rec for window in windows for rec in window if id(rec) not in held]
    h.write(dsn, first, tmp_path / "first")
    with psycopg.connect(dsn, autocommit=True) as conn:
        early = many(conn, instants)
        stored = readings(conn)
        assert len(stored) == 2  # the two closed windows; the last one is open
        read_at = conn.execute("SELECT array_agg(read_at) FROM book_window_readings").fetchone()
        assert early == many(conn, instants)
        # used, not read again (each call here is its own transaction, with its own now())
        assert conn.execute("SELECT array_agg(read_at) FROM book_window_readings").fetchone() == (
            read_at
        )
        assert early == fresh(conn, instants)  # the same as reading every window afresh
        many(conn, instants)

        h.write(dsn, late_events + late_snapshot, tmp_path / "late")
        late = many(conn, instants)
        again = readings(conn)
        assert late == fresh(conn, instants)
        for instant in instants:
            assert sorted(late[instant]) == books[instant], instant
    assert len(again) == 3
    assert again != stored
    changed = {snapshot_id for snapshot_id in stored if again[snapshot_id] != stored[snapshot_id]}
    assert changed == set(
        stored
    )  # the late events' window, and the one the late snapshot cut short
    # the late rows changed what was read: a stale reading would have given another book
    assert early != late


def test_a_read_only_transaction_reads_without_storing(dsn: str, tmp_path: Path) -> None:
    windows, books = flow_records("cancel_order_id")
    h.write(dsn, [rec for window in windows for rec in window], tmp_path / "spool")
    instants = sorted(books)[::17]
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        result = many(conn, instants)
        assert readings(conn) == {}
    for instant in instants:
        assert sorted(result[instant]) == books[instant], instant


def test_a_research_role_stores_readings_only_through_book_at_many(
    dsn: str, tmp_path: Path
) -> None:
    windows, books = flow_records("cancel_order_id")
    h.write(dsn, [rec for window in windows for rec in window], tmp_path / "spool")
    instants = sorted(books)[::13]
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regrole('recorder_research')").fetchone() == (None,):
            pytest.skip("no recorder_research role on this server")
        conn.execute("SET ROLE recorder_research")
        result = many(conn, instants)
        assert len(readings(conn)) == 3
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                "SELECT book_window_store(snapshot_id, until, 0, 0, 0, '{}', '{}') "
                "FROM book_window_readings LIMIT 1"
            )
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM book_window_readings")
        assert many(conn, instants) == result
    for instant in instants:
        assert sorted(result[instant]) == books[instant], instant
