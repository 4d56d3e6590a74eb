"""Suites, security control byte and AES-GCM protection (security/suites.py).

Known answers: the Green Book suite 0 vectors (tests/vectors/dlms-vectors.json).
Independent peers: dlms_cosem.security (cryptography-based) and gurux-dlms's own
pure-Python AES-GCM (GXDLMSChippering), for all three protection kinds and suite 2.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secvectors import AK, CLIENT_IC, CLIENT_TITLE, EK, PUBLIC, SERVER_IC, SERVER_TITLE, h
from smartmeter.dlms.security.errors import (
    AuthenticationError,
    InvalidKeyError,
    ProtectedTruncatedError,
    SecurityControlError,
    SecurityEncodeError,
    SecurityError,
)
from smartmeter.dlms.security.suites import (
    SUITES,
    ProtectedContent,
    SecurityControl,
    SecuritySuite,
    make_iv,
    protect,
    protect_content,
    suite_parameters,
    unprotect,
    unprotect_content,
)
from smartmeter.errors import DecodeError, SmartmeterError, TruncatedError

GET = PUBLIC["suite0_glo_get_request"]
INIT = PUBLIC["suite0_glo_initiate_request"]


# --- known answers -------------------------------------------------------------------------


def test_green_book_glo_get_request_encrypts_to_the_published_bytes():
    out = protect(0x30, EK, AK, h(GET["system_title"]), int(GET["invocation_counter"], 16), h(GET["plaintext_apdu"]))
    assert out == h(GET["ciphertext_and_tag"])


def test_green_book_glo_get_request_decrypts_to_the_published_plaintext():
    out = unprotect(0x30, EK, AK, h(GET["system_title"]), int(GET["invocation_counter"], 16),
                    h(GET["ciphertext_and_tag"]))
    assert out == h(GET["plaintext_apdu"])


def test_green_book_glo_initiate_request_with_dedicated_key():
    ciphered = h(INIT["ciphered_user_information"])
    assert ciphered[0] == 0x21 and ciphered[1] == len(ciphered) - 2
    header, plain = unprotect_content(ciphered[2:], EK, AK, SERVER_TITLE)
    assert (header.security_control, header.invocation_counter) == (0x30, SERVER_IC)
    assert plain == h(INIT["plaintext_initiate_request"])
    assert h(INIT["dedicated_key_inside"]) in plain
    assert protect_content(0x30, EK, AK, SERVER_TITLE, SERVER_IC, plain) == ciphered[2:]


def test_iv_is_system_title_then_big_endian_counter():
    assert make_iv(SERVER_TITLE, 0x01234567) == SERVER_TITLE + b"\x01\x23\x45\x67"
    with pytest.raises(InvalidKeyError):
        make_iv(SERVER_TITLE[:7], 1)
    with pytest.raises(SecurityEncodeError):
        make_iv(SERVER_TITLE, 1 << 32)


# --- suites and SC ----------------------------------------------------------------------


def test_suite_table():
    assert suite_parameters(0).key_length == 16 and suite_parameters(0).curve is None
    assert suite_parameters(1).key_length == 16 and suite_parameters(1).coordinate_length == 32
    assert suite_parameters(2).key_length == 32 and suite_parameters(2).coordinate_length == 48
    assert suite_parameters(1).signature_length == 64 and suite_parameters(2).signature_length == 96
    # DLMS UA OIDs 2.16.756.5.8.3.0 (aes-gcm-128) and .1 (aes-gcm-256)
    assert suite_parameters(1).gcm_algorithm_id == h("60857405080300")
    assert suite_parameters(2).gcm_algorithm_id == h("60857405080301")
    assert set(SUITES) == set(SecuritySuite)
    for bad in (3, 15, -1, "1", None):
        with pytest.raises(SecurityControlError):
            suite_parameters(bad)


@pytest.mark.parametrize("byte", range(256))
def test_security_control_round_trips_every_byte(byte):
    sc = SecurityControl.from_byte(byte)
    assert sc.to_byte() == byte
    assert sc.suite == byte & 0x0F
    assert sc.authentication == bool(byte & 0x10)
    assert sc.encryption == bool(byte & 0x20)
    assert sc.broadcast == bool(byte & 0x40)
    assert sc.compression == bool(byte & 0x80)


def test_security_control_object_is_accepted_like_its_byte():
    sc = SecurityControl(suite=0, authentication=True, encryption=True)
    assert sc.to_byte() == 0x30
    assert protect(sc, EK, AK, SERVER_TITLE, SERVER_IC, h(GET["plaintext_apdu"])) == h(GET["ciphertext_and_tag"])


@pytest.mark.parametrize("sc", [0x00, 0x01, 0x40, 0xB0, 0x33, 0x3F])
def test_unusable_security_control_is_refused(sc):
    with pytest.raises(SecurityControlError):
        protect(sc, EK, AK, SERVER_TITLE, 1, b"x")
    with pytest.raises(SecurityControlError):
        unprotect(sc, EK, AK, SERVER_TITLE, 1, b"x" * 20)


def test_errors_are_one_family():
    for cls in (AuthenticationError, SecurityControlError, ProtectedTruncatedError, InvalidKeyError):
        assert issubclass(cls, SecurityError) and issubclass(cls, SmartmeterError)
    assert issubclass(ProtectedTruncatedError, TruncatedError)
    assert issubclass(SecurityControlError, DecodeError)


# --- the three protection kinds --------------------------------------------------------------


def test_authentication_only_sends_plaintext_and_12_byte_gmac():
    plain = h(GET["plaintext_apdu"])
    out = protect(0x10, EK, AK, SERVER_TITLE, SERVER_IC, plain)
    assert out[:-12] == plain and len(out) == len(plain) + 12
    assert unprotect(0x10, EK, AK, SERVER_TITLE, SERVER_IC, out) == plain


def test_encryption_only_has_no_tag_and_shares_the_gcm_keystream():
    plain = h(GET["plaintext_apdu"])
    out = protect(0x20, EK, None, SERVER_TITLE, SERVER_IC, plain)
    assert len(out) == len(plain)
    # Same keystream as authenticated encryption: the ciphertext part is identical.
    assert out == h(GET["ciphertext_and_tag"])[: len(plain)]
    assert unprotect(0x20, EK, None, SERVER_TITLE, SERVER_IC, out) == plain


def test_authenticated_modes_need_the_authentication_key():
    with pytest.raises(InvalidKeyError):
        protect(0x30, EK, None, SERVER_TITLE, 1, b"x")
    with pytest.raises(InvalidKeyError):
        protect(0x10, EK, AK[:15], SERVER_TITLE, 1, b"x")


@pytest.mark.parametrize("suite,length", [(0, 16), (1, 16), (2, 32)])
def test_key_length_follows_the_suite(suite, length):
    key = bytes(range(length))
    protect(0x30 | suite, key, key, SERVER_TITLE, 1, b"abc")
    wrong = bytes(range(48 - length))
    with pytest.raises(InvalidKeyError):
        protect(0x30 | suite, wrong, key, SERVER_TITLE, 1, b"abc")
    with pytest.raises(InvalidKeyError):
        protect(0x30 | suite, key, wrong, SERVER_TITLE, 1, b"abc")


@pytest.mark.parametrize("sc", [0x10, 0x30])
def test_any_single_bit_flip_is_detected(sc):
    plain = h(GET["plaintext_apdu"])
    out = protect(sc, EK, AK, SERVER_TITLE, SERVER_IC, plain)
    for i in range(len(out)):
        for bit in (0x01, 0x80):
            tampered = bytearray(out)
            tampered[i] ^= bit
            with pytest.raises(AuthenticationError):
                unprotect(sc, EK, AK, SERVER_TITLE, SERVER_IC, bytes(tampered))


@pytest.mark.parametrize("sc", [0x10, 0x30])
def test_every_input_is_bound(sc):
    plain = b"\xc0\x01\x00"
    out = protect(sc, EK, AK, SERVER_TITLE, 5, plain, extra_aad=b"hdr")
    assert unprotect(sc, EK, AK, SERVER_TITLE, 5, out, extra_aad=b"hdr") == plain
    other_key = bytes(16)
    for args in (
        (sc, EK, AK, SERVER_TITLE, 6, out, b"hdr"),  # counter
        (sc, EK, AK, CLIENT_TITLE, 5, out, b"hdr"),  # system title
        (sc, EK, other_key, SERVER_TITLE, 5, out, b"hdr"),  # AK
        (sc, other_key, AK, SERVER_TITLE, 5, out, b"hdr"),  # EK
        (sc, EK, AK, SERVER_TITLE, 5, out, b"hdX"),  # extra AAD
        (sc, EK, AK, SERVER_TITLE, 5, out, b""),
        (sc | 0x40, EK, AK, SERVER_TITLE, 5, out, b"hdr"),  # SC is in the AAD
    ):
        with pytest.raises(AuthenticationError):
            unprotect(*args[:6], extra_aad=args[6])


def test_short_protected_data_is_truncated_not_a_crash():
    for n in range(12):
        with pytest.raises(ProtectedTruncatedError):
            unprotect(0x30, EK, AK, SERVER_TITLE, 1, bytes(n))
    # exactly a tag, empty plaintext: a valid (empty) message
    empty = protect(0x30, EK, AK, SERVER_TITLE, 1, b"")
    assert len(empty) == 12 and unprotect(0x30, EK, AK, SERVER_TITLE, 1, empty) == b""


# --- SC || IC || payload ------------------------------------------------------------------


def test_protected_content_header():
    content = ProtectedContent.from_bytes(b"\x30\x01\x23\x45\x67abc")
    assert content == ProtectedContent(0x30, 0x01234567, b"abc")
    assert content.to_bytes() == b"\x30\x01\x23\x45\x67abc"
    for n in range(5):
        with pytest.raises(ProtectedTruncatedError):
            ProtectedContent.from_bytes(bytes(n))


def test_unprotect_content_policy_checks():
    content = protect_content(0x30, EK, AK, SERVER_TITLE, 9, b"plain")
    with pytest.raises(SecurityControlError):
        unprotect_content(content, EK, AK, SERVER_TITLE, expected_suite=1)
    enc_only = protect_content(0x20, EK, None, SERVER_TITLE, 9, b"plain")
    with pytest.raises(SecurityControlError):
        unprotect_content(enc_only, EK, AK, SERVER_TITLE)  # authentication is required by default
    assert unprotect_content(enc_only, EK, None, SERVER_TITLE, require_authentication=False)[1] == b"plain"


def test_clearing_the_authentication_bit_is_caught_by_the_default_policy():
    content = bytearray(protect_content(0x30, EK, AK, SERVER_TITLE, 9, b"plain"))
    content[0] = 0x20  # downgrade to encryption-only: no tag is checked any more
    with pytest.raises(SecurityControlError):
        unprotect_content(bytes(content), EK, AK, SERVER_TITLE)
    # the downgrade "works" only when the caller explicitly allows unauthenticated content
    plain = unprotect_content(bytes(content), EK, AK, SERVER_TITLE, require_authentication=False)[1]
    assert plain[:5] == b"plain"  # the tag bytes are now read as ciphertext


suites_sc = st.sampled_from([0, 1, 2]).flatmap(
    lambda suite: st.tuples(
        st.just(suite),
        st.sampled_from([0x10, 0x20, 0x30]).map(lambda p: p | suite),
        st.booleans(),
    )
)


@settings(max_examples=300, deadline=None)
@given(
    suite_sc=suites_sc,
    counter=st.integers(0, 0xFFFFFFFF),
    title=st.binary(min_size=8, max_size=8),
    plain=st.binary(max_size=300),
    extra=st.binary(max_size=40),
)
def test_round_trip(suite_sc, counter, title, plain, extra):
    suite, sc, broadcast = suite_sc
    sc |= 0x40 if broadcast else 0
    n = suite_parameters(suite).key_length
    ek, ak = bytes(range(n)), bytes(range(100, 100 + n))
    content = protect_content(sc, ek, ak, title, counter, plain, extra)
    header, out = unprotect_content(content, ek, ak, title, extra, require_authentication=False)
    assert out == plain
    assert (header.security_control, header.invocation_counter) == (sc, counter)
    assert len(header.payload) == len(plain) + (12 if sc & 0x10 else 0)


# --- independent peers --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(suite=st.sampled_from([0, 1, 2]), counter=st.integers(0, 0xFFFFFFFF), plain=st.binary(max_size=200))
def test_dlms_cosem_decrypts_ours_and_we_decrypt_theirs(suite, counter, plain):
    from dlms_cosem import security as dc

    n = suite_parameters(suite).key_length
    ek, ak = bytes(range(3, 3 + n)), bytes(range(60, 60 + n))
    sc = dc.SecurityControlField(security_suite=suite, authenticated=True, encrypted=True)
    ours = protect(0x30 | suite, ek, ak, SERVER_TITLE, counter, plain)
    assert dc.decrypt(sc, SERVER_TITLE, counter, ek, ours, ak) == plain
    theirs = dc.encrypt(sc, CLIENT_TITLE, counter, ek, plain, ak)
    assert unprotect(0x30 | suite, ek, ak, CLIENT_TITLE, counter, theirs) == plain


def _gurux_protect(sc: int, ek: bytes, ak: bytes, title: bytes, counter: int, plain: bytes) -> bytes:
    """gurux-dlms's own pure-Python GCM, as a packet: tag, length, SC, IC, payload."""
    from gurux_dlms.AesGcmParameter import AesGcmParameter
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering
    from gurux_dlms.enums import Security
    from gurux_dlms.objects.enums import SecuritySuite as GuruxSuite

    p = AesGcmParameter(0xC8, title, ek, ak)
    p.security = Security(sc & 0x30)
    p.securitySuite = GuruxSuite(sc & 0x0F)
    p.invocationCounter = counter
    return bytes(GXDLMSChippering.encryptAesGcm(p, plain))


@pytest.mark.parametrize("sc", [0x10, 0x20, 0x30, 0x11, 0x21, 0x31, 0x12, 0x22, 0x32])
@pytest.mark.parametrize("plain", [b"", h(GET["plaintext_apdu"]), bytes(range(256)) * 3])
def test_gurux_pure_python_gcm_produces_the_same_content(sc, plain):
    n = suite_parameters(sc & 0x0F).key_length
    ek, ak = bytes(range(n)), bytes(range(0xD0 - n, 0xD0))
    packet = _gurux_protect(sc, ek, ak, CLIENT_TITLE, CLIENT_IC + 41, plain)
    content = protect_content(sc, ek, ak if sc & 0x10 else None, CLIENT_TITLE, CLIENT_IC + 41, plain)
    # gurux frames it as a glo-get-request: 0xC8, A-XDR length, content
    assert packet[0] == 0xC8
    assert packet.endswith(content)
    assert unprotect_content(packet[len(packet) - len(content):], ek, ak, CLIENT_TITLE,
                             require_authentication=False)[1] == plain
