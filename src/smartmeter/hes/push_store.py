"""The head-end's store of pushed readings: one SQLite file (WAL), the fleet store's layout.

The tables the fleet store (PostgreSQL, `sql/0001_fleet_store.sql`) has, with the same names,
keys and meaning, so that the same questions are asked the same way of either:

    meter(id PK, system_title UNIQUE, serial, address, first_seen, last_seen, registered)
                                                 -- one row per meter that ever pushed
    series(id PK, meter_id, source, obis, attribute, scaler, unit, class_id)
                                                 -- one per meter × source × OBIS × attribute;
                                                    source is '' (a value as the meter sent it)
    reading(series_id, time PK, raw, quality, received)
                                                 -- the integer the meter sent (value = raw ×
                                                    10^scaler), never text; quality 0
    reading_data(series_id, time PK, data, received)
                                                 -- a value that is no integer (an octet string,
                                                    a structure, a float): its JSON form
    raw_push(system_title, key_id, invocation_counter PK, received, stored, source, apdu)
                                                 -- every authentic push as it came (ciphered)
    event(meter_id, log, time, code PK, received)
                                                 -- the fleet store's event table (pushes carry
                                                    no event log entries: empty here)

and the listener's own bookkeeping:

    push(meter, key_id, invocation_counter PK, receive_time, capture_time, kind, setup, value_count)
    push_object_list(meter, setup PK, entries_json, source, updated)
                                                 -- what each push setup of a meter sends
    unstored_push(meter, key_id, invocation_counter PK, receive_time, reason)
                                                 -- authenticated pushes whose values were not
                                                    stored (unmapped, malformed): their counters
                                                    are used up all the same
    push_counter(meter, key_id PK, last_invocation_counter)
                                                 -- the highest counter accepted from a meter
                                                    under each of its keys

A meter starts its invocation counter again under a new key, so a push is (meter, key,
counter), as in the fleet store: `key_id` is the fingerprint of the encryption key its tag
verified with (`push_listener.push_key_id`); '' in the rows kept from before layout 3, until
the listener gives them the key it holds for their meter (`adopt_unkeyed`).

A reading's time is the push's capture time, `received` when the listener took it. Times are
UTC text of one fixed width, `2026-03-10T12:00:00.000Z`, so text order is time order and
SQLite's date functions read them. A system title is 16 upper-case hex digits, an OBIS code its
dotted text `1-0:1.8.0.255`. A series' scaler and unit are known when a push carries the
object's scaler_unit (class 3 or 4 attribute 3, class 5 attribute 4); until then 0 and 255.

The file's layout has a version (`PRAGMA user_version`, `SCHEMA_VERSION`); a file of an earlier
layout is brought to this one when a writer opens it, in one transaction, nothing left out, and
then compacted (VACUUM) (version 1, the first layout: readings as JSON text in
`reading.value_json`, now split into `reading` and `reading_data`; version 2: the pushes and
counters by meter alone, without their key). A reader (`read_only`) never changes the file: it
reads a layout whose readings are as now (`READABLE_LAYOUT` and later) as it is, and refuses an
older one with one line saying how to upgrade it (an older listener may still be writing it).

The highest invocation counter accepted from a meter under a key is kept in `push_counter` and
every accepted counter with its push (`push`, `unstored_push`), written in the same transaction
as the push's readings: after a restart a replayed push is refused exactly as before, and a push is never
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
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from smartmeter.errors import SmartmeterError

log = logging.getLogger(__name__)

__all__ = ["PushStore", "READABLE_LAYOUT", "Reading", "SCHEMA_VERSION", "SchemaError", "StoredPush", "format_time",
           "integer_raw", "parse_time", "scaler_units"]

SCHEMA_VERSION = 3
READABLE_LAYOUT = 2  # the oldest layout a reader takes as it is: its meter, push and readings tables are as now

# The layout of version SCHEMA_VERSION, for a new file.
SCHEMA = """
CREATE TABLE meter (
    id INTEGER PRIMARY KEY,
    system_title TEXT NOT NULL UNIQUE,
    serial TEXT,
    address TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    registered TEXT
);
CREATE TABLE push (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    key_id TEXT NOT NULL,
    invocation_counter INTEGER NOT NULL,
    receive_time TEXT NOT NULL,
    capture_time TEXT NOT NULL,
    kind TEXT NOT NULL,
    setup TEXT,
    value_count INTEGER NOT NULL,
    PRIMARY KEY (meter, key_id, invocation_counter)
) WITHOUT ROWID;
CREATE TABLE push_object_list (
    meter TEXT NOT NULL,
    setup TEXT NOT NULL,
    entries_json TEXT NOT NULL,
    source TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (meter, setup)
) WITHOUT ROWID;
CREATE TABLE unstored_push (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    key_id TEXT NOT NULL,
    invocation_counter INTEGER NOT NULL,
    receive_time TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (meter, key_id, invocation_counter)
) WITHOUT ROWID;
CREATE TABLE push_counter (
    meter TEXT NOT NULL REFERENCES meter(system_title),
    key_id TEXT NOT NULL,
    last_invocation_counter INTEGER NOT NULL,
    PRIMARY KEY (meter, key_id)
) WITHOUT ROWID;
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    meter_id INTEGER NOT NULL REFERENCES meter(id),
    source TEXT NOT NULL DEFAULT '',
    obis TEXT NOT NULL,
    attribute INTEGER NOT NULL,
    scaler INTEGER NOT NULL DEFAULT 0,
    unit INTEGER NOT NULL DEFAULT 255,
    class_id INTEGER,
    UNIQUE (meter_id, source, obis, attribute)
);
CREATE TABLE reading (
    series_id INTEGER NOT NULL REFERENCES series(id),
    time TEXT NOT NULL,
    raw INTEGER NOT NULL CHECK (typeof(raw) = 'integer'),
    quality INTEGER NOT NULL DEFAULT 0,
    received TEXT NOT NULL,
    PRIMARY KEY (series_id, time)
) WITHOUT ROWID;
CREATE INDEX reading_by_time ON reading (time);
CREATE TABLE reading_data (
    series_id INTEGER NOT NULL REFERENCES series(id),
    time TEXT NOT NULL,
    data TEXT NOT NULL,
    received TEXT NOT NULL,
    PRIMARY KEY (series_id, time)
) WITHOUT ROWID;
CREATE TABLE event (
    meter_id INTEGER NOT NULL REFERENCES meter(id),
    log TEXT NOT NULL,
    time TEXT NOT NULL,
    code INTEGER NOT NULL,
    received TEXT NOT NULL,
    PRIMARY KEY (meter_id, log, time, code)
) WITHOUT ROWID;
CREATE TABLE raw_push (
    system_title TEXT NOT NULL,
    key_id TEXT NOT NULL,
    invocation_counter INTEGER NOT NULL,
    received TEXT NOT NULL,
    stored TEXT NOT NULL,
    source TEXT NOT NULL,
    apdu BLOB NOT NULL,
    PRIMARY KEY (system_title, key_id, invocation_counter)
) WITHOUT ROWID;
"""


def _statements(script: str) -> list[str]:
    """The statements of a script of CREATE statements (no semicolon inside one)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def _creating(*names: str) -> list[str]:
    """SCHEMA's statements that create the tables and indexes `names`."""
    return [s for s in _statements(SCHEMA) if re.match(r"CREATE (?:TABLE|INDEX) (\w+)", s)[1] in names]


# The tables version 2 added; its raw_push as it was (version 3 keys it by key_id too).
_V2_TABLES = _creating("series", "reading", "reading_by_time", "reading_data", "event") + ["""CREATE TABLE raw_push (
    system_title TEXT NOT NULL,
    invocation_counter INTEGER NOT NULL,
    received TEXT NOT NULL,
    stored TEXT NOT NULL,
    source TEXT NOT NULL,
    apdu BLOB NOT NULL,
    PRIMARY KEY (system_title, invocation_counter)
) WITHOUT ROWID"""]

# Version 2 -> 3: the tables keyed by (meter, counter) are keyed by (meter, key, counter), their
# rows with key_id '' (the key is not known to the file: `PushStore.adopt_unkeyed`); the meter's
# highest counter moves from meter.last_invocation_counter to push_counter.
_KEYED_TABLES = ("push", "unstored_push", "raw_push")

# Version 1 -> 2: meter gets an integer id (rebuilt, rows in first-seen order); the new tables;
# each reading's JSON value becomes a row of `reading` (a JSON integer that fits 64 bits: not
# true/false, which json_extract gives as 1/0, nor past 2^63, which it gives as a real) or
# of `reading_data` (anything else), its series made from its meter, OBIS, attribute and class.
# "@name" steps are PushStore._upgrade's checks and scripts.
_UPGRADE_1_TO_2_STEPS = (
    """CREATE TABLE meter_v2 (
        id INTEGER PRIMARY KEY,
        system_title TEXT NOT NULL UNIQUE,
        serial TEXT,
        address TEXT,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        registered TEXT,
        last_invocation_counter INTEGER NOT NULL
    )""",
    """INSERT INTO meter_v2 (system_title, serial, address, first_seen, last_seen, registered,
                             last_invocation_counter)
       SELECT system_title, serial, address, first_seen, last_seen, registered, last_invocation_counter
       FROM meter ORDER BY first_seen, system_title""",
    "DROP TABLE meter",
    "ALTER TABLE meter_v2 RENAME TO meter",
    "ALTER TABLE reading RENAME TO reading_v1",
    "DROP INDEX IF EXISTS reading_by_time",
    "@v2_tables",
    # meters that have readings but no row (not written by the listener; kept all the same)
    """INSERT INTO meter (system_title, first_seen, last_seen, last_invocation_counter)
       SELECT meter, min(receive_time), max(receive_time), 0 FROM reading_v1
       WHERE meter NOT IN (SELECT system_title FROM meter) GROUP BY meter""",
    """INSERT INTO series (meter_id, source, obis, attribute, class_id)
       SELECT m.id, '', r.obis, r.attribute, max(r.class_id)
       FROM reading_v1 r JOIN meter m ON m.system_title = r.meter
       GROUP BY m.id, r.obis, r.attribute ORDER BY m.id, r.obis, r.attribute""",
    """INSERT INTO reading (series_id, time, raw, quality, received)
       SELECT s.id, r.capture_time, json_extract(r.value_json, '$'), 0, r.receive_time
       FROM reading_v1 r JOIN meter m ON m.system_title = r.meter
            JOIN series s ON s.meter_id = m.id AND s.source = '' AND s.obis = r.obis AND s.attribute = r.attribute
       WHERE json_valid(r.value_json) AND json_type(r.value_json) = 'integer'
         AND typeof(json_extract(r.value_json, '$')) = 'integer'""",
    """INSERT INTO reading_data (series_id, time, data, received)
       SELECT s.id, r.capture_time, r.value_json, r.receive_time
       FROM reading_v1 r JOIN meter m ON m.system_title = r.meter
            JOIN series s ON s.meter_id = m.id AND s.source = '' AND s.obis = r.obis AND s.attribute = r.attribute
       WHERE NOT (json_valid(r.value_json) AND json_type(r.value_json) = 'integer'
         AND typeof(json_extract(r.value_json, '$')) = 'integer')""",
    "@check_counts",
    "DROP TABLE reading_v1",
)


class SchemaError(SmartmeterError):
    """The file is not a push store this version can open (a newer layout, or another file)."""


def integer_raw(value: Any) -> int | None:
    """The value as a reading's raw integer: a JSON integer (not a boolean) within 64 bits
    (what `reading.raw` holds in either store); None for anything else."""
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return value
    return None


# class -> (the attribute holding scaler_unit, the attributes it scales) (Blue Book: register,
# extended register, demand register)
_SCALED_BY = {3: (3, (2,)), 4: (3, (2,)), 5: (4, (2, 3))}


def scaler_units(readings: Iterable["Reading"]) -> dict[tuple[str, int], tuple[int, int]]:
    """(OBIS, attribute) -> (scaler, unit) that the values themselves say: a register's
    scaler_unit pushed along with its value."""
    found = {}
    for r in readings:
        scaled = _SCALED_BY.get(r.class_id)
        if scaled is None or r.attribute != scaled[0]:
            continue
        pair = r.value
        if (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)
                and -128 <= pair[0] <= 127 and 0 <= pair[1] <= 255):
            for attribute in scaled[1]:
                found[(r.obis, attribute)] = (pair[0], pair[1])
    return found


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
    apdu: bytes | None = None  # the push as it came (ciphered), kept in raw_push
    source: str = ""  # where it came from (the sender's address)
    key_id: str = ""  # the fingerprint of the key its tag verified with (push_listener.push_key_id)


SERIES_CACHE = 100_000  # series ids a store remembers (beyond, it starts again)


class PushStore:
    """The SQLite file; one writer (the listener), any number of readers (`hes show`).

    `upgraded_from`: the layout version the file had when this writer brought it to
    SCHEMA_VERSION (None when it had that already or was new)."""

    def __init__(self, path: str | Path, *, read_only: bool = False, deferred: bool = False,
                 max_pending: int = 256) -> None:
        self.path = Path(path)
        self.deferred = deferred
        self.max_pending = max_pending
        self._pending = 0
        self.read_only = read_only
        self.upgraded_from: int | None = None
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path}: no such database")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self.db.execute("PRAGMA busy_timeout=5000")
            if read_only:
                self._check_readable(self._layout_version())
            else:
                self.db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a commit survives the process dying; only a power loss may lose the
                # last transactions (and with them their counters: nothing half stored either way)
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._open_layout()
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.DatabaseError) and exc.sqlite_errorname == "SQLITE_NOTADB":
                raise SchemaError(f"{self.path}: not an SQLite file (not a file of `smartmeter hes listen`)") from None
            raise
        self._series: dict[tuple[int, str, int], int] = {}  # (meter id, OBIS, attribute) -> series id

    def _layout_version(self) -> int:
        """The file's layout version: 1 for the first layout (which wrote none), 0 for a file
        without tables (a new one)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reading'").fetchone():
            return 1
        return version

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: layout version {version}; this smartmeter knows up to "
                              f"{SCHEMA_VERSION}: use the newer smartmeter that wrote it")

    def _check_readable(self, version: int) -> None:
        """A reader takes the file as it is, or refuses it: it never writes (an older listener
        may still be writing the file, and would fail on a layout it does not know)."""
        self._check_version(version)
        if version == 0:
            raise SchemaError(f"{self.path}: no pushes in it (not a file of `smartmeter hes listen`)")
        if version < READABLE_LAYOUT:
            raise SchemaError(f"{self.path}: layout version {version}, of an older smartmeter, left as it is; "
                              f"stop the listener writing it, then `smartmeter hes upgrade --db {self.path}` "
                              f"brings it to version {SCHEMA_VERSION}")

    def _open_layout(self) -> None:
        """Make the tables of a new file, or bring an older file's to this layout (one
        transaction, then the space the old tables held given back)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return  # nothing to write: no write lock taken
        self._check_version(version)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self._layout_version()  # another writer may have upgraded it meanwhile
            self._check_version(version)
            if version == 0:
                for statement in _statements(SCHEMA):
                    self.db.execute(statement)
            if version == 1:
                self._upgrade_1_to_2()
            if 1 <= version <= 2:
                self._upgrade_2_to_3()
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if 1 <= version < SCHEMA_VERSION:
            self.upgraded_from = version
            self._compact()

    def _compact(self) -> None:
        """Give back the pages the old layout's tables held (VACUUM: the file rewritten, in a
        transaction of its own; the WAL it grew truncated). A file that cannot be compacted now
        (the disk too full for the copy, a reader holding the file) stays as upgraded, larger."""
        try:
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("%s: upgraded, but not compacted (%s): its free pages are used by the next pushes",
                        self.path, exc)

    def _count(self, table: str) -> int:
        return self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def _counts_kept(self, what: str, before: int, after: int) -> None:
        if after != before:  # the old key is part of the new one: every row has its place
            raise SchemaError(f"{self.path}: {before} {what} before the upgrade, {after} after; "
                              "the file is left as it was")

    def _upgrade_1_to_2(self) -> None:
        before = self._count("reading")
        for step in _UPGRADE_1_TO_2_STEPS:
            if step == "@v2_tables":
                for statement in _V2_TABLES:
                    self.db.execute(statement)
            elif step == "@check_counts":
                self._counts_kept("readings", before, self._count("reading") + self._count("reading_data"))
            else:
                self.db.execute(step)

    def _upgrade_2_to_3(self) -> None:
        before = {table: self._count(table) for table in _KEYED_TABLES}
        meters = self._count("meter")
        for table in _KEYED_TABLES:
            self.db.execute(f"ALTER TABLE {table} RENAME TO {table}_v2")
        for statement in _creating(*_KEYED_TABLES, "push_counter"):
            self.db.execute(statement)
        for table in _KEYED_TABLES:
            columns = ", ".join(row[1] for row in self.db.execute(f"PRAGMA table_info({table}_v2)"))
            self.db.execute(f"INSERT INTO {table} ({columns}, key_id) SELECT {columns}, '' FROM {table}_v2")
            self.db.execute(f"DROP TABLE {table}_v2")
            self._counts_kept(f"rows of {table}", before[table], self._count(table))
        self.db.execute("INSERT INTO push_counter (meter, key_id, last_invocation_counter) "
                        "SELECT system_title, '', last_invocation_counter FROM meter")
        self._counts_kept("meters' counters", meters, self._count("push_counter"))
        self.db.execute("ALTER TABLE meter DROP COLUMN last_invocation_counter")

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
        self._series.clear()  # series made since the last commit are gone

    # ------------------------------------------------------------------ replay protection

    def counters(self) -> dict[tuple[str, str], int]:
        """The highest accepted invocation counter of every meter under each of its keys, by
        (meter, key id)."""
        return {(meter, key_id): counter for meter, key_id, counter in self.db.execute(
            "SELECT meter, key_id, last_invocation_counter FROM push_counter")}

    def counter_used(self, meter: str, key_id: str, counter: int) -> bool:
        """Whether a push of `meter` under the key `key_id` with invocation counter `counter` was
        accepted (stored, or authenticated and recorded unstored)."""
        return self.db.execute(
            "SELECT 1 FROM push WHERE meter = ?1 AND key_id = ?2 AND invocation_counter = ?3 "
            "UNION ALL SELECT 1 FROM unstored_push WHERE meter = ?1 AND key_id = ?2 AND invocation_counter = ?3",
            (meter, key_id, counter)).fetchone() is not None

    def adopt_unkeyed(self, key_ids: dict[str, str]) -> int:
        """Give the rows kept from before layout 3 (key_id '': the file did not say under which
        key) of each meter of `key_ids` (system title -> key id) that key: the listener's key
        for the meter is the one they were made under, unless the meter's key changed while no
        listener of layout 3 ran (then its new key's pushes are refused until their counter
        passes the old one's, as before layout 3). One transaction; how many meters."""
        meters = [meter for (meter,) in self.db.execute("SELECT meter FROM push_counter WHERE key_id = ''")
                  if meter in key_ids]
        if meters:
            with self._transaction():
                for meter in meters:
                    for table, column in (*((t, "meter") for t in ("push", "unstored_push", "push_counter")),
                                          ("raw_push", "system_title")):
                        self.db.execute(f"UPDATE {table} SET key_id = ? WHERE {column} = ? AND key_id = ''",
                                        (key_ids[meter], meter))
            self.flush()
        return len(meters)

    def record_unstored(self, meter: str, key_id: str, counter: int, receive_time: str, reason: str,
                        forget_below: int, apdu: bytes | None = None, source: str = "") -> None:
        """An authenticated push that could not be stored as readings still uses up its counter
        (under its key `key_id`), and is kept as it came (`apdu`, in raw_push). Records of
        counters below `forget_below` (the replay window's floor: refused whatever was recorded)
        are dropped, so a meter whose pushes fit no list does not grow the table."""
        with self._transaction():
            self._touch_meter(meter, key_id, counter, receive_time)
            self.db.execute("INSERT OR IGNORE INTO unstored_push (meter, key_id, invocation_counter, receive_time, "
                            "reason) VALUES (?, ?, ?, ?, ?)", (meter, key_id, counter, receive_time, reason))
            self.db.execute("DELETE FROM unstored_push WHERE meter = ? AND key_id = ? AND invocation_counter < ?",
                            (meter, key_id, forget_below))
            self._raw_push(meter, key_id, counter, receive_time, source, apdu)

    # ------------------------------------------------------------------------ writing

    def add(self, push: StoredPush) -> int:
        """Store a push and its readings in one transaction; returns how many readings were new
        (a reading already stored for the same meter, object, attribute and time is kept)."""
        with self._transaction():
            meter_id = self._touch_meter(push.meter, push.key_id, push.invocation_counter, push.receive_time)
            if push.serial is not None or push.address is not None or push.registers:
                self.db.execute(
                    "UPDATE meter SET serial = coalesce(?, serial), address = coalesce(?, address), "
                    "registered = CASE WHEN ? THEN ? ELSE registered END WHERE system_title = ?",
                    (push.serial, push.address, push.registers, push.receive_time, push.meter))
            self.db.execute(
                "INSERT INTO push (meter, key_id, invocation_counter, receive_time, capture_time, kind, setup, "
                "value_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (push.meter, push.key_id, push.invocation_counter, push.receive_time, push.capture_time, push.kind,
                 push.setup, len(push.readings)))
            self._raw_push(push.meter, push.key_id, push.invocation_counter, push.receive_time, push.source,
                           push.apdu)
            scaled = scaler_units(push.readings)
            integers, others = [], []
            for r in push.readings:
                series = self._series_id(meter_id, r, scaled.get((r.obis, r.attribute)))
                raw = integer_raw(r.value)
                if raw is not None:
                    integers.append((series, push.capture_time, raw, push.receive_time))
                else:
                    others.append((series, push.capture_time, json.dumps(r.value, separators=(",", ":")),
                                   push.receive_time))
            before = self.db.total_changes
            # quality: pushes carry no status of their values
            self.db.executemany("INSERT OR IGNORE INTO reading (series_id, time, raw, quality, received) "
                                "VALUES (?, ?, ?, 0, ?)", integers)
            self.db.executemany("INSERT OR IGNORE INTO reading_data (series_id, time, data, received) "
                                "VALUES (?, ?, ?, ?)", others)
            return self.db.total_changes - before

    def _series_id(self, meter_id: int, r: Reading, scaler_unit: tuple[int, int] | None) -> int:
        key = (meter_id, r.obis, r.attribute)
        series = self._series.get(key)
        if series is None:
            self.db.execute("INSERT OR IGNORE INTO series (meter_id, source, obis, attribute, class_id) "
                            "VALUES (?, '', ?, ?, ?)", (meter_id, r.obis, r.attribute, r.class_id))
            series = self.db.execute("SELECT id FROM series WHERE meter_id = ? AND source = '' AND obis = ? "
                                     "AND attribute = ?", key).fetchone()[0]
            if len(self._series) >= SERIES_CACHE:
                self._series.clear()
            self._series[key] = series
        if scaler_unit is not None:
            self.db.execute("UPDATE series SET scaler = ?, unit = ? WHERE id = ? AND (scaler, unit) <> (?, ?)",
                            (*scaler_unit, series, *scaler_unit))
        return series

    def _raw_push(self, meter: str, key_id: str, counter: int, received: str, source: str,
                  apdu: bytes | None) -> None:
        if apdu is not None:
            self.db.execute("INSERT OR IGNORE INTO raw_push (system_title, key_id, invocation_counter, received, "
                            "stored, source, apdu) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (meter, key_id, counter, received, format_time(dt.datetime.now(dt.timezone.utc)),
                             source[:200], apdu))

    def _touch_meter(self, meter: str, key_id: str, counter: int, receive_time: str) -> int:
        """The meter's row made or brought up to date, and its highest counter under the key; its id."""
        meter_id = self.db.execute(
            "INSERT INTO meter (system_title, first_seen, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (system_title) DO UPDATE SET last_seen = excluded.last_seen "
            "RETURNING id", (meter, receive_time, receive_time)).fetchone()[0]
        self.db.execute(
            "INSERT INTO push_counter (meter, key_id, last_invocation_counter) VALUES (?, ?, ?) "
            "ON CONFLICT (meter, key_id) DO UPDATE SET "
            "last_invocation_counter = max(last_invocation_counter, excluded.last_invocation_counter)",
            (meter, key_id, counter))
        return meter_id

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
            self._series.clear()  # series made in the savepoint are gone
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
            where.append("m.system_title = ?")
            args.append(meter)
        obis = list(obis)
        if obis:
            where.append(f"s.obis IN ({', '.join('?' * len(obis))})")
            args.extend(obis)
        if start is not None:
            where.append("r.time >= ?")
            args.append(start)
        if end is not None:
            where.append("r.time < ?")
            args.append(end)
        condition = (" WHERE " + " AND ".join(where)) if where else ""
        series = "JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id"
        sql = (f"SELECT m.system_title, s.obis, s.attribute, s.class_id, r.time, r.received, r.raw, NULL "
               f"FROM reading r {series}{condition} UNION ALL "
               f"SELECT m.system_title, s.obis, s.attribute, s.class_id, r.time, r.received, NULL, r.data "
               f"FROM reading_data r {series}{condition} ORDER BY 1, 2, 3, 5")
        for row in self.db.execute(sql, args + args):
            yield (*row[:6], row[6] if row[7] is None else json.loads(row[7]))

    def meters(self) -> list[tuple]:
        """(system_title, serial, address, first_seen, last_seen, registered, pushes) of every meter."""
        return list(self.db.execute(
            "SELECT m.system_title, m.serial, m.address, m.first_seen, m.last_seen, m.registered, "
            "(SELECT count(*) FROM push p WHERE p.meter = m.system_title) FROM meter m ORDER BY m.system_title"))

    def push_count(self, meter: str | None = None) -> int:
        if meter is None:
            return self.db.execute("SELECT count(*) FROM push").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM push WHERE meter = ?", (meter,)).fetchone()[0]
