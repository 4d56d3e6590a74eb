"""The demo PKI: every certificate it makes is checked by the `openssl` command line (an
independent X.509 implementation) and by the meter's own certificate store."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.security import certificates as c
from smartmeter.hes import pki

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
METER_TITLE = bytes.fromhex("4B464D0000000001")


@pytest.fixture(scope="session")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the `openssl` command is required by these tests and was not found on PATH")
    return path


def run(openssl: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True,
                          check=check, timeout=60)


def verify(openssl: str, directory: Path, cert: str, *extra: str) -> subprocess.CompletedProcess:
    # -attime: the certificates are issued at NOW, which may be in the past or future of
    # the machine's clock; verification is done at a fixed time inside their validity.
    at = str(int((NOW + dt.timedelta(days=1)).timestamp()))
    return run(openssl, "verify", "-x509_strict", "-attime", at, "-CAfile", pki.ROOT_FILE,
               "-untrusted", pki.SUB_CA_BUNDLE_FILE, *extra, cert, cwd=directory, check=False)


def text(openssl: str, directory: Path, cert: str) -> str:
    return run(openssl, "x509", "-noout", "-text", "-in", cert, cwd=directory).stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("pki")
    index = pki.init_pki(directory, 1, now=NOW)
    return directory, index


def meter_csr(curve=ec.SECP256R1, suite=1, certificate_type=c.CertificateType.DIGITAL_SIGNATURE):
    meter_key = ec.generate_private_key(curve())
    csr = c.make_csr(meter_key, METER_TITLE, suite, certificate_type)
    pem = x509.load_der_x509_csr(csr).public_bytes(serialization.Encoding.PEM)
    return meter_key, pem


def all_certificates(index: dict) -> list[str]:
    files = [e["certificate"] for e in index["sub_cas"].values()]
    for client in index["clients"].values():
        files += [client["signing"]["certificate"], client["key_agreement"]["certificate"]]
    return files


# -------------------------------------------------------------------------- layout


def test_layout_and_index(demo):
    directory, index = demo
    assert json.loads((directory / pki.INDEX_FILE).read_text()) == index
    assert index["demo"] is True and "NOT FOR PRODUCTION" in index["warning"]
    assert index["suite"] == 1
    assert set(index["sub_cas"]) == {"1", "2", "3"}
    # only the HLS 7 clients of §3.6 get certificates, on the sub-CA §3.5.2 assigns
    assert {k: v["sub_ca"] for k, v in index["clients"].items()} == {"1": 2, "2": 2, "4": 3}
    assert index["clients"]["1"]["system_title"] == "484553" + "0000000001"
    assert "NOT FOR PRODUCTION" in (directory / "DEMO-README.txt").read_text()
    for path in directory.iterdir():
        assert path.name == pki.INDEX_FILE or path.name.startswith("DEMO-"), path.name
        assert not path.name.endswith(".tmp")


def test_private_keys_are_0600_and_match_their_certificates(demo):
    directory, index = demo
    entries = [index["root"], *index["sub_cas"].values()]
    for client in index["clients"].values():
        entries += [client["signing"], client["key_agreement"]]
    assert len(entries) == 1 + 3 + 3 * 2
    for entry in entries:
        key_path = directory / entry["private_key"]
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, key_path.name
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((directory / entry["certificate"]).read_bytes())
        assert key.public_key() == cert.public_key()


def test_private_keys_are_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        pki.init_pki(tmp_path, now=NOW)
    finally:
        os.umask(old)
    keys = list(tmp_path.glob("*.key.pem"))
    assert len(keys) == 10
    assert {stat.S_IMODE(k.stat().st_mode) for k in keys} == {0o600}


def test_init_refuses_an_existing_pki(demo):
    directory, _ = demo
    with pytest.raises(pki.PkiError):
        pki.init_pki(directory, now=NOW)


def test_init_argument_checks(tmp_path):
    with pytest.raises(pki.PkiError):
        pki.init_pki(tmp_path / "a", suite=0, now=NOW)
    with pytest.raises(pki.PkiError):
        pki.init_pki(tmp_path / "b", now=NOW, clients={5: "Installation"})


# ----------------------------------------------------------------- openssl checks


def test_openssl_verifies_every_certificate(openssl, demo):
    directory, index = demo
    files = all_certificates(index)
    assert len(files) == 3 + 6
    for name in files:
        result = verify(openssl, directory, name)
        assert result.returncode == 0 and result.stdout.strip() == f"{name}: OK", (
            name, result.stdout, result.stderr)
    root = verify(openssl, directory, pki.ROOT_FILE)
    assert root.returncode == 0, root.stderr


def test_openssl_refuses_outside_validity_and_foreign_roots(openssl, demo, tmp_path):
    directory, index = demo
    name = index["clients"]["1"]["signing"]["certificate"]
    before = str(int((NOW - dt.timedelta(days=1)).timestamp()))
    result = run(openssl, "verify", "-attime", before, "-CAfile", pki.ROOT_FILE, "-untrusted",
                 pki.SUB_CA_BUNDLE_FILE, name, cwd=directory, check=False)
    assert result.returncode != 0 and "not yet valid" in result.stdout + result.stderr
    other = pki.init_pki(tmp_path, now=NOW)
    foreign_root = tmp_path / other["root"]["certificate"]
    result = run(openssl, "verify", "-CAfile", str(foreign_root), "-untrusted",
                 pki.SUB_CA_BUNDLE_FILE, name, cwd=directory, check=False)
    assert result.returncode != 0


def test_openssl_text_shows_profile(openssl, demo):
    directory, index = demo
    root = text(openssl, directory, pki.ROOT_FILE)
    assert "CA:TRUE, pathlen:1" in root and "Certificate Sign, CRL Sign" in root
    assert "ecdsa-with-SHA256" in root and "prime256v1" in root
    for number, entry in index["sub_cas"].items():
        out = text(openssl, directory, entry["certificate"])
        assert "CA:TRUE, pathlen:0" in out and "Certificate Sign, CRL Sign" in out
        assert f"CN = DEMO Sub-CA {number}" in out and "NOT FOR PRODUCTION" in out
    for client in index["clients"].values():
        title = client["system_title"]
        signing = text(openssl, directory, client["signing"]["certificate"])
        assert f"Subject: CN = {title}\n" in signing
        assert "X509v3 Key Usage: critical\n                Digital Signature\n" in signing
        assert "Key Agreement" not in signing and "CA:TRUE" not in signing
        agreeing = text(openssl, directory, client["key_agreement"]["certificate"])
        assert f"Subject: CN = {title}\n" in agreeing
        assert "X509v3 Key Usage: critical\n                Key Agreement\n" in agreeing
        assert "Digital Signature" not in agreeing


def test_meter_certificate_from_csr(openssl, demo):
    directory, index = demo
    meter_key, csr_pem = meter_csr()
    # openssl agrees the CSR is self-signed correctly and names the system title
    (directory / "meter.csr").write_bytes(csr_pem)
    req = run(openssl, "req", "-in", "meter.csr", "-noout", "-verify", "-subject",
              cwd=directory)
    assert "verify OK" in req.stdout + req.stderr
    assert "CN = 4B464D0000000001" in req.stdout
    (directory / "meter.csr").unlink()

    pem = pki.sign_csr(directory, csr_pem, "meter-signing", now=NOW)
    name = "DEMO-meter-4B464D0000000001-signing.pem"
    assert (directory / name).read_bytes() == pem
    result = verify(openssl, directory, name)
    assert result.returncode == 0, result.stdout + result.stderr
    out = text(openssl, directory, name)
    assert "Subject: CN = 4B464D0000000001\n" in out
    assert "Issuer: CN = DEMO Sub-CA 1 servers" in out
    assert "X509v3 Key Usage: critical\n                Digital Signature\n" in out
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.public_key() == meter_key.public_key()
    recorded = pki.load_index(directory)["meters"]["4B464D0000000001"]["signing"]
    assert recorded["certificate"] == name and recorded["serial"] == format(cert.serial_number, "X")


def test_meter_key_agreement_certificate(openssl, tmp_path):
    pki.init_pki(tmp_path, now=NOW)
    _, csr_pem = meter_csr(certificate_type=c.CertificateType.KEY_AGREEMENT)
    with pytest.raises(pki.PkiError, match="KEY_AGREEMENT"):
        pki.sign_csr(tmp_path, csr_pem, "meter-signing", now=NOW)
    pki.sign_csr(tmp_path, csr_pem, "meter-key-agreement", now=NOW)
    name = "DEMO-meter-4B464D0000000001-key-agreement.pem"
    assert verify(openssl, tmp_path, name).returncode == 0
    assert "Key Agreement" in text(openssl, tmp_path, name)


def test_sign_csr_refusals(demo, tmp_path):
    directory, _ = demo
    _, good = meter_csr()
    with pytest.raises(pki.PkiError):
        pki.sign_csr(directory, good, "client-signing", now=NOW)
    with pytest.raises(pki.PkiError, match="CSR refused"):
        pki.sign_csr(directory, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", now=NOW)
    _, p384 = meter_csr(ec.SECP384R1, suite=2)
    with pytest.raises(pki.PkiError, match="CSR refused"):
        pki.sign_csr(directory, p384, now=NOW)
    damaged = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    damaged[-3] ^= 0x40
    with pytest.raises(pki.PkiError, match="CSR refused"):
        pki.sign_csr(directory, bytes(damaged), now=NOW)
    with pytest.raises(pki.PkiError, match="no readable PKI index"):
        pki.sign_csr(tmp_path, good, now=NOW)


def test_suite_2_pki(openssl, tmp_path):
    index = pki.init_pki(tmp_path, 2, now=NOW)
    _, csr_pem = meter_csr(ec.SECP384R1, suite=2)
    pki.sign_csr(tmp_path, csr_pem, now=NOW)
    for name in all_certificates(index) + ["DEMO-meter-4B464D0000000001-signing.pem"]:
        assert verify(openssl, tmp_path, name).returncode == 0, name
        out = text(openssl, tmp_path, name)
        assert "ecdsa-with-SHA384" in out and "secp384r1" in out
        c.parse_certificate((tmp_path / name).read_bytes(), suite=2, now=NOW)


# --------------------------------------------------- the meter's store accepts all


def test_every_certificate_passes_the_meter_profile(demo):
    directory, index = demo
    root = c.parse_certificate((directory / pki.ROOT_FILE).read_bytes(), now=NOW)
    assert root.is_ca and root.self_signed and root.path_length == 1
    for name in all_certificates(index):
        parsed = c.parse_certificate((directory / name).read_bytes(), now=NOW)
        assert parsed.is_ca or parsed.system_title is not None


def test_provision_and_renew_meter_certificate(tmp_path):
    pki.init_pki(tmp_path, now=NOW)
    store = c.CertificateStore(METER_TITLE)
    results = pki.provision_store(tmp_path, store, NOW)
    assert [r.entity for r in results] == (
        [c.CertificateEntity.CERTIFICATION_AUTHORITY] * 3 + [c.CertificateEntity.CLIENT] * 6)
    assert all(len(store.client_certificates(k)) == 2 for k in (1, 2, 4))

    # production: the meter generates its key, its CSR is signed, the certificate imported
    meter_key, csr_pem = meter_csr()
    store.set_meter_key(meter_key.public_key())
    store.import_certificate(pki.sign_csr(tmp_path, csr_pem, now=NOW), NOW)
    # renewal (§3.5.2.1): new key pair, CSR, certificate within 24 h
    new_key = ec.generate_private_key(ec.SECP256R1())
    store.begin_key_renewal(new_key.public_key(), NOW)
    later = NOW + dt.timedelta(hours=2)
    pem = pki.sign_csr(tmp_path, x509.load_der_x509_csr(c.make_csr(new_key, METER_TITLE))
                       .public_bytes(serialization.Encoding.PEM), now=later)
    result = store.import_certificate(pem, later)
    assert result.key_pair_activated
    assert store.server_certificate().public_key() == new_key.public_key()
    # the whole store survives its dict form
    again = c.CertificateStore.from_dict(json.loads(json.dumps(store.to_dict())))
    assert again.certificate_infos() == store.certificate_infos()


def test_client_credentials(demo):
    directory, index = demo
    creds = pki.load_client_credentials(directory, 2)
    assert creds.system_title == pki.demo_client_system_title(2)
    sign_cert = c.parse_certificate(creds.signing_certificate, now=NOW)
    assert sign_cert.certificate_type == c.CertificateType.DIGITAL_SIGNATURE
    assert sign_cert.system_title == creds.system_title
    assert sign_cert.public_key() == creds.signing_key.public_key()
    ka_cert = c.parse_certificate(creds.key_agreement_certificate, now=NOW)
    assert ka_cert.certificate_type == c.CertificateType.KEY_AGREEMENT
    assert ka_cert.public_key() == creds.key_agreement_key.public_key()
    with pytest.raises(pki.PkiError):
        pki.load_client_credentials(directory, 5)


def test_provisioning_pins_the_sub_cas_of_section_3_5_2(tmp_path):
    index = pki.init_pki(tmp_path, now=NOW)
    store = c.CertificateStore(METER_TITLE)
    pki.provision_store(tmp_path, store, NOW)

    def subject(number):
        return c.parse_certificate((tmp_path / index["sub_cas"][number]["certificate"])
                                   .read_bytes()).subject

    assert store.issuer_pin("server") == subject("1")
    assert store.issuer_pin(1) == store.issuer_pin(2) == subject("2")
    assert store.issuer_pin(4) == subject("3")
    # the PLC client's certificate is refused for the Management client
    plc = (tmp_path / index["clients"]["4"]["signing"]["certificate"]).read_bytes()
    with pytest.raises(c.IssuerNotAllowedError):
        store.import_certificate(plc, NOW, client=1)
