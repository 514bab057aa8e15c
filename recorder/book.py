"""The L3 order book rebuilt from a snapshot and the socket events after it.

Pure: no I/O, no clock. The recorder loads an ungrouped REST snapshot (one row per resting
order, with its id) into a `Book`, applies every book event that followed it, and compares
the result with the next snapshot where that snapshot cuts the stream (`snapshot_cut`); a
difference there is drift (`recorder_book_drift_total`). The simulator's tests use the same
comparison (`Book.differences`) to prove that its stream is complete.

How events change the book:

- new order `oid`: each of its fills reduces resting order `o_id` by the fill's amount (the
  order leaves the book at zero); then, when the event's remaining `amount` is > 0, order
  `oid` rests at the event's price on the event's side;
- cancel: the order it names leaves the book. A cancel carries two ids, `oid` and
  `cancel_order_id`, and the exchange's docs do not say which one names the cancelled order
  (docs/research.md, "Which id a cancel names"). So the data decides, cancel by cancel:
  the cancel removes whichever of the two names a resting order. When only one does, that
  is evidence for its reading, counted in a `CancelReading`, provided the order is at the
  side and price the cancel states; an order elsewhere is not the one cancelled and stays
  (a snapshot can already lack an order whose cancel the stream has yet to deliver, and
  the cancel's other id may name some other resting order). When both do, the reading
  with more evidence so far decides; with none yet, the order that fits what the cancel
  states (its side and price, then its remaining amount); failing that, `cancel_order_id`,
  which the docs' own sample argues for (a cancel dated before a new order, yet with a
  higher `oid`). When neither does, nothing is removed.

Whatever does not fit (a fill of an order the book does not hold, a fill larger than what
rests, a cancel of an unknown order) is applied as far as it can be and reported in the
returned list of anomalies, never raised: a missed event must not stop the recorder.

Finding out which reading a stream supports takes three lines (what `recorder probe` does):

    book = Book.from_snapshot(snapshot_orders)       # an ungrouped REST snapshot
    for update in updates: book.apply(update.event, update.fills)
    book.cancel_reading.established                   # "oid", "cancel_order_id" or None
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from recorder.records import BookEvent, BookFill, Side

Reading = Literal["oid", "cancel_order_id"]
"""Which field of a cancel event names the cancelled order."""
READINGS: tuple[Reading, ...] = ("oid", "cancel_order_id")
_OTHER: dict[Reading, Reading] = {"oid": "cancel_order_id", "cancel_order_id": "oid"}

CancelOutcome = Literal["oid", "cancel_order_id", "ambiguous", "unknown"]
"""How a cancel met the book: only its `oid` named a resting order (at the cancel's side and
price), only its `cancel_order_id` did, both named one (`ambiguous`), or none was removed
(`unknown`: neither named a resting order, or the only one named is elsewhere)."""

DEFAULT_READING: Reading = "cancel_order_id"
"""Decides an ambiguous cancel when the data has established nothing yet and the two orders
fit what the cancel states equally: the docs' own sample argues for `cancel_order_id` (a
cancel dated before a new order, yet with a higher `oid` than that order)."""


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


@dataclass
class CancelReading:
    """Which id of a cancel event names the cancelled order, as the data has shown it so far.

    Counts the cancels applied to a book by outcome. `oid` and `cancel_order_id` are the
    evidence: cancels where only that id named a resting order (at the cancel's side and
    price). One tally can be shared by every book of a pair over time (the recorder keeps
    one per pair for its whole run), so the evidence outlives resyncs.
    """

    oid: int = 0
    cancel_order_id: int = 0
    ambiguous: int = 0
    """Both ids named a resting order (the same one, or two); the reading decided."""
    unknown: int = 0
    """No order removed: neither id named a resting order, or the only one is elsewhere."""

    @property
    def established(self) -> Reading | None:
        """The reading with more evidence; None while neither has more (no evidence yet)."""
        if self.oid > self.cancel_order_id:
            return "oid"
        if self.cancel_order_id > self.oid:
            return "cancel_order_id"
        return None

    def count(self, outcome: CancelOutcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


@dataclass(frozen=True, slots=True)
class CancelApplied:
    """What one cancel did to the book."""

    outcome: CancelOutcome
    removed: RestingOrder | None
    """The order that left the book; None when none did (`unknown`)."""
    reading: Reading | None
    """The reading that named `removed` (for an ambiguous cancel: the one that decided)."""
    anomalies: list[str]


class GroupedSnapshotError(ValueError):
    """A grouped snapshot has no order ids; only an ungrouped one can seed an L3 book."""


class Book:
    """Resting orders by id. Order of iteration: best price first, then order id.

    `cancel_reading` is the tally this book decides ambiguous cancels with and counts its
    cancels into; pass one to share it between books (a fresh one otherwise).
    """

    def __init__(
        self, orders: Iterable[RestingOrder] = (), *, cancel_reading: CancelReading | None = None
    ) -> None:
        self._orders: dict[int, RestingOrder] = {o.order_id: o for o in orders}
        self.cancel_reading = cancel_reading if cancel_reading is not None else CancelReading()

    @classmethod
    def from_snapshot(
        cls, levels: Iterable[SnapshotLevel], *, cancel_reading: CancelReading | None = None
    ) -> Book:
        orders = []
        for level in levels:
            if level.order_id is None:
                raise GroupedSnapshotError("snapshot level without an order id")
            orders.append(
                RestingOrder(level.order_id, level.side, level.price, level.amount, level.order_ts)
            )
        return cls(orders, cancel_reading=cancel_reading)

    def __len__(self) -> int:
        return len(self._orders)

    def copy(self) -> Book:
        """The same orders, sharing this book's `cancel_reading`."""
        return Book(self._orders.values(), cancel_reading=self.cancel_reading)

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

    def apply(
        self, event: BookEvent, fills: Sequence[BookFill] = (), *, count: bool = True
    ) -> list[str]:
        """Apply one event (with its fills, for a new order); return the anomalies met.

        `count`: see `cancel`.
        """
        if event.kind == "cancel":
            return self.cancel(event, count=count).anomalies
        return self._apply_new(event, fills)

    def cancel(self, event: BookEvent, *, count: bool = True) -> CancelApplied:
        """Apply a cancel event: remove the resting order it names (see the module's doc).

        `count=False` decides with `cancel_reading` without adding to it: for a second book
        fed the same events as the one that counts.
        """
        named: dict[Reading, int | None] = {
            "oid": event.oid,
            "cancel_order_id": event.cancel_order_id,
        }
        resting: dict[Reading, RestingOrder] = {
            name: self._orders[order_id]
            for name, order_id in named.items()
            if order_id is not None and order_id in self._orders
        }
        outcome: CancelOutcome
        reading: Reading | None
        if not resting:
            outcome, reading = "unknown", None
        elif len(resting) == 1:
            ((only, order),) = resting.items()
            # An order elsewhere than the cancel says is not the one it removed (module doc).
            outcome, reading = (only, only) if _fit(event, order)[0] else ("unknown", None)
        else:
            outcome = "ambiguous"
            reading = (
                self.cancel_reading.established
                or _better_fit(event, resting["oid"], resting["cancel_order_id"])
                or DEFAULT_READING
            )
        if count:
            self.cancel_reading.count(outcome)
        if reading is None:
            ids = f"{event.oid} (oid) or {event.cancel_order_id} (cancel_order_id)"
            where = f"{event.type} at {event.price}"
            return CancelApplied(
                outcome, None, None, [f"cancel of order {ids}: not on the book ({where})"]
            )
        removed = self._orders.pop(resting[reading].order_id)
        return CancelApplied(outcome, removed, reading, [])

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

    def differing_ids(self, other: Book, among: Iterable[int] | None = None) -> list[int]:
        """The ids of the orders on which `other` differs from this book, ascending: an order
        that only one of them holds, or one at another side, price or amount.

        `among`: only these ids are looked at (all that either book holds by default).
        Prices and amounts compare as numbers (1.0 == 1.00); timestamps are not compared,
        since snapshots and events state them with different precision.
        """
        ids = self._orders.keys() | other._orders.keys() if among is None else set(among)
        return sorted(i for i in ids if not _agree(self._orders.get(i), other._orders.get(i)))

    def differences(self, other: Book, among: Iterable[int] | None = None) -> list[str]:
        """How `other` differs from this book, one line per differing order; [] if equal.

        The orders are those of `differing_ids` (with the same `among`).
        """
        lines = []
        for order_id in self.differing_ids(other, among):
            mine, theirs = self._orders.get(order_id), other._orders.get(order_id)
            if theirs is None:
                lines.append(f"order {order_id} only in this book")
            elif mine is None:
                lines.append(f"order {order_id} only in the other book")
            else:
                lines.append(
                    f"order {order_id}: {mine.side} {mine.amount}@{mine.price} here, "
                    f"{theirs.side} {theirs.amount}@{theirs.price} there"
                )
        return lines


def _agree(mine: RestingOrder | None, theirs: RestingOrder | None) -> bool:
    """Whether two books agree on one order: both lack it, or hold it alike."""
    if mine is None or theirs is None:
        return mine is theirs
    return (mine.side, mine.price, mine.amount) == (theirs.side, theirs.price, theirs.amount)


Window = Sequence[tuple[BookEvent, Sequence[BookFill]]]
"""A pair's book events (with their fills) in the order received."""


@dataclass(frozen=True, slots=True)
class SnapshotCut:
    """Which of the events received after a snapshot was asked for it already contains."""

    events: int | None
    """k: the snapshot contains the window's first k events and none of the rest; None when
    the window does not decide it (only without a book from before the request)."""
    drift: frozenset[int]
    """The orders on which the snapshot disagrees with the events even at the cut."""
    unexplained: frozenset[int] = frozenset()
    """With a book from before the request: the orders the snapshot holds otherwise than that
    book which no event of the window touches. Events the snapshot holds that the stream has
    not delivered yet, while it runs behind REST (or lost ones)."""


def snapshot_cut(window: Window, snapshot: Book, before: Book | None) -> SnapshotCut:
    """Where `snapshot` cuts `window`, the events received after it was asked for.

    An answer comes some time after its request, and the exchange may apply any number of
    the events the stream delivers meanwhile before it answers. With `before`, the book
    rebuilt up to the request, the cut is exact: the smallest k such that `before` plus the
    first k events agrees with the snapshot on every order those events touch (orders that
    disagree at every k are drift, and do not stop a cut). Without one (a resync), only what
    the events themselves tell: an order placed in the window is in the snapshot only after
    its event; an order resting before the window that a cancel removes is in it only before
    the cancel; a fill of an order resting before the window tells nothing (its amount then is
    unknown). When more than one k fits that evidence the cut is undecided (None): the caller
    asks again.
    """
    expected: _Expected = (
        _Rebuilt(before.copy())
        if before is not None
        else _Partial(window, snapshot, snapshot.cancel_reading.established)
    )
    touched = set().union(*(_named(event, fills) for event, fills in window))
    mismatch = {order_id for order_id in touched if expected.differs(order_id, snapshot)}
    at: list[frozenset[int]] = [frozenset(mismatch)]
    for event, fills in window:
        for order_id in expected.apply(event, fills):
            if expected.differs(order_id, snapshot):
                mismatch.add(order_id)
            else:
                mismatch.discard(order_id)
        at.append(frozenset(mismatch))
    always = frozenset.intersection(*at)
    least = min(len(m) for m in at)
    fits = [k for k, m in enumerate(at) if len(m) == least]
    if before is None:
        return SnapshotCut(None, always) if len(fits) > 1 else SnapshotCut(fits[0], at[fits[0]])
    unexplained = frozenset(before.differing_ids(snapshot)) - touched
    return SnapshotCut(fits[0], at[fits[0]], unexplained)


def _named(event: BookEvent, fills: Sequence[BookFill]) -> set[int]:
    """The orders an event (with its fills) may change."""
    ids = {event.oid, *(fill.o_id for fill in fills)}
    if event.cancel_order_id is not None:
        ids.add(event.cancel_order_id)
    return ids


class _Expected(Protocol):
    def apply(self, event: BookEvent, fills: Sequence[BookFill]) -> set[int]: ...
    def differs(self, order_id: int, snapshot: Book) -> bool: ...


class _Rebuilt:
    """The book as rebuilt from before the window: every order's state is known."""

    def __init__(self, book: Book) -> None:
        self.book = book

    def apply(self, event: BookEvent, fills: Sequence[BookFill]) -> set[int]:
        self.book.apply(event, fills, count=False)
        return _named(event, fills)

    def differs(self, order_id: int, snapshot: Book) -> bool:
        return not _agree(self.book.get(order_id), snapshot.get(order_id))


_RESTS = "rests"
"""An order resting before the window, at an amount no one knows."""
_UNKNOWN = "unknown"
"""Resting before the window and filled since: perhaps gone, perhaps not."""


class _Partial:
    """What the window's events alone say of the orders they touch (no book before it).

    Two passes over the window. The first finds the orders resting before the window that
    its events remove (`_RESTS`), and decides once which order each cancel names, with the
    orders resting at that point of the window; `snapshot_cut` then makes the second, each
    cancel naming the order decided in the first.
    """

    def __init__(self, window: Window, snapshot: Book, established: Reading | None) -> None:
        self.established = established
        self.snapshot = snapshot
        placed = {e.oid for e, _ in window if e.kind == "new" and e.amount > 0}
        self.state: dict[int, RestingOrder | str | None] = dict.fromkeys(placed)
        self._fill_prices = {
            fill.o_id: fill.price
            for _, fills in window
            for fill in fills
            if fill.o_id not in placed
        }
        """The price of each order resting before the window that a fill of it shows (a
        fill is made at the resting order's price)."""
        named: list[int | None] = []
        for event, fills in window:
            if event.kind == "cancel":
                named.append(self._cancelled(event))
                removed = [] if named[-1] is None else [named[-1]]
            else:
                removed = [fill.o_id for fill in fills]
            for order_id in removed:
                self.state.setdefault(order_id, _RESTS)
            self._change(event, fills, named[-1] if event.kind == "cancel" else None)
        self.state = {i: None if i in placed else _RESTS for i in self.state}
        self._named = iter(named)

    def _resting(self, order_id: int | None) -> bool:
        """Whether the order may rest at this point of the window."""
        if order_id is None:
            return False
        if order_id in self.state:
            return self.state[order_id] is not None  # not placed yet, or gone, when None
        return order_id in self.snapshot

    def _cancelled(self, event: BookEvent) -> int | None:
        """The id this cancel names: the only one of a resting order, else as `Book.cancel`
        decides an ambiguous cancel (the pair's reading, else the order that fits what the
        cancel states, else the default). With neither resting, the one the window did not
        place: an order resting before it, which the snapshot may already lack.

        An order known to be at another side or price than the cancel states is not the one
        cancelled (`Book.cancel`): the cancel's other id is, an order resting before the
        window whose side and price no one knows, and which the snapshot may already lack.
        """
        ids: dict[Reading, int | None] = {
            "oid": event.oid,
            "cancel_order_id": event.cancel_order_id,
        }
        known = [r for r, i in ids.items() if self._resting(i)]
        orders = {r: self._order(ids[r]) for r in known}
        elsewhere = [r for r in known if self._elsewhere(ids[r], event)]
        if len(known) == 1:
            (only,) = known
            return ids[_OTHER[only]] if only in elsewhere else ids[only]
        fits = None
        if not known:
            # an id the window placed is not resting here (not yet, or no longer): the other,
            # unknown, may be an order resting before the window
            unknown = [r for r, i in ids.items() if i is not None and i not in self.state]
            fits = unknown[0] if len(unknown) == 1 else None
        if len(known) == 2:
            by_oid, by_cancel_id = orders["oid"], orders["cancel_order_id"]
            if by_oid is not None and by_cancel_id is not None:
                fits = _better_fit(event, by_oid, by_cancel_id)
            elif len(elsewhere) == 1:
                fits = _OTHER[elsewhere[0]]  # the other order is not known to be elsewhere
        return ids[self.established or fits or DEFAULT_READING]

    def _elsewhere(self, order_id: int | None, event: BookEvent) -> bool:
        """Whether the order is known to be at another side or price than the cancel states:
        as the window or the snapshot holds it, else at the price a fill of it was made at."""
        order = self._order(order_id)
        if order is not None:
            return not _fit(event, order)[0]
        price = self._fill_prices.get(order_id) if order_id is not None else None
        return price is not None and price != event.price

    def _order(self, order_id: int | None) -> RestingOrder | None:
        """The order as the window placed it, else as the snapshot holds it."""
        now = self.state.get(order_id) if order_id is not None else None
        if isinstance(now, RestingOrder):
            return now
        return self.snapshot.get(order_id) if order_id is not None else None

    def apply(self, event: BookEvent, fills: Sequence[BookFill]) -> set[int]:
        return self._change(event, fills, next(self._named) if event.kind == "cancel" else None)

    def _change(self, event: BookEvent, fills: Sequence[BookFill], named: int | None) -> set[int]:
        """Apply one event (a cancel removing `named`); return the orders it changed."""
        changed = set()
        if event.kind == "cancel":
            if named is not None:
                self.state[named] = None
                changed.add(named)
            return changed
        for fill in fills:
            changed.add(fill.o_id)
            now = self.state.get(fill.o_id)
            if isinstance(now, RestingOrder):
                left = now.amount - fill.amount
                self.state[fill.o_id] = (
                    RestingOrder(now.order_id, now.side, now.price, left, now.ts)
                    if left > 0
                    else None
                )
            elif now == _RESTS:
                self.state[fill.o_id] = _UNKNOWN
        if event.amount > 0:
            self.state[event.oid] = RestingOrder(
                event.oid, event.type, event.price, event.amount, event.ts
            )
            changed.add(event.oid)
        return changed

    def differs(self, order_id: int, snapshot: Book) -> bool:
        if order_id not in self.state:
            return False
        now = self.state[order_id]
        if now == _UNKNOWN:
            return False
        if now == _RESTS:
            return order_id not in snapshot
        assert not isinstance(now, str)
        return not _agree(now, snapshot.get(order_id))


def _fit(event: BookEvent, order: RestingOrder) -> tuple[bool, bool]:
    """Whether `order` is at the cancel's side and price, and has its remaining amount.

    Side and price weigh more than the amount: what remains is our reading of the docs'
    `amount`.
    """
    return ((order.side, order.price) == (event.type, event.price), order.amount == event.amount)


def _better_fit(
    event: BookEvent, by_oid: RestingOrder, by_cancel_id: RestingOrder
) -> Reading | None:
    """The reading whose order fits what the cancel states better; None if both fit alike."""
    if _fit(event, by_oid) > _fit(event, by_cancel_id):
        return "oid"
    if _fit(event, by_cancel_id) > _fit(event, by_oid):
        return "cancel_order_id"
    return None
