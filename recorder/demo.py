"""`recorder demo`: the simulated exchange and the recorder in one process, recording into
the embedded PostgreSQL under `<data_dir>/demo`, until Ctrl-C.

The simulator starts with a few hours of generated history, so the first minute already
shows a backfill, the live stream and snapshots. The demo prints where the metrics are and
queries to try while it runs.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

from recorder import exitcodes
from recorder.config import Config, Dsn
from recorder.daemon import Daemon
from recorder.logs import get_logger
from recorder.sim.server import SimSettings, run_sim

log = get_logger(__name__)

DEMO_PAIRS = ("BTC_USD", "ETH_USD", "ETH_BTC")

QUERIES = [
    ("trades per pair", "SELECT pair, count(*), min(ts), max(ts) FROM trades GROUP BY pair"),
    ("the live stream", "SELECT pair, kind, count(*) FROM book_events GROUP BY 1, 2 ORDER BY 1, 2"),
    ("hourly OHLCV", "SELECT * FROM ohlcv_1h ORDER BY bucket DESC LIMIT 5"),
    ("the book now", "SELECT * FROM book_at('BTC_USD', now()) LIMIT 10"),
    ("stream sessions", "SELECT * FROM stream_sessions ORDER BY connected_at"),
]


def run_demo(config: Config, *, sim_port: int = 0) -> int:
    return asyncio.run(_demo(config, sim_port))


async def _demo(config: Config, sim_port: int) -> int:
    settings = SimSettings(port=sim_port, pairs=DEMO_PAIRS, rate_per_s=20.0, history_hours=3.0)
    async with run_sim(settings) as sim:
        demo_config = config.model_copy(
            update={
                "exchange": config.exchange.model_copy(
                    update={"base_url": sim.base_url, "socket_url": sim.base_url}
                ),
                "database": config.database.model_copy(update={"dsn": Dsn("")}),
                "recorder": config.recorder.model_copy(
                    update={"data_dir": config.recorder.data_dir / "demo", "pairs": ("*",)}
                ),
            }
        )
        daemon = Daemon(demo_config)
        running = asyncio.create_task(daemon.run())
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            ready.cancel()
            return running.result()
        print(welcome(sim.base_url, daemon.dsn, demo_config), flush=True)
        code = await running
        return code if code is not None else exitcodes.OK


def welcome(exchange_url: str, dsn: str, config: Config) -> str:
    """What the demo prints once it records: where things are, and queries to paste.

    The commands name the data directory and the `recorder` executable by absolute paths:
    they are pasted into another terminal, whose directory may differ and whose shell has
    not activated the virtualenv.
    """
    data_dir = config.recorder.data_dir.absolute()
    sql = f"RECORDER_RECORDER__DATA_DIR={shlex.quote(str(data_dir))} {recorder_command()} sql"
    lines = [
        "",
        "  The recorder is recording a simulated bitexbit exchange.",
        f"    exchange (REST + socket.io): {exchange_url}",
        f"    metrics:                     http://{config.metrics.listen}/metrics",
        f"    database (embedded):         {dsn}",
        "",
        "  In another terminal, try:",
    ]
    for title, query in QUERIES:
        lines.append(f"    # {title}")
        lines.append(f'    {sql} "{query}"')
    lines += ["", f"  Ctrl-C stops the demo (its data stays in {data_dir}).", ""]
    return "\n".join(lines)


def recorder_command(bin_dir: Path | None = None) -> str:
    """The `recorder` of this installation as a shell command that works from any shell.

    The script installed beside this interpreter (the virtualenv's `bin/`) by its absolute
    path; without one (run from a source tree), this interpreter with `-m recorder`.
    """
    bin_dir = bin_dir if bin_dir is not None else Path(sys.executable).parent
    script = bin_dir / ("recorder.exe" if os.name == "nt" else "recorder")
    if script.is_file():
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(str(Path(sys.executable).absolute()))} -m recorder"
