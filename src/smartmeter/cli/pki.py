"""`smartmeter pki`: a DEMO PKI, and provisioning a running meter through DLMS only.

    smartmeter pki init DIR [--suite 1|2]
    smartmeter pki provision --meter HOST:PORT --pki DIR --bootstrap CREDS_DIR --out CREDS_DIR

`provision` associates as the Management client (SAP 1, HLS 7) with the meter's current
credentials (the demo credentials the meter wrote at first start, `--bootstrap`), and then,
all through IC 64 Security setup / IC 15 Association LN methods:

 1. reads the meter's certificates (IC 64 attribute 6) and imports, with import_certificate
    (method 6), whatever it lacks of the PKI's root and sub-CAs (the Management client's own
    Security setup 0-0:43.0.1.255, its "current security setup") and HES signing
    certificates (the client's Security setup 0-0:43.0.N.255), removing (method 8, by serial) stale sub-CAs / client certificates only
    when their slots are full;
 2. asks the meter for a new signing key pair (generate_key_pair, method 4, key type 0 =
    digital signature) and its CSR (generate_certificate_request, method 5 -> DER), signs the
    CSR with the PKI's Sub-CA 1 and imports the meter certificate (method 6);
 3. transfers fresh EK/AK to every client with key_transfer (method 2: array of
    structure {key_id enum, key_wrapped octet-string}, wrapped with the master key; the
    Management client's own keys last, after which the association continues on them);
 4. sets fresh HLS secrets for the HLS 6 clients with change_HLS_secret (Association LN
    0-0:40.0.N.255 method 2, octet-string = the secret wrapped with the master key);
 5. writes CREDS_DIR/<client>.json (mode 0600) for every client, plus public.json.

Assumptions where the Blue Book / companion standard leave room (documented for the server
side): root and sub-CA certificates and the meter's own go to the Management client's
security setup (0-0:43.0.0.255 is read-only in our model); client certificates to the client's Security setup; a root the
meter does not know is refused there (§3.5.2.1: roots come with production or a firmware
update), so the meter must already trust the PKI's root; the master key is not changed.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.client import (
    POLICY_ALL_AUTHENTICATED, POLICY_ALL_AUTHENTICATED_ENCRYPTED, AccessDenied,
)
from smartmeter.dlms.apdu.common import ActionResult, DataAccessResult
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer, wrap_key
from smartmeter.dlms.security.suites import suite_parameters
from smartmeter.errors import SmartmeterError
from smartmeter.hes import pki as demo_pki
from smartmeter.hes.credentials import (
    Credentials, FileCounterStore, counter_path, find_credentials, load_credentials, write_credentials,
)

__all__ = ["pki_group", "provision", "ProvisionError", "ClientPlan", "CLIENT_PLANS"]

SECURITY_SETUP_CLASS = 64
ASSOCIATION_LN_CLASS = 15
CURRENT_SECURITY_SETUP = Obis.parse("0-0:43.0.0.255")

# IC 64 version 1 methods and attributes
KEY_TRANSFER, GENERATE_KEY_PAIR, GENERATE_CERTIFICATE_REQUEST, IMPORT_CERTIFICATE = 2, 4, 5, 6
REMOVE_CERTIFICATE = 8
CERTIFICATES_ATTRIBUTE = 6
CHANGE_HLS_SECRET = 2  # IC 15
KEY_PAIR_DIGITAL_SIGNATURE = 0
ENTITY_CA = 2
SUB_CA_CAPACITY = 3  # §3.5.2
HLS_SECRET_LENGTH = 32  # §3.6: 16..32 bytes; key wrap takes 16 or 32


class ProvisionError(SmartmeterError):
    """Provisioning cannot go on; the message says what the meter refused and why."""


@dataclass(frozen=True)
class ClientPlan:
    sap: int
    name: str
    mechanism: int
    policy: int
    interface: str
    holds_master_key: bool = False


#: The companion standard's clients (§3.6.2..3.6.8) and what their credentials say.
CLIENT_PLANS: dict[int, ClientPlan] = {plan.sap: plan for plan in (
    ClientPlan(1, "management", 7, POLICY_ALL_AUTHENTICATED_ENCRYPTED, "lan", True),
    ClientPlan(2, "data_readout", 7, POLICY_ALL_AUTHENTICATED_ENCRYPTED, "lan"),
    ClientPlan(4, "plc_management", 7, POLICY_ALL_AUTHENTICATED_ENCRYPTED, "lan"),
    ClientPlan(5, "installation", 6, POLICY_ALL_AUTHENTICATED, "wz"),
    ClientPlan(6, "maintenance", 6, POLICY_ALL_AUTHENTICATED_ENCRYPTED, "wz", True),
    ClientPlan(7, "certification", 6, POLICY_ALL_AUTHENTICATED_ENCRYPTED, "wz"),
)}
MANAGEMENT_SAP = 1


def security_setup(sap: int) -> Obis:
    return Obis.parse(f"0-0:43.0.{sap}.255")


def association_ln(sap: int) -> Obis:
    return Obis.parse(f"0-0:40.0.{sap}.255")


def _der(pem_or_der: bytes) -> x509.Certificate:
    if b"-----BEGIN" in pem_or_der:
        return x509.load_pem_x509_certificate(pem_or_der)
    return x509.load_der_x509_certificate(pem_or_der)


def _serial_bytes(cert: x509.Certificate) -> bytes:
    serial = cert.serial_number
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


def _identity(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(serial as IC 64 serial_number, issuer DER): how IC 64 names a certificate."""
    return _serial_bytes(cert), cert.issuer.public_bytes()


@dataclass(frozen=True)
class _Installed:
    entity: int
    certificate_type: int
    serial: bytes
    issuer: bytes
    subject: bytes


def _parse_certificates(value: Data) -> list[_Installed]:
    """IC 64 attribute 6: array of structure {entity, type, serial, issuer, subject, alt name}."""
    out = []
    try:
        for item in value.value:
            entity, ctype, serial, issuer, subject = (f.value for f in item.value[:5])
            out.append(_Installed(int(entity), int(ctype), bytes(serial), bytes(issuer), bytes(subject)))
    except (TypeError, ValueError, AttributeError, IndexError):
        raise ProvisionError("the meter's certificates attribute (IC 64 attribute 6) has an unexpected shape") from None
    return out


def _by_serial(serial: bytes, issuer: bytes) -> Data:
    """certificate_identification by serial (type 1): structure {1, structure {serial, issuer}}."""
    return Data.structure([Data.enum(1), Data.structure([Data.octet_string(serial), Data.octet_string(issuer)])])


class _Provisioner:
    def __init__(self, client, pki_dir: Path, out_dir: Path, bootstrap: Credentials, *,
                 clients: tuple[int, ...], now: dt.datetime | None, rng: Callable[[int], bytes],
                 say: Callable[[str], None]) -> None:
        self.client, self.pki_dir, self.out_dir, self.bootstrap = client, pki_dir, out_dir, bootstrap
        self.clients, self.now, self.rng, self.say = clients, now, rng, say
        self.index = demo_pki.load_index(pki_dir)
        self.suite = int(self.index["suite"])
        if bootstrap.security.suite != self.suite:
            raise ProvisionError(f"the PKI is for suite {self.suite}, the meter's credentials for suite "
                                 f"{bootstrap.security.suite}")
        if bootstrap.master_key is None:
            raise ProvisionError(f"{bootstrap.path}: master_key is needed to wrap the new keys")
        self.master_key = bootstrap.master_key
        # Server-wide operations (trust chain, the meter's key pair and certificate) go to
        # the security setup of the client we are associated as: for the Management client
        # that is its "Current Security Setup" (§3.6.2); the object 0-0:43.0.0.255 itself
        # is a read-only view in our model.
        self.server_setup = security_setup(bootstrap.client_sap)
        self.key_length = suite_parameters(self.suite).key_length

    async def _action(self, obis: Obis, method: int, parameters: Data | None, class_id: int, what: str) -> Any:
        try:
            return await self.client.action(obis, method, parameters, class_id=class_id)
        except AccessDenied as exc:
            raise ProvisionError(f"{what}: the meter refused ({exc.result.name.lower().replace('_', '-')})") from None

    async def _installed(self, obis: Obis) -> list[_Installed] | None:
        try:
            return _parse_certificates(await self.client.get(obis, CERTIFICATES_ATTRIBUTE, class_id=SECURITY_SETUP_CLASS))
        except AccessDenied:
            return None  # not readable for us: import and let the meter decide

    async def _import(self, obis: Obis, cert: x509.Certificate, what: str) -> None:
        der = cert.public_bytes(serialization.Encoding.DER)
        await self._action(obis, IMPORT_CERTIFICATE, Data.octet_string(der), SECURITY_SETUP_CLASS, f"import {what}")
        self.say(f"imported {what}")

    async def _remove(self, obis: Obis, serial: bytes, issuer: bytes, what: str) -> None:
        await self._action(obis, REMOVE_CERTIFICATE, _by_serial(serial, issuer), SECURITY_SETUP_CLASS, f"remove {what}")
        self.say(f"removed {what}")

    def _pki_cert(self, entry: dict) -> x509.Certificate:
        return _der((self.pki_dir / entry["certificate"]).read_bytes())

    # -- 1. trust chain and HES certificates ---------------------------------------------------
    async def certificates(self) -> None:
        installed = await self._installed(self.server_setup)
        present = None if installed is None else {(c.serial, c.issuer) for c in installed}
        root = self._pki_cert(self.index["root"])
        if present is None or _identity(root) not in present:
            try:
                await self._import(self.server_setup, root, "the PKI's root certificate")
            except ProvisionError as exc:
                raise ProvisionError(f"{exc}; the meter does not trust this PKI's root, and roots come with "
                                     "production or a firmware update (§3.5.2.1): use the meter's own DATA_DIR/credentials/demo-pki, "
                                     "or place this PKI there before the meter's first start") \
                    from None
        ours = [self._pki_cert(entry) for _, entry in sorted(self.index["sub_cas"].items(), key=lambda kv: int(kv[0]))]
        missing = [c for c in ours if present is None or _identity(c) not in present]
        if missing and installed is not None:
            ours_ids = {_identity(c) for c in ours} | {_identity(root)}
            sub_cas = [c for c in installed if c.entity == ENTITY_CA and c.subject != c.issuer]
            stale = [c for c in sub_cas if (c.serial, c.issuer) not in ours_ids]
            room = SUB_CA_CAPACITY - len(sub_cas)
            for old in stale[:max(0, len(missing) - room)]:
                await self._remove(self.server_setup, old.serial, old.issuer, "a stale sub-CA certificate")
        for cert in missing:
            await self._import(self.server_setup, cert, f"sub-CA {cert.subject.rfc4514_string()}")
        for sap in self.clients:
            entry = self.index["clients"].get(str(sap))
            if CLIENT_PLANS[sap].mechanism != 7 or entry is None:
                continue
            await self._client_certificate(sap, self._pki_cert(entry["signing"]))

    async def _client_certificate(self, sap: int, cert: x509.Certificate) -> None:
        obis = security_setup(sap)
        installed = await self._installed(obis)
        if installed is not None:
            if _identity(cert) in {(c.serial, c.issuer) for c in installed}:
                return
            in_use = None
            if sap == self.bootstrap.client_sap and self.bootstrap.client_cert_pem is not None:
                in_use = _identity(_der(self.bootstrap.client_cert_pem.read_bytes()))
            signing = [c for c in installed if c.entity == 1 and c.certificate_type == 0]
            if len(signing) >= 2:
                stale = next((c for c in signing if (c.serial, c.issuer) != in_use), None)
                if stale is not None:
                    await self._remove(obis, stale.serial, stale.issuer, f"an old certificate of client {sap}")
        await self._import(obis, cert, f"the signing certificate of client {sap}")

    # -- 2. the meter's signing key ------------------------------------------------------------
    async def meter_certificate(self) -> Path:
        await self._action(self.server_setup, GENERATE_KEY_PAIR, Data.enum(KEY_PAIR_DIGITAL_SIGNATURE),
                           SECURITY_SETUP_CLASS, "generate_key_pair")
        csr = await self._action(self.server_setup, GENERATE_CERTIFICATE_REQUEST,
                                 Data.enum(KEY_PAIR_DIGITAL_SIGNATURE), SECURITY_SETUP_CLASS,
                                 "generate_certificate_request")
        if not isinstance(csr, Data) or csr.type != DataType.OCTET_STRING:
            raise ProvisionError("generate_certificate_request: the meter returned no octet-string CSR")
        try:
            pem = demo_pki.sign_csr(self.pki_dir, csr.value, "meter-signing", now=self.now)
        except demo_pki.PkiError as exc:
            raise ProvisionError(f"the meter's CSR: {exc}") from None
        cert = _der(pem)
        title = self.client.association.server_system_title
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        if title is not None and cn.upper() != title.hex().upper():
            raise ProvisionError(f"the meter's CSR names system title {cn}, not {title.hex().upper()}")
        await self._import(self.server_setup, cert, "the meter's new signing certificate")
        path = self.out_dir / f"meter-{cn.upper()}-signing.pem"
        path.write_bytes(pem)
        return path

    # -- 3./4./5. keys, secrets and credentials ------------------------------------------------
    async def keys_and_credentials(self, server_cert: Path) -> list[Path]:
        written = []
        own = self.bootstrap.client_sap
        order = [sap for sap in self.clients if sap != own] + ([own] if own in self.clients else [])
        for sap in order:
            plan = CLIENT_PLANS[sap]
            ek, ak = self.rng(self.key_length), self.rng(self.key_length)
            transfer = encode_key_transfer([KeyTransfer.wrap(self.master_key, KeyId.GLOBAL_UNICAST_ENCRYPTION, ek),
                                            KeyTransfer.wrap(self.master_key, KeyId.AUTHENTICATION, ak)])
            try:
                await self.client.action(security_setup(sap), KEY_TRANSFER, transfer, class_id=SECURITY_SETUP_CLASS)
            except AccessDenied as exc:
                if exc.result in (DataAccessResult.OBJECT_UNDEFINED, ActionResult.OBJECT_UNDEFINED):
                    self.say(f"client {sap} ({plan.name}) does not exist on this meter: skipped")
                    continue
                raise ProvisionError(f"key_transfer for client {sap}: the meter refused "
                                     f"({exc.result.name.lower().replace('_', '-')})") from None
            secret = None
            if plan.name == "certification":
                # The legally relevant part holds this client's secret and accepts a new one only
                # from the certification client's own authenticated association (docs/decisions.md):
                # provisioning keeps the secret the meter was delivered with.
                secret = self._delivered_secret(plan)
                self.say(f"client {sap} ({plan.name}): HLS secret kept; it is changed only by that client itself")
            elif plan.mechanism == 6:
                secret = self.rng(HLS_SECRET_LENGTH)
                await self._action(association_ln(sap), CHANGE_HLS_SECRET,
                                   Data.octet_string(wrap_key(self.master_key, secret)), ASSOCIATION_LN_CLASS,
                                   f"change_HLS_secret for client {sap}")
            path = self._write(plan, ek, ak, secret, server_cert)
            written.append(path)
            self.say(f"new keys for client {sap} ({plan.name}): {path}")
            if sap == own:
                # The meter answered with the old key and uses the new ones from now on
                # (§3.5.3), with its counters reset: so do we, on the new file's counter.
                self.client.association.rekey(ek=ek, ak=ak, counters=FileCounterStore(counter_path(path)))
        public = self.out_dir / "public.json"
        write_credentials(public, client_sap=16, server_sap=self.bootstrap.server_sap, authentication=0,
                          name="public", interface="lan")
        written.append(public)
        return written

    def _delivered_secret(self, plan: ClientPlan) -> bytes:
        from smartmeter.hes.credentials import CredentialsError, load_credentials

        path = Path(self.bootstrap.path).parent / f"{plan.name}.json"
        try:
            secret = load_credentials(path).security.hls_secret
        except (CredentialsError, OSError) as exc:
            raise ProvisionError(f"the {plan.name} client's HLS secret is not changed by provisioning, and "
                                 f"{path} (its delivered credentials) cannot be read: {exc}") from None
        if secret is None:
            raise ProvisionError(f"{path}: no hls_secret for the {plan.name} client")
        return secret

    def _write(self, plan: ClientPlan, ek: bytes, ak: bytes, secret: bytes | None, server_cert: Path) -> Path:
        entry = self.index["clients"].get(str(plan.sap)) if plan.mechanism == 7 else None
        title = (bytes.fromhex(entry["system_title"]) if entry is not None
                 else demo_pki.demo_client_system_title(plan.sap))
        path = self.out_dir / f"{plan.name}.json"
        write_credentials(
            path, client_sap=plan.sap, server_sap=self.bootstrap.server_sap, authentication=plan.mechanism,
            security_suite=self.suite, security_policy=plan.policy, client_system_title=title,
            server_system_title=self.client.association.server_system_title, ek=ek, ak=ak, hls_secret=secret,
            master_key=self.master_key if plan.holds_master_key else None,
            client_key_pem=self.pki_dir / entry["signing"]["private_key"] if entry else None,
            client_cert_pem=self.pki_dir / entry["signing"]["certificate"] if entry else None,
            server_cert_pem=server_cert if plan.mechanism == 7 else None,
            name=plan.name, interface=plan.interface, reset_counter=True,
        )
        return path


async def provision(client, pki_dir: str | os.PathLike, out_dir: str | os.PathLike, bootstrap: Credentials, *,
                    clients: tuple[int, ...] = tuple(CLIENT_PLANS), now: dt.datetime | None = None,
                    rng: Callable[[int], bytes] = secrets.token_bytes,
                    say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Provision the meter behind `client` (an associated `MeterClient`, or anything with
    its `get`/`action`/`association`) from the DEMO PKI in `pki_dir`; returns the files
    written to `out_dir`. `bootstrap` are the credentials `client` associated with."""
    for sap in clients:
        if sap not in CLIENT_PLANS:
            raise ProvisionError(f"client {sap} is not one of {sorted(CLIENT_PLANS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    job = _Provisioner(client, Path(pki_dir), out, bootstrap, clients=tuple(clients), now=now, rng=rng, say=say)
    await job.certificates()
    server_cert = await job.meter_certificate()
    return await job.keys_and_credentials(server_cert)


# --------------------------------------------------------------------------------------- CLI


@click.group("pki")
def pki_group() -> None:
    """A DEMO PKI (NOT FOR PRODUCTION), and provisioning a meter from it over DLMS."""


@pki_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--suite", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="Security suite: 1 = P-256/SHA-256, 2 = P-384/SHA-384.")
def pki_init(directory: Path, suite: str) -> None:
    """Create a DEMO root, three sub-CAs and the HES client certificates in DIRECTORY."""
    index = demo_pki.init_pki(directory, int(suite))
    click.echo(f"DEMO PKI (suite {suite}) in {directory}: root, {len(index['sub_cas'])} sub-CAs, "
               f"certificates for clients {', '.join(sorted(index['clients'], key=int))}")
    click.echo("NOT FOR PRODUCTION: the private keys are unencrypted on disk (mode 0600).")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"--meter {text!r} is not HOST:PORT (e.g. 127.0.0.1:4059)")
    return host.strip("[]"), int(port)


def _client_list(text: str | None) -> tuple[int, ...]:
    if text is None:
        return tuple(CLIENT_PLANS)
    try:
        saps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ProvisionError(f"--clients {text!r} is not a list of client SAPs like 1,2,5") from None
    for sap in saps:
        if sap not in CLIENT_PLANS:
            raise ProvisionError(f"--clients: {sap} is not one of {', '.join(map(str, CLIENT_PLANS))}")
    return saps


@pki_group.command("provision")
@click.option("--meter", "meter_address", required=True, metavar="HOST:PORT",
              help="The meter's LAN/WAN interface (IEC 62056-47 wrapper).")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The DEMO PKI directory (from `smartmeter pki init`).")
@click.option("--bootstrap", "bootstrap_dir", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The meter's current credentials (e.g. DATA_DIR/credentials): the Management client's is used.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the new credentials files, one per client.")
@click.option("--clients", default=None, metavar="LIST", help="Client SAPs to provision [default: 1,2,4,5,6,7].")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for an answer.")
def pki_provision(meter_address: str, pki_dir: Path, bootstrap_dir: Path, out_dir: Path, clients: str | None,
                  timeout: float) -> None:
    """Install the PKI's certificates and fresh keys in a running meter, through DLMS only."""
    from smartmeter.hes.client import MeterClient
    from smartmeter.hes.connection import WrapperLink

    host, port = _host_port(meter_address)
    saps = _client_list(clients)
    if out_dir.resolve() == bootstrap_dir.resolve():
        raise ProvisionError("--out must differ from --bootstrap (the bootstrap credentials stay valid until "
                             "provisioning succeeded)")
    bootstrap = load_credentials(find_credentials(bootstrap_dir, MANAGEMENT_SAP))
    link = WrapperLink(host, port, bootstrap.client_sap, bootstrap.server_sap, timeout)

    async def go() -> list[Path]:
        async with MeterClient(link, security=bootstrap.security) as client:
            return await provision(client, pki_dir, out_dir, bootstrap, clients=saps, say=click.echo)

    written = asyncio.run(go())
    click.echo(f"{len(written)} credentials files in {out_dir}; try: smartmeter client --credentials "
               f"{out_dir / 'management.json'} objects")
