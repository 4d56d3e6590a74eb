"""The `smartmeter` command as a user runs it: output, --json, and one-line errors."""
from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys

import pytest

from meterproc import free_port


def smartmeter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=timeout)


def client(meter, *args: str, hdlc: bool = False) -> subprocess.CompletedProcess:
    port = meter.hdlc_port if hdlc else meter.wrapper_port
    return smartmeter("client", "--port", str(port), *(["--hdlc"] if hdlc else []), *args)


@pytest.mark.parametrize("command", [[], ["meter"], ["meter", "run"], ["client"], ["client", "objects"],
                                     ["client", "get"], ["client", "profile"]])
def test_every_command_has_help(command):
    result = smartmeter(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_get_register_shows_value_and_unit(meter):
    result = client(meter, "get", "1-0:1.8.0.255")
    assert result.returncode == 0, result.stderr
    obis, value, unit = result.stdout.split()
    assert (obis, unit) == ("1-0:1.8.0.255", "Wh")
    assert abs(int(value) - meter.energy_wh("a_plus")) <= 2


def test_get_json_over_hdlc(meter):
    result = client(meter, "--json", "get", "0-0:42.0.0.255", hdlc=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"obis": "0-0:42.0.0.255", "class_id": 1, "attribute": 2,
                                         "type": "octet_string", "value": "4b464d31303030313030303030303031"}


def test_objects_json_lists_the_public_view(meter):
    result = client(meter, "--json", "objects")
    objects = json.loads(result.stdout)
    by_obis = {o["obis"]: o for o in objects}
    assert by_obis["1-0:99.1.0.255"]["class_id"] == 7
    assert by_obis["0-0:40.0.0.255"]["read"] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert all(o["write"] == [] for o in objects)


def test_profile_entries_to_csv(meter, tmp_path):
    out = tmp_path / "lp.csv"
    result = client(meter, "profile", "1-0:99.1.0.255", "--entries", "1:4", "--csv", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["0-0:1.0.0.255:2", "0-0:96.10.1.255:2", "1-0:1.8.0.255:2", "1-0:2.8.0.255:2",
                       "1-0:3.8.0.255:2", "1-0:4.8.0.255:2"]
    held = meter.profile_rows()[:4]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == [list(h[1:]) for h in held]


def test_profile_range_json(meter):
    held = meter.profile_rows()
    result = client(meter, "--json", "profile", "1-0:99.1.0.255", "--from", "2000-01-01T00:00+00:00")
    body = json.loads(result.stdout)
    assert len(body["rows"]) >= len(held)


@pytest.mark.parametrize("args, message", [
    (["get", "1-0:1.8"], "1-0:1.8"),
    (["get", "1-0:1.8.0.256"], "above 255"),
    (["get", "1-0:1.8.0.255:x"], "not a number"),
    (["get", "9-9:9.9.9.255"], "not in this client's object list"),
    (["profile", "1-0:99.1.0.255", "--entries", "1-4"], "--entries"),
    (["profile", "1-0:99.1.0.255", "--from", "yesterday"], "ISO"),
])
def test_bad_input_gives_one_line_and_exit_2(meter, args, message):
    result = client(meter, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "hint" in lines[0]


def test_missing_meter_gives_one_line():
    result = smartmeter("client", "--port", str(free_port()), "--timeout", "2", "objects")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot connect" in result.stderr


def test_busy_port_gives_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = smartmeter("meter", "run", "--data-dir", str(tmp_path), "--wrapper-port", str(port),
                            "--hdlc-port", str(free_port()))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "already in use" in error_lines[0] and "--wrapper-port" in error_lines[0]


def test_damaged_store_gives_one_line_and_is_left_alone(tmp_path):
    store = tmp_path / "legal.sqlite3"
    store.write_bytes(b"not a database " * 20)
    result = smartmeter("meter", "run", "--data-dir", str(tmp_path), "--wrapper-port", "0", "--hdlc-port", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot start" in result.stderr and "not a database" in result.stderr
    assert store.read_bytes() == b"not a database " * 20  # evidence is never overwritten


def test_unusable_data_dir_gives_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = smartmeter("meter", "run", "--data-dir", str(blocker / "sub"), "--wrapper-port", "0", "--hdlc-port", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
