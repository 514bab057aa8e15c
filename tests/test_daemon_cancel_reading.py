"""`recorder run` finds out which id of a cancel names the cancelled order, whichever it is.

The simulator is started naming the cancelled order by `oid` or by `cancel_order_id` (the
other field carrying the cancel's own id, which often names another resting order too);
the recorder, a real process against a real PostgreSQL, is not told which. Its in-memory
book must agree with every snapshot (no drift), its metric must show the reading, and
book_at must rebuild the exchange's own book.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recorder.book import READINGS, Reading
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.test_daemon import assert_book_at_now_is_the_engines, daemon_config, eventually, query

PAIRS = ("BTC_USD", "ETH_USD")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own http URL
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series never touched (a counter still at zero)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, label: str, value_: str) -> float:
    """The sum over pairs of a metric's samples whose `label` is `value_`."""
    return sum(value(samples, name, pair=pair, **{label: value_}) for pair in PAIRS)


@pytest.mark.parametrize("cancel_id", READINGS)
async def test_recorder_run_reads_cancels_by_whichever_id_the_exchange_uses(
    cancel_id: Reading, db: str, tmp_path: Path
) -> None:
    """The market runs in bursts; between them the flow pauses and the recorder's interval
    snapshots meet a quiet book, which its rebuilt book must equal exactly (a snapshot
    taken while events are in flight can race them, which is no cancel's doing)."""
    settings = SimSettings(seed=6, pairs=PAIRS, rate_per_s=60, history_hours=0.2,
                           cancel_id=cancel_id, faults={"paused": True})  # fmt: skip
    async with run_sim(settings) as sim:
        config = daemon_config(tmp_path, sim, db, snapshot_interval_s=1)
        config_path = tmp_path / "recorder.toml"  # written by daemon_config
        metrics_url = f"http://{config.metrics.listen}/metrics"
        log_path = tmp_path / "recorder.log"
        with log_path.open("wb") as log:
            recorder = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "recorder", "run", "--config", str(config_path),
                stdout=log, stderr=log,
            )  # fmt: skip
        try:
            await eventually(lambda: _answers(metrics_url), timeout_s=60, what="the metrics")

            async def quiet_snapshots() -> None:
                """Two interval snapshots of every pair's quiet book: the first compares it
                with the rebuilt one; the second concludes that comparison, if it differed."""
                sim.pause()
                await sim.drained()
                before = {pair: value(scrape(metrics_url), "recorder_book_resyncs_total",
                                      pair=pair, reason="interval") for pair in PAIRS}  # fmt: skip
                await eventually(
                    lambda: all(value(scrape(metrics_url), "recorder_book_resyncs_total",
                                      pair=pair, reason="interval") >= before[pair] + 2
                                for pair in PAIRS),
                    timeout_s=30, what="two quiet snapshots of every pair",
                )  # fmt: skip

            await quiet_snapshots()
            for _ in range(4):  # bursts of the market, each with some 20 cancels per pair
                cancels = total(scrape(metrics_url), "recorder_cancel_reading_total",
                                "reading", cancel_id)  # fmt: skip
                sim.resume()
                await eventually(
                    lambda before=cancels: total(scrape(metrics_url),
                                                 "recorder_cancel_reading_total", "reading",
                                                 cancel_id) >= before + 40,
                    timeout_s=30, what="a burst's cancels",
                )  # fmt: skip
                await quiet_snapshots()
            await eventually(lambda: _book_at_is_the_engines(db, sim), timeout_s=30,
                             what="book_at equal to the engine's book")  # fmt: skip
            samples = scrape(metrics_url)
        finally:
            recorder.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(recorder.wait(), 60)
    assert exit_code == 0
    other = "oid" if cancel_id == "cancel_order_id" else "cancel_order_id"
    log = log_path.read_text()
    drift = [line for line in log.splitlines() if "disagrees" in line]
    for pair in PAIRS:
        assert value(samples, "recorder_book_drift_total", pair=pair) == 0, drift
        assert value(samples, "recorder_cancel_reading_total", pair=pair, reading=cancel_id) >= 40
        assert value(samples, "recorder_cancel_reading_total", pair=pair, reading=other) == 0
        # A cancel whose order a resync snapshot already lacked names nothing resting: rare.
        unknown = value(samples, "recorder_cancel_reading_total", pair=pair, reading="unknown")
        assert unknown <= 2
    # every cancel stored was counted once (the flow started after the first snapshots)
    for pair in PAIRS:
        counted = sum(value(samples, "recorder_cancel_reading_total", pair=pair, reading=r)
                      for r in (*READINGS, "ambiguous", "unknown"))  # fmt: skip
        stored = query(db, "SELECT count(*) FROM book_events WHERE pair = %s AND kind = 'cancel'",
                       pair)[0][0]  # fmt: skip
        assert counted == stored, pair
    # cancels whose two ids both named a resting order happened, and were read right
    assert total(samples, "recorder_cancel_reading_total", "reading", "ambiguous") >= 5
    assert '"cancel events name the cancelled order by this field"' in log
    assert f'"field": "{cancel_id}"' in log
    assert "no longer show" not in log
    assert_book_at_now_is_the_engines(db, sim, PAIRS)
    # every cancel stored after the last snapshot was read by book_at as the recorder did
    readings = dict(query(db, "SELECT reading, count(*) FROM book_cancels(%s, now()) "
                          "GROUP BY reading", "BTC_USD"))  # fmt: skip
    assert set(readings) <= {cancel_id, "ambiguous"}


def _answers(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return False
    return True


def _book_at_is_the_engines(db: str, sim: Simulator) -> bool:
    try:
        assert_book_at_now_is_the_engines(db, sim, PAIRS)
    except AssertionError:
        return False
    return True
