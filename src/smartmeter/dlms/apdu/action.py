"""ACTION service APDUs: Action-Request [195] = 0xC3, Action-Response [199] = 0xC7 (Green Book §9.5)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import (
    InvokeAndBlockNumber,
    ActionResult,
    Apdu,
    CosemMethodDescriptor,
    DataAccessResult,
    Reader,
    as_enum,
    as_get_data_result,
    put_count,
    put_data,
    put_datablock_sa,
    put_enum,
    put_get_data_result,
    put_u8,
    put_u32,
    read_datablock_sa,
    read_get_data_result,
)
from smartmeter.errors import DecodeError, EncodeError

ACTION_REQUEST_TAG = 0xC3
ACTION_RESPONSE_TAG = 0xC7

__all__ = [
    "ACTION_REQUEST_TAG",
    "ACTION_RESPONSE_TAG",
    "ActionRequestNormal",
    "ActionRequestNextPblock",
    "ActionRequestWithList",
    "ActionRequestWithFirstPblock",
    "ActionRequestWithListAndFirstPblock",
    "ActionRequestWithPblock",
    "ActionResponseNormal",
    "ActionResponseWithPblock",
    "ActionResponseWithList",
    "ActionResponseNextPblock",
]

ReturnData = Data | DataAccessResult | None


def _check_descriptor(d: object) -> CosemMethodDescriptor:
    if not isinstance(d, CosemMethodDescriptor):
        raise EncodeError(f"descriptor must be a CosemMethodDescriptor, got {d!r}")
    return d


def _put_descriptors(out: bytearray, descriptors) -> None:
    put_count(out, len(descriptors))
    for d in descriptors:
        _check_descriptor(d).encode(out)


def _read_descriptors(r: Reader) -> tuple[CosemMethodDescriptor, ...]:
    n = r.count("cosem-method-descriptor-list", 9)
    return tuple(CosemMethodDescriptor.decode(r) for _ in range(n))


def _put_optional_data(out: bytearray, v: Data | None, field: str) -> None:
    if v is None:
        out.append(0)
    else:
        out.append(1)
        put_data(out, v, field)


# Action-Response-With-Optional-Data ::= SEQUENCE { result Action-Result,
#                                                   return-parameters Get-Data-Result OPTIONAL }
def _put_response(out: bytearray, result: ActionResult, return_data: ReturnData) -> None:
    put_enum(out, result, ActionResult, "result")
    if return_data is None:
        out.append(0)
    else:
        out.append(1)
        put_get_data_result(out, return_data, "return_data")


def _read_response(r: Reader) -> tuple[ActionResult, ReturnData]:
    result = r.enum(ActionResult, "result")
    return_data = read_get_data_result(r, "return-parameters") if r.present("return-parameters") else None
    return result, return_data


def _as_return_data(v: object) -> ReturnData:
    return None if v is None else as_get_data_result(v, "return_data")


@dataclass(frozen=True, slots=True)
class ActionRequestNormal(Apdu):
    """action-request-normal: invoke one method, with optional parameters."""

    invoke_id_and_priority: int
    descriptor: CosemMethodDescriptor
    parameters: Data | None = None

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 1

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _check_descriptor(self.descriptor).encode(out)
        _put_optional_data(out, self.parameters, "parameters")

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionRequestNormal":
        invoke = r.u8("invoke-id-and-priority")
        descriptor = CosemMethodDescriptor.decode(r)
        parameters = r.data("method-invocation-parameters") if r.present("method-invocation-parameters") else None
        return cls(invoke, descriptor, parameters)


@dataclass(frozen=True, slots=True)
class ActionRequestNextPblock(InvokeAndBlockNumber):
    """action-request-next-pblock: asks for the next block of long return parameters."""

    invoke_id_and_priority: int
    block_number: int

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class ActionRequestWithList(Apdu):
    """action-request-with-list: (descriptor, parameters) pairs.

    The wire carries a descriptor list and a *non-optional* parameter list (SEQUENCE OF
    Data), so a missing parameter is sent as null-data; `None` is normalised to
    `Data.null()` here. A decoded request whose two lists differ in length is rejected.
    """

    invoke_id_and_priority: int
    items: tuple[tuple[CosemMethodDescriptor, Data | None], ...]

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 3

    def __post_init__(self) -> None:
        items = []
        for item in self.items:
            try:
                descriptor, parameters = item
            except (TypeError, ValueError):
                raise EncodeError(f"list item must be (descriptor, parameters), got {item!r}") from None
            items.append((descriptor, Data.null() if parameters is None else parameters))
        object.__setattr__(self, "items", tuple(items))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _put_descriptors(out, [d for d, _ in self.items])
        put_count(out, len(self.items))
        for _, parameters in self.items:
            put_data(out, parameters, "parameters")

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionRequestWithList":
        invoke = r.u8("invoke-id-and-priority")
        descriptors = _read_descriptors(r)
        at = r.pos
        n = r.count("method-invocation-parameters")
        if n != len(descriptors):
            raise DecodeError(
                f"{r.what} method-invocation-parameters", at,
                f"{n} parameters for {len(descriptors)} method descriptors",
            )
        return cls(invoke, tuple((d, r.data("parameters")) for d in descriptors))


@dataclass(frozen=True, slots=True)
class ActionRequestWithFirstPblock(Apdu):
    """action-request-with-first-pblock: first block of long method parameters."""

    invoke_id_and_priority: int
    descriptor: CosemMethodDescriptor
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 4

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _check_descriptor(self.descriptor).encode(out)
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionRequestWithFirstPblock":
        invoke = r.u8("invoke-id-and-priority")
        descriptor = CosemMethodDescriptor.decode(r)
        return cls(invoke, descriptor, *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class ActionRequestWithListAndFirstPblock(Apdu):
    """action-request-with-list-and-first-pblock: method list, then the first parameter block."""

    invoke_id_and_priority: int
    descriptors: tuple[CosemMethodDescriptor, ...]
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "descriptors", tuple(self.descriptors))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _put_descriptors(out, self.descriptors)
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionRequestWithListAndFirstPblock":
        invoke = r.u8("invoke-id-and-priority")
        descriptors = _read_descriptors(r)
        return cls(invoke, descriptors, *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class ActionRequestWithPblock(Apdu):
    """action-request-with-pblock: a later block of long method parameters."""

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = ACTION_REQUEST_TAG
    CHOICE: ClassVar[int] = 6

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionRequestWithPblock":
        return cls(r.u8("invoke-id-and-priority"), *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class ActionResponseNormal(Apdu):
    """action-response-normal: the result and, optionally, return parameters (data or an error)."""

    invoke_id_and_priority: int
    result: ActionResult
    return_data: ReturnData = None

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", as_enum(ActionResult, self.result, "result"))
        object.__setattr__(self, "return_data", _as_return_data(self.return_data))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        _put_response(out, self.result, self.return_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionResponseNormal":
        invoke = r.u8("invoke-id-and-priority")
        return cls(invoke, *_read_response(r))


@dataclass(frozen=True, slots=True)
class ActionResponseWithPblock(Apdu):
    """action-response-with-pblock: a block of long return parameters."""

    invoke_id_and_priority: int
    last_block: bool
    block_number: int
    raw_data: bytes

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 2

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_datablock_sa(out, self.last_block, self.block_number, self.raw_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionResponseWithPblock":
        return cls(r.u8("invoke-id-and-priority"), *read_datablock_sa(r))


@dataclass(frozen=True, slots=True)
class ActionResponseWithList(Apdu):
    """action-response-with-list: (result, return data) per invoked method, in order."""

    invoke_id_and_priority: int
    results: tuple[tuple[ActionResult, ReturnData], ...]

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 3

    def __post_init__(self) -> None:
        results = []
        for item in self.results:
            try:
                result, return_data = item
            except (TypeError, ValueError):
                raise EncodeError(f"list item must be (result, return_data), got {item!r}") from None
            results.append((as_enum(ActionResult, result, "result"), _as_return_data(return_data)))
        object.__setattr__(self, "results", tuple(results))

    def _encode_body(self, out: bytearray) -> None:
        put_u8(out, self.invoke_id_and_priority, "invoke_id_and_priority")
        put_count(out, len(self.results))
        for result, return_data in self.results:
            _put_response(out, result, return_data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "ActionResponseWithList":
        invoke = r.u8("invoke-id-and-priority")
        n = r.count("list-of-responses", 2)
        return cls(invoke, tuple(_read_response(r) for _ in range(n)))


@dataclass(frozen=True, slots=True)
class ActionResponseNextPblock(InvokeAndBlockNumber):
    """action-response-next-pblock: acknowledges a parameter block, asks for the next."""

    invoke_id_and_priority: int
    block_number: int

    TAG: ClassVar[int] = ACTION_RESPONSE_TAG
    CHOICE: ClassVar[int] = 4

