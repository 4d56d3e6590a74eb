"""Load profile 2 (daily, 1-0:99.2.0.255): one entry at each local midnight (companion §5.7,
catalog §3.6), driven through the protective interface on a test clock (commands carry the times).

Expectations come from the scenario: the local midnights of Europe/Berlin (23 h and 25 h days at
the DST changes), the energy injected between captures, and the events of the scenario (outage,
clock adjustments), never from the code under test.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from zoneinfo import ZoneInfo

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.signing import MeterSigner

BERLIN = ZoneInfo("Europe/Berlin")
PDN, CAD, DST, CDI = 0x80, 0x20, 0x08, 0x10
HOUR = 3600
ZEROS = "00" * 8


def midnight(year: int, month: int, day: int) -> int:
    """UTC seconds of 00:00:00 local time (Europe/Berlin) on that date."""
    return int(dt.datetime(year, month, day, tzinfo=BERLIN).timestamp())


# 2026: summer time from Sunday 29 March 02:00 CET, back on Sunday 25 October 03:00 CEST
SPRING = [midnight(2026, 3, d) for d in (28, 29, 30, 31)]
AUTUMN = [midnight(2026, 10, d) for d in (24, 25, 26, 27)]
M10, M11, M12, M13 = (midnight(2026, 3, d) for d in (10, 11, 12, 13))  # ordinary CET days


def register(part, wh: int) -> None:
    """Inject `wh` Wh of import (3600·wh/10 W for 10 s)."""
    part.execute(legal.RegisterSimulatedPower(360.0 * wh, 0.0, 10.0))


def energy(part) -> tuple[int, int, int, int]:
    s = part.execute(legal.ReadEnergyRegisters())
    return s.a_plus, s.a_minus, s.r_plus, s.r_minus


def daily(part) -> list[legal.ProfileRow]:
    return list(part.execute(legal.ReadDailyProfile()))


@pytest.fixture
def part(tmp_path):
    p = legal.LegalInterface(tmp_path)
    yield p
    p.close()


def test_local_midnights_of_the_test_are_what_the_calendar_says():
    # the scenario's own arithmetic, checked against literal UTC values
    assert SPRING[0] == 1_774_652_400  # 2026-03-27 23:00 UTC = 28 March 00:00 CET
    assert [b - a for a, b in zip(SPRING, SPRING[1:])] == [24 * HOUR, 23 * HOUR, 24 * HOUR]
    assert AUTUMN[1] == 1_792_879_200  # 2026-10-24 22:00 UTC = 25 October 00:00 CEST
    assert [b - a for a, b in zip(AUTUMN, AUTUMN[1:])] == [24 * HOUR, 25 * HOUR, 24 * HOUR]


@pytest.mark.parametrize("days, dst_flags", [(SPRING, [0, 0, DST, DST]), (AUTUMN, [DST, DST, 0, 0])],
                         ids=["spring", "autumn"])
def test_three_days_across_a_dst_change_one_entry_per_local_midnight(part, days, dst_flags):
    """Four midnights, three days (one of 23 or 25 hours): an entry at each local 00:00:00 with the
    registers at that instant and the caller's DST bit; a 24-hour step from the midnight before the
    change, which is 23:00 or 01:00 local, is not a capture time."""
    injected = [7, 11, 13, 17]
    expected = []
    total = 0
    for i, (t, dst_flag) in enumerate(zip(days, dst_flags)):
        register(part, injected[i])
        total += injected[i]
        if i == 2:
            naive = days[1] + 24 * HOUR  # 01:00 CEST after the spring day, 23:00 CET before the autumn one
            assert naive != t
            with pytest.raises(legal.CommandRefused):
                part.execute(legal.EndDay(naive, dst_flag))
        before = energy(part)
        assert total - 1 <= before[0] <= total  # whole Wh, floored
        row = part.execute(legal.EndDay(t, dst_flag))
        assert row == legal.ProfileRow(t, dst_flag, *before)
        expected.append(row)
    assert daily(part) == expected
    assert part.execute(legal.CountDailyProfileEntries()) == 4
    assert part.execute(legal.ReadDailyProfile(days[1], days[2])) == tuple(expected[1:3])
    # each midnight is captured once
    assert part.execute(legal.EndDay(days[3], dst_flags[3])) is None
    assert part.execute(legal.CountDailyProfileEntries()) == 4
    assert part.execute(legal.CountLoadProfileEntries()) == 0, "the daily capture is not load profile 1"


@pytest.mark.parametrize("t", [M11 + 1, M11 - 1, M11 + HOUR, M11 + 900, int(dt.datetime(2026, 3, 11, tzinfo=dt.timezone.utc).timestamp()),
                               -1, 2 ** 32, 2 ** 63])
def test_a_capture_not_at_local_midnight_is_refused_and_changes_nothing(part, t):
    register(part, 5)
    part.execute(legal.EndDay(M10))
    before = (daily(part), energy(part))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndDay(t))
    assert (daily(part), energy(part)) == before
    # the refusal moved nothing: the next midnight is captured
    assert part.execute(legal.EndDay(M11)).capture_time == M11


def test_status_out_of_range_and_powered_down_are_refused(part):
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndDay(M10, 256))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndDay(M10, -1))
    part.execute(legal.PowerDown(float(M10 - 60)))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndDay(M10))
    assert daily(part) == []
    part.execute(legal.PowerUp(float(M10 + 60)))
    assert part.execute(legal.EndDay(M10)).status == legal.STATUS_POWER_DOWN


def test_capacity_is_sixty_entries_first_in_first_out(tmp_path):
    part = legal.LegalInterface(tmp_path)
    try:
        start = dt.date(2026, 1, 1)
        times = [midnight(*(start + dt.timedelta(days=i)).timetuple()[:3]) for i in range(62)]
        for t in times:
            part.execute(legal.EndDay(t))
        assert part.execute(legal.CountDailyProfileEntries()) == 60
        assert [r.capture_time for r in daily(part)] == times[2:]
    finally:
        part.close()
    reports = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}
    assert reports["lp2"].ok, reports["lp2"]


def test_a_three_hour_outage_across_midnight_marks_pdn_on_the_next_entry_of_each_profile(part):
    """Supply fails at 22:30 local and returns at 01:30: no capture while down (the midnight in between
    has no entry); LP1's first entry after power-up and LP2's next entry both carry PDN, each consumed
    by its own profile only."""
    part.execute(legal.EndDay(M10))
    down, up = M11 - 90 * 60, M11 + 90 * 60
    for t in range(M11 - 2 * HOUR, down + 1, 900):  # 22:00 .. 22:30
        register(part, 1)
        assert part.execute(legal.EndMeasurementPeriod(t)).status == 0
    part.execute(legal.PowerDown(float(down + 30)))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndDay(M11))
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.EndMeasurementPeriod(M11))
    report = part.execute(legal.PowerUp(float(up)))
    assert report.down_time == down + 30 and report.clean
    lp1 = []
    for t in range(up + 900, up + 4 * 900 + 1, 900):  # 01:45 .. 02:30
        register(part, 1)
        lp1.append(part.execute(legal.EndMeasurementPeriod(t)).status)
    assert lp1 == [PDN, 0, 0, 0]
    register(part, 3)
    before = energy(part)
    assert part.execute(legal.EndDay(M12)) == legal.ProfileRow(M12, PDN, *before)
    assert part.execute(legal.EndDay(M13)).status == 0
    assert [r.capture_time for r in daily(part)] == [M10, M12, M13], "no entry for the midnight during the outage"


def test_pdn_stays_pending_for_lp2_across_a_restart(tmp_path):
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.EndDay(M10))
    part.execute(legal.PowerDown(float(M11 - HOUR)))
    part.execute(legal.PowerUp(float(M11 + HOUR)))
    assert part.execute(legal.EndMeasurementPeriod(M11 + HOUR + 900)).status == PDN
    part.close()
    again = legal.LegalInterface(tmp_path)
    try:
        assert again.execute(legal.ReadFatalErrors()) == 0
        assert again.execute(legal.EndDay(M10)) is None, "a captured day is not captured again after a restart"
        assert again.execute(legal.EndDay(M12)).status & PDN
    finally:
        again.close()


def test_a_forward_adjustment_over_midnight_skips_that_midnight_in_both_profiles(part):
    """23:50 -> 00:10 (20 minutes forward, an adjustment): as LP1 makes no entry for a boundary an
    adjustment jumps over, LP2 makes none for the midnight jumped over; the next midnight's entry
    carries CAD. LP1 skips 00:00 too and marks CAD at 00:15."""
    part.execute(legal.EndDay(M10))
    part.execute(legal.EndMeasurementPeriod(M11 - 900))  # 23:45
    change = part.execute(legal.SetTime(float(M11 + 600), float(M11 - 600), ZEROS, "set"))
    assert change.kind == "adjusted"
    assert part.execute(legal.EndDay(M11)) is None
    assert part.execute(legal.EndMeasurementPeriod(M11)) is None
    assert part.execute(legal.EndMeasurementPeriod(M11 + 900)).status == CAD
    assert part.execute(legal.EndMeasurementPeriod(M11 + 1800)).status == 0
    assert part.execute(legal.EndDay(M12)).status == CAD
    assert part.execute(legal.EndDay(M13)).status == 0
    assert [r.capture_time for r in daily(part)] == [M10, M12, M13]


def test_a_forward_adjustment_over_days_makes_no_entries_for_them(part):
    part.execute(legal.EndDay(M10))
    part.execute(legal.SetTime(float(M13 + 5 * HOUR), float(M10 + 5 * HOUR), ZEROS, "set"))  # 3 days ahead
    for t in (M11, M12, M13):
        assert part.execute(legal.EndDay(t)) is None
    m14 = midnight(2026, 3, 14)
    assert part.execute(legal.EndDay(m14)).status == CAD
    assert [r.capture_time for r in daily(part)] == [M10, m14]


def test_a_backward_adjustment_over_midnight_does_not_capture_the_day_twice(part):
    """00:10 -> 23:50 after midnight was captured: LP2 does not capture that midnight again (one entry
    per day); its next entry (the following midnight) carries CAD. LP1 captures the boundaries of the
    new time again (IDIS), the first with CAD."""
    part.execute(legal.EndDay(M10))
    register(part, 4)
    first = part.execute(legal.EndDay(M11))
    assert first.status == 0
    part.execute(legal.SetTime(float(M11 - 600), float(M11 + 600), ZEROS, "set"))
    register(part, 2)
    assert part.execute(legal.EndDay(M11)) is None
    assert part.execute(legal.EndMeasurementPeriod(M11)).status == CAD  # LP1: again, as before
    assert part.execute(legal.EndDay(M12)).status == CAD
    assert [r.capture_time for r in daily(part)] == [M10, M11, M12]
    assert daily(part)[1] == first


def test_a_synchronisation_sets_no_cad_on_the_daily_profile(part):
    part.execute(legal.EndDay(M10))
    change = part.execute(legal.SetTime(float(M10 + HOUR + 5), float(M10 + HOUR), ZEROS, "set"))
    assert change.kind == "synchronised"
    assert part.execute(legal.EndDay(M11)).status == 0


def test_own_clock_accepts_only_the_midnight_just_passed(tmp_path):
    part = legal.LegalInterface(tmp_path, speed=1.0, start_time=float(M11 + 120))
    try:
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndDay(M10))  # a day long past
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndDay(M12))  # still to come
        assert part.execute(legal.EndDay(M11)).capture_time == M11
    finally:
        part.close()


def test_time_zone_is_a_constructor_option(tmp_path):
    utc_midnight = int(dt.datetime(2026, 3, 11, tzinfo=dt.timezone.utc).timestamp())
    part = legal.LegalInterface(tmp_path, time_zone="UTC")
    try:
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndDay(M11))  # 23:00 UTC
        assert part.execute(legal.EndDay(utc_midnight)).capture_time == utc_midnight
    finally:
        part.close()


def _lp2_payload_edit(tmp_path) -> None:
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    (payload,) = db.execute("SELECT payload FROM chain_entry WHERE tbl = 'lp2' ORDER BY seq LIMIT 1").fetchone()
    edited = bytes(payload[:1]) + (10 ** 6).to_bytes(8, "big") + bytes(payload[9:])
    db.execute("UPDATE chain_entry SET payload = ? WHERE tbl = 'lp2' AND payload = ?", (edited, payload))
    db.commit()
    db.close()


def test_the_daily_profile_is_verified_offline_and_at_start(tmp_path):
    part = legal.LegalInterface(tmp_path)
    register(part, 3)
    part.execute(legal.EndDay(M10))
    part.execute(legal.EndDay(M11))
    part.close()
    assert "lp2" in legal.STORAGE_TABLES
    reports = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}
    assert reports["lp2"].ok and reports["lp2"].checked == 2

    _lp2_payload_edit(tmp_path)
    reports = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}
    assert not reports["lp2"].ok
    again = legal.LegalInterface(tmp_path)
    try:
        assert again.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY
        # entries made while the fatal error holds carry ERR and DNV
        assert again.execute(legal.EndDay(M12)).status == legal.STATUS_ERROR | legal.STATUS_DATA_NOT_VALID
    finally:
        again.close()


def test_a_time_base_saved_before_the_daily_profile_still_loads(tmp_path):
    """A store written by the previous version (LP1's floor and pending flags at the top level of the
    time base, no LP2 state), signed by the meter: it loads without a store error, LP1 keeps its floor
    and its pending CAD, LP2 starts fresh."""
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.EndMeasurementPeriod(M10 + 900))
    part.close()
    old = {"offset": 0.0, "capture_floor": M10 + 900, "adjusted_pending": True, "speed": 1.0,
           "anchor_platform": 0.0, "anchor_clock": 0.0, "outage_pending": False, "clock_invalid": False,
           "backup_exhausted": False}
    text = json.dumps(old, sort_keys=True)
    signature = MeterSigner.load_or_create(tmp_path).sign(b"smartmeter/time-base/v1\0" + text.encode()).hex()
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    db.execute("UPDATE meta SET value = ? WHERE key = 'time_base'", (json.dumps(text),))
    db.execute("UPDATE meta SET value = ? WHERE key = 'time_base_signature'", (json.dumps(signature),))
    db.commit()
    db.close()
    again = legal.LegalInterface(tmp_path)
    try:
        assert again.execute(legal.ReadFatalErrors()) == 0
        assert again.execute(legal.EndMeasurementPeriod(M10 + 900)) is None
        assert again.execute(legal.EndMeasurementPeriod(M10 + 1800)).status == CAD
        assert again.execute(legal.ReadCaptureEnabled()) == (True, True)
        assert again.execute(legal.EndDay(M11)).status == 0
    finally:
        again.close()
