"""`smartmeter client ...` run as a user runs it, against a meter process of tests/meterproc.py."""
from __future__ import annotations

import subprocess
import sys


def smartmeter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=120)


def as_client(meter, name: str | None, *args: str) -> subprocess.CompletedProcess:
    """As the client `name` (its demo credentials in the meter's data directory; None: public)."""
    credentials = () if name is None else ("--credentials", str(meter.data_dir / "credentials" / f"{name}.json"))
    return smartmeter("client", "--port", str(meter.wrapper_port), *credentials, *args)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """A refusal: exit code 2, nothing on stdout, one `error: ... (hint: ...)` line on stderr."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], result.stderr
    assert result.stdout == ""
    return lines[0]
