"""`python3 dev.py bench NAME`: every benchmark is one command from a clean clone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("[!_]*.py"))


def dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_bench_without_a_name_lists_the_scripts() -> None:
    listed = dev("bench")
    assert listed.returncode == 2
    assert {"chaos", "ingest", "storage", "writer"} <= set(SCRIPTS)
    for name in SCRIPTS:
        assert name in listed.stderr
    assert dev("bench", "no_such_bench").returncode == 2


def test_bench_runs_the_script_in_the_venv_with_its_arguments() -> None:
    shown = dev("bench", "storage", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "usage: storage.py" in shown.stdout
    assert "--no-timescaledb" in shown.stdout
