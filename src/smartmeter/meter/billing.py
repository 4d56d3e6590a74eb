"""The end of a billing period (companion standard §5.6): who may trigger it, the reset lock,
and the billing profile 0-0:98.1.0.255 as COSEM rows.

Closing a period is the legally relevant part's (EndBillingPeriod: counter, cumulative maxima,
the profile entry and the reset of the maxima, in one transaction); this side decides whether a
trigger is taken. Four triggers, as §5.6 names them:

- "scheduled": the monthly schedule 0-0:15.0.0.255. Never blocked by the lock.
- "ad-hoc": another schedule (the Ad-Hoc end of billing period 1 scheduler 0-0:15.1.0.255).
- "button": the [R] button (`smartmeter sim button R`).
- "remote": a client executes the MDI reset script (or anything else runs it without saying who).

Every capture but a scheduled one starts a 15-minute reset lock. During the lock a remote trigger
is refused with other-reason; the button and the ad-hoc schedule are ignored without a word (one
log line). The lock's end is stored, so a restart does not lift it.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.results import DataAccessResult
from smartmeter.legal import interface as legal
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

RESET_LOCK = 900  # seconds (companion standard §5.6)
LOCK_KEY = "billing.reset_lock_until"
NOT_SPECIFIED_DATE_TIME = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")


class BillingProfile:
    """The billing profile's rows and its capture (IC 7 binding), and the reset lock."""

    def __init__(self, legal_part, clock, store, on_billed=None, now=None) -> None:
        self.legal, self.clock, self.store = legal_part, clock, store
        self.now = now or clock.now  # the meter time a capture is stamped with
        self.on_billed = on_billed  # called with the BillingRow of every capture
        self._trigger: str | None = None
        self._say = RateLimitedLog(log)

    @contextlib.contextmanager
    def triggered_by(self, trigger: str) -> Iterator[None]:
        """What the meter itself starts inside this block closes the period as `trigger`."""
        before, self._trigger = self._trigger, trigger
        try:
            yield
        finally:
            self._trigger = before

    def lock_until(self) -> float:
        return float(self.store.get(LOCK_KEY, 0.0))

    def capture(self, ctx: RequestContext | None = None) -> legal.BillingRow | None:
        """End the billing period now, if the trigger may (see the module docstring)."""
        trigger = self._trigger or "remote"
        now = self.now()
        if trigger != "scheduled" and now < self.lock_until():
            if trigger == "remote":
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "the 15-minute billing reset lock is running")
            self._say(f"billing.locked.{trigger}", "billing reset by %s ignored: the reset lock runs until %s",
                      trigger, self.clock.local(self.lock_until()).isoformat(timespec="seconds"), level=logging.INFO)
            return None
        try:
            row = self.legal.execute(legal.EndBillingPeriod(int(now), trigger))
        except legal.CommandRefused as exc:  # e.g. powered down
            raise CosemAccessError(DataAccessResult.TEMPORARY_FAILURE, str(exc)) from None
        if trigger != "scheduled":
            self.store.put(LOCK_KEY, int(now) + RESET_LOCK)
        log.info("billing period %02d ended (%s) at %s", row.counter, trigger,
                 self.clock.local(row.capture_time).isoformat(timespec="seconds"))
        if self.on_billed is not None:
            self.on_billed(row)
        return row

    # -- the profile's rows ----------------------------------------------------------------------
    def _time(self, utc: int) -> bytes:
        return NOT_SPECIFIED_DATE_TIME if utc == legal.BILLING_NO_TIME else self.clock.cosem(utc)

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        """Rows in the order of the 26 capture objects (catalog §3.5)."""
        out = []
        for r in self.legal.execute(legal.ReadBillingProfile(from_time, to_time)):
            maxima = [v for value, at in zip(r.maximum, r.maximum_time) for v in (value, self._time(at))]
            out.append((self.clock.cosem(r.capture_time), r.counter, *r.energy, *maxima, *r.cumulative))
        return out

    def entries_in_use(self) -> int:
        return self.legal.execute(legal.CountBillingProfileEntries())

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

    def counter(self) -> Data:
        return Data.unsigned(self.legal.execute(legal.ReadBillingCounter()))
