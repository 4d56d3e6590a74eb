"""Client-side links to a meter: the TCP wrapper and HDLC (over TCP or a serial port).

Each link offers `open()`, `exchange(apdu) -> apdu` and `close()`; the sans-io machines
in `smartmeter.transport` do the framing.
"""
from __future__ import annotations

import asyncio
import time

from smartmeter.errors import SmartmeterError
from smartmeter.transport import hdlc
from smartmeter.transport.wrapper import WrapperDecoder, WrapperFrame

DEFAULT_TIMEOUT = 10.0


class LinkError(SmartmeterError):
    """The meter cannot be reached or stopped answering."""


async def _connect(host: str, port: int, timeout: float):
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise LinkError(f"cannot connect to {host}:{port} ({exc.__class__.__name__}: {exc})") from None


class WrapperLink:
    def __init__(self, host: str, port: int, client_sap: int = 16, server_sap: int = 1,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.client_sap, self.server_sap = client_sap, server_sap
        self._decoder = WrapperDecoder()
        self._pending: list[WrapperFrame] = []

    async def open(self) -> None:
        self.reader, self.writer = await _connect(self.host, self.port, self.timeout)

    async def exchange(self, apdu: bytes) -> bytes:
        self.writer.write(WrapperFrame(self.client_sap, self.server_sap, apdu).to_bytes())
        await self.writer.drain()
        deadline = time.monotonic() + self.timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            try:
                data = await asyncio.wait_for(self.reader.read(65536), max(remaining, 0.001))
            except asyncio.TimeoutError:
                raise LinkError(f"no answer from {self.host}:{self.port} within {self.timeout:g} s") from None
            if not data:
                raise LinkError(f"{self.host}:{self.port} closed the connection")
            self._pending.extend(f for f in self._decoder.feed(data) if f.destination_wport == self.client_sap)
        return self._pending.pop(0).payload

    async def close(self) -> None:
        if hasattr(self, "writer"):
            self.writer.close()


class HdlcLink:
    """HDLC to the optical port; over TCP here (the probe stands in for a serial line)."""

    def __init__(self, host: str, port: int, client_address: int = 16, server_logical: int = 1,
                 server_physical: int = 0x10, timeout: float = DEFAULT_TIMEOUT,
                 params: hdlc.HdlcParameters | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.link = hdlc.HdlcClientLink(client_address, server_logical, server_physical, params or hdlc.HdlcParameters())

    async def open(self) -> None:
        self.reader, self.writer = await _connect(self.host, self.port, self.timeout)
        self.writer.write(self.link.connect())
        await self._until(lambda e: isinstance(e, hdlc.Connected), "HDLC connection (UA)")

    async def _until(self, wanted, what: str):
        deadline = time.monotonic() + self.timeout
        while True:
            out = self.link.take_output()
            if out:
                self.writer.write(out)
                await self.writer.drain()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkError(f"no {what} from {self.host}:{self.port} within {self.timeout:g} s")
            try:
                data = await asyncio.wait_for(self.reader.read(4096), remaining)
            except asyncio.TimeoutError:
                continue
            if not data:
                raise LinkError(f"{self.host}:{self.port} closed the connection")
            for event in self.link.receive(data, time.monotonic()):
                if wanted(event):
                    out = self.link.take_output()
                    if out:
                        self.writer.write(out)
                    return event
                if isinstance(event, hdlc.Disconnected):
                    raise LinkError(f"the meter ended the HDLC link ({event.reason})")

    async def exchange(self, apdu: bytes) -> bytes:
        self.link.send_apdu(apdu)
        event = await self._until(lambda e: isinstance(e, hdlc.ApduReceived), "response")
        return event.apdu

    async def close(self) -> None:
        if hasattr(self, "writer"):
            try:
                self.writer.write(self.link.disconnect())
                await asyncio.wait_for(self.writer.drain(), 1.0)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            self.writer.close()
