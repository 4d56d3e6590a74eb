"""xDLMS InitiateRequest / InitiateResponse and the initiate error (Green Book 9.5, A-XDR).

These travel inside the user-information field of the AARQ / AARE (possibly ciphered as
glo-initiate-request / glo-initiate-response; that wrapping is not done here).

A-XDR rules used below: an OPTIONAL component is preceded by a presence octet
(0x00 absent, 0x01 present); a component with a DEFAULT is preceded by 0x00 (default
value used) or 0x01 followed by the value. The conformance block is the one place where
DLMS keeps a BER encoding inside A-XDR: [APPLICATION 31] IMPLICIT BIT STRING (SIZE(24)),
i.e. `5F 1F 04 00` followed by the three value bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from smartmeter.errors import DecodeError, EncodeError, TruncatedError

INITIATE_REQUEST_TAG = 0x01
INITIATE_RESPONSE_TAG = 0x08
CONFIRMED_SERVICE_ERROR_TAG = 0x0E

# [APPLICATION 31] IMPLICIT BIT STRING, length 4, 0 unused bits.
CONFORMANCE_PREFIX = b"\x5f\x1f\x04\x00"

# The VAA name of a Logical-Name association (Green Book 9.5: 0x0007 for LN, 0xFA00 for SN).
VAA_NAME_LN = 0x0007
VAA_NAME_SN = 0xFA00


def _bit(n: int) -> int:
    """Conformance bit n, counted from the left of the 24-bit string."""
    return 1 << (23 - n)


class Conformance(IntFlag):
    """The xDLMS conformance block (Green Book 9.4.6.1). Bit n is bit n from the LEFT.

    The int value is the 24-bit string read as a big-endian number, so
    `Conformance(int.from_bytes(b, "big"))` is the block carried in three bytes `b`.
    """

    RESERVED_ZERO = _bit(0)
    GENERAL_PROTECTION = _bit(1)
    GENERAL_BLOCK_TRANSFER = _bit(2)
    READ = _bit(3)
    WRITE = _bit(4)
    UNCONFIRMED_WRITE = _bit(5)
    DELTA_VALUE_ENCODING = _bit(6)
    RESERVED_SEVEN = _bit(7)
    ATTRIBUTE0_SUPPORTED_WITH_SET = _bit(8)
    PRIORITY_MGMT_SUPPORTED = _bit(9)
    ATTRIBUTE0_SUPPORTED_WITH_GET = _bit(10)
    BLOCK_TRANSFER_WITH_GET_OR_READ = _bit(11)
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = _bit(12)
    BLOCK_TRANSFER_WITH_ACTION = _bit(13)
    MULTIPLE_REFERENCES = _bit(14)
    INFORMATION_REPORT = _bit(15)
    DATA_NOTIFICATION = _bit(16)
    ACCESS = _bit(17)
    PARAMETERIZED_ACCESS = _bit(18)
    GET = _bit(19)
    SET = _bit(20)
    SELECTIVE_ACCESS = _bit(21)
    EVENT_NOTIFICATION = _bit(22)
    ACTION = _bit(23)

    def to_bytes(self) -> bytes:  # type: ignore[override]
        """The three value bytes of the 24-bit conformance string."""
        return int(self).to_bytes(3, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Conformance:  # type: ignore[override]
        if len(data) != 3:
            raise DecodeError("conformance block", 0, f"need 3 bytes, got {len(data)}")
        return cls(int.from_bytes(data, "big"))

    def encode_ber(self) -> bytes:
        """`5F 1F 04 00 xx xx xx` as carried in the initiate PDUs."""
        return CONFORMANCE_PREFIX + self.to_bytes()


class InitiateErrorReason(IntEnum):
    """ServiceError `initiate` [6] values (Green Book 9.5)."""

    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_THE_VDE_HANDLER = 4


class _Reader:
    """Bounded cursor over an A-XDR encoding; every read checks the remaining bytes."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise TruncatedError(self.what, self.pos, f"need {n} bytes")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def presence(self) -> bool:
        at = self.pos
        flag = self.u8()
        if flag > 1:
            raise DecodeError(self.what, at, f"presence flag must be 0 or 1, got {flag}")
        return flag == 1

    def boolean(self) -> bool:
        # A-XDR BOOLEAN: 0x00 is FALSE, any other value TRUE (X.690 8.2 semantics).
        return self.u8() != 0

    def integer8(self) -> int:
        return int.from_bytes(self.take(1), "big", signed=True)

    def octet_string(self) -> bytes:
        length = self._length()
        return self.take(length)

    def _length(self) -> int:
        # A-XDR length: like a BER definite length.
        at = self.pos
        first = self.u8()
        if first < 0x80:
            return first
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DecodeError(self.what, at, f"invalid length octet 0x{first:02X}")
        return int.from_bytes(self.take(count), "big")

    def conformance(self) -> Conformance:
        at = self.pos
        if self.take(4) != CONFORMANCE_PREFIX:
            raise DecodeError(self.what, at, "conformance block must start 5F 1F 04 00")
        return Conformance(int.from_bytes(self.take(3), "big"))

    def expect_end(self) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(self.what, self.pos, f"{len(self.buf) - self.pos} trailing bytes")


def _axdr_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high:
        raise EncodeError(f"{name} must be in {low}..{high}, got {value!r}")


def _check_conformance(value: int) -> None:
    _check_range("conformance", int(value), 0, 0xFFFFFF)


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    """InitiateRequest ::= SEQUENCE (tag 0x01), sent by the client in the AARQ.

    `response_allowed=True` is the ASN.1 DEFAULT and is encoded as the single octet 0x00;
    a decoded explicit `01 01` therefore re-encodes to the shorter default form.
    """

    dedicated_key: bytes | None = None
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None
    proposed_dlms_version_number: int = 6
    proposed_conformance: Conformance = Conformance(0)
    client_max_receive_pdu_size: int = 0xFFFF

    TAG = INITIATE_REQUEST_TAG

    def to_bytes(self) -> bytes:
        out = bytearray([INITIATE_REQUEST_TAG])
        if self.dedicated_key is None:
            out.append(0)
        else:
            if not isinstance(self.dedicated_key, (bytes, bytearray, memoryview)):
                raise EncodeError(f"dedicated_key must be bytes, got {self.dedicated_key!r}")
            out.append(1)
            out += _axdr_length(len(self.dedicated_key)) + bytes(self.dedicated_key)
        out += b"\x00" if self.response_allowed else b"\x01\x00"
        if self.proposed_quality_of_service is None:
            out.append(0)
        else:
            _check_range("proposed_quality_of_service", self.proposed_quality_of_service, -128, 127)
            out += b"\x01" + self.proposed_quality_of_service.to_bytes(1, "big", signed=True)
        _check_range("proposed_dlms_version_number", self.proposed_dlms_version_number, 0, 255)
        out.append(self.proposed_dlms_version_number)
        _check_conformance(self.proposed_conformance)
        out += Conformance(int(self.proposed_conformance)).encode_ber()
        _check_range("client_max_receive_pdu_size", self.client_max_receive_pdu_size, 0, 0xFFFF)
        out += self.client_max_receive_pdu_size.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> InitiateRequest:
        r = _Reader(data, "InitiateRequest")
        tag = r.u8()
        if tag != INITIATE_REQUEST_TAG:
            raise DecodeError("InitiateRequest", 0, f"tag 0x{tag:02X} is not 0x01")
        dedicated_key = r.octet_string() if r.presence() else None
        response_allowed = r.boolean() if r.presence() else True
        qos = r.integer8() if r.presence() else None
        version = r.u8()
        conformance = r.conformance()
        pdu_size = r.u16()
        r.expect_end()
        return cls(dedicated_key, response_allowed, qos, version, conformance, pdu_size)


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    """InitiateResponse ::= SEQUENCE (tag 0x08), sent by the server in the AARE."""

    negotiated_quality_of_service: int | None = None
    negotiated_dlms_version_number: int = 6
    negotiated_conformance: Conformance = Conformance(0)
    server_max_receive_pdu_size: int = 0xFFFF
    vaa_name: int = VAA_NAME_LN

    TAG = INITIATE_RESPONSE_TAG

    def to_bytes(self) -> bytes:
        out = bytearray([INITIATE_RESPONSE_TAG])
        if self.negotiated_quality_of_service is None:
            out.append(0)
        else:
            _check_range(
                "negotiated_quality_of_service", self.negotiated_quality_of_service, -128, 127
            )
            out += b"\x01" + self.negotiated_quality_of_service.to_bytes(1, "big", signed=True)
        _check_range("negotiated_dlms_version_number", self.negotiated_dlms_version_number, 0, 255)
        out.append(self.negotiated_dlms_version_number)
        _check_conformance(self.negotiated_conformance)
        out += Conformance(int(self.negotiated_conformance)).encode_ber()
        _check_range("server_max_receive_pdu_size", self.server_max_receive_pdu_size, 0, 0xFFFF)
        out += self.server_max_receive_pdu_size.to_bytes(2, "big")
        _check_range("vaa_name", self.vaa_name, 0, 0xFFFF)
        out += self.vaa_name.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> InitiateResponse:
        r = _Reader(data, "InitiateResponse")
        tag = r.u8()
        if tag != INITIATE_RESPONSE_TAG:
            raise DecodeError("InitiateResponse", 0, f"tag 0x{tag:02X} is not 0x08")
        qos = r.integer8() if r.presence() else None
        version = r.u8()
        conformance = r.conformance()
        pdu_size = r.u16()
        vaa_name = r.u16()
        r.expect_end()
        return cls(qos, version, conformance, pdu_size, vaa_name)


@dataclass(frozen=True, slots=True)
class InitiateError:
    """confirmedServiceError (tag 0x0E) with the initiateError [1] / initiate [6] choice.

    This is what an AARE carries in user-information when the proposed xDLMS context is
    refused, e.g. `0E 01 06 01` for dlms-version-too-low.
    """

    reason: InitiateErrorReason

    TAG = CONFIRMED_SERVICE_ERROR_TAG

    def to_bytes(self) -> bytes:
        _check_range("reason", int(self.reason), 0, 255)
        return bytes([CONFIRMED_SERVICE_ERROR_TAG, 0x01, 0x06, int(self.reason)])

    @classmethod
    def from_bytes(cls, data: bytes) -> InitiateError:
        r = _Reader(data, "InitiateError")
        if r.u8() != CONFIRMED_SERVICE_ERROR_TAG:
            raise DecodeError("InitiateError", 0, "tag is not 0x0E")
        if r.u8() != 0x01:
            raise DecodeError("InitiateError", 1, "not the initiateError [1] choice")
        if r.u8() != 0x06:
            raise DecodeError("InitiateError", 2, "not the initiate [6] service error")
        value = r.u8()
        r.expect_end()
        try:
            reason = InitiateErrorReason(value)
        except ValueError:
            raise DecodeError("InitiateError", 3, f"unknown initiate error {value}") from None
        return cls(reason)


def decode_initiate(data: bytes) -> InitiateRequest | InitiateResponse | InitiateError:
    """Decode whichever plain initiate PDU `data` holds, by its tag."""
    if not data:
        raise TruncatedError("initiate PDU", 0, "empty")
    tag = data[0]
    if tag == INITIATE_REQUEST_TAG:
        return InitiateRequest.from_bytes(data)
    if tag == INITIATE_RESPONSE_TAG:
        return InitiateResponse.from_bytes(data)
    if tag == CONFIRMED_SERVICE_ERROR_TAG:
        return InitiateError.from_bytes(data)
    raise DecodeError("initiate PDU", 0, f"unexpected tag 0x{tag:02X}")
