"""Seeded fuzzing of the remote-sensor decoder and link: only SensorFrameError may escape
`decode_message`, and `RemoteSensorLink.receive` never raises (it answers with events).

Corpus: valid pair requests, responses, confirmations and samples messages (1 or 3 phases,
1..64 samples, a few long ones), tagged with the paired key. Mutations: bit flips, byte
overwrites, insertion, deletion, truncation, and corruption of the header fields that drive
sizes (phase count, sample count, sample rate, LSBs, sequence).
"""
from __future__ import annotations

import random
import struct

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.legal.sensor import (
    MAX_MESSAGE_BYTES,
    FrameAccepted,
    FrameRefused,
    PairConfirm,
    RefusalReason,
    RemoteSensor,
    RemoteSensorLink,
    SampleFrame,
    SensorFrameError,
    SensorPaired,
    Transmit,
    decode_message,
)

ITERATIONS = 100_000
METER_ID = b"METER001"
SENSOR_ID = b"SENSOR01"


def _paired_link(rnd: random.Random) -> tuple[RemoteSensorLink, RemoteSensor]:
    link = RemoteSensorLink(METER_ID, random_bytes=rnd.randbytes,
                            new_private_key=lambda: ec.derive_private_key(rnd.randrange(1, 2**200), ec.SECP256R1()))
    sensor = RemoteSensor(SENSOR_ID, random_bytes=rnd.randbytes,
                          private_key=ec.derive_private_key(rnd.randrange(1, 2**200), ec.SECP256R1()))
    link.open_pairing()
    (response,) = link.receive(sensor.pair_request())
    (done,) = link.receive(sensor.receive_pair_response(response.data))
    assert isinstance(done, SensorPaired)
    return link, sensor


def _corpus(rnd: random.Random, sensor: RemoteSensor) -> list[bytes]:
    out = []
    for k in range(120):
        phases = rnd.choice((1, 3))
        n = rnd.choice((1, 2, 7, 16, 64)) if k % 20 else rnd.choice((800, 2000))
        v = np.asarray([[rnd.uniform(-400, 400) for _ in range(n)] for _ in range(phases)])
        i = np.asarray([[rnd.uniform(-100, 100) for _ in range(n)] for _ in range(phases)])
        frame = SampleFrame(k, rnd.choice((1000, 4000, 8000, 65536)), rnd.randrange(2**40), v, i)
        out.append(sensor.encode(frame, sequence=rnd.randrange(2**32)))
    other = RemoteSensor(b"OTHER001", random_bytes=rnd.randbytes)
    out.append(other.pair_request())
    out.append(PairConfirm(SENSOR_ID, rnd.randbytes(32)).to_bytes())
    pairing = RemoteSensorLink(b"METER002", random_bytes=rnd.randbytes)
    pairing.open_pairing()
    out.append(pairing.receive(other.pair_request())[0].data)
    return out


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        op = rnd.randrange(8)
        if op == 0 and buf:
            buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        elif op == 2:
            at = rnd.randrange(len(buf) + 1)
            buf[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif op == 3 and buf:
            at = rnd.randrange(len(buf))
            del buf[at : at + rnd.randint(1, 16)]
        elif op == 4 and buf:
            del buf[rnd.randrange(len(buf)) :]  # truncation
        elif op == 5 and len(buf) >= 35:  # phase count and sample count
            buf[32] = rnd.choice((0, 1, 2, 3, 4, 255))
            buf[33:35] = struct.pack(">H", rnd.choice((0, 1, 2, 8192, 8193, 0xFFFF, rnd.getrandbits(16))))
        elif op == 6 and len(buf) >= 51:  # sample rate and LSBs
            buf[28:32] = struct.pack(">I", rnd.choice((0, 999, 1000, 65536, 65537, 2**32 - 1)))
            at = rnd.choice((35, 43))
            buf[at : at + 8] = struct.pack(">d", rnd.choice((0.0, -1.0, 1e-13, 2.0, float("nan"), float("inf"), 1e-6)))
        elif op == 7 and len(buf) >= 28:  # sequence / start sample
            at = rnd.choice((12, 20))
            buf[at : at + 8] = struct.pack(">Q", rnd.choice((0, 2**62, 2**62 + 1, 2**64 - 1, rnd.getrandbits(64))))
    return bytes(buf)


def _inputs(rnd: random.Random, corpus: list[bytes], count: int):
    for _ in range(count):
        roll = rnd.random()
        if roll < 0.08:
            yield rnd.randbytes(rnd.randint(0, 120))
        elif roll < 0.12:  # random bodies behind a valid header
            yield b"RS\x01" + bytes([rnd.choice((1, 2, 3, 0x10, rnd.randrange(256)))]) + rnd.randbytes(rnd.randint(0, 200))
        elif roll < 0.14:
            yield rnd.choice(corpus)
        else:
            yield _mutate(rnd, rnd.choice(corpus))


def test_fuzz_decode_message():
    rnd = random.Random(0x5E5502)
    _, sensor = _paired_link(rnd)
    corpus = _corpus(rnd, sensor)
    decoded = refused = 0
    for data in _inputs(rnd, corpus, ITERATIONS):
        try:
            decode_message(data)
            decoded += 1
        except SensorFrameError:
            refused += 1
    assert decoded + refused == ITERATIONS
    assert decoded > 5_000 and refused > 50_000  # both paths were exercised
    try:
        decode_message(b"\0" * (MAX_MESSAGE_BYTES + 1))
    except SensorFrameError:
        pass
    else:
        raise AssertionError("over-long message accepted")


def test_fuzz_link_never_raises():
    """Mutated traffic into a paired link: events only; nothing unauthenticated is accepted."""
    rnd = random.Random(0x11A4)
    link, sensor = _paired_link(rnd)
    corpus = _corpus(rnd, sensor)
    originals = set(corpus)
    reasons: dict[RefusalReason, int] = {}
    accepted = 0
    for data in _inputs(rnd, corpus, ITERATIONS):
        events = link.receive(data)
        assert len(events) == 1
        (event,) = events
        if isinstance(event, FrameAccepted):
            # Only an unmodified (authentic) message can pass the tag check.
            assert data in originals
            accepted += 1
        else:
            assert isinstance(event, FrameRefused), event
            reasons[event.reason] = reasons.get(event.reason, 0) + 1
    assert accepted >= 1
    for reason in (RefusalReason.MALFORMED, RefusalReason.BAD_TAG, RefusalReason.FOREIGN_SENSOR,
                   RefusalReason.PAIRING_NOT_OPEN):
        assert reasons.get(reason, 0) > 0, reasons


def test_fuzz_link_in_pairing_mode():
    """Mutated pairing traffic while a pairing window is open (fewer rounds: each request
    costs an ECDH key agreement)."""
    rnd = random.Random(0xFA1E)
    link, sensor = _paired_link(rnd)
    paired_key = link.record.key
    requests = [RemoteSensor(b"SENSOR%02d" % k, random_bytes=rnd.randbytes).pair_request() for k in range(10)]
    corpus = requests + [PairConfirm(SENSOR_ID, rnd.randbytes(32)).to_bytes()] + _corpus(rnd, sensor)[:10]
    for data in _inputs(rnd, corpus, 10_000):
        if rnd.random() < 0.01:
            link.open_pairing()
        for event in link.receive(data):
            assert isinstance(event, (FrameAccepted, FrameRefused, Transmit)), event
    # Nothing random ever confirmed a pairing: the original one is still in force.
    assert link.record.key == paired_key and link.paired_sensor_id == SENSOR_ID
