"""The disconnector's state machine against companion standard §5.8 (catalog §3.7): every control
mode x every trigger x every state, the mode-change rule and the event codes. The expectations
are typed here from the catalog's tables, not taken from the module under test."""
from __future__ import annotations

import itertools

import pytest

from smartmeter.meter import disconnect
from smartmeter.meter.disconnect import ControlState, Outcome

D, C, R = "D", "C", "R"
STATE = {D: 0, C: 1, R: 2}
TRIGGERS = ["remote_disconnect", "remote_reconnect", "manual_disconnect", "manual_reconnect",
            "local_disconnect", "local_reconnect"]

# catalog §3.7 "States and transitions": letter -> (trigger, from, to)
TRANSITIONS = {
    "a": ("remote_reconnect", D, C),
    "b": ("remote_disconnect", C, D),
    "c": ("remote_disconnect", R, D),
    "d": ("remote_reconnect", D, R),
    "e": ("manual_reconnect", R, C),
    "f": ("manual_disconnect", C, R),
    "g": ("local_disconnect", C, R),
    "h": ("local_reconnect", R, C),
}

# catalog §3.7 "Control modes (Figure 7)", columns b c f g a d e h, as printed
COLUMNS = "bcfgadeh"
MODE_ROWS = {
    0: "– – – – – – – –",
    1: "x x x x – x x –",
    2: "x x x x x – x –",
    3: "x x – x – x x –",
    4: "x x – x x – x –",
    5: "x x x x – x x x",
    6: "x x – x – x x x",
}

# worked out by hand from the two tables: per mode, (state, trigger) -> (new state, transition)
# for every combination that changes something; every other combination is ignored
CHANGES = {
    0: {},
    1: {(C, "remote_disconnect"): (D, "b"), (C, "manual_disconnect"): (R, "f"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"),
        (D, "remote_reconnect"): (R, "d")},
    2: {(C, "remote_disconnect"): (D, "b"), (C, "manual_disconnect"): (R, "f"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"),
        (D, "remote_reconnect"): (C, "a")},
    3: {(C, "remote_disconnect"): (D, "b"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"),
        (D, "remote_reconnect"): (R, "d")},
    4: {(C, "remote_disconnect"): (D, "b"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"),
        (D, "remote_reconnect"): (C, "a")},
    5: {(C, "remote_disconnect"): (D, "b"), (C, "manual_disconnect"): (R, "f"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"), (R, "local_reconnect"): (C, "h"),
        (D, "remote_reconnect"): (R, "d")},
    6: {(C, "remote_disconnect"): (D, "b"), (C, "local_disconnect"): (R, "g"),
        (R, "remote_disconnect"): (D, "c"), (R, "manual_reconnect"): (C, "e"), (R, "local_reconnect"): (C, "h"),
        (D, "remote_reconnect"): (R, "d")},
}

# IDIS package 2 / companion Table 38 (G_EC_09): the event each transition logs
EVENTS = {"a": 63, "b": 62, "c": 62, "d": 59, "e": 61, "f": 60, "g": 64, "h": 69}


def allowed_letters(mode: int) -> set[str]:
    return {letter for letter, mark in zip(COLUMNS, MODE_ROWS[mode].split()) if mark == "x"}


def test_the_hand_worked_changes_agree_with_the_catalog_tables():
    # the expectations below are only as good as this table: check it against the printed ones
    for mode in range(7):
        derived = {(source, trigger): (target, letter) for letter, (trigger, source, target) in TRANSITIONS.items()
                   if letter in allowed_letters(mode)}
        assert derived == CHANGES[mode]


@pytest.mark.parametrize("mode, trigger, state", list(itertools.product(range(7), TRIGGERS, [D, C, R])))
def test_every_mode_trigger_and_state(mode, trigger, state):
    outcome = disconnect.apply(mode, STATE[state], trigger)
    new_state, letter = CHANGES[mode].get((state, trigger), (state, None))
    assert outcome.new_state == ControlState(STATE[new_state])
    assert (outcome.transition.name if outcome.transition else None) == letter
    assert outcome.changed is (letter is not None)
    assert outcome.output is (new_state == C)  # output_state: connected exactly in Connected
    if letter is not None:
        trigger_of, source, target = TRANSITIONS[letter]
        t = outcome.transition
        assert (t.trigger, t.source, t.target) == (trigger_of, ControlState(STATE[source]), ControlState(STATE[target]))
        assert t.kind == trigger.split("_")[0]


@pytest.mark.parametrize("mode, letter", list(itertools.product(range(7), "abcdefgh")))
def test_allowed_is_the_mode_table(mode, letter):
    assert disconnect.allowed(mode, letter) is (letter in allowed_letters(mode))
    assert disconnect.allowed(mode, disconnect.TRANSITIONS[letter]) is (letter in allowed_letters(mode))


def test_the_intended_flows_of_the_companion():
    # default mode 3: remote disconnect b, remote "reconnect" d to Ready, the button e
    s = disconnect.apply(3, ControlState.CONNECTED, "remote_disconnect")
    assert (s.new_state, s.transition.name, s.output) == (ControlState.DISCONNECTED, "b", False)
    s = disconnect.apply(3, s.new_state, "remote_reconnect")
    assert (s.new_state, s.transition.name, s.output) == (ControlState.READY, "d", False)
    s = disconnect.apply(3, s.new_state, "manual_reconnect")
    assert (s.new_state, s.transition.name, s.output) == (ControlState.CONNECTED, "e", True)
    # the limiter: g, then the button e; in mode 3 the local reconnection h is ignored
    s = disconnect.apply(3, ControlState.CONNECTED, "local_disconnect")
    assert (s.new_state, s.transition.name) == (ControlState.READY, "g")
    assert disconnect.apply(3, s.new_state, "local_reconnect") == Outcome(ControlState.READY, None, False)
    # mode 4: direct remote reconnection a (the load-management relay)
    s = disconnect.apply(4, ControlState.DISCONNECTED, "remote_reconnect")
    assert (s.new_state, s.transition.name, s.output) == (ControlState.CONNECTED, "a", True)


@pytest.mark.parametrize("mode", range(7))
def test_the_mode_change_rule(mode):
    # mode 0 is always connected; every other mode reaches Disconnected (b) and Ready (g)
    valid = {C} if mode == 0 else {D, C, R}
    for state in (D, C, R):
        assert disconnect.state_valid_in_mode(mode, STATE[state]) is (state in valid)
    assert disconnect.reachable_states(mode) == {ControlState(STATE[s]) for s in valid}


def test_event_codes():
    for letter, code in EVENTS.items():
        assert disconnect.event_for(letter) == code
        assert disconnect.event_for(disconnect.TRANSITIONS[letter]) == code
    assert [disconnect.limiter_event_for(w) for w in ("over", "under", "threshold_changed")] == [65, 66, 67]
    assert disconnect.DISCONNECT_RECONNECT_FAILURE == 68


@pytest.mark.parametrize("call", [
    lambda: disconnect.apply(7, 1, "remote_disconnect"),
    lambda: disconnect.apply(-1, 1, "remote_disconnect"),
    lambda: disconnect.apply(3, 1, "remote_switch"),
    lambda: disconnect.apply(3, 3, "remote_disconnect"),
    lambda: disconnect.allowed(3, "i"),
    lambda: disconnect.allowed(True, "a"),
    lambda: disconnect.state_valid_in_mode(9, 1),
    lambda: disconnect.event_for("z"),
    lambda: disconnect.limiter_event_for("sideways"),
])
def test_unknown_modes_triggers_states_and_transitions_are_errors(call):
    with pytest.raises(ValueError):
        call()
