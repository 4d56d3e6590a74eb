"""The switching program engine (smartmeter.meter.calendar_program), pure: an activity calendar
whose switches run their script at their instant, with the companion §5.4.1 rules for a running
clock, a power failure and a clock shift, special days, daylight saving, a calendar activated
mid-day and a kill between the durable mark and the run. The calendars are written here as
data; every expected run (instant, script) is read off them and a wall calendar."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.meter.calendar_program import CalendarProgram
from smartmeter.meter.schedule import Passage
from smartmeter.meter.tariff_calendar import Calendar, DayAction, DayProfile, Season, SeasonStart, SpecialDay, WeekProfile

VIENNA = ZoneInfo("Europe/Vienna")
SCRIPTS = bytes([0, 0, 10, 0, 106, 255])
OFF, ON = 3, 4
RUNNING, RESTORED, SHIFTED = Passage.RUNNING, Passage.POWER_RESTORED, Passage.SHIFTED


def local(*args) -> float:
    return dt.datetime(*args, tzinfo=VIENNA).timestamp()


def program_of(days: dict[int, list[tuple[int, int, int]]], week: list[int] | None = None) -> Calendar:
    """One every-year season from January 1st; `week` the day_id of Monday..Sunday (default all 1)."""
    return Calendar(b"P", (Season(b"S", SeasonStart(None, 1, 1), b"W"),), (WeekProfile(b"W", tuple(week or [1] * 7)),),
                    tuple(DayProfile(i, tuple(DayAction(h, m, 0, SCRIPTS, s) for h, m, s in switches))
                          for i, switches in days.items()))


OFF_8_ON_18 = program_of({1: [(8, 0, OFF), (18, 0, ON)]})


class FakeCalendar:
    """What the engine asks of an IC 20 object: the active and passive calendars, the activation
    time, and the activation (a revision and the time it happened at)."""

    def __init__(self, active: Calendar = Calendar(), passive: Calendar = Calendar(),
                 activate_at: float | None = None) -> None:
        self.active, self.passive, self.activate_at = active, passive, activate_at
        self.revisions, self.activated_at = 0, None

    def calendar(self) -> Calendar:
        return self.active

    def passive_calendar(self) -> Calendar:
        return self.passive

    def activation_instant(self, zone) -> float | None:
        return self.activate_at

    def activate_if_due(self, now: float, zone) -> bool:
        if self.activate_at is None or now < self.activate_at:
            return False
        self.activate_at = None
        self.activate(now)
        return True

    def activate(self, at: float) -> None:  # method 1 at meter time `at`
        self.active = self.passive
        self.revisions, self.activated_at = self.revisions + 1, at

    def revision(self) -> tuple[int, float | None]:
        return self.revisions, self.activated_at


class FakeSpecialDays:
    def __init__(self, *entries: SpecialDay) -> None:
        self.entries = entries

    def special_days(self) -> tuple:
        return self.entries


class Store(dict):
    def put(self, key, value) -> None:
        self[key] = value


class Killed(BaseException):
    """The process dies (kill -9) while a script runs."""


class Rig:
    def __init__(self, calendar: FakeCalendar, special: FakeSpecialDays | None = None, store: Store | None = None):
        self.calendar, self.special = calendar, special
        self.store = Store() if store is None else store
        self.ran: list[tuple[float, int]] = []  # (meter time it ran at, selector)
        self.kill_next = False
        self.program = self.open()

    def open(self) -> CalendarProgram:
        return CalendarProgram("test program", bytes([0, 0, 13, 0, 1, 255]), self.calendar, self.special, self.store,
                               VIENNA, self.run_script)

    def run_script(self, script_ln: bytes, selector: int) -> None:
        assert script_ln == SCRIPTS
        if self.kill_next:
            self.kill_next = False
            raise Killed()
        self.ran.append((self.program.running_instant, selector))

    def run(self, start: float, end: float, step: float = 900.0) -> None:
        """A running clock from start to end, advanced step by step."""
        t = start
        while t < end:
            self.program.advance(t, min(end, t + step), RUNNING)
            t = min(end, t + step)


def test_a_running_clock_runs_every_switch_once_in_time_order_at_its_instant():
    step_by_step, at_once = Rig(FakeCalendar(OFF_8_ON_18)), Rig(FakeCalendar(OFF_8_ON_18))
    start, end = local(2026, 6, 9, 0, 0), local(2026, 6, 11, 0, 0)
    step_by_step.program.advance(start, start, RUNNING)
    at_once.program.advance(start, start, RUNNING)
    step_by_step.run(start, end, step=7.0 * 60)
    at_once.program.advance(start, end, RUNNING)
    expected = [(local(2026, 6, 9, 8, 0), OFF), (local(2026, 6, 9, 18, 0), ON),
                (local(2026, 6, 10, 8, 0), OFF), (local(2026, 6, 10, 18, 0), ON)]
    assert step_by_step.ran == expected
    assert at_once.ran == expected


def test_next_instant_is_the_first_switch_in_the_interval():
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    assert rig.program.next_instant(local(2026, 6, 9, 7, 0), local(2026, 6, 9, 23, 0)) == local(2026, 6, 9, 8, 0)
    assert rig.program.next_instant(local(2026, 6, 9, 8, 0), local(2026, 6, 9, 17, 59)) is None
    assert rig.program.next_switch(local(2026, 6, 9, 18, 0)) == (local(2026, 6, 10, 8, 0), SCRIPTS, OFF)
    assert Rig(FakeCalendar()).program.next_instant(0, 1e10) is None  # the default: an empty calendar


@pytest.mark.parametrize("down, up, expected", [
    ((2026, 6, 9, 7, 30), (2026, 6, 9, 9, 0), OFF),  # across 08:00
    ((2026, 6, 9, 7, 30), (2026, 6, 9, 19, 0), ON),  # across 08:00 and 18:00: the latest
    ((2026, 6, 9, 7, 30), (2026, 6, 11, 9, 0), OFF),  # across five switches
])
def test_after_a_power_failure_the_latest_switch_crossed_runs_once_at_power_up(down, up, expected):
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    rig.run(local(2026, 6, 9, 7, 0), local(*down))
    rig.program.advance(local(*down), local(*up), RESTORED)
    assert rig.ran == [(local(*up), expected)]
    rig.run(local(*up), local(*up) + 3600)
    assert len(rig.ran) == 1  # not again after


def test_an_outage_crossing_no_switch_runs_nothing():
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    rig.program.advance(local(2026, 6, 9, 8, 30), local(2026, 6, 9, 17, 0), RESTORED)
    assert rig.ran == []


def test_a_restart_resumes_from_the_stored_mark_and_runs_the_latest_switch_crossed_once():
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    rig.run(local(2026, 6, 9, 6, 0), local(2026, 6, 9, 7, 45))
    program = rig.program = rig.open()  # the meter was stopped at 07:45 and starts at 19:10
    program.resume(local(2026, 6, 9, 19, 10))
    assert rig.ran == [(local(2026, 6, 9, 19, 10), ON)]


def test_a_forward_shift_runs_the_latest_switch_crossed_once_a_backward_shift_nothing():
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    rig.run(local(2026, 6, 9, 6, 0), local(2026, 6, 9, 7, 0))
    rig.program.advance(local(2026, 6, 9, 7, 0), local(2026, 6, 9, 19, 0), SHIFTED)
    assert rig.ran == [(local(2026, 6, 9, 19, 0), ON)]
    rig.program.advance(local(2026, 6, 9, 19, 0), local(2026, 6, 9, 7, 30), SHIFTED)
    assert len(rig.ran) == 1
    # the clock runs again through 08:00: a crossing on a running clock, which runs
    rig.run(local(2026, 6, 9, 7, 30), local(2026, 6, 9, 8, 30))
    assert rig.ran[1:] == [(local(2026, 6, 9, 8, 0), OFF)]


def test_a_special_day_replaces_the_week_profile():
    calendar = program_of({1: [(8, 0, OFF), (18, 0, ON)], 2: [(10, 0, OFF), (12, 0, ON)]})
    may_day = SpecialDay(1, None, 5, 1, 2)  # every year May 1st: day profile 2
    rig = Rig(FakeCalendar(calendar), FakeSpecialDays(may_day))
    rig.run(local(2026, 4, 30, 12, 0), local(2026, 5, 2, 12, 0))
    assert rig.ran == [(local(2026, 4, 30, 18, 0), ON), (local(2026, 5, 1, 10, 0), OFF), (local(2026, 5, 1, 12, 0), ON),
                       (local(2026, 5, 2, 8, 0), OFF)]


def test_daylight_saving_a_skipped_switch_does_not_happen_a_repeated_one_happens_once():
    calendar = program_of({1: [(2, 30, OFF), (3, 0, ON)]})
    spring = Rig(FakeCalendar(calendar))
    spring.run(local(2026, 3, 28, 12, 0), local(2026, 3, 29, 12, 0))  # 02:00 -> 03:00 on March 29th
    assert spring.ran == [(local(2026, 3, 29, 3, 0), ON)]
    autumn = Rig(FakeCalendar(calendar))
    autumn.run(local(2026, 10, 24, 12, 0), local(2026, 10, 25, 12, 0))  # 03:00 -> 02:00 on October 25th
    first_0230 = dt.datetime(2026, 10, 25, 2, 30, tzinfo=VIENNA, fold=0).timestamp()
    assert autumn.ran == [(first_0230, OFF), (local(2026, 10, 25, 3, 0), ON)]
    assert local(2026, 10, 25, 3, 0) - first_0230 == 5400  # 02:30 -> 03:00 CEST, then 02:00 -> 03:00 CET again


def test_a_kill_between_the_mark_and_the_run_does_not_run_the_switch_again():
    rig = Rig(FakeCalendar(OFF_8_ON_18))
    rig.run(local(2026, 6, 9, 7, 0), local(2026, 6, 9, 7, 45))
    rig.kill_next = True
    with pytest.raises(Killed):
        rig.run(local(2026, 6, 9, 7, 45), local(2026, 6, 9, 8, 15))
    program = rig.program = rig.open()  # the restart
    reported = program.resume(local(2026, 6, 9, 8, 20))
    assert [(e.instant, e.selector, e.outcome) for e in reported] == [(local(2026, 6, 9, 8, 0), OFF, "interrupted")]
    rig.run(local(2026, 6, 9, 8, 20), local(2026, 6, 9, 18, 30))
    assert rig.ran == [(local(2026, 6, 9, 18, 0), ON)]  # 08:00 not run again; the next one is


def test_a_calendar_activated_mid_day_runs_only_the_switches_after_its_activation():
    calendar = FakeCalendar(passive=OFF_8_ON_18)
    rig = Rig(calendar)
    rig.run(local(2026, 6, 9, 6, 0), local(2026, 6, 9, 12, 0))
    calendar.activate(local(2026, 6, 9, 12, 0))  # method 1 at 12:00 (the 08:00 switch is past)
    rig.run(local(2026, 6, 9, 12, 0), local(2026, 6, 10, 9, 0))
    assert rig.ran == [(local(2026, 6, 9, 18, 0), ON), (local(2026, 6, 10, 8, 0), OFF)]


def test_a_passive_calendar_due_at_its_activation_time_takes_over_at_that_instant():
    old = program_of({1: [(7, 0, OFF), (13, 0, OFF)]})
    calendar = FakeCalendar(old, OFF_8_ON_18, activate_at=local(2026, 6, 9, 12, 0))
    rig = Rig(calendar)
    start = local(2026, 6, 9, 6, 0)
    rig.program.advance(start, start, RUNNING)
    assert rig.program.next_instant(local(2026, 6, 9, 7, 0), local(2026, 6, 9, 23, 0)) == local(2026, 6, 9, 12, 0)
    rig.program.advance(start, local(2026, 6, 9, 20, 0), RUNNING)  # one step across the activation
    # the old calendar up to 12:00 (07:00), the new one after (18:00; its 08:00 was before 12:00)
    assert rig.ran == [(local(2026, 6, 9, 7, 0), OFF), (local(2026, 6, 9, 18, 0), ON)]
    assert calendar.revision() == (1, local(2026, 6, 9, 12, 0))
