"""Our head-end against our meter, every client of §3.6 as the demo provisioning sets it up,
provisioning through DLMS only, dedicated keys, and the CLI with credentials files."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from meterproc import start_meter
from smartmeter.cli.pki import pki_group
from smartmeter.dlms.client import AssociationRefused, ClientError
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import HdlcLink, WrapperLink
from smartmeter.hes.credentials import load_credentials

CLIENTS = ["public", "management", "data_readout", "plc_management", "installation", "maintenance", "certification"]


@pytest.fixture(scope="module")
def secured_meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("secured"))
    yield m
    m.stop()


def _link(meter, credentials):
    if credentials.interface == "wz":
        return HdlcLink("127.0.0.1", meter.hdlc_port, credentials.client_sap, credentials.server_sap, 0x10, 10)
    return WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap, 10)


def _read(meter, path, *, dedicated: bool = False):
    credentials = load_credentials(path)
    security = credentials.security
    if dedicated:
        security = dataclasses.replace(security, use_dedicated_key=True)

    async def go():
        async with MeterClient(_link(meter, credentials), security=security) as client:
            objects = await client.objects()
            ldn = await client.get("0-0:42.0.0.255", 2, class_id=1)
            return objects, ldn.value, client.association.dedicated_key is not None

    return asyncio.run(go())


@pytest.mark.parametrize("client", CLIENTS)
def test_every_demo_client_associates_with_its_mechanism_and_policy(secured_meter, client):
    path = secured_meter.data_dir / "credentials" / f"{client}.json"
    fields = json.loads(path.read_text())
    assert "DEMO" in fields["note"]
    objects, ldn, _ = _read(secured_meter, path)
    assert ldn == b"KFM1000100000001"
    assert objects  # each sees its own part of the model
    # twice: the client's invocation counter persisted and moved on
    _read(secured_meter, path)


def test_dedicated_keys_with_a_long_profile_read(secured_meter):
    credentials = load_credentials(secured_meter.data_dir / "credentials" / "management.json")
    security = dataclasses.replace(credentials.security, use_dedicated_key=True)

    async def go():
        async with MeterClient(_link(secured_meter, credentials), security=security) as client:
            columns, buffer = await client.profile("1-0:99.1.0.255", entries=(1, 200))
            return len(buffer.value), client.association.dedicated_key is not None

    assert asyncio.run(go()) == (200, True)


def test_profile_rows_match_the_data_tree(secured_meter):
    """The bulk row decoder and the generic decoder agree on a real, block-transferred buffer."""
    credentials = load_credentials(secured_meter.data_dir / "credentials" / "management.json")

    async def go():
        async with MeterClient(_link(secured_meter, credentials), security=credentials.security) as client:
            _, tree = await client.profile("1-0:99.1.0.255", entries=(1, 200))
            _, rows = await client.profile("1-0:99.1.0.255", entries=(1, 200), rows=True)
            _, one = await client.profile("1-0:99.1.0.255", entries=(1, 1), rows=True)
            return tree, rows, one

    tree, rows, one = asyncio.run(go())
    assert len(rows) == 200 and all(isinstance(row, tuple) for row in rows)
    assert rows == [tuple(item.value for item in row.value) for row in tree.value]
    assert one == rows[:1]


def test_wrong_credentials_are_refused(secured_meter, tmp_path):
    original = secured_meter.data_dir / "credentials" / "maintenance.json"
    fields = json.loads(original.read_text())
    for name in ("server_cert_pem", "client_key_pem", "client_cert_pem"):  # paths are relative to the file
        if fields.get(name):
            fields[name] = str(original.parent / fields[name])
    fields["hls_secret"] = "00" * 32
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(fields))
    forged.chmod(0o600)
    with pytest.raises(ClientError):
        _read(secured_meter, forged)


def test_provisioning_through_dlms_only(tmp_path):
    """`pki provision` sets certificates and fresh keys through the IC 64 methods; the new
    credentials work and the demo ones stop working."""
    meter = start_meter(tmp_path / "meter")
    try:
        demo = meter.data_dir / "credentials"
        out = tmp_path / "provisioned"
        result = CliRunner().invoke(pki_group, ["provision", "--meter", f"127.0.0.1:{meter.wrapper_port}",
                                                "--pki", str(demo / "demo-pki"), "--bootstrap", str(demo),
                                                "--out", str(out)])
        assert result.exit_code == 0, result.output
        for client in CLIENTS:
            assert _read(meter, out / f"{client}.json")[1] == b"KFM1000100000001"
        for client in ("management", "data_readout"):
            with pytest.raises(AssociationRefused):
                _read(meter, demo / f"{client}.json")
    finally:
        meter.stop()


def test_cli_with_credentials(secured_meter):
    creds = secured_meter.data_dir / "credentials"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "smartmeter", "client", *args], capture_output=True, text=True,
                              timeout=60)

    result = cli("--port", str(secured_meter.wrapper_port), "--credentials", str(creds / "management.json"),
                 "get", "1-0:1.8.0.255")
    assert result.returncode == 0 and result.stdout.strip().endswith("Wh"), result.stderr
    result = cli("--port", str(secured_meter.hdlc_port), "--credentials", str(creds / "installation.json"),
                 "get", "0-0:1.0.0.255")
    assert result.returncode == 0, result.stderr
    result = cli("--port", str(secured_meter.wrapper_port), "--credentials", str(creds / "management.json"),
                 "--client-sap", "2", "objects")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "conflicts" in result.stderr
