"""One read session with one meter of the fleet: associate once, read a bundle, release.

The bundle is the meter's clock, its registers (value and scaler_unit) and its load
profiles read incrementally from the store's high-water mark. A profile is read by range
(selector 1); a meter that refuses range is read by entry (selector 2) and one that refuses
both as a whole buffer, and what worked is returned as a capability so the next session
starts with it. Only rows after the mark are kept, so reads never overlap.

Event logs (IC 7 with a clock and an event code column, e.g. the standard event log
0-0:99.98.0.255) are read the same way, but over a window that overlaps what was read
before: from a day (`ReadPlan.event_overlap`) before the log's mark or the meter's time,
whichever is earlier. An event log is in the order the meter logged, not in time order: after
a clock set back (the "clock adjusted, new time" entry carries the earlier time) or a clock
that ran ahead and was corrected, new entries carry times before the mark. The store keeps an
event once by (meter, log, time, code), so the entries read again are not stored twice.

An event log is an extra: a problem with it never costs the session's readings. A log the
meter does not have (object-undefined), refuses to this client (e.g. read-write-denied) or
whose entries cannot be used (no event code column) is skipped, said once, and remembered as
the capability "events:<OBIS>" = "absent" / "denied" / "unusable" with "events:<OBIS>:since"
(the head-end's UTC time): it is asked again after `ReadPlan.event_log_retry` (a day), since
a configuration or firmware change may give access, and both are cleared (null) once it reads
again. An answer that may be temporary (object-unavailable, temporary-failure) skips the log
for this session only.

Invocation counters come from a block the store reserved (and committed) before the
session: `BlockCounters` hands them out and tops up through the caller when a block runs
low, so a crash anywhere leaves a gap and never a reuse.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.client import (
    AccessDenied, AssociationRefused, ClientError, ClientSecurity, ClientSecurityError, CounterStore,
)
from smartmeter.dlms.security.frame_counter import TxFrameCounter
from smartmeter.errors import DecodeError
from smartmeter.hes.client import MeterClient, parse_scaler_unit
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.fleet.resync import CounterBehindMeter, meter_counter
from smartmeter.hes.store.pg import Event, Reading, SessionGrant, SessionResult
from smartmeter.ratelog import RateLimitedLog

__all__ = ["BlockCounters", "ReadPlan", "SessionTimeout", "Timeouts", "read_session"]

log = logging.getLogger(__name__)
say = RateLimitedLog(log)  # one line per condition a minute, however many meters have it

CLOCK = "0-0:1.0.0.255"
# Blue Book attribute indexes of IC 7 used here
CAPTURE_PERIOD, ENTRIES_IN_USE = 4, 7
# selections a refusal of which means "this meter cannot select that way" (not a bad request)
SELECTION_REFUSALS = {DataAccessResult.READ_WRITE_DENIED, DataAccessResult.OBJECT_UNAVAILABLE,
                      DataAccessResult.OTHER_REASON, DataAccessResult.TYPE_UNMATCHED,
                      DataAccessResult.SCOPE_OF_ACCESS_VIOLATED, DataAccessResult.OBJECT_CLASS_INCONSISTENT}
SELECTIONS = ("range", "entry", "whole")
STANDARD_EVENT_LOG = "0-0:99.98.0.255"
# what a meter may answer for the moment only: the log is asked again next session
EVENT_LOG_FOR_NOW = {DataAccessResult.OBJECT_UNAVAILABLE, DataAccessResult.TEMPORARY_FAILURE}
# capability values of an event log that is skipped until event_log_retry has passed
EVENT_LOG_SKIPPED = ("absent", "denied", "unusable")
# entries of an event log read first by entry selection (doubled while the mark is not reached)
EVENT_ENTRIES_FIRST = 16


class SessionTimeout(ClientError):
    """A phase of the session (connect, association, request or the whole) took too long."""


class CounterBlockExhausted(ClientSecurityError):
    """The session used every counter of its reserved blocks."""


class UnusableEventLog(ClientError):
    """An event log whose capture objects give no clock or no event code column."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    association: float = 10.0
    request: float = 10.0
    total: float = 60.0


@dataclass(frozen=True)
class ReadPlan:
    registers: tuple[str, ...] = ("1-0:1.8.0.255", "1-0:2.8.0.255")
    profiles: tuple[str, ...] = ("1-0:99.1.0.255",)
    events: tuple[str, ...] = (STANDARD_EVENT_LOG,)  # event logs, read whole on their first read
    # an event log is read again from this long before its mark (or the meter's time, if
    # earlier): entries logged after a clock set back carry earlier times
    event_overlap: dt.timedelta = dt.timedelta(days=1)
    # a log found absent, denied or unusable is asked again after this long
    event_log_retry: dt.timedelta = dt.timedelta(days=1)
    # where a profile has no mark yet, rows from this long before the meter's time (None: all)
    first_read_span: dt.timedelta | None = None


class BlockCounters(CounterStore):
    """The client's counters within reserved blocks [first, last]; `refill` adds a block."""

    def __init__(self, block: tuple[int, int], server_last_seen: int | None) -> None:
        super().__init__(last_used=block[0] - 1 if block[0] > 0 else None, server_last_seen=server_last_seen)
        self.top = block[1]
        self.used = 0

    def remaining(self) -> int:
        last = self.last_used
        return self.top - (0 if last is None else last + 1) + 1

    def add_block(self, block: tuple[int, int]) -> None:
        last = self.last_used
        if last is not None and block[0] <= last:
            raise ClientSecurityError(f"a counter block {block} below a counter already used ({last})")
        self._tx = TxFrameCounter(block[0] - 1 if block[0] > 0 else None)
        self.top = block[1]

    def reserve(self) -> int:
        if self.remaining() <= 0:
            raise CounterBlockExhausted("the session used up its reserved invocation counters")
        counter = super().reserve()
        self.used += 1
        return counter


def _utc(value: bytes | Data) -> dt.datetime | None:
    raw = value.value if isinstance(value, Data) else value
    try:
        t = axdr.decode_date_time(raw).to_datetime()
    except (DecodeError, ValueError, TypeError):
        return None
    return t.astimezone(dt.timezone.utc) if t.tzinfo is not None else None


# The times a reading may have: a meter clock far off (a reset to 2000, a battery gone) would
# otherwise make the store create a partition for every month it names.
PLAUSIBLE_PAST = dt.timedelta(days=3660)
PLAUSIBLE_FUTURE = dt.timedelta(days=366)
INT64 = (-(1 << 63), (1 << 63) - 1)


def _plausible(t: dt.datetime) -> bool:
    now = dt.datetime.now(dt.timezone.utc)
    return now - PLAUSIBLE_PAST <= t <= now + PLAUSIBLE_FUTURE


def _stored(raw: int, obis: str) -> int:
    """`raw` if the store can hold it (a 64-bit integer), else ClientError."""
    if not INT64[0] <= raw <= INT64[1]:
        raise ClientError(f"{obis}: the value {raw} does not fit a 64-bit integer")
    return raw


def _integer(value) -> int | None:
    v = value.value if isinstance(value, Data) else value
    return v if type(v) is int else None


async def _within(what: str, seconds: float, awaitable):
    # asyncio.timeout, not wait_for: no task of its own for every session
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise SessionTimeout(f"{what} took longer than {seconds:g} s") from None


def meter_client(grant: SessionGrant, keys: dict[str, bytes], counters: CounterStore, client_system_title: bytes,
                 timeouts: Timeouts, link_factory=None) -> MeterClient:
    """A client of the grant's meter under `keys`, its counters from `counters`, its link from
    `link_factory(grant, connect time-out)` (default: the wrapper over TCP to the grant's address)."""
    security = ClientSecurity(mechanism=grant.mechanism, suite=grant.suite, policy=grant.policy,
                              client_system_title=client_system_title, server_system_title=grant.system_title,
                              ek=keys.get("ek"), ak=keys.get("ak"), hls_secret=keys.get("hls_secret"),
                              invocation_counter=counters)
    if link_factory is not None:
        link = link_factory(grant, timeouts.connect)
    else:
        link = WrapperLink(grant.host, grant.port, client_sap=grant.client_sap, server_sap=grant.server_sap,
                           timeout=timeouts.connect)
    return MeterClient(link, mechanism=grant.mechanism, security=security)


async def read_session(grant: SessionGrant, plan: ReadPlan, timeouts: Timeouts, client_system_title: bytes,
                       refill: Callable[[int], Awaitable[tuple[int, int]]], *,
                       link_factory: Callable[[SessionGrant, float], object] | None = None) -> SessionResult:
    """Read `plan` from the meter of `grant` in one association; the whole within timeouts.total."""
    return await _within("the session", timeouts.total,
                         _session(grant, plan, timeouts, client_system_title, refill, link_factory))


async def _session(grant, plan, timeouts, client_system_title, refill, link_factory) -> SessionResult:
    counters = BlockCounters(grant.counter_block, grant.rx_last)

    async def ensure(n: int) -> None:
        # before each request: a request takes one counter; a long profile read may need more
        # blocks than the one reserved with the claim
        if counters.remaining() < n:
            counters.add_block(await refill(max(n, grant.counter_block[1] - grant.counter_block[0] + 1)))

    client = meter_client(grant, grant.keys, counters, client_system_title, timeouts, link_factory)
    client.before_request = lambda: ensure(1)
    try:
        await _within("the association", timeouts.association, client.connect())
    except AssociationRefused as exc:
        await _refused_counter(exc, grant, counters.last_used, client_system_title, timeouts, link_factory)
        raise
    client.link.timeout = timeouts.request
    try:
        reader = _BundleReader(client, grant, plan)
        result = await reader.read()
    finally:
        await client.close()
    result.rx_last = counters.server_last_seen
    result.tx_used = counters.last_used
    return result


async def _refused_counter(refusal: AssociationRefused, grant: SessionGrant, sent: int | None,
                           client_system_title: bytes, timeouts: Timeouts, link_factory=None) -> None:
    """A meter refuses a ciphered AARQ under a counter it has seen as it refuses one under
    other keys: CounterBehindMeter when its frame counter object, verified with our AK, holds
    our AARQ's counter `sent` or a higher one; else the refusal stands as it is."""
    if refusal.result == 2 or sent is None or grant.keys.get("ak") is None:
        return  # busy for the moment, or no counter of ours was sent
    try:
        counter = await meter_counter(grant, client_system_title, timeouts.connect + timeouts.request,
                                      link_factory=link_factory)
    except ClientError:
        return  # unreadable or not verifiable under our keys: not a counter of ours it knows
    if counter >= sent:
        raise CounterBehindMeter(f"the meter refused the association under our invocation counter {sent}; its "
                                 f"frame counter object (verified) holds {counter}", counter) from refusal


@dataclass
class _BundleReader:
    client: MeterClient
    grant: SessionGrant
    plan: ReadPlan
    readings: list[Reading] = field(default_factory=list)
    scalers: dict = field(default_factory=dict)
    marks: dict = field(default_factory=dict)
    capabilities: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    async def read(self) -> SessionResult:
        now = _utc(await self.client.get(CLOCK, 2, class_id=8))
        if now is None:
            raise ClientError("the meter's clock is not a date-time with a deviation")
        if not _plausible(now):
            raise ClientError(f"the meter's clock says {now.isoformat()}, years from the head-end's time: its "
                              "readings are not stored (set its clock)")
        for obis in self.plan.registers:
            await self._register(obis, now)
        for obis in self.plan.profiles:
            await self._profile(obis, now)
        for obis in self.plan.events:
            await self._event_log(obis, now)
        return SessionResult(self.readings, self.scalers, self.marks, rx_last=None, tx_used=None,
                             capabilities=self.capabilities or None, events=self.events)

    async def _register(self, obis: str, now: dt.datetime) -> None:
        value = _integer(await self.client.get(obis, 2, class_id=3))
        if value is None:
            raise ClientError(f"{obis} is not an integer register")
        scaler_unit = parse_scaler_unit(await self.client.get(obis, 3, class_id=3))
        if scaler_unit is None:
            raise ClientError(f"{obis}: its scaler_unit is not a scaler_unit structure")
        self.scalers[("", obis, 2)] = scaler_unit
        self.readings.append(Reading("", obis, 2, now, _stored(value, obis)))

    async def _profile(self, obis: str, now: dt.datetime) -> None:
        columns = await self.client.get(obis, 3, class_id=7)
        layout = _layout(columns)
        mark = self.grant.marks.get(obis)
        if mark is None and self.plan.first_read_span is not None:
            mark = now - self.plan.first_read_span
        rows = await self._select(obis, mark, now, layout.clock)
        newest = mark
        unusable = 0
        for row in rows:
            t = _utc(row[layout.clock])
            if t is None or not _plausible(t):
                unusable += 1  # no deviation, unspecified fields, or a clock years off: no place in time
                continue
            if mark is not None and t <= mark:
                continue
            quality = _integer(row[layout.status]) if layout.status is not None else 0
            for index, (value_obis, attribute) in layout.values:
                raw = _integer(row[index])
                if raw is not None:
                    self.readings.append(Reading(obis, value_obis, attribute, t, _stored(raw, obis),
                                                 (quality or 0) & 0xFF))
            newest = t if newest is None or t > newest else newest
        if unusable:
            say("session.unusable_rows", "meter %s: %d row(s) of %s without a usable capture time were not stored",
                self.grant.serial, unusable, obis)
        if newest is not None and newest != mark:
            self.marks[obis] = newest
        for index, (value_obis, attribute) in layout.values:
            if ("" , value_obis, attribute) in self.scalers:
                self.scalers[(obis, value_obis, attribute)] = self.scalers[("", value_obis, attribute)]

    async def _event_log(self, obis: str, now: dt.datetime) -> None:
        """Read event log `obis` into self.events; a problem with the log skips it (see the
        module docstring) and never the session."""
        key, since_key = f"events:{obis}", f"events:{obis}:since"
        state = self.grant.capabilities.get(key)
        if state in EVENT_LOG_SKIPPED:
            since = _iso_utc(self.grant.capabilities.get(since_key))
            if since is not None and dt.datetime.now(dt.timezone.utc) - since < self.plan.event_log_retry:
                return
        try:
            events, mark = await self._read_event_log(obis, now)
        except AccessDenied as exc:
            if exc.result in EVENT_LOG_FOR_NOW:
                say("session.event_log_for_now", "meter %s: event log %s not read this session (%s)",
                    self.grant.serial, obis, exc)
                return
            self._skip_event_log(obis, "absent" if exc.result == DataAccessResult.OBJECT_UNDEFINED else "denied", exc)
            return
        except (UnusableEventLog, DecodeError) as exc:
            self._skip_event_log(obis, "unusable", exc)
            return
        self.events.extend(events)
        if mark is not None:
            self.marks[obis] = mark
        if state is not None:  # readable again: the skip is forgotten
            self.capabilities[key] = self.capabilities[since_key] = None

    def _skip_event_log(self, obis: str, state: str, reason: Exception) -> None:
        say(f"session.event_log_{state}", "meter %s: event log %s %s (%s); the session's other readings are "
            "stored, the log is asked again in %s", self.grant.serial, obis,
            {"absent": "is not there", "denied": "is refused", "unusable": "cannot be used"}[state], reason,
            self.plan.event_log_retry)
        self.capabilities[f"events:{obis}"] = state
        self.capabilities[f"events:{obis}:since"] = dt.datetime.now(dt.timezone.utc).isoformat()

    async def _read_event_log(self, obis: str, now: dt.datetime) -> tuple[list[Event], dt.datetime | None]:
        """(the entries of event log `obis` from the overlap window on, its new mark or None)."""
        columns = await self.client.get(obis, 3, class_id=7)
        clock, code = _event_layout(columns)
        mark = self.grant.marks.get(obis)
        since = min(mark, now) - self.plan.event_overlap if mark is not None else None
        rows = await self._select(obis, since, now, clock, from_mark=True)
        events = []
        newest = mark
        unusable = 0
        for row in rows:
            t, value = (_utc(row[clock]), _integer(row[code])) if len(row) > max(clock, code) else (None, None)
            if t is None or not _plausible(t) or value is None or not 0 <= value <= 0x7FFFFFFF:
                unusable += 1
                continue
            if since is not None and t < since:
                continue  # read before (an entry selection or the whole buffer reaches further back)
            events.append(Event(obis, t, value))
            newest = t if newest is None or t > newest else newest
        if unusable:
            say("session.unusable_events", "meter %s: %d entry(ies) of %s without a usable time or code were "
                "not stored", self.grant.serial, unusable, obis)
        return events, newest if newest is not None and newest != mark else None

    async def _select(self, obis: str, mark: dt.datetime | None, now: dt.datetime, clock: int, *,
                      from_mark: bool = False) -> list[tuple]:
        """The rows of profile `obis` from its mark on (after it; with `from_mark`, an event
        log's, at it too and with no upper bound), by the first selection the meter serves,
        starting with the one it served last."""
        key = f"selection:{obis}"
        start = self.grant.capabilities.get(key, "range")
        order = SELECTIONS[SELECTIONS.index(start):] if start in SELECTIONS else SELECTIONS
        for how in order:
            try:
                if how == "range":
                    rows = await self._by_range(obis, mark, now, from_mark)
                elif how == "entry":
                    rows = await self._by_entry(obis, mark, now, clock, from_mark)
                else:
                    rows = await self._by_whole(obis)
            except AccessDenied as exc:
                if exc.result in SELECTION_REFUSALS and how != "whole":
                    continue
                raise
            if rows is None:
                return []  # nothing was selected (an empty buffer): nothing learnt about selecting
            if how != start:
                self.capabilities[key] = how
            return rows
        return []

    async def _by_range(self, obis: str, mark: dt.datetime | None, now: dt.datetime, from_mark: bool) -> list[tuple]:
        start = mark + dt.timedelta(seconds=0 if from_mark else 1) if mark is not None else None
        # an event log has no upper bound: entries logged before a clock set back carry times
        # after the meter's time now
        _, rows = await self.client.profile(obis, from_time=start or dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
                                            to_time=None if from_mark else now, rows=True)
        return rows

    async def _by_entry(self, obis: str, mark: dt.datetime | None, now: dt.datetime, clock: int,
                        from_mark: bool) -> list[tuple] | None:
        in_use = _integer(await self.client.get(obis, ENTRIES_IN_USE, class_id=7)) or 0
        if in_use == 0:
            return None
        if mark is None:
            _, rows = await self.client.profile(obis, entries=(1, in_use), rows=True)
            return rows
        if from_mark:  # an event log: no period to estimate from
            wanted = min(in_use, EVENT_ENTRIES_FIRST)
        else:
            period = _integer(await self.client.get(obis, CAPTURE_PERIOD, class_id=7)) or 900
            wanted = min(in_use, math.ceil((now - mark).total_seconds() / period) + 1)
        while True:
            _, rows = await self.client.profile(obis, entries=(in_use - wanted + 1, in_use), rows=True)
            # the oldest row read must be at or before the mark, else rows may lie in between
            # (a clock set back, a power failure): read further back
            oldest = _utc(rows[0][clock]) if rows and len(rows[0]) > clock else None
            if wanted >= in_use or (oldest is not None and oldest <= mark):
                return rows
            wanted = min(in_use, wanted * 2)

    async def _by_whole(self, obis: str) -> list[tuple]:
        _, rows = await self.client.profile(obis, rows=True)
        return rows


def _iso_utc(value) -> dt.datetime | None:
    """An ISO 8601 time with a zone (a capability's "since"), else None."""
    try:
        t = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else None


def _capture_columns(columns: Data) -> list[tuple[int, str, int]]:
    """(class id, OBIS, attribute) of each capture object of a profile; ValueError if the
    capture_objects are not the Blue Book's array of structures."""
    try:
        return [(class_id, str(Obis.from_bytes(ln)), attribute)
                for class_id, ln, attribute, _ in ((f.value for f in column.value) for column in columns.value)]
    except (TypeError, ValueError, AttributeError):
        raise ValueError("unexpected shape") from None


def _event_layout(columns: Data) -> tuple[int, int]:
    """(clock column, event code column) of an event log: the code is the event object's value
    (IC 1, 0-0:96.11.x.255, attribute 2)."""
    clock = code = None
    try:
        captured = _capture_columns(columns)
    except ValueError:
        raise UnusableEventLog("the event log's capture_objects have an unexpected shape") from None
    for index, (class_id, obis, attribute) in enumerate(captured):
        if class_id == 8 and attribute == 2 and clock is None:
            clock = index
        elif class_id == 1 and attribute == 2 and obis.startswith("0-0:96.11.") and code is None:
            code = index
    if clock is None or code is None:
        raise UnusableEventLog("the event log captures no clock or no event code column (0-0:96.11.x.255)")
    return clock, code


@dataclass(frozen=True)
class _Layout:
    clock: int
    status: int | None
    values: tuple[tuple[int, tuple[str, int]], ...]  # column index → (OBIS, attribute)


def _layout(columns: Data) -> _Layout:
    """Which profile column is the clock, which the status and which carry values."""
    clock = status = None
    values = []
    try:
        captured = _capture_columns(columns)
    except ValueError:
        raise ClientError("the profile's capture_objects have an unexpected shape") from None
    for index, (class_id, obis, attribute) in enumerate(captured):
        if class_id == 8 and attribute == 2 and clock is None:
            clock = index
        elif class_id == 1 and obis.startswith("0-0:96.10.") and status is None:
            status = index
        elif class_id in (1, 3, 4):
            values.append((index, (obis, attribute)))
    if clock is None:
        raise ClientError("the profile captures no clock column")
    return _Layout(clock, status, tuple(values))

