"""Event logs read into the fleet store: over a fast-clock day and four incremental campaigns,
each meter's standard event log is stored exactly as the fleet's formula (docs/fleet.md) says,
each entry once, whether the meter selects by range, by entry only or not at all; `hes events`
lists them with their IDIS names."""
from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections import defaultdict

import pytest

METERS = 12
SPEED = 1800.0  # a meter day in 48 s
DAY = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
LOG = "0-0:99.98.0.255"
NAMES = {1: "Power down", 2: "Power up", 4: "Clock adjusted (old date/time)", 5: "Clock adjusted (new date/time)",
         10: "Error register cleared"}


def formula_events(i: int, start: float, t: float) -> list[tuple[int, int]]:
    """(time, code) of meter i's standard event log entries with start ≤ time ≤ t, as
    docs/fleet.md defines them (fewer than the 100 kept within the day of this test)."""
    out = []
    for k in range(int(start // 21600), int(t // 21600) + 1):
        e = 21600 * k + (7919 * i + 3037 * k) % 21000
        kind = (i + k) % 3
        entries = ([(e, 1), (e + 120 + 60 * (i % 7), 2)] if kind == 0
                   else [(e, 4), (e, 5)] if kind == 1 else [(e, 10)])
        out.extend(x for x in entries if start <= x[0] <= t)
    return out


def meter_time(manifest: dict) -> float:
    return manifest["start_epoch"] + manifest["speed"] * (time.time() - manifest["real_start"])


def stored_events(h) -> dict[str, list[tuple[int, int]]]:
    rows = h.query("SELECT m.serial, extract(epoch FROM e.time)::bigint AS t, e.code FROM event e "
                   "JOIN meter m ON m.id = e.meter_id WHERE e.log = $1 ORDER BY e.time, e.code", LOG)
    found = defaultdict(list)
    for r in rows:
        found[r["serial"]].append((r["t"], r["code"]))
    return found


@pytest.mark.timeout(300)
def test_event_logs_are_read_incrementally_and_stored_once(head_end):
    h = head_end
    manifest = h.start_fleet(METERS, "--speed", str(SPEED), "--start", DAY.isoformat(),
                             "--no-range", "0.25", "--no-selective", "0.25")
    h.import_fleet()
    h.start_worker("--concurrency", "4")
    start = manifest["start_epoch"]
    meters = {m["serial"]: m for m in manifest["meters"]}
    assert sum(bool(m["capabilities"]) for m in meters.values()) == 6

    # four campaigns over the day and a little after: each stores what the meters logged since
    # the one before; whatever a meter logged before the campaign began is stored by its end,
    # nothing after the campaign ended is
    for hours in (5, 11, 19, 25):
        while meter_time(manifest) < start + hours * 3600:
            time.sleep(0.1)
        began = meter_time(manifest)
        campaign = h.start_campaign("--name", f"hour {hours}")
        assert h.wait_campaign(campaign, timeout=90) == {"done": METERS}, h.log("worker")
        ended = meter_time(manifest)
        found = stored_events(h)
        for serial, m in meters.items():
            at_least = formula_events(m["index"], start, began)
            at_most = formula_events(m["index"], start, ended)
            got = found.get(serial, [])
            assert got[:len(at_least)] == at_least and got == at_most[:len(got)], (hours, serial, m["capabilities"])

    # the day, exactly the formula's entries, each once, for every way of selecting
    found = stored_events(h)
    day_end = start + 86400
    for serial, m in meters.items():
        expected = formula_events(m["index"], start, day_end - 1)
        assert [e for e in found[serial] if e[0] < day_end] == expected, serial
        assert 6 <= len(expected) <= 8  # four incidents a day, each one or two entries
    assert sum(len(v) for v in found.values()) == h.query("SELECT count(*) AS n FROM event")[0]["n"]
    # what each meter served is remembered: the event log is read the way its load profile is
    learnt = {r["serial"]: r["how"] for r in h.query(
        "SELECT serial, capabilities->>'selection:0-0:99.98.0.255' AS how FROM meter")}
    for serial, m in meters.items():
        assert learnt[serial] == {"no-range": "entry", "no-selective": "whole"}.get(
            next(iter(m["capabilities"]), ""), None), (serial, m["capabilities"])
    # the log's mark is its newest stored entry
    marks = {r["serial"]: r["t"] for r in h.query(
        "SELECT m.serial, extract(epoch FROM p.last_time)::bigint AS t FROM profile_mark p "
        "JOIN meter m ON m.id = p.meter_id WHERE p.profile = $1", LOG)}
    assert marks == {serial: found[serial][-1][0] for serial in meters}

    # `hes events` as a user asks: one meter, one day, CSV with the IDIS names
    serial = manifest["meters"][3]["serial"]
    out = h.ok("hes", "events", serial, "--from", DAY.isoformat(), "--to", (DAY + dt.timedelta(days=1)).isoformat(),
               "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    expected = formula_events(3, start, day_end - 1)
    assert [(r["meter"], r["log"], r["log_name"], dt.datetime.fromisoformat(r["time"]).timestamp(), int(r["code"]),
             r["event"]) for r in rows] == [(serial, LOG, "Standard event log", float(t), code, NAMES[code])
                                            for t, code in expected]
    unknown = h.run("hes", "events", "1SIM0199999", "--format", "csv")
    assert unknown.returncode != 0 and "no meter 1SIM0199999" in unknown.stdout + unknown.stderr

    report = h.stop_fleet()
    assert report["totals"]["reused"] == 0 and report["totals"]["refused"] == 0
