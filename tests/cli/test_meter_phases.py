"""`smartmeter meter run --phases 3`: a three-phase meter with the L2/L3 instantaneous values, and a
data directory that keeps what it was built as."""
from __future__ import annotations

import subprocess
import sys

from meterproc import start_meter


def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=60)


def test_a_three_phase_meter_and_its_data_directory(tmp_path):
    data = tmp_path / "meter-data"
    meter = start_meter(data, "--phases", "3")
    try:
        l2 = smartmeter("client", "--port", str(meter.wrapper_port), "get", "1-0:52.7.0.255")
        assert l2.returncode == 0, l2.stderr
        name, value, unit = l2.stdout.split()
        assert name == "1-0:52.7.0.255" and unit == "V" and 200 < float(value) < 260
    finally:
        meter.stop()
    again = smartmeter("meter", "run", "--data-dir", str(data), "--phases", "1", "--wrapper-port", "0", "--hdlc-port", "0")
    assert again.returncode == 2
    assert "holds a 3-phase meter" in again.stderr and "--phases 3" in again.stderr
