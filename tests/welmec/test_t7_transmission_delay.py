"""Extension T7 transmission delay: hours between measurement and arrival change neither the
registered values nor their time stamps, and values are assigned by the measurement time the
meter signed or stamped, never by the time they arrive.

A meter on a simulated clock (simulated_load: the test's own load, a few seconds per
interval) is read over DLMS on a real loopback socket (in-process server); the delays are
hours of the meter's clock passing, with the meter measuring and capturing meanwhile.
Expectations come from the injected load."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from simulated_load import PERIOD, LoadedMeter, expected_registers
from smartmeter.cosem import axdr
from smartmeter.hes import readout
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.legal import interface as legal
from smartmeter.transport import aio

T0 = 1_773_144_000  # 2026-03-10 12:00:00 UTC, a quarter-hour boundary
LOAD_PROFILE_1 = "1-0:99.1.0.255"
UTC = dt.timezone.utc


def _utc(cosem_date_time) -> int:
    return int(axdr.decode_date_time(bytes(cosem_date_time)).to_datetime().timestamp())


def _whole(energy: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(int(v + 1e-9) for v in energy)


async def _served(meter, work):
    server = await aio.serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
    try:
        return await work(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def _client(port: int, credentials) -> MeterClient:
    return MeterClient(WrapperLink("127.0.0.1", port, credentials.client_sap, credentials.server_sap, 30),
                       security=credentials.security)


@pytest.mark.welmec("T7")
def test_a_signed_readout_verified_hours_later_is_assigned_to_its_capture_time(tmp_path):
    """A signed readout captured at a quarter-hour boundary and verified after 6 more hours of metering carries that boundary as its time and the registers of that boundary's profile entry, not those of the time it is verified."""
    sim = LoadedMeter(tmp_path, T0)
    try:
        sim.run_intervals(8)  # two hours: the readout is taken at T0 + 2 h
        credentials = load_credentials(tmp_path / "credentials" / "data_readout.json")
        cert = next((tmp_path / "credentials" / "demo-pki").glob("DEMO-meter-*-signing.pem"))

        async def capture(port):
            async with _client(port, credentials) as client:
                return await readout.capture(client, credentials.security.client_signing_key)

        signed = asyncio.run(_served(sim.meter, capture))
        sim.run_intervals(24)  # six hours pass before the readout is verified
        profile = sim.part.execute(legal.ReadLoadProfile())
        now = sim.meter.legal.execute(legal.ReadEnergyRegisters())
    finally:
        sim.close()
    captured_at = T0 + 8 * PERIOD
    verified = readout.verify_readout(signed.encode(), cert.read_bytes(), credentials.security.ek,
                                      credentials.security.ak)
    values = [r.value for r in verified.results]
    signed_time = _utc(values[4])
    assert signed_time == captured_at
    at_capture = expected_registers(8)[-1]
    assert all(abs(v - e) <= 1 for v, e in zip((values[0], values[2]), at_capture[:2]))  # Wh resolution
    # the head-end assigns it by the signed time: the profile entry stamped then holds the same values
    (entry,) = [r for r in profile if r.capture_time == signed_time]
    assert (entry.a_plus, entry.a_minus) == (values[0], values[2])
    # six hours later the registers are elsewhere: the readout was not moved to its arrival
    later = expected_registers(32)[-1]
    assert all(abs(v - e) <= 1 for v, e in zip((now.a_plus, now.a_minus), later[:2]))
    assert now.a_plus > values[0] + 50 and now.a_minus > values[2] + 20


class SlowLink:
    """A link whose every exchange after the first `prompt` ones waits `pause` seconds of the
    meter's clock, with the meter measuring and capturing meanwhile: a head-end fetching a
    long answer block by block over a slow or interrupted network."""

    def __init__(self, link, sim: LoadedMeter, pause_intervals: int, prompt: int) -> None:
        self.link, self.sim, self.pause_intervals, self.prompt = link, sim, pause_intervals, prompt
        self.exchanges = 0
        self.delayed = 0

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def exchange(self, apdu: bytes) -> bytes:
        self.exchanges += 1
        if self.exchanges > self.prompt:
            self.sim.run_intervals(self.pause_intervals)
            self.delayed += 1
        return await self.link.exchange(apdu)


@pytest.mark.welmec("T7")
def test_a_profile_fetched_block_by_block_over_hours_keeps_its_stamps_and_values(tmp_path):
    """A load profile read by range whose blocks are fetched an hour of metering apart arrives with every entry stamped at its capture time and holding the registers the injected load implies; what was captured meanwhile is stamped by its own time, and the registers at the end equal the injected total."""
    sim = LoadedMeter(tmp_path, T0)
    first = 96  # one day before the read
    try:
        sim.run_intervals(first)
        credentials = load_credentials(tmp_path / "credentials" / "data_readout.json")
        asked_at = int(sim.platform[0])

        async def slow_read(port):
            async with _client(port, credentials) as client:
                slow = SlowLink(client.link, sim, 4, prompt=2)  # the capture objects and the request itself are prompt
                client.link = slow
                _, rows = await client.profile(LOAD_PROFILE_1, from_time=dt.datetime.fromtimestamp(T0, UTC),
                                               to_time=dt.datetime.fromtimestamp(asked_at, UTC), rows=True)
                client.link = slow.link
                return rows, slow.delayed

        rows, delayed = asyncio.run(_served(sim.meter, slow_read))
        finished_at = int(sim.platform[0])
        profile = sim.part.execute(legal.ReadLoadProfile())
        registers = sim.part.execute(legal.ReadEnergyRegisters())
    finally:
        sim.close()
    assert delayed >= 3  # the answer came in several blocks, each an hour after the one before
    assert finished_at - asked_at == delayed * 4 * PERIOD
    expected = [_whole(e) for e in expected_registers((finished_at - T0) // PERIOD)]
    got = [(_utc(r[0]), *(int(v) for v in r[2:6])) for r in rows]
    # exactly the entries of the range asked for, stamped by capture time, not by arrival
    assert [t for t, *_ in got] == [T0 + PERIOD * k for k in range(1, first + 1)]
    for (t, *values), implied in zip(got, expected):
        assert all(abs(v - e) <= 1 for v, e in zip(values, implied)), (t, values, implied)
    # meanwhile the meter went on: one entry per boundary passed during the transfer, each at its time
    assert [r.capture_time for r in profile] == list(range(T0 + PERIOD, finished_at + 1, PERIOD))
    assert [(r.a_plus, r.a_minus, r.r_plus, r.r_minus) for r in profile[:first]] == [tuple(v) for _, *v in got]
    total = expected_registers((finished_at - T0) // PERIOD)[-1]
    assert all(abs(v - e) <= 0.005 * e + 1 for v, e in zip(
        (registers.a_plus, registers.a_minus, registers.r_plus, registers.r_minus), total))
