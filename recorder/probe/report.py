"""What `recorder probe` found: one `Finding` per check, rendered as a table or as JSON.

A finding's outcome decides the exit code: `fail` means recording would not work as
configured (exit 1, the reason printed per failing item); `warn` is worth reading but does
not stop recording; `skip` says a check could not run (no keys, no order id to ask for).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from recorder.logs import redact

Outcome = Literal["ok", "warn", "fail", "skip"]

MAX_LINE_CHARS = 300
"""A table line's summary is cut here; the JSON has it whole."""

RECORDING_WOULD_FAIL = 1
"""Exit code: at least one finding says recording would not work (0 and 2 as everywhere)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: `key` is stable (`rest.pairs`), `summary` one line for people."""

    key: str
    outcome: Outcome
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "summary": self.summary, **jsonable(self.details)}


@dataclass(frozen=True, slots=True)
class Report:
    base_url: str
    socket_url: str
    started_at: datetime
    listened_s: float
    findings: tuple[Finding, ...]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.outcome == "fail"]

    @property
    def recording_would_work(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.recording_would_work else RECORDING_WOULD_FAIL

    def to_json(self) -> str:
        document = {
            "recording_would_work": self.recording_would_work,
            "base_url": self.base_url,
            "socket_url": self.socket_url,
            "started_at": self.started_at.isoformat(),
            "listened_s": self.listened_s,
            "failures": [f"{f.key}: {f.summary}" for f in self.failures],
            "warnings": [f"{f.key}: {f.summary}" for f in self.findings if f.outcome == "warn"],
            "findings": {f.key: f.as_json() for f in self.findings},
        }
        # Secrets are never put into a finding; masking the output is the second line.
        return redact(json.dumps(document, indent=2, ensure_ascii=False))

    def to_table(self) -> str:
        width = max([len("check")] + [len(f.key) for f in self.findings])
        lines = [
            f"recorder probe: {self.base_url} (socket.io {self.socket_url}), "
            f"listened {self.listened_s:g} s",
            "",
            f"{'check'.ljust(width)}  result  detail",
            f"{'-' * width}  ------  {'-' * 40}",
        ]
        lines += [f"{f.key.ljust(width)}  {f.outcome.ljust(6)}  {_line(f)}" for f in self.findings]
        lines.append("")
        if self.recording_would_work:
            lines.append("recording would work")
        else:
            lines.append("recording would not work:")
            lines += [f"  {f.key}: {_line(f)}" for f in self.failures]
        return redact("\n".join(lines))


def _line(finding: Finding) -> str:
    """A summary on one table line: an exchange's reason may be a whole HTML page."""
    text = " ".join(finding.summary.split())
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 3] + "..."


def jsonable(value: Any) -> Any:
    """`value` with Decimals as text, datetimes in ISO 8601, and tuples and sets as lists."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value
