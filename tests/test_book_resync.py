"""A resync snapshot is asked for only once the pair's subscription is live.

Against the loopback exchange over real sockets: a snapshot asked for before the subscription
took effect can show an order whose removal the stream never delivers, so the "connect"
snapshot waits for the pair's first event since the resync, or for `SUBSCRIBED_QUIET_S` when
the pair is quiet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from recorder.exchange.rest import ExchangeClient
from recorder.records import BookSnapshot
from recorder.sources.book import SUBSCRIBED_QUIET_S, BookRecorder
from tests.exchange import conftest as exchange_tests
from tests.exchange.loopback import FakeExchange
from tests.exchange.streams import make_stream
from tests.harness.waiting import eventually
from tests.test_sources import BOOK, ORDERBOOK, PAIR, Handed

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
    assert request.at_s < recorder.pairs[PAIR].resynced_at + SUBSCRIBED_QUIET_S


async def test_a_quiet_pairs_resync_snapshot_waits_a_bounded_time(exchange: FakeExchange) -> None:
    async with recording(exchange) as (recorder, handed):
        await eventually(lambda: connect_snapshots(handed), what="the resync snapshot")
    _start, request = exchange.requests_to(ORDERBOOK)
    assert request.at_s >= recorder.pairs[PAIR].resynced_at + SUBSCRIBED_QUIET_S
    assert exchange.subscriptions == [(exchange.subscriptions[0][0], f"book_{PAIR}")]
