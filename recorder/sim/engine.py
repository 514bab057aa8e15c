"""A price-time-priority limit-order matching engine: the simulated exchange's single truth.

Pure and synchronous: no I/O, no clock of its own (the caller passes one), so that the
property tests can drive it directly and the server can replay history through it with a
clock set in the past. Every book change comes out as an event value (`NewOrder` or
`Cancel`) that carries exactly the facts of the exchange's documented socket.io payloads;
the server only serialises them. Listeners registered with `Engine.subscribe` see each event
in the order the engine made them.

Arithmetic is `Decimal` throughout: prices are quantized to the pair's `price_precision`,
amounts to 8 decimals. Order ids, trade ids and cancel-operation ids are each one counter
shared by all pairs, so they increase across pairs as on the real exchange. A cancel's own
id trails the order ids by `CANCEL_ID_LAG` (the docs' sample shows a cancel id next to an
order id: 15235 and 15234), so it often equals the id of an order still resting on the same
book: a cancel whose two ids both name a resting order, which the recorder must read right
whichever id the wire uses for the cancelled order (`wire.cancel_payload`).

A trade's `type` is the resting (maker) order's side, in socket payloads as in the tape of
`/exchanges/`, so that a fill seen on the socket and the same trade read over REST agree.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

Side = Literal["buy", "sell"]
SIDES: tuple[Side, ...] = ("buy", "sell")

AMOUNT_STEP = Decimal("0.00000001")
"""Amounts have 8 decimals, like the docs' samples."""

CANCEL_ID_LAG = 100
"""A cancel's own id is at least the next order id minus this (and above the previous one)."""

STATUS_ACTIVE = 1
STATUS_CANCELLED = 2
STATUS_DONE = 3


class OrderRejected(ValueError):
    """An order or cancel the exchange refuses; the message is the reason shown to the caller."""


class UnknownOrder(OrderRejected):
    """No order has that id."""


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A pair as `/pairs/` lists it."""

    name: str
    currency1: str
    currency2: str
    price_precision: int
    minimum_order_size: Decimal = Decimal("0.00000001")
    maximum_order_size: Decimal = Decimal("100000000")

    @property
    def tick(self) -> Decimal:
        return Decimal(1).scaleb(-self.price_precision)

    def quantize_price(self, price: Decimal) -> Decimal:
        return price.quantize(self.tick)


@dataclass(slots=True)
class Order:
    """An order; `amount` is what still rests (or rested when it left the book)."""

    oid: int
    pair: str
    side: Side
    price: Decimal
    amount: Decimal
    original_amount: Decimal
    timestamp: Decimal
    owner: str | None = None
    status: int = STATUS_ACTIVE


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade: the incoming order filled resting order `o_id` by `amount` at `price`."""

    tid: int
    pair: str
    type: Side
    """The resting order's side."""
    price: Decimal
    amount: Decimal
    o_id: int
    oid: int
    timestamp: Decimal
    maker_owner: str | None = None
    taker_owner: str | None = None


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A new order after matching: `amount` remains and rests when > 0."""

    pair: str
    date: Decimal
    oid: int
    type: Side
    price: Decimal
    amount: Decimal
    trades: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Order `oid` left the book with `amount` still resting; `cancel_order_id` names the cancel.

    Named as under the `oid` reading; under the other, the wire swaps the two ids.
    """

    pair: str
    date: Decimal
    oid: int
    cancel_order_id: int
    price: Decimal
    type: Side
    amount: Decimal


Event = NewOrder | Cancel
Listener = Callable[[Event], None]


@dataclass(slots=True)
class _Level:
    price: Decimal
    orders: deque[Order] = field(default_factory=deque)


class _Side:
    """One side of a book: price levels kept sorted best first, FIFO within a level."""

    def __init__(self, side: Side) -> None:
        self.side = side
        # Sorted ascending by key; key = price for asks, -price for bids, so index 0 is best.
        self._keys: list[Decimal] = []
        self._levels: dict[Decimal, _Level] = {}
        self.order_count = 0

    def _key(self, price: Decimal) -> Decimal:
        return -price if self.side == "buy" else price

    def best(self) -> _Level | None:
        return self._levels[self._price_of(self._keys[0])] if self._keys else None

    def _price_of(self, key: Decimal) -> Decimal:
        return -key if self.side == "buy" else key

    def add(self, order: Order) -> None:
        level = self._levels.get(order.price)
        if level is None:
            level = _Level(order.price)
            self._levels[order.price] = level
            bisect.insort(self._keys, self._key(order.price))
        level.orders.append(order)
        self.order_count += 1

    def remove(self, order: Order) -> None:
        level = self._levels[order.price]
        level.orders.remove(order)
        self.order_count -= 1
        if not level.orders:
            self._drop_level(level.price)

    def _drop_level(self, price: Decimal) -> None:
        del self._levels[price]
        key = self._key(price)
        del self._keys[bisect.bisect_left(self._keys, key)]

    def pop_best_order(self) -> None:
        """Remove the first order of the best level (it was filled)."""
        level = self.best()
        assert level is not None
        level.orders.popleft()
        self.order_count -= 1
        if not level.orders:
            self._drop_level(level.price)

    def levels(self) -> Iterator[_Level]:
        for key in self._keys:
            yield self._levels[self._price_of(key)]

    def orders(self) -> Iterator[Order]:
        for level in self.levels():
            yield from level.orders

    def __len__(self) -> int:
        return len(self._keys)


class Book:
    """The resting orders of one pair."""

    def __init__(self, spec: PairSpec) -> None:
        self.spec = spec
        self.sides: dict[Side, _Side] = {"buy": _Side("buy"), "sell": _Side("sell")}

    def best_price(self, side: Side) -> Decimal | None:
        level = self.sides[side].best()
        return level.price if level else None

    def order_count(self) -> int:
        return self.sides["buy"].order_count + self.sides["sell"].order_count

    def orders(self, side: Side) -> list[Order]:
        """Resting orders of one side, best price first, then time priority."""
        return list(self.sides[side].orders())

    def levels(self, side: Side) -> list[tuple[Decimal, Decimal]]:
        """(price, total amount) per price level, best first."""
        return [
            (level.price, sum((o.amount for o in level.orders), Decimal(0)))
            for level in self.sides[side].levels()
        ]

    def crosses(self, side: Side, price: Decimal) -> bool:
        """Whether an incoming order on `side` at `price` can trade with the best opposite order."""
        best = self.best_price(_opposite(side))
        if best is None:
            return False
        return price >= best if side == "buy" else price <= best


def _opposite(side: Side) -> Side:
    return "sell" if side == "buy" else "buy"


class Engine:
    """The books of all pairs, the trade tape, and every order ever placed."""

    def __init__(self, pairs: list[PairSpec], clock: Callable[[], Decimal]) -> None:
        self.clock = clock
        self.specs = {spec.name: spec for spec in pairs}
        self.books = {spec.name: Book(spec) for spec in pairs}
        self.orders: dict[int, Order] = {}
        self.trades: list[Fill] = []
        """All trades, in id order (ids increase across pairs)."""
        self.trades_by_pair: dict[str, list[Fill]] = {spec.name: [] for spec in pairs}
        self.event_count = 0
        self._next_oid = 1
        self._next_tid = 1
        self._next_cancel_id = 1
        self._listeners: list[Listener] = []

    def add_pair(self, spec: PairSpec) -> None:
        """List a new pair (the exchange adds markets while running); a no-op if listed."""
        if spec.name in self.specs:
            return
        self.specs[spec.name] = spec
        self.books[spec.name] = Book(spec)
        self.trades_by_pair[spec.name] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def publish(self, event: Event) -> None:
        """Hand listeners an event made outside the engine, counted like its own: a recorded
        one (`recorder.sim.replay`), whose change to the books the caller has made."""
        self._publish(event)

    def _publish(self, event: Event) -> None:
        self.event_count += 1
        for listener in self._listeners:
            listener(event)

    def spec(self, pair: str) -> PairSpec:
        try:
            return self.specs[pair]
        except KeyError:
            raise OrderRejected(f"unknown pair {pair!r}") from None

    def check_order(self, pair: str, side: str, price: Decimal, amount: Decimal) -> PairSpec:
        """Validate an order as the exchange would; raise `OrderRejected` with the reason."""
        spec = self.spec(pair)
        if side not in SIDES:
            raise OrderRejected("type must be 'buy' or 'sell'")
        if not price.is_finite() or price <= 0:
            raise OrderRejected("price must be a positive number")
        if price != spec.quantize_price(price):
            raise OrderRejected(f"price has more than {spec.price_precision} decimals")
        if not amount.is_finite() or amount != amount.quantize(AMOUNT_STEP):
            raise OrderRejected("amount must be a number with at most 8 decimals")
        if amount < spec.minimum_order_size or amount > spec.maximum_order_size:
            raise OrderRejected(
                f"amount must be between {spec.minimum_order_size} and {spec.maximum_order_size}"
            )
        return spec

    def place(
        self, pair: str, side: Side, price: Decimal, amount: Decimal, owner: str | None = None
    ) -> NewOrder:
        """Match a limit order against the book, rest what remains; return the new-order event."""
        spec = self.check_order(pair, side, price, amount)
        now = self.clock()
        order = Order(
            oid=self._next_oid,
            pair=pair,
            side=side,
            price=spec.quantize_price(price),
            amount=amount.quantize(AMOUNT_STEP),
            original_amount=amount.quantize(AMOUNT_STEP),
            timestamp=now,
            owner=owner,
        )
        self._next_oid += 1
        self.orders[order.oid] = order
        fills = self._match(self.books[pair], order, now)
        if order.amount > 0:
            self.books[pair].sides[side].add(order)
        else:
            order.status = STATUS_DONE
        event = NewOrder(pair, now, order.oid, side, order.price, order.amount, tuple(fills))
        self._publish(event)
        return event

    def _match(self, book: Book, order: Order, now: Decimal) -> list[Fill]:
        fills: list[Fill] = []
        opposite = book.sides[_opposite(order.side)]
        while order.amount > 0 and book.crosses(order.side, order.price):
            level = opposite.best()
            assert level is not None  # crosses() saw it
            resting = level.orders[0]
            amount = min(order.amount, resting.amount)
            fill = Fill(
                tid=self._next_tid,
                pair=order.pair,
                type=resting.side,
                price=resting.price,
                amount=amount,
                o_id=resting.oid,
                oid=order.oid,
                timestamp=now,
                maker_owner=resting.owner,
                taker_owner=order.owner,
            )
            self._next_tid += 1
            fills.append(fill)
            self.trades.append(fill)
            self.trades_by_pair[order.pair].append(fill)
            order.amount -= amount
            resting.amount -= amount
            if resting.amount == 0:
                resting.status = STATUS_DONE
                opposite.pop_best_order()
        return fills

    def cancel(self, oid: int, owner: str | None = None) -> Cancel:
        """Take an active order off its book; `owner` (when given) must own it."""
        order = self.orders.get(oid)
        if order is None:
            raise UnknownOrder(f"order {oid} does not exist")
        if owner is not None and order.owner != owner:
            raise PermissionError(f"order {oid} is not yours")
        if order.status != STATUS_ACTIVE:
            raise OrderRejected(f"order {oid} is not active")
        self.books[order.pair].sides[order.side].remove(order)
        order.status = STATUS_CANCELLED
        cancel_id = max(self._next_cancel_id, self._next_oid - CANCEL_ID_LAG)
        self._next_cancel_id = cancel_id + 1
        event = Cancel(
            pair=order.pair,
            date=self.clock(),
            oid=oid,
            cancel_order_id=cancel_id,
            price=order.price,
            type=order.side,
            amount=order.amount,
        )
        self._publish(event)
        return event
