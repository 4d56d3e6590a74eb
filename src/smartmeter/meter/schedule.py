"""Which scheduled instants a clock crossed: the one rule every scheduler of the meter asks.

An IC 22 single action schedule names its execution times as local date and time patterns
with wildcards (Blue Book 4.5.5): `ExecutionTime`. Between two readings of the meter clock
the schedule is due as companion standard §5.4.1 says, depending on how the clock got from
one to the other (`Passage`):

- RUNNING: the clock ran; every instant in (start, end] is executed, each once.
- POWER_RESTORED: the meter was off from start to end; if at least one instant fell in
  that time, the action is executed once after power up.
- SHIFTED: the clock was set from start to end. Forward: once if at least one instant
  lies in (start, end]; backward: no action.

An execution time in the past when it is configured is never executed: the caller starts
asking from the configuration time. Pure: time comes in as UTC seconds, the zone as data.

Local times that do not exist (the hour skipped by daylight saving) are not instants; a
local time that exists twice (the hour repeated) is one instant, its first occurrence.
"""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo

_UTC = dt.timezone.utc


class Passage(enum.Enum):
    RUNNING = "running"
    POWER_RESTORED = "power restored"
    SHIFTED = "shifted"


@dataclass(frozen=True, slots=True)
class ExecutionTime:
    """A local date-time pattern; None is a wildcard (0xFF / 0xFFFF on the wire). weekday 1 = Monday."""

    hour: int | None
    minute: int | None
    second: int | None = 0
    year: int | None = None
    month: int | None = None
    day: int | None = None
    weekday: int | None = None

    def __post_init__(self) -> None:
        for name, low, high in (("hour", 0, 23), ("minute", 0, 59), ("second", 0, 59), ("month", 1, 12),
                                ("day", 1, 31), ("weekday", 1, 7), ("year", 1970, 9999)):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"execution time: {name} {value} is outside {low}..{high}")

    def matches_date(self, day: dt.date) -> bool:
        return ((self.year is None or day.year == self.year) and (self.month is None or day.month == self.month)
                and (self.day is None or day.day == self.day)
                and (self.weekday is None or day.isoweekday() == self.weekday))

    def times_of_day(self, hours: range = range(24)) -> Iterator[dt.time]:
        for hour in (hours if self.hour is None else (h for h in (self.hour,) if h in hours)):
            for minute in (range(60) if self.minute is None else (self.minute,)):
                for second in (range(60) if self.second is None else (self.second,)):
                    yield dt.time(hour, minute, second)


def _instant(day: dt.date, at: dt.time, zone: ZoneInfo) -> float | None:
    local = dt.datetime.combine(day, at).replace(tzinfo=zone, fold=0)
    if local.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by daylight saving
    return local.timestamp()


def instants(times: Iterable[ExecutionTime], zone: ZoneInfo, start: float, end: float) -> Iterator[float]:
    """The instants t with start < t <= end at which any of `times` is due, in order, each once."""
    if end <= start:
        return
    patterns = tuple(times)
    first_local = dt.datetime.fromtimestamp(start, zone)
    last_local = dt.datetime.fromtimestamp(end, zone)
    day, last = first_local.date(), last_local.date()
    while day <= last:
        # only the hours the interval touches on this day (one hour of margin for a DST change),
        # so a clock read every second does not enumerate a whole day of wildcard times
        low = first_local.hour - 1 if day == first_local.date() else 0
        high = last_local.hour + 1 if day == last else 23
        hours = range(max(low, 0), min(high, 23) + 1)
        found = set()
        for pattern in patterns:
            if pattern.matches_date(day):
                for at in pattern.times_of_day(hours):
                    t = _instant(day, at, zone)
                    if t is not None and start < t <= end:
                        found.add(t)
        yield from sorted(found)
        day += dt.timedelta(days=1)


def due(times: Iterable[ExecutionTime], zone: ZoneInfo, start: float, end: float, passage: Passage) -> list[float]:
    """The executions owed for the clock getting from `start` to `end` by `passage` (§5.4.1):
    each crossed instant when RUNNING; after an outage or a forward shift one execution, for
    the first instant crossed; after a backward shift none."""
    if passage is Passage.SHIFTED and end < start:
        return []
    crossed = instants(times, zone, start, end)
    if passage is Passage.RUNNING:
        return list(crossed)
    first = next(crossed, None)
    return [] if first is None else [first]
