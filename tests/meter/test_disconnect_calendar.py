"""The disconnect control calendar and the load-management relay calendar on a running meter
(companion §5.8, §5.14; catalog §3.7, §3.10), on a fast clock the test moves.

The management client writes each calendar through the server (its access rights, the classes'
checks) and activates it. Expected states, events (IDIS codes of the catalog), their times and
the +A energy are computed here from the calendar written, the load set and the clock moved."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from meter_sessions import SUCCESS, ClientSession
from meter_site import MeterSite
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import DataAccessResult

BERLIN = ZoneInfo("Europe/Berlin")  # the meter's time zone
DISCONNECT_CALENDAR, DISCONNECT_SCRIPTS, DISCONNECTOR = "0-0:13.0.1.255", "0-0:10.0.106.255", "0-0:96.3.10.255"
RELAY_CALENDAR, RELAY_SCRIPTS = "0-0:13.0.2.255", "0-0:10.0.103.255"
OFF, ON = 3, 4  # remote_disconnect, remote_reconnect
REMOTE_DISCONNECTION, REMOTE_CONNECTION = 62, 63
LOAD_W = 1200.0
STEP = 420.0  # the meter ticks every 7 minutes: switches fall inside a tick


def local(*args) -> float:
    return dt.datetime(*args, tzinfo=BERLIN).timestamp()


START = local(2026, 6, 9, 6, 0)  # a Tuesday


def switch(hour: int, minute: int, selector: int, table: str) -> Data:
    return Data.structure([Data.octet_string(bytes([hour, minute, 0, 0])),
                           Data.octet_string(Obis.parse(table).to_bytes()), Data.long_unsigned(selector)])


def day_profiles(table: str, *days: tuple[int, list[tuple[int, int, int]]]) -> Data:
    return Data.array(Data.structure([Data.unsigned(day_id), Data.array(switch(h, m, s, table) for h, m, s in switches)])
                      for day_id, switches in days)


class Site(MeterSite):
    STEP = STEP

    def __init__(self, data_dir) -> None:
        super().__init__(data_dir, START)
        self.management = ClientSession(self.meter, "management")

    def write_calendar(self, obis: str, days: Data) -> None:
        """A passive calendar of one every-year season whose week is day profile 1 every day,
        activated now (method 1)."""
        every_year_jan_1 = bytes([0xFF, 0xFF, 1, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])
        writes = [(6, Data.octet_string(b"PROGRAM")),
                  (7, Data.array([Data.structure([Data.octet_string(b"S1"), Data.octet_string(every_year_jan_1),
                                                  Data.octet_string(b"W1")])])),
                  (8, Data.array([Data.structure([Data.octet_string(b"W1"), *[Data.unsigned(1)] * 7])])),
                  (9, days)]
        for attribute, value in writes:
            assert self.management.set(20, obis, attribute, value) == SUCCESS, attribute
        assert self.management.action(20, obis, 1, Data.integer(0)) == SUCCESS

    def log(self) -> list[tuple[float, int]]:
        return super().log("disconnect")

    def disconnector(self) -> dict:
        return self.meter.status()["disconnector"]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.meter.close()


def off_8_on_18(site) -> None:
    """The disconnect calendar: off at 08:00, on at 18:00 every day; mode 4 (direct reconnection,
    a timer switch) so that the calendar's reconnection connects."""
    assert site.management.set(70, DISCONNECTOR, 4, Data.enum(4)) == SUCCESS
    site.write_calendar(DISCONNECT_CALENDAR, day_profiles(DISCONNECT_SCRIPTS, (1, [(8, 0, OFF), (18, 0, ON)])))


def test_the_calendar_switches_and_a_remote_command_stands_until_the_next_opposite_one(site):
    site.meter.control({"input": "load", "power": LOAD_W})
    off_8_on_18(site)
    assert site.meter.status()["disconnect calendar"]["next switch"] == {"at": "2026-06-09T08:00:00+02:00", "script": OFF}
    site.run_until(local(2026, 6, 9, 9, 0))
    assert site.disconnector() == {"state": "disconnected", "mode": 4, "output": "open"}
    site.run_until(local(2026, 6, 9, 10, 0))
    assert site.management.action(70, DISCONNECTOR, 2, Data.integer(0)) == SUCCESS  # remote_reconnect (a)
    site.run_until(local(2026, 6, 9, 18, 30))  # the 18:00 switch (on) finds it on: nothing happens
    assert site.disconnector()["output"] == "connected"
    site.run_until(local(2026, 6, 9, 20, 0))
    assert site.management.action(70, DISCONNECTOR, 1, Data.integer(0)) == SUCCESS  # remote_disconnect (b)
    site.run_until(local(2026, 6, 10, 12, 0))  # the 08:00 switch (off) finds it off
    assert site.disconnector()["output"] == "open"
    site.run_until(local(2026, 6, 10, 19, 0))  # 18:00: the calendar's next opposite command
    assert site.disconnector() == {"state": "connected", "mode": 4, "output": "connected"}
    assert site.log() == [(local(2026, 6, 9, 8, 0), REMOTE_DISCONNECTION), (local(2026, 6, 9, 10, 0), REMOTE_CONNECTION),
                          (local(2026, 6, 9, 20, 0), REMOTE_DISCONNECTION),
                          (local(2026, 6, 10, 18, 0), REMOTE_CONNECTION)]
    connected_hours = 2 + 10 + 1  # 06:00-08:00, 10:00-20:00, 18:00-19:00 the next day
    assert abs(site.a_plus() - LOAD_W * connected_hours) <= 1


def test_in_mode_3_the_calendar_reconnection_makes_the_disconnector_ready_for_the_customer(site):
    site.write_calendar(DISCONNECT_CALENDAR, day_profiles(DISCONNECT_SCRIPTS, (1, [(8, 0, OFF), (18, 0, ON)])))
    site.run_until(local(2026, 6, 9, 18, 5))
    assert site.disconnector() == {"state": "ready", "mode": 3, "output": "open"}  # d: 59, the button connects
    assert site.log() == [(local(2026, 6, 9, 8, 0), REMOTE_DISCONNECTION), (local(2026, 6, 9, 18, 0), 59)]


def test_a_power_failure_across_the_switch_runs_the_disconnection_once_at_power_up(site):
    site.meter.control({"input": "load", "power": LOAD_W})
    off_8_on_18(site)
    site.run_until(local(2026, 6, 9, 7, 30))
    assert site.meter.control({"input": "supply", "value": "off"})["ok"]
    site.platform[0] = local(2026, 6, 9, 9, 10)
    assert site.meter.control({"input": "supply", "value": "on"})["ok"]
    assert site.disconnector()["output"] == "open"
    site.run_until(local(2026, 6, 9, 12, 0))
    site.restart()  # a restart does not run it again either
    site.run_until(local(2026, 6, 9, 13, 0))
    assert site.log() == [(local(2026, 6, 9, 9, 10), REMOTE_DISCONNECTION)]
    assert abs(site.a_plus() - LOAD_W * 1.5) <= 1  # 06:00-07:30 only


def test_the_load_management_relay_follows_its_calendar(site):
    site.write_calendar(RELAY_CALENDAR, day_profiles(RELAY_SCRIPTS, (1, [(6, 30, OFF), (22, 0, ON)])))
    expected = [((2026, 6, 9, 6, 15), "connected"), ((2026, 6, 9, 6, 45), "disconnected"),
                ((2026, 6, 9, 21, 45), "disconnected"), ((2026, 6, 9, 22, 15), "connected"),
                ((2026, 6, 10, 6, 45), "disconnected")]
    seen = []
    for at, _ in expected:
        site.run_until(local(*at))
        seen.append((at, site.meter.status()["load management relay"]["state"]))
    assert seen == expected
    assert site.meter.status()["load management relay"]["output"] == "open"
    assert site.log() == []  # the relay is not the disconnector: nothing in its log
    assert site.disconnector()["output"] == "connected"


@pytest.mark.parametrize("calendar, table, selector", [
    (DISCONNECT_CALENDAR, DISCONNECT_SCRIPTS, 1),  # local disconnection: not for a calendar
    (DISCONNECT_CALENDAR, DISCONNECT_SCRIPTS, 2),
    (DISCONNECT_CALENDAR, "0-0:10.0.100.255", 1),  # the tariff script table
    (DISCONNECT_CALENDAR, RELAY_SCRIPTS, 3),  # another script table with a script 3
    (RELAY_CALENDAR, RELAY_SCRIPTS, 1),
    (RELAY_CALENDAR, DISCONNECT_SCRIPTS, 4),
])
def test_a_calendar_naming_another_script_or_script_table_is_refused_and_nothing_changes(site, calendar, table,
                                                                                         selector):
    good = day_profiles(DISCONNECT_SCRIPTS if calendar == DISCONNECT_CALENDAR else RELAY_SCRIPTS, (1, [(8, 0, 3)]))
    assert site.management.set(20, calendar, 9, good) == SUCCESS
    bad = day_profiles(table, (1, [(8, 0, 3), (18, 0, selector)]))
    assert site.management.set(20, calendar, 9, bad) == DataAccessResult.OTHER_REASON
    assert site.management.get(20, calendar, 9) == (SUCCESS, good)
    assert site.management.get(20, calendar, 5) == (SUCCESS, Data.array([]))  # the active calendar: still empty
    site.run_until(local(2026, 6, 9, 9, 0))
    assert site.log() == [] and site.disconnector()["output"] == "connected"


def test_the_calendars_are_empty_by_default_and_only_management_writes_them(site):
    for obis in (DISCONNECT_CALENDAR, RELAY_CALENDAR):
        assert site.management.get(20, obis, 3) == (SUCCESS, Data.array([]))
    data_readout = ClientSession(site.meter, "data_readout")
    assert data_readout.get(20, DISCONNECT_CALENDAR, 9)[0] == SUCCESS
    assert data_readout.set(20, DISCONNECT_CALENDAR, 9, Data.array([])) == DataAccessResult.READ_WRITE_DENIED
    assert site.management.action(9, RELAY_SCRIPTS, 1, Data.long_unsigned(3)) != SUCCESS  # no remote execute
    assert site.meter.status()["load management calendar"] == {"next switch": None}
