"""Instantaneous values (companion standard §5.9.1, catalog §3.8 and §8) as COSEM register values.

The legally relevant part's metrology computes them from the samples of its latest frame
(`legal.ReadInstantaneousValues`); this module only names and scales them. A binding name in
the model is "instantaneous.<quantity>" for the total (or a value that has no phase) and
"instantaneous.<quantity>.L<n>" for phase n. The quantities, with the COSEM data type and the
scaler the model gives them (value = physical value / 10**scaler):

    voltage, current, current_sum, frequency, +P, -P, +Q, -Q, +S, -S, |P| (+P plus -P),
    pf+ (+P/+S), pf- (-P/-S), angle (U-I of the fundamental, degrees)

+S / -S is the apparent power while importing / exporting active power; each power factor is 0
in the other direction. A meter without a measurement yet (just started) answers 0.

The Instantaneous Readout Profile 0-0:21.0.5.255 (binding "instantaneous.readout") holds one
snapshot of all of them with the clock's time, taken when a client executes its capture method,
from one reading of the metrology: values of one frame, consistent with each other.
"""
from __future__ import annotations

from typing import Callable

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, RequestContext
from smartmeter.cosem.data import Data, DataType
from smartmeter.legal import interface as legal

# quantity -> (data type, scaler): the scaler is repeated in the model (scaler_unit), checked by a test
SCALING = {
    "voltage": (DataType.LONG_UNSIGNED, -1),
    "current": (DataType.DOUBLE_LONG_UNSIGNED, -3),
    "current_sum": (DataType.DOUBLE_LONG_UNSIGNED, -3),
    "frequency": (DataType.LONG_UNSIGNED, -2),
    "+P": (DataType.DOUBLE_LONG_UNSIGNED, 0), "-P": (DataType.DOUBLE_LONG_UNSIGNED, 0),
    "+Q": (DataType.DOUBLE_LONG_UNSIGNED, 0), "-Q": (DataType.DOUBLE_LONG_UNSIGNED, 0),
    "+S": (DataType.DOUBLE_LONG_UNSIGNED, 0), "-S": (DataType.DOUBLE_LONG_UNSIGNED, 0),
    "|P|": (DataType.DOUBLE_LONG_UNSIGNED, 0),
    "pf+": (DataType.LONG_UNSIGNED, -3), "pf-": (DataType.LONG_UNSIGNED, -3),
    "angle": (DataType.LONG, -1),
}
_POWERS = ("+P", "-P", "+Q", "-Q", "+S", "-S")
# The readout profile's values after clock.time, as (quantity, phase 1..3 or None: total), in the
# order of its capture objects in the model (a test holds the two together): every instantaneous
# value object of companion §5.9.1 / catalog §8
READOUT_VALUES: tuple[tuple[str, int | None], ...] = (
    *(("voltage", n) for n in (1, 2, 3)), *(("current", n) for n in (1, 2, 3)),
    ("current_sum", None), ("frequency", None),
    *((q, None) for q in _POWERS), *((q, n) for n in (1, 2, 3) for q in _POWERS),
    ("|P|", None),
    *((pf, n) for pf in ("pf+", "pf-") for n in (None, 1, 2, 3)),
    *(("angle", n) for n in (1, 2, 3)),
)
_LIMITS = {DataType.LONG_UNSIGNED: (0, 0xFFFF), DataType.DOUBLE_LONG_UNSIGNED: (0, 0xFFFFFFFF),
           DataType.LONG: (-0x8000, 0x7FFF)}


def physical(v: legal.InstantaneousValues, quantity: str, phase: int | None) -> float:
    """The physical value of `quantity` for phase index `phase` (0-based; None: the total)."""
    if quantity == "voltage":
        return v.voltage[phase or 0]
    if quantity == "current":
        return v.current[phase or 0]
    if quantity == "current_sum":
        return sum(v.current)
    if quantity == "frequency":
        return 0.0 if v.frequency != v.frequency else v.frequency  # NaN: no voltage
    if quantity == "angle":
        return v.angle_phases[phase or 0]
    if quantity == "|P|":
        return sum(abs(p) for p in v.active_power_phases) if phase is None else abs(v.active_power_phases[phase])
    p = v.active_power if phase is None else v.active_power_phases[phase]
    q = v.reactive_power if phase is None else v.reactive_power_phases[phase]
    s = v.apparent_power if phase is None else v.apparent_power_phases[phase]
    importing = p >= 0
    return {
        "+P": max(p, 0.0), "-P": max(-p, 0.0), "+Q": max(q, 0.0), "-Q": max(-q, 0.0),
        "+S": s if importing else 0.0, "-S": 0.0 if importing else s,
        "pf+": p / s if importing and s else 0.0, "pf-": -p / s if not importing and s else 0.0,
    }[quantity]


def encode(quantity: str, value: float) -> Data:
    data_type, scaler = SCALING[quantity]
    low, high = _LIMITS[data_type]
    return Data(data_type, min(max(round(value / 10 ** scaler), low), high))


class InstantaneousValues:
    """The bindings of every instantaneous value object, read through the protective interface."""

    def __init__(self, legal_part, clock=None) -> None:
        self.legal, self.clock = legal_part, clock

    def read(self) -> legal.InstantaneousValues | None:
        """The metrology's values of its latest frame (None before the first)."""
        return self.legal.execute(legal.ReadInstantaneousValues())

    def _getter(self, quantity: str, phase: int | None) -> Callable[[], Data]:
        def get() -> Data:
            values = self.read()
            return encode(quantity, 0.0 if values is None else physical(values, quantity, phase))
        return get

    def bindings(self, phases: int) -> dict[str, Binding | ReadoutProfile]:
        out: dict[str, Binding | ReadoutProfile] = {"instantaneous.readout": ReadoutProfile(self, phases)}
        for quantity in SCALING:
            out[f"instantaneous.{quantity}"] = Binding(self._getter(quantity, None))
            for n in range(1, phases + 1):
                out[f"instantaneous.{quantity}.L{n}"] = Binding(self._getter(quantity, n - 1))
        return out


class ReadoutProfile:
    """The Instantaneous Readout Profile's single entry (IC 7 binding): empty until the first
    capture, replaced by every capture, emptied by reset. Kept in memory: a snapshot taken for a
    readout, not a record (a restart empties it)."""

    def __init__(self, values: InstantaneousValues, phases: int) -> None:
        self.values, self.clock = values, values.clock
        self.columns = [(q, n) for q, n in READOUT_VALUES if n is None or n <= phases]
        self._entry: tuple[int, tuple] | None = None  # (UTC of the capture, the row)

    def capture(self, ctx: RequestContext | None = None) -> None:
        measured = self.values.read()  # one reading: every column from the same frame
        stamp = self.clock.cosem_now()  # what clock.time (0-0:1.0.0.255 attribute 2) reads now
        row = (stamp, *(encode(q, 0.0 if measured is None else physical(measured, q, None if n is None else n - 1))
                        .value for q, n in self.columns))
        self._entry = (self.clock.utc_from_cosem(axdr.decode_date_time(stamp)), row)

    def reset(self, ctx: RequestContext | None = None) -> None:
        self._entry = None

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        if self._entry is None:
            return []
        utc, row = self._entry
        inside = (from_time is None or from_time <= utc) and (to_time is None or utc <= to_time)
        return [row] if inside else []

    def entries_in_use(self) -> int:
        return 0 if self._entry is None else 1

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)
