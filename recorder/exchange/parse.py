"""JSON text from the exchange -> typed records, exactly, or a `ParseError` that says why.

Pure functions, no I/O. Numbers never pass through a binary float: `load_json` hands every
JSON number's text to `Decimal` (`935.23`, `1e-08`), and prices that arrive as strings
(`"936.00"`) become the same `Decimal`, trailing zeros kept. What cannot be stored exactly
and sensibly is refused with a reason: NaN and Infinity, absurd exponents, integers with
more digits than any id has. Unknown fields are ignored (the exchange may add some); a
missing or mistyped field is a `ParseError` naming the field, so the caller can keep the
verbatim text together with the reason (`raw_messages`) and go on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, TypeVar

from recorder.records import (
    AccountDeposit,
    AccountOrder,
    AccountTrade,
    AccountWallet,
    AccountWithdraw,
    BookFill,
    BookSnapshot,
    Candle,
    Currency,
    Pair,
    Side,
    SnapshotOrder,
    Trade,
    new_id,
    quick_init,
)

MAX_SIGNIFICANT_DIGITS = 60
"""More significant digits than this is no price or amount; NUMERIC would take it, we don't."""
MAX_ABS_EXPONENT = 60
"""Values must lie between 1e-60 and 1e+60 (or be zero with at most 60 decimals)."""
MAX_INT_DIGITS = 30
"""Ids, statuses and timestamps fit in far fewer digits; longer integers are malformed."""
INT_BITS = 64
"""Ids are stored as bigint: an integer outside its range could never be written, and a batch
holding it would be refused on every retry, so it is malformed input here."""
SMALL_INT_BITS = 32
"""Statuses and price precisions are stored as integer."""
MAX_NUMBER_TEXT = 200
MAX_TIMESTAMP_S = Decimal(253402300798)  # 9999-12-31, the last day `datetime` can hold
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIDES: tuple[Side, ...] = ("buy", "sell")

_PLAINLY_IN_RANGE = min(MAX_SIGNIFICANT_DIGITS, MAX_ABS_EXPONENT)
_TIMESTAMP_CONTEXT = Context(prec=MAX_SIGNIFICANT_DIGITS + 20, rounding=ROUND_HALF_EVEN)
"""Exact for every accepted number of seconds times 1e6; passed to each operation, which
costs far less than entering a `localcontext`."""
_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT_TEXT = re.compile(r"[+-]?\d+")


class ParseError(ValueError):
    """The input does not have the shape the docs describe; the message says where and why."""


# --- JSON and scalars -----------------------------------------------------------------------


def _json_int(text: str) -> int | Decimal:
    # Ids and statuses are short ints; a longer integer can still be an amount (a Decimal,
    # which `to_int` refuses); longer than any decimal we accept, it is refused here.
    digits = len(text.lstrip("-"))
    if digits > MAX_SIGNIFICANT_DIGITS:
        raise ParseError(f"integer with {digits} digits is too large")
    return int(text) if digits <= MAX_INT_DIGITS else Decimal(text)


def _json_constant(name: str) -> Any:
    raise ParseError(f"non-finite number {name} is not a decimal value")


_EXACT_JSON = json.JSONDecoder(
    parse_float=Decimal, parse_int=_json_int, parse_constant=_json_constant
)
"""One decoder for all text: `json.loads` given these arguments builds a new one per call,
which costs a third as much as decoding a book event."""


def load_json(text: str | bytes) -> Any:
    """Decode JSON text with every number as an exact `Decimal` (or `int` when integral)."""
    try:
        if isinstance(text, str):
            return _EXACT_JSON.decode(text)
        # Bytes: `json.loads` tells their encoding (a UTF-8 BOM is an encoding mark there).
        return json.loads(
            text, parse_float=Decimal, parse_int=_json_int, parse_constant=_json_constant
        )
    except ParseError:
        raise
    except json.JSONDecodeError as exc:
        raise ParseError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError:
        raise ParseError("not valid JSON: not UTF-8 text") from None
    except RecursionError:
        raise ParseError("not valid JSON: nested too deeply") from None
    except (ValueError, InvalidOperation) as exc:
        raise ParseError(f"not valid JSON: {exc}") from None


def _check_decimal(value: Decimal, where: str) -> Decimal:
    if not value.is_finite():
        raise ParseError(f"{where}: non-finite number {value} is not a decimal value")
    text = str(value)  # a tenth of what as_tuple() costs, and enough for every usual number
    if len(text) <= _PLAINLY_IN_RANGE and "E" not in text:
        # Written without an exponent in so few characters, it has fewer digits, fewer
        # decimals and fewer integer digits than any limit below.
        return value
    parts = value.as_tuple()  # once: it builds a tuple of every digit, for every number
    if len(parts.digits) > MAX_SIGNIFICANT_DIGITS:
        raise ParseError(f"{where}: more than {MAX_SIGNIFICANT_DIGITS} significant digits")
    exponent = int(parts.exponent)
    if value.adjusted() > MAX_ABS_EXPONENT or exponent < -MAX_ABS_EXPONENT:
        raise ParseError(f"{where}: exponent out of range ({_short(value)})")
    return value


def to_decimal(value: Any, where: str = "value") -> Decimal:
    """A JSON number or numeric string as an exact, finite `Decimal`; ParseError otherwise."""
    if isinstance(value, bool):
        raise ParseError(f"{where}: expected a decimal number, got a boolean")
    if isinstance(value, Decimal):
        return _check_decimal(value, where)
    if isinstance(value, int):
        return _check_decimal(Decimal(value), where)
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_TEXT or not _NUMBER_TEXT.fullmatch(value):
            raise ParseError(f"{where}: not a decimal number: {_short(value)}")
        return _check_decimal(Decimal(value), where)
    if isinstance(value, float):
        raise ParseError(f"{where}: a binary float cannot be an exact decimal")
    raise ParseError(f"{where}: expected a decimal number, got {_kind(value)}")


def to_int(value: Any, where: str = "value", *, bits: int = INT_BITS) -> int:
    """A JSON integer or an integer in a string (`3` or `"3"`) that fits a signed `bits`-bit
    column; ParseError otherwise."""
    if isinstance(value, bool):
        raise ParseError(f"{where}: expected an integer, got a boolean")
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_INT_DIGITS:
            raise ParseError(f"{where}: integer too large")
        number = value
    elif isinstance(value, str):
        if len(value.lstrip("+-")) > MAX_INT_DIGITS or not _INT_TEXT.fullmatch(value):
            raise ParseError(f"{where}: not an integer: {_short(value)}")
        number = int(value)
    else:
        raise ParseError(f"{where}: expected an integer, got {_kind(value)}")
    limit = 1 << (bits - 1)
    if not -limit <= number < limit:
        raise ParseError(f"{where}: integer outside the {bits}-bit range: {_short(number)}")
    return number


def to_timestamp(value: Any, where: str = "value") -> datetime:
    """Unix seconds with a fraction -> aware UTC datetime, exact to the microsecond.

    Computed in Decimal (a float would lose the last microsecond digits of today's times);
    digits past the microsecond round half to even.
    """
    seconds = to_decimal(value, where)
    if seconds < 0 or seconds > MAX_TIMESTAMP_S:
        raise ParseError(f"{where}: timestamp out of range: {_short(seconds)}")
    context = _TIMESTAMP_CONTEXT
    micros = int(seconds.scaleb(6, context).to_integral_value(ROUND_HALF_EVEN, context))
    return EPOCH + timedelta(microseconds=micros)


def to_side(value: Any, where: str = "value") -> Side:
    if value == "buy":
        return "buy"
    if value == "sell":
        return "sell"
    raise ParseError(f"{where}: expected 'buy' or 'sell', got {_short(value)}")


def to_text(value: Any, where: str = "value") -> str:
    if not isinstance(value, str) or not value:
        raise ParseError(f"{where}: expected a non-empty string, got {_short(value)}")
    return storable_text(value, where)


def storable_text(value: str, where: str = "value") -> str:
    """`value` if PostgreSQL's text can hold it; ParseError for NUL or a lone surrogate.

    JSON allows both (`"\\u0000"`, `"\\ud800"`); a text column takes neither, and a lone
    surrogate cannot even be encoded to send: a row holding one could never be written.
    """
    if "\x00" in value:
        raise ParseError(f"{where}: text with a NUL character: {_short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(f"{where}: text with a lone surrogate: {_short(value)}") from None
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- objects and lists ----------------------------------------------------------------------


class Fields:
    """A JSON object with typed getters whose errors name the field (`trades[2].price`)."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ParseError(f"{where}: expected an object, got {_kind(value)}")
        self.data: Mapping[str, Any] = value
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        if key not in self.data:
            raise ParseError(f"{self.path(key)}: missing")
        return self.data[key]

    def decimal(self, key: str) -> Decimal:
        value = self.data.get(key)
        # The usual case first, checked as `_check_decimal` does, without its calls: a JSON
        # number (a Decimal) written plainly in few characters. Anything else, or an error,
        # takes the general path, which says what is wrong.
        if type(value) is Decimal and value.is_finite():
            text = str(value)
            if len(text) <= _PLAINLY_IN_RANGE and "E" not in text:
                return value
        return to_decimal(self.raw(key), self.path(key))

    def int(self, key: str, *, bits: int = INT_BITS) -> int:
        value = self.data.get(key)
        # As `to_int` checks it: an int (not a bool) inside the column's range has fewer
        # digits than MAX_INT_DIGITS.
        if type(value) is int and -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            return value
        return to_int(self.raw(key), self.path(key), bits=bits)

    def timestamp(self, key: str) -> datetime:
        return to_timestamp(self.raw(key), self.path(key))

    def side(self, key: str) -> Side:
        return to_side(self.raw(key), self.path(key))

    def text(self, key: str) -> str:
        return to_text(self.raw(key), self.path(key))

    def array(self, key: str) -> list[Any]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise ParseError(f"{self.path(key)}: expected a list, got {_kind(value)}")
        return value


def as_list(value: Any, where: str) -> list[Any]:
    """A JSON list; a paginated `{"results": [...]}` object is read as its results."""
    if isinstance(value, dict) and isinstance(value.get("results"), list):
        value = value["results"]
    if not isinstance(value, list):
        raise ParseError(f"{where}: expected a list, got {_kind(value)}")
    return value


T = TypeVar("T")


def _each(text: str | bytes, what: str, build: Callable[[Fields], T]) -> list[T]:
    items = as_list(load_json(text), what)
    return [build(Fields(item, f"{what}[{i}]")) for i, item in enumerate(items)]


# --- public endpoints -----------------------------------------------------------------------


def parse_currencies(text: str | bytes, seen_at: datetime) -> list[Currency]:
    return _each(
        text,
        "currencies",
        lambda f: Currency(short_name=f.text("short_name"), sign=_str(f, "sign"), seen_at=seen_at),
    )


def _str(fields: Fields, key: str) -> str:
    value = fields.raw(key)
    if not isinstance(value, str):
        raise ParseError(f"{fields.path(key)}: expected a string, got {_kind(value)}")
    return storable_text(value, fields.path(key))


def parse_pairs(text: str | bytes, seen_at: datetime) -> list[Pair]:
    def build(f: Fields) -> Pair:
        return Pair(
            name=f.text("name"),
            currency1=f.text("currency1"),
            currency2=f.text("currency2"),
            price_precision=f.int("price_precision", bits=SMALL_INT_BITS),
            minimum_order_size=f.decimal("minimum_order_size"),
            maximum_order_size=f.decimal("maximum_order_size"),
            seen_at=seen_at,
        )

    return _each(text, "pairs", build)


@dataclass(frozen=True, slots=True)
class OrderBook:
    """One REST snapshot: its header record and its levels (sell ascending, buy descending)."""

    snapshot: BookSnapshot
    orders: list[SnapshotOrder]


def parse_orderbook(
    text: str | bytes,
    *,
    pair: str,
    grouped: bool,
    taken_at: datetime,
    received_at: datetime,
    reason: str,
) -> OrderBook:
    """Levels keep the exchange's order; `pos` counts from 0 at the best price of each side.

    Ungrouped levels are resting orders and must carry `id` and `timestamp`; grouped levels
    are price levels, whose `order_id` and `order_ts` stay None.
    """
    book = Fields(load_json(text), "orderbook")
    snapshot = BookSnapshot(
        snapshot_id=new_id(),
        pair=pair,
        taken_at=taken_at,
        received_at=received_at,
        grouped=grouped,
        reason=reason,
    )
    orders: list[SnapshotOrder] = []
    for side in SIDES[::-1]:  # sell first, as the exchange lists it
        _book_levels(book.array(side), side, grouped, snapshot.snapshot_id, taken_at, orders)
    return OrderBook(snapshot, orders)


def book_level(
    f: Fields, side: Side, pos: int, grouped: bool, snapshot_id: uuid.UUID, taken_at: datetime
) -> SnapshotOrder:
    """One level read field by field: the reference `_book_levels` must agree with."""
    return SnapshotOrder(
        snapshot_id=snapshot_id,
        side=side,
        pos=pos,
        order_id=None if grouped else f.int("id"),
        price=f.decimal("price"),
        amount=f.decimal("amount"),
        order_ts=None if grouped else f.timestamp("timestamp"),
        taken_at=taken_at,
    )


_ID_MIN = -(1 << (INT_BITS - 1))
_ID_LIMIT = 1 << (INT_BITS - 1)
_MAX_TIMESTAMP_SECONDS = int(MAX_TIMESTAMP_S)
_SecondFields = tuple[int, int, int, int, int, int]
"""Year, month, day, hour, minute, second."""
_EPOCH_ORDINAL = EPOCH.toordinal()
_FRACTION_TO_MICROS = (1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)
"""What a fraction of n digits (`.5` -> 5) is multiplied by to give microseconds."""


def _book_levels(
    levels: list[Any],
    side: Side,
    grouped: bool,
    snapshot_id: uuid.UUID,
    taken_at: datetime,
    orders: list[SnapshotOrder],
) -> None:
    """Append `levels` to `orders` as `book_level` reads them, in half its time.

    A deep book holds thousands of levels (docs/benchmarks.md "Snapshots"), and reading each
    through `Fields` (an object, a path string and a call per field) cost most of its parse:
    more than decoding its JSON.
    Here every field of the usual level is checked inline with the very tests `Fields`
    applies: an id that is an int (not a bool) in the bigint range; a price and an amount
    that are finite JSON numbers written plainly in at most 60 characters; a timestamp
    written plainly, not negative, up to 9999-12-31, with at most six decimals (so whole
    microseconds, no rounding). A level that is anything else (a string price, an integral
    timestamp, a missing key, an error) goes through `book_level`, which gives the same
    record or raises the same `ParseError` as before.
    """
    append = orders.append
    seconds_seen: dict[str, _SecondFields] = {}
    for pos, level in enumerate(levels):
        if type(level) is dict:
            price = level.get("price")
            amount = level.get("amount")
            if (
                type(price) is Decimal
                and price.is_finite()
                and len(text := str(price)) <= _PLAINLY_IN_RANGE
                and "E" not in text
                and type(amount) is Decimal
                and amount.is_finite()
                and len(text := str(amount)) <= _PLAINLY_IN_RANGE
                and "E" not in text
            ):
                if grouped:
                    append(
                        SnapshotOrder(snapshot_id, side, pos, None, price, amount, None, taken_at)
                    )
                    continue
                order_id = level.get("id")
                order_ts = _plain_timestamp(level.get("timestamp"), seconds_seen)
                if (
                    type(order_id) is int
                    and _ID_MIN <= order_id < _ID_LIMIT
                    and order_ts is not None
                ):
                    append(
                        SnapshotOrder(
                            snapshot_id, side, pos, order_id, price, amount, order_ts, taken_at
                        )
                    )
                    continue
        f = Fields(level, f"orderbook.{side}[{pos}]")
        append(book_level(f, side, pos, grouped, snapshot_id, taken_at))


def _plain_timestamp(value: Any, seconds_seen: dict[str, _SecondFields]) -> datetime | None:
    """`to_timestamp(value)` for a plainly written JSON number with at most six decimals;
    None for anything else (which `to_timestamp` then reads, or refuses, itself).

    `seconds_seen` maps the whole seconds' text to the date and time of that second: orders
    placed in the same second (a market maker's ladder) share it. Building a `datetime` from
    its fields costs half of computing it from a `timedelta`, and a third of what
    `to_timestamp` spends.
    """
    if type(value) is not Decimal or not value.is_finite():
        return None
    text = str(value)
    if len(text) > _PLAINLY_IN_RANGE or "E" in text or text[0] == "-":
        return None
    whole, _, fraction = text.partition(".")
    if len(fraction) > 6:
        return None  # digits past the microsecond: `to_timestamp` rounds them
    fields = seconds_seen.get(whole)
    if fields is None:
        seconds = int(whole)
        if seconds >= _MAX_TIMESTAMP_SECONDS:
            return None  # the last second allowed, with a fraction, is out of range
        days, second = divmod(seconds, 86400)
        hour, second = divmod(second, 3600)
        minute, second = divmod(second, 60)
        calendar_day = date.fromordinal(_EPOCH_ORDINAL + days)
        fields = (calendar_day.year, calendar_day.month, calendar_day.day, hour, minute, second)
        seconds_seen[whole] = fields
    micros = int(fraction) * _FRACTION_TO_MICROS[len(fraction)] if fraction else 0
    year, month, day, hour, minute, second = fields
    return datetime(year, month, day, hour, minute, second, micros, UTC)


def _order(f: Fields, updated_at: datetime) -> AccountOrder:
    return AccountOrder(
        id=f.int("id"),
        pair=f.text("pair"),
        type=f.side("type"),
        status=f.int("status", bits=SMALL_INT_BITS),
        price=f.decimal("price"),
        amount=f.decimal("amount"),
        updated_at=updated_at,
    )


def parse_order(text: str | bytes, updated_at: datetime) -> AccountOrder:
    """`GET /order/<pk>/`; its `status` is a string there (`"1"`), read as the integer."""
    return _order(Fields(load_json(text), "order"), updated_at)


def parse_orders(text: str | bytes, updated_at: datetime) -> list[AccountOrder]:
    return _each(text, "orders", lambda f: _order(f, updated_at))


def parse_trades(text: str | bytes, received_at: datetime, pair: str | None = None) -> list[Trade]:
    """`GET /exchanges/`; with `pair`, every trade must belong to it (the request's filter)."""

    def build(f: Fields) -> Trade:
        trade_pair = f.text("pair") if f.has("pair") or pair is None else pair
        if pair is not None and trade_pair != pair:
            raise ParseError(f"{f.path('pair')}: {trade_pair!r} in an answer for {pair!r}")
        return Trade(
            pair=trade_pair,
            tid=f.int("id"),
            ts=f.timestamp("timestamp"),
            type=f.side("type"),
            price=f.decimal("price"),
            amount=f.decimal("amount"),
            received_at=received_at,
        )

    return _each(text, "exchanges", build)


def parse_candles(
    text: str | bytes, *, pair: str, resolution: str, updated_at: datetime
) -> list[Candle]:
    def build(f: Fields) -> Candle:
        return Candle(
            pair=pair,
            resolution=resolution,
            bucket=f.timestamp("time"),
            open=f.decimal("open"),
            high=f.decimal("high"),
            low=f.decimal("low"),
            close=f.decimal("close"),
            volume=f.decimal("volume"),
            updated_at=updated_at,
        )

    return _each(text, "chart", build)


# --- private endpoints ----------------------------------------------------------------------


def parse_wallets(text: str | bytes, observed_at: datetime) -> list[AccountWallet]:
    return _each(
        text,
        "wallets",
        lambda f: AccountWallet(
            currency=f.text("currency"),
            observed_at=observed_at,
            balance=f.decimal("balance"),
            reserve=f.decimal("reserve"),
        ),
    )


def parse_own_trades(text: str | bytes, received_at: datetime) -> list[AccountTrade]:
    return _each(
        text,
        "exchanges_own",
        lambda f: AccountTrade(
            id=f.int("id"),
            pair=f.text("pair"),
            type=f.side("type"),
            price=f.decimal("price"),
            amount=f.decimal("amount"),
            ts=f.timestamp("timestamp"),
            received_at=received_at,
        ),
    )


def parse_deposits(text: str | bytes, received_at: datetime) -> list[AccountDeposit]:
    return _each(
        text,
        "deposits",
        lambda f: AccountDeposit(
            id=f.int("id"),
            currency=f.text("currency"),
            amount=f.decimal("amount"),
            ts=f.timestamp("timestamp"),
            received_at=received_at,
        ),
    )


def parse_withdraws(text: str | bytes, updated_at: datetime) -> list[AccountWithdraw]:
    return _each(
        text,
        "withdraws",
        lambda f: AccountWithdraw(
            id=f.int("id"),
            currency=f.text("currency"),
            amount=f.decimal("amount"),
            status=f.int("status", bits=SMALL_INT_BITS),
            ts=f.timestamp("timestamp"),
            updated_at=updated_at,
        ),
    )


@quick_init
@dataclass(frozen=True, slots=True)
class NewOrder:
    """A new order as the exchange reports it (socket event or `POST /order/` answer).

    `amount` is what remains of order `oid` after matching; `fills` are the trades it made,
    each against resting order `o_id`, whose side the fill's `type` is.
    """

    oid: int
    ts: datetime
    type: Side
    price: Decimal
    amount: Decimal
    fills: tuple[BookFill, ...]


def new_order_from(f: Fields, *, pair: str, received_at: datetime) -> NewOrder:
    oid = f.int("oid")
    ts = f.timestamp("date")
    fills = []
    for i, item in enumerate(f.array("trades")):
        t = Fields(item, f"{f.path('trades')}[{i}]")
        fills.append(
            BookFill(
                pair=pair,
                tid=t.int("tid"),
                oid=oid,
                o_id=t.int("o_id"),
                type=t.side("type"),
                price=t.decimal("price"),
                amount=t.decimal("amount"),
                ts=ts,
                received_at=received_at,
            )
        )
    return NewOrder(
        oid=oid,
        ts=ts,
        type=f.side("type"),
        price=f.decimal("price"),
        amount=f.decimal("amount"),
        fills=tuple(fills),
    )


def parse_created_order(text: str | bytes, *, pair: str, received_at: datetime) -> NewOrder:
    return new_order_from(Fields(load_json(text), ""), pair=pair, received_at=received_at)


def parse_cancelled_order(text: str | bytes) -> int:
    """`POST /order-cancel/` answers `{"order": <id>}`: the id of the cancelled order."""
    return Fields(load_json(text), "").int("order")
