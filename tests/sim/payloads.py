"""Test helper: a socket.io book payload (as the docs shape it) read into records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from recorder.records import BookEvent, BookFill, SnapshotOrder

SESSION = uuid.uuid4()


def ts(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def records(pair: str, payload: dict[str, Any]) -> tuple[BookEvent, list[BookFill]]:
    now = datetime.now(UTC)
    cancelled = payload.get("cancelled") is True
    event = BookEvent(
        pair=pair,
        oid=int(payload["oid"]),
        kind="cancel" if cancelled else "new",
        ts=ts(payload["date"]),
        type=payload["type"],
        price=Decimal(str(payload["price"])),
        amount=Decimal(str(payload["amount"])),
        cancel_order_id=payload.get("cancel_order_id"),
        received_at=now,
        session_id=SESSION,
    )
    fills = [
        BookFill(
            pair=pair,
            tid=int(t["tid"]),
            oid=event.oid,
            o_id=int(t["o_id"]),
            type=t["type"],
            price=Decimal(str(t["price"])),
            amount=Decimal(str(t["amount"])),
            ts=event.ts,
            received_at=now,
        )
        for t in payload.get("trades", [])
    ]
    return event, fills


def snapshot(body: dict[str, Any]) -> list[SnapshotOrder]:
    """The levels of an ungrouped `/orderbook/` answer."""
    snapshot_id = uuid.uuid4()
    return [
        SnapshotOrder(
            snapshot_id=snapshot_id,
            side=side,
            pos=pos,
            order_id=int(level["id"]),
            price=Decimal(str(level["price"])),
            amount=Decimal(str(level["amount"])),
            order_ts=ts(level["timestamp"]),
            taken_at=datetime.now(UTC),
        )
        for side in ("sell", "buy")
        for pos, level in enumerate(body[side])
    ]
