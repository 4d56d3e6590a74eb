"""A fleet store restored from a backup sends invocation counters the meters have seen: the
meter refuses the association, the worker reads the meter's frame counter object (public
client, HMAC under our AK), moves the store's counter above it and the job succeeds; no
counter is accepted twice. An answer that does not verify moves nothing."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from pathlib import Path

import pytest

from smartmeter.dlms.client import InvocationCounterError
from smartmeter.hes.fleet.resync import resync_counter
from smartmeter.hes.fleet.worker import DEFAULT_CLIENT_SYSTEM_TITLE
from smartmeter.hes.store.pg import FleetStore, KeyVault

METERS = 4
RESTORED = (0, 1, 2)  # meter indexes whose counter row comes back from the backup


def counters_of(h) -> dict[str, int]:
    return {r["serial"]: r["tx_reserved"] for r in h.query(
        "SELECT m.serial, f.tx_reserved FROM frame_counter f JOIN meter m ON m.id = f.meter_id")}


async def unverified_resync(h, serial: str) -> tuple[int | None, int, int]:
    """resync_counter for `serial` with an AK the meter does not hold and a refusal claiming
    a counter far ahead: (its result, the store's counter before, after)."""
    store = await FleetStore.open(h.dsn, KeyVault.from_file(Path(h.tmp) / "kek.hex"))
    try:
        meter_id = (await store.meter_ids(serials=[serial]))[0][0]
        grant = await store.begin_session(meter_id, "test", 30, 1)
        await store.release(grant)
        forged = dataclasses.replace(grant, keys={**grant.keys, "ak": bytes(16)})
        top = "SELECT tx_reserved FROM frame_counter WHERE meter_id = $1"
        before = await store.pool.fetchval(top, meter_id)
        moved = await resync_counter(store, forged, InvocationCounterError("forged", 1 << 30),
                                     DEFAULT_CLIENT_SYSTEM_TITLE, 5.0)
        return moved, before, await store.pool.fetchval(top, meter_id)
    finally:
        await store.close()


@pytest.mark.timeout(240)
def test_a_store_restored_from_a_backup_resyncs_from_the_meters_frame_counters(head_end):
    h = head_end
    manifest = h.start_fleet(METERS, "--report-counters")
    h.import_fleet()
    h.start_worker("--concurrency", "2")
    serials = [m["serial"] for m in manifest["meters"]]

    first = h.start_campaign("--name", "before the backup")
    assert h.wait_campaign(first, timeout=60) == {"done": METERS}
    backup = counters_of(h)
    second = h.start_campaign("--name", "after the backup")
    assert h.wait_campaign(second, timeout=60) == {"done": METERS}
    ahead = counters_of(h)
    assert all(ahead[s] > backup[s] for s in serials)

    # the counter rows come back from the backup: below what the meters have seen since
    for i in RESTORED:
        h.query("UPDATE frame_counter SET tx_reserved = $2 FROM meter m WHERE m.id = frame_counter.meter_id "
                "AND m.serial = $1", serials[i], backup[serials[i]])

    # an answer that does not verify under our key (and a refusal claiming a counter far
    # ahead) moves nothing
    moved, before, after = asyncio.run(unverified_resync(h, serials[0]))
    assert moved is None and after == before

    third = h.start_campaign("--name", "after the restore")
    assert h.wait_campaign(third, timeout=90) == {"done": METERS}, h.log("worker")
    attempts = {r["serial"]: r["attempts"] for r in h.query(
        "SELECT m.serial, j.attempts FROM job j JOIN meter m ON m.id = j.meter_id WHERE j.campaign_id = $1", third)}
    assert attempts == {s: 2 if i in RESTORED else 1 for i, s in enumerate(serials)}

    final_report = h.stop_fleet()
    assert final_report["totals"]["refused"] == len(RESTORED)
    seen = {m["serial"]: m for m in final_report["meters"]}
    for i, serial in enumerate(serials):
        m = seen[serial]
        # the restored store's first association under an old counter, refused; none after
        assert m["refused_count"] == (1 if i in RESTORED else 0), m
        # no counter accepted twice: a counter that arrived twice is one the meter refused
        repeated = {c: n for c, n in Counter(m["counters"]).items() if n > 1}
        assert set(repeated) <= set(m["refused"]) and set(repeated.values()) <= {2}, (repeated, m["refused"])
        assert not m["counters_truncated"]
    # the store now reserves above every counter a meter has seen
    final = counters_of(h)
    assert all(final[s] >= max(seen[s]["counters"]) for s in serials)
    # after the readout every restored meter went on above it: its counters since are new
    for i in RESTORED:
        m = seen[serials[i]]
        refused = m["refused"][0]
        later = m["counters"][m["counters"].index(refused, m["counters"].index(refused) + 1) + 1:]
        earlier = set(m["counters"][:m["counters"].index(refused, m["counters"].index(refused) + 1)])
        assert later and min(later) > max(earlier), (later[:3], max(earlier))


def test_the_readout_verifies_against_the_meter_meant_and_goes_through_the_link_factory(tmp_path):
    """Two fleet meters that share one AK (meter 1 holds meter 0's): an answer from meter 1
    does not verify as meter 0's counter (a relay, a wrong address), though it verifies as
    meter 1's; and a worker whose links come from a factory (a gateway) reads the frame counter
    through it, as the public client."""
    import services
    from smartmeter.dlms.client import ClientError
    from smartmeter.hes.connection import WrapperLink
    from smartmeter.hes.fleet.resync import PUBLIC_SAP, meter_counter
    from smartmeter.hes.store.pg import SessionGrant
    from smartmeter.meter.fleet import FleetScenario
    from smartmeter.meter.fleet_serve import FleetLimits, FleetProcess

    now = time.time()
    scenario = FleetScenario(meters=2, start=float(int(now)), speed=1.0, real_start=now,
                             base_port=services.free_port_block(2))
    meters = scenario.manifest()["meters"]
    ak0 = bytes.fromhex(meters[0]["ak"])
    asked = []

    def grant(i: int, port: int) -> SessionGrant:
        m = meters[i]
        return SessionGrant(
            meter_id=i + 1, serial=m["serial"], system_title=bytes.fromhex(m["system_title"]), host=m["host"],
            port=port, cell=m["cell"], client_sap=m["client_sap"], server_sap=1, mechanism=m["mechanism"],
            suite=m["suite"], policy=m["policy"], capabilities={}, keys={"ak": ak0}, new_keys={}, key_generation=1,
            lease_token=1, counter_block=(1, 16), rx_last=None, marks={})

    def gateway(g: SessionGrant, timeout: float) -> WrapperLink:
        # the meters sit behind a gateway: the grant's own address leads nowhere
        asked.append((g.serial, g.client_sap))
        return WrapperLink(g.host, meters[0]["port"], client_sap=g.client_sap, server_sap=g.server_sap,
                           timeout=timeout)

    async def scenario_():
        process = FleetProcess(scenario, [0, 1], FleetLimits())
        process.server(1).security.context("management").set_key("ak", ak0)
        await process.listen()
        try:
            as_meter_1 = await meter_counter(grant(1, meters[1]["port"]), DEFAULT_CLIENT_SYSTEM_TITLE, 5.0)
            try:
                relayed = await meter_counter(grant(0, meters[1]["port"]), DEFAULT_CLIENT_SYSTEM_TITLE, 5.0)
            except ClientError as exc:
                relayed = exc
            behind_gateway = await meter_counter(grant(0, services.free_port_block(1)), DEFAULT_CLIENT_SYSTEM_TITLE,
                                                 5.0, link_factory=gateway)
        finally:
            await process.close()
        return as_meter_1, relayed, behind_gateway

    as_meter_1, relayed, behind_gateway = asyncio.run(scenario_())
    assert as_meter_1 == 0  # meter 1 has accepted no counter of ours yet
    assert isinstance(relayed, ClientError) and "does not verify" in str(relayed), relayed
    assert behind_gateway == 0 and asked == [(meters[0]["serial"], PUBLIC_SAP)]
