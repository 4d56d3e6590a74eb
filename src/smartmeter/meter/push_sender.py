"""Delivers the meter's pushes (IC 40 v0 push setup, companion standard §10.6/§10.7) on the event loop.

The push setup objects build the protected data-notification and hand its APDUs (or its
general-block-transfer blocks) to `PushSender.submit` with the setup's send_destination_and_method,
number_of_retries, randomisation_start_interval, repetition_delay and communication_window.
From there each push runs on its own as IDIS package 2 and the Blue Book describe it:

1. it waits for the first communication window open at or after the trigger (an empty window
   list means always open; see `window_spans` for windows with wildcards); a push whose next
   window starts more than `max_window_wait` seconds ahead is dropped;
2. it waits a random 0..randomisation_start_interval seconds;
3. it makes 1 + number_of_retries attempts, repetition_delay seconds apart. An attempt that
   falls outside every window is skipped, and counts (§10.7: "retries in the case of
   unsuccessful or skipped push attempts"). Over TCP the first acknowledged attempt ends the
   push; over UDP nothing is ever confirmed, so every attempt is sent.

What a destination can cost is bounded: at most `max_pending` pushes (and `max_pending_bytes`
of messages) are on their way at a time, beyond that `submit` refuses; a TCP connection is given
up after `connect_timeout` seconds, and at most `max_connections` are open at a time. Nothing here
blocks: metering, the DLMS servers and other pushes carry on while a destination does not answer.

Pushes that wait for their communication window are held apart, so that they never fill the
queue of the pushes that go out now (an alarm push has no window): a push found outside its
window leaves the queue for the window pushes, where it stays until it ends. There, at most
`max_waiting_per_window` pushes of one group (the same destination, transport and
communication_window: in practice one push setup) are held, and at most `max_waiting` pushes and
`max_waiting_bytes` of messages in all; a push beyond one of these bounds drops the oldest push of
its group, or of all held pushes for the overall bounds (logged once a minute): the newest values
are the ones worth sending when the window opens.

Time: `now()` is the meter clock (UTC seconds; the windows are in it) and `sleep(s)` waits s
seconds of it, so a meter on a fast clock passes a sleep that runs as fast. Connection timeouts
are network time, the event loop's.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable
from zoneinfo import ZoneInfo

from smartmeter.cosem import axdr
from smartmeter.errors import EncodeError
from smartmeter.meter.clock import DEFAULT_TIME_ZONE
from smartmeter.meter.schedule import ExecutionTime, instants
from smartmeter.ratelog import RateLimitedLog
from smartmeter.transport.wrapper_send import (
    DeliveryFailed,
    Destination,
    parse_destination,
    send_tcp,
    send_udp,
    wrapper_messages,
)

log = logging.getLogger(__name__)

# IC 40 send_destination_and_method transport_service (Blue Book 4.4.8): 0 TCP, 1 UDP;
# 201 is the companion standard's manufacturer-specific wired M-Bus of the consumer push (§10.5).
TCP = 0
UDP = 1
WIRED_MBUS = 201

# Wrapper ports (Green Book 7.3.3.2: a wPort is the SAP): the pushes come from the meter's one
# logical device, the management LD (server SAP 1), and go to the Data Readout client (SAP 2)
# in whose context they run (catalog §7).
SOURCE_WPORT = 1
DATA_READOUT_WPORT = 2

CONNECT_TIMEOUT = 10.0  # s of network time for a TCP connection, and again for its acknowledgement
MAX_CONNECTIONS = 4  # TCP pushes connecting or writing at a time
MAX_PENDING_BYTES = 4 * 1024 * 1024  # messages of all pushes on their way together
MAX_WAITING_PER_WINDOW = 96  # pushes of one group held for their window: a day of quarter-hourly pushes
MAX_WAITING = 256  # pushes held for their windows in all
MAX_WAITING_BYTES = 4 * 1024 * 1024  # messages of all pushes held for their windows together
MAX_WINDOW_WAIT = 7 * 86400.0  # a weekly window is the longest IDIS configures
WINDOW_RECHECK = 300.0  # s of meter time between looks at the clock while waiting for a window
MAX_WINDOW_SPANS = 64  # spans `window_spans` gives per window pair: a week of daily windows, days of hourly ones

# IC 40 v0 attribute ranges: number_of_retries unsigned, randomisation and repetition long-unsigned
_LIMITS = (("retries", 255), ("randomisation", 65535), ("repetition_delay", 65535))


class _Refused(Exception):
    def __init__(self, condition: str, message: str, *args) -> None:
        super().__init__(message % args)
        self.condition, self.message, self.args_ = condition, message, args


@dataclass(frozen=True, slots=True)
class _Push:
    messages: tuple[bytes, ...]
    transport_service: int
    destination: Destination
    retries: int
    randomisation: int
    repetition_delay: int
    window: tuple[tuple[float, float] | tuple[ExecutionTime, ExecutionTime], ...]  # (): always open

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.messages)

    @property
    def window_group(self) -> tuple:
        """The pushes that wait for the same window to the same destination (one setup, in practice)."""
        return self.transport_service, self.destination, self.window


@dataclass(eq=False, slots=True)
class _Job:
    """An accepted push until it ends: its task, and whether it counts among the pushes held for
    their window (else in the queue `submit` admits to; neither once dropped from the held ones)."""
    push: _Push
    task: asyncio.Task | None = None
    held: bool = False
    counted: bool = True


def window_open(spans: tuple[tuple[float, float], ...] | None, t: float) -> bool:
    """Whether `t` lies in one of the windows [start, end); None (no window configured): always."""
    return spans is None or any(start <= t < end for start, end in spans)


def next_window_start(spans: tuple[tuple[float, float], ...], t: float) -> float | None:
    return min((start for start, _ in spans if start > t), default=None)


def _fixed_instant(pattern: ExecutionTime, zone: ZoneInfo) -> float | None:
    """The one instant of a pattern without wildcards (weekday aside); None for a pattern with them."""
    fields = (pattern.year, pattern.month, pattern.day, pattern.hour, pattern.minute, pattern.second)
    if None in fields:
        return None
    try:
        return dt.datetime(*fields, tzinfo=zone).timestamp()
    except ValueError:  # February 30th: never
        return None


def window_spans(windows: Iterable[tuple[ExecutionTime, ExecutionTime]], zone: ZoneInfo, now: float,
                 horizon: float = MAX_WINDOW_WAIT) -> tuple[tuple[float, float], ...]:
    """An IC 40 communication_window as (start, end) instants around `now`.

    Each {start, end} pair is a local date-time pattern with wildcards, read as IC 22 execution
    times are (deviation and status ignored: the meter's local time); a wildcard second counts
    as second 0, so windows open and close on whole minutes at most. A fully specified start is
    its one instant; a start with wildcards recurs: from its last occurrence at or before `now`
    (within `horizon`) on, up to `horizon` ahead. A window closes at the first occurrence of its
    end pattern after its start (none within `horizon`: no window); a start inside an open window
    opens nothing more. Only windows not closed at `now` are returned, sorted, at most
    MAX_WINDOW_SPANS per pair.
    """
    spans: list[tuple[float, float]] = []
    for start_pattern, end_pattern in windows:
        start_pattern, end_pattern = _to_the_minute(start_pattern), _to_the_minute(end_pattern)
        fixed_start = _fixed_instant(start_pattern, zone)
        fixed_end = _fixed_instant(end_pattern, zone)
        if fixed_start is not None:
            start = fixed_start
        else:
            start = _latest_at_or_before(start_pattern, zone, now, horizon)
            if start is None:
                start = _first_after(start_pattern, zone, now, horizon)
        found = 0
        while start is not None and start <= now + horizon and found < MAX_WINDOW_SPANS:
            if fixed_end is not None:
                end = fixed_end if fixed_end > start else None
            else:
                end = _first_after(end_pattern, zone, start, horizon)
            if end is None:
                break
            if end > now:
                spans.append((start, end))
                found += 1
            if fixed_start is not None:
                break
            start = _first_after(start_pattern, zone, end - 1, horizon)  # instants are whole seconds: >= end
    return tuple(sorted(spans))


def window_pattern(raw: bytes) -> ExecutionTime:
    """One end of an IC 40 communication_window entry (date-time, 12 bytes) as a pattern;
    ValueError (DecodeError) for what is no date-time or uses the DST and last-day values."""
    when = axdr.decode_date_time(raw)
    date, time_ = when.date, when.time
    if date.month in (0xFD, 0xFE) or date.day in (0xFD, 0xFE):
        raise ValueError("a communication window with DST or last-day date values is not supported")
    return ExecutionTime(time_.hour, time_.minute, time_.second, date.year, date.month, date.day, date.weekday)


def _to_the_minute(pattern: ExecutionTime) -> ExecutionTime:
    return dataclasses.replace(pattern, second=0) if pattern.second is None else pattern


_SEARCH_SPANS = (60.0, 3600.0, 86400.0)  # s: how far to look first, so wildcard minutes or seconds stay cheap


def _latest_at_or_before(pattern: ExecutionTime, zone: ZoneInfo, now: float, horizon: float) -> float | None:
    """The last occurrence of `pattern` in (now - horizon, now]."""
    for back in (*(b for b in _SEARCH_SPANS if b < horizon), horizon):
        latest = None
        for latest in instants((pattern,), zone, now - back, now):
            pass
        if latest is not None:
            return latest
    return None


def _first_after(pattern: ExecutionTime, zone: ZoneInfo, t: float, horizon: float) -> float | None:
    """The first occurrence of `pattern` in (t, t + horizon]."""
    for ahead in (*(a for a in _SEARCH_SPANS if a < horizon), horizon):
        first = next(instants((pattern,), zone, t, t + ahead), None)
        if first is not None:
            return first
    return None


class PushSender:
    """Runs every submitted push to its end on one asyncio loop; `submit` is safe from any thread.

    stats(): submitted and refused (by `submit`); attempts made and skipped (outside the
    window); how each accepted push ended: sent (its messages went out: TCP acknowledged or
    UDP sent at least once), of those succeeded (confirmed: TCP only), failed (every attempt
    failed or was skipped), dropped (no window within the bound, pushed out of the ones held for
    a window, or the sender closed); pending (not ended yet). submitted = sent + failed +
    dropped + pending.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, max_pending: int = 64, say=None,
                 rng: random.Random | None = None, now: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 connect_timeout: float = CONNECT_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 max_pending_bytes: int = MAX_PENDING_BYTES, max_window_wait: float = MAX_WINDOW_WAIT,
                 max_waiting_per_window: int = MAX_WAITING_PER_WINDOW, max_waiting: int = MAX_WAITING,
                 max_waiting_bytes: int = MAX_WAITING_BYTES, zone: ZoneInfo | str = DEFAULT_TIME_ZONE) -> None:
        self.zone = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)  # of the window patterns
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_window_wait = max_window_wait
        self.max_waiting_per_window = max_waiting_per_window
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.say = say if say is not None else RateLimitedLog(log)
        self.rng = rng if rng is not None else random.SystemRandom()
        self.now = now if now is not None else time.time
        self.sleep = sleep
        self._bound_explicitly = loop is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: asyncio.Semaphore | None = None
        if loop is not None:
            self._bind(loop)
        self._lock = threading.Lock()  # submit may come from another thread than the loop's
        self._queued = 0  # the pushes `submit` admitted that are not held for a window
        self._queued_bytes = 0
        self._held: dict[_Job, None] = {}  # the pushes held for their window, oldest first
        self._held_bytes = 0
        self._held_groups: Counter[tuple] = Counter()
        self._pending = 0  # not ended
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._stats: Counter[str] = Counter()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._connections = asyncio.Semaphore(self.max_connections)

    # -- entry ------------------------------------------------------------------------------

    def submit(self, frames: list[bytes], transport_service: int, destination: str, retries: int,
               randomisation: int, repetition_delay: int, window: tuple = (), source_wport: int = SOURCE_WPORT,
               destination_wport: int = DATA_READOUT_WPORT) -> bool:
        """Queue one push; never blocks. False when refused (logged once per condition and minute).

        `window`: the communication windows, each a (start, end) pair of meter-clock instants (UTC
        seconds), of local date-time patterns with wildcards (`ExecutionTime`, read as
        `window_spans` says, in the sender's `zone`) or of the IC 40 attribute's date-times as
        they are (octet-string(12), see `window_pattern`); () is always open.
        """
        try:
            push = self._check(frames, transport_service, destination, retries, randomisation, repetition_delay,
                               window, source_wport, destination_wport)
            with self._lock:
                loop, in_loop = self._target_loop()
                if self._queued >= self.max_pending:
                    raise _Refused("push.queue_full", "push to %s refused: %d pushes already on their way",
                                   push.destination, self._queued)
                if self._queued_bytes + push.size > self.max_pending_bytes:
                    raise _Refused("push.queue_full", "push to %s refused: the pushes on their way hold %d bytes",
                                   push.destination, self._queued_bytes)
                self._queued += 1
                self._queued_bytes += push.size
                self._pending += 1
                self._stats["submitted"] += 1
        except _Refused as refusal:
            self._count("refused")
            self.say(refusal.condition, refusal.message, *refusal.args_)
            return False
        job = _Job(push)
        if in_loop:
            self._start(job)
            return True
        try:
            loop.call_soon_threadsafe(self._start, job)
        except RuntimeError:  # the loop closed since `_target_loop` looked: nothing will start the push
            with self._lock:
                self._stats["submitted"] -= 1
            self._end(job, "refused")
            self.say("push.no_loop", "push refused: the event loop of the push sender has closed")
            return False
        return True

    def _check(self, frames, transport_service, destination, retries, randomisation, repetition_delay, window,
               source_wport, destination_wport) -> _Push:
        if self._closed:
            raise _Refused("push.closed", "push refused: the push sender is closed")
        if transport_service == WIRED_MBUS:  # the H1 port sends those (smartmeter.meter.consumer_port)
            raise _Refused("push.unsupported_transport", "push over wired M-Bus (transport_service 201) "
                           "is not sent by the LAN/WAN push sender: it goes to the H1 consumer port")
        if transport_service not in (TCP, UDP):
            raise _Refused("push.unsupported_transport", "push refused: transport_service %r is neither "
                           "0 (TCP) nor 1 (UDP)", transport_service)
        try:
            parsed = parse_destination(destination)
        except ValueError as exc:
            raise _Refused("push.bad_destination", "push refused: %s", exc) from None
        values = {"retries": retries, "randomisation": randomisation, "repetition_delay": repetition_delay}
        for name, high in _LIMITS:
            value = values[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
                raise _Refused("push.bad_parameters", "push refused: %s %r is outside 0..%d", name, value, high)
        if not frames:
            raise _Refused("push.bad_frames", "push refused: no APDU to send")
        try:
            messages = wrapper_messages(frames, source_wport, destination_wport)
        except (EncodeError, TypeError) as exc:
            raise _Refused("push.bad_frames", "push refused: %s", exc) from None
        return _Push(messages, transport_service, parsed, retries, randomisation, repetition_delay,
                     self._check_window(window))

    @staticmethod
    def _check_window(window) -> tuple:
        pairs = []
        try:
            for start, end in window:
                if isinstance(start, (bytes, bytearray)) and isinstance(end, (bytes, bytearray)):
                    start, end = window_pattern(start), window_pattern(end)
                if isinstance(start, ExecutionTime) and isinstance(end, ExecutionTime):
                    pairs.append((start, end))
                    continue
                start, end = float(start), float(end)
                if not start < end:
                    raise _Refused("push.bad_window", "push refused: a communication window ends before it starts")
                pairs.append((start, end))
        except (TypeError, ValueError) as exc:  # DecodeError is a ValueError
            raise _Refused("push.bad_window", "push refused: a communication window is not a (start, end) pair "
                           "of instants or of date-times: %s", exc) from None
        return tuple(pairs)

    def _spans(self, push: _Push, t: float) -> tuple[tuple[float, float], ...] | None:
        """The push's windows as instants around `t`; None when it has none (always open)."""
        if not push.window:
            return None
        patterns = [pair for pair in push.window if isinstance(pair[0], ExecutionTime)]
        instants_ = tuple(pair for pair in push.window if not isinstance(pair[0], ExecutionTime))
        return instants_ + window_spans(patterns, self.zone, t, self.max_window_wait) if patterns else instants_

    def _target_loop(self) -> tuple[asyncio.AbstractEventLoop, bool]:
        """The loop pushes run on, and whether the caller runs in it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and not self._bound_explicitly and running is not self._loop \
                and (self._loop is None or self._loop.is_closed()):
            self._bind(running)  # bound to the loop that first submits (again, once that one ended)
        if self._loop is None or self._loop.is_closed():
            raise _Refused("push.no_loop", "push refused: no event loop runs the push sender")
        return self._loop, running is self._loop

    def _start(self, job: _Job) -> None:
        if self._closed:
            self._end(job, "dropped")
            return
        job.task = self._loop.create_task(self._run(job), name=f"push to {job.push.destination}")
        self._tasks.add(job.task)
        # the end is counted here, not in `_run`: a task cancelled before its first step never runs it
        job.task.add_done_callback(lambda done: self._finished(job, done))

    def _finished(self, job: _Job, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._end(job, "dropped" if task.cancelled() else task.result())

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def _end(self, job: _Job, outcome: str) -> None:
        with self._lock:
            self._uncount(job)
            self._pending -= 1
            self._stats[outcome] += 1

    def _uncount(self, job: _Job) -> None:
        """The job no longer counts against the bounds (under the lock)."""
        if not job.counted:
            return
        job.counted = False
        size = job.push.size
        if job.held:
            del self._held[job]
            self._held_bytes -= size
            self._held_groups[job.push.window_group] -= 1
            if not self._held_groups[job.push.window_group]:
                del self._held_groups[job.push.window_group]
        else:
            self._queued -= 1
            self._queued_bytes -= size

    def _hold(self, job: _Job) -> bool:
        """Move a push that waits for its window from the queue to the held pushes, dropping the
        oldest of its group, then of all held pushes, beyond the bounds. False: it was itself the
        one dropped (its bytes alone exceed max_waiting_bytes, or a group bound of 0)."""
        group = job.push.window_group
        with self._lock:
            self._uncount(job)
            job.held = job.counted = True
            self._held[job] = None
            self._held_bytes += job.push.size
            self._held_groups[group] += 1
            dropped = []
            while self._held_groups[group] > self.max_waiting_per_window:
                dropped.append(("push.window_group_full", next(j for j in self._held if j.push.window_group == group)))
                self._uncount(dropped[-1][1])
            while len(self._held) > self.max_waiting or self._held_bytes > self.max_waiting_bytes:
                dropped.append(("push.window_held_full", next(iter(self._held))))
                self._uncount(dropped[-1][1])
        for condition, oldest in dropped:
            self.say(condition, "push to %s dropped for a newer one: at most %d pushes per destination and window, "
                     "%d pushes and %d bytes in all wait for their windows", oldest.push.destination,
                     self.max_waiting_per_window, self.max_waiting, self.max_waiting_bytes)
            if oldest is not job:
                oldest.task.cancel()
        return job.counted

    # -- one push ---------------------------------------------------------------------------

    async def _run(self, job: _Job) -> str:
        """The push from its trigger to its end: how it ended (cancelled by close(): dropped)."""
        push = job.push
        try:
            if not await self._window_reached(job):
                return "dropped"
            if push.randomisation:
                await self.sleep(self.rng.uniform(0, push.randomisation))
            return await self._attempts(push)
        except Exception:  # a fault here must not end the loop's other work, nor go unseen
            log.exception("push to %s abandoned", push.destination)
            return "failed"

    async def _window_reached(self, job: _Job) -> bool:
        """Whether the push's window opened; False: it is dropped (logged)."""
        while True:
            t = self.now()
            spans = self._spans(job.push, t)
            if window_open(spans, t):
                return True
            start = next_window_start(spans, t)
            if start is None or start - t > self.max_window_wait:
                self.say("push.no_window", "push to %s dropped: no communication window opens within %g s",
                         job.push.destination, self.max_window_wait)
                return False
            if not job.held and not self._hold(job):
                return False
            await self.sleep(min(start - t, WINDOW_RECHECK))  # the clock may be set meanwhile

    async def _attempts(self, push: _Push) -> str:
        sent = False
        made = skipped = 0
        for attempt in range(1 + push.retries):
            if attempt:
                await self.sleep(push.repetition_delay)
            t = self.now()
            if not window_open(self._spans(push, t), t):
                self._count("skipped")
                skipped += 1
                continue
            self._count("attempts")
            made += 1
            try:
                if push.transport_service == UDP:
                    await send_udp(push.destination, push.messages)
                    sent = True
                    continue  # never confirmed: every attempt goes out (§10.7)
                async with self._connections:
                    await send_tcp(push.destination, push.messages, self.connect_timeout)
            except DeliveryFailed as exc:
                self.say("push.attempt_failed", "push attempt failed: %s", exc, level=logging.INFO)
                continue
            self._count("succeeded")
            return "sent"
        if sent:
            return "sent"
        self.say("push.failed", "push to %s failed after %d attempt(s)%s", push.destination, made,
                 f", {skipped} skipped outside the window" if skipped else "")
        return "failed"

    # -- state ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Refuse new pushes and cancel the waiting and running ones (they count as dropped)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict:
        with self._lock:
            counts = {key: self._stats[key] for key in ("submitted", "refused", "attempts", "skipped", "sent",
                                                        "succeeded", "failed", "dropped")}
            counts["pending"] = self._pending
        return counts
