"""Resource exhaustion through the transports, against the asyncio servers of an in-process
meter over real loopback sockets: what one unauthenticated peer can make the meter hold stays
bounded, a legitimate client is served meanwhile, and each condition is logged a bounded
number of times."""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import tracemalloc

import pytest

from smartmeter.cosem.classes.base import RequestContext
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.client import ClientAssociation, GetExchange
from smartmeter.dlms.server import ServerAssociation
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.transport import aio, hdlc
from smartmeter.transport.wrapper import WrapperDecoder, WrapperFrame, decode_datagram

LDN = CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)
EXPECTED_LDN = b"KFM1000100000001"
PUBLIC = 16
CLIENTS_IN_MODEL = 9  # companion standard §3.6
TRANSPORT_LOGGER = "smartmeter.transport"


@pytest.fixture
def meter(tmp_path):
    m = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: 1773144000.0))
    yield m
    m.close()


def tcp_udp_setup(meter):
    return aio.tcp_udp_setup(meter.server)


def write(setup_object, attribute: int, value: Data) -> None:
    setup_object.set(attribute, value, RequestContext("management", 1))


def live_associations() -> int:
    gc.collect()
    return sum(isinstance(o, ServerAssociation) for o in gc.get_objects())


def transport_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(TRANSPORT_LOGGER)]


async def read_ldn_over_tcp(port: int) -> bytes:
    """A legitimate public client: its own connection, AARQ, GET of the logical device name."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = WrapperDecoder()
    association = ClientAssociation()

    async def exchange(apdu: bytes) -> bytes:
        writer.write(WrapperFrame(PUBLIC, 1, apdu).to_bytes())
        while True:
            frames = decoder.feed(await asyncio.wait_for(reader.read(4096), 10))
            if frames:
                return frames[0].payload

    try:
        association.on_aare(await exchange(association.aarq()))
        get = GetExchange(LDN)
        assert get.feed(await exchange(get.first())) is None
        return get.result.value
    finally:
        writer.close()


def test_a_connection_cycling_through_wports_holds_a_bounded_number_of_associations(meter, caplog):
    caplog.set_level(logging.INFO, logger=TRANSPORT_LOGGER)
    wports = 3000

    async def scenario():
        server = await aio.serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = WrapperDecoder()

        async def exchange(source: int, apdu: bytes) -> WrapperFrame:
            writer.write(WrapperFrame(source, 1, apdu).to_bytes())
            while True:
                frames = decoder.feed(await asyncio.wait_for(reader.read(4096), 10))
                if frames:
                    return frames[0]

        public = ClientAssociation()
        public.on_aare((await exchange(PUBLIC, public.aarq())).payload)
        baseline_associations = live_associations()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            # every other wPort of the 16-bit space in turn, each with an AARQ of its own
            for wport in range(100, 100 + wports):
                answer = await exchange(wport, ClientAssociation().aarq())
                assert answer.destination_wport == wport  # each one answered (refused: unknown client)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        held = live_associations() - baseline_associations
        # the public association opened first is still there and serves on the same connection
        get = GetExchange(LDN)
        assert get.feed((await exchange(PUBLIC, get.first())).payload) is None
        writer.close()
        server.close()
        return grown, held, get.result.value

    grown, held, ldn = asyncio.run(scenario())
    assert ldn == EXPECTED_LDN
    assert held <= CLIENTS_IN_MODEL - 1  # with the public one: at most one per client
    assert grown < 1_000_000, f"{grown} bytes kept after {wports} wPorts"
    assert len(transport_lines(caplog)) <= 2  # nothing here is logged per frame


def test_udp_sessions_from_many_source_ports_are_bounded_and_expire(meter, caplog):
    caplog.set_level(logging.INFO, logger=TRANSPORT_LOGGER)
    setup = tcp_udp_setup(meter)
    write(setup, 6, Data.long_unsigned(1))  # inactivity_time_out 1 s
    limit, _ = setup.limits()
    peers, batch = 1200, 200

    async def scenario():
        transport = await aio.serve_wrapper_udp(meter.server, "127.0.0.1", 0)
        port = transport.get_extra_info("sockname")[1]
        table = transport.get_protocol().connections
        loop = asyncio.get_running_loop()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            most = 0

            def admitted() -> int:  # every slot given ends displaced, expired or still in the table
                return table.displaced + table.expired + len(table)

            for sent in range(batch, peers + 1, batch):
                sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(batch)]
                try:
                    for n, s in enumerate(sockets):  # each a new peer address, each opening a public association
                        s.sendto(WrapperFrame(PUBLIC, 1, ClientAssociation().aarq()).to_bytes(), ("127.0.0.1", port))
                        if n % 10 == 9:
                            await asyncio.sleep(0)  # the meter reads as they come: no datagram lost in its buffer
                        most = max(most, len(table))
                    deadline = time.monotonic() + 20
                    while admitted() < sent and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)  # let the meter take them all
                        most = max(most, len(table))
                finally:
                    for s in sockets:
                        s.close()
            flood_admitted = admitted()
            # a legitimate UDP client is served while the table is full
            legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            legit.setblocking(False)
            association = ClientAssociation()

            async def exchange(apdu: bytes) -> bytes:
                legit.sendto(WrapperFrame(PUBLIC, 1, apdu).to_bytes(), ("127.0.0.1", port))
                data = await asyncio.wait_for(loop.sock_recv(legit, 4096), 10)
                return decode_datagram(data).payload

            started = time.monotonic()
            association.on_aare(await exchange(association.aarq()))
            get = GetExchange(LDN)
            assert get.feed(await exchange(get.first())) is None
            latency = time.monotonic() - started
            legit.close()
            full = len(table)
            # idle sessions are given back: wait (generously) for the 1 s inactivity timeout
            deadline = time.monotonic() + 20
            while len(table) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        left = len(table)
        transport.close()
        return most, full, left, grown, latency, get.result.value, flood_admitted, table.displaced

    most, full, left, grown, latency, ldn, flood_admitted, displaced = asyncio.run(scenario())
    assert ldn == EXPECTED_LDN and latency < 5.0
    assert most <= limit and full <= limit
    assert flood_admitted == peers  # every peer was taken, though the table never grew past its limit
    # each batch comes faster than the inactivity timeout: its peers beyond the limit took idle ones' places
    assert displaced >= (peers // batch) * (batch - limit)
    assert left == 0  # all expired, nothing kept for the flood's peers
    assert grown < 1_000_000, f"{grown} bytes kept after {peers} peers"
    lines = transport_lines(caplog)
    assert sum("at the limit" in line for line in lines) <= 1
    assert len(lines) <= 5, lines


def test_idle_tcp_connections_are_bounded_and_a_client_is_served_at_the_limit(meter, caplog):
    caplog.set_level(logging.INFO, logger=TRANSPORT_LOGGER)
    setup = tcp_udp_setup(meter)
    write(setup, 5, Data.unsigned(8))  # nb_of_sim_conn
    write(setup, 6, Data.long_unsigned(2))  # inactivity_time_out, s
    idle_connections = 300

    async def scenario():
        server = await aio.serve_wrapper_tcp(meter.server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        table = server.connections
        idle = []
        most = 0
        for _ in range(idle_connections):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
            await asyncio.sleep(0)
            most = max(most, len(table))
        await asyncio.sleep(0.2)
        most = max(most, len(table))
        started = time.monotonic()
        ldn = await read_ldn_over_tcp(port)
        latency = time.monotonic() - started
        # the connections the meter closed see end of stream; the rest are within the limit
        open_ = 0
        for reader, _ in idle:
            try:
                data = await asyncio.wait_for(reader.read(1), 0.01)
            except asyncio.TimeoutError:
                open_ += 1
            else:
                assert data == b""
        # idle ones left are closed after inactivity_time_out (at least 2 s, at most generously 15 s)
        opened = time.monotonic()
        closed_at = []
        for reader, _ in idle:
            try:
                await asyncio.wait_for(reader.read(1), 15)
                closed_at.append(time.monotonic() - opened)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        for _, writer in idle:
            writer.close()
        server.close()
        return most, open_, ldn, latency, len(table), table.displaced

    most, open_, ldn, latency, left, displaced = asyncio.run(scenario())
    assert ldn == EXPECTED_LDN and latency < 5.0
    assert most <= 8 and open_ <= 8
    assert displaced >= idle_connections + 1 - 8
    assert left == 0
    lines = transport_lines(caplog)
    assert sum("at the limit" in line for line in lines) <= 1
    assert len(lines) <= 5, lines


def test_hdlc_over_tcp_connections_are_bounded_and_closed_after_inactivity(meter, caplog):
    caplog.set_level(logging.INFO, logger=TRANSPORT_LOGGER)
    hdlc_setup = meter.hdlc_setup()
    hdlc_setup.set(8, Data.long_unsigned(1), RequestContext("maintenance", 6))  # inactivity_time_out 1 s
    params, address = aio.hdlc_parameters(hdlc_setup)

    async def scenario():
        server = await aio.serve_hdlc_tcp(meter.server, hdlc_setup, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        table = server.connections
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
        await asyncio.sleep(0.2)
        most = len(table)
        # a probe that connects the link and then falls silent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = hdlc.HdlcClientLink(PUBLIC, 1, address, hdlc.HdlcParameters())
        writer.write(link.connect())
        started = time.monotonic()
        events = []
        while not any(isinstance(e, hdlc.Connected) for e in events):
            events += link.receive(await asyncio.wait_for(reader.read(4096), 10), time.monotonic())
        connect_latency = time.monotonic() - started
        silent_since = time.monotonic()
        end = await asyncio.wait_for(reader.read(4096), 15)  # the meter closes it
        silent_for = time.monotonic() - silent_since
        for _, w in idle:
            w.close()
        writer.close()
        server.close()
        return most, connect_latency, end, silent_for

    most, connect_latency, end, silent_for = asyncio.run(scenario())
    assert most <= aio.HDLC_TCP_MAX_CONNECTIONS
    assert connect_latency < 5.0
    assert end == b"" and silent_for >= 1.0  # not before the link's inactivity_time_out
    lines = transport_lines(caplog)
    assert sum("at the limit" in line for line in lines) <= 1
    assert len(lines) <= 5, lines
