"""The chaos run's driver and verdict: record a busy simulated exchange through random faults,
then compare the database with the simulator's own record.

`bench/chaos.py` runs it from the command line (its docstring says what it injects and what
it compares); tests/test_chaos.py runs it for under a minute with every fault kind once, and
checks the parts its verdict rests on. The parts are the harness's: the simulator in this
process with its per-connection delivery record on, an `EmbeddedPostgres` to crash, and
`recorder run` as a `RecorderProcess` to SIGKILL.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from recorder.book import Reading
from recorder.sim.deliveries import Gap
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.config import write_config
from tests.harness.deliveries import (
    SESSIONS_SQL,
    ConnectionCheck,
    EventKey,
    SentTo,
    SessionRow,
    judge,
    process_of,
    utc,
)
from tests.harness.postgres import EmbeddedPostgres
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

KINDS = ("socket_drop", "connection_drop", "outage", "rest_storm", "socket_garbage",
         "db_restart", "recorder_kill")  # fmt: skip
AFTER_FAULT_S = 5.0
"""A fault's cost counts the gaps in coverage that began during it or this long after it."""


@dataclass(frozen=True)
class Pace:
    """How long faults last and how far apart they start (seconds, drawn uniformly)."""

    gap_s: tuple[float, float]
    outage_s: tuple[float, float]
    storm_s: tuple[float, float]
    db_down_s: tuple[float, float]
    recorder_down_s: tuple[float, float]


QUICK = Pace(gap_s=(2, 4), outage_s=(2, 4), storm_s=(2, 4), db_down_s=(1, 3),
             recorder_down_s=(0.5, 2))  # fmt: skip
LONG = Pace(gap_s=(5, 25), outage_s=(3, 20), storm_s=(5, 20), db_down_s=(2, 15),
            recorder_down_s=(1, 10))  # fmt: skip


@dataclass(frozen=True)
class ChaosSettings:
    seconds: float = 60.0
    """How long faults are injected (the catch-up afterwards is extra)."""
    seed: int = 1
    pairs: tuple[str, ...] = ("BTC_USD", "ETH_USD")
    rate_per_s: float = 30.0
    """Book events per second of the simulator's order flow, all pairs together."""
    history_hours: float = 0.25
    kinds: tuple[str, ...] = KINDS
    pace: Pace = QUICK
    warmup_s: float = 3.0
    catch_up_timeout_s: float = 120.0
    candle_types: tuple[str, ...] = ("1", "60")
    snapshot_interval_s: float = 10.0
    overlap: bool = False
    """Faults start `gap_s` after the previous one started, not after it ended, so that
    kinds overlap (a SIGKILL while the database is down); one of each kind at a time."""
    cancel_id: Reading = "oid"
    """The field of the simulator's cancel events that names the cancelled order."""


@dataclass
class Fault:
    kind: str
    planned_at_s: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    at_s: float | None = None
    """When it was injected, seconds after the recorder first started."""
    took_s: float | None = None
    effect: str = ""
    uncovered: int | None = None
    """What it cost: the events of every gap in coverage (a run of events made while no
    recorder connection was subscribed) that began while it lasted or within `AFTER_FAULT_S`
    after (and before the next fault), each gap whole, until some connection was sent events
    again."""


def plan_faults(settings: ChaosSettings) -> list[Fault]:
    """The faults of a run, drawn from the seed: every kind once first, in a random order,
    then kinds at random, until the time is used up."""
    rng = random.Random(settings.seed)
    pace = settings.pace
    first = list(settings.kinds)
    rng.shuffle(first)
    faults: list[Fault] = []
    at_s = settings.warmup_s
    while True:
        kind = first[len(faults)] if len(faults) < len(first) else rng.choice(settings.kinds)
        duration_s, params = _draw(kind, pace, rng)
        if at_s + duration_s > settings.seconds and len(faults) >= len(first):
            return faults
        faults.append(Fault(kind, round(at_s, 2), round(duration_s, 2), params))
        at_s += (0 if settings.overlap else duration_s) + rng.uniform(*pace.gap_s)


def _draw(kind: str, pace: Pace, rng: random.Random) -> tuple[float, dict[str, Any]]:
    if kind == "outage":
        return rng.uniform(*pace.outage_s), {}
    if kind == "rest_storm":
        rates = {"rate_429": rng.uniform(0.1, 0.4), "rate_5xx": rng.uniform(0.1, 0.3),
                 "rate_truncated": rng.uniform(0.05, 0.2)}  # fmt: skip
        return rng.uniform(*pace.storm_s), {k: round(v, 2) for k, v in rates.items()}
    if kind == "socket_garbage":
        return 0.0, {"malformed": rng.randint(1, 7), "unknown": rng.randint(0, 3)}
    if kind == "db_restart":
        return rng.uniform(*pace.db_down_s), {}
    if kind == "recorder_kill":
        return rng.uniform(*pace.recorder_down_s), {}
    if kind in ("socket_drop", "connection_drop"):
        return 0.0, {}
    raise ValueError(f"unknown fault kind {kind!r}")


# --- the recorder as a process ---------------------------------------------------------------


def recorder_for(workdir: Path, sim_url: str, dsn: str, settings: ChaosSettings) -> RecorderProcess:
    """`recorder run` against the simulator and the run's PostgreSQL; every start appends
    to `workdir / "recorder.log"`."""
    config = write_config(
        workdir / "recorder.toml",
        base_url=sim_url,
        dsn=dsn,
        data_dir=workdir / "data",
        recorder={
            "snapshot_interval_s": settings.snapshot_interval_s,
            "trades_poll_interval_s": 0.5,
            "candles_poll_interval_s": 1,
            "candle_types": list(settings.candle_types),
        },
        log_format="json",
    )
    return RecorderProcess(config)


# --- what the simulator knows and what the database holds -----------------------------------


KILL_REACH_S = 1.0
"""A connection that ended longer than this before its process was SIGKILLed counts as not
killed: the writer commits (or, the database down, spools) what arrives within 250 ms, so
all it delivered must be stored."""


@dataclass
class Processes:
    """The recorder processes of a run, in order: when each was started (unix seconds, just
    before it was spawned) and which were SIGKILLed. A connection or session belongs to the
    process latest started before it (`process_of`)."""

    starts: list[float] = field(default_factory=list)
    killed_at: dict[int, float] = field(default_factory=dict)
    """Process index -> when it was SIGKILLed (unix seconds)."""

    def of(self, unix_s: float) -> int:
        return process_of(unix_s, self.starts)


@dataclass
class Truth:
    trades: dict[int, tuple[Any, ...]]
    connections: list[SentTo]
    undelivered_events: int
    candles: dict[tuple[str, str, datetime], tuple[Decimal, ...]]
    books: dict[str, dict[tuple[str, int], tuple[Decimal, Decimal]]]
    rest_faults: dict[str, int]
    cancel_id: Reading = "oid"
    """How the simulator put a cancel's ids on the wire (`event_key`)."""
    process_starts: list[float] = field(default_factory=list)


def truth_of(sim: Simulator, settings: ChaosSettings, processes: Processes) -> Truth:
    """The simulator's record, copied (call on the event loop: nothing changes meanwhile)."""
    assert sim.deliveries is not None
    trades = {
        t.tid: (t.pair, t.type, t.price, t.amount, utc(t.timestamp)) for t in sim.engine.trades
    }
    candles = {
        (pair, res, datetime.fromtimestamp(c.time, UTC)): (c.open, c.high, c.low, c.close, c.volume)
        for pair in settings.pairs
        for res in settings.candle_types
        for c in sim.charts.series[pair][res].candles
    }
    books = {
        pair: {
            (side, o.oid): (o.price, o.amount)
            for side in ("buy", "sell")
            for o in sim.engine.books[pair].orders(side)  # type: ignore[arg-type]
        }
        for pair in settings.pairs
    }
    connections = []
    for c in sim.deliveries.connections.values():
        process = processes.of(c.connected_at)
        killed_at = processes.killed_at.get(process)
        killed = killed_at is not None and (
            c.disconnected_at is None or c.disconnected_at >= killed_at - KILL_REACH_S
        )
        connections.append(SentTo.of(c, process, killed=killed))
    return Truth(trades, connections, len(sim.deliveries.undelivered), candles, books,
                 dict(sim.faults.served), sim.settings.cancel_id,
                 list(processes.starts))  # fmt: skip


@dataclass
class Stored:
    trades: dict[int, tuple[Any, ...]]
    trade_rows: int
    events: dict[EventKey, tuple[Any, ...]]
    event_sessions: dict[EventKey, Any]
    """The session each event is stored under."""
    events_duplicated: int
    """Rows beyond one per (oid, kind): an order id stored under two pairs."""
    fills: dict[tuple[str, int], tuple[Any, ...]]
    fills_duplicated: int
    """Rows beyond one per trade id (ids are global across pairs)."""
    candles: dict[tuple[str, str, datetime], tuple[Decimal, ...]]
    books: dict[str, dict[tuple[str, int], tuple[Decimal, Decimal]]]
    raw: dict[str, int]
    sessions: list[SessionRow]

    @property
    def open_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.disconnected_at is None)


def read_database(dsn: str, pairs: Iterable[str]) -> Stored:
    with psycopg.connect(dsn) as conn:

        def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(sql.encode(), params or None).fetchall()

        trades = rows("SELECT tid, pair, type, price, amount, ts FROM trades")
        events = rows("SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id, "
                      "session_id FROM book_events")  # fmt: skip
        fills = rows("SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills")
        candles = rows("SELECT pair, resolution, bucket, open, high, low, close, volume "
                       "FROM candles")  # fmt: skip
        books = {
            pair: {
                (side, oid): (price, amount)
                for side, oid, price, amount in rows(
                    "SELECT side, order_id, price, amount FROM book_at(%s, now())", pair
                )
            }
            for pair in pairs
        }
        raw = dict(rows("SELECT source, count(*) FROM raw_messages GROUP BY source"))
        sessions = [SessionRow(*row) for row in rows(SESSIONS_SQL)]
    return Stored(
        trades={r[0]: r[1:] for r in trades},
        trade_rows=len(trades),
        events={(r[0], r[1], r[2]): r[3:-1] for r in events},
        event_sessions={(r[0], r[1], r[2]): r[-1] for r in events},
        events_duplicated=len(events) - len({(r[1], r[2]) for r in events}),
        fills={(r[0], r[1]): r[2:] for r in fills},
        fills_duplicated=len(fills) - len({r[1] for r in fills}),
        candles={(r[0], r[1], r[2]): r[3:] for r in candles},
        books=books,
        raw=raw,
        sessions=sessions,
    )


# --- the comparison ---------------------------------------------------------------------------


@dataclass
class Category:
    name: str
    expected: int
    stored: int
    lost: int = 0
    extra: int = 0
    """Stored but never sent/made: something unparsed or invented reached the table."""
    different: int = 0
    """Stored with other values than the simulator's."""
    duplicated: int = 0
    lost_to_kill: int = 0
    """Sent only to connections of SIGKILLed recorder processes, after the last row each
    connection's session committed, and not stored."""
    note: str = ""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.different or self.duplicated)


def compare_keyed(
    name: str,
    expected: dict[Any, Any],
    stored: dict[Any, Any],
    *,
    may_miss: dict[Any, Any] | None = None,
    duplicated: int = 0,
) -> Category:
    """`expected` must be stored with equal values; `may_miss` (a SIGKILL's tail) may be."""
    may_miss = may_miss or {}
    everything = {**may_miss, **expected}
    lost = sum(1 for key in expected if key not in stored)
    return Category(
        name,
        expected=len(expected),
        stored=len(stored),
        lost=lost,
        extra=sum(1 for key in stored if key not in everything),
        different=sum(
            1 for key, value in stored.items() if key in everything and everything[key] != value
        ),
        duplicated=duplicated,
        lost_to_kill=sum(1 for key in may_miss if key not in expected and key not in stored),
    )


@dataclass
class Comparison:
    categories: list[Category]
    connection_checks: list[ConnectionCheck]
    """Per simulator connection: what it was sent, what is stored under its session."""
    undelivered_events: int
    sessions: int
    open_sessions: int
    unmatched_sessions: int = 0
    """Stored sessions that no connection of the simulator fits."""
    under_unknown_session: int = 0
    """Events stored under a session_id that stream_sessions lacks."""
    lost_to_kill_by_process: dict[int, int] = field(default_factory=dict)

    @property
    def connections(self) -> int:
        return len(self.connection_checks)

    @property
    def killed_connections(self) -> int:
        return sum(1 for c in self.connection_checks if c.killed)

    @property
    def misattributed(self) -> int:
        """Events stored under a session whose connection was not sent them."""
        return sum(c.not_sent_here for c in self.connection_checks)

    @property
    def sessions_ok(self) -> bool:
        return not (self.unmatched_sessions or self.under_unknown_session or self.misattributed)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.categories) and self.sessions_ok

    def category(self, name: str) -> Category:
        return next(c for c in self.categories if c.name == name)


def compare(truth: Truth, stored: Stored) -> Comparison:
    judged = judge(truth.connections, stored.sessions, stored.event_sessions,
                   cancel_id=truth.cancel_id, process_starts=truth.process_starts)  # fmt: skip
    categories = [
        compare_keyed("trades", truth.trades, stored.trades,
                      duplicated=stored.trade_rows - len(stored.trades)),
        compare_keyed("book events", judged.events, stored.events,
                      may_miss=judged.may_miss_events, duplicated=stored.events_duplicated),
        compare_keyed("book fills", judged.fills, stored.fills, may_miss=judged.may_miss_fills,
                      duplicated=stored.fills_duplicated),
        compare_keyed("candles", truth.candles, stored.candles),
    ]  # fmt: skip
    categories.append(
        compare_keyed("book at end (orders)", _by_pair(truth.books), _by_pair(stored.books))
    )

    socket_raw = stored.raw.get("socket", 0)
    must = sum(judged.garbage.values())
    most = must + sum(judged.may_miss_garbage.values())
    categories.append(Category(
        "raw_messages (socket)", expected=must, stored=socket_raw,
        lost=max(0, must - socket_raw), extra=max(0, socket_raw - most),
        lost_to_kill=max(0, most - max(socket_raw, must)),
        note="malformed and unknown socket payloads sent to recorder connections, each "
             "connection's own (not arbitrated)",
    ))  # fmt: skip
    truncated = truth.rest_faults.get("truncated", 0)
    rest_raw = stored.raw.get("rest", 0)
    refused = sum(n for source, n in stored.raw.items() if source not in ("socket", "rest"))
    categories.append(Category(
        "raw_messages (rest)", expected=truncated, stored=rest_raw,
        extra=max(0, rest_raw - truncated) + refused,
        note=f"truncated REST answers served: {truncated}; a truncated answer retried "
             "inside a call (start-up pair list) or in flight at a SIGKILL is not kept; "
             f"rows refused by the writer or spool: {refused}",
    ))  # fmt: skip
    return Comparison(
        categories,
        connection_checks=judged.connections,
        undelivered_events=truth.undelivered_events,
        sessions=len(stored.sessions),
        open_sessions=stored.open_sessions,
        unmatched_sessions=len(judged.unmatched_sessions),
        under_unknown_session=judged.under_unknown_session,
        lost_to_kill_by_process=judged.lost_to_kill_by_process,
    )


def _by_pair(books: dict[str, dict[tuple[str, int], Any]]) -> dict[tuple[str, str, int], Any]:
    return {(pair, *key): value for pair, book in books.items() for key, value in book.items()}


# --- what was left uncovered, and why ----------------------------------------------------------

Window = tuple[float, float]
"""From, until: unix seconds."""


@dataclass
class Uncovered:
    """Book events made while no recorder connection was subscribed to their pair, by why.
    socket.io has no replay: only the next snapshot covers them (the book, not the flow)."""

    exchange_outage: int = 0
    """During an exchange outage (REST 502, socket.io refusing connections)."""
    recorder_down: int = 0
    """While the recorder process was down or starting: from a SIGKILL (or the first
    start) until that process's first connection was accepted."""
    live_recorder: int = 0
    """The rest: a live recorder and an exchange that answers, but no connection
    subscribed (reconnect backoff, a dropped connection, subscribing)."""

    @property
    def total(self) -> int:
        return self.exchange_outage + self.recorder_down + self.live_recorder

    def shares(self, made: int) -> dict[str, dict[str, float]]:
        """Each cause's count and percentage of `made`, with the total."""
        counts = {"exchange_outage": self.exchange_outage, "recorder_down": self.recorder_down,
                  "live_recorder": self.live_recorder, "total": self.total}  # fmt: skip
        return {
            cause: {"events": n, "percent": round(100 * n / made, 2) if made else 0.0}
            for cause, n in counts.items()
        }


def split_uncovered(times: Iterable[float], outages: list[Window], down: list[Window]) -> Uncovered:
    """Sort the times at which uncovered events were made: an outage of the exchange first
    (nothing could have been subscribed), then a recorder process down or starting, then the
    rest."""
    split = Uncovered()
    for at in times:
        if any(start <= at < end for start, end in outages):
            split.exchange_outage += 1
        elif any(start <= at < end for start, end in down):
            split.recorder_down += 1
        else:
            split.live_recorder += 1
    return split


def down_windows(processes: Processes, accepted: Iterable[float], until: float) -> list[Window]:
    """When no recorder process was up with a connection accepted: for each process, from
    the previous one's SIGKILL (the first: its start) until its first connection was
    accepted (or it was killed without one, or `until`)."""
    first_accept: dict[int, float] = {}
    for at in sorted(accepted):
        first_accept.setdefault(processes.of(at), at)
    windows = []
    for index, started in enumerate(processes.starts):
        begun = processes.killed_at.get(index - 1, started)
        ended = first_accept.get(index, processes.killed_at.get(index, until))
        windows.append((begun, max(begun, ended)))
    return windows


def gaps_cost(gaps: Iterable[Gap], window: Window) -> int:
    """The events of the gaps in coverage that began within the window, each gap whole: a
    fault's cost (a gap that began before it was another's)."""
    start, end = window
    return sum(gap.events for gap in gaps if start <= gap.started_at < end)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    settings: ChaosSettings
    faults: list[Fault]
    comparison: Comparison
    exit_code: int
    caught_up_s: float
    """From pausing the flow until every check held (or the timeout)."""
    events_made: int
    rest_faults: dict[str, int]
    recorder_errors: list[str]
    recorder_starts: int
    uncovered: Uncovered = field(default_factory=Uncovered)

    @property
    def ok(self) -> bool:
        return self.comparison.ok and self.exit_code == 0

    def text(self) -> str:
        s, c = self.settings, self.comparison
        lines = [
            f"chaos run: seed {s.seed}, {s.seconds:.0f} s of {'overlapping ' * s.overlap}"
            f"faults, {s.rate_per_s:g} events/s, "
            f"pairs {','.join(s.pairs)}, candles {','.join(s.candle_types)}, "
            f"cancels named by {s.cancel_id}",
            "",
            "faults injected (t = seconds after the recorder first started; uncovered: events "
            "made while no recorder connection was subscribed, in the gaps that began during "
            f"the fault or up to {AFTER_FAULT_S:g} s after it, before the next, each gap until "
            "it ended):",
        ]
        lines += [
            f"  t={f.at_s:7.1f}  {f.kind:<15} {f.took_s or 0:5.1f} s  "
            f"uncovered {_count(f.uncovered):>5}  {_params(f.params)}{f.effect}".rstrip()
            for f in self.faults
            if f.at_s is not None
        ]
        lines += ["", f"{'category':<24}{'expected':>10}{'stored':>10}{'lost':>6}{'extra':>7}"
                  f"{'differ':>8}{'dupl':>6}{'lost to SIGKILL':>17}"]  # fmt: skip
        lines += [
            f"{x.name:<24}{x.expected:>10}{x.stored:>10}{x.lost:>6}{x.extra:>7}"
            f"{x.different:>8}{x.duplicated:>6}{x.lost_to_kill:>17}"
            for x in c.categories
        ]
        kinds = Counter(f.kind for f in self.faults if f.at_s is not None)
        shares = self.uncovered.shares(self.events_made)
        lines += [
            "",
            f"book events made: {self.events_made}; made while no recorder connection was "
            "subscribed (only the next snapshot covers them):",
        ]
        lines += [
            f"  {label:<58}{shares[cause]['events']:>7}{shares[cause]['percent']:>8.2f} %"
            for cause, label in UNCOVERED_LABELS.items()
        ]
        checks = c.connection_checks
        lines += [
            f"recorder connections: {c.connections} ({c.killed_connections} ended by SIGKILL); "
            f"stream sessions stored: {c.sessions}, left open: {c.open_sessions}",
            f"per connection: {sum(1 for x in checks if x.session_id is not None)} matched to "
            f"the session that recorded them, {c.unmatched_sessions} session(s) matching no "
            f"connection; events stored under a session whose connection was not sent them: "
            f"{c.misattributed}, under a session not stored: {c.under_unknown_session}",
            f"REST answers faulted: {dict(sorted(self.rest_faults.items()))}",
            f"faults by kind: {dict(sorted(kinds.items()))}",
            f"recorder starts: {self.recorder_starts}; exit code of the final SIGTERM: "
            f"{self.exit_code}; caught up {self.caught_up_s:.1f} s after the flow paused",
            f"error lines in the recorder's log: {len(self.recorder_errors)}"
            + "".join(f"\n  {n:5} x {e}" for e, n in Counter(self.recorder_errors).most_common()),
            "",
            "RESULT: " + ("nothing lost, nothing extra, nothing duplicated, every event under "
                          "a session that was sent it" if self.ok
                          else "FAILED (see the rows above)"),
        ]  # fmt: skip
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.settings.seed,
            "seconds": self.settings.seconds,
            "rate_per_s": self.settings.rate_per_s,
            "cancel_id": self.settings.cancel_id,
            "faults": [asdict(f) for f in self.faults if f.at_s is not None],
            "categories": [asdict(c) for c in self.comparison.categories],
            "undelivered_events": self.comparison.undelivered_events,
            "uncovered": self.uncovered.shares(self.events_made),
            "events_made": self.events_made,
            "connections": [asdict(x) for x in self.comparison.connection_checks],
            "sessions": self.comparison.sessions,
            "unmatched_sessions": self.comparison.unmatched_sessions,
            "misattributed_events": self.comparison.misattributed,
            "events_under_unknown_session": self.comparison.under_unknown_session,
            "exit_code": self.exit_code,
            "recorder_errors": self.recorder_errors,
            "ok": self.ok,
        }


UNCOVERED_LABELS = {
    "exchange_outage": "during an exchange outage",
    "recorder_down": "while the recorder process was down or starting",
    "live_recorder": "live recorder, exchange up, no connection subscribed",
    "total": "in all",
}


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) + ("  " if params else "")


class ChaosRun:
    def __init__(self, settings: ChaosSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.processes = Processes()
        self.kills: list[tuple[Fault, int]] = []
        """Each recorder_kill fault and the process it killed."""
        self.outages: list[Window] = []
        self.started_at = 0.0
        """time.monotonic() at the first start (fault times are counted from it)."""
        self.started_wall = 0.0
        """time.time() at the same moment."""

    async def run(self) -> ChaosReport:
        s = self.settings
        sim_settings = SimSettings(
            seed=s.seed,
            pairs=s.pairs,
            rate_per_s=s.rate_per_s,
            history_hours=s.history_hours,
            record_deliveries=True,
            cancel_id=s.cancel_id,
        )
        pg = EmbeddedPostgres("recorder-chaos-pg-")
        try:
            async with run_sim(sim_settings) as sim:
                recorder = recorder_for(self.workdir, sim.base_url, pg.dsn, s)
                try:
                    return await self._run(sim, pg, recorder)
                finally:
                    recorder.kill_if_running()
        finally:
            pg.cleanup()

    async def _run(
        self, sim: Simulator, pg: EmbeddedPostgres, recorder: RecorderProcess
    ) -> ChaosReport:
        s = self.settings
        faults = plan_faults(s)
        assert sim.deliveries is not None
        events_before = sim.engine.event_count
        uncovered_before = len(sim.deliveries.undelivered_at)
        self.start_recorder(recorder)
        self.started_at, self.started_wall = time.monotonic(), time.time()
        locks = {kind: asyncio.Lock() for kind in KINDS}

        async def inject(fault: Fault) -> None:
            async with locks[fault.kind]:
                fault.at_s = round(self.elapsed_s(), 2)
                await self._inject(fault, sim, pg, recorder)
                fault.took_s = round(self.elapsed_s() - fault.at_s, 2)
                _progress(f"t={fault.at_s:.1f} {fault.kind} {fault.effect}")

        overlapping = []
        for fault in faults:
            await self._sleep_until(fault.planned_at_s)
            if s.overlap:
                overlapping.append(asyncio.create_task(inject(fault)))
            else:
                await inject(fault)
        await asyncio.gather(*overlapping)
        await self._sleep_until(s.seconds)

        comparison, exit_code, caught_up_s = await self.finish(sim, pg, recorder)
        for fault, process in self.kills:
            lost = comparison.lost_to_kill_by_process.get(process, 0)
            fault.effect += f"; {lost} event(s) sent only to it and never committed"
        uncovered_at = sim.deliveries.undelivered_at[uncovered_before:]
        self.cost_of(faults, sim.deliveries.gaps)
        accepted = [c.connected_at for c in sim.deliveries.connections.values()]
        return ChaosReport(
            settings=s,
            faults=faults,
            comparison=comparison,
            exit_code=exit_code,
            caught_up_s=caught_up_s,
            events_made=sim.engine.event_count - events_before,
            rest_faults=dict(sim.faults.served),
            recorder_errors=recorder.errors(),
            recorder_starts=recorder.starts,
            uncovered=split_uncovered(
                uncovered_at, self.outages, down_windows(self.processes, accepted, time.time())
            ),
        )

    def cost_of(self, faults: list[Fault], gaps: list[Gap]) -> None:
        """Set each injected fault's `uncovered` (what it cost) from the gaps in coverage: a
        gap that began after the next fault started is the next one's."""
        injected = sorted((f for f in faults if f.at_s is not None), key=lambda f: f.at_s or 0)
        for fault, following in zip(injected, [*injected[1:], None], strict=True):
            assert fault.at_s is not None
            start = self.started_wall + fault.at_s
            end = start + (fault.took_s or 0.0) + AFTER_FAULT_S
            if following is not None and following.at_s is not None:
                end = min(end, self.started_wall + following.at_s)
            fault.uncovered = gaps_cost(gaps, (start, end))

    def start_recorder(self, recorder: RecorderProcess) -> None:
        """Start a new recorder process, noting when (its connections are told by it)."""
        self.processes.starts.append(time.time())
        recorder.start()

    def kill_recorder(self, recorder: RecorderProcess) -> int:
        """SIGKILL the running recorder process, noting when; its index."""
        index = len(self.processes.starts) - 1
        self.processes.killed_at[index] = time.time()
        recorder.kill()
        return index

    async def finish(
        self, sim: Simulator, pg: EmbeddedPostgres, recorder: RecorderProcess
    ) -> tuple[Comparison, int, float]:
        """No more faults: let the recorder catch up, stop it, compare. Returns the
        comparison, the exit code of the SIGTERM and how long catching up took."""
        # The recorder must be subscribed again before the flow stops, so that the book is
        # resynced by a snapshot after its last connect.
        await self._wait_recording(sim)
        sim.pause()
        await sim.drained()
        paused_at = time.monotonic()

        async def caught_up() -> bool:
            return (await self._compare(sim, pg)).ok

        # Not caught up in time: the comparison after the stop says what is missing.
        with suppress(AssertionError):
            await eventually(caught_up, timeout_s=self.settings.catch_up_timeout_s,
                             interval_s=1.0, what="the recorder caught up")  # fmt: skip
        caught_up_s = time.monotonic() - paused_at
        exit_code = await asyncio.to_thread(recorder.stop)
        comparison = await self._compare(sim, pg)  # after the stop: everything committed
        return comparison, exit_code, caught_up_s

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    async def _sleep_until(self, at_s: float) -> None:
        delay_s = at_s - self.elapsed_s()
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    async def _inject(
        self, fault: Fault, sim: Simulator, pg: EmbeddedPostgres, recorder: RecorderProcess
    ) -> None:
        # The sleeps here are the plan (a fault lasts its drawn duration), not waits.
        kind, duration_s = fault.kind, fault.duration_s
        if kind == "socket_drop":
            fault.effect = f"{await sim.drop_sockets()} connection(s) dropped"
        elif kind == "connection_drop":
            open_before = len(sim.open_sockets())
            dropped = await sim.drop_socket(sim.oldest_socket())
            fault.effect = (f"the oldest of {open_before} connection(s) dropped" if dropped
                            else "no connection open to drop")  # fmt: skip
        elif kind == "outage":
            self.outages.append((time.time(), time.time() + duration_s))
            sim.start_outage(duration_s)
            await asyncio.sleep(duration_s)
        elif kind == "rest_storm":
            before = Counter(sim.faults.served)
            sim.faults.update(fault.params)
            await asyncio.sleep(duration_s)
            sim.faults.update(dict.fromkeys(fault.params, 0))
            served = Counter(sim.faults.served)
            served.subtract(before)
            fault.effect = "answered " + " ".join(f"{k}:{v}" for k, v in sorted(served.items()))
        elif kind == "socket_garbage":
            await sim.burst(fault.params["malformed"], fault.params["unknown"])
        elif kind == "db_restart":
            await asyncio.to_thread(pg.crash)
            await asyncio.sleep(duration_s)
            await asyncio.to_thread(pg.restart)
        elif kind == "recorder_kill":
            on = len(sim.open_sockets())
            self.kills.append((fault, self.kill_recorder(recorder)))
            fault.effect = f"killed with {on} connection(s) open"
            await asyncio.sleep(duration_s)
            self.start_recorder(recorder)
        else:
            raise ValueError(kind)

    async def _wait_recording(self, sim: Simulator, timeout_s: float = 120.0) -> None:
        """Until the recorder is subscribed to every pair again and has been sent about a
        second's events on that connection (logged, not raised, if it is not in time)."""
        assert sim.deliveries is not None
        deliveries = sim.deliveries
        try:
            await eventually(
                lambda: all(sim.subscribers(f"book_{pair}") for pair in self.settings.pairs),
                timeout_s=timeout_s, what="the recorder subscribed again",
            )  # fmt: skip
            await eventually(
                lambda: sum(len(c.events) for c in deliveries.open()) >= self.settings.rate_per_s,
                timeout_s=timeout_s, what="a second's events sent to the recorder",
            )  # fmt: skip
        except AssertionError as exc:
            _progress(str(exc))

    async def _compare(self, sim: Simulator, pg: EmbeddedPostgres) -> Comparison:
        truth = truth_of(sim, self.settings, self.processes)
        try:
            stored = await asyncio.to_thread(read_database, pg.dsn, self.settings.pairs)
        except psycopg.Error as exc:  # not migrated yet, or just restarted
            _progress(f"database not readable yet: {exc}")
            return Comparison([Category("database", 1, 0, lost=1)], [], 0, 0, 0)
        return compare(truth, stored)


def _progress(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


async def run_chaos(settings: ChaosSettings, workdir: Path) -> ChaosReport:
    """Run the whole chaos scenario; files (config, recorder.log, spool) go to `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    return await ChaosRun(settings, workdir).run()
