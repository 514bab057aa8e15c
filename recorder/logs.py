"""Logging, set up in one place: one line per event, with its fields.

Code logs through `get_logger(__name__)` and passes fields as keywords:

    log.info("snapshot stored", pair="BTC_USD", orders=812)

On a terminal a line reads `16:25:12.034 INFO  recorder.book  snapshot stored  pair=BTC_USD
orders=812`; elsewhere (systemd, docker, files) it is one JSON object per line. Lines from
libraries (httpx, socketio, psycopg) go through the same handler. Every secret registered
with `redact_secrets` is replaced by a mask in every line, whoever logged it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

MASK = "****"
MIN_SECRET_LEN = 4
"""Shorter values are not masked: masking "ab" would garble every line without protecting much."""

_STANDARD_KWARGS = {"exc_info", "stack_info", "stacklevel", "extra"}


class _Redactor:
    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if len(s) >= MIN_SECRET_LEN}
            # Longest first, so a secret that contains another is masked whole.
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


redact = _Redactor()


def redact_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in every log line from now on."""
    redact.add(secrets)


class EventLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose keyword arguments become the event's fields."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in _STANDARD_KWARGS}
        extra = dict(kwargs.pop("extra", None) or {})
        extra["fields"] = {**extra.get("fields", {}), **fields}
        return msg, {**kwargs, "extra": extra}


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name), {})


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, the fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line[key if key not in line else f"field_{key}"] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    """Human-readable: time, level, logger, event, then key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        parts = [when, f"{record.levelname:<7}", record.name, " " + record.getMessage()]
        fields = " ".join(f"{k}={_console_value(v)}" for k, v in _fields(record).items())
        text = " ".join(parts) + ("  " + fields if fields else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def _console_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or " " in text) else text


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route every logger to one handler on `stream` (stderr by default); safe to call again."""
    stream = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not _is_terminal(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else ConsoleFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries log every request at INFO; below debug, only their warnings come through.
    library_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    for noisy in ("httpx", "httpcore", "engineio.client", "socketio.client"):
        logging.getLogger(noisy).setLevel(library_level)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
