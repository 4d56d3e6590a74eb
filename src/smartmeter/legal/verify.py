"""Offline verification of a meter's data directory (WELMEC 7.2 L6: check, warn, do not use).

`verify_data_dir` opens the store READ-ONLY (SQLite URI mode=ro; the meter may be running
or not), takes the exported public key (never the private key), and verifies every chained
table the store mentions plus every table the caller says must exist. It backs
`smartmeter verify-log DATA_DIR` and `smartmeter verify-storage DATA_DIR`.

Trust: by default the public key is the exported `meter-signing-key.pub.pem` beside the
store. That catches every change made without the private key, but an attacker who
replaces the key pair, re-signs everything and replaces the exported public key is only
caught by comparing `TableReport.key_fingerprint` with the fingerprint established by
direct trust (shown on the meter's display, recorded at verification), or by passing the
trusted public key as `public_key_pem`.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from smartmeter.legal import chain, signing
from smartmeter.legal.eventlog import CERTIFICATION_LOG_NAME, verify_event_log
from smartmeter.legal.parameters import verify_parameter_store

STORE_FILE = "legal.sqlite3"  # the name storage.open_store uses
STORE_REPORT_NAME = "(store)"  # TableReport.name of problems that concern the whole store


@dataclass(frozen=True, slots=True)
class TableReport:
    name: str
    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str
    last_seq: int = 0
    signed_through: int = 0
    unsigned_tail: int = 0
    key_fingerprint: str = ""

    @classmethod
    def from_verify(cls, name: str, report: chain.VerifyReport, fingerprint: str) -> "TableReport":
        return cls(name, report.ok, report.checked, report.first_bad_seq, report.problem, report.last_seq,
                   report.signed_through, report.unsigned_tail, fingerprint)


def _store_problem(problem: str, fingerprint: str = "") -> list[TableReport]:
    return [TableReport(STORE_REPORT_NAME, False, 0, None, problem, key_fingerprint=fingerprint)]


def open_read_only(store: Path) -> sqlite3.Connection:
    """A connection that cannot write: mode=ro refuses every write, and a missing file is an
    error instead of a new empty store."""
    uri = "file:" + str(store.resolve()).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA query_only=ON")
    return db


def verify_data_dir(
    data_dir: Path,
    public_key_pem: bytes | None = None,
    key_dir: Path | None = None,
    expected_tables: Iterable[str] = (),
    event_logs: Iterable[str] = (CERTIFICATION_LOG_NAME,),
    store_file: str = STORE_FILE,
) -> list[TableReport]:
    """Verify every chained table of the store in `data_dir`; one report per table, sorted by
    name, or a single "(store)" report when the store or the key cannot be used.

    public_key_pem: the trusted public key; default: `key_dir/meter-signing-key.pub.pem`
    (key_dir defaults to data_dir). expected_tables: names that must exist (a table removed
    entirely cannot be noticed otherwise). event_logs: names verified as event logs
    (canonical payloads, counters), in addition to every table that has event counters."""
    data_dir = Path(data_dir)
    if public_key_pem is None:
        key_path = Path(key_dir if key_dir is not None else data_dir) / signing.PUBLIC_KEY_FILE
        try:
            public_key_pem = key_path.read_bytes()
        except OSError as exc:
            return _store_problem(f"public key {key_path} unreadable: {exc.strerror or exc}")
    try:
        fingerprint = signing.public_key_fingerprint(public_key_pem)
    except (ValueError, TypeError):
        return _store_problem("the public key is not a PEM public key")
    store = data_dir / store_file
    if not store.is_file():
        return _store_problem(f"no store at {store}", fingerprint)
    try:
        db = open_read_only(store)
    except sqlite3.Error as exc:
        return _store_problem(f"store cannot be opened read-only: {exc}", fingerprint)
    try:
        try:
            names = set(chain.table_names(db))
            counted = {row[0] for row in db.execute("SELECT name FROM event_counter")}
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                return _store_problem(f"store damaged: {exc}", fingerprint)
            counted = set()
        expected = set(expected_tables)
        as_event_log = set(event_logs) | counted
        reports = []
        for name in sorted(names | expected, key=str):
            if not isinstance(name, str):
                reports.append(TableReport(repr(name), False, 0, None, "table name is not text", key_fingerprint=fingerprint))
                continue
            if name not in names:
                reports.append(TableReport(name, False, 0, None, "table missing (removed)", key_fingerprint=fingerprint))
                continue
            if name in as_event_log:
                report = verify_event_log(db, name, public_key_pem)
            else:
                report = chain.verify_table(db, name, public_key_pem)
            reports.append(TableReport.from_verify(name, report, fingerprint))
        if not reports:
            return [TableReport(STORE_REPORT_NAME, True, 0, None, "no chained tables in the store",
                                key_fingerprint=fingerprint)]
        return reports
    finally:
        db.close()


PARAMETERS_REPORT_NAME = "parameters"


def verify_parameters(data_dir: Path, public_key_pem: bytes | None = None, store_file: str = STORE_FILE) -> TableReport:
    """The meter's signature over the stored parameters and certification mode state
    (legal/parameters.py), read-only. A store in which anything was chained (the meter has
    run) must carry that signature."""
    data_dir = Path(data_dir)
    if public_key_pem is None:
        try:
            public_key_pem = (data_dir / signing.PUBLIC_KEY_FILE).read_bytes()
        except OSError as exc:
            return TableReport(PARAMETERS_REPORT_NAME, False, 0, None, f"public key unreadable: {exc.strerror or exc}")
    try:
        fingerprint = signing.public_key_fingerprint(public_key_pem)
    except (ValueError, TypeError):
        return TableReport(PARAMETERS_REPORT_NAME, False, 0, None, "the public key is not a PEM public key")
    try:
        db = open_read_only(data_dir / store_file)
    except sqlite3.Error as exc:
        return TableReport(PARAMETERS_REPORT_NAME, False, 0, None, f"store cannot be opened read-only: {exc}",
                           key_fingerprint=fingerprint)
    try:
        try:
            has_chain = "chain_entry" in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            in_use = has_chain and db.execute("SELECT 1 FROM chain_entry LIMIT 1").fetchone() is not None
        except sqlite3.Error:
            in_use = True
        problem, checked = verify_parameter_store(db, public_key_pem, signing.verify, in_use)
    finally:
        db.close()
    return TableReport(PARAMETERS_REPORT_NAME, not problem, checked, None, problem, key_fingerprint=fingerprint)


def all_ok(reports: Iterable[TableReport]) -> bool:
    """What a CLI exits on: 0 only if every report is ok."""
    reports = list(reports)
    return bool(reports) and all(r.ok for r in reports)
