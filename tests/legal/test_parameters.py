"""Legally relevant parameters, parameter record number and certification mode
(WELMEC 7.2 P7/U7; companion standard §5.16, §5.17, 1-0:0.2.1.255)."""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartmeter.legal import parameters as P
from smartmeter.legal import storage
from smartmeter.legal.parameters import (
    CERTIFICATION_CHECKPOINT_INTERVAL_S,
    CERTIFICATION_MODE_DURATION_S,
    EVENT_CERTIFICATION_MODE_ENDED,
    EVENT_CERTIFICATION_MODE_STARTED,
    EVENT_LR_PARAMETER_CHANGED,
    NO_CLIENT,
    PARAMETERS,
    CertificationMode,
    CertificationObject,
    Initiator,
    LogFull,
    ParameterRefused,
    ParameterStore,
    RefusalReason,
)

FIRMWARE_ID = b"1.0.0 c4092a39"
AUTHORITY = Initiator(b"CERT\x00\x00\x00\x07", certification_authority=True)
TOOL = Initiator(b"TOOL\x00\x00\x00\x01")  # a client without the certification authority
HOUR = 3600


class FakeLog:
    """A certification log that writes into the SAME connection (no commit of its own), so a
    rollback of the parameter change also removes its entries; full at `capacity`."""

    def __init__(self, db: sqlite3.Connection, capacity: int = 100, fail_after_write: bool = False) -> None:
        self.db, self.capacity, self.fail_after_write = db, capacity, fail_after_write
        db.execute("CREATE TABLE IF NOT EXISTS fake_log (seq INTEGER PRIMARY KEY, time_utc, event_id, fields)")

    def append(self, time_utc: int, event_id: int, fields: dict) -> None:
        (count,) = self.db.execute("SELECT COUNT(*) FROM fake_log").fetchone()
        if count >= self.capacity:
            raise LogFull("full")
        assert all(isinstance(v, (int, str, bytes)) and not isinstance(v, float) for v in fields.values())
        encoded = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in fields.items()}
        self.db.execute("INSERT INTO fake_log(time_utc, event_id, fields) VALUES (?, ?, ?)",
                        (time_utc, event_id, json.dumps(encoded, sort_keys=True)))
        if self.fail_after_write:
            raise LogFull("failed after writing")

    def entries(self) -> list[tuple[int, int, dict]]:
        return [(t, e, json.loads(f)) for t, e, f in self.db.execute("SELECT time_utc, event_id, fields FROM fake_log ORDER BY seq")]


class FakeMonotonic:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Meter:
    """The parameter part of one meter 'boot': new objects over the same store."""

    def __init__(self, data_dir: Path, capacity: int = 100, monotonic_start: float = 1000.0) -> None:
        self.data_dir = data_dir
        self.db = storage.open_store(data_dir)
        self.log = FakeLog(self.db, capacity)
        self.clock = FakeMonotonic(monotonic_start)
        self.mode = CertificationMode(self.db, self.log, FIRMWARE_ID, self.clock)
        self.params = ParameterStore(self.db, self.log, self.mode, FIRMWARE_ID)

    def table(self) -> list:
        return self.db.execute("SELECT * FROM legal_parameter ORDER BY name").fetchall()

    def state(self) -> list:
        return self.db.execute("SELECT * FROM legal_parameter_state ORDER BY key").fetchall()

    def snapshot(self) -> tuple:
        return self.params.values(), self.params.record_number, self.table(), self.state(), self.log.entries()

    def power_fail(self, monotonic_start: float = 7.0) -> "Meter":
        """Simulated power failure: drop everything in memory, reopen the store."""
        self.db.close()
        return Meter(self.data_dir, self.log.capacity, monotonic_start)


@pytest.fixture
def meter(tmp_path: Path) -> Meter:
    return Meter(tmp_path)


_boot = Meter


# -- declarations ------------------------------------------------------------------------------


def test_declared_parameters_have_sane_defaults_units_and_ranges() -> None:
    for name, spec in PARAMETERS.items():
        assert spec.name == name and spec.unit is not None and spec.description
        assert spec.check(spec.default) == spec.default  # every default is inside its own range
    for phase in (1, 2, 3):
        for stem in ("voltage_gain", "current_gain", "phase_correction"):
            assert PARAMETERS[f"{stem}_l{phase}"].kind is float
    assert PARAMETERS["led_pulse_rate"].allowed == (1000, 2000, 4000, 8000, 16000)


def test_type_specific_constants() -> None:
    assert P.ENERGY_REGISTER_MAX_DIRECT == 999_999_999 and P.ENERGY_REGISTER_MAX_CT == 99_999_999
    assert P.CERTIFICATION_MODE_DURATION_S == 12 * 3600
    assert P.LOG_CAPACITIES["certification_protected"] >= 100


def test_a_fresh_store_has_defaults_and_record_number_0(meter: Meter) -> None:
    assert meter.params.values() == {n: s.default for n, s in PARAMETERS.items()}
    assert meter.params.record_number == 0 and meter.params.integrity_faults == ()
    assert not meter.mode.is_active()


# -- who may change parameters ------------------------------------------------------------------


def test_changes_outside_certification_mode_are_refused_and_change_nothing(meter: Meter) -> None:
    before = meter.snapshot()
    with pytest.raises(ParameterRefused) as refused:
        meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_000, TOOL)
    assert refused.value.reason is RefusalReason.NOT_IN_CERTIFICATION_MODE
    assert meter.snapshot() == before


def test_changes_inside_certification_mode_are_accepted_logged_once_and_counted(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    assert meter.params.set({"voltage_gain_l1": 1.0125}, 1_700_000_100, TOOL) == 1
    assert meter.params.get("voltage_gain_l1") == 1.0125 and meter.params.record_number == 1
    changes = [e for e in meter.log.entries() if e[1] == EVENT_LR_PARAMETER_CHANGED]
    assert changes == [(1_700_000_100, EVENT_LR_PARAMETER_CHANGED, {
        "client_system_title": TOOL.client_system_title.hex(),
        "active_firmware_id": FIRMWARE_ID.hex(),
        "parameter": "voltage_gain_l1",
        "old_value": "1.0",
        "new_value": "1.0125",
        "record_number": 1,
    })]
    assert meter.params.set({"meter_constant": 2000}, 1_700_000_200, TOOL) == 2
    assert meter.params.set({"current_gain_l2": 0.95, "led_source": 0x03}, 1_700_000_300, TOOL) == 3
    changes = [e for e in meter.log.entries() if e[1] == EVENT_LR_PARAMETER_CHANGED]
    assert [(e[2]["parameter"], e[2]["record_number"]) for e in changes] == [
        ("voltage_gain_l1", 1), ("meter_constant", 2), ("current_gain_l2", 3), ("led_source", 3)]


def test_the_certification_authority_may_change_parameters_outside_the_mode(meter: Meter) -> None:
    assert meter.params.set({"remote_sensor_id": "RS-0001"}, 1_700_000_000, AUTHORITY) == 1
    assert meter.params.get("remote_sensor_id") == "RS-0001"
    assert len(meter.log.entries()) == 1


def test_writing_the_current_value_is_not_a_change(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    entries = meter.log.entries()
    assert meter.params.set({"voltage_gain_l1": 1.0, "meter_constant": 1000}, 1_700_000_001, TOOL) == 0
    assert meter.log.entries() == entries and meter.params.record_number == 0


def test_parameters_and_record_number_survive_a_restart_exactly(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    meter.params.set({"phase_correction_l3": -0.123456789012345, "display_energy_decimals": 4}, 1_700_000_001, TOOL)
    after = meter.power_fail()
    assert after.params.get("phase_correction_l3") == -0.123456789012345  # REAL round-trips bit-exactly
    assert after.params.get("display_energy_decimals") == 4
    assert after.params.record_number == 1 and after.params.integrity_faults == ()


# -- refusals change nothing ----------------------------------------------------------------------

OUT_OF_RANGE = [
    ("voltage_gain_l1", 1.2), ("voltage_gain_l2", 0.5), ("current_gain_l3", -1.0), ("voltage_gain_l1", math.nan),
    ("current_gain_l1", math.inf), ("phase_correction_l1", 5.01), ("phase_correction_l2", -90.0),
    ("meter_constant", 0), ("meter_constant", 100_001), ("led_source", 0), ("led_source", 256),
    ("led_pulse_rate", 3000), ("led_pulse_rate", 0), ("display_energy_decimals", 5), ("display_demand_decimals", -1),
    ("remote_sensor_id", "x" * 33), ("remote_sensor_id", "snow\u2603"), ("remote_sensor_id", "tab\t"),
]
WRONG_TYPE = [
    ("voltage_gain_l1", "1.0"), ("voltage_gain_l1", True), ("meter_constant", 1000.0), ("meter_constant", "1000"),
    ("led_source", False), ("remote_sensor_id", b"RS"), ("remote_sensor_id", 5), ("display_energy_decimals", None),
]


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_without_any_change(meter: Meter, name: str, value: object) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    before = meter.snapshot()
    with pytest.raises(ParameterRefused) as refused:
        # together with a valid change: all or nothing
        meter.params.set({"voltage_gain_l3": 1.05, name: value}, 1_700_000_001, AUTHORITY)
    assert refused.value.reason is RefusalReason.OUT_OF_RANGE
    assert meter.snapshot() == before


@pytest.mark.parametrize(("name", "value"), WRONG_TYPE)
def test_wrongly_typed_values_are_refused_without_any_change(meter: Meter, name: str, value: object) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    before = meter.snapshot()
    with pytest.raises(ParameterRefused) as refused:
        meter.params.set({name: value}, 1_700_000_001, AUTHORITY)
    assert refused.value.reason is RefusalReason.WRONG_TYPE
    assert meter.snapshot() == before


def test_unknown_parameters_are_refused_without_any_change(meter: Meter) -> None:
    before = meter.snapshot()
    for name in ("voltage_gain_l4", "record_number", "", 7):
        with pytest.raises(ParameterRefused) as refused:
            meter.params.set({"voltage_gain_l1": 1.01, name: 1}, 1_700_000_001, AUTHORITY)
        assert refused.value.reason is RefusalReason.UNKNOWN_PARAMETER
    with pytest.raises(ParameterRefused):
        meter.params.get("voltage_gain_l4")
    assert meter.snapshot() == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(PARAMETERS)),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                       st.text(max_size=40), st.booleans(), st.none(), st.binary(max_size=4)))
def test_any_value_is_either_stored_in_range_or_refused_without_change(meter: Meter, name: str, value: object) -> None:
    before = meter.snapshot()
    try:
        meter.params.set({name: value}, 1_700_000_000, AUTHORITY)
    except ParameterRefused as refused:
        assert refused.reason in (RefusalReason.OUT_OF_RANGE, RefusalReason.WRONG_TYPE)
        assert meter.snapshot() == before
    else:
        stored = meter.params.get(name)
        spec = PARAMETERS[name]
        assert type(stored) is spec.kind and stored == value
        if spec.minimum is not None:
            assert spec.minimum <= stored <= spec.maximum
        if spec.allowed is not None:
            assert stored in spec.allowed


# -- the log refuses -> the change is refused ---------------------------------------------------


def test_a_full_log_refuses_the_change(tmp_path: Path) -> None:
    meter = _boot(tmp_path, capacity=1)
    meter.mode.start(1_700_000_000, AUTHORITY)  # takes the only entry
    before = meter.snapshot()
    with pytest.raises(ParameterRefused) as refused:
        meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_001, TOOL)
    assert refused.value.reason is RefusalReason.LOG_FULL
    assert meter.snapshot() == before
    assert meter.power_fail().params.get("voltage_gain_l1") == 1.0


def test_a_log_failing_after_writing_rolls_back_change_and_entry(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    before = meter.snapshot()
    meter.log.fail_after_write = True
    with pytest.raises(ParameterRefused):
        meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_001, TOOL)
    assert meter.snapshot() == before


def test_a_log_full_at_the_second_entry_refuses_the_whole_command(tmp_path: Path) -> None:
    meter = _boot(tmp_path, capacity=2)
    meter.mode.start(1_700_000_000, AUTHORITY)  # 1 entry, room for one more
    before = meter.snapshot()
    with pytest.raises(ParameterRefused) as refused:
        meter.params.set({"voltage_gain_l1": 1.01, "voltage_gain_l2": 1.02}, 1_700_000_001, TOOL)
    assert refused.value.reason is RefusalReason.LOG_FULL
    assert meter.snapshot() == before  # the first entry was written and rolled back


def test_a_change_inside_the_callers_transaction_uses_a_savepoint(meter: Meter) -> None:
    meter.db.execute("BEGIN IMMEDIATE")
    meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_001, AUTHORITY)
    assert meter.db.in_transaction  # not committed behind the caller's back
    meter.db.execute("ROLLBACK")
    assert meter.table() == [] and meter.log.entries() == []


def test_damaged_stored_values_are_reported_and_not_used(meter: Meter) -> None:
    meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_000, AUTHORITY)
    meter.db.execute("UPDATE legal_parameter SET value = 7.5 WHERE name = 'voltage_gain_l1'")
    meter.db.execute("INSERT INTO legal_parameter VALUES ('meter_constant', '1000')")  # TEXT, not INTEGER
    meter.db.execute("INSERT INTO legal_parameter VALUES ('smuggled', 1)")
    meter.db.execute("UPDATE legal_parameter_state SET value = -3 WHERE key = 'record_number'")
    after = meter.power_fail()
    assert set(after.params.integrity_faults) == {"voltage_gain_l1", "meter_constant", "smuggled", "record_number"}
    assert after.params.get("voltage_gain_l1") == 1.0 and after.params.get("meter_constant") == 1000


# -- certification mode -------------------------------------------------------------------------


def test_only_the_certification_authority_starts_the_mode(meter: Meter) -> None:
    with pytest.raises(ParameterRefused) as refused:
        meter.mode.start(1_700_000_000, TOOL)
    assert refused.value.reason is RefusalReason.NOT_AUTHORISED
    assert not meter.mode.is_active() and meter.log.entries() == []


def test_start_is_logged_with_initiator_and_firmware_id(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    status = meter.mode.status()
    assert status.active and status.remaining_s == CERTIFICATION_MODE_DURATION_S
    assert status.initiator == AUTHORITY.client_system_title
    assert meter.log.entries() == [(1_700_000_000, EVENT_CERTIFICATION_MODE_STARTED, {
        "client_system_title": AUTHORITY.client_system_title.hex(), "active_firmware_id": FIRMWARE_ID.hex()})]


def test_the_mode_expires_after_12_h_on_the_monotonic_clock_whatever_the_rtc_does(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    # The RTC jumps a year ahead and then back: no effect on the mode.
    meter.clock.now += 1
    assert not meter.mode.poll(1_700_000_000 + 365 * 24 * HOUR)
    assert not meter.mode.poll(1_600_000_000)
    meter.clock.now += CERTIFICATION_MODE_DURATION_S - 1 - 0.002
    assert meter.mode.is_active() and 0 < meter.mode.status().remaining_s < 0.01
    meter.clock.now += 0.002
    # At 12 h the mode is off even before anyone polls, so no parameter write slips through.
    assert not meter.mode.is_active() and not meter.mode.status().active
    with pytest.raises(ParameterRefused):
        meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_000, TOOL)
    assert meter.mode.poll(1_500_000_000)
    assert meter.log.entries()[-1] == (1_500_000_000, EVENT_CERTIFICATION_MODE_ENDED, {
        "client_system_title": NO_CLIENT.hex(), "active_firmware_id": FIRMWARE_ID.hex(),
        "reason": "expired", "elapsed_s": CERTIFICATION_MODE_DURATION_S})
    assert not meter.mode.poll(1_500_000_001)  # ends once
    assert not meter.power_fail().mode.is_active()


def test_a_monotonic_clock_stepping_back_does_not_extend_or_break_the_mode(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    meter.clock.now -= 500
    assert meter.mode.status().elapsed_s == 0
    meter.clock.now += 500 + CERTIFICATION_MODE_DURATION_S
    assert not meter.mode.is_active()


def test_the_mode_survives_a_power_failure_and_keeps_counting_down(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    for _ in range(4 * HOUR):  # the meter polls every second
        meter.clock.now += 1
        meter.mode.poll(1_700_000_000)
    after = meter.power_fail(monotonic_start=3.0)  # a new boot: the monotonic clock restarted
    status = after.mode.status()
    assert status.active and status.initiator == AUTHORITY.client_system_title
    # elapsed = last checkpoint (4 h) + one checkpoint interval charged for the unknown gap
    assert status.elapsed_s == 4 * HOUR + CERTIFICATION_CHECKPOINT_INTERVAL_S
    after.params.set({"voltage_gain_l1": 1.01}, 1_700_100_000, TOOL)  # still in the mode
    after.clock.now += 8 * HOUR - CERTIFICATION_CHECKPOINT_INTERVAL_S - 1
    assert not after.mode.poll(1_700_100_000)
    after.clock.now += 1
    assert after.mode.poll(1_700_100_001) and not after.mode.is_active()
    assert [e[1] for e in after.log.entries()] == [
        EVENT_CERTIFICATION_MODE_STARTED, EVENT_LR_PARAMETER_CHANGED, EVENT_CERTIFICATION_MODE_ENDED]


def test_worst_case_repeated_power_failures_never_lengthen_the_mode(tmp_path: Path) -> None:
    """Each boot charges one checkpoint interval: the mode can end early, never late."""
    meter = _boot(tmp_path)
    meter.mode.start(1_700_000_000, AUTHORITY)
    boots = 0
    operating = 0.0
    while meter.mode.is_active():
        assert boots < 2 * CERTIFICATION_MODE_DURATION_S // 30, "the mode outlived its 12 h"
        meter.clock.now += 30  # runs 30 s, polled, then the power fails
        operating += 30
        meter.mode.poll(1_700_000_000)
        meter = meter.power_fail()
        boots += 1
    assert operating <= CERTIFICATION_MODE_DURATION_S
    assert operating >= CERTIFICATION_MODE_DURATION_S - boots * CERTIFICATION_CHECKPOINT_INTERVAL_S


def test_time_loss_ends_the_mode(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    after = meter.power_fail()
    assert after.mode.is_active()  # a power failure alone does not end it
    assert after.mode.time_lost(946_684_800)
    assert not after.mode.is_active()
    assert after.log.entries()[-1][2]["reason"] == "time_lost"
    assert not after.power_fail().mode.is_active()
    assert not after.mode.time_lost(946_684_801)  # nothing to end


def test_writing_false_ends_the_mode_and_parameters_are_closed_again(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    assert meter.mode.stop(1_700_000_500, TOOL)
    assert not meter.mode.is_active()
    assert meter.log.entries()[-1] == (1_700_000_500, EVENT_CERTIFICATION_MODE_ENDED, {
        "client_system_title": TOOL.client_system_title.hex(), "active_firmware_id": FIRMWARE_ID.hex(),
        "reason": "written_false", "elapsed_s": 0})
    with pytest.raises(ParameterRefused):
        meter.params.set({"voltage_gain_l1": 1.01}, 1_700_000_501, TOOL)
    assert not meter.mode.stop(1_700_000_502, TOOL)  # already off: nothing logged
    assert len(meter.log.entries()) == 2


def test_writing_true_again_does_not_extend_the_mode(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    meter.clock.now += 11 * HOUR
    meter.mode.start(1_700_000_000 + 11 * HOUR, AUTHORITY)
    assert len(meter.log.entries()) == 1
    meter.clock.now += HOUR
    assert not meter.mode.is_active()


def test_restart_after_expiry_logs_the_old_end_then_the_new_start(meter: Meter) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    meter.clock.now += CERTIFICATION_MODE_DURATION_S
    meter.mode.start(1_800_000_000, AUTHORITY)  # not polled in between
    assert meter.mode.is_active() and meter.mode.status().elapsed_s == 0
    assert [(e[1], e[2].get("reason")) for e in meter.log.entries()] == [
        (EVENT_CERTIFICATION_MODE_STARTED, None), (EVENT_CERTIFICATION_MODE_ENDED, "expired"),
        (EVENT_CERTIFICATION_MODE_STARTED, None)]


def test_a_full_log_refuses_the_start(tmp_path: Path) -> None:
    meter = _boot(tmp_path, capacity=0)
    with pytest.raises(ParameterRefused) as refused:
        meter.mode.start(1_700_000_000, AUTHORITY)
    assert refused.value.reason is RefusalReason.LOG_FULL
    assert not meter.mode.is_active() and not meter.power_fail().mode.is_active()


def test_a_full_log_does_not_keep_the_mode_on(tmp_path: Path) -> None:
    meter = _boot(tmp_path, capacity=1)
    meter.mode.start(1_700_000_000, AUTHORITY)
    assert meter.mode.stop(1_700_000_001, AUTHORITY)  # cannot be logged, ends all the same
    assert not meter.mode.is_active() and not meter.power_fail().mode.is_active()


@pytest.mark.parametrize("damage", [
    "UPDATE legal_parameter_state SET value = 'yes' WHERE key = 'certification_active'",
    "UPDATE legal_parameter_state SET value = -1 WHERE key = 'certification_elapsed_ms'",
    "UPDATE legal_parameter_state SET value = 'x' WHERE key = 'certification_elapsed_ms'",
])
def test_a_damaged_mode_state_reads_as_off(meter: Meter, damage: str) -> None:
    meter.mode.start(1_700_000_000, AUTHORITY)
    meter.db.execute(damage)
    assert not meter.power_fail().mode.is_active()


# -- the §5.16 certification object -------------------------------------------------------------


def test_certification_object_write_true_starts_and_configures_then_false_ends(meter: Meter) -> None:
    assert meter.params.read_certification_object() == CertificationObject(False, 4, 4, 0x01, 1000)
    meter.params.write_certification_object(CertificationObject(True, 5, 0, 0x03, 4000), 1_700_000_000, AUTHORITY)
    assert meter.mode.is_active()
    assert meter.params.read_certification_object() == CertificationObject(True, 5, 4, 0x03, 4000)
    assert meter.params.get("display_energy_decimals") == 4 and meter.params.record_number == 1
    meter.params.write_certification_object(CertificationObject(False, 0, 0, 0, 0), 1_700_000_100, AUTHORITY)
    assert not meter.mode.is_active() and meter.params.record_number == 1
    assert [e[1] for e in meter.log.entries()] == [
        EVENT_CERTIFICATION_MODE_STARTED, EVENT_LR_PARAMETER_CHANGED, EVENT_LR_PARAMETER_CHANGED,
        EVENT_LR_PARAMETER_CHANGED, EVENT_CERTIFICATION_MODE_ENDED]


@pytest.mark.parametrize("bad", [
    CertificationObject(True, 6, 0, 0, 0), CertificationObject(True, 0, -1, 0, 0),
    CertificationObject(True, 0, 0, 256, 0), CertificationObject(True, 0, 0, 0, 3000),
    CertificationObject(1, 0, 0, 0, 0), CertificationObject(True, 0, 0, 0, True),
])
def test_an_invalid_certification_object_write_changes_nothing(meter: Meter, bad: CertificationObject) -> None:
    before = meter.snapshot()
    with pytest.raises(ParameterRefused):
        meter.params.write_certification_object(bad, 1_700_000_000, AUTHORITY)
    assert meter.snapshot() == before and not meter.mode.is_active()


# -- with the real hash-linked log (legal/eventlog.py), as the lead wires it ---------------------


def test_with_the_real_event_log_change_and_entry_commit_together_and_full_refuses(tmp_path: Path) -> None:
    from smartmeter.legal.chain import LogFull as ChainLogFull
    from smartmeter.legal.eventlog import EventLog
    from smartmeter.legal.signing import MeterSigner

    db = storage.open_store(tmp_path)
    signer = MeterSigner.generate()
    log = EventLog(db, "certification", 3, signer)
    mode = CertificationMode(db, log, FIRMWARE_ID, FakeMonotonic(), log_full_errors=(ChainLogFull,))
    params = ParameterStore(db, log, mode, FIRMWARE_ID, log_full_errors=(ChainLogFull,))
    mode.start(1_700_000_000, AUTHORITY)
    assert params.set({"voltage_gain_l1": 1.01}, 1_700_000_001, TOOL) == 1
    events = log.events()
    assert [(e.event_id, e.fields.get("parameter")) for e in events] == [
        (EVENT_CERTIFICATION_MODE_STARTED, None), (EVENT_LR_PARAMETER_CHANGED, "voltage_gain_l1")]
    assert events[1].fields["client_system_title"] == TOOL.client_system_title
    assert events[1].fields["active_firmware_id"] == FIRMWARE_ID
    with pytest.raises(ParameterRefused) as refused:  # 2 entries would need 4 places; 1 is left
        params.set({"voltage_gain_l2": 1.02, "voltage_gain_l3": 1.03}, 1_700_000_002, TOOL)
    assert refused.value.reason is RefusalReason.LOG_FULL
    assert log.count() == 2 and params.record_number == 1
    assert db.execute("SELECT name FROM legal_parameter").fetchall() == [("voltage_gain_l1",)]
    assert log.verify(signer.public_key_pem()).ok
    db.close()


# -- the signed parameter store (like the energy registers) -----------------------------------

from smartmeter.legal.signing import MeterSigner, verify  # noqa: E402
from authority_support import certification_token  # noqa: E402

SIGNER = MeterSigner.generate()


class SealedMeter(Meter):
    """One boot of the parameter part with the meter's signature over the store."""

    def __init__(self, data_dir: Path, expect_signature: bool = False, monotonic_start: float = 1000.0) -> None:
        self.data_dir = data_dir
        self.db = storage.open_store(data_dir)
        self.log = FakeLog(self.db, 100)
        self.clock = FakeMonotonic(monotonic_start)
        self.seal = P.ParameterSeal(self.db, SIGNER, verify, expect_signature)
        self.mode = CertificationMode(self.db, self.log, FIRMWARE_ID, self.clock, seal=self.seal)
        self.params = ParameterStore(self.db, self.log, self.mode, FIRMWARE_ID, seal=self.seal)

    def reboot(self, expect_signature: bool = True) -> "SealedMeter":
        self.db.close()
        return SealedMeter(self.data_dir, expect_signature)

    def offline_problem(self) -> str:
        return P.verify_parameter_store(self.db, SIGNER.public_key_pem(), verify, True)[0]


def _tamper(data_dir: Path, sql: str, *args) -> None:
    """An edit of the stopped meter's store with plain SQLite (what anyone with the file can do)."""
    db = sqlite3.connect(data_dir / "legal.sqlite3")
    with db:
        db.execute(sql, args)
    db.close()


@pytest.fixture
def sealed(tmp_path: Path) -> SealedMeter:
    m = SealedMeter(tmp_path)
    m.params.set({"meter_constant": 2000, "voltage_gain_l1": 1.01}, 100, AUTHORITY)
    return m


def test_every_write_of_the_store_is_signed_and_verifies_after_a_restart(sealed: SealedMeter) -> None:
    sealed.mode.start(200, AUTHORITY)
    sealed.clock.now += CERTIFICATION_CHECKPOINT_INTERVAL_S + 1
    sealed.mode.poll(300)  # a checkpoint of the elapsed time is a write too
    assert sealed.offline_problem() == ""
    again = sealed.reboot()
    assert again.params.integrity_faults == () and again.params.get("meter_constant") == 2000
    again.mode.stop(400, AUTHORITY)
    assert again.offline_problem() == ""
    assert again.reboot().params.integrity_faults == ()


@pytest.mark.parametrize("edit", [
    # in range, right type: only the signature can notice these
    ("UPDATE legal_parameter SET value = 1000 WHERE name = 'meter_constant'",),
    ("UPDATE legal_parameter SET value = 1.02 WHERE name = 'voltage_gain_l1'",),
    ("INSERT INTO legal_parameter(name, value) VALUES ('current_gain_l2', 1.05)",),
    ("DELETE FROM legal_parameter WHERE name = 'meter_constant'",),
    ("UPDATE legal_parameter_state SET value = 0 WHERE key = 'record_number'",),
    # switching the certification mode on would open parameters to anyone
    ("INSERT INTO legal_parameter_state(key, value) VALUES ('certification_active', 1)",),
    ("DELETE FROM legal_parameter_state WHERE key = 'signature'",),
    ("DELETE FROM legal_parameter",),
], ids=["value", "float", "insert", "delete", "record-number", "certification-on", "signature-gone", "all-rows"])
def test_a_changed_parameter_store_is_a_fault_at_start_and_offline(sealed: SealedMeter, edit: tuple) -> None:
    sealed.db.close()
    _tamper(sealed.data_dir, *edit)
    booted = SealedMeter(sealed.data_dir, expect_signature=True)
    assert booted.params.integrity_faults, "the edit was not noticed"
    assert not booted.mode.is_active()  # certification_active=1 must not open the store
    assert booted.offline_problem() != ""


def test_a_tampered_store_is_never_re_signed(sealed: SealedMeter) -> None:
    """Later legitimate writes must not launder the evidence: the signature stays invalid."""
    sealed.db.close()
    _tamper(sealed.data_dir, "UPDATE legal_parameter SET value = 1000 WHERE name = 'meter_constant'")
    booted = SealedMeter(sealed.data_dir, expect_signature=True)
    booted.params.set({"led_pulse_rate": 2000}, 500, AUTHORITY)
    assert booted.offline_problem() == "parameters: signature does not verify"
    assert booted.reboot().params.integrity_faults


def test_a_fresh_store_is_sealed_at_once_and_emptying_a_used_store_shows(tmp_path: Path) -> None:
    """Emptying both tables gives what a fresh store looks like; a meter that has run (it has
    profile entries, so the interface expects a seal) reports it."""
    fresh = SealedMeter(tmp_path)
    assert fresh.params.integrity_faults == ()
    assert fresh.db.execute("SELECT 1 FROM legal_parameter_state WHERE key = 'signature'").fetchone()
    fresh.db.close()
    _tamper(tmp_path, "DELETE FROM legal_parameter_state")
    assert SealedMeter(tmp_path, expect_signature=True).params.integrity_faults


def test_the_signed_message_is_recomputable_without_this_code(sealed: SealedMeter) -> None:
    """One line per row, `<table>\\t<typed name>\\t<typed value>\\n`, sorted, after a fixed head;
    the signature (hex in the state row 'signature') verifies over it with the public key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def typed(v):
        return {int: lambda x: f"i:{x}", float: lambda x: f"f:{x.hex()}", str: lambda x: "s:" + json.dumps(x),
                bytes: lambda x: "b:" + x.hex()}[type(v)](v)

    db = sealed.db
    lines = [f"parameter\t{typed(n)}\t{typed(v)}\n" for n, v in db.execute("SELECT name, value FROM legal_parameter")]
    lines += [f"state\t{typed(k)}\t{typed(v)}\n" for k, v in db.execute("SELECT key, value FROM legal_parameter_state")
              if k != "signature"]
    message = b"smartmeter/parameters/v1\0" + "".join(sorted(lines)).encode()
    (signature,) = db.execute("SELECT value FROM legal_parameter_state WHERE key = 'signature'").fetchone()
    key = serialization.load_pem_public_key(SIGNER.public_key_pem())
    key.verify(bytes.fromhex(signature), message, ec.ECDSA(hashes.SHA256()))


@pytest.mark.welmec("P7", "U7", "I3-4")
def test_a_tampered_parameter_store_is_fatal_at_start_and_reported_by_verify_storage(tmp_path: Path) -> None:
    """A stored parameter changed to another allowed value (LED pulse rate 2000 -> 4000) while
    the meter is off: at the next start fatal bit 0x04 and one event 201 naming the parameters,
    and `verify-storage`'s check reports the parameter store."""
    from smartmeter.legal import interface as legal

    part = legal.LegalInterface(tmp_path)
    part.execute(legal.RegisterSimulatedPower(3600.0, 0.0, 60.0))
    part.execute(legal.EndMeasurementPeriod(1_800_000_000))  # a profile entry: the meter has run
    part.execute(legal.SetParameters((("meter_constant", 1000), ("led_pulse_rate", 2000)), 1_800_000_100, "01" * 8,
                                      certification_token(part, "01" * 8)))
    assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY == 0
    part.close()
    assert all(r.ok for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES))

    _tamper(tmp_path, "UPDATE legal_parameter SET value = 4000 WHERE name = 'led_pulse_rate'")  # allowed rate
    part = legal.LegalInterface(tmp_path)
    try:
        assert part.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY
        damaged = [json.loads(r.fields_json) for r in part.execute(legal.ReadMetrologicalLog())
                   if r.event_id == legal.EVENT_STORE_DAMAGED]
        assert len(damaged) == 1 and "parameters" in damaged[0]["problems"]
    finally:
        part.close()
    reports = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}
    assert not reports["parameters"].ok and "signature" in reports["parameters"].problem
