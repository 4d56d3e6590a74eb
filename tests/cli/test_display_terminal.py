"""`smartmeter display`: the running meter's LCD in a terminal, and its keys pressing the meter's
buttons. What the terminal shows is compared with what the meter's display shows (its control
channel), and the keys with the menu rules (a short [A] press from scrolling opens the standard
data list; q ends)."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from meterproc import start_meter


def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=60)


def screen_of(meter) -> dict:
    from smartmeter.meter.control import request

    return request(meter.data_dir, {"display": True})["display"]


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    m = start_meter(tmp_path_factory.mktemp("display") / "m", "--http-port", "0")
    yield m
    m.stop()


def test_once_prints_the_item_the_meter_shows(meter):
    """The frame printed holds the item code, the value and the unit the meter's display shows
    (read just before and just after: the scroll list may advance in between)."""
    before = screen_of(meter)
    result = smartmeter("display", "--once", "--data-dir", str(meter.data_dir))
    after = screen_of(meter)
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    assert frame.startswith("+") and frame.rstrip().endswith("+")
    assert any(s["code"] in frame and s["value"] in frame and s["unit"] in frame for s in (before, after)), frame
    assert "T1" in frame or "T2" in frame  # the local tariffication scheme shows the tariff


def test_keys_press_the_buttons_and_q_ends(meter):
    """In a terminal: 'a' is a short press of [A] (from scrolling: the standard data list opens),
    'q' ends the display and gives the terminal back (exit 0)."""
    assert screen_of(meter)["mode"] == "scroll"
    pid, fd = pty.fork()
    if pid == 0:  # the child: smartmeter display on the pty
        os.execv(sys.executable, [sys.executable, "-m", "smartmeter", "display", "--data-dir", str(meter.data_dir)])
    output = b""

    def read_for(seconds: float) -> None:
        nonlocal output
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    return

    try:
        read_for(3.0)
        assert b"scroll" in output, output
        os.write(fd, b"a")
        read_for(2.0)
        assert screen_of(meter)["mode"] == "standard"
        assert b"standard 1/" in output, output
        os.write(fd, b"q")
        read_for(2.0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert json.dumps(screen_of(meter))  # the meter is still there, answering


def test_without_a_meter_it_says_so_in_one_line(tmp_path):
    result = smartmeter("display", "--once", "--data-dir", str(tmp_path / "none"))
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and "no meter is running" in result.stderr
