"""A protected data-notification (companion standard §3.3.1: general-glo-ciphering) that
dlms-cosem, as an independent decoder, decrypts and parses with the client's keys."""
from __future__ import annotations

from dlms_cosem import a_xdr
from dlms_cosem.protocol.xdlms import DataNotification as PeerDataNotification
from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher

from smartmeter.cosem.data import Data
from smartmeter.hes.credentials import load_credentials
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig


def test_data_readout_client_decrypts_a_protected_push(tmp_path):
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: 1773144000.0))
    try:
        body = Data.structure([Data.octet_string(b"KFM1000100000001"), Data.double_long_unsigned(123456)])
        first = meter.server.protected_notification("data_readout", body, 7)
        second = meter.server.protected_notification("data_readout", body, 8)
        creds = load_credentials(tmp_path / "credentials" / "data_readout.json")
        peer = GeneralGlobalCipher.from_bytes(first)
        assert peer.system_title == meter.identity.system_title
        assert peer.security_control.encrypted and peer.security_control.authenticated
        plain = peer.to_plain_apdu(creds.security.ek, creds.security.ak)
        notification = PeerDataNotification.from_bytes(plain)
        decoded = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(
            attributes=[a_xdr.Sequence(attribute_name="data")])).decode(notification.body)["data"]
        assert decoded == [b"KFM1000100000001", 123456]
        assert GeneralGlobalCipher.from_bytes(second).invocation_counter > peer.invocation_counter  # never reused
    finally:
        meter.close()
