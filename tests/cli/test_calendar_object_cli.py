"""`smartmeter client calendar load/show --object disconnect|relay` against a real meter process:
a disconnect control calendar file (switches naming scripts 3 and 4 of the disconnect control
script table) is written into 0-0:13.0.1.255 and shows back equal, the tariff calendar staying
as it was; a file naming script 1 is refused by the meter with other-reason."""
from __future__ import annotations

import subprocess
import sys

import pytest

from meterproc import start_meter
from smartmeter.hes.calendar_file import calendar_to_dict, parse_calendar


def program(table: str, off: int = 3) -> str:
    """Off at 08:00 and on at 18:00 on workdays, on all weekend; Christmas on all day."""
    return f"""\
name = "TIMER"

[[season]]
name = "all year"
start = "*-01-01"
week = "W"

[[week]]
name = "W"
days = [1, 1, 1, 1, 1, 2, 2]

[[day]]
id = 1
switches = [{{ at = "08:00", script = "{table}", selector = {off} }},
            {{ at = "18:00", script = "{table}", selector = 4 }}]

[[day]]
id = 2
switches = [{{ at = "00:00", script = "{table}", selector = 4 }}]

[[special_day]]
date = "*-12-25"
day = 2
"""


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("calendar-object") / "meter")
    yield m
    m.stop()


def as_management(meter, *args: str) -> subprocess.CompletedProcess:
    credentials = meter.data_dir / "credentials" / "management.json"
    return subprocess.run([sys.executable, "-m", "smartmeter", "client", "--port", str(meter.wrapper_port),
                           "--credentials", str(credentials), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("which, calendar, special_days, table", [
    ("disconnect", "0-0:13.0.1.255", "0-0:11.0.1.255", "0-0:10.0.106.255"),
    ("relay", "0-0:13.0.2.255", "0-0:11.0.2.255", "0-0:10.0.103.255"),
])
def test_a_switching_program_file_goes_into_the_calendar_the_option_names(meter, tmp_path, which, calendar,
                                                                          special_days, table):
    tariff_before = as_management(meter, "calendar", "show").stdout
    path = tmp_path / f"{which}.toml"
    path.write_text(program(table))
    loaded = as_management(meter, "calendar", "load", "--object", which, "--activate-now", str(path))
    assert loaded.returncode == 0, loaded.stderr
    assert [line.split()[1] for line in loaded.stdout.splitlines()] == \
        [f"{calendar}:{n}" for n in (6, 7, 8, 9, 10)] + [calendar, f"{special_days}:2"]
    shown = as_management(meter, "calendar", "show", "--object", which)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"# active calendar: {calendar} attributes 2..5; special days: {special_days}")
    written = calendar_to_dict(parse_calendar(program(table)))
    assert {k: v for k, v in calendar_to_dict(parse_calendar(shown.stdout)).items() if k != "activate_at"} == written
    assert as_management(meter, "calendar", "show").stdout == tariff_before  # the tariff calendar: untouched


def test_a_program_naming_script_1_is_refused_by_the_meter(meter, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(program("0-0:10.0.106.255", off=1))
    result = as_management(meter, "calendar", "load", "--object", "disconnect", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: refused: 0-0:13.0.1.255:9 day_profile_table_passive: other-reason"), \
        result.stderr
