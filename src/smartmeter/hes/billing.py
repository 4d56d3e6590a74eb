"""The billing profile as a table: one billing period per entry, the tariff rates in columns.

"Data of billing period 1" (0-0:98.1.0.255, companion §5.6) captures 26 values at the end of
each billing period: its time, the billing period counter, each energy quantity (+A, -A, +R,
-R) as total, rate 1 and rate 2, the maximum demand of each power quantity (+P, -P, +Q, -Q)
with its time, and their cumulative maxima. Read as a profile it is 26 anonymous columns; a
person wants to see per period which energy went into which rate. This module turns the rows
into `BillingEntry` values and those into a table for a terminal, CSV and JSON.

Columns are found by their capture object (class, logical name, attribute), not by position,
so a profile whose capture objects come in another order, or a subset of them (selected
values), is shown right; a capture object the table does not know is left out (`client
profile 0-0:98.1.0.255` shows every column as it is). Values are shown as the meter sends them:
whole Wh, varh, W and var, the scaler of this meter's registers being 0 (docs/decisions.md).
"""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TextIO

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data, DataType
from smartmeter.cosem.obis import Obis, ObisError
from smartmeter.errors import DecodeError, SmartmeterError

__all__ = [
    "BILLING_PROFILE", "BILLING_SCRIPT_TABLE", "END_OF_BILLING_PERIOD_SCRIPT", "BILLING_PERIOD_COUNTER",
    "ENERGY", "DEMAND", "RATES", "BillingProfileError", "BillingEntry", "column_keys", "billing_entries",
    "billing_table", "csv_header", "csv_rows", "write_billing_csv", "entry_to_dict",
]

BILLING_PROFILE = Obis.parse("0-0:98.1.0.255")          # IC 7 "Data of billing period 1"
BILLING_SCRIPT_TABLE = Obis.parse("0-0:10.0.1.255")     # IC 9 "MDI reset / end of billing period"
END_OF_BILLING_PERIOD_SCRIPT = 1
BILLING_PERIOD_COUNTER = Obis.parse("0-0:0.1.0.255")    # IC 1, unsigned 0..99
CLOCK = Obis.parse("0-0:1.0.0.255")

# (name, OBIS C group, unit): energy quantities and the power quantities of their demand
ENERGY = (("+A", 1, "Wh"), ("-A", 2, "Wh"), ("+R", 3, "varh"), ("-R", 4, "varh"))
DEMAND = (("+P", 1, "W"), ("-P", 2, "W"), ("+Q", 3, "var"), ("-Q", 4, "var"))
RATES = ("total", "T1", "T2")  # OBIS E group 0, 1, 2

# Column key of each capture object (class id, logical name, attribute index):
# ("time",), ("counter",), ("energy", name, rate index), ("max", name), ("max_time", name), ("cum", name)
_COLUMNS: dict[tuple[int, Obis, int], tuple] = {(8, CLOCK, 2): ("time",), (1, BILLING_PERIOD_COUNTER, 2): ("counter",)}
for _name, _c, _unit in ENERGY:
    for _rate in range(len(RATES)):
        _COLUMNS[(3, Obis(1, 0, _c, 8, _rate), 2)] = ("energy", _name, _rate)
for _name, _c, _unit in DEMAND:
    _COLUMNS[(4, Obis(1, 0, _c, 6, 0), 2)] = ("max", _name)
    _COLUMNS[(4, Obis(1, 0, _c, 6, 0), 5)] = ("max_time", _name)
    _COLUMNS[(3, Obis(1, 0, _c, 2, 0), 2)] = ("cum", _name)


class BillingProfileError(SmartmeterError):
    """Billing profile data that cannot be read as billing periods (shape or value types)."""


@dataclass(frozen=True)
class BillingEntry:
    """One billing period as captured. None: not captured (column absent), null-data, or a
    time the meter sent as "not specified" (a maximum demand that never occurred)."""

    time: dt.datetime | None
    counter: int | None
    energy: dict[str, tuple[int | None, int | None, int | None]] = field(default_factory=dict)  # "+A": total, T1, T2
    max_demand: dict[str, tuple[int | None, dt.datetime | None]] = field(default_factory=dict)  # "+P": value, time
    cumulative_max: dict[str, int | None] = field(default_factory=dict)                         # "+P": value


def _capture_object(item: Any, position: int) -> tuple[int, Obis, int, int]:
    """(class id, logical name, attribute, data index) of one capture object, as Data
    {class_id, logical_name, attribute_index, data_index} or a tuple (class_id, obis, attribute)."""
    try:
        if isinstance(item, Data):
            fields = [f.value for f in item.value] if item.type == DataType.STRUCTURE else None
            if fields is None or len(fields) != 4:
                raise BillingProfileError(f"capture object {position} is not {{class_id, logical_name, attribute, "
                                          "data_index}}")
            class_id, ln, attribute, data_index = fields
        else:
            class_id, ln, attribute, *rest = item
            data_index = rest[0] if rest else 0
        obis = ln if isinstance(ln, Obis) else Obis.parse(ln) if isinstance(ln, str) else Obis.from_bytes(ln)
        return int(class_id), obis, int(attribute), int(data_index)
    except (TypeError, ValueError, ObisError) as exc:
        raise BillingProfileError(f"capture object {position} cannot be read ({exc})") from None


def column_keys(capture_objects: Data | Sequence[Any]) -> list[tuple | None]:
    """The table column each capture object fills (None: one the table does not show)."""
    items = capture_objects.value if isinstance(capture_objects, Data) else capture_objects
    if isinstance(capture_objects, Data) and capture_objects.type != DataType.ARRAY:
        raise BillingProfileError("the capture objects are not an array")
    keys = []
    for position, item in enumerate(items, 1):
        class_id, obis, attribute, data_index = _capture_object(item, position)
        keys.append(_COLUMNS.get((class_id, obis, attribute)) if data_index == 0 else None)
    return keys


def _moment(value: Any, where: str) -> dt.datetime | None:
    """A capture or demand time: octet-string(12), date-time or datetime; None when "not specified"."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            value = axdr.decode_date_time(value)
        except DecodeError as exc:
            raise BillingProfileError(f"{where}: {exc}") from None
    if isinstance(value, CosemDateTime):
        try:
            return value.to_datetime()
        except ValueError:  # fields not specified: a maximum that has no time yet
            return None
    raise BillingProfileError(f"{where}: {type(value).__name__} is not a date-time")


def _number(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BillingProfileError(f"{where}: {value!r} is not a number")


def _row_values(row: Any, position: int) -> Sequence[Any]:
    if isinstance(row, Data):
        if row.type != DataType.STRUCTURE:
            raise BillingProfileError(f"entry {position} is {row.type.name.lower()}, not a structure")
        return [item.value for item in row.value]
    return row


def billing_entries(capture_objects: Data | Sequence[Any], rows: Data | Iterable[Any]) -> list[BillingEntry]:
    """Billing periods from a billing profile's capture objects (attribute 3) and buffer rows
    (attribute 2 as Data, or rows of plain values as `MeterClient.profile(rows=True)` gives)."""
    keys = column_keys(capture_objects)
    if isinstance(rows, Data):
        if rows.type != DataType.ARRAY:
            raise BillingProfileError("the buffer is not an array")
        rows = rows.value
    entries = []
    for position, row in enumerate(rows, 1):
        values = _row_values(row, position)
        if len(values) != len(keys):
            raise BillingProfileError(f"entry {position} has {len(values)} values for {len(keys)} capture objects")
        time = counter = None
        energy = {name: [None, None, None] for name, _, _ in ENERGY}
        maxima = {name: [None, None] for name, _, _ in DEMAND}
        cumulative: dict[str, int | None] = {name: None for name, _, _ in DEMAND}
        for key, value in zip(keys, values):
            if key is None:
                continue
            where = f"entry {position}, {_column_name(key)}"
            kind = key[0]
            if kind == "time":
                time = _moment(value, where)
            elif kind == "counter":
                counter = _number(value, where)
            elif kind == "energy":
                energy[key[1]][key[2]] = _number(value, where)
            elif kind == "max":
                maxima[key[1]][0] = _number(value, where)
            elif kind == "max_time":
                maxima[key[1]][1] = _moment(value, where)
            else:
                cumulative[key[1]] = _number(value, where)
        entries.append(BillingEntry(time, counter, {k: tuple(v) for k, v in energy.items()},
                                    {k: tuple(v) for k, v in maxima.items()}, cumulative))
    return entries


_UNITS = {name: unit for name, _, unit in ENERGY + DEMAND}


def _column_name(key: tuple) -> str:
    kind = key[0]
    if kind in ("time", "counter"):
        return kind
    if kind == "energy":
        return f"{key[1]} {RATES[key[2]]} {_UNITS[key[1]]}"
    if kind == "max":
        return f"max {key[1]} {_UNITS[key[1]]}"
    if kind == "max_time":
        return f"max {key[1]} time"
    return f"cum max {key[1]} {_UNITS[key[1]]}"


# The CSV's (and JSON's) columns: every value of the billing profile, in the companion's order.
_CSV_KEYS: tuple[tuple, ...] = (
    ("time",), ("counter",),
    *(("energy", name, rate) for name, _, _ in ENERGY for rate in range(len(RATES))),
    *(k for name, _, _ in DEMAND for k in (("max", name), ("max_time", name))),
    *(("cum", name) for name, _, _ in DEMAND),
)


def csv_header() -> list[str]:
    """Column names: time, counter, "+A total Wh", "+A T1 Wh", ..., "max +P W", "max +P time",
    ..., "cum max +P W", ..."""
    return [_column_name(key) for key in _CSV_KEYS]


def _value_of(entry: BillingEntry, key: tuple) -> Any:
    kind = key[0]
    if kind == "time":
        return entry.time
    if kind == "counter":
        return entry.counter
    if kind == "energy":
        return entry.energy.get(key[1], (None,) * 3)[key[2]]
    if kind in ("max", "max_time"):
        return entry.max_demand.get(key[1], (None, None))[0 if kind == "max" else 1]
    return entry.cumulative_max.get(key[1])


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def csv_rows(entries: Iterable[BillingEntry]) -> list[list[str]]:
    """One CSV row per billing period (times in ISO 8601, missing values empty)."""
    return [[_csv_text(_value_of(entry, key)) for key in _CSV_KEYS] for entry in entries]


def write_billing_csv(entries: Iterable[BillingEntry], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(csv_header())
    writer.writerows(csv_rows(entries))


def entry_to_dict(entry: BillingEntry) -> dict[str, Any]:
    """A billing period for JSON: times in ISO 8601, values in Wh/varh and W/var."""
    def iso(value: dt.datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "time": iso(entry.time), "counter": entry.counter,
        "energy": {name: dict(zip(RATES, entry.energy.get(name, (None,) * 3))) for name, _, _ in ENERGY},
        "max_demand": {name: {"value": entry.max_demand.get(name, (None, None))[0],
                              "time": iso(entry.max_demand.get(name, (None, None))[1])} for name, _, _ in DEMAND},
        "cumulative_max": {name: entry.cumulative_max.get(name) for name, _, _ in DEMAND},
    }


# -- the terminal table -------------------------------------------------------------------------
# Four lines per billing period, one per energy quantity with its rates in columns, next to it
# the maximum demand of the matching power quantity (+A with +P, ...), its time and cumulative max.

_TIME_WIDTH = 25  # 2027-01-15 18:15:00+01:00


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _line(counter: str, time: str, energy: str, total: str, t1: str, t2: str, power: str, maximum: str, at: str,
          cumulative: str) -> str:
    return (f"{counter:>7}  {time:<{_TIME_WIDTH}}  {energy:<7} {total:>11} {t1:>11} {t2:>11}  "
            f"{power:<6} {maximum:>10}  {at:<{_TIME_WIDTH}}  {cumulative:>10}").rstrip()


def billing_table(entries: Sequence[BillingEntry]) -> str:
    """The billing periods as plain text for a terminal, oldest first, with a count at the end:
    per period one line per energy quantity (+A, -A, +R, -R) with total and rates, and next to
    it the maximum demand of the matching power quantity (+P, -P, +Q, -Q), when it occurred and
    the cumulative maximum."""
    if not entries:
        return "no billing periods stored\n"
    lines = [f"{'counter':>7}  {'captured':<{_TIME_WIDTH}}  {'energy':<7} {'total':>11} {'T1':>11} {'T2':>11}  "
             f"{'max demand':<17}  {'at':<{_TIME_WIDTH}}  {'cum. max':>10}"]
    for entry in entries:
        for n, ((name, _, unit), (power, _, power_unit)) in enumerate(zip(ENERGY, DEMAND)):
            total, t1, t2 = entry.energy.get(name, (None,) * 3)
            value, when = entry.max_demand.get(power, (None, None))
            lines.append(_line(
                _shown(entry.counter) if n == 0 else "", _shown(entry.time) if n == 0 else "", f"{name} {unit}",
                _shown(total), _shown(t1), _shown(t2), f"{power} {power_unit}", _shown(value), _shown(when),
                _shown(entry.cumulative_max.get(power))))
    lines.append(f"{len(entries)} billing period{'s' if len(entries) != 1 else ''}")
    return "\n".join(lines) + "\n"
