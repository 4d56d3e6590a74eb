"""P3/P4/U3/U4 influence via user and communication interfaces: the protective interface's
dispatcher is exactly the documented command list, every undeclared input is refused and
changes nothing, and over DLMS only the certification client may write a legally relevant
object; the meter listens only on its declared ports."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.dlms.client import AccessDenied
from smartmeter.legal import interface as legal
from smartmeter.legal.process import decode_command
from welmec_support import (
    CERTIFICATION_MODE, FATAL_ERROR_REGISTER, LEGAL_FIRMWARE_SIGNATURE, PARAMETER_RECORD_NUMBER, ROOT, read_public,
    secured, start_meter_from,
)

LEGAL_BINDINGS = ("legal.", "energy.", "load_profile_1", "demand.", "maximum_demand.", "cumulative_maximum_demand.")
ALLOWED_LEGAL_WRITES = {("certification", "0-0:94.43.143.255", 2)}


def _documented_commands() -> list[str]:
    text = (ROOT / "docs" / "welmec" / "protective-interface.md").read_text()
    return re.findall(r"^\| `(\w+)` \|", text, flags=re.M)


def _state(part: legal.LegalInterface) -> tuple:
    """Everything legally relevant the interface shows (the refusal counter excepted)."""
    return (part.execute(legal.ReadEnergyRegisters()), part.execute(legal.CountLoadProfileEntries()),
            part.execute(legal.ReadParameters()), part.execute(legal.ReadParameterRecordNumber()),
            part.execute(legal.ReadCertificationMode()).active, part.execute(legal.ReadFatalErrors()),
            len(part.execute(legal.ReadCertificationLog())),
            # refused authority claims are logged (rate-limited): evidence, not a change
            len([r for r in part.execute(legal.ReadMetrologicalLog()) if r.event_id != legal.EVENT_AUTHORITY_REFUSED]),
            part.execute(legal.ReadSoftwareIdentity()).legal_digest)


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    p = legal.LegalInterface(tmp_path_factory.mktemp("legal"))
    p.execute(legal.RegisterSimulatedPower(2000.0, 500.0, 30.0))
    p.execute(legal.EndMeasurementPeriod(1_773_144_000))
    yield p
    p.close()


@pytest.mark.welmec("S3")
def test_the_dispatcher_table_equals_the_documented_command_list(tmp_path):
    """The commands LegalInterface.execute dispatches are exactly those of docs/welmec/protective-interface.md, each a frozen dataclass of interface.py."""
    p = legal.LegalInterface(tmp_path)
    try:
        declared = p.commands
    finally:
        p.close()
    assert [c.__name__ for c in declared] == _documented_commands()
    for cmd in declared:
        assert dataclasses.is_dataclass(cmd) and cmd.__dataclass_params__.frozen
        assert cmd.__module__ == "smartmeter.legal.interface"
        assert getattr(legal, cmd.__name__) is cmd


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


class _Lookalike:
    """An object that is not a declared command but looks like one."""

    def __init__(self, name: str) -> None:
        self.__class__ = type(name, (), {})


hostile_objects = st.one_of(
    json_values,
    st.binary(max_size=16),
    st.sampled_from([legal.ReadEnergyRegisters, legal.RegisterSimulatedPower, object(), type, print, ...]),
    st.sampled_from(["ResetRegisters", "SetEnergy", "DeleteLog", "ReadEnergyRegisters", "EraseProfile"]).map(_Lookalike),
)


@pytest.mark.welmec("S3")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.lists(hostile_objects, min_size=1, max_size=5))
def test_every_undeclared_input_is_refused_counted_and_changes_nothing(part, hostile):
    """Arbitrary objects and JSON values handed to the protective interface are refused, counted, and change no legally relevant value."""
    before = _state(part)
    refused = part.execute(legal.ReadRefusedCommandCount())
    for item in hostile:
        with pytest.raises(legal.CommandRefused):
            part.execute(item)
    assert _state(part) == before
    assert part.execute(legal.ReadRefusedCommandCount()) == refused + len(hostile)


def _allowed(part) -> dict[str, type]:
    return {cls.__name__: cls for cls in (*part.commands, *legal.RECORD_TYPES)}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.builds(lambda name, fields: json.dumps({"type": name, "fields": fields}).encode(),
              st.sampled_from(["ReadEnergyRegisters", "SetParameters", "RegisterSimulatedPower", "ResetRegisters"]),
              st.dictionaries(st.sampled_from(["active_w", "seconds", "changes", "x", "register"]), json_values,
                              max_size=3)),
))
@pytest.mark.welmec("S3")
def test_only_well_formed_declared_commands_cross_the_process_boundary(part, raw):
    """Bytes arriving at the legal process become a declared command with exactly its declared fields, or are refused."""
    allowed = _allowed(part)
    try:
        command = decode_command(raw, allowed)
    except legal.CommandRefused:
        return
    assert type(command) in part.commands
    sent = json.loads(raw)
    assert set(sent["fields"]) == {f.name for f in dataclasses.fields(type(command))}


# values a communication-side bug or attacker could put into the fields of a declared command
hostile_field = st.one_of(st.none(), st.text(max_size=10), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                          st.sampled_from([float("nan"), float("inf"), -1.0, -10**30, 2**64, "", "ff" * 8]))


@pytest.mark.welmec("S3")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_declared_commands_with_malformed_fields_change_no_legal_value(part, data):
    """Declared commands with malformed field values never lower a register, change a parameter, the certification mode or the fatal error register."""
    cls = data.draw(st.sampled_from([c for c in part.commands if c is not legal.InjectMetrologyStall]))
    fields = {f.name: data.draw(hostile_field) for f in dataclasses.fields(cls)}
    before = _state(part)
    try:
        part.execute(cls(**fields))
    except Exception:  # noqa: BLE001 - refused or failed: either way nothing may have changed wrongly
        pass
    after = _state(part)
    for name in ("a_plus", "a_minus", "r_plus", "r_minus"):
        assert getattr(after[0], name) >= getattr(before[0], name)
    assert after[2:] == before[2:]


# -- DLMS ----------------------------------------------------------------------------------------


def _legal_objects(model: ObjectModel):
    for o in model.objects:
        if any(isinstance(v, str) and v.startswith(LEGAL_BINDINGS) for v in o.config.values()):
            yield o


@pytest.mark.welmec("P4", "U4")
def test_the_model_grants_no_write_or_method_on_legal_objects_except_certification_mode():
    """In the object model, the only write to a legally relevant object is attribute 2 of 0-0:94.43.143.255 by the certification client, and no method touches one except the maximum demand reset."""
    model = ObjectModel.load("ksmw")
    legal_objects = list(_legal_objects(model))
    assert {str(o.obis) for o in legal_objects} >= {"1-0:1.8.0.255", "1-0:0.2.8.255", "0-0:97.97.128.255",
                                                    "0-0:94.43.143.255", "0-0:99.98.98.255", "1-0:99.1.0.255"}
    writes = {(client, str(o.obis), index) for o in legal_objects for client, access in o.access.items()
              for index in access.write}
    assert writes == ALLOWED_LEGAL_WRITES
    methods = {(str(o.obis), o.class_id) for o in legal_objects for access in o.access.values() if access.execute}
    assert all(class_id == 4 for _, class_id in methods)  # IC 4 reset: maximum demand only (see I3-4)


@pytest.fixture(scope="module")
def dlms_meter(tmp_path_factory):
    m = start_meter_from(None, tmp_path_factory.mktemp("p4"))
    yield m
    m.stop()


def _legal_values(meter) -> list:
    return [d.value for d in read_public(meter, [(LEGAL_FIRMWARE_SIGNATURE, 2, 1), (PARAMETER_RECORD_NUMBER, 2, 1),
                                                 (FATAL_ERROR_REGISTER, 2, 1)])]


@pytest.mark.welmec("P4", "U4", "P7", "U7")
def test_dlms_writes_to_legal_objects_by_other_clients_are_refused_and_change_nothing(dlms_meter):
    """Every client except the certification client is refused when it writes any legally relevant object over DLMS, and nothing changes."""
    model = ObjectModel.load("ksmw")
    targets = [(str(o.obis), o.class_id) for o in _legal_objects(model) if o.class_id in (1, 3)]
    values = {1: Data.double_long_unsigned(0), 3: Data.double_long_unsigned(0)}
    before = _legal_values(dlms_meter)

    refusals = []

    async def try_all(client_name: str) -> list[str]:
        accepted = []
        async with secured(dlms_meter, client_name) as client:
            mode_before = await client.get(CERTIFICATION_MODE, 2, class_id=1) if client_name in (
                "management", "installation", "maintenance") else None
            for obis, class_id in targets:
                for value in (values[class_id], Data.structure([Data.boolean(True), Data.enum(5), Data.enum(5),
                                                                 Data.unsigned(1), Data.long_unsigned(1000)])):
                    try:
                        await client.set(obis, 2, value, class_id=class_id)
                    except AccessDenied as exc:
                        refusals.append(exc.result.name)
                        continue
                    accepted.append(obis)
            if mode_before is not None:
                assert await client.get(CERTIFICATION_MODE, 2, class_id=1) == mode_before
        return accepted

    for client_name in ("public", "management", "data_readout", "installation", "maintenance"):
        assert asyncio.run(try_all(client_name)) == [], client_name
    assert len(refusals) == 5 * 2 * len(targets)
    assert set(refusals) <= {"READ_WRITE_DENIED", "OBJECT_UNAVAILABLE", "OBJECT_UNDEFINED"}, set(refusals)
    assert _legal_values(dlms_meter) == before


def _listening(pid: int) -> set[tuple[str, int]]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and (proto.startswith("udp") or state == "0A"):  # 0A = LISTEN
                found.add((proto.rstrip("6"), int(local.rsplit(":", 1)[1], 16)))
    return found


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.welmec("P4", "U4")
def test_the_meter_listens_only_on_its_declared_ports(dlms_meter):
    """The running meter listens only on its declared wrapper (TCP+UDP) and HDLC ports; the legal process listens on none."""
    pid = dlms_meter.process.pid
    assert _listening(pid) == {("tcp", dlms_meter.wrapper_port), ("udp", dlms_meter.wrapper_port),
                               ("tcp", dlms_meter.hdlc_port)}
    children = _children(pid)
    assert children, "the legal part runs in a child process"
    for child in children:
        assert _listening(child) == set()


@pytest.mark.welmec("S3")
def test_declared_commands_with_wrongly_typed_fields_are_refused_by_the_legal_process(tmp_path):
    """At the process boundary a declared command whose field values are not of their declared types is refused and changes nothing."""
    client = legal.start_legal_process(tmp_path)
    try:
        before = client.execute(legal.ReadMaximumDemand("a_plus"))
        for bad in (legal.ResetMaximumDemand([1]), legal.ResetMaximumDemand("now"), legal.StartDemandPeriod("y"),
                    legal.EndMeasurementPeriod(None), legal.ReadDemand(5), legal.RegisterSimulatedPower("1e3", 0.0, 1.0),
                    legal.SetParameters(((1, 2),), 0, "00" * 8, True), legal.ReadLoadProfile("a", None)):
            with pytest.raises(legal.CommandRefused):
                client.execute(bad)
        assert client.execute(legal.ReadMaximumDemand("a_plus")) == before
        assert client.execute(legal.ReadEnergyRegisters()) == legal.EnergySnapshot(0, 0, 0, 0)
        client.execute(legal.ResetMaximumDemand(1_773_144_000, "a_plus"))  # well-typed: accepted
        assert client.execute(legal.ReadMaximumDemand("a_plus")).capture_time == 1_773_144_000
    finally:
        client.close()
