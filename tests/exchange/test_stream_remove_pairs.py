"""Following fewer pairs (a delisted one) against a real python-socketio server on loopback:
unsubscribed at once, not subscribed again, and its late events never read as another's."""

from __future__ import annotations

import asyncio
from typing import Any

from recorder.exchange.classify import BookUpdate
from recorder.exchange.stream import Connected
from recorder.records import RawMessage
from tests.exchange.loopback import FakeExchange
from tests.exchange.test_stream import NEW_ORDER, make_stream, next_of, running, until

# Under an event name that tells no pair, with a payload that names none: only "the one
# subscribed pair" could tell (see `recorder.exchange.classify`).
NAMELESS = '2["order_book",' + NEW_ORDER + "]"


async def test_a_removed_pair_is_unsubscribed_and_its_late_events_stay_unattributed(
    exchange: FakeExchange,
) -> None:
    unsubscribed: list[str] = []

    async def unsubscribe(sid: str, channel: Any) -> None:
        unsubscribed.append(str(channel))  # and, like an exchange that ignores it, stays

    exchange.sio.on("unsubscribe", unsubscribe)
    async with running(make_stream(exchange, ["BTC_USD", "ETH_USD"])) as stream:
        await next_of(stream, Connected)
        await until(lambda: len(exchange.subscriptions) == 2)
        await stream.remove_pairs(["ETH_USD", "LTC_USD"])  # LTC_USD was never followed
        assert stream.pairs == {"BTC_USD"}
        await until(lambda: unsubscribed == ["book_ETH_USD"])

        # The connection still has ETH_USD subscribed: a nameless event may be its.
        await exchange.send_raw(NAMELESS)
        late = await asyncio.wait_for(stream.items.get(), 5)
        assert isinstance(late, RawMessage), late

        # The next connection subscribes BTC_USD alone, so a nameless event is BTC_USD's.
        before = len(exchange.subscriptions)
        await exchange.kick_all()
        await next_of(stream, Connected)
        await until(lambda: len(exchange.subscriptions) == before + 1)
        assert exchange.subscriptions[-1][1] == "book_BTC_USD"
        await exchange.send_raw(NAMELESS)
        update = await next_of(stream, BookUpdate)
        assert (update.event.pair, update.event.oid) == ("BTC_USD", 15234)
