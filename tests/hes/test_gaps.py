"""`smartmeter hes gaps`: missing intervals, off-grid and overlapping rows, clock jumps.

The store is filled by export_scenario.py; the findings expected are read off what it wrote."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from click.testing import CliRunner

import export_scenario as sc
from smartmeter.cli.main import main
from smartmeter.hes.gaps import Finding, GapReport, find_gaps
from smartmeter.hes.store.pg import FleetStore


@pytest.fixture
def fleet_dsn(pg_dsn) -> str:
    sc.setup(pg_dsn)
    return pg_dsn


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _gaps(dsn: str, *args: str) -> tuple[list[dict], dict]:
    result = CliRunner().invoke(main, ["hes", "gaps", "--db", dsn, "--from", sc.DAY.isoformat(), "--to",
                                       sc.NEXT_DAY.isoformat(), "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output  # findings are data, not errors
    lines = [json.loads(line) for line in result.output.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def _day_intervals(start: dt.datetime, last: dt.datetime) -> int:
    return len(sc.grid(start, last))


def test_each_injected_fault_is_found_once_and_nothing_else(fleet_dsn):
    findings, summary = _gaps(fleet_dsn)
    got = sorted((f["meter"], f["kind"], f["time"], f["last"], f["count"]) for f in findings)
    last_grid_time = sc.NEXT_DAY - sc.PERIOD
    trailing_start = sc.M2_LAST + sc.PERIOD
    expected = sorted([
        ("M-0002", "missing", _z(sc.M2_MISSING), _z(sc.M2_MISSING), 1),
        ("M-0002", "clock_adjusted", _z(sc.M2_ADJUSTED), None, 1),
        # the off-grid row has the clock-adjusted bit too, and shares 13:15's interval
        ("M-0002", "off_grid", _z(sc.M2_OFF_GRID), None, 1),
        ("M-0002", "clock_adjusted", _z(sc.M2_OFF_GRID), None, 1),
        ("M-0002", "overlap", _z(sc.DAY + dt.timedelta(hours=13, minutes=15)), None, 2),
        ("M-0002", "clock_drift", _z(sc.M2_DRIFT_TIME), None, 1),
        ("M-0002", "missing", _z(trailing_start), _z(last_grid_time), _day_intervals(trailing_start, last_grid_time)),
        ("M-0003", "missing", _z(sc.DAY), _z(last_grid_time), 96),
    ])
    assert got == expected
    drift = next(f for f in findings if f["kind"] == "clock_drift")
    assert drift["drift_s"] == 90
    assert summary["meters"] == 3 and summary["meters_with_findings"] == 2
    assert summary["missing_intervals"] == 1 + 15 + 96
    assert (summary["missing"], summary["off_grid"], summary["overlap"], summary["clock_adjusted"],
            summary["clock_invalid"], summary["clock_drift"]) == (3, 1, 1, 2, 0, 1)


def test_text_output_is_one_line_per_finding_and_a_summary(fleet_dsn):
    result = CliRunner().invoke(main, ["hes", "gaps", "--db", fleet_dsn, "--from", sc.DAY.isoformat(), "--to",
                                       sc.NEXT_DAY.isoformat(), "--meter", "M-0002"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 7 + 1
    assert lines[0].startswith("M-0002  clock_drift") and "90 s behind" in lines[0]
    assert "1 meters" in lines[-1] and "16 missing intervals in 2 gaps" in lines[-1]


def test_the_drift_threshold_and_the_meter_and_cell_selection(fleet_dsn):
    findings, _ = _gaps(fleet_dsn, "--max-drift", "5", "--meter", "M-0002")
    drifts = sorted(f["time"] for f in findings if f["kind"] == "clock_drift")
    assert drifts == [_z(sc.M2_DRIFT_TIME), _z(sc.M2_CLOSE_TIME)]  # 90 s and 10 s both above 5 s

    findings, summary = _gaps(fleet_dsn, "--cell", "north")
    assert findings == [] and summary["meters"] == 1  # M-0001: complete, on the grid, clocks right

    findings, summary = _gaps(fleet_dsn, "--meter", "M-0003", "--meter", "M-0001")
    assert [(f["meter"], f["count"]) for f in findings] == [("M-0003", 96)]


def _hour_slot(t: dt.datetime) -> dt.datetime:
    """The hour that ends the hourly interval a row at t belongs to."""
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + dt.timedelta(hours=1)


def test_a_longer_period_puts_the_quarter_hour_rows_off_its_grid(fleet_dsn):
    findings, _ = _gaps(fleet_dsn, "--period", "3600", "--meter", "M-0001", "--meter", "M-0002")
    for meter, rows in (("M-0001", [t for t, _, _ in sc.m1_rows()]), ("M-0002", [t for t, _, _ in sc.m2_rows()])):
        day = [t for t in rows if sc.DAY <= t < sc.NEXT_DAY]
        mine = [f for f in findings if f["meter"] == meter]
        assert sorted(f["time"] for f in mine if f["kind"] == "off_grid") == sorted(_z(t) for t in day if t.minute)
        slots: dict[dt.datetime, int] = {}
        for t in day:
            slots[_hour_slot(t)] = slots.get(_hour_slot(t), 0) + 1
        assert sorted((f["time"], f["count"]) for f in mine if f["kind"] == "overlap") == sorted(
            (_z(slot), n) for slot, n in slots.items() if n > 1)
        hours = [sc.DAY + dt.timedelta(hours=h) for h in range(24)]
        missing_hours = [h for h in hours if h not in day]
        missing = [(f["time"], f["count"]) for f in mine if f["kind"] == "missing"]
        assert sum(n for _, n in missing) == len(missing_hours)
    # M-0001 has a row every hour; M-0002 none after 20:00
    assert [(f["time"], f["count"]) for f in findings if f["kind"] == "missing"] == [
        (_z(sc.DAY + dt.timedelta(hours=21)), 3)]


def test_nothing_is_expected_after_now(fleet_dsn):
    now = sc.DAY + dt.timedelta(hours=12)

    async def run() -> list[Finding | GapReport]:
        store = await FleetStore.open(fleet_dsn)
        try:
            return [item async for item in find_gaps(store.pool, start=sc.DAY, end=sc.NEXT_DAY, serials=["M-0003"],
                                                     now=now)]
        finally:
            await store.close()

    *findings, report = asyncio.run(run())
    assert [(f.kind, f.time, f.last, f.count) for f in findings] == [
        ("missing", sc.DAY, now - sc.PERIOD, 48)]
    assert report.missing_intervals == 48
