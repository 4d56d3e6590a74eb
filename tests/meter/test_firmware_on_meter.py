"""Firmware activation on a real meter process: new software that cannot start is rolled back by the
meter itself, and the energy of the seconds an activation restart takes is not lost.

Each meter runs a factory copy of the source tree (tests/firmware_support.py); the expectations
(identifiers, energy) come from the trees and the load the test sets, computed here."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import firmware_support as fs
from meterproc import start_meter
from smartmeter.hes import firmware as upgrade
from smartmeter.hes.client import MeterClient
from smartmeter.hes.credentials import client_from_options
from smartmeter.legal import interface as legal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "legal"))
import test_firmware_verification as verification  # noqa: E402 - identification computed with hashlib

STANDARD_LOG = "0-0:99.98.0.255"
CERTIFICATION_LOG = "0-0:99.98.98.255"
IMAGE_TRANSFER = "0-0:44.0.0.255"
IDENTIFIERS = {"legal": ("1-0:0.2.0.255", "1-0:0.2.8.255"), "application": ("1-1:0.2.0.255", "1-1:0.2.8.255")}
A_PLUS = "1-0:1.8.0.255"
ACTIVATION_FAILED = 7
EVENT_READY, EVENT_FAILED = 17, 51


def connect(meter):
    """A factory of Management client associations over the wrapper (the driver reconnects with it)."""
    def make():
        link, security = client_from_options(
            credentials=meter.data_dir / "credentials" / "management.json", host="127.0.0.1",
            port=meter.wrapper_port, hdlc=False, client_sap=None, server_sap=None, physical_address=16, timeout=15)
        return MeterClient(link, mechanism=7, security=security)
    return make


def management_title(meter) -> bytes:
    return bytes.fromhex(json.loads((meter.data_dir / "credentials" / "management.json").read_text())[
        "client_system_title"])


async def _upgrade(meter, image: bytes):
    make = connect(meter)
    client = make()
    await client.connect()
    try:
        return await upgrade.upgrade(client, image, legal.parse_firmware_image(image).identifier, activate="now",
                                     reconnect=make)
    finally:
        try:
            await client.close()
        except Exception:  # noqa: BLE001 - the meter restarted under this association
            pass


async def _read_state(meter) -> dict:
    async with connect(meter)() as client:
        shown = {}
        for part, (identifier, signature) in IDENTIFIERS.items():
            shown[part] = ((await client.get(identifier, 2, class_id=1)).value.decode(),
                           (await client.get(signature, 2, class_id=1)).value.hex())
        _, log = await client.profile(STANDARD_LOG, rows=True)
        _, certification = await client.profile(CERTIFICATION_LOG, rows=True)
        status = (await client.get(IMAGE_TRANSFER, 6, class_id=18)).value
    return {"identifiers": shown, "codes": [row[1] for row in log], "certification": certification, "status": status}


async def _a_plus(meter) -> tuple[int, float, float]:
    """(+A in Wh, wall time before the request, wall time after the answer)."""
    async with connect(meter)() as client:
        before = time.time()
        value = (await client.get(A_PLUS, 2, class_id=3)).value
        return value, before, time.time()


def tree_identifiers(root: Path) -> dict:
    """part -> (identifier, digest hex) the meter should show running the tree at `root`."""
    files = verification.package_files(root / "smartmeter")
    versions = verification.tree_versions(root)
    return {part: (versions[part], verification.part_digest(files, part)) for part in ("legal", "application")}


def metrological_events(data_dir: Path) -> list[tuple[int, dict]]:
    with sqlite3.connect(f"file:{data_dir / 'legal.sqlite3'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT kind, payload FROM chain_entry WHERE tbl = 'metrological' ORDER BY seq").fetchall()
    return [(kind, json.loads(payload)) for kind, payload in rows]


def _break_runtime(package: Path) -> None:
    with open(package / "meter" / "runtime.py", "a") as f:
        f.write("\nraise RuntimeError('this build of the meter cannot start')\n")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("firmware-on-meter")
    factory = fs.factory_tree(base / "factory")
    broken = fs.new_version(factory, base / "broken", legal_version="1.0.1", application_version="0.1.1",
                            edit=_break_runtime)
    application = fs.new_version(factory, base / "application", application_version="0.1.1")
    return factory, broken, application


@pytest.mark.welmec("D1", "D4")
def test_software_that_cannot_start_is_rolled_back_by_the_meter_itself(trees, tmp_path):
    """A verified image whose software fails at import is installed, fails its trial start, and the meter comes back on its previous software by itself: image transfer status 7, event 51 in the standard and the certification log (after 17, with the initiator and the downloaded identifier), the identifiers those of the previous software."""
    factory, broken, _ = trees
    meter = start_meter(tmp_path / "m", software=factory)
    try:
        image = fs.signed_image(broken, meter.data_dir)
        energy_before, _, _ = asyncio.run(_a_plus(meter))
        with pytest.raises(upgrade.UpgradeError, match="did not start"):
            asyncio.run(_upgrade(meter, image))
        state = asyncio.run(_read_state(meter))
        assert meter.process.poll() is None  # the same meter process: it restarted itself
        assert state["status"] == ACTIVATION_FAILED
        assert state["identifiers"] == tree_identifiers(factory) != tree_identifiers(broken)
        assert state["codes"].count(EVENT_READY) == 1 and state["codes"].count(EVENT_FAILED) == 1
        assert state["codes"].index(EVENT_READY) < state["codes"].index(EVENT_FAILED)
        downloaded = verification.legal_id(broken)
        assert [(row[1], row[2], row[3]) for row in state["certification"]] == [
            (EVENT_READY, management_title(meter), downloaded), (EVENT_FAILED, management_title(meter), downloaded)]
        record = legal.read_boot_record(meter.data_dir)
        assert record["active"] is None and record["trial"] is None  # the factory installation runs
        assert record["last"]["outcome"] == "failed" and "self-test" in record["last"]["reason"]
        assert not (meter.data_dir / legal.SLOTS_DIR / record["last"]["slot"]).exists()
        energy_after, _, _ = asyncio.run(_a_plus(meter))
        assert energy_after >= energy_before
    finally:
        meter.stop()
    assert "this build of the meter cannot start" in "".join(meter.output)


LOAD_W = 36_000.0  # 10 Wh a second: one second's worth is ten times the register's resolution
SECOND_WH = LOAD_W / 3600


def set_load(data_dir: Path, watts: float) -> None:
    subprocess.run([sys.executable, "-m", "smartmeter", "sim", "load", "--power", f"{watts:g}", "--data-dir",
                    str(data_dir)], check=True, capture_output=True, timeout=30)


@pytest.mark.welmec("D1")
def test_energy_across_an_activation_restart_is_what_the_load_drew(trees, tmp_path):
    """Under a fixed load, +A read after an activation restart minus +A read before is the load times the wall time between the reads, within one second's worth: metering goes on through transfer and verification, and the seconds of the restart are caught up (event 215 in the metrological log holds the gap)."""
    factory, _, application = trees
    meter = start_meter(tmp_path / "m", software=factory)
    try:
        set_load(meter.data_dir, LOAD_W)
        image = fs.signed_image(application, meter.data_dir, parts=(legal.PART_APPLICATION,))
        time.sleep(2.0)  # the meter learns a load at its next tick (once a second)
        # the load is what is measured: two readings two seconds apart grow by two seconds' worth
        first = asyncio.run(_a_plus(meter))
        time.sleep(2.0)
        second = asyncio.run(_a_plus(meter))
        assert (second[2] - first[1] + 0.5) * SECOND_WH >= second[0] - first[0] >= \
            (second[1] - first[2] - 0.5) * SECOND_WH
        before = asyncio.run(_a_plus(meter))
        report = asyncio.run(_upgrade(meter, image))
        after = asyncio.run(_a_plus(meter))
        assert report.status == 6
        grown = after[0] - before[0]
        shortest, longest = after[1] - before[2], after[2] - before[1]
        assert shortest * SECOND_WH - SECOND_WH - 1 <= grown <= longest * SECOND_WH + SECOND_WH + 1, (
            f"+A grew {grown} Wh in {shortest:.1f}..{longest:.1f} s at {LOAD_W:g} W")
        gaps = [fields for kind, fields in metrological_events(meter.data_dir) if kind == legal.EVENT_WARM_RESTART]
        assert len(gaps) == 1 and 0 < gaps[0]["gap_ms"] < shortest * 1000
    finally:
        meter.stop()


def _crash_once_serving(package: Path) -> None:
    """The new software starts, opens its interfaces, and then fails (a fault only serving shows)."""
    main = package / "cli" / "main.py"
    text = main.read_text()
    marker = "    stop = asyncio.Event()\n"
    assert text.count(marker) == 1
    main.write_text(text.replace(marker, "    raise RuntimeError('this build fails once it serves')\n" + marker))


@pytest.mark.welmec("D1")
def test_software_that_fails_once_serving_is_left_by_the_meter_itself(trees, tmp_path):
    """New software that passes its trial but fails before it has served 5 s is started again by the meter itself, and after two such starts the meter returns to the previous software on its own (same process throughout): status 7, event 51 after 17, the previous identifiers."""
    factory = trees[0]
    failing = fs.new_version(factory, tmp_path / "failing", application_version="0.1.1", edit=_crash_once_serving)
    meter = start_meter(tmp_path / "m", software=factory)
    try:
        image = fs.signed_image(failing, meter.data_dir, parts=(legal.PART_APPLICATION,))
        with pytest.raises(upgrade.UpgradeError):  # the meter comes back, but not on the new software
            asyncio.run(_upgrade(meter, image))
        state = asyncio.run(_read_state(meter))
        assert meter.process.poll() is None  # the same meter process, restarted by itself
        assert state["status"] == ACTIVATION_FAILED
        assert state["identifiers"] == tree_identifiers(factory) != tree_identifiers(failing)
        assert state["codes"].count(EVENT_READY) == 1 and state["codes"].count(EVENT_FAILED) == 1
        record = legal.read_boot_record(meter.data_dir)
        assert record["active"] is None and record["probation"] is None
        assert record["last"]["outcome"] == "failed" and "before it had served" in record["last"]["reason"]
    finally:
        meter.stop()
    assert "".join(meter.output).count("this build fails once it serves") == 2
