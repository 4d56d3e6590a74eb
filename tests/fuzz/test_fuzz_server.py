"""The server application layer under random and mutated APDUs: it answers every one with a
DLMS response, never raises, never reaches its internal-error path, and the association stays
usable; plain requests on a public association and, deciphered, inside valid protection on a
secured one."""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import pytest

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu import acse, action, ciphered, get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import CLIENT_CONFORMANCE, ClientAssociation, CounterStore
from smartmeter.errors import DecodeError
from smartmeter.hes.client import entry_selection, range_selection
from smartmeter.hes.credentials import load_credentials
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

LDN = CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)
PROFILE = CosemAttributeDescriptor(7, bytes([1, 0, 99, 1, 0, 255]), 2)

SEEDS = [
    get.GetRequestNormal(0xC1, LDN, None).to_bytes(),
    get.GetRequestNormal(0xC1, PROFILE, entry_selection(1, 3)).to_bytes(),
    get.GetRequestNormal(0xC1, PROFILE, range_selection(None, None)).to_bytes(),
    get.GetRequestNext(0xC1, 1).to_bytes(),
    get.GetRequestWithList(0xC1, ((LDN, None), (PROFILE, entry_selection(1, 1)))).to_bytes(),
    set_.SetRequestNormal(0xC1, LDN, None, Data.octet_string(b"abc")).to_bytes(),
    set_.SetRequestWithDatablock(0xC1, True, 1, b"\x09\x01\x00").to_bytes(),
    action.ActionRequestNormal(0xC1, CosemMethodDescriptor(8, bytes([0, 0, 1, 0, 0, 255]), 6), Data.long(5)).to_bytes(),
    GeneralBlockTransfer(False, False, 1, 1, 0, b"\xc0\x01").to_bytes(),
    GeneralBlockTransfer(True, False, 1, 1, 0, get.GetRequestNormal(0xC1, LDN, None).to_bytes()).to_bytes(),
    # a GBT inside a GBT
    GeneralBlockTransfer(True, False, 1, 1, 0, GeneralBlockTransfer(True, False, 1, 1, 0, b"\xc0").to_bytes()).to_bytes(),
    GeneralBlockTransfer(False, False, 1, 0, 1, b"").to_bytes(),  # an acknowledgement
    get.GetRequestWithList(0xC1, tuple((PROFILE, None) for _ in range(32))).to_bytes(),
    acse.RLRQ(reason=0, user_information=None).to_bytes(),
    ClientAssociation().aarq(),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 3 and b:
            b[rng.randrange(len(b))] = rng.choice([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF])
        elif op == 4 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 4)]
    return bytes(b)


def _legal_state(meter) -> tuple:
    """Registers, parameters, their record number, certification mode, fatal errors, software id."""
    return tuple(meter.legal.execute(c) for c in (
        legal.ReadEnergyRegisters(), legal.ReadParameters(), legal.ReadParameterRecordNumber(),
        legal.ReadCertificationMode(), legal.ReadFatalErrors(), legal.ReadSoftwareIdentity(),
        legal.CountLoadProfileEntries()))


def is_dlms_answer(reply: bytes | None) -> bool:
    """One whole APDU a DLMS client decodes: xDLMS (incl. GBT and exception), ACSE or protected."""
    if not isinstance(reply, bytes) or not reply:
        return False
    for decode in (decode_xdlms, acse.decode_acse, ciphered.decode_ciphered):
        try:
            decode(reply)
            return True
        except DecodeError:
            continue
    return False


@pytest.mark.welmec("P4", "U4")
def test_server_survives_100k_hostile_apdus(tmp_path, caplog):
    """100 000 random and mutated APDUs on a public association: always a DLMS answer or none, and registers, parameters, certification mode, fatal errors and software identification unchanged."""
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=1), clock=MeterClock(source=lambda: 1773144000.0))
    before = _legal_state(meter)
    rng = random.Random(2502)
    client = ClientAssociation(conformance=CLIENT_CONFORMANCE, max_receive_pdu_size=256)
    assoc = meter.server.association(16, "lan")
    assoc.handle(client.aarq())
    for i in range(100_000):
        if i % 3 == 0:
            apdu = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        else:
            apdu = mutate(rng, rng.choice(SEEDS))
        reply = assoc.handle(apdu)
        assert is_dlms_answer(reply), (apdu.hex(), reply)
        if not assoc.associated:  # a mutated RLRQ/AARQ may end or refuse it: open again
            assoc.handle(client.aarq())
    # nothing reached the server's internal-error or object-fault paths
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records[:3]
    response = decode_xdlms(assoc.handle(get.GetRequestNormal(0xC1, LDN, None).to_bytes()))
    assert response.result == Data.octet_string(meter.identity.logical_device_name)
    assert _legal_state(meter) == before
    meter.close()


def test_protected_garbage_reaches_no_internal_error(tmp_path, caplog):
    """Mutated requests inside valid protection (glo- and general-glo-ciphering of the
    management client, HLS 7): whatever the deciphered APDU is, the answer is a DLMS answer
    (protected, or an exception-response where no protected form exists), never an internal
    error; mutated protected APDUs are refused the same way."""
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=1), clock=MeterClock(source=lambda: 1773144000.0))
    credentials = load_credentials(Path(tmp_path) / "credentials" / "management.json")
    security = dataclasses.replace(credentials.security, invocation_counter=CounterStore())
    assoc = meter.server.association(1, "lan")
    client = ClientAssociation(security=security, conformance=CLIENT_CONFORMANCE)
    client.on_aare(assoc.handle(client.aarq()))
    exchange = client.hls_exchange()
    request = exchange.first()
    while request is not None:
        request = exchange.feed(assoc.handle(request))
    assert assoc.authenticated
    rng = random.Random(2503)
    suite = int(security.suite)
    with caplog.at_level(logging.INFO, logger="smartmeter"):
        for i in range(1500):
            plain = mutate(rng, rng.choice(SEEDS)) if i % 4 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
            if not plain:
                continue
            kind = rng.randrange(3)
            if kind == 0 and plain[0] in ciphered.GLO_TAG_FOR_PLAIN:
                apdu = client.protect_request(plain)
            else:
                apdu = ciphered.GeneralGloCiphering.protect(0x30 | suite, security.ek, security.ak,
                                                            security.client_system_title, client._counters.reserve(),
                                                            plain).to_bytes()
            if kind == 2:
                apdu = mutate(rng, apdu)  # broken protection: refused, never deciphered
            reply = assoc.handle(apdu)
            assert is_dlms_answer(reply), (plain.hex(), reply)
            assert assoc.associated  # ACSE APDUs are never served from inside protection
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records[:3]
    assert assoc.associated
    answer = client.unprotect_response(assoc.handle(client.protect_request(
        get.GetRequestNormal(0xC1, LDN, None).to_bytes())))
    assert decode_xdlms(answer).result == Data.octet_string(meter.identity.logical_device_name)
    meter.close()
