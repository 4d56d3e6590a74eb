"""ECDSA for suites 1 and 2 in DLMS's wire forms.

DLMS carries an ECDSA signature as r || s, each exactly one coordinate long (64 bytes for
P-256, 96 for P-384), not as the DER SEQUENCE that X.509 and OpenSSL use; public keys
travel as x || y (the uncompressed point without its 0x04 prefix). Suite 1 signs with
SHA-256 on P-256, suite 2 with SHA-384 on P-384.
"""
from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from smartmeter.dlms.security.errors import AuthenticationError, InvalidKeyError, SecurityControlError
from smartmeter.dlms.security.suites import SuiteParameters, suite_parameters

__all__ = [
    "generate_private_key",
    "suite_of_key",
    "sign",
    "verify",
    "signature_to_der",
    "signature_from_der",
    "public_key_to_bytes",
    "public_key_from_bytes",
]


_ECDSA: dict[int, ec.ECDSA] = {}


def _ecdsa(params: SuiteParameters) -> ec.ECDSA:
    """The suite's ECDSA signature algorithm, made once (building it costs more than hashing
    the few bytes an HLS 7 pass signs)."""
    algorithm = _ECDSA.get(params.suite)
    if algorithm is None:
        algorithm = _ECDSA[params.suite] = ec.ECDSA(params.hash_algorithm())
    return algorithm


def _public_suite(suite: int) -> SuiteParameters:
    params = suite_parameters(suite)
    if not params.has_public_key:
        raise SecurityControlError("security suite", None, f"suite {int(suite)} has no public-key algorithms")
    return params


def generate_private_key(suite: int) -> ec.EllipticCurvePrivateKey:
    """A fresh key pair on the suite's curve (OpenSSL's CSPRNG)."""
    return ec.generate_private_key(_public_suite(suite).curve())


def suite_of_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> SuiteParameters:
    """Suite 1 for a P-256 key, suite 2 for a P-384 key; InvalidKeyError otherwise."""
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        raise InvalidKeyError(f"expected an EC key, got {type(key).__name__}")
    for suite in (1, 2):
        params = suite_parameters(suite)
        if isinstance(key.curve, params.curve):
            return params
    raise InvalidKeyError(f"curve {key.curve.name} belongs to no DLMS security suite")


def _check_suite(key, suite: int | None) -> SuiteParameters:
    params = suite_of_key(key)
    if suite is not None and params.suite != _public_suite(suite).suite:
        raise InvalidKeyError(f"a {key.curve.name} key cannot be used with suite {int(suite)}")
    return params


def signature_from_der(der: bytes, coordinate_length: int) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(coordinate_length, "big") + s.to_bytes(coordinate_length, "big")


def signature_to_der(signature: bytes, coordinate_length: int) -> bytes:
    if len(signature) != 2 * coordinate_length:
        raise AuthenticationError(f"signature must be {2 * coordinate_length} bytes, got {len(signature)}")
    r = int.from_bytes(signature[:coordinate_length], "big")
    s = int.from_bytes(signature[coordinate_length:], "big")
    return encode_dss_signature(r, s)


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes, suite: int | None = None) -> bytes:
    """r || s over `data` with the hash of the key's suite (checked against `suite` if given)."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise InvalidKeyError(f"expected an EC private key, got {type(private_key).__name__}")
    params = _check_suite(private_key, suite)
    der = private_key.sign(bytes(data), _ecdsa(params))
    return signature_from_der(der, params.coordinate_length)


def verify(
    public_key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes, suite: int | None = None
) -> None:
    """AuthenticationError unless `signature` (r || s) is valid for `data`."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidKeyError(f"expected an EC public key, got {type(public_key).__name__}")
    params = _check_suite(public_key, suite)
    if not isinstance(signature, (bytes, bytearray)):
        raise AuthenticationError(f"signature must be bytes, got {type(signature).__name__}")
    der = signature_to_der(bytes(signature), params.coordinate_length)
    try:
        public_key.verify(der, bytes(data), _ecdsa(params))
    except InvalidSignature:
        raise AuthenticationError("ECDSA signature does not verify") from None


def public_key_to_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """x || y, each one coordinate long."""
    params = suite_of_key(public_key)
    numbers = public_key.public_numbers()
    return numbers.x.to_bytes(params.coordinate_length, "big") + numbers.y.to_bytes(params.coordinate_length, "big")


def public_key_from_bytes(suite: int, data: bytes) -> ec.EllipticCurvePublicKey:
    """The point x || y on the suite's curve; InvalidKeyError if the size is wrong or the
    point is not on the curve."""
    params = _public_suite(suite)
    if not isinstance(data, (bytes, bytearray)) or len(data) != params.public_key_length:
        raise InvalidKeyError(f"public key must be {params.public_key_length} bytes of x || y")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(params.curve(), b"\x04" + bytes(data))
    except ValueError:
        raise InvalidKeyError("public key is not a point on the curve") from None
