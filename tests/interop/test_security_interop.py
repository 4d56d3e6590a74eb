"""Security against independent clients over real sockets (issue: suites 0/1, HLS 5/7).

gurux-dlms associates as the management client with HLS 5 / suite 0 (idis profile) and with
HLS 7 / suite 1 (ksmw profile), dlms-cosem with HLS 5 / suite 0, and each reads +A. Captured
protected requests are replayed on the same association, on a new one and after a restart
(clean, and kill -9); dlms-cosem, a strict client, checks the meter's counters from a fresh start;
tampered ciphertexts are sent; the meter refuses each with the standard answer and stays usable.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
import json
import logging

import pytest
import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.io import BlockingTcpIO, TcpTransport
from dlms_cosem.security import HighLevelSecurityGmacAuthentication
from gurux_dlms.objects import GXDLMSRegister

from gurux_secure_peer import GuruxSecureClient
from meterproc import start_meter
from smartmeter.dlms.apdu.ciphered import decode_ciphered
from smartmeter.dlms.apdu.errors import ExceptionResponse, ServiceError, StateError
from smartmeter.dlms.apdu.xdlms import decode_xdlms

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

@pytest.fixture
def ksmw_meter(tmp_path):
    """A fresh meter for each test: no test depends on the counters another one left behind."""
    m = start_meter(tmp_path / "ksmw")
    yield m
    m.stop()


@pytest.fixture
def idis_meter(tmp_path):
    m = start_meter(tmp_path / "idis", "--profile", "idis")
    yield m
    m.stop()


@pytest.fixture
def counters():
    """The first invocation counter of each client a test makes: from 1 on a fresh meter, then
    well above whatever the previous client of the same test used (an association takes a few)."""
    return itertools.count(1, 1000)


def read_a_plus(client: GuruxSecureClient) -> int:
    register = GXDLMSRegister("1.0.1.8.0.255")
    return client.read(register, 2)


def test_gurux_hls5_suite0_management_reads_energy(idis_meter, counters):
    client = GuruxSecureClient(idis_meter.wrapper_port, idis_meter.data_dir / "credentials" / "management.json",
                               next(counters))
    client.associate()
    before = idis_meter.energy_wh("a_plus")
    value = read_a_plus(client)
    assert before - 2 <= value <= idis_meter.energy_wh("a_plus") + 2
    client.close()


def test_gurux_hls7_suite1_management_reads_energy(ksmw_meter, counters):
    meter = ksmw_meter
    client = GuruxSecureClient(meter.wrapper_port, meter.data_dir / "credentials" / "management.json", next(counters))
    client.associate()
    before = meter.energy_wh("a_plus")
    assert before - 2 <= read_a_plus(client) <= meter.energy_wh("a_plus") + 2
    client.close()


def test_dlms_cosem_hls5_suite0_management_reads_energy(idis_meter):
    """dlms-cosem is a strict client: it refuses any meter counter not above the last one it saw,
    starting from 0. On a FRESH meter (nothing sent before) the first protected APDU, the AARE's
    glo-initiate-response, must therefore carry 1 or more."""
    creds = json.loads((idis_meter.data_dir / "credentials" / "management.json").read_text())
    transport = TcpTransport(client_logical_address=1, server_logical_address=1,
                             io=BlockingTcpIO("127.0.0.1", idis_meter.wrapper_port))
    client = DlmsClient(transport=transport, authentication=HighLevelSecurityGmacAuthentication(challenge_length=16),
                        encryption_key=bytes.fromhex(creds["ek"]), authentication_key=bytes.fromhex(creds["ak"]),
                        client_system_title=bytes.fromhex(creds["client_system_title"]), security_suite=0,
                        client_initial_invocation_counter=1)
    connection = client.dlms_connection
    checked = []  # every meter counter dlms-cosem checked, in order
    strict_check = connection.update_meter_invocation_counter

    def recording(counter: int) -> None:
        checked.append(counter)
        strict_check(counter)

    connection.update_meter_invocation_counter = recording
    before = idis_meter.energy_wh("a_plus")
    with client.session() as session:
        raw = session.get(cosem.CosemAttribute(interface=enumerations.CosemInterface.REGISTER,
                                               instance=cosem.Obis(1, 0, 1, 8, 0, 255), attribute=2))
    assert raw[0] == 0x06
    assert before - 2 <= int.from_bytes(raw[1:5], "big") <= idis_meter.energy_wh("a_plus") + 2
    assert checked and checked[0] >= 1  # the AARE of a fresh meter
    assert checked == sorted(set(checked))  # and each later one above it


@pytest.mark.welmec("P4", "U4")
def test_hls7_with_a_foreign_signing_key_is_refused(ksmw_meter, counters):
    """HLS 7 signed with a key the meter has not certified: the AARE asks for authentication, pass 3 is refused (action result other-reason), the association is not established and nothing can be read."""
    meter = ksmw_meter
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from dlms_cosem.protocol.acse import ApplicationAssociationResponse
    from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse

    foreign = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    client = GuruxSecureClient(meter.wrapper_port, meter.data_dir / "credentials" / "management.json",
                               next(counters), signing_key_pem=foreign)
    try:
        reply = client.transfer(client.client.aarqRequest())
        aare = ApplicationAssociationResponse.from_bytes(bytes(reply.data.array()))  # parsed by dlms-cosem
        assert aare.result == enumerations.AssociationResult.ACCEPTED
        assert aare.result_source_diagnostics == enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED
        client.client.parseAareResponse(reply.data)
        pass3 = client.transfer(client.client.getApplicationAssociationRequest())
        assert pass3.error == 250  # action result other-reason: f(StoC) does not verify, no f(CtoS)
        with pytest.raises(GXDLMSExceptionResponse, match="Operation not possible"):
            read_a_plus(client)  # nothing is served without a completed authentication
    finally:
        client.sock.close()


def _captured_request(port, credentials, counters):
    """Associate, then build one protected GET with gurux and send it once; return it and the client."""
    client = GuruxSecureClient(port, credentials, next(counters))
    client.associate()
    frame = bytes(client.client.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])
    first = client.raw(frame)
    assert first[0] in (0xCC, 0xDB)  # glo-get-response, or general-glo-ciphering as gurux asked
    return client, frame


def _is_exception(apdu: bytes, service_error: ServiceError) -> bool:
    response = decode_xdlms(apdu)
    return (isinstance(response, ExceptionResponse) and response.state_error == StateError.SERVICE_NOT_ALLOWED
            and response.service_error == service_error)


@pytest.mark.parametrize("restart", ["clean stop", "power failure"])
def test_replay_on_the_same_and_a_new_association_and_after_restart(idis_meter, counters, restart):
    credentials = idis_meter.data_dir / "credentials" / "management.json"
    client, frame = _captured_request(idis_meter.wrapper_port, credentials, counters)
    assert _is_exception(client.raw(frame), ServiceError.INVOCATION_COUNTER_ERROR)  # same association
    assert read_a_plus(client) > 0  # and the association is still usable
    client.close()
    other = GuruxSecureClient(idis_meter.wrapper_port, credentials, next(counters))
    other.associate()
    assert _is_exception(other.raw(frame), ServiceError.INVOCATION_COUNTER_ERROR)  # a new association
    other.close()
    if restart == "clean stop":
        idis_meter.stop()
    else:  # kill -9: the meter's counters are what its store holds, nothing more
        idis_meter.power_failure()
    restarted = start_meter(idis_meter.data_dir, "--profile", "idis")
    try:
        again = GuruxSecureClient(restarted.wrapper_port, credentials, next(counters))
        again.associate()
        assert _is_exception(again.raw(frame), ServiceError.INVOCATION_COUNTER_ERROR)  # after a restart
        assert read_a_plus(again) > 0
        again.close()
    finally:
        idis_meter.process, idis_meter.wrapper_port = restarted.process, restarted.wrapper_port
        idis_meter.hdlc_port = restarted.hdlc_port


@pytest.mark.parametrize("damage", ["flip-tag", "flip-ciphertext", "truncate", "wrong-counter-unauthenticated"])
def test_tampered_requests_get_the_standard_error_and_the_meter_stays_usable(idis_meter, damage, counters):
    credentials = idis_meter.data_dir / "credentials" / "management.json"
    client = GuruxSecureClient(idis_meter.wrapper_port, credentials, next(counters))
    client.associate()
    frame = bytes(client.client.read(GXDLMSRegister("1.0.1.8.0.255"), 2)[0])
    protected = decode_ciphered(frame[8:])  # gurux's request, opened with our independent codec
    if damage == "flip-tag":
        protected = replace(protected, ciphertext=protected.ciphertext[:-1] + bytes([protected.ciphertext[-1] ^ 1]))
    elif damage == "flip-ciphertext":
        protected = replace(protected, ciphertext=bytes([protected.ciphertext[0] ^ 0x80]) + protected.ciphertext[1:])
    elif damage == "truncate":
        protected = replace(protected, ciphertext=protected.ciphertext[:-5])
    else:  # the counter raised by one: the IV changes, so the tag no longer verifies
        protected = replace(protected, invocation_counter=protected.invocation_counter + 1)
    apdu = protected.to_bytes()
    frame = frame[:6] + len(apdu).to_bytes(2, "big") + apdu
    answer = client.raw(bytes(frame))
    assert _is_exception(answer, ServiceError.OPERATION_NOT_POSSIBLE)  # §3.5.3: cannot decrypt
    assert read_a_plus(client) > 0  # the same association answers the next genuine request
    client.close()
