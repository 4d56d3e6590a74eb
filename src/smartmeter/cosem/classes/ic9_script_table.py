"""IC 9 Script table (Blue Book 4.5.2): numbered scripts of write-attribute and execute-method
actions, run by method 1 `execute` with the meter's own authority.

The scripts come from the model. An entry reads

    scripts = [
        { id = 1, actions = [
            { service = "execute", class_id = 4, obis = "1-0:1.6.0.255", index = 1,
              parameter = { type = "integer", value = 0 } },
        ] },
    ]

`service` is "write" (write attribute, service_id 1) or "execute" (execute method, 2); `index`
the attribute or method; `parameter` a typed value (see `parameter_from_config`; absent: null-data).
Attribute 2 is read-only: what the meter does on a schedule is fixed by its model.

Script identifier 0 is reserved: executing it is the null script, no action (Blue Book 4.5.2).
The actions of a script run in order, each whatever the one before answered (decisions:
"Script execution").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect,
)
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import SmartmeterError

SERVICES = {"write": 1, "execute": 2}
NULL_SCRIPT = 0
MAX_PARAMETER_DEPTH = 4


class ScriptConfigError(SmartmeterError):
    """The scripts of a script table in the model are malformed."""


@dataclass(frozen=True, slots=True)
class ScriptAction:
    """One action_specification (the fields of the server's LocalAction, which runs it)."""

    service: int
    class_id: int
    logical_name: bytes
    index: int
    parameter: Data

    def to_data(self) -> Data:
        return Data.structure([
            Data.enum(self.service), Data.long_unsigned(self.class_id), Data.octet_string(self.logical_name),
            Data.integer(self.index), self.parameter,
        ])


def parameter_from_config(spec: Any, where: str, depth: int = 0) -> Data:
    """A typed value of the model: {type = "<A-XDR type name>", value = ...}.

    Types: null-data (no value), boolean, integer types and enum (int), octet-string (hex text),
    visible-string / utf8-string (text), bit-string ("0101..."), array and structure (a list
    of such typed values)."""
    if not isinstance(spec, dict) or "type" not in spec or set(spec) - {"type", "value"}:
        raise ScriptConfigError(f"{where}: a parameter is {{type = ..., value = ...}}")
    try:
        data_type = DataType[str(spec["type"]).upper().replace("-", "_")]
    except KeyError:
        raise ScriptConfigError(f"{where}: unknown parameter type {spec['type']!r}") from None
    value = spec.get("value")
    if data_type == DataType.NULL_DATA:
        data = Data.null()
    elif data_type in (DataType.ARRAY, DataType.STRUCTURE):
        if depth >= MAX_PARAMETER_DEPTH or not isinstance(value, list):
            raise ScriptConfigError(f"{where}: {spec['type']} needs a list of typed values (nested at most "
                                    f"{MAX_PARAMETER_DEPTH} deep)")
        data = Data(data_type, tuple(parameter_from_config(v, where, depth + 1) for v in value))
    elif data_type == DataType.OCTET_STRING:
        try:
            data = Data.octet_string(bytes.fromhex(value))
        except (TypeError, ValueError):
            raise ScriptConfigError(f"{where}: an octet-string parameter is hex text") from None
    else:
        data = Data(data_type, value)
    try:
        axdr.encode(data)  # the encoder checks every type's range and Python type
    except SmartmeterError as exc:
        raise ScriptConfigError(f"{where}: parameter {spec!r}: {exc}") from None
    return data


def scripts_from_config(entries: Any, name: str, model: Any = None) -> dict[int, tuple[ScriptAction, ...]]:
    """Script id -> actions, checked: unique ids 1..65535, known services, OBIS codes, indexes
    that fit the wire; with the model, each target an object of that class with that index."""
    if not isinstance(entries, list):
        raise ScriptConfigError(f"{name}: scripts is a list of {{id = ..., actions = [...]}}")
    scripts: dict[int, tuple[ScriptAction, ...]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"id", "actions"}:
            raise ScriptConfigError(f"{name}: a script is {{id = ..., actions = [...]}}")
        script_id = entry["id"]
        if type(script_id) is not int or not 1 <= script_id <= 0xFFFF or script_id in scripts:
            raise ScriptConfigError(f"{name}: script id {script_id!r} must be unique and 1..65535 (0 is reserved)")
        where = f"{name} script {script_id}"
        if not isinstance(entry["actions"], list):
            raise ScriptConfigError(f"{where}: actions is a list")
        actions = []
        for a in entry["actions"]:
            if not isinstance(a, dict) or not {"service", "class_id", "obis", "index"} <= set(a) \
                    or set(a) - {"service", "class_id", "obis", "index", "parameter"}:
                raise ScriptConfigError(f"{where}: an action is {{service, class_id, obis, index, parameter}}")
            if a["service"] not in SERVICES:
                raise ScriptConfigError(f"{where}: service {a['service']!r} is not one of {sorted(SERVICES)}")
            if type(a["class_id"]) is not int or not 0 <= a["class_id"] <= 0xFFFF:
                raise ScriptConfigError(f"{where}: class_id {a['class_id']!r} is not 0..65535")
            if type(a["index"]) is not int or not 1 <= a["index"] <= 127:
                raise ScriptConfigError(f"{where}: index {a['index']!r} is not 1..127")
            try:
                obis = Obis.parse(a["obis"])
            except ValueError as exc:
                raise ScriptConfigError(f"{where}: {exc}") from None
            parameter = parameter_from_config(a.get("parameter", {"type": "null-data"}), where)
            action = ScriptAction(SERVICES[a["service"]], a["class_id"], obis.to_bytes(), a["index"], parameter)
            if model is not None:
                _check_target(model, action, where)
            actions.append(action)
        scripts[script_id] = tuple(actions)
    return scripts


def _check_target(model: Any, action: ScriptAction, where: str) -> None:
    target = next((o for o in model.objects if o.obis.to_bytes() == action.logical_name), None)
    if target is None or target.class_id != action.class_id:
        raise ScriptConfigError(f"{where}: no object of class {action.class_id} "
                                f"{Obis.from_bytes(action.logical_name)} in the model")
    ic = REGISTRY.classes[target.class_id]
    table = ic.attributes if action.service == SERVICES["write"] else ic.methods
    if action.index not in table or (action.service == SERVICES["write"] and action.index == 1):
        raise ScriptConfigError(f"{where}: class {action.class_id} has no "
                                f"{'writable attribute' if action.service == 1 else 'method'} {action.index}")


@REGISTRY.register
class ScriptTable(InterfaceClass):
    class_id = 9
    version = 0
    attributes = {1: "logical_name", 2: "scripts"}
    methods = {1: "execute"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        # checked when the directory is built: a broken model stops the meter at start
        self.scripts = scripts_from_config(config.get("scripts", []), name, bindings.get("model"))

    def script_ids(self) -> frozenset[int]:
        """The identifiers `execute` accepts besides the null script 0."""
        return frozenset(self.scripts)

    def get_scripts(self, ctx: RequestContext) -> Data:
        return Data.array(
            Data.structure([Data.long_unsigned(script_id), Data.array(a.to_data() for a in actions)])
            for script_id, actions in self.scripts.items()
        )

    def do_execute(self, parameters: Data | None, ctx: RequestContext) -> None:
        script_id = expect(parameters or Data.null(), DataType.LONG_UNSIGNED)
        if script_id == NULL_SCRIPT:
            return
        actions = self.scripts.get(script_id)
        if actions is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, f"{self.name} has no script {script_id}")
        run = getattr(ctx.association, "run_script_actions", None)
        if run is None:
            raise CosemAccessError(DataAccessResult.TEMPORARY_FAILURE, "scripts run only through the server")
        results = run(actions)
        failed = next((r for r in results if r != DataAccessResult.SUCCESS), None)
        if failed is not None:
            # every action was attempted; the first refusal says what went wrong
            raise CosemAccessError(DataAccessResult(failed), f"{self.name} script {script_id}: an action failed")
