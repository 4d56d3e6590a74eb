"""The simulated fleet (`smartmeter sim fleet`): our own client reads fleet meters over TCP with
HLS 5 and gets what the documented formula (docs/fleet.md) gives for the elapsed meter time;
replays are refused and reported; faults and capabilities behave as specified; the manifest
and the report have their stated shape, and SIGTERM writes the final report.

Expectations are computed here from the scenario with the formula as the documentation
states it, never with the fleet's own functions.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.errors import ServiceError
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import (
    AccessDenied, AssociationRefused, ClientSecurity, CounterStore, GetExchange,
)
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import LinkError, WrapperLink
from smartmeter.meter.fleet import FleetScenario
from smartmeter.meter.fleet_serve import FleetLimits, FleetProblem, FleetProcess, raise_file_limit

CLIENT_TITLE = bytes.fromhex("4845530000000007")
POLICY = 0x04 | 0x08 | 0x20 | 0x40  # authenticated and encrypted requests and responses
START = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp()  # on a quarter hour
A_PLUS, A_MINUS, CLOCK, PROFILE = "1-0:1.8.0.255", "1-0:2.8.0.255", "0-0:1.0.0.255", "1-0:99.1.0.255"
ROOT = Path(__file__).resolve().parents[2]


# -- the documented formula, written out again ------------------------------------------------
def import_power(i: int) -> int:
    return 100 + (i * 37) % 900


def export_power(i: int) -> int:
    return (i * 53) % 500


def energy(power: int, t: float) -> int:
    return math.floor(power * (t - START) / 3600) if t > START else 0


def status(i: int, boundary: int) -> int:
    return 0x20 if (boundary // 900 + i) % 97 == 0 else 0


def cosem_utc(t: int, clock_status: int) -> bytes:
    when = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return struct.pack(">HBBBBBBBhB", when.year, when.month, when.day, when.isoweekday(), when.hour, when.minute,
                       when.second, 0, 0, clock_status)


def expected_row(i: int, boundary: int, clock_status: int = 0x04) -> tuple:
    return (cosem_utc(boundary, clock_status), status(i, boundary), energy(import_power(i), boundary),
            energy(export_power(i), boundary))


def kept(meter_time: float) -> list[int]:
    """Boundaries of the rows kept at `meter_time`: multiples of 900 from START, the newest 960."""
    last = int(meter_time // 900 * 900)
    return [b for b in range(START_INT, last + 1, 900)][-960:]


START_INT = int(START)


# -- running fleet meters in the test's event loop --------------------------------------------
def free_ports(count: int) -> int:
    import services

    return services.free_port_block(count)


def scenario(meters: int = 4, *, elapsed: float = 20.0, speed: float = 900.0, **kwargs) -> FleetScenario:
    """A fleet whose meter time started at START `elapsed` real seconds ago."""
    base = free_ports(meters)
    return FleetScenario(meters=meters, start=START, speed=speed, real_start=time.time() - elapsed,
                         base_port=base, **kwargs)


@contextlib.asynccontextmanager
async def serving(sc: FleetScenario, limits: FleetLimits = FleetLimits(), **kwargs):
    process = FleetProcess(sc, list(range(sc.meters)), limits, **kwargs)
    await process.listen()
    sweeping = asyncio.ensure_future(_sweep(process))
    try:
        yield process
    finally:
        sweeping.cancel()
        await process.close()


async def _sweep(process: FleetProcess) -> None:
    while True:
        await asyncio.sleep(0.2)
        process.sweep()


def entry(sc: FleetScenario, i: int) -> dict:
    return sc.manifest()["meters"][i]


def client(sc: FleetScenario, i: int, counters: CounterStore | None = None, *, timeout: float = 10.0) -> MeterClient:
    m = entry(sc, i)
    security = ClientSecurity(mechanism=m["mechanism"], suite=m["suite"], policy=m["policy"],
                              ek=bytes.fromhex(m["ek"]), ak=bytes.fromhex(m["ak"]), client_system_title=CLIENT_TITLE,
                              invocation_counter=counters if counters is not None else CounterStore())
    return MeterClient(WrapperLink(m["host"], m["port"], client_sap=m["client_sap"], timeout=timeout),
                       security=security)


def meter_time(sc: FleetScenario) -> float:
    return START + sc.speed * (time.time() - sc.real_start)


def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


def run(coroutine):
    return asyncio.run(coroutine)


# -- reads ---------------------------------------------------------------------------------
def test_registers_and_clock_follow_the_formula():
    sc = scenario(4, seed=3)

    async def go():
        async with serving(sc):
            for i in (1, 3):
                async with client(sc, i) as c:
                    before = meter_time(sc)
                    a_plus = (await c.get(A_PLUS, class_id=3)).value
                    a_minus = (await c.get(A_MINUS, class_id=3)).value
                    clock = (await c.get(CLOCK, class_id=8)).value
                    after = meter_time(sc)
                    assert energy(import_power(i), before) <= a_plus <= energy(import_power(i), after)
                    assert energy(export_power(i), before) <= a_minus <= energy(export_power(i), after)
                    assert (await c.get(A_PLUS, 3, class_id=3)) == Data.structure([Data.integer(0), Data.enum(30)])
                    year, month, day, _, hour, minute, second = struct.unpack(">HBBBBBB", clock[:8])
                    read = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc).timestamp()
                    assert int(before) - 1 <= read <= after
                    assert clock[9:] == b"\x00\x00\x04"  # UTC, "different clock base" at speed 900
                    serial = (await c.get("0-0:96.1.0.255", class_id=1)).value
                    assert serial == f"1SIM0100003{i:05d}".encode()

    run(go())


def test_load_profile_by_range_and_by_entry_follows_the_formula():
    sc = scenario(100, elapsed=25.0)  # 22500 s of meter time: 26 rows

    async def go():
        async with serving(sc):
            now = meter_time(sc)
            boundaries = kept(now)
            assert len(boundaries) >= 20
            # a meter whose 6th row carries the clock-adjusted flag, and one without a flag in the rows read
            flagged = (-(boundaries[5] // 900)) % 97
            for i in (flagged, (flagged + 50) % 97):
                async with client(sc, i) as c:
                    first, last = boundaries[3], boundaries[6]  # 4 rows
                    _, rows = await c.profile(PROFILE, from_time=utc(first), to_time=utc(last), rows=True)
                    assert rows == [expected_row(i, b) for b in boundaries[3:7]]
                    # bounds between boundaries: the rows inside
                    _, rows = await c.profile(PROFILE, from_time=utc(first - 300), to_time=utc(last + 300), rows=True)
                    assert rows == [expected_row(i, b) for b in boundaries[3:7]]
                    _, rows = await c.profile(PROFILE, entries=(2, 4), rows=True)
                    assert rows == [expected_row(i, b) for b in boundaries[1:4]]
                    in_use = (await c.get(PROFILE, 7, class_id=7)).value
                    assert len(boundaries) <= in_use <= len(kept(meter_time(sc)))
            assert expected_row(flagged, boundaries[5])[1] == 0x20

    run(go())


def test_the_profile_keeps_the_newest_960_rows():
    sc = scenario(2, elapsed=20.0, speed=90_000.0)  # 1.8 million s of meter time: 2000 quarter hours

    async def go():
        async with serving(sc):
            async with client(sc, 1) as c:
                oldest_before = kept(meter_time(sc))[0]
                _, rows = await c.profile(PROFILE, rows=True)
                oldest_after = kept(meter_time(sc))[0]
                assert len(rows) == 960
                oldest = _boundary_of(rows[0])
                assert oldest_before <= oldest <= oldest_after
                assert rows == [expected_row(1, oldest + 900 * k) for k in range(960)]
                assert (await c.get(PROFILE, 8, class_id=7)).value == 960
                assert (await c.get(PROFILE, 7, class_id=7)).value == 960

    run(go())


def _boundary_of(row: tuple) -> int:
    year, month, day, _, hour, minute, second = struct.unpack(">HBBBBBB", row[0][:8])
    return int(dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc).timestamp())


def test_the_public_client_reads_without_security():
    sc = scenario(2)

    async def go():
        async with serving(sc):
            m = entry(sc, 1)
            async with MeterClient(WrapperLink(m["host"], m["port"], client_sap=16)) as c:
                before = meter_time(sc)
                value = (await c.get(A_PLUS, class_id=3)).value
                assert energy(import_power(1), before) <= value <= energy(import_power(1), meter_time(sc))
                assert (await c.get("0-0:42.0.0.255", class_id=1)).value == b"SIM1000000000001"

    run(go())


# -- counters, replays, concurrency ------------------------------------------------------------
def test_counters_are_recorded_and_a_reused_counter_is_refused_and_reported():
    sc = scenario(2)

    async def go():
        async with serving(sc, with_counters=True) as process:
            counters = CounterStore()
            async with client(sc, 0, counters) as c:
                await c.get(A_PLUS, class_id=3)
            used = counters.last_used
            meter = process.report()["meters"][0]
            # every counter the client used, the HLS 5 f(StoC) one included, and nothing else
            assert sorted(meter["counters"]) == list(range(0, used + 1))
            assert (meter["first_counter"], meter["sessions"], meter["reused"], meter["refused"]) == (0, 1, [], [])
            # a client that starts its counter afresh reuses 0 in its AARQ: refused
            with pytest.raises(AssociationRefused):
                async with client(sc, 0, CounterStore()):
                    pass
            meter = process.report()["meters"][0]
            assert meter["reused"] == [0] and meter["refused"] == [0] and meter["sessions"] == 1
            # a protected GET sent twice in one association: the second is refused as a replay
            async with client(sc, 0, counters) as c:
                request = c.association.secure(GetExchange(CosemAttributeDescriptor(3, bytes([1, 0, 1, 8, 0, 255]), 2)))
                apdu = request.first()
                first = await c.link.exchange(apdu)
                assert first[0] != 0xD8
                second = decode_xdlms(await c.link.exchange(apdu))
                assert second.service_error == ServiceError.INVOCATION_COUNTER_ERROR
            replayed = int.from_bytes(apdu[3:7], "big")  # glo-get-request: tag, length, SC, IC
            meter = process.report()["meters"][0]
            assert meter["reused"] == [0, replayed] and meter["refused"] == [0, replayed]
            assert meter["sessions"] == 2

    run(go())


def test_two_concurrent_sessions_in_one_cell():
    sc = scenario(4, cells=2)  # cell-0: meters 0 and 2; cell-1: meters 1 and 3

    async def go():
        async with serving(sc) as process:
            async with client(sc, 0) as first, client(sc, 2) as second:
                await first.get(A_PLUS, class_id=3)
                await second.get(A_PLUS, class_id=3)
                cells = process.report()["cells"]
                assert cells["cell-0"] == {"current": 2, "max_concurrent": 2}
            async with client(sc, 1):
                pass
            report = process.report()
            assert report["cells"] == {"cell-0": {"current": 0, "max_concurrent": 2},
                                       "cell-1": {"current": 0, "max_concurrent": 1}}
            assert [m["max_concurrent"] for m in report["meters"]] == [1, 1, 1, 0]
            assert report["totals"]["sessions"] == 3

    run(go())


# -- faults and capabilities --------------------------------------------------------------------
def meters_with(sc: FleetScenario, name: str, key: str = "faults") -> list[int]:
    return [m["index"] for m in sc.manifest()["meters"] if name in m[key]]


def test_refusing_meters_refuse_the_listed_keys():
    sc = scenario(10, fractions={"refusing": 0.2})

    async def go():
        async with serving(sc):
            refusing = meters_with(sc, "refusing")
            assert len(refusing) == 2
            for i in refusing:
                with pytest.raises(AssociationRefused):
                    async with client(sc, i):
                        pass
            healthy = next(i for i in range(10) if i not in refusing)
            async with client(sc, healthy) as c:
                await c.get(A_PLUS, class_id=3)

    run(go())


def test_silent_meters_never_answer():
    sc = scenario(10, fractions={"silent": 0.1})

    async def go():
        async with serving(sc) as process:
            [silent] = meters_with(sc, "silent")
            with pytest.raises(LinkError, match="no answer"):
                async with client(sc, silent, timeout=1.0):
                    pass
            assert process.report()["meters"][silent]["connections"] == 1

    run(go())


def test_slow_meters_and_latency_hold_back_every_answer():
    sc = scenario(10, fractions={"slow": 0.1}, slow_delay=0.6, latency=0.2)

    async def go():
        async with serving(sc):
            [slow] = meters_with(sc, "slow")
            other = (slow + 1) % 10
            for i, delay in ((slow, 0.8), (other, 0.2)):
                async with client(sc, i) as c:
                    started = time.monotonic()
                    await c.get(A_PLUS, class_id=3)
                    assert time.monotonic() - started >= delay

    run(go())


def test_loss_drops_the_connection_instead_of_answering():
    sc = scenario(2, loss=1.0)

    async def go():
        async with serving(sc) as process:
            with pytest.raises(LinkError, match="closed the connection"):
                async with client(sc, 1):
                    pass
            assert process.report()["meters"][1]["dropped"] == 1

    run(go())


def test_no_range_refuses_selector_1_and_serves_entries():
    sc = scenario(10, fractions={"no-range": 0.1, "no-selective": 0.1})

    async def go():
        async with serving(sc):
            [no_range] = meters_with(sc, "no-range", "capabilities")
            [no_selective] = meters_with(sc, "no-selective", "capabilities")
            boundaries = kept(meter_time(sc))
            for i in (no_range, no_selective):
                async with client(sc, i) as c:
                    with pytest.raises(AccessDenied) as refused:
                        await c.profile(PROFILE, from_time=utc(boundaries[0]), to_time=utc(boundaries[3]))
                    assert refused.value.result == DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
                    _, whole = await c.profile(PROFILE, rows=True)
                    assert whole[:4] == [expected_row(i, b) for b in boundaries[:4]]
                    if i == no_range:
                        _, rows = await c.profile(PROFILE, entries=(1, 2), rows=True)
                        assert rows == [expected_row(i, b) for b in boundaries[:2]]
                    else:
                        with pytest.raises(AccessDenied) as refused:
                            await c.profile(PROFILE, entries=(1, 2))
                        assert refused.value.result == DataAccessResult.SCOPE_OF_ACCESS_VIOLATED

    run(go())


# -- bounds ------------------------------------------------------------------------------------
def test_connections_per_meter_are_capped_and_idle_ones_closed():
    sc = scenario(2)

    async def go():
        async with serving(sc, FleetLimits(meter_connections=2, idle_timeout=0.5)) as process:
            m = entry(sc, 1)
            held = [await asyncio.open_connection(m["host"], m["port"]) for _ in range(3)]
            refused_reader = held[2][0]
            assert await asyncio.wait_for(refused_reader.read(10), 30) == b""  # the third is closed at once
            assert len(process.connections) == 2
            for reader, _ in held[:2]:
                assert await asyncio.wait_for(reader.read(10), 30) == b""  # closed when idle
            assert len(process.connections) == 0
            for _, writer in held:
                writer.close()

    run(go())


def test_an_open_file_limit_too_low_is_one_clear_line():
    with pytest.raises(FleetProblem, match="hard limit is .*: raise it"):
        raise_file_limit(10 ** 9)


# -- keys, manifest, CLI -------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_fleet():
    one = FleetScenario(meters=50, start=START, speed=1, real_start=0, seed=5, fractions={"slow": 0.2}).manifest()
    two = FleetScenario(meters=50, start=START, speed=1, real_start=0, seed=5, fractions={"slow": 0.2}).manifest()
    other = FleetScenario(meters=50, start=START, speed=1, real_start=0, seed=6, fractions={"slow": 0.2}).manifest()
    assert one == two
    assert [m["ek"] for m in one["meters"]] != [m["ek"] for m in other["meters"]]
    assert [m["faults"] for m in one["meters"]] != [m["faults"] for m in other["meters"]]
    titles = [m["system_title"] for m in one["meters"] + other["meters"]]
    assert len(set(titles)) == 100 and all(len(t) == 16 and bytes.fromhex(t)[:3] == b"SIM" for t in titles)
    assert len({m["ek"] for m in one["meters"]} | {m["ak"] for m in one["meters"]}) == 100


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def _start_fleet(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    manifest, report = tmp_path / "manifest.json", tmp_path / "report.json"
    fleet = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "fleet", "--manifest", str(manifest),
                              "--report", str(report), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    _wait_for(manifest, fleet)
    return fleet, manifest, report


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_command_writes_manifest_and_report_and_sigterm_the_final_report(tmp_path, processes):
    fleet, manifest_path, report_path = _start_fleet(
        tmp_path, "--meters", "300", "--cells", "7", "--base-port", str(free_ports(300)),
        "--speed", "900", "--seed", "11", "--silent", "0.05", "--refusing", "0.05", "--no-range", "0.1",
        "--processes", processes, "--report-counters")
    try:
        assert stat.S_IMODE(os.stat(manifest_path).st_mode) == 0o600
        manifest = json.loads(manifest_path.read_text())
        assert set(manifest) >= {"version", "meters", "start", "speed", "seed"}
        assert (manifest["version"], manifest["speed"], manifest["seed"], len(manifest["meters"])) == (1, 900, 11, 300)
        for i, m in enumerate(manifest["meters"]):
            assert set(m) >= {"index", "serial", "system_title", "host", "port", "cell", "client_sap", "mechanism",
                              "suite", "policy", "ek", "ak", "faults", "capabilities", "import_power_w",
                              "export_power_w"}
            assert (m["index"], m["port"], m["cell"], m["host"]) == (i, manifest["meters"][0]["port"] + i,
                                                                     f"cell-{i % 7}", "127.0.0.1")
            assert (m["client_sap"], m["mechanism"], m["suite"], m["policy"]) == (1, 5, 0, POLICY)
            assert (m["import_power_w"], m["export_power_w"]) == (import_power(i), export_power(i))
        counts = {name: sum(name in m["faults"] + m["capabilities"] for m in manifest["meters"])
                  for name in ("silent", "refusing", "no-range", "slow")}
        assert counts == {"silent": 15, "refusing": 15, "no-range": 30, "slow": 0}
        # the example command reads the first healthy meter; this test reads an even and an odd one
        # besides (with two processes, one of each process)
        example, *others = [m for m in manifest["meters"] if not m["faults"]]
        healthy = [example, next(m for m in others if m["index"] % 2 == 0),
                   next(m for m in others if m["index"] % 2 == 1)]
        async def read(m) -> None:
            security = ClientSecurity(mechanism=5, suite=0, policy=POLICY, ek=bytes.fromhex(m["ek"]),
                                      ak=bytes.fromhex(m["ak"]), client_system_title=CLIENT_TITLE)
            async with MeterClient(WrapperLink("127.0.0.1", m["port"], client_sap=1), security=security) as c:
                await c.get(A_PLUS, class_id=3)

        async def read_both() -> None:
            for m in healthy[1:]:
                await read(m)

        run(read_both())
        # the printed example command reads the first healthy meter with the credentials written for it
        out = fleet.stdout.readline() + fleet.stdout.readline() + fleet.stdout.readline() + fleet.stdout.readline() \
            + fleet.stdout.readline()
        example = next(line for line in out.splitlines() if line.startswith("read meter"))
        command = example.split(": ", 1)[1].split()
        assert command[:2] == ["smartmeter", "client"]
        shown = subprocess.run([sys.executable, "-m", "smartmeter", *command[1:]], capture_output=True, text=True,
                               cwd=tmp_path, timeout=60)
        assert shown.returncode == 0 and "Wh" in shown.stdout, shown.stderr
        time.sleep(1.5)  # the periodic report has seen them
        running = json.loads(report_path.read_text())
        assert running["final"] is False
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.communicate(timeout=60)
    assert fleet.returncode == 0
    report = json.loads(report_path.read_text())
    assert report["final"] is True
    assert len(report["meters"]) == 300 and [m["index"] for m in report["meters"]] == list(range(300))
    for m in report["meters"]:
        assert set(m) >= {"serial", "sessions", "counters_seen", "first_counter", "last_counter", "reused",
                          "refused", "max_concurrent", "counters"}
    for m in healthy:
        index = m["index"]
        assert report["meters"][index]["sessions"] == 1
        assert report["meters"][index]["counters_seen"] == len(report["meters"][index]["counters"]) > 0
    assert report["totals"]["sessions"] == 3
    assert set(report["cells"]) == {f"cell-{k}" for k in range(7)}
    assert all(c["current"] == 0 for c in report["cells"].values())


def test_the_observation_of_a_meter_is_bounded():
    from smartmeter.meter.fleet_report import CellRecord, MeterRecord

    record = MeterRecord(0, "1SIM010000000000", CellRecord("cell-0"))
    for counter in range(10_000):
        record.counter_received(counter)
    for counter in (5, 5, 9_999, 20_000):  # two counters kept, one beyond what is kept, one fresh
        record.counter_received(counter)
    entry = record.as_dict(with_counters=True)
    assert len(entry["counters"]) == 2048 and entry["counters"][:3] == [0, 1, 2] and entry["counters_truncated"]
    assert (entry["counters_seen"], entry["first_counter"], entry["last_counter"]) == (10_004, 0, 20_000)
    assert entry["reused"] == [5, 5] and entry["reused_count"] == 2  # 9999 was received, but is no longer kept
    for counter in range(1000):
        record.counter_refused(counter)
    entry = record.as_dict(with_counters=False)
    assert len(entry["refused"]) == 256 and entry["refused_count"] == 1000 and "counters" not in entry


def test_the_frame_counter_object_tells_a_head_end_where_the_meter_stands():
    """Appendix 1 readout over the public client, checked with the management client's AK: the
    last counter the meter accepted, from which a head-end that lost its counter continues."""
    from types import SimpleNamespace

    from smartmeter.hes.resync import read_frame_counter

    sc = scenario(2)

    async def go():
        async with serving(sc):
            counters = CounterStore()
            async with client(sc, 1, counters) as c:
                await c.get(A_PLUS, class_id=3)
            m = entry(sc, 1)
            credentials = SimpleNamespace(client_sap=1, security=ClientSecurity(
                mechanism=5, suite=0, policy=POLICY, ek=bytes.fromhex(m["ek"]), ak=bytes.fromhex(m["ak"]),
                client_system_title=CLIENT_TITLE))
            held = await read_frame_counter(WrapperLink(m["host"], m["port"], client_sap=16), credentials)
            assert held == counters.last_used
            async with client(sc, 1, CounterStore(last_used=held)) as c:  # continuing above it works
                await c.get(A_PLUS, class_id=3)

    run(go())
