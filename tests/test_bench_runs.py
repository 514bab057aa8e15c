"""Every benchmark runs to its end, its own checks passing, at a size that takes seconds.

The figures in docs/benchmarks.md are only as good as the benches that make them, and no
one runs a bench until they want a figure: the ingest bench failed its database check for
a day after migration 0019 and nobody saw. Here each one runs on a tiny load. Nothing is
timed: what is checked is the exit code and the line where the bench says its check of
what was stored passed (the benches compare with what their source sent, exactly).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TSDB_SCRIPT = ROOT.parent / "shared" / "timescaledb" / "tsdb.py"
NODE = shutil.which("node") is not None and shutil.which("npm") is not None

SOURCE = "node" if NODE else "sim"
STORAGE_DB = "" if TSDB_SCRIPT.exists() else "--no-timescaledb"

RUNS = {
    # bench: (its arguments for a tiny run, what its output says when its checks pass)
    "book_at": (
        "--book-orders 100 --events 200 --instants 5",
        "every book_at equal to the engine's",
    ),
    "book_at_day": (
        "--events 5000 --depth 50 --instants 10 --spacing 0.1",
        "every result equal to the engine's book",
    ),
    "catchup": ("--trades 2000", "| exact |"),
    "event_path": (
        "--events 500 --repeat 1",
        "checked: every event and fill handed on once, none raw, books equal to the engine's",
    ),
    "footprint": (
        "--parts rates --rates 200 --seconds 2",
        "book_at of 2 pair(s) equal to the engine's",
    ),
    "ingest": (
        f"--rates 500 --seconds 1 --rounds 1 --connections 1 --source {SOURCE}",
        "| checked |",
    ),
    "row_cost": ("--rows 2000 --batch 500 --repeat 1", "the heap alone"),
    "scale": (
        "--pairs 4 --recorders 2 --repeat 1 --lease-ttl 3"
        " --throughput-pairs 4 --workers 2 --seconds 2 --rate 200",
        "book_at of 4 pair(s) equal to the engine's",
    ),
    "sim_emit": ("--seconds 1 --rate 500", "after pausing: made"),
    # Asserts inside: every path stored exactly the simulator's book, or it exits non-zero.
    "snapshot": ("--orders 200 --rounds 1", "rec/bare"),
    "storage": (
        f"--seconds 3 --rate 50 --book-orders 100 --history-per-hour 100 {STORAGE_DB}",
        "bytes per row",
    ),
    "stream_copies": ("--events 500 --repeat 1", "2 connections:"),
    "writer": ("--rows 2000 --batch 500 --repeat 1", "writer / raw COPY"),
}
ELSEWHERE = {
    "chaos": "tests/test_chaos.py runs its driver (tests/harness/chaos.py)",
    "fuzz": "runs tests/fuzz, which the suite runs",
}


def test_every_bench_has_a_tiny_run_or_says_where_it_is_run() -> None:
    scripts = {path.stem for path in (ROOT / "bench").glob("[!_]*.py")}
    assert scripts == RUNS.keys() | ELSEWHERE.keys()


@pytest.mark.parametrize("bench", sorted(RUNS))
def test_the_bench_runs_and_its_checks_pass(bench: str, tmp_path: Path) -> None:
    arguments, passed = RUNS[bench]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), *arguments.split()],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    told = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, told
    assert passed in done.stdout, told
