"""Power quality read and configured by gurux-dlms over a real socket (companion §5.9.2, §5.9.4):
gurux, as the management client (HLS 7, suite 1), writes measurement period 3 (1-0:0.8.2.255)
to one minute, reads the sag counter, duration and magnitude with their scaler_unit, the power
quality log 0-0:99.98.4.255 and the power quality profile 1-0:99.14.0.255 (capture objects and
buffer) of a three-phase meter on a 60x clock, after the test dipped L2 to 200 V for two minutes of
meter time through the control channel (as `smartmeter sim voltage L2 200`).

Expectations come from that waveform: a sag on L2 (code 77) at the minute the dip was set and
"voltage L2 normal" (86) at the minute it was lifted; two minutes of sag at 200 V; in the profile,
L2's lowest voltage 200 V in the periods of the dip, its highest 230 V, L1 and L3 steady at 230 V.
"""
from __future__ import annotations

import itertools
import logging

import pytest
import structlog
from gurux_dlms.enums import DataType, ErrorCode
from gurux_dlms.objects import GXDLMSData, GXDLMSProfileGeneric, GXDLMSRegister

from event_log_peers import gurux_read as _raw, gurux_session
from meter_control import control as _control, meter_now as _meter_now, quiet as _quiet, wait_until as _wait_until
from meterproc import start_meter
from tariff_billing_peers import simulated_date_time

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

SPEED = 60
SAG_VOLTS, NOMINAL = 200.0, 230.0
SAG_L2, NORMAL_L2 = 77, 86
PQ_LOG, PQ_PROFILE, MEASUREMENT_PERIOD_3 = "0.0.99.98.4.255", "1.0.99.14.0.255", "1.0.0.8.2.255"
# the profile's columns on a poly-phase meter: clock, status, average / min / max V L1-L3, average I L1-L3
COLUMNS = ["0.0.1.0.0.255", "0.0.96.10.3.255",
           *(f"1.0.{c}.{d}.0.255" for d in (24, 23, 26) for c in (32, 52, 72)),
           *(f"1.0.{c}.24.0.255" for c in (31, 51, 71))]
MIN_V, MAX_V = 5, 8  # column of L1's lowest and highest voltage



@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("pq") / "meter", "--phases", "3", "--speed", str(SPEED))
    yield m
    m.stop()


def test_gurux_sets_the_period_and_reads_a_sag_in_the_log_the_objects_and_the_profile(meter):
    counters = itertools.count(1, 1000)
    period = GXDLMSData(MEASUREMENT_PERIOD_3)
    period.value = 60
    period.setDataType(2, DataType.UINT32)
    with gurux_session(meter, "management", next(counters)) as peer:
        assert _quiet(peer.transfer, peer.client.write(period, 2)).error == ErrorCode.OK
        assert _raw(peer, GXDLMSProfileGeneric(PQ_PROFILE), 4) == 60  # one value: the capture period follows
    _wait_until(meter, (_meter_now(meter) // 60 + 1) * 60)  # a whole period at 230 V first
    # each change is applied between the clock read before it and the clock its answer shows
    dip_from = _meter_now(meter)
    dip = _control(meter, input="voltage", phase="L2", value=SAG_VOLTS)["clock"]["utc"]
    _wait_until(meter, dip + 120)
    back_from = _meter_now(meter)
    back = _control(meter, input="voltage", phase="L2", value=NOMINAL)["clock"]["utc"]
    _wait_until(meter, (back // 60 + 2) * 60)  # the sag has ended and the period after it is captured

    with gurux_session(meter, "management", next(counters)) as peer:
        log_profile = GXDLMSProfileGeneric(PQ_LOG)
        _raw(peer, log_profile, 3)  # gurux types a buffer by its capture objects
        log = _raw(peer, log_profile, 2)
        counted = _raw(peer, GXDLMSData("1.0.52.32.0.255"), 2)
        registers = {}
        for name in ("1.0.52.33.0.255", "1.0.52.34.0.255"):  # duration, magnitude of the last sag on L2
            register = GXDLMSRegister(name)
            scaler, _unit = _raw(peer, register, 3)
            registers[name] = _raw(peer, register, 2) * 10 ** scaler
        profile = GXDLMSProfileGeneric(PQ_PROFILE)
        _raw(peer, profile, 3)
        columns = [o.logicalName for o, _ in profile.captureObjects]
        rows = _raw(peer, profile, 2)

    # logged with the condition's start: the instant the control channel applied the voltage, in
    # whole seconds, between the clock read before the request and the clock its answer shows
    assert [code for _, code in log] == [SAG_L2, NORMAL_L2]
    for (stamp, _), earliest, latest in zip(log, (dip_from, back_from), (dip, back)):
        assert stamp in {simulated_date_time(t) for t in range(earliest, latest + 1)}, (stamp, earliest, latest)
    assert counted == 1
    # from the dip to the return
    assert back_from - dip - 1 <= registers["1.0.52.33.0.255"] <= back - dip_from + 1
    assert registers["1.0.52.34.0.255"] == pytest.approx(SAG_VOLTS, abs=0.1)
    assert columns == COLUMNS
    # volts with scaler -1: L2's lowest is the dip's in the periods it touched, its highest 230 V;
    # L1 and L3 stay at 230 V in every period
    dipped = [row for row in rows if row[MIN_V + 1] < NOMINAL * 10 - 1]
    assert 2 <= len(dipped) <= 3, rows  # a two-minute dip touches two or three one-minute periods
    for row in dipped:
        assert row[MIN_V + 1] == pytest.approx(SAG_VOLTS * 10, abs=1)
    for row in rows:
        assert row[MIN_V] == row[MAX_V] == row[MIN_V + 2] == row[MAX_V + 2] == pytest.approx(NOMINAL * 10, abs=1)
        assert row[MAX_V + 1] == pytest.approx(NOMINAL * 10, abs=1) or row in dipped
