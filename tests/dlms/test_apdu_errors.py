"""Exception-Response (0xD8) and Confirmed-Service-Error (0x0E)."""
from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_apdu_common import APDU_STRATEGIES, gurux_tags, gurux_values  # noqa: E402

from smartmeter.dlms.apdu.errors import (  # noqa: E402
    ConfirmedServiceError,
    ConfirmedServiceErrorChoice,
    ExceptionResponse,
    ServiceError,
    ServiceErrorChoice,
    StateError,
)
from smartmeter.dlms.apdu.xdlms import decode_xdlms  # noqa: E402
from smartmeter.errors import DecodeError, EncodeError  # noqa: E402

VECTORS = [
    ("D8 01 01", ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)),
    ("D8 02 02", ExceptionResponse(StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)),
    ("D8 01 05", ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.DECIPHERING_ERROR)),
    ("D8 01 06 00000123", ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR, 0x123)),
    # The AARE's "DLMS version too low" answer: initiateError, initiate, dlms-version-too-low (1).
    ("0E 01 06 01", ConfirmedServiceError(ConfirmedServiceErrorChoice.INITIATE_ERROR, ServiceErrorChoice.INITIATE, 1)),
    ("0E 05 05 03", ConfirmedServiceError(ConfirmedServiceErrorChoice.READ, ServiceErrorChoice.ACCESS, 3)),
]


@pytest.mark.parametrize("hexstr,apdu", VECTORS)
def test_known_encodings(hexstr, apdu):
    b = bytes.fromhex(hexstr.replace(" ", ""))
    assert apdu.to_bytes() == b
    assert type(apdu).from_bytes(b) == apdu
    assert decode_xdlms(b) == apdu


def test_enum_values():
    assert [e.value for e in ServiceError] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in StateError] == [1, 2]
    assert [e.value for e in ConfirmedServiceErrorChoice] == list(range(1, 20))
    assert [e.value for e in ServiceErrorChoice] == list(range(0, 11))


@pytest.mark.parametrize("bad", [
    ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR),
    ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON, 5),
    ConfirmedServiceError(1, 6, 256),
])
def test_unencodable(bad):
    with pytest.raises(EncodeError):
        bad.to_bytes()


@pytest.mark.parametrize("hexstr", ["D8 03 01", "D8 01 07", "D8 01 06 0000", "D8 01", "0E 00 06 01", "0E 01 0B 01",
                                    "0E 01 06"])
def test_malformed(hexstr):
    with pytest.raises(DecodeError):
        decode_xdlms(bytes.fromhex(hexstr.replace(" ", "")))


@pytest.mark.parametrize("cls", [ExceptionResponse, ConfirmedServiceError])
def test_round_trip(cls):
    @given(APDU_STRATEGIES[cls])
    def check(apdu):
        assert cls.from_bytes(apdu.to_bytes()) == apdu
        assert decode_xdlms(apdu.to_bytes()) == apdu

    check()


def test_gurux_reads_our_error_apdus():
    b = ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE).to_bytes()
    assert gurux_tags(b)[:1] == ["ExceptionResponse"]
    assert gurux_values(b, "StateError") == ["ServiceNotAllowed"]
    assert gurux_values(b, "ServiceError") == ["OperationNotPossible"]

    b = ConfirmedServiceError(ConfirmedServiceErrorChoice.INITIATE_ERROR, ServiceErrorChoice.INITIATE, 1).to_bytes()
    assert gurux_tags(b)[:1] == ["ConfirmedServiceError"]
    assert gurux_values(b, "Service") == ["01"]
    assert gurux_values(b, "Initiate") == ["DlmsVersionTooLow"]


def test_dlms_cosem_parses_our_error_apdus():
    from dlms_cosem import enumerations
    from dlms_cosem.protocol import xdlms

    b = ExceptionResponse(StateError.SERVICE_UNKNOWN, ServiceError.INVOCATION_COUNTER_ERROR, 0x01020304).to_bytes()
    theirs = xdlms.ExceptionResponse.from_bytes(b)
    assert theirs.state_error == enumerations.StateException.SERVICE_UNKNOWN
    assert theirs.service_error == enumerations.ServiceException.INVOCATION_COUNTER_ERROR
    assert theirs.invocation_counter_data == 0x01020304

    b = ConfirmedServiceError(ConfirmedServiceErrorChoice.INITIATE_ERROR, ServiceErrorChoice.INITIATE, 1).to_bytes()
    theirs = xdlms.ConfirmedServiceError.from_bytes(b)
    assert theirs.error == enumerations.InitiateError.DLMS_VERSION_TOO_LOW
    assert theirs.to_bytes() == b
