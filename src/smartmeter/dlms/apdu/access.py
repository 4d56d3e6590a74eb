"""ACCESS service APDUs: Access-Request [217] = 0xD9, Access-Response [218] = 0xDA (Green Book §9.3, §9.5).

    Access-Request ::= SEQUENCE { long-invoke-id-and-priority Unsigned32, date-time OCTET STRING,
        access-request-body SEQUENCE { access-request-specification SEQUENCE OF Access-Request-Specification,
                                       access-request-list-of-data SEQUENCE OF Data } }
    Access-Response ::= SEQUENCE { long-invoke-id-and-priority Unsigned32, date-time OCTET STRING,
        access-response-body SEQUENCE {
            access-request-specification [0] SEQUENCE OF Access-Request-Specification OPTIONAL,
            access-response-list-of-data SEQUENCE OF Data,
            access-response-specification SEQUENCE OF Access-Response-Specification } }
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import (
    ActionResult,
    Apdu,
    CosemAttributeDescriptor,
    CosemMethodDescriptor,
    DataAccessResult,
    Reader,
    SelectiveAccessDescriptor,
    as_enum,
    put_count,
    put_data,
    put_enum,
    put_octet_string,
    put_u32,
)
from smartmeter.errors import EncodeError

ACCESS_REQUEST_TAG = 0xD9
ACCESS_RESPONSE_TAG = 0xDA

__all__ = [
    "ACCESS_REQUEST_TAG",
    "ACCESS_RESPONSE_TAG",
    "AccessRequestKind",
    "AccessResponseKind",
    "AccessRequestSpec",
    "AccessResponseSpec",
    "AccessRequest",
    "AccessResponse",
]


class AccessRequestKind(IntEnum):
    """Access-Request-Specification CHOICE tags."""

    GET = 1
    SET = 2
    ACTION = 3
    GET_WITH_SELECTION = 4
    SET_WITH_SELECTION = 5


class AccessResponseKind(IntEnum):
    """Access-Response-Specification CHOICE tags."""

    GET = 1
    SET = 2
    ACTION = 3


_WITH_SELECTION = (AccessRequestKind.GET_WITH_SELECTION, AccessRequestKind.SET_WITH_SELECTION)


@dataclass(frozen=True, slots=True)
class AccessRequestSpec:
    """One Access-Request-Specification.

    `descriptor` is a CosemMethodDescriptor for ACTION, a CosemAttributeDescriptor
    otherwise; `access_selection` is given exactly for the *_WITH_SELECTION kinds.
    """

    kind: AccessRequestKind
    descriptor: CosemAttributeDescriptor | CosemMethodDescriptor
    access_selection: SelectiveAccessDescriptor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", as_enum(AccessRequestKind, self.kind, "kind"))

    def encode(self, out: bytearray) -> None:
        want = CosemMethodDescriptor if self.kind == AccessRequestKind.ACTION else CosemAttributeDescriptor
        if not isinstance(self.descriptor, want):
            raise EncodeError(f"{self.kind.name} needs a {want.__name__}, got {self.descriptor!r}")
        out.append(self.kind)
        self.descriptor.encode(out)
        if self.kind in _WITH_SELECTION:
            if not isinstance(self.access_selection, SelectiveAccessDescriptor):
                raise EncodeError(f"{self.kind.name} needs an access_selection")
            self.access_selection.encode(out)
        elif self.access_selection is not None:
            raise EncodeError(f"{self.kind.name} carries no access_selection")

    @classmethod
    def decode(cls, r: Reader) -> "AccessRequestSpec":
        kind = r.enum(AccessRequestKind, "access-request-specification")
        if kind == AccessRequestKind.ACTION:
            return cls(kind, CosemMethodDescriptor.decode(r))
        descriptor = CosemAttributeDescriptor.decode(r)
        selection = SelectiveAccessDescriptor.decode(r) if kind in _WITH_SELECTION else None
        return cls(kind, descriptor, selection)


@dataclass(frozen=True, slots=True)
class AccessResponseSpec:
    """One Access-Response-Specification: a DataAccessResult for GET/SET, an ActionResult for ACTION."""

    kind: AccessResponseKind
    result: DataAccessResult | ActionResult

    def __post_init__(self) -> None:
        kind = as_enum(AccessResponseKind, self.kind, "kind")
        result_type = ActionResult if kind == AccessResponseKind.ACTION else DataAccessResult
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "result", as_enum(result_type, self.result, "result"))

    def encode(self, out: bytearray) -> None:
        out.append(self.kind)
        result_type = ActionResult if self.kind == AccessResponseKind.ACTION else DataAccessResult
        put_enum(out, self.result, result_type, "result")

    @classmethod
    def decode(cls, r: Reader) -> "AccessResponseSpec":
        kind = r.enum(AccessResponseKind, "access-response-specification")
        result_type = ActionResult if kind == AccessResponseKind.ACTION else DataAccessResult
        return cls(kind, r.enum(result_type, "result"))


def _put_request_specs(out: bytearray, specs) -> None:
    put_count(out, len(specs))
    for spec in specs:
        if not isinstance(spec, AccessRequestSpec):
            raise EncodeError(f"expected AccessRequestSpec, got {spec!r}")
        spec.encode(out)


def _read_request_specs(r: Reader) -> tuple[AccessRequestSpec, ...]:
    n = r.count("access-request-specification", 10)
    return tuple(AccessRequestSpec.decode(r) for _ in range(n))


def _put_data_list(out: bytearray, data) -> None:
    put_count(out, len(data))
    for v in data:
        put_data(out, v, "data")


def _read_data_list(r: Reader) -> tuple[Data, ...]:
    n = r.count("list-of-data")
    return tuple(r.data("data") for _ in range(n))


@dataclass(frozen=True, slots=True)
class AccessRequest(Apdu):
    """access-request: several GET/SET/ACTION specs executed in one exchange.

    `data` holds, per spec in order, the value to set / the method parameters
    (null-data for GETs, by convention one entry per spec). `date_time` is the raw
    OCTET STRING (empty = absent, else normally a 12-byte date-time).
    """

    long_invoke_id_and_priority: int
    date_time: bytes
    specs: tuple[AccessRequestSpec, ...]
    data: tuple[Data, ...]

    TAG: ClassVar[int] = ACCESS_REQUEST_TAG

    def __post_init__(self) -> None:
        object.__setattr__(self, "specs", tuple(self.specs))
        object.__setattr__(self, "data", tuple(self.data))

    def _encode_body(self, out: bytearray) -> None:
        put_u32(out, self.long_invoke_id_and_priority, "long_invoke_id_and_priority")
        put_octet_string(out, self.date_time, "date_time")
        _put_request_specs(out, self.specs)
        _put_data_list(out, self.data)

    @classmethod
    def _decode_body(cls, r: Reader) -> "AccessRequest":
        invoke = r.u32("long-invoke-id-and-priority")
        date_time = r.octet_string("date-time")
        specs = _read_request_specs(r)
        return cls(invoke, date_time, specs, _read_data_list(r))


@dataclass(frozen=True, slots=True)
class AccessResponse(Apdu):
    """access-response: returned data (per spec, null-data where none) and one result per spec.

    `request_specs` is the optional echo of the request's specifications (None = absent).
    """

    long_invoke_id_and_priority: int
    date_time: bytes
    data: tuple[Data, ...]
    results: tuple[AccessResponseSpec, ...]
    request_specs: tuple[AccessRequestSpec, ...] | None = None

    TAG: ClassVar[int] = ACCESS_RESPONSE_TAG

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(self.data))
        object.__setattr__(self, "results", tuple(self.results))
        if self.request_specs is not None:
            object.__setattr__(self, "request_specs", tuple(self.request_specs))

    def _encode_body(self, out: bytearray) -> None:
        put_u32(out, self.long_invoke_id_and_priority, "long_invoke_id_and_priority")
        put_octet_string(out, self.date_time, "date_time")
        if self.request_specs is None:
            out.append(0)
        else:
            out.append(1)
            _put_request_specs(out, self.request_specs)
        _put_data_list(out, self.data)
        put_count(out, len(self.results))
        for spec in self.results:
            if not isinstance(spec, AccessResponseSpec):
                raise EncodeError(f"expected AccessResponseSpec, got {spec!r}")
            spec.encode(out)

    @classmethod
    def _decode_body(cls, r: Reader) -> "AccessResponse":
        invoke = r.u32("long-invoke-id-and-priority")
        date_time = r.octet_string("date-time")
        request_specs = _read_request_specs(r) if r.present("access-request-specification") else None
        data = _read_data_list(r)
        n = r.count("access-response-specification", 2)
        results = tuple(AccessResponseSpec.decode(r) for _ in range(n))
        return cls(invoke, date_time, data, results, request_specs)

