"""I3-3 indication suitability (MID MI-003 5.2): the energy registers do not roll over within
4000 h at full load (I = Imax, U = Un, PF = 1, three phases)."""
from __future__ import annotations

from smartmeter.cosem.data import Data
from smartmeter.legal import interface as legal
from smartmeter.legal.registers import MILLI, WRAP_UNITS_DIRECT, EnergyRegisters

import pytest

U_N, I_MAX, PHASES = 230.0, 100.0, 3  # the largest direct-connected meter of the type (assumed Imax)
P_MAX_W = PHASES * U_N * I_MAX
HOURS = 4000
E_4000H_WH = int(P_MAX_W * HOURS)  # 276 000 kWh


@pytest.mark.welmec("I3-3")
def test_the_wrap_value_exceeds_4000_h_at_full_load():
    """The register wraps at 999 999 999 Wh, above 4000 h x 3 x 230 V x 100 A (276 000 kWh), and the value fits the DLMS double-long-unsigned."""
    assert WRAP_UNITS_DIRECT - 1 == 999_999_999
    assert E_4000H_WH < WRAP_UNITS_DIRECT
    assert Data.double_long_unsigned(WRAP_UNITS_DIRECT - 1).value == 999_999_999  # u32 holds it


@pytest.mark.welmec("I3-3")
def test_4000_h_at_pmax_in_hour_steps_do_not_wrap_the_register():
    """4000 one-hour steps of Pmax added to the register representation give exactly 4000 h x Pmax, no wrap."""
    registers = EnergyRegisters({})
    hour_milli = int(P_MAX_W * MILLI)
    for _ in range(HOURS):
        registers.add_milli({"a_plus": hour_milli, "r_plus": hour_milli // 4})
    assert registers.snapshot().a_plus == E_4000H_WH
    assert registers.snapshot().r_plus == E_4000H_WH // 4


@pytest.mark.welmec("I3-3")
def test_the_measuring_meter_passes_4000_h_at_pmax_without_wrapping(tmp_path):
    """A meter holding 4000 h x Pmax less 10 min measures 20 more minutes at Pmax through the real metrology and shows the exact continued value."""
    part = legal.LegalInterface(tmp_path, phases=3)
    try:
        start = E_4000H_WH - int(P_MAX_W / 6)  # 10 minutes short of 4000 h at Pmax
        part.execute(legal.BackfillDemoHistory((legal.ProfileRow(1_773_144_000, 0, start, 0, 0, 0),)))
        for _ in range(4):  # 20 minutes in 5-minute steps, sample by sample
            part.execute(legal.RegisterSimulatedPower(P_MAX_W, 0.0, 300.0))
        registered = part.execute(legal.ReadEnergyRegisters()).a_plus
        expected = start + P_MAX_W * 1200 / 3600
        assert registered > E_4000H_WH
        assert abs(registered - expected) <= expected * 1e-6 + 1
    finally:
        part.close()
