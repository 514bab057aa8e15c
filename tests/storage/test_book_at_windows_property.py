"""book_at is the engine's book at every instant, whatever lands inside snapshot windows
(hypothesis).

Each example runs the simulator's matching engine in-process and lets hypothesis choose the
order flow and, above all, the snapshot schedule: when each snapshot is asked for, how many
events the stream has yet to deliver then, how many events made after the request its
answer holds, and how many more arrive before the recorder cuts it. So new orders, fills
and cancels land inside request/answer windows, some windows hold none, some overlap the
next request, some answers come many events later, and some snapshots follow a reconnect
with no book rebuilt from before (tests/storage/recorded_windows.py). The recorder's own
code decides what each answer holds (`snapshot_cut`, `events_through`); its rows go
through the writer's commit into PostgreSQL; then `book_at_many` (one call) and `book_at`
(a sample) must give the engine's book, order by order and digit by digit, at every event's
date and the microsecond before it, from the start of the first snapshot the recorder could
place on. A book only changes at an event, so these are all the instants there are.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from recorder.book import READINGS
from recorder.records import Record
from recorder.sim.flow import FlowSettings
from recorder.storage.committer import Committer
from recorder.storage.migrate import migrate
from tests.fuzz.strategies import examples
from tests.storage.recorded_windows import (
    PAIR,
    Ask,
    Market,
    Order,
    Recording,
    Tape,
    at_us,
    record,
    run_market,
)

MICROSECOND = timedelta(microseconds=1)
BOOK_AT_SAMPLE = 12
"""book_at is called at this many instants per example (book_at_many at all of them)."""


@pytest.fixture(scope="module")
def migrated(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


@st.composite
def markets(draw: st.DrawFn) -> Market:
    return Market(
        seed=draw(st.integers(0, 2**32)),
        depth=draw(st.integers(2, 24)),
        settings=FlowSettings(
            cancel_share=draw(st.sampled_from([0.1, 0.3, 0.5])),
            cross_share=draw(st.sampled_from([0.05, 0.15, 0.4])),
            target_orders_per_side=draw(st.integers(3, 15)),
        ),
        events=draw(st.integers(0, 70)),
        mean_gap_us=draw(st.sampled_from([2, 300, 50_000])),
        reading=draw(st.sampled_from(READINGS)),
    )


@st.composite
def schedules(draw: st.DrawFn, events: int) -> list[Ask]:
    """Requests in order, some close enough that a window is still open at the next."""
    asks, asked = [], 0
    for _ in range(draw(st.integers(1, 6))):
        asked += draw(st.integers(0, max(1, events // 3)))
        asks.append(
            Ask(
                asked=asked,
                unseen=draw(st.integers(0, 3)),
                held=draw(st.integers(0, 15)),
                settle=draw(st.integers(0, 4)),
                resync=draw(st.sampled_from((False, False, False, True))),
            )
        )
    return asks


@st.composite
def cases(draw: st.DrawFn) -> tuple[Market, list[Ask]]:
    market = draw(markets())
    return market, draw(schedules(market.events))


def store(dsn: str, records: list[Record]) -> None:
    """The records as the writer commits them, into emptied book tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE book_events, book_fills_stored, book_snapshot_orders, "
                     "book_snapshots, book_window_readings")  # fmt: skip

    async def commit() -> dict[str, int]:
        committer = Committer(dsn, statement_timeout_s=30)
        try:
            return (await committer.commit(records)).rows
        finally:
            await committer.close()

    stored = asyncio.run(commit())
    tables = {type(r).TABLE for r in records}
    assert sum(stored.values()) == len(records), (stored, tables)


def instants(tape: Tape, recording: Recording) -> tuple[datetime | None, list[datetime]]:
    """Where book_at starts (the first followed snapshot's last event, or its request), and
    every event's date and the microsecond before it, each request and each snapshot's last
    event, and one instant after the last event."""
    starts = [through or asked for asked, through, in_sync in recording.windows if in_sync]
    dates = [at_us(us) for us in tape.dates]
    points = {at_us(tape.start_us), *dates, *(d - MICROSECOND for d in dates)}
    points |= {p for asked, through, _ in recording.windows for p in (asked, through) if p}
    points.add(at_us((tape.dates[-1] if tape.dates else tape.start_us) + 1_000_000))
    return min(starts, default=None), sorted(points)


def expected(tape: Tape, start: datetime | None, instant: datetime) -> list[Order]:
    """The engine's book from where book_at starts; before there book_at has none."""
    return tape.book_at(instant) if start is not None and instant >= start else []


def book_at_many(conn: psycopg.Connection[Any], at: list[datetime]) -> dict[datetime, list[Order]]:
    rows = conn.execute("SELECT at, side, order_id, price, amount FROM book_at_many(%s, %s)",
                        (PAIR, at)).fetchall()  # fmt: skip
    books: dict[datetime, list[Order]] = {instant: [] for instant in at}
    for instant, side, order_id, price, amount in rows:
        books[instant].append((side, order_id, str(price), str(amount)))
    return books


def book_at(conn: psycopg.Connection[Any], instant: datetime) -> list[Order]:
    rows = conn.execute("SELECT side, order_id, price, amount FROM book_at(%s, %s)",
                        (PAIR, instant)).fetchall()  # fmt: skip
    return [(side, order_id, str(price), str(amount)) for side, order_id, price, amount in rows]


def sample(at: list[datetime], recording: Recording) -> list[datetime]:
    """Instants for book_at one call each: those inside windows first (after a request,
    before the last event its snapshot holds), then spread over the rest."""
    inside = [
        instant
        for instant in at
        if any(through and asked <= instant < through for asked, through, _ in recording.windows)
    ]
    rest = [instant for instant in at if instant not in inside]
    chosen = inside[: BOOK_AT_SAMPLE // 2]
    step = max(1, len(rest) // (BOOK_AT_SAMPLE - len(chosen)))
    return chosen + rest[::step][: BOOK_AT_SAMPLE - len(chosen)]


def note(tape: Tape, asks: list[Ask], recording: Recording) -> None:
    """What the example made, for `pytest --hypothesis-show-statistics`."""
    n = len(tape.dates)
    held_later = sum(1 for asked, through, _ in recording.windows if through and through > asked)
    event(f"snapshots holding events made after their request: {min(held_later, 3)}"
          f"{' or more' if held_later >= 3 else ''}")  # fmt: skip
    if not any(in_sync for _, _, in_sync in recording.windows):
        event("no snapshot book_at may start from: no book at any instant")
    if any(min(n, a.asked + a.unseen + a.held) == min(n, a.asked) for a in asks):
        event("a window with no event in it")
    ends = [min(n, a.asked + a.unseen + a.held + a.settle) for a in asks]
    if any(min(n, b.asked) < end for end, b in zip(ends, asks[1:], strict=False)):
        event("a window open at the next request")
    if any(a.resync for a in asks[1:]):
        event("a snapshot cut without a rebuilt book after the first")
    if recording.retried:
        event("a cut left open: the snapshot taken again")
    kinds = {u.event.kind for u in tape.updates} | {"fill" for u in tape.updates if u.fills}
    event(f"events: {', '.join(sorted(kinds))}")


@settings(
    max_examples=examples(60, "RECORDER_FUZZ_PIPELINE_EXAMPLES"),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
@example(  # a window whose answer holds a cancel and a crossing order made after the request
    case=(
        Market(seed=3, depth=8, settings=FlowSettings(cancel_share=0.5, cross_share=0.4,
               target_orders_per_side=4), events=40, mean_gap_us=300, reading="cancel_order_id"),
        [Ask(asked=5, unseen=0, held=0, settle=2, resync=False),
         Ask(asked=12, unseen=1, held=10, settle=3, resync=False),
         Ask(asked=15, unseen=0, held=4, settle=0, resync=False),
         Ask(asked=30, unseen=2, held=6, settle=1, resync=True)],
    )
)  # fmt: skip
@example(  # after a resync, a cancel whose other id names an order the window placed and removed
    case=(
        Market(seed=255, depth=2, settings=FlowSettings(cancel_share=0.5, cross_share=0.05,
               target_orders_per_side=3), events=12, mean_gap_us=2, reading="oid"),
        [Ask(asked=2, unseen=0, held=10, settle=0, resync=False)],
    )
)  # fmt: skip
@example(  # a cancel's ids: an order resting before the window, one elsewhere than it states
    case=(
        Market(seed=0, depth=2, settings=FlowSettings(cancel_share=0.5, cross_share=0.05,
               target_orders_per_side=3), events=21, mean_gap_us=2, reading="oid"),
        [Ask(asked=7, unseen=0, held=10, settle=0, resync=False)],
    )
)  # fmt: skip
def test_book_at_is_the_engines_book_at_every_instant(
    migrated: str, case: tuple[Market, list[Ask]]
) -> None:
    market, asks = case
    tape = run_market(market)
    recording = record(tape, asks)
    note(tape, asks, recording)
    # the book rebuilt in memory agrees with every snapshot plus the events after its cut
    assert all(differences == [] for differences in recording.drift), recording.drift
    store(migrated, recording.records)
    start, at = instants(tape, recording)
    with psycopg.connect(migrated) as conn:
        many = book_at_many(conn, at)
        for instant in at:
            assert many[instant] == expected(tape, start, instant), f"book_at_many at {instant}"
        for instant in sample(at, recording):
            assert book_at(conn, instant) == expected(tape, start, instant), f"book_at at {instant}"
