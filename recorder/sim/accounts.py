"""The simulator's accounts: keys, wallets, deposits and withdrawals for the private API.

A few accounts are made from the seed, so tests and people know their keys: the account
named `alice` has key `sim-alice` and secret `seed_secret(seed, "alice")`. They are fake
credentials of a fake exchange, printed when `recorder sim` starts.

Balances follow the account's trades: `balance` is what the account holds, `reserve` the
part locked in its active orders (amount for a sell, amount × price for a buy). An order
that needs more than `balance - reserve` is refused.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from decimal import Decimal

from recorder.sim.auth import Credentials
from recorder.sim.engine import AMOUNT_STEP, STATUS_ACTIVE, Engine, Event, Fill, NewOrder, Side

ACCOUNT_NAMES = ("alice", "bob", "carol")

DEPOSIT_STATUSES = (10, 20, 30, 40, 50)


def seed_secret(seed: int, name: str) -> str:
    return hashlib.sha256(f"bitexbit-sim:{seed}:{name}".encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Deposit:
    id: int
    timestamp: Decimal
    currency: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Withdraw:
    id: int
    timestamp: Decimal
    currency: str
    amount: Decimal
    status: int


@dataclass
class Account:
    name: str
    credentials: Credentials
    balances: dict[str, Decimal]
    deposits: list[Deposit] = field(default_factory=list)
    withdraws: list[Withdraw] = field(default_factory=list)
    order_ids: list[int] = field(default_factory=list)
    """The account's orders, oldest first."""
    trades: list[Fill] = field(default_factory=list)
    """The account's trades, oldest first, `type` being the account's side."""

    def reserve(self, engine: Engine, currency: str) -> Decimal:
        locked = Decimal(0)
        for oid in self.order_ids:
            order = engine.orders[oid]
            if order.status != STATUS_ACTIVE:
                continue
            spec = engine.specs[order.pair]
            if order.side == "sell" and spec.currency1 == currency:
                locked += order.amount
            elif order.side == "buy" and spec.currency2 == currency:
                locked += order.amount * order.price
        return locked

    def can_afford(
        self, engine: Engine, pair: str, side: Side, price: Decimal, amount: Decimal
    ) -> bool:
        spec = engine.specs[pair]
        currency, needed = (
            (spec.currency1, amount) if side == "sell" else (spec.currency2, amount * price)
        )
        available = self.balances.get(currency, Decimal(0)) - self.reserve(engine, currency)
        return needed <= available


class Accounts:
    """The seeded accounts, by key; also settles their trades as the engine makes them."""

    def __init__(self, engine: Engine, seed: int, start_s: float) -> None:
        self.engine = engine
        rng = random.Random(seed)  # noqa: S311 - reproducible fake history, not crypto
        currencies = sorted({c for s in engine.specs.values() for c in (s.currency1, s.currency2)})
        self.by_key: dict[str, Account] = {}
        self.by_name: dict[str, Account] = {}
        next_id = 1
        for name in ACCOUNT_NAMES:
            balances = {
                c: Decimal(rng.randint(1_000, 1_000_000)).quantize(AMOUNT_STEP) for c in currencies
            }
            account = Account(name, Credentials(f"sim-{name}", seed_secret(seed, name)), balances)
            for currency in currencies:
                when = Decimal(int((start_s - rng.uniform(3600, 30 * 86400)) * 1e6)) / 10**6
                account.deposits.append(Deposit(next_id, when, currency, balances[currency]))
                account.withdraws.append(
                    Withdraw(
                        next_id,
                        when + 60,
                        currency,
                        (Decimal(rng.randint(1, 1000)) / 100).quantize(AMOUNT_STEP),
                        rng.choice(DEPOSIT_STATUSES),
                    )
                )
                next_id += 1
            self.by_key[account.credentials.key] = account
            self.by_name[name] = account
        engine.subscribe(self._settle)

    def _settle(self, event: Event) -> None:
        if not isinstance(event, NewOrder):
            return
        placed_by = self.by_name.get(self.engine.orders[event.oid].owner or "")
        if placed_by is not None:
            placed_by.order_ids.append(event.oid)
        spec = self.engine.specs[event.pair]
        for trade in event.trades:
            maker_side = trade.type
            taker_side: Side = "sell" if maker_side == "buy" else "buy"
            for owner, side in ((trade.maker_owner, maker_side), (trade.taker_owner, taker_side)):
                account = self.by_name.get(owner) if owner else None
                if account is None:
                    continue
                account.trades.append(replace(trade, type=side))
                sign = 1 if side == "buy" else -1
                cost = trade.amount * trade.price
                b = account.balances
                b[spec.currency1] = b.get(spec.currency1, Decimal(0)) + sign * trade.amount
                b[spec.currency2] = b.get(spec.currency2, Decimal(0)) - sign * cost
