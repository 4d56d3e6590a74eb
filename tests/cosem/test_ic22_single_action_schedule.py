"""IC 22 Single action schedule (Blue Book 4.5.7): initial values from the model, writes over
the wire validated whole (a refused write changes neither the object nor the store), kept in
the meter's store across a restart, execution times turned into the scheduler's patterns."""
from __future__ import annotations

import pytest

from smartmeter.cosem.classes.base import Binding
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.data import CosemDate, CosemTime, Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.schedule import ExecutionTime
from smartmeter.meter.store import MeterStore
from script_models import script_test_model

TABLE = Obis.parse("0-0:10.0.109.255").to_bytes()
SCHEDULE = Obis.parse("0-0:15.0.5.255").to_bytes()
STATUS = Obis.parse("0-0:96.5.3.255").to_bytes()
WRITE_TIME = 1_773_144_000.0  # 2026-03-10 12:00 UTC


def model_doc(schedule: dict | None = None) -> dict:
    entry = {"name": "Load profile control schedule", "class_id": 22, "obis": "0-0:15.0.5.255",
             "executed_script": {"obis": "0-0:10.0.109.255", "selector": 1}, "type": 1,
             "execution_time": [{"time": "02:30:00", "date": "*-*-*"}],
             "access": {"tester": {"read": "*", "write": [2, 3, 4]}}}
    entry.update(schedule or {})
    return script_test_model(entry)


class FixedClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


def meter(store, schedule: dict | None = None):
    directory = ObjectModel.from_toml(model_doc(schedule)).instantiate(
        {"status": Binding(lambda: Data.unsigned(0), lambda v: None), "settings": store,
         "clock": FixedClock(WRITE_TIME)})
    server = DlmsServer(directory, system_title=b"TESTMETR")
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))
    return directory.by_ln[SCHEDULE][1], association


def read(association, attribute: int) -> Data:
    request = get.GetRequestNormal(0xC1, CosemAttributeDescriptor(22, SCHEDULE, attribute))
    return decode_xdlms(association.handle(request.to_bytes())).result


def write(association, attribute: int, value: Data) -> DataAccessResult:
    request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(22, SCHEDULE, attribute), None, value)
    return decode_xdlms(association.handle(request.to_bytes())).result


def when(time: bytes, date: bytes) -> Data:
    return Data.structure([Data.octet_string(time), Data.octet_string(date)])


ANY_DAY = bytes.fromhex("FFFFFFFFFF")
T0230 = bytes([2, 30, 0, 0])
T0300 = bytes([3, 0, 0, 0])


def day(year: int, month: int, dom: int, weekday: int = 0xFF) -> bytes:
    return bytes([year >> 8, year & 0xFF, month, dom, weekday])


def test_initial_values_come_from_the_model(store):
    schedule, tester = meter(store)
    assert read(tester, 2) == Data.structure([Data.octet_string(TABLE), Data.long_unsigned(1)])
    assert read(tester, 3) == Data.enum(1)
    assert read(tester, 4) == Data.array([when(bytes([2, 30, 0, 0]), ANY_DAY)])
    state = schedule.state()
    assert state.times == (ExecutionTime(2, 30, 0),)
    assert (state.revision, state.written_at) == (0, None)


def test_a_model_with_weekday_and_wildcard_fields(store):
    schedule, _ = meter(store, {"type": 5, "execution_time": [
        {"time": "*:00:00", "date": "*-*-*"}, {"time": "06:00:00", "date": "*-*-*", "weekday": 1},
        {"time": "00:00:00", "date": "2027-01-01"}]})
    assert schedule.state().times == (ExecutionTime(None, 0, 0), ExecutionTime(6, 0, 0, weekday=1),
                                      ExecutionTime(0, 0, 0, 2027, 1, 1))


@pytest.mark.parametrize("change, message", [
    ({"execution_time": [{"time": "2:30", "date": "*-*-*"}]}, "hh:mm:ss"),
    ({"execution_time": [{"time": "24:00:00", "date": "*-*-*"}]}, "hour"),
    ({"execution_time": [{"time": "02:30:00", "date": "*-02-30"}]}, "does not exist"),
    ({"type": 2, "execution_time": [{"time": "02:30:00", "date": "*-*-01"}]}, "wildcard"),
    ({"type": 1, "execution_time": [{"time": "02:30:00", "date": "*-*-*"}] * 2}, "one execution time"),
    ({"executed_script": {"obis": "0-0:96.5.3.255", "selector": 1}}, "not a script table"),
    ({"executed_script": {"obis": "0-0:10.0.109.255", "selector": 3}}, "no script 3"),
    ({"executed_script": {"obis": "0-0:10.0.109.255"}}, "executed_script"),
])
def test_a_malformed_model_entry_stops_the_start(store, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, change)


def test_a_valid_write_is_kept_across_a_restart_and_dated(store):
    _, tester = meter(store)
    assert write(tester, 3, Data.enum(5)) == DataAccessResult.SUCCESS
    times = Data.array([when(T0300, ANY_DAY), when(bytes([0, 0, 0, 0]), day(2026, 12, 1, 2))])
    assert write(tester, 4, times) == DataAccessResult.SUCCESS
    assert write(tester, 2, Data.structure([Data.octet_string(TABLE), Data.long_unsigned(2)])) == DataAccessResult.SUCCESS
    schedule, tester = meter(store)  # a new directory on the same store: the meter restarted
    assert read(tester, 3) == Data.enum(5)
    assert read(tester, 4) == times
    assert read(tester, 2) == Data.structure([Data.octet_string(TABLE), Data.long_unsigned(2)])
    state = schedule.state()
    assert state.times == (ExecutionTime(3, 0, 0), ExecutionTime(0, 0, 0, 2026, 12, 1, 2))
    # one execution_time write: revision 1, dated by the meter clock at the write
    assert (state.revision, state.written_at) == (1, WRITE_TIME)


def test_the_dlms_time_and_date_types_are_taken_and_read_back_as_octets(store):
    _, tester = meter(store)
    value = Data.array([Data.structure([Data(DataType.TIME, CosemTime(3, 0, 0, None)),
                                        Data(DataType.DATE, CosemDate(None, None, 1, None))])])
    assert write(tester, 4, value) == DataAccessResult.SUCCESS
    assert read(tester, 4) == Data.array([when(bytes([3, 0, 0, 0xFF]), bytes.fromhex("FFFFFF01FF"))])


def test_hundredths_are_kept_but_not_used(store):
    schedule, tester = meter(store)
    assert write(tester, 4, Data.array([when(bytes([3, 0, 0, 50]), ANY_DAY)])) == DataAccessResult.SUCCESS
    assert schedule.state().times == (ExecutionTime(3, 0, 0),)


def test_an_empty_list_is_allowed_for_every_type(store):
    schedule, tester = meter(store)
    for schedule_type in (1, 2, 3, 4, 5):
        assert write(tester, 4, Data.array([])) == DataAccessResult.SUCCESS
        assert write(tester, 3, Data.enum(schedule_type)) == DataAccessResult.SUCCESS
    assert schedule.state().times == ()


TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON
TOO_MANY = Data.array([when(bytes([h % 24, h // 24, 0, 0]), ANY_DAY) for h in range(33)])
BAD_WRITES = [
    # (what, setup writes, attribute, value, expected)
    ("execution_time not an array", [], 4, Data.structure([when(T0300, ANY_DAY)]), TYPE_UNMATCHED),
    ("an entry not a structure", [], 4, Data.array([Data.octet_string(T0300)]), TYPE_UNMATCHED),
    ("an entry of three", [], 4, Data.array([Data.structure([Data.octet_string(T0300)] * 3)]), TYPE_UNMATCHED),
    ("a time of three octets", [], 4, Data.array([when(T0300[:3], ANY_DAY)]), TYPE_UNMATCHED),
    ("a date of six octets", [], 4, Data.array([when(T0300, ANY_DAY + b"\xff")]), TYPE_UNMATCHED),
    ("a date as a number", [], 4, Data.array([Data.structure([Data.octet_string(T0300), Data.unsigned(1)])]),
     TYPE_UNMATCHED),
    ("hour 24", [], 4, Data.array([when(bytes([24, 0, 0, 0]), ANY_DAY)]), OTHER_REASON),
    ("minute 60", [], 4, Data.array([when(bytes([3, 60, 0, 0]), ANY_DAY)]), OTHER_REASON),
    ("second 0xFE", [], 4, Data.array([when(bytes([3, 0, 0xFE, 0]), ANY_DAY)]), OTHER_REASON),
    ("month 13", [], 4, Data.array([when(T0300, day(2026, 13, 1))]), OTHER_REASON),
    ("February 30th", [], 4, Data.array([when(T0300, day(0xFFFF, 2, 30))]), OTHER_REASON),
    ("February 29th 2027", [], 4, Data.array([when(T0300, day(2027, 2, 29))]), OTHER_REASON),
    ("a weekday that is not the date's", [], 4, Data.array([when(T0300, day(2026, 3, 10, 1))]), OTHER_REASON),
    ("the DST-begin month", [], 4, Data.array([when(T0300, day(0xFFFF, 0xFE, 1))]), OTHER_REASON),
    ("the last day of the month", [], 4, Data.array([when(T0300, day(0xFFFF, 3, 0xFE))]), OTHER_REASON),
    ("year 1969", [], 4, Data.array([when(T0300, day(1969, 3, 1))]), OTHER_REASON),
    ("a time of the wrong DLMS type", [], 4,
     Data.array([Data.structure([Data(DataType.DATE, CosemDate(None, None, 1, None)), Data.octet_string(ANY_DAY)])]),
     TYPE_UNMATCHED),
    ("more than 32 execution times", [(3, Data.enum(5))], 4, TOO_MANY, OTHER_REASON),
    ("type 1 with two times", [], 4, Data.array([when(T0300, ANY_DAY), when(T0230, ANY_DAY)]), OTHER_REASON),
    ("type 2 with two times of day", [(4, Data.array([])), (3, Data.enum(2))], 4,
     Data.array([when(T0300, day(2026, 4, 1)), when(T0230, day(2026, 5, 1))]), OTHER_REASON),
    ("type 2 with a date wildcard", [(4, Data.array([])), (3, Data.enum(2))], 4,
     Data.array([when(T0300, day(2026, 4, 1)), when(T0300, day(0xFFFF, 5, 1))]), OTHER_REASON),
    ("type 4 with a date wildcard", [(4, Data.array([])), (3, Data.enum(4))], 4,
     Data.array([when(T0230, day(2026, 4, 1)), when(T0300, day(2026, 0xFF, 1))]), OTHER_REASON),
    ("type 3 with two times of day", [(3, Data.enum(3))], 4,
     Data.array([when(T0300, ANY_DAY), when(T0230, ANY_DAY)]), OTHER_REASON),
    ("type 6", [], 3, Data.enum(6), OTHER_REASON),
    ("type 0", [], 3, Data.enum(0), OTHER_REASON),
    ("type as unsigned", [], 3, Data.unsigned(2), TYPE_UNMATCHED),
    ("type 4 for a wildcard date", [], 3, Data.enum(4), OTHER_REASON),
    ("type 1 for two times", [(3, Data.enum(5)), (4, Data.array([when(T0300, ANY_DAY), when(T0230, ANY_DAY)]))],
     3, Data.enum(1), OTHER_REASON),
    ("a script name that is not a script table", [], 2,
     Data.structure([Data.octet_string(STATUS), Data.long_unsigned(1)]), OTHER_REASON),
    ("a script name that names nothing", [], 2,
     Data.structure([Data.octet_string(bytes(6)), Data.long_unsigned(1)]), OTHER_REASON),
    ("a selector the table does not have", [], 2,
     Data.structure([Data.octet_string(TABLE), Data.long_unsigned(3)]), OTHER_REASON),
    ("a script name of five octets", [], 2,
     Data.structure([Data.octet_string(TABLE[:5]), Data.long_unsigned(1)]), TYPE_UNMATCHED),
    ("a selector as unsigned", [], 2, Data.structure([Data.octet_string(TABLE), Data.unsigned(1)]), TYPE_UNMATCHED),
    ("executed_script of one field", [], 2, Data.structure([Data.octet_string(TABLE)]), TYPE_UNMATCHED),
    ("executed_script as an array", [], 2, Data.array([Data.octet_string(TABLE), Data.long_unsigned(1)]),
     TYPE_UNMATCHED),
]


@pytest.mark.parametrize("what, setup, attribute, value, expected", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_a_malformed_write_is_refused_and_changes_nothing(store, what, setup, attribute, value, expected):
    schedule, tester = meter(store)
    for index, setup_value in setup:
        assert write(tester, index, setup_value) == DataAccessResult.SUCCESS
    before = [read(tester, i) for i in (2, 3, 4)], schedule.state(), store.get("schedule.0-0:15.0.5.255")
    assert write(tester, attribute, value) == expected
    assert ([read(tester, i) for i in (2, 3, 4)], schedule.state(), store.get("schedule.0-0:15.0.5.255")) == before
    # nor after a restart
    _, tester = meter(store)
    assert [read(tester, i) for i in (2, 3, 4)] == before[0]


def test_thirty_two_execution_times_are_taken(store):
    schedule, tester = meter(store)
    assert write(tester, 3, Data.enum(5)) == DataAccessResult.SUCCESS
    assert write(tester, 4, Data.array(TOO_MANY.value[:32])) == DataAccessResult.SUCCESS
    assert len(schedule.state().times) == 32


def test_without_a_store_the_schedule_is_fixed(tmp_path):
    directory = ObjectModel.from_toml(model_doc()).instantiate(
        {"status": Binding(lambda: Data.unsigned(0)), "clock": FixedClock(WRITE_TIME)})
    schedule = directory.by_ln[SCHEDULE][1]
    server = DlmsServer(directory, system_title=b"TESTMETR")
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))
    assert write(association, 3, Data.enum(5)) == DataAccessResult.READ_WRITE_DENIED
    assert schedule.state().type == 1


def test_a_stored_schedule_edited_outside_the_meter_stops_the_start(store):
    store.put("schedule.0-0:15.0.5.255", {"script": TABLE.hex(), "selector": 1, "type": 1,
                                          "times": [["18000000", "FFFFFFFFFF"]], "revision": 1, "written_at": 0})
    with pytest.raises(ScriptConfigError, match="stored"):
        meter(store)
