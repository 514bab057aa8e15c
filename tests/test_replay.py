"""`recorder replay`: a recorded period served again through the simulated exchange.

The round trip decides it: the daemon records the simulator into a first database; the
period is replayed from that database (`recorder.sim.replay`); a second daemon records the
replay into a second database; the two databases must then hold the same rows for the
period (trades, book events, fills: every column that comes from the exchange, digits
included), the same candles, and `book_at` must give the same book at many instants.

The second daemon asks for its snapshots in the present, of a book of the past. `book_at`
takes a snapshot over at the last event it contains (`events_through`, a date of the
exchange's clock, here the replay's), but where the recorder could not tell which events a
snapshot holds it falls back on `taken_at`, the recorder's own clock. So that every one of
its snapshots counts, the second daemon's REST client is given the replay's clock
(`recorder.exchange.rest.utc_now`): its snapshots are then stamped in the period they show,
as the first daemon's were.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from recorder.cli import main
from recorder.daemon import Daemon
from recorder.sim.replay import ReplayError, ReplaySettings, micros_datetime, run_replay
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import (
    daemon_config,
    events_received,
    quiet_until_recorded,
    start_daemon,
    stop_daemon,
)
from tests.harness.metrics import metric_total
from tests.harness.postgres import fresh_database, query
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD")
WINDOW = "WHERE ts > %s AND ts <= %s"
CANDLES_SQL = (
    "SELECT pair, resolution, bucket, open, high, low, close, volume FROM candles "
    "WHERE bucket <= %s ORDER BY 1, 2, 3"
)
DATES_SQL = "SELECT DISTINCT ts FROM book_events WHERE ts > %s AND ts <= %s ORDER BY 1"


@pytest.fixture(autouse=True)
def keep_logging(restore_logging: None) -> None:
    """The daemon points logging at the test's stderr; put the handlers back after."""


def snapshotted_pairs(dsn: str) -> int:
    """Pairs with a snapshot book_at starts from: one the stream followed, its cut known."""
    return int(
        query(dsn, "SELECT count(DISTINCT pair) FROM book_snapshots "
              "WHERE NOT grouped AND in_sync AND events_through IS NOT NULL")[0][0]
    )  # fmt: skip


async def record_live(dsn: str, tmp_path: Path) -> tuple[datetime, datetime]:
    """Record the simulator into `dsn`; the period (since, until) to replay: it starts after
    every pair's first snapshot, and every event of it is stored."""
    settings = SimSettings(seed=23, pairs=PAIRS, rate_per_s=50, history_hours=0.05,
                           record_deliveries=True)  # fmt: skip
    async with run_sim(settings) as sim:
        daemon = Daemon(daemon_config(tmp_path, sim, dsn))
        received = events_received()
        running = await start_daemon(daemon)
        await eventually(lambda: snapshotted_pairs(dsn) == len(PAIRS), what="first snapshots")
        shown = sim.emitted_count
        await eventually(lambda: sim.emitted_count > shown + 20, what="events")
        since = datetime.now(UTC)
        shown = sim.emitted_count
        await eventually(lambda: sim.emitted_count > shown + 150, what="the period's events")
        until = datetime.now(UTC)
        shown = sim.emitted_count
        await eventually(lambda: sim.emitted_count > shown + 20, what="events after it")
        await quiet_until_recorded(sim, dsn, received)
        await stop_daemon(daemon, running)
    return since, until


def replay_clock_now(replay: Simulator) -> datetime:
    source: Any = replay.source
    return micros_datetime(source.clock.now(time.monotonic()))


async def record_replay(
    first: str, second: str, since: datetime, until: datetime, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:  # fmt: skip
    """Replay the period of `first` and record it into `second`; the replay's last state."""
    settings = ReplaySettings(first, PAIRS, since, until, speed=3.0)
    async with run_replay(settings) as replay:
        monkeypatch.setattr("recorder.exchange.rest.utc_now", lambda: replay_clock_now(replay))
        daemon = Daemon(daemon_config(tmp_path, replay, second))
        running = await start_daemon(daemon)
        await eventually(lambda: replay.state()["replay"]["done"], timeout_s=60,
                         what="the replay at its end")  # fmt: skip
        await replay.drained()
        expected = window_rows(first, since, until)
        await eventually(lambda: window_rows(second, since, until) == expected, timeout_s=60,
                         what="the period recorded again")  # fmt: skip
        await eventually(lambda: candle_rows(second, until) == candle_rows(first, until),
                         what="the candles recorded again")  # fmt: skip
        # Its start snapshots went out before the stream was subscribed, so book_at starts
        # from the first ones taken after: recorded a settle time after the replay's first
        # events, which at 3x can be after its end.
        await eventually(lambda: snapshotted_pairs(second) == len(PAIRS),
                         what="a snapshot the stream followed, of every pair")  # fmt: skip
        await stop_daemon(daemon, running)
        return replay.state()


def exact(rows: list[tuple[Any, ...]]) -> list[tuple[str, ...]]:
    """Rows as text: 1.10 and 1.1 are equal Decimals but not the same digits."""
    return [tuple(str(value) for value in row) for row in rows]


def window_rows(dsn: str, since: datetime, until: datetime) -> dict[str, list[tuple[str, ...]]]:
    """Every column the exchange sent, of the period's trades, book events and fills."""
    statements = {
        "trades": "SELECT pair, tid, ts, type, price, amount FROM trades",
        "book_events": "SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id "
        "FROM book_events",
        "book_fills": "SELECT pair, tid, oid, o_id, type, price, amount, ts FROM book_fills",
    }
    return {
        table: exact(query(dsn, f"{select} {WINDOW} ORDER BY 1, 2, 3", since, until))
        for table, select in statements.items()
    }


def candle_rows(dsn: str, until: datetime) -> list[tuple[str, ...]]:
    return exact(query(dsn, CANDLES_SQL, until))


def covered(dsn: str, pair: str, at: datetime) -> bool:
    """Whether book_at(pair, at) has a snapshot to start from (one holding no event after
    `at`): the second recorder's first snapshot comes some time into the period."""
    rows = query(dsn, "SELECT snapshot_id IS NOT NULL FROM book_window_at(%s, %s)", pair, at)
    return bool(rows and rows[0][0])


def book_at(dsn: str, pair: str, at: datetime) -> list[tuple[str, ...]]:
    return exact(query(dsn, "SELECT side, order_id, price, amount FROM book_at(%s, %s)", pair, at))


@dataclass(frozen=True)
class Recorded:
    dsn: str
    since: datetime
    until: datetime


@pytest.fixture(scope="module")
def recorded(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """The simulator recorded live into a database: the period every test here replays."""
    with fresh_database(pg_server_dsn, "replay_first") as dsn:
        since, until = asyncio.run(record_live(dsn, tmp_path_factory.mktemp("replay_first")))
        yield Recorded(dsn, since, until)


async def test_a_replayed_period_is_recorded_again_row_for_row(
    recorded: Recorded, pg_server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, since, until = recorded.dsn, recorded.since, recorded.until
    with fresh_database(pg_server_dsn, "replay_second") as second:
        drift = metric_total("recorder_book_drift_total")
        state = await record_replay(first, second, since, until, tmp_path, monkeypatch)

        # The replay's stream and books agree: the second daemon saw no drift.
        assert metric_total("recorder_book_drift_total") == drift
        rows = window_rows(first, since, until)
        assert len(rows["book_events"]) >= 150
        assert rows["book_fills"]
        assert rows["trades"]
        assert window_rows(second, since, until) == rows
        assert candle_rows(second, until) == candle_rows(first, until) != []
        assert state["replay"]["clock"] == until.isoformat()
        assert state["replay"]["events_made"] == len(rows["book_events"])

        # The book at the instants of the period's events, and between them.
        dates = [row[0] for row in query(first, DATES_SQL, since, until)]
        instants = dates + [a + (b - a) / 2 for a, b in itertools.pairwise(dates)]
        compared = 0
        for pair in PAIRS:
            for at in instants[::3]:
                if covered(first, pair, at) and covered(second, pair, at):
                    assert book_at(second, pair, at) == book_at(first, pair, at), (pair, at)
                    compared += 1
        assert compared >= 50


def stored_tape(dsn: str, pair: str, until: datetime) -> list[tuple[str, ...]]:
    return exact(query(dsn, "SELECT tid, price, type, amount FROM trades WHERE pair = %s "
                       "AND ts <= %s ORDER BY tid DESC", pair, until))  # fmt: skip


async def served_tape(
    http: aiohttp.ClientSession, base_url: str, pair: str
) -> list[tuple[str, ...]]:
    url = f"{base_url}/api/v1/exchanges/?pair={pair}&limit=1000"
    async with http.get(url) as response:
        trades = json.loads(await response.text(), parse_float=Decimal)
    return [tuple(str(t[k]) for k in ("id", "price", "type", "amount")) for t in trades]


async def admin_state(http: aiohttp.ClientSession, base_url: str) -> Any:
    async with http.get(f"{base_url}/admin/state") as response:
        return await response.json()


async def test_the_replay_waits_for_subscribers_and_serves_the_tape_up_to_its_clock(
    recorded: Recorded,
) -> None:
    dsn, since, until = recorded.dsn, recorded.since, recorded.until
    settings = ReplaySettings(dsn, PAIRS, since, until, speed=None)
    async with run_replay(settings) as replay, aiohttp.ClientSession() as http:
        # Nobody subscribed: the clock stands at `since`, the tape ends there.
        state = (await admin_state(http, replay.base_url))["replay"]
        assert (state["clock"], state["running"], state["started"]) == (
            since.isoformat(),
            False,
            False,
        )
        for pair in PAIRS:
            assert await served_tape(http, replay.base_url, pair) == stored_tape(dsn, pair, since)
        async with http.post(f"{replay.base_url}/admin/resume") as response:
            assert response.status == 200
        await eventually(lambda: replay.state()["replay"]["done"], what="the replay at its end")
        state = (await admin_state(http, replay.base_url))["replay"]
        assert (state["clock"], state["speed"]) == (until.isoformat(), "max")
        for pair in PAIRS:
            tape = stored_tape(dsn, pair, until)
            assert len(tape) > len(stored_tape(dsn, pair, since))
            assert await served_tape(http, replay.base_url, pair) == tape[:1000]


async def test_a_period_without_a_snapshot_before_it_is_refused(recorded: Recorded) -> None:
    before = recorded.since - timedelta(hours=1)
    with pytest.raises(ReplayError, match="since: no ungrouped snapshot of BTC_USD"):
        async with run_replay(ReplaySettings(recorded.dsn, PAIRS, before, recorded.until)):
            pass
    with pytest.raises(ReplayError, match="pairs: not recorded in this database: LTC_USD"):
        async with run_replay(ReplaySettings(recorded.dsn, ("LTC_USD",), recorded.since,
                                             recorded.until)):  # fmt: skip
            pass


def replay_command(recorded: Recorded, *flags: str) -> list[str]:
    window = ["--since", recorded.since.isoformat(), "--until", recorded.until.isoformat()]
    return ["replay", "--pairs", ",".join(PAIRS), *window, *flags]


def served_book(url: str, pair: str) -> list[tuple[str, ...]]:
    with urllib.request.urlopen(f"{url}/api/v1/orderbook/{pair}/?group=0", timeout=10) as answer:  # noqa: S310 - our own http URL
        book = json.loads(answer.read(), parse_float=Decimal)
    return [
        (side, str(order["id"]), str(order["price"]), str(order["amount"]))
        for side in ("buy", "sell")
        for order in book[side]
    ]


def test_recorder_replay_serves_the_period_and_stops_on_sigterm(recorded: Recorded) -> None:
    command = replay_command(recorded, "--speed", "max", "--start", "now", "--port", "0")
    process = subprocess.Popen(
        [sys.executable, "-m", "recorder", *command],
        env={**os.environ, "RECORDER_DATABASE__DSN": recorded.dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "serving" in line, f"recorder replay exited early: {line!r}"
        url = line.split()[3]

        def state() -> Any:
            with urllib.request.urlopen(f"{url}/admin/state", timeout=10) as answer:  # noqa: S310 - our own http URL
                return json.loads(answer.read())["replay"]

        asyncio.run(eventually(lambda: state()["done"], what="the replay at its end"))
        assert state()["clock"] == recorded.until.isoformat()
        # The exchange's book at the end is the recorded book then, in price-time priority.
        for pair in PAIRS:
            assert covered(recorded.dsn, pair, recorded.until)
            assert served_book(url, pair) == book_at(recorded.dsn, pair, recorded.until)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"--since": "2000-01-01T00:00:00"}, "since: no ungrouped snapshot of BTC_USD"),
        ({"--until": "2000-01-01T00:00:00"}, "until: must be after since"),
        ({"--pairs": "BTC_USD,LTC_USD"}, "pairs: not recorded in this database: LTC_USD"),
    ],
    ids=["no-snapshot", "until-before-since", "unknown-pair"],
)
def test_recorder_replay_exits_2_naming_what_cannot_be_replayed(
    recorded: Recorded, change: dict[str, str], problem: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("RECORDER_DATABASE__DSN", recorded.dsn)
    command = replay_command(recorded, "--port", "0")
    for flag, value in change.items():
        command[command.index(flag) + 1] = value
    assert main(command) == 2
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--speed", "fast"], ["--since", "yesterday"]])
def test_recorder_replay_refuses_unusable_flags(recorded: Recorded, flags: list[str]) -> None:
    command = replay_command(recorded, "--speed", "2")
    command[command.index(flags[0]) + 1] = flags[1]
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
