"""`smartmeter client billing`, `billing-reset` and `calendar show/load` as a user runs them,
against a real meter process: a calendar file loaded shows back equal, activated it is the
active calendar, a remote end of billing period appears in the billing table with counter 1
and a second one at once meets the 15-minute reset lock."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib

import pytest

from meterproc import free_port, start_meter
from smartmeter.hes.calendar_file import calendar_to_dict, parse_calendar

# A calendar unlike the meter's default: summer and winter, weekends all T1, switches at quarter
# hours, a special day of every year and one of a given year.
CALENDAR = """\
# written by hand
name = "TEST-2027"
activate_at = "2030-01-01 00:00:00"

[[season]]
name = "summer"
start = "*-04-01"
week = "WS"

[[season]]
name = "winter"
start = "10-01"
week = "WW"

[[week]]
name = "WS"
days = [1, 1, 1, 1, 1, 2, 2]

[[week]]
name = "WW"
days = [3, 3, 3, 3, 3, 2, 2]

[[day]]
id = 1
switches = [{ at = "00:00", tariff = 1 }, { at = "06:15", tariff = 2 }, { at = "21:45", tariff = 1 }]

[[day]]
id = 2
switches = [{ at = "00:00", tariff = 1 }]

[[day]]
id = 3
switches = [{ at = "00:00", tariff = 1 }, { at = "07:00", tariff = 2 }, { at = "12:00", tariff = 1 },
            { at = "13:00", tariff = 2 }, { at = "20:30", tariff = 1 }]

[[special_day]]
date = "*-12-25"
day = 2

[[special_day]]
date = "2027-03-29"
day = 2
"""


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    """A meter of its own: these tests end billing periods and change its calendar."""
    m = start_meter(tmp_path_factory.mktemp("billing") / "meter")
    yield m
    m.stop()


def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=120)


def as_public(meter, *args: str) -> subprocess.CompletedProcess:
    return smartmeter("client", "--port", str(meter.wrapper_port), *args)


def as_management(meter, *args: str) -> subprocess.CompletedProcess:
    credentials = meter.data_dir / "credentials" / "management.json"
    return smartmeter("client", "--port", str(meter.wrapper_port), "--credentials", str(credentials), *args)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def without_activation(content: dict) -> dict:
    return {k: v for k, v in content.items() if k != "activate_at"}


@pytest.mark.parametrize("command", [["billing"], ["billing-reset"], ["calendar"], ["calendar", "show"],
                                     ["calendar", "load"]])
def test_every_new_command_has_help(command):
    result = smartmeter("client", *command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_a_file_with_a_mistake_is_refused_before_the_meter_is_asked(tmp_path):
    path = tmp_path / "calendar.toml"
    path.write_text(CALENDAR.replace('at = "06:15"', 'at = "6:7"'))
    # no meter listens on this port: the file is checked first
    result = smartmeter("client", "--port", str(free_port()), "--timeout", "2", "calendar", "load", str(path))
    line = one_error_line(result)
    assert line.startswith(f'error: {path}: day 1, switch 2: "6:7" is not hh:mm')
    assert "nothing was sent to the meter" in line
    assert result.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["billing", "--entries", "1-4"], "error: --entries '1-4' is not FIRST:LAST"),
    (["billing", "--entries", "1:2", "--from", "2027-01-01"], "error: --entries and --from/--to exclude each other"),
    (["billing", "--from", "yesterday"], "error: --from 'yesterday' is not an ISO date or date-time"),
])
def test_bad_billing_options_are_one_line_before_the_meter_is_asked(args, message):
    line = one_error_line(smartmeter("client", "--port", str(free_port()), "--timeout", "2", *args))
    assert line.startswith(message) and "(hint: " in line, line


def test_show_prints_the_active_calendar_as_a_file_that_loads(meter):
    result = as_management(meter, "calendar", "show")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# active calendar: 0-0:13.0.0.255 attributes 2..5")
    calendar = parse_calendar(result.stdout)  # what show prints is a valid calendar file
    shown = calendar_to_dict(calendar)
    assert "activate_at" not in shown
    # the companion's tariff example (§5.5 table 22): T1 from 22:00 to 06:00, T2 from 06:00 to 22:00
    assert [{"at": "00:00", "tariff": 1}, {"at": "06:00", "tariff": 2}, {"at": "22:00", "tariff": 1}] in [
        day["switches"] for day in shown["day"]]
    # the special days (Austrian holidays by default) come along; JSON says the same
    assert shown["special_day"]
    as_json = as_management(meter, "calendar", "show", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == shown
    # before a head-end writes one, the passive calendar is empty: shown as empty lists
    passive = as_management(meter, "calendar", "show", "--passive")
    assert passive.returncode == 0, passive.stderr
    content = tomllib.loads(passive.stdout)
    assert (content["name"], content["season"], content["week"], content["day"]) == ("", [], [], [])
    assert "activate_at" not in content  # not specified


def test_a_loaded_file_shows_back_equal_and_activated_it_is_the_active_calendar(meter, tmp_path):
    path = tmp_path / "calendar.toml"
    path.write_text(CALENDAR)
    loaded = as_management(meter, "calendar", "load", str(path))
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [f"0-0:13.0.0.255:{n}" for n in (6, 7, 8, 9, 10)] + [
        "0-0:11.0.0.255:2"]
    assert lines[0] == 'wrote 0-0:13.0.0.255:6 calendar_name_passive: "TEST-2027"'
    assert lines[4] == "wrote 0-0:13.0.0.255:10 activate_passive_calendar_time: 2030-01-01 00:00:00"
    assert lines[5] == "wrote 0-0:11.0.0.255:2 entries: 2 special day(s)"

    written = parse_calendar(CALENDAR)
    passive = as_management(meter, "calendar", "show", "--passive")
    assert passive.returncode == 0, passive.stderr
    assert parse_calendar(passive.stdout) == written
    active = as_management(meter, "calendar", "show")
    assert calendar_to_dict(parse_calendar(active.stdout))["name"] != "TEST-2027"  # not active yet

    # the same file activated now: the active calendar is the file (which has no activation time)
    json_path = tmp_path / "calendar.json"
    json_path.write_text(json.dumps(tomllib.loads(CALENDAR)))
    activated = as_management(meter, "calendar", "load", str(json_path), "--activate-now")
    assert activated.returncode == 0, activated.stderr
    assert ("executed 0-0:13.0.0.255 method 1 activate_passive_calendar: the calendar is active"
            in activated.stdout.splitlines())
    active = as_management(meter, "calendar", "show", "--active")
    assert active.returncode == 0, active.stderr
    assert without_activation(calendar_to_dict(parse_calendar(active.stdout))) == \
        without_activation(calendar_to_dict(written))


def test_a_refusal_by_the_meter_is_one_line_with_the_result_and_the_attribute(meter, tmp_path):
    # selector 9 of the billing script table does not exist: only the meter knows that
    path = tmp_path / "calendar.toml"
    path.write_text(CALENDAR.replace('{ at = "12:00", tariff = 1 }',
                                     '{ at = "12:00", script = "0-0:10.0.1.255", selector = 9 }'))
    result = as_management(meter, "calendar", "load", str(path))
    line = one_error_line(result)
    assert line.startswith("error: refused: 0-0:13.0.0.255:9 day_profile_table_passive: other-reason"), line
    assert [line.split()[1] for line in result.stdout.splitlines()] == [f"0-0:13.0.0.255:{n}" for n in (6, 7, 8)]
    # the public client may not write the calendar
    path.write_text(CALENDAR)
    line = one_error_line(as_public(meter, "calendar", "load", str(path)))
    assert line.startswith("error: refused: 0-0:13.0.0.255:6 calendar_name_passive: "), line
    assert any(result in line for result in ("read-write-denied", "object-undefined"))


def register_wh(meter, obis: str) -> int:
    result = as_public(meter, "--json", "get", obis)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["value"]


def test_a_billing_reset_shows_in_the_billing_table_and_a_second_meets_the_reset_lock(meter, tmp_path):
    before = register_wh(meter, "1-0:1.8.0.255")
    reset = as_management(meter, "billing-reset")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout == "billing period ended; billing period counter 1\n"
    after = register_wh(meter, "1-0:1.8.0.255")

    table = as_management(meter, "billing")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[-1] == "1 billing period"
    first = lines[1].split()
    assert first[0] == "1" and first[3:5] == ["+A", "Wh"]  # counter, captured (2 fields), energy
    assert before <= int(first[5]) <= after  # +A total as captured at the reset

    out = tmp_path / "billing.csv"
    as_csv = as_management(meter, "billing", "--entries", "1:0", "--csv", str(out))
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout == f"1 billing period written to {out}\n"
    rows = list(csv.DictReader(out.open()))
    assert [row["counter"] for row in rows] == ["1"]
    assert int(rows[0]["+A total Wh"]) == int(first[5])
    as_json = as_management(meter, "--json", "billing", "--from", "2000-01-01")
    assert [period["counter"] for period in json.loads(as_json.stdout)] == [1]

    again = as_management(meter, "billing-reset")
    line = one_error_line(again)
    assert line.startswith("error: refused: the 15-minute reset lock is running"), line
    assert again.stdout == ""
    table = as_management(meter, "billing")
    assert table.stdout.splitlines()[-1] == "1 billing period"  # the refused reset captured nothing


def test_the_public_client_may_not_end_a_billing_period_nor_read_the_calendar(meter):
    line = one_error_line(as_public(meter, "billing-reset"))
    assert line.startswith("error: refused: 0-0:10.0.1.255 script 1: "), line
    line = one_error_line(as_public(meter, "calendar", "show"))
    assert line.startswith("error: refused: 0-0:13.0.0.255:2: "), line
    assert "--credentials" in line
