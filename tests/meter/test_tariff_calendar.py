"""The activity calendar as pure data, table-driven: expected instants are UTC written out by
hand from each scenario's local times (Europe/Vienna and Europe/Berlin: CET = UTC+1, CEST =
UTC+2; 2026: summer time from March 29th 02:00 to October 25th 03:00)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.meter.tariff_calendar import (
    Calendar, DayAction, DayProfile, Season, SeasonStart, SpecialDay, WeekProfile, action_at, day_profile_on,
    season_on, switches, validate,
)

VIENNA = ZoneInfo("Europe/Vienna")
BERLIN = ZoneInfo("Europe/Berlin")
TARIFF = bytes([0, 0, 10, 0, 100, 255])


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def act(hhmm: str, selector: int) -> DayAction:
    hour, minute = map(int, hhmm.split(":"))
    return DayAction(hour, minute, 0, TARIFF, selector)


T1, T2 = 1, 2
DAY_T1_T2 = DayProfile(1, (act("00:00", T1), act("06:00", T2), act("22:00", T1)))  # the companion's example
HOLIDAY = DayProfile(2, (act("00:00", T1),))
SUMMER_DAY = DayProfile(3, (act("00:00", T1), act("08:00", T2), act("20:00", T1)))
DST_DAY = DayProfile(4, (act("00:00", T1), act("02:15", T2), act("06:00", T1)))
NOON_ONLY = DayProfile(5, (act("12:00", T2),))


def every_year(month: int, day: int) -> SeasonStart:
    return SeasonStart(None, month, day)


def calendar(*seasons: tuple[str, SeasonStart, str], weeks: dict[str, int] | None = None,
             days=(DAY_T1_T2, HOLIDAY, SUMMER_DAY, DST_DAY, NOON_ONLY)) -> Calendar:
    weeks = weeks or {"W1": 1}
    return Calendar(b"KSMW", tuple(Season(n.encode(), start, w.encode()) for n, start, w in seasons),
                    tuple(WeekProfile(n.encode(), (d,) * 7) for n, d in weeks.items()), tuple(days))


EXAMPLE = calendar(("S1", every_year(1, 1), "W1"))
TWO_SEASONS = calendar(("S1", every_year(1, 1), "W1"), ("S2", every_year(4, 1), "W2"), weeks={"W1": 1, "W2": 3})
AUTUMN_WRAP = calendar(("S2", every_year(4, 1), "W2"), ("S3", every_year(10, 1), "W1"), weeks={"W1": 1, "W2": 3})
DST_CALENDAR = calendar(("S1", every_year(1, 1), "W4"), weeks={"W4": 4})
EPIPHANY = SpecialDay(1, None, 1, 6, 2)
NEW_YEAR = SpecialDay(2, None, 1, 1, 2)

SWITCH_CASES = [
    # (name, calendar, special days, zone, start UTC, end UTC, expected [(UTC, selector)])
    ("an ordinary winter day: T1 at 00:00, T2 at 06:00, T1 at 22:00", EXAMPLE, [], VIENNA,
     "2026-03-09 22:59:59", "2026-03-10 22:59:59",
     [("2026-03-09 23:00:00", T1), ("2026-03-10 05:00:00", T2), ("2026-03-10 21:00:00", T1)]),
    ("the same day in Berlin", EXAMPLE, [], BERLIN, "2026-03-09 22:59:59", "2026-03-10 22:59:59",
     [("2026-03-09 23:00:00", T1), ("2026-03-10 05:00:00", T2), ("2026-03-10 21:00:00", T1)]),
    ("a summer day: one hour earlier in UTC", EXAMPLE, [], VIENNA, "2026-07-01 00:00:00", "2026-07-02 00:00:00",
     [("2026-07-01 04:00:00", T2), ("2026-07-01 20:00:00", T1), ("2026-07-01 22:00:00", T1)]),
    ("a switch at the start is not crossed, one at the end is", EXAMPLE, [], VIENNA,
     "2026-03-10 05:00:00", "2026-03-10 21:00:00", [("2026-03-10 21:00:00", T1)]),
    ("Epiphany is a holiday: T1 all day", EXAMPLE, [EPIPHANY], VIENNA, "2026-01-05 22:00:00", "2026-01-06 23:00:00",
     [("2026-01-05 23:00:00", T1), ("2026-01-06 23:00:00", T1)]),
    ("a special day naming no day profile of the calendar: the week profile", EXAMPLE,
     [SpecialDay(1, None, 1, 6, 9)], VIENNA, "2026-01-05 23:30:00", "2026-01-06 22:30:00",
     [("2026-01-06 05:00:00", T2), ("2026-01-06 21:00:00", T1)]),
    ("season change on April 1st", TWO_SEASONS, [], VIENNA, "2026-03-31 00:00:00", "2026-04-01 23:59:00",
     [("2026-03-31 04:00:00", T2), ("2026-03-31 20:00:00", T1), ("2026-03-31 22:00:00", T1),
      ("2026-04-01 06:00:00", T2), ("2026-04-01 18:00:00", T1), ("2026-04-01 22:00:00", T1)]),
    ("spring forward: 02:15 does not exist, 06:00 is 04:00 UTC", DST_CALENDAR, [], VIENNA,
     "2026-03-28 22:30:00", "2026-03-29 21:00:00", [("2026-03-28 23:00:00", T1), ("2026-03-29 04:00:00", T1)]),
    ("spring forward in Berlin", DST_CALENDAR, [], BERLIN,
     "2026-03-28 22:30:00", "2026-03-29 21:00:00", [("2026-03-28 23:00:00", T1), ("2026-03-29 04:00:00", T1)]),
    ("the day after spring forward has its 02:15 again", DST_CALENDAR, [], VIENNA,
     "2026-03-29 21:00:00", "2026-03-30 01:00:00", [("2026-03-29 22:00:00", T1), ("2026-03-30 00:15:00", T2)]),
    ("fall back: 02:15 happens once, at its first occurrence (summer time)", DST_CALENDAR, [], VIENNA,
     "2026-10-24 21:00:00", "2026-10-25 12:00:00",
     [("2026-10-24 22:00:00", T1), ("2026-10-25 00:15:00", T2), ("2026-10-25 05:00:00", T1)]),
    ("fall back in Berlin", DST_CALENDAR, [], BERLIN, "2026-10-24 21:00:00", "2026-10-25 12:00:00",
     [("2026-10-24 22:00:00", T1), ("2026-10-25 00:15:00", T2), ("2026-10-25 05:00:00", T1)]),
    ("the year boundary with New Year's Day a holiday", EXAMPLE, [NEW_YEAR], VIENNA,
     "2026-12-31 11:00:00", "2027-01-01 11:00:00", [("2026-12-31 21:00:00", T1), ("2026-12-31 23:00:00", T1)]),
    ("the year boundary without special days", EXAMPLE, [], VIENNA,
     "2026-12-31 11:00:00", "2027-01-01 11:00:00",
     [("2026-12-31 21:00:00", T1), ("2026-12-31 23:00:00", T1), ("2027-01-01 05:00:00", T2)]),
    ("an empty calendar never switches", Calendar(), [EPIPHANY], VIENNA, "2026-01-01 00:00:00",
     "2026-02-01 00:00:00", []),
    ("an end before the start", EXAMPLE, [], VIENNA, "2026-03-10 12:00:00", "2026-03-10 00:00:00", []),
]


@pytest.mark.parametrize("name, cal, special, zone, start, end, expected", SWITCH_CASES,
                         ids=[c[0] for c in SWITCH_CASES])
def test_switches(name, cal, special, zone, start, end, expected):
    found = switches(cal, special, zone, utc(start), utc(end))
    assert [(t, a.selector) for t, a in found] == [(utc(e), s) for e, s in expected]


ACTION_CASES = [
    # (name, calendar, special days, zone, UTC instant, expected selector or None)
    ("midday is T2", EXAMPLE, [], VIENNA, "2026-03-10 11:00:00", T2),
    ("night is T1", EXAMPLE, [], VIENNA, "2026-03-10 22:00:00", T1),
    ("just before 06:00 local is T1", EXAMPLE, [], VIENNA, "2026-03-10 04:59:59", T1),
    ("at 06:00 local exactly is T2", EXAMPLE, [], VIENNA, "2026-03-10 05:00:00", T2),
    ("a holiday at noon is T1", EXAMPLE, [EPIPHANY], VIENNA, "2026-01-06 11:00:00", T1),
    ("the spring-forward day at 03:30 local: 02:15 never happened", DST_CALENDAR, [], VIENNA,
     "2026-03-29 01:30:00", T1),
    ("the fall-back day in the repeated hour's second pass: 02:15 happened", DST_CALENDAR, [], VIENNA,
     "2026-10-25 01:30:00", T2),
    ("a day whose first switch is at noon: the morning looks back to yesterday 22:00",
     calendar(("S1", every_year(1, 1), "W1"), weeks={"W1": 1}), [SpecialDay(1, None, 1, 6, 5)], VIENNA,
     "2026-01-06 07:00:00", T1),
    ("... and after noon it is T2", calendar(("S1", every_year(1, 1), "W1")), [SpecialDay(1, None, 1, 6, 5)],
     VIENNA, "2026-01-06 11:00:00", T2),
    ("an empty calendar has no action", Calendar(), [], VIENNA, "2026-01-06 11:00:00", None),
    ("dated seasons: before the first there is no action",
     calendar(("S1", SeasonStart(2027, 1, 1), "W1")), [], VIENNA, "2026-06-01 12:00:00", None),
]


@pytest.mark.parametrize("name, cal, special, zone, at, expected", ACTION_CASES, ids=[c[0] for c in ACTION_CASES])
def test_action_at(name, cal, special, zone, at, expected):
    action = action_at(cal, special, zone, utc(at))
    assert (action.selector if action is not None else None) == expected


def test_action_at_looks_back_at_most_seven_days():
    # every day of the week profile has no switch (not a valid calendar, but the rule shows):
    # only the special day of March 1st switches, at noon
    quiet = Calendar(b"", (Season(b"S", every_year(1, 1), b"W"),), (WeekProfile(b"W", (9,) * 7),),
                     (DayProfile(9, ()), DayProfile(8, (act("12:00", T2),))))
    special = [SpecialDay(1, 2026, 3, 1, 8)]
    assert action_at(quiet, special, VIENNA, utc("2026-03-01 10:59:59")) is None
    assert action_at(quiet, special, VIENNA, utc("2026-03-01 11:00:00")).selector == T2
    assert action_at(quiet, special, VIENNA, utc("2026-03-08 22:59:59")).selector == T2  # seven days back
    assert action_at(quiet, special, VIENNA, utc("2026-03-08 23:00:00")) is None  # March 9th local: eight


DATE_CASES = [
    # (name, calendar, special days, date, expected day_id or None)
    ("a plain day", EXAMPLE, [], dt.date(2026, 3, 10), 1),
    ("a year-wildcard special day", EXAMPLE, [EPIPHANY], dt.date(2031, 1, 6), 2),
    ("a dated special day in its year", EXAMPLE, [SpecialDay(1, 2026, 4, 6, 2)], dt.date(2026, 4, 6), 2),
    ("a dated special day in another year", EXAMPLE, [SpecialDay(1, 2026, 4, 6, 2)], dt.date(2027, 4, 6), 1),
    ("the exact date wins over the wildcard", EXAMPLE,
     [SpecialDay(1, None, 1, 6, 2), SpecialDay(2, 2026, 1, 6, 5)], dt.date(2026, 1, 6), 5),
    ("equal wildcards: the lower index wins", EXAMPLE,
     [SpecialDay(7, None, 1, 6, 5), SpecialDay(3, None, 1, 6, 2)], dt.date(2026, 1, 6), 2),
    ("a special day of an unknown day_id is passed over for the next one", EXAMPLE,
     [SpecialDay(1, 2026, 1, 6, 9), SpecialDay(2, None, 1, 6, 5)], dt.date(2026, 1, 6), 5),
    ("a special day every Sunday (month and day wildcards)", EXAMPLE, [SpecialDay(1, None, None, None, 2, 7)],
     dt.date(2026, 3, 15), 2),
    ("the last day before a season", TWO_SEASONS, [], dt.date(2026, 3, 31), 1),
    ("the first day of a season", TWO_SEASONS, [], dt.date(2026, 4, 1), 3),
    ("before the first start: the last season of the year before", AUTUMN_WRAP, [], dt.date(2026, 1, 15), 1),
    ("after the last start", AUTUMN_WRAP, [], dt.date(2026, 12, 31), 1),
    ("between", AUTUMN_WRAP, [], dt.date(2026, 7, 1), 3),
    ("a season from February 29th starts on March 1st in other years",
     calendar(("S1", every_year(1, 1), "W1"), ("S2", every_year(2, 29), "W2"), weeks={"W1": 1, "W2": 3}), [],
     dt.date(2026, 3, 1), 3),
    ("... and not on February 28th",
     calendar(("S1", every_year(1, 1), "W1"), ("S2", every_year(2, 29), "W2"), weeks={"W1": 1, "W2": 3}), [],
     dt.date(2026, 2, 28), 1),
    ("dated seasons: the one of that year", calendar(("A", SeasonStart(2026, 1, 1), "W1"),
                                                     ("B", SeasonStart(2027, 1, 1), "W2"), weeks={"W1": 1, "W2": 3}),
     [], dt.date(2028, 5, 1), 3),
    ("different day profiles per weekday", Calendar(b"", (Season(b"S", every_year(1, 1), b"W"),),
                                                    (WeekProfile(b"W", (1, 1, 1, 1, 1, 3, 2)),),
                                                    (DAY_T1_T2, HOLIDAY, SUMMER_DAY)), [], dt.date(2026, 3, 14), 3),
    ("an empty calendar", Calendar(), [EPIPHANY], dt.date(2026, 1, 6), None),
]


@pytest.mark.parametrize("name, cal, special, date, expected", DATE_CASES, ids=[c[0] for c in DATE_CASES])
def test_day_profile_on(name, cal, special, date, expected):
    profile = day_profile_on(cal, special, date)
    assert (profile.day_id if profile is not None else None) == expected


def test_season_on_names_the_season():
    assert season_on(TWO_SEASONS, dt.date(2026, 4, 1)).name == b"S2"
    assert season_on(Calendar(), dt.date(2026, 4, 1)) is None


def _with(cal: Calendar, **changes) -> Calendar:
    return Calendar(changes.get("name", cal.name), changes.get("seasons", cal.seasons),
                    changes.get("weeks", cal.weeks), changes.get("days", cal.days))


def S(name: str, month: int, day: int, week: str = "W1", year: int | None = None) -> Season:  # noqa: N802
    return Season(name.encode(), SeasonStart(year, month, day), week.encode())


INVALID = [
    ("two seasons with the same start", _with(EXAMPLE, seasons=(S("A", 1, 1), S("B", 1, 1))), "overlapping"),
    ("season starts out of order", _with(EXAMPLE, seasons=(S("A", 6, 1), S("B", 1, 1))), "overlapping"),
    ("dated and every-year seasons mixed", _with(EXAMPLE, seasons=(S("A", 1, 1), S("B", 6, 1, year=2027))),
     "either all"),
    ("a season from February 30th", _with(EXAMPLE, seasons=(S("A", 2, 30),)), "does not exist"),
    ("a season from February 29th of 2027", _with(EXAMPLE, seasons=(S("A", 2, 29, year=2027),)), "does not exist"),
    ("a season naming an unknown week", _with(EXAMPLE, seasons=(S("A", 1, 1, "W9"),)), "unknown week"),
    ("a week naming an unknown day", _with(EXAMPLE, weeks=(WeekProfile(b"W1", (1, 1, 1, 1, 1, 1, 6)),)),
     "unknown day profiles \\[6\\]"),
    ("a week of six days", _with(EXAMPLE, weeks=(WeekProfile(b"W1", (1,) * 6),)), "seven"),
    ("two weeks of one name", _with(EXAMPLE, weeks=(WeekProfile(b"W1", (1,) * 7),) * 2), "share a name"),
    ("two day profiles of one id", _with(EXAMPLE, days=(DAY_T1_T2, DAY_T1_T2)), "share a day_id"),
    ("unsorted switch times", _with(EXAMPLE, days=(DayProfile(1, (act("06:00", 2), act("00:00", 1))),)),
     "unsorted"),
    ("a switch time twice", _with(EXAMPLE, days=(DayProfile(1, (act("06:00", 2), act("06:00", 1))),)), "duplicate"),
    ("a switch at 06:10", _with(EXAMPLE, days=(DayProfile(1, (act("06:10", 2),)),)), "15-minute"),
    ("a switch at 06:00:30", _with(EXAMPLE, days=(DayProfile(1, (DayAction(6, 0, 30, TARIFF, 2),)),)), "15-minute"),
    ("an empty day profile", _with(EXAMPLE, days=(DayProfile(1, ()),)), "no switch time"),
    ("13 seasons", _with(EXAMPLE, seasons=tuple(S(f"S{m}", m, 1) for m in range(1, 13)) + (S("X", 12, 2),)),
     "at most 12 seasons"),
    ("13 week profiles", _with(EXAMPLE, weeks=tuple(WeekProfile(bytes([i]), (1,) * 7) for i in range(13))),
     "at most 12 week"),
    ("13 day profiles", _with(EXAMPLE, days=tuple(DayProfile(i, (act("00:00", 1),)) for i in range(13))),
     "at most 12 day"),
    ("13 switch times", _with(EXAMPLE, days=(DayProfile(1, tuple(act(f"{h:02d}:00", 1) for h in range(13))),)),
     "at most 12 switch"),
]


@pytest.mark.parametrize("name, cal, message", INVALID, ids=[c[0] for c in INVALID])
def test_validate_refuses(name, cal, message):
    with pytest.raises(ValueError, match=message):
        validate(cal)


def test_validate_takes_the_capacities_and_the_examples():
    for cal in (EXAMPLE, TWO_SEASONS, AUTUMN_WRAP, DST_CALENDAR, Calendar()):
        validate(cal)
    full = Calendar(b"X", tuple(S(f"S{m}", m, 1, f"W{m}") for m in range(1, 13)),
                    tuple(WeekProfile(f"W{m}".encode(), (m,) * 7) for m in range(1, 13)),
                    tuple(DayProfile(m, tuple(act(f"{h:02d}:45", 1) for h in range(12))) for m in range(1, 13)))
    validate(full)


def test_a_year_of_switches_with_forty_holidays():
    special = [SpecialDay(i + 1, None, 1, 1 + i, 2) for i in range(9)] + \
              [SpecialDay(100 + i, 2026, 5, 1 + i, 2) for i in range(31)]
    found = switches(TWO_SEASONS, special, VIENNA, utc("2025-12-31 23:00:00"), utc("2026-12-31 23:00:00"))
    # 365 days of three switches, less two for each of the 9 + 31 holidays (all of May):
    # January 1st 2026 00:00 is the start (not crossed), January 1st 2027 00:00 the end (crossed)
    assert len(found) == 365 * 3 - 2 * (9 + 31)
    assert [t for t, _ in found] == sorted(t for t, _ in found)
