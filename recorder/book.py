"""The L3 order book rebuilt from a snapshot and the socket events after it.

Pure: no I/O, no clock. The recorder loads an ungrouped REST snapshot (one row per resting
order, with its id) into a `Book`, applies every book event that followed it, and compares
the result with the next snapshot; a difference is drift (`recorder_book_drift_total`). The
simulator's tests use the same code to prove that its stream is complete.

How events change the book (DESIGN §2):

- new order `oid`: each of its fills reduces resting order `o_id` by the fill's amount (the
  order leaves the book at zero); then, when the event's remaining `amount` is > 0, order
  `oid` rests at the event's price on the event's side;
- cancel: order `oid` leaves the book.

Whatever does not fit (a fill of an order the book does not hold, a fill larger than what
rests, a cancel of an unknown order) is applied as far as it can be and reported in the
returned list of anomalies, never raised: a missed event must not stop the recorder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from recorder.records import BookEvent, BookFill, Side


class SnapshotLevel(Protocol):
    """What a snapshot row must offer (`records.SnapshotOrder` does)."""

    @property
    def side(self) -> Side: ...
    @property
    def order_id(self) -> int | None: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def order_ts(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class RestingOrder:
    order_id: int
    side: Side
    price: Decimal
    amount: Decimal
    ts: datetime | None = None


class GroupedSnapshotError(ValueError):
    """A grouped snapshot has no order ids; only an ungrouped one can seed an L3 book."""


class Book:
    """Resting orders by id. Order of iteration: best price first, then order id."""

    def __init__(self, orders: Iterable[RestingOrder] = ()) -> None:
        self._orders: dict[int, RestingOrder] = {o.order_id: o for o in orders}

    @classmethod
    def from_snapshot(cls, levels: Iterable[SnapshotLevel]) -> Book:
        orders = []
        for level in levels:
            if level.order_id is None:
                raise GroupedSnapshotError("snapshot level without an order id")
            orders.append(
                RestingOrder(level.order_id, level.side, level.price, level.amount, level.order_ts)
            )
        return cls(orders)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._orders

    def get(self, order_id: int) -> RestingOrder | None:
        return self._orders.get(order_id)

    def side(self, side: Side) -> list[RestingOrder]:
        """One side's orders, best price first; ties by order id (time priority)."""
        orders = [o for o in self._orders.values() if o.side == side]
        if side == "buy":
            orders.sort(key=lambda o: (-o.price, o.order_id))
        else:
            orders.sort(key=lambda o: (o.price, o.order_id))
        return orders

    def apply(self, event: BookEvent, fills: Sequence[BookFill] = ()) -> list[str]:
        """Apply one event (with its fills, for a new order); return the anomalies met."""
        if event.kind == "cancel":
            return self._apply_cancel(event)
        return self._apply_new(event, fills)

    def _apply_new(self, event: BookEvent, fills: Sequence[BookFill]) -> list[str]:
        anomalies = []
        for fill in fills:
            anomalies.extend(self._apply_fill(fill))
        if event.amount > 0:
            if event.oid in self._orders:
                anomalies.append(f"new order {event.oid} is already on the book")
            self._orders[event.oid] = RestingOrder(
                event.oid, event.type, event.price, event.amount, event.ts
            )
        return anomalies

    def _apply_fill(self, fill: BookFill) -> list[str]:
        resting = self._orders.get(fill.o_id)
        if resting is None:
            return [f"fill {fill.tid} of order {fill.o_id}, which is not on the book"]
        left = resting.amount - fill.amount
        anomalies = []
        if left < 0:
            anomalies.append(
                f"fill {fill.tid} of {fill.amount} exceeds the {resting.amount} "
                f"resting in order {fill.o_id}"
            )
        if left <= 0:
            del self._orders[fill.o_id]
        else:
            self._orders[fill.o_id] = RestingOrder(
                resting.order_id, resting.side, resting.price, left, resting.ts
            )
        return anomalies

    def _apply_cancel(self, event: BookEvent) -> list[str]:
        if self._orders.pop(event.oid, None) is None:
            return [f"cancel of order {event.oid}, which is not on the book"]
        return []

    def differences(self, other: Book) -> list[str]:
        """How `other` differs from this book (order ids, sides, prices, amounts); [] if equal.

        Timestamps are not compared: snapshots and events state them with different precision.
        """
        lines = []
        for order_id in sorted(self._orders.keys() | other._orders.keys()):
            mine, theirs = self._orders.get(order_id), other._orders.get(order_id)
            if theirs is None:
                lines.append(f"order {order_id} only in this book")
            elif mine is None:
                lines.append(f"order {order_id} only in the other book")
            elif (mine.side, mine.price, mine.amount) != (theirs.side, theirs.price, theirs.amount):
                lines.append(
                    f"order {order_id}: {mine.side} {mine.amount}@{mine.price} here, "
                    f"{theirs.side} {theirs.amount}@{theirs.price} there"
                )
        return lines
