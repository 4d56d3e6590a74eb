"""A meter on a simulated clock with a load the test injects, for long emulated periods.

In each 15-minute interval k (1-based: the one ending at start + k * PERIOD) the installation
draws injected_load(k) for ACTIVE seconds right after the boundary and nothing for the rest.
Idle time is not sampled: the meter measures its synthetic input sample by sample at 8 kHz,
and sampling whole days takes minutes of CPU (30 days: about an hour), so `IdleNotSampled`
in front of the legal part drops the measurement commands of the idle minutes (no load
registers no energy). Everything else is the meter's own tick: it decides the boundaries,
captures and persists."""
from __future__ import annotations

from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

PERIOD = 900
ACTIVE = 3  # seconds of load per interval


def injected_load(k: int) -> tuple[float, float]:
    """(P in W, Q in var) of interval k. Multiples of 1200 so that ACTIVE = 3 s gives whole
    Wh / varh (1200 W * 3 s = 1 Wh)."""
    p = 1200.0 * (2 + k % 8) * (-1 if k % 4 == 3 else 1)  # every fourth interval exports (PV)
    q = 1200.0 * (k % 3) * (-1 if k % 5 == 0 else 1)
    return p, q


def expected_registers(intervals: int, first: int = 1, start: tuple[float, ...] = (0.0,) * 4) -> list[tuple[float, ...]]:
    """(+A, -A, +R, -R) in Wh/varh at the end of intervals first .. first+intervals-1, from
    the injected load alone, starting from `start`."""
    totals = list(start)
    out = []
    for k in range(first, first + intervals):
        p, q = injected_load(k)
        totals[0 if p > 0 else 1] += abs(p) * ACTIVE / 3600
        totals[2 if q > 0 else 3] += abs(q) * ACTIVE / 3600
        out.append(tuple(totals))
    return out


class InjectedLoad:
    """The installation as the meter's tick asks it: power at time s."""

    def __init__(self, start: int) -> None:
        self.start = start

    def power(self, s: float) -> tuple[float, float]:
        offset = s - self.start
        k = int(offset // PERIOD) + 1
        return injected_load(k) if offset % PERIOD < ACTIVE else (0.0, 0.0)


class IdleNotSampled:
    """In front of the legal part for the tick only: drops the measurement of no load."""

    def __init__(self, part) -> None:
        self.part, self.dropped = part, 0

    def execute(self, command):
        if isinstance(command, legal.RegisterSimulatedPower) and command.active_w == 0 and command.reactive_var == 0:
            self.dropped += 1
            return None
        return self.part.execute(command)


class LoadedMeter:
    """A Meter whose platform clock is a number the test moves, drawing the injected load."""

    def __init__(self, data_dir, start: int) -> None:
        self.platform = [float(start)]
        self.meter = Meter(MeterConfig(data_dir=data_dir, backfill_days=0),
                           clock=MeterClock(source=lambda: self.platform[0]))
        self.meter.load = InjectedLoad(start)
        self.part = self.meter.legal  # the legal part itself, for reading

    def run_intervals(self, n: int) -> None:
        """n whole intervals, ticking after the active seconds and at the boundary."""
        self.meter.legal = IdleNotSampled(self.part)
        try:
            for _ in range(n):
                self.platform[0] += ACTIVE
                self.meter.tick()
                self.platform[0] += PERIOD - ACTIVE
                self.meter.tick()
        finally:
            self.meter.legal = self.part

    def close(self) -> None:
        self.meter.close()
