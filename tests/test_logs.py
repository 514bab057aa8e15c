"""Logging: one line per event with its fields, JSON off a terminal, secrets never shown."""

from __future__ import annotations

import io
import json
import logging
from decimal import Decimal

import pytest

from recorder.logs import configure_logging, get_logger, redact_secrets


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_lines_off_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", out)
    log = get_logger("recorder.test")
    log.info("snapshot stored", pair="BTC_USD", orders=812, price=Decimal("0.00000001"))
    log.debug("not shown at info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("flush failed", table="trades")
    lines = out.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["event"] == "snapshot stored"
    assert first["level"] == "info"
    assert first["logger"] == "recorder.test"
    assert (first["pair"], first["orders"], first["price"]) == ("BTC_USD", 812, "1E-8")
    assert first["ts"].endswith("+00:00")
    assert len(lines) == 2, "one line per event, tracebacks included"
    second = json.loads(lines[1])
    assert second["table"] == "trades"
    assert "RuntimeError: boom" in second["exc"]


def test_human_lines_on_a_terminal() -> None:
    out = FakeTerminal()
    configure_logging("debug", "auto", out)
    get_logger("recorder.book").warning("drift", pair="ETH_USD", note="two orders differ")
    (line,) = out.getvalue().splitlines()
    assert "WARNING" in line
    assert "recorder.book" in line
    assert line.endswith('drift  pair=ETH_USD note="two orders differ"')


def test_library_loggers_share_the_format() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    logging.getLogger("psycopg.pool").warning("connection lost")
    assert json.loads(out.getvalue())["logger"] == "psycopg.pool"


def test_registered_secrets_are_masked_in_every_line() -> None:
    secret = "s3cr3t-value-91"
    redact_secrets([secret, "ab"])
    for fmt in ("json", "text"):
        out = io.StringIO()
        configure_logging("info", fmt, out)
        get_logger("recorder.client").info(f"signed with {secret}", header=secret)
        logging.getLogger("httpx").warning("GET https://x/?k=%s", secret)
        text = out.getvalue()
        assert secret not in text
        assert text.count("****") == 3
    out = io.StringIO()
    configure_logging("info", "text", out)
    get_logger("x").info("ab stays")  # too short to mask without garbling every line
    assert "ab stays" in out.getvalue()


def test_library_request_lines_only_at_debug() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    logging.getLogger("httpx").info("HTTP Request: GET /api/v1/pairs/")
    assert out.getvalue() == ""
    configure_logging("debug", "json", out)
    logging.getLogger("httpx").info("HTTP Request: GET /api/v1/pairs/")
    assert json.loads(out.getvalue())["logger"] == "httpx"
