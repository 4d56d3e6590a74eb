"""Tariff calendar files: what a person writes, checked, and turned into the meter's calendar.

The meter's tariff calendar is an Activity calendar (IC 20, 0-0:13.0.0.255) plus a Special
days table (IC 11, 0-0:11.0.0.255), companion §5.5. Their attributes are nested arrays of
octet-strings that nobody can write by hand, so the head-end reads and writes a calendar file
in TOML (or JSON, with the same structure):

    name = "KSMW-2027"
    activate_at = "2027-01-01 00:00:00"      # meter local time; omit for "not specified"

    [[season]]
    name = "winter"
    start = "*-10-01"                        # every year ("10-01" too); "2027-10-01": that year only
    week = "W1"

    [[week]]
    name = "W1"
    days = [1, 1, 1, 1, 1, 2, 2]             # Monday..Sunday: day profile ids

    [[day]]
    id = 1
    switches = [{ at = "00:00", tariff = 1 }, { at = "06:00", tariff = 2 }]

    [[special_day]]                          # optional: when present the table is replaced
    date = "*-12-25"                         # "*" year: every year
    day = 2

The same file describes the disconnect control calendar (0-0:13.0.1.255 with 0-0:11.0.1.255,
companion §5.8) and the load-management relay calendar (0-0:13.0.2.255 with 0-0:11.0.2.255,
§5.14), `CALENDAR_OBJECTS`: their switches name a script of their script table, 3 (off) or 4
(on), e.g. `{ at = "08:00", script = "0-0:10.0.106.255", selector = 3 }`.

Every mistake is one `CalendarFileError` naming the place (`day 1, switch 2: "6:7" is not
hh:mm`), found before the meter is asked: unknown keys, unknown week or day references,
switches out of time order or repeated, off the quarter hour, a tariff other than 1 or 2,
seasons out of order or mixing every-year and dated starts, more entries or longer names than
the meter holds (12 seasons, weeks, days and switches a day, names of 32 characters, 200
special days).

A `Calendar` holds the values as the meter holds them (octet-strings as bytes), so the way
back, meter data to file text, is exact: what `calendar show` prints loads back into the same
attributes. Values the readable forms cannot express (a date-time with a weekday or a clock
status, a name that is not printable ASCII, a switch to a script other than the tariff
scripts) are written as `hex:...` or with `script`/`selector`, so nothing the meter holds is
lost or changed on its way through a file.
"""
from __future__ import annotations

import calendar as _calendar
import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis, ObisError
from smartmeter.errors import DecodeError, EncodeError, SmartmeterError

__all__ = [
    "ACTIVITY_CALENDAR", "SPECIAL_DAYS_TABLE", "CALENDAR_OBJECTS", "TARIFF_SCRIPT_TABLE", "TARIFFS", "MAX_SPECIAL_DAYS", "MAX_SEASONS",
    "MAX_WEEKS", "MAX_DAYS", "MAX_SWITCHES_PER_DAY", "MAX_NAME_OCTETS", "QUARTER_HOUR",
    "ACTIVE_ATTRIBUTES", "PASSIVE_ATTRIBUTES", "ACTIVATION_TIME_ATTRIBUTE", "SPECIAL_DAYS_ATTRIBUTE",
    "CalendarError", "CalendarFileError", "CalendarDataError",
    "Switch", "DayProfile", "WeekProfile", "Season", "SpecialDay", "Calendar",
    "parse_calendar", "load_calendar_file", "calendar_from_dict", "calendar_to_dict", "calendar_to_toml",
    "calendar_to_json", "passive_attribute_values", "special_days_value", "calendar_from_attributes",
]

ACTIVITY_CALENDAR = Obis.parse("0-0:13.0.0.255")      # IC 20
SPECIAL_DAYS_TABLE = Obis.parse("0-0:11.0.0.255")     # IC 11, attribute 2 "entries"
# which calendar a file is loaded into or shown from: its activity calendar and special days table
CALENDAR_OBJECTS = {
    "tariff": (ACTIVITY_CALENDAR, SPECIAL_DAYS_TABLE),
    "disconnect": (Obis.parse("0-0:13.0.1.255"), Obis.parse("0-0:11.0.1.255")),  # §5.8
    "relay": (Obis.parse("0-0:13.0.2.255"), Obis.parse("0-0:11.0.2.255")),  # §5.14, load management
}
TARIFF_SCRIPT_TABLE = Obis.parse("0-0:10.0.100.255")  # IC 9: script N activates tariff N (§5.5 table 21)
TARIFFS = (1, 2)                                       # the companion allows exactly two tariff scripts
MAX_SPECIAL_DAYS = 200                                 # §5.5: at least 200; the meter holds 200
QUARTER_HOUR = 15                                      # §5.5: switching times on 15-minute boundaries
# What this meter holds (docs/decisions.md "Activity calendar"; the companion asks for at least 4/4/4/5):
# a file is checked against them so that a person learns before the meter refuses.
MAX_SEASONS = 12
MAX_WEEKS = 12
MAX_DAYS = 12
MAX_SWITCHES_PER_DAY = 12
MAX_NAME_OCTETS = 32                                   # calendar, season and week names

# IC 20 attribute indexes: name, seasons, weeks, days (active 2..5, passive 6..9), activation time 10.
ACTIVE_ATTRIBUTES = {"name": 2, "seasons": 3, "weeks": 4, "days": 5}
PASSIVE_ATTRIBUTES = {"name": 6, "seasons": 7, "weeks": 8, "days": 9}
ACTIVATION_TIME_ATTRIBUTE = 10
SPECIAL_DAYS_ATTRIBUTE = 2

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HEX_PREFIX = "hex:"
NOT_SPECIFIED_DATE_TIME = axdr.encode_date_time(CosemDateTime())  # all fields "not specified"


class CalendarError(SmartmeterError):
    """A calendar that cannot be used: a file with a mistake, or meter data of the wrong shape."""


class CalendarFileError(CalendarError):
    """A mistake in a calendar file: `place` says where (``day 1, switch 2``), `problem` what."""

    def __init__(self, place: str, problem: str) -> None:
        self.place, self.problem = place, problem
        super().__init__(f"{place}: {problem}" if place else problem)


class CalendarDataError(CalendarError):
    """Calendar attributes read from a meter that do not have the Blue Book's shape."""


# --------------------------------------------------------------------------------------
# The calendar as the meter holds it


@dataclass(frozen=True)
class Switch:
    """One entry of a day schedule: at `start` (4-byte time) run `selector` of script table `script`."""

    start: bytes
    script: bytes = TARIFF_SCRIPT_TABLE.to_bytes()
    selector: int = 1

    @property
    def tariff(self) -> int | None:
        """The tariff this switch activates, or None when it runs another script."""
        return self.selector if self.script == TARIFF_SCRIPT_TABLE.to_bytes() else None


@dataclass(frozen=True)
class DayProfile:
    day_id: int
    switches: tuple[Switch, ...]


@dataclass(frozen=True)
class WeekProfile:
    name: bytes
    days: tuple[int, int, int, int, int, int, int]  # day ids, Monday..Sunday


@dataclass(frozen=True)
class Season:
    name: bytes
    start: bytes  # 12-byte date-time, usually without year: every year
    week: bytes


@dataclass(frozen=True)
class SpecialDay:
    index: int
    date: bytes  # 5-byte date, usually without year: every year
    day_id: int


@dataclass(frozen=True)
class Calendar:
    """An activity calendar and, when `special_days` is not None, a whole special days table.

    `activate_at` is the 12-byte activate_passive_calendar_time (all "not specified" when the
    file has none); it belongs to the passive calendar only, so one read from the active
    attributes carries None."""

    name: bytes
    seasons: tuple[Season, ...]
    weeks: tuple[WeekProfile, ...]
    days: tuple[DayProfile, ...]
    activate_at: bytes | None = NOT_SPECIFIED_DATE_TIME
    special_days: tuple[SpecialDay, ...] | None = None


# --------------------------------------------------------------------------------------
# Text forms of the values (one readable form each, `hex:` for everything else)


def _name_text(raw: bytes) -> str:
    if all(0x20 <= b <= 0x7E for b in raw) and not raw.decode("ascii").startswith(HEX_PREFIX):
        return raw.decode("ascii")
    return HEX_PREFIX + raw.hex()


def _hex_value(text: str, size: int | None, place: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text[len(HEX_PREFIX):])
    except ValueError:
        raise CalendarFileError(place, f"{what} {_shown(text)} is not hex: followed by hex digits") from None
    if size is not None and len(raw) != size:
        raise CalendarFileError(place, f"{what} {_shown(text)} has {len(raw)} bytes, not {size}")
    return raw


def _name_bytes(value: Any, place: str, what: str = "name") -> bytes:
    if not isinstance(value, str):
        raise CalendarFileError(place, f"{what} must be text in quotes, not {_shown(value)}")
    if value.startswith(HEX_PREFIX):
        raw = _hex_value(value, None, place, what)
    elif not all(" " <= ch <= "~" for ch in value):
        raise CalendarFileError(place, f"{what} {_shown(value)} is not printable ASCII (write hex:... for other bytes)")
    else:
        raw = value.encode("ascii")
    if len(raw) > MAX_NAME_OCTETS:
        raise CalendarFileError(place, f"{what} {_shown(value)} has {len(raw)} characters; "
                                       f"the meter takes at most {MAX_NAME_OCTETS}")
    return raw


def _days_in_month(month: int, year: int | None) -> int:
    # A date of every year may be 29 February (it then occurs in leap years only).
    return _calendar.monthrange(2000 if year is None else year, month)[1]


_DATE = re.compile(r"(?:(\*|\d{4})-)?(\*|\d{1,2})-(\*|\d{1,2})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def _parse_date(text: str, place: str, what: str, wildcards: bool) -> tuple[int | None, int | None, int | None]:
    """(year, month, day) of "MM-DD", "*-MM-DD" or "YYYY-MM-DD", None for "*"; with `wildcards`
    month and day may be "*" as well ("*-*-01": the first of every month)."""
    match = _DATE.fullmatch(text)
    forms = "*-MM-DD or YYYY-MM-DD" + (" (* for any year, month or day)" if wildcards else "")
    if match is None or (not wildcards and "*" in match.groups()[1:]):
        raise CalendarFileError(place, f"{what} {_shown(text)} is not {forms}")
    year_text, month_text, day_text = match.groups()
    year = None if year_text in (None, "*") else int(year_text)
    month = None if month_text == "*" else int(month_text)
    day = None if day_text == "*" else int(day_text)
    if month is not None and not 1 <= month <= 12:
        raise CalendarFileError(place, f"{what} {_shown(text)}: month {month} is not 1..12")
    if day is not None and not 1 <= day <= (31 if month is None else _days_in_month(month, year)):
        raise CalendarFileError(place, f"{what} {_shown(text)}: day {day} does not exist in that month")
    return year, month, day


def _parse_time(text: Any, place: str, what: str) -> tuple[int, int]:
    """(hour, minute) of "hh:mm"; `what` names the value in the message ("" for a switch's `at`)."""
    named = f"{what} " if what else ""
    if not isinstance(text, str) or (match := _TIME.fullmatch(text)) is None:
        raise CalendarFileError(place, f"{named}{_shown(text)} is not hh:mm")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise CalendarFileError(place, f"{named}{_shown(text)} is not a time of day (00:00..23:59)")
    return hour, minute


def _decoded(raw: bytes, decode) -> Any:
    try:
        return decode(raw)
    except (DecodeError, ValueError):
        return None


# season_start: the first day of the season (this meter starts seasons at 00:00:00 only).
def _season_start_text(raw: bytes) -> str:
    value = _decoded(raw, axdr.decode_date_time) if len(raw) == 12 else None
    if value is not None and value.deviation is None and value.clock_status is None:
        d, t = value.date, value.time
        if (d.weekday is None and d.month is not None and d.day is not None and 1 <= d.month <= 12
                and 1 <= d.day <= _days_in_month(d.month, d.year)
                and (t.hour, t.minute, t.second, t.hundredths) == (0, 0, 0, 0)):
            return f"{'*' if d.year is None else f'{d.year:04d}'}-{d.month:02d}-{d.day:02d}"
    return HEX_PREFIX + raw.hex()


def _season_start_bytes(value: Any, place: str) -> bytes:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # a TOML date without quotes
        value = value.isoformat()
    if not isinstance(value, str):
        raise CalendarFileError(place, f"start must be text like \"*-10-01\", not {_shown(value)}")
    if value.startswith(HEX_PREFIX):
        return _hex_value(value, 12, place, "start")
    year, month, day = _parse_date(value, place, "start", wildcards=False)
    return axdr.encode_date_time(CosemDateTime(CosemDate(year, month, day, None), CosemTime(0, 0, 0, 0)))


def _every_year(raw: bytes) -> bool | None:
    """Whether a season start recurs every year (None: not a date-time)."""
    value = _decoded(raw, axdr.decode_date_time)
    return None if value is None else value.date.year is None


def _season_order(raw: bytes) -> tuple:
    value = _decoded(raw, axdr.decode_date_time)
    if value is None:
        return ()
    d, t = value.date, value.time
    return (d.year or 0, d.month or 0, d.day or 0, t.hour or 0, t.minute or 0)


# specialday_date: a date without weekday; year, month and day may be wildcards.
def _special_date_text(raw: bytes) -> str:
    value = _decoded(raw, axdr.decode_date) if len(raw) == 5 else None
    if (value is not None and value.weekday is None and value.month in (None, *range(1, 13))
            and (value.day is None or 1 <= value.day <= (31 if value.month is None
                                                         else _days_in_month(value.month, value.year)))):
        return "-".join("*" if v is None else f"{v:0{width}d}"
                        for v, width in ((value.year, 4), (value.month, 2), (value.day, 2)))
    return HEX_PREFIX + raw.hex()


def _special_date_bytes(value: Any, place: str) -> bytes:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # a TOML date without quotes
        value = value.isoformat()
    if not isinstance(value, str):
        raise CalendarFileError(place, f"date must be text like \"*-12-25\", not {_shown(value)}")
    if value.startswith(HEX_PREFIX):
        return _hex_value(value, 5, place, "date")
    year, month, day = _parse_date(value, place, "date", wildcards=True)
    return axdr.encode_date(CosemDate(year, month, day, None))


# start_time of a switch: hh:mm:00.00.
def _switch_time_text(raw: bytes) -> str:
    value = _decoded(raw, axdr.decode_time) if len(raw) == 4 else None
    if value is not None and None not in (value.hour, value.minute) and value.second == 0 and value.hundredths == 0:
        return f"{value.hour:02d}:{value.minute:02d}"
    return HEX_PREFIX + raw.hex()


def _switch_time_bytes(value: Any, place: str) -> bytes:
    if isinstance(value, str) and value.startswith(HEX_PREFIX):
        return _hex_value(value, 4, place, "time")
    hour, minute = _parse_time(value, place, "")
    return axdr.encode_time(CosemTime(hour, minute, 0, 0))


# activate_passive_calendar_time: a full date and time of day; an offset becomes the deviation.
def _activation_text(raw: bytes) -> str | None:
    if raw == NOT_SPECIFIED_DATE_TIME:
        return None
    value = _decoded(raw, axdr.decode_date_time) if len(raw) == 12 else None
    if value is not None and value.clock_status is None and value.time.hundredths == 0:
        try:
            moment = value.to_datetime()
        except ValueError:
            moment = None
        if moment is not None and value.time.second is not None and value.date.weekday is None:
            return moment.isoformat(sep=" ")
    return HEX_PREFIX + raw.hex()


def _activation_bytes(value: Any, place: str) -> bytes:
    if isinstance(value, dt.datetime):  # a TOML date-time written without quotes
        moment = value
    elif not isinstance(value, str):
        raise CalendarFileError(place, f"activate_at must be a date and time like \"2027-01-01 00:00:00\", "
                                       f"not {_shown(value)}")
    elif value.startswith(HEX_PREFIX):
        return _hex_value(value, 12, place, "activate_at")
    else:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise CalendarFileError(place, f"activate_at {_shown(value)} is not YYYY-MM-DD hh:mm[:ss]") from None
    if moment.microsecond:
        raise CalendarFileError(place, f"activate_at {_shown(str(moment))}: give whole seconds")
    try:
        # as the meter's own calendar holds it: weekday and clock status "not specified"
        stamp = CosemDateTime.from_datetime(moment, clock_status=None)
        return axdr.encode_date_time(CosemDateTime(replace(stamp.date, weekday=None), stamp.time, stamp.deviation))
    except EncodeError as exc:
        raise CalendarFileError(place, f"activate_at {_shown(str(moment))}: {exc}") from None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "a list"
    if isinstance(value, (dt.date, dt.time)):
        return f"{value.isoformat()} (a TOML date or time; put it in quotes)"
    return repr(value)


# --------------------------------------------------------------------------------------
# File -> Calendar, with every check a person benefits from before the meter is asked


def _table(value: Any, place: str, keys: dict[str, bool]) -> dict:
    """`value` as a table with only the given keys (True: required)."""
    if not isinstance(value, dict):
        raise CalendarFileError(place, f"must be a table, not {_shown(value)}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise CalendarFileError(place, f"unknown key {_shown(unknown[0])} (expected {', '.join(keys)})")
    missing = [k for k, required in keys.items() if required and k not in value]
    if missing:
        raise CalendarFileError(place, f"{missing[0]} is missing")
    return value


def _list(value: Any, place: str, what: str) -> list:
    if not isinstance(value, list):
        raise CalendarFileError(place, f"{what} must be a list, not {_shown(value)}")
    return value


def _integer(value: Any, place: str, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CalendarFileError(place, f"{what} {_shown(value)} is not a whole number")
    if not low <= value <= high:
        raise CalendarFileError(place, f"{what} {value} is not {low}..{high}")
    return value


def _named(kind: str, position: int, name: bytes | None) -> str:
    return f"{kind} {position}" + (f" ({json.dumps(_name_text(name))})" if name else "")


def _day_place(position: int, day_id: int | None) -> str:
    return f"day {position}" + ("" if day_id in (None, position) else f" (id {day_id})")


def _names_list(names) -> str:
    return ", ".join(json.dumps(_name_text(n)) for n in names) or "none"


def _parse_switch(entry: Any, place: str) -> Switch:
    table = _table(entry, place, {"at": True, "tariff": False, "script": False, "selector": False})
    start = _switch_time_bytes(table["at"], place)
    if "tariff" in table:
        if "script" in table or "selector" in table:
            raise CalendarFileError(place, "give either tariff or script and selector, not both")
        tariff = table["tariff"]
        if isinstance(tariff, bool) or tariff not in TARIFFS:
            raise CalendarFileError(place, f"tariff {_shown(tariff)} is not 1 or 2")
        return Switch(start, TARIFF_SCRIPT_TABLE.to_bytes(), tariff)
    if "script" not in table or "selector" not in table:
        raise CalendarFileError(place, "tariff is missing")
    script_text = table["script"]
    if isinstance(script_text, str) and script_text.startswith(HEX_PREFIX):
        script = _hex_value(script_text, None, place, "script")
    else:
        try:
            script = Obis.parse(script_text).to_bytes() if isinstance(script_text, str) else None
        except ObisError:
            script = None
        if script is None:
            raise CalendarFileError(place, f"script {_shown(script_text)} is not an OBIS code like 0-0:10.0.100.255")
    selector = _integer(table["selector"], place, "selector", 0, 0xFFFF)
    if script == TARIFF_SCRIPT_TABLE.to_bytes() and selector not in TARIFFS:
        raise CalendarFileError(place, f"tariff {selector} is not 1 or 2")
    return Switch(start, script, selector)


def _parse_day(entry: Any, position: int) -> DayProfile:
    place = _day_place(position, None)
    table = _table(entry, place, {"id": True, "switches": True})
    day_id = _integer(table["id"], place, "id", 0, 255)
    place = _day_place(position, day_id)
    switches = tuple(_parse_switch(s, f"{place}, switch {n}")
                     for n, s in enumerate(_list(table["switches"], place, "switches"), 1))
    if not switches:
        raise CalendarFileError(place, "has no switches (give at least one, e.g. { at = \"00:00\", tariff = 1 })")
    if len(switches) > MAX_SWITCHES_PER_DAY:
        raise CalendarFileError(f"{place}, switch {MAX_SWITCHES_PER_DAY + 1}",
                                f"the meter holds at most {MAX_SWITCHES_PER_DAY} switches a day")
    for n, switch in enumerate(switches, 1):
        where, shown = f"{place}, switch {n}", _switch_time_text(switch.start)
        value = _decoded(switch.start, axdr.decode_time)
        if value is None or value.minute is None or value.minute % QUARTER_HOUR or value.second or value.hundredths:
            raise CalendarFileError(where, f"{shown} is not on a quarter hour (:00, :15, :30, :45)")
        if n > 1 and switch.start == switches[n - 2].start:
            raise CalendarFileError(where, f"{shown} repeats the time of switch {n - 1}")
        if n > 1 and switch.start < switches[n - 2].start:  # hh, mm, ss, hundredths: byte order is time order
            raise CalendarFileError(where, f"{shown} comes before switch {n - 1} "
                                           f"({_switch_time_text(switches[n - 2].start)}); list switches in time order")
    return DayProfile(day_id, switches)


def _parse_week(entry: Any, position: int, day_ids: list[int]) -> WeekProfile:
    place = f"week {position}"
    table = _table(entry, place, {"name": True, "days": True})
    name = _name_bytes(table["name"], place)
    place = _named("week", position, name)
    if not name:
        raise CalendarFileError(place, "name is empty (seasons refer to weeks by name)")
    days = _list(table["days"], place, "days")
    if len(days) != 7:
        raise CalendarFileError(place, f"days lists {len(days)} day ids, not 7 (Monday..Sunday)")
    for weekday, day_id in zip(WEEKDAYS, days):
        _integer(day_id, f"{place}, {weekday}", "day", 0, 255)
        if day_id not in day_ids:
            raise CalendarFileError(f"{place}, {weekday}",
                                    f"day {day_id} is not defined (days: {', '.join(map(str, day_ids)) or 'none'})")
    return WeekProfile(name, tuple(days))


def _parse_season(entry: Any, position: int, week_names: list[bytes]) -> Season:
    place = f"season {position}"
    table = _table(entry, place, {"name": True, "start": True, "week": True})
    name = _name_bytes(table["name"], place)
    place = _named("season", position, name)
    start = _season_start_bytes(table["start"], place)
    week = _name_bytes(table["week"], place, "week")
    if week not in week_names:
        raise CalendarFileError(place, f"week {json.dumps(_name_text(week))} is not defined "
                                       f"(weeks: {_names_list(week_names)})")
    return Season(name, start, week)


def _parse_special_day(entry: Any, position: int, day_ids: list[int]) -> SpecialDay:
    place = f"special day {position}"
    table = _table(entry, place, {"date": True, "day": True, "index": False})
    index = _integer(table.get("index", position), place, "index", 0, 0xFFFF)
    date = _special_date_bytes(table["date"], place)
    day_id = _integer(table["day"], place, "day", 0, 255)
    if day_id not in day_ids:
        raise CalendarFileError(place, f"day {day_id} is not defined (days: {', '.join(map(str, day_ids)) or 'none'})")
    return SpecialDay(index, date, day_id)


def _entries(top: dict, key: str, kind: str, most: int) -> list:
    """The list of [[key]] tables, at most `most` of them (what the meter holds)."""
    entries = _list(top[key], key, key)
    if len(entries) > most:
        raise CalendarFileError(f"{kind} {most + 1}", f"the meter holds at most {most} {kind}s")
    return entries


def _first_repeat(values: list) -> int | None:
    """Position (0-based) of the first value that appeared before."""
    seen = set()
    for position, value in enumerate(values):
        if value in seen:
            return position
        seen.add(value)
    return None


def calendar_from_dict(content: Any) -> Calendar:
    """A Calendar from the parsed file (TOML or JSON); raises CalendarFileError at the first mistake."""
    top = _table(content, "", {"name": True, "activate_at": False, "season": True, "week": True, "day": True,
                                "special_day": False})
    name = _name_bytes(top["name"], "name", "calendar name")
    activate_at = (_activation_bytes(top["activate_at"], "activate_at") if "activate_at" in top
                   else NOT_SPECIFIED_DATE_TIME)

    day_entries = _entries(top, "day", "day", MAX_DAYS)
    days = tuple(_parse_day(entry, n) for n, entry in enumerate(day_entries, 1))
    day_ids = [d.day_id for d in days]
    if (repeat := _first_repeat(day_ids)) is not None:
        raise CalendarFileError(_day_place(repeat + 1, day_ids[repeat]),
                                f"id {day_ids[repeat]} repeats day {day_ids.index(day_ids[repeat]) + 1}'s")

    week_entries = _entries(top, "week", "week", MAX_WEEKS)
    weeks = tuple(_parse_week(entry, n, day_ids) for n, entry in enumerate(week_entries, 1))
    week_names = [w.name for w in weeks]
    if (repeat := _first_repeat(week_names)) is not None:
        raise CalendarFileError(_named("week", repeat + 1, week_names[repeat]),
                                f"the name repeats week {week_names.index(week_names[repeat]) + 1}'s")

    season_entries = _entries(top, "season", "season", MAX_SEASONS)
    seasons = tuple(_parse_season(entry, n, week_names) for n, entry in enumerate(season_entries, 1))
    if not seasons:
        raise CalendarFileError("season", "the file has no season (give at least one [[season]])")
    season_names = [s.name for s in seasons]
    if (repeat := _first_repeat(season_names)) is not None:
        raise CalendarFileError(_named("season", repeat + 1, season_names[repeat]),
                                f"the name repeats season {season_names.index(season_names[repeat]) + 1}'s")
    every_year = [_every_year(s.start) for s in seasons]
    for n in range(1, len(seasons)):
        if None not in (every_year[n], every_year[0]) and every_year[n] != every_year[0]:
            # the meter's rule (docs/decisions.md): either every season recurs every year or none does
            raise CalendarFileError(
                _named("season", n + 1, seasons[n].name),
                f"start {_season_start_text(seasons[n].start)} is {'every year' if every_year[n] else 'of one year'}, "
                f"season 1's is {'every year' if every_year[0] else 'of one year'}; give all seasons a year or none")
        # Blue Book 4.5.5: the season_profile is sorted by season_start
        before, this = _season_order(seasons[n - 1].start), _season_order(seasons[n].start)
        if before and this and this <= before:
            raise CalendarFileError(
                _named("season", n + 1, seasons[n].name),
                f"start {_season_start_text(seasons[n].start)} is "
                f"{'the same as' if this == before else 'before'} season {n}'s "
                f"({_season_start_text(seasons[n - 1].start)}); list seasons in the order of their start")

    special_days = None
    if "special_day" in top:
        entries = _entries(top, "special_day", "special day", MAX_SPECIAL_DAYS)
        special_days = tuple(_parse_special_day(entry, n, day_ids) for n, entry in enumerate(entries, 1))
        indexes = [s.index for s in special_days]
        if (repeat := _first_repeat(indexes)) is not None:
            raise CalendarFileError(f"special day {repeat + 1}", f"index {indexes[repeat]} repeats special day "
                                                                 f"{indexes.index(indexes[repeat]) + 1}'s")
        dates = [s.date for s in special_days]
        if (repeat := _first_repeat(dates)) is not None:
            raise CalendarFileError(f"special day {repeat + 1}",
                                    f"date {_special_date_text(dates[repeat])} repeats special day "
                                    f"{dates.index(dates[repeat]) + 1}'s")
    return Calendar(name, seasons, weeks, days, activate_at, special_days)


def parse_calendar(text: str, *, json_format: bool | None = None) -> Calendar:
    """A Calendar from the text of a calendar file: JSON when `json_format` (None: when the text
    starts with "{"), TOML otherwise."""
    if json_format is None:
        json_format = text.lstrip().startswith("{")
    if json_format:
        try:
            content = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalendarFileError(f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    else:
        try:
            content = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CalendarFileError("", f"not valid TOML: {exc}") from None
    return calendar_from_dict(content)


def load_calendar_file(path: Path | str) -> Calendar:
    """A Calendar from a file (a .json name or content starting with "{" is JSON, else TOML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CalendarFileError("", "not a text file (UTF-8)") from None
    return parse_calendar(text, json_format=True if path.suffix.lower() == ".json" else None)


# --------------------------------------------------------------------------------------
# Calendar -> file text


def _switch_dict(switch: Switch) -> dict:
    at = _switch_time_text(switch.start)
    if switch.tariff is not None and switch.tariff in TARIFFS:
        return {"at": at, "tariff": switch.tariff}
    return {"at": at, "script": str(Obis.from_bytes(switch.script)) if len(switch.script) == 6
            else HEX_PREFIX + switch.script.hex(), "selector": switch.selector}


def calendar_to_dict(cal: Calendar) -> dict:
    """The file's structure (what TOML and JSON both hold) of a Calendar."""
    out: dict[str, Any] = {"name": _name_text(cal.name)}
    if cal.activate_at is not None and (when := _activation_text(cal.activate_at)) is not None:
        out["activate_at"] = when
    out["season"] = [{"name": _name_text(s.name), "start": _season_start_text(s.start), "week": _name_text(s.week)}
                     for s in cal.seasons]
    out["week"] = [{"name": _name_text(w.name), "days": list(w.days)} for w in cal.weeks]
    out["day"] = [{"id": d.day_id, "switches": [_switch_dict(s) for s in d.switches]} for d in cal.days]
    if cal.special_days is not None:
        out["special_day"] = [
            {"date": _special_date_text(s.date), "day": s.day_id, **({} if s.index == n else {"index": s.index})}
            for n, s in enumerate(cal.special_days, 1)]
    return out


def _plain(value: Any) -> bool:
    """A scalar, or a list of scalars."""
    if isinstance(value, list):
        return not any(isinstance(v, (dict, list)) for v in value)
    return not isinstance(value, dict)


def _json_text(value: Any, indent: str = "") -> str:
    """Indented JSON with every list or table of plain values on one line, as a person reads it."""
    inner = indent + "  "
    if isinstance(value, dict) and not all(_plain(v) for v in value.values()):
        items = [f"{inner}{json.dumps(k)}: {_json_text(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and not _plain(value):
        return "[\n" + ",\n".join(inner + _json_text(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, separators=(", ", ": "))


def calendar_to_json(cal: Calendar) -> str:
    """The calendar as a JSON calendar file (loads back into the same Calendar)."""
    return _json_text(calendar_to_dict(cal)) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string with ASCII escapes is a TOML basic string
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def calendar_to_toml(cal: Calendar, comment: str | None = None) -> str:
    """The calendar as a TOML calendar file (loads back into the same Calendar)."""
    content = calendar_to_dict(cal)
    lines = [f"# {line}" for line in (comment or "").splitlines()]
    lines.append(f"name = {_toml_value(content['name'])}")
    if "activate_at" in content:
        lines.append(f"activate_at = {_toml_value(content['activate_at'])}  # meter local time, unless with an offset")
    for key in ("season", "week", "day"):
        if not content[key]:  # an empty calendar (the passive one before a head-end writes it)
            lines.append(f"{key} = []")
    if content.get("special_day") == []:
        lines.append("special_day = []  # the special days table is empty")
    for season in content["season"]:
        lines += ["", "[[season]]"] + [f"{k} = {_toml_value(v)}" for k, v in season.items()]
    for week in content["week"]:
        lines += ["", "[[week]]", f"name = {_toml_value(week['name'])}",
                  f"days = {_toml_value(week['days'])}  # Monday..Sunday"]
    for day in content["day"]:
        lines += ["", "[[day]]", f"id = {day['id']}", "switches = ["]
        lines += [f"  {_toml_value(s)}," for s in day["switches"]]
        lines.append("]")
    for special in content.get("special_day") or []:
        lines += ["", "[[special_day]]"] + [f"{k} = {_toml_value(v)}" for k, v in special.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Calendar <-> COSEM attribute values


def passive_attribute_values(cal: Calendar) -> dict[int, Data]:
    """IC 20 attributes 6..10 (calendar_name, season_profile, week_profile_table,
    day_profile_table passive; activate_passive_calendar_time) for the calendar."""
    seasons = Data.array(Data.structure([Data.octet_string(s.name), Data.octet_string(s.start),
                                         Data.octet_string(s.week)]) for s in cal.seasons)
    weeks = Data.array(Data.structure([Data.octet_string(w.name), *(Data.unsigned(d) for d in w.days)])
                       for w in cal.weeks)
    days = Data.array(
        Data.structure([Data.unsigned(d.day_id), Data.array(
            Data.structure([Data.octet_string(s.start), Data.octet_string(s.script), Data.long_unsigned(s.selector)])
            for s in d.switches)])
        for d in cal.days)
    return {
        PASSIVE_ATTRIBUTES["name"]: Data.octet_string(cal.name),
        PASSIVE_ATTRIBUTES["seasons"]: seasons,
        PASSIVE_ATTRIBUTES["weeks"]: weeks,
        PASSIVE_ATTRIBUTES["days"]: days,
        ACTIVATION_TIME_ATTRIBUTE: Data.octet_string(cal.activate_at if cal.activate_at is not None
                                                     else NOT_SPECIFIED_DATE_TIME),
    }


def special_days_value(cal: Calendar) -> Data | None:
    """IC 11 attribute 2 (entries) for the calendar's special days, or None when it has none."""
    if cal.special_days is None:
        return None
    return Data.array(Data.structure([Data.long_unsigned(s.index), Data.octet_string(s.date), Data.unsigned(s.day_id)])
                      for s in cal.special_days)


def _fields(value: Data, types: tuple[DataType, ...], what: str) -> tuple:
    """The values of a structure whose fields have exactly the given types."""
    if not isinstance(value, Data) or value.type != DataType.STRUCTURE or len(value.value) != len(types):
        raise CalendarDataError(f"{what} is not a structure of {len(types)} fields")
    for n, (field, wanted) in enumerate(zip(value.value, types), 1):
        if field.type != wanted:
            raise CalendarDataError(f"{what}, field {n} is {field.type.name.lower()}, not {wanted.name.lower()}")
    return tuple(field.value for field in value.value)


def _elements(value: Data, what: str) -> tuple[Data, ...]:
    if not isinstance(value, Data) or value.type != DataType.ARRAY:
        raise CalendarDataError(f"{what} is not an array")
    return value.value


def _octets(value: Data, what: str) -> bytes:
    if not isinstance(value, Data) or value.type != DataType.OCTET_STRING:
        raise CalendarDataError(f"{what} is not an octet-string")
    return value.value


_OCTETS, _UNSIGNED, _LONG_UNSIGNED = DataType.OCTET_STRING, DataType.UNSIGNED, DataType.LONG_UNSIGNED


def calendar_from_attributes(name: Data, seasons: Data, weeks: Data, days: Data, activate_at: Data | None = None,
                             special_days: Data | None = None) -> Calendar:
    """A Calendar from IC 20 attribute values (active 2..5, or passive 6..9 and 10) and, when
    given, IC 11 attribute 2. Raises CalendarDataError when a value has another shape; the
    content is taken as it is (only a file is checked), so `show` shows what the meter holds."""
    season_list = tuple(Season(*_fields(s, (_OCTETS, _OCTETS, _OCTETS), f"season_profile element {n}"))
                        for n, s in enumerate(_elements(seasons, "season_profile"), 1))
    week_list = []
    for n, w in enumerate(_elements(weeks, "week_profile_table"), 1):
        week_name, *week_days = _fields(w, (_OCTETS,) + (_UNSIGNED,) * 7, f"week_profile_table element {n}")
        week_list.append(WeekProfile(week_name, tuple(week_days)))
    day_list = []
    for n, d in enumerate(_elements(days, "day_profile_table"), 1):
        day_id, schedule = _fields(d, (_UNSIGNED, DataType.ARRAY), f"day_profile_table element {n}")
        switches = tuple(
            Switch(*_fields(s, (_OCTETS, _OCTETS, _LONG_UNSIGNED), f"day_profile_table element {n}, action {k}"))
            for k, s in enumerate(schedule, 1))
        day_list.append(DayProfile(day_id, switches))
    special_list = None
    if special_days is not None:
        special_list = tuple(SpecialDay(*_fields(s, (_LONG_UNSIGNED, _OCTETS, _UNSIGNED), f"special days entry {n}"))
                             for n, s in enumerate(_elements(special_days, "special days entries"), 1))
    return Calendar(
        _octets(name, "calendar_name"), season_list, tuple(week_list), tuple(day_list),
        None if activate_at is None else _octets(activate_at, "activate_passive_calendar_time"),
        special_list)
