"""L1/L4/L7 completeness, authenticity and automatic storing of the load profile: each stored
entry carries time stamp, status and the four registers in Wh/varh; what DLMS reads is
exactly what is stored; entries have unique consecutive sequence numbers; the running meter
stores an entry at every 15-minute boundary without any operator action."""
from __future__ import annotations

import datetime as dt

import pytest
from gurux_dlms.enums import ObjectType

from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from welmec_support import store

PROFILE = "1.0.99.1.0.255"


@pytest.fixture
def gurux(meter):
    from interop.gurux_peer import GuruxClient

    client = GuruxClient(meter.wrapper_port)
    client.associate()
    yield client
    client.close()


@pytest.mark.welmec("L1")
def test_the_stored_profile_is_what_dlms_reads_with_units(gurux, meter):
    """gurux-dlms reads load profile 1 with capture objects clock, status, +A, -A, +R, -R (Wh/varh, scaler 0), and every row equals the stored entry."""
    profile = gurux.objects().findByLN(ObjectType.PROFILE_GENERIC, PROFILE)
    gurux.read(profile, 3)
    assert [str(c[0].logicalName) for c in profile.captureObjects] == [
        "0.0.1.0.0.255", "0.0.96.10.1.255", "1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.3.8.0.255", "1.0.4.8.0.255"]
    for obis, unit in (("1.0.1.8.0.255", 30), ("1.0.3.8.0.255", 32)):  # Wh, varh
        register = gurux.objects().findByLN(ObjectType.REGISTER, obis)
        gurux.read(register, 3)
        assert int(register.unit) == unit and register.scaler == 1.0
    gurux.rows_by_entry(profile, 1, 50)
    read = [(int(r[0].value.timestamp()), *[int(v) for v in r[1:]]) for r in profile.buffer]
    assert read == meter.profile_rows()[:50]


@pytest.mark.welmec("L4")
def test_entries_have_unique_consecutive_sequence_numbers_and_increasing_times(meter):
    """Stored entries carry unique consecutive sequence numbers and strictly increasing time stamps at 15-minute boundaries."""
    with store(meter.data_dir) as db:
        rows = db.execute("SELECT seq, time_utc FROM chain_entry WHERE tbl = 'lp1' ORDER BY seq").fetchall()
    seqs = [s for s, _ in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    times = [t for _, t in rows]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(t % 900 == 0 for t in times)


@pytest.mark.welmec("L7")
def test_the_running_meter_stores_an_entry_at_every_period_end(tmp_path):
    """Driving the meter's clock over four 15-minute boundaries stores exactly one entry per boundary holding the registers at that instant."""
    now = [1_773_144_000.0 + 100]
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: now[0]))
    try:
        for _ in range(4 * 15):
            now[0] += 60
            meter.tick()
        rows = meter.legal.execute(legal.ReadLoadProfile())
        assert [r.capture_time for r in rows] == [1_773_144_000 + 900 * k for k in range(1, 5)]
        assert rows[-1].a_plus + rows[-1].a_minus > 0
        # the last entry is the register state at its boundary: measuring after it changes only the registers
        now[0] += 60
        meter.tick()
        assert meter.legal.execute(legal.ReadLoadProfile())[-1] == rows[-1]
    finally:
        meter.close()
