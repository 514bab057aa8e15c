"""A pair's book is rebuilt only from a snapshot asked for once its subscription is live.

Against the loopback exchange over real sockets: a snapshot asked for before the subscription
took effect can show an order whose removal the stream never delivers, so the "connect"
snapshot waits for the pair's first event since the resync, or for `SUBSCRIBED_QUIET_S` when
the pair is quiet; so does the first snapshot of a pair followed while the stream is up; and a
snapshot that was already under way when the stream (re)connected does not seed the book.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

from recorder.book import Book, RestingOrder
from recorder.exchange.rest import ExchangeClient
from recorder.records import BookSnapshot
from recorder.sources.book import SETTLE_S, SUBSCRIBED_QUIET_S, BookRecorder
from tests.exchange import conftest as exchange_tests
from tests.exchange.loopback import FakeExchange, Fault
from tests.exchange.streams import make_stream
from tests.harness.waiting import eventually
from tests.test_sources import BOOK, ORDERBOOK, PAIR, Handed, metric

exchange = exchange_tests.exchange

NEW_ORDER = {"success": True, "date": 1700000002.5, "oid": 9, "type": "buy", "price": "98",
             "amount": "0.5", "trades": []}  # fmt: skip


@asynccontextmanager
async def recording(exchange: FakeExchange) -> AsyncIterator[tuple[BookRecorder, Handed]]:
    """A book recorder of PAIR on the loopback exchange, its stream, consumer and ticker up."""
    exchange.bodies[ORDERBOOK] = BOOK
    handed = Handed()
    async with ExchangeClient(exchange.url) as client:
        stream = make_stream(exchange, [PAIR])
        recorder = BookRecorder(client, stream, handed, snapshot_interval_s=3600)  # type: ignore[arg-type]
        recorder.follow(PAIR)
        tasks = [
            asyncio.create_task(stream.run()),
            asyncio.create_task(recorder.consume()),
            asyncio.create_task(recorder.snapshots(PAIR)),
        ]
        try:
            yield recorder, handed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def connect_snapshots(handed: Handed) -> list[BookSnapshot]:
    return [s for s in handed.of(BookSnapshot) if s.reason == "connect"]


async def test_the_resync_snapshot_waits_for_the_pairs_first_event(
    exchange: FakeExchange,
) -> None:
    async with recording(exchange) as (recorder, handed):
        await asyncio.wait_for(exchange.subscribed.wait(), timeout=10)
        # The subscription is taken; the pair's first event says it is live.
        emitted_at = time.monotonic()
        await exchange.emit(PAIR, NEW_ORDER)
        await eventually(lambda: connect_snapshots(handed), what="the resync snapshot")
    _start, request = exchange.requests_to(ORDERBOOK)  # [0]: "start"
    assert request.at_s > emitted_at
    # Not held back for the quiet pair's wait: the event ended it.
    assert request.at_s < recorder.pairs[PAIR].subscribed_at + SUBSCRIBED_QUIET_S


async def test_a_quiet_pairs_resync_snapshot_waits_a_bounded_time(exchange: FakeExchange) -> None:
    async with recording(exchange) as (recorder, handed):
        await eventually(lambda: connect_snapshots(handed), what="the resync snapshot")
    _start, request = exchange.requests_to(ORDERBOOK)
    assert request.at_s >= recorder.pairs[PAIR].subscribed_at + SUBSCRIBED_QUIET_S
    assert exchange.subscriptions == [(exchange.subscriptions[0][0], f"book_{PAIR}")]


BOOK_AFTER_CANCEL = json.dumps({"sell": [], "buy": json.loads(BOOK)["buy"]})
"""BOOK once its sell order 7 is cancelled."""


@asynccontextmanager
async def start_answered_once_connected(
    exchange: FakeExchange, settle_s: float = SETTLE_S
) -> AsyncIterator[tuple[BookRecorder, Handed]]:
    """A book recorder whose start snapshot (BOOK) is asked for before the stream connects,
    as at every start, and answered only once the stream is up. Later snapshots get what
    `exchange.bodies[ORDERBOOK]` holds then."""
    answered = asyncio.Event()
    exchange.fail(ORDERBOOK, Fault(status=200, body=BOOK, held=answered))
    handed = Handed()
    async with ExchangeClient(exchange.url) as client:
        stream = make_stream(exchange, [PAIR])
        recorder = BookRecorder(client, stream, handed, snapshot_interval_s=3600,
                                settle_s=settle_s)  # type: ignore[arg-type]  # fmt: skip
        tasks = [
            asyncio.create_task(recorder.consume()),
            asyncio.create_task(recorder.snapshots(PAIR)),
        ]
        try:
            await eventually(lambda: exchange.requests_to(ORDERBOOK), what="the start request")
            tasks.append(asyncio.create_task(stream.run()))
            await eventually(lambda: recorder.resyncs, what="the stream's first connect")
            answered.set()
            yield recorder, handed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_snapshot_under_way_when_the_stream_connects_does_not_seed_the_book(
    exchange: FakeExchange,
) -> None:
    # The exchange takes the start snapshot, then order 7 is cancelled before the
    # subscription takes effect, so the stream never delivers that cancel.
    exchange.bodies[ORDERBOOK] = BOOK_AFTER_CANCEL
    drift_before = metric("recorder_book_drift_total", pair=PAIR)
    async with start_answered_once_connected(exchange) as (recorder, handed):
        await eventually(lambda: connect_snapshots(handed), what="the resync snapshot")
    start, connect = handed.of(BookSnapshot)
    assert (start.reason, connect.reason) == ("start", "connect")
    # Stored so that book_at and book_coverage pass over the start snapshot.
    assert (start.in_sync, connect.in_sync) == (False, True)
    assert metric("recorder_book_drift_total", pair=PAIR) == drift_before
    model = recorder.pairs[PAIR].model
    assert model is not None
    assert model.differences(Book([RestingOrder(8, "buy", Decimal("99"), Decimal("1.25"))])) == []


OTHER = "ETH_USD"
OTHER_ORDERBOOK = f"/api/v1/orderbook/{OTHER}/"


async def test_a_pair_followed_while_connected_is_snapshotted_once_its_subscription_is_live(
    exchange: FakeExchange,
) -> None:
    exchange.bodies[OTHER_ORDERBOOK] = BOOK
    async with recording(exchange) as (recorder, handed):
        await eventually(lambda: connect_snapshots(handed), what="the first pair's resync")
        # As the daemon adds a pair: subscribed on the connection up, then followed.
        await recorder._stream.add_pairs([OTHER])
        recorder.follow(OTHER)
        snapshots = asyncio.create_task(recorder.snapshots(OTHER))
        try:
            sid = exchange.connected[0]
            await eventually(
                lambda: (sid, f"book_{OTHER}") in exchange.subscriptions,
                what="the new pair's subscription",
            )
            emitted_at = time.monotonic()
            await exchange.emit(OTHER, NEW_ORDER)
            await eventually(lambda: exchange.requests_to(OTHER_ORDERBOOK), what="its snapshot")
        finally:
            snapshots.cancel()
            await asyncio.gather(snapshots, return_exceptions=True)
    (request,) = exchange.requests_to(OTHER_ORDERBOOK)
    assert request.at_s > emitted_at


async def test_a_resync_snapshot_is_not_dated_by_an_event_from_before_the_outage(
    exchange: FakeExchange,
) -> None:
    # A snapshot holding none of the events received since its resync holds what changed
    # while no connection listened: dated by the last event before the outage, book_at would
    # start from it at instants before the outage.
    async with recording(exchange) as (recorder, handed):
        await asyncio.wait_for(exchange.subscribed.wait(), timeout=10)
        await exchange.emit(PAIR, NEW_ORDER)
        await eventually(lambda: connect_snapshots(handed), what="the first resync snapshot")
        await exchange.kick_all()
        await eventually(lambda: recorder.resyncs == 2, what="the stream's reconnect")
        await eventually(lambda: len(connect_snapshots(handed)) == 2, what="its resync snapshot")
    first, second = connect_snapshots(handed)
    assert first.events_through == datetime.fromtimestamp(NEW_ORDER["date"], UTC)
    assert (second.events_through, second.in_sync) == (None, True)


async def test_a_snapshot_under_way_when_the_stream_connects_skips_its_settle_wait(
    exchange: FakeExchange,
) -> None:
    # Its cut cannot make it seed the book, so it is recorded as soon as it is answered, and
    # the snapshot the resync owes is not put off by a settle wait (here an hour's).
    exchange.bodies[ORDERBOOK] = BOOK
    async with start_answered_once_connected(exchange, settle_s=3600) as (_recorder, handed):
        await eventually(lambda: handed.of(BookSnapshot), what="the start snapshot recorded")
        await eventually(lambda: len(exchange.requests_to(ORDERBOOK)) == 2,
                         what="the resync's snapshot asked for")  # fmt: skip
    (start,) = handed.of(BookSnapshot)
    assert (start.reason, start.in_sync) == ("start", False)


@asynccontextmanager
async def subscribed_then_snapshotting(
    exchange: FakeExchange, settle_s: float
) -> AsyncIterator[tuple[BookRecorder, Handed]]:
    """A book recorder whose stream is up and the pair's subscription live before its first
    snapshot is asked for."""
    exchange.bodies[ORDERBOOK] = BOOK
    handed = Handed()
    async with ExchangeClient(exchange.url) as client:
        stream = make_stream(exchange, [PAIR])
        recorder = BookRecorder(client, stream, handed, snapshot_interval_s=3600,
                                settle_s=settle_s)  # type: ignore[arg-type]  # fmt: skip
        recorder.follow(PAIR)
        tasks = [asyncio.create_task(stream.run()), asyncio.create_task(recorder.consume())]
        try:
            await asyncio.wait_for(exchange.subscribed.wait(), timeout=10)
            await exchange.emit(PAIR, NEW_ORDER)
            await asyncio.wait_for(recorder.pairs[PAIR].live.wait(), timeout=10)
            tasks.append(asyncio.create_task(recorder.snapshots(PAIR)))
            yield recorder, handed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_snapshot_answered_before_the_stream_drops_is_followed_until_it(
    exchange: FakeExchange,
) -> None:
    # Subscribed from its request to its answer, it holds the book of the stretch that ends
    # at the drop: book_at may start from it there. Its settle wait (an hour here) ends at
    # the drop, when no event of its window can come any more.
    def answered() -> float:  # the first snapshot's reason: "start", or "connect" if woken
        return sum(metric("recorder_book_resyncs_total", pair=PAIR, reason=reason)
                   for reason in ("start", "connect"))  # fmt: skip

    answered_before = answered()
    async with subscribed_then_snapshotting(exchange, settle_s=3600) as (recorder, handed):
        await eventually(lambda: answered() > answered_before, what="the snapshot answered")
        await exchange.kick_all()
        await eventually(lambda: handed.of(BookSnapshot), what="the snapshot recorded")
    (snapshot,) = handed.of(BookSnapshot)
    assert snapshot.in_sync
    # The drop left no connection up: the book is not kept from events until the resync.
    assert recorder.pairs[PAIR].model is None


async def test_a_snapshot_answered_after_the_stream_dropped_is_not_followed(
    exchange: FakeExchange,
) -> None:
    answered = asyncio.Event()
    exchange.fail(ORDERBOOK, Fault(status=200, body=BOOK, held=answered))
    async with subscribed_then_snapshotting(exchange, settle_s=1) as (recorder, handed):
        await eventually(lambda: exchange.requests_to(ORDERBOOK), what="the snapshot asked for")
        await exchange.kick_all()
        await eventually(lambda: not recorder.connected.is_set(), what="no connection up")
        answered.set()
        await eventually(lambda: handed.of(BookSnapshot), what="the snapshot recorded")
    snapshot, *_ = handed.of(BookSnapshot)
    assert not snapshot.in_sync
