"""Push end to end, configured only as a user does it: a real `smartmeter meter run --speed 60`
and a real `smartmeter hes listen`, the meter's pushes set up with `smartmeter client push-setup`,
`push-schedule` and `push` (the demo's management credentials), the meter read with
`smartmeter client get` and the listener's database with `smartmeter hes show/meters`.

- Interval 1 every 15 minutes over TCP: the listener stores each quarter hour's push once, and
  its +A is what `client get` reads at that instant (the load is set, so +A between a reading
  and the instant grows by the load times the meter time between them).
- The installation push registers the meter at the head-end.
- Destination down (listener stopped, a closed port, 2 retries): metering goes on at the rate of
  the load, the DLMS port goes on answering, and the sender gives up after 1 + 2 attempts.

An hour of meter time is a minute here: the meter starts a few minutes before a quarter hour and
the test follows four quarter-hour pushes, the quarters of one hour.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from meterproc import free_port, start_meter

SPEED = 60
START = "2026-03-10T12:07:00"  # meter local time: configured some 5 minutes later, before 12:15
LOAD_W = 2000
QUARTER = 900  # s
PUSHES = 4  # the quarter hours of one hour
A_PLUS = "1-0:1.8.0.255"
SERIAL = "1KFM0100000001"  # `meter run`'s default --serial-number
# the meter registers energy once a second of real time (`Meter.run_registration`): +A as read
# stands for a moment up to that second (plus the loop's delays) before the clock read with it
REGISTRATION_LAG = 1.5 * SPEED  # s of meter time
PROMPT_S = 15.0  # s of real time a `client get` may take: only a meter that stopped answering takes longer
# (a process start alone takes seconds on a loaded machine)


def smartmeter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def as_management(meter, *args: str) -> str:
    return ok(smartmeter("client", "--port", str(meter.wrapper_port), "--credentials",
                         str(meter.data_dir / "credentials" / "management.json"), *args))


def get(meter, obis: str):
    started = time.monotonic()
    value = json.loads(ok(smartmeter("client", "--port", str(meter.wrapper_port), "--json", "get", obis)))["value"]
    took = time.monotonic() - started
    assert took < PROMPT_S, f"`client get {obis}` took {took:.1f} s"
    return value


def meter_time(meter) -> float:
    return dt.datetime.fromisoformat(get(meter, "0-0:1.0.0.255")).timestamp()


@dataclass(frozen=True)
class Reading:
    """+A as `client get` read it, between two readings of the meter clock: it is what the meter
    had registered at a moment from REGISTRATION_LAG before the first to the second."""

    not_before: float  # meter time (UTC s) read just before
    wh: int
    not_after: float  # meter time read just after

    @classmethod
    def take(cls, meter) -> "Reading":
        return cls(meter_time(meter), get(meter, A_PLUS), meter_time(meter))


def energy_wh(seconds: float) -> float:
    return LOAD_W * seconds / 3600


def assert_grew_at_the_load(first: Reading, second: Reading) -> None:
    """+A from `first` to `second` is the load times the meter time between the readings (whole Wh)."""
    low = energy_wh(second.not_before - REGISTRATION_LAG - first.not_after)
    high = energy_wh(second.not_after - first.not_before + REGISTRATION_LAG)
    assert low - 1 <= second.wh - first.wh <= high + 1, (first, second)


def stored(db, obis: str) -> list[dict]:
    result = smartmeter("hes", "show", "--db", str(db), "--obis", obis, "--json")
    if result.returncode:  # the listener has not created the database yet
        return []
    return [json.loads(line) for line in result.stdout.splitlines()]


def utc_seconds(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_for_line(meter, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in list(meter.output) if re.search(pattern, line)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no meter line matching {pattern!r}:\n" + "".join(meter.output[-20:]))


@pytest.fixture
def meter(tmp_path):
    m = start_meter(tmp_path / "meter", "--speed", str(SPEED), "--start-time", START)
    yield m
    m.stop()


@pytest.fixture
def listener(tmp_path, meter):
    udp, tcp = free_port(), free_port()
    db = tmp_path / "pushes.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "smartmeter", "hes", "listen", "--keys", str(meter.data_dir / "credentials"),
         "--db", str(db), "--udp", str(udp), "--tcp", str(tcp)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    first = process.stdout.readline()
    assert f"TCP 127.0.0.1:{tcp}" in first, first
    yield process, tcp, db
    if process.poll() is None:
        process.kill()
        process.wait()


def test_pushes_configured_with_the_cli_arrive_register_the_meter_and_a_destination_down_harms_nothing(
        meter, listener):
    process, tcp, db = listener
    ok(smartmeter("sim", "load", "--power", str(LOAD_W), "--data-dir", str(meter.data_dir)))
    shown = as_management(meter, "push-setup", "interval1", "--to", f"tcp:127.0.0.1:{tcp}")
    assert f"destination: tcp:127.0.0.1:{tcp}" in shown
    before_schedule = meter_time(meter)
    shown = as_management(meter, "push-schedule", "interval1", "--every", "15m")
    configured = meter_time(meter)
    assert [line.split() for line in shown.splitlines()[1:]] == [
        [f"*:{minute}:00", "*-*-*"] for minute in ("00", "15", "30", "45")]

    # the quarter hours after the schedule was written (one in the write itself may or may not run)
    first = (configured // QUARTER + 1) * QUARTER
    expected = [first + k * QUARTER for k in range(PUSHES)]
    maybe = set(range(int(before_schedule // QUARTER + 1) * QUARTER, int(configured) + 1, QUARTER))
    readings = [Reading.take(meter)]
    deadline = time.monotonic() + (expected[-1] - configured) / SPEED + 30
    while True:
        pushed = stored(db, A_PLUS)
        if {utc_seconds(row["capture_time"]) for row in pushed} >= set(expected) or time.monotonic() > deadline:
            break
        readings.append(Reading.take(meter))
    readings.append(Reading.take(meter))

    captured = [utc_seconds(row["capture_time"]) for row in pushed]
    assert len(captured) == len(set(captured)), "a push stored twice"
    assert set(expected) <= set(captured) <= set(expected) | maybe, (captured, expected)
    by_instant = {utc_seconds(row["capture_time"]): row["value"] for row in pushed}
    for quarter in expected:
        # +A at the quarter hour, against the reading nearest to it: between the reading and the
        # instant the meter registered the load times the meter time between them (negative when
        # the reading came after the instant)
        nearest = min(readings, key=lambda r: abs((r.not_before + r.not_after) / 2 - quarter))
        low = energy_wh(quarter - nearest.not_after)
        high = energy_wh(quarter - nearest.not_before + REGISTRATION_LAG)
        assert low - 1 <= by_instant[quarter] - nearest.wh <= high + 1, (quarter, by_instant[quarter], nearest)
        assert abs(by_instant[quarter] - nearest.wh) <= energy_wh(QUARTER)
    # and from push to push exactly what a quarter of an hour at the load adds
    assert [by_instant[b] - by_instant[a] for a, b in zip(expected, expected[1:])] == [energy_wh(QUARTER)] * 3
    for earlier, later in zip(readings, readings[1:]):
        assert_grew_at_the_load(earlier, later)

    # the installation push registers the meter
    title = re.search(r"system title ([0-9A-F]{16})", "".join(meter.output))[1]
    as_management(meter, "push-setup", "installation", "--to", f"tcp:127.0.0.1:{tcp}")
    assert as_management(meter, "push", "installation") == f"0-7:25.9.0.255 installation: push started " \
                                                           f"(to tcp:127.0.0.1:{tcp})\n"
    deadline = time.monotonic() + 20
    while "registered" not in (registered := ok(smartmeter("hes", "meters", "--db", str(db)))) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    assert registered.startswith(f"{title}  serial {SERIAL}  address ") and "  registered " in registered, registered

    # the destination down: the listener stopped, the push pointed at a closed port with 2 retries
    process.send_signal(signal.SIGINT)
    counts = process.communicate(timeout=30)[0].splitlines()[-1]
    assert counts.startswith("stopped: ") and "refused" not in counts and "retry" not in counts, counts
    assert not any("failed after" in line for line in meter.output)  # every push so far was delivered
    closed = free_port()
    shown = as_management(meter, "push-setup", "interval1", "--to", f"tcp:127.0.0.1:{closed}", "--retries", "2")
    assert f"destination: tcp:127.0.0.1:{closed}" in shown and "retries: 2" in shown
    down = Reading.take(meter)
    assert as_management(meter, "push", "interval1").startswith("0-1:25.9.0.255 interval-1: push started")
    line = wait_for_line(meter, r"push to 127\.0\.0\.1:\d+ failed after", timeout=20)
    # the meter's own account: 1 + number_of_retries attempts (push_sender says the number it made)
    assert f"push to 127.0.0.1:{closed} failed after 3 attempt(s)" in line, line
    later = Reading.take(meter)
    assert later.not_before - down.not_after >= 60  # the three attempts, 30 s apart, lie between the readings
    assert_grew_at_the_load(down, later)
