"""Instantaneous values and the disconnector, read and operated by gurux-dlms over a real socket.

One meter process ("ksmw" profile, the one whose model has the instantaneous values of catalog §8
and the disconnector 0-0:96.3.10.255; its management client is HLS 7 / suite 1, which gurux can
be) runs 60 times faster than real time, single-phase (`meter run` has no option for the meter
type, so only the L1 set exists). The load is set through the control channel, as `smartmeter
sim load --power 2300 --pf 0.8` sends it.

Expectations are computed here from that load, not taken from the meter: 230 V (the synthetic
installation's phase voltage), 50 Hz, P = 2300 W, S = P / pf, I = S / U, pf, and the U-I angle
acos(pf) in degrees (current lagging: an inductive load). Each value gurux reads, with the scaler
and unit it reads from attribute 3, must be within 0.5 % of them - a class-B-like tolerance
(EN 50470-3 allows 1 % for active energy at this power factor; instantaneous values have no
accuracy class, so half of it), not a legal accuracy statement.

The disconnector is operated by gurux (remote_disconnect, remote_reconnect, a write of the control
mode) and by the customer's button through the control channel (`smartmeter sim button A --long`).
Its state is compared with the meter's own status report over the control channel (`sim status`),
the energy register +A with the legal store read as it is (read-only SQLite), the disconnector
control log with the event store (read-only SQLite). Tests run in file order on one meter.

Found, and pinned here as a failing assertion, not worked around: on a meter whose clock runs
faster than real time, each tick measures the interval since the last one in frames of 100 ms
(800 samples, five cycles), "the last one shorter if need be" (MeteringUnit.measure_for), and the
instantaneous values are those of that last frame - a remainder of any length, not a whole number
of cycles. Its RMS voltage, current and powers are off by up to ~17 % (190.7 V read for 230 V) and
change from tick to tick under a load that does not. On a real-time meter (`--speed 1`) the same
reads are exact (230.0 V, 12.500 A, 2300 W, 2875 VA, 0.800, 36.9 deg).
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import pytest
import structlog
from gurux_dlms.enums import DataType, ErrorCode
from gurux_dlms.objects import GXDLMSDisconnectControl, GXDLMSProfileGeneric, GXDLMSRegister

from event_log_peers import gurux_read as _raw, gurux_session, held, plain
from meter_control import control as _control, meter_now as _meter_now, quiet as _quiet, wait_until as _wait_until
from meterproc import start_meter
from tariff_billing_peers import held_totals, simulated_date_time

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

SPEED = 60  # a tick (a second of real time) registers a minute of meter time
LOAD_W, LOAD_PF = 2300.0, 0.8
NOMINAL_V, NOMINAL_HZ = 230.0, 50.0
TOLERANCE = 0.005  # 0.5 %: class-B-like (see above)
READS = 3  # reads of the whole set, a tick apart
DISCONNECTOR = "0.0.96.3.10.255"
CONTROL_LOG = "0.0.99.98.2.255"
A_PLUS = "1.0.1.8.0.255"
# IC 70 control_state (Blue Book 4.5.8)
DISCONNECTED, CONNECTED, READY = 0, 1, 2
DEFAULT_MODE = 3  # the model's control mode: remote reconnection needs the customer's button
# IDIS disconnector control log codes
REMOTE_DISCONNECTION, READY_FOR_RECONNECTION, MANUAL_CONNECTION = 62, 59, 61
# Blue Book unit enumeration (table 4): W 27, VA 28, A 33, V 35, Hz 44, degree 8, count 255
W, VA, AMPERE, VOLT, HERTZ, DEGREE, COUNT = 27, 28, 33, 35, 44, 8, 255

APPARENT_VA = LOAD_W / LOAD_PF
# logical name -> (scaler, unit, the physical value the load implies)
INSTANTANEOUS = {
    "1.0.32.7.0.255": (-1, VOLT, NOMINAL_V),  # voltage L1
    "1.0.31.7.0.255": (-3, AMPERE, APPARENT_VA / NOMINAL_V),  # current L1 (single-phase: all of it)
    "1.0.14.7.0.255": (-2, HERTZ, NOMINAL_HZ),  # frequency
    "1.0.1.7.0.255": (0, W, LOAD_W),  # +P
    "1.0.2.7.0.255": (0, W, 0.0),  # -P: nothing exported
    "1.0.9.7.0.255": (0, VA, APPARENT_VA),  # +S
    "1.0.13.7.0.255": (-3, COUNT, LOAD_PF),  # power factor import
    "1.0.81.7.40.255": (-1, DEGREE, math.degrees(math.acos(LOAD_PF))),  # U-I angle L1
}


def _wait_ticks(meter, ticks: int, timeout: float = 30.0) -> None:
    """Until `ticks` registration ticks (a minute of meter time each) have surely passed."""
    _wait_until(meter, _meter_now(meter) + ticks * SPEED, timeout)


def _status_disconnector(meter) -> dict:
    """The disconnector as the meter reports it over the control channel (`sim status`)."""
    return _control(meter, status=True)["disconnector"]


@dataclass
class Scenario:
    meter: object
    counters: itertools.count


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    meter = start_meter(tmp_path_factory.mktemp("supply") / "meter", "--speed", str(SPEED))
    try:
        _control(meter, input="load", power=LOAD_W, pf=LOAD_PF, phase=None)  # `sim load --power 2300 --pf 0.8`
        _wait_ticks(meter, 2)  # the metrology's latest frame is of this load
        yield Scenario(meter, itertools.count(1, 1000))
    finally:
        meter.stop()


def _gurux(scenario):
    """The management client's session, with a counter of its own."""
    return gurux_session(scenario.meter, "management", next(scenario.counters))


def _disconnector(peer) -> tuple[bool, int, int]:
    dc = GXDLMSDisconnectControl(DISCONNECTOR)
    return tuple(_raw(peer, dc, a) for a in (2, 3, 4))


def _a_plus(peer) -> int:
    return _raw(peer, GXDLMSRegister(A_PLUS), 2)


def _execute(peer, method: int, value, data_type: DataType) -> ErrorCode:
    dc = GXDLMSDisconnectControl(DISCONNECTOR)
    return _quiet(peer.transfer, peer.client.method(dc, method, value, data_type)).error


def _log_rows(peer) -> list[list]:
    profile = GXDLMSProfileGeneric(CONTROL_LOG)
    reply = _quiet(peer.transfer, peer.client.read(profile, 2))
    assert reply.error == ErrorCode.OK
    return plain(reply.value)


# -- instantaneous values ---------------------------------------------------------------------------


def test_gurux_reads_the_instantaneous_values_the_load_implies(scenario):
    """The load stays as it is, so every read, at every tick, must say what it implies: the set is
    read over READS ticks (a value right at one tick and off at the next is no measurement)."""
    reads = []
    with _gurux(scenario) as peer:
        for n in range(READS):
            if n:
                _wait_ticks(scenario.meter, 1)
            read = {}
            for name in INSTANTANEOUS:
                register = GXDLMSRegister(name)
                scaler_unit = _raw(peer, register, 3)
                value = _raw(peer, register, 2)
                read[name] = (scaler_unit, value, register.value)  # the last: gurux's own scaled reading
            reads.append(read)
    for n, read in enumerate(reads):
        for name, (scaler, unit, expected) in INSTANTANEOUS.items():
            scaler_unit, value, gurux_scaled = read[name]
            assert scaler_unit == [scaler, unit], name
            physical = value * 10 ** scaler
            assert physical == pytest.approx(expected, rel=TOLERANCE, abs=0), (n, name, physical, expected)
            assert gurux_scaled == pytest.approx(physical), name


# -- remote disconnection, reconnection in mode 3, the customer's button ----------------------------


def test_remote_disconnect_stops_energy_and_the_button_reconnects(scenario):
    meter = scenario.meter
    with _gurux(scenario) as peer:
        assert _disconnector(peer) == (True, CONNECTED, DEFAULT_MODE)
        a_plus_before = _a_plus(peer)
        _wait_ticks(meter, 1)
        assert _a_plus(peer) > a_plus_before  # the premise: the load registers energy

        assert _execute(peer, 1, 0, DataType.INT8) == ErrorCode.OK  # remote_disconnect(integer 0)
        after_disconnect = _disconnector(peer)
        reported_open = _status_disconnector(meter)
        _wait_ticks(meter, 1)  # the tick that ends the interval of the disconnection has run
        open_first = _a_plus(peer)
        current, power = (_raw(peer, GXDLMSRegister(n), 2) for n in ("1.0.31.7.0.255", "1.0.1.7.0.255"))
        _wait_ticks(meter, 3)
        open_second = _a_plus(peer)
        held_open = held_totals(meter.data_dir)["a_plus"]

        assert _execute(peer, 2, 0, DataType.INT8) == ErrorCode.OK  # remote_reconnect(integer 0)
        after_reconnect = _disconnector(peer)
        reported_ready = _status_disconnector(meter)
        _wait_ticks(meter, 2)
        ready_a_plus = _a_plus(peer)

        _control(meter, input="button", value="A", long=True)  # `sim button A --long`
        after_button = _disconnector(peer)
        reported_closed = _status_disconnector(meter)
        closed_first = _a_plus(peer)
        _wait_ticks(meter, 2)
        closed_second = _a_plus(peer)
        rows = _log_rows(peer)
    # open: nothing drawn, nothing registered
    assert after_disconnect == (False, DISCONNECTED, DEFAULT_MODE)
    assert reported_open == {"state": "disconnected", "mode": DEFAULT_MODE, "output": "open"}
    assert (current, power) == (0, 0)
    assert open_second == open_first == held_open
    # remote_reconnect in mode 3: ready for reconnection, still open
    assert after_reconnect == (False, READY, DEFAULT_MODE)
    assert reported_ready == {"state": "ready", "mode": DEFAULT_MODE, "output": "open"}
    assert ready_a_plus == open_second
    # the customer's button closes it: energy again (2300 W for 2 minutes of meter time: ~77 Wh)
    assert after_button == (True, CONNECTED, DEFAULT_MODE)
    assert reported_closed == {"state": "connected", "mode": DEFAULT_MODE, "output": "connected"}
    assert closed_second > closed_first >= open_second
    # the disconnector control log: one entry per transition, in order, as the event store holds them
    events = held(meter.data_dir, "disconnect")
    assert [e.code for e in events] == [REMOTE_DISCONNECTION, READY_FOR_RECONNECTION, MANUAL_CONNECTION]
    assert rows == [[simulated_date_time(e.time), e.code] for e in events]


# -- refusals: the state stays as it was ------------------------------------------------------------


def test_a_control_mode_of_7_is_refused_and_mode_3_stays(scenario):
    dc = GXDLMSDisconnectControl(DISCONNECTOR)
    dc.controlMode = 7  # the Blue Book defines modes 0..6
    with _gurux(scenario) as peer:
        before = _disconnector(peer)
        answer = _quiet(peer.transfer, peer.client.write(dc, 4)).error
        after = _disconnector(peer)
    assert answer == ErrorCode.OTHER_REASON
    assert before[2] == after[2] == DEFAULT_MODE
    assert after == before
    assert _status_disconnector(scenario.meter)["mode"] == DEFAULT_MODE


@pytest.mark.parametrize("parameter", [(0, DataType.UINT16), (b"\x00", DataType.OCTET_STRING)],
                         ids=["long-unsigned", "octet-string"])
def test_remote_reconnect_with_a_parameter_of_the_wrong_type_is_refused(scenario, parameter):
    """Sent while disconnected, so an accepted reconnect would show (ready for reconnection, 59)."""
    meter = scenario.meter
    with _gurux(scenario) as peer:
        if _disconnector(peer)[1] != DISCONNECTED:
            assert _execute(peer, 1, 0, DataType.INT8) == ErrorCode.OK
        before = _disconnector(peer)
        log_before = held(meter.data_dir, "disconnect")
        answer = _execute(peer, 2, *parameter)
        after = _disconnector(peer)
    assert before == (False, DISCONNECTED, DEFAULT_MODE)
    assert answer == ErrorCode.UNMATCHED_TYPE
    assert after == before
    assert held(meter.data_dir, "disconnect") == log_before
    assert log_before[-1].code == REMOTE_DISCONNECTION

