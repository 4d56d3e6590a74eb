"""IC 6 Register activation (Blue Book 4.3.5): which tariff registers count at present.

Attribute 2 `register_assignment` lists the registers (class_id, logical name); attribute 3
`mask_list` names sets of them by 1-based index ("T1" = +A, -A, +R, -R of rate 1); attribute 4
`active_mask` names the set that counts now - the tariff scripts write it (companion §5.5).
Initial values come from the model:

    register_assignment = [{ class_id = 3, obis = "1-0:1.8.1.255" }, { class_id = 3, obis = "1-0:1.8.2.255" }]
    mask_list = [{ name = "T1", registers = [1] }, { name = "T2", registers = [2] }]
    active_mask = "T2"
    on_active_mask = "tariff.energy_activation"     # optional: the binding told of a change

Every change is checked as a whole and stored in one piece in the meter's settings store, so a
restart keeps it and a refused change changes nothing: every register exists in the object
model with that class (a register, extended register or demand register) and is assigned
once; a mask's indexes point into the assignment, once each, and name at most one register
of a quantity (1-0:1.8.1 and 1-0:1.8.2 are both +A: one mask counting both would count twice);
mask names are unique and not empty; the active mask is one of them, or empty (no mask is
active). The active mask cannot be deleted, nor dropped by a write of the mask list.

When a change sets attribute 4 or changes the registers of the active mask, the binding named
by `on_active_mask` is called with (mask name, ((class_id, logical name), ...)) before the
change is stored; it switches the rate the meter counts in, and may refuse with
CosemAccessError - then nothing is stored. At start it is not called: the runtime reads
`active_mask()` and `active_registers()`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, expect,
)
from smartmeter.cosem.classes.base import other_reason as _refuse
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis

REGISTER_CLASSES = (3, 4, 5)  # register, extended register, demand register
MAX_REGISTERS = 64
MAX_MASKS = 16
MAX_MASK_NAME_OCTETS = 32

Register = tuple[int, bytes]  # class_id, logical name
Mask = tuple[bytes, tuple[int, ...]]  # mask_name, 1-based indexes into the assignment

ActiveMaskCallback = Callable[[bytes, tuple[Register, ...]], None]


@dataclass(frozen=True, slots=True)
class ActivationState:
    assignment: tuple[Register, ...]
    masks: tuple[Mask, ...]
    active: bytes

    def registers(self, mask_name: bytes) -> tuple[Register, ...]:
        indexes = next((ix for name, ix in self.masks if name == mask_name), ())
        return tuple(self.assignment[i - 1] for i in indexes)

    def to_record(self) -> dict[str, Any]:
        return {"assignment": [[c, ln.hex()] for c, ln in self.assignment],
                "masks": [[name.hex(), list(ix)] for name, ix in self.masks], "active": self.active.hex()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "ActivationState":
        return cls(tuple((int(c), bytes.fromhex(ln)) for c, ln in record["assignment"]),
                   tuple((bytes.fromhex(n), tuple(int(i) for i in ix)) for n, ix in record["masks"]),
                   bytes.fromhex(record["active"]))



def _register(value: Data) -> Register:
    fields = expect(value, DataType.STRUCTURE)
    if len(fields) != 2:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "an object definition is structure{class_id, name}")
    class_id = expect(fields[0], DataType.LONG_UNSIGNED)
    logical_name = expect(fields[1], DataType.OCTET_STRING)
    if len(logical_name) != 6:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "logical_name is octet-string(6)")
    return class_id, logical_name


def _mask_name(value: Data) -> bytes:
    name = expect(value, DataType.OCTET_STRING)
    if len(name) > MAX_MASK_NAME_OCTETS:
        raise _refuse(f"a mask name is at most {MAX_MASK_NAME_OCTETS} octets")
    return name


def _mask(value: Data) -> Mask:
    fields = expect(value, DataType.STRUCTURE)
    if len(fields) != 2:
        raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "a mask is structure{mask_name, index_list}")
    indexes = expect(fields[1], DataType.ARRAY)
    if len(indexes) > MAX_REGISTERS:
        raise _refuse(f"a mask names at most {MAX_REGISTERS} registers")
    return _mask_name(fields[0]), tuple(expect(i, DataType.UNSIGNED) for i in indexes)


def _array(value: Data, limit: int, what: str) -> tuple[Data, ...]:
    items = expect(value, DataType.ARRAY)
    if len(items) > limit:
        raise _refuse(f"at most {limit} {what}")
    return items


@REGISTRY.register
class RegisterActivation(InterfaceClass):
    class_id = 6
    version = 0
    attributes = {1: "logical_name", 2: "register_assignment", 3: "mask_list", 4: "active_mask"}
    methods = {1: "add_register", 2: "add_mask", 3: "delete_mask"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"register_activation.{logical_name}"
        self._state = self._initial()

    # -- what the runtime asks ----------------------------------------------------------------
    def active_mask(self) -> bytes:
        return self._state.active

    def active_registers(self) -> tuple[Register, ...]:
        """(class_id, logical name) of the registers of the active mask, in mask order."""
        return self._state.registers(self._state.active)

    def masks(self) -> dict[bytes, tuple[Register, ...]]:
        """Every mask by name, with its registers, in list order."""
        return {name: self._state.registers(name) for name, _ in self._state.masks}

    def register_assignment(self) -> tuple[Register, ...]:
        return self._state.assignment

    # -- state ------------------------------------------------------------------------------
    @property
    def _store(self):
        return self.bindings.get("settings")

    def _initial(self) -> ActivationState:
        record = self._store.get(self._key) if self._store is not None else None
        try:
            if record is not None:
                try:
                    state = ActivationState.from_record(record)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ScriptConfigError(f"{self.name}: the stored register activation is malformed ({exc})") \
                        from None
            else:
                state = self._from_config()
            return self._checked(state)
        except CosemAccessError as exc:
            raise ScriptConfigError(f"{self.name}: {'stored' if record is not None else 'model'} register "
                                    f"activation: {exc}") from None

    def _from_config(self) -> ActivationState:
        where = f"{self.name} (model)"
        try:
            assignment = tuple((int(r["class_id"]), Obis.parse(r["obis"]).to_bytes())
                               for r in self.config.get("register_assignment", []))
            masks = tuple((str(m["name"]).encode(), tuple(int(i) for i in m["registers"]))
                          for m in self.config.get("mask_list", []))
            active = str(self.config.get("active_mask", "")).encode()
        except (KeyError, TypeError, ValueError) as exc:
            raise ScriptConfigError(f"{where}: register_assignment [{{class_id, obis}}], mask_list [{{name, "
                                    f"registers}}], active_mask \"name\" ({exc})") from None
        return ActivationState(assignment, masks, active)

    def _checked(self, state: ActivationState) -> ActivationState:
        """`state` if every rule of the module docstring holds; else other-reason naming the first broken one."""
        if len(state.assignment) > MAX_REGISTERS or len(state.masks) > MAX_MASKS:
            raise _refuse(f"at most {MAX_REGISTERS} registers and {MAX_MASKS} masks")
        if len(set(state.assignment)) != len(state.assignment):
            raise _refuse("a register is assigned twice")
        model = self.bindings.get("model")
        if model is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "no model to find the registers in")
        classes = {o.obis.to_bytes(): o.class_id for o in model.objects}
        for class_id, logical_name in state.assignment:
            if class_id not in REGISTER_CLASSES or classes.get(logical_name) != class_id:
                raise _refuse(f"no register of class {class_id} {Obis.from_bytes(logical_name)} in the meter")
        names = [name for name, _ in state.masks]
        if len(set(names)) != len(names) or b"" in names:
            raise _refuse("mask names are unique and not empty (an empty active_mask: no mask is active)")
        for name, indexes in state.masks:
            if len(set(indexes)) != len(indexes) or any(not 1 <= i <= len(state.assignment) for i in indexes):
                raise _refuse(f"mask {name!r}: indexes are 1..{len(state.assignment)}, each once")
            quantities = [state.assignment[i - 1][1][:4] for i in indexes]  # OBIS A-B:C.D: the rate E differs
            if len(set(quantities)) != len(quantities):
                raise _refuse(f"mask {name!r} names two registers of one quantity")
        if state.active and state.active not in names:
            raise _refuse(f"active_mask {state.active!r} is not in the mask list")
        return state

    def _commit(self, state: ActivationState, mask_written: bool = False) -> None:
        """Check, tell the meter if the counting registers change, store in one piece."""
        state = self._checked(state)
        store = self._store
        if store is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is fixed here")
        old = self._state
        registers = state.registers(state.active)
        if mask_written or (state.active, registers) != (old.active, old.registers(old.active)):
            self._on_active_mask()(state.active, registers)  # may refuse: then nothing is stored
        store.put(self._key, state.to_record())
        self._state = state

    def _on_active_mask(self) -> ActiveMaskCallback:
        key = self.config.get("on_active_mask")
        if key is None:
            return lambda name, registers: None
        callback = self.bindings.get(key)
        if callback is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: {key} is not bound")
        return callback

    # -- attributes and methods ----------------------------------------------------------------
    def get_register_assignment(self, ctx: RequestContext) -> Data:
        return Data.array(Data.structure([Data.long_unsigned(c), Data.octet_string(ln)])
                          for c, ln in self._state.assignment)

    def get_mask_list(self, ctx: RequestContext) -> Data:
        return Data.array(Data.structure([Data.octet_string(name), Data.array(Data.unsigned(i) for i in ix)])
                          for name, ix in self._state.masks)

    def get_active_mask(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self._state.active)

    def set_register_assignment(self, value: Data, ctx: RequestContext) -> None:
        items = _array(value, MAX_REGISTERS, "registers")
        self._commit(replace(self._state, assignment=tuple(_register(i) for i in items)))

    def set_mask_list(self, value: Data, ctx: RequestContext) -> None:
        items = _array(value, MAX_MASKS, "masks")
        self._commit(replace(self._state, masks=tuple(_mask(i) for i in items)))

    def set_active_mask(self, value: Data, ctx: RequestContext) -> None:
        self._commit(replace(self._state, active=_mask_name(value)), mask_written=True)

    def do_add_register(self, parameters: Data | None, ctx: RequestContext) -> None:
        register = _register(parameters or Data.null())
        self._commit(replace(self._state, assignment=self._state.assignment + (register,)))

    def do_add_mask(self, parameters: Data | None, ctx: RequestContext) -> None:
        mask = _mask(parameters or Data.null())
        masks = list(self._state.masks)
        at = next((n for n, (name, _) in enumerate(masks) if name == mask[0]), None)
        if at is None:
            masks.append(mask)
        else:
            masks[at] = mask  # the same name replaces
        self._commit(replace(self._state, masks=tuple(masks)))

    def do_delete_mask(self, parameters: Data | None, ctx: RequestContext) -> None:
        name = expect(parameters or Data.null(), DataType.OCTET_STRING)
        if any(n == name for n, _ in self._state.masks):
            if name == self._state.active:
                raise _refuse(f"mask {name!r} is active")
            self._commit(replace(self._state, masks=tuple(m for m in self._state.masks if m[0] != name)))
