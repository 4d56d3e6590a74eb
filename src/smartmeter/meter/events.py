"""Event logs, event objects and event counters of the meter (companion §5.10-5.13, §5.19).

Events are data: `cosem/model/events.toml` maps each code to its logs, its security event
group (G_EC_01..10) and the alarm flag it raises. A source raises an event by code with the
context it knows (the client's SAP and system title, the time); `EventRecorder.record`
writes it into every log the table names, counts it in its group, sets the log's event
object and raises its alarm, all in ONE durable transaction (SQLite, WAL, synchronous=FULL),
so an event a client has read is never lost in a power failure and no counter goes back.

Logs are FIFO with the capacity of the table (at least the companion standard's minimum);
the oldest entry makes room. They are profile-generic objects over this store, like the
load profile over the legal one (`EventLogSource`).

An event is not re-triggered while its root cause persists: a source that names a `cause`
records the event only when that cause is not already active, and ends the cause when it
goes away (`end_cause`); causes are kept in the store, so a restart does not repeat them.

None of these logs is legally relevant (the companion standard puts only the certification
protected log under legal control; that one is kept by the legal part).
"""
from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.meter.store import open_private_store

EVENTS_FILE = "events.sqlite3"
NO_CLIENT_SAP = 0xFF  # companion §5.12: "or 0xFF" when the trigger has no client
NO_CLIENT_TITLE = b"\xff"
GROUPS = range(1, 11)
LONG_POWER_FAILURE_THRESHOLD = 180  # s, IDIS default for 0-0:96.7.20.255
MAX_CAPACITY = 10_000
COLUMN_KINDS = ("code", "partners", "system_title", "duration", "id_detail")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entry (
    log TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, code INTEGER NOT NULL,
    client_sap INTEGER NOT NULL, server_sap INTEGER NOT NULL, system_title BLOB NOT NULL,
    value INTEGER NOT NULL, detail BLOB NOT NULL, PRIMARY KEY (log, seq));
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cause (name TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS saved (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profile_row (
    profile TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (profile, seq));
"""


class EventTableError(ValueError):
    """The event table file is inconsistent (unknown log, duplicate code, bad OBIS)."""


@dataclass(frozen=True)
class LogDef:
    name: str
    title: str
    obis: str
    event_object: str | None
    capacity: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class EventDef:
    code: int
    name: str
    logs: tuple[str, ...]
    group: int | None = None
    alarm: str | None = None


@dataclass(frozen=True)
class EventTable:
    logs: dict[str, LogDef]
    events: dict[int, EventDef]
    not_configuration: frozenset[tuple[int, int]]  # (class_id, method) of ACTIONs that are operations

    @classmethod
    def load(cls, path: Path | None = None) -> EventTable:
        if path is None:
            text = resources.files("smartmeter.cosem.model").joinpath("events.toml").read_text()
        else:
            text = Path(path).read_text()
        return cls.from_toml(tomllib.loads(text))

    @classmethod
    def from_toml(cls, doc: dict) -> EventTable:
        logs = {}
        for name, spec in doc.get("logs", {}).items():
            columns = tuple(spec.get("columns", ()))
            bad = set(columns) - set(COLUMN_KINDS)
            capacity = int(spec.get("capacity", 0))
            if bad or not 1 <= capacity <= MAX_CAPACITY:
                raise EventTableError(f"log {name}: unknown columns {sorted(bad)} or capacity {capacity}")
            for obis in (spec["obis"], spec.get("event_object")):
                if obis is not None:
                    Obis.parse(obis)
            logs[name] = LogDef(name, spec.get("name", name), spec["obis"], spec.get("event_object"), capacity, columns)
        events = {}
        for spec in doc.get("event", []):
            code = int(spec["code"])
            if code in events or not 0 < code <= 255:
                raise EventTableError(f"event code {code} is repeated or outside 1..255")
            unknown = set(spec.get("logs", ())) - set(logs)
            group = spec.get("group")
            if unknown or (group is not None and group not in GROUPS):
                raise EventTableError(f"event {code}: unknown logs {sorted(unknown)} or group {group}")
            events[code] = EventDef(code, spec["name"], tuple(spec.get("logs", ())), group, spec.get("alarm"))
        skip = frozenset((int(c), int(m)) for c, m in doc.get("configuration", {}).get("not_logged", []))
        return cls(logs, events, skip)


@dataclass(frozen=True)
class EventContext:
    """Who caused an event: client and server SAP and the client's system title (None: no client)."""

    client_sap: int | None = None
    server_sap: int | None = None
    system_title: bytes | None = None


NO_CLIENT = EventContext()


@dataclass(frozen=True)
class LogEntry:
    seq: int
    time: int  # UTC seconds, meter time
    code: int
    client_sap: int
    server_sap: int
    system_title: bytes
    value: int  # duration (power failure log)
    detail: bytes  # id detail: service_id, class_id(2), logical name(6), index (signed)


def group_counter(group: int) -> str:
    return f"G_EC_{group:02d}"


class EventRecorder:
    def __init__(self, data_dir: Path, table: EventTable, now: Callable[[], float],
                 on_alarm: Callable[[str], None] | None = None) -> None:
        self.table = table
        self._now = now
        self.on_alarm = on_alarm or (lambda flag: None)
        self._db = open_private_store(Path(data_dir) / EVENTS_FILE, SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One durable transaction; nested uses join the outer one."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def transaction(self):
        """One durable transaction around several records (a source's events and its state)."""
        return self._transaction()

    # -- recording ------------------------------------------------------------------------------
    def record(self, code: int, context: EventContext = NO_CLIENT, *, at: float | None = None,
               cause: str | None = None, value: int = 0, detail: bytes = b"") -> bool:
        """Record event `code` now (or `at`); False when its cause is already active (not re-triggered)."""
        event = self.table.events.get(code)
        if event is None:
            raise KeyError(f"event code {code} is not in the event table")
        when = int(self._now() if at is None else at)
        sap, server, title = self._saps(context)
        with self._transaction():
            if cause is not None:
                if self._db.execute("SELECT 1 FROM cause WHERE name = ?", (cause,)).fetchone():
                    return False
                self._db.execute("INSERT INTO cause(name, since) VALUES (?, ?)", (cause, when))
            for log in event.logs:
                self._append(log, when, code, sap, server, title, value, detail)
            if event.group is not None:
                self._add(group_counter(event.group), 1)
        if event.alarm:
            self.on_alarm(event.alarm)
        return True

    def end_cause(self, cause: str) -> bool:
        """The root cause is gone: the event may be raised again. -> whether it was active."""
        with self._transaction():
            return self._db.execute("DELETE FROM cause WHERE name = ?", (cause,)).rowcount > 0

    def cause_active(self, cause: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM cause WHERE name = ?", (cause,)).fetchone() is not None

    def record_configuration(self, service_id: int, class_id: int, logical_name: bytes, index: int,
                             context: EventContext = NO_CLIENT) -> bool:
        """A SET (service 1) or ACTION (service 2) changed the configuration: event 47 in the
        standard log and its IdDetail in the configuration log, in one transaction."""
        if service_id == 2 and (class_id, index) in self.table.not_configuration:
            return False
        detail = bytes([service_id]) + class_id.to_bytes(2, "big") + bytes(logical_name) + index.to_bytes(1, "big", signed=True)
        when = int(self._now())
        with self._transaction():
            self.record(47, context, at=when)
            if "configuration" in self.table.logs:
                self._append("configuration", when, 47, *self._saps(context), 0, detail)
        return True

    def record_outage(self, down: float, up: float, time_lost: bool = False) -> bool:
        """A power failure from `down` to `up`, in one transaction: events 1 and 2, the counts,
        the power failure log, and event 6 when the clock lost its time. -> whether it was long."""
        with self._transaction():
            self.record(1, at=down)
            self.record(2, at=up)
            if time_lost:
                self.record(6, at=up, cause="clock_invalid")
            return self.record_power_failure(down, up)

    def record_power_failure(self, down: float, up: float) -> bool:
        """A power failure from `down` to `up` (companion §5.10): counted; a long one (at least
        the threshold) also counted apart, its duration kept and logged. -> whether it was long."""
        duration = max(0, int(up) - int(down))
        long_failure = duration >= self.long_failure_threshold()
        with self._transaction():
            self._add("power_failures", 1)
            if long_failure:
                self._add("long_power_failures", 1)
                self._set("last_long_power_failure_duration", duration)
                self._append("power_failure", int(up), 0, NO_CLIENT_SAP, NO_CLIENT_SAP, NO_CLIENT_TITLE, duration, b"")
        return long_failure

    def long_failure_threshold(self) -> int:
        return self.counter("long_power_failure_threshold", LONG_POWER_FAILURE_THRESHOLD)

    @staticmethod
    def _saps(context: EventContext) -> tuple[int, int, bytes]:
        return (NO_CLIENT_SAP if context.client_sap is None else context.client_sap,
                NO_CLIENT_SAP if context.server_sap is None else context.server_sap,
                NO_CLIENT_TITLE if context.system_title is None else bytes(context.system_title))

    def _append(self, log: str, when: int, code: int, sap: int, server: int, title: bytes, value: int,
                detail: bytes) -> None:
        spec = self.table.logs[log]
        last = self._db.execute("SELECT MAX(seq) FROM entry WHERE log = ?", (log,)).fetchone()[0] or 0
        self._db.execute("INSERT INTO entry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (log, last + 1, when, code, sap, server, title, value, detail))
        self._db.execute("DELETE FROM entry WHERE log = ? AND seq <= ?", (log, last + 1 - spec.capacity))
        if code:
            self._set(f"last_code/{log}", code)

    def _add(self, name: str, amount: int) -> None:
        self._db.execute("INSERT INTO counter(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                         "SET value = value + excluded.value", (name, amount))

    def _set(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO counter(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                         "SET value = excluded.value", (name, value))

    def save(self, name: str, value: str) -> None:
        """A source's state (JSON text), kept with its events: in the same transaction, so a kill
        never leaves an event recorded and the state that led to it lost, or the other way round."""
        with self._transaction():
            self._db.execute("INSERT INTO saved(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                             "SET value = excluded.value", (name, value))

    def saved(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM saved WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def append_row(self, profile: str, when: int, row: str, capacity: int) -> None:
        """One entry of a profile kept here (JSON text), FIFO with `capacity` entries."""
        with self._transaction():
            last = self._db.execute("SELECT MAX(seq) FROM profile_row WHERE profile = ?", (profile,)).fetchone()[0] or 0
            self._db.execute("INSERT INTO profile_row VALUES (?, ?, ?, ?)", (profile, last + 1, when, row))
            self._db.execute("DELETE FROM profile_row WHERE profile = ? AND seq <= ?", (profile, last + 1 - capacity))

    def profile_rows(self, profile: str, from_time: int | None = None, to_time: int | None = None) -> list[tuple[int, str]]:
        """(time, row) of a profile's entries in the order they were captured."""
        return self._in_order("SELECT time, row FROM profile_row WHERE profile = ?", profile, from_time, to_time)

    def profile_count(self, profile: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM profile_row WHERE profile = ?", (profile,)).fetchone()[0]

    # -- reading --------------------------------------------------------------------------------
    def entries(self, log: str, from_time: int | None = None, to_time: int | None = None) -> list[LogEntry]:
        """The log's entries in the order they were recorded (FIFO, unsorted by time), optionally
        those with from_time <= time <= to_time."""
        if log not in self.table.logs:
            raise KeyError(f"no log {log!r}")
        rows = self._in_order("SELECT seq, time, code, client_sap, server_sap, system_title, value, detail FROM entry "
                              "WHERE log = ?", log, from_time, to_time)
        return [LogEntry(*row) for row in rows]

    def _in_order(self, select: str, key: str, from_time: int | None, to_time: int | None) -> list[tuple]:
        """The rows of `select` (one ? for `key`) with from_time <= time <= to_time, in recording order."""
        sql, args = select, [key]
        if from_time is not None:
            sql += " AND time >= ?"
            args.append(int(from_time))
        if to_time is not None:
            sql += " AND time <= ?"
            args.append(int(to_time))
        with self._lock:
            return self._db.execute(sql + " ORDER BY seq", args).fetchall()

    def count(self, log: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM entry WHERE log = ?", (log,)).fetchone()[0]

    def last_code(self, log: str) -> int:
        return self.counter(f"last_code/{log}")

    def counter(self, name: str, default: int = 0) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
        return default if row is None else row[0]

    def set_counter(self, name: str, value: int) -> None:
        with self._transaction():
            self._set(name, value)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- COSEM views ---------------------------------------------------------------------------------


def _column_value(kind: str, entry: LogEntry):
    if kind == "code":
        return entry.code
    if kind == "partners":
        # Current Association attr 3: structure{client_SAP integer, server_SAP long-unsigned}
        sap = entry.client_sap - 256 if entry.client_sap > 127 else entry.client_sap
        return (Data.integer(sap), Data.long_unsigned(entry.server_sap))
    if kind == "system_title":
        return entry.system_title
    if kind == "duration":
        return entry.value
    d = entry.detail  # IdDetail (companion §5.13): structure{unsigned, long-unsigned, octet-string(6), integer}
    return (Data.unsigned(d[0]), Data.long_unsigned(int.from_bytes(d[1:3], "big")), Data.octet_string(d[3:9]),
            Data.integer(int.from_bytes(d[9:10], "big", signed=True)))


class EventLogSource:
    """One event log as profile-generic rows: the clock column, then the table's columns."""

    def __init__(self, recorder: EventRecorder, log: str, clock) -> None:
        self.recorder, self.log, self.clock = recorder, log, clock
        self.columns = recorder.table.logs[log].columns

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        cosem = self.clock.cosem
        return [(cosem(e.time), *(_column_value(k, e) for k in self.columns))
                for e in self.recorder.entries(self.log, from_time, to_time)]

    def entries_in_use(self) -> int:
        return self.recorder.count(self.log)

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

