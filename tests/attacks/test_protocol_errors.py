"""Protocol correctness where a peer leaves the common path: error answers to protected
requests, requests longer than the PDU in general-block-transfer, GBT inside GBT, a release
without an association. Every case gets the DLMS answer the decisions give, and nothing
reaches the server's internal-error path.

Independent decoders check the answers: gurux's APDU translator and dlms-cosem's
general-glo-ciphering (decrypted with the client's keys).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

import pytest
from dlms_cosem.protocol.xdlms import ExceptionResponse as PeerExceptionResponse
from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher
from gurux_dlms import GXByteBuffer, GXDLMSTranslator

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import acse, ciphered, get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.errors import ExceptionResponse, ServiceError, StateError
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.initiate import Conformance
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import CLIENT_CONFORMANCE, ClientAssociation, CounterStore
from smartmeter.hes.client import range_selection
from smartmeter.hes.credentials import load_credentials
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

FIXED_NOW = 1773144000.0  # 2026-03-10 12:00 UTC
LDN = CosemAttributeDescriptor(1, Obis.parse("0-0:42.0.0.255").to_bytes(), 2)
CLOCK = CosemAttributeDescriptor(8, Obis.parse("0-0:1.0.0.255").to_bytes(), 2)
PROFILE = CosemAttributeDescriptor(7, Obis.parse("1-0:99.1.0.255").to_bytes(), 2)
PDU = 1224


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=2),
              clock=MeterClock(source=lambda: FIXED_NOW))
    yield m
    m.close()


@pytest.fixture(autouse=True)
def no_internal_errors(caplog):
    """The server's internal-error and protection-failure paths log at WARNING or above."""
    with caplog.at_level(logging.INFO, logger="smartmeter"):
        yield
    logged = caplog.get_records("setup") + caplog.get_records("call")
    assert not [r for r in logged if r.levelno >= logging.WARNING], logged[:3]


def translated(apdu: bytes) -> str:
    return GXDLMSTranslator().pduToXml(GXByteBuffer(apdu))


def exception_of(apdu: bytes) -> tuple[StateError, ServiceError]:
    response = decode_xdlms(apdu)
    assert isinstance(response, ExceptionResponse), response
    return response.state_error, response.service_error


def public(meter, conformance=CLIENT_CONFORMANCE):
    server_side = meter.server.association(16, "lan")
    client = ClientAssociation(conformance=conformance)
    client.on_aare(server_side.handle(client.aarq()))
    assert server_side.associated
    return server_side


class Secured:
    """The management client (HLS 7, suite 1, authenticated and encrypted both ways)."""

    def __init__(self, meter, counters: dict, conformance=CLIENT_CONFORMANCE) -> None:
        credentials = load_credentials(Path(meter.config.data_dir) / "credentials" / "management.json")
        self.security = dataclasses.replace(credentials.security,
                                            invocation_counter=counters.setdefault("management", CounterStore()))
        self.server = meter.server.association(1, "lan")
        self.client = ClientAssociation(security=self.security, conformance=conformance)
        self.client.on_aare(self.server.handle(self.client.aarq()))
        exchange = self.client.hls_exchange()
        request = exchange.first()
        while request is not None:
            request = exchange.feed(self.server.handle(request))
        assert self.server.authenticated

    def glo(self, plain: bytes) -> bytes:
        return self.client.protect_request(plain)

    def general_glo(self, plain: bytes) -> bytes:
        return ciphered.GeneralGloCiphering.protect(
            0x30 | int(self.security.suite), self.security.ek, self.security.ak, self.security.client_system_title,
            self.client._counters.reserve(), plain).to_bytes()


@pytest.fixture(scope="module")
def counters():
    return {}


def blocks(apdu: bytes, size: int) -> list[bytes]:
    """`apdu` as a client sends it in general-block-transfer, blocks numbered from 1."""
    parts = [apdu[i:i + size] for i in range(0, len(apdu), size)]
    return [GeneralBlockTransfer(i == len(parts) - 1, False, 1, i + 1, 0, part).to_bytes()
            for i, part in enumerate(parts)]


def send_in_gbt(server_side, apdu: bytes, size: int = 1000) -> bytes:
    """Send `apdu` in GBT, acknowledge the answer's blocks, return the reassembled answer."""
    answer = None
    for block in blocks(apdu, size):
        answer = server_side.handle(block)
        assert answer is not None
        response = GeneralBlockTransfer.from_bytes(answer)
        if not response.last_block and not response.block_data:
            continue  # the meter acknowledged a request block
    out = bytearray()
    while True:
        response = GeneralBlockTransfer.from_bytes(answer)
        assert len(answer) <= PDU
        out += response.block_data
        if response.last_block:
            return bytes(out)
        answer = server_side.handle(GeneralBlockTransfer(False, False, 1, 0, response.block_number, b"").to_bytes())


# -- protected requests answered with an exception-response ---------------------------------------

def test_glo_request_for_a_service_not_negotiated_gets_the_exception_in_clear(meter, counters):
    """A glo-set-request from a client that did not negotiate SET: exception-response
    service-not-allowed / service-not-supported, as it is (it has no glo- form), no internal error."""
    session = Secured(meter, counters, conformance=CLIENT_CONFORMANCE & ~Conformance.SET)
    request = session.glo(set_.SetRequestNormal(0xC1, CLOCK, None, Data.octet_string(bytes(12))).to_bytes())
    assert request[0] == ciphered.GloSetRequest.TAG
    answer = session.server.handle(request)
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)
    xml = translated(answer)
    assert "ExceptionResponse" in xml and "ServiceNotSupported" in xml, xml
    # the association goes on: the next protected request is served and protected
    plain = session.client.unprotect_response(session.server.handle(session.glo(
        get.GetRequestNormal(0xC1, LDN, None).to_bytes())))
    assert decode_xdlms(plain).result == Data.octet_string(meter.identity.logical_device_name)


def test_glo_get_with_too_long_a_list_gets_the_exception_in_clear(meter, counters):
    session = Secured(meter, counters)
    request = session.glo(get.GetRequestWithList(0xC1, tuple((LDN, None) for _ in range(33))).to_bytes())
    answer = session.server.handle(request)
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)
    assert "ExceptionResponse" in translated(answer)


def test_general_glo_request_gets_its_exception_protected(meter, counters):
    """general-glo-ciphering carries any APDU, so there the exception-response goes back
    protected like every answer; dlms-cosem decrypts it with the client's keys."""
    session = Secured(meter, counters, conformance=CLIENT_CONFORMANCE & ~Conformance.SET)
    request = session.general_glo(set_.SetRequestNormal(0xC1, CLOCK, None, Data.octet_string(bytes(12))).to_bytes())
    answer = session.server.handle(request)
    peer = GeneralGlobalCipher.from_bytes(answer)
    assert peer.system_title == meter.identity.system_title
    assert peer.security_control.encrypted and peer.security_control.authenticated
    exception = PeerExceptionResponse.from_bytes(peer.to_plain_apdu(session.security.ek, session.security.ak))
    assert int(exception.state_error) == StateError.SERVICE_NOT_ALLOWED
    assert int(exception.service_error) == ServiceError.SERVICE_NOT_SUPPORTED


# -- general-block-transfer ----------------------------------------------------------------------

def _days(n: int) -> list[tuple[dt.datetime, dt.datetime]]:
    """n one-hour windows on the back-filled day before the fixed instant."""
    start = dt.datetime(2026, 3, 9, 0, 0, tzinfo=dt.timezone.utc)
    return [(start + dt.timedelta(minutes=30 * i), start + dt.timedelta(minutes=30 * i + 60)) for i in range(n)]


def _expected_rows(meter, low: dt.datetime, high: dt.datetime) -> int:
    return len(meter.legal.execute(legal.ReadLoadProfile(int(low.timestamp()), int(high.timestamp()))))


def test_get_with_list_longer_than_the_pdu_in_gbt_is_answered(meter):
    """32 range-selected profile reads make a request longer than 1224 bytes; in GBT it is
    reassembled and answered (in GBT), each item with exactly the rows of its window."""
    server_side = public(meter)
    windows = _days(32)
    request = get.GetRequestWithList(0xC1, tuple((PROFILE, range_selection(lo, hi)) for lo, hi in windows)).to_bytes()
    assert len(request) > PDU
    assert exception_of(server_side.handle(request)) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
    response = decode_xdlms(send_in_gbt(server_side, request))
    assert isinstance(response, get.GetResponseWithList) and len(response.results) == 32
    for (lo, hi), result in zip(windows, response.results):
        assert isinstance(result, Data), result
        assert len(axdr.rows_of(result)) == _expected_rows(meter, lo, hi) == 60 // 15 + 1  # both ends inclusive


def test_set_longer_than_the_pdu_in_gbt_gets_its_set_response(meter):
    """A SET with a 3000-byte value in GBT reaches the service: the public client may not
    write the logical device name, so read-write-denied (not pdu-too-long)."""
    server_side = public(meter)
    request = set_.SetRequestNormal(0xC1, LDN, None, Data.octet_string(bytes(3000))).to_bytes()
    response = decode_xdlms(send_in_gbt(server_side, request))
    assert isinstance(response, set_.SetResponseNormal)
    assert response.result == DataAccessResult.READ_WRITE_DENIED


def test_protected_request_longer_than_the_pdu_in_gbt_is_answered_protected(meter, counters):
    """GBT carries the protected APDU (the blocks themselves are not protected): a glo-get-
    request longer than the PDU is reassembled, deciphered, served and answered glo- in GBT."""
    session = Secured(meter, counters)
    windows = _days(32)
    plain = get.GetRequestWithList(0xC1, tuple((PROFILE, range_selection(lo, hi)) for lo, hi in windows)).to_bytes()
    request = session.glo(plain)
    assert request[0] == ciphered.GloGetRequest.TAG and len(request) > PDU
    answer = send_in_gbt(session.server, request)
    assert answer[0] == ciphered.GloGetResponse.TAG
    response = decode_xdlms(session.client.unprotect_response(answer))
    assert isinstance(response, get.GetResponseWithList)
    assert [len(axdr.rows_of(r)) for r in response.results] == [_expected_rows(meter, lo, hi) for lo, hi in windows]


def test_gbt_inside_gbt_is_answered_with_an_exception(meter):
    server_side = public(meter)
    inner = GeneralBlockTransfer(True, False, 1, 1, 0, get.GetRequestNormal(0xC1, LDN, None).to_bytes()).to_bytes()
    answer = send_in_gbt(server_side, inner)
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)
    assert "ExceptionResponse" in translated(answer)
    # the association still serves
    assert decode_xdlms(server_side.handle(get.GetRequestNormal(0xC1, LDN, None).to_bytes())).result.value


def test_gbt_request_beyond_the_reassembly_bound_is_refused(meter):
    from smartmeter.dlms.server import MAX_REASSEMBLED
    server_side = public(meter)
    request = set_.SetRequestNormal(0xC1, LDN, None, Data.octet_string(bytes(MAX_REASSEMBLED))).to_bytes()
    answers = [server_side.handle(block) for block in blocks(request, 1000)]
    refusals = [a for a in answers if a[:1] == b"\xd8"]
    assert len(refusals) == 1 and answers[-1] is not None
    assert exception_of(refusals[0]) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
    assert server_side.held_bytes() == 0


def test_gbt_without_gbt_negotiated_is_refused(meter):
    server_side = public(meter, CLIENT_CONFORMANCE & ~Conformance.GENERAL_BLOCK_TRANSFER)
    answer = server_side.handle(blocks(get.GetRequestNormal(0xC1, LDN, None).to_bytes(), 1000)[0])
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.SERVICE_NOT_SUPPORTED)


# -- release ------------------------------------------------------------------------------------

def test_release_without_an_association_is_refused_like_any_service(meter):
    server_side = meter.server.association(16, "lan")
    answer = server_side.handle(acse.RLRQ(reason=0, user_information=None).to_bytes())
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
    assert "ExceptionResponse" in translated(answer)
    # and an association opened afterwards releases normally
    client = ClientAssociation()
    client.on_aare(server_side.handle(client.aarq()))
    assert acse.decode_acse(server_side.handle(acse.RLRQ(reason=0, user_information=None).to_bytes())).reason == 0
    assert exception_of(server_side.handle(acse.RLRQ(reason=0, user_information=None).to_bytes()))


# -- logging ------------------------------------------------------------------------------------

def test_a_flood_of_refused_requests_logs_one_line_per_condition(meter, caplog):
    """200 AARQs from an unknown client SAP and 200 malformed APDUs: each answered, and the
    server logs each condition once, not 200 times (the rest is counted in the next line)."""
    with caplog.at_level(logging.DEBUG, logger="smartmeter.dlms"):
        for _ in range(200):
            stranger = meter.server.association(99, "lan")
            aare = acse.decode_acse(stranger.handle(ClientAssociation().aarq()))
            assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
        server_side = public(meter)
        for _ in range(200):
            assert exception_of(server_side.handle(b"\xc0\x01")) == (StateError.SERVICE_NOT_ALLOWED,
                                                                     ServiceError.OTHER_REASON)
    server_lines = [r for r in caplog.records if r.name == "smartmeter.dlms.server" and r.levelno >= logging.INFO]
    assert len(server_lines) <= 3, [r.getMessage() for r in server_lines]


def test_release_of_the_pre_established_association_is_declined(meter):
    """The FW update client's association always exists (§3.6.4): an RLRQ gets RLRE
    not-finished, and the association still serves its ACTIONs."""
    fw = next(c for c in meter.server.directory.model.clients.values() if c.pre_established)
    server_side = meter.server.association(fw.sap, fw.interfaces[0])
    rlre = acse.decode_acse(server_side.handle(acse.RLRQ(reason=0, user_information=None).to_bytes()))
    assert rlre.reason == acse.ReleaseResponseReason.NOT_FINISHED
    assert server_side.associated


@pytest.mark.parametrize("damage", ["truncated", "trailing byte", "length beyond the APDU"])
def test_protected_apdu_that_cannot_be_decoded_is_not_deciphered(meter, counters, damage):
    """A glo-get-request cut short or malformed around its ciphertext cannot be deciphered:
    exception-response service-not-allowed / operation-not-possible (§3.5.3), like a wrong tag."""
    session = Secured(meter, counters)
    good = session.glo(get.GetRequestNormal(0xC1, LDN, None).to_bytes())
    bad = {"truncated": good[:-3], "trailing byte": good + b"\x00",
           "length beyond the APDU": good[:1] + bytes([good[1] + 5]) + good[2:]}[damage]
    answer = session.server.handle(bad)
    assert exception_of(answer) == (StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE)
    assert "OperationNotPossible" in translated(answer)
