"""The head-end at scale: what the JetStream workers, the PostgreSQL store and the push path
do, side by side with a bare asyncio loop doing the same sessions, in one run.

Private PostgreSQL and NATS servers are started for the run (tests/services.py: the wheels of
the test extra), and `smartmeter sim fleet` serves the meters. Figures:

1. sessions per HES core. The same complete read sessions (AARQ + HLS 5 GMAC, the clock, +A
   and −A with their scaler_unit, the new rows of the load profile and of the standard event
   log by range, release) of the same kind of meters, by one `hes worker` process (job from
   JetStream, claim, counter block and lease in PostgreSQL, readings and events stored) and
   by bare asyncio loops with counters in memory and results dropped: one of MeterClient
   calls (what any client must do) and one of the worker's own session code (`read_session`:
   the same requests, the same readings and events made). Each is sessions per CPU second of
   its process (the worker's from /proc, a loop's from its own process time after its
   imports). The engine's overhead (JetStream, the store, leases, counters) is how much more
   CPU a session costs in the worker than in the session loop, measured side by side: the
   worker's campaign and the session loop at the same time, on two halves of one fleet, so
   that both run under the same load of the machine (PostgreSQL, NATS and the fleet share its
   2 cores with them). The loop starts just before the campaign and reads its half over and
   over until the campaign's last outcome. Then, one after the other as before, the worker
   and both loops alone: there the worker's run carries PostgreSQL's and NATS's work on the
   same cores and the loops' runs do not, which the side-by-side figure leaves out. 64
   sessions at once in each: a worker's session also waits for its claim and its stored
   outcome, and with 32 its loop was not kept busy while the bare loops' were (an idle loop
   turns more often for the same work). Three rounds, each ratio taken within its round, the
   median given. The engine alone as well: a worker's CPU per job when every session is the
   result of its first one replayed (no meter traffic), against the session loop's CPU per
   session: what the engine costs itself.
2. 10,000 meters through three workers: the wall time of a campaign, start to last outcome.
3. pushes end to end: authentic Interval 1 pushes (the model's 14 values) sent over UDP to
   two listeners (`hes listen --nats`) at a given rate, stored once by the ingesters of two
   workers (every worker ingests), raw and decoded into readings; pushes per second stored and the 99th percentile of
   stored − received (listener) time, from the store.
4. rows per second into the partitioned readings table by COPY (asyncpg
   copy_records_to_table, one month, 1,000 series).
5. a 30-day range query for one series (one meter, one OBIS) on a table of at least 50
   million rows (1,440 series × one year of 15-minute rows), p50 and p95 of 200 queries.

    .venv/bin/python benchmarks/hes_scale.py [--quick] [--json FILE]

--quick makes every part smaller (for a try; the figures of record are without it).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import asyncpg  # noqa: E402

import services  # noqa: E402  (private PostgreSQL and NATS)

SMARTMETER = [sys.executable, "-m", "smartmeter"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, user_only: bool = False) -> float:
    """User + system CPU (or user CPU alone) of a process and its children that ended, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in ((11, 13) if user_only else (11, 12, 13, 14))) / TICK


def tree_cpu(pids: list[int], user_only: bool = False) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid, user_only)
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


class Run:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.pg = services.start_postgres()
        self.nats = services.start_nats()
        self.procs: list[subprocess.Popen] = []

    def database(self) -> str:
        return services.create_database(self.pg)

    def env(self, dsn: str, nats_url: str | None = None) -> dict:
        return dict(os.environ, SMARTMETER_HES_DB=dsn, SMARTMETER_NATS=nats_url or self.nats.url,
                    SMARTMETER_HES_KEK=str(self.work / "kek.hex"), PYTHONUNBUFFERED="1")

    def spawn(self, args: list[str], env: dict, log: str) -> subprocess.Popen:
        proc = subprocess.Popen([*SMARTMETER, *args], env=env, stdout=open(self.work / log, "w"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def ok(self, args: list[str], env: dict) -> str:
        done = subprocess.run([*SMARTMETER, *args], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise SystemExit(f"smartmeter {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def fleet(self, meters: int, env: dict, *extra: str) -> dict:
        manifest = self.work / "fleet.json"
        manifest.unlink(missing_ok=True)
        proc = self.spawn(["sim", "fleet", "--meters", str(meters), "--base-port", "10100", "--manifest",
                           str(manifest), *extra], env, "fleet.log")
        while not manifest.exists():
            if proc.poll() is not None:
                raise SystemExit((self.work / "fleet.log").read_text())
            time.sleep(0.2)
        return json.loads(manifest.read_text()) | {"pid": proc.pid}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []

    def close(self) -> None:
        self.stop()
        self.pg.close()
        self.nats.close()


async def _wait_campaign(dsn: str, campaign: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while await conn.fetchval("SELECT count(*) FROM job WHERE campaign_id = $1 AND state = 'queued'", campaign):
            await asyncio.sleep(0.1)
        failed = await conn.fetch("SELECT error FROM job WHERE campaign_id = $1 AND state = 'failed' LIMIT 3", campaign)
        if failed:
            raise SystemExit(f"campaign {campaign}: jobs failed, the figures would mean nothing: "
                             f"{[r['error'] for r in failed]}")
    finally:
        await conn.close()


def campaign(run: Run, env: dict, dsn: str) -> tuple[float, int]:
    out = run.ok(["hes", "campaign", "start"], env)
    number = int(re.search(r"campaign (\d+)", out).group(1))
    began = time.monotonic()
    asyncio.run(_wait_campaign(dsn, number))
    return time.monotonic() - began, number


# ------------------------------------------------------------------------------------- 1


async def bare_sessions(manifest: dict, concurrency: int) -> int:
    """The same sessions as the worker's, by a bare asyncio loop; returns how many succeeded."""
    from smartmeter.dlms.client import ClientSecurity, CounterStore
    from smartmeter.hes.client import MeterClient
    from smartmeter.hes.connection import WrapperLink

    queue: asyncio.Queue = asyncio.Queue()
    for m in manifest["meters"]:
        queue.put_nowait(m)
    done = 0
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)

    async def one() -> None:
        nonlocal done
        while not queue.empty():
            m = queue.get_nowait()
            # the worker's sessions came first: continue far above its counters
            security = ClientSecurity(mechanism=5, suite=0, policy=m["policy"], client_system_title=b"SMH\0\0\0\0\2",
                                      server_system_title=bytes.fromhex(m["system_title"]), ek=bytes.fromhex(m["ek"]),
                                      ak=bytes.fromhex(m["ak"]), invocation_counter=CounterStore(1_000_000))
            async with MeterClient(WrapperLink(m["host"], m["port"], 1, 1), mechanism=5, security=security) as c:
                await c.get("0-0:1.0.0.255", 2, class_id=8)
                for obis in ("1-0:1.8.0.255", "1-0:2.8.0.255"):
                    await c.get(obis, 2, class_id=3)
                    await c.get(obis, 3, class_id=3)
                for log in ("1-0:99.1.0.255", "0-0:99.98.0.255"):  # the load profile, the standard event log
                    await c.get(log, 3, class_id=7)
                    await c.profile(log, from_time=since, rows=True)
            done += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


async def bare_read_sessions(manifest: dict, concurrency: int, until: asyncio.Event | None = None) -> int:
    """The worker's own session code (`read_session`: the same requests, the readings and
    events as the worker stores them) in a bare loop: counters in memory, results dropped.
    Each meter once; with `until`, the meters over and over until it is set (a pass's
    counters above the last's), the sessions under way then ending."""
    from smartmeter.hes.fleet.session import ReadPlan, Timeouts, read_session
    from smartmeter.hes.store.pg import SessionGrant

    queue: asyncio.Queue = asyncio.Queue()
    for m in manifest["meters"]:
        queue.put_nowait((m, 0))
    done = 0

    async def refill(n: int):
        raise RuntimeError("a block of a million counters ran out")

    async def one() -> None:
        nonlocal done
        while not queue.empty() and not (until is not None and until.is_set()):
            m, passes = queue.get_nowait()
            if until is not None:
                queue.put_nowait((m, passes + 1))
            first = 2_000_000 + passes * 1_000  # a session takes about 15
            grant = SessionGrant(
                meter_id=m["index"], serial=m["serial"], system_title=bytes.fromhex(m["system_title"]),
                host=m["host"], port=m["port"], cell=m["cell"], client_sap=1, server_sap=1, mechanism=5, suite=0,
                policy=m["policy"], capabilities={}, keys={"ek": bytes.fromhex(m["ek"]), "ak": bytes.fromhex(m["ak"])},
                new_keys={}, key_generation=1, lease_token=0, counter_block=(first, first + 999), rx_last=None,
                marks={})
            await read_session(grant, ReadPlan(), Timeouts(), b"SMH\0\0\0\0\3", refill)
            done += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


def _bare_process(manifest_path: str, concurrency: int, kind: str = "client") -> None:
    manifest = json.loads(Path(manifest_path).read_text())
    loop = bare_sessions if kind == "client" else bare_read_sessions
    began = os.times()  # after the imports and the manifest: the sessions' CPU only
    done = asyncio.run(loop(manifest, concurrency))
    ended = os.times()
    print(json.dumps({"done": done, "cpu_s": ended.user + ended.system - began.user - began.system,
                      "user_s": ended.user - began.user}))


def _beside_process(manifest_path: str, concurrency: int) -> None:
    """The session loop beside a worker: ready after its imports ("ready" on stdout), its
    sessions from "go" on stdin until "stop"; then its sessions and their CPU."""
    manifest = json.loads(Path(manifest_path).read_text())
    print("ready", flush=True)
    sys.stdin.readline()

    async def main() -> tuple[int, os.times_result]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, sys.stdin.readline).add_done_callback(lambda _: stop.set())
        began = os.times()
        return await bare_read_sessions(manifest, concurrency, until=stop), began

    done, began = asyncio.run(main())
    ended = os.times()
    print(json.dumps({"done": done, "cpu_s": ended.user + ended.system - began.user - began.system,
                      "user_s": ended.user - began.user}), flush=True)


def _calling(function: str, *args) -> list[str]:
    """The command line of a Python process that runs `hes_scale.function(*args)`."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            f"import hes_scale; hes_scale.{function}(*{args!r})"]


def _in_own_process(what: str, function: str, *args, env: dict | None = None) -> dict:
    """`hes_scale.function(*args)` in a process of its own; the JSON line it prints last."""
    out = subprocess.run(_calling(function, *args), capture_output=True, text=True, timeout=600, env=env)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"{what} failed: {out.stderr[-2000:]}") from None


def _import_unthrottled(run: Run, env: dict, manifest: Path | None = None) -> None:
    """The fleet (or the meters of `manifest`) into the store with cells that never hold a
    session back."""
    run.ok(["hes", "db", "import-fleet", str(manifest or run.work / "fleet.json"), "--max-sessions", "1000",
            "--connects-per-s", "100000"], env)


def _bare(run: Run, concurrency: int, kind: str, meters: int) -> dict:
    """One bare loop in a process of its own, as the worker has one."""
    began = time.monotonic()
    result = _in_own_process(f"the bare {kind} loop", "_bare_process", str(run.work / "fleet.json"),
                             concurrency, kind)
    wall = time.monotonic() - began
    if result["done"] != meters:
        raise SystemExit(f"the bare {kind} loop read {result['done']} of {meters} meters")
    return {"sessions": meters, "cpu_s": round(result["cpu_s"], 2), "user_s": round(result["user_s"], 2),
            "wall_s": round(wall, 2), "sessions_per_cpu_s": round(meters / result["cpu_s"], 1)}


def _round(run: Run, meters: int, concurrency: int) -> dict:
    """One round of part 1: the worker, then the two bare loops, on a fleet and a database of their own."""
    dsn = run.database()
    env = run.env(dsn)
    run.fleet(meters, env)
    _import_unthrottled(run, env)
    # engine: one worker with the same concurrency
    worker = run.spawn(["hes", "worker", "--concurrency", str(concurrency), "--no-pushes"], env, "worker1.log")
    time.sleep(2.0)
    base_worker, base_user = tree_cpu([worker.pid]), tree_cpu([worker.pid], user_only=True)
    base_infra = tree_cpu(services_pids(run))
    wall, number = campaign(run, env, dsn)
    worker_cpu = tree_cpu([worker.pid]) - base_worker
    worker_user = tree_cpu([worker.pid], user_only=True) - base_user
    infra_cpu = tree_cpu(services_pids(run)) - base_infra
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    client_loop = _bare(run, concurrency, "client", meters)
    session_loop = _bare(run, concurrency, "session", meters)
    engine = _engine_alone(run, meters, concurrency)
    run.stop()
    return {"bare_client_loop": client_loop, "bare_session_loop": session_loop,
            "worker": {"sessions": meters, "cpu_s": round(worker_cpu, 2), "user_s": round(worker_user, 2),
                       "wall_s": round(wall, 2), "sessions_per_cpu_s": round(meters / worker_cpu, 1)},
            "engine_alone": engine, "postgresql_and_nats_cpu_s": round(infra_cpu, 2)}


def _side_by_side(run: Run, meters: int, concurrency: int) -> dict:
    """The worker and the session loop at the same time, on two halves of one fleet: the same
    machine, PostgreSQL and NATS load, and fleet for both. The loop goes from just before the
    campaign starts until its last outcome, reading its half over and over."""
    dsn = run.database()
    env = run.env(dsn)
    document = run.fleet(2 * meters, env)
    halves = [run.work / "fleet-worker.json", run.work / "fleet-loop.json"]
    for half, part in zip(halves, (document["meters"][:meters], document["meters"][meters:])):
        half.write_text(json.dumps({**{k: v for k, v in document.items() if k != "pid"}, "meters": part}))
    _import_unthrottled(run, env, halves[0])
    worker = run.spawn(["hes", "worker", "--concurrency", str(concurrency), "--no-pushes"], env, "worker-beside.log")
    loop = subprocess.Popen(_calling("_beside_process", str(halves[1]), concurrency), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if loop.stdout.readline().strip() != "ready":
            raise SystemExit(f"the session loop beside the worker failed: {loop.stderr.read()[-2000:]}")
        time.sleep(2.0)
        base_worker = tree_cpu([worker.pid])
        loop.stdin.write("go\n")
        loop.stdin.flush()
        wall, _ = campaign(run, env, dsn)
        worker_cpu = tree_cpu([worker.pid]) - base_worker
        loop.stdin.write("stop\n")
        loop.stdin.flush()
        out, err = loop.communicate(timeout=120)
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SystemExit(f"the session loop beside the worker failed: {err[-2000:]}") from None
    finally:
        if loop.poll() is None:
            loop.kill()
    worker.send_signal(signal.SIGTERM)
    worker.wait(30)
    run.stop()
    worker_rate = meters / worker_cpu
    loop_rate = result["done"] / result["cpu_s"]
    return {"worker": {"sessions": meters, "cpu_s": round(worker_cpu, 2), "wall_s": round(wall, 2),
                       "sessions_per_cpu_s": round(worker_rate, 1)},
            "session_loop": {"sessions": result["done"], "cpu_s": round(result["cpu_s"], 2),
                             "sessions_per_cpu_s": round(loop_rate, 1)},
            "engine_overhead": round(loop_rate / worker_rate - 1, 3)}


def per_core(run: Run, meters: int, concurrency: int, rounds: int) -> dict:
    """Part 1 in rounds: the worker and the session loop side by side (at the same time), then
    the worker, the client loop, the session loop and the engine alone one after the other. A
    figure of one run moves by several points with what else the machine does in those
    seconds, so each ratio is taken within a round and the median of the rounds given."""
    done = []
    for _ in range(rounds):
        beside = _side_by_side(run, meters, concurrency)
        done.append(_round(run, meters, concurrency) | {"side_by_side": beside})

    def median(figure) -> float:
        return round(statistics.median(figure(r) for r in done), 3)

    def rate(r: dict, part: str) -> float:
        return r[part]["sessions_per_cpu_s"]

    return {
        "meters": meters, "concurrency": concurrency, "rounds": rounds,
        "side_by_side_worker_sessions_per_cpu_s": median(lambda r: r["side_by_side"]["worker"]["sessions_per_cpu_s"]),
        "side_by_side_session_loop_sessions_per_cpu_s": median(
            lambda r: r["side_by_side"]["session_loop"]["sessions_per_cpu_s"]),
        "engine_overhead": median(lambda r: r["side_by_side"]["engine_overhead"]),
        "bare_client_loop_sessions_per_cpu_s": median(lambda r: rate(r, "bare_client_loop")),
        "bare_session_loop_sessions_per_cpu_s": median(lambda r: rate(r, "bare_session_loop")),
        "worker_sessions_per_cpu_s": median(lambda r: rate(r, "worker")),
        "engine_overhead_one_after_the_other": median(lambda r: rate(r, "bare_session_loop") / rate(r, "worker") - 1),
        # the same in user CPU alone: the kernel's share of sending and receiving differs from
        # one machine to another far more than the interpreter's work does
        "engine_overhead_one_after_the_other_user_cpu": median(
            lambda r: r["worker"]["user_s"] / r["bare_session_loop"]["user_s"] - 1),
        "overhead_against_the_client_loop": median(lambda r: rate(r, "bare_client_loop") / rate(r, "worker") - 1),
        "engine_alone_cpu_us_per_job": median(lambda r: r["engine_alone"]["cpu_us_per_job"]),
        "engine_alone_against_a_session": median(
            lambda r: r["engine_alone"]["cpu_us_per_job"] * rate(r, "bare_session_loop") / 1e6),
        "per_round": [{"side_by_side": r["side_by_side"]["engine_overhead"],
                       "side_by_side_worker": r["side_by_side"]["worker"]["sessions_per_cpu_s"],
                       "side_by_side_session_loop": r["side_by_side"]["session_loop"]["sessions_per_cpu_s"],
                       "worker": rate(r, "worker"), "session_loop": rate(r, "bare_session_loop"),
                       "client_loop": rate(r, "bare_client_loop"),
                       "one_after_the_other": round(rate(r, "bare_session_loop") / rate(r, "worker") - 1, 3),
                       "engine_alone_us": r["engine_alone"]["cpu_us_per_job"],
                       "worker_wall_s": r["worker"]["wall_s"],
                       "postgresql_and_nats_cpu_s": r["postgresql_and_nats_cpu_s"]} for r in done],
        "what": "complete HLS 5 read sessions per CPU second of the head-end process: one hes worker (job, "
                "claim, counters, lease, readings and events stored) against bare asyncio loops doing the same "
                "requests: with MeterClient calls (client loop) and with the worker's own session code, "
                "read_session (session loop). The engine's overhead: the worker against the session loop "
                "running at the same time on the other half of one fleet (side by side: the same machine load "
                "for both); one after the other as well (the worker's run carries PostgreSQL and NATS on the "
                "same cores, the loops' runs do not). The engine alone: a worker's CPU per job when every "
                "session is the result of its first, real one replayed (JetStream, the store, leases, counters, "
                "no meter traffic), against the session loop's CPU per session. Medians of the rounds' figures",
    }


def _engine_process(dsn: str, nats_url: str, kek: str, meters: int, concurrency: int) -> None:
    """The engine alone, in a process of its own: a worker on a campaign already published,
    whose every session is the result of its first one (a real session with the fleet)
    replayed; its CPU per job from its first outcome to its last."""
    import dataclasses

    from smartmeter.hes.fleet import worker as worker_module
    from smartmeter.hes.fleet.broker import Broker
    from smartmeter.hes.store.pg import FleetStore, KeyVault

    real_session = worker_module.read_session
    first: list = []

    async def replayed(grant, *args, **kwargs):
        if not first:
            first.append(await real_session(grant, *args, **kwargs))
        await asyncio.sleep(0)  # a session yields to the loop at least once
        return dataclasses.replace(first[0])

    worker_module.read_session = replayed

    async def main() -> dict:
        store = await FleetStore.open(dsn, KeyVault.from_file(Path(kek)))
        broker = await Broker.connect(nats_url)
        worker = worker_module.Worker(store, broker, worker_module.WorkerSettings(concurrency=concurrency))
        running = asyncio.create_task(worker.run())
        while worker.stats.done < 1:
            await asyncio.sleep(0.001)
        began, done_before = time.process_time(), worker.stats.done
        while worker.stats.done + worker.stats.failed < meters:
            await asyncio.sleep(0.001)
        cpu = time.process_time() - began
        jobs = worker.stats.done - done_before
        worker.stop()
        await running
        await broker.close()
        await store.close()
        return {"jobs": jobs, "failed": worker.stats.failed, "cpu_s": cpu}

    print(json.dumps(asyncio.run(main())))


def _engine_alone(run: Run, meters: int, concurrency: int) -> dict:
    """The same meters' first campaign in a database of its own, taken by the engine alone
    (`_engine_process`): the session replayed is a first read, as the worker's were."""
    dsn = run.database()
    env = run.env(dsn)
    _import_unthrottled(run, env)
    run.ok(["hes", "campaign", "start", "--name", "engine alone"], env)
    result = _in_own_process("the engine alone", "_engine_process", dsn, run.nats.url,
                             env["SMARTMETER_HES_KEK"], meters, concurrency, env=env)
    if result["failed"]:
        raise SystemExit(f"the engine alone failed {result['failed']} jobs")
    return {"jobs": result["jobs"], "cpu_s": round(result["cpu_s"], 3),
            "cpu_us_per_job": round(1e6 * result["cpu_s"] / result["jobs"], 1)}


def services_pids(run: Run) -> list[int]:
    pids = [run.nats.proc.pid]
    postmaster = run.pg.proc.pid if getattr(run.pg, "proc", None) else None
    if postmaster:
        pids += [postmaster, *children(postmaster)]
    return pids


# ------------------------------------------------------------------------------------- 2


def ten_thousand(run: Run, meters: int) -> dict:
    dsn = run.database()
    env = run.env(dsn)
    run.fleet(meters, env, "--cells", "4")
    run.ok(["hes", "db", "import-fleet", str(run.work / "fleet.json"), "--max-sessions", "64",
            "--connects-per-s", "5000"], env)
    for k in range(3):
        run.spawn(["hes", "worker", "--concurrency", "24", "--no-pushes"], env, f"worker{k}.log")
    time.sleep(2.0)
    wall, number = campaign(run, env, dsn)
    run.stop()
    return {"meters": meters, "workers": 3, "wall_s": round(wall, 2), "sessions_per_s": round(meters / wall, 1),
            "what": "one campaign's wall time, start to the last outcome, three hes worker processes, the fleet in "
                    "one process, all on this machine"}


# ------------------------------------------------------------------------------------- 3


INGESTING_WORKERS = 2  # every worker ingests pushes; two, as the reads are spread over several


def pushes(run: Run, meters: int, per_meter: int, rate: float) -> dict:
    from push_ingest import interval_push
    from smartmeter.transport.wrapper import WrapperFrame

    dsn = run.database()
    env = run.env(dsn)
    fleet = [{"serial": f"P{i:05d}", "system_title": f"{0x5055534800000000 + i:016X}", "host": "127.0.0.1",
              "port": 9, "ek": secrets.token_hex(16), "ak": secrets.token_hex(16)} for i in range(meters)]
    (run.work / "fleet.json").write_text(json.dumps({"meters": fleet}))
    run.ok(["hes", "db", "import-fleet", str(run.work / "fleet.json")], env)
    for k in range(INGESTING_WORKERS):
        run.spawn(["hes", "worker", "--concurrency", "1"], env, f"ingest{k}.log")
    for k in range(2):
        run.spawn(["hes", "listen", "--udp", "0", "--nats", run.nats.url, "--store", dsn, "--kek",
                   str(run.work / "kek.hex")], env, f"listener{k}.log")
    ports = []
    while len(ports) < 2:
        ports = [int(p) for k in range(2) for p in
                 re.findall(r"UDP 127\.0\.0\.1:(\d+)", (run.work / f"listener{k}.log").read_text())]
        time.sleep(0.2)
    frames = []
    for counter in range(1, per_meter + 1):
        for m in fleet:
            title, ek, ak = bytes.fromhex(m["system_title"]), bytes.fromhex(m["ek"]), bytes.fromhex(m["ak"])
            apdu = interval_push(title, ek, ak, counter, counter, suite=0)  # the model's Interval 1 push: 14 values
            frames.append(WrapperFrame(1, 0x66, apdu).to_bytes())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    began = time.monotonic()
    for n, frame in enumerate(frames):
        sock.sendto(frame, ("127.0.0.1", ports[n % 2]))
        ahead = began + (n + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    sent = time.monotonic() - began

    async def outcome():
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 120
            while await conn.fetchval("SELECT count(*) FROM raw_push") < len(frames) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return await conn.fetchrow(
                """SELECT count(*) AS n, count(DISTINCT (system_title, invocation_counter)) AS distinct_n,
                          count(*) FILTER (WHERE undecoded IS NOT NULL) AS undecoded,
                          (SELECT count(*) FROM reading) AS readings,
                          extract(epoch FROM max(stored) - min(received)) AS span,
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored - received)) AS p50,
                          percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored - received)) AS p99
                   FROM raw_push""")
        finally:
            await conn.close()

    row = asyncio.run(outcome())
    run.stop()
    return {"pushes": len(frames), "offered_per_s": rate, "sent_in_s": round(sent, 2), "stored": row["n"],
            "stored_once": row["n"] == row["distinct_n"], "undecoded": row["undecoded"], "readings": row["readings"],
            "stored_per_s": round(row["n"] / float(row["span"]), 1),
            "latency_p50_s": round(float(row["p50"]), 3), "latency_p99_s": round(float(row["p99"]), 3),
            "what": "authentic Interval 1 pushes (14 values) over UDP to two hes listen --nats, one NATS server, "
                    "stored raw and decoded into readings by the ingesters of two workers; latency is stored minus "
                    "the listener's receive time"}


# ---------------------------------------------------------------------------------- 4, 5


async def copy_rows(dsn: str, rows: int) -> dict:
    from smartmeter.hes.store.pg import FleetStore, KeyVault

    store = await FleetStore.open(dsn, KeyVault(bytes(32)), migrate=True)
    month = dt.date(2026, 3, 1)
    async with store.pool.acquire() as conn:
        await FleetStore.ensure_partition(conn, month)
        base = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
        series = 1000
        per = rows // series
        records = [(s, base + dt.timedelta(minutes=15 * k), k * 10 + s, 0, base)
                   for s in range(1, series + 1) for k in range(per)]
        began = time.perf_counter()
        await conn.copy_records_to_table("reading", records=records,
                                         columns=("series_id", "time", "raw", "quality", "received"))
        took = time.perf_counter() - began
    await store.close()
    return {"rows": len(records), "s": round(took, 2), "rows_per_s": round(len(records) / took),
            "what": "asyncpg copy_records_to_table into the partitioned readings table (primary key and BRIN "
                    "index in place), one monthly partition"}


async def range_query(dsn: str, series: int, days: int, queries: int) -> dict:
    from smartmeter.hes.store.pg import FleetStore, KeyVault

    store = await FleetStore.open(dsn, KeyVault(bytes(32)), migrate=True)
    first = dt.date(2025, 1, 1)
    month = first
    async with store.pool.acquire() as conn:
        for _ in range(days // 28 + 2):
            await FleetStore.ensure_partition(conn, month)
            month = dt.date(month.year + (month.month == 12), month.month % 12 + 1, 1)
        began = time.perf_counter()
        # the server fills it (generate_series): what is measured is the query, not the loading
        for s in range(1, series + 1, 60):
            await conn.execute(
                """INSERT INTO reading (series_id, time, raw, quality, received)
                   SELECT s, '2025-01-01 00:00+00'::timestamptz + make_interval(mins => 15 * k), k, 0, now()
                   FROM generate_series($1::int, $2::int) s, generate_series(0, $3::int - 1) k""",
                s, min(series, s + 59), days * 96)
        await conn.execute("ANALYZE reading")
        loaded = time.perf_counter() - began
        total = await conn.fetchval("SELECT count(*) FROM reading")
        rng = random.Random(1)
        times = []
        for _ in range(queries):
            s = rng.randrange(1, series + 1)
            start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=rng.randrange(days - 30))
            t0 = time.perf_counter()
            rows = await conn.fetch("SELECT time, raw, quality FROM reading WHERE series_id = $1 AND time >= $2 "
                                    "AND time < $3 ORDER BY time", s, start, start + dt.timedelta(days=30))
            times.append(time.perf_counter() - t0)
            assert len(rows) == 30 * 96
    await store.close()
    times.sort()
    return {"table_rows": total, "load_s": round(loaded, 1), "queries": queries, "rows_per_query": 30 * 96,
            "p50_ms": round(1000 * statistics.median(times), 2), "p95_ms": round(1000 * times[int(0.95 * queries)], 2),
            "what": "SELECT of one series' 30 days (2,880 rows) by primary key (series, time), asyncpg, "
                    "the table's monthly partitions"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", dest="json_file", default=None)
    args = parser.parse_args()
    q = args.quick
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="hes-scale-") as tmp:
        run = Run(Path(tmp))
        try:
            results["sessions_per_core"] = per_core(run, 600 if q else 3000, 64, 1 if q else 3)
            print(json.dumps({"sessions_per_core": results["sessions_per_core"]}), flush=True)
            results["ten_thousand_meters"] = ten_thousand(run, 2000 if q else 10_000)
            print(json.dumps({"ten_thousand_meters": results["ten_thousand_meters"]}), flush=True)
            results["pushes"] = pushes(run, 100, 20 if q else 100, 2500.0)
            print(json.dumps({"pushes": results["pushes"]}), flush=True)
            results["copy"] = asyncio.run(copy_rows(run.database(), 200_000 if q else 1_000_000))
            print(json.dumps({"copy": results["copy"]}), flush=True)
            results["range_query"] = asyncio.run(range_query(run.database(), 60 if q else 1440,
                                                             60 if q else 365, 200))
            print(json.dumps({"range_query": results["range_query"]}), flush=True)
        finally:
            run.close()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_file:
        Path(args.json_file).write_text(text)


if __name__ == "__main__":
    main()
