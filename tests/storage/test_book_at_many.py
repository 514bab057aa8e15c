"""book_at_many gives, at every instant, exactly book_at's rows, and book_at's work does not
depend on planner statistics.

The flow: the simulator's matching engine, its snapshots and events taking the real path
into the database (the exchange's JSON, the client's parser and classifier, the writer), on
plain PostgreSQL and on TimescaleDB. Each snapshot is asked for a few events before the
last event it holds (`taken_at` < `events_through`), as on the exchange, so instants fall
inside request/answer windows as well as between snapshots and across windows.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from recorder import records as r
from recorder.sim.engine import Engine
from recorder.sim.flow import FlowSettings, OrderFlow, pair_spec, wall_clock
from recorder.storage.migrate import migrate
from tests.storage import book_history as h
from tests.storage.test_book_at_sim import at_s, engine_book, event_records, snapshot_records

PAIR = "BTC_USD"
Book = list[tuple[str, int, Any, Any]]
Recorded = tuple[str, dict[datetime, Book]]


def snapshot_asked_before(records: list[r.Record], taken_at: datetime, through: datetime) -> None:
    """The last snapshot in `records` as asked at `taken_at`, holding events through `through`."""
    start = max(i for i, rec in enumerate(records) if isinstance(rec, r.BookSnapshot))
    for i in range(start, len(records)):
        rec = records[i]
        if isinstance(rec, r.BookSnapshot):
            records[i] = dataclasses.replace(rec, taken_at=taken_at, events_through=through)
        elif isinstance(rec, r.SnapshotOrder):
            records[i] = dataclasses.replace(rec, taken_at=taken_at)


@pytest.fixture(scope="module")
def recorded(
    db_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[datetime, Book]]:
    """Record three snapshot windows of a flow; return the DSN and the engine's book at
    instants along it (between events, at events, inside request/answer windows)."""
    migrate(db_dsn)
    microseconds = itertools.count(1_700_000_000_000_000, 1000)
    engine = Engine([pair_spec(PAIR)], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=77, settings=FlowSettings(target_orders_per_side=60))
    for _ in range(300):
        flow.step()
    records: list[r.Record] = []
    books: dict[datetime, Book] = {}
    engine.subscribe(lambda event: records.extend(event_records(event, "cancel_order_id")))
    event_times: list[datetime] = []
    for step in range(900):
        if step % 300 == 0:
            records.extend(snapshot_records(engine, PAIR, at_s(engine.clock())))
            if event_times[-4:]:
                # asked three events earlier than the last event it holds
                snapshot_asked_before(records, event_times[-4] - timedelta(microseconds=1),
                                      event_times[-1])  # fmt: skip
        books[at_s(engine.clock())] = engine_book(engine, PAIR)
        flow.step()
        event_times.append(at_s(engine.clock()) - timedelta(microseconds=1))
        if step % 7 == 0:  # at an event's own date: the event is in the book
            books[event_times[-1]] = engine_book(engine, PAIR)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE book_events, book_fills_stored, book_snapshot_orders, book_snapshots"
        )
    h.write(db_dsn, records, tmp_path_factory.mktemp("spool"))
    return db_dsn, books


def many(conn: psycopg.Connection[Any], instants: list[datetime]) -> dict[datetime, Book]:
    rows = conn.execute(
        "SELECT at, side, order_id, price, amount FROM book_at_many(%s, %s)", (PAIR, instants)
    ).fetchall()
    out: dict[datetime, Book] = {}
    for at, *order in rows:
        out.setdefault(at, []).append(tuple(order))  # type: ignore[arg-type]
    return out


def test_book_at_many_is_book_at_at_every_instant(
    recorded: tuple[str, dict[datetime, Book]],
) -> None:
    dsn, books = recorded
    instants = sorted(books)
    with psycopg.connect(dsn) as conn:
        windows = conn.execute(
            "SELECT count(*) FROM book_snapshots WHERE events_through > taken_at"
        ).fetchone()
        assert windows == (2,)  # two request/answer windows with events inside
        result = many(conn, instants[::-1])  # any order in, time order out
        assert list(result) == [i for i in instants if i in result]
        for instant in instants:
            one = conn.execute(
                "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (PAIR, instant)
            ).fetchall()
            assert result.get(instant, []) == one, instant  # the same rows in the same order
            assert sorted(one) == books[instant], instant  # and the engine's book
    assert len({str(b) for b in books.values()}) > 100


def test_book_at_many_by_itself_equals_the_engine(
    recorded: tuple[str, dict[datetime, Book]],
) -> None:
    dsn, books = recorded
    instants = sorted(books)[5::11]
    with psycopg.connect(dsn) as conn:
        result = many(conn, [*instants, instants[0], None])  # type: ignore[list-item]
    assert sorted(result) == instants  # each distinct instant once, NULL ignored
    for instant in instants:
        assert sorted(result[instant]) == books[instant], instant


def test_before_the_first_snapshot_there_are_no_rows(
    recorded: tuple[str, dict[datetime, Book]],
) -> None:
    dsn, books = recorded
    first = min(books) - timedelta(days=1)
    with psycopg.connect(dsn) as conn:
        assert many(conn, [first]) == {}
        assert conn.execute("SELECT * FROM book_at(%s, %s)", (PAIR, first)).fetchall() == []
        assert conn.execute("SELECT * FROM book_cancels(%s, %s)", (PAIR, first)).fetchall() == []
