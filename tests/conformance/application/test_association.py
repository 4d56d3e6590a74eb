"""Association establishment and release (ACSE), as the Green Book / IDIS P2 §8.2.3 require."""
from __future__ import annotations

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSTranslator

from smartmeter.dlms.apdu import acse
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.apdu.errors import ConfirmedServiceError, ExceptionResponse, ServiceError, StateError
from smartmeter.dlms.apdu.get import GetRequestNormal
from smartmeter.dlms.apdu.initiate import Conformance, InitiateRequest, InitiateResponse
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import AssociationRefused, ClientAssociation

LDN = CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)
Diag = acse.AcseServiceUserDiagnostic


def aarq(*, context=1, mechanism=None, version=6, conformance=Conformance.GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ,
         pdu=1224, dedicated_key=None, user_information=True) -> bytes:
    initiate = InitiateRequest(dedicated_key=dedicated_key, response_allowed=True, proposed_quality_of_service=None,
                               proposed_dlms_version_number=version, proposed_conformance=conformance,
                               client_max_receive_pdu_size=pdu)
    return acse.AARQ(application_context_name=context, calling_ap_title=None, calling_ae_qualifier=None,
                     called_ap_title=None, called_ae_qualifier=None, sender_acse_requirements=mechanism is not None,
                     mechanism_name=mechanism, calling_authentication_value=b"12345678" if mechanism else None,
                     user_information=initiate.to_bytes() if user_information else None).to_bytes()


def aare_of(meter, request: bytes, client_sap=16, interface="lan") -> acse.AARE:
    response = meter.server.association(client_sap, interface).handle(request)
    # a second, independent decoder must accept the AARE too
    assert "AssociationResponse" in GXDLMSTranslator().pduToXml(GXByteBuffer(response))
    return acse.decode_acse(response)


def test_public_client_is_accepted_with_the_intersection_of_conformance(meter):
    aare = aare_of(meter, aarq(conformance=Conformance.GET | Conformance.SET | Conformance.INFORMATION_REPORT))
    assert aare.result == acse.AssociationResult.ACCEPTED
    response = InitiateResponse.from_bytes(aare.user_information)
    assert response.negotiated_conformance == Conformance.GET | Conformance.SET  # information-report is not ours
    assert response.server_max_receive_pdu_size == 1224  # companion standard §3.3.1
    assert response.vaa_name == 0x0007


@pytest.mark.parametrize("client_sap", [0, 17, 99, 102, 103])
def test_unknown_client_sap_is_refused(meter, client_sap):
    aare = aare_of(meter, aarq(), client_sap=client_sap)
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
    assert aare.result_source == acse.ResultSource.ACSE_SERVICE_USER
    assert aare.diagnostic == Diag.NO_REASON_GIVEN


@pytest.mark.parametrize("client_sap", [1, 2, 4])
def test_secured_clients_in_an_unciphered_context_are_refused(meter, client_sap):
    """§3.3.3: the management, data readout and PLC clients need the ciphered context."""
    aare = aare_of(meter, aarq(), client_sap=client_sap)
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == Diag.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED


def test_wz_clients_are_refused_on_lan(meter):
    aare = aare_of(meter, aarq(), client_sap=5)  # installation: WZ only
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT


def test_public_client_with_authentication_is_refused(meter):
    aare = aare_of(meter, aarq(mechanism=1))
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == Diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED


def test_ciphered_context_is_refused_for_the_public_client(meter):
    aare = aare_of(meter, aarq(context=3))
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == Diag.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED


@pytest.mark.parametrize("options, initiate_error", [
    ({"version": 5}, 1),  # dlms-version-too-low
    ({"conformance": Conformance.INFORMATION_REPORT}, 2),  # incompatible-conformance
    ({"pdu": 12}, 3),  # pdu-size-too-short
])
def test_initiate_errors_come_back_as_confirmed_service_error(meter, options, initiate_error):
    aare = aare_of(meter, aarq(**options))
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT
    error = decode_xdlms(aare.user_information)
    assert isinstance(error, ConfirmedServiceError)
    assert (error.service, error.error_type, error.error_value) == (1, 6, initiate_error)  # initiateError / initiate


def test_dedicated_key_in_clear_is_refused(meter):
    aare = aare_of(meter, aarq(dedicated_key=bytes(16)))
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT


def test_missing_user_information_is_refused(meter):
    aare = aare_of(meter, aarq(user_information=False))
    assert aare.result == acse.AssociationResult.REJECTED_PERMANENT


def test_requests_before_association_get_an_exception_response(meter):
    server_side = meter.server.association(16, "lan")
    response = decode_xdlms(server_side.handle(GetRequestNormal(0xC1, LDN, None).to_bytes()))
    assert response == ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE, None)


def test_release_mirrors_user_information(meter, associate):
    server_side, client = associate()
    rlre = acse.decode_acse(server_side.handle(acse.RLRQ(reason=0, user_information=None).to_bytes()))
    assert isinstance(rlre, acse.RLRE) and rlre.user_information is None
    server_side, client = associate()
    initiate = InitiateRequest(dedicated_key=None, response_allowed=True, proposed_quality_of_service=None,
                               proposed_dlms_version_number=6, proposed_conformance=Conformance.GET,
                               client_max_receive_pdu_size=1224)
    rlrq = acse.RLRQ(reason=0, user_information=initiate.to_bytes())
    rlre = acse.decode_acse(server_side.handle(rlrq.to_bytes()))
    assert rlre.user_information is not None
    assert InitiateResponse.from_bytes(rlre.user_information).server_max_receive_pdu_size == 1224
    # released: the next GET is refused
    response = decode_xdlms(server_side.handle(GetRequestNormal(0xC1, LDN, None).to_bytes()))
    assert isinstance(response, ExceptionResponse)


def test_wz_allows_one_association_at_a_time_lan_several(meter, associate):
    first, _ = associate("wz")
    second = meter.server.association(16, "wz")
    aare = acse.decode_acse(second.handle(ClientAssociation().aarq()))
    assert aare.result == acse.AssociationResult.REJECTED_TRANSIENT
    lan = [associate("lan") for _ in range(3)]  # several on LAN at once
    assert all(s.associated for s, _ in lan)
    first.release()  # the optical link is closed
    aare = acse.decode_acse(second.handle(ClientAssociation().aarq()))
    assert aare.result == acse.AssociationResult.ACCEPTED
    second.release()


def test_refused_association_raises_a_clear_error_in_our_client(meter):
    client = ClientAssociation(mechanism=1, authentication_value=b"secret12")
    with pytest.raises(AssociationRefused, match="refused"):
        client.on_aare(meter.server.association(16, "lan").handle(client.aarq()))
