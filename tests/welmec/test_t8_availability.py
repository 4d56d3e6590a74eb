"""Extension T8 availability: a meter on a simulated clock runs 30 days with no client; then a
client reads the whole period by range over DLMS (real loopback socket, in-process server)
and a signed readout at the end verifies.

Expectations come from the load this test injects (simulated_load: in each 15-minute
interval a load that changes from interval to interval, import in some and export in others,
for a few seconds; idle time is not sampled)."""
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
from smartmeter.transport import aio
from simulated_load import PERIOD, LoadedMeter, expected_registers

T0 = 1_773_144_000  # 2026-03-10 12:00:00 UTC, a quarter-hour boundary (the period crosses the switch to summer time)
DAYS = 30
INTERVALS = DAYS * 96  # 2880
LOAD_PROFILE_1 = "1-0:99.1.0.255"
UTC = dt.timezone.utc


@pytest.mark.welmec("T8")
def test_after_30_days_offline_every_interval_arrives_and_the_register_is_continuous(tmp_path):
    """After 30 days with no client, a range read over DLMS returns each of the 2880 quarter-hour entries exactly once with registers that never go back and rise by the injected energy of each interval (to the register's 1 Wh resolution), and a signed readout at the end verifies and equals the last entry."""
    sim = LoadedMeter(tmp_path, T0)
    meter, platform = sim.meter, sim.platform
    try:
        sim.run_intervals(INTERVALS)  # no server, no client: the meter is offline
        assert platform[0] == T0 + INTERVALS * PERIOD
        stored = sim.part.execute(legal.ReadLoadProfile())
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
        sim.close()

    boundaries = [T0 + PERIOD * k for k in range(1, INTERVALS + 1)]
    times = [int(axdr.decode_date_time(bytes(row[0])).to_datetime().timestamp()) for row in rows]
    assert len(times) == INTERVALS and times == boundaries  # each boundary exactly once, in order
    registers = [tuple(int(v) for v in row[2:6]) for row in rows]
    assert [(r.capture_time, r.a_plus, r.a_minus, r.r_plus, r.r_minus) for r in stored] == \
        [(t, *r) for t, r in zip(boundaries, registers)]  # what was read is what the meter holds
    expected = expected_registers(INTERVALS)
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
