"""Bad tariff settings from the head-end over a real socket (companion §5.5): each gets the
data-access-result the meter defines, nothing changes, and only what was accepted is a
configuration event (IdDetail of the SET in the configuration log 0-0:99.98.10.255).

The management client writes; every expectation (what is invalid and why) is from the
companion standard and the Blue Book, written here.
"""
from __future__ import annotations

import asyncio

import pytest

from meterproc import start_meter
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import ActionResult, DataAccessResult
from smartmeter.dlms.client import AccessDenied
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials

CALENDAR, SPECIAL_DAYS, ACTIVATION, TARIFF_SCRIPTS = "0-0:13.0.0.255", "0-0:11.0.0.255", "0-0:14.0.1.255", "0-0:10.0.100.255"
SCRIPTS_LN = bytes([0, 0, 10, 0, 100, 255])
CONFIGURATION_LOG = "0-0:99.98.10.255"


def time4(hour: int, minute: int) -> bytes:
    return bytes([hour, minute, 0, 0])


def every_year(month: int, day: int) -> bytes:
    return bytes([0xFF, 0xFF, month, day, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])


def switch(hour: int, minute: int, selector: int) -> Data:
    return Data.structure([Data.octet_string(time4(hour, minute)), Data.octet_string(SCRIPTS_LN),
                           Data.long_unsigned(selector)])


def season(name: bytes, month: int, day: int) -> Data:
    return Data.structure([Data.octet_string(name), Data.octet_string(every_year(month, day)), Data.octet_string(b"W")])


def special_day(index: int, day_of_year: int) -> Data:
    month, day = divmod(day_of_year, 28)
    return Data.structure([Data.long_unsigned(index), Data.octet_string(bytes([0xFF, 0xFF, month + 1, day + 1, 0xFF])),
                           Data.unsigned(2)])


OTHER = DataAccessResult.OTHER_REASON
BAD_WRITES = [
    ("seasons that overlap (two start on April 1)", CALENDAR, 7,
     Data.array([season(b"A", 4, 1), season(b"B", 4, 1)]), OTHER),
    ("a day profile with unsorted switch times", CALENDAR, 9,
     Data.array([Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1), switch(22, 0, 1), switch(6, 0, 2)])])]),
     OTHER),
    ("a switch that is not on a quarter hour", CALENDAR, 9,
     Data.array([Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1), switch(6, 10, 2)])])]), OTHER),
    ("a day profile naming script 3 of the tariff script table", CALENDAR, 9,
     Data.array([Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 3)])])]), OTHER),
    ("a day profile as a structure, not an array", CALENDAR, 9,
     Data.structure([Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1)])])]), DataAccessResult.TYPE_UNMATCHED),
    ("201 special days on the 200-entry table", SPECIAL_DAYS, 2,
     Data.array([special_day(i, i) for i in range(201)]), OTHER),
    ("a mask naming register 9 of 8", ACTIVATION, 3,
     Data.array([Data.structure([Data.octet_string(b"T1"), Data.array([Data.unsigned(1), Data.unsigned(9)])])]), OTHER),
    ("an active mask that is not in the list", ACTIVATION, 4, Data.octet_string(b"T3"), OTHER),
]


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("tariff-bad-input") / "meter")
    yield m
    m.stop()


def session(meter, work):
    credentials = load_credentials(meter.data_dir / "credentials" / "management.json")

    async def go():
        async with MeterClient(WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap,
                                           credentials.server_sap, 10), security=credentials.security) as client:
            return await work(client)

    return asyncio.run(go())


async def configuration_details(client) -> list[bytes]:
    _, buffer = await client.profile(CONFIGURATION_LOG)
    return [row.value[-1] for row in buffer.value]


def test_refused_tariff_settings_change_nothing_and_only_an_accepted_one_is_logged(meter):
    async def work(client):
        before_log = await configuration_details(client)
        refused = []
        for what, obis, index, value, expected in BAD_WRITES:
            before = await client.get(obis, index)
            try:
                await client.set(obis, index, value)
            except AccessDenied as exc:
                refused.append((what, exc.result))
            else:
                refused.append((what, "accepted"))
            assert await client.get(obis, index) == before, what
        # script 3 of the tariff script table does not exist: the execute is refused
        try:
            await client.action(TARIFF_SCRIPTS, 1, Data.long_unsigned(3))
            executed = "accepted"
        except AccessDenied as exc:
            executed = exc.result
        after_refusals = await configuration_details(client)
        good = Data.array([Data.structure([Data.unsigned(1), Data.array([switch(0, 0, 1), switch(7, 15, 2)])])])
        await client.set(CALENDAR, 9, good)
        return before_log, refused, executed, after_refusals, await configuration_details(client), \
            await client.get(CALENDAR, 9), good

    before_log, refused, executed, after_refusals, after_good, read_back, good = session(meter, work)
    assert refused == [(what, expected) for what, _, _, _, expected in BAD_WRITES]
    assert executed == ActionResult.OTHER_REASON
    assert after_refusals == before_log  # no configuration event for what was refused
    assert read_back == good
    new = after_good[len(before_log):]
    assert len(new) == 1  # the one accepted SET: IdDetail {service 1 (set), class 20, 0-0:13.0.0.255, attribute 9}
    service, class_id, ln, attribute = (v.value for v in new[0].value)
    assert (service, class_id, ln, attribute) == (1, 20, bytes([0, 0, 13, 0, 0, 255]), 9)
