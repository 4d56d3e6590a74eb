"""U1/U8/U9 the software environment (fallback if the meter is assessed as type U): the legally
relevant part is an OS process of its own that alone holds its store and its measurement input
(U1 OS aspects, U9 no influence of other software); measurement values are authentic: only the
paired sensor's authenticated frames are measured, an imitation of it is refused (U8)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.sensor import RemoteSensor, SyntheticSource, encode_samples
from authority_support import certification_token

METER_ID = "4B464D0005F5E101"
TITLE = "00" * 8


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except OSError:
            pass
    return out


@pytest.mark.welmec("U9", "S1")
def test_the_legal_part_is_an_os_process_of_its_own_that_alone_holds_its_store(meter):
    """The running meter's legal part is a separate OS process (own interpreter and memory); only it has the legal store open, the communication process does not."""
    pid = meter.process.pid
    # the legal process: a fresh interpreter, marked "smartmeter-legal" on its command line
    spawned = [c for c in _children(pid) if b"smartmeter-legal" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(spawned) == 1
    legal_pid = spawned[0]
    store = str((meter.data_dir / "legal.sqlite3").resolve())
    assert store in _open_files(legal_pid)
    assert not any(f.startswith(store) for f in _open_files(pid))


@pytest.fixture
def part(tmp_path):
    p = legal.LegalInterface(tmp_path, sensor="remote", meter_id=METER_ID, sensor_port=0)
    p.start()
    yield p
    p.close()


@pytest.mark.welmec("U8")
def test_an_imitation_of_the_paired_sensor_registers_nothing(part):
    """A device sending under the paired sensor's ID without its pairing key is refused and registers nothing; the genuine sensor's frames are measured."""
    host, port = part.execute(legal.ReadSensor())[2].split(":")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(3)
    udp.connect((host, int(port)))
    try:
        part.execute(legal.SetCertificationMode(True, int(time.time()), TITLE, certification_token(part, TITLE)))
        part.execute(legal.OpenSensorPairing(0, TITLE))
        genuine = RemoteSensor(b"SENSOR01")
        udp.send(genuine.pair_request())
        udp.send(genuine.receive_pair_response(udp.recv(4096)))
        deadline = time.monotonic() + 3
        while part.execute(legal.ReadSensor())[1] != b"SENSOR01".hex() and time.monotonic() < deadline:
            time.sleep(0.02)
        source = SyntheticSource(1, 8000, current_rms=40.0)
        for seq in range(10):  # the imitation: right ID, right format, its own key
            udp.send(encode_samples(b"SENSOR01", os.urandom(32), seq, source.frame(seq, seq * 800, 800),
                                    genuine.voltage_lsb, genuine.current_lsb))
            time.sleep(0.002)
        time.sleep(0.4)
        assert part.execute(legal.ReadEnergyRegisters()) == legal.EnergySnapshot(0, 0, 0, 0)
        for seq in range(10):
            udp.send(genuine.encode(source.frame(seq, seq * 800, 800)))
            time.sleep(0.002)
        deadline = time.monotonic() + 3
        while part.execute(legal.ReadEnergyRegisters()).a_plus == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert part.execute(legal.ReadEnergyRegisters()).a_plus > 0
    finally:
        udp.close()
