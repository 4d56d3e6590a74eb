"""IC 20 Activity calendar (Blue Book 4.5.5): which tariff script runs when, over the year.

An active calendar (attributes 2-5) drives the tariff switching; a passive one (6-9) is
written by the head-end and becomes active by method 1 `activate_passive_calendar` or at
`activate_passive_calendar_time` (10). The calendar logic itself is pure:
smartmeter.meter.tariff_calendar. The initial active calendar comes from the model:

    script_table = "0-0:10.0.100.255"          # the script table every switch names
    calendar_name = "T1T2"
    seasons = [{ name = "S1", start = "*-01-01", week = "W1" }]
    weeks = [{ name = "W1", days = [1, 1, 1, 1, 1, 1, 1] }]    # day_id Monday .. Sunday
    days = [{ id = 1, switches = [["00:00", 1], ["06:00", 2], ["22:00", 1]] }]
    passive = { calendar_name = "", seasons = [], weeks = [], days = [] }   # optional, same keys
    activate_passive_calendar_time = "2027-01-01 00:00:00"                  # optional, local time

`start` is yyyy-mm-dd with "*" for every year; a switch is [hh:mm, selector]. Names are text.

    allowed_scripts = [3, 4]          # optional: a calendar that may run only these scripts of
                                      # its script_table (the disconnect and relay calendars, §5.8)

With `allowed_scripts`, a day action naming another script or another script table is refused
(other-reason), as IC 22 refuses it for the disconnect control scheduler.

A write of a passive attribute is checked as far as it goes alone (its own structure, season
order, 15-minute switch times, capacities, that every script exists); whether seasons name
existing week profiles and weeks existing day profiles is checked when the passive calendar
is activated, since a head-end writes the four attributes one after the other. Everything
(both calendars and the activation time) is stored as one record in the meter's settings
store: a restart keeps it and a refused write or activation changes nothing. Each activation
counts a revision and records the meter time it happened at (from the "clock" binding, or the
time `activate_if_due` is given): a calendar program that runs the switches' scripts
(smartmeter.meter.calendar_program) runs no switch of the new calendar up to that time.

Octet-strings are read back as written; the DLMS date-time and time types are taken where
the Blue Book has an octet-string (some clients send them typed) and read back as octets.
"""
from __future__ import annotations

import calendar as _calendar
import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, date_time_octets, expect,
)
from smartmeter.cosem.classes.base import other_reason as _refuse, type_unmatched as _unmatched, structure_fields as _fields
from smartmeter.cosem.classes.ic9_script_table import NULL_SCRIPT, ScriptConfigError, scripts_from_config
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import DecodeError, EncodeError
from smartmeter.meter import tariff_calendar as tc

SCRIPT_TABLE_CLASS = 9
MAX_NAME_OCTETS = 32  # calendar, season and week names
NEVER = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0xFF])  # date-time not specified

Season = tuple[bytes, bytes, bytes]  # name, season_start (12 octets as written), week_name
Switch = tuple[bytes, bytes, int]  # start_time (4 octets as written), script logical name, selector
Day = tuple[int, tuple[Switch, ...]]


@dataclass(frozen=True, slots=True)
class CalendarSide:
    """One of the two calendars (active or passive) as written, with its pure form."""

    name: bytes = b""
    seasons: tuple[Season, ...] = ()
    weeks: tuple[tc.WeekProfile, ...] = ()
    days: tuple[Day, ...] = ()

    def calendar(self) -> tc.Calendar:
        """The pure calendar (the raw values were checked when they were taken)."""
        return tc.Calendar(self.name, tuple(tc.Season(n, season_start(s), w) for n, s, w in self.seasons),
                           self.weeks, tuple(tc.DayProfile(i, tuple(_action(s) for s in switches))
                                             for i, switches in self.days))

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name.hex(), "seasons": [[n.hex(), s.hex(), w.hex()] for n, s, w in self.seasons],
                "weeks": [[w.name.hex(), list(w.day_ids)] for w in self.weeks],
                "days": [[i, [[t.hex(), ln.hex(), sel] for t, ln, sel in sw]] for i, sw in self.days]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "CalendarSide":
        return cls(bytes.fromhex(record["name"]),
                   tuple((bytes.fromhex(n), bytes.fromhex(s), bytes.fromhex(w)) for n, s, w in record["seasons"]),
                   tuple(tc.WeekProfile(bytes.fromhex(n), tuple(int(i) for i in ids)) for n, ids in record["weeks"]),
                   tuple((int(i), tuple((bytes.fromhex(t), bytes.fromhex(ln), int(sel)) for t, ln, sel in sw))
                         for i, sw in record["days"]))


@dataclass(frozen=True, slots=True)
class CalendarState:
    active: CalendarSide
    passive: CalendarSide
    activate_at: bytes = NEVER  # 12 octets as written
    revision: int = 0  # counts activations of the passive calendar
    activated_at: float | None = None  # meter time (UTC s) of the last activation

    def to_record(self) -> dict[str, Any]:
        return {"active": self.active.to_record(), "passive": self.passive.to_record(),
                "activate_at": self.activate_at.hex(), "revision": self.revision, "activated_at": self.activated_at}





def _name(value: Data, what: str) -> bytes:
    raw = expect(value, DataType.OCTET_STRING)
    if len(raw) > MAX_NAME_OCTETS:
        raise _refuse(f"{what} is at most {MAX_NAME_OCTETS} octets")
    return raw


def season_start(raw: bytes) -> tc.SeasonStart:
    """A season_start date-time as the first day of the season. The weekday, deviation and
    clock status are not used; the time of day must be the start of the day."""
    try:
        value = axdr.decode_date_time(raw)
    except DecodeError as exc:
        raise _refuse(f"season_start: {exc}") from None
    d, t = value.date, value.time
    if d.month is None or d.day is None or d.month > 12 or d.day > 31:
        raise _refuse("season_start names a month and a day of the month")
    if any(f not in (None, 0) for f in (t.hour, t.minute, t.second, t.hundredths)):
        raise _refuse("a season starts at 00:00:00")
    return tc.SeasonStart(d.year, d.month, d.day)


def _action(switch: Switch) -> tc.DayAction:
    raw_time, script_ln, selector = switch
    try:
        t = axdr.decode_time(raw_time)
    except DecodeError as exc:
        raise _refuse(f"start_time: {exc}") from None
    if t.hour is None or t.minute is None:
        raise _refuse("a switch time names its hour and minute")
    if t.hundredths not in (None, 0):
        raise _refuse(f"switch times are on {tc.SWITCH_GRID_MINUTES}-minute boundaries")
    return tc.DayAction(t.hour, t.minute, t.second or 0, script_ln, selector)


def _seasons(value: Data) -> tuple[Season, ...]:
    items = expect(value, DataType.ARRAY)
    if len(items) > tc.MAX_SEASONS:
        raise _refuse(f"at most {tc.MAX_SEASONS} seasons")
    seasons = []
    for item in items:
        name, start, week = _fields(item, 3, "a season profile")
        seasons.append((_name(name, "season_profile_name"),
                        date_time_octets(start, 12, DataType.DATE_TIME, axdr.encode_date_time), _name(week, "week_name")))
    return tuple(seasons)


def _weeks(value: Data) -> tuple[tc.WeekProfile, ...]:
    items = expect(value, DataType.ARRAY)
    if len(items) > tc.MAX_WEEK_PROFILES:
        raise _refuse(f"at most {tc.MAX_WEEK_PROFILES} week profiles")
    weeks = []
    for item in items:
        fields = _fields(item, 8, "a week profile")
        weeks.append(tc.WeekProfile(_name(fields[0], "week_profile_name"),
                                    tuple(expect(f, DataType.UNSIGNED) for f in fields[1:])))
    return tuple(weeks)


def _days(value: Data) -> tuple[Day, ...]:
    items = expect(value, DataType.ARRAY)
    if len(items) > tc.MAX_DAY_PROFILES:
        raise _refuse(f"at most {tc.MAX_DAY_PROFILES} day profiles")
    days = []
    for item in items:
        day_id, schedule = _fields(item, 2, "a day profile")
        actions = expect(schedule, DataType.ARRAY)
        if len(actions) > tc.MAX_SWITCHES_PER_DAY:
            raise _refuse(f"a day profile holds at most {tc.MAX_SWITCHES_PER_DAY} switch times")
        switches = []
        for action in actions:
            start, script, selector = _fields(action, 3, "a day profile action")
            script_ln = expect(script, DataType.OCTET_STRING)
            if len(script_ln) != 6:
                raise _unmatched("script_logical_name is octet-string(6)")
            switches.append((date_time_octets(start, 4, DataType.TIME, axdr.encode_time), script_ln,
                             expect(selector, DataType.LONG_UNSIGNED)))
        days.append((expect(day_id, DataType.UNSIGNED), tuple(switches)))
    return tuple(days)


def activation_instant(raw: bytes, zone: ZoneInfo) -> float | None:
    """UTC seconds of an activate_passive_calendar_time; None = not specified (never). Without
    a deviation the date-time is local time of `zone`."""
    value = _activation_time(raw)
    if value is None:
        return None
    d, t = value.date, value.time
    tz = zone if value.deviation is None else dt.timezone(dt.timedelta(minutes=-value.deviation))
    return dt.datetime(d.year, d.month, d.day, t.hour, t.minute, t.second or 0, tzinfo=tz).timestamp()


def _activation_time(raw: bytes) -> CosemDateTime | None:
    try:
        value = axdr.decode_date_time(raw)
    except DecodeError as exc:
        raise _refuse(f"activate_passive_calendar_time: {exc}") from None
    d, t = value.date, value.time
    if (d.year, d.month, d.day, t.hour, t.minute, t.second) == (None,) * 6:
        return None
    if None in (d.year, d.month, d.day, t.hour, t.minute) or d.month > 12 or d.day > 31 \
            or d.day > _calendar.monthrange(d.year, d.month)[1]:
        raise _refuse("activate_passive_calendar_time is a whole date and time, or not specified")
    return value


@REGISTRY.register
class ActivityCalendar(InterfaceClass):
    class_id = 20
    version = 0
    attributes = {
        1: "logical_name", 2: "calendar_name_active", 3: "season_profile_active", 4: "week_profile_table_active",
        5: "day_profile_table_active", 6: "calendar_name_passive", 7: "season_profile_passive",
        8: "week_profile_table_passive", 9: "day_profile_table_passive", 10: "activate_passive_calendar_time",
    }
    methods = {1: "activate_passive_calendar"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"calendar.{logical_name}"
        self._state = self._initial()

    # -- what the runtime asks ----------------------------------------------------------------
    def calendar(self) -> tc.Calendar:
        """The active calendar."""
        return self._state.active.calendar()

    def passive_calendar(self) -> tc.Calendar:
        return self._state.passive.calendar()

    def activation_instant(self, zone: ZoneInfo) -> float | None:
        return activation_instant(self._state.activate_at, zone)

    def revision(self) -> tuple[int, float | None]:
        """How often the passive calendar was activated, and the meter time of the last activation."""
        return self._state.revision, self._state.activated_at

    def activate_passive(self, at: float | None = None) -> None:
        """The passive calendar becomes active (it stays passive as well) at meter time `at`;
        CosemAccessError other-reason when it is inconsistent - then nothing changes."""
        self._commit(self._activated(self._checked(self._state.passive, complete=True), at))

    def _activated(self, active: CalendarSide, at: float | None, **changes) -> CalendarState:
        return replace(self._state, active=active, revision=self._state.revision + 1, activated_at=at, **changes)

    def activate_if_due(self, now_utc: float, zone: ZoneInfo) -> bool:
        """At or after the activation time: activate, and clear the time so it happens once.
        True when activated; CosemAccessError when the time came but the passive calendar is
        inconsistent (the time is cleared all the same, the active calendar stays)."""
        at = self.activation_instant(zone)
        if at is None or now_utc < at:
            return False
        try:
            active = self._checked(self._state.passive, complete=True)
        except CosemAccessError:
            self._commit(replace(self._state, activate_at=NEVER))
            raise
        self._commit(self._activated(active, now_utc, activate_at=NEVER))
        return True

    # -- state ------------------------------------------------------------------------------
    @property
    def _store(self):
        return self.bindings.get("settings")

    def _initial(self) -> CalendarState:
        record = self._store.get(self._key) if self._store is not None else None
        try:
            if record is not None:
                try:
                    state = CalendarState(CalendarSide.from_record(record["active"]),
                                          CalendarSide.from_record(record["passive"]),
                                          bytes.fromhex(record["activate_at"]), int(record.get("revision", 0)),
                                          record.get("activated_at"))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ScriptConfigError(f"{self.name}: the stored calendar is malformed ({exc})") from None
            else:
                state = self._from_config()
            _activation_time(state.activate_at)
            return replace(state, active=self._checked(state.active, complete=True),
                           passive=self._checked(state.passive))
        except CosemAccessError as exc:
            raise ScriptConfigError(f"{self.name}: {'stored' if record is not None else 'model'} calendar: {exc}") \
                from None

    def _from_config(self) -> CalendarState:
        where = f"{self.name} (model)"
        script_ln = self._model_script_ln(where)
        passive = self.config.get("passive", {})
        if not isinstance(passive, dict):
            raise ScriptConfigError(f"{where}: passive is {{calendar_name, seasons, weeks, days}}")
        at = self.config.get("activate_passive_calendar_time")
        return CalendarState(_side_from_config(self.config, script_ln, where),
                             _side_from_config(passive, script_ln, f"{where} passive"),
                             NEVER if at is None else _config_date_time(at, where))

    def _checked(self, side: CalendarSide, complete: bool = False) -> CalendarSide:
        """`side` if every rule holds (with `complete`, also the references between its
        parts); CosemAccessError other-reason names the first broken one."""
        calendar = side.calendar()
        try:
            tc.validate_seasons(calendar.seasons)
            tc.validate_weeks(calendar.weeks)
            tc.validate_days(calendar.days)
            if complete:
                tc.validate_references(calendar)
        except ValueError as exc:
            raise _refuse(str(exc)) from None
        self._check_scripts({(a.script_ln, a.selector) for d in calendar.days for a in d.actions})
        return side

    def _model_script_ln(self, where: str) -> bytes:
        try:
            return Obis.parse(self.config.get("script_table", "0-0:10.0.100.255")).to_bytes()
        except ValueError as exc:
            raise ScriptConfigError(f"{where}: script_table: {exc}") from None

    def _check_scripts(self, scripts: set[tuple[bytes, int]]) -> None:
        if not scripts:
            return
        # a calendar the model limits to some scripts (the disconnect calendar: 3 and 4 only, §5.8)
        allowed = self.config.get("allowed_scripts")
        if allowed is not None:
            own = self._model_script_ln(f"{self.name} (model)")
            if any(script_ln != own or (selector != NULL_SCRIPT and selector not in allowed)
                   for script_ln, selector in scripts):
                raise _refuse(f"{self.name} runs only scripts {', '.join(map(str, allowed))} of {Obis.from_bytes(own)}")
        model = self.bindings.get("model")
        if model is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "no model to find the script table in")
        known: dict[bytes, frozenset[int]] = {}
        for script_ln, selector in sorted(scripts):
            if script_ln not in known:
                table = next((o for o in model.objects if o.obis.to_bytes() == script_ln), None)
                if table is None or table.class_id != SCRIPT_TABLE_CLASS:
                    raise _refuse(f"{Obis.from_bytes(script_ln)} is not a script table")
                known[script_ln] = frozenset(scripts_from_config(table.config.get("scripts", []), table.name))
            if selector != NULL_SCRIPT and selector not in known[script_ln]:
                raise _refuse(f"{Obis.from_bytes(script_ln)} has no script {selector}")

    def _commit(self, state: CalendarState) -> None:
        store = self._store
        if store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        store.put(self._key, state.to_record())  # one record: both calendars and the time, or nothing
        self._state = state

    def _set_passive(self, **changes) -> None:
        passive = self._checked(replace(self._state.passive, **changes))
        self._commit(replace(self._state, passive=passive))

    # -- attributes -------------------------------------------------------------------------
    def get_calendar_name_active(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self._state.active.name)

    def get_season_profile_active(self, ctx: RequestContext) -> Data:
        return _seasons_data(self._state.active)

    def get_week_profile_table_active(self, ctx: RequestContext) -> Data:
        return _weeks_data(self._state.active)

    def get_day_profile_table_active(self, ctx: RequestContext) -> Data:
        return _days_data(self._state.active)

    def get_calendar_name_passive(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self._state.passive.name)

    def get_season_profile_passive(self, ctx: RequestContext) -> Data:
        return _seasons_data(self._state.passive)

    def get_week_profile_table_passive(self, ctx: RequestContext) -> Data:
        return _weeks_data(self._state.passive)

    def get_day_profile_table_passive(self, ctx: RequestContext) -> Data:
        return _days_data(self._state.passive)

    def get_activate_passive_calendar_time(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self._state.activate_at)

    def set_calendar_name_passive(self, value: Data, ctx: RequestContext) -> None:
        self._set_passive(name=_name(value, "calendar_name"))

    def set_season_profile_passive(self, value: Data, ctx: RequestContext) -> None:
        self._set_passive(seasons=_seasons(value))

    def set_week_profile_table_passive(self, value: Data, ctx: RequestContext) -> None:
        self._set_passive(weeks=_weeks(value))

    def set_day_profile_table_passive(self, value: Data, ctx: RequestContext) -> None:
        self._set_passive(days=_days(value))

    def set_activate_passive_calendar_time(self, value: Data, ctx: RequestContext) -> None:
        raw = date_time_octets(value, 12, DataType.DATE_TIME, axdr.encode_date_time)
        _activation_time(raw)
        self._commit(replace(self._state, activate_at=raw))

    def do_activate_passive_calendar(self, parameters: Data | None, ctx: RequestContext) -> None:
        expect(parameters or Data.null(), DataType.INTEGER)
        clock = self.bindings.get(self.config.get("clock", "clock"))
        self.activate_passive(None if clock is None else clock.now())


def _seasons_data(side: CalendarSide) -> Data:
    return Data.array(Data.structure([Data.octet_string(n), Data.octet_string(s), Data.octet_string(w)])
                      for n, s, w in side.seasons)


def _weeks_data(side: CalendarSide) -> Data:
    return Data.array(Data.structure([Data.octet_string(w.name), *(Data.unsigned(i) for i in w.day_ids)])
                      for w in side.weeks)


def _days_data(side: CalendarSide) -> Data:
    return Data.array(
        Data.structure([Data.unsigned(day_id), Data.array(
            Data.structure([Data.octet_string(t), Data.octet_string(ln), Data.long_unsigned(sel)])
            for t, ln, sel in switches)])
        for day_id, switches in side.days)


# -- the model's text forms ---------------------------------------------------------------------

_DATE = re.compile(r"(\d{4}|\*)-(\d{2})-(\d{2})")
_HHMM = re.compile(r"(\d{2}):(\d{2})")
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")


def _text(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ScriptConfigError(f"{where}: names are text")
    return value.encode()


def _encoded(encode, value, where: str) -> bytes:
    try:
        return encode(value)
    except EncodeError as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None


def _side_from_config(config: dict[str, Any], script_ln: bytes, where: str) -> CalendarSide:
    try:
        seasons = []
        for s in config.get("seasons", []):
            m = _DATE.fullmatch(s["start"])
            if m is None or set(s) != {"name", "start", "week"}:
                raise ScriptConfigError(f"{where}: a season is {{name, start = \"yyyy-mm-dd\" (* for any year), week}}")
            year = None if m[1] == "*" else int(m[1])
            start = _encoded(axdr.encode_date_time, CosemDateTime(CosemDate(year, int(m[2]), int(m[3])),
                                                                  CosemTime(0, 0, 0, 0)), where)
            seasons.append((_text(s["name"], where), start, _text(s["week"], where)))
        weeks = []
        for w in config.get("weeks", []):
            if set(w) != {"name", "days"} or not isinstance(w["days"], list) \
                    or not all(type(i) is int and 0 <= i <= 255 for i in w["days"]):
                raise ScriptConfigError(f"{where}: a week is {{name, days = [seven day_ids, Monday first]}}")
            weeks.append(tc.WeekProfile(_text(w["name"], where), tuple(w["days"])))
        days = []
        for d in config.get("days", []):
            if set(d) != {"id", "switches"} or type(d["id"]) is not int or not 0 <= d["id"] <= 255:
                raise ScriptConfigError(f"{where}: a day is {{id = 0..255, switches = [[\"hh:mm\", selector], ...]}}")
            switches = []
            for sw in d["switches"]:
                m = _HHMM.fullmatch(sw[0]) if isinstance(sw, list) and len(sw) == 2 and isinstance(sw[0], str) else None
                if m is None or type(sw[1]) is not int or not 0 <= sw[1] <= 0xFFFF:
                    raise ScriptConfigError(f"{where}: day {d['id']}: a switch is [\"hh:mm\", selector]")
                time = _encoded(axdr.encode_time, CosemTime(int(m[1]), int(m[2]), 0, 0), where)
                switches.append((time, script_ln, sw[1]))
            days.append((d["id"], tuple(switches)))
    except (KeyError, TypeError) as exc:
        raise ScriptConfigError(f"{where}: malformed calendar entry ({exc})") from None
    return CalendarSide(_text(config.get("calendar_name", ""), where), tuple(seasons), tuple(weeks), tuple(days))


def _config_date_time(text: Any, where: str) -> bytes:
    m = _DATE_TIME.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScriptConfigError(f"{where}: activate_passive_calendar_time is \"yyyy-mm-dd hh:mm:ss\" (local time)")
    year, month, day, hour, minute, second = (int(f) for f in m.groups())
    value = CosemDateTime(CosemDate(year, month, day), CosemTime(hour, minute, second, 0))
    return _encoded(axdr.encode_date_time, value, where)
