"""Claims made at about the same time share one round trip (hes.store.batching.Coalescer):
each caller still gets its own answer, one bad call does not fail the others, and a claim
whose caller gave up is given back."""
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


def test_a_lost_connection_reaches_every_caller_of_the_batch():
    async def down(items):
        raise ConnectionResetError("server closed the connection")

    async def scenario():
        coalescer = Coalescer(down, window=0.01)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, ConnectionResetError) for r in run(scenario()))


def test_a_result_whose_caller_was_cancelled_goes_to_orphaned():
    orphans = []

    async def slow(items):
        await asyncio.sleep(0.05)
        return [f"lease of {i}" for i in items]

    async def give_back(item, result):
        orphans.append((item, result))

    async def scenario():
        coalescer = Coalescer(slow, window=0.001, orphaned=give_back)
        kept = asyncio.ensure_future(coalescer.submit(1))
        dropped = asyncio.ensure_future(coalescer.submit(2))
        await asyncio.sleep(0.02)  # the batch is under way
        dropped.cancel()
        result = await kept
        await coalescer.close()
        return result

    assert run(scenario()) == "lease of 1"
    assert orphans == [(2, "lease of 2")]


def test_concurrent_claims_of_one_meter_in_one_batch_grant_it_once(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=3)
        ids = [m[0] for m in await store.meter_ids()]
        claims = await asyncio.gather(*(store.claim(ids[0], f"worker-{k}", 30.0, 10) for k in range(4)),
                                      *(store.claim(m, "worker-x", 30.0, 10) for m in ids[1:]))
        batches = store._begins.batches
        blocks = [c.grant.counter_block for c in claims if c.grant is not None]
        await store.close()
        return [c.status for c in claims], blocks, batches

    statuses, blocks, batches = run(scenario())
    assert statuses[:4].count("granted") == 1 and statuses[:4].count("busy") == 3
    assert statuses[4:] == ["granted", "granted"]
    assert batches < 6  # six claims at once did not take six round trips
    # every granted meter has its own first block of 10 counters
    assert sorted(blocks) == [(1, 10)] * 3


def test_a_claim_cancelled_while_its_batch_runs_leaves_the_meter_free(pg_dsn):
    async def scenario():
        store = await opened(pg_dsn, n=1)
        (meter, _, _), = await store.meter_ids()
        store._begins.window = 0.05
        claim = asyncio.ensure_future(store.claim(meter, "impatient", 300.0, 10))
        await asyncio.sleep(0.06)  # the batch has been sent
        claim.cancel()
        await asyncio.sleep(0.3)
        again = await store.claim(meter, "patient", 300.0, 10)
        await store.close()
        return again.status

    assert run(scenario()) == "granted"


@pytest.mark.parametrize("window", [0.0, 0.005])
def test_claims_coalesced_or_not_reserve_disjoint_counter_blocks(pg_dsn, window):
    async def scenario():
        store = await opened(pg_dsn, n=1)
        (meter, _, _), = await store.meter_ids()
        store._begins.window = window
        blocks = []
        for _ in range(5):
            claim = await store.claim(meter, "w", 30.0, 7)
            blocks.append(claim.grant.counter_block)
            await store.release(claim.grant)
        await store.close()
        return blocks

    blocks = run(scenario())
    assert blocks == [(1 + 7 * k, 7 * (k + 1)) for k in range(5)]
