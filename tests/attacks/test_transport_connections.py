"""Connection floods against a real meter process on loopback: idle connections cannot exhaust
its file descriptors or lock clients out, nothing is logged per connection, and the limits are
the TCP-UDP setup object's (IC 41), written through DLMS by the management client and kept."""
from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from meterproc import start_meter
from smartmeter.cosem.data import Data
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import HdlcLink, WrapperLink
from smartmeter.hes.credentials import load_credentials

TCP_UDP_SETUP = "0-0:25.0.0.255"
DEFAULT_NB_OF_SIM_CONN = 16
HDLC_TCP_CONNECTIONS = 4
EXPECTED_LDN = b"KFM1000100000001"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def public_read(link) -> tuple[bytes, float]:
    started = time.monotonic()
    async with MeterClient(link) as client:
        value = (await client.get("0-0:42.0.0.255", 2, class_id=1)).value
    return value, time.monotonic() - started


def test_idle_connection_flood_keeps_descriptors_bounded_and_clients_served(tmp_path):
    meter = start_meter(tmp_path)
    idle: list[socket.socket] = []
    try:
        pid = meter.process.pid
        asyncio.run(public_read(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)))  # warm up
        fds_before, rss_before = open_fds(pid), rss_bytes(pid)
        flood = {meter.wrapper_port: 600, meter.hdlc_port: 150}
        for port, count in flood.items():
            for _ in range(count):
                idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1.0)  # the meter has taken (and shed) them
        fds_during = open_fds(pid)
        wrapper_ldn, wrapper_latency = asyncio.run(
            public_read(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)))
        hdlc_ldn, hdlc_latency = asyncio.run(
            public_read(HdlcLink("127.0.0.1", meter.hdlc_port, 16, 1, 0x10, 10)))
        fds_after, rss_after = open_fds(pid), rss_bytes(pid)
    finally:
        for s in idle:
            s.close()
        meter.stop()
    assert wrapper_ldn == hdlc_ldn == EXPECTED_LDN
    assert wrapper_latency < 5.0 and hdlc_latency < 5.0
    # the meter holds at most its limits' worth of connections, not the flood's 750
    bound = fds_before + DEFAULT_NB_OF_SIM_CONN + HDLC_TCP_CONNECTIONS
    assert max(fds_during, fds_after) <= bound, (fds_before, fds_during, fds_after)
    assert rss_after - rss_before < 20 * 2**20, (rss_before, rss_after)
    output = "".join(meter.output)
    assert "Traceback" not in output
    # one line per port and condition (rate-limited), not one per connection
    assert output.count("at the limit") <= len(flood), output[-2000:]


def closed_after(sock: socket.socket, since: float) -> float:
    """Seconds from `since` until the meter closed `sock` (end of stream or reset)."""
    sock.settimeout(15)
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - since


def test_tcp_udp_setup_written_by_management_takes_effect_and_persists(tmp_path):
    meter = start_meter(tmp_path)
    credentials = load_credentials(tmp_path / "credentials" / "management.json")

    async def configure():
        link = WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap, 10)
        async with MeterClient(link, security=credentials.security) as client:
            await client.set(TCP_UDP_SETUP, 5, Data.unsigned(2), class_id=41)  # nb_of_sim_conn
            await client.set(TCP_UDP_SETUP, 6, Data.long_unsigned(2), class_id=41)  # inactivity_time_out
            return [(await client.get(TCP_UDP_SETUP, a, class_id=41)).value for a in (2, 5, 6)]

    async def public_get(attribute: int):
        async with MeterClient(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)) as client:
            return (await client.get(TCP_UDP_SETUP, attribute, class_id=41)).value

    try:
        assert asyncio.run(configure()) == [meter.wrapper_port, 2, 2]
        # two idle connections fill the limit; a client still gets in, displacing the older one
        first = socket.create_connection(("127.0.0.1", meter.wrapper_port))
        time.sleep(0.1)
        second = socket.create_connection(("127.0.0.1", meter.wrapper_port))
        second_opened = time.monotonic()
        time.sleep(0.3)
        assert asyncio.run(public_get(5)) == 2
        displaced_after = closed_after(first, second_opened)
        # the other one, idle, is closed after inactivity_time_out: not before 2 s, within a generous 15 s
        idle_closed_after = closed_after(second, second_opened)
        assert displaced_after < 2.0  # displaced by the public client, before any timeout
        assert 2.0 <= idle_closed_after < 15.0
        first.close()
        second.close()
        meter.stop()
        meter = start_meter(tmp_path)  # the written values persist
        assert asyncio.run(public_get(5)) == 2
        assert asyncio.run(public_get(6)) == 2
    finally:
        meter.stop()
