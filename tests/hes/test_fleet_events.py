"""Event logs read into the fleet store: over a fast-clock day and four incremental campaigns,
each meter's standard event log is stored exactly as the fleet's formula (docs/fleet.md) says,
each entry once, whether the meter selects by range, by entry only or not at all; `hes events`
lists them with their IDIS names."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
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


def test_events_are_stored_once_with_their_session_and_never_with_a_lost_lease(pg_dsn):
    from smartmeter.hes.store.pg import Event, FleetStore, KeyVault, LeaseLost, MeterRecord, SessionResult

    at = [DAY + dt.timedelta(hours=h) for h in range(4)]
    first = [Event(LOG, at[0], 1), Event(LOG, at[1], 4), Event(LOG, at[1], 5)]
    second = [Event(LOG, at[1], 4), Event(LOG, at[1], 5), Event(LOG, at[2], 10)]  # read again from the mark

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(bytes(range(32))), migrate=True)
        await store.add_meters([MeterRecord("EVT00001", b"EVT\0\0\0\0\1", "127.0.0.1", 1, keys={"ek": bytes(16)})])
        (meter_id, _, _), = await store.meter_ids()
        # a session whose lease runs out and is taken over stores none of its events
        stale = await store.begin_session(meter_id, "a", 0.05, 4)
        await asyncio.sleep(0.2)
        taker = await store.begin_session(meter_id, "b", 30, 4)
        with pytest.raises(LeaseLost):
            await store.finish_session(stale, SessionResult([], {}, {LOG: at[3]}, None, None,
                                                            events=[Event(LOG, at[3], 2)]), None)
        await store.finish_session(taker, SessionResult([], {}, {LOG: at[1]}, None, None, events=first), None)
        received = await store.pool.fetch("SELECT time, code, received FROM event ORDER BY time, code")
        g = await store.begin_session(meter_id, "b", 30, 4)
        await store.finish_session(g, SessionResult([], {}, {LOG: at[2]}, None, None, events=second), None)
        rows = await store.pool.fetch("SELECT log, time, code, received FROM event ORDER BY time, code")
        g = await store.begin_session(meter_id, "b", 30, 4)
        await store.release(g)
        await store.close()
        return received, rows, g.marks

    received, rows, marks = asyncio.run(scenario())
    assert [(r["time"], r["code"]) for r in rows] == [(at[0], 1), (at[1], 4), (at[1], 5), (at[2], 10)]
    # an entry read again keeps the time it was first stored
    assert [r["received"] for r in rows[:3]] == [r["received"] for r in received]
    assert marks[LOG] == at[2]


def test_a_log_the_meter_lacks_is_remembered_and_not_asked_again(head_end):
    from smartmeter.hes.fleet.session import ReadPlan, Timeouts, read_session
    from smartmeter.hes.fleet.worker import DEFAULT_CLIENT_SYSTEM_TITLE
    from smartmeter.hes.store.pg import FleetStore, KeyVault

    h = head_end
    manifest = h.start_fleet(1, "--start", DAY.isoformat(), "--speed", "3600")
    h.import_fleet()
    security_log = "0-0:99.98.9.255"  # the full meter's security event log: a fleet meter has none
    plan = ReadPlan(profiles=(), events=(LOG, security_log))

    async def scenario():
        store = await FleetStore.open(h.dsn, KeyVault.from_file(h.tmp / "kek.hex"))
        (meter_id, _, _), = await store.meter_ids()
        results = []
        for _ in range(2):
            grant = await store.begin_session(meter_id, "t", 30, 16)
            refill = lambda n: store.reserve_counters(meter_id, grant.key_generation, n)  # noqa: E731
            result = await read_session(grant, plan, Timeouts(), DEFAULT_CLIENT_SYSTEM_TITLE, refill)
            await store.finish_session(grant, result, None, "t")
            results.append(result)
        await store.close()
        return results

    while meter_time(manifest) < manifest["start_epoch"] + 86400:  # a day of events first
        time.sleep(0.1)
    first, second = asyncio.run(scenario())
    # remembered with the head-end's time, so that it is asked again after a day (a firmware
    # change may add it)
    assert set(first.capabilities) == {f"events:{security_log}", f"events:{security_log}:since"}
    assert first.capabilities[f"events:{security_log}"] == "absent"
    assert second.capabilities is None  # not asked, nothing new learnt
    assert {e.log for e in first.events} == {LOG} and len(first.events) >= 6
    stored = h.query("SELECT extract(epoch FROM time)::bigint AS t, code FROM event ORDER BY time, code")
    expected = formula_events(0, manifest["start_epoch"], meter_time(manifest))
    got = [(r["t"], r["code"]) for r in stored]
    assert got == expected[:len(got)] and len(got) >= len(formula_events(0, manifest["start_epoch"],
                                                                         manifest["start_epoch"] + 86400))
    # the same as JSON lines, and as text lines, for all meters (no serial given)
    lines = [json.loads(line) for line in h.ok("hes", "events", "--format", "json").splitlines()]
    assert [(dt.datetime.fromisoformat(e["time"]).timestamp(), e["code"], e["event"]) for e in lines] == \
        [(float(t), code, NAMES[code]) for t, code in got]
    text = h.ok("hes", "events", "--log", LOG).splitlines()
    assert len(text) == len(got) and all(NAMES[code] in line for line, (_, code) in zip(text, got))


# -- one fleet meter in the test's own event loop, its standard event log as the test logs it --

class ListedEventLog:
    """An event log source: the entries the test logs, (meter time, code), in the order logged
    (after a clock set back that is not time order)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.entries: list[tuple[int, int]] = []

    def rows(self, from_time, to_time) -> list[tuple]:
        return [(self.clock.cosem(t), code) for t, code in self.entries
                if (from_time is None or t >= from_time) and (to_time is None or t <= to_time)]

    def entries_in_use(self) -> int:
        return len(self.entries)

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)


def controlled_log_class(selection: str = "range"):
    """The standard event log's interface class, serving the selections `selection` says
    ("range": both, "entry": entry only, "whole": none), counting the GETs it is asked and
    refusing them while `refusal` is set."""
    from smartmeter.cosem.classes.base import CosemAccessError
    from smartmeter.cosem.classes.ic7_profile_generic import ENTRY_DESCRIPTOR, RANGE_DESCRIPTOR, ProfileGeneric

    class ControlledEventLog(ProfileGeneric):
        selective_access = {"range": {2: (RANGE_DESCRIPTOR, ENTRY_DESCRIPTOR)}, "entry": {2: (ENTRY_DESCRIPTOR,)},
                            "whole": {}}[selection]
        refusal = None
        asked = 0

        def get(self, index, ctx, selection=None):
            self.asked += 1
            if self.refusal is not None:
                raise CosemAccessError(self.refusal, "as the test says")
            return super().get(index, ctx, selection)

    return ControlledEventLog


@dataclasses.dataclass
class OneMeter:
    process: object
    log: ListedEventLog
    log_object: object
    store: object
    meter_id: int

    @property
    def clock(self):
        return self.process.clock

    def now(self) -> int:
        return int(self.clock.now())

    async def session(self, plan=None):
        """One session as a worker runs it: claim, read, store."""
        from smartmeter.hes.fleet.session import ReadPlan, Timeouts, read_session
        from smartmeter.hes.fleet.worker import DEFAULT_CLIENT_SYSTEM_TITLE

        grant = await self.store.begin_session(self.meter_id, "t", 30, 16)
        refill = lambda n: self.store.reserve_counters(self.meter_id, grant.key_generation, n)  # noqa: E731
        try:
            result = await read_session(grant, plan or ReadPlan(profiles=()), Timeouts(),
                                        DEFAULT_CLIENT_SYSTEM_TITLE, refill)
        except BaseException:
            await self.store.release(grant)
            raise
        await self.store.finish_session(grant, result, None, "t")
        return result

    async def stored_events(self) -> list[tuple[int, int]]:
        rows = await self.store.pool.fetch("SELECT extract(epoch FROM time)::bigint AS t, code FROM event "
                                           "WHERE log = $1 ORDER BY time, code", LOG)
        return [(r["t"], r["code"]) for r in rows]

    async def capabilities(self) -> dict:
        return json.loads(await self.store.pool.fetchval("SELECT capabilities FROM meter WHERE id = $1",
                                                         self.meter_id))


@contextlib.asynccontextmanager
async def one_meter(pg_dsn: str, tmp_path, selection: str = "range", columns=None):
    """Fleet meter 0 served here (meter time = real time), its standard event log replaced by a
    ListedEventLog (with `columns`, other capture objects), and a fleet store that knows it."""
    import services
    from smartmeter.cli.hes_fleet import read_manifest
    from smartmeter.cosem.obis import Obis
    from smartmeter.hes.store.pg import FleetStore, KeyVault
    from smartmeter.meter.fleet import FleetScenario
    from smartmeter.meter.fleet_serve import FleetLimits, FleetProcess

    now = time.time()
    scenario = FleetScenario(meters=1, start=float(int(now)), speed=1.0, real_start=now,
                             base_port=services.free_port_block(1))
    process = FleetProcess(scenario, [0], FleetLimits())
    directory = process.server(0).directory
    ln = Obis.parse(LOG).to_bytes()
    definition, _ = directory.by_ln[ln]
    log = directory.bindings["events.standard"] = ListedEventLog(process.clock)
    config = dict(definition.config, **({"capture_objects": columns} if columns else {}))
    log_object = controlled_log_class(selection)(definition.obis, definition.name, config, directory.bindings)
    directory.by_ln[ln] = (definition, log_object)
    await process.listen()
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(scenario.manifest()))
    store = await FleetStore.open(pg_dsn, KeyVault(bytes(range(32))), migrate=True)
    try:
        await store.add_meters(read_manifest(manifest))
        (meter_id, _, _), = await store.meter_ids()
        yield OneMeter(process, log, log_object, store, meter_id)
    finally:
        await store.close()
        await process.close()


HOUR = 3600


@pytest.mark.parametrize("selection", ["range", "entry", "whole"])
@pytest.mark.parametrize("clock", ["set back 2 h", "ran 3 days ahead, corrected"])
def test_entries_logged_after_a_clock_set_back_are_stored(pg_dsn, tmp_path, selection, clock):
    """An event log is in the order the meter logged: after its clock went back, new entries
    carry times before the newest one stored. Every entry is stored, once."""
    async def scenario():
        async with one_meter(pg_dsn, tmp_path, selection) as m:
            if clock.startswith("ran"):  # the meter's clock runs ahead: what it logs carries its time
                m.clock.offset = 3 * 86400
            t = m.now()
            logged = [(t - 3 * HOUR, 1), (t - 3 * HOUR + 300, 2), (t - HOUR, 10)]
            m.log.entries.extend(logged)
            await m.session()
            first = await m.stored_events()
            # the clock is set back (2 h, or to the true time): the adjustment's two entries,
            # old time and new time, then what the meter logs in the 10 minutes after
            back = 2 * HOUR if clock.startswith("set") else 3 * 86400
            t = m.now()
            later = [(t, 4), (t - back, 5), (t - back + 300, 1), (t - back + 420, 2)]
            m.log.entries.extend(later)
            m.clock.offset -= back - 600
            logged += later
            second_result = await m.session()
            second = await m.stored_events()
            # and on: one more entry, and a session that finds nothing new
            m.log.entries.append((m.now() - 60, 10))
            logged.append(m.log.entries[-1])
            await m.session()
            await m.session()
            return first, second_result, second, await m.stored_events(), logged

    first, second_result, second, last, logged = asyncio.run(scenario())
    assert first == sorted(logged[:3])
    assert second == sorted(logged[:7]), (second, logged)
    assert {(int(e.time.timestamp()), e.code) for e in second_result.events} >= set(logged[3:7])
    assert last == sorted(logged)  # each once (the store's key drops what a window read again)


def test_an_event_log_the_client_may_not_read_costs_no_readings(pg_dsn, tmp_path):
    from smartmeter.cosem.results import DataAccessResult
    from smartmeter.hes.fleet.session import ReadPlan

    async def scenario():
        async with one_meter(pg_dsn, tmp_path) as m:
            t = m.now()
            m.log.entries.extend([(t - 2 * HOUR, 1), (t - 2 * HOUR + 120, 2)])
            m.log_object.refusal = DataAccessResult.READ_WRITE_DENIED  # a client without event-log access
            results = [await m.session()]
            asked = m.log_object.asked
            results.append(await m.session())  # within the day: not asked
            asked_again = m.log_object.asked - asked
            learnt = await m.capabilities()
            readings = await m.store.pool.fetchval("SELECT count(*) FROM reading")
            m.log_object.refusal = None  # access granted; a day later it is asked again
            results.append(await m.session(ReadPlan(profiles=(), event_log_retry=dt.timedelta(0))))
            return results, asked, asked_again, learnt, readings, await m.capabilities(), await m.stored_events()

    results, asked, asked_again, learnt, readings, after, events = asyncio.run(scenario())
    # each session stored its two registers; the refused log cost nothing else
    assert [len(r.readings) for r in results] == [2, 2, 2] and readings == 4
    assert asked == 1 and asked_again == 0
    assert learnt[f"events:{LOG}"] == "denied"
    since = dt.datetime.fromisoformat(learnt[f"events:{LOG}:since"])
    assert abs((dt.datetime.now(dt.timezone.utc) - since).total_seconds()) < 60
    # read again once access is there: the entries stored, the skip forgotten
    assert len(events) == 2 and after[f"events:{LOG}"] is None and after[f"events:{LOG}:since"] is None


def test_an_event_log_without_an_event_code_column_costs_no_readings(pg_dsn, tmp_path):
    columns = [[8, "0-0:1.0.0.255", 2, 0], [1, "0-0:96.10.1.255", 2, 0]]  # a status, not an event code

    async def scenario():
        async with one_meter(pg_dsn, tmp_path, columns=columns) as m:
            t = m.now()
            m.log.entries.append((t - HOUR, 10))
            first = await m.session()
            asked = m.log_object.asked
            second = await m.session()
            return first, second, m.log_object.asked - asked, await m.capabilities(), await m.stored_events()

    first, second, asked_again, learnt, events = asyncio.run(scenario())
    assert len(first.readings) == 2 and len(second.readings) == 2 and events == []
    assert learnt[f"events:{LOG}"] == "unusable" and asked_again == 0


def test_an_event_log_unavailable_for_the_moment_is_asked_again_next_session(pg_dsn, tmp_path):
    from smartmeter.cosem.results import DataAccessResult

    async def scenario():
        async with one_meter(pg_dsn, tmp_path) as m:
            t = m.now()
            m.log.entries.extend([(t - HOUR, 4), (t - HOUR, 5)])
            m.log_object.refusal = DataAccessResult.OBJECT_UNAVAILABLE
            first = await m.session()
            m.log_object.refusal = None
            await m.session()
            return t, first, await m.capabilities(), await m.stored_events()

    t, first, learnt, events = asyncio.run(scenario())
    assert len(first.readings) == 2 and first.events == [] and first.capabilities is None
    assert f"events:{LOG}" not in learnt
    assert events == [(t - HOUR, 4), (t - HOUR, 5)]


def test_hes_events_out_replaces_the_file_only_with_a_complete_listing(pg_dsn, tmp_path):
    from click.testing import CliRunner

    from smartmeter.cli.main import main
    from smartmeter.hes.store.pg import Event, FleetStore, KeyVault, MeterRecord, SessionResult

    logged = [Event(LOG, DAY, 1), Event(LOG, DAY + dt.timedelta(minutes=3), 2)]

    async def fill():
        store = await FleetStore.open(pg_dsn, KeyVault(bytes(range(32))), migrate=True)
        await store.add_meters([MeterRecord("EVT00001", b"EVT\0\0\0\0\1", "127.0.0.1", 1, keys={"ek": bytes(16)})])
        (meter_id, _, _), = await store.meter_ids()
        grant = await store.begin_session(meter_id, "t", 30, 4)
        await store.finish_session(grant, SessionResult([], {}, {LOG: logged[-1].time}, None, None, events=logged),
                                   None)
        await store.close()

    asyncio.run(fill())
    out = tmp_path / "events.csv"
    out.write_text("last week's listing\n")
    runner = CliRunner()
    unknown = runner.invoke(main, ["hes", "events", "EVT99999", "--db", pg_dsn, "--format", "csv", "--out", str(out)])
    assert unknown.exit_code != 0 and "no meter EVT99999" in unknown.output
    assert out.read_text() == "last week's listing\n"  # an unknown serial leaves the file as it was
    listed = runner.invoke(main, ["hes", "events", "EVT00001", "--db", pg_dsn, "--format", "csv", "--out", str(out)])
    assert listed.exit_code == 0, listed.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(dt.datetime.fromisoformat(r["time"]), int(r["code"])) for r in rows] == [(e.time, e.code) for e in logged]
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # nothing left beside it
