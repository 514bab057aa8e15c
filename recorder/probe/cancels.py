"""Which id a cancel event names the cancelled order by, decided by the data. Pure.

A cancel carries both `oid` and `cancel_order_id`, and the docs do not say which one is the
order that left the book (docs/operations.md, "First run against a live exchange"). Seeded
with an ungrouped snapshot and kept current with the events after it, the book answers it:
the id that is resting when a cancel arrives is the cancelled order. A cancel whose two ids
both rest, or neither, says nothing; only cancels with exactly one of them resting count as
evidence for that reading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from recorder.book import Book
from recorder.exchange.classify import BookUpdate
from recorder.exchange.parse import OrderBook
from recorder.probe.report import Finding
from recorder.records import BookEvent

Reading = Literal["oid", "cancel_order_id"]


@dataclass
class CancelTally:
    """Cancels counted by which of their ids was resting when they arrived."""

    oid: int = 0
    """Only `oid` was resting."""
    cancel_order_id: int = 0
    """Only `cancel_order_id` was resting."""
    both: int = 0
    neither: int = 0

    @property
    def established(self) -> Reading | None:
        """The reading the data supports: seen alone at least once, the other never."""
        if self.oid and not self.cancel_order_id:
            return "oid"
        if self.cancel_order_id and not self.oid:
            return "cancel_order_id"
        return None

    def count(self, book: Book, cancel: BookEvent) -> list[int]:
        """Count `cancel`; the ids it takes off `book`, as far as the data tells."""
        oid_rests = cancel.oid in book
        other = cancel.cancel_order_id
        other_rests = other is not None and other in book
        if oid_rests and other_rests:
            assert other is not None
            self.both += 1
            established = self.established
            if established is not None:
                return [cancel.oid if established == "oid" else other]
            # Undecided, both leave: a wrong order left behind could later look like
            # evidence, while a right one taken off too only makes later cancels say nothing.
            return [cancel.oid, other]
        if oid_rests:
            self.oid += 1
            return [cancel.oid]
        if other_rests:
            assert other is not None
            self.cancel_order_id += 1
            return [other]
        self.neither += 1
        return []


@dataclass(frozen=True, slots=True)
class Seed:
    """An ungrouped snapshot, taken while stream session `session_id` was up."""

    book: OrderBook
    session_id: uuid.UUID


def cancel_reading(seeds: Mapping[str, Seed], updates: Iterable[BookUpdate]) -> CancelTally:
    """Tally the cancels among `updates` (in arrival order) against the seeded books.

    Only events of the seed's session received after its snapshot answer count: an earlier
    one may or may not be in the snapshot already.
    """
    books = {pair: Book.from_snapshot(seed.book.orders) for pair, seed in seeds.items()}
    tally = CancelTally()
    for update in updates:
        event = update.event
        seed = seeds.get(event.pair)
        if seed is None or event.session_id != seed.session_id:
            continue
        if event.received_at <= seed.book.snapshot.received_at:
            continue
        book = books[event.pair]
        if event.kind == "cancel":
            for order_id in tally.count(book, event):
                book.apply(replace(event, oid=order_id))
        else:
            book.apply(event, update.fills)
    return tally


def cancel_reading_finding(tally: CancelTally, seeded_pairs: int) -> Finding:
    key = "book.cancel_reading"
    details: dict[str, Any] = {
        "reading": tally.established,
        "oid_alone_resting": tally.oid,
        "cancel_order_id_alone_resting": tally.cancel_order_id,
        "both_resting": tally.both,
        "neither_resting": tally.neither,
        "seeded_pairs": seeded_pairs,
    }
    counts = (
        f"oid alone resting in {tally.oid}, cancel_order_id alone in {tally.cancel_order_id}, "
        f"both in {tally.both}, neither in {tally.neither}"
    )
    if seeded_pairs == 0:
        text = "no ungrouped snapshot taken while connected: nothing to check cancels against"
        return Finding(key, "warn", text, details)
    established = tally.established
    if established is not None:
        return Finding(key, "ok", f"{established} names the cancelled order ({counts})", details)
    if tally.oid and tally.cancel_order_id:
        return Finding(key, "warn", f"the data supports both readings ({counts})", details)
    text = f"undetermined: no cancel had exactly one id resting ({counts}); listen longer"
    return Finding(key, "warn", text, details)
