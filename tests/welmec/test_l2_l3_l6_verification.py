"""L2/L3/L6 protection, integrity and retrieval of stored data: `smartmeter verify-storage`
checks the hash-linked, signed load profile offline, names the first bad entry of a changed,
deleted, inserted or reordered record, refuses a wrong key, and exits non-zero."""
from __future__ import annotations

import json
import sqlite3

import pytest

from smartmeter.legal import interface as legal
from welmec_support import cli

T0 = 1_773_144_000


@pytest.fixture
def data_dir(tmp_path):
    part = legal.LegalInterface(tmp_path)
    for i in range(1, 101):
        part.execute(legal.RegisterSimulatedPower(4000.0, 500.0, 1.0))
        part.execute(legal.EndMeasurementPeriod(T0 + 900 * i))
    part.close()
    return tmp_path


def _verify(data_dir, *extra) -> tuple[int, dict]:
    result = cli("verify-storage", str(data_dir), "--json", *extra)
    reports = {r["table"]: r for r in json.loads(result.stdout)}
    return result.returncode, reports


def _change(db):
    db.execute("UPDATE chain_entry SET payload = ? WHERE tbl = 'lp1' AND seq = 40",
               (bytes(1) + (10**6).to_bytes(8, "big") + bytes(24),))


def _delete(db):
    db.execute("DELETE FROM chain_entry WHERE tbl = 'lp1' AND seq = 40")


def _insert(db):
    prev = db.execute("SELECT time_utc, payload, prev_hash, hash FROM chain_entry WHERE tbl = 'lp1' AND seq = 40").fetchone()
    db.execute("UPDATE chain_entry SET seq = seq + 1000 WHERE tbl = 'lp1' AND seq > 40")
    db.execute("INSERT INTO chain_entry(tbl, seq, time_utc, kind, payload, prev_hash, hash) VALUES ('lp1', 41, ?, 0, ?, ?, ?)",
               (prev[0] + 1, prev[1], prev[3], prev[3]))
    db.execute("UPDATE chain_entry SET seq = seq - 999 WHERE tbl = 'lp1' AND seq > 1000")


def _reorder(db):
    a = db.execute("SELECT time_utc, payload FROM chain_entry WHERE tbl = 'lp1' AND seq = 40").fetchone()
    b = db.execute("SELECT time_utc, payload FROM chain_entry WHERE tbl = 'lp1' AND seq = 41").fetchone()
    db.execute("UPDATE chain_entry SET time_utc = ?, payload = ? WHERE tbl = 'lp1' AND seq = 40", b)
    db.execute("UPDATE chain_entry SET time_utc = ?, payload = ? WHERE tbl = 'lp1' AND seq = 41", a)


@pytest.mark.welmec("L6")
def test_an_untouched_store_verifies(data_dir):
    """verify-storage passes an untouched store: every entry checked and signed."""
    code, reports = _verify(data_dir)
    assert code == 0 and reports["lp1"]["ok"] and reports["lp1"]["checked"] == 100


@pytest.mark.welmec("L2", "L3", "L6")
@pytest.mark.parametrize("tamper", [_change, _delete, _insert, _reorder], ids=["changed", "deleted", "inserted", "reordered"])
def test_verify_storage_names_a_changed_deleted_inserted_or_reordered_entry(data_dir, tamper):
    """A changed, deleted, inserted or reordered load-profile entry makes verify-storage fail (exit 1) and name the entry where it starts."""
    with sqlite3.connect(data_dir / "legal.sqlite3") as db:
        tamper(db)
    code, reports = _verify(data_dir)
    assert code == 1
    assert not reports["lp1"]["ok"]
    assert reports["lp1"]["first_bad_entry"] in (40, 41)
    text = cli("verify-storage", str(data_dir)).stdout
    assert "lp1: FAILED at entry" in text


@pytest.mark.welmec("L3", "L6")
def test_a_store_signed_with_another_key_does_not_verify(data_dir, tmp_path_factory):
    """Against the meter's genuine public key, a store re-signed by another key pair does not verify (L3 class C/D: signature)."""
    genuine = (data_dir / "meter-signing-key.pub.pem").read_bytes()
    other = tmp_path_factory.mktemp("other")
    part = legal.LegalInterface(other)
    part.execute(legal.RegisterSimulatedPower(4000.0, 500.0, 1.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 900))
    part.close()
    trusted = tmp_path_factory.mktemp("trusted") / "genuine.pem"
    trusted.write_bytes(genuine)
    code, reports = _verify(other, "--public-key", str(trusted))
    assert code == 1 and not reports["lp1"]["ok"]
