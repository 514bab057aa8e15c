"""`recorder coverage`: what was recorded, and where it has holes, before trusting a dataset.

`load_report` asks the database (the views of migrations/0006_research.sql, as
migrations/0009_overlapping_stream_sessions.sql redefined them for a recorder with several
connections at once) and returns a plain `Report`;
`format_report`, `live_seconds` and `most_at_once` are pure, so the summary's wording and
arithmetic are tested without a database.

A recorder keeps several socket.io connections at once, each a session of its own, so
sessions overlap: the stream is live while any of them is, and down (a gap) only where none
is. The database's views already merge them; the summary counts live time as their union.

A delisted pair is told apart from one with holes by the stored `pairs` rows: the recorder
stores the whole pair list at every refresh, all rows with the answer's time, so a pair
whose `updated_at` is older than the newest was missing from the lists since: the exchange
delisted it, the recorder stopped recording it then, and nothing after is missing.

Where several recorders share the pairs (docs/operations.md, "Running several recorders"),
each pair says who recorded it when (`lease_history`) and where it had no owner
(`lease_gaps`): a takeover after a recorder died or hung, or a handover when they
rebalanced. The book stream of the pair was not recorded there; its trades were caught up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class Session:
    connected_at: datetime
    ended_at: datetime
    # closed; open: the newest run's or a live lease member's, counted live until now;
    # unclosed: its recorder died (migrations/0017)
    status: str
    reason: str | None
    run_id: uuid.UUID | None = None
    """The recorder process that held the connection; None for sessions from before runs were
    stored (each of those stands alone)."""
    connection: int | None = None
    """Which of its run's connections, from 0."""


@dataclass(frozen=True, slots=True)
class Gap:
    start: datetime
    end: datetime
    cause: str | None
    """Why the session that ended last before the gap ended."""


@dataclass(frozen=True, slots=True)
class CandleHole:
    """Buckets missing from one resolution's candles where the tape has trades."""

    resolution: str
    start: datetime
    end: datetime
    trades: int


@dataclass(frozen=True, slots=True)
class Ownership:
    """One recorder's holding of a pair's lease."""

    host: str
    pid: int
    acquired_at: datetime
    released_at: datetime | None
    """None: held now (or its recorder died and nobody has taken the pair over yet)."""
    reason: str | None


@dataclass(frozen=True, slots=True)
class PairCoverage:
    pair: str
    trades: int
    first_trade: datetime | None
    last_trade: datetime | None
    book_events: int
    book_fills: int
    snapshots: int
    first_snapshot: datetime | None
    last_snapshot: datetime | None
    candles: int
    tape_holes: int
    candle_holes: int
    last_listed: datetime | None = None
    """When the exchange last listed the pair, if it no longer does (delisted); else None."""
    unfollowed_snapshots: int = 0
    """Of `snapshots`, those asked for while no connection was subscribed (`in_sync` false):
    `book_at` passes over them."""
    snapshot_times: tuple[datetime, ...] = ()
    """When each snapshot of the window that book_at starts from was taken, in order
    (`recorder coverage --plot`)."""
    unfollowed_snapshot_times: tuple[datetime, ...] = ()
    """When each of the `unfollowed_snapshots` was taken, in order."""
    tape_hole_times: tuple[datetime, ...] = ()
    """When each fill missing from the tape happened, in order."""
    candle_hole_spans: tuple[CandleHole, ...] = ()
    """The candle holes of the window, by resolution and start."""
    owners: list[Ownership] = field(default_factory=list)
    """Who held the pair's lease in the window, oldest first."""
    ownerless: list[tuple[datetime, datetime]] = field(default_factory=list)
    """Stretches without an owner in the window: handovers and takeovers."""


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    sessions: list[Session]
    gaps: list[Gap]
    pairs: list[PairCoverage] = field(default_factory=list)


def live_seconds(sessions: list[Session], start: datetime, end: datetime) -> float:
    """Seconds of [start, end) covered by at least one session (overlaps counted once)."""
    spans = sorted(
        (max(s.connected_at, start), min(s.ended_at, end))
        for s in sessions
        if s.ended_at > start and s.connected_at < end
    )
    total = 0.0
    covered_until: datetime | None = None
    for begin, finish in spans:
        if covered_until is not None:
            begin = max(begin, covered_until)
        if finish > begin:
            total += (finish - begin).total_seconds()
        covered_until = finish if covered_until is None else max(covered_until, finish)
    return total


def most_at_once(sessions: list[Session]) -> int:
    """The most sessions live at the same instant (one ending as another starts: not both)."""
    # At equal times an end (-1) sorts before a start (+1).
    steps = sorted(
        [(s.connected_at, 1) for s in sessions if s.ended_at > s.connected_at]
        + [(s.ended_at, -1) for s in sessions if s.ended_at > s.connected_at]
    )
    live = most = 0
    for _, step in steps:
        live += step
        most = max(most, live)
    return most


def human(seconds: float) -> str:
    """A duration as 1d 2h 3m 4.5s, leading zero units left out."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, _ = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m"] if minutes or hours or days else []
    parts.append(f"{seconds - whole + whole % 60:.1f}s")
    return " ".join(parts)


def _at(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_report(report: Report) -> str:
    """The human summary: stream uptime and gaps with their causes, then each pair."""
    span = (report.end - report.start).total_seconds()
    live = live_seconds(report.sessions, report.start, report.end)
    share = f"{100 * live / span:.1f}%" if span > 0 else "-"
    lines = [
        f"coverage from {_at(report.start)} to {_at(report.end)} ({human(span)})",
        "",
        f"stream: {len(report.sessions)} sessions, live {human(live)} of {human(span)} ({share})",
    ]
    if report.sessions:
        first = max(report.start, report.sessions[0].connected_at)
        since_first = (report.end - first).total_seconds()
        if since_first > 0 and first > report.start:
            lines.append(
                f"  since the first session ({_at(first)}): live {human(live)} of "
                f"{human(since_first)} ({100 * live / since_first:.1f}%)"
            )
    runs = {s.run_id for s in report.sessions if s.run_id is not None}
    at_once = most_at_once(report.sessions)
    if runs:
        lines.append(f"  {len(runs)} recorder runs, up to {at_once} connections live at once")
    elif at_once > 1:
        lines.append(f"  up to {at_once} sessions live at once")
    open_sessions = [s for s in report.sessions if s.status == "open"]
    open_runs = {s.run_id for s in open_sessions}
    if len(open_sessions) == 1:
        lines.append(
            "  the newest session is open: counted live until now, as if a recorder were running"
        )
    elif len(open_runs) > 1:
        lines.append(
            f"  {len(open_sessions)} sessions of {len(open_runs)} live recorders are open: "
            "counted live until now"
        )
    elif open_sessions:
        lines.append(
            f"  the newest run's {len(open_sessions)} sessions are open: counted live until "
            "now, as if its recorder were running"
        )
    unclosed = [s for s in report.sessions if s.status == "unclosed"]
    if unclosed:
        lines.append(
            f"  {len(unclosed)} sessions never closed (recorder died): their end is the last "
            "event their recorder received"
        )
    if report.gaps:
        lines.append(
            f"  {len(report.gaps)} gaps (no connection live: no book events or fills; book_at "
            "invalid until the next snapshot the stream follows):"
        )
        for gap in report.gaps:
            seconds = (gap.end - gap.start).total_seconds()
            lines.append(
                f"    {_at(gap.start)} -> {_at(gap.end)}  {human(seconds)}  "
                f"cause: {gap.cause or 'unknown'}"
            )
    else:
        lines.append("  no gaps")
    for pair in report.pairs:
        lines += ["", f"{pair.pair}"]
        if pair.last_listed is not None:
            lines.append(
                f"  delisted     last listed {_at(pair.last_listed)}: recording stopped then, "
                "so nothing after it is missing"
            )
        lines += [
            f"  trades       {pair.trades:>10}  {_at(pair.first_trade)} -> {_at(pair.last_trade)}",
            f"  book events  {pair.book_events:>10}",
            f"  book fills   {pair.book_fills:>10}",
            f"  snapshots    {pair.snapshots:>10}  "
            f"{_at(pair.first_snapshot)} -> {_at(pair.last_snapshot)}"
            + (
                f"  ({pair.unfollowed_snapshots} asked for before the stream was subscribed: "
                "book_at passes over them)"
                if pair.unfollowed_snapshots
                else ""
            ),
            f"  candles      {pair.candles:>10}",
            f"  tape holes   {pair.tape_holes:>10}  (fills seen on the socket, missing "
            "from the tape)",
            f"  candle holes {pair.candle_holes:>10}  (gaps in the candles where the tape has "
            "trades)",
        ]
        lines += _ownership_lines(pair)
    return "\n".join(lines)


def _ownership_lines(pair: PairCoverage) -> list[str]:
    if not pair.owners:
        return []
    recorders = {(o.host, o.pid) for o in pair.owners}
    lines = [f"  owners       {len(pair.owners):>10}  holdings by {len(recorders)} recorders"]
    for o in pair.owners:
        until = "now" if o.released_at is None else _at(o.released_at)
        reason = f" ({o.reason})" if o.reason else ""
        lines.append(f"    {o.host}:{o.pid}  {_at(o.acquired_at)} -> {until}{reason}")
    if pair.ownerless:
        total = sum((end - start).total_seconds() for start, end in pair.ownerless)
        lines.append(
            f"  no owner     {len(pair.ownerless):>10}  stretches, {human(total)} (handovers: "
            "no book events, trades caught up after)"
        )
        for start, end in pair.ownerless:
            lines.append(f"    {_at(start)} -> {_at(end)}  {human((end - start).total_seconds())}")
    return lines


_PAIR_SQL = """
SELECT p.name,
  (SELECT count(*) FROM trades t WHERE t.pair = p.name AND t.ts >= %(s)s AND t.ts < %(e)s),
  (SELECT min(ts) FROM trades t WHERE t.pair = p.name AND t.ts >= %(s)s AND t.ts < %(e)s),
  (SELECT max(ts) FROM trades t WHERE t.pair = p.name AND t.ts >= %(s)s AND t.ts < %(e)s),
  (SELECT count(*) FROM book_events x WHERE x.pair = p.name AND x.ts >= %(s)s AND x.ts < %(e)s),
  (SELECT count(*) FROM book_fills x WHERE x.pair = p.name AND x.ts >= %(s)s AND x.ts < %(e)s),
  (SELECT count(*) FROM book_snapshots x
   WHERE x.pair = p.name AND x.taken_at >= %(s)s AND x.taken_at < %(e)s),
  (SELECT min(taken_at) FROM book_snapshots x
   WHERE x.pair = p.name AND x.taken_at >= %(s)s AND x.taken_at < %(e)s),
  (SELECT max(taken_at) FROM book_snapshots x
   WHERE x.pair = p.name AND x.taken_at >= %(s)s AND x.taken_at < %(e)s),
  (SELECT count(*) FROM candles x
   WHERE x.pair = p.name AND x.bucket >= %(s)s AND x.bucket < %(e)s),
  (SELECT count(*) FROM trade_tape_holes x
   WHERE x.pair = p.name AND x.ts >= %(s)s AND x.ts < %(e)s),
  (SELECT count(*) FROM candle_gaps x
   WHERE x.pair = p.name AND x.trades > 0 AND x.gap_end > %(s)s AND x.gap_start < %(e)s),
  CASE WHEN p.updated_at < (SELECT max(updated_at) FROM pairs) THEN p.updated_at END,
  (SELECT count(*) FROM book_snapshots x
   WHERE x.pair = p.name AND NOT x.in_sync AND x.taken_at >= %(s)s AND x.taken_at < %(e)s)
FROM pairs p
WHERE %(pair)s::text IS NULL OR p.name = %(pair)s
ORDER BY p.name
"""

_BOUNDS_SQL = """
SELECT least((SELECT min(connected_at) FROM stream_sessions), (SELECT min(ts) FROM trades),
             (SELECT min(taken_at) FROM book_snapshots)),
       now()
"""


def load_report(
    conn: psycopg.Connection[Any],
    pair: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Ask the database for the coverage of [since, until) (default: all that was recorded)."""
    first, now = conn.execute(_BOUNDS_SQL).fetchone() or (None, None)
    assert now is not None  # the bounds query always returns a row with now()
    start = since or first or now
    end = until or now
    sessions = [
        Session(*row)
        for row in conn.execute(
            "SELECT connected_at, ended_at, status, reason, run_id, connection "
            "FROM stream_coverage WHERE ended_at > %s AND connected_at < %s "
            "ORDER BY connected_at, session_id",
            (start, end),
        ).fetchall()
    ]
    gaps = [
        Gap(*row)
        for row in conn.execute(
            "SELECT gap_start, gap_end, cause FROM stream_gaps "
            "WHERE gap_end > %s AND gap_start < %s ORDER BY gap_start",
            (start, end),
        ).fetchall()
    ]
    window = {"s": start, "e": end, "pair": pair}
    snapshot_times = _times_by_pair(conn, _SNAPSHOT_TIMES_SQL, {**window, "in_sync": True})
    unfollowed_times = _times_by_pair(conn, _SNAPSHOT_TIMES_SQL, {**window, "in_sync": False})
    tape_hole_times = _times_by_pair(conn, _TAPE_HOLE_TIMES_SQL, window)
    candle_holes: dict[str, list[CandleHole]] = {}
    for name, *hole in conn.execute(_CANDLE_HOLES_SQL, window).fetchall():
        candle_holes.setdefault(name, []).append(CandleHole(*hole))
    pairs = [
        replace(
            PairCoverage(*row),
            snapshot_times=tuple(snapshot_times.get(row[0], ())),
            unfollowed_snapshot_times=tuple(unfollowed_times.get(row[0], ())),
            tape_hole_times=tuple(tape_hole_times.get(row[0], ())),
            candle_hole_spans=tuple(candle_holes.get(row[0], ())),
        )
        for row in conn.execute(_PAIR_SQL, window).fetchall()
    ]
    return Report(start, end, sessions, gaps, [_with_owners(conn, p, start, end) for p in pairs])


def _with_owners(
    conn: psycopg.Connection[Any], pair: PairCoverage, start: datetime, end: datetime
) -> PairCoverage:
    """The pair with who held its lease in [start, end) (none before migration 0015)."""
    row = conn.execute("SELECT to_regclass('lease_history') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return pair
    owners = [
        Ownership(*r)
        for r in conn.execute(
            "SELECT host, pid, acquired_at, released_at, reason FROM lease_history"
            " WHERE resource = %s AND acquired_at < %s"
            " AND coalesce(released_at, 'infinity') > %s ORDER BY acquired_at",
            (pair.pair, end, start),
        ).fetchall()
    ]
    ownerless = [
        (gap_start, gap_end)
        for gap_start, gap_end in conn.execute(
            "SELECT gap_start, gap_end FROM lease_gaps WHERE resource = %s"
            " AND gap_end > %s AND gap_start < %s ORDER BY gap_start",
            (pair.pair, start, end),
        ).fetchall()
    ]
    return replace(pair, owners=owners, ownerless=ownerless)


# The instants behind the counts of _PAIR_SQL, for the timeline `recorder coverage --plot`
# draws (recorder/research/plot.py).
_SNAPSHOT_TIMES_SQL = """
SELECT pair, taken_at FROM book_snapshots
WHERE taken_at >= %(s)s AND taken_at < %(e)s AND (%(pair)s::text IS NULL OR pair = %(pair)s)
  AND in_sync = %(in_sync)s
ORDER BY pair, taken_at
"""

_TAPE_HOLE_TIMES_SQL = """
SELECT pair, ts FROM trade_tape_holes
WHERE ts >= %(s)s AND ts < %(e)s AND (%(pair)s::text IS NULL OR pair = %(pair)s)
ORDER BY pair, ts
"""

_CANDLE_HOLES_SQL = """
SELECT pair, resolution, gap_start, gap_end, trades FROM candle_gaps
WHERE trades > 0 AND gap_end > %(s)s AND gap_start < %(e)s
  AND (%(pair)s::text IS NULL OR pair = %(pair)s)
ORDER BY pair, gap_start, resolution
"""


def _times_by_pair(
    conn: psycopg.Connection[Any], query: str, window: dict[str, Any]
) -> dict[str, list[datetime]]:
    times: dict[str, list[datetime]] = {}
    for name, moment in conn.execute(query, window).fetchall():
        times.setdefault(name, []).append(moment)
    return times


__all__ = [
    "CandleHole",
    "Gap",
    "Ownership",
    "PairCoverage",
    "Report",
    "Session",
    "format_report",
    "live_seconds",
    "most_at_once",
]
