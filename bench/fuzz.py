#!/usr/bin/env python3
"""A long fuzzing run: the properties of `tests/fuzz/` with many more examples than CI's.

    .venv/bin/python bench/fuzz.py [--examples 3000] [--pipeline-examples 150]

Runs pytest on `tests/fuzz/` with RECORDER_FUZZ_EXAMPLES (each parser property) and
RECORDER_FUZZ_PIPELINE_EXAMPLES (each end-to-end property: the daemon against the loopback
exchange and a real PostgreSQL) set, under `nice`, and prints, from hypothesis' statistics,
how many examples ran and how many failed, per property and in all. Exits non-zero if any
property failed; its falsifying example is in pytest's output above the summary.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATS = re.compile(
    r"^(?P<test>tests/fuzz/\S+):\s*$|"
    r"^\s+- (?P<passing>\d+) passing, (?P<failing>\d+) failing, and (?P<invalid>\d+) invalid",
    re.MULTILINE,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--pipeline-examples", type=int, default=150)
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k socket)")
    args = parser.parse_args()
    env = os.environ | {
        "RECORDER_FUZZ_EXAMPLES": str(args.examples),
        "RECORDER_FUZZ_PIPELINE_EXAMPLES": str(args.pipeline_examples),
    }
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "tests/fuzz", "-q",
               "-p", "no:cacheprovider", "--hypothesis-show-statistics", "--timeout", "0",
               *args.pytest_args]  # fmt: skip
    started = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed_s = time.monotonic() - started
    if run.returncode:  # the failures and their falsifying examples, before the statistics
        print(run.stdout.split("Hypothesis Statistics")[0][-60000:], run.stderr[-5000:])
    totals = {"passing": 0, "failing": 0, "invalid": 0}
    test = "?"
    rows = []
    for match in STATS.finditer(run.stdout):
        if match["test"]:
            test = match["test"]
        elif match["passing"]:
            counts = {key: int(match[key]) for key in totals}
            rows.append((test, counts))
            for key in totals:
                totals[key] += counts[key]
    for test, counts in rows:
        print(f"{counts['passing']:>7} passing {counts['failing']:>3} failing  {test}")
    print(f"\n{len(rows)} properties, {totals['passing']} passing examples, "
          f"{totals['failing']} failing, {totals['invalid']} invalid (filtered), "
          f"{elapsed_s / 60:.1f} min; pytest exit code {run.returncode}")  # fmt: skip
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
