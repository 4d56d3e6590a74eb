"""IC 20 Activity calendar (Blue Book 4.5.5): the active calendar from the model, the passive
one written attribute by attribute, activation by method and by time; every refused write or
activation changes neither the object nor the store, also after a restart."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.classes.ic20_activity_calendar import ActivityCalendar
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import action, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.store import MeterStore
from smartmeter.meter.tariff_calendar import Calendar, DayAction, DayProfile, Season, SeasonStart, WeekProfile

CALENDAR = Obis.parse("0-0:13.0.0.255").to_bytes()
TARIFF_SCRIPTS = Obis.parse("0-0:10.0.100.255").to_bytes()
TARIFF = Obis.parse("0-0:96.14.0.255").to_bytes()
KEY = "calendar.0-0:13.0.0.255"
VIENNA = ZoneInfo("Europe/Vienna")
CTX = RequestContext("tester", 16)

# the companion standard's example (§5.5): T1 22:00-06:00, T2 06:00-22:00, holidays T1
CALENDAR_ENTRY = {
    "name": "Tariffication Activity calendar", "class_id": 20, "obis": "0-0:13.0.0.255",
    "script_table": "0-0:10.0.100.255", "calendar_name": "T1T2",
    "seasons": [{"name": "S1", "start": "*-01-01", "week": "W1"}],
    "weeks": [{"name": "W1", "days": [1] * 7}],
    "days": [{"id": 1, "switches": [["00:00", 1], ["06:00", 2], ["22:00", 1]]},
             {"id": 2, "switches": [["00:00", 1]]}],
    "access": {"tester": {"read": "*", "write": [6, 7, 8, 9, 10], "execute": [1]}},
}


def model_doc(change: dict | None = None) -> dict:
    entry = dict(CALENDAR_ENTRY, **(change or {}))
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            {"name": "Currently active energy tariff", "class_id": 1, "obis": "0-0:96.14.0.255", "value": "tariff",
             "access": {"tester": {"read": "*"}}},
            {"name": "Tariffication script table", "class_id": 9, "obis": "0-0:10.0.100.255",
             "access": {"tester": {"read": "*"}},
             "scripts": [{"id": i, "actions": [{"service": "write", "class_id": 1, "obis": "0-0:96.14.0.255",
                                                "index": 2, "parameter": {"type": "octet-string",
                                                                          "value": f"T{i}".encode().hex()}}]}
                         for i in (1, 2)]},
            entry,
        ],
    }


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


def directory(store, change: dict | None = None):
    bindings = {"tariff": Binding(lambda: Data.octet_string(b"T2"), lambda v: None)}
    if store is not None:
        bindings["settings"] = store
    return ObjectModel.from_toml(model_doc(change)).instantiate(bindings)


def meter(store, change: dict | None = None) -> ActivityCalendar:
    return directory(store, change).by_ln[CALENDAR][1]


def time4(hour: int, minute: int) -> bytes:
    return bytes([hour, minute, 0, 0])


def every_year(month: int, day: int) -> bytes:
    # year 0xFFFF, month, day, weekday -, 00:00:00.00, deviation not specified, status -
    return bytes([0xFF, 0xFF, month, day, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])


def season(name: bytes, start: bytes, week: bytes) -> Data:
    return Data.structure([Data.octet_string(name), Data.octet_string(start), Data.octet_string(week)])


def week(name: bytes, *day_ids: int) -> Data:
    return Data.structure([Data.octet_string(name), *(Data.unsigned(i) for i in day_ids)])


def switch(start: bytes, selector: int, script: bytes = TARIFF_SCRIPTS) -> Data:
    return Data.structure([Data.octet_string(start), Data.octet_string(script), Data.long_unsigned(selector)])


def day(day_id: int, *switches: Data) -> Data:
    return Data.structure([Data.unsigned(day_id), Data.array(switches)])


NEVER = bytes([0xFF] * 9 + [0x80, 0x00, 0xFF])
MODEL_SEASONS = Data.array([season(b"S1", every_year(1, 1), b"W1")])
MODEL_WEEKS = Data.array([week(b"W1", *[1] * 7)])
MODEL_DAYS = Data.array([day(1, switch(time4(0, 0), 1), switch(time4(6, 0), 2), switch(time4(22, 0), 1)),
                         day(2, switch(time4(0, 0), 1))])
# a summer / winter calendar the head-end writes
NEW_SEASONS = Data.array([season(b"winter", every_year(1, 1), b"WW"), season(b"summer", every_year(4, 1), b"WS"),
                          season(b"winter2", every_year(10, 1), b"WW")])
NEW_WEEKS = Data.array([week(b"WW", 1, 1, 1, 1, 1, 2, 2), week(b"WS", 3, 3, 3, 3, 3, 2, 2)])
NEW_DAYS = Data.array([day(1, switch(time4(0, 0), 1), switch(time4(7, 0), 2), switch(time4(21, 0), 1)),
                       day(2, switch(time4(0, 0), 1)),
                       day(3, switch(time4(0, 0), 1), switch(time4(5, 45), 2), switch(time4(22, 15), 1))])


def attributes(calendar: ActivityCalendar) -> list[Data]:
    return [calendar.get(i, CTX) for i in range(2, 11)]


def test_the_initial_active_calendar_is_the_model_s(store):
    calendar = meter(store)
    assert attributes(calendar) == [Data.octet_string(b"T1T2"), MODEL_SEASONS, MODEL_WEEKS, MODEL_DAYS,
                                    Data.octet_string(b""), Data.array([]), Data.array([]), Data.array([]),
                                    Data.octet_string(NEVER)]
    t1, t2 = (DayAction(h, 0, 0, TARIFF_SCRIPTS, s) for h, s in ((0, 1), (6, 2)))
    assert calendar.calendar() == Calendar(
        b"T1T2", (Season(b"S1", SeasonStart(None, 1, 1), b"W1"),), (WeekProfile(b"W1", (1,) * 7),),
        (DayProfile(1, (t1, t2, DayAction(22, 0, 0, TARIFF_SCRIPTS, 1))), DayProfile(2, (t1,))))
    assert calendar.passive_calendar() == Calendar()
    assert calendar.activation_instant(VIENNA) is None


def test_every_attribute_survives_encoding(store):
    calendar = meter(store)
    for index, value in ((7, NEW_SEASONS), (8, NEW_WEEKS), (9, NEW_DAYS)):
        calendar.set(index, value, CTX)
    for index in range(1, 11):
        value = calendar.get(index, CTX)
        assert axdr.decode_all(axdr.encode(value)) == value


def write_new_passive(calendar: ActivityCalendar) -> None:
    calendar.set(6, Data.octet_string(b"summer-winter"), CTX)
    calendar.set(7, NEW_SEASONS, CTX)
    calendar.set(8, NEW_WEEKS, CTX)
    calendar.set(9, NEW_DAYS, CTX)


def test_a_written_passive_calendar_is_kept_and_activated_by_the_method(store):
    calendar = meter(store)
    write_new_passive(calendar)
    calendar = meter(store)  # a restart keeps the passive calendar
    assert attributes(calendar)[4:8] == [Data.octet_string(b"summer-winter"), NEW_SEASONS, NEW_WEEKS, NEW_DAYS]
    assert attributes(calendar)[:4] == [Data.octet_string(b"T1T2"), MODEL_SEASONS, MODEL_WEEKS, MODEL_DAYS]
    assert calendar.invoke(1, Data.integer(0), CTX) is None
    expected = [Data.octet_string(b"summer-winter"), NEW_SEASONS, NEW_WEEKS, NEW_DAYS]
    assert attributes(calendar)[:4] == expected  # active now
    assert attributes(calendar)[4:8] == expected  # and the passive stays as it was
    assert meter(store).calendar().seasons[1] == Season(b"summer", SeasonStart(None, 4, 1), b"WS")


def test_the_dlms_date_time_and_time_types_are_taken_and_read_back_as_octets(store):
    calendar = meter(store)
    calendar.set(7, Data.array([Data.structure([
        Data.octet_string(b"S"), Data(DataType.DATE_TIME, CosemDateTime(CosemDate(None, 3, 1), CosemTime(0, 0, 0, 0))),
        Data.octet_string(b"W")])]), CTX)
    calendar.set(9, Data.array([Data.structure([Data.unsigned(1), Data.array([Data.structure([
        Data(DataType.TIME, CosemTime(6, 15, None, None)), Data.octet_string(TARIFF_SCRIPTS),
        Data.long_unsigned(2)])])])]), CTX)
    calendar.set(10, Data(DataType.DATE_TIME, CosemDateTime(CosemDate(2027, 1, 1), CosemTime(0, 0, 0, 0), -60)), CTX)
    assert calendar.get(7, CTX) == Data.array([season(b"S", every_year(3, 1), b"W")])
    assert calendar.get(9, CTX) == Data.array([day(1, switch(bytes([6, 15, 0xFF, 0xFF]), 2))])
    assert calendar.get(10, CTX) == Data.octet_string(bytes([0x07, 0xEB, 1, 1, 0xFF, 0, 0, 0, 0, 0xFF, 0xC4, 0xFF]))


TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON
BAD_WRITES = [
    # (what, attribute, value, expected)
    ("overlapping seasons: the same start", 7,
     Data.array([season(b"A", every_year(1, 1), b"W"), season(b"B", every_year(1, 1), b"W")]), OTHER_REASON),
    ("seasons out of order", 7,
     Data.array([season(b"A", every_year(6, 1), b"W"), season(b"B", every_year(1, 1), b"W")]), OTHER_REASON),
    ("a season starting at 06:00", 7,
     Data.array([season(b"A", every_year(1, 1)[:5] + bytes([6]) + every_year(1, 1)[6:], b"W")]), OTHER_REASON),
    ("a season with no month", 7,
     Data.array([season(b"A", every_year(1, 1)[:2] + b"\xff" + every_year(1, 1)[3:], b"W")]), OTHER_REASON),
    ("a season start with month 13", 7,
     Data.array([season(b"A", every_year(13, 1), b"W")]), OTHER_REASON),
    ("a season start of 11 octets", 7, Data.array([season(b"A", every_year(1, 1)[:11], b"W")]), TYPE_UNMATCHED),
    ("thirteen seasons", 7, Data.array([season(bytes([m]), every_year(m, 1), b"W") for m in range(1, 13)]
                                       + [season(b"X", every_year(12, 2), b"W")]), OTHER_REASON),
    ("a season of two fields", 7, Data.array([Data.structure([Data.octet_string(b"A"),
                                                               Data.octet_string(every_year(1, 1))])]), TYPE_UNMATCHED),
    ("seasons as a structure", 7, Data.structure([season(b"A", every_year(1, 1), b"W")]), TYPE_UNMATCHED),
    ("a week of six days", 8, Data.array([week(b"W", *[1] * 6)]), TYPE_UNMATCHED),
    ("a week day as long-unsigned", 8,
     Data.array([Data.structure([Data.octet_string(b"W"), *[Data.long_unsigned(1)] * 7])]), TYPE_UNMATCHED),
    ("two weeks of one name", 8, Data.array([week(b"W", *[1] * 7), week(b"W", *[2] * 7)]), OTHER_REASON),
    ("unsorted switch times", 9, Data.array([day(1, switch(time4(6, 0), 2), switch(time4(0, 0), 1))]), OTHER_REASON),
    ("a switch time twice", 9, Data.array([day(1, switch(time4(6, 0), 2), switch(time4(6, 0), 1))]), OTHER_REASON),
    ("a switch at 06:10", 9, Data.array([day(1, switch(time4(6, 10), 2))]), OTHER_REASON),
    ("a switch with no hour", 9, Data.array([day(1, switch(bytes([0xFF, 0, 0, 0]), 2))]), OTHER_REASON),
    ("a switch at hour 24", 9, Data.array([day(1, switch(time4(24, 0), 2))]), OTHER_REASON),
    ("script 3 of the tariff script table, which has 1 and 2", 9,
     Data.array([day(1, switch(time4(0, 0), 1), switch(time4(6, 0), 3))]), OTHER_REASON),
    ("a script name that is no script table", 9, Data.array([day(1, switch(time4(0, 0), 1, TARIFF))]), OTHER_REASON),
    ("a script name of five octets", 9, Data.array([day(1, switch(time4(0, 0), 1, TARIFF_SCRIPTS[:5]))]),
     TYPE_UNMATCHED),
    ("a selector as unsigned", 9, Data.array([day(1, Data.structure([
        Data.octet_string(time4(0, 0)), Data.octet_string(TARIFF_SCRIPTS), Data.unsigned(1)]))]), TYPE_UNMATCHED),
    ("an empty day profile", 9, Data.array([day(1)]), OTHER_REASON),
    ("two day profiles of one id", 9, Data.array([day(1, switch(time4(0, 0), 1))] * 2), OTHER_REASON),
    ("thirteen switch times", 9, Data.array([day(1, *(switch(time4(h, 0), 1) for h in range(13)))]), OTHER_REASON),
    ("a day_id as long-unsigned", 9, Data.array([Data.structure([Data.long_unsigned(1), Data.array([])])]),
     TYPE_UNMATCHED),
    ("a calendar name of 33 octets", 6, Data.octet_string(b"x" * 33), OTHER_REASON),
    ("a calendar name as visible-string", 6, Data.visible_string("x"), TYPE_UNMATCHED),
    ("an activation time with a year wildcard", 10, Data.octet_string(every_year(6, 1)), OTHER_REASON),
    ("an activation on February 30th", 10,
     Data.octet_string(bytes([0x07, 0xEA, 2, 30, 0xFF, 0, 0, 0, 0, 0x80, 0, 0xFF])), OTHER_REASON),
    ("an activation time of 5 octets", 10, Data.octet_string(NEVER[:5]), TYPE_UNMATCHED),
    ("an activation time as a date", 10, Data(DataType.DATE, CosemDate(2027, 1, 1)), TYPE_UNMATCHED),
    ("the active season profile", 3, MODEL_SEASONS, DataAccessResult.READ_WRITE_DENIED),
    ("the active calendar name", 2, Data.octet_string(b"x"), DataAccessResult.READ_WRITE_DENIED),
]


@pytest.mark.parametrize("what, attribute, value, expected", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_a_malformed_write_is_refused_and_changes_nothing(store, what, attribute, value, expected):
    calendar = meter(store)
    write_new_passive(calendar)
    before = attributes(calendar), store.get(KEY)
    with pytest.raises(CosemAccessError) as refused:
        calendar.set(attribute, value, CTX)
    assert refused.value.result == expected
    assert (attributes(calendar), store.get(KEY)) == before
    assert attributes(meter(store)) == before[0]  # nor after a restart


@pytest.mark.parametrize("what, passive", [
    ("a season naming an unknown week", {7: Data.array([season(b"S", every_year(1, 1), b"nowhere")])}),
    ("a week naming an unknown day profile", {8: Data.array([week(b"WW", 1, 1, 1, 1, 1, 2, 9),
                                                              week(b"WS", *[3] * 7)])}),
])
def test_an_inconsistent_passive_calendar_is_not_activated(store, what, passive):
    calendar = meter(store)
    write_new_passive(calendar)
    for index, value in passive.items():
        calendar.set(index, value, CTX)  # each attribute alone is fine
    before = attributes(calendar), store.get(KEY)
    with pytest.raises(CosemAccessError) as refused:
        calendar.invoke(1, Data.integer(0), CTX)
    assert refused.value.result == OTHER_REASON
    assert (attributes(calendar), store.get(KEY)) == before


def test_the_method_takes_integer_data(store):
    calendar = meter(store)
    with pytest.raises(CosemAccessError) as refused:
        calendar.invoke(1, Data.unsigned(0), CTX)
    assert refused.value.result == TYPE_UNMATCHED
    assert attributes(calendar)[0] == Data.octet_string(b"T1T2")


def local(text: str, zone: ZoneInfo = VIENNA) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


@pytest.mark.parametrize("written, due_at", [
    # 2026-06-01 00:00:00 without deviation: Vienna local time (CEST)
    (bytes([0x07, 0xEA, 6, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF]), "2026-05-31 22:00:00"),
    # with deviation -60 (local = UTC + 1 h): 23:00 UTC
    (bytes([0x07, 0xEA, 6, 1, 0xFF, 0, 0, 0, 0, 0xFF, 0xC4, 0xFF]), "2026-05-31 23:00:00"),
])
def test_activation_at_the_activation_time_happens_once(store, written, due_at):
    calendar = meter(store)
    write_new_passive(calendar)
    calendar.set(10, Data.octet_string(written), CTX)
    at = dt.datetime.fromisoformat(due_at).replace(tzinfo=dt.timezone.utc).timestamp()
    assert meter(store).activation_instant(VIENNA) == at  # kept across a restart
    assert calendar.activate_if_due(at - 1, VIENNA) is False
    assert attributes(calendar)[0] == Data.octet_string(b"T1T2")
    assert calendar.activate_if_due(at, VIENNA) is True
    assert attributes(calendar)[:4] == [Data.octet_string(b"summer-winter"), NEW_SEASONS, NEW_WEEKS, NEW_DAYS]
    assert calendar.get(10, CTX) == Data.octet_string(NEVER)
    # a passive calendar written afterwards is not activated by the past time
    calendar.set(6, Data.octet_string(b"later"), CTX)
    assert calendar.activate_if_due(at + 3600, VIENNA) is False
    assert meter(store).get(2, CTX) == Data.octet_string(b"summer-winter")


def test_an_inconsistent_passive_calendar_at_its_time_is_not_activated_and_not_retried(store):
    calendar = meter(store)
    calendar.set(7, Data.array([season(b"S", every_year(1, 1), b"nowhere")]), CTX)
    calendar.set(10, Data.octet_string(bytes([0x07, 0xEA, 6, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])), CTX)
    with pytest.raises(CosemAccessError):
        calendar.activate_if_due(local("2026-06-01 00:00:00"), VIENNA)
    assert attributes(calendar)[:4] == [Data.octet_string(b"T1T2"), MODEL_SEASONS, MODEL_WEEKS, MODEL_DAYS]
    assert calendar.get(10, CTX) == Data.octet_string(NEVER)
    assert calendar.activate_if_due(local("2026-06-02 00:00:00"), VIENNA) is False


@pytest.mark.parametrize("change, message", [
    ({"days": [{"id": 1, "switches": [["00:00", 1], ["06:00", 3]]}]}, "no script 3"),
    ({"days": [{"id": 1, "switches": [["06:00", 2], ["00:00", 1]]}]}, "unsorted"),
    ({"weeks": [{"name": "W9", "days": [1] * 7}]}, "unknown week"),
    ({"seasons": [{"name": "S1", "start": "01-01", "week": "W1"}]}, "season is"),
    ({"days": [{"id": 1, "switches": [["6:00", 2]]}]}, "a switch is"),
    ({"script_table": "0-0:96.14.0.255"}, "not a script table"),
    ({"activate_passive_calendar_time": "2027-01-01"}, "activate_passive_calendar_time"),
])
def test_a_malformed_model_entry_stops_the_start(store, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, change)


def test_a_stored_calendar_edited_outside_the_meter_stops_the_start(store):
    write_new_passive(meter(store))
    record = store.get(KEY)
    record["active"]["days"][0][1][1][2] = 3  # selector 3 does not exist
    store.put(KEY, record)
    with pytest.raises(ScriptConfigError, match="stored"):
        meter(store)


def test_without_a_store_the_calendar_is_fixed():
    calendar = meter(None)
    with pytest.raises(CosemAccessError) as refused:
        calendar.set(6, Data.octet_string(b"x"), CTX)
    assert refused.value.result == DataAccessResult.READ_WRITE_DENIED


def test_over_the_wire(store):
    server = DlmsServer(directory(store), system_title=b"TESTMETR")
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))
    for index, value in ((7, NEW_SEASONS), (8, NEW_WEEKS), (9, NEW_DAYS)):
        request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(20, CALENDAR, index), None, value)
        assert decode_xdlms(association.handle(request.to_bytes())).result == DataAccessResult.SUCCESS
    request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(20, CALENDAR, 3), None, NEW_SEASONS)
    assert decode_xdlms(association.handle(request.to_bytes())).result == DataAccessResult.READ_WRITE_DENIED
    request = action.ActionRequestNormal(0xC1, CosemMethodDescriptor(20, CALENDAR, 1), Data.integer(0))
    response = decode_xdlms(association.handle(request.to_bytes()))
    assert response.result == 0  # success
    assert meter(store).get(3, CTX) == NEW_SEASONS
