"""Demo provisioning at a meter's first start, so every client can be tried at once.

It builds a DEMO PKI (root, three sub-CAs, HES client certificates) in
`DATA_DIR/credentials/demo-pki/`, installs it in the meter as production would, lets the
meter generate its own signing key pair and has it certified by the demo Sub-CA 1, and writes
one credentials file per client to `DATA_DIR/credentials/<client>.json`. Everything here is
demo material, marked as such; a real meter is provisioned with `smartmeter pki provision`
through DLMS only.
"""
from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smartmeter.dlms.security.certificates import make_csr
from smartmeter.dlms.security.signing import generate_private_key
from smartmeter.hes import pki
from smartmeter.meter.security import SIGNING_KEY, MeterSecurity, _pem, write_credentials

PROVISIONED = "security.demo_provisioned"
DEMO_NOTE = "DEMO PROVISIONING: keys and certificates made by the meter at its first start. Not for production."


def _relative(target: Path, credentials: Path) -> str:
    # relative to the credentials file's directory (where the loader resolves it), so the
    # file works from any working directory and the data directory can be moved whole
    return target.relative_to(credentials).as_posix()


def provision_demo(security: MeterSecurity, data_dir: Path) -> bool:
    """Provision once; returns True if it ran now."""
    store = security.store
    if store.get(PROVISIONED):
        return False
    credentials = data_dir / "credentials"
    pki_dir = credentials / "demo-pki"
    pki.make_private_directory(credentials)  # keys of every client: owner-only whatever the umask
    now = security.now()
    if not (pki_dir / pki.INDEX_FILE).exists():
        pki.init_pki(pki_dir, suite=security.certificates.suite, now=now)
    pki.provision_store(pki_dir, security.certificates, now)
    key = generate_private_key(security.certificates.suite)
    security.certificates.set_meter_key(key.public_key())
    store.put(SIGNING_KEY, _pem(key))
    csr = x509.load_der_x509_csr(make_csr(key, security.server_system_title, security.certificates.suite))
    certificate = pki.sign_csr(pki_dir, csr.public_bytes(serialization.Encoding.PEM), "meter-signing", now=now)
    security.certificates.import_certificate(certificate, now)
    store.put("security.certificates", security.certificates.to_dict())
    server_cert = pki_dir / f"DEMO-meter-{security.server_system_title.hex().upper()}-signing.pem"
    pki.write_owner_only(server_cert, certificate if isinstance(certificate, bytes) else certificate.encode())

    index = pki.load_index(pki_dir)
    for client in security.clients.values():
        if client.push_only:
            continue
        fields = {
            "note": DEMO_NOTE, "client": client.name, "client_sap": client.sap, "server_sap": 1,
            "interfaces": list(client.interfaces), "authentication": client.mechanism,
            "security_suite": client.security_suite, "security_policy": client.security_policy,
            "server_system_title": security.server_system_title.hex().upper(),
        }
        context = security.manager.context(client.name)
        if context is not None:
            fields.update(
                client_system_title=pki.demo_client_system_title(client.sap).hex().upper(),
                ek=context.ek.hex().upper(), ak=context.ak.hex().upper(),
                server_cert_pem=_relative(server_cert, credentials),
            )
            if context.hls_secret is not None:
                fields["hls_secret"] = context.hls_secret.hex().upper()
            if client.name in ("management", "maintenance"):  # the highest authorities (§3.5) hold the KEK
                fields["master_key"] = security.manager.kek(context.suite).hex().upper()
            entry = index.get("clients", {}).get(str(client.sap))
            if entry is not None and client.mechanism == 7:
                fields.update(client_key_pem=_relative(pki_dir / entry["signing"]["private_key"], credentials),
                              client_cert_pem=_relative(pki_dir / entry["signing"]["certificate"], credentials),
                              client_system_title=entry["system_title"].upper())
        write_credentials(credentials / f"{client.name}.json", fields)
    store.put(PROVISIONED, True)
    return True


FIRMWARE_KEY = "firmware-signing-key.pem"


def demo_firmware_key(data_dir: Path) -> bytes:
    """A demo firmware signing key pair in DATA_DIR/credentials/demo-pki/ (the private key, 0600, is
    what `smartmeter fw sign --key` takes); -> the public key PEM the meter imports."""
    from cryptography.hazmat.primitives.asymmetric import ec

    pki_dir = data_dir / "credentials" / "demo-pki"
    pki.make_private_directory(data_dir / "credentials")
    pki_dir.mkdir(parents=True, exist_ok=True)
    path = pki_dir / FIRMWARE_KEY
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pki.write_owner_only(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pki.write_owner_only(pki_dir / "firmware-signing-key.pub.pem", public)
    return public
