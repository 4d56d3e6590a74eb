"""Demand registration (companion standard §5.3): average power per 15-minute period, the
maximum since the billing period began, and the cumulative maximum over billing periods.

Averages are derived from the exact energy registers (milli-Wh), so demand and energy can
never disagree. Values are whole W / var with the wrap-arounds of §5.3.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from smartmeter.legal.registers import REGISTER_NAMES

DEMAND_PERIOD = 900  # seconds, companion standard §5.3 (attribute 8); one period (attribute 9)
NUMBER_OF_PERIODS = 1
DEMAND_WRAP_DIRECT = 100_000  # 99 999 W/var
CUMULATIVE_MAX_WRAP_DIRECT = 10_000_000  # 9 999 999 W/var


@dataclass(frozen=True, slots=True)
class DemandValue:
    current_average: int  # W or var, over the running period (energy so far / period length)
    last_average: int  # of the last complete period
    capture_time: int | None  # UTC seconds: end of the last complete period
    start_time_current: int  # UTC seconds


@dataclass(frozen=True, slots=True)
class MaximumDemand:
    value: int
    capture_time: int | None
    cumulative: int  # sum of the maxima of past billing periods


def average(delta_milli: int, period: int = DEMAND_PERIOD) -> int:
    """Average power in whole W/var of an energy delta in milli-Wh over a period in seconds."""
    return (delta_milli * 3600 // (1000 * period)) % DEMAND_WRAP_DIRECT


@dataclass
class DemandState:
    """Everything demand registration must remember across a power failure (JSON-able)."""

    start_time: int = 0
    start_milli: dict[str, int] = field(default_factory=dict)
    last_average: dict[str, int] = field(default_factory=dict)
    capture_time: int | None = None
    maximum: dict[str, int] = field(default_factory=dict)
    maximum_time: dict[str, int | None] = field(default_factory=dict)
    cumulative: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict) -> "DemandState":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class DemandRegisters:
    def __init__(self, state: DemandState) -> None:
        self.state = state

    def copy(self) -> "DemandRegisters":
        """An independent copy: changed, stored, and only then taken (a failed commit changes nothing)."""
        return DemandRegisters(DemandState.from_json(copy.deepcopy(self.state.to_json())))

    def start(self, now: int, milli: dict[str, int]) -> None:
        """Begin a running period now (first start, or after a power failure: the interrupted
        period is not completed, as the load profile's is not)."""
        self.state.start_time = now
        self.state.start_milli = dict(milli)

    def close_period(self, end: int, milli: dict[str, int]) -> None:
        """End the running period at a boundary: last averages, maxima, next period."""
        s = self.state
        for name in REGISTER_NAMES:
            value = average(milli[name] - s.start_milli.get(name, milli[name]))
            s.last_average[name] = value
            if value > s.maximum.get(name, 0):
                s.maximum[name] = value
                s.maximum_time[name] = end
        s.capture_time = end
        self.start(end, milli)

    def reset_maximum(self, now: int, names: tuple[str, ...] = REGISTER_NAMES) -> None:
        """End of a billing period: maxima go into the cumulative registers and restart at 0."""
        s = self.state
        for name in names:
            s.cumulative[name] = (s.cumulative.get(name, 0) + s.maximum.get(name, 0)) % CUMULATIVE_MAX_WRAP_DIRECT
            s.maximum[name] = 0
            s.maximum_time[name] = now

    def demand(self, name: str, milli: dict[str, int]) -> DemandValue:
        s = self.state
        return DemandValue(average(milli[name] - s.start_milli.get(name, milli[name])),
                           s.last_average.get(name, 0), s.capture_time, s.start_time)

    def maximum(self, name: str) -> MaximumDemand:
        s = self.state
        return MaximumDemand(s.maximum.get(name, 0), s.maximum_time.get(name), s.cumulative.get(name, 0))
