"""Every parser of exchange input with the strategy of its valid payloads, and the records a
parser's result stands for: what the parser fuzz tests and the storable test both run."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from recorder import records
from recorder.exchange import parse
from tests.fuzz import strategies as fz

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = uuid.UUID(int=1)


def records_of(result: Any) -> list[Any]:
    if isinstance(result, list):
        return result
    if isinstance(result, parse.OrderBook):
        assert {o.snapshot_id for o in result.orders} <= {result.snapshot.snapshot_id}
        return [result.snapshot, *result.orders]
    if isinstance(result, parse.NewOrder):
        return [
            records.BookEvent(
                "X_Y", result.oid, "new", result.ts, result.type, result.price, result.amount,
                None, NOW, SESSION,
            ),
            *result.fills,
        ]  # fmt: skip
    if isinstance(result, records.AccountOrder):
        return [result]
    if isinstance(result, int):
        return [records.AccountOrder(result, "X_Y", "buy", 1, Decimal(1), Decimal(1), NOW)]
    raise AssertionError(f"unexpected result {result!r}")


def _orderbook(grouped: bool) -> Callable[[str | bytes], Any]:
    def call(text: str | bytes) -> Any:
        book = parse.parse_orderbook(
            text, pair="BTC_USD", grouped=grouped, taken_at=NOW, received_at=NOW, reason="fuzz"
        )
        return book.orders  # the levels; the header is checked by `outcome` elsewhere

    return call


PARSERS: dict[str, tuple[Callable[[str | bytes], Any], st.SearchStrategy[fz.Valid]]] = {
    "currencies": (lambda t: parse.parse_currencies(t, NOW), fz.currencies()),
    "pairs": (lambda t: parse.parse_pairs(t, NOW), fz.pairs()),
    "orderbook_ungrouped": (_orderbook(False), fz.orderbook(grouped=False)),
    "orderbook_grouped": (_orderbook(True), fz.orderbook(grouped=True)),
    "exchanges": (lambda t: parse.parse_trades(t, NOW, "BTC_USD"), fz.trades_page()),
    "exchanges_any_pair": (lambda t: parse.parse_trades(t, NOW), fz.trades_page()),
    "chart": (
        lambda t: parse.parse_candles(t, pair="BTC_USD", resolution="1", updated_at=NOW),
        fz.candles(),
    ),
    "orders_own": (lambda t: parse.parse_orders(t, NOW), fz.account_orders()),
    "created_order": (
        lambda t: records_of(parse.parse_created_order(t, pair="BTC_USD", received_at=NOW)),
        fz.book_event().filter(lambda v: v.expected[0]["kind"] == "new"),
    ),
}
PARSERS |= {
    "wallets": (lambda t: parse.parse_wallets(t, NOW), fz.wallets()),
    "exchanges_own": (lambda t: parse.parse_own_trades(t, NOW), fz.own_trades()),
    "deposits": (lambda t: parse.parse_deposits(t, NOW), fz.deposits()),
    "withdraws": (lambda t: parse.parse_withdraws(t, NOW), fz.deposits(with_status=True)),
}
