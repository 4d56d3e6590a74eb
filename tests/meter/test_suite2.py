"""Security suite 2 is a configuration change (companion standard §3.1): a model profile that
sets the management client's suite to 2 gives it AES-GCM-256 keys, a P-384 certificate chain
and HLS 7 with ECDSA P-384, with no code change."""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.apdu.ciphered import decode_ciphered
from smartmeter.dlms.client import ClientAssociation, GetExchange
from smartmeter.hes.credentials import load_credentials
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

SUITE2 = """
[profile]
name = "suite2"
extends = "ksmw"

[clients.management]
sap = 1
interfaces = ["lan"]
mechanism = 7
ciphered = true
security_suite = 2
security_policy = ["authenticated_request", "encrypted_request", "authenticated_response", "encrypted_response"]
"""


def test_management_client_on_suite_2(tmp_path):
    model = tmp_path / "suite2.toml"
    model.write_text(SUITE2)
    meter = Meter(MeterConfig(data_dir=tmp_path / "data", backfill_days=0, profile=str(model)),
                  clock=MeterClock(source=lambda: 1773144000.0))
    try:
        creds = load_credentials(tmp_path / "data" / "credentials" / "management.json")
        assert creds.security.suite == 2 and len(creds.security.ek) == 32
        certificate = x509.load_pem_x509_certificate((tmp_path / "data" / "credentials" / "management.json").parent
                                                     .joinpath("demo-pki", "DEMO-root-ca.pem").read_bytes())
        assert isinstance(certificate.public_key().curve, ec.SECP384R1)
        server = meter.server.association(1, "lan")
        client = ClientAssociation(security=creds.security)
        client.on_aare(server.handle(client.aarq()))
        exchange = client.hls_exchange()
        request = exchange.first()
        while request is not None:
            request = exchange.feed(server.handle(request))
        get = client.secure(GetExchange(CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)))
        request = get.first()
        assert decode_ciphered(request).content.security_control & 0x0F == 2  # suite 2 in the SC byte
        while request is not None:
            request = get.feed(server.handle(request))
        assert get.result.value == b"KFM1000100000001"
    finally:
        meter.close()
