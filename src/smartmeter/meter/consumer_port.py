"""The meter's H1 consumer port (companion standard §2.2, §4.2, §10.5; catalog §1.2, §7 "CIP"):
the consumer information push, written to a serial device or a pseudo-terminal as wired M-Bus
frames at 2400 Bd, push only.

Three parts:

- `ConsumerPush` builds one push for the push service (smartmeter.meter.push, transport 201):
  it checks the destination is the consumer port (`0-2:24.6.0.255:FF:00`), protects the
  data-notification for the CIP client (suite 1, its own key and sending counter, the
  security control its policy asks for: encryption only at 0x48) and cuts it into M-Bus
  segments (smartmeter.mbus.consumer_port). A sending counter at its maximum stops the
  pushes (the counter never wraps) and is reported once through `on_exhausted` until a new
  key resets it.
- `AirtimePacer`, sans-io: when each frame may go. A frame takes 11 bits per octet (start,
  8 data, even parity, stop) at 2400 Bd; frames are INTER_FRAME_GAP_BITS apart (IEC 60870-5-1
  FT 1.2, which EN 13757-2 uses: at least 33 idle bits between frames). A push offered while
  the last one is still on the line is skipped and counted: nothing queues behind it.
- `ConsumerPort`: the line itself, driven by a thread of its own so that the meter never
  waits for the wire. `pty` opens a new pseudo-terminal (its slave path is `path`); anything
  else is opened with pyserial at 2400 Bd 8E1. Bytes arriving on H1 are read and dropped
  (§2.2: receiving on H1 is not allowed), and counted.

Every condition is logged once a minute at most (smartmeter.ratelog); `stats()` counts them all.
"""
from __future__ import annotations

import logging
import os
import re
import select
import termios
import threading
import time
import tty
from collections import Counter, deque
from typing import Callable

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.errors import CounterExhaustedError
from smartmeter.dlms.server import protect_notification
from smartmeter.errors import EncodeError, SmartmeterError
from smartmeter.mbus.consumer_port import segment_frames
from smartmeter.mbus.link import ADDRESS_BROADCAST
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

CIP_CLIENT = "cip"  # the model's consumer information push client (SAP 103)
CONSUMER_PORT = Obis.parse("0-2:24.6.0.255")  # M-Bus master port setup - Consumer Information Interface
FIRST_TRANSPORT_CI = 0x00  # the destination's CI TL: segments count up from 0x00
BAUD = 2400  # §2.2: fixed
BITS_PER_OCTET = 11  # start bit, 8 data bits, even parity, stop bit (EN 13757-2)
INTER_FRAME_GAP_BITS = 33  # IEC 60870-5-1 FT 1.2: at least 33 bit times of idle line between frames
STATS = ("pushes_offered", "pushes_sent", "pushes_skipped", "frames_sent", "octets_sent", "octets_received_ignored",
         "write_failures")  # what `ConsumerPort.stats` counts, in the order the meter prints them
# the CIP destination: logical name, LLA, CI TL; ':' or '.' between the three (catalog §7: accept both)
_DESTINATION = re.compile(r"^(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})[:.]([0-9A-Fa-f]{2})[:.]([0-9A-Fa-f]{2})$")


def airtime(octets: int, baud: int = BAUD) -> float:
    """Seconds `octets` take on the line."""
    return octets * BITS_PER_OCTET / baud


def consumer_destination(text: str) -> int:
    """The link address of a consumer push destination; ValueError unless it names the consumer
    port with the broadcast address and the first transport CI (the only H1 destination, §10.5)."""
    match = _DESTINATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not logical-name:LLA:CI (e.g. 0-2:24.6.0.255:FF:00)")
    try:
        port = Obis.parse(match.group(1))
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    address, ci = int(match.group(2), 16), int(match.group(3), 16)
    if port != CONSUMER_PORT:
        raise ValueError(f"{port} is not the consumer port {CONSUMER_PORT}")
    if address != ADDRESS_BROADCAST:
        raise ValueError(f"the consumer push goes to the broadcast address FF, not {address:02X}")
    if ci != FIRST_TRANSPORT_CI:
        raise ValueError(f"the consumer push's transport CI starts at 00, not {ci:02X}")
    return address


class AirtimePacer:
    """When each frame of the push on the line goes, sans-io (`now` in seconds, monotonic).

    `offer(frames, now)` takes a push unless one is still on the line (the last frame's airtime
    and the gap after it not yet over): then it is skipped, never queued. `due(now)` hands out
    the next frame once its time has come; each frame's time is the previous frame's handing
    out plus its airtime and the gap, so a late writer never sends frames closer than that.
    """

    def __init__(self, baud: int = BAUD, gap_bits: int = INTER_FRAME_GAP_BITS) -> None:
        self.baud = baud
        self.gap = gap_bits / baud
        self._frames: deque[bytes] = deque()
        self._next_at = float("-inf")  # when the line is free for the next frame
        self.push_octets = 0  # the size of the push on the line (or the last one)

    def busy(self, now: float) -> bool:
        return bool(self._frames) or now < self._next_at

    def offer(self, frames: list[bytes], now: float) -> bool:
        if self.busy(now) or not frames:
            return False
        self._frames.extend(frames)
        self._next_at = now
        self.push_octets = sum(len(frame) for frame in frames)
        return True

    def due(self, now: float) -> bytes | None:
        if not self._frames or now < self._next_at:
            return None
        frame = self._frames.popleft()
        self._next_at = now + airtime(len(frame), self.baud) + self.gap
        return frame

    def wait(self, now: float) -> float | None:
        """Seconds until `due` has a frame; None: nothing to send."""
        return max(0.0, self._next_at - now) if self._frames else None

    @property
    def last_frame_of_push(self) -> bool:
        return not self._frames


class _PtyLine:
    """A new pseudo-terminal: the meter writes on the master side, a consumer opens `path`.

    The meter keeps the slave side open itself, so that the terminal keeps its raw settings and
    the master never reads as hung up while no consumer is attached. What nobody read of the last
    push is dropped before the next one: a bus keeps nothing for a consumer that was not listening.
    """

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: the frames pass as they are
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)

    def fileno(self) -> int:
        return self.master

    def write(self, data: bytes) -> int:
        return os.write(self.master, data)

    def read(self) -> bytes:
        return os.read(self.master, 4096)

    def forget_unread(self) -> None:
        termios.tcflush(self._slave, termios.TCIFLUSH)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _SerialLine:
    """A serial device at 2400 Bd 8E1 (pyserial)."""

    def __init__(self, device: str) -> None:
        import serial  # only a meter with a serial H1 needs it

        self.port = serial.Serial(device, BAUD, bytesize=serial.EIGHTBITS, parity=serial.PARITY_EVEN,
                                  stopbits=serial.STOPBITS_ONE, timeout=0, write_timeout=None)
        self.path = device

    def fileno(self) -> int:
        return self.port.fileno()

    def write(self, data: bytes) -> int:
        return self.port.write(data) or 0

    def read(self) -> bytes:
        return self.port.read(max(1, self.port.in_waiting))

    def forget_unread(self) -> None:
        pass  # the wire keeps nothing

    def close(self) -> None:
        self.port.close()


class ConsumerPort:
    """The H1 line: `submit(frames)` from any thread; a thread of its own writes them paced."""

    def __init__(self, device: str, gap_bits: int = INTER_FRAME_GAP_BITS,
                 clock: Callable[[], float] = time.monotonic, say: RateLimitedLog | None = None) -> None:
        self.device = device
        self.clock = clock
        self.say = say if say is not None else RateLimitedLog(log)
        self.pacer = AirtimePacer(gap_bits=gap_bits)
        self.line = None
        self.path: str | None = None
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._wake_r = self._wake_w = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------------------
    def open(self) -> str:
        """Open the line and start writing; the path a consumer opens (the pty's slave)."""
        self.line = _PtyLine() if self.device == "pty" else _SerialLine(self.device)
        self.path = self.line.path
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="H1 consumer port", daemon=True)
        self._thread.start()
        return self.path

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.line is not None:
            self.line.close()

    # -- entry ------------------------------------------------------------------------------
    def busy(self) -> bool:
        with self._lock:
            return self.pacer.busy(self.clock())

    def submit(self, frames: list[bytes]) -> bool:
        """Take a push's frames; False (counted, logged) when the last push is still on the line."""
        if not frames:
            return False
        with self._lock:
            taken = self.pacer.offer(list(frames), self.clock())
            if taken:
                self._stats["pushes_offered"] += 1
        if not taken:
            self.skip()
            return False
        self._wake()
        return True

    def skip(self) -> None:
        """A push that found the line busy: counted and logged, not sent."""
        with self._lock:
            self._stats["pushes_offered"] += 1
            self._stats["pushes_skipped"] += 1
            octets = self.pacer.push_octets
        self.say("h1.skipped", "H1: a consumer push skipped: the one before is still on the line "
                 "(%d octets take %.2f s at %d Bd; the push schedule is faster than that)",
                 octets, airtime(octets), BAUD)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def stats(self) -> dict:
        with self._lock:
            return {key: self._stats[key] for key in STATS}

    # -- the writer thread --------------------------------------------------------------------
    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except OSError:
                pass

    def _run(self) -> None:
        line = self.line
        mid_push = False
        while not self._stop.is_set():
            with self._lock:
                wait = self.pacer.wait(self.clock())
            try:
                readable, _, _ = select.select([line.fileno(), self._wake_r], [], [], 1.0 if wait is None else wait)
            except (OSError, ValueError):
                return
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if line.fileno() in readable:
                self._drain(line)
            while True:
                with self._lock:
                    frame = self.pacer.due(self.clock())
                    last = self.pacer.last_frame_of_push
                if frame is None:
                    break
                if not mid_push:
                    line.forget_unread()
                mid_push = not last
                self._write(line, frame)
                if last:
                    self.count("pushes_sent")

    def _drain(self, line) -> None:
        try:
            data = line.read()
        except OSError as exc:
            self.say("h1.read_failed", "H1: reading the line failed: %s", exc)
            time.sleep(0.1)  # a line that keeps failing must not spin
            return
        if data:
            self.count("octets_received_ignored", len(data))
            self.say("h1.received", "H1: %d octets arrived on the consumer port and were ignored "
                     "(H1 is push only, companion §2.2)", len(data))

    def _write(self, line, frame: bytes) -> None:
        try:
            written = line.write(frame)
        except OSError as exc:
            written = 0
            self.say("h1.write_failed", "H1: writing a frame failed: %s", exc)
        if written == len(frame):
            self.count("frames_sent")
            self.count("octets_sent", written)
        else:
            self.count("write_failures")
            if written:
                self.count("octets_sent", written)


class ConsumerPush:
    """The consumer information push on the H1 port, for the push service (transport 201)."""

    def __init__(self, server, port: ConsumerPort, client: str = CIP_CLIENT,
                 on_exhausted: Callable[[str], None] = lambda client: None, say: RateLimitedLog | None = None) -> None:
        self.server = server
        self.port = port
        self.client = client
        self.on_exhausted = on_exhausted
        self.say = say if say is not None else RateLimitedLog(log)
        self._exhausted = False

    def push(self, name: str, destination: str, body: Data, long_invoke_id_and_priority: int) -> str:
        """One push of the setup called `name`: "submitted", "skipped" (the line is busy),
        "refused" (bad destination, counter exhausted) or "failed" (not built)."""
        try:
            address = consumer_destination(destination)
        except ValueError as exc:
            self.say("h1.destination", "%s: the push is not sent: %s", name, exc)
            return "refused"
        if self.port.busy():  # before the counter is spent: a skipped push costs nothing
            self.port.skip()
            return "skipped"
        context = self.server.security.context(self.client) if self.server.security else None
        if context is None:
            self.say("h1.no_context", "%s: the %s client has no security context; the push is not sent", name,
                     self.client)
            return "failed"
        try:
            notification = DataNotification(long_invoke_id_and_priority, self.server.clock_bytes(), body).to_bytes()
            apdu = protect_notification(context, self.server.system_title, notification)
        except CounterExhaustedError:
            if not self._exhausted:
                self._exhausted = True
                log.error("%s: the sending frame counter of the %s client is at its maximum: the consumer "
                          "push stops until a new key is transferred (0-0:43.0.103.255 key_transfer)", name,
                          self.client)
                self.on_exhausted(self.client)
            return "refused"
        except (SmartmeterError, ValueError) as exc:
            self.say("h1.protect", "%s: the push is not sent: %s", name, exc)
            return "failed"
        self._exhausted = False
        try:
            frames = segment_frames(apdu, address)
        except EncodeError as exc:
            self.say("h1.too_long", "%s: the push is not sent: %s", name, exc)
            return "failed"
        return "submitted" if self.port.submit(frames) else "skipped"
