"""The metering unit: sensor → metrology → energy, in real time, under a watchdog.

WELMEC 7.2 I3-1 (fault recovery), I3-5 (dynamic behaviour) and WELMEC 7.3 §4.1 (remote
sensor). ``MeteringUnit`` owns the measurement input (one at a time), the ``Metrology`` and the
pacing; it hands every processed frame to ``on_measurement`` (the caller adds
``Measurement.energy_delta`` to the registers) and reports everything worth logging through
``on_event(name, details)``.

Input (chosen once, at construction, from the meter's configuration):

* **synthetic** (``remote=None``): a ``SyntheticSource`` standing in for the ADC, whose load
  is set with ``set_load(active_w, reactive_var, phase)`` (phase 0: split evenly, else all on
  that phase) and whose phase voltages with ``set_voltages(volts)`` (nominal until set). A
  phase's current is its apparent power divided by its voltage; a phase at 0 V carries none,
  so it registers nothing, and on a live phase the active energy is P·t at any voltage. The
  signal is a pure function of the sample index, so a change between two frames is seamless:
  the voltage runs on, the current changes at the frame boundary.
* **remote** (``remote=RemoteSensorLink(...)``): messages of the paired remote sensor are fed
  with ``receive_sensor_message(bytes)`` (or by the UDP helper ``serve_udp``); accepted frames
  go to metrology in the order accepted. The synthetic source is then off: ``set_load`` and
  ``measure_for`` are refused.

Advancing (synthetic input):

* ``measure_for(seconds)`` processes exactly that much signal now (deterministic: tests and
  accelerated simulations, WELMEC I2-7's accelerated time base).
* ``start()``/``stop()``: a real-time loop on a daemon thread. Sample ``k`` of the signal is
  taken at ``origin_time + (k − origin_sample) / sample_rate`` on the ``monotonic`` clock; a
  frame is processed once its last sample is due. A late loop (a busy core, a suspended
  process) catches up frame by frame: no sample is ever dropped, so the energy is exact
  however late it runs, and ``lag_seconds()`` tells how late it is. ``measure_for`` while the
  loop runs inserts its signal and shifts the schedule by as much, so the loop does not wait
  for those samples to fall due again. ``stop()`` still measures the frames already due (a
  late loop's backlog); the time while stopped is not measured.

Watchdog (I3-1): the loop records a heartbeat after every frame and every idle wake-up. A
watchdog thread that sees no heartbeat for ``stall_timeout`` seconds (on ``monotonic``)
abandons the loop (the generation counter goes up; the old thread, whenever it wakes, sees it
is stale and exits without touching anything), starts a fresh loop at the same sample position
and on the same schedule (so it catches up what the stall held back: nothing is lost), and
reports ``metrology_restarted``. Frames are processed under one lock that also covers the
position, so the two loops can never process the same samples (and ``Metrology`` itself refuses
any frame that overlaps the last one). If the fresh loop does not beat either - the old one is
stuck *holding* the lock, e.g. inside ``on_measurement`` - a thread cannot be killed, and the
watchdog reports ``metrology_unrecoverable`` once: the caller must then end the process so its
supervisor restarts it from the last persisted snapshot (I3-1's processor reset).

Locking: frames are processed, and ``on_measurement`` is called, with ``lock`` held (an
``RLock``; pass the lock that guards your registers, so that there is one lock and no lock-order
inversion between the metering thread and your command thread). ``snapshot()`` taken under that
lock matches exactly the measurements delivered so far: persist it in the same transaction as
the registers. The watchdog never takes the lock, and calls ``on_event`` for its own events on
a short-lived thread of their own, so a stuck lock cannot silence it.

Events (``on_event(name, details)``; details are plain JSON-able values, never key material):

* ``metrology_restarted`` {stalled_s, position, restarts} - the watchdog restarted the loop.
* ``metrology_unrecoverable`` {stalled_s, position} - the restart did not help; end the process.
* ``measurement_delivery_failed`` {error, start_sample} - ``on_measurement`` raised; the frame
  was rolled back and is retried (reported once per failure streak).
* ``sensor_frame_refused`` {reason, detail, sensor_id, sequence, suppressed} - a message of
  the remote link was refused (``reason`` is a ``RefusalReason`` value, or ``wrong-format`` /
  ``overlap`` when metrology refused an authenticated frame). At most
  ``refusal_events_per_minute`` per reason are reported; ``suppressed`` counts the ones left
  out since the last report of that reason (``refusal_counts()`` has the totals).
* ``sensor_gap`` {missing_frames, gap_samples, sequence} - samples are missing before an
  accepted frame.
* ``sensor_paired`` {sensor_id, replaced_sensor_id} - a new pairing is in force (persist
  ``pairing_record()``; the paired sensor ID is a legally relevant parameter).
* ``sensor_silent`` {silent_s} / ``sensor_resumed`` {silent_s} - (remote input, real-time loop
  running) no accepted frame for ``stall_timeout`` seconds / frames again after a silence.
"""
from __future__ import annotations

import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from smartmeter.legal.metrology import Measurement, Metrology, MetrologyError, MetrologyState
from smartmeter.legal.sensor import (
    ALLOWED_PHASES,
    MAX_MESSAGE_BYTES,
    FrameAccepted,
    FrameRefused,
    PairingRecord,
    RemoteSensorLink,
    SensorPaired,
    SyntheticSource,
    Transmit,
)

__all__ = ["MeteringError", "MeteringUnit", "UdpSensorListener", "NOMINAL_VOLTAGE"]

NOMINAL_VOLTAGE = 230.0  # V, the synthetic installation's phase voltage until set
MAX_SIMULATED_VOLTAGE = 400.0  # V RMS per phase the synthetic installation accepts
# Pacing tolerance: a sample counts as due when the clock is within this fraction of a sample
# period of it, so float rounding of (now − origin)·fs never holds back an exactly due frame.
_DUE_EPSILON = 1e-6


class MeteringError(Exception):
    """A request the metering unit cannot carry out (nothing was changed)."""


def _ignore_event(name: str, details: dict) -> None:
    pass


def _ignore_measurement(measurement: Measurement) -> None:
    pass


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """``snapshot()`` bytes: magic ``MTRU``, version, input (0 synthetic, 1 remote), the next
    synthetic sample (−1 if none), then the ``MetrologyState`` bytes."""

    remote: bool
    position: int | None
    metrology: MetrologyState

    _HEAD = struct.Struct(">4sBBq")
    _MAGIC = b"MTRU"
    _VERSION = 1

    def to_bytes(self) -> bytes:
        return self._HEAD.pack(self._MAGIC, self._VERSION, int(self.remote),
                               -1 if self.position is None else self.position) + self.metrology.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Snapshot:
        """Total: any input gives a snapshot or MeteringError."""
        if not isinstance(data, (bytes, bytearray)) or len(data) < cls._HEAD.size:
            raise MeteringError("metering state: too short")
        magic, version, remote, position = cls._HEAD.unpack_from(data)
        if magic != cls._MAGIC or version != cls._VERSION or remote not in (0, 1) or position < -1:
            raise MeteringError("metering state: bad magic, version, input or position")
        try:
            state = MetrologyState.from_bytes(bytes(data[cls._HEAD.size:]))
        except MetrologyError as exc:
            raise MeteringError(f"metering state: {exc}") from None
        pos = None if position == -1 else position
        if pos is not None and state.next_sample is not None and pos < state.next_sample:
            raise MeteringError("metering state: synthetic position behind the metrology")
        return cls(bool(remote), pos, state)


class MeteringUnit:
    """Sensor → metrology → ``on_measurement``, paced in real time and watched (see the module
    docstring for the design; every public method is safe to call from any thread)."""

    def __init__(
        self,
        phases: int,
        sample_rate: int = 8000,
        frame_ms: int = 100,
        on_measurement: Callable[[Measurement], None] = _ignore_measurement,
        on_event: Callable[[str, dict], None] = _ignore_event,
        monotonic: Callable[[], float] = time.monotonic,
        state: bytes | None = None,
        stall_timeout: float = 5.0,
        *,
        remote: RemoteSensorLink | None = None,
        lock: threading.RLock | None = None,
        nominal_frequency: int = 50,
        no_load_current: float = 0.0,
        refusal_events_per_minute: int = 10,
    ) -> None:
        if phases not in ALLOWED_PHASES:
            raise MeteringError("phases must be 1 or 3")
        if sample_rate <= 0 or frame_ms <= 0 or (sample_rate * frame_ms) % 1000:
            raise MeteringError("a frame must hold a whole number of samples (sample_rate·frame_ms/1000)")
        if not (math.isfinite(stall_timeout) and stall_timeout > 0):
            raise MeteringError("stall_timeout must be a positive number of seconds")
        self.phases = phases
        self.sample_rate = int(sample_rate)
        self.frame_samples = self.sample_rate * frame_ms // 1000
        self.stall_timeout = float(stall_timeout)
        self._on_measurement = on_measurement
        self._on_event = on_event
        self._monotonic = monotonic
        self._lock = lock if lock is not None else threading.RLock()
        self._remote = remote
        self._refusal_limit = max(1, int(refusal_events_per_minute))
        try:
            self._metrology = Metrology(phases, self.sample_rate, nominal_frequency, no_load_current)
        except MetrologyError as exc:
            raise MeteringError(str(exc)) from None

        self._position = 0  # next synthetic sample
        if state is not None:
            snap = _Snapshot.from_bytes(state)
            if snap.remote != (remote is not None):
                raise MeteringError("metering state was saved for the other input (synthetic/remote)")
            try:
                self._metrology.restore(snap.metrology)
            except MetrologyError as exc:
                raise MeteringError(str(exc)) from None
            if snap.position is not None:
                self._position = snap.position
        self._sequence = self._position // self.frame_samples
        self._loads: tuple[tuple[float, float], ...] = ((0.0, 0.0),) * phases  # (P W, Q var) per phase
        self._voltages: tuple[float, ...] = (NOMINAL_VOLTAGE,) * phases
        self._source = self._make_source(self._loads, self._voltages)
        self._latest: Measurement | None = None
        self._delivery_failing = False

        # Real-time schedule and threads (guarded by _control; never held while processing).
        self._control = threading.Lock()
        self._running = False
        self._origin: tuple[float, int] | None = None  # (monotonic time, sample due at it)
        self._generation = 0
        self._heartbeat: tuple[int, float] = (0, 0.0)  # (generation, monotonic time)
        self._restarts = 0
        self._loop_never_beat = False  # the current loop has not beaten since it started
        self._loop_is_restart = False  # the current loop was started by the watchdog
        self._escalated_generation = -1
        self._wake = threading.Event()
        self._watchdog_wake = threading.Event()
        self._loops: list[threading.Thread] = []
        self._watchdog: threading.Thread | None = None
        self._max_lag = 0.0
        self._progress = threading.Condition(threading.Lock())
        # Test hook state (inject_stall).
        self._stall_request: float | None = None
        self._stall_entered = threading.Event()
        self._stall_release = threading.Event()
        # Remote input bookkeeping.
        self._last_frame_time: float | None = None
        self._silent_reported = False
        self._refusals: dict[str, int] = {}
        self._refusal_window: dict[str, tuple[float, int, int]] = {}  # reason: (start, reported, suppressed)

    # -- the synthetic installation -------------------------------------------------------------
    def _make_source(self, loads: tuple[tuple[float, float], ...], voltages: tuple[float, ...]) -> SyntheticSource:
        # S = U·I*: a current lagging by φ = atan2(Q, P) draws P + jQ, in every quadrant (|φ| >
        # 90° reverses the current: export), so one angle covers import, export, ind. and cap.
        currents, angles = [], []
        for (p, q), volts in zip(loads, voltages):
            apparent = math.hypot(p, q)
            angles.append(math.degrees(math.atan2(q, p)) if apparent > 0 else 0.0)
            currents.append(apparent / volts if volts > 0 else 0.0)  # no voltage, no current
        return SyntheticSource(self.phases, self.sample_rate, voltage_rms=voltages,
                               current_rms=tuple(currents), angle_deg=tuple(angles))

    def _require_synthetic(self) -> None:
        if self._remote is not None:
            raise MeteringError("the remote sensor is the input: the synthetic source is off")

    def set_load(self, active_w: float, reactive_var: float, phase: int = 0) -> None:
        """What the simulated installation draws from the next frame on, in total: split evenly
        over the phases (``phase`` 0) or all of it on phase 1..phases (the others draw nothing).
        P > 0 import, P < 0 export, Q > 0 inductive, Q < 0 capacitive."""
        self._require_synthetic()
        if not (math.isfinite(active_w) and math.isfinite(reactive_var)):
            raise MeteringError("load must be finite")
        if type(phase) is not int or not 0 <= phase <= self.phases:
            raise MeteringError(f"phase must be 0 (all) or 1..{self.phases}: the meter has {self.phases}")
        if phase == 0:
            loads = ((float(active_w) / self.phases, float(reactive_var) / self.phases),) * self.phases
        else:
            loads = tuple((float(active_w), float(reactive_var)) if p == phase - 1 else (0.0, 0.0)
                          for p in range(self.phases))
        with self._lock:
            self._source = self._make_source(loads, self._voltages)
            self._loads = loads

    def set_voltages(self, volts: tuple[float, ...]) -> None:
        """The RMS voltage of each phase from the next frame on: one value per phase, each finite
        and within 0..MAX_SIMULATED_VOLTAGE. The loads stay; the currents follow (I = S / U)."""
        self._require_synthetic()
        values = tuple(float(v) for v in volts)
        if len(values) != self.phases:
            raise MeteringError(f"one voltage per phase: {self.phases} values")
        if not all(math.isfinite(v) and 0.0 <= v <= MAX_SIMULATED_VOLTAGE for v in values):
            raise MeteringError(f"a phase voltage is finite and within 0..{MAX_SIMULATED_VOLTAGE:g} V")
        with self._lock:
            self._source = self._make_source(self._loads, values)
            self._voltages = values

    def installation(self) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
        """(load (P W, Q var) per phase, voltage per phase) the synthetic source draws now."""
        with self._lock:
            return self._loads, self._voltages

    def restore_installation(self, loads, voltages) -> None:
        """Draw again what `installation()` returned (e.g. before the software restarted), checked
        like set_load and set_voltages; MeteringError otherwise."""
        self._require_synthetic()
        try:
            loads = tuple((float(p), float(q)) for p, q in loads)
            values = tuple(float(v) for v in voltages)
        except (TypeError, ValueError):
            raise MeteringError("an installation is (P, Q) and a voltage per phase") from None
        if len(loads) != self.phases or not all(math.isfinite(p) and math.isfinite(q) for p, q in loads):
            raise MeteringError(f"one finite (P, Q) per phase: {self.phases}")
        self.set_voltages(values)
        with self._lock:
            self._source = self._make_source(loads, self._voltages)
            self._loads = loads

    # -- processing (always under self._lock) -------------------------------------------------
    def _process_synthetic_frame(self, n: int, repeat: int = 1) -> Measurement:
        frame = self._source.frame(self._sequence, self._position, n)
        return self._measure(frame, repeat)

    def _measure(self, frame, repeat: int = 1) -> Measurement:
        before = self._metrology.snapshot()
        measurement = self._metrology.process(frame, repeat)  # MetrologyError leaves it unchanged
        try:
            self._on_measurement(measurement)
        except Exception as exc:  # noqa: BLE001 - roll back; the frame is measured again
            self._metrology.restore(before)
            if not self._delivery_failing:
                self._delivery_failing = True
                self._emit("measurement_delivery_failed",
                           {"error": f"{type(exc).__name__}: {exc}", "start_sample": frame.start_sample})
            raise
        self._delivery_failing = False
        # the instantaneous values are those of a frame of whole cycles (or a full-length one): the
        # short rest of an interval (measure_for) holds part of a cycle, whose RMS is no value
        if frame.n_samples >= self.frame_samples or frame.n_samples % self._metrology.window == 0 \
                or self._latest is None:
            self._latest = measurement
        if self._remote is None:
            self._position = frame.start_sample + measurement.n_samples
            self._sequence += repeat
        with self._progress:
            self._progress.notify_all()
        return measurement

    def measure_for(self, seconds: float, steady: bool = False) -> list[Measurement]:
        """Process exactly ``round(seconds · sample_rate)`` samples of the synthetic input now,
        in frames of ``frame_ms`` (the last one shorter if need be); returns the measurements
        (each also went to ``on_measurement``). While the real-time loop runs, its schedule
        moves on by as much.

        ``steady``: the synthetic input is periodic while its load stays as it is, so once the
        metrology is in steady state one frame may stand for all the whole frames that follow
        (Metrology.process, repeat): a long simulated interval costs what two frames cost, and
        registers what frame by frame would, up to the rounding of the sums (a few nWh)."""
        if self._remote is not None:
            raise MeteringError("the remote sensor is the input: the synthetic source is off")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise MeteringError("seconds must be finite and not negative")
        remaining = round(seconds * self.sample_rate)
        period = self._source.period_samples() if steady else None
        out = []
        while remaining > 0:
            n = min(self.frame_samples, remaining)
            with self._lock:
                repeat = 1
                # (not the first frame: the DFT window may still hold samples of the load before)
                if out and period and n % period == 0 and self._metrology.can_repeat(n):
                    repeat = remaining // n
                out.append(self._process_synthetic_frame(n, repeat))
                with self._control:
                    if self._origin is not None:
                        self._origin = (self._origin[0], self._origin[1] + n * repeat)
            remaining -= n * repeat
        return out

    # -- remote input ---------------------------------------------------------------------------
    def receive_sensor_message(self, data: bytes) -> list[bytes]:
        """Feed one message of the remote sensor; returns what must be sent back to it (a pair
        response while pairing). Never raises for received bytes (only MeteringError when the
        input is synthetic)."""
        link = self._remote
        if link is None:
            raise MeteringError("the input is the synthetic source, not a remote sensor")
        replies: list[bytes] = []
        with self._lock:
            for event in link.receive(data):
                if isinstance(event, Transmit):
                    replies.append(event.data)
                elif isinstance(event, FrameRefused):
                    self._refused(event.reason.value, event.detail, event.sensor_id, event.sequence)
                elif isinstance(event, SensorPaired):
                    # The new sensor counts samples on a timeline of its own: continuity is
                    # checked from its first frame on (the carries stay; replays are still
                    # refused by the link's sequence numbers).
                    state = self._metrology.snapshot()
                    self._metrology.restore(MetrologyState(state.phases, state.sample_rate, None, state.carries))
                    self._emit("sensor_paired", {"sensor_id": _hex(event.sensor_id),
                                                 "replaced_sensor_id": _hex(event.replaced_sensor_id)})
                elif isinstance(event, FrameAccepted):
                    self._accepted(event)
        return replies

    def _accepted(self, event: FrameAccepted) -> None:
        frame = event.frame
        if frame.phases != self.phases or frame.sample_rate != self.sample_rate:
            self._refused("wrong-format", f"{frame.phases} phases at {frame.sample_rate} Hz; the meter "
                          f"measures {self.phases} at {self.sample_rate} Hz", event.sensor_id, frame.sequence)
            return
        expected = self._metrology.next_sample
        if expected is not None and frame.start_sample < expected:
            self._refused("overlap", f"frame starts at sample {frame.start_sample}, before {expected}",
                          event.sensor_id, frame.sequence)
            return
        try:
            measurement = self._measure(frame)
        except MetrologyError as exc:
            self._refused("wrong-format", str(exc), event.sensor_id, frame.sequence)
            return
        except Exception:  # noqa: BLE001 - delivery failed and was reported; the frame is lost
            return  # the link has moved on, so this frame will not come again
        now = self._monotonic()
        if self._silent_reported and self._last_frame_time is not None:
            self._emit("sensor_resumed", {"silent_s": round(now - self._last_frame_time, 3)})
        self._silent_reported = False
        self._last_frame_time = now
        if event.missing_frames or measurement.gap_samples:
            self._emit("sensor_gap", {"missing_frames": event.missing_frames,
                                      "gap_samples": measurement.gap_samples, "sequence": frame.sequence})

    def _refused(self, reason: str, detail: str, sensor_id: bytes | None, sequence: int | None) -> None:
        # A flood of bad datagrams must not fill the event log: per reason, at most
        # refusal_events_per_minute reports a minute; the rest are counted.
        self._refusals[reason] = self._refusals.get(reason, 0) + 1
        now = self._monotonic()
        start, reported, suppressed = self._refusal_window.get(reason, (now, 0, 0))
        if now - start >= 60.0:
            start, reported = now, 0
        if reported >= self._refusal_limit:
            self._refusal_window[reason] = (start, reported, suppressed + 1)
            return
        self._refusal_window[reason] = (start, reported + 1, 0)
        self._emit("sensor_frame_refused", {"reason": reason, "detail": detail, "sensor_id": _hex(sensor_id),
                                            "sequence": sequence, "suppressed": suppressed})

    def refusal_counts(self) -> dict[str, int]:
        """Refused remote-sensor messages per reason since construction (reported or not)."""
        with self._lock:
            return dict(self._refusals)

    def open_pairing(self) -> None:
        """Open a pairing window. Only on an authorised command in certification mode (the
        caller checks that); the old pairing stays in force until a new one is confirmed."""
        if self._remote is None:
            raise MeteringError("the input is the synthetic source, not a remote sensor")
        with self._lock:
            self._remote.open_pairing()

    def close_pairing(self) -> None:
        if self._remote is not None:
            with self._lock:
                self._remote.close_pairing()

    def pairing_record(self) -> PairingRecord | None:
        """The pairing in force, with the last accepted sequence number: persist it (it holds
        the link key) whenever ``sensor_paired`` is reported, and with the registers."""
        if self._remote is None:
            return None
        with self._lock:
            return self._remote.record

    def serve_udp(self, host: str, port: int) -> UdpSensorListener:
        """Listen for remote-sensor datagrams on (host, port) (port 0: any free port) and feed
        them to ``receive_sensor_message``; replies go back to the sender."""
        if self._remote is None:
            raise MeteringError("the input is the synthetic source, not a remote sensor")
        return UdpSensorListener(self, host, port)

    # -- state ----------------------------------------------------------------------------------
    def latest(self) -> Measurement | None:
        """The last measurement delivered (instantaneous values), or None."""
        with self._lock:
            return self._latest

    def snapshot(self) -> bytes:
        """Metrology state and synthetic sample position as of the measurements delivered so far;
        ``MeteringUnit(..., state=...)`` continues from it without counting anything twice."""
        with self._lock:
            position = None if self._remote is not None else self._position
            return _Snapshot(self._remote is not None, position, self._metrology.snapshot()).to_bytes()

    @property
    def position(self) -> int:
        """The next sample to be measured (synthetic input), or the one after the last accepted
        remote frame (0 before any)."""
        with self._lock:
            if self._remote is None:
                return self._position
            return self._metrology.next_sample or 0

    def wait_until_position(self, sample: int, timeout: float) -> bool:
        """Block until ``position >= sample`` or ``timeout`` real seconds pass; True if reached."""
        deadline = time.monotonic() + timeout
        while self.position < sample:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._progress:
                self._progress.wait(min(left, 0.05))
        return True

    # -- real time ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    @property
    def generation(self) -> int:
        """Which loop is current: 1 after start(), +1 for every watchdog restart."""
        return self._generation

    @property
    def restarts(self) -> int:
        return self._restarts

    def start(self, backlog: float = 0.0) -> None:
        """Start the real-time loop and its watchdog. The signal is due from now on, continuing
        from the current position (time spent stopped is not measured), or, with `backlog`, from
        that many seconds ago: the signal a measuring front end kept while the software restarted
        (it is caught up frame by frame, like a late loop's)."""
        with self._lock, self._control:  # lock order everywhere: _lock, then _control
            if self._running:
                return
            self._running = True
            self._origin = (self._monotonic() - max(0.0, float(backlog)), self.position)
            self._max_lag = 0.0
            self._stall_release.clear()
            self._start_loop_locked()
            self._watchdog = threading.Thread(target=self._watch, name="metering-watchdog", daemon=True)
            self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and the watchdog. Frames already due are still measured (here, on the
        caller's thread), so stopping a late loop loses nothing; the signal after now is not."""
        with self._control:
            if not self._running:
                return
            self._running = False
            self._generation += 1  # every loop is now stale
            loops, watchdog = self._loops, self._watchdog
            self._loops, self._watchdog = [], None
        self._stall_release.set()
        self._wake.set()
        self._watchdog_wake.set()
        me = threading.current_thread()
        for thread in (*loops, watchdog):
            if thread is not None and thread is not me:
                thread.join(timeout)
        self._watchdog_wake.clear()
        if not any(t.is_alive() for t in loops if t is not me):
            try:
                self.process_due()  # the backlog of a late loop
            except Exception:  # noqa: BLE001 - delivery failure: reported by _measure
                pass
        with self._control:
            if not self._running:
                self._origin = None

    def wake(self) -> None:
        """Let the loop look at the clock now (for a fake ``monotonic`` that was just advanced)."""
        self._wake.set()

    def _start_loop_locked(self, restart: bool = False) -> None:
        self._generation += 1
        generation = self._generation
        self._heartbeat = (generation, self._monotonic())
        self._loop_never_beat = True
        self._loop_is_restart = restart
        self._loops = [t for t in self._loops if t.is_alive()]
        thread = threading.Thread(target=self._run, args=(generation,), name=f"metering-loop-{generation}",
                                  daemon=True)
        self._loops.append(thread)
        thread.start()

    def _current(self, generation: int) -> bool:
        return self._running and self._generation == generation

    def _beat(self, generation: int) -> None:
        with self._control:
            if self._generation == generation:
                self._heartbeat = (generation, self._monotonic())
                self._loop_never_beat = False

    def _due_end(self, now: float) -> int | None:
        """The sample index up to which (exclusive) the signal is due at ``now``."""
        origin = self._origin
        if origin is None:
            return None
        return origin[1] + math.floor((now - origin[0]) * self.sample_rate + _DUE_EPSILON)

    def _run(self, generation: int) -> None:
        frame_s = self.frame_samples / self.sample_rate
        while self._current(generation):
            self._wake.clear()
            self._maybe_stall()
            if not self._current(generation):
                return  # abandoned while stalled: the fresh loop has taken over
            try:
                self.process_due(generation)
            except Exception:  # noqa: BLE001 - reported in _measure; retried on the next wake-up
                pass
            if not self._current(generation):
                return
            self._beat(generation)
            if self._remote is not None:
                self._check_silence()
            self._wake.wait(min(self._seconds_to_next_frame(), frame_s, self.stall_timeout / 4))

    def _seconds_to_next_frame(self) -> float:
        with self._control:
            origin = self._origin
        if origin is None or self._remote is not None:
            return math.inf
        next_end = self._position + self.frame_samples  # an int read: no lock needed
        due_at = origin[0] + (next_end - origin[1]) / self.sample_rate
        return max(0.0, due_at - self._monotonic())

    def process_due(self, generation: int | None = None) -> int:
        """Process every synthetic frame whose samples are all due by ``monotonic`` (the loop's
        body; callable directly on a started unit, e.g. after advancing a fake clock). Returns
        the number of frames. ``generation`` (the loop's own) makes a stale loop stop here."""
        if self._remote is not None:
            return 0
        count = 0
        while True:
            with self._lock:
                if generation is not None and not self._current(generation):
                    return count
                now = self._monotonic()
                due_end = self._due_end(now)
                if due_end is None or self._position + self.frame_samples > due_end:
                    return count
                origin = self._origin
                lateness = now - origin[0] - (self._position + self.frame_samples - origin[1]) / self.sample_rate
                self._process_synthetic_frame(self.frame_samples)
                self._max_lag = max(self._max_lag, lateness)
                count += 1
            if generation is not None:
                self._beat(generation)

    def lag_seconds(self) -> float:
        """How long the oldest due but unprocessed frame has been waiting (0 when on time or not
        running): the real-time loop's delay."""
        with self._control:
            origin = self._origin
        if origin is None or self._remote is not None:
            return 0.0
        now = self._monotonic()
        # No lock: a monitor must get an answer while a stuck loop holds it.
        next_end = self._position + self.frame_samples
        return max(0.0, now - origin[0] - (next_end - origin[1]) / self.sample_rate)

    def max_lag_seconds(self) -> float:
        """The longest any frame waited after falling due, since start()."""
        return self._max_lag

    # -- watchdog -------------------------------------------------------------------------------
    def _watch(self) -> None:
        interval = min(self.stall_timeout / 4, 0.25)
        while self._running:
            self._watchdog_wake.wait(interval)
            if not self._running:
                return
            self.check_watchdog()

    def check_watchdog(self) -> bool:
        """One watchdog check (the watchdog thread runs it periodically): restart a loop that has
        not beaten for ``stall_timeout``. Returns True if it restarted one."""
        with self._control:
            if not self._running:
                return False
            now = self._monotonic()
            _, beat_time = self._heartbeat
            stalled = now - beat_time
            if stalled <= self.stall_timeout:
                return False
            position = self._position if self._remote is None else (self._metrology.next_sample or 0)
            if self._loop_is_restart and self._loop_never_beat:
                # The fresh loop has not beaten once: the stalled one holds the lock.
                if self._escalated_generation != self._generation:
                    self._escalated_generation = self._generation
                    self._report("metrology_unrecoverable", {"stalled_s": round(stalled, 3), "position": position})
                return False
            self._restarts += 1
            self._start_loop_locked(restart=True)
            self._report("metrology_restarted", {"stalled_s": round(stalled, 3), "position": position,
                                                 "restarts": self._restarts})
            return True

    def _report(self, name: str, details: dict) -> None:
        # From the watchdog: on a thread of its own, so a handler waiting for a lock held by a
        # stuck loop cannot stop the watchdog from escalating.
        threading.Thread(target=self._emit, args=(name, details), name=f"metering-report-{name}", daemon=True).start()

    def _emit(self, name: str, details: dict) -> None:
        try:
            self._on_event(name, details)
        except Exception:  # noqa: BLE001 - an event handler must not stop metering
            pass

    def _check_silence(self) -> None:
        with self._lock:
            now = self._monotonic()
            since = self._last_frame_time
            if since is None:
                self._last_frame_time = since = now  # silence counts from start() on
            if not self._silent_reported and now - since > self.stall_timeout:
                self._silent_reported = True
                self._emit("sensor_silent", {"silent_s": round(now - since, 3)})

    # -- test hook ------------------------------------------------------------------------------
    def inject_stall(self, seconds: float, timeout: float = 5.0) -> bool:
        """TEST HOOK (fault injection only; the interface exposes it only when fault injection
        is enabled): the running loop blocks for ``seconds`` of real time at its next wake-up, as
        a hung loop would (outside the lock, between frames). Returns True once the loop is
        blocked (False if it did not get there within ``timeout`` real seconds); when the
        calling thread holds the unit's lock it returns True at once, as the loop may be waiting
        for that very lock. ``end_stall()`` or ``stop()`` end it early."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise MeteringError("seconds must be finite and not negative")
        if not self._running:
            raise MeteringError("the real-time loop is not running")
        self._stall_entered.clear()
        self._stall_release.clear()
        self._stall_request = float(seconds)
        self._wake.set()
        owned = getattr(self._lock, "_is_owned", None)
        if owned is not None and owned():
            return True
        return self._stall_entered.wait(timeout)

    def end_stall(self) -> None:
        """TEST HOOK: end an injected stall now."""
        self._stall_release.set()

    def _maybe_stall(self) -> None:
        seconds, self._stall_request = self._stall_request, None
        if seconds is not None:
            self._stall_entered.set()
            self._stall_release.wait(seconds)


class UdpSensorListener:
    """Feeds remote-sensor datagrams into a ``MeteringUnit`` (a daemon thread) and sends its
    replies back to the sender. ``address`` is the bound (host, port); ``close()`` stops it."""

    def __init__(self, unit: MeteringUnit, host: str, port: int) -> None:
        self._unit = unit
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, port))
        self._socket.settimeout(0.2)
        self.address = self._socket.getsockname()[:2]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="metering-udp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                data, sender = self._socket.recvfrom(MAX_MESSAGE_BYTES + 1)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            for reply in self._unit.receive_sensor_message(data):
                try:
                    self._socket.sendto(reply, sender)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._socket.close()

    def __enter__(self) -> UdpSensorListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
