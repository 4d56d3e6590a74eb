"""Clock changes and the load profile (companion §5.4, §5.7.3; IDIS time-shift rules).

Each scenario runs a meter on a simulated clock, moves the clock as a head-end would, and
checks the profile entry by entry against what the scenario implies: no entries for periods
that did not happen, no suppressed captures, CAD on the first entry after an adjustment, and
the change recorded in the metrological log with the old and the new time.
"""
from __future__ import annotations

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import ClockSetRefused, MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

T0 = 1_773_144_000  # 2026-03-10 12:00:00 UTC (13:00 CET), a quarter-hour boundary
PERIOD = 900
CAD = 0x20
DST = 0x08
EVENT_TIME_CHANGED = 213


class SimulatedMeter:
    """A meter whose platform clock is a number the test moves; it ticks once a minute."""

    def __init__(self, data_dir, start: float) -> None:
        self.platform = [float(start)]
        self.meter = Meter(MeterConfig(data_dir=data_dir, backfill_days=0), clock=MeterClock(source=lambda: self.platform[0]))

    def run(self, seconds: int, step: int = 60) -> None:
        for _ in range(seconds // step):
            self.platform[0] += step
            self.meter.tick()

    def profile(self) -> list[legal.ProfileRow]:
        return list(self.meter.legal.execute(legal.ReadLoadProfile()))

    def time_events(self) -> list[dict]:
        import json
        return [dict(json.loads(r.fields_json), time=r.time_utc) for r in self.meter.legal.execute(legal.ReadMetrologicalLog())
                if r.event_id == EVENT_TIME_CHANGED]

    def energy(self) -> tuple[int, ...]:
        snap = self.meter.legal.execute(legal.ReadEnergyRegisters())
        return snap.a_plus, snap.a_minus, snap.r_plus, snap.r_minus

    def close(self) -> None:
        self.meter.close()


@pytest.fixture
def sim(tmp_path):
    s = SimulatedMeter(tmp_path, T0 + 30)
    yield s
    s.close()


def _boundaries(start: float, end: float) -> list[int]:
    """Quarter-hour boundaries b with start < b <= end: the captures a clock running from start to end crosses."""
    first = int(start // PERIOD + 1) * PERIOD
    return list(range(first, int(end) + 1, PERIOD))


@pytest.mark.welmec("L1")
@pytest.mark.parametrize("jump", [20 * 60, 3 * 86400, 61 * 86400], ids=["20 minutes", "3 days", "2 months"])
def test_forward_jump_creates_no_entries_for_skipped_periods(sim, jump):
    """A forward clock adjustment of minutes, days or months keeps the history, registers no energy and stores no entry for the skipped periods; the next entry is at the next boundary of the new time with CAD."""
    sim.run(3600)  # one hour on the old time base: 4 entries
    before = sim.profile()
    energy_before = sim.energy()
    old_time = sim.meter.clock.now()
    assert [r.capture_time for r in before] == _boundaries(T0 + 30, old_time)

    change = sim.meter.clock.shift(jump) if abs(jump) <= 900 else sim.meter.clock.set_time(old_time + jump, "set")
    assert change.kind == "adjusted"
    new_time = old_time + jump
    assert sim.meter.clock.now() == pytest.approx(new_time)
    sim.meter.tick()
    assert sim.energy() == energy_before, "no time passed: no energy may be registered for the skipped interval"

    sim.run(3600)
    after = sim.profile()
    assert after[:len(before)] == before, "history is kept as it was"
    new = after[len(before):]
    expected_times = _boundaries(new_time, new_time + 3600)
    assert [r.capture_time for r in new] == expected_times, "entries only at boundaries of the new time, none for skipped periods"
    assert [r.status & CAD for r in new] == [CAD] + [0] * (len(new) - 1)
    events = sim.time_events()
    assert len(events) == 1
    assert events[0]["old_time"] == int(old_time) and events[0]["new_time"] == int(new_time)
    assert events[0]["kind"] == "adjusted"


@pytest.mark.welmec("L1", "L7")
@pytest.mark.parametrize("jump", [-20 * 60, -3 * 86400, -61 * 86400], ids=["20 minutes", "3 days", "2 months"])
def test_backward_jump_does_not_suppress_captures(sim, jump):
    """After a backward clock adjustment of minutes, days or months every boundary of the new time is captured (CAD on the first), the registers never go back, and the change is logged with old and new time."""
    sim.run(3 * 3600)
    before = sim.profile()
    old_time = sim.meter.clock.now()
    energy_before = sim.energy()

    change = sim.meter.clock.set_time(old_time + jump, "set")
    assert change.kind == "adjusted"
    new_time = old_time + jump
    sim.meter.tick()
    assert sim.energy() == energy_before

    sim.run(2 * 3600)
    after = sim.profile()
    assert after[:len(before)] == before
    new = after[len(before):]
    # every boundary of the new time is captured, although those times were captured before
    assert [r.capture_time for r in new] == _boundaries(new_time, new_time + 2 * 3600)
    assert len(new) == 8
    assert [r.status & CAD for r in new] == [CAD] + [0] * 7
    # the registers never go back, whatever the time stamps do
    for a, b in zip(after, after[1:]):
        assert (b.a_plus, b.a_minus, b.r_plus, b.r_minus) >= (a.a_plus, a.a_minus, a.r_plus, a.r_minus)
    (event,) = sim.time_events()
    assert (event["old_time"], event["new_time"]) == (int(old_time), int(new_time))


def test_synchronisation_below_the_limit_sets_no_cad_and_never_duplicates_an_entry(sim):
    sim.run(840)  # 12:14:30
    sim.run(32, step=32)  # 12:15:02, just past the boundary: captured
    assert [r.capture_time for r in sim.profile()] == [T0 + 900]
    sim.meter.clock.shift(-5)  # back across the boundary to 12:14:57: a synchronisation, not an adjustment
    sim.run(1860)  # to 12:45:57
    rows = sim.profile()
    assert [r.capture_time for r in rows] == [T0 + 900, T0 + 1800, T0 + 2700], "12:15 is not captured twice"
    assert not any(r.status & CAD for r in rows)
    (event,) = sim.time_events()
    assert event["kind"] == "synchronised"
    sim.meter.clock.shift(1)  # under 2 s: not a change at all
    assert len(sim.time_events()) == 1


def test_adjustment_across_a_boundary_skips_it(sim):
    sim.run(900 - 30 - 120)  # 12:13:00
    sim.meter.clock.shift(150)  # 12:15:30: an adjustment (>= 9 s) over the 12:15 boundary
    sim.run(60)
    rows = sim.profile()
    assert [r.capture_time for r in rows] == [], "an adjustment skips the boundary it jumps over"
    sim.run(900)
    assert [(r.capture_time, r.status & CAD) for r in sim.profile()] == [(T0 + 1800, CAD)]


def test_small_forward_synchronisation_across_a_boundary_captures_it(sim):
    sim.run(840)  # 12:14:30
    sim.meter.clock.shift(5)  # 12:14:35
    sim.run(60)  # 12:15:35
    assert [(r.capture_time, r.status) for r in sim.profile()] == [(T0 + 900, 0)]


def test_dst_bit_follows_the_season_of_the_capture(tmp_path):
    summer = 1_784_116_800  # 2026-07-15 12:00:00 UTC (14:00 CEST)
    s = SimulatedMeter(tmp_path, summer + 30)
    try:
        s.run(1800)
        assert [r.status for r in s.profile()] == [DST, DST]
    finally:
        s.close()


def _local_setting(year, month, day, hour, minute, second=0) -> bytes:
    # deviation and status "not specified", as the companion standard's DST rule assumes
    return axdr.encode_date_time(CosemDateTime(CosemDate(year, month, day, None), CosemTime(hour, minute, second, None), None, None))


def test_clock_write_is_local_time_and_the_skipped_dst_hour_is_refused(sim):
    sim.meter.clock.set_from_cosem(_local_setting(2026, 3, 10, 18, 0))
    assert sim.meter.clock.now() == 1_773_162_000  # 18:00 CET = 17:00 UTC
    with pytest.raises(ClockSetRefused):
        sim.meter.clock.set_from_cosem(_local_setting(2026, 3, 29, 2, 30))  # does not exist in Europe/Berlin
    assert sim.meter.clock.now() == 1_773_162_000
    assert len(sim.time_events()) == 1


def test_the_time_base_survives_a_restart(tmp_path):
    s = SimulatedMeter(tmp_path, T0 + 30)
    s.run(600)
    s.meter.clock.shift(600)
    shifted = s.meter.clock.now()
    platform = s.platform[0]
    s.close()
    again = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: platform))
    try:
        assert again.clock.now() == pytest.approx(shifted)
    finally:
        again.close()


@pytest.mark.welmec("L1", "P5")
def test_the_legal_part_refuses_captures_outside_the_time_base(tmp_path):
    """A changed communication side cannot fill the profile: a capture must be at a period boundary and,
    once the clock was adjusted, never for a boundary the new time skipped."""
    part = legal.LegalInterface(tmp_path)
    try:
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndMeasurementPeriod(T0 + 17))
        part.execute(legal.EndMeasurementPeriod(T0))
        change = part.execute(legal.SetTime(float(T0 + 86400), float(T0 + 60), "00" * 8, "set"))
        assert change.kind == "adjusted"
        for t in range(T0 + 900, T0 + 86400 + 1, 900 * 8):  # skipped periods: no entry
            part.execute(legal.EndMeasurementPeriod(t))
        assert [r.capture_time for r in part.execute(legal.ReadLoadProfile())] == [T0]
        part.execute(legal.EndMeasurementPeriod(T0 + 86400 + 900))
        assert [(r.capture_time, r.status) for r in part.execute(legal.ReadLoadProfile())] == [(T0, 0), (T0 + 86400 + 900, CAD)]
    finally:
        part.close()


def test_real_time_part_refuses_captures_far_from_its_own_clock(tmp_path):
    import time
    part = legal.LegalInterface(tmp_path, realtime=True)
    try:
        now = time.time()
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndMeasurementPeriod(int(now // 900 + 10) * 900))  # in the future
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.EndMeasurementPeriod(int(now // 900 - 10) * 900))  # long past
        part.execute(legal.EndMeasurementPeriod(int(now // 900) * 900))
        assert part.execute(legal.CountLoadProfileEntries()) == 1
    finally:
        part.close()


@pytest.mark.welmec("L3", "P5")
def test_an_edited_time_base_in_the_store_is_a_store_error_and_is_not_honoured(tmp_path):
    """Moving the meter's time by editing the stored offset (outside the meter) is detected at the next start: fatal store bit 0x04, event 201, and the edited offset is not used."""
    import json
    import sqlite3

    part = legal.LegalInterface(tmp_path)
    part.execute(legal.SetTime(float(T0 + 3600), float(T0), "00" * 8, "set"))
    honest = part.execute(legal.ReadTimeBase())
    part.close()
    again = legal.LegalInterface(tmp_path)
    assert again.execute(legal.ReadTimeBase()) == honest and again.execute(legal.ReadFatalErrors()) == 0
    again.close()

    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    (text,) = db.execute("SELECT value FROM meta WHERE key = 'time_base'").fetchone()
    state = json.loads(json.loads(text))
    state["offset"] += 86400  # a day ahead, without a trace in the log
    db.execute("UPDATE meta SET value = ? WHERE key = 'time_base'", (json.dumps(json.dumps(state, sort_keys=True)),))
    db.commit()
    db.close()

    tampered = legal.LegalInterface(tmp_path)
    try:
        assert tampered.execute(legal.ReadFatalErrors()) & 0x04
        assert tampered.execute(legal.ReadTimeBase()) != honest + 86400
        assert any(r.event_id == 201 and "time_base" in r.fields_json for r in tampered.execute(legal.ReadMetrologicalLog()))
    finally:
        tampered.close()
