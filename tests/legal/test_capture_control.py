"""Capturing enabled per load profile: opt-in / opt-out (companion §5.7.2, catalog §3.6, IDIS §7.5.8).

The running period is not interrupted: the entry of a period in which capturing was disabled at
any moment is made and carries CDI; a period disabled throughout gets no entry. The scenarios are
the catalog's own examples; expectations are the catalog's tables.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.timebase import TimeBase, TimeBaseState

BERLIN = ZoneInfo("Europe/Berlin")
CDI, PDN, CAD = 0x10, 0x80, 0x20
DAY0 = 1_773_097_200  # 2026-03-10 00:00 CET (local midnight), a quarter-hour boundary in UTC too
H, Q = 3600, 900


def at(hh: int, mm: int = 0) -> int:
    """Local time of day on DAY0's date (no DST change on 10 March)."""
    return DAY0 + hh * H + mm * 60


def midnight(year: int, month: int, day: int) -> int:
    return int(dt.datetime(year, month, day, tzinfo=BERLIN).timestamp())


@pytest.fixture
def part(tmp_path):
    p = legal.LegalInterface(tmp_path)
    yield p
    p.close()


def test_the_hourly_example_of_the_catalog():
    """Opt-out at 01:15, opt-in at 04:52, captures every hour: 00:00 and 01:00 without CDI, 02:00
    with, none at 03:00 and 04:00, 05:00 with, 06:00 without (the rule of the time base is the same
    for any capture period)."""
    base = TimeBase(TimeBaseState())
    made = {}
    for hour in range(0, 7):
        if hour == 2:
            base.set_capture_enabled("lp1", False, at(1, 15))
        if hour == 5:
            base.set_capture_enabled("lp1", True, at(4, 52))
        bits = base.admit_capture(at(hour), "lp1")
        made[hour] = None if bits is None else bits & CDI
    assert made == {0: 0, 1: 0, 2: CDI, 3: None, 4: None, 5: CDI, 6: 0}


@pytest.mark.parametrize("change_first", [False, True], ids=["capture then opt-out", "opt-out then capture"])
def test_the_quarter_hour_example_of_the_catalog(part, change_first):
    """Opt-out at 01:15, opt-in at 04:52 on load profile 1: 01:15 CDI 0, 01:30 CDI 1, no entries
    01:45 .. 04:45, 05:00 CDI 1, 05:15 CDI 0. An opt-out stamped 01:15:00 belongs to the period that
    starts then, whichever of it and the 01:15 capture reaches the part first."""
    results = {}
    for t in range(at(0, 15), at(5, 30) + 1, Q):
        if t == at(1, 15) and change_first:
            assert part.execute(legal.SetCaptureEnabled("lp1", False, at(1, 15))) == (False, True)
        if t == at(5, 0):
            part.execute(legal.SetCaptureEnabled("lp1", True, at(4, 52)))
        row = part.execute(legal.EndMeasurementPeriod(t))
        results[t] = None if row is None else row.status & CDI
        if t == at(1, 15) and not change_first:
            assert part.execute(legal.SetCaptureEnabled("lp1", False, at(1, 15))) == (False, True)
    expected = {t: 0 for t in range(at(0, 15), at(1, 15) + 1, Q)}
    expected[at(1, 30)] = CDI
    expected.update({t: None for t in range(at(1, 45), at(4, 45) + 1, Q)})
    expected.update({at(5, 0): CDI, at(5, 15): 0, at(5, 30): 0})
    assert results == expected
    stored = [(r.capture_time, r.status) for r in part.execute(legal.ReadLoadProfile())]
    assert stored == [(t, s) for t, s in expected.items() if s is not None]
    assert part.execute(legal.ReadCaptureEnabled()) == (True, True)


def test_registers_run_and_demand_periods_close_while_capturing_is_disabled(part):
    part.execute(legal.StartDemandPeriod(at(0)))
    part.execute(legal.EndMeasurementPeriod(at(0, 15)))
    part.execute(legal.SetCaptureEnabled("lp1", False, at(0, 20)))
    part.execute(legal.EndMeasurementPeriod(at(0, 30)))  # CDI entry: the period saw the change
    part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 450.0))  # 450 Wh in the 00:30-00:45 period
    assert part.execute(legal.EndMeasurementPeriod(at(0, 45))) is None
    energy = part.execute(legal.ReadEnergyRegisters()).a_plus
    assert 449 <= energy <= 450, "the registers still run"
    demand = part.execute(legal.ReadDemand("a_plus"))
    assert demand.capture_time == at(0, 45) and abs(demand.last_average - 1800) <= 4, "the demand period closed"
    assert [r.capture_time for r in part.execute(legal.ReadLoadProfile())] == [at(0, 15), at(0, 30)]
    part.execute(legal.SetCaptureEnabled("lp1", True, at(0, 50)))
    row = part.execute(legal.EndMeasurementPeriod(at(1, 0)))
    assert (row.status, row.a_plus) == (CDI, energy)


def test_the_daily_profile_follows_the_same_rule(part):
    """LP2 opt-out at noon: that day's entry (next midnight) carries CDI, the days disabled throughout
    get none, the entry of the day of the opt-in carries CDI, the next one not; LP1 is not affected."""
    days = [midnight(2026, 3, d) for d in range(10, 17)]
    part.execute(legal.EndDay(days[0]))
    assert part.execute(legal.SetCaptureEnabled("lp2", False, days[0] + 12 * H)) == (True, False)
    got = {}
    for i, t in enumerate(days[1:], start=1):
        if i == 4:
            part.execute(legal.SetCaptureEnabled("lp2", True, days[3] + 9 * H))
        row = part.execute(legal.EndDay(t))
        got[i] = None if row is None else row.status
        assert part.execute(legal.EndMeasurementPeriod(t)).status == 0
    assert got == {1: CDI, 2: None, 3: None, 4: CDI, 5: 0, 6: 0}


def test_a_change_during_an_outage_is_marked_on_the_first_entry_after_power_up(part):
    part.execute(legal.EndMeasurementPeriod(at(1)))
    part.execute(legal.PowerDown(float(at(1, 5))))
    part.execute(legal.SetCaptureEnabled("lp1", False, at(1, 20)))  # e.g. a schedule due during the outage
    part.execute(legal.PowerUp(float(at(2, 5))))
    row = part.execute(legal.EndMeasurementPeriod(at(2, 15)))
    assert row.status == CDI | PDN
    assert part.execute(legal.EndMeasurementPeriod(at(2, 30))) is None


def test_pending_pdn_and_cad_wait_for_the_next_entry_that_is_made(part):
    """A period without an entry (capturing disabled) does not swallow PDN or CAD: they are on the
    next entry made."""
    part.execute(legal.SetCaptureEnabled("lp1", False, at(0, 5)))
    assert part.execute(legal.EndMeasurementPeriod(at(0, 15))).status == CDI
    part.execute(legal.PowerDown(float(at(0, 20))))
    part.execute(legal.PowerUp(float(at(0, 25))))
    part.execute(legal.SetTime(float(at(0, 35)), float(at(0, 26)), "00" * 8, "set"))  # adjusted
    assert part.execute(legal.EndMeasurementPeriod(at(0, 45))) is None
    assert part.execute(legal.EndMeasurementPeriod(at(1, 0))) is None
    part.execute(legal.SetCaptureEnabled("lp1", True, at(1, 2)))
    assert part.execute(legal.EndMeasurementPeriod(at(1, 15))).status == CDI | PDN | CAD


def test_many_changes_within_one_period_keep_cdi_and_the_final_state(part):
    part.execute(legal.EndMeasurementPeriod(at(1)))
    for k in range(41):  # ends disabled
        part.execute(legal.SetCaptureEnabled("lp1", k % 2 == 1, at(1) + 10 + k))
    assert part.execute(legal.ReadCaptureEnabled()) == (False, True)
    assert part.execute(legal.EndMeasurementPeriod(at(1, 15))).status == CDI
    assert part.execute(legal.EndMeasurementPeriod(at(1, 30))) is None


def test_the_same_state_again_is_no_change(part):
    assert part.execute(legal.SetCaptureEnabled("lp1", True, at(0, 5))) == (True, True)
    assert part.execute(legal.EndMeasurementPeriod(at(0, 15))).status == 0


@pytest.mark.parametrize("profile", ["lp3", "LP1", "", "a_plus", "lp1 ", "99.1.0"])
def test_a_wrong_profile_name_is_refused_and_changes_nothing(tmp_path, profile):
    part = legal.LegalInterface(tmp_path)
    try:
        part.execute(legal.SetCaptureEnabled("lp2", False, at(0, 5)))
        stored = _stored_time_base(tmp_path)
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetCaptureEnabled(profile, True, at(0, 6)))
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetCaptureEnabled(profile, False, at(0, 6)))
        assert part.execute(legal.ReadCaptureEnabled()) == (True, False)
        assert _stored_time_base(tmp_path) == stored
        assert part.execute(legal.EndMeasurementPeriod(at(0, 15))).status == 0
    finally:
        part.close()


@pytest.mark.parametrize("fields", [("lp1", 1, at(0)), ("lp1", "false", at(0)), ("lp1", False, -1), ("lp1", False, 2 ** 32),
                                    ("lp1", False, float(at(0))), (None, False, at(0))])
def test_malformed_fields_are_refused(part, fields):
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetCaptureEnabled(*fields))
    assert part.execute(legal.ReadCaptureEnabled()) == (True, True)


def _stored_time_base(data_dir) -> tuple[str, str]:
    db = sqlite3.connect(data_dir / "legal.sqlite3")
    try:
        return tuple(json.loads(db.execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()[0])
                     for k in ("time_base", "time_base_signature"))
    finally:
        db.close()


def test_the_enabled_state_survives_kill_9(tmp_path):
    """Opt-out, then the process dies without closing anything: the state and the pending CDI come back."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from smartmeter.legal import interface as legal\n"
        "part = legal.LegalInterface(Path(sys.argv[1]))\n"
        f"part.execute(legal.EndMeasurementPeriod({at(1)}))\n"
        f"part.execute(legal.SetCaptureEnabled('lp1', False, {at(1, 5)}))\n"
        f"part.execute(legal.SetCaptureEnabled('lp2', False, {at(1, 6)}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    part = legal.LegalInterface(tmp_path)
    try:
        assert part.execute(legal.ReadFatalErrors()) == 0
        assert part.execute(legal.ReadCaptureEnabled()) == (False, False)
        assert part.execute(legal.EndMeasurementPeriod(at(1, 15))).status == CDI
        assert part.execute(legal.EndMeasurementPeriod(at(1, 30))) is None
    finally:
        part.close()


def test_an_edited_enabled_state_is_a_store_error(tmp_path):
    """The enabled state is signed with the time base: enabling capturing by editing the store is
    detected at the next start (fatal store bit)."""
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.SetCaptureEnabled("lp1", False, at(0, 5)))
    part.execute(legal.EndMeasurementPeriod(at(0, 15)))
    part.close()
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    (text,) = db.execute("SELECT value FROM meta WHERE key = 'time_base'").fetchone()
    state = json.loads(json.loads(text))
    assert state["profiles"]["lp1"]["enabled_base"] is False
    state["profiles"]["lp1"]["enabled_base"] = True
    db.execute("UPDATE meta SET value = ? WHERE key = 'time_base'", (json.dumps(json.dumps(state, sort_keys=True)),))
    db.commit()
    db.close()
    again = legal.LegalInterface(tmp_path)
    try:
        assert again.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY
    finally:
        again.close()
