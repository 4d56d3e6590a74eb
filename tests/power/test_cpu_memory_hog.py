"""A CPU and memory hog beside a real meter (WELMEC 7.2 I3-5, U9): other software on the same
computer, busy on every core and churning memory, does not change what the meter measures.

The meter runs with its simulated household replaced by a known constant load (as
tests/welmec/test_i3_5_dynamic.py). Beside it, for HOG_SECONDS: one busy-looping process per
core plus one more, and a process that keeps HOG_MEMORY_MB allocated and rewrites every page
of it in a loop (memory bandwidth and page-cache pressure). The legal part persists its
registers and its metering position (the next sample of the 8 kHz signal) together; the test
polls them read-only from the store.

Stated tolerance: the energy registered per measured signal is P x t within the metrology's
0.1 % and 1 mWh of rounding (what the hog must not change), and the measured signal follows
the wall clock within MAX_LAG_S (the hog may delay metering by at most that, it may not
lose or invent signal).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterproc import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import power_fail_soak as soak  # noqa: E402

POWER_W = 23_000.0  # 230 V x 100 A, one phase
HOG_SECONDS = 8.0
HOG_MEMORY_MB = 512
MAX_LAG_S = 1.0  # metering may run behind the wall clock by at most this under the hog
METROLOGY_TOLERANCE = 0.001

METER = r"""
import sys
import smartmeter.meter.simulation as simulation
simulation.HouseholdLoad.power = lambda self, t: (float(sys.argv[1]), 0.0)
from smartmeter.cli.main import main
main(["meter", "run", "--data-dir", sys.argv[2], "--wrapper-port", sys.argv[3], "--hdlc-port", sys.argv[4]])
"""

CPU_HOG = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nx = 0\nwhile time.monotonic() < end:\n    x = (x * 31 + 7) % 1000003\n"

MEMORY_HOG = r"""
import sys, time
end = time.monotonic() + float(sys.argv[1])
block = bytearray(int(sys.argv[2]) * 1024 * 1024)
rounds = 0
while time.monotonic() < end:
    for i in range(0, len(block), 4096):
        block[i] = (block[i] + 1) & 0xFF
    rounds += 1
print(rounds)
"""


def _start_meter(data_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", METER, str(POWER_W), str(data_dir), str(free_port()),
                                str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in process.stdout:
        if "WZ optical interface" in line:
            break
    else:
        raise RuntimeError("meter did not start")
    import threading

    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process


@pytest.mark.welmec("I3-5", "U9")
def test_a_cpu_and_memory_hog_beside_the_meter_does_not_change_metering(tmp_path):
    """With a busy loop on every core and a 512 MB memory churner beside it, the meter registers P x t per measured signal (0.1 % + 1 mWh) and its metering stays within 1 s of the wall clock."""
    launched = time.monotonic()  # the meter's signal (position 0 on a fresh store) cannot start before this
    meter = _start_meter(tmp_path)
    poller = soak.StorePoller(tmp_path, soak.read_persisted(tmp_path))
    hogs: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 15
        while len(poller.seen) < 3:  # metering runs at the known load and persists
            assert time.monotonic() < deadline, "no persist seen"
            time.sleep(0.05)
        hog_start = time.monotonic()
        hogs = [subprocess.Popen([sys.executable, "-c", CPU_HOG, repr(HOG_SECONDS)])
                for _ in range((os.cpu_count() or 1) + 1)]
        memory = subprocess.Popen([sys.executable, "-c", MEMORY_HOG, repr(HOG_SECONDS), str(HOG_MEMORY_MB)],
                                  stdout=subprocess.PIPE, text=True)
        hogs.append(memory)
        cpu_before = os.times()
        rounds = int(memory.communicate(timeout=HOG_SECONDS + 60)[0])
        for hog in hogs:
            hog.wait(timeout=60)
        hog_end = time.monotonic()
        after = os.times()
        children_cpu = (after.children_user + after.children_system) - (cpu_before.children_user + cpu_before.children_system)
    finally:
        poller.stop()
        for hog in hogs:
            if hog.poll() is None:
                hog.kill()
                hog.wait()
        os.killpg(meter.pid, signal.SIGINT)
        try:
            meter.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(meter.pid, signal.SIGKILL)
            meter.wait()

    # the hog was real: it took at least a third of every core (the meter and other work share
    # them), and the churner went through its pages
    assert children_cpu >= (os.cpu_count() or 1) * HOG_SECONDS / 3, children_cpu
    assert rounds >= 1

    window = [(b, t, st) for b, t, st in poller.seen if hog_start <= b and t <= hog_end]
    assert len(window) >= int(HOG_SECONDS / soak.PERSIST_PERIOD) - 2, window
    b0, t0, base = window[0]
    worst_lag = 0.0
    for b, t, state in window[1:]:
        signal_s = (state.position - base.position) / soak.SAMPLE_RATE
        registered_mwh = state.milli["a_plus"] - base.milli["a_plus"]
        expected_mwh = POWER_W * signal_s / 3.6
        assert abs(registered_mwh - expected_mwh) <= METROLOGY_TOLERANCE * expected_mwh + 1, (state, base)
        assert state.milli["a_minus"] == base.milli["a_minus"]  # no export invented
        worst_lag = max(worst_lag, (b - t0) - signal_s)
        # never ahead of the wall clock: a frame is measured only once its last sample is due, so
        # the whole signal measured so far fits in the time since launch. (Comparing the window's
        # signal with the window's wall time would not do: a frame still due at the base persist
        # may be measured within the window.)
        assert state.position / soak.SAMPLE_RATE <= t - launched, (state.position, t - launched)
    print(f"hog: {children_cpu:.1f} s CPU in {hog_end - hog_start:.1f} s, {rounds} memory rounds; "
          f"{len(window)} persists, worst metering lag {worst_lag:.3f} s")
    assert worst_lag <= MAX_LAG_S
    assert window[-1][2].position - base.position >= soak.SAMPLE_RATE * (HOG_SECONDS - 2 - MAX_LAG_S)
