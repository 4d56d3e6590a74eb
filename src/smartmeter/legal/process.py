"""The legally relevant part in a process of its own.

The communication side (DLMS server, transports, CLI) and the legally relevant part do not
share an interpreter: the legal process owns the store, the measurement input and the
registers, and the only thing that crosses over is a declared command of the protective
interface, sent through a pipe. So nothing on the communication side can reach legal
state, and no load there (a flood of DLMS requests, a stuck socket) can delay metrology:
it runs on its own interpreter lock, on its own core where there is one.

If the communication side dies, the pipe closes and the legal process persists and exits.

The legal process is started as a fresh interpreter (`-I -S -B`) whose first code is the
stub `_BOOT` below: it compiles legal/loader.py from its bytes, and the loader compiles every
module of legal/ from the very source bytes it hashes, so no `.pyc` of legal/ is executed
there, and records what the platform loads (legal/platform.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartmeter.legal.interface import RECORD_TYPES, CommandRefused, LegalInterface, LegalProcessDown


# Commands cross as JSON data, never as pickles: the legal process only ever builds objects
# of the declared command classes (and the plain records they carry) from what it receives.
def encode_command(command: object) -> bytes:
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"type": type(value).__name__,
                    "fields": {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"{type(value).__name__} cannot cross the protective interface")

    return json.dumps(plain(command)).encode()


def _conforms(value: Any, hint: Any) -> bool:
    """Does a decoded value have the declared type of its field? (bool is not an int; an int
    is a float; tuples are checked item by item.)"""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint is str:
        return type(value) is str
    if origin is tuple:
        args = typing.get_args(hint)
        if type(value) is not tuple:
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
    return isinstance(hint, type) and isinstance(value, hint)


_HINTS: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    return hints


def check_fields(command: object) -> None:
    """CommandRefused unless every field of a declared command has its declared type."""
    cls = type(command)
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if not _conforms(getattr(command, f.name), hints[f.name]):
            raise CommandRefused(f"{cls.__name__}.{f.name}: not of its declared type")


def decode_command(raw: bytes, allowed: dict[str, type]) -> object:
    """Rebuild a command; anything but a declared type with its declared fields, each of its
    declared type, is refused (a malformed declared command has no effect either: P3/P4)."""
    def build(value: Any, top: bool) -> Any:
        if isinstance(value, dict):
            cls = allowed.get(value.get("type"))
            fields = value.get("fields")
            if cls is None or not isinstance(fields, dict) or set(fields) != {f.name for f in dataclasses.fields(cls)}:
                raise CommandRefused("not a command of the protective interface")
            values = {k: build(v, False) for k, v in fields.items()}
            hints = _field_types(cls)
            for name, field_value in values.items():
                if not _conforms(field_value, hints[name]):
                    raise CommandRefused(f"{cls.__name__}.{name}: not of its declared type")
            return cls(**values)
        if top:
            raise CommandRefused("not a command of the protective interface")
        if isinstance(value, list):
            return tuple(build(v, False) for v in value)
        return value

    try:
        return build(json.loads(raw), True)
    except (ValueError, TypeError, RecursionError):
        raise CommandRefused("not a command of the protective interface") from None


@dataclass(frozen=True)
class _Failure:
    kind: str  # "start", "refused" or "fault"
    message: str


def _call(legal, command: object) -> Any:
    try:
        return legal.execute(command)
    except CommandRefused as exc:
        return _Failure("refused", str(exc))
    except Exception:  # noqa: BLE001 - reported to the caller; the legal process stays up
        return _Failure("fault", traceback.format_exc(limit=3))


# The first code of the legal process, passed on the command line (no file is read for it).
_BOOT = (
    "import sys,json\n"
    "a=json.loads(sys.argv[1])\n"
    "sys.path[:]=a['path']\n"
    "p=a['legal']+'/loader.py'\n"
    "s=open(p,'rb').read()\n"
    "g={'__name__':'smartmeter.legal.loader','__file__':p,'__builtins__':__builtins__}\n"
    "sys.modules['smartmeter.legal.loader']=type(sys)('smartmeter.legal.loader')\n"
    "exec(compile(s,p,'exec',dont_inherit=True),g)\n"
    "sys.modules['smartmeter.legal.loader'].__dict__.update(g)\n"
    "g['main'](a,s)\n"
)
LEGAL_DIR = os.path.dirname(os.path.abspath(__file__))
PROCESS_MARKER = "smartmeter-legal"  # in the command line, so the process can be found (ps, tests)


def _launch(args: dict, path: list[str] | None = None) -> tuple[subprocess.Popen, Any]:
    """Start a legal process; -> (process, our end of its pipe)."""
    from multiprocessing import Pipe

    ours, theirs = Pipe()
    boot = dict(args, path=list(path if path is not None else sys.path), legal=LEGAL_DIR, fd=theirs.fileno())
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", "-c", _BOOT, json.dumps(boot), PROCESS_MARKER],
        pass_fds=(theirs.fileno(),), close_fds=True)
    theirs.close()
    return process, ours


def serve_fd(fd: int, data_dir: str, options: dict) -> None:
    from multiprocessing.connection import Connection

    _serve(Connection(fd), data_dir, options)


def answer_identify(fd: int, application_version: str) -> None:
    """Identify mode (for `smartmeter id`): send the software identification as this freshly
    started legal process sees it, then end."""
    from multiprocessing.connection import Connection

    from smartmeter.legal.interface import identify_software

    connection = Connection(fd)
    try:
        connection.send(identify_software(application_version, in_legal_process=True))
    except Exception as exc:  # noqa: BLE001 - the reason goes back as one line
        connection.send(_Failure("start", f"{type(exc).__name__}: {exc}"))
    connection.close()


def identify_in_legal_process(application_version: str = "", path: list[str] | None = None, timeout: float = 60.0):
    """The software identification computed by a fresh legal process (legal and platform
    parts exactly as a meter's legal process loads them). `path`: its sys.path."""
    process, connection = _launch({"mode": "identify", "application_version": application_version}, path)
    try:
        if not connection.poll(timeout):
            raise LegalProcessDown("the legal process did not identify itself in time")
        reply = connection.recv()
    except (EOFError, OSError) as exc:
        raise LegalProcessDown("the legal process ended before identifying itself") from exc
    finally:
        connection.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if isinstance(reply, _Failure):
        raise LegalProcessDown(f"the legally relevant part cannot start: {reply.message}")
    return reply


def _serve(connection, data_dir: str, options: dict) -> None:
    # Ctrl-C reaches the whole process group; the legal part ends when the communication
    # side closes the pipe, after persisting, never in the middle of a command.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.setswitchinterval(0.0005)  # the metering thread gets the interpreter often (I3-5)
    try:
        legal = LegalInterface(Path(data_dir), **options)
    except Exception as exc:  # noqa: BLE001 - the reason goes back to the starter as one line
        connection.send(_Failure("start", f"{type(exc).__name__}: {exc}"))
        return
    connection.send("ready")
    allowed = {cls.__name__: cls for cls in (*legal.commands, *RECORD_TYPES)}
    legal.start()
    try:
        while True:
            try:
                raw = connection.recv_bytes()
            except (EOFError, OSError):
                break  # the communication side is gone
            if not raw:
                break
            try:
                command = decode_command(raw, allowed)
            except CommandRefused as exc:
                legal.refuse_wire_command(raw)
                reply: Any = _Failure("refused", str(exc))
            else:
                reply = _call(legal, command)
            try:
                connection.send(reply)
            except (OSError, ValueError):
                break
    finally:
        legal.close()


class LegalProcessClient:
    """The communication side's handle: `execute(command)` as if the part were local."""

    def __init__(self, data_dir: Path, options: dict | None = None) -> None:
        self._data_dir, self._options = data_dir, options
        self._lock = threading.Lock()
        self._start()
        self.restarts = 0

    def _start(self) -> None:
        self._process, self._connection = _launch({"data_dir": str(self._data_dir), "options": self._options or {}})
        try:
            status = self._connection.recv()
        except (EOFError, OSError):
            status = _Failure("start", "the process ended before it was ready")
        if isinstance(status, _Failure):
            self._join(5)
            raise LegalProcessDown(f"the legally relevant part cannot start: {status.message}")

    def _alive(self) -> bool:
        return self._process.poll() is None

    def _join(self, timeout: float) -> None:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _exchange(self, raw: bytes) -> Any:
        try:
            self._connection.send_bytes(raw)
            return self._connection.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise LegalProcessDown("the legally relevant part is not running") from exc

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def execute(self, command: object) -> Any:
        try:
            raw = encode_command(command)
        except TypeError:
            raw = b"null"  # not encodable: let the legal part refuse and count it
        with self._lock:
            try:
                reply = self._exchange(raw)
            except LegalProcessDown:
                if self._alive() or self.restarts >= 3:
                    raise
                # the part ended itself (its watchdog could not recover metrology): start it
                # again from its persisted state, as a processor reset would (WELMEC I3-1)
                self.restarts += 1
                self._join(1)
                self._start()
                reply = self._exchange(raw)
        if isinstance(reply, _Failure):
            if reply.kind == "refused":
                raise CommandRefused(reply.message)
            raise LegalProcessDown(f"the legally relevant part failed: {reply.message}")
        return reply

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            try:
                self._connection.send_bytes(b"")
            except (OSError, BrokenPipeError):
                pass
        self._join(timeout)
        if self._alive():
            self._process.terminate()
            self._join(timeout)
        self._connection.close()
