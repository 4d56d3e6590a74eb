"""HDLC frame codec of IEC 62056-46 (frame format type 3), without any link state.

A frame on the wire::

    7E | format (2) | destination (1/2/4) | source (1/2/4) | control (1) |
         [HCS (2) | information (n)] | FCS (2) | 7E

* format = ``1010 S LLL LLLLLLLL``: type 3, segmentation bit S, 11-bit length that counts
  every byte between the two flags.
* HCS covers format..control and is present only when there is an information field;
  FCS covers everything between the flags except itself. Both are CRC-16/X.25
  (a.k.a. CRC-16/IBM-SDLC), sent least significant byte first.
* DLMS HDLC uses no byte stuffing: frames are delimited by their length field, which is
  why `HdlcFrameSplitter` reads the length instead of searching for the closing flag.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from smartmeter.errors import DecodeError, EncodeError, TruncatedError

FLAG = 0x7E
FORMAT_TYPE_3 = 0xA0
SEGMENTATION_BIT = 0x08
# The 11-bit length field counts the bytes between the flags; with both flags a frame is
# at most 2049 bytes. Nothing longer is ever buffered.
MAX_FRAME_LENGTH = 0x7FF
MAX_FRAME_BYTES = MAX_FRAME_LENGTH + 2

# LLC headers of IEC 62056-46 §6.2: destination LSAP, source LSAP, quality.
LLC_COMMAND = b"\xE6\xE6\x00"
LLC_RESPONSE = b"\xE6\xE7\x00"

# Special HDLC addresses of IEC 62056-46 §6.4.2.2 (upper / lower, 1-byte and 2-byte forms).
ALL_STATION_1 = 0x7F
ALL_STATION_2 = 0x3FFF
NO_STATION = 0x00


class HdlcError(DecodeError):
    """Malformed HDLC frame or parameter field."""


class HdlcTruncatedError(HdlcError, TruncatedError):
    """The frame ended before its declared length or before a mandatory field."""


class HdlcChecksumError(HdlcError):
    """HCS or FCS does not match the frame content."""


class HdlcAddressError(HdlcError):
    """An address field is not 1, 2 or 4 bytes long, or does not end."""


class HdlcControlError(HdlcError):
    """The control field names a frame type this implementation does not know.

    The frame is otherwise intact (checksums verified), so the addresses are kept: a
    secondary station answers such a command with FRMR (W bit), which needs them.
    """

    def __init__(self, control: int, destination: "HdlcAddress", source: "HdlcAddress",
                 poll_final: bool, has_information: bool) -> None:
        super().__init__("HDLC control field", 0, f"unknown control byte 0x{control:02X}")
        self.control = control
        self.destination = destination
        self.source = source
        self.poll_final = poll_final
        self.has_information = has_information


# --------------------------------------------------------------------------------------
# CRC-16/X.25: reflected polynomial 0x1021 (0x8408), init 0xFFFF, final XOR 0xFFFF.


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25 of `data` (check value of b"123456789" is 0x906E)."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def checksum_bytes(data: bytes) -> bytes:
    """HCS/FCS as transmitted: CRC-16/X.25, least significant byte first."""
    return crc16_x25(data).to_bytes(2, "little")


# --------------------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True)
class HdlcAddress:
    """An HDLC address field.

    A server address is ``upper`` (logical device) plus optional ``lower`` (physical
    device). The encoded length is 1 byte (upper only, 7 bits), 2 bytes (7 + 7 bits) or
    4 bytes (14 + 14 bits). A client address is ``upper`` alone in one byte.
    Each encoded byte carries 7 address bits above an extension bit that is 1 on the last
    byte only.
    """

    upper: int
    lower: int | None = None
    length: int = 0  # 0 chooses the shortest form that holds the values

    def __post_init__(self) -> None:
        if self.length == 0:
            if self.lower is None:
                length = 1 if self.upper <= 0x7F else 0
            elif self.upper <= 0x7F and self.lower <= 0x7F:
                length = 2
            else:
                length = 4
            object.__setattr__(self, "length", length)
        if self.length not in (1, 2, 4):
            raise EncodeError(f"HDLC address {self.upper}/{self.lower} does not fit 1, 2 or 4 bytes")
        if self.length == 1:
            if self.lower is not None or not 0 <= self.upper <= 0x7F:
                raise EncodeError("a 1-byte HDLC address holds one 7-bit value")
        else:
            limit = 0x7F if self.length == 2 else 0x3FFF
            if self.lower is None or not (0 <= self.upper <= limit and 0 <= self.lower <= limit):
                raise EncodeError(f"a {self.length}-byte HDLC address holds two values <= {limit}")

    @classmethod
    def client(cls, address: int) -> "HdlcAddress":
        return cls(address, None, 1)

    @classmethod
    def server(cls, upper: int, lower: int | None = None, length: int = 0) -> "HdlcAddress":
        return cls(upper, lower, length)

    def to_bytes(self) -> bytes:
        if self.length == 1:
            return bytes([(self.upper << 1) | 1])
        if self.length == 2:
            return bytes([self.upper << 1, (self.lower << 1) | 1])  # type: ignore[operator]
        lower = self.lower or 0
        return bytes([
            (self.upper >> 6) & 0xFE, (self.upper << 1) & 0xFE,
            (lower >> 6) & 0xFE, ((lower << 1) & 0xFE) | 1,
        ])

    @classmethod
    def parse(cls, data: bytes, offset: int) -> tuple["HdlcAddress", int]:
        """Decode the address starting at `offset`; returns it and the offset after it."""
        end = offset
        while True:
            if end >= len(data):
                raise HdlcTruncatedError("HDLC address", offset, "no byte with the extension bit")
            if end - offset >= 4:
                raise HdlcAddressError("HDLC address", offset, "longer than 4 bytes")
            if data[end] & 1:
                break
            end += 1
        raw = data[offset:end + 1]
        if len(raw) == 1:
            return cls(raw[0] >> 1, None, 1), end + 1
        if len(raw) == 2:
            return cls(raw[0] >> 1, raw[1] >> 1, 2), end + 1
        if len(raw) == 4:
            upper = ((raw[0] >> 1) << 7) | (raw[1] >> 1)
            lower = ((raw[2] >> 1) << 7) | (raw[3] >> 1)
            return cls(upper, lower, 4), end + 1
        raise HdlcAddressError("HDLC address", offset, "3-byte address field")

    @classmethod
    def from_bytes(cls, data: bytes) -> "HdlcAddress":
        address, end = cls.parse(data, 0)
        if end != len(data):
            raise HdlcAddressError("HDLC address", end, "bytes after the last address byte")
        return address


# --------------------------------------------------------------------------------------
# Control field


class FrameKind(enum.Enum):
    I = "I"  # noqa: E741 - the standard's name
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


POLL_FINAL_BIT = 0x10

# Control bytes of the unnumbered frames with P/F = 0 (IEC 62056-46 §6.4.3).
_UNNUMBERED = {
    FrameKind.SNRM: 0x83,
    FrameKind.DISC: 0x43,
    FrameKind.UA: 0x63,
    FrameKind.DM: 0x0F,
    FrameKind.FRMR: 0x87,
    FrameKind.UI: 0x03,
}
_UNNUMBERED_BY_BYTE = {value: kind for kind, value in _UNNUMBERED.items()}
_SUPERVISORY = {FrameKind.RR: 0x01, FrameKind.RNR: 0x05}
_SUPERVISORY_BY_BYTE = {value: kind for kind, value in _SUPERVISORY.items()}

# Frame kinds that may carry an information field.
KINDS_WITH_INFORMATION = frozenset({FrameKind.I, FrameKind.UI, FrameKind.SNRM, FrameKind.UA,
                                    FrameKind.FRMR, FrameKind.DM})


def encode_control(kind: FrameKind, poll_final: bool = False, send_seq: int = 0,
                   recv_seq: int = 0) -> int:
    pf = POLL_FINAL_BIT if poll_final else 0
    if kind is FrameKind.I:
        return ((recv_seq & 7) << 5) | pf | ((send_seq & 7) << 1)
    if kind in _SUPERVISORY:
        return ((recv_seq & 7) << 5) | pf | _SUPERVISORY[kind]
    return _UNNUMBERED[kind] | pf


def decode_control(byte: int) -> tuple[FrameKind, bool, int, int] | None:
    """(kind, poll_final, N(S), N(R)) of a control byte, or None when it is unknown."""
    poll_final = bool(byte & POLL_FINAL_BIT)
    if byte & 1 == 0:
        return FrameKind.I, poll_final, (byte >> 1) & 7, byte >> 5
    if byte & 3 == 1:
        kind = _SUPERVISORY_BY_BYTE.get(byte & 0x0F)
        return None if kind is None else (kind, poll_final, 0, byte >> 5)
    kind = _UNNUMBERED_BY_BYTE.get(byte & ~POLL_FINAL_BIT & 0xFF)
    return None if kind is None else (kind, poll_final, 0, 0)


# --------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class HdlcFrame:
    """One HDLC frame. ``send_seq``/``recv_seq`` are N(S)/N(R) (0 where not used)."""

    kind: FrameKind
    destination: HdlcAddress
    source: HdlcAddress
    poll_final: bool = False
    send_seq: int = 0
    recv_seq: int = 0
    information: bytes = b""
    segmented: bool = False

    @property
    def control(self) -> int:
        return encode_control(self.kind, self.poll_final, self.send_seq, self.recv_seq)

    def to_bytes(self) -> bytes:
        if not 0 <= self.send_seq <= 7 or not 0 <= self.recv_seq <= 7:
            raise EncodeError("HDLC sequence numbers are 0..7")
        if self.information and self.kind not in KINDS_WITH_INFORMATION:
            raise EncodeError(f"a {self.kind.value} frame carries no information field")
        dst = self.destination.to_bytes()
        src = self.source.to_bytes()
        length = 2 + len(dst) + len(src) + 1 + 2
        if self.information:
            length += 2 + len(self.information)
        if length > MAX_FRAME_LENGTH:
            raise EncodeError(f"HDLC frame of {length} bytes exceeds the 11-bit length field")
        fmt = FORMAT_TYPE_3 | (SEGMENTATION_BIT if self.segmented else 0) | (length >> 8)
        header = bytes([fmt, length & 0xFF]) + dst + src + bytes([self.control])
        body = header
        if self.information:
            body += checksum_bytes(header) + self.information
        return bytes([FLAG]) + body + checksum_bytes(body) + bytes([FLAG])

    @classmethod
    def from_bytes(cls, data: bytes) -> "HdlcFrame":
        """Decode a whole frame, opening and closing flag included."""
        data = bytes(data)
        if len(data) < 9:
            raise HdlcTruncatedError("HDLC frame", len(data), "shorter than the smallest frame")
        if data[0] != FLAG:
            raise HdlcError("HDLC frame", 0, "no opening flag")
        if data[1] & 0xF0 != FORMAT_TYPE_3:
            raise HdlcError("HDLC frame format", 1, f"not frame format type 3 (0x{data[1]:02X})")
        length = ((data[1] & 0x07) << 8) | data[2]
        if length + 2 > len(data):
            raise HdlcTruncatedError("HDLC frame", len(data),
                                     f"declared length {length} exceeds the {len(data) - 2} bytes present")
        if length + 2 < len(data):
            raise HdlcError("HDLC frame", length + 2, "bytes after the declared length")
        if data[-1] != FLAG:
            raise HdlcError("HDLC frame", len(data) - 1, "no closing flag")
        segmented = bool(data[1] & SEGMENTATION_BIT)
        body = data[1:-1]  # format .. FCS
        destination, pos = HdlcAddress.parse(body, 2)
        source, pos = HdlcAddress.parse(body, pos)
        # pos now indexes the control byte within body
        if pos + 1 + 2 > len(body):
            raise HdlcTruncatedError("HDLC frame", pos + 1, "no room for control field and FCS")
        if checksum_bytes(body[:-2]) != body[-2:]:
            raise HdlcChecksumError("HDLC FCS", len(body) - 1, "frame check sequence mismatch")
        control = body[pos]
        header_end = pos + 1
        rest = len(body) - 2 - header_end  # bytes between control and FCS
        if rest == 0:
            information = b""
        elif rest <= 2:
            # HCS exists only in front of a (non-empty) information field.
            raise HdlcError("HDLC frame", header_end + 1,
                            "header check sequence without information field" if rest == 2
                            else "too short for a header check sequence")
        else:
            if checksum_bytes(body[:header_end]) != body[header_end:header_end + 2]:
                raise HdlcChecksumError("HDLC HCS", header_end + 1, "header check sequence mismatch")
            information = body[header_end + 2:-2]
        decoded = decode_control(control)
        if decoded is None:
            raise HdlcControlError(control, destination, source, bool(control & POLL_FINAL_BIT),
                                   rest > 0)
        kind, poll_final, send_seq, recv_seq = decoded
        return cls(kind, destination, source, poll_final, send_seq, recv_seq, information,
                   segmented)


# --------------------------------------------------------------------------------------
# Parameter negotiation field (IEC 62056-46 §6.4.4.4.3.2)

PARAMETER_FORMAT_ID = 0x81
PARAMETER_GROUP_ID = 0x80
PARAM_MAX_INFO_TX = 0x05
PARAM_MAX_INFO_RX = 0x06
PARAM_WINDOW_TX = 0x07
PARAM_WINDOW_RX = 0x08

DEFAULT_MAX_INFO = 128
DEFAULT_WINDOW = 1


@dataclass(frozen=True)
class HdlcParameterField:
    """The SNRM/UA information field; values are from the sender's point of view.

    A field that is absent (None) takes its default (128 bytes, window 1).
    """

    max_info_tx: int | None = None
    max_info_rx: int | None = None
    window_tx: int | None = None
    window_rx: int | None = None

    def to_bytes(self) -> bytes:
        body = bytearray()
        for pid, value, is_window in (
            (PARAM_MAX_INFO_TX, self.max_info_tx, False),
            (PARAM_MAX_INFO_RX, self.max_info_rx, False),
            (PARAM_WINDOW_TX, self.window_tx, True),
            (PARAM_WINDOW_RX, self.window_rx, True),
        ):
            if value is None:
                continue
            if not 0 <= value <= 0xFFFFFFFF:
                raise EncodeError(f"HDLC parameter 0x{pid:02X} out of range: {value}")
            # Windows are customarily sent as 4 bytes, lengths in the shortest form.
            size = 4 if is_window or value > 0xFFFF else (1 if value <= 0xFF else 2)
            body += bytes([pid, size]) + value.to_bytes(size, "big")
        return bytes([PARAMETER_FORMAT_ID, PARAMETER_GROUP_ID, len(body)]) + bytes(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> "HdlcParameterField":
        data = bytes(data)
        if len(data) < 3:
            raise HdlcTruncatedError("HDLC parameter field", len(data), "header incomplete")
        if data[0] != PARAMETER_FORMAT_ID:
            raise HdlcError("HDLC parameter field", 0, f"format identifier 0x{data[0]:02X}")
        if data[1] != PARAMETER_GROUP_ID:
            raise HdlcError("HDLC parameter field", 1, f"group identifier 0x{data[1]:02X}")
        if data[2] != len(data) - 3:
            raise HdlcError("HDLC parameter field", 2,
                            f"group length {data[2]} but {len(data) - 3} bytes follow")
        values: dict[int, int] = {}
        pos = 3
        while pos < len(data):
            if pos + 2 > len(data):
                raise HdlcTruncatedError("HDLC parameter", pos, "identifier without length")
            pid, size = data[pos], data[pos + 1]
            if size not in (1, 2, 4):
                raise HdlcError("HDLC parameter", pos + 1, f"value length {size}")
            if pos + 2 + size > len(data):
                raise HdlcTruncatedError("HDLC parameter", pos + 2, "value incomplete")
            value = int.from_bytes(data[pos + 2:pos + 2 + size], "big")
            if pid not in (PARAM_MAX_INFO_TX, PARAM_MAX_INFO_RX, PARAM_WINDOW_TX, PARAM_WINDOW_RX):
                raise HdlcError("HDLC parameter", pos, f"unknown parameter 0x{pid:02X}")
            values[pid] = value
            pos += 2 + size
        return cls(values.get(PARAM_MAX_INFO_TX), values.get(PARAM_MAX_INFO_RX),
                   values.get(PARAM_WINDOW_TX), values.get(PARAM_WINDOW_RX))


# --------------------------------------------------------------------------------------
# FRMR information field (ISO/IEC 13239, modulo 8)

FRMR_W_INVALID_CONTROL = 0x01
FRMR_X_INFORMATION_NOT_PERMITTED = 0x02
FRMR_Y_INFORMATION_TOO_LONG = 0x04
FRMR_Z_INVALID_NR = 0x08


@dataclass(frozen=True)
class FrmrInformation:
    """Rejected control byte, our V(S)/V(R), C/R bit, and the W/X/Y/Z reason bits."""

    rejected_control: int
    send_state: int
    receive_state: int
    reasons: int
    rejected_was_response: bool = False

    def to_bytes(self) -> bytes:
        second = ((self.send_state & 7) << 1) | ((self.receive_state & 7) << 5)
        if self.rejected_was_response:
            second |= 0x10
        return bytes([self.rejected_control & 0xFF, second, self.reasons & 0x0F])

    @classmethod
    def from_bytes(cls, data: bytes) -> "FrmrInformation":
        if len(data) != 3:
            raise HdlcError("FRMR information field", 0, f"{len(data)} bytes, expected 3")
        return cls(data[0], (data[1] >> 1) & 7, data[1] >> 5, data[2] & 0x0F, bool(data[1] & 0x10))


# --------------------------------------------------------------------------------------
# Stream splitter


class HdlcFrameSplitter:
    """Cuts a byte stream into candidate frames (flag to flag, by the length field).

    Bytes may arrive split anywhere; consecutive frames may share one flag
    (``7E frame 7E frame 7E``). Garbage between frames is skipped. The buffer never
    holds more than one maximal frame (2049 bytes) plus nothing: input is consumed as it
    is fed. The frames returned still need `HdlcFrame.from_bytes` (checksums etc.).
    """

    def __init__(self, inter_octet_timeout: float | None = None) -> None:
        self.inter_octet_timeout = inter_octet_timeout
        self._buffer = bytearray()
        self._last_byte_time: float | None = None
        self.discarded_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not finished (a lone, possibly shared flag is 0)."""
        return len(self._buffer) if len(self._buffer) > 1 else 0

    def reset(self) -> None:
        self.discarded_bytes += len(self._buffer)
        self._buffer.clear()

    def expire(self, now: float) -> bool:
        """Drop a partial frame whose bytes stopped for longer than the inter-octet timeout."""
        if (self.pending and self.inter_octet_timeout is not None
                and self._last_byte_time is not None
                and now - self._last_byte_time > self.inter_octet_timeout):
            self.reset()
            return True
        return False

    def feed(self, data: bytes, now: float | None = None) -> list[bytes]:
        if now is not None:
            self.expire(now)
            if data:
                self._last_byte_time = now
        frames: list[bytes] = []
        data = bytes(data)
        # Work through the input in slices so that a resynchronisation (which re-scans a
        # rejected candidate of at most 2049 bytes) never copies the whole input.
        for start in range(0, len(data), 4096):
            self._scan(data[start:start + 4096], frames)
        return frames

    def _scan(self, work: bytes, frames: list[bytes]) -> None:
        pos = 0
        while pos < len(work):
            buf = self._buffer
            if not buf:
                # Hunt for an opening flag.
                idx = work.find(FLAG, pos)
                if idx < 0:
                    self.discarded_bytes += len(work) - pos
                    return
                self.discarded_bytes += idx - pos
                buf.append(FLAG)
                pos = idx + 1
                continue
            if len(buf) < 3:
                byte = work[pos]
                pos += 1
                if len(buf) == 1 and byte == FLAG:
                    continue  # repeated flag: inter-frame fill
                buf.append(byte)
                if (len(buf) == 2 and byte & 0xF0 != FORMAT_TYPE_3) or (
                        len(buf) == 3 and self._declared_total() < 9):
                    work, pos = self._resync(work, pos)
                continue
            total = self._declared_total()
            take = min(total - len(buf), len(work) - pos)
            buf += work[pos:pos + take]
            pos += take
            if len(buf) == total:
                if buf[-1] == FLAG:
                    frames.append(bytes(buf))
                    # The closing flag may open the next frame.
                    self._buffer = bytearray([FLAG])
                else:
                    work, pos = self._resync(work, pos)

    def _declared_total(self) -> int:
        buf = self._buffer
        return (((buf[1] & 0x07) << 8) | buf[2]) + 2

    def _resync(self, work: bytes, pos: int) -> tuple[bytes, int]:
        # The candidate was not a frame: drop its opening flag and scan the rest of it
        # again, since a real frame may start inside it.
        stale = bytes(self._buffer[1:])
        self.discarded_bytes += 1
        self._buffer = bytearray()
        if len(stale) <= pos and work[pos - len(stale):pos] == stale:
            return work, pos - len(stale)  # the same bytes are still in `work`: rewind
        return stale + work[pos:], 0
