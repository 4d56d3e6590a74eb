"""A real meter process on free loopback ports, as tests start it (`python -m smartmeter`)."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MeterProcess:
    process: subprocess.Popen
    data_dir: Path
    wrapper_port: int
    hdlc_port: int
    output: list[str]

    def store(self) -> sqlite3.Connection:
        """The meter's own store, read-only: what the meter holds."""
        return sqlite3.connect(f"file:{self.data_dir / 'legal.sqlite3'}?mode=ro", uri=True)

    def profile_rows(self) -> list[tuple]:
        """Load profile 1 as stored: entries of the hash-linked table "lp1", whose payload is
        status (1 byte) and +A, -A, +R, -R (8 bytes each, big-endian)."""
        with self.store() as db:
            rows = db.execute("SELECT time_utc, payload FROM chain_entry WHERE tbl = 'lp1' ORDER BY seq").fetchall()
        return [(t, *struct.unpack(">BQQQQ", payload)) for t, payload in rows]

    def energy_wh(self, name: str) -> int:
        with self.store() as db:
            (milli,) = db.execute("SELECT milli_units FROM energy_register WHERE name = ?", (name,)).fetchone()
        return milli // 1000

    def power_failure(self) -> None:
        """kill -9 of the whole meter: the communication side and the legal process at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_meter(data_dir: Path, *extra: str, cli_options: tuple[str, ...] = (), software: Path | None = None,
                ports: tuple[int, int] | None = None) -> MeterProcess:
    """`smartmeter [cli_options] meter run [extra]` on free ports; `cli_options=("-v",)` logs at INFO.
    `software`: a directory holding a `smartmeter` package to run instead of the installed one (its
    factory installation, as far as the meter's boot code is concerned). `ports`: (wrapper, HDLC)."""
    wrapper_port, hdlc_port = ports or (free_port(), free_port())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if software is not None:
        env["PYTHONPATH"] = str(software)
    process = subprocess.Popen(
        [sys.executable, "-m", "smartmeter", *cli_options, "meter", "run", "--data-dir", str(data_dir),
         "--wrapper-port", str(wrapper_port), "--hdlc-port", str(hdlc_port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,  # its own process group: a "power failure" kills the legal process too
    )
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "WZ optical interface" in line:
            # keep draining its output so the meter never blocks on a full pipe
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return MeterProcess(process, data_dir, wrapper_port, hdlc_port, lines)
    process.kill()
    raise RuntimeError("meter did not start:\n" + "".join(lines))
