"""I3-5 dynamic behaviour: a flood of DLMS requests on the communication side of a real meter
process does not disturb the legal process's real-time measurement: the registered energy
equals P*t and the metering lag stays small while the flood runs.

Two observations: the meter's persisted metering state (registers in mWh and the metering
position, the next sample of the 8 kHz signal), polled read-only from its store, gives the
energy per measured signal time exactly and the lag behind the wall clock; the DLMS readings
of +A during the flood are checked against P x wall time once the lag allowance leaves the
bound meaningful (its lower end above zero)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from meterproc import free_port
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from welmec_support import ENERGY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import power_fail_soak as soak  # noqa: E402

POWER_W = 23_000.0  # 230 V x 100 A, one phase
CLIENTS = 12
FLOOD_SECONDS = 5.0
MAX_LAG_S = 0.5
METROLOGY_TOLERANCE = 0.001  # of the energy, on the synthetic signal (plus 1 mWh of rounding)

# the meter process with its simulated household replaced by a known constant load
CHILD = r"""
import sys
import smartmeter.meter.simulation as simulation
simulation.HouseholdLoad.power = lambda self, t: (float(sys.argv[1]), 0.0)
from smartmeter.cli.main import main
main(["meter", "run", "--data-dir", sys.argv[2], "--wrapper-port", sys.argv[3], "--hdlc-port", sys.argv[4]])
"""


@dataclass
class Reading:
    before: float
    after: float
    wh: int


async def _read(client) -> Reading:
    before = time.monotonic()
    value = (await client.get(ENERGY["a_plus"], 2, class_id=3)).value
    return Reading(before, time.monotonic(), value)


@pytest.mark.welmec("I3-5", "S3")
def test_a_dlms_flood_does_not_disturb_real_time_metering(tmp_path):
    """While 12 clients flood the meter with GET requests, the energy it registers at a known load stays P*t and the metering lag stays below 0.5 s."""
    wrapper, hdlc = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(POWER_W), str(tmp_path), str(wrapper), str(hdlc)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in process.stdout:
            if "WZ optical interface" in line:
                break
        threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()
        poller = soak.StorePoller(tmp_path, soak.read_persisted(tmp_path))

        async def scenario():
            stop = asyncio.Event()
            done = [0]

            async def flood():
                async with MeterClient(WrapperLink("127.0.0.1", wrapper, 16, 1, 20)) as c:
                    while not stop.is_set():
                        await c.get(ENERGY["a_plus"], 2, class_id=3)
                        await c.get("1-0:0.2.8.255", 2, class_id=1)
                        done[0] += 2

            async with MeterClient(WrapperLink("127.0.0.1", wrapper, 16, 1, 20)) as probe:
                await asyncio.sleep(1.5)  # the meter's registration loop has set the load
                first = await _read(probe)
                flooders = [asyncio.create_task(flood()) for _ in range(CLIENTS)]
                readings = []
                end = time.monotonic() + FLOOD_SECONDS
                while time.monotonic() < end:
                    await asyncio.sleep(0.5)
                    readings.append(await _read(probe))
                stop.set()
                await asyncio.gather(*flooders)
            return first, readings, done[0]

        flood_start = time.monotonic()
        first, readings, requests = asyncio.run(scenario())
        flood_end = time.monotonic()
        poller.stop()
    finally:
        process.terminate()
        process.wait(10)
    assert requests > 200  # the flood was real

    # persisted states while the flood ran (the first 1.5 s of the scenario are the probe's start)
    window = [(b, t, st) for b, t, st in poller.seen if flood_start + 1.5 <= b and t <= flood_end]
    assert len(window) >= int((FLOOD_SECONDS - 1) / soak.PERSIST_PERIOD), window
    b0, t0, base = window[0]
    for b, t, state in window[1:]:
        signal_s = (state.position - base.position) / soak.SAMPLE_RATE
        registered_mwh = state.milli["a_plus"] - base.milli["a_plus"]
        expected_mwh = POWER_W * signal_s / 3.6
        # energy per measured signal: exact up to the metrology and 1 mWh of rounding
        assert abs(registered_mwh - expected_mwh) <= METROLOGY_TOLERANCE * expected_mwh + 1, (state, base)
        # real time: the signal measured since the first persist follows the wall clock (the
        # persists happened within their poll windows [b, t]); either state may lag the wall
        # clock by up to MAX_LAG_S: the later one shortens the signal, the first one lengthens it
        assert (b - t0) - MAX_LAG_S <= signal_s <= (t - b0) + MAX_LAG_S, (signal_s, b - t0, t - b0)
    assert window[-1][2].position - base.position >= soak.SAMPLE_RATE * (FLOOD_SECONDS - 3)

    # DLMS readings: either may lag the signal by up to MAX_LAG_S; +-1 for the whole-Wh register.
    # The bound is asserted where its lower end is above zero (not vacuous), and there are enough
    least_meaningful = 2 * MAX_LAG_S + 2 * 3600 / POWER_W
    checked = 0
    for r in readings:
        registered_wh = r.wh - first.wh
        most = POWER_W * (r.after - first.before + MAX_LAG_S) / 3600 + 1
        least = POWER_W * (r.before - first.after - MAX_LAG_S) / 3600 - 1
        assert registered_wh <= most, (r, first)
        if r.before - first.after >= least_meaningful:
            assert least > 0
            assert least <= registered_wh, (r, first)
            checked += 1
    assert checked >= len(readings) // 2, (checked, readings)
