"""Key transfer (AES key wrap) and key agreement (ECDH C(2e, 0s)) of the Security Setup
interface class (IC 64), companion standard §3.5.3.

Key transfer (IC 64 method 2, `key_transfer`): data ::= array of
  structure { key_id: enum, key_wrapped: octet-string }
with key_id 0 global unicast encryption key, 1 global broadcast encryption key,
2 (global) authentication key, 3 master key (KEK); key_wrapped is the new key wrapped
with the current master key by the AES key wrap of RFC 3394 (default IV A6A6A6A6A6A6A6A6).

Key agreement (IC 64 method 3, `key_agreement`), Ephemeral Unified Model
C(2e, 0s, ECC CDH) of NIST SP 800-56A: data ::= array of
  structure { key_id: enum, key_ciphered_data: octet-string }
where key_ciphered_data = ephemeral public key (x || y) || signature (r || s) over
key_id (1 byte) || x || y, signed with the sender's digital-signature key. The client
sends its ephemeral key, the server answers with its own in the same form. Both compute
Z = ECDH(own ephemeral private, peer ephemeral public) and derive the key with the
concatenation KDF (SP 800-56A §5.8.1, one-step, hash = SHA-256 / SHA-384):
  key = H(00000001 || Z || OtherInfo)[:key length],
  OtherInfo = AlgorithmID || PartyUInfo (client system title) || PartyVInfo (server
  system title), SuppPubInfo and SuppPrivInfo empty.
Layout and OtherInfo as in Gurux.DLMS.Net GXDLMSSecuritySetup (KeyAgreement /
its response parser) and gurux.dlms.java GXSecure.generateKDF; AlgorithmID defaults to
the suite's AES-GCM OID (2.16.756.5.8.3.0 / .1), which is what Gurux uses for every key id.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smartmeter.cosem.data import Data, DataType
from smartmeter.dlms.security import signing
from smartmeter.dlms.security.errors import AuthenticationError, InvalidKeyError, KeyUnwrapError, SecurityEncodeError
from smartmeter.dlms.security.suites import SYSTEM_TITLE_LENGTH, SuiteParameters, _check_bytes, suite_parameters
from smartmeter.errors import DecodeError

__all__ = [
    "KeyId",
    "wrap_key",
    "unwrap_key",
    "KeyTransfer",
    "encode_key_transfer",
    "decode_key_transfer",
    "concat_kdf",
    "KeyAgreementData",
    "encode_key_agreement",
    "decode_key_agreement",
    "ephemeral_offer",
    "verify_ephemeral_offer",
    "derive_agreed_key",
    "server_key_agreement",
    "client_key_agreement_result",
]


class KeyId(IntEnum):
    GLOBAL_UNICAST_ENCRYPTION = 0
    GLOBAL_BROADCAST_ENCRYPTION = 1
    AUTHENTICATION = 2
    MASTER = 3


# ---------------------------------------------------------------------------------------
# AES key wrap (RFC 3394)
# ---------------------------------------------------------------------------------------


def _aes_key(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) not in (16, 32):
        raise InvalidKeyError(f"{what} must be a 16- or 32-byte AES key")
    return bytes(value)


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """RFC 3394 wrap of `key` (16 or 32 bytes) with the master key `kek`; 8 bytes longer."""
    return aes_key_wrap(_aes_key(kek, "master key (KEK)"), _aes_key(key, "key to wrap"))


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 unwrap; KeyUnwrapError on a wrong KEK, damaged data or a wrong length."""
    kek = _aes_key(kek, "master key (KEK)")
    if not isinstance(wrapped, (bytes, bytearray)) or len(wrapped) not in (24, 40):
        raise KeyUnwrapError("a wrapped AES-128/256 key is 24 or 40 bytes")
    try:
        return aes_key_unwrap(kek, bytes(wrapped))
    except (InvalidUnwrap, ValueError):
        raise KeyUnwrapError("key unwrap integrity check failed") from None


# ---------------------------------------------------------------------------------------
# key_transfer data (IC 64 method 2)
# ---------------------------------------------------------------------------------------


def _key_id(value: object) -> KeyId:
    try:
        return KeyId(value)
    except (ValueError, TypeError):
        raise SecurityEncodeError(f"{value!r} is not a key id (0..3)") from None


def _struct_items(item: object, what: str, index: int) -> tuple[int, bytes]:
    """(enum, octet-string) from one `structure { enum, octet-string }`."""
    if (
        not isinstance(item, Data)
        or item.type != DataType.STRUCTURE
        or len(item.value) != 2
        or item.value[0].type != DataType.ENUM
        or item.value[1].type != DataType.OCTET_STRING
    ):
        raise DecodeError(what, index, "expected structure { enum, octet-string }")
    return item.value[0].value, item.value[1].value


def _struct_array(data: object, what: str) -> tuple:
    if not isinstance(data, Data) or data.type != DataType.ARRAY:
        raise DecodeError(what, None, "expected an array")
    if not data.value:
        raise DecodeError(what, None, "empty array")
    return data.value


@dataclass(frozen=True)
class KeyTransfer:
    """One element of key_transfer: which key, and the new key wrapped with the KEK."""

    key_id: KeyId
    wrapped_key: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", _key_id(self.key_id))
        if not isinstance(self.wrapped_key, bytes):
            raise SecurityEncodeError("wrapped_key must be bytes")

    @classmethod
    def wrap(cls, kek: bytes, key_id: KeyId | int, key: bytes) -> KeyTransfer:
        return cls(_key_id(key_id), wrap_key(kek, key))

    def unwrap(self, kek: bytes) -> bytes:
        return unwrap_key(kek, self.wrapped_key)

    def to_data(self) -> Data:
        return Data.structure((Data.enum(int(self.key_id)), Data.octet_string(self.wrapped_key)))

    @classmethod
    def from_data(cls, item: Data, index: int = 0) -> KeyTransfer:
        key_id, wrapped = _struct_items(item, "key_transfer element", index)
        if key_id not in KeyId._value2member_map_:
            raise DecodeError("key_transfer element", index, f"key id {key_id} is not 0..3")
        return cls(KeyId(key_id), wrapped)


def encode_key_transfer(items: Sequence[KeyTransfer]) -> Data:
    """The key_transfer method parameter: array of structure { key_id, key_wrapped }."""
    items = tuple(items)
    if not items or not all(isinstance(i, KeyTransfer) for i in items):
        raise SecurityEncodeError("key_transfer needs at least one KeyTransfer")
    return Data.array(i.to_data() for i in items)


def decode_key_transfer(data: Data) -> tuple[KeyTransfer, ...]:
    """Elements of a key_transfer parameter; DecodeError if its shape is wrong."""
    return tuple(KeyTransfer.from_data(item, n) for n, item in enumerate(_struct_array(data, "key_transfer")))


# ---------------------------------------------------------------------------------------
# Concatenation KDF (NIST SP 800-56A)
# ---------------------------------------------------------------------------------------


def concat_kdf(
    suite: int,
    shared_secret: bytes,
    party_u_info: bytes,
    party_v_info: bytes,
    algorithm_id: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """Key = SP 800-56A one-step KDF with the suite's hash over Z and
    OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo (fixed-length fields, no lengths).

    Defaults: AlgorithmID = the suite's AES-GCM OID, length = the suite's key length.
    """
    params = _public_suite(suite)
    algorithm_id = params.gcm_algorithm_id if algorithm_id is None else algorithm_id
    for value, what in ((shared_secret, "shared secret"), (algorithm_id, "AlgorithmID")):
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise SecurityEncodeError(f"{what} must be non-empty bytes")
    other_info = (
        bytes(algorithm_id)
        + _check_bytes(party_u_info, SYSTEM_TITLE_LENGTH, "PartyUInfo (client system title)")
        + _check_bytes(party_v_info, SYSTEM_TITLE_LENGTH, "PartyVInfo (server system title)")
    )
    length = params.key_length if length is None else length
    if type(length) is not int or not 1 <= length <= 64:
        raise SecurityEncodeError(f"KDF output length must be 1..64 bytes, got {length!r}")
    return ConcatKDFHash(params.hash_algorithm(), length, other_info).derive(bytes(shared_secret))


def _public_suite(suite: int) -> SuiteParameters:
    params = suite_parameters(suite)
    if not params.has_public_key:
        raise InvalidKeyError(f"suite {int(suite)} has no key agreement")
    return params


# ---------------------------------------------------------------------------------------
# key_agreement data (IC 64 method 3), C(2e, 0s)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAgreementData:
    """One element of key_agreement: key id and ephemeral public key || signature."""

    key_id: KeyId
    key_ciphered_data: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", _key_id(self.key_id))
        if not isinstance(self.key_ciphered_data, bytes):
            raise SecurityEncodeError("key_ciphered_data must be bytes")

    def to_data(self) -> Data:
        return Data.structure((Data.enum(int(self.key_id)), Data.octet_string(self.key_ciphered_data)))

    @classmethod
    def from_data(cls, item: Data, index: int = 0) -> KeyAgreementData:
        key_id, ciphered = _struct_items(item, "key_agreement element", index)
        if key_id not in KeyId._value2member_map_:
            raise DecodeError("key_agreement element", index, f"key id {key_id} is not 0..3")
        return cls(KeyId(key_id), ciphered)


def encode_key_agreement(items: Sequence[KeyAgreementData]) -> Data:
    items = tuple(items)
    if not items or not all(isinstance(i, KeyAgreementData) for i in items):
        raise SecurityEncodeError("key_agreement needs at least one KeyAgreementData")
    return Data.array(i.to_data() for i in items)


def decode_key_agreement(data: Data) -> tuple[KeyAgreementData, ...]:
    return tuple(
        KeyAgreementData.from_data(item, n) for n, item in enumerate(_struct_array(data, "key_agreement"))
    )


def _signed_ephemeral(key_id: KeyId, public_bytes: bytes) -> bytes:
    return bytes((int(key_id),)) + public_bytes


def ephemeral_offer(
    suite: int,
    key_id: KeyId | int,
    signing_key: ec.EllipticCurvePrivateKey,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, KeyAgreementData]:
    """(ephemeral private key, element to send): Q_e || ECDSA(key_id || Q_e).

    A fresh ephemeral key is generated unless one is given (tests and fixtures only).
    """
    params = _public_suite(suite)
    key_id = _key_id(key_id)
    if ephemeral_key is None:
        ephemeral_key = signing.generate_private_key(params.suite)
    if signing.suite_of_key(ephemeral_key).suite != params.suite:
        raise InvalidKeyError("ephemeral key is not on the suite's curve")
    public_bytes = signing.public_key_to_bytes(ephemeral_key.public_key())
    signature = signing.sign(signing_key, _signed_ephemeral(key_id, public_bytes), params.suite)
    return ephemeral_key, KeyAgreementData(key_id, public_bytes + signature)


def verify_ephemeral_offer(
    suite: int, offer: KeyAgreementData, peer_signing_public_key: ec.EllipticCurvePublicKey
) -> ec.EllipticCurvePublicKey:
    """The peer's ephemeral public key after checking its signature (AuthenticationError)
    and its size/point (InvalidKeyError)."""
    params = _public_suite(suite)
    expected = params.public_key_length + params.signature_length
    if len(offer.key_ciphered_data) != expected:
        raise InvalidKeyError(
            f"key_ciphered_data must be {expected} bytes (public key || signature), got {len(offer.key_ciphered_data)}"
        )
    public_bytes = offer.key_ciphered_data[: params.public_key_length]
    signature = offer.key_ciphered_data[params.public_key_length :]
    signing.verify(peer_signing_public_key, _signed_ephemeral(offer.key_id, public_bytes), signature, params.suite)
    return signing.public_key_from_bytes(params.suite, public_bytes)


def derive_agreed_key(
    suite: int,
    own_ephemeral_key: ec.EllipticCurvePrivateKey,
    peer_ephemeral_public_key: ec.EllipticCurvePublicKey,
    client_system_title: bytes,
    server_system_title: bytes,
    algorithm_id: bytes | None = None,
) -> bytes:
    """Z = ECDH(own, peer); key = KDF(Z, AlgorithmID, SysT-C, SysT-S)."""
    params = _public_suite(suite)
    for key in (own_ephemeral_key, peer_ephemeral_public_key):
        if signing.suite_of_key(key).suite != params.suite:
            raise InvalidKeyError("ephemeral key is not on the suite's curve")
    shared_secret = own_ephemeral_key.exchange(ec.ECDH(), peer_ephemeral_public_key)
    return concat_kdf(params.suite, shared_secret, client_system_title, server_system_title, algorithm_id)


def server_key_agreement(
    suite: int,
    request: KeyAgreementData,
    client_signing_public_key: ec.EllipticCurvePublicKey,
    server_signing_key: ec.EllipticCurvePrivateKey,
    client_system_title: bytes,
    server_system_title: bytes,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
    algorithm_id: bytes | None = None,
) -> tuple[KeyAgreementData, bytes]:
    """Server side of one key_agreement element: (response element, new key)."""
    client_ephemeral = verify_ephemeral_offer(suite, request, client_signing_public_key)
    server_ephemeral, response = ephemeral_offer(suite, request.key_id, server_signing_key, ephemeral_key)
    key = derive_agreed_key(
        suite, server_ephemeral, client_ephemeral, client_system_title, server_system_title, algorithm_id
    )
    return response, key


def client_key_agreement_result(
    suite: int,
    own_ephemeral_key: ec.EllipticCurvePrivateKey,
    response: KeyAgreementData,
    server_signing_public_key: ec.EllipticCurvePublicKey,
    client_system_title: bytes,
    server_system_title: bytes,
    algorithm_id: bytes | None = None,
    expected_key_id: KeyId | int | None = None,
) -> bytes:
    """Client side, after the server answered: the new key.

    `expected_key_id` (the key id the client asked for) is checked when given.
    """
    if expected_key_id is not None and response.key_id != _key_id(expected_key_id):
        raise AuthenticationError(f"response is for key id {int(response.key_id)}, not {int(expected_key_id)}")
    server_ephemeral = verify_ephemeral_offer(suite, response, server_signing_public_key)
    return derive_agreed_key(
        suite, own_ephemeral_key, server_ephemeral, client_system_title, server_system_title, algorithm_id
    )
