"""A-XDR encoding of COSEM data (IEC 62056-6-2 / Blue Book §4.1.5, Green Book §9.5).

Every value is a tag byte (its `DataType`) followed by its contents:

* fixed-size types (integers, enum, bcd, boolean, floats, date-time, date, time) carry
  their big-endian bytes directly;
* octet-string, visible-string, utf8-string carry a length, then the bytes;
* bit-string carries its length in *bits*, then ceil(bits / 8) bytes, first bit = MSB;
* array and structure carry an element count, then each element (with its own tag);
* compact-array carries a type description (tag, plus long-unsigned count + element for
  arrays, A-XDR field count + fields for structures), then an octet-string of untagged
  contents. Descriptions with zero-size parts (null-data, dont-care, empty structure or
  array) are refused both ways: their elements could not be counted back out of the
  contents, and they would let a few bytes describe billions of values.

Lengths and counts use the A-XDR/BER form: < 0x80 in one byte, else 0x81..0x84
followed by 1..4 big-endian bytes.

The decoder is total: any byte string yields a value or a `DecodeError` (a
`TruncatedError` when more bytes could complete it). Declared counts are checked against
the bytes that remain before anything is allocated, and nesting is limited to
`MAX_DEPTH`.

`decode_rows` / `encode_rows` are a fast path for profile buffers (IC 7 attribute 2):
an array of structures that all share one byte layout is checked with numpy and
unpacked with one `struct.Struct`, giving the same values as the generic decoder. The
generic decoder does the same for any long array whose elements repeat one byte layout
(`_decode_array`) and builds those elements' `Data` in C loops; everything else it decodes
value by value in one loop per array or structure (`_decode_items`).
"""
from __future__ import annotations

import gc
import struct
from collections.abc import Sequence
from itertools import chain, repeat, starmap
from operator import attrgetter
from typing import Any, NoReturn

import numpy as np

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

__all__ = [
    "MAX_DEPTH",
    "encode_length",
    "decode_length",
    "encode",
    "decode",
    "decode_all",
    "encode_date_time",
    "decode_date_time",
    "encode_date",
    "decode_date",
    "encode_time",
    "decode_time",
    "encode_type_description",
    "decode_type_description",
    "decode_rows",
    "rows_of",
    "encode_rows",
    "rows_to_data",
]

# Deeper nesting than this is rejected, so hostile input cannot exhaust the stack.
MAX_DEPTH = 32

_VALID_TAGS = frozenset(int(t) for t in DataType)
_DATA_TYPES = {int(t): t for t in DataType}

# Fixed-size integer-like types: struct format (big-endian).
_INT_FORMATS: dict[DataType, str] = {
    DataType.INTEGER: "b",
    DataType.LONG: "h",
    DataType.DOUBLE_LONG: "i",
    DataType.LONG64: "q",
    DataType.UNSIGNED: "B",
    DataType.LONG_UNSIGNED: "H",
    DataType.DOUBLE_LONG_UNSIGNED: "I",
    DataType.LONG64_UNSIGNED: "Q",
    DataType.ENUM: "B",
    DataType.BCD: "b",  # data.py fixes bcd as a signed 8-bit int (INTEGER_RANGES)
}
_FLOAT_FORMATS: dict[DataType, str] = {DataType.FLOAT32: "f", DataType.FLOAT64: "d"}

_INT_STRUCTS = {int(t): struct.Struct(">" + f) for t, f in _INT_FORMATS.items()}
_FLOAT_STRUCTS = {int(t): struct.Struct(">" + f) for t, f in _FLOAT_FORMATS.items()}
_U16 = struct.Struct(">H")
_DATE_TIME_STRUCT = struct.Struct(">HBBBBBBBhB")
_DATE_STRUCT = struct.Struct(">HBBB")
_TIME_STRUCT = struct.Struct(">BBBB")

_STRING_TYPES = frozenset({int(DataType.OCTET_STRING), int(DataType.VISIBLE_STRING), int(DataType.UTF8_STRING)})
_ZERO_SIZE_TYPES = frozenset({int(DataType.NULL_DATA), int(DataType.DONT_CARE)})


# ---------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    """A-XDR length/count: one byte below 0x80, else 0x81..0x84 and the shortest big-endian form."""
    if type(n) is not int or n < 0:
        raise EncodeError(f"length must be a non-negative int, got {n!r}")
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return bytes((0x82, n >> 8, n & 0xFF))
    if n <= 0xFFFFFF:
        return bytes((0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF))
    if n <= 0xFFFFFFFF:
        return b"\x84" + n.to_bytes(4, "big")
    raise EncodeError(f"length {n} does not fit the 4-byte A-XDR length form")


def decode_length(buf: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None) -> tuple[int, int]:
    """(length, offset after it). Non-minimal long forms (e.g. 0x81 0x05) are accepted.

    `end` (default: the end of buf) bounds the bytes the length may use, e.g. the contents
    of a compact-array.
    """
    if end is None:
        end = len(buf)
    if offset >= end:
        raise TruncatedError("length", offset, "no bytes left")
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise DecodeError("length", offset, f"length prefix 0x{first:02X} is not 0x00..0x7F or 0x81..0x84")
    if offset + 1 + size > end:
        raise TruncatedError("length", offset, f"needs {size} more bytes")
    return int.from_bytes(buf[offset + 1 : offset + 1 + size], "big"), offset + 1 + size


# ---------------------------------------------------------------------------------------
# date-time, date, time (untagged bytes, also used inside octet-string(12) clock values)
# ---------------------------------------------------------------------------------------


def _opt_byte(value: int | None, field: str, valid) -> int:
    if value is None:
        return 0xFF
    if type(value) is not int or not valid(value):
        raise EncodeError(f"{field} {value!r} is out of range")
    return value


def _date_fields(d: CosemDate) -> tuple[int, int, int, int]:
    if not isinstance(d, CosemDate):
        raise EncodeError(f"expected CosemDate, got {type(d).__name__}")
    if d.year is None:
        year = 0xFFFF
    elif type(d.year) is int and 0 <= d.year <= 0xFFFE:
        year = d.year
    else:
        raise EncodeError(f"year {d.year!r} is out of range 0..65534")
    month = _opt_byte(d.month, "month", _month_ok)
    day = _opt_byte(d.day, "day", _day_ok)
    weekday = _opt_byte(d.weekday, "weekday", _weekday_ok)
    return year, month, day, weekday


def _time_fields(t: CosemTime) -> tuple[int, int, int, int]:
    if not isinstance(t, CosemTime):
        raise EncodeError(f"expected CosemTime, got {type(t).__name__}")
    return (
        _opt_byte(t.hour, "hour", _hour_ok),
        _opt_byte(t.minute, "minute", _minute_ok),
        _opt_byte(t.second, "second", _minute_ok),
        _opt_byte(t.hundredths, "hundredths", _hundredths_ok),
    )


def _month_ok(v: int) -> bool:
    return 1 <= v <= 12 or v in (0xFD, 0xFE)


def _day_ok(v: int) -> bool:
    return 1 <= v <= 31 or v in (0xFD, 0xFE)


def _weekday_ok(v: int) -> bool:
    return 1 <= v <= 7


def _hour_ok(v: int) -> bool:
    return 0 <= v <= 23


def _minute_ok(v: int) -> bool:
    return 0 <= v <= 59


def _hundredths_ok(v: int) -> bool:
    return 0 <= v <= 99


def _status_ok(v: int) -> bool:
    return 0 <= v <= 0xFE


def encode_date_time(dt: CosemDateTime) -> bytes:
    """The 12 bytes of a date-time (no tag). None fields become the not-specified values."""
    if not isinstance(dt, CosemDateTime):
        raise EncodeError(f"expected CosemDateTime, got {type(dt).__name__}")
    year, month, day, weekday = _date_fields(dt.date)
    hour, minute, second, hundredths = _time_fields(dt.time)
    if dt.deviation is None:
        deviation = -0x8000
    elif type(dt.deviation) is int and -720 <= dt.deviation <= 720:
        deviation = dt.deviation
    else:
        raise EncodeError(f"deviation {dt.deviation!r} is out of range -720..720 minutes")
    status = _opt_byte(dt.clock_status, "clock_status", _status_ok)
    return _DATE_TIME_STRUCT.pack(year, month, day, weekday, hour, minute, second, hundredths, deviation, status)


def _check_byte(value: int, field: str, valid, offset: int | None) -> int | None:
    if value == 0xFF:
        return None
    if not valid(value):
        raise DecodeError(field, offset, f"0x{value:02X} is out of range")
    return value


def _make_date(year: int, month: int, day: int, weekday: int, offset: int | None) -> CosemDate:
    return CosemDate(
        None if year == 0xFFFF else year,
        _check_byte(month, "date month", _month_ok, offset),
        _check_byte(day, "date day", _day_ok, offset),
        _check_byte(weekday, "date weekday", _weekday_ok, offset),
    )


def _make_time(hour: int, minute: int, second: int, hundredths: int, offset: int | None) -> CosemTime:
    return CosemTime(
        _check_byte(hour, "time hour", _hour_ok, offset),
        _check_byte(minute, "time minute", _minute_ok, offset),
        _check_byte(second, "time second", _minute_ok, offset),
        _check_byte(hundredths, "time hundredths", _hundredths_ok, offset),
    )


def _date_time_from(buf: bytes, pos: int) -> CosemDateTime:
    year, month, day, weekday, hour, minute, second, hundredths, deviation, status = _DATE_TIME_STRUCT.unpack_from(
        buf, pos
    )
    if deviation == -0x8000:
        dev = None
    elif -720 <= deviation <= 720:
        dev = deviation
    else:
        raise DecodeError("date-time deviation", pos + 9, f"{deviation} is out of range -720..720")
    return CosemDateTime(
        _make_date(year, month, day, weekday, pos),
        _make_time(hour, minute, second, hundredths, pos + 5),
        dev,
        None if status == 0xFF else status,
    )


def decode_date_time(b: bytes | bytearray | memoryview) -> CosemDateTime:
    """A CosemDateTime from exactly 12 bytes (e.g. the clock's octet-string(12))."""
    b = bytes(b)
    if len(b) != 12:
        raise DecodeError("date-time", 0, f"needs exactly 12 bytes, got {len(b)}")
    return _date_time_from(b, 0)


def encode_date(d: CosemDate) -> bytes:
    """The 5 bytes of a date (no tag)."""
    return _DATE_STRUCT.pack(*_date_fields(d))


def decode_date(b: bytes | bytearray | memoryview) -> CosemDate:
    """A CosemDate from exactly 5 bytes."""
    b = bytes(b)
    if len(b) != 5:
        raise DecodeError("date", 0, f"needs exactly 5 bytes, got {len(b)}")
    return _make_date(*_DATE_STRUCT.unpack(b), 0)


def encode_time(t: CosemTime) -> bytes:
    """The 4 bytes of a time (no tag)."""
    return _TIME_STRUCT.pack(*_time_fields(t))


def decode_time(b: bytes | bytearray | memoryview) -> CosemTime:
    """A CosemTime from exactly 4 bytes."""
    b = bytes(b)
    if len(b) != 4:
        raise DecodeError("time", 0, f"needs exactly 4 bytes, got {len(b)}")
    return _make_time(*_TIME_STRUCT.unpack(b), 0)


# ---------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    # bool is an int subclass, but a bool where an integer is expected is a caller bug.
    return isinstance(v, int) and not isinstance(v, bool)


def _encode_untagged(t: int, v: Any, out: bytearray, depth: int) -> None:
    """Append the contents of a value of type t (without its tag)."""
    fmt = _INT_STRUCTS.get(t)
    if fmt is not None:
        if not _is_int(v):
            raise EncodeError(f"{DataType(t).name} needs an int, got {type(v).__name__}")
        lo, hi = INTEGER_RANGES[DataType(t)]
        if not lo <= v <= hi:
            raise EncodeError(f"{DataType(t).name} value {v} is out of range {lo}..{hi}")
        out += fmt.pack(v)
    elif t == DataType.OCTET_STRING:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise EncodeError(f"octet-string needs bytes, got {type(v).__name__}")
        v = bytes(v)
        out += encode_length(len(v))
        out += v
    elif t == DataType.VISIBLE_STRING:
        if not isinstance(v, str):
            raise EncodeError(f"visible-string needs str, got {type(v).__name__}")
        try:
            raw = v.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"visible-string {v!r} has characters outside latin-1") from exc
        out += encode_length(len(raw))
        out += raw
    elif t == DataType.UTF8_STRING:
        if not isinstance(v, str):
            raise EncodeError(f"utf8-string needs str, got {type(v).__name__}")
        try:
            raw = v.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise EncodeError(f"utf8-string {v!r} is not encodable as UTF-8") from exc
        out += encode_length(len(raw))
        out += raw
    elif t == DataType.BOOLEAN:
        if not isinstance(v, bool):
            raise EncodeError(f"boolean needs bool, got {type(v).__name__}")
        out.append(1 if v else 0)
    elif t == DataType.BIT_STRING:
        if not isinstance(v, str) or v.strip("01"):
            raise EncodeError(f"bit-string needs a str of '0'/'1', got {v!r}")
        n = len(v)
        out += encode_length(n)
        if n:
            nbytes = (n + 7) // 8
            out += (int(v, 2) << (nbytes * 8 - n)).to_bytes(nbytes, "big")
    elif t in _FLOAT_STRUCTS:
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)):
            raise EncodeError(f"{DataType(t).name} needs a float, got {type(v).__name__}")
        try:
            out += _FLOAT_STRUCTS[t].pack(v)
        except (OverflowError, struct.error) as exc:
            raise EncodeError(f"{DataType(t).name} cannot hold {v!r}") from exc
    elif t == DataType.DATE_TIME:
        out += encode_date_time(v)
    elif t == DataType.DATE:
        out += encode_date(v)
    elif t == DataType.TIME:
        out += encode_time(v)
    elif t in _ZERO_SIZE_TYPES:
        if v is not None:
            raise EncodeError(f"{DataType(t).name} has no value, got {v!r}")
    elif t == DataType.ARRAY or t == DataType.STRUCTURE:
        if depth >= MAX_DEPTH:
            raise EncodeError(f"nesting deeper than {MAX_DEPTH}")
        if not isinstance(v, (tuple, list)) or isinstance(v, Data):  # a Data is a tuple too
            raise EncodeError(f"{DataType(t).name} needs a tuple of Data, got {type(v).__name__}")
        out += encode_length(len(v))
        for item in v:
            _encode_into(item, out, depth + 1)
    elif t == DataType.COMPACT_ARRAY:
        _encode_compact_array(v, out, depth)
    else:  # pragma: no cover - DataType is closed
        raise EncodeError(f"unknown data type {t}")


def _encode_into(value: Data, out: bytearray, depth: int) -> None:
    if not isinstance(value, Data):
        raise EncodeError(f"expected Data, got {type(value).__name__}")
    if value.encoded is not None:
        out += value.encoded
        return
    t = value.type
    if type(t) is not DataType:
        if t not in _DATA_TYPES:
            raise EncodeError(f"unknown data type {t!r}")
        t = _DATA_TYPES[t]
    out.append(t)
    _encode_untagged(t, value.value, out, depth)


def encode(value: Data) -> bytes:
    """A-XDR bytes of one Data (tag and contents). Raises EncodeError on bad type or range."""
    out = bytearray()
    _encode_into(value, out, 0)
    return bytes(out)


# ---------------------------------------------------------------------------------------
# compact-array
# ---------------------------------------------------------------------------------------


def _encode_td(td: TypeDescription, out: bytearray, depth: int) -> None:
    if not isinstance(td, TypeDescription):
        raise EncodeError(f"expected TypeDescription, got {type(td).__name__}")
    if depth >= MAX_DEPTH:
        raise EncodeError(f"type description nested deeper than {MAX_DEPTH}")
    t = td.type
    if t not in _DATA_TYPES or t == DataType.COMPACT_ARRAY:
        raise EncodeError(f"{t!r} cannot appear in a compact-array type description")
    if t in _ZERO_SIZE_TYPES or (t == DataType.STRUCTURE and not td.fields):
        raise EncodeError(f"zero-size type {DataType(t).name} cannot appear in a compact-array type description")
    out.append(t)
    if t == DataType.ARRAY:
        if type(td.count) is not int or not 1 <= td.count <= 0xFFFF:
            raise EncodeError(f"compact-array array count {td.count!r} is out of range 1..65535")
        if td.element is None:
            raise EncodeError("compact-array array description has no element type")
        out += _U16.pack(td.count)
        _encode_td(td.element, out, depth + 1)
    elif t == DataType.STRUCTURE:
        out += encode_length(len(td.fields))
        for field in td.fields:
            _encode_td(field, out, depth + 1)


def encode_type_description(td: TypeDescription) -> bytes:
    """The bytes of a compact-array contents-description."""
    out = bytearray()
    _encode_td(td, out, 0)
    return bytes(out)


def _encode_conforming(td: TypeDescription, item: Data, out: bytearray, depth: int) -> None:
    """Untagged contents of `item`, which must match the description `td` exactly."""
    if not isinstance(item, Data) or item.type != td.type:
        raise EncodeError(f"compact-array element {item!r} does not match type {DataType(td.type).name}")
    if td.type == DataType.ARRAY:
        if not isinstance(item.value, (tuple, list)) or len(item.value) != td.count:
            raise EncodeError(f"compact-array element needs an array of exactly {td.count} items")
        for sub in item.value:
            _encode_conforming(td.element, sub, out, depth + 1)
    elif td.type == DataType.STRUCTURE:
        if not isinstance(item.value, (tuple, list)) or len(item.value) != len(td.fields):
            raise EncodeError(f"compact-array element needs a structure of exactly {len(td.fields)} fields")
        for field, sub in zip(td.fields, item.value):
            _encode_conforming(field, sub, out, depth + 1)
    else:
        _encode_untagged(td.type, item.value, out, depth)


def _encode_compact_array(v: Any, out: bytearray, depth: int) -> None:
    if not isinstance(v, CompactArray):
        raise EncodeError(f"compact-array needs a CompactArray, got {type(v).__name__}")
    _encode_td(v.type_description, out, depth)
    contents = bytearray()
    for item in v.contents:
        _encode_conforming(v.type_description, item, contents, depth + 1)
    out += encode_length(len(contents))
    out += contents


def _min_size(td: TypeDescription) -> int:
    """Fewest content bytes one element of `td` can take (strings: their length byte)."""
    t = td.type
    if t in _ZERO_SIZE_TYPES:
        return 0
    if t == DataType.ARRAY:
        return td.count * _min_size(td.element)
    if t == DataType.STRUCTURE:
        return sum(_min_size(f) for f in td.fields)
    if t in _STRING_TYPES or t == DataType.BIT_STRING:
        return 1
    return _FIXED_SIZES[t]


_FIXED_SIZES: dict[int, int] = {
    **{int(t): struct.calcsize(f) for t, f in _INT_FORMATS.items()},
    int(DataType.FLOAT32): 4,
    int(DataType.FLOAT64): 8,
    int(DataType.BOOLEAN): 1,
    int(DataType.DATE_TIME): 12,
    int(DataType.DATE): 5,
    int(DataType.TIME): 4,
    int(DataType.NULL_DATA): 0,
    int(DataType.DONT_CARE): 0,
}


# Every part of a compact-array element must take at least one byte: otherwise a short
# input could describe billions of zero-byte values (e.g. 65535 null-data per element), and
# a zero-size element could not be counted back out of the contents at all.
_ZERO_SIZE_REASON = "zero-size types (null-data, dont-care, empty structure or array) are not allowed"


def _decode_td(buf: bytes, pos: int, end: int, depth: int) -> tuple[TypeDescription, int]:
    if depth >= MAX_DEPTH:
        raise DecodeError("type description", pos, f"nested deeper than {MAX_DEPTH}")
    if pos >= end:
        raise TruncatedError("type description", pos)
    tag = buf[pos]
    if tag not in _VALID_TAGS or tag == DataType.COMPACT_ARRAY:
        raise DecodeError("type description", pos, f"tag 0x{tag:02X} is not a data type allowed here")
    if tag in _ZERO_SIZE_TYPES:
        raise DecodeError("type description", pos, _ZERO_SIZE_REASON)
    t = _DATA_TYPES[tag]
    pos += 1
    if t == DataType.ARRAY:
        if pos + 2 > end:
            raise TruncatedError("type description array count", pos)
        count = (buf[pos] << 8) | buf[pos + 1]
        if count == 0:
            raise DecodeError("type description", pos, _ZERO_SIZE_REASON)
        element, pos = _decode_td(buf, pos + 2, end, depth + 1)
        return TypeDescription(t, element=element, count=count), pos
    if t == DataType.STRUCTURE:
        n, pos = decode_length(buf, pos, end)
        if n == 0:
            raise DecodeError("type description", pos, _ZERO_SIZE_REASON)
        if n > end - pos:
            raise TruncatedError("type description structure", pos, f"{n} fields declared, {end - pos} bytes left")
        fields = []
        for _ in range(n):
            field, pos = _decode_td(buf, pos, end, depth + 1)
            fields.append(field)
        return TypeDescription(t, fields=tuple(fields)), pos
    return TypeDescription(t), pos


def decode_type_description(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[TypeDescription, int]:
    """(TypeDescription, offset after it) from a compact-array contents-description."""
    buf = bytes(buf)
    return _decode_td(buf, offset, len(buf), 0)


def _decode_conforming(td: TypeDescription, buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    t = td.type
    if t == DataType.ARRAY or t == DataType.STRUCTURE:
        items = []
        for sub in (td.fields if t == DataType.STRUCTURE else (td.element,) * td.count):
            item, pos = _decode_conforming(sub, buf, pos, end, depth + 1)
            items.append(item)
        return Data(t, tuple(items)), pos
    value, pos = _decode_contents(int(t), buf, pos, end, depth)
    return Data(t, value), pos


def _decode_compact_array(buf: bytes, pos: int, end: int, depth: int) -> tuple[CompactArray, int]:
    td, pos = _decode_td(buf, pos, end, depth)
    n, pos = decode_length(buf, pos, end)
    if n > end - pos:
        raise TruncatedError("compact-array contents", pos, f"{n} bytes declared, {end - pos} left")
    stop = pos + n
    element_size = _min_size(td)  # >= 1: _decode_td refuses zero-size types
    items = []
    while pos < stop:
        if element_size > stop - pos:
            raise TruncatedError("compact-array element", pos, "contents end inside an element")
        item, pos = _decode_conforming(td, buf, pos, stop, depth + 1)
        items.append(item)
    return CompactArray(td, tuple(items)), pos


# ---------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------


def _decode_contents(t: int, buf: bytes, pos: int, end: int, depth: int) -> tuple[Any, int]:
    """The Python value of a type-t value whose contents start at pos."""
    s = _INT_STRUCTS.get(t)
    if s is not None:
        if pos + s.size > end:
            raise TruncatedError(DataType(t).name, pos)
        return s.unpack_from(buf, pos)[0], pos + s.size
    if t in _STRING_TYPES:
        n, pos = decode_length(buf, pos, end)
        if n > end - pos:
            raise TruncatedError(DataType(t).name, pos, f"{n} bytes declared, {end - pos} left")
        raw = buf[pos : pos + n]
        if t == DataType.OCTET_STRING:
            return raw, pos + n
        if t == DataType.VISIBLE_STRING:
            return raw.decode("latin-1"), pos + n
        try:
            return raw.decode("utf-8"), pos + n
        except UnicodeDecodeError as exc:
            raise DecodeError("utf8-string", pos, f"invalid UTF-8: {exc.reason}") from None
    if t == DataType.ARRAY or t == DataType.STRUCTURE:
        if depth >= MAX_DEPTH:
            raise DecodeError(DataType(t).name, pos, f"nested deeper than {MAX_DEPTH}")
        n, pos = decode_length(buf, pos, end)
        # Each element takes at least its tag byte: refuse impossible counts before looping.
        if n > end - pos:
            raise TruncatedError(DataType(t).name, pos, f"{n} elements declared, {end - pos} bytes left")
        items, pos = _decode_items(buf, pos, end, n, depth + 1)
        return tuple(items), pos
    if t == DataType.BOOLEAN:
        if pos >= end:
            raise TruncatedError("boolean", pos)
        return buf[pos] != 0, pos + 1
    if t in _FLOAT_STRUCTS:
        s = _FLOAT_STRUCTS[t]
        if pos + s.size > end:
            raise TruncatedError(DataType(t).name, pos)
        return s.unpack_from(buf, pos)[0], pos + s.size
    if t == DataType.BIT_STRING:
        nbits, pos = decode_length(buf, pos, end)
        nbytes = (nbits + 7) // 8
        if nbytes > end - pos:
            raise TruncatedError("bit-string", pos, f"{nbits} bits declared, {end - pos} bytes left")
        if nbits == 0:
            return "", pos
        bits = format(int.from_bytes(buf[pos : pos + nbytes], "big"), f"0{nbytes * 8}b")[:nbits]
        return bits, pos + nbytes
    if t == DataType.DATE_TIME:
        if pos + 12 > end:
            raise TruncatedError("date-time", pos)
        return _date_time_from(buf, pos), pos + 12
    if t == DataType.DATE:
        if pos + 5 > end:
            raise TruncatedError("date", pos)
        return _make_date(*_DATE_STRUCT.unpack_from(buf, pos), pos), pos + 5
    if t == DataType.TIME:
        if pos + 4 > end:
            raise TruncatedError("time", pos)
        return _make_time(*_TIME_STRUCT.unpack_from(buf, pos), pos), pos + 4
    if t in _ZERO_SIZE_TYPES:
        return None, pos
    if t == DataType.COMPACT_ARRAY:
        return _decode_compact_array(buf, pos, end, depth)
    raise DecodeError("data", pos, f"unknown type tag 0x{t:02X}")  # pragma: no cover


# Tags whose contents one struct unpacks to the decoded value: (type, unpack_from, size).
# '?' gives True for any non-zero byte, as a boolean is decoded.
_ONE_STRUCT: dict[int, tuple[DataType, Any, int]] = {
    int(t): (t, s.unpack_from, s.size)
    for t, s in [(DataType(t), struct.Struct(">" + f)) for t, f in {**_INT_FORMATS, **_FLOAT_FORMATS}.items()]
    + [(DataType.BOOLEAN, struct.Struct(">?"))]
}
_OCTET_STRING = DataType.OCTET_STRING
_CONTAINERS = {int(DataType.ARRAY): DataType.ARRAY, int(DataType.STRUCTURE): DataType.STRUCTURE}
_new_data = tuple.__new__  # _new_data(Data, (type, value, None)): Data without a Python-level __init__
# Arrays at least this long try the bulk path for elements of one byte layout.
_BULK_MIN_ELEMENTS = 16
# Inputs at least this long are decoded with the cyclic garbage collector paused.
_PAUSE_GC_FROM_BYTES = 16 * 1024


def _decode_items(buf: bytes, pos: int, end: int, count: int, depth: int) -> tuple[list[Data], int]:
    """`count` consecutive tagged values from pos, each at nesting `depth`; (values, offset after).

    The common types are decoded inline (one dict lookup and one struct call each) rather
    than through a function per value: this loop is where a large read spends its time.
    Nested arrays and structures recurse, at most MAX_DEPTH deep.
    """
    items: list[Data] = []
    append = items.append
    one_struct = _ONE_STRUCT
    containers = _CONTAINERS
    new = _new_data
    for _ in range(count):
        if pos >= end:
            raise TruncatedError("data", pos, "no tag byte")
        tag = buf[pos]
        pos += 1
        fixed = one_struct.get(tag)
        if fixed is not None:
            t, unpack, size = fixed
            if pos + size > end:
                raise TruncatedError(t.name, pos)
            append(new(Data, (t, unpack(buf, pos)[0], None)))
            pos += size
        elif tag == 9:  # octet-string
            if pos < end and buf[pos] < 0x80:
                n = buf[pos]
                pos += 1
            else:
                n, pos = decode_length(buf, pos, end)
            if n > end - pos:
                raise TruncatedError("OCTET_STRING", pos, f"{n} bytes declared, {end - pos} left")
            append(new(Data, (_OCTET_STRING, buf[pos : pos + n], None)))
            pos += n
        elif tag in containers:
            t = containers[tag]
            if depth >= MAX_DEPTH:
                raise DecodeError(t.name, pos, f"nested deeper than {MAX_DEPTH}")
            if pos < end and buf[pos] < 0x80:
                n = buf[pos]
                pos += 1
            else:
                n, pos = decode_length(buf, pos, end)
            # Each element takes at least its tag byte: refuse impossible counts before looping.
            if n > end - pos:
                raise TruncatedError(t.name, pos, f"{n} elements declared, {end - pos} bytes left")
            if n >= _BULK_MIN_ELEMENTS and t is DataType.ARRAY:
                sub, pos = _decode_array(buf, pos, end, n, depth + 1)
            else:
                sub, pos = _decode_items(buf, pos, end, n, depth + 1)
            append(new(Data, (t, tuple(sub), None)))
        elif tag in _ZERO_SIZE_TYPES:  # null-data, dont-care
            append(new(Data, (_DATA_TYPES[tag], None, None)))
        else:
            t = _DATA_TYPES.get(tag)
            if t is None:
                raise DecodeError("data", pos - 1, f"unknown type tag 0x{tag:02X}")
            value, pos = _decode_contents(tag, buf, pos, end, depth)
            append(new(Data, (t, value, None)))
    return items, pos


def _decode_array(buf: bytes, pos: int, end: int, count: int, depth: int) -> tuple[list[Data], int]:
    """The `count` elements of an array, each at nesting `depth`; (elements, offset after).

    The first element is decoded one value at a time. If it has a fixed byte layout (a leaf
    of fixed size or an octet-string, or a structure of only such fields), the elements that
    repeat its layout byte for byte are unpacked in bulk (`_bulk_rows`) and turned into Data
    column by column in C loops; every other element is decoded one value at a time. Either
    way each element is exactly what `_decode_items` gives for it.
    """
    start = pos
    items, pos = _decode_items(buf, pos, end, 1, depth)
    first = items[0]
    # An empty structure has nothing to unpack column by column (its count may even be in a
    # long form, 0x81 0x00, that the layout check below would take as one byte pattern).
    layout = _element_layout(buf, start, pos) if first.type is not DataType.STRUCTURE or first.value else None
    if layout is None:
        rest, pos = _decode_items(buf, pos, end, count - 1, depth)
        items += rest
        return items, pos
    if first.type is DataType.STRUCTURE:
        column_types = [field.type for field in first.value]
    else:
        column_types = [first.type]
    new = _new_data

    def take_bulk(values) -> None:
        columns = zip(*values)
        data_columns = [
            list(map(new, repeat(Data), zip(repeat(t), column, repeat(None))))
            for t, column in zip(column_types, columns)
        ]
        if first.type is DataType.STRUCTURE:
            items.extend(map(new, repeat(Data), zip(repeat(DataType.STRUCTURE), zip(*data_columns), repeat(None))))
        else:
            items.extend(data_columns[0])

    def take_one(at: int) -> int:
        one, at = _decode_items(buf, at, end, 1, depth)
        items.extend(one)
        return at

    pos, left = _bulk_rows(buf, pos, end, count - 1, layout, take_bulk, take_one)
    if left:
        rest, pos = _decode_items(buf, pos, end, left, depth)
        items += rest
    return items, pos


def _decode_at(buf: bytes, pos: int, end: int, depth: int) -> tuple[Data, int]:
    items, pos = _decode_items(buf, pos, end, 1, depth)
    return items[0], pos


class _CollectorPaused:
    """Pauses Python's cyclic garbage collector while a large input is decoded.

    A decoded tree has no reference cycles, so a collection during decoding finds nothing;
    but the hundreds of thousands of objects a large read creates would trigger repeated
    passes over the growing tree, about half the decoding time. Reference counting still
    frees everything as usual. The collector is re-enabled only if it was enabled before.
    """

    __slots__ = ("was_enabled",)

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc_info: object) -> None:
        if self.was_enabled:
            gc.enable()


def decode(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Data, int]:
    """(Data, offset after it) from A-XDR bytes starting at `offset`."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    if offset < 0 or offset > len(buf):
        raise DecodeError("data", offset, "offset outside the buffer")
    if len(buf) - offset < _PAUSE_GC_FROM_BYTES:
        return _decode_at(buf, offset, len(buf), 0)
    with _CollectorPaused():
        return _decode_at(buf, offset, len(buf), 0)


def decode_all(buf: bytes | bytearray | memoryview) -> Data:
    """One Data that spans all of `buf` exactly (DecodeError if bytes remain)."""
    value, end = decode(buf)
    if end != len(buf):
        raise DecodeError("data", end, f"{len(buf) - end} trailing bytes")
    return value


# ---------------------------------------------------------------------------------------
# Profile buffers: arrays of same-layout structures
# ---------------------------------------------------------------------------------------

# Types whose contents struct unpacks straight to the generic decoder's value.
_ROW_FORMATS: dict[int, str] = {
    **{int(t): f for t, f in _INT_FORMATS.items()},
    **{int(t): f for t, f in _FLOAT_FORMATS.items()},
    int(DataType.BOOLEAN): "?",  # '?' maps any non-zero byte to True, as the decoder does
}

# Rows checked per numpy step; grows while rows keep matching so a clean buffer needs few
# steps, and restarts small after a mismatch so mixed buffers cost little extra.
_FIRST_CHUNK = 256
_MAX_CHUNK = 1 << 16
# Once this many checks were made, the bulk path must have taken this many rows per check
# on average, or the remaining rows are decoded one by one: a buffer whose rows mostly
# differ must not pay a numpy check for every row it decodes anyway.
_MIN_CHECKS = 8
_MIN_ROWS_PER_CHECK = 16


class _RowLayout:
    """The byte layout of one encoded row: constant bytes (tags, lengths) and a Struct."""

    __slots__ = ("size", "struct", "const_pos", "const_val")

    def __init__(self, size: int, fmt: str, const_pos: list[int], const_val: bytes) -> None:
        self.size = size
        self.struct = struct.Struct(fmt)
        self.const_pos = np.array(const_pos, dtype=np.intp)
        self.const_val = np.frombuffer(const_val, dtype=np.uint8)


def _row_layout(buf: bytes, start: int, end: int) -> _RowLayout | None:
    """Layout of the structure encoded at buf[start:end], or None if it has no fixed layout."""
    fmt = [">"]
    const_pos: list[int] = []
    const_val = bytearray()

    def const(a: int, b: int) -> None:
        const_pos.extend(range(a - start, b - start))
        const_val.extend(buf[a:b])

    n, pos = decode_length(buf, start + 1)
    const(start, pos)
    fmt.append(f"{pos - start}x")
    for _ in range(n):
        tag = buf[pos]
        f = _ROW_FORMATS.get(tag)
        if f is not None:
            const(pos, pos + 1)
            fmt.append("x" + f)
            pos += 1 + struct.calcsize(">" + f)
        elif tag == DataType.OCTET_STRING:
            length, body = decode_length(buf, pos + 1)
            const(pos, body)
            fmt.append(f"{body - pos}x{length}s")
            pos = body + length
        else:
            return None  # variable or non-plain value (strings, nested, date-time, null)
    if pos != end:  # pragma: no cover - the generic decoder already walked this row
        return None
    return _RowLayout(end - start, "".join(fmt), const_pos, bytes(const_val))


def _element_layout(buf: bytes, start: int, end: int) -> _RowLayout | None:
    """Layout of the array element encoded at buf[start:end], or None if it has none.

    A structure qualifies if all its fields do; a leaf if struct unpacks it (fixed-size
    types) or it is an octet-string.
    """
    tag = buf[start]
    if tag == DataType.STRUCTURE:
        return _row_layout(buf, start, end)
    f = _ROW_FORMATS.get(tag)
    if f is not None:
        return _RowLayout(end - start, ">x" + f, [0], bytes((tag,)))
    if tag == DataType.OCTET_STRING:
        length, body = decode_length(buf, start + 1)
        return _RowLayout(end - start, f">{body - start}x{length}s", list(range(body - start)), buf[start:body])
    return None


def _bulk_rows(buf: bytes, pos: int, end: int, left: int, layout: _RowLayout, take_bulk, take_one) -> tuple[int, int]:
    """Walk up to `left` elements from pos; (offset reached, elements not yet taken).

    Runs of elements that repeat `layout` byte for byte go to take_bulk(iterator of value
    tuples); an element that does not goes to take_one(offset), which returns the offset
    after it. The constant bytes of a block of rows are checked at once with numpy, the
    block doubling while all rows match. If the runs turn out short (see _MIN_CHECKS), it
    stops early and leaves the rest to the caller's one-by-one decoder.
    """
    size = layout.size
    const_pos, const_val = layout.const_pos, layout.const_val
    unpack = layout.struct.iter_unpack
    data = np.frombuffer(buf, dtype=np.uint8)
    chunk = _FIRST_CHUNK
    checks = bulk = 0
    while left:
        n = min(left, chunk, (end - pos) // size)
        matched = 0
        if n:
            checks += 1
            block = data[pos : pos + n * size].reshape(n, size)
            ok = (block[:, const_pos] == const_val).all(axis=1)
            matched = n if ok.all() else int(ok.argmin())
            if matched:
                take_bulk(unpack(buf[pos : pos + matched * size]))
                pos += matched * size
                left -= matched
                bulk += matched
        if matched == n and n == chunk:
            chunk = min(chunk * 2, _MAX_CHUNK)
            continue
        if left:  # an element that differs from the layout (or the buffer's tail)
            pos = take_one(pos)
            left -= 1
            chunk = _FIRST_CHUNK
            if checks >= _MIN_CHECKS and bulk < _MIN_ROWS_PER_CHECK * checks:
                break
    return pos, left


def _row_values(row: Data, offset: int) -> tuple:
    if row.type != DataType.STRUCTURE:
        raise DecodeError("profile buffer row", offset, f"is {row.type.name}, not a structure")
    return tuple(item.value for item in row.value)


def rows_of(value: Data) -> list[tuple]:
    """The rows of an already decoded array of structures, as `decode_rows` gives them."""
    if value.type != DataType.ARRAY:
        raise DecodeError("profile buffer", 0, f"is {value.type.name}, not an array")
    rows = value.value
    if any(t != DataType.STRUCTURE for t in set(map(_type_of, rows))):
        row = next(row for row in rows if row.type != DataType.STRUCTURE)
        raise DecodeError("profile buffer row", 0, f"is {row.type.name}, not a structure")
    fields_of_rows = list(map(_value_of, rows))
    widths = set(map(len, fields_of_rows))
    if len(widths) == 1 and 0 not in widths:
        # Rows of one width (the usual case): every field's value in one C loop, regrouped by width.
        values = map(_value_of, chain.from_iterable(fields_of_rows))
        return list(zip(*[values] * widths.pop()))
    return [tuple(map(_value_of, fields)) for fields in fields_of_rows]


_value_of = attrgetter("value")
_type_of = attrgetter("type")


def decode_rows(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[list[tuple], int]:
    """(rows, offset after the array) for an array of structures such as a profile buffer.

    Each row is the tuple of the structure's field values exactly as `decode` gives them
    (octet-strings stay bytes). Rows that share the first row's byte layout are unpacked
    in bulk; any other row goes through the generic decoder, so the result is always the
    same as `decode`'s.
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    end = len(buf)
    if offset < 0 or offset >= end:
        raise TruncatedError("profile buffer", offset, "no tag byte")
    if buf[offset] != DataType.ARRAY:
        raise DecodeError("profile buffer", offset, f"tag 0x{buf[offset]:02X} is not an array")
    count, pos = decode_length(buf, offset + 1)
    if count > end - pos:
        raise TruncatedError("profile buffer", pos, f"{count} rows declared, {end - pos} bytes left")
    rows: list[tuple] = []
    if count == 0:
        return rows, pos

    first, first_end = _decode_at(buf, pos, end, 1)
    rows.append(_row_values(first, pos))
    layout = _row_layout(buf, pos, first_end) if first.type == DataType.STRUCTURE else None
    pos = first_end
    left = count - 1
    if layout is None:
        for _ in range(left):
            row, new = _decode_at(buf, pos, end, 1)
            rows.append(_row_values(row, pos))
            pos = new
        return rows, pos

    def take_one(at: int) -> int:
        row, after = _decode_at(buf, at, end, 1)
        rows.append(_row_values(row, at))
        return after

    pos, left = _bulk_rows(buf, pos, end, left, layout, rows.extend, take_one)
    for _ in range(left):
        pos = take_one(pos)
    return rows, pos


def rows_to_data(rows: Sequence[Sequence[Any]], row_types: Sequence[DataType]) -> Data:
    """Data(array of structures) from plain row tuples and the DataType of each column."""
    return Data(
        DataType.ARRAY,
        tuple(Data(DataType.STRUCTURE, tuple(Data(t, v) for t, v in zip(row_types, row, strict=True))) for row in rows),
    )


def encode_rows(rows: Sequence[Sequence[Any]], row_types: Sequence[DataType]) -> bytes:
    """A-XDR bytes of an array of structures (a profile buffer) from plain row tuples.

    Same bytes as `encode(rows_to_data(rows, row_types))`, and the same EncodeErrors.
    Columns of integer, float, boolean and octet-string types are packed with struct;
    any other column type goes through the generic encoder.
    """
    row_types = [DataType(t) for t in row_types]
    ncols = len(row_types)
    for row in rows:
        if len(row) != ncols:
            raise EncodeError(f"row {row!r} has {len(row)} values, expected {ncols}")
    fast = all(int(t) in _ROW_FORMATS or t == DataType.OCTET_STRING for t in row_types)
    if fast and rows:
        fast = _row_value_types_ok(rows, row_types)
    if not fast:
        return encode(rows_to_data(rows, row_types))

    prefix = bytes((DataType.ARRAY,)) + encode_length(len(rows))
    octet_cols = [i for i, t in enumerate(row_types) if t == DataType.OCTET_STRING]
    lengths = [{len(row[i]) for row in rows} for i in octet_cols]
    if all(len(ls) == 1 for ls in lengths):
        # Every row has one byte layout: pack the values with pad bytes where tags and
        # lengths go, then write those constant bytes into all rows at once.
        layout = _encode_layout(row_types, [ls.pop() for ls in lengths])
        try:
            packed = bytearray(b"".join(starmap(layout.struct.pack, rows)))
        except (struct.error, OverflowError):
            _raise_generic_error(rows, row_types)
        if rows:
            table = np.frombuffer(packed, dtype=np.uint8).reshape(len(rows), layout.size)
            table[:, layout.const_pos] = layout.const_val
        return prefix + bytes(packed)

    # Octet-strings of varying length: one Struct per length pattern.
    header = bytes((DataType.STRUCTURE,)) + encode_length(ncols)
    structs: dict[tuple[int, ...], struct.Struct] = {}

    def struct_for(lengths: tuple[int, ...]) -> struct.Struct:
        parts = [">"]
        it = iter(lengths)
        for t in row_types:
            if t == DataType.OCTET_STRING:
                n = next(it)
                parts.append(f"{1 + len(encode_length(n))}s{n}s")
            else:
                parts.append("B" + _ROW_FORMATS[t])
        return struct.Struct("".join(parts))

    out = bytearray(prefix)
    tags = [bytes((t,)) for t in row_types]
    for row in rows:
        key = tuple(len(row[i]) for i in octet_cols)
        s = structs.get(key)
        if s is None:
            s = structs[key] = struct_for(key)
        args: list[Any] = []
        for t, tag, v in zip(row_types, tags, row):
            if t == DataType.OCTET_STRING:
                args.append(tag + encode_length(len(v)))
                args.append(v)
            else:
                args.append(t)
                args.append(v)
        out += header
        try:
            out += s.pack(*args)
        except (struct.error, OverflowError):
            _raise_generic_error([row], row_types)
    return bytes(out)


def _encode_layout(row_types: Sequence[DataType], octet_lengths: Sequence[int]) -> _RowLayout:
    """Row layout for encoding: pad bytes in the Struct where the constant bytes go."""
    fmt = [">"]
    const = bytearray((DataType.STRUCTURE,)) + encode_length(len(row_types))
    const_pos = list(range(len(const)))
    fmt.append(f"{len(const)}x")
    size = len(const)
    lengths = iter(octet_lengths)
    for t in row_types:
        if t == DataType.OCTET_STRING:
            n = next(lengths)
            head = bytes((t,)) + encode_length(n)
            fmt.append(f"{len(head)}x{n}s")
        else:
            head = bytes((t,))
            fmt.append("x" + _ROW_FORMATS[t])
            n = struct.calcsize(">" + _ROW_FORMATS[t])
        const_pos.extend(range(size, size + len(head)))
        const += head
        size += len(head) + n
    return _RowLayout(size, "".join(fmt), const_pos, bytes(const))


def _raise_generic_error(rows: Sequence[Sequence[Any]], row_types: Sequence[DataType]) -> NoReturn:
    """Let the generic encoder name the offending value and its range."""
    for row in rows:
        encode(rows_to_data([row], row_types))
    raise EncodeError("a row value does not fit its column type")  # pragma: no cover


def _row_value_types_ok(rows: Sequence[Sequence[Any]], row_types: Sequence[DataType]) -> bool:
    """True if every column holds the Python type struct packs exactly as `encode` would."""
    for i, t in enumerate(row_types):
        kinds = {type(row[i]) for row in rows}
        if t == DataType.OCTET_STRING:
            allowed = {bytes, bytearray}
        elif t == DataType.BOOLEAN:
            allowed = {bool}
        elif t in _FLOAT_FORMATS:
            allowed = {float, int}
        else:
            allowed = {int}
        if not kinds <= allowed:
            return False
    return True
