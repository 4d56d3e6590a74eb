"""The simulated installation per phase: where the load is, and the voltage of each phase.

Expectations are the physics of the scenario: on a live phase the current is the phase's apparent
power over its voltage and the active energy is P x t whatever the voltage; a phase at 0 V carries
no current and registers nothing.
"""
from __future__ import annotations

import math

import pytest

from smartmeter.legal import interface as legal


@pytest.fixture
def three(tmp_path):
    p = legal.LegalInterface(tmp_path, phases=3)
    yield p
    p.close()


@pytest.fixture
def single(tmp_path):
    p = legal.LegalInterface(tmp_path / "single", phases=1)
    yield p
    p.close()


def wh(part) -> tuple[int, int, int, int]:
    s = part.execute(legal.ReadEnergyRegisters())
    return s.a_plus, s.a_minus, s.r_plus, s.r_minus


def within_a_unit(got: int, exact: float) -> bool:
    """Registers hold whole Wh/varh, floored; the sampled signal is exact to far below one unit."""
    return exact - 1 <= got <= exact + 1e-6


def instantaneous(part) -> legal.InstantaneousValues:
    return part.execute(legal.ReadInstantaneousValues())


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_all_of_the_load_on_one_phase(three, phase):
    three.execute(legal.RegisterSimulatedPower(4600.0, 0.0, 36.0, phase))
    a_plus, a_minus, r_plus, r_minus = wh(three)
    assert within_a_unit(a_plus, 4600 * 36 / 3600) and (a_minus, r_plus, r_minus) == (0, 0, 0)
    values = instantaneous(three)
    expected_current = [4600 / 230 if p == phase else 0.0 for p in (1, 2, 3)]
    assert values.current == pytest.approx(expected_current, abs=1e-6)
    assert values.voltage == pytest.approx((230.0, 230.0, 230.0), rel=1e-9)


def test_phase_zero_splits_evenly_as_before(three):
    three.execute(legal.RegisterSimulatedPower(3000.0, 600.0, 60.0))
    a_plus, _, r_plus, _ = wh(three)
    assert within_a_unit(a_plus, 50.0) and within_a_unit(r_plus, 10.0)
    current = math.hypot(1000.0, 200.0) / 230
    assert instantaneous(three).current == pytest.approx((current,) * 3, rel=1e-6)


def test_a_phase_at_zero_volts_carries_no_current_and_registers_nothing(three):
    three.execute(legal.SetSimulatedVoltage((230.0, 0.0, 115.0)))
    # 1 kW per phase asked for; the dead phase L2 draws nothing
    three.execute(legal.RegisterSimulatedPower(3000.0, 0.0, 72.0, 0))
    assert within_a_unit(wh(three)[0], 2 * 1000 * 72 / 3600)
    values = instantaneous(three)
    assert values.voltage == pytest.approx((230.0, 0.0, 115.0), abs=1e-6)
    assert values.current == pytest.approx((1000 / 230, 0.0, 1000 / 115), rel=1e-6, abs=1e-9)
    assert values.active_power == pytest.approx(2000.0, rel=1e-6)
    before = wh(three)
    three.execute(legal.RegisterSimulatedPower(5000.0, 1000.0, 30.0, 2))  # all of it on the dead phase
    assert wh(three) == before
    assert instantaneous(three).current == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)


@pytest.mark.parametrize("volts", [1.0, 57.7, 230.0, 253.0, 400.0])
def test_energy_is_p_times_t_at_any_voltage(tmp_path, volts):
    """Same load, same time, different phase voltage: the same energy (the current follows)."""
    part = legal.LegalInterface(tmp_path, phases=3)
    try:
        part.execute(legal.SetSimulatedVoltage((volts, volts, volts)))
        part.execute(legal.RegisterSimulatedPower(3600.0, -1800.0, 100.0, 3))
        a_plus, a_minus, r_plus, r_minus = wh(part)
        assert within_a_unit(a_plus, 100.0) and within_a_unit(r_minus, 50.0) and (a_minus, r_plus) == (0, 0)
        assert instantaneous(part).current[2] == pytest.approx(math.hypot(3600, 1800) / volts, rel=1e-6)
    finally:
        part.close()


def test_the_load_follows_a_voltage_change_between_frames(three):
    three.execute(legal.SetSimulatedLoad(2300.0, 0.0, 1))
    three.execute(legal.SetSimulatedVoltage((115.0, 230.0, 230.0)))
    three.execute(legal.RegisterSimulatedPower(2300.0, 0.0, 36.0, 1))
    assert within_a_unit(wh(three)[0], 23.0)
    assert instantaneous(three).current[0] == pytest.approx(20.0, rel=1e-6)


def test_single_phase_meter(single):
    single.execute(legal.SetSimulatedVoltage((207.0,)))
    single.execute(legal.RegisterSimulatedPower(1035.0, 0.0, 72.0, 1))
    assert within_a_unit(wh(single)[0], 1035 * 72 / 3600)
    assert instantaneous(single).current == pytest.approx((5.0,), rel=1e-6)


@pytest.mark.parametrize("volts", [(230.0, 230.0), (230.0,) * 4, (), (230.0, -1.0, 230.0), (230.0, 400.001, 230.0),
                                   (math.nan, 230.0, 230.0), (230.0, math.inf, 230.0), (1e9, 0.0, 0.0)])
def test_a_voltage_out_of_range_is_refused_and_changes_nothing(three, volts):
    three.execute(legal.SetSimulatedVoltage((200.0, 210.0, 220.0)))
    with pytest.raises(legal.CommandRefused):
        three.execute(legal.SetSimulatedVoltage(volts))
    three.execute(legal.RegisterSimulatedPower(0.0, 0.0, 0.1))
    assert instantaneous(three).voltage == pytest.approx((200.0, 210.0, 220.0), rel=1e-9)
    assert wh(three) == (0, 0, 0, 0)


@pytest.mark.parametrize("phase", [-1, 4, 2 ** 63])
def test_a_phase_the_three_phase_meter_does_not_have_is_refused(three, phase):
    for command in (legal.SetSimulatedLoad(1000.0, 0.0, phase), legal.RegisterSimulatedPower(1000.0, 0.0, 10.0, phase)):
        with pytest.raises(legal.CommandRefused):
            three.execute(command)
    assert wh(three) == (0, 0, 0, 0)
    assert instantaneous(three) is None, "nothing was measured"


@pytest.mark.parametrize("phase", [2, 3])
def test_a_single_phase_meter_has_only_phase_one(single, phase):
    with pytest.raises(legal.CommandRefused):
        single.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 10.0, phase))
    assert wh(single) == (0, 0, 0, 0)


@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_a_phase_of_the_wrong_type_is_refused(three, bad):
    with pytest.raises(legal.CommandRefused):
        three.execute(legal.SetSimulatedLoad(1000.0, 0.0, bad))
    with pytest.raises(legal.CommandRefused):
        three.execute(legal.SetSimulatedVoltage((230.0, "230", 230.0)))


def test_the_voltage_command_is_refused_while_powered_down(three):
    three.execute(legal.PowerDown(1_773_144_000.0))
    with pytest.raises(legal.CommandRefused):
        three.execute(legal.SetSimulatedVoltage((230.0, 230.0, 230.0)))


def test_the_new_commands_cross_the_process_boundary(tmp_path):
    """As data, with the same refusals (a NaN voltage arrives as NaN and is refused there)."""
    part = legal.start_legal_process(tmp_path, {"phases": 3})
    try:
        part.execute(legal.SetSimulatedVoltage((230.0, 0.0, 230.0)))
        with pytest.raises(legal.CommandRefused):
            part.execute(legal.SetSimulatedVoltage((230.0, math.nan, 230.0)))
        part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 30.0, 2))
        assert wh(part) == (0, 0, 0, 0)
        part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 30.0, 3))
        assert within_a_unit(wh(part)[0], 30.0)
        assert part.execute(legal.SetCaptureEnabled("lp2", False, 1_773_100_000)) == (True, False)
        assert part.execute(legal.EndDay(1_773_183_600)).status == 0x10  # 11 March 2026 00:00 CET
        assert part.execute(legal.EndDay(1_773_270_000)) is None
        assert part.execute(legal.ReadCaptureEnabled()) == (True, False)
    finally:
        part.close()
