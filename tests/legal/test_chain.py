"""ChainedTable: append-only, hash-linked, checkpoint-signed tables in SQLite.

Every tampering case is made the way an attacker with write access to the store (but not
to the key file) would make it, and the verifier must name it.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartmeter.legal import storage
from smartmeter.legal.chain import (
    ChainedTable,
    ChainError,
    LogFull,
    atomic,
    checkpoint_message,
    entry_hash,
    genesis_hash,
    verify_table,
)
from smartmeter.legal.signing import MeterSigner
from smartmeter.legal.verify import verify_data_dir

SIGNER = MeterSigner.generate()
PUB = SIGNER.public_key_pem()


@pytest.fixture
def db(tmp_path):
    connection = storage.open_store(tmp_path)
    yield connection
    connection.close()


def filled(db, n=20, name="t", capacity=1000, on_full="refuse", every=4) -> ChainedTable:
    table = ChainedTable(db, name, capacity, on_full, SIGNER, checkpoint_every=every)
    for i in range(n):
        table.append(1_700_000_000 + 900 * i, i % 7, f"entry {i}".encode())
    return table


def sql(db, statement, *args):
    with atomic(db):
        return db.execute(statement, args).rowcount


def rechain(db, name, from_seq):
    """What an attacker without the key can do: recompute links and hashes from from_seq on."""
    rows = db.execute(
        "SELECT seq, time_utc, kind, payload FROM chain_entry WHERE tbl = ? AND seq >= ? ORDER BY seq", (name, from_seq)
    ).fetchall()
    prev = db.execute("SELECT hash FROM chain_entry WHERE tbl = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
                      (name, from_seq)).fetchone()
    previous = prev[0] if prev else genesis_hash(name)
    with atomic(db):
        for seq, t, kind, payload in rows:
            digest = entry_hash(name, seq, t, kind, payload, previous)
            db.execute("UPDATE chain_entry SET prev_hash = ?, hash = ? WHERE tbl = ? AND seq = ?",
                       (previous, digest, name, seq))
            previous = digest


def flip(blob: bytes, index: int = 0) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1:]


# -- the API -----------------------------------------------------------------------------------


def test_append_links_each_entry_to_the_previous_and_numbers_from_one(db):
    table = ChainedTable(db, "events", 100, "refuse", SIGNER, checkpoint_every=32)
    first = table.append(10, 1, b"a")
    second = table.append(20, 2, b"bb")
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == genesis_hash("events")
    assert second.prev_hash == first.hash
    assert first.hash == entry_hash("events", 1, 10, 1, b"a", genesis_hash("events"))
    assert table.entries() == [first, second]
    assert table.last() == second
    assert table.count() == 2


def test_genesis_depends_on_the_table_name():
    assert genesis_hash("a") != genesis_hash("b")
    assert len(genesis_hash("a")) == 32


def test_reads_by_seq_and_by_time(db):
    table = filled(db, 10)
    assert [e.seq for e in table.entries(3, 5)] == [3, 4, 5]
    assert [e.seq for e in table.entries(first_seq=9)] == [9, 10]
    assert [e.seq for e in table.entries(last_seq=2)] == [1, 2]
    t0 = 1_700_000_000
    assert [e.seq for e in table.between(t0 + 900, t0 + 2700)] == [2, 3, 4]
    assert [e.seq for e in table.between(None, t0)] == [1]
    assert [e.seq for e in table.between(t0 + 8100, None)] == [10]
    assert table.between(t0 + 1, t0 + 899) == []


def test_checkpoints_every_n_entries_and_on_demand(db):
    table = filled(db, 10, every=4)
    assert [c.seq for c in table.checkpoints()] == [4, 8]
    made = table.checkpoint()
    assert made.seq == 10
    assert table.checkpoint() == made  # already signed: no second row
    assert [c.seq for c in table.checkpoints()] == [4, 8, 10]
    report = table.verify(PUB)
    assert report.ok and report.signed_through == 10 and report.unsigned_tail == 0


def test_checkpoint_of_an_empty_table_is_none(db):
    assert ChainedTable(db, "empty", 10, "refuse", SIGNER).checkpoint() is None
    report = ChainedTable(db, "empty", 10, "refuse", SIGNER).verify(PUB)
    assert report.ok and report.checked == 0 and report.last_seq == 0


def test_verify_reports_the_unsigned_tail(db):
    report = filled(db, 10, every=4).verify(PUB)
    assert report.ok and report.checked == 10
    assert (report.last_seq, report.signed_through, report.unsigned_tail) == (10, 8, 2)


def test_append_rejects_values_the_encoding_cannot_hold(db):
    table = ChainedTable(db, "t", 10, "refuse", SIGNER)
    for args in [(1.5, 1, b""), (1, -1, b""), (1, 1 << 32, b""), (1 << 63, 1, b""), (True, 1, b"")]:
        with pytest.raises(ValueError):
            table.append(*args)
    with pytest.raises(TypeError):
        table.append(1, 1, "text")
    with pytest.raises(ValueError):
        table.append(1, 1, bytes(70000))
    assert table.count() == 0


@pytest.mark.parametrize("kwargs", [
    dict(name="", capacity=1, on_full="refuse"), dict(name="bad name", capacity=1, on_full="refuse"),
    dict(name="t", capacity=0, on_full="refuse"), dict(name="t", capacity=1, on_full="wrap"),
    dict(name="t", capacity=1, on_full="fifo", checkpoint_every=0),
])
def test_constructor_rejects_bad_parameters(db, kwargs):
    with pytest.raises(ValueError):
        ChainedTable(db, signer=SIGNER, **kwargs)


def test_reopening_with_other_parameters_is_refused(db):
    filled(db, 3, capacity=100, every=4)
    ChainedTable(db, "t", 100, "refuse", SIGNER, checkpoint_every=4)  # same: fine
    for capacity, on_full, every in [(101, "refuse", 4), (100, "fifo", 4), (100, "refuse", 5)]:
        with pytest.raises(ChainError):
            ChainedTable(db, "t", capacity, on_full, SIGNER, checkpoint_every=every)


def test_a_removed_declaration_is_not_silently_recreated(db):
    filled(db, 3)
    sql(db, "DELETE FROM chain_table WHERE name = 't'")
    with pytest.raises(ChainError, match="no declaration"):
        ChainedTable(db, "t", 1000, "refuse", SIGNER, checkpoint_every=4)
    report = verify_table(db, "t", PUB)
    assert not report.ok and "declaration missing" in report.problem


# -- transactions ------------------------------------------------------------------------------


class FailingSigner(MeterSigner):
    __slots__ = ()

    def sign(self, data: bytes) -> bytes:
        if data.startswith(b"smartmeter/chain/checkpoint"):
            raise RuntimeError("signing hardware failed")
        return super().sign(data)


def test_append_is_one_transaction_a_failing_checkpoint_leaves_nothing(db):
    signer = FailingSigner(SIGNER._private_key)
    table = ChainedTable(db, "t", 100, "refuse", signer, checkpoint_every=2)
    table.append(1, 1, b"one")
    with pytest.raises(RuntimeError):
        table.append(2, 1, b"two")  # seq 2 needs a checkpoint
    assert [e.seq for e in table.entries()] == [1]
    assert not db.in_transaction
    assert table.verify(PUB).ok


def test_append_joins_the_callers_transaction(db):
    table = ChainedTable(db, "t", 100, "refuse", SIGNER, checkpoint_every=1)
    table.append(1, 1, b"kept")
    with pytest.raises(KeyError):
        with atomic(db):
            table.append(2, 1, b"rolled back with the caller")
            raise KeyError("caller fails after the append")
    assert [e.payload for e in table.entries()] == [b"kept"]
    assert [c.seq for c in table.checkpoints()] == [1]
    assert table.verify(PUB).ok


# -- capacity ----------------------------------------------------------------------------------


def test_refuse_table_raises_log_full_and_overwrites_nothing(db):
    table = filled(db, 5, capacity=5, every=5)
    before = table.entries()
    with pytest.raises(LogFull):
        table.append(1, 1, b"one too many")
    with pytest.raises(LogFull):
        table.append(2, 1, b"and again")
    assert table.entries() == before
    assert table.horizon() is None
    report = table.verify(PUB)
    assert report.ok and report.checked == 5 and report.last_seq == 5


def test_fifo_with_horizon_verifies_across_thousands_of_entries(db):
    table = ChainedTable(db, "lp", 500, "fifo", SIGNER, checkpoint_every=32)
    for i in range(3000):
        table.append(900 * i, 0, i.to_bytes(4, "big") * 8)
    entries = table.entries()
    assert len(entries) == 500 and entries[0].seq == 2501 and entries[-1].seq == 3000
    horizon = table.horizon()
    assert horizon.seq == 2500 and horizon.hash == entries[0].prev_hash
    assert min(c.seq for c in table.checkpoints()) > 2500  # purged with the entries they covered
    report = table.verify(PUB)
    assert report.ok, report
    assert report.checked == 500 and report.last_seq == 3000 and report.signed_through == 2976


def test_fifo_before_overflow_has_no_horizon(db):
    table = filled(db, 10, capacity=20, on_full="fifo")
    assert table.horizon() is None and table.verify(PUB).ok


# -- tampering: each case detected and named ---------------------------------------------------


def check(table, problem, first_bad_seq="any"):
    report = table.verify(PUB)
    assert not report.ok, report
    assert problem in report.problem, report.problem
    if first_bad_seq != "any":
        assert report.first_bad_seq == first_bad_seq, report
    return report


@pytest.mark.parametrize("column, value", [
    ("payload", lambda p: flip(p, 2)),
    ("time_utc", lambda t: t + 1),
    ("kind", lambda k: k ^ 1),
    ("prev_hash", lambda h: flip(h, 31)),
    ("hash", lambda h: flip(h, 0)),
])
def test_changed_field_is_detected(db, column, value):
    table = filled(db, 20)
    (old,) = db.execute(f"SELECT {column} FROM chain_entry WHERE tbl = 't' AND seq = 7").fetchone()
    sql(db, f"UPDATE chain_entry SET {column} = ? WHERE tbl = 't' AND seq = 7", value(old))
    expected = "link to the previous entry broken" if column == "prev_hash" else "content changed"
    check(table, f"entry 7: {expected}", 7)


def test_changed_payload_with_recomputed_hashes_is_caught_by_the_next_checkpoint(db):
    table = filled(db, 20)
    sql(db, "UPDATE chain_entry SET payload = ? WHERE tbl = 't' AND seq = 6", b"entry 6 but richer")
    rechain(db, "t", 6)
    check(table, "checkpoint 8 does not match entry 8", 8)


def test_row_deleted_in_the_middle(db):
    table = filled(db, 20)
    sql(db, "DELETE FROM chain_entry WHERE tbl = 't' AND seq = 10")
    check(table, "entries 10..10 missing (removed)", 10)


def test_row_deleted_at_the_start(db):
    table = filled(db, 20)
    sql(db, "DELETE FROM chain_entry WHERE tbl = 't' AND seq = 1")
    check(table, "entries 1..1 missing at the start", 1)


def test_rows_deleted_at_the_end_before_the_last_checkpoint(db):
    table = filled(db, 20)  # checkpoints 4, 8, 12, 16, 20
    sql(db, "DELETE FROM chain_entry WHERE tbl = 't' AND seq >= 19")
    check(table, "entries 19..20 missing: the tail was removed behind checkpoint 20", 19)


def test_rows_and_their_checkpoint_deleted_at_the_end(db):
    table = filled(db, 22)  # checkpoints 4 .. 20; 21, 22 unsigned
    sql(db, "DELETE FROM chain_entry WHERE tbl = 't' AND seq >= 17")
    sql(db, "DELETE FROM chain_checkpoint WHERE tbl = 't' AND seq = 20")
    # Back to a state the table really had (after seq 16): a roll-back, undetectable from
    # inside the store (chain.py documents why) -- unless the verifier knows a newer seq.
    assert table.verify(PUB).ok
    report = table.verify(PUB, expect_at_least=22)
    assert not report.ok and "rolled back" in report.problem and report.first_bad_seq == 17


def test_tail_after_the_last_checkpoint_is_reported_unsigned_not_verified(db):
    table = filled(db, 22)
    sql(db, "UPDATE chain_entry SET payload = ? WHERE tbl = 't' AND seq = 22", b"forged")
    rechain(db, "t", 22)
    report = table.verify(PUB)
    assert report.ok and report.unsigned_tail == 2  # only hash-linked: the report says so


def test_row_inserted_by_renumbering_and_rehashing(db):
    table = filled(db, 20)
    with atomic(db):
        db.execute("UPDATE chain_entry SET seq = -seq WHERE tbl = 't' AND seq >= 10")
        db.execute("UPDATE chain_entry SET seq = -seq + 1 WHERE tbl = 't' AND seq < 0")
        db.execute("INSERT INTO chain_entry VALUES ('t', 10, 1700008100, 3, ?, ?, ?)", (b"inserted", bytes(32), bytes(32)))
    rechain(db, "t", 10)
    check(table, "checkpoint 12 does not match entry 12", 12)


def test_row_inserted_with_an_existing_seq_is_impossible(db):
    filled(db, 5)
    with pytest.raises(sqlite3.IntegrityError):
        sql(db, "INSERT INTO chain_entry VALUES ('t', 3, 0, 0, x'', zeroblob(32), zeroblob(32))")


def test_two_rows_swapped(db):
    table = filled(db, 20)
    a = db.execute("SELECT time_utc, kind, payload, prev_hash, hash FROM chain_entry WHERE tbl='t' AND seq=5").fetchone()
    b = db.execute("SELECT time_utc, kind, payload, prev_hash, hash FROM chain_entry WHERE tbl='t' AND seq=6").fetchone()
    update = "UPDATE chain_entry SET time_utc=?, kind=?, payload=?, prev_hash=?, hash=? WHERE tbl='t' AND seq=?"
    with atomic(db):
        db.execute(update, (*b, 5))
        db.execute(update, (*a, 6))
    check(table, "entry 5: link to the previous entry broken", 5)


def test_two_rows_swapped_and_rehashed(db):
    table = filled(db, 20)
    a = db.execute("SELECT time_utc, kind, payload FROM chain_entry WHERE tbl='t' AND seq=5").fetchone()
    b = db.execute("SELECT time_utc, kind, payload FROM chain_entry WHERE tbl='t' AND seq=6").fetchone()
    with atomic(db):
        db.execute("UPDATE chain_entry SET time_utc=?, kind=?, payload=? WHERE tbl='t' AND seq=5", b)
        db.execute("UPDATE chain_entry SET time_utc=?, kind=?, payload=? WHERE tbl='t' AND seq=6", a)
    rechain(db, "t", 5)
    check(table, "checkpoint 8 does not match entry 8", 8)


def test_checkpoint_signature_forged(db):
    table = filled(db, 20)
    (sig,) = db.execute("SELECT signature FROM chain_checkpoint WHERE tbl='t' AND seq=12").fetchone()
    sql(db, "UPDATE chain_checkpoint SET signature = ? WHERE tbl='t' AND seq=12", flip(sig, len(sig) - 1))
    check(table, "checkpoint 12: signature invalid", 12)


def test_checkpoint_signed_by_another_key(db):
    table = filled(db, 20)
    sql(db, "DELETE FROM chain_entry WHERE tbl = 't' AND seq = 20")
    rogue = MeterSigner.generate()
    (digest,) = db.execute("SELECT hash FROM chain_entry WHERE tbl='t' AND seq=19").fetchone()
    sql(db, "UPDATE chain_checkpoint SET seq = 19, hash = ?, signature = ? WHERE tbl='t' AND seq=20",
        digest, rogue.sign(checkpoint_message("t", 19, digest)))
    check(table, "checkpoint 19: signature invalid", 19)


def test_checkpoint_removed(db):
    table = filled(db, 20)
    sql(db, "DELETE FROM chain_checkpoint WHERE tbl='t' AND seq=8")
    check(table, "checkpoint 8 missing (removed)", 8)


def test_checkpoint_moved_to_another_table_is_rejected(db):
    table = filled(db, 8, name="t")
    filled(db, 8, name="u")
    sql(db, "DELETE FROM chain_checkpoint WHERE tbl='u' AND seq=8")
    sql(db, "INSERT INTO chain_checkpoint SELECT 'u', seq, hash, signature FROM chain_checkpoint WHERE tbl='t' AND seq=8")
    assert table.verify(PUB).ok
    report = ChainedTable(db, "u", 1000, "refuse", SIGNER, checkpoint_every=4).verify(PUB)
    assert not report.ok and "checkpoint 8: signature invalid" in report.problem


def test_public_key_replaced(db):
    table = filled(db, 20)
    report = table.verify(MeterSigner.generate().public_key_pem())
    assert not report.ok and "declaration signature invalid" in report.problem
    report = table.verify(b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n")
    assert not report.ok and "public key" in report.problem


def test_declaration_edited_to_a_larger_capacity(db):
    table = filled(db, 5, capacity=5, every=5)
    sql(db, "UPDATE chain_table SET capacity = 6 WHERE name = 't'")
    check(table, "table declaration signature invalid")


# -- FIFO: the horizon -------------------------------------------------------------------------


@pytest.fixture
def fifo(db):
    table = ChainedTable(db, "lp", 50, "fifo", SIGNER, checkpoint_every=8)
    for i in range(130):
        table.append(900 * i, 0, b"row %d" % i)
    assert table.horizon().seq == 80 and table.verify(PUB).ok
    return table


def test_horizon_edited(db, fifo):
    sql(db, "UPDATE chain_horizon SET seq = 81 WHERE tbl='lp'")
    check(fifo, "horizon signature invalid", 81)


def test_horizon_hash_edited(db, fifo):
    (h,) = db.execute("SELECT hash FROM chain_horizon WHERE tbl='lp'").fetchone()
    sql(db, "UPDATE chain_horizon SET hash = ? WHERE tbl='lp'", flip(h, 5))
    check(fifo, "horizon signature invalid", 80)


def test_horizon_removed(db, fifo):
    sql(db, "DELETE FROM chain_horizon WHERE tbl='lp'")
    check(fifo, "entries 1..80 missing at the start", 1)


def test_oldest_remaining_entries_removed(db, fifo):
    sql(db, "DELETE FROM chain_entry WHERE tbl='lp' AND seq <= 83")
    check(fifo, "entries 81..83 missing after the horizon (seq 80)", 81)


def test_all_entries_removed(db, fifo):
    sql(db, "DELETE FROM chain_entry WHERE tbl='lp'")
    sql(db, "DELETE FROM chain_checkpoint WHERE tbl='lp'")
    check(fifo, "only 0 of 50 present")


def test_newest_entries_and_checkpoints_removed_from_a_full_fifo(db, fifo):
    # In a table that never overflowed this would be an undetectable roll-back; a FIFO table
    # that has a horizon is always exactly full, so the removal shows.
    sql(db, "DELETE FROM chain_entry WHERE tbl='lp' AND seq > 120")
    sql(db, "DELETE FROM chain_checkpoint WHERE tbl='lp' AND seq > 120")
    check(fifo, "only 40 of 50 present", 121)


def test_older_genuine_horizon_replayed(db):
    table = ChainedTable(db, "lp", 10, "fifo", SIGNER, checkpoint_every=2)
    for i in range(15):
        table.append(i, 0, b"%d" % i)
    old = db.execute("SELECT seq, hash, signature FROM chain_horizon WHERE tbl='lp'").fetchone()
    for i in range(15, 20):
        table.append(i, 0, b"%d" % i)
    sql(db, "UPDATE chain_horizon SET seq=?, hash=?, signature=? WHERE tbl='lp'", *old)
    check(table, "entries 6..10 missing after the horizon (seq 5)", 6)


def test_horizon_in_a_refuse_table_is_rejected(db):
    table = filled(db, 5)
    sql(db, "INSERT INTO chain_horizon VALUES ('t', 1, zeroblob(32), x'00')")
    check(table, "horizon record in a table that never removes entries")


# -- signatures cross-checked with openssl -----------------------------------------------------


def test_checkpoint_signatures_verify_with_the_openssl_command_line(db, tmp_path):
    signer = MeterSigner.load_or_create(tmp_path / "keys")
    table = ChainedTable(db, "t", 100, "refuse", signer, checkpoint_every=3)
    for i in range(9):
        table.append(i, 1, b"x%d" % i)
    pub = tmp_path / "keys" / "meter-signing-key.pub.pem"
    for checkpoint in table.checkpoints():
        (tmp_path / "data").write_bytes(checkpoint.message())
        (tmp_path / "sig.der").write_bytes(checkpoint.signature)
        argv = ["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "sig.der"),
                str(tmp_path / "data")]
        good = subprocess.run(argv, capture_output=True, text=True)
        assert good.returncode == 0 and "Verified OK" in good.stdout
        (tmp_path / "data").write_bytes(flip(checkpoint.message(), 40))
        bad = subprocess.run(argv, capture_output=True, text=True)
        assert bad.returncode != 0 and "Verification failure" in bad.stdout


def test_openssl_signature_is_accepted_by_our_verifier(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path)
    (tmp_path / "msg").write_bytes(b"signed by openssl with the meter key")
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(tmp_path / "meter-signing-key.pem"),
                    "-out", str(tmp_path / "sig"), str(tmp_path / "msg")], check=True)
    from smartmeter.legal.signing import verify
    assert verify(signer.public_key_pem(), b"signed by openssl with the meter key", (tmp_path / "sig").read_bytes())
    assert not verify(signer.public_key_pem(), b"something else", (tmp_path / "sig").read_bytes())


# -- Hypothesis: any sequence of appends verifies ----------------------------------------------

operation = st.one_of(
    st.tuples(st.just("append"), st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, (1 << 32) - 1),
              st.binary(max_size=64)),
    st.tuples(st.just("checkpoint")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(capacity=st.integers(1, 12), on_full=st.sampled_from(["refuse", "fifo"]), every=st.integers(1, 5),
       ops=st.lists(operation, max_size=40))
def test_any_sequence_of_appends_verifies(capacity, on_full, every, ops):
    db = sqlite3.connect(":memory:", isolation_level=None)
    table = ChainedTable(db, "h", capacity, on_full, SIGNER, checkpoint_every=every)
    model: list[tuple] = []
    appended = 0
    for op in ops:
        if op[0] == "checkpoint":
            table.checkpoint()
            continue
        _, t, kind, payload = op
        if on_full == "refuse" and len(model) == capacity:
            with pytest.raises(LogFull):
                table.append(t, kind, payload)
            continue
        table.append(t, kind, payload)
        appended += 1
        model = (model + [(appended, t, kind, payload)])[-capacity:]
        report = table.verify(PUB)
        assert report.ok, report
    assert [(e.seq, e.time_utc, e.kind, e.payload) for e in table.entries()] == model
    report = table.verify(PUB)
    assert report.ok and report.checked == len(model) and report.last_seq == appended
    assert report.unsigned_tail < every
    db.close()


# -- kill -9 at random instants ----------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from smartmeter.legal import storage
    from smartmeter.legal.chain import ChainedTable
    from smartmeter.legal.eventlog import EventLog
    from smartmeter.legal.signing import MeterSigner
    data = Path(sys.argv[1])
    db = storage.open_store(data)
    signer = MeterSigner.load_or_create(data)
    fifo = ChainedTable(db, "lp", 40, "fifo", signer, checkpoint_every=3)
    log = ChainedTable(db, "log", 10**9, "refuse", signer, checkpoint_every=5)
    events = EventLog(db, "events", 10**9, signer)
    i = 0
    while True:
        fifo.append(i, 1, b"p" * (i % 50))
        log.append(i, 2, i.to_bytes(8, "big"))
        events.append(i, i % 3, {"i": i, "raw": b"\\x00" * (i % 5)})
        if i == 0:
            print("ready", flush=True)
        i += 1
""")


def test_kill_minus_9_at_random_instants_never_breaks_a_table(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = tmp_path / "data"
    rng = random.Random(20240607)
    last_seen = {"lp": 0, "log": 0, "events": 0}
    kills = 0
    for round_ in range(24):
        proc = subprocess.Popen([sys.executable, str(script), str(data)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        if round_ == 0 or rng.random() < 0.5:
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
            time.sleep(rng.uniform(0, 0.08))  # mid-append, at a random instant
        else:
            time.sleep(rng.uniform(0, 0.5))  # anywhere, including start-up and schema creation
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        kills += 1
        reports = {r.name: r for r in verify_data_dir(data)}
        assert set(reports) == {"lp", "log", "events"}, reports
        for name, report in reports.items():
            assert report.ok, (round_, report)
            assert report.last_seq >= last_seen[name]  # nothing committed was lost
            last_seen[name] = report.last_seq
        proc.stdout.close()
        proc.stderr.close()
    assert kills >= 20 and last_seen["lp"] > 40  # the FIFO overflowed: the horizon was exercised
