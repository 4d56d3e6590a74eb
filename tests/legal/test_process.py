"""The legal part in its own process: only declared commands cross, as data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.process import decode_command, encode_command


@pytest.fixture
def part(tmp_path):
    client = legal.start_legal_process(tmp_path)
    yield client
    client.close()


def test_commands_and_results_cross_the_process_boundary(part):
    part.execute(legal.StartDemandPeriod(1773144000))
    part.execute(legal.RegisterSimulatedPower(1200.0, 300.0, 3600.0))
    energy = part.execute(legal.ReadEnergyRegisters())
    # measured from 8 kHz samples and floored to whole Wh: within one unit of the exact value
    assert 1199 <= energy.a_plus <= 1200 and 299 <= energy.r_plus <= 300 and energy.a_minus == energy.r_minus == 0
    row = part.execute(legal.EndMeasurementPeriod(1773144900, 0))
    assert row == legal.ProfileRow(1773144900, 0, energy.a_plus, 0, energy.r_plus, 0)
    assert part.execute(legal.ReadLoadProfile()) == (row,)


def test_undeclared_things_are_refused_and_counted(part):
    class Sneaky:
        pass

    for hostile in (Sneaky(), "ReadEnergyRegisters", 42, None):
        with pytest.raises(legal.CommandRefused):
            part.execute(hostile)
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.ReadDemand("no_such_register"))
    assert part.execute(legal.ReadRefusedCommandCount()) == 4


ALLOWED = {"ReadEnergyRegisters": legal.ReadEnergyRegisters, "ProfileRow": legal.ProfileRow,
           "ReadLoadProfile": legal.ReadLoadProfile}


@pytest.mark.parametrize("raw", [
    b'{"type": "ReadEnergyRegisters", "fields": {"extra": 1}}',  # undeclared field
    b'{"type": "os.system", "fields": {}}',
    b'[1, 2]', b'not json', b'{"type": "ReadLoadProfile"}', b"\xff\xfe", b"null", b'{"fields": {}}',
])
def test_only_declared_commands_can_be_built_from_the_wire(raw):
    with pytest.raises(legal.CommandRefused):
        decode_command(raw, ALLOWED)


def test_a_record_is_data_not_a_command(tmp_path):
    raw = encode_command(legal.ProfileRow(1, 0, 2, 3, 4, 5))
    record = decode_command(raw, ALLOWED)
    with pytest.raises(legal.CommandRefused):
        legal.LegalInterface(tmp_path).execute(record)


def test_encoding_round_trip():
    command = legal.BackfillDemoHistory((legal.ProfileRow(1, 0, 2, 3, 4, 5),))
    allowed = {"BackfillDemoHistory": legal.BackfillDemoHistory, "ProfileRow": legal.ProfileRow}
    assert decode_command(encode_command(command), allowed) == command


def test_the_legal_process_ends_with_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from smartmeter.legal import interface as legal;"
        f"c = legal.start_legal_process(Path({str(tmp_path)!r})); print(c.pid, flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the legal process outlived the communication side")


def test_a_dead_legal_process_is_started_again_from_its_persisted_state(part):
    part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 10.0))
    part.execute(legal.Persist())
    before = part.execute(legal.ReadEnergyRegisters())
    os.kill(part.pid, signal.SIGKILL)  # what its watchdog does when metrology cannot recover
    time.sleep(0.2)
    assert part.execute(legal.ReadEnergyRegisters()) == before
    assert part.restarts == 1
