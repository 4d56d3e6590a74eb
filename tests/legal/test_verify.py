"""The meter signing key, and offline verification of a data directory (read-only)."""
from __future__ import annotations

import hashlib
import os
import pickle
import stat
import subprocess

import pytest

from smartmeter.legal import storage
from smartmeter.legal.chain import ChainedTable, atomic
from smartmeter.legal.eventlog import CertificationLog, EventLog
from smartmeter.legal.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    MeterSigner,
    SigningKeyError,
    public_key_fingerprint,
    verify,
)
from smartmeter.legal.verify import STORE_REPORT_NAME, all_ok, open_read_only, verify_data_dir

TITLE = b"FLAG\x00\x00\x00\x01"


# -- the signing key ---------------------------------------------------------------------------


def test_key_is_created_once_with_mode_0600_and_its_public_half_exported(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path)
    private = tmp_path / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / PUBLIC_KEY_FILE).read_bytes() == signer.public_key_pem()
    assert b"PRIVATE KEY" in private.read_bytes() and b"PRIVATE" not in signer.public_key_pem()
    again = MeterSigner.load_or_create(tmp_path)
    assert again.public_key_pem() == signer.public_key_pem()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left over


def test_loose_permissions_are_tightened_and_a_replaced_public_key_is_rewritten(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path)
    os.chmod(tmp_path / PRIVATE_KEY_FILE, 0o644)
    (tmp_path / PUBLIC_KEY_FILE).write_bytes(MeterSigner.generate().public_key_pem())
    MeterSigner.load_or_create(tmp_path)
    assert stat.S_IMODE((tmp_path / PRIVATE_KEY_FILE).stat().st_mode) == 0o600
    assert (tmp_path / PUBLIC_KEY_FILE).read_bytes() == signer.public_key_pem()


def test_signatures_are_der_ecdsa_p256_sha256(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path)
    signature = signer.sign(b"data")
    assert signature[0] == 0x30 and 68 <= len(signature) <= 72  # DER SEQUENCE of two INTEGERs
    assert verify(signer.public_key_pem(), b"data", signature)
    assert not verify(signer.public_key_pem(), b"date", signature)
    assert not verify(MeterSigner.generate().public_key_pem(), b"data", signature)
    assert not verify(b"not a key", b"data", signature)
    assert not verify(signer.public_key_pem(), b"data", signature[:-1])
    assert not verify(signer.public_key_pem(), "data", signature)  # never raises, whatever it is given
    out = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(tmp_path / PUBLIC_KEY_FILE), "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert "prime256v1" in out or "P-256" in out


def test_the_private_key_never_appears_in_the_store_a_repr_or_a_pickle(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path / "keys")
    db = storage.open_store(tmp_path / "data")
    log = CertificationLog(db, signer)
    for i in range(20):
        log.append(i, 18, TITLE, "fw")
    db.close()
    scalar = signer._private_key.private_numbers().private_value.to_bytes(32, "big")
    pem = (tmp_path / "keys" / PRIVATE_KEY_FILE).read_bytes()
    for path in (tmp_path / "data").iterdir():
        content = path.read_bytes()
        assert scalar not in content and b"PRIVATE KEY" not in content and pem[30:80] not in content
    assert scalar.hex() not in repr(signer) and "fingerprint" in repr(signer)
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_an_unusable_key_file_is_an_error_that_does_not_quote_it(tmp_path):
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError) as info:
        MeterSigner.load_or_create(tmp_path)
    assert "SECRETSTUFF" not in str(info.value)


def test_fingerprint_is_sha256_of_the_der_public_key(tmp_path):
    signer = MeterSigner.load_or_create(tmp_path)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(tmp_path / PUBLIC_KEY_FILE), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert signer.fingerprint() == public_key_fingerprint(signer.public_key_pem()) == hashlib.sha256(der).hexdigest()


# -- verify_data_dir ---------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "meter-data"
    db = storage.open_store(data)
    signer = MeterSigner.load_or_create(data)
    log = CertificationLog(db, signer)
    for i in range(5):
        log.append(i, 17, TITLE, "fw-1")
    lp = ChainedTable(db, "lp1", 20, "fifo", signer, checkpoint_every=4)
    for i in range(50):
        lp.append(900 * i, 0, b"%d" % i)
    events = EventLog(db, "params", 100, signer)
    events.append(1, 3, {"name": "x"})
    db.close()
    return data


def tamper(data, statement, *args):
    db = storage.open_store(data)
    with atomic(db):
        db.execute(statement, args)
    db.close()


def test_a_genuine_data_dir_verifies(data_dir):
    reports = verify_data_dir(data_dir, expected_tables=["certification", "lp1"])
    assert [r.name for r in reports] == ["certification", "lp1", "params"]
    assert all_ok(reports)
    by_name = {r.name: r for r in reports}
    assert by_name["certification"].last_seq == 5 and by_name["lp1"].checked == 20
    assert by_name["lp1"].last_seq == 50 and by_name["lp1"].unsigned_tail == 2
    fingerprint = public_key_fingerprint((data_dir / PUBLIC_KEY_FILE).read_bytes())
    assert {r.key_fingerprint for r in reports} == {fingerprint}


def test_verification_writes_nothing(data_dir):
    def contents():
        return {p.name: p.read_bytes() for p in data_dir.iterdir() if not p.name.endswith("-shm")}

    before = contents()
    assert all_ok(verify_data_dir(data_dir))
    after = contents()
    if "legal.sqlite3-wal" not in before:  # SQLite opens a WAL store read-only with an empty -wal file
        assert after.pop("legal.sqlite3-wal", b"") == b""
    assert after == before
    db = open_read_only(data_dir / "legal.sqlite3")
    with pytest.raises(Exception, match="readonly|read-only|query_only"):
        db.execute("DELETE FROM chain_entry")
    db.close()


def test_verification_while_the_meter_has_the_store_open(data_dir):
    db = storage.open_store(data_dir)  # the running meter's connection, WAL mode
    signer = MeterSigner.load_or_create(data_dir)
    log = CertificationLog(db, signer)
    log.append(10, 18, TITLE, "fw-2")
    reports = {r.name: r for r in verify_data_dir(data_dir)}
    assert reports["certification"].ok and reports["certification"].last_seq == 6
    db.close()


def test_a_tampered_table_is_reported_by_name(data_dir):
    tamper(data_dir, "UPDATE chain_entry SET payload = ? WHERE tbl = 'lp1' AND seq = 40", b"99")
    reports = {r.name: r for r in verify_data_dir(data_dir)}
    assert reports["certification"].ok and reports["params"].ok
    assert not reports["lp1"].ok and reports["lp1"].first_bad_seq == 40
    assert "content changed" in reports["lp1"].problem
    assert not all_ok(reports.values())


def test_a_removed_table_is_reported_when_it_is_expected(data_dir):
    for table in ("chain_entry", "chain_checkpoint"):
        tamper(data_dir, f"DELETE FROM {table} WHERE tbl = 'certification'")
    tamper(data_dir, "DELETE FROM chain_table WHERE name = 'certification'")
    tamper(data_dir, "DELETE FROM event_counter WHERE name LIKE 'certification%'")
    assert all_ok(verify_data_dir(data_dir))  # gone without a trace from the store's point of view...
    reports = {r.name: r for r in verify_data_dir(data_dir, expected_tables=["certification"])}
    assert not reports["certification"].ok and "missing" in reports["certification"].problem  # ...not from ours


def test_a_replaced_public_key_fails_every_table(data_dir):
    (data_dir / PUBLIC_KEY_FILE).write_bytes(MeterSigner.generate().public_key_pem())
    reports = verify_data_dir(data_dir)
    assert reports and not any(r.ok for r in reports)
    assert all("signature invalid" in r.problem for r in reports)


def test_a_store_re_signed_with_another_key_is_caught_only_by_the_trusted_key(data_dir, tmp_path):
    trusted = (data_dir / PUBLIC_KEY_FILE).read_bytes()
    # The attacker replaces the key pair and rebuilds every table with it.
    rogue_dir = tmp_path / "rogue"
    rogue = MeterSigner.load_or_create(rogue_dir)
    (data_dir / PRIVATE_KEY_FILE).unlink()
    for name in ("legal.sqlite3", "legal.sqlite3-wal", "legal.sqlite3-shm"):
        (data_dir / name).unlink(missing_ok=True)
    db = storage.open_store(data_dir)
    CertificationLog(db, rogue).append(0, 18, TITLE, "evil")
    db.close()
    (data_dir / PUBLIC_KEY_FILE).write_bytes(rogue.public_key_pem())
    assert all_ok(verify_data_dir(data_dir))  # consistent with the key that lies beside it...
    assert verify_data_dir(data_dir)[0].key_fingerprint != public_key_fingerprint(trusted)  # ...which shows
    assert not all_ok(verify_data_dir(data_dir, public_key_pem=trusted))


def test_store_level_problems_are_one_report_never_an_exception(tmp_path, data_dir):
    missing = verify_data_dir(tmp_path / "nowhere")
    assert [r.name for r in missing] == [STORE_REPORT_NAME] and "public key" in missing[0].problem
    assert not (tmp_path / "nowhere").exists()  # verification does not create a data dir
    empty = tmp_path / "empty"
    empty.mkdir()
    MeterSigner.load_or_create(empty)
    no_store = verify_data_dir(empty)
    assert not no_store[0].ok and "no store" in no_store[0].problem
    assert not (empty / "legal.sqlite3").exists()
    (empty / "legal.sqlite3").write_bytes(os.urandom(8192))
    damaged = verify_data_dir(empty)
    assert not all_ok(damaged) and damaged[0].name == STORE_REPORT_NAME
    (empty / PUBLIC_KEY_FILE).write_bytes(b"garbage")
    assert "not a PEM public key" in verify_data_dir(empty)[0].problem


def test_a_dropped_chain_table_is_reported(data_dir):
    db = storage.open_store(data_dir)
    db.execute("DROP TABLE chain_checkpoint")
    db.close()
    reports = verify_data_dir(data_dir)
    assert reports and not any(r.ok for r in reports)
    assert all("store unreadable" in r.problem for r in reports)


def test_a_key_dir_apart_from_the_data_dir(tmp_path):
    data, keys = tmp_path / "data", tmp_path / "keys"
    db = storage.open_store(data)
    CertificationLog(db, MeterSigner.load_or_create(keys)).append(1, 17, TITLE, "fw")
    db.close()
    assert not all_ok(verify_data_dir(data))  # no public key beside the store
    assert all_ok(verify_data_dir(data, key_dir=keys))
    assert all_ok(verify_data_dir(data, public_key_pem=(keys / PUBLIC_KEY_FILE).read_bytes()))
