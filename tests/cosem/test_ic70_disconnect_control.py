"""IC 70 Disconnect control (Blue Book 4.5.8, companion §5.8 / §5.14): attributes and methods,
the meter's own scripts setting control_state, mode changes and their refusals; a refused
access changes neither the object nor the store, also after a restart."""
from __future__ import annotations

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.classes.ic70_disconnect_control import DisconnectControl
from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import action, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.store import MeterStore

DISCONNECTOR = Obis.parse("0-0:96.3.10.255").to_bytes()
RELAY = Obis.parse("0-1:96.3.10.255").to_bytes()
SCRIPTS = Obis.parse("0-0:10.0.106.255").to_bytes()
KEY = "disconnect_control.0-0:96.3.10.255"
RELAY_KEY = "disconnect_control.0-1:96.3.10.255"
CLIENT = RequestContext("tester", 16)
METER = RequestContext("meter", 0)  # the meter's own requests (its scripts)
DISCONNECTED, CONNECTED, READY = 0, 1, 2
TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON
READ_WRITE_DENIED = DataAccessResult.READ_WRITE_DENIED


def script(script_id: int, service: str, index: int, parameter: dict) -> dict:
    return {"id": script_id, "actions": [{"service": service, "class_id": 70, "obis": "0-0:96.3.10.255",
                                          "index": index, "parameter": parameter}]}


def model_doc(disconnector: dict | None = None, relay: dict | None = None) -> dict:
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            dict({"name": "Disconnect control", "class_id": 70, "obis": "0-0:96.3.10.255", "control_mode": 3,
                  "on_change": "disconnect.changed",
                  # write 3 granted on purpose: the class itself refuses a client's write of control_state
                  "access": {"tester": {"read": "*", "write": [3, 4], "execute": [1, 2]}}}, **(disconnector or {})),
            dict({"name": "Load management relay control 1", "class_id": 70, "obis": "0-1:96.3.10.255",
                  "fixed_mode": 4, "access": {"tester": {"read": "*", "write": [4], "execute": [1, 2]}}},
                 **(relay or {})),
            {"name": "Disconnect control script table", "class_id": 9, "obis": "0-0:10.0.106.255",
             "scripts": [script(1, "write", 3, {"type": "enum", "value": 2}),
                         script(2, "write", 3, {"type": "enum", "value": 1}),
                         script(3, "execute", 1, {"type": "integer", "value": 0}),
                         script(4, "execute", 2, {"type": "integer", "value": 0})],
             "access": {"tester": {"read": "*"}}},  # remote execute is forbidden
        ],
    }


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


class Changes:
    """The on_change binding: what it was told, and what the store held at that moment."""

    def __init__(self, store) -> None:
        self.store = store
        self.told: list = []

    def __call__(self, outcome) -> None:
        self.told.append((outcome, self.store.get(KEY) if self.store is not None else None))


def directory(store, changes=None, disconnector: dict | None = None, relay: dict | None = None):
    bindings = {}
    if changes is not None:
        bindings["disconnect.changed"] = changes
    if store is not None:
        bindings["settings"] = store
    return ObjectModel.from_toml(model_doc(disconnector, relay)).instantiate(bindings)


def meter(store, changes=None, **change) -> DisconnectControl:
    return directory(store, changes if changes is not None else Changes(store), **change).by_ln[DISCONNECTOR][1]


def relay(store) -> DisconnectControl:
    return directory(store, Changes(store)).by_ln[RELAY][1]


def attributes(control: DisconnectControl) -> list[Data]:
    return [control.get(i, CLIENT) for i in (2, 3, 4)]


def shown(output: bool, state: int, mode: int) -> list[Data]:
    return [Data.boolean(output), Data.enum(state), Data.enum(mode)]


def test_the_initial_state_is_connected_in_the_model_s_mode(store):
    assert attributes(meter(store)) == shown(True, CONNECTED, 3)
    assert attributes(relay(store)) == shown(True, CONNECTED, 4)
    assert meter(store).get(1, CLIENT) == Data.octet_string(DISCONNECTOR)
    assert store.get(KEY) is None  # nothing is stored until something changes


def test_every_attribute_survives_encoding(store):
    control = meter(store)
    for index in range(1, 5):
        value = control.get(index, CLIENT)
        assert axdr.decode_all(axdr.encode(value)) == value


def test_remote_disconnect_and_reconnect_in_the_default_mode(store):
    changes = Changes(store)
    control = meter(store, changes)
    assert control.invoke(1, Data.integer(0), CLIENT) is None
    assert attributes(control) == shown(False, DISCONNECTED, 3)
    assert attributes(meter(store)) == shown(False, DISCONNECTED, 3)  # a restart keeps it
    # mode 3: a remote reconnection only makes the disconnector ready (d), the button connects (e)
    control.invoke(2, Data.integer(0), CLIENT)
    assert attributes(control) == shown(False, READY, 3)
    outcome = control.trigger("manual_reconnect")
    assert (outcome.new_state, outcome.transition.name, outcome.output) == (CONNECTED, "e", True)
    assert attributes(meter(store)) == shown(True, CONNECTED, 3)
    # told after storing, once per transition, in order
    assert [(o.transition.name, o.new_state, o.output, held) for o, held in changes.told] == [
        ("b", DISCONNECTED, False, {"mode": 3, "state": DISCONNECTED}),
        ("d", READY, False, {"mode": 3, "state": READY}),
        ("e", CONNECTED, True, {"mode": 3, "state": CONNECTED}),
    ]


def test_a_trigger_without_a_transition_is_ignored(store):
    changes = Changes(store)
    control = meter(store, changes)
    control.invoke(2, Data.integer(0), CLIENT)  # already connected: no transition
    outcome = control.trigger("manual_disconnect")  # f is not allowed in mode 3
    assert (outcome.new_state, outcome.transition, outcome.output) == (CONNECTED, None, True)
    assert changes.told == [] and store.get(KEY) is None
    assert attributes(control) == shown(True, CONNECTED, 3)
    with pytest.raises(ValueError):
        control.trigger("remote_switch")


def test_mode_4_reconnects_directly_and_the_mode_is_kept(store):
    control = meter(store)
    control.set(4, Data.enum(4), CLIENT)
    assert attributes(meter(store)) == shown(True, CONNECTED, 4)
    control.invoke(1, Data.integer(0), CLIENT)
    control.invoke(2, Data.integer(0), CLIENT)
    assert attributes(control) == shown(True, CONNECTED, 4)
    assert store.get(KEY) == {"mode": 4, "state": CONNECTED}


def test_the_meter_s_scripts_set_control_state(store):
    changes = Changes(store)
    control = meter(store, changes)
    control.set(3, Data.enum(2), METER)  # script 1: local disconnection g
    assert attributes(control) == shown(False, READY, 3)
    control.set(3, Data.enum(1), METER)  # script 2: h is not allowed in mode 3
    assert attributes(control) == shown(False, READY, 3)
    control.set(4, Data.enum(5), CLIENT)
    control.set(3, Data.enum(1), METER)  # mode 5 allows h
    assert attributes(meter(store)) == shown(True, CONNECTED, 5)
    assert [o.transition.name for o, _ in changes.told] == ["g", "h"]


REFUSALS = [
    # (what, access, expected): each from the connected state in mode 3 after one disconnection
    ("control mode 7", lambda c: c.set(4, Data.enum(7), CLIENT), OTHER_REASON),
    ("control mode 255", lambda c: c.set(4, Data.enum(255), CLIENT), OTHER_REASON),
    ("control mode as unsigned", lambda c: c.set(4, Data.unsigned(4), CLIENT), TYPE_UNMATCHED),
    ("control mode as integer", lambda c: c.set(4, Data.integer(4), CLIENT), TYPE_UNMATCHED),
    ("mode 0 while disconnected", lambda c: c.set(4, Data.enum(0), CLIENT), OTHER_REASON),
    ("remote_reconnect with unsigned", lambda c: c.invoke(2, Data.unsigned(0), CLIENT), TYPE_UNMATCHED),
    ("remote_reconnect with enum", lambda c: c.invoke(2, Data.enum(0), CLIENT), TYPE_UNMATCHED),
    ("remote_reconnect without data", lambda c: c.invoke(2, None, CLIENT), TYPE_UNMATCHED),
    ("remote_disconnect with null-data", lambda c: c.invoke(1, Data.null(), CLIENT), TYPE_UNMATCHED),
    ("a client setting control_state", lambda c: c.set(3, Data.enum(1), CLIENT), READ_WRITE_DENIED),
    ("a script setting control_state 0", lambda c: c.set(3, Data.enum(0), METER), OTHER_REASON),
    ("a script setting control_state 3", lambda c: c.set(3, Data.enum(3), METER), OTHER_REASON),
    ("a script setting control_state as unsigned", lambda c: c.set(3, Data.unsigned(2), METER), TYPE_UNMATCHED),
    ("output_state", lambda c: c.set(2, Data.boolean(True), CLIENT), READ_WRITE_DENIED),
    ("logical_name", lambda c: c.set(1, Data.octet_string(DISCONNECTOR), CLIENT), READ_WRITE_DENIED),
    ("method 3", lambda c: c.invoke(3, Data.integer(0), CLIENT), DataAccessResult.OBJECT_UNDEFINED),
]


@pytest.mark.parametrize("what, access, expected", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_access_changes_nothing(store, what, access, expected):
    changes = Changes(store)
    control = meter(store, changes)
    control.invoke(1, Data.integer(0), CLIENT)
    before = attributes(control), store.get(KEY), len(changes.told)
    assert before[:2] == (shown(False, DISCONNECTED, 3), {"mode": 3, "state": DISCONNECTED})
    with pytest.raises(CosemAccessError) as refused:
        access(control)
    assert refused.value.result == expected
    assert (attributes(control), store.get(KEY), len(changes.told)) == before
    assert attributes(meter(store)) == before[0]  # nor after a restart


@pytest.mark.parametrize("mode", range(7))
def test_every_mode_may_be_set_while_connected(store, mode):
    control = meter(store)
    control.set(4, Data.enum(mode), CLIENT)
    assert attributes(meter(store)) == shown(True, CONNECTED, mode)


def test_mode_0_is_always_connected(store):
    changes = Changes(store)
    control = meter(store, changes)
    control.set(4, Data.enum(0), CLIENT)
    control.invoke(1, Data.integer(0), CLIENT)
    control.set(3, Data.enum(2), METER)
    for trigger in ("manual_disconnect", "local_disconnect", "remote_disconnect"):
        assert control.trigger(trigger).transition is None
    assert attributes(meter(store)) == shown(True, CONNECTED, 0)
    assert changes.told == []
    # ready for reconnection is not valid in mode 0 either
    control.set(4, Data.enum(3), CLIENT)
    control.set(3, Data.enum(2), METER)
    with pytest.raises(CosemAccessError) as refused:
        control.set(4, Data.enum(0), CLIENT)
    assert refused.value.result == OTHER_REASON
    assert attributes(meter(store)) == shown(False, READY, 3)


def test_the_relay_s_mode_is_fixed(store):
    control = relay(store)
    for value in (Data.enum(4), Data.enum(3), Data.unsigned(4)):
        with pytest.raises(CosemAccessError) as refused:
            control.set(4, value, CLIENT)
        assert refused.value.result == READ_WRITE_DENIED
    control.invoke(1, Data.integer(0), CLIENT)  # b
    assert attributes(relay(store)) == shown(False, DISCONNECTED, 4)
    control.invoke(2, Data.integer(0), CLIENT)  # a
    assert attributes(relay(store)) == shown(True, CONNECTED, 4)
    assert store.get(RELAY_KEY) == {"mode": 4, "state": CONNECTED}
    assert store.get(KEY) is None  # the two objects keep their own records


def test_a_fixed_mode_wins_over_a_stored_one(store):
    store.put(RELAY_KEY, {"mode": 3, "state": DISCONNECTED})
    assert attributes(relay(store)) == shown(False, DISCONNECTED, 4)


def test_an_unbound_on_change_refuses_before_anything_changes(store):
    control = directory(store, None).by_ln[DISCONNECTOR][1]
    with pytest.raises(CosemAccessError) as refused:
        control.invoke(1, Data.integer(0), CLIENT)
    assert refused.value.result == DataAccessResult.OBJECT_UNAVAILABLE
    assert attributes(control) == shown(True, CONNECTED, 3) and store.get(KEY) is None


def test_without_on_change_nothing_is_told(store):
    changes = Changes(store)
    control = meter(store, changes, disconnector={"on_change": None})
    control.invoke(1, Data.integer(0), CLIENT)
    assert attributes(control) == shown(False, DISCONNECTED, 3)
    assert changes.told == []


def test_without_a_store_transitions_are_kept_in_memory_and_the_mode_is_fixed():
    changes = Changes(None)
    control = meter(None, changes)
    control.invoke(1, Data.integer(0), CLIENT)
    assert attributes(control) == shown(False, DISCONNECTED, 3)
    assert [o.transition.name for o, _ in changes.told] == ["b"]
    with pytest.raises(CosemAccessError) as refused:
        control.set(4, Data.enum(4), CLIENT)
    assert refused.value.result == READ_WRITE_DENIED
    assert attributes(control) == shown(False, DISCONNECTED, 3)


@pytest.mark.parametrize("change, message", [
    ({"control_mode": 7}, "0..6"),
    ({"control_mode": "3"}, "0..6"),
    ({"fixed_mode": 9}, "0..6"),
    ({"fixed_mode": 4}, "not the fixed mode"),  # control_mode 3 in the same entry
])
def test_a_malformed_model_entry_stops_the_start(store, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, disconnector=change)


def test_the_default_mode_is_3(store):
    entry = model_doc()["object"][0]
    del entry["control_mode"]
    doc = dict(model_doc(), object=[entry])
    control = ObjectModel.from_toml(doc).instantiate({"settings": store, "disconnect.changed": Changes(store)}) \
        .by_ln[DISCONNECTOR][1]
    assert attributes(control) == shown(True, CONNECTED, 3)


@pytest.mark.parametrize("record, message", [
    ({"mode": 0, "state": DISCONNECTED}, "not valid in control mode 0"),
    ({"mode": 8, "state": CONNECTED}, "0..6"),
    ({"mode": 3, "state": 5}, "malformed"),
    ({"mode": 3, "state": True}, "malformed"),
    ({"mode": 3}, "malformed"),
])
def test_a_stored_record_edited_outside_the_meter_stops_the_start(store, record, message):
    store.put(KEY, record)
    with pytest.raises(ScriptConfigError, match=message):
        meter(store)


def test_over_the_wire_and_through_the_script_table(store):
    changes = Changes(store)
    server = DlmsServer(directory(store, changes), system_title=b"TESTMETR")
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))

    def act(ln: bytes, class_id: int, method: int, data: Data) -> int:
        request = action.ActionRequestNormal(0xC1, CosemMethodDescriptor(class_id, ln, method), data)
        return decode_xdlms(association.handle(request.to_bytes())).result

    def write(index: int, value: Data) -> int:
        request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(70, DISCONNECTOR, index), None, value)
        return decode_xdlms(association.handle(request.to_bytes())).result

    def shown_now() -> list[Data]:
        return attributes(directory(store, changes).by_ln[DISCONNECTOR][1])

    assert act(DISCONNECTOR, 70, 1, Data.integer(0)) == DataAccessResult.SUCCESS
    assert shown_now() == shown(False, DISCONNECTED, 3)
    assert write(4, Data.enum(7)) == OTHER_REASON
    assert act(DISCONNECTOR, 70, 2, Data.unsigned(0)) == TYPE_UNMATCHED
    assert write(3, Data.enum(1)) == READ_WRITE_DENIED  # the model grants it, the class refuses a client
    assert act(SCRIPTS, 9, 1, Data.long_unsigned(4)) == READ_WRITE_DENIED  # remote execute is forbidden
    assert shown_now() == shown(False, DISCONNECTED, 3)
    # the meter's own schedules and limiter run the scripts
    assert server.run_script(SCRIPTS, 4) == DataAccessResult.SUCCESS  # d
    assert shown_now() == shown(False, READY, 3)
    assert act(DISCONNECTOR, 70, 2, Data.integer(0)) == DataAccessResult.SUCCESS  # no transition from ready: ignored
    assert server.run_script(SCRIPTS, 3) == DataAccessResult.SUCCESS  # c
    assert write(4, Data.enum(4)) == DataAccessResult.SUCCESS
    assert server.run_script(SCRIPTS, 4) == DataAccessResult.SUCCESS  # a
    assert server.run_script(SCRIPTS, 1) == DataAccessResult.SUCCESS  # g
    assert shown_now() == shown(False, READY, 4)
    assert server.run_script(SCRIPTS, 2) == DataAccessResult.SUCCESS  # h is not allowed in mode 4: ignored
    assert shown_now() == shown(False, READY, 4)
    assert [o.transition.name for o, _ in changes.told] == ["b", "d", "c", "a", "g"]
