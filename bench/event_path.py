#!/usr/bin/env python3
"""What the recorder's event path costs per event, beside a bare python-socketio client.

    .venv/bin/python bench/event_path.py [--events 20000] [--repeat 5] [--connections 1]
        [--profile]

In process, no sockets: the simulator's matching engine runs its seeded order flow on two
pairs (new orders, some with fills, and cancels) and each event becomes the Engine.IO text
the simulator's server sends (`42["book_BTC_USD",{...}]`). These texts are fed, one
websocket message each, to python-engineio's own websocket read loop through an in-memory
stand-in for aiohttp's websocket (what aiohttp costs to read a frame is paid alike by both
clients and is not in the figures):

- bare: a plain `socketio.AsyncClient` (python-socketio's packet decoding, `json.loads`
  with floats) whose catch-all handler counts the event;
- recorder: the client of `recorder.exchange.sio.v4.SocketIO4Connection` (exact decoding)
  handing each event to `BookStream.on_event` (arbiter, classification, metrics) and its
  queue, then `BookRecorder.handle` (the event lag metric, each pair's L3 book) up to
  `Writer.put`, where a list takes the records (the writer is measured by
  `bench/writer.py`).

With `--connections 2` the recorder reads every text on two connections (two read loops
side by side into one stream, as the daemon's default `exchange.stream_connections = 2`
receives every event twice); the bare client still reads it once.

Prints the process time per event, best of `--repeat`, of each and their ratio, and checks
the recorder's run: every event and fill handed on once, nothing raw, each rebuilt book equal
to the engine's. `--profile` adds a cProfile of one recorder run (top entries by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from decimal import Decimal
from typing import Any

import aiohttp
import socketio  # type: ignore[import-untyped]
from engineio import async_client as eio_client

from recorder.book import Book, RestingOrder
from recorder.exchange.sio.v4 import SocketIO4Connection
from recorder.exchange.stream import BookStream
from recorder.records import BookEvent, BookFill, Record, StreamSession, utc_now
from recorder.sim import wire
from recorder.sim.engine import Engine, Event
from recorder.sim.flow import OrderFlow, pair_spec, wall_clock
from recorder.sources.book import BookRecorder

PAIRS = ("BTC_USD", "ETH_USD")
BOOK_ORDERS = 200
CONNECTED = '40{"sid":"event-path"}'
"""The server's socket.io CONNECT packet (in an Engine.IO message), before any event."""


class Market:
    """The engine's events as Engine.IO texts, and its books before and after them."""

    def __init__(self, events: int) -> None:
        self.engine = Engine([pair_spec(p) for p in PAIRS], wall_clock(time.time_ns))
        flow = OrderFlow(self.engine, seed=1)
        for pair in PAIRS:
            flow.fill_book(pair, BOOK_ORDERS)
        self.before = {pair: self.resting(pair) for pair in PAIRS}
        self.texts: list[str] = []
        self.kinds = {"new": 0, "cancel": 0, "fills": 0}
        self.engine.subscribe(self._sent)
        for _ in range(events):
            flow.step()
        self.after = {pair: self.resting(pair) for pair in PAIRS}

    def resting(self, pair: str) -> list[RestingOrder]:
        return [
            RestingOrder(o.oid, side, o.price, o.amount)  # type: ignore[arg-type]
            for side in ("buy", "sell")
            for o in self.engine.books[pair].orders(side)  # type: ignore[arg-type]
        ]

    def _sent(self, event: Event) -> None:
        payload = wire.book_payload(event)
        packet = wire.SocketPacket(socketio.packet.EVENT, data=[f"book_{event.pair}", payload])
        self.texts.append("4" + packet.encode())  # an Engine.IO message holding it
        fills = len(payload.get("trades", ()))
        self.kinds["new" if "trades" in payload else "cancel"] += 1
        self.kinds["fills"] += fills


class _Frames:
    """aiohttp's websocket as the read loop uses it: `receive()`, one message per text."""

    def __init__(self, texts: list[str]) -> None:
        self._texts = iter(texts)

    async def receive(self) -> aiohttp.WSMessage:
        text = next(self._texts, None)
        if text is None:
            # the library's tasks still running: they hold no event to wait on
            while eio_client.task_reference_holder:  # noqa: ASYNC110
                await asyncio.sleep(0)
            raise aiohttp.ServerDisconnectedError()
        return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None)

    async def close(self) -> None:
        pass


async def read_all(client: socketio.AsyncClient, texts: list[str]) -> None:
    """Run python-engineio's websocket read loop over `texts`, after the namespace's CONNECT,
    as an Engine.IO client's that has just connected."""
    eio = client.eio
    eio.state = "connected"
    eio.ping_interval, eio.ping_timeout = 25, 20
    eio.queue = asyncio.Queue()
    written = asyncio.get_running_loop().create_future()
    written.set_result(None)
    eio.write_loop_task = written
    client.connected = True
    client._connect_event = asyncio.Event()
    eio.ws = _Frames([CONNECTED, *texts])
    await eio._read_loop_websocket()


class _Sink:
    """Where `Writer.put` would take the records."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)

    def put_many(self, records: Any) -> None:
        self.records.extend(records)


async def bare(market: Market) -> float:
    client = socketio.AsyncClient(
        reconnection=False, logger=False, engineio_logger=False, handle_sigint=False
    )
    count = 0

    async def on_event(event: Any, *args: Any) -> None:
        nonlocal count
        count += 1

    client.on("*", on_event)
    started = time.process_time()
    await read_all(client, market.texts)
    spent = time.process_time() - started
    assert count == len(market.texts), (count, len(market.texts))
    return spent


async def recorder(market: Market, connections: int = 1) -> float:
    stream = BookStream("http://127.0.0.1:1", pairs=PAIRS, connections=connections)
    for link in stream._links:  # as if connected and subscribed
        link.session = StreamSession(link.session_id, utc_now(), None, None)
        link.heard = frozenset(PAIRS)
    sink = _Sink()
    books = BookRecorder(None, stream, sink, snapshot_interval_s=60)  # type: ignore[arg-type]
    for pair in PAIRS:
        pair_book = books.follow(pair)
        pair_book.model = Book(market.before[pair], cancel_reading=pair_book.cancel_reading)
    links = [
        SocketIO4Connection(
            "http://127.0.0.1:1",
            path="/socket.io/",
            timeout_s=10,
            on_open=lambda: None,
            on_event=lambda got, link=link: stream.on_event(link, got),
        )
        for link in stream._links
    ]
    clients = [connection.new_client() for connection in links]
    started = time.process_time()
    consuming = asyncio.create_task(books.consume())
    # Each connection's read loop over the same texts, side by side as two sockets are read.
    await asyncio.gather(*(read_all(client, market.texts) for client in clients))
    books.close()  # what the consumer has not taken yet
    consuming.cancel()
    spent = time.process_time() - started
    for connection in links:
        await connection.close()
    check(market, books, sink.records)
    return spent


def check(market: Market, books: BookRecorder, records: list[Record]) -> None:
    events = [r for r in records if isinstance(r, BookEvent)]
    fills = [r for r in records if isinstance(r, BookFill)]
    assert len(events) == len(market.texts), "every event handed on once"
    assert len(fills) == market.kinds["fills"], "every fill handed on once"
    assert len(records) == len(events) + len(fills), "nothing raw"
    assert all(isinstance(e.price, Decimal) for e in events), "exact"
    for pair in PAIRS:
        model = books.pairs[pair].model
        assert model is not None
        assert not model.differences(Book(market.after[pair])), f"{pair}'s book as the engine's"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="the recorder's stream connections, each reading every event (the bare client: 1)",
    )
    args = parser.parse_args()
    market = Market(args.events)
    print(
        f"{len(market.texts):,} events on {', '.join(PAIRS)}: {market.kinds['new']:,} new "
        f"orders with {market.kinds['fills']:,} fills, {market.kinds['cancel']:,} cancels; "
        f"best of {args.repeat}, process time per event"
    )
    best = {"bare": float("inf"), "recorder": float("inf")}
    for _ in range(args.repeat):  # alternating, so that a change in load weighs on both
        best["bare"] = min(best["bare"], await bare(market))
        best["recorder"] = min(best["recorder"], await recorder(market, args.connections))
    per_event = {name: spent / len(market.texts) * 1e6 for name, spent in best.items()}
    print(f"bare python-socketio client  {per_event['bare']:7.1f} us/event")
    print(
        f"recorder, up to Writer.put   {per_event['recorder']:7.1f} us/event"
        f" ({args.connections} connection(s))"
    )
    print(f"recorder / bare              {per_event['recorder'] / per_event['bare']:7.2f}x")
    print("checked: every event and fill handed on once, none raw, books equal to the engine's")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await recorder(market, args.connections)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
