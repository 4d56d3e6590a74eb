"""L5/L8 confidentiality of keys, storage capacity: the meter's private signing key is a
0600 file never given out by any command or written into the store, its public key's
fingerprint is shown; load profile 1 holds exactly 5760 entries and overwrites only the
oldest; the event logs refuse rather than overwrite when full."""
from __future__ import annotations

import dataclasses
import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from smartmeter.legal import interface as legal
from welmec_support import cli
from authority_support import certification_token

T0 = 1_773_144_000
# one valid value for each argument a read command needs, so that every read command is asked
READ_ARGUMENTS = {"register": "a_plus", "profile": "lp1"}


@pytest.mark.welmec("L5")
def test_the_private_key_is_never_given_out(tmp_path):
    """The private signing key is a 0600 file; no read command returns it and its bytes are nowhere in the store; `smartmeter id` shows the public key's fingerprint."""
    part = legal.LegalInterface(tmp_path)
    try:
        part.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 5.0))
        part.execute(legal.EndMeasurementPeriod(T0))
        pem, fingerprint = part.execute(legal.ReadSigningKey())
        results = [part.execute(c(**{f.name: READ_ARGUMENTS[f.name] for f in dataclasses.fields(c)
                                       if f.default is dataclasses.MISSING}))
                   for c in part.commands if c.__name__.startswith("Read")]
    finally:
        part.close()
    key_file = tmp_path / "meter-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(key_file.read_bytes(), None)
    secret = private.private_numbers().private_value.to_bytes(32, "big")
    assert b"PRIVATE" not in pem and secret not in pem
    assert all(secret.hex() not in repr(r) and "PRIVATE" not in repr(r) for r in results)
    assert secret not in (tmp_path / "legal.sqlite3").read_bytes()
    der = serialization.load_pem_public_key(pem).public_bytes(serialization.Encoding.DER,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    shown = cli("id", "--data-dir", str(tmp_path))
    assert hashlib.sha256(der).hexdigest() in shown.stdout


@pytest.mark.welmec("L8")
def test_load_profile_1_holds_5760_entries_and_drops_the_oldest_first(tmp_path):
    """Load profile 1 keeps exactly 5760 entries (60 days of 15 minutes): the 5761st drops the oldest, and the table still verifies."""
    part = legal.LegalInterface(tmp_path)
    try:
        part.execute(legal.BackfillDemoHistory(tuple(legal.ProfileRow(T0 + 900 * i, 0, i, 0, 0, 0) for i in range(5760))))
        assert part.execute(legal.CountLoadProfileEntries()) == legal.LOAD_PROFILE_1_CAPACITY == 5760
        for k in range(1, 11):
            part.execute(legal.EndMeasurementPeriod(T0 + 900 * (5759 + k)))
        rows = part.execute(legal.ReadLoadProfile())
        assert len(rows) == 5760
        assert rows[0].capture_time == T0 + 900 * 10 and rows[-1].capture_time == T0 + 900 * 5769
    finally:
        part.close()
    result = cli("verify-storage", str(tmp_path))
    assert result.returncode == 0, result.stdout


@pytest.mark.welmec("L8", "P7", "U7")
def test_a_full_event_log_refuses_new_entries_and_keeps_the_old(tmp_path):
    """When the certification-protected log is full, a change that would need a new entry is refused, and no entry is overwritten."""
    part = legal.LegalInterface(tmp_path)
    title = "4b464d0000000007"
    try:
        token = certification_token(part, title)
        part.execute(legal.SetCertificationMode(True, T0, title, token))
        value = 1000
        while True:
            value += 1
            try:
                part.execute(legal.SetParameters((("meter_constant", value),), T0, title, token))
            except legal.CommandRefused as exc:
                assert "full" in str(exc)
                break
        log = part.execute(legal.ReadCertificationLog())
        assert log[0].seq == 1 and log[0].event_id == 230  # the first entry is still there
        assert dict(part.execute(legal.ReadParameters()))["meter_constant"] == value - 1
    finally:
        part.close()
