"""IC 6 Register activation (Blue Book 4.3.5): the companion's T1/T2 example from the model,
the meter told of every change of the counting registers, and every refused change (unknown
registers, bad indexes, two rates of one quantity in a mask, the active mask missing) changing
neither the object nor the store, also after a restart."""
from __future__ import annotations

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic6_register_activation import RegisterActivation
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import DataAccessResult
from smartmeter.meter.store import MeterStore

ENERGY = Obis.parse("0-0:14.0.1.255").to_bytes()
DEMAND = Obis.parse("0-0:14.0.2.255").to_bytes()
KEY = "register_activation.0-0:14.0.1.255"
CTX = RequestContext("tester", 16)
TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON
RATE_REGISTERS = ["1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.1.255", "1-0:2.8.2.255",
                  "1-0:3.8.1.255", "1-0:3.8.2.255", "1-0:4.8.1.255", "1-0:4.8.2.255"]


def ln(text: str) -> bytes:
    return Obis.parse(text).to_bytes()


def model_doc(change: dict | None = None) -> dict:
    energy = {"name": "Register activation - Energy", "class_id": 6, "obis": "0-0:14.0.1.255",
              "register_assignment": [{"class_id": 3, "obis": o} for o in RATE_REGISTERS],
              "mask_list": [{"name": "T1", "registers": [1, 3, 5, 7]}, {"name": "T2", "registers": [2, 4, 6, 8]}],
              "active_mask": "T2", "on_active_mask": "tariff.energy_activation",
              "access": {"tester": {"read": "*", "write": [2, 3, 4], "execute": [1, 2, 3]}}}
    energy.update(change or {})
    registers = [{"name": o, "class_id": 3, "obis": o, "value": "energy", "unit": "Wh",
                  "access": {"tester": {"read": "*"}}} for o in [*RATE_REGISTERS, "1-0:1.8.0.255", "1-0:1.8.3.255"]]
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            *registers,
            {"name": "Demand register", "class_id": 5, "obis": "1-0:1.4.0.255", "value": "demand", "unit": "W",
             "access": {"tester": {"read": "*"}}},
            {"name": "Currently active energy tariff", "class_id": 1, "obis": "0-0:96.14.0.255", "value": "tariff",
             "access": {"tester": {"read": "*"}}},
            energy,
            {"name": "Register activation - Maximum Demand", "class_id": 6, "obis": "0-0:14.0.2.255",
             "register_assignment": [], "mask_list": [{"name": "T1", "registers": []}, {"name": "T2", "registers": []}],
             "active_mask": "T2", "access": {"tester": {"read": "*", "write": [2, 3, 4], "execute": [1, 2, 3]}}},
        ],
    }


class Meter:
    """What the meter is told: every call of the energy activation binding; may refuse."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, tuple]] = []
        self.refuse: CosemAccessError | None = None

    def __call__(self, mask_name: bytes, registers: tuple) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.calls.append((mask_name, registers))


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def told() -> Meter:
    return Meter()


def directory(store, told: Meter | None = None, change: dict | None = None):
    bindings = {"energy": Binding(lambda: Data.double_long_unsigned(0)),
                "demand": Binding(lambda: Data.long_unsigned(0)), "tariff": Binding(lambda: Data.octet_string(b"T2"))}
    if told is not None:
        bindings["tariff.energy_activation"] = told
    if store is not None:
        bindings["settings"] = store
    return ObjectModel.from_toml(model_doc(change)).instantiate(bindings)


def meter(store, told: Meter | None = None, change: dict | None = None) -> RegisterActivation:
    return directory(store, told, change).by_ln[ENERGY][1]


def register(obis: str, class_id: int = 3) -> Data:
    return Data.structure([Data.long_unsigned(class_id), Data.octet_string(ln(obis))])


def mask(name: bytes, *indexes: int) -> Data:
    return Data.structure([Data.octet_string(name), Data.array(Data.unsigned(i) for i in indexes)])


def attributes(activation: RegisterActivation) -> list[Data]:
    return [activation.get(i, CTX) for i in (2, 3, 4)]


EXAMPLE = [Data.array(register(o) for o in RATE_REGISTERS),
           Data.array([mask(b"T1", 1, 3, 5, 7), mask(b"T2", 2, 4, 6, 8)]), Data.octet_string(b"T2")]
T1_REGISTERS = tuple((3, ln(o)) for o in RATE_REGISTERS[0::2])
T2_REGISTERS = tuple((3, ln(o)) for o in RATE_REGISTERS[1::2])


def test_the_initial_values_are_the_companion_s_example(store, told):
    activation = meter(store, told)
    assert attributes(activation) == EXAMPLE
    assert activation.active_mask() == b"T2"
    assert activation.active_registers() == T2_REGISTERS
    assert activation.masks() == {b"T1": T1_REGISTERS, b"T2": T2_REGISTERS}
    assert told.calls == []  # not at start


def test_the_maximum_demand_object_has_empty_masks(store):
    demand = directory(store).by_ln[DEMAND][1]
    assert [demand.get(i, CTX) for i in (2, 3, 4)] == [Data.array([]), Data.array([mask(b"T1"), mask(b"T2")]),
                                                        Data.octet_string(b"T2")]
    demand.set(4, Data.octet_string(b"T1"), CTX)  # no binding to tell: nothing called
    assert directory(store).by_ln[DEMAND][1].active_mask() == b"T1"


def test_every_attribute_survives_encoding(store, told):
    activation = meter(store, told)
    for index in (1, 2, 3, 4):
        value = activation.get(index, CTX)
        assert axdr.decode_all(axdr.encode(value)) == value


def test_writing_the_active_mask_tells_the_meter_and_is_kept(store, told):
    activation = meter(store, told)
    activation.set(4, Data.octet_string(b"T1"), CTX)
    assert told.calls == [(b"T1", T1_REGISTERS)]
    activation.set(4, Data.octet_string(b"T1"), CTX)  # a tariff script writing the same mask again
    assert told.calls == [(b"T1", T1_REGISTERS)] * 2
    restarted = meter(store, told)
    assert restarted.get(4, CTX) == Data.octet_string(b"T1")
    assert restarted.active_registers() == T1_REGISTERS


def test_a_refusal_of_the_meter_stores_nothing(store, told):
    activation = meter(store, told)
    told.refuse = CosemAccessError(DataAccessResult.TEMPORARY_FAILURE, "busy")
    with pytest.raises(CosemAccessError) as refused:
        activation.set(4, Data.octet_string(b"T1"), CTX)
    assert refused.value.result == DataAccessResult.TEMPORARY_FAILURE
    assert attributes(activation) == EXAMPLE and store.get(KEY) is None
    assert meter(store, told).active_mask() == b"T2"


def test_a_missing_binding_refuses_the_write(store):
    activation = meter(store, None)
    with pytest.raises(CosemAccessError) as refused:
        activation.set(4, Data.octet_string(b"T1"), CTX)
    assert refused.value.result == DataAccessResult.OBJECT_UNAVAILABLE
    assert attributes(activation) == EXAMPLE


def test_masks_added_replaced_and_deleted(store, told):
    activation = meter(store, told)
    activation.invoke(2, mask(b"T3", 1, 4), CTX)  # a new mask: the counting registers stay
    assert told.calls == []
    activation.invoke(2, mask(b"T2", 2, 4), CTX)  # the active one replaced: the meter is told
    assert told.calls == [(b"T2", T2_REGISTERS[:2])]
    activation.invoke(3, Data.octet_string(b"T1"), CTX)
    activation.invoke(3, Data.octet_string(b"T9"), CTX)  # not there: nothing to do
    assert meter(store, told).get(3, CTX) == Data.array([mask(b"T2", 2, 4), mask(b"T3", 1, 4)])


def test_a_register_added(store, told):
    activation = meter(store, told)
    activation.invoke(1, register("1-0:1.8.0.255"), CTX)
    assert meter(store, told).register_assignment()[-1] == (3, ln("1-0:1.8.0.255"))
    activation.set(3, Data.array([mask(b"T1", 1, 3, 5, 7), mask(b"T2", 2, 4, 6, 8), mask(b"total", 9)]), CTX)
    assert told.calls == []
    assert activation.masks()[b"total"] == ((3, ln("1-0:1.8.0.255")),)


def test_a_reordered_assignment_that_changes_the_active_registers_tells_the_meter(store, told):
    activation = meter(store, told)
    swapped = [RATE_REGISTERS[1], RATE_REGISTERS[0], *RATE_REGISTERS[2:]]
    activation.set(2, Data.array(register(o) for o in swapped), CTX)
    assert told.calls == [(b"T2", ((3, ln("1-0:1.8.1.255")),) + T2_REGISTERS[1:])]


BAD = [
    # (what, attribute or ("method", n), value, expected)
    ("a register that does not exist", 2, Data.array([*EXAMPLE[0].value, register("1-0:1.8.4.255")]), OTHER_REASON),
    ("a register of another class", 2, Data.array([*EXAMPLE[0].value[:7], register("1-0:4.8.2.255", 4)]),
     OTHER_REASON),
    ("an object that is no register", 2, Data.array([*EXAMPLE[0].value, register("0-0:96.14.0.255", 1)]),
     OTHER_REASON),
    ("a register assigned twice", 2, Data.array([*EXAMPLE[0].value, register("1-0:1.8.1.255")]), OTHER_REASON),
    ("an assignment too short for the masks", 2, Data.array(EXAMPLE[0].value[:7]), OTHER_REASON),
    ("a class_id as unsigned", 2,
     Data.array([Data.structure([Data.unsigned(3), Data.octet_string(ln("1-0:1.8.1.255"))])]), TYPE_UNMATCHED),
    ("a logical name of five octets", 2, Data.array([Data.structure([Data.long_unsigned(3),
                                                                     Data.octet_string(ln("1-0:1.8.1.255")[:5])])]),
     TYPE_UNMATCHED),
    ("index 0", 3, Data.array([mask(b"T1", 0, 3), mask(b"T2", 2)]), OTHER_REASON),
    ("index 9 of 8", 3, Data.array([mask(b"T1", 1, 9), mask(b"T2", 2)]), OTHER_REASON),
    ("an index twice", 3, Data.array([mask(b"T1", 1, 1), mask(b"T2", 2)]), OTHER_REASON),
    ("1.8.1 and 1.8.2 in one mask", 3, Data.array([mask(b"T1", 1, 2), mask(b"T2", 4)]), OTHER_REASON),
    ("two masks of one name", 3, Data.array([mask(b"T2", 1), mask(b"T2", 2)]), OTHER_REASON),
    ("a mask without a name", 3, Data.array([mask(b"", 1), mask(b"T2", 2)]), OTHER_REASON),
    ("a mask list without the active mask", 3, Data.array([mask(b"T1", 1, 3, 5, 7)]), OTHER_REASON),
    ("seventeen masks", 3, Data.array([mask(b"T2", 2)] + [mask(bytes([65 + i]), 1) for i in range(16)]), OTHER_REASON),
    ("an index as long-unsigned", 3, Data.array([Data.structure([Data.octet_string(b"T2"),
                                                                 Data.array([Data.long_unsigned(2)])])]),
     TYPE_UNMATCHED),
    ("a mask of one field", 3, Data.array([Data.structure([Data.octet_string(b"T2")])]), TYPE_UNMATCHED),
    ("an active mask that is not in the list", 4, Data.octet_string(b"T9"), OTHER_REASON),
    ("an active mask as visible-string", 4, Data.visible_string("T1"), TYPE_UNMATCHED),
    ("add_register of an unknown register", ("method", 1), register("1-0:1.8.4.255"), OTHER_REASON),
    ("add_register of one assigned already", ("method", 1), register("1-0:2.8.2.255"), OTHER_REASON),
    ("add_mask with two rates of +A", ("method", 2), mask(b"T3", 1, 2), OTHER_REASON),
    ("add_mask replacing the active one with index 0", ("method", 2), mask(b"T2", 0), OTHER_REASON),
    ("add_mask of an array", ("method", 2), Data.array([mask(b"T3", 1)]), TYPE_UNMATCHED),
    ("delete the active mask", ("method", 3), Data.octet_string(b"T2"), OTHER_REASON),
    ("delete by unsigned", ("method", 3), Data.unsigned(2), TYPE_UNMATCHED),
]


@pytest.mark.parametrize("what, target, value, expected", BAD, ids=[b[0] for b in BAD])
def test_a_refused_change_changes_nothing(store, told, what, target, value, expected):
    activation = meter(store, told)
    activation.invoke(2, mask(b"T3", 1, 4), CTX)  # something in the store to keep
    before = attributes(activation), store.get(KEY)
    with pytest.raises(CosemAccessError) as refused:
        if isinstance(target, tuple):
            activation.invoke(target[1], value, CTX)
        else:
            activation.set(target, value, CTX)
    assert refused.value.result == expected
    assert (attributes(activation), store.get(KEY)) == before
    assert told.calls == []
    assert attributes(meter(store, told)) == before[0]  # nor after a restart


@pytest.mark.parametrize("change, message", [
    ({"register_assignment": [{"class_id": 3, "obis": "1-0:1.8.9.255"}]}, "no register"),
    ({"mask_list": [{"name": "T1", "registers": [1, 2]}, {"name": "T2", "registers": [3]}]}, "one quantity"),
    ({"active_mask": "T3"}, "not in the mask list"),
    ({"mask_list": [{"name": "T1"}]}, "mask_list"),
])
def test_a_malformed_model_entry_stops_the_start(store, told, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, told, change)


def test_without_a_store_the_object_is_fixed(told):
    activation = meter(None, told)
    with pytest.raises(CosemAccessError) as refused:
        activation.set(4, Data.octet_string(b"T1"), CTX)
    assert refused.value.result == DataAccessResult.READ_WRITE_DENIED
    assert told.calls == []
