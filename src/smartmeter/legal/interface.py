"""The protective software interface: the only door into the legally relevant part.

Callers outside `smartmeter.legal` hand `LegalInterface.execute` one of the command
objects declared here and get a copy of the result (frozen snapshots, tuples), never a
reference to legally relevant state. Anything that is not a declared command is refused
and counted; the count is itself legally relevant and readable.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from smartmeter.legal import storage
from smartmeter.legal.demand import DEMAND_PERIOD, DemandRegisters, DemandState, DemandValue, MaximumDemand
from smartmeter.legal.registers import MILLI, REGISTER_NAMES, EnergyRegisters, EnergySnapshot

LOAD_PROFILE_1 = "lp1"
LOAD_PROFILE_1_CAPACITY = 5760  # companion standard §5.7: exactly 5760 entries (60 days)


class CommandRefused(Exception):
    """The protective interface refused a command: undeclared, unauthorised or not possible now."""


class LegalProcessDown(Exception):
    """The legally relevant part is not running (or could not start): nothing can be read or changed."""


@dataclass(frozen=True, slots=True)
class ProfileRow:
    capture_time: int  # UTC seconds
    status: int
    a_plus: int
    a_minus: int
    r_plus: int
    r_minus: int


# -- the declared commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadEnergyRegisters:
    """-> EnergySnapshot of +A, -A, +R, -R in whole Wh / varh."""


@dataclass(frozen=True, slots=True)
class ReadLoadProfile:
    """-> tuple[ProfileRow, ...] with from_time <= capture_time <= to_time (bounds optional)."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class CountLoadProfileEntries:
    """-> int: entries in use of load profile 1."""


@dataclass(frozen=True, slots=True)
class EndMeasurementPeriod:
    """-> ProfileRow: at a 15-minute boundary, capture load profile 1 and close the demand
    period, in one transaction."""

    capture_time: int
    status: int = 0


@dataclass(frozen=True, slots=True)
class StartDemandPeriod:
    """At power-up: a running demand period begins now (an interrupted one is not completed)."""

    now: int


@dataclass(frozen=True, slots=True)
class ReadDemand:
    """-> DemandValue of one register ("a_plus", "a_minus", "r_plus", "r_minus"), W or var."""

    register: str


@dataclass(frozen=True, slots=True)
class ReadMaximumDemand:
    """-> MaximumDemand of one register: maximum of the billing period, its time, and the cumulative maximum."""

    register: str


@dataclass(frozen=True, slots=True)
class ResetMaximumDemand:
    """End of a billing period: the maximum of one register (or of all, register None) is added
    to its cumulative maximum and restarts at 0 with capture time now."""

    now: int
    register: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterSimulatedPower:
    """Demo measurement input until the sample-based sensor is connected: power over an interval."""

    active_w: float
    reactive_var: float
    seconds: float


@dataclass(frozen=True, slots=True)
class IsFreshMeter:
    """-> bool: nothing registered and nothing captured yet (first start)."""


@dataclass(frozen=True, slots=True)
class BackfillDemoHistory:
    """First start only: seed load profile 1 with a simulated history; registers follow its last row."""

    rows: tuple[ProfileRow, ...]


@dataclass(frozen=True, slots=True)
class Persist:
    """Write the registers to the non-volatile store now (the meter does it at least every second)."""


@dataclass(frozen=True, slots=True)
class ReadRefusedCommandCount:
    """-> int: how many undeclared or refused commands reached the interface since first start."""


# Plain records that may travel inside commands (see legal/process.py)
RECORD_TYPES = (ProfileRow,)


class LegalInterface:
    """Typed commands into the legally relevant part. Thread-safe: metrology and the
    communication side may call from different threads."""

    def __init__(self, data_dir: Path) -> None:
        self._db = storage.open_store(Path(data_dir))
        self._lock = threading.RLock()
        rows = dict(self._db.execute("SELECT name, milli_units FROM energy_register").fetchall())
        self._registers = EnergyRegisters(rows)
        self._unsaved = False
        row = self._db.execute("SELECT value FROM meta WHERE key = 'demand'").fetchone()
        self._demand = DemandRegisters(DemandState.from_json(json.loads(row[0])) if row else DemandState())
        self._handlers: dict[type, Callable[[Any], Any]] = {
            ReadEnergyRegisters: self._read_energy,
            ReadLoadProfile: self._read_load_profile,
            CountLoadProfileEntries: self._count_load_profile,
            EndMeasurementPeriod: self._end_period,
            StartDemandPeriod: self._start_demand,
            ReadDemand: self._read_demand,
            ReadMaximumDemand: self._read_maximum_demand,
            ResetMaximumDemand: self._reset_maximum_demand,
            RegisterSimulatedPower: self._register_power,
            IsFreshMeter: self._is_fresh,
            BackfillDemoHistory: self._backfill,
            Persist: self._persist,
            ReadRefusedCommandCount: self._refused_count,
        }

    @property
    def commands(self) -> tuple[type, ...]:
        """The declared commands: the complete list (documented in docs/welmec/protective-interface.md)."""
        return tuple(self._handlers)

    def execute(self, command: object) -> Any:
        """Run one declared command; anything else is refused, counted, and changes nothing."""
        handler = self._handlers.get(type(command))
        if handler is None:
            self.count_refusal()
            raise CommandRefused(f"{type(command).__name__} is not a command of the protective interface")
        with self._lock:
            return handler(command)

    def count_refusal(self) -> None:
        """Count one refused command (persistently)."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('refused_commands', '1') ON CONFLICT(key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    def _refused_count(self, _: ReadRefusedCommandCount) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'refused_commands'").fetchone()
        return int(row[0]) if row else 0

    # -- measurement input ------------------------------------------------------------------
    def _register_power(self, cmd: RegisterSimulatedPower) -> None:
        self._registers.accumulate(
            round(cmd.active_w * cmd.seconds * MILLI / 3600), round(cmd.reactive_var * cmd.seconds * MILLI / 3600)
        )
        self._unsaved = True

    def _persist(self, _: Persist) -> None:
        if self._unsaved:
            self._write_registers()
            self._unsaved = False

    def _write_registers(self) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO energy_register(name, milli_units) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET milli_units = excluded.milli_units",
                sorted(self._registers.milli_units().items()),
            )

    # -- registers and profile --------------------------------------------------------------
    def _read_energy(self, _: ReadEnergyRegisters) -> EnergySnapshot:
        return self._registers.snapshot()

    def _end_period(self, cmd: EndMeasurementPeriod) -> ProfileRow:
        snap = self._registers.snapshot()
        row = ProfileRow(cmd.capture_time, cmd.status, snap.a_plus, snap.a_minus, snap.r_plus, snap.r_minus)
        self._demand.close_period(cmd.capture_time, self._registers.milli_units())
        with self._db:
            self._write_registers()
            self._insert_rows([row])
            self._write_demand()
        self._unsaved = False
        return row

    # -- demand -----------------------------------------------------------------------------
    def _write_demand(self) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES ('demand', ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (json.dumps(self._demand.state.to_json()),))

    def _start_demand(self, cmd: StartDemandPeriod) -> None:
        self._demand.start(cmd.now, self._registers.milli_units())
        with self._db:
            self._write_demand()

    def _register_name(self, name: str) -> str:
        if name not in REGISTER_NAMES:
            raise CommandRefused(f"no register {name!r}; one of {', '.join(REGISTER_NAMES)}")
        return name

    def _read_demand(self, cmd: ReadDemand) -> DemandValue:
        return self._demand.demand(self._register_name(cmd.register), self._registers.milli_units())

    def _read_maximum_demand(self, cmd: ReadMaximumDemand) -> MaximumDemand:
        return self._demand.maximum(self._register_name(cmd.register))

    def _reset_maximum_demand(self, cmd: ResetMaximumDemand) -> None:
        names = REGISTER_NAMES if cmd.register is None else (self._register_name(cmd.register),)
        self._demand.reset_maximum(cmd.now, names)
        with self._db:
            self._write_demand()

    def _insert_rows(self, rows: list[ProfileRow]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO load_profile VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(LOAD_PROFILE_1, r.capture_time, r.status, r.a_plus, r.a_minus, r.r_plus, r.r_minus) for r in rows],
        )
        self._db.execute(
            "DELETE FROM load_profile WHERE profile = ? AND capture_time NOT IN "
            "(SELECT capture_time FROM load_profile WHERE profile = ? ORDER BY capture_time DESC LIMIT ?)",
            (LOAD_PROFILE_1, LOAD_PROFILE_1, LOAD_PROFILE_1_CAPACITY),
        )

    def _count_load_profile(self, _: CountLoadProfileEntries) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM load_profile WHERE profile = ?", (LOAD_PROFILE_1,)).fetchone()
        return n

    def _read_load_profile(self, cmd: ReadLoadProfile) -> tuple[ProfileRow, ...]:
        query = "SELECT capture_time, status, a_plus, a_minus, r_plus, r_minus FROM load_profile WHERE profile = ?"
        args: list = [LOAD_PROFILE_1]
        if cmd.from_time is not None:
            query += " AND capture_time >= ?"
            args.append(cmd.from_time)
        if cmd.to_time is not None:
            query += " AND capture_time <= ?"
            args.append(cmd.to_time)
        return tuple(ProfileRow(*r) for r in self._db.execute(query + " ORDER BY capture_time", args))

    def _is_fresh(self, _: IsFreshMeter | None = None) -> bool:
        return self._db.execute("SELECT 1 FROM load_profile LIMIT 1").fetchone() is None and not any(
            self._registers.milli_units().values()
        )

    def _backfill(self, cmd: BackfillDemoHistory) -> None:
        if not self._is_fresh() or not cmd.rows:
            raise CommandRefused("demo history can only be back-filled into an empty meter")
        last = cmd.rows[-1]
        self._registers = EnergyRegisters({name: getattr(last, name) * MILLI for name in REGISTER_NAMES})
        with self._db:
            self._write_registers()
            self._insert_rows(list(cmd.rows))

    def start(self) -> None:
        """Start what runs on its own inside the legal part (metrology, once connected)."""

    def close(self) -> None:
        with self._lock:
            self._persist(Persist())
            self._db.close()


def start_legal_process(data_dir: Path, options: dict | None = None):
    """Run the legal part in its own process; returns a client with the same `execute`."""
    from smartmeter.legal.process import LegalProcessClient

    return LegalProcessClient(Path(data_dir), options)
