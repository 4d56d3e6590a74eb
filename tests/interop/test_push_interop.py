"""Pushes captured from the meter, decrypted and parsed by two independent implementations with
the Data Readout client's keys: dlms-cosem (GeneralGlobalCipher, DataNotification) and gurux-dlms
(GXDLMSSecureClient receiving the wrapper frames, general-block-transfer included). The values
they find equal the meter's own reads of the pushed objects (catalog §7, companion §10)."""
from __future__ import annotations

import pytest
from dlms_cosem import a_xdr
from dlms_cosem.protocol.xdlms import DataNotification as PeerDataNotification
from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects.enums import SecuritySuite
from gurux_dlms.secure import GXDLMSSecureClient

from push_support import SETUPS, data_readout_keys, reassembled
from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.transport.wrapper import WrapperFrame

START = 1780000000.0
METER = RequestContext("meter", 0)


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("push-interop"), backfill_days=1),
              clock=MeterClock(source=lambda: START))
    yield m
    m.close()


def setup_of(meter, selector: int):
    return meter.directory.by_ln[Obis.parse(SETUPS[selector]).to_bytes()][1]


def read(meter, class_id: int, obis: bytes, attribute: int) -> Data:
    """The attribute as the meter reads it, as the wire carries it (a profile buffer packed in bulk, decoded)."""
    return axdr.decode_all(axdr.encode(meter.directory.find(class_id, obis)[1].get(attribute, METER)))


def python_values(meter, setup) -> list:
    """What each pushed attribute reads on the meter, as plain Python (bytes, ints, lists)."""
    return [read(meter, o.class_id, o.logical_name, o.attribute_index).to_python() for o in setup.push_objects()]


def gurux_client(meter) -> GXDLMSSecureClient:
    ek, ak = data_readout_keys(meter)
    client = GXDLMSSecureClient(True, 2, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    client.ciphering.securitySuite = SecuritySuite(1)
    client.ciphering.blockCipherKey, client.ciphering.authenticationKey = ek, ak
    client.ciphering.systemTitle = bytes(8)  # its own; the meter's comes in the APDU
    return client


def gurux_receive(meter, frames: list[bytes]):
    """Feed the push's wrapper frames (meter wPort 1 -> Data Readout client wPort 2) to gurux-dlms."""
    client, reply, notify = gurux_client(meter), GXReplyData(), GXReplyData()
    for frame in frames:
        client.getData(GXByteBuffer(WrapperFrame(1, 2, frame).to_bytes()), reply, notify)
    return notify


def gurux_python(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return [gurux_python(v) for v in value]
    return value


def test_dlms_cosem_decrypts_and_parses_the_interval_push(meter):
    setup = setup_of(meter, 1)
    apdu = reassembled(meter.push.frames(setup, START))
    ek, ak = data_readout_keys(meter)
    peer = GeneralGlobalCipher.from_bytes(apdu)
    assert peer.system_title == meter.identity.system_title
    assert peer.security_control.encrypted and peer.security_control.authenticated
    notification = PeerDataNotification.from_bytes(peer.to_plain_apdu(ek, ak))
    decoded = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(
        attributes=[a_xdr.Sequence(attribute_name="data")])).decode(notification.body)["data"]
    assert decoded[0] == meter.clock.cosem(START)
    assert decoded == python_values(meter, setup)


def test_dlms_cosem_reads_a_push_that_came_in_blocks(meter):
    """The daily push (clock, billing counter, daily and billing profiles) with the 15-minute
    profile added: GBT blocks, reassembled, then decrypted and parsed by dlms-cosem."""
    setup = setup_of(meter, 2)
    key = f"push_setup.{setup.logical_name}.push_object_list"
    meter.store.put(key, [o.record() for o in setup.push_objects()] + [[7, "1-0:99.1.0.255", 2, 0]])
    try:
        frames = meter.push.frames(setup, START)
        assert len(frames) > 1
        ek, ak = data_readout_keys(meter)
        notification = PeerDataNotification.from_bytes(GeneralGlobalCipher.from_bytes(reassembled(frames))
                                                       .to_plain_apdu(ek, ak))
        decoded = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(
            attributes=[a_xdr.Sequence(attribute_name="data")])).decode(notification.body)["data"]
        assert decoded == python_values(meter, setup)
        assert len(decoded[-1]) == 96
    finally:
        meter.store.put(key, None)  # the model's default again


def test_gurux_decrypts_and_parses_the_pushes(meter):
    for selector in (1, 3, 4, 5, 7):
        setup = setup_of(meter, selector)
        notify = gurux_receive(meter, meter.push.frames(setup, START))
        assert gurux_python(notify.value) == python_values(meter, setup), selector


def test_gurux_reassembles_a_push_in_general_block_transfer(meter):
    setup = setup_of(meter, 1)
    lp1 = [7, "1-0:99.1.0.255", 2, 0]
    meter.store.put(f"push_setup.{setup.logical_name}.push_object_list", [[8, "0-0:1.0.0.255", 2, 0], lp1])
    try:
        frames = meter.push.frames(setup, START)
        assert len(frames) > 1  # a day of 15-minute entries does not fit 1224 octets
        notify = gurux_receive(meter, frames)
        profile = read(meter, 7, Obis.parse("1-0:99.1.0.255").to_bytes(), 2).to_python()
        assert len(profile) == 96
        assert gurux_python(notify.value) == [meter.clock.cosem(START), profile]
    finally:
        meter.store.put(f"push_setup.{setup.logical_name}.push_object_list", None)
