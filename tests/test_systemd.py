"""sd_notify over a real Unix datagram socket, as systemd would receive it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

from recorder.systemd import Notifier
from tests.harness.waiting import eventually


def receiver() -> tuple[socket.socket, str]:
    path = str(Path(tempfile.mkdtemp()) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_ready_and_stopping_reach_the_socket() -> None:
    sock, path = receiver()
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        notifier.ready("recording 3 pairs")
        notifier.stopping()
        assert sock.recv(1024) == b"READY=1\nSTATUS=recording 3 pairs"
        assert sock.recv(1024) == b"STOPPING=1"


def test_abstract_namespace_addresses_work() -> None:
    name = f"recorder-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(1024).startswith(b"READY=1")


async def test_watchdog_pings_at_half_the_period() -> None:
    sock, path = receiver()
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        assert notifier.watchdog_interval_s == 0.05
        task = asyncio.create_task(notifier.watchdog())
        sock.setblocking(False)
        pings: list[bytes] = []

        def received_three() -> bool:
            with contextlib.suppress(BlockingIOError):
                while True:
                    pings.append(sock.recv(1024))
            return len(pings) >= 3

        started = time.monotonic()
        try:
            await eventually(received_three, timeout_s=5, what="three watchdog pings")
        finally:
            task.cancel()
        assert set(pings) == {b"WATCHDOG=1"}
        assert time.monotonic() - started < 2.0  # every 0.05 s, not every few seconds


def test_without_systemd_nothing_happens() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready()  # no socket, no error


def test_a_watchdog_meant_for_another_process_is_ignored() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval_s is None
