"""Building blocks shared by the xDLMS LN service APDUs (Green Book ed. 8+ §9.5, A-XDR).

Descriptors (attribute, method, selective access), the result enumerations, the
`Get-Data-Result` and `DataBlock-SA` pieces, typed parameters for the profile-generic
selective-access selectors, and the byte reader/writer helpers every APDU module uses.

A-XDR rules used throughout:

* Unsigned8/16/32 are big-endian, fixed size; ENUMERATED and BOOLEAN are one byte;
* OPTIONAL is a presence byte 0x00 (absent) / 0x01 (present, value follows);
* CHOICE is the alternative's tag number in one byte, then the alternative;
* SEQUENCE OF and variable-size OCTET STRING carry an A-XDR length first.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, NamedTuple, TypeVar

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

__all__ = [
    "DataAccessResult",
    "ActionResult",
    "CosemAttributeDescriptor",
    "CosemMethodDescriptor",
    "SelectiveAccessDescriptor",
    "CaptureObjectDefinition",
    "RangeDescriptor",
    "EntryDescriptor",
    "RANGE_DESCRIPTOR_SELECTOR",
    "ENTRY_DESCRIPTOR_SELECTOR",
    "invoke_id_and_priority",
    "long_invoke_id_and_priority",
]


# ---------------------------------------------------------------------------------------
# Invoke-Id-And-Priority (Unsigned8) and Long-Invoke-Id-And-Priority (Unsigned32)
# ---------------------------------------------------------------------------------------
# Both stay raw ints in the APDUs (a server echoes them unchanged); these build them.

INVOKE_ID_MASK = 0x0F  # bits 0..3
SERVICE_CLASS_CONFIRMED = 0x40  # bit 6
PRIORITY_HIGH = 0x80  # bit 7

LONG_INVOKE_ID_MASK = 0x00FFFFFF  # bits 0..23
LONG_SELF_DESCRIPTIVE = 1 << 28
LONG_BREAK_ON_ERROR = 1 << 29  # processing-option
LONG_CONFIRMED = 1 << 30
LONG_PRIORITY_HIGH = 1 << 31


def invoke_id_and_priority(invoke_id: int, confirmed: bool = True, high_priority: bool = False) -> int:
    """The Invoke-Id-And-Priority byte: e.g. (1, confirmed, high priority) -> 0xC1."""
    if type(invoke_id) is not int or not 0 <= invoke_id <= INVOKE_ID_MASK:
        raise EncodeError(f"invoke_id must be an int in 0..15, got {invoke_id!r}")
    return invoke_id | (SERVICE_CLASS_CONFIRMED if confirmed else 0) | (PRIORITY_HIGH if high_priority else 0)


def long_invoke_id_and_priority(
    long_invoke_id: int,
    confirmed: bool = False,
    high_priority: bool = False,
    break_on_error: bool = False,
    self_descriptive: bool = False,
) -> int:
    """The Long-Invoke-Id-And-Priority word of data-notification and ACCESS APDUs."""
    if type(long_invoke_id) is not int or not 0 <= long_invoke_id <= LONG_INVOKE_ID_MASK:
        raise EncodeError(f"long_invoke_id must be an int in 0..0xFFFFFF, got {long_invoke_id!r}")
    return (
        long_invoke_id
        | (LONG_CONFIRMED if confirmed else 0)
        | (LONG_PRIORITY_HIGH if high_priority else 0)
        | (LONG_BREAK_ON_ERROR if break_on_error else 0)
        | (LONG_SELF_DESCRIPTIVE if self_descriptive else 0)
    )


class ActionResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


# ---------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

E = TypeVar("E", bound=IntEnum)


class Reader:
    """A cursor over one APDU's bytes; every read checks the bytes that remain.

    `what` names the APDU in error messages; offsets are from the start of the APDU.
    """

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | bytearray | memoryview, what: str, pos: int = 0) -> None:
        self.buf = buf if isinstance(buf, bytes) else bytes(buf)
        self.pos = pos
        self.what = what

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def _need(self, n: int, field: str) -> None:
        if len(self.buf) - self.pos < n:
            raise TruncatedError(
                f"{self.what} {field}", self.pos, f"needs {n} bytes, {len(self.buf) - self.pos} left"
            )

    def u8(self, field: str) -> int:
        self._need(1, field)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self, field: str) -> int:
        self._need(2, field)
        (v,) = _U16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return v

    def u32(self, field: str) -> int:
        self._need(4, field)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def take(self, n: int, field: str) -> bytes:
        self._need(n, field)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def boolean(self, field: str) -> bool:
        # A-XDR BOOLEAN: 0x00 is FALSE, any other value TRUE (we write 0x01).
        return self.u8(field) != 0

    def enum(self, enum_type: type[E], field: str) -> E:
        at = self.pos
        v = self.u8(field)
        try:
            return enum_type(v)
        except ValueError:
            raise DecodeError(f"{self.what} {field}", at, f"{v} is not a valid {enum_type.__name__}") from None

    def count(self, field: str, min_item_size: int = 1) -> int:
        """A SEQUENCE OF count, checked against the bytes left so no loop runs past them."""
        at = self.pos
        n, self.pos = _decode_length(self.buf, self.pos, f"{self.what} {field}")
        if n * min_item_size > len(self.buf) - self.pos:
            raise TruncatedError(
                f"{self.what} {field}", at, f"{n} items cannot fit in {len(self.buf) - self.pos} bytes"
            )
        return n

    def octet_string(self, field: str) -> bytes:
        at = self.pos
        n, self.pos = _decode_length(self.buf, self.pos, f"{self.what} {field}")
        if n > len(self.buf) - self.pos:
            raise TruncatedError(
                f"{self.what} {field}", at, f"declares {n} bytes, {len(self.buf) - self.pos} left"
            )
        return self.take(n, field)

    def present(self, field: str) -> bool:
        """An OPTIONAL's presence byte: strictly 0x00 or 0x01."""
        at = self.pos
        flag = self.u8(field)
        if flag > 1:
            raise DecodeError(f"{self.what} {field}", at, f"presence flag 0x{flag:02X} is not 0x00/0x01")
        return flag == 1

    def data(self, field: str) -> Data:
        if self.pos >= len(self.buf):
            raise TruncatedError(f"{self.what} {field}", self.pos, "no bytes left for Data")
        value, self.pos = axdr.decode(self.buf, self.pos)
        return value

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(self.what, self.pos, f"{len(self.buf) - self.pos} trailing bytes")


def _decode_length(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        return axdr.decode_length(buf, pos)
    except TruncatedError as exc:
        raise TruncatedError(what, pos, exc.detail) from None
    except DecodeError as exc:
        raise DecodeError(what, pos, exc.detail) from None


def _check_int(v: object, lo: int, hi: int, field: str) -> int:
    if type(v) is bool or not isinstance(v, int) or not lo <= v <= hi:
        raise EncodeError(f"{field} must be an int in {lo}..{hi}, got {v!r}")
    return int(v)


def put_u8(out: bytearray, v: int, field: str) -> None:
    out.append(_check_int(v, 0, 0xFF, field))


def put_u16(out: bytearray, v: int, field: str) -> None:
    out += _U16.pack(_check_int(v, 0, 0xFFFF, field))


def put_u32(out: bytearray, v: int, field: str) -> None:
    out += _U32.pack(_check_int(v, 0, 0xFFFFFFFF, field))


def put_bool(out: bytearray, v: bool, field: str) -> None:
    if not isinstance(v, bool):
        raise EncodeError(f"{field} must be a bool, got {v!r}")
    out.append(1 if v else 0)


def put_enum(out: bytearray, v: IntEnum, enum_type: type[IntEnum], field: str) -> None:
    try:
        out.append(enum_type(v))
    except (ValueError, TypeError):
        raise EncodeError(f"{field} {v!r} is not a valid {enum_type.__name__}") from None


def put_count(out: bytearray, n: int) -> None:
    out += axdr.encode_length(n)


def put_octet_string(out: bytearray, v: bytes, field: str) -> None:
    if not isinstance(v, (bytes, bytearray)):
        raise EncodeError(f"{field} must be bytes, got {type(v).__name__}")
    out += axdr.encode_length(len(v))
    out += v


def put_data(out: bytearray, v: Data, field: str) -> None:
    if not isinstance(v, Data):
        raise EncodeError(f"{field} must be a Data, got {type(v).__name__}")
    out += axdr.encode(v)


def as_enum(enum_type: type[E], v: object, field: str) -> E:
    """Normalise an int to `enum_type` in a constructor (EncodeError if not a member)."""
    if isinstance(v, enum_type):
        return v
    try:
        return enum_type(v)
    except (ValueError, TypeError):
        raise EncodeError(f"{field} {v!r} is not a valid {enum_type.__name__}") from None


# ---------------------------------------------------------------------------------------
# APDU base: tag byte, optional CHOICE byte, body
# ---------------------------------------------------------------------------------------


class Apdu:
    """Mixin for the APDU dataclasses: `TAG` and (for CHOICE APDUs) `CHOICE` lead the bytes.

    Subclasses implement `_encode_body(out)` and classmethod `_decode_body(reader)`.
    """

    __slots__ = ()
    TAG: ClassVar[int]
    CHOICE: ClassVar[int | None] = None

    def to_bytes(self) -> bytes:
        out = bytearray((self.TAG,))
        if self.CHOICE is not None:
            out.append(self.CHOICE)
        self._encode_body(out)
        return bytes(out)

    def _encode_body(self, out: bytearray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _decode_body(cls, r: Reader):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, b: bytes | bytearray | memoryview):
        """Decode exactly one APDU of this class (DecodeError on any other tag/choice or trailing bytes)."""
        r = Reader(b, cls.__name__)
        tag = r.u8("tag")
        if tag != cls.TAG:
            raise DecodeError(cls.__name__, 0, f"tag 0x{tag:02X} is not 0x{cls.TAG:02X}")
        if cls.CHOICE is not None:
            choice = r.u8("choice")
            if choice != cls.CHOICE:
                raise DecodeError(cls.__name__, 1, f"choice {choice} is not {cls.CHOICE}")
        value = cls._decode_body(r)
        r.finish()
        return value


class InvokeAndBlockNumber(Apdu):
    """The body of the block-transfer APDUs that carry only invoke-id-and-priority and a block
    number (get-request-next, set-response-datablock, action-request/response-next-pblock)."""

    __slots__ = ()

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_u32(out, self.block_number, "block_number")

    @classmethod
    def _decode_body(cls, r: Reader):
        return cls(r.u8("invoke-id-and-priority"), r.u32("block-number"))


# ---------------------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------------------


def _check_instance_id(v: object) -> bytes:
    if not isinstance(v, (bytes, bytearray)) or len(v) != 6:
        raise EncodeError(f"instance_id must be 6 bytes (an OBIS code), got {v!r}")
    return bytes(v)


class _FixedField:
    """to_bytes/from_bytes for the fixed-size pieces that define encode/decode."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        out = bytearray()
        self.encode(out)
        return bytes(out)

    @classmethod
    def from_bytes(cls, b: bytes):
        r = Reader(b, cls.__name__)
        v = cls.decode(r)
        r.finish()
        return v


@dataclass(frozen=True, slots=True)
class CosemAttributeDescriptor(_FixedField):
    """Cosem-Attribute-Descriptor: class-id (Unsigned16), instance-id (6 bytes), attribute-id.

    attribute-id is Integer8 on the wire; it is kept as the raw byte 0..255 (so the
    manufacturer-specific negative ids appear as 128..255, as servers index them).
    """

    class_id: int
    instance_id: bytes
    attribute_id: int

    def encode(self, out: bytearray) -> None:
        put_u16(out, self.class_id, "class_id")
        out += _check_instance_id(self.instance_id)
        put_u8(out, self.attribute_id, "attribute_id")

    @classmethod
    def decode(cls, r: Reader) -> "CosemAttributeDescriptor":
        return cls(r.u16("class-id"), r.take(6, "instance-id"), r.u8("attribute-id"))


@dataclass(frozen=True, slots=True)
class CosemMethodDescriptor(_FixedField):
    """Cosem-Method-Descriptor: class-id, instance-id (6 bytes), method-id (raw byte 0..255)."""

    class_id: int
    instance_id: bytes
    method_id: int

    def encode(self, out: bytearray) -> None:
        put_u16(out, self.class_id, "class_id")
        out += _check_instance_id(self.instance_id)
        put_u8(out, self.method_id, "method_id")

    @classmethod
    def decode(cls, r: Reader) -> "CosemMethodDescriptor":
        return cls(r.u16("class-id"), r.take(6, "instance-id"), r.u8("method-id"))


@dataclass(frozen=True, slots=True)
class SelectiveAccessDescriptor:
    """Selective-Access-Descriptor: access-selector (Unsigned8) and access-parameters (Data).

    For profile-generic buffers, selector 1 carries a `RangeDescriptor` and selector 2 an
    `EntryDescriptor` (use their `to_data()` / `from_data()`).
    """

    access_selector: int
    access_parameters: Data

    def encode(self, out: bytearray) -> None:
        put_u8(out, self.access_selector, "access_selector")
        put_data(out, self.access_parameters, "access_parameters")

    @classmethod
    def decode(cls, r: Reader) -> "SelectiveAccessDescriptor":
        return cls(r.u8("access-selector"), r.data("access-parameters"))


def put_optional_access(out: bytearray, sel: SelectiveAccessDescriptor | None) -> None:
    if sel is None:
        out.append(0)
    elif isinstance(sel, SelectiveAccessDescriptor):
        out.append(1)
        sel.encode(out)
    else:
        raise EncodeError(f"access_selection must be a SelectiveAccessDescriptor or None, got {sel!r}")


def read_optional_access(r: Reader) -> SelectiveAccessDescriptor | None:
    return SelectiveAccessDescriptor.decode(r) if r.present("access-selection") else None


AttributeItem = tuple[CosemAttributeDescriptor, SelectiveAccessDescriptor | None]


def put_attribute_items(out: bytearray, items: tuple[AttributeItem, ...]) -> None:
    """SEQUENCE OF Cosem-Attribute-Descriptor-With-Selection."""
    put_count(out, len(items))
    for item in items:
        try:
            descriptor, selection = item
        except (TypeError, ValueError):
            raise EncodeError(f"list item must be (descriptor, access_selection), got {item!r}") from None
        if not isinstance(descriptor, CosemAttributeDescriptor):
            raise EncodeError(f"expected CosemAttributeDescriptor, got {descriptor!r}")
        descriptor.encode(out)
        put_optional_access(out, selection)


def read_attribute_items(r: Reader) -> tuple[AttributeItem, ...]:
    n = r.count("attribute-descriptor-list", 10)  # 9-byte descriptor + presence byte
    return tuple((CosemAttributeDescriptor.decode(r), read_optional_access(r)) for _ in range(n))


def normalise_items(items) -> tuple[AttributeItem, ...]:
    return tuple(tuple(item) if isinstance(item, list) else item for item in items)


# ---------------------------------------------------------------------------------------
# Get-Data-Result and DataBlock-SA
# ---------------------------------------------------------------------------------------


def put_get_data_result(out: bytearray, v: Data | DataAccessResult, field: str) -> None:
    """Get-Data-Result ::= CHOICE { data [0] Data, data-access-result [1] Data-Access-Result }."""
    if isinstance(v, Data):
        out.append(0)
        out += axdr.encode(v)
    else:
        out.append(1)
        put_enum(out, v, DataAccessResult, field)


def read_get_data_result(r: Reader, field: str) -> Data | DataAccessResult:
    at = r.pos
    choice = r.u8(field)
    if choice == 0:
        return r.data(field)
    if choice == 1:
        return r.enum(DataAccessResult, field)
    raise DecodeError(f"{r.what} {field}", at, f"Get-Data-Result choice {choice} is not 0/1")


def as_get_data_result(v: object, field: str) -> Data | DataAccessResult:
    return v if isinstance(v, Data) else as_enum(DataAccessResult, v, field)


def put_datablock_sa(out: bytearray, last_block: bool, block_number: int, raw_data: bytes) -> None:
    """DataBlock-SA ::= SEQUENCE { last-block BOOLEAN, block-number Unsigned32, raw-data OCTET STRING }."""
    put_bool(out, last_block, "last_block")
    put_u32(out, block_number, "block_number")
    put_octet_string(out, raw_data, "raw_data")


def read_datablock_sa(r: Reader) -> tuple[bool, int, bytes]:
    return r.boolean("last-block"), r.u32("block-number"), r.octet_string("raw-data")


# ---------------------------------------------------------------------------------------
# Selective access parameters of profile generic (Blue Book IC 7, attribute 2)
# ---------------------------------------------------------------------------------------

RANGE_DESCRIPTOR_SELECTOR = 1
ENTRY_DESCRIPTOR_SELECTOR = 2

_INTEGER_TYPES = frozenset({
    DataType.INTEGER, DataType.LONG, DataType.DOUBLE_LONG, DataType.LONG64,
    DataType.UNSIGNED, DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED,
    DataType.LONG64_UNSIGNED, DataType.ENUM,
})


def _param_error(what: str, detail: str) -> DecodeError:
    return DecodeError(what, None, detail)


def _fields(d: object, n: int, what: str) -> tuple[Data, ...]:
    if not isinstance(d, Data) or d.type != DataType.STRUCTURE or len(d.value) != n:
        raise _param_error(what, f"expected a structure of {n} elements, got {d!r}")
    return d.value


def _int_field(d: Data, what: str) -> int:
    # Accept any integer type: clients disagree on e.g. integer vs unsigned for attribute_index.
    if d.type not in _INTEGER_TYPES:
        raise _param_error(what, f"expected an integer type, got {d.type.name}")
    return d.value


class CaptureObjectDefinition(NamedTuple):
    """capture_object_definition: which attribute (and element of it) a column holds."""

    class_id: int
    logical_name: bytes
    attribute_index: int
    data_index: int

    def to_data(self) -> Data:
        return Data.structure((
            Data.long_unsigned(self.class_id),
            Data.octet_string(self.logical_name),
            Data.integer(self.attribute_index),
            Data.long_unsigned(self.data_index),
        ))

    @classmethod
    def from_data(cls, d: Data) -> "CaptureObjectDefinition":
        what = "capture_object_definition"
        class_id, ln, attribute_index, data_index = _fields(d, 4, what)
        if ln.type != DataType.OCTET_STRING or len(ln.value) != 6:
            raise _param_error(what, f"logical_name must be an octet-string of 6 bytes, got {ln!r}")
        return cls(_int_field(class_id, what), ln.value, _int_field(attribute_index, what),
                   _int_field(data_index, what))


def _capture_object(v: object) -> CaptureObjectDefinition:
    if isinstance(v, CaptureObjectDefinition):
        return v
    try:
        return CaptureObjectDefinition(*v)
    except TypeError:
        raise EncodeError(f"expected (class_id, logical_name, attribute_index, data_index), got {v!r}") from None


@dataclass(frozen=True, slots=True)
class RangeDescriptor:
    """range_descriptor (access selector 1): rows whose restricting object lies in [from, to].

    `restricting_object` and each of `selected_values` is a `CaptureObjectDefinition`
    (a plain 4-tuple is accepted); an empty `selected_values` means all columns.
    """

    restricting_object: CaptureObjectDefinition
    from_value: Data
    to_value: Data
    selected_values: tuple[CaptureObjectDefinition, ...] = ()

    SELECTOR: ClassVar[int] = RANGE_DESCRIPTOR_SELECTOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "restricting_object", _capture_object(self.restricting_object))
        object.__setattr__(self, "selected_values", tuple(_capture_object(v) for v in self.selected_values))

    def to_data(self) -> Data:
        return Data.structure((
            self.restricting_object.to_data(),
            self.from_value,
            self.to_value,
            Data.array(v.to_data() for v in self.selected_values),
        ))

    @classmethod
    def from_data(cls, d: Data) -> "RangeDescriptor":
        restricting, from_value, to_value, selected = _fields(d, 4, "range_descriptor")
        if selected.type != DataType.ARRAY:
            raise _param_error("range_descriptor", f"selected_values must be an array, got {selected.type.name}")
        return cls(
            CaptureObjectDefinition.from_data(restricting),
            from_value,
            to_value,
            tuple(CaptureObjectDefinition.from_data(v) for v in selected.value),
        )

    def to_access_descriptor(self) -> SelectiveAccessDescriptor:
        return SelectiveAccessDescriptor(self.SELECTOR, self.to_data())


@dataclass(frozen=True, slots=True)
class EntryDescriptor:
    """entry_descriptor (access selector 2): rows from_entry..to_entry (1-based; 0 = to the last),
    columns from_selected_value..to_selected_value (1-based; 0 = to the last)."""

    from_entry: int
    to_entry: int
    from_selected_value: int = 1
    to_selected_value: int = 0

    SELECTOR: ClassVar[int] = ENTRY_DESCRIPTOR_SELECTOR

    def to_data(self) -> Data:
        return Data.structure((
            Data.double_long_unsigned(self.from_entry),
            Data.double_long_unsigned(self.to_entry),
            Data.long_unsigned(self.from_selected_value),
            Data.long_unsigned(self.to_selected_value),
        ))

    @classmethod
    def from_data(cls, d: Data) -> "EntryDescriptor":
        fields = _fields(d, 4, "entry_descriptor")
        return cls(*(_int_field(f, "entry_descriptor") for f in fields))

    def to_access_descriptor(self) -> SelectiveAccessDescriptor:
        return SelectiveAccessDescriptor(self.SELECTOR, self.to_data())
