"""Several `recorder run` processes on one database, as tests and benches look at them.

Who holds what is read from the database (`leases` joined with `recorder_members`, whose
pid tells which process a run is), and who is subscribed to what from the simulator's own
rooms, so a test can say "every pair is recorded by exactly one live recorder" from the two
sides that would disagree if it were not so.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recorder.sim.server import Simulator
from tests.harness.config import write_config
from tests.harness.daemon import QUICK_POLLS
from tests.harness.postgres import query
from tests.harness.recorder_process import RecorderProcess

LEASE_TTL_S = 3.0
"""Short, so that a takeover in a test takes seconds."""


def recorder_process(
    tmp_path: Path, name: str, sim: Simulator, dsn: str, **recorder: Any
) -> RecorderProcess:
    """A recorder of its own (its data_dir, its log) on the shared database, not started;
    one stream connection, so the simulator's rooms show one subscriber per recorder."""
    directory = tmp_path / name
    config = write_config(
        directory / "recorder.toml",
        base_url=sim.base_url,
        dsn=dsn,
        data_dir=directory / "data",
        exchange={"stream_connections": 1},
        recorder={**QUICK_POLLS, "lease_ttl_s": LEASE_TTL_S, **recorder},
        log_format="json",
    )
    return RecorderProcess(config)


def live_leases(dsn: str) -> dict[str, list[int]]:
    """Each resource's unexpired leases, as the pids of their owners' processes."""
    held: dict[str, list[int]] = {}
    for resource, pid in query(
        dsn,
        "SELECT l.resource, m.pid FROM leases l JOIN recorder_members m ON m.run_id = l.owner"
        " WHERE l.expires_at > now() ORDER BY l.resource, m.pid",
    ):
        held.setdefault(resource, []).append(pid)
    return held


def held_by(dsn: str, pid: int) -> set[str]:
    return {resource for resource, pids in live_leases(dsn).items() if pid in pids}


def subscribers(sim: Simulator, pairs: Iterable[str]) -> dict[str, int]:
    """How many socket connections the simulator has in each pair's room."""
    return {pair: len(sim.subscribers(f"book_{pair}")) for pair in pairs}


def shared_once(
    dsn: str, sim: Simulator, pairs: Iterable[str], recorders: Iterable[RecorderProcess]
) -> bool:
    """Every pair leased to exactly one of `recorders` (running ones), shares differing by at
    most one, and subscribed by exactly one connection at the simulator."""
    pairs = list(pairs)
    live = {r.pid for r in recorders if r.running}
    leases = live_leases(dsn)
    if sorted(leases) != sorted(pairs):
        return False
    if any(len(pids) != 1 or pids[0] not in live for pids in leases.values()):
        return False
    shares = Counter(pids[0] for pids in leases.values())
    counts = [shares.get(pid, 0) for pid in live]
    if max(counts) - min(counts) > 1:
        return False
    return all(n == 1 for n in subscribers(sim, pairs).values())


def lease_gaps(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT resource, gap_start, gap_end FROM lease_gaps ORDER BY gap_start")


class WorkersProcess(RecorderProcess):
    """`recorder run --workers N`: the parent; its workers are found by their parent pid."""

    def __init__(self, config_path: Path, workers: int) -> None:
        super().__init__(config_path)
        self.workers = workers

    def start(self) -> int:
        assert not self.running, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recorder", "run", "--config", str(self.config_path),
                 "--workers", str(self.workers)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.starts += 1
        return self.process.pid

    def worker_pids(self) -> set[int]:
        """The running processes whose parent is this one."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rpartition(")")[2].split()
                if int(fields[1]) == self.pid and fields[0] != "Z":
                    found.add(int(entry.name))
        return found


def shared_by_workers(
    dsn: str, sim: Simulator, pairs: Iterable[str], parent: WorkersProcess
) -> bool:
    """As `shared_once`, the owners being the parent's running workers, all of them sharing."""
    pairs = list(pairs)
    workers = parent.worker_pids()
    leases = live_leases(dsn)
    if len(workers) != parent.workers or sorted(leases) != sorted(pairs):
        return False
    owners = [pids[0] for pids in leases.values() if len(pids) == 1]
    if len(owners) != len(pairs) or not set(owners) <= workers:
        return False
    counts = Counter(owners)
    if max(counts.values()) - min(counts.get(w, 0) for w in workers) > 1:
        return False
    return all(n == 1 for n in subscribers(sim, pairs).values())
