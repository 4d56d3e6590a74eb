"""A scripted HDLC primary station for driving `HdlcServerLink` frame by frame.

Unlike `HdlcClientLink` it builds any frame on request (wrong N(S), bad checksums, ...),
so the conformance tests can provoke each error case and check the server's reaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from smartmeter.transport.hdlc import (
    ApduReceived,
    Connected,
    HdlcEvent,
    HdlcParameters,
    HdlcServerLink,
)
from smartmeter.transport.hdlc_frame import (
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameSplitter,
    LLC_COMMAND,
    LLC_RESPONSE,
)

CLIENT = HdlcAddress.client(0x10)
PHYSICAL = 0x11
SERVER = HdlcAddress(1, PHYSICAL, 2)
GET_REQUEST = bytes.fromhex("C001C100080000010000FF0200")  # get clock time
GET_RESPONSE = bytes.fromhex("C401C100090C07E8010F010C1E0000FF8880")  # its octet-string answer


def frame(kind: FrameKind, pf: bool = True, ns: int = 0, nr: int = 0, info: bytes = b"",
          segmented: bool = False, dst: HdlcAddress = SERVER, src: HdlcAddress = CLIENT) -> bytes:
    return HdlcFrame(kind, dst, src, pf, ns, nr, info, segmented).to_bytes()


def parse_all(data: bytes) -> list[HdlcFrame]:
    raws = HdlcFrameSplitter().feed(data)
    frames = [HdlcFrame.from_bytes(raw) for raw in raws]
    assert b"".join(raws) == data, "the link emitted bytes that are not whole frames"
    return frames


@dataclass
class Exchange:
    events: list[HdlcEvent]
    frames: list[HdlcFrame]

    @property
    def only(self) -> HdlcFrame:
        assert len(self.frames) == 1, self.frames
        return self.frames[0]

    @property
    def apdus(self) -> list[bytes]:
        return [e.apdu for e in self.events if isinstance(e, ApduReceived)]


@dataclass
class Primary:
    """Test client: keeps N(S)/N(R) like a well-behaved primary unless told otherwise."""

    params: HdlcParameters = field(default_factory=HdlcParameters)
    logical_devices: frozenset = frozenset({1})
    max_apdu_length: int = 8192
    now: float = 0.0
    ns: int = 0
    nr: int = 0

    def __post_init__(self) -> None:
        self.link = HdlcServerLink(PHYSICAL, self.logical_devices, self.params,
                                   max_apdu_length=self.max_apdu_length)

    # -- raw access

    def send(self, data: bytes, dt: float = 0.001) -> Exchange:
        self.now += dt
        events = self.link.receive(data, self.now)
        return Exchange(events, parse_all(self.link.take_output()))

    def respond(self, apdu: bytes) -> Exchange:
        self.link.send_apdu(apdu)
        return Exchange([], parse_all(self.link.take_output()))

    # -- well-formed steps

    def connect(self, info: bytes = b"") -> Exchange:
        exchange = self.send(frame(FrameKind.SNRM, info=info))
        assert exchange.only.kind is FrameKind.UA
        assert any(isinstance(e, Connected) for e in exchange.events)
        self.ns = self.nr = 0
        return exchange

    def i_frame(self, info: bytes, pf: bool = True, segmented: bool = False) -> bytes:
        raw = frame(FrameKind.I, pf, self.ns, self.nr, info, segmented)
        self.ns = (self.ns + 1) % 8
        return raw

    def take_i_frames(self, frames: list[HdlcFrame]) -> bytes:
        """Accept the server's I-frames in order (checking N(S)); returns their information."""
        data = b""
        for f in frames:
            assert f.kind is FrameKind.I, f
            assert f.send_seq == self.nr, (f.send_seq, self.nr)
            assert f.recv_seq == self.ns
            self.nr = (self.nr + 1) % 8
            data += f.information
        return data

    def request(self, apdu: bytes = GET_REQUEST) -> Exchange:
        """Send a one-frame request; the server link must deliver it."""
        exchange = self.send(self.i_frame(LLC_COMMAND + apdu))
        assert exchange.apdus == [apdu]
        assert exchange.frames == []  # the poll is held for the application's answer
        return exchange

    def round_trip(self, apdu: bytes = GET_REQUEST, answer: bytes = GET_RESPONSE) -> None:
        """A complete request/response: proves the link is usable."""
        self.request(apdu)
        reply = self.respond(answer)
        assert reply.only.poll_final and not reply.only.segmented
        assert self.take_i_frames(reply.frames) == LLC_RESPONSE + answer
