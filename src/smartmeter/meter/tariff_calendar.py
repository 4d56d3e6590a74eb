"""Which tariff script is in force, and when it switches: the activity calendar as pure data.

An activity calendar (IC 20, Blue Book 4.5.5) splits the year into seasons; a season names a
week profile, which names a day profile for each weekday; a day profile is a list of switch
times, each naming a script of the tariffication script table. A special day (IC 11) replaces
the week profile's day profile on its date. This module answers, for a calendar and special
days, which day profile governs a date (`day_profile_on`), which action is in force at an
instant (`action_at`) and at which instants the calendar switches (`switches`). Pure: time
comes in as UTC seconds, the zone as data; the classes map `ValueError` to other-reason.

Rules where the Blue Book leaves a choice (decisions "Activity calendar"):
- A season starts at the beginning of its start day (the class refuses a start time other
  than 00:00:00). Seasons are either all every-year (year wildcard) or all of a given year,
  in strictly increasing order of their starts. Every-year seasons wrap around the year: a
  date before the first start is in the last season (of the year before). A season starting
  February 29th starts on March 1st in other years. With dated seasons, a date before the
  first start has no season: no day profile, no action.
- A day's switch times are on 15-minute boundaries (companion §5.5), strictly increasing.
- The action in force at an instant is the last switch at or before it, looking back at most
  `LOOK_BACK_DAYS` days. A change of season, week or special day at midnight is no switch of
  its own: the new day's first switch is.
- A local switch time skipped by daylight saving does not happen (the action before it stays
  in force); a local time that occurs twice happens once, at its first occurrence - the rule
  of every scheduler of the meter (smartmeter.meter.schedule).
- Several special days on one date: the most specific date wins (fewest wildcards), then the
  lowest index. A special day naming a day_id the calendar lacks is passed over: the next
  special day of that date or else the week profile governs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from smartmeter.meter.schedule import _instant  # the one rule for skipped and repeated local times

MAX_SEASONS = 12
MAX_WEEK_PROFILES = 12
MAX_DAY_PROFILES = 12
MAX_SWITCHES_PER_DAY = 12
SWITCH_GRID_MINUTES = 15  # companion §5.5: switching times on 15-minute boundaries
LOOK_BACK_DAYS = 7


@dataclass(frozen=True, slots=True)
class DayAction:
    """One switch of a day profile: at hh:mm:ss local time run script `selector` of the
    script table `script_ln`."""

    hour: int
    minute: int
    second: int
    script_ln: bytes
    selector: int

    @property
    def time(self) -> dt.time:
        return dt.time(self.hour, self.minute, self.second)


@dataclass(frozen=True, slots=True)
class DayProfile:
    day_id: int
    actions: tuple[DayAction, ...]  # in order of time


@dataclass(frozen=True, slots=True)
class WeekProfile:
    name: bytes
    day_ids: tuple[int, ...]  # Monday .. Sunday


@dataclass(frozen=True, slots=True)
class SeasonStart:
    """The first day of a season: year None = every year."""

    year: int | None
    month: int
    day: int

    def key(self) -> tuple[int, int, int]:
        return (self.year or 0, self.month, self.day)


@dataclass(frozen=True, slots=True)
class Season:
    name: bytes
    start: SeasonStart
    week_name: bytes


@dataclass(frozen=True, slots=True)
class Calendar:
    name: bytes = b""
    seasons: tuple[Season, ...] = ()
    weeks: tuple[WeekProfile, ...] = ()
    days: tuple[DayProfile, ...] = ()

    def day_profile(self, day_id: int) -> DayProfile | None:
        return next((d for d in self.days if d.day_id == day_id), None)

    def week_profile(self, name: bytes) -> WeekProfile | None:
        return next((w for w in self.weeks if w.name == name), None)


@dataclass(frozen=True, slots=True)
class SpecialDay:
    """One entry of the special days table; None fields are wildcards. weekday 1 = Monday."""

    index: int
    year: int | None
    month: int | None
    day: int | None
    day_id: int
    weekday: int | None = None

    def matches(self, date: dt.date) -> bool:
        return ((self.year is None or self.year == date.year) and (self.month is None or self.month == date.month)
                and (self.day is None or self.day == date.day)
                and (self.weekday is None or self.weekday == date.isoweekday()))

    def rank(self) -> tuple[int, int]:
        """Smaller is preferred: fewer wildcards, then lower index."""
        wildcards = sum(f is None for f in (self.year, self.month, self.day, self.weekday))
        return (wildcards, self.index)


# -- validation -----------------------------------------------------------------------------

def validate_seasons(seasons: Sequence[Season]) -> None:
    if len(seasons) > MAX_SEASONS:
        raise ValueError(f"at most {MAX_SEASONS} seasons")
    dated = {s.start.year is not None for s in seasons}
    if len(dated) > 1:
        raise ValueError("seasons are either all every-year or all of a given year")
    for s in seasons:
        start = s.start
        longest = 29 if start.year is None and start.month == 2 else _month_length(start.year or 2001, start.month)
        if not 1 <= start.day <= longest:
            raise ValueError(f"season {s.name!r}: {start.month:02d}-{start.day:02d} does not exist")
    keys = [s.start.key() for s in seasons]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise ValueError("overlapping seasons: season starts must be strictly increasing")


def validate_weeks(weeks: Sequence[WeekProfile]) -> None:
    if len(weeks) > MAX_WEEK_PROFILES:
        raise ValueError(f"at most {MAX_WEEK_PROFILES} week profiles")
    names = [w.name for w in weeks]
    if len(set(names)) != len(names):
        raise ValueError("two week profiles share a name")
    if any(len(w.day_ids) != 7 for w in weeks):
        raise ValueError("a week profile names seven day profiles, Monday to Sunday")


def validate_days(days: Sequence[DayProfile]) -> None:
    if len(days) > MAX_DAY_PROFILES:
        raise ValueError(f"at most {MAX_DAY_PROFILES} day profiles")
    ids = [d.day_id for d in days]
    if len(set(ids)) != len(ids):
        raise ValueError("two day profiles share a day_id")
    for d in days:
        if not d.actions:
            raise ValueError(f"day profile {d.day_id} has no switch time")
        if len(d.actions) > MAX_SWITCHES_PER_DAY:
            raise ValueError(f"day profile {d.day_id}: at most {MAX_SWITCHES_PER_DAY} switch times")
        for a in d.actions:
            if not (0 <= a.hour <= 23 and 0 <= a.minute <= 59 and a.second == 0
                    and a.minute % SWITCH_GRID_MINUTES == 0):
                raise ValueError(f"day profile {d.day_id}: switch time {a.hour:02d}:{a.minute:02d}:{a.second:02d} "
                                 f"is not on a {SWITCH_GRID_MINUTES}-minute boundary")
        times = [(a.hour, a.minute, a.second) for a in d.actions]
        if any(x >= y for x, y in zip(times, times[1:])):
            raise ValueError(f"day profile {d.day_id}: switch times unsorted or duplicate")


def validate_references(calendar: Calendar) -> None:
    """Every season names a week profile, every week profile names day profiles, that exist."""
    weeks = {w.name for w in calendar.weeks}
    days = {d.day_id for d in calendar.days}
    for s in calendar.seasons:
        if s.week_name not in weeks:
            raise ValueError(f"season {s.name!r} names an unknown week profile {s.week_name!r}")
    for w in calendar.weeks:
        unknown = sorted(set(w.day_ids) - days)
        if unknown:
            raise ValueError(f"week profile {w.name!r} names unknown day profiles {unknown}")


def validate(calendar: Calendar) -> None:
    """The whole calendar; ValueError names the first broken rule in one line."""
    validate_seasons(calendar.seasons)
    validate_weeks(calendar.weeks)
    validate_days(calendar.days)
    validate_references(calendar)


def _month_length(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (dt.date(year, month + 1, 1) - dt.timedelta(days=1)).day


# -- evaluation ----------------------------------------------------------------------------

def season_on(calendar: Calendar, date: dt.date) -> Season | None:
    """The season in force on `date`: the latest start not after it (every-year seasons wrap)."""
    seasons = calendar.seasons
    if not seasons:
        return None
    if seasons[0].start.year is None:
        today = (date.month, date.day)
        current = seasons[-1]  # before the first start: the last season of the year before
        for s in seasons:
            if (s.start.month, s.start.day) <= today:
                current = s
        return current
    current = None
    for s in seasons:
        if (s.start.year, s.start.month, s.start.day) <= (date.year, date.month, date.day):
            current = s
    return current


class _SpecialIndex:
    """Special days by (month, day) for a cheap lookup per date; the rest scanned."""

    def __init__(self, special_days: Iterable[SpecialDay], known_ids: set[int]) -> None:
        self.by_date: dict[tuple[int, int], list[SpecialDay]] = {}
        self.other: list[SpecialDay] = []
        for s in special_days:
            if s.day_id not in known_ids:
                continue  # passed over: the week profile governs (module docstring)
            if s.month is not None and s.day is not None:
                self.by_date.setdefault((s.month, s.day), []).append(s)
            else:
                self.other.append(s)

    def day_id(self, date: dt.date) -> int | None:
        candidates = [s for s in self.by_date.get((date.month, date.day), ()) if s.matches(date)]
        candidates += [s for s in self.other if s.matches(date)]
        return min(candidates, key=SpecialDay.rank).day_id if candidates else None


class _Evaluator:
    """One calendar and its special days, ready to answer per date."""

    def __init__(self, calendar: Calendar, special_days: Iterable[SpecialDay]) -> None:
        self.calendar = calendar
        self.days = {d.day_id: d for d in calendar.days}
        self.weeks = {w.name: w for w in calendar.weeks}
        self.special = _SpecialIndex(special_days, set(self.days))

    def profile(self, date: dt.date) -> DayProfile | None:
        special = self.special.day_id(date)
        if special is not None:
            return self.days[special]
        season = season_on(self.calendar, date)
        week = self.weeks.get(season.week_name) if season is not None else None
        if week is None:
            return None
        return self.days.get(week.day_ids[date.weekday()])


def day_profile_on(calendar: Calendar, special_days: Iterable[SpecialDay], date: dt.date) -> DayProfile | None:
    """The day profile governing `date`: a special day's, else the season's week profile's."""
    return _Evaluator(calendar, special_days).profile(date)


def action_at(calendar: Calendar, special_days: Iterable[SpecialDay], zone: ZoneInfo,
              t_utc: float) -> DayAction | None:
    """The action in force at `t_utc`: the last switch at or before it (at most
    LOOK_BACK_DAYS days back); None when there is none."""
    evaluator = _Evaluator(calendar, special_days)
    today = dt.datetime.fromtimestamp(t_utc, zone).date()
    for back in range(LOOK_BACK_DAYS + 1):
        date = today - dt.timedelta(days=back)
        profile = evaluator.profile(date)
        if profile is None:
            continue
        for action in reversed(profile.actions):
            t = _instant(date, action.time, zone)
            if t is not None and t <= t_utc:
                return action
    return None


def switches(calendar: Calendar, special_days: Iterable[SpecialDay], zone: ZoneInfo, start_utc: float,
             end_utc: float) -> list[tuple[float, DayAction]]:
    """The switch instants t with start_utc < t <= end_utc, in order, with their action."""
    if end_utc <= start_utc:
        return []
    evaluator = _Evaluator(calendar, special_days)
    date = dt.datetime.fromtimestamp(start_utc, zone).date()
    last = dt.datetime.fromtimestamp(end_utc, zone).date()
    found: list[tuple[float, DayAction]] = []
    while date <= last:
        profile = evaluator.profile(date)
        if profile is not None:
            for action in profile.actions:
                t = _instant(date, action.time, zone)
                if t is not None and start_utc < t <= end_utc:
                    found.append((t, action))
        date += dt.timedelta(days=1)
    return found
