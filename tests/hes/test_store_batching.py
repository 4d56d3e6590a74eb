"""Claims, grants and finished sessions made at about the same time share one round trip
(hes.store.batching.Coalescer): each caller still gets its own answer, one bad call does not
fail the others, a result whose caller gave up is given back, and a claim cancelled while its
grant is fetched leaves the meter free."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from smartmeter.hes.store.batching import Coalescer
from test_fleet_store import opened


def run(coro):
    return asyncio.run(coro)


def test_calls_within_a_window_run_as_one_batch_and_each_gets_its_own_result():
    batches = []

    async def double(items):
        batches.append(list(items))
        return [2 * i for i in items]

    async def scenario():
        coalescer = Coalescer(double, window=0.01, max_batch=4)
        results = await asyncio.gather(*(coalescer.submit(i) for i in range(10)))
        await coalescer.close()
        return results

    assert run(scenario()) == [2 * i for i in range(10)]
    assert [len(b) for b in batches] == [4, 4, 2]  # max_batch, then the window's rest


def test_a_database_error_is_retried_call_by_call_so_only_the_bad_call_fails():
    async def strict(items):
        if 13 in items:
            raise asyncpg.DataError("13 does not fit")
        return [i + 1 for i in items]

    async def scenario():
        coalescer = Coalescer(strict, window=0.01)
        return await asyncio.gather(*(coalescer.submit(i) for i in (1, 13, 5)), return_exceptions=True)

    one, bad, five = run(scenario())
    assert (one, five) == (2, 6) and isinstance(bad, asyncpg.DataError)


def test_a_lost_connection_reaches_every_caller_and_is_not_run_again_call_by_call():
    calls = []

    async def down(items):
        calls.append(list(items))
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    async def scenario():
        coalescer = Coalescer(down, window=0.01)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)

    results = run(scenario())
    assert all(isinstance(r, asyncpg.exceptions.ConnectionDoesNotExistError) for r in results)
    assert len({id(r) for r in results}) == 3  # each caller its own exception object
    assert calls == [[0, 1, 2]]


def test_a_batch_that_answers_too_few_results_fails_its_callers_instead_of_leaving_them_waiting():
    async def short(items):
        return [1]

    async def scenario():
        coalescer = Coalescer(short, window=0.01)
        return await asyncio.wait_for(asyncio.gather(*(coalescer.submit(i) for i in range(2)),
                                                     return_exceptions=True), 5)

    assert all(isinstance(r, RuntimeError) for r in run(scenario()))


def test_a_call_cancelled_before_its_batch_is_sent_is_left_out():
    batches = []

    async def record(items):
        batches.append(list(items))
        return items

    async def scenario():
        coalescer = Coalescer(record, window=0.05)
        kept = asyncio.ensure_future(coalescer.submit("kept"))
        dropped = asyncio.ensure_future(coalescer.submit("dropped"))
        await asyncio.sleep(0)
        dropped.cancel()
        result = await kept
        await coalescer.close()
        return result

    assert run(scenario()) == "kept" and batches == [["kept"]]


def test_a_result_whose_caller_was_cancelled_goes_to_orphaned():
    orphans = []

    async def scenario():
        sent, answer = asyncio.Event(), asyncio.Event()

        async def held(items):
            sent.set()
            await answer.wait()
            return [f"lease of {i}" for i in items]

        async def give_back(item, result):
            orphans.append((item, result))

        coalescer = Coalescer(held, window=0.001, orphaned=give_back)
        kept = asyncio.ensure_future(coalescer.submit(1))
        dropped = asyncio.ensure_future(coalescer.submit(2))
        await sent.wait()  # the batch is under way
        dropped.cancel()
        answer.set()
        result = await kept
        await coalescer.close()
        return result

    assert run(scenario()) == "lease of 1"
    assert orphans == [(2, "lease of 2")]


def test_a_result_set_just_before_its_caller_is_cancelled_goes_to_orphaned():
    orphans = []

    async def scenario():
        callers = []

        async def answer(items):
            # the cancellation is queued ahead of the caller's wake-up for the result set next
            asyncio.get_running_loop().call_soon(callers[0].cancel)
            return [f"lease of {i}" for i in items]

        async def give_back(item, result):
            orphans.append((item, result))

        coalescer = Coalescer(answer, window=0.001, orphaned=give_back)
        callers.append(asyncio.ensure_future(coalescer.submit(7)))
        with pytest.raises(asyncio.CancelledError):
            await callers[0]
        await coalescer.close()

    run(scenario())
    assert orphans == [(7, "lease of 7")]


def test_concurrent_claims_of_one_meter_in_one_batch_grant_it_once(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=3)
        ids = [m[0] for m in await store.meter_ids()]
        claims = await asyncio.gather(*(store.claim(ids[0], f"worker-{k}", 30.0, 10) for k in range(4)),
                                      *(store.claim(m, "worker-x", 30.0, 10) for m in ids[1:]))
        batches = store._claims.batches
        blocks = [c.grant.counter_block for c in claims if c.grant is not None]
        await store.close()
        return [c.status for c in claims], blocks, batches

    statuses, blocks, batches = run(scenario())
    assert statuses[:4].count("granted") == 1 and statuses[:4].count("busy") == 3
    assert statuses[4:] == ["granted", "granted"]
    assert batches < 6  # the six claims made at once, with their grants, took fewer round trips than six
    # every granted meter has its own first block of 10 counters
    assert sorted(blocks) == [(1, 10)] * 3


def test_a_claim_cancelled_while_its_batch_is_out_leaves_the_meter_free(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=1)
        (meter, _, _), = await store.meter_ids()
        granted, answer = asyncio.Event(), asyncio.Event()
        claim_batch = store._claims.run_batch

        async def held(items):
            rows = await claim_batch(items)
            granted.set()
            await answer.wait()
            return rows

        store._claims.run_batch = held
        claim = asyncio.ensure_future(store.claim(meter, "impatient", 300.0, 10))
        await granted.wait()  # hes_begin granted the lease; the answer has not reached the caller
        claim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claim
        answer.set()
        store._claims.run_batch = claim_batch
        while store._claims._running:  # the batch ends, and gives back the grant its caller left
            await asyncio.gather(*store._claims._running)
        again = await store.claim(meter, "patient", 300.0, 10)
        await store.close()
        return again.status

    assert run(scenario()) == "granted"


@pytest.mark.parametrize("window", [0.0, 0.005])
def test_claims_coalesced_or_not_reserve_disjoint_counter_blocks(pg_dsn, window):
    async def scenario():
        store = await opened(pg_dsn, n=1)
        (meter, _, _), = await store.meter_ids()
        store._claims.window = window
        blocks = []
        for _ in range(5):
            claim = await store.claim(meter, "w", 30.0, 7)
            blocks.append(claim.grant.counter_block)
            await store.release(claim.grant)
        await store.close()
        return blocks

    blocks = run(scenario())
    assert blocks == [(1 + 7 * k, 7 * (k + 1)) for k in range(5)]


def test_without_a_window_a_call_goes_at_once_and_calls_made_meanwhile_go_together():
    batches, release = [], asyncio.Event()

    async def slow(items):
        batches.append(list(items))
        await release.wait()
        return list(items)

    async def scenario():
        coalescer = Coalescer(slow, window=None)
        first = asyncio.ensure_future(coalescer.submit(0))
        await asyncio.sleep(0.01)
        assert batches == [[0]]  # sent at once: nothing else was under way
        later = [asyncio.ensure_future(coalescer.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        assert batches == [[0]]  # they wait for the batch under way
        release.set()
        results = await asyncio.gather(first, *later)
        await coalescer.close()
        return results

    assert run(scenario()) == [0, 1, 2, 3]
    assert batches == [[0], [1, 2, 3]]


def test_claims_made_together_take_one_round_trip_and_one_that_raises_fails_alone(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=4)
        ids = [m[0] for m in await store.meter_ids()]
        # a lease of infinite seconds is an interval PostgreSQL cannot hold: that claim raises
        claims = await asyncio.gather(*(store.claim(m, "w", float("inf") if m == ids[2] else 30.0, 10) for m in ids),
                                      return_exceptions=True)
        batches = store._claims.batches
        again = await store.claim(ids[2], "w", 30.0, 10)  # the failed claim took nothing
        await store.close()
        return claims, batches, again.status

    claims, batches, again = run(scenario())
    assert isinstance(claims[2], asyncpg.DataError), claims[2]
    assert [c.status for k, c in enumerate(claims) if k != 2] == ["granted"] * 3
    assert batches == 1 and again == "granted"


def test_sessions_finished_together_share_a_transaction_but_one_bad_session_fails_alone(pg_dsn):
    import datetime as dt

    from smartmeter.hes.store.pg import Event, Reading, SessionResult

    at = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
    log = "0-0:99.98.0.255"

    def result(quality: int) -> SessionResult:
        return SessionResult([Reading("", "1-0:1.8.0.255", 2, at, 1000, quality)], {("", "1-0:1.8.0.255", 2): (0, 30)},
                             {log: at}, 5, None, events=[Event(log, at, 7)])

    async def scenario():
        store = await opened(pg_dsn, n=3)
        ids = [m[0] for m in await store.meter_ids()]
        grants = [(await store.claim(m, "w", 30.0, 10)).grant for m in ids]
        await store._ensure_partitions({dt.date(2026, 3, 1)})  # so the three finish in the same turn
        # a quality of 70000 does not fit the smallint column: that session's data breaks the batch
        stored = await asyncio.gather(*(store.finish_session(g, result(70000 if k == 1 else 0), None, "w")
                                        for k, g in enumerate(grants)), return_exceptions=True)
        rows = await store.pool.fetch("SELECT s.meter_id, r.raw, r.quality FROM reading r JOIN series s ON s.id = r.series_id")
        events = await store.pool.fetch("SELECT meter_id, code FROM event")
        leases = await store.pool.fetch("SELECT meter_id FROM meter_lease")
        batches = store._finishes.batches, store._finishes.items
        await store.close()
        return ids, stored, rows, events, leases, batches

    ids, stored, rows, events, leases, batches = run(scenario())
    assert stored[0] == 1 and stored[2] == 1 and isinstance(stored[1], asyncpg.DataError), stored
    assert sorted((r["meter_id"], r["raw"]) for r in rows) == [(ids[0], 1000), (ids[2], 1000)]
    assert sorted((e["meter_id"], e["code"]) for e in events) == [(ids[0], 7), (ids[2], 7)]
    assert [r["meter_id"] for r in leases] == [ids[1]]  # the failed session keeps its lease until released
    assert batches == (1, 3)  # the three went together (then each alone, after the batch failed)


def test_an_urgent_claim_takes_the_cells_last_slot_ahead_of_the_campaign_claims_in_its_batch(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=4)  # one cell of 2 sessions
        ids = [m[0] for m in await store.meter_ids()]
        held = (await store.claim(ids[0], "w", 30.0, 10, throttle=True)).grant  # one slot left
        claims = await asyncio.gather(*(store.claim(m, "w", 30.0, 10, throttle=True, urgent=m == ids[3])
                                        for m in ids[1:]))
        batches = store._claims.batches
        await store.release(held)
        await store.close()
        return [c.status for c in claims], batches

    statuses, batches = run(scenario())
    assert statuses == ["cell_full", "cell_full", "granted"] and batches == 2
