"""The CIP client's sending frame counter at its maximum (catalog §2.9: "at the maximum FC,
encryption fails and the FC does not increment"): the consumer push stops, and the meter says so
once in the security event log and in Alarm Register 2, through the same H1 glue `meter run --h1`
uses. Not again at the next pushes nor after a restart (an event is not re-triggered while its
root cause persists, catalog §3.9); a new consumer key ends the cause, so the next exhaustion is
reported again.

The code and bit are the manufacturer's choices written in docs/decisions.md: event 247 in the
security log, Alarm Register 2 (0-0:97.98.1.255) bit 6.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meter_sessions import SUCCESS, Sessions
from meter_site import MeterSite
from smartmeter.cli.main import _open_h1
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer
from smartmeter.hes.credentials import load_credentials
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig
from smartmeter.meter.store import MeterStore

START = dt.datetime(2026, 6, 9, 6, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
CIP_SECURITY = "0-0:43.0.103.255"
PUSH_SCRIPTS = Obis.parse("0-0:10.0.108.255").to_bytes()
CONSUMER_PUSH_SCRIPT = 8  # catalog §7: script 8 runs the consumer push setup 0-6:25.9.0.255
ALARM_REGISTER_2 = "0-0:97.98.1.255"
EXHAUSTED_CODE = 247
EXHAUSTED_BIT = 1 << 6
CIP_SAP = 103  # catalog §1.2: client SAP 0x67
MAX_COUNTER = 0xFFFFFFFF


class H1Site(MeterSite):
    """A meter with its H1 port on a pseudo-terminal, opened by the `meter run --h1` glue."""

    def __init__(self, data_dir: Path) -> None:
        self.ports = []
        super().__init__(data_dir, START)

    def open(self) -> Meter:
        meter = Meter(MeterConfig(data_dir=self.data_dir, backfill_days=0, h1_device="pty"),
                      clock=MeterClock(source=lambda: self.platform[0]))
        self.ports.append(_open_h1(meter, []))
        counters = self.session._counters if hasattr(self, "session") else {}
        self.session = Sessions(meter)
        self.session._counters = counters  # the clients go on above the counters they used
        return meter

    def close(self) -> None:
        self.meter.close()
        for port in self.ports:
            port.close()

    def set_consumer_key(self, key: bytes) -> int:
        master = load_credentials(Path(self.data_dir) / "credentials" / "management.json").master_key
        transfer = encode_key_transfer([KeyTransfer.wrap(master, KeyId.GLOBAL_UNICAST_ENCRYPTION, key)])
        return self.session("management").action(64, CIP_SECURITY, 2, transfer)

    def push_now(self) -> None:
        assert self.meter.server.run_script(PUSH_SCRIPTS, CONSUMER_PUSH_SCRIPT) == DataAccessResult.SUCCESS

    def exhausted_entries(self) -> list:
        return [e for e in self.meter.events.entries("security") if e.code == EXHAUSTED_CODE]

    def alarm_register_2(self) -> int:
        result, value = self.session("management").get(1, ALARM_REGISTER_2, 2)
        assert result == SUCCESS
        return value.value

    def clear_alarm_register_2(self) -> None:
        result = self.session("management").set(1, ALARM_REGISTER_2, 2, Data.double_long_unsigned(EXHAUSTED_BIT))
        assert result == SUCCESS


@pytest.fixture
def site(tmp_path):
    s = H1Site(tmp_path)
    assert s.set_consumer_key(bytes(range(16))) == SUCCESS
    yield s
    s.close()


def exhaust(site: H1Site) -> None:
    """Every counter value used, FFFFFFFF the last (the stored counter is the next one); the meter
    finds that at its start, and its next consumer push has no counter left: it stops."""
    site.meter.close()  # a clean stop writes the counters it used: the test's comes after
    store = MeterStore(site.data_dir)
    store.set_counter("fc.tx.cip", MAX_COUNTER + 1)
    store.close()
    site.meter = site.open()
    site.push_now()


def test_an_exhausted_counter_is_one_security_event_and_alarm_register_2_bit_6(site):
    assert site.exhausted_entries() == []
    assert site.alarm_register_2() & EXHAUSTED_BIT == 0
    exhaust(site)
    (entry,) = site.exhausted_entries()
    assert entry.time == int(START)
    assert entry.client_sap == CIP_SAP  # the client whose counter ran out
    assert site.alarm_register_2() & EXHAUSTED_BIT


def test_it_is_not_repeated_by_more_pushes_nor_by_a_restart(site):
    exhaust(site)
    site.clear_alarm_register_2()
    for _ in range(3):
        site.push_now()
    site.restart()
    site.push_now()
    assert len(site.exhausted_entries()) == 1
    assert site.alarm_register_2() & EXHAUSTED_BIT == 0  # cleared, and not raised again


def test_a_new_consumer_key_ends_it_and_the_next_exhaustion_is_reported_again(site):
    exhaust(site)
    assert site.set_consumer_key(bytes(range(100, 116))) == SUCCESS
    site.clear_alarm_register_2()
    site.push_now()  # the new key's counter starts over: pushes go again, nothing reported
    assert len(site.exhausted_entries()) == 1
    assert site.alarm_register_2() & EXHAUSTED_BIT == 0
    exhaust(site)
    assert len(site.exhausted_entries()) == 2
    assert site.alarm_register_2() & EXHAUSTED_BIT
