"""The meter's real-time clock: local time with time zone and DST, as COSEM sees it.

Time is read from an injected source (seconds since the epoch) plus an offset, so tests and
simulations can run on their own time base. The offset is not this side's to change: the
legally relevant part holds it (it stamps legally relevant data), so a change of the time is a
request to the `time_base` hook, which decides, records and answers with the new offset.
"""
from __future__ import annotations

import datetime as dt
import struct
import time
from dataclasses import dataclass
from typing import Callable, Protocol
from zoneinfo import ZoneInfo

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CLOCK_STATUS_DST_ACTIVE, CosemDate, CosemDateTime, CosemTime

DEFAULT_TIME_ZONE = "Europe/Berlin"
# clock status bits (Blue Book 4.1.6.1) besides DST
CLOCK_STATUS_INVALID = 0x01
CLOCK_STATUS_DIFFERENT_BASE = 0x04
_DATE_TIME = struct.Struct(">HBBBBBBBhB")  # year, month, day, weekday, h, min, s, hundredths, deviation, status


class TimeChangeResult(Protocol):
    kind: str  # "unchanged", "synchronised" or "adjusted"
    old_time: float
    new_time: float
    offset: float


@dataclass(frozen=True)
class LocalTimeChange:
    """A clock without a time-base authority (a bare clock in tests) changes itself."""

    kind: str
    old_time: float
    new_time: float
    offset: float


class ClockSetRefused(ValueError):
    """The requested time is not a valid time of the meter (e.g. in the hour skipped by DST)."""


class MeterClock:
    def __init__(self, time_zone: str = DEFAULT_TIME_ZONE, source: Callable[[], float] = time.time) -> None:
        self.zone = ZoneInfo(time_zone)
        self._platform = source
        self._source = source
        self.offset = 0.0
        self.simulated = False  # runs faster than real time: status "different clock base" everywhere
        self.invalid = False  # the time was lost in an outage and not set since: status "invalid value"
        self._offsets: dict[int, tuple[int, bool]] = {}
        # (new_time, reference_time, method, requester system title) -> TimeChangeResult; in a
        # meter, the legal part
        self.time_base: Callable[[float, float, str, bytes], TimeChangeResult] | None = None
        self.listeners: list[Callable[[TimeChangeResult, object], None]] = []

    def set_time(self, new_time: float, method: str, requester: bytes = bytes(8), origin=None) -> TimeChangeResult:
        """Request a new meter time; the time base decides (companion §5.4) and every listener
        hears of it, with `origin` (the association that asked; None: the meter itself)."""
        now = self.now()
        if self.time_base is None:
            change = LocalTimeChange("unchanged" if abs(new_time - now) < 2 else "adjusted", now, new_time,
                                     self.offset + new_time - now)
        else:
            change = self.time_base(new_time, now, method, requester)
        self.offset = change.offset
        if change.kind != "unchanged":
            for listener in self.listeners:
                listener(change, origin)
        return change

    def follow(self, state) -> None:
        """Take the legal time base's state (legal.interface.ClockState): offset, speed, validity."""
        self.offset = state.offset
        self.invalid = state.invalid
        self.simulated = state.speed != 1.0
        platform = self._platform
        self._source = lambda: state.rtc(platform())

    def now(self) -> float:
        """UTC seconds since the epoch, as the meter's clock has it."""
        return self._source() + self.offset

    def local(self, utc_seconds: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(utc_seconds, self.zone)

    def cosem(self, utc_seconds: float) -> bytes:
        """The 12-byte COSEM date-time of an instant, in local time with deviation and DST bit."""
        if utc_seconds == int(utc_seconds):  # whole seconds (capture times): the fast path
            return self._cosem_whole_second(int(utc_seconds))
        local = self.local(utc_seconds)
        status = (CLOCK_STATUS_DST_ACTIVE if local.dst() else 0) | self._base()
        return axdr.encode_date_time(CosemDateTime.from_datetime(local, status))

    def _cosem_whole_second(self, t: int) -> bytes:
        # Offsets change only on the hour in every real time zone: cache them per UTC hour,
        # then the fields come from C's gmtime (profile buffers convert thousands of times).
        hour = t // 3600
        cached = self._offsets.get(hour)
        if cached is None:
            local = self.local(hour * 3600)
            cached = (int(local.utcoffset().total_seconds()), bool(local.dst()))
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[hour] = cached
        offset, dst = cached
        tm = time.gmtime(t + offset)
        return _DATE_TIME.pack(tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_wday + 1, tm.tm_hour, tm.tm_min,
                               tm.tm_sec, 0, -offset // 60, (CLOCK_STATUS_DST_ACTIVE if dst else 0) | self._base())

    def cosem_now(self) -> bytes:
        encoded = self.cosem(self.now())
        # the clock's own reading also says whether it is valid now
        return encoded[:-1] + bytes([encoded[-1] | self._quality()]) if self.invalid else encoded

    def utc_from_cosem(self, value: CosemDateTime) -> int:
        """UTC seconds of a COSEM date-time; without deviation it is read as meter local time."""
        when = value.to_datetime()
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        return int(when.timestamp())

    def utc_from_local_setting(self, value: CosemDateTime) -> float:
        """Companion §5.4: a time written to the clock is local time; deviation, status and
        weekday are ignored. A time in the hour that DST skips is refused; one in the hour it
        repeats is read in the season now active."""
        if value.date.year is None or value.date.month is None or value.date.day is None \
                or value.time.hour is None or value.time.minute is None:
            raise ClockSetRefused("date and time must be fully specified")
        try:
            naive = dt.datetime(value.date.year, value.date.month, value.date.day, value.time.hour,
                                value.time.minute, value.time.second or 0)
        except ValueError as exc:
            raise ClockSetRefused(f"not a valid date and time: {exc}") from None
        candidates = []
        for fold in (0, 1):
            local = naive.replace(tzinfo=self.zone, fold=fold)
            if local.astimezone(dt.timezone.utc).astimezone(self.zone).replace(tzinfo=None) == naive:
                candidates.append(local)
        if not candidates:
            raise ClockSetRefused(f"{naive} does not exist in {self.zone.key} (skipped by daylight saving)")
        if len(candidates) > 1 and len({c.utcoffset() for c in candidates}) > 1:
            active_dst = bool(self.local(self.now()).dst())
            candidates = [c for c in candidates if bool(c.dst()) == active_dst] or candidates
        return candidates[0].timestamp()

    def set_from_cosem(self, raw: bytes, requester: bytes = bytes(8), origin=None) -> TimeChangeResult:
        return self.set_time(self.utc_from_local_setting(axdr.decode_date_time(raw)), "set", requester, origin)

    def time_zone_deviation(self) -> int:
        """Blue Book sign: minutes local standard time is behind UTC (CET: -60)."""
        standard = self.zone.utcoffset(dt.datetime(2001, 1, 15))
        return -int(standard.total_seconds() // 60)

    def _base(self) -> int:
        # every time stamp of a simulated meter comes from a simulated clock
        return CLOCK_STATUS_DIFFERENT_BASE if self.simulated else 0

    def _quality(self) -> int:
        return (CLOCK_STATUS_INVALID if self.invalid else 0) | self._base()

    def status(self) -> int:
        return (CLOCK_STATUS_DST_ACTIVE if self.local(self.now()).dst() else 0) | self._quality()

    def dst_enabled(self) -> bool:
        return self.zone.dst(dt.datetime(2001, 7, 1)) != dt.timedelta(0)

    @staticmethod
    def dst_rule_bytes(begin: bool) -> bytes:
        """EU rule: last Sunday of March 02:00 / October 03:00, every year (0xFE = last)."""
        month, hour = (3, 2) if begin else (10, 3)
        return axdr.encode_date_time(
            CosemDateTime(CosemDate(None, month, 0xFE, 7), CosemTime(hour, 0, 0, 0), None, None)
        )

    def adjust_to(self, period: int, requester: bytes = bytes(8), origin=None) -> TimeChangeResult:
        """Round the clock to the nearest multiple of `period` seconds."""
        now = self.now()
        method = {900: "adjust_to_quarter", 60: "adjust_to_minute"}.get(period, "set")
        return self.set_time(round(now / period) * period, method, requester, origin)

    def shift(self, seconds: int, requester: bytes = bytes(8), origin=None) -> TimeChangeResult:
        return self.set_time(self.now() + seconds, "shift_time", requester, origin)
