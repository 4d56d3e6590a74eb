"""IC 11 Special days table (Blue Book 4.5.4): the Austrian holidays by default, written as a
whole or entry by entry, exactly 200 entries; a refused change changes neither the object nor
the store, also after a restart."""
from __future__ import annotations

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.classes.ic11_special_days_table import SpecialDaysTable
from smartmeter.cosem.data import CosemDate, Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import DataAccessResult
from smartmeter.meter.store import MeterStore
from smartmeter.meter.tariff_calendar import SpecialDay

TABLE = Obis.parse("0-0:11.0.0.255").to_bytes()
KEY = "special_days.0-0:11.0.0.255"
CTX = RequestContext("tester", 16)
TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON


def model_doc(change: dict | None = None) -> dict:
    entry = {"name": "Tariffication Special days table", "class_id": 11, "obis": "0-0:11.0.0.255",
             "entries": "austrian_holidays", "access": {"tester": {"read": "*", "write": [2], "execute": [1, 2]}}}
    entry.update(change or {})
    return {"profile": {"name": "test"}, "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
            "object": [entry]}


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


def meter(store, change: dict | None = None) -> SpecialDaysTable:
    bindings = {} if store is None else {"settings": store}
    return ObjectModel.from_toml(model_doc(change)).instantiate(bindings).by_ln[TABLE][1]


def date(year: int | None, month: int, day: int, weekday: int = 0xFF) -> bytes:
    year = 0xFFFF if year is None else year
    return bytes([year >> 8, year & 0xFF, month, day, weekday])


def entry(index: int, when: bytes, day_id: int = 2) -> Data:
    return Data.structure([Data.long_unsigned(index), Data.octet_string(when), Data.unsigned(day_id)])


def test_the_default_entries_are_the_austrian_holidays(store):
    table = meter(store)
    entries = table.get(2, CTX).value
    assert len(entries) == 113
    fixed = [(1, 1), (1, 6), (5, 1), (8, 15), (10, 26), (11, 1), (12, 8), (12, 25), (12, 26)]
    assert entries[:9] == tuple(entry(i, date(None, m, d)) for i, (m, d) in enumerate(fixed, start=1))
    # 2026 as printed in the Austrian calendar: Easter Monday, Ascension, Whit Monday, Corpus Christi
    in_2026 = [e.value[1].value for e in entries if e.value[1].value[:2] == bytes([0x07, 0xEA])]
    assert in_2026 == [date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25), date(2026, 6, 4)]
    assert {e.value[1].value[:2] for e in entries[9:]} == {bytes([y >> 8, y & 0xFF]) for y in range(2025, 2051)}
    assert [e.value[0].value for e in entries] == list(range(1, 114))
    assert {e.value[2].value for e in entries} == {2}
    assert SpecialDay(1, None, 1, 1, 2) in table.special_days()
    assert SpecialDay(14, 2026, 4, 6, 2) in table.special_days()  # 9 fixed, 4 of 2025, then 2026's first


def test_the_holiday_day_id_and_years_may_be_chosen(store):
    table = meter(store, {"holiday_day_id": 5, "holiday_years": [2030, 2031]})
    days = table.special_days()
    assert len(days) == 9 + 2 * 4
    assert {d.day_id for d in days} == {5}
    assert SpecialDay(10, 2030, 4, 22, 5) in days  # Easter 2030 is April 21st


def test_listed_entries(store):
    table = meter(store, {"entries": [{"index": 7, "date": "*-12-24", "day_id": 3},
                                      {"index": 2, "date": "2027-03-29", "day_id": 2}]})
    assert table.get(2, CTX) == Data.array([entry(7, date(None, 12, 24), 3), entry(2, date(2027, 3, 29))])
    assert table.special_days() == (SpecialDay(7, None, 12, 24, 3), SpecialDay(2, 2027, 3, 29, 2))


def test_a_whole_write_is_kept_across_a_restart(store):
    value = Data.array([entry(1, date(None, 1, 1)), entry(5, date(2026, 12, 31, 4), 3)])
    meter(store).set(2, value, CTX)
    table = meter(store)
    assert table.get(2, CTX) == value
    assert table.special_days() == (SpecialDay(1, None, 1, 1, 2), SpecialDay(5, 2026, 12, 31, 3, 4))


def test_insert_appends_or_replaces_and_delete_removes(store):
    table = meter(store, {"entries": [{"index": 1, "date": "*-01-01", "day_id": 2},
                                      {"index": 2, "date": "*-01-06", "day_id": 2}]})
    assert table.invoke(1, entry(9, date(2026, 4, 6)), CTX) is None
    assert table.invoke(1, entry(1, date(None, 1, 2), 3), CTX) is None  # same index: replaced in place
    expected = [entry(1, date(None, 1, 2), 3), entry(2, date(None, 1, 6)), entry(9, date(2026, 4, 6))]
    assert meter(store).get(2, CTX) == Data.array(expected)
    assert table.invoke(2, Data.long_unsigned(2), CTX) is None
    assert table.invoke(2, Data.long_unsigned(77), CTX) is None  # not in the table: nothing to do
    assert meter(store).get(2, CTX) == Data.array([expected[0], expected[2]])


def test_the_dlms_date_type_is_taken_and_read_back_as_octets(store):
    table = meter(store)
    table.set(2, Data.array([Data.structure([Data.long_unsigned(1), Data(DataType.DATE, CosemDate(None, 5, 1)),
                                             Data.unsigned(2)])]), CTX)
    assert table.get(2, CTX) == Data.array([entry(1, date(None, 5, 1))])


def test_the_table_survives_encoding(store):
    value = meter(store).get(2, CTX)
    assert axdr.decode_all(axdr.encode(value)) == value


FULL = Data.array([entry(i, date(2030 + i // 100, 1 + i % 12, 1)) for i in range(200)])


def test_two_hundred_entries_are_taken(store):
    table = meter(store)
    table.set(2, FULL, CTX)
    table.invoke(1, entry(0, date(None, 2, 2)), CTX)  # replacing keeps 200
    assert len(meter(store).get(2, CTX).value) == 200


BAD = [
    # (what, start from the full table, method (None: write attribute 2), value, expected)
    ("a 201st entry written", False, None, Data.array([*FULL.value, entry(999, date(None, 1, 1))]), OTHER_REASON),
    ("a 201st entry inserted", True, 1, entry(999, date(None, 1, 1)), OTHER_REASON),
    ("two entries of one index", False, None, Data.array([entry(1, date(None, 1, 1)), entry(1, date(None, 1, 6))]),
     OTHER_REASON),
    ("February 30th", False, None, Data.array([entry(1, date(None, 2, 30))]), OTHER_REASON),
    ("February 29th 2027", False, None, Data.array([entry(1, date(2027, 2, 29))]), OTHER_REASON),
    ("a weekday that is not the date's", False, None, Data.array([entry(1, date(2026, 4, 6, 2))]), OTHER_REASON),
    ("month 13", False, None, Data.array([entry(1, date(None, 13, 1))]), OTHER_REASON),
    ("the last day of a month", False, None, Data.array([entry(1, date(None, 3, 0xFE))]), OTHER_REASON),
    ("a date of six octets", False, None, Data.array([entry(1, date(None, 1, 1) + b"\xff")]), TYPE_UNMATCHED),
    ("a date as a date-time", False, None, Data.array([Data.structure([
        Data.long_unsigned(1), Data.octet_string(bytes(12)), Data.unsigned(2)])]), TYPE_UNMATCHED),
    ("an index as unsigned", False, None, Data.array([Data.structure([
        Data.unsigned(1), Data.octet_string(date(None, 1, 1)), Data.unsigned(2)])]), TYPE_UNMATCHED),
    ("a day_id as long-unsigned", False, None, Data.array([Data.structure([
        Data.long_unsigned(1), Data.octet_string(date(None, 1, 1)), Data.long_unsigned(2)])]), TYPE_UNMATCHED),
    ("an entry of two fields", False, None, Data.array([Data.structure([
        Data.long_unsigned(1), Data.octet_string(date(None, 1, 1))])]), TYPE_UNMATCHED),
    ("entries as a structure", False, None, Data.structure([entry(1, date(None, 1, 1))]), TYPE_UNMATCHED),
    ("insert of an impossible date", False, 1, entry(1, date(None, 4, 31)), OTHER_REASON),
    ("insert of an array", False, 1, Data.array([entry(1, date(None, 1, 1))]), TYPE_UNMATCHED),
    ("delete by unsigned", False, 2, Data.unsigned(1), TYPE_UNMATCHED),
]


@pytest.mark.parametrize("what, full, method, value, expected", BAD, ids=[b[0] for b in BAD])
def test_a_refused_change_changes_nothing(store, what, full, method, value, expected):
    table = meter(store)
    if full:
        table.set(2, FULL, CTX)
    before = table.get(2, CTX), table.special_days(), store.get(KEY)
    with pytest.raises(CosemAccessError) as refused:
        if method is None:
            table.set(2, value, CTX)
        else:
            table.invoke(method, value, CTX)
    assert refused.value.result == expected
    assert (table.get(2, CTX), table.special_days(), store.get(KEY)) == before
    assert meter(store).get(2, CTX) == before[0]  # nor after a restart


@pytest.mark.parametrize("change, message", [
    ({"entries": [{"index": 1, "date": "*-02-30", "day_id": 2}]}, "does not exist"),
    ({"entries": [{"index": 1, "date": "01-01", "day_id": 2}]}, "yyyy-mm-dd"),
    ({"entries": "german_holidays"}, "austrian_holidays"),
    ({"holiday_years": [2050, 2025]}, "holiday_years"),
    ({"holiday_years": [2000, 2050]}, "at most 200"),  # 9 + 51 * 4 entries
])
def test_a_malformed_model_entry_stops_the_start(store, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, change)


def test_without_a_store_the_table_is_fixed():
    table = meter(None)
    with pytest.raises(CosemAccessError) as refused:
        table.invoke(2, Data.long_unsigned(1), CTX)
    assert refused.value.result == DataAccessResult.READ_WRITE_DENIED
    assert len(table.special_days()) == 113
