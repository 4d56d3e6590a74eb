"""Independent clients read meters of a simulated fleet (`smartmeter sim fleet`, run as its own
process) over real sockets with HLS 5 (GMAC), security suite 0, authenticated and encrypted:
gurux-dlms reads +A, the clock and load profile 1 by entry and by range; dlms-cosem, a
strict client that checks every counter of the meter, reads +A and -A. Values must be what
docs/fleet.md's formula gives for the meter time of the read, computed here from the manifest.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.io import BlockingTcpIO, TcpTransport
from dlms_cosem.security import HighLevelSecurityGmacAuthentication
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister

from event_log_peers import plain
from gurux_secure_peer import GuruxSecureClient

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

SPEED = 3600  # four rows of load profile per real second
CLIENT_TITLE = "4755520000000001"


def free_ports(count: int) -> int:
    import services

    return services.free_port_block(count)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Ten meters, meter time from a quarter hour at 3600x real time; the manifest once they listen."""
    here = tmp_path_factory.mktemp("fleet")
    manifest = here / "manifest.json"
    process = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "fleet", "--meters", "10", "--seed", "21",
                                "--speed", str(SPEED), "--start", "2026-06-01T00:00Z", "--base-port",
                                str(free_ports(10)), "--manifest", str(manifest), "--report", str(here / "report.json")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=here)
    deadline = time.monotonic() + 60
    while not manifest.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the fleet did not start"
        time.sleep(0.1)
    document = json.loads(manifest.read_text())
    yield document, here
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)


# -- docs/fleet.md's formula ---------------------------------------------------------------------
def meter_time(manifest: dict) -> float:
    return manifest["start_epoch"] + manifest["speed"] * (time.time() - manifest["real_start"])


def energy(power: int, start: float, t: float) -> int:
    return math.floor(power * (t - start) / 3600)


def row(manifest: dict, i: int, boundary: int) -> list:
    start = manifest["start_epoch"]
    when = dt.datetime.fromtimestamp(boundary, dt.timezone.utc)
    stamp = struct.pack(">HBBBBBBBhB", when.year, when.month, when.day, when.isoweekday(), when.hour, when.minute,
                        0, 0, 0, 0x04)  # UTC, simulated time: "different clock base"
    status = 0x20 if (boundary // 900 + i) % 97 == 0 else 0
    return [stamp, status, energy(100 + (i * 37) % 900, start, boundary), energy((i * 53) % 500, start, boundary)]


def boundaries(manifest: dict, rows: int) -> list[int]:
    """The first `rows` capture instants, once the meter time has passed them."""
    first = int(manifest["start_epoch"])
    while meter_time(manifest) < first + rows * 900:
        time.sleep(0.1)
    return [first + 900 * k for k in range(rows)]


def credentials_file(manifest: dict, i: int, where: Path) -> Path:
    m = manifest["meters"][i]
    path = where / f"meter{i}.json"
    path.write_text(json.dumps({"client_sap": m["client_sap"], "authentication": m["mechanism"],
                                "security_suite": m["suite"], "security_policy": m["policy"],
                                "client_system_title": CLIENT_TITLE, "ek": m["ek"], "ak": m["ak"]}))
    return path


def healthy(manifest: dict) -> list[int]:
    return [m["index"] for m in manifest["meters"] if not m["faults"]]


def test_gurux_reads_registers_clock_and_profile_with_hls5(fleet):
    manifest, where = fleet
    i = healthy(manifest)[3]
    client = GuruxSecureClient(manifest["meters"][i]["port"], credentials_file(manifest, i, where), 1)
    client.associate()
    try:
        before = meter_time(manifest)
        a_plus = client.read(GXDLMSRegister("1.0.1.8.0.255"), 2)
        after = meter_time(manifest)
        start = manifest["start_epoch"]
        assert energy(100 + (i * 37) % 900, start, before) <= a_plus <= energy(100 + (i * 37) % 900, start, after)
        before = meter_time(manifest)
        clock = client.read(GXDLMSClock("0.0.1.0.0.255"), 2)
        assert int(before) - 1 <= clock.value.timestamp() <= meter_time(manifest)
        wanted = boundaries(manifest, 8)
        profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
        client.read(profile, 3)
        reply = client.transfer(client.client.readRowsByEntry(profile, 2, 3))
        assert plain(reply.value) == [row(manifest, i, b) for b in wanted[1:4]]
        start_at = dt.datetime.fromtimestamp(wanted[4], dt.timezone.utc)
        end_at = dt.datetime.fromtimestamp(wanted[7], dt.timezone.utc)
        reply = client.transfer(client.client.readRowsByRange(profile, start_at, end_at))
        assert plain(reply.value) == [row(manifest, i, b) for b in wanted[4:8]]
    finally:
        client.close()


def test_dlms_cosem_reads_registers_with_hls5(fleet):
    manifest, _ = fleet
    i = healthy(manifest)[5]
    m = manifest["meters"][i]
    transport = TcpTransport(client_logical_address=1, server_logical_address=1,
                             io=BlockingTcpIO("127.0.0.1", m["port"]))
    client = DlmsClient(transport=transport, authentication=HighLevelSecurityGmacAuthentication(challenge_length=16),
                        encryption_key=bytes.fromhex(m["ek"]), authentication_key=bytes.fromhex(m["ak"]),
                        client_system_title=bytes.fromhex(CLIENT_TITLE), security_suite=0,
                        client_initial_invocation_counter=1)
    start = manifest["start_epoch"]
    with client.session() as session:
        before = meter_time(manifest)
        raw_plus = session.get(cosem.CosemAttribute(interface=enumerations.CosemInterface.REGISTER,
                                                    instance=cosem.Obis(1, 0, 1, 8, 0, 255), attribute=2))
        raw_minus = session.get(cosem.CosemAttribute(interface=enumerations.CosemInterface.REGISTER,
                                                     instance=cosem.Obis(1, 0, 2, 8, 0, 255), attribute=2))
        after = meter_time(manifest)
    assert raw_plus[0] == raw_minus[0] == 0x06  # double-long-unsigned
    a_plus, a_minus = int.from_bytes(raw_plus[1:5], "big"), int.from_bytes(raw_minus[1:5], "big")
    assert energy(m["import_power_w"], start, before) <= a_plus <= energy(m["import_power_w"], start, after)
    assert energy(m["export_power_w"], start, before) <= a_minus <= energy(m["export_power_w"], start, after)
    assert m["import_power_w"] == 100 + (i * 37) % 900 and m["export_power_w"] == (i * 53) % 500
