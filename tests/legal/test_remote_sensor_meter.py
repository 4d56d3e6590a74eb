"""WELMEC 7.3 §4.1 inside the meter: a paired remote sensor over UDP feeds metrology; pairing
only in certification mode; the paired sensor's ID is a legally relevant parameter; unpaired,
replayed, forged and swapped-sensor frames are refused and logged."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.sensor import RemoteSensor, SyntheticSource, encode_samples
from authority_support import certification_token

METER_ID = "4B464D0005F5E101"
NOBODY = "00" * 8


@pytest.fixture
def part(tmp_path):
    p = legal.LegalInterface(tmp_path, sensor="remote", meter_id=METER_ID, sensor_port=0)
    p.start()
    yield p
    p.close()


@pytest.fixture
def udp(part):
    host, port = part.execute(legal.ReadSensor())[2].split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((host, int(port)))
    yield s
    s.close()


def pair(part, udp, sensor_id: bytes) -> RemoteSensor:
    sensor = RemoteSensor(sensor_id)
    udp.send(sensor.pair_request())
    udp.send(sensor.receive_pair_response(udp.recv(4096)))
    deadline = time.monotonic() + 3
    while part.execute(legal.ReadSensor())[1] != sensor_id.hex() and time.monotonic() < deadline:
        time.sleep(0.02)
    return sensor


def send_frames(udp, sensor: RemoteSensor, source: SyntheticSource, count: int, start: int = 0) -> None:
    for frame in source.frames(800, start_sample=start, sequence=start // 800):
        if frame.sequence >= start // 800 + count:
            break
        udp.send(sensor.encode(frame))
        time.sleep(0.002)  # a datagram socket on loopback still drops a burst


def wait_energy(part, minimum: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        energy = part.execute(legal.ReadEnergyRegisters())
        if energy.a_plus >= minimum:
            return energy
        time.sleep(0.05)
    return part.execute(legal.ReadEnergyRegisters())


def events(part) -> list[int]:
    return [r.event_id for r in part.execute(legal.ReadMetrologicalLog())]


def test_pairing_only_in_certification_mode_and_the_id_is_a_legal_parameter(part, udp):
    with pytest.raises(legal.CommandRefused, match="certification mode"):
        part.execute(legal.OpenSensorPairing(0, NOBODY))
    stranger = RemoteSensor(b"STRANGER")
    udp.send(stranger.pair_request())  # pairing is closed: no answer, nothing paired
    time.sleep(0.3)
    assert part.execute(legal.ReadSensor())[1] == ""
    part.execute(legal.SetCertificationMode(True, int(time.time()), NOBODY, certification_token(part, NOBODY)))
    part.execute(legal.OpenSensorPairing(0, NOBODY))
    pair(part, udp, b"SENSOR01")
    assert dict(part.execute(legal.ReadParameters()))["remote_sensor_id"] == b"SENSOR01".hex()
    log = part.execute(legal.ReadCertificationLog())
    assert any(json.loads(r.fields_json).get("parameter") == "remote_sensor_id" for r in log)
    assert 205 in events(part)  # sensor paired


def test_paired_frames_are_measured_and_hostile_ones_refused(part, udp):
    part.execute(legal.SetCertificationMode(True, int(time.time()), NOBODY, certification_token(part, NOBODY)))
    part.execute(legal.OpenSensorPairing(0, NOBODY))
    sensor = pair(part, udp, b"SENSOR01")
    source = SyntheticSource(1, 8000, current_rms=20.0)  # 4.6 kW
    send_frames(udp, sensor, source, 50)  # 5 s of signal
    expected_wh = source.analytic_energy(50 * 800)[0][0]
    energy = wait_energy(part, int(expected_wh) - 1)
    assert abs(energy.a_plus - expected_wh) <= 1  # whole Wh, floored
    # a replayed frame, a forged one and a frame from an unpaired sensor change nothing
    replayed = sensor.encode(source.frame(10, 8000, 800), sequence=10)
    forged = bytearray(sensor.encode(source.frame(60, 48000, 800)))
    forged[-40] ^= 0x01
    intruder = encode_samples(b"INTRUDER", os.urandom(32), 61, source.frame(61, 48800, 800), sensor.voltage_lsb, sensor.current_lsb)
    for datagram in (replayed, bytes(forged), intruder):
        udp.send(datagram)
    time.sleep(0.5)
    assert part.execute(legal.ReadEnergyRegisters()) == energy
    assert events(part).count(204) >= 2  # sensor frames refused, logged (rate-limited per reason)


def test_a_swapped_sensor_is_refused_and_logged(part, udp):
    part.execute(legal.SetCertificationMode(True, int(time.time()), NOBODY, certification_token(part, NOBODY)))
    part.execute(legal.OpenSensorPairing(0, NOBODY))
    pair(part, udp, b"SENSOR01")
    source = SyntheticSource(1, 8000, current_rms=5.0)
    before = part.execute(legal.ReadEnergyRegisters())
    # another device, never paired, put in the sensor's place: its own ID, a key of its own
    udp.send(encode_samples(b"SENSOR02", os.urandom(32), 0, source.frame(0, 0, 800), 0.01, 0.001))
    time.sleep(0.4)
    assert part.execute(legal.ReadEnergyRegisters()) == before
    refused = [json.loads(r.fields_json) for r in part.execute(legal.ReadMetrologicalLog()) if r.event_id == 204]
    assert refused and refused[-1]["sensor_id"] in (b"SENSOR02".hex(), {"hex": b"SENSOR02".hex()}, "SENSOR02")
