"""Instantaneous value objects (companion §5.9.1, catalog §8) on a running meter: a load set as
`smartmeter sim load` sets it, read through the object model with their scaler and unit.
Expected values come from the load: P, PF spread evenly over the phases at 230 V."""
from __future__ import annotations

import math

import pytest

from smartmeter.cosem.classes.base import RequestContext
from smartmeter.cosem.obis import Obis
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

CTX = RequestContext("management", 1)
START = 1_773_144_030.0
UNITS = {"V": 35, "A": 33, "Hz": 44, "W": 27, "var": 29, "VA": 28, "deg": 8, "count": 255}


def make(tmp_path, meter_type: int):
    platform = [START]
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0, meter_type=meter_type),
                  clock=MeterClock(source=lambda: platform[0]))
    return meter, platform


# the unit each object must have, by OBIS C (Blue Book unit codes)
UNIT_OF = {32: "V", 52: "V", 72: "V", 31: "A", 51: "A", 71: "A", 90: "A", 14: "Hz", 1: "W", 2: "W", 15: "W",
           21: "W", 41: "W", 61: "W", 3: "var", 4: "var", 9: "VA", 10: "VA", 13: "count", 84: "count", 81: "deg"}


def read(meter, obis: str) -> float:
    """The physical value: attribute 2 times 10**scaler (attribute 3), after checking the unit."""
    instance = meter.directory.by_ln[Obis.parse(obis).to_bytes()][1]
    scaler, unit = (v.value for v in instance.get(3, CTX).value)
    assert unit == UNITS[UNIT_OF[Obis.parse(obis).c]], obis
    return instance.get(2, CTX).value * 10 ** scaler


@pytest.mark.parametrize("power, pf", [(3000.0, 0.8), (-2070.0, 0.9), (1500.0, 1.0)],
                         ids=["import pf 0.8", "export pf 0.9", "import pf 1"])
def test_a_three_phase_meter_shows_the_load_it_measures(tmp_path, power, pf):
    meter, platform = make(tmp_path, 300)
    try:
        assert meter.control({"input": "load", "power": power, "pf": pf})["ok"]
        platform[0] += 60
        meter.tick()
        apparent = abs(power) / pf
        reactive = math.sqrt(apparent ** 2 - power ** 2)  # inductive: positive Q (export: see the angle)
        per_phase_current = apparent / 3 / 230
        for obis in ("1-0:32.7.0.255", "1-0:52.7.0.255", "1-0:72.7.0.255"):
            assert read(meter, obis) == pytest.approx(230.0, abs=0.05)
        for obis in ("1-0:31.7.0.255", "1-0:51.7.0.255", "1-0:71.7.0.255"):
            assert read(meter, obis) == pytest.approx(per_phase_current, abs=0.001)
        assert read(meter, "1-0:90.7.0.255") == pytest.approx(3 * per_phase_current, abs=0.003)
        assert read(meter, "1-0:14.7.0.255") == pytest.approx(50.0, abs=0.005)
        importing = power > 0
        assert read(meter, "1-0:1.7.0.255") == pytest.approx(max(power, 0), abs=1)
        assert read(meter, "1-0:2.7.0.255") == pytest.approx(max(-power, 0), abs=1)
        assert read(meter, "1-0:9.7.0.255") == pytest.approx(apparent if importing else 0, abs=1)
        assert read(meter, "1-0:10.7.0.255") == pytest.approx(0 if importing else apparent, abs=1)
        assert read(meter, "1-0:15.7.0.255") == pytest.approx(abs(power), abs=1)
        for c in (21, 41, 61):  # +P per phase
            assert read(meter, f"1-0:{c}.7.0.255") == pytest.approx(max(power, 0) / 3, abs=1)
        assert read(meter, "1-0:13.7.0.255") == pytest.approx(pf if importing else 0, abs=0.001)
        assert read(meter, "1-0:84.7.0.255") == pytest.approx(0 if importing else pf, abs=0.001)
        assert read(meter, "1-0:3.7.0.255") + read(meter, "1-0:4.7.0.255") == pytest.approx(reactive, abs=1)
        # U-I angle of each phase: the load's, from P and Q
        angle = math.degrees(math.atan2(meter.legal.execute(legal.ReadInstantaneousValues()).reactive_power, power))
        for obis in ("1-0:81.7.40.255", "1-0:81.7.51.255", "1-0:81.7.62.255"):
            assert read(meter, obis) == pytest.approx(angle, abs=0.1)
        assert abs(angle) == pytest.approx(math.degrees(math.acos(pf)) if importing else
                                           180 - math.degrees(math.acos(pf)), abs=0.1)
    finally:
        meter.close()


def test_a_single_phase_meter_has_the_l1_set_only(tmp_path):
    meter, platform = make(tmp_path, 100)
    try:
        present = {str(Obis.from_bytes(ln)) for ln in meter.directory.by_ln}
        assert {"1-0:32.7.0.255", "1-0:31.7.0.255", "1-0:21.7.0.255", "1-0:81.7.40.255", "1-0:1.7.0.255"} <= present
        assert not {"1-0:52.7.0.255", "1-0:72.7.0.255", "1-0:41.7.0.255", "1-0:61.7.0.255", "1-0:81.7.51.255",
                    "1-0:53.7.0.255", "1-0:87.7.0.255"} & present
        assert meter.control({"input": "load", "power": 920.0, "pf": 1.0})["ok"]
        platform[0] += 60
        meter.tick()
        assert read(meter, "1-0:31.7.0.255") == pytest.approx(4.0, abs=0.001)
        assert read(meter, "1-0:21.7.0.255") == pytest.approx(920.0, abs=1)
    finally:
        meter.close()
