"""The `smartmeter` command as a user runs it: output, --json, and one-line errors."""
from __future__ import annotations

import csv
import json
import re
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from meterproc import free_port
from smartmeter.cli.main import main
from smartmeter.cosem.obis import Obis


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
    (["get", "1-0:1.8.0.255:-1"], "not 0..255"),
    (["get", "1-0:1.8.0.255:256"], "not 0..255"),
    (["--timeout", "0", "objects"], "--timeout"),
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


# --------------------------------------------------------------------------------------
# every object, every attribute, as the command line shows it

def run_in_process(*args: str):
    """The command line in this process (hundreds of reads in seconds, not minutes)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}") from result.exception
    return result


def visible_attributes(meter, credentials: tuple[str, ...]):
    """(class id, OBIS, attribute, readable) of every attribute of every object the client's
    Association LN lists, as the meter lists them (JSON keeps logical names as hex)."""
    result = run_in_process("client", "--port", str(meter.wrapper_port), *credentials, "--json",
                            "get", "0-0:40.0.0.255:2")
    assert result.exit_code == 0, result.output
    for class_id, _version, ln, (attributes, _methods) in json.loads(result.stdout)["value"]:
        obis = str(Obis.from_bytes(bytes.fromhex(ln)))
        yield class_id, obis, 0, True  # attribute 0: all of them, null-data where not readable
        for index, mode, _selectors in attributes:
            yield class_id, obis, index, bool(mode & 1)


@pytest.mark.parametrize("who", ["public", "management"])
def test_every_get_of_every_visible_attribute_answers_without_a_traceback(meter, who):
    credentials = () if who == "public" else ("--credentials", str(meter.data_dir / "credentials" / "management.json"))
    seen = list(visible_attributes(meter, credentials))
    assert len({obis for _, obis, _, _ in seen}) >= (25 if who == "public" else 50)
    if who != "public":
        # what the public client reads alike is shown alike (the output depends on class,
        # attribute and value, not on who asks); a secured read costs ~17 durable counter writes
        public = set(visible_attributes(meter, ()))
        seen = [entry for entry in seen if entry not in public]
        assert len(seen) >= 100
    for class_id, obis, attribute, readable in seen:
        result = run_in_process("client", "--port", str(meter.wrapper_port), *credentials,
                                "get", f"{obis}:{attribute}")
        lines = result.output.splitlines()
        assert "Traceback" not in result.output and "internal error" not in result.output, (obis, attribute)
        assert len(lines) == 1, (obis, attribute, result.output[:500])
        if readable:
            assert result.exit_code == 0, (obis, attribute, result.output)
            assert lines[0].split()[0] in (f"{obis}:{attribute}", obis, f"{obis}:{attribute}"), lines[0][:200]
        else:
            assert result.exit_code == 2, (obis, attribute, result.output)
            assert lines[0].startswith("error: ") and "read-write-denied" in lines[0], lines[0]
        if readable and attribute and who == "public":
            as_json = run_in_process("client", "--port", str(meter.wrapper_port), *credentials, "--json",
                                     "get", f"{obis}:{attribute}")
            assert as_json.exit_code == 0, as_json.output
            assert json.loads(as_json.stdout)["class_id"] == class_id


@pytest.mark.parametrize("obis, attribute, class_id, unit", [
    ("1-0:1.4.0.255", 2, 5, "W"),    # demand register: current average value, scaler_unit is attribute 4
    ("1-0:1.4.0.255", 3, 5, "W"),    # its last average value
    ("1-0:2.6.0.255", 2, 4, "W"),    # maximum demand: extended register
    ("1-0:3.2.0.255", 2, 3, "var"),  # cumulative maximum demand: register
    ("1-0:4.8.0.255", 2, 3, "varh"),
])
def test_demand_and_maximum_demand_registers_show_their_own_unit(meter, obis, attribute, class_id, unit):
    target = obis if attribute == 2 else f"{obis}:{attribute}"
    result = client(meter, "get", target)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    shown, value, shown_unit = result.stdout.split()
    assert (shown, shown_unit) == (target, unit) and float(value) >= 0
    body = json.loads(client(meter, "--json", "get", target).stdout)
    assert (body["class_id"], body["unit"], body["scaler"]) == (class_id, unit, 0)
    assert isinstance(body["value"], int)


def test_logical_names_inside_values_are_shown_in_obis_notation(meter):
    # the load profile's capture objects, as the decisions record them: clock time, profile
    # status, +A, -A, +R, -R, each attribute 2
    columns = ["{8, 0-0:1.0.0.255, 2, 0}", "{1, 0-0:96.10.1.255, 2, 0}", "{3, 1-0:1.8.0.255, 2, 0}",
               "{3, 1-0:2.8.0.255, 2, 0}", "{3, 1-0:3.8.0.255, 2, 0}", "{3, 1-0:4.8.0.255, 2, 0}"]
    result = client(meter, "get", "1-0:99.1.0.255:3")
    assert result.stdout == f"1-0:99.1.0.255:3 [{', '.join(columns)}]\n"
    # --json keeps the bytes
    body = json.loads(client(meter, "--json", "get", "1-0:99.1.0.255:3").stdout)
    assert body["value"][0] == [8, "0000010000ff", 2, 0]
    # the object list: every object the public client sees, named as `objects` names them
    listed = [(str(o["class_id"]), str(o["version"]), o["obis"])
              for o in json.loads(client(meter, "--json", "objects").stdout)]
    text = client(meter, "get", "0-0:40.0.0.255:2").stdout
    assert re.findall(r"\{(\d+), (\d+), ([^,{}]+), \{\[", text) == listed
    assert len(listed) >= 25 and "0000290000ff" not in text
    # attribute 0 of the association: its logical name first, then the same list
    whole = client(meter, "get", "0-0:40.0.0.255:0").stdout
    assert whole.startswith("0-0:40.0.0.255:0 {0-0:40.0.0.255, [{17, 0, 0-0:41.0.0.255, ")


def test_output_into_a_closed_pipe_ends_quietly_as_unix_tools_do(meter):
    for args in (["client", "--port", str(meter.wrapper_port), "objects"], ["model", "show"]):
        process = subprocess.Popen([sys.executable, "-m", "smartmeter", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        process.stdout.close()  # the reader is gone before the first line (`| head -0`)
        assert process.wait(60) == 128 + signal.SIGPIPE, args
        assert process.stderr.read() == b"", args
        process.stderr.close()


def test_a_broken_connection_is_still_an_error_not_a_quiet_exit(monkeypatch):
    """Only a closed stdout is quiet: a broken pipe towards the meter is reported."""
    def broken(*_args, **_kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("smartmeter.cli.main._run_client", broken)
    result = CliRunner().invoke(main, ["client", "objects"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_an_unexpected_failure_is_one_line_with_a_hint_and_exit_2(monkeypatch):
    def bug(*_args, **_kwargs):
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr("smartmeter.cli.main._run_client", bug)
    result = CliRunner().invoke(main, ["client", "get", "1-0:1.8.0.255"])
    assert result.exit_code == 2, result.exception
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: internal error TypeError: 'int' object is not iterable")
    assert "hint:" in result.output


def test_banner_names_the_program_so_that_a_pasted_command_runs_it(tmp_path, monkeypatch):
    from smartmeter.cli.main import _command_path

    program = tmp_path / "my env" / "bin" / "smartmeter"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for where in (tmp_path, program.parent, other):  # pasted in another terminal, wherever that starts
        monkeypatch.chdir(where)
        assert _command_path(program) == f"'{program}'"  # absolute, quoted
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    assert _command_path(program) == "smartmeter"  # the PATH finds this very file
