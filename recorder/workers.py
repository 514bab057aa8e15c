"""`recorder run --workers N`: one parent, N `recorder run` processes sharing the pairs.

One recorder is one Python process and so one core (docs/benchmarks.md); a many-core host
uses its cores by running several, and they share the pairs through the database's leases
exactly as recorders on several hosts do (docs/operations.md, "Running several
recorders"). The parent only supervises:

- it serves the database first when it is the embedded one (the workers share it; each
  would otherwise start its own), then starts each worker as `recorder run` with the same
  configuration file and, through the environment (`RECORDER_<SECTION>__<KEY>` overrides
  the file key by key), the shared DSN, a `data_dir` of its own (`data_dir/worker-K`: the
  spool is per process) and a metrics port of its own;
- a worker that ends while the parent is not stopping is started again, after the task
  restart backoff (a worker that keeps dying is not restarted in a tight loop); its pairs
  are meanwhile taken over by the others when its leases expire;
- SIGTERM or SIGINT is passed on to every worker (a second one too: the workers then spill
  what they have not committed), and the parent ends when they all have, with 0 if each
  ended with 0.

Metrics: one port per worker, `metrics.listen`'s port + K (0 stays 0: any free port, logged
by each worker), and the parent's own (`recorder_workers_live`,
`recorder_worker_restarts_total`) on `metrics.listen`. Not prometheus_client's multiprocess
mode: it needs every gauge to declare how processes combine and adds a `pid` label to the
ones that do not (which would change every series the dashboards and alerts use), and it
cannot serve the writer's buffer gauge, which is read by a function at scrape time. Each
worker a target of its own keeps every name and label as one recorder has them, and an
alert names the worker whose pairs stall.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from pathlib import Path

from prometheus_client import Counter, Gauge, start_http_server

from recorder import exitcodes
from recorder.clock import REAL_CLOCK
from recorder.config import Config
from recorder.logs import get_logger
from recorder.retry import TASK_RESTART
from recorder.storage.embedded import serving_database

log = get_logger(__name__)

PR_SET_PDEATHSIG = 1

workers_live = Gauge("recorder_workers_live", "Worker processes running under this parent")
worker_restarts = Counter(
    "recorder_worker_restarts_total", "Workers started again after they ended on their own"
)


class Workers:
    def __init__(self, config: Config, config_path: Path | None, count: int) -> None:
        self.config = config
        self.config_path = config_path
        self.count = count
        self.stopping = asyncio.Event()
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._signals = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._forward, sig)
        data_dir = self.config.recorder.data_dir
        async with serving_database(self.config.database, data_dir) as dsn:
            listen = self.config.metrics
            try:
                server, _ = start_http_server(listen.port, addr=listen.host)
            except OSError as exc:
                log.error("could not start", problem=f"cannot serve metrics: {exc}")
                return exitcodes.STARTUP_FAILURE
            try:
                log.info("metrics served", url=f"http://{listen.host}:{server.server_port}/metrics")
                codes = await asyncio.gather(
                    *(self._keep(k, dsn) for k in range(1, self.count + 1))
                )
            finally:
                server.shutdown()
        log.info("workers stopped", exit_codes=codes)
        return exitcodes.OK if all(code == 0 for code in codes) else codes[0] or 1

    def _forward(self, sig: signal.Signals) -> None:
        self._signals += 1
        self.stopping.set()
        log.info("passing the signal on to the workers", signal=sig.name, times=self._signals)
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def _keep(self, k: int, dsn: str) -> int:
        """Run worker `k` until the parent stops; its last exit code."""
        attempts = TASK_RESTART.attempts()
        while True:
            attempts.started()
            process = await self._start(k, dsn)
            code = await process.wait()
            workers_live.dec()
            if self.stopping.is_set():
                return code
            delay_s = attempts.failed()
            log.error("worker ended; starting it again", worker=k, pid=process.pid,
                      exit_code=code, retry_in_s=round(delay_s, 1))  # fmt: skip
            worker_restarts.inc()
            if await REAL_CLOCK.wait(self.stopping, delay_s):
                return code

    async def _start(self, k: int, dsn: str) -> asyncio.subprocess.Process:
        recorder, listen = self.config.recorder, self.config.metrics
        port = 0 if listen.port == 0 else listen.port + k
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        env = {
            **os.environ,
            "RECORDER_DATABASE__DSN": dsn,
            "RECORDER_RECORDER__DATA_DIR": str(recorder.data_dir / f"worker-{k}"),
            "RECORDER_METRICS__LISTEN": f"{host}:{port}",
        }
        command = [sys.executable, "-m", "recorder", "run"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            # A session of its own: a Ctrl-C reaches the parent alone, which passes it on
            # once (a worker that got both would take them as a second, forcing signal).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._processes[k] = process
        workers_live.inc()
        log.info("worker started", worker=k, pid=process.pid)
        if self.stopping.is_set():  # a signal came while it was starting
            process.send_signal(signal.SIGTERM)
        return process


def _die_with_parent() -> None:
    """In the worker before it runs: SIGTERM when the parent dies (Linux), so a parent
    killed outright leaves no worker recording behind it."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_workers(config: Config, config_path: Path | None, count: int) -> int:
    return asyncio.run(Workers(config, config_path, count).run())
