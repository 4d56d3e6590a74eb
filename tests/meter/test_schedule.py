"""The §5.4.1 scheduling rule, table-driven: expectations are UTC instants written out by hand
from the local times of each scenario (Europe/Berlin: CET = UTC+1, CEST = UTC+2)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.meter.schedule import ExecutionTime, Passage, due, instants

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


MONTHLY_BILLING = ExecutionTime(0, 0, 0, day=1)  # 00:00:00 on every 1st (companion §5.6)
HOURLY = ExecutionTime(None, 0, 0)
MONDAY_0600 = ExecutionTime(6, 0, 0, weekday=1)
DAILY_0230 = ExecutionTime(2, 30, 0)

CASES = [
    # (name, times, start UTC, end UTC, passage, expected UTC instants)
    ("billing crossed while running", [MONTHLY_BILLING], "2026-11-30 22:59:00", "2026-11-30 23:00:30",
     Passage.RUNNING, ["2026-11-30 23:00:00"]),
    ("instant at start is not crossed", [MONTHLY_BILLING], "2026-11-30 23:00:00", "2026-11-30 23:05:00",
     Passage.RUNNING, []),
    ("instant at end is crossed", [MONTHLY_BILLING], "2026-11-30 22:55:00", "2026-11-30 23:00:00",
     Passage.RUNNING, ["2026-11-30 23:00:00"]),
    ("two month ends while running", [MONTHLY_BILLING], "2026-10-15 00:00:00", "2026-12-15 00:00:00",
     Passage.RUNNING, ["2026-10-31 23:00:00", "2026-11-30 23:00:00"]),
    ("two month ends during an outage: once", [MONTHLY_BILLING], "2026-10-15 00:00:00", "2026-12-15 00:00:00",
     Passage.POWER_RESTORED, ["2026-10-31 23:00:00"]),
    ("outage crossing nothing", [MONTHLY_BILLING], "2026-11-02 00:00:00", "2026-11-20 00:00:00",
     Passage.POWER_RESTORED, []),
    ("forward shift over a month end: once", [MONTHLY_BILLING], "2026-10-15 00:00:00", "2026-12-15 00:00:00",
     Passage.SHIFTED, ["2026-10-31 23:00:00"]),
    ("backward shift over a month end: none", [MONTHLY_BILLING], "2026-12-15 00:00:00", "2026-10-15 00:00:00",
     Passage.SHIFTED, []),
    ("hourly for three hours", [HOURLY], "2026-03-10 10:30:00", "2026-03-10 13:30:00",
     Passage.RUNNING, ["2026-03-10 11:00:00", "2026-03-10 12:00:00", "2026-03-10 13:00:00"]),
    ("hourly across the spring DST change: 02:00 local does not exist", [HOURLY], "2026-03-28 23:30:00",
     "2026-03-29 02:30:00", Passage.RUNNING, ["2026-03-29 00:00:00", "2026-03-29 01:00:00", "2026-03-29 02:00:00"]),
    ("02:30 is skipped on the spring DST day", [DAILY_0230], "2026-03-28 12:00:00", "2026-03-29 12:00:00",
     Passage.RUNNING, []),
    ("02:30 on the autumn DST day runs once, at its first occurrence", [DAILY_0230], "2026-10-24 12:00:00",
     "2026-10-25 12:00:00", Passage.RUNNING, ["2026-10-25 00:30:00"]),
    ("weekly on Monday", [MONDAY_0600], "2026-11-30 00:00:00", "2026-12-07 23:00:00",
     Passage.RUNNING, ["2026-11-30 05:00:00", "2026-12-07 05:00:00"]),
    ("two schedules at the same instant count once", [MONTHLY_BILLING, ExecutionTime(0, 0, 0)],
     "2026-11-30 22:30:00", "2026-11-30 23:30:00", Passage.RUNNING, ["2026-11-30 23:00:00"]),
    ("every second, one clock tick", [ExecutionTime(None, None, None)], "2026-11-30 12:00:00",
     "2026-11-30 12:00:01", Passage.RUNNING, ["2026-11-30 12:00:01"]),
]


@pytest.mark.parametrize("name, times, start, end, passage, expected", CASES, ids=[c[0] for c in CASES])
def test_the_scheduling_rule(name, times, start, end, passage, expected):
    assert due(times, BERLIN, utc(start), utc(end), passage) == [utc(e) for e in expected]


def test_a_long_outage_is_answered_without_enumerating_it():
    """Ten years off with a schedule every second: one execution, found at the first instant."""
    start = utc("2020-01-01 00:00:00")
    assert due([ExecutionTime(None, None, None)], BERLIN, start, utc("2030-01-01 00:00:00"),
               Passage.POWER_RESTORED) == [start + 1]


def test_instants_are_lazy_and_ordered():
    crossed = instants([HOURLY, ExecutionTime(None, 30, 0)], BERLIN, utc("2026-03-10 10:10:00"), utc("2026-03-10 12:10:00"))
    assert list(crossed) == [utc("2026-03-10 10:30:00"), utc("2026-03-10 11:00:00"), utc("2026-03-10 11:30:00"),
                             utc("2026-03-10 12:00:00")]


@pytest.mark.parametrize("field, value", [("hour", 24), ("minute", 60), ("second", -1), ("month", 13), ("day", 0),
                                          ("weekday", 8)])
def test_impossible_execution_times_are_refused(field, value):
    fields = {"hour": 0, "minute": 0, "second": 0, field: value}
    with pytest.raises(ValueError, match=field):
        ExecutionTime(**fields)


EVERY_SECOND = [ExecutionTime(None, None, s) for s in range(60)]  # the consumer push's densest schedule


def test_a_schedule_every_second_costs_what_the_interval_holds(monkeypatch):
    """60 execution times *:*:SS (companion §10.5): the next instant of a one-second step takes a
    handful of local-time conversions, not a day's or an hour's worth."""
    import smartmeter.meter.schedule as schedule

    conversions = []
    convert = schedule._instant
    monkeypatch.setattr(schedule, "_instant", lambda *args: conversions.append(args) or convert(*args))
    start = utc("2026-03-10 10:10:00") + 0.5
    assert next(instants(EVERY_SECOND, BERLIN, start, start + 1)) == start + 0.5
    assert len(conversions) <= 2


@pytest.mark.parametrize("day, seconds", [("2026-03-29", 23 * 3600), ("2026-10-25", 24 * 3600), ("2026-03-10", 86400)])
def test_every_second_of_a_dst_day_happens_once(day, seconds):
    """Spring: the skipped hour has no instants; autumn: the repeated hour happens once."""
    start = dt.datetime.fromisoformat(f"{day} 00:00:00").replace(tzinfo=BERLIN).timestamp()
    end = (dt.datetime.fromisoformat(f"{day} 00:00:00") + dt.timedelta(days=1)).replace(tzinfo=BERLIN).timestamp()
    crossed = list(instants(EVERY_SECOND, BERLIN, start - 1, end - 1))
    assert len(crossed) == seconds == len(set(crossed))
    assert crossed == sorted(crossed)
