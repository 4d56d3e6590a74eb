"""A DEMO public-key infrastructure for trying suite 1/2 security end to end.

*** DEMO MATERIAL, NOT FOR PRODUCTION. *** The private keys are written unencrypted
(mode 0600) next to the certificates, every file name starts with "DEMO-", and every CA
name says "DEMO ... NOT FOR PRODUCTION". A real deployment keeps the root offline and the
sub-CA keys in an HSM, and meters generate their own key pairs (only their CSRs leave).

Layout follows companion standard §3.5.2 (the Appendix 2 examples are OCR-damaged and are
not reused; their root also carries pathlen:0, which forbids any sub-CA, so the root here
has pathlen:1):

    <directory>/
      DEMO-README.txt
      pki.json                                   index of everything below
      DEMO-root-ca.pem           DEMO-root-ca.key.pem         trust anchor, pathlen 1
      DEMO-sub-ca-1-servers.pem  (+ .key.pem)    "Sub CA 1": issues meter certificates
      DEMO-sub-ca-2-hes-clients.pem (+ .key.pem) "Sub CA 2": Management (1), Data Readout (2)
      DEMO-sub-ca-3-plc-clients.pem (+ .key.pem) "Sub CA 3": PLC Management (4)
      DEMO-sub-cas.pem                           the three sub-CA certificates, one bundle
      DEMO-client-<sap>-<name>-signing.pem        (+ .key.pem)  HLS 7 / signing key
      DEMO-client-<sap>-<name>-key-agreement.pem  (+ .key.pem)  static key agreement
      DEMO-meter-<SYSTEMTITLE>-signing.pem        issued by `sign_csr` from a meter's CSR

Only the HLS 7 clients hold certificates (§3.6.2, §3.6.3, §3.6.5); Installation (5),
Maintenance (6) and Certification (7) authenticate with HLS 6 and need none. The
key-agreement certificates are extra: §3.5.2 says the static key agreement certificate
is not needed by this profile, but they let the head-end try the Green Book's static
unified model; the meter's store accepts them in their own slots.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smartmeter.dlms.security.certificates import (
    CERTIFICATE_CLIENTS,
    SUITE_CURVES,
    SUITE_HASHES,
    CertificateStore,
    CertificateType,
    CsrError,
    ImportResult,
    parse_csr,
    system_title_to_common_name,
)
from smartmeter.errors import SmartmeterError

__all__ = [
    "PkiError", "ClientCredentials", "init_pki", "sign_csr", "load_index",
    "load_client_credentials", "provision_store", "demo_client_system_title",
    "INDEX_FILE", "ROOT_FILE", "SUB_CA_BUNDLE_FILE", "METER_KINDS",
]

INDEX_FILE = "pki.json"
ROOT_FILE = "DEMO-root-ca.pem"
SUB_CA_BUNDLE_FILE = "DEMO-sub-cas.pem"
_FORMAT = "smartmeter-demo-pki/1"
_WARNING = "DEMO PKI - private keys unencrypted on disk - NOT FOR PRODUCTION"

# Sub-CA number (§3.5.2) -> (file stem, CN, what it issues)
_SUB_CAS = {
    1: ("DEMO-sub-ca-1-servers", "DEMO Sub-CA 1 servers - NOT FOR PRODUCTION",
        "meter (DLMS server) certificates"),
    2: ("DEMO-sub-ca-2-hes-clients", "DEMO Sub-CA 2 HES clients - NOT FOR PRODUCTION",
        "Management (1) and Data Readout (2) client certificates"),
    3: ("DEMO-sub-ca-3-plc-clients", "DEMO Sub-CA 3 PLC clients - NOT FOR PRODUCTION",
        "PLC Management (4) client certificates"),
}
_CLIENT_SUB_CA = {1: 2, 2: 2, 4: 3}
_CLIENT_FILE_NAMES = {1: "management", 2: "data-readout", 4: "plc-management"}
_TYPE_SUFFIX = {CertificateType.DIGITAL_SIGNATURE: "signing",
                CertificateType.KEY_AGREEMENT: "key-agreement"}

#: Kinds accepted by `sign_csr`.
METER_KINDS = {"meter-signing": CertificateType.DIGITAL_SIGNATURE,
               "meter-key-agreement": CertificateType.KEY_AGREEMENT}

_ROOT_YEARS, _SUB_CA_YEARS, _ENTITY_YEARS = 25, 20, 10


class PkiError(SmartmeterError):
    """The demo PKI directory is missing, damaged, already initialised, or a request is bad."""


def demo_client_system_title(client: int) -> bytes:
    """System title of the demo head-end for one client: "HES" + the client SAP.

    One title per client keeps IC 64 identification by entity unambiguous.
    """
    return b"HES" + int(client).to_bytes(5, "big")


# ------------------------------------------------------------------- file helpers


def write_owner_only(path: Path, data: bytes) -> None:
    # certificates and the index are public in themselves, but the folder is the owner's
    # (it holds the CA keys): 0600 like everything in it, whatever the umask
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_private_directory(directory: Path) -> None:
    """Create `directory` owner-only (0700 exactly); one that exists is left as it is."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created 0600 from the start (not chmod-ed afterwards) and never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits, never added: make it exact
        os.write(fd, pem)
    finally:
        os.close(fd)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _utc(now: _dt.datetime | None) -> _dt.datetime:
    if now is None:
        now = _dt.datetime.now(_dt.timezone.utc)  # the head-end tool is the edge: it may read the clock
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(_dt.timezone.utc).replace(microsecond=0)


def _years(start: _dt.datetime, years: int) -> _dt.datetime:
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February
        return start.replace(year=start.year + years, day=28)


# -------------------------------------------------------------------- building


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False)


def _entity_usage(certificate_type: CertificateType) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=certificate_type == CertificateType.DIGITAL_SIGNATURE,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=certificate_type == CertificateType.KEY_AGREEMENT,
        key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def _issue(*, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
           issuer_cert: x509.Certificate | None, issuer_key: ec.EllipticCurvePrivateKey,
           suite: int, not_before: _dt.datetime, not_after: _dt.datetime,
           ca_path_length: int | None = None, is_ca: bool,
           certificate_type: CertificateType | None = None) -> x509.Certificate:
    """One certificate of the DLMS profile: only the mandatory fields and extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if is_ca:
        builder = (builder
                   .add_extension(x509.BasicConstraints(ca=True, path_length=ca_path_length),
                                  critical=True)
                   .add_extension(_CA_USAGE, critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                                  critical=False))
    else:
        builder = builder.add_extension(_entity_usage(certificate_type), critical=True)
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    return builder.sign(issuer_key, SUITE_HASHES[suite]())


def _record(directory: Path, stem: str, cert: x509.Certificate,
            key: ec.EllipticCurvePrivateKey | None) -> dict[str, Any]:
    write_owner_only(directory / f"{stem}.pem", _pem(cert))
    entry: dict[str, Any] = {
        "certificate": f"{stem}.pem",
        "serial": format(cert.serial_number, "X"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
    if key is not None:
        _write_private_key(directory / f"{stem}.key.pem", key)
        entry["private_key"] = f"{stem}.key.pem"
    return entry


def init_pki(directory: str | os.PathLike, suite: int = 1, *, now: _dt.datetime | None = None,
             clients: dict[int, str] | None = None,
             client_system_titles: dict[int, bytes] | None = None) -> dict[str, Any]:
    """Create the DEMO PKI in `directory` (created if needed; must not already hold one).

    Returns the index also written to `pki.json`.
    """
    if suite not in SUITE_CURVES:
        raise PkiError(f"suite must be 1 or 2, not {suite!r}")
    directory = Path(directory)
    make_private_directory(directory)
    if (directory / INDEX_FILE).exists() or (directory / ROOT_FILE).exists():
        raise PkiError(f"{directory} already holds a PKI; use a new directory")
    clients = dict(CERTIFICATE_CLIENTS if clients is None else clients)
    for client in clients:
        if client not in _CLIENT_SUB_CA:
            raise PkiError(f"client {client} does not use certificates (HLS 7 clients: "
                           f"{sorted(_CLIENT_SUB_CA)})")
    titles = {c: demo_client_system_title(c) for c in clients}
    titles.update(client_system_titles or {})
    now = _utc(now)
    curve = SUITE_CURVES[suite]

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(curve())

    write_owner_only(directory / "DEMO-README.txt", (
        f"{_WARNING}\n\nGenerated by smartmeter.hes.pki.init_pki for security suite {suite} "
        f"on {now.isoformat()}.\nSee pki.json for the index. Verify any certificate with\n"
        f"  openssl verify -CAfile {ROOT_FILE} -untrusted {SUB_CA_BUNDLE_FILE} <cert>.pem\n").encode())

    root_key = new_key()
    root = _issue(subject=_name("DEMO Root CA smartmeter - NOT FOR PRODUCTION"),
                  public_key=root_key.public_key(), issuer_cert=None, issuer_key=root_key,
                  suite=suite, not_before=now, not_after=_years(now, _ROOT_YEARS),
                  ca_path_length=1, is_ca=True)
    index: dict[str, Any] = {
        "format": _FORMAT, "demo": True, "warning": _WARNING, "suite": suite,
        "created": now.isoformat(),
        "root": _record(directory, "DEMO-root-ca", root, root_key),
        "sub_ca_bundle": SUB_CA_BUNDLE_FILE,
        "sub_cas": {}, "clients": {}, "meters": {},
    }
    sub_ca_certs: dict[int, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
    for number, (stem, cn, purpose) in _SUB_CAS.items():
        key = new_key()
        cert = _issue(subject=_name(cn), public_key=key.public_key(), issuer_cert=root,
                      issuer_key=root_key, suite=suite, not_before=now,
                      not_after=_years(now, _SUB_CA_YEARS), ca_path_length=0, is_ca=True)
        sub_ca_certs[number] = (cert, key)
        entry = _record(directory, stem, cert, key)
        entry["issues"] = purpose
        index["sub_cas"][str(number)] = entry
    write_owner_only(directory / SUB_CA_BUNDLE_FILE,
                  b"".join(_pem(cert) for cert, _ in sub_ca_certs.values()))

    for client, name in sorted(clients.items()):
        title = titles[client]
        ca_cert, ca_key = sub_ca_certs[_CLIENT_SUB_CA[client]]
        entry = {"name": name, "system_title": title.hex().upper(),
                 "sub_ca": _CLIENT_SUB_CA[client]}
        for ctype, suffix in _TYPE_SUFFIX.items():
            key = new_key()
            cert = _issue(subject=_name(system_title_to_common_name(title)),
                          public_key=key.public_key(), issuer_cert=ca_cert, issuer_key=ca_key,
                          suite=suite, not_before=now, not_after=_years(now, _ENTITY_YEARS),
                          is_ca=False, certificate_type=ctype)
            stem = f"DEMO-client-{client}-{_CLIENT_FILE_NAMES[client]}-{suffix}"
            entry[suffix.replace("-", "_")] = _record(directory, stem, cert, key)
        index["clients"][str(client)] = entry
    _write_index(directory, index)
    return index


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    write_owner_only(directory / INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode())


def load_index(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PkiError(f"no readable PKI index at {path}: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        raise PkiError(f"{path} is not a smartmeter demo PKI index")
    return index


def _load_pair(directory: Path, entry: dict[str, Any]
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / entry["certificate"]).read_bytes())
        key = serialization.load_pem_private_key(
            (directory / entry["private_key"]).read_bytes(), password=None)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load {entry.get('certificate')}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{entry['private_key']} is not an EC key")
    return cert, key


def sign_csr(directory: str | os.PathLike, csr_pem: bytes | str, kind: str = "meter-signing",
             *, now: _dt.datetime | None = None, validity_years: int = _ENTITY_YEARS) -> bytes:
    """Issue a meter certificate from its CSR with Sub-CA 1; returns the certificate PEM.

    `kind` is "meter-signing" or "meter-key-agreement". The CSR must be self-signed, on
    the PKI's curve, with CN = the meter's system title in hex; a keyUsage it requests
    must agree with `kind`. The certificate is written as
    DEMO-meter-<SYSTEMTITLE>-<signing|key-agreement>.pem and recorded in pki.json.
    """
    directory = Path(directory)
    if kind not in METER_KINDS:
        raise PkiError(f"kind must be one of {sorted(METER_KINDS)}, not {kind!r}")
    certificate_type = METER_KINDS[kind]
    index = load_index(directory)
    suite = index["suite"]
    try:
        request = parse_csr(csr_pem, suite=suite)
    except CsrError as exc:
        raise PkiError(f"CSR refused: {exc}") from None
    if request.certificate_type not in (None, certificate_type):
        raise PkiError(f"the CSR asks for {request.certificate_type.name} but kind is {kind}")
    ca_cert, ca_key = _load_pair(directory, index["sub_cas"]["1"])
    now = _utc(now)
    not_after = min(_years(now, validity_years), ca_cert.not_valid_after_utc)
    cert = _issue(subject=_name(system_title_to_common_name(request.system_title)),
                  public_key=request.public_key, issuer_cert=ca_cert, issuer_key=ca_key,
                  suite=suite, not_before=now, not_after=not_after, is_ca=False,
                  certificate_type=certificate_type)
    title = request.system_title.hex().upper()
    suffix = _TYPE_SUFFIX[certificate_type]
    entry = _record(directory, f"DEMO-meter-{title}-{suffix}", cert, None)
    index["meters"].setdefault(title, {})[suffix.replace("-", "_")] = entry
    _write_index(directory, index)
    return _pem(cert)


# --------------------------------------------------------------- using the PKI


@dataclass(frozen=True)
class ClientCredentials:
    """What the head-end needs to associate as one HLS 7 client."""

    client: int
    system_title: bytes
    signing_key: ec.EllipticCurvePrivateKey
    signing_certificate: bytes  # DER
    key_agreement_key: ec.EllipticCurvePrivateKey
    key_agreement_certificate: bytes  # DER


def load_client_credentials(directory: str | os.PathLike, client: int) -> ClientCredentials:
    directory = Path(directory)
    index = load_index(directory)
    entry = index["clients"].get(str(client))
    if entry is None:
        raise PkiError(f"the PKI has no certificates for client {client}")
    sign_cert, sign_key = _load_pair(directory, entry["signing"])
    ka_cert, ka_key = _load_pair(directory, entry["key_agreement"])
    der = serialization.Encoding.DER
    return ClientCredentials(client, bytes.fromhex(entry["system_title"]), sign_key,
                             sign_cert.public_bytes(der), ka_key, ka_cert.public_bytes(der))


def provision_store(directory: str | os.PathLike, store: CertificateStore,
                    now: _dt.datetime) -> list[ImportResult]:
    """Production step for a demo meter: install the DEMO root, import the three sub-CAs,
    pin each to the certificates §3.5.2 assigns it (Sub-CA 1: the meter's own; 2: clients
    1 and 2; 3: client 4) and import every client certificate the store has a slot for."""
    directory = Path(directory)
    index = load_index(directory)
    store.install_root((directory / index["root"]["certificate"]).read_bytes(), now)
    results = []
    for number in sorted(index["sub_cas"], key=int):
        result = store.import_certificate(
            (directory / index["sub_cas"][number]["certificate"]).read_bytes(), now)
        results.append(result)
        owners = ["server"] if number == "1" else [
            client for client, ca in _CLIENT_SUB_CA.items() if str(ca) == number]
        for owner in owners:
            if owner == "server" or owner in store.clients:
                store.pin_issuer(owner, result.certificate.subject)
    for client, entry in sorted(index["clients"].items(), key=lambda kv: int(kv[0])):
        if int(client) not in store.clients:
            continue
        for suffix in ("signing", "key_agreement"):
            results.append(store.import_certificate(
                (directory / entry[suffix]["certificate"]).read_bytes(), now, client=int(client)))
    return results

