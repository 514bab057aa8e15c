"""`recorder run --workers N`: N recorders under one parent share the pairs through the
database; the parent starts a worker that died again and passes SIGTERM on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.config import write_config
from tests.harness.daemon import QUICK_POLLS, engine_tape, stored_tape
from tests.harness.leases import LEASE_TTL_S, WorkersProcess, live_leases, shared_by_workers
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD", "LTC_USD")
SETTLE_S = 60.0


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(SimSettings(seed=21, pairs=PAIRS, rate_per_s=10, history_hours=0.05)) as s:
        yield s


@pytest.fixture
def parent(tmp_path: Path, sim: Simulator, db: str) -> Iterator[WorkersProcess]:
    config = write_config(
        tmp_path / "recorder.toml",
        base_url=sim.base_url,
        dsn=db,
        data_dir=tmp_path / "data",
        exchange={"stream_connections": 1},
        recorder={**QUICK_POLLS, "lease_ttl_s": LEASE_TTL_S},
        log_format="json",
    )
    process = WorkersProcess(config, workers=2)
    yield process
    workers = process.worker_pids() if process.running else set()
    process.kill_if_running()
    for pid in workers:  # they would end with their parent; not left to chance here
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workers_share_the_pairs_and_one_that_dies_is_started_again(
    sim: Simulator, db: str, parent: WorkersProcess, tmp_path: Path
) -> None:
    parent.start()

    async def shared() -> bool:
        return shared_by_workers(db, sim, PAIRS, parent)

    await parent.wait_until(shared, timeout_s=SETTLE_S, what="two workers sharing the pairs",
                            ignoring=(psycopg.errors.UndefinedTable,))  # fmt: skip
    first = parent.worker_pids()
    data_dirs = {environ(pid)["RECORDER_RECORDER__DATA_DIR"] for pid in first}
    assert data_dirs == {str(tmp_path / "data" / f"worker-{k}") for k in (1, 2)}, "a spool each"

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    await parent.wait_until(lambda: len(parent.worker_pids() - first) == 1, timeout_s=SETTLE_S,
                            what="the killed worker started again")  # fmt: skip
    await parent.wait_until(shared, timeout_s=SETTLE_S, what="sharing again after the restart")

    sim.pause()
    await sim.drained()
    truth = engine_tape(sim)
    await eventually(lambda: stored_tape(db) == truth, timeout_s=SETTLE_S,
                     what="the stored tape equal to the simulator's")  # fmt: skip

    workers = parent.worker_pids()
    assert await asyncio.to_thread(parent.stop) == 0
    assert not any(map(alive, workers)), "workers outlived their parent"
    assert live_leases(db) == {}, "the workers gave their leases up on SIGTERM"
