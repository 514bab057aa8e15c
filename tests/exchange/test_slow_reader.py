"""A connection whose reader falls behind its socket stays up as long as the server keeps it.

When the recorder is busy (a burst of events, two connections on one core), what the
exchange sends waits in the socket buffers, the server's heartbeat packets included, behind
everything sent before them. The server tolerates that up to its pingTimeout; the client
must not give up earlier on its own. Here a real Node socket.io server sends a burst that
the client's event callback, slowed down on purpose for a set time after connecting, cannot
keep up with; the heartbeat packets sent meanwhile wait behind the burst. The slow spell is
set in time, not in events, so that a loaded machine reads the heartbeat no later:

- socket.io 4 (Engine.IO v4, python-engineio underneath): the server's ping, sent at 10 s,
  is read after about 16.5 s. python-engineio's client left alone gives up on a connection
  that queued nothing to send for max(pingInterval, pingTimeout) + 5 s, 15 s here; the
  server waits pingTimeout (10 s) after its ping for the pong, until 20 s.
- socket.io 2 (Engine.IO v3, our own client): the client pings every second and the pong
  is read about 5 s late, behind the burst, where it waits pingTimeout (3 s) for it. The
  server closes a client that sent no ping for pingInterval + pingTimeout (4 s), so the
  client's pings must go out on time while it reads.

Each test checks that every event was received, in order, on the one connection, and that the
server still has it and counted its heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from recorder.exchange.sio.connection import Connection
from recorder.exchange.sio.packets import Received
from recorder.exchange.sio.v2 import SocketIO2Connection
from recorder.exchange.sio.v4 import SocketIO4Connection
from tests.harness.waiting import eventually
from tests.node.harness import node_socketio_server

CHANNEL = "book_BTC_USD"
WORK_S = 0.002
"""What the slowed-down callback spends on each event during its slow spell (busy, as a
recorder on a full core)."""


@dataclass(frozen=True)
class Case:
    generation: str
    heartbeat: dict[str, int]
    slow_for_s: float
    """How long after connecting the callback stays slow; the burst outlasts it."""
    events: int


CASES = [
    pytest.param(
        Case("4", {"pingInterval": 10_000, "pingTimeout": 10_000}, 16.5, 9_000), id="sio4"
    ),
    pytest.param(Case("2", {"pingInterval": 1_000, "pingTimeout": 3_000}, 5.0, 3_000), id="sio2"),
]


def payload(n: int) -> str:
    return (
        f'{{"success": true, "date": 1485686413.{n:05d}, "oid": {100_000 + n},'
        f' "type": "sell", "price": "935.{n % 1000:03d}", "amount": "0.0123", "trades": []}}'
    )


@pytest.mark.parametrize("case", CASES)
async def test_a_reader_behind_its_socket_keeps_its_connection(case: Case) -> None:
    received: list[Received] = []
    slow_until = float("inf")

    def slow_on_event(got: Received) -> None:
        received.append(got)
        if time.perf_counter() < slow_until:
            done_at = time.perf_counter() + WORK_S
            while time.perf_counter() < done_at:
                pass

    async with node_socketio_server(case.generation, **case.heartbeat) as server:
        kind = SocketIO4Connection if case.generation == "4" else SocketIO2Connection
        connection: Connection = kind(
            server.url,
            path="/socket.io",
            timeout_s=5,
            on_open=lambda: None,
            on_event=slow_on_event,
        )
        await connection.connect()
        slow_until = time.perf_counter() + case.slow_for_s
        try:
            await connection.emit("subscribe", CHANNEL)
            await eventually(server.subscribed, what="subscribed")
            sent = [payload(n) for n in range(case.events)]
            assert await server.emit(CHANNEL, CHANNEL, sent) == 1
            assert len(sent) * WORK_S > case.slow_for_s, "the burst outlasts the slow spell"

            await eventually(
                lambda: len(received) == len(sent) or connection.closed.done(),
                timeout_s=60,
                what="the burst read, or the connection closed",
            )
            assert not connection.closed.done(), (
                f"closed after {len(received)} of {len(sent)} events: {connection.closed.result()}"
            )
            assert [int(r.args[0]["oid"]) for r in received] == [
                100_000 + n for n in range(case.events)
            ]

            async def heartbeats() -> int:
                state = await server.state()
                assert state["connections"] == 1
                assert len(state["sockets"]) == 1, "the server dropped the connection"
                return int(state["sockets"][0]["heartbeats"])

            # The heartbeat that waited behind the burst, counted by the server when it came.
            await eventually(lambda: _at_least(heartbeats, 1), what="a heartbeat counted")
            assert not connection.closed.done()
        finally:
            await connection.close()


async def _at_least(count: Callable[[], Awaitable[int]], minimum: int) -> bool:
    return await count() >= minimum
