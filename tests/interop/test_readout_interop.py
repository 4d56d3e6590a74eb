"""A three-phase meter read and operated by gurux-dlms over a real socket: the instantaneous values,
the Instantaneous Readout Profile 0-0:21.0.5.255 (companion §5.9.1, catalog §3.8) and the
disconnector (§5.8).

One meter process (`meter run --phases 3 --speed 60`: a minute of meter time per second). The
phase voltages and the load are set through the control channel, as `smartmeter sim voltage
L1 225` and `smartmeter sim load --power 3000 --pf 0.8` send them; gurux is the management
client (HLS 7, suite 1, authenticated and encrypted), the object list is read as the public client
(gurux cannot parse access modes that carry security policy bits, which the management client's
list has).

Expectations are computed here from what was set: the load spread evenly over the three phases,
each phase P = 1000 W, S = P / pf, Q = sqrt(S^2 - P^2) (inductive), I = S / U of that phase, PF 0.8,
U-I angle acos(0.8), 50 Hz. Each value read must be within 1 % of that (EN 50470-3 class B for
active power at this power factor; instantaneous values have no accuracy class of their own). The
readout profile's capture objects are the companion's table (written here, OBIS codes of catalog §8),
and its entry must hold what each object reads on its own. Tests run in file order on one meter.
"""
from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
from dataclasses import dataclass

import pytest
import structlog
from gurux_dlms.enums import DataType, ErrorCode, ObjectType
from gurux_dlms.objects import GXDLMSDisconnectControl, GXDLMSProfileGeneric, GXDLMSRegister

from event_log_peers import METER_ZONE, gurux_read as _raw, gurux_session, plain
from gurux_peer import GuruxClient
from meter_control import control as _control, meter_now as _meter_now, quiet as _quiet, wait_until as _wait_until
from meterproc import start_meter
from tariff_billing_peers import held_totals, simulated_date_time

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

SPEED = 60
PHASE_VOLTS = {"L1": 225.0, "L2": 230.0, "L3": 235.0}
LOAD_W, LOAD_PF = 3000.0, 0.8
NOMINAL_HZ = 50.0
CLASS_B = 0.01
READOUT_PROFILE, CLOCK = "0.0.21.0.5.255", "0.0.1.0.0.255"
DISCONNECTOR, A_PLUS = "0.0.96.3.10.255", "1.0.1.8.0.255"
DISCONNECTED, CONNECTED, READY = 0, 1, 2
DEFAULT_MODE = 3
PHASE_CURRENTS = ("1.0.31.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255")
DATE_TIME_HUNDREDTHS = 8  # octet of the COSEM date-time (Blue Book 4.1.6.1)

PHASE_W = LOAD_W / 3
PHASE_VA = PHASE_W / LOAD_PF
PHASE_VAR = math.sqrt(PHASE_VA ** 2 - PHASE_W ** 2)
CURRENTS = [PHASE_VA / volts for volts in PHASE_VOLTS.values()]
ANGLE = math.degrees(math.acos(LOAD_PF))
# logical name -> the physical value the voltages and the load imply
EXPECTED = {
    "1.0.32.7.0.255": PHASE_VOLTS["L1"], "1.0.52.7.0.255": PHASE_VOLTS["L2"], "1.0.72.7.0.255": PHASE_VOLTS["L3"],
    "1.0.31.7.0.255": CURRENTS[0], "1.0.51.7.0.255": CURRENTS[1], "1.0.71.7.0.255": CURRENTS[2],
    "1.0.90.7.0.255": sum(CURRENTS), "1.0.14.7.0.255": NOMINAL_HZ,
    "1.0.1.7.0.255": LOAD_W, "1.0.21.7.0.255": PHASE_W, "1.0.41.7.0.255": PHASE_W, "1.0.61.7.0.255": PHASE_W,
    "1.0.2.7.0.255": 0.0, "1.0.3.7.0.255": 3 * PHASE_VAR, "1.0.9.7.0.255": 3 * PHASE_VA, "1.0.15.7.0.255": LOAD_W,
    "1.0.13.7.0.255": LOAD_PF, "1.0.33.7.0.255": LOAD_PF, "1.0.53.7.0.255": LOAD_PF, "1.0.73.7.0.255": LOAD_PF,
    "1.0.84.7.0.255": 0.0,  # power factor export: nothing exported
    "1.0.81.7.40.255": ANGLE, "1.0.81.7.51.255": ANGLE, "1.0.81.7.62.255": ANGLE,
}
# companion §5.9.1 for a poly-phase meter: voltage and current per phase, current sum, frequency,
# +P -P +Q -Q +S -S total and per phase (C 1..10, +20 per phase), |P|, PF import and export total
# and per phase, U-I angle per phase
POWERS = (1, 2, 3, 4, 9, 10)
READOUT_VALUES = {
    *(f"1.0.{c}.7.0.255" for c in (32, 52, 72, 31, 51, 71, 90, 14, 15, 13, 33, 53, 73, 84, 85, 86, 87)),
    *(f"1.0.{c + offset}.7.0.255" for c in POWERS for offset in (0, 20, 40, 60)),
    "1.0.81.7.40.255", "1.0.81.7.51.255", "1.0.81.7.62.255",
}


def _wait_ticks(meter, ticks: int, timeout: float = 30.0) -> None:
    """Until `ticks` registration ticks (a minute of meter time each) have surely passed."""
    _wait_until(meter, _meter_now(meter) + ticks * SPEED, timeout)


@dataclass
class Scenario:
    meter: object
    counters: itertools.count


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    meter = start_meter(tmp_path_factory.mktemp("readout") / "meter", "--phases", "3", "--speed", str(SPEED))
    try:
        for phase, volts in PHASE_VOLTS.items():
            _control(meter, input="voltage", phase=phase, value=volts)  # `sim voltage L1 225`
        _control(meter, input="load", power=LOAD_W, pf=LOAD_PF, phase=None)  # `sim load --power 3000 --pf 0.8`
        _wait_ticks(meter, 2)  # the metrology's latest frame is of these voltages and this load
        yield Scenario(meter, itertools.count(1, 1000))
    finally:
        meter.stop()


def _management(scenario):
    """The management client's session, with a counter of its own."""
    return gurux_session(scenario.meter, "management", next(scenario.counters))


def _physical(peer, name: str) -> float:
    register = GXDLMSRegister(name)
    scaler, _ = _raw(peer, register, 3)
    return _raw(peer, register, 2) * 10 ** scaler


def _close_to(expected: float):
    """Within class B of a non-zero value; exactly 0 where nothing flows."""
    return pytest.approx(expected, rel=CLASS_B, abs=0)


def test_the_object_list_has_the_readout_profile_as_profile_generic_version_0(scenario):
    peer = GuruxClient(scenario.meter.wrapper_port)  # the public client
    peer.associate()
    try:
        objects = _quiet(peer.objects)
    finally:
        peer.close()
    profile = objects.findByLN(ObjectType.PROFILE_GENERIC, READOUT_PROFILE)
    assert profile is not None and profile.version == 0
    assert objects.findByLN(ObjectType.PROFILE_GENERIC, "1.0.99.1.0.255").version == 1


def test_gurux_reads_the_three_phase_values_the_voltages_and_load_imply(scenario):
    with _management(scenario) as peer:
        read = {name: _physical(peer, name) for name in EXPECTED}
    for name, expected in EXPECTED.items():
        assert read[name] == _close_to(expected), (name, read[name], expected)


def test_gurux_captures_the_readout_profile_and_reads_one_consistent_entry(scenario):
    meter = scenario.meter
    profile = GXDLMSProfileGeneric(READOUT_PROFILE)
    with _management(scenario) as peer:
        _raw(peer, profile, 3)  # the capture objects, decoded by gurux
        columns = [(o.objectType, o.logicalName, c.attributeIndex, c.dataIndex) for o, c in profile.captureObjects]
        period, entries = (_raw(peer, profile, a) for a in (4, 8))
        before_capture = _raw(peer, profile, 2), _raw(peer, profile, 7)
        first_second = _meter_now(meter)
        answer = _quiet(peer.transfer, peer.client.method(profile, 2, 0, DataType.INT8)).error
        last_second = _meter_now(meter)
        (entry,) = _raw(peer, profile, 2)
        in_use = _raw(peer, profile, 7)
        on_their_own = {name: _raw(peer, GXDLMSRegister(name), 2) for _, name, _, _ in columns[1:]}
        by_entry = _quiet(peer.rows_by_entry, profile, 1, 1)
        around = dt.datetime.fromtimestamp(first_second, METER_ZONE)
        by_range = _quiet(peer.rows_by_range, profile, around - dt.timedelta(hours=1), around + dt.timedelta(hours=1))
        after = _quiet(peer.rows_by_range, profile, around + dt.timedelta(hours=1), around + dt.timedelta(hours=2))
    # the profile: captured on request only, one entry, empty before the first capture
    assert (period, entries) == (0, 1)
    assert before_capture in ((None, 0), ([], 0))  # gurux gives an empty array as None
    assert answer == ErrorCode.OK and in_use == 1
    assert columns[0] == (ObjectType.CLOCK, CLOCK, 2, 0)
    assert {(t, a, i) for t, _, a, i in columns[1:]} == {(ObjectType.REGISTER, 2, 0)}
    assert len(columns) == 45 and {name for _, name, _, _ in columns[1:]} == READOUT_VALUES
    # the clock column: the meter's time of the capture (hundredths aside)
    stamp = entry[0]
    stamps = {simulated_date_time(t) for t in range(first_second, last_second + 1)}
    assert stamp[:DATE_TIME_HUNDREDTHS] + b"\x00" + stamp[DATE_TIME_HUNDREDTHS + 1:] in stamps
    # each value: what the object reads on its own (the load did not change), and what the load implies
    for (_, name, _, _), captured in zip(columns[1:], entry[1:]):
        assert captured == _close_to(on_their_own[name]), (name, captured, on_their_own[name])
    with _management(scenario) as peer:
        scalers = {name: _raw(peer, GXDLMSRegister(name), 3)[0] for name in EXPECTED}
    captured = {name: value for (_, name, _, _), value in zip(columns[1:], entry[1:])}
    for name, expected in EXPECTED.items():
        assert captured[name] * 10 ** scalers[name] == _close_to(expected), name
    # selective access by entry and by range (gurux builds the descriptors): the same one entry
    assert len(by_entry) == len(by_range) == 1
    assert plain(by_entry[0][1:]) == plain(by_range[0][1:]) == entry[1:]
    assert after == []


def test_three_phase_remote_disconnect_stops_a_plus_and_reconnection_resumes_it(scenario):
    meter = scenario.meter
    dc = GXDLMSDisconnectControl(DISCONNECTOR)

    def disconnector(peer) -> tuple:
        return tuple(_raw(peer, dc, a) for a in (2, 3, 4))

    def execute(peer, method: int) -> ErrorCode:
        return _quiet(peer.transfer, peer.client.method(dc, method, 0, DataType.INT8)).error

    with _management(scenario) as peer:
        assert disconnector(peer) == (True, CONNECTED, DEFAULT_MODE)
        a_plus_before = _raw(peer, GXDLMSRegister(A_PLUS), 2)
        _wait_ticks(meter, 1)
        assert _raw(peer, GXDLMSRegister(A_PLUS), 2) > a_plus_before  # the premise: the load registers energy
        assert execute(peer, 1) == ErrorCode.OK  # remote_disconnect
        open_state = disconnector(peer)
        _wait_ticks(meter, 1)  # the tick that ends the interval of the disconnection has run
        open_first = _raw(peer, GXDLMSRegister(A_PLUS), 2)
        currents_open = [_raw(peer, GXDLMSRegister(n), 2) for n in PHASE_CURRENTS]
        _wait_ticks(meter, 3)
        open_second = _raw(peer, GXDLMSRegister(A_PLUS), 2)
        held_open = held_totals(meter.data_dir)["a_plus"]
        assert execute(peer, 2) == ErrorCode.OK  # remote_reconnect: ready for reconnection in mode 3
        ready_state = disconnector(peer)
        _control(meter, input="button", value="A", long=True)  # `sim button A --long`: the customer closes it
        closed_state = disconnector(peer)
        closed_first = _raw(peer, GXDLMSRegister(A_PLUS), 2)
        _wait_ticks(meter, 2)
        closed_second = _raw(peer, GXDLMSRegister(A_PLUS), 2)
        currents_closed = [_physical(peer, n) for n in PHASE_CURRENTS]
    assert open_state == (False, DISCONNECTED, DEFAULT_MODE)
    assert currents_open == [0, 0, 0]  # no phase draws anything through the open output
    assert open_second == open_first == held_open
    assert ready_state == (False, READY, DEFAULT_MODE)
    assert closed_state == (True, CONNECTED, DEFAULT_MODE)
    assert closed_second > closed_first >= open_second
    # 3000 W for two minutes of meter time is 100 Wh; at least one whole tick of it is registered
    assert closed_second - closed_first >= LOAD_W / 60 * 0.99
    for measured, expected in zip(currents_closed, CURRENTS):
        assert measured == _close_to(expected)

