"""I3-4 inhibit resetting of cumulative values (MID AI 8.5): no sequence of declared commands
of the protective interface, and no DLMS method or attribute write of any object, lowers or
resets a cumulative energy register."""
from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartmeter.cosem.classes.base import RequestContext
from smartmeter.cosem.data import Data
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

T0 = 1_773_144_000
TITLE = "4b464d0000000007"
NAMES = ("a_plus", "a_minus", "r_plus", "r_minus")

power = st.floats(-5000, 5000, allow_nan=False)
times = st.integers(T0 - 10**6, T0 + 10**7)
tokens = st.sampled_from(["", "0" * 32, "not a token"])  # claims the legal part cannot verify
rows = st.lists(st.builds(legal.ProfileRow, times, st.integers(0, 255), *[st.integers(0, 10**8)] * 4), max_size=3)
commands = st.one_of(
    st.builds(legal.RegisterSimulatedPower, power, power, st.floats(0, 5)),
    st.builds(legal.SetSimulatedLoad, power, power),
    st.builds(legal.EndMeasurementPeriod, times, st.integers(0, 255)),
    st.builds(legal.StartDemandPeriod, times),
    st.builds(legal.ResetMaximumDemand, times, st.sampled_from([None, *NAMES])),
    st.builds(legal.BackfillDemoHistory, rows.map(tuple)),
    st.builds(legal.SetCertificationMode, st.booleans(), times, st.just(TITLE), tokens),
    st.builds(legal.WriteCertificationObject, st.booleans(), st.integers(0, 6), st.integers(0, 6), st.integers(0, 255),
              st.sampled_from([0, 1000, 2000, 1234]), times, st.just(TITLE), tokens),
    st.builds(legal.SetParameters, st.lists(st.tuples(st.sampled_from(["meter_constant", "current_gain_l1"]),
                                                       st.integers(1, 3000)), max_size=2).map(tuple),
              times, st.just(TITLE), tokens),
    st.builds(legal.TimeLost, times),
    st.just(legal.Persist()),
    st.just(legal.IsFreshMeter()),
)


def _registers(part) -> dict[str, int]:
    snap = part.execute(legal.ReadEnergyRegisters())
    return {n: getattr(snap, n) for n in NAMES}


@pytest.mark.welmec("I3-4")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.builds(legal.RegisterSimulatedPower, power, power, st.floats(0.1, 5)),
       sequence=st.lists(commands, max_size=12))
def test_no_command_sequence_lowers_a_register(tmp_path_factory, first, sequence):
    """After energy has been registered, no sequence of declared commands (including a restart) lowers any cumulative register."""
    data_dir = tmp_path_factory.mktemp("i34")
    part = legal.LegalInterface(data_dir)
    try:
        part.execute(first)
        seen = _registers(part)
        for command in sequence:
            try:
                part.execute(command)
            except legal.CommandRefused:
                pass
            now = _registers(part)
            assert all(now[n] >= seen[n] for n in NAMES), (command, seen, now)
            seen = now
    finally:
        part.close()
    again = legal.LegalInterface(data_dir)
    try:
        assert _registers(again) == seen
    finally:
        again.close()


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=1),
              clock=MeterClock(source=lambda: float(T0)))
    m.legal.execute(legal.RegisterSimulatedPower(3000.0, 800.0, 30.0))
    yield m
    m.close()


PARAMETERS = [None, Data.integer(0), Data.double_long_unsigned(0), Data.boolean(True), Data.octet_string(bytes(16)),
              Data.structure([])]


@pytest.mark.welmec("I3-4")
def test_no_dlms_method_or_write_of_any_object_lowers_a_register(meter):
    """Every method and every writable attribute of every COSEM object, invoked directly with several parameter values (access rights bypassed), leaves every energy register where it was or higher."""
    before = _registers(meter.legal)
    ctx = RequestContext("management", 1)
    invoked = 0
    for o, inst in meter.directory.by_ln.values():
        for index in inst.methods:
            for parameters in PARAMETERS:
                try:
                    inst.invoke(index, parameters, ctx)
                except Exception:  # noqa: BLE001 - refused or failed: only the registers matter here
                    pass
                invoked += 1
        for index in inst.attributes:
            if index == 1:
                continue
            for value in PARAMETERS[1:]:
                try:
                    inst.set(index, value, ctx)
                except Exception:  # noqa: BLE001
                    pass
        after = _registers(meter.legal)
        assert all(after[n] >= before[n] for n in NAMES), (str(o.obis), before, after)
    assert invoked > 0
    assert _registers(meter.legal) == before
