"""`parse_orderbook`'s inline reading of each level gives exactly what reading it field by
field through `Fields` (`parse.book_level`) gives: the same records, or the same refusal
with the same reason, whatever the level holds."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.exchange.parse import Fields, ParseError, book_level, load_json, parse_orderbook
from recorder.records import SnapshotOrder

TAKEN_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

# Field values as JSON text: the usual forms first, then every form the inline reading hands
# back to `Fields` (strings, integers, exponents, rounding, limits) and malformed ones.
PRICES = [
    "43000.00", "0.00000001", "1E-8", "1e+3", '"936.00"', "43000", "0", "-1.5",
    "1" + "0" * 59 + ".5", "1e61", "1e-61", '"NaN"', "true", "null", '"x"', "[1]",
]  # fmt: skip
IDS = [
    "264", "0", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
    '"17"', "true", "1.5", "null", "1" * 31,
]  # fmt: skip
TIMESTAMPS = [
    "1795984189.006224", "1795984189.5", "1795984189.0", "0.000001", "86399.999999",
    "86400.000000", "1795984189", "1795984189.0000005", "1795984189.0000015", "1.7e9",
    "-0.0", "-1.5", "253402300797.999999", "253402300798.0", "253402300798.000001",
    "253402300799", '"1795984189.25"', "true", "null", "1e-7",
]  # fmt: skip


def level_text(price: str, amount: str, order_id: str | None, ts: str | None) -> str:
    parts = [f'"price": {price}', f'"amount": {amount}']
    if order_id is not None:
        parts.append(f'"id": {order_id}')
    if ts is not None:
        parts.append(f'"timestamp": {ts}')
    return "{" + ", ".join(parts) + "}"


def reference(text: str, grouped: bool, snapshot_id: uuid.UUID) -> list[SnapshotOrder] | str:
    """The levels read one field at a time through `Fields`, or the reason one is refused."""
    body = load_json(text)
    orders = []
    try:
        for side in ("sell", "buy"):
            for pos, level in enumerate(body[side]):
                f = Fields(level, f"orderbook.{side}[{pos}]")
                orders.append(book_level(f, side, pos, grouped, snapshot_id, TAKEN_AT))
    except ParseError as exc:
        return str(exc)
    return orders


def assert_same_as_field_by_field(text: str, grouped: bool) -> list[SnapshotOrder] | str:
    try:
        book = parse_orderbook(
            text, pair="BTC_USD", grouped=grouped, taken_at=TAKEN_AT, received_at=TAKEN_AT,
            reason="test",
        )  # fmt: skip
    except ParseError as exc:
        refused = str(exc)
        assert refused == reference(text, grouped, uuid.uuid4())
        return refused
    assert book.orders == reference(text, grouped, book.snapshot.snapshot_id)
    for order in book.orders:  # equal is not enough for a time: the same zone object too
        assert order.order_ts is None or order.order_ts.tzinfo is UTC
    return book.orders


def book_text(sell: list[str], buy: list[str]) -> str:
    return '{"sell": [' + ", ".join(sell) + '], "buy": [' + ", ".join(buy) + "]}"


USUAL = level_text("43000.00", "0.02823900", "264", "1795984189.006224")


@pytest.mark.parametrize("ts", TIMESTAMPS)
def test_each_timestamp_form_reads_as_field_by_field(ts: str) -> None:
    assert_same_as_field_by_field(book_text([USUAL, level_text("1.0", "2.0", "3", ts)], []), False)


@pytest.mark.parametrize("order_id", IDS)
def test_each_id_form_reads_as_field_by_field(order_id: str) -> None:
    text = book_text([USUAL], [level_text("1.0", "2.0", order_id, "1795984189.5")])
    assert_same_as_field_by_field(text, False)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("price", PRICES)
def test_each_price_and_amount_form_reads_as_field_by_field(price: str, grouped: bool) -> None:
    for level in (level_text(price, "1.0", "3", "5.5"), level_text("1.0", price, "3", "5.5")):
        assert_same_as_field_by_field(book_text([USUAL, level], [USUAL]), grouped)


L = level_text


@pytest.mark.parametrize(
    ("level", "reason"),
    [
        ("[]", r": expected an object, got a list"),
        ('"x"', r": expected an object, got a string"),
        ('{"price": 1, "amount": 1, "timestamp": 5}', r"\.id: missing"),
        ('{"id": 1, "amount": 1, "timestamp": 5}', r"\.price: missing"),
        ('{"id": 1, "price": 1, "amount": 1}', r"\.timestamp: missing"),
        (L("1.0", "2.0", "true", "5"), r"\.id: expected an integer, got a boolean"),
        (L("1.0", "2.0", str(2**63), "5"), r"\.id: integer outside the 64-bit range: 9.*"),
        (L("1.0", "2.0", "1.5", "5"), r"\.id: expected an integer, got Decimal"),
        (L("1e61", "2.0", "3", "5.0"), r"\.price: exponent out of range \(1E\+61\)"),
        (L("1.0", "1e-61", "3", "5.0"), r"\.amount: exponent out of range \(1E-61\)"),
        (L("1.0", '"NaN"', "3", "5.0"), r"\.amount: not a decimal number: 'NaN'"),
        (L("1.0", "null", "3", "5.0"), r"\.amount: expected a decimal number, got null"),
        (L("1.0", "2.0", "3", "-1.5"), r"\.timestamp: timestamp out of range: -1\.5"),
        (L("1.0", "2.0", "3", "253402300798.000001"), r"\.timestamp: timestamp out of range: .*"),
        (L("1.0", "2.0", "3", "true"), r"\.timestamp: expected a decimal number, got a boolean"),
    ],
)
def test_malformed_levels_are_refused_with_the_field_by_field_reason(
    level: str, reason: str
) -> None:
    got = assert_same_as_field_by_field(book_text([USUAL], [USUAL, level]), False)
    assert isinstance(got, str)
    assert re.fullmatch(r"orderbook\.buy\[1\]" + reason, got), got


def test_usual_levels_are_exact() -> None:
    text = book_text([USUAL], [level_text("42999.99", "1E-8", "7", "86400.000001")])
    orders = assert_same_as_field_by_field(text, False)
    assert isinstance(orders, list)
    assert [(o.side, o.pos, o.order_id, o.price, o.amount, o.order_ts) for o in orders] == [
        ("sell", 0, 264, Decimal("43000.00"), Decimal("0.02823900"),
         datetime(2026, 11, 29, 20, 29, 49, 6224, tzinfo=UTC)),
        ("buy", 0, 7, Decimal("42999.99"), Decimal("1E-8"),
         datetime(1970, 1, 2, 0, 0, 0, 1, tzinfo=UTC)),
    ]  # fmt: skip
    assert str(orders[0].price) == "43000.00"  # trailing zeros kept


def json_value(options: list[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.sampled_from(options), st.none())


@st.composite
def levels(draw: st.DrawFn) -> str:
    """A level whose every field is one of the forms above, or absent, or extra keys."""
    seconds = draw(st.integers(0, 253402300799))
    digits = draw(st.integers(0, 8))
    fraction = str(draw(st.integers(0, 10**digits - 1))).zfill(digits) if digits else ""
    ts = draw(st.one_of(st.just(f"{seconds}.{fraction}" if fraction else f"{seconds}"),
                        json_value(TIMESTAMPS)))  # fmt: skip
    price, amount = draw(json_value(PRICES)), draw(json_value(PRICES))
    order_id = draw(json_value(IDS))
    fields = {"price": price, "amount": amount, "id": order_id, "timestamp": ts}
    text = ", ".join(f'"{key}": {value}' for key, value in fields.items() if value is not None)
    if draw(st.booleans()):
        text += (", " if text else "") + '"extra": {"a": [1, 2.5]}'
    return "{" + text + "}"


@settings(max_examples=300, deadline=None)
@given(st.lists(levels(), max_size=4), st.lists(levels(), max_size=4), st.booleans())
def test_any_levels_read_as_field_by_field(sell: list[str], buy: list[str], grouped: bool) -> None:
    text = book_text(sell, buy)
    json.loads(text)  # the test's own input is JSON
    assert_same_as_field_by_field(text, grouped)


def test_a_ladder_of_orders_over_days_reads_as_field_by_field() -> None:
    # Many orders in some seconds, single orders in others: the seconds the reading keeps
    # from one level to the next must never leak into another second.
    stamps = [f"{1795984189 + (i % 7) * 86_399}.{i:06d}" for i in range(200)]
    levels_ = [level_text(f"{43000 + i}.00", "0.5", str(i), ts) for i, ts in enumerate(stamps)]
    assert_same_as_field_by_field(book_text(levels_, levels_[::-1]), False)
