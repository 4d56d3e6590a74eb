"""Power quality on a running meter (companion §5.9.2, §5.9.4; catalog §3.8): `sim voltage`,
`sim load` and `sim supply` drive the metrology; the power quality log, the sag/swell/cut objects
and the power quality profile follow what the metrology measured. Expectations come from the
waveform injected here: the voltages, the load (a phase's current is its power over its voltage)
and the times; event codes are IDIS package 2's (76 sag, 79 swell, 82 cut, 85 normal, + phase)."""
from __future__ import annotations

import pytest

from meter_site import MeterSite
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.results import DataAccessResult

CTX = RequestContext("management", 1)
START = 1_773_144_000.0  # 2026-03-10 12:00 UTC, on an hour
NOMINAL = 230.0
SAG, SWELL, CUT, NORMAL = 76, 79, 82, 85


class Site(MeterSite):
    STEP = 1.0

    def __init__(self, data_dir, phases: int) -> None:
        super().__init__(data_dir, START, phases)

    def value(self, obis: str):
        return self.obj(obis).get(2, CTX).value

    def volts(self, phase: str, volts: float) -> None:
        self.sim("voltage", phase=phase, value=volts)

    def log(self) -> list[tuple[int, int]]:
        return super().log("power_quality")


@pytest.fixture
def one(tmp_path):
    s = Site(tmp_path, 1)
    yield s
    s.meter.close()


@pytest.fixture
def three(tmp_path):
    s = Site(tmp_path, 3)
    yield s
    s.meter.close()


def test_a_sag_to_80_percent_for_3_s(one):
    one.run(30)
    start = one.now()
    one.volts("L1", 0.8 * NOMINAL)
    one.run(3)
    back = one.now()
    one.volts("L1", NOMINAL)
    one.run(20)
    assert one.log() == [(start, SAG), (back, NORMAL)]
    assert one.value("1-0:32.32.0.255") == 1  # number of sags L1
    assert one.value("1-0:32.33.0.255") == back - start  # duration of the last sag, s
    assert one.value("1-0:32.34.0.255") == round(0.8 * NOMINAL * 10)  # magnitude, scaler -1
    assert one.value("1-0:32.40.0.255") == one.value("1-0:32.36.0.255") == 0
    assert one.value("0-0:96.11.4.255") == NORMAL  # the event object holds the last code


def test_a_swell_on_l2_and_a_cut_on_l3(three):
    three.run(10)
    swell = three.now()
    three.volts("L2", 1.15 * NOMINAL)
    three.run(2)
    swell_back = three.now()
    three.volts("L2", NOMINAL)
    three.run(10)
    cut = three.now()
    three.volts("L3", 0)
    three.run(10)
    cut_back = three.now()
    three.volts("L3", NOMINAL)
    three.run(10)
    assert three.log() == [(swell, SWELL + 1), (swell_back, NORMAL + 1), (cut, CUT + 2), (cut_back, NORMAL + 2)]
    assert three.value("1-0:52.36.0.255") == 1 and three.value("1-0:52.38.0.255") == round(1.15 * NOMINAL * 10)
    assert three.value("1-0:72.40.0.255") == 1 and three.value("1-0:72.41.0.255") == cut_back - cut
    assert three.value("1-0:72.32.0.255") == 0  # the cut prevailed: no sag on L3
    assert three.value("1-0:32.32.0.255") == three.value("1-0:32.40.0.255") == 0  # L1 untouched


def test_a_power_failure_of_5_minutes_is_a_cut_on_every_phase(three):
    three.run(60)
    down = three.now()
    three.sim("supply", value="off")
    three.run(300)
    up = three.now()
    three.sim("supply", value="on")
    three.run(10)
    assert sorted(three.log()) == sorted([(down, CUT + p) for p in range(3)] + [(up, NORMAL + p) for p in range(3)])
    assert [three.value(f"1-0:{c}.41.0.255") for c in (32, 52, 72)] == [up - down] * 3


def test_the_profile_averages_what_was_measured(one):
    """1-minute periods: a minute at 230 V, then 30 s at 184 V and 30 s at 230 V, 2300 W
    throughout: average, lowest and highest voltage and the average current of each minute."""
    one.obj("1-0:0.8.2.255").set(2, Data.double_long_unsigned(60), CTX)
    assert one.obj("1-0:99.14.0.255").get(4, CTX).value == 60  # one value: the capture period follows
    one.sim("load", power=2300.0)
    one.run(60 - START % 60 + 60)  # to a minute boundary, then a whole minute
    one.volts("L1", 184.0)
    one.run(30)
    one.volts("L1", NOMINAL)
    one.run(30)
    rows = one.meter.power_quality.rows(None, None)
    *_, steady, dipped = rows
    # columns: clock, status, average V, min V, max V (scaler -1), average current (scaler -3)
    assert steady[2:5] == (2300, 2300, 2300)
    assert steady[5] == pytest.approx(10_000, abs=2)  # 2300 W / 230 V
    assert dipped[2] == pytest.approx((184.0 * 30 + NOMINAL * 30) / 60 * 10, abs=1)
    assert dipped[3:5] == (1840, 2300)
    assert dipped[5] == pytest.approx((2300 / 184.0 * 30 + 2300 / NOMINAL * 30) / 60 * 1000, abs=2)
    assert one.value("1-0:32.23.0.255") == 1840  # the objects hold the latest period's values
    assert one.value("0-0:96.10.3.255") == dipped[1]


def test_a_power_failure_inside_a_period_leaves_the_averages_and_flags_it(one):
    """Catalog §3.8's example: 220 V / 10 A with a 5-minute outage in a 10-minute period."""
    one.volts("L1", 220.0)
    one.sim("load", power=2200.0)
    one.run(600 - START % 600)  # to a 10-minute boundary
    one.run(120)
    one.sim("supply", value="off")
    one.run(300)
    one.sim("supply", value="on")
    one.run(180)
    entry = one.meter.power_quality.rows(None, None)[-1]
    assert entry[2:6] == (2200, 2200, 2200, pytest.approx(10_000, abs=2))
    assert entry[1] & 0x80  # PDN: a power failure in the period


def test_a_capture_period_of_7_minutes_and_a_threshold_of_the_wrong_type_change_nothing(one):
    for obis, attribute, value, result in (
            ("1-0:99.14.0.255", 4, Data.double_long_unsigned(420), DataAccessResult.OTHER_REASON),
            ("1-0:0.8.2.255", 2, Data.double_long_unsigned(420), DataAccessResult.OTHER_REASON),
            ("1-0:12.31.0.255", 2, Data.double_long_unsigned(200), DataAccessResult.TYPE_UNMATCHED),
            ("1-0:12.31.0.255", 2, Data.long_unsigned(300), DataAccessResult.OTHER_REASON)):  # above the swell one
        with pytest.raises(CosemAccessError) as refused:
            one.obj(obis).set(attribute, value, CTX)
        assert refused.value.result == result
    assert one.value("1-0:0.8.2.255") == one.obj("1-0:99.14.0.255").get(4, CTX).value == 600
    assert one.value("1-0:12.31.0.255") == 207


def test_a_new_sag_threshold_applies_and_survives_a_restart(one):
    one.obj("1-0:12.31.0.255").set(2, Data.long_unsigned(220), CTX)
    one.meter.close()
    one.meter = one.open()
    assert one.value("1-0:12.31.0.255") == 220
    start = one.now()
    one.volts("L1", 215.0)  # a sag under the new threshold only
    one.run(2)
    assert one.log() == [(start, SAG)]


def test_a_sag_running_over_a_restart_is_logged_once(one):
    one.run(5)
    start = one.now()
    one.volts("L1", 150.0)
    one.run(5)
    one.meter.close()
    one.meter = one.open()
    one.run(5)
    back = one.now()
    one.volts("L1", NOMINAL)
    one.run(10)
    assert one.log() == [(start, SAG), (back, NORMAL)]
    assert one.value("1-0:32.32.0.255") == 1
