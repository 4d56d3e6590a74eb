"""`smartmeter hes worker`: a stateless worker that takes read jobs from JetStream and stores
what it reads in the fleet store. Run any number of them, on any number of machines.

Per job, one claim in the store (`FleetStore.claim`): the job must still be open (a delivery
after a crash between storing and acknowledging is acknowledged at once), the meter's lease
free, then a session slot of the meter's cell and a new-connection token (both shared by all
workers), and a block of invocation counters. The session's readings, marks, counters and the
outcome are stored in one transaction, then the message is acknowledged. While it works the
worker tells JetStream so (in-progress heartbeats), so a slow meter is not handed to a second
worker; a worker that dies stops the heartbeats, and after the ack wait the job goes to another
one, whose claim waits until the dead worker's lease ran out.

Errors: a permanent one (authentication failed, other keys, a refusal for good, a replayed or
rolled-back answer, a value the store cannot hold) stores the outcome "failed" and terminates
the message; a transient one (no connection, a time-out, rejected-transient, temporary-failure)
is tried again after an exponential back-off with jitter, until the job's attempts reach the
maximum. A job begun `max_claims` times whose sessions never ended (its workers died with it)
is failed by the next claim. When the store cannot be reached the worker stops taking jobs and
backs off until it is back; the jobs it held go back to JetStream.

What a job does is its campaign's kind in the store ("read" or "key_change"), not what its
message says. A job whose message id names another store is handed back, unless its campaign
here was created under that store id (the store came back under a new id: migration 0007).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Callable

import asyncpg
from nats.errors import Error as NatsError
from nats.js.errors import APIError

from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.client import AccessDenied, AssociationRefused, ClientError, InvocationCounterError, ProtectionError
from smartmeter.hes.connection import LinkError
from smartmeter.hes.fleet.broker import Broker, Job, JobFormatError, backoff_delay
from smartmeter.hes.fleet.keychange import (
    KeyTransferDeferred, KeyTransferImpossible, KeyTransferRefused, KeyTransferUncertain, key_transfer_data,
    new_key_pair, probe, refuses_keys, transfer_keys,
)
from smartmeter.hes.fleet.resync import resync_counter, under_new_keys
from smartmeter.hes.fleet.session import (
    CounterBlockExhausted, ReadPlan, SessionTimeout, Timeouts, _within, read_session,
)
from smartmeter.hes.store.pg import UNAVAILABLE, FleetStore, LeaseLost, StoreError, StoreUnavailable
from smartmeter.ratelog import RateLimitedLog

__all__ = ["WorkerSettings", "Worker", "DEFAULT_CLIENT_SYSTEM_TITLE"]

log = logging.getLogger(__name__)

# The head-end's own system title (8 bytes: "SMH" and a number): the meters see it as the
# client's calling-AP-title. One title for all workers: the counters are the store's.
DEFAULT_CLIENT_SYSTEM_TITLE = b"SMH\x00\x00\x00\x00\x01"

TRANSIENT = (LinkError, SessionTimeout, CounterBlockExhausted, ProtectionError, OSError, asyncio.TimeoutError)
LEASE_MARGIN = 1.0  # s of the lease left unused by a session's last association, for the store's steps
CAMPAIGNS_KNOWN = 10_000  # campaigns whose kind and store id a worker keeps (they never change)


def permanent(exc: ClientError) -> bool:
    """Whether a session's error means that trying again cannot help: authentication failed,
    other keys, a refusal for good, a replayed or rolled-back answer. A meter that is busy for
    the moment (rejected-transient, temporary-failure) and a damaged answer are tried again."""
    if isinstance(exc, AssociationRefused):
        return exc.result != 2
    if isinstance(exc, AccessDenied):
        return exc.result != DataAccessResult.TEMPORARY_FAILURE
    return not isinstance(exc, TRANSIENT)


def may_hold_new_keys(exc: BaseException) -> bool:
    """Whether a failure under the ACTIVE keys leaves open that the meter holds NEW ones: a
    clear refusal of the keys, or no answer at all (silence, a closed connection, a time-out:
    some meters hang up on a request they cannot decipher). A permanent answer of another
    kind (a replayed counter, an access denied) was given under the ACTIVE keys."""
    return refuses_keys(exc) or not permanent(exc)


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 16
    timeouts: Timeouts = Timeouts()
    plan: ReadPlan = ReadPlan()
    ack_wait: float = 30.0
    # JetStream never gives a job up (max_deliver -1): the store counts what happened to it,
    # since JetStream's own limit would leave the job without an outcome
    max_attempts: int = 5  # sessions that ended without the outcome before the job is failed
    max_claims: int = 10  # sessions begun (those of workers that died count here only) before it is failed
    counter_block: int = 32  # a session of the default plan takes about 15; more are reserved as needed
    slot_wait: float = 120.0  # how long a job waits for a session slot of its cell before it is handed back
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    client_system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE
    urgent_tasks: int = 2  # sessions for on-demand jobs, besides the concurrency for campaigns


class _JobFailed(Exception):
    """The job cannot be done (the reason is its outcome)."""


@dataclass
class WorkerStats:
    done: int = 0
    failed: int = 0
    retried: int = 0
    duplicates: int = 0
    poison: int = 0
    rows: int = 0
    sessions: int = 0
    lease_lost: int = 0
    keys_changed: int = 0
    keys_settled: int = 0  # key changes cut short, completed by a later session
    session_seconds: float = 0.0

    def line(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v if isinstance(v, int) else round(v, 1)}"
                         for k, v in dataclasses.asdict(self).items())


class Worker:
    def __init__(self, store: FleetStore, broker: Broker, settings: WorkerSettings = WorkerSettings(), *,
                 name: str | None = None, say: Callable[[str], None] | None = None,
                 link_factory=None) -> None:
        self.store = store
        self.broker = broker
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{random.randrange(1 << 32):08x}"
        self.stats = WorkerStats()
        self.note = RateLimitedLog(log)
        self.say = say or (lambda message: log.warning("%s", message))
        self.link_factory = link_factory
        self._store_away = False  # between a failed call and the store answering again
        self._stopping = asyncio.Event()
        self._rng = random.Random()
        self._in_hand: dict[int, list] = {}  # id(job message) → [message, when JetStream last heard of it]
        self._store_id: str | None = None  # the store's own id, which its campaigns' job ids begin with
        self._campaigns: dict[int, tuple[str, str]] = {}  # campaign → (kind, store id it was created under)
        self._feeds: list = []  # the lanes' PullFeeds, held while the store is away

    @property
    def lease_s(self) -> float:
        # a dead holder's lease and slot expire only after any session of it would have ended
        return self.settings.timeouts.total + 15.0

    async def run(self) -> None:
        s = self.settings
        self._store_id = await self._store_call(self.store.store_id())
        await self.broker.consumer("bulk", "hes-workers-bulk", ack_wait=s.ack_wait, max_deliver=-1,
                                   max_ack_pending=max(s.concurrency * 64, 1000))
        await self.broker.consumer("urgent", "hes-workers-urgent", ack_wait=s.ack_wait, max_deliver=-1,
                                   max_ack_pending=max(s.urgent_tasks * 64, 100))
        # on-demand jobs have sessions of their own, so a campaign never holds them up
        lanes = [asyncio.create_task(self._lane("bulk", "hes-workers-bulk", s.concurrency, urgent=False)),
                 asyncio.create_task(self._lane("urgent", "hes-workers-urgent", s.urgent_tasks, urgent=True))]
        heartbeats = asyncio.create_task(self._heartbeats())
        try:
            await self._stopping.wait()
            # the sessions under way end (each within its total time-out); no new job is taken
            await asyncio.wait(lanes, timeout=s.timeouts.total + 5.0)
        finally:
            for t in (*lanes, heartbeats):
                t.cancel()
            await asyncio.gather(*lanes, heartbeats, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    async def _lane(self, lane: str, durable: str, capacity: int, urgent: bool) -> None:
        """Up to `capacity` jobs of the lane at a time, each handled as its message arrives;
        none is asked for while the store is away."""
        running: set[asyncio.Task] = set()
        feed = None

        def take(msg) -> None:
            task = asyncio.create_task(self._guarded(msg, urgent))
            running.add(task)
            task.add_done_callback(lambda t: (running.discard(t), feed.done()))

        def problem(message: str) -> None:
            self.note("worker.broker", "%s", message)

        try:
            feed = await self.broker.feed(lane, durable, capacity, take, on_problem=problem)
            self._feeds.append(feed)
            await self._stopping.wait()
            feed.stop()
            if running:
                await asyncio.wait(running)
        finally:
            for task in running:
                task.cancel()
            if feed is not None:
                self._feeds.remove(feed)
                await feed.close()

    async def _guarded(self, msg, urgent: bool) -> None:
        try:
            await self._handle(msg, urgent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a job must never take the worker down with it
            self.note("worker.internal", "job %s: unexpected %s: %s", msg.subject, type(exc).__name__, exc)
            await self._answer(msg.nak(delay=self._delay(msg)))

    def _delay(self, msg) -> float:
        return backoff_delay(msg.metadata.num_delivered, self.settings.backoff_base, self.settings.backoff_cap,
                             self._rng)

    async def _answer(self, awaitable) -> None:
        try:
            await awaitable
        except (NatsError, APIError, OSError, asyncio.TimeoutError) as exc:
            # the message comes back after the ack wait; its outcome in the store decides then
            self.note("worker.answer", "could not answer JetStream (%s); the job will come back", exc)

    async def _handle(self, msg, urgent: bool = False) -> None:
        try:
            job = Job.from_bytes(msg.data)
        except JobFormatError as exc:
            self.stats.poison += 1
            self.note("worker.poison", "terminated a malformed job message on %s: %s", msg.subject, exc)
            await self._answer(msg.term())
            return
        self._in_hand[id(msg)] = [msg, time.monotonic()]
        try:
            campaign = await self._campaign_of(job.campaign)
            owner = _job_owner(msg)
            if (owner is not None and self._store_id is not None and owner != self._store_id
                    and (campaign is None or campaign[1] != owner)):
                # another installation's job (its campaign published it with its store's id): it
                # is not ours to fail; it goes back for that installation's workers. A campaign of
                # this store created under another id (the store restored into a new database)
                # recorded that id: its jobs are ours.
                self.note("worker.foreign_job", "job %s belongs to another store (%s): this NATS is shared with "
                          "another head-end installation; give each installation a NATS account of its own",
                          job.message_id, owner)
                await self._answer(msg.nak(delay=30.0))
                return
            if campaign is not None and campaign[0] != job.kind:
                # the store's campaign decides what its jobs do, not what a message says
                self.note("worker.job_kind", "job %s says kind %r, its campaign in the store is %r: doing %r",
                          job.message_id, job.kind, campaign[0], campaign[0])
                job = dataclasses.replace(job, kind=campaign[0])
            await self._job(msg, job, urgent)
        except _JobFailed as exc:
            await self._fail(msg, job, None, str(exc))
        except StoreUnavailable as exc:
            await self._store_down(exc)
            await self._answer(msg.nak(delay=self._delay(msg)))
        except UNAVAILABLE + (asyncpg.PostgresConnectionError,) as exc:
            await self._store_down(StoreUnavailable(f"{type(exc).__name__}: {exc}"))
            await self._answer(msg.nak(delay=self._delay(msg)))
        finally:
            self._in_hand.pop(id(msg), None)

    async def _campaign_of(self, campaign: int) -> tuple[str, str] | None:
        """(kind, store id) of the campaign from the store, kept once known (neither changes);
        None when the store has no such campaign (asked again next time: it may be created)."""
        known = self._campaigns.get(campaign)
        if known is None:
            known = await self._store_call(self.store.campaign_of(campaign))
            if known is not None:
                if len(self._campaigns) >= CAMPAIGNS_KNOWN:
                    self._campaigns.clear()
                self._campaigns[campaign] = known
        return known

    async def _heartbeats(self) -> None:
        """One task for every job in hand: each tells JetStream it is still being worked on
        every third of the ack wait."""
        interval = max(0.5, self.settings.ack_wait / 3)
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            due = [entry for entry in self._in_hand.values() if now - entry[1] >= interval]
            for entry in due:
                entry[1] = now
            if due:
                await asyncio.gather(*(self._answer(msg.in_progress()) for msg, _ in due))

    async def _job(self, msg, job: Job, urgent: bool = False) -> None:
        claim = await self._claim(job, urgent)
        if claim is None:  # no slot of the cell came free in time: the job goes back to the queue
            await self._answer(msg.nak(delay=1.0 + self._rng.random()))
        elif claim.status == "closed":
            if claim.job_state is None:
                self.stats.poison += 1
                self.note("worker.unknown_job", "terminated job %s: no such campaign and meter in the store",
                          job.message_id)
                await self._answer(msg.term())
            else:  # a delivery after its outcome was stored (a worker died before acknowledging)
                self.stats.duplicates += 1
                await self._answer(msg.ack())
        elif claim.status == "busy":
            await self._answer(msg.nak(delay=min(self.lease_s, 5.0) * (0.5 + self._rng.random())))
        elif claim.status == "exhausted":
            await self._fail(msg, job, None, "the meter's invocation counters are used up; change its unicast key")
        elif claim.status == "poison":  # failed by the claim itself
            self.stats.failed += 1
            self.note("worker.poison_job", "job %s failed: begun %d times and never ended", job.message_id,
                      self.settings.max_claims)
            await self._answer(msg.term())
        else:
            grant = claim.grant
            try:
                if job.kind == "key_change":
                    await self._change_keys(msg, job, grant)
                else:
                    await self._read(msg, job, grant)
            except BaseException:
                try:  # what the session held is given back; if that fails too, the leases expire
                    await self.store.release(grant)
                except UNAVAILABLE + (asyncpg.PostgresError,):
                    pass
                raise

    async def _claim(self, job: Job, urgent: bool = False):
        """Claim the job's meter, waiting (with jitter) for a slot of its cell up to slot_wait
        seconds, for its connection tokens, and for another holder's lease of the meter to
        end (a worker that died: its lease runs out within lease_s). The job's message is kept
        meanwhile (heartbeats), since every hand-back would use up one of its deliveries.
        None when no slot came free."""
        s = self.settings
        deadline = time.monotonic() + s.slot_wait
        busy_until = time.monotonic() + self.lease_s + 1.0
        pause, slot = 0.02, None
        while True:
            try:
                claim = await self._store_call(self.store.claim(job.meter_id, self.name, self.lease_s, s.counter_block,
                                                                campaign=job.campaign, throttle=True, slot=slot,
                                                                max_claims=s.max_claims, urgent=urgent))
            except StoreUnavailable:
                raise
            except StoreError as exc:  # e.g. keys that do not unwrap
                raise _JobFailed(str(exc)) from None
            if claim.status == "throttled":
                slot = claim.slot
                await asyncio.sleep(claim.wait)
            elif claim.status == "cell_full":
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(pause * (0.5 + self._rng.random()))
                # campaign jobs wait longer and longer; an on-demand job keeps asking often, so
                # that it takes the cell's next free slot ahead of them
                pause = pause if urgent else min(0.5, pause * 1.5)
            elif claim.status == "busy" and time.monotonic() < busy_until:
                await asyncio.sleep((0.05 if urgent else 0.5) + self._rng.random() * (0.1 if urgent else 1.0))
            else:
                return claim

    async def _read(self, msg, job: Job, grant) -> None:
        s = self.settings
        started = time.monotonic()
        self.stats.sessions += 1
        try:
            result = await read_session(
                grant, s.plan, s.timeouts, s.client_system_title,
                lambda n: self._store_call(self.store.reserve_counters(grant.meter_id, grant.key_generation, n,
                                                                       grant.lease_token)),
                link_factory=self.link_factory)
        except LeaseLost as exc:  # no more counters: the lease ran out during the session
            self.stats.lease_lost += 1
            self.note("worker.lease_lost", "%s", exc)
            await self._answer(msg.nak(delay=self._delay(msg)))
            return
        except InvocationCounterError as exc:
            # the meter holds a higher counter of ours than the store (a restored store): move
            # ours above the one its frame counter object shows (verified with our AK; the
            # exception-response's own counter is unprotected), never down, and try again soon
            await resync_counter(self.store, grant, exc, s.client_system_title, s.timeouts.connect + s.timeouts.request,
                                 self._store_call, link_factory=self.link_factory)
            await self._retry(msg, job, grant, f"the meter refused our invocation counter ({exc})")
            return
        except TRANSIENT + (ClientError,) as exc:
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, TRANSIENT) else str(exc)
            if grant.new_keys and may_hold_new_keys(exc):
                # a key change was cut short: the meter may hold the NEW keys
                try:
                    settled = await self._settled_on_new_keys(grant)
                except TRANSIENT + (ClientError,) as again:
                    await self._retry(msg, job, grant, f"{reason}; under the NEW keys: {again}")
                    return
            else:
                settled = False
            if settled:
                # a key change was cut short after the meter took the new keys: they are
                # ACTIVE now, and the read goes again under them
                await self._store_call(self.store.release(grant))
                await self._answer(msg.nak(delay=0.1))
            elif permanent(exc):
                await self._fail(msg, job, grant, reason)
            else:
                await self._retry(msg, job, grant, reason)
            return
        finally:
            self.stats.session_seconds += time.monotonic() - started
        try:
            stored = await self._store_call(self.store.finish_session(grant, result, (job.campaign, self.name)))
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, OverflowError) as exc:
            # what the meter sent does not fit the store: the same again would not either
            await self._fail(msg, job, grant, f"the meter's answer cannot be stored: {type(exc).__name__}: {exc}")
            return
        except LeaseLost as exc:
            self.stats.lease_lost += 1
            self.note("worker.lease_lost", "%s", exc)
            await self._answer(msg.nak(delay=self._delay(msg)))
            return
        self.stats.done += 1
        self.stats.rows += stored
        await self._answer(msg.ack())

    # -- key changes (smartmeter.hes.fleet.keychange) ------------------------------------------
    def _refill(self, grant, generation: int):
        return lambda n: self._store_call(self.store.reserve_counters(grant.meter_id, generation, n, grant.lease_token))

    async def _settled_on_new_keys(self, grant, job: Job | None = None) -> bool:
        """The meter refused the ACTIVE keys, or did not answer under them, and the store has
        NEW ones: whether it takes those, in which case they are promoted (with `job`, its
        outcome 'done' in the same transaction). Within what is left of the lease (SessionTimeout
        beyond it): the session's meter is no longer its own after that."""
        t = self.settings.timeouts
        association = t.connect + t.association + 2 * t.request  # an association and a request
        # at most two associations and a frame counter readout between them
        budget = 2 * association + t.connect + t.request
        if grant.lease_deadline is not None:
            budget = min(budget, grant.lease_deadline - time.monotonic() - LEASE_MARGIN)
        if budget <= 0:
            raise SessionTimeout("no time is left within the lease to try the NEW keys")
        generation = grant.new_generation
        try:
            rx_last = await _within("the associations under the new keys", budget, self._probe_new_keys(grant))
        except ClientError as exc:
            if not refuses_keys(exc):
                raise  # no answer either way: the next session asks again
            self.note("worker.settle", "meter %s refuses its NEW keys (%s); both are kept", grant.serial, exc)
            return False
        promoted = await self._store_call(self.store.promote_keys(
            grant, generation, rx_last, (job.campaign, self.name) if job is not None else None))
        if promoted:
            self.stats.keys_settled += 1
            self.note("worker.settled", "meter %s: a key change cut short is completed (it holds generation %d)",
                      grant.serial, generation)
        return promoted

    async def _probe_new_keys(self, grant) -> int | None:
        """`probe` under the NEW keys with a fresh block of their counters; when the meter
        refuses it, and its frame counter object verifies under the NEW AK (it holds them, and
        has seen more of their counters than the store reserved: a store restored meanwhile),
        that generation's counter is moved above it and the probe made once more."""
        s = self.settings
        generation = grant.new_generation
        resynced = False
        while True:
            block = await self._store_call(self.store.reserve_counters(grant.meter_id, generation, s.counter_block,
                                                                       grant.lease_token))
            try:
                return await probe(grant, grant.new_keys, block, None, self._refill(grant, generation), s.timeouts,
                                   s.client_system_title, self.link_factory)
            except (AssociationRefused, InvocationCounterError) as exc:
                if resynced or (isinstance(exc, AssociationRefused) and exc.result == 2):
                    raise
                if await resync_counter(self.store, under_new_keys(grant), exc, s.client_system_title,
                                        s.timeouts.connect + s.timeouts.request, self._store_call,
                                        link_factory=self.link_factory) is None:
                    raise
                resynced = True

    async def _change_keys(self, msg, job: Job, grant) -> None:
        s = self.settings
        started = time.monotonic()
        self.stats.sessions += 1
        try:
            # one lease covers the whole change: every association of it ends within the total
            await _within("the key change", s.timeouts.total, self._key_change(msg, job, grant))
        except LeaseLost as exc:
            self.stats.lease_lost += 1
            self.note("worker.lease_lost", "%s", exc)
            await self._answer(msg.nak(delay=self._delay(msg)))
        except (KeyTransferRefused, KeyTransferImpossible, _JobFailed) as exc:
            await self._fail(msg, job, grant, str(exc))
        except TRANSIENT + (KeyTransferUncertain, KeyTransferDeferred) as exc:
            await self._retry(msg, job, grant, f"{type(exc).__name__}: {exc}")
        except ClientError as exc:
            if permanent(exc):
                await self._fail(msg, job, grant, str(exc))
            else:
                await self._retry(msg, job, grant, str(exc))
        finally:
            self.stats.session_seconds += time.monotonic() - started

    async def _key_change(self, msg, job: Job, grant) -> None:
        s = self.settings
        if grant.new_keys:
            # an earlier change of this meter was cut short: which keys does the meter hold?
            try:
                await probe(grant, grant.keys, grant.counter_block, grant.rx_last,
                            self._refill(grant, grant.key_generation), s.timeouts, s.client_system_title,
                            self.link_factory)
            except TRANSIENT + (ClientError,) as exc:
                if not may_hold_new_keys(exc):
                    raise
                if not await self._settled_on_new_keys(grant, job):
                    if not refuses_keys(exc):
                        raise  # no answer under the ACTIVE keys, and the NEW ones refused: ask again
                    raise _JobFailed(f"the meter refuses both its ACTIVE keys and the NEW ones ({exc}); "
                                     "both are kept") from None
                self.stats.done += 1
                await self._answer(msg.ack())
                return
            # it holds the ACTIVE keys: the NEW ones never reached it
            await self._store_call(self.store.discard_new_keys(grant, grant.new_generation))
            grant.counter_block = await self._store_call(
                self.store.reserve_counters(grant.meter_id, grant.key_generation, s.counter_block, grant.lease_token))
            grant.rx_last = None
        keys = new_key_pair(grant.suite)
        transfer = key_transfer_data(grant, keys)  # no usable master key: nothing is written
        generation, block = await self._store_call(self.store.new_keys(grant, keys, s.counter_block))
        try:
            rx_last = await transfer_keys(grant, keys, transfer, block, self._refill(grant, grant.key_generation),
                                          self._refill(grant, generation), s.timeouts, s.client_system_title,
                                          self.link_factory)
        except KeyTransferUncertain:
            raise  # the NEW keys stay: the next session settles which the meter holds
        except ClientError as exc:
            if isinstance(exc, (KeyTransferRefused, KeyTransferDeferred)) or refuses_keys(exc):
                # the meter refused the transfer (for now or for good), or the association
                # before it: it keeps its keys
                await self._store_call(self.store.discard_new_keys(grant, generation))
            raise
        if not await self._store_call(self.store.promote_keys(grant, generation, rx_last,
                                                              (job.campaign, self.name))):
            raise _JobFailed(f"generation {generation} was discarded while the meter took it")
        self.stats.done += 1
        self.stats.keys_changed += 1
        await self._answer(msg.ack())

    async def _retry(self, msg, job: Job, grant, reason: str) -> None:
        s = self.settings
        await self._store_call(self.store.release(grant))
        attempts = await self._store_call(self.store.count_attempt(job.campaign, job.meter_id, reason))
        if attempts >= s.max_attempts:
            await self._fail(msg, job, None, f"gave up after {attempts} attempts: {reason}", counted=True)
            return
        self.stats.retried += 1
        await self._answer(msg.nak(delay=self._delay(msg)))

    async def _fail(self, msg, job: Job, grant, reason: str, counted: bool = False) -> None:
        if grant is not None:
            await self._store_call(self.store.release(grant))
        if await self._store_call(self.store.fail_job(job.campaign, job.meter_id, reason, self.name, counted)):
            self.stats.failed += 1
        await self._answer(msg.term())

    async def _store_call(self, awaitable):
        try:
            return await awaitable
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _store_down(self, exc: StoreError) -> None:
        """Stop taking jobs until the store answers again (one line when it goes, one when it is back)."""
        if self._store_away:
            return
        self._store_away = True
        for feed in self._feeds:
            feed.hold()
        self.say(f"the store is unavailable ({exc}); backing off until it is back")
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0, self._rng))
            try:
                await self.store.pool.fetchval("SELECT 1")
                break
            except UNAVAILABLE + (asyncpg.PostgresError,):
                continue
        self.say("the store is back; taking jobs again")
        self._store_away = False
        for feed in self._feeds:
            feed.resume()


def _job_owner(msg) -> str | None:
    """The store id a campaign put in its job's message id (`<store id>:job:<campaign>:<meter>`),
    None when the id is not of that form."""
    message_id = (getattr(msg, "headers", None) or {}).get("Nats-Msg-Id", "")
    owner, _, rest = message_id.partition(":")
    return owner if owner and rest.startswith("job:") else None
