#!/usr/bin/env python3
"""What the stream's event path costs per event with one connection and with two.

    .venv/bin/python bench/stream_copies.py [--events 20000] [--repeat 5]

Feeds the same decoded socket.io events (a new order with one fill each) to
`BookStream.on_event` as each connection would receive them, in process (no sockets, no
writer): with one connection every event is classified and kept; with two, each event comes
twice, the first copy is classified and kept and the second dropped (`recorder.exchange.
arbiter`). Prints the process time per event, best of `--repeat`, for each. The socket side
(websocket frames, socket.io packets, JSON decoding) is not in this figure: `bench/ingest.py`
measures the whole recorder.
"""

from __future__ import annotations

import argparse
import time

from recorder.exchange.parse import load_json
from recorder.exchange.sio.packets import Received
from recorder.exchange.stream import BookStream
from recorder.records import StreamSession, utc_now

NEW_ORDER = (
    '{"success": true, "date": 1485686507.09446, "oid": %d, "type": "sell", "price": 935.23,'
    ' "amount": 1e-08, "trades": [{"tid": %d, "type": "buy", "price": "936.00",'
    ' "amount": "0.1", "o_id": 15201}]}'
)


def events(count: int) -> list[Received]:
    """The events as the packet layer hands them to the stream."""
    received = []
    for oid in range(count):
        text = '["book_BTC_USD",' + NEW_ORDER % (oid, oid) + "]"
        data = load_json(text)
        received.append(Received(data[0], data[1:], text))
    return received


def per_event_us(connections: int, received: list[Received], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        stream = BookStream("http://127.0.0.1:1", pairs=["BTC_USD"], connections=connections)
        links = stream._links  # as if every connection were up and subscribed
        for link in links:
            link.session = StreamSession(link.session_id, utc_now(), None, None)
            link.heard = frozenset(["BTC_USD"])
        started = time.process_time()
        for got in received:
            for link in links:
                stream.on_event(link, got)
        best = min(best, time.process_time() - started)
        assert stream.items.qsize() == len(received), "every event kept once"
    return best / len(received) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    received = events(args.events)
    one = per_event_us(1, received, args.repeat)
    two = per_event_us(2, received, args.repeat)
    print(f"{args.events:,} events, best of {args.repeat}, process time per event:")
    print(f"  1 connection:  {one:6.1f} us")
    print(f"  2 connections: {two:6.1f} us  ({two / one:.2f}x; the second copy {two - one:.1f} us)")


if __name__ == "__main__":
    main()
