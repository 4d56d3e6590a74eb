"""The meter's power quality function (companion §5.9.2, §5.9.4): the voltage quality detector and
the power quality profile over what the metrology measured, their COSEM objects, and their
durable state.

The runtime hands over each stretch of meter time the legal part measured with the values it
measured (`observe`), the outages (`power_up`) and the clock's jumps (`clock_changed`), and
commits once per tick (`flush`): the power quality events, the profile's new entries and the
state of both go into the event store in one transaction, so a kill -9 loses at most the
stretch since the last tick, never an event without its state or the other way round.
Thresholds and the capture period are configuration, kept in the meter's settings store.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, replace

from smartmeter.cosem.classes.base import Binding, expect, other_reason
from smartmeter.cosem.data import Data, DataType
from smartmeter.meter.power_quality import (
    CAPTURE_PERIODS, STATUS_CLOCK_ADJUSTED, STATUS_CLOCK_INVALID, STATUS_DATA_NOT_VALID, STATUS_DAYLIGHT_SAVING,
    STATUS_POWER_DOWN, PeriodAccumulator, PeriodValues, QualityEvent, Thresholds, VoltageQuality,
)

PROFILE = "power_quality"
PROFILE_ENTRIES = 1152  # 8 days of 10 min (companion §5.9.4)
DEFAULT_PERIOD = 600
THRESHOLDS_KEY = "power_quality.thresholds"
PERIOD_KEY = "power_quality.period"
STATE_KEY = "power_quality.state"

# COSEM form of each threshold: (Thresholds field, data type, scaler); value = physical / 10**scaler
THRESHOLD_OBJECTS = {
    "sag_threshold": ("sag", DataType.LONG_UNSIGNED, 0),
    "swell_threshold": ("swell", DataType.LONG_UNSIGNED, 0),
    "cut_threshold": ("cut", DataType.LONG_UNSIGNED, -1),
    "sag_time": ("sag_time", DataType.LONG_UNSIGNED, 0),
    "swell_time": ("swell_time", DataType.LONG_UNSIGNED, 0),
    "cut_time": ("cut_time", DataType.LONG_UNSIGNED, 0),
}
VOLTS_SCALER, AMPS_SCALER = -1, -3


def _scaled(value: float, scaler: int, high: int) -> int:
    return min(max(round(value / 10 ** scaler), 0), high)


class PowerQualityMonitor:
    def __init__(self, events, settings, clock, phases: int) -> None:
        self.events, self.settings, self.clock, self.phases = events, settings, clock, phases
        saved = settings.get(THRESHOLDS_KEY)
        self.detector = VoltageQuality(phases, Thresholds(**saved) if saved else Thresholds())
        self.profile = PeriodAccumulator(phases, int(settings.get(PERIOD_KEY, DEFAULT_PERIOD)))
        state = events.saved(STATE_KEY)
        if state is not None:
            data = json.loads(state)
            self.detector.restore(data["detector"])
            self.profile.restore(data["profile"])
        self._owed: list[QualityEvent] = []
        self._closed: list[PeriodValues] = []
        self._dirty = False
        # the registration tick and a DLMS request on another thread (the serial optical port)
        # both change the detector and the profile
        self._lock = threading.RLock()

    # -- input from the runtime ------------------------------------------------------------------
    def observe(self, start: float, end: float, values) -> None:
        """The legal part measured `values` (legal.InstantaneousValues; None: nothing yet) over [start, end)."""
        if values is None or end <= start:
            return
        with self._lock:
            self._owed += self.detector.observe(start, end, values.voltage)
            self._closed += self.profile.observe(start, end, values.voltage, values.current)
            self._dirty = True

    def power_up(self, down: float, up: float) -> None:
        """The supply was off from `down` to `up`."""
        with self._lock:
            self._owed += self.detector.power_down(down, up)
            self.profile.flag(STATUS_POWER_DOWN)  # the period the outage began in
            closed = self.profile.catch_up(up)
            if closed:
                self._closed += closed
                self.profile.flag(STATUS_POWER_DOWN)  # and the one it ended in
            self._dirty = True
            self.flush()

    def clock_changed(self, old: float, new: float) -> None:
        """The clock was adjusted: the periods it touches say so (CAD)."""
        with self._lock:
            self.profile.flag(STATUS_CLOCK_ADJUSTED)
            closed = self.profile.catch_up(new) if new > old else self.profile.set_back(old, new)
            if closed:
                self._closed += closed
                self.profile.flag(STATUS_CLOCK_ADJUSTED)
            self._dirty = True

    def flush(self) -> None:
        """Commit what the stretches since the last flush produced, with the state, at once."""
        with self._lock:
            if not self._dirty:
                return
            state = json.dumps({"detector": self.detector.to_json(), "profile": self.profile.to_json()})
            with self.events.transaction():
                for event in self._owed:
                    self.events.record(event.code, at=event.at)
                for entry in self._closed:
                    self.events.append_row(PROFILE, int(entry.end), json.dumps(self._row(entry)), PROFILE_ENTRIES)
                self.events.save(STATE_KEY, state)
            self._owed, self._closed, self._dirty = [], [], False

    def _row(self, entry: PeriodValues) -> list:
        status = entry.status
        if self.clock.local(entry.end).dst():
            status |= STATUS_DAYLIGHT_SAVING
        if self.clock.invalid:
            status |= STATUS_CLOCK_INVALID | STATUS_DATA_NOT_VALID
        volts = lambda values: [_scaled(v, VOLTS_SCALER, 0xFFFF) for v in values]  # noqa: E731
        return [status, *volts(entry.average_volts), *volts(entry.min_volts), *volts(entry.max_volts),
                *(_scaled(a, AMPS_SCALER, 0xFFFFFFFF) for a in entry.average_amps)]

    # -- the profile (IC 7 source) ---------------------------------------------------------------
    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        return [(self.clock.cosem(t), *json.loads(row)) for t, row in self.events.profile_rows(PROFILE, from_time, to_time)]

    def entries_in_use(self) -> int:
        return self.events.profile_count(PROFILE)

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

    def capture_period(self) -> int:
        return self.profile.period

    def set_capture_period(self, seconds: int) -> None:
        """Measurement period 3 and the profile's capture period are one value (companion §5.9.4)."""
        if seconds not in CAPTURE_PERIODS:
            raise other_reason("the period is 0 (off), 60, 300, 600, 900, 1800 "
                               f"or 3600 s, not {seconds}")
        with self._lock:
            if seconds == self.profile.period:
                return
            self.profile.set_period(seconds)
            self.settings.put(PERIOD_KEY, seconds)
            self._dirty = True
            self.flush()

    def _latest(self) -> list | None:
        rows = self.events.profile_rows(PROFILE)
        return json.loads(rows[-1][1]) if rows else None

    # -- bindings --------------------------------------------------------------------------------
    def bindings(self) -> dict:
        out: dict = {
            "power_quality.profile": self,
            "power_quality.profile.status": Binding(lambda: Data.unsigned((self._latest() or [0])[0])),
            "power_quality.measurement_period": Binding(
                lambda: Data.double_long_unsigned(self.profile.period),
                lambda value: self.set_capture_period(expect(value, DataType.DOUBLE_LONG_UNSIGNED))),
        }
        for name, (field, data_type, scaler) in THRESHOLD_OBJECTS.items():
            out[f"power_quality.{name}"] = Binding(self._threshold_getter(field, data_type, scaler),
                                                   self._threshold_setter(field, data_type, scaler))
        n = self.phases
        for phase in range(n):
            suffix = f"L{phase + 1}"
            last = lambda p=phase: self.detector.last[p]  # noqa: E731
            for kind in ("sag", "swell", "cut"):
                out[f"power_quality.{kind}s.{suffix}"] = Binding(
                    lambda k=kind, last=last: Data.long_unsigned(min(getattr(last(), f"{k}s"), 0xFFFF)))
                out[f"power_quality.{kind}_duration.{suffix}"] = Binding(
                    lambda k=kind, last=last: Data.double_long_unsigned(round(getattr(last(), f"{k}_duration"))))
            for kind in ("sag", "swell"):
                out[f"power_quality.{kind}_magnitude.{suffix}"] = Binding(
                    lambda k=kind, last=last: Data.long_unsigned(
                        _scaled(getattr(last(), f"{k}_magnitude"), VOLTS_SCALER, 0xFFFF)))
            # the values of the latest entry of the profile (0 before the first)
            for column, (name, data_type) in enumerate((("average_voltage", DataType.LONG_UNSIGNED),
                                                        ("min_voltage", DataType.LONG_UNSIGNED),
                                                        ("max_voltage", DataType.LONG_UNSIGNED),
                                                        ("average_current", DataType.DOUBLE_LONG_UNSIGNED))):
                index = 1 + column * n + phase
                out[f"power_quality.{name}.{suffix}"] = Binding(
                    lambda i=index, t=data_type: Data(t, (self._latest() or [0] * (1 + 4 * n))[i]))
        return out

    def _threshold_getter(self, field: str, data_type: DataType, scaler: int):
        return lambda: Data(data_type, _scaled(getattr(self.detector.thresholds, field), scaler, 0xFFFF))

    def _threshold_setter(self, field: str, data_type: DataType, scaler: int):
        def write(value: Data) -> None:
            thresholds = replace(self.detector.thresholds, **{field: expect(value, data_type) * 10 ** scaler})
            problem = thresholds.problem()
            if problem:
                raise other_reason(problem)
            self.detector.set_thresholds(thresholds)
            self.settings.put(THRESHOLDS_KEY, asdict(thresholds))
        return write
