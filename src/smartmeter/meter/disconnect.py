"""The disconnector's state machine (Blue Book IC 70, companion standard §5.8): pure logic, no I/O.

Three control states and eight transitions; the control mode (0..6, companion Figure 7) says
which transitions a trigger may take. The interface class (cosem/classes/ic70_disconnect_control.py)
stores the state and the mode; the runtime switches the supply and logs the event this module names.

    state           transitions          trigger (kind)
    Disconnected 0  a -> Connected       remote_reconnect (remote)
                    d -> Ready           remote_reconnect (remote)
    Connected 1     b -> Disconnected    remote_disconnect (remote)
                    f -> Ready           manual_disconnect (manual)
                    g -> Ready           local_disconnect (local)
    Ready 2         c -> Disconnected    remote_disconnect (remote)
                    e -> Connected       manual_reconnect (manual)
                    h -> Connected       local_reconnect (local)

From one state a trigger has at most one transition in any mode: remote_reconnect leaves
Disconnected by a (modes 2, 4) or d (modes 1, 3, 5, 6), never both. A trigger the mode forbids,
or one with no transition from the current state, changes nothing ("ignored", companion §5.8).
The supply is on (output_state true) exactly when the control state is Connected.

Which states are valid in a mode ("control_mode may change only if the current control_state
is valid in the new mode"): a state is valid in a mode when the mode can reach it from Connected
with the transitions it allows. Connected is always valid (it is where every mode starts, and
mode 0 is "always connected"); in mode 0 nothing is allowed, so only Connected is valid there.
In modes 1..6 Disconnected is reached by b, and Ready by g (local disconnection is allowed in
every mode but 0), so all three states are valid. Two other readings give the same table: "some
allowed transition enters or leaves the state" and "the state can also be left again in the
mode" (from Disconnected a or d, from Ready c or e, are allowed in modes 1..6).

Event codes (IDIS package 2, companion Table 38, groups G_EC_09 and G_EC_10): one per
transition, named by where it goes and who triggered it:
    a 63 Remote connection            e 61 Manual connection
    b 62 Remote disconnection         f 60 Manual disconnection
    c 62 Remote disconnection         g 64 Local disconnection
    d 59 Disconnector ready for manual reconnection
    h 69 Local reconnection
and for the limiter 65 threshold exceeded, 66 threshold ok, 67 threshold changed; 68 is the
disconnect/reconnect failure (control state and output state differ).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ControlState(IntEnum):
    """IC 70 attribute 3 control_state."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY = 2  # ready_for_reconnection


REMOTE_DISCONNECT = "remote_disconnect"
REMOTE_RECONNECT = "remote_reconnect"
MANUAL_DISCONNECT = "manual_disconnect"
MANUAL_RECONNECT = "manual_reconnect"
LOCAL_DISCONNECT = "local_disconnect"
LOCAL_RECONNECT = "local_reconnect"
TRIGGERS = (REMOTE_DISCONNECT, REMOTE_RECONNECT, MANUAL_DISCONNECT, MANUAL_RECONNECT, LOCAL_DISCONNECT,
            LOCAL_RECONNECT)

CONTROL_MODES = range(7)
ALWAYS_CONNECTED_MODE = 0
DEFAULT_CONTROL_MODE = 3  # companion §5.8


@dataclass(frozen=True, slots=True)
class Transition:
    name: str  # "a".."h" (Blue Book IC 70 state diagram)
    trigger: str  # one of TRIGGERS
    source: ControlState
    target: ControlState

    @property
    def kind(self) -> str:
        """Who triggers it: "remote" (a client's method, a schedule), "manual" (the button) or
        "local" (the meter itself: the limiter's scripts)."""
        return self.trigger.split("_", 1)[0]


_D, _C, _R = ControlState.DISCONNECTED, ControlState.CONNECTED, ControlState.READY
TRANSITIONS: dict[str, Transition] = {t.name: t for t in (
    Transition("a", REMOTE_RECONNECT, _D, _C),
    Transition("b", REMOTE_DISCONNECT, _C, _D),
    Transition("c", REMOTE_DISCONNECT, _R, _D),
    Transition("d", REMOTE_RECONNECT, _D, _R),
    Transition("e", MANUAL_RECONNECT, _R, _C),
    Transition("f", MANUAL_DISCONNECT, _C, _R),
    Transition("g", LOCAL_DISCONNECT, _C, _R),
    Transition("h", LOCAL_RECONNECT, _R, _C),
)}

# companion §5.8 Figure 7: the transitions each control mode allows
MODE_TABLE: dict[int, frozenset[str]] = {
    0: frozenset(),
    1: frozenset("bcfgde"),
    2: frozenset("bcfgae"),
    3: frozenset("bcgde"),
    4: frozenset("bcgae"),
    5: frozenset("bcfgdeh"),
    6: frozenset("bcgdeh"),
}

# IDIS package 2 event codes (companion Table 38, G_EC_09 / G_EC_10)
READY_FOR_MANUAL_RECONNECTION = 59
MANUAL_DISCONNECTION = 60
MANUAL_CONNECTION = 61
REMOTE_DISCONNECTION = 62
REMOTE_CONNECTION = 63
LOCAL_DISCONNECTION = 64
LIMITER_THRESHOLD_EXCEEDED = 65
LIMITER_THRESHOLD_OK = 66
LIMITER_THRESHOLD_CHANGED = 67
DISCONNECT_RECONNECT_FAILURE = 68
LOCAL_RECONNECTION = 69

TRANSITION_EVENTS = {
    "a": REMOTE_CONNECTION, "b": REMOTE_DISCONNECTION, "c": REMOTE_DISCONNECTION,
    "d": READY_FOR_MANUAL_RECONNECTION, "e": MANUAL_CONNECTION, "f": MANUAL_DISCONNECTION,
    "g": LOCAL_DISCONNECTION, "h": LOCAL_RECONNECTION,
}

# what the limiter's evaluation reports (cosem/classes/ic71_limiter.py) -> event code
LIMITER_OVER = "over"
LIMITER_UNDER = "under"
LIMITER_THRESHOLD_CHANGE = "threshold_changed"
LIMITER_EVENTS = {
    LIMITER_OVER: LIMITER_THRESHOLD_EXCEEDED, LIMITER_UNDER: LIMITER_THRESHOLD_OK,
    LIMITER_THRESHOLD_CHANGE: LIMITER_THRESHOLD_CHANGED,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a trigger did: the state after it, the transition taken (None: ignored) and the
    output after it (True: the supply is connected)."""

    new_state: ControlState
    transition: Transition | None
    output: bool

    @property
    def changed(self) -> bool:
        return self.transition is not None


def _transition(transition: Transition | str) -> Transition:
    name = transition.name if isinstance(transition, Transition) else transition
    if name not in TRANSITIONS:
        raise ValueError(f"no disconnector transition {transition!r} (a..h)")
    return TRANSITIONS[name]


def _mode(mode: int) -> int:
    if type(mode) is not int or mode not in CONTROL_MODES:
        raise ValueError(f"control mode {mode!r} is not 0..6")
    return mode


def allowed(mode: int, transition: Transition | str) -> bool:
    """Whether control mode `mode` allows `transition` (a Transition or its letter)."""
    return _transition(transition).name in MODE_TABLE[_mode(mode)]


def output_state(state: ControlState | int) -> bool:
    """IC 70 attribute 2: the supply is connected exactly in the Connected state."""
    return ControlState(state) == ControlState.CONNECTED


def apply(mode: int, state: ControlState | int, trigger: str) -> Outcome:
    """What `trigger` does in `state` under control mode `mode`."""
    if trigger not in TRIGGERS:
        raise ValueError(f"no disconnector trigger {trigger!r} (one of {', '.join(TRIGGERS)})")
    state = ControlState(state)
    allowed_here = MODE_TABLE[_mode(mode)]
    # at most one transition qualifies in any mode (module docstring)
    taken = next((t for t in TRANSITIONS.values()
                  if t.trigger == trigger and t.source == state and t.name in allowed_here), None)
    if taken is None:
        return Outcome(state, None, output_state(state))
    return Outcome(taken.target, taken, output_state(taken.target))


def reachable_states(mode: int) -> frozenset[ControlState]:
    """The states mode `mode` reaches from Connected with the transitions it allows."""
    allowed_here = MODE_TABLE[_mode(mode)]
    reached = {ControlState.CONNECTED}
    frontier = [ControlState.CONNECTED]
    while frontier:
        source = frontier.pop()
        for t in TRANSITIONS.values():
            if t.name in allowed_here and t.source == source and t.target not in reached:
                reached.add(t.target)
                frontier.append(t.target)
    return frozenset(reached)


def state_valid_in_mode(mode: int, state: ControlState | int) -> bool:
    """Whether `state` is valid in control mode `mode`: reachable from Connected (module docstring)."""
    return ControlState(state) in reachable_states(mode)


def event_for(transition: Transition | str) -> int:
    """The disconnect control log's event code of `transition` (a Transition or its letter)."""
    return TRANSITION_EVENTS[_transition(transition).name]


def limiter_event_for(what: str) -> int:
    """The event code of what a limiter's evaluation reported ("over", "under", "threshold_changed")."""
    if what not in LIMITER_EVENTS:
        raise ValueError(f"no limiter event {what!r} (one of {', '.join(LIMITER_EVENTS)})")
    return LIMITER_EVENTS[what]
