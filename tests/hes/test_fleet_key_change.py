"""Key changes by the head-end at scale: `hes keys change` gives each meter fresh EK and AK
through the workers (key_transfer under the current keys, wrapped with the meter's master
key); reads go on under the new keys; a worker killed between a meter's answer and the
store's promotion leaves nothing a rerun cannot settle, no meter lost and no counter reused;
the old keys are refused by the meters; the store holds every key wrapped only."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from fleet_support import HeadEnd, energy, fleet_power
from smartmeter.dlms.client import AssociationRefused, ClientSecurity, CounterStore
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.store.pg import FleetStore, KeyVault, LeaseLost, MeterRecord, StoreError

WORKER = ("--concurrency", "4", "--ack-wait", "3", "--session-timeout", "5", "--request-timeout", "2",
          "--connect-timeout", "2", "--association-timeout", "3")
CRASHING_WORKER = Path(__file__).with_name("crashing_key_worker.py")
A_PLUS, A_MINUS = "1-0:1.8.0.255", "1-0:2.8.0.255"
TEST_TITLE = b"TST\x00\x00\x00\x00\x07"  # the test's own client system title


def stored_keys(h: HeadEnd) -> dict[str, dict[tuple[str, int], tuple[str, bytes]]]:
    """serial → (kind, generation) → (state, key), unwrapped here with the test's KEK file."""
    kek = bytes.fromhex((h.tmp / "kek.hex").read_text().strip())
    keys: dict[str, dict] = {}
    for r in h.query("SELECT m.serial, k.kind, k.generation, k.state, k.wrapped FROM meter_key k "
                     "JOIN meter m ON m.id = k.meter_id"):
        keys.setdefault(r["serial"], {})[(r["kind"], r["generation"])] = (r["state"], aes_key_unwrap(kek, r["wrapped"]))
    return keys


def active(keys: dict[tuple[str, int], tuple[str, bytes]]) -> dict[str, tuple[int, bytes]]:
    return {kind: (generation, key) for (kind, generation), (state, key) in keys.items() if state == "ACTIVE"}


def associate(meter: dict, ek: bytes, ak: bytes, counter: int) -> int:
    """Associate with the management client under (ek, ak), the first counter `counter`, and
    read +A: the value."""
    async def go() -> int:
        security = ClientSecurity(mechanism=5, suite=0, policy=meter["policy"], client_system_title=TEST_TITLE,
                                  server_system_title=bytes.fromhex(meter["system_title"]), ek=ek, ak=ak,
                                  invocation_counter=CounterStore(last_used=counter - 1))
        link = WrapperLink(meter["host"], meter["port"], client_sap=1, server_sap=1, timeout=5)
        async with MeterClient(link, mechanism=5, security=security) as client:
            return (await client.get(A_PLUS, 2, class_id=3)).value

    return asyncio.run(go())


def meter_time(manifest: dict, real_time: float) -> float:
    """The fleet's meter time at wall-clock `real_time` (docs/fleet.md)."""
    return manifest["start_epoch"] + manifest["speed"] * (real_time - manifest["real_start"])


def change_keys(h: HeadEnd, *selection: str) -> tuple[int, str]:
    done = h.run("hes", "keys", "change", *selection, "--wait", timeout=120)
    return done.returncode, done.stdout + done.stderr


def assert_registers_follow_the_formula(h: HeadEnd, manifest: dict, campaign: int, serials: set[str]) -> None:
    """The registers the campaign stored for each of `serials` are the formula at the meter's time."""
    rows = h.query("""SELECT m.serial, s.obis, extract(epoch FROM r.time)::float8 AS t, r.raw,
                             extract(epoch FROM r.received)::float8 AS received FROM reading r
                      JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id
                      JOIN job j ON j.meter_id = m.id AND j.campaign_id = $1
                      WHERE s.source = '' AND r.received >= j.finished - interval '1 minute'
                        AND r.received <= j.finished""", campaign)
    by_serial = {m["serial"]: m for m in manifest["meters"]}
    seen = {r["serial"] for r in rows}
    assert seen == serials, seen ^ serials
    for r in rows:
        p_import, p_export = fleet_power(by_serial[r["serial"]]["index"])
        power = p_import if r["obis"] == A_PLUS else p_export
        start = manifest["start_epoch"]
        # read after the clock and before the results were stored (the meters' time then, from the manifest)
        latest = meter_time(manifest, r["received"]) + 1.0
        assert energy(power, start, r["t"]) <= r["raw"] <= energy(power, start, latest), r


def assert_no_key_in_clear(h: HeadEnd, keys: list[bytes]) -> None:
    """No table of the store holds any of `keys` as it is (the bytes, or their hex either case)."""
    tables = [r["table_name"] for r in h.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    dump = "\n".join(r["row"] for t in tables for r in h.query(f'SELECT t::text AS row FROM "{t}" t')).lower()
    assert "meter_key" in tables and len(dump) > 1000
    for key in keys:
        assert key.hex() not in dump


@pytest.mark.timeout(300)
def test_every_meter_gets_new_keys_and_is_read_under_them_while_the_old_ones_are_refused(head_end):
    h = head_end
    n = 10
    manifest = h.start_fleet(n, "--refusing", "0.1", "--seed", "11", "--report-counters")
    h.import_fleet()
    meters = {m["serial"]: m for m in manifest["meters"]}
    refusing = {s for s, m in meters.items() if "refusing" in m["faults"]}
    healthy = set(meters) - refusing
    assert len(refusing) == 1
    h.start_worker(*WORKER)
    before = h.start_campaign("--name", "before")
    assert h.wait_campaign(before, timeout=120) == {"done": n - 1, "failed": 1}

    code, out = change_keys(h, "--all")
    # the meter that holds other keys than the store cannot be given new ones: that is its outcome
    assert code == 1 and f"{n - 1} done, 1 failed" in out and "refused the association" in out, out
    keys = stored_keys(h)
    for serial, m in meters.items():
        listed = {"ek": bytes.fromhex(m["ek"]), "ak": bytes.fromhex(m["ak"]), "master": bytes.fromhex(m["master"])}
        states = {k: state for k, (state, _) in keys[serial].items()}
        if serial in healthy:
            # generation 2 ACTIVE, the keys it replaced EXPIRED, nothing left NEW
            assert states == {("ek", 1): "EXPIRED", ("ak", 1): "EXPIRED", ("master", 1): "ACTIVE",
                              ("ek", 2): "ACTIVE", ("ak", 2): "ACTIVE"}, (serial, states)
            now = active(keys[serial])
            assert now["ek"][1] not in listed.values() and now["ak"][1] not in listed.values()
            assert len(now["ek"][1]) == len(now["ak"][1]) == 16 and now["ek"][1] != now["ak"][1]
        else:
            # the new keys never reached it: discarded (EXPIRED, never ACTIVE), the old ones kept
            assert states == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("master", 1): "ACTIVE",
                              ("ek", 2): "EXPIRED", ("ak", 2): "EXPIRED"}, (serial, states)
            assert active(keys[serial])["ek"][1] == listed["ek"]
    fresh = {active(keys[s])[kind][1] for s in healthy for kind in ("ek", "ak")}
    assert len(fresh) == 2 * len(healthy)  # every meter its own keys

    after = h.start_campaign("--name", "after")
    assert h.wait_campaign(after, timeout=120) == {"done": n - 1, "failed": 1}
    assert_registers_follow_the_formula(h, manifest, after, healthy)

    # the meters: the listed (now old) keys are refused, the store's ACTIVE ones accepted
    for serial in sorted(healthy)[:3]:
        m = meters[serial]
        with pytest.raises(AssociationRefused):
            associate(m, bytes.fromhex(m["ek"]), bytes.fromhex(m["ak"]), 500_000)
        now = active(keys[serial])
        earliest = meter_time(manifest, time.time())
        value = associate(m, now["ek"][1], now["ak"][1], 1_000_000)
        latest = meter_time(manifest, time.time())
        p_import, start = fleet_power(m["index"])[0], manifest["start_epoch"]
        assert energy(p_import, start, earliest) <= value <= energy(p_import, start, latest)

    assert_no_key_in_clear(h, [key for s in meters for (_, key) in keys[s].values()]
                           + [bytes.fromhex(m[k]) for m in meters.values() for k in ("ek", "ak", "master")])

    report = h.stop_fleet()
    for entry in report["meters"]:
        if entry["serial"] in healthy:
            # one key change; the new key's counters started afresh at 1 and are in use
            assert entry["key_changes"] == 1 and entry["key_counters_seen"] > 0, entry
            assert min(entry["counters"]) == 1, entry
        else:
            assert entry["key_changes"] == 0, entry
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0, report["totals"]


def crash_at_first_promotion(h: HeadEnd, *worker: str) -> dict:
    """A worker killed (SIGKILL) at its first key promotion: the meter and generation it left."""
    left = h.tmp / "left.json"
    log = open(h.tmp / "crashing-worker.log", "w")
    process = subprocess.Popen([sys.executable, str(CRASHING_WORKER), str(left), *worker], env=h.env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == -9 and left.exists(), (h.tmp / "crashing-worker.log").read_text()[-3000:]
    return json.loads(left.read_text())


def start_key_change(h: HeadEnd, *selection: str) -> int:
    out = h.ok("hes", "keys", "change", *selection)
    return int(out.split("campaign ")[1].split()[0])


@pytest.mark.timeout(300)
def test_a_worker_killed_between_the_meters_answer_and_the_promotion_is_settled_by_the_rerun(head_end):
    h = head_end
    n = 12
    manifest = h.start_fleet(n, "--seed", "12")
    h.import_fleet()
    meters = {m["serial"]: m for m in manifest["meters"]}
    campaign = start_key_change(h, "--all")
    left = crash_at_first_promotion(h, *WORKER)
    # the killed worker's meter took generation 2 and the store still has it NEW
    keys = stored_keys(h)
    assert keys[left["serial"]][("ek", left["generation"])][0] == "NEW"
    assert left["generation"] == 2
    assert h.status(campaign).get("queued", 0) >= 1

    h.start_worker(*WORKER)
    assert h.wait_campaign(campaign, timeout=150) == {"done": n}
    keys = stored_keys(h)
    for serial in meters:
        states = {k: state for k, (state, _) in keys[serial].items() if k[0] != "master"}
        assert "NEW" not in states.values(), (serial, states)
        assert list(states.values()).count("ACTIVE") == 2, (serial, states)
    # the meter the kill left with the new keys kept them: that generation is ACTIVE now
    assert active(keys[left["serial"]])["ek"][0] == left["generation"]

    read = h.start_campaign("--name", "after the crash")
    assert h.wait_campaign(read, timeout=120) == {"done": n}
    assert_registers_follow_the_formula(h, manifest, read, set(meters))
    report = h.stop_fleet()
    # no meter lost, one key change each, no counter reused or refused under any key
    assert all(entry["key_changes"] == 1 and entry["key_counters_seen"] > 0 for entry in report["meters"]), \
        report["meters"]
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0, report["totals"]


@pytest.mark.timeout(300)
def test_a_read_settles_a_key_change_cut_short_and_goes_on_under_the_new_keys(head_end):
    h = head_end
    n = 3
    manifest = h.start_fleet(n, "--seed", "13")
    h.import_fleet()
    meters = {m["serial"]: m for m in manifest["meters"]}
    campaign = start_key_change(h, "--all")
    left = crash_at_first_promotion(h, *WORKER[:1], "1", *WORKER[2:])  # one session at a time
    # the key change is given up (its jobs closed as an operator would); a read campaign follows
    h.query("UPDATE job SET state = 'failed', error = 'given up' WHERE campaign_id = $1 AND state = 'queued'",
            campaign)
    h.start_worker(*WORKER)
    read = h.start_campaign("--name", "read after the cut-short change")
    assert h.wait_campaign(read, timeout=120) == {"done": n}
    assert_registers_follow_the_formula(h, manifest, read, set(meters))
    keys = stored_keys(h)
    for serial in meters:
        now = active(keys[serial])
        states = [state for (kind, _), (state, _) in keys[serial].items() if kind != "master"]
        assert "NEW" not in states
        # the meter the kill left with generation 2 has it ACTIVE; the others were never changed
        expected = left["generation"] if serial == left["serial"] else 1
        assert now["ek"][0] == now["ak"][0] == expected, (serial, now)
    report = h.stop_fleet()
    for entry in report["meters"]:
        assert entry["key_changes"] == (1 if entry["serial"] == left["serial"] else 0), entry
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0, report["totals"]


def test_key_generations_are_fenced_by_the_lease_and_never_given_twice(pg_dsn):
    kek = secrets.token_bytes(32)
    old = {"ek": b"\x01" * 16, "ak": b"\x02" * 16, "master": b"\x03" * 32}
    first, second = ({"ek": secrets.token_bytes(16), "ak": secrets.token_bytes(16)} for _ in range(2))

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(kek), migrate=True)
        try:
            await store.add_meters([MeterRecord("KEY00001", b"KSM\x00\x00\x00\x00\x01", "127.0.0.1", 21000,
                                                keys=old)])
            (meter_id, _, _), = await store.meter_ids()
            grant = await store.begin_session(meter_id, "a", 30.0, 16)
            assert (grant.key_generation, grant.counter_block, grant.keys) == (1, (1, 16), old)
            # generation 2 written NEW with its own counters from 1, before any meter hears of it
            assert await store.new_keys(grant, first, 16) == (2, (1, 16))
            with pytest.raises(StoreError, match="waiting"):  # one NEW generation at a time
                await store.new_keys(grant, second, 16)
            stranger = dataclasses.replace(grant, lease_token=grant.lease_token + 1000)
            with pytest.raises(LeaseLost):
                await store.promote_keys(stranger, 2, None)
            with pytest.raises(LeaseLost):
                await store.new_keys(stranger, second, 16)
            assert not await store.discard_new_keys(stranger, 2)
            # discarded: EXPIRED, never ACTIVE; the next generation is 3, not 2 again
            assert await store.discard_new_keys(grant, 2)
            assert await store.new_keys(grant, second, 16) == (3, (1, 16))
            assert await store.promote_keys(grant, 3, 5)
            assert await store.promote_keys(grant, 3, 5)  # a repeated promotion changes nothing
            assert not await store.promote_keys(grant, 2, 5)  # a discarded generation stays so
            states = {(r["kind"], r["generation"]): r["state"] for r in await store.pool.fetch(
                "SELECT kind, generation, state FROM meter_key")}
            rows = await store.pool.fetch("SELECT wrapped FROM meter_key")
            await store.release(grant)
            later = await store.begin_session(meter_id, "b", 30.0, 16)
            counters = {r["key_generation"]: (r["tx_reserved"], r["rx_last"]) for r in await store.pool.fetch(
                "SELECT key_generation, tx_reserved, rx_last FROM frame_counter")}
            return states, rows, later, counters
        finally:
            await store.close()

    states, rows, later, counters = asyncio.run(scenario())
    assert states == {("ek", 1): "EXPIRED", ("ak", 1): "EXPIRED", ("master", 1): "ACTIVE",
                      ("ek", 2): "EXPIRED", ("ak", 2): "EXPIRED", ("ek", 3): "ACTIVE", ("ak", 3): "ACTIVE"}
    # the next session: generation 3's keys, its counters above the block reserved with them
    assert (later.key_generation, later.counter_block, later.rx_last) == (3, (17, 32), 5)
    assert {k: later.keys[k] for k in ("ek", "ak")} == second and later.keys["master"] == old["master"]
    assert counters == {1: (16, None), 2: (16, None), 3: (32, 5)}
    # at rest, every key wrapped: unwrapping needs the KEK, and no raw key is among the rows
    raw = [*old.values(), *first.values(), *second.values()]
    assert all(bytes(r["wrapped"]) not in raw and aes_key_unwrap(kek, bytes(r["wrapped"])) in raw for r in rows)


@pytest.mark.timeout(240)
def test_a_meter_that_refuses_key_transfer_keeps_its_keys_and_is_read_as_before(head_end):
    h = head_end
    manifest = h.start_fleet(2, "--seed", "14", "--report-counters")
    h.import_fleet()
    wrong, right = manifest["meters"]
    # the store holds another master key for one meter than the meter has
    kek = bytes.fromhex((h.tmp / "kek.hex").read_text().strip())
    h.query("UPDATE meter_key SET wrapped = $1 FROM meter WHERE meter.id = meter_key.meter_id AND meter.serial = $2 "
            "AND kind = 'master'", aes_key_wrap(kek, secrets.token_bytes(32)), wrong["serial"])
    h.start_worker(*WORKER)
    code, out = change_keys(h, "--all")
    assert code == 1 and "1 done, 1 failed" in out and "key_transfer refused" in out, out
    keys = stored_keys(h)
    states = {k: state for k, (state, _) in keys[wrong["serial"]].items() if k[0] != "master"}
    assert states == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("ek", 2): "EXPIRED", ("ak", 2): "EXPIRED"}
    assert active(keys[wrong["serial"]])["ek"][1] == bytes.fromhex(wrong["ek"])
    assert active(keys[right["serial"]])["ek"][0] == 2
    read = h.start_campaign("--name", "after")
    assert h.wait_campaign(read, timeout=120) == {"done": 2}
    report = h.stop_fleet()
    assert [m["key_changes"] for m in report["meters"]] == [0, 1]
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0, report["totals"]
