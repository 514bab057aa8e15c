"""Typed records: what the sources produce and the writer stores, one class per table.

Data flows one way: the exchange client, the socket stream and the pollers build these
records; the storage writer turns each into one row of the table named in `TABLE`. Field
names are the column names of that table (`migrations/0001_schema.sql`), so a researcher
reading the schema reads these too.

Prices and amounts are `Decimal` (parsed from the JSON text, never through a float); times
are timezone-aware `datetime`s in UTC. Records are frozen: once received, a fact does not
change on its way to the database.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeGuard, TypeVar

Side = Literal["buy", "sell"]
EventKind = Literal["new", "cancel"]

PAIR_NAME = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9]+")
"""A pair's name: two currency codes joined by `_`, as in `BTC_USD`."""


def is_pair_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and PAIR_NAME.fullmatch(value) is not None


def is_listed_pair_name(value: object) -> TypeGuard[str]:
    """A pair name written as the exchange lists its pairs, in upper case (`BTC_USD`)."""
    return is_pair_name(value) and value == value.upper()


_Frozen = TypeVar("_Frozen", bound=type[Any])


def quick_init(cls: _Frozen) -> _Frozen:
    """`cls` (a frozen dataclass with slots) with an `__init__` a third as costly.

    A frozen dataclass's own `__init__` stores each field with `object.__setattr__`, which
    looks the name up again in the class for every field: about 4 us for a ten-field record,
    more than decoding the event's JSON. This one calls each slot's descriptor directly.
    The record stays as frozen (its `__setattr__` still refuses), with the same parameters
    and defaults; a field with a `default_factory` is not supported.
    """
    names = [f.name for f in fields(cls) if f.init]
    scope: dict[str, Any] = {}
    parameters = []
    for f in fields(cls):
        if not f.init:
            continue
        if f.default_factory is not MISSING:
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} has a default_factory")
        scope[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is MISSING:
            parameters.append(f.name)
        else:
            scope[f"_default_{f.name}"] = f.default
            parameters.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{name}(self, {name})\n" for name in names) or "    pass\n"
    source = f"def __init__(self, {', '.join(parameters)}):\n{body}"
    exec(source, scope)  # noqa: S102 - code made here from the dataclass's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    return cls


def utc_now() -> datetime:
    """The recorder's clock, as stored in `received_at` columns."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """An id made by the recorder (snapshots, sessions, raw messages).

    Made here rather than by a database sequence so that a record has its identity before
    it reaches the database: a record spooled to disk and replayed later is still the same
    row, and the replay is a no-op.
    """
    return uuid.uuid4()


@dataclass(frozen=True, slots=True)
class Currency:
    TABLE: ClassVar[str] = "currencies"
    short_name: str
    sign: str
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class Pair:
    TABLE: ClassVar[str] = "pairs"
    name: str
    currency1: str
    currency2: str
    price_precision: int
    minimum_order_size: Decimal
    maximum_order_size: Decimal
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade of the exchange's tape (`GET /exchanges/`); `tid` is the trade's `id`."""

    TABLE: ClassVar[str] = "trades"
    pair: str
    tid: int
    ts: datetime
    type: Side
    price: Decimal
    amount: Decimal
    received_at: datetime


@quick_init
@dataclass(frozen=True, slots=True)
class BookEvent:
    """A socket.io book event: a new order (what remains of it) or a cancel."""

    TABLE: ClassVar[str] = "book_events"
    pair: str
    oid: int
    kind: EventKind
    ts: datetime
    type: Side
    price: Decimal
    amount: Decimal
    cancel_order_id: int | None
    received_at: datetime
    session_id: uuid.UUID


@quick_init
@dataclass(frozen=True, slots=True)
class BookFill:
    """A trade inside a new-order event: incoming order `oid` filled resting order `o_id`."""

    TABLE: ClassVar[str] = "book_fills"
    pair: str
    tid: int
    oid: int
    o_id: int
    type: Side
    price: Decimal
    amount: Decimal
    ts: datetime
    received_at: datetime


@quick_init
@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """One REST order-book snapshot (header); its levels are `SnapshotOrder` records."""

    TABLE: ClassVar[str] = "book_snapshots"
    snapshot_id: uuid.UUID
    pair: str
    taken_at: datetime
    received_at: datetime
    grouped: bool
    reason: str
    events_through: datetime | None = None
    """The exchange's date of the last book event this snapshot contains (`book_at` applies
    the events after it); None where unknown."""
    in_sync: bool = True
    """The stream delivered every book event after `events_through`, so `book_at` may start
    from it; False for one asked for while no connection was subscribed (at a start, during
    an outage), kept as the exchange's book at its own instant."""


@quick_init
@dataclass(frozen=True, slots=True)
class SnapshotOrder:
    """One level of a snapshot; `pos` counts from 0 at the best price of each side."""

    TABLE: ClassVar[str] = "book_snapshot_orders"
    snapshot_id: uuid.UUID
    side: Side
    pos: int
    order_id: int | None
    price: Decimal
    amount: Decimal
    order_ts: datetime | None
    taken_at: datetime
    """Its snapshot's `taken_at`, copied: the table's time column (a hypertable's dimension
    on TimescaleDB, docs/benchmarks.md "Storage")."""


@dataclass(frozen=True, slots=True)
class Candle:
    """A chart candle; `bucket` is its start. The newest one is open and is upserted."""

    TABLE: ClassVar[str] = "candles"
    pair: str
    resolution: str
    bucket: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StreamSession:
    """A socket.io connection's life; written at connect, then again with its end."""

    TABLE: ClassVar[str] = "stream_sessions"
    session_id: uuid.UUID
    connected_at: datetime
    disconnected_at: datetime | None
    reason: str | None
    run_id: uuid.UUID | None = None
    """The recorder process that held the connection: sessions of one run may overlap."""
    connection: int | None = None
    """Which of the run's redundant connections (`exchange.stream_connections`), from 0."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Input that could not be parsed, kept verbatim with the reason."""

    TABLE: ClassVar[str] = "raw_messages"
    id: uuid.UUID
    received_at: datetime
    source: str
    event: str | None
    payload: str
    error: str


@dataclass(frozen=True, slots=True)
class AccountWallet:
    """A wallet balance as observed at `observed_at` (one row per observation)."""

    TABLE: ClassVar[str] = "account_wallets"
    currency: str
    observed_at: datetime
    balance: Decimal
    reserve: Decimal


@dataclass(frozen=True, slots=True)
class AccountOrder:
    """One of the account's own orders; its latest known state is upserted."""

    TABLE: ClassVar[str] = "account_orders"
    id: int
    pair: str
    type: Side
    status: int
    price: Decimal
    amount: Decimal
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AccountTrade:
    TABLE: ClassVar[str] = "account_trades"
    id: int
    pair: str
    type: Side
    price: Decimal
    amount: Decimal
    ts: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class AccountDeposit:
    TABLE: ClassVar[str] = "account_deposits"
    id: int
    currency: str
    amount: Decimal
    ts: datetime
    received_at: datetime


@dataclass(frozen=True, slots=True)
class AccountWithdraw:
    """A withdrawal; its status (10 new … 50 cancelled) changes and is upserted."""

    TABLE: ClassVar[str] = "account_withdraws"
    id: int
    currency: str
    amount: Decimal
    status: int
    ts: datetime
    updated_at: datetime


Record = (
    Currency
    | Pair
    | Trade
    | BookEvent
    | BookFill
    | BookSnapshot
    | SnapshotOrder
    | Candle
    | StreamSession
    | RawMessage
    | AccountWallet
    | AccountOrder
    | AccountTrade
    | AccountDeposit
    | AccountWithdraw
)
