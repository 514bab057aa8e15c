"""A book's history as records, for the book_at tests: snapshots, new orders with their
fills, cancels, at seconds after T0, written through the real writer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from recorder import records as r
from recorder.storage.writer import Writer
from tests.storage.records_factory import SESSION, T0

PAIR = "BTC_USD"
D = Decimal


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def snapshot(
    taken_s: float,
    orders: list[tuple[str, int, str, str]],
    *,
    grouped: bool = False,
    pair: str = PAIR,
    events_through_s: float | None = None,
) -> list[r.Record]:
    snapshot_id = uuid.uuid4()
    header = r.BookSnapshot(
        snapshot_id=snapshot_id,
        pair=pair,
        taken_at=at(taken_s),
        received_at=at(taken_s + 0.05),
        grouped=grouped,
        reason="interval",
        events_through=None if events_through_s is None else at(events_through_s),
    )
    levels: list[r.Record] = []
    for side in ("sell", "buy"):
        for pos, (_, oid, price, amount) in enumerate(o for o in orders if o[0] == side):
            levels.append(
                r.SnapshotOrder(
                    snapshot_id=snapshot_id,
                    side=side,
                    pos=pos,
                    order_id=None if grouped else oid,
                    price=D(price),
                    amount=D(amount),
                    order_ts=None if grouped else T0,
                    taken_at=header.taken_at,
                )
            )
    return [header, *levels]


def new(
    seconds: float,
    oid: int,
    side: str,
    price: str,
    rest: str,
    fills: list[tuple[int, int, str, str]] = (),
    *,
    pair: str = PAIR,
) -> list[r.Record]:
    """A new-order event: `rest` is what remains of it; fills are (tid, o_id, price, amount)."""
    event = r.BookEvent(
        pair=pair,
        oid=oid,
        kind="new",
        ts=at(seconds),
        type=side,
        price=D(price),
        amount=D(rest),
        cancel_order_id=None,
        received_at=at(seconds),
        session_id=SESSION,
    )
    resting_side = "buy" if side == "sell" else "sell"
    return [event] + [
        r.BookFill(
            pair=pair,
            tid=tid,
            oid=oid,
            o_id=o_id,
            type=resting_side,
            price=D(fill_price),
            amount=D(amount),
            ts=at(seconds),
            received_at=at(seconds),
        )
        for tid, o_id, fill_price, amount in fills
    ]


def cancel(
    seconds: float,
    oid: int,
    side: str,
    price: str,
    amount: str,
    *,
    cancel_order_id: int | None = None,
    pair: str = PAIR,
) -> list[r.Record]:
    """A cancel event; its `cancel_order_id` names no order unless given."""
    return [
        r.BookEvent(
            pair=pair,
            oid=oid,
            kind="cancel",
            ts=at(seconds),
            type=side,
            price=D(price),
            amount=D(amount),
            cancel_order_id=9000 + oid if cancel_order_id is None else cancel_order_id,
            received_at=at(seconds),
            session_id=SESSION,
        )
    ]


def write(dsn: str, records: list[r.Record], spool: Path) -> None:
    async def go() -> None:
        async with Writer(dsn, spool) as writer:
            writer.put_many(records)
            assert await writer.flush(30)

    asyncio.run(go())
