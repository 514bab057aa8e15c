"""`recorder export`: one table (or OHLCV view) of one pair and time range, to Parquet or CSV.

Streaming, so memory stays constant for any size: Parquet rows come from a server-side
cursor `batch_rows` at a time, each batch written as its own row group by pyarrow's
ParquetWriter; CSV is PostgreSQL's own `COPY ... TO STDOUT` passed through block by block.

Exact decimals stay exact. CSV carries PostgreSQL's text of each numeric. In Parquet a
numeric column becomes `decimal128(38, s)`, where a first pass over the same rows finds the
largest scale `s` and the most integer digits, so every value fits without rounding; when
38 digits are not enough it becomes `decimal256(76, s)`, and beyond that the exact text (a
string column). pyarrow itself refuses a value it would have to round, so a mistake here
fails loudly instead of losing digits.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql

FORMATS = ("parquet", "csv")


@dataclass(frozen=True, slots=True)
class Source:
    """How to select one table's rows of a pair and time range, in time order."""

    time_column: str
    order: tuple[str, ...]
    has_pair: bool = True
    via_snapshots: bool = False  # book_snapshot_orders: pair and time are its snapshot's


SOURCES: dict[str, Source] = {
    "trades": Source("ts", ("ts", "tid")),
    "book_events": Source("ts", ("ts", "oid", "kind")),
    "book_fills": Source("ts", ("ts", "tid")),
    "book_snapshots": Source("taken_at", ("taken_at", "snapshot_id")),
    "book_snapshot_orders": Source("taken_at", ("snapshot_id", "side", "pos"), via_snapshots=True),
    "candles": Source("bucket", ("resolution", "bucket")),
    "raw_messages": Source("received_at", ("received_at", "id"), has_pair=False),
    "ohlcv_1m": Source("bucket", ("bucket",)),
    "ohlcv_1h": Source("bucket", ("bucket",)),
    "ohlcv_1d": Source("bucket", ("bucket",)),
    "vwap_1m": Source("bucket", ("bucket",)),
    "vwap_1h": Source("bucket", ("bucket",)),
    "vwap_1d": Source("bucket", ("bucket",)),
    "top_of_book_snapshots": Source("taken_at", ("taken_at", "snapshot_id")),
}

NUMERIC_OID = 1700


class ExportError(Exception):
    """The export cannot be done as asked (a bad table, filter or missing library)."""


@dataclass(frozen=True, slots=True)
class Selection:
    table: str
    pair: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> tuple[sql.Composed, list[Any]]:
        """The SELECT of the rows to export, in time order, and its parameters."""
        source = SOURCES.get(self.table)
        if source is None:
            raise ExportError(f"cannot export {self.table!r}: choose one of {', '.join(SOURCES)}")
        if self.pair is not None and not source.has_pair:
            raise ExportError(f"{self.table} has no pair column: leave out --pair")
        table = sql.Identifier(self.table)
        if source.via_snapshots:
            head = sql.SQL("SELECT o.* FROM {} o JOIN book_snapshots s USING (snapshot_id)").format(
                table
            )
            prefix, order_prefix = "s", [sql.SQL("s.taken_at")]
            order_alias = "o"
        else:
            head = sql.SQL("SELECT t.* FROM {} t").format(table)
            prefix, order_prefix, order_alias = "t", [], "t"
        where: list[sql.Composable] = []
        params: list[Any] = []
        time_column = sql.Identifier(prefix, source.time_column)
        if self.pair is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(prefix, "pair")))
            params.append(self.pair)
        if self.since is not None:
            where.append(sql.SQL("{} >= %s").format(time_column))
            params.append(self.since)
        if self.until is not None:
            where.append(sql.SQL("{} < %s").format(time_column))
            params.append(self.until)
        parts: list[sql.Composable] = [head]
        if where:
            parts += [sql.SQL(" WHERE "), sql.SQL(" AND ").join(where)]
        order = order_prefix + [sql.Identifier(order_alias, c) for c in source.order]
        parts += [sql.SQL(" ORDER BY "), sql.SQL(", ").join(order)]
        return sql.Composed(parts), params


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ExportError(f"not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.drawn_at = total, stream, 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn_at < 0.2:
            return
        self.drawn_at = now
        fraction = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(30 * fraction)
        self.stream.write(f"\r[{bar:<30}] {done}/{self.total} rows {fraction:4.0%}")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()


def export(
    dsn: str,
    selection: Selection,
    fmt: str,
    out: Path,
    batch_rows: int = 50_000,
    progress: bool | None = None,
) -> int:
    """Write the selected rows to `out`; returns how many. `progress`: None = on a terminal."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: choose parquet or csv")
    query, params = selection.query()
    show = sys.stderr.isatty() if progress is None else progress
    with psycopg.connect(dsn) as conn:
        conn.read_only = True
        conn.execute("SET TIME ZONE 'UTC'")
        bar = None
        if show:
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM ({}) q").format(query), params
            ).fetchone()
            bar = Progress(int(count[0]) if count else 0, sys.stderr)
        if fmt == "csv":
            rows = _write_csv(conn, query, params, out, bar)
        else:
            rows = _write_parquet(conn, query, params, out, batch_rows, bar)
        if bar is not None:
            bar.close(rows)
    return rows


def _write_csv(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: Sequence[Any],
    out: Path,
    bar: Progress | None,
) -> int:
    # COPY cannot take parameters: bind them client-side into the statement's text.
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(
        sql.SQL(psycopg.ClientCursor(conn).mogrify(query, params))
    )
    lines = 0
    with conn.cursor() as cursor:
        with cursor.copy(statement) as copy, out.open("wb") as file:
            for block in copy:
                file.write(block)
                if bar is not None:
                    # Newlines inside quoted text count too: good enough for the bar.
                    lines += bytes(block).count(b"\n")
                    bar.update(max(0, lines - 1))
        return cursor.rowcount  # the server's own count of rows copied


def _write_parquet(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    params: Sequence[Any],
    out: Path,
    batch_rows: int,
    bar: Progress | None,
) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError(
            "Parquet needs pyarrow: pip install 'bitexbit-recorder[research]' (or use --format csv)"
        ) from exc
    columns = _describe(conn, query, params)
    numeric = [name for name, oid in columns if oid == NUMERIC_OID]
    decimals = _decimal_types(conn, query, params, numeric)
    fields, converters = [], []
    for name, oid in columns:
        arrow_type, convert = _arrow_type(pa, oid, decimals.get(name))
        fields.append(pa.field(name, arrow_type))
        converters.append(convert)
    schema = pa.schema(fields)
    rows = 0
    with (
        conn.cursor(name="recorder_export") as cursor,
        pq.ParquetWriter(str(out), schema) as writer,
    ):
        cursor.itersize = batch_rows
        cursor.execute(query, params)
        while batch := cursor.fetchmany(batch_rows):
            arrays = [
                pa.array([convert(row[i]) for row in batch], type=field.type)
                for i, (field, convert) in enumerate(zip(fields, converters, strict=True))
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(batch)
            if bar is not None:
                bar.update(rows)
    return rows


def _describe(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any]
) -> list[tuple[str, int]]:
    cursor = conn.execute(sql.SQL("SELECT * FROM ({}) q LIMIT 0").format(query), params)
    return [(column.name, column.type_code) for column in cursor.description or []]


@dataclass(frozen=True, slots=True)
class DecimalShape:
    """The largest scale and the most integer digits of a numeric column's values."""

    scale: int
    integer_digits: int


def _decimal_types(
    conn: psycopg.Connection[Any], query: sql.Composed, params: Sequence[Any], names: list[str]
) -> dict[str, DecimalShape]:
    if not names:
        return {}
    aggregates: list[sql.Composable] = []
    for name in names:
        column = sql.Identifier("q", name)
        aggregates.append(sql.SQL("coalesce(max(scale({})), 0)").format(column))
        aggregates.append(sql.SQL("coalesce(max(length(trunc(abs({}))::text)), 1)").format(column))
    row = conn.execute(
        sql.SQL("SELECT {} FROM ({}) q").format(sql.SQL(", ").join(aggregates), query), params
    ).fetchone()
    assert row is not None  # an aggregate always returns a row
    return {
        name: DecimalShape(int(row[2 * i]), int(row[2 * i + 1])) for i, name in enumerate(names)
    }


def _arrow_type(pa: Any, oid: int, shape: DecimalShape | None) -> tuple[Any, Callable[[Any], Any]]:
    """The Arrow type of a PostgreSQL column and how to convert its Python values."""
    same: Callable[[Any], Any] = _identity
    if oid == NUMERIC_OID and shape is not None:
        if shape.scale + shape.integer_digits <= 38:
            return pa.decimal128(38, shape.scale), same
        if shape.scale + shape.integer_digits <= 76:
            return pa.decimal256(76, shape.scale), same
        return pa.string(), _decimal_text
    simple = {
        16: pa.bool_(),
        20: pa.int64(),
        21: pa.int16(),
        23: pa.int32(),
        25: pa.string(),
        1043: pa.string(),
        700: pa.float32(),
        701: pa.float64(),
        1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"),
    }
    if oid in simple:
        return simple[oid], same
    return pa.string(), _text  # uuid, interval, ...: their text


def _identity(value: Any) -> Any:
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
