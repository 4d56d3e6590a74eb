"""ACSE APDUs AARQ, AARE, RLRQ, RLRE (IEC 62056-5-3 / Green Book 9.4, BER encoded).

DLMS profile of the ISO 8650 ACSE, as the Green Book restricts it:

* application-context-name and mechanism-name are OBJECT IDENTIFIERs under
  2.16.756.5.8.1 and 2.16.756.5.8.2; only the last arc varies, so they are kept as ints.
* AP-titles and AE-qualifiers are carried as an OCTET STRING inside their explicit tag
  (`A6 0A 04 08 <system title>`).
* The authentication value uses the charstring [0] choice (`AC 0A 80 08 <value>`).
* user-information is an OCTET STRING inside the explicit [30] tag
  (`BE 10 04 0E <A-XDR xDLMS APDU>`); the bytes are kept raw so that ciphered
  glo-initiate PDUs pass through untouched.
* The invocation identifiers and implementation-information, which DLMS does not use,
  are skipped on decoding, as is any other well-formed context-specific component the
  decoder does not know.

Encoding follows the ASN.1 component order; decoding accepts the components in any
order (each at most once), checks every length against the enclosing construct and
raises DecodeError on anything malformed.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

from smartmeter.dlms.apdu import ber
from smartmeter.dlms.apdu.ber import CLASS_APPLICATION, CLASS_CONTEXT, CLASS_UNIVERSAL, Tlv
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63

# {joint-iso-ccitt(2) country(16) country-name(756) identified-organization(5) DLMS-UA(8)}
DLMS_UA_OID = (2, 16, 756, 5, 8)
APPLICATION_CONTEXT_OID_PREFIX = DLMS_UA_OID + (1,)
MECHANISM_NAME_OID_PREFIX = DLMS_UA_OID + (2,)

# The largest last arc we accept for a context / mechanism name; keeps values small ints.
_MAX_NAME_ARC = 0xFFFF


class ApplicationContextName(IntEnum):
    """Last arc of the application context name OID 2.16.756.5.8.1.x."""

    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_WITH_CIPHERING = 3
    SHORT_NAME_WITH_CIPHERING = 4


class MechanismName(IntEnum):
    """Last arc of the authentication mechanism name OID 2.16.756.5.8.2.x."""

    LOWEST = 0
    LOW = 1
    HIGH = 2
    HIGH_MD5 = 3
    HIGH_SHA1 = 4
    HIGH_GMAC = 5
    HIGH_SHA256 = 6
    HIGH_ECDSA = 7


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class ResultSource(IntEnum):
    """Which choice of Associate-source-diagnostic carries the diagnostic."""

    ACSE_SERVICE_USER = 1
    ACSE_SERVICE_PROVIDER = 2


class AcseServiceUserDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    CALLING_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 4
    CALLING_AE_QUALIFIER_NOT_RECOGNIZED = 5
    CALLING_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 6
    CALLED_AP_TITLE_NOT_RECOGNIZED = 7
    CALLED_AP_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 8
    CALLED_AE_QUALIFIER_NOT_RECOGNIZED = 9
    CALLED_AE_INVOCATION_IDENTIFIER_NOT_RECOGNIZED = 10
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProviderDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class ReleaseRequestReason(IntEnum):
    NORMAL = 0
    URGENT = 1
    USER_DEFINED = 30


class ReleaseResponseReason(IntEnum):
    NORMAL = 0
    NOT_FINISHED = 1
    USER_DEFINED = 30


# --------------------------------------------------------------------------- encoding


def _ctx(number: int, content: bytes, constructed: bool) -> bytes:
    return ber.encode_tlv(CLASS_CONTEXT, constructed, number, content)


def _universal(number: int, content: bytes) -> bytes:
    return ber.encode_tlv(CLASS_UNIVERSAL, False, number, content)


def _bytes_field(name: str, value: bytes | None) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise EncodeError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _name_oid(name: str, prefix: tuple[int, ...], arc: int) -> bytes:
    if not isinstance(arc, int) or not 0 <= arc <= _MAX_NAME_ARC:
        raise EncodeError(f"{name} must be in 0..{_MAX_NAME_ARC}, got {arc!r}")
    return ber.encode_oid_content(prefix + (int(arc),))


def _explicit_octet_string(number: int, name: str, value: bytes | None) -> bytes:
    value = _bytes_field(name, value)
    if value is None:
        return b""
    return _ctx(number, _universal(ber.TAG_OCTET_STRING, value), True)


def _explicit_oid(number: int, name: str, prefix: tuple[int, ...], arc: int) -> bytes:
    return _ctx(number, _universal(ber.TAG_OBJECT_IDENTIFIER, _name_oid(name, prefix, arc)), True)


def _implicit_oid(number: int, name: str, prefix: tuple[int, ...], arc: int | None) -> bytes:
    if arc is None:
        return b""
    return _ctx(number, _name_oid(name, prefix, arc), False)


def _explicit_integer(number: int, name: str, value: int) -> bytes:
    if not isinstance(value, int):
        raise EncodeError(f"{name} must be an int, got {value!r}")
    return _ctx(number, _universal(ber.TAG_INTEGER, ber.encode_integer_content(int(value))), True)


def _acse_requirements(number: int, authentication: bool) -> bytes:
    # ACSE-requirements ::= BIT STRING { authentication(0) }: `07 80` when set. Left out
    # when not set, as the Green Book does for the kernel-only case.
    if not authentication:
        return b""
    return _ctx(number, ber.encode_bit_string_content(1), False)


def _authentication_value(number: int, name: str, value: bytes | None) -> bytes:
    value = _bytes_field(name, value)
    if value is None:
        return b""
    return _ctx(number, _ctx(0, value, False), True)


def _protocol_version(value: int | None) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise EncodeError(f"protocol_version must be a 0..2**64-1 bit mask, got {value!r}")
    return _ctx(0, ber.encode_bit_string_content(int(value)), False)


def _user_information(value: bytes | None) -> bytes:
    return _explicit_octet_string(30, "user_information", value)


def _wrap(tag: int, parts: list[bytes]) -> bytes:
    content = b"".join(parts)
    return bytes([tag]) + ber.encode_length(len(content)) + content


# --------------------------------------------------------------------------- decoding


class _Components:
    """The components of one ACSE APDU, indexed by context tag number, read once each."""

    def __init__(self, buf: bytes, tlv: Tlv, what: str, known: dict[int, bool]) -> None:
        self.buf = buf
        self.what = what
        self.found: dict[int, Tlv] = {}
        pos = tlv.content_start
        while pos < tlv.end:
            item = ber.read_tlv(buf, pos, tlv.end, what)
            if item.tag_class != CLASS_CONTEXT:
                raise DecodeError(what, pos, "component is not context-specific")
            expected = known.get(item.number)
            if expected is not None:
                if item.constructed != expected:
                    form = "constructed" if expected else "primitive"
                    raise DecodeError(what, pos, f"component [{item.number}] must be {form}")
                if item.number in self.found:
                    raise DecodeError(what, pos, f"component [{item.number}] repeated")
                self.found[item.number] = item
            elif item.constructed:
                # Skipped, but its contents must still be well-formed BER.
                _check_well_formed(buf, item, what)
            pos = item.end

    def get(self, number: int) -> Tlv | None:
        return self.found.get(number)

    def require(self, number: int, name: str) -> Tlv:
        item = self.found.get(number)
        if item is None:
            raise DecodeError(self.what, None, f"mandatory {name} [{number}] missing")
        return item

    def inner(self, item: Tlv, universal: int, name: str) -> Tlv:
        """The single universal-class TLV that fills an explicitly tagged component."""
        inner = ber.read_tlv(self.buf, item.content_start, item.end, f"{self.what} {name}")
        if inner.end != item.end:
            raise DecodeError(self.what, inner.end, f"{name} has trailing bytes")
        if inner.identifier != (CLASS_UNIVERSAL, False, universal):
            raise DecodeError(self.what, inner.start, f"{name} has an unexpected type")
        return inner

    def octet_string(self, number: int, name: str) -> bytes | None:
        item = self.get(number)
        if item is None:
            return None
        inner = self.inner(item, ber.TAG_OCTET_STRING, name)
        return self.buf[inner.content_start : inner.end]

    def oid_arc(self, start: int, end: int, prefix: tuple[int, ...], name: str) -> int:
        arcs = ber.decode_oid_content(self.buf, start, end, f"{self.what} {name}")
        if len(arcs) != len(prefix) + 1 or arcs[: len(prefix)] != prefix:
            dotted = ".".join(map(str, arcs))
            raise DecodeError(self.what, start, f"{name} {dotted} is not a DLMS name")
        if arcs[-1] > _MAX_NAME_ARC:
            raise DecodeError(self.what, start, f"{name} arc {arcs[-1]} out of range")
        return arcs[-1]

    def explicit_oid(self, number: int, prefix: tuple[int, ...], name: str) -> int:
        inner = self.inner(self.require(number, name), ber.TAG_OBJECT_IDENTIFIER, name)
        return self.oid_arc(inner.content_start, inner.end, prefix, name)

    def implicit_oid(self, number: int, prefix: tuple[int, ...], name: str) -> int | None:
        item = self.get(number)
        if item is None:
            return None
        return self.oid_arc(item.content_start, item.end, prefix, name)

    def explicit_integer(self, item: Tlv, name: str) -> int:
        inner = self.inner(item, ber.TAG_INTEGER, name)
        return ber.decode_integer_content(self.buf, inner.content_start, inner.end, name)

    def bit_string(self, number: int, name: str) -> int | None:
        item = self.get(number)
        if item is None:
            return None
        return ber.decode_bit_string_content(self.buf, item.content_start, item.end, name)

    def acse_requirements(self, number: int, name: str) -> bool:
        bits = self.bit_string(number, name)
        return bool(bits is not None and bits & 1)

    def authentication_value(self, number: int, name: str) -> bytes | None:
        item = self.get(number)
        if item is None:
            return None
        inner = ber.read_tlv(self.buf, item.content_start, item.end, f"{self.what} {name}")
        if inner.end != item.end:
            raise DecodeError(self.what, inner.end, f"{name} has trailing bytes")
        if inner.identifier != (CLASS_CONTEXT, False, 0):
            # bitstring [1], external [2] and other [3] are not used by DLMS.
            raise DecodeError(self.what, inner.start, f"{name} is not the charstring choice")
        return self.buf[inner.content_start : inner.end]

    def implicit_integer(self, number: int, name: str) -> int | None:
        item = self.get(number)
        if item is None:
            return None
        return ber.decode_integer_content(self.buf, item.content_start, item.end, name)


_MAX_SKIP_DEPTH = 8


def _check_well_formed(buf: bytes, item: Tlv, what: str, depth: int = 0) -> None:
    """Walk the TLVs inside a skipped constructed component so malformed BER is refused."""
    if depth > _MAX_SKIP_DEPTH:
        raise DecodeError(what, item.start, "skipped component nested too deeply")
    pos = item.content_start
    while pos < item.end:
        child = ber.read_tlv(buf, pos, item.end, what)
        if child.constructed:
            _check_well_formed(buf, child, what, depth + 1)
        pos = child.end


def _outer(data: bytes, tag: int, what: str) -> Tlv:
    buf = bytes(data)
    tlv = ber.read_tlv(buf, 0, len(buf), what)
    if tlv.identifier != (CLASS_APPLICATION, True, tag & 0x1F):
        raise DecodeError(what, 0, f"tag 0x{buf[0]:02X} is not 0x{tag:02X}")
    if tlv.end != len(buf):
        raise DecodeError(what, tlv.end, f"{len(buf) - tlv.end} trailing bytes")
    return tlv


def _enum_or_int(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------- APDUs


@dataclass(frozen=True, slots=True)
class AARQ:
    """A-ASSOCIATE request ([APPLICATION 0], tag 0x60)."""

    application_context_name: int = ApplicationContextName.LOGICAL_NAME
    calling_ap_title: bytes | None = None
    calling_ae_qualifier: bytes | None = None
    called_ap_title: bytes | None = None
    called_ae_qualifier: bytes | None = None
    sender_acse_requirements: bool = False
    mechanism_name: int | None = None
    calling_authentication_value: bytes | None = None
    user_information: bytes | None = None
    protocol_version: int | None = None

    TAG = AARQ_TAG

    def to_bytes(self) -> bytes:
        return _wrap(
            AARQ_TAG,
            [
                _protocol_version(self.protocol_version),
                _explicit_oid(
                    1, "application_context_name", APPLICATION_CONTEXT_OID_PREFIX,
                    self.application_context_name,
                ),
                _explicit_octet_string(2, "called_ap_title", self.called_ap_title),
                _explicit_octet_string(3, "called_ae_qualifier", self.called_ae_qualifier),
                _explicit_octet_string(6, "calling_ap_title", self.calling_ap_title),
                _explicit_octet_string(7, "calling_ae_qualifier", self.calling_ae_qualifier),
                _acse_requirements(10, self.sender_acse_requirements),
                _implicit_oid(11, "mechanism_name", MECHANISM_NAME_OID_PREFIX, self.mechanism_name),
                _authentication_value(
                    12, "calling_authentication_value", self.calling_authentication_value
                ),
                _user_information(self.user_information),
            ],
        )

    # context tag number -> constructed? (components the decoder interprets)
    _KNOWN = {0: False, 1: True, 2: True, 3: True, 6: True, 7: True,
              10: False, 11: False, 12: True, 30: True}

    @classmethod
    def from_bytes(cls, data: bytes) -> AARQ:
        buf = bytes(data)
        c = _Components(buf, _outer(buf, AARQ_TAG, "AARQ"), "AARQ", cls._KNOWN)
        return cls(
            application_context_name=_enum_or_int(
                ApplicationContextName,
                c.explicit_oid(1, APPLICATION_CONTEXT_OID_PREFIX, "application-context-name"),
            ),
            called_ap_title=c.octet_string(2, "called-AP-title"),
            called_ae_qualifier=c.octet_string(3, "called-AE-qualifier"),
            calling_ap_title=c.octet_string(6, "calling-AP-title"),
            calling_ae_qualifier=c.octet_string(7, "calling-AE-qualifier"),
            sender_acse_requirements=c.acse_requirements(10, "sender-acse-requirements"),
            mechanism_name=_optional_enum(
                MechanismName, c.implicit_oid(11, MECHANISM_NAME_OID_PREFIX, "mechanism-name")
            ),
            calling_authentication_value=c.authentication_value(
                12, "calling-authentication-value"
            ),
            user_information=c.octet_string(30, "user-information"),
            protocol_version=c.bit_string(0, "protocol-version"),
        )


def _optional_enum(enum: type[IntEnum], value: int | None) -> int | None:
    return None if value is None else _enum_or_int(enum, value)


@dataclass(frozen=True, slots=True)
class AARE:
    """A-ASSOCIATE response ([APPLICATION 1], tag 0x61).

    `diagnostic` belongs to the acse-service-user or acse-service-provider choice, as
    `result_source` says; decoded values are returned as the matching IntEnum when known.
    """

    application_context_name: int = ApplicationContextName.LOGICAL_NAME
    result: int = AssociationResult.ACCEPTED
    result_source: int = ResultSource.ACSE_SERVICE_USER
    diagnostic: int = AcseServiceUserDiagnostic.NULL
    responding_ap_title: bytes | None = None
    responding_ae_qualifier: bytes | None = None
    responder_acse_requirements: bool = False
    mechanism_name: int | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None
    protocol_version: int | None = None

    TAG = AARE_TAG

    def to_bytes(self) -> bytes:
        if self.result_source not in (1, 2):
            raise EncodeError(f"result_source must be 1 or 2, got {self.result_source!r}")
        diagnostic = _explicit_integer(int(self.result_source), "diagnostic", self.diagnostic)
        return _wrap(
            AARE_TAG,
            [
                _protocol_version(self.protocol_version),
                _explicit_oid(
                    1, "application_context_name", APPLICATION_CONTEXT_OID_PREFIX,
                    self.application_context_name,
                ),
                _explicit_integer(2, "result", self.result),
                _ctx(3, diagnostic, True),
                _explicit_octet_string(4, "responding_ap_title", self.responding_ap_title),
                _explicit_octet_string(5, "responding_ae_qualifier", self.responding_ae_qualifier),
                _acse_requirements(8, self.responder_acse_requirements),
                _implicit_oid(9, "mechanism_name", MECHANISM_NAME_OID_PREFIX, self.mechanism_name),
                _authentication_value(
                    10, "responding_authentication_value", self.responding_authentication_value
                ),
                _user_information(self.user_information),
            ],
        )

    _KNOWN = {0: False, 1: True, 2: True, 3: True, 4: True, 5: True,
              8: False, 9: False, 10: True, 30: True}

    @classmethod
    def from_bytes(cls, data: bytes) -> AARE:
        buf = bytes(data)
        c = _Components(buf, _outer(buf, AARE_TAG, "AARE"), "AARE", cls._KNOWN)
        result_value = c.explicit_integer(c.require(2, "result"), "result")
        try:
            result = AssociationResult(result_value)
        except ValueError:
            raise DecodeError("AARE", None, f"unknown association result {result_value}") from None
        source_item = c.require(3, "result-source-diagnostic")
        choice = ber.read_tlv(buf, source_item.content_start, source_item.end, "AARE diagnostic")
        if choice.end != source_item.end:
            raise DecodeError("AARE", choice.end, "result-source-diagnostic has trailing bytes")
        if choice.tag_class != CLASS_CONTEXT or not choice.constructed or choice.number not in (1, 2):
            raise DecodeError("AARE", choice.start, "result-source-diagnostic choice not [1]/[2]")
        source = ResultSource(choice.number)
        diagnostic_value = c.explicit_integer(choice, "diagnostic")
        diagnostic_enum: type[IntEnum] = (
            AcseServiceUserDiagnostic
            if source is ResultSource.ACSE_SERVICE_USER
            else AcseServiceProviderDiagnostic
        )
        return cls(
            application_context_name=_enum_or_int(
                ApplicationContextName,
                c.explicit_oid(1, APPLICATION_CONTEXT_OID_PREFIX, "application-context-name"),
            ),
            result=result,
            result_source=source,
            diagnostic=_enum_or_int(diagnostic_enum, diagnostic_value),
            responding_ap_title=c.octet_string(4, "responding-AP-title"),
            responding_ae_qualifier=c.octet_string(5, "responding-AE-qualifier"),
            responder_acse_requirements=c.acse_requirements(8, "responder-acse-requirements"),
            mechanism_name=_optional_enum(
                MechanismName, c.implicit_oid(9, MECHANISM_NAME_OID_PREFIX, "mechanism-name")
            ),
            responding_authentication_value=c.authentication_value(
                10, "responding-authentication-value"
            ),
            user_information=c.octet_string(30, "user-information"),
            protocol_version=c.bit_string(0, "protocol-version"),
        )


def _release_reason(value: int | None) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, int):
        raise EncodeError(f"reason must be an int, got {value!r}")
    return _ctx(0, ber.encode_integer_content(int(value)), False)


_RELEASE_KNOWN = {0: False, 30: True}


@dataclass(frozen=True, slots=True)
class RLRQ:
    """A-RELEASE request ([APPLICATION 2], tag 0x62)."""

    reason: int | None = None
    user_information: bytes | None = None

    TAG = RLRQ_TAG

    def to_bytes(self) -> bytes:
        return _wrap(RLRQ_TAG, [_release_reason(self.reason), _user_information(self.user_information)])

    @classmethod
    def from_bytes(cls, data: bytes) -> RLRQ:
        buf = bytes(data)
        c = _Components(buf, _outer(buf, RLRQ_TAG, "RLRQ"), "RLRQ", _RELEASE_KNOWN)
        return cls(
            reason=_optional_enum(ReleaseRequestReason, c.implicit_integer(0, "reason")),
            user_information=c.octet_string(30, "user-information"),
        )


@dataclass(frozen=True, slots=True)
class RLRE:
    """A-RELEASE response ([APPLICATION 3], tag 0x63)."""

    reason: int | None = None
    user_information: bytes | None = None

    TAG = RLRE_TAG

    def to_bytes(self) -> bytes:
        return _wrap(RLRE_TAG, [_release_reason(self.reason), _user_information(self.user_information)])

    @classmethod
    def from_bytes(cls, data: bytes) -> RLRE:
        buf = bytes(data)
        c = _Components(buf, _outer(buf, RLRE_TAG, "RLRE"), "RLRE", _RELEASE_KNOWN)
        return cls(
            reason=_optional_enum(ReleaseResponseReason, c.implicit_integer(0, "reason")),
            user_information=c.octet_string(30, "user-information"),
        )


AcseApdu = AARQ | AARE | RLRQ | RLRE

_DECODERS: dict[int, Callable[[bytes], AcseApdu]] = {
    AARQ_TAG: AARQ.from_bytes,
    AARE_TAG: AARE.from_bytes,
    RLRQ_TAG: RLRQ.from_bytes,
    RLRE_TAG: RLRE.from_bytes,
}


def decode_acse(data: bytes) -> AcseApdu:
    """Decode one complete ACSE APDU (the whole of `data`), dispatching on its tag."""
    if not data:
        raise TruncatedError("ACSE APDU", 0, "empty")
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        raise DecodeError("ACSE APDU", 0, f"tag 0x{data[0]:02X} is not an ACSE APDU")
    return decoder(data)
