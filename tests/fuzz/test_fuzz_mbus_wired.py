"""Seeded fuzzing of the wired M-Bus decoders and master, plus hypothesis round trips.

* decode_frame: random and mutated frames (half of them with L fields and checksum made
  right again, so that mutations reach the content) give a frame or an MbusFrameError;
  what decodes re-encodes to the same bytes.
* FrameReader: any stream, cut anywhere, never raises, keeps at most one frame buffered,
  and every frame it yields is a piece of the stream.
* parse_telegram: mutated user data of the 76 libmbus frames under every CI gives a
  Telegram or a DecodeError; a record's value, scaled value and DLMS unit never raise
  anything but the record's MbusValueError.
* Master: any bytes and timeouts give only events, and every request ends.
"""
from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from byte_mutation import mutate
from smartmeter.errors import DecodeError
from smartmeter.mbus.application import (
    Coding,
    MbusValueError,
    Telegram,
    encode_record,
    parse_records,
    parse_telegram,
)
from smartmeter.mbus.link import (
    MAX_FRAME_BYTES,
    Ack,
    BadFrame,
    ControlFrame,
    FrameReader,
    LongFrame,
    MbusFrameError,
    ShortFrame,
    decode_frame,
)
from smartmeter.mbus.master import (
    Confirmed,
    DataRead,
    Failed,
    Initialise,
    Master,
    ReadData,
    ReadSecondary,
    SlaveError,
    Transmit,
    WrongIdentity,
    set_primary_address,
)
from smartmeter.mbus.application import SecondaryAddress

SEED = 0x3B05_7157
N_FRAMES = 60_000
N_TELEGRAMS = 40_000
N_MASTER = 20_000
INTERESTING = (0x00, 0x03, 0x0F, 0x10, 0x16, 0x1F, 0x2F, 0x68, 0x72, 0x7C, 0x7F, 0x80, 0xBF, 0xC9,
               0xE5, 0xF6, 0xFC, 0xFD, 0xFF)
LIBMBUS = Path(__file__).resolve().parents[1] / "vectors" / "libmbus"
SEED_FRAMES = [bytes.fromhex(p.read_text()) for p in sorted(LIBMBUS.glob("*/*.hex"))]
SEED_FRAMES += [Ack().to_bytes(), ShortFrame(0x7B, 5).to_bytes(), ControlFrame(0x53, 0xFD, 0x50).to_bytes()]
CIS = (0x50, 0x51, 0x52, 0x6C, 0x70, 0x71, 0x72, 0x73, 0x78, 0x7A)


def _fix(raw: bytearray) -> bytearray:
    """Make L fields, second start byte, checksum and stop byte right again."""
    if len(raw) >= 5 and raw[0] == 0x10:
        del raw[5:]
        raw[3] = (raw[1] + raw[2]) & 0xFF
        raw[4] = 0x16
    elif len(raw) >= 9 and raw[0] == 0x68:
        body = raw[4:-2][:255]
        raw[:] = bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])
    return raw


def _frame_inputs(rng: random.Random, count: int):
    for _ in range(count):
        r = rng.random()
        if r < 0.1:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        elif r < 0.15:
            yield rng.choice(SEED_FRAMES)
        else:
            data = bytearray(mutate(rng, rng.choice(SEED_FRAMES), INTERESTING))
            if rng.random() < 0.5:
                data = _fix(data)
            yield bytes(data)


def test_fuzz_decode_frame():
    rng = random.Random(SEED)
    decoded = 0
    for data in _frame_inputs(rng, N_FRAMES):
        try:
            frame = decode_frame(data)
        except MbusFrameError:
            continue
        decoded += 1
        assert frame.to_bytes() == data
    assert N_FRAMES // 10 < decoded < N_FRAMES


def test_fuzz_frame_reader_bounded_and_exact():
    rng = random.Random(SEED + 1)
    reader = FrameReader()
    stream = bytearray()
    frames = 0
    for data in _frame_inputs(rng, N_FRAMES // 2):
        stream += data
        while len(data):
            cut = rng.randrange(1, len(data) + 1)
            reader.feed(data[:cut])
            data = data[cut:]
            assert reader.buffered_bytes < MAX_FRAME_BYTES
        for item in reader:
            if isinstance(item, BadFrame):
                assert isinstance(item.error, MbusFrameError)
                continue
            frames += 1
            assert item.to_bytes() in stream
        del stream[:-2 * MAX_FRAME_BYTES]
    assert frames > N_FRAMES // 20


def _check_telegram(telegram: Telegram) -> None:
    for record in telegram.records:
        try:
            record.value
            record.scaled()
        except MbusValueError:
            assert record.value_error is not None
        scaler_unit = record.dlms_scaler_unit()
        assert scaler_unit is None or (-128 <= scaler_unit[0] <= 127 and 0 <= scaler_unit[1] <= 255)


def test_fuzz_parse_telegram():
    rng = random.Random(SEED + 2)
    seeds = [f[7:-2] for f in SEED_FRAMES if f[0] == 0x68 and len(f) > 9]
    accepted = 0
    for _ in range(N_TELEGRAMS):
        if rng.random() < 0.1:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        else:
            data = mutate(rng, rng.choice(seeds), INTERESTING)
        ci = rng.choice(CIS) if rng.random() < 0.9 else rng.randrange(256)
        try:
            telegram = parse_telegram(ci, data)
        except DecodeError:
            continue
        accepted += 1
        _check_telegram(telegram)
    assert 0 < accepted < N_TELEGRAMS


def test_fuzz_master_never_raises_and_always_ends():
    rng = random.Random(SEED + 3)
    master = Master()
    secondary = SecondaryAddress(12345678, "ELS", 0x33, 0x03)
    requests = [Initialise(5), ReadData(5), ReadData(5, secondary), ReadSecondary(secondary),
                set_primary_address(5, 9), Initialise(0xFF)]
    answers = [f for f in SEED_FRAMES]
    outcomes = 0
    inputs = _frame_inputs(rng, N_MASTER)
    for _ in range(N_MASTER // 10):
        master.request(rng.choice(requests))
        for step in range(200):
            if rng.random() < 0.3:
                events = master.timeout()
            else:
                data = next(inputs, b"") if rng.random() < 0.7 else rng.choice(answers)
                events = master.receive(data)
            done = [e for e in events if not isinstance(e, Transmit)]
            assert all(isinstance(e, (Confirmed, DataRead, WrongIdentity, SlaveError, Failed)) for e in done)
            if done:
                outcomes += 1
                break
        if master.busy:
            # a chain of more-records answers may go on; the bound ends it within 8 reads
            for _ in range(3 * 8 + 3):
                if not master.busy:
                    break
                master.timeout()
            assert not master.busy
    assert outcomes > 0


# --- hypothesis round trips --------------------------------------------------------------

@settings(max_examples=300)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(min_size=0, max_size=252))
def test_frames_round_trip(c, a, ci, data):
    frame = LongFrame(c, a, ci, data) if data else ControlFrame(c, a, ci)
    assert decode_frame(frame.to_bytes()) == frame


_INT_RANGES = {Coding.INT8: 8, Coding.INT16: 16, Coding.INT24: 24, Coding.INT32: 32, Coding.INT48: 48,
               Coding.INT64: 64}
_BCD_DIGITS = {Coding.BCD2: 2, Coding.BCD4: 4, Coding.BCD6: 6, Coding.BCD8: 8, Coding.BCD12: 12}


@st.composite
def numbers(draw):
    coding = draw(st.sampled_from(list(_INT_RANGES) + list(_BCD_DIGITS)))
    if coding in _INT_RANGES:
        bits = _INT_RANGES[coding]
        value = draw(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
    else:
        digits = _BCD_DIGITS[coding]
        value = draw(st.integers(-(10 ** (digits - 1) - 1), 10 ** digits - 1))
    return coding, value


@settings(max_examples=300)
@given(numbers(), st.integers(0, 0x7A), st.integers(0, 2 ** 20), st.integers(0, 15), st.integers(0, 3))
def test_records_round_trip(number, vif, storage, tariff, subunit):
    coding, value = number
    if vif in (0x6C, 0x6D):
        vif = 0x13  # dates have their own codings
    raw = encode_record(value, vif, coding=coding, storage_number=storage, tariff=tariff, subunit=subunit)
    records, special, rest = parse_records(raw)
    assert special is None and rest == b""
    (record,) = records
    assert (record.value, record.storage_number, record.tariff, record.subunit) == (value, storage, tariff, subunit)
