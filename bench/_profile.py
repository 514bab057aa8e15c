"""py-spy profiles of a bench's recorder process: sampled while it runs, read as cores per
function.

py-spy (`.venv/bin/pip install py-spy`; not a dependency of the project) reads the target's
memory from outside, pausing it for each sample (its default; `--nonblocking` would not
pause it but may read a stack half-way through a change). Its own CPU is spent in its own
process, which on a small machine still competes with the one measured.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 100
REPO = Path(__file__).resolve().parent.parent


def start(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for `seconds` into `path` (collapsed stacks, by function)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    command = [
        py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ),
        "--function", "--format", "raw", "--duration", str(math.ceil(seconds)),
        "--output", str(path),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


FRAME = re.compile(r"^(?P<name>.*) \((?P<path>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`name (path:line)` as py-spy writes it, to `name (short path)`."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"]
    for root in ("site-packages/", f"{REPO}/", "lib/python3"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{match['name']} ({path})"


@dataclass
class Profile:
    """Cores spent per function over a sampled window."""

    inclusive: Counter[str] = field(default_factory=Counter)
    """In the function or its callees."""
    own: Counter[str] = field(default_factory=Counter)
    """In the function itself (the sampled stack's innermost frame)."""
    total: float = 0.0
    """Every sample: what py-spy saw the process run."""

    def trunk(self, share: float = 0.5) -> set[str]:
        """Functions on the stack of at least `share` of the samples (the event loop's
        frames and their callers), which say nothing of where the time goes."""
        return {name for name, cores in self.inclusive.items() if cores >= share * self.total}


def read(path: Path, seconds: float) -> Profile:
    """A py-spy collapsed-stack file of a `seconds`-long window, in cores per function."""
    scale = 1 / (RATE_HZ * seconds)
    profile = Profile()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        cores = int(count) * scale
        frames = [frame_name(frame) for frame in stack.split(";")]
        for name in set(frames):
            profile.inclusive[name] += cores
        profile.own[frames[-1]] += cores
        profile.total += cores
    return profile


def mean_profile(profiles: list[Profile]) -> Profile:
    """Each function's cores, averaged over the rounds' profiles."""
    mean = Profile()
    for profile in profiles:
        mean.inclusive.update(profile.inclusive)
        mean.own.update(profile.own)
        mean.total += profile.total
    n = len(profiles)
    mean.inclusive = Counter({name: cores / n for name, cores in mean.inclusive.items()})
    mean.own = Counter({name: cores / n for name, cores in mean.own.items()})
    mean.total /= n
    return mean
