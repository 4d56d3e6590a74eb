"""Metrology: from sample frames to instantaneous values and exact energy increments.

Definitions (per phase p, frame of n samples k at rate fs, sample values v, i):

* ``Urms = √(Σv²/n)``, ``Irms = √(Σi²/n)``.
* Active power ``P = Σ v·i / n``: the *total* active power, fundamental and harmonics
  (IEC 62053-21/-22, MID B.3). Active energy ``Σ v·i / fs``.
* Reactive power ``Q``: the *fundamental* reactive power ``U₁·I₁·sin φ₁`` (IEC 62053-24),
  positive when the current lags (inductive import). ``U₁``, ``I₁`` are phasors from a
  one-cycle sliding DFT at the nominal frequency (window N = fs / f_nominal samples, carried
  across frames), evaluated at every sample: ``Q(k) = (2/N²)·Im(V₁(k)·conj(I₁(k)))``, and the
  frame's Q is the mean of Q(k). A one-cycle DFT rejects every harmonic exactly at the nominal
  frequency. Harmonic reactive power (Budeanu's Σ Uₕ·Iₕ·sin φₕ) is *not* included.
* Apparent power ``S = Urms·Irms`` (arithmetic, per phase); with harmonics S² ≠ P² + Q².
* Power factor ``PF = P / S`` (signed: negative on export; 0 when S = 0).
* Frequency: from the rotation of the fundamental voltage phasor, ``f = f_nom +
  Δangle / (2π·Δk/fs)``, between the end of the previous frame and the end of this one (or
  across this frame for the first frame). It is immune to harmonics and zero-crossing noise;
  it is NaN when the phase has less than ``MIN_VOLTAGE_FOR_FREQUENCY`` fundamental.

Energy registers (four-quadrant diagram of IEC 62053-23, the meter's point of view, P on the
horizontal axis with import to the right, Q vertical with inductive import up):

    Q1: P ≥ 0, Q > 0  (import, inductive)      Q2: P < 0, Q > 0  (export, capacitive)
    Q3: P < 0, Q < 0  (export, inductive)      Q4: P ≥ 0, Q < 0  (import, capacitive)

    +A = Q1 + Q4 active     −A = Q2 + Q3 active     +R = Q1 + Q2     −R = Q3 + Q4

A frame's energy goes to the quadrant of its P and Q signs (P = 0 counts as import). The
registers are exact integers in ``ENERGY_UNITS_PER_WH`` units per Wh/varh (µWh); the fraction
below one unit is carried per register and per phase (and for the total), so nothing drifts
or is lost: the registered energy is the floor of the exact running sum. The *total*
(``Measurement.energy_delta``, the input of 1-0:1.8.0 etc.) is computed from the sum of the
phases' signed powers (the phases are netted, as in a three-system meter), with carries of
its own; per-phase increments are in ``Measurement.phase_energy_deltas``. +R = Q1 + Q2 and
−R = Q3 + Q4 hold exactly for every increment.

No-load condition: with ``no_load_current`` > 0 a phase whose frame Irms is below it registers
no energy (its instantaneous values are still reported), so noise on an idle current input
cannot creep into ±A (the netted ±A would otherwise grow with the noise in both registers).

Continuity: frames must come in sample order. A frame that starts before the end of the
previous one is refused (it would count energy twice); a frame after a gap is accepted and the
gap reported (``gap_samples``); the sliding DFT then starts afresh, which loses at most one
cycle of reactive energy (as at power-up).
"""
from __future__ import annotations

import cmath
import math
import struct
from dataclasses import dataclass, fields

import numpy as np

from smartmeter.legal.sensor import ALLOWED_PHASES, SampleFrame

__all__ = [
    "ENERGY_UNITS_PER_WH",
    "REGISTERS",
    "EnergyDelta",
    "PhaseValues",
    "Measurement",
    "MetrologyError",
    "MetrologyState",
    "Metrology",
    "quadrant",
]

ENERGY_UNITS_PER_WH = 1_000_000  # energy increments are in µWh / µvarh
_UNITS_PER_WS = ENERGY_UNITS_PER_WH / 3600.0
MIN_VOLTAGE_FOR_FREQUENCY = 1.0  # volts RMS of the fundamental
# Register columns of the carries: the quadrant registers are primary, ±R derive from them.
_CARRY_COLUMNS = ("a_plus", "a_minus", "r_q1", "r_q2", "r_q3", "r_q4")
REGISTERS = ("a_plus", "a_minus", "r_plus", "r_minus", "r_q1", "r_q2", "r_q3", "r_q4")


class MetrologyError(Exception):
    """A frame or a saved state the metrology cannot accept (nothing was changed)."""


def quadrant(active: float, reactive: float) -> int | None:
    """Quadrant 1..4 of a (P, Q) pair, None when Q = 0 (no reactive register is fed)."""
    if reactive > 0:
        return 1 if active >= 0 else 2
    if reactive < 0:
        return 4 if active >= 0 else 3
    return None


@dataclass(frozen=True, slots=True)
class EnergyDelta:
    """Exact energy increments in ``ENERGY_UNITS_PER_WH`` units (µWh / µvarh)."""

    a_plus: int = 0
    a_minus: int = 0
    r_plus: int = 0
    r_minus: int = 0
    r_q1: int = 0
    r_q2: int = 0
    r_q3: int = 0
    r_q4: int = 0

    def __add__(self, other: EnergyDelta) -> EnergyDelta:
        if not isinstance(other, EnergyDelta):
            return NotImplemented
        return EnergyDelta(*(getattr(self, n) + getattr(other, n) for n in REGISTERS))

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in REGISTERS}


@dataclass(frozen=True, slots=True)
class PhaseValues:
    """Instantaneous (frame-mean) values of one phase."""

    voltage_rms: float  # V
    current_rms: float  # A
    active_power: float  # W, total (fundamental + harmonics); negative on export
    reactive_power: float  # var, fundamental; positive inductive import
    apparent_power: float  # VA, Urms·Irms
    power_factor: float  # P / S, signed
    frequency: float  # Hz, NaN without voltage

    @property
    def quadrant(self) -> int | None:
        return quadrant(self.active_power, self.reactive_power)


@dataclass(frozen=True, slots=True)
class Measurement:
    sequence: int
    start_sample: int
    n_samples: int
    sample_rate: int
    phases: tuple[PhaseValues, ...]
    energy_delta: EnergyDelta  # the total over all phases: what the registers take
    phase_energy_deltas: tuple[EnergyDelta, ...]
    gap_samples: int  # samples missing before this frame (0 when continuous or first)

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    @property
    def active_power(self) -> float:
        return sum(p.active_power for p in self.phases)

    @property
    def reactive_power(self) -> float:
        return sum(p.reactive_power for p in self.phases)

    @property
    def frequency(self) -> float:
        """Frequency of the first phase that has voltage (NaN if none)."""
        for p in self.phases:
            if not math.isnan(p.frequency):
                return p.frequency
        return math.nan


@dataclass(frozen=True, slots=True)
class MetrologyState:
    """What a restart must keep: the carried fractions (each in [0, 1) unit) per phase and for
    the total, in the order ``a_plus, a_minus, r_q1..r_q4``, and the next expected sample."""

    phases: int
    sample_rate: int
    next_sample: int | None
    carries: tuple[tuple[float, ...], ...]  # phases rows, then the total row

    _HEAD = struct.Struct(">4sBBIq")
    _MAGIC = b"MTRS"
    _VERSION = 1

    def __post_init__(self) -> None:
        if self.phases not in ALLOWED_PHASES or self.sample_rate <= 0:
            raise MetrologyError("state: phases must be 1 or 3 and sample_rate positive")
        if self.next_sample is not None and self.next_sample < 0:
            raise MetrologyError("state: next_sample must not be negative")
        if len(self.carries) != self.phases + 1 or any(len(row) != len(_CARRY_COLUMNS) for row in self.carries):
            raise MetrologyError("state: carries must be (phases + 1) rows of 6")
        if not all(0.0 <= c < 1.0 for row in self.carries for c in row):
            raise MetrologyError("state: every carry must lie in [0, 1)")

    def to_bytes(self) -> bytes:
        head = self._HEAD.pack(self._MAGIC, self._VERSION, self.phases, self.sample_rate,
                               -1 if self.next_sample is None else self.next_sample)
        flat = [c for row in self.carries for c in row]
        return head + struct.pack(f">{len(flat)}d", *flat)

    @classmethod
    def from_bytes(cls, data: bytes) -> MetrologyState:
        """Total: any input gives a state or MetrologyError."""
        if not isinstance(data, (bytes, bytearray)) or len(data) < cls._HEAD.size:
            raise MetrologyError("state: too short")
        magic, version, phases, rate, nxt = cls._HEAD.unpack_from(data)
        if magic != cls._MAGIC or version != cls._VERSION:
            raise MetrologyError("state: bad magic or version")
        if phases not in ALLOWED_PHASES:
            raise MetrologyError("state: phases must be 1 or 3")
        count = (phases + 1) * len(_CARRY_COLUMNS)
        if len(data) != cls._HEAD.size + 8 * count:
            raise MetrologyError("state: wrong length")
        flat = struct.unpack_from(f">{count}d", data, cls._HEAD.size)
        width = len(_CARRY_COLUMNS)
        rows = tuple(tuple(flat[r * width : (r + 1) * width]) for r in range(phases + 1))
        if nxt < -1:
            raise MetrologyError("state: bad next_sample")
        return cls(phases, rate, None if nxt == -1 else nxt, rows)


class Metrology:
    """Per-phase measurement and exact energy accumulation. ``process(frame) -> Measurement``.

    ``nominal_frequency`` (integer Hz) sets the DFT window ``N = round(fs / f_nominal)``; for
    exact harmonic rejection fs should be a multiple of it (8000/50 = 160, 8000/60 ≈ 133.3 is
    accepted with a small leakage).
    """

    def __init__(self, phases: int, sample_rate: int, nominal_frequency: int = 50,
                 no_load_current: float = 0.0) -> None:
        if phases not in ALLOWED_PHASES:
            raise MetrologyError("phases must be 1 or 3")
        if not (math.isfinite(no_load_current) and no_load_current >= 0.0):
            raise MetrologyError("no_load_current must be a finite, non-negative current")
        if sample_rate <= 0 or nominal_frequency <= 0 or sample_rate < 4 * nominal_frequency:
            raise MetrologyError("sample_rate must be at least 4 × the nominal frequency")
        self.phases = phases
        self.sample_rate = int(sample_rate)
        self.nominal_frequency = int(nominal_frequency)
        self.window = max(1, round(sample_rate / nominal_frequency))
        # Anti-creep (IEC 62053-21 no-load condition): a phase whose frame Irms is below this
        # registers nothing, so current-sensor noise alone never accumulates energy. A type
        # parameter: set it below the starting current the meter must register.
        self.no_load_current = float(no_load_current)
        # exp(-j·ω_nom·k) repeats after fs / gcd(fs, f_nom) samples: index it modulo that period
        # so the reference never loses precision however large k grows.
        self._rotation_period = self.sample_rate // math.gcd(self.sample_rate, self.nominal_frequency)
        self._rotation_cache: dict[tuple[int, int], np.ndarray] = {}
        self._carry: list[tuple[float, ...]] = [(0.0,) * len(_CARRY_COLUMNS)] * (phases + 1)
        self._work: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._next_sample: int | None = None
        self._reset_signal_state()

    def _reset_signal_state(self) -> None:
        # The last N reference-rotated samples of v and i (zeros = nothing seen yet).
        self._history = np.zeros((2, self.phases, self.window), dtype=np.complex128)
        self._last_phasor: list[complex] | None = None  # V₁ at the last sample of the previous frame
        self._filled = 0  # real samples in the history (up to N)
        self._pending = 0  # samples whose reactive energy waits for the first full window

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> MetrologyState:
        return MetrologyState(self.phases, self.sample_rate, self._next_sample, tuple(self._carry))

    def restore(self, state: MetrologyState) -> None:
        if state.phases != self.phases or state.sample_rate != self.sample_rate:
            raise MetrologyError("state was saved for another phase count or sample rate")
        self._carry = [tuple(float(c) for c in row) for row in state.carries]
        self._next_sample = state.next_sample
        self._reset_signal_state()

    @property
    def next_sample(self) -> int | None:
        return self._next_sample

    # -- processing ---------------------------------------------------------------------------
    def _rotation(self, start: int, n: int) -> np.ndarray:
        offset = start % self._rotation_period
        key = (offset, n)
        rot = self._rotation_cache.get(key)
        if rot is None:
            k = (np.arange(offset, offset + n, dtype=np.int64) * self.nominal_frequency) % self.sample_rate
            rot = np.exp(-2j * np.pi * k / self.sample_rate)
            if len(self._rotation_cache) > 64:
                self._rotation_cache.clear()
            self._rotation_cache[key] = rot
        return rot

    def can_repeat(self, n_samples: int) -> bool:
        """Whether a frame of `n_samples` may stand for copies of itself (process(repeat=k)): the
        DFT window is full (no reactive energy deferred) and the frame spans whole periods of
        the reference rotation, so its copies would be measured exactly as it is."""
        return self._filled >= self.window and self._pending == 0 and n_samples % self._rotation_period == 0

    def process(self, frame: SampleFrame, repeat: int = 1) -> Measurement:
        """Measure one frame. `repeat` > 1: the input is periodic and the frame stands for that
        many consecutive copies of itself (a steady simulated load), measured as one: every sum
        is the frame's times `repeat`, the carries and the position go on as after the copies."""
        if repeat != 1 and not (isinstance(repeat, int) and repeat > 1 and self.can_repeat(frame.n_samples)):
            raise MetrologyError("a frame stands for copies of itself only in steady state, over whole periods")
        if frame.phases != self.phases or frame.sample_rate != self.sample_rate:
            raise MetrologyError(
                f"frame has {frame.phases} phases at {frame.sample_rate} Hz; "
                f"metrology expects {self.phases} at {self.sample_rate} Hz"
            )
        gap = 0
        if self._next_sample is not None:
            if frame.start_sample < self._next_sample:
                raise MetrologyError(
                    f"frame starts at sample {frame.start_sample}, before the next expected "
                    f"{self._next_sample}: refused so no energy is counted twice"
                )
            gap = frame.start_sample - self._next_sample
        v, i = frame.voltages, frame.currents
        n, fs, window, phases = frame.n_samples, self.sample_rate, self.window, self.phases

        sum_vv = np.einsum("pk,pk->p", v, v).tolist()
        sum_ii = np.einsum("pk,pk->p", i, i).tolist()
        sum_vi = np.einsum("pk,pk->p", v, i).tolist()
        # Finite sums of squares mean every sample is finite (and v·i and the DFT stay finite).
        if not all(math.isfinite(x) for x in (*sum_vv, *sum_ii)):
            raise MetrologyError("frame contains non-finite or overflowing samples")

        # Fundamental phasors by a one-cycle sliding DFT, continued from the previous frame:
        # rotated = [last N reference-rotated samples | this frame's], and the window sum ending
        # at frame sample m is csum[N + m] − csum[m].
        rotated, csum, sums = self._buffers(n)
        if gap == 0:
            rotated[:, :, :window] = self._history
        else:
            rotated[:, :, :window] = 0.0
        rot = self._rotation(frame.start_sample, n)
        np.multiply(v, rot, out=rotated[0, :, window:])
        np.multiply(i, rot, out=rotated[1, :, window:])
        np.cumsum(rotated, axis=2, out=csum)
        np.subtract(csum[:, :, window:], csum[:, :, :n], out=sums)
        vph, iph = sums[0], sums[1]

        # Samples before the first full window (power-up, after a gap) have no phasor yet: their
        # reactive energy is deferred and booked at the first full window's Q, so starting up
        # loses nothing in steady state.
        filled = self._filled if gap == 0 else 0
        pending = self._pending if gap == 0 else 0
        first_full = min(n, max(0, window - 1 - filled))
        scale = 2.0 / (window * window)
        q_sum = [0.0] * phases
        q_mean = [0.0] * phases
        if first_full < n:
            valid = n - first_full
            for p in range(phases):
                # Σ Im(V₁·conj I₁) over the valid samples = Im(Σ conj(I₁)·V₁), one BLAS dot.
                q_valid = np.vdot(iph[p, first_full:], vph[p, first_full:]).imag
                q_first = (vph[p, first_full] * iph[p, first_full].conjugate()).imag
                q_sum[p] = (q_valid + (pending + first_full) * q_first) * scale
                q_mean[p] = q_valid * scale / valid
            pending = 0
        else:
            pending += n

        if not all(math.isfinite(x) for x in (*sum_vi, *q_sum)):
            raise MetrologyError("frame contains overflowing samples")

        # Frequency from the rotation of the fundamental voltage phasor.
        last = vph[:, -1].tolist()
        if self._last_phasor is not None and gap == 0:
            ref, span = self._last_phasor, n
        elif n > window:
            ref, span = vph[:, window - 1].tolist(), n - window
        else:
            ref, span = None, 0
        to_rms = math.sqrt(2) / window
        freq = [math.nan] * phases
        if ref is not None:
            for p in range(phases):
                if min(abs(last[p]), abs(ref[p])) * to_rms >= MIN_VOLTAGE_FOR_FREQUENCY:
                    turn = cmath.phase(last[p] * ref[p].conjugate())
                    freq[p] = self.nominal_frequency + turn * fs / (2 * math.pi * span)

        # Energy in units per phase and for the netted total; quadrant registers, then ±A.
        to_units = _UNITS_PER_WS / fs * repeat
        no_load = self.no_load_current * self.no_load_current * n
        active = [x * to_units if ii >= no_load else 0.0 for x, ii in zip(sum_vi, sum_ii)]
        reactive = [x * to_units if ii >= no_load else 0.0 for x, ii in zip(q_sum, sum_ii)]
        active.append(math.fsum(active))
        reactive.append(math.fsum(reactive))
        carries = []
        energy = []
        for row, a, r in zip(self._carry, active, reactive):
            inc = [0.0] * 6
            imp = a >= 0.0
            inc[0 if imp else 1] = abs(a)
            if r > 0.0:
                inc[2 if imp else 3] = r
            elif r < 0.0:
                inc[5 if imp else 4] = -r
            whole = []
            new_row = []
            for c, x in zip(row, inc):
                t = c + x
                w = math.floor(t)
                rest = t - w
                whole.append(w)
                new_row.append(rest if rest < 1.0 else 0.0)
            carries.append(tuple(new_row))
            a_p, a_m, q1, q2, q3, q4 = whole
            energy.append(EnergyDelta(a_p, a_m, q1 + q2, q3 + q4, q1, q2, q3, q4))

        # Commit: nothing above changed any state.
        self._carry = carries
        self._history = rotated[:, :, -window:].copy()
        self._last_phasor = last
        self._filled = min(window, filled + n)
        self._pending = pending
        self._next_sample = frame.start_sample + n * repeat

        values = []
        for p in range(phases):
            urms = math.sqrt(sum_vv[p] / n)
            irms = math.sqrt(sum_ii[p] / n)
            p_w = sum_vi[p] / n
            s_va = urms * irms
            values.append(PhaseValues(urms, irms, p_w, q_mean[p], s_va, p_w / s_va if s_va > 0 else 0.0, freq[p]))
        return Measurement(frame.sequence, frame.start_sample, n * repeat, fs, tuple(values), energy[-1],
                           tuple(energy[:-1]), gap)

    def _buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bufs = self._work.get(n)
        if bufs is None:
            shape = (2, self.phases, self.window + n)
            bufs = (np.empty(shape, np.complex128), np.empty(shape, np.complex128),
                    np.empty((2, self.phases, n), np.complex128))
            if len(self._work) > 8:
                self._work.clear()
            self._work[n] = bufs
        return bufs
