"""SET service APDUs: Set-Request [193] = 0xC1, Set-Response [197] = 0xC5 (Green Book §9.5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import (
    InvokeAndBlockNumber,
    Apdu,
    AttributeItem,
    CosemAttributeDescriptor,
    DataAccessResult,
    Reader,
    SelectiveAccessDescriptor,
    as_enum,
    normalise_items,
    put_attribute_items,
    put_count,
    put_data,
    put_datablock_sa,
    put_enum,
    put_optional_access,
    put_u8,
    put_u32,
    read_attribute_items,
    read_datablock_sa,
    read_optional_access,
)
from smartmeter.errors import EncodeError

SET_REQUEST_TAG = 0xC1
SET_RESPONSE_TAG = 0xC5

__all__ = [
    "SET_REQUEST_TAG",
    "SET_RESPONSE_TAG",
    "SetRequestNormal",
    "SetRequestWithFirstDatablock",
    "SetRequestWithDatablock",
    "SetRequestWithList",
    "SetRequestWithListAndFirstDatablock",
    "SetResponseNormal",
    "SetResponseDatablock",
    "SetResponseLastDatablock",
    "SetResponseLastDatablockWithList",
    "SetResponseWithList",
]


def _check_descriptor(d: object) -> CosemAttributeDescriptor:
    if not isinstance(d, CosemAttributeDescriptor):
        raise EncodeError(f"descriptor must be a CosemAttributeDescriptor, got {d!r}")
    return d


def _results(values) -> tuple[DataAccessResult, ...]:
    return tuple(as_enum(DataAccessResult, v, "results") for v in values)


def _put_results(out: bytearray, results: tuple[DataAccessResult, ...]) -> None:
    put_count(out, len(results))
    for v in results:
        put_enum(out, v, DataAccessResult, "results")


def _read_results(r: Reader) -> tuple[DataAccessResult, ...]:
    n = r.count("results")
    return tuple(r.enum(DataAccessResult, "result") for _ in range(n))


@dataclass(frozen=True, slots=True)
class SetRequestNormal(Apdu):
    """set-request-normal: write one attribute (optionally with selective access)."""

    invoke_id_and_priority: int
    descriptor: CosemAttributeDescriptor
    access_selection: SelectiveAccessDescriptor | None
    value: Data

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _check_descriptor(self.descriptor).encode(out)
        put_optional_access(out, self.access_selection)
        put_data(out, self.value, "value")

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetRequestNormal":
        return cls(
            r.u8("invoke-id-and-priority"),
            CosemAttributeDescriptor.decode(r),
            read_optional_access(r),
            r.data("value"),
        )


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDatablock(Apdu):
    """set-request-with-first-datablock: the first block of a long write of one attribute."""

    invoke_id_and_priority: int
    descriptor: CosemAttributeDescriptor
    access_selection: SelectiveAccessDescriptor | None
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 2

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _check_descriptor(self.descriptor).encode(out)
        put_optional_access(out, self.access_selection)
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetRequestWithFirstDatablock":
        invoke = r.u8("invoke-id-and-priority")
        descriptor = CosemAttributeDescriptor.decode(r)
        selection = read_optional_access(r)
        return cls(invoke, descriptor, selection, *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class SetRequestWithDatablock(Apdu):
    """set-request-with-datablock: a later block of a long write."""

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 3

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetRequestWithDatablock":
        return cls(r.u8("invoke-id-and-priority"), *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class SetRequestWithList(Apdu):
    """set-request-with-list: attribute list and value list (two SEQUENCE OFs on the wire;
    the counts are not forced equal here, the server answers a mismatch)."""

    invoke_id_and_priority: int
    items: tuple[AttributeItem, ...]
    values: tuple[Data, ...]

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", normalise_items(self.items))
        object.__setattr__(self, "values", tuple(self.values))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_attribute_items(out, self.items)
        put_count(out, len(self.values))
        for v in self.values:
            put_data(out, v, "values")

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetRequestWithList":
        invoke = r.u8("invoke-id-and-priority")
        items = read_attribute_items(r)
        n = r.count("value-list")
        return cls(invoke, items, tuple(r.data("value") for _ in range(n)))


@dataclass(frozen=True, slots=True)
class SetRequestWithListAndFirstDatablock(Apdu):
    """set-request-with-list-and-first-datablock: attribute list, then the first block of the values."""

    invoke_id_and_priority: int
    items: tuple[AttributeItem, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = SET_REQUEST_TAG
    CHOICE: ClassVar[int] = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", normalise_items(self.items))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_attribute_items(out, self.items)
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetRequestWithListAndFirstDatablock":
        invoke = r.u8("invoke-id-and-priority")
        items = read_attribute_items(r)
        return cls(invoke, items, *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class SetResponseNormal(Apdu):
    invoke_id_and_priority: int
    result: DataAccessResult

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", as_enum(DataAccessResult, self.result, "result"))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_enum(out, self.result, DataAccessResult, "result")

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetResponseNormal":
        return cls(r.u8("invoke-id-and-priority"), r.enum(DataAccessResult, "result"))


@dataclass(frozen=True, slots=True)
class SetResponseDatablock(InvokeAndBlockNumber):
    """set-response-datablock: acknowledges block `block_number` of a long write."""

    invoke_id_and_priority: int
    block_number: int

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablock(Apdu):
    invoke_id_and_priority: int
    result: DataAccessResult
    block_number: int

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", as_enum(DataAccessResult, self.result, "result"))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_enum(out, self.result, DataAccessResult, "result")
        put_u32(out, self.block_number, "block_number")

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetResponseLastDatablock":
        return cls(r.u8("invoke-id-and-priority"), r.enum(DataAccessResult, "result"), r.u32("block-number"))


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablockWithList(Apdu):
    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]
    block_number: int

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", _results(self.results))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _put_results(out, self.results)
        put_u32(out, self.block_number, "block_number")

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetResponseLastDatablockWithList":
        invoke = r.u8("invoke-id-and-priority")
        results = _read_results(r)
        return cls(invoke, results, r.u32("block-number"))


@dataclass(frozen=True, slots=True)
class SetResponseWithList(Apdu):
    invoke_id_and_priority: int
    results: tuple[DataAccessResult, ...]

    TAG: ClassVar[int] = SET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", _results(self.results))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _put_results(out, self.results)

    @classmethod
    def _decode_body(cls, r: Reader) -> "SetResponseWithList":
        return cls(r.u8("invoke-id-and-priority"), _read_results(r))
