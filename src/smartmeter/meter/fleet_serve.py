"""Serving a simulated fleet: one TCP port per meter (IEC 62056-47 wrapper), the injected
faults, the bounds, the report file, and a second OS process when asked (docs/fleet.md).

Each connection is an asyncio protocol feeding `WrapperDecoder`, with the wrapper sessions
of the meter's own transport (`smartmeter.transport.aio`) between it and the meter's
`DlmsServer`. A connection has at most one request in hand: while an answer is held back
(--latency, a slow meter) or the peer does not take what was written, reading pauses, so
nothing a peer sends piles up. Bounds: a few connections per meter, a cap per process,
idle connections closed after a time-out.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
import random
import resource
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from smartmeter.errors import DecodeError, SmartmeterError
from smartmeter.meter import fleet
from smartmeter.meter.fleet_meter import build_server, fleet_clock
from smartmeter.meter.fleet_report import CellRecord, MeterRecord, encode, merge, report, write_atomically
from smartmeter.ratelog import RateLimitedLog
from smartmeter.transport.aio import LAN, WRAPPER_MAX_PAYLOAD, _WrapperSessions
from smartmeter.transport.wrapper import WrapperDecoder

log = logging.getLogger(__name__)

REPORT_PERIOD = 1.0  # s between report files
SWEEP_PERIOD = 1.0  # s between looks for idle connections
MAX_QUEUED_FRAMES = 8  # requests a peer may send ahead of the answers; more closes the connection
FILE_SLACK = 64  # descriptors besides sockets: the interpreter, files, pipes
MAX_ASSOCIATIONS_PER_CONNECTION = 2  # one per client (management, public)


class FleetProblem(SmartmeterError):
    """The fleet cannot run as asked (ports, open-file limit); one line with the remedy."""


@dataclass(frozen=True)
class FleetLimits:
    meter_connections: int = 4  # per meter
    process_connections: int = 2048  # per OS process of the fleet
    idle_timeout: float = 60.0  # s without a request, then the connection is closed


def allocate_ports(host: str, base_port: int, meters: int) -> tuple[int, ...]:
    """`meters` ports from `base_port` upward that can be bound now, skipping those another
    program listens on (a broker's, a database's), so that a fleet's block of ports need not
    be free as a whole. FleetProblem when they run past 65535."""
    ports: list[int] = []
    port = base_port
    while len(ports) < meters:
        if port > 65535:
            raise FleetProblem(f"{meters} meters from port {base_port} go past port 65535 ({len(ports)} free ports "
                               "found): choose a lower --base-port")
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            ports.append(port)
        except OSError:
            pass
        finally:
            probe.close()
        port += 1
    return tuple(ports)


def raise_file_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; FleetProblem if `needed` does not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if needed > limit:
        raise FleetProblem(f"this needs about {needed} open files per process but the hard limit is {limit}: "
                           f"raise it (ulimit -Hn), or use fewer --meters, --processes 2 or a lower --max-connections")
    return limit


def files_needed(meters_in_process: int, limits: FleetLimits) -> int:
    return meters_in_process + limits.process_connections + FILE_SLACK


class FleetConnection(asyncio.Protocol):
    """One TCP connection to one meter."""

    def __init__(self, process: "FleetProcess", index: int) -> None:
        self.process = process
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.decoder = WrapperDecoder(max_payload=WRAPPER_MAX_PAYLOAD)
        self.pending: collections.deque = collections.deque()
        self.sessions: _WrapperSessions | None = None
        self.busy = False  # an answer is being held back
        self.write_paused = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_activity = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        process = self.process
        self.last_activity = process.loop.time()
        if not process.admit(self):
            transport.abort()
            self.closed = True
            return
        record = process.records[self.index]
        record.connections += 1
        record.changed()
        if "silent" not in process.faults[self.index]:
            self.sessions = _WrapperSessions(process.server(self.index), LAN, process.say, MAX_ASSOCIATIONS_PER_CONNECTION)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.process.loop.time()
        if self.sessions is None:
            return  # a silent meter: everything is taken, nothing is answered
        try:
            frames = self.decoder.feed(data)
        except DecodeError as exc:
            self.process.say("fleet.bad_stream", "meter %d: closing a connection: %s", self.index, exc,
                             level=logging.INFO)
            self.abort()
            return
        self.pending.extend(frames)
        if len(self.pending) > MAX_QUEUED_FRAMES:
            self.process.say("fleet.flood", "meter %d: closing a connection that sent more than %d requests ahead "
                             "of the answers", self.index, MAX_QUEUED_FRAMES, level=logging.INFO)
            self.abort()
            return
        self._pump()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.pending.clear()
        if self.sessions is not None:
            self.sessions.close()  # the associations end with the connection (events for the observation)
        self.process.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.closed:
            self.transport.resume_reading()
            self._pump()

    # -- answering ------------------------------------------------------------------------------
    def _pump(self) -> None:
        process = self.process
        while self.pending and not self.busy and not self.write_paused and not self.closed:
            frame = self.pending.popleft()
            if process.loss and process.rng.random() < process.loss:
                record = process.records[self.index]
                record.dropped += 1
                record.changed()
                self.abort()
                return
            reply = self.sessions.answer(frame)
            if reply is None:
                continue
            delay = process.delay_of(self.index)
            if delay > 0:
                self.busy = True
                self.transport.pause_reading()
                self.timer = process.loop.call_later(delay, self._deliver, reply.to_bytes())
                return
            self.transport.write(reply.to_bytes())

    def _deliver(self, data: bytes) -> None:
        self.timer = None
        self.busy = False
        if self.closed:
            return
        self.transport.write(data)
        if not self.write_paused:
            self.transport.resume_reading()
            self._pump()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()


class FleetProcess:
    """The meters one OS process serves, their observation and their connections."""

    def __init__(self, scenario: fleet.FleetScenario, indexes: list[int], limits: FleetLimits, *,
                 part: str = "all", with_counters: bool = False) -> None:
        self.scenario = scenario
        self.indexes = indexes
        self.limits = limits
        self.part = part
        self.with_counters = with_counters
        self.clock = fleet_clock(scenario)
        self.say = RateLimitedLog(log)
        self.rng = random.Random(scenario.seed * 2 + (1 if part.endswith("1") else 0))
        self.loss = scenario.loss
        self.cells = {scenario.cell_of(i): CellRecord(scenario.cell_of(i)) for i in indexes}
        self.changes = [0]  # bumped by every change of a record: an unchanged report is not encoded again
        self.records = {i: MeterRecord(i, fleet.serial_of(scenario.seed, i), self.cells[scenario.cell_of(i)],
                                       self.changes) for i in indexes}
        self._encoded: tuple[int, bytes] | None = None
        self.faults = {i: frozenset(scenario.faults_of(i)) for i in indexes}
        self._servers: dict = {}
        self.connections: set[FleetConnection] = set()
        self.per_meter: collections.Counter = collections.Counter()
        self.refused_connections = 0
        self.listeners: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def server(self, i: int):
        server = self._servers.get(i)
        if server is None:
            server = self._servers[i] = build_server(self.scenario, i, self.clock, self.records[i], self.say)
        return server

    def delay_of(self, i: int) -> float:
        return self.scenario.latency + (self.scenario.slow_delay if "slow" in self.faults[i] else 0.0)

    def admit(self, connection: FleetConnection) -> bool:
        if len(self.connections) >= self.limits.process_connections:
            self.refused_connections += 1
            self.say("fleet.process_full", "all %d connections of this fleet process are taken; new connection to "
                     "meter %d refused", self.limits.process_connections, connection.index)
            return False
        if self.per_meter[connection.index] >= self.limits.meter_connections:
            self.refused_connections += 1
            self.say("fleet.meter_full", "meter %d holds %d connections already; new connection refused",
                     connection.index, self.limits.meter_connections, level=logging.INFO)
            return False
        self.connections.add(connection)
        self.per_meter[connection.index] += 1
        return True

    def forget(self, connection: FleetConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.per_meter[connection.index] -= 1
            if self.per_meter[connection.index] <= 0:
                del self.per_meter[connection.index]

    def sweep(self) -> None:
        timeout = self.limits.idle_timeout
        if timeout <= 0:
            return
        now = self.loop.time()
        idle = [c for c in self.connections if now - c.last_activity > timeout]
        for connection in idle:
            connection.abort()
        if idle:
            self.say("fleet.idle", "%d connection(s) closed after %g s without a request", len(idle), timeout,
                     level=logging.INFO)

    async def listen(self) -> None:
        self.loop = asyncio.get_running_loop()
        host = self.scenario.host
        for i in self.indexes:
            port = self.scenario.port_of(i)
            try:
                listener = await self.loop.create_server(lambda i=i: FleetConnection(self, i), host, port,
                                                         backlog=64, reuse_address=True)
            except OSError as exc:
                await self.close()
                raise FleetProblem(f"cannot listen on {host}:{port} (meter {i}): {exc.strerror or exc}; "
                                   f"choose another --base-port") from None
            self.listeners.append(listener)

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections):
            connection.abort()
        await asyncio.sleep(0)  # connection_lost of each aborted connection: the associations end
        self.listeners.clear()

    def report(self, final: bool = False) -> dict:
        return report([self.records[i] for i in self.indexes], self.cells, with_counters=self.with_counters,
                      part=self.part, final=final)

    def encoded_report(self) -> bytes:
        """The running report's JSON, encoded again only after a change (10 000 meters take 0.1 s)."""
        if self._encoded is None or self._encoded[0] != self.changes[0]:
            self._encoded = (self.changes[0], encode(self.report()))
        return self._encoded[1]


def part_path(report_path: Path, part: int) -> Path:
    return report_path.with_name(f"{report_path.name}.part{part}")


async def _periodically(period: float, action) -> None:
    while True:
        await asyncio.sleep(period)
        action()


async def serve(process: FleetProcess, report_path: Path | None, stop: asyncio.Event, *,
                on_ready=lambda: None, merge_with: Path | None = None, duration: float | None = None,
                only_changes: bool = False) -> None:
    """Listen, serve until `stop` (or `duration` s), write the report every second and at the end.
    With `merge_with`, the report merges this process's part with the one the other process
    writes there. With `only_changes` (the second process's part) a report is written only
    when it changed, so the merging process need not merge the same again."""
    written = [None]

    merged: dict = {}  # (own changes, the part's mtime) -> the merged report's bytes, while running

    def write(final: bool = False) -> None:
        if report_path is None:
            return
        if merge_with is not None:
            key = (process.changes[0], _mtime(merge_with))
            if final or key not in merged:
                merged.clear()
                merged[key] = encode(merge([process.report(final), _read_part(merge_with)], final))
            write_atomically(report_path, merged[key])
        elif final:
            write_atomically(report_path, process.report(final))
        elif not only_changes or written[0] != process.changes[0]:
            written[0] = process.changes[0]
            write_atomically(report_path, process.encoded_report())

    await process.listen()
    tasks = [asyncio.ensure_future(_periodically(SWEEP_PERIOD, process.sweep)),
             asyncio.ensure_future(_periodically(REPORT_PERIOD, write))]
    try:
        on_ready()
        write()
        if duration is None:
            await stop.wait()
        else:
            try:
                await asyncio.wait_for(stop.wait(), duration)
            except asyncio.TimeoutError:
                pass
    finally:
        for task in tasks:
            task.cancel()
        await process.close()
        # the other process's final part, if it is still writing it, is waited for by the caller
        write(final=merge_with is None)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _read_part(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _child(scenario: fleet.FleetScenario, limits: FleetLimits, report_path: Path | None, with_counters: bool,
           conn) -> None:
    """The second process: the odd meters; its report goes to `<report>.part1`."""
    indexes = list(range(1, scenario.meters, 2))
    process = FleetProcess(scenario, indexes, limits, part="part1", with_counters=with_counters)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(asyncio.get_running_loop(), stop)
        await serve(process, part_path(report_path, 1) if report_path else None, stop,
                    on_ready=lambda: conn.send(("ready", "")), only_changes=True)

    try:
        asyncio.run(main())
    except FleetProblem as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - the parent must hear of any end
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run(scenario: fleet.FleetScenario, limits: FleetLimits, *, processes: int = 1, report_path: Path | None = None,
        with_counters: bool = False, on_ready=lambda: None, duration: float | None = None) -> dict:
    """Run the fleet until SIGTERM/SIGINT (or `duration` s); returns the final report.
    FleetProblem when it cannot start."""
    per_process = -(-scenario.meters // processes)
    raise_file_limit(files_needed(per_process, limits))
    if scenario.port_of(scenario.meters - 1) > 65535:
        raise FleetProblem(f"meters {scenario.meters} from port {scenario.base_port} go past port 65535: "
                           "choose a lower --base-port")
    child = None
    if processes == 2:
        if report_path is not None:
            part_path(report_path, 1).unlink(missing_ok=True)
        parent_end, child_end = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=_child, args=(scenario, limits, report_path, with_counters, child_end), daemon=False)
        child.start()
        child_end.close()
        indexes = list(range(0, scenario.meters, 2))
    else:
        indexes = list(range(scenario.meters))
    process = FleetProcess(scenario, indexes, limits, part="part0" if processes == 2 else "all",
                           with_counters=with_counters)

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _stop_on_signals(loop, stop)

        def ready() -> None:
            if child is not None:
                kind, message = parent_end.recv() if parent_end.poll(60) else ("error", "no answer in 60 s")
                if kind != "ready":
                    raise FleetProblem(f"the second fleet process did not start: {message}")
            on_ready()

        try:
            await serve(process, report_path, stop, on_ready=ready,
                        merge_with=part_path(report_path, 1) if child is not None and report_path else None,
                        duration=duration)
        finally:
            if child is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
                await loop.run_in_executor(None, child.join, 30)
        final = process.report(final=True)
        if child is not None and report_path is not None:
            final = merge([final, _read_part(part_path(report_path, 1))], final=True)
            write_atomically(report_path, final)
        return final

    started = time.monotonic()
    try:
        return asyncio.run(main())
    finally:
        if child is not None and child.is_alive():
            child.terminate()
            child.join(5)
        log.debug("fleet ran %.1f s", time.monotonic() - started)
