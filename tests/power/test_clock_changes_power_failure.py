"""Clock changes on a real meter, over DLMS, across a power failure (kill -9 of the process group).

A management client moves the meter's clock forward by days and back again, each time to a
few seconds before a quarter-hour boundary so that the next capture comes within seconds of
real time. The stored profile is then checked entry by entry against the scenario, the
meter is killed, and after the restart the time base, the profile and the logs are as they
were: nothing invented, nothing suppressed, every change recorded with its old and new time.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.hes.resync import resynchronise

from tests.meterproc import start_meter

PERIOD = 900
CAD = 0x20
ZONE = ZoneInfo("Europe/Berlin")
EVENT_TIME_CHANGED = 213


def _local_setting(utc: float) -> Data:
    """attribute 2 as the companion standard asks for it: local time, deviation and status not specified."""
    t = dt.datetime.fromtimestamp(utc, ZONE)
    return Data.octet_string(axdr.encode_date_time(CosemDateTime(
        CosemDate(t.year, t.month, t.day, None), CosemTime(t.hour, t.minute, t.second, None), None, None)))


async def _with_management(meter, action):
    creds = load_credentials(meter.data_dir / "credentials" / "management.json")
    link = WrapperLink("127.0.0.1", meter.wrapper_port, creds.client_sap, creds.server_sap, 10)
    async with MeterClient(link, security=creds.security) as client:
        return await action(client)


def _resynchronise(meter) -> None:
    """What a head-end does after the meter's power failure: continue above its frame counter."""
    creds = load_credentials(meter.data_dir / "credentials" / "management.json")
    asyncio.run(resynchronise(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10), creds))


def _meter_time(meter) -> float:
    async def read(client):
        raw = (await client.get("0-0:1.0.0.255", 2, class_id=8)).value
        return axdr.decode_date_time(raw).to_datetime().timestamp()
    return asyncio.run(_with_management(meter, read))


def _set_time(meter, utc: float) -> None:
    asyncio.run(_with_management(meter, lambda c: c.set("0-0:1.0.0.255", 2, _local_setting(utc), class_id=8)))


def _time_events(meter) -> list[tuple[int, int]]:
    with meter.store() as db:
        rows = db.execute("SELECT payload FROM chain_entry WHERE tbl = 'metrological' ORDER BY seq").fetchall()
    out = []
    for (payload,) in rows:
        try:
            entry = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            continue
        fields = entry.get("fields", entry) if isinstance(entry, dict) else {}
        if isinstance(fields, dict) and "old_time" in fields and "new_time" in fields:
            out.append((fields["old_time"], fields["new_time"]))
    return out


def _wait_for_entry(meter, capture_time: int, timeout: float = 20.0) -> tuple:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in meter.profile_rows():
            if row[0] == capture_time:
                return row
        time.sleep(0.25)
    raise AssertionError(f"no entry at {capture_time} within {timeout} s: {meter.profile_rows()[-3:]}")


@pytest.mark.welmec("L1", "L7", "I3-2")
def test_clock_jumps_and_a_power_failure_keep_the_profile_true(tmp_path):
    """Clock set forward two days and back one over DLMS, with a kill -9 between: no entries for skipped periods, captures go on after the backward jump with CAD, the set time survives, both changes are in the metrological log with old and new time, and verify-log/verify-storage pass."""
    meter = start_meter(tmp_path)
    try:
        history = meter.profile_rows()
        assert history, "the meter back-fills a history on first start"
        now = _meter_time(meter)

        # forward by two days, to 4 s before a boundary
        forward_boundary = int((now + 2 * 86400) // PERIOD + 1) * PERIOD
        _set_time(meter, forward_boundary - 4)
        row = _wait_for_entry(meter, forward_boundary)
        assert row[1] & CAD
        rows = meter.profile_rows()
        assert rows[:len(history)] == history
        new = rows[len(history):]
        skipped = [r for r in new if history[-1][0] + PERIOD <= r[0] < forward_boundary]
        assert len(skipped) <= 1 and all(r[0] <= now + PERIOD for r in skipped), \
            f"no entries for the two skipped days: {skipped}"

        meter.power_failure()
        meter = start_meter(tmp_path)
        _resynchronise(meter)
        after_restart = _meter_time(meter)
        assert forward_boundary <= after_restart < forward_boundary + 60, "the set time survives the power failure"
        assert meter.profile_rows()[:len(rows)] == rows

        # back by one day: captures go on at the boundaries of the new time
        back_boundary = int((after_restart - 86400) // PERIOD + 1) * PERIOD
        _set_time(meter, back_boundary - 4)
        row = _wait_for_entry(meter, back_boundary)
        assert row[1] & CAD
        assert meter.profile_rows()[-1][0] == back_boundary, "the entry is appended although its time is earlier"

        events = _time_events(meter)
        assert len(events) == 2
        (old1, new1), (old2, new2) = events
        assert abs(old1 - now) < 30 and new1 == forward_boundary - 4
        assert abs(old2 - after_restart) < 30 and new2 == back_boundary - 4
    finally:
        meter.stop()
    for command in ("verify-log", "verify-storage"):
        result = subprocess.run([sys.executable, "-m", "smartmeter", command, str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.welmec()
def test_the_command_line_client_continues_after_a_power_failure(tmp_path):
    """After a kill -9 the meter refuses counters up to its reserved block; `smartmeter client` reads
    the frame counter, continues above it and answers, saying so in one line on stderr."""
    meter = start_meter(tmp_path)
    creds = str(tmp_path / "credentials" / "management.json")
    def command():
        return [sys.executable, "-m", "smartmeter", "client", "--port", str(meter.wrapper_port),
                "--credentials", creds, "get", "1-0:1.8.0.255"]
    try:
        first = subprocess.run(command(), capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        meter.power_failure()
        meter = start_meter(tmp_path)
        again = subprocess.run(command(), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "1-0:1.8.0.255" in again.stdout and "Wh" in again.stdout
        assert "continuing above it" in again.stderr and "Traceback" not in again.stderr
        third = subprocess.run(command(), capture_output=True, text=True, timeout=60)
        assert third.returncode == 0 and third.stderr == "", "once resynchronised, no further note"
    finally:
        meter.stop()
