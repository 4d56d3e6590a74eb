"""asyncio and serial adapters: sockets and ports on one side, the sans-io machines on the other.

- TCP wrapper (IEC 62056-47) on the LAN/WAN interface: several associations at a time.
- UDP wrapper: one datagram per APDU, associations keyed by peer address and wPort.
- HDLC over TCP, standing in for the WZ optical probe, and HDLC on a real serial port.

What a peer can make the meter hold is bounded (`limits.ConnectionTable`): TCP connections and
UDP peers by nb_of_sim_conn and inactivity_time_out of the TCP-UDP setup object (IC 41,
0-0:25.0.0.255), HDLC-over-TCP connections by a fixed number and the inactivity_time_out of
the IEC HDLC setup (IC 23), associations per connection or peer by the number of clients.
Conditions caused by peers are logged once per minute at most (`smartmeter.ratelog.RateLimitedLog`).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from smartmeter.errors import DecodeError
from smartmeter.transport import hdlc
from smartmeter.transport.limits import (
    NO_ASSOCIATION,
    UNAUTHENTICATED,
    ConnectionTable,
    RateLimitedLog,
    association_rank,
)
from smartmeter.transport.wrapper import WrapperDecoder, WrapperFrame, decode_datagram

if TYPE_CHECKING:
    from smartmeter.dlms.server import DlmsServer, ServerAssociation

log = logging.getLogger(__name__)

LAN = "lan"
WZ = "wz"
WRAPPER_MAX_PAYLOAD = 4096  # well above the 1224-byte PDU limit, far below memory trouble
SWEEP_PERIOD = 0.5  # s between looks for connections past their inactivity timeout
# Used when the object model has no TCP-UDP setup object: its defaults.
DEFAULT_WRAPPER_LIMITS = (16, 180.0)
# The optical port serves one probe at a time (§3.3.4); a few spare connections let a new
# probe in while a dead one has not timed out yet (a new one displaces an idle one anyway).
HDLC_TCP_MAX_CONNECTIONS = 4
TCP_UDP_SETUP_LN = bytes([0, 0, 25, 0, 0, 255])


def tcp_udp_setup(server: "DlmsServer"):
    """The TCP-UDP setup object (IC 41) of the wrapper port, if the object model has one."""
    found = server.directory.by_ln.get(TCP_UDP_SETUP_LN)
    return found[1] if found is not None and found[0].class_id == 41 else None


def _wrapper_limits(setup) -> Callable[[], tuple[int, float]]:
    return setup.limits if setup is not None else (lambda: DEFAULT_WRAPPER_LIMITS)


def _sweep_while(alive: Callable[[], bool], table: ConnectionTable) -> None:
    """Close `table`'s connections past their inactivity timeout, every SWEEP_PERIOD, while `alive()`."""
    loop = asyncio.get_running_loop()

    def sweep() -> None:
        if alive():
            table.expire(loop.time())
            loop.call_later(SWEEP_PERIOD, sweep)

    loop.call_later(SWEEP_PERIOD, sweep)


class _WrapperSessions:
    """Associations of one wrapper connection (TCP) or peer (UDP), keyed by client wPort.

    At most `max_associations` are held (clients use their SAP as wPort, so one per client is
    enough); a new wPort beyond that takes the place of the least recently used association
    that is not authenticated, and is dropped when every one is.
    """

    def __init__(self, server: "DlmsServer", interface: str, say: RateLimitedLog, max_associations: int) -> None:
        self.server = server
        self.interface = interface
        self.say = say
        self.max_associations = max_associations
        self.associations: OrderedDict[int, "ServerAssociation"] = OrderedDict()  # least recently used first

    def answer(self, frame: WrapperFrame) -> WrapperFrame | None:
        if frame.destination_wport != self.server.server_sap:
            self.say("wrapper.unknown_server_wport", "wrapper frame for unknown server wPort %s dropped",
                     frame.destination_wport, level=logging.INFO)
            return None
        key = frame.source_wport
        assoc = self.associations.get(key)
        if assoc is None:
            if len(self.associations) >= self.max_associations and not self._make_room():
                self.say("wrapper.associations_full", "wrapper frame for client wPort %s dropped: all %d "
                         "associations of its connection are authenticated", key, len(self.associations))
                return None
            assoc = self.associations[key] = self.server.association(key, self.interface)
        else:
            self.associations.move_to_end(key)
        reply = assoc.handle(frame.payload)
        if reply is None:
            return None
        return WrapperFrame(frame.destination_wport, frame.source_wport, reply)

    def _make_room(self) -> bool:
        for rank in (NO_ASSOCIATION, UNAUTHENTICATED):
            for key, assoc in self.associations.items():
                if association_rank(assoc) == rank:
                    del self.associations[key]
                    assoc.release()
                    return True
        return False

    def rank(self) -> int:
        """How much this connection matters: its most valuable association."""
        return max((association_rank(a) for a in self.associations.values()), default=NO_ASSOCIATION)

    def close(self) -> None:
        for assoc in self.associations.values():
            assoc.release()
        self.associations.clear()


def _max_associations(server: "DlmsServer") -> int:
    return max(1, len(server.directory.model.clients))


async def serve_wrapper_tcp(server: "DlmsServer", host: str, port: int, setup=None) -> asyncio.AbstractServer:
    """The LAN/WAN wrapper over TCP, bounded by `setup` (IC 41; default: the model's 0-0:25.0.0.255).

    The returned server's `connections` is its `ConnectionTable`.
    """
    setup = setup if setup is not None else tcp_udp_setup(server)
    if setup is not None:
        setup.serving_port = port
    say = RateLimitedLog(log)
    table = ConnectionTable("wrapper tcp", _wrapper_limits(setup), say)
    max_associations = _max_associations(server)
    loop = asyncio.get_running_loop()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions = _WrapperSessions(server, LAN, say, max_associations)
        slot = table.admit(writer, writer.transport.abort, sessions.rank, loop.time())
        if slot is None:
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peername")
        decoder = WrapperDecoder(max_payload=WRAPPER_MAX_PAYLOAD)
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    if frame.destination_wport == server.server_sap:
                        table.touch(slot, loop.time())
                    reply = sessions.answer(frame)
                    if reply is not None:
                        writer.write(reply.to_bytes())
                await writer.drain()
        except DecodeError as exc:
            say("wrapper.bad_stream", "closing wrapper connection from %s: %s", peer, exc, level=logging.INFO)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer left, the meter closed the connection, or the meter is stopping
        finally:
            table.release(slot)
            sessions.close()
            writer.close()

    listener = await asyncio.start_server(on_connection, host, port)
    listener.connections = table
    _sweep_while(listener.is_serving, table)
    return listener


class _UdpWrapper(asyncio.DatagramProtocol):
    """Associations keyed by peer address and wPort; peers bounded and expired like TCP connections."""

    def __init__(self, server: "DlmsServer", setup) -> None:
        self.server = server
        self.say = RateLimitedLog(log)
        self.connections = ConnectionTable("wrapper udp", _wrapper_limits(setup), self.say)
        self.peers: dict[object, _WrapperSessions] = {}
        self.max_associations = _max_associations(server)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        _sweep_while(lambda: not transport.is_closing(), self.connections)

    def connection_lost(self, exc) -> None:
        self.connections.close_all()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            frame = decode_datagram(data)
        except DecodeError as exc:
            self.say("udp.bad_datagram", "UDP datagram from %s dropped: %s", addr, exc, level=logging.INFO)
            return
        if frame.destination_wport != self.server.server_sap:
            self.say("wrapper.unknown_server_wport", "wrapper frame for unknown server wPort %s dropped",
                     frame.destination_wport, level=logging.INFO)
            return
        now = self.loop.time()
        slot = self.connections.get(addr)
        if slot is None:
            sessions = _WrapperSessions(self.server, LAN, self.say, self.max_associations)
            if self.connections.admit(addr, lambda: self._forget(addr), sessions.rank, now) is None:
                return
            self.peers[addr] = sessions
        else:
            self.connections.touch(slot, now)
        reply = self.peers[addr].answer(frame)
        if reply is not None:
            self.transport.sendto(reply.to_bytes(), addr)

    def _forget(self, addr) -> None:
        sessions = self.peers.pop(addr, None)
        if sessions is not None:
            sessions.close()


async def serve_wrapper_udp(server: "DlmsServer", host: str, port: int, setup=None):
    """The LAN/WAN wrapper over UDP, bounded by `setup` (IC 41; default: the model's 0-0:25.0.0.255).

    Returns the datagram transport; `transport.get_protocol().connections` is its `ConnectionTable`.
    """
    setup = setup if setup is not None else tcp_udp_setup(server)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpWrapper(server, setup), local_addr=(host, port))
    return transport


class HdlcPort:
    """The WZ optical port: one HDLC link and its association, fed bytes from any medium.

    While the port is disabled (`is_open()` false: remote disable or lockout, companion
    standard §4.1.2) it cannot be accessed in any way: input is dropped unanswered and an
    open link is dropped with its association.
    """

    def __init__(self, server: "DlmsServer", params: hdlc.HdlcParameters, physical_address: int,
                 is_open: Callable[[], bool] = lambda: True, say: RateLimitedLog | None = None) -> None:
        self.server = server
        self.say = say or RateLimitedLog(log)
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
                if reply is not None and not self.link.send_apdu(reply) and self.link.connected:
                    self.say("hdlc.response_dropped", "HDLC response dropped: the client did not collect "
                             "the earlier ones (%d bytes waiting)", self.link.pending_output)
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
    """The WZ port as HDLC over TCP. A connection without a frame for the meter for the setup's
    inactivity_time_out is closed (the probe is gone), as is the link it carries; at most
    HDLC_TCP_MAX_CONNECTIONS are held. The returned server's `connections` is its `ConnectionTable`.
    """
    say = RateLimitedLog(log)
    table = ConnectionTable("hdlc tcp", lambda: (HDLC_TCP_MAX_CONNECTIONS,
                                                 float(setup.parameter("inactivity_time_out"))), say)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        params, address = hdlc_parameters(setup)  # per connection: a written setup applies to the next link
        port_ = HdlcPort(server, params, address, is_open, say)
        loop = asyncio.get_running_loop()
        slot = table.admit(writer, writer.transport.abort, lambda: association_rank(port_.association), loop.time())
        if slot is None:
            writer.transport.abort()
            return
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
                if port_.link.last_frame_at is not None:
                    table.touch(slot, port_.link.last_frame_at)
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the peer left, the meter closed the connection, or the meter is stopping
        finally:
            table.release(slot)
            port_.close()
            writer.close()

    listener = await asyncio.start_server(on_connection, host, port)
    listener.connections = table
    _sweep_while(listener.is_serving, table)
    return listener


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
