"""Parsing JSON text into records: exact decimals, exact times, precise refusals."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.exchange.parse import (
    MAX_ABS_EXPONENT,
    ParseError,
    load_json,
    parse_cancelled_order,
    parse_candles,
    parse_created_order,
    parse_currencies,
    parse_deposits,
    parse_order,
    parse_orderbook,
    parse_orders,
    parse_pairs,
    parse_trades,
    parse_wallets,
    parse_withdraws,
    to_decimal,
    to_int,
    to_timestamp,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("935.23", "935.23"), ("1e-08", "1E-8"), ('"936.00"', "936.00"), ("0.0", "0.0"), ("3", "3")],
)
def test_numbers_are_exact_decimals(text: str, expected: str) -> None:
    value = to_decimal(load_json(text))
    assert str(value) == expected
    assert value == Decimal(expected)


def test_a_float_literal_never_goes_through_binary_float() -> None:
    # 0.1 + 0.2 as floats is 0.30000000000000004; as exact decimals it is 0.3
    data = load_json('{"a": 0.1, "b": 0.2, "p": 100000000.00000001}')
    assert to_decimal(data["a"]) + to_decimal(data["b"]) == Decimal("0.3")
    assert to_decimal(data["p"]) == Decimal("100000000.00000001")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "non-finite"),
        ("Infinity", "non-finite"),
        ("-Infinity", "non-finite"),
        ('{"a": 1', "not valid JSON"),
        ("<html><body>502 Bad Gateway</body></html>", "not valid JSON"),
        ("", "not valid JSON"),
        ("1" * 400, "too large"),
        ("[" * 100000, "nested too deeply"),
    ],
)
def test_bad_json_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        load_json(text)


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(ParseError, match="UTF-8"):
        load_json(b"\xff\xfe[1]")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", "not a decimal"),
        ("Infinity", "not a decimal"),
        ("1e999999", "exponent out of range"),
        (Decimal("1e-999"), "exponent out of range"),
        ("12abc", "not a decimal"),
        (" 1", "not a decimal"),
        ("", "not a decimal"),
        (True, "boolean"),
        (None, "null"),
        ([1], "a list"),
        (0.5, "binary float"),
        ("1" * 70, "significant digits"),
        (Decimal("NaN"), "non-finite"),
    ],
)
def test_bad_decimals_are_refused(value: object, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        to_decimal(value, "x")


# Any decimal within the accepted range, written as text: parsed back exactly, digit for digit.
accepted_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: (
        len(d.as_tuple().digits) <= 60
        and d.adjusted() <= MAX_ABS_EXPONENT
        and int(d.as_tuple().exponent) >= -MAX_ABS_EXPONENT
    )
)


@given(accepted_decimals)
def test_decimal_text_round_trips_exactly(value: Decimal) -> None:
    for text in (str(value), format(value, "f")):
        parsed = to_decimal(text)
        assert parsed == value
        assert str(parsed) == text or format(parsed, "f") == text
    # as a JSON number too: the same digits and exponent
    as_json = to_decimal(load_json(str(value)))
    assert as_json.as_tuple() == value.as_tuple() or (value.is_zero() and as_json.is_zero())


@given(st.text(max_size=30))
def test_to_decimal_never_raises_anything_but_parse_error(text: str) -> None:
    with contextlib.suppress(ParseError):
        to_decimal(text)


def test_long_integers_are_decimals_but_not_ids() -> None:
    value = load_json("1" + "0" * 40)
    assert to_decimal(value) == Decimal(10) ** 40
    with pytest.raises(ParseError, match="expected an integer"):
        to_int(value, "oid")


def test_status_is_read_as_string_or_integer() -> None:
    assert to_int("1") == 1
    assert to_int(3) == 3
    with pytest.raises(ParseError, match="not an integer"):
        to_int("1.0")
    with pytest.raises(ParseError, match="boolean"):
        to_int(True)


def test_timestamps_are_exact_to_the_microsecond() -> None:
    assert to_timestamp(load_json("1485686507.0944622")) == datetime(
        2017, 1, 29, 10, 41, 47, 94462, tzinfo=UTC
    )
    # a float would make this ...410014 or ...410016
    assert to_timestamp(load_json("1485777324.410015")).microsecond == 410015
    assert to_timestamp(1485777600) == datetime(2017, 1, 30, 12, 0, tzinfo=UTC)
    assert to_timestamp("1483705817.7355085").microsecond == 735508  # half to even
    assert to_timestamp("1483705817.7355095").microsecond == 735510
    assert to_timestamp("0.0000019").microsecond == 2


@pytest.mark.parametrize("value", [-1, "1e20", Decimal("253402300800")])
def test_timestamps_out_of_range_are_refused(value: object) -> None:
    with pytest.raises(ParseError, match="out of range"):
        to_timestamp(value, "date")


def test_currencies_and_pairs() -> None:
    currencies = parse_currencies(
        '[{"sign": "Ƀ", "short_name": "BTC", "new": 1}, {"sign": "Ξ", "short_name": "ETH"}]', NOW
    )
    assert [(c.short_name, c.sign) for c in currencies] == [("BTC", "Ƀ"), ("ETH", "Ξ")]
    (pair,) = parse_pairs(
        '[{"currency2": "USD", "maximum_order_size": 100000000.00000000,'
        ' "minimum_order_size": 0.00000001, "currency1": "BTC", "name": "BTC_USD",'
        ' "price_precision": 3}]',
        NOW,
    )
    assert pair.maximum_order_size == Decimal("100000000.00000000")
    assert str(pair.minimum_order_size) == "1E-8"
    assert (pair.name, pair.currency1, pair.currency2, pair.price_precision) == (
        "BTC_USD",
        "BTC",
        "USD",
        3,
    )


UNGROUPED = """{"sell": [{"price": 911.519, "id": 44667, "amount": 0.000446,
 "timestamp": 1485777324.410015}, {"price": "912", "id": 44668, "amount": 1, "timestamp": 1}],
 "buy": [{"price": 911.122, "id": 44647, "amount": 0.001233, "timestamp": 1485777124.415542}]}"""


def test_ungrouped_orderbook_is_an_l3_snapshot() -> None:
    book = parse_orderbook(
        UNGROUPED, pair="BTC_USD", grouped=False, taken_at=NOW, received_at=NOW, reason="connect"
    )
    assert book.snapshot.pair == "BTC_USD"
    assert book.snapshot.reason == "connect"
    assert not book.snapshot.grouped
    rows = [(o.side, o.pos, o.order_id, o.price, o.order_ts) for o in book.orders]
    assert rows == [
        ("sell", 0, 44667, Decimal("911.519"), datetime(2017, 1, 30, 11, 55, 24, 410015, UTC)),
        ("sell", 1, 44668, Decimal("912"), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),
        ("buy", 0, 44647, Decimal("911.122"), datetime(2017, 1, 30, 11, 52, 4, 415542, UTC)),
    ]
    assert {o.snapshot_id for o in book.orders} == {book.snapshot.snapshot_id}


def test_grouped_orderbook_has_no_order_ids() -> None:
    book = parse_orderbook(
        '{"sell": [{"price": 911.519, "amount": 0.000446}], "buy": []}',
        pair="BTC_USD",
        grouped=True,
        taken_at=NOW,
        received_at=NOW,
        reason="interval",
    )
    assert [(o.order_id, o.order_ts, o.amount) for o in book.orders] == [
        (None, None, Decimal("0.000446"))
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"sell": []}', r"orderbook\.buy: missing"),
        ('{"sell": [{"price": 1, "amount": 1}], "buy": []}', r"orderbook\.sell\[0\]\.id: missing"),
        ('{"sell": {}, "buy": []}', r"orderbook\.sell: expected a list, got an object"),
        ('[{"sell": []}]', "expected an object, got a list"),
    ],
)
def test_orderbook_missing_or_mistyped_fields(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_orderbook(
            text, pair="BTC_USD", grouped=False, taken_at=NOW, received_at=NOW, reason="x"
        )


def test_order_status_as_string_and_as_int() -> None:
    one = parse_order(
        '{"amount": 0.1250000, "pair": "BTC_USD", "type": "buy", "status": "1",'
        ' "price": 870.69000000, "id": 11259}',
        NOW,
    )
    assert (one.id, one.status, one.price, one.amount) == (
        11259,
        1,
        Decimal("870.69000000"),
        Decimal("0.1250000"),
    )
    (listed,) = parse_orders(
        '[{"amount": 0.5, "pair": "ETH_USD", "type": "buy", "status": 3,'
        ' "price": 0.00113000, "id": 11249}]',
        NOW,
    )
    assert listed.status == 3


TRADES = """[{"id": 6030, "price": 839.36000000, "pair": "BTC_USD", "type": "sell",
 "timestamp": 1483705817.735508, "amount": 0.00281167}]"""


def test_trades() -> None:
    (trade,) = parse_trades(TRADES, NOW, pair="BTC_USD")
    assert (trade.tid, trade.pair, trade.type, trade.price, trade.amount) == (
        6030,
        "BTC_USD",
        "sell",
        Decimal("839.36000000"),
        Decimal("0.00281167"),
    )
    assert trade.ts == datetime(2017, 1, 6, 12, 30, 17, 735508, tzinfo=UTC)


def test_trades_of_another_pair_are_refused() -> None:
    with pytest.raises(ParseError, match=r"exchanges\[0\]\.pair: 'BTC_USD' in an answer for"):
        parse_trades(TRADES, NOW, pair="ETH_USD")


def test_paginated_lists_are_read_as_their_results() -> None:
    text = '{"count": 1, "next": null, "results": ' + TRADES + "}"
    assert [t.tid for t in parse_trades(text, NOW)] == [6030]


def test_candles() -> None:
    (candle,) = parse_candles(
        '[{"volume": 0.262929, "high": 912.236, "low": 910.086, "close": 911.915,'
        ' "time": 1485777600, "open": 910.424}]',
        pair="BTC_USD",
        resolution="60",
        updated_at=NOW,
    )
    assert candle.bucket == datetime(2017, 1, 30, 12, 0, tzinfo=UTC)
    assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == tuple(
        map(Decimal, ["910.424", "912.236", "910.086", "911.915", "0.262929"])
    )


def test_private_lists() -> None:
    (wallet,) = parse_wallets('[{"currency": "BTC", "balance": 0.00000000, "reserve": 1}]', NOW)
    assert (wallet.currency, str(wallet.balance), wallet.reserve) == ("BTC", "0E-8", 1)
    (deposit,) = parse_deposits(
        '[{"timestamp": 1485363039.18359, "id": 317, "currency": "BTC", "amount": 530.00000000}]',
        NOW,
    )
    assert (deposit.id, deposit.amount, deposit.ts.microsecond) == (317, Decimal(530), 183590)
    (withdraw,) = parse_withdraws(
        '[{"id": 403, "timestamp": 1485363466.868539, "currency": "BTC", "amount": 0.53,'
        ' "status": 20}]',
        NOW,
    )
    assert (withdraw.id, withdraw.status) == (403, 20)


def test_created_and_cancelled_order() -> None:
    created = parse_created_order(
        '{"success": true, "type": "buy", "date": 1483721079.51632, "oid": 11268,'
        ' "price": 870.69000000, "amount": 0.00000000, "trades": [{"type": "sell",'
        ' "price": 870.69000000, "o_id": 11266, "amount": 0.00010000, "tid": 6049}]}',
        pair="BTC_USD",
        received_at=NOW,
    )
    assert (created.oid, created.type, created.amount) == (11268, "buy", Decimal(0))
    (fill,) = created.fills
    assert (fill.tid, fill.oid, fill.o_id, fill.type, fill.amount) == (
        6049,
        11268,
        11266,
        "sell",
        Decimal("0.0001"),
    )
    assert parse_cancelled_order('{"order": 63568}') == 63568


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[{"sign": "Ƀ"}]', r"currencies\[0\]\.short_name: missing"),
        ('[{"sign": 5, "short_name": "BTC"}]', r"currencies\[0\]\.sign: expected a string"),
        ('{"detail": "nope"}', "currencies: expected a list, got an object"),
        ("[1]", r"currencies\[0\]: expected an object"),
    ],
)
def test_wrong_shapes_name_the_field(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_currencies(text, NOW)
