"""DLMS security suites 0/1/2, the security control byte, and AES-GCM protection of APDUs.

Green Book (DLMS UA 1000-2) security as used by the companion standard §3.1/§3.5:

* suite 0: AES-GCM-128, AES-128 key wrap;
* suite 1: suite 0 + ECDSA P-256/SHA-256, ECDH P-256, SHA-256 KDF;
* suite 2: AES-GCM-256, AES-256 key wrap, ECDSA P-384/SHA-384, ECDH P-384, SHA-384 KDF.

Protection of one APDU (the "ciphered content" of every ciphered APDU):

* security control byte SC: bits 0..3 suite id, 0x10 authentication, 0x20 encryption,
  0x40 broadcast key, 0x80 compression;
* IV = system title of the party that applies the protection (8 bytes) || invocation
  counter (4 bytes, big-endian);
* AAD = SC || AK [|| extra] — `extra` is the challenge for HLS-GMAC and the
  transaction-id..other-information fields for general-ciphering;
* authentication only: output plaintext || GMAC tag with AAD || plaintext;
  encryption only: output ciphertext, no tag; both: ciphertext || tag;
* tags are the first 12 bytes of the GCM tag.

The GCM key is always the (unicast, broadcast or dedicated) encryption key EK; the
authentication key AK only ever enters through the AAD.

On the wire the protected bytes are preceded by SC and the invocation counter:
`SC || IC || ciphertext || tag` (`ProtectedContent`).
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smartmeter.dlms.security.errors import (
    AuthenticationError,
    InvalidKeyError,
    ProtectedTruncatedError,
    SecurityControlError,
    SecurityEncodeError,
)

__all__ = [
    "SecuritySuite",
    "SuiteParameters",
    "SUITES",
    "suite_parameters",
    "SecurityControl",
    "SC_AUTHENTICATION",
    "SC_ENCRYPTION",
    "SC_BROADCAST",
    "SC_COMPRESSION",
    "SC_SUITE_MASK",
    "TAG_LENGTH",
    "SYSTEM_TITLE_LENGTH",
    "INVOCATION_COUNTER_MAX",
    "make_iv",
    "protect",
    "unprotect",
    "ProtectedContent",
    "protect_content",
    "unprotect_content",
]

SC_SUITE_MASK = 0x0F
SC_AUTHENTICATION = 0x10
SC_ENCRYPTION = 0x20
SC_BROADCAST = 0x40
SC_COMPRESSION = 0x80

TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
INVOCATION_COUNTER_MAX = 0xFFFFFFFF


class SecuritySuite(IntEnum):
    SUITE_0 = 0
    SUITE_1 = 1
    SUITE_2 = 2


@dataclass(frozen=True)
class SuiteParameters:
    """What one security suite fixes (Green Book 9.2.3.7, "security suites")."""

    suite: SecuritySuite
    name: str
    # EK, AK, KEK and dedicated keys all have this length (bytes).
    key_length: int
    # OIDs of the DLMS UA arc 2.16.756.5.8.3 in BER contents form (no tag/length):
    # .0 aes-gcm-128, .1 aes-gcm-256, .2 aes-wrap-128, .3 aes-wrap-256. The KDF uses
    # them as AlgorithmID (gurux GXSecure uses 60857405080300 for AES-GCM-128).
    gcm_algorithm_id: bytes
    wrap_algorithm_id: bytes
    # Public-key part (None for suite 0).
    curve: type[ec.EllipticCurve] | None
    hash_algorithm: type[hashes.HashAlgorithm] | None
    # Bytes of one coordinate / one signature half (r or s).
    coordinate_length: int

    @property
    def has_public_key(self) -> bool:
        return self.curve is not None

    @property
    def signature_length(self) -> int:
        """ECDSA signatures travel as r || s, each `coordinate_length` bytes."""
        return 2 * self.coordinate_length

    @property
    def public_key_length(self) -> int:
        """Public keys travel as x || y (uncompressed point without the 0x04 byte)."""
        return 2 * self.coordinate_length


_DLMS_ALGORITHM_ARC = bytes.fromhex("608574050803")  # 2.16.756.5.8.3

SUITES: dict[SecuritySuite, SuiteParameters] = {
    SecuritySuite.SUITE_0: SuiteParameters(
        SecuritySuite.SUITE_0, "AES-GCM-128", 16,
        _DLMS_ALGORITHM_ARC + b"\x00", _DLMS_ALGORITHM_ARC + b"\x02", None, None, 0,
    ),
    SecuritySuite.SUITE_1: SuiteParameters(
        SecuritySuite.SUITE_1, "ECDH-ECDSA-AES-GCM-128-SHA-256", 16,
        _DLMS_ALGORITHM_ARC + b"\x00", _DLMS_ALGORITHM_ARC + b"\x02", ec.SECP256R1, hashes.SHA256, 32,
    ),
    SecuritySuite.SUITE_2: SuiteParameters(
        SecuritySuite.SUITE_2, "ECDH-ECDSA-AES-GCM-256-SHA-384", 32,
        _DLMS_ALGORITHM_ARC + b"\x01", _DLMS_ALGORITHM_ARC + b"\x03", ec.SECP384R1, hashes.SHA384, 48,
    ),
}


def suite_parameters(suite: int) -> SuiteParameters:
    """Parameters of suite 0, 1 or 2; SecurityControlError for any other number."""
    try:
        # the same lookup as SUITES[SecuritySuite(suite)] (an enum finds members by value
        # hash too), without the enum call on every protected APDU
        params = SUITES.get(suite)
    except TypeError:  # unhashable
        params = None
    if params is None:
        raise SecurityControlError("security suite", None, f"{suite!r} is not suite 0, 1 or 2")
    return params


# ---------------------------------------------------------------------------------------
# Security control byte
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecurityControl:
    """The security control byte (Green Book 9.2.7.2.4 / security header)."""

    suite: int = 0
    authentication: bool = False
    encryption: bool = False
    broadcast: bool = False
    compression: bool = False

    def __post_init__(self) -> None:
        if type(self.suite) is not int and not isinstance(self.suite, IntEnum):
            raise SecurityEncodeError(f"suite must be an int in 0..15, got {self.suite!r}")
        if not 0 <= int(self.suite) <= SC_SUITE_MASK:
            raise SecurityEncodeError(f"suite must be an int in 0..15, got {self.suite!r}")

    def to_byte(self) -> int:
        return (
            int(self.suite)
            | (SC_AUTHENTICATION if self.authentication else 0)
            | (SC_ENCRYPTION if self.encryption else 0)
            | (SC_BROADCAST if self.broadcast else 0)
            | (SC_COMPRESSION if self.compression else 0)
        )

    @classmethod
    def from_byte(cls, sc: int) -> SecurityControl:
        if type(sc) is not int or not 0 <= sc <= 0xFF:
            raise SecurityEncodeError(f"security control must be an int in 0..255, got {sc!r}")
        return cls(
            sc & SC_SUITE_MASK,
            bool(sc & SC_AUTHENTICATION),
            bool(sc & SC_ENCRYPTION),
            bool(sc & SC_BROADCAST),
            bool(sc & SC_COMPRESSION),
        )


SecurityControlLike = Union[int, SecurityControl]


def _sc_byte(sc: SecurityControlLike) -> int:
    if type(sc) is int and 0 <= sc <= 0xFF:  # the common case, checked first
        return sc
    if isinstance(sc, SecurityControl):
        return sc.to_byte()
    if type(sc) is not int or not 0 <= sc <= 0xFF:
        raise SecurityEncodeError(f"security control must be an int in 0..255, got {sc!r}")
    return sc


def _usable_sc(sc: int) -> SuiteParameters:
    """Suite parameters for an SC byte we can apply/remove; SecurityControlError if not."""
    if sc & SC_COMPRESSION:
        raise SecurityControlError("security control", None, f"0x{sc:02X}: compression is not supported")
    if not sc & (SC_AUTHENTICATION | SC_ENCRYPTION):
        raise SecurityControlError("security control", None, f"0x{sc:02X} applies no protection")
    return suite_parameters(sc & SC_SUITE_MASK)


# ---------------------------------------------------------------------------------------
# AES-GCM
# ---------------------------------------------------------------------------------------


def _check_bytes(value: object, length: int | None, what: str) -> bytes:
    if type(value) is bytes and (length is None or len(value) == length):  # the common case: no copy
        return value
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidKeyError(f"{what} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if length is not None and len(value) != length:
        raise InvalidKeyError(f"{what} must be {length} bytes, got {len(value)}")
    return value


def _check_counter(counter: object) -> int:
    if type(counter) is not int or not 0 <= counter <= INVOCATION_COUNTER_MAX:
        raise SecurityEncodeError(f"invocation counter must be an int in 0..0xFFFFFFFF, got {counter!r}")
    return counter


def make_iv(system_title: bytes, counter: int) -> bytes:
    """IV = system title (8 bytes) || invocation counter (4 bytes, big-endian)."""
    return _check_bytes(system_title, SYSTEM_TITLE_LENGTH, "system title") + _check_counter(counter).to_bytes(4, "big")


GCM_FULL_TAG_LENGTH = 16


def _gcm_seal(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """ciphertext || the full 16-byte GCM tag, in one call (AESGCM: about three times faster
    than the incremental Cipher API for APDU-sized messages, which is what a set-up sends)."""
    return AESGCM(key).encrypt(iv, plaintext, aad)


def _gcm_open(key: bytes, iv: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The plaintext of `ciphertext` if its (truncated) `tag` verifies, else AuthenticationError.

    AESGCM only verifies full 16-byte tags and DLMS sends 12, so this uses what GCM is: the
    ciphertext is the plaintext XOR a keystream that depends only on key and IV. Sealing
    the ciphertext therefore yields the plaintext, and sealing that plaintext yields the
    received ciphertext again together with its full tag, whose first 12 bytes are compared
    in constant time. Nothing is returned unless they match.
    """
    gcm = AESGCM(key)
    length = len(ciphertext)
    plaintext = gcm.encrypt(iv, ciphertext, None)[:length]
    expected = gcm.encrypt(iv, plaintext, aad)[length:length + TAG_LENGTH]
    if not hmac.compare_digest(expected, tag):
        raise AuthenticationError("authentication tag does not verify")
    return plaintext


def protect(
    sc: SecurityControlLike,
    key_ek: bytes,
    key_ak: bytes | None,
    system_title: bytes,
    counter: int,
    plaintext: bytes,
    extra_aad: bytes = b"",
) -> bytes:
    """Apply the protection SC asks for; returns ciphertext || tag (without SC and IC).

    `system_title` and `counter` are the protecting party's. `key_ak` may be None only
    for encryption-only SC. `extra_aad` follows SC || AK in the AAD.
    """
    sc = _sc_byte(sc)
    params = _usable_sc(sc)
    key_ek = _check_bytes(key_ek, params.key_length, "encryption key")
    iv = make_iv(system_title, counter)
    plaintext = _check_plain(plaintext, "plaintext")
    extra_aad = _check_plain(extra_aad, "extra AAD")
    if not sc & SC_AUTHENTICATION:
        return _gcm_seal(key_ek, iv, b"", plaintext)[:-GCM_FULL_TAG_LENGTH]
    key_ak = _check_bytes(key_ak, params.key_length, "authentication key")
    aad = bytes((sc,)) + key_ak + extra_aad
    if sc & SC_ENCRYPTION:
        # ciphertext || the first TAG_LENGTH bytes of the tag
        return _gcm_seal(key_ek, iv, aad, plaintext)[:len(plaintext) + TAG_LENGTH]
    # Authentication only: GMAC over the plaintext, which travels in clear.
    return plaintext + _gcm_seal(key_ek, iv, aad + plaintext, b"")[:TAG_LENGTH]


def _check_plain(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SecurityEncodeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def unprotect(
    sc: SecurityControlLike,
    key_ek: bytes,
    key_ak: bytes | None,
    system_title: bytes,
    counter: int,
    protected: bytes,
    extra_aad: bytes = b"",
) -> bytes:
    """Check and remove the protection SC says was applied; returns the plaintext.

    AuthenticationError on a bad tag, ProtectedTruncatedError when `protected` is shorter
    than the tag, SecurityControlError for an unusable SC. Encryption-only content has no
    tag, so nothing is verified (the caller's policy decides whether to accept that).
    """
    sc = _sc_byte(sc)
    params = _usable_sc(sc)
    key_ek = _check_bytes(key_ek, params.key_length, "encryption key")
    iv = make_iv(system_title, counter)
    protected = _check_plain(protected, "protected data")
    extra_aad = _check_plain(extra_aad, "extra AAD")
    if not sc & SC_AUTHENTICATION:
        # GCM encryption is CTR from the same counter blocks, so applying it again
        # removes it; there is no tag to check.
        return _gcm_seal(key_ek, iv, b"", protected)[:len(protected)]
    key_ak = _check_bytes(key_ak, params.key_length, "authentication key")
    if len(protected) < TAG_LENGTH:
        raise ProtectedTruncatedError(
            "protected content", None, f"{len(protected)} bytes cannot hold a {TAG_LENGTH}-byte tag"
        )
    body, tag = protected[:-TAG_LENGTH], protected[-TAG_LENGTH:]
    aad = bytes((sc,)) + key_ak + extra_aad
    if sc & SC_ENCRYPTION:
        return _gcm_open(key_ek, iv, aad, body, tag)
    expected = _gcm_seal(key_ek, iv, aad + body, b"")[:TAG_LENGTH]
    if not hmac.compare_digest(expected, tag):
        raise AuthenticationError("authentication tag does not verify")
    return body


# ---------------------------------------------------------------------------------------
# SC || IC || ciphertext || tag
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtectedContent:
    """The ciphered content of every ciphered APDU: SC || IC || ciphertext || tag.

    `payload` is ciphertext || tag (or plaintext || tag, or ciphertext alone) as SC says.
    `from_bytes` only checks the 5-byte header; `unprotect_content` checks the rest.
    """

    security_control: int
    invocation_counter: int
    payload: bytes

    HEADER_LENGTH = 5

    def __post_init__(self) -> None:
        counter = self.invocation_counter
        if not (type(counter) is int and 0 <= counter <= INVOCATION_COUNTER_MAX):
            _check_counter(counter)
        _sc_byte(self.security_control)
        if not isinstance(self.payload, bytes):
            raise SecurityEncodeError(f"payload must be bytes, got {type(self.payload).__name__}")

    def to_bytes(self) -> bytes:
        return bytes((self.security_control,)) + self.invocation_counter.to_bytes(4, "big") + self.payload

    @classmethod
    def from_bytes(cls, content: bytes | bytearray | memoryview) -> ProtectedContent:
        content = bytes(content)
        if len(content) < cls.HEADER_LENGTH:
            raise ProtectedTruncatedError(
                "security header", 0, f"needs {cls.HEADER_LENGTH} bytes (SC and IC), got {len(content)}"
            )
        return cls(content[0], int.from_bytes(content[1:5], "big"), content[5:])


def protect_content(
    sc: SecurityControlLike,
    key_ek: bytes,
    key_ak: bytes | None,
    system_title: bytes,
    counter: int,
    plaintext: bytes,
    extra_aad: bytes = b"",
) -> bytes:
    """SC || IC || protect(...): the bytes that go into a ciphered APDU."""
    sc = _sc_byte(sc)
    payload = protect(sc, key_ek, key_ak, system_title, counter, plaintext, extra_aad)  # checks the counter
    return bytes((sc,)) + counter.to_bytes(4, "big") + payload


def unprotect_content(
    content: bytes | ProtectedContent,
    key_ek: bytes,
    key_ak: bytes | None,
    system_title: bytes,
    extra_aad: bytes = b"",
    expected_suite: int | None = None,
    require_authentication: bool = True,
) -> tuple[ProtectedContent, bytes]:
    """(header, plaintext) from SC || IC || payload protected by `system_title`'s owner.

    By default the content must be authenticated: the SC byte itself is only protected
    by the tag, so without this check an attacker can clear the authentication bit of an
    authenticated+encrypted APDU and have it accepted as encryption-only (the fuzz test
    finds exactly that). Pass `require_authentication=False` only for a security policy
    that really allows encryption without authentication.

    The caller must run the invocation counter (header.invocation_counter) through its
    `FrameCounterWindow` and persist it before releasing the plaintext — see
    `frame_counter.open_protected`, which does all of that in the right order.
    """
    header = content if isinstance(content, ProtectedContent) else ProtectedContent.from_bytes(content)
    sc = header.security_control
    if expected_suite is not None and (sc & SC_SUITE_MASK) != int(expected_suite):
        raise SecurityControlError(
            "security control", 0, f"suite {sc & SC_SUITE_MASK} is not the expected suite {int(expected_suite)}"
        )
    if require_authentication and not sc & SC_AUTHENTICATION:
        raise SecurityControlError("security control", 0, f"0x{sc:02X} is not authenticated")
    plaintext = unprotect(sc, key_ek, key_ak, system_title, header.invocation_counter, header.payload, extra_aad)
    return header, plaintext
