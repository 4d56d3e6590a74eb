"""Errors and alarms (companion standard §9, IDIS package 2 §7.3.2): the Error Register,
Alarm Registers 1..3, their Alarm Filters and Alarm Descriptors, as one engine.

Causes come in by flag name (the bit map is data: `cosem/model/alarms.toml`):

- `condition(flag, active)`: a root cause that lasts (a cover open, a memory error);
- `raise_flag(flag)`: a cause that happens once (power up, an authentication failure);
- `fatal(bits)`: the Fatal Error Register's value; any bit gained is a measurement system error.

What each register does with them (docs/decisions.md, "Errors and alarms"):

- Error Register (Alarm Register 1's flags): a bit is set when its cause occurs and reset
  when the cause ends; a `latched` flag (fraud attempt) and a one-shot cause stay until an
  external clear. A clear resets the written bits except those whose cause is still active.
- Alarm Register n: a bit is set at every occurrence and stays until an external clear.
- Alarm Descriptor n: the bits of the occurrences that the Alarm Filter lets through
  (filter bit 1 = notify); it stays until the head-end clears it, and while it is not zero the
  alarm is repeated every 10 minutes (`due_realarms`).

Writes of the three kinds of register clear the bits written as 1 (IDIS: the head-end writes
back the value it read); a clear of the Error Register that resets a bit logs event 10, of an
Alarm Register event 11, through `on_event(code, context)`.

All state is one document in the meter's store, written once per change before anyone is
told about the change, so a bit that was set and reported survives a kill at any instant.
Time is an argument (`due_realarms(now)`), never read here.
"""
from __future__ import annotations

import logging
import threading
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext, expect
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.errors import SmartmeterError
from smartmeter.meter.store import MeterStore

log = logging.getLogger(__name__)

REGISTERS = (1, 2, 3)
REGISTER_MAX = 0xFFFFFFFF  # double-long-unsigned
REALARM_PERIOD = 600.0  # companion §9.1: repeated every 10 minutes until the descriptor is cleared
REALARM_RETRY = 60.0  # s: an On Alarm push built but not sent is built again no sooner
EVENT_ERROR_REGISTER_CLEARED = 10
EVENT_ALARM_REGISTER_CLEARED = 11
MEASUREMENT_SYSTEM_ERROR = "measurement_system_error"  # the flag every fatal error raises (§9.2)
STORE_KEY = "alarms.state"


class AlarmMapError(SmartmeterError):
    """The bit map file is inconsistent (two flags on one bit, a bit out of range, ...)."""


class AlarmStoreError(SmartmeterError):
    """The stored alarm state is not one this meter wrote (edited or damaged outside it)."""


@dataclass(frozen=True)
class Flag:
    name: str
    register: int  # 1..3; register 1's flags are also the Error Register's
    bit: int
    description: str = ""
    latched: bool = False  # reset only by an external clear, also in the Error Register
    notify: bool = True  # in the default Alarm Filter
    events: tuple[int, ...] = ()

    @property
    def mask(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True)
class AlarmBitmap:
    """Which flag is which bit of which alarm register."""

    flags: dict[str, Flag]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "AlarmBitmap":
        """The meter's bit map (`cosem/model/alarms.toml`), or the file at `path`."""
        if path is None:
            text = resources.files("smartmeter.cosem.model").joinpath("alarms.toml").read_text()
        else:
            text = Path(path).read_text()
        return cls.from_toml(tomllib.loads(text))

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> "AlarmBitmap":
        flags: dict[str, Flag] = {}
        bits_seen: dict[tuple[int, int], str] = {}
        for entry in doc.get("flag", []):
            try:
                flag = Flag(str(entry["name"]), entry["register"], entry["bit"], str(entry.get("description", "")),
                            entry.get("latched", False), entry.get("notify", True), tuple(entry.get("events", ())))
            except KeyError as missing:
                raise AlarmMapError(f"flag {entry.get('name', '?')}: {missing} is missing") from None
            where = f"flag {flag.name}"
            if flag.register not in REGISTERS or type(flag.register) is not int:
                raise AlarmMapError(f"{where}: register must be 1, 2 or 3")
            if type(flag.bit) is not int or not 0 <= flag.bit <= 31:
                raise AlarmMapError(f"{where}: bit must be 0..31")
            if not isinstance(flag.latched, bool) or not isinstance(flag.notify, bool):
                raise AlarmMapError(f"{where}: latched and notify are true or false")
            if flag.name in flags:
                raise AlarmMapError(f"{where}: the name is used twice")
            other = bits_seen.setdefault((flag.register, flag.bit), flag.name)
            if other != flag.name:
                raise AlarmMapError(f"{where}: register {flag.register} bit {flag.bit} is already {other}")
            flags[flag.name] = flag
        if flags.get(MEASUREMENT_SYSTEM_ERROR, Flag("", 0, 0)).register != 1:
            raise AlarmMapError(f"Alarm Register 1 needs the flag {MEASUREMENT_SYSTEM_ERROR} (fatal errors raise it)")
        return cls(flags)

    def flag(self, name: str) -> Flag:
        """The flag called `name`; an unknown name is a programming error (KeyError)."""
        try:
            return self.flags[name]
        except KeyError:
            raise KeyError(f"no alarm flag {name!r} in the bit map") from None

    def defined(self, register: int) -> int:
        """The bits of `register` that have a flag."""
        return _mask(f for f in self.flags.values() if f.register == register)

    def default_filter(self, register: int) -> int:
        return _mask(f for f in self.flags.values() if f.register == register and f.notify)

    def names(self, register: int, bits: int) -> list[str]:
        """The flags of `register` set in `bits`, by bit number."""
        return [f.name for f in sorted(self.flags.values(), key=lambda f: f.bit)
                if f.register == register and bits & f.mask]


def _mask(flags) -> int:
    result = 0
    for f in flags:
        result |= f.mask
    return result


@dataclass
class _State:
    """Everything that must survive a restart, written as one document."""

    error: int = 0
    alarm: list[int] = field(default_factory=lambda: [0, 0, 0])
    filter: list[int] = field(default_factory=lambda: [0, 0, 0])
    descriptor: list[int] = field(default_factory=lambda: [0, 0, 0])
    active: set[str] = field(default_factory=set)  # flags whose root cause is active now
    fatal: int = 0  # the Fatal Error Register's value last reported

    def copy(self) -> "_State":
        return _State(self.error, list(self.alarm), list(self.filter), list(self.descriptor), set(self.active), self.fatal)

    def to_json(self) -> dict:
        return {"error": self.error, "alarm": self.alarm, "filter": self.filter, "descriptor": self.descriptor,
                "active": sorted(self.active), "fatal": self.fatal}

    @classmethod
    def from_json(cls, doc: Any, bitmap: AlarmBitmap) -> "_State":
        def word(v: Any) -> int:
            if type(v) is not int or not 0 <= v <= REGISTER_MAX:
                raise AlarmStoreError(f"stored alarm state has {v!r} where a 32-bit register value belongs")
            return v

        def words(v: Any) -> list[int]:
            if not isinstance(v, list) or len(v) != len(REGISTERS):
                raise AlarmStoreError("stored alarm state: a register list is not three values")
            return [word(x) for x in v]

        if not isinstance(doc, dict) or not {"error", "alarm", "filter", "descriptor", "active", "fatal"} <= set(doc):
            raise AlarmStoreError("stored alarm state is not a document this meter wrote")
        active = doc["active"]
        if not isinstance(active, list) or not all(isinstance(n, str) for n in active):
            raise AlarmStoreError("stored alarm state: active causes are not a list of flag names")
        # a flag a later bit map no longer has cannot be active any more
        return cls(word(doc["error"]), words(doc["alarm"]), words(doc["filter"]), words(doc["descriptor"]),
                   {n for n in active if n in bitmap.flags}, word(doc["fatal"]))


@dataclass(frozen=True)
class Realarm:
    """A descriptor the On Alarm push must carry again."""

    register: int
    descriptor: int


def _register_value(value: int) -> int:
    if type(value) is not int or not 0 <= value <= REGISTER_MAX:
        raise ValueError(f"a register value is 0..{REGISTER_MAX}, not {value!r}")
    return value


def _register_number(register: int) -> int:
    if register not in REGISTERS:
        raise ValueError(f"alarm registers are numbered 1..3, not {register!r}")
    return register


class AlarmBoard:
    """The error register, three alarm registers with filters and descriptors, durable."""

    def __init__(self, store: MeterStore, bitmap: AlarmBitmap, on_event: Callable[[int, dict], None],
                 on_alarm: Callable[[int, int], None] | None = None,
                 on_descriptor_change: Callable[[int, int], None] | None = None) -> None:
        """`on_event(code, context)` logs event 10 or 11; `on_alarm(register, new_bits)` is told
        when a descriptor gains bits; `on_descriptor_change(register, value)` after every change
        of a descriptor (gains and clears), for the alarm monitors."""
        self.store = store
        self.bitmap = bitmap
        self.on_event = on_event
        self.on_alarm = on_alarm or (lambda register, bits: None)
        self.on_descriptor_change = on_descriptor_change or (lambda register, value: None)
        self._lock = threading.RLock()
        stored = store.get(STORE_KEY)
        if stored is None:
            self._state = _State(filter=[bitmap.default_filter(n) for n in REGISTERS])
        else:
            self._state = _State.from_json(stored, bitmap)
        # what the last On Alarm push carried, and when; kept in memory only: after a start
        # every non-zero descriptor is due at once (the push before the stop may have been lost)
        self._pushed = [0, 0, 0]
        self._last_push: float | None = None
        self._last_refusal: float | None = None  # of an On Alarm push built but not sent

    # -- reading -----------------------------------------------------------------------------
    @property
    def error_register(self) -> int:
        return self._state.error

    def alarm_register(self, register: int) -> int:
        return self._state.alarm[_register_number(register) - 1]

    def filter(self, register: int) -> int:
        return self._state.filter[_register_number(register) - 1]

    def descriptor(self, register: int) -> int:
        return self._state.descriptor[_register_number(register) - 1]

    def active(self) -> frozenset[str]:
        """The flags whose root cause is active now."""
        return frozenset(self._state.active)

    # -- causes ------------------------------------------------------------------------------
    def condition(self, flag: str, active: bool) -> None:
        """A root cause starts (`active`) or ends. Reporting the state it already has changes
        nothing, so a cause may report its state again after a start."""
        f = self.bitmap.flag(flag)
        with self._lock:
            state = self._state.copy()
            if (f.name in state.active) == bool(active):
                return
            notes: list = []
            if active:
                state.active.add(f.name)
                self._occur(state, f, notes)
            else:
                state.active.discard(f.name)
                if f.register == 1 and not f.latched and not self._cause_holds(state, f):
                    state.error &= ~f.mask
            self._commit(state)
        self._tell(notes)

    def raise_flag(self, flag: str) -> None:
        """A cause that happens once. In the Error Register its bit stays until a clear, since
        no end of the cause will reset it."""
        f = self.bitmap.flag(flag)
        with self._lock:
            state = self._state.copy()
            notes: list = []
            self._occur(state, f, notes)
            self._commit(state)
        self._tell(notes)

    def fatal(self, bits: int) -> None:
        """The Fatal Error Register's value (0-0:97.97.128.255). Every bit it gains is an
        occurrence of the measurement system error; that error stays in the Error Register
        while any fatal bit is set (they are reset only by breaking the seal)."""
        _register_value(bits)
        f = self.bitmap.flag(MEASUREMENT_SYSTEM_ERROR)
        with self._lock:
            state = self._state.copy()
            if bits == state.fatal:
                return
            gained = bits & ~state.fatal
            state.fatal = bits
            notes: list = []
            if gained:
                self._occur(state, f, notes)
            elif not self._cause_holds(state, f):
                state.error &= ~f.mask
            self._commit(state)
        self._tell(notes)

    # -- external commands -------------------------------------------------------------------
    def clear_error_register(self, bits: int, context: dict | None = None) -> int:
        """Reset the written bits, except those whose root cause is still active (the error is
        still there). Logs event 10 when a bit was reset. Returns the bits reset."""
        _register_value(bits)
        with self._lock:
            state = self._state.copy()
            keep = _mask(f for f in self.bitmap.flags.values() if f.register == 1 and self._cause_holds(state, f))
            cleared = state.error & bits & ~keep
            if not cleared:
                return 0
            state.error &= ~cleared
            self._commit(state)
        self._tell([("event", EVENT_ERROR_REGISTER_CLEARED,
                     dict(context or {}, register="error_register", cleared=cleared))])
        return cleared

    def clear_alarm_register(self, register: int, bits: int, context: dict | None = None) -> int:
        """Reset the written bits; a cause still active sets its bit again only when it occurs
        again. Logs event 11 when a bit was reset. Returns the bits reset."""
        index = _register_number(register) - 1
        _register_value(bits)
        with self._lock:
            state = self._state.copy()
            cleared = state.alarm[index] & bits
            if not cleared:
                return 0
            state.alarm[index] &= ~cleared
            self._commit(state)
        self._tell([("event", EVENT_ALARM_REGISTER_CLEARED,
                     dict(context or {}, register=f"alarm_register_{register}", cleared=cleared))])
        return cleared

    def clear_descriptor(self, register: int, bits: int) -> int:
        """The head-end's acknowledgement: reset the written bits. Returns the bits reset."""
        index = _register_number(register) - 1
        _register_value(bits)
        with self._lock:
            state = self._state.copy()
            cleared = state.descriptor[index] & bits
            if not cleared:
                return 0
            state.descriptor[index] &= ~cleared
            self._commit(state)
            value = state.descriptor[index]
        self._tell([("descriptor", register, value)])
        return cleared

    def set_filter(self, register: int, value: int) -> None:
        """Which bits of the register notify (1 = notify). Applies to occurrences from now on."""
        index = _register_number(register) - 1
        _register_value(value)
        with self._lock:
            if self._state.filter[index] == value:
                return
            state = self._state.copy()
            state.filter[index] = value
            self._commit(state)

    # -- repetition (sans-io: the push function sends, this says when) ----------------------
    def due_realarms(self, now: float) -> list[Realarm]:
        """The non-zero descriptors, when the On Alarm push is due: never pushed since the
        start, a bit not yet pushed, or 10 minutes since the last push; and not within a minute
        after a push that was built but not sent. Empty otherwise."""
        with self._lock:
            due = [Realarm(n, d) for n, d in zip(REGISTERS, self._state.descriptor) if d]
            if not due:
                return []
            if self._last_refusal is not None and 0 <= now - self._last_refusal < REALARM_RETRY:
                return []
            unsent = any(r.descriptor & ~self._pushed[r.register - 1] for r in due)
            if self._last_push is None or unsent or now - self._last_push >= REALARM_PERIOD:
                return due
            return []

    def alarm_pushed(self, now: float) -> None:
        """The On Alarm push (carrying all three descriptors) went out at `now`."""
        with self._lock:
            self._pushed = list(self._state.descriptor)
            self._last_push = now
            self._last_refusal = None

    def alarm_push_refused(self, now: float) -> None:
        """The On Alarm push built at `now` was not sent (the sender refused it, or it failed):
        not due again before REALARM_RETRY; its 10 minutes still run from the last push sent."""
        with self._lock:
            self._last_refusal = now

    # -- the COSEM objects ---------------------------------------------------------------------
    def bindings(self) -> dict[str, Binding]:
        """The values of the alarm objects (IC 1, double-long-unsigned), by the names the model uses."""
        result = {
            "alarms.error_register": Binding(lambda: Data.double_long_unsigned(self.error_register),
                                             set_with_context=self._write_error_register),
        }
        for n in REGISTERS:
            result[f"alarms.alarm_register_{n}"] = Binding(
                lambda n=n: Data.double_long_unsigned(self.alarm_register(n)),
                set_with_context=lambda value, ctx, n=n: self.clear_alarm_register(n, _written(value), _who(ctx)))
            result[f"alarms.filter_{n}"] = Binding(
                lambda n=n: Data.double_long_unsigned(self.filter(n)),
                lambda value, n=n: self.set_filter(n, _written(value)))
            result[f"alarms.descriptor_{n}"] = Binding(
                lambda n=n: Data.double_long_unsigned(self.descriptor(n)),
                lambda value, n=n: self.clear_descriptor(n, _written(value)))
        return result

    def _write_error_register(self, value: Data, ctx: RequestContext) -> None:
        self.clear_error_register(_written(value), _who(ctx))

    # -- inside --------------------------------------------------------------------------------
    def _cause_holds(self, state: _State, f: Flag) -> bool:
        return f.name in state.active or (f.name == MEASUREMENT_SYSTEM_ERROR and state.fatal != 0)

    def _occur(self, state: _State, f: Flag, notes: list) -> None:
        """One occurrence of the flag's cause: the registers' bits, and the descriptor's if the
        filter lets it through (every occurrence, so one after an acknowledgement alarms again)."""
        index = f.register - 1
        state.alarm[index] |= f.mask
        if f.register == 1:
            state.error |= f.mask
        if state.filter[index] & f.mask and not state.descriptor[index] & f.mask:
            state.descriptor[index] |= f.mask
            notes.append(("descriptor", f.register, state.descriptor[index]))
            notes.append(("alarm", f.register, f.mask))

    def _commit(self, state: _State) -> None:
        # durable first: nobody hears of a change that a kill could still undo
        self.store.put(STORE_KEY, state.to_json())
        self._state = state

    def _tell(self, notes: list) -> None:
        for kind, first, second in notes:
            try:
                if kind == "event":
                    self.on_event(first, second)
                elif kind == "descriptor":
                    self.on_descriptor_change(first, second)
                else:
                    self.on_alarm(first, second)
            except Exception:
                # the change is stored; a failing listener must not stop the others (the
                # descriptor stays set, so the repetition brings the alarm again)
                log.exception("alarm listener failed on %s %s %s", kind, first, second)


def _written(value: Data) -> int:
    """The register value a SET carries: double-long-unsigned, in range."""
    raw = expect(value, DataType.DOUBLE_LONG_UNSIGNED)
    if type(raw) is not int or not 0 <= raw <= REGISTER_MAX:
        raise CosemAccessError(DataAccessResult.OTHER_REASON, f"a register value is 0..{REGISTER_MAX}")
    return raw


def _who(ctx: RequestContext) -> dict:
    """Who cleared, for the security event log (client SAP, system title)."""
    association = getattr(ctx, "association", None)
    title = getattr(association, "requester_system_title", None) if association is not None else None
    return {"client": ctx.client_name, "client_sap": ctx.client_sap, "system_title": title,
            "server_sap": getattr(association, "server_sap", None)}
