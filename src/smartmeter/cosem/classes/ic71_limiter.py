"""IC 71 Limiter, version 0 (Blue Book 4.5.9): watches a value (companion §5.8: the instantaneous
active power +P 1-0:1.7.0.255 for import, -P 1-0:2.7.0.255 for export) against a threshold and
names the script to run when it stays over, and then under, the threshold long enough.

Attributes: 2 monitored_value {class_id, logical_name, attribute_index} (fixed by the model), 3
threshold_active (read-only: threshold_emergency while the emergency profile is active, else
threshold_normal), 4 threshold_normal, 5 threshold_emergency (the type of the monitored value),
6 min_over_threshold_duration, 7 min_under_threshold_duration (double-long-unsigned, seconds), 8
emergency_profile {id long-unsigned, activation_time date-time, duration double-long-unsigned s},
9 emergency_profile_group_id_list (array of long-unsigned), 10 emergency_profile_active
(read-only, whether the emergency profile is in force now), 11 actions {action_over_threshold,
action_under_threshold}, each {script_logical_name, script_selector}. Model entry (defaults
shown where there is one):

    monitored_value = [3, "1-0:1.7.0.255", 2]
    threshold_type = "double-long-unsigned"     # the monitored value's type
    threshold_normal = 0                        # 0: the limiter is off (companion §5.8)
    threshold_emergency = 0
    min_over_threshold_duration = 0             # s
    min_under_threshold_duration = 0            # s
    emergency_profile = { id = 0, activation_time = "2027-01-01 00:00:00", duration = 0 }
                                                # activation_time local, omitted = not specified
    emergency_profile_group_id_list = []
    actions = { over = ["0-0:10.0.106.255", 1], under = ["0-0:10.0.106.255", 0] }   # selector 0: none
    clock = "clock"                             # binding: now() and zone, for attributes 3 and 10

The emergency profile is active while its id is in the group id list and the time is within
[activation_time, activation_time + duration). activation_time is a whole date and time, or
not specified (never); without a deviation it is the local time of the bound clock's zone (UTC
without a clock).

Every write is checked and the writable attributes are stored as one record in the meter's
settings store, so a restart keeps them and a refused write changes nothing. The excursion state
(since when the value is over or under, whether it is over) is kept in memory only: after a
restart a limit must be exceeded for the whole minimum duration again.

The limiter does not watch by itself: the runtime calls `evaluate(now, value)` with each new
monitored value and runs the action scripts for what it reports (see `evaluate`).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, date_time_octets, expect,
)
from smartmeter.cosem.classes.base import other_reason as _refuse, type_unmatched as _unmatched, structure_fields as _fields
from smartmeter.cosem.classes.ic9_script_table import NULL_SCRIPT, ScriptConfigError, scripts_from_config
from smartmeter.cosem.data import INTEGER_RANGES, CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import DecodeError, EncodeError
from smartmeter.meter.disconnect import LIMITER_OVER, LIMITER_THRESHOLD_CHANGE, LIMITER_UNDER

SCRIPT_TABLE_CLASS = 9
MAX_GROUP_IDS = 16  # emergency_profile_group_id_list; a longer list is refused
DURATION_RANGE = INTEGER_RANGES[DataType.DOUBLE_LONG_UNSIGNED]
# the types a monitored value (and so a threshold) may have: integers compared as such
THRESHOLD_TYPES = frozenset({
    DataType.INTEGER, DataType.LONG, DataType.DOUBLE_LONG, DataType.LONG64, DataType.UNSIGNED,
    DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG64_UNSIGNED,
})
NEVER = bytes([0xFF] * 9 + [0x80, 0x00, 0xFF])  # date-time not specified
NO_SCRIPT = (bytes(6), NULL_SCRIPT)

ActionItem = tuple[bytes, int]  # script table logical name, script selector


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """The writable attributes, as stored."""

    threshold_normal: int = 0
    threshold_emergency: int = 0
    min_over: int = 0
    min_under: int = 0
    profile_id: int = 0
    profile_start: bytes = NEVER  # 12 octets as written
    profile_duration: int = 0
    group_ids: tuple[int, ...] = ()
    action_over: ActionItem = NO_SCRIPT
    action_under: ActionItem = NO_SCRIPT

    def to_record(self) -> dict[str, Any]:
        return {"normal": self.threshold_normal, "emergency": self.threshold_emergency,
                "min_over": self.min_over, "min_under": self.min_under,
                "profile": [self.profile_id, self.profile_start.hex(), self.profile_duration],
                "groups": list(self.group_ids),
                "actions": [[self.action_over[0].hex(), self.action_over[1]],
                            [self.action_under[0].hex(), self.action_under[1]]]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "LimiterSettings":
        profile_id, start, duration = record["profile"]
        (over_ln, over_sel), (under_ln, under_sel) = record["actions"]
        return cls(_int(record["normal"]), _int(record["emergency"]), _int(record["min_over"]),
                   _int(record["min_under"]), _int(profile_id), bytes.fromhex(start), _int(duration),
                   tuple(_int(g) for g in record["groups"]), (bytes.fromhex(over_ln), _int(over_sel)),
                   (bytes.fromhex(under_ln), _int(under_sel)))


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"{value!r} is not a whole number")
    return value





def _in_range(value: int, data_type: DataType, what: str) -> int:
    low, high = INTEGER_RANGES[data_type]
    if not low <= value <= high:
        raise _refuse(f"{what} is {low}..{high}")
    return value


def _action_item(value: Data) -> ActionItem:
    script, selector = _fields(value, 2, "an action item")
    script_ln = expect(script, DataType.OCTET_STRING)
    if len(script_ln) != 6:
        raise _unmatched("script_logical_name is octet-string(6)")
    return bytes(script_ln), expect(selector, DataType.LONG_UNSIGNED)


def emergency_window(raw: bytes, duration: int, zone: dt.tzinfo) -> tuple[float, float] | None:
    """[start, end) in UTC seconds of an emergency profile; None when it never applies (time not
    specified or duration 0). A partly specified time is refused (other-reason)."""
    try:
        value = axdr.decode_date_time(raw)
    except DecodeError as exc:
        raise _refuse(f"emergency_activation_time: {exc}") from None
    d, t = value.date, value.time
    if (d.year, d.month, d.day, t.hour, t.minute, t.second) == (None,) * 6:
        return None
    try:
        start = value.to_datetime()
    except ValueError:
        raise _refuse("emergency_activation_time is a whole date and time, or not specified") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=zone)
    if duration == 0:
        return None
    begin = start.timestamp()
    return begin, begin + duration


_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")


def _config_date_time(text: Any, where: str) -> bytes:
    m = _DATE_TIME.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScriptConfigError(f"{where}: activation_time is \"yyyy-mm-dd hh:mm:ss\" (local time)")
    year, month, day, hour, minute, second = (int(f) for f in m.groups())
    try:
        return axdr.encode_date_time(CosemDateTime(CosemDate(year, month, day), CosemTime(hour, minute, second, 0)))
    except EncodeError as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None


def _config_action(item: Any, where: str) -> ActionItem:
    if not isinstance(item, list) or len(item) != 2 or type(item[1]) is not int:
        raise ScriptConfigError(f"{where}: an action is [\"script table OBIS\", selector]")
    try:
        return Obis.parse(item[0]).to_bytes(), item[1]
    except (TypeError, ValueError) as exc:
        raise ScriptConfigError(f"{where}: {exc}") from None


@REGISTRY.register
class Limiter(InterfaceClass):
    class_id = 71
    version = 0
    attributes = {
        1: "logical_name", 2: "monitored_value", 3: "threshold_active", 4: "threshold_normal",
        5: "threshold_emergency", 6: "min_over_threshold_duration", 7: "min_under_threshold_duration",
        8: "emergency_profile", 9: "emergency_profile_group_id_list", 10: "emergency_profile_active", 11: "actions",
    }

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"limiter.{logical_name}"
        self.threshold_type = self._configured_threshold_type()
        self.monitored = self._configured_monitored_value()
        self._settings = self._initial()
        # the excursion, in memory only (module docstring)
        self._over = False  # an "over" was reported and no "under" since
        self._over_since: float | None = None  # when the value went over the threshold
        self._under_since: float | None = None  # when it came back, while over
        self._last_threshold: int | None = None  # the active threshold of the last evaluation

    # -- what the runtime asks and does ----------------------------------------------------------
    def settings(self) -> LimiterSettings:
        return self._settings

    @property
    def over(self) -> bool:
        """Whether the limiter reported "over" and has not reported "under" since."""
        return self._over

    def emergency_active(self, now: float) -> bool:
        """Whether the emergency profile is in force at `now` (UTC seconds)."""
        s = self._settings
        if s.profile_id not in s.group_ids:
            return False
        window = emergency_window(s.profile_start, s.profile_duration, self._zone())
        return window is not None and window[0] <= now < window[1]

    def threshold_active(self, now: float) -> int:
        """The threshold in force at `now`; 0 means the limiter is off."""
        s = self._settings
        return s.threshold_emergency if self.emergency_active(now) else s.threshold_normal

    def action(self, what: str) -> ActionItem:
        """The script (table logical name, selector) to run for "over" or "under"; selector 0
        is the null script (nothing to run)."""
        if what == LIMITER_OVER:
            return self._settings.action_over
        if what == LIMITER_UNDER:
            return self._settings.action_under
        raise ValueError(f"no limiter action for {what!r}")

    def evaluate(self, now: float, value: int | Data) -> list[str]:
        """Take the monitored value `value` sampled at `now` (UTC seconds); return what happened,
        in order: "threshold_changed" when the active threshold differs from the one of the
        previous evaluation (a write, the emergency profile starting or ending; not on the first
        evaluation); "over" once the value has been above the active threshold continuously
        for at least min_over_threshold_duration (once per excursion); "under" once, after an
        "over", it has been at or below it for at least min_under_threshold_duration. The value
        is taken to hold between samples. With threshold 0 the limiter is off: a pending
        excursion is forgotten without an "under". A time before the start of the current
        period (the clock set back) starts the period again."""
        number = value.value if isinstance(value, Data) else value
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{self.name}: the monitored value {value!r} is not a whole number")
        happened = []
        threshold = self.threshold_active(now)
        if self._last_threshold is not None and threshold != self._last_threshold:
            happened.append(LIMITER_THRESHOLD_CHANGE)
        self._last_threshold = threshold
        if threshold == 0:
            self._over, self._over_since, self._under_since = False, None, None
            return happened
        if number > threshold:
            self._under_since = None
            if not self._over:
                self._over_since = self._since(self._over_since, now)
                if now - self._over_since >= self._settings.min_over:
                    self._over, self._over_since = True, None
                    happened.append(LIMITER_OVER)
        else:
            self._over_since = None
            if self._over:
                self._under_since = self._since(self._under_since, now)
                if now - self._under_since >= self._settings.min_under:
                    self._over, self._under_since = False, None
                    happened.append(LIMITER_UNDER)
        return happened

    @staticmethod
    def _since(start: float | None, now: float) -> float:
        return now if start is None or now < start else start

    # -- state ------------------------------------------------------------------------------
    @property
    def _store(self):
        return self.bindings.get("settings")

    def _clock(self):
        return self.bindings.get(self.config.get("clock", "clock"))

    def _zone(self) -> dt.tzinfo:
        return getattr(self._clock(), "zone", dt.timezone.utc)

    def _now(self) -> float:
        clock = self._clock()
        if clock is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: no clock to tell the time")
        return clock.now()

    def _configured_threshold_type(self) -> DataType:
        name = self.config.get("threshold_type", "double-long-unsigned")
        try:
            data_type = DataType[str(name).upper().replace("-", "_")]
        except KeyError:
            data_type = None
        if data_type not in THRESHOLD_TYPES:
            raise ScriptConfigError(f"{self.name} (model): threshold_type {name!r} is not an integer type")
        return data_type

    def _configured_monitored_value(self) -> tuple[int, bytes, int]:
        where = f"{self.name} (model)"
        entry = self.config.get("monitored_value")
        if not isinstance(entry, list) or len(entry) != 3 or type(entry[0]) is not int or type(entry[2]) is not int:
            raise ScriptConfigError(f"{where}: monitored_value is [class_id, \"OBIS\", attribute_index]")
        class_id, obis, attribute = entry
        if not 0 <= class_id <= 0xFFFF or not 1 < attribute <= 127:
            raise ScriptConfigError(f"{where}: monitored_value needs a class id and a value attribute (2..127)")
        try:
            return class_id, Obis.parse(obis).to_bytes(), attribute
        except (TypeError, ValueError) as exc:
            raise ScriptConfigError(f"{where}: monitored_value: {exc}") from None

    def _initial(self) -> LimiterSettings:
        record = self._store.get(self._key) if self._store is not None else None
        try:
            if record is not None:
                try:
                    settings = LimiterSettings.from_record(record)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ScriptConfigError(f"{self.name}: the stored limiter is malformed ({exc})") from None
            else:
                settings = self._from_config()
            return self._checked(settings)
        except CosemAccessError as exc:
            raise ScriptConfigError(f"{self.name}: {'stored' if record is not None else 'model'} limiter: {exc}") \
                from None

    def _from_config(self) -> LimiterSettings:
        where = f"{self.name} (model)"
        c = self.config
        profile = c.get("emergency_profile", {})
        actions = c.get("actions", {})
        if not isinstance(profile, dict) or set(profile) - {"id", "activation_time", "duration"}:
            raise ScriptConfigError(f"{where}: emergency_profile is {{id, activation_time, duration}}")
        if not isinstance(actions, dict) or set(actions) - {"over", "under"}:
            raise ScriptConfigError(f"{where}: actions is {{over = [table, selector], under = [table, selector]}}")
        start = profile.get("activation_time")
        try:
            return LimiterSettings(
                _int(c.get("threshold_normal", 0)), _int(c.get("threshold_emergency", 0)),
                _int(c.get("min_over_threshold_duration", 0)), _int(c.get("min_under_threshold_duration", 0)),
                _int(profile.get("id", 0)), NEVER if start is None else _config_date_time(start, where),
                _int(profile.get("duration", 0)),
                tuple(_int(g) for g in c.get("emergency_profile_group_id_list", [])),
                _config_action(actions["over"], where) if "over" in actions else NO_SCRIPT,
                _config_action(actions["under"], where) if "under" in actions else NO_SCRIPT)
        except TypeError as exc:
            raise ScriptConfigError(f"{where}: {exc}") from None

    def _checked(self, s: LimiterSettings) -> LimiterSettings:
        """`s` if every value fits its type and every rule holds; else other-reason naming the first broken one."""
        _in_range(s.threshold_normal, self.threshold_type, "threshold_normal")
        _in_range(s.threshold_emergency, self.threshold_type, "threshold_emergency")
        _in_range(s.min_over, DataType.DOUBLE_LONG_UNSIGNED, "min_over_threshold_duration")
        _in_range(s.min_under, DataType.DOUBLE_LONG_UNSIGNED, "min_under_threshold_duration")
        _in_range(s.profile_id, DataType.LONG_UNSIGNED, "emergency_profile_id")
        _in_range(s.profile_duration, DataType.DOUBLE_LONG_UNSIGNED, "emergency_duration")
        if len(s.profile_start) != 12:
            raise _refuse("emergency_activation_time is 12 octets")
        emergency_window(s.profile_start, s.profile_duration, dt.timezone.utc)
        if len(s.group_ids) > MAX_GROUP_IDS:
            raise _refuse(f"at most {MAX_GROUP_IDS} emergency profile group ids")
        for group_id in s.group_ids:
            _in_range(group_id, DataType.LONG_UNSIGNED, "an emergency profile group id")
        for what, item in (("action_over_threshold", s.action_over), ("action_under_threshold", s.action_under)):
            self._check_script(what, item)
        return s

    def _check_script(self, what: str, item: ActionItem) -> None:
        script_ln, selector = item
        _in_range(selector, DataType.LONG_UNSIGNED, f"{what} script_selector")
        if len(script_ln) != 6:
            raise _refuse(f"{what}: script_logical_name is 6 octets")
        if selector == NULL_SCRIPT:
            return  # the null script runs nothing: no table needed (as IC 21)
        model = self.bindings.get("model")
        if model is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "no model to find the script table in")
        table = next((o for o in model.objects if o.obis.to_bytes() == script_ln), None)
        if table is None or table.class_id != SCRIPT_TABLE_CLASS:
            raise _refuse(f"{what}: {Obis.from_bytes(script_ln)} is not a script table")
        if selector not in scripts_from_config(table.config.get("scripts", []), table.name):
            raise _refuse(f"{what}: {table.name} has no script {selector}")

    def _commit(self, settings: LimiterSettings) -> None:
        settings = self._checked(settings)
        store = self._store
        if store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        store.put(self._key, settings.to_record())  # one record: all the settings or nothing
        self._settings = settings

    # -- attributes -------------------------------------------------------------------------
    def get_monitored_value(self, ctx: RequestContext) -> Data:
        class_id, ln, attribute = self.monitored
        return Data.structure([Data.long_unsigned(class_id), Data.octet_string(ln), Data.integer(attribute)])

    def get_threshold_active(self, ctx: RequestContext) -> Data:
        return Data(self.threshold_type, self.threshold_active(self._now()))

    def get_threshold_normal(self, ctx: RequestContext) -> Data:
        return Data(self.threshold_type, self._settings.threshold_normal)

    def get_threshold_emergency(self, ctx: RequestContext) -> Data:
        return Data(self.threshold_type, self._settings.threshold_emergency)

    def get_min_over_threshold_duration(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self._settings.min_over)

    def get_min_under_threshold_duration(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self._settings.min_under)

    def get_emergency_profile(self, ctx: RequestContext) -> Data:
        s = self._settings
        return Data.structure([Data.long_unsigned(s.profile_id), Data.octet_string(s.profile_start),
                               Data.double_long_unsigned(s.profile_duration)])

    def get_emergency_profile_group_id_list(self, ctx: RequestContext) -> Data:
        return Data.array(Data.long_unsigned(g) for g in self._settings.group_ids)

    def get_emergency_profile_active(self, ctx: RequestContext) -> Data:
        return Data.boolean(self.emergency_active(self._now()))

    def get_actions(self, ctx: RequestContext) -> Data:
        s = self._settings
        return Data.structure([Data.structure([Data.octet_string(ln), Data.long_unsigned(sel)])
                               for ln, sel in (s.action_over, s.action_under)])

    def set_threshold_normal(self, value: Data, ctx: RequestContext) -> None:
        self._commit(replace(self._settings, threshold_normal=expect(value, self.threshold_type)))

    def set_threshold_emergency(self, value: Data, ctx: RequestContext) -> None:
        self._commit(replace(self._settings, threshold_emergency=expect(value, self.threshold_type)))

    def set_min_over_threshold_duration(self, value: Data, ctx: RequestContext) -> None:
        self._commit(replace(self._settings, min_over=expect(value, DataType.DOUBLE_LONG_UNSIGNED)))

    def set_min_under_threshold_duration(self, value: Data, ctx: RequestContext) -> None:
        self._commit(replace(self._settings, min_under=expect(value, DataType.DOUBLE_LONG_UNSIGNED)))

    def set_emergency_profile(self, value: Data, ctx: RequestContext) -> None:
        profile_id, start, duration = _fields(value, 3, "emergency_profile")
        self._commit(replace(self._settings, profile_id=expect(profile_id, DataType.LONG_UNSIGNED),
                             profile_start=date_time_octets(start, 12, DataType.DATE_TIME, axdr.encode_date_time),
                             profile_duration=expect(duration, DataType.DOUBLE_LONG_UNSIGNED)))

    def set_emergency_profile_group_id_list(self, value: Data, ctx: RequestContext) -> None:
        items = expect(value, DataType.ARRAY)
        if len(items) > MAX_GROUP_IDS:
            raise _refuse(f"at most {MAX_GROUP_IDS} emergency profile group ids")
        self._commit(replace(self._settings, group_ids=tuple(expect(i, DataType.LONG_UNSIGNED) for i in items)))

    def set_actions(self, value: Data, ctx: RequestContext) -> None:
        over, under = _fields(value, 2, "actions")
        self._commit(replace(self._settings, action_over=_action_item(over), action_under=_action_item(under)))
