"""The sending side of the IEC 62056-47 wrapper for pushes: one-way messages over TCP or UDP.

A push (IC 40 send_destination_and_method, companion standard §10.6) names its destination as
text: `x.x.x.x:port` (IPv4, the WAN push over TCP) or `[x:x::x]:port` (IPv6, the LAN push over
UDP). Only literal addresses: the meter resolves no names, so a push never waits for DNS.

Each APDU travels in one wrapper message (`smartmeter.transport.wrapper.WrapperFrame`). Over TCP
an attempt succeeds when every byte was acknowledged by the peer's TCP (companion §10.7: "the
ACK on TCP level has been received"); over UDP nothing is ever confirmed.
"""
from __future__ import annotations

import array
import asyncio
import ipaddress
import re
import socket
import sys
from dataclasses import dataclass
from typing import Iterable

from smartmeter.errors import SmartmeterError
from smartmeter.transport.wrapper import WrapperFrame

ACK_POLL = 0.005  # s between looks at the unacknowledged bytes of a TCP connection

_DESTINATION = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<ipv4>[0-9.]+)):(?P<port>[0-9]{1,5})")


class DeliveryFailed(SmartmeterError):
    """One attempt to deliver a push did not complete (refused, timed out, reset, unreachable)."""


@dataclass(frozen=True, slots=True)
class Destination:
    address: str  # literal IPv4 or IPv6 address, no brackets
    port: int
    family: int  # socket.AF_INET or socket.AF_INET6

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.address}:{self.port}"


def parse_destination(text: str | bytes) -> Destination:
    """`x.x.x.x:port` or `[ipv6]:port` (port 1..65535); ValueError for anything else."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("destination is not ASCII text") from None
    match = _DESTINATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"destination {text!r} is neither x.x.x.x:port nor [ipv6]:port")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"destination port {port} is outside 1..65535")
    if match["ipv6"] is not None:
        try:
            address = ipaddress.IPv6Address(match["ipv6"])
        except ValueError as exc:
            raise ValueError(f"destination address: {exc}") from None
        return Destination(str(address), port, socket.AF_INET6)
    try:
        address = ipaddress.IPv4Address(match["ipv4"])
    except ValueError as exc:
        raise ValueError(f"destination address: {exc}") from None
    return Destination(str(address), port, socket.AF_INET)


def wrapper_messages(apdus: Iterable[bytes], source_wport: int, destination_wport: int) -> tuple[bytes, ...]:
    """One wrapper message per APDU (EncodeError when an APDU or wPort does not fit the header)."""
    return tuple(WrapperFrame(source_wport, destination_wport, bytes(apdu)).to_bytes() for apdu in apdus)


def _unacknowledged(sock) -> int | None:
    """Bytes sent but not yet acknowledged by the peer (Linux SIOCOUTQ); None where unknown."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl
    import termios

    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, count)  # TIOCOUTQ == SIOCOUTQ
    except OSError:
        return None
    return count[0]


async def send_tcp(destination: Destination, messages: Iterable[bytes], timeout: float) -> None:
    """Connect, write every message, wait for the peer's TCP to acknowledge them, close.

    `timeout` bounds the connection and, separately, the writing and acknowledgement.
    Raises DeliveryFailed when any of it does not complete.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(destination.address, destination.port, family=destination.family), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise DeliveryFailed(f"cannot connect to {destination}: {exc.__class__.__name__} {exc}") from None
    try:
        await asyncio.wait_for(_write_acknowledged(writer, messages), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        writer.transport.abort()
        raise DeliveryFailed(f"{destination} did not take the push: {exc.__class__.__name__} {exc}") from None
    except BaseException:
        writer.transport.abort()  # cancelled (the sender is closing): no half-open connection stays
        raise
    writer.close()


async def _write_acknowledged(writer: asyncio.StreamWriter, messages: Iterable[bytes]) -> None:
    for message in messages:
        writer.write(message)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    while True:
        if writer.transport.is_closing():
            raise ConnectionResetError("connection closed before the push was acknowledged")
        pending = _unacknowledged(sock) if sock is not None else None
        if pending is None or (pending == 0 and writer.transport.get_write_buffer_size() == 0):
            return  # where the platform cannot tell, a drained write is the best confirmation there is
        await asyncio.sleep(ACK_POLL)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: OSError | None = None

    def error_received(self, exc: OSError) -> None:
        self.error = exc


async def send_udp(destination: Destination, messages: Iterable[bytes]) -> None:
    """One datagram per message from an ephemeral port; raises DeliveryFailed if the host could not send.

    The socket is not connected, so an ICMP "port unreachable" from an earlier datagram cannot
    make a later one fail: UDP pushes are sent whether or not anyone listens.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(_Datagrams, family=destination.family)
    except OSError as exc:
        raise DeliveryFailed(f"cannot open a UDP socket for {destination}: {exc}") from None
    try:
        target = (destination.address, destination.port)
        for message in messages:
            transport.sendto(message, target)
            if protocol.error is not None:
                raise DeliveryFailed(f"UDP to {destination}: {protocol.error}")
    finally:
        transport.close()


