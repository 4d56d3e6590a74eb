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
