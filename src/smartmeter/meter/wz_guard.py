"""Service interface (WZ optical port) protection, companion standard §4.1.2.

- temporary disable: a countdown in seconds (0-0:94.43.140.255); while it runs the port
  ignores everything; 0xFFFF never counts down (disabled until re-enabled remotely).
- lockout: after N consecutive failed associations on WZ the lockout period is copied into
  the countdown (0-0:94.43.141.255: failed_association_attempts, lockout_period); N = 0
  switches the lockout off.

The countdown is measured on a monotonic clock and persisted, so a restart does not
re-open a locked port early.
"""
from __future__ import annotations

import time
from typing import Callable

from smartmeter.meter.store import MeterStore

FOREVER = 0xFFFF
DEFAULT_LOCKOUT = (3, 600)  # IDIS-like: 3 failures lock the optical port for 10 minutes


class WzGuard:
    def __init__(self, store: MeterStore, monotonic: Callable[[], float] = time.monotonic,
                 on_event: Callable[[str, dict], None] | None = None) -> None:
        self.store = store
        self.monotonic = monotonic
        self.on_event = on_event or (lambda name, fields: None)
        self._deadline: float | None = None
        remaining = store.get("wz.countdown", 0)
        if remaining:
            self._start(remaining)

    # -- configuration (the two COSEM objects) -----------------------------------------------
    @property
    def lockout(self) -> tuple[int, int]:
        attempts, period = self.store.get("wz.lockout", list(DEFAULT_LOCKOUT))
        return attempts, period

    def set_lockout(self, attempts: int, period: int) -> None:
        if not (0 <= attempts <= 255 and 0 <= period <= 0xFFFF):
            raise ValueError("failed_association_attempts 0..255, lockout_period 0..65535")
        self.store.put("wz.lockout", [attempts, period])

    def remaining(self) -> int:
        """Seconds until the port opens again (0 = open, 0xFFFF = closed until re-enabled)."""
        if self._deadline is None:
            return 0
        if self._deadline == float("inf"):
            return FOREVER
        left = self._deadline - self.monotonic()
        if left <= 0:
            self._deadline = None
            self.store.put("wz.countdown", 0)
            self.on_event("wz_enabled", {})
            return 0
        return min(int(left + 0.999), FOREVER - 1)

    def set_countdown(self, seconds: int) -> None:
        if not 0 <= seconds <= FOREVER:
            raise ValueError("the countdown is 0..65535 seconds")
        if seconds == 0:
            self._deadline = None
            self.store.put("wz.countdown", 0)
            self.on_event("wz_enabled", {})
            return
        self._start(seconds)
        self.store.put("wz.countdown", seconds)
        self.on_event("wz_disabled", {"seconds": seconds})

    def _start(self, seconds: int) -> None:
        self._deadline = float("inf") if seconds == FOREVER else self.monotonic() + seconds

    def checkpoint(self) -> None:
        """Persist the remaining time (called periodically, so a restart resumes the countdown)."""
        if self._deadline is not None:
            self.store.put("wz.countdown", self.remaining())

    # -- what the port asks --------------------------------------------------------------------
    def port_open(self) -> bool:
        return self.remaining() == 0

    def association_failed(self) -> None:
        attempts, period = self.lockout
        failures = self.store.counter("wz.failures") + 1
        self.store.set_counter("wz.failures", failures)
        if attempts and failures >= attempts:
            self.store.set_counter("wz.failures", 0)
            self.set_countdown(period if period else 0)
            self.on_event("wz_locked_out", {"failures": failures, "seconds": period})

    def association_succeeded(self) -> None:
        if self.store.counter("wz.failures"):
            self.store.set_counter("wz.failures", 0)
