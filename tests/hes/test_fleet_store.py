"""The fleet store on a private PostgreSQL: migrations, keys at rest, counter blocks, leases,
cell throttling, partitioned readings stored once, outcomes written once."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from smartmeter.hes.store.pg import (
    FleetStore, KeyVault, LeaseLost, MeterBusy, MeterRecord, Reading, SessionResult, StoreError, migrations,
)

KEK = bytes(range(32))
UTC = dt.timezone.utc
PROFILE = "1-0:99.1.0.255"


def run(coro):
    return asyncio.run(coro)


def meters(n: int, cells: int = 1) -> list[MeterRecord]:
    return [MeterRecord(f"FLT{i:05d}", (0x4B534D0000000000 + i).to_bytes(8, "big"), "127.0.0.1", 21000 + i,
                        cell=f"cell-{i % cells}", keys={"ek": bytes([i]) * 16, "ak": bytes([i + 100]) * 16})
            for i in range(n)]


async def opened(dsn: str, n: int = 4, cells: int = 1) -> FleetStore:
    store = await FleetStore.open(dsn, KeyVault(KEK), migrate=True)
    await store.add_meters(meters(n, cells), (2, 5.0, 3.0))
    return store


def profile_rows(first: dt.datetime, count: int, wh_per_interval: int = 100) -> list[Reading]:
    return [Reading(PROFILE, "1-0:1.8.0.255", 2, first + dt.timedelta(minutes=15 * k), wh_per_interval * k)
            for k in range(count)]


def test_migrations_apply_once_even_when_two_processes_race(pg_dsn):
    async def scenario():
        a = await FleetStore.open(pg_dsn, None, check=False)
        b = await FleetStore.open(pg_dsn, None, check=False)
        applied = await asyncio.gather(a.migrate(), b.migrate())
        versions = await a.pool.fetch("SELECT version FROM schema_migration ORDER BY version")
        again = await a.migrate()
        await a.close()
        await b.close()
        return applied, [r["version"] for r in versions], again

    applied, versions, again = run(scenario())
    shipped = [v for v, _, _ in migrations()]
    assert sorted(applied[0] + applied[1]) == sorted(name for _, name, _ in migrations())
    assert versions == shipped and again == []


def test_a_store_behind_the_code_says_how_to_migrate(pg_dsn):
    async def scenario():
        with pytest.raises(StoreError, match="hes db migrate"):
            await FleetStore.open(pg_dsn, None)

    run(scenario())


def test_keys_are_wrapped_at_rest_and_need_the_right_kek(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 2)
        raw = await store.pool.fetch("SELECT wrapped FROM meter_key")
        ids = await store.meter_ids()
        grant = await store.begin_session(ids[1][0], "w", 30, 8)
        await store.close()
        wrong = await FleetStore.open(pg_dsn, KeyVault(bytes(32)))
        with pytest.raises(StoreError, match="key-encryption key"):
            await wrong.begin_session(ids[0][0], "w", 30, 8)
        await wrong.close()
        return raw, grant

    raw, grant = run(scenario())
    plain = {bytes([i]) * 16 for i in range(2)} | {bytes([i + 100]) * 16 for i in range(2)}
    assert all(bytes(r["wrapped"]) not in plain and len(r["wrapped"]) == 24 for r in raw)
    assert grant.keys == {"ek": bytes([1]) * 16, "ak": bytes([101]) * 16}


def test_counter_blocks_never_overlap_and_only_move_up(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()

        async def one(k: int):
            # sessions of many workers at once: each gets its lease in turn, then a block
            while True:
                try:
                    grant = await store.begin_session(meter_id, f"w{k}", 30, 16)
                    break
                except MeterBusy:
                    await asyncio.sleep(0.001)
            extra = await store.reserve_counters(meter_id, grant.key_generation, 5)
            await store.release(grant)
            return [grant.counter_block, extra]

        blocks = [b for pair in await asyncio.gather(*(one(k) for k in range(20))) for b in pair]
        await store.advance_counter(meter_id, 1, 10)  # below: no change
        low = await store.pool.fetchval("SELECT tx_reserved FROM frame_counter WHERE meter_id = $1", meter_id)
        await store.advance_counter(meter_id, 1, 100_000)
        high = await store.begin_session(meter_id, "w", 30, 16)
        await store.close()
        return blocks, low, high.counter_block

    blocks, low, after_resync = run(scenario())
    used = [c for first, last in blocks for c in range(first, last + 1)]
    assert len(used) == len(set(used)) == 20 * (16 + 5)
    assert min(used) == 1 and low == 20 * 21
    assert after_resync == (100_001, 100_016)


def test_counters_refuse_to_wrap(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        await store.pool.execute("UPDATE frame_counter SET tx_reserved = 4294967290")
        with pytest.raises(StoreError, match="used up"):
            await store.begin_session(meter_id, "w", 30, 16)
        await store.close()

    run(scenario())


def test_one_lease_per_meter_and_a_lost_lease_stores_nothing(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        campaign = await store.create_campaign("c", "read", {}, [meter_id])
        first = await store.begin_session(meter_id, "a", 0.2, 8)
        assert (await store.claim(meter_id, "b", 30, 8, campaign=campaign)).status == "busy"
        with pytest.raises(MeterBusy):
            await store.begin_session(meter_id, "b", 30, 8)
        await asyncio.sleep(0.3)  # a's lease runs out: b may take the meter
        second = await store.begin_session(meter_id, "b", 30, 8)
        rows = profile_rows(dt.datetime(2026, 12, 1, tzinfo=UTC), 4)
        with pytest.raises(LeaseLost):
            await store.finish_session(first, SessionResult(rows, {}, {PROFILE: rows[-1].time}, 7, 3),
                                       (campaign, "a"))
        stored_after_lost = await store.pool.fetchval("SELECT count(*) FROM reading")
        stored = await store.finish_session(second, SessionResult(rows, {}, {PROFILE: rows[-1].time}, 9, 3),
                                            (campaign, "b"))
        job = await store.pool.fetchrow("SELECT state, worker, rows FROM job")
        await store.close()
        return stored_after_lost, stored, dict(job)

    stored_after_lost, stored, job = run(scenario())
    assert stored_after_lost == 0 and stored == 4
    assert job == {"state": "done", "worker": "b", "rows": 4}


def test_readings_are_stored_once_and_marks_and_counters_only_move_up(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        start = dt.datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # rows cross into December
        rows = profile_rows(start, 8)
        g = await store.begin_session(meter_id, "w", 30, 8)
        first = await store.finish_session(g, SessionResult(rows, {(PROFILE, "1-0:1.8.0.255", 2): (0, 30)},
                                                            {PROFILE: rows[-1].time}, 50, 3), None)
        g = await store.begin_session(meter_id, "w", 30, 8)
        # the same rows again, an older mark and a lower counter from the meter
        again = await store.finish_session(g, SessionResult(rows[2:], {}, {PROFILE: rows[3].time}, 20, 3), None)
        g = await store.begin_session(meter_id, "w", 30, 8)
        partitions = await store.pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'reading'::regclass ORDER BY 1")
        count = await store.pool.fetchval("SELECT count(*) FROM reading")
        series = await store.pool.fetchrow("SELECT source, obis, attribute, scaler, unit FROM series")
        await store.close()
        return first, again, g, [p["relname"] for p in partitions], count, dict(series)

    first, again, grant, partitions, count, series = run(scenario())
    assert (first, again, count) == (8, 0, 8)
    assert grant.marks[PROFILE] == dt.datetime(2026, 12, 1, 0, 45, tzinfo=UTC)
    assert grant.rx_last == 50
    assert partitions == ["reading_y2026m11", "reading_y2026m12"]
    assert series == {"source": PROFILE, "obis": "1-0:1.8.0.255", "attribute": 2, "scaler": 0, "unit": 30}


def test_cell_slots_bound_sessions_and_expire_with_a_dead_holder(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 6, cells=1)  # cell-0: at most 2 sessions, 5 connections/s, burst 3
        ids = [i for i, _, _ in await store.meter_ids()]
        campaign = await store.create_campaign("c", "read", {}, ids)

        async def claim(k: int, holder: str, lease: float = 0.3):
            return await store.claim(ids[k], holder, lease, 8, campaign=campaign, throttle=True)

        got = [await claim(k, h) for k, h in enumerate("abc")]
        a = got[0].grant
        await store.release(a)
        after_release = await claim(2, "c")
        full = await claim(3, "d")
        await asyncio.sleep(0.4)  # b and c died holding their slots: their leases run out
        after_expiry = [await claim(k, h, 30) for k, h in zip((3, 4, 5), "efg")]
        await store.set_cell_limits("cell-0", 1, 5.0)
        slots = await store.pool.fetchval("SELECT count(*) FROM cell_slot WHERE cell = 'cell-0'")
        await store.close()
        return got, after_release, full, after_expiry, slots

    got, after_release, full, after_expiry, slots = run(scenario())
    assert [c.status for c in got] == ["granted", "granted", "cell_full"]
    assert sorted(c.slot[0] for c in got[:2]) == [1, 2]
    assert after_release.status == "granted" and after_release.slot[0] == got[0].slot[0]
    assert full.status == "cell_full"
    # the burst of 3 went to a, b and c; 0.4 s refilled 2 tokens (5/s) for e and f; g finds
    # both slots taken again
    assert [c.status for c in after_expiry] == ["granted", "granted", "cell_full"]
    assert slots == 1


def test_connect_tokens_allow_a_burst_then_the_rate(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 5)  # one cell: 2 sessions at once, 5 connections/s, burst 3
        await store.set_cell_limits("cell-0", 10, 5.0, 3.0)
        ids = [i for i, _, _ in await store.meter_ids()]
        campaign = await store.create_campaign("c", "read", {}, ids)
        began = time.monotonic()
        claims = [await store.claim(i, f"w{i}", 30, 8, campaign=campaign, throttle=True) for i in ids[:4]]
        elapsed = time.monotonic() - began
        slot_kept = claims[3].slot
        await asyncio.sleep(claims[3].wait)
        retried = await store.claim(ids[3], "w", 30, 8, campaign=campaign, throttle=True, slot=slot_kept)
        held = await store.pool.fetchval("SELECT count(*) FROM cell_slot WHERE holder IS NOT NULL")
        await store.close()
        return claims, retried, held, elapsed

    claims, retried, held, elapsed = run(scenario())
    assert [c.status for c in claims] == ["granted"] * 3 + ["throttled"]
    # the fourth waits for a token: 1/5 s, less what refilled since the burst was spent
    assert 0.2 - elapsed - 0.01 <= claims[3].wait <= 0.2 and claims[3].slot is not None
    assert retried.status == "granted" and retried.slot == claims[3].slot
    assert held == 4  # the throttled claim kept its slot, and no slot was taken twice


def test_a_throttled_claim_whose_slot_expired_takes_a_free_one_or_none(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 3)
        await store.set_cell_limits("cell-0", 1, 0.5, 1.0)  # one session; a connection every 2 s
        ids = [i for i, _, _ in await store.meter_ids()]
        campaign = await store.create_campaign("c", "read", {}, ids)
        first = await store.claim(ids[0], "w1", 30, 8, campaign=campaign, throttle=True)
        await store.release(first.grant)
        throttled = await store.claim(ids[1], "w1", 0.2, 8, campaign=campaign, throttle=True)
        await asyncio.sleep(0.3)  # its slot's lease ran out: another takes the slot
        other = await store.claim(ids[2], "w2", 30, 8, campaign=campaign, throttle=True)
        again = await store.claim(ids[1], "w1", 30, 8, campaign=campaign, throttle=True, slot=throttled.slot)
        await store.close()
        return throttled, other, again

    throttled, other, again = run(scenario())
    assert throttled.status == "throttled" and throttled.slot is not None
    assert other.status in ("throttled", "granted") and other.slot[0] == throttled.slot[0]
    assert again.status == "cell_full"  # the slot it kept is no longer its own: one session in the cell


def test_a_holder_never_takes_over_its_own_valid_lease(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        campaign = await store.create_campaign("c", "read", {}, [meter_id])
        first = await store.begin_session(meter_id, "w", 30, 8)
        second = await store.claim(meter_id, "w", 30, 8, campaign=campaign)  # e.g. the urgent lane of one worker
        tokens = await store.pool.fetchval("SELECT count(*) FROM cell WHERE tokens < burst")
        await store.close()
        return first, second, tokens

    first, second, tokens = run(scenario())
    assert second.status == "busy" and first.lease_token is not None
    assert tokens == 0  # a claim that could not have the meter took no connection token


def test_a_job_begun_too_often_and_never_ended_is_failed(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        campaign = await store.create_campaign("c", "read", {}, [meter_id])
        statuses = []
        for _ in range(4):
            claim = await store.claim(meter_id, "w", 0.01, 8, campaign=campaign, max_claims=3)
            statuses.append(claim.status)
            await asyncio.sleep(0.02)  # the session's worker died: its lease runs out
        job = dict(await store.pool.fetchrow("SELECT state, claims, error FROM job"))
        await store.close()
        return statuses, job

    statuses, job = run(scenario())
    assert statuses == ["granted"] * 3 + ["poison"]
    assert job["state"] == "failed" and job["claims"] == 3 and "never ended" in job["error"]


def test_a_job_has_exactly_one_outcome(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 2)
        ids = [i for i, _, _ in await store.meter_ids()]
        campaign = await store.create_campaign("c", "read", {}, ids)
        assert await store.fail_job(campaign, ids[0], "authentication failed", "w1")
        assert not await store.fail_job(campaign, ids[0], "again", "w2")
        closed = await store.claim(ids[0], "w3", 30, 8, campaign=campaign, throttle=True)
        assert (closed.status, closed.job_state) == ("closed", "failed")
        g = await store.begin_session(ids[0], "w3", 30, 8)
        rows = profile_rows(dt.datetime(2026, 12, 1, tzinfo=UTC), 2)
        assert await store.finish_session(g, SessionResult(rows, {}, {}, None, None), (campaign, "w3")) == 0
        # nothing of the late session is stored, and its lease is given back
        assert await store.pool.fetchval("SELECT count(*) FROM reading") == 0
        assert await store.pool.fetchval("SELECT count(*) FROM meter_lease") == 0
        attempts = await store.count_attempt(campaign, ids[1], "no answer")
        status = await store.campaign_status(campaign)
        reopened = await store.reopen_failed(campaign)
        await store.close()
        return attempts, status, reopened

    attempts, status, reopened = run(scenario())
    assert attempts == 1
    assert (status["done"], status["failed"], status["queued"]) == (0, 1, 1)
    assert status["failures"] == [{"serial": "FLT00000", "error": "authentication failed", "attempts": 1}]
    assert len(reopened) == 1


def test_an_unreachable_database_is_one_clear_error():
    from smartmeter.hes.store.pg import StoreUnavailable

    async def scenario():
        with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL at postgresql://u@127.0.0.1:1/x"):
            await FleetStore.open("postgresql://u@127.0.0.1:1/x", None)

    run(scenario())


def test_a_session_whose_lease_ran_out_gets_no_more_counters(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, 1)
        (meter_id, _, _), = await store.meter_ids()
        grant = await store.begin_session(meter_id, "paused", 0.3, 8)
        more = await store.reserve_counters(meter_id, grant.key_generation, 8, grant.lease_token)
        await asyncio.sleep(0.5)  # the worker paused past its lease
        with pytest.raises(LeaseLost):
            await store.reserve_counters(meter_id, grant.key_generation, 8, grant.lease_token)
        other = await store.begin_session(meter_id, "next", 30.0, 8)
        with pytest.raises(LeaseLost):  # nor once another session holds the meter
            await store.reserve_counters(meter_id, grant.key_generation, 8, grant.lease_token)
        mine = await store.reserve_counters(meter_id, other.key_generation, 8, other.lease_token)
        await store.close()
        return grant.counter_block, more, other.counter_block, mine

    first, more, other, mine = run(scenario())
    # blocks follow each other; the refused top-ups took none
    assert (first, more, other, mine) == ((1, 8), (9, 16), (17, 24), (25, 32))
