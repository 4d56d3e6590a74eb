"""Event logs of the legally relevant part, and event counters.

An `EventLog` is a named `ChainedTable` whose `kind` is the event id and whose payload is
the event's fields in CANONICAL JSON:

    UTF-8 of json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

Field names are non-empty strings; values are int (signed 64-bit), str, bool, None or bytes;
bytes are written as the one-key object {"hex": "<lower-case hex>"} (JSON has no bytes, and
no other value is an object, so this cannot be confused). No floats: logged legal values are
exact integers. Decoding accepts only the canonical form (re-encoding must give the stored
bytes), so one set of fields has exactly one payload and one hash.

Each append is one transaction that also increments, in `EventCounters` (same store),
    "<log>"              every event ever appended to the log (equals the newest seq), and
    "<log>/<event_id>"   every event of that id,
and a refusal because the log is full increments "<log>/refused_full" (its own transaction):
WELMEC 7.2 P7(b) event counters that only go up, and L8's "warn when storage is full".

`CertificationLog` is the certification-protected event log of the companion standard §5.17
(0-0:99.98.98.255): time, event id, client system title of the initiator, active legally
relevant firmware identifier; at least 100 entries; when full it REFUSES (the caller must
then refuse the action to be logged, e.g. a firmware activation: WELMEC 7.2 D4).
"""
from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Mapping

from smartmeter.legal.chain import (
    I64_MAX,
    I64_MIN,
    ChainedTable,
    LogFull,
    OnFull,
    VerifyReport,
    atomic,
)
from smartmeter.legal.signing import MeterSigner

FieldValue = int | str | bool | None | bytes

MAX_FIELDS = 64
_HEX = re.compile(r"[0-9a-f]*")


class EventDecodeError(Exception):
    """A stored event payload is not the canonical JSON of a field set."""


# -- canonical payload -------------------------------------------------------------------------


def encode_fields(fields: Mapping[str, FieldValue]) -> bytes:
    """The canonical JSON payload of `fields` (see the module documentation)."""
    if not isinstance(fields, Mapping):
        raise TypeError("fields must be a mapping of str to int, str, bool, None or bytes")
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"more than {MAX_FIELDS} fields")
    plain: dict[str, object] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not key:
            raise TypeError("field names must be non-empty strings")
        if isinstance(value, (bytes, bytearray, memoryview)):
            plain[key] = {"hex": bytes(value).hex()}
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            plain[key] = value
        elif isinstance(value, int):
            if not I64_MIN <= value <= I64_MAX:
                raise ValueError(f"field {key!r}: integer outside the signed 64-bit range")
            plain[key] = int(value)
        else:
            raise TypeError(f"field {key!r}: {type(value).__name__} is not a loggable value")
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not canonical JSON")


def decode_fields(payload: bytes) -> dict[str, FieldValue]:
    """The fields of a canonical payload; EventDecodeError for anything else. Total."""
    try:
        text = payload.decode("ascii")
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=lambda s: _reject_constant(s))
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError, TypeError) as exc:
        raise EventDecodeError(f"payload is not canonical JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise EventDecodeError("payload is not a JSON object")
    fields: dict[str, FieldValue] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            hex_text = value.get("hex")
            if len(value) != 1 or not isinstance(hex_text, str) or len(hex_text) % 2 or not _HEX.fullmatch(hex_text):
                raise EventDecodeError(f"field {key!r}: not a canonical bytes value")
            fields[key] = bytes.fromhex(hex_text)
        elif isinstance(value, list):
            raise EventDecodeError(f"field {key!r}: lists are not loggable values")
        else:
            fields[key] = value
    try:
        canonical = encode_fields(fields)
    except (TypeError, ValueError) as exc:
        raise EventDecodeError(str(exc)) from None
    if canonical != payload:
        raise EventDecodeError("payload is not in canonical form")
    return fields


# -- counters ----------------------------------------------------------------------------------


class EventCounters:
    """Named counters that only go up, in the same store as the logs. `increment` joins the
    caller's transaction (savepoint), so a counter and the entry it counts commit together.

    Protection: counters are plain rows (no signature of their own). Those kept by an
    EventLog are cross-checked by `EventLog.verify` against the signed chain ("<log>" must
    equal the newest seq; "<log>/<id>" must be at least the entries of that id present, and
    equal to it in a log that never removes entries)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        with atomic(db):
            db.execute(
                "CREATE TABLE IF NOT EXISTS event_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT"
            )

    def increment(self, name: str, by: int = 1) -> int:
        """Add `by` (>= 1) to counter `name`, creating it at 0; returns the new value."""
        if not isinstance(name, str) or not name:
            raise ValueError("counter name must be a non-empty string")
        if type(by) is not int or by < 1:
            raise ValueError("counters only go up: by must be a positive integer")
        with atomic(self.db):
            (value,) = self.db.execute(
                "INSERT INTO event_counter(name, value) VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value = value + excluded.value RETURNING value",
                (name, by),
            ).fetchone()
        return value

    def value(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM event_counter WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else row[0]

    def snapshot(self, prefix: str = "") -> dict[str, int]:
        """All counters whose name starts with `prefix`, as a new dict."""
        rows = self.db.execute("SELECT name, value FROM event_counter ORDER BY name").fetchall()
        return {name: value for name, value in rows if name.startswith(prefix)}


# -- event logs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time_utc: int
    event_id: int
    fields: Mapping[str, FieldValue]  # read-only view


class EventLog:
    """A named, hash-linked, signed event log. Defaults suit legally relevant logs: refuse
    when full, and a checkpoint with EVERY entry (checkpoint_every=1), so that no entry is
    ever only hash-linked (see chain.py on the unsigned tail)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        name: str,
        capacity: int,
        signer: MeterSigner,
        on_full: OnFull = "refuse",
        checkpoint_every: int = 1,
    ) -> None:
        self.name = name
        self.table = ChainedTable(db, name, capacity, on_full, signer, checkpoint_every)
        self.counters = EventCounters(db)
        self.db = db

    @property
    def capacity(self) -> int:
        return self.table.capacity

    def append(self, time_utc: int, event_id: int, fields: Mapping[str, FieldValue]) -> Event:
        payload = encode_fields(fields)
        try:
            with atomic(self.db):
                entry = self.table.append(time_utc, event_id, payload)
                self.counters.increment(self.name)
                self.counters.increment(f"{self.name}/{event_id}")
        except LogFull:
            self.counters.increment(f"{self.name}/refused_full")
            raise
        return Event(entry.seq, entry.time_utc, entry.kind, MappingProxyType(dict(fields)))

    def is_full(self) -> bool:
        return self.table.on_full == "refuse" and self.table.count() >= self.table.capacity

    def _event(self, entry) -> Event:
        try:
            fields = decode_fields(entry.payload)
        except EventDecodeError:
            fields = {"undecodable_payload": entry.payload}
        return Event(entry.seq, entry.time_utc, entry.kind, MappingProxyType(fields))

    def events(self, first_seq: int | None = None, last_seq: int | None = None) -> list[Event]:
        return [self._event(e) for e in self.table.entries(first_seq, last_seq)]

    def between(self, time_from: int | None, time_to: int | None) -> list[Event]:
        return [self._event(e) for e in self.table.between(time_from, time_to)]

    def count(self) -> int:
        return self.table.count()

    def last(self) -> Event | None:
        entry = self.table.last()
        return None if entry is None else self._event(entry)

    def checkpoint(self):
        return self.table.checkpoint()

    def verify(self, public_key_pem: bytes, expect_at_least: int | None = None) -> VerifyReport:
        return verify_event_log(self.db, self.name, public_key_pem, expect_at_least)


def verify_event_log(
    db: sqlite3.Connection, name: str, public_key_pem: bytes, expect_at_least: int | None = None
) -> VerifyReport:
    """The chain verification of `name`, then: every payload canonical, and the counters of
    the log consistent with it. Read-only; never raises for what it finds in the store."""
    from smartmeter.legal.chain import verify_table  # local: keeps the public surface small

    report = verify_table(db, name, public_key_pem, expect_at_least)
    if not report.ok:
        return report
    try:
        rows = db.execute("SELECT seq, kind, payload FROM chain_entry WHERE tbl = ? ORDER BY seq", (name,)).fetchall()
        refuse = db.execute("SELECT on_full FROM chain_table WHERE name = ?", (name,)).fetchone()
        counters = dict(
            db.execute(
                "SELECT name, value FROM event_counter WHERE name = ? OR substr(name, 1, ?) = ?",
                (name, len(name) + 1, name + "/"),
            ).fetchall()
        )
    except sqlite3.Error as exc:
        return VerifyReport(False, report.checked, None, f"store unreadable: {type(exc).__name__}: {exc}")
    per_id: dict[int, int] = {}
    for seq, kind, payload in rows:
        try:
            decode_fields(payload)
        except EventDecodeError as exc:
            return VerifyReport(False, report.checked, seq, f"entry {seq}: {exc}")
        per_id[kind] = per_id.get(kind, 0) + 1
    total = counters.get(name, 0)
    if total != report.last_seq:
        return VerifyReport(False, report.checked, None,
                            f"event counter {name!r} is {total} but {report.last_seq} events were appended")
    never_removes = refuse is not None and refuse[0] == "refuse"
    for kind, present in sorted(per_id.items()):
        counted = counters.get(f"{name}/{kind}", 0)
        if counted < present or (never_removes and counted != present):
            return VerifyReport(False, report.checked, None,
                                f"event counter '{name}/{kind}' is {counted} but {present} such events are logged")
    if never_removes:
        for counter, value in counters.items():
            suffix = counter[len(name) + 1:] if counter != name else None
            if suffix and suffix.isdigit() and per_id.get(int(suffix), 0) != value:
                return VerifyReport(False, report.checked, None,
                                    f"event counter {counter!r} is {value} but {per_id.get(int(suffix), 0)} "
                                    "such events are logged")
    return report


# -- the certification-protected event log (companion standard §5.17) ------------------------

CERTIFICATION_LOG_NAME = "certification"
CERTIFICATION_LOG_OBIS = "0-0:99.98.98.255"
CERTIFICATION_EVENT_ID_OBIS = "0-0:96.11.98.255"
CERTIFICATION_LOG_MIN_CAPACITY = 100
SYSTEM_TITLE_SIZE = 8


class CertificationEvent(IntEnum):
    """Certification event ids of §5.17 (legally relevant firmware download status)."""

    LR_FIRMWARE_READY_FOR_ACTIVATION = 17
    LR_FIRMWARE_ACTIVATED = 18
    LR_FIRMWARE_VERIFICATION_OR_ACTIVATION_FAILED = 51


@dataclass(frozen=True, slots=True)
class CertificationRecord:
    """One entry of 0-0:99.98.98.255, in capture-object order."""

    seq: int
    time_utc: int
    event_id: int
    client_system_title: bytes
    active_firmware_id: bytes


class CertificationLog:
    """The certification-protected event log: refuses when full, every entry signed.

    Event ids are long-unsigned (0..65535); the ids §5.17 defines are `CertificationEvent`,
    others (e.g. parameter changes) may be added by the legally relevant part."""

    def __init__(self, db: sqlite3.Connection, signer: MeterSigner, capacity: int = CERTIFICATION_LOG_MIN_CAPACITY,
                 name: str = CERTIFICATION_LOG_NAME) -> None:
        if type(capacity) is not int or capacity < CERTIFICATION_LOG_MIN_CAPACITY:
            raise ValueError(f"the certification log holds at least {CERTIFICATION_LOG_MIN_CAPACITY} entries (§5.17)")
        self.log = EventLog(db, name, capacity, signer, on_full="refuse", checkpoint_every=1)

    def append(self, time_utc: int, event_id: int, client_system_title: bytes, active_firmware_id: bytes | str
               ) -> CertificationRecord:
        """Raises LogFull when the log is full: the action being logged must then be refused."""
        if type(event_id) is not int and not isinstance(event_id, IntEnum) or not 0 <= event_id <= 0xFFFF:
            raise ValueError("certification event id must be an integer 0..65535")
        if not isinstance(client_system_title, (bytes, bytearray)) or len(client_system_title) != SYSTEM_TITLE_SIZE:
            raise ValueError(f"client system title must be {SYSTEM_TITLE_SIZE} bytes")
        if isinstance(active_firmware_id, str):
            active_firmware_id = active_firmware_id.encode("ascii")
        if not isinstance(active_firmware_id, (bytes, bytearray)) or len(active_firmware_id) > 255:
            raise ValueError("active firmware identifier must be at most 255 bytes")
        event = self.log.append(
            time_utc,
            int(event_id),
            {"client_system_title": bytes(client_system_title), "active_firmware_id": bytes(active_firmware_id)},
        )
        return CertificationRecord(event.seq, event.time_utc, event.event_id, bytes(client_system_title),
                                   bytes(active_firmware_id))

    @staticmethod
    def _record(event: Event) -> CertificationRecord:
        title = event.fields.get("client_system_title", b"")
        firmware = event.fields.get("active_firmware_id", b"")
        return CertificationRecord(event.seq, event.time_utc, event.event_id,
                                   title if isinstance(title, bytes) else b"",
                                   firmware if isinstance(firmware, bytes) else b"")

    def records(self, first_seq: int | None = None, last_seq: int | None = None) -> list[CertificationRecord]:
        return [self._record(e) for e in self.log.events(first_seq, last_seq)]

    def between(self, time_from: int | None, time_to: int | None) -> list[CertificationRecord]:
        return [self._record(e) for e in self.log.between(time_from, time_to)]

    def count(self) -> int:
        return self.log.count()

    @property
    def capacity(self) -> int:
        return self.log.capacity

    def is_full(self) -> bool:
        return self.log.is_full()

    def verify(self, public_key_pem: bytes, expect_at_least: int | None = None) -> VerifyReport:
        return self.log.verify(public_key_pem, expect_at_least)
