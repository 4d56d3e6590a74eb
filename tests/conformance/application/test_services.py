"""xDLMS services against the object model: access rules, error responses, block transfer.

Responses are decoded by our codec and, where it matters, by gurux's APDU translator as
a second, independent decoder.
"""
from __future__ import annotations

import datetime as dt

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSTranslator

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data, DataType
from smartmeter.dlms.apdu import access, action, get, set as set_
from smartmeter.dlms.apdu.common import (
    ActionResult, CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult, SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.errors import ExceptionResponse, ServiceError, StateError
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.initiate import Conformance
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import CLIENT_CONFORMANCE, AccessDenied, GetExchange
from smartmeter.hes.client import entry_selection, range_selection
from smartmeter.legal.interface import ReadLoadProfile

INVOKE = 0xC1


def obis(text: str) -> bytes:
    from smartmeter.cosem.obis import Obis
    return Obis.parse(text).to_bytes()


LDN = CosemAttributeDescriptor(1, obis("0-0:42.0.0.255"), 2)
A_PLUS = CosemAttributeDescriptor(3, obis("1-0:1.8.0.255"), 2)
LOAD_PROFILE = CosemAttributeDescriptor(7, obis("1-0:99.1.0.255"), 2)


def run(server_side, exchange):
    request = exchange.first()
    rounds = 0
    while request is not None:
        request = exchange.feed(server_side.handle(request))
        rounds += 1
    return exchange.result, rounds


def get_result(server_side, descriptor, selection=None):
    response = decode_xdlms(server_side.handle(get.GetRequestNormal(INVOKE, descriptor, selection).to_bytes()))
    assert isinstance(response, get.GetResponseNormal)
    return response.result


def translator_xml(apdu: bytes) -> str:
    return GXDLMSTranslator().pduToXml(GXByteBuffer(apdu))


@pytest.mark.parametrize("descriptor, expected", [
    (CosemAttributeDescriptor(1, obis("0-0:99.99.99.255"), 2), DataAccessResult.OBJECT_UNDEFINED),
    (CosemAttributeDescriptor(3, obis("0-0:42.0.0.255"), 2), DataAccessResult.OBJECT_CLASS_INCONSISTENT),
    (CosemAttributeDescriptor(1, obis("0-0:42.0.0.255"), 9), DataAccessResult.OBJECT_UNDEFINED),
    (CosemAttributeDescriptor(15, obis("0-0:40.0.0.255"), 7), DataAccessResult.READ_WRITE_DENIED),  # secret
])
def test_get_refusals_carry_the_right_data_access_result(associate, descriptor, expected):
    server_side, _ = associate()
    raw = server_side.handle(get.GetRequestNormal(INVOKE, descriptor, None).to_bytes())
    assert decode_xdlms(raw).result == expected
    assert "DataAccessError" in translator_xml(raw) or "DataAccessResult" in translator_xml(raw)


def test_get_echoes_the_invoke_id(associate):
    server_side, _ = associate()
    for invoke in (0x00, 0x41, 0xC7, 0x8F):
        response = decode_xdlms(server_side.handle(get.GetRequestNormal(invoke, LDN, None).to_bytes()))
        assert response.invoke_id_and_priority == invoke


def test_public_client_cannot_write_or_execute(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    clock_time = CosemAttributeDescriptor(8, obis("0-0:1.0.0.255"), 2)
    response = decode_xdlms(server_side.handle(
        set_.SetRequestNormal(INVOKE, clock_time, None, Data.octet_string(bytes(12))).to_bytes()))
    assert response.result == DataAccessResult.READ_WRITE_DENIED
    reset = CosemMethodDescriptor(3, obis("1-0:1.8.0.255"), 1)
    response = decode_xdlms(server_side.handle(action.ActionRequestNormal(INVOKE, reset, Data.integer(0)).to_bytes()))
    assert response.result == ActionResult.READ_WRITE_DENIED


def test_get_with_list_answers_each_item(associate, meter):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    items = [(LDN, None), (CosemAttributeDescriptor(1, obis("0-0:99.99.99.255"), 2), None), (A_PLUS, None)] * 5 + [(LDN, None)]
    raw = server_side.handle(get.GetRequestWithList(INVOKE, tuple(items)).to_bytes())
    response = decode_xdlms(raw)
    assert len(response.results) == 16  # companion standard §3.3.1: at least 16 references
    assert response.results[0] == Data.octet_string(meter.identity.logical_device_name)
    assert response.results[1] == DataAccessResult.OBJECT_UNDEFINED
    assert response.results[2].type == DataType.DOUBLE_LONG_UNSIGNED
    assert "GetResponse" in translator_xml(raw)


def test_attribute_zero_reads_every_readable_attribute(associate, meter):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    value = get_result(server_side, CosemAttributeDescriptor(3, obis("1-0:1.8.0.255"), 0))
    ln, reading, scaler_unit = value.value
    assert ln == Data.octet_string(obis("1-0:1.8.0.255"))
    assert scaler_unit == Data.structure([Data.integer(0), Data.enum(30)])


def test_long_get_goes_out_in_blocks_that_reassemble_exactly(associate, meter):
    server_side, client = associate(conformance=CLIENT_CONFORMANCE, max_receive_pdu_size=256)
    value, rounds = run(server_side, GetExchange(LOAD_PROFILE))
    rows = meter.legal.execute(ReadLoadProfile())
    assert len(value.value) == len(rows) == 192
    assert rounds > 10
    for row, entry in zip(rows, value.value):
        assert [v.value for v in entry.value[1:]] == [row.status, row.a_plus, row.a_minus, row.r_plus, row.r_minus]
        assert meter.clock.utc_from_cosem(axdr.decode_date_time(entry.value[0].value)) == row.capture_time


def test_every_block_respects_the_negotiated_pdu_size(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE, max_receive_pdu_size=128)
    raw = server_side.handle(get.GetRequestNormal(INVOKE, LOAD_PROFILE, None).to_bytes())
    block = 1
    while True:
        assert len(raw) <= 128
        response = decode_xdlms(raw)
        if response.last_block:
            break
        raw = server_side.handle(get.GetRequestNext(INVOKE, block).to_bytes())
        block += 1


def test_block_transfer_errors(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE, max_receive_pdu_size=256)
    response = decode_xdlms(server_side.handle(get.GetRequestNext(INVOKE, 1).to_bytes()))
    assert response.error == DataAccessResult.NO_LONG_GET_IN_PROGRESS
    first = decode_xdlms(server_side.handle(get.GetRequestNormal(INVOKE, LOAD_PROFILE, None).to_bytes()))
    assert first.block_number == 1 and not first.last_block
    response = decode_xdlms(server_side.handle(get.GetRequestNext(INVOKE, 7).to_bytes()))
    assert response.error == DataAccessResult.DATA_BLOCK_NUMBER_INVALID
    # the association stays usable
    assert get_result(server_side, LDN).type == DataType.OCTET_STRING


def test_general_block_transfer_when_only_gbt_is_negotiated(associate, meter):
    conformance = Conformance.GET | Conformance.GENERAL_BLOCK_TRANSFER | Conformance.SELECTIVE_ACCESS
    server_side, _ = associate(conformance=conformance, max_receive_pdu_size=200)
    raw = server_side.handle(get.GetRequestNormal(INVOKE, LOAD_PROFILE, None).to_bytes())
    assert raw[0] == 0xE0
    assert "GeneralBlockTransfer" in translator_xml(raw)
    value, _ = run(server_side, GetExchange(LOAD_PROFILE))
    assert len(value.value) == len(meter.legal.execute(ReadLoadProfile()))


def test_request_sent_in_general_block_transfer(associate, meter):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    request = get.GetRequestNormal(INVOKE, LDN, None).to_bytes()
    first = server_side.handle(GeneralBlockTransfer(False, False, 1, 1, 0, request[:5]).to_bytes())
    assert GeneralBlockTransfer.from_bytes(first).block_number_ack == 1
    answer = GeneralBlockTransfer.from_bytes(server_side.handle(GeneralBlockTransfer(True, False, 1, 2, 0, request[5:]).to_bytes()))
    assert answer.last_block
    assert decode_xdlms(answer.block_data).result == Data.octet_string(meter.identity.logical_device_name)


def test_access_service(associate, meter):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    specs = (access.AccessRequestSpec(access.AccessRequestKind.GET, LDN),
             access.AccessRequestSpec(access.AccessRequestKind.GET, CosemAttributeDescriptor(1, obis("0-0:99.99.99.255"), 2)),
             access.AccessRequestSpec(access.AccessRequestKind.SET, CosemAttributeDescriptor(8, obis("0-0:1.0.0.255"), 2)))
    request = access.AccessRequest(7, b"", specs, (Data.null(), Data.null(), Data.octet_string(bytes(12))))
    raw = server_side.handle(request.to_bytes())
    response = decode_xdlms(raw)
    assert response.long_invoke_id_and_priority == 7
    assert response.data[0] == Data.octet_string(meter.identity.logical_device_name)
    assert [r.result for r in response.results] == [
        DataAccessResult.SUCCESS, DataAccessResult.OBJECT_UNDEFINED, DataAccessResult.READ_WRITE_DENIED]
    assert response.date_time == b""
    # with a date-time in the request, the response carries one too (companion standard §3.3.1.1)
    response = decode_xdlms(server_side.handle(access.AccessRequest(8, bytes(12), specs[:1], (Data.null(),)).to_bytes()))
    assert len(response.date_time) == 12


def test_profile_by_range_and_entry(associate, meter):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    rows = meter.legal.execute(ReadLoadProfile())
    low, high = rows[10].capture_time, rows[20].capture_time
    utc = dt.timezone.utc
    selected = get_result(server_side, LOAD_PROFILE, range_selection(
        dt.datetime.fromtimestamp(low, utc), dt.datetime.fromtimestamp(high, utc)))
    assert len(selected.value) == 11
    # the same range in meter local time without deviation selects the same entries
    local = lambda t: dt.datetime.fromtimestamp(t, meter.clock.zone).replace(tzinfo=None)  # noqa: E731
    assert get_result(server_side, LOAD_PROFILE, range_selection(local(low), local(high))) == selected
    by_entry = get_result(server_side, LOAD_PROFILE, entry_selection(11, 21))
    assert by_entry == selected
    newest = get_result(server_side, LOAD_PROFILE, entry_selection(len(rows), 0))
    assert newest.value[0].value[2].value == rows[-1].a_plus


@pytest.mark.parametrize("parameters, expected", [
    # columns out of range
    (Data.structure([Data.double_long_unsigned(1), Data.double_long_unsigned(2), Data.long_unsigned(3), Data.long_unsigned(9)]),
     DataAccessResult.OTHER_REASON),
    # not an entry descriptor at all
    (Data.octet_string(b"x"), DataAccessResult.TYPE_UNMATCHED),
])
def test_bad_entry_descriptors(associate, parameters, expected):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    assert get_result(server_side, LOAD_PROFILE, SelectiveAccessDescriptor(2, parameters)) == expected


def test_selective_access_on_an_attribute_without_it(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    assert get_result(server_side, LDN, entry_selection(1, 1)) == DataAccessResult.SCOPE_OF_ACCESS_VIOLATED


def test_range_restricted_by_another_column_is_refused(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    selection = range_selection(None, None)
    restricting = Data.structure([Data.long_unsigned(3), Data.octet_string(obis("1-0:1.8.0.255")),
                                  Data.integer(2), Data.long_unsigned(0)])
    bad = SelectiveAccessDescriptor(1, Data.structure([restricting, *selection.access_parameters.value[1:]]))
    assert get_result(server_side, LOAD_PROFILE, bad) == DataAccessResult.OBJECT_UNAVAILABLE


@pytest.mark.parametrize("apdu, expected", [
    (b"\xc0\x01", (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)),  # truncated GET
    (b"\xc0\x09\xc1", (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)),  # unknown GET choice
    (b"\x42\x00", (StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED)),  # unknown tag
    (b"", (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)),
    (b"\xc0\x01\xc1" + b"\x00" * 1300, (StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)),
])
def test_malformed_requests_get_an_exception_response_and_the_association_survives(associate, apdu, expected):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    raw = server_side.handle(apdu)
    response = decode_xdlms(raw)
    assert isinstance(response, ExceptionResponse)
    assert (response.state_error, response.service_error) == expected
    if response.service_error != ServiceError.PDU_TOO_LONG:  # gurux 1.0.203's translator lacks this value
        assert "ExceptionResponse" in translator_xml(raw)
    assert get_result(server_side, LDN).type == DataType.OCTET_STRING


def test_services_outside_the_negotiated_conformance_are_refused(associate):
    server_side, _ = associate(conformance=Conformance.GET)
    response = decode_xdlms(server_side.handle(
        set_.SetRequestNormal(INVOKE, LDN, None, Data.octet_string(b"x")).to_bytes()))
    assert response == ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED, None)


def test_client_raises_access_denied_with_the_result(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    with pytest.raises(AccessDenied) as info:
        run(server_side, GetExchange(CosemAttributeDescriptor(15, obis("0-0:40.0.0.255"), 7)))
    assert info.value.result == DataAccessResult.READ_WRITE_DENIED


def test_set_in_datablocks_is_reassembled_then_checked(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    value = axdr.encode(Data.octet_string(bytes(300)))
    clock_time = CosemAttributeDescriptor(8, obis("0-0:1.0.0.255"), 2)
    first = decode_xdlms(server_side.handle(
        set_.SetRequestWithFirstDatablock(INVOKE, clock_time, None, False, 1, value[:150]).to_bytes()))
    assert first == set_.SetResponseDatablock(INVOKE, 1)
    last = decode_xdlms(server_side.handle(set_.SetRequestWithDatablock(INVOKE, True, 2, value[150:]).to_bytes()))
    assert last == set_.SetResponseLastDatablock(INVOKE, DataAccessResult.READ_WRITE_DENIED, 2)
    # out of order: the transfer is aborted; a stray block afterwards finds no transfer
    server_side.handle(set_.SetRequestWithFirstDatablock(INVOKE, clock_time, None, False, 1, value[:150]).to_bytes())
    aborted = decode_xdlms(server_side.handle(set_.SetRequestWithDatablock(INVOKE, False, 5, value[150:]).to_bytes()))
    assert aborted.result == DataAccessResult.LONG_SET_ABORTED
    stray = decode_xdlms(server_side.handle(set_.SetRequestWithDatablock(INVOKE, True, 6, b"").to_bytes()))
    assert stray.result == DataAccessResult.NO_LONG_SET_IN_PROGRESS


def test_action_in_pblocks(associate):
    server_side, _ = associate(conformance=CLIENT_CONFORMANCE)
    shift = CosemMethodDescriptor(8, obis("0-0:1.0.0.255"), 6)
    parameters = axdr.encode(Data.long(30))
    assert decode_xdlms(server_side.handle(
        action.ActionRequestWithFirstPblock(INVOKE, shift, False, 1, parameters[:1]).to_bytes())
    ) == action.ActionResponseNextPblock(INVOKE, 1)
    done = decode_xdlms(server_side.handle(action.ActionRequestWithPblock(INVOKE, True, 2, parameters[1:]).to_bytes()))
    assert done.result == ActionResult.READ_WRITE_DENIED  # reassembled, then refused: the public client has no methods
