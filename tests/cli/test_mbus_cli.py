"""`smartmeter client mbus` as a head-end user runs it against a real meter process whose wired
M-Bus is a bus of simulated submeters (`smartmeter sim mbus`): the install commands the simulator
prints, pasted as printed, install the devices; `mbus list` then shows each device's registers as
the scenario has them (the seed and the time that passed), and mistakes are one line each."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from meterproc import start_meter
from smartmeter.mbus.simulated import SimulatedSubmeter

SEED = 7
VOLUME_M3, ENERGY_WH = 13, 30  # Blue Book units


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A simulated bus of gas, water and heat, and a meter that is its master."""
    before = time.time()
    bus = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "mbus", "gas", "water", "heat", "--wired",
                            "--listen", "127.0.0.1:0", "--seed", str(SEED)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    banner = []
    for line in bus.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops"):
            break
    threading.Thread(target=lambda: bus.stdout.read(), daemon=True).start()
    port = re.search(r"on 127\.0\.0\.1:(\d+) ", banner[0]).group(1)
    meter = start_meter(tmp_path_factory.mktemp("mbus-cli") / "meter-data", "--http-port", "0",
                        "--mbus-wired", f"127.0.0.1:{port}")
    yield banner, meter, before
    meter.stop()
    os.killpg(bus.pid, signal.SIGINT)
    bus.wait(20)


def run(line: str, meter) -> subprocess.CompletedProcess:
    """A printed `smartmeter client ...` command, aimed at the test's meter (its port and data)."""
    args = shlex.split(line)
    assert args[:2] == ["smartmeter", "client"]
    args = [a.replace("meter-data/", f"{meter.data_dir}/") for a in args[2:]]
    return subprocess.run([sys.executable, "-m", "smartmeter", "client", "--port", str(meter.wrapper_port), *args],
                          capture_output=True, text=True, timeout=120)


def client(meter, *args: str) -> subprocess.CompletedProcess:
    return run(shlex.join(["smartmeter", "client", "--credentials", "meter-data/credentials/management.json",
                           *args]), meter)


def listed(meter) -> dict[int, dict]:
    result = client(meter, "mbus", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {c["channel"]: c for c in json.loads(result.stdout)}


def test_printed_install_commands_install_the_devices_and_their_registers_reach_the_meter(site):
    banner, meter, before = site
    commands = [line.strip() for line in banner if " mbus install " in line]
    assert len(commands) == 3
    for channel, line in enumerate(commands, start=1):
        result = run(line, meter)
        assert result.returncode == 0, (line, result.stderr)
        assert result.stdout.startswith(f"channel {channel} (0-{channel}:24.1.0.255): wired, id ")

    deadline = time.monotonic() + 60
    while True:
        channels = listed(meter)
        if all(channels[n]["values"][0]["value"] is not None for n in (1, 2, 3)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    after = time.time()
    for number, kind in ((1, "gas"), (2, "water"), (3, "heat")):
        device = SimulatedSubmeter(kind, seed=SEED)
        channel = channels[number]
        assert channel["identification_number"] == f"{device.identification:08d}"
        assert channel["manufacturer"] == "SIM" and channel["communication"] == "ok"
        assert channel["device_id_1"] == str(device.fabrication_number)  # from its telegram (VIF 78)
        assert 1 <= channel["primary_address"] <= 250
        low, high = device.reading(before), device.reading(after)
        values = channel["values"]
        if kind == "heat":
            energy = next(v for v in values if v["unit"] == ENERGY_WH)
            assert low.energy_kwh * 1000 <= energy["value"] * 10 ** energy["scaler"] <= high.energy_kwh * 1000
        else:
            volume = values[0]
            assert (volume["scaler"], volume["unit"]) == (-3, VOLUME_M3)
            assert low.volume_l <= volume["value"] <= high.volume_l
        assert values[0]["capture_time"] is not None
    addresses = [channels[n]["primary_address"] for n in (1, 2, 3)]
    assert len(set(addresses)) == 3  # each device got a primary address of its own


def test_a_device_that_is_not_on_the_bus_shows_as_not_answering(site):
    _, meter, _ = site
    result = client(meter, "mbus", "install", "4", "--id", "99999999", "--manufacturer", "SIM", "--version", "1",
                    "--medium", "water")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 60
    while "does not answer" not in listed(meter)[4]["communication"] and time.monotonic() < deadline:
        time.sleep(1)
    channel = listed(meter)[4]
    assert "does not answer" in channel["communication"]
    assert channel["device_id_1"] == ""  # no telegram, no fabrication number
    assert all(v["value"] is None for v in channel["values"])
    removed = client(meter, "mbus", "remove", "4")
    assert removed.returncode == 0, removed.stderr
    assert 4 not in listed(meter)


def test_the_valve_closes_and_the_control_log_says_so(site):
    _, meter, _ = site
    result = client(meter, "mbus", "valve", "1", "close")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0-1:24.4.0.255: valve closed (disconnected)"
    log = client(meter, "get", "0-1:96.11.4.255")
    assert log.stdout.split() == ["0-1:96.11.4.255:2", "60"]  # valve closed (control log code)
    opened = client(meter, "mbus", "valve", "1", "open")
    assert opened.stdout.strip() == "0-1:24.4.0.255: valve open (connected)"


@pytest.mark.parametrize("args, says", [
    (["install", "2", "--id", "123", "--manufacturer", "SIM", "--version", "1", "--medium", "water"],
     "--id '123' is not an M-Bus identification number"),
    (["install", "2", "--id", "12345678", "--manufacturer", "S1M", "--version", "1", "--medium", "water"],
     "--manufacturer 'S1M' is not an M-Bus manufacturer code"),
    (["install", "2", "--id", "12345678", "--manufacturer", "SIM", "--version", "1", "--medium", "beer"],
     "--medium 'beer' is not a device type"),
    (["install", "2", "--id", "12345678", "--manufacturer", "SIM", "--version", "1", "--medium", "gas",
      "--wireless"], "a wireless device is bound by its address and its key"),
    (["key", "1", "--key", "0011"], "--key must be 16 bytes in hex"),
    (["key", "1"], "give either --key HEX or --clear"),
    (["transfer-key", "1", "--key", "00" * 16, "--master-key", "11" * 16, "--style", "smr5"],
     "an SMR 5 key transfer needs the key change counter"),
])
def test_mistakes_are_one_line_and_change_nothing(site, args, says):
    _, meter, _ = site
    before = listed(meter)
    result = client(meter, "mbus", *args)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert says in result.stderr and "Traceback" not in result.stderr
    assert {n: (c["identification_number"], c["key_status"]) for n, c in listed(meter).items()} == \
        {n: (c["identification_number"], c["key_status"]) for n, c in before.items()}


def test_a_refused_method_names_what_was_refused(site):
    """The data readout client may read the channels but not install."""
    _, meter, _ = site
    result = run("smartmeter client --credentials meter-data/credentials/data_readout.json mbus install 2 "
                 "--id 12345678 --manufacturer SIM --version 1 --medium gas", meter)
    assert result.returncode != 0
    assert "refused: 0-2:24.1.0.255:2 mbus_port_reference 0-0:24.6.0.255: read-write-denied" in result.stderr
    assert "give a management client's --credentials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_installing_over_an_installed_device_says_what_to_look_at(site):
    """The management client may install, so a refusal of the value is not about credentials."""
    _, meter, _ = site
    gas = SimulatedSubmeter("gas", seed=SEED)
    result = client(meter, "mbus", "install", "1", "--id", f"{gas.identification:08d}", "--manufacturer", "SIM",
                    "--version", str(gas.version), "--medium", "gas")
    assert result.returncode == 2
    assert ": other-reason (hint: `smartmeter client mbus list --all` shows the channel" in result.stderr
    assert "credentials" not in result.stderr


def test_a_bus_on_a_pseudo_terminal_is_read_through_the_meters_serial_port(tmp_path):
    """`sim mbus --listen pty` and `meter run --mbus-wired /dev/pts/N`: the meter's serial path
    (pyserial, 2400 Bd 8E1) reads the device as it reads one over TCP."""
    before = time.time()
    bus = subprocess.Popen([sys.executable, "-m", "smartmeter", "sim", "mbus", "gas", "--wired", "--listen", "pty",
                            "--seed", str(SEED)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    try:
        first = bus.stdout.readline()
        path = re.search(r"slave\(s\) on (/dev/\S+) ", first).group(1)
        threading.Thread(target=lambda: bus.stdout.read(), daemon=True).start()
        meter = start_meter(tmp_path / "meter-data", "--http-port", "0", "--mbus-wired", path)
        try:
            device = SimulatedSubmeter("gas", seed=SEED)
            result = client(meter, "mbus", "install", "1", "--id", f"{device.identification:08d}", "--manufacturer",
                            "SIM", "--version", str(device.version), "--medium", "gas")
            assert result.returncode == 0, result.stderr
            deadline = time.monotonic() + 60
            while (value := listed(meter)[1]["values"][0])["value"] is None and time.monotonic() < deadline:
                time.sleep(1)
            assert device.reading(before).volume_l <= value["value"] <= device.reading(time.time()).volume_l
        finally:
            meter.stop()
    finally:
        os.killpg(bus.pid, signal.SIGINT)
        bus.wait(20)


def test_a_valve_without_a_device_is_refused_and_the_control_stays(site):
    """Channel 4 has no device (installed and removed above, or never): the disconnect control
    refuses the transition and keeps its state, rather than showing a valve nobody closed."""
    _, meter, _ = site
    assert 4 not in listed(meter)
    before = client(meter, "get", "0-4:24.4.0.255:3").stdout
    result = client(meter, "mbus", "valve", "4", "close")
    assert result.returncode != 0
    assert "refused: 0-4:24.4.0.255 valve close: other-reason" in result.stderr
    assert client(meter, "get", "0-4:24.4.0.255:3").stdout == before
