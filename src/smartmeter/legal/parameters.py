"""Legally relevant parameters, the parameter record number and the certification mode
(WELMEC 7.2 P7/U7; companion standard §5.16 certification support, §5.17 certification
protected event log, 1-0:0.2.1.255 parameter record number).

Two kinds of parameters (WELMEC 7.2 P7):

* **Type-specific** parameters are the same for every meter of the type. They are constants
  in this file, so they are code: covered by the software ID (identification.py) and
  changeable only by a new, re-identified release.
* **Device-specific** legally relevant parameters (calibration factors, meter constant, LED,
  display resolution, remote sensor) are declared in `PARAMETERS` with type, unit and range,
  and kept in the SQLite store (table `legal_parameter`). They are protected by an audit
  trail (P7 acceptable solutions (b) and (c)): a change is possible only while the
  certification mode is active or with the certification authority, every accepted change
  increments the parameter record number (the event counter) and appends one entry per
  parameter to the certification protected log, in the same SQLite transaction as the
  change. A change the log refuses (full) is refused as a whole.

The certification mode (§5.16) lasts at most 12 h of meter operation, measured on a
monotonic clock independent of the RTC; see `CertificationMode` for how it survives a power
failure and the worst case.

The log is injected (anything with ``append(time_utc, event_id, fields)``) and must write
into the same SQLite connection without committing on its own, so that a parameter change
and its log entry are one transaction (see `_transaction`).

The stored parameters are signed like the energy registers (`ParameterSeal`): every write of
`legal_parameter` or `legal_parameter_state` (values, record number, certification mode
state and elapsed time) re-signs the whole content with the meter's key in the same
transaction. At start the signature is checked before anything is written; a store that
does not verify is a fatal store error, and it is never re-signed afterwards, so the
evidence stays for `smartmeter verify-storage`. The signed message is
`parameter_store_message` (recomputable offline: one line per row, sorted).
"""
from __future__ import annotations

import enum
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Protocol

# -- type-specific constants (code: covered by the software ID) -------------------------------

# Companion §5.2: energy registers in Wh/varh, highest value before wrapping to 0.
ENERGY_REGISTER_MAX_DIRECT = 999_999_999
ENERGY_REGISTER_MAX_CT = 99_999_999
# Companion §5.3: demand registers in W/var; cumulative maximum demand.
DEMAND_REGISTER_MAX_DIRECT = 99_999
DEMAND_REGISTER_MAX_CT = 9_999
CUMULATIVE_MAX_DEMAND_MAX_DIRECT = 9_999_999
CUMULATIVE_MAX_DEMAND_MAX_CT = 999_999

# Sample rates the metrology accepts from the sensor (our type's choice: 80 and 160 samples
# per 50 Hz cycle). A frame at any other rate is refused, not resampled.
ALLOWED_SAMPLE_RATES_HZ = (4000, 8000)
MAXIMUM_CURRENT_A = 100  # Imax of the meter type (WELMEC 7.2 I3-3: no wrap within 4000 h at Imax)

# Companion §5.16: the certification mode ends 12 h after activation.
CERTIFICATION_MODE_DURATION_S = 12 * 3600
# Elapsed certification time is persisted at least this often (when polled at least this
# often); a restart charges one full interval as elapsed (see CertificationMode).
CERTIFICATION_CHECKPOINT_INTERVAL_S = 60

# Companion §5.16: certification LED pulse rates in pulses/kUNIT (0 in a write = unchanged).
CERTIFICATION_LED_RATES = (1000, 2000, 4000, 8000, 16000)

# Minimum capacities of the event logs (companion §5.10-5.13, §5.17, §8), in entries.
LOG_CAPACITIES = {
    "standard": 100,
    "fraud_detection": 30,
    "disconnect_control": 10,
    "mbus_event": 100,
    "power_quality": 100,
    "communication_event": 100,
    "communication_session": 100,
    "security": 100,
    "configuration": 30,
    "tariff_activation": 30,
    "certification_protected": 100,
    "power_failure": 10,
}

# Certification protected log event ids. 17/18/51 are the companion's (§5.17); the standard
# gives no code for parameter changes or certification mode start/end (§5.16 requires both
# to be logged), so: 47 as IDIS "parameter change", and two codes of the manufacturer range.
EVENT_LR_FIRMWARE_READY = 17
EVENT_LR_FIRMWARE_ACTIVATED = 18
EVENT_LR_FIRMWARE_FAILED = 51
EVENT_LR_PARAMETER_CHANGED = 47
EVENT_CERTIFICATION_MODE_STARTED = 230
EVENT_CERTIFICATION_MODE_ENDED = 231

# Client system title recorded when no client initiated an event (companion §5.12: 0xFF;
# here as a full 8-byte system title, the width of the log column).
NO_CLIENT = b"\xff" * 8


# -- the injected log and the caller's authority ---------------------------------------------


class CertificationLog(Protocol):
    """The certification protected event log (legal/eventlog.py's EventLog fits)."""

    def append(self, time_utc: int, event_id: int, fields: dict) -> object: ...


class LogFull(Exception):
    """Raised by a log that cannot take another entry. The real log's own 'full' exception is
    passed as `log_full_errors`; this class is the default and what test logs raise."""


@dataclass(frozen=True, slots=True)
class Initiator:
    """Who asks for a change, as the protective interface established it.

    certification_authority: the legal part itself verified that the caller is the Certification
    client (its HLS 6 exchange checked with the secret the legal part holds, see authority.py),
    never a flag the communication side sets. Starting the certification mode needs it;
    changing a parameter needs it or an active certification mode."""

    client_system_title: bytes = NO_CLIENT
    certification_authority: bool = False


class RefusalReason(enum.Enum):
    NOT_IN_CERTIFICATION_MODE = "parameters can be changed only in certification mode or by the certification authority"
    NOT_AUTHORISED = "only the certification authority may start the certification mode"
    UNKNOWN_PARAMETER = "no such legally relevant parameter"
    WRONG_TYPE = "value has the wrong type"
    OUT_OF_RANGE = "value outside the declared range"
    LOG_FULL = "the certification protected log is full"


class ParameterRefused(Exception):
    """A change was refused; nothing was changed."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


# -- device-specific parameter declarations --------------------------------------------------

Value = int | float | str


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    name: str
    kind: type  # int, float or str
    unit: str
    default: Value
    description: str
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[Value, ...] | None = None
    max_length: int | None = None  # str: printable ASCII 0x20-0x7E

    def check(self, value: object) -> Value:
        """The value in its declared type, or ParameterRefused (WRONG_TYPE / OUT_OF_RANGE)."""
        if isinstance(value, bool):  # bool is an int in Python; never a parameter value here
            raise ParameterRefused(RefusalReason.WRONG_TYPE, f"{self.name}: boolean")
        if self.kind is float and isinstance(value, int):
            value = float(value)
        if type(value) is not self.kind:
            raise ParameterRefused(RefusalReason.WRONG_TYPE, f"{self.name}: {type(value).__name__}, not {self.kind.__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterRefused(RefusalReason.OUT_OF_RANGE, f"{self.name}: {value!r}")
        if isinstance(value, str):
            if (self.max_length is not None and len(value) > self.max_length) or any(
                not 0x20 <= ord(c) <= 0x7E for c in value
            ):
                raise ParameterRefused(RefusalReason.OUT_OF_RANGE, f"{self.name}: {value!r}")
        elif (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ParameterRefused(RefusalReason.OUT_OF_RANGE, f"{self.name}: {value!r} not in [{self.minimum}, {self.maximum}]")
        if self.allowed is not None and value not in self.allowed:
            raise ParameterRefused(RefusalReason.OUT_OF_RANGE, f"{self.name}: {value!r} not one of {self.allowed}")
        return value  # type: ignore[return-value]


def _per_phase(stem: str, **kwargs) -> tuple[ParameterSpec, ...]:
    description = kwargs.pop("description")
    return tuple(ParameterSpec(f"{stem}_l{n}", description=f"{description} of phase L{n}", **kwargs) for n in (1, 2, 3))


PARAMETERS: Mapping[str, ParameterSpec] = {
    spec.name: spec
    for spec in (
        *_per_phase("voltage_gain", kind=float, unit="1", default=1.0, minimum=0.9, maximum=1.1,
                    description="calibration factor of the voltage channel"),
        *_per_phase("current_gain", kind=float, unit="1", default=1.0, minimum=0.9, maximum=1.1,
                    description="calibration factor of the current channel"),
        *_per_phase("phase_correction", kind=float, unit="deg", default=0.0, minimum=-5.0, maximum=5.0,
                    description="phase-angle correction between voltage and current"),
        ParameterSpec("meter_constant", int, "imp/kWh", 1000, "constant of the energy pulse output and the name plate",
                      minimum=1, maximum=100_000),
        ParameterSpec("led_source", int, "bitfield", 0x01,
                      "certification LED energy source (§5.16): b0 +A, b1 -A, b2-b5 Q1-Q4, b6 +VA, b7 -VA",
                      minimum=1, maximum=0xFF),
        ParameterSpec("led_pulse_rate", int, "pulses/kUNIT", 1000, "certification LED pulse rate (§5.16)",
                      allowed=CERTIFICATION_LED_RATES),
        ParameterSpec("display_energy_decimals", int, "decimals of kWh", 3, "energy register resolution on the display",
                      minimum=0, maximum=4),
        ParameterSpec("display_demand_decimals", int, "decimals of kW", 3, "demand register resolution on the display",
                      minimum=0, maximum=4),
        ParameterSpec("remote_sensor_id", str, "", "", "identifier of the paired remote sensor ('' = none)",
                      max_length=32),
        ParameterSpec("firmware_download", int, "0/1", 1,
                      "download of software: 1 enabled, 0 disabled (the sealable setting of WELMEC 7.2 D1)",
                      allowed=(0, 1)),
    )
}

# Executed statement by statement (executescript would commit a caller's open transaction).
SCHEMA = (
    # value has no affinity: INTEGER, REAL or TEXT come back exactly as declared
    "CREATE TABLE IF NOT EXISTS legal_parameter (name TEXT PRIMARY KEY, value NOT NULL)",
    # keys: record_number, certification_active, certification_elapsed_ms, certification_initiator
    "CREATE TABLE IF NOT EXISTS legal_parameter_state (key TEXT PRIMARY KEY, value NOT NULL)",
)


SIGNATURE_KEY = "signature"  # row of legal_parameter_state holding the seal; not itself signed
_MESSAGE_HEAD = b"smartmeter/parameters/v1\0"


def _canonical(value: object) -> str:
    """One exact text per stored value, whatever its SQLite type (a tampered row may hold any)."""
    if value is None:
        return "n:"
    if isinstance(value, int):
        return f"i:{value}"
    if isinstance(value, float):
        return f"f:{value.hex()}"
    if isinstance(value, str):
        return "s:" + json.dumps(value, ensure_ascii=True)
    if isinstance(value, bytes):
        return "b:" + value.hex()
    return "?:" + type(value).__name__


def parameter_store_message(db: sqlite3.Connection) -> tuple[bytes, int]:
    """-> (the bytes the parameter seal signs, number of rows in it): a head, then one line
    "<table>\\t<name>\\t<value>\\n" per row of legal_parameter ("parameter") and
    legal_parameter_state ("state", without the signature row), sorted by the line bytes.
    Raises sqlite3.Error if the tables cannot be read."""
    rows = [("parameter", n, v) for n, v in db.execute("SELECT name, value FROM legal_parameter")]
    rows += [("state", k, v) for k, v in db.execute("SELECT key, value FROM legal_parameter_state")
             if k != SIGNATURE_KEY]
    lines = sorted(f"{table}\t{_canonical(name)}\t{_canonical(value)}\n".encode("ascii") for table, name, value in rows)
    return _MESSAGE_HEAD + b"".join(lines), len(lines)


def _tables_exist(db: sqlite3.Connection) -> bool:
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"legal_parameter", "legal_parameter_state"} <= names


def verify_parameter_store(db: sqlite3.Connection, public_key_pem: bytes, verify, expect_signature: bool
                           ) -> tuple[str, int]:
    """-> ("" if the stored parameters verify, else the problem; rows checked). `verify` is
    signing.verify (injected: this module has no key material of its own). An empty store
    without a signature is a fresh one, unless `expect_signature` (the meter has run)."""
    try:
        if not _tables_exist(db):
            return ("" if not expect_signature else "parameter tables missing"), 0
        message, count = parameter_store_message(db)
        row = db.execute("SELECT value FROM legal_parameter_state WHERE key = ?", (SIGNATURE_KEY,)).fetchone()
    except sqlite3.Error as exc:
        return f"parameters unreadable: {exc}", 0
    if row is None:
        if count == 0 and not expect_signature:
            return "", 0
        return "parameters: not signed", count
    try:
        ok = isinstance(row[0], str) and verify(public_key_pem, message, bytes.fromhex(row[0]))
    except ValueError:
        ok = False
    return ("" if ok else "parameters: signature does not verify"), count


class ParameterSeal:
    """The meter's signature over the stored parameters and certification mode state.

    `signer` has sign(bytes) -> bytes and public_key_pem() (legal/signing.py's MeterSigner);
    `verify` is signing.verify. Checked once, at construction, before any write; a store that
    does not verify is reported in `problem` and is not re-signed from then on."""

    def __init__(self, db: sqlite3.Connection, signer, verify, expect_signature: bool) -> None:
        self._db, self._signer = db, signer
        self.problem, _ = verify_parameter_store(db, signer.public_key_pem(), verify, expect_signature)
        _create_tables(db)
        if not self.problem and db.execute("SELECT 1 FROM legal_parameter_state WHERE key = ?",
                                           (SIGNATURE_KEY,)).fetchone() is None:
            with _transaction(db, "parameter_seal_first"):
                self.seal()  # a fresh store: sealed now, so deleting every row later shows

    def seal(self) -> None:
        """Re-sign the current content; call inside the transaction that changed it."""
        if self.problem:
            return  # evidence of tampering is kept, never laundered by a new signature
        message, _ = parameter_store_message(self._db)
        _write_state(self._db, SIGNATURE_KEY, self._signer.sign(message).hex())


def _create_tables(db: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        db.execute(statement)


def _text(value: Value) -> str:
    """Values as they go into log fields: repr of a float round-trips exactly."""
    return repr(value) if isinstance(value, float) else str(value)


@contextmanager
def _transaction(db: sqlite3.Connection, name: str) -> Iterator[None]:
    """One write transaction (BEGIN IMMEDIATE), or a savepoint inside the caller's.

    Rolled back on any exception. The log's append may also run its own savepoint; if it
    commits or rolls back the transaction itself, this does not fail on the missing one."""
    if db.in_transaction:
        db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute(f"ROLLBACK TO {name}")
                db.execute(f"RELEASE {name}")
            raise
        else:
            if db.in_transaction:
                db.execute(f"RELEASE {name}")
    else:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        else:
            if db.in_transaction:
                db.execute("COMMIT")


def _read_state(db: sqlite3.Connection) -> dict[str, object]:
    return dict(db.execute("SELECT key, value FROM legal_parameter_state").fetchall())


def _write_state(db: sqlite3.Connection, key: str, value: object) -> None:
    db.execute(
        "INSERT INTO legal_parameter_state(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


# -- certification mode ----------------------------------------------------------------------


class EndReason(enum.Enum):
    WRITTEN_FALSE = "written false"
    EXPIRED = "12 h elapsed"
    TIME_LOST = "date and time lost"


@dataclass(frozen=True, slots=True)
class CertificationStatus:
    active: bool
    elapsed_s: float  # meter operating time since activation (0 when inactive)
    remaining_s: float  # until the mode ends by itself (0 when inactive)
    initiator: bytes  # client system title that started it (b"" when inactive)


class CertificationMode:
    """Companion §5.16 certification mode.

    Started by the certification authority writing TRUE; ends when written FALSE, after
    `CERTIFICATION_MODE_DURATION_S` of meter operation, or when the date and time are lost
    (`time_lost`, called by the clock owner). A power failure alone does not end it.

    Timing is independent of the RTC: elapsed time = persisted elapsed time at the last
    checkpoint + the `monotonic` clock's advance since then. `poll` persists a checkpoint at
    least every `CERTIFICATION_CHECKPOINT_INTERVAL_S`. Time with the meter off does not count
    (there is no RTC-independent clock while off). On restart the time since the last
    checkpoint is unknown; it is charged as one full checkpoint interval, persisted at once.

    Worst case, with `poll` called at least every checkpoint interval (the meter calls it
    every second): the mode never lasts longer than 12 h of operation; each power failure
    may shorten it by at most one checkpoint interval (60 s). If `poll` is called less often,
    each power failure may lengthen it by the time between polls beyond 60 s.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        log: CertificationLog,
        firmware_id: bytes,
        monotonic: Callable[[], float] = time.monotonic,
        log_full_errors: tuple[type[BaseException], ...] = (LogFull,),
        seal: ParameterSeal | None = None,
    ) -> None:
        self._db = db
        self._log = log
        self._firmware_id = bytes(firmware_id)
        self._monotonic = monotonic
        self._log_full_errors = log_full_errors
        self._seal = seal.seal if seal is not None else (lambda: None)
        _create_tables(db)
        state = _read_state(db)
        # Anything but a clean 1 reads as inactive: a damaged state must not keep the mode on.
        # A store whose signature does not verify cannot vouch for an active mode either.
        self._active = state.get("certification_active") == 1 and not (seal is not None and seal.problem)
        elapsed_ms = state.get("certification_elapsed_ms", 0)
        initiator = state.get("certification_initiator", b"")
        self._initiator = initiator if isinstance(initiator, bytes) else b""
        if self._active and (not isinstance(elapsed_ms, int) or elapsed_ms < 0):
            elapsed_ms = CERTIFICATION_MODE_DURATION_S * 1000  # damaged: treat as expired
        self._elapsed_base_ms = elapsed_ms if self._active else 0
        if self._active:
            self._elapsed_base_ms = min(
                self._elapsed_base_ms + CERTIFICATION_CHECKPOINT_INTERVAL_S * 1000, CERTIFICATION_MODE_DURATION_S * 1000
            )
            with _transaction(db, "certification_restore"):
                _write_state(db, "certification_elapsed_ms", self._elapsed_base_ms)
                self._seal()
        self._persisted_ms = self._elapsed_base_ms
        self._mono_base = monotonic()

    # -- reading -------------------------------------------------------------------------------
    def _elapsed_ms(self) -> int:
        advance = max(0.0, self._monotonic() - self._mono_base)  # guard a clock that steps back
        return self._elapsed_base_ms + int(advance * 1000)

    def is_active(self) -> bool:
        """True while the mode is on and its 12 h have not elapsed (no side effects)."""
        return self._active and self._elapsed_ms() < CERTIFICATION_MODE_DURATION_S * 1000

    def status(self) -> CertificationStatus:
        if not self.is_active():
            return CertificationStatus(False, 0.0, 0.0, b"")
        elapsed = self._elapsed_ms() / 1000
        return CertificationStatus(True, elapsed, CERTIFICATION_MODE_DURATION_S - elapsed, self._initiator)

    # -- changes -------------------------------------------------------------------------------
    def start(self, time_utc: int, initiator: Initiator) -> None:
        """Write TRUE. Needs the certification authority; logged in the same transaction
        (refused if the log is full). Writing TRUE while active changes nothing: it does not
        extend the 12 h."""
        if not initiator.certification_authority:
            raise ParameterRefused(RefusalReason.NOT_AUTHORISED)
        if self.is_active():
            return
        if self._active:  # expired but not yet polled: log its end first
            self._end(time_utc, EndReason.EXPIRED, NO_CLIENT)
        fields = {"client_system_title": initiator.client_system_title, "active_firmware_id": self._firmware_id}
        try:
            with _transaction(self._db, "certification_start"):
                _write_state(self._db, "certification_active", 1)
                _write_state(self._db, "certification_elapsed_ms", 0)
                _write_state(self._db, "certification_initiator", initiator.client_system_title)
                self._seal()
                self._log.append(time_utc, EVENT_CERTIFICATION_MODE_STARTED, fields)
        except self._log_full_errors as exc:
            raise ParameterRefused(RefusalReason.LOG_FULL, "certification mode not started") from exc
        self._active, self._initiator = True, initiator.client_system_title
        self._elapsed_base_ms = self._persisted_ms = 0
        self._mono_base = self._monotonic()

    def stop(self, time_utc: int, initiator: Initiator) -> bool:
        """Write FALSE. Ending the mode is never refused; -> False if it was not active."""
        if not self._active:
            return False
        self._end(time_utc, EndReason.WRITTEN_FALSE if self.is_active() else EndReason.EXPIRED,
                  initiator.client_system_title)
        return True

    def time_lost(self, time_utc: int) -> bool:
        """The date and time were lost (e.g. across a power failure): the mode ends.
        `time_utc` is whatever the RTC now says; the log entry's reason marks it."""
        if not self._active:
            return False
        self._end(time_utc, EndReason.TIME_LOST if self.is_active() else EndReason.EXPIRED, NO_CLIENT)
        return True

    def poll(self, time_utc: int) -> bool:
        """Call at least every CERTIFICATION_CHECKPOINT_INTERVAL_S: ends the mode after its
        12 h (-> True then) and persists the elapsed time."""
        if not self._active:
            return False
        elapsed_ms = self._elapsed_ms()
        if elapsed_ms >= CERTIFICATION_MODE_DURATION_S * 1000:
            self._end(time_utc, EndReason.EXPIRED, NO_CLIENT)
            return True
        if elapsed_ms - self._persisted_ms >= CERTIFICATION_CHECKPOINT_INTERVAL_S * 1000:
            with _transaction(self._db, "certification_checkpoint"):
                _write_state(self._db, "certification_elapsed_ms", elapsed_ms)
                self._seal()
            self._persisted_ms = elapsed_ms
        return False

    def _end(self, time_utc: int, reason: EndReason, client_system_title: bytes) -> bool:
        """End the mode and log it in one transaction. If the log refuses, the mode ends all
        the same (ending only ever restores protection) and -> False (not logged)."""
        elapsed_ms = min(self._elapsed_ms(), CERTIFICATION_MODE_DURATION_S * 1000)
        fields = {
            "client_system_title": client_system_title,
            "active_firmware_id": self._firmware_id,
            "reason": reason.name.lower(),
            "elapsed_s": elapsed_ms // 1000,
        }

        def write_end() -> None:
            _write_state(self._db, "certification_active", 0)
            _write_state(self._db, "certification_elapsed_ms", 0)
            _write_state(self._db, "certification_initiator", b"")
            self._seal()

        logged = True
        try:
            with _transaction(self._db, "certification_end"):
                write_end()
                self._log.append(time_utc, EVENT_CERTIFICATION_MODE_ENDED, fields)
        except self._log_full_errors:
            logged = False
            with _transaction(self._db, "certification_end_unlogged"):
                write_end()
        self._active, self._initiator = False, b""
        self._elapsed_base_ms = self._persisted_ms = 0
        return logged


# -- device-specific parameters ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificationObject:
    """Attribute 2 of the companion §5.16 certification mode object. In a write, 0 in the
    last four items means 'no change'; a read shows the current settings."""

    status: bool
    energy_res: int  # 1..5 = 0..4 decimals of kWh
    demand_res: int  # 1..5 = 0..4 decimals of kW
    led_source: int  # bitfield, see PARAMETERS["led_source"]
    led_rate: int  # pulses/kUNIT


class ParameterStore:
    """Device-specific legally relevant parameters, persisted in SQLite, changed only under
    the rules of the module docstring. Reads return plain values (copies)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        log: CertificationLog,
        mode: CertificationMode,
        firmware_id: bytes,
        log_full_errors: tuple[type[BaseException], ...] = (LogFull,),
        seal: ParameterSeal | None = None,
    ) -> None:
        self._db = db
        self._log = log
        self._mode = mode
        self._firmware_id = bytes(firmware_id)
        self._log_full_errors = log_full_errors
        self._seal = seal.seal if seal is not None else (lambda: None)
        _create_tables(db)
        self._values: dict[str, Value] = {name: spec.default for name, spec in PARAMETERS.items()}
        self._faults: list[str] = [seal.problem.removeprefix("parameters: ")] if seal is not None and seal.problem else []
        for name, stored in db.execute("SELECT name, value FROM legal_parameter").fetchall():
            spec = PARAMETERS.get(name)
            try:
                if spec is None:
                    raise ParameterRefused(RefusalReason.UNKNOWN_PARAMETER, name)
                if spec.kind is float and not isinstance(stored, float):  # REAL must come back REAL
                    raise ParameterRefused(RefusalReason.WRONG_TYPE, name)
                self._values[name] = spec.check(stored)
            except ParameterRefused:
                self._faults.append(str(name))
        record_number = _read_state(db).get("record_number", 0)
        if not isinstance(record_number, int) or record_number < 0:
            self._faults.append("record_number")
            record_number = 0
        self._record_number = record_number

    @property
    def integrity_faults(self) -> tuple[str, ...]:
        """Stored entries that failed the declared type/range check on load (their default
        is used instead), and the seal's problem if its signature did not verify. Non-empty
        means the store was altered outside this code."""
        return tuple(self._faults)

    @property
    def record_number(self) -> int:
        """Parameter record number, 1-0:0.2.1.255: +1 for every accepted change command."""
        return self._record_number

    def get(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise ParameterRefused(RefusalReason.UNKNOWN_PARAMETER, str(name)) from None

    def values(self) -> dict[str, Value]:
        return dict(self._values)

    def set(self, changes: Mapping[str, object], time_utc: int, initiator: Initiator) -> int:
        """Change parameters, all or nothing -> the (new) parameter record number.

        Allowed while the certification mode is active or for the certification authority.
        Every parameter whose value changes gets one log entry (time, event 47, client system
        title, active firmware id, parameter, old and new value, record number), written in
        the same transaction as the change; the record number increments once per command.
        Values equal to the current ones are not changes: nothing is logged for them."""
        if not (self._mode.is_active() or initiator.certification_authority):
            raise ParameterRefused(RefusalReason.NOT_IN_CERTIFICATION_MODE)
        checked: dict[str, Value] = {}
        for name, value in changes.items():
            spec = PARAMETERS.get(name) if isinstance(name, str) else None
            if spec is None:
                raise ParameterRefused(RefusalReason.UNKNOWN_PARAMETER, repr(name))
            checked[name] = spec.check(value)
        changed = {name: value for name, value in checked.items() if value != self._values[name]}
        if not changed:
            return self._record_number
        record_number = self._record_number + 1
        try:
            with _transaction(self._db, "legal_parameter_set"):
                for name, value in sorted(changed.items()):
                    self._db.execute(
                        "INSERT INTO legal_parameter(name, value) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                        (name, value),
                    )
                _write_state(self._db, "record_number", record_number)
                self._seal()
                for name, value in sorted(changed.items()):
                    self._log.append(time_utc, EVENT_LR_PARAMETER_CHANGED, {
                        "client_system_title": initiator.client_system_title,
                        "active_firmware_id": self._firmware_id,
                        "parameter": name,
                        "old_value": _text(self._values[name]),
                        "new_value": _text(value),
                        "record_number": record_number,
                    })
        except self._log_full_errors as exc:
            raise ParameterRefused(RefusalReason.LOG_FULL, "parameters not changed") from exc
        self._values.update(changed)
        self._record_number = record_number
        return record_number

    # -- the §5.16 certification mode object ---------------------------------------------------
    def read_certification_object(self) -> CertificationObject:
        return CertificationObject(
            self._mode.is_active(),
            int(self._values["display_energy_decimals"]) + 1,
            int(self._values["display_demand_decimals"]) + 1,
            int(self._values["led_source"]),
            int(self._values["led_pulse_rate"]),
        )

    def write_certification_object(self, value: CertificationObject, time_utc: int, initiator: Initiator) -> None:
        """Write attribute 2: TRUE starts the mode (certification authority), then applies the
        non-zero items as one parameter change; FALSE applies them while still in the mode,
        then ends it. Items are checked before anything changes."""
        if not isinstance(value.status, bool):
            raise ParameterRefused(RefusalReason.WRONG_TYPE, "certification_status")
        changes: dict[str, object] = {}
        for item, name, offset in (("energy_res", "display_energy_decimals", 1),
                                   ("demand_res", "display_demand_decimals", 1),
                                   ("led_source", "led_source", 0),
                                   ("led_rate", "led_pulse_rate", 0)):
            raw = getattr(value, item)
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ParameterRefused(RefusalReason.WRONG_TYPE, item)
            if raw != 0:
                changes[name] = PARAMETERS[name].check(raw - offset)
        if value.status:
            self._mode.start(time_utc, initiator)
            if changes:
                self.set(changes, time_utc, initiator)
        else:
            if changes:
                self.set(changes, time_utc, initiator)
            self._mode.stop(time_utc, initiator)
