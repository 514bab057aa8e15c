"""Running the book stream in a test, and checking one of its events exactly.

The stream tests against the loopback server (test_stream.py), against real Node socket.io
servers (test_stream_node.py) and against a scripted Engine.IO v3 server
(test_stream_v2_wire.py) drive the stream the same way: `running(stream)`, then the items it
produces, each compared with the payload that was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

from recorder.config import ExchangeConfig
from recorder.exchange.classify import BookUpdate
from recorder.exchange.stream import BookStream, StreamItem
from recorder.retry import Backoff
from tests.exchange.loopback import FakeExchange

T = TypeVar("T")
QUICK = Backoff(initial_s=0.05, max_s=0.2)
"""Reconnect quickly: a test is seconds long."""

NEW_ORDER = (
    '{"success": true, "date": 1485686507.09446, "oid": 15234, "type": "sell",'
    ' "price": 935.23, "amount": 1e-08, "trades": [{"tid": 14876, "type": "buy",'
    ' "price": "936.00", "amount": "0.1", "o_id": 15201}]}'
)


def make_stream(exchange: FakeExchange, pairs: list[str], *, connections: int = 1) -> BookStream:
    """A stream to the loopback exchange that reconnects quickly (one connection unless
    the test is about redundancy)."""
    return BookStream.from_config(
        ExchangeConfig(socket_url=exchange.url), pairs, backoff=QUICK, connections=connections
    )


@contextlib.asynccontextmanager
async def running(stream: BookStream) -> AsyncIterator[BookStream]:
    task = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_item(stream: BookStream, timeout_s: float = 10.0) -> StreamItem:
    async with asyncio.timeout(timeout_s):
        return await stream.items.get()


async def next_of(stream: BookStream, kind: type[T], timeout_s: float = 10.0) -> T:
    """The next item of `kind`; anything else before it fails the test."""
    item = await next_item(stream, timeout_s)
    assert isinstance(item, kind), f"expected {kind.__name__}, got {item!r}"
    return item


# Exact comparison: the payload as the test wrote it, read with the standard library (not
# with the recorder's parser), against what the stream produced.


def sent(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return value


def decimal_of(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def timestamp_of(value: Any) -> datetime:
    micros = (decimal_of(value) * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))


def assert_exact(stored: Decimal, written: Any) -> None:
    assert stored == decimal_of(written)
    if isinstance(written, str):  # a number sent as a string keeps its digits: "936.00"
        assert stored.as_tuple() == Decimal(written).as_tuple()


def assert_same_event(update: BookUpdate, text: str, pair: str) -> None:
    payload = sent(text)
    event = update.event
    assert (event.pair, event.oid, event.type) == (pair, payload["oid"], payload["type"])
    assert event.kind == ("cancel" if payload.get("cancelled") else "new")
    assert event.cancel_order_id == payload.get("cancel_order_id")
    assert event.ts == timestamp_of(payload["date"])
    assert_exact(event.price, payload["price"])
    assert_exact(event.amount, payload["amount"])
    trades = payload.get("trades", [])
    assert len(update.fills) == len(trades)
    for fill, trade in zip(update.fills, trades, strict=True):
        assert (fill.tid, fill.o_id, fill.oid, fill.type) == (
            trade["tid"],
            trade["o_id"],
            payload["oid"],
            trade["type"],
        )
        assert_exact(fill.price, trade["price"])
        assert_exact(fill.amount, trade["amount"])


async def skip_to(stream: BookStream, kind: type[T], timeout_s: float = 5.0) -> T:
    """The next item of `kind`, passing over any other before it."""
    async with asyncio.timeout(timeout_s):
        while True:
            item = await stream.items.get()
            if isinstance(item, kind):
                return item
