"""Cumulative energy registers: exact integers in milli-units, never lowered, wrap by rule."""
from __future__ import annotations

from dataclasses import dataclass

REGISTER_NAMES = ("a_plus", "a_minus", "r_plus", "r_minus")  # +A, -A, +R, -R

# Companion standard §5.2: direct-connected meters wrap at 999 999 999 Wh/varh.
WRAP_UNITS_DIRECT = 1_000_000_000
MILLI = 1000


@dataclass(frozen=True, slots=True)
class EnergySnapshot:
    """Register values in whole Wh / varh (the resolution the registers are read at)."""

    a_plus: int
    a_minus: int
    r_plus: int
    r_minus: int


class EnergyRegisters:
    def __init__(self, milli_units: dict[str, int], wrap_units: int = WRAP_UNITS_DIRECT) -> None:
        self._milli = {name: int(milli_units.get(name, 0)) for name in REGISTER_NAMES}
        self._wrap_milli = wrap_units * MILLI

    def add_milli(self, deltas: dict[str, int]) -> None:
        """Add measured energy per register (milli-units, never negative): the only way up."""
        for name, delta in deltas.items():
            if delta < 0:
                raise ValueError("a cumulative register never goes down")
            self._milli[name] = (self._milli[name] + delta) % self._wrap_milli

    def milli_units(self) -> dict[str, int]:
        return dict(self._milli)

    def snapshot(self) -> EnergySnapshot:
        return EnergySnapshot(*(self._milli[name] // MILLI for name in REGISTER_NAMES))


# Rate registers (companion standard §5.5): 1-0:x.8.1 and 1-0:x.8.2. Rate 0 is no register of the
# model: it holds what was registered while no rate of a quantity was active (before the first
# tariff, or under a mask that names no register of that quantity), so that for every quantity
# the rates always add up to the total (modulo the wrap).
RATES = (1, 2)
ALL_RATES = (0, *RATES)


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    """Whole Wh / varh per quantity and rate, and the rate active per quantity (0: none)."""

    values: tuple[tuple[int, ...], ...]  # per quantity of REGISTER_NAMES: one value per rate of ALL_RATES
    active: tuple[int, ...]  # per quantity

    def value(self, name: str, rate: int) -> int:
        return self.values[REGISTER_NAMES.index(name)][ALL_RATES.index(rate)]


class RateRegisters:
    """The total's register split by rate, in whole units.

    A rate takes the total's whole-unit steps while it is active: when a total goes from
    x.9 Wh to y.1 Wh, the y − x whole Wh go to the rate active at that moment, the fraction
    stays with the total. So at every instant the rates sum to the total's whole Wh exactly,
    which splitting the exact (sub-Wh) energy could not promise after each rate is floored."""

    def __init__(self, values: dict[tuple[str, int], int], active: dict[str, int],
                 wrap_units: int = WRAP_UNITS_DIRECT) -> None:
        self._wrap = wrap_units
        self._values = {(n, r): int(values.get((n, r), 0)) % wrap_units for n in REGISTER_NAMES for r in ALL_RATES}
        self._active = {n: int(active.get(n, 0)) for n in REGISTER_NAMES}
        if any(r not in ALL_RATES for r in self._active.values()):
            raise ValueError(f"an active rate is one of {ALL_RATES}")

    @classmethod
    def all_in_rate_0(cls, totals: EnergySnapshot, wrap_units: int = WRAP_UNITS_DIRECT) -> "RateRegisters":
        """For totals registered before there were rates (a store from before, a first start)."""
        return cls({(n, 0): getattr(totals, n) for n in REGISTER_NAMES}, {}, wrap_units)

    def follow(self, before: EnergySnapshot, after: EnergySnapshot) -> None:
        """The totals went from `before` to `after`: their whole-unit steps go to the active rates."""
        for name in REGISTER_NAMES:
            step = (getattr(after, name) - getattr(before, name)) % self._wrap
            if step:
                key = (name, self._active[name])
                self._values[key] = (self._values[key] + step) % self._wrap

    def set_active(self, rates: dict[str, int]) -> bool:
        """Make `rates` (quantity -> rate) active from now on; -> whether anything changed."""
        if set(rates) - set(REGISTER_NAMES) or any(r not in ALL_RATES for r in rates.values()):
            raise ValueError(f"rates are given per quantity ({', '.join(REGISTER_NAMES)}), each one of {ALL_RATES}")
        changed = any(self._active[n] != r for n, r in rates.items())
        self._active.update(rates)
        return changed

    def sums_to(self, totals: EnergySnapshot) -> bool:
        """The rates of every quantity add up to its total (modulo the wrap)."""
        return all(sum(self._values[(n, r)] for r in ALL_RATES) % self._wrap == getattr(totals, n) % self._wrap
                   for n in REGISTER_NAMES)

    def items(self) -> dict[tuple[str, int], int]:
        return dict(self._values)

    def active(self) -> dict[str, int]:
        return dict(self._active)

    def snapshot(self) -> RateSnapshot:
        return RateSnapshot(tuple(tuple(self._values[(n, r)] for r in ALL_RATES) for n in REGISTER_NAMES),
                            tuple(self._active[n] for n in REGISTER_NAMES))


def registers_message(milli: dict[str, int], rates: RateRegisters | None) -> bytes:
    """What the meter signs over its registers: the totals (milli-units), and with rates the
    value of every rate and the rate active per quantity, so an edit of any of them shows."""
    totals = b"".join(int(milli.get(n, 0)).to_bytes(8, "big") for n in REGISTER_NAMES)
    if rates is None:  # a store from before rate registers existed
        return b"smartmeter/registers/v1\0" + totals
    values = rates.items()
    active = rates.active()
    return (b"smartmeter/registers/v2\0" + totals
            + b"".join(values[(n, r)].to_bytes(8, "big") for n in REGISTER_NAMES for r in ALL_RATES)
            + bytes(active[n] for n in REGISTER_NAMES))
