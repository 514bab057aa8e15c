"""A recorded period served through the simulated exchange: `recorder replay`.

The simulator's own server (`recorder.sim.server`: the same REST endpoints, socket.io
channels and wire format) is driven by a `RecordedSource` instead of its order flow:

- the book of each pair starts as `book_at(pair, since)` in the recorder's database (the L3
  book exactly, each order with its own timestamp);
- the recorded book events after `since` up to `until` (`book_events`, with their fills from
  `book_fills`) are made in the order of their dates, on the replay clock (`ReplayClock`):
  `speed` times real time, or as fast as the clients take them. Events of one date are made
  together, so that no REST answer shows half of them. Each is applied to the books (a
  cancel removes the order `recorder.book.Book` decides it names, as the recorder reads it)
  and goes out through the simulator's outbox, as the flow's events do;
- `/exchanges/` serves the recorded trade tape (`trades`) up to the replay clock, and the
  charts the recorded candles whose bucket has started by then. The recorder stores only
  the last state of a candle, so a candle still open at the replay clock shows the values it
  was last recorded with;
- `/pairs/` lists the pairs as recorded; `/admin/state` carries the replay clock under
  `replay`.

The replay waits, paused, until every replayed pair's channel has a subscriber (a recorder
or bot pointed at it has connected and subscribed), or until `/admin/resume`; `start="now"`
starts at once. `/admin/pause` and `/admin/resume` stop and restart the replay clock.

Numbers go out as the digits of the stored NUMERIC values: `NUMERIC` keeps a value's
digits and scale (`936.00` stays `936.00`), `wire.dumps` writes them as they are. A number
that arrived in another form of the same value (`1e-08`) goes out positional
(`0.00000001`); the recorder keeps no raw text of the events it could parse. Dates are the
stored microseconds, written with six decimals as the simulator writes its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

import psycopg

from recorder import book as recorded_book
from recorder.config import CandleType, is_candle_type
from recorder.logs import get_logger
from recorder.records import BookEvent, BookFill
from recorder.sim.candles import Candle
from recorder.sim.engine import (
    STATUS_ACTIVE,
    STATUS_CANCELLED,
    STATUS_DONE,
    Cancel,
    Event,
    Fill,
    NewOrder,
    Order,
    PairSpec,
)
from recorder.sim.server import SimSettings, Simulator

if TYPE_CHECKING:
    from psycopg.rows import TupleRow

log = get_logger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = Decimal("0.000001")
TICK_S = 0.05
"""How often a waiting replay brings the tape and charts up to the clock."""
FETCH_ROWS = 5000
"""Rows fetched at a time from the database's cursors."""

Start = Literal["subscribed", "now"]


class ReplayError(ValueError):
    """The period cannot be replayed (an unknown pair, no snapshot to start from); says why."""


# --- time -----------------------------------------------------------------------------------


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def micros_date(micros: int) -> Decimal:
    """A date as the simulator writes it: unix seconds with six decimals."""
    return Decimal(micros) * MICROSECOND


def micros_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def parse_speed(text: str) -> float | None:
    """`--speed`: a factor of real time > 0, or `0`/`max` (None: as fast as clients take)."""
    if text.strip().lower() in ("0", "max"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed: a number > 0, 0 or max, not {text!r}") from None
    if not 0 < speed < float("inf"):
        raise ValueError(f"speed: a number > 0, 0 or max, not {text!r}")
    return speed


class ReplayClock:
    """The replay's time, in unix microseconds, from `since` to at most `until`.

    Stopped until `run`; while running at a `speed` it moves that many microseconds per real
    microsecond. Without a speed (as fast as possible) it moves only when told (`reach`): to
    each event's date as the event is made. Real time comes in as monotonic seconds, so that
    the logic is tested without waiting.
    """

    def __init__(self, since_us: int, until_us: int, speed: float | None) -> None:
        if until_us < since_us:
            raise ValueError("until is before since")
        self.since_us, self.until_us, self.speed = since_us, until_us, speed
        self._position_us = since_us
        """Replay time when the clock last stopped or was moved."""
        self._running_from_s: float | None = None
        """Monotonic seconds when it last started running; None while stopped."""

    @property
    def running(self) -> bool:
        return self._running_from_s is not None

    def now(self, monotonic_s: float) -> int:
        if self._running_from_s is None or self.speed is None:
            return self._position_us
        moved = int((monotonic_s - self._running_from_s) * self.speed * 1_000_000)
        return min(self.until_us, self._position_us + max(0, moved))

    def run(self, monotonic_s: float) -> None:
        if self._running_from_s is None:
            self._running_from_s = monotonic_s

    def stop(self, monotonic_s: float) -> None:
        if self._running_from_s is not None:
            self._position_us = self.now(monotonic_s)
            self._running_from_s = None

    def seconds_until(self, date_us: int, monotonic_s: float) -> float | None:
        """Real seconds until the clock shows `date_us` (0: it does, or it moves as fast as
        possible); None while stopped."""
        if self._running_from_s is None:
            return None
        if self.speed is None:
            return 0.0
        ahead_us = min(date_us, self.until_us) - self.now(monotonic_s)
        return max(0.0, ahead_us / 1_000_000 / self.speed)

    def reach(self, date_us: int, monotonic_s: float) -> None:
        """Move to `date_us` (never back, never past `until`): an event of that date is made."""
        target = min(max(date_us, self.now(monotonic_s)), self.until_us)
        self._position_us = target
        if self._running_from_s is not None:
            self._running_from_s = monotonic_s


# --- the recording ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """The recorded events of one date, in the order they are made, each with its fills."""

    date_us: int
    events: list[tuple[BookEvent, list[BookFill]]]


@dataclass
class Period:
    """What is replayed, read from the database: pairs, starting books, tape and candles.
    The events themselves are streamed (`Recording.groups`)."""

    specs: dict[str, PairSpec]
    books: dict[str, list[Order]]
    trades: list[Fill]
    """The tape up to `until`, oldest first."""
    candles: list[tuple[str, CandleType, Candle]]
    """(pair, resolution, candle) with buckets up to `until`, oldest bucket first."""


PAIRS_SQL = """
SELECT name, currency1, currency2, price_precision, minimum_order_size, maximum_order_size
FROM pairs WHERE name = ANY(%s)
"""

# book_at's orders with their own timestamps: the snapshot's order_ts for an order of the
# snapshot book_at starts from, else the date of the event that placed it; book_at's order
# (price, then time) is the priority the book is rebuilt in.
START_BOOK_SQL = """
WITH snap AS (SELECT snapshot_id, taken_at FROM book_window_at(%(pair)s, %(at)s))
SELECT b.side, b.order_id, b.price, b.amount,
       coalesce(o.order_ts, e.ts, (SELECT taken_at FROM snap)) AS order_ts
FROM book_at(%(pair)s, %(at)s) AS b
LEFT JOIN book_snapshot_orders o
       ON o.snapshot_id = (SELECT snapshot_id FROM snap) AND o.order_id = b.order_id
LEFT JOIN book_events e ON e.pair = %(pair)s AND e.oid = b.order_id AND e.kind = 'new'
"""

# The snapshot book_at starts from (none: a row of nulls). It holds no event after `since`
# (migrations/0013_book_at_snapshot_by_contents.sql), so every event after `since` changes
# the book.
START_SNAPSHOT_SQL = "SELECT snapshot_id FROM book_window_at(%s, %s)"

TRADES_SQL = """
SELECT pair, tid, ts, type, price, amount FROM trades
WHERE pair = ANY(%s) AND ts <= %s ORDER BY ts, tid
"""

CANDLES_SQL = """
SELECT pair, resolution, bucket, open, high, low, close, volume FROM candles
WHERE pair = ANY(%s) AND bucket <= %s ORDER BY bucket, pair, resolution
"""

# Within one date: new orders before cancels (a cancel of an order placed in the same
# microsecond comes after it), new orders by id (the exchange's order), cancels by their ids.
EVENTS_SQL = """
SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id, received_at, session_id
FROM book_events
WHERE pair = ANY(%s) AND ts > %s AND ts <= %s
ORDER BY ts, kind DESC, oid, cancel_order_id
"""

FILLS_SQL = """
SELECT pair, tid, oid, o_id, type, price, amount, ts, received_at
FROM book_fills
WHERE pair = ANY(%s) AND ts > %s AND ts <= %s
ORDER BY ts, tid
"""


class Recording:
    """A period of the recorder's database, read on one connection in one read-only
    transaction (REPEATABLE READ), so that a recorder still writing to it changes nothing."""

    def __init__(
        self, conn: psycopg.AsyncConnection[TupleRow], pairs: tuple[str, ...], since: datetime,
        until: datetime,
    ) -> None:  # fmt: skip
        self.conn, self.pairs, self.since, self.until = conn, pairs, since, until

    async def period(self) -> Period:
        cursor = await self.conn.execute(PAIRS_SQL, [list(self.pairs)])
        specs = {
            name: PairSpec(name, c1, c2, precision, minimum, maximum)
            for name, c1, c2, precision, minimum, maximum in await cursor.fetchall()
        }
        missing = [pair for pair in self.pairs if pair not in specs]
        if missing:
            raise ReplayError(f"pairs: not recorded in this database: {', '.join(missing)}")
        books = {pair: await self._start_book(pair) for pair in self.pairs}
        cursor = await self.conn.execute(TRADES_SQL, [list(self.pairs), self.until])
        trades = [
            Fill(
                tid=tid, pair=pair, type=side, price=price, amount=amount,
                # The tape does not say which orders traded; `/exchanges/` shows neither.
                o_id=0, oid=0, timestamp=micros_date(to_micros(ts)),
            )
            for pair, tid, ts, side, price, amount in await cursor.fetchall()
        ]  # fmt: skip
        cursor = await self.conn.execute(CANDLES_SQL, [list(self.pairs), self.until])
        candles = [
            (pair, resolution, Candle(int(bucket.timestamp()), o, h, low, c, volume))
            for pair, resolution, bucket, o, h, low, c, volume in await cursor.fetchall()
            if is_candle_type(resolution)  # the table's CHECK allows no other
        ]
        return Period(specs, books, trades, candles)

    async def _start_book(self, pair: str) -> list[Order]:
        """The book at `since`."""
        cursor = await self.conn.execute(START_SNAPSHOT_SQL, [pair, self.since])
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            raise ReplayError(
                f"since: no ungrouped snapshot of {pair} followed by the stream (in_sync) at or"
                f" before {self.since.isoformat()} to start its book from"
            )
        cursor = await self.conn.execute(START_BOOK_SQL, {"pair": pair, "at": self.since})
        orders = [
            Order(
                oid=order_id, pair=pair, side=side, price=price, amount=amount,
                original_amount=amount, timestamp=micros_date(to_micros(order_ts)),
            )
            for side, order_id, price, amount, order_ts in await cursor.fetchall()
        ]  # fmt: skip
        return orders

    async def groups(self) -> AsyncIterator[Group]:
        """The window's events grouped by date, oldest first, streamed from two cursors."""
        window = [list(self.pairs), self.since, self.until]
        async with (
            self.conn.cursor(name="replay_events") as events,
            self.conn.cursor(name="replay_fills") as fills,
        ):
            events.itersize = fills.itersize = FETCH_ROWS
            await events.execute(EVENTS_SQL, window)
            await fills.execute(FILLS_SQL, window)
            fill_rows = aiter(fills)  # fetched `itersize` rows at a time, as events are
            pending_fill: BookFill | None = None
            group: Group | None = None
            by_order: dict[tuple[str, int], list[BookFill]] = {}
            async for row in events:
                event = BookEvent(*row)
                date_us = to_micros(event.ts)
                if group is None or group.date_us != date_us:
                    if group is not None:
                        yield group
                    group = Group(date_us, [])
                    # this date's fills (fills of events outside the window are skipped)
                    by_order = {}
                    while True:
                        if pending_fill is None:
                            fill_row = await anext(fill_rows, None)
                            if fill_row is None:
                                break
                            pending_fill = BookFill(*fill_row)
                        fill_us = to_micros(pending_fill.ts)
                        if fill_us > date_us:
                            break
                        if fill_us == date_us:
                            key = (pending_fill.pair, pending_fill.oid)
                            by_order.setdefault(key, []).append(pending_fill)
                        pending_fill = None
                order_fills = (
                    by_order.pop((event.pair, event.oid), []) if event.kind == "new" else []
                )
                group.events.append((event, order_fills))
            if group is not None:
                yield group


# --- the source -----------------------------------------------------------------------------


@dataclass
class Tape:
    """The trades and candles not shown yet, released as the replay clock reaches them."""

    trades: list[Fill]
    candles: list[tuple[str, CandleType, Candle]]
    next_trade: int = 0
    next_candle: int = 0

    def release(self, sim: Simulator, clock_us: int) -> None:
        date = micros_date(clock_us)
        engine = sim.engine
        while self.next_trade < len(self.trades) and self.trades[self.next_trade].timestamp <= date:
            trade = self.trades[self.next_trade]
            engine.trades.append(trade)
            engine.trades_by_pair[trade.pair].append(trade)
            self.next_trade += 1
        seconds = clock_us // 1_000_000
        while (
            self.next_candle < len(self.candles)
            and self.candles[self.next_candle][2].time <= seconds
        ):
            pair, resolution, candle = self.candles[self.next_candle]
            series = sim.charts.series[pair][resolution]
            series.times.append(candle.time)
            series.candles.append(candle)
            self.next_candle += 1


@dataclass
class RecordedSource:
    """Drives a `Simulator` with a `Recording` (an `EventSource` of `recorder.sim.server`)."""

    recording: Recording
    period: Period
    clock: ReplayClock
    start: Start = "subscribed"
    events_made: int = 0
    started: bool = False
    done: bool = False
    tape: Tape = field(init=False)
    books: dict[str, recorded_book.Book] = field(init=False)
    """The recorder's reading of each book: which order a cancel removes."""

    def __post_init__(self) -> None:
        self.tape = Tape(self.period.trades, self.period.candles)
        self.books = {}

    def prepare(self, sim: Simulator) -> None:
        engine = sim.engine
        for pair, spec in self.period.specs.items():
            engine.specs[pair] = spec
            engine.books[pair].spec = spec
            book = engine.books[pair]
            for order in self.period.books[pair]:
                engine.orders[order.oid] = order
                book.sides[order.side].add(order)
            self.books[pair] = recorded_book.Book(
                recorded_book.RestingOrder(o.oid, o.side, o.price, o.amount)
                for o in self.period.books[pair]
            )
        self.tape.release(sim, self.clock.now(time.monotonic()))
        if self.start == "subscribed":
            sim.pause()

    async def run(self, sim: Simulator) -> None:
        await self._wait_for_start(sim)
        async for group in self.recording.groups():
            while True:
                now_s = time.monotonic()
                self._follow_pause(sim, now_s)
                wait_s = self.clock.seconds_until(group.date_us, now_s)
                if wait_s == 0:
                    break
                self.tape.release(sim, self.clock.now(now_s))
                await asyncio.sleep(TICK_S if wait_s is None else min(wait_s, TICK_S))
            self.clock.reach(group.date_us, time.monotonic())
            # The tape first: a trade is on /exchanges/ once its event is made, as live.
            self.tape.release(sim, group.date_us)
            for event, fills in group.events:
                sim.engine.publish(self._apply(sim, event, fills))
            self.events_made += len(group.events)
            await sim.outbox_room()
            await asyncio.sleep(0)
        while True:  # no events left: the clock runs on to `until`
            now_s = time.monotonic()
            self._follow_pause(sim, now_s)
            wait_s = self.clock.seconds_until(self.clock.until_us, now_s)
            if wait_s == 0:
                break
            self.tape.release(sim, self.clock.now(now_s))
            await asyncio.sleep(TICK_S if wait_s is None else min(wait_s, TICK_S))
        self.clock.reach(self.clock.until_us, time.monotonic())
        self.tape.release(sim, self.clock.until_us)
        self.done = True
        log.info("replay done", events=self.events_made, until=self.recording.until.isoformat())

    async def _wait_for_start(self, sim: Simulator) -> None:
        if self.start == "subscribed":
            channels = [f"book_{pair}" for pair in self.period.specs]
            # the server has no "subscribed" event to wait on; resume also starts it
            while sim.faults.paused and not all(sim.subscribers(c) for c in channels):  # noqa: ASYNC110
                await asyncio.sleep(TICK_S)
            sim.resume()
        self.started = True
        self.clock.run(time.monotonic())

    def _follow_pause(self, sim: Simulator, now_s: float) -> None:
        if sim.faults.paused:
            self.clock.stop(now_s)
        else:
            self.clock.run(now_s)

    def _apply(self, sim: Simulator, event: BookEvent, fills: list[BookFill]) -> Event:
        """Change the simulator's book as the recorded event did; the event to publish."""
        date = micros_date(to_micros(event.ts))
        self._change_books(sim, event, fills, date)
        if event.kind == "cancel":
            return Cancel(
                pair=event.pair, date=date, oid=event.oid,
                # sent as stored: a cancel recorded without it goes out with null
                cancel_order_id=cast(int, event.cancel_order_id),
                price=event.price, type=event.type, amount=event.amount,
            )  # fmt: skip
        trades = tuple(
            Fill(
                tid=f.tid, pair=f.pair, type=f.type, price=f.price, amount=f.amount,
                o_id=f.o_id, oid=f.oid, timestamp=date,
            )
            for f in fills
        )  # fmt: skip
        return NewOrder(event.pair, date, event.oid, event.type, event.price, event.amount, trades)

    def _change_books(
        self, sim: Simulator, event: BookEvent, fills: list[BookFill], date: Decimal
    ) -> None:
        """The recorder's book decides (which order a cancel removes); the simulator's
        book, which REST serves, follows it."""
        engine = sim.engine
        book = engine.books[event.pair]
        if event.kind == "cancel":
            applied = self.books[event.pair].cancel(event)
            if applied.removed is not None:
                self._take_off(sim, applied.removed.order_id, STATUS_CANCELLED)
            return
        self.books[event.pair].apply(event, fills)
        for fill in fills:
            resting = engine.orders.get(fill.o_id)
            if resting is None or resting.status != STATUS_ACTIVE or resting.pair != event.pair:
                continue  # not on this book: the recorder's own book reports such fills
            resting.amount -= fill.amount
            if resting.amount <= 0:
                self._take_off(sim, resting.oid, STATUS_DONE)
        # An order recorded as placed twice rests once, as the recorder's book keeps it.
        self._take_off(sim, event.oid, STATUS_DONE)
        order = self._order(event, fills, date)
        engine.orders[event.oid] = order
        if event.amount > 0:
            book.sides[event.type].add(order)

    @staticmethod
    def _order(event: BookEvent, fills: list[BookFill], date: Decimal) -> Order:
        """The order a new-order event placed: resting (active) when some of it is left."""
        placed = event.amount + sum((f.amount for f in fills), Decimal(0))
        return Order(
            oid=event.oid, pair=event.pair, side=event.type, price=event.price,
            amount=event.amount, original_amount=placed, timestamp=date,
            status=STATUS_ACTIVE if event.amount > 0 else STATUS_DONE,
        )  # fmt: skip

    @staticmethod
    def _take_off(sim: Simulator, oid: int, status: int) -> None:
        order = sim.engine.orders.get(oid)
        if order is not None and order.status == STATUS_ACTIVE:
            sim.engine.books[order.pair].sides[order.side].remove(order)
            order.status = status

    def state(self) -> dict[str, Any]:
        now_us = self.clock.now(time.monotonic())
        return {
            "replay": {
                "clock": micros_datetime(now_us).isoformat(),
                "clock_s": micros_date(now_us),
                "since": self.recording.since.isoformat(),
                "until": self.recording.until.isoformat(),
                "speed": "max" if self.clock.speed is None else self.clock.speed,
                "started": self.started,
                "running": self.clock.running,
                "done": self.done,
                "events_made": self.events_made,
                "trades_shown": self.tape.next_trade,
            }
        }


@dataclass(frozen=True)
class ReplaySettings:
    dsn: str
    pairs: tuple[str, ...]
    since: datetime
    until: datetime
    speed: float | None = 1.0
    """Times real time; None: as fast as the clients take the events."""
    host: str = "127.0.0.1"
    port: int = 0
    start: Start = "subscribed"

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ReplayError("pairs: name at least one pair")
        if self.until <= self.since:
            raise ReplayError("until: must be after since")
        if self.speed is not None and not self.speed > 0:
            raise ReplayError(f"speed: must be more than 0, not {self.speed}")


@asynccontextmanager
async def run_replay(settings: ReplaySettings) -> AsyncIterator[Simulator]:
    """The simulated exchange serving the recorded period, for the `async with` block;
    `sim.source` is the `RecordedSource` (its clock, whether it is done)."""
    conn = await psycopg.AsyncConnection.connect(settings.dsn)
    try:
        await conn.set_read_only(True)
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        recording = Recording(conn, settings.pairs, settings.since, settings.until)
        period = await recording.period()
        clock = ReplayClock(to_micros(settings.since), to_micros(settings.until), settings.speed)
        source = RecordedSource(recording, period, clock, settings.start)
        sim_settings = SimSettings(
            host=settings.host, port=settings.port, pairs=settings.pairs, rate_per_s=0,
            history_hours=0,
        )  # fmt: skip
        sim = Simulator(sim_settings, source)
        await sim.start()
        try:
            yield sim
        finally:
            await sim.stop()
    finally:
        await conn.close()
