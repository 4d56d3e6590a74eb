"""The metering unit: synthetic load → metrology → energy, real-time pacing on a fake clock,
the watchdog (WELMEC 7.2 I3-1), snapshot/restore, and the paired remote sensor (WELMEC 7.3
§4.1).

Threads are driven by a fake ``monotonic`` clock: a test moves the clock, wakes the loop and
waits for a *position* (a sample count), never for an amount of wall-clock time. The real
seconds given to waits are only guards against a hang, never a pass/fail threshold.
"""
from __future__ import annotations

import random
import socket
import threading

import pytest

from smartmeter.legal.metering import MeteringError, MeteringUnit, _Snapshot
from smartmeter.legal.metrology import ENERGY_UNITS_PER_WH, EnergyDelta, MetrologyState
from smartmeter.legal.sensor import RemoteSensor, RemoteSensorLink, SyntheticSource

FS = 8000
FRAME = 800  # 100 ms
GUARD = 20.0  # real seconds: only to fail instead of hanging
METER_ID = bytes.fromhex("4b464d0100000001")
SENSOR_ID = bytes.fromhex("5345000000000042")
OTHER_SENSOR_ID = bytes.fromhex("5345000000000099")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class Recorder:
    """on_measurement / on_event sink, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.measurements = []
        self.events: list[tuple[str, dict]] = []
        self.event_arrived = threading.Condition(self.lock)

    def measurement(self, m) -> None:
        with self.lock:
            self.measurements.append(m)

    def event(self, name: str, details: dict) -> None:
        with self.lock:
            self.events.append((name, details))
            self.event_arrived.notify_all()

    def wait_event(self, name: str, timeout: float = GUARD) -> dict:
        with self.lock:
            found = self.event_arrived.wait_for(lambda: any(n == name for n, _ in self.events), timeout)
            assert found, f"no {name} event; got {self.events}"
            return next(d for n, d in self.events if n == name)

    def named(self, name: str) -> list[dict]:
        with self.lock:
            return self.named_unlocked(name)

    def named_unlocked(self, name: str) -> list[dict]:
        return [d for n, d in self.events if n == name]

    def total(self) -> EnergyDelta:
        with self.lock:
            total = EnergyDelta()
            for m in self.measurements:
                total = total + m.energy_delta
            return total

    def starts(self) -> list[int]:
        with self.lock:
            return [m.start_sample for m in self.measurements]


def make_unit(phases=3, **kw) -> tuple[MeteringUnit, Recorder]:
    rec = Recorder()
    unit = MeteringUnit(phases, FS, 100, on_measurement=rec.measurement, on_event=rec.event, **kw)
    return unit, rec


def uwh(watts: float, seconds: float) -> float:
    return watts * seconds / 3600 * ENERGY_UNITS_PER_WH


def assert_contiguous(starts: list[int], first: int = 0) -> None:
    assert starts, "nothing was measured"
    assert starts[0] == first
    assert all(b - a == FRAME for a, b in zip(starts, starts[1:])), "a frame was skipped or measured twice"


# -- measure_for: exact energy and quadrants ---------------------------------------------------

QUADRANT_LOADS = [
    # (P, Q, active register, reactive quadrant register)
    (1500.0, 600.0, "a_plus", "r_q1"),  # import, inductive
    (-1500.0, 600.0, "a_minus", "r_q2"),  # export, capacitive (as seen by the meter)
    (-1500.0, -600.0, "a_minus", "r_q3"),  # export, inductive
    (1500.0, -600.0, "a_plus", "r_q4"),  # import, capacitive
    (2300.0, 0.0, "a_plus", None),  # resistive
]


@pytest.mark.parametrize("phases", [1, 3])
@pytest.mark.parametrize("p,q,active,reactive", QUADRANT_LOADS)
def test_constant_load_registers_exact_energy_in_its_quadrant(phases, p, q, active, reactive):
    unit, rec = make_unit(phases)
    unit.set_load(p, q)
    seconds = 7.3
    out = unit.measure_for(seconds)
    assert len(out) == 73 and rec.measurements == out
    total = rec.total().as_dict()
    assert abs(total[active] - uwh(abs(p), seconds)) <= 2
    if reactive is None:
        assert all(v == 0 for k, v in total.items() if k != active)
    else:
        assert abs(total[reactive] - uwh(abs(q), seconds)) <= 2
        r_sum = "r_plus" if reactive in ("r_q1", "r_q2") else "r_minus"
        assert total[r_sum] == total[reactive]
        assert all(v == 0 for k, v in total.items() if k not in (active, reactive, r_sum))
    latest = unit.latest()
    assert latest is out[-1]
    assert latest.active_power == pytest.approx(p, abs=1e-6)
    assert latest.reactive_power == pytest.approx(q, abs=1e-6)
    for phase in latest.phases:
        assert phase.voltage_rms == pytest.approx(230.0)
        assert phase.active_power == pytest.approx(p / phases, abs=1e-6)


def test_no_load_registers_nothing_and_counts_samples_exactly():
    unit, rec = make_unit(1)
    out = unit.measure_for(1.23456)  # round(9876.48) samples: 12 full frames and one of 276
    assert [m.n_samples for m in out] == [FRAME] * 12 + [276]
    assert unit.position == 9876
    assert rec.total() == EnergyDelta()
    assert unit.measure_for(0) == []


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_measure_for_refuses_bad_durations(bad):
    unit, _ = make_unit(1)
    with pytest.raises(MeteringError):
        unit.measure_for(bad)
    with pytest.raises(MeteringError):
        unit.set_load(bad if bad != -1.0 else float("nan"), 0.0)
    assert unit.position == 0


def test_constructor_checks():
    for kwargs in (dict(phases=2), dict(phases=3, frame_ms=0), dict(phases=3, sample_rate=8001, frame_ms=1),
                   dict(phases=3, stall_timeout=0.0), dict(phases=3, sample_rate=100)):
        with pytest.raises(MeteringError):
            MeteringUnit(**kwargs)


# -- load changes between frames ---------------------------------------------------------------

SCHEDULE = [(3000.0, 900.0, 1.0), (-1200.0, 300.0, 0.5), (500.0, -450.0, 2.3), (0.0, 0.0, 0.4), (800.0, 0.0, 1.1)]


def test_load_changes_between_frames_are_seamless():
    unit, rec = make_unit(3)
    for p, q, seconds in SCHEDULE:
        unit.set_load(p, q)
        unit.measure_for(seconds)
    total = rec.total()
    expected_plus = sum(uwh(p, s) for p, _, s in SCHEDULE if p > 0)
    expected_minus = sum(uwh(-p, s) for p, _, s in SCHEDULE if p < 0)
    # Active energy is a plain sum over the samples: exact whatever the schedule.
    assert abs(total.a_plus - expected_plus) <= 2 and abs(total.a_minus - expected_minus) <= 2

    # Every frame sees exactly the samples a unit running that load all along would see: the
    # signal is a function of the sample index, so a switch is invisible in the voltage and
    # the current simply changes at the boundary.
    position = 0
    by_start = {m.start_sample: m for m in rec.measurements}
    for p, q, seconds in SCHEDULE:
        n = round(seconds * FS)
        steady, _ = make_unit(3)
        steady.set_load(p, q)
        steady.measure_for(position / FS)
        for m in steady.measure_for(seconds):
            got = by_start[m.start_sample]
            assert got.n_samples == m.n_samples
            assert got.active_power == m.active_power  # the very same samples
            assert [ph.voltage_rms for ph in got.phases] == [ph.voltage_rms for ph in m.phases]
        position += n

    # Reactive energy is the fundamental Q from a one-cycle sliding DFT, which lags the signal
    # by half a cycle: each switch moves (Q_before − Q_after)·10 ms between the loads, and
    # nothing more (the bound of metrology.py, not of the switching).
    half_cycle = 0.01
    switch_error = sum(abs(a[1] - b[1]) * half_cycle for a, b in zip(SCHEDULE, SCHEDULE[1:])) / 3600 * 1e6
    net_q = sum(uwh(q, s) for _, q, s in SCHEDULE)
    assert abs((total.r_plus - total.r_minus) - net_q) <= switch_error + 4
    assert total.r_q1 == pytest.approx(uwh(900, 1.0) + uwh(300, 0.0), abs=switch_error + 4)


def test_set_load_splits_the_load_evenly_over_the_phases():
    unit, _ = make_unit(3)
    unit.set_load(6900.0, -2070.0)
    m = unit.measure_for(0.2)[-1]
    for phase in m.phases:
        assert phase.active_power == pytest.approx(2300.0, abs=1e-6)
        assert phase.reactive_power == pytest.approx(-690.0, abs=1e-6)
        assert phase.current_rms == pytest.approx((2300.0**2 + 690.0**2) ** 0.5 / 230.0)
        assert phase.frequency == pytest.approx(50.0)


# -- real time on a fake clock -----------------------------------------------------------------


def test_real_time_advances_exactly_as_far_as_the_clock_says():
    clock = FakeClock()
    unit, rec = make_unit(3, monotonic=clock, stall_timeout=1e6)
    unit.set_load(2000.0, 500.0)
    unit.start()
    try:
        assert unit.position == 0 and unit.process_due() == 0
        clock.advance(1.234)  # 12 whole frames due, the 13th is not complete
        unit.wake()
        assert unit.wait_until_position(12 * FRAME, GUARD)
        assert unit.process_due() == 0
        assert unit.position == 12 * FRAME
        clock.advance(0.066)  # exactly the end of frame 13
        unit.wake()
        assert unit.wait_until_position(13 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == 13 * FRAME
        assert unit.lag_seconds() == 0.0
    finally:
        unit.stop()
    assert_contiguous(rec.starts())
    assert len(rec.measurements) == 13
    clock.advance(10.0)  # stopped: nothing more is measured
    assert unit.process_due() == 0 and unit.position == 13 * FRAME


def test_real_time_catches_up_after_a_delay_without_losing_or_double_counting():
    clock = FakeClock()
    unit, rec = make_unit(3, monotonic=clock, stall_timeout=1e6)
    unit.set_load(4000.0, -1000.0)
    unit.start()
    try:
        clock.advance(0.5)
        unit.wake()
        assert unit.wait_until_position(5 * FRAME, GUARD)
        # Hold the loop (the test hook) while 7.25 s of signal fall due: a busy or suspended
        # process.
        assert unit.inject_stall(GUARD * 3)
        clock.advance(7.25)
        # The next frame (5) ended at 0.6 s: it has waited 7.15 s.
        assert unit.lag_seconds() == pytest.approx(7.15)
        assert unit.position == 5 * FRAME
        unit.end_stall()
        assert unit.wait_until_position(77 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == 77 * FRAME  # 7.75 s → 77 frames
        assert unit.lag_seconds() == 0.0
        assert unit.max_lag_seconds() == pytest.approx(7.15)
    finally:
        unit.stop()
    assert_contiguous(rec.starts())
    reference, ref_rec = make_unit(3)
    reference.set_load(4000.0, -1000.0)
    reference.measure_for(7.7)
    assert rec.total() == ref_rec.total()  # integer-exact: the very same frames
    assert rec.named("metrology_restarted") == []


def test_stop_measures_the_backlog_and_start_continues_from_the_position():
    clock = FakeClock()
    unit, rec = make_unit(3, monotonic=clock, stall_timeout=1e6)
    unit.set_load(1000.0, 0.0)
    unit.start()
    assert unit.inject_stall(GUARD * 3)
    clock.advance(2.05)
    unit.stop()  # the late loop's 20 due frames are measured, not dropped
    assert unit.position == 20 * FRAME and not unit.running
    clock.advance(100.0)  # stopped time is not measured
    unit.start()
    try:
        clock.advance(0.2)
        unit.wake()
        assert unit.wait_until_position(22 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == 22 * FRAME
    finally:
        unit.stop()
    assert_contiguous(rec.starts())
    assert abs(rec.total().a_plus - uwh(1000.0, 2.2)) <= 2


def test_measure_for_while_running_shifts_the_schedule():
    clock = FakeClock()
    unit, rec = make_unit(1, monotonic=clock, stall_timeout=1e6)
    unit.start()
    try:
        unit.measure_for(1.0)  # inserted signal: the loop does not wait for it to fall due
        assert unit.position == FS and unit.process_due() == 0
        clock.advance(0.3)
        unit.wake()
        assert unit.wait_until_position(FS + 3 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == FS + 3 * FRAME
    finally:
        unit.stop()
    assert_contiguous(rec.starts())


def test_set_load_and_reads_from_another_thread_while_running():
    clock = FakeClock()
    unit, rec = make_unit(3, monotonic=clock, stall_timeout=1e6)
    unit.start()
    try:
        for step in range(20):
            unit.set_load(100.0 * step, 0.0)
            clock.advance(0.1)
            unit.wake()
            assert unit.wait_until_position((step + 1) * FRAME, GUARD)
            assert unit.latest() is not None
            assert _Snapshot.from_bytes(unit.snapshot()).position == (step + 1) * FRAME
    finally:
        unit.stop()
    assert_contiguous(rec.starts())
    assert len(rec.measurements) == 20


def test_one_shared_lock_no_deadlock_between_command_thread_and_loop():
    """The caller passes the lock that guards its registers: on_measurement (loop thread) and a
    command holding that lock and calling measure_for (command thread) cannot deadlock."""
    clock = FakeClock()
    registers = threading.RLock()
    rec = Recorder()

    def on_measurement(m):
        with registers:  # what the legal interface does when it adds energy
            rec.measurement(m)

    unit = MeteringUnit(3, FS, 100, on_measurement, rec.event, clock, stall_timeout=1e6, lock=registers)
    unit.set_load(1200.0, 0.0)
    unit.start()
    try:
        for _ in range(10):
            clock.advance(0.3)
            unit.wake()
            with registers:  # a command in progress
                unit.measure_for(0.1)
                unit.snapshot()
        assert unit.wait_until_position(40 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == 40 * FRAME
    finally:
        unit.stop()
    assert_contiguous(rec.starts())


# -- watchdog ------------------------------------------------------------------------------------


def test_watchdog_restarts_a_stalled_loop_and_nothing_is_lost_or_counted_twice():
    clock = FakeClock()
    unit, rec = make_unit(3, monotonic=clock, stall_timeout=2.0)
    unit.set_load(3000.0, 1200.0)
    unit.start()
    try:
        clock.advance(1.0)
        unit.wake()
        assert unit.wait_until_position(10 * FRAME, GUARD)
        assert unit.generation == 1
        assert unit.inject_stall(GUARD * 3)  # the loop hangs (real time; ended below)
        clock.advance(3.0)  # longer than stall_timeout without a heartbeat
        details = rec.wait_event("metrology_restarted")
        assert details == {"stalled_s": pytest.approx(3.0, abs=0.11), "position": 10 * FRAME, "restarts": 1}
        assert unit.generation == 2 and unit.restarts == 1
        # The fresh loop catches up what fell due during the stall.
        unit.wake()
        assert unit.wait_until_position(40 * FRAME, GUARD)
        stalled = [t for t in threading.enumerate() if t.name == "metering-loop-1"]
        unit.end_stall()  # the old loop wakes up, sees it is stale, and leaves
        for t in stalled:
            t.join(GUARD)
            assert not t.is_alive()
        clock.advance(0.5)
        unit.wake()
        assert unit.wait_until_position(45 * FRAME, GUARD)
        assert unit.process_due() == 0 and unit.position == 45 * FRAME
    finally:
        unit.stop()
    assert_contiguous(rec.starts())
    reference, ref_rec = make_unit(3)
    reference.set_load(3000.0, 1200.0)
    reference.measure_for(4.5)
    assert rec.total() == ref_rec.total()  # the uninterrupted case, to the µWh
    assert rec.named("metrology_unrecoverable") == []


def test_watchdog_restarts_again_when_a_restarted_loop_stalls_later():
    clock = FakeClock()
    unit, rec = make_unit(1, monotonic=clock, stall_timeout=2.0)
    unit.start()
    try:
        for round_ in (1, 2):
            assert unit.inject_stall(GUARD * 3)
            clock.advance(2.5)
            with rec.lock:
                assert rec.event_arrived.wait_for(lambda: len(rec.named_unlocked("metrology_restarted")) == round_, GUARD)
            unit.end_stall()
            unit.wake()
            assert unit.wait_until_position(round_ * 25 * FRAME, GUARD)  # the fresh loop beats
        assert unit.restarts == 2 and unit.generation == 3
        assert rec.named("metrology_unrecoverable") == []
    finally:
        unit.stop()
    assert_contiguous(rec.starts())


def test_watchdog_escalates_when_the_stalled_loop_holds_the_lock():
    clock = FakeClock()
    stuck = threading.Event()
    release = threading.Event()
    rec = Recorder()

    def on_measurement(m):
        rec.measurement(m)
        if m.start_sample == 5 * FRAME:
            stuck.set()
            release.wait(GUARD * 3)  # a callback that hangs (e.g. a storage write that never returns)

    unit = MeteringUnit(1, FS, 100, on_measurement, rec.event, clock, stall_timeout=2.0)
    unit.start()
    try:
        clock.advance(1.0)
        unit.wake()
        assert stuck.wait(GUARD)
        clock.advance(3.0)
        rec.wait_event("metrology_restarted")
        clock.advance(3.0)  # the fresh loop cannot get the lock: a thread cannot be killed
        details = rec.wait_event("metrology_unrecoverable")
        assert details["position"] == 5 * FRAME  # the hung frame was not committed
        assert len(rec.named("metrology_restarted")) == 1  # no pile of restarts
        release.set()
        unit.wake()
        assert unit.wait_until_position(70 * FRAME, GUARD)  # once it lets go, the fresh loop runs
    finally:
        release.set()
        unit.stop()
    assert_contiguous(rec.starts())


def test_inject_stall_needs_a_running_loop_and_does_not_wait_under_the_lock():
    unit, _ = make_unit(1)
    with pytest.raises(MeteringError):
        unit.inject_stall(1.0)
    clock = FakeClock()
    unit, rec = make_unit(1, monotonic=clock, stall_timeout=2.0)
    unit.start()
    try:
        with unit._lock:  # as when the interface runs the command with its lock held
            assert unit.inject_stall(GUARD * 3, timeout=GUARD)  # requested, not waited for
        assert unit._stall_entered.wait(GUARD)  # the loop gets there once the lock is free
        clock.advance(2.5)
        rec.wait_event("metrology_restarted")
    finally:
        unit.stop()


def test_a_failing_delivery_is_rolled_back_and_retried():
    calls = []
    rec = Recorder()

    def on_measurement(m):
        calls.append(m.start_sample)
        if len(calls) == 3:
            raise OSError("disk full")
        rec.measurement(m)

    unit = MeteringUnit(3, FS, 100, on_measurement, rec.event)
    unit.set_load(2500.0, 0.0)
    unit.measure_for(0.2)
    with pytest.raises(OSError):
        unit.measure_for(0.1)
    assert unit.position == 2 * FRAME  # the failed frame is not counted
    assert rec.named("measurement_delivery_failed") == [{"error": "OSError: disk full", "start_sample": 2 * FRAME}]
    unit.measure_for(0.8)
    assert_contiguous(rec.starts())
    assert abs(rec.total().a_plus - uwh(2500.0, 1.0)) <= 2


# -- snapshot / restore ----------------------------------------------------------------------------


def test_snapshot_and_restore_continue_without_double_counting():
    first, rec1 = make_unit(3)
    first.set_load(1800.0, 700.0)
    first.measure_for(2.05)
    state = first.snapshot()
    second, rec2 = make_unit(3, state=state)
    assert second.position == 2.05 * FS
    second.set_load(1800.0, 700.0)
    second.measure_for(1.0)
    assert rec2.starts()[0] == 16400
    reference, ref = make_unit(3)
    reference.set_load(1800.0, 700.0)
    reference.measure_for(3.05)
    restored = rec1.total() + rec2.total()
    assert restored.a_plus == ref.total().a_plus  # carries restored exactly: the same integers
    assert abs(restored.r_q1 - ref.total().r_q1) <= 2  # the DFT restarts; its first cycle is booked
    # A frame that overlaps what the snapshot already counted is refused.
    again, _ = make_unit(3, state=state)
    again.set_load(1800.0, 700.0)
    again.measure_for(0.1)
    assert again.position == 16400 + FRAME


def test_restored_state_must_fit_the_unit():
    unit, _ = make_unit(3)
    unit.measure_for(0.3)
    state = unit.snapshot()
    with pytest.raises(MeteringError):
        make_unit(1, state=state)
    with pytest.raises(MeteringError):
        make_unit(3, state=state, remote=RemoteSensorLink(METER_ID))
    with pytest.raises(MeteringError):
        make_unit(3, state=b"MTRU")


def test_snapshot_decoding_is_total():
    unit, _ = make_unit(3)
    unit.set_load(1000.0, 100.0)
    unit.measure_for(0.5)
    valid = unit.snapshot()
    assert _Snapshot.from_bytes(valid).to_bytes() == valid
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.5 and data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif choice < 0.75:
                del data[rng.randrange(len(data) + 1):]
            else:
                data[rng.randrange(len(data) + 1):0] = rng.randbytes(rng.randint(1, 9))
        try:
            _Snapshot.from_bytes(bytes(data))
        except MeteringError:
            pass
    for _ in range(2000):
        try:
            _Snapshot.from_bytes(rng.randbytes(rng.randint(0, 300)))
        except MeteringError:
            pass


# -- remote sensor -------------------------------------------------------------------------------


def paired(phases=3, **kw):
    link = RemoteSensorLink(METER_ID)
    unit, rec = make_unit(phases, remote=link, **kw)
    sensor = RemoteSensor(SENSOR_ID)
    unit.open_pairing()
    (response,) = unit.receive_sensor_message(sensor.pair_request())
    assert unit.receive_sensor_message(sensor.receive_pair_response(response)) == []
    assert rec.named("sensor_paired") == [{"sensor_id": SENSOR_ID.hex(), "replaced_sensor_id": None}]
    return unit, rec, sensor


def test_remote_mode_measures_paired_sensor_frames():
    unit, rec, sensor = paired(3)
    assert unit.pairing_record().sensor_id == SENSOR_ID
    source = SyntheticSource(3, FS, current_rms=4.0, angle_deg=30.0)
    for k, frame in zip(range(20), source.frames(FRAME)):
        assert unit.receive_sensor_message(sensor.encode(frame)) == []
    assert_contiguous(rec.starts())
    p = 3 * 230.0 * 4.0 * 0.8660254037844387
    q = 3 * 230.0 * 4.0 * 0.5
    total = rec.total()
    # The link quantises samples to 10 µV / 1 µA steps: a relative error far below 1e-6.
    assert total.a_plus == pytest.approx(uwh(p, 2.0), rel=1e-6)
    assert total.r_q1 == pytest.approx(uwh(q, 2.0), rel=1e-6)
    assert unit.position == 20 * FRAME
    assert unit.pairing_record().last_sequence == 19
    assert [n for n, _ in rec.events] == ["sensor_paired"]
    # The synthetic input is off.
    with pytest.raises(MeteringError):
        unit.set_load(100.0, 0.0)
    with pytest.raises(MeteringError):
        unit.measure_for(1.0)


def test_remote_refusals_are_reported_with_their_reason_and_not_measured():
    link = RemoteSensorLink(METER_ID)
    unit, rec = make_unit(3, remote=link)
    sensor = RemoteSensor(SENSOR_ID)
    source = SyntheticSource(3, FS, current_rms=4.0)
    frames = source.frames(FRAME)

    # Pairing outside a window.
    assert unit.receive_sensor_message(sensor.pair_request()) == []
    unit.open_pairing()
    (response,) = unit.receive_sensor_message(sensor.pair_request())
    unit.receive_sensor_message(sensor.receive_pair_response(response))
    good = sensor.encode(next(frames))
    unit.receive_sensor_message(good)
    unit.receive_sensor_message(good)  # replayed
    forged = bytearray(sensor.encode(next(frames)))
    forged[60] ^= 1
    unit.receive_sensor_message(bytes(forged))  # bad tag
    stranger = RemoteSensor(OTHER_SENSOR_ID)
    stranger.key = sensor.key
    unit.receive_sensor_message(stranger.encode(next(frames)))  # foreign sensor
    unit.receive_sensor_message(b"RS\x01\x10garbage")  # malformed
    unit.receive_sensor_message(sensor.encode(next(frames), sequence=0))  # out of order... below last

    reasons = [d["reason"] for d in rec.named("sensor_frame_refused")]
    assert reasons == ["pairing-not-open", "replayed", "bad-tag", "foreign-sensor", "malformed", "replayed"]
    for d in rec.named("sensor_frame_refused"):
        assert d["detail"] and d["suppressed"] == 0
    assert rec.named("sensor_frame_refused")[1]["sensor_id"] == SENSOR_ID.hex()
    assert rec.named("sensor_frame_refused")[1]["sequence"] == 0
    assert rec.starts() == [0]  # only the one good frame
    assert unit.refusal_counts() == {"pairing-not-open": 1, "replayed": 2, "bad-tag": 1,
                                     "foreign-sensor": 1, "malformed": 1}


def test_remote_overlap_format_and_gap():
    unit, rec, sensor = paired(3)
    source = SyntheticSource(3, FS, current_rms=2.0)
    unit.receive_sensor_message(sensor.encode(source.frame(0, 0, FRAME)))
    # Authentic and fresh, but re-sends samples already measured: refused by continuity.
    unit.receive_sensor_message(sensor.encode(source.frame(1, FRAME // 2, FRAME)))
    # A one-phase frame into a three-phase meter.
    unit.receive_sensor_message(sensor.encode(SyntheticSource(1, FS).frame(2, FRAME, FRAME)))
    # Two frames lost on the way.
    sensor.next_sequence += 2
    unit.receive_sensor_message(sensor.encode(source.frame(5, 3 * FRAME, FRAME)))
    assert [d["reason"] for d in rec.named("sensor_frame_refused")] == ["overlap", "wrong-format"]
    assert rec.named("sensor_gap") == [{"missing_frames": 2, "gap_samples": 2 * FRAME, "sequence": 5}]
    assert rec.starts() == [0, 3 * FRAME]


def test_refusal_reports_are_rate_limited_but_all_counted():
    clock = FakeClock()
    unit, rec = make_unit(1, remote=RemoteSensorLink(METER_ID), monotonic=clock, refusal_events_per_minute=10)
    for _ in range(25):
        unit.receive_sensor_message(b"junk")
    assert len(rec.named("sensor_frame_refused")) == 10
    assert unit.refusal_counts() == {"malformed": 25}
    clock.advance(60.0)
    unit.receive_sensor_message(b"junk")
    reports = rec.named("sensor_frame_refused")
    assert len(reports) == 11 and reports[-1]["suppressed"] == 15


def test_repairing_replaces_the_sensor_and_its_timeline():
    unit, rec, sensor = paired(1)
    source = SyntheticSource(1, FS, current_rms=1.0)
    for frame in [source.frame(i, 100_000 + i * FRAME, FRAME) for i in range(3)]:
        unit.receive_sensor_message(sensor.encode(frame))
    new = RemoteSensor(OTHER_SENSOR_ID)
    unit.open_pairing()
    (response,) = unit.receive_sensor_message(new.pair_request())
    unit.receive_sensor_message(new.receive_pair_response(response))
    assert rec.named("sensor_paired")[-1] == {"sensor_id": OTHER_SENSOR_ID.hex(),
                                              "replaced_sensor_id": SENSOR_ID.hex()}
    # The new sensor counts from 0: accepted, then continuity holds on its timeline.
    unit.receive_sensor_message(new.encode(source.frame(0, 0, FRAME)))
    unit.receive_sensor_message(sensor.encode(source.frame(9, 200_000, FRAME)))  # the old one: foreign now
    unit.receive_sensor_message(new.encode(source.frame(1, FRAME, FRAME)))
    assert rec.starts() == [100_000, 100_800, 101_600, 0, FRAME]
    assert [d["reason"] for d in rec.named("sensor_frame_refused")] == ["foreign-sensor"]


def test_remote_snapshot_round_trip_and_pairing_needs_remote():
    unit, rec, sensor = paired(3)
    source = SyntheticSource(3, FS, current_rms=3.0)
    for frame in [source.frame(i, i * FRAME, FRAME) for i in range(4)]:
        unit.receive_sensor_message(sensor.encode(frame))
    state = unit.snapshot()
    restored_link = RemoteSensorLink(METER_ID, unit.pairing_record())
    again, rec2 = make_unit(3, state=state, remote=restored_link)
    assert again.position == 4 * FRAME
    again.receive_sensor_message(sensor.encode(source.frame(9, 3 * FRAME, FRAME)))  # overlaps
    again.receive_sensor_message(sensor.encode(source.frame(10, 4 * FRAME, FRAME)))
    assert rec2.starts() == [4 * FRAME]
    assert [d["reason"] for d in rec2.named("sensor_frame_refused")] == ["overlap"]
    synthetic, _ = make_unit(3)
    for call in (synthetic.open_pairing, lambda: synthetic.receive_sensor_message(b""),
                 lambda: synthetic.serve_udp("127.0.0.1", 0)):
        with pytest.raises(MeteringError):
            call()
    assert synthetic.pairing_record() is None


def test_remote_silence_is_reported_and_its_end_too():
    clock = FakeClock()
    unit, rec, sensor = paired(1, monotonic=clock, stall_timeout=2.0)
    source = SyntheticSource(1, FS)
    unit.start()
    try:
        unit.receive_sensor_message(sensor.encode(source.frame(0, 0, FRAME)))
        clock.advance(2.5)
        unit.wake()
        assert rec.wait_event("sensor_silent")["silent_s"] == pytest.approx(2.5)
        unit.receive_sensor_message(sensor.encode(source.frame(1, FRAME, FRAME)))
        assert rec.named("sensor_resumed") == [{"silent_s": pytest.approx(2.5)}]
        assert rec.named("metrology_restarted") == []  # the loop itself kept beating
    finally:
        unit.stop()


def test_udp_listener_pairs_and_feeds_frames():
    unit, rec = make_unit(3, remote=RemoteSensorLink(METER_ID))
    sensor = RemoteSensor(SENSOR_ID)
    source = SyntheticSource(3, FS, current_rms=5.0)
    unit.open_pairing()
    with unit.serve_udp("127.0.0.1", 0) as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(GUARD)
        client.sendto(sensor.pair_request(), listener.address)
        response, _ = client.recvfrom(4096)
        client.sendto(sensor.receive_pair_response(response), listener.address)
        for frame in [source.frame(i, i * FRAME, FRAME) for i in range(5)]:
            client.sendto(sensor.encode(frame), listener.address)
        client.sendto(b"junk", listener.address)
        assert unit.wait_until_position(5 * FRAME, GUARD)
        rec.wait_event("sensor_frame_refused")
    assert rec.named("sensor_paired")[0]["sensor_id"] == SENSOR_ID.hex()
    assert rec.starts() == [i * FRAME for i in range(5)]
