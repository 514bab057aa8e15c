"""Which id a cancel event names the cancelled order by, as the data shows it. Pure.

A cancel carries both `oid` and `cancel_order_id`, and the docs do not say which one is the
order that left the book (docs/research.md, "Which id a cancel names"). The probe seeds a
book per pair with an ungrouped snapshot and applies the events after it; `recorder.book`
decides each cancel exactly as the recorder will, and its `CancelReading` tally is the
finding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from recorder.book import Book, CancelReading
from recorder.exchange.classify import BookUpdate
from recorder.exchange.parse import OrderBook
from recorder.probe.report import Finding


@dataclass(frozen=True, slots=True)
class Seed:
    """An ungrouped snapshot, taken while stream session `session_id` was up."""

    book: OrderBook
    session_id: uuid.UUID


def cancel_reading(seeds: Mapping[str, Seed], updates: Iterable[BookUpdate]) -> CancelReading:
    """Tally the cancels among `updates` (in arrival order) against the seeded books.

    Only events of the seed's session received after its snapshot answer count: an earlier
    one may or may not be in the snapshot already. One tally for every pair: the exchange
    names its cancels one way.
    """
    tally = CancelReading()
    books = {
        pair: Book.from_snapshot(seed.book.orders, cancel_reading=tally)
        for pair, seed in seeds.items()
    }
    for update in updates:
        event = update.event
        seed = seeds.get(event.pair)
        if seed is None or event.session_id != seed.session_id:
            continue
        if event.received_at <= seed.book.snapshot.received_at:
            continue
        books[event.pair].apply(event, update.fills)
    return tally


def cancel_reading_finding(tally: CancelReading, seeded_pairs: int) -> Finding:
    key = "book.cancel_reading"
    details: dict[str, Any] = {
        "reading": tally.established,
        "oid_alone_resting": tally.oid,
        "cancel_order_id_alone_resting": tally.cancel_order_id,
        "both_resting": tally.ambiguous,
        "neither_resting": tally.unknown,
        "seeded_pairs": seeded_pairs,
    }
    counts = (
        f"oid alone resting in {tally.oid}, cancel_order_id alone in {tally.cancel_order_id}, "
        f"both in {tally.ambiguous}, neither (or not where the cancel says) in {tally.unknown}"
    )
    if seeded_pairs == 0:
        text = "no ungrouped snapshot taken while connected: nothing to check cancels against"
        return Finding(key, "warn", text, details)
    if tally.oid and tally.cancel_order_id:
        # The recorder goes with the majority (`CancelReading.established`), but a clean
        # stream never contradicts itself: look at the counts before trusting either.
        text = f"the data supports both readings, mostly {tally.established} ({counts})"
        return Finding(key, "warn", text, details)
    established = tally.established
    if established is not None:
        return Finding(key, "ok", f"{established} names the cancelled order ({counts})", details)
    text = f"undetermined: no cancel had exactly one id resting ({counts}); listen longer"
    return Finding(key, "warn", text, details)
