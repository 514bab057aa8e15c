"""The recorder's configuration file, as tests and benches write it.

One writer, so that every test and bench runs the recorder the way an operator would (a
TOML file read by `load_config`), with the metrics endpoint on port 0: the daemon binds a
free port itself and logs which ("metrics served"), so no two runs can race for one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ANY_PORT = "127.0.0.1:0"


def toml_value(value: Any) -> str:
    """A string, number, boolean or list of them as TOML (JSON's spelling of these is TOML's)."""
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def write_config(
    path: Path,
    *,
    base_url: str,
    dsn: str | None,
    data_dir: Path,
    exchange: Mapping[str, Any] | None = None,
    recorder: Mapping[str, Any] | None = None,
    metrics_listen: str = ANY_PORT,
    log_format: str | None = None,
) -> Path:
    """Write a config for the exchange at `base_url` (REST and socket.io alike, unless
    `exchange` names a `socket_url`) and the database at `dsn` (None: none, as `recorder
    probe` needs none); return `path`."""
    sections: dict[str, dict[str, Any]] = {
        "exchange": {"base_url": base_url, "socket_url": base_url, **(exchange or {})},
        "database": {"dsn": dsn} if dsn is not None else {},
        "recorder": {"data_dir": str(data_dir), **(recorder or {})},
        "metrics": {"listen": metrics_listen},
    }
    if log_format is not None:
        sections["logging"] = {"format": log_format}
    lines = []
    for section, settings in sections.items():
        if not settings:
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
