"""Bad input and bad days for the head-end at scale: meters that refuse, stay silent, cannot
select, or answer with a lower counter than before; PostgreSQL restarted mid-campaign; poison
jobs; a database or broker down at start; a full broker store."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import subprocess
import time

import pytest

from fleet_support import SMARTMETER, HeadEnd, energy, fleet_power

PROFILE = "1-0:99.1.0.255"


def outcomes(h: HeadEnd, campaign: int) -> dict[str, dict]:
    return {r["serial"]: dict(r) for r in h.query(
        "SELECT m.serial, j.state, j.attempts, j.error, m.capabilities FROM job j JOIN meter m ON m.id = j.meter_id "
        "WHERE j.campaign_id = $1", campaign)}


@pytest.mark.timeout(240)
def test_refusing_silent_and_limited_meters_each_get_the_outcome_they_deserve(head_end):
    h = head_end
    # a start an hour back: the load profiles have rows to select (the default start is now)
    began = dt.datetime.fromtimestamp(time.time() // 900 * 900 - 3600, dt.timezone.utc)
    manifest = h.start_fleet(40, "--refusing", "0.1", "--silent", "0.1", "--no-range", "0.2",
                             "--no-selective", "0.1", "--seed", "3", "--start", began.isoformat())
    h.import_fleet()
    # one meter answered the head-end before with a counter far above what it will send now
    lowered = next(m for m in manifest["meters"] if not m["faults"] and not m["capabilities"])
    h.query("UPDATE frame_counter SET rx_last = 1000000 FROM meter WHERE meter.id = frame_counter.meter_id "
            "AND meter.serial = $1", lowered["serial"])
    h.start_worker("--max-attempts", "2", "--session-timeout", "4", "--request-timeout", "1",
                   "--association-timeout", "2", "--connect-timeout", "1")
    campaign = h.start_campaign()
    h.wait_campaign(campaign, timeout=120)
    got = outcomes(h, campaign)
    for m in manifest["meters"]:
        o = got[m["serial"]]
        if "refusing" in m["faults"]:  # other keys: a permanent failure, tried once
            assert (o["state"], o["attempts"]) == ("failed", 1) and "refused the association" in o["error"], o
        elif "silent" in m["faults"]:  # no answer: tried again after a back-off, then given up
            assert (o["state"], o["attempts"]) == ("failed", 2) and "gave up after 2 attempts" in o["error"], o
        elif m is lowered:  # a replayed or rolled-back answer: permanent, never taken as new
            assert (o["state"], o["attempts"]) == ("failed", 1) and "invocation counter" in o["error"], o
        else:
            assert o["state"] == "done", o
            selection = json.loads(o["capabilities"]).get(f"selection:{PROFILE}")
            expected = {"no-range": "entry", "no-selective": "whole"}.get(next(iter(m["capabilities"]), ""))
            assert selection == expected, (m["capabilities"], selection)
    # the meters that cannot select by range gave the same rows as the others
    start = manifest["start_epoch"]
    for m in manifest["meters"]:
        if m["capabilities"] and not m["faults"]:
            rows = h.query(f"""SELECT extract(epoch FROM r.time)::float8 AS t, r.raw FROM reading r
                               JOIN series s ON s.id = r.series_id JOIN meter x ON x.id = s.meter_id
                               WHERE x.serial = $1 AND s.source = '{PROFILE}' AND s.obis = '1-0:1.8.0.255'""",
                           m["serial"])
            assert rows and all(r["raw"] == energy(fleet_power(m["index"])[0], start, r["t"]) for r in rows)
    rx = h.query("SELECT f.rx_last FROM frame_counter f JOIN meter m ON m.id = f.meter_id WHERE m.serial = $1",
                 lowered["serial"])
    assert rx[0]["rx_last"] == 1000000  # a counter only moves up


@pytest.mark.timeout(240)
def test_postgresql_restarted_mid_campaign_loses_nothing(head_end, postgres_server):
    h = head_end
    h.start_fleet(1500, "--cells", "2")
    h.import_fleet("--max-sessions", "8", "--connects-per-s", "2000")
    for _ in range(2):
        h.start_worker("--concurrency", "8")
    campaign = h.start_campaign()
    restarted = []

    def restart_once(status):
        if not restarted and status.get("done", 0) > 100:
            postgres_server.restart("immediate")
            restarted.append(dict(status))

    status = h.wait_campaign(campaign, timeout=180, during=restart_once)
    assert restarted and restarted[0]["queued"] > 0
    assert status == {"done": 1500}
    # one register row per OBIS and meter: no session stored twice, none lost
    per_meter = h.query("SELECT s.meter_id, count(*) AS n FROM reading r JOIN series s ON s.id = r.series_id "
                        "WHERE s.source = '' GROUP BY s.meter_id")
    assert len(per_meter) == 1500 and {r["n"] for r in per_meter} == {2}
    logs = h.log("worker")
    assert "the store is unavailable" in logs and "the store is back" in logs
    assert logs.count("the store is unavailable") <= 2 * 2  # one line per worker and outage, not a flood
    report = h.stop_fleet()
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0


def test_poison_jobs_are_terminated_and_listed_as_failed(head_end, nats_url, pg_dsn, tmp_path):
    from smartmeter.hes.fleet.broker import BULK, Broker, Job
    from smartmeter.hes.fleet.worker import Worker, WorkerSettings
    from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(bytes(32)), migrate=True)
        await store.add_meters([MeterRecord("P1", b"SIMPOIS1", "127.0.0.1", 1, keys={"ek": bytes(16), "ak": bytes(16)})])
        (meter_id, _, _), = await store.meter_ids()
        campaign = await store.create_campaign("poison", "read", {}, [meter_id])
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        await broker.publish(BULK, Job(campaign, meter_id).to_bytes(), "poisoned")
        # two workers took the job and died with it (their sessions begun, never ended)
        for _ in range(2):
            await store.claim(meter_id, "dead", 0.01, 8, campaign=campaign, throttle=True, max_claims=2)
            await asyncio.sleep(0.02)
        # malformed messages and jobs of no campaign are terminated at once
        for data in (b"\xff not json", json.dumps({"campaign": "x", "meter": 1}).encode(), b"{" * 5000,
                     Job(999, meter_id).to_bytes()):
            await broker.publish(BULK, data, secrets.token_hex(8))
        worker = Worker(store, broker, WorkerSettings(max_claims=2))
        run = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 15
        while (worker.stats.poison < 4 or await store.pool.fetchval("SELECT state FROM job") == "queued") \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        worker.stop()
        await run
        job = dict(await store.pool.fetchrow("SELECT state, error FROM job"))
        remaining = (await broker.stream_state("HES_JOBS"))["messages"]
        await broker.close()
        await store.close()
        return job, worker.stats, remaining

    job, stats, remaining = asyncio.run(scenario())
    assert job["state"] == "failed" and "begun 2 times, never ended" in job["error"], job
    assert stats.poison == 4 and stats.failed == 1 and remaining == 0


def test_a_database_or_broker_down_at_start_is_one_clear_line_and_a_retry(head_end, postgres_server, tmp_path):
    h = head_end
    (tmp_path / "kek.hex").write_text(secrets.token_hex(32))
    down = h.run("hes", "worker", "--db", "postgresql://hes@127.0.0.1:1/none", "--wait-for-services", "1")
    assert down.returncode != 0 and "Traceback" not in down.stderr + down.stdout
    assert "cannot reach PostgreSQL at postgresql://hes@127.0.0.1:1/none" in down.stdout + down.stderr
    assert (down.stdout + down.stderr).count("cannot reach PostgreSQL") == 2  # the first try, and the last word
    h.ok("hes", "db", "migrate")
    no_broker = h.run("hes", "campaign", "start", "--nats", "nats://127.0.0.1:1", "--wait-for-services", "1")
    assert no_broker.returncode != 0 and "Traceback" not in no_broker.stderr + no_broker.stdout
    assert "cannot reach NATS at nats://127.0.0.1:1" in no_broker.stderr
    # the database comes up while the command waits for it
    postgres_server.stop()
    waiting = subprocess.Popen([*SMARTMETER, "hes", "db", "migrate", "--wait-for-services", "60"], env=h.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = waiting.stdout.readline()  # the database is started only once the command has said it waits
        assert "retrying for up to 60 s" in first, first + waiting.stderr.read()
        postgres_server.start()
        rest, errors = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, first + rest + errors
    assert "the schema is up to date" in rest


@pytest.mark.timeout(120)
def test_a_full_broker_store_slows_the_campaign_and_loses_nothing_silently(tmp_path, pg_dsn, nats_server_factory):
    small = nats_server_factory(max_file_store=96 * 1024)
    h = HeadEnd(tmp_path, pg_dsn, small.url)
    meters = [{"serial": f"FULL{i:05d}", "system_title": f"{0x46554C4C000000 + i:016X}", "host": "127.0.0.1",
               "port": 9, "ek": "00" * 16, "ak": "11" * 16} for i in range(3000)]
    (tmp_path / "fleet.json").write_text(json.dumps({"meters": meters}))
    h.import_fleet()
    began = time.monotonic()
    full = h.run("hes", "campaign", "start", "--publish-patience", "3")
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "Traceback" not in out, out
    assert time.monotonic() - began >= 3.0  # it waited and retried before it gave up
    assert out.count("NATS is not taking messages") >= 1
    assert "NATS took " in out, out
    taken = int(out.split("NATS took ")[1].split(" of 3000")[0])
    assert "`smartmeter hes campaign resume 1` publishes the rest" in out
    stream = asyncio.run(_stream_messages(small.url))
    assert 0 < taken == stream < 3000  # what NATS acknowledged is there, and nothing else
    assert h.status(1) == {"queued": 3000}  # every job still waits for its outcome in the store


async def _stream_messages(url: str) -> int:
    from smartmeter.hes.fleet.broker import Broker

    broker = await Broker.connect(url)
    try:
        return (await broker.stream_state("HES_JOBS"))["messages"]
    finally:
        await broker.close()


def test_a_second_store_on_the_same_broker_has_its_jobs_published(pg_dsn, postgres_server, nats_url):
    """Two stores (or one restored from a backup) number campaigns and meters alike: their jobs
    must not be taken by the broker for duplicates of each other's."""
    import services
    from smartmeter.hes.fleet.broker import Broker
    from smartmeter.hes.fleet.campaign import start_campaign
    from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

    other_dsn = services.create_database(postgres_server)

    async def scenario():
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        counts = []
        for dsn in (pg_dsn, other_dsn):
            store = await FleetStore.open(dsn, KeyVault(bytes(32)), migrate=True)
            await store.add_meters([MeterRecord(f"S{i}", bytes([i]) * 8, "127.0.0.1", 1) for i in range(1, 4)])
            await start_campaign(store, broker, name="same numbers")
            counts.append((await broker.stream_state("HES_JOBS"))["messages"])
            await store.close()
        await broker.close()
        return counts

    try:
        assert asyncio.run(scenario()) == [3, 6]
    finally:
        services.drop_database(postgres_server, other_dsn.rsplit("/", 1)[1])


@pytest.mark.timeout(120)
def test_a_worker_leaves_the_jobs_of_another_store_on_a_shared_broker_alone(tmp_path, pg_dsn, postgres_server,
                                                                             nats_url):
    """Two installations on one NATS: a worker of the one does not fail (terminate) the jobs of
    the other's campaign; it hands them back and says once what is wrong."""
    import services
    from smartmeter.hes.fleet.broker import Broker
    from smartmeter.hes.fleet.campaign import start_campaign
    from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

    other_dsn = services.create_database(postgres_server)
    h = HeadEnd(tmp_path, pg_dsn, nats_url)

    async def publish_the_others() -> None:
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        store = await FleetStore.open(other_dsn, KeyVault(bytes(32)), migrate=True)
        await store.add_meters([MeterRecord(f"O{i}", bytes([i]) * 8, "127.0.0.1", 1) for i in range(1, 4)])
        await start_campaign(store, broker, name="the other installation's")
        await store.close()
        await broker.close()

    try:
        h.ok("hes", "db", "migrate")
        (tmp_path / "kek.hex").write_text("00" * 32)
        asyncio.run(publish_the_others())
        h.start_worker("--concurrency", "2", "--no-pushes")
        deadline = time.monotonic() + 60
        while "belongs to another store" not in h.log("worker"):
            assert time.monotonic() < deadline, h.log("worker")
            time.sleep(0.3)
        time.sleep(2.0)
        assert asyncio.run(_stream_messages(nats_url)) == 3  # all three still there for their own workers
        assert h.log("worker").count("belongs to another store") == 1  # one line, not one per delivery
        other = HeadEnd(tmp_path / "other", other_dsn, nats_url)
        assert other.status(1) == {"queued": 3}
    finally:
        h.close()
        services.drop_database(postgres_server, other_dsn.rsplit("/", 1)[1])
