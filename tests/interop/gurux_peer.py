"""gurux-dlms (PyPI, GPL) driven as a black-box client over a real socket.

Only the public client API of gurux_dlms is used: it builds every request frame and
parses every reply; this module only moves bytes between it and the socket, the way
Gurux's own client example does (readDLMSPacket / readDataBlock).
"""
from __future__ import annotations

import socket

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType


class GuruxClient:
    def __init__(self, port: int, *, hdlc: bool = False, client_address: int = 16,
                 logical_device: int = 1, physical_address: int = 0x10, timeout: float = 10.0) -> None:
        self.hdlc = hdlc
        self.client = GXDLMSClient(True, client_address, logical_device, Authentication.NONE, None,
                                   InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER)
        if hdlc:
            self.client.serverAddress = GXDLMSClient.getServerAddress(logical_device, physical_address)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    # -- byte moving, as in Gurux's client example ----------------------------------------
    def _packet(self, data, reply: GXReplyData) -> None:
        if data is not None:
            self.sock.sendall(bytes(data))
        rd = GXByteBuffer()
        notify = GXReplyData()
        while not self.client.getData(rd, reply, notify):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("meter closed the connection")
            rd.set(chunk)

    def _block(self, data, reply: GXReplyData) -> None:
        self._packet(data, reply)
        while reply.isMoreData():
            data = None if reply.isStreaming() else self.client.receiverReady(reply)
            self._packet(data, reply)

    def transfer(self, frames) -> GXReplyData:
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            reply.clear()
            self._block(frame, reply)
        return reply

    # -- operations ---------------------------------------------------------------------
    def associate(self) -> None:
        if self.hdlc:
            reply = self.transfer(self.client.snrmRequest())
            self.client.parseUAResponse(reply.data)
        reply = self.transfer(self.client.aarqRequest())
        self.client.parseAareResponse(reply.data)

    def objects(self):
        reply = self.transfer(self.client.getObjectsRequest())
        return self.client.parseObjects(reply.data, True)

    def read(self, obj, attribute: int):
        reply = self.transfer(self.client.read(obj, attribute))
        return self.client.updateValue(obj, attribute, reply.value)

    def rows_by_entry(self, profile, index: int, count: int):
        reply = self.transfer(self.client.readRowsByEntry(profile, index, count))
        return self.client.updateValue(profile, 2, reply.value)

    def rows_by_range(self, profile, start, end):
        reply = self.transfer(self.client.readRowsByRange(profile, start, end))
        return self.client.updateValue(profile, 2, reply.value)

    def close(self) -> None:
        try:
            self.transfer(self.client.releaseRequest())
            if self.hdlc:
                self.transfer(self.client.disconnectRequest())
        finally:
            self.sock.close()
