"""Service interface protection (companion standard §4.1.2): remote disable and lockout."""
from __future__ import annotations

import pytest

from smartmeter.dlms.client import ClientAssociation
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.meter.store import MeterStore
from smartmeter.meter.wz_guard import FOREVER, WzGuard
from smartmeter.transport import aio, hdlc


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_countdown_closes_and_reopens(tmp_path):
    clock = FakeMonotonic()
    guard = WzGuard(MeterStore(tmp_path), clock)
    assert guard.port_open()
    guard.set_countdown(30)
    assert not guard.port_open() and guard.remaining() == 30
    clock.now += 29.5
    assert guard.remaining() == 1
    clock.now += 1
    assert guard.port_open() and guard.remaining() == 0


def test_forever_never_counts_down_until_set_to_zero(tmp_path):
    clock = FakeMonotonic()
    guard = WzGuard(MeterStore(tmp_path), clock)
    guard.set_countdown(FOREVER)
    clock.now += 10**7
    assert guard.remaining() == FOREVER and not guard.port_open()
    guard.set_countdown(0)
    assert guard.port_open()


def test_countdown_survives_a_restart(tmp_path):
    clock = FakeMonotonic()
    guard = WzGuard(MeterStore(tmp_path), clock)
    guard.set_countdown(600)
    clock.now += 100
    guard.checkpoint()
    restarted = WzGuard(MeterStore(tmp_path), FakeMonotonic())  # a new monotonic epoch after power-up
    assert 499 <= restarted.remaining() <= 500


def test_lockout_after_consecutive_failures_only(tmp_path):
    clock = FakeMonotonic()
    events = []
    guard = WzGuard(MeterStore(tmp_path), clock, on_event=lambda name, fields: events.append(name))
    guard.set_lockout(3, 120)
    guard.association_failed()
    guard.association_failed()
    guard.association_succeeded()  # a success resets the count
    guard.association_failed()
    guard.association_failed()
    assert guard.port_open()
    guard.association_failed()
    assert not guard.port_open() and guard.remaining() == 120
    assert "wz_locked_out" in events
    guard.set_lockout(0, 120)  # 0 attempts: the feature is off
    guard.set_countdown(0)
    for _ in range(10):
        guard.association_failed()
    assert guard.port_open()


@pytest.mark.parametrize("attempts, period", [(-1, 10), (256, 10), (3, 70000)])
def test_lockout_configuration_range(tmp_path, attempts, period):
    with pytest.raises(ValueError):
        WzGuard(MeterStore(tmp_path)).set_lockout(attempts, period)


def _snrm_answered(port: aio.HdlcPort, client: hdlc.HdlcClientLink, now: float) -> bool:
    out = port.receive(client.connect(), now)
    return any(isinstance(e, hdlc.Connected) for e in client.receive(out, now)) if out else False


def test_optical_port_locks_after_failed_associations(tmp_path):
    """Three refused AARQs over HDLC lock the optical port: not even SNRM is answered."""
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: 1773144000.0))
    params, address = aio.hdlc_parameters(meter.hdlc_setup())
    port = aio.HdlcPort(meter.server, params, address, meter.wz_guard.port_open)
    for attempt in range(3):
        client = hdlc.HdlcClientLink(0x50, 1, address, hdlc.HdlcParameters())  # no such client SAP (0x7F is all-station)
        assert _snrm_answered(port, client, attempt)
        client.send_apdu(ClientAssociation().aarq())
        replies = [e for e in client.receive(port.receive(client.take_output(), attempt), attempt)
                   if isinstance(e, hdlc.ApduReceived)]
        assert replies and replies[0].apdu[0] == 0x61  # an AARE (refusal)
        port.receive(client.disconnect(), attempt)
    public = hdlc.HdlcClientLink(16, 1, address, hdlc.HdlcParameters())
    assert not _snrm_answered(port, public, 10)
    meter.wz_guard.set_countdown(0)  # re-enabled remotely
    assert _snrm_answered(port, public, 11)
    meter.close()
