"""systemd's notify protocol (sd_notify) without libsystemd: READY=1, STOPPING=1, WATCHDOG=1.

With `Type=notify`, systemd passes `NOTIFY_SOCKET` (a Unix datagram socket; a leading `@`
means the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC`. Outside systemd
both are unset and every call here does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket

from recorder.logs import get_logger

log = get_logger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        # Only the process systemd meant (WATCHDOG_PID unset or ours) pings the watchdog.
        meant_for_us = env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        self.watchdog_interval_s = (
            int(watchdog_usec) / 1_000_000 / 2 if watchdog_usec.isdigit() and meant_for_us else None
        )

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("could not notify systemd", message=message, error=str(exc))

    def ready(self, status: str = "recording") -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping the watchdog at half its period, for as long as the event loop runs.

        A blocked event loop stops the pings, and systemd restarts the service.
        """
        if self.watchdog_interval_s is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)
