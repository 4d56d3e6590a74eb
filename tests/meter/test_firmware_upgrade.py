"""Whole firmware upgrades of a real meter process: the application part over the TCP wrapper,
both parts (the legally relevant one too) over HDLC, and what the meter shows afterwards.

Expectations come from the image: the identifiers after the activation are the versions and
digests its header declares, computed again here from the tree the image was built from."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

import firmware_support as fs
from meterproc import start_meter
from smartmeter.cosem.data import Data
from smartmeter.hes import firmware as upgrade
from smartmeter.hes.client import MeterClient
from smartmeter.hes.credentials import client_from_options
from smartmeter.legal import interface as legal

STANDARD_LOG = "0-0:99.98.0.255"
CERTIFICATION_LOG = "0-0:99.98.98.255"


def connect(meter, client: str = "management", hdlc: bool = False):
    def make():
        link, security = client_from_options(
            credentials=meter.data_dir / "credentials" / f"{client}.json", host="127.0.0.1",
            port=meter.hdlc_port if hdlc else meter.wrapper_port, hdlc=hdlc, client_sap=None, server_sap=None,
            physical_address=16, timeout=15)
        return MeterClient(link, mechanism=7 if client == "management" else 6, security=security)
    return make


def shown(firmware) -> dict:
    """part -> (identifier, digest hex) as the meter's identifier objects show them."""
    return {f.part: (f.identifier.decode(), f.signature.hex()) for f in firmware}


async def _upgrade(meter, image: bytes, *, hdlc: bool, client: str):
    parsed = legal.parse_firmware_image(image)
    make = connect(meter, client, hdlc)
    client_ = make()
    await client_.connect()
    try:
        report = await upgrade.upgrade(client_, image, parsed.identifier, activate="now", reconnect=make)
    finally:
        try:
            await client_.close()
        except Exception:  # noqa: BLE001 - the meter restarted under this association
            pass
    async with make() as again:
        _, log = await again.profile(STANDARD_LOG, rows=True)
        _, certification = await again.profile(CERTIFICATION_LOG, rows=True)
        status = (await again.get(upgrade.IMAGE_TRANSFER, 6, class_id=18)).value
    return report, [row[1] for row in log], certification, status


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("firmware-trees")
    factory = fs.factory_tree(base / "factory")
    application = fs.new_version(factory, base / "application", application_version="0.1.1")
    both = fs.new_version(factory, base / "both", legal_version="1.0.1", application_version="0.1.2")
    return factory, application, both


def test_an_application_upgrade_over_the_wrapper_changes_only_the_application_identifiers(trees, tmp_path):
    factory, application, _ = trees
    meter = start_meter(tmp_path / "m", software=factory)
    try:
        image = fs.signed_image(application, meter.data_dir, parts=(legal.PART_APPLICATION,))
        report, codes, certification, status = asyncio.run(_upgrade(meter, image, hdlc=False, client="management"))
        before, after = fs.tree_ids(factory), fs.tree_ids(application)
        assert status == 6 and report.status == 6
        assert shown(report.firmware)["application"] == after["application"]
        assert shown(report.firmware)["legal"] == before["legal"]  # untouched: a release key, no "-DEV"
        assert after["application"] != before["application"]
        assert codes.count(17) == 1 and codes.count(18) == 1 and 51 not in codes
        assert certification == []  # the legally relevant part did not change: nothing to certify
        ident = subprocess.run([sys.executable, "-m", "smartmeter", "id", "--data-dir", str(meter.data_dir), "--json"],
                               capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(factory)), check=True)
        out = json.loads(ident.stdout)
        assert (out["application"]["version"], out["application"]["sha256"]) == after["application"]
        assert out["firmware_slot"]
    finally:
        meter.stop()
    assert "passed its self-test" in "".join(meter.output)


def test_both_parts_upgraded_over_hdlc_by_the_maintenance_client_are_certified(trees, tmp_path):
    factory, _, both = trees
    meter = start_meter(tmp_path / "m", software=factory)
    try:
        image = fs.signed_image(both, meter.data_dir)
        report, codes, certification, status = asyncio.run(_upgrade(meter, image, hdlc=True, client="maintenance"))
        expected = fs.tree_ids(both)
        assert status == 6
        assert shown(report.firmware)["legal"] == expected["legal"]
        assert shown(report.firmware)["application"] == expected["application"]
        assert codes.count(17) == 1 and codes.count(18) == 1
        # certification protected log: event id, initiator's system title, firmware identifier
        events = [(row[1], row[2], row[3]) for row in certification]
        maintenance_title = json.loads((meter.data_dir / "credentials" / "maintenance.json").read_text())[
            "client_system_title"]
        assert [e[0] for e in events] == [17, 18]
        assert all(e[1] == bytes.fromhex(maintenance_title) for e in events)
        version, digest = expected["legal"]
        assert all(e[2] == f"{version} {digest[:8]}".encode() for e in events)
    finally:
        meter.stop()
