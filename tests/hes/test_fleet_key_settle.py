"""Key changes cut short and their edges, with fleet meters, the store and a worker in this
process: a meter that hangs up on the ACTIVE keys while it holds the NEW ones (and one silent
under both, which settles nothing), a meter that has seen more of the NEW keys' counters than
the store reserved, key_transfer answered with temporary-failure, a meter without a usable
master key, a job message whose kind is not its campaign's, a store whose id changed, a
settlement bounded by the lease, and expired keys' grace for pushes."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from pathlib import Path

import pytest

import services
from smartmeter.cli.hes_fleet import read_manifest
from smartmeter.cosem.classes.base import CosemAccessError
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.apdu.acse import decode_acse
from smartmeter.dlms.client import ClientSecurity, CounterStore
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import LinkError, WrapperLink
from smartmeter.hes.fleet.broker import BULK, Broker, Job
from smartmeter.hes.fleet.campaign import start_campaign
from smartmeter.hes.fleet.session import SessionTimeout, Timeouts
from smartmeter.hes.fleet.worker import DEFAULT_CLIENT_SYSTEM_TITLE, Worker, WorkerSettings
from smartmeter.hes.store.pg import FleetStore, KeyVault
from smartmeter.meter.fleet import FleetScenario
from smartmeter.meter.fleet_serve import FleetLimits, FleetProcess

MANAGEMENT = "management"
SETTINGS = WorkerSettings(concurrency=4, timeouts=Timeouts(2.0, 3.0, 2.0, 10.0), ack_wait=5.0, max_attempts=3,
                          backoff_base=0.1, backoff_cap=0.5)


class HangsUpOnRefusal(WrapperLink):
    """A meter that closes the connection instead of answering an association it refuses
    (some meters send no AARE for a request they cannot decipher)."""

    async def exchange(self, apdu: bytes) -> bytes:
        answer = await super().exchange(apdu)
        if answer[:1] == b"\x61" and decode_acse(answer).result != 0:
            await self.close()
            raise LinkError(f"{self.host}:{self.port} closed the connection")
        return answer


def hanging_up(grant, timeout: float) -> WrapperLink:
    return HangsUpOnRefusal(grant.host, grant.port, client_sap=grant.client_sap, server_sap=grant.server_sap,
                            timeout=timeout)


@dataclasses.dataclass
class Rig:
    """Fleet meters (in this process), their store and broker, and a worker when started."""

    fleet: FleetProcess
    manifest: dict
    store: FleetStore
    broker: Broker
    kek: bytes
    worker: Worker | None = None
    running: asyncio.Task | None = None

    def meter(self, i: int) -> dict:
        return self.manifest["meters"][i]

    def security(self, i: int):
        """Meter i's security context of the management client, as the meter holds it."""
        return self.fleet.server(i).security.context(MANAGEMENT)

    async def meter_id(self, i: int) -> int:
        return (await self.store.meter_ids(serials=[self.meter(i)["serial"]]))[0][0]

    async def cut_short(self, i: int, meter_took_them: bool = True) -> dict[str, bytes]:
        """A key change of meter i cut short: generation 2 NEW in the store (with its first
        block of counters, as `hes_key_new` reserves it) and, if `meter_took_them`, held by
        the meter. The keys."""
        keys = {"ek": secrets.token_bytes(16), "ak": secrets.token_bytes(16)}
        grant = await self.store.begin_session(await self.meter_id(i), "cut short", 30.0, 8)
        assert (await self.store.new_keys(grant, keys, 32))[0] == 2
        await self.store.release(grant)
        if meter_took_them:
            for kind, key in keys.items():
                self.security(i).set_key(kind, key)
        return keys

    def start_worker(self, settings: WorkerSettings = SETTINGS, link_factory=None,
                     store: FleetStore | None = None) -> Worker:
        self.worker = Worker(store or self.store, self.broker, settings, name="test-worker", link_factory=link_factory)
        self.running = asyncio.create_task(self.worker.run())
        return self.worker

    async def campaign(self, kind: str, *indexes: int) -> int:
        campaign, _ = await start_campaign(self.store, self.broker, name=f"{kind} test", kind=kind,
                                           serials=[self.meter(i)["serial"] for i in indexes])
        return campaign

    async def outcome(self, campaign: int, timeout: float = 60.0) -> dict[str, dict]:
        """serial → (state, attempts, error) of each job, once none is queued."""
        deadline = time.monotonic() + timeout
        while (await self.store.campaign_status(campaign))["queued"]:
            assert time.monotonic() < deadline, await self.jobs(campaign)
            await asyncio.sleep(0.1)
        return await self.jobs(campaign)

    async def jobs(self, campaign: int) -> dict[str, dict]:
        return {r["serial"]: dict(r) for r in await self.store.pool.fetch(
            "SELECT m.serial, j.state, j.attempts, j.error, j.rows FROM job j JOIN meter m ON m.id = j.meter_id "
            "WHERE j.campaign_id = $1", campaign)}

    async def key_states(self, i: int) -> dict[tuple[str, int], str]:
        return {(r["kind"], r["generation"]): r["state"] for r in await self.store.pool.fetch(
            "SELECT kind, generation, state FROM meter_key WHERE meter_id = $1", await self.meter_id(i))}

    async def stored_key(self, i: int, kind: str, state: str = "ACTIVE") -> bytes:
        wrapped = await self.store.pool.fetchval("SELECT wrapped FROM meter_key WHERE meter_id = $1 AND kind = $2 "
                                                 "AND state = $3", await self.meter_id(i), kind, state)
        return KeyVault(self.kek).unwrap(bytes(wrapped))


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, pg_dsn: str, nats_url: str, meters: int, **fractions: float):
    now = time.time()
    scenario = FleetScenario(meters=meters, start=float(int(now)) - 3600, speed=1.0, real_start=now,
                             base_port=services.free_port_block(meters), seed=21, fractions=fractions)
    manifest = scenario.manifest()
    (tmp_path / "fleet.json").write_text(json.dumps(manifest))
    fleet = FleetProcess(scenario, list(range(meters)), FleetLimits())
    await fleet.listen()
    kek = secrets.token_bytes(32)
    store = await FleetStore.open(pg_dsn, KeyVault(kek), migrate=True)
    await store.add_meters(read_manifest(tmp_path / "fleet.json"))
    broker = await Broker.connect(nats_url)
    await broker.ensure_streams()
    r = Rig(fleet, manifest, store, broker, kek)
    try:
        yield r
    finally:
        if r.worker is not None:
            r.worker.stop()
            await r.running
        await broker.close()
        await store.close()
        await fleet.close()


@pytest.mark.timeout(120)
def test_a_meter_that_hangs_up_on_the_active_keys_is_settled_on_the_new_ones(tmp_path, pg_dsn, nats_url):
    """Meters 0 and 1 took the NEW keys of a change cut short and close the connection on the
    ACTIVE ones: a read (meter 0) and a key change (meter 1) try the NEW keys in the same
    session, promote them and go on. Meter 2, with no change waiting, is read as before."""
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 3) as r:
            took = {i: await r.cut_short(i) for i in (0, 1)}
            r.start_worker(link_factory=hanging_up)
            read = await r.outcome(await r.campaign("read", 0, 2))
            change = await r.outcome(await r.campaign("key_change", 1))
            states = {i: await r.key_states(i) for i in range(3)}
            active = {i: {kind: await r.stored_key(i, kind) for kind in ("ek", "ak")} for i in (0, 1)}
            return r.manifest, took, read, change, states, active, r.worker.stats

    manifest, took, read, change, states, active, stats = asyncio.run(scenario())
    serial = [m["serial"] for m in manifest["meters"]]
    assert read[serial[0]]["state"] == "done" and read[serial[0]]["rows"] > 0, read
    assert read[serial[2]]["state"] == "done" and read[serial[2]]["attempts"] == 1, read
    assert change[serial[1]]["state"] == "done", change
    for i in (0, 1):
        assert states[i] == {("ek", 1): "EXPIRED", ("ak", 1): "EXPIRED", ("master", 1): "ACTIVE",
                             ("ek", 2): "ACTIVE", ("ak", 2): "ACTIVE"}, (i, states[i])
        assert active[i] == took[i]
    assert states[2] == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("master", 1): "ACTIVE"}
    assert stats.keys_settled == 2


@pytest.mark.timeout(120)
def test_a_meter_silent_under_both_keys_settles_nothing(tmp_path, pg_dsn, nats_url):
    """Silence is no answer: a meter that answers neither the ACTIVE nor the NEW keys leaves
    both generations as they were, through a read and a key change that give up."""
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 1, silent=1.0) as r:
            await r.cut_short(0, meter_took_them=False)
            r.start_worker(dataclasses.replace(SETTINGS, max_attempts=2,
                                               timeouts=Timeouts(1.0, 1.0, 1.0, 6.0)))
            outcomes = [await r.outcome(await r.campaign(kind, 0)) for kind in ("read", "key_change")]
            return r.meter(0)["serial"], outcomes, await r.key_states(0)

    serial, outcomes, states = asyncio.run(scenario())
    for outcome in outcomes:
        assert outcome[serial]["state"] == "failed" and "gave up after 2 attempts" in outcome[serial]["error"], outcome
    assert states == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("master", 1): "ACTIVE",
                      ("ek", 2): "NEW", ("ak", 2): "NEW"}


@pytest.mark.timeout(120)
def test_new_keys_whose_counters_the_meter_has_seen_further_are_resynced(tmp_path, pg_dsn, nats_url):
    """The meter took the NEW keys and has accepted counter 1000 of theirs (the store, restored
    meanwhile, reserved 32): it refuses the settlement's association; its frame counter,
    verified with the NEW AK, moves that generation's counter above 1000, and the NEW keys
    are promoted and read under."""
    seen = 1000

    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 1) as r:
            keys = await r.cut_short(0)
            m = r.meter(0)
            security = ClientSecurity(mechanism=5, suite=0, policy=m["policy"],
                                      client_system_title=DEFAULT_CLIENT_SYSTEM_TITLE,
                                      server_system_title=bytes.fromhex(m["system_title"]), ek=keys["ek"],
                                      ak=keys["ak"], invocation_counter=CounterStore(last_used=seen - 1))
            link = WrapperLink(m["host"], m["port"], client_sap=1, server_sap=1, timeout=5)
            async with MeterClient(link, mechanism=5, security=security) as client:
                await client.get("0-0:1.0.0.255", 2, class_id=8)
            r.start_worker()
            read = await r.outcome(await r.campaign("read", 0))
            states = await r.key_states(0)
            top = await r.store.pool.fetchval("SELECT tx_reserved FROM frame_counter WHERE key_generation = 2")
            return m["serial"], read, states, top

    serial, read, states, top = asyncio.run(scenario())
    assert read[serial]["state"] == "done" and read[serial]["rows"] > 0, read
    assert states[("ek", 2)] == states[("ak", 2)] == "ACTIVE" and states[("ek", 1)] == "EXPIRED"
    assert top > seen + 1  # the counter the meter has seen, and the association (its AARQ) above it


@pytest.mark.timeout(120)
def test_key_transfer_answered_with_temporary_failure_is_tried_again(tmp_path, pg_dsn, nats_url):
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 1) as r:
            meter_security = r.fleet.server(0).directory.bindings["security"]
            real = meter_security.key_transfer
            asked = []

            def busy_once(client, parameters, ctx):
                asked.append(client)
                if len(asked) == 1:
                    raise CosemAccessError(DataAccessResult.TEMPORARY_FAILURE, "busy")
                return real(client, parameters, ctx)

            meter_security.key_transfer = busy_once
            r.start_worker()
            change = await r.outcome(await r.campaign("key_change", 0))
            states = await r.key_states(0)
            held = {"ek": r.security(0).ek, "ak": r.security(0).ak}
            stored = {kind: await r.stored_key(0, kind) for kind in ("ek", "ak")}
            return r.meter(0)["serial"], change, states, held, stored, len(asked)

    serial, change, states, held, stored, asked = asyncio.run(scenario())
    assert (change[serial]["state"], change[serial]["attempts"]) == ("done", 2), change
    assert asked == 2
    # the keys of the first try were discarded (the meter did not take them), the second's are ACTIVE
    assert states == {("ek", 1): "EXPIRED", ("ak", 1): "EXPIRED", ("master", 1): "ACTIVE",
                      ("ek", 2): "EXPIRED", ("ak", 2): "EXPIRED", ("ek", 3): "ACTIVE", ("ak", 3): "ACTIVE"}
    assert held == stored


@pytest.mark.timeout(120)
def test_a_meter_without_a_usable_master_key_fails_its_change_with_nothing_written(tmp_path, pg_dsn, nats_url):
    """Meter 0 has no master key in the store, meter 1 one that does not unwrap with the KEK:
    each key change fails saying so, before any new key or counter is written; meter 1 is
    still read."""
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 2) as r:
            await r.store.pool.execute("DELETE FROM meter_key WHERE meter_id = $1 AND kind = 'master'",
                                       await r.meter_id(0))
            await r.store.pool.execute("UPDATE meter_key SET wrapped = $2 WHERE meter_id = $1 AND kind = 'master'",
                                       await r.meter_id(1), secrets.token_bytes(40))
            r.start_worker()
            change = await r.outcome(await r.campaign("key_change", 0, 1))
            read = await r.outcome(await r.campaign("read", 1))
            states = [await r.key_states(i) for i in (0, 1)]
            generations = await r.store.pool.fetchval("SELECT array_agg(DISTINCT key_generation) FROM frame_counter")
            return [m["serial"] for m in r.manifest["meters"]], change, read, states, generations

    (s0, s1), change, read, states, generations = asyncio.run(scenario())
    assert change[s0]["state"] == "failed" and "master key is not in the store" in change[s0]["error"], change
    assert change[s1]["state"] == "failed" and "master key does not unwrap" in change[s1]["error"], change
    assert states[0] == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE"}
    assert states[1] == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("master", 1): "ACTIVE"}
    assert generations == [1]
    assert read[s1]["state"] == "done" and read[s1]["rows"] > 0, read


@pytest.mark.timeout(120)
def test_the_campaign_in_the_store_decides_a_jobs_kind_not_its_message(tmp_path, pg_dsn, nats_url, caplog):
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 2) as r:
            store_id = await r.store.store_id()
            ids = [await r.meter_id(i) for i in (0, 1)]
            read = await r.store.create_campaign("read", "read", {}, [ids[0]])
            change = await r.store.create_campaign("change", "key_change", {}, [ids[1]])
            for campaign, meter_id, said in ((read, ids[0], "key_change"), (change, ids[1], "read")):
                job = Job(campaign, meter_id, said)
                await r.broker.publish(BULK, job.to_bytes(), f"{store_id}:{job.message_id}")
            r.start_worker()
            outcomes = (await r.outcome(read), await r.outcome(change))
            return [m["serial"] for m in r.manifest["meters"]], outcomes, [await r.key_states(i) for i in (0, 1)]

    with caplog.at_level(logging.WARNING, logger="smartmeter.hes.fleet.worker"):
        (s0, s1), (read, change), states = asyncio.run(scenario())
    assert read[s0]["state"] == "done" and read[s0]["rows"] > 0, read  # read, not given new keys
    assert states[0] == {("ek", 1): "ACTIVE", ("ak", 1): "ACTIVE", ("master", 1): "ACTIVE"}
    assert change[s1]["state"] == "done" and not change[s1]["rows"], change  # new keys, nothing read
    assert states[1][("ek", 2)] == "ACTIVE" and states[1][("ek", 1)] == "EXPIRED"
    assert caplog.text.count("its campaign in the store is") == 1  # one line for the condition


@pytest.mark.timeout(120)
def test_a_store_whose_id_changed_takes_its_own_jobs_and_leaves_another_stores(tmp_path, pg_dsn, nats_url, caplog):
    """The campaigns were published under the store's id; then the store comes back under a
    new id (restored into a database made afresh): their jobs are still its own. A job of
    another store that happens to name a campaign and meter of this one stays foreign."""
    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 2) as r:
            first = await r.campaign("read", 0)
            ids = [await r.meter_id(i) for i in (0, 1)]
            other = await r.store.create_campaign("numbered alike", "read", {}, [ids[1]])
            foreign = Job(other, ids[1])
            await r.broker.publish(BULK, foreign.to_bytes(), f"another-store:{foreign.message_id}")
            await r.store.pool.execute("UPDATE setting SET value = convert_to('restored', 'UTF8') "
                                       "WHERE name = 'store_id'")
            restored = await FleetStore.open(pg_dsn, KeyVault(r.kek))  # a worker started after the restore
            try:
                assert await restored.store_id() == "restored"
                r.start_worker(store=restored)
                done = await r.outcome(first)
                deadline = time.monotonic() + 10
                while "belongs to another store" not in caplog.text and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                left = await r.jobs(other)
                waiting = (await r.broker.stream_state("HES_JOBS"))["messages"]
                r.worker.stop()
                await r.running
                r.worker = None
            finally:
                await restored.close()
            return [m["serial"] for m in r.manifest["meters"]], done, left, waiting

    with caplog.at_level(logging.WARNING, logger="smartmeter.hes.fleet.worker"):
        (s0, s1), done, left, waiting = asyncio.run(scenario())
    assert done[s0]["state"] == "done" and done[s0]["rows"] > 0, done
    assert left[s1]["state"] == "queued" and waiting == 1
    assert "job job:2:2 belongs to another store (another-store)" in caplog.text


def test_settling_on_the_new_keys_ends_with_the_lease(tmp_path, pg_dsn, nats_url):
    """A meter that does not answer, a grant whose lease has a second left and time-outs that
    would take 20 s: the association under the NEW keys gives up when the lease ends."""
    slow = Timeouts(connect=5.0, association=10.0, request=5.0, total=30.0)

    async def scenario():
        async with rig(tmp_path, pg_dsn, nats_url, 1, silent=1.0) as r:
            await r.cut_short(0, meter_took_them=False)
            grant = await r.store.begin_session(await r.meter_id(0), "test", 30.0, 8)
            granted_for = grant.lease_deadline - time.monotonic()
            worker = Worker(r.store, r.broker, dataclasses.replace(SETTINGS, timeouts=slow))
            grant.lease_deadline = time.monotonic() + 1.0 + 1.5  # the margin kept, and 1.5 s
            began = time.monotonic()
            with pytest.raises(SessionTimeout):
                await worker._settled_on_new_keys(grant)
            took = time.monotonic() - began
            grant.lease_deadline = time.monotonic() + 0.5
            with pytest.raises(SessionTimeout, match="no time is left within the lease"):
                await worker._settled_on_new_keys(grant)
            await r.store.release(grant)
            return granted_for, took

    granted_for, took = asyncio.run(scenario())
    assert 29.0 < granted_for <= 30.0
    assert 1.4 < took < slow.association / 2  # the lease's 1.5 s, not the association's time-out


def test_pushes_under_expired_keys_are_taken_for_a_grace_then_refused(pg_dsn, caplog):
    """The keys a change replaced verify pushes for a day (pushes on their way at the change),
    not for ever: after it their rows are left out of the push keys, said once per meter; the
    store's setting changes the grace."""
    from smartmeter.hes.store.pg import MeterRecord

    title = b"GRC\x00\x00\x00\x00\x01"

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(secrets.token_bytes(32)), migrate=True)
        try:
            await store.add_meters([MeterRecord("GRACE1", title, "127.0.0.1", 1,
                                                keys={"ek": bytes(16), "ak": bytes(16), "master": bytes(32)})])
            (meter_id, _, _), = await store.meter_ids()
            grant = await store.begin_session(meter_id, "t", 30.0, 8)
            await store.new_keys(grant, {"ek": b"\x02" * 16, "ak": b"\x12" * 16}, 8)
            await store.promote_keys(grant, 2, None)
            await store.new_keys(grant, {"ek": b"\x03" * 16, "ak": b"\x13" * 16}, 8)
            await store.release(grant)

            async def generations() -> set[tuple[int, str]]:
                return {(r["generation"], r["state"]) for r in await store.push_key_rows([title])}

            expired_an_hour_ago = await generations()
            await store.pool.execute("UPDATE meter_key SET changed = now() - interval '25 hours' WHERE generation = 1")
            past = [await generations() for _ in range(2)]
            await store.pool.execute("UPDATE setting SET value = convert_to('172800', 'UTF8') "
                                     "WHERE name = 'expired_key_grace'")
            longer_grace = await generations()
            return expired_an_hour_ago, past, longer_grace
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING, logger="smartmeter.hes.store.pg"):
        expired_an_hour_ago, past, longer_grace = asyncio.run(scenario())
    every = {(1, "EXPIRED"), (2, "ACTIVE"), (3, "NEW")}
    assert expired_an_hour_ago == every and longer_grace == every
    assert past == [{(2, "ACTIVE"), (3, "NEW")}] * 2
    assert caplog.text.count("its keys of generation 1 expired") == 1
    assert title.hex().upper() in caplog.text
