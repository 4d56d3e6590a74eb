"""IC 21 Register monitor (Blue Book 4.5.6): crossings run scripts; writes are validated whole.

The Alarm Monitors are the case that matters: threshold 0 on an Alarm Descriptor, action_up =
push script table 0-0:10.0.108.255 script 4 (Push Setup - On Alarm, companion §10),
action_down = the null script (selector 0).
"""
from __future__ import annotations

import pytest

from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic1_data import DataObject
from smartmeter.cosem.classes.ic21_register_monitor import RegisterMonitor
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.alarms import AlarmBitmap, AlarmBoard
from smartmeter.meter.store import MeterStore

PUSH_SCRIPT_TABLE = bytes([0, 0, 10, 0, 108, 255])
PUSH_ON_ALARM = 4
DESCRIPTOR_1 = bytes([0, 0, 97, 98, 20, 255])
DESCRIPTOR_2 = bytes([0, 0, 97, 98, 21, 255])
MONITOR_1 = bytes([0, 0, 16, 1, 0, 255])
MANAGEMENT = RequestContext("management", 1)
FRAUD_ATTEMPT = 1 << 13  # Alarm Register 1, catalog §6

ALARM_MONITOR = {
    "monitored_value": [1, "0-0:97.98.20.255", 2],
    "thresholds": [0],
    "threshold_type": "double-long-unsigned",
    "actions": [[["0-0:10.0.108.255", PUSH_ON_ALARM], ["0-0:10.0.108.255", 0]]],
    "run_script": "scripts.run",
}


class FakeDirectory:
    """Just what the monitor asks a directory: find(class_id, logical_name)."""

    def __init__(self, objects: dict[tuple[int, bytes], object]) -> None:
        self.objects = objects

    def find(self, class_id: int, ln: bytes):
        inst = self.objects.get((class_id, bytes(ln)))
        return None if inst is None else (None, inst)


class ScriptTable:
    attributes = {1: "logical_name", 2: "scripts"}


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def runs() -> list:
    return []


def values(store, runs, descriptor_values: dict[bytes, int] | None = None) -> dict:
    """Bindings: two descriptor-like values, a push script table, the runner and the store."""
    current = descriptor_values if descriptor_values is not None else {DESCRIPTOR_1: 0, DESCRIPTOR_2: 0}
    bindings = {"settings": store, "scripts.run": lambda ln, selector: runs.append((ln, selector))}
    objects = {}
    for ln in current:
        name = f"d.{ln.hex()}"
        bindings[name] = _binding(current, ln)
        objects[(1, ln)] = DataObject(Obis.from_bytes(ln), name, {"value": name}, bindings)
    objects[(9, PUSH_SCRIPT_TABLE)] = ScriptTable()
    bindings["directory"] = FakeDirectory(objects)
    return bindings


def _binding(current, ln):
    return Binding(lambda: Data.double_long_unsigned(current[ln]))


def monitor(bindings: dict, config: dict | None = None) -> RegisterMonitor:
    return RegisterMonitor(Obis.from_bytes(MONITOR_1), "Alarm monitor 1", dict(config or ALARM_MONITOR), bindings)


def attributes(m: RegisterMonitor) -> list[Data]:
    return [m.get(i, MANAGEMENT) for i in (1, 2, 3, 4)]


# -- reading the model's definition --------------------------------------------------------------

def test_attributes_as_the_model_declares_them(store, runs):
    m = monitor(values(store, runs))
    ln, thresholds, monitored, actions = attributes(m)
    assert ln == Data.octet_string(MONITOR_1)
    assert thresholds == Data.array([Data.double_long_unsigned(0)])
    assert monitored == Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_1), Data.integer(2)])
    item = lambda selector: Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE), Data.long_unsigned(selector)])  # noqa: E731
    assert actions == Data.array([Data.structure([item(PUSH_ON_ALARM), item(0)])])


# -- crossings -------------------------------------------------------------------------------------

def test_a_descriptor_becoming_non_zero_runs_push_on_alarm_once(store, runs):
    m = monitor(values(store, runs))
    m.evaluate(Data.double_long_unsigned(0))
    assert runs == []
    m.evaluate(Data.double_long_unsigned(FRAUD_ATTEMPT))
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]
    m.evaluate(Data.double_long_unsigned(FRAUD_ATTEMPT | 1))  # still above: no crossing
    m.evaluate(Data.double_long_unsigned(0))  # down: the null script runs nothing
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]
    m.evaluate(Data.double_long_unsigned(1))
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)] * 2


def test_the_first_value_counts_as_coming_from_below(store, runs):
    m = monitor(values(store, runs))
    m.evaluate(7)  # pending at the start: pushed
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]


def test_several_thresholds_each_with_its_actions(store, runs):
    config = dict(ALARM_MONITOR, thresholds=[10, 20], actions=[
        [["0-0:10.0.108.255", 1], ["0-0:10.0.108.255", 2]],
        [["0-0:10.0.108.255", 3], ["0-0:10.0.108.255", 5]],
    ])
    m = monitor(values(store, runs), config)
    for v in (5, 25, 15, 20, 5, 10, 11):
        m.evaluate(v)
    # 5->25 crosses 10 and 20 up; 25->15 crosses 20 down; 15->20 stays at or below 20;
    # 20->5 crosses 10 down; 5->10 reaches 10, not above; 10->11 crosses 10 up
    assert [s for _, s in runs] == [1, 3, 5, 2, 1]


def test_a_non_numeric_value_is_refused(store, runs):
    with pytest.raises(TypeError):
        monitor(values(store, runs)).evaluate(Data.octet_string(b"\x01"))


def test_poll_reads_the_monitored_attribute(store, runs):
    current = {DESCRIPTOR_1: 0, DESCRIPTOR_2: 0}
    m = monitor(values(store, runs, current))
    assert m.poll() == []
    current[DESCRIPTOR_1] = 4
    assert m.poll() == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]


def test_alarm_board_descriptors_drive_the_monitors_in_the_object_model(store, runs):
    """End to end through the model: an occurrence sets the descriptor, its monitor runs the
    push script; the head-end's acknowledgement brings it back below the threshold."""
    doc = {
        "profile": {"name": "t"},
        "clients": {"management": {"sap": 1, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            {"name": "Alarm descriptor 1", "class_id": 1, "obis": "0-0:97.98.20.255", "value": "alarms.descriptor_1",
             "access": {"management": {"read": "*", "write": [2]}}},
            {"name": "Alarm monitor 1", "class_id": 21, "obis": "0-0:16.1.0.255", **ALARM_MONITOR,
             "access": {"management": {"read": "*", "write": [2, 3, 4]}}},
        ],
    }
    monitors = {}
    board = AlarmBoard(store, AlarmBitmap.load(), lambda code, ctx: None,
                       on_descriptor_change=lambda reg, value: monitors[reg].evaluate(value))
    directory = ObjectModel.from_toml(doc).instantiate(
        dict(board.bindings(), settings=store, **{"scripts.run": lambda ln, sel: runs.append((ln, sel))}))
    monitors[1] = directory.find(21, MONITOR_1)[1]
    monitors[1].poll()  # the baseline at start: descriptor 0

    board.condition("fraud_attempt", True)
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]
    descriptor = directory.find(1, DESCRIPTOR_1)[1]
    descriptor.set(2, descriptor.get(2, MANAGEMENT), MANAGEMENT)  # acknowledged
    board.raise_flag("fraud_attempt")
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)] * 2


# -- writes ------------------------------------------------------------------------------------------

def test_valid_writes_persist_across_a_restart(store, runs):
    bindings = values(store, runs)
    m = monitor(bindings)
    m.set(2, Data.array([Data.long_unsigned(3), Data.long_unsigned(9)]), MANAGEMENT)
    m.set(3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2), Data.integer(2)]), MANAGEMENT)
    item = lambda selector: Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE), Data.long_unsigned(selector)])  # noqa: E731
    new_actions = Data.array([Data.structure([item(PUSH_ON_ALARM), item(0)]), Data.structure([item(1), item(2)])])
    m.set(4, new_actions, MANAGEMENT)
    written = attributes(m)

    again = monitor(values(store, runs))
    assert attributes(again) == written
    assert written[1] == Data.array([Data.long_unsigned(3), Data.long_unsigned(9)])
    assert written[2].value[1] == Data.octet_string(DESCRIPTOR_2)
    assert written[3] == new_actions


ITEM = Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE), Data.long_unsigned(PUSH_ON_ALARM)])


@pytest.mark.parametrize("index, value, result", [
    # thresholds
    (2, Data.double_long_unsigned(0), DataAccessResult.TYPE_UNMATCHED),
    (2, Data.array([Data.octet_string(b"\x00")]), DataAccessResult.TYPE_UNMATCHED),
    (2, Data.array([Data.long_unsigned(1), Data.double_long_unsigned(2)]), DataAccessResult.TYPE_UNMATCHED),
    (2, Data.array([Data(DataType.UNSIGNED, 300)]), DataAccessResult.OTHER_REASON),
    (2, Data.array([Data(DataType.FLOAT64, float("nan"))]), DataAccessResult.OTHER_REASON),
    (2, Data.array([Data.double_long_unsigned(i) for i in range(9)]), DataAccessResult.OTHER_REASON),
    # monitored_value
    (3, Data.array([]), DataAccessResult.TYPE_UNMATCHED),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2)]), DataAccessResult.TYPE_UNMATCHED),
    (3, Data.structure([Data.unsigned(1), Data.octet_string(DESCRIPTOR_2), Data.integer(2)]), DataAccessResult.TYPE_UNMATCHED),
    (3, Data.structure([Data.long_unsigned(1), Data.visible_string("x"), Data.integer(2)]), DataAccessResult.TYPE_UNMATCHED),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2), Data.unsigned(2)]), DataAccessResult.TYPE_UNMATCHED),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2[:5]), Data.integer(2)]), DataAccessResult.OTHER_REASON),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2), Data.integer(1)]), DataAccessResult.OTHER_REASON),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(DESCRIPTOR_2), Data.integer(3)]), DataAccessResult.OTHER_REASON),
    (3, Data.structure([Data.long_unsigned(3), Data.octet_string(DESCRIPTOR_2), Data.integer(2)]), DataAccessResult.OTHER_REASON),
    (3, Data.structure([Data.long_unsigned(1), Data.octet_string(bytes(6)), Data.integer(2)]), DataAccessResult.OTHER_REASON),
    # actions
    (4, Data.structure([]), DataAccessResult.TYPE_UNMATCHED),
    (4, Data.array([Data.structure([ITEM])]), DataAccessResult.TYPE_UNMATCHED),
    (4, Data.array([ITEM]), DataAccessResult.TYPE_UNMATCHED),
    (4, Data.array([Data.structure([ITEM, Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE)])])]),
     DataAccessResult.TYPE_UNMATCHED),
    (4, Data.array([Data.structure([ITEM, Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE), Data.unsigned(0)])])]),
     DataAccessResult.TYPE_UNMATCHED),
    (4, Data.array([Data.structure([ITEM, Data.structure([Data.octet_string(PUSH_SCRIPT_TABLE[:4]), Data.long_unsigned(0)])])]),
     DataAccessResult.OTHER_REASON),
    (4, Data.array([Data.structure([Data.structure([Data.octet_string(DESCRIPTOR_1), Data.long_unsigned(1)]), ITEM])]),
     DataAccessResult.OTHER_REASON),  # not a script table
    (4, Data.array([Data.structure([ITEM, ITEM])] * 9), DataAccessResult.OTHER_REASON),
    # logical name
    (1, Data.octet_string(MONITOR_1), DataAccessResult.READ_WRITE_DENIED),
])
def test_bad_writes_get_the_right_result_and_change_nothing(store, runs, index, value, result):
    m = monitor(values(store, runs))
    before = attributes(m)
    with pytest.raises(CosemAccessError) as refused:
        m.set(index, value, MANAGEMENT)
    assert refused.value.result == result
    assert attributes(m) == before
    assert attributes(monitor(values(store, runs))) == before


def test_a_null_action_may_name_any_script_table(store, runs):
    m = monitor(values(store, runs))
    m.set(4, Data.array([Data.structure([ITEM, Data.structure([Data.octet_string(bytes(6)), Data.long_unsigned(0)])])]),
          MANAGEMENT)
    m.evaluate(1)
    m.evaluate(0)
    assert runs == [(PUSH_SCRIPT_TABLE, PUSH_ON_ALARM)]


def test_without_a_store_the_settings_are_fixed(store, runs):
    bindings = values(store, runs)
    del bindings["settings"]
    m = monitor(bindings)
    with pytest.raises(CosemAccessError) as refused:
        m.set(2, Data.array([Data.double_long_unsigned(1)]), MANAGEMENT)
    assert refused.value.result == DataAccessResult.READ_WRITE_DENIED
