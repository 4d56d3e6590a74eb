"""The server application layer under random and mutated APDUs: it always answers with a
DLMS response (or nothing), never raises, and the association stays usable."""
from __future__ import annotations

import logging
import random

import pytest

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu import acse, action, get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import CLIENT_CONFORMANCE, ClientAssociation
from smartmeter.hes.client import entry_selection, range_selection
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
        assert reply is None or isinstance(reply, bytes)
        if not assoc.associated:  # a mutated RLRQ/AARQ may end or refuse it: open again
            assoc.handle(client.aarq())
    # nothing reached the server's internal-error or object-fault paths
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records[:3]
    response = decode_xdlms(assoc.handle(get.GetRequestNormal(0xC1, LDN, None).to_bytes()))
    assert response.result == Data.octet_string(meter.identity.logical_device_name)
    assert _legal_state(meter) == before
    meter.close()
