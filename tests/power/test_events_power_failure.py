"""Event logs, event counters and power-failure records across power failures of a real meter
process (kill -9 of its process group, a clean stop, a simulated outage).

A meter runs on a fast clock (SPEED times real time) from a fixed start time on a fresh data
directory. The test causes events continuously (meter cover and magnet through the control
channel `smartmeter sim` uses, supply off/on, DLMS associations, clock writes beyond the 9 s
limit with the management client) and reads the logs and counters back over DLMS after every
step, as a head-end would. What a client has read is the reference: after a kill -9 at a random
instant and a restart, every entry read is still there, in the same place and order (only the
oldest make room, and only when the log is full), no counter went back, and the restart is one
power failure with events 1 (at the last instant the meter had saved, which is not after the
kill and not more than the save period before it) and 2.

Meter times are bounded from the outside: `sim status` gives the meter's time in whole seconds
at an instant between sending the request and receiving the answer; from there meter time runs
at SPEED, so an instant t later is between utc + (t - received) * SPEED and
utc + 1 + (t - sent) * SPEED.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cli.format import to_json
from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import LinkError, WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.hes.resync import resynchronise
from smartmeter.meter.control import request as control_request

from tests.meterproc import start_meter

SPEED = 96.0
START = "2026-03-10T10:00"  # meter local time (Europe/Berlin), far from a DST change
ZONE = ZoneInfo("Europe/Berlin")
# The meter saves its registers and the instant it was last alive every second (PERSIST_PERIOD;
# its housekeeping looks every half second): the power-down instant is at most 1.5 s of real
# time before a kill; 0.5 s more for a machine busy with other tests.
SAVE_GAP_S = 2.0
LONG_POWER_FAILURE_S = 180  # IDIS default of 0-0:96.7.20.255 (the test never writes it)

# IDIS package 2 event codes (companion standard tables), written here, not taken from the meter
POWER_DOWN, POWER_UP = 1, 2
CLOCK_OLD, CLOCK_NEW = 4, 5
COVER_OPEN, COVER_CLOSED = 44, 45
MAGNET_ON, MAGNET_OFF = 42, 43
PARAMETER_CHANGED = 47

LOGS = {"standard": "0-0:99.98.0.255", "fraud": "0-0:99.98.1.255", "security": "0-0:99.98.9.255",
        "communication": "0-0:99.98.5.255", "session": "0-0:99.98.6.255",
        "configuration": "0-0:99.98.10.255", "power_failure": "1-0:99.97.0.255"}
EVENT_OBJECTS = {"standard": "0-0:96.11.0.255", "fraud": "0-0:96.11.1.255", "security": "0-0:96.11.9.255",
                 "communication": "0-0:96.11.5.255", "session": "0-0:96.11.6.255"}
COUNTERS = {**{f"G_EC_{g:02d}": f"0-0:96.15.{20 + g}.255" for g in range(1, 11)},
            "power_failures": "0-0:96.7.21.255", "long_power_failures": "0-0:96.7.9.255"}
LAST_LONG_DURATION = "0-0:96.7.19.255"


# -- reading the meter as a client does ------------------------------------------------------------

@dataclass
class Snapshot:
    """What a management client read in one association: every event log (rows as
    (UTC time, columns after the clock...)), its declared capacity, the event objects and counters."""

    logs: dict[str, list[tuple]]
    capacity: dict[str, int]
    objects: dict[str, int]
    counters: dict[str, int]
    last_long_duration: int

    def codes(self, log: str) -> list[int]:
        return [row[1] for row in self.logs[log]]


def _utc_of(raw: bytes) -> int:
    return int(axdr.decode_date_time(raw).to_datetime().timestamp())


def _freeze(value):
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


async def _with_management(meter, action):
    creds = load_credentials(meter.data_dir / "credentials" / "management.json")
    link = WrapperLink("127.0.0.1", meter.wrapper_port, creds.client_sap, creds.server_sap, 10)
    async with MeterClient(link, security=creds.security) as client:
        return await action(client)


def read_snapshot(meter) -> Snapshot:
    async def read(client) -> Snapshot:
        logs, capacity = {}, {}
        for name, obis in LOGS.items():
            _, buffer = await client.profile(obis)
            logs[name] = [(_utc_of(row.value[0].value), *(_freeze(to_json(v)) for v in row.value[1:]))
                          for row in buffer.value]
            capacity[name] = (await client.get(obis, 8, class_id=7)).value
        objects = {name: (await client.get(obis, 2, class_id=1)).value for name, obis in EVENT_OBJECTS.items()}
        counters = {name: (await client.get(obis, 2)).value for name, obis in COUNTERS.items()}
        duration = (await client.get(LAST_LONG_DURATION, 2)).value
        return Snapshot(logs, capacity, objects, counters, duration)
    return asyncio.run(_with_management(meter, read))


def read_snapshot_when_listening(meter, timeout: float = 20.0) -> Snapshot:
    """After a restart or a returned supply the interfaces open a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_snapshot(meter)
        except (OSError, LinkError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def resynchronise_after_kill(meter) -> None:
    """What a head-end does after the meter's power failure: continue above its frame counter."""
    creds = load_credentials(meter.data_dir / "credentials" / "management.json")
    deadline = time.monotonic() + 20
    while True:
        try:
            asyncio.run(resynchronise(WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10), creds))
            return
        except (OSError, LinkError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass(frozen=True)
class ClockReading:
    """The meter's time (whole seconds) as `sim status` said it, between `sent` and `received`."""

    sent: float
    received: float
    utc: int
    powered: bool
    world: dict

    def earliest(self, t: float) -> float:
        """The meter time at monotonic instant t (>= received) is at least this."""
        return self.utc + (t - self.received) * SPEED

    def latest(self, t: float) -> float:
        return self.utc + 1 + (t - self.sent) * SPEED


def control(meter, message: dict) -> dict:
    answer = control_request(meter.data_dir, message)
    assert answer.get("ok"), answer
    return answer["status"]


def status(meter) -> ClockReading:
    sent = time.monotonic()
    st = control(meter, {"status": True})
    return ClockReading(sent, time.monotonic(), st["clock"]["utc"], st["powered"], st["world"])


def sim_cli(meter, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", "sim", *args, "--data-dir", str(meter.data_dir)],
                          capture_output=True, text=True, timeout=60)


def _local_setting(utc: float) -> Data:
    """Clock attribute 2 as the companion standard asks for it: local time, deviation and status not specified."""
    t = dt.datetime.fromtimestamp(utc, ZONE)
    return Data.octet_string(axdr.encode_date_time(CosemDateTime(
        CosemDate(t.year, t.month, t.day, None), CosemTime(t.hour, t.minute, t.second, None), None, None)))


def set_clock(meter, utc: int) -> None:
    asyncio.run(_with_management(meter, lambda c: c.set("0-0:1.0.0.255", 2, _local_setting(utc), class_id=8)))


def verify_offline(data_dir) -> None:
    for command in ("verify-log", "verify-storage"):
        result = subprocess.run([sys.executable, "-m", "smartmeter", command, str(data_dir)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"


# -- what must hold between two readings ---------------------------------------------------------

def kept_fifo(before: list[tuple], after: list[tuple], capacity: int, where: str) -> list[tuple]:
    """Every entry read before is still there in the same order, only the oldest gone and only
    to make room in a full log. -> the entries that are new in `after`."""
    assert len(after) <= capacity, f"{where}: {len(after)} entries in a log of {capacity}"
    for dropped in range(len(before) + 1):
        kept = before[dropped:]
        if after[:len(kept)] == kept:
            break
    else:
        raise AssertionError(f"{where}: entries read before are missing or changed\n before (last 5) {before[-5:]}\n"
                             f" after (first {len(before)}) {after[:len(before)][-5:]}")
    assert dropped == 0 or len(after) == capacity, f"{where}: {dropped} entries dropped from a log that is not full"
    return after[len(kept):]


def check_kept(before: Snapshot, after: Snapshot, where: str) -> dict[str, list[tuple]]:
    """Logs kept (FIFO), counters not gone back, event objects = the last code of their log.
    -> the new entries of each log."""
    assert after.capacity == before.capacity
    new = {name: kept_fifo(before.logs[name], after.logs[name], after.capacity[name], f"{where}, log {name}")
           for name in LOGS}
    for name, value in before.counters.items():
        assert after.counters[name] >= value, f"{where}: {name} went back from {value} to {after.counters[name]}"
    check_event_objects(after, where)
    return new


def check_event_objects(snap: Snapshot, where: str) -> None:
    for name in EVENT_OBJECTS:
        if snap.logs[name]:
            assert snap.objects[name] == snap.logs[name][-1][1], f"{where}: event object of {name} is not its last code"


def check_one_power_failure(before: Snapshot, after: Snapshot, new: dict[str, list[tuple]], down_range, up_range,
                            where: str) -> tuple[int, int]:
    """One power failure between `before` and `after`: events 1 then 2 in the standard and the
    security log, once; counted once, and as long when it lasted the threshold; its times in
    the ranges the scenario gives. -> (down, up)."""
    standard = [(t, code) for t, code in new["standard"]]
    assert [code for _, code in standard[:2]] == [POWER_DOWN, POWER_UP], f"{where}: standard log got {standard}"
    (down, _), (up, _) = standard[:2]
    # whatever follows was recorded after the power up
    assert all(code not in (POWER_DOWN, POWER_UP) and t >= up for t, code in standard[2:]), f"{where}: {standard}"
    security = [(row[0], row[1]) for row in new["security"] if row[1] in (POWER_DOWN, POWER_UP)]
    assert security == standard[:2], f"{where}: security log got {security}"
    # time stamps are whole seconds of meter time (the bounds are not)
    lo, hi = down_range
    assert math.floor(lo) <= down <= hi, f"{where}: power down at {down}, expected within [{lo:.0f}, {hi:.0f}]"
    lo, hi = up_range
    assert math.floor(lo) <= up <= hi, f"{where}: power up at {up}, expected within [{lo:.0f}, {hi:.0f}]"
    assert after.counters["power_failures"] == before.counters["power_failures"] + 1, where
    assert after.counters["G_EC_05"] == before.counters["G_EC_05"] + 2, where  # start-up/reset group: 1 and 2
    duration = up - down
    if duration >= LONG_POWER_FAILURE_S:
        assert after.counters["long_power_failures"] == before.counters["long_power_failures"] + 1, where
        assert after.last_long_duration == duration, where
        assert new["power_failure"] == [(up, duration)], f"{where}: power failure log got {new['power_failure']}"
    else:
        assert after.counters["long_power_failures"] == before.counters["long_power_failures"], where
        assert new["power_failure"] == [], f"{where}: a {duration} s outage in the power failure log"
    return down, up


# -- the random kill scenario ---------------------------------------------------------------------

@dataclass
class Driver:
    """Causes events on a running meter and keeps what a client has read of it."""

    meter: object
    rng: random.Random
    seen: Snapshot
    last_status: ClockReading
    cover_open: bool = False
    magnet: bool = False
    clock_written: float = float("-inf")  # monotonic instant of the last clock write's answer
    log: list[str] = field(default_factory=list)

    def observe(self) -> ClockReading:
        self.last_status = status(self.meter)
        return self.last_status

    def read(self, where: str) -> dict[str, list[tuple]]:
        snap = read_snapshot_when_listening(self.meter)
        new = check_kept(self.seen, snap, where)
        self.seen = snap
        return new

    def toggle(self, name: str) -> tuple[str, int]:
        if name == "cover":
            self.cover_open = not self.cover_open
            control(self.meter, {"input": "cover", "value": "open" if self.cover_open else "close"})
            return "cover", COVER_OPEN if self.cover_open else COVER_CLOSED
        self.magnet = not self.magnet
        control(self.meter, {"input": "magnet", "value": "on" if self.magnet else "off"})
        return "magnet", MAGNET_ON if self.magnet else MAGNET_OFF

    def step(self, kind: str, where: str) -> None:
        self.log.append(f"{where}: {kind}")
        before = self.observe()
        if kind in ("cover", "magnet"):
            _, code = self.toggle(kind)
            after = self.observe()
            new = self.read(where)
            fraud = [(t, c) for t, c in new["fraud"]]
            assert [c for _, c in fraud] == [code], f"{where}: fraud log got {fraud}"
            assert before.utc <= fraud[0][0] <= after.utc + 1, where
        elif kind == "association":
            seen = self.seen
            new = self.read(where)
            # the association that read: its start is in the session log as it reads
            assert new["session"] and new["session"][-1][1] == 26, f"{where}: session log got {new['session']}"
            assert new["standard"] == [] and new["fraud"] == [], where
            assert self.seen.counters["G_EC_01"] > seen.counters["G_EC_01"], where
        elif kind == "supply":
            control(self.meter, {"input": "supply", "value": "off"})
            off = self.observe()
            assert not off.powered
            time.sleep(self.rng.uniform(0.3, 2.6))  # 30 s to 250 s of meter time: short and long ones
            on_sent = time.monotonic()
            control(self.meter, {"input": "supply", "value": "on"})
            on = self.observe()
            seen = self.seen
            new = self.read(where)
            check_one_power_failure(seen, self.seen, new, (before.utc, off.utc + 1),
                                    (off.earliest(on_sent), on.utc + 1), where)
        elif kind == "clock":
            # beyond the 9 s limit, forward or back, by up to two hours
            delta = self.rng.choice((-1, 1)) * self.rng.randint(10, 7200)
            target = int(before.earliest(time.monotonic()) + delta)
            set_clock(self.meter, target)
            self.clock_written = time.monotonic()
            after = self.observe()
            new = self.read(where)
            got = [(t, c) for t, c in new["standard"]]
            assert [c for _, c in got] == [CLOCK_OLD, CLOCK_NEW, PARAMETER_CHANGED], f"{where}: {got}"
            assert before.utc <= got[0][0] <= before.latest(after.received), where
            assert got[1][0] == target, where
        else:
            raise ValueError(kind)

    def background(self, stop: threading.Event, rng: random.Random, failures: list) -> None:
        """Until the kill: fraud inputs and reads, as fast as the meter takes them; what is
        read completely before the kill counts as read."""
        while not stop.is_set():
            try:
                if rng.random() < 0.5:
                    self.toggle(rng.choice(("cover", "magnet")))
                    self.observe()
                else:
                    snap = read_snapshot(self.meter)
                    if not stop.is_set():
                        check_kept(self.seen, snap, "background read")
                        self.seen = snap
                    self.observe()
            except AssertionError as exc:
                failures.append(exc)
                return
            except Exception as exc:  # noqa: BLE001 - the kill cuts a request off; nothing of it was read
                if not stop.is_set():
                    failures.append(exc)
                return


ROUNDS = 6
STEPS = ("cover", "magnet", "association", "supply", "clock")


@pytest.mark.welmec("I3-1", "I3-2", "L1", "L7", "L8")
def test_random_kills_lose_no_event_a_client_has_read(tmp_path):
    """Six rounds: a meter at 96x real time does cover/magnet/supply/association/clock steps,
    each read back over DLMS, then fraud inputs and reads go on in the background while it is
    killed -9 at a random instant; after each restart every log entry read is still there in
    its place (FIFO, capacity kept), no counter went back, the restart is one power failure
    with events 1 and 2 (the power-down instant not after the kill and within the save period
    before it, long only from 180 s), and verify-log/verify-storage pass."""
    rng = random.Random(20260310)
    data_dir = tmp_path / "d"  # short: the control socket's path has a length limit
    meter = start_meter(data_dir, "--speed", f"{SPEED:g}", "--start-time", START)
    driver = None
    try:
        first = read_snapshot(meter)
        assert first.logs["standard"] == [], "a fresh meter has had no power failure"
        assert first.counters["power_failures"] == 0
        driver = Driver(meter, rng, first, status(meter))
        for round_no in range(ROUNDS):
            where = f"round {round_no}"
            for step_no in range(rng.randint(3, 5)):
                driver.step(rng.choice(STEPS), f"{where} step {step_no}")
            # the kill comes while fraud inputs and reads go on
            stop, failures = threading.Event(), []
            worker = threading.Thread(target=driver.background, daemon=True,
                                      args=(stop, random.Random(rng.random()), failures))
            worker.start()
            time.sleep(rng.uniform(0.0, 1.5))
            stop.set()
            killed = time.monotonic()
            meter.power_failure()
            worker.join(30)
            assert not worker.is_alive() and not failures, failures
            read_before, clock_before = driver.seen, driver.last_status
            verify_offline(data_dir)

            meter = start_meter(data_dir, "--speed", f"{SPEED:g}")
            driver.meter = meter
            back = driver.observe()
            assert back.powered, f"{where}: the supply was on at the kill"
            driver.cover_open, driver.magnet = back.world["cover"] == "open", back.world["magnet"] == "on"
            resynchronise_after_kill(meter)
            after = read_snapshot_when_listening(meter)
            new = check_kept(read_before, after, f"{where} after the kill")
            check_one_power_failure(
                read_before, after, new,
                (clock_before.earliest(killed) - SAVE_GAP_S * SPEED, clock_before.latest(killed)),
                (clock_before.earliest(killed), back.utc + 1), f"{where} after the kill")
            driver.seen = after
            driver.log.append(f"{where}: killed {killed - clock_before.received:.2f} s after the last status")
        assert driver.seen.counters["power_failures"] >= ROUNDS
        # the scenario filled the busiest log: the FIFO was exercised across kills
        assert len(driver.seen.logs["security"]) == driver.seen.capacity["security"]
    finally:
        meter.stop()
        if driver is not None:
            print("\n".join(driver.log))
    verify_offline(data_dir)


# -- deterministic scenarios ----------------------------------------------------------------------

def _fresh_meter(tmp_path):
    return start_meter(tmp_path / "d", "--speed", f"{SPEED:g}", "--start-time", START)


def _restart(meter):
    return start_meter(meter.data_dir, "--speed", f"{SPEED:g}")


@pytest.mark.welmec("I3-1", "I3-2", "L7")
def test_a_clean_stop_and_a_kill_are_each_one_power_failure(tmp_path):
    """A clean stop (SIGINT) and a kill -9 each restart as one power failure: events 1 and 2
    once, counted once. After the clean stop the power-down instant is the stop itself (the
    meter saves on its way out); after the kill it is the last save, not after the kill and
    within the save period before it."""
    meter = _fresh_meter(tmp_path)
    try:
        before = read_snapshot(meter)
        assert before.logs["standard"] == [] and before.counters["power_failures"] == 0
        clock = status(meter)
        stopping = time.monotonic()
        assert meter.stop() == 0
        stopped = time.monotonic()
        meter = _restart(meter)
        back = status(meter)
        assert back.powered
        after = read_snapshot(meter)  # a clean stop keeps the frame counters exact: no resynchronisation
        new = check_kept(before, after, "after the clean stop")
        down, up = check_one_power_failure(before, after, new, (clock.earliest(stopping), clock.latest(stopped)),
                                           (clock.earliest(stopped), back.utc + 1), "after the clean stop")

        clock = status(meter)
        time.sleep(0.7)
        killed = time.monotonic()
        meter.power_failure()
        verify_offline(meter.data_dir)
        meter = _restart(meter)
        back = status(meter)
        resynchronise_after_kill(meter)
        again = read_snapshot_when_listening(meter)
        new = check_kept(after, again, "after the kill")
        check_one_power_failure(after, again, new,
                                (clock.earliest(killed) - SAVE_GAP_S * SPEED, clock.latest(killed)),
                                (clock.earliest(killed), back.utc + 1), "after the kill")
        assert again.counters["power_failures"] == 2
        assert [code for _, code in again.logs["standard"][:4]] == [POWER_DOWN, POWER_UP, POWER_DOWN, POWER_UP]
    finally:
        meter.stop()
    verify_offline(meter.data_dir)


def _event_store(meter) -> sqlite3.Connection:
    """The meter's event store, read-only: what it holds while its interfaces are down."""
    return sqlite3.connect(f"file:{meter.data_dir / 'events.sqlite3'}?mode=ro", uri=True)


def _stored(meter) -> tuple[list[tuple[int, int]], int]:
    with _event_store(meter) as db:
        rows = db.execute("SELECT time, code FROM entry WHERE log = 'standard' ORDER BY seq").fetchall()
        (failures,) = db.execute("SELECT COALESCE(MAX(value), 0) FROM counter WHERE name = 'power_failures'").fetchone()
    return [tuple(r) for r in rows], failures


@pytest.mark.welmec("I3-1", "I3-2", "L7")
def test_an_outage_stays_down_over_kills_and_is_counted_once(tmp_path):
    """`sim supply off`, then two kills -9 during the outage, each followed by a restart: the
    meter stays powered down (no DLMS, nothing measured, no events 1/2) until `sim supply on`;
    then the outage is one power failure from the supply-off instant to the supply-on instant,
    long (it outlasted 180 s of meter time), logged with its duration."""
    meter = _fresh_meter(tmp_path)
    try:
        before = read_snapshot(meter)
        clock = status(meter)
        off = sim_cli(meter, "supply", "off")
        assert off.returncode == 0, off.stderr
        down_seen = status(meter)
        assert not down_seen.powered and down_seen.world["supply"] == "off"
        stored_before, failures_before = _stored(meter)
        energy = meter.energy_wh("a_plus")
        for _ in range(2):
            time.sleep(0.5)
            meter.power_failure()
            meter = _restart(meter)
            during = status(meter)
            assert not during.powered and during.world["supply"] == "off", "the world still has no supply"
            assert "supply: OFF" in "".join(meter.output)
            with pytest.raises(LinkError, match="ConnectionRefused"):
                read_snapshot(meter)  # no communication without supply
            assert _stored(meter) == (stored_before, failures_before), "nothing recorded during the outage"
            assert meter.energy_wh("a_plus") == energy, "nothing measured during the outage"
        on_sent = time.monotonic()
        on = sim_cli(meter, "supply", "on")
        assert on.returncode == 0, on.stderr
        up_seen = status(meter)
        assert up_seen.powered
        resynchronise_after_kill(meter)
        after = read_snapshot_when_listening(meter)
        new = check_kept(before, after, "after the outage")
        down, up = check_one_power_failure(before, after, new, (clock.utc, down_seen.utc + 1),
                                           (during.earliest(on_sent), up_seen.utc + 1), "after the outage")
        assert up - down >= LONG_POWER_FAILURE_S  # two restarts of a second or more at 96x
        assert after.counters["power_failures"] == 1 and after.counters["long_power_failures"] == 1
    finally:
        meter.stop()
    verify_offline(meter.data_dir)


@pytest.mark.welmec("I3-2")
@pytest.mark.parametrize("shift", [2 * 86400, -3600], ids=["forward", "back"])
def test_a_kill_right_after_a_clock_write_dates_the_power_down_in_the_new_time(tmp_path, shift):
    """The clock is set over DLMS (forward two days, or back one hour) and the meter killed -9
    as soon as the write is answered: the power down is at the new time (not after the kill,
    not before the write), and the outage lasts the restart, not the clock shift."""
    meter = _fresh_meter(tmp_path)
    try:
        before = read_snapshot(meter)
        clock = status(meter)
        target = int(clock.earliest(time.monotonic()) + shift)
        writing = time.monotonic()
        killed = []

        async def write_then_fail(client):
            await client.set("0-0:1.0.0.255", 2, _local_setting(target), class_id=8)
            killed.append(time.monotonic())
            meter.power_failure()  # as soon as the write is answered, before the release

        try:
            asyncio.run(_with_management(meter, write_then_fail))
        except (LinkError, OSError):
            pass  # the release finds no meter
        killed = killed[0]
        meter = _restart(meter)
        back = status(meter)
        resynchronise_after_kill(meter)
        after = read_snapshot_when_listening(meter)
        new = check_kept(before, after, "after the kill")
        written = new["standard"][:3]
        assert [code for _, code in written] == [CLOCK_OLD, CLOCK_NEW, PARAMETER_CHANGED], written
        assert written[1][0] == target
        new["standard"] = new["standard"][3:]
        check_one_power_failure(before, after, new, (target, target + 1 + (killed - writing) * SPEED),
                                (target, back.utc + 1), "after the kill")
    finally:
        meter.stop()
