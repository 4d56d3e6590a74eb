"""Instantaneous values per phase from the metrology (companion §5.9.1): voltage, current,
active, reactive and apparent power, power factor and the U-I angle, computed from the samples
of the injected synthetic signal. Expectations come from the load the test injects (P, Q per
phase at 230 V): S = hypot(P, Q), I = S / 230, PF = P / S, angle = atan2(Q, P)."""
from __future__ import annotations

import math

import pytest

from smartmeter.legal import interface as legal

VOLTS = 230.0


@pytest.fixture
def three(tmp_path):
    p = legal.LegalInterface(tmp_path, phases=3)
    yield p
    p.close()


# (P W, Q var) on one phase: PF 1, 0.5 lagging, 0.8 leading (capacitive import), export at PF 0.9
LOADS = [(2300.0, 0.0), (1150.0, 1150.0 * math.sqrt(3)), (1840.0, -1380.0), (-2070.0, 2070.0 * math.tan(math.acos(0.9)))]


@pytest.mark.parametrize("phase", [1, 2, 3])
@pytest.mark.parametrize("active, reactive", LOADS, ids=["pf 1", "pf 0.5 lag", "pf 0.8 lead", "export pf 0.9"])
def test_per_phase_values_are_the_injected_signal(three, phase, active, reactive):
    three.execute(legal.RegisterSimulatedPower(active, reactive, 2.0, phase))
    v = three.execute(legal.ReadInstantaneousValues())
    apparent = math.hypot(active, reactive)
    others = [p for p in (1, 2, 3) if p != phase]
    at = phase - 1
    assert v.voltage == pytest.approx((VOLTS,) * 3, rel=1e-9)
    assert v.current[at] == pytest.approx(apparent / VOLTS, rel=1e-6)
    assert v.active_power_phases[at] == pytest.approx(active, rel=1e-6)
    assert v.reactive_power_phases[at] == pytest.approx(reactive, rel=1e-6, abs=1e-6)
    assert v.apparent_power_phases[at] == pytest.approx(apparent, rel=1e-6)
    assert v.power_factor_phases[at] == pytest.approx(active / apparent, rel=1e-6)
    assert v.angle_phases[at] == pytest.approx(math.degrees(math.atan2(reactive, active)), abs=1e-4)
    for p in others:  # the other phases draw nothing
        assert (v.current[p - 1], v.apparent_power_phases[p - 1], v.power_factor_phases[p - 1],
                v.angle_phases[p - 1]) == (pytest.approx(0.0, abs=1e-9),) * 4
    assert v.active_power == pytest.approx(active, rel=1e-6)
    assert v.frequency == pytest.approx(50.0, abs=1e-6)


def test_a_single_phase_meter_has_one_value_of_each(tmp_path):
    p = legal.LegalInterface(tmp_path, phases=1)
    try:
        p.execute(legal.RegisterSimulatedPower(1000.0, 500.0, 1.0))
        v = p.execute(legal.ReadInstantaneousValues())
    finally:
        p.close()
    assert len(v.voltage) == len(v.active_power_phases) == len(v.angle_phases) == 1
    assert v.angle_phases[0] == pytest.approx(math.degrees(math.atan2(500.0, 1000.0)), abs=1e-4)


def test_the_short_rest_of_an_interval_does_not_become_the_instantaneous_value(three):
    """An interval that ends in part of a cycle (1.2345 s: a last frame of 276 samples) still shows
    the load's values: those of the last frame of whole cycles."""
    three.execute(legal.RegisterSimulatedPower(2300.0, 1725.0, 1.2345))
    v = three.execute(legal.ReadInstantaneousValues())
    assert v.voltage == pytest.approx((VOLTS,) * 3, rel=1e-9)
    assert v.active_power == pytest.approx(2300.0, rel=1e-6)
    assert v.current[0] == pytest.approx(2875.0 / 3 / VOLTS, rel=1e-6)
