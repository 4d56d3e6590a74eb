"""Pushes at scale: any number of listeners publish to JetStream, workers store them once.

A listener (`hes listen --nats`) takes the meters' pushes off UDP and TCP as the SQLite
listener does (wrapper, block transfer, bounds: `PushIntake`), checks each one's
authentication tag with the meter's keys, and publishes the ciphered APDU as it came to
`hes.push.<system title>` with the message id `<system title>:<key id>:<invocation counter>`
(`push_key_id`: a meter starts its counter again under a new key). Forged and unknown pushes
never reach the broker, so they cannot take a genuine push's id. JetStream keeps one message
per id within its duplicate window (a UDP retry, a push heard by two listeners); the store
keeps one row per (system title, key id, invocation counter) for ever, so a replay after the
window is dropped there.

`PushIngester` (run by every `hes worker`) takes them off the stream in batches, decodes each
one as the SQLite listener does (`decode_push`: the meter's keys from the store, read in one
query for the meters of a batch it does not hold, and held for the KEY_CACHE meters used last,
for KEYS_FRESH at most;
the push object list of the setup that sent it, the capture time) and writes the batch in one
transaction (`FleetStore.store_pushes`): the raw_push rows, and for each push whose row is new
its values, integers into reading (raw, with the scaler and unit the push carried where it
carried them, quality 0, the listener's receive time) and other values into reading_data.
Then it acknowledges: a worker that dies before the commit or the acknowledgement leaves them
to be delivered again, and the raw_push key makes that a no-op, readings included. A push
that does not decode (no keys for it in the store, fits no push object list, malformed) is
kept in raw_push with the reason in `undecoded`, counted, and said once a minute.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import asyncpg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError

from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.errors import AuthenticationError, SecurityError
from smartmeter.errors import DecodeError
from smartmeter.hes.fleet.broker import (
    PUSH_SUBJECT, PUSHES_STREAM, RECEIVED_HEADER, SOURCE_HEADER, Broker, BrokerUnavailable, backoff_delay,
)
from smartmeter.hes.fleet.session import PLAUSIBLE_FUTURE, PLAUSIBLE_PAST
from smartmeter.hes.push_listener import (
    Keyring, Limits, MeterKeys, ObjectLists, PushIntake, decode_push, push_key_id,
)
from smartmeter.hes.push_store import format_time, integer_raw, scaler_units
from smartmeter.hes.store.pg import UNAVAILABLE, FleetStore, IngestedPush, PushValue, StoreUnavailable
from smartmeter.ratelog import RateLimitedLog

__all__ = ["NatsPushGate", "PushIngester", "keyring_from_store", "push_key_id", "read_push_keys"]

log = logging.getLogger(__name__)

RECENT_PUSHES = 100_000  # (meter, counter) the gate remembers, to drop retries before the broker
KEYS_RELOAD = 30.0  # s between readings of a meter's keys from the store when none of those known fit
HELD_PUSHES = 2000  # pushes a listener holds while their meters' keys are read again
HELD_BYTES = 16 * 1024 * 1024  # and their bytes
KEY_LOOKUPS_PER_S = 20.0  # meters' keys read again, across all meters (random titles cost a query each)
KEY_LOOKUP_TIMEOUT = 5.0  # s for one look-up; a store that does not answer in time leaves the pushes refused
KEY_GENERATIONS = 3  # the newest unicast key generations of a meter a push is tried with
# s a meter's keys are used from memory before they are read from the store again: keys that
# expired longer ago than the grace for pushes, or were replaced, stop verifying within it
KEYS_FRESH = 3600.0
KEY_REFRESH_BATCH = 1000  # meters whose keys a listener reads again in one query
# meters whose keys an ingester holds (about 40 MB with one key generation each), the least
# recently used forgotten beyond: a batch's meters not held are read in one query, so at most a
# batch's worth of keys is unwrapped at a time and the event loop never stops for long (reading
# a million meters' keys at once stopped it for seconds)
KEY_CACHE = 100_000
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


async def read_push_keys(store: FleetStore, titles: bytes | Sequence[bytes]
                         ) -> dict[bytes, list[tuple[int, bytes, bytes]]]:
    """(suite, EK, AK) of the KEY_GENERATIONS newest unicast key generations of the meter
    `titles` (a system title, or several) that pushes may be made under (`push_key_rows`: an
    EXPIRED one for a grace only), the ACTIVE one first; an EK goes with the AK of its
    generation, else with the ACTIVE AK (a change of the EK alone). Meters without keys are left
    out."""
    vault = store._vault()
    rows = await store.push_key_rows([titles] if isinstance(titles, bytes) else titles)
    by_meter: dict[bytes, list] = {}
    for r in rows:
        by_meter.setdefault(bytes(r["system_title"]), []).append(r)
    keys = {}
    for meter, found in by_meter.items():
        aks = {r["generation"]: r for r in found if r["kind"] == "ak"}
        active_ak = next((r for r in found if r["kind"] == "ak" and r["state"] == "ACTIVE"), None)
        generations = []
        for ek in (r for r in found if r["kind"] == "ek"):
            ak = aks.get(ek["generation"], active_ak)
            if ak is not None and len(generations) < KEY_GENERATIONS:
                generations.append((ek["suite"], vault.unwrap(ek["wrapped"]), vault.unwrap(ak["wrapped"])))
        if generations:
            keys[meter] = generations
    return keys


def _note_read(read_at: dict[bytes, float], titles: Sequence[bytes], now: float) -> None:
    """When the keys of `titles` were read, in a record of at most RECENT_PUSHES meters
    (forgotten all at once beyond: a forgotten meter's keys may be read again sooner)."""
    if len(read_at) + len(titles) > RECENT_PUSHES:
        read_at.clear()
    read_at.update(dict.fromkeys(titles, now))


class NatsPushGate(PushIntake):
    """A listener's core for JetStream: authentic pushes are queued for publication.

    With a `key_source` (the store: system titles → each one's (suite, EK, AK), newest first), a
    push whose meter has no keys here or whose tag fits none of them is held while that meter's
    keys are read again (a meter imported, or its keys changed, since the listener started),
    then checked once more: at most every KEYS_RELOAD seconds a meter, KEY_LOOKUPS_PER_S
    look-ups a second in all, each within KEY_LOOKUP_TIMEOUT, and at most HELD_PUSHES pushes
    (HELD_BYTES) held at once; beyond that pushes are refused as before. The keys of a meter
    whose push fits keys read longer than KEYS_FRESH ago are read again in the background, in
    batches: keys the store no longer gives for pushes (past their grace) stop fitting."""

    def __init__(self, keyring: Keyring, *, name: str, limits: Limits = Limits(), queue_size: int = 20000,
                 clock: Callable[[], float] = time.time, say: RateLimitedLog | None = None,
                 key_source: Callable[[Sequence[bytes]], Awaitable[dict[bytes, list[tuple[int, bytes, bytes]]]]]
                 | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(keyring, limits=limits, say=say)
        self.name = name
        self.clock = clock
        self.monotonic = monotonic
        # bounded: when the broker is slower than the meters for long, pushes are refused and
        # counted ("overload"), and a meter's repetition is taken when there is room again
        self.queue: asyncio.Queue[tuple[str, int, bytes, float, str, str]] = asyncio.Queue(queue_size)
        self._recent: OrderedDict[tuple[bytes, str, int], None] = OrderedDict()  # newest last, bounded
        self.key_source = key_source
        self._older_keys: dict[bytes, list[tuple[int, bytes, bytes]]] = {}  # beyond the keyring's, newest first
        self._keys_checked: dict[bytes, float] = {}  # title → when its keys were last read again
        self._held: dict[bytes, list[tuple[bytes, Any, float]]] = {}  # title → (apdu, sender, received)
        self._held_count = self._held_bytes = 0
        self._lookup_tokens, self._tokens_at = KEY_LOOKUPS_PER_S, monotonic()
        self._lookups: set[asyncio.Task] = set()
        self._started = monotonic()  # when the keys the listener began with were read
        self._stale: set[bytes] = set()  # meters whose keys are to be read again (KEYS_FRESH)
        self._refresh_after = float("-inf")  # after a failed refresh, none before this
        # the push being checked, for unknown_sender (called from within ciphered_push)
        self._received, self._may_hold = 0.0, False

    def notification(self, apdu: bytes, sender: Any) -> str:
        return self._check(apdu, sender, self.clock(), may_hold=True)

    def unknown_sender(self, ciphered: GeneralGloCiphering, apdu: bytes, sender: Any) -> str:
        if self._hold(ciphered.system_title, apdu, sender, self._received):
            return "held"
        return super().unknown_sender(ciphered, apdu, sender)

    def _check(self, apdu: bytes, sender: Any, received: float, may_hold: bool) -> str:
        self._received, self._may_hold = received, may_hold
        found = self.ciphered_push(apdu, sender)
        if isinstance(found, str):
            return found
        ciphered, keys = found
        title = ciphered.system_title
        counter = ciphered.invocation_counter
        fits = None
        for suite, ek, ak in [(keys.suite, keys.ek, keys.ak), *self._older_keys.get(title, ())]:
            try:
                ciphered.unprotect(ek, ak, expected_suite=suite)
            except AuthenticationError:
                continue
            except (SecurityError, DecodeError) as exc:
                return self.refuse("unprotected", "push from %s for meter %s: %s", sender, title.hex().upper(), exc)
            fits = push_key_id(ek)
            break
        if not fits:
            if self._hold(title, apdu, sender, received):
                return "held"
            return self.refuse("forged", "push from %s claiming meter %s fails its authentication tag",
                               sender, title.hex().upper())
        self._note_age(title)
        if (title, fits, counter) in self._recent:
            self.counts["retry"] += 1
            return "retry"
        try:
            self.queue.put_nowait((title.hex().upper(), counter, apdu, received, f"{self.name} {sender}", fits))
        except asyncio.QueueFull:
            return self.refuse("overload", "%d pushes wait for NATS: push of meter %s (counter %d) refused",
                               self.queue.qsize(), title.hex().upper(), counter)
        self._recent[(title, fits, counter)] = None
        if len(self._recent) > RECENT_PUSHES:
            self._recent.popitem(last=False)
        self.counts["queued"] += 1
        return "queued"

    def _hold(self, title: bytes, apdu: bytes, sender: Any, received: float) -> bool:
        """Hold the push while its meter's keys are read again, if that may be done now."""
        if (self.key_source is None or not self._may_hold or self._held_count >= HELD_PUSHES
                or self._held_bytes + len(apdu) > HELD_BYTES):
            return False
        if title not in self._held:
            now = self.monotonic()
            if now - self._keys_checked.get(title, float("-inf")) < KEYS_RELOAD:
                return False
            self._lookup_tokens = min(KEY_LOOKUPS_PER_S,
                                      self._lookup_tokens + (now - self._tokens_at) * KEY_LOOKUPS_PER_S)
            self._tokens_at = now
            if self._lookup_tokens < 1.0:
                return False
            self._lookup_tokens -= 1.0
            _note_read(self._keys_checked, [title], now)
            self._held[title] = []
            task = asyncio.get_running_loop().create_task(self._look_up(title))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
        self._held[title].append((apdu, sender, received))
        self._held_count += 1
        self._held_bytes += len(apdu)
        self.counts["held"] += 1
        return True

    async def _look_up(self, title: bytes) -> None:
        try:
            found = await asyncio.wait_for(self.key_source([title]), KEY_LOOKUP_TIMEOUT)
            self._install(title, found.get(title, []))
        except Exception as exc:  # the store is down or slow: the held pushes are checked with the keys there are
            self.say("keys_lookup_failed", "could not read the keys of meter %s from the store: %s",
                     title.hex().upper(), exc)
        held = self._held.pop(title, [])
        self._held_count -= len(held)
        self._held_bytes -= sum(len(apdu) for apdu, _, _ in held)
        for apdu, sender, received in held:
            self._check(apdu, sender, received, may_hold=False)

    def _install(self, title: bytes, found: list[tuple[int, bytes, bytes]]) -> None:
        """The meter's keys as the store gives them for pushes now. Nothing found removes only
        keys that came from the store: those of a --keys file stay."""
        if found:
            suite, ek, ak = found[0]
            self.keyring.meters[title] = MeterKeys(title, suite, ek, ak, Path("store"))
            self._older_keys[title] = list(found[1:])
        else:
            held = self.keyring.meters.get(title)
            if held is not None and held.source == Path("store"):
                del self.keyring.meters[title]
            self._older_keys.pop(title, None)

    def _note_age(self, title: bytes) -> None:
        """A push of `title` fitted keys held here: read them again if they are older than KEYS_FRESH."""
        if self.key_source is None or title in self._stale:
            return
        now = self.monotonic()
        if (now - self._keys_checked.get(title, self._started) < KEYS_FRESH or now < self._refresh_after
                or len(self._stale) >= RECENT_PUSHES):  # bounded: the others come again with their next push
            return
        self._stale.add(title)
        if len(self._stale) == 1:
            task = asyncio.get_running_loop().create_task(self._refresh())
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)

    async def _refresh(self) -> None:
        """Read the keys of the meters in `_stale` again, KEY_REFRESH_BATCH in a query."""
        while self._stale:
            titles = list(self._stale)[:KEY_REFRESH_BATCH]
            now = self.monotonic()
            try:
                found = await asyncio.wait_for(self.key_source(titles), KEY_LOOKUP_TIMEOUT)
            except Exception as exc:  # the keys held go on being used; tried again after KEYS_RELOAD
                self._refresh_after = now + KEYS_RELOAD
                self._stale.clear()
                self.say("keys_refresh_failed", "could not read the keys of %d meter(s) again from the store: %s",
                         len(titles), exc)
                return
            _note_read(self._keys_checked, titles, now)
            for title in titles:
                self._stale.discard(title)
                self._install(title, found.get(title, []))

    async def close(self) -> None:
        """Finish the key look-ups under way (their pushes are checked and queued or refused)."""
        while self._lookups:
            await asyncio.gather(*self._lookups, return_exceptions=True)

    async def publish_forever(self, broker: Broker, tasks: int = 32) -> None:
        """Drain the queue into JetStream with `tasks` publications in flight."""
        async def publisher() -> None:
            while True:
                title, counter, apdu, received, source, key_id = await self.queue.get()
                try:
                    stored = await broker.publish_push(title, counter, apdu, received, source, key_id)
                    self.counts["published" if stored else "duplicate"] += 1
                except BrokerUnavailable as exc:
                    self.refuse("lost", "push of meter %s (counter %d) not published: %s", title, counter, exc,
                                level=logging.ERROR)
                    self._recent.pop((bytes.fromhex(title), key_id, counter), None)
                finally:
                    self.queue.task_done()

        await asyncio.gather(*(publisher() for _ in range(tasks)))


class PushIngester:
    """Stores the pushes of the stream, once each, in batches, decoded into readings."""

    def __init__(self, store: FleetStore, broker: Broker, *, batch: int = 500, ack_wait: float = 30.0,
                 say: Callable[[str], None] | None = None, object_lists: ObjectLists | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.broker = broker
        self.batch = batch
        self.ack_wait = ack_wait
        self.counts: Counter[str] = Counter()
        self.note = RateLimitedLog(log)
        self.say = say or (lambda message: log.warning("%s", message))
        self._object_lists = object_lists  # the model's, loaded with the first push, when None
        self.monotonic = monotonic
        # title → (when read, [(suite, ek, ak)] newest first, [] for none in the store); the most
        # recently used last
        self._keys: OrderedDict[bytes, tuple[float, list[tuple[int, bytes, bytes]]]] = OrderedDict()
        self._keys_checked: dict[bytes, float] = {}  # title → when its keys were last read

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
            await self._read_keys_of([parsed[0] for _, parsed in good])
            pushes = [await self.decode(*parsed) for _, parsed in good]
        except UNAVAILABLE + (asyncpg.PostgresError,) as exc:  # reading the keys: the batch comes back
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        try:
            fresh, values = await self.store.store_pushes(pushes)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        except asyncpg.PostgresError as exc:
            if not _the_datas_fault(exc):  # a full disk, a deadlock, a cancelled statement: not the pushes'
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
            # one bad row must not hold up the others: push by push, a push whose values are
            # refused kept raw, one refused as a whole terminated
            self.note("ingest.batch", "a batch of pushes was refused (%s): stored one by one", exc)
            for (m, _), push in zip(good, pushes):
                try:
                    fresh, values = await self._store_one(push)
                except UNAVAILABLE as exc:
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
                except asyncpg.PostgresError as exc:
                    if not _the_datas_fault(exc):
                        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
                    self.counts["refused"] += 1
                    self.note("ingest.refused", "the store refused a push of %s: %s", m.subject, exc)
                    await _quietly(m.term())
                else:
                    self._count(fresh, [push], values)
                    await _quietly(m.ack())
            return
        self._count(fresh, pushes, values)
        for m, _ in good:
            await _quietly(m.ack())

    async def _store_one(self, push: IngestedPush) -> tuple[set, int]:
        try:
            return await self.store.store_pushes([push])
        except UNAVAILABLE:
            raise
        except asyncpg.PostgresError as exc:
            if not push.values or not _the_datas_fault(exc):
                raise
            return await self.store.store_pushes([replace(push, values=(), scalers={},
                                                          undecoded=f"the store refused its values: {exc}"[:500])])

    def _count(self, fresh: set, pushes: list[IngestedPush], values: int) -> None:
        self.counts["stored"] += len(fresh)
        self.counts["duplicate"] += len(pushes) - len(fresh)
        self.counts["values"] += values
        for p in pushes:
            if p.undecoded is not None and (p.system_title, p.key_id, p.invocation_counter) in fresh:
                self.counts["undecoded"] += 1
                self.note("ingest.undecoded", "push of meter %s (counter %d) kept raw, not decoded: %s",
                          p.system_title.hex().upper(), p.invocation_counter, p.undecoded)

    # -- decoding --------------------------------------------------------------------------

    @property
    def object_lists(self) -> ObjectLists:
        if self._object_lists is None:  # loading the object model takes most of a second: not at start
            from smartmeter.hes.push_listener import model_object_lists
            self._object_lists = ObjectLists(None, None, model_object_lists())
        return self._object_lists

    async def decode(self, title: bytes, counter: int, received: dt.datetime, source: str, apdu: bytes
                     ) -> IngestedPush:
        """The push with its values, or with why it has none. Never raises but for the store
        being away (reading the keys)."""
        raw = IngestedPush(title, counter, received, source, apdu)
        try:
            found = await self._decode(title, counter, received, apdu)
        except UNAVAILABLE + (asyncpg.PostgresError,):
            raise
        except Exception as exc:  # a decoder is total: whatever a push holds, it is kept raw
            log.debug("push of %s (counter %d) could not be decoded", title.hex(), counter, exc_info=True)
            found = f"internal error decoding it: {type(exc).__name__}: {exc}"
        if isinstance(found, str):
            return replace(raw, undecoded=found[:500])
        return replace(found, source=source)

    async def _decode(self, title: bytes, counter: int, received: dt.datetime, apdu: bytes) -> IngestedPush | str:
        try:
            ciphered = GeneralGloCiphering.from_bytes(apdu)
        except DecodeError as exc:
            return f"no general-glo-ciphering APDU: {exc}"
        if (ciphered.system_title, ciphered.invocation_counter) != (title, counter):
            return (f"the APDU is of meter {ciphered.system_title.hex().upper()} counter "
                    f"{ciphered.invocation_counter}, not the one of its message")
        found = await self._unprotect(ciphered)
        if isinstance(found, str):
            return found
        plain, key_id = found
        try:
            notification = DataNotification.from_bytes(plain)
        except DecodeError as exc:
            return f"no data-notification: {exc}"
        meter = title.hex().upper()
        push = decode_push(meter, counter, notification, format_time(received), self.object_lists,
                           lambda _: True)  # installation and connectivity pushes give the same readings
        if push is None:
            return f"its {len(_body(notification))} values fit no known push object list"
        captured = dt.datetime.fromisoformat(push.capture_time)
        # the bounds of the workers' reads, around the receive time: a meter whose clock is far
        # off would otherwise make a partition of `reading` for every month it names
        if not received - PLAUSIBLE_PAST <= captured <= received + PLAUSIBLE_FUTURE:
            return f"its capture time {push.capture_time} is years from when it was received"
        values = tuple(PushValue(r.obis, r.attribute, r.class_id, integer_raw(r.value),
                                 None if integer_raw(r.value) is not None else r.value) for r in push.readings)
        return IngestedPush(title, counter, received, "", apdu, captured, values, scaler_units(push.readings),
                            key_id=key_id)

    async def _unprotect(self, ciphered: GeneralGloCiphering) -> tuple[bytes, str] | str:
        """The plaintext and the key id of the key that fits, tried with the meter's newest key
        generations (a push made before a key change arrives after it). When none fits, or the
        meter's keys are not held, they are read again (a meter imported, or its keys changed,
        since they were read), at most every KEYS_RELOAD s a meter. Keys read longer than
        KEYS_FRESH ago are read again first: the store's push keys change with time (an EXPIRED
        one is given for a grace only)."""
        title = ciphered.system_title
        if self._held_fresh(title):
            self._keys.move_to_end(title)
        else:  # not read with its batch's, forgotten for the meters used since, or read too long ago
            await self._read_keys_of([title])
        plain = self._try_keys(ciphered, self._keys[title][1])
        if isinstance(plain, str) and self.monotonic() - self._keys_checked.get(title, float("-inf")) >= KEYS_RELOAD:
            await self._read_keys_of([title], again=True)  # a store error: the batch comes back
            plain = self._try_keys(ciphered, self._keys[title][1])
        return plain

    def _held_fresh(self, title: bytes) -> bool:
        held = self._keys.get(title)
        return held is not None and self.monotonic() - held[0] < KEYS_FRESH

    async def _read_keys_of(self, titles: list[bytes], again: bool = False) -> None:
        """Read the keys of the meters `titles` not held (or held longer than KEYS_FRESH) in one
        query; `again`: of all of them, because none of those held fit (which KEYS_RELOAD bounds)."""
        wanted = list(dict.fromkeys(t for t in titles if again or not self._held_fresh(t)))
        if not wanted:
            return
        now = self.monotonic()
        found = await read_push_keys(self.store, wanted)
        if again:
            _note_read(self._keys_checked, wanted, now)
        for title in wanted:
            self._keys[title] = (now, found.get(title, []))
            self._keys.move_to_end(title)
        while len(self._keys) > KEY_CACHE:
            self._keys.popitem(last=False)

    @staticmethod
    def _try_keys(ciphered: GeneralGloCiphering, keys: list[tuple[int, bytes, bytes]]) -> tuple[bytes, str] | str:
        if not keys:
            return "no keys of its meter in the store"
        for suite, ek, ak in keys:
            try:
                return ciphered.unprotect(ek, ak, expected_suite=suite), push_key_id(ek)
            except AuthenticationError:
                continue
            except (SecurityError, DecodeError) as exc:
                return f"cannot be unprotected: {exc}"
        return "its authentication tag fits none of its meter's keys in the store"


def _the_datas_fault(exc: asyncpg.PostgresError) -> bool:
    """An error the rows themselves cause (SQLSTATE class 22 data exception, 23 integrity
    constraint violation): the same rows would fail again. Anything else passes."""
    return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23")


def _body(notification: DataNotification) -> list:
    from smartmeter.cosem.data import DataType

    body = notification.body
    return list(body.value) if body.type == DataType.STRUCTURE else [body]


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except (NatsError, APIError, OSError, asyncio.TimeoutError):
        pass  # an unanswered message is delivered again; its row's key makes that harmless
