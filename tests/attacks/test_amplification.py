"""Response amplification: a small request naming the whole load profile many times.

A GET-with-list of 32 items, each the whole load-profile buffer (1-0:99.1.0.255 attribute 2),
is about 400 bytes; its answer is 32 profiles. The meter must not build that answer before
the first block: it produces it item by item as the client asks for blocks, so what one
association holds stays about one profile's encoding, each block costs at most about one
profile read, and other clients keep getting answers meanwhile.
"""
from __future__ import annotations

import logging
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

import pytest
import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.io import BlockingTcpIO, TcpTransport
from dlms_cosem.security import NoSecurityAuthentication

from meterproc import start_meter
from smartmeter.cosem import axdr
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import get
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import CLIENT_CONFORMANCE, ClientAssociation
from smartmeter.hes.client import entry_selection
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

PROFILE = CosemAttributeDescriptor(7, Obis.parse("1-0:99.1.0.255").to_bytes(), 2)
CLOCK = CosemAttributeDescriptor(8, Obis.parse("0-0:1.0.0.255").to_bytes(), 2)
ITEMS = 32  # the most a with-list request may carry (§3.3.1 asks for at least 16)
WHOLE_PROFILE_LIST = get.GetRequestWithList(0xC1, tuple((PROFILE, None) for _ in range(ITEMS))).to_bytes()


# -- in-process: what the association holds and how often it reads ------------------------------

class CountingSource:
    """The load profile source of a meter, counting how many rows each read fetched."""

    def __init__(self, source) -> None:
        self.source = source
        self.fetched: list[int] = []

    def rows(self, from_time, to_time):
        rows = self.source.rows(from_time, to_time)
        self.fetched.append(len(rows))
        return rows

    def __getattr__(self, name):
        return getattr(self.source, name)


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    # 60 days of quarter hours: the whole 5760-entry load profile (§5.7)
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=60),
              clock=MeterClock(source=lambda: 1773144000.0))
    yield m
    m.close()


@pytest.fixture
def counting(meter):
    instance = meter.server.directory.by_ln[PROFILE.instance_id][1]
    binding = instance.config["buffer"]
    original = instance.bindings[binding]
    instance.bindings[binding] = counter = CountingSource(original)
    yield counter
    instance.bindings[binding] = original


def _associate(meter):
    server_side = meter.server.association(16, "lan")
    client = ClientAssociation(conformance=CLIENT_CONFORMANCE)
    client.on_aare(server_side.handle(client.aarq()))
    return server_side


def _whole_profile(server_side) -> bytes:
    """The whole buffer through the ordinary GET and its blocks: the encoding of one profile."""
    response = decode_xdlms(server_side.handle(get.GetRequestNormal(0xC1, PROFILE, None).to_bytes()))
    raw = bytearray()
    while isinstance(response, get.GetResponseWithDataBlock):
        raw += response.raw_data
        if response.last_block:
            return bytes(raw)
        response = decode_xdlms(server_side.handle(get.GetRequestNext(0xC1, response.block_number).to_bytes()))
    return axdr.encode(response.result)


def test_whole_profile_list_is_produced_as_the_blocks_are_asked_for(meter, counting):
    """The first block of 32 × the whole profile costs one profile read and the association
    holds about one profile's encoding, not 32; the blocks still carry all 32 buffers."""
    server_side = _associate(meter)
    one_profile = _whole_profile(server_side)
    entries = meter.legal.execute(legal.CountLoadProfileEntries())
    assert counting.fetched == [entries] and entries == 5760
    counting.fetched.clear()

    first = decode_xdlms(server_side.handle(WHOLE_PROFILE_LIST))
    assert isinstance(first, get.GetResponseWithDataBlock) and not first.last_block
    assert len(counting.fetched) == 1, "the first block read more than the first item"
    assert server_side.held_bytes() <= len(one_profile) + 2048

    raw, response, blocks, most_held = bytearray(first.raw_data), first, 1, 0
    while not response.last_block:
        response = decode_xdlms(server_side.handle(get.GetRequestNext(0xC1, response.block_number).to_bytes()))
        raw += response.raw_data
        blocks += 1
        most_held = max(most_held, server_side.held_bytes())
    # identical consecutive items are answered from the one read; never more than one profile held
    assert len(counting.fetched) == 1
    assert most_held <= len(one_profile) + 2048
    assert blocks >= ITEMS * len(one_profile) // 1224
    results = get.GetResponseWithList.from_bytes(bytes([0xC4, 3, 0xC1]) + bytes(raw)).results
    assert len(results) == ITEMS
    assert all(axdr.encode(r) == one_profile for r in results)


def test_distinct_selections_are_read_one_at_a_time(meter, counting):
    """32 different selections (whole profile from entry 1, 2, 3, ...) defeat the reuse of an
    identical item: each is still read only when the transfer reaches it."""
    server_side = _associate(meter)
    request = get.GetRequestWithList(0xC1, tuple((PROFILE, entry_selection(i + 1, 0)) for i in range(ITEMS))).to_bytes()
    response = decode_xdlms(server_side.handle(request))
    assert isinstance(response, get.GetResponseWithDataBlock)
    assert len(counting.fetched) == 1
    steps = []
    while not response.last_block:
        before = len(counting.fetched)
        response = decode_xdlms(server_side.handle(get.GetRequestNext(0xC1, response.block_number).to_bytes()))
        steps.append(len(counting.fetched) - before)
    assert max(steps) <= 1, "one block read more than one item"
    assert len(counting.fetched) == ITEMS


def test_a_new_request_drops_the_transfer_it_replaces(meter):
    """What an association holds does not pile up: each new GET replaces the transfer before."""
    server_side = _associate(meter)
    for _ in range(5):
        decode_xdlms(server_side.handle(WHOLE_PROFILE_LIST))
    held = server_side.held_bytes()
    response = decode_xdlms(server_side.handle(get.GetRequestNormal(0xC1, CLOCK, None).to_bytes()))
    assert isinstance(response, get.GetResponseNormal)
    assert server_side.held_bytes() == 0 < held


# -- real sockets: a meter process, attackers and a legitimate client ---------------------------

class WrapperSocket:
    """A bare IEC 62056-47 wrapper client: one APDU out, one APDU back."""

    def __init__(self, port: int, client_sap: int = 16) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.client_sap = client_sap

    def exchange(self, apdu: bytes) -> bytes:
        self.sock.sendall(struct.pack(">HHHH", 1, self.client_sap, 1, len(apdu)) + apdu)
        header = self._read(8)
        return self._read(struct.unpack(">HHHH", header)[3])

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("meter closed the connection")
            out += chunk
        return bytes(out)

    def associate(self) -> None:
        client = ClientAssociation(conformance=CLIENT_CONFORMANCE)
        client.on_aare(self.exchange(client.aarq()))

    def close(self) -> None:
        self.sock.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def test_amplification_over_sockets_keeps_memory_and_latency_bounded(tmp_path):
    """Six connections each ask for 32 × the whole profile and hold the transfer: the meter's
    memory grows by far less than the answers would take; one block never costs much more
    than one whole-profile read; a legitimate client (dlms-cosem) gets the clock meanwhile."""
    meter = start_meter(tmp_path / "meter")
    attackers: list[WrapperSocket] = []
    stop = threading.Event()
    legit_latencies: list[float] = []
    legit_errors: list[BaseException] = []
    try:
        reader = WrapperSocket(meter.wrapper_port)
        reader.associate()
        # what one legitimate whole-profile read costs on this machine now, and its size
        single_reads = []
        for _ in range(3):
            seconds, first = _timed(reader.exchange, get.GetRequestNormal(0xC1, PROFILE, None).to_bytes())
            response, size = decode_xdlms(first), 0
            while isinstance(response, get.GetResponseWithDataBlock) and not response.last_block:
                size += len(response.raw_data)
                more, raw = _timed(reader.exchange, get.GetRequestNext(0xC1, response.block_number).to_bytes())
                seconds += more
                response = decode_xdlms(raw)
            single_reads.append(seconds)
        one_profile = size + len(response.raw_data)
        one_read = statistics.median(single_reads)
        bound = 3 * one_read + 0.5  # generous: a block may read one item and wait for another client
        baseline = _rss_bytes(meter.process.pid)

        def legitimate() -> None:
            link = TcpTransport(client_logical_address=16, server_logical_address=1,
                                io=BlockingTcpIO("127.0.0.1", meter.wrapper_port))
            client = DlmsClient(transport=link, authentication=NoSecurityAuthentication())
            clock = cosem.CosemAttribute(interface=enumerations.CosemInterface.CLOCK,
                                         instance=cosem.Obis(0, 0, 1, 0, 0, 255), attribute=2)
            try:
                with client.session() as session:
                    while not stop.is_set():
                        seconds, value = _timed(session.get, clock)
                        assert len(value) == 14  # octet-string tag, length, 12-byte date-time
                        legit_latencies.append(seconds)
                        time.sleep(0.005)
            except BaseException as exc:  # reported by the test thread
                legit_errors.append(exc)

        legit = threading.Thread(target=legitimate, daemon=True)
        legit.start()
        while not legit_latencies and not legit_errors:
            time.sleep(0.01)

        first_blocks = []
        for _ in range(6):
            attacker = WrapperSocket(meter.wrapper_port)
            attacker.associate()
            attackers.append(attacker)
            seconds, raw = _timed(attacker.exchange, WHOLE_PROFILE_LIST)
            response = decode_xdlms(raw)
            assert isinstance(response, get.GetResponseWithDataBlock) and response.error is None
            first_blocks.append(seconds)
        held = _rss_bytes(meter.process.pid) - baseline
        would_hold = len(attackers) * ITEMS * one_profile

        # one attacker walks through the first items block by block
        block_latencies, number = [], 1
        for _ in range(3 * one_profile // 1200):
            seconds, raw = _timed(attackers[0].exchange, get.GetRequestNext(0xC1, number).to_bytes())
            response = decode_xdlms(raw)
            assert isinstance(response, get.GetResponseWithDataBlock) and response.error is None
            number = response.block_number
            block_latencies.append(seconds)
        stop.set()
        legit.join(30)
        print(f"one whole-profile read {one_read * 1000:.0f} ms ({one_profile} bytes); first blocks max "
              f"{max(first_blocks) * 1000:.0f} ms; per block max {max(block_latencies) * 1000:.0f} ms; legitimate "
              f"client max {max(legit_latencies or [0]) * 1000:.0f} ms over {len(legit_latencies)} reads; RSS growth "
              f"{held / 1e6:.1f} MB (answers would take {would_hold / 1e6:.1f} MB)")
        assert not legit_errors, legit_errors
        assert max(first_blocks) <= bound, (first_blocks, one_read)
        assert max(block_latencies) <= bound, (max(block_latencies), one_read)
        assert len(legit_latencies) >= 5 and max(legit_latencies) <= bound, (max(legit_latencies), one_read)
        assert held < would_hold / 3, (held, would_hold)
        # the meter still answers the attacker's transfers correctly and everyone else too
        assert decode_xdlms(reader.exchange(get.GetRequestNormal(0xC1, CLOCK, None).to_bytes())).result.value
    finally:
        stop.set()
        for attacker in attackers:
            attacker.close()
        meter.stop()


def test_access_naming_the_whole_profile_32_times_reads_until_its_bound(meter, counting):
    """ACCESS has no service-specific blocks and carries out every specification at once, so
    its answer is bounded instead: the GETs that would pass MAX_ACCESS_RESPONSE are not read
    and answer other-reason; the ones before carry the whole profile."""
    from smartmeter.dlms.apdu import access
    from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
    from smartmeter.dlms.server import MAX_ACCESS_RESPONSE

    server_side = _associate(meter)
    one_profile = _whole_profile(server_side)
    counting.fetched.clear()
    spec = access.AccessRequestSpec(access.AccessRequestKind.GET, PROFILE, None)
    request = access.AccessRequest(0x40000001, b"", tuple(spec for _ in range(ITEMS)),
                                   tuple(Data.null() for _ in range(ITEMS))).to_bytes()
    answer = server_side.handle(request)
    raw = bytearray()
    while True:
        block = GeneralBlockTransfer.from_bytes(answer)
        raw += block.block_data
        if block.last_block:
            break
        answer = server_side.handle(GeneralBlockTransfer(False, False, 1, 0, block.block_number, b"").to_bytes())
    response = access.AccessResponse.from_bytes(bytes(raw))
    carried = MAX_ACCESS_RESPONSE // len(one_profile)
    assert [r.result for r in response.results] == (
        [DataAccessResult.SUCCESS] * carried + [DataAccessResult.OTHER_REASON] * (ITEMS - carried))
    assert all(axdr.encode(d) == one_profile for d in response.data[:carried])
    assert len(counting.fetched) == carried + 1  # the one that did not fit, and none after it
