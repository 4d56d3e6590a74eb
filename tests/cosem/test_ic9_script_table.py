"""IC 9 Script table (Blue Book 4.5.2): scripts from the model, read and executed over the wire;
the actions run with the meter's own authority through the server's own path.

The tester client may only read the status object; the script writes it anyway (the meter's
authority), while the tester's own SET is refused.
"""
from __future__ import annotations

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError, ScriptTable
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import action, get, set as set_
from smartmeter.dlms.apdu.common import ActionResult, CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import EXECUTE_METHOD, WRITE_ATTRIBUTE, DlmsServer, LocalAction

TABLE = Obis.parse("0-0:10.0.109.255").to_bytes()
STATUS = Obis.parse("0-0:96.5.3.255").to_bytes()
FIXED = Obis.parse("0-0:96.5.4.255").to_bytes()


def status_write(value: int) -> dict:
    return {"service": "write", "class_id": 1, "obis": "0-0:96.5.3.255", "index": 2,
            "parameter": {"type": "unsigned", "value": value}}


SCRIPTS = [
    {"id": 1, "actions": [status_write(3)]},
    {"id": 2, "actions": [status_write(0)]},
    # the middle action is refused (a read-only value): the one after it still runs
    {"id": 3, "actions": [status_write(1), {"service": "write", "class_id": 1, "obis": "0-0:96.5.4.255", "index": 2,
                                            "parameter": {"type": "unsigned", "value": 9}}, status_write(2)]},
    # a script that runs script 1 of its own table, and one that runs itself
    {"id": 4, "actions": [{"service": "execute", "class_id": 9, "obis": "0-0:10.0.109.255", "index": 1,
                           "parameter": {"type": "long-unsigned", "value": 1}}]},
    {"id": 5, "actions": [{"service": "execute", "class_id": 9, "obis": "0-0:10.0.109.255", "index": 1,
                           "parameter": {"type": "long-unsigned", "value": 5}}]},
]


def model_doc(scripts=None) -> dict:
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            {"name": "Load profile control status", "class_id": 1, "obis": "0-0:96.5.3.255", "value": "status",
             "access": {"tester": {"read": "*"}}},
            {"name": "Fixed value", "class_id": 1, "obis": "0-0:96.5.4.255", "value": "fixed",
             "access": {"tester": {"read": "*"}}},
            {"name": "Script table", "class_id": 9, "obis": "0-0:10.0.109.255",
             "scripts": SCRIPTS if scripts is None else scripts,
             "access": {"tester": {"read": "*", "execute": [1]}}},
        ],
    }


class Recorder:
    def __init__(self) -> None:
        self.writes: list[Data] = []

    def binding(self) -> Binding:
        return Binding(lambda: self.writes[-1] if self.writes else Data.unsigned(0), self.writes.append)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder) -> DlmsServer:
    directory = ObjectModel.from_toml(model_doc()).instantiate(
        {"status": recorder.binding(), "fixed": Binding(lambda: Data.unsigned(7))})
    return DlmsServer(directory, system_title=b"TESTMETR")


@pytest.fixture
def tester(server):
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))
    assert association.associated
    return association


def execute(association, parameters: Data | None) -> ActionResult:
    request = action.ActionRequestNormal(0xC1, CosemMethodDescriptor(9, TABLE, 1), parameters)
    response = decode_xdlms(association.handle(request.to_bytes()))
    assert isinstance(response, action.ActionResponseNormal)
    return response.result


def test_the_scripts_read_as_the_blue_book_structure(tester):
    request = get.GetRequestNormal(0xC1, CosemAttributeDescriptor(9, TABLE, 2))
    response = decode_xdlms(tester.handle(request.to_bytes()))
    first = response.result.value[0]
    # script 1: structure{1, array[structure{enum 1 (write), 1, LN, 2, unsigned 3}]}
    assert first == Data.structure([Data.long_unsigned(1), Data.array([Data.structure([
        Data.enum(1), Data.long_unsigned(1), Data.octet_string(STATUS), Data.integer(2), Data.unsigned(3)])])])
    assert [s.value[0].value for s in response.result.value] == [1, 2, 3, 4, 5]
    assert response.result.value[3].value[1].value[0].value[0] == Data.enum(2)  # execute method


def test_execute_runs_the_script_with_the_meters_authority(tester, recorder):
    assert execute(tester, Data.long_unsigned(1)) == ActionResult.SUCCESS
    assert recorder.writes == [Data.unsigned(3)]
    # the client itself may not write the value the script wrote
    request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(1, STATUS, 2), None, Data.unsigned(0))
    assert decode_xdlms(tester.handle(request.to_bytes())).result == DataAccessResult.READ_WRITE_DENIED
    assert recorder.writes == [Data.unsigned(3)]


def test_a_failing_action_does_not_stop_the_ones_after_it(tester, recorder):
    """Every action runs; the answer is the first refusal (the read-only value: read-write-denied)."""
    assert execute(tester, Data.long_unsigned(3)) == ActionResult.READ_WRITE_DENIED
    assert recorder.writes == [Data.unsigned(1), Data.unsigned(2)]


def test_script_zero_is_the_null_script(tester, recorder):
    assert execute(tester, Data.long_unsigned(0)) == ActionResult.SUCCESS
    assert recorder.writes == []


@pytest.mark.parametrize("parameters, expected", [
    (Data.long_unsigned(6), ActionResult.OTHER_REASON),  # no such script
    (Data.long_unsigned(0xFFFF), ActionResult.OTHER_REASON),
    (Data.unsigned(1), ActionResult.TYPE_UNMATCHED),
    (Data.double_long_unsigned(1), ActionResult.TYPE_UNMATCHED),
    (None, ActionResult.TYPE_UNMATCHED),
])
def test_execute_of_no_script_is_refused_and_runs_nothing(tester, recorder, parameters, expected):
    assert execute(tester, parameters) == expected
    assert recorder.writes == []


def test_a_script_may_run_a_script(tester, recorder):
    assert execute(tester, Data.long_unsigned(4)) == ActionResult.SUCCESS
    assert recorder.writes == [Data.unsigned(3)]


def test_a_script_that_runs_itself_ends(tester, recorder):
    """Script 5 executes script 5: the nesting bound ends it, refused with other-reason."""
    assert execute(tester, Data.long_unsigned(5)) == ActionResult.OTHER_REASON
    assert recorder.writes == []


def test_the_scripts_attribute_is_read_only_even_for_the_meter(server):
    """Neither a client (no right) nor the meter itself (no setter) rewrites the scripts."""
    results = server.run_locally([LocalAction(WRITE_ATTRIBUTE, 9, TABLE, 2, Data.array([]))])
    assert results == [DataAccessResult.READ_WRITE_DENIED]


def test_the_local_path_maps_errors_like_a_clients(server, recorder):
    results = server.run_locally([
        LocalAction(WRITE_ATTRIBUTE, 1, STATUS, 2, Data.unsigned(5)),
        LocalAction(WRITE_ATTRIBUTE, 1, Obis.parse("0-0:96.5.9.255").to_bytes(), 2, Data.unsigned(5)),  # none
        LocalAction(WRITE_ATTRIBUTE, 3, STATUS, 2, Data.unsigned(5)),  # wrong class
        LocalAction(WRITE_ATTRIBUTE, 1, STATUS, 9, Data.unsigned(5)),  # no such attribute
        LocalAction(EXECUTE_METHOD, 9, TABLE, 2, Data.long_unsigned(1)),  # no such method
        LocalAction(EXECUTE_METHOD, 9, TABLE, 1, Data.long_unsigned(2)),
    ])
    assert results == [DataAccessResult.SUCCESS, DataAccessResult.OBJECT_UNDEFINED,
                       DataAccessResult.OBJECT_CLASS_INCONSISTENT, DataAccessResult.OBJECT_UNDEFINED,
                       DataAccessResult.OBJECT_UNDEFINED, DataAccessResult.SUCCESS]
    assert recorder.writes == [Data.unsigned(5), Data.unsigned(0)]
    assert server.run_script(TABLE, 1) == DataAccessResult.SUCCESS
    assert recorder.writes[-1] == Data.unsigned(3)


def test_execute_outside_the_server_is_refused():
    table = ScriptTable(Obis.from_bytes(TABLE), "t", {"scripts": [{"id": 1, "actions": [status_write(1)]}]}, {})
    with pytest.raises(CosemAccessError) as refused:
        table.invoke(1, Data.long_unsigned(1), RequestContext("x", 1))
    assert refused.value.result == DataAccessResult.TEMPORARY_FAILURE


@pytest.mark.parametrize("scripts, message", [
    ([{"id": 0, "actions": []}], "reserved"),
    ([{"id": 1, "actions": []}, {"id": 1, "actions": []}], "unique"),
    ([{"id": 1, "actions": [dict(status_write(1), service="read")]}], "service"),
    ([{"id": 1, "actions": [dict(status_write(1), obis="0-0:96.5")]}], "0-0:96.5"),
    ([{"id": 1, "actions": [dict(status_write(1), index=0)]}], "index"),
    ([{"id": 1, "actions": [dict(status_write(1), parameter={"type": "unsigned", "value": 256})]}], "parameter"),
    ([{"id": 1, "actions": [dict(status_write(1), parameter={"type": "float99", "value": 1})]}], "unknown"),
    ([{"id": 1, "actions": [dict(status_write(1), class_id=3)]}], "no object of class 3"),
    ([{"id": 1, "actions": [dict(status_write(1), index=3)]}], "no writable attribute 3"),
    ([{"id": 1, "actions": [dict(status_write(1), service="execute")]}], "no method 2"),
])
def test_malformed_scripts_in_the_model_stop_the_start(scripts, message):
    with pytest.raises(ScriptConfigError, match=message):
        ObjectModel.from_toml(model_doc(scripts)).instantiate({"status": Recorder().binding()})


def test_parameters_of_every_kind_encode():
    table = ScriptTable(Obis.from_bytes(TABLE), "t", {"scripts": [{"id": 7, "actions": [
        dict(status_write(0), parameter={"type": "structure", "value": [
            {"type": "octet-string", "value": "0102"}, {"type": "bit-string", "value": "01"},
            {"type": "boolean", "value": True}, {"type": "null-data"}]})]}]}, {})
    encoded = axdr.encode(table.get(2, RequestContext("x", 1)))
    parameter = axdr.decode_all(encoded).value[0].value[1].value[0].value[4]
    assert parameter == Data.structure([Data.octet_string(b"\x01\x02"), Data(DataType.BIT_STRING, "01"),
                                        Data.boolean(True), Data.null()])
