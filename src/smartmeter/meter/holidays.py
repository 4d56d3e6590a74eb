"""Austrian public holidays, computed: the default content of the special days table.

Companion standard §5.5 asks the special days table to hold "all fixed and flexible Austrian
holidays (Easter Monday, Corpus Christi, Ascension, Whit Monday, ...) until 2050". The fixed
ones fall on the same date every year, so each is one entry with a year wildcard; the movable
ones follow Easter Sunday and are one entry per year.

Easter Sunday is computed with the anonymous Gregorian algorithm (Meeus/Jones/Butcher) rather
than taken from python-dateutil, which is not a dependency of the meter. Pure: no I/O.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# (month, day, name): the same date every year (Feiertagsruhegesetz 1957 § 1)
FIXED_HOLIDAYS: tuple[tuple[int, int, str], ...] = (
    (1, 1, "New Year's Day"),
    (1, 6, "Epiphany"),
    (5, 1, "Labour Day"),
    (8, 15, "Assumption Day"),
    (10, 26, "National Day"),
    (11, 1, "All Saints' Day"),
    (12, 8, "Immaculate Conception"),
    (12, 25, "Christmas Day"),
    (12, 26, "St. Stephen's Day"),
)

# (days after Easter Sunday, name): the movable holidays that are not Sundays anyway
MOVABLE_HOLIDAYS: tuple[tuple[int, str], ...] = (
    (1, "Easter Monday"),
    (39, "Ascension Day"),
    (50, "Whit Monday"),
    (60, "Corpus Christi"),
)

FIRST_YEAR = 2025
LAST_YEAR = 2050


@dataclass(frozen=True, slots=True)
class Holiday:
    """One holiday as a special day date: year None = every year."""

    year: int | None
    month: int
    day: int
    name: str


def easter_sunday(year: int) -> dt.date:
    """Easter Sunday of a Gregorian year (anonymous Gregorian algorithm)."""
    if year < 1583:
        raise ValueError(f"year {year}: the Gregorian Easter rule applies from 1583")
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7  # noqa: E741 - the algorithm's own name
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def austrian_holidays(first_year: int = FIRST_YEAR, last_year: int = LAST_YEAR) -> list[Holiday]:
    """The fixed holidays once (year wildcard), then the movable ones of every year from
    `first_year` to `last_year` inclusive, in date order."""
    if last_year < first_year:
        raise ValueError(f"holiday years {first_year}..{last_year} are empty")
    holidays = [Holiday(None, month, day, name) for month, day, name in FIXED_HOLIDAYS]
    for year in range(first_year, last_year + 1):
        easter = easter_sunday(year)
        for offset, name in MOVABLE_HOLIDAYS:
            date = easter + dt.timedelta(days=offset)
            holidays.append(Holiday(year, date.month, date.day, name))
    return holidays
