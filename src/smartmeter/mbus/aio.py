"""asyncio adapter: drives the sans-io `Master` over a byte stream.

The stream is a TCP connection to a serial-to-TCP level converter ("HOST:PORT") or a
serial device opened with pyserial (2400 Bd, 8 data bits, even parity, 1 stop bit by
default) whose file descriptor the event loop watches (`loop.add_reader`), so no thread
blocks on reads.

    bus = await open_bus("192.0.2.7:10001")          # or open_bus("/dev/ttyUSB0")
    telegram = (await bus.read(5)).merged()
    await bus.set_primary_address(0xFD, 7)
    await bus.close()

Every wait is bounded by the master's answer time (plus `extra_latency` and the request's
own transmission time at the baud rate for a TCP gateway, which forwards a frame only
after it took it in). Input still pending when a request is about to be written (a late
answer to an earlier, already failed request; line noise) is discarded first, so it can
never be taken as the answer to the new request. Outcomes other than success raise: `MbusNoAnswer` (no or corrupted answer
after the repeats), `MbusWrongIdentity` (another device answered), `MbusSlaveError`
(application error). All are SmartmeterError; a lost connection raises OSError.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Protocol

from smartmeter.errors import SmartmeterError
from smartmeter.mbus.application import LongHeader, SecondaryAddress, Telegram
from smartmeter.mbus.master import (
    DEFAULT_BAUD_RATE,
    Confirmed,
    DataRead,
    Failed,
    Initialise,
    Master,
    ReadData,
    ReadSecondary,
    Request,
    Select,
    SendUserData,
    SlaveError,
    Transmit,
    WrongIdentity,
    application_reset,
    set_primary_address,
    synchronise_clock,
)

READ_CHUNK = 512
MAX_PENDING_INPUT = 4096  # serial bytes kept between reads; older ones are dropped
# What a serial-to-TCP converter adds to the answer time (buffering, network round trip).
DEFAULT_TCP_LATENCY = 0.5
WRITE_TIMEOUT = 10.0  # s; a frame is at most 261 bytes


class MbusNoAnswer(SmartmeterError):
    def __init__(self, outcome: Failed) -> None:
        super().__init__(f"{outcome.reason} after {outcome.attempts} attempts")
        self.outcome = outcome


class MbusWrongIdentity(SmartmeterError):
    def __init__(self, outcome: WrongIdentity) -> None:
        got = outcome.received
        super().__init__(f"expected {outcome.expected}, {got.identification_text} {got.manufacturer} "
                         f"v{got.version} medium {got.medium} answered")
        self.outcome = outcome
        self.received: LongHeader = got


class MbusLineBusy(SmartmeterError):
    """Bytes keep arriving when the bus should be quiet (a device or a gateway that floods it):
    the request is not sent; to the caller the device does not answer."""


class MbusSlaveError(SmartmeterError):
    def __init__(self, outcome: SlaveError) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class ByteLink(Protocol):
    """What AsyncBus drives. Optional: `discard_input()` (async, drops what has arrived and
    returns how many bytes; without it AsyncBus reads with no wait until nothing comes) and
    `written_means_sent` (True when write() returns only once the frame is on the line;
    taken as False when absent, which only makes the answer deadline longer)."""

    async def write(self, data: bytes) -> None: ...
    async def read(self, max_wait: float) -> bytes: ...  # b"" when nothing came in time
    async def close(self) -> None: ...


MAX_DISCARD_READS = 64  # reads of what arrived before a request; more: the line is busy


class TcpLink:
    written_means_sent = False  # the gateway sends the frame on at the bus's baud rate later

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.discarded = 0

    async def discard_input(self) -> int:
        """Drop what has already arrived, without waiting for more; MbusLineBusy when it keeps coming."""
        dropped = 0
        await asyncio.sleep(0)  # one loop turn: the transport takes in what the socket holds
        for _ in range(MAX_DISCARD_READS):
            if self._reader.at_eof():
                break
            # A read task gets one loop turn: done only if bytes were buffered already.
            attempt = asyncio.ensure_future(self._reader.read(READ_CHUNK))
            await asyncio.sleep(0)
            if not attempt.done():
                attempt.cancel()
                try:
                    await attempt
                except asyncio.CancelledError:
                    pass
                break
            chunk = attempt.result()
            if not chunk:
                break
            dropped += len(chunk)
        else:
            self.discarded += dropped
            raise MbusLineBusy(f"the bus does not go quiet: {dropped} bytes arrived before a request")
        self.discarded += dropped
        return dropped

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 10.0) -> "TcpLink":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        # a gateway that stops reading must not hold the master forever
        await asyncio.wait_for(self._writer.drain(), WRITE_TIMEOUT)

    async def read(self, max_wait: float) -> bytes:
        try:
            data = await asyncio.wait_for(self._reader.read(READ_CHUNK), max(max_wait, 0.0))
        except asyncio.TimeoutError:
            return b""
        if not data:
            raise ConnectionError("the M-Bus gateway closed the connection")
        return data

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class SerialLink:
    """A pyserial port read through the event loop's file-descriptor watch."""

    written_means_sent = True  # write() returns after flush(): the frame has left the UART

    def __init__(self, port) -> None:
        self._port = port
        self._pending = bytearray()
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(port.fileno(), self._readable)
        self.dropped = 0
        self.discarded = 0

    @classmethod
    async def open(cls, device: str, baud_rate: int = DEFAULT_BAUD_RATE) -> "SerialLink":
        import serial  # pyserial, a dependency of the package

        port = serial.Serial(device, baudrate=baud_rate, bytesize=serial.EIGHTBITS,
                             parity=serial.PARITY_EVEN, stopbits=serial.STOPBITS_ONE,
                             timeout=0, write_timeout=WRITE_TIMEOUT)
        return cls(port)

    def _readable(self) -> None:
        try:
            chunk = self._port.read(READ_CHUNK)
        except OSError:
            chunk = b""
        if chunk:
            self._pending += chunk
            excess = len(self._pending) - MAX_PENDING_INPUT
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
            self._arrived.set()

    async def write(self, data: bytes) -> None:
        # flush() waits until the frame has left the UART, so that the answer timer starts
        # when the request ends; it blocks, hence the executor.
        def send() -> None:
            self._port.write(data)
            self._port.flush()

        await self._loop.run_in_executor(None, send)

    async def discard_input(self) -> int:
        """Drop what has been read and what waits in the driver's input buffer."""
        dropped = len(self._pending)
        self._pending.clear()
        self._arrived.clear()
        try:
            waiting = self._port.in_waiting
            self._port.reset_input_buffer()
        except OSError:
            waiting = 0
        self.discarded += dropped + waiting
        return dropped + waiting

    async def read(self, max_wait: float) -> bytes:
        if not self._pending:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(max_wait, 0.0))
            except asyncio.TimeoutError:
                return b""
        data = bytes(self._pending)
        self._pending.clear()
        return data

    async def close(self) -> None:
        try:
            self._loop.remove_reader(self._port.fileno())
        finally:
            self._port.close()


def _host_port(spec: str) -> tuple[str, int] | None:
    if spec.startswith("/") or os.path.exists(spec):
        return None
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


class AsyncBus:
    """One wired bus: the Master plus a ByteLink, one request at a time."""

    def __init__(self, link: ByteLink, *, baud_rate: int = DEFAULT_BAUD_RATE, extra_latency: float = 0.0,
                 retries: int = 2, max_telegrams: int = 8) -> None:
        self.link = link
        self.master = Master(baud_rate=baud_rate, retries=retries, max_telegrams=max_telegrams)
        self.extra_latency = extra_latency
        self._lock = asyncio.Lock()

    async def execute(self, request: Request):
        """Run `request` to its outcome event (Confirmed, DataRead, WrongIdentity, SlaveError, Failed)."""
        async with self._lock:
            try:
                return await self._run(request)
            except BaseException:
                self.master.abandon()  # a lost link or a cancelled task ends the request
                raise

    async def _discard_input(self) -> None:
        discard = getattr(self.link, "discard_input", None)
        if discard is not None:
            await discard()
            return
        for _ in range(MAX_DISCARD_READS):
            if not await self.link.read(0.0):
                return
        raise MbusLineBusy("the bus does not go quiet before a request")

    async def _send(self, frame: bytes) -> float:
        """Write `frame` on a quiet input; returns the deadline for its answer."""
        await self._discard_input()
        await self.link.write(frame)
        sent = bool(getattr(self.link, "written_means_sent", False))
        loop = asyncio.get_running_loop()
        return loop.time() + self.master.answer_wait(len(frame), written_means_sent=sent) + self.extra_latency

    async def _run(self, request: Request):
        loop = asyncio.get_running_loop()
        deadline = await self._send(self.master.request(request))
        while True:
            left = deadline - loop.time()
            answered = False
            if left <= 0:
                events = self.master.timeout()
            else:
                data = await self.link.read(left)
                if not data:
                    continue
                events = self.master.receive(data)
                answered = True
            for event in events:
                if isinstance(event, Transmit):
                    if answered:  # the next telegram of a chain: let the line go quiet first
                        await asyncio.sleep(self.master.line_idle_time)
                    deadline = await self._send(event.data)
                else:
                    return event

    async def _expect(self, request: Request, kind):
        outcome = await self.execute(request)
        if isinstance(outcome, kind):
            return outcome
        if isinstance(outcome, Failed):
            raise MbusNoAnswer(outcome)
        if isinstance(outcome, WrongIdentity):
            raise MbusWrongIdentity(outcome)
        if isinstance(outcome, SlaveError):
            raise MbusSlaveError(outcome)
        raise SmartmeterError(f"unexpected outcome {outcome!r}")

    async def initialise(self, address: int) -> None:
        await self._expect(Initialise(address), Confirmed)

    async def read(self, address: int, expected: SecondaryAddress | None = None) -> DataRead:
        return await self._expect(ReadData(address, expected), DataRead)

    async def read_secondary(self, secondary: SecondaryAddress) -> DataRead:
        return await self._expect(ReadSecondary(secondary), DataRead)

    async def select(self, secondary: SecondaryAddress) -> None:
        await self._expect(Select(secondary), Confirmed)

    async def send_user_data(self, address: int, ci: int, data: bytes = b"") -> None:
        await self._expect(SendUserData(address, ci, data), Confirmed)

    async def set_primary_address(self, address: int, new_address: int) -> None:
        await self._expect(set_primary_address(address, new_address), Confirmed)

    async def synchronise_clock(self, address: int, local_time: dt.datetime) -> None:
        await self._expect(synchronise_clock(address, local_time), Confirmed)

    async def application_reset(self, address: int, subcode: int | None = None) -> None:
        await self._expect(application_reset(address, subcode), Confirmed)

    async def read_telegram(self, address: int) -> Telegram:
        return (await self.read(address)).merged()

    async def close(self) -> None:
        await self.link.close()


async def open_bus(spec: str, *, baud_rate: int = DEFAULT_BAUD_RATE, extra_latency: float | None = None,
                   **options) -> AsyncBus:
    """"HOST:PORT" -> TCP to a level converter; anything else -> a serial device path."""
    address = _host_port(spec)
    if address is not None:
        link: ByteLink = await TcpLink.open(*address)
        latency = DEFAULT_TCP_LATENCY if extra_latency is None else extra_latency
    else:
        link = await SerialLink.open(spec, baud_rate)
        latency = 0.0 if extra_latency is None else extra_latency
    return AsyncBus(link, baud_rate=baud_rate, extra_latency=latency, **options)
