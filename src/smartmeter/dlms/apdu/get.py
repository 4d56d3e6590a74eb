"""GET service APDUs: Get-Request [192] = 0xC0, Get-Response [196] = 0xC4 (Green Book §9.5)."""
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
    as_get_data_result,
    normalise_items,
    put_attribute_items,
    put_bool,
    put_count,
    put_enum,
    put_get_data_result,
    put_octet_string,
    put_optional_access,
    put_u8,
    put_u32,
    read_attribute_items,
    read_get_data_result,
    read_optional_access,
)
from smartmeter.errors import DecodeError, EncodeError

GET_REQUEST_TAG = 0xC0
GET_RESPONSE_TAG = 0xC4

__all__ = [
    "GET_REQUEST_TAG",
    "GET_RESPONSE_TAG",
    "GetRequestNormal",
    "GetRequestNext",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithDataBlock",
    "GetResponseWithList",
]


def _check_descriptor(d: object) -> CosemAttributeDescriptor:
    if not isinstance(d, CosemAttributeDescriptor):
        raise EncodeError(f"descriptor must be a CosemAttributeDescriptor, got {d!r}")
    return d


@dataclass(frozen=True, slots=True)
class GetRequestNormal(Apdu):
    """get-request-normal: one attribute, optionally with selective access."""

    invoke_id_and_priority: int
    descriptor: CosemAttributeDescriptor
    access_selection: SelectiveAccessDescriptor | None = None

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _check_descriptor(self.descriptor).encode(out)
        put_optional_access(out, self.access_selection)

    @classmethod
    def _decode_body(cls, r: Reader) -> "GetRequestNormal":
        return cls(r.u8("invoke-id-and-priority"), CosemAttributeDescriptor.decode(r), read_optional_access(r))


@dataclass(frozen=True, slots=True)
class GetRequestNext(InvokeAndBlockNumber):
    """get-request-next: asks for the block after `block_number` of a long GET."""

    invoke_id_and_priority: int
    block_number: int

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class GetRequestWithList(Apdu):
    """get-request-with-list: several attributes, each optionally with selective access."""

    invoke_id_and_priority: int
    items: tuple[AttributeItem, ...]

    TAG: ClassVar[int] = GET_REQUEST_TAG
    CHOICE: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", normalise_items(self.items))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_attribute_items(out, self.items)

    @classmethod
    def _decode_body(cls, r: Reader) -> "GetRequestWithList":
        return cls(r.u8("invoke-id-and-priority"), read_attribute_items(r))


@dataclass(frozen=True, slots=True)
class GetResponseNormal(Apdu):
    """get-response-normal: the value, or why there is none."""

    invoke_id_and_priority: int
    result: Data | DataAccessResult

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", as_get_data_result(self.result, "result"))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_get_data_result(out, self.result, "result")

    @classmethod
    def _decode_body(cls, r: Reader) -> "GetResponseNormal":
        return cls(r.u8("invoke-id-and-priority"), read_get_data_result(r, "result"))


@dataclass(frozen=True, slots=True)
class GetResponseWithDataBlock(Apdu):
    """get-response-with-datablock (DataBlock-G): exactly one of `raw_data` / `error` is set.

    `raw_data` is a slice of the A-XDR encoding of the whole result; the receiver
    concatenates the blocks and decodes once the last one arrived.
    """

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes | None = None
    error: DataAccessResult | None = None

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if self.error is not None:
            object.__setattr__(self, "error", as_enum(DataAccessResult, self.error, "error"))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_bool(out, self.last_block, "last_block")
        put_u32(out, self.block_number, "block_number")
        if (self.raw_data is None) == (self.error is None):
            raise EncodeError("exactly one of raw_data and error must be given")
        if self.raw_data is not None:
            out.append(0)
            put_octet_string(out, self.raw_data, "raw_data")
        else:
            out.append(1)
            put_enum(out, self.error, DataAccessResult, "error")

    @classmethod
    def _decode_body(cls, r: Reader) -> "GetResponseWithDataBlock":
        invoke = r.u8("invoke-id-and-priority")
        last_block = r.boolean("last-block")
        block_number = r.u32("block-number")
        at = r.pos
        choice = r.u8("result")
        if choice == 0:
            return cls(invoke, last_block, block_number, raw_data=r.octet_string("raw-data"))
        if choice == 1:
            return cls(invoke, last_block, block_number, error=r.enum(DataAccessResult, "data-access-result"))
        raise DecodeError(f"{r.what} result", at, f"DataBlock-G choice {choice} is not 0/1")


@dataclass(frozen=True, slots=True)
class GetResponseWithList(Apdu):
    """get-response-with-list: one Get-Data-Result per requested attribute, in order."""

    invoke_id_and_priority: int
    results: tuple[Data | DataAccessResult, ...]

    TAG: ClassVar[int] = GET_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(as_get_data_result(v, "results") for v in self.results))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_count(out, len(self.results))
        for v in self.results:
            put_get_data_result(out, v, "results")

    @classmethod
    def _decode_body(cls, r: Reader) -> "GetResponseWithList":
        invoke = r.u8("invoke-id-and-priority")
        n = r.count("results", 2)
        return cls(invoke, tuple(read_get_data_result(r, "results") for _ in range(n)))
