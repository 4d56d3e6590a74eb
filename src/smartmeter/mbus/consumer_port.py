"""DLMS/COSEM over wired M-Bus for the H1 consumer interface, push only (companion standard
§4.2.1, which selects from Green Book 10.5: broadcast MBUS-DATA.request, LLA 0xFF, transport
CI 0x00-0x1F without a data header, the M-Bus wrapper's SAPs). Sans-io: bytes in, bytes out.

One xDLMS APDU (the protected data-notification) travels as one or more segments, each an
SND_UD long frame to the broadcast address::

    68 L L 68 | 53 | FF | CI | 01 | 67 | APDU part | CS | 16

CI is the transport segment field: bits 0-3 the segment's sequence number (0, 1, ...), bit 4
set on the last segment, so a two-segment APDU goes as CI 0x00 then 0x11 (the Austrian
example in tests/mbus/test_consumer_frames.py). 01 and 67 are the wrapper's source (the
meter's management logical device) and destination (the CIP client, SAP 103) SAPs; every
segment carries them.

`segment_frames` cuts an APDU into frames; `ConsumerPushReader` is the consumer's side
(frames off a byte stream, segments reassembled into APDUs), total and bounded, for our
tests and tools.

Segment size: a frame's L is at most SEGMENT_L (0xFA), the length the Austrian meters send
and consumer devices look for (docs/decisions.md "H1 consumer port"): 245 APDU octets per
frame. Four bits of sequence number give at most MAX_SEGMENTS frames, so an APDU of more than
MAX_APDU octets is not sent (20 push entries of attribute 0 stay far below it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from smartmeter.errors import DecodeError, EncodeError
from smartmeter.mbus.link import (
    ADDRESS_BROADCAST, SND_UD, BadFrame, FrameReader, LongFrame, decode_frame,
)

SERVER_SAP = 0x01  # the management logical device (companion §4.2.1)
CIP_CLIENT_SAP = 0x67  # client SAP 103, the consumer information push client
WRAPPER_BYTES = 2  # source and destination SAP before each APDU part
LAST_SEGMENT = 0x10  # CI bit 4
SEQUENCE_MASK = 0x0F  # CI bits 0-3
TRANSPORT_CI_MAX = 0x1F
SEGMENT_L = 0xFA  # C, A, CI, the wrapper and the APDU part
SEGMENT_APDU_BYTES = SEGMENT_L - 3 - WRAPPER_BYTES  # 245
MAX_SEGMENTS = SEQUENCE_MASK + 1
MAX_APDU = MAX_SEGMENTS * SEGMENT_APDU_BYTES


class ConsumerSegmentError(DecodeError):
    """A frame that is not a segment of a consumer push (not SND_UD, not a transport CI, no wrapper)."""


class ConsumerSequenceError(DecodeError):
    """Segments out of order: a sequence number that does not follow the last one."""


def segment_frames(apdu: bytes, address: int = ADDRESS_BROADCAST, source_sap: int = SERVER_SAP,
                   destination_sap: int = CIP_CLIENT_SAP, segment_bytes: int = SEGMENT_APDU_BYTES) -> list[bytes]:
    """The frames, in sending order, that carry `apdu` to `address` (EncodeError when it does not fit)."""
    apdu = bytes(apdu)
    if not apdu:
        raise EncodeError("a consumer push carries an APDU, not nothing")
    if not 1 <= segment_bytes <= SEGMENT_APDU_BYTES:
        raise EncodeError(f"a segment carries 1..{SEGMENT_APDU_BYTES} APDU octets, not {segment_bytes}")
    parts = [apdu[i:i + segment_bytes] for i in range(0, len(apdu), segment_bytes)]
    if len(parts) > MAX_SEGMENTS:
        raise EncodeError(f"an APDU of {len(apdu)} octets needs {len(parts)} segments; "
                          f"the transport numbers at most {MAX_SEGMENTS}")
    wrapper = bytes([source_sap, destination_sap])
    return [LongFrame(SND_UD, address, n | (LAST_SEGMENT if n == len(parts) - 1 else 0), wrapper + part).to_bytes()
            for n, part in enumerate(parts)]


@dataclass(frozen=True, slots=True)
class Segment:
    """One consumer push frame, as decoded."""

    address: int
    sequence: int
    last: bool
    source_sap: int
    destination_sap: int
    part: bytes


def decode_segment(frame: bytes | LongFrame) -> Segment:
    """One frame's segment; MbusFrameError for a bad frame, ConsumerSegmentError for a frame
    that is fine on the link but no consumer push segment."""
    if not isinstance(frame, LongFrame):
        decoded = decode_frame(frame)
        if not isinstance(decoded, LongFrame):
            raise ConsumerSegmentError("consumer push segment", 0, f"a {type(decoded).__name__}, not a long frame")
        frame = decoded
    if frame.c != SND_UD:
        raise ConsumerSegmentError("consumer push segment", 4, f"C field 0x{frame.c:02X}, not SND_UD 0x53")
    if frame.ci > TRANSPORT_CI_MAX:
        raise ConsumerSegmentError("consumer push segment", 6, f"CI 0x{frame.ci:02X} is no transport segment field")
    if len(frame.data) <= WRAPPER_BYTES:
        raise ConsumerSegmentError("consumer push segment", 7, "no APDU part after the wrapper SAPs")
    return Segment(frame.a, frame.ci & SEQUENCE_MASK, bool(frame.ci & LAST_SEGMENT), frame.data[0], frame.data[1],
                   frame.data[WRAPPER_BYTES:])


@dataclass(frozen=True, slots=True)
class ConsumerApdu:
    """A reassembled APDU and the segments it came in."""

    apdu: bytes
    segments: int
    source_sap: int
    destination_sap: int


@dataclass(frozen=True, slots=True)
class Discarded:
    """What the reader threw away: a bad frame, a foreign frame or an unfinished APDU."""

    error: DecodeError
    raw: bytes = b""


ReaderItem = Union[ConsumerApdu, Discarded]


class ConsumerPushReader:
    """The consumer's side: `feed(bytes)`, then iterate for ConsumerApdu or Discarded items.

    A segment with sequence number 0 starts an APDU (one in progress is discarded); the next
    ones must count up by one; the segment flagged last completes it. At most MAX_SEGMENTS
    segments are held, so the memory it takes is bounded whatever arrives (the frame reader
    buffers at most one frame).
    """

    def __init__(self) -> None:
        self.frames = FrameReader()
        self._parts: list[Segment] = []
        self._out: list[ReaderItem] = []

    def feed(self, data: bytes) -> None:
        self.frames.feed(data)
        for item in self.frames:
            if isinstance(item, BadFrame):
                self._emit(Discarded(item.error, item.raw))
                continue
            if not isinstance(item, LongFrame):  # an E5, a short or a control frame: no push on H1
                self._emit(Discarded(ConsumerSegmentError("consumer push segment", 0, f"a {type(item).__name__}"),
                                     item.to_bytes()))
                continue
            try:
                segment = decode_segment(item)
            except ConsumerSegmentError as exc:
                self._emit(Discarded(exc, item.to_bytes()))
                continue
            self._take(segment)

    def _take(self, segment: Segment) -> None:
        due = len(self._parts)
        if segment.sequence == 0 and due:
            self._drop("a new APDU began before the last segment of the one before")
        elif segment.sequence != due:
            self._parts.clear()
            self._emit(Discarded(ConsumerSequenceError("consumer push segment", None,
                                                       f"sequence number {segment.sequence} where {due} was due")))
            return
        self._parts.append(segment)
        if segment.last:
            parts, self._parts = self._parts, []
            self._emit(ConsumerApdu(b"".join(p.part for p in parts), len(parts), parts[0].source_sap,
                                    parts[0].destination_sap))
        elif len(self._parts) == MAX_SEGMENTS:
            self._drop(f"{MAX_SEGMENTS} segments without a last one")

    def _drop(self, why: str) -> None:
        self._parts.clear()
        self._emit(Discarded(ConsumerSequenceError("consumer push APDU", None, why)))

    def _emit(self, item: ReaderItem) -> None:
        self._out.append(item)
        if len(self._out) > 4 * MAX_SEGMENTS:  # nobody takes them: keep the newest
            del self._out[0]

    def __iter__(self) -> Iterator[ReaderItem]:
        while self._out:
            yield self._out.pop(0)

    def take(self) -> list[ReaderItem]:
        items, self._out = self._out, []
        return items


def reassemble(stream: bytes) -> list[bytes]:
    """The APDUs a byte stream of consumer push frames carries, in order (what cannot be read is left out)."""
    reader = ConsumerPushReader()
    reader.feed(stream)
    return [item.apdu for item in reader if isinstance(item, ConsumerApdu)]
