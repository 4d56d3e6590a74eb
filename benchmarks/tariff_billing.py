"""Tariffs and billing: a year of simulated time on the fast path, and a 15-entry billing
profile read over a real socket.

1. **A year on the fast path.** A `Meter` (its legal part in its own process, as always) on a
   `MeterClock` whose source is a number this script moves, a fresh data directory without
   back-filled history, a constant load set as `smartmeter sim load --power 1500 --pf 0.9` sets
   it, and an activity calendar written the way a head-end writes one (attributes 6-9 of
   0-0:13.0.0.255 set locally through the object directory, then method 1
   activate_passive_calendar): one season, one week, day profiles 1 (every day) and 2 (the
   public holidays of the special days table) alike, each with the 12 switches a day profile
   can hold (companion §5.5): T1 at 00:00, T2 at 02:00, T1 at 04:00 ... T2 at 22:00, i.e. a
   tariff switch every 2 hours (a switch every hour would need 24 switches a day; on the day
   summer time begins 02:00 does not exist and that switch does not happen, docs/decisions.md,
   so T1 runs 00:00-04:00 there and a year has 4378 switches, not 4380). The meter
   then runs from 2026-01-01 00:00:30 local time for N days (default 365) in ticks of one hour
   of meter time; each tick registers the hour in steps that end at every 15-minute boundary
   (a load-profile capture each), every tariff switch and every schedule instant (the monthly
   billing at 00:00 on the 1st, 0-0:15.0.0.255). Printed: simulated seconds per real second
   (wall time of the ticks only), this process's CPU time and the legal process's CPU time
   (from /proc); the tariff switches made (counted at the energy register activation, and
   checked against every switching instant of the calendar, read from the tariff activation
   log 0-0:99.98.11.255 once a simulated day, outside the timed ticks); the billing entries
   (one per month start passed: 12 for a year, counters 1..12, at 00:00 local time on the
   1st); and the check that rate 1 + rate 2 = total per quantity in every entry and in the
   live registers (rate 0 holds nothing: this meter has had a rate since its first start).

2. **A 15-entry billing profile over TCP.** A meter process (`python -m smartmeter meter run`,
   profile "ksmw") whose billing profile 0-0:98.1.0.255 holds 15 entries: after its first start
   the meter is stopped, 15 billing periods are closed through the protective interface
   (`LegalInterface` on the same data directory: a rate, some energy, a demand period, then
   EndBillingPeriod at 00:00 local time on the 1st of each of the 15 months before this one),
   and the meter started again. The data readout client (HLS 7, suite 1, requests and
   responses authenticated and encrypted) reads attribute 3 (the 26 capture objects) and
   attribute 2 (the whole buffer, no selection) with our client
   (`smartmeter.hes.client.MeterClient.profile`, as `smartmeter client billing` does) and with
   gurux-dlms 1.0.203's `GXDLMSSecureClient` (tests/interop/gurux_secure_peer.py), one after the
   other in the same association type, best of N, the association excluded: client library
   against client library, the same meter process, the same two GET requests, the same
   plaintext answers (the script checks that both read the same 15 entries: clock, counter,
   energies, maxima and cumulative maxima). As in benchmarks/events.py, gurux protects with
   general-glo-ciphering (8 bytes more per APDU for the system title) and decrypts with its own
   pure-Python AES-GCM; the time it spends in `GXDLMSChippering.encryptAesGcm`/`decryptAesGcm`
   is measured in the same run and a second ratio leaves it out. gurux-dlms is only a black-box
   peer; the product never imports it.

    .venv/bin/python benchmarks/tariff_billing.py [--days N] [--runs N] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "interop"), str(ROOT / "benchmarks")]

from smartmeter.cosem import axdr  # noqa: E402
from smartmeter.cosem.classes.base import RequestContext  # noqa: E402
from smartmeter.cosem.data import Data  # noqa: E402
from smartmeter.cosem.obis import Obis  # noqa: E402
from smartmeter.hes.client import MeterClient  # noqa: E402
from smartmeter.hes.credentials import load_credentials  # noqa: E402
from smartmeter.legal import interface as legal  # noqa: E402
from smartmeter.meter.clock import MeterClock  # noqa: E402
from smartmeter.meter.runtime import Meter, MeterConfig  # noqa: E402

from events import Counters, CountingWrapperLink, gurux, ratios  # noqa: E402  (the harness of the event log read)

ZONE = ZoneInfo("Europe/Berlin")  # the meter's default time zone
CTX = RequestContext("management", 1)  # a local set through the directory, as the management client may
CALENDAR = Obis.parse("0-0:13.0.0.255").to_bytes()
TARIFF_SCRIPTS = Obis.parse("0-0:10.0.100.255").to_bytes()
TARIFF_LOG = Obis.parse("0-0:99.98.11.255").to_bytes()
BILLING_PROFILE = "0-0:98.1.0.255"
T1, T2 = b"T1", b"T2"  # the energy register activation's masks (ksmw model), scripts 1 and 2
SWITCH_HOURS = tuple(range(0, 24, 2))  # 12 switches a day: the capacity of a day profile
LOAD_W, LOAD_PF = 1500.0, 0.9
QUANTITIES = ("a_plus", "a_minus", "r_plus", "r_minus")
PROFILE_ENTRIES = 15


def _check(condition: bool, message: str) -> None:
    # Not assert: the checks must also hold under python -O.
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


def local(*args) -> float:
    return dt.datetime(*args, tzinfo=ZONE).timestamp()


# -- 1. a year on the fast path ---------------------------------------------------------------------

def tariff_at_hour(hour: int) -> int:
    """The written calendar: script (= rate) 1 from 00:00, 2 from 02:00, 1 from 04:00, ..."""
    return 1 if (hour // 2) % 2 == 0 else 2


def _switch(hour: int) -> Data:
    return Data.structure([Data.octet_string(bytes([hour, 0, 0, 0])), Data.octet_string(TARIFF_SCRIPTS),
                           Data.long_unsigned(tariff_at_hour(hour))])


def write_calendar(meter: Meter) -> None:
    """Passive calendar attribute by attribute, then activate_passive_calendar (method 1)."""
    calendar = meter.directory.by_ln[CALENDAR][1]
    every_year_jan_1 = bytes([0xFF, 0xFF, 1, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])
    switches = Data.array([_switch(h) for h in SWITCH_HOURS])
    calendar.set(6, Data.octet_string(b"T1T2-2h"), CTX)
    calendar.set(7, Data.array([Data.structure([Data.octet_string(b"S1"), Data.octet_string(every_year_jan_1),
                                                Data.octet_string(b"W1")])]), CTX)
    calendar.set(8, Data.array([Data.structure([Data.octet_string(b"W1"), *[Data.unsigned(1)] * 7])]), CTX)
    # day 2: the profile the special days table names (public holidays), the same switches
    calendar.set(9, Data.array([Data.structure([Data.unsigned(i), switches]) for i in (1, 2)]), CTX)
    calendar.invoke(1, Data.integer(0), CTX)
    _check(calendar.get(2, CTX) == Data.octet_string(b"T1T2-2h"), "the written calendar is not active")


def switching_instants(start: float, end: float, first: bytes) -> list[tuple[int, bytes]]:
    """(UTC second, mask) of every tariff change the written calendar makes in (start, end], the
    mask `first` in force at start. The rule of docs/decisions.md (DST): a local switch time the
    spring change skips does not happen (the tariff before it stays), one the autumn change
    repeats happens at its first occurrence; a switch to the tariff already in force is no change."""
    out, mask = [], first
    day = dt.datetime.fromtimestamp(start, ZONE).date() - dt.timedelta(days=1)
    while True:
        day += dt.timedelta(days=1)
        for hour in SWITCH_HOURS:
            wall = dt.datetime(day.year, day.month, day.day, hour)
            at = wall.replace(tzinfo=ZONE, fold=0)
            if at.astimezone(dt.timezone.utc).astimezone(ZONE).replace(tzinfo=None) != wall:
                continue  # skipped by the change to summer time
            t = int(at.timestamp())
            if t > end:
                return out
            new = T1 if tariff_at_hour(hour) == 1 else T2
            if t > start and new != mask:
                out.append((t, new))
                mask = new


def energy_by_rate(start: float, end: float, first: bytes, instants: list[tuple[int, bytes]]) -> dict[bytes, float]:
    """+A (Wh) per mask of the constant load from start to end, the mask `first` in force at
    start and then each of `instants` from its instant on."""
    out = {T1: 0.0, T2: 0.0}
    mask, t = first, start
    for at, new in [*instants, (end, None)]:
        if at > end:
            at = end
        out[mask] += LOAD_W * max(0.0, at - t) / 3600
        if at == end:
            return out
        mask, t = new, at
    return out


def month_starts(start: float, end: float) -> list[int]:
    """00:00 local time on the 1st of every month in (start, end]."""
    at = dt.datetime.fromtimestamp(start, ZONE)
    year, month, out = at.year, at.month, []
    while True:
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        t = int(local(year, month, 1))
        if t > end:
            return out
        out.append(t)


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of another process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rates_add_up(energy: tuple[int, ...]) -> bool:
    """A billing entry's energy columns: per quantity total, rate 1, rate 2."""
    return all(energy[i] == energy[i + 1] + energy[i + 2] for i in range(0, len(energy), 3))


def year_on_fast_path(days: int) -> dict:
    start = local(2026, 1, 1, 0, 0, 30)
    end = start + days * 86400
    with tempfile.TemporaryDirectory() as tmp:
        source = [start]
        meter = Meter(MeterConfig(data_dir=Path(tmp), backfill_days=0), clock=MeterClock(source=lambda: source[0]))
        try:
            _check(meter.control({"input": "load", "power": LOAD_W, "pf": LOAD_PF})["ok"], "sim load refused")
            write_calendar(meter)
            switches = [0]
            last_mask = [meter.tariff.active_mask().value]
            on_mask = meter.tariff.on_energy_mask

            def counting(mask: bytes, registers):  # the energy register activation's callback
                if mask != last_mask[0]:
                    switches[0] += 1
                    last_mask[0] = mask
                return on_mask(mask, registers)

            meter.tariff.on_energy_mask = counting
            commands: dict[str, int] = {}
            execute = meter.legal.execute

            def counted(command):  # what crosses the protective interface, by command
                commands[type(command).__name__] = commands.get(type(command).__name__, 0) + 1
                return execute(command)

            meter.legal.execute = counted
            tariff_log = meter.directory.by_ln[TARIFF_LOG][1]
            logged: dict[int, bytes] = {}
            legal_pid = meter.legal.pid
            ticks, wall, cpu = 0, 0.0, 0.0
            legal_cpu = _cpu_of(legal_pid)
            while source[0] < end:
                ticks += 1
                source[0] = min(end, source[0] + 3600)
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                meter.tick()
                wall += time.perf_counter() - wall_start
                cpu += time.process_time() - cpu_start
                if ticks % 24 == 0 or source[0] >= end:  # 12 switches a day, the log keeps 100
                    for clock, mask in axdr.decode_rows(tariff_log.get(2, CTX).encoded)[0]:
                        logged[int(axdr.decode_date_time(bytes(clock)).to_datetime().timestamp())] = bytes(mask)
            legal_cpu = _cpu_of(legal_pid) - legal_cpu
            meter.legal.execute = execute
            rows = list(meter.legal.execute(legal.ReadBillingProfile()))
            rates = meter.legal.execute(legal.ReadRateRegisters())
            totals = meter.legal.execute(legal.ReadEnergyRegisters())
        finally:
            meter.close()
    at_start = {t: mask for t, mask in logged.items() if t <= start}  # the power-up's, before the calendar's
    logged = {t: mask for t, mask in logged.items() if t > start}
    first = at_start[max(at_start)] if at_start else T1
    expected = switching_instants(start, end, first)
    _check(sorted(logged.items()) == expected,
           f"tariff switches logged {len(logged)}, calendar instants {len(expected)}; first differences: "
           f"{sorted(set(logged.items()) ^ set(expected))[:6]}")
    _check(switches[0] == len(expected), f"{switches[0]} switches made, the calendar has {len(expected)}")
    captures = month_starts(start, end)
    _check([(r.capture_time, r.counter, r.trigger) for r in rows]
           == [(t, i % 100, "scheduled") for i, t in enumerate(captures, 1)][-PROFILE_ENTRIES:],
           f"billing entries {[(r.capture_time, r.counter, r.trigger) for r in rows]}, month starts {captures}")
    _check(all(rates_add_up(r.energy) for r in rows), "a billing entry's rates do not add up to its total")
    # +A per rate as the calendar divides the constant load (each whole Wh goes to the rate in
    # force when it completes: within 1 Wh of the exact split)
    for capture, (rate1, rate2) in [*((r.capture_time, r.energy[1:3]) for r in rows),
                                    (end, (rates.value("a_plus", 1), rates.value("a_plus", 2)))]:
        split = energy_by_rate(start, capture, first, expected)
        _check(abs(rate1 - split[T1]) <= 1 and abs(rate2 - split[T2]) <= 1,
               f"+A at {capture}: rate 1 {rate1}, rate 2 {rate2}; the calendar's split {split}")
    live = {n: [rates.value(n, r) for r in (0, 1, 2)] for n in QUANTITIES}
    _check(all(sum(live[n]) == getattr(totals, n) and live[n][0] == 0 for n in QUANTITIES),
           f"live rates {live} against totals {totals}")
    simulated = end - start
    return {"days": days, "tick_seconds": 3600, "ticks": ticks, "simulated_seconds": simulated,
            "wall_seconds": wall, "simulated_per_real_second": simulated / wall, "cpu_seconds_this_process": cpu,
            "cpu_seconds_legal_process": legal_cpu,
            "calendar": "12 switches a day (every 2 hours; the one at 02:00 on the day summer time begins is skipped)",
            "tariff_switches": switches[0], "calendar_switching_instants": len(expected),
            "legal_commands": dict(sorted(commands.items(), key=lambda kv: -kv[1])),
            "logged_at_start": [[t, mask.decode()] for t, mask in sorted(at_start.items())],
            "billing_entries": [{"capture_time_local": dt.datetime.fromtimestamp(r.capture_time, ZONE).isoformat(),
                                 "counter": r.counter, "a_plus_total_rate1_rate2": list(r.energy[0:3])} for r in rows],
            "live_registers": {n: {"total": getattr(totals, n), "rate0": live[n][0], "rate1": live[n][1],
                                   "rate2": live[n][2]} for n in QUANTITIES}}


# -- 2. a 15-entry billing profile over a real socket --------------------------------------------------

def _close_periods(data_dir: Path) -> list[legal.BillingRow]:
    """15 billing periods closed through the protective interface while the meter is stopped:
    at 00:00 local on the 1st of each of the 15 months before this one, each with energy in one
    rate and a demand period of its own load before it."""
    this_month = dt.datetime.now(ZONE).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    starts = []
    year, month = this_month.year, this_month.month
    for _ in range(PROFILE_ENTRIES):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        starts.append(int(local(year, month, 1)))
    part = legal.LegalInterface(data_dir)
    try:
        rows = []
        for k, capture in enumerate(reversed(starts), 1):
            power, reactive = 800.0 + 100 * k, 150.0 + 10 * k
            part.execute(legal.SetActiveRates((1 if k % 2 else 2,) * len(QUANTITIES)))
            part.execute(legal.RegisterSimulatedPower(power, reactive, 86400.0))
            part.execute(legal.StartDemandPeriod(capture - 900))
            part.execute(legal.RegisterSimulatedPower(power, reactive, 900.0))
            part.execute(legal.EndMeasurementPeriod(capture))  # no load-profile entry: long past; demand closes
            rows.append(part.execute(legal.EndBillingPeriod(capture, "scheduled")))
    finally:
        part.close()
    return rows


def _filled_meter(data_dir: Path):
    from meterproc import start_meter

    meter = start_meter(data_dir)  # first start: provisioning, credentials, the stores
    meter.stop()
    rows = _close_periods(data_dir)
    return start_meter(data_dir), rows


def _comparable(clock: int, counter: int, values: list[int]) -> tuple:
    """What both clients must agree on: the capture time (UTC s), the counter, the 12 energies,
    the 4 maxima and the 4 cumulative maxima (the maxima's times are left out: gurux turns a
    not-specified date-time into an object of its own)."""
    return (clock, counter, *values)


def _our_values(row: tuple) -> tuple:
    clock = int(axdr.decode_date_time(bytes(row[0])).to_datetime().timestamp())
    return _comparable(clock, int(row[1]), [int(v) for v in (*row[2:14], *row[14:22:2], *row[22:26])])


def ours(port: int, credentials: Path, counters: Counters, runs: int) -> dict:
    creds = load_credentials(credentials)
    security = dataclasses.replace(creds.security, invocation_counter=counters)

    async def go() -> dict:
        link = CountingWrapperLink("127.0.0.1", port, creds.client_sap, creds.server_sap, 30)
        best = None
        async with MeterClient(link, security=security) as client:
            for _ in range(runs):
                link.sent = link.received = 0
                start = time.perf_counter()
                columns, rows = await client.profile(BILLING_PROFILE, rows=True)
                seconds = time.perf_counter() - start
                if best is None or seconds < best["seconds"]:
                    best = {"seconds": seconds, "columns": len(columns.value), "rows": [_our_values(r) for r in rows],
                            "sent": link.sent, "received": link.received}
        return best

    return asyncio.run(go())


def _gurux_values(row: list) -> tuple:
    clock = row[0]
    utc = int(clock.value.timestamp()) if hasattr(clock, "value") else \
        int(axdr.decode_date_time(bytes(clock)).to_datetime().timestamp())
    return _comparable(utc, int(row[1]), [int(v) for v in (*row[2:14], *row[14:22:2], *row[22:26])])


def billing_readout(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        meter, made = _filled_meter(Path(tmp) / "meter")
        try:
            credentials = meter.data_dir / "credentials" / "data_readout.json"
            counters = Counters()
            mine = ours(meter.wrapper_port, credentials, counters, runs)
            theirs = gurux(meter.wrapper_port, credentials, counters, runs, BILLING_PROFILE)
        finally:
            meter.stop()
    expected = [_comparable(r.capture_time, r.counter, [*r.energy, *r.maximum, *r.cumulative]) for r in made]
    _check(mine.pop("rows") == expected, "our client read other entries than the 15 closed")
    _check([_gurux_values(r) for r in theirs.pop("rows")] == expected, "gurux read other entries than the 15 closed")
    _check(mine["columns"] == theirs["columns"] == 26, f"capture objects: ours {mine['columns']}, "
                                                       f"gurux {theirs['columns']}")
    return {"entries": PROFILE_ENTRIES, "columns": 26, "runs": runs, **ratios(mine, theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365, help="days of meter time on the fast path")
    parser.add_argument("--runs", type=int, default=5, help="billing profile readouts per client (best is kept)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args()

    import gurux_dlms  # noqa: F401  (fail early if the peer is missing)

    year = year_on_fast_path(args.days)
    readout = billing_readout(args.runs)
    if args.json:
        print(json.dumps({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                          "fast_path": year, "billing_readout": readout}, indent=2))
        return
    y = year
    print(f"Fast path: {y['days']} days of meter time from 2026-01-01 00:00:30 local time, ticks of 1 h, constant "
          f"sim load {LOAD_W:g} W at PF {LOAD_PF}, calendar with {y['calendar']}:")
    print(f"  {y['simulated_per_real_second']:10.0f} simulated seconds per real second "
          f"({y['wall_seconds']:.1f} s wall for {y['ticks']} ticks; CPU: this process "
          f"{y['cpu_seconds_this_process']:.1f} s, legal process {y['cpu_seconds_legal_process']:.1f} s)")
    total = sum(y["legal_commands"].values())
    print(f"  {total} commands to the legal process ({total / y['days']:.0f} a simulated day; most: "
          + ", ".join(f"{name} {count}" for name, count in list(y["legal_commands"].items())[:5]) + ")")
    print(f"  tariff switches: {y['tariff_switches']} (= every switching instant of the calendar, "
          f"{y['calendar_switching_instants']}, each in the tariff activation log)")
    entries = y["billing_entries"]
    span = (f", counters {entries[0]['counter']}..{entries[-1]['counter']}, {entries[0]['capture_time_local']} .. "
            f"{entries[-1]['capture_time_local']}") if entries else ""
    print(f"  billing entries: {len(entries)}{span}; rate 1 + rate 2 = total in every entry and in the live "
          "registers (rate 0 = 0)")
    a = y["live_registers"]["a_plus"]
    print(f"  +A at the end: total {a['total']} Wh = rate 1 {a['rate1']} + rate 2 {a['rate2']} (within 1 Wh of the "
          "calendar's split of the load, also in every entry)")
    r = readout
    print(f"Billing profile {BILLING_PROFILE}, {r['entries']} entries x {r['columns']} columns, attributes 3 and 2 "
          f"over TCP (wrapper), data readout client (HLS 7, suite 1, auth+enc), best of {r['runs']}; client library "
          "against client library, same meter, same requests, same plaintext answers (gurux's general-glo-ciphering "
          "carries the system title):")
    for name, x in (("ours ", r["ours"]), ("gurux", r["gurux"])):
        print(f"  {name}: {x['seconds'] * 1e3:7.1f} ms   ({x['sent']} bytes sent, {x['received']} received)")
    print(f"  gurux / ours = {r['ratio']:.1f}x; without gurux's pure-Python AES-GCM "
          f"({r['gurux']['aes_gcm_seconds'] * 1e3:.1f} ms): {r['gurux_without_aes_gcm_seconds'] * 1e3:.1f} ms, "
          f"gurux / ours = {r['ratio_without_gurux_aes_gcm']:.1f}x")


if __name__ == "__main__":
    main()
