"""A switching program: an activity calendar (IC 20) and its special days table (IC 11) whose
switches RUN the script they name, at their instant: the disconnect control calendar
(companion §5.8, a timer switch or ripple control receiver replaced) and the load-management
relay calendar (§5.14).

Unlike the tariff (smartmeter.meter.tariff), which brings the meter to the state the calendar
says is in force, a program is edge-triggered: a switch is a command, run once when its
instant is crossed. So a remote command in between stands until the next opposite command,
from the calendar or remote (catalog §3.7): nothing re-asserts the calendar's state.

Sans-io like the scheduler (smartmeter.meter.scheduler), and with the same §5.4.1 rules: the
caller says how the meter clock got from one time to another (`advance(start, end, passage)`):

- RUNNING: every switch in (start, end] runs, once each, in time order, at its instant.
- POWER_RESTORED, or SHIFTED forward: only the latest switch crossed runs, once, at `end`
  (the command then in force; an older one would be overridden by it at once).
- SHIFTED backward: nothing runs.

Which switches exist: `tariff_calendar.switches` of the active calendar and the special days
(a special day replaces the week profile's day; skipped local times do not happen, repeated
ones happen once). A passive calendar due at its activation time A is activated at A: the old
calendar's switches up to A, the new one's after A. A calendar activated at meter time w
(method 1 or its activation time) runs no switch at or before w.

At most once across a kill: the mark (how far the program got, durably in the MeterStore) is
stored past a switch, with the switch as `pending`, before its script runs; `pending` is
cleared after. A kill in between does not run it again; the next `advance` reports it once as
an Execution with outcome "interrupted". Between runs the mark is stored lazily, as the
scheduler's is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable
from zoneinfo import ZoneInfo

from smartmeter.cosem.classes.base import CosemAccessError
from smartmeter.cosem.obis import Obis
from smartmeter.meter import tariff_calendar
from smartmeter.meter.schedule import Passage
from smartmeter.meter.scheduler import PERSIST_INTERVAL, Execution

log = logging.getLogger(__name__)

ACTIVITY_CALENDAR_CLASS = 20
SPECIAL_DAYS_CLASS = 11
_NEXT_HORIZON = 400 * 86400.0  # how far next_switch() looks ahead


@dataclass(slots=True)
class _Mark:
    revision: int  # of the active calendar (IC 20 counts its activations)
    up_to: float
    pending: list | None = None  # [instant, script_ln hex, selector] of a run that may not have completed
    stored_up_to: float | None = None  # what the store holds (None: nothing stored yet)

    def record(self) -> dict[str, Any]:
        return {"revision": self.revision, "up_to": self.up_to, "pending": self.pending}


class CalendarProgram:
    """One activity calendar object (`calendar()`, `passive_calendar()`, `activation_instant(zone)`,
    `activate_if_due(t, zone)`, `revision()`) and its special days table (`special_days()`, or
    None) whose switches run `run_script(script_ln, selector)`."""

    def __init__(self, name: str, calendar_ln: bytes, calendar, special_days, store, zone: ZoneInfo,
                 run_script: Callable[[bytes, int], None]) -> None:
        self.name = name
        self.ln = bytes(calendar_ln)
        self._calendar = calendar
        self._special_days = special_days
        self._store = store
        self._zone = zone
        self._run_script = run_script
        self._key = f"calendar_program.{Obis.from_bytes(self.ln)}"
        # the instant of the switch whose script runs right now (the meter time of its events)
        self.running_instant: float | None = None
        self._interrupted: list[Execution] = []
        record = store.get(self._key)
        self._mark: _Mark | None = None
        if record is not None:
            self._mark = _Mark(int(record["revision"]), float(record["up_to"]), record.get("pending"),
                               float(record["up_to"]))
            if self._mark.pending is not None:
                instant, script_hex, selector = self._mark.pending
                self._interrupted.append(Execution(self.ln, float(instant), bytes.fromhex(script_hex), int(selector),
                                                   "interrupted"))

    @classmethod
    def for_directory(cls, directory, calendar_obis: str, special_days_obis: str, store, zone: ZoneInfo,
                      run_script: Callable[[bytes, int], None]) -> "CalendarProgram | None":
        """The program of the calendar `calendar_obis` (None when the model has none)."""
        found = directory.find(ACTIVITY_CALENDAR_CLASS, Obis.parse(calendar_obis).to_bytes())
        if found is None:
            return None
        special = directory.find(SPECIAL_DAYS_CLASS, Obis.parse(special_days_obis).to_bytes())
        return cls(found[0].name, found[0].obis.to_bytes(), found[1], None if special is None else special[1], store,
                   zone, run_script)

    # -- which switches ----------------------------------------------------------------------------
    def _specials(self) -> tuple:
        return () if self._special_days is None else self._special_days.special_days()

    def _activation(self) -> float | None:
        return self._calendar.activation_instant(self._zone)

    def _switches(self, calendar: tariff_calendar.Calendar, start: float, end: float) -> list:
        if not calendar.seasons:  # an empty calendar (the default): nothing to enumerate
            return []
        return tariff_calendar.switches(calendar, self._specials(), self._zone, start, end)

    def _upcoming(self, start: float, end: float) -> list:
        """The switches in (start, end] as they will be: the active calendar's, and after a due
        activation the passive one's (without activating it)."""
        activation = self._activation()
        if activation is None or activation > end:
            return self._switches(self._calendar.calendar(), start, end)
        split = max(activation, start)
        return (self._switches(self._calendar.calendar(), start, split)
                + self._switches(self._calendar.passive_calendar(), split, end))

    def next_instant(self, start: float, end: float) -> float | None:
        """The first instant in (start, end] where the program acts (a switch, or the passive
        calendar's activation), so the caller can stop there and run it with the meter as it is."""
        activation = self._activation()
        first = next(iter(self._upcoming(start, end)), None)
        candidates = [t for t in (activation, None if first is None else first[0]) if t is not None and start < t <= end]
        return min(candidates) if candidates else None

    def next_switch(self, after: float) -> tuple[float, bytes, int] | None:
        """The next switch after `after` (within about a year): (instant, script_ln, selector)."""
        first = next(iter(self._upcoming(after, after + _NEXT_HORIZON)), None)
        return None if first is None else (first[0], bytes(first[1].script_ln), first[1].selector)

    # -- running them ------------------------------------------------------------------------------
    def _start_of(self, start: float) -> float:
        """Where processing continues: the mark of this calendar; after an activation not yet
        seen, its time (or `start` when it has none); `start` for a program never processed."""
        revision, activated_at = self._calendar.revision()
        mark = self._mark
        if mark is not None and mark.revision == revision:
            return mark.up_to
        if activated_at is not None:
            return max(activated_at, mark.up_to) if mark is not None else activated_at
        return start

    def _activate(self, at: float) -> None:
        try:
            if self._calendar.activate_if_due(at, self._zone):
                log.info("%s: passive calendar activated", self.name)
        except CosemAccessError as exc:  # inconsistent: the time is cleared, the active calendar stays
            log.warning("%s: passive calendar not activated: %s", self.name, exc)
        self._mark = _Mark(self._calendar.revision()[0], at, None, None)
        self._save()

    def resume_point(self) -> float | None:
        return None if self._mark is None else self._mark.stored_up_to

    def resume(self, now: float) -> list[Execution]:
        """After a start: the outage since the last stored mark (the latest switch crossed, once)."""
        last = self.resume_point()
        return self.advance(now if last is None else last, now, Passage.POWER_RESTORED)

    def advance(self, start: float, end: float, passage: Passage) -> list[Execution]:
        """The clock got from `start` to `end` by `passage`: run what is owed, in time order.
        A mark before `start` first catches up over (mark, start] as a running clock."""
        done, self._interrupted = self._interrupted, []
        if done:
            self._mark.pending = None
            self._save()
        frm = self._start_of(start)
        if self._mark is None or self._mark.revision != self._calendar.revision()[0]:
            self._mark = _Mark(self._calendar.revision()[0], frm)
        pieces = [(frm, start, Passage.RUNNING)] if frm < start else []
        pieces.append((max(frm, start), end, passage))
        latest = None  # the latest switch crossed by an outage or a forward shift
        for low, high, how in pieces:
            if how is Passage.SHIFTED and high < low:
                continue  # backward: nothing runs
            activation = self._activation()
            if activation is not None and activation <= high:
                at = max(activation, low)
                crossed = self._switches(self._calendar.calendar(), low, at)
                if how is Passage.RUNNING:
                    done += [self._run(t, action, t) for t, action in crossed]
                latest = crossed[-1] if crossed and how is not Passage.RUNNING else latest
                self._activate(at)
                low = at
            crossed = self._switches(self._calendar.calendar(), low, high)
            if how is Passage.RUNNING:
                done += [self._run(t, action, t) for t, action in crossed]
            elif crossed:
                latest = crossed[-1]
        if latest is not None:
            done.append(self._run(latest[0], latest[1], end))
        mark = self._mark
        if passage is not Passage.RUNNING or end >= mark.up_to:  # a running clock never moves the mark back
            mark.up_to = end
            if passage is not Passage.RUNNING or mark.stored_up_to is None or end < mark.stored_up_to \
                    or end - mark.stored_up_to >= PERSIST_INTERVAL:
                self._save()
        return done

    def _save(self) -> None:
        self._store.put(self._key, self._mark.record())
        self._mark.stored_up_to = self._mark.up_to

    def _run(self, instant: float, action: tariff_calendar.DayAction, at: float) -> Execution:
        """Run one switch at meter time `at`: the mark past it first, so a kill does not run it twice."""
        script_ln = bytes(action.script_ln)
        self._mark.up_to = max(self._mark.up_to, instant)
        self._mark.pending = [instant, script_ln.hex(), action.selector]
        self._save()
        outcome = "executed"
        if action.selector != 0:  # the null script
            self.running_instant = at
            try:
                self._run_script(script_ln, action.selector)
            except Exception:  # one failing script must not stop the switches after it
                log.exception("%s: script %s/%s failed", self.name, Obis.from_bytes(script_ln), action.selector)
                outcome = "failed"
            finally:
                self.running_instant = None
        self._mark.pending = None
        self._save()
        return Execution(self.ln, instant, script_ln, action.selector, outcome)
