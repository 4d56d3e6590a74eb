"""COSEM data values (IEC 62056-6-2 / Blue Book §4.1.5) as plain, typed Python objects.

Every value that crosses the wire is a `Data`: its A-XDR type tag and a Python value.
The Python value per type is fixed (see `Data`), so encoding is unambiguous and a
decoded value re-encodes to the same bytes.
"""
from __future__ import annotations

import datetime as _dt
from collections import namedtuple
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class DataType(IntEnum):
    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


# (min, max) of every integer type, used by the encoder's range check.
INTEGER_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INTEGER: (-(2**7), 2**7 - 1),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.UNSIGNED: (0, 2**8 - 1),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 2**8 - 1),
    DataType.BCD: (-(2**7), 2**7 - 1),
}

# Clock status bits (Blue Book 4.1.6.1)
CLOCK_STATUS_INVALID = 0x01
CLOCK_STATUS_DOUBTFUL = 0x02
CLOCK_STATUS_DIFFERENT_BASE = 0x04
CLOCK_STATUS_INVALID_STATUS = 0x08
CLOCK_STATUS_DST_ACTIVE = 0x80

DEVIATION_NOT_SPECIFIED = -0x8000  # 0x8000 on the wire


@dataclass(frozen=True, slots=True)
class CosemDate:
    """date (5 bytes). None = not specified (0xFFFF / 0xFF on the wire).

    month may also be 0xFD (DST end) / 0xFE (DST begin); day 0xFD (2nd last) / 0xFE (last);
    those special values are kept as the raw ints.
    """

    year: int | None = None
    month: int | None = None
    day: int | None = None
    weekday: int | None = None  # 1 = Monday … 7 = Sunday


@dataclass(frozen=True, slots=True)
class CosemTime:
    """time (4 bytes). None = not specified (0xFF)."""

    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    hundredths: int | None = None


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """date-time (12 bytes): date, time, deviation and clock status.

    deviation is minutes of local time *behind* UTC as the Blue Book defines it
    (local = UTC - deviation); None = not specified (0x8000). clock_status None = 0xFF.
    """

    date: CosemDate = CosemDate()
    time: CosemTime = CosemTime()
    deviation: int | None = None
    clock_status: int | None = None

    @classmethod
    def from_datetime(cls, value: _dt.datetime, clock_status: int = 0) -> "CosemDateTime":
        """From an aware datetime; deviation taken from its utcoffset (sign per Blue Book)."""
        offset = value.utcoffset()
        deviation = None if offset is None else -int(offset.total_seconds() // 60)
        return cls(
            CosemDate(value.year, value.month, value.day, value.isoweekday()),
            CosemTime(value.hour, value.minute, value.second, value.microsecond // 10000),
            deviation,
            clock_status,
        )

    def to_datetime(self) -> _dt.datetime:
        """An aware datetime (naive if deviation is not specified).

        Raises ValueError if a date or time field is not specified.
        """
        d, t = self.date, self.time
        if None in (d.year, d.month, d.day, t.hour, t.minute):
            raise ValueError("date-time has unspecified fields")
        tz = None if self.deviation is None else _dt.timezone(_dt.timedelta(minutes=-self.deviation))
        return _dt.datetime(
            d.year, d.month, d.day, t.hour, t.minute, t.second or 0,
            (t.hundredths or 0) * 10000, tzinfo=tz,
        )


@dataclass(frozen=True, slots=True)
class CompactArray:
    """compact-array: a type description (a Data whose value is the description tree) and contents."""

    type_description: "TypeDescription"
    contents: tuple["Data", ...]


@dataclass(frozen=True, slots=True)
class TypeDescription:
    """Type description of a compact-array element.

    For ARRAY: `count` elements of `element`. For STRUCTURE: `fields`. Otherwise only `type`.
    """

    type: DataType
    element: "TypeDescription | None" = None
    count: int = 0
    fields: tuple["TypeDescription", ...] = ()


_DataFields = namedtuple("_DataFields", ("type", "value", "encoded"), defaults=(None, None))


class Data(_DataFields):
    """One COSEM value. The Python type of `value` per DataType:

    NULL_DATA, DONT_CARE: None · ARRAY, STRUCTURE: tuple[Data, ...] · BOOLEAN: bool ·
    BIT_STRING: str of '0'/'1' · integer types, ENUM, BCD: int · OCTET_STRING: bytes ·
    VISIBLE_STRING: str (latin-1 on the wire) · UTF8_STRING: str · FLOAT32/64: float ·
    COMPACT_ARRAY: CompactArray · DATE_TIME: CosemDateTime · DATE: CosemDate · TIME: CosemTime

    `encoded` is the A-XDR encoding when it was produced in bulk (a profile buffer packed by
    axdr.encode_rows); `value` is then None and decoding `encoded` gives it.

    Immutable, and compared and hashed by (type, value) only, like a frozen dataclass with
    `encoded` excluded. It is built on a tuple because a decoder creates one per value
    received: `tuple.__new__(Data, (type, value, None))` is one C call, about three times
    cheaper than a frozen dataclass's __init__. Unlike a plain tuple it never equals a
    tuple and has no ordering.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Data):
            return self[:2] == other[:2]
        if isinstance(other, tuple):
            return False  # not tuple equality: Data(t, v) is no (t, v, None)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self[:2])

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __repr__(self) -> str:
        return f"Data(type={self[0]!r}, value={self[1]!r})"

    # Short constructors, so code reads like the Blue Book's type names.
    @staticmethod
    def null() -> "Data":
        return Data(DataType.NULL_DATA, None)

    @staticmethod
    def array(items) -> "Data":
        return Data(DataType.ARRAY, tuple(items))

    @staticmethod
    def structure(items) -> "Data":
        return Data(DataType.STRUCTURE, tuple(items))

    @staticmethod
    def boolean(v: bool) -> "Data":
        return Data(DataType.BOOLEAN, bool(v))

    @staticmethod
    def octet_string(v: bytes) -> "Data":
        return Data(DataType.OCTET_STRING, bytes(v))

    @staticmethod
    def visible_string(v: str) -> "Data":
        return Data(DataType.VISIBLE_STRING, v)

    @staticmethod
    def unsigned(v: int) -> "Data":
        return Data(DataType.UNSIGNED, v)

    @staticmethod
    def long_unsigned(v: int) -> "Data":
        return Data(DataType.LONG_UNSIGNED, v)

    @staticmethod
    def double_long_unsigned(v: int) -> "Data":
        return Data(DataType.DOUBLE_LONG_UNSIGNED, v)

    @staticmethod
    def integer(v: int) -> "Data":
        return Data(DataType.INTEGER, v)

    @staticmethod
    def long(v: int) -> "Data":
        return Data(DataType.LONG, v)

    @staticmethod
    def double_long(v: int) -> "Data":
        return Data(DataType.DOUBLE_LONG, v)

    @staticmethod
    def long64(v: int) -> "Data":
        return Data(DataType.LONG64, v)

    @staticmethod
    def long64_unsigned(v: int) -> "Data":
        return Data(DataType.LONG64_UNSIGNED, v)

    @staticmethod
    def enum(v: int) -> "Data":
        return Data(DataType.ENUM, v)

    def to_python(self) -> Any:
        """Plain Python (lists for arrays/structures) for display and JSON-ish use."""
        t = self.type
        if t == DataType.ARRAY or t == DataType.STRUCTURE:
            items = self.value
        elif t == DataType.COMPACT_ARRAY:
            items = self.value.contents
        else:
            return self.value
        # Leaves are taken in place: one call per container, not one per value.
        return [item.to_python() if item.type in _NESTED_TYPES else item.value for item in items]


_NESTED_TYPES = frozenset({DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY})
