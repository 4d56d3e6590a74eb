"""The meter's physical world: what its hardware would sense.

Supply, phase voltages, the load, the meter and terminal covers, a magnet near the meter,
the two buttons and the clock's backup battery. A user changes it with `smartmeter sim` over
the meter's control channel (meter/control.py); the running meter listens (`Meter.on_world`)
and turns each change into what a real meter does: a power failure, a fraud event, a lost
clock. The legally relevant part learns of the inputs that concern it (supply, voltages,
load, battery) only through declared commands of its protective interface.

The state is kept in the meter's store, so a cover left open stays open over a restart and
is not reported again ("an event is not re-triggered while its root cause persists").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from smartmeter.errors import SmartmeterError

PHASES = ("L1", "L2", "L3")
NOMINAL_VOLTAGE = 230.0
MAX_VOLTAGE = 400.0
MAX_LOAD_W = 100_000.0  # 3 x 230 V x 100 A is 69 kW: anything above is a typing error
BUTTONS = ("A", "R")


class WorldInputError(SmartmeterError):
    """An input the simulated world does not have, or a value it cannot take."""


@dataclass(frozen=True)
class LoadSetting:
    """A fixed load instead of the simulated household: active power, power factor, phase."""

    power_w: float
    power_factor: float = 1.0
    phase: str | None = None  # None: spread over every phase

    @property
    def reactive_var(self) -> float:
        # an inductive load: Q = P·tan(acos(pf)), with the sign of P (export feeds reactive back too)
        return self.power_w * math.tan(math.acos(self.power_factor))


@dataclass(frozen=True)
class WorldState:
    supply: bool = True
    voltages: tuple[float, ...] = (NOMINAL_VOLTAGE, NOMINAL_VOLTAGE, NOMINAL_VOLTAGE)
    load: LoadSetting | None = None  # None: the simulated household
    meter_cover_open: bool = False
    terminal_cover_open: bool = False
    magnet: bool = False
    battery_ok: bool = True
    button_presses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUTTONS, 0))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["voltages"] = list(self.voltages)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorldState:
        load = data.get("load")
        return cls(bool(data.get("supply", True)), tuple(float(v) for v in data.get("voltages", cls().voltages)),
                   LoadSetting(**load) if load else None, bool(data.get("meter_cover_open", False)),
                   bool(data.get("terminal_cover_open", False)), bool(data.get("magnet", False)),
                   bool(data.get("battery_ok", True)),
                   {b: int(data.get("button_presses", {}).get(b, 0)) for b in BUTTONS})


@dataclass(frozen=True)
class WorldChange:
    """One input that changed: its name, the state before and after, and details (button, long press)."""

    input: str
    before: WorldState
    after: WorldState
    detail: dict[str, Any] = field(default_factory=dict)


def _on_off(value: str, on: str, off: str) -> bool:
    if value == on:
        return True
    if value == off:
        return False
    raise WorldInputError(f"expected {on} or {off}, not {value!r}")


def _number(text: Any, what: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise WorldInputError(f"{what} must be a number, not {text!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise WorldInputError(f"{what} must be between {low:g} and {high:g}, not {text}")
    return value


def apply_input(state: WorldState, phases: int, name: str, args: dict[str, Any]) -> WorldChange:
    """The state after one `sim` input, or WorldInputError (and nothing changes)."""
    value = args.get("value")
    detail: dict[str, Any] = {}
    if name == "supply":
        after = replace(state, supply=_on_off(value, "on", "off"))
    elif name == "voltage":
        phase = args.get("phase")
        if phase not in PHASES[:phases]:
            raise WorldInputError(f"this meter has phase{'s' if phases > 1 else ''} {', '.join(PHASES[:phases])}, "
                                  f"not {phase!r}")
        volts = list(state.voltages)
        volts[PHASES.index(phase)] = _number(value, "the voltage", 0, MAX_VOLTAGE)
        after = replace(state, voltages=tuple(volts))
        detail = {"phase": phase}
    elif name == "load":
        if value == "household":
            after = replace(state, load=None)
        else:
            power = _number(args.get("power"), "the power in W", -MAX_LOAD_W, MAX_LOAD_W)
            pf = _number(args.get("pf", 1.0), "the power factor", 0.0, 1.0)
            phase = args.get("phase")
            if phase is not None and phase not in PHASES[:phases]:
                raise WorldInputError(f"this meter has phase{'s' if phases > 1 else ''} {', '.join(PHASES[:phases])}, "
                                      f"not {phase!r}")
            if pf == 0.0 and power != 0.0:
                raise WorldInputError("a power factor of 0 carries no active power; give one above 0")
            after = replace(state, load=LoadSetting(power, pf, phase))
    elif name == "cover":
        after = replace(state, meter_cover_open=_on_off(value, "open", "close"))
    elif name == "terminal-cover":
        after = replace(state, terminal_cover_open=_on_off(value, "open", "close"))
    elif name == "magnet":
        after = replace(state, magnet=_on_off(value, "on", "off"))
    elif name == "battery":
        after = replace(state, battery_ok=_on_off(value, "ok", "exhausted"))
    elif name == "button":
        if value not in BUTTONS:
            raise WorldInputError(f"the meter has buttons {' and '.join(BUTTONS)}, not {value!r}")
        presses = dict(state.button_presses)
        presses[value] += 1
        after = replace(state, button_presses=presses)
        detail = {"button": value, "long": bool(args.get("long", False))}
    else:
        raise WorldInputError(f"no input {name!r}; the inputs are supply, voltage, load, cover, terminal-cover, "
                              "magnet, button, battery")
    return WorldChange(name, state, after, detail)


class PhysicalWorld:
    """The world's state, kept in the meter's store; `change` applies one input and says what changed."""

    STORE_KEY = "world"

    def __init__(self, store, phases: int) -> None:
        self._store = store
        self.phases = phases
        saved = store.get(self.STORE_KEY)
        try:
            self.state = WorldState.from_json(saved) if saved else WorldState()
        except (TypeError, ValueError, KeyError):
            self.state = WorldState()  # an unreadable world is the normal one

    def change(self, name: str, args: dict[str, Any]) -> WorldChange:
        change = apply_input(self.state, self.phases, name, args)
        self._store.put(self.STORE_KEY, change.after.to_json())
        self.state = change.after
        return change

    def status(self) -> dict[str, Any]:
        s = self.state
        return {
            "supply": "on" if s.supply else "off",
            "voltages": {p: v for p, v in zip(PHASES[:self.phases], s.voltages)},
            "load": "household" if s.load is None else {"power_w": s.load.power_w, "pf": s.load.power_factor,
                                                         "phase": s.load.phase or "all"},
            "cover": "open" if s.meter_cover_open else "closed",
            "terminal_cover": "open" if s.terminal_cover_open else "closed",
            "magnet": "on" if s.magnet else "off",
            "battery": "ok" if s.battery_ok else "exhausted",
            "button_presses": dict(s.button_presses),
        }
