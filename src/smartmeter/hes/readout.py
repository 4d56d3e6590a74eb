"""Signed billing readouts (WELMEC 7.2 extension T): capture one from a meter, verify one offline.

A signed readout is the meter's general-signing response (Green Book 9.2.7.2.4.2) to a
general-signing GET request, kept as captured, together with the plain request it answers:

    {
      "format": "smartmeter-signed-readout/1",
      "request": "C003C1...",        hex: the plain get-request, normal or with list (what was asked)
      "signed_response": "DF20..."   hex: the general-signing APDU exactly as the meter sent it
    }

The head-end puts SHA-256 of the plain request into the general-signing transaction-id; the
meter echoes the transaction-id and signs it with the rest of the header, so the meter's
signature binds the answer to the question (which OBIS codes, which attributes) and the
request needs no signature of its own in the file. The signature covers the header and the
content (the response as the client's security policy protects it); the signer's system
title must be the one in the meter's certificate (CN = system title, as our PKI issues it).

Verifying needs only the file and the meter's certificate. Reading the values as well needs
the client's EK and AK when its policy encrypts responses (every KSMW HES client's policy
does): the signature still proves origin and integrity without them.

Every input gives a `SignedReadout` or a `ReadoutError` naming one failure class.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smartmeter.cosem.data import Data
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.apdu import ciphered
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.apdu.get import GetRequestNormal, GetRequestWithList, GetResponseNormal, GetResponseWithList
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.security.suites import unprotect_content
from smartmeter.errors import DecodeError, SmartmeterError

__all__ = ["FORMAT", "MAX_FILE", "BILLING_ITEMS", "ReadoutError", "SignedReadout", "request_for", "envelope", "verify_readout"]

FORMAT = "smartmeter-signed-readout/1"
MAX_FILE = 256 * 1024  # a readout of a few registers is far smaller; bounds what the verifier reads

# What a billing readout asks for: the active energy import register with its scaler/unit,
# and the meter's clock (the capture time).
BILLING_ITEMS: tuple[tuple[int, str, int], ...] = (
    (3, "1-0:1.8.0.255", 2),
    (3, "1-0:1.8.0.255", 3),
    (3, "1-0:2.8.0.255", 2),
    (3, "1-0:2.8.0.255", 3),
    (8, "0-0:1.0.0.255", 2),
)
_SUITE_FOR_CURVE = {"secp256r1": 1, "secp384r1": 2}


class ReadoutError(SmartmeterError):
    """`kind`: "format" (not a readout file), "malformed" (an APDU does not decode),
    "certificate" (not a usable meter certificate), "signer" (signed by another system
    title than the certificate's), "signature" (does not verify: changed or another key),
    "binding" (the response does not answer the request in the file), "content" (the
    signed content cannot be opened or read with the keys given)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class SignedReadout:
    signer_system_title: bytes
    date_time: bytes
    items: tuple[CosemAttributeDescriptor, ...]
    results: tuple[Data | DataAccessResult, ...] | None  # None: encrypted, no keys given


def request_for(items=BILLING_ITEMS, invoke_id_and_priority: int = 0xC1) -> bytes:
    from smartmeter.cosem.obis import Obis
    return GetRequestWithList(invoke_id_and_priority, tuple(
        (CosemAttributeDescriptor(c, Obis.parse(o).to_bytes(), a), None) for c, o, a in items)).to_bytes()


def transaction_id_for(request: bytes) -> bytes:
    return hashlib.sha256(request).digest()


def envelope(request: bytes, signed_response: bytes) -> str:
    return json.dumps({"format": FORMAT, "request": request.hex().upper(),
                       "signed_response": signed_response.hex().upper()}, indent=2) + "\n"


def _parse_file(raw: bytes) -> tuple[bytes, bytes]:
    if len(raw) > MAX_FILE:
        raise ReadoutError("format", f"the file is larger than {MAX_FILE} bytes")
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ReadoutError("format", "the file is not a signed readout (not complete JSON)") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise ReadoutError("format", f"the file is not a signed readout (format is not {FORMAT})")
    out = []
    for name in ("request", "signed_response"):
        value = fields.get(name)
        try:
            if not isinstance(value, str):
                raise ValueError
            out.append(bytes.fromhex(value))
        except ValueError:
            raise ReadoutError("format", f"'{name}' is missing or not hex") from None
    return out[0], out[1]


def _certificate(cert_pem: bytes) -> tuple[ec.EllipticCurvePublicKey, bytes, int]:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = cert.public_key()
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, TypeError):
        raise ReadoutError("certificate", "the certificate is not a PEM X.509 certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _SUITE_FOR_CURVE:
        raise ReadoutError("certificate", "the certificate's key is not an ECDSA P-256/P-384 key")
    try:
        title = bytes.fromhex(str(names[0].value)) if len(names) == 1 else b""
    except ValueError:
        title = b""
    if len(title) != 8:
        raise ReadoutError("certificate", "the certificate's CN is not a system title (16 hex digits)")
    return key, title, _SUITE_FOR_CURVE[key.curve.name]


def verify_readout(raw: bytes, cert_pem: bytes, ek: bytes | None = None, ak: bytes | None = None) -> SignedReadout:
    """The readout if its signature verifies with the certificate's key; ReadoutError if not."""
    request, response = _parse_file(raw)
    key, title, suite = _certificate(cert_pem)
    try:
        signed = ciphered.decode_ciphered(response)
    except DecodeError as exc:
        raise ReadoutError("malformed", f"the signed response does not decode: {exc}") from None
    if not isinstance(signed, ciphered.GeneralSigning):
        raise ReadoutError("malformed", "the signed response is not a general-signing APDU")
    if signed.originator_system_title != title:
        raise ReadoutError("signer", f"signed by system title {signed.originator_system_title.hex().upper()}, "
                                     f"the certificate is for {title.hex().upper()}")
    try:
        content = signed.verify(key, suite)
    except SmartmeterError:
        raise ReadoutError("signature", "the signature does not verify: the readout was changed or "
                                        "signed with another key") from None
    if signed.transaction_id != transaction_id_for(request):
        raise ReadoutError("binding", "the signed response does not answer the request in the file")
    try:
        asked = decode_xdlms(request)
    except DecodeError as exc:
        raise ReadoutError("malformed", f"the request does not decode: {exc}") from None
    if isinstance(asked, GetRequestWithList):
        items = tuple(d for d, _ in asked.items)
    elif isinstance(asked, GetRequestNormal):
        items = (asked.descriptor,)
    else:
        raise ReadoutError("malformed", "the request is not a get-request (normal or with list)")
    results = _open(content, title, ek, ak)
    if results is not None and len(results) != len(items):
        raise ReadoutError("content", f"{len(results)} results for {len(items)} requested attributes")
    return SignedReadout(title, signed.date_time, items, results)


def _open(content: bytes, title: bytes, ek: bytes | None, ak: bytes | None):
    try:
        if content[:1] and content[0] in ciphered.CIPHERED_TAGS:
            protected = ciphered.decode_ciphered(content)
            if not isinstance(protected, (ciphered.ServiceSpecificCiphered, ciphered.GeneralGloCiphering)):
                raise ReadoutError("content", f"{type(protected).__name__} content is not readable offline")
            sc = protected.content.security_control
            if sc & 0x20 and (ek is None or ak is None):
                return None
            if sc & 0x20:
                _, plain = unprotect_content(protected.content, ek, ak, title)
            else:  # authenticated only: the plaintext is in the clear, the signature covers it
                plain = protected.content.payload[:-12] if sc & 0x10 else protected.content.payload
        else:
            plain = content
        response = decode_xdlms(plain)
    except DecodeError as exc:
        raise ReadoutError("content", f"the signed content does not decode: {exc}") from None
    except ReadoutError:
        raise
    except SmartmeterError as exc:
        raise ReadoutError("content", f"the signed content does not open with the keys given: {exc}") from None
    if isinstance(response, GetResponseWithList):
        return response.results
    if isinstance(response, GetResponseNormal):
        return (response.result,)
    raise ReadoutError("content", f"the signed content is a {type(response).__name__}, not a get-response")


async def capture(client, client_signing_key: ec.EllipticCurvePrivateKey, items=BILLING_ITEMS,
                  date_time: bytes = b"") -> str:
    """A signed readout from a connected, secured `MeterClient` (hes.client): the request is
    protected as the client's policy demands, then general-signed with the client's
    certified key; the meter answers the same way, signed with its own key."""
    association = client.association
    security = association.security
    request = request_for(items)
    protected = association.protect_request(request)
    signed = ciphered.GeneralSigning.sign(
        client_signing_key, protected, transaction_id_for(request), security.client_system_title,
        association.server_system_title or b"", date_time, b"", int(security.suite))
    response = await client.link.exchange(signed.to_bytes())
    if not response[:1] == bytes((ciphered.GeneralSigning.TAG,)):
        raise ReadoutError("malformed", f"the meter did not answer with a signed response ({response[:1].hex()})")
    return envelope(request, response)
