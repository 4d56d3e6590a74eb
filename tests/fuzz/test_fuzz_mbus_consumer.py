"""Seeded fuzzing of the H1 consumer push decoders (what a consumer's reader runs on the bytes
of the port): `decode_segment` and `ConsumerPushReader`.

* decode_segment: mutated segments (half with the L fields and checksum made right again, so
  mutations reach the CI, the wrapper and the APDU part) give a Segment or a DecodeError.
* ConsumerPushReader: a stream of genuine pushes with noise, cuts and mutated frames in between,
  fed in random pieces, never raises, holds a bounded number of items, gives every push that
  went out intact, in order, and nothing that is not made of segments sent. (The transport
  numbers segments but names no message: a push cut short followed by one whose first segment
  was lost joins the two, and encryption only has no tag to tell. Whatever a reader gives is
  still made of whole segments, in their sequence.)
"""
from __future__ import annotations

import random

from byte_mutation import mutate
from smartmeter.errors import DecodeError
from smartmeter.mbus.consumer_port import (
    MAX_SEGMENTS,
    ConsumerApdu,
    ConsumerPushReader,
    Discarded,
    decode_segment,
    segment_frames,
)

INTERESTING = (0x00, 0x01, 0x03, 0x10, 0x11, 0x16, 0x1F, 0x20, 0x53, 0x67, 0x68, 0xE5, 0xFA, 0xFF)


def fix_length_and_checksum(frame: bytes) -> bytes:
    """A mutated long frame made consistent on the link again: L fields, checksum and stop byte."""
    if len(frame) < 9 or frame[0] != 0x68:
        return frame
    body = frame[4:-2][:255]
    if len(body) < 3:
        return frame
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def pushes(rng: random.Random, count: int) -> list[bytes]:
    """APDUs of random length (1..5 segments), each starting with its own index so mixes show."""
    return [bytes((0xDB, i)) + rng.randbytes(rng.randrange(1, 5 * 245)) for i in range(count)]


def test_decode_segment_is_total():
    rng = random.Random(20261205)
    frames = [f for apdu in pushes(rng, 20) for f in segment_frames(apdu)]
    for i in range(20_000):
        data = mutate(rng, rng.choice(frames), INTERESTING)
        if i % 2:
            data = fix_length_and_checksum(data)
        try:
            segment = decode_segment(data)
        except DecodeError:
            continue
        assert 0 <= segment.sequence < MAX_SEGMENTS and segment.part


def test_reader_never_raises_stays_bounded_and_never_mixes_pushes():
    rng = random.Random(7)
    sent = pushes(rng, 60)
    stream = bytearray()
    intact, parts = [], set()
    for apdu in sent:
        frames = segment_frames(apdu)
        parts |= {decode_segment(f).part for f in frames}
        whole = True
        if rng.random() < 0.3:  # one frame of this push damaged
            k = rng.randrange(len(frames))
            frames[k] = mutate(rng, frames[k], INTERESTING)
            whole = False
        if rng.random() < 0.2:  # the push cut short
            frames = frames[:rng.randrange(len(frames))]
            whole = False
        if whole:
            intact.append(apdu)
        stream += b"".join(frames)
        if rng.random() < 0.3:  # noise on the line between pushes
            stream += rng.randbytes(rng.randrange(1, 40))
    reader = ConsumerPushReader()
    received = []
    position = 0
    while position < len(stream):
        piece = rng.randrange(1, 300)
        reader.feed(bytes(stream[position:position + piece]))
        position += piece
        items = list(reader)
        assert len(items) <= 4 * MAX_SEGMENTS
        assert all(isinstance(item, (ConsumerApdu, Discarded)) for item in items)
        received += [item.apdu for item in items if isinstance(item, ConsumerApdu)]
    assert len(intact) > 20
    assert [apdu for apdu in received if apdu in set(intact)] == intact
    for apdu in received:  # the rest: whole segments as sent (245 octets each but the last)
        assert all(apdu[i:i + 245] in parts for i in range(0, len(apdu), 245)), apdu[:2].hex()
