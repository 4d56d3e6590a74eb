"""Seeded fuzzing of the metering unit's decoders and its remote input.

* ``_Snapshot.from_bytes`` (the persisted metering state) is total: 100,000 mutated snapshots
  and random strings give a snapshot or MeteringError, nothing else.
* ``MeteringUnit.receive_sensor_message`` never raises for received bytes, and no altered
  message is measured: 100,000 mutations of valid, tagged samples messages (the link's own
  decoder is fuzzed at 100k in test_fuzz_sensor.py) reach metrology only when unaltered.
"""
from __future__ import annotations

import random

from smartmeter.legal.metering import MeteringError, MeteringUnit, _Snapshot
from smartmeter.legal.sensor import RemoteSensor, RemoteSensorLink, SyntheticSource

ITERATIONS = 100_000
METER_ID = b"METER001"
SENSOR_ID = b"SENSOR01"


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        choice = rnd.random()
        if choice < 0.35 and out:
            out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
        elif choice < 0.55 and out:
            out[rnd.randrange(len(out))] = rnd.randrange(256)
        elif choice < 0.7:
            del out[rnd.randrange(len(out) + 1):]
        elif choice < 0.85:
            at = rnd.randrange(len(out) + 1)
            out[at:at] = rnd.randbytes(rnd.randint(1, 16))
        elif out:
            at = rnd.randrange(len(out))
            del out[at:at + rnd.randint(1, 16)]
    return bytes(out)


def test_fuzz_snapshot_decoding_is_total():
    rnd = random.Random(0x4D545255)
    corpus = []
    for phases in (1, 3):
        unit = MeteringUnit(phases)
        corpus.append(unit.snapshot())
        unit.set_load(1234.5, -321.0)
        unit.measure_for(0.37)
        corpus.append(unit.snapshot())
    remote = MeteringUnit(3, remote=RemoteSensorLink(METER_ID))
    corpus.append(remote.snapshot())
    decoded = 0
    for i in range(ITERATIONS):
        data = rnd.randbytes(rnd.randint(0, 200)) if i % 10 == 0 else _mutate(rnd, rnd.choice(corpus))
        try:
            snap = _Snapshot.from_bytes(data)
        except MeteringError:
            continue
        decoded += 1
        assert _Snapshot.from_bytes(snap.to_bytes()) == snap
    assert decoded > 0  # some mutations (carries, position) stay valid


def test_fuzz_remote_input_never_raises_and_measures_only_unaltered_frames():
    rnd = random.Random(0x52454D54)
    measured = []
    unit = MeteringUnit(3, on_measurement=measured.append, remote=RemoteSensorLink(METER_ID, random_bytes=rnd.randbytes),
                        refusal_events_per_minute=1)
    sensor = RemoteSensor(SENSOR_ID, random_bytes=rnd.randbytes)
    unit.open_pairing()
    (response,) = unit.receive_sensor_message(sensor.pair_request())
    unit.receive_sensor_message(sensor.receive_pair_response(response))
    source = SyntheticSource(3, 8000, current_rms=3.0)
    # Sequence and start sample far ahead, so a mutation that happened to leave a message
    # valid would be measured and caught by the check below.
    valid = [sensor.encode(source.frame(0, 10**6 + 64 * k, 64), sequence=10**6 + k) for k in range(20)]
    for _ in range(ITERATIONS):
        original = rnd.choice(valid)
        data = _mutate(rnd, original)
        while data == original:
            data = _mutate(rnd, original)
        unit.receive_sensor_message(data)  # must not raise
        assert not measured, "an altered message was measured"
    assert unit.position == 0
    assert sum(unit.refusal_counts().values()) == ITERATIONS
