"""One batch into the database, on the writer's connection: what a commit is, and what a
value the database cannot store does.

A batch is one transaction. Each append-only table's rows are copied (binary COPY) straight
into the table inside a savepoint: most batches hold no row already stored, and for those
this is as fast as writing gets. When the COPY meets a key the table already holds (a
replayed spool, a restart's overlap, a second recorder), PostgreSQL refuses it whole with a
unique violation; the savepoint undoes it, and the batch takes the merging path: a binary
COPY into a session-private staging table, then `INSERT ... SELECT ... ON CONFLICT`, which
stores only what is new. That table keeps merging until a batch merges with nothing
already stored, so a long replay pays for one refused COPY, not one per batch. Upserted
tables always merge (their second observation is the usual case). Either way every write
can be repeated without a second row: the key decides (docs/benchmarks.md, "Writer", has
the figures behind this choice).

`bench/writer.py` also measured the one-round-trip alternative (`INSERT ... SELECT * FROM
unnest(<one array per column>)`) slower: psycopg's binary COPY encodes rows in C, while
array parameters go through Python.

A batch the database refuses (`REFUSED`: a value it cannot store) is written row by row, and
each refused record is kept verbatim in `raw_messages`. Written row by row on request
(`isolate`), a row failing alone for any other reason (an error of ours) is handed back with
its error, for the writer to set aside. What the writer does with each outcome, and why, is
in docs/reliability.md, "The writer and its spool".
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.errors import UniqueViolation

from recorder import metrics
from recorder.logs import get_logger
from recorder.records import RawMessage, Record, new_id, utc_now
from recorder.storage.numeric import use_c_numerics
from recorder.storage.spool import encode
from recorder.storage.tables import SPECS, Row, TableSpec

log = get_logger(__name__)

# Errors that mean "the database is not there right now": retry later, keep everything.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
# Errors that mean "the database will never take this row": isolate it, keep it verbatim.
# psycopg.DataError and IntegrityError come from the server (a NUL in text, a CHECK) or from
# psycopg's own dumpers (a decimal beyond numeric's range); UnicodeEncodeError (text with a
# lone surrogate) is raised while psycopg encodes the row, and OverflowError by our own range
# check of integer columns (`_check_integers`). Nothing else: any other error is a bug of
# ours, and storing its row as if the exchange had sent something bad would hide it.
REFUSED = (psycopg.DataError, psycopg.IntegrityError, OverflowError, UnicodeEncodeError)

WRITER_ROLE = "recorder_writer"
# Rows encoded between two writes of a COPY: small enough that PostgreSQL starts on a batch
# while the rest is encoded, large enough that the writes themselves cost nothing
# (docs/benchmarks.md, "Writer").
COPY_CHUNK_ROWS = 500
INTEGER_BITS = {"int2": 16, "int4": 32, "int8": 64}


class DatabaseUnavailable(Exception):
    """The database could not be reached or dropped the connection; the cause is chained."""


@dataclass(slots=True)
class Committed:
    rows: dict[str, int] = field(default_factory=dict)
    """Rows stored or updated, per table (replayed duplicates do not count)."""
    failed: list[tuple[Record, Exception]] = field(default_factory=list)
    """Rows that failed alone for a reason of ours (only when written row by row)."""


class Committer:
    def __init__(self, dsn: str, *, statement_timeout_s: float) -> None:
        self._dsn = dsn
        self._statement_timeout_s = statement_timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # Tables whose last batch met rows already stored: they merge until a batch merges
        # with nothing already there. A hint only: a rolled-back batch may leave it stale.
        self._merging: set[TableSpec] = set()
        # The staging tables this connection has, made when a table first merges: most
        # tables never do, and making all fifteen cost more than a whole batch.
        self._staged: set[TableSpec] = set()
        self._staging: set[TableSpec] = set()  # made by the batch in progress

    async def commit(self, batch: list[Record], *, isolate: bool = False) -> Committed:
        """Commit `batch`, row by row if `isolate`.

        Raises `DatabaseUnavailable` for an outage; any other exception is an error of ours
        in the batch as a whole, which `isolate` narrows down to its rows.
        """
        conn = await self._connection()
        if isolate:
            return await self._insert_one_by_one(conn, batch)
        try:
            return Committed(await self._insert(conn, _group_by_table(batch)))
        except REFUSED as exc:
            log.warning("the database refused a batch; writing it row by row", error=str(exc))
            return await self._insert_one_by_one(conn, batch)

    @property
    def merging(self) -> frozenset[str]:
        """The tables whose next batch merges (through staging) instead of a straight COPY."""
        return frozenset(spec.name for spec in self._merging)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                await conn.close()

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], groups: dict[TableSpec, list[Row]]
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        self._staging = set()
        try:
            async with conn.transaction(), conn.cursor() as cursor:
                for spec, rows in groups.items():
                    _check_integers(spec, rows)
                    counts[spec.name] = await self._write_table(conn, cursor, spec, rows)
        except UNAVAILABLE as exc:
            raise DatabaseUnavailable from exc
        # Only now: a staging table made by a batch that rolled back is gone with it.
        self._staged |= self._staging
        return counts

    async def _write_table(
        self,
        conn: psycopg.AsyncConnection[Any],
        cursor: psycopg.AsyncCursor[Any],
        spec: TableSpec,
        rows: list[Row],
    ) -> int:
        """Store `rows` (one per key) in `spec`'s table; return how many were new or updated."""
        if not spec.copies_straight_in or spec in self._merging:
            return await self._merge(cursor, spec, rows)
        try:
            async with conn.transaction():  # a savepoint: a refused COPY undoes only itself
                await _copy(cursor, spec.copy_straight_sql(), spec, rows)
        except UniqueViolation:
            self._merging.add(spec)
            return await self._merge(cursor, spec, rows)
        return len(rows)

    async def _merge(
        self, cursor: psycopg.AsyncCursor[Any], spec: TableSpec, rows: list[Row]
    ) -> int:
        if spec not in self._staged:
            await cursor.execute(spec.create_stage_sql())
            self._staging.add(spec)
        await _copy(cursor, spec.copy_sql(), spec, rows)
        await cursor.execute(spec.merge_sql())
        stored = max(cursor.rowcount, 0)
        if stored == len(rows):
            self._merging.discard(spec)  # nothing was there: the next batch may go straight in
        return stored

    async def _insert_one_by_one(
        self, conn: psycopg.AsyncConnection[Any], batch: list[Record]
    ) -> Committed:
        """Write `batch` a row at a time: refused rows are kept in `raw_messages`, rows that
        fail for any other reason (but an outage) are handed back with their error."""
        committed = Committed()
        for record in batch:
            try:
                written = await self._insert(conn, _group_by_table([record]))
            except REFUSED as exc:
                metrics.malformed_messages.labels("writer").inc()
                log.warning("row refused by the database, kept in raw_messages", error=str(exc))
                written = await self._insert(
                    conn, _group_by_table([refused_record("writer", encode(record), str(exc))])
                )
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                committed.failed.append((record, exc))
                # The error may have left the connection in any state: start afresh.
                await self.close()
                conn = await self._connection()
                continue
            for table, count in written.items():
                committed.rows[table] = committed.rows.get(table, 0) + count
        return committed

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=5,
                options=f"-c statement_timeout={int(self._statement_timeout_s * 1000)}",
            )
        except Exception as exc:
            # Whatever stops a connection (unreachable, a wrong password, a database that
            # does not exist yet) is not about any row: wait and try again.
            raise DatabaseUnavailable from exc
        use_c_numerics(conn)
        try:
            # After migrating, the writer needs no DDL rights: drop them when the role exists.
            row = await (
                await conn.execute(
                    "SELECT pg_has_role(current_user, oid, 'SET') FROM pg_roles WHERE rolname = %s",
                    (WRITER_ROLE,),
                )
            ).fetchone()
            if row is not None and row[0]:
                await conn.execute(f"SET ROLE {WRITER_ROLE}")
        except Exception as exc:
            await conn.close()
            raise DatabaseUnavailable from exc
        self._conn = conn
        self._staged = set()
        return conn


_INTEGER_COLUMNS: dict[TableSpec, list[tuple[int, int]]] = {
    spec: [
        (position, 2 ** (INTEGER_BITS[pgtype] - 1))
        for position, (_, pgtype) in enumerate(spec.columns)
        if pgtype in INTEGER_BITS
    ]
    for spec in SPECS.values()
}  # of `to_row`'s rows, before any split: a split's units and scale fit by construction


async def _copy(
    cursor: psycopg.AsyncCursor[Any], sql: str, spec: TableSpec, rows: list[Row]
) -> None:
    async with cursor.copy(sql) as copy:
        copy.set_types(spec.types)
        # Encoded a chunk of rows at a time, each chunk sent in one write: PostgreSQL parses
        # and stores one chunk (on the other core) while the next is encoded here. The whole
        # batch in one write left each side idle while the other worked; `write_row` per row
        # cost a coroutine a row (docs/benchmarks.md, "Writer"). The formatter is the one
        # `write_row` uses, so the bytes are the same.
        # The stored table's rows (scaled Decimals split) are made a chunk at a time too:
        # made for the whole batch before the COPY, they kept PostgreSQL waiting.
        encode_row = copy.formatter.write_row
        for start in range(0, len(rows), COPY_CHUNK_ROWS):
            chunk = spec.stored_rows(rows[start : start + COPY_CHUNK_ROWS])
            await copy.write(b"".join(map(encode_row, chunk)))


def _check_integers(spec: TableSpec, rows: list[Row]) -> None:
    """Refuse an integer its column cannot hold, the same way whichever psycopg runs: its C
    implementation stores 2**31 in an `integer` column as -2147483648, and its pure Python
    one raises `struct.error` for any integer out of range. (A value that is no integer at
    all is a bug of ours, left to psycopg to raise.) One pass of min() and max() per column,
    in C: a row at a time in Python cost more than encoding the row."""
    for position, limit in _INTEGER_COLUMNS[spec]:
        values = list(map(operator.itemgetter(position), rows))
        if None in values:  # a nullable column: found, and filtered, in C
            values = list(filter(_is_not_none, values))
        try:
            in_range = not values or (-limit <= min(values) and max(values) < limit)
        except TypeError:  # a value that is no integer: psycopg says which
            continue
        if not in_range:
            value = next(v for v in values if isinstance(v, int) and not -limit <= v < limit)
            column = spec.columns[position][0]
            raise OverflowError(f"{spec.name}.{column} = {value} is out of range")


_is_not_none = functools.partial(operator.is_not, None)


def _group_by_table(batch: list[Record]) -> dict[TableSpec, list[Row]]:
    """Rows per table in arrival order, one row per key.

    A statement may not upsert the same key twice, and a COPY straight into the table would
    be refused, so duplicates are resolved here: the first copy wins for append-only tables
    (the database would keep the first too), the last for upserted ones (the newest
    observation).
    """
    # A batch holds few record types: one pass per type, each in C, beats a Python loop
    # over the records. dict.fromkeys keeps the types in arrival order.
    kinds = list(map(type, batch))
    types = dict.fromkeys(kinds)
    groups: dict[TableSpec, list[Row]] = {}
    for record_type in types:
        spec = SPECS[record_type]
        if len(types) == 1:
            records = batch
        else:
            same_type = map(functools.partial(operator.is_, record_type), kinds)
            records = list(itertools.compress(batch, same_type))
        groups[spec] = _one_per_key(spec, list(map(spec.to_row, records)))
    return groups


def _one_per_key(spec: TableSpec, rows: list[Row]) -> list[Row]:
    if len(set(map(spec.row_key, rows))) == len(rows):
        return rows  # the usual case, found in C
    unique: dict[Any, Row] = {}
    for row in rows:
        key = spec.row_key(row)
        if spec.upserts or key not in unique:
            unique[key] = row
    return list(unique.values())


def refused_record(source: str, payload: str, reason: str) -> RawMessage:
    """What is kept, verbatim, of something that cannot be stored as a row: `payload` is
    the record's spool line, and `reason` why it could not be stored."""
    return RawMessage(
        id=new_id(),
        received_at=utc_now(),
        source=source,
        event=None,
        payload=payload,
        error=reason,
    )
