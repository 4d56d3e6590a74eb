"""A-XDR codec: published/hand-checked encodings, Hypothesis round trips, the profile-buffer
fast path against the generic decoder, and gurux-dlms / dlms-cosem as independent peers."""
from __future__ import annotations

import datetime as dt
import gc
import math
import struct
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smartmeter.cosem import axdr
from smartmeter.cosem.axdr import (
    decode,
    decode_all,
    decode_date,
    decode_date_time,
    decode_length,
    decode_rows,
    decode_time,
    encode,
    encode_date,
    encode_date_time,
    encode_length,
    encode_rows,
    encode_time,
    rows_to_data,
)
from smartmeter.cosem.data import (
    INTEGER_RANGES,
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    TypeDescription,
)
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

from axdr_reference import reference_decode  # tests/cosem, on sys.path as the test's own directory

DT = DataType

# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------


def _opt(strategy):
    return st.one_of(st.none(), strategy)


dates = st.builds(
    CosemDate,
    _opt(st.integers(0, 0xFFFE)),
    _opt(st.one_of(st.integers(1, 12), st.sampled_from([0xFD, 0xFE]))),
    _opt(st.one_of(st.integers(1, 31), st.sampled_from([0xFD, 0xFE]))),
    _opt(st.integers(1, 7)),
)
times = st.builds(
    CosemTime,
    _opt(st.integers(0, 23)),
    _opt(st.integers(0, 59)),
    _opt(st.integers(0, 59)),
    _opt(st.integers(0, 99)),
)
date_times = st.builds(
    CosemDateTime, dates, times, _opt(st.integers(-720, 720)), _opt(st.integers(0, 0xFE))
)


def _int_data(t: DataType):
    lo, hi = INTEGER_RANGES[t]
    return st.integers(lo, hi).map(lambda v: Data(t, v))


# Leaf values whose Python value compares equal after a round trip (no NaN).
simple_leaves = st.one_of(
    st.just(Data(DT.NULL_DATA)),
    st.just(Data(DT.DONT_CARE)),
    st.booleans().map(Data.boolean),
    st.text("01", max_size=40).map(lambda v: Data(DT.BIT_STRING, v)),
    *[_int_data(t) for t in INTEGER_RANGES],
    st.binary(max_size=300).map(Data.octet_string),
    st.text(st.characters(max_codepoint=255), max_size=20).map(Data.visible_string),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20).map(lambda v: Data(DT.UTF8_STRING, v)),
    st.floats(width=32, allow_nan=False).map(lambda v: Data(DT.FLOAT32, v)),
    st.floats(allow_nan=False).map(lambda v: Data(DT.FLOAT64, v)),
    date_times.map(lambda v: Data(DT.DATE_TIME, v)),
    dates.map(lambda v: Data(DT.DATE, v)),
    times.map(lambda v: Data(DT.TIME, v)),
)

# compact-array: a type description, then elements that conform to it.
_COMPACT_SIMPLE = [t for t in DT if t not in (DT.ARRAY, DT.STRUCTURE, DT.COMPACT_ARRAY)]
_SIZED_SIMPLE = [t for t in _COMPACT_SIMPLE if t not in (DT.NULL_DATA, DT.DONT_CARE)]


def _type_descriptions():
    # Zero-size parts (null-data, dont-care, empty structures/arrays) are refused by design.
    leaf = st.sampled_from(_SIZED_SIMPLE).map(TypeDescription)

    def extend(children):
        return st.one_of(
            st.lists(children, min_size=1, max_size=4).map(
                lambda fs: TypeDescription(DT.STRUCTURE, fields=tuple(fs))
            ),
            st.tuples(st.integers(1, 3), children).map(
                lambda c: TypeDescription(DT.ARRAY, element=c[1], count=c[0])
            ),
        )

    return st.recursive(leaf, extend, max_leaves=6)


_LEAF_BY_TYPE = {
    DT.NULL_DATA: st.just(Data(DT.NULL_DATA)),
    DT.DONT_CARE: st.just(Data(DT.DONT_CARE)),
    DT.BOOLEAN: st.booleans().map(Data.boolean),
    DT.BIT_STRING: st.text("01", max_size=20).map(lambda v: Data(DT.BIT_STRING, v)),
    DT.OCTET_STRING: st.binary(max_size=20).map(Data.octet_string),
    DT.VISIBLE_STRING: st.text(st.characters(max_codepoint=255), max_size=10).map(Data.visible_string),
    DT.UTF8_STRING: st.text(st.characters(blacklist_categories=("Cs",)), max_size=10).map(
        lambda v: Data(DT.UTF8_STRING, v)
    ),
    DT.FLOAT32: st.floats(width=32, allow_nan=False).map(lambda v: Data(DT.FLOAT32, v)),
    DT.FLOAT64: st.floats(allow_nan=False).map(lambda v: Data(DT.FLOAT64, v)),
    DT.DATE_TIME: date_times.map(lambda v: Data(DT.DATE_TIME, v)),
    DT.DATE: dates.map(lambda v: Data(DT.DATE, v)),
    DT.TIME: times.map(lambda v: Data(DT.TIME, v)),
    **{t: _int_data(t) for t in INTEGER_RANGES},
}


def _conforming(td: TypeDescription):
    if td.type == DT.STRUCTURE:
        return st.tuples(*[_conforming(f) for f in td.fields]).map(lambda v: Data(DT.STRUCTURE, v))
    if td.type == DT.ARRAY:
        return st.tuples(*[_conforming(td.element)] * td.count).map(lambda v: Data(DT.ARRAY, v))
    return _LEAF_BY_TYPE[td.type]


@st.composite
def compact_arrays(draw):
    td = draw(_type_descriptions())
    contents = tuple(draw(st.lists(_conforming(td), max_size=5)))
    return Data(DT.COMPACT_ARRAY, CompactArray(td, contents))


data_values = st.recursive(
    st.one_of(simple_leaves, compact_arrays()),
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(Data.array),
        st.lists(children, max_size=5).map(Data.structure),
    ),
    max_leaves=25,
)

# ---------------------------------------------------------------------------------------
# Known encodings
# ---------------------------------------------------------------------------------------

KNOWN = [
    # Green Book: a logical name is an octet-string of 6 bytes.
    (Data.octet_string(bytes([0, 0, 1, 0, 0, 255])), "09 06 00 00 01 00 00 FF"),
    # Green Book: attribute descriptor style structure {class-id 8, logical name, attribute 2}
    (
        Data.structure([Data.long_unsigned(8), Data.octet_string(bytes.fromhex("0000010000FF")), Data.integer(2)]),
        "02 03 12 00 08 09 06 00 00 01 00 00 FF 0F 02",
    ),
    (Data.null(), "00"),
    (Data(DT.DONT_CARE), "FF"),
    (Data.boolean(True), "03 01"),
    (Data.boolean(False), "03 00"),
    (Data(DT.BIT_STRING, "1010000001"), "04 0A A0 40"),
    (Data(DT.BIT_STRING, ""), "04 00"),
    (Data.double_long(-1), "05 FF FF FF FF"),
    (Data.double_long_unsigned(0x12345678), "06 12 34 56 78"),
    (Data.visible_string("ABC"), "0A 03 41 42 43"),
    (Data(DT.UTF8_STRING, "é"), "0C 02 C3 A9"),
    (Data(DT.BCD, 0x12), "0D 12"),
    (Data.integer(-128), "0F 80"),
    (Data.long(-2), "10 FF FE"),
    (Data.unsigned(255), "11 FF"),
    (Data.long_unsigned(1234), "12 04 D2"),
    (Data.long64(-1), "14" + " FF" * 8),
    (Data.long64_unsigned(2**64 - 1), "15" + " FF" * 8),
    (Data.enum(3), "16 03"),
    (Data(DT.FLOAT32, 1.0), "17 3F 80 00 00"),
    (Data(DT.FLOAT64, -2.0), "18 C0 00 00 00 00 00 00 00"),
    (Data.array([Data.unsigned(1), Data.unsigned(2)]), "01 02 11 01 11 02"),
    (Data.array([]), "01 00"),
    # 2014-12-31, Wednesday, 23:59:59, hundredths/deviation/status not specified
    (
        Data(DT.DATE_TIME, CosemDateTime(CosemDate(2014, 12, 31, 3), CosemTime(23, 59, 59, None), None, None)),
        "19 07 DE 0C 1F 03 17 3B 3B FF 80 00 FF",
    ),
    # CET (UTC+1): deviation -60 = 0xFFC4, DST inactive status 0x00
    (
        Data(DT.DATE_TIME, CosemDateTime(CosemDate(2024, 1, 2, 2), CosemTime(13, 4, 5, 6), -60, 0)),
        "19 07 E8 01 02 02 0D 04 05 06 FF C4 00",
    ),
    # every year, last day of DST-end month, any weekday
    (Data(DT.DATE, CosemDate(None, 0xFD, 0xFE, None)), "1A FF FF FD FE FF"),
    (Data(DT.TIME, CosemTime(6, 30, None, None)), "1B 06 1E FF FF"),
    # compact-array of structure{long-unsigned, unsigned}: two 3-byte elements
    (
        Data(
            DT.COMPACT_ARRAY,
            CompactArray(
                TypeDescription(DT.STRUCTURE, fields=(TypeDescription(DT.LONG_UNSIGNED), TypeDescription(DT.UNSIGNED))),
                (
                    Data.structure([Data.long_unsigned(1), Data.unsigned(5)]),
                    Data.structure([Data.long_unsigned(2), Data.unsigned(6)]),
                ),
            ),
        ),
        "13 02 02 12 11 06 00 01 05 00 02 06",
    ),
    # compact-array of array[3] of unsigned; octet-string elements carry their own length
    (
        Data(
            DT.COMPACT_ARRAY,
            CompactArray(
                TypeDescription(DT.ARRAY, element=TypeDescription(DT.UNSIGNED), count=3),
                (Data.array([Data.unsigned(1), Data.unsigned(2), Data.unsigned(3)]),),
            ),
        ),
        "13 01 00 03 11 03 01 02 03",
    ),
    (
        Data(
            DT.COMPACT_ARRAY,
            CompactArray(TypeDescription(DT.OCTET_STRING), (Data.octet_string(b"ab"), Data.octet_string(b""))),
        ),
        "13 09 04 02 61 62 00",
    ),
]


@pytest.mark.parametrize("value,hexbytes", KNOWN, ids=[f"{v.type.name}-{i}" for i, (v, _) in enumerate(KNOWN)])
def test_known_encodings(value: Data, hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode(value) == raw
    assert decode_all(raw) == value
    assert decode(b"\xAA" + raw + b"\xBB", 1) == (value, 1 + len(raw))


@pytest.mark.parametrize(
    "n,hexbytes",
    [(0, "00"), (127, "7F"), (128, "81 80"), (255, "81 FF"), (256, "82 01 00"), (65535, "82 FF FF"),
     (65536, "83 01 00 00"), (2**24, "84 01 00 00 00"), (2**32 - 1, "84 FF FF FF FF")],
)
def test_length_forms(n: int, hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode_length(n) == raw
    assert decode_length(raw + b"\x00", 0) == (n, len(raw))


def test_length_accepts_non_minimal_long_form_and_rejects_bad_prefixes() -> None:
    assert decode_length(b"\x81\x05") == (5, 2)
    assert decode_length(b"\x82\x00\x05") == (5, 3)
    with pytest.raises(DecodeError):
        decode_length(b"\x80")  # BER indefinite form has no place in A-XDR
    with pytest.raises(DecodeError):
        decode_length(b"\x85\x00\x00\x00\x00\x01")
    with pytest.raises(TruncatedError):
        decode_length(b"\x82\x01")
    with pytest.raises(TruncatedError):
        decode_length(b"")
    for bad in (-1, 2**32, True, 1.0):
        with pytest.raises(EncodeError):
            encode_length(bad)


def test_long_octet_string_uses_long_length_form() -> None:
    raw = encode(Data.octet_string(bytes(300)))
    assert raw[:4] == bytes.fromhex("09 82 01 2C")
    assert decode_all(raw).value == bytes(300)


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_values)
def test_round_trip_every_type(value: Data) -> None:
    raw = encode(value)
    assert decode_all(raw) == value
    assert decode(raw + b"\x00\x01", 0) == (value, len(raw))


@settings(max_examples=200, deadline=None)
@given(compact_arrays())
def test_compact_array_round_trip(value: Data) -> None:
    raw = encode(value)
    assert decode_all(raw) == value
    td_bytes = axdr.encode_type_description(value.value.type_description)
    assert raw[1 : 1 + len(td_bytes)] == td_bytes
    assert axdr.decode_type_description(td_bytes) == (value.value.type_description, len(td_bytes))


@given(st.floats(width=32), st.floats())
def test_floats_round_trip_bit_exact_including_nan(f32: float, f64: float) -> None:
    for value in (Data(DT.FLOAT32, f32), Data(DT.FLOAT64, f64)):
        raw = encode(value)
        back = decode_all(raw).value
        assert raw == encode(Data(value.type, back))
        assert math.isnan(back) if math.isnan(value.value) else back == value.value


@given(date_times)
def test_date_time_bytes_round_trip(value: CosemDateTime) -> None:
    raw = encode_date_time(value)
    assert len(raw) == 12
    assert decode_date_time(raw) == value
    assert decode_date(raw[:5]) == value.date
    assert decode_time(raw[5:9]) == value.time
    assert encode_date(value.date) == raw[:5]
    assert encode_time(value.time) == raw[5:9]


def test_date_time_special_values_on_the_wire() -> None:
    unspecified = CosemDateTime()
    assert encode_date_time(unspecified) == bytes.fromhex("FFFF FF FF FF FF FF FF FF 8000 FF")
    assert decode_date_time(bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")) == unspecified
    dst = CosemDateTime(CosemDate(None, 0xFE, 0xFD, 7), CosemTime(2, 0, 0, 0), None, 0x80)
    assert encode_date_time(dst) == bytes.fromhex("FFFF FE FD 07 02 00 00 00 8000 80")
    assert decode_date_time(encode_date_time(dst)) == dst


@given(
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1),
        timezones=st.integers(-720, 720).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
    )
)
def test_deviation_sign_agrees_with_cosem_date_time_docstring(value: dt.datetime) -> None:
    """deviation = minutes local time is behind UTC: CET (+01:00) is -60 on the wire."""
    value = value.replace(microsecond=value.microsecond // 10000 * 10000)
    cdt = CosemDateTime.from_datetime(value)
    raw = encode_date_time(cdt)
    assert struct.unpack(">h", raw[9:11])[0] == -value.utcoffset().total_seconds() // 60
    back = decode_date_time(raw)
    assert back == cdt
    assert back.to_datetime() == value
    assert back.to_datetime().utcoffset() == value.utcoffset()


@pytest.mark.parametrize(
    "raw",
    [
        "07E8 00 01 01 00 00 00 00 0000 00",  # month 0
        "07E8 0D 01 01 00 00 00 00 0000 00",  # month 13
        "07E8 01 00 01 00 00 00 00 0000 00",  # day 0
        "07E8 01 20 01 00 00 00 00 0000 00",  # day 32
        "07E8 01 01 08 00 00 00 00 0000 00",  # weekday 8
        "07E8 01 01 01 18 00 00 00 0000 00",  # hour 24
        "07E8 01 01 01 00 3C 00 00 0000 00",  # minute 60
        "07E8 01 01 01 00 00 3C 00 0000 00",  # second 60
        "07E8 01 01 01 00 00 00 64 0000 00",  # hundredths 100
        "07E8 01 01 01 00 00 00 00 02D1 00",  # deviation +721
        "07E8 01 01 01 00 00 00 00 FD2F 00",  # deviation -721
        "07E8 01 01 01 00 00 00 00 0000",  # 11 bytes
    ],
)
def test_date_time_out_of_range_fields_are_decode_errors(raw: str) -> None:
    b = bytes.fromhex(raw)
    with pytest.raises(DecodeError):
        decode_date_time(b)
    if len(b) == 12:
        with pytest.raises(DecodeError):
            decode_all(b"\x19" + b)


# ---------------------------------------------------------------------------------------
# Encode errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", list(INTEGER_RANGES))
def test_integer_out_of_range_is_encode_error(t: DataType) -> None:
    lo, hi = INTEGER_RANGES[t]
    assert decode_all(encode(Data(t, lo))).value == lo
    assert decode_all(encode(Data(t, hi))).value == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(EncodeError):
            encode(Data(t, bad))
    for wrong in (True, 1.0, "1", None):
        with pytest.raises(EncodeError):
            encode(Data(t, wrong))


@pytest.mark.parametrize(
    "value",
    [
        Data(DT.OCTET_STRING, "text"),
        Data(DT.VISIBLE_STRING, b"bytes"),
        Data(DT.VISIBLE_STRING, "€"),
        Data(DT.UTF8_STRING, "\ud800"),
        Data(DT.BOOLEAN, 1),
        Data(DT.BIT_STRING, "0102"),
        Data(DT.BIT_STRING, 5),
        Data(DT.FLOAT32, 1e39),
        Data(DT.FLOAT32, True),
        Data(DT.FLOAT64, "1.0"),
        Data(DT.NULL_DATA, 0),
        Data(DT.ARRAY, Data.unsigned(1)),
        Data(DT.STRUCTURE, (1, 2)),
        Data(DT.DATE_TIME, dt.datetime(2024, 1, 1)),
        Data(DT.DATE_TIME, CosemDateTime(CosemDate(2024, 13, 1, None))),
        Data(DT.DATE_TIME, CosemDateTime(deviation=721)),
        Data(DT.DATE_TIME, CosemDateTime(clock_status=0xFF)),
        Data(DT.DATE, CosemDate(0xFFFF, 1, 1, 1)),
        Data(DT.TIME, CosemTime(24, 0, 0, 0)),
        Data(DT.COMPACT_ARRAY, (1, 2)),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.UNSIGNED), (Data.long_unsigned(1),))),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.NULL_DATA), (Data.null(),))),
        Data(
            DT.COMPACT_ARRAY,
            CompactArray(TypeDescription(DT.ARRAY, element=TypeDescription(DT.UNSIGNED), count=2), (Data.array([Data.unsigned(1)]),)),
        ),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.COMPACT_ARRAY), ())),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.NULL_DATA), ())),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.STRUCTURE, fields=()), ())),
        Data(DT.COMPACT_ARRAY, CompactArray(TypeDescription(DT.ARRAY, element=TypeDescription(DT.UNSIGNED), count=0), ())),
        Data(
            DT.COMPACT_ARRAY,
            CompactArray(TypeDescription(DT.STRUCTURE, fields=(TypeDescription(DT.UNSIGNED), TypeDescription(DT.DONT_CARE))), ()),
        ),
        Data(7, 1),
    ],
    ids=lambda v: f"{getattr(v.type, 'name', v.type)}",
)
def test_bad_values_are_encode_errors(value: Data) -> None:
    with pytest.raises(EncodeError):
        encode(value)


def test_not_data_is_encode_error() -> None:
    with pytest.raises(EncodeError):
        encode(5)  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode(Data.array([5]))


def test_nesting_limit_applies_to_encoder_and_decoder() -> None:
    ok = Data.unsigned(1)
    for _ in range(axdr.MAX_DEPTH):
        ok = Data.array([ok])
    assert decode_all(encode(ok)) == ok
    too_deep = Data.array([ok])
    with pytest.raises(EncodeError):
        encode(too_deep)
    raw = b"\x01\x01" * (axdr.MAX_DEPTH + 1) + b"\x11\x01"
    with pytest.raises(DecodeError):
        decode_all(raw)


# ---------------------------------------------------------------------------------------
# Decode errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,kind",
    [
        ("", TruncatedError),
        ("07", DecodeError),  # no such tag
        ("1C", DecodeError),
        ("06 00 00 00", TruncatedError),
        ("09 05 00 00", TruncatedError),
        ("01 84 FF FF FF FF", TruncatedError),  # 4 billion elements in 6 bytes: refused at once
        ("02 03 11 01", TruncatedError),
        ("04 84 FF FF FF FF 00", TruncatedError),
        ("0C 02 C3 28", DecodeError),  # invalid UTF-8
        ("09 80", DecodeError),
        ("13 01 FF FF 00 00", DecodeError),  # array of 65535 null-data: zero-size elements
        ("13 11 03 00 01", TruncatedError),  # contents end inside an element? no: 3 bytes, 1 given
        ("13 12 03 00 01 02", TruncatedError),  # second long-unsigned cut short
        ("13 13 00", DecodeError),  # compact-array inside a type description
        ("13 02 84 FF FF FF FF", TruncatedError),
        ("13 00 01 00", DecodeError),  # null-data element type
        ("13 FF 00", DecodeError),  # dont-care element type
        ("13 02 00 00", DecodeError),  # empty structure
        ("13 01 00 00 11 00", DecodeError),  # array of 0
        # structure{unsigned, 100 x null-data}: would be 101 values per content byte
        ("13 02 65 11" + " 00" * 100 + " 04 01 02 03 04", DecodeError),
    ],
)
def test_malformed_input_raises_typed_errors(raw: str, kind: type) -> None:
    with pytest.raises(kind):
        decode_all(bytes.fromhex(raw))


def test_decode_all_rejects_trailing_bytes_and_decode_reports_offset() -> None:
    with pytest.raises(DecodeError) as info:
        decode_all(b"\x11\x01\x00")
    assert info.value.offset == 2
    assert decode(memoryview(b"\x11\x01\x00")) == (Data.unsigned(1), 2)
    with pytest.raises(DecodeError):
        decode(b"\x11\x01", 5)


def test_boolean_accepts_any_non_zero_byte() -> None:
    assert decode_all(b"\x03\x7F") == Data.boolean(True)


# ---------------------------------------------------------------------------------------
# Data as a value; what the generic decoder costs, counted; equality with the reference
# ---------------------------------------------------------------------------------------


def test_data_compares_and_hashes_by_type_and_value_only() -> None:
    plain = Data(DT.ARRAY, (Data.unsigned(1),))
    bulk = Data(DT.ARRAY, (Data.unsigned(1),), encoded=b"\x01\x01\x11\x01")
    assert plain == bulk and not plain != bulk and hash(plain) == hash(bulk)
    assert {Data(DT.UNSIGNED, 1): "x"}[Data.unsigned(1)] == "x"
    assert Data.unsigned(1) != Data.enum(1) and Data.unsigned(1) != Data.unsigned(2)
    # Built on a tuple for speed, but never equal to one, in either order.
    assert Data.unsigned(1) != (DT.UNSIGNED, 1, None) and (DT.UNSIGNED, 1, None) != Data.unsigned(1)
    assert not Data.unsigned(1) == (DT.UNSIGNED, 1, None)
    with pytest.raises(TypeError):
        assert Data.unsigned(1) < Data.unsigned(2)
    with pytest.raises(AttributeError):
        plain.value = ()  # type: ignore[misc]
    assert repr(Data.unsigned(7)) == "Data(type=<DataType.UNSIGNED: 17>, value=7)"
    assert (bulk.type, bulk.value, bulk.encoded) == (DT.ARRAY, (Data.unsigned(1),), b"\x01\x01\x11\x01")


def test_to_python_gives_nested_lists_of_the_values() -> None:
    td = TypeDescription(DT.STRUCTURE, fields=(TypeDescription(DT.UNSIGNED), TypeDescription(DT.BOOLEAN)))
    compact = CompactArray(td, (Data.structure([Data.unsigned(1), Data.boolean(True)]),))
    value = Data.structure([
        Data.null(), Data.octet_string(b"\x01"), Data.array([Data.long(-2), Data.array([])]),
        Data(DT.COMPACT_ARRAY, compact),
    ])
    assert value.to_python() == [None, b"\x01", [-2, []], [[1, True]]]
    assert Data.unsigned(3).to_python() == 3


def test_rows_of_gives_each_structures_values_and_refuses_other_shapes() -> None:
    rows = [(b"\x00" * 12, 1, 2), (b"\x01" * 12, 3, 4)]
    types = [DT.OCTET_STRING, DT.UNSIGNED, DT.DOUBLE_LONG]
    assert axdr.rows_of(rows_to_data(rows, types)) == rows
    with pytest.raises(DecodeError):
        axdr.rows_of(Data.structure([Data.unsigned(1)]))
    with pytest.raises(DecodeError):
        axdr.rows_of(Data.array([Data.structure([Data.unsigned(1)]), Data.unsigned(2)]))


def test_a_data_is_not_the_elements_of_an_array() -> None:
    with pytest.raises(EncodeError):
        encode(Data(DT.ARRAY, Data.unsigned(5)))


def _python_calls(fn, *args) -> int:
    """Python-level function calls (C functions not counted) made while fn(*args) runs."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls


def _quarter_hour_rows(count: int) -> tuple[list[DataType], list[tuple]]:
    types = [DT.OCTET_STRING, DT.UNSIGNED] + [DT.DOUBLE_LONG_UNSIGNED] * 4
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    rows = [(encode_date_time(CosemDateTime.from_datetime(start + dt.timedelta(minutes=15 * i))),
             i % 3, i * 250, 0, i * 3, i * 7) for i in range(count)]
    return types, rows


def test_generic_decoder_cost_does_not_grow_with_the_rows_of_a_uniform_array() -> None:
    """A profile buffer is an array of structures of one byte layout: after the first row
    the decoder's Python-level work is per block of rows, not per value. (Counted, not timed.)"""
    types, rows = _quarter_hour_rows(3000)
    raw = encode_rows(rows, types)
    calls = _python_calls(decode_all, raw)
    value = decode_all(raw)
    assert [tuple(field.value for field in row.value) for row in value.value] == rows
    values = 3000 * (1 + len(types))
    assert calls < values / 100, f"{calls} Python calls for {values} values"


def test_generic_decoder_makes_no_python_call_per_common_leaf() -> None:
    """Nested structures of varied shape (like an object list): the integer, enum, boolean,
    octet-string and null-data leaves are decoded inline, so the Python calls are one per
    array or structure plus a constant, never one or more per value."""
    objects = []
    containers = 1  # the outer array
    for i in range(40):
        attributes = tuple(
            Data.structure([Data.integer(a), Data.enum(a % 4), Data.null() if a % 2 else Data.array([Data.integer(-1)])])
            for a in range(1, 2 + i % 9)
        )
        methods = tuple(Data.structure([Data.integer(m), Data.boolean(m % 2 == 0)]) for m in range(1, 1 + i % 3))
        objects.append(Data.structure([
            Data.long_unsigned(1 + i % 70), Data.unsigned(i % 3), Data.octet_string(bytes([0, 0, i, 0, 0, 255])),
            Data.structure([Data.array(attributes), Data.array(methods)]),
        ]))
        containers += 1 + 1 + 2 + len(attributes) + sum(1 for a in range(1, 2 + i % 9) if not a % 2) + len(methods)
    raw = encode(Data.array(objects))
    assert decode_all(raw) == Data.array(objects)
    assert _python_calls(decode_all, raw) <= containers + 20


def test_large_decode_runs_no_garbage_collection_and_restores_the_collector() -> None:
    """A decoded tree has no reference cycles, so collections while building it find nothing;
    the decoder pauses the collector for large inputs and leaves its state as it found it."""
    types, rows = _quarter_hour_rows(2000)  # ~76 kB, 14,000 values: ~20 collections of the youngest generation if not paused
    raw = encode_rows(rows, types)
    started: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(on_gc)
    try:
        value = decode_all(raw)
        assert gc.isenabled()
        assert started == []
        with pytest.raises(TruncatedError):
            decode_all(raw[:-1])
        assert gc.isenabled()
        gc.disable()
        try:
            decode_all(raw)
            assert not gc.isenabled()  # a collector someone else paused stays paused
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(on_gc)
    assert len(value.value) == 2000


@pytest.mark.parametrize("element", ["02 00", "02 81 00", "02 82 00 00", "09 00", "09 81 00", "02 01 09 81 00"])
def test_long_arrays_of_empty_or_long_form_elements_keep_every_element(element: str) -> None:
    """Zero-length contents and non-minimal length forms in an array long enough for the
    bulk path: every element must come out, as the reference decoder gives them."""
    one = bytes.fromhex(element)
    for count in (16, 40, 300):
        raw = b"\x01" + encode_length(count) + one * count
        value, end = decode(raw)
        assert end == len(raw) and len(value.value) == count
        assert value == reference_decode(raw)[0]


@st.composite
def uniform_arrays(draw):
    """An array of 16..120 elements of one byte layout (a leaf or a flat structure of leaves),
    some elements replaced by values of another shape, the whole maybe nested."""
    octet_len = draw(st.sampled_from([0, 5, 12, 130]))
    if draw(st.booleans()):
        t = draw(st.sampled_from(FAST_COLUMN_TYPES))
        leaf = _column_value(t, octet_len).map(lambda v: Data(t, v))
        elements = draw(st.lists(leaf, min_size=16, max_size=120))
    else:
        types = draw(st.lists(st.sampled_from(FAST_COLUMN_TYPES), min_size=1, max_size=6))
        rows = draw(st.lists(st.tuples(*[_column_value(t, octet_len) for t in types]), min_size=16, max_size=120))
        elements = list(rows_to_data(rows, types).value)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(elements) - 1))
        elements[at] = draw(st.one_of(simple_leaves, st.lists(simple_leaves, max_size=3).map(Data.structure)))
    value = Data.array(elements)
    if draw(st.booleans()):
        value = Data.structure([Data.unsigned(0), value, Data.array([value])])
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(uniform_arrays(), st.binary(max_size=3))
def test_generic_decoder_equals_the_reference_on_uniform_arrays(value: Data, suffix: bytes) -> None:
    raw = encode(value)
    decoded, end = decode(raw + suffix)
    assert decoded == value and end == len(raw)
    assert repr(decoded) == repr(reference_decode(raw + suffix)[0])


@settings(max_examples=300, deadline=None)
@given(uniform_arrays(), st.data())
def test_generic_decoder_equals_the_reference_on_corrupted_uniform_arrays(value: Data, data) -> None:
    raw = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw)
    try:
        expected = reference_decode(raw)
    except DecodeError as error:
        with pytest.raises(type(error)):
            decode(raw)
        return
    decoded, end = decode(raw)
    assert repr(decoded) == repr(expected[0]) and end == expected[1]


# ---------------------------------------------------------------------------------------
# Profile buffer fast path
# ---------------------------------------------------------------------------------------

FAST_COLUMN_TYPES = [
    DT.OCTET_STRING, DT.BOOLEAN, DT.INTEGER, DT.LONG, DT.DOUBLE_LONG, DT.LONG64, DT.UNSIGNED,
    DT.LONG_UNSIGNED, DT.DOUBLE_LONG_UNSIGNED, DT.LONG64_UNSIGNED, DT.ENUM, DT.BCD, DT.FLOAT32, DT.FLOAT64,
]
SLOW_COLUMN_TYPES = [DT.VISIBLE_STRING, DT.DATE_TIME, DT.NULL_DATA, DT.BIT_STRING]


def _column_value(t: DataType, octet_len: int):
    if t == DT.OCTET_STRING:
        return st.one_of(st.binary(min_size=octet_len, max_size=octet_len), st.binary(max_size=3))
    return _LEAF_BY_TYPE[t].map(lambda d: d.value)


@st.composite
def profile_buffers(draw):
    """(row types, rows, raw bytes): mostly one layout, some rows of another shape."""
    types = draw(st.lists(st.sampled_from(FAST_COLUMN_TYPES + SLOW_COLUMN_TYPES * (draw(st.booleans()))), min_size=0, max_size=6))
    octet_len = draw(st.sampled_from([0, 5, 12, 130]))
    row = st.tuples(*[_column_value(t, octet_len) for t in types])
    rows = draw(st.lists(row, max_size=300 if draw(st.booleans()) else 8))
    data_rows = list(rows_to_data(rows, types).value)
    # Odd rows: another shape entirely (generic fallback must kick in, then resync).
    for _ in range(draw(st.integers(0, 3))):
        if not data_rows:
            break
        at = draw(st.integers(0, len(data_rows) - 1))
        data_rows[at] = Data.structure(draw(st.lists(simple_leaves, max_size=3)))
    return types, rows, encode(Data.array(data_rows))


def _generic_rows(raw: bytes, offset: int = 0) -> tuple[list[tuple], int]:
    """What decode_rows must return, built with the plain reference decoder."""
    value, end = reference_decode(raw, offset)
    if value.type != DT.ARRAY or any(row.type != DT.STRUCTURE for row in value.value):
        raise DecodeError("not an array of structures")
    return [tuple(item.value for item in row.value) for row in value.value], end


def _same_values(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (floats come from random bytes here)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or a == b
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(profile_buffers(), st.binary(max_size=3), st.binary(max_size=3))
def test_decode_rows_equals_generic_decoder(buffer, prefix: bytes, suffix: bytes) -> None:
    _, _, raw = buffer
    framed = prefix + raw + suffix
    fast = decode_rows(framed, len(prefix))
    assert _same_values(fast[0], _generic_rows(framed, len(prefix))[0])
    assert fast[1] == len(prefix) + len(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FAST_COLUMN_TYPES), min_size=1, max_size=6), st.data())
def test_decode_rows_equals_generic_on_corrupted_buffers(types, data) -> None:
    """Arbitrary byte values in an otherwise well-formed layout: same values or same error."""
    rows = data.draw(st.lists(st.tuples(*[_column_value(t, 12) for t in types]), min_size=1, max_size=40))
    raw = bytearray(encode_rows(rows, types))
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    raw = bytes(raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw)
    try:
        expected = _generic_rows(raw)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_rows(raw)
        return
    fast = decode_rows(raw)
    assert _same_values(fast[0], expected[0]) and fast[1] == expected[1]


def test_decode_rows_on_a_year_of_quarter_hours_matches_generic() -> None:
    types = [DT.OCTET_STRING, DT.UNSIGNED] + [DT.DOUBLE_LONG_UNSIGNED] * 4
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    rows = []
    for i in range(35_040):
        stamp = encode_date_time(CosemDateTime.from_datetime(start + dt.timedelta(minutes=15 * i)))
        rows.append((stamp, 8 if i % 97 == 0 else 0, i * 250, 0, i * 3, i * 7 % 2**32))
    raw = encode_rows(rows, types)
    assert len(raw) == 4 + 35_040 * 38  # 01 82 88 E0, then 38-byte rows
    fast, end = decode_rows(raw)
    assert end == len(raw)
    assert fast == rows
    assert fast == _generic_rows(raw)[0]


@pytest.mark.parametrize(
    "raw",
    ["", "11 01", "01 01 11 01", "01 02 02 01 11 01 11 01", "01 03 02 01 11 01 02 01 11 01", "01 84 00 01 00 00 02"],
)
def test_decode_rows_rejects_non_profile_buffers(raw: str) -> None:
    with pytest.raises(DecodeError):
        decode_rows(bytes.fromhex(raw))


def test_decode_rows_empty_array() -> None:
    assert decode_rows(b"\x01\x00") == ([], 2)


@settings(max_examples=200, deadline=None)
@given(profile_buffers())
def test_encode_rows_equals_generic_encoder(buffer) -> None:
    types, rows, _ = buffer
    assert encode_rows(rows, types) == encode(rows_to_data(rows, types))


@pytest.mark.parametrize(
    "row",
    [(b"x" * 12, 256, 0), (b"x" * 12, -1, 0), (b"x" * 12, 1, 2**32), (b"x" * 12, True, 0), ("text", 1, 0),
     (b"x" * 12, 1.0, 0), (b"x" * 12, 1)],
)
def test_encode_rows_raises_the_generic_encoders_errors(row) -> None:
    types = [DT.OCTET_STRING, DT.UNSIGNED, DT.DOUBLE_LONG_UNSIGNED]
    rows = [(b"y" * 12, 1, 2)] * 3 + [row]
    with pytest.raises(EncodeError):
        encode_rows(rows, types)


# ---------------------------------------------------------------------------------------
# Independent peers: gurux-dlms and dlms-cosem decode what we encode to the same values
# ---------------------------------------------------------------------------------------

from dlms_cosem.dlms_data import DlmsDataParser  # noqa: E402
from gurux_dlms import GXByteBuffer, GXDLMSClient  # noqa: E402
from gurux_dlms.GXBitString import GXBitString  # noqa: E402


def _from_gurux(value):
    """gurux's Python value → ours (gurux wraps ints/floats in subclasses; bytearray for bytes)."""
    if isinstance(value, list):
        return tuple(_from_gurux(v) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, GXBitString):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _plain(value: Data):
    if value.type in (DT.ARRAY, DT.STRUCTURE):
        return tuple(_plain(v) for v in value.value)
    if value.type == DT.COMPACT_ARRAY:
        return tuple(_plain(v) for v in value.value.contents)
    return value.value


# gurux renders utf8-string as hex and bit-string/date types as its own objects: checked apart.
_GURUX_COMPARABLE = st.one_of(
    st.just(Data(DT.NULL_DATA)),
    st.booleans().map(Data.boolean),
    *[_int_data(t) for t in INTEGER_RANGES if t != DT.BCD],
    st.binary(max_size=300).map(Data.octet_string),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(Data.visible_string),
    st.floats(width=32, allow_nan=False).map(lambda v: Data(DT.FLOAT32, v)),
    st.floats(allow_nan=False).map(lambda v: Data(DT.FLOAT64, v)),
)
gurux_values = st.recursive(
    _GURUX_COMPARABLE,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(Data.array),
        st.lists(children, max_size=4).map(Data.structure),
    ),
    max_leaves=20,
)


def _gurux_decode(raw: bytes):
    buffer = GXByteBuffer(raw)
    value = GXDLMSClient.getValue(buffer, False)
    assert buffer.position == len(raw)
    return value


@settings(max_examples=300, deadline=None)
@given(gurux_values)
def test_gurux_decodes_our_encoding_to_the_same_values(value: Data) -> None:
    raw = encode(value)
    assert _from_gurux(_gurux_decode(raw)) == _plain(decode_all(raw))


@given(st.integers(-128, 127))
def test_gurux_bcd_reads_the_same_byte(value: int) -> None:
    """data.py keeps bcd as a signed 8-bit int; gurux returns the raw byte."""
    raw = encode(Data(DT.BCD, value))
    assert int(_gurux_decode(raw)) == value % 256
    assert decode_all(raw).value == value


@given(st.text("01", max_size=64))
def test_gurux_bit_string_agrees(bits: str) -> None:
    g = _gurux_decode(encode(Data(DT.BIT_STRING, bits)))
    assert g.pad_bits == (-len(bits)) % 8
    assert bytes(g.value) == encode(Data(DT.BIT_STRING, bits))[len(encode_length(len(bits))) + 1 :]


@given(
    st.builds(
        CosemDateTime,
        st.builds(CosemDate, st.integers(1970, 2200), st.integers(1, 12), st.integers(1, 28), _opt(st.integers(1, 7))),
        st.builds(CosemTime, st.integers(0, 23), st.integers(0, 59), _opt(st.integers(0, 59)), _opt(st.integers(0, 99))),
        st.integers(-720, 720),
        _opt(st.integers(0, 0xFE)),
    )
)
def test_peers_agree_on_date_time_including_deviation_sign(value: CosemDateTime) -> None:
    from dlms_cosem.time import datetime_from_bytes

    g = _gurux_decode(encode(Data(DT.DATE_TIME, value)))
    expected = value.to_datetime()
    assert g.value.replace(tzinfo=None) == expected.replace(tzinfo=None)
    assert g.value.utcoffset() == expected.utcoffset()
    theirs, _ = datetime_from_bytes(encode_date_time(value))
    if value.deviation == 0:  # dlms-cosem returns a naive datetime for deviation 0
        expected = expected.replace(tzinfo=None)
    assert theirs == expected and theirs.utcoffset() == expected.utcoffset()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)), max_size=20))
def test_gurux_decodes_our_compact_array(rows) -> None:
    td = TypeDescription(DT.STRUCTURE, fields=(TypeDescription(DT.LONG_UNSIGNED), TypeDescription(DT.UNSIGNED), TypeDescription(DT.DOUBLE_LONG)))
    value = Data(
        DT.COMPACT_ARRAY,
        CompactArray(td, tuple(Data.structure([Data.long_unsigned(a), Data.unsigned(b), Data.double_long(c)]) for a, b, c in rows)),
    )
    raw = encode(value)
    assert _from_gurux(_gurux_decode(raw)) == tuple(rows)
    assert _plain(decode_all(raw)) == tuple(rows)


# dlms-cosem lacks float/bit-string/bcd decoding and reads visible-string as ASCII.
_DLMS_COSEM_COMPARABLE = st.one_of(
    st.just(Data(DT.NULL_DATA)),
    st.booleans().map(Data.boolean),
    *[_int_data(t) for t in INTEGER_RANGES if t != DT.BCD],
    st.binary(max_size=300).map(Data.octet_string),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(Data.visible_string),
)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        _DLMS_COSEM_COMPARABLE,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(Data.array), st.lists(children, max_size=4).map(Data.structure)
        ),
        max_leaves=20,
    )
)
def test_dlms_cosem_decodes_our_encoding_to_the_same_values(value: Data) -> None:
    raw = encode(value)
    parsed = DlmsDataParser().parse(raw)
    assert len(parsed) == 1

    def plain(v):
        return tuple(plain(x) for x in v) if isinstance(v, list) else (bytes(v) if isinstance(v, bytearray) else v)

    assert plain(parsed[0].to_python()) == _plain(decode_all(raw))


@settings(max_examples=200, deadline=None)
@given(_GURUX_COMPARABLE)
def test_we_decode_what_gurux_encodes(value: Data) -> None:
    """gurux as an independent *encoder*: its bytes for our value decode back to our value."""
    from gurux_dlms.enums import DataType as GxType
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.GXDLMSSettings import GXDLMSSettings

    buffer = GXByteBuffer()
    python_value = bytearray(value.value) if value.type == DT.OCTET_STRING else value.value
    _GXCommon.setData(GXDLMSSettings(False, None), buffer, GxType(int(value.type)), python_value)
    raw = bytes(buffer.array())
    assert decode_all(raw) == value
