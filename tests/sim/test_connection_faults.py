"""Faults of one connection among several: a drop, and a channel silenced on one connection.

A recorder with redundant connections must be tested against faults that hit one of them
and spare the others, and the delivery record must stay exact for each connection: each
test compares what every real client received, item by item, with what the record says it
was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio

from recorder.sim.deliveries import Connection, Garbage
from recorder.sim.server import Simulator, run_sim
from tests.harness.deliveries import event_key
from tests.harness.waiting import eventually
from tests.sim.conftest import FAST, socket_client

CHANNELS = ("book_BTC_USD", "book_ETH_BTC")


@dataclass
class Listener:
    """A real socket.io client subscribed to both channels, keeping what it received."""

    client: socketio.AsyncClient
    sid: str = ""
    received: list[tuple[str, Any]] = field(default_factory=list)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def channels_received(self, start: int = 0) -> set[str]:
        return {channel for channel, _ in self.received[start:] if channel != "garbage"}


async def listen(sim: Simulator) -> Listener:
    listener = Listener(socket_client())
    client = listener.client

    @client.on("*")  # type: ignore[misc]
    async def on_any(event: str, payload: Any = None, *_: Any) -> None:
        oid = payload.get("oid") if isinstance(payload, dict) else None
        kind = "cancel" if isinstance(payload, dict) and payload.get("cancelled") else "new"
        listener.received.append((event, (oid, kind)) if isinstance(oid, int) else ("garbage", 0))

    client.on("disconnect", lambda *_: listener.dropped.set())
    await client.connect(sim.base_url, transports=["websocket"])
    for channel in CHANNELS:
        assert (await client.call("subscribe", channel))["success"]
    listener.sid = client.get_sid()
    return listener


def record_of(connection: Connection) -> list[tuple[str, Any]]:
    """What the simulator's record says the connection was sent, as `Listener` notes it."""
    return [
        ("garbage", 0) if isinstance(item, Garbage) else (f"book_{item.pair}", event_key(item)[1:])
        for item in connection.items
    ]


async def assert_each_received_its_record(sim: Simulator, listeners: list[Listener]) -> None:
    """Stop the flow, let every client catch up, and compare each with its record exactly."""
    assert sim.deliveries is not None
    sim.pause()
    await sim.drained()
    for listener in listeners:
        connection = sim.deliveries.connections[listener.sid]
        await eventually(lambda c=connection, x=listener: len(x.received) >= len(c.items),
                         what=f"everything sent to {listener.sid} received")  # fmt: skip
        assert listener.received == record_of(connection), listener.sid


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(FAST, rate_per_s=300, history_hours=0) as running:
        yield running


async def test_drop_socket_drops_the_one_client_and_the_others_go_on(sim: Simulator) -> None:
    assert sim.deliveries is not None
    listeners = [await listen(sim) for _ in range(3)]
    assert sim.open_sockets() == [x.sid for x in listeners]
    first, *others = listeners
    assert sim.oldest_socket() == first.sid
    await eventually(lambda: len(first.received) > 30, what="events before the drop")
    gaps = len(sim.deliveries.gaps)  # from the start until the first subscribed

    assert await sim.drop_socket(sim.oldest_socket())
    await asyncio.wait_for(first.dropped.wait(), 5)
    assert not any(x.dropped.is_set() for x in others)
    assert sim.open_sockets() == [x.sid for x in others]
    assert sim.oldest_socket() == others[0].sid
    assert not await sim.drop_socket(first.sid)  # gone already
    assert not await sim.drop_socket("no-such-sid")
    after = {x.sid: len(x.received) for x in others}
    await eventually(lambda: all(len(x.received) > after[x.sid] + 30 for x in others),
                     what="the others receiving on")  # fmt: skip
    await sim.burst(malformed=2, unknown=1)

    await assert_each_received_its_record(sim, listeners)
    dropped = sim.deliveries.connections[first.sid]
    assert dropped.disconnected_at is not None
    assert [c.disconnected_at for c in sim.deliveries.open()] == [None, None]
    assert dropped.garbage == 0  # the burst came after the drop
    assert all(sim.deliveries.connections[x.sid].garbage == 2 * 2 + 1 for x in others)
    assert len(sim.deliveries.gaps) == gaps  # the others were sent every event meanwhile
    for listener in others:
        await listener.client.disconnect()


async def test_events_no_client_was_sent_are_the_gaps(sim: Simulator) -> None:
    """Every event emitted while no client was subscribed to its channel is in one gap,
    which ends at the first event sent to a client again."""
    assert sim.deliveries is not None
    deliveries = sim.deliveries
    first = await listen(sim)
    await eventually(lambda: len(first.received) > 30, what="events")
    emitted = sim.emitted_count
    assert await sim.drop_socket(first.sid)
    await eventually(lambda: sim.emitted_count > emitted + 60, what="events after the drop")
    second = await listen(sim)
    await eventually(lambda: len(second.received) > 30, what="events to a new client")
    sim.pause()
    await sim.drained()

    # Every event emitted went to one of the two clients or into exactly one gap.
    sent = [deliveries.connections[x.sid].events for x in (first, second)]
    gaps = deliveries.gaps
    assert sum(map(len, sent)) + sum(g.events for g in gaps) == sim.emitted_count
    assert sum(g.events for g in gaps) == len(deliveries.undelivered)
    # After the drop: one gap until the new client subscribed (two, perhaps: a channel may
    # be sent between its two subscribes).
    dropped_at = deliveries.connections[first.sid].disconnected_at
    assert dropped_at is not None
    after_drop = [g for g in gaps if g.started_at >= dropped_at]
    assert 1 <= len(after_drop) <= 2
    assert after_drop[0].events > 60
    assert after_drop[-1].ended_at <= deliveries.connections[second.sid].subscriptions[-1][0]
    await second.client.disconnect()


async def test_oldest_socket_is_none_without_a_client(sim: Simulator) -> None:
    assert sim.oldest_socket() is None
    assert not await sim.drop_socket(sim.oldest_socket())


@pytest.mark.parametrize("ignore_resubscribe", [False, True])
async def test_a_silenced_channel_stops_to_that_client_alone(
    sim: Simulator, ignore_resubscribe: bool
) -> None:
    """The client is not told; a new subscribe ends the silence, unless it is ignored, and
    then only a new connection hears the channel again."""
    assert sim.deliveries is not None
    deaf, other = await listen(sim), await listen(sim)
    await eventually(lambda: deaf.channels_received() == set(CHANNELS), what="both channels")

    await sim.silence(deaf.sid, "BTC_USD", ignore_resubscribe=ignore_resubscribe)
    silenced_at = len(sim.deliveries.connections[deaf.sid].items)
    heard_at = len(other.received)
    await eventually(lambda: other.channels_received(heard_at) == set(CHANNELS),
                     what="the other client hearing both channels on")  # fmt: skip
    await eventually(lambda: len(deaf.received) > silenced_at + 30, what="ETH_BTC events")
    assert not deaf.dropped.is_set()
    assert deaf.channels_received(silenced_at) == {"book_ETH_BTC"}
    connection = sim.deliveries.connections[deaf.sid]
    assert [channel for _, channel in connection.silenced] == ["book_BTC_USD"]

    # The client resubscribes (as a watchdog would): acknowledged either way.
    assert (await deaf.client.call("subscribe", "book_BTC_USD"))["success"]
    resubscribed_at = len(connection.items)
    await eventually(lambda: len(deaf.received) > resubscribed_at + 60, what="events after")
    heard = deaf.channels_received(resubscribed_at)
    assert heard == ({"book_ETH_BTC"} if ignore_resubscribe else set(CHANNELS))
    assert [channel for _, channel in connection.subscriptions] == [*CHANNELS, "book_BTC_USD"]
    if ignore_resubscribe:
        fresh = await listen(sim)  # a new connection is not deaf
        await eventually(lambda: "book_BTC_USD" in fresh.channels_received(),
                         what="a new connection hearing the silenced pair")  # fmt: skip
        listeners = [deaf, other, fresh]
    else:
        listeners = [deaf, other]

    await assert_each_received_its_record(sim, listeners)
    for listener in listeners:
        await listener.client.disconnect()


async def test_silencing_a_client_that_is_gone_is_an_error(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="no connected client"):
        await sim.silence("no-such-sid", "BTC_USD")
