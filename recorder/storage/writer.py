"""The one writer: typed records in, batched idempotent inserts out, nothing lost meanwhile.

Sources call `put()` (never blocks, never fails). A background task commits what is
buffered when a batch is full or at most `flush_interval_s` after the oldest buffered
record arrived. A batch is one transaction; for each table in it, a binary COPY into a
session-private staging table, then `INSERT ... SELECT ... ON CONFLICT` from there.
`bench/writer.py` measured this faster than the one-round-trip alternative (`INSERT ...
SELECT * FROM unnest(<one array per column>)`): psycopg's binary COPY encodes rows in C,
while array parameters go through Python; on a LAN the extra round trips cost well under a
millisecond against tens of milliseconds per batch. Primary keys make every write
idempotent, so a batch retried after an unclear failure cannot duplicate anything.

When the database is down the records go to the durable spool under `data_dir` every
`flush_interval_s` (so a killed process loses no more than with the database up), and
whenever more than `max_buffer_rows` are in memory the oldest are spilled there too; when the
database is back, the spool is drained before anything newer. On shutdown whatever cannot be
committed in time is spilled too, so the next start picks it up. Final states never depend
on the order in which rows arrive (upserts only move a row forward in time), which makes
retries safe.

A row the database refuses (a value it cannot store) is not retried forever: its batch is
written row by row, and each refused record is kept verbatim in `raw_messages` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg

from recorder import metrics
from recorder.backoff import Backoff
from recorder.logs import get_logger
from recorder.records import RawMessage, Record, new_id, utc_now
from recorder.storage.spool import Spool, encode
from recorder.storage.tables import SPECS, Row, TableSpec

log = get_logger(__name__)

# Errors that mean "the database is not there right now": retry later, keep everything.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)
# Errors that mean "the database will never take this row": isolate it, keep it verbatim.
# The last two are raised while encoding a row on our side (an integer beyond bigint, text
# with a lone surrogate); retried as an outage, one such row would block every later write.
REFUSED = (psycopg.DataError, psycopg.IntegrityError, OverflowError, ValueError)

WRITER_ROLE = "recorder_writer"


class Writer:
    def __init__(
        self,
        dsn: str,
        spool_dir: Path,
        *,
        batch_rows: int = 5000,
        flush_interval_s: float = 0.25,
        max_buffer_rows: int = 100_000,
        statement_timeout_s: float = 30.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._max_buffer_rows = max_buffer_rows
        self._statement_timeout_s = statement_timeout_s
        self._backoff = Backoff(initial_s=retry_initial_s, max_s=retry_max_s)
        self._spool = Spool(spool_dir)
        self._pending: deque[Record] = deque()
        self._inflight: list[Record] = []
        self._oldest_at: float | None = None
        self._wakeup = asyncio.Event()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0
        metrics.db_up.set(0)
        self._update_gauges()

    # -- what sources use -------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Take a record for writing; returns at once (the database may be down)."""
        if not self._pending:
            self._oldest_at = time.monotonic()
        self._pending.append(record)
        if len(self._pending) == 1 or len(self._pending) >= self._batch_rows:
            # An idle writer waits for a wake-up with no timer running: without this, a
            # lone record (the last trades of a catch-up on a quiet market) would wait
            # for the next put_many or flush, not flush_interval_s.
            self._wakeup.set()
        metrics.write_buffer_rows.inc()
        if len(self._pending) > self._max_buffer_rows:
            self._spill(len(self._pending) - self._max_buffer_rows // 2)

    def put_many(self, records: Iterable[Record]) -> None:
        for record in records:
            self.put(record)
        self._wakeup.set()

    @property
    def buffered_rows(self) -> int:
        """Rows received but not yet committed: in memory and in the spool."""
        return len(self._pending) + len(self._inflight) + self._spool.rows

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="writer")

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything put so far is committed; False if that took too long."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.buffered_rows:
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._wakeup.set()
            await asyncio.sleep(0.01)
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is buffered within `timeout_s`; spill the rest to the spool; stop.

        In the middle of an outage there is no point waiting: the rows go to the spool at
        once, and the next start commits them.
        """
        drained = False if self._failures else await self.flush(timeout_s)
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not drained and self._pending:
            log.warning(
                "rows not committed before shutdown: spilling them to the spool",
                rows=len(self._pending),
                spool=str(self._spool.directory),
            )
            self._spill(len(self._pending))
        await self._disconnect()
        self._update_gauges()

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            await self._wait_for_work()
            try:
                await self._write_next()
            except UNAVAILABLE as exc:
                await self._on_unavailable(exc)
            except Exception as exc:
                # Not a known outage and not a refused row: log it, treat it as an outage
                # (keep everything, retry with backoff) rather than die or drop data.
                log.error("unexpected error writing a batch", error=repr(exc))
                await self._on_unavailable(exc)

    async def _wait_for_work(self) -> None:
        if self._spool.rows or len(self._pending) >= self._batch_rows:
            return
        if not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
            return
        assert self._oldest_at is not None
        due_in_s = self._oldest_at + self._flush_interval_s - time.monotonic()
        if due_in_s > 0:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), due_in_s)

    async def _write_next(self) -> None:
        """Commit the oldest buffered work: a spool segment first, else a memory batch."""
        segments = self._spool.segments()
        if segments:
            segment = segments[0]
            good, bad = self._spool.read(segment)
            refused = [_refused_record("spool", line, reason) for line, reason in bad]
            await self._commit([*good, *refused])
            self._spool.remove(segment)
        elif self._pending:
            # The batch leaves `_pending` while in flight, so that a spill meanwhile (which
            # takes the oldest of `_pending`) cannot take it too; it returns on any failure.
            count = min(len(self._pending), self._batch_rows)
            self._inflight = [self._pending.popleft() for _ in range(count)]
            try:
                await self._commit(self._inflight)
            except BaseException:
                self._pending.extendleft(reversed(self._inflight))
                raise
            finally:
                self._inflight = []
            self._oldest_at = time.monotonic() if self._pending else None
        self._update_gauges()

    async def _commit(self, batch: list[Record]) -> None:
        conn = await self._connection()
        started = time.perf_counter()
        try:
            counts = await self._insert(conn, _group_by_table(batch))
        except REFUSED as exc:
            log.warning("the database refused a batch; writing it row by row", error=str(exc))
            counts = await self._insert_one_by_one(conn, batch)
        metrics.db_write_duration.observe(time.perf_counter() - started)
        for table, count in counts.items():
            metrics.rows_written.labels(table).inc(count)
        if self._failures:
            log.info("the database accepts writes again", buffered_rows=self.buffered_rows)
        self._failures = 0
        metrics.db_up.set(1)
        metrics.last_flush_timestamp.set_to_current_time()

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], groups: dict[TableSpec, list[Row]]
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with conn.transaction(), conn.cursor() as cursor:
            for spec, rows in groups.items():
                async with cursor.copy(spec.copy_sql()) as copy:
                    copy.set_types(spec.types)
                    for row in rows:
                        await copy.write_row(row)
                await cursor.execute(spec.merge_sql())
                counts[spec.name] = max(cursor.rowcount, 0)
        return counts

    async def _insert_one_by_one(
        self, conn: psycopg.AsyncConnection[Any], batch: list[Record]
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in batch:
            try:
                written = await self._insert(conn, _group_by_table([record]))
            except REFUSED as exc:
                metrics.malformed_messages.labels("writer").inc()
                log.warning("row refused by the database, kept in raw_messages", error=str(exc))
                written = await self._insert(
                    conn, _group_by_table([_refused_record("writer", encode(record), str(exc))])
                )
            for table, count in written.items():
                counts[table] = counts.get(table, 0) + count
        return counts

    # -- the connection ----------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=5,
            options=f"-c statement_timeout={int(self._statement_timeout_s * 1000)}",
        )
        # After migrating, the writer needs no DDL rights: drop them when the role exists.
        row = await (
            await conn.execute(
                "SELECT pg_has_role(current_user, oid, 'SET') FROM pg_roles WHERE rolname = %s",
                (WRITER_ROLE,),
            )
        ).fetchone()
        if row is not None and row[0]:
            await conn.execute(f"SET ROLE {WRITER_ROLE}")
        # Outside any transaction, so that a rolled-back batch cannot take them away.
        for spec in SPECS.values():
            await conn.execute(spec.create_stage_sql())
        self._conn = conn
        return conn

    async def _disconnect(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _on_unavailable(self, exc: BaseException) -> None:
        metrics.db_up.set(0)
        await self._disconnect()
        self._failures += 1
        delay_s = self._backoff.delay_s(self._failures - 1)
        if self._failures == 1:
            log.warning(
                "database unavailable; buffering and retrying",
                error=str(exc).strip() or repr(exc),
                buffered_rows=self.buffered_rows,
            )
        # Until it is back, what arrives goes to the durable spool every flush interval, as it
        # would have gone to the database: a process killed meanwhile (SIGKILL, OOM) loses no
        # more than it would with the database up. (Kept in memory, the chaos run lost all the
        # events of a 13 s outage to a SIGKILL just after it.)
        deadline = time.monotonic() + delay_s
        while True:
            if self._pending:
                self._spill(len(self._pending), quiet=True)
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or self._stopping:
                return
            await asyncio.sleep(min(remaining_s, self._flush_interval_s))

    # -- memory bound -----------------------------------------------------------------

    def _spill(self, count: int, *, quiet: bool = False) -> None:
        """Move the `count` oldest buffered records to the durable spool."""
        batch = [self._pending.popleft() for _ in range(min(count, len(self._pending)))]
        segment = self._spool.append(batch)
        if segment is not None:
            say = log.debug if quiet else log.info
            say("spilled buffered rows to the spool", rows=len(batch), segment=segment.name)
        self._oldest_at = time.monotonic() if self._pending else None
        self._update_gauges()

    def _update_gauges(self) -> None:
        metrics.write_buffer_rows.set(self.buffered_rows)
        metrics.spool_rows.set(self._spool.rows)
        metrics.spool_bytes.set(self._spool.bytes)


def _group_by_table(batch: list[Record]) -> dict[TableSpec, list[Row]]:
    """Rows per table in arrival order, one row per key.

    A statement may not upsert the same key twice, so duplicates are resolved here: the
    first copy wins for append-only tables (the database would keep the first too), the
    last for upserted ones (the newest observation).
    """
    groups: dict[TableSpec, dict[Row, Row]] = {}
    for record in batch:
        spec = SPECS[type(record)]
        rows = groups.setdefault(spec, {})
        row = spec.to_row(record)
        key = spec.key_of(row)
        if spec.upserts or key not in rows:
            rows[key] = row
    return {spec: list(rows.values()) for spec, rows in groups.items()}


def _refused_record(source: str, payload: str, reason: str) -> RawMessage:
    return RawMessage(
        id=new_id(),
        received_at=utc_now(),
        source=source,
        event=None,
        payload=payload,
        error=reason,
    )
