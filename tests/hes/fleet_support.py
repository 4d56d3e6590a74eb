"""A head-end at scale as its user runs it: `smartmeter sim fleet`, `hes db import-fleet`,
`hes worker` processes and `hes campaign`, each a real process, against the test's private
PostgreSQL and NATS."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

import services

SMARTMETER = [sys.executable, "-m", "smartmeter"]


def fleet_power(i: int) -> tuple[int, int]:
    """(import W, export W) of fleet meter i, as docs/fleet.md defines them."""
    return 100 + (i * 37) % 900, (i * 53) % 500


def energy(power_w: int, start: float, t: float) -> int:
    return int(power_w * (t - start) // 3600)


class HeadEnd:
    """The processes of one scenario; `close()` ends them all."""

    def __init__(self, tmp: Path, pg_dsn: str, nats_url: str) -> None:
        self.tmp = tmp
        self.env = dict(os.environ, SMARTMETER_HES_DB=pg_dsn, SMARTMETER_NATS=nats_url,
                        SMARTMETER_HES_KEK=str(tmp / "kek.hex"), PYTHONUNBUFFERED="1")
        self.dsn = pg_dsn
        self.fleet: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.manifest: dict = {}
        self._logs = 0

    # -- processes -----------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*SMARTMETER, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 60) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"smartmeter {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        self._logs += 1
        log = open(self.tmp / f"{name}-{self._logs}.log", "w")
        return subprocess.Popen([*SMARTMETER, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_fleet(self, meters: int, *extra: str, timeout: float = 90) -> dict:
        manifest = self.tmp / "fleet.json"
        self.fleet = self._spawn(["sim", "fleet", "--meters", str(meters), "--base-port",
                                  str(services.fleet_base_port(meters)), "--manifest", str(manifest),
                                  "--report", str(self.tmp / "report.json"), *extra], "fleet")
        deadline = time.monotonic() + timeout
        while not manifest.exists():
            assert self.fleet.poll() is None, self.log("fleet")
            assert time.monotonic() < deadline, "the fleet did not start"
            time.sleep(0.2)
        self.manifest = json.loads(manifest.read_text())
        return self.manifest

    def import_fleet(self, *extra: str) -> str:
        return self.ok("hes", "db", "import-fleet", str(self.tmp / "fleet.json"), *extra)

    def start_worker(self, *extra: str) -> subprocess.Popen:
        worker = self._spawn(["hes", "worker", *extra], "worker")
        self.workers.append(worker)
        return worker

    def log(self, name: str) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob(f"{name}-*.log")))

    def start_campaign(self, *extra: str) -> int:
        out = self.ok("hes", "campaign", "start", *extra)
        return int(re.search(r"campaign (\d+)", out).group(1))

    def stop_fleet(self) -> dict:
        """SIGTERM the fleet; its final report."""
        self.fleet.send_signal(signal.SIGTERM)
        self.fleet.wait(60)
        return json.loads((self.tmp / "report.json").read_text())

    def close(self) -> None:
        for p in [*self.workers, self.fleet]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)

    # -- the store -----------------------------------------------------------------------------
    def query(self, sql: str, *args):
        async def run():
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def status(self, campaign: int) -> dict[str, int]:
        rows = self.query("SELECT state, count(*) AS n FROM job WHERE campaign_id = $1 GROUP BY state", campaign)
        return {r["state"]: r["n"] for r in rows}

    def wait_campaign(self, campaign: int, timeout: float, during=None) -> dict[str, int]:
        """Poll until no job of `campaign` is queued; `during(status)` is called at each poll."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(campaign)
            if not status.get("queued"):
                return status
            assert time.monotonic() < deadline, f"campaign {campaign} not done in {timeout} s: {status}\n" \
                                                f"{self.log('worker')[-4000:]}"
            workers = [w for w in self.workers if w.args[3:5] == ["hes", "worker"]]
            assert not workers or any(w.poll() is None for w in workers), f"every worker ended:\n{self.log('worker')}"
            if during is not None:
                during(status)
            time.sleep(0.25)
