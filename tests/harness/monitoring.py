"""A real Prometheus and a real Alertmanager around a test's recorder, configured from deploy/.

`prometheus_config` turns the shipped deploy/prometheus/prometheus.yml into the test's: the
one scrape target becomes the test's recorder, the scrape and evaluation intervals become
`interval`, Alertmanager becomes the test's, and each rule file is loaded as shipped except
for one documented transformation, `minutes_as_seconds`: every duration in a rule (`for:`,
range selectors, the minutes a `time() - ...` threshold counts) is divided by 60, so that a
minute of the shipped rules is a second of the test. Expressions, thresholds of counts and
labels stay as they ship. Nothing under deploy/ is edited.

`Alertmanager` and `Prometheus` are the Debian binaries (tests/harness/debian_tools.py) run
as processes on loopback ports they pick themselves (port 0; each logs the port it bound).
Their HTTP APIs are read asynchronously, so a test whose simulator shares the event loop
keeps the simulator going while it waits.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
SHIPPED_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

SCALE = 60
"""Shipped durations are divided by this in the test: a minute becomes a second."""

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_RANGE = re.compile(r"\[((?:\d+(?:ms|s|m|h|d|w))+)(?=[\]:])")
_MINUTES_THRESHOLD = re.compile(r"(time\(\)\s*-\s*[^<>]+?\s*[<>]=?\s*)(\d+)\s*\*\s*60\b")


def scaled_duration(duration: str, scale: int = SCALE) -> str:
    """A Prometheus duration (`15m`, `1h30m`) divided by `scale`, in milliseconds."""
    if not re.fullmatch(rf"(?:{_DURATION.pattern})+", duration):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    total_ms = sum(int(n) * _UNITS_MS[unit] for n, unit in _DURATION.findall(duration))
    return f"{max(1, total_ms // scale)}ms"


def minutes_as_seconds(expr: str, scale: int = SCALE) -> str:
    """A rule's PromQL with its durations divided by `scale` (see the module doc)."""
    expr = _RANGE.sub(lambda m: "[" + scaled_duration(m.group(1), scale), expr)
    # `time() - gauge > 15 * 60`: 15 minutes written as seconds; at scale 60, 15 seconds.
    return _MINUTES_THRESHOLD.sub(lambda m: f"{m.group(1)}{int(m.group(2)) * 60 // scale}", expr)


def scaled_rules(rules: dict[str, Any], scale: int = SCALE) -> dict[str, Any]:
    """A rule file (parsed) with `minutes_as_seconds` applied to every rule."""
    groups = []
    for group in rules["groups"]:
        scaled_group = {**group, "rules": []}
        if "interval" in group:
            scaled_group["interval"] = scaled_duration(group["interval"], scale)
        for rule in group["rules"]:
            scaled = {**rule, "expr": minutes_as_seconds(rule["expr"], scale)}
            if "for" in rule:
                scaled["for"] = scaled_duration(rule["for"], scale)
            scaled_group["rules"].append(scaled)
        groups.append(scaled_group)
    return {**rules, "groups": groups}


def prometheus_config(
    directory: Path, *, target: str, alertmanager: str, interval: str = "1s"
) -> Path:
    """Write the test's Prometheus config (and its scaled rule files) under `directory`."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": interval,
        "evaluation_interval": interval,
        "scrape_timeout": interval,
    }
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "recorder", job  # the rules select up{job="recorder"}
    (static,) = job["static_configs"]
    static["targets"] = [target]
    rule_files = []
    for name in config["rule_files"]:
        scaled = directory / f"scaled-{Path(name).name}"
        rules = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
        scaled.write_text(yaml.safe_dump(scaled_rules(rules), sort_keys=False))
        rule_files.append(str(scaled))
    config["rule_files"] = rule_files
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class _Server:
    """A Go server of the Prometheus family: its process, its log, the port it bound."""

    name = "server"

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = ""

    def alive(self, check: Callable[[], Any]) -> Callable[[], Any]:
        def checked() -> Any:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log_tail()}"
            return check()

        return checked

    async def listening(self) -> str:
        def bound_port() -> int:
            found = re.search(
                r'msg="Listening on" address=127\.0\.0\.1:(\d+)', self.log_path.read_text()
            )
            return int(found.group(1)) if found else 0

        port = await eventually(self.alive(bound_port), what=f"{self.name} listening")
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(self.url + path, params=params)
        answer.raise_for_status()
        return answer.json()


class Alertmanager(_Server):
    """Debian's Alertmanager, alone (no cluster), routing every alert to a receiver that
    sends nothing: what it received is what its API lists."""

    name = "Alertmanager"

    def __init__(self, binary: Path, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "alertmanager.yml"
        config.write_text(
            yaml.safe_dump({"route": {"receiver": "test"}, "receivers": [{"name": "test"}]})
        )
        super().__init__(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.path={directory / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--cluster.listen-address=",
            ],
            directory / "alertmanager.log",
        )

    async def active(self) -> dict[str, dict[str, Any]]:
        """Alerts it holds as active (resolved ones are no longer listed), by alert name."""
        alerts = await self.get("/api/v2/alerts", active="true")
        return {alert["labels"]["alertname"]: alert for alert in alerts}


class Prometheus(_Server):
    name = "Prometheus"

    def __init__(self, binary: Path, config: Path, directory: Path) -> None:
        super().__init__(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                # Alerts that still fire are sent again this often (default 1m): Alertmanager
                # then learns of them, and of their end, within a second or so.
                "--rules.alert.resend-delay=1s",
            ],
            directory / "prometheus.log",
        )

    async def query(self, expr: str) -> list[Any]:
        answer = await self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    async def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[Any]:
        answer = await self.get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    async def label_values(self, label: str, match: str) -> list[str]:
        answer = await self.get(f"/api/v1/label/{label}/values", **{"match[]": match})
        return list(answer["data"])

    async def rules(self) -> list[dict[str, Any]]:
        groups = (await self.get("/api/v1/rules"))["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    async def alerts(self) -> dict[str, str]:
        """The state (pending, firing) of each alert that is not inactive, by name."""
        alerts = (await self.get("/api/v1/alerts"))["data"]["alerts"]
        states: dict[str, str] = {}
        for alert in alerts:
            name = alert["labels"]["alertname"]
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states


NOT_YET = (httpx.TransportError, httpx.HTTPStatusError, ValueError)
"""What asking a server that is still starting raises: "not yet" to `eventually`."""


def alert_names(rule_files: Iterable[Path]) -> list[str]:
    return [
        rule["alert"]
        for path in rule_files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
