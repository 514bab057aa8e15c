"""Redundant connections: each event once, from whichever connection brought it first; a
connection that drops while another listens loses nothing and needs no resync; every
connection reconnects at once after a drop, and at once when the exchange answers again."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from functools import partial

import pytest

from recorder.exchange.classify import BookUpdate
from recorder.exchange.silence import SilenceWatch
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.records import utc_now
from recorder.retry import Backoff
from tests.exchange.loopback import FakeExchange
from tests.exchange.streams import NEW_ORDER, make_stream, next_item, next_of, running, skip_to
from tests.harness.metrics import sample
from tests.harness.waiting import eventually


def silences() -> dict[tuple[str, str], float]:
    """recorder_stream_silences_total of BTC_USD by (connection, action)."""
    return {
        (connection, action): sample(
            "recorder_stream_silences_total", connection=connection, pair="BTC_USD", action=action
        )
        for connection in "01"
        for action in ("resubscribe", "reconnect")
    }


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


async def test_a_silent_channel_is_resubscribed_then_reconnected(exchange: FakeExchange) -> None:
    stream = make_stream(exchange, ["BTC_USD"], connections=2)
    stream.silence = SilenceWatch(1.0, skew_s=0.0)
    async with running(stream):
        await both_subscribed(exchange, stream)
        deaf = exchange.connected[0]
        await exchange.silence(deaf, "BTC_USD")
        before = silences()

        async def trading() -> None:
            """The market trades: each order reaches the connections still served, and the
            tape shows it (as the trade poller would)."""
            for oid in range(1000, 2000):
                # To the channel's room, which the silent connection has left.
                await exchange.emit("BTC_USD", json.loads(NEW_ORDER.replace("15234", str(oid))))
                stream.tape_advanced("BTC_USD", utc_now())
                await asyncio.sleep(0.05)

        market = asyncio.create_task(trading())
        try:
            # Resubscribed first (the exchange hears a second subscribe from that socket)...
            await eventually(lambda: [s for s, _ in exchange.subscriptions].count(deaf) == 2,
                             what="the silent connection resubscribed")  # fmt: skip
            # ...and as that does not help, reconnected: a new session, no resync needed.
            gone = await skip_to(stream, Disconnected)
            assert gone.session.reason == "silent on BTC_USD"
            assert gone.covered
            back = await skip_to(stream, Connected)
            assert not back.resync
        finally:
            market.cancel()
        counted = {key: n - before[key] for key, n in silences().items() if n != before[key]}
        # Both steps counted, on the silent connection alone.
        assert len({connection for connection, _ in counted}) == 1
        assert sorted(action for _, action in counted) == ["reconnect", "resubscribe"]
        assert set(counted.values()) == {1}


async def test_a_quiet_market_never_looks_silent(exchange: FakeExchange) -> None:
    stream = make_stream(exchange, ["BTC_USD"], connections=2)
    stream.silence = SilenceWatch(0.2, skew_s=0.0)
    async with running(stream):
        await both_subscribed(exchange, stream)
        # No trades: the tape's newest trade is older than the subscriptions.
        stream.tape_advanced("BTC_USD", utc_now() - timedelta(minutes=10))
        before = silences()
        checks = stream.silence.checks
        await eventually(lambda: stream.silence is not None and stream.silence.checks > checks + 20,
                         what="twenty checks, five silence periods")  # fmt: skip
        assert stream.open_connections == 2
        assert stream.items.empty()  # no reconnect: no Disconnected, no Connected
    assert silences() == before


async def test_the_generation_is_detected_once_not_before_every_reconnect(
    exchange: FakeExchange, caplog: pytest.LogCaptureFixture
) -> None:
    detections = partial(count_logged, caplog, "socket.io generation detected")
    with caplog.at_level(logging.INFO, logger="recorder.exchange.sio.dial"):
        async with running(make_stream(exchange, ["BTC_USD"])) as stream:
            await next_of(stream, Connected)
            await eventually(lambda: exchange.subscriptions)
            await exchange.send_raw(order(1))
            await next_of(stream, BookUpdate)
            await exchange.kick_all()  # an ordinary drop, after the server spoke
            await next_of(stream, Disconnected)
            await next_of(stream, Connected)
            assert detections() == 1
            # Dropped before saying anything (as a client of the wrong generation would be):
            # the next attempt asks again.
            await exchange.kick_all()
            await next_of(stream, Disconnected)
            await next_of(stream, Connected)
            assert detections() == 2


def count_logged(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage() == message)
