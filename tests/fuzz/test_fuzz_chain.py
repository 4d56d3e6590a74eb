"""Seeded fuzzing of chain verification: random mutations of stored rows and values.

The verifier must never raise, must always return a report, and must report a problem
whenever a mutation changed anything. The fixtures end on a checkpoint (or are FIFO tables
that have overflowed), so there is no unsigned tail: every change is one the documentation
says is detectable. (Removing the unsigned tail of a never-full table, or rolling back over
several checkpoints, are the documented undetectable cases; 1-3 random mutations cannot
produce a roll-back here: it needs checkpoint_every + 1 coordinated deletions.)
"""
from __future__ import annotations

import random
import sqlite3

from smartmeter.legal.chain import ChainedTable, VerifyReport, atomic, verify_rows, verify_table
from smartmeter.legal.signing import MeterSigner

SIGNER = MeterSigner.generate()
PUB = SIGNER.public_key_pem()
PURE_RUNS = 100_000
SQL_RUNS = 20_000


def build() -> tuple[sqlite3.Connection, dict[str, dict]]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    refuse = ChainedTable(db, "refuse", 100, "refuse", SIGNER, checkpoint_every=4)
    for i in range(24):
        refuse.append(1_700_000_000 + 60 * i, i % 5, bytes([i]) * (i % 9))
    fifo = ChainedTable(db, "fifo", 16, "fifo", SIGNER, checkpoint_every=4)
    for i in range(40):
        fifo.append(900 * i, 0, b"lp%d" % i)
    every = ChainedTable(db, "every", 100, "refuse", SIGNER, checkpoint_every=1)
    for i in range(8):
        every.append(-i, 1 << 31, b"" if i % 2 else b"\x00")
    states = {name: read_state(db, name) for name in ("refuse", "fifo", "every")}
    for name, state in states.items():
        assert verify_rows(name, PUB, **state).ok
    return db, states


def read_state(db, name) -> dict:
    decl = db.execute("SELECT capacity, on_full, checkpoint_every, signature FROM chain_table WHERE name=?", (name,))
    horizon = db.execute("SELECT seq, hash, signature FROM chain_horizon WHERE tbl=?", (name,)).fetchone()
    return {
        "declaration": decl.fetchone(),
        "entries": db.execute("SELECT seq, time_utc, kind, payload, prev_hash, hash FROM chain_entry WHERE tbl=? "
                              "ORDER BY seq", (name,)).fetchall(),
        "checkpoints": db.execute("SELECT seq, hash, signature FROM chain_checkpoint WHERE tbl=? ORDER BY seq",
                                  (name,)).fetchall(),
        "horizon": horizon,
    }


# -- value and row mutations -------------------------------------------------------------------


def mutate_value(value, rng: random.Random):
    choice = rng.randrange(10)
    if isinstance(value, bytes) and choice < 6:
        if not value or choice == 0:
            return value + bytes([rng.randrange(256)])
        i = rng.randrange(len(value))
        if choice <= 2:
            return value[:i] + bytes([value[i] ^ (1 << rng.randrange(8))]) + value[i + 1:]
        if choice == 3:
            return value[:i]
        if choice == 4:
            return value[:i] + bytes([rng.randrange(256)]) + value[i:]
        return rng.randbytes(len(value))
    if type(value) is int and choice < 6:
        return rng.choice([value + 1, value - 1, -value, value ^ (1 << rng.randrange(64)), rng.randrange(-(1 << 64), 1 << 64),
                           1 << rng.randrange(100), 0])
    if isinstance(value, str) and choice < 6:
        return rng.choice([value + "x", value[:-1], value.upper(), "fifo" if value == "refuse" else "refuse"])
    return rng.choice([None, 1.0, float(value) if type(value) is int else 0.5, str(value), True, False, b"",
                       [value], (value,), bytes(32), float("nan"), -1])


def random_row(rng: random.Random, n: int):
    return tuple(rng.choice([rng.randrange(-3, 50), rng.randbytes(32), rng.randbytes(rng.randrange(0, 80)), None, "x"])
                 for _ in range(n))


def mutate(state: dict, rng: random.Random) -> None:
    key = rng.choice(["declaration", "entries", "entries", "entries", "checkpoints", "checkpoints", "horizon"])
    if key in ("declaration", "horizon"):
        row = state[key]
        action = rng.randrange(6)
        if not isinstance(row, tuple) or action == 0:
            state[key] = None if isinstance(row, tuple) else random_row(rng, 4 if key == "declaration" else 3)
        elif action == 1 or not row:
            state[key] = rng.choice([(), row[:-1], row + (None,), "row", 7])
        else:
            i = rng.randrange(len(row))
            state[key] = row[:i] + (mutate_value(row[i], rng),) + row[i + 1:]
        return
    rows = state[key]
    width = 6 if key == "entries" else 3
    # rows an earlier mutation turned into non-rows are replaced before their fields are touched
    rows[:] = [row if isinstance(row, tuple) and len(row) == width else random_row(rng, width) for row in rows]
    action = rng.randrange(12)
    if not rows or action == 0:
        rows.insert(rng.randrange(len(rows) + 1), random_row(rng, width))
    elif action == 1:
        del rows[rng.randrange(len(rows))]
    elif action == 2:
        i = rng.randrange(len(rows))
        rows.insert(rng.randrange(len(rows) + 1), rows[i])
    elif action == 3:
        i, j = rng.randrange(len(rows)), rng.randrange(len(rows))
        rows[i], rows[j] = rows[j], rows[i]
    elif action == 4:
        i, j, f = rng.randrange(len(rows)), rng.randrange(len(rows)), rng.randrange(width)
        a, b = list(rows[i]), list(rows[j])
        a[f], b[f] = b[f], a[f]
        rows[i], rows[j] = tuple(a), tuple(b)
    elif action == 5:
        rows[rng.randrange(len(rows))] = rng.choice([None, (), "row", rows[0][:-1], rows[0] + (0,), 5])
    else:
        i, f = rng.randrange(len(rows)), rng.randrange(width)
        row = list(rows[i])
        row[f] = mutate_value(row[f], rng)
        rows[i] = tuple(row)


def test_fuzz_verify_rows_random_mutations():
    _, states = build()
    rng = random.Random(0xC4A1)
    names = sorted(states)
    changed_runs = 0
    for run in range(PURE_RUNS):
        name = names[run % len(names)]
        base = states[name]
        state = {"declaration": base["declaration"], "entries": list(base["entries"]),
                 "checkpoints": list(base["checkpoints"]), "horizon": base["horizon"]}
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            mutate(state, rng)
        report = verify_rows(name, PUB, **state)
        assert isinstance(report, VerifyReport)
        if repr(state) != repr(base):  # repr: 1, 1.0 and True are different stored values
            changed_runs += 1
            assert not report.ok, (run, name, state, report)
            assert report.problem
    assert changed_runs > PURE_RUNS * 0.9


# -- mutations made with SQL on a real store ---------------------------------------------------

COLUMNS = {
    "chain_entry": ("tbl", "seq", "time_utc", "kind", "payload", "prev_hash", "hash"),
    "chain_checkpoint": ("tbl", "seq", "hash", "signature"),
    "chain_horizon": ("tbl", "seq", "hash", "signature"),
    "chain_table": ("name", "capacity", "on_full", "checkpoint_every", "signature"),
}


def dump(db) -> list:
    return [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in sorted(COLUMNS)]


def test_fuzz_sql_mutations_of_the_store():
    db, _ = build()
    rng = random.Random(0x5EED)
    names = ("refuse", "fifo", "every")
    baseline = dump(db)
    detected = 0
    for run in range(SQL_RUNS):
        table = rng.choice(sorted(COLUMNS))
        key = "name" if table == "chain_table" else "tbl"
        rows = db.execute(f"SELECT rowid, * FROM {table}").fetchall() if table in ("chain_table", "chain_horizon") \
            else db.execute(f"SELECT * FROM {table}").fetchall()
        with_rowid = table in ("chain_table", "chain_horizon")
        db.execute("SAVEPOINT fuzz")
        try:
            try:
                row = rng.choice(rows)
                values = row[1:] if with_rowid else row
                where = " AND ".join(f"{c} IS ?" for c in COLUMNS[table])
                action = rng.randrange(5)
                if action == 0:
                    db.execute(f"DELETE FROM {table} WHERE {where}", values)
                elif action == 1:
                    new = list(values)
                    new[1] = new[1] + rng.choice([-1, 1, 1000]) if type(new[1]) is int else new[1]
                    db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(new))})", new)
                else:
                    column = rng.randrange(len(values))
                    new = mutate_value(values[column], rng)
                    db.execute(f"UPDATE {table} SET {COLUMNS[table][column]} = ? WHERE {where}",
                               (new, *values))
            except (sqlite3.Error, OverflowError, sqlite3.ProgrammingError):
                continue  # the store's own constraints refused the change: nothing to verify
            changed = dump(db) != baseline
            reports = [verify_table(db, name, PUB) for name in names]
            assert all(isinstance(r, VerifyReport) for r in reports)
            if changed:
                detected += 1
                assert not all(r.ok for r in reports), (run, table, reports)
        finally:
            db.execute("ROLLBACK TO fuzz")
            db.execute("RELEASE fuzz")
    assert detected > SQL_RUNS // 3
    assert dump(db) == baseline


def test_schema_level_attacks_give_reports_not_exceptions():
    db, _ = build()
    attacks = [
        "DROP TABLE chain_entry",
        "DROP TABLE chain_table",
        "ALTER TABLE chain_checkpoint RENAME COLUMN signature TO sig",
        # a non-STRICT copy of the entry table lets any type into any column
        "ALTER TABLE chain_entry RENAME TO old_entry; "
        "CREATE TABLE chain_entry (tbl, seq, time_utc, kind, payload, prev_hash, hash); "
        "INSERT INTO chain_entry SELECT * FROM old_entry; "
        "UPDATE chain_entry SET seq = CAST(seq AS TEXT) WHERE seq = 3",
        "ALTER TABLE chain_entry RENAME TO old_entry; "
        "CREATE TABLE chain_entry (tbl, seq, time_utc, kind, payload, prev_hash, hash); "
        "INSERT INTO chain_entry SELECT * FROM old_entry; "
        "UPDATE chain_entry SET time_utc = time_utc + 0.0 WHERE seq = 30",
        "ALTER TABLE chain_entry RENAME TO old_entry; "
        "CREATE TABLE chain_entry (tbl, seq, time_utc, kind, payload, prev_hash, hash); "
        "INSERT INTO chain_entry SELECT * FROM old_entry; INSERT INTO chain_entry SELECT * FROM old_entry",
        "ALTER TABLE chain_horizon RENAME TO old_h; CREATE TABLE chain_horizon (tbl, seq, hash, signature); "
        "INSERT INTO chain_horizon SELECT * FROM old_h; INSERT INTO chain_horizon SELECT * FROM old_h",
    ]
    for attack in attacks:
        with atomic(db):
            db.execute("SAVEPOINT attack")
            for statement in attack.split("; "):
                db.execute(statement)
            reports = [verify_table(db, name, PUB) for name in ("refuse", "fifo", "every")]
            assert all(isinstance(r, VerifyReport) for r in reports)
            assert not all(r.ok for r in reports), (attack, reports)
            db.execute("ROLLBACK TO attack")
            db.execute("RELEASE attack")
        assert all(verify_table(db, name, PUB).ok for name in ("refuse", "fifo", "every"))
