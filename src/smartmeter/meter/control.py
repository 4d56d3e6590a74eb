"""The meter's local control channel: how `smartmeter sim` reaches a running meter.

A UNIX socket in the data directory, created with mode 0600 in a directory of mode 0700, so
only the meter's owner can open it; never DLMS, never a network port. One JSON object per
line each way:

    -> {"input": "cover", "value": "open"}            <- {"ok": true, "status": {...}}
    -> {"status": true}                                <- {"ok": true, "status": {...}}
    <- {"ok": false, "error": "one line saying what is wrong"}

Bounded like every other door of the meter: a request line of at most MAX_LINE bytes, at
most MAX_CLIENTS connections at once, each closed after IDLE_TIMEOUT seconds of silence.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable

from smartmeter.errors import SmartmeterError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 4096
MAX_CLIENTS = 4
IDLE_TIMEOUT = 30.0
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class ControlChannelError(SmartmeterError):
    """The control channel cannot be opened or reached."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


def _checked(path: Path) -> str:
    text = str(path)
    if len(text.encode()) > MAX_SOCKET_PATH:
        # a relative path is shorter when the data directory is below the working directory
        try:
            relative = os.path.relpath(text)
        except ValueError:
            relative = text
        if len(relative.encode()) <= MAX_SOCKET_PATH:
            return relative
        raise ControlChannelError(f"the path of the control socket {text} is too long for a UNIX socket "
                                  f"(at most {MAX_SOCKET_PATH} bytes); use a shorter --data-dir")
    return text


class ControlServer:
    """Serves the control channel on the running event loop; `handler(request) -> response`."""

    def __init__(self, data_dir: Path, handler: Callable[[dict[str, Any]], dict[str, Any]],
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.path = socket_path(data_dir)
        self._handler = handler
        # awaited before an answer goes out: what the request started is done when the user hears back
        self._settle = settle
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0

    async def start(self) -> None:
        where = _checked(self.path)
        if self.path.exists() or self.path.is_symlink():
            if _answers(where):
                raise ControlChannelError(f"another meter is running with data directory {self.path.parent}")
            self.path.unlink()  # left behind by a meter that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.fchmod(sock.fileno(), 0o600)  # Linux applies the socket file's mode at bind
            sock.bind(where)
            os.chmod(where, 0o600)
        except OSError as exc:
            sock.close()
            raise ControlChannelError(f"cannot open the control socket {self.path}: {exc.strerror}") from None
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.write(_line({"ok": False, "error": "the control channel is busy; try again"}))
            writer.close()
            return
        self._clients += 1
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                    writer.write(_line({"ok": False, "error": f"a request is one JSON line of at most {MAX_LINE} bytes"}))
                    break
                if not raw:
                    break
                answer = self._answer(raw)
                if self._settle is not None:
                    await self._settle()
                writer.write(_line(answer))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients -= 1
            writer.close()

    def _answer(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError):
            return {"ok": False, "error": "a request is a JSON object"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        try:
            return self._handler(request)
        except SmartmeterError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception:  # noqa: BLE001 - the channel answers; the meter keeps running
            log.exception("control request %r failed", request)
            return {"ok": False, "error": "the meter could not carry out the request (see its log)"}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode() + b"\n"


def _answers(where: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(where)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def request(data_dir: Path, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the meter running with `data_dir`; its answer, or ControlChannelError."""
    path = socket_path(data_dir)
    if not path.exists():
        raise ControlChannelError(f"no meter is running with data directory {Path(data_dir).absolute()} "
                                  f"(no {SOCKET_NAME} there)")
    where = _checked(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(where)
        sock.sendall(_line(message))
        buffer = b""
        while not buffer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            if len(buffer) > 1 << 20:
                raise ControlChannelError("the meter's answer is too long")
    except PermissionError:
        raise ControlChannelError(f"not allowed to open {path}: only the meter's owner may") from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise ControlChannelError(f"no meter is running with data directory {data_dir} (its control socket is stale)") from None
    except OSError as exc:
        raise ControlChannelError(f"cannot talk to the meter at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(buffer)
    except ValueError:
        raise ControlChannelError("the meter closed the control channel without an answer") from None
    if not isinstance(answer, dict):
        raise ControlChannelError("the meter's answer is not a JSON object")
    return answer
