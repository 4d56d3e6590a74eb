"""The DLMS/COSEM TCP-UDP wrapper (IEC 62056-47 / Green Book 7.3.3), sans-io.

Every APDU is preceded by an 8-byte header of four big-endian Unsigned16:
version (0x0001), source wPort, destination wPort, length of the APDU that follows.

Over TCP the header's length is the only framing, so after a bad header the stream can
no longer be resynchronised: `WrapperDecoder` then refuses all further input and the
transport must close the connection. Over UDP each datagram holds exactly one frame.
"""
from __future__ import annotations

from dataclasses import dataclass

from smartmeter.errors import DecodeError, EncodeError, TruncatedError

WRAPPER_VERSION = 0x0001
HEADER_LENGTH = 8
MAX_PAYLOAD = 0xFFFF

# Reserved wPorts (Green Book 7.3.3.2).
WPORT_NO_STATION = 0
WPORT_CLIENT_MANAGEMENT_PROCESS = 1
WPORT_PUBLIC_CLIENT = 16
WPORT_MANAGEMENT_LOGICAL_DEVICE = 1
WPORT_ALL_STATION = 127


class WrapperError(DecodeError):
    """A wrapper header or datagram that cannot be accepted.

    When raised by `WrapperDecoder.feed`, `frames` holds the complete frames that preceded
    the bad header in the same chunk (the caller may still act on them before closing).
    """

    def __init__(self, what: str, offset: int | None = None, detail: str = "") -> None:
        super().__init__(what, offset, detail)
        self.frames: list[WrapperFrame] = []


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    source_wport: int
    destination_wport: int
    payload: bytes
    version: int = WRAPPER_VERSION

    def to_bytes(self) -> bytes:
        for name in ("source_wport", "destination_wport", "version"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise EncodeError(f"{name} must be in 0..65535, got {value!r}")
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise EncodeError(f"payload must be bytes, got {type(self.payload).__name__}")
        if len(self.payload) > MAX_PAYLOAD:
            raise EncodeError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        return (
            self.version.to_bytes(2, "big")
            + self.source_wport.to_bytes(2, "big")
            + self.destination_wport.to_bytes(2, "big")
            + len(self.payload).to_bytes(2, "big")
            + bytes(self.payload)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WrapperFrame:
        """Exactly one frame, nothing more (same rules as a UDP datagram)."""
        return decode_datagram(data)


def _parse_header(header: bytes, offset: int, max_payload: int) -> tuple[int, int, int]:
    version = int.from_bytes(header[0:2], "big")
    if version != WRAPPER_VERSION:
        raise WrapperError("wrapper header", offset, f"version 0x{version:04X} is not 0x0001")
    length = int.from_bytes(header[6:8], "big")
    if length > max_payload:
        raise WrapperError(
            "wrapper header", offset + 6, f"length {length} exceeds the maximum {max_payload}"
        )
    return int.from_bytes(header[2:4], "big"), int.from_bytes(header[4:6], "big"), length


def decode_datagram(data: bytes, max_payload: int = MAX_PAYLOAD) -> WrapperFrame:
    """One UDP datagram = one frame; its length field must match the datagram exactly."""
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        raise WrapperError("wrapper datagram", 0, f"only {len(data)} bytes, header needs 8")
    source, destination, length = _parse_header(data, 0, max_payload)
    if length != len(data) - HEADER_LENGTH:
        raise WrapperError(
            "wrapper datagram",
            6,
            f"length field says {length} but {len(data) - HEADER_LENGTH} payload bytes follow",
        )
    return WrapperFrame(source, destination, data[HEADER_LENGTH:], WRAPPER_VERSION)


class WrapperDecoder:
    """Reassembles wrapper frames from a TCP byte stream split at arbitrary points."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 0..{MAX_PAYLOAD}")
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of _buffer[0], for error messages
        self._error: WrapperError | None = None

    @property
    def usable(self) -> bool:
        """False once a bad header was seen: the stream cannot be resynchronised."""
        return self._error is None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[WrapperFrame]:
        """Add received bytes; return the frames they complete, in order.

        Raises WrapperError on a bad header (frames completed earlier in the same chunk
        ride along in its `frames`), and again on any later call.
        """
        if self._error is not None:
            raise WrapperError("wrapper stream", None, f"stream unusable after: {self._error}")
        self._buffer += data
        frames: list[WrapperFrame] = []
        pos = 0
        buf = self._buffer
        try:
            while len(buf) - pos >= HEADER_LENGTH:
                source, destination, length = _parse_header(
                    bytes(buf[pos : pos + HEADER_LENGTH]), self._consumed + pos, self.max_payload
                )
                end = pos + HEADER_LENGTH + length
                if end > len(buf):
                    break
                frames.append(
                    WrapperFrame(source, destination, bytes(buf[pos + HEADER_LENGTH : end]))
                )
                pos = end
        except WrapperError as exc:
            exc.frames = frames
            self._error = exc
            self._buffer = bytearray()
            raise
        del buf[:pos]
        self._consumed += pos
        return frames

    def eof(self) -> None:
        """The peer closed the stream: raise TruncatedError if a frame was cut off."""
        if self._buffer:
            raise TruncatedError(
                "wrapper stream", self._consumed, f"{len(self._buffer)} bytes of an incomplete frame"
            )
