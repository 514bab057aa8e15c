"""Seeded order flow: what the simulated market's other traders do.

`OrderFlow.step()` makes one book event through the engine: a passive order near the mid, an
order that crosses the spread and fills several resting orders, or a cancel. The mid price
of each pair takes a small random walk, pulled towards the book's own mid. The same seed
and the same sequence of calls give the same events, so a failing test can be replayed.

`replay_history` runs the flow with a clock set in the past (the last N hours, up to the
present), so that `/exchanges/` and the candles have history for the recorder to backfill,
and the live market starts from the book that history left.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from recorder.sim.engine import AMOUNT_STEP, STATUS_ACTIVE, Engine, Event, NewOrder, PairSpec, Side

MICROSECOND = Decimal("0.000001")

DEFAULT_PAIRS: dict[str, tuple[PairSpec, Decimal]] = {
    spec.name: (spec, start)
    for spec, start in (
        (PairSpec("BTC_USD", "BTC", "USD", 2), Decimal("43000")),
        (PairSpec("ETH_USD", "ETH", "USD", 2), Decimal("2300")),
        (PairSpec("ETH_BTC", "ETH", "BTC", 6), Decimal("0.053")),
        (PairSpec("LTC_USD", "LTC", "USD", 3), Decimal("72")),
        (PairSpec("XRP_USD", "XRP", "USD", 5), Decimal("0.61")),
        (PairSpec("BTC_EUR", "BTC", "EUR", 2), Decimal("39500")),
    )
}
"""Pairs the simulator knows, with their start prices: (spec, start mid)."""

CURRENCY_SIGNS = {"BTC": "Ƀ", "ETH": "Ξ", "USD": "$", "EUR": "€", "LTC": "Ł", "XRP": "✕"}


def pair_spec(name: str) -> PairSpec:
    """The spec of a known pair; other names like AAA_BBB get a generic one (4 decimals)."""
    if name in DEFAULT_PAIRS:
        return DEFAULT_PAIRS[name][0]
    currency1, _, currency2 = name.partition("_")
    if not currency1 or not currency2:
        raise ValueError(f"not a pair name like BTC_USD: {name!r}")
    return PairSpec(name, currency1, currency2, 4)


def start_price(spec: PairSpec) -> Decimal:
    return DEFAULT_PAIRS[spec.name][1] if spec.name in DEFAULT_PAIRS else Decimal(100)


@dataclass(frozen=True)
class FlowSettings:
    cancel_share: float = 0.3
    """Share of events that are cancels while the book is of normal size."""
    cross_share: float = 0.12
    """Share of new orders that cross the spread, through 1 to `max_levels_crossed` levels."""
    max_levels_crossed: int = 4
    target_orders_per_side: int = 40
    """Past this many resting orders a side gets more cancels, so the book stays a size."""
    spread_share: float = 0.0008
    """Typical distance of a passive order from the mid, as a share of the price."""
    volatility_per_step: float = 0.0002
    """Standard deviation of the mid's relative move per event of its pair."""


class OrderFlow:
    def __init__(self, engine: Engine, seed: int, settings: FlowSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or FlowSettings()
        self.random = random.Random(seed)  # noqa: S311 - a reproducible market, not crypto
        self.pairs = sorted(engine.books)
        self.mid = {pair: float(start_price(engine.specs[pair])) for pair in self.pairs}
        self._placed: dict[str, list[int]] = {pair: [] for pair in self.pairs}
        """Ids of orders this flow placed that may still rest (pruned lazily)."""

    def add_pair(self, pair: str) -> None:
        """Trade a pair listed after the flow started, too."""
        if pair in self.mid:
            return
        self.pairs = sorted([*self.pairs, pair])
        self.mid[pair] = float(start_price(self.engine.specs[pair]))
        self._placed[pair] = []

    def step(self) -> Event:
        """Make one book event on a pair chosen at random."""
        pair = self.random.choice(self.pairs)
        self._walk(pair)
        crowded = self.engine.books[pair].order_count() > 2 * self.settings.target_orders_per_side
        cancel_share = 0.7 if crowded else self.settings.cancel_share
        if self.random.random() < cancel_share:
            oid = self._pick_resting(pair)
            if oid is not None:
                return self.engine.cancel(oid)
        side: Side = self.random.choice(("buy", "sell"))
        event = None
        if self.random.random() < self.settings.cross_share:
            event = self._cross(pair, side)
        if event is None:
            event = self._passive(pair, side)
        if event.amount > 0:
            self._placed[pair].append(event.oid)
        return event

    def fill_book(self, pair: str, orders: int) -> int:
        """Place passive orders on `pair` until its book holds at least `orders` resting ones.

        Sides alternate; prices spread around the mid as the flow's passive orders do, one
        tick short of the best opposite price at the closest, so nothing trades and no event
        has fills. Return how many orders were placed.
        """
        book = self.engine.books[pair]
        spec = self.engine.specs[pair]
        placed = attempts = 0
        while book.order_count() < orders:
            side: Side = "buy" if attempts % 2 == 0 else "sell"
            attempts += 1
            distance = abs(self.random.gauss(0, self.settings.spread_share))
            sign = -1 if side == "buy" else 1
            price = self._price(spec, self.mid[pair] * (1 + sign * distance))
            if book.crosses(side, price):
                best = book.best_price("sell" if side == "buy" else "buy")
                assert best is not None  # crosses() saw it
                price = best - spec.tick if side == "buy" else best + spec.tick
                if price <= 0:
                    continue
            event = self.engine.place(pair, side, price, self._amount(spec))
            self._placed[pair].append(event.oid)
            placed += 1
        return placed

    def _pick_resting(self, pair: str) -> int | None:
        """A random order of this flow's still on the book, or None."""
        placed = self._placed[pair]
        while placed:
            index = self.random.randrange(len(placed))
            oid = placed[index]
            if self.engine.orders[oid].status == STATUS_ACTIVE:
                return oid
            placed[index] = placed[-1]
            placed.pop()
        return None

    def _walk(self, pair: str) -> None:
        book = self.engine.books[pair]
        bid, ask = book.best_price("buy"), book.best_price("sell")
        mid = self.mid[pair]
        if bid is not None and ask is not None:
            mid += 0.1 * (float(bid + ask) / 2 - mid)  # pulled towards the book
        self.mid[pair] = mid * math.exp(self.random.gauss(0, self.settings.volatility_per_step))

    def _passive(self, pair: str, side: Side) -> NewOrder:
        spec = self.engine.specs[pair]
        distance = abs(self.random.gauss(0, self.settings.spread_share))
        sign = -1 if side == "buy" else 1
        price = self._price(spec, self.mid[pair] * (1 + sign * distance))
        return self.engine.place(pair, side, price, self._amount(spec))

    def _cross(self, pair: str, side: Side) -> NewOrder | None:
        """An order that takes 1..n levels of the opposite side (None if that side is empty)."""
        spec = self.engine.specs[pair]
        levels = self.engine.books[pair].levels("sell" if side == "buy" else "buy")
        if not levels:
            return None
        depth = min(len(levels), self.random.randint(1, self.settings.max_levels_crossed))
        price = levels[depth - 1][0]
        available = sum((amount for _, amount in levels[:depth]), Decimal(0))
        share = Decimal(str(round(self.random.uniform(0.4, 1.2), 3)))
        amount = max((available * share).quantize(AMOUNT_STEP), spec.minimum_order_size)
        return self.engine.place(pair, side, price, amount)

    def _price(self, spec: PairSpec, price: float) -> Decimal:
        return max(spec.quantize_price(Decimal(repr(price))), spec.tick)

    def _amount(self, spec: PairSpec) -> Decimal:
        # Larger sizes on cheaper pairs, with 4 to 8 significant decimals.
        notional = math.exp(self.random.gauss(math.log(500), 1.0))
        amount = Decimal(repr(notional / max(self.mid[spec.name], 1e-9)))
        decimals = self.random.randint(4, 8)
        amount = amount.quantize(Decimal(1).scaleb(-decimals))
        return max(amount, spec.minimum_order_size)


def wall_clock(time_ns: Callable[[], int]) -> Callable[[], Decimal]:
    """An engine clock: unix seconds with microseconds, from a `time.time_ns`-like function."""
    return lambda: Decimal(time_ns() // 1000) * MICROSECOND


def replay_history(flow: OrderFlow, *, hours: float, events_per_hour: float, end_s: float) -> int:
    """Run the flow over the `hours` before `end_s` (unix seconds); return the events made."""
    if hours <= 0 or events_per_hour <= 0:
        return 0
    engine = flow.engine
    live_clock = engine.clock
    mean_gap_us = 3600e6 / events_per_hour
    t_us = int((end_s - hours * 3600) * 1e6)
    end_us = int(end_s * 1e6)
    made = 0
    try:
        while t_us < end_us:
            engine.clock = _fixed(Decimal(t_us) * MICROSECOND)
            flow.step()
            made += 1
            t_us += max(1, int(flow.random.expovariate(1 / mean_gap_us)))
    finally:
        engine.clock = live_clock
    return made


def _fixed(value: Decimal) -> Callable[[], Decimal]:
    return lambda: value
