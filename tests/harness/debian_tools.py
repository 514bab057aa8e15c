"""Debian's Prometheus tools for the tests: promtool, the Prometheus server, Alertmanager.

- `prometheus` (promtool and the server) is fetched with `apt-get download` and unpacked with
  `dpkg -x` into `.venv/tools`: no root needed, nothing on the machine changes, and the
  result is cached across runs (dropped with `.venv`).
- `prometheus-alertmanager` is installed with `apt-get install` (root only): Debian's build
  reads its notification templates from the absolute path /usr/share/prometheus/alertmanager
  and exits at start without them, so an unpacked copy elsewhere cannot run. Its service is
  not started by the install where policy-rc.d forbids it (containers); the tests start
  their own Alertmanager on a port of its own either way.

A tool that cannot be had raises `ToolUnavailable` with the reason; tests turn it into a
skip (or, in CI, a failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TOOLS = ROOT / ".venv" / "tools"
APT_TIMEOUT_S = 600


class ToolUnavailable(Exception):
    """A Debian tool the test needs cannot be found, fetched or installed here; the reason."""


def promtool() -> Path:
    return _unpacked("prometheus", "promtool")


def prometheus_server() -> Path:
    return _unpacked("prometheus", "prometheus")


def alertmanager() -> Path:
    """Debian's Alertmanager, installed system-wide if it is not yet (see the module doc)."""
    binary = shutil.which("prometheus-alertmanager")
    templates = Path("/usr/share/prometheus/alertmanager/default.tmpl")
    if binary and templates.exists():
        return Path(binary)
    if not shutil.which("apt-get"):
        raise ToolUnavailable("Alertmanager needs apt-get to install Debian's package")
    if os.geteuid() != 0:
        raise ToolUnavailable(
            "Alertmanager is not installed and only root may install it: "
            "apt-get install prometheus-alertmanager"
        )
    installed = _apt_install("prometheus-alertmanager")
    if installed.returncode != 0:
        # A machine whose package lists were never fetched knows no such package yet.
        _run("apt-get", "update", "-qq")
        installed = _apt_install("prometheus-alertmanager")
    binary = shutil.which("prometheus-alertmanager")
    if installed.returncode != 0 or binary is None:
        raise ToolUnavailable(f"could not install prometheus-alertmanager: {installed.stderr}")
    return Path(binary)


def _unpacked(package: str, name: str) -> Path:
    """`name` from `package`: on PATH, or unpacked into the cache (fetched if need be)."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    cached = TOOLS / package / "usr" / "bin" / name
    if cached.exists():
        return cached
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise ToolUnavailable(f"{name} needs apt-get and dpkg to fetch Debian's {package}")
    downloads = TOOLS / "deb"
    downloads.mkdir(parents=True, exist_ok=True)
    fetched = _run("apt-get", "download", "-qq", package, cwd=downloads)
    if fetched.returncode != 0 and os.geteuid() == 0:
        _run("apt-get", "update", "-qq")
        fetched = _run("apt-get", "download", "-qq", package, cwd=downloads)
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        raise ToolUnavailable(f"could not download Debian's {package}: {fetched.stderr.strip()}")
    unpacked = _run("dpkg", "-x", str(debs[-1]), str(TOOLS / package))
    if unpacked.returncode != 0 or not cached.exists():
        raise ToolUnavailable(f"could not unpack {debs[-1].name}: {unpacked.stderr.strip()}")
    return cached


def _apt_install(package: str) -> subprocess.CompletedProcess[str]:
    return _run(
        "apt-get", "install", "-y", "-qq", "--no-install-recommends", package,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip


def _run(
    *command: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_S,
        check=False,
    )
