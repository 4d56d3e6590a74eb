"""The SQLite push store in the fleet store's layout: a file of the first layout (readings as
JSON text) is upgraded in place when a writer opens it, nothing lost, in one transaction, then
compacted; a command that only reads leaves it as it is and says how to upgrade it; pushes
from an in-process meter land as series and integer readings (scaler and unit where the push
says them), other values in reading_data, the push itself in raw_push; the queries written for
the fleet store's tables read the file."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from click.testing import CliRunner

from interval_pushes import LISTS, START, interval_push, meter  # noqa: F401 (meter: the fixture)
from smartmeter.cli.main import main
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.hes.push_listener import Keyring, ObjectLists, PushReceiver
from smartmeter.hes.push_store import SCHEMA_VERSION, PushStore, SchemaError
from smartmeter.transport.wrapper import WrapperFrame


# The first layout, as `hes listen` wrote it before layout versions (user_version 0).
FIRST_LAYOUT = """
CREATE TABLE meter (system_title TEXT PRIMARY KEY, serial TEXT, address TEXT, first_seen TEXT NOT NULL,
                    last_seen TEXT NOT NULL, registered TEXT, last_invocation_counter INTEGER NOT NULL);
CREATE TABLE push (meter TEXT NOT NULL REFERENCES meter(system_title), invocation_counter INTEGER NOT NULL,
                   receive_time TEXT NOT NULL, capture_time TEXT NOT NULL, kind TEXT NOT NULL, setup TEXT,
                   value_count INTEGER NOT NULL, PRIMARY KEY (meter, invocation_counter)) WITHOUT ROWID;
CREATE TABLE reading (meter TEXT NOT NULL REFERENCES meter(system_title), obis TEXT NOT NULL,
                      attribute INTEGER NOT NULL, capture_time TEXT NOT NULL, receive_time TEXT NOT NULL,
                      class_id INTEGER, value_json TEXT NOT NULL,
                      PRIMARY KEY (meter, obis, attribute, capture_time)) WITHOUT ROWID;
CREATE INDEX reading_by_time ON reading (meter, capture_time);
CREATE TABLE push_object_list (meter TEXT NOT NULL, setup TEXT NOT NULL, entries_json TEXT NOT NULL,
                               source TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (meter, setup)) WITHOUT ROWID;
CREATE TABLE unstored_push (meter TEXT NOT NULL REFERENCES meter(system_title), invocation_counter INTEGER NOT NULL,
                            receive_time TEXT NOT NULL, reason TEXT NOT NULL,
                            PRIMARY KEY (meter, invocation_counter)) WITHOUT ROWID;
"""

METERS = ("4B464D0000000003", "4B464D0000000001", "4B464D0000000002")
PUSHES = 4
LIST = [[8, "0-0:1.0.0.255", 2, 0], [3, "1-0:1.8.0.255", 2, 0]]


def iso(t: float) -> str:
    when = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def first_layout_values(m: int, k: int, t: float) -> list[tuple[str, int, int | None, object]]:
    """(OBIS, attribute, class, value) of push k of meter m: every kind of value a push gives."""
    return [
        ("0-0:1.0.0.255", 2, 8, dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()),  # the clock
        ("1-0:1.8.0.255", 2, 3, 1000 * m + 7 * k),  # double-long-unsigned
        ("1-0:3.8.0.255", 3, 3, [-1, 30]),  # scaler_unit
        ("1-0:14.7.0.255", 2, 3, 50.0 + k / 4),  # a float
        ("0-0:96.15.0.255", 2, 1, (1 << 64) - 1 - k),  # long64-unsigned past 2^63: no bigint
        ("0-0:96.15.1.255", 2, 1, -(1 << 63) + k),  # long64 at its bottom: an integer
        ("0-0:96.1.0.255", 2, None, "4b464d3030303031"),  # an octet string, hex
        ("0-0:96.3.10.255", 3, 70, k % 2 == 0),  # a boolean is no integer
    ]


def build_first_layout(path) -> list[tuple]:
    """A file of the first layout holding pushes of METERS; the rows `readings()` must give."""
    db = sqlite3.connect(path)
    db.executescript(FIRST_LAYOUT)
    expected = []
    for m, meter in enumerate(METERS):
        received = [iso(START + 900 * k + 3 + m) for k in range(1, PUSHES + 1)]  # METERS in first-seen order
        db.execute("INSERT INTO meter VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (meter, f"KFM{m}", f"10.0.0.{m}", received[0], received[-1], received[0], 100 + PUSHES + 1))
        db.execute("INSERT INTO push_object_list VALUES (?, '0-1:25.9.0.255', ?, 'meter', ?)",
                   (meter, json.dumps(LIST), received[0]))
        for k in range(1, PUSHES + 1):
            t = START + 900 * k
            values = first_layout_values(m, k, t)
            db.execute("INSERT INTO push VALUES (?, ?, ?, ?, 'interval-1', '0-1:25.9.0.255', ?)",
                       (meter, 100 + k, received[k - 1], iso(t), len(values)))
            for obis, attribute, class_id, value in values:
                db.execute("INSERT INTO reading VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (meter, obis, attribute, iso(t), received[k - 1], class_id,
                            json.dumps(value, separators=(",", ":"))))
                expected.append((meter, obis, attribute, class_id, iso(t), received[k - 1], value))
        db.execute("INSERT INTO unstored_push VALUES (?, ?, ?, 'unmapped')", (meter, 100 + PUSHES + 1, received[-1]))
    db.commit()
    db.close()
    return sorted(expected, key=lambda r: (r[0], r[1], r[2], r[4]))


def test_a_first_layout_file_is_upgraded_in_place_losing_nothing(tmp_path):
    path = tmp_path / "old.sqlite"
    expected = build_first_layout(path)
    store = PushStore(path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert store.upgraded_from == 1
        assert list(store.readings()) == expected
        assert list(store.readings(meter=METERS[1], obis=["1-0:1.8.0.255"], start=iso(START + 1800),
                                   end=iso(START + 3600))) == [
            (METERS[1], "1-0:1.8.0.255", 2, 3, iso(START + 900 * k), iso(START + 900 * k + 4), 1000 + 7 * k)
            for k in (2, 3)]
        # integers of 64 bits in reading, with their receive time and quality 0; the rest in reading_data
        integers = [r for r in expected if type(r[6]) is int and -(1 << 63) <= r[6] < (1 << 63)]
        assert len(integers) == len(METERS) * PUSHES * 2
        assert sorted(store.db.execute(
            """SELECT m.system_title, s.obis, s.attribute, s.class_id, r.time, r.received, r.raw, r.quality
               FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id""")) == sorted(
            (*r, 0) for r in integers)
        assert store.db.execute("SELECT count(*) FROM reading_data").fetchone()[0] == len(expected) - len(integers)
        assert store.db.execute("SELECT count(*) FROM series").fetchone()[0] == len(METERS) * 8
        # the meters keep everything, and get ids in the order they were first seen
        assert store.meters() == [(meter, f"KFM{m}", f"10.0.0.{m}", iso(START + 903 + m),
                                   iso(START + 900 * PUSHES + 3 + m), iso(START + 903 + m), PUSHES)
                                  for m, meter in sorted(enumerate(METERS), key=lambda x: x[1])]
        assert [row[0] for row in store.db.execute("SELECT system_title FROM meter ORDER BY id")] == list(METERS)
        # the keys the pushes were made under are not in the file: '' until a listener says
        assert store.counters() == {(meter, ""): 100 + PUSHES + 1 for meter in METERS}
        assert store.counter_used(METERS[0], "", 100 + PUSHES + 1) and store.counter_used(METERS[0], "", 101)
        assert not store.counter_used(METERS[0], "", 100)
        assert store.object_lists(METERS[2]) == {"0-1:25.9.0.255": LIST}
        assert not store.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'reading_v1'").fetchone()
        # the old readings' pages are given back: no free page in the file, nothing left in the WAL
        assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert path.with_name(path.name + "-wal").stat().st_size == 0
    finally:
        store.close()
    again = PushStore(path)  # opening an upgraded file changes nothing
    try:
        assert again.upgraded_from is None
        assert list(again.readings()) == expected
    finally:
        again.close()


def test_an_upgraded_file_is_smaller_than_one_upgraded_without_compaction(tmp_path):
    """The first layout's readings (JSON text, keyed by meter and OBIS text) take more room than
    the new layout's: once its pages are given back the file shrinks."""
    path = tmp_path / "old.sqlite"
    build_first_layout(path)
    db = sqlite3.connect(path)
    with db:  # more readings, so that pages matter
        db.execute("""INSERT INTO reading SELECT meter, obis, attribute, capture_time || '#' || k, receive_time,
                      class_id, value_json FROM reading, (WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1
                      FROM n WHERE k < 200) SELECT k FROM n)""")
    db.close()
    before = path.stat().st_size
    PushStore(path).close()
    assert path.stat().st_size < before


def test_commands_that_only_read_leave_a_first_layout_file_as_it_is_and_say_how_to_upgrade(tmp_path):
    """An older listener may still be writing the file: `hes show`, `hes meters` and `hes export`
    change nothing of it, and say in one line what brings it to the new layout; `hes upgrade`
    does, and then they show every value, the one the older listener wrote meanwhile too."""
    path = tmp_path / "old.sqlite"
    expected = build_first_layout(path)
    content = path.read_bytes()
    for command in (["show"], ["meters"], ["export", "--format", "csv", "--out", str(tmp_path / "out.csv"),
                                           "--from", "2026-03-10", "--to", "2026-03-11"]):
        result = CliRunner().invoke(main, ["hes", *command, "--db", str(path)])
        assert result.exit_code != 0, (command, result.output)
        assert "Traceback" not in result.output and f"smartmeter hes upgrade --db {path}" in result.output, (
            command, result.output)
        assert len(result.output.strip().splitlines()) == 1, (command, result.output)
        assert path.read_bytes() == content, command
    # the older listener writes on, as it did
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO reading VALUES (?, '1-0:1.8.0.255', 2, ?, ?, 3, '99')",
                   (METERS[0], iso(START + 900 * (PUSHES + 1)), iso(START + 900 * (PUSHES + 1) + 3)))
    db.close()
    expected.append((METERS[0], "1-0:1.8.0.255", 2, 3, iso(START + 900 * (PUSHES + 1)),
                     iso(START + 900 * (PUSHES + 1) + 3), 99))
    expected.sort(key=lambda r: (r[0], r[1], r[2], r[4]))
    result = CliRunner().invoke(main, ["hes", "upgrade", "--db", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == (f"{path}: upgraded from layout version 1 to {SCHEMA_VERSION} "
                             f"({len(METERS) * PUSHES} pushes kept)\n")
    result = CliRunner().invoke(main, ["hes", "show", "--db", str(path), "--json"])
    assert result.exit_code == 0, result.output
    columns = ("meter", "obis", "attribute", "class_id", "capture_time", "receive_time", "value")
    assert [json.loads(line) for line in result.output.splitlines()] == [dict(zip(columns, r)) for r in expected]
    result = CliRunner().invoke(main, ["hes", "meters", "--db", str(path), "--json"])
    assert [json.loads(line)["pushes"] for line in result.output.splitlines()] == [PUSHES] * len(METERS)
    result = CliRunner().invoke(main, ["hes", "upgrade", "--db", str(path)])
    assert result.output == f"{path}: layout version {SCHEMA_VERSION} already; nothing to do\n"


def test_an_upgrade_that_fails_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "old.sqlite"
    expected = build_first_layout(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE series (something TEXT)")  # in the way of the new table
    db.commit()
    db.close()
    with pytest.raises(sqlite3.OperationalError):
        PushStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM reading WHERE value_json IS NOT NULL").fetchone()[0] == len(expected)
    assert [r[1] for r in db.execute("PRAGMA table_info(meter)")][0] == "system_title"
    db.close()


def test_a_file_of_a_newer_layout_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    PushStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaError):
        PushStore(path)
    with pytest.raises(SchemaError):
        PushStore(path, read_only=True)
    result = CliRunner().invoke(main, ["hes", "show", "--db", str(path)])
    assert result.exit_code != 0 and f"layout version {SCHEMA_VERSION + 1}" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------- pushes into the layout






def test_pushes_land_as_series_and_integer_readings_and_are_kept_raw(meter, tmp_path):
    keyring = Keyring.load([meter.config.data_dir / "credentials"])
    store = PushStore(tmp_path / "pushes.sqlite")
    received = [START + 5000.25]
    receiver = PushReceiver(keyring, store, ObjectLists(store, LISTS), clock=lambda: received[0])
    title = meter.identity.system_title.hex().upper()
    sent = {}
    for k in range(1, 4):
        t = START + 900 * k
        apdu = interval_push(meter, t, 1000 + k, 40 * k, -k, 29 + k)  # the scaler_unit changes each time
        counter = GeneralGloCiphering.from_bytes(apdu).invocation_counter
        received[0] = t + 2.5
        assert receiver.datagram(WrapperFrame(1, 2, apdu).to_bytes(), ("10.1.1.1", 4059)) == "stored"
        sent[counter] = (t, apdu)
    unmapped = meter.server.protected_notification("data_readout", Data.structure([Data.unsigned(1)]))
    assert receiver.datagram(WrapperFrame(1, 2, unmapped).to_bytes(), ("10.1.1.1", 4059)) == "unmapped"
    try:
        rows = store.db.execute(
            """SELECT s.obis, s.attribute, s.scaler, s.unit, r.time, r.raw, r.quality, r.received
               FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id
               WHERE m.system_title = ? ORDER BY s.obis, r.time""", (title,)).fetchall()
        # the last scaler_unit pushed is the series'; the energy register's is not known (0, 255)
        expected = [("1-0:1.8.0.255", 2, 0, 255, iso(t), 1000 + k, 0, iso(t + 2.5))
                    for k, t in ((k, START + 900 * k) for k in range(1, 4))]
        expected += [("1-0:3.8.0.255", 2, -3, 32, iso(t), 40 * k, 0, iso(t + 2.5))
                     for k, t in ((k, START + 900 * k) for k in range(1, 4))]
        assert rows == expected
        data = store.db.execute(
            """SELECT s.obis, s.attribute, r.data FROM reading_data r JOIN series s ON s.id = r.series_id
               ORDER BY s.obis, s.attribute, r.time""").fetchall()
        assert [(o, a) for o, a, _ in data] == [("0-0:1.0.0.255", 2)] * 3 + [("0-0:96.1.0.255", 2)] * 3 + [
            ("1-0:3.8.0.255", 3)] * 3
        assert [json.loads(d) for o, a, d in data if o == "1-0:3.8.0.255"] == [[-k, 29 + k] for k in range(1, 4)]
        raw = dict(store.db.execute("SELECT invocation_counter, apdu FROM raw_push WHERE system_title = ?", (title,)))
        assert {c: a for c, a in raw.items() if c in sent} == {c: apdu for c, (_, apdu) in sent.items()}
        assert len(raw) == len(sent) + 1  # the unmapped push is kept as it came, too
        unstored = store.db.execute("SELECT invocation_counter FROM unstored_push").fetchall()
        assert [c for (c,) in unstored] == [c for c in raw if c not in sent]
        assert store.db.execute("SELECT source FROM raw_push LIMIT 1").fetchone()[0] == "('10.1.1.1', 4059)"
    finally:
        store.close()


def test_a_file_that_is_no_listeners_file_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    cases = {b"": "no pushes in it (not a file of `smartmeter hes listen`)",
             b"not a database " * 300: "not an SQLite file (not a file of `smartmeter hes listen`)"}
    for content, why in cases.items():
        path = tmp_path / "other.sqlite"
        path.write_bytes(content)
        # (a writer, `hes upgrade`, makes an empty file a new store: nothing to refuse there)
        for command in (["show"], ["meters"]) + ((["upgrade"],) if content else ()):
            result = CliRunner().invoke(main, ["hes", *command, "--db", str(path)])
            assert result.exit_code != 0 and "Traceback" not in result.output, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and f"{path}: {why}" in lines[0], (command, result.output)
            assert path.read_bytes() == content
