"""Errors and alarms (companion standard §9): causes in, register / descriptor / event values out.

Expected values are computed here from the bit numbers as the catalog writes them (Alarm
Register 1 = IDIS/DSMR table) and as docs/decisions.md assigns registers 2 and 3, never from
the engine's own tables.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic1_data import DataObject
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.alarms import AlarmBitmap, AlarmBoard, AlarmMapError, AlarmStoreError
from smartmeter.meter.store import MeterStore

# Alarm Register 1 / Error Register, catalog §6 (IDIS/DSMR)
CLOCK_INVALID = 1 << 0
REPLACE_BATTERY = 1 << 1
POWER_UP = 1 << 2
PROGRAM_MEMORY_ERROR = 1 << 8
RAM_ERROR = 1 << 9
NV_MEMORY_ERROR = 1 << 10
MEASUREMENT_SYSTEM_ERROR = 1 << 11
WATCHDOG_ERROR = 1 << 12
FRAUD_ATTEMPT = 1 << 13
MBUS_COMMUNICATION_ERROR = [1 << 16, 1 << 17, 1 << 18, 1 << 19]
MBUS_FRAUD_ATTEMPT = [1 << 20, 1 << 21, 1 << 22, 1 << 23]
# Alarm Register 2 (security, tampering) and 3 (disconnector, limiter, power quality), decisions
AUTHENTICATION_FAILURE_2 = 1 << 0
REPLAY_ATTACK_2 = 1 << 2
TERMINAL_COVER_OPEN_2 = 1 << 8
DISCONNECT_FAILURE_3 = 1 << 0
LIMITER_EXCEEDED_3 = 1 << 3
VOLTAGE_SAG_L1_3 = 1 << 8
VOLTAGE_CUT_L1_3 = 1 << 14

ERROR_REGISTER_CLEARED = 10
ALARM_REGISTER_CLEARED = 11
TEN_MINUTES = 600.0

MANAGEMENT = RequestContext("management", 1)
BITMAP = AlarmBitmap.load()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, dict]] = []
        self.alarms: list[tuple[int, int]] = []
        self.descriptors: list[tuple[int, int]] = []


def board_on(store: MeterStore, rec: Recorder | None = None) -> AlarmBoard:
    rec = rec if rec is not None else Recorder()
    return AlarmBoard(store, BITMAP, lambda code, ctx: rec.events.append((code, ctx)),
                      on_alarm=lambda reg, bits: rec.alarms.append((reg, bits)),
                      on_descriptor_change=lambda reg, value: rec.descriptors.append((reg, value)))


@pytest.fixture
def store(tmp_path) -> MeterStore:
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def board(store, rec) -> AlarmBoard:
    return board_on(store, rec)


def cosem_object(board: AlarmBoard, binding: str) -> DataObject:
    """The IC 1 object the model declares for `binding`, as a client reaches it."""
    return DataObject(Obis.parse("0-0:97.98.0.255"), binding, {"value": binding}, board.bindings())


def read(board: AlarmBoard, binding: str) -> int:
    value = cosem_object(board, binding).get(2, MANAGEMENT)
    assert value.type == DataType.DOUBLE_LONG_UNSIGNED
    return value.value


def write(board: AlarmBoard, binding: str, value: Data, ctx: RequestContext = MANAGEMENT) -> None:
    cosem_object(board, binding).set(2, value, ctx)


def everything(board: AlarmBoard) -> dict:
    names = ["alarms.error_register"] + [f"alarms.{kind}_{n}" for kind in ("alarm_register", "filter", "descriptor")
                                         for n in (1, 2, 3)]
    return {name: read(board, name) for name in names}


# -- the bit map --------------------------------------------------------------------------------

def test_alarm_register_1_is_the_catalog_table():
    bits = {f.name: (f.register, 1 << f.bit) for f in BITMAP.flags.values() if f.register == 1}
    assert bits == {
        "clock_invalid": (1, CLOCK_INVALID), "replace_battery": (1, REPLACE_BATTERY), "power_up": (1, POWER_UP),
        "program_memory_error": (1, PROGRAM_MEMORY_ERROR), "ram_error": (1, RAM_ERROR),
        "nv_memory_error": (1, NV_MEMORY_ERROR), "measurement_system_error": (1, MEASUREMENT_SYSTEM_ERROR),
        "watchdog_error": (1, WATCHDOG_ERROR), "fraud_attempt": (1, FRAUD_ATTEMPT),
        **{f"mbus_communication_error_{ch}": (1, MBUS_COMMUNICATION_ERROR[ch - 1]) for ch in range(1, 5)},
        **{f"mbus_fraud_attempt_{ch}": (1, MBUS_FRAUD_ATTEMPT[ch - 1]) for ch in range(1, 5)},
    }
    assert BITMAP.flag("fraud_attempt").latched


@pytest.mark.parametrize("doc, message", [
    ({"flag": [{"name": "a", "register": 1, "bit": 11}, {"name": "b", "register": 1, "bit": 11}]}, "already"),
    ({"flag": [{"name": "measurement_system_error", "register": 1, "bit": 32}]}, "0..31"),
    ({"flag": [{"name": "measurement_system_error", "register": 4, "bit": 1}]}, "1, 2 or 3"),
    ({"flag": [{"name": "x", "register": 1, "bit": 1}]}, "measurement_system_error"),
    ({"flag": [{"name": "measurement_system_error", "register": 1, "bit": 11},
               {"name": "measurement_system_error", "register": 2, "bit": 11}]}, "twice"),
])
def test_an_inconsistent_bit_map_is_refused(doc, message):
    with pytest.raises(AlarmMapError, match=message):
        AlarmBitmap.from_toml(doc)


# -- causes -------------------------------------------------------------------------------------

def test_error_register_follows_the_root_cause_and_the_alarm_register_keeps_it(board, rec):
    board.condition("ram_error", True)
    assert everything(board)["alarms.error_register"] == RAM_ERROR
    assert read(board, "alarms.alarm_register_1") == RAM_ERROR
    assert read(board, "alarms.descriptor_1") == RAM_ERROR
    assert rec.alarms == [(1, RAM_ERROR)]

    board.condition("ram_error", False)
    assert read(board, "alarms.error_register") == 0
    assert read(board, "alarms.alarm_register_1") == RAM_ERROR
    assert read(board, "alarms.descriptor_1") == RAM_ERROR
    assert rec.events == []  # nothing was cleared by anyone


def test_reporting_a_state_twice_is_one_occurrence(board, rec):
    board.condition("terminal_cover_open", True)
    board.condition("terminal_cover_open", True)
    assert rec.alarms == [(2, TERMINAL_COVER_OPEN_2)]
    assert read(board, "alarms.alarm_register_2") == TERMINAL_COVER_OPEN_2
    assert read(board, "alarms.error_register") == 0  # register 2 flags are not errors


def test_a_one_shot_cause_stays_in_the_error_register_until_cleared(board, rec):
    board.raise_flag("power_up")
    board.raise_flag("association_authentication_failure")
    assert read(board, "alarms.error_register") == POWER_UP
    assert read(board, "alarms.alarm_register_1") == POWER_UP
    assert read(board, "alarms.alarm_register_2") == AUTHENTICATION_FAILURE_2
    assert rec.alarms == [(1, POWER_UP), (2, AUTHENTICATION_FAILURE_2)]
    write(board, "alarms.error_register", Data.double_long_unsigned(POWER_UP))
    assert read(board, "alarms.error_register") == 0


def test_fraud_attempt_stays_latched_until_cleared_externally(board, rec):
    board.condition("fraud_attempt", True)
    board.condition("ram_error", True)
    board.condition("fraud_attempt", False)
    board.condition("ram_error", False)
    assert read(board, "alarms.error_register") == FRAUD_ATTEMPT
    assert read(board, "alarms.alarm_register_1") == FRAUD_ATTEMPT | RAM_ERROR

    write(board, "alarms.error_register", Data.double_long_unsigned(read(board, "alarms.error_register")))
    assert read(board, "alarms.error_register") == 0
    assert [code for code, _ in rec.events] == [ERROR_REGISTER_CLEARED]
    assert rec.events[0][1]["cleared"] == FRAUD_ATTEMPT
    assert rec.events[0][1]["client_sap"] == 1
    # the alarm register is a separate object: still latched until it is cleared itself
    assert read(board, "alarms.alarm_register_1") == FRAUD_ATTEMPT | RAM_ERROR


def test_an_error_whose_cause_is_active_survives_a_clear(board, rec):
    board.condition("nv_memory_error", True)
    board.raise_flag("power_up")
    write(board, "alarms.error_register", Data.double_long_unsigned(NV_MEMORY_ERROR | POWER_UP))
    assert read(board, "alarms.error_register") == NV_MEMORY_ERROR
    assert rec.events == [(ERROR_REGISTER_CLEARED, rec.events[0][1])]
    assert rec.events[0][1]["cleared"] == POWER_UP

    write(board, "alarms.error_register", Data.double_long_unsigned(NV_MEMORY_ERROR))
    assert len(rec.events) == 1  # nothing reset, nothing logged
    board.condition("nv_memory_error", False)
    assert read(board, "alarms.error_register") == 0


def test_unknown_flag_is_a_programming_error_and_changes_nothing(board, rec):
    before = everything(board)
    with pytest.raises(KeyError):
        board.condition("cosmic_ray", True)
    with pytest.raises(KeyError):
        board.raise_flag("cosmic_ray")
    assert everything(board) == before
    assert rec.alarms == [] and rec.events == []


def test_every_fatal_error_is_a_measurement_system_error(board, rec):
    board.fatal(0b1)
    assert read(board, "alarms.error_register") == MEASUREMENT_SYSTEM_ERROR
    assert read(board, "alarms.alarm_register_1") == MEASUREMENT_SYSTEM_ERROR
    assert read(board, "alarms.descriptor_1") == MEASUREMENT_SYSTEM_ERROR
    assert rec.alarms == [(1, MEASUREMENT_SYSTEM_ERROR)]

    board.fatal(0b1)  # the same fatal state reported again (e.g. at every start)
    assert rec.alarms == [(1, MEASUREMENT_SYSTEM_ERROR)]

    # acknowledged and cleared by the head-end; the error itself cannot be cleared
    write(board, "alarms.descriptor_1", Data.double_long_unsigned(MEASUREMENT_SYSTEM_ERROR))
    write(board, "alarms.alarm_register_1", Data.double_long_unsigned(MEASUREMENT_SYSTEM_ERROR))
    write(board, "alarms.error_register", Data.double_long_unsigned(MEASUREMENT_SYSTEM_ERROR))
    assert read(board, "alarms.error_register") == MEASUREMENT_SYSTEM_ERROR
    assert [code for code, _ in rec.events] == [ALARM_REGISTER_CLEARED]

    board.fatal(0b101)  # a second fatal error is a new occurrence
    assert read(board, "alarms.alarm_register_1") == MEASUREMENT_SYSTEM_ERROR
    assert read(board, "alarms.descriptor_1") == MEASUREMENT_SYSTEM_ERROR
    assert rec.alarms == [(1, MEASUREMENT_SYSTEM_ERROR)] * 2


# -- clearing ------------------------------------------------------------------------------------

def test_clearing_an_alarm_register_resets_the_written_bits_and_logs_event_11_once(board, rec):
    board.raise_flag("replay_attack")
    board.raise_flag("association_authentication_failure")
    board.condition("terminal_cover_open", True)
    write(board, "alarms.alarm_register_2", Data.double_long_unsigned(REPLAY_ATTACK_2))
    assert read(board, "alarms.alarm_register_2") == AUTHENTICATION_FAILURE_2 | TERMINAL_COVER_OPEN_2
    write(board, "alarms.alarm_register_2", Data.double_long_unsigned(read(board, "alarms.alarm_register_2")))
    assert read(board, "alarms.alarm_register_2") == 0
    write(board, "alarms.alarm_register_2", Data.double_long_unsigned(0xFFFFFFFF))  # nothing left
    assert [(code, ctx["register"], ctx["cleared"]) for code, ctx in rec.events] == [
        (ALARM_REGISTER_CLEARED, "alarm_register_2", REPLAY_ATTACK_2),
        (ALARM_REGISTER_CLEARED, "alarm_register_2", AUTHENTICATION_FAILURE_2 | TERMINAL_COVER_OPEN_2),
    ]
    # the cover is still open: cleared is cleared until it opens again
    board.condition("terminal_cover_open", True)
    assert read(board, "alarms.alarm_register_2") == 0
    board.condition("terminal_cover_open", False)
    board.condition("terminal_cover_open", True)
    assert read(board, "alarms.alarm_register_2") == TERMINAL_COVER_OPEN_2
    # descriptors are the head-end's acknowledgement, not a register clear: no event
    write(board, "alarms.descriptor_2", Data.double_long_unsigned(0xFFFFFFFF))
    assert read(board, "alarms.descriptor_2") == 0
    assert len(rec.events) == 2


def test_a_new_occurrence_after_the_acknowledgement_alarms_again(board, rec):
    board.raise_flag("association_authentication_failure")
    board.raise_flag("association_authentication_failure")  # not acknowledged yet: nothing new
    assert rec.alarms == [(2, AUTHENTICATION_FAILURE_2)]
    write(board, "alarms.descriptor_2", Data.double_long_unsigned(AUTHENTICATION_FAILURE_2))
    board.raise_flag("association_authentication_failure")
    assert rec.alarms == [(2, AUTHENTICATION_FAILURE_2)] * 2
    assert rec.descriptors == [(2, AUTHENTICATION_FAILURE_2), (2, 0), (2, AUTHENTICATION_FAILURE_2)]


# -- filters ----------------------------------------------------------------------------------------

def test_a_filtered_bit_is_recorded_but_not_notified(board, rec):
    assert read(board, "alarms.filter_3") & VOLTAGE_SAG_L1_3 == 0  # sags are filtered out by default
    assert read(board, "alarms.filter_3") & VOLTAGE_CUT_L1_3
    board.condition("voltage_sag_l1", True)
    assert read(board, "alarms.alarm_register_3") == VOLTAGE_SAG_L1_3
    assert read(board, "alarms.descriptor_3") == 0
    assert rec.alarms == []

    write(board, "alarms.filter_3", Data.double_long_unsigned(VOLTAGE_SAG_L1_3 | DISCONNECT_FAILURE_3))
    assert read(board, "alarms.descriptor_3") == 0  # the filter applies to occurrences from now on
    board.condition("voltage_sag_l1", False)
    board.condition("voltage_sag_l1", True)
    board.raise_flag("disconnect_reconnect_failure")
    board.condition("limiter_threshold_exceeded", True)  # filtered out now
    assert read(board, "alarms.descriptor_3") == VOLTAGE_SAG_L1_3 | DISCONNECT_FAILURE_3
    assert read(board, "alarms.alarm_register_3") == VOLTAGE_SAG_L1_3 | DISCONNECT_FAILURE_3 | LIMITER_EXCEEDED_3
    assert rec.alarms == [(3, VOLTAGE_SAG_L1_3), (3, DISCONNECT_FAILURE_3)]


@pytest.mark.parametrize("binding", ["alarms.filter_1", "alarms.alarm_register_2", "alarms.descriptor_3",
                                     "alarms.error_register"])
@pytest.mark.parametrize("value, result", [
    (Data.long_unsigned(0), DataAccessResult.TYPE_UNMATCHED),
    (Data.double_long(0), DataAccessResult.TYPE_UNMATCHED),
    (Data.octet_string(b"\x00\x00\x00\x00"), DataAccessResult.TYPE_UNMATCHED),
    (Data.null(), DataAccessResult.TYPE_UNMATCHED),
    (Data(DataType.DOUBLE_LONG_UNSIGNED, 1 << 32), DataAccessResult.OTHER_REASON),
    (Data(DataType.DOUBLE_LONG_UNSIGNED, -1), DataAccessResult.OTHER_REASON),
])
def test_bad_writes_get_the_right_result_and_change_nothing(board, rec, store, binding, value, result):
    board.fatal(1)
    board.condition("terminal_cover_open", True)
    board.raise_flag("disconnect_reconnect_failure")
    before, stored, seen = everything(board), store.get("alarms.state"), (list(rec.events), list(rec.alarms))
    with pytest.raises(CosemAccessError) as refused:
        write(board, binding, value)
    assert refused.value.result == result
    assert everything(board) == before
    assert store.get("alarms.state") == stored
    assert (rec.events, rec.alarms) == seen


def test_python_api_refuses_values_outside_a_register(board):
    for bad in (-1, 1 << 32, 1.0, True):
        with pytest.raises(ValueError):
            board.set_filter(1, bad)
    with pytest.raises(ValueError):
        board.clear_alarm_register(4, 1)


# -- durability -------------------------------------------------------------------------------------

def test_state_survives_a_restart(store, rec):
    first = board_on(store, rec)
    first.condition("ram_error", True)
    first.condition("fraud_attempt", True)
    first.raise_flag("replay_attack")
    first.set_filter(2, REPLAY_ATTACK_2)
    first.fatal(0b10)
    write(first, "alarms.descriptor_1", Data.double_long_unsigned(RAM_ERROR))
    before = everything(first)

    again = Recorder()
    second = board_on(store, again)
    assert everything(second) == before
    assert before["alarms.error_register"] == RAM_ERROR | FRAUD_ATTEMPT | MEASUREMENT_SYSTEM_ERROR
    assert before["alarms.descriptor_1"] == FRAUD_ATTEMPT | MEASUREMENT_SYSTEM_ERROR
    assert before["alarms.filter_2"] == REPLAY_ATTACK_2
    # the causes report their state again after the start: no new occurrence
    second.condition("ram_error", True)
    second.fatal(0b10)
    assert again.alarms == []
    second.condition("ram_error", False)
    second.condition("fraud_attempt", False)
    assert read(second, "alarms.error_register") == FRAUD_ATTEMPT | MEASUREMENT_SYSTEM_ERROR


def test_one_store_write_per_change(store, rec):
    puts = []
    real_put = store.put
    store.put = lambda key, value: (puts.append(key), real_put(key, value))[1]
    board = board_on(store, rec)
    board.condition("ram_error", True)
    board.condition("ram_error", True)  # no change, no write
    board.raise_flag("power_up")
    write(board, "alarms.alarm_register_1", Data.double_long_unsigned(RAM_ERROR | POWER_UP))
    write(board, "alarms.filter_1", Data.double_long_unsigned(read(board, "alarms.filter_1")))  # unchanged
    assert puts == ["alarms.state"] * 3


def test_a_set_bit_survives_a_kill_the_moment_it_is_reported(tmp_path):
    """The process is killed (SIGKILL) inside the report of the alarm: the bit is already stored."""
    data = tmp_path / "meter"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from smartmeter.meter.alarms import AlarmBitmap, AlarmBoard
        from smartmeter.meter.store import MeterStore
        board = AlarmBoard(MeterStore(Path({str(data)!r})), AlarmBitmap.load(), lambda c, x: None,
                           on_alarm=lambda reg, bits: os.kill(os.getpid(), signal.SIGKILL))
        board.condition("fraud_attempt", True)
    """)
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    after = board_on(MeterStore(data))
    assert read(after, "alarms.error_register") == FRAUD_ATTEMPT
    assert read(after, "alarms.alarm_register_1") == FRAUD_ATTEMPT
    assert read(after, "alarms.descriptor_1") == FRAUD_ATTEMPT


def test_a_damaged_stored_state_is_refused(store):
    store.put("alarms.state", {"error": -5, "alarm": [0, 0, 0], "filter": [0, 0, 0], "descriptor": [0, 0, 0],
                               "active": [], "fatal": 0})
    with pytest.raises(AlarmStoreError):
        board_on(store)
    store.put("alarms.state", json.loads('{"error": 0}'))
    with pytest.raises(AlarmStoreError):
        board_on(store)


# -- repetition until acknowledged ---------------------------------------------------------------------

def test_the_alarm_repeats_every_ten_minutes_until_the_descriptor_is_cleared(board):
    t0 = 1000.0
    assert board.due_realarms(t0) == []
    board.raise_flag("power_up")
    assert [(r.register, r.descriptor) for r in board.due_realarms(t0)] == [(1, POWER_UP)]
    board.alarm_pushed(t0)
    assert board.due_realarms(t0 + TEN_MINUTES - 1) == []
    assert [(r.register, r.descriptor) for r in board.due_realarms(t0 + TEN_MINUTES)] == [(1, POWER_UP)]
    board.alarm_pushed(t0 + TEN_MINUTES)

    board.raise_flag("replay_attack")  # a bit not pushed yet is due at once
    assert [(r.register, r.descriptor) for r in board.due_realarms(t0 + TEN_MINUTES + 1)] == [
        (1, POWER_UP), (2, REPLAY_ATTACK_2)]
    board.alarm_pushed(t0 + TEN_MINUTES + 1)

    write(board, "alarms.descriptor_1", Data.double_long_unsigned(POWER_UP))
    write(board, "alarms.descriptor_2", Data.double_long_unsigned(REPLAY_ATTACK_2))
    assert board.due_realarms(t0 + 10 * TEN_MINUTES) == []


def test_an_alarm_pending_at_a_restart_is_due_at_once(store):
    first = board_on(store)
    first.raise_flag("power_up")
    first.alarm_pushed(50.0)
    second = board_on(store)
    assert [(r.register, r.descriptor) for r in second.due_realarms(51.0)] == [(1, POWER_UP)]
