"""Seeded fuzzing of the A-XDR decoders: random bytes and mutated valid encodings.

Only a value or a DecodeError may come out. Every outcome is also compared with the plain
reference decoder in tests/cosem/axdr_reference.py (same value and end offset, or a
DecodeError of the same kind), successful decodes re-encode, and decode_rows agrees with
the reference. Long arrays whose elements share one byte layout, with some elements that
do not, exercise the decoder's bulk path and its fallbacks.
"""
from __future__ import annotations

import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "cosem"))
from axdr_reference import reference_decode  # noqa: E402

from smartmeter.cosem.axdr import decode, decode_all, decode_rows, encode, encode_date_time, encode_rows  # noqa: E402
from smartmeter.cosem.data import (  # noqa: E402
    INTEGER_RANGES,
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
)
from smartmeter.errors import DecodeError, TruncatedError  # noqa: E402

DT = DataType
RUNS = 100_000
LONG_ARRAY_RUNS = 20_000  # inputs of up to a few kB each: the reference decoder is slow on them


def _random_date_time(rng: random.Random) -> CosemDateTime:
    def opt(lo, hi):
        return None if rng.random() < 0.2 else rng.randint(lo, hi)

    return CosemDateTime(
        CosemDate(opt(0, 0xFFFE), opt(1, 12), opt(1, 31), opt(1, 7)),
        CosemTime(opt(0, 23), opt(0, 59), opt(0, 59), opt(0, 99)),
        opt(-720, 720),
        opt(0, 0xFE),
    )


def _random_leaf(rng: random.Random, t: DataType) -> Data:
    if t in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[t]
        return Data(t, rng.choice([lo, hi, 0, rng.randint(lo, hi)]) if lo <= 0 else rng.randint(lo, hi))
    if t == DT.OCTET_STRING:
        return Data(t, rng.randbytes(rng.choice([0, 1, 6, 12, 130])))
    if t == DT.VISIBLE_STRING:
        return Data(t, "".join(chr(rng.randint(32, 255)) for _ in range(rng.randint(0, 8))))
    if t == DT.UTF8_STRING:
        return Data(t, "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 5))))
    if t == DT.BIT_STRING:
        return Data(t, "".join(rng.choice("01") for _ in range(rng.randint(0, 20))))
    if t == DT.BOOLEAN:
        return Data(t, rng.random() < 0.5)
    if t == DT.FLOAT32:
        return Data(t, rng.choice([0.0, 1.5, -2.25, 3.0e38]))
    if t == DT.FLOAT64:
        return Data(t, rng.uniform(-1e9, 1e9))
    if t == DT.DATE_TIME:
        return Data(t, _random_date_time(rng))
    if t == DT.DATE:
        return Data(t, _random_date_time(rng).date)
    if t == DT.TIME:
        return Data(t, _random_date_time(rng).time)
    return Data(t)  # null-data, dont-care


_LEAF_TYPES = [t for t in DT if t not in (DT.ARRAY, DT.STRUCTURE, DT.COMPACT_ARRAY)]
# compact-array elements must take at least one byte (see axdr._min_size)
_SIZED_LEAF_TYPES = [t for t in _LEAF_TYPES if t not in (DT.NULL_DATA, DT.DONT_CARE)]


def _random_data(rng: random.Random, depth: int = 0) -> Data:
    roll = rng.random() * (0.35 if depth == 0 else 1.0)  # roots are mostly containers
    if depth < 4 and roll < 0.25:
        kind = DT.ARRAY if roll < 0.12 else DT.STRUCTURE
        return Data(kind, tuple(_random_data(rng, depth + 1) for _ in range(rng.randint(0, 4))))
    if roll < 0.30:
        fields = tuple(TypeDescription(rng.choice(_SIZED_LEAF_TYPES)) for _ in range(rng.randint(1, 3)))
        td = TypeDescription(DT.STRUCTURE, fields=fields)
        if rng.random() < 0.3:
            td = TypeDescription(DT.ARRAY, element=fields[0], count=rng.randint(1, 3))
        contents = tuple(_conforming(rng, td) for _ in range(rng.randint(0, 3)))
        return Data(DT.COMPACT_ARRAY, CompactArray(td, contents))
    return _random_leaf(rng, rng.choice(_LEAF_TYPES))


def _conforming(rng: random.Random, td: TypeDescription) -> Data:
    if td.type == DT.STRUCTURE:
        return Data(DT.STRUCTURE, tuple(_conforming(rng, f) for f in td.fields))
    if td.type == DT.ARRAY:
        return Data(DT.ARRAY, tuple(_conforming(rng, td.element) for _ in range(td.count)))
    return _random_leaf(rng, td.type)


_LENGTH_BYTES = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xFF]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if not b:
            b = bytearray(rng.randbytes(rng.randint(1, 8)))
            continue
        at = rng.randrange(len(b))
        if op == 0:  # bit flip
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation
            del b[at:]
        elif op == 2:  # insertion
            b[at:at] = rng.randbytes(rng.randint(1, 4))
        elif op == 3:  # length/count/tag corruption
            b[at] = rng.choice(_LENGTH_BYTES + [rng.randrange(256)])
        elif op == 4:  # deletion
            del b[at : at + rng.randint(1, 4)]
        else:  # duplicate a slice (repeats tags and lengths)
            end = min(len(b), at + rng.randint(1, 16))
            b[at:at] = b[at:end]
    return bytes(b)


def _outcome(decoder, raw: bytes) -> tuple:
    """What a decoder makes of raw: the value (by repr, exact for NaN floats) and end, or the error kind."""
    try:
        value, end = decoder(raw)
    except TruncatedError:
        return ("truncated",)
    except DecodeError:
        return ("refused",)
    return ("decoded", repr(value), end)


def test_fuzz_decode() -> None:
    rng = random.Random(0xA5D7)
    corpus = [encode(_random_data(rng)) for _ in range(400)]
    successes = 0
    for i in range(RUNS):
        if i % 10 == 0:
            raw = rng.randbytes(rng.randint(0, 24))
        else:
            raw = _mutate(rng, rng.choice(corpus))
        assert _outcome(decode, raw) == _outcome(reference_decode, raw), raw.hex()
        try:
            value = decode_all(raw)
        except DecodeError:
            continue
        successes += 1
        # Whatever decodes must be encodable, and re-decodes to the same bytes.
        again = encode(value)
        assert encode(decode_all(again)) == again
    # The mutations must leave a useful share of inputs decodable, or the test proves little.
    assert successes > RUNS // 20


# Element types whose values have one byte layout (the decoder may unpack runs of them in bulk)
_LAYOUT_TYPES = [DT.UNSIGNED, DT.LONG, DT.DOUBLE_LONG_UNSIGNED, DT.LONG64, DT.ENUM, DT.BOOLEAN, DT.FLOAT32,
                 DT.FLOAT64, DT.BCD, DT.OCTET_STRING]


def _random_long_array(rng: random.Random) -> bytes:
    """An array of 16..60 elements of one shape (a leaf or a flat structure), some elements
    differing (another octet-string length, another type, a nested value), sometimes nested
    in a structure."""
    octet_len = rng.choice([0, 6, 12])
    if rng.random() < 0.5:
        shape = [rng.choice(_LAYOUT_TYPES + [DT.DATE_TIME]) for _ in range(rng.randint(1, 5))]
    else:
        shape = None  # leaves
    leaf_type = rng.choice(_LAYOUT_TYPES)

    def leaf(t: DataType) -> Data:
        if t == DT.OCTET_STRING:
            return Data(t, rng.randbytes(octet_len))
        return _random_leaf(rng, t)

    def element() -> Data:
        if rng.random() < 0.05:  # an element of another shape
            return _random_data(rng, 2)
        if shape is None:
            return leaf(leaf_type)
        return Data(DT.STRUCTURE, tuple(leaf(t) for t in shape))

    value = Data(DT.ARRAY, tuple(element() for _ in range(rng.randint(16, 60))))
    if rng.random() < 0.3:
        value = Data(DT.STRUCTURE, (Data(DT.UNSIGNED, 1), value, Data(DT.NULL_DATA)))
    return encode(value)


def _long_form(n: int, rng: random.Random) -> bytes:
    """A non-minimal A-XDR length form of n (valid: decoders must accept it)."""
    size = rng.randint(1, 4)
    return bytes((0x80 + size,)) + n.to_bytes(size, "big")


def _random_long_form_array(rng: random.Random) -> bytes:
    """An array of 16..60 elements written with non-minimal counts and lengths: structures
    (maybe empty) or octet-strings (maybe empty) whose headers take more bytes than needed."""
    count = rng.randint(16, 60)
    leaf_types = [rng.choice(_LAYOUT_TYPES[:-1]) for _ in range(rng.randint(0, 4))]
    octet_len = rng.choice([0, 3, 12])

    def element() -> bytes:
        if not leaf_types and rng.random() < 0.5:
            return b"\x09" + _long_form(octet_len, rng) + rng.randbytes(octet_len)
        return b"\x02" + _long_form(len(leaf_types), rng) + b"".join(encode(_random_leaf(rng, t)) for t in leaf_types)

    same_form = rng.random() < 0.7  # mostly one byte layout, so the bulk path applies
    first = element()
    elements = [first if same_form and rng.random() < 0.9 else element() for _ in range(count)]
    return b"\x01" + _long_form(count, rng) + b"".join(elements)


def test_fuzz_decode_long_arrays() -> None:
    rng = random.Random(0xB01C)
    corpus = [_random_long_array(rng) for _ in range(300)]
    for _ in range(100):
        raw = _random_long_form_array(rng)
        assert _outcome(decode, raw) == _outcome(reference_decode, raw), raw.hex()
        assert _outcome(decode, raw)[0] == "decoded"
        corpus.append(raw)
    for raw in corpus[:300]:  # unmutated: the encoding decodes back exactly
        assert encode(decode_all(raw)) == raw
    successes = 0
    for _ in range(LONG_ARRAY_RUNS):
        raw = _mutate(rng, rng.choice(corpus))
        outcome = _outcome(decode, raw)
        assert outcome == _outcome(reference_decode, raw), raw.hex()
        successes += outcome[0] == "decoded"
    assert successes > LONG_ARRAY_RUNS // 10, successes


def _random_profile(rng: random.Random) -> bytes:
    types = [rng.choice([DT.OCTET_STRING, DT.UNSIGNED, DT.DOUBLE_LONG_UNSIGNED, DT.LONG, DT.BOOLEAN,
                         DT.FLOAT32, DT.LONG64, DT.ENUM, DT.DATE_TIME, DT.VISIBLE_STRING])
             for _ in range(rng.randint(0, 6))]
    octet_len = rng.choice([0, 12, 13])
    rows = []
    for _ in range(rng.randint(0, 12)):
        row = []
        for t in types:
            if t == DT.OCTET_STRING:
                row.append(encode_date_time(_random_date_time(rng)) if octet_len == 12 else rng.randbytes(octet_len))
            else:
                row.append(_random_leaf(rng, t).value)
        rows.append(tuple(row))
    return encode_rows(rows, types)


def _expected_rows(raw: bytes):
    value, end = reference_decode(raw)
    if value.type != DT.ARRAY or any(row.type != DT.STRUCTURE for row in value.value):
        return None
    return [tuple(item.value for item in row.value) for row in value.value], end


def _same(a, b) -> bool:
    # NaN floats from mutated bytes: compare by repr, which is exact for floats.
    return repr(a) == repr(b)


def test_fuzz_decode_rows() -> None:
    rng = random.Random(0x7E57)
    corpus = [_random_profile(rng) for _ in range(300)]
    successes = 0
    for i in range(RUNS):
        if i % 10 == 0:
            raw = rng.randbytes(rng.randint(0, 24))
        else:
            raw = _mutate(rng, rng.choice(corpus))
        try:
            rows = decode_rows(raw)
        except DecodeError:
            continue
        successes += 1
        assert _same(rows, _expected_rows(raw))
    assert successes > RUNS // 20
