"""EN 13757-2 wired M-Bus link layer (IEC 60870-5-1 format class FT 1.2), sans-io.

Four frame formats travel on the bus::

    single character   E5
    short frame        10 | C | A | CS | 16
    control frame      68 | 03 | 03 | 68 | C | A | CI | CS | 16
    long frame         68 | L | L | 68 | C | A | CI | data (L-3) | CS | 16

CS is the arithmetic sum modulo 256 of C, A, CI and the data. L counts C, A, CI and the
data, so a long frame carries at most 252 data bytes. A control frame is a long frame
without data; `decode_frame` returns it as `ControlFrame` and `LongFrame` always has data,
so that every frame has one representation and decoding then encoding gives the same bytes.

`FrameReader` cuts a byte stream into frames; `FcbState` keeps the frame count bit of
each slave the way a master must.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Hashable, Iterator, Union

from smartmeter.errors import DecodeError, EncodeError, TruncatedError

ACK_BYTE = 0xE5
START_SHORT = 0x10
START_LONG = 0x68
STOP = 0x16

MAX_L = 255
MAX_DATA = MAX_L - 3  # L counts C, A and CI too
SHORT_FRAME_BYTES = 5
MAX_FRAME_BYTES = MAX_L + 6  # 68 L L 68 ... CS 16

# --- C field (EN 13757-2 §5.4). Bit 6 (PRM) is 1 in master -> slave frames.
C_PRM = 0x40
C_FCB = 0x20  # master -> slave: frame count bit
C_FCV = 0x10  # master -> slave: the FCB is valid
C_ACD = 0x20  # slave -> master: access demand (class 1 data waiting)
C_DFC = 0x10  # slave -> master: data flow control (slave cannot take more data)
C_FUNCTION_MASK = 0x0F

SND_NKE = 0x40  # link reset; the slave answers E5
SND_UD = 0x53  # send user data, FCB 0
SND_UD_FCB = 0x73  # send user data, FCB 1
REQ_UD2 = 0x5B  # request class 2 data, FCB 0
REQ_UD2_FCB = 0x7B
REQ_UD1 = 0x5A  # request class 1 (alarm) data, FCB 0
REQ_UD1_FCB = 0x7A
RSP_UD = 0x08  # respond user data (may carry ACD / DFC)

# Functions (low nibble) with their FCV meaning; used to decide whether the FCB counts.
_FUNCTIONS_WITH_FCV = {0x3, 0xA, 0xB}  # SND_UD, REQ_UD1, REQ_UD2

# --- A field (EN 13757-2 §5.5)
ADDRESS_UNCONFIGURED = 0
PRIMARY_ADDRESS_MIN = 1
PRIMARY_ADDRESS_MAX = 250
ADDRESS_RESERVED = (251, 252)
ADDRESS_NETWORK_LAYER = 0xFD  # 253: the slave selected by secondary address
ADDRESS_TEST = 0xFE  # 254: every slave answers (with its own address); for tests only
ADDRESS_BROADCAST = 0xFF  # 255: every slave listens, none answers


class MbusFrameError(DecodeError):
    """A malformed M-Bus link-layer frame."""


class MbusTruncatedError(MbusFrameError, TruncatedError):
    """The bytes end before the frame does."""


class MbusChecksumError(MbusFrameError):
    """The checksum byte is not the sum of C, A, CI and the data."""


class MbusStopByteError(MbusFrameError):
    """The frame does not end with 0x16."""


class MbusLengthError(MbusFrameError):
    """The two L fields differ, L < 3, or the second start byte is missing."""


class MbusStartError(MbusFrameError):
    """The first byte is none of E5, 10, 68."""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"M-Bus {name} {value} is not a byte")


@dataclass(frozen=True)
class Ack:
    """The single character E5 (positive acknowledgement)."""

    def to_bytes(self) -> bytes:
        return bytes([ACK_BYTE])


@dataclass(frozen=True)
class ShortFrame:
    c: int
    a: int

    def __post_init__(self) -> None:
        _check_byte("C field", self.c)
        _check_byte("A field", self.a)

    def to_bytes(self) -> bytes:
        return bytes([START_SHORT, self.c, self.a, checksum(bytes([self.c, self.a])), STOP])


@dataclass(frozen=True)
class ControlFrame:
    c: int
    a: int
    ci: int

    def __post_init__(self) -> None:
        _check_byte("C field", self.c)
        _check_byte("A field", self.a)
        _check_byte("CI field", self.ci)

    @property
    def data(self) -> bytes:
        return b""

    def to_bytes(self) -> bytes:
        body = bytes([self.c, self.a, self.ci])
        return bytes([START_LONG, 3, 3, START_LONG]) + body + bytes([checksum(body), STOP])


@dataclass(frozen=True)
class LongFrame:
    c: int
    a: int
    ci: int
    data: bytes

    def __post_init__(self) -> None:
        _check_byte("C field", self.c)
        _check_byte("A field", self.a)
        _check_byte("CI field", self.ci)
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        if not 1 <= len(self.data) <= MAX_DATA:
            raise EncodeError(
                f"a long frame carries 1..{MAX_DATA} data bytes, not {len(self.data)}"
                " (use ControlFrame for none)")

    def to_bytes(self) -> bytes:
        body = bytes([self.c, self.a, self.ci]) + self.data
        length = len(body)
        return bytes([START_LONG, length, length, START_LONG]) + body + bytes([checksum(body), STOP])


Frame = Union[Ack, ShortFrame, ControlFrame, LongFrame]


def frame_length(buf: bytes | bytearray) -> int:
    """The length of the frame that starts at buf[0], read from its header.

    Raises MbusTruncatedError when the header itself is incomplete, MbusStartError or
    MbusLengthError when it cannot be the start of a frame.
    """
    if not buf:
        raise MbusTruncatedError("M-Bus frame", 0, "no bytes")
    start = buf[0]
    if start == ACK_BYTE:
        return 1
    if start == START_SHORT:
        return SHORT_FRAME_BYTES
    if start != START_LONG:
        raise MbusStartError("M-Bus frame", 0, f"start byte 0x{start:02X}")
    if len(buf) < 4:
        raise MbusTruncatedError("M-Bus long frame header", len(buf), "fewer than 4 bytes")
    if buf[1] != buf[2]:
        raise MbusLengthError("M-Bus long frame header", 1, f"L fields {buf[1]} and {buf[2]} differ")
    if buf[3] != START_LONG:
        raise MbusLengthError("M-Bus long frame header", 3, f"second start byte 0x{buf[3]:02X}")
    if buf[1] < 3:
        raise MbusLengthError("M-Bus long frame header", 1, f"L = {buf[1]} < 3")
    return buf[1] + 6


def decode_frame(buf: bytes | bytearray) -> Frame:
    """Exactly one frame from `buf`; any defect raises an MbusFrameError subclass."""
    buf = bytes(buf)
    need = frame_length(buf)
    if len(buf) < need:
        raise MbusTruncatedError("M-Bus frame", len(buf), f"{need} bytes needed, {len(buf)} present")
    if len(buf) > need:
        raise MbusFrameError("M-Bus frame", need, f"{len(buf) - need} bytes after the stop byte")
    if need == 1:
        return Ack()
    if buf[-1] != STOP:
        raise MbusStopByteError("M-Bus frame", need - 1, f"stop byte 0x{buf[-1]:02X}")
    if buf[0] == START_SHORT:
        body, cs = buf[1:3], buf[3]
    else:
        body, cs = buf[4:-2], buf[-2]
    if checksum(body) != cs:
        raise MbusChecksumError("M-Bus frame", need - 2,
                                f"checksum 0x{cs:02X}, computed 0x{checksum(body):02X}")
    if buf[0] == START_SHORT:
        return ShortFrame(body[0], body[1])
    if len(body) == 3:
        return ControlFrame(body[0], body[1], body[2])
    return LongFrame(body[0], body[1], body[2], body[3:])


@dataclass(frozen=True)
class BadFrame:
    """A frame-shaped piece of the stream that failed its checks (FrameReader output)."""

    error: MbusFrameError
    raw: bytes


MAX_PENDING_ITEMS = 256


class FrameReader:
    """Cuts a byte stream into frames.

    `feed(data)` then iterate: each item is a frame or a `BadFrame`. Bytes that cannot
    start a frame are dropped and counted in `skipped`. A long frame whose header
    (68 L L 68) is consistent but whose checksum or stop byte is wrong is consumed whole
    and reported - unless a frame header begins inside it, which is then where reading goes
    on (a frame cut short followed by the next one); a defective header or short frame is
    reported and only its first byte dropped, so that a good frame beginning inside it is
    still found. A cut frame is only known as cut once the bytes its header declared have
    arrived: a caller that waits for an answer resets the reader when its time is over.

    A bad long frame whose last bytes could begin a frame is judged once the bytes that
    would confirm it have arrived too, so the items never depend on how the stream was cut
    into pieces.
    At most one frame and those few bytes (MAX_FRAME_BYTES + RESYNC_LOOKAHEAD) are buffered; at most
    MAX_PENDING_ITEMS decoded items wait to be taken, further ones are dropped and
    counted in `overflowed`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._items: deque[Frame | BadFrame] = deque()
        self.skipped = 0
        self.overflowed = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame (e.g. at the start of a new request)."""
        self._buf.clear()
        self._items.clear()

    def feed(self, data: bytes) -> None:
        # Work chunk by chunk so that the buffer never holds more than one frame's worth.
        view = memoryview(bytes(data))
        pos = 0
        while pos < len(view):
            take = MAX_FRAME_BYTES + RESYNC_LOOKAHEAD - len(self._buf)
            self._buf += view[pos:pos + take]
            pos += take
            self._scan()

    def _emit(self, item: Frame | BadFrame) -> None:
        if len(self._items) >= MAX_PENDING_ITEMS:
            self.overflowed += 1
        else:
            self._items.append(item)

    def _scan(self) -> None:
        buf = self._buf
        while buf:
            start = buf[0]
            if start not in (ACK_BYTE, START_SHORT, START_LONG):
                # Skip the whole run of bytes that cannot start a frame.
                run = 1
                while run < len(buf) and buf[run] not in (ACK_BYTE, START_SHORT, START_LONG):
                    run += 1
                self.skipped += run
                del buf[:run]
                continue
            try:
                need = frame_length(buf)
            except MbusTruncatedError:
                return
            except MbusFrameError as exc:
                self._emit(BadFrame(exc, bytes(buf[:4])))
                del buf[:1]
                continue
            if len(buf) < need:
                return
            raw = bytes(buf[:need])
            try:
                frame = decode_frame(raw)
            except MbusFrameError as exc:
                if start == START_SHORT and raw[-1] != STOP:
                    # A lone 0x10 in noise: not even the frame's shape.
                    self.skipped += 1
                    del buf[:1]
                    continue
                if start == START_LONG:
                    if _start_undecided(buf, need):
                        # whether a frame begins at the end of this one is known only with
                        # the bytes after it: wait, so that the outcome never depends on how
                        # the stream was cut into pieces
                        return
                    resync = _frame_start_within(buf, need)
                    if resync:
                        # A frame cut short, and the next one begins inside the span its
                        # header declared: report the piece, keep the next frame.
                        self._emit(BadFrame(exc, raw[:resync]))
                        del buf[:resync]
                        continue
                self._emit(BadFrame(exc, raw))
                del buf[:1 if start == START_SHORT else need]
                continue
            self._emit(frame)
            del buf[:need]

    def __iter__(self) -> Iterator[Frame | BadFrame]:
        while self._items:
            yield self._items.popleft()

    def take(self) -> list[Frame | BadFrame]:
        items = list(self._items)
        self._items.clear()
        return items


# bytes beyond a bad long frame that `_frame_start_within` looks at (a short frame is 5 long)
RESYNC_LOOKAHEAD = 4


def _start_undecided(buf: bytearray, end: int) -> bool:
    """Whether a frame header could begin in the last bytes before `end` but the bytes that
    would confirm it have not arrived yet."""
    for pos in range(max(1, end - RESYNC_LOOKAHEAD), end):
        if buf[pos] == START_LONG and pos + 4 > len(buf) or buf[pos] == START_SHORT and pos + 5 > len(buf):
            return True
    return False


def _frame_start_within(buf: bytearray, end: int) -> int:
    """The first offset in 1..end-1 where a long-frame header (68 L L 68, L >= 3) or a
    whole correct short frame stands; 0 when there is none. Single E5 bytes do not count:
    inside data they are too common to mean anything."""
    for pos in range(1, end):
        head = buf[pos:pos + 5]
        if head[:1] == b"\x68" and len(head) >= 4 and head[1] == head[2] >= 3 and head[3] == START_LONG:
            return pos
        if head[:1] == b"\x10" and len(head) == 5 and head[4] == STOP and checksum(head[1:3]) == head[3]:
            return pos
    return 0


# --------------------------------------------------------------------------------------
# Frame count bit


def with_fcb(c: int, fcb: bool) -> int:
    """The C field of a master frame with FCV set and the given FCB."""
    return (c & ~C_FCB) | C_FCV | (C_FCB if fcb else 0)


class FcbState:
    """The master's frame count bit per slave address (EN 13757-2 §5.4.2).

    After SND_NKE a slave expects FCB = 1 in its next frame with FCV = 1. The master
    toggles the bit after each transaction the slave answered correctly and sends the
    same bit again when it repeats a request, so that a slave whose answer was lost sends
    that answer again instead of the next one. An address never reset starts at FCB = 1
    as well. A slave is named by its primary address, or by any other hashable key (the
    master uses its secondary address for a slave reached through 0xFD).
    """

    def __init__(self) -> None:
        self._next: dict[Hashable, bool] = {}

    def reset(self, slave: Hashable) -> None:
        """Call after SND_NKE to `slave` (for broadcast 255: every slave)."""
        if slave == ADDRESS_BROADCAST:
            self._next.clear()
        else:
            self._next[slave] = True

    def current(self, slave: Hashable) -> bool:
        return self._next.get(slave, True)

    def c_field(self, function_c: int, slave: Hashable) -> int:
        """The C field to send for `function_c` (e.g. REQ_UD2) to `slave`."""
        return with_fcb(function_c, self.current(slave))

    def confirm(self, slave: Hashable) -> None:
        """The slave answered the frame sent with the current bit: toggle it."""
        self._next[slave] = not self.current(slave)

    def move(self, old: Hashable, new: Hashable) -> None:
        """The slave at `old` now answers at `new` (set primary address)."""
        self._next[new] = self.current(old)
        self._next.pop(old, None)


class SlaveFcb:
    """The slave's side: tells a repeated request (same FCB as the last one) from a new one."""

    def __init__(self) -> None:
        self._last: bool | None = None

    def reset(self) -> None:
        """On SND_NKE."""
        self._last = False  # the next FCV frame with FCB 1 is new

    def is_repeat(self, c: int) -> bool:
        if not c & C_FCV or (c & C_FUNCTION_MASK) not in _FUNCTIONS_WITH_FCV:
            return False
        fcb = bool(c & C_FCB)
        repeat = self._last is not None and fcb == self._last
        self._last = fcb
        return repeat
