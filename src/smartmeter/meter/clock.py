"""The meter's real-time clock: local time with time zone and DST, as COSEM sees it.

Time is read from an injected source (seconds since the epoch) plus an adjustable offset,
so tests and simulations can run on their own time base.
"""
from __future__ import annotations

import datetime as dt
import struct
import time
from typing import Callable
from zoneinfo import ZoneInfo

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CLOCK_STATUS_DST_ACTIVE, CosemDate, CosemDateTime, CosemTime

DEFAULT_TIME_ZONE = "Europe/Berlin"
_DATE_TIME = struct.Struct(">HBBBBBBBhB")  # year, month, day, weekday, h, min, s, hundredths, deviation, status


class MeterClock:
    def __init__(self, time_zone: str = DEFAULT_TIME_ZONE, source: Callable[[], float] = time.time) -> None:
        self.zone = ZoneInfo(time_zone)
        self._source = source
        self.offset = 0.0
        self._offsets: dict[int, tuple[int, bool]] = {}

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
        status = CLOCK_STATUS_DST_ACTIVE if local.dst() else 0
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
                               tm.tm_sec, 0, -offset // 60, CLOCK_STATUS_DST_ACTIVE if dst else 0)

    def cosem_now(self) -> bytes:
        return self.cosem(self.now())

    def utc_from_cosem(self, value: CosemDateTime) -> int:
        """UTC seconds of a COSEM date-time; without deviation it is read as meter local time."""
        when = value.to_datetime()
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        return int(when.timestamp())

    def set_from_cosem(self, raw: bytes) -> None:
        target = self.utc_from_cosem(axdr.decode_date_time(raw))
        self.offset += target - self.now()

    def time_zone_deviation(self) -> int:
        """Blue Book sign: minutes local standard time is behind UTC (CET: -60)."""
        standard = self.zone.utcoffset(dt.datetime(2001, 1, 15))
        return -int(standard.total_seconds() // 60)

    def status(self) -> int:
        return CLOCK_STATUS_DST_ACTIVE if self.local(self.now()).dst() else 0

    def dst_enabled(self) -> bool:
        return self.zone.dst(dt.datetime(2001, 7, 1)) != dt.timedelta(0)

    @staticmethod
    def dst_rule_bytes(begin: bool) -> bytes:
        """EU rule: last Sunday of March 02:00 / October 03:00, every year (0xFE = last)."""
        month, hour = (3, 2) if begin else (10, 3)
        return axdr.encode_date_time(
            CosemDateTime(CosemDate(None, month, 0xFE, 7), CosemTime(hour, 0, 0, 0), None, None)
        )

    def adjust_to(self, period: int) -> None:
        """Round the clock to the nearest multiple of `period` seconds."""
        now = self.now()
        self.offset += round(now / period) * period - now

    def shift(self, seconds: int) -> None:
        self.offset += seconds
