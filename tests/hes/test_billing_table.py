"""The billing profile as a table (hes/billing.py): rows built here the way the meter captures
them (companion §5.6, 26 capture objects) become billing periods, a terminal table with the
rates in columns, CSV and JSON; columns are found by capture object, not by position."""
from __future__ import annotations

import csv
import datetime as dt
import io
import random

import pytest

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.hes.billing import (
    BillingEntry, BillingProfileError, billing_entries, billing_table, column_keys, csv_header, csv_rows,
    entry_to_dict, write_billing_csv,
)

CET = dt.timezone(dt.timedelta(hours=1))
# date-time bytes written out: year(2) month day weekday h m s hundredths deviation(2) status
FEB_1_2027 = bytes([0x07, 0xEB, 2, 1, 1, 0, 0, 0, 0, 0xFF, 0xC4, 0x00])        # Monday 00:00 CET (deviation -60)
JAN_15_2027_1815 = bytes([0x07, 0xEB, 1, 15, 5, 18, 15, 0, 0, 0xFF, 0xC4, 0x00])
MAR_1_2027_1507 = bytes([0x07, 0xEB, 3, 1, 1, 15, 7, 33, 0, 0xFF, 0xC4, 0x00])  # a reset by hand, seconds and all
NOT_SPECIFIED = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0xFF])

ENERGY = ["+A", "-A", "+R", "-R"]
POWER = ["+P", "-P", "+Q", "-Q"]


def capture(class_id: int, obis: str, attribute: int) -> Data:
    return Data.structure([Data.long_unsigned(class_id), Data.octet_string(Obis.parse(obis).to_bytes()),
                           Data.integer(attribute), Data.long_unsigned(0)])


# The companion's order: clock, counter, (+A, -A, +R, -R) x (total, rate 1, rate 2), (+P..-Q) x (max, its
# time), cumulative maxima.
CAPTURE_OBJECTS = [(8, "0-0:1.0.0.255", 2), (1, "0-0:0.1.0.255", 2)]
CAPTURE_OBJECTS += [(3, f"1-0:{c}.8.{e}.255", 2) for c in (1, 2, 3, 4) for e in (0, 1, 2)]
CAPTURE_OBJECTS += [(4, f"1-0:{c}.6.0.255", a) for c in (1, 2, 3, 4) for a in (2, 5)]
CAPTURE_OBJECTS += [(3, f"1-0:{c}.2.0.255", 2) for c in (1, 2, 3, 4)]
CAPTURE_DATA = Data.array(capture(*c) for c in CAPTURE_OBJECTS)


def period(time: bytes, counter: int, seed: int) -> dict:
    """One billing period as the test's scenario: energy per quantity split into two rates."""
    rates = {q: (1000 * seed + 10 * n + 1, 1000 * seed + 10 * n + 2) for n, q in enumerate(ENERGY)}
    return {
        "time": time, "counter": counter,
        "energy": {q: (t1 + t2, t1, t2) for q, (t1, t2) in rates.items()},
        "max": {"+P": (4500 + seed, JAN_15_2027_1815), "-P": (0, NOT_SPECIFIED),
                "+Q": (300, MAR_1_2027_1507), "-Q": (0, NOT_SPECIFIED)},
        "cum": {"+P": 12000 + seed, "-P": 0, "+Q": 900, "-Q": 7},
    }


def as_row(p: dict) -> list:
    """The plain values of a buffer row in CAPTURE_OBJECTS order."""
    row = [p["time"], p["counter"]]
    row += [p["energy"][q][rate] for q in ENERGY for rate in range(3)]
    row += [v for q in POWER for v in p["max"][q]]
    row += [p["cum"][q] for q in POWER]
    return row


def as_data(row: list) -> Data:
    types = [Data.octet_string, Data.unsigned] + [Data.double_long_unsigned] * 12
    types += [Data.double_long_unsigned, Data.octet_string] * 4 + [Data.double_long_unsigned] * 4
    return Data.structure(t(v) for t, v in zip(types, row, strict=True))


PERIODS = [period(FEB_1_2027, 1, 1), period(MAR_1_2027_1507, 2, 2)]
BUFFER = Data.array(as_data(as_row(p)) for p in PERIODS)


def aware(raw: bytes) -> dt.datetime | None:
    if raw == NOT_SPECIFIED:
        return None
    year, month, day, hour, minute, second = (raw[0] << 8 | raw[1]), raw[2], raw[3], raw[5], raw[6], raw[7]
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=CET)


def test_rows_become_billing_periods():
    entries = billing_entries(CAPTURE_DATA, BUFFER)
    assert len(entries) == 2
    for entry, p in zip(entries, PERIODS):
        assert entry.time == aware(p["time"])
        assert entry.counter == p["counter"]
        assert entry.energy == p["energy"]
        assert entry.max_demand == {q: (v, aware(t)) for q, (v, t) in p["max"].items()}
        assert entry.cumulative_max == p["cum"]


def test_plain_rows_and_tuple_capture_objects_give_the_same():
    plain = [tuple(as_row(p)) for p in PERIODS]  # what MeterClient.profile(rows=True) gives
    assert billing_entries(CAPTURE_OBJECTS, plain) == billing_entries(CAPTURE_DATA, BUFFER)
    assert billing_entries(CAPTURE_DATA, list(BUFFER.value)) == billing_entries(CAPTURE_DATA, BUFFER)


def test_columns_are_found_by_capture_object_in_any_order_or_subset():
    order = list(range(len(CAPTURE_OBJECTS)))
    random.Random(7).shuffle(order)
    shuffled = [CAPTURE_OBJECTS[i] for i in order]
    rows = [[as_row(p)[i] for i in order] for p in PERIODS]
    assert billing_entries(shuffled, rows) == billing_entries(CAPTURE_DATA, BUFFER)
    # selected values: only the clock and +A's rates
    subset = [0, 3, 4]
    entry = billing_entries([CAPTURE_OBJECTS[i] for i in subset], [[as_row(PERIODS[0])[i] for i in subset]])[0]
    assert entry.time == aware(FEB_1_2027) and entry.counter is None
    assert entry.energy["+A"] == (None, PERIODS[0]["energy"]["+A"][1], PERIODS[0]["energy"]["+A"][2])
    assert entry.energy["-A"] == (None, None, None)
    assert entry.max_demand["+P"] == (None, None) and entry.cumulative_max["+P"] is None


def test_a_capture_object_the_table_does_not_know_is_left_out():
    extra = CAPTURE_OBJECTS + [(1, "0-0:96.14.0.255", 2)]
    rows = [as_row(p) + [b"T1"] for p in PERIODS]
    assert billing_entries(extra, rows) == billing_entries(CAPTURE_DATA, BUFFER)
    assert column_keys(extra)[-1] is None
    # a data index other than 0 names a part of the attribute: not the value the table shows
    assert column_keys([(3, "1-0:1.8.0.255", 2, 1)]) == [None]


def test_null_data_and_not_specified_times_are_empty():
    row = as_row(PERIODS[0])
    row[2] = None
    entry = billing_entries(CAPTURE_OBJECTS, [row])[0]
    assert entry.energy["+A"][0] is None
    assert entry.max_demand["-P"] == (0, None)


def table_lines(entries) -> list[list[str]]:
    return [line.split() for line in billing_table(entries).splitlines()]


def test_the_terminal_table_has_the_rates_in_columns():
    entries = billing_entries(CAPTURE_DATA, BUFFER)
    lines = billing_table(entries).splitlines()
    assert lines[0].split() == ["counter", "captured", "energy", "total", "T1", "T2", "max", "demand", "at",
                                "cum.", "max"]
    assert lines[-1] == "2 billing periods"
    body = lines[1:-1]
    assert len(body) == 8  # four lines a period
    for k, p in enumerate(PERIODS):
        block = body[4 * k:4 * k + 4]
        first = block[0].split()
        assert first[:3] == [str(p["counter"]), aware(p["time"]).strftime("%Y-%m-%d"),
                             aware(p["time"]).strftime("%H:%M:%S+01:00")]
        for line, quantity, unit, power, power_unit in zip(block, ENERGY, ["Wh", "Wh", "varh", "varh"], POWER,
                                                           ["W", "W", "var", "var"]):
            fields = line.split()[3:] if line is block[0] else line.split()
            value, when = p["max"][power]
            expected = [quantity, unit, *map(str, p["energy"][quantity]), power, power_unit, str(value)]
            expected += ["-"] if aware(when) is None else aware(when).isoformat(sep=" ").split()
            expected += [str(p["cum"][power])]
            assert fields == expected
        # the columns line up: every value of one column ends where the header's title does
        header = lines[0]
        for title in ("total", "T1", "T2"):
            end = header.index(f" {title} ") + len(title) + 1 if title != "total" else header.index("total") + 5
            for line in block:
                assert line[end - 1] != " " and (len(line) == end or line[end] == " "), (title, line)


def test_an_empty_profile_says_so():
    assert billing_table([]) == "no billing periods stored\n"
    assert billing_table(billing_entries(CAPTURE_DATA, Data.array([]))) == "no billing periods stored\n"


def test_csv_has_one_row_per_period_and_every_value_in_its_own_column():
    entries = billing_entries(CAPTURE_DATA, BUFFER)
    out = io.StringIO()
    write_billing_csv(entries, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == csv_header()
    assert len(csv_header()) == 26
    for row, p in zip(rows, PERIODS, strict=True):
        assert row["time"] == aware(p["time"]).isoformat()
        assert row["counter"] == str(p["counter"])
        for quantity, unit in zip(ENERGY, ["Wh", "Wh", "varh", "varh"]):
            for rate, name in enumerate(["total", "T1", "T2"]):
                assert row[f"{quantity} {name} {unit}"] == str(p["energy"][quantity][rate])
        for power, unit in zip(POWER, ["W", "W", "var", "var"]):
            value, when = p["max"][power]
            assert row[f"max {power} {unit}"] == str(value)
            assert row[f"max {power} time"] == ("" if aware(when) is None else aware(when).isoformat())
            assert row[f"cum max {power} {unit}"] == str(p["cum"][power])
    assert csv_rows(entries) == [list(r.values()) for r in rows]


def test_json_form_of_a_period():
    entry = billing_entries(CAPTURE_DATA, BUFFER)[0]
    p = PERIODS[0]
    assert entry_to_dict(entry) == {
        "time": "2027-02-01T00:00:00+01:00", "counter": 1,
        "energy": {q: dict(zip(["total", "T1", "T2"], p["energy"][q])) for q in ENERGY},
        "max_demand": {"+P": {"value": p["max"]["+P"][0], "time": "2027-01-15T18:15:00+01:00"},
                       "-P": {"value": 0, "time": None},
                       "+Q": {"value": 300, "time": "2027-03-01T15:07:33+01:00"},
                       "-Q": {"value": 0, "time": None}},
        "cumulative_max": p["cum"],
    }


@pytest.mark.parametrize("capture_objects, rows, message", [
    (CAPTURE_OBJECTS, [as_row(PERIODS[0])[:-1]], "entry 1 has 25 values for 26 capture objects"),
    (CAPTURE_OBJECTS, [as_row(PERIODS[0])[:2] + ["12"] + as_row(PERIODS[0])[3:]],
     "entry 1, +A total Wh: '12' is not a number"),
    (CAPTURE_OBJECTS, [[b"\x07\xeb"] + as_row(PERIODS[0])[1:]], "entry 1, time: cannot decode date-time"),
    (CAPTURE_OBJECTS, Data.array([Data.array([])]), "entry 1 is array, not a structure"),
    (CAPTURE_OBJECTS, Data.structure([]), "the buffer is not an array"),
    (Data.array([Data.structure([Data.long_unsigned(3)])]), [], "capture object 1 is not {class_id, logical_name, "
                                                                 "attribute, data_index}"),
    (Data.structure([]), [], "the capture objects are not an array"),
    ([(3, "1-0:1.8", 2)], [], "capture object 1 cannot be read"),
])
def test_data_that_is_not_a_billing_profile_is_a_typed_error(capture_objects, rows, message):
    with pytest.raises(BillingProfileError) as raised:
        billing_entries(capture_objects, rows)
    assert str(raised.value).startswith(message)


def test_a_billing_entry_defaults_to_nothing_captured():
    entry = BillingEntry(None, None)
    assert csv_rows([entry]) == [[""] * 26]
    assert table_lines([entry])[1][:3] == ["-", "-", "+A"]
