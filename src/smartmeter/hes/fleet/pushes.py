"""Pushes at scale: any number of listeners publish to JetStream, workers store them once.

A listener (`hes listen --nats`) takes the meters' pushes off UDP and TCP as the SQLite
listener does (wrapper, block transfer, bounds: `PushIntake`), checks each one's
authentication tag with the meter's keys, and publishes the ciphered APDU as it came to
`hes.push.<system title>` with the message id `<system title>:<invocation counter>`. Forged
and unknown pushes never reach the broker, so they cannot take a genuine push's id.
JetStream keeps one message per id within its duplicate window (a UDP retry, a push heard by
two listeners); the store keeps one row per (system title, invocation counter) for ever, so a
replay after the window is dropped there.

`PushIngester` (run by every `hes worker`) takes them off the stream in batches and writes
them with one statement per batch, then acknowledges: a worker that dies before the
acknowledgement leaves them to be delivered again, and the row's key makes that a no-op.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable

import asyncpg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError

from smartmeter.dlms.security.errors import AuthenticationError, SecurityError
from smartmeter.errors import DecodeError
from smartmeter.hes.fleet.broker import (
    PUSH_SUBJECT, PUSHES_STREAM, RECEIVED_HEADER, SOURCE_HEADER, Broker, BrokerUnavailable, backoff_delay,
)
from smartmeter.hes.push_listener import Keyring, Limits, MeterKeys, PushIntake
from smartmeter.hes.store.pg import UNAVAILABLE, FleetStore, StoreUnavailable
from smartmeter.ratelog import RateLimitedLog

__all__ = ["NatsPushGate", "PushIngester", "keyring_from_store"]

log = logging.getLogger(__name__)

RECENT_PUSHES = 100_000  # (meter, counter) the gate remembers, to drop retries before the broker
MESSAGE_ID_HEADER = "Nats-Msg-Id"


async def keyring_from_store(store: FleetStore) -> Keyring:
    """The ACTIVE unicast and authentication keys of every meter in the store."""
    vault = store._vault()
    rows = await store.pool.fetch(
        """SELECT m.system_title, m.suite, e.wrapped AS ek, a.wrapped AS ak
           FROM meter m JOIN meter_key e ON e.meter_id = m.id AND e.kind = 'ek' AND e.state = 'ACTIVE'
                        JOIN meter_key a ON a.meter_id = m.id AND a.kind = 'ak' AND a.state = 'ACTIVE'""")
    return Keyring(MeterKeys(bytes(r["system_title"]), r["suite"], vault.unwrap(r["ek"]), vault.unwrap(r["ak"]),
                             Path("store")) for r in rows)


class NatsPushGate(PushIntake):
    """A listener's core for JetStream: authentic pushes are queued for publication."""

    def __init__(self, keyring: Keyring, *, name: str, limits: Limits = Limits(), queue_size: int = 20000,
                 clock: Callable[[], float] = time.time, say: RateLimitedLog | None = None) -> None:
        super().__init__(keyring, limits=limits, say=say)
        self.name = name
        self.clock = clock
        # bounded: when the broker is slower than the meters for long, pushes are refused and
        # counted ("overload"), and a meter's repetition is taken when there is room again
        self.queue: asyncio.Queue[tuple[str, int, bytes, float, str]] = asyncio.Queue(queue_size)
        self._recent: OrderedDict[tuple[bytes, int], None] = OrderedDict()  # newest last, bounded

    def notification(self, apdu: bytes, sender: Any) -> str:
        found = self.ciphered_push(apdu, sender)
        if isinstance(found, str):
            return found
        ciphered, keys = found
        title = ciphered.system_title
        counter = ciphered.invocation_counter
        if (title, counter) in self._recent:
            self.counts["retry"] += 1
            return "retry"
        try:
            ciphered.unprotect(keys.ek, keys.ak, expected_suite=keys.suite)
        except AuthenticationError:
            return self.refuse("forged", "push from %s claiming meter %s fails its authentication tag",
                               sender, title.hex().upper())
        except (SecurityError, DecodeError) as exc:
            return self.refuse("unprotected", "push from %s for meter %s: %s", sender, title.hex().upper(), exc)
        try:
            self.queue.put_nowait((title.hex().upper(), counter, apdu, self.clock(), f"{self.name} {sender}"))
        except asyncio.QueueFull:
            return self.refuse("overload", "%d pushes wait for NATS: push of meter %s (counter %d) refused",
                               self.queue.qsize(), title.hex().upper(), counter)
        self._recent[(title, counter)] = None
        if len(self._recent) > RECENT_PUSHES:
            self._recent.popitem(last=False)
        self.counts["queued"] += 1
        return "queued"

    async def publish_forever(self, broker: Broker, tasks: int = 32) -> None:
        """Drain the queue into JetStream with `tasks` publications in flight."""
        async def publisher() -> None:
            while True:
                title, counter, apdu, received, source = await self.queue.get()
                try:
                    stored = await broker.publish_push(title, counter, apdu, received, source)
                    self.counts["published" if stored else "duplicate"] += 1
                except BrokerUnavailable as exc:
                    self.refuse("lost", "push of meter %s (counter %d) not published: %s", title, counter, exc,
                                level=logging.ERROR)
                    self._recent.pop((bytes.fromhex(title), counter), None)
                finally:
                    self.queue.task_done()

        await asyncio.gather(*(publisher() for _ in range(tasks)))


class PushIngester:
    """Stores the pushes of the stream, once each, in batches."""

    def __init__(self, store: FleetStore, broker: Broker, *, batch: int = 500, ack_wait: float = 30.0,
                 say: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.broker = broker
        self.batch = batch
        self.ack_wait = ack_wait
        self.counts: Counter[str] = Counter()
        self.note = RateLimitedLog(log)
        self.say = say or (lambda message: log.warning("%s", message))

    async def run(self, stop: asyncio.Event) -> None:
        # no delivery limit: a push waits in the stream for as long as the store is away
        config = api.ConsumerConfig(durable_name="hes-push-ingest", ack_policy=api.AckPolicy.EXPLICIT,
                                    ack_wait=self.ack_wait, max_deliver=-1, max_ack_pending=self.batch * 8,
                                    filter_subject=PUSH_SUBJECT + ".>")
        sub = await self.broker.js.pull_subscribe(PUSH_SUBJECT + ".>", durable="hes-push-ingest",
                                                  stream=PUSHES_STREAM, config=config)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(self.batch, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):
                continue
            except (NatsError, APIError, OSError) as exc:
                self.note("ingest.broker", "cannot fetch pushes from NATS (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            try:
                await self._store(msgs)
            except StoreUnavailable as exc:
                # the batch is left unanswered (it comes back after the ack wait, without using
                # anything up) and no more is taken until the store answers again
                self.say(f"cannot store pushes ({exc}); they wait in NATS until the store is back")
                await self._store_back(stop)

    async def _store_back(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0))
            try:
                await self.store.pool.fetchval("SELECT 1")
                self.say("the store is back; storing pushes again")
                return
            except UNAVAILABLE + (asyncpg.PostgresError,):
                continue

    def _parse(self, m) -> tuple | None:
        """(title, counter, received, source, apdu) of a listener's message, or None."""
        try:
            title = bytes.fromhex(m.subject.rsplit(".", 1)[1])
            counter = int(m.header[MESSAGE_ID_HEADER].rsplit(":", 1)[1])
            when = float(m.header[RECEIVED_HEADER])
            received = dt.datetime.fromtimestamp(when, dt.timezone.utc)
            source = m.header.get(SOURCE_HEADER, "").replace("\x00", "")[:200]
        except (AttributeError, TypeError, ValueError, IndexError, KeyError, OverflowError, OSError):
            return None
        if len(title) != 8 or not 0 <= counter <= 0xFFFFFFFF or not m.data:
            return None
        return title, counter, received, source, m.data

    async def _store(self, msgs) -> None:
        good = []
        for m in msgs:
            parsed = self._parse(m)
            if parsed is None:
                self.counts["malformed"] += 1
                self.note("ingest.malformed", "a message on %s is no push of a listener: terminated", m.subject)
                await _quietly(m.term())
            else:
                good.append((m, parsed))
        if not good:
            return
        try:
            stored = await self._insert([p for _, p in good])
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        except asyncpg.PostgresError as exc:
            # one bad row must not hold up the others: row by row, the refused ones terminated
            self.note("ingest.batch", "a batch of pushes was refused (%s): stored one by one", exc)
            stored = 0
            for m, parsed in good:
                try:
                    stored += await self._insert([parsed])
                except UNAVAILABLE as exc:
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
                except asyncpg.PostgresError as exc:
                    self.counts["refused"] += 1
                    self.note("ingest.refused", "the store refused a push of %s: %s", m.subject, exc)
                    await _quietly(m.term())
                else:
                    await _quietly(m.ack())
            self.counts["stored"] += stored
            return
        self.counts["stored"] += stored
        self.counts["duplicate"] += len(good) - stored
        for m, _ in good:
            await _quietly(m.ack())

    async def _insert(self, rows: list[tuple]) -> int:
        status = await self.store.pool.execute(
            """INSERT INTO raw_push (system_title, invocation_counter, received, source, apdu)
               SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::timestamptz[], $4::text[], $5::bytea[])
               ON CONFLICT DO NOTHING""", *map(list, zip(*rows)))
        return int(status.rsplit(" ", 1)[1])


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except (NatsError, APIError, OSError, asyncio.TimeoutError):
        pass  # an unanswered message is delivered again; its row's key makes that harmless
