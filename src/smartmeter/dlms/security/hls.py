"""HLS authentication mechanisms 5 (GMAC), 6 (SHA-256) and 7 (ECDSA), both sides.

In pass 3 the client answers the server's challenge StoC with f(StoC); in pass 4 the
server answers the client's challenge CtoS with f(CtoS). Each party computes f over the
challenge it *received* and checks the peer's f over the challenge it *sent*.

Input order (Green Book ed. 8.x, Table "HLS authentication mechanisms"; the order below
is the one gurux-dlms implements in GXDLMSClient.getApplicationAssociationRequest /
parseApplicationAssociationResponse, gurux_dlms 1.0.203):

* mechanism 5: f(C) = SC || IC || GMAC(SC || AK || C), IV = own system title || IC,
  SC = 0x10 | suite;
* mechanism 6: f(StoC) = SHA-256(HLS secret || SysT-C || SysT-S || StoC || CtoS),
               f(CtoS) = SHA-256(HLS secret || SysT-S || SysT-C || CtoS || StoC);
* mechanism 7: f(StoC) = ECDSA_client(SysT-C || SysT-S || StoC || CtoS),
               f(CtoS) = ECDSA_server(SysT-S || SysT-C || CtoS || StoC),
  with SHA-256/P-256 (suite 1) or SHA-384/P-384 (suite 2), signature as r || s.

All three follow one rule: f = F(own system title || peer system title || received
challenge || sent challenge) (mechanism 6 prefixes the secret, mechanism 5 covers only
the received challenge).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.security import signing
from smartmeter.dlms.security.errors import AuthenticationError, ProtectedTruncatedError, SecurityEncodeError
from smartmeter.dlms.security.suites import (
    SC_AUTHENTICATION,
    SYSTEM_TITLE_LENGTH,
    TAG_LENGTH,
    _check_bytes,
    protect,
    suite_parameters,
)

__all__ = [
    "CHALLENGE_MIN",
    "CHALLENGE_MAX",
    "new_challenge",
    "hls5_response",
    "verify_hls5_response",
    "hls6_client_response",
    "hls6_server_response",
    "verify_hls6_client_response",
    "verify_hls6_server_response",
    "hls7_client_response",
    "hls7_server_response",
    "verify_hls7_client_response",
    "verify_hls7_server_response",
]

# Green Book: challenges are 8 to 64 octets.
CHALLENGE_MIN = 8
CHALLENGE_MAX = 64


def new_challenge(length: int = 32, rng: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
    """A random challenge of `length` (8..64) bytes; `rng` is injectable for tests."""
    if type(length) is not int or not CHALLENGE_MIN <= length <= CHALLENGE_MAX:
        raise SecurityEncodeError(f"challenge length must be {CHALLENGE_MIN}..{CHALLENGE_MAX}, got {length!r}")
    value = rng(length)
    if not isinstance(value, bytes) or len(value) != length:
        raise SecurityEncodeError("rng returned the wrong number of bytes")
    return value


def _challenge(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise SecurityEncodeError(f"{what} must be bytes, got {type(value).__name__}")
    if not CHALLENGE_MIN <= len(value) <= CHALLENGE_MAX:
        raise SecurityEncodeError(f"{what} must be {CHALLENGE_MIN}..{CHALLENGE_MAX} bytes, got {len(value)}")
    return bytes(value)


def _title(value: object, what: str) -> bytes:
    return _check_bytes(value, SYSTEM_TITLE_LENGTH, what)


# ---------------------------------------------------------------------------------------
# Mechanism 5: GMAC
# ---------------------------------------------------------------------------------------


def hls5_response(
    suite: int, key_ek: bytes, key_ak: bytes, own_system_title: bytes, counter: int, challenge: bytes
) -> bytes:
    """f(challenge) = SC || IC || GMAC(SC || AK || challenge), SC = 0x10 | suite.

    The client calls it with StoC, its system title and its next IC; the server with
    CtoS, its system title and its next IC. The IC comes from the caller's sending
    counter (it is consumed like any other protected message).
    """
    sc = SC_AUTHENTICATION | suite_parameters(suite).suite
    challenge = _challenge(challenge, "challenge")
    tag = protect(sc, key_ek, key_ak, own_system_title, counter, b"", extra_aad=challenge)
    return bytes((sc,)) + counter.to_bytes(4, "big") + tag


def verify_hls5_response(
    suite: int, key_ek: bytes, key_ak: bytes, peer_system_title: bytes, challenge: bytes, response: bytes
) -> int:
    """Check the peer's f(challenge) over the challenge we sent; returns the peer's IC.

    AuthenticationError on a wrong SC or GMAC, ProtectedTruncatedError on a wrong length.
    The returned IC should go through the receiving frame-counter window.
    """
    challenge = _challenge(challenge, "challenge")
    if not isinstance(response, (bytes, bytearray)):
        raise AuthenticationError("HLS-GMAC response must be bytes")
    response = bytes(response)
    if len(response) != 5 + TAG_LENGTH:
        raise ProtectedTruncatedError(
            "HLS-GMAC response", 0, f"must be {5 + TAG_LENGTH} bytes (SC, IC, tag), got {len(response)}"
        )
    expected_sc = SC_AUTHENTICATION | suite_parameters(suite).suite
    if response[0] != expected_sc:
        raise AuthenticationError(f"HLS-GMAC security control 0x{response[0]:02X} is not 0x{expected_sc:02X}")
    counter = int.from_bytes(response[1:5], "big")
    expected = protect(expected_sc, key_ek, key_ak, peer_system_title, counter, b"", extra_aad=challenge)
    if not hmac.compare_digest(expected, response[5:]):
        raise AuthenticationError("HLS-GMAC response does not verify")
    return counter


# ---------------------------------------------------------------------------------------
# Mechanism 6: SHA-256
# ---------------------------------------------------------------------------------------


def _hls6(secret: bytes, own_title: bytes, peer_title: bytes, received: bytes, sent: bytes) -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise SecurityEncodeError("HLS secret must be non-empty bytes")
    return hashlib.sha256(
        bytes(secret)
        + _title(own_title, "own system title")
        + _title(peer_title, "peer system title")
        + _challenge(received, "received challenge")
        + _challenge(sent, "sent challenge")
    ).digest()


def hls6_client_response(
    secret: bytes, client_system_title: bytes, server_system_title: bytes, stoc: bytes, ctos: bytes
) -> bytes:
    """f(StoC) = SHA-256(secret || SysT-C || SysT-S || StoC || CtoS), sent by the client."""
    return _hls6(secret, client_system_title, server_system_title, stoc, ctos)


def hls6_server_response(
    secret: bytes, server_system_title: bytes, client_system_title: bytes, ctos: bytes, stoc: bytes
) -> bytes:
    """f(CtoS) = SHA-256(secret || SysT-S || SysT-C || CtoS || StoC), sent by the server."""
    return _hls6(secret, server_system_title, client_system_title, ctos, stoc)


def _compare(expected: bytes, response: object, what: str) -> None:
    if not isinstance(response, (bytes, bytearray)) or not hmac.compare_digest(expected, bytes(response)):
        raise AuthenticationError(f"{what} does not verify")


def verify_hls6_client_response(
    secret: bytes, client_system_title: bytes, server_system_title: bytes, stoc: bytes, ctos: bytes,
    response: bytes,
) -> None:
    """Server side: check the client's f(StoC)."""
    _compare(hls6_client_response(secret, client_system_title, server_system_title, stoc, ctos), response,
             "HLS-SHA256 f(StoC)")


def verify_hls6_server_response(
    secret: bytes, server_system_title: bytes, client_system_title: bytes, ctos: bytes, stoc: bytes,
    response: bytes,
) -> None:
    """Client side: check the server's f(CtoS)."""
    _compare(hls6_server_response(secret, server_system_title, client_system_title, ctos, stoc), response,
             "HLS-SHA256 f(CtoS)")


# ---------------------------------------------------------------------------------------
# Mechanism 7: ECDSA
# ---------------------------------------------------------------------------------------


def _hls7_data(own_title: bytes, peer_title: bytes, received: bytes, sent: bytes) -> bytes:
    return (
        _title(own_title, "own system title")
        + _title(peer_title, "peer system title")
        + _challenge(received, "received challenge")
        + _challenge(sent, "sent challenge")
    )


def hls7_client_response(
    client_signing_key: ec.EllipticCurvePrivateKey, client_system_title: bytes, server_system_title: bytes,
    stoc: bytes, ctos: bytes, suite: int | None = None,
) -> bytes:
    """f(StoC) = ECDSA(SysT-C || SysT-S || StoC || CtoS) with the client's signing key."""
    return signing.sign(client_signing_key, _hls7_data(client_system_title, server_system_title, stoc, ctos), suite)


def hls7_server_response(
    server_signing_key: ec.EllipticCurvePrivateKey, server_system_title: bytes, client_system_title: bytes,
    ctos: bytes, stoc: bytes, suite: int | None = None,
) -> bytes:
    """f(CtoS) = ECDSA(SysT-S || SysT-C || CtoS || StoC) with the server's signing key."""
    return signing.sign(server_signing_key, _hls7_data(server_system_title, client_system_title, ctos, stoc), suite)


def verify_hls7_client_response(
    client_public_key: ec.EllipticCurvePublicKey, client_system_title: bytes, server_system_title: bytes,
    stoc: bytes, ctos: bytes, response: bytes, suite: int | None = None,
) -> None:
    """Server side: check f(StoC) against the client's certified signing key."""
    signing.verify(client_public_key, _hls7_data(client_system_title, server_system_title, stoc, ctos), response, suite)


def verify_hls7_server_response(
    server_public_key: ec.EllipticCurvePublicKey, server_system_title: bytes, client_system_title: bytes,
    ctos: bytes, stoc: bytes, response: bytes, suite: int | None = None,
) -> None:
    """Client side: check f(CtoS) against the server's certified signing key."""
    signing.verify(server_public_key, _hls7_data(server_system_title, client_system_title, ctos, stoc), response, suite)
