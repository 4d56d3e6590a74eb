"""HLS mechanisms 5, 6 and 7 (security/hls.py).

* mechanism 5: the Green Book ed. 8.1 Table 43 numbers, and gurux-dlms's client.
* mechanism 6: gurux-dlms's client (GXDLMSClient.getApplicationAssociationRequest with
  HIGH_SHA256) produces our f(StoC), and accepts our f(CtoS).
* mechanism 7: our suite 1/2 fixtures (tests/vectors/suite1/) verify with our code, with
  gurux-dlms's client (suite 1: its own pure-Python ECDSA and its own input order), and
  with `openssl dgst -verify` (test_security_openssl.py).
"""
from __future__ import annotations

import pytest

from secvectors import AK, CLIENT_IC, CLIENT_TITLE, EK, PUBLIC, SERVER_IC, SERVER_TITLE, SUITE_FIXTURES, h, private_key
from smartmeter.dlms.security import hls, signing
from smartmeter.dlms.security.errors import AuthenticationError, ProtectedTruncatedError, SecurityEncodeError

GMAC = PUBLIC["hls5_gmac"]
STOC, CTOS = h(GMAC["StoC"]), h(GMAC["CtoS"])


# --- mechanism 5 --------------------------------------------------------------------------


def test_hls5_client_f_stoc_matches_green_book():
    assert hls.hls5_response(0, EK, AK, CLIENT_TITLE, CLIENT_IC, STOC) == h(GMAC["client_f_StoC"])


def test_hls5_server_f_ctos_matches_green_book():
    assert hls.hls5_response(0, EK, AK, SERVER_TITLE, SERVER_IC, CTOS) == h(GMAC["server_f_CtoS"])


def test_hls5_verification_both_sides_returns_the_peer_counter():
    # server checks the client's f(StoC) against the StoC it sent
    assert hls.verify_hls5_response(0, EK, AK, CLIENT_TITLE, STOC, h(GMAC["client_f_StoC"])) == CLIENT_IC
    # client checks the server's f(CtoS)
    assert hls.verify_hls5_response(0, EK, AK, SERVER_TITLE, CTOS, h(GMAC["server_f_CtoS"])) == SERVER_IC


@pytest.mark.parametrize("mutate", [
    lambda r: r[:-1] + bytes((r[-1] ^ 1,)),  # tag
    lambda r: bytes((0x11,)) + r[1:],  # SC: wrong suite
    lambda r: bytes((0x30,)) + r[1:],  # SC: not authentication-only
    lambda r: r[:4] + bytes((r[4] ^ 1,)) + r[5:],  # IC
])
def test_hls5_rejects_tampering(mutate):
    with pytest.raises(AuthenticationError):
        hls.verify_hls5_response(0, EK, AK, CLIENT_TITLE, STOC, mutate(h(GMAC["client_f_StoC"])))


def test_hls5_rejects_wrong_challenge_title_and_length():
    good = h(GMAC["client_f_StoC"])
    with pytest.raises(AuthenticationError):
        hls.verify_hls5_response(0, EK, AK, CLIENT_TITLE, CTOS, good)
    with pytest.raises(AuthenticationError):
        hls.verify_hls5_response(0, EK, AK, SERVER_TITLE, STOC, good)
    for bad in (good[:-1], good + b"\x00", b""):
        with pytest.raises(ProtectedTruncatedError):
            hls.verify_hls5_response(0, EK, AK, CLIENT_TITLE, STOC, bad)


def test_challenges_are_8_to_64_bytes():
    assert len(hls.new_challenge()) == 32
    assert len(hls.new_challenge(8)) == 8 and len(hls.new_challenge(64)) == 64
    assert hls.new_challenge(16, rng=lambda n: b"\x07" * n) == b"\x07" * 16
    for n in (7, 65, 0):
        with pytest.raises(SecurityEncodeError):
            hls.new_challenge(n)
    with pytest.raises(SecurityEncodeError):
        hls.hls5_response(0, EK, AK, CLIENT_TITLE, 1, b"short")


def _gurux_client(auth, stoc: bytes, ctos: bytes, secret: bytes = b"12345678"):
    from gurux_dlms.enums import InterfaceType, Security
    from gurux_dlms.secure import GXDLMSSecureClient

    client = GXDLMSSecureClient(True, 16, 1, auth, secret, InterfaceType.WRAPPER)
    s = client.settings
    s.cipher.systemTitle = CLIENT_TITLE
    s.sourceSystemTitle = SERVER_TITLE
    s.cipher.blockCipherKey = EK
    s.cipher.authenticationKey = AK
    s.cipher.invocationCounter = CLIENT_IC
    s.cipher.security = Security.NONE
    s.stoCChallenge = stoc
    s.ctoSChallenge = ctos
    return client


def _gurux_reply(octets: bytes):
    from gurux_dlms import GXByteBuffer

    return GXByteBuffer(b"\x09" + bytes((len(octets),)) + octets)


def test_gurux_client_sends_our_hls5_f_stoc_and_accepts_our_f_ctos():
    from gurux_dlms.enums import Authentication

    client = _gurux_client(Authentication.HIGH_GMAC, STOC, CTOS)
    request = b"".join(bytes(f) for f in client.getApplicationAssociationRequest())
    assert hls.hls5_response(0, EK, AK, CLIENT_TITLE, CLIENT_IC, STOC) in request
    client.parseApplicationAssociationResponse(_gurux_reply(hls.hls5_response(0, EK, AK, SERVER_TITLE, 77, CTOS)))


# --- mechanism 6 --------------------------------------------------------------------------

SECRET = b"12345678"
STOC6, CTOS6 = bytes(range(32)), bytes(range(100, 116))


def test_hls6_client_response_is_what_gurux_sends():
    from gurux_dlms.enums import Authentication

    client = _gurux_client(Authentication.HIGH_SHA256, STOC6, CTOS6, SECRET)
    request = b"".join(bytes(f) for f in client.getApplicationAssociationRequest())
    ours = hls.hls6_client_response(SECRET, CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6)
    assert len(ours) == 32 and ours in request


def test_gurux_client_accepts_our_hls6_server_response_and_rejects_a_swapped_one():
    from gurux_dlms.enums import Authentication

    good = hls.hls6_server_response(SECRET, SERVER_TITLE, CLIENT_TITLE, CTOS6, STOC6)
    _gurux_client(Authentication.HIGH_SHA256, STOC6, CTOS6, SECRET).parseApplicationAssociationResponse(
        _gurux_reply(good))
    # the client formula (titles and challenges the other way round) must not pass
    swapped = hls.hls6_client_response(SECRET, CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6)
    with pytest.raises(Exception):
        _gurux_client(Authentication.HIGH_SHA256, STOC6, CTOS6, SECRET).parseApplicationAssociationResponse(
            _gurux_reply(swapped))


def test_hls6_verification_both_sides():
    f_stoc = hls.hls6_client_response(SECRET, CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6)
    f_ctos = hls.hls6_server_response(SECRET, SERVER_TITLE, CLIENT_TITLE, CTOS6, STOC6)
    assert f_stoc != f_ctos
    hls.verify_hls6_client_response(SECRET, CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6, f_stoc)
    hls.verify_hls6_server_response(SECRET, SERVER_TITLE, CLIENT_TITLE, CTOS6, STOC6, f_ctos)
    with pytest.raises(AuthenticationError):
        hls.verify_hls6_client_response(SECRET, CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6, f_ctos)
    with pytest.raises(AuthenticationError):
        hls.verify_hls6_client_response(b"other", CLIENT_TITLE, SERVER_TITLE, STOC6, CTOS6, f_stoc)
    with pytest.raises(AuthenticationError):
        hls.verify_hls6_server_response(SECRET, SERVER_TITLE, CLIENT_TITLE, CTOS6, STOC6, f_ctos[:-1])


# --- mechanism 7 --------------------------------------------------------------------------


@pytest.mark.parametrize("suite", [1, 2])
def test_hls7_fixture_signatures_verify(suite):
    f = SUITE_FIXTURES[suite]
    client_pub = signing.public_key_from_bytes(suite, h(f["client_signing_public"]))
    server_pub = signing.public_key_from_bytes(suite, h(f["server_signing_public"]))
    ct, stt = h(f["client_system_title"]), h(f["server_system_title"])
    stoc, ctos = h(f["hls7"]["StoC"]), h(f["hls7"]["CtoS"])
    f_stoc, f_ctos = h(f["hls7"]["client_f_StoC"]), h(f["hls7"]["server_f_CtoS"])
    assert len(f_stoc) == len(f_ctos) == (64 if suite == 1 else 96)
    hls.verify_hls7_client_response(client_pub, ct, stt, stoc, ctos, f_stoc, suite)
    hls.verify_hls7_server_response(server_pub, stt, ct, ctos, stoc, f_ctos, suite)
    # each one is bound to its direction, key, titles and challenges
    with pytest.raises(AuthenticationError):
        hls.verify_hls7_client_response(client_pub, ct, stt, ctos, stoc, f_stoc, suite)
    with pytest.raises(AuthenticationError):
        hls.verify_hls7_client_response(server_pub, ct, stt, stoc, ctos, f_stoc, suite)
    with pytest.raises(AuthenticationError):
        hls.verify_hls7_server_response(server_pub, ct, stt, ctos, stoc, f_ctos, suite)
    with pytest.raises(AuthenticationError):
        hls.verify_hls7_server_response(server_pub, stt, ct, ctos, stoc, f_ctos[:-1] + b"\x00", suite)


@pytest.mark.parametrize("suite", [1, 2])
def test_hls7_private_keys_in_fixture_match_public_keys_and_sign_fresh(suite):
    f = SUITE_FIXTURES[suite]
    client_key = private_key(suite, f["client_signing_private"])
    assert signing.public_key_to_bytes(client_key.public_key()) == h(f["client_signing_public"])
    stoc, ctos = hls.new_challenge(), hls.new_challenge(48)
    sig = hls.hls7_client_response(client_key, CLIENT_TITLE, SERVER_TITLE, stoc, ctos, suite)
    hls.verify_hls7_client_response(client_key.public_key(), CLIENT_TITLE, SERVER_TITLE, stoc, ctos, sig, suite)


def test_hls7_refuses_keys_of_the_other_suite():
    from smartmeter.dlms.security.errors import InvalidKeyError

    key = private_key(1, SUITE_FIXTURES[1]["client_signing_private"])
    with pytest.raises(InvalidKeyError):
        hls.hls7_client_response(key, CLIENT_TITLE, SERVER_TITLE, STOC, CTOS, suite=2)


def test_gurux_client_accepts_our_hls7_server_response_suite1():
    """gurux's client builds SysT-S || SysT-C || CtoS || StoC itself and verifies with its
    own ECDSA; it must accept our f(CtoS) and refuse the client-direction signature."""
    from gurux_dlms.ecdsa.GXPrivateKey import GXPrivateKey
    from gurux_dlms.ecdsa.GXPublicKey import GXPublicKey
    from gurux_dlms.enums import Authentication

    f = SUITE_FIXTURES[1]
    stt, stoc, ctos = h(f["server_system_title"]), h(f["hls7"]["StoC"]), h(f["hls7"]["CtoS"])

    def client():
        c = _gurux_client(Authentication.HIGH_ECDSA, stoc, ctos)
        c.settings.sourceSystemTitle = stt
        c.settings.cipher.signingKeyPair = (
            GXPublicKey.fromRawBytes(b"\x04" + h(f["server_signing_public"])),
            GXPrivateKey.fromRawBytes(h(f["client_signing_private"])),
        )
        return c

    client().parseApplicationAssociationResponse(_gurux_reply(h(f["hls7"]["server_f_CtoS"])))
    with pytest.raises(Exception):
        client().parseApplicationAssociationResponse(_gurux_reply(h(f["hls7"]["client_f_StoC"])))
