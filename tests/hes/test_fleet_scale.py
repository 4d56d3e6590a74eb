"""10,000 simulated meters read with HLS 5 over loopback by three worker processes, one of
them killed with SIGKILL at random instants and replaced: every meter ends with exactly one
outcome, no reading is stored twice, every value is the fleet's formula at the meter's time,
no invocation counter is reused or refused by the meters, and no cell ever has more sessions
than its limit."""
from __future__ import annotations

import datetime as dt
import math
import random
import signal
import time
from collections import Counter, defaultdict

import pytest

from fleet_support import energy, fleet_power

METERS = 10_000
CELLS = 4
CELL_LIMIT = 16  # sessions at once per cell: 64 in all for 3 workers × 24
WORKER = ("--concurrency", "24", "--ack-wait", "3", "--session-timeout", "5", "--request-timeout", "3",
          "--connect-timeout", "2", "--association-timeout", "3")
PROFILE = "1-0:99.1.0.255"


@pytest.mark.timeout(600)
def test_three_workers_read_ten_thousand_meters_while_one_is_killed_again_and_again(head_end):
    h = head_end
    # a start an hour back: every meter has load profile rows to read (the default start is now)
    began = dt.datetime.fromtimestamp(time.time() // 900 * 900 - 3600, dt.timezone.utc)
    manifest = h.start_fleet(METERS, "--cells", str(CELLS), "--start", began.isoformat())
    h.import_fleet("--max-sessions", str(CELL_LIMIT), "--connects-per-s", "5000")
    for _ in range(3):
        h.start_worker(*WORKER)
    started = time.monotonic()
    campaign = h.start_campaign("--name", "scale")
    rng = random.Random(20261205)
    kills = []
    next_kill = time.monotonic() + rng.uniform(2, 5)

    def kill_at_random(status):
        nonlocal next_kill
        if time.monotonic() < next_kill or len(kills) >= 4 or not status.get("done"):
            return
        victim = rng.choice([w for w in h.workers if w.poll() is None])
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        kills.append(dict(status))
        h.start_worker(*WORKER)
        next_kill = time.monotonic() + rng.uniform(3, 8)

    status = h.wait_campaign(campaign, timeout=400, during=kill_at_random)
    took = time.monotonic() - started
    report = h.stop_fleet()

    # the kills fell while the campaign ran
    assert len(kills) >= 2, kills
    assert all(0 < k.get("done", 0) < METERS for k in kills)
    # exactly one outcome per meter, all of them done
    assert status == {"done": METERS}, status
    claims = h.query("SELECT claims, attempts FROM job WHERE campaign_id = $1", campaign)
    # a job whose session died with its worker was begun again; each ended once
    assert all(j["attempts"] == 1 for j in claims) and sum(j["claims"] for j in claims) >= METERS

    # every reading once, each what the fleet's formula gives at the meter's time
    start = manifest["start_epoch"]
    by_serial = {m["serial"]: m for m in manifest["meters"]}
    rows = h.query("""SELECT m.serial, s.source, s.obis, extract(epoch FROM r.time)::float8 AS t, r.raw,
                             extract(epoch FROM r.received)::float8 AS received
                      FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id""")
    per_meter = defaultdict(list)
    for r in rows:
        per_meter[r["serial"]].append(r)
    assert len(per_meter) == METERS
    for serial, readings in per_meter.items():
        i = by_serial[serial]["index"]
        p_import, p_export = fleet_power(i)
        registers = [r for r in readings if r["source"] == ""]
        assert Counter(r["obis"] for r in registers) == {"1-0:1.8.0.255": 1, "1-0:2.8.0.255": 1}, serial
        read_at = registers[0]["t"]  # the meter's clock, read at the start of the session
        for r in registers:
            power = p_import if r["obis"] == "1-0:1.8.0.255" else p_export
            # the register is read after the clock and before the session's results were stored
            # (`received`, the head-end's clock: the meters' time then follows from the manifest)
            stored_at = start + manifest["speed"] * (r["received"] - manifest["real_start"])
            assert energy(power, start, read_at) <= r["raw"] <= energy(power, start, stored_at + 1.0), (serial, r)
        boundaries = range(math.ceil(start / 900) * 900, int(read_at) + 1, 900)
        profile = sorted((r["t"], r["obis"], r["raw"]) for r in readings if r["source"] == PROFILE)
        expected = sorted([(float(b), "1-0:1.8.0.255", energy(p_import, start, b)) for b in boundaries]
                          + [(float(b), "1-0:2.8.0.255", energy(p_export, start, b)) for b in boundaries])
        assert profile == expected, serial

    # the meters' own account: no counter used twice, none refused, one association per meter
    # at a time, no cell above its limit
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0, report["totals"]
    assert all(m["reused_count"] == 0 and m["refused_count"] == 0 for m in report["meters"])
    assert max(m["max_concurrent"] for m in report["meters"]) == 1
    assert max(c["max_concurrent"] for c in report["cells"].values()) <= CELL_LIMIT, report["cells"]
    print(f"{METERS} meters in {took:.1f} s with {len(kills)} workers killed")
