"""Seeded fuzzing of the HDLC frame codec and link state machines.

Every decoder must give a value or a DecodeError; the links must never raise on input
and must keep their buffers bounded. Mutations of valid frames are also re-checksummed
half of the time, so that they get past the HCS/FCS and reach the deeper logic.
"""
from __future__ import annotations

import random

from smartmeter.errors import DecodeError
from smartmeter.transport.hdlc import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcClientLink,
    HdlcParameters,
    HdlcServerLink,
)
from smartmeter.transport.hdlc_frame import (
    MAX_FRAME_BYTES,
    FrameKind,
    FrmrInformation,
    KINDS_WITH_INFORMATION,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameSplitter,
    HdlcParameterField,
    LLC_COMMAND,
    checksum_bytes,
)

CLIENT = HdlcAddress.client(0x10)
SERVERS = [HdlcAddress.server(1), HdlcAddress(1, 0x11, 2), HdlcAddress(1, 0x11, 4),
           HdlcAddress(2, 0x11, 2), HdlcAddress(0x1234, 0x0567, 4)]
N_INPUTS = 100_000


def _seed_frames(rng: random.Random) -> list[bytes]:
    seeds = []
    for server in SERVERS:
        for kind in FrameKind:
            for pf in (False, True):
                info = b""
                if kind in (FrameKind.I, FrameKind.UI):
                    info = LLC_COMMAND + bytes(rng.randrange(256) for _ in range(rng.choice([1, 20, 125, 300])))
                elif kind in (FrameKind.SNRM, FrameKind.UA):
                    info = HdlcParameterField(rng.choice([None, 32, 128, 512]), 128, 1,
                                              rng.choice([None, 1, 7])).to_bytes()
                elif kind is FrameKind.FRMR:
                    info = FrmrInformation(0x10, 1, 2, 4).to_bytes()
                seeds.append(HdlcFrame(kind, server, CLIENT, pf, rng.randrange(8),
                                       rng.randrange(8), info, rng.random() < 0.3).to_bytes())
                seeds.append(HdlcFrame(kind, CLIENT, server, pf, rng.randrange(8),
                                       rng.randrange(8), info).to_bytes())
    return seeds


def _fix_checksums(raw: bytearray) -> bytearray:
    """Recompute HCS and FCS of a mutated frame so that it passes the checksum tests."""
    if len(raw) < 9:
        return raw
    pos = 3
    for _ in range(2):  # two address fields
        end = pos
        while end < len(raw) - 1 and not raw[end] & 1 and end - pos < 4:
            end += 1
        pos = end + 1
    header_end = pos + 1  # after control
    if header_end + 4 <= len(raw) - 1:
        raw[header_end:header_end + 2] = checksum_bytes(bytes(raw[1:header_end]))
    if len(raw) >= 4:
        raw[-3:-1] = checksum_bytes(bytes(raw[1:-3]))
    return raw


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if op == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # truncation
            del data[rng.randrange(len(data)):]
        elif op == 2:  # insertion
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif op == 3 and len(data) > 3:  # length / format corruption
            i = rng.choice([1, 2])
            data[i] = rng.randrange(256)
        elif op == 4 and data:  # deletion
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 4)]
        elif op == 5 and len(data) > 6:  # control / address byte
            data[rng.randrange(3, min(len(data), 12))] = rng.randrange(256)
        elif op == 6 and len(data) > 11:  # information byte (parameter fields, LLC)
            data[rng.randrange(8, len(data) - 3)] = rng.randrange(256)
    if rng.random() < 0.5:
        data = _fix_checksums(data)
    return bytes(data)


def _inputs(seed: int, count: int):
    rng = random.Random(seed)
    seeds = _seed_frames(rng)
    for n in range(count):
        choice = rng.random()
        if choice < 0.15:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
        elif choice < 0.25:
            yield rng.choice(seeds)
        elif choice < 0.3:  # random bytes between flags with a plausible format field
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
            yield b"\x7E\xA0" + bytes([len(body) + 2]) + body + b"\x7E"
        else:
            yield _mutate(rng, rng.choice(seeds))


def test_fuzz_frame_decoder():
    decoded = 0
    for data in _inputs(1, N_INPUTS):
        try:
            frame = HdlcFrame.from_bytes(data)
        except DecodeError:
            continue
        decoded += 1
        if frame.information and frame.kind not in KINDS_WITH_INFORMATION:
            continue  # decoded so that a link can answer FRMR, but never encoded
        # What decodes re-encodes to the same bytes (the codec has no slack).
        assert frame.to_bytes() == data
    assert decoded > N_INPUTS // 20  # the mutations do reach past the checksums


def test_fuzz_field_decoders():
    rng = random.Random(2)
    seeds = [HdlcParameterField(128, 512, 1, 7).to_bytes(), HdlcParameterField().to_bytes(),
             HdlcParameterField(0x12345678, None, 3, None).to_bytes(),
             FrmrInformation(0x32, 1, 2, 4).to_bytes(), b"\x02\x23", b"\x00\x02\x00\x23"]
    for _ in range(N_INPUTS):
        if rng.random() < 0.3:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 30)))
        else:
            data = _mutate(rng, rng.choice(seeds))
        for decode in (HdlcParameterField.from_bytes, FrmrInformation.from_bytes,
                       HdlcAddress.from_bytes):
            try:
                decode(data)
            except DecodeError:
                pass


def test_fuzz_splitter_bounded_and_exact():
    rng = random.Random(3)
    splitter = HdlcFrameSplitter(inter_octet_timeout=0.025)
    now = 0.0
    for data in _inputs(4, N_INPUTS):
        now += rng.choice([0.001, 0.001, 0.1])
        for candidate in splitter.feed(data, now):
            assert candidate[0] == 0x7E and candidate[-1] == 0x7E
            assert len(candidate) == (((candidate[1] & 7) << 8) | candidate[2]) + 2
        assert splitter.pending <= MAX_FRAME_BYTES


def test_fuzz_server_link_never_raises_and_stays_bounded():
    rng = random.Random(5)
    max_apdu = 1000
    link = HdlcServerLink(0x11, {1}, HdlcParameters(window_tx=3, window_rx=3, max_info_rx=256),
                          max_apdu_length=max_apdu)
    snrm = HdlcFrame(FrameKind.SNRM, SERVERS[1], CLIENT, True).to_bytes()
    now = 0.0
    kinds = (Connected, ApduReceived, Disconnected)
    connections = apdus = 0
    for n, data in enumerate(_inputs(6, N_INPUTS)):
        now += rng.choice([0.001, 0.001, 0.01, 0.5])
        if n % 50 == 0:
            data = snrm + data  # keep the link connected most of the time
        if rng.random() < 0.5 and len(data) > 2:
            cut = rng.randrange(1, len(data))
            events = link.receive(data[:cut], now) + link.receive(data[cut:], now)
        else:
            events = link.receive(data, now)
        for event in events:
            assert isinstance(event, kinds)
            if isinstance(event, ApduReceived):
                apdus += 1
                assert len(event.apdu) <= max_apdu
                link.send_apdu(bytes(rng.randrange(256) for _ in range(rng.choice([5, 300]))))
            elif isinstance(event, Connected):
                connections += 1
        if n % 97 == 0:
            link.tick(now + rng.choice([0.0, 0.05, 200.0]))
        out = link.take_output()
        # One answer per received frame at most a window of maximal I-frames.
        assert len(out) <= (len(data) // 9 + 2) * 3 * 300
        assert link.buffered_bytes <= MAX_FRAME_BYTES + max_apdu + 3
        assert len(link._unacked) <= 7
        assert len(link._tx_queue) <= 64
    assert connections > 100 and apdus > 100  # the fuzzing reached the connected state


def test_fuzz_client_link_never_raises():
    rng = random.Random(8)
    link = HdlcClientLink(0x10, 1, 0x11, HdlcParameters(window_rx=3), response_timeout=1.0)
    ua = HdlcFrame(FrameKind.UA, CLIENT, SERVERS[1], True).to_bytes()
    now = 0.0
    for n, data in enumerate(_inputs(9, N_INPUTS // 2)):
        now += rng.choice([0.001, 0.5, 2.0])
        if not link.connected and n % 20 == 0:
            link.connect(now)
            data = ua + data
        if link.connected and rng.random() < 0.05:
            link.send_apdu(b"\xC0\x01\xC1" + bytes(rng.randrange(300)), now)
        for event in link.receive(data, now) + link.tick(now):
            assert isinstance(event, (Connected, ApduReceived, Disconnected))
        link.take_output()
        assert link.buffered_bytes <= MAX_FRAME_BYTES + 65535 + 3
