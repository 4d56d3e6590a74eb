"""Event logs, their canonical payloads, event counters, and the certification-protected log."""
from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmeter.legal import storage
from smartmeter.legal.chain import LogFull, atomic
from smartmeter.legal.eventlog import (
    CERTIFICATION_LOG_MIN_CAPACITY,
    CERTIFICATION_LOG_OBIS,
    CertificationEvent,
    CertificationLog,
    EventCounters,
    EventDecodeError,
    EventLog,
    decode_fields,
    encode_fields,
)
from smartmeter.legal.signing import MeterSigner

SIGNER = MeterSigner.generate()
PUB = SIGNER.public_key_pem()
TITLE = bytes.fromhex("464c4147000000ff")  # FLAG + 5 bytes: a client system title


@pytest.fixture
def db(tmp_path):
    connection = storage.open_store(tmp_path)
    yield connection
    connection.close()


def sql(db, statement, *args):
    with atomic(db):
        db.execute(statement, args)


# -- canonical payload -------------------------------------------------------------------------


def test_canonical_encoding_is_sorted_compact_ascii_json_with_hex_bytes():
    payload = encode_fields({"z": 1, "a": "Ä", "b": b"\x01\xff", "c": None, "d": True, "e": -5})
    assert payload == b'{"a":"\\u00c4","b":{"hex":"01ff"},"c":null,"d":true,"e":-5,"z":1}'
    assert decode_fields(payload) == {"z": 1, "a": "Ä", "b": b"\x01\xff", "c": None, "d": True, "e": -5}


field_values = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=20), st.booleans(), st.none(),
                         st.binary(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), field_values, max_size=8))
def test_fields_round_trip_and_encoding_is_unique(fields):
    payload = encode_fields(fields)
    decoded = decode_fields(payload)
    assert decoded == fields
    assert {k: type(v) for k, v in decoded.items()} == {k: type(v) for k, v in fields.items()}
    assert encode_fields(dict(reversed(list(fields.items())))) == payload  # order of insertion is irrelevant


@pytest.mark.parametrize("payload", [
    b'{"a": 1}', b'{"b":1,"a":2}', b'{"a":1.0}', b'{"a":NaN}', b'{"a":{"hex":"0A"}}', b'{"a":{"hex":"0"}}',
    b'{"a":{"hex":"00","x":1}}', b'{"a":[1]}', b'[1]', b'{"a":1,"a":2}', b'{"a":"\xc3\x84"}', b"", b"\xff",
    b'{"a":' * 5000, b'{"a":1}\n', b'{"a":1e3}', b'{"a":' + b"9" * 5000 + b"}", b'{"a":99999999999999999999}',
    b'{"":1}',
])
def test_non_canonical_payloads_are_rejected(payload):
    with pytest.raises(EventDecodeError):
        decode_fields(payload)


@pytest.mark.parametrize("fields, error", [
    ({"a": 1.5}, TypeError), ({"a": [1]}, TypeError), ({1: 1}, TypeError), ({"": 1}, TypeError),
    ({"a": 1 << 63}, ValueError), ({f"k{i}": i for i in range(65)}, ValueError), ([("a", 1)], TypeError),
])
def test_unloggable_fields_are_refused(fields, error):
    with pytest.raises(error):
        encode_fields(fields)


# -- event logs --------------------------------------------------------------------------------


def test_event_log_appends_reads_and_verifies(db):
    log = EventLog(db, "params", 50, SIGNER)
    first = log.append(100, 7, {"parameter": "1-0:0.3.0.255", "old": 10000, "new": 1000})
    log.append(200, 8, {"parameter": "x", "value": b"\x00\x01"})
    assert first.seq == 1 and first.event_id == 7 and first.fields["new"] == 1000
    with pytest.raises(TypeError):
        first.fields["new"] = 1  # read-only view
    events = log.events()
    assert [(e.seq, e.time_utc, e.event_id) for e in events] == [(1, 100, 7), (2, 200, 8)]
    assert events[1].fields == {"parameter": "x", "value": b"\x00\x01"}
    assert [e.seq for e in log.between(150, None)] == [2]
    assert log.last().seq == 2 and log.count() == 2
    assert [c.seq for c in log.table.checkpoints()] == [1, 2]  # every entry signed by default
    assert log.verify(PUB).ok


def test_counters_count_every_event_and_every_event_id(db):
    log = EventLog(db, "params", 50, SIGNER)
    for event_id in (7, 7, 8):
        log.append(1, event_id, {})
    assert log.counters.snapshot("params") == {"params": 3, "params/7": 2, "params/8": 1}


def test_counter_and_entry_commit_together_or_not_at_all(db):
    log = EventLog(db, "params", 50, SIGNER)
    log.append(1, 7, {"n": 1})
    with pytest.raises(RuntimeError):
        with atomic(db):
            log.append(2, 7, {"n": 2})
            raise RuntimeError("the change being logged failed")
    assert log.count() == 1
    assert log.counters.snapshot("params") == {"params": 1, "params/7": 1}
    assert log.verify(PUB).ok


def test_counters_only_go_up(db):
    counters = EventCounters(db)
    assert counters.value("x") == 0
    assert counters.increment("x") == 1 and counters.increment("x", 5) == 6
    for by in (0, -1, 1.0, True):
        with pytest.raises(ValueError):
            counters.increment("x", by)
    with pytest.raises(ValueError):
        counters.increment("")
    assert counters.value("x") == 6


def test_full_log_refuses_counts_the_refusal_and_keeps_everything(db):
    log = EventLog(db, "downloads", 3, SIGNER)
    for i in range(3):
        log.append(i, 1, {"i": i})
    assert log.is_full()
    with pytest.raises(LogFull):
        log.append(9, 1, {"i": 9})
    assert [e.fields["i"] for e in log.events()] == [0, 1, 2]
    assert log.counters.value("downloads/refused_full") == 1
    assert log.counters.value("downloads") == 3
    assert log.verify(PUB).ok


def test_fifo_event_log_keeps_counting_past_its_capacity(db):
    log = EventLog(db, "comm", 5, SIGNER, on_full="fifo")
    for i in range(12):
        log.append(i, i % 2, {"i": i})
    assert [e.seq for e in log.events()] == [8, 9, 10, 11, 12]
    assert log.counters.snapshot("comm") == {"comm": 12, "comm/0": 6, "comm/1": 6}
    assert log.verify(PUB).ok


@pytest.mark.parametrize("statement, problem", [
    ("UPDATE event_counter SET value = value - 1 WHERE name = 'params'", "event counter 'params' is 2"),
    ("UPDATE event_counter SET value = value + 1 WHERE name = 'params/7'", "event counter 'params/7' is 3"),
    ("DELETE FROM event_counter WHERE name = 'params/8'", "event counter 'params/8' is 0"),
    ("INSERT INTO event_counter VALUES ('params/9', 1)", "event counter 'params/9' is 1"),
])
def test_tampered_counters_are_detected(db, statement, problem):
    log = EventLog(db, "params", 50, SIGNER)
    for event_id in (7, 7, 8):
        log.append(1, event_id, {})
    sql(db, statement)
    report = log.verify(PUB)
    assert not report.ok and problem in report.problem, report


def test_non_canonical_payload_with_valid_chain_is_detected(db):
    # An event log written through the chain directly (as an attacker with the key could, or a
    # bug would) with a payload that is not canonical JSON: the event-log layer rejects it.
    log = EventLog(db, "params", 50, SIGNER)
    log.table.append(1, 7, b'{"b":1,"a":2}')
    log.counters.increment("params")
    log.counters.increment("params/7")
    report = log.verify(PUB)
    assert not report.ok and "entry 1" in report.problem and "canonical" in report.problem
    assert log.events()[0].fields == {"undecodable_payload": b'{"b":1,"a":2}'}


def test_event_log_reports_chain_tampering_first(db):
    log = EventLog(db, "params", 50, SIGNER)
    for i in range(4):
        log.append(i, 1, {"i": i})
    sql(db, "UPDATE chain_entry SET payload = ? WHERE tbl = 'params' AND seq = 2", b'{"i":5}')
    report = log.verify(PUB)
    assert not report.ok and report.first_bad_seq == 2 and "content changed" in report.problem


# -- the certification-protected event log (§5.17) ---------------------------------------------


def test_certification_log_records_the_captured_objects(db):
    log = CertificationLog(db, SIGNER)
    assert CERTIFICATION_LOG_OBIS == "0-0:99.98.98.255"
    record = log.append(1_700_000_000, CertificationEvent.LR_FIRMWARE_ACTIVATED, TITLE, "LR-1.2.3")
    log.append(1_700_000_100, CertificationEvent.LR_FIRMWARE_VERIFICATION_OR_ACTIVATION_FAILED, TITLE, b"LR-1.2.3")
    assert (record.seq, record.event_id, record.client_system_title, record.active_firmware_id) == (
        1, 18, TITLE, b"LR-1.2.3")
    stored = log.records()
    assert stored[0] == record
    assert [r.event_id for r in stored] == [18, 51]
    assert [r.seq for r in log.between(1_700_000_050, None)] == [2]
    assert log.verify(PUB).ok and log.verify(PUB).signed_through == 2
    assert int(CertificationEvent.LR_FIRMWARE_READY_FOR_ACTIVATION) == 17


def test_certification_log_has_at_least_100_entries_and_refuses_when_full(db):
    with pytest.raises(ValueError):
        CertificationLog(db, SIGNER, capacity=99)
    log = CertificationLog(db, SIGNER)
    assert log.capacity == CERTIFICATION_LOG_MIN_CAPACITY == 100
    for i in range(100):
        log.append(i, 17 + (i % 2), TITLE, "fw")
    assert log.is_full()
    before = log.records()
    with pytest.raises(LogFull):
        log.append(1000, 18, TITLE, "fw")
    assert log.records() == before and log.count() == 100
    assert log.verify(PUB).ok


@pytest.mark.parametrize("args", [
    (1, 18, b"short", "fw"), (1, 18, "464c4147000000ff", "fw"), (1, 70000, TITLE, "fw"), (1, -1, TITLE, "fw"),
    (1, "18", TITLE, "fw"), (1, 18, TITLE, "x" * 256), (1, 18, TITLE, "fw-ä"),
])
def test_certification_log_validates_its_fields(db, args):
    log = CertificationLog(db, SIGNER)
    with pytest.raises((ValueError, UnicodeEncodeError)):
        log.append(*args)
    assert log.count() == 0


def test_certification_log_survives_reopening(tmp_path):
    db = storage.open_store(tmp_path)
    CertificationLog(db, SIGNER).append(5, 17, TITLE, "fw")
    db.close()
    db = storage.open_store(tmp_path)
    log = CertificationLog(db, SIGNER)
    log.append(6, 18, TITLE, "fw")
    assert [r.seq for r in log.records()] == [1, 2] and log.verify(PUB).ok
    db.close()


def test_event_log_on_a_plain_connection_in_legacy_transaction_mode(tmp_path):
    # A connection with Python's default (implicit BEGIN) transaction handling works the same.
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    log = EventLog(db, "e", 10, SIGNER)
    log.append(1, 1, {"a": 1})
    db.close()
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    assert EventLog(db, "e", 10, SIGNER).verify(PUB).ok
    db.close()
