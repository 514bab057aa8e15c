"""Records of every kind for the storage tests, with values that are easy to get wrong."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from recorder import records as r

T0 = datetime(2024, 1, 30, 12, 0, 0, 123456, tzinfo=UTC)
SESSION = uuid.UUID("00000000-0000-4000-8000-000000000001")

# The extremes a decimal column must keep: the smallest step, a large value with trailing zeros
# (its scale must survive), and 30 significant digits.
EXTREME_DECIMALS = [
    Decimal("1e-08"),
    Decimal("0.00000001"),
    Decimal("100000000.00000000"),
    Decimal("123456789012345.678901234567890"),
    Decimal("936.00"),
    Decimal("935.23"),
]


def trade(
    tid: int, *, pair: str = "BTC_USD", price: str = "935.23", amount: str = "0.1"
) -> r.Trade:
    return r.Trade(
        pair=pair,
        tid=tid,
        ts=T0 + timedelta(seconds=tid),
        type="buy" if tid % 2 else "sell",
        price=Decimal(price),
        amount=Decimal(amount),
        received_at=T0 + timedelta(seconds=tid, milliseconds=5),
    )


def one_of_each() -> list[r.Record]:
    """One record of every type the writer takes (all 15 tables)."""
    snapshot = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
    return [
        r.Currency(short_name="BTC", sign="Ƀ", seen_at=T0),
        r.Pair(
            name="BTC_USD",
            currency1="BTC",
            currency2="USD",
            price_precision=3,
            minimum_order_size=Decimal("0.00000001"),
            maximum_order_size=Decimal("100000000.00000000"),
            seen_at=T0,
        ),
        trade(1),
        r.BookEvent(
            pair="BTC_USD", oid=15234, kind="new", ts=T0, type="sell", price=Decimal("935.23"),
            amount=Decimal("0.0"), cancel_order_id=None, received_at=T0, session_id=SESSION,
        ),
        r.BookEvent(
            pair="BTC_USD", oid=15235, kind="cancel", ts=T0, type="sell",
            price=Decimal("935.23"), amount=Decimal("0.0123"), cancel_order_id=4535,
            received_at=T0, session_id=SESSION,
        ),
        r.BookFill(
            pair="BTC_USD", tid=14876, oid=15234, o_id=15201, type="buy",
            price=Decimal("936.00"), amount=Decimal("0.1"), ts=T0, received_at=T0,
        ),
        r.BookSnapshot(
            snapshot_id=snapshot, pair="BTC_USD", taken_at=T0, received_at=T0,
            grouped=False, reason="connect",
        ),
        r.SnapshotOrder(
            snapshot_id=snapshot, side="sell", pos=0, order_id=44667,
            price=Decimal("911.519"), amount=Decimal("0.000446"), order_ts=T0, taken_at=T0,
        ),
        r.Candle(
            pair="BTC_USD", resolution="60", bucket=T0.replace(minute=0, second=0, microsecond=0),
            open=Decimal("910.424"), high=Decimal("912.236"), low=Decimal("910.086"),
            close=Decimal("911.915"), volume=Decimal("0.262929"), updated_at=T0,
        ),
        r.StreamSession(session_id=SESSION, connected_at=T0, disconnected_at=None, reason=None),
        r.RawMessage(
            id=uuid.uuid4(), received_at=T0, source="socket", event="book_BTC_USD",
            payload='{"success": tru', error="truncated JSON",
        ),
        r.AccountWallet(
            currency="BTC", observed_at=T0, balance=Decimal("0E-8"), reserve=Decimal("0"),
        ),
        r.AccountOrder(
            id=11249, pair="ETH_USD", type="buy", status=1, price=Decimal("0.00113000"),
            amount=Decimal("0.500000000"), updated_at=T0,
        ),
        r.AccountTrade(
            id=6049, pair="BTC_USD", type="sell", price=Decimal("870.69"),
            amount=Decimal("0.0001"), ts=T0, received_at=T0,
        ),
        r.AccountDeposit(
            id=317, currency="BTC", amount=Decimal("530.00000000"), ts=T0, received_at=T0,
        ),
        r.AccountWithdraw(
            id=403, currency="BTC", amount=Decimal("0.53"), status=20, ts=T0, updated_at=T0,
        ),
    ]  # fmt: skip
