"""asyncio and serial adapters: sockets and ports on one side, the sans-io machines on the other.

- TCP wrapper (IEC 62056-47) on the LAN/WAN interface: several associations at a time.
- UDP wrapper: one datagram per APDU, associations keyed by peer address and wPort.
- HDLC over TCP, standing in for the WZ optical probe, and HDLC on a real serial port.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from smartmeter.errors import DecodeError
from smartmeter.transport import hdlc
from smartmeter.transport.wrapper import WrapperDecoder, WrapperFrame, decode_datagram

if TYPE_CHECKING:
    from smartmeter.dlms.server import DlmsServer, ServerAssociation

log = logging.getLogger(__name__)

LAN = "lan"
WZ = "wz"
WRAPPER_MAX_PAYLOAD = 4096  # well above the 1224-byte PDU limit, far below memory trouble


class _WrapperSessions:
    """Associations of one wrapper peer, keyed by (client wPort, server wPort)."""

    def __init__(self, server: "DlmsServer", interface: str) -> None:
        self.server = server
        self.interface = interface
        self.associations: dict[tuple[int, int], "ServerAssociation"] = {}

    def answer(self, frame: WrapperFrame) -> WrapperFrame | None:
        key = (frame.source_wport, frame.destination_wport)
        assoc = self.associations.get(key)
        if assoc is None:
            if frame.destination_wport != self.server.server_sap:
                log.info("wrapper frame for unknown server wPort %s dropped", frame.destination_wport)
                return None
            assoc = self.associations[key] = self.server.association(frame.source_wport, self.interface)
        reply = assoc.handle(frame.payload)
        if reply is None:
            return None
        return WrapperFrame(frame.destination_wport, frame.source_wport, reply)

    def close(self) -> None:
        for assoc in self.associations.values():
            assoc.release()


async def serve_wrapper_tcp(server: "DlmsServer", host: str, port: int) -> asyncio.AbstractServer:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        sessions = _WrapperSessions(server, LAN)
        decoder = WrapperDecoder(max_payload=WRAPPER_MAX_PAYLOAD)
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    reply = sessions.answer(frame)
                    if reply is not None:
                        writer.write(reply.to_bytes())
                await writer.drain()
        except DecodeError as exc:
            log.info("closing wrapper connection from %s: %s", peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer left, or the meter is stopping
        finally:
            sessions.close()
            writer.close()

    return await asyncio.start_server(on_connection, host, port)


class _UdpWrapper(asyncio.DatagramProtocol):
    def __init__(self, server: "DlmsServer") -> None:
        self.server = server
        self.peers: dict[object, _WrapperSessions] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            frame = decode_datagram(data)
        except DecodeError as exc:
            log.info("UDP datagram from %s dropped: %s", addr, exc)
            return
        sessions = self.peers.setdefault(addr, _WrapperSessions(self.server, LAN))
        reply = sessions.answer(frame)
        if reply is not None:
            self.transport.sendto(reply.to_bytes(), addr)


async def serve_wrapper_udp(server: "DlmsServer", host: str, port: int):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpWrapper(server), local_addr=(host, port))
    return transport


class HdlcPort:
    """The WZ optical port: one HDLC link and its association, fed bytes from any medium.

    While the port is disabled (`is_open()` false: remote disable or lockout, companion
    standard §4.1.2) it cannot be accessed in any way: input is dropped unanswered and an
    open link is dropped with its association.
    """

    def __init__(self, server: "DlmsServer", params: hdlc.HdlcParameters, physical_address: int,
                 is_open: Callable[[], bool] = lambda: True) -> None:
        self.server = server
        self.params = params
        self.physical_address = physical_address
        self.is_open = is_open
        self.link = self._new_link()
        self.association: "ServerAssociation | None" = None

    def _new_link(self) -> hdlc.HdlcServerLink:
        return hdlc.HdlcServerLink(physical_address=self.physical_address, logical_devices={1}, params=self.params)

    def receive(self, data: bytes, now: float) -> bytes:
        if not self._check_open():
            return b""
        self._events(self.link.receive(data, now))
        return self.link.take_output()

    def tick(self, now: float) -> bytes:
        if not self._check_open():
            return b""
        self._events(self.link.tick(now))
        return self.link.take_output()

    def _check_open(self) -> bool:
        if self.is_open():
            return True
        if self.link.connected or self.association is not None:
            self.close()
            self.link = self._new_link()
        return False

    def _events(self, events) -> None:
        for event in events:
            if isinstance(event, hdlc.Connected):
                if self.association is not None:
                    self.association.release()
                self.association = self.server.association(event.client_address, WZ, event.server_upper)
            elif isinstance(event, hdlc.ApduReceived) and self.association is not None:
                reply = self.association.handle(event.apdu)
                if reply is not None:
                    self.link.send_apdu(reply)
            elif isinstance(event, hdlc.Disconnected):
                self.close()

    def close(self) -> None:
        if self.association is not None:
            self.association.release()
            self.association = None


def hdlc_parameters(setup) -> tuple[hdlc.HdlcParameters, int]:
    """Link parameters and physical address from the IEC HDLC setup object (IC 23)."""
    p = setup.parameter
    params = hdlc.HdlcParameters(
        max_info_tx=p("max_info_field_length_transmit"), max_info_rx=p("max_info_field_length_receive"),
        window_tx=p("window_size_transmit"), window_rx=p("window_size_receive"),
        inter_octet_timeout=p("inter_octet_time_out") / 1000.0, inactivity_timeout=float(p("inactivity_time_out")),
    )
    return params, p("device_address")


async def serve_hdlc_tcp(server: "DlmsServer", setup, host: str, port: int,
                         is_open: Callable[[], bool] = lambda: True) -> asyncio.AbstractServer:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        params, address = hdlc_parameters(setup)  # per connection: a written setup applies to the next link
        port_ = HdlcPort(server, params, address, is_open)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=0.5)
                except asyncio.TimeoutError:
                    out = port_.tick(loop.time())
                else:
                    if not data:
                        break
                    out = port_.receive(data, loop.time())
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the peer left, or the meter is stopping
        finally:
            port_.close()
            writer.close()

    return await asyncio.start_server(on_connection, host, port)


def serve_hdlc_serial(server: "DlmsServer", setup, device: str, stop: threading.Event,
                      is_open: Callable[[], bool] = lambda: True) -> threading.Thread:
    """Serve the optical port on a real serial device (pyserial URL or path) in a thread.

    The baud rate follows comm_speed of the HDLC setup object. The port has its own
    association; what it shares with the other ports (the legally relevant part) is
    thread-safe behind the protective interface.
    """
    import serial  # pyserial: only needed when a serial port is used

    params, address = hdlc_parameters(setup)
    baud = {0: 300, 1: 600, 2: 1200, 3: 2400, 4: 4800, 5: 9600, 6: 19200, 7: 38400, 8: 57600, 9: 115200}
    port = serial.serial_for_url(device, baudrate=baud.get(setup.parameter("comm_speed"), 9600), timeout=0.05)
    hdlc_port = HdlcPort(server, params, address, is_open)

    def run() -> None:
        with port:
            while not stop.is_set():
                data = port.read(512)
                out = hdlc_port.receive(data, time.monotonic()) if data else hdlc_port.tick(time.monotonic())
                if out:
                    port.write(out)
            hdlc_port.close()

    thread = threading.Thread(target=run, name=f"hdlc-serial-{device}", daemon=True)
    thread.start()
    return thread
