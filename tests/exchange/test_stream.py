"""The socket.io stream against a real python-socketio server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY

from recorder.config import ExchangeConfig
from recorder.exchange.classify import BookUpdate
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.records import RawMessage
from recorder.retry import Backoff
from tests.exchange.loopback import FakeExchange

T = TypeVar("T")
QUICK = Backoff(initial_s=0.05, max_s=0.2)

NEW_ORDER = (
    '{"success": true, "date": 1485686507.0944622, "oid": 15234, "type": "sell",'
    ' "price": 935.23, "amount": 1e-08, "trades": [{"tid": 14876, "type": "buy",'
    ' "price": "936.00", "amount": "0.1", "o_id": 15201}]}'
)
CANCEL = {
    "success": True,
    "date": 1485686413.5688234,
    "oid": 15235,
    "cancel_order_id": 4535,
    "price": 935.23,
    "type": "sell",
    "amount": 0.0123,
    "pair": "ETH_USD",
    "cancelled": True,
}


async def next_of(stream: BookStream, kind: type[T], timeout_s: float = 5.0) -> T:
    async with asyncio.timeout(timeout_s):
        while True:
            item = await stream.items.get()
            if isinstance(item, kind):
                return item


async def until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until the fake server has seen something; it has no event to wait on."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling the server's plain lists
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(stream: BookStream) -> AsyncIterator[BookStream]:
    task = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_stream(exchange: FakeExchange, pairs: list[str]) -> BookStream:
    config = ExchangeConfig(socket_url=exchange.url)
    return BookStream.from_config(config, pairs, backoff=QUICK)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_subscribes_receives_and_classifies(exchange: FakeExchange) -> None:
    async with running(make_stream(exchange, ["BTC_USD", "ETH_USD"])) as stream:
        connected = await next_of(stream, Connected)
        await until(lambda: len(exchange.subscriptions) == 2)
        assert sorted(c for _, c in exchange.subscriptions) == ["book_BTC_USD", "book_ETH_USD"]
        before = metric("recorder_socket_events_total", pair="BTC_USD", kind="new")

        await exchange.send_raw('2["book_BTC_USD",' + NEW_ORDER + "]")
        update = await next_of(stream, BookUpdate)
        assert update.event.kind == "new"
        assert update.event.price == Decimal("935.23")
        assert str(update.event.amount) == "1E-8"  # exact: a float would not say so
        assert update.event.session_id == connected.session.session_id
        assert [(f.tid, str(f.price)) for f in update.fills] == [(14876, "936.00")]

        await exchange.emit("ETH_USD", CANCEL)
        cancel = await next_of(stream, BookUpdate)
        assert (cancel.event.kind, cancel.event.pair, cancel.event.cancel_order_id) == (
            "cancel",
            "ETH_USD",
            4535,
        )
        assert metric("recorder_socket_events_total", pair="BTC_USD", kind="new") == before + 1
        assert metric("recorder_socket_connected") == 1


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        ('2["book_BTC_USD",{"oid": 1, "price": 9', "undecodable packet: not valid JSON"),
        ('2["book_BTC_USD",{"oid": 1, "price": NaN}]', "non-finite number NaN"),
        ('2["book_BTC_USD",{"oid": ' + "9" * 400 + "}]", "too large"),
        ('2["ticker",{"price": 1}]', "unknown event 'ticker'"),
        ('2["book_BTC_USD",{"oid": "x"}]', "oid: not an integer"),
        ('2["book_BTC_USD",' + NEW_ORDER.replace('"oid": 15234, ', "") + "]", "oid: missing"),
        ('2["book_BTC_USD"]', "expected one payload object, got 0 arguments"),
        ("2[{}]", "unknown event"),
        ("2[]", "unknown event"),
        ('2"just text"', "unknown event"),
    ],
)
async def test_bad_payloads_become_raw_messages_and_the_stream_goes_on(
    exchange: FakeExchange, packet: str, reason: str
) -> None:
    async with running(make_stream(exchange, ["BTC_USD"])) as stream:
        await next_of(stream, Connected)
        await until(lambda: exchange.subscriptions)
        before = metric("recorder_malformed_messages_total", source="socket")
        await exchange.send_raw(packet)
        raw = await next_of(stream, RawMessage)
        assert reason in raw.error
        assert raw.source == "socket"
        assert raw.payload == packet[1:]  # the packet's JSON text, verbatim
        assert metric("recorder_malformed_messages_total", source="socket") == before + 1
        await exchange.send_raw('2["book_BTC_USD",' + NEW_ORDER + "]")
        assert (await next_of(stream, BookUpdate)).event.oid == 15234


async def test_server_disconnect_reconnects_and_resubscribes(exchange: FakeExchange) -> None:
    before = metric("recorder_socket_reconnects_total")
    async with running(make_stream(exchange, ["BTC_USD"])) as stream:
        first = await next_of(stream, Connected)
        await until(lambda: len(exchange.subscriptions) == 1)
        await exchange.kick_all()
        gone = await next_of(stream, Disconnected)
        assert gone.session.session_id == first.session.session_id
        assert gone.session.disconnected_at is not None
        assert gone.session.reason
        second = await next_of(stream, Connected)
        assert second.session.session_id != first.session.session_id
        await until(lambda: len(exchange.subscriptions) == 2)
        assert exchange.subscriptions[0][0] != exchange.subscriptions[1][0]  # a new socket
        await exchange.send_raw('2["book_BTC_USD",' + NEW_ORDER + "]")
        update = await next_of(stream, BookUpdate)
        assert update.event.session_id == second.session.session_id
    assert metric("recorder_socket_reconnects_total") == before + 1
    assert metric("recorder_socket_connected") == 0


async def test_pairs_added_while_connected_are_subscribed(exchange: FakeExchange) -> None:
    async with running(make_stream(exchange, ["BTC_USD"])) as stream:
        await next_of(stream, Connected)
        await until(lambda: len(exchange.subscriptions) == 1)
        await stream.add_pairs(["BTC_USD", "LTC_USD"])
        await until(lambda: len(exchange.subscriptions) == 2)
        assert exchange.subscriptions[-1][1] == "book_LTC_USD"
        assert stream.pairs == {"BTC_USD", "LTC_USD"}


async def test_keeps_trying_until_the_server_comes(exchange: FakeExchange) -> None:
    port = int(exchange.url.rsplit(":", 1)[1])
    await exchange.stop()
    stream = make_stream(exchange, ["BTC_USD"])
    async with running(stream):
        await asyncio.sleep(0.5)  # several attempts fail meanwhile
        assert not stream.connected
        late = FakeExchange()
        await late.start(port)
        try:
            await next_of(stream, Connected)
            await until(lambda: late.subscriptions)
        finally:
            await late.stop()


async def test_events_keep_their_order(exchange: FakeExchange) -> None:
    async with running(make_stream(exchange, ["BTC_USD"])) as stream:
        await next_of(stream, Connected)
        await until(lambda: exchange.subscriptions)
        for oid in range(100):
            await exchange.send_raw(
                '2["book_BTC_USD",' + NEW_ORDER.replace("15234", str(oid)) + "]"
            )
        oids = [(await next_of(stream, BookUpdate)).event.oid for _ in range(100)]
        assert oids == list(range(100))


async def test_stopping_ends_the_session(exchange: FakeExchange) -> None:
    stream = make_stream(exchange, ["BTC_USD"])
    async with running(stream):
        up = await next_of(stream, Connected)
        assert stream.connected
    down = await next_of(stream, Disconnected)
    assert (down.session.session_id, down.session.reason) == (up.session.session_id, "stopped")
    assert not stream.connected
    assert stream.items.empty()
