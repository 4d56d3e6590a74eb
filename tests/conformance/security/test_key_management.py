"""Keys and general ciphering (companion standard §3.3.1, §3.5.3): key_transfer and
key_agreement change a client's keys after a SUCCESS protected with the old ones; wrong
type / wrong content get their results; general-ciphering with identified and wrapped keys
works, with agreed keys it is refused cleanly."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from test_access_matrix import MODEL, Session, counters, meter  # noqa: F401  (fixtures)

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu import ciphered, get
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor
from smartmeter.dlms.apdu.errors import ExceptionResponse, ServiceError
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ActionExchange, AssociationRefused, ClientAssociation, CounterStore
from smartmeter.dlms.security.keys import (
    KeyId, KeyTransfer, client_key_agreement_result, decode_key_agreement, encode_key_agreement, ephemeral_offer,
    wrap_key,
)
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.credentials import load_credentials

LDN = CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)
OTHER_REASON, TYPE_UNMATCHED = 250, 12


def credentials(meter, client):
    return load_credentials(Path(meter.config.data_dir) / "credentials" / f"{client}.json")


def setup_of(sap: int) -> bytes:
    return bytes([0, 0, 43, 0, sap, 255])


def test_key_transfer_switches_after_the_answer_and_refuses_bad_input(meter, counters):  # noqa: F811
    management = Session(meter, MODEL.clients["management"], counters["management"])
    master = credentials(meter, "management").master_key
    method = CosemMethodDescriptor(64, setup_of(2), 2)  # data readout's security setup, key_transfer
    new_ek, new_ak = bytes(range(16)), bytes(range(16, 32))
    transfer = Data.array([KeyTransfer.wrap(master, KeyId.GLOBAL_UNICAST_ENCRYPTION, new_ek).to_data(),
                           KeyTransfer.wrap(master, KeyId.AUTHENTICATION, new_ak).to_data()])
    assert management.outcome(lambda: ActionExchange(method, Data.octet_string(b"x")))[0] == TYPE_UNMATCHED
    wrong_kek = Data.array([KeyTransfer.wrap(bytes(16), KeyId.GLOBAL_UNICAST_ENCRYPTION, new_ek).to_data()])
    assert management.outcome(lambda: ActionExchange(method, wrong_kek))[0] == OTHER_REASON
    assert management.outcome(lambda: ActionExchange(method, transfer))[0] == 0
    readout = credentials(meter, "data_readout")
    with pytest.raises(AssociationRefused):  # the old keys no longer open an association
        Session(meter, MODEL.clients["data_readout"], counters["data_readout"])
    fresh = dataclasses.replace(readout.security, ek=new_ek, ak=new_ak, invocation_counter=CounterStore())
    s = Session.__new__(Session)
    s.meter, s.client, s.problems, s.security = meter, MODEL.clients["data_readout"], [], fresh
    s.policy = int(fresh.policy)
    s.server = meter.server.association(2, "lan")
    s.association = ClientAssociation(security=fresh)
    s.association.on_aare(s.server.handle(s.association.aarq()))
    s._drive(s.association.hls_exchange())
    assert s.get(1, LDN.instance_id, 2)[0] == 0  # new keys, counters restarted at 0 (§3.5.4)
    s.close()
    management.close()


def test_key_agreement_gives_both_sides_the_same_new_key(meter, counters):  # noqa: F811
    management = Session(meter, MODEL.clients["management"], counters["management"])
    creds = credentials(meter, "management")
    signing_key = creds.security.client_signing_key
    server_public = creds.security.server_signing_key
    own_ephemeral, offer = ephemeral_offer(1, KeyId.AUTHENTICATION, signing_key)
    method = CosemMethodDescriptor(64, bytes([0, 0, 43, 0, 0, 255]), 3)  # current security setup
    _, forged_offer = ephemeral_offer(1, KeyId.AUTHENTICATION, own_ephemeral)  # signed with a non-certified key
    refused, _ = management.outcome(lambda: ActionExchange(method, encode_key_agreement([forged_offer])))
    assert refused == OTHER_REASON
    result, answer = management.outcome(lambda: ActionExchange(method, encode_key_agreement([offer])))
    assert result == 0
    (response,) = decode_key_agreement(answer)
    new_ak = client_key_agreement_result(1, own_ephemeral, response, server_public,
                                         creds.security.client_system_title, meter.identity.system_title,
                                         expected_key_id=KeyId.AUTHENTICATION)
    assert meter.security.manager.context("management").ak == new_ak  # the SUCCESS went out with the old AK


def test_general_ciphering_with_identified_and_wrapped_keys(meter, counters):  # noqa: F811
    s = Session(meter, MODEL.clients["maintenance"], counters["maintenance"])
    sec = s.security
    plain = get.GetRequestNormal(0xC1, LDN, None).to_bytes()
    sc = SecurityControl(sec.suite, authentication=True, encryption=True)
    master = credentials(meter, "maintenance").master_key
    message_key = bytes(range(100, 116))
    for key_info, key in ((ciphered.IdentifiedKey(ciphered.IdentifiedKeyId.GLOBAL_UNICAST_ENCRYPTION_KEY), sec.ek),
                          (ciphered.WrappedKey(wrap_key(master, message_key)), message_key)):
        request = ciphered.GeneralCiphering.protect(sc, key, sec.ak, s.association.counters.reserve(), plain,
                                                    b"\x01\x02\x03\x04", sec.client_system_title,
                                                    meter.identity.system_title, key_info, date_time=bytes(12))
        answer = ciphered.decode_ciphered(s.server.handle(request.to_bytes()))
        assert isinstance(answer, ciphered.GeneralCiphering)
        assert answer.transaction_id == b"\x01\x02\x03\x04" and len(answer.date_time) == 12
        response = decode_xdlms(answer.unprotect(key, sec.ak))
        assert response.result == Data.octet_string(meter.identity.logical_device_name)
    agreed = ciphered.GeneralCiphering.protect(sc, sec.ek, sec.ak, s.association.counters.reserve(), plain, b"\x05",
                                               sec.client_system_title, meter.identity.system_title,
                                               ciphered.AgreedKey(b"\x01", b"\x00" * 64))
    refusal = decode_xdlms(s.server.handle(agreed.to_bytes()))
    assert isinstance(refusal, ExceptionResponse) and refusal.service_error == ServiceError.OPERATION_NOT_POSSIBLE
    assert s.get(1, LDN.instance_id, 2)[0] == 0  # and the association goes on
    s.close()
