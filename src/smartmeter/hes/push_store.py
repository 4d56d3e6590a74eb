"""The head-end's store of pushed readings: one SQLite file (WAL), a time-series layout.

    meter(system_title PK, serial, address, first_seen, last_seen, registered,
          last_invocation_counter)              -- one row per meter that ever pushed
    push(meter, invocation_counter PK, receive_time, capture_time, kind, setup, value_count)
    reading(meter, obis, attribute, capture_time PK, receive_time, class_id, value_json)
                                                 -- the primary key is the "meter × OBIS × time"
                                                    index; reading_by_time serves "meter × time"
    push_object_list(meter, setup PK, entries_json, source, updated)
                                                 -- what each push setup of a meter sends
    unstored_push(meter, invocation_counter PK, receive_time, reason)
                                                 -- authenticated pushes whose values were not
                                                    stored (unmapped, malformed): their counters
                                                    are used up all the same

Times are UTC text of one fixed width, `2026-03-10T12:00:00.000Z`, so text order is time
order and SQLite's date functions read them. A system title is 16 upper-case hex digits, an
OBIS code its dotted text `1-0:1.8.0.255`.

The meter's highest accepted invocation counter is kept with its row and every accepted counter
with its push (`push`, `unstored_push`), written in the same transaction as the push's
readings: after a restart a replayed push is refused exactly as before, and a push is never
half stored. With `deferred` (the listener) the pushes that arrive in one turn of the event
loop share a commit, made as soon as that turn is over (at most `max_pending` a commit; each
push in its own savepoint). A process that dies before it loses those pushes and their counters
together, so what the meter sends again is accepted: over UDP the meter sends every retry, so
such a push is stored from its next copy; over TCP the meter took the kernel's acknowledgement
as delivery and sends no repetition, so such a push is lost. The window is the rest of one turn
of the listener's loop. A power loss (or an operating system crash) may besides lose the
transactions last committed (WAL with synchronous=NORMAL), over either transport.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["PushStore", "Reading", "StoredPush", "format_time", "parse_time"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meter (
    system_title TEXT PRIMARY KEY,
    serial TEXT,
    address TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    registered TEXT,
    last_invocation_counter INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS push (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    invocation_counter INTEGER NOT NULL,
    receive_time TEXT NOT NULL,
    capture_time TEXT NOT NULL,
    kind TEXT NOT NULL,
    setup TEXT,
    value_count INTEGER NOT NULL,
    PRIMARY KEY (meter, invocation_counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reading (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    obis TEXT NOT NULL,
    attribute INTEGER NOT NULL,
    capture_time TEXT NOT NULL,
    receive_time TEXT NOT NULL,
    class_id INTEGER,
    value_json TEXT NOT NULL,
    PRIMARY KEY (meter, obis, attribute, capture_time)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_by_time ON reading (meter, capture_time);
CREATE TABLE IF NOT EXISTS push_object_list (
    meter TEXT NOT NULL,
    setup TEXT NOT NULL,
    entries_json TEXT NOT NULL,
    source TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (meter, setup)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unstored_push (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    invocation_counter INTEGER NOT NULL,
    receive_time TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (meter, invocation_counter)
) WITHOUT ROWID;
"""

def format_time(when: dt.datetime) -> str:
    """UTC text of fixed width (four-digit year, milliseconds, `Z`); a naive datetime is taken as
    UTC. OverflowError if the UTC time is outside the years 1..9999."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    # not strftime: its %Y gives "999", not "0999", on glibc
    return (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
            f".{when.microsecond // 1000:03d}Z")


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 date or date-time (naive = UTC) as an aware UTC datetime; ValueError if not one."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of a push: the attribute `attribute` of object `obis` (class `class_id`, None
    when unknown) as JSON-ready data."""

    obis: str
    attribute: int
    class_id: int | None
    value: Any


@dataclass(frozen=True, slots=True)
class StoredPush:
    """An authenticated push, decoded, as it goes into the store."""

    meter: str  # system title, hex
    invocation_counter: int
    receive_time: str
    capture_time: str
    kind: str  # the push setup's name ("interval-1", "alarm", ...) or "unknown"
    setup: str | None  # the push setup's OBIS, when known
    readings: tuple[Reading, ...]
    serial: str | None = None  # Device ID 1, when the push carries it
    address: str | None = None  # the meter's IP address, when the push carries it
    registers: bool = False  # an installation push: (re)register the meter


class PushStore:
    """The SQLite file; one writer (the listener), any number of readers (`hes show`)."""

    def __init__(self, path: str | Path, *, read_only: bool = False, deferred: bool = False,
                 max_pending: int = 256) -> None:
        self.path = Path(path)
        self.deferred = deferred
        self.max_pending = max_pending
        self._pending = 0
        self.read_only = read_only
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path}: no such database")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process dying; only a power loss may lose the
            # last transactions (and with them their counters: nothing half stored either way)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        self.db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        if self.db is None:
            return
        if not self.read_only:
            self.flush()
        self.db.close()
        self.db = None

    def flush(self) -> None:
        """Commit the pushes written so far."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._pending = 0

    def rollback(self) -> None:
        """Drop the pushes written since the last commit (a commit that failed)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._pending = 0

    # ------------------------------------------------------------------ replay protection

    def counters(self) -> dict[str, int]:
        """The highest accepted invocation counter of every meter."""
        return dict(self.db.execute("SELECT system_title, last_invocation_counter FROM meter"))

    def counter_used(self, meter: str, counter: int) -> bool:
        """Whether a push of `meter` with invocation counter `counter` was accepted (stored, or
        authenticated and recorded unstored)."""
        return self.db.execute(
            "SELECT 1 FROM push WHERE meter = ?1 AND invocation_counter = ?2 "
            "UNION ALL SELECT 1 FROM unstored_push WHERE meter = ?1 AND invocation_counter = ?2",
            (meter, counter)).fetchone() is not None

    def record_unstored(self, meter: str, counter: int, receive_time: str, reason: str, forget_below: int) -> None:
        """An authenticated push that could not be stored as readings still uses up its counter.
        Records of counters below `forget_below` (the replay window's floor: refused whatever
        was recorded) are dropped, so a meter whose pushes fit no list does not grow the table."""
        with self._transaction():
            self._touch_meter(meter, counter, receive_time)
            self.db.execute("INSERT OR IGNORE INTO unstored_push (meter, invocation_counter, receive_time, reason) "
                            "VALUES (?, ?, ?, ?)", (meter, counter, receive_time, reason))
            self.db.execute("DELETE FROM unstored_push WHERE meter = ? AND invocation_counter < ?",
                            (meter, forget_below))

    # ------------------------------------------------------------------------ writing

    def add(self, push: StoredPush) -> int:
        """Store a push and its readings in one transaction; returns how many readings were new
        (a reading already stored for the same meter, object, attribute and time is kept)."""
        with self._transaction():
            self._touch_meter(push.meter, push.invocation_counter, push.receive_time)
            if push.serial is not None or push.address is not None or push.registers:
                self.db.execute(
                    "UPDATE meter SET serial = coalesce(?, serial), address = coalesce(?, address), "
                    "registered = CASE WHEN ? THEN ? ELSE registered END WHERE system_title = ?",
                    (push.serial, push.address, push.registers, push.receive_time, push.meter))
            self.db.execute(
                "INSERT INTO push (meter, invocation_counter, receive_time, capture_time, kind, setup, value_count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (push.meter, push.invocation_counter, push.receive_time, push.capture_time, push.kind, push.setup,
                 len(push.readings)))
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO reading (meter, obis, attribute, capture_time, receive_time, class_id, "
                "value_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(push.meter, r.obis, r.attribute, push.capture_time, push.receive_time, r.class_id,
                  json.dumps(r.value, separators=(",", ":"))) for r in push.readings])
            return self.db.total_changes - before

    def _touch_meter(self, meter: str, counter: int, receive_time: str) -> None:
        self.db.execute(
            "INSERT INTO meter (system_title, first_seen, last_seen, last_invocation_counter) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (system_title) DO UPDATE SET last_seen = excluded.last_seen, "
            "last_invocation_counter = max(last_invocation_counter, excluded.last_invocation_counter)",
            (meter, receive_time, receive_time, counter))

    @contextlib.contextmanager
    def _transaction(self):
        """One push's writes: all or nothing, committed now or (deferred) with the next flush."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("SAVEPOINT one_push")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO one_push")
            self.db.execute("RELEASE one_push")
            raise
        self.db.execute("RELEASE one_push")
        self._pending += 1
        if not self.deferred or self._pending >= self.max_pending:
            self.flush()

    # ------------------------------------------------------------- push object lists

    def data_version(self) -> int:
        """A number that changes when another connection (another process) commits to the file."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def object_lists(self, meter: str) -> dict[str, list]:
        """The push object lists known for `meter`, by setup OBIS."""
        return {setup: json.loads(entries) for setup, entries in self.db.execute(
            "SELECT setup, entries_json FROM push_object_list WHERE meter = ?", (meter,))}

    def put_object_list(self, meter: str, setup: str, entries: list, source: str, updated: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO push_object_list (meter, setup, entries_json, source, updated) "
                "VALUES (?, ?, ?, ?, ?)", (meter, setup, json.dumps(entries), source, updated))

    # ------------------------------------------------------------------------ reading

    def readings(self, *, meter: str | None = None, obis: Iterable[str] = (), start: str | None = None,
                 end: str | None = None) -> Iterator[tuple]:
        """(meter, obis, attribute, class_id, capture_time, receive_time, value) in meter, OBIS,
        attribute and time order; `start` inclusive, `end` exclusive."""
        where, args = [], []
        if meter is not None:
            where.append("meter = ?")
            args.append(meter)
        obis = list(obis)
        if obis:
            where.append(f"obis IN ({', '.join('?' * len(obis))})")
            args.extend(obis)
        if start is not None:
            where.append("capture_time >= ?")
            args.append(start)
        if end is not None:
            where.append("capture_time < ?")
            args.append(end)
        sql = ("SELECT meter, obis, attribute, class_id, capture_time, receive_time, value_json FROM reading"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY meter, obis, attribute, capture_time")
        for row in self.db.execute(sql, args):
            yield (*row[:6], json.loads(row[6]))

    def meters(self) -> list[tuple]:
        """(system_title, serial, address, first_seen, last_seen, registered, pushes) of every meter."""
        return list(self.db.execute(
            "SELECT m.system_title, m.serial, m.address, m.first_seen, m.last_seen, m.registered, "
            "(SELECT count(*) FROM push p WHERE p.meter = m.system_title) FROM meter m ORDER BY m.system_title"))

    def push_count(self, meter: str | None = None) -> int:
        if meter is None:
            return self.db.execute("SELECT count(*) FROM push").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM push WHERE meter = ?", (meter,)).fetchone()[0]
