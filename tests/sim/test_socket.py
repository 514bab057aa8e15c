"""socket.io over a real socket: subscribe, the docs' payloads, and a complete stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from recorder.book import READINGS, Book, Reading
from recorder.sim import wire
from recorder.sim.deliveries import Garbage
from recorder.sim.engine import STATUS_CANCELLED, Cancel
from recorder.sim.server import Simulator, run_sim
from tests.harness.waiting import eventually
from tests.sim.conftest import FAST, delivered, get_json, shape, socket_client
from tests.sim.payloads import records, snapshot

NEW = """{"success": true, "date": 1485686507.0944622, "oid": 15234, "type": "sell",
  "price": 935.23, "amount": 0.0, "trades": [{"tid": 14876, "type": "buy", "price": "936.00",
  "amount": "0.1", "o_id": 15201}]}"""
CANCEL = """{"success": true, "date": 1485686413.5688234, "oid": 15235, "cancel_order_id": 4535,
  "price": 935.23, "type": "sell", "amount": 0.0123, "pair": "BTC_USD", "cancelled": true}"""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(FAST, rate_per_s=300) as running:
        yield running


async def test_subscribed_channel_gets_new_orders_and_cancels_in_the_docs_shape(
    sim: Simulator,
) -> None:
    client = socket_client()
    btc: list[Any] = []
    eth: list[Any] = []
    client.on("book_BTC_USD", btc.append)
    client.on("book_ETH_BTC", eth.append)
    await client.connect(sim.base_url, transports=["websocket"])
    ack = await client.call("subscribe", "book_BTC_USD")
    assert ack == {"success": True, "channel": "book_BTC_USD"}

    def seen_all_kinds() -> bool:
        return any("cancelled" in e for e in btc) and any(
            e.get("trades") and "cancelled" not in e for e in btc
        )

    await eventually(seen_all_kinds, timeout_s=15)
    assert eth == []  # not subscribed
    new = next(e for e in btc if e.get("trades"))
    cancel = next(e for e in btc if "cancelled" in e)
    as_json = json.loads(json.dumps(new, default=str))
    assert shape(json.loads(json.dumps(new, default=float))) == shape(json.loads(NEW))
    # trade prices and amounts are strings, as in the docs
    assert isinstance(as_json["trades"][0]["price"], str)
    assert shape(json.loads(json.dumps(cancel, default=float))) == shape(json.loads(CANCEL))
    assert cancel["pair"] == "BTC_USD"

    await client.call("unsubscribe", "book_BTC_USD")
    count = len(btc)
    sent = sim.emitted_count
    # Once the simulator has sent 30 more events, none of them may have reached the client.
    await eventually(lambda: sim.emitted_count >= sent + 30, what="30 more events sent")
    await client.call("unsubscribe", "book_BTC_USD")  # a round trip: anything sent, arrived
    assert len(btc) == count
    await client.disconnect()


@pytest.mark.parametrize("cancel_id", READINGS)
async def test_the_cancel_id_setting_says_which_field_names_the_cancelled_order(
    cancel_id: Reading,
) -> None:
    async with run_sim(FAST, rate_per_s=300, cancel_id=cancel_id) as sim:
        client = socket_client()
        cancels: list[Any] = []
        client.on("book_BTC_USD", lambda e: cancels.append(e) if "cancelled" in e else None)
        await client.connect(sim.base_url, transports=["websocket"])
        await client.call("subscribe", "book_BTC_USD")
        await eventually(lambda: len(cancels) >= 20, timeout_s=15)
        await client.disconnect()
    other = "oid" if cancel_id == "cancel_order_id" else "cancel_order_id"
    for cancel in cancels:
        order = sim.engine.orders[cancel[cancel_id]]
        assert order.status == STATUS_CANCELLED
        assert (order.pair, order.side, order.price, order.amount) == (
            "BTC_USD",
            cancel["type"],
            cancel["price"],
            cancel["amount"],
        )
    # the other field is each cancel's own id: increasing, and in the range of order ids
    own_ids = [cancel[other] for cancel in cancels]
    assert own_ids == sorted(set(own_ids))
    assert any(i in sim.engine.orders for i in own_ids)


async def test_unknown_channel_is_refused(sim: Simulator) -> None:
    client = socket_client()
    await client.connect(sim.base_url, transports=["websocket"])
    ack = await client.call("subscribe", "book_NOPE_USD")
    assert ack["success"] is False
    await client.disconnect()


@pytest.mark.parametrize("cancel_id", READINGS)
async def test_snapshot_plus_socket_events_equals_the_later_snapshot(
    http: aiohttp.ClientSession, cancel_id: Reading
) -> None:
    """Over real sockets: the ungrouped REST book, then every event, gives the next REST book."""
    async with run_sim(FAST, rate_per_s=300, cancel_id=cancel_id) as sim:
        book = await snapshot_plus_socket_events(sim, http)
    assert book.cancel_reading.established == cancel_id


async def snapshot_plus_socket_events(sim: Simulator, http: aiohttp.ClientSession) -> Book:
    """The REST book, then the socket's events applied to it, equal to the next REST book."""
    client = socket_client()
    events: list[dict[str, Any]] = []
    client.on("book_BTC_USD", events.append)
    await client.connect(sim.base_url, transports=["websocket"])
    await client.call("subscribe", "book_BTC_USD")
    url = sim.base_url + "/api/v1/orderbook/BTC_USD/"

    async def quiet_snapshot() -> tuple[Book, int]:
        # Pause the flow and let the socket catch up, so that the snapshot and the stream
        # meet at a known event.
        async with http.post(sim.base_url + "/admin/pause") as response:
            assert response.status == 200
        await sim.drained()
        _, state = await get_json(http, sim.base_url + "/admin/state")
        await eventually(lambda: state["emitted_count"] == sim.emitted_count)
        await eventually(lambda: len(events) == delivered(sim), what="every event received")
        _, body = await get_json(http, url)
        return Book.from_snapshot(snapshot(body)), len(events)

    book, start = await quiet_snapshot()
    async with http.post(sim.base_url + "/admin/resume") as response:
        assert response.status == 200
    await eventually(lambda: len(events) > start + 150, timeout_s=15)
    later, end = await quiet_snapshot()
    anomalies = []
    for payload in events[start:end]:
        event, fills = records("BTC_USD", payload)
        anomalies.extend(book.apply(event, fills))
    assert anomalies == []
    assert book.differences(later) == []
    assert any(p.get("trades") for p in events[start:end])
    assert all(isinstance(p["price"], Decimal) for p in events)
    await client.disconnect()
    return book


# --- the event name book payloads go out under (`--event-name`) -------------------------------

EXPECTED_SHAPES = {
    # mode: (event name, arguments) for a payload of BTC_USD
    "channel": lambda payload: ("book_BTC_USD", [payload]),
    "pair": lambda payload: ("BTC_USD", [payload]),
    "orderbook": lambda payload: ("orderbook", ["book_BTC_USD", payload]),
}


@pytest.mark.parametrize("mode", list(EXPECTED_SHAPES))
async def test_book_events_go_out_under_the_chosen_event_name(mode: str) -> None:
    """Each connection gets, in order and exactly, what `deliveries` says it was sent, under
    the event name and argument shape of the mode; garbage bursts too."""
    settings = replace(FAST, rate_per_s=200, event_name=mode, record_deliveries=True)
    async with run_sim(settings) as sim:
        assert sim.deliveries is not None
        client = socket_client()
        received: list[tuple[str, list[Any]]] = []

        @client.on("*")  # type: ignore[misc]
        async def on_any(event: str, *args: Any) -> None:
            received.append((event, list(args)))

        await client.connect(sim.base_url, transports=["websocket"])
        await client.call("subscribe", "book_BTC_USD")  # not ETH_BTC: never sent to us
        await eventually(lambda: len(received) >= 60, timeout_s=15)
        await sim.burst(malformed=2, unknown=0)
        sim.pause()
        await sim.drained()
        (connection,) = sim.deliveries.connections.values()
        await eventually(lambda: len(received) == len(connection.items))
        await client.disconnect()

    shape_of = EXPECTED_SHAPES[mode]
    assert len(received) == len(connection.items) > 60
    for (event, args), item in zip(received, connection.items, strict=True):
        if isinstance(item, Garbage):  # a malformed payload, under the same event name
            assert event == item.event == shape_of({})[0]
            continue
        assert item.pair == "BTC_USD"
        sent = (
            wire.cancel_payload(item) if isinstance(item, Cancel) else wire.new_order_payload(item)
        )
        assert (event, args) == shape_of(json.loads(wire.dumps(sent), parse_float=Decimal))
    assert connection.garbage == 2


def test_an_event_name_clients_keep_for_themselves_is_refused() -> None:
    with pytest.raises(ValueError, match="event_name"):
        replace(FAST, event_name="disconnect")
