"""`recorder run` finds out which id of a cancel names the cancelled order, whichever it is.

The simulator is started naming the cancelled order by `oid` or by `cancel_order_id` (the
other field carrying the cancel's own id, which often names another resting order too);
the recorder, a real process against a real PostgreSQL, is not told which. Its in-memory
book must agree with every snapshot (no drift), its metric must show the reading, and
book_at must rebuild the exchange's own book.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recorder.book import READINGS, Reading
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import PAIRS, assert_book_at_now_is_the_engines, daemon_config_path
from tests.harness.postgres import query
from tests.harness.recorder_process import RecorderProcess, sample_key
from tests.harness.waiting import eventually

Samples = dict[str, float]


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series never touched (a counter still at zero)."""
    return samples.get(sample_key(name, **labels), 0.0)


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
        recorder = RecorderProcess(daemon_config_path(tmp_path, sim, db, snapshot_interval_s=1))
        recorder.start()
        try:
            await recorder.wait_until(recorder.metrics, timeout_s=60, what="the metrics")

            async def resyncs() -> dict[str, float]:
                samples = await recorder.metrics()
                return {pair: value(samples, "recorder_book_resyncs_total", pair=pair,
                                    reason="interval") for pair in PAIRS}  # fmt: skip

            async def cancels_read() -> float:
                samples = await recorder.metrics()
                return total(samples, "recorder_cancel_reading_total", "reading", cancel_id)

            async def quiet_snapshots() -> None:
                """Two interval snapshots of every pair's quiet book: the first compares it
                with the rebuilt one; the second concludes that comparison, if it differed."""
                sim.pause()
                await sim.drained()
                before = await resyncs()

                async def two_more() -> bool:
                    now = await resyncs()
                    return all(now[pair] >= before[pair] + 2 for pair in PAIRS)

                await recorder.wait_until(two_more, what="two quiet snapshots of every pair")

            await quiet_snapshots()
            for _ in range(4):  # bursts of the market, each with some 20 cancels per pair
                cancels = await cancels_read()
                sim.resume()

                async def burst_read(before: float = cancels) -> bool:
                    return await cancels_read() >= before + 40

                await recorder.wait_until(burst_read, what="a burst's cancels")
                await quiet_snapshots()
            await eventually(lambda: _book_at_is_the_engines(db, sim),
                             what="book_at equal to the engine's book")  # fmt: skip
            samples = await recorder.metrics()
        finally:
            exit_code = await asyncio.to_thread(recorder.stop)
    assert exit_code == 0
    other = "oid" if cancel_id == "cancel_order_id" else "cancel_order_id"
    log = recorder.log_text()
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


def _book_at_is_the_engines(db: str, sim: Simulator) -> bool:
    try:
        assert_book_at_now_is_the_engines(db, sim, PAIRS)
    except AssertionError:
        return False
    return True
