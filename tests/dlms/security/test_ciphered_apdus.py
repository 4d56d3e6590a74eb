"""Protected APDU codecs (dlms/apdu/ciphered.py).

Known answers: the Green Book glo-get-request and glo-initiate-request. Independent peers:
gurux's translator decrypts and describes our glo-get-request; gurux's GCM builds
general-glo-ciphering packets and general-ciphering ciphertext (with its AAD of the
general-ciphering header) that we must match; dlms_cosem's GeneralGlobalCipher decodes
ours and we decode theirs. General-signing against our suite 1/2 fixtures.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secvectors import AK, CLIENT_TITLE, EK, PUBLIC, SERVER_IC, SERVER_TITLE, SUITE_FIXTURES, h, private_key
from smartmeter.dlms.apdu import ciphered as c
from smartmeter.dlms.security import signing
from smartmeter.dlms.security.errors import AuthenticationError
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

GET = PUBLIC["suite0_glo_get_request"]
INIT = PUBLIC["suite0_glo_initiate_request"]
GLO_GET_APDU = bytes((0xC8, 0x1E, 0x30)) + h(GET["invocation_counter"]) + h(GET["ciphertext_and_tag"])

EXPECTED_TAGS = {
    "GloInitiateRequest": 0x21, "GloInitiateResponse": 0x28, "GloConfirmedServiceError": 0x2E,
    "GloGetRequest": 0xC8, "GloSetRequest": 0xC9, "GloEventNotification": 0xCA, "GloActionRequest": 0xCB,
    "GloGetResponse": 0xCC, "GloSetResponse": 0xCD, "GloActionResponse": 0xCF,
    "DedInitiateRequest": 0x41, "DedInitiateResponse": 0x48, "DedConfirmedServiceError": 0x4E,
    "DedGetRequest": 0xD0, "DedSetRequest": 0xD1, "DedEventNotification": 0xD2, "DedActionRequest": 0xD3,
    "DedGetResponse": 0xD4, "DedSetResponse": 0xD5, "DedActionResponse": 0xD7,
    "GeneralGloCiphering": 0xDB, "GeneralDedCiphering": 0xDC, "GeneralCiphering": 0xDD, "GeneralSigning": 0xDF,
}


def test_tags_match_the_green_book_and_gurux_command_enum():
    from gurux_dlms.enums import Command

    assert {cls.__name__: cls.TAG for cls in c.CIPHERED_APDU_CLASSES} == EXPECTED_TAGS
    assert c.CIPHERED_TAGS == frozenset(EXPECTED_TAGS.values())
    gurux = {
        "GloGetRequest": Command.GLO_GET_REQUEST, "GloSetRequest": Command.GLO_SET_REQUEST,
        "GloActionRequest": Command.GLO_METHOD_REQUEST, "GloGetResponse": Command.GLO_GET_RESPONSE,
        "GloSetResponse": Command.GLO_SET_RESPONSE, "GloActionResponse": Command.GLO_METHOD_RESPONSE,
        "GloInitiateRequest": Command.GLO_INITIATE_REQUEST, "GloInitiateResponse": Command.GLO_INITIATE_RESPONSE,
        "GloConfirmedServiceError": Command.GLO_CONFIRMED_SERVICE_ERROR,
        "GloEventNotification": Command.GLO_EVENT_NOTIFICATION,
        "DedGetRequest": Command.DED_GET_REQUEST, "DedSetRequest": Command.DED_SET_REQUEST,
        "DedActionRequest": Command.DED_METHOD_REQUEST, "DedGetResponse": Command.DED_GET_RESPONSE,
        "DedSetResponse": Command.DED_SET_RESPONSE, "DedActionResponse": Command.DED_METHOD_RESPONSE,
        "DedInitiateRequest": Command.DED_INITIATE_REQUEST, "DedInitiateResponse": Command.DED_INITIATE_RESPONSE,
        "DedConfirmedServiceError": Command.DED_CONFIRMED_SERVICE_ERROR,
        "DedEventNotification": Command.DED_EVENT_NOTIFICATION,
        "GeneralGloCiphering": Command.GENERAL_GLO_CIPHERING, "GeneralDedCiphering": Command.GENERAL_DED_CIPHERING,
        "GeneralCiphering": Command.GENERAL_CIPHERING,
    }
    for name, value in gurux.items():
        assert EXPECTED_TAGS[name] == value, name
    for plain_tag, cls in c.GLO_TAG_FOR_PLAIN.items():
        assert c.DED_TAG_FOR_PLAIN[plain_tag].DEDICATED and not cls.DEDICATED


# --- service-specific ------------------------------------------------------------------------


def test_green_book_glo_get_request_apdu():
    apdu = c.decode_ciphered(GLO_GET_APDU)
    assert isinstance(apdu, c.GloGetRequest)
    assert (apdu.security_control, apdu.invocation_counter) == (0x30, SERVER_IC)
    assert apdu.unprotect(EK, AK, SERVER_TITLE) == h(GET["plaintext_apdu"])
    assert apdu.to_bytes() == GLO_GET_APDU
    assert c.GloGetRequest.protect(0x30, EK, AK, SERVER_TITLE, SERVER_IC, h(GET["plaintext_apdu"])) == apdu


def test_green_book_glo_initiate_request_apdu():
    wire = h(INIT["ciphered_user_information"])
    apdu = c.GloInitiateRequest.from_bytes(wire)
    assert apdu.to_bytes() == wire
    assert apdu.unprotect(EK, AK, SERVER_TITLE) == h(INIT["plaintext_initiate_request"])


def test_gurux_translator_decrypts_and_describes_our_glo_get_request():
    from gurux_dlms import GXDLMSTranslator
    from gurux_dlms.enums import Security, TranslatorOutputType

    plain = bytes.fromhex("C001C100030100010800FF0200")  # register 1-0:1.8.0.255 attribute 2, invoke 1
    apdu = c.GloGetRequest.protect(0x30, EK, AK, CLIENT_TITLE, 4242, plain)
    t = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    t.comments = True
    t.security = Security.AUTHENTICATION_ENCRYPTION
    t.systemTitle = CLIENT_TITLE
    t.blockCipherKey = EK
    t.authenticationKey = AK
    xml = t.pduToXml(apdu.to_bytes())
    assert "Decrypt data: C0 01 C1 00 03 01 00 01 08 00 FF 02 00" in xml
    assert '<ClassId Value="0003" />' in xml and '<InstanceId Value="0100010800FF" />' in xml


def test_every_service_specific_class_round_trips():
    for cls in list(c.GLO_TAG_FOR_PLAIN.values()) + list(c.DED_TAG_FOR_PLAIN.values()):
        apdu = cls.protect(0x31, EK, AK, CLIENT_TITLE, 77, b"\x01\x02\x03")
        wire = apdu.to_bytes()
        assert wire[0] == cls.TAG
        back = c.decode_ciphered(wire)
        assert type(back) is cls and back == apdu
        assert cls.from_bytes(wire) == apdu
        assert back.unprotect(EK, AK, CLIENT_TITLE, expected_suite=1) == b"\x01\x02\x03"


def test_service_specific_long_content_uses_long_length_form():
    plain = bytes(300)
    wire = c.GloSetRequest.protect(0x30, EK, AK, CLIENT_TITLE, 1, plain).to_bytes()
    # content = SC (1) + IC (4) + 300 + tag (12) = 317 = 0x013D: long form 0x82 0x01 0x3D
    assert wire[:4] == bytes((0xC9, 0x82, 0x01, 0x3D))
    assert len(wire) == 4 + 317


def test_wrong_tag_for_a_class_and_short_content_are_decode_errors():
    with pytest.raises(DecodeError):
        c.GloSetRequest.from_bytes(GLO_GET_APDU)
    for content_len in range(5):
        with pytest.raises(DecodeError):
            c.decode_ciphered(bytes((0xC8, content_len)) + bytes(content_len))


# --- general-glo / general-ded ----------------------------------------------------------


def _gurux_packet(tag: int, title: bytes, counter: int, plain: bytes) -> bytes:
    from gurux_dlms.AesGcmParameter import AesGcmParameter
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering
    from gurux_dlms.enums import Security

    p = AesGcmParameter(tag, title, EK, AK)
    p.security = Security.AUTHENTICATION_ENCRYPTION
    p.invocationCounter = counter
    return bytes(GXDLMSChippering.encryptAesGcm(p, plain))


@pytest.mark.parametrize("cls", [c.GeneralGloCiphering, c.GeneralDedCiphering])
def test_general_glo_ded_match_gurux(cls):
    plain = bytes.fromhex("0F00000001000C07EA0B16FF0C000000FF800000")  # a data-notification
    ours = cls.protect(0x30, EK, AK, SERVER_TITLE, 99, plain)
    assert ours.to_bytes() == _gurux_packet(cls.TAG, SERVER_TITLE, 99, plain)
    back = c.decode_ciphered(ours.to_bytes())
    assert back == ours and back.system_title == SERVER_TITLE
    assert back.unprotect(EK, AK) == plain


def test_general_glo_ciphering_against_dlms_cosem_both_ways():
    from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher
    from dlms_cosem.security import SecurityControlField

    plain = b"\x0f\x00\x00\x00\x01\x00\x09\x03abc"
    ours = c.GeneralGloCiphering.protect(0x30, EK, AK, SERVER_TITLE, 1234, plain)
    theirs = GeneralGlobalCipher.from_bytes(ours.to_bytes())
    assert theirs.to_plain_apdu(EK, AK) == plain
    built = GeneralGlobalCipher(SERVER_TITLE, SecurityControlField(0, True, True), 1234, ours.ciphertext)
    assert built.to_bytes() == ours.to_bytes()


# --- general-ciphering ------------------------------------------------------------------


def _gurux_general_ciphering_payload(counter: int, plain: bytes) -> bytes:
    """ciphertext || tag from gurux with its AAD for general-ciphering (suite 1):
    SC || AK || 08 transaction-id(=IC) || 08 originator || 08 recipient || 00 || 00."""
    from gurux_dlms.AesGcmParameter import AesGcmParameter
    from gurux_dlms.CountType import CountType
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering
    from gurux_dlms.enums import Security
    from gurux_dlms.objects.enums import SecuritySuite

    p = AesGcmParameter(0xDD, CLIENT_TITLE, EK, AK)
    p.security = Security.AUTHENTICATION_ENCRYPTION
    p.securitySuite = SecuritySuite.SUITE_1
    p.invocationCounter = counter
    p.recipientSystemTitle = SERVER_TITLE
    p.type_ = CountType.DATA | CountType.TAG
    return bytes(GXDLMSChippering.encryptAesGcm(p, plain))


@pytest.mark.parametrize("plain", [b"\xc0\x01\xc1\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00", bytes(range(200))])
def test_general_ciphering_aad_covers_the_header_like_gurux(plain):
    apdu = c.GeneralCiphering.protect(
        0x31, EK, AK, 7, plain, transaction_id=(7).to_bytes(8, "big"), originator_system_title=CLIENT_TITLE,
        recipient_system_title=SERVER_TITLE, key_info=c.IdentifiedKey(c.IdentifiedKeyId.GLOBAL_UNICAST_ENCRYPTION_KEY),
    )
    assert apdu.ciphertext == _gurux_general_ciphering_payload(7, plain)
    assert apdu.header_bytes() == (b"\x08" + (7).to_bytes(8, "big") + b"\x08" + CLIENT_TITLE + b"\x08" + SERVER_TITLE
                                   + b"\x00\x00")
    back = c.decode_ciphered(apdu.to_bytes())
    assert back == apdu and back.unprotect(EK, AK) == plain


def test_general_ciphering_layout_and_header_binding():
    dt = bytes.fromhex("07EA0B16FF0C0000FF800000")
    apdu = c.GeneralCiphering.protect(
        0x31, EK, AK, 3, b"\xc4\x01\xc1\x00\x09\x00", transaction_id=b"\x01\x02", originator_system_title=SERVER_TITLE,
        recipient_system_title=CLIENT_TITLE, key_info=c.WrappedKey(bytes(24)), date_time=dt, other_information=b"oi",
    )
    wire = apdu.to_bytes()
    assert wire.startswith(b"\xdd\x02\x01\x02\x08" + SERVER_TITLE + b"\x08" + CLIENT_TITLE + b"\x0c" + dt
                           + b"\x02oi" + b"\x01\x01\x00\x18" + bytes(24))
    assert wire[wire.index(bytes(24)) + 24:][1:6] == b"\x31\x00\x00\x00\x03"
    # changing any header field breaks the tag
    import dataclasses

    for change in ({"transaction_id": b"\x01\x03"}, {"recipient_system_title": SERVER_TITLE},
                   {"date_time": b""}, {"other_information": b"oj"}):
        with pytest.raises(AuthenticationError):
            dataclasses.replace(apdu, **change).unprotect(EK, AK)
    # key-info is not covered (as in gurux and Connexo)
    assert dataclasses.replace(apdu, key_info=None).unprotect(EK, AK) == b"\xc4\x01\xc1\x00\x09\x00"


@pytest.mark.parametrize("key_info", [
    None,
    c.IdentifiedKey(c.IdentifiedKeyId.GLOBAL_UNICAST_ENCRYPTION_KEY),
    c.IdentifiedKey(c.IdentifiedKeyId.GLOBAL_BROADCAST_ENCRYPTION_KEY),
    c.WrappedKey(bytes(range(24))),
    c.AgreedKey(b"\x01", bytes(range(128))),
])
def test_general_ciphering_key_info_round_trips(key_info):
    apdu = c.GeneralCiphering(b"t", CLIENT_TITLE, SERVER_TITLE, b"", b"", key_info, 0x31, 1, bytes(20))
    assert c.decode_ciphered(apdu.to_bytes()) == apdu


@pytest.mark.parametrize("body", [
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "00" "00" "01" "03" "00",  # key-info choice 3
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "00" "00" "01" "00" "02",  # identified key-id 2
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "00" "00" "01" "01" "01" "00",  # kek-id 1
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "00" "00" "02",  # presence flag 2
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "05" "0000000000" "00" "00" "05" "3000000001",  # date-time 5
    "0100" "08" + "00" * 8 + "08" + "00" * 8 + "00" "00" "00" "04" "30000000",  # content < 5
])
def test_general_ciphering_malformed_is_decode_error(body):
    with pytest.raises(DecodeError):
        c.decode_ciphered(b"\xdd" + h(body))


# --- general-signing --------------------------------------------------------------------


@pytest.mark.parametrize("suite", [1, 2])
def test_general_signing_fixtures(suite):
    f = SUITE_FIXTURES[suite]
    client_pub = signing.public_key_from_bytes(suite, h(f["client_signing_public"]))
    server_pub = signing.public_key_from_bytes(suite, h(f["server_signing_public"]))
    plain = c.decode_ciphered(h(f["general_signing_plain"]["apdu"]))
    assert isinstance(plain, c.GeneralSigning) and plain.to_bytes() == h(f["general_signing_plain"]["apdu"])
    assert plain.verify(client_pub, suite) == bytes.fromhex("C0010000080000010000FF0200")
    with pytest.raises(AuthenticationError):
        plain.verify(server_pub, suite)
    signed = c.decode_ciphered(h(f["general_signing_ciphered"]["apdu"]))
    inner = c.decode_ciphered(signed.verify(server_pub, suite))
    assert isinstance(inner, c.GloGetRequest)
    gs = f["general_signing_ciphered"]
    assert inner.unprotect(h(gs["ek"]), h(gs["ak"]), signed.originator_system_title) == h(gs["plain_content"])
    assert len(signed.date_time) == 12 and len(signed.signature) == (64 if suite == 1 else 96)


def test_general_signing_signed_data_is_header_then_content_without_length():
    apdu = c.GeneralSigning(b"\x01", CLIENT_TITLE, SERVER_TITLE, b"", b"\xaa", b"\xc0\x01", b"")
    assert apdu.signed_data() == b"\x01\x01\x08" + CLIENT_TITLE + b"\x08" + SERVER_TITLE + b"\x00\x01\xaa\xc0\x01"
    assert apdu.to_bytes() == b"\xdf" + apdu.signed_data()[:-2] + b"\x02\xc0\x01\x00"


@pytest.mark.parametrize("suite", [1, 2])
def test_general_signing_detects_tampering_anywhere(suite):
    key = private_key(suite, SUITE_FIXTURES[suite]["client_signing_private"])
    apdu = c.GeneralSigning.sign(key, b"\xc0\x01\xc1\x00\x08", b"\x00" * 8, CLIENT_TITLE, SERVER_TITLE, suite=suite)
    wire = apdu.to_bytes()
    sig_start = len(wire) - len(apdu.signature)
    for i in range(1, len(wire)):
        tampered = bytearray(wire)
        tampered[i] ^= 0x01
        try:
            decoded = c.decode_ciphered(bytes(tampered))
        except DecodeError:
            continue  # a length byte changed: not even an APDU any more
        with pytest.raises(AuthenticationError):
            decoded.verify(key.public_key(), suite)
    assert sig_start > 0


# --- totality and round trips -------------------------------------------------------------


def test_decode_ciphered_refuses_unknown_tags_trailing_bytes_and_truncation():
    with pytest.raises(DecodeError):
        c.decode_ciphered(b"")
    with pytest.raises(DecodeError):
        c.decode_ciphered(b"\xc0\x01")  # a plain get-request
    with pytest.raises(DecodeError):
        c.decode_ciphered(GLO_GET_APDU + b"\x00")
    for n in range(1, len(GLO_GET_APDU)):
        with pytest.raises(TruncatedError):
            c.decode_ciphered(GLO_GET_APDU[:n])


def test_encode_errors_are_typed():
    with pytest.raises(EncodeError):
        c.GloGetRequest(0x130, 1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GloGetRequest(0x30, -1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GeneralGloCiphering("title", 0x30, 1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GeneralCiphering(b"", b"", b"", b"12345", b"", None, 0x30, 1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GeneralCiphering(b"", b"", b"", b"", b"", "key", 0x30, 1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GeneralCiphering(b"", b"", b"", b"", b"", c.IdentifiedKey(5), 0x30, 1, b"").to_bytes()
    with pytest.raises(EncodeError):
        c.GeneralSigning(b"", b"", b"", b"", b"", b"", None).to_bytes()


octets = st.binary(max_size=40)
content = st.tuples(st.integers(0, 255), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
key_infos = st.one_of(
    st.none(),
    st.sampled_from(list(c.IdentifiedKeyId)).map(c.IdentifiedKey),
    octets.map(c.WrappedKey),
    st.builds(c.AgreedKey, octets, octets),
)


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from(list(c.GLO_TAG_FOR_PLAIN.values()) + list(c.DED_TAG_FOR_PLAIN.values())),
    content=content,
)
def test_service_specific_round_trip(cls, content):
    apdu = cls(*content)
    assert c.decode_ciphered(apdu.to_bytes()) == apdu


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_general_round_trips(data):
    dt = data.draw(st.sampled_from([b"", bytes(12)]))
    header = (data.draw(octets), data.draw(octets), data.draw(octets), dt, data.draw(octets))
    kind = data.draw(st.sampled_from(["glo", "ded", "gc", "gs"]))
    if kind in ("glo", "ded"):
        cls = c.GeneralGloCiphering if kind == "glo" else c.GeneralDedCiphering
        apdu = cls(data.draw(octets), *data.draw(content))
    elif kind == "gc":
        apdu = c.GeneralCiphering(*header, data.draw(key_infos), *data.draw(content))
    else:
        apdu = c.GeneralSigning(*header, data.draw(st.binary(max_size=300)), data.draw(octets))
    assert c.decode_ciphered(apdu.to_bytes()) == apdu
