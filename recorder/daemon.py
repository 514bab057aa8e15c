"""`recorder run`: the daemon's life, start to stop, in the manner of uvicorn's server.

    startup   database (embedded or configured; waits while unreachable), migrations,
              metrics endpoint, writer, exchange client, socket stream
    main      supervised tasks: metadata refresh, stream consumer, per pair snapshots,
              trades and candles (and the account, with keys); a pair listed later gets
              its tasks when it appears
    shutdown  on SIGTERM/SIGINT: stop the sources, commit everything received (within
              `drain_timeout_s`), stop; a second signal skips the wait and spills what is
              left to the spool, which the next start commits first. Exit code 0 either way.

Nothing here parses or writes SQL: sources make records, the writer stores them.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from functools import partial
from typing import Any

import psycopg
from prometheus_client import start_http_server

from recorder import exitcodes, metrics
from recorder.backoff import Backoff
from recorder.config import Config
from recorder.exchange.rest import ExchangeClient, MalformedResponse
from recorder.exchange.stream import BookStream
from recorder.logs import get_logger
from recorder.records import RawMessage, new_id, utc_now
from recorder.sources.account import AccountRecorder
from recorder.sources.book import BookRecorder
from recorder.sources.candles import CandleRecorder
from recorder.sources.metadata import MetadataRecorder
from recorder.sources.trades import TradeRecorder
from recorder.storage.embedded import database_dsn
from recorder.storage.migrate import MigrationError, migrate
from recorder.storage.queries import last_candle_buckets, last_trade_ids
from recorder.storage.writer import Writer
from recorder.supervisor import Supervisor
from recorder.systemd import Notifier

log = get_logger(__name__)


class Daemon:
    """One run of the recorder; `run()` returns its exit code. Tests run it in-process."""

    def __init__(self, config: Config, *, drain_timeout_s: float = 20.0) -> None:
        self.config = config
        self.drain_timeout_s = drain_timeout_s
        self.notifier = Notifier()
        self.supervisor = Supervisor()
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.ready = asyncio.Event()
        self.dsn = ""
        self.writer: Writer | None = None

    # -- signals ------------------------------------------------------------------------

    def request_stop(self, signame: str = "request") -> None:
        if self.stopping.is_set():
            log.warning("second signal: stopping now; what is not committed goes to the spool",
                        signal=signame)  # fmt: skip
            self.forced.set()
            return
        log.info("stopping: committing what was received (signal again to force)", signal=signame)
        self.stopping.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signal_handlers()
        recorder = self.config.recorder
        try:
            with database_dsn(self.config.database, recorder.data_dir) as dsn:
                self.dsn = dsn
                return await self._run_with_database(dsn)
        except OSError as exc:
            log.error("could not start", error=str(exc))
            return exitcodes.STARTUP_FAILURE

    async def _run_with_database(self, dsn: str) -> int:
        if not await self._migrate_when_reachable(dsn):
            # Asked to stop while waiting for the database: a clean stop. Else: bad schema.
            return exitcodes.OK if self.stopping.is_set() else exitcodes.STARTUP_FAILURE
        metrics_server = self._serve_metrics()
        recorder = self.config.recorder
        try:
            async with AsyncExitStack() as stack:
                writer = await stack.enter_async_context(Writer(dsn, recorder.data_dir / "spool"))
                self.writer = writer
                client = await stack.enter_async_context(
                    ExchangeClient.from_config(self.config.exchange, data_dir=recorder.data_dir)
                )
                book = await self._record(dsn, client, writer)
                await self._shutdown(writer, book)
        finally:
            metrics_server.shutdown()
        return exitcodes.OK

    async def _migrate_when_reachable(self, dsn: str) -> bool:
        """Apply migrations, waiting while the database is unreachable (not a startup failure)."""
        backoff = Backoff(initial_s=0.5, max_s=10.0)
        for attempt in itertools.count():
            if self.stopping.is_set():
                break
            try:
                applied = await asyncio.to_thread(migrate, dsn)
            except MigrationError as exc:
                log.error("cannot migrate the database", problem=str(exc))
                return False
            except psycopg.OperationalError as exc:
                await self._wait_to_retry("database unreachable", exc, backoff.delay_s(attempt))
                continue
            if applied:
                log.info("migrations applied", versions=applied)
            return True
        return False

    def _serve_metrics(self) -> Any:
        listen = self.config.metrics
        try:
            server, _ = start_http_server(listen.port, addr=listen.host)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {listen.listen}: {exc}") from exc
        # The port bound, not the one configured: with port 0 the OS picks a free one.
        host = listen.listen.rpartition(":")[0]
        log.info("metrics served", url=f"http://{host}:{server.server_port}/metrics")
        return server

    async def _record(self, dsn: str, client: ExchangeClient, writer: Writer) -> BookRecorder:
        """Start every source; return (with the book recorder) when asked to stop."""
        recorder = self.config.recorder
        stream = BookStream.from_config(self.config.exchange, pairs=())
        trades = TradeRecorder(
            client,
            writer,
            poll_interval_s=recorder.trades_poll_interval_s,
            backfill=recorder.trades_backfill,
            last_tids=await last_trade_ids(dsn),
        )
        # After every (re)connect the books resync themselves; the tape is caught up here.
        book = BookRecorder(
            client,
            stream,
            writer,
            snapshot_interval_s=recorder.snapshot_interval_s,
            on_connect=trades.catch_up_now,
        )
        candles = CandleRecorder(
            client,
            writer,
            poll_interval_s=recorder.candles_poll_interval_s,
            last_buckets=await last_candle_buckets(dsn),
        )

        async def follow(pairs: list[str]) -> None:
            await stream.add_pairs(pairs)
            for pair in pairs:
                book.follow(pair)
                self._spawn(f"snapshots:{pair}", partial(book.snapshots, pair))
                self._spawn(f"trades:{pair}", partial(trades.run, pair))
                for resolution in recorder.candle_types:
                    self._spawn(
                        f"candles:{pair}:{resolution}", partial(candles.run, pair, resolution)
                    )

        metadata = MetadataRecorder(
            client,
            writer,
            configured_pairs=recorder.pairs,
            follow_all=recorder.all_pairs,
            on_new_pairs=follow,
            refresh_s=recorder.metadata_refresh_s,
        )

        await self._first_metadata(metadata)
        self._spawn("metadata", metadata.run)
        self.supervisor.spawn("stream", stream.run)
        self.supervisor.spawn("stream-consumer", book.consume)
        if client.private_enabled:
            account = AccountRecorder(client, writer)
            self._spawn("account", account.run)
        if self.notifier.watchdog_interval_s is not None:
            self.supervisor.spawn("watchdog", self.notifier.watchdog)
        self.notifier.ready(f"recording {len(metadata.pairs)} pairs")
        self.ready.set()
        log.info(
            "recording", pairs=sorted(metadata.pairs), candle_types=list(recorder.candle_types)
        )
        await self.stopping.wait()
        return book

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """A supervised source; a REST answer it could not parse is kept, then it restarts."""
        writer = self.writer
        assert writer is not None

        async def source() -> None:
            try:
                await factory()
            except MalformedResponse as exc:
                _keep_malformed(writer, exc)
                raise

        self.supervisor.spawn(name, source)

    async def _first_metadata(self, metadata: MetadataRecorder) -> None:
        """The pair list decides what to record: retry until the exchange answers."""
        backoff = Backoff(initial_s=0.5, max_s=30.0)
        for attempt in itertools.count():
            if self.stopping.is_set():
                return
            try:
                await metadata.refresh()
                return
            except Exception as exc:  # an exchange outage at start is waited out
                if isinstance(exc, MalformedResponse) and self.writer is not None:
                    _keep_malformed(self.writer, exc)  # kept like any later one
                await self._wait_to_retry("exchange unreachable", exc, backoff.delay_s(attempt))

    async def _wait_to_retry(self, problem: str, exc: BaseException, delay_s: float) -> None:
        """Log why start-up waits, then wait `delay_s` or until asked to stop."""
        log.warning(f"{problem}; waiting", error=str(exc).strip(), retry_in_s=round(delay_s, 1))
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay_s)

    async def _shutdown(self, writer: Writer, book: BookRecorder) -> None:
        """Stop taking data, then commit what was received, unless a second signal says no."""
        self.notifier.stopping()
        await self.supervisor.stop(timeout_s=5.0)
        book.close()
        drained = asyncio.create_task(writer.flush(self.drain_timeout_s))
        forced = asyncio.create_task(self.forced.wait())
        await asyncio.wait([drained, forced], return_when=asyncio.FIRST_COMPLETED)
        for task in (drained, forced):
            task.cancel()
        await writer.close(0.0)  # whatever is still buffered goes to the spool
        log.info("stopped", spooled_rows=writer.buffered_rows)


def _keep_malformed(writer: Writer, exc: MalformedResponse) -> None:
    """A REST answer that did not parse: counted, and kept verbatim in `raw_messages`."""
    metrics.malformed_messages.labels("rest").inc()
    writer.put(
        RawMessage(
            id=new_id(),
            received_at=utc_now(),
            source="rest",
            event=exc.endpoint,
            payload=exc.text,
            error=exc.reason,
        )
    )


def run(config: Config) -> int:
    return asyncio.run(Daemon(config).run())
