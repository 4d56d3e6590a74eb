"""Protected xDLMS APDUs (Green Book 9.5, companion standard §3.3.1): codecs only.

Service-specific ciphering (one tag per service, key given by the tag):

    glo-/ded-xxx ::= OCTET STRING   -- SC || IC || ciphertext || tag

    glo: initiateRequest 0x21, initiateResponse 0x28, confirmedServiceError 0x2E,
         get-request 0xC8, set-request 0xC9, event-notification 0xCA, action-request 0xCB,
         get-response 0xCC, set-response 0xCD, action-response 0xCF
    ded: initiateRequest 0x41, initiateResponse 0x48, confirmedServiceError 0x4E,
         get-request 0xD0, set-request 0xD1, event-notification 0xD2, action-request 0xD3,
         get-response 0xD4, set-response 0xD5, action-response 0xD7
    (tags as in gurux_dlms.enums.Command and the Green Book xDLMS-APDU CHOICE)

General protection:

    general-glo-ciphering [219] 0xDB / general-ded-ciphering [220] 0xDC ::= SEQUENCE {
        system-title OCTET STRING, ciphered-content OCTET STRING }
    general-ciphering [221] 0xDD ::= SEQUENCE {
        transaction-id OCTET STRING, originator-system-title OCTET STRING,
        recipient-system-title OCTET STRING, date-time OCTET STRING,
        other-information OCTET STRING, key-info Key-Info OPTIONAL,
        ciphered-content OCTET STRING }
      Key-Info ::= CHOICE { identified-key [0] key-id ENUMERATED,
                            wrapped-key [1] SEQUENCE { kek-id ENUMERATED, key-ciphered-data OCTET STRING },
                            agreed-key [2] SEQUENCE { key-parameters OCTET STRING, key-ciphered-data OCTET STRING } }
    general-signing [223] 0xDF ::= SEQUENCE {
        transaction-id, originator-system-title, recipient-system-title, date-time,
        other-information, content, signature  -- all OCTET STRING }

ciphered-content is SC || IC || ciphertext || tag (`ProtectedContent`). date-time is
empty or a 12-byte COSEM date-time.

What the protection covers (followed from two independent implementations, gurux-dlms
GXDLMSChippering.getAuthenticatedData / gurux.dlms.java GXSecure.decryptAesGcm and
EnergyICT/Connexo SecurityContext.applyGeneralSigning/unwrapGeneralSigning, which agree):

* general-ciphering AAD = SC || AK || the A-XDR encoding of transaction-id ..
  other-information (each with its length byte), i.e. `GeneralCiphering.header_bytes()`;
  key-info is not covered;
* the general-signing signature covers the same five encoded fields followed by the
  content bytes *without* the content's length (`GeneralSigning.signed_data()`); the
  tag byte 0xDF is covered by neither.

Decoders are total: any input gives an APDU or a DecodeError.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Union

from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.apdu.common import Apdu, Reader, put_octet_string
from smartmeter.dlms.security import signing
from smartmeter.dlms.security.suites import (
    ProtectedContent,
    SecurityControlLike,
    protect_content,
    unprotect_content,
)
from smartmeter.errors import DecodeError, EncodeError

__all__ = [
    "ServiceSpecificCiphered",
    "GloInitiateRequest", "GloInitiateResponse", "GloConfirmedServiceError",
    "GloGetRequest", "GloSetRequest", "GloEventNotification", "GloActionRequest",
    "GloGetResponse", "GloSetResponse", "GloActionResponse",
    "DedInitiateRequest", "DedInitiateResponse", "DedConfirmedServiceError",
    "DedGetRequest", "DedSetRequest", "DedEventNotification", "DedActionRequest",
    "DedGetResponse", "DedSetResponse", "DedActionResponse",
    "GeneralGloCiphering", "GeneralDedCiphering",
    "KeyInfoKind", "IdentifiedKeyId", "IdentifiedKey", "WrappedKey", "AgreedKey", "KeyInfo",
    "GeneralCiphering", "GeneralSigning",
    "CipheredApdu", "CIPHERED_APDU_CLASSES", "CIPHERED_TAGS", "decode_ciphered",
    "GLO_TAG_FOR_PLAIN", "DED_TAG_FOR_PLAIN",
]

DATE_TIME_LENGTH = 12


def _protected_content(raw: bytes, r: Reader, field: str, at: int) -> ProtectedContent:
    if len(raw) < ProtectedContent.HEADER_LENGTH:
        raise DecodeError(f"{r.what} {field}", at, f"{len(raw)} bytes cannot hold SC and IC")
    return ProtectedContent.from_bytes(raw)


def _content_bytes(security_control: int, invocation_counter: int, ciphertext: bytes) -> bytes:
    # ProtectedContent validates the three fields (SecurityEncodeError is an EncodeError).
    return ProtectedContent(security_control, invocation_counter, ciphertext).to_bytes()


# ---------------------------------------------------------------------------------------
# Service-specific glo-/ded- ciphering
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSpecificCiphered(Apdu):
    """TAG, then OCTET STRING (SC || IC || ciphertext || tag). `ciphertext` includes the tag."""

    security_control: int
    invocation_counter: int
    ciphertext: bytes

    TAG: ClassVar[int] = -1
    DEDICATED: ClassVar[bool] = False

    @property
    def content(self) -> ProtectedContent:
        return ProtectedContent(self.security_control, self.invocation_counter, self.ciphertext)

    def _encode_body(self, out: bytearray) -> None:
        put_octet_string(out, _content_bytes(self.security_control, self.invocation_counter, self.ciphertext),
                         "ciphered content")

    @classmethod
    def _decode_body(cls, r: Reader):
        at = r.pos
        content = _protected_content(r.octet_string("ciphered content"), r, "ciphered content", at)
        return cls(content.security_control, content.invocation_counter, content.payload)

    @classmethod
    def protect(
        cls, sc: SecurityControlLike, key_ek: bytes, key_ak: bytes | None, system_title: bytes, counter: int,
        plaintext: bytes,
    ):
        """Protect `plaintext` (a plain APDU) with the sender's system title and counter.

        For ded- APDUs `key_ek` is the dedicated key; for glo- the global unicast key.
        """
        content = ProtectedContent.from_bytes(protect_content(sc, key_ek, key_ak, system_title, counter, plaintext))
        return cls(content.security_control, content.invocation_counter, content.payload)

    def unprotect(self, key_ek: bytes, key_ak: bytes | None, system_title: bytes, **policy) -> bytes:
        """The plain APDU; `system_title` is the sender's. Runs no replay check — use
        `frame_counter.open_protected(window, apdu.content, ...)` on a server."""
        return unprotect_content(self.content, key_ek, key_ak, system_title, **policy)[1]


def _service_class(name: str, tag: int, dedicated: bool, doc: str) -> type[ServiceSpecificCiphered]:
    cls = dataclass(frozen=True, slots=True)(
        type(name, (ServiceSpecificCiphered,), {"TAG": tag, "DEDICATED": dedicated, "__doc__": doc,
                                               "__module__": __name__, "__qualname__": name,
                                               "__annotations__": {}})
    )
    return cls


GloInitiateRequest = _service_class("GloInitiateRequest", 0x21, False, "glo-initiateRequest [33]")
GloInitiateResponse = _service_class("GloInitiateResponse", 0x28, False, "glo-initiateResponse [40]")
GloConfirmedServiceError = _service_class("GloConfirmedServiceError", 0x2E, False, "glo-confirmedServiceError [46]")
GloGetRequest = _service_class("GloGetRequest", 0xC8, False, "glo-get-request [200]")
GloSetRequest = _service_class("GloSetRequest", 0xC9, False, "glo-set-request [201]")
GloEventNotification = _service_class("GloEventNotification", 0xCA, False, "glo-event-notification-request [202]")
GloActionRequest = _service_class("GloActionRequest", 0xCB, False, "glo-action-request [203]")
GloGetResponse = _service_class("GloGetResponse", 0xCC, False, "glo-get-response [204]")
GloSetResponse = _service_class("GloSetResponse", 0xCD, False, "glo-set-response [205]")
GloActionResponse = _service_class("GloActionResponse", 0xCF, False, "glo-action-response [207]")
DedInitiateRequest = _service_class("DedInitiateRequest", 0x41, True, "ded-initiateRequest [65]")
DedInitiateResponse = _service_class("DedInitiateResponse", 0x48, True, "ded-initiateResponse [72]")
DedConfirmedServiceError = _service_class("DedConfirmedServiceError", 0x4E, True, "ded-confirmedServiceError [78]")
DedGetRequest = _service_class("DedGetRequest", 0xD0, True, "ded-get-request [208]")
DedSetRequest = _service_class("DedSetRequest", 0xD1, True, "ded-set-request [209]")
DedEventNotification = _service_class("DedEventNotification", 0xD2, True, "ded-event-notification-request [210]")
DedActionRequest = _service_class("DedActionRequest", 0xD3, True, "ded-action-request [211]")
DedGetResponse = _service_class("DedGetResponse", 0xD4, True, "ded-get-response [212]")
DedSetResponse = _service_class("DedSetResponse", 0xD5, True, "ded-set-response [213]")
DedActionResponse = _service_class("DedActionResponse", 0xD7, True, "ded-action-response [215]")

# Plain APDU tag -> the service-specific ciphered class that carries it.
GLO_TAG_FOR_PLAIN: dict[int, type[ServiceSpecificCiphered]] = {
    0x01: GloInitiateRequest, 0x08: GloInitiateResponse, 0x0E: GloConfirmedServiceError,
    0xC0: GloGetRequest, 0xC1: GloSetRequest, 0xC2: GloEventNotification, 0xC3: GloActionRequest,
    0xC4: GloGetResponse, 0xC5: GloSetResponse, 0xC7: GloActionResponse,
}
DED_TAG_FOR_PLAIN: dict[int, type[ServiceSpecificCiphered]] = {
    0x01: DedInitiateRequest, 0x08: DedInitiateResponse, 0x0E: DedConfirmedServiceError,
    0xC0: DedGetRequest, 0xC1: DedSetRequest, 0xC2: DedEventNotification, 0xC3: DedActionRequest,
    0xC4: DedGetResponse, 0xC5: DedSetResponse, 0xC7: DedActionResponse,
}


# ---------------------------------------------------------------------------------------
# general-glo-ciphering / general-ded-ciphering
# ---------------------------------------------------------------------------------------


def _check_octets(value: object, field: str) -> bytes:
    if not isinstance(value, bytes):
        raise EncodeError(f"{field} must be bytes, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class _GeneralGloDed(Apdu):
    system_title: bytes
    security_control: int
    invocation_counter: int
    ciphertext: bytes

    @property
    def content(self) -> ProtectedContent:
        return ProtectedContent(self.security_control, self.invocation_counter, self.ciphertext)

    def _encode_body(self, out: bytearray) -> None:
        put_octet_string(out, _check_octets(self.system_title, "system_title"), "system_title")
        put_octet_string(out, _content_bytes(self.security_control, self.invocation_counter, self.ciphertext),
                         "ciphered content")

    @classmethod
    def _decode_body(cls, r: Reader):
        system_title = r.octet_string("system-title")
        at = r.pos
        content = _protected_content(r.octet_string("ciphered-content"), r, "ciphered-content", at)
        return cls(system_title, content.security_control, content.invocation_counter, content.payload)

    @classmethod
    def protect(
        cls, sc: SecurityControlLike, key_ek: bytes, key_ak: bytes | None, system_title: bytes, counter: int,
        plaintext: bytes,
    ):
        content = ProtectedContent.from_bytes(protect_content(sc, key_ek, key_ak, system_title, counter, plaintext))
        return cls(bytes(system_title), content.security_control, content.invocation_counter, content.payload)

    def unprotect(self, key_ek: bytes, key_ak: bytes | None, **policy) -> bytes:
        """The plain APDU, using the system title carried in the APDU for the IV."""
        return unprotect_content(self.content, key_ek, key_ak, self.system_title, **policy)[1]


@dataclass(frozen=True, slots=True)
class GeneralGloCiphering(_GeneralGloDed):
    TAG: ClassVar[int] = 0xDB


@dataclass(frozen=True, slots=True)
class GeneralDedCiphering(_GeneralGloDed):
    TAG: ClassVar[int] = 0xDC


# ---------------------------------------------------------------------------------------
# general-ciphering
# ---------------------------------------------------------------------------------------


class KeyInfoKind(IntEnum):
    IDENTIFIED_KEY = 0
    WRAPPED_KEY = 1
    AGREED_KEY = 2


class IdentifiedKeyId(IntEnum):
    GLOBAL_UNICAST_ENCRYPTION_KEY = 0
    GLOBAL_BROADCAST_ENCRYPTION_KEY = 1


class KekId(IntEnum):
    MASTER_KEY = 0


@dataclass(frozen=True, slots=True)
class IdentifiedKey:
    key_id: IdentifiedKeyId
    KIND: ClassVar[KeyInfoKind] = KeyInfoKind.IDENTIFIED_KEY

    def _encode(self, out: bytearray) -> None:
        try:
            out.append(IdentifiedKeyId(self.key_id))
        except (ValueError, TypeError):
            raise EncodeError(f"key_id {self.key_id!r} is not an IdentifiedKeyId") from None


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """The key used, wrapped with the master key (RFC 3394)."""

    key_ciphered_data: bytes
    kek_id: KekId = KekId.MASTER_KEY
    KIND: ClassVar[KeyInfoKind] = KeyInfoKind.WRAPPED_KEY

    def _encode(self, out: bytearray) -> None:
        try:
            out.append(KekId(self.kek_id))
        except (ValueError, TypeError):
            raise EncodeError(f"kek_id {self.kek_id!r} is not a KekId") from None
        put_octet_string(out, _check_octets(self.key_ciphered_data, "key_ciphered_data"), "key_ciphered_data")


@dataclass(frozen=True, slots=True)
class AgreedKey:
    """key-parameters (0x01 one-pass DH C(1e,1s), 0x02 static unified model C(0e,2s))
    and key-ciphered-data. Not used by the companion standard; decoded for completeness."""

    key_parameters: bytes
    key_ciphered_data: bytes
    KIND: ClassVar[KeyInfoKind] = KeyInfoKind.AGREED_KEY

    def _encode(self, out: bytearray) -> None:
        put_octet_string(out, _check_octets(self.key_parameters, "key_parameters"), "key_parameters")
        put_octet_string(out, _check_octets(self.key_ciphered_data, "key_ciphered_data"), "key_ciphered_data")


KeyInfo = Union[IdentifiedKey, WrappedKey, AgreedKey]


def _decode_key_info(r: Reader) -> KeyInfo:
    kind = r.enum(KeyInfoKind, "key-info choice")
    if kind == KeyInfoKind.IDENTIFIED_KEY:
        return IdentifiedKey(r.enum(IdentifiedKeyId, "identified-key key-id"))
    if kind == KeyInfoKind.WRAPPED_KEY:
        kek_id = r.enum(KekId, "wrapped-key kek-id")
        return WrappedKey(r.octet_string("wrapped-key key-ciphered-data"), kek_id)
    return AgreedKey(r.octet_string("agreed-key key-parameters"), r.octet_string("agreed-key key-ciphered-data"))


def _check_date_time(value: object) -> bytes:
    value = _check_octets(value, "date_time")
    if len(value) not in (0, DATE_TIME_LENGTH):
        raise EncodeError(f"date_time must be empty or {DATE_TIME_LENGTH} bytes, got {len(value)}")
    return value


def _encode_general_header(out: bytearray, apdu) -> None:
    put_octet_string(out, _check_octets(apdu.transaction_id, "transaction_id"), "transaction_id")
    put_octet_string(out, _check_octets(apdu.originator_system_title, "originator_system_title"),
                     "originator_system_title")
    put_octet_string(out, _check_octets(apdu.recipient_system_title, "recipient_system_title"),
                     "recipient_system_title")
    put_octet_string(out, _check_date_time(apdu.date_time), "date_time")
    put_octet_string(out, _check_octets(apdu.other_information, "other_information"), "other_information")


def _decode_general_header(r: Reader) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    transaction_id = r.octet_string("transaction-id")
    originator = r.octet_string("originator-system-title")
    recipient = r.octet_string("recipient-system-title")
    at = r.pos
    date_time = r.octet_string("date-time")
    if len(date_time) not in (0, DATE_TIME_LENGTH):
        raise DecodeError(f"{r.what} date-time", at, f"{len(date_time)} bytes is neither empty nor a date-time")
    other = r.octet_string("other-information")
    return transaction_id, originator, recipient, date_time, other


@dataclass(frozen=True, slots=True)
class GeneralCiphering(Apdu):
    transaction_id: bytes
    originator_system_title: bytes
    recipient_system_title: bytes
    date_time: bytes
    other_information: bytes
    key_info: KeyInfo | None
    security_control: int
    invocation_counter: int
    ciphertext: bytes

    TAG: ClassVar[int] = 0xDD

    @property
    def content(self) -> ProtectedContent:
        return ProtectedContent(self.security_control, self.invocation_counter, self.ciphertext)

    def header_bytes(self) -> bytes:
        """transaction-id .. other-information as encoded: the extra AAD of the protection."""
        out = bytearray()
        _encode_general_header(out, self)
        return bytes(out)

    def _encode_body(self, out: bytearray) -> None:
        _encode_general_header(out, self)
        if self.key_info is None:
            out.append(0)
        else:
            if not isinstance(self.key_info, (IdentifiedKey, WrappedKey, AgreedKey)):
                raise EncodeError(f"key_info must be a KeyInfo or None, got {type(self.key_info).__name__}")
            out.append(1)
            out.append(self.key_info.KIND)
            self.key_info._encode(out)
        put_octet_string(out, _content_bytes(self.security_control, self.invocation_counter, self.ciphertext),
                         "ciphered content")

    @classmethod
    def _decode_body(cls, r: Reader) -> GeneralCiphering:
        header = _decode_general_header(r)
        key_info = _decode_key_info(r) if r.present("key-info") else None
        at = r.pos
        content = _protected_content(r.octet_string("ciphered-content"), r, "ciphered-content", at)
        return cls(*header, key_info, content.security_control, content.invocation_counter, content.payload)

    @classmethod
    def protect(
        cls,
        sc: SecurityControlLike,
        key_ek: bytes,
        key_ak: bytes | None,
        counter: int,
        plaintext: bytes,
        transaction_id: bytes,
        originator_system_title: bytes,
        recipient_system_title: bytes,
        key_info: KeyInfo | None,
        date_time: bytes = b"",
        other_information: bytes = b"",
    ) -> GeneralCiphering:
        """Protect with IV = originator system title || counter and the header in the AAD.

        `key_ek` is the key `key_info` designates (global key, or the wrapped key in clear).
        """
        skeleton = cls(transaction_id, originator_system_title, recipient_system_title, date_time,
                       other_information, key_info, 0, 0, b"")
        content = ProtectedContent.from_bytes(protect_content(
            sc, key_ek, key_ak, originator_system_title, counter, plaintext, extra_aad=skeleton.header_bytes()
        ))
        return cls(transaction_id, originator_system_title, recipient_system_title, date_time, other_information,
                   key_info, content.security_control, content.invocation_counter, content.payload)

    def unprotect(self, key_ek: bytes, key_ak: bytes | None, **policy) -> bytes:
        return unprotect_content(
            self.content, key_ek, key_ak, self.originator_system_title, self.header_bytes(), **policy
        )[1]


# ---------------------------------------------------------------------------------------
# general-signing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneralSigning(Apdu):
    """`content` is the signed APDU (plain or itself ciphered); `signature` is r || s."""

    transaction_id: bytes
    originator_system_title: bytes
    recipient_system_title: bytes
    date_time: bytes
    other_information: bytes
    content: bytes
    signature: bytes

    TAG: ClassVar[int] = 0xDF

    def signed_data(self) -> bytes:
        """The five header fields as encoded, then the content without its length."""
        out = bytearray()
        _encode_general_header(out, self)
        out += _check_octets(self.content, "content")
        return bytes(out)

    def _encode_body(self, out: bytearray) -> None:
        _encode_general_header(out, self)
        put_octet_string(out, _check_octets(self.content, "content"), "content")
        put_octet_string(out, _check_octets(self.signature, "signature"), "signature")

    @classmethod
    def _decode_body(cls, r: Reader) -> GeneralSigning:
        header = _decode_general_header(r)
        return cls(*header, r.octet_string("content"), r.octet_string("signature"))

    @classmethod
    def sign(
        cls,
        signing_key: ec.EllipticCurvePrivateKey,
        content: bytes,
        transaction_id: bytes,
        originator_system_title: bytes,
        recipient_system_title: bytes,
        date_time: bytes = b"",
        other_information: bytes = b"",
        suite: int | None = None,
    ) -> GeneralSigning:
        unsigned = cls(transaction_id, originator_system_title, recipient_system_title, date_time,
                       other_information, content, b"")
        signature = signing.sign(signing_key, unsigned.signed_data(), suite)
        return cls(transaction_id, originator_system_title, recipient_system_title, date_time,
                   other_information, content, signature)

    def verify(self, public_key: ec.EllipticCurvePublicKey, suite: int | None = None) -> bytes:
        """The content if the signature verifies with the originator's key (AuthenticationError if not)."""
        signing.verify(public_key, self.signed_data(), self.signature, suite)
        return self.content


# ---------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------

CipheredApdu = Union[ServiceSpecificCiphered, GeneralGloCiphering, GeneralDedCiphering, GeneralCiphering,
                     GeneralSigning]

CIPHERED_APDU_CLASSES: tuple[type, ...] = (
    *GLO_TAG_FOR_PLAIN.values(), *DED_TAG_FOR_PLAIN.values(),
    GeneralGloCiphering, GeneralDedCiphering, GeneralCiphering, GeneralSigning,
)

_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in CIPHERED_APDU_CLASSES}
CIPHERED_TAGS: frozenset[int] = frozenset(_BY_TAG)


def decode_ciphered(b: bytes | bytearray | memoryview) -> CipheredApdu:
    """Exactly one protected APDU spanning all of `b`; DecodeError otherwise."""
    r = Reader(b, "ciphered APDU")
    tag = r.u8("tag")
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise DecodeError("ciphered APDU", 0, f"tag 0x{tag:02X} is not a ciphered APDU")
    r.what = cls.__name__
    value = cls._decode_body(r)
    r.finish()
    return value
