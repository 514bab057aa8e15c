"""`recorder run --config FILE` as a real process, for tests and benches that need one.

A process of its own is what real signals (SIGTERM, SIGKILL), a real restart and /proc
readings need. Every start appends the process's output (JSON log lines) to one log file,
which is also how the harness learns where the metrics are served: the daemon binds the
port the config says (0 here: any free one) and logs the URL it bound.

The methods that wait block (`stop`, `kill`); a test whose simulator runs on the same
event loop calls them through `asyncio.to_thread`, so that the simulator goes on meanwhile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.waiting import DEFAULT_TIMEOUT_S, eventually

T = TypeVar("T")

STOP_TIMEOUT_S = 60.0


class RecorderExited(AssertionError):
    """The recorder ended while a test was still waiting for it."""


class RecorderProcess:
    def __init__(
        self, config_path: Path, log_path: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path or config_path.with_name("recorder.log")
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_start = 0
        """Where this start's lines begin in the log."""

    # --- life -----------------------------------------------------------------------------

    def start(self) -> int:
        """Start `recorder run`; its pid."""
        assert not self.running, "the recorder is already running"
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recorder", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
            )
        self.starts += 1
        return self.process.pid

    @property
    def pid(self) -> int:
        assert self.process is not None, "never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        assert self.process is not None, "never started"
        self.process.kill()
        self.process.wait()

    def kill_if_running(self) -> None:
        """After a test or bench, a failed one too: no recorder outlives it."""
        if self.running:
            self.kill()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, as systemd and docker stop it; the exit code (0: everything committed),
        or the negative SIGKILL if it had not ended after `timeout_s`."""
        assert self.process is not None, "never started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -signal.SIGKILL

    async def wait_until(
        self,
        check: Callable[[], T | Awaitable[T]],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        what: str = "",
        ignoring: tuple[type[BaseException], ...] = (),
    ) -> T:
        """`eventually(check)`, failing at once (with the log's tail) if the recorder ends."""

        def alive_and(check: Callable[[], T | Awaitable[T]]) -> T | Awaitable[T]:
            if not self.running:
                raise RecorderExited(
                    f"the recorder exited ({self.returncode}) while waiting for "
                    f"{what or check}:\n{self.log_tail()}"
                )
            return check()

        return await eventually(
            lambda: alive_and(check), timeout_s=timeout_s, what=what, ignoring=ignoring
        )

    # --- its log --------------------------------------------------------------------------

    def log_text(self, this_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            if this_start:
                log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_entries(self, this_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log lines (lines that are not JSON, such as a traceback, left out)."""
        entries = []
        for line in self.log_text(this_start).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def errors(self) -> list[str]:
        """Every error the recorder logged, as `event: error type`, and any traceback printed
        outside the log (a crash before logging was set up)."""
        found = []
        for line in self.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                error_type = str(entry.get("error", "")).split(":", 1)[0]
                found.append(f"{entry.get('event')}: {error_type}".strip(": "))
        return found

    # --- its metrics ----------------------------------------------------------------------

    @property
    def metrics_url(self) -> str | None:
        """Where this start serves its metrics, once it has said so in its log."""
        for entry in self.log_entries(this_start=True):
            if entry.get("event") == "metrics served":
                return str(entry["url"])
        return None

    async def serving_metrics(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
        """Wait until this start serves its metrics; the URL."""
        return await self.wait_until(
            lambda: self.metrics_url, timeout_s=timeout_s, what="the metrics endpoint"
        )

    async def metrics(self) -> dict[str, float]:
        """This start's metrics as `scrape` gives them; empty while it cannot answer."""
        url = self.metrics_url
        if url is None:
            return {}
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                text = (await http.get(url)).raise_for_status().text
        except httpx.HTTPError:
            return {}
        return samples_of(text)


def samples_of(exposition: str) -> dict[str, float]:
    """Every sample of a Prometheus exposition, summed per metric name over its labels, and
    under `name{label="value",...}` for each labelled sample."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
            if sample.labels:
                samples[sample_key(sample.name, **sample.labels)] = sample.value
    return samples


def sample_key(name: str, **labels: str) -> str:
    """The key of a labelled sample in `samples_of`: `name{label="value",...}`, sorted."""
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def environment(**variables: str) -> dict[str, str]:
    """This process's environment with `variables` added (for `RecorderProcess(env=...)`)."""
    return {**os.environ, **variables}
