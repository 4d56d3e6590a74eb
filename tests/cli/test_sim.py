"""`smartmeter sim` and `meter run --speed` as a user runs them: a real meter process on a clock
96 times faster than real time (a day in 15 minutes), changed through its control channel."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest

from meterproc import start_meter
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import LinkError, WrapperLink

SPEED = 96
START = "2026-03-28T22:00"  # meter local time, the evening before the spring DST change
DIFFERENT_CLOCK_BASE = 0x04


def sim(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "smartmeter", "sim", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def status(data_dir) -> dict:
    result = sim(data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read(meter, *targets):
    async def go():
        async with MeterClient(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)) as client:
            return [await client.get(obis, attr, class_id=cid) for cid, obis, attr in targets]

    return asyncio.run(go())


@pytest.fixture(scope="module")
def fast_meter(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("fast") / "meter"
    meter = start_meter(data_dir, "--speed", str(SPEED), "--start-time", START)
    yield meter
    meter.stop()


def _wait(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_a_fast_meter_registers_a_set_load_exactly(fast_meter):
    result = sim(fast_meter.data_dir, "load", "--power", "2000")
    assert result.returncode == 0, result.stderr
    set_at = status(fast_meter.data_dir)["clock"]["utc"]
    # two whole 15-minute periods under the load: each adds 2000 W x 0.25 h = 500 Wh (whole Wh)
    def two_periods_under_load():  # entries (time, status, +A, ...) of periods that began after the change
        rows = [r for r in fast_meter.profile_rows() if r[0] >= set_at + 2 * 900]
        return rows[:2] if len(rows) >= 2 else None

    rows = _wait(two_periods_under_load, timeout=120)
    before = next(r for r in fast_meter.profile_rows() if r[0] == rows[0][0] - 900)
    assert [rows[0][2] - before[2], rows[1][2] - rows[0][2]] == [500, 500]
    assert [r[0] % 900 for r in rows] == [0, 0]


def test_a_fast_meter_says_its_clock_is_not_real_time(fast_meter):
    (clock,) = read(fast_meter, (8, "0-0:1.0.0.255", 2))
    assert clock.value[11] & DIFFERENT_CLOCK_BASE  # the status octet of the date-time
    (base,) = read(fast_meter, (8, "0-0:1.0.0.255", 9))
    assert base.value == 0  # not defined: no physical clock base
    # the meter's time is far from the wall clock: the simulated night of 28 March 2026
    local = dt.datetime.fromtimestamp(status(fast_meter.data_dir)["clock"]["utc"], ZoneInfo("Europe/Berlin"))
    assert local.date() in (dt.date(2026, 3, 28), dt.date(2026, 3, 29))
    ident = subprocess.run([sys.executable, "-m", "smartmeter", "id", "--data-dir", str(fast_meter.data_dir)],
                           capture_output=True, text=True, timeout=120)
    assert "SIMULATED" in ident.stdout and f"{SPEED}x" in ident.stdout


def test_the_control_channel_is_the_owners_only(fast_meter):
    mode = stat.S_IMODE(os.stat(fast_meter.data_dir / "control.sock").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(fast_meter.data_dir).st_mode) == 0o700


@pytest.mark.parametrize("args", [("door", "open"), ("cover", "ajar"), ("voltage", "L1", "500"), ("voltage", "L2", "230"),
                                  ("button", "Z"), ("load", "--power", "lots")])
def test_a_wrong_sim_input_is_one_line_and_exit_2_and_changes_nothing(fast_meter, args):
    before = status(fast_meter.data_dir)["world"]
    result = sim(fast_meter.data_dir, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert status(fast_meter.data_dir)["world"] == before


def test_sim_without_a_running_meter_says_so(tmp_path):
    result = sim(tmp_path / "nothing-here", "status")
    assert result.returncode == 2
    assert "no meter is running" in result.stderr


def test_supply_off_stops_communication_until_supply_on(fast_meter):
    failures = status(fast_meter.data_dir)["registers"]["power failures"]
    assert sim(fast_meter.data_dir, "supply", "off").returncode == 0
    assert status(fast_meter.data_dir)["powered"] is False
    with pytest.raises(LinkError, match="Connection refused|Connect call failed"):
        read(fast_meter, (1, "0-0:96.7.21.255", 2))
    time.sleep(2)  # about 3 simulated minutes: a long power failure at 96x
    assert sim(fast_meter.data_dir, "supply", "on").returncode == 0
    (count,) = _wait(lambda: _try_read(fast_meter, (1, "0-0:96.7.21.255", 2)))
    assert count.value == failures + 1


def _try_read(meter, target):
    try:
        return read(meter, target)
    except LinkError:
        return None
