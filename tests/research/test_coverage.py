"""`recorder coverage` on a real recording finds the outage the test caused, with its cause.

The summary's arithmetic (uptime with overlapping sessions, durations) is pure and tested
on its own below.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from recorder.cli import main
from recorder.config import ExchangeConfig
from recorder.research.coverage import (
    Gap,
    PairCoverage,
    Report,
    Session,
    format_report,
    human,
    live_seconds,
    load_report,
    most_at_once,
)
from tests.research.conftest import OUTAGE_S, PAIRS, Recording

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_coverage_finds_the_outage_with_its_cause(recording: Recording) -> None:
    with psycopg.connect(recording.dsn) as conn:
        report = load_report(conn)
    # Each connection's session before the outage, and again after it.
    n = ExchangeConfig().stream_connections
    assert len(report.sessions) == 2 * n
    before, after = report.sessions[:n], report.sessions[n:]
    assert all(s.status == "closed" for s in report.sessions)
    (gap,) = report.gaps
    # The gap is the outage: it begins when the last socket was dropped and lasts about as
    # long as the exchange refused them (the reconnect backoff may add a little).
    last_down = max(before, key=lambda s: s.ended_at)
    assert last_down.ended_at == gap.start
    assert min(s.connected_at for s in after) == gap.end
    assert recording.outage_from - timedelta(seconds=1) <= gap.start <= recording.outage_to
    assert OUTAGE_S - 1 <= (gap.end - gap.start).total_seconds() <= OUTAGE_S + 30
    assert gap.cause == last_down.reason
    assert gap.cause
    assert [p.pair for p in report.pairs] == sorted(PAIRS)
    with psycopg.connect(recording.dsn) as conn:
        unfollowed = dict(conn.execute("SELECT pair, count(*) FILTER (WHERE NOT in_sync) "
                                       "FROM book_snapshots GROUP BY pair").fetchall())  # fmt: skip
    for pair in report.pairs:
        assert pair.unfollowed_snapshots == unfollowed[pair.pair]
        assert pair.trades > 0
        assert pair.book_events > 0
        assert pair.snapshots >= 2  # one at each connect
        assert pair.tape_holes == 0
        assert pair.candle_holes == 0
    live = live_seconds(report.sessions, report.start, report.end)
    assert live < (report.end - report.start).total_seconds()


def test_the_coverage_command_prints_the_summary(
    recording: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["coverage", "--config", str(recording.config_path)]) == 0
    out = capsys.readouterr().out
    assert f"stream: {2 * ExchangeConfig().stream_connections} sessions" in out
    assert "1 gaps" in out
    assert "cause: " in out
    for pair in PAIRS:
        assert f"\n{pair}\n" in out

    assert main(["coverage", "--config", str(recording.config_path), "--pair", "BTC_USD"]) == 0
    out = capsys.readouterr().out
    assert "BTC_USD" in out
    assert "ETH_USD" not in out
    # A window before anything was recorded: nothing live, nothing counted.
    assert main(["coverage", "--config", str(recording.config_path),
                 "--since", "2001-01-01", "--until", "2001-01-02"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "stream: 0 sessions" in out
    assert main(["coverage", "--config", str(recording.config_path), "--since", "yesterday"]) == 2


def test_live_seconds_counts_overlapping_sessions_once() -> None:
    sessions = [
        Session(at(0), at(10), "closed", None),
        Session(at(5), at(15), "closed", None),  # a second recorder, overlapping
        Session(at(20), at(30), "closed", None),
        Session(at(40), at(100), "open", None),
    ]
    assert live_seconds(sessions, at(0), at(50)) == 15 + 10 + 10
    assert live_seconds(sessions, at(8), at(22)) == 7 + 2
    assert live_seconds([], at(0), at(10)) == 0


def test_most_at_once_counts_sessions_live_at_the_same_instant() -> None:
    sessions = [
        Session(at(0), at(10), "closed", None),
        Session(at(5), at(15), "closed", None),
        Session(at(15), at(20), "closed", None),  # starts as the second ends: not three
        Session(at(8), at(9), "closed", None),
        Session(at(30), at(30), "unclosed", None),  # no time live at all
    ]
    assert most_at_once(sessions) == 3  # 8-9 s
    assert most_at_once(sessions[1:3]) == 1
    assert most_at_once([]) == 0


def test_human_durations() -> None:
    assert human(4.25) == "4.2s"
    assert human(65) == "1m 5.0s"
    assert human(3600) == "1h 0m 0.0s"
    assert human(90061.5) == "1d 1h 1m 1.5s"


def test_format_report_names_gaps_causes_and_counts() -> None:
    pair = PairCoverage("BTC_USD", 12, at(1), at(99), 40, 5, 3, at(0), at(60), 2, 0, 1)
    report = Report(
        start=at(0),
        end=at(100),
        sessions=[
            Session(at(0), at(40), "closed", "transport close"),
            Session(at(50), at(70), "unclosed", "recorder died (session never closed)"),
            Session(at(80), at(100), "open", None),
        ],
        gaps=[
            Gap(at(40), at(50), "transport close"),
            Gap(at(70), at(80), "recorder died (session never closed)"),
        ],
        pairs=[pair],
    )
    text = format_report(report)
    assert "stream: 3 sessions, live 1m 20.0s of 1m 40.0s (80.0%)" in text
    assert "1 sessions never closed" in text
    assert "the newest session is open" in text
    assert "2 gaps" in text
    gap = "2024-01-01 00:00:40.000Z -> 2024-01-01 00:00:50.000Z  10.0s  cause: transport close"
    assert gap in text
    assert "cause: recorder died (session never closed)" in text
    trades = "  trades               12  2024-01-01 00:00:01.000Z -> 2024-01-01 00:01:39.000Z"
    assert trades in text
    assert "  candle holes          1" in text


def test_format_report_says_how_many_snapshots_book_at_passes_over() -> None:
    followed = PairCoverage("BTC_USD", 12, at(1), at(99), 40, 5, 3, at(0), at(60), 2, 0, 0)
    unfollowed = replace(followed, pair="ETH_USD", unfollowed_snapshots=1)
    report = Report(at(0), at(100), [Session(at(0), at(100), "open", None)], [],
                    [followed, unfollowed])  # fmt: skip
    text = format_report(report)
    note = "(1 asked for before the stream was subscribed: book_at passes over them)"
    btc, eth = text.split("\nETH_USD\n")
    assert note not in btc
    span = "2024-01-01 00:00:00.000Z -> 2024-01-01 00:01:00.000Z"
    assert f"  snapshots             3  {span}  {note}" in eth


def test_format_report_says_when_a_pair_was_delisted() -> None:
    listed = PairCoverage("BTC_USD", 12, at(1), at(99), 40, 5, 3, at(0), at(60), 2, 0, 0)
    delisted = PairCoverage("ETH_USD", 3, at(1), at(20), 9, 1, 1, at(0), at(0), 1, 0, 0,
                            last_listed=at(30))  # fmt: skip
    report = Report(at(0), at(100), [Session(at(0), at(100), "open", None)], [],
                    [listed, delisted])  # fmt: skip
    text = format_report(report)
    delisting = ("ETH_USD\n  delisted     last listed 2024-01-01 00:00:30.000Z: recording "
                 "stopped then, so nothing after it is missing\n  trades")  # fmt: skip
    assert delisting in text
    assert text.count("delisted") == 1
