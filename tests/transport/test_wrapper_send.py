"""Sending wrapper messages one way (the push side of IEC 62056-47) to loopback listeners."""
from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from smartmeter.transport.wrapper import WrapperDecoder, WrapperFrame, decode_datagram
from smartmeter.transport.wrapper_send import (
    DeliveryFailed,
    Destination,
    parse_destination,
    send_tcp,
    send_udp,
    wrapper_messages,
)


@pytest.mark.parametrize("text, address, port, family", [
    ("192.0.2.10:4059", "192.0.2.10", 4059, socket.AF_INET),
    (b"10.0.0.1:1", "10.0.0.1", 1, socket.AF_INET),
    ("[2001:DB8::1]:65535", "2001:db8::1", 65535, socket.AF_INET6),
    ("[::ffff:192.0.2.1]:4059", "::ffff:c000:201", 4059, socket.AF_INET6),
    ("[fe80:0:0:0:0:0:0:1]:4059", "fe80::1", 4059, socket.AF_INET6),
])
def test_destinations_of_the_lan_and_wan_pushes(text, address, port, family):
    assert parse_destination(text) == Destination(address, port, family)


def test_a_destination_prints_as_it_is_written():
    assert str(parse_destination("[2001:db8::1]:4059")) == "[2001:db8::1]:4059"
    assert str(parse_destination("192.0.2.10:4059")) == "192.0.2.10:4059"


def test_each_apdu_gets_its_own_wrapper_header():
    messages = wrapper_messages([b"\x0f\x01", b"\xe0" * 300], 1, 2)
    assert messages[0] == bytes.fromhex("0001 0001 0002 0002 0f01")
    assert decode_datagram(messages[1]) == WrapperFrame(1, 2, b"\xe0" * 300)


def test_tcp_delivers_every_message_in_order():
    apdus = [bytes([n]) * (100 * n + 1) for n in range(5)]

    async def scenario():
        got = asyncio.get_running_loop().create_future()

        async def on_connection(reader, writer):
            decoder = WrapperDecoder()
            frames = []
            while data := await reader.read(65536):
                frames += decoder.feed(data)
            got.set_result(frames)

        server = await asyncio.start_server(on_connection, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        await send_tcp(parse_destination(f"[::1]:{port}"), wrapper_messages(apdus, 1, 2), 5.0)
        frames = await asyncio.wait_for(got, 5)
        server.close()
        return frames

    assert [f.payload for f in asyncio.run(scenario())] == apdus


def test_tcp_fails_when_the_peer_takes_the_connection_but_not_the_data():
    """Accepted by the peer's kernel, never read: more than its buffers hold is never written
    (the drain cannot complete) nor acknowledged, on any platform."""
    messages = [WrapperFrame(1, 2, bytes(65535)).to_bytes()] * 400  # 26 MB, beyond any loopback buffer

    async def scenario():
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)  # the kernel accepts the connection; nobody reads it
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DeliveryFailed, match="did not take the push"):
                await send_tcp(parse_destination("127.0.0.1:%d" % listener.getsockname()[1]), messages, 0.5)
            return loop.time() - started

    assert asyncio.run(scenario()) < 2.0


def test_tcp_to_a_closed_port_fails_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario():
        with pytest.raises(DeliveryFailed, match="cannot connect"):
            await send_tcp(parse_destination(f"127.0.0.1:{port}"), wrapper_messages([b"x"], 1, 2), 5.0)

    asyncio.run(scenario())


def test_udp_sends_one_datagram_per_message():
    apdus = [b"\x0f" + bytes([n]) * 20 for n in range(3)]

    async def scenario():
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as listener:
            listener.bind(("::1", 0))
            listener.settimeout(2)
            await send_udp(parse_destination("[::1]:%d" % listener.getsockname()[1]), wrapper_messages(apdus, 1, 2))
            return [decode_datagram(listener.recv(4096)) for _ in apdus]

    assert [f.payload for f in asyncio.run(scenario())] == apdus


def test_tcp_waits_for_the_acknowledgement_not_just_the_write(monkeypatch):
    """Written and drained is not enough: while the socket reports unacknowledged bytes the
    attempt has not succeeded, and if that lasts past the timeout it failed."""
    import smartmeter.transport.wrapper_send as wrapper_send

    looks = []

    def never_acknowledged(sock):
        looks.append(sock)
        return 7

    monkeypatch.setattr(wrapper_send, "_unacknowledged", never_acknowledged)

    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(DeliveryFailed, match="did not take the push"):
            await send_tcp(parse_destination(f"127.0.0.1:{port}"), wrapper_messages([b"x"], 1, 2), 0.2)
        server.close()

    asyncio.run(scenario())
    assert len(looks) > 1


def test_the_unacknowledged_bytes_of_a_loopback_connection_drop_to_zero():
    """Linux tells the bytes the peer has not acknowledged (SIOCOUTQ); elsewhere the count is
    unknown (None) and a drained write is the confirmation."""
    import time

    from smartmeter.transport.wrapper_send import _unacknowledged

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as client:
            client.sendall(b"x" * 1000)
            deadline = time.monotonic() + 2
            while _unacknowledged(client) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert _unacknowledged(client) == (0 if sys.platform.startswith("linux") else None)
