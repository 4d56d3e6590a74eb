"""X.509 certificates for DLMS security suites 1 and 2, as the meter handles them.

Three parts:

* `parse_certificate` checks one certificate against the DLMS certificate profile
  (Green Book 9.2.6.4, as used by companion standard §3.5.2) and returns a
  `DlmsCertificate`; anything else is refused with a typed `CertificateError`.
* `CertificateStore` is the meter's set of trusted and end-entity certificates with the
  capacities of companion standard §3.5.2, the chain validation done at import time
  (§3.5.2.1), the rules for removal, and the 24 h window for a new key pair. It is
  sans-io: the caller passes the time in and persists `to_dict()` wherever it likes.
* The IC 64 (Security setup) certificate structures as plain data:
  `CertificateInfo` (attribute 6 `certificates`) and the two forms of
  certificate_identification used by `export_certificate` / `remove_certificate`.

`make_csr` builds the PKCS #10 request for a key pair the meter generated itself (the
private key never leaves the meter, §3.5.2).

Encodings chosen where the Blue Book leaves room (recorded in docs/decisions.md by the
lead): serial_number in IC 64 structures is the certificate serial as unsigned
big-endian bytes without leading zeros (the content octets of the DER INTEGER with its
sign-padding zero removed); issuer and subject are the DER encoding of the X.501 Name.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import warnings
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Iterable, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from smartmeter.cosem.data import Data, DataType
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.errors import DecodeError

__all__ = [
    # errors
    "CertificateError", "CertificateFormatError", "CertificateTooLargeError",
    "CertificateProfileError", "WrongSignatureAlgorithmError", "WrongCurveError",
    "WrongKeyUsageError", "MissingSystemTitleError", "CertificateValidityError",
    "CertificateExpiredError", "CertificateNotYetValidError", "CertificateChainError",
    "NoTrustAnchorError", "UnknownIssuerError", "CertificateSignatureError",
    "IssuerNotCaError", "PathLengthError", "IssuerNotAllowedError", "CertificateStoreError", "CapacityExceededError",
    "LastCertificateError", "RemovalNotAllowedError", "CertificateNotFoundError",
    "AmbiguousIdentificationError", "UnknownClientError", "KeyMismatchError",
    "RootImportNotAllowedError", "UnsupportedCertificateTypeError", "CsrError",
    "StoreFormatError",
    # data
    "CertificateEntity", "CertificateType", "DlmsCertificate", "CertificateInfo",
    "CertificateIdentificationByEntity", "CertificateIdentificationBySerial",
    "CertificateIdentification", "ImportResult", "CertificateStore",
    # functions
    "parse_certificate", "parse_csr", "make_csr", "system_title_to_common_name",
    "serial_to_bytes", "serial_from_bytes", "identification_from_data",
    "identification_to_data",
    # constants
    "SUITE_CURVES", "SUITE_HASHES", "MAX_CERTIFICATE_SIZE", "CERTIFICATE_CLIENTS",
    "SUB_CA_CAPACITY", "CLIENT_CERTIFICATE_CAPACITY", "KEY_PAIR_IMPORT_DEADLINE",
]

# --------------------------------------------------------------------------- constants

#: Named curve and signature hash per security suite (Green Book 9.2.3.4).
SUITE_CURVES: dict[int, type[ec.EllipticCurve]] = {1: ec.SECP256R1, 2: ec.SECP384R1}
SUITE_HASHES: dict[int, type[hashes.HashAlgorithm]] = {1: hashes.SHA256, 2: hashes.SHA384}
_SUITE_SIGNATURE_OIDS = {
    1: SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    2: SignatureAlgorithmOID.ECDSA_WITH_SHA384,
}

#: Largest DER certificate accepted. A profile certificate with P-384 keys is about
#: 600 bytes; 2 KiB leaves room for optional fields and still bounds what a meter must
#: hold per slot (and what an attacker can make it parse).
MAX_CERTIFICATE_SIZE = 2048
_MAX_PEM_SIZE = 2 * MAX_CERTIFICATE_SIZE  # base64 + line breaks + armour
_MAX_SERIAL_OCTETS = 20  # RFC 5280 4.1.2.2, repeated by the Green Book profile

#: Clients that authenticate with HLS 7 (ECDSA) and therefore hold HES certificates
#: (companion standard §3.5.2 and §3.6.2/3.6.3/3.6.5). Installation, Maintenance and
#: Certification use HLS 6 (SHA-256) and hold none.
CERTIFICATE_CLIENTS: dict[int, str] = {1: "Management", 2: "Data Readout", 4: "PLC Management"}

#: "Sub CA Certificate 1, 2, 3" (§3.5.2): one each for server certificates, for the
#: Management/Readout client certificates and for the PLC Management client certificates.
SUB_CA_CAPACITY = 3
#: "Up to 2 HES certificates" per client (§3.5.2), so a new one can be imported before the
#: one in use is removed. Counted per certificate type.
CLIENT_CERTIFICATE_CAPACITY = 2
#: A new meter key pair whose certificate is not imported within 24 h is dismissed (§3.5.2.1).
KEY_PAIR_IMPORT_DEADLINE = _dt.timedelta(hours=24)

# ------------------------------------------------------------------------------ errors


class CertificateError(SecurityError):
    """Base of every refusal of a certificate, CSR or certificate-store operation."""


class CertificateFormatError(CertificateError, DecodeError):
    """Not a certificate at all: garbage, broken DER/PEM, or unparsable extensions."""

    def __init__(self, detail: str, what: str = "X.509 certificate") -> None:
        DecodeError.__init__(self, what, None, detail)


class CertificateTooLargeError(CertificateFormatError):
    """The encoding is larger than `MAX_CERTIFICATE_SIZE` (refused before parsing)."""


class CertificateProfileError(CertificateError):
    """A well-formed X.509 certificate that violates the DLMS certificate profile."""


class WrongSignatureAlgorithmError(CertificateProfileError):
    """Not ecdsa-with-SHA256 (suite 1) / ecdsa-with-SHA384 (suite 2)."""


class WrongCurveError(CertificateProfileError):
    """The public key is not an EC key on the suite's curve (P-256 / P-384)."""


class WrongKeyUsageError(CertificateProfileError):
    """Key usage missing or not one of the profile's combinations."""


class MissingSystemTitleError(CertificateProfileError):
    """An end-entity certificate whose subject CN is not a system title in hex."""


class CertificateValidityError(CertificateError):
    """The certificate is outside its validity period at the given time."""


class CertificateExpiredError(CertificateValidityError):
    """now > notAfter."""


class CertificateNotYetValidError(CertificateValidityError):
    """now < notBefore."""


class CertificateChainError(CertificateError):
    """The chain up to the installed root could not be validated."""


class NoTrustAnchorError(CertificateChainError):
    """No root certificate is installed."""


class UnknownIssuerError(CertificateChainError):
    """No installed CA certificate has the certificate's issuer as subject (foreign CA)."""


class CertificateSignatureError(CertificateChainError):
    """An issuer with the right name exists but its key did not sign the certificate."""


class IssuerNotCaError(CertificateChainError):
    """The issuing certificate is not a CA (basicConstraints / keyCertSign)."""


class PathLengthError(CertificateChainError):
    """A basicConstraints pathLenConstraint forbids this chain."""


class IssuerNotAllowedError(CertificateChainError):
    """The chain is valid but its sub-CA is not the one pinned for this owner (e.g. a
    PLC-client sub-CA issuing a Management client certificate)."""


class CertificateStoreError(CertificateError):
    """The store refuses the operation (capacity, removal rules, identification)."""


class CapacityExceededError(CertificateStoreError):
    """All slots of this kind are taken; remove one first (§3.5.2.1)."""


class LastCertificateError(CertificateStoreError):
    """Removing this would leave the client without a digital-signature certificate."""


class RemovalNotAllowedError(CertificateStoreError):
    """The root and the meter's own certificates are replaced, never removed."""


class CertificateNotFoundError(CertificateStoreError):
    """No certificate matches the identification."""


class AmbiguousIdentificationError(CertificateStoreError):
    """More than one certificate matches an identification by entity; use the serial."""


class UnknownClientError(CertificateStoreError):
    """The client does not hold certificates (not an HLS 7 client) or none was named."""


class KeyMismatchError(CertificateStoreError):
    """A certificate for the meter whose key is neither its current nor a live new key pair."""


class RootImportNotAllowedError(CertificateStoreError):
    """A root certificate is installed in production or by firmware update, not by IC 64."""


class UnsupportedCertificateTypeError(CertificateStoreError):
    """TLS (or other) certificates are not used by this meter (§3.5.2 remark)."""


class CsrError(CertificateFormatError):
    """A certificate signing request is malformed, badly signed or off-profile."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, what="PKCS #10 certificate request")


class StoreFormatError(CertificateStoreError, DecodeError):
    """A persisted store dict is damaged or from an unknown version."""

    def __init__(self, detail: str) -> None:
        DecodeError.__init__(self, "certificate store", None, detail)


# ----------------------------------------------------------------------- IC 64 enums


class CertificateEntity(IntEnum):
    """IC 64 certificate_entity."""

    SERVER = 0
    CLIENT = 1
    CERTIFICATION_AUTHORITY = 2
    OTHER = 3


class CertificateType(IntEnum):
    """IC 64 certificate_type; also IC 64 key_pair_type for generate_key_pair (0..2)."""

    DIGITAL_SIGNATURE = 0
    KEY_AGREEMENT = 1
    TLS = 2
    OTHER = 3


# -------------------------------------------------------------------- small helpers


def serial_to_bytes(serial: int) -> bytes:
    """Certificate serial as IC 64 serial_number: unsigned big-endian, no leading zeros."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


def serial_from_bytes(octets: bytes) -> int:
    """Inverse of `serial_to_bytes`; tolerant of a leading sign-padding zero."""
    return int.from_bytes(bytes(octets), "big")


def system_title_to_common_name(system_title: bytes) -> str:
    """Subject CN of an end-entity certificate: the 8-byte system title as 16 hex digits."""
    if not isinstance(system_title, (bytes, bytearray)) or len(system_title) != 8:
        raise ValueError("a system title is 8 bytes")
    return bytes(system_title).hex().upper()


def _system_title_from_common_name(common_name: str) -> bytes | None:
    if len(common_name) != 16:
        return None
    try:
        return bytes.fromhex(common_name)
    except ValueError:
        return None


def _check_now(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")
    return now.astimezone(_dt.timezone.utc)


def _check_suite(suite: int) -> int:
    if suite not in SUITE_CURVES:
        raise ValueError(f"security suite must be 1 or 2 for certificates, not {suite!r}")
    return suite


def _spki(public_key: ec.EllipticCurvePublicKey | bytes) -> bytes:
    """SubjectPublicKeyInfo DER of a key (the stable form used for comparisons)."""
    if isinstance(public_key, (bytes, bytearray)):
        return bytes(public_key)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------- parsed certificate


@dataclass(frozen=True)
class DlmsCertificate:
    """A certificate that passed the DLMS profile checks, with the fields the meter uses."""

    der: bytes
    suite: int
    serial_number: int
    issuer: bytes  # DER of the issuer Name
    subject: bytes  # DER of the subject Name
    issuer_text: str  # RFC 4514, for humans
    subject_text: str
    common_name: str
    is_ca: bool
    path_length: int | None  # pathLenConstraint of a CA, None if absent or not a CA
    certificate_type: CertificateType | None  # None for CA certificates
    system_title: bytes | None  # end entities only
    not_before: _dt.datetime
    not_after: _dt.datetime
    subject_key_identifier: bytes | None
    authority_key_identifier: bytes | None
    public_key_der: bytes  # SubjectPublicKeyInfo
    x509: x509.Certificate = field(compare=False, repr=False)

    @property
    def self_signed(self) -> bool:
        return self.issuer == self.subject

    @property
    def serial_number_bytes(self) -> bytes:
        return serial_to_bytes(self.serial_number)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.x509.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # checked by parse_certificate
        return key

    def pem(self) -> bytes:
        return self.x509.public_bytes(serialization.Encoding.PEM)

    def check_validity(self, now: _dt.datetime) -> None:
        now = _check_now(now)
        if now < self.not_before:
            raise CertificateNotYetValidError(
                f"{self.subject_text} is valid from {self.not_before.isoformat()}")
        if now > self.not_after:
            raise CertificateExpiredError(
                f"{self.subject_text} expired at {self.not_after.isoformat()}")


def _load(data: bytes | bytearray | memoryview | str) -> x509.Certificate:
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise CertificateFormatError("PEM text is not ASCII") from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CertificateFormatError(f"expected bytes or PEM text, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise CertificateFormatError("empty input")
    if data.lstrip()[:11] == b"-----BEGIN ":
        if len(data) > _MAX_PEM_SIZE:
            raise CertificateTooLargeError(f"PEM of {len(data)} bytes exceeds {_MAX_PEM_SIZE}")
        try:
            cert = x509.load_pem_x509_certificate(data)
        except Exception as exc:  # cryptography signals malformed input with ValueError & co
            raise CertificateFormatError(f"not a PEM certificate ({exc})") from None
        try:
            der_len = len(cert.public_bytes(serialization.Encoding.DER))
        except Exception as exc:
            raise CertificateFormatError(f"cannot re-encode ({exc})") from None
        if der_len > MAX_CERTIFICATE_SIZE:
            raise CertificateTooLargeError(f"{der_len} bytes exceeds {MAX_CERTIFICATE_SIZE}")
        return cert
    if len(data) > MAX_CERTIFICATE_SIZE:
        raise CertificateTooLargeError(f"{len(data)} bytes exceeds {MAX_CERTIFICATE_SIZE}")
    try:
        return x509.load_der_x509_certificate(data)
    except Exception as exc:
        raise CertificateFormatError(f"not a DER certificate ({exc})") from None


# Key usages allowed for each end-entity certificate type (Green Book 9.2.6.4). A CA
# certificate must have keyCertSign and may have cRLSign, nothing else.
_EE_USAGE = {
    frozenset({"digital_signature"}): CertificateType.DIGITAL_SIGNATURE,
    frozenset({"key_agreement"}): CertificateType.KEY_AGREEMENT,
    frozenset({"digital_signature", "key_agreement"}): CertificateType.TLS,
}
_USAGE_NAMES = ("digital_signature", "content_commitment", "key_encipherment",
                "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
# Critical extensions this profile understands; any other critical one is refused
# (RFC 5280 4.2). Non-critical optional ones are tolerated and ignored.
_KNOWN_CRITICAL = {ExtensionOID.KEY_USAGE, ExtensionOID.BASIC_CONSTRAINTS}


def _usages(ku: x509.KeyUsage) -> frozenset[str]:
    return frozenset(name for name in _USAGE_NAMES if getattr(ku, name))


def parse_certificate(data: bytes | bytearray | memoryview | str, *, suite: int = 1,
                      now: _dt.datetime | None = None) -> DlmsCertificate:
    """Parse a DER or PEM certificate and check it against the DLMS profile for `suite`.

    With `now`, the certificate must also be inside its validity period. Raises only
    `CertificateError` subclasses (and TypeError/ValueError for a bad `now`/`suite`).
    """
    _check_suite(suite)
    if now is not None:
        now = _check_now(now)
    # cryptography warns about (and will later refuse) non-positive serials; the profile
    # refuses them anyway, so the warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        cert = _load(data)
        try:
            return _profile(cert, suite, now)
        except CertificateError:
            raise
        except Exception as exc:  # lazily parsed fields (extensions, key, names) may fail late
            raise CertificateFormatError(
                f"malformed field ({type(exc).__name__}: {exc})") from None


def _profile(cert: x509.Certificate, suite: int, now: _dt.datetime | None) -> DlmsCertificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    if cert.version != x509.Version.v3:
        raise CertificateProfileError(f"version {cert.version.name}, the profile needs v3")
    if cert.signature_algorithm_oid != _SUITE_SIGNATURE_OIDS[suite]:
        raise WrongSignatureAlgorithmError(
            f"signature algorithm {cert.signature_algorithm_oid.dotted_string} is not "
            f"{_SUITE_SIGNATURE_OIDS[suite]._name} (suite {suite})")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WrongCurveError(f"public key is {type(key).__name__}, not an EC key")
    if not isinstance(key.curve, SUITE_CURVES[suite]):
        raise WrongCurveError(f"curve {key.curve.name} is not {SUITE_CURVES[suite].name} "
                              f"(suite {suite})")
    serial = cert.serial_number
    if serial <= 0 or serial.bit_length() > 8 * _MAX_SERIAL_OCTETS:
        raise CertificateProfileError(f"serial number {serial} is not a positive 1..20-octet integer")

    extensions = cert.extensions
    for ext in extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            raise CertificateProfileError(f"unsupported critical extension {ext.oid.dotted_string}")

    def get(ext_type):
        try:
            return extensions.get_extension_for_class(ext_type).value
        except x509.ExtensionNotFound:
            return None

    key_usage = get(x509.KeyUsage)
    if key_usage is None:
        raise WrongKeyUsageError("keyUsage extension missing (mandatory in the profile)")
    usages = _usages(key_usage)
    basic = get(x509.BasicConstraints)
    ski = get(x509.SubjectKeyIdentifier)
    aki = get(x509.AuthorityKeyIdentifier)
    issuer = cert.issuer.public_bytes()
    subject = cert.subject.public_bytes()
    is_ca = bool(basic is not None and basic.ca)

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = cns[0].value if len(cns) == 1 and isinstance(cns[0].value, str) else ""

    system_title = None
    cert_type = None
    if is_ca:
        if "key_cert_sign" not in usages or not usages <= {"key_cert_sign", "crl_sign"}:
            raise WrongKeyUsageError(
                f"CA key usage must be keyCertSign (+cRLSign), not {sorted(usages)}")
        if ski is None:
            raise CertificateProfileError("CA certificate without subjectKeyIdentifier")
        path_length = basic.path_length
    else:
        path_length = None
        if "key_cert_sign" in usages or "crl_sign" in usages:
            raise WrongKeyUsageError("keyCertSign/cRLSign in a certificate that is not a CA")
        cert_type = _EE_USAGE.get(usages)
        if cert_type is None:
            raise WrongKeyUsageError(
                "end-entity key usage must be digitalSignature or keyAgreement (or both for "
                f"TLS), not {sorted(usages)}")
        system_title = _system_title_from_common_name(common_name)
        if system_title is None:
            raise MissingSystemTitleError(
                f"subject CN {common_name!r} is not a system title as 16 hex digits")
    if issuer != subject and (aki is None or aki.key_identifier is None):
        raise CertificateProfileError("authorityKeyIdentifier (keyIdentifier) missing")

    parsed = DlmsCertificate(
        der=der,
        suite=suite,
        serial_number=serial,
        issuer=issuer,
        subject=subject,
        issuer_text=cert.issuer.rfc4514_string(),
        subject_text=cert.subject.rfc4514_string(),
        common_name=common_name,
        is_ca=is_ca,
        path_length=path_length,
        certificate_type=cert_type,
        system_title=system_title,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        subject_key_identifier=ski.digest if ski is not None else None,
        authority_key_identifier=aki.key_identifier if aki is not None else None,
        public_key_der=_spki(key),
        x509=cert,
    )
    if now is not None:
        parsed.check_validity(now)
    return parsed


def _verify_issued_by(child: DlmsCertificate, issuer: DlmsCertificate) -> None:
    """Name chaining and signature; raises a CertificateChainError subclass."""
    if child.issuer != issuer.subject:
        raise UnknownIssuerError(f"{child.subject_text} is issued by {child.issuer_text}, "
                                 f"not {issuer.subject_text}")
    if not issuer.is_ca:
        raise IssuerNotCaError(f"{issuer.subject_text} is not a CA")
    try:
        child.x509.verify_directly_issued_by(issuer.x509)
    except InvalidSignature:
        raise CertificateSignatureError(
            f"signature of {child.subject_text} does not verify with the key of "
            f"{issuer.subject_text}") from None
    except (ValueError, TypeError) as exc:
        raise CertificateSignatureError(f"cannot verify {child.subject_text}: {exc}") from None


# ------------------------------------------------------------------------- CSR


def make_csr(private_key: ec.EllipticCurvePrivateKey, system_title: bytes, suite: int = 1,
             certificate_type: CertificateType = CertificateType.DIGITAL_SIGNATURE) -> bytes:
    """PKCS #10 request (DER) for a meter key pair: CN = system title in hex, the key usage
    of `certificate_type` requested as an extension, signed with the suite's hash.

    This is what IC 64 generate_certificate_request returns (as an octet-string).
    """
    _check_suite(suite)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, SUITE_CURVES[suite]):
        raise ValueError(f"the key must be an EC key on {SUITE_CURVES[suite].name}")
    if certificate_type not in (CertificateType.DIGITAL_SIGNATURE, CertificateType.KEY_AGREEMENT):
        raise ValueError("a CSR is made for a digital-signature or key-agreement key pair")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, system_title_to_common_name(system_title))]))
        .add_extension(_key_usage(certificate_type), critical=True)
    )
    csr = builder.sign(private_key, SUITE_HASHES[suite]())
    return csr.public_bytes(serialization.Encoding.DER)


def _key_usage(certificate_type: CertificateType) -> x509.KeyUsage:
    signing = certificate_type in (CertificateType.DIGITAL_SIGNATURE, CertificateType.TLS)
    agreeing = certificate_type in (CertificateType.KEY_AGREEMENT, CertificateType.TLS)
    return x509.KeyUsage(
        digital_signature=signing, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=agreeing, key_cert_sign=False,
        crl_sign=False, encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class ParsedCsr:
    system_title: bytes
    public_key: ec.EllipticCurvePublicKey = field(compare=False)
    certificate_type: CertificateType | None  # from a requested keyUsage, if any
    der: bytes


def parse_csr(data: bytes | str, *, suite: int = 1) -> ParsedCsr:
    """Check a PKCS #10 request (DER or PEM) the way a DLMS CA would before signing it:
    self-signature valid, suite curve and hash, CN = system title in hex."""
    _check_suite(suite)
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise CsrError("expected non-empty bytes")
    data = bytes(data)
    if len(data) > _MAX_PEM_SIZE:
        raise CsrError(f"{len(data)} bytes is too large for a CSR")
    try:
        if data.lstrip()[:11] == b"-----BEGIN ":
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
        if not csr.is_signature_valid:
            raise CsrError("self-signature does not verify")
        if csr.signature_algorithm_oid != _SUITE_SIGNATURE_OIDS[suite]:
            raise CsrError(f"not signed with {_SUITE_SIGNATURE_OIDS[suite]._name}")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, SUITE_CURVES[suite]):
            raise CsrError(f"public key is not on {SUITE_CURVES[suite].name}")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        title = (_system_title_from_common_name(cns[0].value)
                 if len(cns) == 1 and isinstance(cns[0].value, str) else None)
        if title is None:
            raise CsrError("subject CN is not a system title as 16 hex digits")
        cert_type = None
        try:
            ku = csr.extensions.get_extension_for_class(x509.KeyUsage).value
            cert_type = _EE_USAGE.get(_usages(ku))
        except x509.ExtensionNotFound:
            pass
        der = csr.public_bytes(serialization.Encoding.DER)
    except CsrError:
        raise
    except Exception as exc:
        raise CsrError(f"malformed ({type(exc).__name__}: {exc})") from None
    return ParsedCsr(system_title=title, public_key=key, certificate_type=cert_type, der=der)


# ------------------------------------------------------------- IC 64 structures


@dataclass(frozen=True)
class CertificateInfo:
    """One element of IC 64 attribute 6 `certificates`."""

    certificate_entity: CertificateEntity
    certificate_type: CertificateType
    serial_number: bytes
    issuer: bytes
    subject: bytes
    subject_alt_name: bytes = b""

    def to_data(self) -> Data:
        return Data.structure([
            Data.enum(int(self.certificate_entity)),
            Data.enum(int(self.certificate_type)),
            Data.octet_string(self.serial_number),
            Data.octet_string(self.issuer),
            Data.octet_string(self.subject),
            Data.octet_string(self.subject_alt_name),
        ])


@dataclass(frozen=True)
class CertificateIdentificationByEntity:
    """certificate_identification_type 0: (entity, type, system title)."""

    certificate_entity: CertificateEntity
    certificate_type: CertificateType
    system_title: bytes

    def to_data(self) -> Data:
        return Data.structure([Data.enum(0), Data.structure([
            Data.enum(int(self.certificate_entity)), Data.enum(int(self.certificate_type)),
            Data.octet_string(self.system_title)])])


@dataclass(frozen=True)
class CertificateIdentificationBySerial:
    """certificate_identification_type 1: (serial number, issuer DER)."""

    serial_number: bytes
    issuer: bytes

    def to_data(self) -> Data:
        return Data.structure([Data.enum(1), Data.structure([
            Data.octet_string(self.serial_number), Data.octet_string(self.issuer)])])


CertificateIdentification = Union[CertificateIdentificationByEntity,
                                  CertificateIdentificationBySerial]


def identification_to_data(identification: CertificateIdentification) -> Data:
    return identification.to_data()


def identification_from_data(value: Data) -> CertificateIdentification:
    """Decode the certificate_identification parameter of export/remove_certificate.

    Raises CertificateFormatError (a DecodeError) for any shape that is not one of the two
    forms, so the server can answer type-unmatched.
    """
    def bad(detail: str) -> CertificateFormatError:
        return CertificateFormatError(detail, what="certificate_identification")

    if not isinstance(value, Data) or value.type != DataType.STRUCTURE or len(value.value) != 2:
        raise bad("expected structure {identification_type, options}")
    kind, options = value.value
    if not isinstance(kind, Data) or kind.type != DataType.ENUM:
        raise bad("identification type is not an enum")
    if not isinstance(options, Data) or options.type != DataType.STRUCTURE:
        raise bad("options are not a structure")
    items = options.value
    if kind.value == 0:
        if (len(items) != 3 or items[0].type != DataType.ENUM or items[1].type != DataType.ENUM
                or items[2].type != DataType.OCTET_STRING):
            raise bad("by entity needs {enum, enum, octet-string}")
        try:
            entity = CertificateEntity(items[0].value)
            ctype = CertificateType(items[1].value)
        except ValueError:
            raise bad("entity or type out of range") from None
        return CertificateIdentificationByEntity(entity, ctype, bytes(items[2].value))
    if kind.value == 1:
        if (len(items) != 2 or items[0].type != DataType.OCTET_STRING
                or items[1].type != DataType.OCTET_STRING):
            raise bad("by serial needs {octet-string, octet-string}")
        return CertificateIdentificationBySerial(bytes(items[0].value), bytes(items[1].value))
    raise bad(f"identification type {kind.value} is neither 0 nor 1")


# ---------------------------------------------------------------------- the store


@dataclass(frozen=True)
class ImportResult:
    """What `CertificateStore.import_certificate` did."""

    certificate: DlmsCertificate
    entity: CertificateEntity
    client: int | None = None  # client SAP for client certificates
    already_present: bool = False  # an identical certificate was there: nothing changed
    replaced: DlmsCertificate | None = None  # the meter certificate this one replaced
    key_pair_activated: bool = False  # the pending meter key pair became the current one


@dataclass
class _KeyPairState:
    current: bytes | None = None  # SPKI DER of the key pair in use
    pending: bytes | None = None  # SPKI DER of a newly generated key pair awaiting its cert
    pending_since: _dt.datetime | None = None


class CertificateStore:
    """The meter's certificates (companion standard §3.5.2), in memory; sans-io.

    Holds the root (trust anchor), up to three sub-CA certificates, the meter's own
    certificates (one per key pair type) and up to two certificates per type for each
    HLS 7 client. Chains are validated at import only (§3.5.2.1); replacing the root or a
    sub-CA later never invalidates certificates already imported.

    The meter's private keys are NOT kept here: the store only knows their public keys,
    so `to_dict()` holds no secret. The caller keeps the private keys (in the meter's key
    storage) and swaps in the new one when an import reports `key_pair_activated`.
    """

    def __init__(self, server_system_title: bytes, *, suite: int = 1,
                 clients: Iterable[int] = CERTIFICATE_CLIENTS) -> None:
        if not isinstance(server_system_title, (bytes, bytearray)) or len(server_system_title) != 8:
            raise ValueError("the server system title is 8 bytes")
        self.server_system_title = bytes(server_system_title)
        self.suite = _check_suite(suite)
        self.clients = tuple(sorted(set(int(c) for c in clients)))
        self._root: DlmsCertificate | None = None
        self._sub_cas: list[DlmsCertificate] = []
        self._server: dict[CertificateType, DlmsCertificate] = {}
        self._client_certs: dict[int, list[DlmsCertificate]] = {c: [] for c in self.clients}
        self._keys: dict[CertificateType, _KeyPairState] = {}
        self._issuer_pins: dict[str, bytes] = {}

    # -- issuer pins -------------------------------------------------------------------

    def pin_issuer(self, owner: int | str, issuer_subject: bytes | None) -> None:
        """Require that certificates of `owner` (a client SAP, or "server" for the meter's
        own) are issued by the sub-CA with this subject Name (DER); None removes the pin.

        §3.5.2 assigns Sub-CA 1 to server certificates, Sub-CA 2 to the Management and
        Readout clients and Sub-CA 3 to the PLC Management client; pinning makes the meter
        enforce that assignment. Without a pin any installed sub-CA may issue.
        """
        key = self._pin_key(owner)
        if issuer_subject is None:
            self._issuer_pins.pop(key, None)
        else:
            self._issuer_pins[key] = bytes(issuer_subject)

    def issuer_pin(self, owner: int | str) -> bytes | None:
        return self._issuer_pins.get(self._pin_key(owner))

    def _pin_key(self, owner: int | str) -> str:
        if owner == "server":
            return "server"
        if isinstance(owner, int) and owner in self._client_certs:
            return str(owner)
        raise UnknownClientError(f"{owner!r} is neither 'server' nor a certificate client")

    def _check_pin(self, owner: int | str, cert: DlmsCertificate) -> None:
        pin = self._issuer_pins.get(self._pin_key(owner))
        if pin is not None and cert.issuer != pin:
            raise IssuerNotAllowedError(
                f"certificates for {owner} must be issued by the pinned sub-CA, not by "
                f"{cert.issuer_text}")

    # -- reading ---------------------------------------------------------------------

    @property
    def root(self) -> DlmsCertificate | None:
        return self._root

    @property
    def sub_cas(self) -> tuple[DlmsCertificate, ...]:
        return tuple(self._sub_cas)

    def server_certificate(self, certificate_type: CertificateType =
                           CertificateType.DIGITAL_SIGNATURE) -> DlmsCertificate | None:
        return self._server.get(CertificateType(certificate_type))

    def client_certificates(self, client: int, certificate_type: CertificateType | None = None
                            ) -> tuple[DlmsCertificate, ...]:
        certs = self._client_certs.get(client, [])
        return tuple(c for c in certs if certificate_type is None or c.certificate_type == certificate_type)

    def client_signing_keys(self, client: int, system_title: bytes | None = None
                            ) -> tuple[ec.EllipticCurvePublicKey, ...]:
        """Public keys to verify a client's HLS 7 f(CtoS) and signed APDUs; restricted to
        certificates for `system_title` when given (the calling-AP-title of the AARQ)."""
        return tuple(c.public_key() for c in self.client_certificates(
            client, CertificateType.DIGITAL_SIGNATURE)
            if system_title is None or c.system_title == bytes(system_title))

    def _entries(self) -> list[tuple[CertificateEntity, int | None, DlmsCertificate]]:
        out: list[tuple[CertificateEntity, int | None, DlmsCertificate]] = []
        if self._root is not None:
            out.append((CertificateEntity.CERTIFICATION_AUTHORITY, None, self._root))
        out += [(CertificateEntity.CERTIFICATION_AUTHORITY, None, c) for c in self._sub_cas]
        out += [(CertificateEntity.SERVER, None, self._server[t]) for t in sorted(self._server)]
        for client in self.clients:
            out += [(CertificateEntity.CLIENT, client, c) for c in self._client_certs[client]]
        return out

    def certificate_infos(self, client: int | None = None) -> tuple[CertificateInfo, ...]:
        """IC 64 attribute 6. With `client`, what that client's security setup shows: the
        CA certificates, the meter's own and that client's; without, everything."""
        infos = []
        for entity, owner, cert in self._entries():
            if entity == CertificateEntity.CLIENT and client is not None and owner != client:
                continue
            infos.append(CertificateInfo(
                certificate_entity=entity,
                certificate_type=(cert.certificate_type if cert.certificate_type is not None
                                  else CertificateType.OTHER),
                serial_number=cert.serial_number_bytes, issuer=cert.issuer,
                subject=cert.subject))
        return tuple(infos)

    # -- meter key pairs --------------------------------------------------------------

    def set_meter_key(self, public_key: ec.EllipticCurvePublicKey | bytes,
                      certificate_type: CertificateType = CertificateType.DIGITAL_SIGNATURE
                      ) -> None:
        """Production: the key pair the meter uses (its certificate may follow later)."""
        self._keys.setdefault(CertificateType(certificate_type), _KeyPairState()).current = _spki(public_key)

    def begin_key_renewal(self, public_key: ec.EllipticCurvePublicKey | bytes, now: _dt.datetime,
                          certificate_type: CertificateType = CertificateType.DIGITAL_SIGNATURE
                          ) -> bytes | None:
        """IC 64 generate_key_pair: record a new key pair awaiting its certificate. The
        current pair stays in use. Returns the SPKI of a pending pair this one supersedes
        (its private key should be deleted), or None."""
        now = _check_now(now)
        state = self._keys.setdefault(CertificateType(certificate_type), _KeyPairState())
        superseded = state.pending
        state.pending, state.pending_since = _spki(public_key), now
        return superseded

    def pending_key(self, certificate_type: CertificateType = CertificateType.DIGITAL_SIGNATURE
                    ) -> tuple[bytes, _dt.datetime] | None:
        state = self._keys.get(CertificateType(certificate_type))
        if state is None or state.pending is None:
            return None
        return state.pending, state.pending_since

    def current_key(self, certificate_type: CertificateType = CertificateType.DIGITAL_SIGNATURE
                    ) -> bytes | None:
        state = self._keys.get(CertificateType(certificate_type))
        return None if state is None else state.current

    def dismiss_expired_key_pairs(self, now: _dt.datetime) -> list[tuple[CertificateType, bytes]]:
        """Drop new key pairs older than 24 h without a certificate (§3.5.2.1). Returns
        (type, SPKI) of each dismissed pair so the caller can erase its private key."""
        now = _check_now(now)
        dismissed = []
        for ctype, state in self._keys.items():
            if state.pending is not None and now - state.pending_since > KEY_PAIR_IMPORT_DEADLINE:
                dismissed.append((ctype, state.pending))
                state.pending, state.pending_since = None, None
        return dismissed

    # -- root -------------------------------------------------------------------------

    def install_root(self, certificate: bytes | str, now: _dt.datetime) -> DlmsCertificate:
        """Production, or the firmware-update path (§3.5.2.1): set/replace the trust anchor.
        The new root must be a self-signed CA verified by its own key."""
        cert = parse_certificate(certificate, suite=self.suite, now=now)
        if not cert.is_ca or not cert.self_signed:
            raise CertificateChainError(f"{cert.subject_text} is not a self-signed CA")
        _verify_issued_by(cert, cert)
        self._root = cert
        return cert

    # -- import -----------------------------------------------------------------------

    def import_certificate(self, certificate: bytes | str, now: _dt.datetime, *,
                           client: int | None = None) -> ImportResult:
        """IC 64 import_certificate. `client` is the SAP of the client whose security setup
        received the call; it is needed for client certificates and otherwise ignored.

        Checks, in order: profile and validity at `now`; kind (roots are refused: they come
        by firmware update); chain up to the installed root with signatures, name chaining,
        CA flags, path length and validity of every link; then the slot rules.
        """
        now = _check_now(now)
        cert = parse_certificate(certificate, suite=self.suite, now=now)
        if cert.is_ca and cert.self_signed:
            raise RootImportNotAllowedError(
                "a root certificate is installed in production or by firmware update")
        root = self._root
        if root is None:
            raise NoTrustAnchorError("no root certificate installed")
        root.check_validity(now)

        if cert.is_ca:
            self._check_chain(cert, root)
            if any(c.der == cert.der for c in self._sub_cas):
                return ImportResult(cert, CertificateEntity.CERTIFICATION_AUTHORITY,
                                    already_present=True)
            if len(self._sub_cas) >= SUB_CA_CAPACITY:
                raise CapacityExceededError(
                    f"all {SUB_CA_CAPACITY} sub-CA slots are taken; remove one first")
            self._sub_cas.append(cert)
            return ImportResult(cert, CertificateEntity.CERTIFICATION_AUTHORITY)

        sub_ca = self._find_issuer(cert)
        sub_ca.check_validity(now)
        self._check_chain(sub_ca, root)

        if cert.certificate_type not in (CertificateType.DIGITAL_SIGNATURE,
                                         CertificateType.KEY_AGREEMENT):
            raise UnsupportedCertificateTypeError(
                f"{cert.certificate_type.name} certificates are not used by this meter")
        if cert.system_title == self.server_system_title:
            return self._import_server(cert, now)
        return self._import_client(cert, client)

    def _check_chain(self, ca: DlmsCertificate, root: DlmsCertificate) -> None:
        """`ca` (a sub-CA) must be issued by `root`; the root's pathLen must allow it.
        The hierarchy has exactly two CA levels (§3.5.2), so nothing sits between them."""
        if ca.authority_key_identifier is not None and root.subject_key_identifier is not None \
                and ca.authority_key_identifier != root.subject_key_identifier \
                and ca.issuer == root.subject:
            raise CertificateSignatureError(
                f"{ca.subject_text} names another key of {root.subject_text} (authority key id)")
        _verify_issued_by(ca, root)
        # pathLenConstraint counts the intermediate CA certificates that may follow the
        # root: here exactly one, the sub-CA.
        if root.path_length is not None and root.path_length < 1:
            raise PathLengthError(
                f"{root.subject_text} has pathLenConstraint {root.path_length}, which forbids "
                f"the sub-CA {ca.subject_text}")

    def _find_issuer(self, cert: DlmsCertificate) -> DlmsCertificate:
        named = [c for c in self._sub_cas if c.subject == cert.issuer]
        if not named:
            raise UnknownIssuerError(f"no installed sub-CA is {cert.issuer_text}")
        keyed = [c for c in named if cert.authority_key_identifier is None
                 or c.subject_key_identifier is None
                 or c.subject_key_identifier == cert.authority_key_identifier] or named
        last_error: CertificateChainError | None = None
        for candidate in keyed:
            try:
                _verify_issued_by(cert, candidate)
            except CertificateChainError as exc:
                last_error = exc
                continue
            return candidate
        assert last_error is not None
        raise last_error

    def _import_server(self, cert: DlmsCertificate, now: _dt.datetime) -> ImportResult:
        self._check_pin("server", cert)
        ctype = cert.certificate_type
        state = self._keys.get(ctype, _KeyPairState())
        if state.pending is not None and now - state.pending_since > KEY_PAIR_IMPORT_DEADLINE:
            state.pending, state.pending_since = None, None  # the 24 h window has passed
        old = self._server.get(ctype)
        if old is not None and old.der == cert.der:
            return ImportResult(cert, CertificateEntity.SERVER, already_present=True)
        if state.pending is not None and cert.public_key_der == state.pending:
            state.current, state.pending, state.pending_since = state.pending, None, None
            self._keys[ctype] = state
            self._server[ctype] = cert
            return ImportResult(cert, CertificateEntity.SERVER, replaced=old,
                                key_pair_activated=True)
        if state.current is not None and cert.public_key_der == state.current:
            self._server[ctype] = cert
            return ImportResult(cert, CertificateEntity.SERVER, replaced=old)
        raise KeyMismatchError(
            "the certificate's public key is neither the meter's key pair nor a new key pair "
            "generated within the last 24 h")

    def _import_client(self, cert: DlmsCertificate, client: int | None) -> ImportResult:
        if client is None or client not in self._client_certs:
            raise UnknownClientError(
                f"client {client!r} holds no certificates (HLS 7 clients: {list(self.clients)})")
        self._check_pin(client, cert)
        certs = self._client_certs[client]
        if any(c.der == cert.der for c in certs):
            return ImportResult(cert, CertificateEntity.CLIENT, client, already_present=True)
        same_type = [c for c in certs if c.certificate_type == cert.certificate_type]
        if len(same_type) >= CLIENT_CERTIFICATE_CAPACITY:
            raise CapacityExceededError(
                f"client {client} already has {CLIENT_CERTIFICATE_CAPACITY} "
                f"{cert.certificate_type.name.lower()} certificates; remove one first")
        certs.append(cert)
        return ImportResult(cert, CertificateEntity.CLIENT, client)

    # -- export / remove ---------------------------------------------------------------

    def _matches(self, identification: CertificateIdentification, client: int | None
                 ) -> list[tuple[CertificateEntity, int | None, DlmsCertificate]]:
        found = []
        for entity, owner, cert in self._entries():
            if client is not None and entity == CertificateEntity.CLIENT and owner != client:
                continue
            if isinstance(identification, CertificateIdentificationBySerial):
                if (serial_from_bytes(identification.serial_number) == cert.serial_number
                        and bytes(identification.issuer) == cert.issuer):
                    found.append((entity, owner, cert))
            elif isinstance(identification, CertificateIdentificationByEntity):
                if (entity == identification.certificate_entity
                        and cert.certificate_type == identification.certificate_type
                        and cert.system_title == bytes(identification.system_title)):
                    found.append((entity, owner, cert))
            else:
                raise TypeError("identification must be by entity or by serial")
        return found

    def export_certificate(self, identification: CertificateIdentification, *,
                           client: int | None = None) -> bytes:
        """IC 64 export_certificate: the DER certificate. By entity, when two client
        certificates share a system title, the one imported last is returned."""
        found = self._matches(identification, client)
        if not found:
            raise CertificateNotFoundError("no certificate matches the identification")
        return found[-1][2].der

    def remove_certificate(self, identification: CertificateIdentification, *,
                           client: int | None = None) -> DlmsCertificate:
        """IC 64 remove_certificate. Refuses the root and the meter's own certificates,
        ambiguous identifications, and the last digital-signature certificate of a client."""
        found = self._matches(identification, client)
        if not found:
            raise CertificateNotFoundError("no certificate matches the identification")
        if len(found) > 1:
            raise AmbiguousIdentificationError(
                f"{len(found)} certificates match; identify by serial number and issuer")
        entity, owner, cert = found[0]
        if cert is self._root:
            raise RemovalNotAllowedError("the root certificate is replaced by firmware update")
        if entity == CertificateEntity.SERVER:
            raise RemovalNotAllowedError("the meter's certificate is replaced, never removed")
        if entity == CertificateEntity.CERTIFICATION_AUTHORITY:
            self._sub_cas.remove(cert)
            return cert
        certs = self._client_certs[owner]
        if cert.certificate_type == CertificateType.DIGITAL_SIGNATURE and sum(
                c.certificate_type == CertificateType.DIGITAL_SIGNATURE for c in certs) <= 1:
            raise LastCertificateError(
                f"it is the last digital-signature certificate of client {owner}; import "
                "its successor first")
        certs.remove(cert)
        return cert

    # -- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot: certificates as base64 DER, keys as base64 SPKI. No secrets."""
        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode("ascii")

        return {
            "format": "smartmeter-certificate-store/1",
            "suite": self.suite,
            "server_system_title": self.server_system_title.hex(),
            "clients": list(self.clients),
            "root": b64(self._root.der) if self._root is not None else None,
            "sub_cas": [b64(c.der) for c in self._sub_cas],
            "server": {str(int(t)): b64(c.der) for t, c in sorted(self._server.items())},
            "client_certificates": {str(k): [b64(c.der) for c in v]
                                    for k, v in self._client_certs.items()},
            "key_pairs": {
                str(int(t)): {
                    "current": b64(s.current) if s.current is not None else None,
                    "pending": b64(s.pending) if s.pending is not None else None,
                    "pending_since": s.pending_since.isoformat() if s.pending_since else None,
                } for t, s in sorted(self._keys.items())
            },
            "issuer_pins": {k: b64(v) for k, v in sorted(self._issuer_pins.items())},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "CertificateStore":
        """Rebuild a store. Certificates are re-parsed against the profile but chains and
        validity are not re-checked: they were checked at import (§3.5.2.1). Any damage
        raises StoreFormatError."""
        try:
            return cls._from_dict(state)
        except CertificateError as exc:
            if isinstance(exc, StoreFormatError):
                raise
            raise StoreFormatError(f"stored certificate refused: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise StoreFormatError(f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_dict(cls, state: dict[str, Any]) -> "CertificateStore":
        if not isinstance(state, dict) or state.get("format") != "smartmeter-certificate-store/1":
            raise StoreFormatError("unknown or missing format marker")

        def unb64(s: str) -> bytes:
            if not isinstance(s, str):
                raise TypeError("expected base64 text")
            return base64.b64decode(s.encode("ascii"), validate=True)

        suite = state["suite"]
        if suite not in SUITE_CURVES:
            raise StoreFormatError(f"suite {suite!r}")
        store = cls(bytes.fromhex(state["server_system_title"]), suite=suite,
                    clients=[int(c) for c in state["clients"]])

        def load(s: str) -> DlmsCertificate:
            return parse_certificate(unb64(s), suite=suite)

        if state["root"] is not None:
            store._root = load(state["root"])
        store._sub_cas = [load(s) for s in state["sub_cas"]]
        if len(store._sub_cas) > SUB_CA_CAPACITY:
            raise StoreFormatError("more sub-CA certificates than slots")
        for t, s in state["server"].items():
            store._server[CertificateType(int(t))] = load(s)
        for k, v in state["client_certificates"].items():
            if int(k) not in store._client_certs:
                raise StoreFormatError(f"certificates for unknown client {k}")
            store._client_certs[int(k)] = [load(s) for s in v]
        for t, s in state["key_pairs"].items():
            since = s["pending_since"]
            st = _KeyPairState(
                current=unb64(s["current"]) if s["current"] is not None else None,
                pending=unb64(s["pending"]) if s["pending"] is not None else None,
                pending_since=_check_now(_dt.datetime.fromisoformat(since)) if since else None)
            if (st.pending is None) != (st.pending_since is None):
                raise StoreFormatError("pending key without its time, or the reverse")
            store._keys[CertificateType(int(t))] = st
        for owner, pin in state.get("issuer_pins", {}).items():
            store.pin_issuer("server" if owner == "server" else int(owner), unb64(pin))
        return store
