"""How each record becomes a row: columns, their PostgreSQL types, the key, the conflict rule.

Most tables are append-only facts: a second copy of a row (a replay after a crash, an
overlap between a REST catch-up and the socket, two recorders) is dropped by
`ON CONFLICT DO NOTHING` (while a table's batches hold no such copy, they are copied
straight into it: `recorder/storage/committer.py`). A few hold a thing whose state changes
(the open candle, a stream session that ends, a pair's metadata, an own order's status):
those are upserted, and an upsert never moves a row back to an older observation.

A table may be stored under another name than the one users query: `trades` and
`book_fills` are views over `trades_stored` and `book_fills_stored`, which keep `price` and
`amount` as exact scaled integers (units, scale, and a `numeric` for a value that does not
fit: recorder/storage/numeric.py), several times smaller in TimescaleDB's columnstore than
`numeric` (migrations/0020_scaled_prices.sql, docs/benchmarks.md "Storage"). The writer
writes the stored table; every reader reads the view, with today's columns and types.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recorder import records as r
from recorder.storage.numeric import split_rows

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TableSpec:
    record: type[Any]  # its `TABLE` names the table
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type)
    key: tuple[str, ...]
    to_row: Callable[[Any], Row]
    on_conflict: str = "DO NOTHING"
    stored_as: str = ""  # the table written, when `name` is a view over it
    scaled: tuple[str, ...] = ()  # Decimal columns stored as <c>_units, <c>_scale, <c>_exact

    @property
    def name(self) -> str:
        """The relation users query (and the writer's metrics name)."""
        return str(self.record.TABLE)

    @property
    def stored(self) -> str:
        """The table the writer writes."""
        return self.stored_as or self.name

    @property
    def stored_columns(self) -> tuple[tuple[str, str], ...]:
        """The stored table's columns, in the order of `rows`: each scaled column as three."""
        columns: list[tuple[str, str]] = []
        for name, pgtype in self.columns:
            if name in self.scaled:
                columns += ((f"{name}_units", "int8"), (f"{name}_scale", "int2"))
                columns.append((f"{name}_exact", pgtype))
            else:
                columns.append((name, pgtype))
        return tuple(columns)

    def stored_rows(self, rows: list[Row]) -> list[Row]:
        """`to_row`'s rows as the stored table takes them: each scaled Decimal split (in C,
        one call for all). The writer splits a COPY's chunk at a time, while PostgreSQL
        stores the chunk before it (recorder/storage/committer.py)."""
        return split_rows(rows, self._scaled_positions) if self.scaled else rows

    def rows(self, records: list[Any]) -> list[Row]:
        """The stored rows of `records`."""
        return self.stored_rows(list(map(self.to_row, records)))

    @property
    def _scaled_positions(self) -> tuple[int, ...]:
        return tuple(i for i, (name, _) in enumerate(self.columns) if name in self.scaled)

    @property
    def upserts(self) -> bool:
        return self.on_conflict != "DO NOTHING"

    # The SQL below is built from the constant specs in this module, never from input.

    @property
    def stage(self) -> str:
        """A session-private staging table that a binary COPY fills for each batch."""
        return f"stage_{self.stored}"

    @property
    def column_names(self) -> str:
        """The columns users query, in `to_row`'s order."""
        return ", ".join(name for name, _ in self.columns)

    @property
    def stored_column_names(self) -> str:
        return ", ".join(name for name, _ in self.stored_columns)

    @property
    def types(self) -> list[str]:
        """The stored columns' types, in the order of `rows`."""
        return [pgtype for _, pgtype in self.stored_columns]

    def create_stage_sql(self) -> str:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE {self.stored} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )

    @property
    def copies_straight_in(self) -> bool:
        """Whether a batch may be copied into the table itself, the key catching a replay.

        Only an append-only table: a copy of a row it holds is the same fact, dropped by
        falling back to `merge_sql`, whereas an upsert's second observation is the usual
        case (a candle closing, a session ending) and is always merged.
        """
        return not self.upserts and bool(self.key)

    def copy_sql(self) -> str:
        """A binary COPY into the staging table, for `merge_sql`."""
        return f"COPY {self.stage} ({self.stored_column_names}) FROM STDIN (FORMAT BINARY)"

    def copy_straight_sql(self) -> str:
        """A binary COPY into the table: any row whose key is there fails the statement."""
        return f"COPY {self.stored} ({self.stored_column_names}) FROM STDIN (FORMAT BINARY)"

    def merge_sql(self) -> str:
        """Move the staged batch into the table; the key decides what is new."""
        return self._insert(self.stored_column_names, self.stage)

    def insert_sql(self) -> str:
        """The alternative measured in bench/writer.py: one statement, one array per column."""
        arrays = ", ".join(f"%s::{pgtype}[]" for pgtype in self.types)
        return self._insert("*", f"unnest({arrays})")

    def _insert(self, select_list: str, from_item: str) -> str:
        conflict = self.on_conflict
        if self.upserts:
            conflict = f"({', '.join(self.key)}) {self.on_conflict}"
        return (
            f"INSERT INTO {self.stored} ({self.stored_column_names}) "  # noqa: S608
            f"SELECT {select_list} FROM {from_item} ON CONFLICT {conflict}"
        )

    def key_of(self, row: Row) -> Row:
        key = self.row_key(row)
        return key if isinstance(key, tuple) else (key,)

    @property
    def row_key(self) -> Callable[[Row], Any]:
        """A row's key (of `to_row`'s rows): a tuple for a key of several columns, else the
        one value (fast, in C)."""
        getter = _KEY_GETTERS.get(self.name)
        if getter is None:
            positions = [i for i, (name, _) in enumerate(self.columns) if name in self.key]
            getter = _KEY_GETTERS[self.name] = operator.itemgetter(*positions)
        return getter


_KEY_GETTERS: dict[str, Callable[[Row], Any]] = {}


def _fields(*names: str) -> Callable[[Any], Row]:
    # attrgetter of several names gives the tuple itself, in C: no Python call per row.
    assert len(names) > 1, names
    return operator.attrgetter(*names)


def _spec(
    record: type[Any],
    columns: str,
    key: str,
    on_conflict: str = "DO NOTHING",
    to_row: Callable[[Any], Row] | None = None,
    stored_as: str = "",
    scaled: tuple[str, ...] = (),
) -> TableSpec:
    """A table of `record`; by default its columns are the record's fields of the same names."""
    pairs = tuple(
        (column, pgtype) for column, pgtype in (item.split(":") for item in columns.split())
    )
    return TableSpec(
        record=record,
        columns=pairs,
        key=tuple(key.split()),
        to_row=to_row or _fields(*(column for column, _ in pairs)),
        on_conflict=on_conflict,
        stored_as=stored_as,
        scaled=scaled,
    )


def _first_and_last_seen(*names: str) -> Callable[[Any], Row]:
    """Rows whose `first_seen_at` and `updated_at` both start as the record's observation."""

    def to_row(record: Any) -> Row:
        seen = getattr(record, "seen_at", None) or record.updated_at
        return (*(getattr(record, name) for name in names), seen, seen)

    return to_row


def _newer(record: type[Any], assignments: str) -> str:
    """An upsert that never moves a row back to an older observation."""
    return f"DO UPDATE SET {assignments} WHERE EXCLUDED.updated_at >= {record.TABLE}.updated_at"


def _fill_in(record: type[Any], *columns: str) -> str:
    """An upsert that sets `columns` when a later record knows them, and never clears them."""
    table = record.TABLE
    return "DO UPDATE SET " + ", ".join(
        f"{column} = coalesce(EXCLUDED.{column}, {table}.{column})" for column in columns
    )


_TABLES = (
    _spec(
        r.Currency,
        "short_name:text sign:text first_seen_at:timestamptz updated_at:timestamptz",
        "short_name",
        _newer(r.Currency, "sign = EXCLUDED.sign, updated_at = EXCLUDED.updated_at"),
        _first_and_last_seen("short_name", "sign"),
    ),
    _spec(
        r.Pair,
        "name:text currency1:text currency2:text price_precision:int4 "
        "minimum_order_size:numeric maximum_order_size:numeric first_seen_at:timestamptz "
        "updated_at:timestamptz",
        "name",
        _newer(
            r.Pair,
            "currency1 = EXCLUDED.currency1, currency2 = EXCLUDED.currency2, "
            "price_precision = EXCLUDED.price_precision, "
            "minimum_order_size = EXCLUDED.minimum_order_size, "
            "maximum_order_size = EXCLUDED.maximum_order_size, "
            "updated_at = EXCLUDED.updated_at",
        ),
        _first_and_last_seen(
            "name",
            "currency1",
            "currency2",
            "price_precision",
            "minimum_order_size",
            "maximum_order_size",
        ),
    ),
    _spec(
        r.Trade,
        "pair:text tid:int8 ts:timestamptz type:text price:numeric amount:numeric "
        "received_at:timestamptz",
        "pair tid",
        stored_as="trades_stored",
        scaled=("price", "amount"),
    ),
    _spec(
        r.BookEvent,
        "pair:text oid:int8 kind:text ts:timestamptz type:text price:numeric amount:numeric "
        "cancel_order_id:int8 received_at:timestamptz session_id:uuid",
        "pair oid kind",
    ),
    _spec(
        r.BookFill,
        "pair:text tid:int8 oid:int8 o_id:int8 type:text price:numeric amount:numeric "
        "ts:timestamptz received_at:timestamptz",
        "pair tid",
        stored_as="book_fills_stored",
        scaled=("price", "amount"),
    ),
    _spec(
        r.BookSnapshot,
        "snapshot_id:uuid pair:text taken_at:timestamptz received_at:timestamptz grouped:bool "
        "reason:text events_through:timestamptz in_sync:bool",
        "snapshot_id",
    ),
    _spec(
        r.SnapshotOrder,
        "snapshot_id:uuid side:text pos:int4 order_id:int8 price:numeric amount:numeric "
        "order_ts:timestamptz taken_at:timestamptz",
        "snapshot_id side pos",
    ),
    _spec(
        r.Candle,
        "pair:text resolution:text bucket:timestamptz open:numeric high:numeric low:numeric "
        "close:numeric volume:numeric updated_at:timestamptz",
        "pair resolution bucket",
        _newer(
            r.Candle,
            "open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, "
            "close = EXCLUDED.close, volume = EXCLUDED.volume, updated_at = EXCLUDED.updated_at",
        ),
    ),
    _spec(
        r.StreamSession,
        "session_id:uuid connected_at:timestamptz disconnected_at:timestamptz reason:text "
        "run_id:uuid connection:int2",
        "session_id",
        # The session row is written at connect and completed at disconnect; a replay of
        # the connect record never erases a recorded end.
        _fill_in(r.StreamSession, "disconnected_at", "reason"),
    ),
    _spec(
        r.RawMessage,
        "id:uuid received_at:timestamptz source:text event:text payload:text error:text",
        "id",
    ),
    _spec(
        r.AccountWallet,
        "currency:text observed_at:timestamptz balance:numeric reserve:numeric",
        "currency observed_at",
    ),
    _spec(
        r.AccountOrder,
        "id:int8 pair:text type:text status:int4 price:numeric amount:numeric "
        "first_seen_at:timestamptz updated_at:timestamptz",
        "id",
        _newer(
            r.AccountOrder,
            "status = EXCLUDED.status, amount = EXCLUDED.amount, updated_at = EXCLUDED.updated_at",
        ),
        _first_and_last_seen("id", "pair", "type", "status", "price", "amount"),
    ),
    _spec(
        r.AccountTrade,
        "id:int8 pair:text type:text price:numeric amount:numeric ts:timestamptz "
        "received_at:timestamptz",
        "id",
    ),
    _spec(
        r.AccountDeposit,
        "id:int8 currency:text amount:numeric ts:timestamptz received_at:timestamptz",
        "id",
    ),
    _spec(
        r.AccountWithdraw,
        "id:int8 currency:text amount:numeric status:int4 ts:timestamptz "
        "first_seen_at:timestamptz updated_at:timestamptz",
        "id",
        _newer(r.AccountWithdraw, "status = EXCLUDED.status, updated_at = EXCLUDED.updated_at"),
        _first_and_last_seen("id", "currency", "amount", "status", "ts"),
    ),
)

SPECS: dict[type[Any], TableSpec] = {spec.record: spec for spec in _TABLES}
TABLE_OF: dict[str, TableSpec] = {spec.name: spec for spec in _TABLES}
