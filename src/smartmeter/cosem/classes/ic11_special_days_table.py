"""IC 11 Special days table (Blue Book 4.5.4): dates on which a day profile of the activity
calendar replaces the week profile's (public holidays: companion §5.5).

Attribute 2 `entries` is an array of {index, specialday_date, day_id}; it is written as a
whole, or changed entry by entry with method 1 `insert` (an entry with the same index is
replaced in place, a new index appended) and method 2 `delete`. The table holds exactly
`MAX_ENTRIES` entries (companion §5.5: at least 200, for the Austrian holidays up to 2050).
Initial entries come from the model, either listed or computed:

    entries = "austrian_holidays"         # smartmeter.meter.holidays; day_id 2, 2025..2050
    holiday_day_id = 2                    # optional
    holiday_years = [2025, 2050]          # optional, inclusive
    entries = [{ index = 1, date = "*-01-01", day_id = 2 }]    # or listed: yyyy-mm-dd, * = any

A change is checked as a whole (types, dates that exist, unique indexes, capacity) and stored
in one piece in the meter's settings store: a restart keeps it, a refused change changes
nothing. Dates are read back as written (a DLMS date value is taken and read back as octets).
Deleting an index that is not in the table succeeds and changes nothing, so a head-end may
repeat a delete whose answer it lost. Which day profile applies when several entries match
a date: smartmeter.meter.tariff_calendar.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect,
)
from smartmeter.cosem.classes.base import other_reason as _refuse
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.data import CosemDate, Data, DataType
from smartmeter.errors import DecodeError, EncodeError
from smartmeter.meter.holidays import FIRST_YEAR, LAST_YEAR, austrian_holidays
from smartmeter.meter.tariff_calendar import SpecialDay

MAX_ENTRIES = 200
DEFAULT_HOLIDAY_DAY_ID = 2

Entry = tuple[int, bytes, int]  # index, specialday_date (5 octets as written), day_id



def special_day(entry: Entry) -> SpecialDay:
    """The entry as the calendar logic sees it; a date that cannot be is refused."""
    index, raw, day_id = entry
    try:
        date = axdr.decode_date(raw)
    except DecodeError as exc:
        raise _refuse(f"specialday_date: {exc}") from None
    if date.month in (0xFD, 0xFE) or date.day in (0xFD, 0xFE):
        raise _refuse("specialday_date: DST and last-day date values are not supported")
    if date.month is not None and date.day is not None:
        # every-year February 29th is a date (of leap years); the year decides otherwise
        if date.day > calendar.monthrange(date.year if date.year is not None else 2000, date.month)[1]:
            raise _refuse(f"specialday_date: {date.month:02d}-{date.day:02d} does not exist")
        if None not in (date.year, date.weekday) \
                and dt.date(date.year, date.month, date.day).isoweekday() != date.weekday:
            raise _refuse("specialday_date: the weekday is not the date's")
    return SpecialDay(index, date.year, date.month, date.day, day_id, date.weekday)


def _entry(value: Data) -> Entry:
    fields = expect(value, DataType.STRUCTURE)
    if len(fields) != 3:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "an entry is structure{index, date, day_id}")
    index = expect(fields[0], DataType.LONG_UNSIGNED)
    if fields[1].type == DataType.DATE:
        try:
            raw = axdr.encode_date(fields[1].value)
        except EncodeError as exc:
            raise _refuse(str(exc)) from None
    else:
        raw = expect(fields[1], DataType.OCTET_STRING, DataType.DATE)
        if len(raw) != 5:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "specialday_date is octet-string(5)")
    return index, raw, expect(fields[2], DataType.UNSIGNED)


def _checked(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
    if len(entries) > MAX_ENTRIES:
        raise _refuse(f"the table holds at most {MAX_ENTRIES} entries")
    indexes = [e[0] for e in entries]
    if len(set(indexes)) != len(indexes):
        raise _refuse("two entries share an index")
    for entry in entries:
        special_day(entry)
    return entries


@REGISTRY.register
class SpecialDaysTable(InterfaceClass):
    class_id = 11
    version = 0
    attributes = {1: "logical_name", 2: "entries"}
    methods = {1: "insert", 2: "delete"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"special_days.{logical_name}"
        self._entries = self._initial()
        self._converted: tuple[tuple, tuple[SpecialDay, ...]] | None = None

    def special_days(self) -> tuple[SpecialDay, ...]:
        """The entries as the calendar logic takes them, in table order (asked at every step of
        the registration: made once per content of the table)."""
        if self._converted is None or self._converted[0] is not self._entries:
            self._converted = (self._entries, tuple(special_day(e) for e in self._entries))
        return self._converted[1]

    @property
    def _store(self):
        return self.bindings.get("settings")

    def _initial(self) -> tuple[Entry, ...]:
        record = self._store.get(self._key) if self._store is not None else None
        try:
            if record is not None:
                try:
                    entries = tuple((int(i), bytes.fromhex(d), int(day_id)) for i, d, day_id in record)
                except (TypeError, ValueError) as exc:
                    raise ScriptConfigError(f"{self.name}: the stored table is malformed ({exc})") from None
            else:
                entries = self._from_config()
            return _checked(entries)
        except CosemAccessError as exc:
            raise ScriptConfigError(f"{self.name}: {'stored' if record is not None else 'model'} entries: {exc}") \
                from None

    def _from_config(self) -> tuple[Entry, ...]:
        where = f"{self.name} (model)"
        spec = self.config.get("entries", [])
        if spec == "austrian_holidays":
            day_id = self.config.get("holiday_day_id", DEFAULT_HOLIDAY_DAY_ID)
            years = self.config.get("holiday_years", [FIRST_YEAR, LAST_YEAR])
            if type(day_id) is not int or not 0 <= day_id <= 255 or not isinstance(years, list) or len(years) != 2:
                raise ScriptConfigError(f"{where}: holiday_day_id is 0..255, holiday_years [first, last]")
            try:
                holidays = austrian_holidays(*years)
            except (TypeError, ValueError) as exc:
                raise ScriptConfigError(f"{where}: holiday_years: {exc}") from None
            return tuple((i, axdr.encode_date(CosemDate(h.year, h.month, h.day)), day_id)
                         for i, h in enumerate(holidays, start=1))
        if not isinstance(spec, list):
            raise ScriptConfigError(f"{where}: entries is \"austrian_holidays\" or a list of {{index, date, day_id}}")
        return tuple(_config_entry(e, where) for e in spec)

    def _commit(self, entries: tuple[Entry, ...]) -> None:
        entries = _checked(entries)
        store = self._store
        if store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        store.put(self._key, [[i, d.hex(), day_id] for i, d, day_id in entries])  # the whole table in one piece
        self._entries = entries

    # -- attributes and methods ----------------------------------------------------------------
    def get_entries(self, ctx: RequestContext) -> Data:
        return Data.array(Data.structure([Data.long_unsigned(i), Data.octet_string(d), Data.unsigned(day_id)])
                          for i, d, day_id in self._entries)

    def set_entries(self, value: Data, ctx: RequestContext) -> None:
        items = expect(value, DataType.ARRAY)
        if len(items) > MAX_ENTRIES:
            raise _refuse(f"the table holds at most {MAX_ENTRIES} entries")
        self._commit(tuple(_entry(item) for item in items))

    def do_insert(self, parameters: Data | None, ctx: RequestContext) -> None:
        entry = _entry(parameters or Data.null())
        entries = list(self._entries)
        at = next((n for n, e in enumerate(entries) if e[0] == entry[0]), None)
        if at is None:
            entries.append(entry)
        else:
            entries[at] = entry
        self._commit(tuple(entries))

    def do_delete(self, parameters: Data | None, ctx: RequestContext) -> None:
        index = expect(parameters or Data.null(), DataType.LONG_UNSIGNED)
        if any(e[0] == index for e in self._entries):
            self._commit(tuple(e for e in self._entries if e[0] != index))


_DATE = re.compile(r"(\d{4}|\*)-(\d{2}|\*)-(\d{2}|\*)")


def _config_entry(spec: Any, where: str) -> Entry:
    if not isinstance(spec, dict) or set(spec) != {"index", "date", "day_id"}:
        raise ScriptConfigError(f"{where}: an entry is {{index, date = \"yyyy-mm-dd\" (* for any), day_id}}")
    m = _DATE.fullmatch(spec["date"]) if isinstance(spec["date"], str) else None
    if m is None or type(spec["index"]) is not int or type(spec["day_id"]) is not int \
            or not 0 <= spec["index"] <= 0xFFFF or not 0 <= spec["day_id"] <= 255:
        raise ScriptConfigError(f"{where}: entry {spec!r}: index 0..65535, date yyyy-mm-dd (* for any), day_id 0..255")
    year, month, day = (None if f == "*" else int(f) for f in m.groups())
    try:
        return spec["index"], axdr.encode_date(CosemDate(year, month, day)), spec["day_id"]
    except EncodeError as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None
