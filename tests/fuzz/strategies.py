"""Hypothesis strategies for exchange input: valid payloads with the values they must parse to,
mutations of them, and plain garbage.

A payload is built as a small JSON tree whose numbers are `Lit`s (their exact JSON text, so
a test decides whether `935.23` arrives as a number, a string or `9.3523E+2`) and whose
objects are `Obj`s (key/value lists, so a key can appear twice, as JSON text allows).
`render` writes the tree as JSON text. A valid payload comes with what it must parse to;
`mutated` damages one: a field removed, retyped or duplicated, a number made a float, NaN,
huge or negative, garbage nested in, the text truncated or spliced with odd characters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from recorder.exchange.parse import MAX_ABS_EXPONENT, MAX_SIGNIFICANT_DIGITS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SIDES = ("buy", "sell")
CANDLE_TYPES = ("1", "5", "15", "30", "60", "240", "D")


def examples(ci_default: int, variable: str = "RECORDER_FUZZ_EXAMPLES") -> int:
    """How many examples a property runs: `ci_default` in CI, `variable` if set (long runs:
    `bench/fuzz.py`). The end-to-end properties read RECORDER_FUZZ_PIPELINE_EXAMPLES."""
    return int(os.environ.get(variable, ci_default))


# --- the JSON tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    """A JSON value given as its exact text (a number as `1e-08`, or anything at all)."""

    text: str


@dataclass
class Obj:
    items: list[tuple[str, Any]] = field(default_factory=list)

    def get(self, key: str) -> Any:
        return next(value for k, value in self.items if k == key)


def render(value: Any) -> str:
    if isinstance(value, Lit):
        return value.text
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{json.dumps(k)}: {render(v)}" for k, v in value.items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return json.dumps(value)


def obj(**items: Any) -> Obj:
    return Obj(list(items.items()))


# --- exact values and how they are written ----------------------------------------------------

decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: (
        len(d.as_tuple().digits) <= MAX_SIGNIFICANT_DIGITS
        and d.adjusted() <= MAX_ABS_EXPONENT
        and int(d.as_tuple().exponent) >= -MAX_ABS_EXPONENT
    )
)
prices = st.one_of(st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False), decimals)


@st.composite
def decimal_lit(
    draw: st.DrawFn, values: st.SearchStrategy[Decimal] = prices
) -> tuple[Lit, Decimal]:
    """A decimal and a JSON text of it: a number or a string, plain or with an exponent."""
    value = draw(values)
    spelled = draw(st.sampled_from([str(value), format(value, "f"), format(value, "E")]))
    as_string = draw(st.booleans())
    return Lit(json.dumps(spelled) if as_string else spelled), Decimal(spelled)


@st.composite
def int_lit(draw: st.DrawFn, max_value: int = 2**63 - 1) -> tuple[Lit, int]:
    value = draw(st.integers(0, max_value))
    return Lit(json.dumps(str(value)) if draw(st.booleans()) else str(value)), value


@st.composite
def time_lit(draw: st.DrawFn) -> tuple[Lit, datetime]:
    """Unix seconds with up to 6 decimals (exact to the microsecond), as number or string."""
    micros = draw(st.integers(0, 4_102_444_800 * 10**6))  # up to 2100
    places = draw(st.integers(0, 6))
    micros -= micros % 10 ** (6 - places)
    seconds = Decimal(micros).scaleb(-6).quantize(Decimal(1).scaleb(-places))
    text = str(seconds)
    return Lit(json.dumps(text) if draw(st.booleans()) else text), EPOCH + timedelta(
        microseconds=micros
    )


names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
pair_names = st.from_regex(r"[A-Z0-9]{2,5}_[A-Z0-9]{2,5}", fullmatch=True)


# --- valid payloads, each with what it must parse to -------------------------------------------


@dataclass
class Valid:
    tree: Any
    expected: list[dict[str, Any]]
    """Per record (in order), the fields it must have; None for an expectation-free kind."""

    @property
    def text(self) -> str:
        return render(self.tree)


@st.composite
def trade(draw: st.DrawFn, pair: str, tid: int | None = None) -> tuple[Obj, dict[str, Any]]:
    tid_lit, tid_value = draw(int_lit()) if tid is None else (Lit(str(tid)), tid)
    ts_lit, ts = draw(time_lit())
    price_lit, price = draw(decimal_lit())
    amount_lit, amount = draw(decimal_lit())
    side = draw(st.sampled_from(SIDES))
    tree = obj(id=tid_lit, pair=pair, type=side, price=price_lit, amount=amount_lit,
               timestamp=ts_lit)  # fmt: skip
    return tree, {"pair": pair, "tid": tid_value, "ts": ts, "type": side, "price": price,
                  "amount": amount}  # fmt: skip


@st.composite
def trades_page(draw: st.DrawFn, pair: str = "BTC_USD") -> Valid:
    items = draw(st.lists(trade(pair), max_size=4))
    return Valid([t for t, _ in items], [e for _, e in items])


@st.composite
def currencies(draw: st.DrawFn) -> Valid:
    rows = draw(st.lists(st.tuples(names, names | st.just("")), max_size=4))
    tree = [obj(sign=sign, short_name=short) for short, sign in rows]
    return Valid(tree, [{"short_name": short, "sign": sign} for short, sign in rows])


@st.composite
def pairs(draw: st.DrawFn) -> Valid:
    trees, expected = [], []
    for name in draw(st.lists(pair_names, max_size=3)):
        precision_lit, precision = draw(int_lit(2**31 - 1))
        low_lit, low = draw(decimal_lit())
        high_lit, high = draw(decimal_lit())
        c1, c2 = name.split("_")
        trees.append(obj(currency2=c2, maximum_order_size=high_lit, minimum_order_size=low_lit,
                         currency1=c1, name=name, price_precision=precision_lit))  # fmt: skip
        expected.append({"name": name, "currency1": c1, "currency2": c2,
                         "price_precision": precision, "minimum_order_size": low,
                         "maximum_order_size": high})  # fmt: skip
    return Valid(trees, expected)


@st.composite
def orderbook(draw: st.DrawFn, grouped: bool) -> Valid:
    book = Obj()
    expected = []
    for side in ("sell", "buy"):
        levels = []
        for pos in range(draw(st.integers(0, 3))):
            price_lit, price = draw(decimal_lit())
            amount_lit, amount = draw(decimal_lit())
            level = obj(price=price_lit, amount=amount_lit)
            row: dict[str, Any] = {"side": side, "pos": pos, "price": price, "amount": amount,
                                   "order_id": None, "order_ts": None}  # fmt: skip
            if not grouped:
                id_lit, order_id = draw(int_lit())
                ts_lit, ts = draw(time_lit())
                level.items += [("id", id_lit), ("timestamp", ts_lit)]
                row |= {"order_id": order_id, "order_ts": ts}
            levels.append(level)
            expected.append(row)
        book.items.append((side, levels))
    return Valid(book, expected)


@st.composite
def candles(draw: st.DrawFn) -> Valid:
    trees, expected = [], []
    for _ in range(draw(st.integers(0, 3))):
        time_l, bucket = draw(time_lit())
        values = [draw(decimal_lit()) for _ in range(5)]
        keys = ("open", "high", "low", "close", "volume")
        trees.append(
            Obj([("time", time_l), *((k, v[0]) for k, v in zip(keys, values, strict=True))])
        )
        expected.append({"bucket": bucket, **{k: v[1] for k, v in zip(keys, values, strict=True)}})
    return Valid(trees, expected)


@st.composite
def account_orders(draw: st.DrawFn) -> Valid:
    trees, expected = [], []
    for _ in range(draw(st.integers(0, 3))):
        id_lit, order_id = draw(int_lit())
        status_lit, status = draw(int_lit(2**31 - 1))
        price_lit, price = draw(decimal_lit())
        amount_lit, amount = draw(decimal_lit())
        side = draw(st.sampled_from(SIDES))
        pair = draw(pair_names)
        trees.append(obj(id=id_lit, pair=pair, type=side, status=status_lit, price=price_lit,
                         amount=amount_lit))  # fmt: skip
        expected.append({"id": order_id, "pair": pair, "type": side, "status": status,
                         "price": price, "amount": amount})  # fmt: skip
    return Valid(trees, expected)


@st.composite
def book_event(
    draw: st.DrawFn, oid: int | None = None, tids: st.SearchStrategy[int] | None = None
) -> Valid:
    """A socket.io book event (new order with fills, or cancel) and the rows it must give.

    Expected rows: the event first (`kind` new/cancel), then its fills.
    """
    oid_lit, oid_value = (Lit(str(oid)), oid) if oid is not None else draw(int_lit())
    date_lit, ts = draw(time_lit())
    price_lit, price = draw(decimal_lit())
    amount_lit, amount = draw(decimal_lit())
    side = draw(st.sampled_from(SIDES))
    base = [("success", True), ("date", date_lit), ("oid", oid_lit), ("type", side),
            ("price", price_lit), ("amount", amount_lit)]  # fmt: skip
    event = {"oid": oid_value, "ts": ts, "type": side, "price": price, "amount": amount}
    if draw(st.booleans()):
        cancel_lit, cancel_id = draw(int_lit())
        tree = Obj([*base, ("cancel_order_id", cancel_lit), ("pair", "BTC_USD"),
                    ("cancelled", True)])  # fmt: skip
        return Valid(tree, [event | {"kind": "cancel", "cancel_order_id": cancel_id}])
    fills, expected_fills = [], []
    for _ in range(draw(st.integers(0, 3))):
        if tids is not None:
            tid = draw(tids)
            tid_lit = Lit(str(tid))
        else:
            tid_lit, tid = draw(int_lit())
        o_lit, o_id = draw(int_lit())
        f_price_lit, f_price = draw(decimal_lit())
        f_amount_lit, f_amount = draw(decimal_lit())
        f_side = draw(st.sampled_from(SIDES))
        fills.append(obj(tid=tid_lit, type=f_side, price=f_price_lit, amount=f_amount_lit,
                         o_id=o_lit))  # fmt: skip
        expected_fills.append({"tid": tid, "oid": oid_value, "o_id": o_id, "type": f_side,
                               "price": f_price, "amount": f_amount, "ts": ts})  # fmt: skip
    tree = Obj([*base, ("trades", fills)])
    return Valid(tree, [event | {"kind": "new", "cancel_order_id": None}, *expected_fills])


# --- damage -------------------------------------------------------------------------------------

odd_strings = st.sampled_from(
    ["", " ", "NaN", "Infinity", "-Infinity", "1e999999", "-1e-999999", "0x10", "1_000",
     "١٢٣", "１２", "1.2.3", "buy ", "BUY", "\u0000", "\ud800", "\udfff", "é\u0301", "\u202e",
     "🚀", "null", "true", "[]", "{}", "9" * 80, "1" * 25, "-0", "+5", ".5", "5.", "1e-61"]
)  # fmt: skip
odd_number_texts = st.sampled_from(
    ["1.5e400", "-1.5e-400", "1e61", "1e-61", "-1", "-0.0", "0", "1E+60", "123456789" * 8,
     "9223372036854775808", "-9223372036854775809", "2147483648", "1" * 31, "1" * 61,
     "1.00000000000000000000000000000000000000000000000000000000001", "NaN", "Infinity",
     "-Infinity", "1e-7", "253402300799", "253402300798.9999999", "0.0000005", "1e2"]
)  # fmt: skip
edge_number_texts = st.sampled_from(
    ["9223372036854775807", "9223372036854775808", "-9223372036854775808",
     "-9223372036854775809", "2147483647", "2147483648", "-2147483648", "-2147483649",
     "1" + "0" * 29, "1" + "0" * 30, "1E+60", "1E+61", "1E-60", "1E-61", "0E-60", "0E+60",
     "-1", "-0", "0", "253402300798", "253402300799", "1" * 60, "0." + "1" * 60]
)  # fmt: skip
"""Values at the edges of what a column (bigint, integer, numeric, timestamptz) holds."""
garbage_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | odd_strings
    | st.text(max_size=8)
    | odd_number_texts.map(Lit),
    lambda children: (
        st.lists(children, max_size=3)
        | st.builds(
            Obj,
            st.lists(
                st.tuples(st.text(max_size=6) | st.sampled_from(["id", "price", "oid"]), children),
                max_size=3,
            ),
        )
    ),
    max_leaves=6,
)


def _paths(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path: a list index or an object's item index at each step."""
    found = [path]
    if isinstance(tree, list):
        for i, child in enumerate(tree):
            found += _paths(child, (*path, i))
    elif isinstance(tree, Obj):
        for i, (_, child) in enumerate(tree.items):
            found += _paths(child, (*path, i))
    return found


def _replace(tree: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, list):
        return [*tree[:head], _replace(tree[head], rest, new), *tree[head + 1 :]]
    items = list(tree.items)
    key, child = items[head]
    if rest == () and new is _REMOVE:
        del items[head]
    else:
        items[head] = (key, _replace(child, rest, new))
    return Obj(items)


_REMOVE = object()


def _node(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step] if isinstance(tree, list) else tree.items[step][1]
    return tree


@st.composite
def mutated_tree(draw: st.DrawFn, tree: Any) -> Any:
    """`tree` with one to three structural damages."""
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        node = _node(tree, path)
        parent_is_obj = bool(path) and isinstance(_node(tree, path[:-1]), Obj)
        how = draw(
            st.sampled_from(["edge", "edge", "retype", "number", "remove", "duplicate", "nest",
                             "wrap"])
        )  # fmt: skip
        if how == "edge":
            # One value at an edge, the rest valid: what must be refused or stored exactly.
            leaves = [p for p in paths if isinstance(_node(tree, p), Lit | str)] or [path]
            path = draw(st.sampled_from(leaves))
            edge = draw(edge_number_texts.map(Lit) | odd_strings)
            if isinstance(edge, Lit) and draw(st.booleans()):
                edge = Lit(json.dumps(edge.text))
            tree = _replace(tree, path, edge)
        elif how == "remove" and parent_is_obj:
            tree = _replace(tree, path, _REMOVE)
        elif how == "duplicate" and isinstance(node, Obj) and node.items:
            key, _ = draw(st.sampled_from(node.items))
            # JSON's last duplicate wins in Python: a valid value first, then garbage, or back
            extra = (key, draw(garbage_values))
            items = [*node.items, extra] if draw(st.booleans()) else [extra, *node.items]
            tree = _replace(tree, path, Obj(items))
        elif how == "number":
            tree = _replace(tree, path, Lit(draw(odd_number_texts)))
        elif how == "nest":
            tree = _replace(tree, path, draw(st.sampled_from([[node], obj(value=node), [[[]]]])))
        elif how == "wrap" and isinstance(node, Lit):
            # a number as a string, or a string as a number
            text = node.text
            tree = _replace(
                tree, path, Lit(text[1:-1] if text.startswith('"') else json.dumps(text))
            )
        else:
            tree = _replace(tree, path, draw(garbage_values))
    return tree


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """Text-level damage: truncated, a character spliced in, or bytes dropped."""
    how = draw(st.sampled_from(["truncate", "splice", "drop", "prefix"]))
    at = draw(st.integers(0, len(text)))
    if how == "truncate":
        return text[:at]
    if how == "splice":
        odd = draw(st.sampled_from(["\x00", "\ud800", "\\", '"', "}", "]", ",", "NaN", "\ufeff",
                                    "\\u0000", "\\ud800", "\n", "𝟘", "\x7f"]))  # fmt: skip
        return text[:at] + odd + text[at:]
    if how == "drop":
        return text[:at] + text[at + draw(st.integers(1, 5)) :]
    return draw(st.sampled_from(["<html>", "\ufeff", " ", "null", "1"])) + text


@st.composite
def damaged(draw: st.DrawFn, valid: st.SearchStrategy[Valid]) -> str:
    """The JSON text of a valid payload after structural and/or textual damage."""
    payload = draw(valid)
    text = render(draw(mutated_tree(payload.tree))) if draw(st.booleans()) else payload.text
    if draw(st.booleans()) or text == payload.text:
        text = draw(mutated_text(text))
    return text


json_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
).map(lambda value: json.dumps(value))


def any_input(valid: st.SearchStrategy[Valid]) -> st.SearchStrategy[str | bytes]:
    """Everything a parser may be handed: damaged valid payloads (mostly), any JSON, any bytes."""
    return st.one_of(
        damaged(valid), damaged(valid), damaged(valid), json_anything, st.binary(max_size=64),
        st.text(max_size=64),
    )  # fmt: skip


@st.composite
def wallets(draw: st.DrawFn) -> Valid:
    trees, expected = [], []
    for _ in range(draw(st.integers(0, 3))):
        currency = draw(names)
        balance_lit, balance = draw(decimal_lit())
        reserve_lit, reserve = draw(decimal_lit())
        trees.append(obj(currency=currency, balance=balance_lit, reserve=reserve_lit))
        expected.append({"currency": currency, "balance": balance, "reserve": reserve})
    return Valid(trees, expected)


@st.composite
def deposits(draw: st.DrawFn, with_status: bool = False) -> Valid:
    """Deposits, or withdrawals (`with_status`): the same shape plus a status."""
    trees, expected = [], []
    for _ in range(draw(st.integers(0, 3))):
        id_lit, item_id = draw(int_lit())
        currency = draw(names)
        amount_lit, amount = draw(decimal_lit())
        ts_lit, ts = draw(time_lit())
        tree = obj(id=id_lit, currency=currency, amount=amount_lit, timestamp=ts_lit)
        row = {"id": item_id, "currency": currency, "amount": amount, "ts": ts}
        if with_status:
            status_lit, status = draw(int_lit(2**31 - 1))
            tree.items.append(("status", status_lit))
            row["status"] = status
        trees.append(tree)
        expected.append(row)
    return Valid(trees, expected)


@st.composite
def own_trades(draw: st.DrawFn) -> Valid:
    page = draw(trades_page(draw(pair_names)))
    renamed = [{("id" if k == "tid" else k): v for k, v in e.items()} for e in page.expected]
    return Valid(page.tree, renamed)
