"""A meter starts its invocation counter again under a new key: the SQLite listener keeps its
replay window per (meter, key), as the fleet store does, so the first pushes under a new key are
stored and their replays refused, across restarts. A file of layout 2 (counters by meter alone)
is read as it is by the commands that only read, and brought to layout 3 by a writer (one
transaction, counts checked, compacted); its rows take the key of the listener that opens it."""
from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3

from click.testing import CliRunner

from interval_pushes import CLOCK, INTERVAL, START
from smartmeter.cli.main import main
from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.push_listener import Keyring, MeterKeys, ObjectLists, PushReceiver, push_key_id
from smartmeter.hes.push_store import SCHEMA_VERSION, PushStore
from smartmeter.transport.wrapper import WrapperFrame

TITLE = bytes.fromhex("4B45590000000001")
METER = TITLE.hex().upper()
LIST = {INTERVAL: [(8, CLOCK, 2, 0), (3, "1-0:1.8.0.255", 2, 0)]}


def iso(t: float) -> str:
    when = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def new_keys() -> tuple[bytes, bytes]:
    return secrets.token_bytes(16), secrets.token_bytes(16)


def push(keys: tuple[bytes, bytes], counter: int, slot: int, wh: int) -> bytes:
    """The meter's Interval 1 push of 15-minute slot `slot` under `keys` (EK, AK)."""
    when = axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(START + 900 * slot,
                                                                                       dt.timezone.utc)))
    plain = DataNotification(counter, b"", Data.structure([Data.octet_string(when),
                                                           Data.double_long_unsigned(wh)])).to_bytes()
    return GeneralGloCiphering.protect(SecurityControl(1, True, True), *keys, TITLE, counter, plain).to_bytes()


def listener(store: PushStore, keys: tuple[bytes, bytes]) -> PushReceiver:
    """A listener started with the meter's keys `keys` (its credentials file as it is then)."""
    keyring = Keyring([MeterKeys(TITLE, 1, *keys, source=None)])
    return PushReceiver(keyring, store, ObjectLists(store, LIST), clock=lambda: START + 100000)


def send(receiver: PushReceiver, apdu: bytes) -> str:
    return receiver.datagram(WrapperFrame(1, 2, apdu).to_bytes(), ("10.1.1.1", 4059))


def energy(store: PushStore) -> list[tuple[str, int]]:
    return [(time, value) for _, obis, _, _, time, _, value in store.readings(meter=METER) if obis == "1-0:1.8.0.255"]


def test_a_meter_rekeyed_starts_its_counter_again_and_its_pushes_are_stored(tmp_path):
    old, new = new_keys(), new_keys()
    store = PushStore(tmp_path / "pushes.sqlite", deferred=True)
    before = listener(store, old)
    for counter in (1, 2, 3):
        assert send(before, push(old, counter, counter, 100 + counter)) == "stored"
    store.flush()
    # the meter's keys change (`hes keys change`, or a new credentials file); the listener is
    # restarted with the new ones, and the meter counts from 1 again
    after = listener(store, new)
    first = push(new, 1, 4, 104)
    assert send(after, first) == "stored"
    assert send(after, first) == "retry"  # the very same message: a UDP retry
    assert send(after, push(new, 1, 9, 999)) == "replay"  # another message with a counter used under this key
    assert send(after, push(new, 2, 5, 105)) == "stored"
    assert send(after, push(old, 4, 6, 106)) == "forged"  # the old key is gone from this listener
    store.flush()
    # restarted once more: the new key's counters are known from the file
    again = listener(store, new)
    assert send(again, push(new, 1, 9, 999)) == send(again, push(new, 2, 9, 999)) == "replay"
    assert send(again, push(new, 3, 6, 106)) == "stored"
    store.flush()
    assert energy(store) == [(iso(START + 900 * k), 100 + k) for k in range(1, 7)]
    assert sorted(store.db.execute("SELECT key_id, invocation_counter FROM raw_push")) == sorted(
        [(push_key_id(old[0]), c) for c in (1, 2, 3)] + [(push_key_id(new[0]), c) for c in (1, 2, 3)])
    assert store.counters() == {(METER, push_key_id(old[0])): 3, (METER, push_key_id(new[0])): 3}
    assert store.push_count(METER) == 6
    store.close()


# The second layout, as `hes listen` wrote it before pushes were keyed by their key (user_version 2).
SECOND_LAYOUT = """
CREATE TABLE meter (id INTEGER PRIMARY KEY, system_title TEXT NOT NULL UNIQUE, serial TEXT, address TEXT,
                    first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, registered TEXT,
                    last_invocation_counter INTEGER NOT NULL);
CREATE TABLE push (meter TEXT NOT NULL REFERENCES meter(system_title), invocation_counter INTEGER NOT NULL,
                   receive_time TEXT NOT NULL, capture_time TEXT NOT NULL, kind TEXT NOT NULL, setup TEXT,
                   value_count INTEGER NOT NULL, PRIMARY KEY (meter, invocation_counter)) WITHOUT ROWID;
CREATE TABLE push_object_list (meter TEXT NOT NULL, setup TEXT NOT NULL, entries_json TEXT NOT NULL,
                               source TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (meter, setup)) WITHOUT ROWID;
CREATE TABLE unstored_push (meter TEXT NOT NULL REFERENCES meter(system_title), invocation_counter INTEGER NOT NULL,
                            receive_time TEXT NOT NULL, reason TEXT NOT NULL,
                            PRIMARY KEY (meter, invocation_counter)) WITHOUT ROWID;
CREATE TABLE series (id INTEGER PRIMARY KEY, meter_id INTEGER NOT NULL REFERENCES meter(id),
                     source TEXT NOT NULL DEFAULT '', obis TEXT NOT NULL, attribute INTEGER NOT NULL,
                     scaler INTEGER NOT NULL DEFAULT 0, unit INTEGER NOT NULL DEFAULT 255, class_id INTEGER,
                     UNIQUE (meter_id, source, obis, attribute));
CREATE TABLE reading (series_id INTEGER NOT NULL REFERENCES series(id), time TEXT NOT NULL,
                      raw INTEGER NOT NULL CHECK (typeof(raw) = 'integer'), quality INTEGER NOT NULL DEFAULT 0,
                      received TEXT NOT NULL, PRIMARY KEY (series_id, time)) WITHOUT ROWID;
CREATE INDEX reading_by_time ON reading (time);
CREATE TABLE reading_data (series_id INTEGER NOT NULL REFERENCES series(id), time TEXT NOT NULL,
                           data TEXT NOT NULL, received TEXT NOT NULL, PRIMARY KEY (series_id, time)) WITHOUT ROWID;
CREATE TABLE event (meter_id INTEGER NOT NULL REFERENCES meter(id), log TEXT NOT NULL, time TEXT NOT NULL,
                    code INTEGER NOT NULL, received TEXT NOT NULL,
                    PRIMARY KEY (meter_id, log, time, code)) WITHOUT ROWID;
CREATE TABLE raw_push (system_title TEXT NOT NULL, invocation_counter INTEGER NOT NULL, received TEXT NOT NULL,
                       stored TEXT NOT NULL, source TEXT NOT NULL, apdu BLOB NOT NULL,
                       PRIMARY KEY (system_title, invocation_counter)) WITHOUT ROWID;
PRAGMA user_version = 2;
"""
PUSHED = (101, 102, 103, 104)  # the counters of the layout-2 file's stored pushes; 105 unmapped


def build_second_layout(path, keys: tuple[bytes, bytes]) -> None:
    """A file of layout 2 holding the pushes PUSHED (slots 1..4) and an unmapped one (105) of the
    meter, made under `keys`, as that layout's listener wrote them (WAL, as it ran)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SECOND_LAYOUT)
    with db:
        db.execute("INSERT INTO meter VALUES (1, ?, 'KEY1', NULL, ?, ?, NULL, 105)", (METER, iso(START), iso(START)))
        db.execute("INSERT INTO series VALUES (1, 1, '', '0-0:1.0.0.255', 2, 0, 255, 8)")
        db.execute("INSERT INTO series VALUES (2, 1, '', '1-0:1.8.0.255', 2, 0, 255, 3)")
        for slot, counter in enumerate(PUSHED, start=1):
            t = iso(START + 900 * slot)
            db.execute("INSERT INTO push VALUES (?, ?, ?, ?, 'interval-1', ?, 2)", (METER, counter, t, t, INTERVAL))
            db.execute("INSERT INTO reading VALUES (2, ?, ?, 0, ?)", (t, 100 + slot, t))
            db.execute("INSERT INTO reading_data VALUES (1, ?, ?, ?)", (t, json.dumps(t), t))
            db.execute("INSERT INTO raw_push VALUES (?, ?, ?, ?, 'test', ?)",
                       (METER, counter, t, t, push(keys, counter, slot, 100 + slot)))
        db.execute("INSERT INTO unstored_push VALUES (?, 105, ?, 'unmapped')", (METER, iso(START)))
        db.execute("INSERT INTO raw_push VALUES (?, 105, ?, ?, 'test', x'00')", (METER, iso(START), iso(START)))
    db.close()


def test_commands_that_only_read_read_a_second_layout_file_as_it_is(tmp_path):
    path = tmp_path / "v2.sqlite"
    build_second_layout(path, new_keys())
    content = path.read_bytes()
    result = CliRunner().invoke(main, ["hes", "show", "--db", str(path), "--obis", "1-0:1.8.0.255", "--json"])
    assert result.exit_code == 0, result.output
    assert [(r["capture_time"], r["value"]) for r in map(json.loads, result.output.splitlines())] == [
        (iso(START + 900 * slot), 100 + slot) for slot in range(1, 5)]
    result = CliRunner().invoke(main, ["hes", "meters", "--db", str(path), "--json"])
    assert [(m["serial"], m["pushes"]) for m in map(json.loads, result.output.splitlines())] == [("KEY1", 4)]
    out = tmp_path.parent / f"{tmp_path.name}.csv"
    result = CliRunner().invoke(main, ["hes", "export", "--db", str(path), "--format", "csv", "--out", str(out),
                                       "--from", iso(START), "--to", iso(START + 86400)])
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [(row[0], row[3], row[5], row[6]) for row in rows] == [
        ("KEY1", "1-0:1.8.0.255", iso(START + 900 * slot)[:19] + "Z", str(100 + slot)) for slot in range(1, 5)]
    # not a byte changed (a reader of a WAL file makes its -wal and -shm, and writes nothing to the -wal)
    assert path.read_bytes() == content and path.with_name(path.name + "-wal").stat().st_size == 0
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_a_second_layout_file_is_upgraded_keyed_by_the_listeners_key_and_compacted(tmp_path):
    path = tmp_path / "v2.sqlite"
    old, new = new_keys(), new_keys()
    build_second_layout(path, old)
    store = PushStore(path, deferred=True)
    assert store.upgraded_from == 2 and store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.counters() == {(METER, ""): 105}
    assert sorted(store.db.execute("SELECT key_id, invocation_counter FROM push")) == [("", c) for c in PUSHED]
    assert store.db.execute("SELECT key_id, invocation_counter FROM unstored_push").fetchall() == [("", 105)]
    assert store.db.execute("SELECT count(*) FROM raw_push WHERE key_id = ''").fetchone()[0] == len(PUSHED) + 1
    assert "last_invocation_counter" not in [r[1] for r in store.db.execute("PRAGMA table_info(meter)")]
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    # the listener started on it with the meter's keys: the rows of before are that key's
    receiver = listener(store, old)
    assert store.counters() == {(METER, push_key_id(old[0])): 105}
    assert send(receiver, push(old, 104, 9, 999)) == "replay"  # stored under layout 2
    assert send(receiver, push(old, 105, 9, 999)) == "replay"  # its counter used up unstored
    assert send(receiver, push(old, 100, 9, 99)) == "stored"  # within the window, never used
    assert send(receiver, push(old, 106, 5, 105)) == "stored"
    store.flush()
    # a key change later: counted from 1 again
    receiver = listener(store, new)
    assert send(receiver, push(new, 1, 6, 106)) == "stored"
    store.flush()
    assert [value for _, value in energy(store)] == [101, 102, 103, 104, 105, 106, 99]
    assert store.counters() == {(METER, push_key_id(old[0])): 106, (METER, push_key_id(new[0])): 1}
    assert store.db.execute("SELECT count(*) FROM raw_push WHERE key_id = ''").fetchone()[0] == 0
    store.close()


def test_an_upgrade_to_layout_3_that_fails_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "v2.sqlite"
    build_second_layout(path, new_keys())
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE push_counter (something TEXT)")  # in the way of the new table
    db.close()
    try:
        PushStore(path)
    except sqlite3.OperationalError:
        pass
    else:
        raise AssertionError("the upgrade went through a table in its way")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT count(*) FROM push").fetchone()[0] == len(PUSHED)
    assert [r[1] for r in db.execute("PRAGMA table_info(push)")] == [
        "meter", "invocation_counter", "receive_time", "capture_time", "kind", "setup", "value_count"]
    assert "last_invocation_counter" in [r[1] for r in db.execute("PRAGMA table_info(meter)")]
    db.close()
