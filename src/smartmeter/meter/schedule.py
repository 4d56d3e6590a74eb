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
import heapq
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

    def times_of_day(self, frm: dt.time = dt.time(0)) -> Iterator[dt.time]:
        """The pattern's times of day at or after `frm`, in increasing order (lazily: a wildcard
        second gives 86,400 times, of which a caller usually wants the first few)."""
        def values(fixed: int | None, low: int, count: int) -> Iterable[int]:
            return range(low, count) if fixed is None else (fixed,) if fixed >= low else ()

        for hour in values(self.hour, frm.hour, 24):
            first_hour = hour == frm.hour
            for minute in values(self.minute, frm.minute if first_hour else 0, 60):
                first_minute = first_hour and minute == frm.minute
                for second in values(self.second, frm.second if first_minute else 0, 60):
                    yield dt.time(hour, minute, second)


def _instant(day: dt.date, at: dt.time, zone: ZoneInfo) -> float | None:
    local = dt.datetime.combine(day, at).replace(tzinfo=zone, fold=0)
    if local.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by daylight saving
    return local.timestamp()


def instants(times: Iterable[ExecutionTime], zone: ZoneInfo, start: float, end: float) -> Iterator[float]:
    """The instants t with start < t <= end at which any of `times` is due, in order, each once.

    Lazy: the patterns' times of a day are merged in order and the search stops at the first one
    past `end`, so a schedule every second costs what the interval holds, not a day of times.
    Local time maps to UTC in order (a repeated local time counts at its first occurrence), so no
    local time before the start's can be due and the first one past `end` ends the search."""
    if end <= start:
        return
    patterns = tuple(times)
    first_local = dt.datetime.fromtimestamp(start, zone)
    last = dt.datetime.fromtimestamp(end, zone).date()
    day = first_local.date()
    while day <= last:
        frm = first_local.time().replace(microsecond=0) if day == first_local.date() else dt.time(0)
        previous = None
        for at in heapq.merge(*(p.times_of_day(frm) for p in patterns if p.matches_date(day))):
            if at == previous:
                continue
            previous = at
            t = _instant(day, at, zone)
            if t is None or t <= start:
                continue
            if t > end:
                return
            yield t
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
