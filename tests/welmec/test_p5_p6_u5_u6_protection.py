"""P5/P6/U5/U6 protection against accidental and intentional changes: a changed byte in the
stored registers, logs or load profile, or in a legally relevant file, is detected at the
next start (and by the periodic self-check while running), raises the fatal error register,
is logged, and modified software registers no energy; interval data never mixes."""
from __future__ import annotations

import json
import shutil
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmeter.legal import interface as legal
from welmec_support import LEGAL_DIR, flip_docstring_byte

T0 = 1_773_144_000


def _filled(data_dir):
    part = legal.LegalInterface(data_dir)
    part.execute(legal.BackfillDemoHistory(tuple(legal.ProfileRow(T0 + 900 * i, 0, 100 * i, 0, 10 * i, 0)
                                                 for i in range(1, 41))))
    part.execute(legal.RegisterSimulatedPower(3000.0, 300.0, 20.0))
    part.execute(legal.SetCertificationMode(True, T0, "01" * 8, True))
    part.execute(legal.SetCertificationMode(False, T0 + 1, "01" * 8, True))
    part.execute(legal.EndMeasurementPeriod(T0 + 900 * 41))
    part.close()


def _flip(db, table: str, column: str, where: str) -> None:
    (value,) = db.execute(f"SELECT {column} FROM {table} WHERE {where}").fetchone()
    if isinstance(value, int):
        changed = value ^ 1
    else:
        raw = bytearray(value if isinstance(value, bytes) else value.encode())
        raw[len(raw) // 2] ^= 0x01
        changed = bytes(raw) if isinstance(value, bytes) else raw.decode("latin-1")
    db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (changed,))


@pytest.mark.parametrize("what, table, column, where", [
    ("register value", "energy_register", "milli_units", "name = 'a_plus'"),
    ("register signature", "meta", "value", "key = 'registers_signature'"),
    ("metrological log entry", "chain_entry", "payload", "tbl = 'metrological' AND seq = 1"),
    ("certification log entry", "chain_entry", "payload", "tbl = 'certification' AND seq = 2"),
    ("load profile entry", "chain_entry", "payload", "tbl = 'lp1' AND seq = 7"),
    ("load profile time stamp", "chain_entry", "time_utc", "tbl = 'lp1' AND seq = 20"),
])
@pytest.mark.welmec("P5", "U5")
def test_a_flipped_bit_in_the_store_is_fatal_and_logged_at_the_next_start(tmp_path, what, table, column, where):
    """A bit flipped in the stored registers, their signature, a log entry or a load-profile entry sets fatal error bit 0x04 at the next start and logs event 201."""
    _filled(tmp_path)
    with sqlite3.connect(tmp_path / "legal.sqlite3") as db:
        _flip(db, table, column, where)
    part = legal.LegalInterface(tmp_path)
    try:
        assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY, what
        damaged = [r for r in part.execute(legal.ReadMetrologicalLog()) if r.event_id == legal.EVENT_STORE_DAMAGED]
        assert len(damaged) == 1
        # evidence: the bit survives a restart, nothing clears it
    finally:
        part.close()
    again = legal.LegalInterface(tmp_path)
    try:
        assert again.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY
    finally:
        again.close()


@pytest.mark.welmec("P5", "U5")
def test_an_untouched_store_starts_without_a_fatal_error(tmp_path):
    """The same store, unmodified, starts with the fatal error register clear (the detection above is not a false alarm)."""
    _filled(tmp_path)
    part = legal.LegalInterface(tmp_path)
    try:
        assert part.execute(legal.ReadFatalErrors()) == 0
    finally:
        part.close()


@pytest.fixture
def legal_copy(tmp_path):
    root = tmp_path / "legal"
    shutil.copytree(LEGAL_DIR, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


@pytest.mark.welmec("P5", "U5", "P6", "U6")
def test_a_modified_legal_file_stops_registration_at_start(tmp_path, legal_copy):
    """A legally relevant file changed on disk: at start the part sets fatal bit 0x01, logs the changed file, and registers no energy."""
    flip_docstring_byte(legal_copy / "metrology.py")
    part = legal.LegalInterface(tmp_path / "data", software_root=str(legal_copy))
    try:
        assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_PROGRAM_MEMORY
        assert not part.execute(legal.ReadSoftwareIdentity()).ok
        part.execute(legal.RegisterSimulatedPower(5000.0, 1000.0, 30.0))
        assert part.execute(legal.ReadEnergyRegisters()) == legal.EnergySnapshot(0, 0, 0, 0)
        events = [json.loads(r.fields_json) for r in part.execute(legal.ReadMetrologicalLog())
                  if r.event_id == legal.EVENT_SOFTWARE_MISMATCH]
        assert [e["changed_files"] for e in events] == ["metrology.py"]
    finally:
        part.close()


@pytest.mark.welmec("P5", "U5", "P6", "U6", "U8")
def test_the_periodic_self_check_finds_a_file_changed_while_running(tmp_path, legal_copy):
    """While running, the software self-check (every SOFTWARE_CHECK_PERIOD on the monotonic clock) detects a changed legal file and stops registration."""
    now = [1000.0]
    part = legal.LegalInterface(tmp_path / "data", software_root=str(legal_copy), monotonic=lambda: now[0])
    try:
        part.start()
        part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 10.0))
        assert part.execute(legal.ReadFatalErrors()) == 0
        registered = part.execute(legal.ReadEnergyRegisters())
        (legal_copy / "registers.py").write_text((legal_copy / "registers.py").read_text() + "\n# patched\n")
        now[0] += legal.SOFTWARE_CHECK_PERIOD - 1
        time.sleep(legal.PERSIST_PERIOD * 1.5)  # housekeeping runs: not yet due
        assert part.execute(legal.ReadFatalErrors()) == 0
        now[0] += 2
        deadline = time.monotonic() + 10
        while not part.execute(legal.ReadFatalErrors()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_PROGRAM_MEMORY
        part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 10.0))
        assert part.execute(legal.ReadEnergyRegisters()) == registered
    finally:
        part.close()


@pytest.mark.welmec("P5", "U5")
def test_no_declared_command_deletes_or_overwrites_stored_data():
    """No command of the protective interface deletes, clears or sets stored data; the one reset (maximum demand) only ends a billing period."""
    names = [c.__name__ for c in _commands()]
    destructive = [n for n in names if any(w in n for w in ("Delete", "Clear", "Erase", "Reset", "Remove", "Write",
                                                               "Set", "Backfill", "Inject"))]
    assert sorted(destructive) == sorted(["ResetMaximumDemand", "SetSimulatedLoad", "SetParameters",
                                          "SetCertificationMode", "WriteCertificationObject", "BackfillDemoHistory",
                                          "InjectMetrologyStall"])


def _commands():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        part = legal.LegalInterface(Path(tmp))
        try:
            return part.commands
        finally:
            part.close()


segments = st.lists(st.tuples(st.floats(-4000, 4000), st.floats(-2000, 2000), st.integers(1, 40),
                              st.booleans()), min_size=1, max_size=8)


@pytest.mark.welmec("U5")
@settings(max_examples=25, deadline=None)
@given(plan=segments)
def test_interval_data_never_mixes_across_periods(tmp_path_factory, plan):
    """Each load-profile entry holds exactly the energy measured up to its own period end: energy of one period never lands in another."""
    part = legal.LegalInterface(tmp_path_factory.mktemp("u5"))
    try:
        expected = []
        t = T0
        reference = legal.LegalInterface(tmp_path_factory.mktemp("u5ref"))
        try:
            for active, reactive, seconds, close_period in plan:
                part.execute(legal.RegisterSimulatedPower(active, reactive, float(seconds)))
                reference.execute(legal.RegisterSimulatedPower(active, reactive, float(seconds)))
                if close_period:
                    t += 900
                    part.execute(legal.EndMeasurementPeriod(t))
                    expected.append((t, reference.execute(legal.ReadEnergyRegisters())))
        finally:
            reference.close()
        rows = part.execute(legal.ReadLoadProfile())
        assert [(r.capture_time, legal.EnergySnapshot(r.a_plus, r.a_minus, r.r_plus, r.r_minus)) for r in rows] == expected
    finally:
        part.close()
