"""What a newcomer meets: `smartmeter meter run --banner` started as `make run` starts it (the
console script, the default data directory `meter-data` relative to where it runs, here under
umask 000), every command the banner prints pasted as printed, and the README's usage
commands. Also what the meter leaves on disk: owner-only, whatever the umask."""
from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from meterproc import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SMARTMETER = Path(sys.executable).parent / "smartmeter"  # the console script `make run` uses
SERIAL = "1KFM0100000001"  # the default serial number: logical device name FLAG + type 100 + its last 10 digits


@dataclass
class NewcomerMeter:
    process: subprocess.Popen
    site: Path            # the directory the meter was started in
    wrapper_port: int
    hdlc_port: int
    output: list[str]

    @property
    def data_dir(self) -> Path:
        return self.site / "meter-data"

    def banner_commands(self) -> list[str]:
        start = self.output.index("Try, in another terminal:\n")
        end = self.output.index("Ctrl-C stops the meter.\n")
        commands = [line.strip() for line in self.output[start + 1:end] if line.startswith("  ")]
        # pasted into zsh (macOS), a trailing "# comment" would be arguments
        assert not any("#" in c for c in commands), commands
        return commands


def start_newcomer_meter(site: Path) -> NewcomerMeter:
    wrapper_port, hdlc_port = free_port(), free_port()
    command = shlex.join([str(SMARTMETER), "meter", "run", "--banner", "--wrapper-port", str(wrapper_port),
                          "--hdlc-port", str(hdlc_port)])
    process = subprocess.Popen(["/bin/sh", "-c", f"umask 000 && exec {command}"], cwd=site,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line == "Ctrl-C stops the meter.\n":
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return NewcomerMeter(process, site, wrapper_port, hdlc_port, lines)
    process.wait()
    raise RuntimeError("meter did not print its banner:\n" + "".join(lines))


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    site = tmp_path_factory.mktemp("newcomer")
    meter = start_newcomer_meter(site)
    yield meter
    if meter.process.poll() is None:
        os.killpg(meter.process.pid, signal.SIGINT)
        try:
            meter.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(meter.process.pid, signal.SIGKILL)
            meter.process.wait()


def run_pasted(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """`line` as a user pastes it into a shell (comments and all)."""
    return subprocess.run(["/bin/sh", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=120)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def check_output(args: list[str], stdout: str, meter: NewcomerMeter) -> None:
    """The output a client command should give, judged from what was asked."""
    lines = stdout.splitlines()
    if "objects" in args:
        assert lines[0].split()[0] == "OBIS"
        listed = {line.split()[0] for line in lines[1:]}
        assert {"1-0:1.8.0.255", "1-0:99.1.0.255", "0-0:1.0.0.255"} <= listed
    elif "profile" in args:
        since = dt.date.fromisoformat(args[args.index("--from") + 1])
        days = (dt.date.today() - since).days
        # 15-minute entries from the start of `since` until now: at least a whole day's worth
        assert lines[-1] == f"{len(lines) - 2} entries" and len(lines) - 2 >= 96 * days, lines[-3:]
    elif "get" in args:
        target = args[args.index("get") + 1]
        assert len(lines) == 1
        if target in ("1-0:1.8.0.255", "1-0:1.4.0.255"):
            obis, value, unit = lines[0].split()
            assert (obis, unit) == (target, "Wh" if target == "1-0:1.8.0.255" else "W")
            assert float(value) >= 0
        elif target == "0-0:1.0.0.255":
            obis, when = lines[0].split()
            assert obis == "0-0:1.0.0.255:2"
            # the meter's clock against this machine's: the same clock, read moments apart
            assert abs(dt.datetime.fromisoformat(when) - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
        elif target == "0-0:42.0.0.255":
            assert lines[0] == "0-0:42.0.0.255:2 KFM" + "100" + SERIAL[-10:]
        else:
            raise AssertionError(f"the test does not know what {target} should show")
    else:
        raise AssertionError(f"the test does not know the command {args}")


def test_every_banner_command_runs_as_printed_from_where_the_meter_runs(newcomer):
    commands = newcomer.banner_commands()
    assert len(commands) >= 7, commands
    assert any("--credentials" in c for c in commands) and any("--hdlc" in c for c in commands)
    for line in commands:
        result = run_pasted(line, newcomer.site)
        no_traceback(result)
        assert result.returncode == 0, (line, result.stderr)
        assert result.stderr == ""
        check_output(shlex.split(line, comments=True), result.stdout, newcomer)


def test_banner_commands_run_as_printed_from_another_directory(newcomer, tmp_path):
    """Another terminal need not start where the meter runs: every path printed is absolute."""
    for line in newcomer.banner_commands():
        result = run_pasted(line, tmp_path)
        no_traceback(result)
        assert result.returncode == 0, (line, result.stderr)
        check_output(shlex.split(line, comments=True), result.stdout, newcomer)


def test_meter_state_is_owner_only_under_a_permissive_umask(newcomer):
    data = newcomer.data_dir
    private = [data, data / "legal.sqlite3", data / "legal.sqlite3-wal", data / "legal.sqlite3-shm",
               data / "meter.sqlite3", data / "meter.sqlite3-wal", data / "meter.sqlite3-shm",
               data / "credentials", data / "credentials" / "demo-pki"]
    private += sorted((data / "credentials").rglob("*"))
    assert len(private) > 20  # the PKI and the credentials of eight clients are there
    for path in private:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
    for path in data.rglob("*"):  # nothing at all in it writable by others (the exported public key is readable)
        assert not path.stat().st_mode & 0o022, path


# ------------------------------------------------------------------------------------- README


def readme_usage_commands() -> list[str]:
    """The `smartmeter ...` lines of the README's Usage section (continuations joined)."""
    text = README.read_text()
    usage = text[text.index("## Usage"):text.index("## Documentation")]
    commands, pending = [], ""
    for line in usage.splitlines():
        if not line.startswith("    ") or not (pending or line.strip().startswith("smartmeter ")):
            continue
        pending += line.strip().removesuffix("\\").rstrip() + " "
        if not line.rstrip().endswith("\\"):
            commands.append(pending.strip())
            pending = ""
    return commands


def variants(line: str) -> list[str]:
    """A synopsis `cmd [--a x] [--b]` as it runs: without the optional parts and with all of them."""
    if "[" not in line:
        return [line]
    return [re.sub(r"\s*\[[^\]]*\]", "", line), re.sub(r"\[([^\]]*)\]", r"\1", line)]


def for_this_meter(line: str, meter: NewcomerMeter) -> str:
    """The README line aimed at the test's meter: the command path and the ports (the README's
    are the defaults, which a test must not take); nothing else changes."""
    args = shlex.split(line, comments=True)
    assert args[0] == "smartmeter"
    args[0] = str(SMARTMETER)
    if args[1] == "client":
        args[2:2] = ["--port", str(meter.hdlc_port if "--hdlc" in args else meter.wrapper_port)]
    return shlex.join(a.replace("127.0.0.1:4059", f"127.0.0.1:{meter.wrapper_port}") for a in args)


def test_readme_python_example_runs(newcomer, tmp_path):
    """(Before the README's provisioning, which gives every client new keys.)"""
    text = README.read_text()
    code = text[text.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    assert "4059" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace("4059", str(newcomer.wrapper_port)))
    result = subprocess.run([sys.executable, str(script)], cwd=newcomer.site, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    energy, entries, first_row = result.stdout.split(" ", 2)
    assert int(energy) >= 0 and int(entries) == 96 and first_row.startswith("(")


def test_readme_usage_commands_work_as_written(newcomer):
    lines = readme_usage_commands()
    assert len(lines) >= 15, lines
    provisioning = [line for line in lines if " pki provision " in line]
    ran = []
    for line in [line for line in lines if line not in provisioning] + provisioning:  # provisioning changes the keys
        if line.startswith("smartmeter meter run"):
            continue  # the synopsis of what the fixture runs
        for variant in variants(line):
            command = for_this_meter(variant, newcomer)
            result = run_pasted(command, newcomer.site)
            no_traceback(result)
            assert result.returncode == 0, (command, result.stderr)
            assert result.stdout.strip(), command
            ran.append(variant)
    assert any("--credentials" in line for line in ran) and any(" profile " in line for line in ran)
    # what those commands leave behind
    with open(newcomer.site / "day1.csv") as f:
        assert len(f.readlines()) == 1 + 96
    assert stat.S_IMODE((newcomer.site / "my-pki").stat().st_mode) == 0o700
    out = newcomer.site / "my-credentials"
    assert stat.S_IMODE(out.stat().st_mode) == 0o700 and (out / "management.json").is_file()
    # the freshly provisioned credentials work, and from another directory too
    result = run_pasted(f"{shlex.quote(str(SMARTMETER))} client --port {newcomer.wrapper_port} --credentials "
                        f"{shlex.quote(str(out / 'data_readout.json'))} get 1-0:1.8.0.255", README.parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[::2] == ["1-0:1.8.0.255", "Wh"]
