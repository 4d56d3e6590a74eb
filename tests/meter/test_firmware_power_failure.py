"""kill -9 (the meter's power failure) at random instants of a firmware upgrade: during the
transfer, the verification, the activation and the restart on the new software.

After each kill the meter is started again with its factory command, as a power return would.
It must run either the old software or the new one, never half of each (the image carries both
parts, so a half would show one part's new identifier beside the other's old one), and the
energy registers never go back. At the end the same upgrade, resumed, completes."""
from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import firmware_support as fs
from meterproc import start_meter
from smartmeter.hes import firmware as upgrade
from smartmeter.hes.credentials import client_from_options, load_credentials
from smartmeter.hes.resync import resynchronise
from smartmeter.legal import interface as legal
from test_firmware_upgrade import connect, shown

ROUNDS = 4
WINDOW = 4.0  # s: an upgrade of this image, its activation and the restart take about this long


def _identifiers(meter) -> dict:
    async def read():
        async with connect(meter)() as client:
            return shown(await upgrade.read_active_firmware(client))
    return asyncio.run(read())


def _continue_above_the_meters_counter(meter) -> None:
    """After a power failure the meter refuses one reserved block of counters (docs/decisions.md):
    the head-end reads where it stands and continues above it, as `smartmeter client` does."""
    credentials = meter.data_dir / "credentials" / "management.json"
    public, _ = client_from_options(credentials=None, host="127.0.0.1", port=meter.wrapper_port, hdlc=False,
                                    client_sap=16, server_sap=1, physical_address=16, timeout=15)
    asyncio.run(resynchronise(public, load_credentials(credentials)))


def _upgrade_in_background(meter, image: bytes, identifier: str) -> threading.Thread:
    def run():
        make = connect(meter)

        async def go():
            client = make()
            await client.connect()
            await upgrade.upgrade(client, image, identifier, activate="now", reconnect=make, restart_timeout=20)
        try:
            asyncio.run(go())
        except Exception:  # noqa: BLE001 - the meter is killed under it: any link error is expected
            pass
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.welmec("D1")
def test_a_kill_at_any_instant_of_an_upgrade_leaves_the_old_or_the_new_software_whole(tmp_path):
    """kill -9 of a real meter at random instants of an upgrade of both parts (transfer, verification, activation, restart): after each power return it runs the old software or the new one whole, never one part of each; +A never goes back; the upgrade resumed completes on the new software."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    factory = fs.factory_tree(tmp_path / "factory")
    new = fs.new_version(factory, tmp_path / "new", legal_version="1.0.1", application_version="0.1.1")
    old_ids, new_ids = fs.tree_ids(factory), fs.tree_ids(new)
    assert old_ids["legal"] != new_ids["legal"] and old_ids["application"] != new_ids["application"]
    meter = start_meter(tmp_path / "m", software=factory)
    # a load that registers a watt-hour a second, so that a register going back would show
    subprocess.run([sys.executable, "-m", "smartmeter", "sim", "load", "--power", "3600", "--data-dir",
                    str(meter.data_dir)], check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(factory)))
    ports = (meter.wrapper_port, meter.hdlc_port)
    image = fs.signed_image(new, meter.data_dir)
    identifier = legal.parse_firmware_image(image).identifier
    energy = [meter.energy_wh("a_plus")]
    seen = []
    try:
        for round_number in range(ROUNDS):
            # each round kills in its own stretch of the upgrade, so every phase is hit
            delay = rng.uniform(round_number * WINDOW / ROUNDS, (round_number + 1) * WINDOW / ROUNDS)
            worker = _upgrade_in_background(meter, image, identifier)
            time.sleep(delay)
            meter.power_failure()
            worker.join(30)
            energy.append(meter.energy_wh("a_plus"))
            meter = start_meter(tmp_path / "m", software=factory, ports=ports)
            _continue_above_the_meters_counter(meter)
            ids = {part: (version.removesuffix("-DEV"), digest) for part, (version, digest) in _identifiers(meter).items()}
            seen.append((round(delay, 2), "new" if ids == {p: new_ids[p] for p in ids} else "old"))
            assert ids in ({p: old_ids[p] for p in ids}, {p: new_ids[p] for p in ids}), (seed, seen, ids)
            energy.append(meter.energy_wh("a_plus"))
        if seen[-1][1] == "old":  # the upgrade, resumed where the kills left it, completes
            _upgrade_in_background(meter, image, identifier).join(120)
        final = _identifiers(meter)
        assert {p: (v.removesuffix("-DEV"), d) for p, (v, d) in final.items()} == {p: new_ids[p] for p in final}, (seed, seen)
        energy.append(meter.energy_wh("a_plus"))
        # however many installations the kills left behind, only the running and the previous stay
        assert len(list((meter.data_dir / legal.SLOTS_DIR).iterdir())) <= 2
    finally:
        meter.stop()
    assert energy == sorted(energy) and energy[-1] > energy[0], (seed, seen, energy)
