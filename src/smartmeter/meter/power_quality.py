"""Voltage quality (companion standard §5.9.2 and §5.9.4): sags, swells and cuts per phase, and
the power quality profile's period values.

Sans-io and pure. The meter tells it what the metrology measured, as RMS values held over a
stretch of meter time (`observe(start, end, volts, currents)`: the measurement of a frame, or of
a steady stretch the registration measured at once), and when the supply failed and returned
(`power_down`, `power_up`). It answers with the power quality events owed, each with the time
its condition started (the companion: "the event time stamps represent the start time of the
Sag-, Swell-, Cut- or Normal condition, not the time of logging"), and keeps the counts,
durations and magnitudes of the objects 1-0:x.32..41.0.255.

A condition (sag: below the sag threshold; swell: above the swell threshold; cut: below the
cut threshold) is declared once it has lasted its time threshold; it ends when the voltage has
been back past the threshold by the 2 % hysteresis for the 5 s stabilisation period, and its
duration runs from its start to that return. The rules of §5.9.2 (decisions "Voltage quality"):

- A cut prevails over a sag. A dip below the cut threshold is also below the sag threshold, so
  both conditions start; when the cut is declared before the sag (cut first) or at the same
  instant (simultaneous), that sag is silent: it is never logged or counted, it only keeps the
  phase from being normal until the voltage is back above the sag threshold. A sag declared
  before the cut is logged, and the cut too.
- Voltage normal is logged for a phase when none of its conditions remains (declared, pending
  or recovering) after at least one was logged, with the time the last of them ended.
- A full power-down is a cut on every phase. If it lasted longer than the cut time threshold,
  the conditions still running end at the power-down, a cut is logged on every phase with the
  power-down time and Normal with the power-up time, both at power-up. A shorter one is not a
  condition: nothing is logged and the conditions running before it go on.

Power quality profile: `PeriodAccumulator` averages the voltage and current of each phase over
the samples actually taken in a capture period (time-weighted: a stretch of meter time the
metrology measured counts for its length) and keeps the lowest and highest voltage, initialised
from the first sample of the period. A period without a sample (the meter was off) has no entry.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

HYSTERESIS = 0.02  # of the threshold, towards normal, before a condition may end
STABILISATION = 5.0  # s the voltage stays back before a condition has ended
KINDS = ("sag", "swell", "cut")
# IDIS package 2 power quality event codes: sag (under voltage) L1..L3, swell (over voltage),
# cut (missing voltage), voltage normal
FIRST_CODE = {"sag": 76, "swell": 79, "cut": 82, "normal": 85}
CAPTURE_PERIODS = (0, 60, 300, 600, 900, 1800, 3600)  # s; companion §5.9.4, 0 = off


@dataclass(frozen=True)
class Thresholds:
    """The configured thresholds (V) and time thresholds (s). Defaults: EN 50160 for a 230 V
    supply (dip below 90 %, swell above 110 %, interruption below 5 % of the nominal voltage)
    with 1 s time thresholds (decisions "Voltage quality")."""

    sag: float = 207.0
    swell: float = 253.0
    cut: float = 11.5
    sag_time: float = 1.0
    swell_time: float = 1.0
    cut_time: float = 1.0

    def problem(self) -> str | None:
        """Why these thresholds cannot work together (None: they can)."""
        if not 0 < self.cut < self.sag < self.swell:
            return f"the thresholds must rise cut < sag < swell (cut {self.cut:g} V, sag {self.sag:g} V, " \
                   f"swell {self.swell:g} V)"
        if min(self.sag_time, self.swell_time, self.cut_time) < 1:
            return "a time threshold is at least 1 s"
        return None

    def time(self, kind: str) -> float:
        return getattr(self, f"{kind}_time")

    def inside(self, kind: str, volts: float) -> bool:
        return volts > self.swell if kind == "swell" else volts < getattr(self, kind)

    def back(self, kind: str, volts: float) -> bool:
        """The voltage is past the threshold by the hysteresis, towards normal."""
        if kind == "swell":
            return volts <= self.swell * (1 - HYSTERESIS)
        return volts >= getattr(self, kind) * (1 + HYSTERESIS)


@dataclass
class Condition:
    """One kind of condition on one phase. state: idle, pending (inside, shorter than its time
    threshold), active (declared), recovering (back for less than the stabilisation)."""

    state: str = "idle"
    start: float = 0.0
    extreme: float = 0.0  # the lowest (sag, cut) or highest (swell) voltage since the start
    back_since: float = 0.0
    silent: bool = False  # a sag a cut prevailed over: never logged or counted


@dataclass
class PhaseState:
    conditions: dict[str, Condition] = field(default_factory=lambda: {k: Condition() for k in KINDS})
    logged: bool = False  # a condition of the current episode was logged: Normal is owed at its end
    ended_at: float = 0.0  # when the latest condition of the episode ended


@dataclass(frozen=True)
class QualityEvent:
    code: int
    at: float  # the start of the condition (UTC s of meter time)


@dataclass
class LastValues:
    """The values of objects 1-0:x.32..41.0.255 of one phase."""

    sags: int = 0
    sag_duration: float = 0.0
    sag_magnitude: float = 0.0
    swells: int = 0
    swell_duration: float = 0.0
    swell_magnitude: float = 0.0
    cuts: int = 0
    cut_duration: float = 0.0


class VoltageQuality:
    """Sag, swell and cut detection on every phase of a meter."""

    def __init__(self, phases: int, thresholds: Thresholds | None = None) -> None:
        self.phases = phases
        self.thresholds = thresholds or Thresholds()
        self.state = [PhaseState() for _ in range(phases)]
        self.last = [LastValues() for _ in range(phases)]

    # -- input ---------------------------------------------------------------------------------
    def observe(self, start: float, end: float, volts: Iterable[float]) -> list[QualityEvent]:
        """The metrology measured `volts` (RMS per phase) from `start` to `end`."""
        if end < start:
            return []
        events: list[QualityEvent] = []
        for phase, v in enumerate(list(volts)[:self.phases]):
            events += self._phase(phase, start, end, float(v))
        return events

    def power_down(self, down: float, up: float) -> list[QualityEvent]:
        """At power-up: the supply was off from `down` to `up` (a cut on every phase)."""
        if up - down <= self.thresholds.cut_time:
            return []
        events = []
        for phase in range(self.phases):
            ps, last = self.state[phase], self.last[phase]
            for kind, c in ps.conditions.items():
                if c.state in ("active", "recovering"):
                    self._end(phase, kind, c, down)
            ps.conditions = {k: Condition() for k in KINDS}
            last.cuts += 1
            last.cut_duration = up - down
            events += [QualityEvent(FIRST_CODE["cut"] + phase, down), QualityEvent(FIRST_CODE["normal"] + phase, up)]
            ps.logged, ps.ended_at = False, up
        return events

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """New thresholds apply from now on; conditions running go on under them."""
        problem = thresholds.problem()
        if problem:
            raise ValueError(problem)
        self.thresholds = thresholds

    # -- one phase -------------------------------------------------------------------------------
    def _phase(self, phase: int, start: float, end: float, v: float) -> list[QualityEvent]:
        ps = self.state[phase]
        events = []
        # the cut first: whether it is declared before the sag decides whether the sag is logged
        declared: dict[str, float] = {}
        for kind in ("cut", "sag", "swell"):
            c = ps.conditions[kind]
            at = self._advance(phase, kind, c, start, end, v)
            if at is not None:
                declared[kind] = at
        sag, cut = ps.conditions["sag"], ps.conditions["cut"]
        if "cut" in declared:  # a sag not declared before the cut is the cut's: silent
            if sag.state == "pending" or declared.get("sag", -math.inf) >= declared["cut"]:
                sag.silent = True
        elif "sag" in declared and cut.state in ("active", "recovering"):
            sag.silent = True  # the cut was declared before
        for kind in ("sag", "swell", "cut"):  # a sag declared first is logged first
            if kind in declared and not ps.conditions[kind].silent:
                events.append(QualityEvent(FIRST_CODE[kind] + phase, ps.conditions[kind].start))
                ps.logged = True
                setattr(self.last[phase], f"{kind}s", getattr(self.last[phase], f"{kind}s") + 1)
        events.sort(key=lambda e: declared[_kind_of(e.code)])
        if ps.logged and all(c.state == "idle" for c in ps.conditions.values()):
            events.append(QualityEvent(FIRST_CODE["normal"] + phase, ps.ended_at))
            ps.logged = False
        return events

    def _advance(self, phase: int, kind: str, c: Condition, start: float, end: float, v: float) -> float | None:
        """Run one condition over [start, end) at voltage v. -> the instant it was declared, if it was."""
        t = self.thresholds
        inside, back = t.inside(kind, v), t.back(kind, v)
        worse = min if kind != "swell" else max
        declared_at = None
        if c.state == "idle" and inside:
            c.state, c.start, c.extreme, c.silent = "pending", start, v, False
        elif c.state == "recovering":
            if not back:  # inside again, or in the hysteresis band: not back yet
                c.state = "active"
            elif end - c.back_since >= STABILISATION:
                self._end(phase, kind, c, c.back_since)
        elif c.state == "pending" and not inside:
            self._drop(phase, c, start)
        if c.state == "pending":
            c.extreme = worse(c.extreme, v)
            if end - c.start >= t.time(kind):
                c.state, declared_at = "active", c.start + t.time(kind)
        elif c.state == "active":
            if back:
                c.state, c.back_since = "recovering", start
                if end - start >= STABILISATION:
                    self._end(phase, kind, c, start)
            else:
                c.extreme = worse(c.extreme, v)
        return declared_at

    def _drop(self, phase: int, c: Condition, at: float) -> None:
        """A pending condition that did not last: nothing to log; the episode may end here."""
        c.state = "idle"
        self.state[phase].ended_at = max(self.state[phase].ended_at, at)

    def _end(self, phase: int, kind: str, c: Condition, at: float) -> None:
        """A declared condition ended at `at` (the voltage was back then)."""
        if not c.silent:
            last = self.last[phase]
            setattr(last, f"{kind}_duration", at - c.start)
            if kind != "cut":
                setattr(last, f"{kind}_magnitude", c.extreme)
        c.state, c.silent = "idle", False
        self.state[phase].ended_at = max(self.state[phase].ended_at, at)

    # -- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"state": [{"conditions": {k: asdict(c) for k, c in ps.conditions.items()}, "logged": ps.logged,
                           "ended_at": ps.ended_at} for ps in self.state],
                "last": [asdict(v) for v in self.last]}

    def restore(self, data: dict) -> None:
        """The state saved by to_json (a different number of phases: what fits)."""
        for ps, saved in zip(self.state, data.get("state", [])):
            ps.conditions = {k: Condition(**saved["conditions"][k]) for k in KINDS}
            ps.logged, ps.ended_at = bool(saved["logged"]), float(saved["ended_at"])
        for i, saved in enumerate(data.get("last", [])[:self.phases]):
            self.last[i] = LastValues(**saved)


def _kind_of(code: int) -> str:
    return next(k for k in KINDS if FIRST_CODE[k] <= code < FIRST_CODE[k] + 3)


# -- the power quality profile ---------------------------------------------------------------------
STATUS_POWER_DOWN = 0x80
STATUS_CLOCK_ADJUSTED = 0x20
STATUS_DAYLIGHT_SAVING = 0x08
STATUS_DATA_NOT_VALID = 0x04
STATUS_CLOCK_INVALID = 0x02


@dataclass(frozen=True)
class PeriodValues:
    """One entry of the power quality profile: per phase average, lowest and highest voltage and
    average current over the samples of the period ending at `end`."""

    end: float
    status: int
    average_volts: tuple[float, ...]
    min_volts: tuple[float, ...]
    max_volts: tuple[float, ...]
    average_amps: tuple[float, ...]


@dataclass
class _Open:
    period_start: float
    seconds: float = 0.0
    volt_seconds: list[float] = field(default_factory=list)
    amp_seconds: list[float] = field(default_factory=list)
    min_volts: list[float] = field(default_factory=list)
    max_volts: list[float] = field(default_factory=list)
    flags: int = 0


class PeriodAccumulator:
    """The power quality profile's period values (companion §5.9.4). `period` 0: off."""

    def __init__(self, phases: int, period: int) -> None:
        self.phases = phases
        self.period = period
        self._open: _Open | None = None
        self._pending_flags = 0  # for the next period that gets a sample

    def period_of(self, t: float) -> float:
        return t // self.period * self.period

    def observe(self, start: float, end: float, volts: Iterable[float], amps: Iterable[float]) -> list[PeriodValues]:
        """Samples held from `start` to `end`; -> the periods this closed (boundary crossed)."""
        if not self.period or end <= start:
            return []
        volts, amps = list(volts)[:self.phases], list(amps)[:self.phases]
        closed = []
        t = start
        while t < end:
            period_start = self.period_of(t)
            if self._open is not None and self._open.period_start != period_start:
                closed += self._close()
            if self._open is None:
                self._open = _Open(period_start, flags=self._pending_flags)
                self._pending_flags = 0
            step_end = min(end, period_start + self.period)
            self._add(step_end - t, volts, amps)
            t = step_end
        if self._open is not None and end >= self._open.period_start + self.period:
            closed += self._close()  # the samples reached the boundary: the period is complete
        return closed

    def _add(self, seconds: float, volts: list[float], amps: list[float]) -> None:
        o = self._open
        if not o.volt_seconds:
            o.volt_seconds, o.amp_seconds = [0.0] * self.phases, [0.0] * self.phases
            o.min_volts, o.max_volts = list(volts), list(volts)
        o.seconds += seconds
        for i in range(self.phases):
            o.volt_seconds[i] += volts[i] * seconds
            o.amp_seconds[i] += amps[i] * seconds
            o.min_volts[i] = min(o.min_volts[i], volts[i])
            o.max_volts[i] = max(o.max_volts[i], volts[i])

    def _close(self, at: float | None = None) -> list[PeriodValues]:
        """The open period's entry, captured at its boundary (or at `at`)."""
        o, self._open = self._open, None
        if o is None or o.seconds <= 0:
            return []
        return [PeriodValues(o.period_start + self.period if at is None else at, o.flags,
                             tuple(v / o.seconds for v in o.volt_seconds), tuple(o.min_volts), tuple(o.max_volts),
                             tuple(a / o.seconds for a in o.amp_seconds))]

    def catch_up(self, now: float) -> list[PeriodValues]:
        """The meter got to `now` without samples (after an outage or a forward clock change):
        an open period that ended before now closes at its boundary."""
        if self._open is not None and now >= self._open.period_start + self.period:
            return self._close()
        return []

    def set_back(self, old: float, new: float) -> list[PeriodValues]:
        """The clock was set back from `old` to `new`: an open period the new time lies before
        closes now, captured at `old` (its boundary is no longer ahead of the clock, and a second
        entry with that boundary would follow); the next period continues."""
        if self._open is not None and self.period_of(new) < self._open.period_start:
            return self._close(at=old)
        return []

    def flag(self, bits: int) -> None:
        """Something happened in the open period (power down, clock adjusted); with no period
        open, it marks the next one that gets a sample."""
        if self._open is not None:
            self._open.flags |= bits
        else:
            self._pending_flags |= bits

    def set_period(self, period: int) -> None:
        """A new capture period: the period running is not recorded (decisions "Power quality profile")."""
        if period not in CAPTURE_PERIODS:
            raise ValueError(f"the capture period is one of {', '.join(str(p // 60) for p in CAPTURE_PERIODS)} "
                             f"minutes, not {period} s")
        self.period, self._open, self._pending_flags = period, None, 0

    def to_json(self) -> dict:
        return {"period": self.period, "open": None if self._open is None else asdict(self._open),
                "pending_flags": self._pending_flags}

    def restore(self, data: dict) -> None:
        if int(data.get("period", self.period)) != self.period:
            return  # saved under another period: not continued
        self._open = None if data.get("open") is None else _Open(**data["open"])
        self._pending_flags = int(data.get("pending_flags", 0))

