"""Power quality and the readout profile as a user reaches them with the command line, against a
real meter process on a 10x clock: `smartmeter sim voltage` makes a sag, `client profile` shows
it in the power quality log and `client get` counts it; `client set` changes measurement period 3
(and a 7-minute one is one error line); `client capture` takes a readout snapshot."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from meterproc import free_port, start_meter

SAG_L1, NORMAL_L1 = 76, 85


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("pq") / "meter", "--speed", "10")
    yield m
    m.stop()


def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=120)


def as_management(meter, *args: str) -> subprocess.CompletedProcess:
    credentials = meter.data_dir / "credentials" / "management.json"
    return smartmeter("client", "--port", str(meter.wrapper_port), "--credentials", str(credentials), "--json", *args)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def test_a_sag_made_with_sim_is_in_the_log_and_counted(meter):
    ok(smartmeter("sim", "voltage", "L1", "184", "--data-dir", str(meter.data_dir)))
    time.sleep(1.0)  # 10 s of meter time: over the 1 s time threshold
    ok(smartmeter("sim", "voltage", "L1", "230", "--data-dir", str(meter.data_dir)))
    deadline = time.monotonic() + 20
    while True:  # back for 5 s of meter time: the sag has ended
        rows = json.loads(ok(as_management(meter, "profile", "0-0:99.98.4.255")))["rows"]
        codes = [row[1] for row in rows]
        if NORMAL_L1 in codes or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert codes == [SAG_L1, NORMAL_L1]
    assert json.loads(ok(as_management(meter, "get", "1-0:32.32.0.255")))["value"] == 1
    magnitude = json.loads(ok(as_management(meter, "get", "1-0:32.34.0.255")))
    assert (magnitude["value"], magnitude["scaler"], magnitude["unit"]) == (1840, -1, "V")


def test_set_changes_measurement_period_3_and_the_profile_follows(meter):
    assert json.loads(ok(as_management(meter, "set", "1-0:0.8.2.255", "double-long-unsigned:300")))["attribute"] == 2
    assert json.loads(ok(as_management(meter, "get", "1-0:99.14.0.255:4")))["value"] == 300


def test_a_capture_period_of_7_minutes_is_one_error_line_and_changes_nothing(meter):
    before = json.loads(ok(as_management(meter, "get", "1-0:0.8.2.255")))["value"]
    result = as_management(meter, "set", "1-0:99.14.0.255:4", "double-long-unsigned:420")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused: 1-0:99.14.0.255:4: other-reason"), lines
    assert json.loads(ok(as_management(meter, "get", "1-0:0.8.2.255")))["value"] == before


@pytest.mark.parametrize("value, message", [
    ("207", "error: '207' is not a typed value"),
    ("long-unsigned:70000", "error: 70000 is outside long-unsigned (0..65535)"),
    ("boolean:yes", "error: a boolean is true or false, not 'yes'"),
])
def test_a_bad_value_is_refused_before_the_meter_is_asked(value, message):
    result = smartmeter("client", "--port", str(free_port()), "--timeout", "2", "set", "1-0:12.31.0.255", value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_capture_takes_a_readout_snapshot(meter):
    assert json.loads(ok(as_management(meter, "capture", "0-0:21.0.5.255"))) == {"captured": "0-0:21.0.5.255"}
    rows = json.loads(ok(as_management(meter, "profile", "0-0:21.0.5.255")))["rows"]
    assert len(rows) == 1
