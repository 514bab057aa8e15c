"""The coverage views when a recorder keeps several connections at once (migrations/0009).

Hand-made rows, each scenario in a database of its own: sessions of one run overlap, book
events are stored once under whichever session brought them first, and a killed run leaves
its sessions without an end. What each view must say follows from the rows by construction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from recorder.research.coverage import format_report, live_seconds, load_report
from recorder.storage.migrate import migrate

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DIED = "recorder died (session never closed)"


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ids(*numbers: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=n) for n in numbers]


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection[Any]]:
    """A migrated database of the test's own. One transaction, so now() stands still."""
    migrate(db)
    with psycopg.connect(db) as connection:
        yield connection


def session(
    conn: psycopg.Connection[Any],
    session_id: uuid.UUID,
    run_id: uuid.UUID | None,
    connection: int | None,
    connected: float,
    disconnected: float | None = None,
    reason: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO stream_sessions (session_id, connected_at, disconnected_at, reason, "
        "run_id, connection) VALUES (%s, %s, %s, %s, %s, %s)",
        (session_id, s(connected), None if disconnected is None else s(disconnected), reason,
         run_id, connection),
    )  # fmt: skip


def event(conn: psycopg.Connection[Any], oid: int, received: float, session_id: uuid.UUID) -> None:
    conn.execute(
        "INSERT INTO book_events VALUES ('BTC_USD', %s, 'new', %s, 'buy', 100, 1, NULL, %s, %s)",
        (oid, s(received), s(received), session_id),
    )


def snapshot(conn: psycopg.Connection[Any], taken: float, grouped: bool = False) -> None:
    conn.execute(
        "INSERT INTO book_snapshots VALUES (%s, 'BTC_USD', %s, %s, %s, 'connect')",
        (uuid.uuid4(), s(taken), s(taken), grouped),
    )


def trade(conn: psycopg.Connection[Any], tid: int, at: float) -> None:
    conn.execute(
        "INSERT INTO trades VALUES ('BTC_USD', %s, %s, 'buy', 100, %s, %s)",
        (tid, s(at), Decimal("0.5"), s(at)),
    )


def rows(conn: psycopg.Connection[Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(sql.encode(), params or None).fetchall()


def now(conn: psycopg.Connection[Any]) -> datetime:
    (moment,) = rows(conn, "SELECT now()")[0]
    assert isinstance(moment, datetime)
    return moment


def test_a_connection_that_reconnects_beside_a_live_one_leaves_no_gap(
    conn: psycopg.Connection[Any],
) -> None:
    # A live run with two connections: connection 0 drops at 30 s and is back at 31 s;
    # connection 1 stays up throughout. Events are stored under whichever session brought
    # them first: connection 1's last one at 20 s, then connection 0's again.
    (run,) = ids(100)
    first, steady, again = ids(1, 2, 3)
    session(conn, first, run, 0, 0, 30, "transport close")
    session(conn, steady, run, 1, 1)
    session(conn, again, run, 0, 31)
    for oid, (received, by) in enumerate([(5, first), (12, steady), (20, steady), (40, again)]):
        event(conn, oid, received, by)
    snapshot(conn, 2)  # at the first connect; the reconnect resyncs nothing
    live = now(conn)
    coverage = rows(conn, "SELECT session_id, ended_at, status, reason, run_id, connection "
                    "FROM stream_coverage ORDER BY connected_at")  # fmt: skip
    assert coverage == [
        (first, s(30), "closed", "transport close", run, 0),
        (steady, live, "open", None, run, 1),
        (again, live, "open", None, run, 0),
    ]
    assert rows(conn, "SELECT * FROM stream_gaps") == []
    assert rows(conn, "SELECT started_at, ended_at, sessions, runs, first_session_id, reason "
                "FROM stream_stretches") == [(s(0), live, 3, 1, first, None)]  # fmt: skip
    book = rows(conn, "SELECT pair, session_id, valid_from, valid_to, snapshots FROM book_coverage")
    assert book == [("BTC_USD", first, s(2), live, 1)]


def test_both_connections_down_is_one_gap_caused_by_the_last_to_end(
    conn: psycopg.Connection[Any],
) -> None:
    # Connection 1 drops at 40 s, connection 0 at 50 s: the stream is down from 50 s until
    # connection 0 is back at 60 s. The gap's cause is connection 0's, which ended last,
    # though connection 1's session is the one that started just before the next.
    (run,) = ids(100)
    a, b, a2, b2 = ids(1, 2, 3, 4)
    session(conn, a, run, 0, 0, 50, "transport close")
    session(conn, b, run, 1, 1, 40, "ping timeout")
    session(conn, a2, run, 0, 60, 100, "stopped")
    session(conn, b2, run, 1, 61, 100, "stopped")
    snapshot(conn, 2)
    snapshot(conn, 45, grouped=True)  # a grouped snapshot rebuilds nothing
    snapshot(conn, 62)
    gaps = rows(conn, "SELECT gap_start, gap_end, duration, cause, next_session_id "
                "FROM stream_gaps")  # fmt: skip
    assert gaps == [(s(50), s(60), timedelta(seconds=10), "transport close", a2)]
    book = rows(conn, "SELECT session_id, valid_from, valid_to, snapshots FROM book_coverage "
                "ORDER BY valid_from")  # fmt: skip
    assert book == [(a, s(2), s(50), 1), (a2, s(62), s(100), 1)]

    report = load_report(conn, since=s(0), until=s(100))
    assert [(g.start, g.end, g.cause) for g in report.gaps] == [(s(50), s(60), "transport close")]
    assert [(x.run_id, x.connection) for x in report.sessions] == [
        (run, 0), (run, 1), (run, 0), (run, 1)
    ]  # fmt: skip
    assert live_seconds(report.sessions, report.start, report.end) == 90
    text = format_report(report)
    assert "stream: 4 sessions, live 1m 30.0s of 1m 40.0s (90.0%)" in text
    assert "1 recorder runs, up to 2 connections live at once" in text
    assert "cause: transport close" in text


def test_a_killed_run_is_unclosed_and_the_newest_runs_sessions_are_open(
    conn: psycopg.Connection[Any],
) -> None:
    # Run `killed`: connection 0 dropped at 15 s and reconnected at 16 s; connection 1 last
    # brought an event at 25 s, stored under its session, so the process lived until then,
    # the reconnected session too. Neither was closed. Run `newest`: two connections from
    # 100 s, both open.
    killed, newest = ids(100, 200)
    k0, k1, k0_again, n0, n1 = ids(1, 2, 3, 4, 5)
    session(conn, k0, killed, 0, 0, 15, "transport close")
    session(conn, k1, killed, 1, 1)
    session(conn, k0_again, killed, 0, 16)
    session(conn, n0, newest, 0, 100)
    session(conn, n1, newest, 1, 101)
    event(conn, 1, 10, k0)
    event(conn, 2, 25, k1)
    event(conn, 3, 120, n1)
    live = now(conn)
    coverage = rows(conn, "SELECT session_id, ended_at, status, reason FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [
        (k0, s(15), "closed", "transport close"),
        (k1, s(25), "unclosed", DIED),
        (k0_again, s(25), "unclosed", DIED),
        (n0, live, "open", None),
        (n1, live, "open", None),
    ]
    gaps = rows(conn, "SELECT gap_start, gap_end, cause, next_session_id FROM stream_gaps")
    assert gaps == [(s(25), s(100), DIED, n0)]

    text = format_report(load_report(conn))
    assert "2 sessions never closed (recorder died)" in text
    assert "the newest run's 2 sessions are open" in text
    assert "2 recorder runs, up to 2 connections live at once" in text


def test_a_killed_runs_end_is_bounded_by_the_next_runs_first_connect(
    conn: psycopg.Connection[Any],
) -> None:
    # The old process still received events after the new one connected (a restart that
    # overlapped; the last at 150 s under its newest session), then was killed: its
    # sessions end where the new run began, and the one it opened after that ends where it
    # began.
    old, new = ids(100, 200)
    o0, o1, o0_late, n0, n1 = ids(1, 2, 3, 4, 5)
    session(conn, o0, old, 0, 0, 105, "transport close")
    session(conn, o1, old, 1, 1)
    session(conn, o0_late, old, 0, 110)
    session(conn, n0, new, 0, 100, 200, "stopped")
    session(conn, n1, new, 1, 120, 200, "stopped")
    event(conn, 1, 50, o1)
    event(conn, 2, 150, o0_late)
    coverage = rows(conn, "SELECT session_id, ended_at, status FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [
        (o0, s(105), "closed"),
        (o1, s(100), "unclosed"),
        (n0, s(200), "closed"),
        (o0_late, s(110), "unclosed"),
        (n1, s(200), "closed"),
    ]
    assert rows(conn, "SELECT * FROM stream_gaps") == []


def member(conn: psycopg.Connection[Any], run: uuid.UUID, expires: datetime) -> None:
    """The run's row in recorder_members, as `recorder.leases` keeps it."""
    conn.execute(
        "INSERT INTO recorder_members (run_id, host, pid, process_space, expires_at) "
        "VALUES (%s, 'host-a', 4242, 'boot:ns', %s)",
        (run, expires),
    )


def test_an_older_run_whose_membership_is_live_is_open_beside_a_newer_one(
    conn: psycopg.Connection[Any],
) -> None:
    # Two recorders sharing the pairs: `first` from 0 s, `second` from 100 s, both renewing
    # their membership. Neither died: both runs' sessions are open and there is no gap.
    first, second = ids(100, 200)
    f0, f1, s0, s1 = ids(1, 2, 3, 4)
    session(conn, f0, first, 0, 0)
    session(conn, f1, first, 1, 1)
    session(conn, s0, second, 0, 100)
    session(conn, s1, second, 1, 101)
    event(conn, 1, 50, f0)
    live = now(conn)
    member(conn, first, live + timedelta(seconds=12))
    member(conn, second, live + timedelta(seconds=12))
    coverage = rows(conn, "SELECT session_id, ended_at, status, reason FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [
        (f0, live, "open", None),
        (f1, live, "open", None),
        (s0, live, "open", None),
        (s1, live, "open", None),
    ]
    assert rows(conn, "SELECT * FROM stream_gaps") == []
    assert rows(conn, "SELECT started_at, ended_at, runs FROM stream_stretches") == [
        (s(0), live, 2)
    ]
    text = format_report(load_report(conn))
    assert "4 sessions of 2 live recorders are open: counted live until now" in text
    assert "never closed" not in text


def test_a_dead_members_end_is_bounded_by_its_expiry_not_by_a_later_members_start(
    conn: psycopg.Connection[Any],
) -> None:
    # `first` ran from 0 s beside `second` (from 100 s) and was killed: its last event came
    # at 150 s and its membership expired at 160 s. A run that started later says nothing
    # about when a member died, so its sessions end at 150 s, not at 100 s. `late`, killed
    # too, has its membership expired at 130 s, before the last event stored under it
    # (a spool committed later): it was not recording after 130 s.
    first, second, late = ids(100, 200, 300)
    f0, s0, l0 = ids(1, 2, 3)
    session(conn, f0, first, 0, 0)
    session(conn, s0, second, 0, 100)
    session(conn, l0, late, 0, 90)
    event(conn, 1, 150, f0)
    event(conn, 2, 140, l0)
    live = now(conn)
    member(conn, first, s(160))
    member(conn, second, live + timedelta(seconds=12))
    member(conn, late, s(130))
    coverage = rows(conn, "SELECT session_id, ended_at, status, reason FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [
        (f0, s(150), "unclosed", DIED),
        (l0, s(130), "unclosed", DIED),
        (s0, live, "open", None),
    ]
    assert rows(conn, "SELECT * FROM stream_gaps") == []


def test_the_newest_run_with_an_expired_membership_beside_a_live_member_died(
    conn: psycopg.Connection[Any],
) -> None:
    # `newest` joined last and was killed (last event 130 s, membership expired at 135 s)
    # while `older` goes on renewing: the newest run is not assumed live. Alone, with no
    # member live (a recorder whose database is away, spilling to its spool), it would be.
    older, newest = ids(100, 200)
    o0, n0 = ids(1, 2)
    session(conn, o0, older, 0, 0)
    session(conn, n0, newest, 0, 100)
    event(conn, 1, 130, n0)
    live = now(conn)
    member(conn, older, live + timedelta(seconds=12))
    member(conn, newest, s(135))
    coverage = rows(conn, "SELECT session_id, ended_at, status FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [(o0, live, "open"), (n0, s(130), "unclosed")]

    # Then `older` is found dead too (its last event at 70 s, its membership expired at
    # 60 s): nobody is live, so the newest run is assumed live again.
    event(conn, 2, 70, o0)
    conn.execute("UPDATE recorder_members SET expires_at = %s WHERE run_id = %s", (s(60), older))
    coverage = rows(conn, "SELECT session_id, ended_at, status FROM stream_coverage "
                    "ORDER BY connected_at")  # fmt: skip
    assert coverage == [(o0, s(60), "unclosed"), (n0, live, "open")]


def test_quiet_stretches_count_overlapping_sessions_once(conn: psycopg.Connection[Any]) -> None:
    # No trade between 0 s and 100 s; connection 0 was live 0-60 s, connection 1 10-80 s:
    # the stream was live 80 s of it, not 60 + 70.
    (run,) = ids(100)
    a, b = ids(1, 2)
    session(conn, a, run, 0, 0, 60, "transport close")
    session(conn, b, run, 1, 10, 80, "stopped")
    trade(conn, 1, 0)
    trade(conn, 2, 100)
    stretches = rows(conn, "SELECT gap_start, gap_end, stream_live, fills "
                     "FROM trade_quiet_stretches(%s)", timedelta(seconds=50))  # fmt: skip
    assert stretches == [(s(0), s(100), timedelta(seconds=80), 0)]


def test_researchers_may_read_the_stretches(conn: psycopg.Connection[Any]) -> None:
    if not rows(conn, "SELECT 1 FROM pg_roles WHERE rolname = 'recorder_research'"):
        pytest.skip("no recorder_research role on this server")
    assert rows(conn, "SELECT has_table_privilege('recorder_research', 'stream_stretches', "
                "'SELECT')") == [(True,)]  # fmt: skip
