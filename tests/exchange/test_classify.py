"""The socket event classifier: the two documented shapes, and everything else kept raw."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.parse import load_json
from recorder.records import RawMessage

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = uuid.UUID(int=7)

NEW_ORDER = """{"success": true, "date": 1485686507.0944622, "oid": 15234, "type": "sell",
 "price": 935.23, "amount": 0.0, "trades": [{"tid": 14876, "type": "buy", "price": "936.00",
 "amount": "0.1", "o_id": 15201}]}"""
CANCEL = """{"success": true, "date": 1485686413.5688234, "oid": 15235, "cancel_order_id": 4535,
 "price": 935.23, "type": "sell", "amount": 0.0123, "pair": "BTC_USD", "cancelled": true}"""


def run(event: Any, text: str) -> BookUpdate | RawMessage:
    return classify(
        event, [load_json(text)], payload_text=text, received_at=NOW, session_id=SESSION
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
        ("trades_BTC_USD", NEW_ORDER, "unknown event 'trades_BTC_USD'"),
        ("book_", NEW_ORDER, "unknown event"),
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
    event: str, payload: str, reason: str
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
    st.sampled_from(["book_BTC_USD", "book_", "other", "*", ""]) | st.text(max_size=12),
    st.lists(json_values, max_size=3),
)
def test_classifier_never_raises(event: str, args: list[Any]) -> None:
    text = json.dumps([event, *args], default=str)
    result = classify(event, args, payload_text=text, received_at=NOW, session_id=SESSION)
    assert isinstance(result, BookUpdate | RawMessage)


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
