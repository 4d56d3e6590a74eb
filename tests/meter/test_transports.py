"""The meter's other ways in: the UDP wrapper, and HDLC on a real serial (pty) device."""
from __future__ import annotations

import os
import select
import socket
import time
import tty

from meterproc import start_meter
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.client import ClientAssociation, GetExchange
from smartmeter.transport import hdlc
from smartmeter.transport.wrapper import WrapperFrame, decode_datagram

LDN = CosemAttributeDescriptor(1, bytes([0, 0, 42, 0, 0, 255]), 2)


def test_udp_wrapper(meter):
    association = ClientAssociation()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        target = ("127.0.0.1", meter.wrapper_port)

        def exchange(apdu: bytes) -> bytes:
            udp.sendto(WrapperFrame(16, 1, apdu).to_bytes(), target)
            frame = decode_datagram(udp.recv(4096))
            assert (frame.source_wport, frame.destination_wport) == (1, 16)
            return frame.payload

        association.on_aare(exchange(association.aarq()))
        get = GetExchange(LDN)
        assert get.feed(exchange(get.first())) is None
        assert get.result.value == b"KFM1000100000001"
        udp.sendto(b"\x00\x02garbage", target)  # wrong version: dropped, the port stays up
        get = GetExchange(LDN)
        assert get.feed(exchange(get.first())) is None


def test_hdlc_on_a_serial_device(tmp_path):
    controller, device = os.openpty()
    tty.setraw(controller)
    meter = start_meter(tmp_path, "--serial", os.ttyname(device))
    try:
        link = hdlc.HdlcClientLink(16, 1, 0x10, hdlc.HdlcParameters())
        association = ClientAssociation()

        def pump(want) -> object:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                out = link.take_output()
                if out:
                    os.write(controller, out)
                ready, _, _ = select.select([controller], [], [], 0.2)
                if ready:
                    for event in link.receive(os.read(controller, 4096), time.monotonic()):
                        if isinstance(event, want):
                            os.write(controller, link.take_output())
                            return event
            raise AssertionError(f"no {want.__name__} from the serial port")

        os.write(controller, link.connect())
        pump(hdlc.Connected)
        link.send_apdu(association.aarq())
        association.on_aare(pump(hdlc.ApduReceived).apdu)
        get = GetExchange(LDN)
        link.send_apdu(get.first())
        assert get.feed(pump(hdlc.ApduReceived).apdu) is None
        assert get.result.value == b"KFM1000100000001"
    finally:
        meter.stop()
        os.close(controller)
        os.close(device)
