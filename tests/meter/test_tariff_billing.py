"""Tariffs and billing on the fast clock (companion §5.5, §5.6; catalog §3.4, §3.5).

Each scenario runs a meter on a clock the test moves, with a constant load set as `smartmeter
sim load` sets it, and a calendar: the companion's example (T1 22:00-06:00, T2 06:00-22:00,
public holidays T1 all day) or one the test writes. The expected rate energies, maxima, switch
instants and billing rows are computed here, minute by minute, from the load, the calendar as
written in this file and public holiday dates typed from a calendar; never from the meter's code.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

BERLIN = ZoneInfo("Europe/Berlin")
CTX = RequestContext("management", 1)
MDI_SCRIPT = Obis.parse("0-0:10.0.1.255").to_bytes()
TARIFF_SCRIPTS = Obis.parse("0-0:10.0.100.255").to_bytes()
# Austrian public holidays of May and June 2026 (Staatsfeiertag, Christi Himmelfahrt, Pfingstmontag,
# Fronleichnam), from a printed calendar
HOLIDAYS_2026 = {dt.date(2026, 5, 1), dt.date(2026, 5, 14), dt.date(2026, 5, 25), dt.date(2026, 6, 4)}
LOAD_W, LOAD_VAR = 1200.0, 300.0


def local(*args) -> float:
    return dt.datetime(*args, tzinfo=BERLIN).timestamp()


def example_rate(t: float) -> int:
    """The companion's example: T1 22:00-06:00, T2 06:00-22:00; public holidays T1 all day."""
    at = dt.datetime.fromtimestamp(t, BERLIN)
    if at.date() in HOLIDAYS_2026:
        return 1
    return 2 if 6 <= at.hour < 22 else 1


def split(start: float, end: float, rate_of, power: float) -> dict[int, float]:
    """Energy (Wh) per rate of a constant `power` from start to end, second-exact at the edges,
    minute by minute in between (every switch of these calendars is on a whole minute)."""
    out = {1: 0.0, 2: 0.0}
    t = start
    while t < end:
        step = min(60.0 - t % 60.0, end - t)
        out[rate_of(t)] += power * step / 3600.0
        t += step
    return out


class FastMeter:
    """A meter on a clock the test moves (its platform clock), ticking every `step` seconds."""

    def __init__(self, data_dir, start: float) -> None:
        self.platform = [float(start)]
        self.data_dir = data_dir
        self.meter = self._open()

    def _open(self) -> Meter:
        return Meter(MeterConfig(data_dir=self.data_dir, backfill_days=0),
                     clock=MeterClock(source=lambda: self.platform[0]))

    def load(self, power: float, reactive: float = 0.0) -> None:
        """As `smartmeter sim load --power P --pf PF` (an inductive load)."""
        pf = power / (power ** 2 + reactive ** 2) ** 0.5
        assert self.meter.control({"input": "load", "power": power, "pf": pf})["ok"]

    def run_until(self, t: float, step: float = 3600.0) -> None:
        while self.platform[0] < t:
            self.platform[0] = min(t, self.platform[0] + step)
            self.meter.tick()

    def restart(self) -> None:
        self.meter.close()
        self.meter = self._open()

    def obj(self, obis: str):
        return self.meter.directory.by_ln[Obis.parse(obis).to_bytes()][1]

    def get(self, obis: str, index: int = 2) -> Data:
        return self.obj(obis).get(index, CTX)

    def rates(self) -> legal.RateSnapshot:
        return self.meter.legal.execute(legal.ReadRateRegisters())

    def billing(self) -> list[legal.BillingRow]:
        return list(self.meter.legal.execute(legal.ReadBillingProfile()))

    def remote_reset(self) -> DataAccessResult:
        """What a client's execute of the MDI reset script runs (the meter's own path for it)."""
        return self.meter.server.run_script(MDI_SCRIPT, 1)

    def close(self) -> None:
        self.meter.close()


@pytest.fixture
def make(tmp_path):
    made = []

    def factory(start: float) -> FastMeter:
        m = FastMeter(tmp_path, start)
        made.append(m)
        return m
    yield factory
    for m in made:
        m.close()


def assert_energy(row_or_rates, expected: dict[int, float], quantity: int = 0) -> None:
    """Rate registers within 1 Wh of the exact split (a whole Wh goes to the rate active when
    it completes), and rate 1 + rate 2 equal to the total exactly."""
    total, r1, r2 = row_or_rates
    assert abs(r1 - expected[1]) <= 1 and abs(r2 - expected[2]) <= 1, (r1, r2, expected)
    assert r1 + r2 == total


def test_a_month_of_the_example_calendar_with_holidays(make):
    """May 2026 at 1200 W / 300 var: rates by the example calendar and three holidays, one
    billing at 00:00 on June 1 with the month's maxima, and every rate change logged."""
    start = local(2026, 5, 1, 0, 0, 30)
    m = make(start)
    m.load(LOAD_W, LOAD_VAR)
    end_of_may = local(2026, 6, 1)
    m.run_until(local(2026, 6, 1, 1, 0))
    rows = m.billing()
    assert len(rows) == 1
    row = rows[0]
    assert (row.capture_time, row.counter, row.trigger) == (end_of_may, 1, "scheduled")
    assert_energy(row.energy[0:3], split(start, end_of_may, example_rate, LOAD_W))
    assert_energy(row.energy[6:9], split(start, end_of_may, example_rate, LOAD_VAR))
    assert row.energy[3:6] == row.energy[9:12] == (0, 0, 0)  # nothing exported, no capacitive load
    # the first full demand period is 00:15-00:30 on May 1 (the meter started at 00:00:30)
    assert row.maximum[0] == LOAD_W and row.maximum_time[0] == local(2026, 5, 1, 0, 30)
    assert abs(row.maximum[2] - LOAD_VAR) <= 1  # (Q from a power factor: its last var may be a fraction)
    assert row.cumulative == row.maximum
    # the maxima restarted at the billing: the first period of June is the new maximum
    maximum = m.meter.legal.execute(legal.ReadMaximumDemand("a_plus"))
    assert (maximum.value, maximum.capture_time, maximum.cumulative) == (LOAD_W, local(2026, 6, 1, 0, 15), LOAD_W)
    # the rate registers as objects, and the tariff in force at 01:00
    now = split(start, local(2026, 6, 1, 1, 0), example_rate, LOAD_W)
    assert_energy((m.get("1-0:1.8.0.255").value, m.get("1-0:1.8.1.255").value, m.get("1-0:1.8.2.255").value), now)
    assert m.get("0-0:96.14.0.255") == Data.octet_string(b"T1")
    assert m.get("0-0:0.1.0.255") == Data.unsigned(1)
    # every change of the rate, at its instant, after the first activation at start
    changes, t, last = [], start, example_rate(start)
    while t < local(2026, 6, 1, 1, 0):
        t = (t // 60 + 1) * 60
        if example_rate(t) != last:
            last = example_rate(t)
            changes.append((int(t), f"T{last}".encode()))
    log = [(m.meter.clock.utc_from_cosem(axdr.decode_date_time(c)), name)
           for c, name in m.obj("0-0:99.98.11.255").source.rows(None, None)]
    assert log[0] == (int(start), b"T1") and log[1:] == changes
    assert dt.datetime.fromtimestamp(changes[0][0], BERLIN).time() == dt.time(6, 0)  # May 2, not the holiday


# -- a calendar the head-end writes: winter and summer seasons, holidays T1 ----------------------
def time4(hour: int, minute: int) -> bytes:
    return bytes([hour, minute, 0, 0])


def every_year(month: int, day: int) -> bytes:
    return bytes([0xFF, 0xFF, month, day, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])


def switch(hour: int, minute: int, tariff: int) -> Data:
    return Data.structure([Data.octet_string(time4(hour, minute)), Data.octet_string(TARIFF_SCRIPTS),
                           Data.long_unsigned(tariff)])


SEASONS = Data.array([
    Data.structure([Data.octet_string(b"summer"), Data.octet_string(every_year(6, 15)), Data.octet_string(b"WS")]),
    Data.structure([Data.octet_string(b"winter"), Data.octet_string(every_year(10, 1)), Data.octet_string(b"WW")])])
WEEKS = Data.array([Data.structure([Data.octet_string(b"WS"), *[Data.unsigned(1)] * 7]),
                    Data.structure([Data.octet_string(b"WW"), *[Data.unsigned(3)] * 7])])
DAYS = Data.array([
    Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1), switch(8, 0, 2), switch(20, 0, 1)])]),  # summer
    Data.structure([Data.unsigned(2), Data.array([switch(0, 0, 1)])]),  # public holidays
    Data.structure([Data.unsigned(3), Data.array([switch(0, 0, 1), switch(6, 30, 2), switch(21, 45, 1)])]),  # winter
])


def written_rate(t: float) -> int:
    """The calendar above: summer from June 15 (T2 08:00-20:00), winter from October 1 (T2
    06:30-21:45, in force before June 15 too: the season of the year before), holidays T1."""
    at = dt.datetime.fromtimestamp(t, BERLIN)
    if at.date() in HOLIDAYS_2026:
        return 1
    if at.date() >= dt.date(2026, 6, 15):
        return 2 if 8 <= at.hour < 20 else 1
    minutes = at.hour * 60 + at.minute
    return 2 if 6 * 60 + 30 <= minutes < 21 * 60 + 45 else 1


def test_a_passive_calendar_activated_mid_month_with_a_season_change(make):
    """June 2026: the example calendar until June 10 12:00, when the written one takes over (its
    winter season first, its summer from June 15); the billing on July 1 splits the month so."""
    start = local(2026, 6, 1, 0, 0, 30)
    m = make(start)
    m.load(LOAD_W)
    calendar = m.obj("0-0:13.0.0.255")
    activation = local(2026, 6, 10, 12, 0)
    at = dt.datetime.fromtimestamp(activation, BERLIN)
    calendar.set(6, Data.octet_string(b"KSMW-2026"), CTX)
    for index, value in ((7, SEASONS), (8, WEEKS), (9, DAYS)):
        calendar.set(index, value, CTX)
    calendar.set(10, Data.octet_string(bytes([at.year >> 8, at.year & 0xFF, at.month, at.day, 0xFF, at.hour,
                                              at.minute, 0, 0, 0x80, 0x00, 0xFF])), CTX)
    m.run_until(local(2026, 7, 1, 0, 30))
    row = m.billing()[-1]
    assert row.capture_time == local(2026, 7, 1) and row.counter == 1

    def rate(t: float) -> int:
        return example_rate(t) if t < activation else written_rate(t)

    assert_energy(row.energy[0:3], split(start, local(2026, 7, 1), rate, LOAD_W))
    # the active calendar is now the written one, and its activation time is used up
    assert [calendar.get(i, CTX) for i in (2, 3, 4, 5)] == [Data.octet_string(b"KSMW-2026"), SEASONS, WEEKS, DAYS]
    assert calendar.get(10, CTX).value == bytes([0xFF] * 9 + [0x80, 0x00, 0xFF])


def test_a_monthly_billing_due_during_a_power_failure_is_made_once_at_power_up(make):
    """The supply fails at 20:00 on May 31 and returns at 08:00 on June 1: the billing of 00:00 is
    made once, at power-up, with the registers as the failure left them (§5.4.1)."""
    start = local(2026, 5, 31, 12, 0, 30)
    m = make(start)
    m.load(LOAD_W)
    down = local(2026, 5, 31, 20, 0)
    m.run_until(down)
    m.meter.control({"input": "supply", "value": "off"})
    m.run_until(local(2026, 6, 1, 8, 0))
    m.meter.control({"input": "supply", "value": "on"})
    m.run_until(local(2026, 6, 1, 9, 0), step=60)
    rows = m.billing()
    assert [(r.capture_time, r.counter, r.trigger) for r in rows] == [(local(2026, 6, 1, 8, 0), 1, "scheduled")]
    assert_energy(rows[0].energy[0:3], split(start, down, example_rate, LOAD_W))
    assert rows[0].energy[2] == rows[0].energy[0]  # 12:00-20:00 on a working day: all T2


def test_the_reset_lock(make):
    """Every asynchronous capture locks out the next for 15 minutes: a remote reset is refused
    (other-reason), the button and the ad-hoc schedule are ignored, the monthly schedule is not
    affected; the lock outlives a restart."""
    m = make(local(2026, 3, 31, 23, 40, 0))
    m.load(LOAD_W)
    m.run_until(local(2026, 3, 31, 23, 50), step=60)
    assert m.remote_reset() == DataAccessResult.SUCCESS  # 23:50: counter 1, lock until 00:05
    m.run_until(local(2026, 3, 31, 23, 55), step=60)
    assert m.remote_reset() == DataAccessResult.OTHER_REASON
    assert m.meter.control({"input": "button", "value": "R"})["ok"]  # ignored without a word
    m.restart()
    assert m.remote_reset() == DataAccessResult.OTHER_REASON  # the lock is stored
    # an ad-hoc billing at 00:02, inside the lock: ignored
    adhoc = m.obj("0-0:15.1.0.255")
    adhoc.set(4, Data.array([Data.structure([Data.octet_string(bytes([0, 2, 0, 0])),
                                             Data.octet_string(bytes([0x07, 0xEA, 4, 1, 0xFF]))])]), CTX)
    m.run_until(local(2026, 4, 1, 0, 3), step=60)  # the monthly one at 00:00 is made all the same
    assert [(r.capture_time, r.counter, r.trigger) for r in m.billing()] == [
        (local(2026, 3, 31, 23, 50), 1, "remote"), (local(2026, 4, 1), 2, "scheduled")]
    m.run_until(local(2026, 4, 1, 0, 6), step=60)  # the lock (from 23:50) is over at 00:05
    assert m.meter.control({"input": "button", "value": "R"})["ok"]
    assert m.remote_reset() == DataAccessResult.OTHER_REASON  # the button's capture locks again
    assert [(r.capture_time, r.counter, r.trigger) for r in m.billing()][-1] == (local(2026, 4, 1, 0, 6), 3, "button")


def test_the_counter_rolls_over_from_99_to_00(make):
    m = make(local(2026, 3, 10, 0, 0, 0))
    for _ in range(101):
        m.run_until(m.platform[0] + 16 * 60, step=16 * 60)  # past the lock of the reset before
        assert m.remote_reset() == DataAccessResult.SUCCESS
    assert [r.counter for r in m.billing()] == list(range(87, 100)) + [0, 1]
    assert m.get("0-0:0.1.0.255") == Data.unsigned(1)
    assert m.get("0-0:98.1.0.255", 7) == Data.double_long_unsigned(15)


def test_the_monthly_billing_is_switched_off_by_an_empty_list_or_an_undefined_time(make):
    m = make(local(2026, 4, 30, 23, 0, 0))
    m.load(LOAD_W)
    monthly = m.obj("0-0:15.0.0.255")
    assert m.meter.status()["billing"]["monthly schedule"] == "active"
    monthly.set(4, Data.array([]), CTX)
    assert m.meter.status()["billing"]["monthly schedule"] == "inactive"
    m.run_until(local(2026, 5, 1, 1, 0))
    undefined = Data.array([Data.structure([Data.octet_string(bytes([0xFF, 0xFF, 0xFF, 0xFF])),
                                            Data.octet_string(bytes([0xFF, 0xFF, 0xFF, 1, 0xFF]))])])
    monthly.set(4, undefined, CTX)
    assert m.meter.status()["billing"]["monthly schedule"] == "inactive"
    m.run_until(local(2026, 6, 1, 1, 0))
    assert m.billing() == []
    monthly.set(4, Data.array([Data.structure([Data.octet_string(bytes([0, 0, 0, 0xFF])),
                                               Data.octet_string(bytes([0xFF, 0xFF, 0xFF, 1, 0xFF]))])]), CTX)
    m.run_until(local(2026, 7, 1, 1, 0))
    assert [r.capture_time for r in m.billing()] == [local(2026, 7, 1)]


def test_while_the_clock_is_invalid_the_default_tariff_script_is_in_force(make):
    """At 23:00 (T1 by the calendar) the clock loses its time in an outage with an exhausted
    backup battery: the default tariffication script (written: 2, T2) is in force until the
    clock is set; then the calendar's T1 again (companion §5.5)."""
    m = make(local(2026, 3, 10, 22, 50, 0))
    m.load(LOAD_W)
    m.obj("0-0:96.14.15.255").set(2, Data.long_unsigned(2), CTX)
    m.run_until(local(2026, 3, 10, 23, 0), step=60)
    assert m.get("0-0:96.14.0.255") == Data.octet_string(b"T1")
    m.meter.control({"input": "battery", "value": "exhausted"})
    m.meter.control({"input": "supply", "value": "off"})
    m.platform[0] += 3600
    m.meter.control({"input": "supply", "value": "on"})
    assert m.meter.clock.invalid
    assert m.get("0-0:96.14.0.255") == Data.octet_string(b"T2")
    before = m.rates()
    m.run_until(m.platform[0] + 1800, step=60)
    after = m.rates()
    assert after.value("a_plus", 2) - before.value("a_plus", 2) in (599, 600)  # 1200 W for 30 min, in T2
    assert after.value("a_plus", 1) == before.value("a_plus", 1)
    m.meter.clock.set_time(local(2026, 3, 11, 0, 30), "set")
    m.meter.tick()
    assert not m.meter.clock.invalid and m.get("0-0:96.14.0.255") == Data.octet_string(b"T1")
    # a default script the tariff script table does not have is refused
    with pytest.raises(CosemAccessError) as refused:
        m.obj("0-0:96.14.15.255").set(2, Data.long_unsigned(3), CTX)
    assert refused.value.result == DataAccessResult.OTHER_REASON
    assert m.get("0-0:96.14.15.255") == Data.long_unsigned(2)


def test_a_power_failure_in_the_second_of_a_switch(make):
    """The supply fails at 22:00:00, the instant T1 begins, and returns at 06:00:00, the instant T2
    begins: the rates still add up to the totals, the hour before went to T2, nothing to T1, and
    both switches are logged at their instants."""
    start = local(2026, 3, 10, 21, 0, 30)
    m = make(start)
    m.load(LOAD_W)
    m.run_until(local(2026, 3, 10, 22, 0), step=60)
    m.meter.control({"input": "supply", "value": "off"})
    m.run_until(local(2026, 3, 11, 6, 0))
    m.meter.control({"input": "supply", "value": "on"})
    m.run_until(local(2026, 3, 11, 7, 0), step=60)
    rates, totals = m.rates(), m.meter.legal.execute(legal.ReadEnergyRegisters())
    assert rates.value("a_plus", 1) + rates.value("a_plus", 2) == totals.a_plus
    expected = split(start, local(2026, 3, 10, 22, 0), example_rate, LOAD_W)[2] + LOAD_W  # 21:00:30-22:00, 06-07
    assert rates.value("a_plus", 1) == 0 and abs(rates.value("a_plus", 2) - expected) <= 1
    log = [(m.meter.clock.utc_from_cosem(axdr.decode_date_time(c)), name)
           for c, name in m.obj("0-0:99.98.11.255").source.rows(None, None)]
    assert log[-2:] == [(local(2026, 3, 10, 22, 0), b"T1"), (local(2026, 3, 11, 6, 0), b"T2")]
