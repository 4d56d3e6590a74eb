"""Measurement input of the legally relevant part: sample frames, a synthetic source, and
the paired remote sensor of WELMEC 7.3 §4.1.

Everything here is sans-io: no sockets, no clock reads. Time is the sample index
(``t = sample_index / sample_rate``); randomness (pairing keys and nonces) is injected.

Remote sensor protocol (version 1)
----------------------------------
All messages start with ``b"RS"``, a version byte (1) and a type byte; integers are
big-endian. Sizes are fixed or bounded, and a message is refused unless its length is
exactly what its header declares.

* ``PAIR_REQUEST`` (sensor → meter): sensor ID (8), sensor ECDH public key (65, SEC1
  uncompressed P-256), sensor nonce (16).
* ``PAIR_RESPONSE`` (meter → sensor): meter ID (8), meter public key (65), meter nonce (16),
  meter confirmation tag (32).
* ``PAIR_CONFIRM`` (sensor → meter): sensor ID (8), sensor confirmation tag (32).
* ``SAMPLES`` (sensor → meter): sensor ID (8), sequence (u64), start sample (u64), sample rate
  (u32), phases (u8: 1 or 3), sample count (u16, 1..MAX_SAMPLES_PER_FRAME), voltage LSB (f64,
  volts), current LSB (f64, amperes), then ``phases × count`` voltage samples and as many
  current samples (i32 each, phase-major), then an HMAC-SHA256 tag (32) over everything before.

Pairing is ephemeral ECDH on P-256: the link key is
``HKDF-SHA256(ECDH secret, salt = sensor nonce || meter nonce, info = label || sensor ID ||
meter ID || sensor key || meter key)``, and both sides prove they hold it with an HMAC over the
transcript (key confirmation). ECDH alone does not authenticate the peers: pairing is an act of
the verification officer (P8/U8), so the meter opens pairing only on an authorised command of
the protective interface (``RemoteSensorLink.open_pairing``), in a protected environment; the
paired sensor ID is a legally relevant parameter. Outside that window a pairing request is
refused, and a frame is accepted only if it names the paired sensor, carries a valid tag and
a sequence number above the last accepted one. Refusals are returned as events for the meter
to log; this module logs nothing itself.
"""
from __future__ import annotations

import enum
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "SampleFrame",
    "SyntheticSource",
    "SensorFrameError",
    "MessageType",
    "PairRequest",
    "PairResponse",
    "PairConfirm",
    "SamplesMessage",
    "decode_message",
    "encode_samples",
    "RefusalReason",
    "FrameAccepted",
    "FrameRefused",
    "SensorPaired",
    "Transmit",
    "PairingRecord",
    "RemoteSensorLink",
    "RemoteSensor",
    "MAX_SAMPLES_PER_FRAME",
    "MAX_MESSAGE_BYTES",
]

# ---------------------------------------------------------------------------------------------
# Sample frames
# ---------------------------------------------------------------------------------------------

ALLOWED_PHASES = (1, 3)


@dataclass(frozen=True, slots=True, eq=False)
class SampleFrame:
    """Consecutive samples of all phases: ``voltages`` and ``currents`` are (phases × n)
    float64 arrays in volts and amperes; sample ``k`` of the frame was taken at
    ``(start_sample + k) / sample_rate`` seconds. The arrays are made read-only views."""

    sequence: int
    sample_rate: int
    start_sample: int
    voltages: np.ndarray
    currents: np.ndarray

    def __post_init__(self) -> None:
        v = np.asarray(self.voltages, dtype=np.float64)
        i = np.asarray(self.currents, dtype=np.float64)
        if v.ndim != 2 or v.shape != i.shape:
            raise ValueError(f"voltages {v.shape} and currents {i.shape} must be equal (phases × n) arrays")
        if v.shape[0] not in ALLOWED_PHASES or v.shape[1] < 1:
            raise ValueError(f"a frame has 1 or 3 phases and at least one sample, not {v.shape}")
        if self.sample_rate <= 0 or self.start_sample < 0 or self.sequence < 0:
            raise ValueError("sample_rate must be positive; start_sample and sequence non-negative")
        v, i = v.view(), i.view()
        v.flags.writeable = False
        i.flags.writeable = False
        object.__setattr__(self, "voltages", v)
        object.__setattr__(self, "currents", i)

    @property
    def phases(self) -> int:
        return self.voltages.shape[0]

    @property
    def n_samples(self) -> int:
        return self.voltages.shape[1]

    @property
    def end_sample(self) -> int:
        """Index of the first sample after this frame."""
        return self.start_sample + self.voltages.shape[1]


# ---------------------------------------------------------------------------------------------
# Synthetic source
# ---------------------------------------------------------------------------------------------

PHASE_DISPLACEMENT_DEG = (0.0, -120.0, 120.0)  # L1, L2, L3 (positive sequence)
NOISE_BLOCK = 8192  # noise is drawn per block of sample indices, so frame size never changes it


def _per_phase(value: float | Sequence[float], phases: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * phases
    values = tuple(float(x) for x in value)
    if len(values) != phases:
        raise ValueError(f"{name} needs one value per phase ({phases}), got {len(values)}")
    return values


def _cos_integral(omega: float, theta: float, seconds: float) -> float:
    """∫₀ᵀ cos(Ωt + θ) dt, exact."""
    if omega == 0.0:
        return seconds * math.cos(theta)
    return (math.sin(omega * seconds + theta) - math.sin(theta)) / omega


class SyntheticSource:
    """A deterministic test signal, a pure function of the sample index.

    Phase ``p`` (displacement θₚ = 0°, −120°, +120°) carries
    ``v(t) = √2·U·[cos(ωt+θₚ) + Σₕ uₕ·cos(h(ωt+θₚ))]`` and
    ``i(t) = s·√2·I·[cos(ωt+θₚ−φ) + Σₕ iₕ·cos(h(ωt+θₚ)−φₕ)]`` plus optional Gaussian noise,
    where ``φ`` is the angle by which the current lags the voltage (positive = lagging,
    inductive; negative = leading, capacitive) and ``s`` is −1 for ``export=True`` (the whole
    current waveform reversed: energy flows to the grid), else +1.

    ``φ`` comes from ``angle_deg`` if given, else from ``power_factor`` and ``lagging``
    (φ = ±acos(pf)). ``harmonics`` maps order h ≥ 2 to ``(voltage_fraction, current_fraction,
    current_lag_deg)``, fractions of the fundamental RMS. Any of ``current_rms``,
    ``power_factor``, ``angle_deg`` may be one value or one per phase.
    """

    def __init__(
        self,
        phases: int = 1,
        sample_rate: int = 8000,
        frequency: float = 50.0,
        voltage_rms: float | Sequence[float] = 230.0,
        current_rms: float | Sequence[float] = 5.0,
        power_factor: float | Sequence[float] = 1.0,
        lagging: bool = True,
        angle_deg: float | Sequence[float] | None = None,
        harmonics: Mapping[int, tuple[float, float, float]] | None = None,
        voltage_noise_rms: float = 0.0,
        current_noise_rms: float = 0.0,
        export: bool = False,
        seed: int = 0,
    ) -> None:
        if phases not in ALLOWED_PHASES:
            raise ValueError("phases must be 1 or 3")
        if sample_rate <= 0 or frequency <= 0:
            raise ValueError("sample_rate and frequency must be positive")
        self.phases = phases
        self.sample_rate = int(sample_rate)
        self.frequency = float(frequency)
        self.voltage_rms = _per_phase(voltage_rms, phases, "voltage_rms")
        self.current_rms = _per_phase(current_rms, phases, "current_rms")
        if angle_deg is not None:
            angles = _per_phase(angle_deg, phases, "angle_deg")
        else:
            pfs = _per_phase(power_factor, phases, "power_factor")
            if any(not 0.0 <= pf <= 1.0 for pf in pfs):
                raise ValueError("power_factor must be within 0..1 (use lagging/export for the quadrant)")
            angles = tuple((1.0 if lagging else -1.0) * math.degrees(math.acos(pf)) for pf in pfs)
        self.angle_deg = angles
        self.harmonics = dict(sorted((harmonics or {}).items()))
        if any(h < 2 for h in self.harmonics):
            raise ValueError("harmonic orders start at 2")
        self.voltage_noise_rms = float(voltage_noise_rms)
        self.current_noise_rms = float(current_noise_rms)
        self.export = export
        self.seed = seed
        self._noise_cache: tuple[int, np.ndarray] | None = None

        # Components per phase as (order, voltage peak, voltage angle, current peak, current angle).
        sign = -1.0 if export else 1.0
        self._components: list[list[tuple[int, float, float, float, float]]] = []
        for p in range(phases):
            theta = math.radians(PHASE_DISPLACEMENT_DEG[p] if phases == 3 else 0.0)
            u, i = math.sqrt(2) * self.voltage_rms[p], sign * math.sqrt(2) * self.current_rms[p]
            comps = [(1, u, theta, i, theta - math.radians(angles[p]))]
            for h, (uf, cf, lag) in self.harmonics.items():
                comps.append((h, u * uf, h * theta, i * cf, h * theta - math.radians(lag)))
            self._components.append(comps)

    # -- samples --------------------------------------------------------------------------
    def samples(self, start_sample: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Voltages and currents (phases × n) for sample indices start_sample..start_sample+n-1."""
        k = np.arange(start_sample, start_sample + n, dtype=np.float64)
        # Fundamental angle from the fractional cycle count: keeps precision for large indices.
        cycles = np.mod(k * (self.frequency / self.sample_rate), 1.0)
        base = 2.0 * math.pi * cycles
        v = np.zeros((self.phases, n))
        i = np.zeros((self.phases, n))
        for p, comps in enumerate(self._components):
            for h, up, ua, ip, ia in comps:
                angle = base * h if h != 1 else base
                if up:
                    v[p] += up * np.cos(angle + ua)
                if ip:
                    i[p] += ip * np.cos(angle + ia)
        if self.voltage_noise_rms or self.current_noise_rms:
            noise = self._noise(start_sample, n)
            v += self.voltage_noise_rms * noise[0]
            i += self.current_noise_rms * noise[1]
        return v, i

    def _noise_block(self, block: int) -> np.ndarray:
        if self._noise_cache is None or self._noise_cache[0] != block:
            rng = np.random.default_rng([self.seed, block])
            self._noise_cache = (block, rng.standard_normal((2, self.phases, NOISE_BLOCK)))
        return self._noise_cache[1]

    def _noise(self, start: int, n: int) -> np.ndarray:
        out = np.empty((2, self.phases, n))
        pos = 0
        while pos < n:
            block, offset = divmod(start + pos, NOISE_BLOCK)
            take = min(NOISE_BLOCK - offset, n - pos)
            out[:, :, pos : pos + take] = self._noise_block(block)[:, :, offset : offset + take]
            pos += take
        return out

    def period_samples(self) -> int | None:
        """The samples after which the input repeats exactly (one cycle of the fundamental; the
        harmonics are whole multiples of it), or None when it never does (noise, or a cycle
        that is not a whole number of samples)."""
        if self.voltage_noise_rms or self.current_noise_rms:
            return None
        cycle = self.sample_rate / self.frequency
        return round(cycle) if cycle == round(cycle) else None

    def frame(self, sequence: int, start_sample: int, n: int) -> SampleFrame:
        v, i = self.samples(start_sample, n)
        return SampleFrame(sequence, self.sample_rate, start_sample, v, i)

    def frames(self, n_samples_per_frame: int, start_sample: int = 0, sequence: int = 0) -> Iterator[SampleFrame]:
        """Consecutive frames without end, numbered from ``sequence``."""
        if n_samples_per_frame < 1:
            raise ValueError("a frame has at least one sample")
        while True:
            yield self.frame(sequence, start_sample, n_samples_per_frame)
            sequence += 1
            start_sample += n_samples_per_frame

    # -- the truth ------------------------------------------------------------------------
    def analytic_energy(self, n_samples: int, start_sample: int = 0) -> tuple[tuple[float, float], ...]:
        """Per phase ``(active_Wh, reactive_varh)`` over samples start..start+n (time span n/fs).

        Active energy is the exact integral of v(t)·i(t), including the cross products of all
        harmonic orders (noise, zero-mean, is excluded). Reactive energy uses the definition
        of the metrology: the *fundamental* reactive power U₁·I₁·sin φ₁ (IEC 62053-24), which
        is constant, times the duration.
        """
        omega = 2.0 * math.pi * self.frequency
        t0 = start_sample / self.sample_rate
        seconds = n_samples / self.sample_rate
        out = []
        for comps in self._components:
            active_ws = 0.0
            for h, up, ua, _, _ in comps:
                for k, _, _, ip, ia in comps:
                    if not up or not ip:
                        continue
                    # cos a · cos b = ½[cos(a−b) + cos(a+b)], shifted to start at t0.
                    diff, summ = (h - k) * omega, (h + k) * omega
                    active_ws += 0.5 * up * ip * (
                        _cos_integral(diff, diff * t0 + ua - ia, seconds)
                        + _cos_integral(summ, summ * t0 + ua + ia, seconds)
                    )
            _, up, ua, ip, ia = comps[0]
            reactive_var = 0.5 * up * ip * math.sin(ua - ia)
            out.append((active_ws / 3600.0, reactive_var * seconds / 3600.0))
        return tuple(out)


# ---------------------------------------------------------------------------------------------
# Remote sensor: codec
# ---------------------------------------------------------------------------------------------


class SensorFrameError(Exception):
    """A remote-sensor message could not be decoded (the only error the decoder raises)."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


MAGIC = b"RS"
PROTOCOL_VERSION = 1
SENSOR_ID_LENGTH = 8
PUBLIC_KEY_LENGTH = 65  # SEC1 uncompressed P-256 point
NONCE_LENGTH = 16
TAG_LENGTH = 32  # HMAC-SHA256
MAX_SAMPLES_PER_FRAME = 8192  # > 1 s at 8 kHz
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 65536
_SAMPLES_HEADER = struct.Struct(">2sBB8sQQIBHdd")
_PAIR_REQUEST = struct.Struct(">2sBB8s65s16s")
_PAIR_RESPONSE = struct.Struct(">2sBB8s65s16s32s")
_PAIR_CONFIRM = struct.Struct(">2sBB8s32s")
MAX_MESSAGE_BYTES = _SAMPLES_HEADER.size + 2 * 3 * MAX_SAMPLES_PER_FRAME * 4 + TAG_LENGTH
_I32 = np.dtype(">i4")


class MessageType(enum.IntEnum):
    PAIR_REQUEST = 0x01
    PAIR_RESPONSE = 0x02
    PAIR_CONFIRM = 0x03
    SAMPLES = 0x10


def _check_id(sensor_id: bytes) -> bytes:
    if not isinstance(sensor_id, bytes) or len(sensor_id) != SENSOR_ID_LENGTH:
        raise ValueError(f"IDs are {SENSOR_ID_LENGTH} bytes")
    return sensor_id


def _public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:  # not a point on P-256
        raise SensorFrameError("public key is not a valid P-256 point") from exc


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


@dataclass(frozen=True, slots=True)
class PairRequest:
    sensor_id: bytes
    sensor_public_key: bytes
    sensor_nonce: bytes

    def to_bytes(self) -> bytes:
        return _PAIR_REQUEST.pack(MAGIC, PROTOCOL_VERSION, MessageType.PAIR_REQUEST, self.sensor_id,
                                  self.sensor_public_key, self.sensor_nonce)


@dataclass(frozen=True, slots=True)
class PairResponse:
    meter_id: bytes
    meter_public_key: bytes
    meter_nonce: bytes
    confirm_tag: bytes

    def to_bytes(self) -> bytes:
        return _PAIR_RESPONSE.pack(MAGIC, PROTOCOL_VERSION, MessageType.PAIR_RESPONSE, self.meter_id,
                                   self.meter_public_key, self.meter_nonce, self.confirm_tag)

    def unconfirmed_bytes(self) -> bytes:
        return self.to_bytes()[:-TAG_LENGTH]


@dataclass(frozen=True, slots=True)
class PairConfirm:
    sensor_id: bytes
    confirm_tag: bytes

    def to_bytes(self) -> bytes:
        return _PAIR_CONFIRM.pack(MAGIC, PROTOCOL_VERSION, MessageType.PAIR_CONFIRM, self.sensor_id, self.confirm_tag)


@dataclass(frozen=True, slots=True, eq=False)
class SamplesMessage:
    """A decoded (not yet authenticated) samples message. ``raw_*`` are the i32 samples."""

    sensor_id: bytes
    sequence: int
    start_sample: int
    sample_rate: int
    phases: int
    n_samples: int
    voltage_lsb: float
    current_lsb: float
    raw_voltages: np.ndarray
    raw_currents: np.ndarray
    tag: bytes
    authenticated_bytes: bytes = field(repr=False)

    def to_frame(self) -> SampleFrame:
        return SampleFrame(
            self.sequence,
            self.sample_rate,
            self.start_sample,
            self.raw_voltages.astype(np.float64) * self.voltage_lsb,
            self.raw_currents.astype(np.float64) * self.current_lsb,
        )


def encode_samples(sensor_id: bytes, key: bytes, sequence: int, frame: SampleFrame,
                   voltage_lsb: float, current_lsb: float) -> bytes:
    """Quantise a frame to i32 steps of the given LSBs and encode it with its tag."""
    _check_id(sensor_id)
    if frame.n_samples > MAX_SAMPLES_PER_FRAME or not MIN_SAMPLE_RATE <= frame.sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError("frame too long or sample rate out of range for the protocol")
    if not (voltage_lsb > 0 and current_lsb > 0 and math.isfinite(voltage_lsb) and math.isfinite(current_lsb)):
        raise ValueError("LSBs must be positive and finite")
    raw = []
    for values, lsb in ((frame.voltages, voltage_lsb), (frame.currents, current_lsb)):
        steps = np.rint(values / lsb)
        if not np.all(np.abs(steps) <= 2**31 - 1):
            raise ValueError("sample out of the i32 range for this LSB")
        raw.append(steps.astype(_I32).tobytes())
    header = _SAMPLES_HEADER.pack(MAGIC, PROTOCOL_VERSION, MessageType.SAMPLES, sensor_id, sequence,
                                  frame.start_sample, frame.sample_rate, frame.phases, frame.n_samples,
                                  voltage_lsb, current_lsb)
    body = header + raw[0] + raw[1]
    return body + _hmac(key, body)


def decode_message(data: bytes) -> PairRequest | PairResponse | PairConfirm | SamplesMessage:
    """Decode one remote-sensor message. Total: any input gives a message or SensorFrameError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SensorFrameError("message must be bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise SensorFrameError(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    if len(data) < 4:
        raise SensorFrameError("message shorter than its 4-byte header", len(data))
    if data[:2] != MAGIC:
        raise SensorFrameError("bad magic", 0)
    if data[2] != PROTOCOL_VERSION:
        raise SensorFrameError(f"unsupported protocol version {data[2]}", 2)
    kind = data[3]
    if kind == MessageType.SAMPLES:
        return _decode_samples(data)
    layout = {MessageType.PAIR_REQUEST: _PAIR_REQUEST, MessageType.PAIR_RESPONSE: _PAIR_RESPONSE,
              MessageType.PAIR_CONFIRM: _PAIR_CONFIRM}.get(kind)
    if layout is None:
        raise SensorFrameError(f"unknown message type {kind:#04x}", 3)
    if len(data) != layout.size:
        raise SensorFrameError(f"message type {kind:#04x} is {layout.size} bytes, got {len(data)}")
    fields = layout.unpack(data)[3:]
    if kind == MessageType.PAIR_REQUEST:
        _public_key(fields[1])
        return PairRequest(*fields)
    if kind == MessageType.PAIR_RESPONSE:
        _public_key(fields[1])
        return PairResponse(*fields)
    return PairConfirm(*fields)


def _decode_samples(data: bytes) -> SamplesMessage:
    if len(data) < _SAMPLES_HEADER.size + TAG_LENGTH:
        raise SensorFrameError("samples message shorter than header and tag", len(data))
    _, _, _, sensor_id, sequence, start, rate, phases, n, v_lsb, i_lsb = _SAMPLES_HEADER.unpack_from(data)
    if phases not in ALLOWED_PHASES:
        raise SensorFrameError(f"phase count {phases} is not 1 or 3", 32)
    if not 1 <= n <= MAX_SAMPLES_PER_FRAME:
        raise SensorFrameError(f"sample count {n} outside 1..{MAX_SAMPLES_PER_FRAME}", 33)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise SensorFrameError(f"sample rate {rate} outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}", 28)
    if start > 2**62 or sequence > 2**62:
        raise SensorFrameError("start sample or sequence number beyond 2**62", 12)
    for lsb, at in ((v_lsb, 35), (i_lsb, 43)):
        if not (math.isfinite(lsb) and 1e-12 <= lsb <= 1.0):
            raise SensorFrameError(f"LSB {lsb!r} outside 1e-12..1", at)
    count = phases * n
    expected = _SAMPLES_HEADER.size + 2 * count * 4 + TAG_LENGTH
    if len(data) != expected:
        raise SensorFrameError(f"samples message declares {expected} bytes, got {len(data)}")
    body_end = len(data) - TAG_LENGTH
    samples = np.frombuffer(data, dtype=_I32, count=2 * count, offset=_SAMPLES_HEADER.size)
    return SamplesMessage(
        sensor_id, sequence, start, rate, phases, n, v_lsb, i_lsb,
        samples[:count].reshape(phases, n), samples[count:].reshape(phases, n),
        data[body_end:], data[:body_end],
    )


# ---------------------------------------------------------------------------------------------
# Remote sensor: key agreement
# ---------------------------------------------------------------------------------------------

KDF_LABEL = b"smartmeter remote sensor link v1"


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def _hmac_ok(key: bytes, data: bytes, tag: bytes) -> bool:
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    try:
        mac.verify(tag)
    except InvalidSignature:
        return False
    return True


def _link_key(private: ec.EllipticCurvePrivateKey, request: PairRequest, meter_id: bytes,
              meter_public: bytes, meter_nonce: bytes, peer: ec.EllipticCurvePublicKey) -> bytes:
    secret = private.exchange(ec.ECDH(), peer)
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=request.sensor_nonce + meter_nonce,
        info=KDF_LABEL + request.sensor_id + meter_id + request.sensor_public_key + meter_public,
    ).derive(secret)


def _meter_confirm(key: bytes, request: PairRequest, response_unconfirmed: bytes) -> bytes:
    return _hmac(key, b"meter confirms" + request.to_bytes() + response_unconfirmed)


def _sensor_confirm(key: bytes, request: PairRequest, response: PairResponse) -> bytes:
    return _hmac(key, b"sensor confirms" + request.to_bytes() + response.to_bytes())


# ---------------------------------------------------------------------------------------------
# Remote sensor: the meter's side
# ---------------------------------------------------------------------------------------------


class RefusalReason(enum.Enum):
    MALFORMED = "malformed"  # not a decodable message
    NOT_PAIRED = "not-paired"  # samples before any pairing
    FOREIGN_SENSOR = "foreign-sensor"  # samples naming another sensor than the paired one
    BAD_TAG = "bad-tag"  # HMAC does not verify: forged or corrupted
    REPLAYED = "replayed"  # sequence number equal to the last accepted one
    OUT_OF_ORDER = "out-of-order"  # sequence number below the last accepted one
    PAIRING_NOT_OPEN = "pairing-not-open"  # pairing message without an authorised pairing window
    PAIRING_FAILED = "pairing-failed"  # confirmation from the wrong sensor or with a wrong tag
    UNEXPECTED_MESSAGE = "unexpected-message"  # a message only the meter sends


@dataclass(frozen=True, slots=True)
class FrameAccepted:
    """Authenticated samples of the paired sensor; ``missing_frames`` sequence numbers were skipped."""

    frame: SampleFrame
    sensor_id: bytes
    missing_frames: int


@dataclass(frozen=True, slots=True)
class FrameRefused:
    """A message the link refused; the meter logs it. ``sensor_id``/``sequence`` when readable."""

    reason: RefusalReason
    detail: str
    sensor_id: bytes | None = None
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes the meter must send back to the sensor."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SensorPaired:
    """A new pairing is in force (store ``record`` and log it: the sensor ID is a legal parameter)."""

    sensor_id: bytes
    replaced_sensor_id: bytes | None
    record: PairingRecord


@dataclass(frozen=True, slots=True)
class PairingRecord:
    """What the meter must keep across restarts: the paired sensor, the link key, and the last
    accepted sequence number (persist it with the registers so a restart cannot re-open old
    sequence numbers)."""

    sensor_id: bytes
    meter_id: bytes
    key: bytes
    last_sequence: int | None = None

    _LAYOUT = struct.Struct(">B8s8s32sQ")

    def to_bytes(self) -> bytes:
        has = 0 if self.last_sequence is None else 1
        return self._LAYOUT.pack(has, self.sensor_id, self.meter_id, self.key, self.last_sequence or 0)

    @classmethod
    def from_bytes(cls, data: bytes) -> PairingRecord:
        if len(data) != cls._LAYOUT.size:
            raise SensorFrameError(f"pairing record is {cls._LAYOUT.size} bytes, got {len(data)}")
        has, sensor_id, meter_id, key, last = cls._LAYOUT.unpack(data)
        if has not in (0, 1):
            raise SensorFrameError("pairing record flag is not 0 or 1", 0)
        return cls(sensor_id, meter_id, key, last if has else None)

    def __repr__(self) -> str:  # never print the key
        return f"PairingRecord(sensor_id={self.sensor_id.hex()}, meter_id={self.meter_id.hex()}, last_sequence={self.last_sequence})"


LinkEvent = FrameAccepted | FrameRefused | Transmit | SensorPaired


class RemoteSensorLink:
    """The meter's end of the remote-sensor link (sans-io): ``receive(bytes) -> [events]``.

    Never raises for received bytes. ``open_pairing`` must only be called on an authorised
    command (certification mode); until a new pairing is confirmed the old one stays in force.
    """

    def __init__(
        self,
        meter_id: bytes,
        record: PairingRecord | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        new_private_key: Callable[[], ec.EllipticCurvePrivateKey] = lambda: ec.generate_private_key(ec.SECP256R1()),
    ) -> None:
        self.meter_id = _check_id(meter_id)
        if record is not None and record.meter_id != meter_id:
            raise ValueError("pairing record belongs to another meter")
        self._record = record
        self._random_bytes = random_bytes
        self._new_private_key = new_private_key
        self._pairing_open = False
        self._pending: tuple[PairRequest, PairResponse, bytes] | None = None

    @property
    def record(self) -> PairingRecord | None:
        """The pairing in force (with the last accepted sequence number), or None."""
        return self._record

    @property
    def paired_sensor_id(self) -> bytes | None:
        return None if self._record is None else self._record.sensor_id

    @property
    def pairing_open(self) -> bool:
        return self._pairing_open

    def open_pairing(self) -> None:
        self._pairing_open = True
        self._pending = None

    def close_pairing(self) -> None:
        self._pairing_open = False
        self._pending = None

    def receive(self, data: bytes) -> list[LinkEvent]:
        try:
            message = decode_message(data)
        except SensorFrameError as exc:
            return [FrameRefused(RefusalReason.MALFORMED, str(exc))]
        if isinstance(message, SamplesMessage):
            return [self._samples(message)]
        if isinstance(message, PairRequest):
            return self._pair_request(message)
        if isinstance(message, PairConfirm):
            return self._pair_confirm(message)
        return [FrameRefused(RefusalReason.UNEXPECTED_MESSAGE, "pair response sent to the meter")]

    def _samples(self, msg: SamplesMessage) -> LinkEvent:
        record = self._record
        if record is None:
            return FrameRefused(RefusalReason.NOT_PAIRED, "no sensor is paired", msg.sensor_id, msg.sequence)
        if msg.sensor_id != record.sensor_id:
            return FrameRefused(RefusalReason.FOREIGN_SENSOR,
                                f"sensor {msg.sensor_id.hex()} is not the paired {record.sensor_id.hex()}",
                                msg.sensor_id, msg.sequence)
        if not _hmac_ok(record.key, msg.authenticated_bytes, msg.tag):
            return FrameRefused(RefusalReason.BAD_TAG, "HMAC tag does not verify", msg.sensor_id, msg.sequence)
        last = record.last_sequence
        if last is not None and msg.sequence == last:
            return FrameRefused(RefusalReason.REPLAYED, f"sequence {msg.sequence} already accepted",
                                msg.sensor_id, msg.sequence)
        if last is not None and msg.sequence < last:
            return FrameRefused(RefusalReason.OUT_OF_ORDER, f"sequence {msg.sequence} below last accepted {last}",
                                msg.sensor_id, msg.sequence)
        missing = 0 if last is None else msg.sequence - last - 1
        self._record = PairingRecord(record.sensor_id, record.meter_id, record.key, msg.sequence)
        return FrameAccepted(msg.to_frame(), msg.sensor_id, missing)

    def _pair_request(self, request: PairRequest) -> list[LinkEvent]:
        if not self._pairing_open:
            return [FrameRefused(RefusalReason.PAIRING_NOT_OPEN, "pairing request outside a pairing window",
                                 request.sensor_id)]
        private = self._new_private_key()
        meter_public = _public_bytes(private.public_key())
        nonce = self._random_bytes(NONCE_LENGTH)
        key = _link_key(private, request, self.meter_id, meter_public, nonce,
                        _public_key(request.sensor_public_key))
        unconfirmed = PairResponse(self.meter_id, meter_public, nonce, b"\0" * TAG_LENGTH).unconfirmed_bytes()
        response = PairResponse(self.meter_id, meter_public, nonce, _meter_confirm(key, request, unconfirmed))
        self._pending = (request, response, key)
        return [Transmit(response.to_bytes())]

    def _pair_confirm(self, confirm: PairConfirm) -> list[LinkEvent]:
        if not self._pairing_open or self._pending is None:
            return [FrameRefused(RefusalReason.PAIRING_NOT_OPEN, "pairing confirmation without a pending request",
                                 confirm.sensor_id)]
        request, response, key = self._pending
        if confirm.sensor_id != request.sensor_id or not _hmac_ok(
            key, b"sensor confirms" + request.to_bytes() + response.to_bytes(), confirm.confirm_tag
        ):
            self._pending = None
            return [FrameRefused(RefusalReason.PAIRING_FAILED, "pairing confirmation does not verify",
                                 confirm.sensor_id)]
        replaced = self.paired_sensor_id
        self._record = PairingRecord(request.sensor_id, self.meter_id, key, None)
        self._pairing_open = False
        self._pending = None
        return [SensorPaired(request.sensor_id, replaced, self._record)]


# ---------------------------------------------------------------------------------------------
# Remote sensor: the sensor's side (for tests, demos and the simulator)
# ---------------------------------------------------------------------------------------------


class RemoteSensor:
    """The sensor's end (sans-io): ``pair_request()``, then ``receive_pair_response(bytes)``
    gives the confirmation to send; ``encode(frame)`` gives a tagged samples message with the
    next sequence number."""

    def __init__(
        self,
        sensor_id: bytes,
        *,
        voltage_lsb: float = 1e-5,
        current_lsb: float = 1e-6,
        random_bytes: Callable[[int], bytes] = os.urandom,
        private_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.sensor_id = _check_id(sensor_id)
        self.voltage_lsb = voltage_lsb
        self.current_lsb = current_lsb
        self._random_bytes = random_bytes
        self._private = private_key or ec.generate_private_key(ec.SECP256R1())
        self._request: PairRequest | None = None
        self.key: bytes | None = None
        self.meter_id: bytes | None = None
        self.next_sequence = 0

    def pair_request(self) -> bytes:
        self._request = PairRequest(self.sensor_id, _public_bytes(self._private.public_key()),
                                    self._random_bytes(NONCE_LENGTH))
        return self._request.to_bytes()

    def receive_pair_response(self, data: bytes) -> bytes:
        """Verify the meter's response; return the confirmation. SensorFrameError if it fails."""
        response = decode_message(data)
        if not isinstance(response, PairResponse) or self._request is None:
            raise SensorFrameError("expected a pair response to a pending request")
        key = _link_key(self._private, self._request, response.meter_id, response.meter_public_key,
                        response.meter_nonce, _public_key(response.meter_public_key))
        if not _hmac_ok(key, b"meter confirms" + self._request.to_bytes() + response.unconfirmed_bytes(),
                        response.confirm_tag):
            raise SensorFrameError("meter confirmation does not verify")
        self.key, self.meter_id = key, response.meter_id
        return PairConfirm(self.sensor_id, _sensor_confirm(key, self._request, response)).to_bytes()

    def encode(self, frame: SampleFrame, sequence: int | None = None) -> bytes:
        if self.key is None:
            raise ValueError("the sensor is not paired")
        seq = self.next_sequence if sequence is None else sequence
        data = encode_samples(self.sensor_id, self.key, seq, frame, self.voltage_lsb, self.current_lsb)
        self.next_sequence = seq + 1
        return data
