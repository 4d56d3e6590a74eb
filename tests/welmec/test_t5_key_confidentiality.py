"""Extension T5 confidentiality of the keys that protect transmission: the meter's DLMS signing
private key (the one that signs readouts and HLS 7), every client's EK, AK, master key and
HLS secret, and the demo PKI's private keys are never readable over DLMS by any of the
meter's clients, live only in owner-only files, and never appear in the meter's log.

A real meter process (logging at INFO) is read by each client it wrote credentials for, every
readable attribute of every object its object list names; the secrets to look for come from the
credentials the meter wrote and from its store, read here without smartmeter code."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meterproc import MeterProcess, start_meter
from smartmeter.cosem.data import Data
from smartmeter.dlms.client import AssociationRefused, ClientError
from smartmeter.hes import readout
from smartmeter.hes.client import MeterClient, entry_selection
from smartmeter.hes.credentials import load_credentials
from welmec_support import client_link, public_link

# every client the meter wrote credentials for; fw_update's association is pre-established
# (§3.6.4: image blocks only, no AARQ), so the meter refuses its AARQ and it reads nothing
CLIENTS = ("public", "management", "data_readout", "plc_management", "fw_update", "installation",
           "maintenance", "certification")
SECRET_FIELDS = ("ek", "ak", "master_key", "hls_secret")


def start_verbose_meter(data_dir) -> MeterProcess:
    """`smartmeter -v meter run`: the meter logging everything it logs at INFO, into `output`."""
    return start_meter(data_dir, cli_options=("-v",))


def _octets(value: Data, out: list[bytes]) -> None:
    """Every byte string and text inside a value (nested arrays and structures)."""
    inner = value.value
    if isinstance(inner, (bytes, bytearray)):
        out.append(bytes(inner))
    elif isinstance(inner, str):
        out.append(inner.encode())
    elif isinstance(inner, (list, tuple)):
        for item in inner:
            if isinstance(item, Data):
                _octets(item, out)
    out.append(repr(value).encode())


def _private_scalar(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    n = key.private_numbers().private_value
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@pytest.fixture(scope="module")
def read_by_every_client(tmp_path_factory):
    """(data dir, {client: [octets read]}, {client: attributes read}, meter log, secrets by name)."""
    meter = start_verbose_meter(tmp_path_factory.mktemp("t5") / "meter-data")
    read: dict[str, list[bytes]] = {}
    counts: dict[str, int] = {}
    try:
        async def every_attribute(name):
            if name == "public":
                client = MeterClient(public_link(meter))
            else:
                credentials = load_credentials(meter.data_dir / "credentials" / f"{name}.json")
                client = MeterClient(client_link(meter, credentials), security=credentials.security)
            got: list[bytes] = []
            n = 0
            try:
                await client.connect()
            except AssociationRefused:
                return got, -1
            try:
                for info in await client.objects():
                    for attribute in info.readable:
                        # a profile's buffer: its first two entries (values, not keys, are in it)
                        selection = entry_selection(1, 2) if info.class_id == 7 and attribute == 2 else None
                        try:
                            value = await client.get(info.obis, attribute, class_id=info.class_id, selection=selection)
                        except ClientError:
                            continue
                        _octets(value, got)
                        n += 1
                if name == "data_readout":  # the signing key at work: a signed readout
                    got.append((await readout.capture(client, client.association.security.client_signing_key)).encode())
            finally:
                await client.close()
            return got, n

        for name in CLIENTS:
            read[name], counts[name] = asyncio.run(every_attribute(name))
    finally:
        meter.stop()
    data_dir = meter.data_dir
    secrets: dict[str, bytes] = {}
    for path in sorted((data_dir / "credentials").glob("*.json")):
        fields = json.loads(path.read_text())
        for field in SECRET_FIELDS:
            if fields.get(field):
                secrets[f"{path.stem}.{field}"] = bytes.fromhex(fields[field])
    for path in sorted((data_dir / "credentials" / "demo-pki").glob("*.key.pem")):
        secrets[path.name] = _private_scalar(path.read_bytes())
    with sqlite3.connect(f"file:{data_dir / 'meter.sqlite3'}?mode=ro", uri=True) as db:
        (signing_pem,) = db.execute("SELECT value FROM setting WHERE key = 'keys.signing.current'").fetchone()
    signing_pem = json.loads(signing_pem).encode()
    cert = next((data_dir / "credentials" / "demo-pki").glob("DEMO-meter-*-signing.pem"))
    # the stored key is the one the meter's certificate certifies: the key that signs readouts
    public = serialization.load_pem_private_key(signing_pem, None).public_key()
    assert public.public_numbers() == x509.load_pem_x509_certificate(cert.read_bytes()).public_key().public_numbers()
    secrets["meter DLMS signing key"] = _private_scalar(signing_pem)
    secrets["legal signing key"] = _private_scalar((data_dir / "meter-signing-key.pem").read_bytes())
    return data_dir, read, counts, "".join(meter.output), secrets


def _leaks(haystack: bytes, secrets: dict[str, bytes]) -> list[str]:
    lowered = haystack.lower()
    return [name for name, secret in secrets.items()
            if secret in haystack or secret.hex().encode() in lowered]


@pytest.mark.welmec("T5", "L5")
def test_no_client_reads_a_key_over_dlms(read_by_every_client):
    """Every readable attribute of every object, read by each of the meter's clients (and a signed readout), contains none of the meter's private keys or any client's EK, AK, master key or HLS secret."""
    _, read, counts, _, secrets = read_by_every_client
    assert set(read) == set(CLIENTS)
    # the meter holds a secret of every kind the test looks for
    assert any(n.endswith(".ek") for n in secrets) and any(n.endswith(".hls_secret") for n in secrets)
    assert "meter DLMS signing key" in secrets and all(len(s) >= 16 for s in secrets.values())
    assert [name for name in CLIENTS if counts[name] < 0] == ["fw_update"]  # pre-established: no AARQ
    for name in CLIENTS:
        assert counts[name] >= 10 or name == "fw_update", (name, counts[name])  # each client did read its objects
        assert _leaks(b"\x00".join(read[name]), secrets) == [], name
    # the security setup objects were among them: they show system titles, never keys
    everything = b"\x00".join(b for got in read.values() for b in got)
    assert bytes.fromhex("4845530000000001") in everything  # the management client's system title, in its setup


@pytest.mark.welmec("T5", "L5")
def test_key_files_are_owner_only(read_by_every_client):
    """The data directory and every directory under it are 0700; every file holding a key (the stores, the signing key, the credentials and the demo PKI's keys) is 0600."""
    data_dir, _, _, _, secrets = read_by_every_client
    directories = [data_dir] + [p for p in data_dir.rglob("*") if p.is_dir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in directories} == {0o700}
    holding = [data_dir / "meter.sqlite3", data_dir / "legal.sqlite3", data_dir / "meter-signing-key.pem",
               *(data_dir / "credentials").glob("*.json"), *(data_dir / "credentials" / "demo-pki").glob("*.key.pem")]
    assert len(holding) > 10
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in holding} == {p.name: 0o600 for p in holding}
    # control: the search finds a key where one is (the management client's credentials)
    assert "management.ek" in _leaks((data_dir / "credentials" / "management.json").read_bytes(), secrets)
    # every file whose bytes hold a secret is among the owner-only ones
    for path in data_dir.rglob("*"):
        if path.is_file() and _leaks(path.read_bytes(), secrets):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.welmec("T5")
def test_the_meters_log_holds_no_key(read_by_every_client):
    """The meter's log at INFO, over an association of every client and a signed readout, holds no key: neither its bytes nor their hex."""
    _, _, _, log, secrets = read_by_every_client
    assert "association" in log  # the log did record the associations
    assert _leaks(log.encode(), secrets) == []
