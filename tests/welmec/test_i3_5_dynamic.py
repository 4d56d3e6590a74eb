"""I3-5 dynamic behaviour: a flood of DLMS requests on the communication side of a real meter
process does not disturb the legal process's real-time measurement: the registered energy
equals P*t and the metering lag stays small while the flood runs."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from meterproc import free_port
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from welmec_support import ENERGY

POWER_W = 23_000.0  # 230 V x 100 A, one phase
CLIENTS = 12
FLOOD_SECONDS = 5.0
MAX_LAG_S = 0.5

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

        first, readings, requests = asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(10)
    assert requests > 200  # the flood was real
    for r in readings:
        registered_wh = r.wh - first.wh
        # either reading may lag the signal by up to MAX_LAG_S: a lagging first reading makes the
        # difference larger, a lagging later one smaller; +-1 for the whole-Wh register
        most = POWER_W * (r.after - first.before + MAX_LAG_S) / 3600 + 1
        least = POWER_W * (r.before - first.after - MAX_LAG_S) / 3600 - 1
        assert least <= registered_wh <= most, (r, first)
