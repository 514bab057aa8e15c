"""Redundant connections: each event once, from whichever connection brought it first; a
connection that drops while another listens loses nothing and needs no resync; every
connection reconnects at once after a drop, and at once when the exchange answers again."""

from __future__ import annotations

from recorder.exchange.classify import BookUpdate
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.retry import Backoff
from tests.exchange.loopback import FakeExchange
from tests.exchange.streams import NEW_ORDER, make_stream, next_item, next_of, running
from tests.harness.metrics import sample
from tests.harness.waiting import eventually


def order(oid: int) -> str:
    return '2["book_BTC_USD",' + NEW_ORDER.replace("15234", str(oid)) + "]"


async def both_subscribed(exchange: FakeExchange, stream: BookStream) -> tuple[Connected, ...]:
    """The two `Connected` items, once both connections have subscribed."""
    first = await next_of(stream, Connected)
    second = await next_of(stream, Connected)
    await eventually(lambda: len({sid for sid, _ in exchange.subscriptions}) >= 2)
    return first, second


async def test_each_event_is_delivered_once_by_the_first_connection(
    exchange: FakeExchange,
) -> None:
    async with running(make_stream(exchange, ["BTC_USD"], connections=2)) as stream:
        first, second = await both_subscribed(exchange, stream)
        assert (first.resync, second.resync) == (True, False)
        assert {first.session.connection, second.session.connection} == {0, 1}
        sessions = {first.session.session_id, second.session.session_id}
        received = [sample("recorder_stream_events_total", connection=c) for c in "01"]
        kept = [sample("recorder_stream_first_events_total", connection=c) for c in "01"]

        for oid in range(1, 51):
            await exchange.send_raw(order(oid))  # to both connections
        updates = [await next_of(stream, BookUpdate) for _ in range(50)]
        assert [u.event.oid for u in updates] == list(range(1, 51))
        assert {u.event.session_id for u in updates} <= sessions
        await eventually(lambda: stream.duplicates == 50, what="every second copy dropped")
        assert stream.items.empty()
        now_received = [sample("recorder_stream_events_total", connection=c) for c in "01"]
        now_kept = [sample("recorder_stream_first_events_total", connection=c) for c in "01"]
        assert [b - a for a, b in zip(received, now_received, strict=True)] == [50, 50]
        assert sum(now_kept) - sum(kept) == 50
        assert sample("recorder_stream_connections_up") == 2


async def test_a_dropped_connection_loses_nothing_and_needs_no_resync(
    exchange: FakeExchange,
) -> None:
    async with running(make_stream(exchange, ["BTC_USD"], connections=2)) as stream:
        first, second = await both_subscribed(exchange, stream)
        victim = exchange.connected[0]
        await exchange.kick(victim)
        gone = await next_of(stream, Disconnected)
        assert gone.covered
        # Sent while one connection is down: the other brings every event.
        for oid in range(1, 21):
            await exchange.send_raw(order(oid))
        items = [await next_item(stream) for _ in range(21)]
        back = [item for item in items if isinstance(item, Connected)]
        assert len(back) == 1
        assert not back[0].resync
        oids = [item.event.oid for item in items if isinstance(item, BookUpdate)]
        assert oids == list(range(1, 21))
        assert gone.session.session_id in {first.session.session_id, second.session.session_id}
        assert sample("recorder_socket_connected") == 1


async def test_when_every_connection_drops_the_next_one_resyncs(exchange: FakeExchange) -> None:
    async with running(make_stream(exchange, ["BTC_USD"], connections=2)) as stream:
        await both_subscribed(exchange, stream)
        await exchange.kick_all()
        drops = [await next_of(stream, Disconnected) for _ in range(2)]
        assert [d.covered for d in drops] == [True, False]
        back = [await next_of(stream, Connected) for _ in range(2)]
        assert [c.resync for c in back] == [True, False]


async def test_the_backoff_starts_over_once_subscribed(exchange: FakeExchange) -> None:
    # Without the reset, the sixth drop in a row would wait at least 0.25 * 2**5 = 8 s.
    backoff = Backoff(initial_s=0.5, max_s=60.0, steady_at_max=True)
    stream = BookStream(exchange.url, pairs=["BTC_USD"], backoff=backoff)
    async with running(stream):
        for drop in range(1, 8):
            await next_of(stream, Connected, timeout_s=8)
            await eventually(lambda n=drop: len(exchange.subscriptions) == n, timeout_s=8)
            await exchange.kick_all()
            await next_of(stream, Disconnected)
        await next_of(stream, Connected, timeout_s=8)


async def test_the_exchange_answering_again_cuts_the_backoff_short(
    exchange: FakeExchange,
) -> None:
    port = int(exchange.url.rsplit(":", 1)[1])
    await exchange.stop()
    backoff = Backoff(initial_s=600.0, max_s=600.0, steady_at_max=True)
    stream = BookStream(exchange.url, pairs=["BTC_USD"], backoff=backoff)
    async with running(stream):
        await eventually(lambda: stream.attempts == 1, what="the first attempt failed")
        back = FakeExchange()
        await back.start(port)
        try:
            # The next attempt is ten minutes away; the REST client saying the exchange
            # answers again brings it forward.
            stream.exchange_answers()
            await next_of(stream, Connected, timeout_s=30)
            await eventually(lambda: back.subscriptions)
        finally:
            await back.stop()
