"""A stand-in for the display engine (meter/display.py) with the design's API, and a DisplayServer
run on its own event loop in a thread, so that Playwright's synchronous API can drive a browser
against it from the test's thread."""
from __future__ import annotations

import asyncio
import struct
import threading
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime
from smartmeter.meter.display_http import DisplayServer

CHROMIUM = "/usr/bin/chromium"  # Debian's (scripts/install_browser.sh), never a downloaded browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "display"  # the screenshots the README shows


@dataclass(frozen=True)
class Indicators:
    tariff: str | None = None
    disconnected: bool = False
    communication: bool = False
    alarm: bool = False
    certification: bool = False
    led_on: bool = False
    demand_output: bool = False
    message: str | None = None


@dataclass(frozen=True)
class Screen:
    mode: str = "scroll"
    code: str = "1.8.0"
    value: str = "000123.456"
    unit: str = "kWh"
    index: int = 0
    count: int = 3
    indicators: Indicators = field(default_factory=Indicators)


class FakeDisplay:
    """Shows whatever the test sets; counts screen() calls; `fail` makes screen() raise."""

    def __init__(self, screen: Screen | None = None) -> None:
        self._lock = threading.Lock()
        self._screen = screen or Screen()
        self._version = 1
        self.screen_calls = 0
        self.fail = False
        self.pulses = 0

    def screen(self, now: float) -> Screen:
        with self._lock:
            self.screen_calls += 1
            if self.fail:
                raise RuntimeError("the engine failed")
            return self._screen

    def version(self) -> int:
        with self._lock:
            return self._version

    def show(self, **changes) -> None:
        """Changes the screen (indicators by their names too) and bumps the version."""
        with self._lock:
            indicator_changes = {k: changes.pop(k) for k in list(changes) if hasattr(self._screen.indicators, k)}
            self._screen = replace(self._screen, **changes,
                                   indicators=replace(self._screen.indicators, **indicator_changes))
            self._version += 1

    def press(self, button: str, long: bool, now: float) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def led_pulses(self) -> int:
        return self.pulses


class Presses:
    """The runtime's button handler as the server sees it: records every press."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, button: str, long: bool) -> None:
        with self._lock:
            self.seen.append((button, long))

    def list(self) -> list[tuple[str, bool]]:
        with self._lock:
            return list(self.seen)


def cosem_time(utc: int, offset_minutes: int = 60) -> bytes:
    """The 12 octets of a COSEM date-time at UTC `utc`, in a zone `offset_minutes` ahead of UTC."""
    import datetime as dt
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    return axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(utc, zone)))


class ServerThread:
    """A DisplayServer on 127.0.0.1 and a free port, served by an event loop in a daemon thread."""

    def __init__(self, display, press, profile_rows=None, port: int = 0, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        rows = profile_rows or (lambda obis, start, end: [])
        self.server = self.call(self._make(display, press, rows, port, options))
        self.call(self.server.start())
        self.url = self.server.url

    @staticmethod
    async def _make(display, press, rows, port, options) -> DisplayServer:
        return DisplayServer(display, press, rows, "127.0.0.1", port, **options)

    def call(self, coroutine, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def png_pixels(data: bytes) -> tuple[bytes, bytes]:
    """(header, decompressed image data) of a PNG: what it shows, whatever its encoder's choices."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    at, header, image = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            image += body
        at += 12 + length
    return header, zlib.decompress(image)


def save_screenshot(png: bytes, path: Path) -> None:
    """Writes a screenshot for the docs unless the file already shows the same pixels (Chromium's
    encoder does not give the same bytes twice: the repository would change at every test run)."""
    shown = png_pixels(png)
    if path.exists():
        try:
            if png_pixels(path.read_bytes()) == shown:
                return
        except (ValueError, zlib.error, struct.error):
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
