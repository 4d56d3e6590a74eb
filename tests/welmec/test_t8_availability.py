"""Extension T8 availability: a meter on a simulated clock runs 30 days with no client; then a
client reads the whole period by range over DLMS (real loopback socket, in-process server)
and a signed readout at the end verifies.

Expectations come from the load this test injects: in each 15-minute interval k the
installation draws P_k, Q_k for ACTIVE seconds right after the boundary (import in some
intervals, export in others) and nothing for the rest. Idle time is not sampled: the meter
measures its synthetic input sample by sample at 8 kHz, and sampling 30 days would take about
an hour of CPU, so a filter in front of the legal part drops the measurement commands of the
idle minutes (zero load registers zero energy). Everything else is the meter's own tick: it
decides the boundaries, captures and persists."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from smartmeter.cosem import axdr
from smartmeter.hes import readout
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.transport import aio

T0 = 1_773_144_000  # 2026-03-10 12:00:00 UTC, a quarter-hour boundary (the period crosses the switch to summer time)
PERIOD = 900
DAYS = 30
INTERVALS = DAYS * 96  # 2880
ACTIVE = 3  # seconds of load per interval
LOAD_PROFILE_1 = "1-0:99.1.0.255"
UTC = dt.timezone.utc


def injected_load(k: int) -> tuple[float, float]:
    """(P in W, Q in var) of interval k (1-based: the interval ending at T0 + k*PERIOD).
    Multiples of 1200 so that ACTIVE = 3 s gives whole Wh / varh (1200 W * 3 s = 1 Wh)."""
    p = 1200.0 * (2 + k % 8) * (-1 if k % 4 == 3 else 1)  # every fourth interval exports (PV)
    q = 1200.0 * (k % 3) * (-1 if k % 5 == 0 else 1)
    return p, q


class TestLoad:
    """The installation as the meter's tick asks it: power at time s."""

    def power(self, s: float) -> tuple[float, float]:
        offset = s - T0
        k = int(offset // PERIOD) + 1
        return injected_load(k) if offset % PERIOD < ACTIVE else (0.0, 0.0)


class IdleNotSampled:
    """In front of the legal part for the tick only: drops the measurement of no load."""

    def __init__(self, part) -> None:
        self.part, self.dropped = part, 0

    def execute(self, command):
        if isinstance(command, legal.RegisterSimulatedPower) and command.active_w == 0 and command.reactive_var == 0:
            self.dropped += 1
            return None
        return self.part.execute(command)


def expected_registers() -> list[tuple[float, ...]]:
    """(+A, -A, +R, -R) in Wh/varh at the end of each interval, from the injected load alone."""
    totals = [0.0, 0.0, 0.0, 0.0]
    out = []
    for k in range(1, INTERVALS + 1):
        p, q = injected_load(k)
        wh, varh = abs(p) * ACTIVE / 3600, abs(q) * ACTIVE / 3600
        totals[0 if p > 0 else 1] += wh
        totals[2 if q > 0 else 3] += varh
        out.append(tuple(totals))
    return out


@pytest.mark.welmec("T8")
def test_after_30_days_offline_every_interval_arrives_and_the_register_is_continuous(tmp_path):
    """After 30 days with no client, a range read over DLMS returns each of the 2880 quarter-hour entries exactly once with registers that rise by exactly the injected energy per interval, and a signed readout at the end verifies and equals the last entry."""
    platform = [float(T0)]
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: platform[0]))
    try:
        meter.load = TestLoad()
        real_part, meter.legal = meter.legal, IdleNotSampled(meter.legal)
        for _ in range(INTERVALS):  # no server, no client: the meter is offline
            platform[0] += ACTIVE
            meter.tick()
            platform[0] += PERIOD - ACTIVE
            meter.tick()
        meter.legal = real_part
        assert platform[0] == T0 + INTERVALS * PERIOD
        stored = real_part.execute(legal.ReadLoadProfile())
        credentials = load_credentials(tmp_path / "credentials" / "data_readout.json")
        cert = next((tmp_path / "credentials" / "demo-pki").glob("DEMO-meter-*-signing.pem"))

        async def read_after_the_outage():
            server = await aio.serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                link = WrapperLink("127.0.0.1", port, credentials.client_sap, credentials.server_sap, 30)
                async with MeterClient(link, security=credentials.security) as client:
                    _, rows = await client.profile(LOAD_PROFILE_1, from_time=dt.datetime.fromtimestamp(T0, UTC),
                                                   to_time=dt.datetime.fromtimestamp(platform[0], UTC), rows=True)
                    signed = await readout.capture(client, credentials.security.client_signing_key)
                return rows, signed
            finally:
                server.close()
                await server.wait_closed()

        rows, signed = asyncio.run(read_after_the_outage())
    finally:
        meter.close()

    boundaries = [T0 + PERIOD * k for k in range(1, INTERVALS + 1)]
    times = [int(axdr.decode_date_time(bytes(row[0])).to_datetime().timestamp()) for row in rows]
    assert len(times) == INTERVALS and times == boundaries  # each boundary exactly once, in order
    registers = [tuple(int(v) for v in row[2:6]) for row in rows]
    assert [(r.capture_time, r.a_plus, r.a_minus, r.r_plus, r.r_minus) for r in stored] == \
        [(t, *r) for t, r in zip(boundaries, registers)]  # what was read is what the meter holds
    expected = expected_registers()
    # The registers count whole Wh/varh (a fraction waits for the next interval) and the meter
    # measures a load step to a few mWh: each interval's increase is the injected energy to
    # within the register's 1 Wh resolution, and the running total stays within 0.5 % + 1 Wh of
    # the injected total (nothing lost or counted twice over the 30 days).
    for k, (register, energy) in enumerate(zip(registers, expected)):
        before_r = registers[k - 1] if k else (0, 0, 0, 0)
        before_e = expected[k - 1] if k else (0.0,) * 4
        for i in range(4):
            increase, injected = register[i] - before_r[i], energy[i] - before_e[i]
            assert increase >= 0, (k, i)  # never decreasing
            assert abs(increase - injected) <= 1.01, (k, i, increase, injected)
            assert abs(register[i] - energy[i]) <= 0.005 * energy[i] + 1, (k, i, register[i], energy[i])
    assert min(expected[-1]) > 100  # every register moved: import, export, both reactive directions

    verified = readout.verify_readout(signed.encode(), cert.read_bytes(), credentials.security.ek,
                                      credentials.security.ak)
    values = [r.value for r in verified.results]
    assert (values[0], values[2]) == registers[-1][:2]  # +A and -A of the readout = the last entry's
    clock = axdr.decode_date_time(bytes(values[4])).to_datetime()
    assert int(clock.timestamp()) == boundaries[-1]  # read at the end of the last interval
