"""ACSE APDUs (AARQ, AARE, RLRQ, RLRE): examples, round trips, peer cross-checks, rejects."""
from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartmeter.dlms.apdu.acse import (
    AARE,
    AARQ,
    RLRE,
    RLRQ,
    AcseServiceProviderDiagnostic,
    AcseServiceUserDiagnostic,
    ApplicationContextName,
    AssociationResult,
    MechanismName,
    ReleaseRequestReason,
    ReleaseResponseReason,
    ResultSource,
    decode_acse,
)
from smartmeter.dlms.apdu.initiate import Conformance, InitiateRequest, InitiateResponse
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

INITIATE_REQUEST = bytes.fromhex("01000000065F1F0400007E1F04B0")
INITIATE_RESPONSE = bytes.fromhex("0800065F1F040000501F01F40007")

# Green Book examples: LN referencing, lowest level security.
AARQ_LN_LOWEST = bytes.fromhex(
    "601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0"
)
AARE_LN_LOWEST = bytes.fromhex(
    "6129A109060760857405080101A203020100A305A103020100"
    "BE10040E0800065F1F040000501F01F40007"
)
# Green Book style HLS example: mechanism 5 (GMAC), client challenge "K56iVagL"; the
# AARE carries diagnostic authentication-required and the server challenge "P6wRJ21F".
AARQ_LN_HLS = bytes.fromhex(
    "6036A109060760857405080101"
    "8A020780"
    "8B0760857405080205"
    "AC0A80084B35366956616" "74C"
    "BE10040E01000000065F1F0400007E1F04B0"
)
AARE_LN_HLS = bytes.fromhex(
    "6142A109060760857405080101A203020100A305A10302010E"
    "880207808907608574050802" "05"
    "AA0A8008503677524A323146"
    "BE10040E0800065F1F040000501F01F40007"
)
# Low level security, password "12345678" (as gurux and the Green Book encode it).
AARQ_LN_LLS = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)


def strip_wrapper(frame: bytes) -> bytes:
    assert frame[:2] == b"\x00\x01"
    assert int.from_bytes(frame[6:8], "big") == len(frame) - 8
    return frame[8:]


# ------------------------------------------------------------------ published examples


def test_green_book_aarq_lowest_security():
    aarq = decode_acse(AARQ_LN_LOWEST)
    assert aarq == AARQ(
        application_context_name=ApplicationContextName.LOGICAL_NAME,
        user_information=INITIATE_REQUEST,
    )
    assert aarq.to_bytes() == AARQ_LN_LOWEST
    assert InitiateRequest.from_bytes(aarq.user_information).client_max_receive_pdu_size == 1200


def test_green_book_aare_lowest_security():
    aare = decode_acse(AARE_LN_LOWEST)
    assert aare == AARE(
        application_context_name=ApplicationContextName.LOGICAL_NAME,
        result=AssociationResult.ACCEPTED,
        result_source=ResultSource.ACSE_SERVICE_USER,
        diagnostic=AcseServiceUserDiagnostic.NULL,
        user_information=INITIATE_RESPONSE,
    )
    assert aare.to_bytes() == AARE_LN_LOWEST
    assert InitiateResponse.from_bytes(aare.user_information).server_max_receive_pdu_size == 500


def test_green_book_aarq_hls():
    aarq = decode_acse(AARQ_LN_HLS)
    assert aarq == AARQ(
        application_context_name=1,
        sender_acse_requirements=True,
        mechanism_name=MechanismName.HIGH_GMAC,
        calling_authentication_value=b"K56iVagL",
        user_information=INITIATE_REQUEST,
    )
    assert aarq.to_bytes() == AARQ_LN_HLS


def test_green_book_aare_hls():
    aare = decode_acse(AARE_LN_HLS)
    assert aare == AARE(
        application_context_name=1,
        result=0,
        result_source=1,
        diagnostic=AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        responder_acse_requirements=True,
        mechanism_name=5,
        responding_authentication_value=b"P6wRJ21F",
        user_information=INITIATE_RESPONSE,
    )
    assert aare.to_bytes() == AARE_LN_HLS


def test_lls_aarq():
    aarq = decode_acse(AARQ_LN_LLS)
    assert aarq.mechanism_name == MechanismName.LOW
    assert aarq.calling_authentication_value == b"12345678"
    assert aarq.to_bytes() == AARQ_LN_LLS


def test_release_examples():
    assert RLRQ(reason=ReleaseRequestReason.NORMAL).to_bytes() == bytes.fromhex("6203800100")
    assert decode_acse(bytes.fromhex("6203800100")) == RLRQ(reason=0)
    assert RLRE(reason=ReleaseResponseReason.NORMAL).to_bytes() == bytes.fromhex("6303800100")
    assert decode_acse(bytes.fromhex("6300")) == RLRE()
    rlrq = RLRQ(reason=0, user_information=INITIATE_REQUEST)
    assert rlrq.to_bytes() == bytes.fromhex("6215800100BE10040E") + INITIATE_REQUEST
    assert decode_acse(rlrq.to_bytes()) == rlrq


def test_decoded_values_are_enums():
    aare = decode_acse(AARE_LN_HLS)
    assert isinstance(aare.result, AssociationResult)
    assert isinstance(aare.result_source, ResultSource)
    assert isinstance(aare.diagnostic, AcseServiceUserDiagnostic)
    assert isinstance(aare.mechanism_name, MechanismName)
    provider = AARE(result=1, result_source=2, diagnostic=2)
    decoded = decode_acse(provider.to_bytes())
    assert decoded.diagnostic is AcseServiceProviderDiagnostic.NO_COMMON_ACSE_VERSION
    assert decoded.to_bytes()[2:] .find(bytes.fromhex("A305A203020102")) >= 0


# ------------------------------------------------------------------ structure


def test_titles_qualifiers_and_protocol_version_are_placed_in_asn1_order():
    aarq = AARQ(
        application_context_name=ApplicationContextName.LOGICAL_NAME_WITH_CIPHERING,
        calling_ap_title=b"ABCDEFGH",
        calling_ae_qualifier=b"\x01\x02",
        called_ap_title=b"SERVER01",
        called_ae_qualifier=b"\x03",
        user_information=b"\x21\x03\x30\x00\x01",
        protocol_version=1,
    )
    data = aarq.to_bytes()
    expected_content = bytes.fromhex(
        "80020780"
        "A109060760857405080103"
        "A20A0408" + b"SERVER01".hex() +
        "A30304" "0103"
        "A60A0408" + b"ABCDEFGH".hex() +
        "A704" "04020102"
        "BE07" "0405" "2103300001"
    )
    assert data == bytes([0x60, len(expected_content)]) + expected_content
    assert decode_acse(data) == aarq


def test_long_form_lengths_for_a_certificate_sized_ae_qualifier():
    certificate = bytes(range(256)) * 2  # 512 bytes: needs 82 xx xx lengths
    aarq = AARQ(calling_ap_title=b"ABCDEFGH", calling_ae_qualifier=certificate,
                user_information=INITIATE_REQUEST)
    data = aarq.to_bytes()
    assert data[:2] == b"\x60\x82"
    assert bytes.fromhex("A7820204048202 00".replace(" ", "")) in data
    assert decode_acse(data) == aarq


def test_components_are_accepted_in_any_order():
    # Reorder the components of the HLS AARE in every way; content stays the same.
    outer = decode_acse(AARE_LN_HLS)
    parts = [
        bytes.fromhex("A109060760857405080101"),
        bytes.fromhex("A203020100"),
        bytes.fromhex("A305A10302010E"),
        bytes.fromhex("88020780"),
        bytes.fromhex("89076085740508020" "5"),
        bytes.fromhex("AA0A8008503677524A323146"),
        bytes.fromhex("BE10040E") + INITIATE_RESPONSE,
    ]
    assert b"".join(parts) == AARE_LN_HLS[2:]
    for count, order in enumerate(itertools.permutations(parts)):
        if count % 97:  # a spread-out sample of the 5040 orders keeps the test quick
            continue
        content = b"".join(order)
        assert decode_acse(bytes([0x61, len(content)]) + content) == outer


@pytest.mark.parametrize(
    "extra",
    [
        "A403020101",  # called-AP-invocation-id
        "A503020101",  # called-AE-invocation-id
        "A803020101",  # calling-AP-invocation-id
        "A903020101",  # calling-AE-invocation-id
        "9D03414243",  # implementation-information [29] IMPLICIT GraphicString
        "BD03800141",  # implementation-information as dlms_cosem tags it (constructed)
        "9F2101FF",  # a high-numbered context tag [33]
    ],
)
def test_ignored_components_are_skipped(extra):
    content = AARQ_LN_LOWEST[2:13] + bytes.fromhex(extra) + AARQ_LN_LOWEST[13:]
    data = bytes([0x60, len(content)]) + content
    assert decode_acse(data) == decode_acse(AARQ_LN_LOWEST)


def test_acse_requirements_bit_string_variants():
    # A present but zero ACSE-requirements, and one with a longer bit string.
    for field, expected in (("8A0100", False), ("8A020600", False), ("8A03068040", True)):
        content = AARQ_LN_LOWEST[2:13] + bytes.fromhex(field) + AARQ_LN_LOWEST[13:]
        aarq = decode_acse(bytes([0x60, len(content)]) + content)
        assert aarq.sender_acse_requirements is expected


def test_unknown_mechanism_and_context_arcs_are_kept_as_ints():
    aarq = AARQ(application_context_name=9, mechanism_name=200, sender_acse_requirements=True)
    decoded = decode_acse(aarq.to_bytes())
    assert decoded == aarq
    assert type(decoded.mechanism_name) is int and decoded.mechanism_name == 200


# ------------------------------------------------------------------ malformed input


def _aarq_with(content_hex: str) -> bytes:
    content = bytes.fromhex(content_hex)
    return bytes([0x60, len(content)]) + content


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x60",
        bytes.fromhex("601E") + AARQ_LN_LOWEST[2:],  # outer length one too long
        AARQ_LN_LOWEST + b"\x00",  # trailing byte
        bytes.fromhex("6080") + AARQ_LN_LOWEST[2:] + b"\x00\x00",  # indefinite length
        bytes.fromhex("6085FFFFFFFFFF"),  # 5-octet length
        bytes.fromhex("6081"),  # long form length cut short
        bytes.fromhex("64020000"),  # not an ACSE tag
        bytes.fromhex("4000"),  # application class but primitive
        _aarq_with("BE10040E" + INITIATE_REQUEST.hex()),  # application-context-name missing
        _aarq_with("A109060760857405080101" * 2),  # repeated component
        _aarq_with("A1090607608574050801"),  # inner OID longer than its wrapper
        _aarq_with("A10A06076085740508010100"),  # trailing byte in explicit wrapper
        _aarq_with("A109040760857405080101"),  # OCTET STRING where an OID belongs
        _aarq_with("A1090607608574050802" "01"),  # mechanism-name OID as context name
        _aarq_with("A108060660857405080101"[:-2]),  # OID of 5 arcs only
        _aarq_with("A10906072A857405080101"),  # wrong OID root
        _aarq_with("A10806068085740508"),  # OID arc with leading 0x80
        _aarq_with("A1080606608574050881"),  # OID ending inside an arc
        _aarq_with("0101FF" + "A109060760857405080101"),  # universal component
        _aarq_with("A109060760857405080101" "AC0A81080102030405060708"),  # bitstring auth value
        _aarq_with("A109060760857405080101" "AC0A800801020304050607"),  # auth value short
        _aarq_with("A109060760857405080101" "8A020880"),  # unused bits 8
        _aarq_with("A109060760857405080101" "8A0101"),  # unused bits without data
        _aarq_with("A109060760857405080101" "8A00"),  # empty BIT STRING
        _aarq_with("A109060760857405080101" "AA020780"),  # [10] must be primitive in AARQ
        _aarq_with("A109060760857405080101" "2A020780"),  # [10] constructed
        _aarq_with("A109060760857405080101" "A60A0308" + "00" * 8),  # AP-title not OCTET STRING
        _aarq_with("A109060760857405080101" "A403A102"),  # skipped component malformed inside
        _aarq_with("A109060760857405080101" "BF1F"),  # high tag number truncated
        _aarq_with("A109060760857405080101" "BF0001"),  # high tag number form for small tag
        _aarq_with("A109060760857405080101" "BF8080808001" + "00"),  # tag number too large
        _aarq_with("A109060760857405080101" "9D"),  # length octet missing
        _aarq_with("A109060760857405080101" "9DFF"),  # reserved length octet
    ],
)
def test_malformed_aarq_raises_decode_error(data):
    with pytest.raises(DecodeError):
        decode_acse(data)


def _aare_with(content_hex: str) -> bytes:
    content = bytes.fromhex(content_hex)
    return bytes([0x61, len(content)]) + content


@pytest.mark.parametrize(
    "content",
    [
        "A109060760857405080101A305A103020100",  # result missing
        "A109060760857405080101A203020100",  # result-source-diagnostic missing
        "A203020100A305A103020100",  # application-context-name missing
        "A109060760857405080101A203020103A305A103020100",  # result 3
        "A109060760857405080101A203020100A305A303020100",  # diagnostic choice [3]
        "A109060760857405080101A203020100A3058103020100",  # choice primitive
        "A109060760857405080101A203020100A306A10302010000",  # trailing byte in [3]
        "A109060760857405080101A203020100A305A103040100",  # diagnostic not INTEGER
        "A109060760857405080101A200A305A103020100",  # empty result
        "A109060760857405080101A2020200A305A103020100",  # empty INTEGER
        "A109060760857405080101A20B0209010000000000000000A305A103020100",  # 9-octet INTEGER
    ],
)
def test_malformed_aare_raises_decode_error(content):
    with pytest.raises(DecodeError):
        decode_acse(_aare_with(content))


@pytest.mark.parametrize(
    "data",
    ["6202", "620280", "6203800200", "620300FF00", "6204BE020401", "6203A00100", "6302BE00"],
)
def test_malformed_release_raises_decode_error(data):
    with pytest.raises(DecodeError):
        decode_acse(bytes.fromhex(data))


def test_truncation_is_reported_as_truncated_error():
    for cut in range(1, len(AARE_LN_HLS)):
        with pytest.raises(DecodeError):
            decode_acse(AARE_LN_HLS[:cut])
    with pytest.raises(TruncatedError):
        decode_acse(AARE_LN_HLS[:-1])


@pytest.mark.parametrize(
    "apdu",
    [
        AARQ(application_context_name=-1),
        AARQ(application_context_name=0x10000),
        AARQ(mechanism_name=-1),
        AARQ(calling_ap_title="ABCDEFGH"),
        AARQ(protocol_version=-1),
        AARE(result_source=3),
        AARE(result="0"),
        RLRQ(reason="normal"),
    ],
)
def test_invalid_field_values_raise_encode_error(apdu):
    with pytest.raises(EncodeError):
        apdu.to_bytes()


# ------------------------------------------------------------------ round trips

octets = st.none() | st.binary(max_size=300)
arcs = st.integers(0, 0xFFFF)

aarqs = st.builds(
    AARQ,
    application_context_name=arcs,
    calling_ap_title=octets,
    calling_ae_qualifier=octets,
    called_ap_title=octets,
    called_ae_qualifier=octets,
    sender_acse_requirements=st.booleans(),
    mechanism_name=st.none() | arcs,
    calling_authentication_value=octets,
    user_information=octets,
    protocol_version=st.none() | st.integers(0, 2**64 - 1),
)
aares = st.builds(
    AARE,
    application_context_name=arcs,
    result=st.sampled_from(AssociationResult),
    result_source=st.sampled_from(ResultSource),
    diagnostic=st.integers(-(2**63), 2**63 - 1),
    responding_ap_title=octets,
    responding_ae_qualifier=octets,
    responder_acse_requirements=st.booleans(),
    mechanism_name=st.none() | arcs,
    responding_authentication_value=octets,
    user_information=octets,
    protocol_version=st.none() | st.integers(0, 2**64 - 1),
)
reasons = st.none() | st.integers(-(2**63), 2**63 - 1)
releases = st.builds(RLRQ, reason=reasons, user_information=octets) | st.builds(
    RLRE, reason=reasons, user_information=octets
)


@given(st.one_of(aarqs, aares, releases))
def test_round_trip(apdu):
    data = apdu.to_bytes()
    decoded = decode_acse(data)
    assert decoded == apdu
    assert type(decoded) is type(apdu)
    assert decoded.to_bytes() == data
    assert type(apdu).from_bytes(data) == apdu


@given(aarqs)
def test_each_decoder_rejects_the_other_apdus(aarq):
    data = aarq.to_bytes()
    for other in (AARE, RLRQ, RLRE):
        with pytest.raises(DecodeError):
            other.from_bytes(data)


# ------------------------------------------------------------------ gurux-dlms as a peer


def _gurux_client(authentication, password=None, logical_name=True, system_title=None,
                  ciphered=False):
    from gurux_dlms import GXCiphering, GXDLMSClient
    from gurux_dlms.enums import InterfaceType, Security

    client = GXDLMSClient(logical_name, 16, 1, authentication, password, InterfaceType.WRAPPER)
    if system_title is not None:
        cipher = GXCiphering(system_title)
        if ciphered:
            cipher.security = Security.AUTHENTICATION_ENCRYPTION
            cipher.blockCipherKey = bytes(range(16))
            cipher.authenticationKey = bytes(range(16, 32))
        client.settings.cipher = cipher
    return client


def _gurux_aarq(client) -> bytes:
    frames = client.aarqRequest()
    assert len(frames) == 1
    return strip_wrapper(bytes(frames[0]))


def test_gurux_aarq_lowest_security_is_decoded():
    from gurux_dlms.enums import Authentication

    data = _gurux_aarq(_gurux_client(Authentication.NONE))
    aarq = decode_acse(data)
    assert aarq.application_context_name == ApplicationContextName.LOGICAL_NAME
    assert aarq.mechanism_name is None and not aarq.sender_acse_requirements
    request = InitiateRequest.from_bytes(aarq.user_information)
    assert request.proposed_dlms_version_number == 6
    assert Conformance.GET in request.proposed_conformance
    assert aarq.to_bytes() == data  # our encoding of the same content is byte-identical


def test_gurux_aarq_low_security_is_decoded():
    from gurux_dlms.enums import Authentication

    data = _gurux_aarq(_gurux_client(Authentication.LOW, "12345678"))
    aarq = decode_acse(data)
    assert aarq.sender_acse_requirements
    assert aarq.mechanism_name == MechanismName.LOW
    assert aarq.calling_authentication_value == b"12345678"
    assert aarq.to_bytes() == data


def test_gurux_aarq_short_name_is_decoded():
    from gurux_dlms.enums import Authentication

    data = _gurux_aarq(_gurux_client(Authentication.LOW, "pw", logical_name=False))
    aarq = decode_acse(data)
    assert aarq.application_context_name == ApplicationContextName.SHORT_NAME
    assert aarq.calling_authentication_value == b"pw"
    assert aarq.to_bytes() == data


def test_gurux_aarq_hls_gmac_with_system_title_is_decoded():
    from gurux_dlms.enums import Authentication

    data = _gurux_aarq(_gurux_client(Authentication.HIGH_GMAC, system_title=b"ABCDEFGH"))
    aarq = decode_acse(data)
    assert aarq.mechanism_name == MechanismName.HIGH_GMAC
    assert aarq.calling_ap_title == b"ABCDEFGH"
    assert len(aarq.calling_authentication_value) == 16  # gurux's random challenge
    assert aarq.to_bytes() == data


def test_gurux_ciphered_aarq_is_decoded_with_raw_user_information():
    from gurux_dlms.enums import Authentication

    client = _gurux_client(Authentication.HIGH_GMAC, system_title=b"ABCDEFGH", ciphered=True)
    data = _gurux_aarq(client)
    aarq = decode_acse(data)
    assert aarq.application_context_name == ApplicationContextName.LOGICAL_NAME_WITH_CIPHERING
    assert aarq.user_information[0] == 0x21  # glo-initiate-request, passed through as is
    assert aarq.to_bytes() == data


def _gurux_xml(data: bytes) -> str:
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator

    return GXDLMSTranslator().pduToXml(GXByteBuffer(data))


def _xml_value(xml: str, element: str) -> str:
    match = re.search(rf'<{element} Value="([^"]*)"', xml)
    assert match, f"{element} not in {xml}"
    return match.group(1)


def test_our_aarq_is_read_by_gurux_translator():
    aarq = AARQ(
        application_context_name=ApplicationContextName.LOGICAL_NAME,
        calling_ap_title=b"ABCDEFGH",
        sender_acse_requirements=True,
        mechanism_name=MechanismName.HIGH_GMAC,
        calling_authentication_value=b"K56iVagL",
        user_information=INITIATE_REQUEST,
    )
    xml = _gurux_xml(aarq.to_bytes())
    assert xml.startswith("<AssociationRequest>")
    assert _xml_value(xml, "ApplicationContextName") == "LN"
    assert _xml_value(xml, "CallingAPTitle") == b"ABCDEFGH".hex().upper()
    assert _xml_value(xml, "SenderACSERequirements") == "1"
    assert _xml_value(xml, "MechanismName") == "HighGmac"
    assert _xml_value(xml, "CallingAuthentication") == b"K56iVagL".hex().upper()
    assert _xml_value(xml, "ProposedMaxPduSize") == "04B0"


def test_our_aare_is_read_by_gurux_translator():
    aare = AARE(
        result=AssociationResult.REJECTED_PERMANENT,
        result_source=ResultSource.ACSE_SERVICE_USER,
        diagnostic=AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
        responding_ap_title=b"SERVER01",
        user_information=INITIATE_RESPONSE,
    )
    xml = _gurux_xml(aare.to_bytes())
    assert xml.startswith("<AssociationResponse>")
    assert _xml_value(xml, "AssociationResult") == "01"
    assert _xml_value(xml, "ACSEServiceUser") == "02"
    assert _xml_value(xml, "RespondingAPTitle") == b"SERVER01".hex().upper()
    assert _xml_value(xml, "NegotiatedMaxPduSize") == "01F4"


def test_our_rlrq_is_read_by_gurux_translator():
    xml = _gurux_xml(RLRQ(reason=ReleaseRequestReason.NORMAL).to_bytes())
    assert xml.startswith("<ReleaseRequest>")
    assert _xml_value(xml, "Reason") == "Normal"


def test_gurux_client_accepts_our_aare():
    from gurux_dlms import GXByteBuffer
    from gurux_dlms.enums import Authentication

    client = _gurux_client(Authentication.NONE)
    client.aarqRequest()
    negotiated = Conformance.GET | Conformance.SET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    aare = AARE(user_information=InitiateResponse(
        negotiated_conformance=negotiated, server_max_receive_pdu_size=768).to_bytes())
    client.parseAareResponse(GXByteBuffer(aare.to_bytes()))
    assert client.maxReceivePDUSize == 768
    # gurux numbers conformance bits from the LSB: its value is our 24-bit string reversed.
    assert int(client.negotiatedConformance) == int(f"{int(negotiated):024b}"[::-1], 2)


def test_gurux_client_reports_our_rejection():
    from gurux_dlms import GXByteBuffer
    from gurux_dlms.GXDLMSException import GXDLMSException
    from gurux_dlms.enums import Authentication

    client = _gurux_client(Authentication.NONE)
    client.aarqRequest()
    aare = AARE(
        result=AssociationResult.REJECTED_PERMANENT,
        diagnostic=AcseServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
        user_information=INITIATE_RESPONSE,
    )
    with pytest.raises(GXDLMSException) as info:
        client.parseAareResponse(GXByteBuffer(aare.to_bytes()))
    assert int(info.value.result) == 1
    assert int(info.value.diagnostic) == 2


# ------------------------------------------------------------------ dlms-cosem as a peer


def _cosem_initiate_request():
    from dlms_cosem.protocol import xdlms

    return xdlms.InitiateRequest(
        proposed_conformance=xdlms.Conformance(get=True, set=True, action=True,
                                               block_transfer_with_get_or_read=True),
        client_max_receive_pdu_size=1200,
    )


def test_dlms_cosem_aarq_is_decoded():
    from dlms_cosem import enumerations
    from dlms_cosem.protocol.acse import ApplicationAssociationRequest, UserInformation

    theirs = ApplicationAssociationRequest(
        user_information=UserInformation(content=_cosem_initiate_request()),
        system_title=b"ABCDEFGH",
        public_cert=b"\x30\x03\x02\x01\x00",
        authentication=enumerations.AuthenticationMechanism.HLS_GMAC,
        authentication_value=b"0123456789ABCDEF",
        ciphered=True,
    )
    data = theirs.to_bytes()
    aarq = decode_acse(data)
    assert aarq == AARQ(
        application_context_name=ApplicationContextName.LOGICAL_NAME_WITH_CIPHERING,
        calling_ap_title=b"ABCDEFGH",
        calling_ae_qualifier=b"\x30\x03\x02\x01\x00",
        sender_acse_requirements=True,
        mechanism_name=MechanismName.HIGH_GMAC,
        calling_authentication_value=b"0123456789ABCDEF",
        user_information=_cosem_initiate_request().to_bytes(),
    )
    assert aarq.to_bytes() == data


def test_our_aarq_is_decoded_by_dlms_cosem():
    from dlms_cosem import enumerations
    from dlms_cosem.protocol.acse import ApplicationAssociationRequest

    ours = AARQ(
        application_context_name=ApplicationContextName.LOGICAL_NAME,
        calling_ap_title=b"ABCDEFGH",
        sender_acse_requirements=True,
        mechanism_name=MechanismName.LOW,
        calling_authentication_value=b"12345678",
        user_information=INITIATE_REQUEST,
    )
    theirs = ApplicationAssociationRequest.from_bytes(ours.to_bytes())
    assert theirs.system_title == b"ABCDEFGH"
    assert theirs.authentication == enumerations.AuthenticationMechanism.LLS
    assert theirs.authentication_value == b"12345678"
    assert theirs.ciphered is False
    assert theirs.user_information.content.client_max_receive_pdu_size == 1200
    assert theirs.to_bytes() == ours.to_bytes()


@pytest.mark.parametrize(
    "result,source,diagnostic",
    [
        (0, 1, AcseServiceUserDiagnostic.NULL),
        (1, 1, AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE),
        (2, 2, AcseServiceProviderDiagnostic.NO_COMMON_ACSE_VERSION),
        (0, 1, AcseServiceUserDiagnostic.AUTHENTICATION_REQUIRED),
    ],
)
def test_our_aare_is_decoded_by_dlms_cosem(result, source, diagnostic):
    from dlms_cosem import enumerations
    from dlms_cosem.protocol.acse import ApplicationAssociationResponse

    ours = AARE(
        application_context_name=ApplicationContextName.LOGICAL_NAME_WITH_CIPHERING,
        result=result,
        result_source=source,
        diagnostic=diagnostic,
        responding_ap_title=b"SERVER01",
        responder_acse_requirements=True,
        mechanism_name=MechanismName.HIGH_GMAC,
        responding_authentication_value=b"P6wRJ21F",
        user_information=INITIATE_RESPONSE,
    )
    theirs = ApplicationAssociationResponse.from_bytes(ours.to_bytes())
    assert theirs.result == enumerations.AssociationResult(result)
    expected_enum = (enumerations.AcseServiceUserDiagnostics if source == 1
                     else enumerations.AcseServiceProviderDiagnostics)
    assert theirs.result_source_diagnostics == expected_enum(int(diagnostic))
    assert theirs.ciphered is True
    assert theirs.system_title == b"SERVER01"
    assert theirs.authentication == enumerations.AuthenticationMechanism.HLS_GMAC
    assert theirs.authentication_value == b"P6wRJ21F"
    assert theirs.user_information.content.server_max_receive_pdu_size == 500
    # and dlms_cosem's encoding of that content is what we produced
    assert decode_acse(theirs.to_bytes()) == ours


@pytest.mark.parametrize("reason", [None, 0, 1, 30])
def test_release_apdus_agree_with_dlms_cosem(reason):
    from dlms_cosem import enumerations
    from dlms_cosem.protocol import xdlms
    from dlms_cosem.protocol.acse import ReleaseRequest, ReleaseResponse, UserInformation

    theirs_rq = ReleaseRequest(
        reason=None if reason is None else enumerations.ReleaseRequestReason(reason),
        user_information=UserInformation(content=_cosem_initiate_request()),
    )
    ours_rq = RLRQ(reason=reason, user_information=_cosem_initiate_request().to_bytes())
    assert decode_acse(theirs_rq.to_bytes()) == ours_rq
    decoded_rq = ReleaseRequest.from_bytes(ours_rq.to_bytes())
    assert decoded_rq.reason == theirs_rq.reason
    # (compared field by field: dlms_cosem decodes an absent quality-of-service as 0)
    assert decoded_rq.user_information.content.client_max_receive_pdu_size == 1200
    assert decoded_rq.user_information.content.proposed_conformance.get is True

    # (with user-information: dlms_cosem cannot decode an empty RLRE, `63 00`)
    theirs_re = ReleaseResponse(
        reason=None if reason is None else enumerations.ReleaseResponseReason(reason),
        user_information=UserInformation(content=xdlms.InitiateResponse.from_bytes(INITIATE_RESPONSE)),
    )
    ours_re = RLRE(reason=reason, user_information=INITIATE_RESPONSE)
    assert decode_acse(theirs_re.to_bytes()) == ours_re
    decoded_re = ReleaseResponse.from_bytes(ours_re.to_bytes())
    assert decoded_re.reason == theirs_re.reason
    assert decoded_re.user_information.content.server_max_receive_pdu_size == 500
