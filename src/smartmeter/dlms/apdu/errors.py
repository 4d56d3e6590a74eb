"""Error APDUs: Exception-Response [216] = 0xD8 and Confirmed-Service-Error [14] = 0x0E (Green Book §9.5).

    ExceptionResponse ::= SEQUENCE {
        state-error [0] IMPLICIT ENUMERATED { service-not-allowed (1), service-unknown (2) },
        service-error [1] CHOICE { operation-not-possible [1] NULL, service-not-supported [2] NULL,
            other-reason [3] NULL, pdu-too-long [4] NULL, deciphering-error [5] NULL,
            invocation-counter-error [6] IMPLICIT Unsigned32 } }
    ConfirmedServiceError ::= CHOICE { initiateError [1] ServiceError, getStatus [2], ... }
    ServiceError ::= CHOICE { application-reference [0] IMPLICIT ENUMERATED, ..., other [10] ... }
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from smartmeter.dlms.apdu.common import Apdu, Reader, as_enum, put_enum, put_u8, put_u32
from smartmeter.errors import EncodeError

EXCEPTION_RESPONSE_TAG = 0xD8
CONFIRMED_SERVICE_ERROR_TAG = 0x0E

__all__ = [
    "EXCEPTION_RESPONSE_TAG",
    "CONFIRMED_SERVICE_ERROR_TAG",
    "StateError",
    "ServiceError",
    "ExceptionResponse",
    "ConfirmedServiceErrorChoice",
    "ServiceErrorChoice",
    "ConfirmedServiceError",
]


class StateError(IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(IntEnum):
    """The exception-response service-error CHOICE."""

    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


@dataclass(frozen=True, slots=True)
class ExceptionResponse(Apdu):
    """`invocation_counter` is given exactly when service_error is INVOCATION_COUNTER_ERROR."""

    state_error: StateError
    service_error: ServiceError
    invocation_counter: int | None = None

    TAG: ClassVar[int] = EXCEPTION_RESPONSE_TAG

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_error", as_enum(StateError, self.state_error, "state_error"))
        object.__setattr__(self, "service_error", as_enum(ServiceError, self.service_error, "service_error"))

    def _encode_body(self, out: bytearray) -> None:
        put_enum(out, self.state_error, StateError, "state_error")
        put_enum(out, self.service_error, ServiceError, "service_error")
        if self.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            if self.invocation_counter is None:
                raise EncodeError("invocation-counter-error needs invocation_counter")
            put_u32(out, self.invocation_counter, "invocation_counter")
        elif self.invocation_counter is not None:
            raise EncodeError(f"{self.service_error.name} carries no invocation_counter")

    @classmethod
    def _decode_body(cls, r: Reader) -> "ExceptionResponse":
        state_error = r.enum(StateError, "state-error")
        service_error = r.enum(ServiceError, "service-error")
        counter = r.u32("invocation-counter") if service_error == ServiceError.INVOCATION_COUNTER_ERROR else None
        return cls(state_error, service_error, counter)


class ConfirmedServiceErrorChoice(IntEnum):
    INITIATE_ERROR = 1
    GET_STATUS = 2
    GET_NAME_LIST = 3
    GET_VARIABLE_ATTRIBUTE = 4
    READ = 5
    WRITE = 6
    GET_DATA_SET_ATTRIBUTE = 7
    GET_TI_ATTRIBUTE = 8
    CHANGE_SCOPE = 9
    START = 10
    STOP = 11
    RESUME = 12
    MAKE_USABLE = 13
    INITIATE_LOAD = 14
    LOAD_SEGMENT = 15
    TERMINATE_LOAD = 16
    INITIATE_UP_LOAD = 17
    UP_LOAD_SEGMENT = 18
    TERMINATE_UP_LOAD = 19


class ServiceErrorChoice(IntEnum):
    """The ServiceError CHOICE of a confirmed-service-error; each carries one ENUMERATED value."""

    APPLICATION_REFERENCE = 0
    HARDWARE_RESOURCE = 1
    VDE_STATE_ERROR = 2
    SERVICE = 3
    DEFINITION = 4
    ACCESS = 5
    INITIATE = 6
    LOAD_DATA_SET = 7
    CHANGE_SCOPE = 8
    TASK = 9
    OTHER = 10


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError(Apdu):
    """e.g. the AARE's answer to an unacceptable InitiateRequest:
    ConfirmedServiceError(INITIATE_ERROR, INITIATE, 1 = dlms-version-too-low)."""

    service: ConfirmedServiceErrorChoice
    error_type: ServiceErrorChoice
    error_value: int

    TAG: ClassVar[int] = CONFIRMED_SERVICE_ERROR_TAG

    def __post_init__(self) -> None:
        object.__setattr__(self, "service", as_enum(ConfirmedServiceErrorChoice, self.service, "service"))
        object.__setattr__(self, "error_type", as_enum(ServiceErrorChoice, self.error_type, "error_type"))

    def _encode_body(self, out: bytearray) -> None:
        put_enum(out, self.service, ConfirmedServiceErrorChoice, "service")
        put_enum(out, self.error_type, ServiceErrorChoice, "error_type")
        put_u8(out, self.error_value, "error_value")

    @classmethod
    def _decode_body(cls, r: Reader) -> "ConfirmedServiceError":
        return cls(
            r.enum(ConfirmedServiceErrorChoice, "service"),
            r.enum(ServiceErrorChoice, "error-type"),
            r.u8("error-value"),
        )
