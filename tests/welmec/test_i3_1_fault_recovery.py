"""I3-1 fault recovery: a stalled metering loop is restarted by the watchdog, the restart is
kept as evidence in the fatal error register (bit 0x10), and the restarted loop catches up so
that no energy is lost."""
from __future__ import annotations

import json
import time

import pytest

from smartmeter.legal import interface as legal

POWER_W = 23_000.0  # one phase, 230 V x 100 A


@pytest.mark.welmec("I3-1")
def test_a_stalled_metering_loop_is_restarted_and_loses_no_energy(tmp_path):
    """An injected hang of the metering loop is restarted by the watchdog, sets fatal bit 0x10 (kept across restarts), logs a dated event 202 with the stalled time, and the energy still equals P*t."""
    part = legal.LegalInterface(tmp_path, fault_injection=True, realtime=True)
    try:
        part.execute(legal.SetSimulatedLoad(POWER_W, 0.0))
        part.start()
        start = time.monotonic()
        first = part.execute(legal.ReadEnergyRegisters()).a_plus
        assert part.execute(legal.InjectMetrologyStall(8.0)) is True
        deadline = time.monotonic() + 20
        while not part.execute(legal.ReadFatalErrors()) & legal.FATAL_WATCHDOG and time.monotonic() < deadline:
            time.sleep(0.1)
        assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_WATCHDOG
        time.sleep(0.5)  # the fresh loop catches up the stalled time
        before_read = time.monotonic()
        energy = part.execute(legal.ReadEnergyRegisters()).a_plus - first
        after_read = time.monotonic()
        # what a loop that never stalled would have registered, within one 100 ms frame and 0.3 s
        # of lag at either reading (a lagging first reading makes the difference larger)
        assert POWER_W * (before_read - start - 0.4) / 3600 - 1 <= energy <= POWER_W * (after_read - start + 0.4) / 3600 + 1
        restarts = [r for r in part.execute(legal.ReadMetrologicalLog())
                    if r.event_id == legal.EVENT_METROLOGY_RESTARTED]
        assert len(restarts) == 1
        assert abs(restarts[0].time_utc - time.time()) < 60
        assert json.loads(restarts[0].fields_json)["stalled_s_ms"] >= 1000
    finally:
        part.close()
    again = legal.LegalInterface(tmp_path)
    try:  # the evidence survives a restart
        assert again.execute(legal.ReadFatalErrors()) & legal.FATAL_WATCHDOG
    finally:
        again.close()


@pytest.mark.welmec("P4", "U4", "S3")
def test_the_stall_hook_is_refused_without_fault_injection(tmp_path):
    """The fault-injection hook is refused (and counted) unless the part was started with fault injection."""
    part = legal.LegalInterface(tmp_path, realtime=True)
    try:
        part.start()
        try:
            part.execute(legal.InjectMetrologyStall(1.0))
        except legal.CommandRefused:
            pass
        else:
            raise AssertionError("InjectMetrologyStall accepted without fault injection")
        assert part.execute(legal.ReadFatalErrors()) == 0
    finally:
        part.close()
