"""`recorder run`: the daemon's life, start to stop, in the manner of uvicorn's server.

    startup    the database (embedded or configured; waited for while unreachable),
               migrations and where to resume, the metrics endpoint, the writer, the
               exchange client, the first pair list (waited for while the exchange is down),
               then every source as a supervised task
    main_loop  until asked to stop: the supervisor keeps the sources running (metadata
               refresh, the stream and its consumer, the leases, the stored book readings
               kept warm, per pair snapshots, trades and candles, the account with keys); a
               pair listed later gets its tasks, a pair delisted loses them (and its stream
               subscription)
    shutdown   on SIGTERM/SIGINT: stop the sources, commit everything received (within
               `drain_timeout_s`), stop; a second signal skips the wait and spills what is
               left to the spool, which the next start commits first. Exit code 0 either way.

Nothing here parses, builds records or writes SQL: sources make records (the exchange
client keeps its malformed answers through `on_malformed`, the stream closes its own
sessions), the writer stores them.

What is recorded is what this process holds a lease on (`recorder/leases.py`): the pairs
listed and wanted (metadata) are shared with every other recorder on the database, and this
one records its part, taking pairs over from a recorder that died or hung and giving some
up when another joins. Alone on its database, it holds everything from its first round,
before it reports ready. A pair gained is recorded as after a reconnect: a snapshot, the
trade tape caught up from the last stored trade (whoever stored it), a stream subscription.
Losing a pair's lease is not a delisting: it only stops recording it here.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
from prometheus_client import start_http_server

from recorder import exitcodes, metrics
from recorder.clock import REAL_CLOCK
from recorder.config import Config
from recorder.exchange.rest import ExchangeClient, HttpError
from recorder.exchange.stream import BookStream
from recorder.leases import ACCOUNT, Leases
from recorder.logs import get_logger
from recorder.records import new_id
from recorder.retry import DATABASE_WAIT, EXCHANGE_WAIT, Backoff
from recorder.sources.account import AccountRecorder
from recorder.sources.book import BookRecorder
from recorder.sources.candles import CandleRecorder
from recorder.sources.metadata import MetadataRecorder
from recorder.sources.trades import TradeRecorder
from recorder.storage import numeric
from recorder.storage.embedded import serving_database
from recorder.storage.migrate import MigrationError, migrate
from recorder.storage.queries import candle_spans, last_trade_ids
from recorder.storage.readings import BookReadings
from recorder.storage.writer import Writer
from recorder.supervisor import Supervisor
from recorder.systemd import Notifier

log = get_logger(__name__)

T = TypeVar("T")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StartupFailed(Exception):
    """The daemon cannot come up, and waiting would not help (exit code 3)."""


@dataclass(frozen=True, slots=True)
class ResumePoints:
    """Where the sources take up again: the newest stored trade and candle."""

    last_tids: dict[str, int]
    candle_spans: dict[tuple[str, str], tuple[datetime, datetime]]
    """The oldest and newest stored bucket of each chart (pair, resolution)."""


@dataclass(frozen=True, slots=True)
class Sources:
    """What startup built and shutdown stops."""

    writer: Writer
    client: ExchangeClient
    stream: BookStream
    book: BookRecorder
    trades: TradeRecorder
    candles: CandleRecorder
    metadata: MetadataRecorder
    leases: Leases


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
        self._sources: Sources | None = None
        self._listed: set[str] = set()
        """The pairs the exchange lists and the configuration wants (shared by the members)."""
        self._resources = AsyncExitStack()
        """What startup opened (database, metrics endpoint, writer, client), closed last."""

    async def run(self) -> int:
        with self._signals_captured():
            async with self._resources:
                try:
                    sources = await self.startup()
                except (StartupFailed, OSError) as exc:
                    log.error("could not start", problem=str(exc))
                    return exitcodes.STARTUP_FAILURE
                if sources is None:  # asked to stop while waiting for the database or exchange
                    return exitcodes.OK
                await self.main_loop()
                await self.shutdown(sources)
        return exitcodes.OK

    # -- signals ------------------------------------------------------------------------

    def request_stop(self, signame: str = "request") -> None:
        if self.stopping.is_set():
            log.warning("second signal: stopping now; what is not committed goes to the spool",
                        signal=signame)  # fmt: skip
            self.forced.set()
            return
        log.info("stopping: committing what was received (signal again to force)", signal=signame)
        self.stopping.set()

    @contextmanager
    def _signals_captured(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask this run to stop; the handlers before it come back after."""
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                if handler is not None:  # None: not set from Python; asyncio left the default
                    signal.signal(sig, handler)

    # -- startup ------------------------------------------------------------------------

    async def startup(self) -> Sources | None:
        """Bring up what recording needs and start the sources; None if asked to stop first."""
        config = self.config
        data_dir = config.recorder.data_dir
        resources = self._resources
        self.dsn = await resources.enter_async_context(serving_database(config.database, data_dir))
        resume = await self._until_reachable(
            "database unreachable",
            DATABASE_WAIT,
            partial(self._prepare_database, self.dsn),
            retryable=lambda exc: isinstance(exc, psycopg.OperationalError),
        )
        if resume is None:
            return None
        resources.callback(self._serve_metrics().shutdown)
        writer = await resources.enter_async_context(Writer(self.dsn, data_dir / "spool"))
        self.writer = writer
        stream = BookStream.from_config(config.exchange, pairs=(), run_id=new_id())
        client = await resources.enter_async_context(
            ExchangeClient.from_config(
                config.exchange,
                data_dir=data_dir,
                on_malformed=writer.put,
                # An outage is over: the stream's connections waiting in backoff retry now.
                on_recovered=stream.exchange_answers,
            )
        )
        sources = self._build_sources(writer, client, stream, resume)
        # The pair list decides what to record: the exchange must answer it first.
        try:
            listed = await self._until_reachable(
                "exchange unreachable",
                EXCHANGE_WAIT,
                sources.metadata.refresh,
                # An outage (no answer, 5xx, 429, a garbled page) passes; a refusal does not:
                # a 404 says the URL is wrong, and it will be as wrong in a minute.
                retryable=lambda exc: not isinstance(exc, HttpError),
            )
        except HttpError as exc:
            raise StartupFailed(
                f"the exchange refused {exc.url or exc.endpoint}: HTTP {exc.status}: "
                f"{exc.reason} (is exchange.base_url right?)"
            ) from exc
        if listed is None:
            return None
        # The first round before anything records: alone on the database, this run holds
        # every pair now; one that fails is tried again by the leases task.
        try:
            await sources.leases.round("start")
        except psycopg.Error as exc:
            log.warning("first lease round failed; trying again", error=str(exc).strip())
        self._start(sources)
        return sources

    async def _prepare_database(self, dsn: str) -> ResumePoints:
        """Apply pending migrations, then read where to resume (one attempt: an outage in
        either is waited out the same way; migrations already applied are not applied again).
        """
        try:
            applied = await asyncio.to_thread(migrate, dsn)
        except MigrationError as exc:
            raise StartupFailed(f"cannot migrate the database: {exc}") from exc
        if applied:
            log.info("migrations applied", versions=applied)
        return ResumePoints(await last_trade_ids(dsn), await candle_spans(dsn))

    async def _until_reachable(
        self,
        problem: str,
        backoff: Backoff,
        attempt: Callable[[], Awaitable[T]],
        *,
        retryable: Callable[[Exception], bool],
    ) -> T | None:
        """`attempt()`'s result, tried again after `backoff` while it fails in a way that
        waiting may cure (logged as `problem`); None if asked to stop first."""
        attempts = backoff.attempts()
        while not self.stopping.is_set():
            try:
                return await attempt()
            except Exception as exc:
                if not retryable(exc):
                    raise
                delay_s = attempts.failed()
                log.warning(
                    f"{problem}; waiting", error=str(exc).strip(), retry_in_s=round(delay_s, 1)
                )
                await REAL_CLOCK.wait(self.stopping, delay_s)
        return None

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

    def _build_sources(
        self, writer: Writer, client: ExchangeClient, stream: BookStream, resume: ResumePoints
    ) -> Sources:
        recorder = self.config.recorder
        trades = TradeRecorder(
            client,
            writer,
            poll_interval_s=recorder.trades_poll_interval_s,
            backfill=recorder.trades_backfill,
            last_tids=resume.last_tids,
            on_tape=stream.tape_advanced,
        )
        # After a moment with no stream connection up the books resync themselves; the tape
        # is caught up here.
        book = BookRecorder(
            client,
            stream,
            writer,
            snapshot_interval_s=recorder.snapshot_interval_s,
            on_resync=trades.catch_up_now,
        )
        candles = CandleRecorder(
            client,
            writer,
            poll_interval_s=recorder.candles_poll_interval_s,
            stored=resume.candle_spans,
        )
        metadata = MetadataRecorder(
            client,
            writer,
            configured_pairs=recorder.pairs,
            follow_all=recorder.all_pairs,
            on_new_pairs=self._follow,
            on_delisted=self._unfollow,
            refresh_s=recorder.metadata_refresh_s,
        )
        leases = Leases(
            self.dsn,
            run_id=stream.run_id or new_id(),
            ttl_s=recorder.lease_ttl_s,
            redundancy=recorder.redundancy,
            on_gained=self._gained,
            on_lost=self._lost,
        )
        self._sources = Sources(writer, client, stream, book, trades, candles, metadata, leases)
        return self._sources

    async def _follow(self, pairs: list[str]) -> None:
        """Pairs newly listed: shared with the other recorders from now on."""
        sources = self._sources
        assert sources is not None
        self._listed.update(pairs)
        sources.leases.want(self._listed, account=sources.client.private_enabled)

    async def _unfollow(self, pairs: list[str]) -> None:
        """Pairs delisted: recording them stops here now; their leases go at the next round."""
        sources = self._sources
        assert sources is not None
        self._listed.difference_update(pairs)
        sources.leases.want(self._listed, account=sources.client.private_enabled)
        await sources.leases.drop(pairs)

    async def _gained(self, resources: list[str]) -> None:
        """This run holds these leases now: record them."""
        sources = self._sources
        assert sources is not None
        if ACCOUNT in resources:
            self.supervisor.spawn("account", AccountRecorder(sources.client, sources.writer).run)
        pairs = [r for r in resources if r != ACCOUNT]
        if pairs:
            await self._resume_from_database(pairs)
            await self._record(pairs)

    async def _lost(self, resources: list[str]) -> None:
        """This run holds these leases no more: stop recording them (not a delisting)."""
        if ACCOUNT in resources:
            await self.supervisor.cancel("account")
        pairs = [r for r in resources if r != ACCOUNT]
        if pairs:
            await self._stop_recording(pairs)

    async def _resume_from_database(self, pairs: list[str]) -> None:
        """Another recorder may have recorded these pairs since this one started: take up
        from what is stored now (the tape from the last stored trade, the candles from the
        last stored bucket), not from what was stored at start."""
        sources = self._sources
        assert sources is not None
        try:
            last_tids = await last_trade_ids(self.dsn)
            spans = await candle_spans(self.dsn)
        except psycopg.Error as exc:
            # What this run knows still works: the writer's keys make a re-read harmless.
            log.warning("could not read where to resume; using what this run knows",
                        pairs=pairs, error=str(exc).strip())  # fmt: skip
            return
        known = sources.trades.last_tids
        for pair in pairs:
            if pair in last_tids:
                known[pair] = max(known.get(pair, last_tids[pair]), last_tids[pair])
        sources.candles.resume({chart: span for chart, span in spans.items() if chart[0] in pairs})

    async def _record(self, pairs: list[str]) -> None:
        """Record `pairs` from now on: subscribe their books, start their tasks."""
        sources = self._sources
        assert sources is not None
        await sources.stream.add_pairs(pairs)
        for pair in pairs:
            sources.book.follow(pair)
            for name, factory in self._pair_tasks(pair).items():
                self.supervisor.spawn(name, factory)

    async def _stop_recording(self, pairs: list[str]) -> None:
        """Stop recording `pairs`: their tasks, their books, their channels."""
        sources = self._sources
        assert sources is not None
        for pair in pairs:
            for name in self._pair_tasks(pair):
                await self.supervisor.cancel(name)
            sources.book.unfollow(pair)
            metrics.forget_pair(pair)
        await sources.stream.remove_pairs(pairs)

    def _pair_tasks(self, pair: str) -> dict[str, Callable[[], Awaitable[None]]]:
        """The supervised tasks that record one pair, by name."""
        sources = self._sources
        assert sources is not None
        tasks: dict[str, Callable[[], Awaitable[None]]] = {
            f"snapshots:{pair}": partial(sources.book.snapshots, pair),
            f"trades:{pair}": partial(sources.trades.run, pair),
        }
        for resolution in self.config.recorder.candle_types:
            tasks[f"candles:{pair}:{resolution}"] = partial(sources.candles.run, pair, resolution)
        return tasks

    def _start(self, sources: Sources) -> None:
        """The tasks that are not per pair (those started with the first pair list)."""
        supervisor = self.supervisor
        supervisor.spawn("metadata", sources.metadata.run)
        supervisor.spawn("stream", sources.stream.run)
        supervisor.spawn("stream-consumer", sources.book.consume)
        supervisor.spawn("leases", sources.leases.run)
        readings = BookReadings(
            self.dsn,
            snapshot_interval_s=self.config.recorder.snapshot_interval_s,
            pairs=sources.book.pairs.keys,
        )
        supervisor.spawn("book-readings", readings.run)
        if self.notifier.watchdog_interval_s is not None:
            supervisor.spawn("watchdog", self.notifier.watchdog)
        pairs = sorted(set(sources.leases.owned) - {ACCOUNT})
        self.notifier.ready(f"recording {len(pairs)} pairs")
        self.ready.set()
        log.info("recording", pairs=pairs, candle_types=list(self.config.recorder.candle_types),
                 numeric_encoder=numeric.ENCODER)  # fmt: skip

    # -- main loop ----------------------------------------------------------------------

    async def main_loop(self) -> None:
        """Record until asked to stop; the supervisor restarts whatever fails meanwhile."""
        await self.stopping.wait()

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self, sources: Sources) -> None:
        """Stop taking data, then commit what was received, unless a second signal says no."""
        self.notifier.stopping()
        # Stopping the stream ends its session: its `Disconnected` is the last item it queues.
        await self.supervisor.stop(timeout_s=5.0)
        sources.book.close()
        # Recording has stopped: the other recorders may take everything over at once.
        await sources.leases.release_all()
        writer = sources.writer
        drained = asyncio.create_task(writer.flush(self.drain_timeout_s))
        forced = asyncio.create_task(self.forced.wait())
        await asyncio.wait([drained, forced], return_when=asyncio.FIRST_COMPLETED)
        for task in (drained, forced):
            task.cancel()
        await writer.close(0.0)  # whatever is still buffered goes to the spool
        log.info("stopped", spooled_rows=writer.buffered_rows)


def run(config: Config) -> int:
    return asyncio.run(Daemon(config).run())
