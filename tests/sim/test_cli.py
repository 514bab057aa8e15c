"""`recorder sim` as a process: serves, prints its accounts, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request


def test_recorder_sim_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "sim",
            "--port",
            "0",
            "--history-hours",
            "0.2",
            "--pairs",
            "ETH_BTC,LTC_USD",
            "--rate",
            "5",
            "--seed",
            "9",
            "--book-orders",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        accounts = []
        while not url or len(accounts) < 3:
            line = process.stdout.readline()
            assert line, "recorder sim exited early"
            if "serving" in line:
                url = line.split()[3]
            if "account" in line:
                accounts.append(line)
        assert url.startswith("http://127.0.0.1:")
        assert "key sim-alice secret" in accounts[0]
        with urllib.request.urlopen(url + "/api/v1/pairs/", timeout=10) as response:  # noqa: S310 - our own http URL
            pairs = json.loads(response.read())
        assert [p["name"] for p in pairs] == ["ETH_BTC", "LTC_USD"]
        with urllib.request.urlopen(url + "/api/v1/orderbook/LTC_USD/", timeout=10) as response:  # noqa: S310 - our own http URL
            book = json.loads(response.read())
        # --book-orders 300 (the history alone leaves about 80; the flow at 5 events/s may
        # have cancelled a few since the start)
        assert len(book["buy"]) + len(book["sell"]) > 250
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0


def test_bad_fault_rate_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recorder", "sim", "--port", "0", "--rate-429", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "rate_429" in result.stderr


def test_bad_pair_name_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recorder", "sim", "--port", "0", "--pairs", "BTCUSD"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "BTCUSD" in result.stderr
