"""The protective software interface: the only door into the legally relevant part.

Callers outside `smartmeter.legal` use the methods of `LegalInterface` only; they get
copies of values (frozen snapshots, tuples), never a reference to legally relevant state.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from smartmeter.legal import storage
from smartmeter.legal.registers import MILLI, REGISTER_NAMES, EnergyRegisters, EnergySnapshot

LOAD_PROFILE_1 = "lp1"
LOAD_PROFILE_1_CAPACITY = 5760  # companion standard §5.7: exactly 5760 entries (60 days)


@dataclass(frozen=True, slots=True)
class ProfileRow:
    capture_time: int  # UTC seconds
    status: int
    a_plus: int
    a_minus: int
    r_plus: int
    r_minus: int


class LegalInterface:
    """Typed commands into the legally relevant part. Thread-safe: metrology and the
    communication side may call from different threads."""

    def __init__(self, data_dir: Path) -> None:
        self._db = storage.open_store(Path(data_dir))
        self._lock = threading.Lock()
        rows = dict(self._db.execute("SELECT name, milli_units FROM energy_register").fetchall())
        self._registers = EnergyRegisters(rows)
        self._unsaved = False

    # -- measurement input ------------------------------------------------------------
    def register_power(self, active_w: float, reactive_var: float, seconds: float) -> None:
        """Register the energy of a measured interval (power × time), in exact milli-units."""
        with self._lock:
            self._registers.accumulate(
                round(active_w * seconds * MILLI / 3600), round(reactive_var * seconds * MILLI / 3600)
            )
            self._unsaved = True

    def persist(self) -> None:
        """Write registers to the store (called at least once a second by the meter)."""
        with self._lock:
            if not self._unsaved:
                return
            self._write_registers()
            self._unsaved = False

    def _write_registers(self) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO energy_register(name, milli_units) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET milli_units = excluded.milli_units",
                sorted(self._registers.milli_units().items()),
            )

    # -- reads ------------------------------------------------------------------------
    def read_energy(self) -> EnergySnapshot:
        with self._lock:
            return self._registers.snapshot()

    def capture_load_profile(self, capture_time: int, status: int) -> ProfileRow:
        """Append one load-profile entry with the current registers (FIFO at capacity)."""
        with self._lock:
            snap = self._registers.snapshot()
            row = ProfileRow(capture_time, status, snap.a_plus, snap.a_minus, snap.r_plus, snap.r_minus)
            with self._db:
                self._write_registers()
                self._insert_rows([row])
            self._unsaved = False
            return row

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

    def load_profile_entries_in_use(self) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM load_profile WHERE profile = ?", (LOAD_PROFILE_1,)
            ).fetchone()
            return n

    def read_load_profile(
        self, from_time: int | None = None, to_time: int | None = None
    ) -> tuple[ProfileRow, ...]:
        """Entries with from_time <= capture_time <= to_time (bounds optional), oldest first."""
        query = "SELECT capture_time, status, a_plus, a_minus, r_plus, r_minus FROM load_profile WHERE profile = ?"
        args: list = [LOAD_PROFILE_1]
        if from_time is not None:
            query += " AND capture_time >= ?"
            args.append(from_time)
        if to_time is not None:
            query += " AND capture_time <= ?"
            args.append(to_time)
        with self._lock:
            return tuple(ProfileRow(*r) for r in self._db.execute(query + " ORDER BY capture_time", args))

    def is_empty(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM load_profile LIMIT 1").fetchone() is None and not any(
                self._registers.milli_units().values()
            )

    def backfill_history(self, rows: list[ProfileRow]) -> None:
        """First start only: seed the profile with a simulated history and set the registers
        to its last entry. Refused once the meter has registered anything."""
        if not self.is_empty():
            raise PermissionError("history can only be back-filled into an empty meter")
        with self._lock:
            last = rows[-1]
            self._registers = EnergyRegisters(
                {name: getattr(last, name) * MILLI for name in REGISTER_NAMES}
            )
            with self._db:
                self._write_registers()
                self._insert_rows(rows)

    def close(self) -> None:
        self.persist()
        with self._lock:
            self._db.close()
