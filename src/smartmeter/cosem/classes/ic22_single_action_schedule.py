"""IC 22 Single action schedule (Blue Book 4.5.7): when a script of a script table runs.

Attribute 2 `executed_script` names the script (script table and selector), attribute 3 `type`
how the execution times may look, attribute 4 `execution_time` the local date-time patterns.
Initial values come from the model:

    executed_script = { obis = "0-0:10.0.109.255", selector = 1 }
    type = 1
    execution_time = [{ time = "00:00:00", date = "*-*-01" }]      # optional: weekday = 1..7

`time` is hh:mm:ss and `date` yyyy-mm-dd, a field "*" being a wildcard. A write is validated
as a whole against the other attributes (a type that does not fit the list, a script that does
not exist, an impossible date) and then stored in one piece in the meter's settings store, so a
restart keeps it and a refused write changes nothing. Writing execution_time records the meter
time of the write: the scheduler (smartmeter.meter.scheduler) runs no instant up to it.

Hundredths of a second are kept as written but not used: execution happens on whole seconds.
An execution time whose time is undefined (hour, minute and second not specified) is kept as
written and never runs: writing one, or an empty list, switches a schedule off.
The Blue Book's special date values (DST begin/end month, last / second last day) are refused.
"""
from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, date_time_octets, expect,
)
from smartmeter.cosem.classes.base import other_reason as _refuse
from smartmeter.cosem.classes.ic9_script_table import NULL_SCRIPT, ScriptConfigError, scripts_from_config
from smartmeter.cosem.data import CosemDate, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import DecodeError, EncodeError
from smartmeter.meter.schedule import ExecutionTime

MAX_EXECUTION_TIMES = 32  # what one schedule may hold; a longer list is refused
SCRIPT_TABLE_CLASS = 9
# type -> (at most one execution time, all times equal, date wildcards allowed) (Blue Book 4.5.7)
SCHEDULE_TYPES = {
    1: (True, False, True),
    2: (False, True, False),
    3: (False, True, True),
    4: (False, False, False),
    5: (False, False, True),
}


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One schedule as the scheduler sees it."""

    script_ln: bytes
    selector: int
    type: int
    raw_times: tuple[tuple[bytes, bytes], ...]  # (time 4 bytes, date 5 bytes), as written
    times: tuple[ExecutionTime, ...]
    revision: int = 0  # counts writes of execution_time
    written_at: float | None = None  # meter time (UTC s) of the last execution_time write

    def to_record(self) -> dict[str, Any]:
        return {"script": self.script_ln.hex(), "selector": self.selector, "type": self.type,
                "times": [[t.hex(), d.hex()] for t, d in self.raw_times], "revision": self.revision,
                "written_at": self.written_at}



def execution_time(time_raw: bytes, date_raw: bytes) -> ExecutionTime:
    """The pattern of one (time, date) pair; impossible or unsupported values are refused."""
    try:
        time, date = axdr.decode_time(time_raw), axdr.decode_date(date_raw)
    except DecodeError as exc:
        raise _refuse(f"execution time: {exc}") from None
    if date.month in (0xFD, 0xFE) or date.day in (0xFD, 0xFE):
        raise _refuse("execution time: DST and last-day date values are not supported")
    try:
        pattern = ExecutionTime(time.hour, time.minute, time.second, date.year, date.month, date.day, date.weekday)
    except ValueError as exc:
        raise _refuse(str(exc)) from None
    if date.month is not None and date.day is not None:
        # a day the month never has (February 30th) is never due; the year decides February 29th
        longest = calendar.monthrange(date.year if date.year is not None else 2000, date.month)[1]
        if date.day > longest:
            raise _refuse(f"execution time: {date.month:02d}-{date.day:02d} does not exist")
        if date.year is not None and date.weekday is not None \
                and dt.date(date.year, date.month, date.day).isoweekday() != date.weekday:
            raise _refuse("execution time: the weekday is not the date's")
    return pattern


def _times(value: Data, limit: int = MAX_EXECUTION_TIMES) -> tuple[tuple[tuple[bytes, bytes], ...], tuple[ExecutionTime, ...]]:
    items = expect(value, DataType.ARRAY)
    if len(items) > limit:
        raise _refuse(f"at most {limit} execution times")
    raw = []
    for item in items:
        pair = expect(item, DataType.STRUCTURE)
        if len(pair) != 2:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "an execution time is structure{time, date}")
        raw.append((date_time_octets(pair[0], 4, DataType.TIME, axdr.encode_time), date_time_octets(pair[1], 5, DataType.DATE, axdr.encode_date)))
    patterns = (execution_time(t, d) for t, d in raw)
    # an undefined time (hour, minute and second all not specified) never runs: that is how a
    # schedule such as the monthly billing is switched off without emptying it (companion §5.6)
    return tuple(raw), tuple(p for p in patterns if not (p.hour is None and p.minute is None and p.second is None))


def _check_type(schedule_type: int, times: tuple[ExecutionTime, ...]) -> None:
    if schedule_type not in SCHEDULE_TYPES:
        raise _refuse(f"type {schedule_type} is not 1..5")
    single, same_time, wildcards = SCHEDULE_TYPES[schedule_type]
    if single and len(times) > 1:
        raise _refuse("type 1 holds one execution time")
    if same_time and len({(t.hour, t.minute, t.second) for t in times}) > 1:
        raise _refuse(f"type {schedule_type}: all execution times have the same time of day")
    if not wildcards and any(None in (t.year, t.month, t.day) for t in times):
        raise _refuse(f"type {schedule_type}: no wildcard in a date")


_FIELD = r"(\d+|\*)"
_TIME_TEXT = re.compile(rf"{_FIELD}:{_FIELD}:{_FIELD}")
_DATE_TEXT = re.compile(rf"{_FIELD}-{_FIELD}-{_FIELD}")


def _config_time(text: Any, where: str) -> bytes:
    m = _TIME_TEXT.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScriptConfigError(f"{where}: time {text!r} is not hh:mm:ss (* for any)")
    hour, minute, second = (None if f == "*" else int(f) for f in m.groups())
    try:
        return axdr.encode_time(CosemTime(hour, minute, second, 0))
    except EncodeError as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None


def _config_date(text: Any, weekday: Any, where: str) -> bytes:
    m = _DATE_TEXT.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScriptConfigError(f"{where}: date {text!r} is not yyyy-mm-dd (* for any)")
    year, month, day = (None if f == "*" else int(f) for f in m.groups())
    try:
        return axdr.encode_date(CosemDate(year, month, day, weekday))
    except EncodeError as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None


@REGISTRY.register
class SingleActionSchedule(InterfaceClass):
    class_id = 22
    version = 0
    attributes = {1: "logical_name", 2: "executed_script", 3: "type", 4: "execution_time"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"schedule.{logical_name}"
        self._state = self._initial()

    # -- what the schedule is ---------------------------------------------------------------
    def state(self) -> ScheduleState:
        return self._state

    @property
    def _store(self):
        return self.bindings.get("settings")

    def _initial(self) -> ScheduleState:
        record = self._store.get(self._key) if self._store is not None else None
        try:
            if record is not None:
                return self._from_record(record)
            return self._from_config()
        except CosemAccessError as exc:
            raise ScriptConfigError(f"{self.name}: {'stored' if record is not None else 'model'} schedule: {exc}") from None

    def _from_config(self) -> ScheduleState:
        where = f"{self.name} (model)"
        script = self.config.get("executed_script", {})
        if not isinstance(script, dict) or set(script) != {"obis", "selector"}:
            raise ScriptConfigError(f"{where}: executed_script is {{obis = ..., selector = ...}}")
        try:
            script_ln = Obis.parse(script["obis"]).to_bytes()
        except ValueError as exc:
            raise ScriptConfigError(f"{where}: {exc}") from None
        pairs = []
        for entry in self.config.get("execution_time", []):
            if not isinstance(entry, dict) or not {"time", "date"} <= set(entry) <= {"time", "date", "weekday"}:
                raise ScriptConfigError(f"{where}: an execution time is {{time = ..., date = ..., weekday = ...}}")
            pairs.append(Data.structure([Data.octet_string(_config_time(entry["time"], where)),
                                         Data.octet_string(_config_date(entry["date"], entry.get("weekday"), where))]))
        selector = script["selector"]
        if type(selector) is not int:
            raise ScriptConfigError(f"{where}: selector is a number")
        return self._validated(script_ln, Data.long_unsigned(selector), Data.enum(self.config.get("type", 1)),
                               Data.array(pairs), 0, None)

    def _from_record(self, record: dict[str, Any]) -> ScheduleState:
        try:
            times = Data.array(Data.structure([Data.octet_string(bytes.fromhex(t)), Data.octet_string(bytes.fromhex(d))])
                               for t, d in record["times"])
            return self._validated(bytes.fromhex(record["script"]), Data.long_unsigned(record["selector"]),
                                   Data.enum(record["type"]), times, int(record["revision"]), record["written_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScriptConfigError(f"{self.name}: the stored schedule is malformed ({exc})") from None

    def _validated(self, script_ln: bytes, selector: Data, schedule_type: Data, times: Data, revision: int,
                   written_at: float | None) -> ScheduleState:
        """The whole schedule, every rule checked; CosemAccessError names the first broken one."""
        selector_value = expect(selector, DataType.LONG_UNSIGNED)
        type_value = expect(schedule_type, DataType.ENUM)
        raw, patterns = _times(times, int(self.config.get("max_execution_times", MAX_EXECUTION_TIMES)))
        _check_type(type_value, patterns)
        self._check_script(script_ln, selector_value)
        return ScheduleState(script_ln, selector_value, type_value, raw, patterns, revision, written_at)

    def _check_script(self, script_ln: bytes, selector: int) -> None:
        model = self.bindings.get("model")
        if model is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "no model to find the script table in")
        table = next((o for o in model.objects if o.obis.to_bytes() == script_ln), None)
        if table is None or table.class_id != SCRIPT_TABLE_CLASS:
            raise _refuse(f"{script_ln.hex()} is not a script table")
        if selector != NULL_SCRIPT and selector not in scripts_from_config(table.config.get("scripts", []), table.name):
            raise _refuse(f"{table.name} has no script {selector}")
        # a schedule the model limits to some scripts (the disconnect scheduler: 3 and 4 only, §5.8)
        allowed = self.config.get("allowed_scripts")
        if allowed is not None and selector != NULL_SCRIPT and (script_ln != self._model_script_ln() or
                                                               selector not in allowed):
            raise _refuse(f"{self.name} runs only scripts {', '.join(map(str, allowed))} of its script table")

    def _commit(self, state: ScheduleState) -> None:
        store = self._store
        if store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        store.put(self._key, state.to_record())  # one record: the whole schedule or nothing
        self._state = state

    # -- attributes -------------------------------------------------------------------------
    def get_executed_script(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.octet_string(self._state.script_ln), Data.long_unsigned(self._state.selector)])

    def get_type(self, ctx: RequestContext) -> Data:
        return Data.enum(self._state.type)

    def get_execution_time(self, ctx: RequestContext) -> Data:
        return Data.array(Data.structure([Data.octet_string(t), Data.octet_string(d)]) for t, d in self._state.raw_times)

    def _model_script_ln(self) -> bytes:
        return Obis.parse(self.config["executed_script"]["obis"]).to_bytes()

    def set_executed_script(self, value: Data, ctx: RequestContext) -> None:
        fields = expect(value, DataType.STRUCTURE)
        if len(fields) != 2:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "executed_script is structure{name, selector}")
        script_ln = expect(fields[0], DataType.OCTET_STRING)
        if len(script_ln) != 6:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "script_logical_name is octet-string(6)")
        s = self._state
        self._commit(self._validated(script_ln, fields[1], Data.enum(s.type), self.get_execution_time(ctx),
                                     s.revision, s.written_at))

    def set_type(self, value: Data, ctx: RequestContext) -> None:
        s = self._state
        self._commit(self._validated(s.script_ln, Data.long_unsigned(s.selector), value, self.get_execution_time(ctx),
                                     s.revision, s.written_at))

    def set_execution_time(self, value: Data, ctx: RequestContext) -> None:
        s = self._state
        state = self._validated(s.script_ln, Data.long_unsigned(s.selector), Data.enum(s.type), value,
                                s.revision + 1, None)
        clock = self.bindings.get(self.config.get("clock", "clock"))
        if clock is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name}: no clock to date the change")
        # instants up to the moment of the write are not executed (companion §5.4.1: a time in
        # the past when configured never runs)
        self._commit(replace(state, written_at=clock.now()))
