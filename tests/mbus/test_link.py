"""EN 13757-2 frames: encoding by the standard's layout, round trips, every malformed case,
the stream reader and the frame count bit."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.mbus.link import (
    REQ_UD2,
    REQ_UD2_FCB,
    RSP_UD,
    SND_NKE,
    SND_UD,
    SND_UD_FCB,
    Ack,
    BadFrame,
    ControlFrame,
    FcbState,
    FrameReader,
    LongFrame,
    MAX_FRAME_BYTES,
    MbusChecksumError,
    MbusFrameError,
    MbusLengthError,
    MbusStartError,
    MbusStopByteError,
    MbusTruncatedError,
    ShortFrame,
    SlaveFcb,
    decode_frame,
)

# The OMS Annex N wired RSP_UD (tests/vectors/mbus-vectors.json), a complete long frame.
WIRED = bytes.fromhex("6820206808FD7278563412931533032A0000000C1427048502046D32371F1502FD1700008916")


def test_encodings_follow_the_frame_layout():
    assert Ack().to_bytes() == b"\xE5"
    # SND_NKE to primary address 5: 10 40 05 (40+05) 16
    assert ShortFrame(SND_NKE, 5).to_bytes() == bytes([0x10, 0x40, 0x05, 0x45, 0x16])
    # REQ_UD2 with FCB to 0xFE: checksum wraps modulo 256
    assert ShortFrame(REQ_UD2_FCB, 0xFE).to_bytes() == bytes([0x10, 0x7B, 0xFE, (0x7B + 0xFE) & 0xFF, 0x16])
    raw = ControlFrame(SND_UD, 1, 0x50).to_bytes()
    assert raw == bytes([0x68, 3, 3, 0x68, 0x53, 0x01, 0x50, 0xA4, 0x16])
    raw = LongFrame(SND_UD_FCB, 7, 0x51, bytes([0x01, 0x7A, 0x09])).to_bytes()
    assert raw == bytes([0x68, 6, 6, 0x68, 0x73, 7, 0x51, 1, 0x7A, 9, (0x73 + 7 + 0x51 + 1 + 0x7A + 9) & 0xFF, 0x16])


def test_the_public_wired_vector_decodes():
    frame = decode_frame(WIRED)
    assert frame == LongFrame(RSP_UD, 0xFD, 0x72, WIRED[7:-2])
    assert frame.to_bytes() == WIRED


@pytest.mark.parametrize("frame", [
    Ack(), ShortFrame(SND_NKE, 0), ShortFrame(REQ_UD2, 250), ShortFrame(0xFF, 0xFF),
    ControlFrame(SND_UD_FCB, 0xFD, 0x50), LongFrame(RSP_UD, 1, 0x72, b"\x00"),
    LongFrame(RSP_UD, 1, 0x72, bytes(range(252))),
])
def test_round_trip(frame):
    assert decode_frame(frame.to_bytes()) == frame


def test_encoder_refuses_what_the_format_cannot_carry():
    with pytest.raises(EncodeError):
        LongFrame(RSP_UD, 1, 0x72, bytes(253))  # L would be 256
    with pytest.raises(EncodeError):
        LongFrame(RSP_UD, 1, 0x72, b"")  # that is a control frame
    with pytest.raises(EncodeError):
        ShortFrame(0x100, 1)


@pytest.mark.parametrize("raw, error", [
    (WIRED[:-2] + bytes([(WIRED[-2] + 1) & 0xFF]) + WIRED[-1:], MbusChecksumError),
    (WIRED[:-1] + b"\x17", MbusStopByteError),
    (WIRED[:2] + b"\x21" + WIRED[3:], MbusLengthError),  # L fields differ
    (WIRED[:3] + b"\x69" + WIRED[4:], MbusLengthError),  # second start byte
    (bytes([0x68, 2, 2, 0x68, 0x08, 0x01, 0x00, 0x16]), MbusLengthError),  # L < 3
    (WIRED[:-1], MbusTruncatedError),
    (WIRED[:3], MbusTruncatedError),
    (b"", MbusTruncatedError),
    (bytes([0x10, 0x40, 0x05, 0x46, 0x16]), MbusChecksumError),
    (bytes([0x10, 0x40, 0x05, 0x45, 0x00]), MbusStopByteError),
    (bytes([0x10, 0x40, 0x05]), MbusTruncatedError),
    (b"\x00\x10\x40\x05\x45\x16", MbusStartError),
    (WIRED + b"\xE5", MbusFrameError),  # trailing bytes
])
def test_malformed_frames_raise_typed_errors(raw, error):
    with pytest.raises(error) as info:
        decode_frame(raw)
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, TruncatedError) == (error is MbusTruncatedError)


def test_reader_splits_a_stream_and_counts_noise():
    short = ShortFrame(SND_NKE, 3).to_bytes()
    stream = b"\x00\xFF" + WIRED + b"\xE5" + b"\x11\x22\x33" + short
    for step in (1, 2, 7, len(stream)):
        reader = FrameReader()
        items = []
        for i in range(0, len(stream), step):
            reader.feed(stream[i:i + step])
            items += list(reader)
        assert items == [decode_frame(WIRED), Ack(), ShortFrame(SND_NKE, 3)]
        assert reader.skipped == 5
        assert reader.buffered_bytes == 0


def test_reader_reports_a_bad_frame_and_keeps_the_next_one():
    bad = WIRED[:-2] + bytes([(WIRED[-2] ^ 0x01)]) + WIRED[-1:]
    reader = FrameReader()
    reader.feed(bad + WIRED)
    items = reader.take()
    assert len(items) == 2
    assert isinstance(items[0], BadFrame) and isinstance(items[0].error, MbusChecksumError)
    assert items[0].raw == bad
    assert items[1] == decode_frame(WIRED)


def test_reader_keeps_the_frame_after_one_cut_short():
    # The first answer breaks off after 20 bytes; the next frame starts inside the span the
    # first one's header declared.
    # A cut frame shows only once the bytes its header declared are there.
    short = ShortFrame(SND_NKE, 3).to_bytes()
    for followers in ([WIRED], [short, WIRED]):
        reader = FrameReader()
        reader.feed(WIRED[:20] + b"".join(followers))
        items = reader.take()
        assert isinstance(items[0], BadFrame) and items[0].raw == WIRED[:20]
        assert items[1:] == [decode_frame(f) for f in followers]


def test_reader_recovers_from_a_false_long_header():
    # 68 followed by inconsistent L fields: reported, and the frame right after is found.
    reader = FrameReader()
    reader.feed(b"\x68\x05\x06" + WIRED)
    items = reader.take()
    assert isinstance(items[0], BadFrame) and isinstance(items[0].error, MbusLengthError)
    assert items[-1] == decode_frame(WIRED)


def test_reader_buffer_stays_bounded():
    reader = FrameReader()
    # A long-frame header declaring 255 bytes, then never the stop byte, then garbage.
    reader.feed(bytes([0x68, 0xFF, 0xFF, 0x68]) + bytes(10_000))
    assert reader.buffered_bytes <= MAX_FRAME_BYTES
    reader.feed(b"\xE5" * 100_000)
    assert reader.buffered_bytes <= MAX_FRAME_BYTES
    assert len(reader.take()) <= 256
    assert reader.overflowed > 0


def test_fcb_toggles_per_slave_and_resets_with_snd_nke():
    fcb = FcbState()
    fcb.reset(1)
    assert fcb.c_field(REQ_UD2, 1) == REQ_UD2_FCB  # first after SND_NKE: FCB = 1
    fcb.confirm(1)
    assert fcb.c_field(REQ_UD2, 1) == REQ_UD2
    assert fcb.c_field(REQ_UD2, 2) == REQ_UD2_FCB  # another slave has its own bit
    # no answer: the repeat keeps the bit
    assert fcb.c_field(REQ_UD2, 1) == REQ_UD2
    fcb.confirm(1)
    assert fcb.c_field(SND_UD, 1) == SND_UD_FCB
    fcb.confirm(1)
    fcb.reset(1)
    assert fcb.c_field(REQ_UD2, 1) == REQ_UD2_FCB


def test_slave_sees_a_repeat_by_an_unchanged_fcb():
    slave = SlaveFcb()
    slave.reset()
    assert not slave.is_repeat(REQ_UD2_FCB)
    assert slave.is_repeat(REQ_UD2_FCB)
    assert not slave.is_repeat(REQ_UD2)
    assert not slave.is_repeat(0x4B)  # FCV 0: never a repeat


_NOISE = st.binary(max_size=8).map(lambda b: bytes(x for x in b if x not in (0xE5, 0x10, 0x68)))
_FRAMES = st.one_of(
    st.just(Ack()),
    st.builds(ShortFrame, st.integers(0, 255), st.integers(0, 255)),
    st.builds(ControlFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.builds(LongFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
              st.binary(min_size=1, max_size=252)),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(_NOISE, _FRAMES), max_size=6), st.data())
def test_reader_finds_exactly_the_frames_between_noise(pieces, data):
    stream = b"".join(noise + frame.to_bytes() for noise, frame in pieces)
    reader, found = FrameReader(), []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 64))
        reader.feed(stream[pos:pos + step])
        pos += step
        found += reader.take()
    assert found == [frame for _, frame in pieces]
    assert reader.skipped == sum(len(noise) for noise, _ in pieces)


def test_reader_items_do_not_depend_on_how_the_stream_is_cut():
    """The same bytes fed whole or in any pieces give the same items: a damaged long frame whose
    last bytes could begin the next frame is judged only once the bytes after it are there."""
    import random

    rng = random.Random(5)
    for _ in range(300):
        stream = bytearray()
        for _ in range(rng.randrange(1, 6)):
            frame = bytearray(LongFrame(0x53, 0xFF, rng.randrange(0x20), rng.randbytes(rng.randrange(2, 60))).to_bytes())
            if rng.random() < 0.5:  # damaged: cut short, or a data byte changed (checksum now wrong)
                if rng.random() < 0.5:
                    del frame[rng.randrange(6, len(frame)):]
                else:
                    frame[rng.randrange(6, len(frame) - 2)] ^= 0x5A
            stream += frame
            if rng.random() < 0.3:
                stream += bytes(rng.choice((0x68, 0x10, 0x16, 0xE5, 0x00)) for _ in range(rng.randrange(1, 4)))
        whole = FrameReader()
        whole.feed(bytes(stream))
        pieces = FrameReader()
        position = 0
        while position < len(stream):
            step = rng.randrange(1, 40)
            pieces.feed(bytes(stream[position:position + step]))
            position += step
        assert [repr(item) for item in pieces] == [repr(item) for item in whole]
