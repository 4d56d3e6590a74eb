"""Sample frames, the synthetic source, and the paired remote sensor (WELMEC 7.3 §4.1)."""
from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from smartmeter.legal.metrology import ENERGY_UNITS_PER_WH, EnergyDelta, Metrology
from smartmeter.legal.sensor import (
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_FRAME,
    FrameAccepted,
    FrameRefused,
    PairConfirm,
    PairingRecord,
    PairRequest,
    PairResponse,
    RefusalReason,
    RemoteSensor,
    RemoteSensorLink,
    SampleFrame,
    SamplesMessage,
    SensorFrameError,
    SensorPaired,
    SyntheticSource,
    Transmit,
    decode_message,
    encode_samples,
)

FS = 8000
METER_ID = bytes.fromhex("4b464d0100000001")
SENSOR_ID = bytes.fromhex("5345000000000042")
OTHER_SENSOR_ID = bytes.fromhex("5345000000000099")


# -- sample frames and the synthetic source --------------------------------------------------


def test_sample_frame_checks_shape_and_is_read_only():
    v = np.zeros((3, 10))
    frame = SampleFrame(0, FS, 0, v, np.ones((3, 10)))
    assert frame.phases == 3 and frame.n_samples == 10 and frame.end_sample == 10
    with pytest.raises(ValueError):
        frame.voltages[0, 0] = 1.0
    v[0, 0] = 5.0  # the caller's array stays writeable
    for bad in (
        dict(voltages=np.zeros((2, 10)), currents=np.zeros((2, 10))),
        dict(voltages=np.zeros((3, 10)), currents=np.zeros((3, 9))),
        dict(voltages=np.zeros(10), currents=np.zeros(10)),
        dict(voltages=np.zeros((1, 0)), currents=np.zeros((1, 0))),
    ):
        with pytest.raises(ValueError):
            SampleFrame(0, FS, 0, **bad)
    with pytest.raises(ValueError):
        SampleFrame(0, 0, 0, np.zeros((1, 3)), np.zeros((1, 3)))


def test_source_is_a_function_of_the_sample_index():
    """Frame size never changes the samples, noise included; the same seed repeats them."""
    kwargs = dict(phases=3, current_rms=8.0, power_factor=0.7, harmonics={5: (0.03, 0.2, 10.0)},
                  voltage_noise_rms=1.0, current_noise_rms=0.1, seed=11)
    a, b = SyntheticSource(**kwargs), SyntheticSource(**kwargs)
    big_v, big_i = a.samples(0, 20000)
    pos, parts_v, parts_i = 0, [], []
    for size in (1, 799, 8192, 3, 11005):
        v, i = b.samples(pos, size)
        parts_v.append(v)
        parts_i.append(i)
        pos += size
    assert np.array_equal(np.concatenate(parts_v, axis=1), big_v)
    assert np.array_equal(np.concatenate(parts_i, axis=1), big_i)
    other = SyntheticSource(**{**kwargs, "seed": 12}).samples(0, 100)[0]
    assert not np.array_equal(other, big_v[:, :100])
    frames = SyntheticSource(**kwargs).frames(800)
    f0, f1 = next(frames), next(frames)
    assert (f0.sequence, f0.start_sample, f1.sequence, f1.start_sample) == (0, 0, 1, 800)
    assert np.array_equal(f1.voltages, big_v[:, 800:1600])


def test_source_waveform_matches_its_definition():
    source = SyntheticSource(phases=3, voltage_rms=230.0, current_rms=10.0, power_factor=0.5)
    v, i = source.samples(0, 160)
    t = np.arange(160) / FS
    w = 2 * np.pi * 50
    for p, theta in enumerate((0.0, -2 * np.pi / 3, 2 * np.pi / 3)):
        np.testing.assert_allclose(v[p], 230 * math.sqrt(2) * np.cos(w * t + theta), atol=1e-9)
        np.testing.assert_allclose(i[p], 10 * math.sqrt(2) * np.cos(w * t + theta - math.pi / 3), atol=1e-9)


@pytest.mark.parametrize("start", [0, 12345])
def test_analytic_energy_matches_fine_numerical_integration(start):
    """The closed form (all harmonic cross products, any start) against Simpson's rule at 1 MHz."""
    kwargs = dict(phases=3, frequency=49.7, current_rms=(10.0, 4.0, 7.0), power_factor=(0.9, 0.5, 0.2),
                  harmonics={3: (0.05, 0.4, 30.0), 5: (0.02, 0.3, -70.0), 7: (0.01, 0.2, 110.0)})
    coarse = SyntheticSource(sample_rate=FS, **kwargs)
    n = 1234  # 0.15425 s: not a whole number of cycles
    truth = coarse.analytic_energy(n, start_sample=start)
    fine_rate = 1_000_000
    fine = SyntheticSource(sample_rate=fine_rate, **kwargs)
    m = n * fine_rate // FS
    v, i = fine.samples(start * fine_rate // FS, m + 1)
    p = v * i
    simpson = (p[:, 0] + p[:, -1] + 4 * p[:, 1:-1:2].sum(axis=1) + 2 * p[:, 2:-1:2].sum(axis=1)) / (3 * fine_rate)
    for (active_wh, reactive_varh), ws, pf, irms in zip(truth, simpson, (0.9, 0.5, 0.2), (10.0, 4.0, 7.0)):
        assert active_wh == pytest.approx(ws / 3600, rel=1e-9)
        assert reactive_varh == pytest.approx(230 * irms * math.sin(math.acos(pf)) * n / FS / 3600, rel=1e-12)


def test_source_rejects_bad_parameters():
    for bad in (dict(phases=2), dict(power_factor=1.5), dict(harmonics={1: (0.1, 0.1, 0)}),
                dict(phases=3, current_rms=(1.0, 2.0))):
        with pytest.raises(ValueError):
            SyntheticSource(**bad)


# -- remote sensor: helpers ------------------------------------------------------------------


def public_bytes(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def fixed_random(seed: int):
    rnd = random.Random(seed)
    return lambda n: rnd.randbytes(n)


def fixed_key(seed: int):
    return ec.derive_private_key(seed, ec.SECP256R1())


def paired(sensor_id: bytes = SENSOR_ID, seed: int = 1) -> tuple[RemoteSensorLink, RemoteSensor, list]:
    link = RemoteSensorLink(METER_ID, random_bytes=fixed_random(seed), new_private_key=lambda: fixed_key(1000 + seed))
    sensor = RemoteSensor(sensor_id, random_bytes=fixed_random(seed + 1), private_key=fixed_key(2000 + seed))
    link.open_pairing()
    events = link.receive(sensor.pair_request())
    assert len(events) == 1 and isinstance(events[0], Transmit)
    confirm = sensor.receive_pair_response(events[0].data)
    events += link.receive(confirm)
    return link, sensor, events


def frames(n: int = 800, count: int = 5, **kwargs):
    source = SyntheticSource(phases=3, current_rms=10.0, power_factor=0.6, **kwargs)
    return [source.frame(k, k * n, n) for k in range(count)]


# -- remote sensor: pairing ------------------------------------------------------------------


def test_pairing_creates_the_same_key_on_both_sides():
    link, sensor, events = paired()
    done = events[-1]
    assert isinstance(done, SensorPaired)
    assert done.sensor_id == SENSOR_ID and done.replaced_sensor_id is None
    assert link.paired_sensor_id == SENSOR_ID and not link.pairing_open
    assert link.record.key == sensor.key and len(sensor.key) == 32
    assert sensor.meter_id == METER_ID
    assert sensor.key.hex() not in repr(link.record)
    # A fresh pairing with other randomness gives another key.
    link2, sensor2, _ = paired(seed=7)
    assert link2.record.key != link.record.key


def test_pairing_is_refused_outside_a_pairing_window():
    link = RemoteSensorLink(METER_ID)
    sensor = RemoteSensor(SENSOR_ID)
    (event,) = link.receive(sensor.pair_request())
    assert isinstance(event, FrameRefused) and event.reason is RefusalReason.PAIRING_NOT_OPEN
    assert event.sensor_id == SENSOR_ID
    (event,) = link.receive(PairConfirm(SENSOR_ID, b"\0" * 32).to_bytes())
    assert event.reason is RefusalReason.PAIRING_NOT_OPEN
    assert link.record is None


def test_wrong_confirmation_fails_pairing():
    link = RemoteSensorLink(METER_ID)
    sensor = RemoteSensor(SENSOR_ID)
    link.open_pairing()
    (response,) = link.receive(sensor.pair_request())
    confirm = sensor.receive_pair_response(response.data)
    forged = bytearray(confirm)
    forged[-1] ^= 1
    (event,) = link.receive(bytes(forged))
    assert event.reason is RefusalReason.PAIRING_FAILED
    assert link.record is None
    # The pending request is gone: even the right confirmation is now refused.
    (event,) = link.receive(confirm)
    assert event.reason is RefusalReason.PAIRING_NOT_OPEN


def test_confirmation_from_another_sensor_id_fails_pairing():
    link = RemoteSensorLink(METER_ID)
    sensor = RemoteSensor(SENSOR_ID)
    link.open_pairing()
    (response,) = link.receive(sensor.pair_request())
    confirm = decode_message(sensor.receive_pair_response(response.data))
    (event,) = link.receive(PairConfirm(OTHER_SENSOR_ID, confirm.confirm_tag).to_bytes())
    assert event.reason is RefusalReason.PAIRING_FAILED


def test_sensor_detects_a_substituted_meter_key():
    """A man in the middle who swaps the meter's public key cannot produce the confirmation."""
    link = RemoteSensorLink(METER_ID)
    sensor = RemoteSensor(SENSOR_ID)
    link.open_pairing()
    (response,) = link.receive(sensor.pair_request())
    original = decode_message(response.data)
    attacker = public_bytes(ec.generate_private_key(ec.SECP256R1()))
    swapped = PairResponse(original.meter_id, attacker, original.meter_nonce, original.confirm_tag)
    with pytest.raises(SensorFrameError):
        sensor.receive_pair_response(swapped.to_bytes())


def test_pair_response_sent_to_the_meter_is_unexpected():
    link = RemoteSensorLink(METER_ID)
    key = public_bytes(fixed_key(5))
    (event,) = link.receive(PairResponse(METER_ID, key, b"\0" * 16, b"\0" * 32).to_bytes())
    assert event.reason is RefusalReason.UNEXPECTED_MESSAGE


# -- remote sensor: samples ------------------------------------------------------------------


def test_paired_frames_are_accepted_and_equal_to_the_quantised_samples():
    link, sensor, _ = paired()
    for frame in frames():
        (event,) = link.receive(sensor.encode(frame))
        assert isinstance(event, FrameAccepted)
        assert event.missing_frames == 0 and event.sensor_id == SENSOR_ID
        got = event.frame
        assert (got.sequence, got.start_sample, got.sample_rate) == (frame.sequence, frame.start_sample, FS)
        np.testing.assert_allclose(got.voltages, frame.voltages, atol=0.5e-5 + 1e-12)
        np.testing.assert_allclose(got.currents, frame.currents, atol=0.5e-6 + 1e-12)
    assert link.record.last_sequence == 4


def test_unpaired_link_refuses_frames():
    sensor = RemoteSensor(SENSOR_ID)
    sensor.key = b"k" * 32
    link = RemoteSensorLink(METER_ID)
    (event,) = link.receive(sensor.encode(frames(count=1)[0]))
    assert event.reason is RefusalReason.NOT_PAIRED
    assert (event.sensor_id, event.sequence) == (SENSOR_ID, 0)


def test_replayed_and_out_of_order_frames_are_refused():
    link, sensor, _ = paired()
    wire = [sensor.encode(f) for f in frames(count=4)]
    for data in wire[:3]:
        assert isinstance(link.receive(data)[0], FrameAccepted)
    (event,) = link.receive(wire[2])
    assert event.reason is RefusalReason.REPLAYED and event.sequence == 2
    (event,) = link.receive(wire[0])
    assert event.reason is RefusalReason.OUT_OF_ORDER and event.sequence == 0
    assert link.record.last_sequence == 2
    assert isinstance(link.receive(wire[3])[0], FrameAccepted)


def test_skipped_sequence_numbers_are_reported():
    link, sensor, _ = paired()
    f = frames(count=6)
    link.receive(sensor.encode(f[0]))
    (event,) = link.receive(sensor.encode(f[5], sequence=5))
    assert isinstance(event, FrameAccepted) and event.missing_frames == 4


@pytest.mark.parametrize("where", ["header", "samples", "tag"])
def test_forged_frames_are_refused(where):
    link, sensor, _ = paired()
    data = bytearray(sensor.encode(frames(count=1)[0]))
    index = {"header": 13, "samples": 51 + 1000, "tag": len(data) - 5}[where]  # 13: inside the sequence
    data[index] ^= 0x20
    (event,) = link.receive(bytes(data))
    assert event.reason is RefusalReason.BAD_TAG
    assert link.record.last_sequence is None


def test_frame_with_a_tag_under_another_key_is_refused():
    link, sensor, _ = paired()
    forged = encode_samples(SENSOR_ID, b"\x01" * 32, 0, frames(count=1)[0], 1e-5, 1e-6)
    (event,) = link.receive(forged)
    assert event.reason is RefusalReason.BAD_TAG


def test_swapped_sensor_is_refused_with_its_own_reason():
    """A second sensor of the same type, paired elsewhere (or not at all), is refused as
    foreign; if it claims the paired sensor's ID its tags do not verify."""
    link, _, _ = paired(SENSOR_ID, seed=1)
    _, other_sensor, _ = paired(OTHER_SENSOR_ID, seed=2)  # paired to another meter instance
    (event,) = link.receive(other_sensor.encode(frames(count=1)[0]))
    assert event.reason is RefusalReason.FOREIGN_SENSOR
    assert event.sensor_id == OTHER_SENSOR_ID
    _, impostor, _ = paired(SENSOR_ID, seed=3)  # same ID, another pairing: another key
    (event,) = link.receive(impostor.encode(frames(count=1)[0]))
    assert event.reason is RefusalReason.BAD_TAG


def test_re_pairing_replaces_the_sensor_only_when_confirmed():
    link, old, _ = paired(SENSOR_ID, seed=1)
    f = frames(count=4)
    assert isinstance(link.receive(old.encode(f[0]))[0], FrameAccepted)
    link.open_pairing()
    new = RemoteSensor(OTHER_SENSOR_ID)
    (response,) = link.receive(new.pair_request())
    assert isinstance(link.receive(old.encode(f[1]))[0], FrameAccepted)  # old pairing still in force
    (done,) = link.receive(new.receive_pair_response(response.data))
    assert isinstance(done, SensorPaired)
    assert done.sensor_id == OTHER_SENSOR_ID and done.replaced_sensor_id == SENSOR_ID
    assert link.receive(old.encode(f[2]))[0].reason is RefusalReason.FOREIGN_SENSOR
    assert isinstance(link.receive(new.encode(f[2]))[0], FrameAccepted)


def test_pairing_record_survives_a_restart():
    link, sensor, _ = paired()
    wire = [sensor.encode(f) for f in frames(count=3)]
    link.receive(wire[0])
    link.receive(wire[1])
    saved = link.record.to_bytes()
    restarted = RemoteSensorLink(METER_ID, PairingRecord.from_bytes(saved))
    assert restarted.record == link.record
    assert restarted.receive(wire[1])[0].reason is RefusalReason.REPLAYED
    assert isinstance(restarted.receive(wire[2])[0], FrameAccepted)
    with pytest.raises(ValueError):
        RemoteSensorLink(bytes(8), PairingRecord.from_bytes(saved))  # another meter's record
    for bad in (saved[:-1], b"\x02" + saved[1:]):
        with pytest.raises(SensorFrameError):
            PairingRecord.from_bytes(bad)


def test_end_to_end_remote_sensor_into_metrology():
    """Energy measured through the link equals direct measurement within the quantisation."""
    link, sensor, _ = paired()
    source = SyntheticSource(phases=3, current_rms=(10.0, 20.0, 5.0), power_factor=0.8, lagging=False,
                             harmonics={3: (0.04, 0.3, 20.0)})
    direct, remote = Metrology(3, FS), Metrology(3, FS)
    total_direct = total_remote = EnergyDelta()
    for frame in (source.frame(k, k * 800, 800) for k in range(100)):
        (event,) = link.receive(sensor.encode(frame))
        total_remote = total_remote + remote.process(event.frame).energy_delta
        total_direct = total_direct + direct.process(frame).energy_delta
    assert total_remote.a_plus == pytest.approx(total_direct.a_plus, rel=1e-6)
    assert total_remote.r_q4 == pytest.approx(total_direct.r_q4, rel=1e-6)
    truth = source.analytic_energy(100 * 800)
    assert total_remote.a_plus / ENERGY_UNITS_PER_WH == pytest.approx(sum(a for a, _ in truth), rel=1e-3)


# -- the codec -------------------------------------------------------------------------------


def good_samples() -> bytes:
    return encode_samples(SENSOR_ID, b"k" * 32, 1, frames(n=10, count=1)[0], 1e-5, 1e-6)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: d[:3],
        lambda d: b"XS" + d[2:],  # magic
        lambda d: d[:2] + b"\x02" + d[3:],  # version
        lambda d: d[:3] + b"\x7f" + d[4:],  # type
        lambda d: d[:-1],  # one byte short
        lambda d: d + b"\0",  # one byte long
        lambda d: d[:32] + b"\x02" + d[33:],  # two phases
        lambda d: d[:33] + b"\0\0" + d[35:],  # zero samples
        lambda d: d[:33] + struct.pack(">H", MAX_SAMPLES_PER_FRAME + 1) + d[35:],
        lambda d: d[:28] + struct.pack(">I", 999) + d[32:],  # sample rate
        lambda d: d[:35] + struct.pack(">d", math.nan) + d[43:],  # voltage LSB
        lambda d: d[:43] + struct.pack(">d", -1e-6) + d[51:],  # current LSB
        lambda d: d[:12] + struct.pack(">Q", 2**63) + d[20:],  # sequence
        lambda d: b"\0" * (MAX_MESSAGE_BYTES + 1),
    ],
)
def test_malformed_messages_raise_sensor_frame_error(mutate):
    data = mutate(good_samples())
    with pytest.raises(SensorFrameError):
        decode_message(data)
    (event,) = RemoteSensorLink(METER_ID).receive(data)
    assert event.reason is RefusalReason.MALFORMED


def test_invalid_public_key_is_a_frame_error():
    request = PairRequest(SENSOR_ID, b"\x04" + b"\x01" * 64, b"\0" * 16).to_bytes()
    with pytest.raises(SensorFrameError):
        decode_message(request)
    with pytest.raises(SensorFrameError):
        decode_message(42)  # not bytes


def test_pair_message_round_trips():
    sensor = RemoteSensor(SENSOR_ID)
    request = decode_message(sensor.pair_request())
    assert isinstance(request, PairRequest) and request.sensor_id == SENSOR_ID
    assert decode_message(request.to_bytes()) == request
    confirm = PairConfirm(SENSOR_ID, bytes(range(32)))
    assert decode_message(confirm.to_bytes()) == confirm


@settings(max_examples=100, deadline=None)
@given(
    phases=st.sampled_from([1, 3]),
    n=st.integers(1, 300),
    sequence=st.integers(0, 2**62),
    start=st.integers(0, 2**62),
    rate=st.integers(1000, 65536),
    seed=st.integers(0, 2**32 - 1),
)
def test_samples_round_trip(phases, n, sequence, start, rate, seed):
    rng = np.random.default_rng(seed)
    raw_v = rng.integers(-(2**31) + 1, 2**31 - 1, size=(phases, n))
    raw_i = rng.integers(-(2**31) + 1, 2**31 - 1, size=(phases, n))
    frame = SampleFrame(0, rate, start, raw_v * 1e-5, raw_i * 1e-6)
    data = encode_samples(SENSOR_ID, b"k" * 32, sequence, frame, 1e-5, 1e-6)
    msg = decode_message(data)
    assert isinstance(msg, SamplesMessage)
    assert (msg.sequence, msg.start_sample, msg.sample_rate, msg.phases, msg.n_samples) == (
        sequence, start, rate, phases, n)
    assert np.array_equal(msg.raw_voltages, raw_v) and np.array_equal(msg.raw_currents, raw_i)
    assert msg.authenticated_bytes + msg.tag == data


def test_encoder_refuses_what_the_decoder_would():
    frame = frames(n=10, count=1)[0]
    with pytest.raises(ValueError):
        encode_samples(b"short", b"k" * 32, 0, frame, 1e-5, 1e-6)
    with pytest.raises(ValueError):
        encode_samples(SENSOR_ID, b"k" * 32, 0, frame, 1e-9, 1e-6)  # 325 V / 1 nV does not fit in i32
    with pytest.raises(ValueError):
        encode_samples(SENSOR_ID, b"k" * 32, 0, frame, 0.0, 1e-6)
