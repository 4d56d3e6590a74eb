"""The head-end's streams on NATS JetStream.

* `HES_JOBS` (work queue): one message per job, `hes.jobs.urgent` (on-demand reads) or
  `hes.jobs.bulk` (campaigns), each consumed by one durable pull consumer that all workers
  share. A message is removed when a worker acknowledges it (after its outcome is stored) or
  terminates it (a permanent error: the outcome "failed" is stored first). A worker that dies
  leaves its messages unacknowledged: JetStream delivers them again after the ack wait.
* `HES_PUSHES`: every authenticated push as received, subject `hes.push.<system title>`,
  with `Nats-Msg-Id` = system title, key id and invocation counter, so a push that two
  listeners (or one listener twice) publish is kept once.

Both streams discard new messages when full, so a full broker makes publishers wait and
retry, and nothing already accepted is dropped to make room.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any, Callable

import nats
from nats.errors import Error as NatsError
from nats.errors import NoServersError, TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from smartmeter.errors import SmartmeterError

__all__ = ["BrokerUnavailable", "Broker", "Job", "JobFormatError", "PullFeed", "JOBS_STREAM", "PUSHES_STREAM"]

JOBS_STREAM = "HES_JOBS"
PUSHES_STREAM = "HES_PUSHES"
URGENT, BULK = "hes.jobs.urgent", "hes.jobs.bulk"
LANES = {"urgent": URGENT, "bulk": BULK}
PUSH_SUBJECT = "hes.push"
RECEIVED_HEADER = "Smartmeter-Received"  # when the listener took the push (epoch seconds, text)
SOURCE_HEADER = "Smartmeter-Source"  # the listener's name and the sender's address
JOB_MAX_BYTES = 4096  # a job message is small; a bigger one is refused as malformed
JOB_KINDS = ("read", "key_change")  # a campaign's kind: what its worker does with each meter


class BrokerUnavailable(SmartmeterError):
    """NATS cannot be reached, or JetStream is not enabled there."""


class JobFormatError(SmartmeterError):
    """A job message that is not a job (its bytes cannot be read as one)."""


@dataclass(frozen=True)
class Job:
    campaign: int
    meter_id: int
    kind: str = "read"

    def to_bytes(self) -> bytes:
        return json.dumps({"campaign": self.campaign, "meter": self.meter_id, "kind": self.kind},
                          separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Job":
        if len(data) > JOB_MAX_BYTES:
            raise JobFormatError(f"a job message of {len(data)} bytes (at most {JOB_MAX_BYTES})")
        try:
            raw = json.loads(data)
            campaign, meter, kind = raw["campaign"], raw["meter"], raw.get("kind", "read")
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            raise JobFormatError("a job message that is not a JSON object with campaign and meter") from None
        if type(campaign) is not int or type(meter) is not int or kind not in JOB_KINDS:
            raise JobFormatError("a job message whose campaign, meter or kind has the wrong type or value")
        return cls(campaign, meter, kind)

    @property
    def message_id(self) -> str:
        return f"job:{self.campaign}:{self.meter_id}"


@dataclass(frozen=True)
class StreamLimits:
    # -1: the server's own store limit (max_file_store) bounds a stream; with discard "new" a
    # full store refuses publications, which then wait and retry (Broker.publish)
    jobs_max_bytes: int = -1
    pushes_max_bytes: int = -1
    pushes_max_age: float = 7 * 24 * 3600.0
    duplicate_window: float = 2 * 3600.0  # a push repeated within this is dropped by the broker
    replicas: int | None = None  # None: 3 on a JetStream cluster, 1 on a single server


def backoff_delay(delivery: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Exponential back-off with jitter for the `delivery`-th failed attempt (1-based): about
    base × 2^(delivery−1), capped, times a random factor in [0.5, 1.5) so retries spread out."""
    rng = rng or random
    return min(cap, base * 2 ** max(0, delivery - 1)) * (0.5 + rng.random())


class Broker:
    """A connection to NATS with the head-end's streams."""

    def __init__(self, nc, url: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.url = url
        self._closing: list[bool] = []
        self._refusing = False  # publications are being refused (a line was said)

    @classmethod
    async def connect(cls, url: str, *, name: str = "smartmeter-hes", timeout: float = 5.0,
                      on_problem: Callable[[str], None] | None = None) -> "Broker":
        say = on_problem or (lambda message: None)
        closing = []  # set by close(): a disconnection then is ours

        async def disconnected() -> None:
            if not closing:
                say(f"lost the connection to NATS at {url}; reconnecting")

        async def reconnected() -> None:
            say(f"connected to NATS again at {url}")

        connected = []  # until the first connection, failures are the caller's (one error), not lines

        async def error(exc: Exception) -> None:
            if connected and not closing:
                say(f"NATS: {exc.__class__.__name__}: {exc}")

        try:
            # nats-py keeps retrying a first connection that fails: the time-out ends that
            nc = await asyncio.wait_for(nats.connect(
                url.split(","), name=name, connect_timeout=timeout, allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, disconnected_cb=disconnected, reconnected_cb=reconnected,
                error_cb=error), timeout * 2)
        except (NoServersError, OSError, NatsError, asyncio.TimeoutError) as exc:
            detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else f"no connection within {timeout * 2:g} s"
            raise BrokerUnavailable(f"cannot reach NATS at {url} ({detail}); "
                                    "is nats-server running with JetStream (-js)?") from None
        connected.append(True)
        broker = cls(nc, url)
        broker._closing = closing
        try:
            await broker.js.account_info()
        except (APIError, NatsTimeout, NatsError) as exc:
            await nc.close()
            raise BrokerUnavailable(f"NATS at {url} has no JetStream ({exc}); start nats-server with -js") from None
        return broker

    async def close(self) -> None:
        self._closing.append(True)
        try:
            await self.nc.flush(timeout=2)  # what was published (answers to jobs, pushes) goes out first
        except (NatsError, asyncio.TimeoutError):
            pass
        # not drain: a fetched job left unanswered is delivered again, as after any stop
        await self.nc.close()

    @property
    def clustered(self) -> bool:
        return bool(self.nc._server_info.get("cluster"))

    async def ensure_streams(self, limits: StreamLimits = StreamLimits()) -> None:
        """The streams, created if missing: on a cluster with three replicas, so that they live
        through the loss of a server (a stream already there is left as it is)."""
        if limits.replicas is None:
            limits = dataclasses.replace(limits, replicas=3 if self.clustered else 1)
        await self._ensure(api.StreamConfig(
            name=JOBS_STREAM, subjects=[URGENT, BULK], retention=api.RetentionPolicy.WORK_QUEUE,
            discard=api.DiscardPolicy.NEW, max_bytes=limits.jobs_max_bytes, duplicate_window=120.0,
            storage=api.StorageType.FILE, num_replicas=limits.replicas))
        await self._ensure(api.StreamConfig(
            name=PUSHES_STREAM, subjects=[PUSH_SUBJECT + ".>"], retention=api.RetentionPolicy.WORK_QUEUE,
            discard=api.DiscardPolicy.NEW, max_bytes=limits.pushes_max_bytes, max_age=limits.pushes_max_age,
            duplicate_window=limits.duplicate_window, storage=api.StorageType.FILE, num_replicas=limits.replicas))

    async def _ensure(self, config: api.StreamConfig, attempts: int = 20) -> None:
        for attempt in range(1, attempts + 1):
            try:
                try:
                    await self.js.stream_info(config.name)
                except NotFoundError:
                    await self.js.add_stream(config)
                return
            except (NatsTimeout, asyncio.TimeoutError, APIError) as exc:
                # a cluster electing its leaders answers late or "unavailable" for a moment
                if isinstance(exc, NotFoundError) or attempt == attempts:
                    raise BrokerUnavailable(f"NATS could not create the stream {config.name}: {exc}") from None
                await asyncio.sleep(0.5)

    async def publish(self, subject: str, payload: bytes, message_id: str, *, patience: float = 300.0,
                      say: Callable[[str], None] | None = None, headers: dict[str, str] | None = None) -> bool:
        """Publish until JetStream stores it (or says it is a duplicate): a full stream or a
        broker that is away makes this wait and retry with back-off, up to `patience` seconds,
        then raise BrokerUnavailable. Returns False for a duplicate."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        attempt = 0
        while True:
            try:
                ack = await self.js.publish(subject, payload, timeout=5.0,
                                            headers={**(headers or {}), "Nats-Msg-Id": message_id})
                if self._refusing and say is not None:
                    say("NATS takes messages again")
                self._refusing = False
                return not ack.duplicate
            except (APIError, NatsTimeout, NatsError, asyncio.TimeoutError) as exc:
                attempt += 1
                if loop.time() >= deadline:
                    raise BrokerUnavailable(f"NATS did not take a message for {patience:g} s: {exc}") from None
                if say is not None and attempt == 1 and not self._refusing:
                    say(f"NATS is not taking messages ({exc}); retrying with back-off")
                self._refusing = True  # one line for all the publications it refuses
                await asyncio.sleep(min(backoff_delay(attempt, base=0.2, cap=5.0), max(0.0, deadline - loop.time())))

    async def publish_push(self, title: str, counter: int, apdu: bytes, received: float, source: str,
                           key_id: str = "") -> bool:
        """A push as a listener received it (the ciphered APDU), kept once per meter, key and
        counter (a meter starts its counter again under a new key)."""
        return await self.publish(f"{PUSH_SUBJECT}.{title}", apdu, f"{title}:{key_id}:{counter}",
                                  headers={RECEIVED_HEADER: f"{received:.6f}", SOURCE_HEADER: source[:200]})

    async def consumer(self, lane: str, durable: str, *, ack_wait: float, max_deliver: int,
                       max_ack_pending: int) -> None:
        """A job lane's shared durable pull consumer, created if missing. One made earlier with
        another ack wait or delivery limit is brought to these (the workers' heartbeats follow
        the ack wait), or BrokerUnavailable says why it cannot be."""
        config = api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait,
                                    max_deliver=max_deliver, filter_subject=LANES[lane],
                                    max_ack_pending=max_ack_pending, max_waiting=512)
        try:
            found = (await self.js.consumer_info(JOBS_STREAM, durable)).config
        except NotFoundError:
            found = None
        if (found is None or abs((found.ack_wait or 0) - ack_wait) > 0.001 or (found.max_deliver or -1) != max_deliver
                or found.max_ack_pending != max_ack_pending):
            try:
                await self.js.add_consumer(JOBS_STREAM, config)  # creates it, or updates the durable consumer
            except APIError as exc:
                if found is None:
                    raise BrokerUnavailable(f"NATS would not create the job consumer {durable}: {exc}") from None
                raise BrokerUnavailable(f"the job consumer {durable} has ack wait {found.ack_wait:g} s, max deliver "
                                        f"{found.max_deliver} and max ack pending {found.max_ack_pending}, and NATS "
                                        f"would not change them: {exc}") from None

    async def feed(self, lane: str, durable: str, capacity: int, take: Callable[[Any], None], *,
                   expires: float = 1.0, on_problem: Callable[[str], None] | None = None) -> "PullFeed":
        """A started PullFeed of the lane's consumer (made with `consumer`)."""
        feed = PullFeed(self.nc, JOBS_STREAM, durable, capacity, take, expires=expires, on_problem=on_problem)
        await feed.start()
        return feed

    async def stream_state(self, name: str) -> dict[str, Any]:
        info = await self.js.stream_info(name)
        return {"messages": info.state.messages, "bytes": info.state.bytes}


class PullFeed:
    """The messages of a durable pull consumer, handed to `take(msg)` as they arrive, never
    more at a time than `capacity`: a message taken counts until `done()` is called for it.

    It asks JetStream with pull requests of its own, one at a time, each for as many messages
    as are free and waiting up to `expires` s, and receives them in a subscription callback;
    nats-py's fetch waits for every message with a task, a timer and an id of their own, which
    cost a worker of short sessions more than the rest of taking a job. A request is over
    when all it asked for arrived, when JetStream ends it (404 no messages, 408 expired, 409 a
    refusal: these come on the request's own reply subject), or a second after it would have
    expired (no answer: a connection lost meanwhile). Messages come on their stream subject,
    so each counts against the request out; one that finds nothing free (the answer to a
    request given up, arriving late) or arrives after `stop()` is handed back at once for
    another worker."""

    GRACE = 1.0  # s after a request's expiry before it is given up for lost
    REFUSED_PAUSE = 1.0  # s without requests after JetStream refused one (409), or one could not be sent

    def __init__(self, nc, stream: str, consumer: str, capacity: int, take: Callable[[Any], None], *,
                 expires: float = 1.0, on_problem: Callable[[str], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("a feed takes at least one message at a time")
        self.nc = nc
        self.capacity = capacity
        self.take = take
        self.expires = expires
        self.say = on_problem or (lambda message: None)
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._reply: str | None = None  # the reply subject of the request out
        self._asked = 0  # messages it asked for that have not arrived
        self._given_up_at = 0.0
        self._taken = 0  # messages taken and not yet done
        self._serial = 0
        self._paused_until = 0.0
        self._held = False  # hold(): no requests until resume()
        self._stopped = False
        self._asking: asyncio.Handle | None = None
        self._sub = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._arrived)
        self._spawn(self._watch())
        self._want()

    def done(self) -> None:
        """A message taken is finished with (answered, or handed back)."""
        self._taken -= 1
        self._want()

    def hold(self) -> None:
        """Ask for no more messages until resume() (those asked for still arrive)."""
        self._held = True

    def resume(self) -> None:
        self._held = False
        self._want()

    def stop(self) -> None:
        """No more requests; messages still arriving are handed back."""
        self._stopped = True
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        self.stop()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except NatsError:
                pass

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _want(self) -> None:
        """Ask for what is free at the end of this turn of the loop, so that the messages done
        in it are asked for together."""
        if self._asking is None and self._reply is None and not self._stopped:
            self._asking = asyncio.get_running_loop().call_soon(self._ask)

    def _ask(self) -> None:
        self._asking = None
        loop = asyncio.get_running_loop()
        free = self.capacity - self._taken
        if free <= 0 or self._reply is not None or self._held or self._stopped or loop.time() < self._paused_until:
            return
        self._serial += 1
        self._reply = f"{self._inbox}.{self._serial}"
        self._asked = free
        self._given_up_at = loop.time() + self.expires + self.GRACE
        self._spawn(self._send(self._reply, json.dumps({"batch": free, "expires": int(self.expires * 1e9)}).encode()))

    async def _send(self, reply: str, request: bytes) -> None:
        try:
            await self.nc.publish(self._next_subject, request, reply=reply)
        except (NatsError, OSError) as exc:
            self.say(f"cannot ask NATS for jobs ({type(exc).__name__}: {exc}); retrying")
            self._end(reply, pause=True)

    def _end(self, reply: str, pause: bool = False) -> None:
        if reply != self._reply:
            return  # the answer of a request given up
        self._reply = None
        self._asked = 0
        if pause:
            self._paused_until = asyncio.get_running_loop().time() + self.REFUSED_PAUSE
        self._want()

    async def _arrived(self, msg) -> None:
        headers = msg.headers
        status = headers.get(api.Header.STATUS.value) if headers else None
        if status is not None:
            if status != "100":  # not an idle heartbeat: the request is over
                if status == "409":  # e.g. too many requests waiting, the consumer deleted
                    self.say(f"NATS refused a request for jobs: {headers.get(api.Header.DESCRIPTION.value, '')}")
                self._end(msg.subject, pause=status not in ("404", "408"))
            return
        if self._stopped or (self._reply is None and self._taken >= self.capacity):
            try:
                await msg.nak()
            except (NatsError, OSError):
                pass  # it comes back after the ack wait
            return
        self._taken += 1
        if self._reply is not None:
            self._asked -= 1
            if self._asked <= 0:
                self._reply = None
        self.take(msg)

    async def _watch(self) -> None:
        """Give up a request that never answered; ask again after a pause."""
        while True:
            await asyncio.sleep(min(self.GRACE, self.expires) / 2)
            if self._reply is not None and asyncio.get_running_loop().time() > self._given_up_at:
                self._end(self._reply)
            self._want()
