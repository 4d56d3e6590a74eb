"""The private PostgreSQL and NATS JetStream servers (tests/services.py, fixtures in conftest.py):
they work, they survive what the head-end's tests will do to them, and each test gets a clean one.

The tests in this file run in order on one worker (--dist loadfile); the isolation tests rely on
running after the tests that leave something behind."""
from __future__ import annotations

import asyncio

import asyncpg
import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

READINGS = [(1, 1000), (2, 1250), (3, 1800)]   # (register, Wh) as a head-end would store them


async def _connect_pg(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=30)


def test_postgres_table_survives_an_immediate_restart(postgres_server, pg_dsn):
    async def write() -> object:
        conn = await _connect_pg(pg_dsn)
        try:
            await conn.execute("CREATE TABLE readings (register int PRIMARY KEY, wh bigint)")
            await conn.executemany("INSERT INTO readings VALUES ($1, $2)", READINGS)
            return await conn.fetchval("SELECT pg_postmaster_start_time()")
        finally:
            await conn.close()

    async def read() -> tuple[object, list[tuple[int, int]]]:
        conn = await _connect_pg(pg_dsn)
        try:
            started = await conn.fetchval("SELECT pg_postmaster_start_time()")
            rows = await conn.fetch("SELECT register, wh FROM readings ORDER BY register")
            return started, [tuple(r) for r in rows]
        finally:
            await conn.close()

    started_before = asyncio.run(write())
    postgres_server.restart("immediate")    # no checkpoint: the next start replays the WAL
    started_after, rows = asyncio.run(read())

    assert started_after > started_before, "the postmaster was not restarted"
    assert rows == READINGS


def test_postgres_killed_refuses_then_starts_again_with_its_data(postgres_server, pg_dsn):
    async def write() -> None:
        conn = await _connect_pg(pg_dsn)
        try:
            await conn.execute("CREATE TABLE marks (n int)")
            await conn.execute("INSERT INTO marks VALUES (42)")
        finally:
            await conn.close()

    async def read() -> int:
        conn = await _connect_pg(pg_dsn)
        try:
            return await conn.fetchval("SELECT n FROM marks")
        finally:
            await conn.close()

    asyncio.run(write())
    postgres_server.kill()
    with pytest.raises(OSError):       # connection refused: nothing listens on the port
        asyncio.run(read())
    postgres_server.start()
    assert asyncio.run(read()) == 42


def test_each_test_gets_an_empty_database(pg_dsn):
    # the tests above created tables in their own databases on this same server
    async def tables() -> list[str]:
        conn = await _connect_pg(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            return [r["table_name"] for r in rows]
        finally:
            await conn.close()

    assert asyncio.run(tables()) == []


def test_postgres_listens_on_loopback_with_the_settings_for_tests(postgres_server, pg_dsn):
    async def settings() -> dict[str, str]:
        conn = await _connect_pg(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                ["listen_addresses", "max_connections", "fsync", "server_encoding"])
            collation = await conn.fetchval(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()")
            return {r["name"]: r["setting"] for r in rows} | {"collation": collation}
        finally:
            await conn.close()

    assert postgres_server.port not in (5432,)   # never the machine's own PostgreSQL
    assert asyncio.run(settings()) == {
        "listen_addresses": "127.0.0.1", "max_connections": "200", "fsync": "off",
        "server_encoding": "UTF8", "collation": "C"}


def test_jetstream_publish_and_consume(nats_url):
    payloads = [f"reading {i}".encode() for i in range(5)]

    async def run() -> list[bytes]:
        nc = await nats.connect(nats_url, connect_timeout=10)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="READINGS", subjects=["readings.>"]))
            for payload in payloads:
                ack = await js.publish("readings.meter1", payload, timeout=10)
                assert ack.stream == "READINGS"
            sub = await js.pull_subscribe("readings.>", durable="collector")
            received = []
            while len(received) < len(payloads):
                for msg in await sub.fetch(len(payloads) - len(received), timeout=10):
                    received.append(msg.data)
                    await msg.ack()
            return received
        finally:
            await nc.close()

    assert nats_url != "nats://127.0.0.1:4222"   # never the machine's own NATS
    assert asyncio.run(run()) == payloads


def test_each_test_gets_a_nats_server_without_streams(nats_url):
    # the test above left the stream READINGS on this worker's server
    async def streams() -> list[str]:
        nc = await nats.connect(nats_url, connect_timeout=10)
        try:
            return [info.config.name for info in await nc.jetstream().streams_info()]
        finally:
            await nc.close()

    assert asyncio.run(streams()) == []


def test_full_file_store_makes_publish_fail(nats_server_factory):
    store_limit = 1024 * 1024
    payload = b"x" * (64 * 1024)
    attempts = 2 * store_limit // len(payload)      # twice what can fit
    server = nats_server_factory(max_file_store=store_limit)

    async def run() -> tuple[int, list[APIError], int]:
        nc = await nats.connect(server.url, connect_timeout=10)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="FULL", subjects=["full.>"]))
            acked, refused = 0, []
            for _ in range(attempts):
                try:
                    await js.publish("full.x", payload, timeout=10)
                    acked += 1
                except APIError as exc:
                    refused.append(exc)
            stored = (await js.stream_info("FULL")).state.messages
            return acked, refused, stored
        finally:
            await nc.close()

    acked, refused, stored = asyncio.run(run())
    assert acked <= store_limit // len(payload)
    assert refused, "every publish was acknowledged though the store is full"
    assert {exc.err_code for exc in refused} == {10023}     # JetStream: insufficient resources
    assert stored == acked                                   # nothing kept without an ack


def test_cluster_keeps_a_replicated_stream_when_a_node_dies(nats_cluster):
    before = [f"before {i}".encode() for i in range(20)]
    after = [f"after {i}".encode() for i in range(5)]
    node_names = [node.name for node in nats_cluster.nodes]
    failover_s = 60     # elections take seconds; a minute means the cluster did not recover

    async def during_failover(call):
        # while the stream's or the consumer's replicas elect a leader (or a new stream's interest
        # reaches every node), requests go unanswered
        deadline = asyncio.get_running_loop().time() + failover_s
        while True:
            try:
                return await call()
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    NoStreamResponseError, ServiceUnavailableError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def stream_leader(js, not_this: str | None = None) -> str:
        deadline = asyncio.get_running_loop().time() + failover_s
        while asyncio.get_running_loop().time() < deadline:
            info = await during_failover(lambda: js.stream_info("EVENTS"))
            leader = info.cluster.leader if info.cluster else None
            if leader in node_names and leader != not_this:
                return leader
            await asyncio.sleep(0.1)
        raise AssertionError(f"the stream EVENTS has no leader other than {not_this}")

    async def publish(js, payload: bytes) -> None:
        # a retried publish carries the same message id, which JetStream stores once
        await during_failover(lambda: js.publish(
            "events.meter1", payload, timeout=5, headers={"Nats-Msg-Id": payload.decode()}))

    async def write_replicated() -> str:
        nc = await nats.connect(servers=nats_cluster.urls, connect_timeout=10)
        try:
            js = nc.jetstream()
            info = await js.add_stream(
                StreamConfig(name="EVENTS", subjects=["events.>"], num_replicas=3))
            assert info.config.num_replicas == 3
            await stream_leader(js)
            for payload in before:
                await publish(js, payload)
            # a replicated consumer too
            await during_failover(lambda: js.pull_subscribe("events.>", durable="reader"))
            return await stream_leader(js)
        finally:
            await nc.close()

    async def continue_without(dead_url: str, dead_name: str) -> tuple[int, str, list[bytes]]:
        survivors = [url for url in nats_cluster.urls if url != dead_url]
        nc = await nats.connect(servers=survivors, connect_timeout=10)
        try:
            js = nc.jetstream()
            leader = await stream_leader(js, not_this=dead_name)
            kept = (await during_failover(lambda: js.stream_info("EVENTS"))).state.messages
            for payload in after:
                await publish(js, payload)
            sub = await js.pull_subscribe_bind(durable="reader", stream="EVENTS")
            received: list[bytes] = []
            total = len(before) + len(after)
            while len(received) < total:
                batch = await during_failover(
                    lambda: sub.fetch(total - len(received), timeout=2))
                for msg in batch:
                    received.append(msg.data)
                    await msg.ack()
            return kept, leader, received
        finally:
            await nc.close()

    leader = asyncio.run(write_replicated())
    victim = node_names.index(leader)      # the stream's leader: its loss forces an election
    nats_cluster.kill(victim)
    nats_cluster.wait_meta_leader()
    kept, new_leader, received = asyncio.run(
        continue_without(nats_cluster.urls[victim], leader))

    assert new_leader != leader
    assert kept == len(before)
    assert received == before + after

    # the node comes back on its own port and store and rejoins
    nats_cluster.start_node(victim)
    assert nats_cluster.wait_meta_leader() in node_names
