"""IC 21 Register monitor, version 0 (Blue Book 4.5.6): runs a script when the value of an
attribute crosses a threshold upwards (action_up) or downwards (action_down).

The meter's Alarm Monitors 1..3 are register monitors of the Alarm Descriptors with threshold
0: a descriptor becoming non-zero runs the push script "On Alarm". The companion standard lists
them as IC 1, which has no thresholds and no actions; IDIS uses IC 21 (docs/decisions.md).

Model entry (defaults; writes persist in the meter's store, `bindings["settings"]`):

    monitored_value = [1, "0-0:97.98.20.255", 2]       # class_id, logical name, attribute
    thresholds = [0]
    threshold_type = "double-long-unsigned"
    actions = [[["0-0:10.0.108.255", 4], ["0-0:10.0.108.255", 0]]]   # [action_up, action_down] per threshold
    run_script = "scripts.run"                          # binding: run_script(script_ln: bytes, selector: int)

The monitor does not watch by itself: whoever changes the monitored value calls `evaluate(value)`
(or `poll()`, which reads the monitored attribute through the object directory).
Script selector 0 is the null script (Blue Book IC 9: identifier 0 performs no action), so an
action item with selector 0 runs nothing.
"""
from __future__ import annotations

import math
from typing import Any

from smartmeter.cosem.classes.base import REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect
from smartmeter.cosem.data import INTEGER_RANGES, Data, DataType
from smartmeter.cosem.obis import Obis

NULL_SCRIPT = 0
SCRIPT_TABLE_CLASS = 9
DEFAULT_MAX_THRESHOLDS = 8
# the simple types a threshold may have: the numeric ones a monitored value can be compared with
NUMERIC_TYPES = frozenset({
    DataType.INTEGER, DataType.LONG, DataType.DOUBLE_LONG, DataType.LONG64, DataType.UNSIGNED,
    DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG64_UNSIGNED, DataType.FLOAT32,
    DataType.FLOAT64,
})
# how the evaluator reads the monitored attribute: the meter itself, not a client
METER_CONTEXT = RequestContext("meter", 0)


def _type_named(name: str) -> DataType:
    return DataType[name.upper().replace("-", "_")]


def _action_item(item: tuple[bytes, int]) -> Data:
    return Data.structure([Data.octet_string(item[0]), Data.long_unsigned(item[1])])


@REGISTRY.register
class RegisterMonitor(InterfaceClass):
    class_id = 21
    version = 0
    attributes = {1: "logical_name", 2: "thresholds", 3: "monitored_value", 4: "actions"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the last value evaluated; None before the first one, which counts as below every threshold
        self.last_value: int | float | None = None

    # -- stored settings ---------------------------------------------------------------------
    @property
    def _store(self):
        return self.bindings.get("settings")

    def _key(self, name: str) -> str:
        return f"register_monitor.{self.logical_name}.{name}"

    def _setting(self, name: str) -> Any:
        return self._store.get(self._key(name)) if self._store is not None else None

    def _put(self, name: str, value: Any) -> None:
        if self._store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name}: settings are fixed here")
        self._store.put(self._key(name), value)

    @property
    def max_thresholds(self) -> int:
        return int(self.config.get("max_thresholds", DEFAULT_MAX_THRESHOLDS))

    @property
    def thresholds(self) -> tuple[DataType, list[int | float]]:
        stored = self._setting("thresholds")
        if stored is not None:
            return _type_named(stored[0]), list(stored[1])
        return _type_named(self.config.get("threshold_type", "double-long-unsigned")), list(self.config.get("thresholds", []))

    @property
    def monitored_value(self) -> tuple[int, bytes, int]:
        stored = self._setting("monitored_value")
        if stored is not None:
            return int(stored[0]), bytes.fromhex(stored[1]), int(stored[2])
        class_id, ln, attribute = self.config["monitored_value"]
        return int(class_id), Obis.parse(ln).to_bytes(), int(attribute)

    @property
    def actions(self) -> list[tuple[tuple[bytes, int], tuple[bytes, int]]]:
        stored = self._setting("actions")
        if stored is not None:
            return [((bytes.fromhex(u[0]), int(u[1])), (bytes.fromhex(d[0]), int(d[1]))) for u, d in stored]
        return [((Obis.parse(u[0]).to_bytes(), int(u[1])), (Obis.parse(d[0]).to_bytes(), int(d[1])))
                for u, d in self.config.get("actions", [])]

    # -- attributes --------------------------------------------------------------------------
    def get_thresholds(self, ctx: RequestContext) -> Data:
        data_type, values = self.thresholds
        return Data.array([Data(data_type, v) for v in values])

    def set_thresholds(self, value: Data, ctx: RequestContext) -> None:
        items = expect(value, DataType.ARRAY)
        if len(items) > self.max_thresholds:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, f"at most {self.max_thresholds} thresholds")
        types = {item.type for item in items}
        if not types <= NUMERIC_TYPES:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "thresholds are numbers")
        if len(types) > 1:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "all thresholds have one type")
        data_type = types.pop() if types else self.thresholds[0]
        low_high = INTEGER_RANGES.get(data_type)
        for item in items:
            if low_high is not None and (type(item.value) is not int or not low_high[0] <= item.value <= low_high[1]):
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "threshold out of its type's range")
            if low_high is None and not (isinstance(item.value, float) and math.isfinite(item.value)):
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "threshold is not a finite number")
        self._put("thresholds", [data_type.name.lower().replace("_", "-"), [item.value for item in items]])

    def get_monitored_value(self, ctx: RequestContext) -> Data:
        class_id, ln, attribute = self.monitored_value
        return Data.structure([Data.long_unsigned(class_id), Data.octet_string(ln), Data.integer(attribute)])

    def set_monitored_value(self, value: Data, ctx: RequestContext) -> None:
        fields = expect(value, DataType.STRUCTURE)
        if len(fields) != 3:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "value_definition has three elements")
        class_id = expect(fields[0], DataType.LONG_UNSIGNED)
        ln = expect(fields[1], DataType.OCTET_STRING)
        attribute = expect(fields[2], DataType.INTEGER)
        if len(ln) != 6:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "logical_name is six octets")
        if not 1 < attribute <= 127:
            # attribute 1 is the logical name, never a number to compare
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "attribute_index must name a value attribute")
        directory = self.bindings.get("directory")
        if directory is not None:
            found = directory.find(class_id, ln)
            if found is None or attribute not in found[1].attributes:
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "no such attribute in this meter")
        self._put("monitored_value", [class_id, bytes(ln).hex(), attribute])

    def get_actions(self, ctx: RequestContext) -> Data:
        return Data.array([Data.structure([_action_item(up), _action_item(down)]) for up, down in self.actions])

    def set_actions(self, value: Data, ctx: RequestContext) -> None:
        sets = expect(value, DataType.ARRAY)
        if len(sets) > self.max_thresholds:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, f"at most {self.max_thresholds} action sets")
        parsed = []
        for action_set in sets:
            pair = expect(action_set, DataType.STRUCTURE)
            if len(pair) != 2:
                raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "action_set is {action_up, action_down}")
            parsed.append([self._checked_item(item) for item in pair])
        self._put("actions", [[[ln.hex(), selector] for ln, selector in pair] for pair in parsed])

    def _checked_item(self, item: Data) -> tuple[bytes, int]:
        fields = expect(item, DataType.STRUCTURE)
        if len(fields) != 2:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "action_item is {script_logical_name, script_selector}")
        ln = expect(fields[0], DataType.OCTET_STRING)
        selector = expect(fields[1], DataType.LONG_UNSIGNED)
        if len(ln) != 6:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "script_logical_name is six octets")
        directory = self.bindings.get("directory")
        if selector != NULL_SCRIPT and directory is not None and directory.find(SCRIPT_TABLE_CLASS, ln) is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "no such script table in this meter")
        return bytes(ln), selector

    # -- behaviour ---------------------------------------------------------------------------
    def evaluate(self, value: Data | int | float) -> list[tuple[bytes, int]]:
        """The monitored value changed to `value`: run action_up of every threshold it crossed
        upwards (from at or below to above), action_down of every one crossed downwards.
        Returns the scripts run, in threshold order."""
        new = value.value if isinstance(value, Data) else value
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise TypeError(f"{self.name}: the monitored value {value!r} is not a number")
        previous, self.last_value = self.last_value, new
        _, thresholds = self.thresholds
        run = []
        for threshold, (up, down) in zip(thresholds, self.actions):
            was_above = previous is not None and previous > threshold
            is_above = new > threshold
            if is_above and not was_above:
                run.append(up)
            elif was_above and not is_above:
                run.append(down)
        run = [item for item in run if item[1] != NULL_SCRIPT]
        if run:
            runner = self.bindings[self.config["run_script"]]
            for script_ln, selector in run:
                runner(script_ln, selector)
        return run

    def poll(self) -> list[tuple[bytes, int]]:
        """Read the monitored attribute through the object directory and evaluate it."""
        class_id, ln, attribute = self.monitored_value
        found = self.bindings["directory"].find(class_id, ln)
        if found is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: monitored object is missing")
        return self.evaluate(found[1].get(attribute, METER_CONTEXT))
