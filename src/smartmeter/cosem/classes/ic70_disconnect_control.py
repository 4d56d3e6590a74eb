"""IC 70 Disconnect control, version 0 (Blue Book 4.5.8): the supply disconnector (companion §5.8)
and the load-management relay (§5.14).

Attribute 2 `output_state` (boolean) says whether the supply is connected, 3 `control_state`
(enum: 0 disconnected, 1 connected, 2 ready for reconnection) where the state machine is, 4
`control_mode` (enum 0..6) which transitions the triggers may take. Methods 1 `remote_disconnect`
and 2 `remote_reconnect` (data: integer, any value) are the remote triggers, whether a client
calls them or a schedule runs script 3 or 4 of the disconnector script table. The state
machine itself is pure: smartmeter.meter.disconnect. Model entry:

    control_mode = 3                  # the initial mode (default 3, the companion's default)
    fixed_mode = 4                    # optional: the mode is fixed (the relay, §5.14); attribute 4
                                      # is then read-only and control_mode, if given, must equal it
    on_change = "disconnect.changed"  # optional binding: called with the Outcome of every transition

The initial control state is connected. Mode and state are one record in the meter's settings
store, so a restart keeps them; a mode write is refused (and nothing changes) when the value is
no enum (type-unmatched), not 0..6, or the current state is not valid in the new mode
(other-reason). A trigger the mode forbids, or one with no transition from the current state,
is ignored: the method answers success and nothing changes (companion §5.8: "the action is
ignored"). Without a store, transitions are kept in memory and the mode is fixed.

Attribute 3 is written only by the meter itself: scripts 1 and 2 of the disconnector script
table set it to 2 (local_disconnect, g) and 1 (local_reconnect, h). A client's write is refused
(read-write-denied) whatever the model grants. The manual triggers (the button) and the local
ones come from the runtime through `trigger(name)`.
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
from smartmeter.meter import disconnect
from smartmeter.meter.disconnect import ControlState, Outcome

# The client SAP of the meter's own requests (the server's LOCAL_CLIENT: the actions of its
# scripts). SAP 0 is no client address, so no peer's request carries it.
METER_SAP = 0
# what the scripts write into attribute 3 (companion §5.8 Table 36) -> the trigger it is
CONTROL_STATE_WRITES = {
    int(ControlState.READY): disconnect.LOCAL_DISCONNECT,  # script 1: g
    int(ControlState.CONNECTED): disconnect.LOCAL_RECONNECT,  # script 2: h
}

ChangeCallback = Callable[[Outcome], None]


@dataclass(frozen=True, slots=True)
class ControlRecord:
    mode: int
    state: ControlState

    def to_record(self) -> dict[str, Any]:
        return {"mode": self.mode, "state": int(self.state)}



def _mode_value(value: Any, where: str) -> int:
    if type(value) is not int or value not in disconnect.CONTROL_MODES:
        raise ScriptConfigError(f"{where}: a control mode is 0..6, not {value!r}")
    return value


@REGISTRY.register
class DisconnectControl(InterfaceClass):
    class_id = 70
    version = 0
    attributes = {1: "logical_name", 2: "output_state", 3: "control_state", 4: "control_mode"}
    methods = {1: "remote_disconnect", 2: "remote_reconnect"}

    def __init__(self, logical_name, name, config, bindings) -> None:
        super().__init__(logical_name, name, config, bindings)
        self._key = f"disconnect_control.{logical_name}"
        self._fixed_mode = self._configured_fixed_mode()
        self._record = self._initial()

    # -- what the runtime asks and does ---------------------------------------------------------
    def state(self) -> ControlState:
        return self._record.state

    def mode(self) -> int:
        return self._record.mode

    def output(self) -> bool:
        """Whether the supply is connected (attribute 2)."""
        return disconnect.output_state(self._record.state)

    def trigger(self, name: str) -> Outcome:
        """Apply trigger `name` (one of smartmeter.meter.disconnect.TRIGGERS) in the current mode.
        A transition is stored, then told to the `on_change` binding, which may refuse it
        (CosemAccessError: the old state is stored again); an ignored trigger changes and tells nothing. ValueError for an unknown name."""
        outcome = disconnect.apply(self._record.mode, self._record.state, name)
        if outcome.transition is None:
            return outcome
        on_change = self._on_change()  # a missing binding refuses before anything changes
        before = self._record
        self._commit(replace(before, state=outcome.new_state), required=False)
        try:
            on_change(outcome)
        except CosemAccessError:
            # the binding refused the transition (an M-Bus valve on a channel without a device):
            # the control stays where it was
            self._commit(before, required=False)
            raise
        return outcome

    # -- state ------------------------------------------------------------------------------
    @property
    def _store(self):
        return self.bindings.get("settings")

    def _configured_fixed_mode(self) -> int | None:
        fixed = self.config.get("fixed_mode")
        return None if fixed is None else _mode_value(fixed, f"{self.name} (model) fixed_mode")

    def _initial(self) -> ControlRecord:
        where = f"{self.name} (model)"
        configured = self.config.get("control_mode")
        if self._fixed_mode is not None and configured is not None and configured != self._fixed_mode:
            raise ScriptConfigError(f"{where}: control_mode {configured!r} is not the fixed mode {self._fixed_mode}")
        default = self._fixed_mode if self._fixed_mode is not None else disconnect.DEFAULT_CONTROL_MODE
        mode = _mode_value(configured if configured is not None else default, f"{where} control_mode")
        record = self._store.get(self._key) if self._store is not None else None
        if record is None:
            return ControlRecord(mode, ControlState.CONNECTED)
        try:
            if type(record["state"]) is not int:
                raise TypeError(f"state {record['state']!r}")
            stored_state = ControlState(record["state"])
            stored_mode = _mode_value(record["mode"], f"{self.name} (stored)")
        except (KeyError, TypeError, ValueError) as exc:
            raise ScriptConfigError(f"{self.name}: the stored disconnect control is malformed ({exc})") from None
        if self._fixed_mode is not None:
            stored_mode = self._fixed_mode  # the model fixes it; an older stored mode does not count
        if not disconnect.state_valid_in_mode(stored_mode, stored_state):
            raise ScriptConfigError(f"{self.name}: the stored state {stored_state.name.lower()} is not valid in "
                                    f"control mode {stored_mode}")
        return ControlRecord(stored_mode, stored_state)

    def _commit(self, record: ControlRecord, required: bool = True) -> None:
        """Store `record` in one piece, then take it. Without a store a mode change (`required`)
        is refused; a transition is kept in memory (the disconnector switches all the same)."""
        store = self._store
        if store is None:
            if required:
                raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name}: the mode is fixed here")
        else:
            store.put(self._key, record.to_record())
        self._record = record

    def _on_change(self) -> ChangeCallback:
        key = self.config.get("on_change")
        if key is None:
            return lambda outcome: None
        callback = self.bindings.get(key)
        if callback is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"{self.name}: {key} is not bound")
        return callback

    # -- attributes and methods ----------------------------------------------------------------
    def get_output_state(self, ctx: RequestContext) -> Data:
        return Data.boolean(self.output())

    def get_control_state(self, ctx: RequestContext) -> Data:
        return Data.enum(int(self._record.state))

    def get_control_mode(self, ctx: RequestContext) -> Data:
        return Data.enum(self._record.mode)

    def set_control_state(self, value: Data, ctx: RequestContext) -> None:
        if ctx.client_sap != METER_SAP:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED,
                                   f"{self.name}: control_state is set only by the meter's own scripts")
        written = expect(value, DataType.ENUM)
        trigger = CONTROL_STATE_WRITES.get(written)
        if trigger is None:
            raise _refuse("a script sets control_state to 2 (local disconnection) or 1 (local reconnection)")
        self.trigger(trigger)

    def set_control_mode(self, value: Data, ctx: RequestContext) -> None:
        if self._fixed_mode is not None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED,
                                   f"{self.name}: control_mode is fixed at {self._fixed_mode}")
        mode = expect(value, DataType.ENUM)
        if mode not in disconnect.CONTROL_MODES:
            raise _refuse("control_mode is 0..6")
        if not disconnect.state_valid_in_mode(mode, self._record.state):
            raise _refuse(f"control_state {self._record.state.name.lower()} is not valid in control mode {mode}")
        self._commit(replace(self._record, mode=mode))

    def do_remote_disconnect(self, parameters: Data | None, ctx: RequestContext) -> None:
        _integer_0(parameters)
        self.trigger(disconnect.REMOTE_DISCONNECT)

    def do_remote_reconnect(self, parameters: Data | None, ctx: RequestContext) -> None:
        _integer_0(parameters)
        self.trigger(disconnect.REMOTE_RECONNECT)


def _integer_0(parameters: Data | None) -> None:
    """The methods' data ::= integer (0) (Blue Book 4.5.8)."""
    if expect(parameters or Data.null(), DataType.INTEGER) != 0:
        raise _refuse("the parameter is integer (0)")
