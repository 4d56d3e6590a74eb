"""Austrian public holidays: Easter against dates from published calendars, the holiday set
against the Austrian calendars of 2025 and 2026 as printed."""
from __future__ import annotations

import datetime as dt

import pytest

from smartmeter.meter.holidays import Holiday, austrian_holidays, easter_sunday

# Easter Sunday as published (e.g. the tables of the Physikalisch-Technische Bundesanstalt)
KNOWN_EASTER = [
    (1818, 3, 22),  # the earliest possible date
    (1943, 4, 25),  # the latest possible date
    (2000, 4, 23), (2011, 4, 24), (2019, 4, 21), (2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28),
    (2028, 4, 16), (2029, 4, 1), (2030, 4, 21), (2038, 4, 25), (2049, 4, 18), (2050, 4, 10), (2285, 3, 22),
]


@pytest.mark.parametrize("year, month, day", KNOWN_EASTER)
def test_easter_sunday(year, month, day):
    assert easter_sunday(year) == dt.date(year, month, day)


def test_no_easter_before_the_gregorian_calendar():
    with pytest.raises(ValueError):
        easter_sunday(1500)


def test_the_fixed_holidays_are_once_each_every_year():
    fixed = [h for h in austrian_holidays() if h.year is None]
    assert [(h.month, h.day) for h in fixed] == [(1, 1), (1, 6), (5, 1), (8, 15), (10, 26), (11, 1), (12, 8),
                                                  (12, 25), (12, 26)]


@pytest.mark.parametrize("year, expected", [
    (2025, [(4, 21), (5, 29), (6, 9), (6, 19)]),
    (2026, [(4, 6), (5, 14), (5, 25), (6, 4)]),
])
def test_the_movable_holidays_of_a_year(year, expected):
    movable = [h for h in austrian_holidays() if h.year == year]
    assert [(h.month, h.day) for h in movable] == expected
    assert [h.name for h in movable] == ["Easter Monday", "Ascension Day", "Whit Monday", "Corpus Christi"]


def test_the_default_range_is_2025_to_2050_and_fits_the_table():
    holidays = austrian_holidays()
    years = {h.year for h in holidays} - {None}
    assert years == set(range(2025, 2051))
    assert len(holidays) == 9 + 26 * 4 == 113
    assert Holiday(2050, 4, 11, "Easter Monday") in holidays  # Easter 2050 is April 10th


def test_every_movable_holiday_is_on_its_weekday():
    weekdays = {"Easter Monday": 1, "Ascension Day": 4, "Whit Monday": 1, "Corpus Christi": 4}
    for h in austrian_holidays(2025, 2050):
        if h.year is not None:
            assert dt.date(h.year, h.month, h.day).isoweekday() == weekdays[h.name]


def test_an_empty_range_is_refused():
    with pytest.raises(ValueError):
        austrian_holidays(2030, 2029)
