"""The scheduler: runs the scripts of every IC 22 single action schedule when they are due.

Sans-io: the caller says how the meter clock got from one time to another (`advance(start,
end, passage)`) and the engine asks the §5.4.1 rule (`meter.schedule.due`) for each schedule,
runs what is owed through `run_script(script_ln, selector)` and keeps, per schedule, the meter
time up to which it has processed, durably in the MeterStore.

Exactly once across a power failure:

- An instant crossed during an outage runs once at `advance(last, now, Passage.POWER_RESTORED)`
  (or `resume(now)`), because the stored mark says how far the schedule got before.
- Each run is at most once: before a script runs, the mark is stored past its instant with the
  instant as `pending`; after it ran, `pending` is cleared. A kill between the two leaves a
  pending instant: it is not run again (running a billing reset or a disconnect twice is worse
  than reporting that one may not have completed), and the next `advance` reports it once as an
  Execution with outcome "interrupted" so the runtime can log an event.
- Between runs the mark is stored lazily (when it moves back, when the schedule changed, when
  the clock did not just run, and at least every PERSIST_INTERVAL seconds): instants between the
  stored and the real mark do not exist, since each one would have been stored when it ran.

A schedule's execution_time written at meter time w starts from w: an instant at or before the
write is never run; one after it is (IC 22 records w with the write, see ScheduleState).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from smartmeter.cosem.obis import Obis
from smartmeter.meter.schedule import ExecutionTime, Passage, due, instants

log = logging.getLogger(__name__)

SINGLE_ACTION_SCHEDULE_CLASS = 22
PERSIST_INTERVAL = 3600.0  # seconds a running clock may move the mark before it is stored anyway
_NEXT_HORIZON = 400 * 86400.0  # how far describe() looks for the next instant


@dataclass(frozen=True, slots=True)
class Execution:
    """One run owed by a schedule: its instant (UTC s) and what became of it."""

    schedule: bytes  # logical name of the IC 22 object
    instant: float
    script_ln: bytes
    selector: int
    outcome: str  # "executed", "failed" (run_script raised), "interrupted" (before a restart)


@dataclass(slots=True)
class _Mark:
    revision: int
    up_to: float
    pending: float | None = None
    stored_up_to: float | None = None  # what the store holds (None: nothing stored for this revision)

    def record(self) -> dict[str, Any]:
        return {"revision": self.revision, "up_to": self.up_to, "pending": self.pending}


class SchedulerEngine:
    """Every IC 22 schedule of a directory (objects exposing `state() -> ScheduleState`)."""

    def __init__(self, schedules: Iterable[tuple[bytes, str, Any]], store, zone: ZoneInfo,
                 run_script: Callable[[bytes, int], None]) -> None:
        self._schedules = [(bytes(ln), name, obj) for ln, name, obj in schedules]
        self._store = store
        self._zone = zone
        self._run_script = run_script
        self._marks: dict[bytes, _Mark] = {}
        self._interrupted: list[Execution] = []
        # the schedule whose script runs right now and the instant it runs for (who triggered it, when)
        self.running: bytes | None = None
        self.running_instant: float | None = None
        for ln, _name, obj in self._schedules:
            record = store.get(self._key(ln))
            if record is None:
                continue
            mark = _Mark(int(record["revision"]), float(record["up_to"]), record.get("pending"), float(record["up_to"]))
            self._marks[ln] = mark
            if mark.pending is not None:
                state = obj.state()
                self._interrupted.append(Execution(ln, float(mark.pending), state.script_ln, state.selector,
                                                   "interrupted"))

    @classmethod
    def for_directory(cls, directory, store, zone: ZoneInfo, run_script: Callable[[bytes, int], None]) -> "SchedulerEngine":
        return cls(((ln, o.name, inst) for ln, (o, inst) in directory.by_ln.items()
                    if o.class_id == SINGLE_ACTION_SCHEDULE_CLASS), store, zone, run_script)

    @staticmethod
    def _key(ln: bytes) -> str:
        return f"scheduler.{Obis.from_bytes(ln)}"

    def _save(self, ln: bytes, mark: _Mark) -> None:
        self._store.put(self._key(ln), mark.record())
        mark.stored_up_to = mark.up_to

    def _start_of(self, ln: bytes, state, start: float) -> float:
        """Where this schedule's processing continues: its mark, or its write time after a new
        execution_time, or `start` for a schedule never processed."""
        mark = self._marks.get(ln)
        if mark is not None and mark.revision == state.revision:
            return mark.up_to
        if state.written_at is not None:
            return state.written_at
        return mark.up_to if mark is not None else start

    def resume_point(self) -> float | None:
        """The latest stored mark: where processing stopped before a restart (None: never ran)."""
        stored = [m.stored_up_to for m in self._marks.values() if m.stored_up_to is not None]
        return max(stored) if stored else None

    def resume(self, now: float) -> list[Execution]:
        """After a start: the outage since the last stored mark, as §5.4.1 says (once if crossed)."""
        last = self.resume_point()
        return self.advance(now if last is None else last, now, Passage.POWER_RESTORED)

    def advance(self, start: float, end: float, passage: Passage) -> list[Execution]:
        """The clock got from `start` to `end` by `passage`: run what is owed, in time order.

        A schedule whose mark lies before `start` first catches up over (mark, start] as a
        running clock (the meter ran then; it just was not asked). A running clock never moves
        a mark back (only a shift or a restart does): an execution_time written a moment after
        the caller read the clock still starts at its write."""
        done, self._interrupted = self._interrupted, []
        for execution in done:
            mark = self._marks[execution.schedule]
            mark.pending = None
            self._save(execution.schedule, mark)
        owed = []
        for order, (ln, _name, obj) in enumerate(self._schedules):
            state = obj.state()
            frm = self._start_of(ln, state, start)
            if state.times:
                # each run with the meter time it happens at: its instant on a running clock; after
                # an outage or a shift, the time the meter got to (`end`)
                crossed = []
                if frm < start:
                    crossed = [(t, t) for t in due(state.times, self._zone, frm, start, Passage.RUNNING)]
                crossed += [(t, t if passage is Passage.RUNNING else end)
                            for t in due(state.times, self._zone, max(frm, start), end, passage)]
                owed += [(t, order, ln, state, at) for t, at in crossed]
            mark = self._marks.get(ln)
            if mark is None or mark.revision != state.revision:
                self._marks[ln] = _Mark(state.revision, frm)
        for instant, _order, ln, state, at in sorted(owed, key=lambda o: o[:2]):
            mark = self._marks[ln]
            mark.up_to, mark.pending = instant, instant
            self._save(ln, mark)  # first: from here on a kill does not run it again
            done.append(Execution(ln, instant, state.script_ln, state.selector, self._run(ln, state, at)))
            mark.pending = None
            self._save(ln, mark)
        for ln, _name, _obj in self._schedules:
            mark = self._marks[ln]
            if passage is Passage.RUNNING and end < mark.up_to:
                continue
            mark.up_to = end
            if passage is not Passage.RUNNING or mark.stored_up_to is None or end < mark.stored_up_to \
                    or end - mark.stored_up_to >= PERSIST_INTERVAL:
                self._save(ln, mark)
        return done

    def next_instant(self, start: float, end: float) -> float | None:
        """The first instant in (start, end] at which any schedule is due (a running clock), so
        the caller can stop there and run it with the meter exactly as it is at that instant."""
        first = None
        for _ln, _name, obj in self._schedules:
            state = obj.state()
            if state.times:
                t = next(instants(state.times, self._zone, start, end), None)
                if t is not None and (first is None or t < first):
                    first = t
        return first

    def _run(self, ln: bytes, state, at: float) -> str:
        if state.selector == 0:  # the null script
            return "executed"
        self.running, self.running_instant = ln, at
        try:
            self._run_script(state.script_ln, state.selector)
        except Exception:  # one failing script must not stop the schedules after it
            log.exception("schedule %s: script %s/%s failed", Obis.from_bytes(ln), Obis.from_bytes(state.script_ln),
                          state.selector)
            return "failed"
        finally:
            self.running = self.running_instant = None
        return "executed"

    def describe(self) -> list[dict[str, Any]]:
        """Every schedule for a status display: script, type, execution times, how far it got,
        the next instant it will run (within about a year), and an interrupted run not yet reported."""
        out = []
        for ln, name, obj in self._schedules:
            state = obj.state()
            mark = self._marks.get(ln)
            since = mark.up_to if mark is not None and mark.revision == state.revision else state.written_at
            upcoming = None
            if since is not None and state.times:
                upcoming = next(instants(state.times, self._zone, since, since + _NEXT_HORIZON), None)
            out.append({
                "logical_name": str(Obis.from_bytes(ln)), "name": name,
                "script": str(Obis.from_bytes(state.script_ln)), "selector": state.selector, "type": state.type,
                "execution_times": [pattern_text(t) for t in state.times],
                "processed_until": since, "next": upcoming,
                "interrupted": [e.instant for e in self._interrupted if e.schedule == ln],
            })
        return out


    def describe_one(self, ln: bytes) -> dict[str, Any] | None:
        """describe() of one schedule (None if the meter has no such schedule)."""
        text = str(Obis.from_bytes(ln))
        return next((d for d in self.describe() if d["logical_name"] == text), None)


def pattern_text(t: ExecutionTime) -> str:
    """An execution time as 'yyyy-mm-dd hh:mm:ss' with * for a wildcard (and the weekday, if set)."""
    def f(v: int | None, width: int) -> str:
        return "*" if v is None else f"{v:0{width}d}"
    text = f"{f(t.year, 4)}-{f(t.month, 2)}-{f(t.day, 2)} {f(t.hour, 2)}:{f(t.minute, 2)}:{f(t.second, 2)}"
    if t.weekday is not None:
        text += f" ({dt.date(2024, 1, t.weekday).strftime('%a')})"  # 2024-01-01 is a Monday
    return text
