"""What the probe's tests share (tests/test_probe.py, tests/node/test_probe_on_node.py): the
probe's config file, and how long and on how many events the in-process probes listen."""

from __future__ import annotations

from pathlib import Path

from recorder.config import Config, load_config
from recorder.sim.engine import Cancel, Event
from tests.harness.config import write_config

PAIRS = ("BTC_USD", "ETH_USD")


def probe_config(
    tmp_path: Path,
    url: str,
    *,
    pairs: tuple[str, ...] | None = None,
    socket_url: str | None = None,
) -> Path:
    """`tmp_path / "probe.toml"`: the exchange at `url`, `pairs` (all: "*"), no database."""
    return write_config(
        tmp_path / "probe.toml",
        base_url=url,
        dsn=None,
        data_dir=tmp_path / "var",
        exchange={"socket_url": socket_url or url, "request_timeout_s": 5},
        recorder={"pairs": list(pairs or ("*",))},
        log_format="json",
    )


WINDOW_S = 4.0
"""How long the in-process probes listen: the market is stopped well within it."""
EVENTS_HEARD = 60
"""Book events sent to the probe before the market is stopped."""


def config_for(url: str, tmp_path: Path, *, socket_url: str | None = None) -> Config:
    return load_config(probe_config(tmp_path, url, pairs=PAIRS, socket_url=socket_url))


def counts_per_pair(events: list[Event]) -> dict[str, dict[str, int]]:
    return {
        pair: {
            "new": sum(1 for e in events if e.pair == pair and not isinstance(e, Cancel)),
            "cancel": sum(1 for e in events if e.pair == pair and isinstance(e, Cancel)),
        }
        for pair in PAIRS
    }
