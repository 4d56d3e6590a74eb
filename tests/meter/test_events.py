"""The meter's history from real causes (companion §5.4, §5.7, §5.10-5.13, §9).

Each scenario runs a meter on a clock the test moves, causes something (an outage, a clock
write, a cover opened, a battery exhausted, an opt-out), and checks the event logs, counters,
alarm bits and profile entries against what the scenario implies. Expected codes and bits are
written here from the companion standard and the catalog, not taken from the meter's tables.
"""
from __future__ import annotations

import datetime as dt
import os
import stat
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import ClockSetRefused, MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.meter.world import WorldInputError

BERLIN = ZoneInfo("Europe/Berlin")
PERIOD = 900
PDN, CAD, CDI, DST, DNV, CIV = 0x80, 0x20, 0x10, 0x08, 0x04, 0x02
FRAUD_ATTEMPT = 1 << 13  # alarm register 1 (catalog §6)
POWER_UP = 1 << 2
CLOCK_INVALID = 1 << 0
REPLACE_BATTERY = 1 << 1


def utc(*args) -> int:
    """UTC seconds of a Berlin local time."""
    return int(dt.datetime(*args, tzinfo=BERLIN).timestamp())


class SimulatedMeter:
    """A meter whose platform clock is a number the test moves; it ticks once a minute."""

    def __init__(self, data_dir, start: float) -> None:
        self.platform = [float(start)]
        self.data_dir = data_dir
        self.meter = Meter(MeterConfig(data_dir=data_dir, backfill_days=0), clock=MeterClock(source=lambda: self.platform[0]))

    def run(self, seconds: int, step: int = 60) -> None:
        for _ in range(seconds // step):
            self.platform[0] += step
            self.meter.tick()

    def off_for(self, seconds: int) -> tuple[float, float]:
        """A complete power failure of `seconds`: -> (meter time down, meter time up)."""
        down = self.meter.clock.now()
        self.meter.power_down()
        self.platform[0] += seconds
        self.meter.power_up()
        return down, self.meter.clock.now()

    def log(self, name: str) -> list[tuple[int, int]]:
        return [(e.time, e.code) for e in self.meter.events.entries(name)]

    def profile(self) -> list[legal.ProfileRow]:
        return list(self.meter.legal.execute(legal.ReadLoadProfile()))

    def daily(self) -> list[legal.ProfileRow]:
        return list(self.meter.legal.execute(legal.ReadDailyProfile()))

    def close(self) -> None:
        self.meter.close()


@pytest.fixture
def sim(tmp_path):
    s = SimulatedMeter(tmp_path, utc(2026, 3, 10, 13, 0) + 30)
    yield s
    s.close()


def _boundaries(start: float, end: float) -> list[int]:
    first = int(start // PERIOD + 1) * PERIOD
    return list(range(first, int(end) + 1, PERIOD))


def test_a_long_outage_is_logged_counted_and_marked_in_both_profiles(sim):
    sim.run(600)
    start_entries = sim.profile()
    down, up = sim.off_for(3 * 3600)
    sim.run(3600)
    assert sim.log("standard") == [(int(down), 1), (int(up), 2)]
    assert [code for _, code in sim.log("security")] == [1, 2]
    assert sim.meter.events.counter("G_EC_05") == 2  # start-up/reset group
    assert sim.meter.events.counter("power_failures") == 1
    assert sim.meter.events.counter("long_power_failures") == 1
    assert [(e.time, e.value) for e in sim.meter.events.entries("power_failure")] == [(int(up), 3 * 3600)]
    # no entries for periods the meter was off; the first one after power-up carries PDN
    after = sim.profile()[len(start_entries):]
    assert [r.capture_time for r in after] == _boundaries(up, up + 3600)
    assert [r.status & PDN for r in after] == [PDN, 0, 0, 0]
    assert sim.meter.alarms.alarm_register(1) & POWER_UP


def test_a_short_outage_is_counted_but_not_long(sim):
    sim.run(300)
    sim.off_for(120)  # under the 180 s threshold (IDIS default of 0-0:96.7.20.255)
    assert sim.meter.events.counter("power_failures") == 1
    assert sim.meter.events.counter("long_power_failures") == 0
    assert sim.meter.events.entries("power_failure") == []


def test_an_outage_across_midnight_skips_that_midnight_and_marks_the_next(tmp_path):
    s = SimulatedMeter(tmp_path, utc(2026, 3, 10, 20, 0) + 30)
    try:
        s.run(4 * 3600)  # to 00:00:30: the 00:00 daily entry
        assert [r.capture_time for r in s.daily()] == [utc(2026, 3, 11, 0, 0)]
        s.run(22 * 3600)  # to 22:00:30 on the 11th
        s.run(30 * 60)  # 22:30:30
        down, up = s.off_for(3 * 3600)  # back at 01:30:30 on the 12th
        s.run(23 * 3600)  # to 00:30:30 on the 13th
        daily = s.daily()
        # midnight of the 12th fell in the outage: synchronous captures are not made up afterwards
        assert [r.capture_time for r in daily] == [utc(2026, 3, 11, 0, 0), utc(2026, 3, 13, 0, 0)]
        assert [r.status & PDN for r in daily] == [0, PDN]
        lp1 = [r for r in s.profile() if down - 3600 <= r.capture_time <= up + 3600]
        assert [r.capture_time for r in lp1] == _boundaries(down - 3600, down) + _boundaries(up, up + 3600)
        first_after = next(r for r in lp1 if r.capture_time > up)
        assert first_after.status & PDN
    finally:
        s.close()


@pytest.mark.parametrize("delta, logged", [(1, False), (5, False), (30, True)], ids=["1 s", "5 s", "30 s"])
def test_clock_writes_below_and_beyond_the_limit(sim, delta, logged):
    sim.run(120)
    old = sim.meter.clock.now()
    sim.meter.clock.set_time(old + delta, "set")
    if logged:  # companion §5.4: from 9 s on, events 4 (old time) and 5 (new time), CAD on the next entry
        assert sim.log("standard") == [(int(old), 4), (int(old + delta), 5)]
        assert sim.meter.events.counter("G_EC_03") == 2
        security = sim.meter.events.entries("security")
        assert [(e.code, e.client_sap, e.system_title) for e in security] == [(4, 0xFF, b"\xff"), (5, 0xFF, b"\xff")]
    else:
        assert sim.log("standard") == [] and sim.meter.events.counter("G_EC_03") == 0
    sim.run(900)
    first = sim.profile()[0]
    assert bool(first.status & CAD) == logged


def test_a_time_in_the_hour_skipped_by_dst_is_refused_and_nothing_changes(sim):
    before = sim.meter.clock.now()
    gap = axdr.encode_date_time(CosemDateTime(CosemDate(2026, 3, 29, None), CosemTime(2, 30, 0, 0), None, None))
    with pytest.raises(ClockSetRefused):
        sim.meter.clock.set_from_cosem(gap)
    assert sim.meter.clock.now() == pytest.approx(before)
    assert sim.log("standard") == []


def test_covers_and_magnet_are_fraud_events_not_retriggered_while_they_persist(sim):
    m = sim.meter
    m.control({"input": "cover", "value": "open"})
    sim.run(60)
    m.control({"input": "cover", "value": "open"})  # still open: no new event
    m.control({"input": "terminal-cover", "value": "open"})
    m.control({"input": "magnet", "value": "on"})
    m.control({"input": "magnet", "value": "off"})
    m.control({"input": "cover", "value": "close"})
    m.control({"input": "terminal-cover", "value": "close"})
    m.control({"input": "cover", "value": "close"})  # already closed: nothing
    assert [code for _, code in sim.log("fraud")] == [44, 40, 42, 43, 45, 41]
    assert [code for _, code in sim.log("security")] == [44, 40, 42, 43, 45, 41]
    assert m.events.counter("G_EC_04") == 6
    assert m.events.last_code("fraud") == 41
    # fraud attempt (bit 13) stays latched after the causes are gone, until cleared externally
    assert m.alarms.alarm_register(1) & FRAUD_ATTEMPT
    assert m.alarms.error_register & FRAUD_ATTEMPT


def test_a_restart_does_not_repeat_an_event_whose_cause_persists(tmp_path):
    s = SimulatedMeter(tmp_path, utc(2026, 3, 10, 13, 0) + 30)
    s.meter.control({"input": "cover", "value": "open"})
    s.close()
    again = SimulatedMeter.__new__(SimulatedMeter)
    again.platform, again.data_dir = [s.platform[0] + 60], tmp_path
    again.meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: again.platform[0]))
    try:
        again.meter.control({"input": "cover", "value": "open"})
        assert [code for _, code in again.log("fraud")] == [44]
        again.meter.control({"input": "cover", "value": "close"})
        assert [code for _, code in again.log("fraud")] == [44, 45]
        # the clean stop and start is a power failure too
        assert [code for _, code in again.log("standard")] == [1, 2]
    finally:
        again.close()


def test_an_exhausted_backup_loses_the_time_in_an_outage(sim):
    sim.run(600)
    sim.meter.control({"input": "battery", "value": "exhausted"})
    assert sim.log("standard")[-1][1] == 7  # replace battery
    down = sim.meter.clock.now()
    sim.meter.power_down()
    sim.platform[0] += 2 * 3600
    sim.meter.power_up()
    up = sim.meter.clock.now()
    # companion §5.4: power-up = power-down + 1 s, clock invalid until set
    assert int(up) == int(down) + 1
    assert [(t, c) for t, c in sim.log("standard")][-3:] == [(int(down), 1), (int(down) + 1, 2), (int(down) + 1, 6)]
    assert sim.meter.clock.status() & 0x01  # invalid value
    assert sim.meter.alarms.error_register & CLOCK_INVALID
    sim.run(900)
    marked = sim.profile()[-1]
    assert marked.status & (CIV | DNV | PDN) == CIV | DNV | PDN
    sim.meter.clock.set_time(sim.meter.clock.now(), "set")  # setting the clock makes it valid again
    assert not sim.meter.clock.status() & 0x01
    assert not sim.meter.alarms.error_register & CLOCK_INVALID
    sim.run(900)
    assert not sim.profile()[-1].status & (CIV | DNV)


def test_opt_out_and_opt_in_through_the_load_profile_control_script(sim):
    """Catalog §3.6, 15-min example: opt-out at 01:15 -> 01:15 CDI 0, 01:30 CDI 1; opt-in at
    04:52 -> 05:00 CDI 1, 05:15 CDI 0; no entries in between."""
    s = sim
    s.platform[0] = utc(2026, 3, 11, 0, 0) + 30  # the test clock may jump before anything is captured
    s.meter._last_tick = s.meter.clock.now()
    s.run(75 * 60 - 60)  # 01:14:30
    s.run(60)  # 01:15:30: the 01:15 entry exists
    script_table = bytes.fromhex("00000a006dff")
    s.meter.server.run_script(script_table, 4)  # disable LP1
    s.run(217 * 60)  # 04:52:30
    s.meter.server.run_script(script_table, 3)  # enable LP1
    s.run(30 * 60)  # 05:22:30
    rows = [r for r in s.profile() if r.capture_time >= utc(2026, 3, 11, 1, 0)]
    assert [(r.capture_time, bool(r.status & CDI)) for r in rows] == [
        (utc(2026, 3, 11, 1, 0), False), (utc(2026, 3, 11, 1, 15), False), (utc(2026, 3, 11, 1, 30), True),
        (utc(2026, 3, 11, 5, 0), True), (utc(2026, 3, 11, 5, 15), False)]
    assert [code for _, code in s.log("standard")] == [231, 230]  # LP1 disabled, enabled


def test_a_spring_dst_night_has_no_extra_entries_and_the_dst_bit_after_the_change(tmp_path):
    s = SimulatedMeter(tmp_path, utc(2026, 3, 29, 1, 0) + 30)
    try:
        s.run(2 * 3600)  # 01:00 CET .. 04:00 CEST: one real hour and one more
        rows = s.profile()
        local = [dt.datetime.fromtimestamp(r.capture_time, BERLIN).strftime("%H:%M") for r in rows]
        assert local == ["01:15", "01:30", "01:45", "03:00", "03:15", "03:30", "03:45", "04:00"]
        assert [bool(r.status & DST) for r in rows] == [False] * 3 + [True] * 5
    finally:
        s.close()


def test_an_autumn_dst_night_repeats_the_hour(tmp_path):
    s = SimulatedMeter(tmp_path, utc(2026, 10, 25, 1, 45) + 30)
    try:
        # catalog §3.6: 02:00-02:45 appear with DST = 1, then again with DST = 0; no extra entries
        s.run(3 * 3600)  # 01:45 CEST .. 03:45 CET
        rows = s.profile()
        stamps = [(dt.datetime.fromtimestamp(r.capture_time, BERLIN).strftime("%H:%M"), bool(r.status & DST))
                  for r in rows]
        assert stamps == [("02:00", True), ("02:15", True), ("02:30", True), ("02:45", True),
                          ("02:00", False), ("02:15", False), ("02:30", False), ("02:45", False),
                          ("03:00", False), ("03:15", False), ("03:30", False), ("03:45", False)]
        # the daily profile: one entry at local midnight of the 26th after 25 h
        s.run(21 * 3600)
        assert [r.capture_time for r in s.daily()] == [utc(2026, 10, 26, 0, 0)]
    finally:
        s.close()


def test_the_control_channel_refuses_unknown_inputs_and_changes_nothing(sim):
    before = sim.meter.status()
    for request in ({"input": "door", "value": "open"}, {"input": "cover", "value": "ajar"},
                    {"input": "voltage", "phase": "L4", "value": 230}, {"input": "load", "power": "lots"},
                    {"input": "button", "value": "Z"}):
        with pytest.raises(WorldInputError):
            sim.meter.control(request)
    assert sim.meter.control({"nothing": 1})["ok"] is False
    assert sim.meter.status()["world"] == before["world"]
    assert sim.log("fraud") == []


def test_a_sim_load_is_registered_exactly(sim):
    sim.meter.control({"input": "load", "power": 1200, "pf": 1.0})
    before = sim.meter.legal.execute(legal.ReadEnergyRegisters())
    sim.run(3600)
    after = sim.meter.legal.execute(legal.ReadEnergyRegisters())
    assert after.a_plus - before.a_plus == 1200  # 1200 W for one hour
    assert after.r_plus == before.r_plus


def test_security_counters_are_reset_only_to_zero(sim):
    sim.meter.control({"input": "cover", "value": "open"})
    binding = sim.meter.directory.bindings["events.g_ec_04"]
    assert binding.get() == Data.double_long_unsigned(1)
    from smartmeter.cosem.classes.base import CosemAccessError

    with pytest.raises(CosemAccessError):
        binding.set(Data.double_long_unsigned(5))
    assert binding.get() == Data.double_long_unsigned(1)
    binding.set(Data.double_long_unsigned(0))
    assert binding.get() == Data.double_long_unsigned(0)


def test_the_event_store_is_private(sim):
    sim.meter.control({"input": "cover", "value": "open"})
    mode = stat.S_IMODE(os.stat(sim.data_dir / "events.sqlite3").st_mode)
    assert mode == 0o600
