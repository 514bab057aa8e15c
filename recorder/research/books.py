"""The order book at many instants, as Python objects: `books_at` over SQL `book_at_many`.

For a research loop over a day: one `Book` per instant, each exactly `book_at(pair, at)`
(docs/research.md, "The order book at many instants"), prices and amounts exact Decimals.
The instants go to the database in batches, so memory holds one batch of books whatever
the number of instants; each batch is one `book_at_many` call, which reads a snapshot
window's cancels once for all the batch's instants in it and keeps a closed window's
reading for later calls (migrations/0016).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

BATCH_INSTANTS = 100


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Book:
    """The L3 book at `at`: each side best price first, then the older order first."""

    at: datetime
    bids: tuple[Order, ...]
    asks: tuple[Order, ...]

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None

    def levels(self, side: str) -> list[tuple[Decimal, Decimal]]:
        """The L2 view of one side ('buy' or 'sell'): (price, total amount), best first."""
        orders = {"buy": self.bids, "sell": self.asks}[side]
        out: list[tuple[Decimal, Decimal]] = []
        for order in orders:
            if out and out[-1][0] == order.price:
                out[-1] = (order.price, out[-1][1] + order.amount)
            else:
                out.append((order.price, order.amount))
        return out


def books_at(
    conn: psycopg.Connection[Any],
    pair: str,
    instants: Iterable[datetime],
    *,
    batch: int = BATCH_INSTANTS,
) -> Iterator[Book]:
    """The book of `pair` at each distinct instant, in time order.

    An instant before the pair's first ungrouped snapshot gives an empty book, as `book_at`
    gives no rows there. Instants must be timezone-aware (they are compared as timestamptz).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    ordered = sorted(set(instants))
    naive = [instant for instant in ordered if instant.utcoffset() is None]
    if naive:
        raise ValueError(f"instants must carry a time zone: {naive[0].isoformat()} does not")
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        sides: dict[datetime, dict[str, list[Order]]] = {i: {"buy": [], "sell": []} for i in chunk}
        rows = conn.execute(
            "SELECT at, side, order_id, price, amount FROM book_at_many(%s, %s)", (pair, chunk)
        )
        for at, side, order_id, price, amount in rows:
            sides[at][side].append(Order(order_id, price, amount))
        for at in chunk:
            yield Book(at, tuple(sides[at]["buy"]), tuple(sides[at]["sell"]))
