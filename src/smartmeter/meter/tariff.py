"""Time of use (companion standard §5.5, IDIS package 2 §6.2): which tariff is in force, when it
changes, and the tariff activation event log.

The tariff is a function of the meter's time: the activity calendar (0-0:13.0.0.255) and the
special days (0-0:11.0.0.255) say which script of the tariff script table (0-0:10.0.100.255)
is in force at any instant (`tariff_calendar.action_at`); while the clock is invalid the default
tariffication script (0-0:96.14.15.255) is. `TariffEngine.at(t)` runs that script whenever it
differs from the one last run: at each switching time (the registration splits its steps there,
`next_change`), after a power failure, a clock change or a new calendar alike. A script writes
the active mask of the register activation objects; the energy register activation
(0-0:14.0.1.255) calls `on_energy_mask`, which tells the legally relevant part which rate each
quantity registers into from now on, and logs the change.
"""
from __future__ import annotations

import logging
from typing import Callable
from zoneinfo import ZoneInfo

from smartmeter.cosem.classes.base import CosemAccessError, expect
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.legal import interface as legal
from smartmeter.meter import tariff_calendar
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

SCRIPT_TABLE_CLASS = 9
ACTIVITY_CALENDAR = (20, Obis.parse("0-0:13.0.0.255").to_bytes())
SPECIAL_DAYS = (11, Obis.parse("0-0:11.0.0.255").to_bytes())
ENERGY_ACTIVATION = (6, Obis.parse("0-0:14.0.1.255").to_bytes())
TARIFF_SCRIPTS = Obis.parse("0-0:10.0.100.255").to_bytes()
DEFAULT_SCRIPT_KEY = "tariff.default_script"
LAST_SCRIPT_KEY = "tariff.last_script"
LOG_KEY = "tariff.activation_log"
LOG_CAPACITY = 100  # entries of the tariff activation event log (companion §5.5: at least 30)
ENERGY_QUANTITIES = (1, 2, 3, 4)  # OBIS C of +A, -A, +R, -R, in the order of legal.REGISTER_NAMES


def rates_of(registers: tuple[tuple[int, bytes], ...]) -> tuple[int, ...]:
    """The rate each quantity registers into when `registers` (class id, logical name) are the
    active ones: 1-0:C.8.E.255 makes rate E of quantity C active; a quantity without one: 0."""
    rates = dict.fromkeys(ENERGY_QUANTITIES, 0)
    for class_id, ln in registers:
        o = Obis.from_bytes(ln)
        if class_id == 3 and (o.a, o.b, o.d, o.f) == (1, 0, 8, 255) and o.c in rates and o.e in legal.RATES:
            rates[o.c] = o.e
    return tuple(rates[c] for c in ENERGY_QUANTITIES)


class TariffEngine:
    def __init__(self, directory, store, zone: ZoneInfo, legal_part, clock, run_script: Callable[[bytes, int], None],
                 clock_invalid: Callable[[], bool]) -> None:
        self.directory, self.store, self.zone, self.legal, self.clock = directory, store, zone, legal_part, clock
        self._run_script = run_script
        self._clock_invalid = clock_invalid
        self._say = RateLimitedLog(log)
        self._switching_at: float | None = None  # the meter time of the switch being made

    def _object(self, key: tuple[int, bytes]):
        found = self.directory.find(*key)
        return None if found is None else found[1]

    def _calendar(self):
        return self._object(ACTIVITY_CALENDAR)

    def _special_days(self) -> tuple:
        table = self._object(SPECIAL_DAYS)
        return () if table is None else table.special_days()

    # -- when ----------------------------------------------------------------------------------
    def next_change(self, start: float, end: float) -> float | None:
        """The first instant in (start, end] at which the tariff may change: a switching time of
        the active calendar or the passive calendar's activation."""
        calendar = self._calendar()
        if calendar is None:
            return None
        candidates = []
        activation = calendar.activation_instant(self.zone)
        if activation is not None and start < activation <= end:
            candidates.append(activation)
        upto = min(candidates) if candidates else end
        first = next(iter(tariff_calendar.switches(calendar.calendar(), self._special_days(), self.zone, start, upto)),
                     None)
        if first is not None:
            candidates.append(first[0])
        return min(candidates) if candidates else None

    def wanted(self, now: float) -> tuple[bytes, int] | None:
        """The script in force at `now`: the calendar's, or the default one while the clock is invalid."""
        if self._clock_invalid():
            return TARIFF_SCRIPTS, self.default_script()
        calendar = self._calendar()
        if calendar is None:
            return None
        action = tariff_calendar.action_at(calendar.calendar(), self._special_days(), self.zone, now)
        if action is None:  # an empty calendar says nothing: the default script is in force
            return TARIFF_SCRIPTS, self.default_script()
        return bytes(action.script_ln), action.selector

    def at(self, now: float) -> None:
        """Bring the tariff to what is in force at `now` (a passive calendar due is activated first)."""
        calendar = self._calendar()
        if calendar is not None:
            try:
                if calendar.activate_if_due(now, self.zone):
                    log.info("passive calendar activated at %s", self.clock.local(now).isoformat(timespec="seconds"))
            except CosemAccessError as exc:
                self._say("tariff.passive_refused", "passive calendar not activated: %s", exc)
        script = self.wanted(now)
        if script is None or list(script) == self._last_script():
            return
        self._switching_at = now
        try:
            self._run_script(*script)
        except Exception as exc:  # noqa: BLE001 - the next change tries again; the meter goes on
            self._say("tariff.script_failed", "tariff script %s/%s failed: %s", Obis.from_bytes(script[0]),
                      script[1], exc)
            return
        finally:
            self._switching_at = None
        self.store.put(LAST_SCRIPT_KEY, [script[0].hex(), script[1]])

    def _last_script(self) -> list | None:
        stored = self.store.get(LAST_SCRIPT_KEY)
        return None if stored is None else [bytes.fromhex(stored[0]), stored[1]]

    # -- which rate ------------------------------------------------------------------------------
    def on_energy_mask(self, mask_name: bytes, registers: tuple[tuple[int, bytes], ...]) -> None:
        """The energy register activation's active mask changed (IC 6 callback): the legal part
        registers into its rates from now on; the change goes into the tariff activation log."""
        try:
            self.legal.execute(legal.SetActiveRates(rates_of(registers)))
        except legal.CommandRefused as exc:  # powered down: the mask stays as it was
            raise CosemAccessError(DataAccessResult.TEMPORARY_FAILURE, str(exc)) from None
        entries = self.store.get(LOG_KEY, [])
        if not entries or entries[-1][1] != mask_name.hex():
            at = self.clock.now() if self._switching_at is None else self._switching_at
            entries = (entries + [[int(at), mask_name.hex()]])[-LOG_CAPACITY:]
            self.store.put(LOG_KEY, entries)

    def rates_at(self, t: float) -> tuple[int, ...] | None:
        """The rates the calendar puts in force at `t`, read from the scripts and masks without
        running anything (for the demo history); None when they cannot be told."""
        script = self.wanted(t)
        table = self.directory.find(SCRIPT_TABLE_CLASS, TARIFF_SCRIPTS)
        activation = self._object(ENERGY_ACTIVATION)
        if script is None or table is None or activation is None:
            return None
        for action in table[1].scripts.get(script[1], ()):
            if (action.class_id, bytes(action.logical_name), action.index) == (*ENERGY_ACTIVATION, 4):
                registers = activation.masks().get(bytes(action.parameter.value))
                return None if registers is None else rates_of(registers)
        return None

    def sync(self) -> None:
        """At start: the legal part registers into the rates of the mask the meter holds."""
        activation = self._object(ENERGY_ACTIVATION)
        if activation is not None:
            self.legal.execute(legal.SetActiveRates(rates_of(activation.active_registers())))

    def active_mask(self) -> Data:
        """Currently active energy tariff (0-0:96.14.0.255): the active mask's name."""
        activation = self._object(ENERGY_ACTIVATION)
        return Data.octet_string(b"" if activation is None else activation.active_mask())

    # -- the default tariffication script ----------------------------------------------------------
    def default_script(self) -> int:
        return int(self.store.get(DEFAULT_SCRIPT_KEY, 1))

    def default_script_data(self) -> Data:
        return Data.long_unsigned(self.default_script())

    def set_default_script(self, value: Data) -> None:
        selector = expect(value, DataType.LONG_UNSIGNED)
        table = self.directory.find(SCRIPT_TABLE_CLASS, TARIFF_SCRIPTS)
        if table is None or selector not in table[1].scripts:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, f"the tariff script table has no script {selector}")
        self.store.put(DEFAULT_SCRIPT_KEY, selector)


class TariffActivationLog:
    """The tariff activation event log (0-0:99.98.11.255) as profile rows: time, active tariff."""

    def __init__(self, store, clock) -> None:
        self.store, self.clock = store, clock

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        return [(self.clock.cosem(t), bytes.fromhex(name)) for t, name in self.store.get(LOG_KEY, [])
                if (from_time is None or t >= from_time) and (to_time is None or t <= to_time)]

    def entries_in_use(self) -> int:
        return len(self.store.get(LOG_KEY, []))

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)
