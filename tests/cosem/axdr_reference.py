"""A plain A-XDR decoder written straight from the Blue Book, for checking smartmeter.cosem.axdr.

One recursive function, one value at a time, no shortcuts: slow, but each rule is visible.
The fast decoder must give the same Data and end offset for every input this one decodes,
and a DecodeError (a TruncatedError exactly where this one says more bytes could complete
the value) for every input this one refuses.

Rules that are the project's choices rather than the standard's (docs/decisions.md and
the axdr module docstring): nesting deeper than 32 containers is refused; a declared
element count larger than the bytes left is a truncation; compact-array type descriptions
with zero-size parts are refused; date-time fields outside their ranges are refused.
"""
from __future__ import annotations

import struct

from smartmeter.cosem.data import CompactArray, CosemDate, CosemDateTime, CosemTime, Data, DataType, TypeDescription
from smartmeter.errors import DecodeError, TruncatedError

DT = DataType
DEPTH_LIMIT = 32

FIXED = {
    DT.INTEGER: ">b", DT.BCD: ">b", DT.LONG: ">h", DT.DOUBLE_LONG: ">i", DT.LONG64: ">q",
    DT.UNSIGNED: ">B", DT.ENUM: ">B", DT.LONG_UNSIGNED: ">H", DT.DOUBLE_LONG_UNSIGNED: ">I",
    DT.LONG64_UNSIGNED: ">Q", DT.FLOAT32: ">f", DT.FLOAT64: ">d",
}


class Reader:
    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise TruncatedError(what, self.pos, f"needs {n} bytes")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw

    def length(self) -> int:
        first = self.take(1, "length")[0]
        if first < 0x80:
            return first
        if not 0x81 <= first <= 0x84:
            raise DecodeError("length", self.pos - 1, f"bad length prefix 0x{first:02X}")
        return int.from_bytes(self.take(first - 0x80, "length"), "big")


def _field(value: int, ok: bool, what: str) -> int | None:
    if value == 0xFF:
        return None
    if not ok:
        raise DecodeError(what, None, f"0x{value:02X} is out of range")
    return value


def _date(raw: bytes) -> CosemDate:
    year, month, day, weekday = struct.unpack(">HBBB", raw)
    return CosemDate(
        None if year == 0xFFFF else year,
        _field(month, 1 <= month <= 12 or month in (0xFD, 0xFE), "month"),
        _field(day, 1 <= day <= 31 or day in (0xFD, 0xFE), "day"),
        _field(weekday, 1 <= weekday <= 7, "weekday"),
    )


def _time(raw: bytes) -> CosemTime:
    hour, minute, second, hundredths = raw
    return CosemTime(
        _field(hour, hour <= 23, "hour"),
        _field(minute, minute <= 59, "minute"),
        _field(second, second <= 59, "second"),
        _field(hundredths, hundredths <= 99, "hundredths"),
    )


def _date_time(raw: bytes) -> CosemDateTime:
    (deviation,) = struct.unpack(">h", raw[9:11])
    if deviation != -0x8000 and not -720 <= deviation <= 720:
        raise DecodeError("deviation", None, f"{deviation} is out of range")
    return CosemDateTime(
        _date(raw[:5]), _time(raw[5:9]),
        None if deviation == -0x8000 else deviation,
        None if raw[11] == 0xFF else raw[11],
    )


def _leaf(t: DataType, r: Reader) -> object:
    """The value of a non-container type whose contents start at r.pos."""
    if t in FIXED:
        fmt = FIXED[t]
        return struct.unpack(fmt, r.take(struct.calcsize(fmt), t.name))[0]
    if t == DT.BOOLEAN:
        return r.take(1, "boolean")[0] != 0
    if t in (DT.OCTET_STRING, DT.VISIBLE_STRING, DT.UTF8_STRING):
        raw = r.take(r.length(), t.name)
        if t == DT.OCTET_STRING:
            return raw
        if t == DT.VISIBLE_STRING:
            return raw.decode("latin-1")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("utf8-string", None, "invalid UTF-8") from None
    if t == DT.BIT_STRING:
        bits = r.length()
        raw = r.take((bits + 7) // 8, "bit-string")
        return "".join(format(b, "08b") for b in raw)[:bits]
    if t == DT.DATE_TIME:
        return _date_time(r.take(12, "date-time"))
    if t == DT.DATE:
        return _date(r.take(5, "date"))
    if t == DT.TIME:
        return _time(r.take(4, "time"))
    if t in (DT.NULL_DATA, DT.DONT_CARE):
        return None
    raise AssertionError(t)


def _type_description(r: Reader, depth: int) -> TypeDescription:
    if depth >= DEPTH_LIMIT:
        raise DecodeError("type description", r.pos, "too deep")
    tag = r.take(1, "type description")[0]
    if tag not in DT._value2member_map_ or tag in (DT.COMPACT_ARRAY, DT.NULL_DATA, DT.DONT_CARE):
        raise DecodeError("type description", r.pos - 1, f"tag 0x{tag:02X} not allowed")
    t = DT(tag)
    if t == DT.ARRAY:
        count = int.from_bytes(r.take(2, "type description array count"), "big")
        if count == 0:
            raise DecodeError("type description", r.pos, "empty array")
        return TypeDescription(t, element=_type_description(r, depth + 1), count=count)
    if t == DT.STRUCTURE:
        n = r.length()
        if n == 0:
            raise DecodeError("type description", r.pos, "empty structure")
        if n > r.end - r.pos:
            raise TruncatedError("type description", r.pos, "more fields than bytes")
        return TypeDescription(t, fields=tuple(_type_description(r, depth + 1) for _ in range(n)))
    return TypeDescription(t)


def _smallest(td: TypeDescription) -> int:
    if td.type == DT.ARRAY:
        return td.count * _smallest(td.element)
    if td.type == DT.STRUCTURE:
        return sum(_smallest(f) for f in td.fields)
    if td.type in FIXED:
        return struct.calcsize(FIXED[td.type])
    return {DT.BOOLEAN: 1, DT.DATE_TIME: 12, DT.DATE: 5, DT.TIME: 4}.get(td.type, 1)  # strings: length byte


def _conforming(td: TypeDescription, r: Reader) -> Data:
    if td.type == DT.STRUCTURE:
        return Data(td.type, tuple(_conforming(f, r) for f in td.fields))
    if td.type == DT.ARRAY:
        return Data(td.type, tuple(_conforming(td.element, r) for _ in range(td.count)))
    return Data(td.type, _leaf(td.type, r))


def _value(r: Reader, depth: int) -> Data:
    tag = r.take(1, "data")[0]
    if tag not in DT._value2member_map_:
        raise DecodeError("data", r.pos - 1, f"unknown tag 0x{tag:02X}")
    t = DT(tag)
    if t in (DT.ARRAY, DT.STRUCTURE):
        if depth >= DEPTH_LIMIT:
            raise DecodeError(t.name, r.pos, "too deep")
        n = r.length()
        if n > r.end - r.pos:
            raise TruncatedError(t.name, r.pos, "more elements than bytes")
        return Data(t, tuple(_value(r, depth + 1) for _ in range(n)))
    if t == DT.COMPACT_ARRAY:
        td = _type_description(r, depth)
        size = r.length()
        contents = Reader(r.buf, r.pos, r.pos + size)
        r.take(size, "compact-array contents")
        items = []
        while contents.pos < contents.end:
            if _smallest(td) > contents.end - contents.pos:
                raise TruncatedError("compact-array element", contents.pos, "contents end inside an element")
            items.append(_conforming(td, contents))
        return Data(t, CompactArray(td, tuple(items)))
    return Data(t, _leaf(t, r))


def reference_decode(buf: bytes, offset: int = 0) -> tuple[Data, int]:
    """(Data, offset after it), or DecodeError / TruncatedError."""
    r = Reader(bytes(buf), offset, len(buf))
    value = _value(r, 0)
    return value, r.pos
