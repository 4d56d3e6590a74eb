"""I3-2 back-up facilities: registers and the metering state are persisted at least every
second in one durable transaction, so a power failure (kill -9) loses less than the critical
change value m*Un*Imax*1e-6 kWh, and the store is consistent afterwards."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from smartmeter.legal import interface as legal
from welmec_support import ENERGY, read_public, start_meter_from, stored_milli

U_N, I_MAX = 230.0, 100.0  # V, A: nominal voltage and the maximum current this type is rated for (assumed)


def critical_change_wh(phases: int) -> float:
    """MID MI-003: m * Un * Imax * 1e-6 kWh, in Wh."""
    return phases * U_N * I_MAX * 1e-6 * 1000


CHILD = r"""
import sys, time
from pathlib import Path
from smartmeter.legal import interface as legal
part = legal.LegalInterface(Path(sys.argv[1]), realtime=True)
part.execute(legal.SetSimulatedLoad(float(sys.argv[2]), 0.0))
part.start()
while True:
    print(part.execute(legal.ReadEnergyRegisters()).a_plus, flush=True)
    time.sleep(0.02)
"""


@pytest.mark.welmec("I3-2")
def test_the_persist_period_keeps_a_power_failure_below_the_critical_change_value():
    """The persist period times the maximum power is below the critical change value, for one and for three phases."""
    for phases in (1, 3):
        p_max = phases * U_N * I_MAX
        assert legal.PERSIST_PERIOD * p_max / 3600 < critical_change_wh(phases)


@pytest.mark.welmec("I3-2", "P5", "U5")
def test_kill_9_of_the_legal_process_loses_less_than_the_critical_change_value(tmp_path):
    """kill -9 of a process measuring Pmax in real time, at random moments: the restarted part holds all but at most the critical change value, with a consistent store."""
    p_max = U_N * I_MAX
    rng = random.Random(7)
    stored_before = 0
    for kill in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(p_max)], stdout=subprocess.PIPE,
                                 text=True, start_new_session=True)
        lines = 0
        last_seen = None
        target = rng.randint(60, 140)  # ~1.2-2.8 s of measuring
        for line in child.stdout:
            last_seen = int(line)
            lines += 1
            if lines >= target:
                os.killpg(child.pid, signal.SIGKILL)
                break
        child.wait()
        part = legal.LegalInterface(tmp_path)
        try:
            kept = part.execute(legal.ReadEnergyRegisters()).a_plus
            assert part.execute(legal.ReadFatalErrors()) == 0
        finally:
            part.close()
        lost = last_seen - kept
        assert lost < critical_change_wh(1), (kill, last_seen, kept)
        assert kept >= stored_before  # never below what an earlier start held
        assert kept > stored_before  # something was backed up during this run
        stored_before = kept


@pytest.mark.welmec("I3-2")
def test_power_failure_of_a_whole_meter_keeps_what_dlms_showed(tmp_path):
    """kill -9 of a whole meter (communication side and legal process): after restart +A is at least what DLMS showed before, less the critical change value."""
    meter = start_meter_from(None, tmp_path / "m")
    shown = read_public(meter, [(ENERGY["a_plus"], 2, 3)])[0].value
    meter.power_failure()
    kept = stored_milli(meter.data_dir)["a_plus"] / 1000
    assert kept >= shown - critical_change_wh(1)
    again = start_meter_from(None, tmp_path / "m")
    try:
        assert read_public(again, [(ENERGY["a_plus"], 2, 3)])[0].value >= kept - 1
        assert read_public(again, [("0-0:97.97.128.255", 2, 1)])[0].value == 0
    finally:
        again.stop()
