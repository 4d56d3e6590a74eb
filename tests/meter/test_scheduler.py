"""The scheduler engine over real objects: IC 22 schedules pointing at an IC 9 script table
whose scripts write a recorded IC 1 value, run through the server's own path.

Expectations are UTC instants written out by hand from the local times of each scenario
(Europe/Berlin: CET = UTC+1, CEST = UTC+2; DST begins 2026-03-29, ends 2026-10-25).
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem.classes.base import Binding
from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.schedule import Passage
from smartmeter.meter.scheduler import PERSIST_INTERVAL, SchedulerEngine
from smartmeter.meter.store import MeterStore
from script_models import script_test_model

BERLIN = ZoneInfo("Europe/Berlin")
TABLE = Obis.parse("0-0:10.0.109.255").to_bytes()
SCHEDULE_A = Obis.parse("0-0:15.0.5.255").to_bytes()
SCHEDULE_B = Obis.parse("0-0:15.0.6.255").to_bytes()
DAILY_0230 = [{"time": "02:30:00", "date": "*-*-*"}]


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def schedule_entry(name: str, obis: str, selector: int, times: list) -> dict:
    return {"name": name, "class_id": 22, "obis": obis,
            "executed_script": {"obis": "0-0:10.0.109.255", "selector": selector}, "type": 5,
            "execution_time": times, "access": {"tester": {"read": "*", "write": [2, 3, 4]}}}


def model_doc(a_times: list, b_times: list) -> dict:
    return script_test_model(schedule_entry("Schedule A", "0-0:15.0.5.255", 1, a_times),
                             schedule_entry("Schedule B", "0-0:15.0.6.255", 2, b_times))


class Killed(BaseException):
    """The process dies here (kill -9): nothing after this line runs."""


class CountingStore:
    """The meter store, counting writes, and dying at a chosen write when asked to."""

    def __init__(self, store: MeterStore) -> None:
        self.store = store
        self.puts = 0
        self.die_at_put = None

    def get(self, key, default=None):
        return self.store.get(key, default)

    def put(self, key, value) -> None:
        if self.die_at_put is not None and self.die_at_put(key, value):
            raise Killed
        self.puts += 1
        self.store.put(key, value)


class Meter:
    """One start of the meter: objects on the store, its server, its scheduler."""

    def __init__(self, store: MeterStore, now: float, a_times=DAILY_0230, b_times=()) -> None:
        self.t = now
        self.writes: list[int] = []
        self.store = CountingStore(store)
        self.before_run = lambda: None
        directory = ObjectModel.from_toml(model_doc(list(a_times), list(b_times))).instantiate({
            "status": Binding(lambda: Data.unsigned(0), lambda v: self.writes.append(v.value)),
            "settings": self.store, "clock": self})
        self.server = DlmsServer(directory, system_title=b"TESTMETR")
        self.engine = SchedulerEngine.for_directory(directory, self.store, BERLIN, self.run_script)

    def now(self) -> float:
        """The meter clock (IC 22 dates its writes with it)."""
        return self.t

    def run_script(self, script_ln: bytes, selector: int) -> None:
        self.before_run()
        assert self.server.run_script(script_ln, selector) == DataAccessResult.SUCCESS

    def tick(self, until: float, step: float = 600.0) -> list[float]:
        """The clock runs from now to `until`, the engine asked every `step` seconds."""
        ran = []
        while self.t < until:
            later = min(self.t + step, until)
            ran += [e.instant for e in self.engine.advance(self.t, later, Passage.RUNNING)]
            self.t = later
        return ran

    def jump(self, to: float, passage: Passage) -> list[float]:
        ran = [e.instant for e in self.engine.advance(self.t, to, passage)]
        self.t = to
        return ran

    def write_times(self, ln: bytes, times: list[tuple[bytes, bytes]]) -> None:
        association = self.server.association(16, "lan")
        client = ClientAssociation()
        client.on_aare(association.handle(client.aarq()))
        value = Data.array(Data.structure([Data.octet_string(t), Data.octet_string(d)]) for t, d in times)
        request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(22, ln, 4), None, value)
        assert decode_xdlms(association.handle(request.to_bytes())).result == DataAccessResult.SUCCESS


ANY_DAY = bytes.fromhex("FFFFFFFFFF")


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


def test_a_daily_time_runs_once_a_day_while_the_clock_runs(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    assert m.tick(utc("2026-03-13 00:00:00")) == [utc("2026-03-10 01:30:00"), utc("2026-03-11 01:30:00"),
                                                  utc("2026-03-12 01:30:00")]
    assert m.writes == [1, 1, 1]


def test_one_large_step_runs_every_instant_in_time_order_across_schedules(store):
    m = Meter(store, utc("2026-03-10 00:00:00"), b_times=[{"time": "03:00:00", "date": "*-*-*"}])
    executions = m.engine.advance(m.t, utc("2026-03-12 00:00:00"), Passage.RUNNING)
    assert [(e.schedule, e.instant, e.outcome) for e in executions] == [
        (SCHEDULE_A, utc("2026-03-10 01:30:00"), "executed"), (SCHEDULE_B, utc("2026-03-10 02:00:00"), "executed"),
        (SCHEDULE_A, utc("2026-03-11 01:30:00"), "executed"), (SCHEDULE_B, utc("2026-03-11 02:00:00"), "executed")]
    assert m.writes == [1, 2, 1, 2]


def test_an_outage_across_two_instants_runs_the_script_once(store):
    m = Meter(store, utc("2026-03-09 12:00:00"))
    assert m.tick(utc("2026-03-10 00:00:00")) == []
    assert m.jump(utc("2026-03-12 00:00:00"), Passage.POWER_RESTORED) == [utc("2026-03-10 01:30:00")]
    assert m.writes == [1]
    assert m.tick(utc("2026-03-13 00:00:00")) == [utc("2026-03-12 01:30:00")]
    assert m.writes == [1, 1]


def test_an_outage_crossing_nothing_runs_nothing(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    assert m.tick(utc("2026-03-10 03:00:00")) == [utc("2026-03-10 01:30:00")]
    assert m.jump(utc("2026-03-11 01:00:00"), Passage.POWER_RESTORED) == []
    assert m.writes == [1]


def test_a_forward_shift_over_instants_runs_the_script_once(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    m.tick(utc("2026-03-10 01:00:00"))
    assert m.jump(utc("2026-03-12 03:00:00"), Passage.SHIFTED) == [utc("2026-03-10 01:30:00")]
    assert m.writes == [1]


def test_a_backward_shift_runs_nothing_and_the_running_clock_crosses_again(store):
    """§5.4.1: no action for the shift back; running over 02:30 local again is a new crossing."""
    m = Meter(store, utc("2026-03-10 00:00:00"))
    assert m.tick(utc("2026-03-10 03:00:00")) == [utc("2026-03-10 01:30:00")]
    assert m.jump(utc("2026-03-10 01:00:00"), Passage.SHIFTED) == []
    assert m.writes == [1]
    assert m.tick(utc("2026-03-10 02:00:00")) == [utc("2026-03-10 01:30:00")]
    assert m.writes == [1, 1]


def test_an_execution_time_written_in_the_past_never_runs(store):
    m = Meter(store, utc("2026-03-10 00:00:00"), a_times=[])
    m.tick(utc("2026-03-10 12:00:00"))
    # 2026-03-10 02:30 local (Tuesday) is past at 12:00: written now, it is never run
    m.write_times(SCHEDULE_A, [(bytes([2, 30, 0, 0]), bytes([0x07, 0xEA, 3, 10, 2]))])
    assert m.tick(utc("2026-03-20 00:00:00")) == []
    assert m.writes == []


def test_the_engine_starts_a_new_execution_time_at_its_write(store):
    """Written at 12:00 while the engine was last asked at 00:00: the step that follows covers
    02:30 local of that day, which is before the write and does not run; the next day's does."""
    m = Meter(store, utc("2026-03-10 00:00:00"), a_times=[])
    assert m.engine.advance(utc("2026-03-09 23:50:00"), m.t, Passage.RUNNING) == []
    m.t = utc("2026-03-10 12:00:00")
    m.write_times(SCHEDULE_A, [(bytes([2, 30, 0, 0]), ANY_DAY)])
    executions = m.engine.advance(utc("2026-03-10 00:00:00"), utc("2026-03-11 12:00:00"), Passage.RUNNING)
    assert [e.instant for e in executions] == [utc("2026-03-11 01:30:00")]
    assert m.writes == [1]


def test_a_time_written_while_the_clock_runs_is_effective_after_the_write(store):
    m = Meter(store, utc("2026-03-10 01:00:00"), a_times=[])
    m.tick(utc("2026-03-10 01:10:00"))
    m.write_times(SCHEDULE_A, [(bytes([2, 20, 0, 0]), ANY_DAY), (bytes([2, 5, 0, 0]), ANY_DAY)])
    # 02:05 local is before the write (01:10 UTC = 02:10 local), 02:20 after it
    assert m.tick(utc("2026-03-10 02:00:00"), step=60) == [utc("2026-03-10 01:20:00")]
    assert m.writes == [1]


def test_a_write_after_the_engine_read_the_clock_is_not_undone_by_that_step(store):
    """The engine is asked up to 01:08 UTC after the write at 01:10: 02:09 local (01:09 UTC),
    before the write, must not run when the clock runs on."""
    m = Meter(store, utc("2026-03-10 01:00:00"), a_times=[])
    m.t = utc("2026-03-10 01:10:00")
    m.write_times(SCHEDULE_A, [(bytes([2, 9, 0, 0]), ANY_DAY)])
    m.engine.advance(utc("2026-03-10 01:00:00"), utc("2026-03-10 01:08:00"), Passage.RUNNING)
    assert m.engine.advance(utc("2026-03-10 01:08:00"), utc("2026-03-10 02:00:00"), Passage.RUNNING) == []
    assert m.writes == []


def test_a_restart_continues_without_running_again(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    assert m.tick(utc("2026-03-10 05:00:00")) == [utc("2026-03-10 01:30:00")]
    again = Meter(store, utc("2026-03-10 05:00:30"))  # restarted half a minute later
    assert again.engine.resume(again.t) == []
    assert again.tick(utc("2026-03-11 05:00:00")) == [utc("2026-03-11 01:30:00")]
    assert m.writes + again.writes == [1, 1]


def test_a_restart_after_an_outage_over_two_instants_runs_once(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    m.tick(utc("2026-03-10 05:00:00"))
    again = Meter(store, utc("2026-03-12 12:00:00"))
    assert [e.instant for e in again.engine.resume(again.t)] == [utc("2026-03-11 01:30:00")]
    assert again.writes == [1]
    assert again.tick(utc("2026-03-13 00:00:00")) == []


def test_a_kill_before_the_script_ran_loses_it_and_says_so(store):
    """At most once: the mark was stored first; after the restart the run is reported, not repeated."""
    m = Meter(store, utc("2026-03-10 00:00:00"))

    def die():
        raise Killed
    m.before_run = die
    with pytest.raises(Killed):
        m.tick(utc("2026-03-10 05:00:00"))
    again = Meter(store, utc("2026-03-10 05:00:00"))
    assert again.engine.describe()[0]["interrupted"] == [utc("2026-03-10 01:30:00")]
    executions = again.engine.resume(again.t)
    assert [(e.instant, e.outcome) for e in executions] == [(utc("2026-03-10 01:30:00"), "interrupted")]
    assert m.writes + again.writes == []
    # reported once only, and the schedule goes on
    assert again.tick(utc("2026-03-11 05:00:00")) == [utc("2026-03-11 01:30:00")]
    assert again.writes == [1]


def test_a_kill_after_the_script_ran_does_not_run_it_twice(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))
    ran = []
    m.before_run = lambda: ran.append(True)
    # the write that would clear the pending instant after the run never happens
    m.store.die_at_put = lambda key, value: bool(ran) and key.startswith("scheduler.") and value["pending"] is None
    with pytest.raises(Killed):
        m.tick(utc("2026-03-10 05:00:00"))
    assert m.writes == [1]
    again = Meter(store, utc("2026-03-10 06:00:00"))
    assert [e.outcome for e in again.engine.resume(again.t)] == ["interrupted"]
    assert again.tick(utc("2026-03-11 00:00:00")) == []
    assert m.writes + again.writes == [1]


def test_a_failing_script_is_reported_and_the_schedule_goes_on(store):
    m = Meter(store, utc("2026-03-10 00:00:00"))

    def fail():
        raise RuntimeError("script table unavailable")
    m.before_run = fail
    executions = m.engine.advance(m.t, utc("2026-03-11 00:00:00"), Passage.RUNNING)
    assert [(e.instant, e.outcome) for e in executions] == [(utc("2026-03-10 01:30:00"), "failed")]
    m.before_run = lambda: None
    assert m.engine.advance(utc("2026-03-11 00:00:00"), utc("2026-03-12 00:00:00"), Passage.RUNNING)[0].outcome == \
        "executed"


def test_daylight_saving_days_for_a_daily_time(store):
    m = Meter(store, utc("2026-03-26 12:00:00"))
    # 02:30 local does not exist on 2026-03-29
    assert m.tick(utc("2026-03-31 12:00:00")) == [utc("2026-03-27 01:30:00"), utc("2026-03-28 01:30:00"),
                                                  utc("2026-03-30 00:30:00"), utc("2026-03-31 00:30:00")]
    m.t = utc("2026-10-23 12:00:00")
    m.engine.advance(utc("2026-03-31 12:00:00"), m.t, Passage.SHIFTED)  # to autumn (runs once: not counted)
    m.writes.clear()
    # on 2026-10-25 02:30 local happens twice; it runs at the first (CEST) only
    assert m.tick(utc("2026-10-26 12:00:00")) == [utc("2026-10-24 00:30:00"), utc("2026-10-25 00:30:00"),
                                                  utc("2026-10-26 01:30:00")]
    assert m.writes == [1, 1, 1]


def test_daylight_saving_days_for_an_hourly_time(store):
    hourly = [{"time": "*:00:00", "date": "*-*-*"}]
    m = Meter(store, utc("2026-03-28 23:00:00") - 1, a_times=hourly)  # just before local midnight
    spring = m.tick(utc("2026-03-29 22:00:00") - 1)
    # every UTC hour of the local day is a whole local hour; 02:00 local does not exist: 23 hours
    assert spring == [utc("2026-03-28 23:00:00") + 3600 * h for h in range(23)]
    m.t = utc("2026-10-24 22:00:00") - 1
    m.engine.advance(utc("2026-03-29 22:00:00") - 1, m.t, Passage.SHIFTED)
    autumn = m.tick(utc("2026-10-25 23:00:00") - 1)
    # 25 UTC hours in the local day; the repeated 02:00 local (01:00 UTC) runs once only
    expected = [utc("2026-10-24 22:00:00") + 3600 * h for h in range(25)]
    expected.remove(utc("2026-10-25 01:00:00"))
    assert autumn == expected


def test_the_store_is_written_rarely_while_nothing_is_due(store):
    m = Meter(store, utc("2026-03-10 03:00:00"))
    m.tick(utc("2026-03-10 09:00:00"), step=10)
    # two schedules, 2160 steps: stored at the first step and then every PERSIST_INTERVAL
    assert m.store.puts <= 2 * (1 + 6 * 3600 / PERSIST_INTERVAL)
    again = Meter(store, utc("2026-03-10 09:00:00"))
    assert again.engine.resume(again.t) == []


def test_describe_lists_every_schedule(store):
    m = Meter(store, utc("2026-03-10 00:00:00"), b_times=[{"time": "00:00:00", "date": "*-*-01"}])
    m.tick(utc("2026-03-10 02:00:00"))
    first, second = m.engine.describe()
    assert first == {"logical_name": "0-0:15.0.5.255", "name": "Schedule A", "script": "0-0:10.0.109.255",
                     "selector": 1, "type": 5, "execution_times": ["*-*-* 02:30:00"],
                     "processed_until": utc("2026-03-10 02:00:00"), "next": utc("2026-03-11 01:30:00"),
                     "interrupted": []}
    assert (second["execution_times"], second["next"]) == (["*-*-01 00:00:00"], utc("2026-03-31 22:00:00"))
