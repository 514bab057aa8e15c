"""The socket event classifier: the two documented shapes, under whatever event name they
arrive with the pair told by the name, a channel argument, the payload or the subscription;
everything else kept raw."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.exchange.classify import BookUpdate, channel, classify
from recorder.exchange.parse import load_json
from recorder.records import RawMessage
from tests.fuzz import strategies as fz

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = uuid.UUID(int=7)

NEW_ORDER = """{"success": true, "date": 1485686507.0944622, "oid": 15234, "type": "sell",
 "price": 935.23, "amount": 0.0, "trades": [{"tid": 14876, "type": "buy", "price": "936.00",
 "amount": "0.1", "o_id": 15201}]}"""
CANCEL = """{"success": true, "date": 1485686413.5688234, "oid": 15235, "cancel_order_id": 4535,
 "price": 935.23, "type": "sell", "amount": 0.0123, "pair": "BTC_USD", "cancelled": true}"""


def run(event: Any, text: str, subscribed: frozenset[str] = frozenset()) -> BookUpdate | RawMessage:
    return classify(
        event,
        [load_json(text)],
        payload_text=text,
        received_at=NOW,
        session_id=SESSION,
        subscribed=subscribed,
    )


def test_new_order_with_its_fills() -> None:
    update = run("book_BTC_USD", NEW_ORDER)
    assert isinstance(update, BookUpdate)
    e = update.event
    assert (e.pair, e.oid, e.kind, e.type, e.price, e.amount, e.cancel_order_id) == (
        "BTC_USD",
        15234,
        "new",
        "sell",
        Decimal("935.23"),
        Decimal("0.0"),
        None,
    )
    assert e.ts == datetime(2017, 1, 29, 10, 41, 47, 94462, tzinfo=UTC)
    assert e.session_id == SESSION
    assert update.event_name == "book_BTC_USD"
    (fill,) = update.fills
    assert (fill.tid, fill.oid, fill.o_id, fill.type, str(fill.price), str(fill.amount)) == (
        14876,
        15234,
        15201,
        "buy",
        "936.00",
        "0.1",
    )
    assert fill.ts == e.ts


def test_cancel() -> None:
    update = run("book_BTC_USD", CANCEL)
    assert isinstance(update, BookUpdate)
    e = update.event
    assert (e.kind, e.oid, e.cancel_order_id, e.amount) == (
        "cancel",
        15235,
        4535,
        Decimal("0.0123"),
    )
    assert update.fills == ()


def _raw(event: Any, text: str) -> RawMessage:
    result = run(event, text)
    assert isinstance(result, RawMessage), result
    assert result.payload == text
    assert result.source == "socket"
    return result


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("trades_BTC_USD", NEW_ORDER, "unknown event 'trades_BTC_USD': cannot tell the pair"),
        ("book_", NEW_ORDER, "cannot tell the pair"),
        ("order_book", NEW_ORDER, "cannot tell the pair"),  # not a pair as the exchange writes them
        (5, CANCEL, "unknown event '5': its name is not a string"),
        ("book_BTC_ETH", CANCEL, "pair: 'BTC_USD' on channel 'book_BTC_ETH'"),
        ("book_BTC_USD", NEW_ORDER.replace('"oid": 15234, ', ""), "oid: missing"),
        ("book_BTC_USD", NEW_ORDER.replace('"sell"', '"short"'), "expected 'buy' or 'sell'"),
        ("book_BTC_USD", NEW_ORDER.replace("935.23", '"NaN"'), "price: not a decimal"),
        ("book_BTC_USD", NEW_ORDER.replace("935.23", "1e999"), "price: exponent out of range"),
        ("book_BTC_USD", NEW_ORDER.replace('"0.1"', "[]"), "trades[0].amount: expected a dec"),
        ("book_BTC_USD", NEW_ORDER.replace('"success": true', '"success": false'), "success"),
        ("book_BTC_USD", CANCEL.replace('"cancelled": true', '"cancelled": "yes"'), "cancelled"),
        ("book_BTC_USD", '"just a string"', "expected an object, got a string"),
        ("book_BTC_USD", "[]", "expected an object, got a list"),
    ],
)
def test_payloads_that_do_not_fit_are_kept_with_the_reason(
    event: Any, payload: str, reason: str
) -> None:
    assert reason in _raw(event, payload).error


def test_unknown_fields_are_ignored() -> None:
    assert isinstance(
        run("book_BTC_USD", NEW_ORDER.replace("{", '{"extra": [1, {}], ', 1)), BookUpdate
    )


def test_wrong_argument_count() -> None:
    result = classify("book_BTC_USD", [], payload_text="[]", received_at=NOW, session_id=SESSION)
    assert isinstance(result, RawMessage)
    assert "got 0 arguments" in result.error


# --- which pair: the event name, a channel argument, the payload, the one subscription ---------

BOTH = frozenset({"BTC_USD", "ETH_USD"})
ONLY_ETH = frozenset({"ETH_USD"})
NEW = load_json(NEW_ORDER)
CANCEL_BTC = load_json(CANCEL)  # its own `pair` says BTC_USD


def attribute(event: Any, args: list[Any], subscribed: frozenset[str]) -> BookUpdate | RawMessage:
    text = json.dumps([event, *args], default=str)
    return classify(event, args, payload_text=text, received_at=NOW, session_id=SESSION,
                    subscribed=subscribed)  # fmt: skip


@pytest.mark.parametrize(
    ("event", "args", "subscribed", "pair"),
    [
        # 1. the event name: the channel's, or a bare pair the connection subscribed
        ("book_BTC_USD", [NEW], frozenset(), "BTC_USD"),
        ("book_BTC_USD", [NEW], ONLY_ETH, "BTC_USD"),  # the name outranks the subscription
        ("BTC_USD", [NEW], BOTH, "BTC_USD"),
        ("BTC_USD", [NEW], frozenset(), "BTC_USD"),  # subscriptions unknown: a listed-looking name
        # 2. a channel argument before the payload: (event, channel, data)
        ("orderbook", ["book_ETH_USD", NEW], BOTH, "ETH_USD"),
        ("orderbook", ["ETH_USD", NEW], BOTH, "ETH_USD"),
        ("book_ETH_USD", ["book_ETH_USD", NEW], BOTH, "ETH_USD"),
        ("orderbook", ["book_ETH_USD", NEW], ONLY_ETH, "ETH_USD"),
        # 3. the payload's own pair field
        ("orderbook", [CANCEL_BTC], BOTH, "BTC_USD"),
        ("orderbook", [CANCEL_BTC], ONLY_ETH, "BTC_USD"),  # outranks the subscription
        ("XRP_USD", [CANCEL_BTC], BOTH, "BTC_USD"),  # an unsubscribed bare name says nothing
        # 4. the connection's one subscribed pair
        ("orderbook", [NEW], ONLY_ETH, "ETH_USD"),
        ("message", [NEW], ONLY_ETH, "ETH_USD"),
    ],
)
def test_the_pair_comes_from_the_first_source_that_tells_it(
    event: str, args: list[Any], subscribed: frozenset[str], pair: str
) -> None:
    update = attribute(event, args, subscribed)
    assert isinstance(update, BookUpdate), update
    assert update.event.pair == pair
    assert update.event_name == event
    assert all(fill.pair == pair for fill in update.fills)
    kind = "cancel" if args[-1] is CANCEL_BTC else "new"
    assert (update.event.kind, update.event.oid) == (kind, args[-1]["oid"])


@pytest.mark.parametrize(
    ("event", "args", "subscribed", "reason"),
    [
        ("orderbook", [NEW], BOTH, "unknown event 'orderbook': cannot tell the pair"),
        ("orderbook", [], BOTH, "unknown event 'orderbook': cannot tell the pair"),
        ("orderbook", [], ONLY_ETH, "expected one payload object, got 0 arguments"),
        ("orderbook", [NEW], frozenset(), "cannot tell the pair"),
        ("XRP_USD", [NEW], BOTH, "cannot tell the pair"),  # not subscribed: not our pair
        ("orderbook", ["book_", NEW], BOTH, "unknown event 'orderbook': cannot tell the pair"),
        ("book_ETH_USD", ["x", NEW], BOTH, "expected one payload object, got 2 arguments"),
        ("orderbook", ["book_ETH_USD", NEW, {}], BOTH, "got 2 arguments"),
        ("orderbook", ["book_ETH_USD"], BOTH, "expected an object, got a string"),
        # sources that contradict each other: one of them is wrong
        ("book_BTC_USD", ["book_ETH_USD", NEW], BOTH, "channel 'book_ETH_USD' under event"),
        ("orderbook", ["book_ETH_USD", CANCEL_BTC], BOTH, "pair: 'BTC_USD' on channel 'book_E"),
        ("ETH_USD", [CANCEL_BTC], BOTH, "pair: 'BTC_USD' on channel 'book_ETH_USD'"),
        ("book_ETH_USD", [NEW | {"pair": "BTC_USD"}], BOTH, "pair: 'BTC_USD' on channel"),
        # a pair field that is no pair
        ("orderbook", [CANCEL_BTC | {"pair": "BTC USD"}], ONLY_ETH, "pair: not a pair name"),
        ("orderbook", [CANCEL_BTC | {"pair": 7}], ONLY_ETH, "pair: not a pair name: '7'"),
    ],
)
def test_events_whose_pair_cannot_be_told_are_kept_raw_with_the_reason(
    event: str, args: list[Any], subscribed: frozenset[str], reason: str
) -> None:
    result = attribute(event, args, subscribed)
    assert isinstance(result, RawMessage), result
    assert reason in result.error
    assert result.payload == json.dumps([event, *args], default=str)
    assert result.event == event


SIM_MODES = ["channel", "pair", "orderbook", "book_event", "BTC_USD_book"]


def sent_as(mode: str, pair: str, payload: Any) -> tuple[str, list[Any]]:
    """How `recorder sim --event-name MODE` sends a book payload (recorder/sim/server.py)."""
    if mode == "channel":
        return channel(pair), [payload]
    if mode == "pair":
        return pair, [payload]
    return mode, [channel(pair), payload]


@given(
    pair=fz.pair_names,
    others=st.frozensets(fz.pair_names, max_size=4),
    mode=st.sampled_from(SIM_MODES),
    payload=fz.book_event(),
)
def test_every_way_the_simulator_sends_is_told_to_the_right_pair(
    pair: str, others: frozenset[str], mode: str, payload: fz.Valid
) -> None:
    tree = load_json(payload.text)
    if "pair" in tree:
        tree["pair"] = pair  # a cancel names its own pair
    event, args = sent_as(mode, pair, tree)
    update = attribute(event, args, others | {pair})
    assert isinstance(update, BookUpdate), update
    assert (update.event.pair, update.event_name) == (pair, event)
    assert update.event.oid == payload.expected[0]["oid"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "success",
                    "date",
                    "oid",
                    "type",
                    "price",
                    "amount",
                    "trades",
                    "tid",
                    "o_id",
                    "cancelled",
                    "cancel_order_id",
                    "pair",
                    "x",
                ]
            ),
            children,
            max_size=8,
        )
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(["book_BTC_USD", "book_", "BTC_USD", "other", "*", ""]) | st.text(max_size=12),
    st.lists(json_values | st.sampled_from(["book_BTC_USD", "ETH_USD"]), max_size=3),
    st.frozensets(st.sampled_from(["BTC_USD", "ETH_USD", "A_B"]), max_size=2),
)
def test_classifier_never_raises_and_files_under_a_pair_it_was_told(
    event: str, args: list[Any], subscribed: frozenset[str]
) -> None:
    text = json.dumps([event, *args], default=str)
    result = classify(event, args, payload_text=text, received_at=NOW, session_id=SESSION,
                      subscribed=subscribed)  # fmt: skip
    assert isinstance(result, BookUpdate | RawMessage)
    if isinstance(result, BookUpdate):
        told = {event.removeprefix("book_"), *subscribed}
        if len(args) == 2 and isinstance(args[0], str):
            told.add(args[0].removeprefix("book_"))
        told.add(args[-1].get("pair"))
        assert result.event.pair in told
        assert result.event_name == event


@given(
    oid=st.integers(0, 10**12),
    price=st.decimals(min_value=0, max_value=10**9, places=8),
    side=st.sampled_from(["buy", "sell"]),
    cancelled=st.booleans(),
)
def test_valid_events_are_always_classified(
    oid: int, price: Decimal, side: str, cancelled: bool
) -> None:
    payload: dict[str, Any] = {
        "success": True,
        "date": 1485686413,
        "oid": oid,
        "type": side,
        "price": price,
        "amount": str(price),
    }
    if cancelled:
        payload |= {"cancelled": True, "cancel_order_id": 1}
    else:
        payload["trades"] = [{"tid": 1, "type": side, "price": price, "amount": "1", "o_id": 2}]
    result = classify("book_A_B", [payload], payload_text="", received_at=NOW, session_id=SESSION)
    assert isinstance(result, BookUpdate)
    assert result.event.kind == ("cancel" if cancelled else "new")
    assert (result.event.oid, result.event.price) == (oid, price)
