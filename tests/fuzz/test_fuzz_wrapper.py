"""Seeded fuzzing of the wrapper decoders: only DecodeError (WrapperError) may escape.

Streams of valid frames are mutated (bit flips, overwrites, insertion, deletion,
length/version corruption) and fed to `WrapperDecoder.feed` in random chunks;
datagrams are random or mutated frames fed to `decode_datagram`.
"""
from __future__ import annotations

import random

from smartmeter.errors import DecodeError
from smartmeter.transport.wrapper import (
    HEADER_LENGTH,
    WrapperDecoder,
    WrapperError,
    WrapperFrame,
    decode_datagram,
)

ITERATIONS = 100_000


def _random_frame(rnd: random.Random) -> bytes:
    size = rnd.choice((0, 1, 5, 31, 64, 200, 1000))
    return WrapperFrame(rnd.choice((0, 1, 16, 0x20, 0xFFFF)), rnd.choice((0, 1, 0x11, 127)),
                        rnd.randbytes(size)).to_bytes()


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2))):
        op = rnd.randrange(6)
        if op == 0 and buf:
            buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        elif op == 2:
            i = rnd.randrange(len(buf) + 1)
            buf[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3 and buf:
            i = rnd.randrange(len(buf))
            del buf[i : i + rnd.randint(1, 8)]
        elif op == 4 and len(buf) >= HEADER_LENGTH + 1:  # length field of the first header
            payload = len(buf) - HEADER_LENGTH
            length = rnd.choice((0, 1, payload - 1, payload + 1, 0x7FFF, 0xFFFF, rnd.getrandbits(16)))
            buf[6:8] = length.to_bytes(2, "big")
        elif op == 5 and len(buf) >= 2:  # version field
            buf[0:2] = rnd.choice((0, 2, 0x0100, 0xFFFF)).to_bytes(2, "big")
    return bytes(buf)


def test_fuzz_decode_datagram():
    rnd = random.Random(0xDA7A)
    corpus = [_random_frame(rnd) for _ in range(200)]
    decoded = 0
    for _ in range(ITERATIONS):
        roll = rnd.random()
        if roll < 0.1:
            data = rnd.randbytes(rnd.randint(0, 24))
        elif roll < 0.15:
            data = rnd.choice(corpus)
        else:
            data = _mutate(rnd, rnd.choice(corpus))
        max_payload = rnd.choice((0xFFFF, 0xFFFF, 100))
        try:
            frame = decode_datagram(data, max_payload=max_payload)
        except DecodeError as exc:
            assert isinstance(exc, WrapperError)
            continue
        decoded += 1
        assert frame.to_bytes() == data
        assert len(frame.payload) <= max_payload
    assert decoded > ITERATIONS // 20


def test_fuzz_wrapper_stream_feed():
    rnd = random.Random(0x57AE)
    feeds = 0
    frames_out = 0
    broken_streams = 0
    while feeds < ITERATIONS:
        max_payload = rnd.choice((0xFFFF, 0xFFFF, 300, 0))
        decoder = WrapperDecoder(max_payload=max_payload)
        stream = b"".join(_random_frame(rnd) for _ in range(rnd.randint(1, 6)))
        if rnd.random() < 0.7:
            stream = _mutate(rnd, stream)
        pos = 0
        while pos < len(stream) and feeds < ITERATIONS:
            step = rnd.choice((1, 2, 7, 8, 9, 64, 500, 5000))
            chunk = stream[pos : pos + step]
            pos += step
            feeds += 1
            try:
                frames = decoder.feed(chunk)
            except DecodeError as exc:
                assert isinstance(exc, WrapperError)
                assert not decoder.usable
                broken_streams += 1
                # a broken decoder keeps refusing, with the same error family
                try:
                    decoder.feed(b"\x00\x01")
                except WrapperError:
                    pass
                else:
                    raise AssertionError("a broken stream accepted more input")
                break
            frames_out += len(frames)
            for frame in frames:
                assert len(frame.payload) <= max_payload
            # never more buffered than one incomplete frame of the allowed size
            assert decoder.buffered < HEADER_LENGTH + max_payload
    assert feeds == ITERATIONS
    assert frames_out > 1000 and broken_streams > 1000
