#!/usr/bin/env python3
"""Power-failure soak of a real meter process (WELMEC 7.2 I3-1, I3-2, L).

    .venv/bin/python scripts/power_fail_soak.py --cycles N [--data-dir DIR] [--seed S]
        [--min-delay 0.05] [--max-delay 2.0] [--from-ready] [--no-capture-jump]
        [--cli-verify-every 10] [-v]

Starts `smartmeter meter run` on a fresh data directory (a temporary one unless --data-dir
is given), lets it measure the simulated household in real time, and cuts the power
(SIGKILL of the whole process group: the communication process and the legal process at
once) at a random instant, --min-delay..--max-delay seconds after the process was launched
(so kills also land during start-up: store check, back-fill on the first start, software
check), or, with --from-ready, after the meter has answered its first DLMS request. Then it
starts the meter again, N times. After every kill it checks:

* nothing persisted is lost: the stored registers (+A, -A, +R, -R in mWh), the metering
  position and the load profile are never lower than the newest values read from the store
  before the kill (read-only, polled every 20 ms while the meter runs);
* the energy lost is at most 1 s of the load at that moment (PERSIST_PERIOD of the legal
  part). The energy measured but not yet persisted at the kill is that of the signal between
  the position persisted after the kill and the position the real-time loop can have reached
  at the kill. The loop is never ahead of the wall clock, so that position is at most the
  newest persisted position seen plus the wall time since the poll *before* the one that saw
  it, and at most the position the run started from plus the time since the loop started
  (not before the legal process's last three threads appeared in /proc: `start()` sets the
  origin and then starts them; checked against the first persist; else the launch time).
  Both are upper bounds, so the loss reported is too. It is shown in seconds of signal and
  in mWh at the household's largest power over the last 2 s (HouseholdLoad, serial as
  `meter run`'s default);
* the hash-linked, signed logs and the load profile verify (the same check as
  `smartmeter verify-log` / `verify-storage`, in-process every cycle; every
  --cli-verify-every cycles and at the end the two commands themselves are run);
* after the restart the meter answers DLMS (public client, wrapper), its fatal error
  register (0-0:97.97.128.255) is 0, and +A/-A read over DLMS are at least the persisted
  value at the kill and at most 1 Wh below what DLMS showed before the kill (a register
  read live may be up to 1 s ahead of the store, which can straddle a whole Wh).

Load profile captures: the meter has no accelerated time, so by default (--capture-jump) before
each restart the harness moves the meter's clock forward through the protective interface
(`SetTime`, the path a head-end's clock write takes, logged in the metrological log) so that
the next 15-minute boundary falls around the time the meter comes up (`capture_lead`,
relative to the launch-to-answer time last seen), as if the power had been off until then. The meter
captures at its first 1 s tick after the boundary, so kills land before and after captures
(and, by chance, during one). The store then holds future-dated entries: use a scratch data
directory. The summary counts, per cycle, whether the capture was stored before the kill,
was due but not yet stored, was missed (the boundary passed before the meter read its
clock), or the kill came before the meter read its clock.

Usage examples:

    .venv/bin/python scripts/power_fail_soak.py --cycles 200 -v            # kills from launch
    .venv/bin/python scripts/power_fail_soak.py --cycles 50 --from-ready --max-delay 1.5

Prints one line per cycle (with -v), the seed and data directory, and a summary (cycles,
kills before the meter answered, captures, max loss in s and mWh, violations, and notes about
the harness's own observations); exit status 1 on any violation. A cycle takes 1-2 s.
tests/power/test_power_failure.py runs `run_soak` for 50 cycles (kills 0.05-1.5 s after the
first DLMS answer) and 8 kills during start-up.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.legal.interface import (
    LOG_TABLES, PERSIST_PERIOD, STORAGE_TABLES, LegalInterface, ReadTimeBase, SetTime, verify_stored_data,
)
from smartmeter.meter.simulation import HouseholdLoad

SAMPLE_RATE = 8000  # the legal part's sampling rate (metering.MeteringUnit default)
CAPTURE_PERIOD = 900
SERIAL = "1KFM0100000001"  # `meter run`'s default serial: seeds the household
REGISTERS = ("a_plus", "a_minus", "r_plus", "r_minus")
DLMS_REGISTERS = {"a_plus": "1-0:1.8.0.255", "a_minus": "1-0:2.8.0.255"}
FATAL_ERRORS = "0-0:97.97.128.255"
POLL_INTERVAL = 0.02
_METERING_HEAD = struct.Struct(">4sBBq")  # legal/metering.py _Snapshot: MTRU, version, input, next sample



# -- the store, read-only ---------------------------------------------------------------------


@dataclass(frozen=True)
class Persisted:
    """One consistent read of what the legal part has persisted."""

    position: int  # next sample of the metering state (0 before the first persist)
    milli: dict  # register name -> mWh / mvarh
    profile_last_seq: int
    profile_last_time: int
    fatal: int
    demand: str  # meta "demand" as stored: changes whenever the meter comes up (StartDemandPeriod)

    def below(self, other: "Persisted") -> list[str]:
        """What in self is lower than in other (empty: nothing went backwards)."""
        out = [f"{n} {self.milli.get(n, 0)} < {other.milli.get(n, 0)}" for n in REGISTERS
               if self.milli.get(n, 0) < other.milli.get(n, 0)]
        if self.position < other.position:
            out.append(f"metering position {self.position} < {other.position}")
        if self.profile_last_seq < other.profile_last_seq:
            out.append(f"load profile last entry {self.profile_last_seq} < {other.profile_last_seq}")
        return out


EMPTY = Persisted(0, dict.fromkeys(REGISTERS, 0), 0, 0, 0, "")


def read_persisted(data_dir: Path) -> Persisted:
    store = Path(data_dir) / "legal.sqlite3"
    if not store.exists():
        return EMPTY
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, isolation_level=None, timeout=5)
    try:
        db.execute("BEGIN")  # one snapshot: registers and metering state are written together
        try:
            milli = dict(db.execute("SELECT name, milli_units FROM energy_register").fetchall())
            row = db.execute("SELECT value FROM meta WHERE key = 'metering_state'").fetchone()
            fatal = db.execute("SELECT value FROM meta WHERE key = 'fatal_errors'").fetchone()
            demand = db.execute("SELECT value FROM meta WHERE key = 'demand'").fetchone()
            last = db.execute("SELECT seq, time_utc FROM chain_entry WHERE tbl = 'lp1' "
                              "ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.OperationalError:  # no such table yet: the first start has not got that far
            return EMPTY
        finally:
            db.execute("COMMIT")
    finally:
        db.close()
    position = 0
    if row is not None:
        magic, _version, _remote, position = _METERING_HEAD.unpack_from(bytes.fromhex(json.loads(row[0])))
        if magic != b"MTRU":
            raise RuntimeError("metering_state in the store has an unknown format")
    return Persisted(max(position, 0), {n: int(milli.get(n, 0)) for n in REGISTERS},
                     last[0] if last else 0, last[1] if last else 0, int(json.loads(fatal[0])) if fatal else 0,
                     demand[0] if demand else "")


def _demand_start(raw: str) -> int:
    value = json.loads(raw)
    if isinstance(value, str):
        value = json.loads(value)
    return int(value.get("start_time") or 0)


class StorePoller:
    """Polls the store while a meter runs; remembers every newly persisted state together with
    the start of the poll before the one that saw it (the persist happened after that)."""

    def __init__(self, data_dir: Path, baseline: Persisted) -> None:
        self.data_dir = data_dir
        self.latest = baseline
        self.seen: list[tuple[float, float, Persisted]] = []  # (t_poll_before, t_seen, state)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # a state first seen by one poll was persisted after the previous poll STARTED reading:
        # under load a read takes long, and a persist during it is not in its snapshot
        previous_start = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                state = read_persisted(self.data_dir)
            except (sqlite3.Error, OSError) as exc:  # busy during recovery etc.: try again
                self.errors.append(str(exc))
                state = None
            now = time.monotonic()
            if state is not None and state != self.latest:
                self.seen.append((previous_start, now, state))
                self.latest = state
            previous_start = started
            self._stop.wait(POLL_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class MeteringStartWatcher:
    """When did the legal process start its real-time loop? Watches (Linux /proc, every 5 ms)
    the threads of the meter's legal child process: `LegalInterface.start()` sets the metering
    origin and then starts its last three threads (metering loop, watchdog, housekeeping), so
    the loop cannot have started measuring before the last observation with fewer threads than
    that. Without /proc the launch time is the (looser) bound."""

    def __init__(self, meter_pid: int, launched: float) -> None:
        self.meter_pid, self.launched = meter_pid, launched
        self.observations: list[tuple[float, int | None]] = []  # (time, threads of the legal child)
        self._child: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _legal_child(self) -> int | None:
        try:
            with open(f"/proc/{self.meter_pid}/task/{self.meter_pid}/children") as f:
                kids = f.read().split()
            for kid in kids:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    cmd = f.read()
                if b"--multiprocessing-fork" in cmd and b"resource_tracker" not in cmd:
                    return int(kid)
        except OSError:
            pass
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._child is None:
                self._child = self._legal_child()
            count = None
            if self._child is not None:
                try:
                    count = len(os.listdir(f"/proc/{self._child}/task"))
                except OSError:
                    count = None
            self.observations.append((time.monotonic(), count))
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def origin_not_before(self) -> float:
        counts = [c for _, c in self.observations if c is not None]
        if not counts:
            # the legal process was never seen: it had not started measuring at the last look
            return self.observations[-1][0] if self.observations else self.launched
        threshold = max(counts) - 2  # the loop thread is the first of start()'s three
        previous = self.launched
        for t, count in self.observations:
            if count is not None and count >= threshold:
                return previous
            previous = t
        return self.launched


# -- the meter process -------------------------------------------------------------------------


METER_PORTS = (20000, 30000)  # below the kernel's ephemeral range (32768 on Linux)


def free_port() -> int:
    """A free 127.0.0.1 port for the meter, kept over all its restarts: one below the ephemeral
    range, so that no outgoing connection of another program takes it while the meter is down."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*METER_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {METER_PORTS}")


def _living_members(pgid: int) -> list[int]:
    """Processes of a process group that are not dead yet (zombies are dead: they run nothing).
    Without /proc: whether the group still exists at all."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    living = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            living.append(int(name))
    return living


class MeterRun:
    """One `smartmeter meter run` in its own process group (a power failure kills all of it)."""

    def __init__(self, data_dir: Path) -> None:
        self.wrapper_port, self.hdlc_port = free_port(), free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.launched = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smartmeter", "meter", "run", "--data-dir", str(data_dir),
             "--wrapper-port", str(self.wrapper_port), "--hdlc-port", str(self.hdlc_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        self.output: list[str] = []
        self.ready = threading.Event()
        self.answered_at: float | None = None  # when it said it listens
        self.killed_at: float | None = None
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            if "WZ optical interface" in line:
                self.answered_at = time.monotonic()
                self.ready.set()

    def power_failure(self) -> float:
        """SIGKILL the whole process group; returns when every process of it is gone."""
        self.killed_at = time.monotonic()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _living_members(self.process.pid):
            time.sleep(0.005)  # the legal process is reparented; dead (a zombie) is enough
        return self.killed_at

    def stop(self) -> int:
        """Ctrl-C: a clean stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@dataclass(frozen=True)
class DlmsReading:
    fatal: int
    wh: dict  # a_plus / a_minus in whole Wh


async def _read_dlms(port: int, timeout: float) -> DlmsReading:
    async with MeterClient(WrapperLink("127.0.0.1", port, timeout=timeout)) as client:
        fatal = (await client.get(FATAL_ERRORS, 2, class_id=1)).value
        wh = {name: (await client.get(obis, 2, class_id=3)).value for name, obis in DLMS_REGISTERS.items()}
    return DlmsReading(int(fatal), wh)


def read_dlms(port: int, timeout: float = 5.0) -> DlmsReading:
    """The public client over the wrapper: fatal error register and +A, -A."""
    return asyncio.run(_read_dlms(port, timeout))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=120)


def verify_store(data_dir: Path, cli: bool) -> list[str]:
    """Problems found by verify-log and verify-storage (empty: all verified). A first start
    killed before the meter exported its public key has stored nothing to verify yet."""
    problems = []
    if not (Path(data_dir) / "meter-signing-key.pub.pem").exists():
        if read_persisted(data_dir) in (EMPTY,):
            return []
        return ["energy or profile stored, but no exported public key to verify it with"]
    if cli:
        for command in ("verify-log", "verify-storage"):
            done = run_cli(command, str(data_dir))
            if done.returncode != 0:
                problems.append(f"{command} exit {done.returncode}: {done.stdout.strip()} {done.stderr.strip()}")
    else:
        for report in verify_stored_data(Path(data_dir), LOG_TABLES + STORAGE_TABLES):
            if not report.ok:
                problems.append(f"{report.name}: entry {report.first_bad_seq}: {report.problem}")
    return problems


# -- the soak ----------------------------------------------------------------------------------


@dataclass
class CycleResult:
    index: int
    delay: float  # s from launch (or from the first DLMS answer with from_ready) to the kill
    answered: bool  # the meter answered DLMS before the kill
    loss_s: float  # upper bound of the seconds of signal measured but not persisted
    loss_mwh: float  # loss_s at the household's power at the kill
    # the cycle's load-profile capture: "stored" before the kill, "pending" (the meter had read
    # its clock before the boundary, the kill came before the capture), "missed" (the boundary
    # passed while the meter was starting), "start-up" (killed before the meter read its clock),
    # "-" (no capture jumps)
    capture: str
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the harness's own observations


@dataclass
class SoakResult:
    data_dir: Path
    cycles: list[CycleResult]
    final_violations: list[str]

    @property
    def violations(self) -> list[str]:
        return [f"cycle {c.index}: {v}" for c in self.cycles for v in c.violations] + self.final_violations

    @property
    def max_loss_s(self) -> float:
        return max((c.loss_s for c in self.cycles), default=0.0)

    @property
    def max_loss_mwh(self) -> float:
        return max((c.loss_mwh for c in self.cycles), default=0.0)

    def summary(self) -> str:
        answered = sum(c.answered for c in self.cycles)
        capture = {k: sum(c.capture == k for c in self.cycles) for k in ("stored", "pending", "missed", "start-up")}
        lines = [
            f"cycles: {len(self.cycles)} (killed after the meter answered DLMS: {answered}, "
            f"before: {len(self.cycles) - answered})",
            "load-profile capture due near the kill: stored before the kill {stored}, due but not yet "
            "stored {pending}, boundary passed during start-up {missed}, killed before the meter read its "
            "clock {start-up}".format_map(capture),
            f"max energy lost per kill: {self.max_loss_s:.3f} s of signal, {self.max_loss_mwh:.1f} mWh "
            f"(limit: {PERSIST_PERIOD:g} s of the load)",
            f"violations: {len(self.violations)}",
        ]
        notes = [f"cycle {c.index}: {n}" for c in self.cycles for n in c.notes]
        if notes:
            lines.insert(-1, f"harness notes ({len(notes)}): " + "; ".join(notes[:5]))
        lines += [f"  {v}" for v in self.violations[:50]]
        return "\n".join(lines)


def _loss_bound(baseline: Persisted, origin_not_before: float, launched: float, seen: list, killed_at: float,
                after: Persisted) -> tuple[float, list[str]]:
    """Seconds of signal the legal part can have measured but not persisted at the kill (and
    a problem if the observed start of metering contradicts what the store shows)."""
    problems = []
    if seen:
        # the first persisted state of this run: the loop started (at baseline.position) at the
        # latest this long before it was seen
        _, first_seen, first = seen[0]
        latest_origin = first_seen - (first.position - baseline.position) / SAMPLE_RATE
        if origin_not_before > latest_origin + POLL_INTERVAL:
            problems.append(f"harness: metering start observed {origin_not_before - latest_origin:.3f} s after the "
                            "store shows it; using the launch time")
            origin_not_before = launched
    # the real-time loop is never ahead of the wall clock: from the state it started with and
    # from every persisted state (persisted after the poll before the one that saw it), the
    # position at the kill is at most this
    bounds = [baseline.position + max(0.0, killed_at - origin_not_before) * SAMPLE_RATE]
    bounds += [state.position + (killed_at - before) * SAMPLE_RATE for before, _, state in seen]
    return max(0.0, min(bounds) - after.position) / SAMPLE_RATE, problems


def _household_mw(load: HouseholdLoad, meter_time: float) -> float:
    """The largest |P| or |Q| (W / var) the meter can be measuring at that meter time (its load
    follows the household once a second), in mW per second of signal = W / 3.6."""
    worst = max(abs(v) for t in (meter_time, meter_time - 1.0, meter_time - 2.0) for v in load.power(t))
    return worst * 1000 / 3600  # mWh per second


def run_soak(cycles: int, data_dir: Path | None = None, seed: int | None = None, min_delay: float = 0.05,
             max_delay: float = 2.0, from_ready: bool = False, capture_jump: bool = True,
             cli_verify_every: int = 10, capture_lead: tuple[float, float] = (-0.3, 1.0), log=print) -> SoakResult:
    """The soak (see the module documentation). capture_lead: where the 15-minute boundary falls,
    in s relative to the time the meter took to answer after the previous launch."""
    rng = random.Random(seed)
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="power-fail-soak-")) / "meter-data"
    data_dir = Path(data_dir)
    load = HouseholdLoad(SERIAL)
    offset = 0.0
    results: list[CycleResult] = []
    last_dlms: DlmsReading | None = None

    ready_after = 0.8  # launch to first answer, as last seen

    def next_offset() -> tuple[float, int | None]:
        """The meter's clock for the next launch: the next 15-minute boundary falls around the
        time the meter comes up (it captures at the first 1 s tick after the boundary, if it
        read its clock before it)."""
        if not capture_jump:
            return offset, None
        meter_now = time.time() + offset
        boundary = (math.floor(meter_now / CAPTURE_PERIOD) + 1) * CAPTURE_PERIOD
        lead = ready_after + rng.uniform(*capture_lead)  # s from launch to the boundary
        if boundary - lead < meter_now + 0.1:
            boundary += CAPTURE_PERIOD  # the meter's clock never goes back
        return boundary - time.time() - lead, boundary

    def move_clock() -> tuple[float, int | None]:
        """Set the meter's time base for the next launch while the meter is off, through the
        protective interface (both of the meter's processes follow it); -> (offset, boundary)."""
        nonlocal offset
        if not capture_jump:
            return offset, None
        part = LegalInterface(data_dir)
        try:
            offset = part.execute(ReadTimeBase())
            wanted, boundary = next_offset()  # computed after the store is open: the launch follows at once
            now = time.time()
            part.execute(SetTime(now + wanted, now + offset, "00" * 8, "set"))
            return part.execute(ReadTimeBase()), boundary
        finally:
            part.close()

    def dlms_checks(run: MeterRun, persisted: Persisted, before: DlmsReading | None, allowed_wh: float,
                    violations: list[str]) -> DlmsReading | None:
        try:
            reading = read_dlms(run.wrapper_port)
        except Exception as exc:  # noqa: BLE001 - a meter that does not answer is a violation
            if run.killed_at is None:
                violations.append(f"meter does not answer DLMS: {type(exc).__name__}: {exc}")
            return None
        if run.killed_at is not None:
            return None  # the power went while reading: nothing to judge
        if reading.fatal != 0:
            violations.append(f"fatal error register is {reading.fatal:#x}")
        for name, wh in reading.wh.items():
            if wh < persisted.milli[name] // 1000:
                violations.append(f"{name} over DLMS {wh} Wh < persisted {persisted.milli[name]} mWh")
            if before is not None and wh < before.wh[name] - math.ceil(allowed_wh / 1000):
                violations.append(f"{name} over DLMS {wh} Wh, before the kill {before.wh[name]} Wh")
        return reading

    allowed_wh_last = 0.0
    for index in range(1, cycles + 1):
        baseline = read_persisted(data_dir)
        offset, boundary = move_clock()
        poller = StorePoller(data_dir, baseline)
        run = MeterRun(data_dir)
        watcher = MeteringStartWatcher(run.process.pid, run.launched)
        violations: list[str] = []
        answered = False
        delay = rng.uniform(min_delay, max_delay)
        if from_ready:
            if not run.ready.wait(60):
                violations.append("meter did not start: " + "".join(run.output[-5:]))
            reading = dlms_checks(run, baseline, last_dlms, allowed_wh_last, violations)
            answered = reading is not None
            last_dlms = reading or last_dlms
            timer = threading.Timer(delay, run.power_failure)
            timer.start()
            timer.join()
        else:
            timer = threading.Timer(max(0.0, run.launched + delay - time.monotonic()), run.power_failure)
            timer.start()
            if run.ready.wait(max(0.0, run.launched + delay - time.monotonic())) and run.killed_at is None:
                reading = dlms_checks(run, baseline, last_dlms, allowed_wh_last, violations)
                answered = reading is not None
                last_dlms = reading or last_dlms
            timer.join()
        killed_at = run.killed_at
        poller.stop()
        watcher.stop()
        after = read_persisted(data_dir)
        newest_seen = poller.latest
        for what in after.below(newest_seen):
            violations.append(f"persisted value lost: {what}")
        for what in after.below(baseline):
            violations.append(f"went backwards over the cycle: {what}")
        if after.fatal:
            violations.append(f"fatal error register persisted as {after.fatal:#x}")
        loss_s, harness_notes = _loss_bound(baseline, watcher.origin_not_before(), run.launched, poller.seen,
                                            killed_at, after)
        meter_time = time.time() + offset - (time.monotonic() - killed_at)
        rate = _household_mw(load, meter_time)
        loss_mwh = loss_s * rate
        if loss_s > PERSIST_PERIOD:
            violations.append(f"lost {loss_s:.3f} s of signal ({loss_mwh:.1f} mWh) > {PERSIST_PERIOD:g} s")
        allowed_wh_last = PERSIST_PERIOD * rate
        cli = cli_verify_every > 0 and index % cli_verify_every == 0
        violations += verify_store(data_dir, cli)
        if boundary is None:
            capture = "-"
        elif after.profile_last_time >= boundary:
            capture = "stored"
        elif after.demand == baseline.demand:
            capture = "start-up"
        else:
            capture = "missed" if _demand_start(after.demand) >= boundary else "pending"
        if run.answered_at is not None:
            ready_after = run.answered_at - run.launched
        result = CycleResult(index, delay, answered, loss_s, loss_mwh, capture, violations, harness_notes)
        results.append(result)
        log(f"cycle {index}: kill {delay:.3f} s after {'the first answer' if from_ready else 'launch'}, "
            f"answered {answered}, loss {loss_s:.3f} s / {loss_mwh:.1f} mWh, "
            f"capture {capture}"
            + ("" if not violations else f", VIOLATIONS: {violations}"))

    # the end: a last start, a DLMS check, a clean stop, and the offline commands
    final: list[str] = []
    persisted = read_persisted(data_dir)
    offset, _ = move_clock()
    run = MeterRun(data_dir)
    if not run.ready.wait(60):
        final.append("meter did not start after the last cycle: " + "".join(run.output[-5:]))
    else:
        dlms_checks(run, persisted, last_dlms, allowed_wh_last, final)
    code = run.stop()
    if code != 0:
        final.append(f"clean stop exited {code}: {''.join(run.output[-5:])}")
    final += verify_store(data_dir, cli=True)
    final = [f"final: {v}" for v in final]
    return SoakResult(data_dir, results, final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, required=True, help="power failures to cause")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="meter data directory [default: a fresh temporary one]")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the kill instants")
    parser.add_argument("--min-delay", type=float, default=0.05)
    parser.add_argument("--max-delay", type=float, default=2.0)
    parser.add_argument("--from-ready", action="store_true",
                        help="count the delay from the meter's first DLMS answer instead of from launch")
    parser.add_argument("--no-capture-jump", dest="capture_jump", action="store_false",
                        help="leave the meter's clock alone (kills then rarely meet a load-profile capture)")
    parser.add_argument("--cli-verify-every", type=int, default=10,
                        help="run the verify-log / verify-storage commands every N cycles (0: only at the end)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per cycle")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    started = time.monotonic()
    result = run_soak(args.cycles, args.data_dir, seed, args.min_delay, args.max_delay, args.from_ready,
                      args.capture_jump, args.cli_verify_every, log=print if args.verbose else (lambda _: None))
    print(f"seed {seed}, data dir {result.data_dir}, {time.monotonic() - started:.0f} s")
    print(result.summary())
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
