"""A sans-io wired M-Bus master for one bus (EN 13757-2 link, EN 13757-3 application).

The master is a state machine in the style of h11: it never touches a port or a clock.

    master = Master(baud_rate=2400)
    out = master.request(ReadData(5))          # bytes to write to the bus
    ... write `out`, start a timer of master.answer_timeout seconds ...
    events = master.receive(bytes_from_bus)     # or master.timeout() when the timer ran out
    for event in events:
        Transmit -> write event.data, restart the timer
        DataRead / Confirmed / WrongIdentity / SlaveError / Failed -> the request's outcome

One request is outstanding at a time (the bus is half duplex). Every outcome event ends it.

* Frame count bit: one `FcbState` per slave (primary address, or the secondary address of
  a slave selected through 0xFD). SND_NKE resets it; a repeated request keeps the bit, the
  next request after a correct answer toggles it.
* Repeats: a request that gets no answer, or a corrupted one (checksum, collision,
  a frame of the wrong kind or from the wrong address), is sent again up to `retries` times
  (EN 13757-2: 2) once the answer time is over, so the repeat never overlaps a late answer.
* Answer time: EN 13757-2 lets a slave begin its answer up to 330 bit times + 50 ms after
  the request; the master waits that long plus the time the longest possible answer takes
  on the line (11 bits per character).
* Multi-telegram reads: a RSP_UD ending with DIF 0x1F asks for another REQ_UD2 (toggled
  FCB); at most `max_telegrams` (8) per read, after which the read ends incomplete.
* Identity: a read may name the secondary address it expects; an answer from a different
  identification / manufacturer / version / medium is the distinct outcome
  `WrongIdentity` (the meter logs it as a replaced or foreign device), never retried.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Hashable, Union

from smartmeter.errors import DecodeError, SmartmeterError
from smartmeter.mbus.application import (
    CI_APPLICATION_ERROR,
    CI_APPLICATION_RESET,
    CI_DATA_SEND,
    CI_SELECTION,
    CI_TIME_SYNC,
    APPLICATION_ERRORS,
    LongHeader,
    SecondaryAddress,
    Telegram,
    encode_datetime_f,
    parse_telegram,
)
from smartmeter.mbus.link import (
    ADDRESS_BROADCAST,
    ADDRESS_NETWORK_LAYER,
    ADDRESS_TEST,
    C_FUNCTION_MASK,
    MAX_FRAME_BYTES,
    REQ_UD2,
    RSP_UD,
    SND_NKE,
    SND_UD,
    Ack,
    BadFrame,
    ControlFrame,
    FcbState,
    FrameReader,
    LongFrame,
    ShortFrame,
)

DEFAULT_BAUD_RATE = 2400
DEFAULT_RETRIES = 2  # EN 13757-2: a master repeats a failed request at most twice
MAX_TELEGRAMS_PER_READ = 8
BITS_PER_CHARACTER = 11  # start, 8 data, even parity, stop


def response_timeout(baud_rate: int) -> float:
    """Seconds within which a slave must begin its answer: 330 bit times + 50 ms (EN 13757-2)."""
    if baud_rate <= 0:
        raise ValueError("baud rate must be positive")
    return 330 / baud_rate + 0.050


def transmission_time(n_bytes: int, baud_rate: int) -> float:
    return n_bytes * BITS_PER_CHARACTER / baud_rate


class MasterBusyError(SmartmeterError):
    """A request was made while another one is still outstanding."""


# --------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Initialise:
    """SND_NKE: reset the slave's link layer (and its FCB). 0xFD deselects; 255 gets no answer."""

    address: int


@dataclass(frozen=True)
class ReadData:
    """REQ_UD2 at a primary address (or 0xFD for the selected slave).

    `expected` is checked against each answer's long header (CI 0x72); answers with a short
    or no header carry no identity to check."""

    address: int
    expected: SecondaryAddress | None = None


@dataclass(frozen=True)
class Select:
    """SND_UD CI 0x52 to 0xFD: select the slave with this secondary address (wildcards allowed)."""

    secondary: SecondaryAddress


@dataclass(frozen=True)
class ReadSecondary:
    """Select by secondary address, then REQ_UD2 at 0xFD; the answer must be that slave."""

    secondary: SecondaryAddress


@dataclass(frozen=True)
class SendUserData:
    """SND_UD with any CI and data; the slave acknowledges with E5."""

    address: int
    ci: int
    data: bytes = b""


def set_primary_address(address: int, new_address: int) -> SendUserData:
    """SND_UD CI 0x51 with the record DIF 01, VIF 7A (bus address), the new address."""
    if not 0 <= new_address <= 250:
        raise ValueError("a primary address is 0..250")
    return SendUserData(address, CI_DATA_SEND, bytes([0x01, 0x7A, new_address]))


def synchronise_clock(address: int, time: dt.datetime) -> SendUserData:
    """SND_UD CI 0x6C with the slave's local time as one type F date-time (4 bytes)."""
    return SendUserData(address, CI_TIME_SYNC, encode_datetime_f(time))


def application_reset(address: int, subcode: int | None = None) -> SendUserData:
    """SND_UD CI 0x50, with the optional subcode byte."""
    return SendUserData(address, CI_APPLICATION_RESET, b"" if subcode is None else bytes([subcode]))


Request = Union[Initialise, ReadData, Select, ReadSecondary, SendUserData]

# --------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Transmit:
    """Write these bytes to the bus and (re)start the answer timer."""

    data: bytes


@dataclass(frozen=True)
class Confirmed:
    """The slave acknowledged (E5); for a broadcast: the answer time passed."""

    request: Request


@dataclass(frozen=True)
class DataRead:
    """The telegrams of one read; `complete` is False when the bound cut the chain."""

    request: Request
    telegrams: tuple[Telegram, ...]
    complete: bool
    address: int  # the A field the slave answered with

    def merged(self) -> Telegram:
        """One telegram: the first header, the records of all parts in order."""
        first = self.telegrams[0]
        records = tuple(r for t in self.telegrams for r in t.records)
        last = self.telegrams[-1]
        return Telegram(first.ci, first.header, records, last.more_records_follow,
                        b"".join(t.manufacturer_data for t in self.telegrams), last.special_function)


@dataclass(frozen=True)
class WrongIdentity:
    """A slave answered that is not the one expected (replaced or foreign device)."""

    request: Request
    expected: SecondaryAddress
    received: LongHeader
    telegram: Telegram


@dataclass(frozen=True)
class SlaveError:
    """The slave answered with an application error (CI 0x70) or undecodable user data."""

    request: Request
    reason: str
    code: int | None = None


@dataclass(frozen=True)
class Failed:
    """No usable answer after all attempts."""

    request: Request
    reason: str  # "no answer", "corrupted answer", ...
    attempts: int


Event = Union[Transmit, Confirmed, DataRead, WrongIdentity, SlaveError, Failed]
Outcome = (Confirmed, DataRead, WrongIdentity, SlaveError, Failed)

# --------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One link-layer exchange: what is sent and what answer is awaited."""

    frame: bytes
    expect: str  # "ack", "optional ack", "rsp_ud", "none"
    address: int
    fcb_key: Hashable | None  # whose FCB the frame carried; None: no FCV
    attempts: int = 0
    corrupted: bool = False


@dataclass
class _Transaction:
    request: Request
    steps: list[_Step] = field(default_factory=list)
    telegrams: list[Telegram] = field(default_factory=list)
    expected: SecondaryAddress | None = None


class Master:
    """The wired master of one bus. See the module docstring for the call pattern."""

    def __init__(self, *, baud_rate: int = DEFAULT_BAUD_RATE, retries: int = DEFAULT_RETRIES,
                 max_telegrams: int = MAX_TELEGRAMS_PER_READ,
                 user_data: Callable[[int, bytes], bytes] | None = None) -> None:
        """`user_data(ci, data)`, when given, turns the user data of each RSP_UD taken as the
        answer into what the application layer parses: a master of encrypted devices decrypts
        there (the link layer and the addressing checks come first, the records after)."""
        if retries < 0 or max_telegrams < 1:
            raise ValueError("retries >= 0 and max_telegrams >= 1")
        self.user_data = user_data
        self.baud_rate = baud_rate
        self.retries = retries
        self.max_telegrams = max_telegrams
        self.fcb = FcbState()
        self._reader = FrameReader()
        self._current: _Transaction | None = None
        self._step: _Step | None = None
        self._selected: SecondaryAddress | None = None  # the slave 0xFD refers to
        self._skipped_at_start = 0
        # counters for diagnostics
        self.repeats = 0
        self.corrupted_answers = 0

    # -- timing ------------------------------------------------------------------------
    @property
    def answer_timeout(self) -> float:
        """Seconds to wait after a Transmit before calling timeout()."""
        longest = MAX_FRAME_BYTES if self._step is None or self._step.expect == "rsp_ud" else 1
        return response_timeout(self.baud_rate) + transmission_time(longest, self.baud_rate)

    def answer_wait(self, request_bytes: int, *, written_means_sent: bool) -> float:
        """Seconds from writing a `request_bytes` frame to calling timeout().

        A serial port whose write returns once the frame has left the UART
        (`written_means_sent`) starts the answer time at once. A TCP gateway takes the frame
        in at network speed and only then sends it at the bus's baud rate, so the request's
        own transmission time comes first (a 261-byte SND_UD takes 1.2 s at 2400 Bd).
        """
        wait = self.answer_timeout
        if not written_means_sent:
            wait += transmission_time(request_bytes, self.baud_rate)
        return wait

    @property
    def line_idle_time(self) -> float:
        """Seconds of quiet line to leave after an answer before the next request (11 bit
        times, so the slave's UART sees the end of its own answer first)."""
        return BITS_PER_CHARACTER / self.baud_rate

    @property
    def busy(self) -> bool:
        return self._current is not None

    # -- requests ------------------------------------------------------------------------
    def request(self, request: Request) -> bytes:
        """Start `request`; returns the first bytes to write."""
        if self._current is not None:
            raise MasterBusyError(f"request {self._current.request!r} is still outstanding")
        transaction = _Transaction(request)
        if isinstance(request, Initialise):
            _check_address(request.address, allow_fd=True)
            self.fcb.reset(self._fcb_key(request.address))
            if request.address == ADDRESS_NETWORK_LAYER:
                self._selected = None
            # SND_NKE to 0xFD deselects: only a selected slave answers, so silence is fine too.
            expect = {ADDRESS_BROADCAST: "none", ADDRESS_NETWORK_LAYER: "optional ack"}.get(
                request.address, "ack")
            transaction.steps.append(_Step(ShortFrame(SND_NKE, request.address).to_bytes(), expect,
                                           request.address, None))
        elif isinstance(request, ReadData):
            _check_address(request.address, allow_fd=True, allow_broadcast=False)
            transaction.expected = request.expected
            transaction.steps.append(self._req_ud2(request.address))
        elif isinstance(request, Select):
            transaction.steps.append(self._selection(request.secondary))
        elif isinstance(request, ReadSecondary):
            transaction.expected = request.secondary
            transaction.steps.append(self._selection(request.secondary))
        elif isinstance(request, SendUserData):
            _check_address(request.address, allow_fd=True)
            transaction.steps.append(self._snd_ud(request.address, request.ci, request.data))
        else:
            raise TypeError(f"not an M-Bus request: {request!r}")
        self._current = transaction
        return self._start(transaction.steps[0])

    def _fcb_key(self, address: int) -> Hashable:
        if address == ADDRESS_NETWORK_LAYER and self._selected is not None:
            return ("secondary", self._selected.to_bytes())
        return address

    def _snd_ud(self, address: int, ci: int, data: bytes) -> _Step:
        key = self._fcb_key(address)
        c = self.fcb.c_field(SND_UD, key)
        frame = LongFrame(c, address, ci, data) if data else ControlFrame(c, address, ci)
        expect = "none" if address == ADDRESS_BROADCAST else "ack"
        return _Step(frame.to_bytes(), expect, address, key)

    def _req_ud2(self, address: int) -> _Step:
        key = self._fcb_key(address)
        return _Step(ShortFrame(self.fcb.c_field(REQ_UD2, key), address).to_bytes(), "rsp_ud", address, key)

    def _selection(self, secondary: SecondaryAddress) -> _Step:
        self._selected = secondary
        return self._snd_ud(ADDRESS_NETWORK_LAYER, CI_SELECTION, secondary.to_bytes())

    def _start(self, step: _Step) -> bytes:
        step.attempts += 1
        step.corrupted = False
        self._step = step
        self._reader.reset()
        self._skipped_at_start = self._reader.skipped
        return step.frame

    def abandon(self) -> None:
        """Drop the outstanding request (its link went away); FCB memories stay."""
        self._current = None
        self._step = None
        self._reader.reset()

    # -- input -------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Bytes from the bus. Bytes while no request is outstanding are dropped."""
        if self._current is None or self._step is None:
            return []
        self._reader.feed(data)
        events: list[Event] = []
        for item in self._reader:
            if self._current is None or self._step is None:
                break  # the outcome is decided; the rest is noise after it
            step = self._step
            if step.corrupted:
                continue  # this attempt failed already; the repeat waits for the answer time
            if isinstance(item, BadFrame):
                step.corrupted = True
                self.corrupted_answers += 1
                continue
            events += self._answer(step, item)
        return events

    def timeout(self) -> list[Event]:
        """The answer time after the last Transmit passed."""
        if self._current is None or self._step is None:
            return []
        step = self._step
        if self._reader.buffered_bytes and step.expect != "none":
            # An answer still unjudged when its time is over (cut short, or damaged with an
            # end the reader waits to decide on) is a corrupted answer, not silence.
            step.corrupted = True
            self.corrupted_answers += 1
        if step.expect == "none" or (step.expect == "optional ack" and not step.corrupted):
            return self._step_done()
        noise = self._reader.skipped > self._skipped_at_start
        reason = "corrupted answer" if step.corrupted or noise else "no answer"
        if step.attempts <= self.retries:
            self.repeats += 1
            return [Transmit(self._start(step))]
        return self._finish(Failed(self._current.request, reason, step.attempts))

    # -- answers -----------------------------------------------------------------------
    def _answer(self, step: _Step, frame) -> list[Event]:
        if step.expect == "none":
            return []  # nobody answers a broadcast; whatever came is someone else's
        if step.expect in ("ack", "optional ack"):
            if isinstance(frame, Ack):
                return self._confirm_and_next(step)
            step.corrupted = True
            self.corrupted_answers += 1
            return []
        # RSP_UD awaited
        if not isinstance(frame, LongFrame) or frame.c & C_FUNCTION_MASK != RSP_UD:
            step.corrupted = True
            self.corrupted_answers += 1
            return []
        if step.address not in (ADDRESS_NETWORK_LAYER, ADDRESS_TEST) and frame.a != step.address:
            step.corrupted = True  # another slave's answer: a collision or a wrong address
            self.corrupted_answers += 1
            return []
        transaction = self._current
        assert transaction is not None
        if step.fcb_key is not None:
            self.fcb.confirm(step.fcb_key)
        try:
            data = frame.data if self.user_data is None else self.user_data(frame.ci, frame.data)
            telegram = parse_telegram(frame.ci, data)
        except DecodeError as exc:
            return self._finish(SlaveError(transaction.request, f"undecodable answer: {exc}"))
        if telegram.ci == CI_APPLICATION_ERROR:
            code = telegram.application_error
            return self._finish(SlaveError(transaction.request, APPLICATION_ERRORS.get(code, "error"), code))
        expected = transaction.expected
        if expected is not None and isinstance(telegram.header, LongHeader) \
                and not expected.matches(telegram.header):
            return self._finish(WrongIdentity(transaction.request, expected, telegram.header, telegram))
        transaction.telegrams.append(telegram)
        if telegram.more_records_follow and len(transaction.telegrams) < self.max_telegrams:
            next_step = self._req_ud2(step.address)
            transaction.steps.append(next_step)
            return [Transmit(self._start(next_step))]
        complete = not telegram.more_records_follow
        return self._finish(DataRead(transaction.request, tuple(transaction.telegrams), complete, frame.a))

    def _confirm_and_next(self, step: _Step) -> list[Event]:
        if step.fcb_key is not None:
            self.fcb.confirm(step.fcb_key)
        return self._step_done()

    def _step_done(self) -> list[Event]:
        transaction = self._current
        assert transaction is not None
        request = transaction.request
        if isinstance(request, ReadSecondary) and len(transaction.steps) == 1:
            next_step = self._req_ud2(ADDRESS_NETWORK_LAYER)
            transaction.steps.append(next_step)
            return [Transmit(self._start(next_step))]
        if isinstance(request, SendUserData) and request.ci == CI_DATA_SEND \
                and request.data[:2] == b"\x01\x7A" and len(request.data) == 3 \
                and transaction.steps[-1].fcb_key is not None:
            # The slave now answers at its new address: its FCB memory goes with it.
            self.fcb.move(transaction.steps[-1].fcb_key, request.data[2])
        return self._finish(Confirmed(request))

    def _finish(self, outcome) -> list[Event]:
        self._current = None
        self._step = None
        self._reader.reset()
        return [outcome]


def _check_address(address: int, *, allow_fd: bool, allow_broadcast: bool = True) -> None:
    if not 0 <= address <= 255 or address in (251, 252):
        raise ValueError(f"M-Bus address {address} is reserved or out of range")
    if address == ADDRESS_NETWORK_LAYER and not allow_fd:
        raise ValueError("address 0xFD needs a selection")
    if address == ADDRESS_BROADCAST and not allow_broadcast:
        raise ValueError("nobody answers a read at the broadcast address")
