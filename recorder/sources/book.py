"""The order book: the socket stream recorded as it arrives, REST snapshots on a timer and
after every resync, and an in-memory L3 book per pair that checks the two agree.

Every stream item goes to the writer unchanged (sessions, events with their fills, raw
messages; the stream has already kept one copy of each event of its redundant connections).
Each pair's book is rebuilt from a snapshot and the events after it; at each new snapshot
the rebuilt book is compared with the exchange's. A resync is owed only when the stream comes
back after a moment with no connection up (`Connected.resync`): a connection that drops while
another listens misses nothing. Each pair's snapshots run on a `Ticker` (`snapshots:PAIR`):
every interval, and at once ("connect") at a resync; a snapshot that fails is tried again
with the same reason, so a resync is not put off to the next interval.

Which events a snapshot contains (`recorder.book.snapshot_cut`): the exchange may apply any
of the events the stream delivers between a snapshot's request and its answer (and the
stream may deliver an event the answer holds a little later). So each snapshot keeps the
pair's rebuilt book as it was at the request and the events received from then until
`settle_s` after the answer, and finds the cut: how many of those events it already holds.
A stream behind REST (an exchange's socket under load, or a recorder behind its socket)
delivers some of the events an answer holds later than that: where the answer holds orders
otherwise than the rebuilt book and no event received explains them, the snapshot waits for
the events that do, up to `CATCH_UP_S` (beyond it, what is left is drift).
The snapshot is recorded only then, with `events_through`, the exchange's date of the last
event it holds, where `book_at` starts (a crash meanwhile loses that snapshot: the next
start takes another). The rebuilt book becomes the snapshot plus the events after the cut,
the rule `book_at` follows; where that differs from the book rebuilt from events it is drift
(`recorder_book_drift_total`), logged with what differs. A resync has no rebuilt book: the
cut rests on what the events show, and when they leave it open the snapshot is taken again
at once (`UNDECIDED_RETRIES`).

A snapshot seeds the rebuilt book only if the stream delivered every event after it: it is
asked for once the pair's subscription is live (its first event since it was sent, or
`SUBSCRIBED_QUIET_S` for a quiet pair), and one already under way when the stream (re)connects
after a moment with no connection up (at every start: the first snapshot goes out before the
stream connects) is recorded with `in_sync` false, which `book_at` and `book_coverage` pass
over; the resync's own snapshot seeds the book.

Which id of a cancel names the cancelled order is decided from the data (`recorder.book`).
Each pair keeps one `CancelReading` for the whole run, across resyncs: the exchange's
reading does not change when our connection does, and the evidence should not start over.
One per pair rather than one for all pairs, so that a pair decides as `book_at` does from
that pair's stored events. Each cancel is counted by outcome in
`recorder_cancel_reading_total{pair,reading}`, and a pair's established reading is logged
when first known and whenever it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import NoReturn

from recorder import metrics
from recorder.book import Book, CancelReading, Reading, SnapshotCut, snapshot_cut
from recorder.clock import REAL_CLOCK, Clock
from recorder.exchange.classify import BookUpdate
from recorder.exchange.parse import OrderBook
from recorder.exchange.rest import ExchangeClient
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.logs import get_logger
from recorder.records import BookEvent, BookFill, RawMessage, StreamSession
from recorder.storage.writer import Writer
from recorder.ticker import Ticker

log = get_logger(__name__)

SETTLE_S = 1.0
CATCH_UP_S = 30.0
"""How long past its settle wait a snapshot waits for the events its answer holds that the
stream has not delivered yet. Recorders behind a burst were measured 5-9 s behind their
socket (docs/benchmarks.md); the bound keeps an answer that no event will ever explain
(events lost: drift) from holding the pair's snapshots back for long."""
UNDECIDED_RETRIES = 3
"""Snapshots taken again at once when the events leave a resync snapshot's cut open (a fill
of an order resting before the request is in it or not); the last is recorded with its cut
unknown (`events_through` NULL: `book_at` starts at its taken_at)."""
SUBSCRIBED_QUIET_S = 1.5
"""How long a resync snapshot waits for a pair's first event before taking a quiet pair's
subscription as live: the exchange documents no subscribe acknowledgement, and the stream
subscribes right after a connection opens (a few emits), so this bounds the wait for a pair
that simply does not trade."""

_EVENT_LAG = metrics.Children(metrics.event_lag)
_CANCEL_READING = metrics.Children(metrics.cancel_reading)


@dataclass
class SnapshotWindow:
    """One snapshot's request: the rebuilt book then, and the events received since."""

    before: Book | None
    through: datetime | None
    """The date of the last event received before the request."""
    subscribed: bool
    """Whether the stream was up (and the pair's subscription live) at the request."""
    events: list[tuple[BookEvent, tuple[BookFill, ...]]] = field(default_factory=list)
    broken: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when no connection listened for a while: events of the window may be missing, so
    the snapshot cannot seed the book, and its settle wait is cut short (no more events of
    the window can come)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each event received and when broken: wakes a snapshot waiting for events."""

    def add(self, event: BookEvent, fills: tuple[BookFill, ...]) -> None:
        self.events.append((event, fills))
        self.changed.set()

    def break_off(self) -> None:
        self.broken.set()
        self.changed.set()


@dataclass
class PairBook:
    snapshots: Ticker
    """Snapshot times: every interval; woken with "connect" when the stream (re)connects."""
    model: Book | None = None
    """The book rebuilt from a snapshot and the events after it; None until one can be
    trusted (a snapshot since the last connect)."""
    windows: list[SnapshotWindow] = field(default_factory=list)
    """The snapshots asked for and not yet cut, each collecting the events received since."""
    last_event_ts: datetime | None = None
    """The exchange's date of the pair's last book event received."""
    cancel_reading: CancelReading = field(default_factory=CancelReading)
    """Shared by every book of the pair over the run: the evidence outlives resyncs."""
    announced_reading: Reading | None = None
    subscribed_at: float = float("-inf")
    """When the pair's subscription was last sent, at a resync or when it was followed while
    the stream was up (`time.monotonic()`)."""
    live: asyncio.Event = field(default_factory=asyncio.Event)
    """An event of the pair has arrived since `subscribed_at`: its subscription is live."""


class BookRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        stream: BookStream,
        writer: Writer,
        *,
        snapshot_interval_s: float,
        settle_s: float = SETTLE_S,
        on_resync: Callable[[], None] | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        """`clock`: the snapshot tickers' (tests move a fake one)."""
        self._client = client
        self._stream = stream
        self._writer = writer
        self._every = partial(Ticker, interval_s=snapshot_interval_s, clock=clock)
        """A ticker of this source's interval, given its name."""
        self._settle_s = settle_s
        self._on_resync = on_resync
        self.pairs: dict[str, PairBook] = {}
        self.connected = asyncio.Event()
        self.connects = 0
        self.resyncs = 0
        """Connects that found no other connection up, so that the books resynced."""
        self.sessions: dict[uuid.UUID, StreamSession] = {}
        """The open stream sessions, one per connection up."""

    def close(self) -> None:
        """At shutdown, once the stream has stopped: record what it delivered, its closing
        `Disconnected` included."""
        while not self._stream.items.empty():
            self.handle(self._stream.items.get_nowait())

    def follow(self, pair: str) -> PairBook:
        """The pair's book state; a pair followed for the first time is snapshotted at once
        (reason "start") when `snapshots(pair)` runs."""
        book = self.pairs.get(pair)
        if book is None:
            ticker = self._every(f"snapshots:{pair}")
            book = self.pairs[pair] = PairBook(ticker)
            if self._stream.connected:
                # Subscribed on the connections up just now (`BookStream.add_pairs`): its
                # first snapshot waits for that to take effect, as a resync's does.
                book.subscribed_at = time.monotonic()
        return book

    def unfollow(self, pair: str) -> None:
        """Forget the pair's book (delisted); followed again, it starts from a snapshot."""
        self.pairs.pop(pair, None)

    # -- the stream ---------------------------------------------------------------------

    async def consume(self) -> None:
        """Record every stream item, in order; never returns."""
        while True:
            item = await self._stream.items.get()
            self.handle(item)

    def handle(self, item: Connected | Disconnected | BookUpdate | RawMessage) -> None:
        if isinstance(item, BookUpdate):
            pair_book = self.pairs.get(item.event.pair)
            if pair_book is not None:
                pair_book.live.set()
                pair_book.last_event_ts = item.event.ts
                for window in pair_book.windows:
                    window.add(item.event, tuple(item.fills))
            self._writer.put(item.event)
            self._writer.put_many(item.fills)
            _EVENT_LAG(item.event.pair).observe(
                max(0.0, (item.event.received_at - item.event.ts).total_seconds())
            )
            self._apply(item)
        elif isinstance(item, RawMessage):
            self._writer.put(item)
        elif isinstance(item, Connected):
            self._writer.put(item.session)
            self.sessions[item.session.session_id] = item.session
            self.connects += 1
            self.connected.set()
            if item.resync:
                self._resync()
        elif isinstance(item, Disconnected):
            self._writer.put(item.session)
            self.sessions.pop(item.session.session_id, None)
            if not item.covered:
                # No connection listens: the books can no longer be kept from events.
                self.connected.clear()
                for book in self.pairs.values():
                    book.model = None
                    book.last_event_ts = None
                    for window in book.windows:
                        window.break_off()

    def _resync(self) -> None:
        """No connection was up: what was missed cannot be replayed, so every book starts
        again from a snapshot, and the trade tape is caught up."""
        self.resyncs += 1
        for book in self.pairs.values():
            book.model = None
            # A snapshot holding none of the events since is not the book as of an event
            # before the outage: it holds what changed during it (events_through NULL: its
            # request).
            book.last_event_ts = None
            book.subscribed_at = time.monotonic()
            book.live.clear()
            book.snapshots.wake("connect")
            for window in book.windows:
                # Asked for while no connection listened: what changed between its answer and
                # the subscription taking effect never reaches the stream.
                window.break_off()
        if self._on_resync is not None:
            self._on_resync()

    def _apply(self, update: BookUpdate) -> None:
        event = update.event
        book = self.pairs.get(event.pair)
        if book is None or book.model is None:
            return
        if event.kind == "cancel":
            applied = book.model.cancel(event)
            _CANCEL_READING(event.pair, applied.outcome).inc()
            self._announce_reading(event.pair, book)
        else:
            book.model.apply(event, update.fills)

    def _announce_reading(self, pair: str, book: PairBook) -> None:
        tally = book.cancel_reading
        established = tally.established
        if established == book.announced_reading:
            return
        book.announced_reading = established
        if established is None:
            log.warning(
                "cancel events no longer show which id names the cancelled order",
                pair=pair,
                evidence_oid=tally.oid,
                evidence_cancel_order_id=tally.cancel_order_id,
            )
        else:
            log.info(
                "cancel events name the cancelled order by this field",
                pair=pair,
                field=established,
                evidence_oid=tally.oid,
                evidence_cancel_order_id=tally.cancel_order_id,
            )

    # -- snapshots ----------------------------------------------------------------------

    async def snapshots(self, pair: str) -> NoReturn:
        """Snapshot `pair` at once ("start"), every interval ("interval"), and at once after
        every (re)connect ("connect"); a failed snapshot is tried again with its reason."""
        book = self.follow(pair)

        async def step(reason: str) -> None:
            await self.snapshot(pair, reason)

        await book.snapshots.run(step)

    async def snapshot(self, pair: str, reason: str) -> None:
        """One snapshot: cut (which events it holds), recorded, counted under `reason`, and
        compared with the rebuilt book."""
        book = self.follow(pair)
        for retry in range(UNDECIDED_RETRIES + 1):
            await self._subscription_live(book)
            window = SnapshotWindow(
                book.model.copy() if book.model is not None else None,
                book.last_event_ts,
                subscribed=self._stream.connected,
            )
            book.windows.append(window)
            try:
                answer = await self._request(pair, reason)
                # Followed by the stream from its cut on, so that book_at may start from it
                # (book_snapshots.in_sync): subscribed from before the request until the
                # answer came. A connection lost after that only ends the stretch it starts.
                in_sync = window.subscribed and not window.broken.is_set()
                # Events the answer holds may still be on their way: wait for them, unless no
                # connection listens any more (none can come), so that the snapshot the
                # resync owes is not put off.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(window.broken.wait(), self._settle_s)
                exchange = Book.from_snapshot(answer.orders, cancel_reading=book.cancel_reading)
                cut = await self._cut_once_delivered(pair, window, answer, exchange)
            finally:
                book.windows.remove(window)
            # The book kept from events needs the stream up since the request.
            seeds = in_sync and self._stream.connected and not window.broken.is_set()
            if cut.events is None and seeds and retry < UNDECIDED_RETRIES:
                log.info("the snapshot's events leave its cut open: taking it again", pair=pair)
                continue
            self._record(answer, window, cut.events, in_sync)
            self._rebuild(pair, book, window, exchange, cut.events or 0, seeds)
            return

    async def _cut_once_delivered(
        self, pair: str, window: SnapshotWindow, answer: OrderBook, exchange: Book
    ) -> SnapshotCut:
        """The snapshot's cut, once the window holds the events the answer holds, as far as
        can be told (a stream behind REST delivers some of them after the settle wait).

        With a book from before the request the answer tells: while no cut agrees with it on
        every order (orders it holds otherwise than that book that no event explains, or
        orders that disagree at the best cut), more events are awaited and the cut found
        again. Without one (a resync): the window waits for an event dated at or after the
        answer's newest order, which the stream must deliver, then the settle wait again for
        what the exchange did after that order before answering. Either ends when the pair
        falls quiet or at `CATCH_UP_S`; what no event explains then is drift (`_rebuild`).
        A quiet pair's resync snapshot therefore waits `SUBSCRIBED_QUIET_S` more: without
        clocks to compare, a stream this far behind looks like a quiet pair until it speaks.
        """
        if window.broken.is_set():  # no more of its events can come
            return snapshot_cut(window.events, exchange, window.before)
        started = asyncio.get_running_loop().time()
        deadline = started + CATCH_UP_S
        waited = False
        newest = max((o.order_ts for o in answer.orders if o.order_ts), default=None)
        # (a stream that is not connected brings nothing more)
        if window.before is None and newest is not None and self._stream.connected:
            seen = 0
            while not (reached := any(e.ts >= newest for e, _ in window.events[seen:])):
                waited = True
                seen = len(window.events)
                if not await _more_events(window, seen, deadline):
                    break
            if waited and reached:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(window.broken.wait(), self._settle_s)
        cut = snapshot_cut(window.events, exchange, window.before)
        while window.before is not None and (cut.drift or cut.unexplained):
            waited = True
            # found again once the window has grown by a tenth: bounded work on a long window
            if not await _more_events(window, len(window.events) * 11 // 10, deadline):
                cut = snapshot_cut(window.events, exchange, window.before)
                break
            cut = snapshot_cut(window.events, exchange, window.before)
        if waited:
            log.info(
                "the stream delivered the events the snapshot holds after its settle wait",
                pair=pair,
                waited_s=round(asyncio.get_running_loop().time() - started, 3),
                agrees=not (cut.drift or cut.unexplained),
            )
        return cut

    async def _request(self, pair: str, reason: str) -> OrderBook:
        started = time.perf_counter()
        answer = await self._client.orderbook(pair, reason=reason)
        metrics.snapshot_duration.labels(pair).observe(time.perf_counter() - started)
        for side in ("buy", "sell"):
            metrics.snapshot_orders.labels(pair, side).set(
                sum(1 for order in answer.orders if order.side == side)
            )
        metrics.last_snapshot_timestamp.labels(pair).set(answer.snapshot.received_at.timestamp())
        metrics.book_resyncs.labels(pair, reason).inc()
        return answer

    def _record(
        self, answer: OrderBook, window: SnapshotWindow, cut: int | None, in_sync: bool
    ) -> None:
        """The snapshot with the date of the last event it holds (None where unknown)."""
        through = None
        if cut is not None:
            through = window.events[cut - 1][0].ts if cut else window.through
        self._writer.put(replace(answer.snapshot, events_through=through, in_sync=in_sync))
        self._writer.put_many(answer.orders)

    def _rebuild(
        self,
        pair: str,
        book: PairBook,
        window: SnapshotWindow,
        exchange: Book,
        cut: int,
        seeds: bool,
    ) -> None:
        """The rebuilt book becomes the snapshot plus the events after its cut, as `book_at`
        rebuilds it; where the book rebuilt from events says otherwise, that is drift."""
        rebuilt = exchange.copy()
        for event, fills in window.events[cut:]:
            rebuilt.apply(event, fills, count=False)
        if book.model is not None and window.before is not None:
            drift = book.model.differences(rebuilt)
            if drift:
                metrics.book_drift.labels(pair).inc()
                log.warning(
                    "the book rebuilt from events disagrees with the exchange's snapshot",
                    pair=pair,
                    orders=len(drift),
                    first=drift[:5],  # "here": rebuilt from events; "there": the snapshot's
                )
        # The stream only keeps a book it can trust: one built since the last connect.
        book.model = rebuilt if seeds else None

    async def _subscription_live(self, book: PairBook) -> None:
        """Wait until the pair's subscription sent at `subscribed_at` is live: its first event
        arrived, or `SUBSCRIBED_QUIET_S` passed for a quiet pair.

        A snapshot asked for before then can show orders whose removal the stream never
        delivers (it was not subscribed yet), and nothing after could correct them. Any
        event of the pair will do, whichever connection brought it: at a resync no
        connection was up, so every connection delivering one has subscribed since; a pair
        just followed had no subscription anywhere before.
        """
        left_s = book.subscribed_at + SUBSCRIBED_QUIET_S - time.monotonic()
        if left_s > 0 and not book.live.is_set():
            try:
                async with asyncio.timeout(left_s):
                    await book.live.wait()
            except TimeoutError:
                pass  # a quiet pair: by now its subscription was sent long ago


async def _more_events(window: SnapshotWindow, than: int, deadline: float) -> bool:
    """Wait until the window holds more than `than` events; False when it breaks, the pair
    falls quiet (no event for `SUBSCRIBED_QUIET_S`: nothing more is on its way) or
    `deadline` passes first."""
    loop = asyncio.get_running_loop()
    while len(window.events) <= than:
        if window.broken.is_set() or loop.time() >= deadline:
            return False
        window.changed.clear()
        try:
            await asyncio.wait_for(
                window.changed.wait(), min(SUBSCRIBED_QUIET_S, deadline - loop.time())
            )
        except TimeoutError:
            return False
    return True
