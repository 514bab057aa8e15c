"""The one writer: typed records in, batched idempotent inserts out, nothing lost meanwhile.

Sources call `put()`, which only appends to memory and wakes the worker: it never blocks,
never touches the disk and never fails. The worker (a task the writer owns) commits by group
commit: whenever rows are waiting and no commit is in flight, it commits them (up to
`batch_rows`), one transaction a batch (`recorder/storage/committer.py`). While one commit
is in flight the next batch gathers, so a row waits for the commit in flight and its own
(more only while over `batch_rows` are waiting), and the database sees no more commits a
second than it can finish: under load the batches grow instead. Only while few rows wait
does a batch gather a little longer (`GATHER_S`, 50 ms), so that a quiet stream is not
committed a few rows at a time. Primary
keys make every write idempotent, so a batch retried after an unclear failure cannot
duplicate anything.

When the database is down the records go to the durable spool under `data_dir` every
`flush_interval_s` (so a killed process loses no more than with the database up), and
whenever more than `max_buffer_rows` are in memory the oldest are spilled there too; when the
database is back, the spool is drained before anything newer. On shutdown whatever cannot be
committed in time is spilled too, so the next start picks it up. Final states never depend
on the order in which rows arrive (upserts only move a row forward in time), which makes
retries safe. The spool is read and written in a worker thread, so a slow disk delays the
spool, not the stream; rows leave memory only once the spool has them on disk. While the
spool cannot be written (a full disk), rows stay in memory, beyond `max_buffer_rows` if need
be, and spilling resumes when it can (docs/reliability.md, "The writer and its spool").

The worker never dies of an error: every failure is logged, counted and retried with
backoff. Three kinds are told apart:
- the database is not there (`committer.DatabaseUnavailable`): keep everything, retry,
  `recorder_db_up` 0;
- the database will never take a row (`committer.REFUSED`, a value it cannot store): the
  batch is written row by row and each refused record is kept verbatim in `raw_messages`;
- anything else is an error of ours (a record of the wrong type, a bug in this module):
  counted in `recorder_task_failures_total{task="writer"}`, and the batch is retried row by
  row, so that the rows that can be written are, and those that cannot are set aside on disk
  (`held`), not stored as if the exchange had sent them. Held rows are tried again at each
  start, so a fixed release commits them, and every `held_retry_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

from recorder import metrics
from recorder.logs import get_logger
from recorder.records import Record
from recorder.retry import DATABASE_RETRY, SPOOL_RETRY, Backoff
from recorder.storage.committer import Committer, DatabaseUnavailable, refused_record
from recorder.storage.spool import Spool, UnencodableRecord

log = get_logger(__name__)

T = TypeVar("T")

TASK_NAME = "writer"
HELD_RETRY_S = 300.0
GATHER_S = 0.05
"""How long the oldest waiting row may wait for others to share its commit, while fewer than
`GATHER_ROWS` wait: at a few thousand rows a second, committing whatever waits the moment
the last commit is done made hundreds of commits of a few rows a second, each costing the
recorder about as much CPU as a few hundred rows (docs/benchmarks.md, "Ingest")."""
GATHER_ROWS = 1000
"""Rows enough for a commit to go at once."""


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
        retry: Backoff = DATABASE_RETRY,
        spool_retry: Backoff = SPOOL_RETRY,
        held_retry_s: float = HELD_RETRY_S,
    ) -> None:
        self._committer = Committer(dsn, statement_timeout_s=statement_timeout_s)
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._max_buffer_rows = max_buffer_rows
        self._held_retry_s = held_retry_s
        self._spool = Spool(spool_dir)
        self._held = Spool(spool_dir / "held")
        self._pending: deque[Record] = deque()
        self._inflight: list[Record] = []
        self._oldest_at: float | None = None
        self._left_behind = False
        """The last batch could not take every waiting row: what it left goes at once."""
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._isolate = False
        self._task: asyncio.Task[NoReturn] | None = None
        self._closing = False
        # One retry state per thing that can fail, and when each may be tried again.
        self._database = retry.attempts()
        self._database_retry_at = 0.0
        self._errors = retry.attempts()
        self._writes = _SpoolHealth(_WRITES, self._spool, spool_retry)
        self._reads = _SpoolHealth(_READS, self._spool, spool_retry)
        self._held_retry_at = 0.0
        metrics.db_up.set(0)
        metrics.spool_writable.set(1)
        # Read at each scrape: counting it at each put() cost as much as encoding the row.
        metrics.write_buffer_rows.set_function(lambda: self.buffered_rows)
        self._update_gauges()

    # -- what sources use -------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Take a record for writing; returns at once (the database may be down)."""
        # Called for every event: kept to a few operations (docs/benchmarks.md, "Writer").
        pending = self._pending
        if not pending:
            self._oldest_at = time.monotonic()
            self._left_behind = False
            # An idle worker waits for this wake-up with no timer running. Once rows are
            # waiting it needs no other: it commits again as soon as its commit is done.
            self._wakeup.set()
        pending.append(record)
        if len(pending) == GATHER_ROWS:
            self._wakeup.set()  # enough to commit without gathering longer
        elif len(pending) > self._max_buffer_rows:
            self._wakeup.set()  # to spill, even while the database is down
        task = self._task
        if task is not None and task.done():
            self._watch_worker()

    def put_many(self, records: Iterable[Record]) -> None:
        if not self._pending:
            self._oldest_at = time.monotonic()
            self._left_behind = False
        self._pending.extend(records)
        if self._pending:
            self._wakeup.set()
        self._watch_worker()

    @property
    def buffered_rows(self) -> int:
        """Rows received but not yet committed: in memory and in the spool (not held rows)."""
        return len(self._pending) + len(self._inflight) + self._spool.rows

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # What an earlier run left is counted before anyone asks (buffered_rows, flush).
        await self._open_spools()
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
        self._task = asyncio.create_task(self._run(), name=TASK_NAME)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything put so far is committed; False if that took too long.

        That includes what earlier runs left in the spool, so an unopened spool (a failing
        disk at start) is not done: it may hold rows nobody has counted yet.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.buffered_rows or not self._spool.opened:
            self._watch_worker()
            remaining_s = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining_s <= 0:
                return False
            self._progress.clear()
            self._wakeup.set()
            # Not longer than a second without looking at the worker (it may have died).
            await _wait(self._progress, min(remaining_s, 1.0))
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is buffered within `timeout_s`; spill the rest to the spool; stop.

        In the middle of an outage there is no point waiting: the rows go to the spool at
        once, and the next start commits them.
        """
        drained = False if self._database.failures else await self.flush(timeout_s)
        self._closing = True
        await self._stop_worker()
        if not drained and self._pending:
            log.warning(
                "rows not committed before shutdown: spilling them to the spool",
                rows=len(self._pending),
                spool=str(self._spool.directory),
            )
            await self._spill(len(self._pending))
            if self._pending:
                log.error(
                    "the spool cannot be written at shutdown: these rows end with the process",
                    rows=len(self._pending),
                    spool=str(self._spool.directory),
                )
        await self._committer.close()
        self._update_gauges()

    async def _stop_worker(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            # The worker lets a spool write in progress finish before it stops (_on_disk).
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # it ended before close() asked: say so, and go on closing
            log.error("the writer's worker had stopped", error=_describe(exc), exc_info=exc)

    def _watch_worker(self) -> None:
        """Start the worker again if it ended, which its loop is built never to let happen."""
        task = self._task
        if task is None or not task.done() or self._closing:
            return
        cause = None if task.cancelled() else task.exception()
        metrics.task_failures.labels(TASK_NAME).inc()
        log.error(
            "the writer's worker had stopped; starting it again",
            error=_describe(cause) if cause is not None else "cancelled",
            buffered_rows=self.buffered_rows,
            exc_info=cause,
        )
        self.start()

    # -- the worker -------------------------------------------------------------------

    async def _run(self) -> NoReturn:
        while True:
            try:
                await self._wait_for_work()
                await self._step()
            except Exception as exc:  # not CancelledError: close() still stops the worker
                # The steps handle every failure they expect; this one is a bug of ours.
                # Logged and counted, and the worker goes on after a pause.
                delay_s = self._errors.failed()
                metrics.task_failures.labels(TASK_NAME).inc()
                log.error(
                    "the writer failed; trying again",
                    error=_describe(exc),
                    retry_in_s=round(delay_s, 2),
                    exc_info=exc,
                )
                await asyncio.sleep(delay_s)
            finally:
                self._progress.set()

    async def _wait_for_work(self) -> None:
        self._wakeup.clear()
        due = self._next_due()
        if due is None:
            await self._wakeup.wait()
            return
        wait_s = due - time.monotonic()
        if wait_s <= 0:
            await asyncio.sleep(0)  # due now, but let the sources run between two steps
            return
        await _wait(self._wakeup, wait_s)

    def _next_due(self) -> float | None:
        """When the worker has something to do next (monotonic), None if not until woken."""
        dues = [self._spill_due(), self._commit_due(), self._held_due()]
        if not (self._spool.opened and self._held.opened) or self._probe_due():
            dues.append(self._writes.retry_at)
        return min((due for due in dues if due is not None), default=None)

    def _spill_due(self) -> float | None:
        if not self._pending:
            return None
        if len(self._pending) > self._max_buffer_rows:
            due = 0.0
        elif self._database.failures and self._oldest_at is not None:
            # Until the database is back, what arrives goes to the durable spool every flush
            # interval, as it would have gone to the database: a process killed meanwhile
            # (SIGKILL, OOM) loses no more than it would with the database up.
            due = self._oldest_at + self._flush_interval_s
        else:
            return None
        return max(due, self._writes.retry_at)

    def _probe_due(self) -> bool:
        """The spool failed, and no spill is due that would find out when it works again."""
        return self._writes.failing and self._spill_due() is None

    def _commit_due(self) -> float | None:
        dues = []
        if self._spool.rows:
            dues.append(self._reads.retry_at)
        if self._pending:
            # Group commit: rows that arrived while the last commit was in flight go as
            # soon as it is done, under load at once (the rate of commits is bounded by how
            # long each takes, so the batches grow instead); at a lower rate once the oldest
            # has waited GATHER_S, so that a commit carries more than a few rows.
            oldest = self._oldest_at
            if oldest is None or len(self._pending) >= GATHER_ROWS or self._left_behind:
                dues.append(0.0)
            else:
                dues.append(oldest + GATHER_S)
        if not dues:
            return None
        return max(min(dues), self._database_retry_at)

    def _held_due(self) -> float | None:
        return self._held_retry_at if self._held.rows else None

    async def _step(self) -> None:
        now = time.monotonic()
        if not (self._spool.opened and self._held.opened) and now >= self._writes.retry_at:
            await self._open_spools()  # without it, the database is still written to
        if self._probe_due() and time.monotonic() >= self._writes.retry_at:
            await self._probe_spool()
        due = self._spill_due()
        if due is not None and due <= now:
            spill_to = self._max_buffer_rows // 2 if not self._database.failures else 0
            await self._spill(len(self._pending) - min(spill_to, len(self._pending)))
        due = self._commit_due()
        if due is not None and due <= time.monotonic():
            await self._write_next()
        due = self._held_due()
        if due is not None and due <= time.monotonic():
            await self._release_held()
        self._update_gauges()

    # -- the database -----------------------------------------------------------------

    async def _write_next(self) -> None:
        """Commit the oldest buffered work: a spool segment first, else a memory batch."""
        segments = self._spool.segments() if time.monotonic() >= self._reads.retry_at else []
        if segments:
            await self._write_segment(segments[0])
        elif self._pending:
            await self._write_memory_batch()

    async def _write_segment(self, segment: Path) -> None:
        try:
            good, bad = await self._on_disk(self._spool.read, segment)
        except OSError as exc:
            self._reads.failed("read", exc)
            return
        self._reads.worked()
        refused = [refused_record("spool", line, reason) for line, reason in bad]
        held = await self._commit([*good, *refused])
        if held is None:
            return
        try:
            await self._hold(held)
        except OSError as exc:
            self._writes.failed("write", exc)
            return  # the segment stays, and is committed again (idempotently) later
        try:
            await self._on_disk(self._spool.remove, segment)
        except OSError as exc:
            # Committed, and forgotten by the spool: the next start commits it once more.
            self._reads.failed("delete", exc)

    async def _write_memory_batch(self) -> None:
        # The batch leaves `_pending` while in flight, so that a spill meanwhile (close()
        # spills the oldest of `_pending`) cannot take it too. Whatever is still in flight
        # when this ends (a failure, a cancellation) goes back to the front of `_pending`.
        count = min(len(self._pending), self._batch_rows)
        # A batch that cannot take every waiting row is a burst's: what it leaves goes right
        # after it, as under load, without gathering again (a 10,000-order snapshot's last
        # row waited GATHER_S alone after its two full batches: docs/benchmarks.md).
        self._left_behind = count < len(self._pending)
        # Taken in C: a Python loop over the batch cost more than a row's encoding.
        self._inflight = list(itertools.starmap(self._pending.popleft, itertools.repeat((), count)))
        try:
            held = await self._commit(self._inflight)
            if held is None:
                return
            self._inflight = held  # the rest is committed
            if held:
                try:
                    await self._hold(held)
                except OSError as exc:
                    self._writes.failed("write", exc)
                    return
            self._inflight = []
        finally:
            self._pending.extendleft(reversed(self._inflight))
            self._inflight = []
            self._oldest_at = time.monotonic() if self._pending else None

    async def _commit(self, batch: list[Record]) -> list[Record] | None:
        """Commit `batch`; return the rows to set aside (see `_hold`), None if it failed.

        A failure is handled here (logged, counted, retried after a backoff): the caller
        keeps the batch and offers it again.
        """
        started = time.perf_counter()
        try:
            committed = await self._committer.commit(batch, isolate=self._isolate)
        except DatabaseUnavailable as exc:
            await self._database_failed(exc.__cause__ or exc)
            return None
        except Exception as exc:
            await self._batch_failed(exc, len(batch))
            return None
        metrics.db_write_duration.observe(time.perf_counter() - started)
        for table, count in committed.rows.items():
            metrics.rows_written.labels(table).inc(count)
        for record, error in committed.failed:
            metrics.task_failures.labels(TASK_NAME).inc()
            log.error(
                "a row cannot be written and is set aside under the spool's held/ directory",
                table=getattr(record, "TABLE", type(record).__name__),
                error=_describe(error),
                exc_info=error,
            )
        if self._database.failures:
            log.info("the database accepts writes again", buffered_rows=self.buffered_rows)
        self._database.succeeded()
        self._errors.succeeded()
        self._database_retry_at = 0.0
        self._isolate = False
        metrics.db_up.set(1)
        metrics.last_flush_timestamp.set_to_current_time()
        return [record for record, _ in committed.failed]

    async def _database_failed(self, exc: BaseException) -> None:
        metrics.db_up.set(0)
        await self._committer.close()
        delay_s = self._database.failed()
        self._database_retry_at = time.monotonic() + delay_s
        if self._database.failures == 1:
            log.warning(
                "database unavailable; spooling what arrives and retrying",
                error=_describe(exc),
                buffered_rows=self.buffered_rows,
            )

    async def _batch_failed(self, exc: Exception, rows: int) -> None:
        """A batch failed with an error that is neither an outage nor a refusal: a bug of
        ours, or of the data we made. Retried row by row after a pause, so that it cannot
        hold back the rows that can be written; failing row by row too (the writer itself is
        broken, not one row), the rows are kept and tried again after a longer pause."""
        metrics.task_failures.labels(TASK_NAME).inc()
        delay_s = self._errors.failed()
        self._database_retry_at = time.monotonic() + delay_s
        self._isolate = True
        await self._committer.close()
        log.error(
            "writing a batch failed; trying it again row by row",
            error=_describe(exc),
            rows=rows,
            retry_in_s=round(delay_s, 2),
            exc_info=exc,
        )

    # -- the spool --------------------------------------------------------------------

    async def _open_spools(self) -> None:
        try:
            await self._on_disk(self._spool.open)
            await self._on_disk(self._held.open)
        except OSError as exc:
            self._writes.failed("open", exc)
            return
        self._writes.worked()

    async def _probe_spool(self) -> None:
        """Whether the spool can be written again (`recorder_spool_writable`), when nothing
        is to be spilled: the database came back while the disk was failing."""
        try:
            await self._on_disk(self._spool.probe)
        except OSError as exc:
            self._writes.failed("write", exc)
            return
        self._writes.worked()

    async def _spill(self, count: int) -> None:
        """Move the `count` oldest buffered records to the durable spool.

        They stay in `_pending` until the spool has them on disk: a failed write (a full
        disk) leaves them where they were, to be spilled or committed later.
        """
        batch = list(itertools.islice(self._pending, count))
        if not batch:
            return
        try:
            segment = await self._on_disk(self._spool.append, batch)
        except OSError as exc:
            self._writes.failed("write", exc)
            return
        except UnencodableRecord as exc:
            self._pending.remove(exc.record)
            _lose_unencodable(exc)
            return  # the rest goes at the next step
        for _ in batch:
            self._pending.popleft()
        self._oldest_at = time.monotonic() if self._pending else None
        self._writes.worked()
        if segment is not None:
            say = log.debug if self._database.failures else log.info
            say("spilled buffered rows to the spool", rows=len(batch), segment=segment.name)
        self._update_gauges()

    async def _hold(self, rows: list[Record]) -> None:
        """Set rows aside that cannot be written for a reason of ours (see the module doc)."""
        while True:
            if not rows:
                return
            try:
                segment = await self._on_disk(self._held.append, rows)
                break
            except UnencodableRecord as exc:
                rows = [row for row in rows if row is not exc.record]
                _lose_unencodable(exc)
        self._held_retry_at = time.monotonic() + self._held_retry_s
        log.error(
            "rows set aside: they are tried again at the next start and every "
            f"{self._held_retry_s:g} s; the errors above say why they failed",
            rows=len(rows),
            segment=str(segment),
        )

    async def _release_held(self) -> None:
        """Offer the held rows to the database again: their segments join the spool."""
        self._held_retry_at = time.monotonic() + self._held_retry_s
        try:
            for segment in self._held.segments():
                await self._on_disk(self._spool.adopt, self._held, segment)
        except OSError as exc:
            self._writes.failed("write", exc)

    @staticmethod
    async def _on_disk(function: Callable[..., T], *args: Any) -> T:
        """Run a blocking spool operation in a worker thread, to its end.

        A thread cannot be stopped. If the worker is cancelled meanwhile (close()), it waits
        for the thread before it stops, so nothing writes the spool behind the writer's back
        and close() knows what is on disk. An operation that succeeded is returned all the
        same, the cancellation asked again: the step that asked books what is now on disk
        (a spill's rows leave the buffer, so close() does not spill them twice) and stops at
        its next await.
        """
        future = asyncio.ensure_future(asyncio.to_thread(function, *args))
        cancelled = False
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                cancelled = True
        if not cancelled:
            return future.result()
        if (failure := future.exception()) is not None:
            # The step that asked is being stopped and will not hear of it: say it here.
            log.warning(
                "a spool operation failed as the writer stopped",
                operation=function.__name__,
                error=_describe(failure),
            )
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None  # a coroutine of the worker's task
        task.cancel()
        return future.result()

    def _update_gauges(self) -> None:
        metrics.spool_rows.set(self._spool.rows)
        metrics.spool_bytes.set(self._spool.bytes)
        metrics.spool_held_rows.set(self._held.rows)


@dataclass(frozen=True, slots=True)
class _SpoolOperations:
    name: str
    failing: str
    """What the operator reads once per episode: what fails, what happens meanwhile."""


_WRITES = _SpoolOperations(
    "writes",
    "the spool cannot be written: rows stay in memory (beyond max_buffer_rows if need be) "
    "until it can, and are spilled then; trying again with backoff",
)
_READS = _SpoolOperations(
    "reads",
    "the spool cannot be read or cleared: its rows wait on disk, newer rows are committed "
    "meanwhile; trying again with backoff",
)


class _SpoolHealth:
    """Whether one kind of spool operation works, and when to try it again after it failed.

    A failure is counted each time and logged once per episode (its end too), so a full disk
    retried every few seconds for an hour makes two lines, not a thousand.
    """

    def __init__(self, operations: _SpoolOperations, spool: Spool, backoff: Backoff) -> None:
        self._operations = operations
        self._spool = spool
        self._attempts = backoff.attempts()
        self.retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self._attempts.failures > 0

    def failed(self, operation: str, exc: OSError) -> None:
        metrics.spool_failures.labels(operation).inc()
        if self._operations is _WRITES:
            metrics.spool_writable.set(0)
        delay_s = self._attempts.failed()
        self.retry_at = time.monotonic() + delay_s
        say = log.error if self._attempts.failures == 1 else log.debug
        say(
            self._operations.failing,
            operation=operation,
            spool=str(self._spool.directory),
            error=_describe(exc),
            retry_in_s=round(delay_s, 2),
        )

    def worked(self) -> None:
        if self._attempts.failures:
            log.info(f"spool {self._operations.name} work again", spool=str(self._spool.directory))
        self._attempts.succeeded()
        self.retry_at = 0.0
        if self._operations is _WRITES:
            metrics.spool_writable.set(1)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until `event` is set or `timeout_s` has passed.

    Not `asyncio.wait_for`: on Python 3.11, when the event is set in the same turn of the
    loop as the waiting task is cancelled, it returns normally and the cancellation is lost,
    so close() would wait for a worker that never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def _lose_unencodable(exc: UnencodableRecord) -> None:
    """A record that can be neither stored nor spooled: the log line is all that is left of
    it, so it carries the whole record."""
    metrics.task_failures.labels(TASK_NAME).inc()
    log.error(
        "a record can be neither stored nor spooled: it is dropped, and kept only in this line",
        record=repr(exc.record),
        error=_describe(exc.__cause__ or exc),
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}".rstrip(": ")
