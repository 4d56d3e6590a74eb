"""A log that a peer cannot flood: `RateLimitedLog` writes one line for the first occurrence of a
condition and then at most one line per interval with the number of occurrences it did not write.
Used by the transports and the DLMS server alike."""
from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimitedLog:
    """At most one line per condition and interval; what was held back is counted in the next line.

    Conditions are fixed strings chosen by the code (never taken from a peer), so the table of
    conditions stays as small as the code that uses it.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, condition: str, message: str, *args, level: int = logging.WARNING) -> bool:
        """Log `message % args` unless `condition` was logged less than `interval` ago; True if written."""
        now = self.clock()
        last = self._last.get(condition)
        if last is not None and now - last < self.interval:
            self._held[condition] = self._held.get(condition, 0) + 1
            return False
        held = self._held.pop(condition, 0)
        self._last[condition] = now
        if held:
            message += " (%d more since the last such line)"
            args = (*args, held)
        self.logger.log(level, message, *args)
        return True
