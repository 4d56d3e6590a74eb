"""Calendar files (hes/calendar_file.py): a file a person writes becomes the IC 20 passive
attributes and IC 11 entries byte for byte as written out here by hand; every mistake is one
line naming its place; meter data goes to file text and back without a byte changed."""
from __future__ import annotations

import json
import tomllib

import pytest

from smartmeter.cosem.data import Data
from smartmeter.hes import calendar_file as cf
from smartmeter.hes.calendar_file import (
    Calendar, CalendarDataError, CalendarFileError, calendar_from_attributes, calendar_to_dict, calendar_to_json,
    calendar_to_toml, load_calendar_file, parse_calendar, passive_attribute_values, special_days_value,
)

# The bytes every value must have, written out from the Blue Book's formats (not from the module):
# date-time = year(2) month day weekday hour minute second hundredths deviation(2) status,
# 0xFF / 0xFFFF / 0x8000 = not specified; date = year(2) month day weekday; time = h m s hundredths.
TARIFF_TABLE = bytes([0, 0, 10, 0, 100, 255])                       # 0-0:10.0.100.255
EVERY_APRIL_1 = bytes([0xFF, 0xFF, 4, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])
EVERY_OCTOBER_1 = bytes([0xFF, 0xFF, 10, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])
JANUARY_1_2027 = bytes([0x07, 0xEB, 1, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])  # 2027 = 0x07EB, local time
NEVER = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0xFF])
EVERY_CHRISTMAS = bytes([0xFF, 0xFF, 12, 25, 0xFF])
EASTER_MONDAY_2027 = bytes([0x07, 0xEB, 3, 29, 0xFF])


def at(hour: int, minute: int) -> bytes:
    return bytes([hour, minute, 0, 0])


EXAMPLE = """\
name = "KSMW-2027"
activate_at = "2027-01-01 00:00:00"

[[season]]
name = "summer"
start = "04-01"
week = "W1"

[[season]]
name = "winter"
start = "*-10-01"
week = "W2"

[[week]]
name = "W1"
days = [1, 1, 1, 1, 1, 2, 2]

[[week]]
name = "W2"
days = [1, 1, 1, 1, 1, 1, 2]

[[day]]
id = 1
switches = [{ at = "00:00", tariff = 1 }, { at = "06:00", tariff = 2 }, { at = "22:00", tariff = 1 }]

[[day]]
id = 2
switches = [{ at = "00:00", tariff = 1 }]

[[special_day]]
date = "*-12-25"
day = 2

[[special_day]]
date = "2027-03-29"
day = 2
"""


def switch(hour: int, minute: int, tariff: int) -> Data:
    return Data.structure([Data.octet_string(at(hour, minute)), Data.octet_string(TARIFF_TABLE),
                           Data.long_unsigned(tariff)])


def week(name: bytes, days: list[int]) -> Data:
    return Data.structure([Data.octet_string(name), *(Data.unsigned(d) for d in days)])


EXPECTED_PASSIVE = {
    6: Data.octet_string(b"KSMW-2027"),
    7: Data.array([
        Data.structure([Data.octet_string(b"summer"), Data.octet_string(EVERY_APRIL_1), Data.octet_string(b"W1")]),
        Data.structure([Data.octet_string(b"winter"), Data.octet_string(EVERY_OCTOBER_1), Data.octet_string(b"W2")]),
    ]),
    8: Data.array([week(b"W1", [1, 1, 1, 1, 1, 2, 2]), week(b"W2", [1, 1, 1, 1, 1, 1, 2])]),
    9: Data.array([
        Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1), switch(6, 0, 2), switch(22, 0, 1)])]),
        Data.structure([Data.unsigned(2), Data.array([switch(0, 0, 1)])]),
    ]),
    10: Data.octet_string(JANUARY_1_2027),
}
EXPECTED_SPECIAL_DAYS = Data.array([
    Data.structure([Data.long_unsigned(1), Data.octet_string(EVERY_CHRISTMAS), Data.unsigned(2)]),
    Data.structure([Data.long_unsigned(2), Data.octet_string(EASTER_MONDAY_2027), Data.unsigned(2)]),
])


def as_toml(content: dict) -> str:
    """A minimal TOML writer for the tests' dicts (independent of the module's own)."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v) if isinstance(v, str) else str(v)

    def tables(v) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{k} = {value(v)}" for k, v in content.items() if not tables(v)]
    for k, v in content.items():
        if tables(v):
            for table in v:
                lines += ["", f"[[{k}]]"] + [f"{key} = {value(x)}" for key, x in table.items()]
    return "\n".join(lines) + "\n"


def example() -> dict:
    return tomllib.loads(EXAMPLE)


# -- file -> attributes ---------------------------------------------------------------------------

def test_the_example_file_becomes_the_passive_attributes_and_special_days_byte_for_byte():
    calendar = parse_calendar(EXAMPLE)
    assert passive_attribute_values(calendar) == EXPECTED_PASSIVE
    assert special_days_value(calendar) == EXPECTED_SPECIAL_DAYS


def test_json_with_the_same_structure_is_the_same_calendar(tmp_path):
    as_json = json.dumps(example())
    assert parse_calendar(as_json) == parse_calendar(EXAMPLE)
    path = tmp_path / "calendar.json"
    path.write_text(as_json)
    assert load_calendar_file(path) == parse_calendar(EXAMPLE)
    path = tmp_path / "calendar.toml"
    path.write_text(EXAMPLE)
    assert load_calendar_file(path) == parse_calendar(EXAMPLE)


def test_without_activate_at_the_activation_time_is_not_specified_and_without_special_days_none_are_written():
    content = example()
    del content["activate_at"], content["special_day"]
    calendar = parse_calendar(as_toml(content))
    assert passive_attribute_values(calendar)[10] == Data.octet_string(NEVER)
    assert special_days_value(calendar) is None


def test_an_empty_special_day_list_empties_the_table():
    content = example()
    content["special_day"] = []
    calendar = parse_calendar(json.dumps(content))
    assert special_days_value(calendar) == Data.array([])
    assert "special_day = []" in calendar_to_toml(calendar)
    assert parse_calendar(calendar_to_toml(calendar)) == calendar


@pytest.mark.parametrize("written, expected", [
    ("2027-01-01 00:00:00", JANUARY_1_2027),
    ("2027-01-01T00:00", JANUARY_1_2027),
    # an offset is the deviation, minutes local time is behind UTC: +01:00 -> -60 = 0xFFC4
    ("2027-01-01 00:00:00+01:00", JANUARY_1_2027[:9] + bytes([0xFF, 0xC4, 0xFF])),
    ("2027-07-01 13:45:30", bytes([0x07, 0xEB, 7, 1, 0xFF, 13, 45, 30, 0, 0x80, 0x00, 0xFF])),
])
def test_activation_times(written, expected):
    content = example()
    content["activate_at"] = written
    assert passive_attribute_values(parse_calendar(json.dumps(content)))[10] == Data.octet_string(expected)


def test_toml_dates_without_quotes_are_taken_too():
    text = EXAMPLE.replace('activate_at = "2027-01-01 00:00:00"', "activate_at = 2027-01-01 00:00:00") \
                  .replace('date = "2027-03-29"', "date = 2027-03-29")
    assert parse_calendar(text) == parse_calendar(EXAMPLE)


@pytest.mark.parametrize("written, expected", [
    ("*-12-25", EVERY_CHRISTMAS),
    ("12-25", EVERY_CHRISTMAS),
    ("2027-03-29", EASTER_MONDAY_2027),
    ("*-*-01", bytes([0xFF, 0xFF, 0xFF, 1, 0xFF])),        # the first of every month
    ("2028-02-29", bytes([0x07, 0xEC, 2, 29, 0xFF])),
    ("*-02-29", bytes([0xFF, 0xFF, 2, 29, 0xFF])),         # every leap year
    ("hex:07eb0c18ff", bytes([0x07, 0xEB, 12, 24, 0xFF])),
])
def test_special_day_dates(written, expected):
    content = example()
    content["special_day"] = [{"date": written, "day": 2}]
    assert special_days_value(parse_calendar(json.dumps(content))).value[0].value[1] == Data.octet_string(expected)


def test_special_day_indexes_count_from_one_unless_given():
    content = example()
    content["special_day"] = [{"date": "*-01-01", "day": 2}, {"date": "*-01-06", "day": 2, "index": 40},
                              {"date": "*-05-01", "day": 1}]
    indexes = [entry.value[0].value for entry in special_days_value(parse_calendar(json.dumps(content))).value]
    assert indexes == [1, 40, 3]


def test_a_switch_to_another_script_is_written_as_given():
    content = example()
    content["day"][1]["switches"].append({"at": "12:00", "script": "0-0:10.0.1.255", "selector": 1})
    days = passive_attribute_values(parse_calendar(json.dumps(content)))[9]
    assert days.value[1].value[1].value[1] == Data.structure([
        Data.octet_string(at(12, 0)), Data.octet_string(bytes([0, 0, 10, 0, 1, 255])), Data.long_unsigned(1)])


def test_two_hundred_special_days_are_taken():
    content = example()
    content["special_day"] = [{"date": f"{2025 + n // 12}-{n % 12 + 1:02d}-01", "day": 2} for n in range(200)]
    assert len(special_days_value(parse_calendar(json.dumps(content))).value) == 200


def test_the_capacities_checked_are_the_meters():
    from smartmeter.cosem.classes import ic11_special_days_table, ic20_activity_calendar
    from smartmeter.meter import tariff_calendar

    assert (cf.MAX_SEASONS, cf.MAX_WEEKS, cf.MAX_DAYS, cf.MAX_SWITCHES_PER_DAY) == (
        tariff_calendar.MAX_SEASONS, tariff_calendar.MAX_WEEK_PROFILES, tariff_calendar.MAX_DAY_PROFILES,
        tariff_calendar.MAX_SWITCHES_PER_DAY)
    assert cf.MAX_NAME_OCTETS == ic20_activity_calendar.MAX_NAME_OCTETS
    assert cf.QUARTER_HOUR == tariff_calendar.SWITCH_GRID_MINUTES
    assert cf.MAX_SPECIAL_DAYS == ic11_special_days_table.MAX_ENTRIES


# -- every mistake, one line naming its place ----------------------------------------------------

def mutate(change) -> dict:
    content = example()
    change(content)
    return content


def setitem(path: tuple, value):
    def change(content):
        target = content
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return change


def delete(path: tuple):
    def change(content):
        target = content
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
    return change


def switches(*items):
    return setitem(("day", 0, "switches"), list(items))


SW = {"at": "00:00", "tariff": 1}

MISTAKES = [
    # the file as a whole
    (setitem(("seasons",), []), 'unknown key "seasons" (expected name, activate_at, season, week, day, special_day)'),
    (delete(("name",)), "name is missing"),
    (delete(("day",)), "day is missing"),
    (setitem(("season",), []), "season: the file has no season (give at least one [[season]])"),
    (setitem(("name",), 2027), "name: calendar name must be text in quotes, not 2027"),
    (setitem(("name",), "Zählertarif"), 'name: calendar name "Zählertarif" is not printable ASCII '
                                         "(write hex:... for other bytes)"),
    (setitem(("name",), "x" * 33), f'name: calendar name "{"x" * 33}" has 33 characters; the meter takes at most 32'),
    (setitem(("name",), "hex:4g"), 'name: calendar name "hex:4g" is not hex: followed by hex digits'),
    (setitem(("activate_at",), "next monday"), 'activate_at: activate_at "next monday" is not YYYY-MM-DD hh:mm[:ss]'),
    (setitem(("activate_at",), "2027-01-01 00:00:00.5"), 'activate_at: activate_at "2027-01-01 00:00:00.500000": '
                                                          "give whole seconds"),
    (setitem(("activate_at",), 20270101), 'activate_at: activate_at must be a date and time like '
                                          '"2027-01-01 00:00:00", not 20270101'),
    # days and switches
    (switches(SW, {"at": "6:7", "tariff": 2}), 'day 1, switch 2: "6:7" is not hh:mm'),
    (switches(SW, {"at": 6, "tariff": 2}), "day 1, switch 2: 6 is not hh:mm"),
    (switches(SW, {"at": "24:00", "tariff": 2}), 'day 1, switch 2: "24:00" is not a time of day (00:00..23:59)'),
    (switches(SW, {"at": "06:10", "tariff": 2}),
     "day 1, switch 2: 06:10 is not on a quarter hour (:00, :15, :30, :45)"),
    (switches(SW, {"at": "06:00", "tariff": 2}, {"at": "06:00", "tariff": 1}),
     "day 1, switch 3: 06:00 repeats the time of switch 2"),
    (switches(SW, {"at": "22:00", "tariff": 2}, {"at": "06:00", "tariff": 1}),
     "day 1, switch 3: 06:00 comes before switch 2 (22:00); list switches in time order"),
    (switches(SW, {"at": "06:00", "tariff": 3}), "day 1, switch 2: tariff 3 is not 1 or 2"),
    (switches(SW, {"at": "06:00", "tariff": "T2"}), 'day 1, switch 2: tariff "T2" is not 1 or 2'),
    (switches(SW, {"at": "06:00", "tariff": True}), "day 1, switch 2: tariff true is not 1 or 2"),
    (switches(SW, {"at": "06:00"}), "day 1, switch 2: tariff is missing"),
    (switches(SW, {"at": "06:00", "tarif": 2}), 'day 1, switch 2: unknown key "tarif" (expected at, tariff, script, '
                                                "selector)"),
    (switches(SW, {"at": "06:00", "tariff": 2, "selector": 2}),
     "day 1, switch 2: give either tariff or script and selector, not both"),
    (switches(SW, {"at": "06:00", "script": "0-0:10.0.100.255", "selector": 5}),
     "day 1, switch 2: tariff 5 is not 1 or 2"),
    (switches(SW, {"at": "06:00", "script": "tariffs", "selector": 1}),
     'day 1, switch 2: script "tariffs" is not an OBIS code like 0-0:10.0.100.255'),
    (switches(SW, "06:00"), 'day 1, switch 2: must be a table, not "06:00"'),
    (switches(*[{"at": f"{h:02d}:00", "tariff": 1 + h % 2} for h in range(13)]),
     "day 1, switch 13: the meter holds at most 12 switches a day"),
    (switches(), 'day 1: has no switches (give at least one, e.g. { at = "00:00", tariff = 1 })'),
    (setitem(("day", 0, "switches"), "00:00=1"), 'day 1: switches must be a list, not "00:00=1"'),
    (setitem(("day", 1, "id"), 1), "day 2 (id 1): id 1 repeats day 1's"),
    (setitem(("day", 1, "id"), 256), "day 2: id 256 is not 0..255"),
    (setitem(("day", 1, "id"), "2"), 'day 2: id "2" is not a whole number'),
    (delete(("day", 1, "id")), "day 2: id is missing"),
    (setitem(("day",), [{"id": n, "switches": [SW]} for n in range(13)]), "day 13: the meter holds at most 12 days"),
    # weeks
    (setitem(("week", 1, "days"), [1, 1, 1, 1, 1, 1]), 'week 2 ("W2"): days lists 6 day ids, not 7 (Monday..Sunday)'),
    (setitem(("week", 1, "days"), [1, 1, 1, 1, 1, 1, 3]), 'week 2 ("W2"), Sunday: day 3 is not defined (days: 1, 2)'),
    (setitem(("week", 1, "days"), [1, 1, "1", 1, 1, 1, 2]), 'week 2 ("W2"), Wednesday: day "1" is not a whole number'),
    (setitem(("week", 1, "name"), "W1"), "week 2 (\"W1\"): the name repeats week 1's"),
    (setitem(("week", 1, "name"), ""), "week 2: name is empty (seasons refer to weeks by name)"),
    (setitem(("week",), [{"name": f"W{n}", "days": [1] * 7} for n in range(13)]),
     "week 13: the meter holds at most 12 weeks"),
    # seasons
    (setitem(("season", 1, "week"), "W3"), 'season 2 ("winter"): week "W3" is not defined (weeks: "W1", "W2")'),
    (setitem(("season", 1, "start"), "10-1-2027"), 'season 2 ("winter"): start "10-1-2027" is not *-MM-DD or '
                                                    "YYYY-MM-DD"),
    (setitem(("season", 1, "start"), "*-10-01 06:00"), 'season 2 ("winter"): start "*-10-01 06:00" is not *-MM-DD '
                                                        "or YYYY-MM-DD"),
    (setitem(("season", 1, "start"), "*-*-01"), 'season 2 ("winter"): start "*-*-01" is not *-MM-DD or YYYY-MM-DD'),
    (setitem(("season", 1, "start"), "*-13-01"), 'season 2 ("winter"): start "*-13-01": month 13 is not 1..12'),
    (setitem(("season", 1, "start"), "2027-02-29"), 'season 2 ("winter"): start "2027-02-29": day 29 does not exist '
                                                     "in that month"),
    (setitem(("season", 1, "start"), "*-03-01"), 'season 2 ("winter"): start *-03-01 is before season 1\'s '
                                                  "(*-04-01); list seasons in the order of their start"),
    (setitem(("season", 1, "start"), "*-04-01"), 'season 2 ("winter"): start *-04-01 is the same as season 1\'s '
                                                  "(*-04-01); list seasons in the order of their start"),
    (setitem(("season", 1, "start"), "2027-10-01"), 'season 2 ("winter"): start 2027-10-01 is of one year, season '
                                                     "1's is every year; give all seasons a year or none"),
    (setitem(("season", 1, "start"), "hex:ffff0a01"), 'season 2 ("winter"): start "hex:ffff0a01" has 4 bytes, not 12'),
    (setitem(("season", 1, "name"), "summer"), "season 2 (\"summer\"): the name repeats season 1's"),
    (setitem(("season", 1, "weeks"), "W2"), 'season 2: unknown key "weeks" (expected name, start, week)'),
    (setitem(("season", 1), ["winter", "*-10-01", "W2"]), "season 2: must be a table, not a list"),
    (setitem(("season",), [{"name": f"S{n}", "start": f"*-{n + 1:02d}-01", "week": "W1"} for n in range(12)]
              + [{"name": "S12", "start": "*-12-15", "week": "W1"}]), "season 13: the meter holds at most 12 seasons"),
    # special days
    (setitem(("special_day", 0, "day"), 7), "special day 1: day 7 is not defined (days: 1, 2)"),
    (setitem(("special_day", 0, "date"), "25.12."), 'special day 1: date "25.12." is not *-MM-DD or YYYY-MM-DD '
                                                     "(* for any year, month or day)"),
    (setitem(("special_day", 0, "date"), "*-11-31"),
     'special day 1: date "*-11-31": day 31 does not exist in that month'),
    (setitem(("special_day", 0, "date"), "2027-02-29"), 'special day 1: date "2027-02-29": day 29 does not exist in '
                                                         "that month"),
    (setitem(("special_day", 1, "date"), "*-12-25"), "special day 2: date *-12-25 repeats special day 1's"),
    (setitem(("special_day", 1, "index"), 1), "special day 2: index 1 repeats special day 1's"),
    (setitem(("special_day", 1, "index"), 70000), "special day 2: index 70000 is not 0..65535"),
    (setitem(("special_day",), {"date": "*-12-25", "day": 2}), "special_day: special_day must be a list, not a table"),
    (setitem(("special_day",), [{"date": f"{2025 + n // 12}-{n % 12 + 1:02d}-01", "day": 2} for n in range(201)]),
     "special day 201: the meter holds at most 200 special days"),
]


@pytest.mark.parametrize("change, message", MISTAKES)
def test_every_mistake_is_one_line_naming_its_place(change, message):
    content = mutate(change)
    with pytest.raises(CalendarFileError) as raised:
        parse_calendar(json.dumps(content))
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)
    # the same file in TOML says the same
    with pytest.raises(CalendarFileError) as in_toml:
        parse_calendar(as_toml(content))
    assert str(in_toml.value) == message


def test_the_place_and_the_problem_are_there_apart():
    with pytest.raises(CalendarFileError) as raised:
        parse_calendar(json.dumps(mutate(switches(SW, {"at": "6:7", "tariff": 2}))))
    assert (raised.value.place, raised.value.problem) == ("day 1, switch 2", '"6:7" is not hh:mm')


def test_syntax_errors_say_where():
    with pytest.raises(CalendarFileError, match=r"not valid TOML: .*line 2"):
        parse_calendar('name = "x"\nseason = [1,,]\n')
    with pytest.raises(CalendarFileError, match=r"^line 3: not valid JSON"):
        parse_calendar('{\n "name": "x",\n }')


def test_a_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "calendar.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(CalendarFileError, match="not a text file"):
        load_calendar_file(path)


# -- the way back: meter data -> file -> the same data ------------------------------------------

def test_a_file_goes_to_toml_and_json_and_back_unchanged():
    calendar = parse_calendar(EXAMPLE)
    assert parse_calendar(calendar_to_toml(calendar, "a comment\nof two lines")) == calendar
    assert parse_calendar(calendar_to_json(calendar)) == calendar
    # what a person reads: the forms of the example, and every-year starts with "*"
    shown = tomllib.loads(calendar_to_toml(calendar))
    assert shown["season"] == [{"name": "summer", "start": "*-04-01", "week": "W1"},
                               {"name": "winter", "start": "*-10-01", "week": "W2"}]
    assert shown["day"][0]["switches"] == [{"at": "00:00", "tariff": 1}, {"at": "06:00", "tariff": 2},
                                           {"at": "22:00", "tariff": 1}]
    assert shown["special_day"] == [{"date": "*-12-25", "day": 2}, {"date": "2027-03-29", "day": 2}]
    assert shown["activate_at"] == "2027-01-01 00:00:00"
    assert json.loads(calendar_to_json(calendar)) == calendar_to_dict(calendar) == shown


def test_the_passive_attributes_read_back_are_the_file():
    calendar = parse_calendar(EXAMPLE)
    values = passive_attribute_values(calendar)
    back = calendar_from_attributes(values[6], values[7], values[8], values[9], values[10],
                                    special_days_value(calendar))
    assert back == calendar


def test_an_empty_calendar_shows_empty_lists_and_loading_it_says_what_is_missing():
    empty = calendar_from_attributes(Data.octet_string(b""), Data.array([]), Data.array([]), Data.array([]),
                                     Data.octet_string(NEVER))
    text = calendar_to_toml(empty)
    assert tomllib.loads(text) == {"name": "", "season": [], "week": [], "day": []}
    with pytest.raises(CalendarFileError, match=r"^season: the file has no season"):
        parse_calendar(text)


def test_the_active_calendar_has_no_activation_time_in_its_file():
    values = EXPECTED_PASSIVE
    active = calendar_from_attributes(values[6], values[7], values[8], values[9])
    assert "activate_at" not in calendar_to_dict(active)
    assert "special_day" not in calendar_to_dict(active)
    reloaded = parse_calendar(calendar_to_toml(active))
    assert passive_attribute_values(reloaded) == {**EXPECTED_PASSIVE, 10: Data.octet_string(NEVER)}


# Values another head-end may have written: no readable form fits them, so they travel as hex
# or as script/selector - and come back exactly.
ODD_SEASON_START = bytes([0xFF, 0xFF, 4, 1, 3, 0, 0, 0, 0, 0x80, 0x00, 0x00])  # a weekday and clock status 0
ODD_SWITCH_TIME = bytes([6, 0, 0, 0xFF])                                        # hundredths not specified
ODD_ACTIVATION = bytes([0x07, 0xEB, 1, 1, 5, 0, 0, 0, 0, 0x80, 0x00, 0x00])   # with its weekday, status 0
LAST_SUNDAY_OF_MARCH = bytes([0xFF, 0xFF, 3, 0xFE, 7])


def test_values_without_a_readable_form_come_back_exactly():
    name = "Zähler".encode()
    values = {
        "name": Data.octet_string(name),
        "seasons": Data.array([Data.structure([Data.octet_string(b"hex:S"), Data.octet_string(ODD_SEASON_START),
                                               Data.octet_string(b"W\x00")])]),
        "weeks": Data.array([week(b"W\x00", [1, 1, 1, 1, 1, 1, 1])]),
        "days": Data.array([Data.structure([Data.unsigned(1), Data.array([
            Data.structure([Data.octet_string(at(0, 0)), Data.octet_string(TARIFF_TABLE), Data.long_unsigned(1)]),
            Data.structure([Data.octet_string(ODD_SWITCH_TIME), Data.octet_string(TARIFF_TABLE),
                            Data.long_unsigned(2)]),
            Data.structure([Data.octet_string(at(12, 0)), Data.octet_string(bytes([0, 0, 10, 0, 1, 255])),
                            Data.long_unsigned(1)]),
        ])])]),
        "activate_at": Data.octet_string(ODD_ACTIVATION),
        "special_days": Data.array([
            Data.structure([Data.long_unsigned(7), Data.octet_string(LAST_SUNDAY_OF_MARCH), Data.unsigned(1)])]),
    }
    calendar = calendar_from_attributes(**values)
    shown = calendar_to_dict(calendar)
    assert shown["name"] == "hex:" + name.hex()
    assert shown["season"] == [{"name": "hex:" + b"hex:S".hex(), "start": "hex:" + ODD_SEASON_START.hex(),
                                "week": "hex:5700"}]
    assert shown["day"][0]["switches"] == [
        {"at": "00:00", "tariff": 1}, {"at": "hex:060000ff", "tariff": 2},
        {"at": "12:00", "script": "0-0:10.0.1.255", "selector": 1}]
    assert shown["activate_at"] == "hex:" + ODD_ACTIVATION.hex()
    assert shown["special_day"] == [{"date": "hex:" + LAST_SUNDAY_OF_MARCH.hex(), "day": 1, "index": 7}]
    for text in (calendar_to_toml(calendar), calendar_to_json(calendar)):
        assert parse_calendar(text) == calendar
    reloaded = parse_calendar(calendar_to_toml(calendar))
    written = passive_attribute_values(reloaded)
    assert [written[n] for n in (6, 7, 8, 9, 10)] == [values[k] for k in ("name", "seasons", "weeks", "days",
                                                                          "activate_at")]
    assert special_days_value(reloaded) == values["special_days"]


def test_a_time_with_an_offset_comes_back_with_it():
    values = dict(EXPECTED_PASSIVE)
    values[10] = Data.octet_string(JANUARY_1_2027[:9] + bytes([0xFF, 0x88, 0xFF]))  # deviation -120: UTC+2
    calendar = calendar_from_attributes(*(values[n] for n in (6, 7, 8, 9, 10)))
    assert calendar_to_dict(calendar)["activate_at"] == "2027-01-01 00:00:00+02:00"
    assert passive_attribute_values(parse_calendar(calendar_to_toml(calendar)))[10] == values[10]


@pytest.mark.parametrize("attribute, value, message", [
    ("seasons", Data.octet_string(b""), "season_profile is not an array"),
    ("seasons", Data.array([Data.structure([Data.octet_string(b"S")])]), "season_profile element 1 is not a structure "
                                                                         "of 3 fields"),
    ("weeks", Data.array([Data.structure([Data.octet_string(b"W"), *[Data.long_unsigned(1)] * 7])]),
     "week_profile_table element 1, field 2 is long_unsigned, not unsigned"),
    ("days", Data.array([Data.structure([Data.unsigned(1), Data.array([Data.null()])])]),
     "day_profile_table element 1, action 1 is not a structure of 3 fields"),
    ("name", Data.visible_string("x"), "calendar_name is not an octet-string"),
])
def test_meter_data_of_another_shape_is_a_typed_error(attribute, value, message):
    values = {"name": EXPECTED_PASSIVE[6], "seasons": EXPECTED_PASSIVE[7], "weeks": EXPECTED_PASSIVE[8],
              "days": EXPECTED_PASSIVE[9], attribute: value}
    with pytest.raises(CalendarDataError) as raised:
        calendar_from_attributes(**values)
    assert str(raised.value) == message


def test_a_calendar_holds_bytes_as_the_meter_does():
    calendar = parse_calendar(EXAMPLE)
    assert isinstance(calendar, Calendar)
    assert calendar.seasons[1].start == EVERY_OCTOBER_1
    assert [s.tariff for s in calendar.days[0].switches] == [1, 2, 1]
    assert calendar.activate_at == JANUARY_1_2027
