"""Tampering with a stopped meter's store (WELMEC 7.2 I3-4 / L: protection of stored legally
relevant data; P5 / U5 for the registers): every change to the load profile, the event logs
or the energy registers is reported offline by `smartmeter verify-storage` / `verify-log`
(where they cover the table: exit 1, naming the table and the entry) and, at the next start,
by the meter itself: fatal error register 0-0:97.97.128.255 bit 0x04 (read over DLMS by the
public client) and event 201 "store damaged" in its metrological log (read from the store,
read-only).

The "relinked" variants are the strongest change possible without the meter's private key:
the attacker re-implements the documented hash chain (legal/chain.py's module documentation,
independently here), renumbers the entries and recomputes every hash after the change, so
every link holds; only the signed checkpoints can give it away."""
from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authority_support import certification_token
from meterproc import start_meter
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.legal import interface as legal

FATAL_ERRORS = "0-0:97.97.128.255"
FATAL_NV_MEMORY = 0x04
EVENT_STORE_DAMAGED = 201
PROFILE = "lp1"
CERTIFICATION_TITLE = "4345525401020304"  # "CERT" 01 02 03 04


# -- the attacker's tools: the documented chain encoding, re-implemented -------------------------

def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _entry_hash(table: str, seq: int, time_utc: int, kind: int, payload: bytes, prev_hash: bytes) -> bytes:
    return hashlib.sha256(b"smartmeter/chain/entry/v1\0" + _lp(table.encode()) + seq.to_bytes(8, "big")
                          + time_utc.to_bytes(8, "big", signed=True) + kind.to_bytes(4, "big") + _lp(payload)
                          + prev_hash).digest()


def _entries(db: sqlite3.Connection, table: str) -> list[list]:
    return [list(r) for r in db.execute(
        "SELECT seq, time_utc, kind, payload, prev_hash, hash FROM chain_entry WHERE tbl = ? ORDER BY seq", (table,))]


def _relink(db: sqlite3.Connection, table: str, rows: list[list]) -> None:
    """Write `rows` (seq, time, kind, payload, ...) as the whole table: renumbered from the
    first seq, every prev_hash and hash recomputed so that all links hold."""
    first_seq, prev = rows[0][0], rows[0][4]
    db.execute("DELETE FROM chain_entry WHERE tbl = ?", (table,))
    for offset, (_, time_utc, kind, payload, *_rest) in enumerate(rows):
        seq = first_seq + offset
        digest = _entry_hash(table, seq, time_utc, kind, bytes(payload), prev)
        db.execute("INSERT INTO chain_entry(tbl, seq, time_utc, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
                   (table, seq, time_utc, kind, payload, prev, digest))
        prev = digest


# -- the tamperings: (data dir store) -> (command that must report it, table, first entry it can name, last) --

def flip_profile_byte(db):
    """(a) one byte of a stored load-profile entry's payload (its +A value)."""
    (payload,) = db.execute("SELECT payload FROM chain_entry WHERE tbl = ? AND seq = 1000", (PROFILE,)).fetchone()
    changed = bytearray(payload)
    changed[8] ^= 0x01
    db.execute("UPDATE chain_entry SET payload = ? WHERE tbl = ? AND seq = 1000", (bytes(changed), PROFILE))
    return "verify-storage", PROFILE, 1000, 1000


def delete_profile_row(db):
    """(b) delete one load-profile entry."""
    db.execute("DELETE FROM chain_entry WHERE tbl = ? AND seq = 1500", (PROFILE,))
    return "verify-storage", PROFILE, 1500, 1501


def delete_profile_row_relinked(db):
    """(b') delete one entry, renumber the rest and relink them."""
    rows = [r for r in _entries(db, PROFILE) if r[0] != 1500]
    _relink(db, PROFILE, rows)
    return "verify-storage", PROFILE, 1500, 1504  # the checkpoint of entry 1504 (32 x 47) no longer matches


def insert_profile_row(db):
    """(c) insert a forged entry (its own hash right, linked to its predecessor) between two."""
    rows = _entries(db, PROFILE)
    at = next(i for i, r in enumerate(rows) if r[0] == 1200)
    forged = [1200, rows[at - 1][1] + 450, 0, rows[at - 1][3], None, None]  # same values, mid-period
    db.execute("DELETE FROM chain_entry WHERE tbl = ?", (PROFILE,))
    prev = rows[at - 1][5]
    digest = _entry_hash(PROFILE, 1200, forged[1], 0, forged[3], prev)
    shifted = [[r[0] + 1, *r[1:]] for r in rows[at:]]
    for r in rows[:at]:
        db.execute("INSERT INTO chain_entry VALUES (?,?,?,?,?,?,?)", (PROFILE, *r))
    db.execute("INSERT INTO chain_entry VALUES (?,?,?,?,?,?,?)", (PROFILE, 1200, forged[1], 0, forged[3], prev, digest))
    for r in shifted:  # the rest moved up by one, unchanged otherwise
        db.execute("INSERT INTO chain_entry VALUES (?,?,?,?,?,?,?)", (PROFILE, *r))
    return "verify-storage", PROFILE, 1200, 1201


def insert_profile_row_relinked(db):
    """(c') insert a forged entry and relink everything after it."""
    rows = _entries(db, PROFILE)
    at = next(i for i, r in enumerate(rows) if r[0] == 1200)
    forged = [0, rows[at - 1][1] + 450, 0, rows[at - 1][3], None, None]
    _relink(db, PROFILE, rows[:at] + [forged] + rows[at:])
    return "verify-storage", PROFILE, 1200, 1216  # the checkpoint of entry 1216 (32 x 38)


def swap_profile_rows(db):
    """(d) swap the contents of two neighbouring entries (time and values)."""
    a, b = (db.execute("SELECT time_utc, payload FROM chain_entry WHERE tbl = ? AND seq = ?", (PROFILE, s)).fetchone()
            for s in (1000, 1001))
    for seq, (t, p) in ((1000, b), (1001, a)):
        db.execute("UPDATE chain_entry SET time_utc = ?, payload = ? WHERE tbl = ? AND seq = ?", (t, p, PROFILE, seq))
    return "verify-storage", PROFILE, 1000, 1000


def swap_profile_rows_relinked(db):
    """(d') swap two entries and relink."""
    rows = _entries(db, PROFILE)
    i = next(i for i, r in enumerate(rows) if r[0] == 1000)
    rows[i], rows[i + 1] = rows[i + 1], rows[i]
    _relink(db, PROFILE, rows)
    return "verify-storage", PROFILE, 1000, 1024  # the checkpoint of entry 1024 (32 x 32)


def edit_energy_register(db):
    """(e) the stored +A register, 1 kWh less (as someone who wants a smaller bill would)."""
    db.execute("UPDATE energy_register SET milli_units = milli_units - 1000000 WHERE name = 'a_plus'")
    return None, "energy_register", None, None  # no offline command covers the registers (see the test)


def edit_metrological_log(db):
    """(f) a metrological log entry's fields (the demo history event: how many entries)."""
    (payload,) = db.execute("SELECT payload FROM chain_entry WHERE tbl = 'metrological' AND seq = 1").fetchone()
    fields = json.loads(payload)
    fields["entries"] += 1
    db.execute("UPDATE chain_entry SET payload = ? WHERE tbl = 'metrological' AND seq = 1",
               (json.dumps(fields, separators=(",", ":"), sort_keys=True).encode(),))
    return "verify-log", "metrological", 1, 1


def edit_certification_log_relinked(db):
    """(f') the certification-protected log: the mode's start entry moved one hour back,
    relinked (every entry of the log is signed: the first signature gives it away)."""
    rows = _entries(db, "certification")
    rows[0][1] -= 3600
    _relink(db, "certification", rows)
    return "verify-log", "certification", 1, 1


TAMPERINGS = [flip_profile_byte, delete_profile_row, delete_profile_row_relinked, insert_profile_row,
              insert_profile_row_relinked, swap_profile_rows, swap_profile_rows_relinked, edit_energy_register,
              edit_metrological_log, edit_certification_log_relinked]


# -- helpers ---------------------------------------------------------------------------------------

def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=60)


def read_fatal_errors(port: int) -> int:
    async def go():
        async with MeterClient(WrapperLink("127.0.0.1", port)) as client:
            return (await client.get(FATAL_ERRORS, 2, class_id=1)).value
    return int(asyncio.run(go()))


def metrological_events(data_dir: Path) -> list[tuple[int, dict]]:
    db = sqlite3.connect(f"file:{data_dir / 'legal.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind, payload FROM chain_entry WHERE tbl = 'metrological' ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(kind, json.loads(payload)) for kind, payload in rows]


def start_and_read_fatal(data_dir: Path) -> int:
    meter = start_meter(data_dir)
    try:
        return read_fatal_errors(meter.wrapper_port)
    finally:
        assert meter.stop() == 0, "".join(meter.output)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A stopped meter's data directory: 30 days of load profile (2880 entries), energy
    registered in real time, a metrological log entry and two certification log entries."""
    data_dir = tmp_path_factory.mktemp("pristine") / "meter-data"
    meter = start_meter(data_dir)
    try:
        first = meter.store().execute("SELECT sum(milli_units) FROM energy_register").fetchone()[0]
        deadline = time.monotonic() + 10
        while meter.store().execute("SELECT sum(milli_units) FROM energy_register").fetchone()[0] == first:
            assert time.monotonic() < deadline, "no energy registered"
            time.sleep(0.1)
    finally:
        assert meter.stop() == 0
    part = legal.LegalInterface(data_dir)  # the certification authority starts and ends the mode
    try:
        now = int(time.time())
        secret = bytes.fromhex(json.loads((data_dir / "credentials" / "certification.json").read_text())["hls_secret"])
        token = certification_token(part, CERTIFICATION_TITLE, secret)
        part.execute(legal.SetCertificationMode(True, now, CERTIFICATION_TITLE, token))
        part.execute(legal.SetCertificationMode(False, now + 60, CERTIFICATION_TITLE, token))
    finally:
        part.close()
    return data_dir


def copy_store(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "meter-data"
    shutil.copytree(pristine, target)
    return target


@pytest.mark.welmec("L2", "L3", "L6", "P5", "U5")
def test_the_untouched_store_verifies_and_starts_without_fatal_error(pristine, tmp_path):
    """The control: without tampering, both commands pass, the meter starts with fatal errors 0
    and logs no event 201 - so what the other tests see comes from the tampering."""
    data_dir = copy_store(pristine, tmp_path)
    for command in ("verify-storage", "verify-log"):
        done = smartmeter(command, str(data_dir))
        assert done.returncode == 0, done.stdout + done.stderr
    out = smartmeter("verify-log", str(data_dir)).stdout
    assert "certification: ok, 2 entries" in out and "metrological: ok, 1 entries" in out
    assert "lp1: ok, 2880 entries" in smartmeter("verify-storage", str(data_dir)).stdout
    assert start_and_read_fatal(data_dir) == 0
    assert EVENT_STORE_DAMAGED not in [kind for kind, _ in metrological_events(data_dir)]


@pytest.mark.welmec("L2", "L3", "L6", "P5", "U5", "I3-4")
@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__)
def test_tampering_is_reported_offline_and_at_the_next_start(pristine, tmp_path, tamper):
    data_dir = copy_store(pristine, tmp_path)
    db = sqlite3.connect(data_dir / "legal.sqlite3", isolation_level=None)
    try:
        db.execute("BEGIN")
        command, table, first_entry, last_entry = tamper(db)
        db.execute("COMMIT")
    finally:
        db.close()

    # offline: the command covering the table fails, names the table and the entry; the other passes
    if command is not None:
        done = smartmeter(command, str(data_dir), "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        reports = {r["table"]: r for r in json.loads(done.stdout)}
        bad = {name for name, r in reports.items() if not r["ok"]}
        assert bad == {table}, reports
        assert first_entry <= reports[table]["first_bad_entry"] <= last_entry, reports[table]
        text = smartmeter(command, str(data_dir)).stdout
        assert f"{table}: FAILED at entry {reports[table]['first_bad_entry']}" in text, text
        other = {"verify-log": "verify-storage", "verify-storage": "verify-log"}[command]
        assert smartmeter(other, str(data_dir)).returncode == 0
    else:
        # the registers are in no chained table: verify-storage checks the meter's signature over them
        done = smartmeter("verify-storage", str(data_dir), "--json")
        assert done.returncode == 1
        assert {r["table"] for r in json.loads(done.stdout) if not r["ok"]} == {"energy registers"}
        assert smartmeter("verify-log", str(data_dir)).returncode == 0

    # the next start: fatal error bit 0x04 over DLMS, event 201 naming the damaged part
    before = [kind for kind, _ in metrological_events(data_dir)] if table != "metrological" else None
    fatal = start_and_read_fatal(data_dir)
    assert fatal & FATAL_NV_MEMORY, f"fatal error register {fatal:#x}"
    events = metrological_events(data_dir)
    damaged = [fields for kind, fields in events if kind == EVENT_STORE_DAMAGED]
    assert len(damaged) == 1, events
    problems = damaged[0]["problems"]
    expected = {PROFILE: "lp1:", "metrological": "log:", "certification": "log:",
                "energy_register": "energy registers"}[table]
    assert expected in problems, problems
    if before is not None:
        assert [kind for kind, _ in events][: len(before)] == before  # the log itself untouched, 201 appended
    # the fatal error is kept: a second start shows it again and does not log the event twice
    assert start_and_read_fatal(data_dir) & FATAL_NV_MEMORY
    assert [kind for kind, _ in metrological_events(data_dir)].count(EVENT_STORE_DAMAGED) == 1
