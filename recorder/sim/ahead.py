"""Book events made ahead: the order flow run many steps at once, each event's socket.io
packet handed out as text instead of emitted, for a faster server to send.

The simulator's own socket side (python-socketio, one process) tops out below what a bare
socket.io client can take (docs/benchmarks.md, "Simulator"), so a benchmark that sends
through it measures the simulator. `Simulator.make_ahead` keeps everything else the
simulator's: the engine makes the events, so its book, its trade tape on `/exchanges/`
and `/admin/book/<pair>` are the truth a recording is checked against; only the sending is
left to another server (bench/node_source.js, a Node socket.io 4 server), which gets the
packets in the engine's order.

Each packet is the exact text python-socketio would have sent for the emission
(`packet_text`): event name and payload written by `wire.dumps`, so every number keeps its
digits. A server that parsed the payload (Node's JSON.parse makes doubles of numbers) would
change them; it sends the text as it is.

`Schedule` dates the events made ahead at a steady rate from a start time, so that a server
sending each event when its date comes sends them at that rate, and an event's date is when
it was sent (what event-to-receipt and event-to-commit latencies are measured from).
Without a schedule an event is dated when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from recorder.sim import wire

MICROSECOND = Decimal("0.000001")


@dataclass(frozen=True)
class Schedule:
    """Event `i` (from 0) of a batch made ahead is dated `start_s + i / rate_per_s`."""

    start_s: float
    """Unix seconds of the first event's date."""
    rate_per_s: float

    def __post_init__(self) -> None:
        if not self.start_s > 0 or not self.rate_per_s > 0:
            raise ValueError(f"a schedule needs start_s and rate_per_s > 0, not {self}")
        if self.rate_per_s > 1_000_000:
            # Dates have microseconds: faster, two events would share one.
            raise ValueError(f"rate_per_s: at most 1,000,000, not {self.rate_per_s}")

    def date(self, index: int) -> Decimal:
        start_us = round(self.start_s * 1_000_000)
        return Decimal(start_us + int(index * 1_000_000 / self.rate_per_s)) * MICROSECOND


def packet_text(name: str, data: Any) -> str:
    """The socket.io EVENT packet (namespace "/", no ack) python-socketio sends for
    `emit(name, data)`: `2["name",data]`; a tuple of data is that many arguments."""
    arguments = list(data) if isinstance(data, tuple) else [data]
    return "2" + wire.dumps([name, *arguments])


def ahead_line(room: str, packet: str) -> str:
    """One event as `/admin/ahead` hands it out: the room it goes to, a space, the packet.
    Room names hold no space and `wire.dumps` writes no raw newline (strings are escaped)."""
    return f"{room} {packet}\n"
