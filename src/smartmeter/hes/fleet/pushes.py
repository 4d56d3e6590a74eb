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

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError

from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.security.errors import AuthenticationError, SecurityError
from smartmeter.errors import DecodeError, TruncatedError
from smartmeter.hes.fleet.broker import (
    PUSH_SUBJECT, PUSHES_STREAM, RECEIVED_HEADER, SOURCE_HEADER, Broker, BrokerUnavailable,
)
from smartmeter.hes.push_listener import DATA_NOTIFICATION_TAG, Keyring, Limits, MeterKeys, PushIntake
from smartmeter.hes.store.pg import UNAVAILABLE, FleetStore, StoreUnavailable
from smartmeter.ratelog import RateLimitedLog

__all__ = ["NatsPushGate", "PushIngester", "keyring_from_store"]

log = logging.getLogger(__name__)

RECENT_PER_METER = 64  # counters of each meter the gate remembers, to drop retries before the broker


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
        self._recent: dict[bytes, OrderedDict[int, None]] = {}

    def notification(self, apdu: bytes, sender: Any) -> str:
        if apdu[:1] == bytes([DATA_NOTIFICATION_TAG]):
            return self.refuse("unprotected", "unprotected data-notification from %s refused", sender)
        if apdu[:1] != bytes([GeneralGloCiphering.TAG]):
            return self.refuse("garbage", "message from %s is no push (tag 0x%s)", sender, apdu[:1].hex())
        try:
            ciphered = GeneralGloCiphering.from_bytes(apdu)
        except TruncatedError as exc:
            return self.refuse("truncated", "push from %s: %s", sender, exc)
        except DecodeError as exc:
            return self.refuse("garbage", "push from %s: %s", sender, exc)
        title = ciphered.system_title
        keys = self.keyring.get(title)
        if keys is None:
            return self.refuse("unknown_sender", "push from %s with unknown system title %s", sender,
                               title.hex().upper()[:32])
        counter = ciphered.invocation_counter
        recent = self._recent.setdefault(title, OrderedDict())
        if counter in recent:
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
        recent[counter] = None
        if len(recent) > RECENT_PER_METER:
            recent.popitem(last=False)
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
                    self._recent.get(bytes.fromhex(title), {}).pop(counter, None)
                finally:
                    self.queue.task_done()

        await asyncio.gather(*(publisher() for _ in range(tasks)))


class PushIngester:
    """Stores the pushes of the stream, once each, in batches."""

    def __init__(self, store: FleetStore, broker: Broker, *, batch: int = 500, ack_wait: float = 30.0,
                 max_deliver: int = 20, say: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.broker = broker
        self.batch = batch
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.counts: Counter[str] = Counter()
        self.note = RateLimitedLog(log)
        self.say = say or (lambda message: log.warning("%s", message))
        self.latencies: list[float] = []  # seconds from a listener taking a push to its row stored (bounded)

    async def run(self, stop: asyncio.Event) -> None:
        config = api.ConsumerConfig(durable_name="hes-push-ingest", ack_policy=api.AckPolicy.EXPLICIT,
                                    ack_wait=self.ack_wait, max_deliver=self.max_deliver,
                                    max_ack_pending=self.batch * 8, filter_subject=PUSH_SUBJECT + ".>")
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
                self.note("ingest.store", "cannot store pushes (%s); they stay in NATS", exc)
                for m in msgs:
                    await _quietly(m.nak(delay=2.0))
                await asyncio.sleep(2.0)
                continue
            for m in msgs:
                await _quietly(m.ack())

    async def _store(self, msgs) -> None:
        titles, counters, received, sources, apdus = [], [], [], [], []
        for m in msgs:
            try:
                title, counter = m.subject.rsplit(".", 1)[1], int(m.header.get("Nats-Msg-Id").rsplit(":", 1)[1])
                when = float(m.header.get(RECEIVED_HEADER))
                raw_title = bytes.fromhex(title)
                if len(raw_title) != 8:
                    raise ValueError("system title")
            except (AttributeError, TypeError, ValueError, IndexError):
                self.counts["malformed"] += 1
                self.note("ingest.malformed", "a message on %s is no push of a listener: terminated", m.subject)
                await _quietly(m.term())
                continue
            titles.append(raw_title)
            counters.append(counter)
            received.append(dt.datetime.fromtimestamp(when, dt.timezone.utc))
            sources.append(m.header.get(SOURCE_HEADER, ""))
            apdus.append(m.data)
        if not titles:
            return
        try:
            status = await self.store.pool.execute(
                """INSERT INTO raw_push (system_title, invocation_counter, received, source, apdu)
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::timestamptz[], $4::text[], $5::bytea[])
                   ON CONFLICT DO NOTHING""", titles, counters, received, sources, apdus)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        stored = int(status.rsplit(" ", 1)[1])
        self.counts["stored"] += stored
        self.counts["duplicate"] += len(titles) - stored
        now = time.time()
        if len(self.latencies) < 1_000_000:
            self.latencies.extend(now - r.timestamp() for r in received)


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except (NatsError, APIError, OSError, asyncio.TimeoutError):
        pass  # an unanswered message is delivered again; its row's key makes that harmless
