"""xDLMS InitiateRequest / InitiateResponse / initiate error and the conformance block."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartmeter.dlms.apdu.initiate import (
    Conformance,
    InitiateError,
    InitiateErrorReason,
    InitiateRequest,
    InitiateResponse,
    decode_initiate,
)
from smartmeter.errors import DecodeError, EncodeError, TruncatedError

# Green Book 9.5 / Annex examples (LN referencing, lowest security).
REQUEST_HEX = "01000000065F1F0400007E1F04B0"
RESPONSE_HEX = "0800065F1F040000501F01F40007"
REQUEST_WITH_KEY_HEX = "01011000112233445566778899AABBCCDDEEFF0000065F1F0400007E1F04B0"

LN_PROPOSED = (
    Conformance.PRIORITY_MGMT_SUPPORTED
    | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | Conformance.BLOCK_TRANSFER_WITH_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.EVENT_NOTIFICATION
    | Conformance.ACTION
)
LN_NEGOTIATED = (
    Conformance.PRIORITY_MGMT_SUPPORTED
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.EVENT_NOTIFICATION
    | Conformance.ACTION
)

# Bit numbers (from the left of the 24-bit string) as listed in the Green Book.
BIT_NUMBERS = {
    "RESERVED_ZERO": 0, "GENERAL_PROTECTION": 1, "GENERAL_BLOCK_TRANSFER": 2, "READ": 3,
    "WRITE": 4, "UNCONFIRMED_WRITE": 5, "DELTA_VALUE_ENCODING": 6, "RESERVED_SEVEN": 7,
    "ATTRIBUTE0_SUPPORTED_WITH_SET": 8, "PRIORITY_MGMT_SUPPORTED": 9,
    "ATTRIBUTE0_SUPPORTED_WITH_GET": 10, "BLOCK_TRANSFER_WITH_GET_OR_READ": 11,
    "BLOCK_TRANSFER_WITH_SET_OR_WRITE": 12, "BLOCK_TRANSFER_WITH_ACTION": 13,
    "MULTIPLE_REFERENCES": 14, "INFORMATION_REPORT": 15, "DATA_NOTIFICATION": 16,
    "ACCESS": 17, "PARAMETERIZED_ACCESS": 18, "GET": 19, "SET": 20, "SELECTIVE_ACCESS": 21,
    "EVENT_NOTIFICATION": 22, "ACTION": 23,
}


# ------------------------------------------------------------------ conformance block


def test_conformance_has_exactly_the_24_named_bits():
    assert {m.name for m in Conformance} == set(BIT_NUMBERS)


@pytest.mark.parametrize("name,bit", sorted(BIT_NUMBERS.items(), key=lambda kv: kv[1]))
def test_conformance_bit_n_is_counted_from_the_left(name, bit):
    value = Conformance[name].to_bytes()
    as_string = "".join(f"{b:08b}" for b in value)
    assert as_string.index("1") == bit and as_string.count("1") == 1


def test_conformance_flags_combine_and_round_trip():
    both = Conformance.GET | Conformance.SET
    assert both.to_bytes() == bytes([0x00, 0x00, 0x18])
    assert Conformance.from_bytes(both.to_bytes()) == both
    assert LN_PROPOSED.to_bytes() == bytes.fromhex("007E1F")
    assert LN_NEGOTIATED.to_bytes() == bytes.fromhex("00501F")
    assert Conformance.from_bytes(bytes.fromhex("007E1F")) == LN_PROPOSED
    assert LN_PROPOSED.encode_ber() == bytes.fromhex("5F1F0400007E1F")


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x00\x00"])
def test_conformance_from_bytes_needs_three_bytes(data):
    with pytest.raises(DecodeError):
        Conformance.from_bytes(data)


def _camel_to_upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def test_conformance_matches_gurux_bit_for_bit():
    # gurux numbers the bits from the LSB, so its value is our bit string reversed;
    # compare by name (gurux spells two names slightly differently).
    from gurux_dlms.enums import Conformance as GuruxConformance

    spelling = {"UN_CONFIRMED_WRITE": "UNCONFIRMED_WRITE"}
    seen = set()
    for member in GuruxConformance:
        name = spelling.get(member.name, member.name).replace("ATTRIBUTE_0", "ATTRIBUTE0")
        lsb_position = member.value.bit_length() - 1
        assert Conformance[name] == 1 << (23 - lsb_position), name
        seen.add(name)
    assert seen == set(BIT_NUMBERS)


def test_conformance_block_decoded_by_gurux_translator_names_the_same_bits():
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator

    request = InitiateRequest(proposed_conformance=LN_PROPOSED, client_max_receive_pdu_size=1200)
    aarq = bytes.fromhex("601DA109060760857405080101BE10040E") + request.to_bytes()
    xml = GXDLMSTranslator().pduToXml(GXByteBuffer(aarq))
    names = {_camel_to_upper_snake(n) for n in re.findall(r'ConformanceBit Name="(\w+)"', xml)}
    assert names == {m.name for m in Conformance if m in LN_PROPOSED}


@given(st.integers(0, 0xFFFFFF))
def test_conformance_matches_dlms_cosem(value):
    from dlms_cosem.protocol.xdlms import Conformance as CosemConformance

    # dlms_cosem's Conformance bytes are the BIT STRING contents: unused-bits octet + 3.
    theirs = CosemConformance.from_bytes(b"\x00" + Conformance(value).to_bytes())
    # dlms_cosem only models 17 of the 24 bits; the rest must come back as 0.
    modelled = Conformance(0)
    for field in CosemConformance.conformance_bit_position:
        ours = Conformance[field.upper().replace("ATTRIBUTE_0", "ATTRIBUTE0").replace(
            "PRIORITY_MANAGEMENT", "PRIORITY_MGMT")]
        assert getattr(theirs, field) == bool(value & ours), field
        modelled |= ours
    assert theirs.to_bytes() == b"\x00" + (Conformance(value) & modelled).to_bytes()


# ------------------------------------------------------------------ published vectors


def test_initiate_request_vector():
    data = bytes.fromhex(REQUEST_HEX)
    request = InitiateRequest.from_bytes(data)
    assert request == InitiateRequest(
        dedicated_key=None,
        response_allowed=True,
        proposed_quality_of_service=None,
        proposed_dlms_version_number=6,
        proposed_conformance=LN_PROPOSED,
        client_max_receive_pdu_size=0x04B0,
    )
    assert request.to_bytes() == data


def test_initiate_response_vector():
    data = bytes.fromhex(RESPONSE_HEX)
    response = InitiateResponse.from_bytes(data)
    assert response == InitiateResponse(
        negotiated_quality_of_service=None,
        negotiated_dlms_version_number=6,
        negotiated_conformance=LN_NEGOTIATED,
        server_max_receive_pdu_size=500,
        vaa_name=0x0007,
    )
    assert response.to_bytes() == data


def test_initiate_request_with_dedicated_key_vector():
    data = bytes.fromhex(REQUEST_WITH_KEY_HEX)
    request = InitiateRequest.from_bytes(data)
    assert request.dedicated_key == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert request.proposed_conformance == LN_PROPOSED
    assert request.client_max_receive_pdu_size == 1200
    assert request.to_bytes() == data


def test_initiate_error_vector():
    # confirmedServiceError / initiateError / initiate: dlms-version-too-low
    data = bytes.fromhex("0E010601")
    assert InitiateError.from_bytes(data) == InitiateError(InitiateErrorReason.DLMS_VERSION_TOO_LOW)
    assert InitiateError(InitiateErrorReason.DLMS_VERSION_TOO_LOW).to_bytes() == data


def test_decode_initiate_dispatches_on_tag():
    assert isinstance(decode_initiate(bytes.fromhex(REQUEST_HEX)), InitiateRequest)
    assert isinstance(decode_initiate(bytes.fromhex(RESPONSE_HEX)), InitiateResponse)
    assert isinstance(decode_initiate(bytes.fromhex("0E010602")), InitiateError)
    with pytest.raises(TruncatedError):
        decode_initiate(b"")
    with pytest.raises(DecodeError):
        decode_initiate(b"\x21\x00")


# ------------------------------------------------------------------ optional / default fields


def test_response_allowed_false_and_quality_of_service_are_encoded():
    request = InitiateRequest(
        response_allowed=False,
        proposed_quality_of_service=-3,
        proposed_conformance=Conformance.GET,
        client_max_receive_pdu_size=0xFFFF,
    )
    data = request.to_bytes()
    assert data == bytes.fromhex("01 00 01 00 01 FD 06 5F1F0400000010 FFFF")
    assert InitiateRequest.from_bytes(data) == request


def test_explicit_response_allowed_true_decodes_and_reencodes_as_default():
    data = bytes.fromhex("01 00 01 01 00 06 5F1F0400000800 FFFF")
    request = InitiateRequest.from_bytes(data)
    assert request.response_allowed is True
    assert request.to_bytes() == bytes.fromhex("01 00 00 00 06 5F1F0400000800 FFFF")


def test_response_quality_of_service_present():
    response = InitiateResponse(negotiated_quality_of_service=5, negotiated_conformance=LN_NEGOTIATED,
                                server_max_receive_pdu_size=500)
    data = response.to_bytes()
    assert data == bytes.fromhex("08 01 05 06 5F1F040000501F 01F4 0007")
    assert InitiateResponse.from_bytes(data) == response


# ------------------------------------------------------------------ cross-checks with dlms_cosem


@given(
    key=st.none() | st.binary(min_size=16, max_size=16),
    conformance=st.integers(0, 0xFFFFFF),
    pdu_size=st.integers(0, 0xFFFF),
)
def test_initiate_request_accepted_by_dlms_cosem(key, conformance, pdu_size):
    from dlms_cosem.protocol import xdlms

    ours = InitiateRequest(dedicated_key=key, proposed_conformance=Conformance(conformance),
                           client_max_receive_pdu_size=pdu_size)
    theirs = xdlms.InitiateRequest.from_bytes(ours.to_bytes())
    assert theirs.dedicated_key == key
    assert theirs.client_max_receive_pdu_size == pdu_size
    assert theirs.proposed_dlms_version_number == 6
    assert theirs.response_allowed is True
    # and back: their encoding of the same content is what we decode
    back = InitiateRequest.from_bytes(theirs.to_bytes())
    assert back.dedicated_key == key
    assert back.client_max_receive_pdu_size == pdu_size
    assert b"\x00" + back.proposed_conformance.to_bytes() == theirs.proposed_conformance.to_bytes()


@given(conformance=st.integers(0, 0xFFFFFF), pdu_size=st.integers(0, 0xFFFF))
def test_initiate_response_from_dlms_cosem(conformance, pdu_size):
    from dlms_cosem.protocol import xdlms

    theirs = xdlms.InitiateResponse(
        negotiated_conformance=xdlms.Conformance.from_bytes(
            b"\x00" + Conformance(conformance).to_bytes()
        ),
        server_max_receive_pdu_size=pdu_size,
    )
    ours = InitiateResponse.from_bytes(theirs.to_bytes())
    assert ours.server_max_receive_pdu_size == pdu_size
    assert b"\x00" + ours.negotiated_conformance.to_bytes() == theirs.negotiated_conformance.to_bytes()
    assert ours.vaa_name == 0x0007
    again = xdlms.InitiateResponse.from_bytes(ours.to_bytes())
    assert again.server_max_receive_pdu_size == pdu_size


def test_initiate_error_decoded_by_dlms_cosem():
    from dlms_cosem import enumerations
    from dlms_cosem.protocol import xdlms

    for reason in InitiateErrorReason:
        theirs = xdlms.ConfirmedServiceError.from_bytes(InitiateError(reason).to_bytes())
        assert theirs.error == enumerations.InitiateError(int(reason))


# ------------------------------------------------------------------ round trips


requests = st.builds(
    InitiateRequest,
    dedicated_key=st.none() | st.binary(max_size=300),
    response_allowed=st.booleans(),
    proposed_quality_of_service=st.none() | st.integers(-128, 127),
    proposed_dlms_version_number=st.integers(0, 255),
    proposed_conformance=st.integers(0, 0xFFFFFF).map(Conformance),
    client_max_receive_pdu_size=st.integers(0, 0xFFFF),
)
responses = st.builds(
    InitiateResponse,
    negotiated_quality_of_service=st.none() | st.integers(-128, 127),
    negotiated_dlms_version_number=st.integers(0, 255),
    negotiated_conformance=st.integers(0, 0xFFFFFF).map(Conformance),
    server_max_receive_pdu_size=st.integers(0, 0xFFFF),
    vaa_name=st.integers(0, 0xFFFF),
)


@given(requests)
def test_initiate_request_round_trip(pdu):
    data = pdu.to_bytes()
    assert InitiateRequest.from_bytes(data) == pdu
    assert decode_initiate(data) == pdu


@given(responses)
def test_initiate_response_round_trip(response):
    data = response.to_bytes()
    assert InitiateResponse.from_bytes(data) == response
    assert decode_initiate(data) == response


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    "hex_data",
    [
        "",
        "01",
        "0100000006",
        "01000000065F1F0400007E1F04",  # pdu size cut short
        "0102000000065F1F0400007E1F04B0",  # presence flag 2
        "01000000065F1F0500007E1F04B0",  # conformance length 5
        "01000000065F1E0400007E1F04B0",  # wrong conformance tag
        "01000000065F1F0401007E1F04B0",  # unused bits 1
        "01000000065F1F0400007E1F04B000",  # trailing byte
        "0101FF00",  # dedicated key longer than the data
        "010185FFFFFFFFFF",  # dedicated key length of 5 octets
        "08000600",
        "0800065F1F040000501F01F400",
        "0800065F1F040000501F01F4000700",
        "09000000065F1F0400007E1F04B0",
    ],
)
def test_malformed_initiate_pdus_raise_decode_error(hex_data):
    with pytest.raises(DecodeError):
        decode_initiate(bytes.fromhex(hex_data))


@pytest.mark.parametrize("hex_data", ["0E", "0E01", "0E0106", "0E010605", "0E02060100", "0E010601FF"])
def test_malformed_initiate_errors_raise_decode_error(hex_data):
    with pytest.raises(DecodeError):
        InitiateError.from_bytes(bytes.fromhex(hex_data))


def test_wrong_tag_is_refused_by_each_decoder():
    with pytest.raises(DecodeError):
        InitiateRequest.from_bytes(bytes.fromhex(RESPONSE_HEX))
    with pytest.raises(DecodeError):
        InitiateResponse.from_bytes(bytes.fromhex(REQUEST_HEX))


@pytest.mark.parametrize(
    "pdu",
    [
        InitiateRequest(client_max_receive_pdu_size=0x10000),
        InitiateRequest(client_max_receive_pdu_size=-1),
        InitiateRequest(proposed_dlms_version_number=256),
        InitiateRequest(proposed_quality_of_service=128),
        InitiateRequest(proposed_conformance=1 << 24),
    ],
)
def test_out_of_range_request_fields_raise_encode_error(pdu):
    with pytest.raises(EncodeError):
        pdu.to_bytes()


@pytest.mark.parametrize(
    "response",
    [
        InitiateResponse(server_max_receive_pdu_size=0x10000),
        InitiateResponse(vaa_name=-1),
        InitiateResponse(negotiated_quality_of_service=-129),
    ],
)
def test_out_of_range_response_fields_raise_encode_error(response):
    with pytest.raises(EncodeError):
        response.to_bytes()


def test_non_bytes_dedicated_key_raises_encode_error():
    with pytest.raises(EncodeError):
        InitiateRequest(dedicated_key="0011").to_bytes()
