"""The sans-io wired master (and its asyncio adapter over TCP and a pty) against a scripted fake slave in the same process.

The fake slave is written here from EN 13757-2/-3 (it does not use the master's helpers):
it keeps the last FCB it saw, answers a repeated REQ_UD2 with the same telegram and a new
one with the next, and can be told to stay silent, garble an answer or lose one.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import tty
from decimal import Decimal

import pytest

from smartmeter.mbus.aio import (
    DEFAULT_TCP_LATENCY, AsyncBus, MbusLineBusy, MbusNoAnswer, MbusWrongIdentity, SerialLink, TcpLink, open_bus,
)
from smartmeter.mbus.application import (
    Coding,
    LongHeader,
    SecondaryAddress,
    encode_record,
    encode_rsp_ud,
)
from smartmeter.mbus.master import (
    Confirmed,
    DataRead,
    Failed,
    Initialise,
    Master,
    MasterBusyError,
    ReadData,
    ReadSecondary,
    SlaveError,
    Transmit,
    WrongIdentity,
    application_reset,
    response_timeout,
    set_primary_address,
    synchronise_clock,
)
from smartmeter.mbus.simulated import SimulatedBus, SimulatedSubmeter

OUTCOMES = (Confirmed, DataRead, Failed, SlaveError, WrongIdentity)
HEADER = LongHeader(12345678, "ELS", version=0x33, medium=0x03, access_number=0x2A)


def _checksum(body: bytes) -> int:
    return sum(body) % 256


class FakeSlave:
    """A wired slave at a primary address with a chain of telegrams (lists of records)."""

    def __init__(self, address=5, header=HEADER, chain=None, endless=False):
        self.address = address
        self.header = header
        self.chain = chain or [[encode_record(2850427, 0x14, coding=Coding.BCD8)]]
        self.endless = endless  # always "more records follow"
        self.position = 0  # index of the telegram the next new REQ_UD2 gets
        self.last_fcb = None
        self.last_answer = None
        self.selected = False
        self.silent = 0  # ignore this many requests
        self.garble = 0  # answer this many with a broken checksum
        self.lose = 0  # answer, but the answer never reaches the master
        self.requests = []  # every frame the slave saw

    def _addressed(self, a):
        return a == self.address or (a == 0xFD and self.selected)

    def handle(self, raw: bytes):
        self.requests.append(raw)
        answer = self._answer(raw)
        if answer is None:
            return None
        if self.silent:
            self.silent -= 1
            return None
        if self.lose:
            self.lose -= 1
            return None
        if self.garble:
            self.garble -= 1
            return answer[:-2] + bytes([(answer[-2] + 1) % 256]) + answer[-1:]
        return answer

    def _answer(self, raw):
        if raw[0] == 0x10:  # short frame: C A CS 16
            c, a = raw[1], raw[2]
            if c == 0x40:
                if self._addressed(a) or a == 0xFF:
                    self.last_fcb = None
                    self.position = 0
                    if a == 0xFD:
                        self.selected = False
                    return None if a == 0xFF else b"\xE5"
                return None
            if c & 0x0F == 0x0B and self._addressed(a):
                fcb = bool(c & 0x20)
                if self.last_fcb is not None and fcb == self.last_fcb and self.last_answer is not None:
                    return self.last_answer  # a repeat: the same telegram again
                self.last_fcb = fcb
                index = self.position
                self.position += 1
                more = self.endless or index + 1 < len(self.chain)
                records = self.chain[min(index, len(self.chain) - 1)]
                self.last_answer = encode_rsp_ud(self.address, self.header, records, more_records_follow=more)
                return self.last_answer
            return None
        # long or control frame: 68 L L 68 C A CI data CS 16
        c, a, ci, data = raw[4], raw[5], raw[6], raw[7:-2]
        if ci == 0x52 and a == 0xFD:
            ident = data[0:4][::-1].hex()
            mine = self.header.secondary_address().to_bytes()
            ok = all(x in ("f", y) for x, y in zip(ident, mine[0:4][::-1].hex()))
            ok &= data[4:6] in (b"\xFF\xFF", mine[4:6])
            ok &= data[6] in (0xFF, mine[6]) and data[7] in (0xFF, mine[7])
            self.selected = ok
            return b"\xE5" if ok else None
        if not self._addressed(a):
            return None
        self.last_fcb = bool(c & 0x20)
        if ci == 0x51 and data[:2] == b"\x01\x7A":
            self.address = data[2]
        return b"\xE5"


def run(master: Master, request, slave: FakeSlave, max_steps=100):
    """Drive one request to its outcome; returns (outcome, frames sent)."""
    sent = [master.request(request)]
    for _ in range(max_steps):
        answer = slave.handle(sent[-1])
        events = master.timeout() if answer is None else master.receive(answer)
        if answer is not None and not events:
            events = master.timeout()  # a garbled answer: the answer time runs out
        for event in events:
            if isinstance(event, Transmit):
                sent.append(event.data)
            else:
                assert isinstance(event, OUTCOMES)
                assert not master.busy
                return event, sent
    raise AssertionError("no outcome")


def _c_fields(frames):
    return [f[1] for f in frames if f[0] == 0x10]


def test_response_timeout_formula():
    # 330 bit times + 50 ms
    assert response_timeout(2400) == pytest.approx(330 / 2400 + 0.05)
    assert response_timeout(300) == pytest.approx(1.15)
    master = Master(baud_rate=2400)
    master.request(ReadData(5))
    # plus the longest RSP_UD on the line: 261 characters of 11 bits
    assert master.answer_timeout == pytest.approx(0.1875 + 261 * 11 / 2400)


def test_initialise_then_reads_toggle_the_fcb():
    master, slave = Master(), FakeSlave()
    outcome, sent = run(master, Initialise(5), slave)
    assert isinstance(outcome, Confirmed)
    assert sent == [bytes([0x10, 0x40, 0x05, 0x45, 0x16])]
    c_fields = []
    for _ in range(3):
        outcome, sent = run(master, ReadData(5), slave)
        assert isinstance(outcome, DataRead) and outcome.complete
        c_fields += _c_fields(sent)
    assert c_fields == [0x7B, 0x5B, 0x7B]  # FCB 1 first after SND_NKE, then toggled
    record = outcome.telegrams[0].records[0]
    assert (record.value, record.unit, record.exponent) == (2850427, "m³", -2)
    assert outcome.telegrams[0].header == HEADER


def test_repeat_on_no_answer_keeps_the_fcb():
    master, slave = Master(), FakeSlave()
    run(master, Initialise(5), slave)
    slave.silent = 2
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, DataRead)
    assert _c_fields(sent) == [0x7B, 0x7B, 0x7B]
    assert master.repeats == 2


def test_no_answer_after_two_repeats_fails():
    master, slave = Master(), FakeSlave()
    slave.silent = 10
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, Failed) and outcome.reason == "no answer"
    assert outcome.attempts == 3 and len(sent) == 3


def test_garbled_answer_counts_as_a_failed_attempt():
    master, slave = Master(), FakeSlave()
    slave.garble = 1
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, DataRead)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert master.corrupted_answers == 1
    slave.garble = 3
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, Failed) and outcome.reason == "corrupted answer"


def test_collision_of_two_answers_is_a_failed_attempt():
    master = Master()
    master.request(ReadData(5))
    one = encode_rsp_ud(5, HEADER, [encode_record(1, 0x14)])
    other = encode_rsp_ud(5, HEADER, [encode_record(2, 0x14)])
    collided = bytes(a | b for a, b in zip(one, other))  # a wired-OR of both answers
    assert master.receive(collided) == []
    events = master.timeout()
    assert events == [Transmit(bytes([0x10, 0x7B, 0x05, 0x80, 0x16]))]


def test_lost_answer_is_asked_again_with_the_same_fcb_and_no_telegram_is_skipped():
    chain = [[encode_record(n, 0x14)] for n in (10, 20, 30)]
    master, slave = Master(), FakeSlave(chain=chain)
    run(master, Initialise(5), slave)
    slave.lose = 1  # the slave sends telegram 1, the master never sees it
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, DataRead) and outcome.complete
    assert [t.records[0].value for t in outcome.telegrams] == [10, 20, 30]
    assert _c_fields(sent) == [0x7B, 0x7B, 0x5B, 0x7B]
    assert [r.value for r in outcome.merged().records] == [10, 20, 30]


def test_more_records_chain_is_bounded():
    master, slave = Master(), FakeSlave(endless=True)
    outcome, sent = run(master, ReadData(5), slave)
    assert isinstance(outcome, DataRead)
    assert not outcome.complete
    assert len(outcome.telegrams) == 8 and len(sent) == 8
    assert outcome.merged().more_records_follow


def test_wrong_identity_is_its_own_outcome_and_not_retried():
    for changed in (dict(identification=12345679), dict(manufacturer="EMH"),
                    dict(version=0x34), dict(medium=0x07)):
        fields = dict(identification=12345678, manufacturer="ELS", version=0x33, medium=0x03,
                      access_number=1)
        fields.update(changed)
        slave = FakeSlave(header=LongHeader(**fields))
        master = Master()
        outcome, sent = run(master, ReadData(5, expected=HEADER.secondary_address()), slave)
        assert isinstance(outcome, WrongIdentity), changed
        assert outcome.received == slave.header and len(sent) == 1
    slave = FakeSlave()
    outcome, _ = run(Master(), ReadData(5, expected=HEADER.secondary_address()), slave)
    assert isinstance(outcome, DataRead)


def test_read_by_secondary_address():
    master, slave = Master(), FakeSlave(address=0)
    secondary = SecondaryAddress(12345678, "ELS", 0x33, 0x03)
    outcome, sent = run(master, ReadSecondary(secondary), slave)
    assert isinstance(outcome, DataRead)
    selection = sent[0]
    body = bytes([0x73, 0xFD, 0x52]) + bytes.fromhex("78563412") + bytes([0x93, 0x15, 0x33, 0x03])
    assert selection == bytes([0x68, 11, 11, 0x68]) + body + bytes([_checksum(body), 0x16])
    assert sent[1][:3] == bytes([0x10, 0x5B, 0xFD])  # FCB toggled after the selection's E5
    # wildcards: any version and medium
    outcome, _ = run(master, ReadSecondary(SecondaryAddress(12345678, "ELS", 0xFF, 0xFF)), FakeSlave(address=0))
    assert isinstance(outcome, DataRead)
    # another identification: nobody answers the selection
    outcome, sent = run(Master(), ReadSecondary(SecondaryAddress(87654321, "ELS", 0x33, 0x03)), slave)
    assert isinstance(outcome, Failed) and len(sent) == 3


def test_set_primary_address_clock_and_reset():
    master, slave = Master(), FakeSlave()
    outcome, sent = run(master, set_primary_address(5, 7), slave)
    assert isinstance(outcome, Confirmed) and slave.address == 7
    body = bytes([0x73, 0x05, 0x51, 0x01, 0x7A, 0x07])
    assert sent == [bytes([0x68, 6, 6, 0x68]) + body + bytes([_checksum(body), 0x16])]
    outcome, sent = run(master, ReadData(7), slave)
    assert isinstance(outcome, DataRead)
    assert _c_fields(sent) == [0x5B]  # the FCB moved with the slave to its new address

    outcome, sent = run(master, synchronise_clock(7, dt.datetime(2008, 5, 31, 23, 50)), slave)
    assert isinstance(outcome, Confirmed)
    assert sent[0][6] == 0x6C and sent[0][7:11] == bytes.fromhex("32371F15")  # type F, OMS Annex N

    outcome, sent = run(master, application_reset(7), slave)
    assert isinstance(outcome, Confirmed)
    assert sent[0][:4] == bytes([0x68, 3, 3, 0x68]) and sent[0][6] == 0x50


def test_broadcast_initialise_needs_no_answer():
    master, slave = Master(), FakeSlave()
    outcome, sent = run(master, Initialise(0xFF), slave)
    assert isinstance(outcome, Confirmed) and len(sent) == 1


def test_application_error_answer():
    master = Master()
    master.request(ReadData(1))
    body = bytes([0x08, 0x01, 0x70, 0x08])
    events = master.receive(bytes([0x68, 4, 4, 0x68]) + body + bytes([_checksum(body), 0x16]))
    assert len(events) == 1 and isinstance(events[0], SlaveError) and events[0].code == 8


def test_answer_from_another_address_is_not_taken():
    master = Master()
    master.request(ReadData(5))
    assert master.receive(encode_rsp_ud(6, HEADER, [])) == []
    assert isinstance(master.timeout()[0], Transmit)
    events = master.receive(encode_rsp_ud(5, HEADER, []))
    assert isinstance(events[0], DataRead)


def test_one_request_at_a_time_and_stray_bytes_are_ignored():
    master = Master()
    assert master.receive(b"\xE5\x10\x40") == [] and master.timeout() == []
    master.request(ReadData(5))
    with pytest.raises(MasterBusyError):
        master.request(ReadData(6))
    with pytest.raises(ValueError):
        Master().request(ReadData(251))


# --- the asyncio adapter over TCP and over a serial pty ------------------------------



def _split_frames(buffer: bytearray):
    """Whole frames at the start of `buffer` (the slave side's own framing)."""
    while buffer:
        if buffer[0] == 0xE5:
            size = 1
        elif buffer[0] == 0x10:
            size = 5
        elif buffer[0] == 0x68 and len(buffer) >= 2:
            size = buffer[1] + 6
        else:
            return
        if len(buffer) < size:
            return
        frame = bytes(buffer[:size])
        del buffer[:size]
        yield frame


async def _tcp_slave(slave: FakeSlave):
    async def serve(reader, writer):
        buffer = bytearray()
        while data := await reader.read(512):
            buffer += data
            for frame in _split_frames(buffer):
                answer = slave.handle(frame)
                if answer:
                    writer.write(answer)
                    await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_async_bus_over_tcp():
    async def scenario():
        chain = [[encode_record(n, 0x14)] for n in (1, 2)]
        slave = FakeSlave(chain=chain)
        server = await _tcp_slave(slave)
        port = server.sockets[0].getsockname()[1]
        bus = await open_bus(f"127.0.0.1:{port}", baud_rate=38400, extra_latency=0.05)
        try:
            await bus.initialise(5)
            read = await bus.read(5, expected=HEADER.secondary_address())
            assert [r.value for r in read.merged().records] == [1, 2]
            slave.silent = 1
            await bus.synchronise_clock(5, dt.datetime(2024, 1, 2, 3, 4))
            assert bus.master.repeats == 1
            with pytest.raises(MbusWrongIdentity) as info:
                await bus.read(5, expected=SecondaryAddress(11111111, "ELS", 0x33, 0x03))
            assert info.value.received == HEADER
            slave.silent = 3
            with pytest.raises(MbusNoAnswer):
                await bus.read(5)
            await bus.set_primary_address(5, 9)
            assert (await bus.read_telegram(9)).header == HEADER
        finally:
            await bus.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_async_bus_over_a_serial_pty():
    async def scenario():
        controller, device = os.openpty()
        tty.setraw(controller)
        slave = FakeSlave()
        buffer = bytearray()
        loop = asyncio.get_running_loop()

        def readable():
            buffer.extend(os.read(controller, 512))
            for frame in _split_frames(buffer):
                answer = slave.handle(frame)
                if answer:
                    os.write(controller, answer)

        loop.add_reader(controller, readable)
        link = await SerialLink.open(os.ttyname(device), 9600)
        bus = AsyncBus(link, baud_rate=9600)
        try:
            await bus.initialise(5)
            read = await bus.read(5)
            assert read.telegrams[0].records[0].value == 2850427
            assert read.complete
        finally:
            loop.remove_reader(controller)
            await bus.close()
            os.close(controller)
            os.close(device)

    asyncio.run(scenario())


class _MemoryLink:
    """A link whose input the test fills; reads never wait (the answer is there or not)."""

    def __init__(self, written_means_sent: bool | None = None, answer: bytes = b"") -> None:
        if written_means_sent is not None:
            self.written_means_sent = written_means_sent
        self.input = bytearray()
        self.answer = answer  # put into the input after each write
        self.writes: list[bytes] = []
        self.waits: list[float] = []  # max_wait of each read once a request was written

    async def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.input += self.answer

    async def read(self, max_wait: float) -> bytes:
        if self.writes:
            self.waits.append(max_wait)
        data, self.input = bytes(self.input), bytearray()
        if not data:
            await asyncio.sleep(0)
        return data

    async def close(self) -> None:
        pass


def test_late_answer_left_on_the_link_does_not_confirm_the_next_request():
    async def scenario():
        link = _MemoryLink()  # no discard_input(): the bus drains it with reads that do not wait
        bus = AsyncBus(link, baud_rate=38400)
        link.input += b"\xE5"  # slave 5's ACK to an earlier request, arriving after its timeout
        with pytest.raises(MbusNoAnswer):
            await bus.send_user_data(7, 0x51, b"\x01\x7A\x09")  # nobody has address 7
        assert len(link.writes) == 3  # the first try and two repeats, each unanswered

    asyncio.run(scenario())


def test_tcp_link_drops_stale_input_before_a_request():
    async def scenario():
        ours, gateways = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        bus = AsyncBus(TcpLink(reader, writer), baud_rate=38400)
        gateway_reader, gateway_writer = await asyncio.open_connection(sock=gateways)
        try:
            gateway_writer.write(b"\xE5\xE5")  # stray ACKs from requests that timed out
            await gateway_writer.drain()
            with pytest.raises(MbusNoAnswer):
                await bus.initialise(7)
            assert bus.link.discarded == 2
            requests = await gateway_reader.readexactly(3 * 5)  # three SND_NKE to 7, unanswered
            assert requests == bytes.fromhex("1040074716") * 3
        finally:
            await bus.close()
            gateway_writer.close()

    asyncio.run(scenario())


def test_tcp_answer_deadline_includes_the_requests_own_transmission_time():
    baud = 2400
    data = bytes(250)  # SND_UD: 68 L L 68 C A CI, 250 bytes, CS 16 = 259 bytes x 11 bits at 2400 Bd
    on_the_bus = 259 * 11 / baud  # 1.187 s
    ack_time = response_timeout(baud) + 11 / baud  # EN 13757-2: 330 bit times + 50 ms, then one byte

    async def first_wait(link: _MemoryLink, latency: float) -> float:
        bus = AsyncBus(link, baud_rate=baud, extra_latency=latency)
        await bus.send_user_data(5, 0x51, data)
        assert len(link.writes[0]) == 259
        return link.waits[0]

    gateway = asyncio.run(first_wait(_MemoryLink(answer=b"\xE5"), DEFAULT_TCP_LATENCY))
    assert ack_time + DEFAULT_TCP_LATENCY + on_the_bus - 0.05 < gateway <= ack_time + DEFAULT_TCP_LATENCY + on_the_bus
    serial = asyncio.run(first_wait(_MemoryLink(written_means_sent=True, answer=b"\xE5"), 0.0))
    assert ack_time - 0.05 < serial <= ack_time  # the port's write returned once the frame had left


# --- against the simulated submeters of smartmeter sim mbus (another author's slaves) ---


def _drive(master: Master, request, bus: SimulatedBus, now: float):
    sent = [master.request(request)]
    for _ in range(100):
        answer = bus.receive(sent[-1], now)
        events = master.receive(answer) if answer else []
        if not events:
            events = master.timeout()
        for event in events:
            if isinstance(event, Transmit):
                sent.append(event.data)
            else:
                return event, sent
    raise AssertionError("no outcome")


def test_install_sequence_on_the_simulated_bus():
    now = 1_750_000_000.0
    gas = SimulatedSubmeter("gas", seed=1)
    heat = SimulatedSubmeter("heat", seed=2, primary_address=3)
    bus, master = SimulatedBus([gas, heat]), Master()
    secondary = SecondaryAddress(gas.identification, "SIM", gas.version, 0x03)
    # SND_NKE to FD, select by ID + manufacturer, set primary address through FD, read there
    assert isinstance(_drive(master, Initialise(0xFD), bus, now)[0], Confirmed)
    assert isinstance(_drive(master, ReadSecondary(secondary), bus, now)[0], DataRead)
    assert isinstance(_drive(master, set_primary_address(0xFD, 9), bus, now)[0], Confirmed)
    outcome, _ = _drive(master, ReadData(9, expected=secondary), bus, now)
    assert isinstance(outcome, DataRead) and outcome.complete
    volume = next(r for r in outcome.merged().records if r.unit == "m³" and r.storage_number == 0)
    assert volume.scaled() == Decimal(gas.reading(now).volume_l).scaleb(-3)  # litres -> m³
    # clock synchronisation: CI 6C with the local time as type F
    local = dt.datetime(2025, 6, 15, 12, 30)
    assert isinstance(_drive(master, synchronise_clock(9, local), bus, now)[0], Confirmed)
    assert gas.device_time(now).replace(tzinfo=None, second=0) == local
    # the heat meter answers in two telegrams (DIF 1F on the first)
    outcome, sent = _drive(master, ReadData(3), bus, now)
    assert isinstance(outcome, DataRead) and len(outcome.telegrams) == 2 and len(sent) == 2
    assert sent[0][1] & 0x20 != sent[1][1] & 0x20  # the FCB toggled between the two
    energy = next(r for r in outcome.telegrams[0].records if r.quantity == "Energy")
    assert energy.scaled() == Decimal(heat.reading(now).energy_kwh).scaleb(3)  # kWh -> Wh
    # the heat meter is not the gas meter: a read expecting the gas meter's identity at 3
    outcome, _ = _drive(master, ReadData(3, expected=secondary), bus, now)
    assert isinstance(outcome, WrongIdentity) and outcome.received.identification == heat.identification
    # a wildcard selection both meters match: their E5s collide or one answers; the read that
    # follows then gets two RSP_UDs at once, which is a corrupted answer
    both = SecondaryAddress("FFFFFFFF", "SIM", 0xFF, 0xFF)
    outcome, _ = _drive(Master(), ReadSecondary(both), SimulatedBus([SimulatedSubmeter("gas", seed=5),
                                                                       SimulatedSubmeter("water", seed=6)]), now)
    assert isinstance(outcome, Failed) and outcome.reason == "corrupted answer"



def test_a_bus_that_never_goes_quiet_refuses_the_request_instead_of_draining_for_ever():
    """A device or gateway flooding the line: the bus drops a bounded amount before a request,
    then gives up with MbusLineBusy (the engine's "no answer"), and it does so promptly."""
    async def scenario():
        async def flood(reader, writer):
            try:
                while True:
                    writer.write(b"\x00" * 4096)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        bus = await open_bus(f"127.0.0.1:{port}", baud_rate=38400, extra_latency=0.05)
        try:
            await asyncio.sleep(0.2)  # the flood fills the socket
            with pytest.raises(MbusLineBusy):
                await asyncio.wait_for(bus.read(5), 30)
            assert bus.link.discarded > 0
        finally:
            await bus.close()
            server.close()

    asyncio.run(scenario())
