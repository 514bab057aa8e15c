"""A recorded stretch of one pair's book, made in-process: the simulator's matching engine
makes the events, the exchange answers snapshots with its book, and the recorder's own code
decides what each answer holds.

No sockets and no daemon, so that a hypothesis example costs milliseconds: the engine runs
a seeded order flow and a listener notes its book after every event (the truth). Every
event and every answer takes the recorder's parse path (the exchange's JSON, as the
simulator sends it, read by `recorder.exchange.classify` and `parse_orderbook`). The
recorder's side of `recorder/sources/book.py` is followed step by step in event order:
each snapshot's window collects the events received from its request until it is cut, the
pair's book rebuilt from events is copied at the request (`before`, none at a resync), and
`recorder.book.snapshot_cut` finds how many of the window's events the answer holds, which
gives `events_through` as `BookRecorder._record` derives it. The test decides nothing of
that itself: it only says when each request and answer happen.

A schedule entry (`Ask`) places one snapshot in the event sequence by counts of events:
requested once `asked` events were received, with `unseen` more already made but not yet
delivered by the stream (dated before the request, so the answer holds them), answered
holding `held` events made after the request, and cut once `settle` more were received
(the recorder's settle wait). Windows may overlap, hold nothing, or end many events later.
"""

from __future__ import annotations

import bisect
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from recorder.book import Book, CancelReading, Reading, snapshot_cut
from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.parse import load_json, parse_orderbook
from recorder.records import BookEvent, BookFill, Record
from recorder.sim import wire
from recorder.sim.engine import Engine, Event
from recorder.sim.flow import MICROSECOND, FlowSettings, OrderFlow, pair_spec

PAIR = "BTC_USD"
START_US = 1_764_547_200_000_000  # 2025-12-01 00:00 UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SESSION = uuid.UUID(int=1)
MIN_GAP_US = 2
"""Events are at least this far apart, so that a request fits strictly between two."""

Order = tuple[str, int, str, str]
"""side, order id, price text, amount text: one row of `book_at`."""
Resting = tuple[str, int, Decimal, Decimal, Decimal]
"""side, order id, price, amount, the engine's timestamp: one order of an answer."""


def at_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class Market:
    """The order flow: its seed, its settings, how long it runs, and which id of a cancel
    names the cancelled order on the wire."""

    seed: int
    depth: int
    """Resting orders before the recording starts."""
    settings: FlowSettings
    events: int
    mean_gap_us: int
    reading: Reading


@dataclass(frozen=True)
class Ask:
    """One snapshot of the schedule, in counts of events (see the module's doc)."""

    asked: int
    unseen: int
    held: int
    settle: int
    resync: bool
    """The stream came back just before the request after an outage in which the pair made
    no event: the recorder dropped its rebuilt book (`BookRecorder._resync`), so this
    window is cut without one, and any window still open is broken (not in sync)."""


@dataclass
class Tape:
    """What the engine made: every event with its date, and its book after each."""

    start_us: int = 0
    """The date of the history's last order: the recording starts after it."""
    dates: list[int] = field(default_factory=list)
    """Each event's date (unix microseconds), strictly increasing."""
    updates: list[BookUpdate] = field(default_factory=list)
    """Each event as the recorder parsed it from the exchange's JSON."""
    books: list[list[Resting]] = field(default_factory=list)
    """The book before the first event, then after each: engine order (best first, then
    time priority), bids before asks."""

    def book_at(self, instant: datetime) -> list[Order]:
        """The engine's book at `instant`: after every event dated at or before it."""
        us = (instant - EPOCH) // timedelta(microseconds=1)
        book = self.books[bisect.bisect_right(self.dates, us)]
        return [(side, oid, str(price), str(amount)) for side, oid, price, amount, _ in book]


def engine_book(engine: Engine) -> list[Resting]:
    return [
        (side, o.oid, o.price, o.amount, o.timestamp)
        for side in ("buy", "sell")
        for o in engine.books[PAIR].orders(side)  # type: ignore[arg-type]
    ]


def run_market(market: Market) -> Tape:
    """Run the flow; the book it starts from is history (in the first snapshot only)."""
    gaps = random.Random(market.seed)  # a reproducible market
    now = [START_US]

    def clock() -> Decimal:
        # every event (and every order of the history) at a date of its own
        now[0] += MIN_GAP_US + int(gaps.expovariate(1 / market.mean_gap_us))
        return Decimal(now[0]) * MICROSECOND

    engine = Engine([pair_spec(PAIR)], clock)
    flow = OrderFlow(engine, seed=market.seed, settings=market.settings)
    flow.fill_book(PAIR, market.depth)
    tape = Tape(start_us=now[0], books=[engine_book(engine)])

    def noted(event: Event) -> None:
        tape.dates.append(int(event.date / MICROSECOND))
        tape.updates.append(parsed(event, market.reading))
        tape.books.append(engine_book(engine))

    engine.subscribe(noted)
    for _ in range(market.events):
        flow.step()
    return tape


def parsed(event: Event, reading: Reading) -> BookUpdate:
    """The event as the recorder reads the simulator's socket payload of it."""
    text = wire.dumps(wire.book_payload(event, reading))
    update = classify(
        f"book_{event.pair}", [load_json(text)], payload_text=text,
        received_at=at_us(int(event.date / MICROSECOND)), session_id=SESSION,
    )  # fmt: skip
    assert isinstance(update, BookUpdate), update
    return update


def answer_text(book: list[Resting]) -> str:
    """The exchange's ungrouped order-book answer holding `book`."""
    return wire.dumps(
        {
            side: [
                {"price": price, "id": oid, "amount": amount, "timestamp": ts}
                for s, oid, price, amount, ts in book
                if s == side
            ]
            for side in ("sell", "buy")
        }
    )


@dataclass
class Window:
    """A snapshot asked for and not yet cut (`recorder.sources.book.SnapshotWindow`)."""

    ask: Ask
    before: Book | None
    through: datetime | None
    taken_at: datetime
    held: int
    """How many events of the tape the answer holds."""
    settled: int
    """How many events of the tape were received when it is cut."""
    events: list[tuple[BookEvent, tuple[BookFill, ...]]] = field(default_factory=list)
    broken: bool = False


@dataclass
class Recording:
    records: list[Record] = field(default_factory=list)
    windows: list[tuple[datetime, datetime | None, bool]] = field(default_factory=list)
    """Each recorded snapshot: its request, the last event it holds (None where its cut was
    left open), and whether it is in sync."""
    retried: int = 0
    """Snapshots whose cut was left open and that the recorder takes again (not stored)."""
    drift: list[list[str]] = field(default_factory=list)
    """Per snapshot cut with a rebuilt book, where the book rebuilt from events disagrees
    with the snapshot plus the events after its cut (`recorder_book_drift_total`)."""


def record(tape: Tape, asks: list[Ask]) -> Recording:
    """The rows the recorder stores for `tape` under the snapshot schedule `asks`."""
    n = len(tape.updates)
    recording = Recording(records=[u.event for u in tape.updates])
    recording.records += [fill for u in tape.updates for fill in u.fills]
    reading = CancelReading()  # one per pair for the whole run, as the recorder keeps it
    model: Book | None = None
    last_event_ts: datetime | None = None
    open_windows: list[Window] = []

    def request(ask: Ask) -> Window:
        made = min(n, ask.asked + ask.unseen)
        held = min(n, made + ask.held)
        # strictly between the last event made before it and the first made after it
        taken_us = (tape.dates[made - 1] if made else tape.start_us) + 1
        return Window(
            ask, model.copy() if model is not None else None, last_event_ts, at_us(taken_us),
            held, min(n, held + ask.settle),
        )  # fmt: skip

    def cut(window: Window) -> None:
        nonlocal model
        taken_at = window.taken_at
        answer = parse_orderbook(
            answer_text(tape.books[window.held]), pair=PAIR, grouped=False, taken_at=taken_at,
            received_at=taken_at, reason="connect" if window.before is None else "interval",
        )  # fmt: skip
        exchange = Book.from_snapshot(answer.orders, cancel_reading=reading)
        events = snapshot_cut(window.events, exchange, window.before).events
        in_sync = seeds = not window.broken
        if events is None and seeds:
            recording.retried += 1  # taken again at once: a later ask of the schedule
            return
        through = None
        if events is not None:
            through = window.events[events - 1][0].ts if events else window.through
        snapshot = replace(answer.snapshot, events_through=through, in_sync=in_sync)
        recording.records += [snapshot, *answer.orders]
        recording.windows.append((taken_at, through, in_sync))
        rebuilt = exchange.copy()
        for event, fills in window.events[events or 0 :]:
            rebuilt.apply(event, fills, count=False)
        if model is not None and window.before is not None:
            recording.drift.append(model.differences(rebuilt))
        model = rebuilt if seeds else None

    by_request: dict[int, list[Ask]] = {}
    for ask in asks:
        by_request.setdefault(min(n, ask.asked), []).append(ask)
    for received in range(n + 1):
        for ask in by_request.get(received, []):
            if ask.resync:
                model, last_event_ts = None, None
                for window in open_windows:
                    window.broken = True
            open_windows.append(request(ask))
        for window in [w for w in open_windows if w.settled == received]:
            open_windows.remove(window)
            cut(window)
        if received < n:
            update = tape.updates[received]
            for window in open_windows:
                window.events.append((update.event, update.fills))
            last_event_ts = update.event.ts
            if model is not None:
                _apply(model, update)
    assert not open_windows
    return recording


def _apply(model: Book, update: BookUpdate) -> None:
    """As `BookRecorder._apply`: a cancel counts as evidence of the pair's reading."""
    if update.event.kind == "cancel":
        model.cancel(update.event)
    else:
        model.apply(update.event, update.fills)
