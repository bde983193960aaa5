"""sd_notify: READY, STATUS, WATCHDOG and STOPPING for systemd's Type=notify.

Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import time

from systemd import daemon


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0
        # Pet the watchdog at half its period, as sd_watchdog_enabled(3) advises.
        self.watchdog_s = usec / 2e6 if self.enabled and usec else None
        self._next = time.monotonic() + self.watchdog_s if self.watchdog_s else None

    def _send(self, text: str) -> None:
        if self.enabled:
            daemon.notify(text)

    def ready(self, summary: str) -> None:
        self._send(f"READY=1\nSTATUS={summary}")

    def status(self, summary: str) -> None:
        self._send(f"STATUS={summary}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def next_deadline(self) -> float | None:
        return self._next

    def tick(self) -> None:
        """Called on every turn of the main loop: a stuck loop stops petting."""
        if self._next is not None and time.monotonic() >= self._next:
            self._send("WATCHDOG=1")
            self._next = time.monotonic() + self.watchdog_s
