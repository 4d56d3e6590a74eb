"""HDLC data link layer of IEC 62056-46 as sans-io state machines.

`HdlcServerLink` is the meter side (secondary station, normal response mode),
`HdlcClientLink` the head-end side (primary station). Both take bytes and a time stamp
and give back events; bytes to transmit are collected and fetched with `take_output()`.

Behaviour on errors, chosen after IEC 62056-46 and the DLMS UA conformance test groups:

* frames with a bad HCS/FCS, truncated or garbled frames, and frames to another
  address are discarded silently;
* a frame with an unexpected N(S) is discarded and answered (when polled) with RR
  carrying the expected N(R), so that the primary retransmits;
* an information field longer than the negotiated maximum, an invalid N(R), an unknown
  command, or an information field on a frame type that does not allow one is answered
  with FRMR (ISO/IEC 13239 three-byte information field). The frame is discarded and the
  link stays in normal response mode, so the next valid frame is processed normally
  (an SNRM or DISC also clears the situation, as in ISO/IEC 13239);
* in the disconnected mode, every command other than SNRM and UI is answered with DM;
* frames to an all-station (broadcast) address, and frames from the no-station or
  all-station client address, are discarded unanswered: a connection is point to point;
* the server accepts at most the negotiated receive window of I-frames before the
  primary polls; frames beyond it are discarded (not acknowledged, so the primary
  retransmits them after its poll). UI-frames, which have no sequence numbers, are held to
  the same number per poll. A peer that never polls gets at most that many requests served;
* responses waiting for the primary's poll are bounded (`max_pending_output` bytes); a
  response that would exceed the bound is dropped and counted (`dropped_responses`).
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Union

from smartmeter.errors import SmartmeterError
from smartmeter.transport.hdlc_frame import (
    ALL_STATION_1,
    ALL_STATION_2,
    DEFAULT_MAX_INFO,
    DEFAULT_WINDOW,
    FRMR_W_INVALID_CONTROL,
    FRMR_X_INFORMATION_NOT_PERMITTED,
    FRMR_Y_INFORMATION_TOO_LONG,
    FRMR_Z_INVALID_NR,
    KINDS_WITH_INFORMATION,
    LLC_COMMAND,
    LLC_RESPONSE,
    NO_STATION,
    FrameKind,
    FrmrInformation,
    HdlcAddress,
    HdlcControlError,
    HdlcError,
    HdlcFrame,
    HdlcFrameSplitter,
    HdlcParameterField,
)

__all__ = [
    "ApduReceived", "Connected", "Disconnected", "HdlcClientLink", "HdlcEvent",
    "HdlcParameters", "HdlcServerLink", "HdlcStateError", "MAX_INFO_LENGTH", "MAX_WINDOW",
]

# IEC 62056-46 limits of the negotiable parameters.
MAX_INFO_LENGTH = 2030
MAX_WINDOW = 7


class HdlcStateError(SmartmeterError):
    """An operation was asked of a link in a state that does not allow it."""


@dataclass(frozen=True)
class HdlcParameters:
    """HDLC link parameters (as held by the IEC HDLC setup object, IC 23).

    ``max_info_*`` are information field lengths in bytes, ``window_*`` the number of
    I-frames sent before waiting for an acknowledgement. Timeouts are in seconds;
    ``inactivity_timeout`` 0 disables the inactivity supervision.
    """

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = DEFAULT_WINDOW
    window_rx: int = DEFAULT_WINDOW
    inter_octet_timeout: float = 0.025
    inactivity_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("max_info_tx", "max_info_rx"):
            if not 1 <= getattr(self, name) <= MAX_INFO_LENGTH:
                raise ValueError(f"{name} must be 1..{MAX_INFO_LENGTH}")
        for name in ("window_tx", "window_rx"):
            if not 1 <= getattr(self, name) <= MAX_WINDOW:
                raise ValueError(f"{name} must be 1..{MAX_WINDOW}")

    def proposal(self) -> HdlcParameterField:
        """The SNRM/UA parameter field that announces these values."""
        return HdlcParameterField(self.max_info_tx, self.max_info_rx, self.window_tx,
                                  self.window_rx)

    def negotiate(self, peer: HdlcParameterField) -> "HdlcParameters":
        """Our side of the link after the peer announced `peer` (its own point of view).

        What we send is limited by what the peer receives and vice versa; an absent
        value is the default of IEC 62056-46 (128 bytes, window 1).
        """
        def pick(ours: int, theirs: int | None, default: int, limit: int) -> int:
            value = default if theirs is None else theirs
            return max(1, min(ours, value, limit))

        return replace(
            self,
            max_info_tx=pick(self.max_info_tx, peer.max_info_rx, DEFAULT_MAX_INFO, MAX_INFO_LENGTH),
            max_info_rx=pick(self.max_info_rx, peer.max_info_tx, DEFAULT_MAX_INFO, MAX_INFO_LENGTH),
            window_tx=pick(self.window_tx, peer.window_rx, DEFAULT_WINDOW, MAX_WINDOW),
            window_rx=pick(self.window_rx, peer.window_tx, DEFAULT_WINDOW, MAX_WINDOW),
        )


# --------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Connected:
    """The link entered normal response mode with the negotiated `parameters`."""

    client_address: int
    server_upper: int
    server_lower: int | None
    parameters: HdlcParameters


@dataclass(frozen=True)
class ApduReceived:
    """A complete (reassembled) APDU, LLC header removed."""

    apdu: bytes


@dataclass(frozen=True)
class Disconnected:
    reason: str


HdlcEvent = Union[Connected, ApduReceived, Disconnected]


class _Mode(enum.Enum):
    DISCONNECTED = "NDM"
    CONNECTING = "SNRM sent"
    CONNECTED = "NRM"
    DISCONNECTING = "DISC sent"


def _seq_distance(start: int, end: int) -> int:
    return (end - start) % 8


# --------------------------------------------------------------------------------------
# Shared sequence, window and segmentation machinery


class _LinkBase:
    def __init__(self, params: HdlcParameters, max_apdu_length: int) -> None:
        self.params = params
        self.negotiated = params
        self.max_apdu_length = max_apdu_length
        self._splitter = HdlcFrameSplitter(params.inter_octet_timeout)
        self._output = bytearray()
        self._mode = _Mode.DISCONNECTED
        self.discarded_frames = 0
        self._reset_sequences()

    # -- public helpers

    def take_output(self) -> bytes:
        """Bytes queued for transmission since the last call."""
        out = bytes(self._output)
        self._output.clear()
        return out

    @property
    def connected(self) -> bool:
        return self._mode is _Mode.CONNECTED

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete input (partial frame + partial APDU)."""
        return self._splitter.pending + len(self._reassembly)

    # -- to be provided by the subclasses

    def _local_address(self) -> HdlcAddress:
        raise NotImplementedError

    def _remote_address(self) -> HdlcAddress:
        raise NotImplementedError

    # -- sequence state

    def _reset_sequences(self) -> None:
        self._vs = 0  # V(S): N(S) of the next new I-frame
        self._vr = 0  # V(R): N(S) expected in the next I-frame received
        self._unacked: list[tuple[int, bytes, bool]] = []  # (N(S), info, segmented)
        self._tx_queue: deque[tuple[bytes, bool]] = deque()
        self._peer_busy = False
        self._reassembly = bytearray()
        self._expecting_response = False  # client: request sent, response not complete
        self._received_in_window = {FrameKind.I: 0, FrameKind.UI: 0}  # server: taken since the last poll

    def _emit(self, kind: FrameKind, poll_final: bool, information: bytes = b"",
              segmented: bool = False, send_seq: int = 0) -> None:
        frame = HdlcFrame(kind, self._remote_address(), self._local_address(), poll_final,
                          send_seq, self._vr if kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR) else 0,
                          information, segmented)
        self._output += frame.to_bytes()

    def _queue_segments(self, llc: bytes, apdu: bytes) -> None:
        data = llc + bytes(apdu)
        size = self.negotiated.max_info_tx
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        for index, chunk in enumerate(chunks):
            self._tx_queue.append((chunk, index < len(chunks) - 1))

    def _acknowledge(self, nr: int) -> bool:
        """Drop the I-frames the peer acknowledged with N(R); False if N(R) is invalid."""
        base = self._unacked[0][0] if self._unacked else self._vs
        count = _seq_distance(base, nr)
        if count > len(self._unacked):
            return False
        del self._unacked[:count]
        return True

    def _transmit_window(self) -> bool:
        """Send up to a window of I-frames, the last one with P/F set.

        Frames still unacknowledged are sent again first (go-back-N). Returns False when
        there was nothing to send (or the peer is busy), so the caller answers otherwise.
        """
        if self._peer_busy:
            return False  # what is unacknowledged stays so: the peer may still ack it
        if self._unacked:
            self._vs = self._unacked[0][0]
            self._tx_queue.extendleft((info, seg) for _, info, seg in reversed(self._unacked))
            self._unacked.clear()
        if not self._tx_queue:
            return False
        window = self.negotiated.window_tx
        for count in range(window):
            info, segmented = self._tx_queue.popleft()
            last = count == window - 1 or not self._tx_queue
            self._emit(FrameKind.I, last, info, segmented, self._vs)
            self._unacked.append((self._vs, info, segmented))
            self._vs = (self._vs + 1) % 8
            if last:
                break
        return True

    def _take_segment(self, frame: HdlcFrame) -> bool:
        """Append an in-sequence I-frame's information; False if the APDU grew too long."""
        limit = self.max_apdu_length + len(LLC_COMMAND)
        if len(self._reassembly) + len(frame.information) > limit:
            self._reassembly.clear()
            return False
        self._reassembly += frame.information
        return True

    def _finish_apdu(self, llc: bytes) -> ApduReceived | None:
        data = bytes(self._reassembly)
        self._reassembly.clear()
        if not data.startswith(llc):
            self.discarded_frames += 1
            return None
        return ApduReceived(data[len(llc):])


# --------------------------------------------------------------------------------------
# Server (meter) side


class HdlcServerLink(_LinkBase):
    """The meter's HDLC secondary station.

    `physical_address` is the lower HDLC address; frames addressed with the 1-byte form
    (upper address only) are accepted as well, as on a point-to-point optical port.
    `logical_devices` are the upper addresses served.
    """

    def __init__(self, physical_address: int, logical_devices: Iterable[int] = frozenset({1}),
                 params: HdlcParameters = HdlcParameters(), max_apdu_length: int = 8192,
                 max_pending_output: int | None = None) -> None:
        super().__init__(params, max_apdu_length)
        self.physical_address = physical_address
        self.logical_devices = frozenset(logical_devices)
        # a well-behaved primary has one response outstanding; room for two of the largest
        self.max_pending_output = 2 * max_apdu_length if max_pending_output is None else max_pending_output
        self.dropped_responses = 0  # responses not queued: the primary did not collect earlier ones
        self.window_violations = 0  # I/UI-frames beyond the receive window, discarded
        self.last_frame_at: float | None = None  # when the last well-formed frame for us arrived
        self._client: HdlcAddress | None = None
        self._server: HdlcAddress | None = None
        self._last_activity = 0.0
        self._pending_frmr: bytes | None = None
        self._awaiting_response = False

    # -- public API

    def receive(self, data: bytes, now: float) -> list[HdlcEvent]:
        events = self._check_inactivity(now)
        for raw in self._splitter.feed(data, now):
            events += self._on_raw_frame(raw, now)
        return events

    def tick(self, now: float) -> list[HdlcEvent]:
        self._splitter.expire(now)
        return self._check_inactivity(now)

    def send_apdu(self, apdu: bytes) -> bool:
        """Queue a response APDU; it goes out now if the client's poll is pending,
        else at the next poll.

        Returns False, sending nothing, when the link is not connected: events of one
        `receive` call are handed over together, so the link may already have been
        closed (DISC, timeout) when the application answers an earlier ApduReceived.
        """
        if self._mode is not _Mode.CONNECTED:
            return False
        if self.pending_output + len(LLC_RESPONSE) + len(apdu) > self.max_pending_output:
            self.dropped_responses += 1
            return False
        self._queue_segments(LLC_RESPONSE, apdu)
        if self._awaiting_response:
            self._awaiting_response = False
            self._transmit_window()
        return True

    @property
    def client_address(self) -> int | None:
        return None if self._client is None else self._client.upper

    @property
    def pending_output(self) -> int:
        """Information bytes of responses queued or sent but not yet acknowledged."""
        return sum(len(info) for info, _ in self._tx_queue) + sum(len(info) for _, info, _ in self._unacked)

    # -- internals

    def _local_address(self) -> HdlcAddress:
        assert self._server is not None
        return self._server

    def _remote_address(self) -> HdlcAddress:
        assert self._client is not None
        return self._client

    def _addressed_to_us(self, address: HdlcAddress) -> bool:
        if address.upper not in self.logical_devices:
            return False
        if address.lower is not None and address.lower == (ALL_STATION_1 if address.length == 2 else ALL_STATION_2):
            return False  # the all-station address of this form, even where it equals ours
        return address.lower is None or address.lower == self.physical_address

    @staticmethod
    def _valid_client(address: HdlcAddress) -> bool:
        """A one-byte client address naming one client: not no-station, not all-station."""
        return address.length == 1 and address.upper not in (NO_STATION, ALL_STATION_1)

    def _check_inactivity(self, now: float) -> list[HdlcEvent]:
        timeout = self.params.inactivity_timeout
        if (self._mode is _Mode.CONNECTED and timeout > 0
                and now - self._last_activity > timeout):
            self._enter_disconnected()
            return [Disconnected("inactivity timeout")]
        return []

    def _enter_disconnected(self) -> None:
        self._mode = _Mode.DISCONNECTED
        self._reset_sequences()
        self._pending_frmr = None
        self._awaiting_response = False
        self.negotiated = self.params

    def _reply_to(self, client: HdlcAddress, server: HdlcAddress, kind: FrameKind,
                  final: bool, information: bytes = b"") -> None:
        frame = HdlcFrame(kind, client, server, final, 0, 0, information)
        self._output += frame.to_bytes()

    def _on_raw_frame(self, raw: bytes, now: float) -> list[HdlcEvent]:
        try:
            frame = HdlcFrame.from_bytes(raw)
        except HdlcControlError as error:
            self._on_unknown_command(error, now)
            return []
        except HdlcError:
            self.discarded_frames += 1
            return []
        if not self._addressed_to_us(frame.destination) or not self._valid_client(frame.source):
            self.discarded_frames += 1
            return []
        self.last_frame_at = now
        if (self._mode is _Mode.CONNECTED and frame.source == self._client
                and frame.destination == self._server):
            self._last_activity = now
            return self._in_connected(frame, now)
        return self._in_disconnected(frame, now)

    def _on_unknown_command(self, error: HdlcControlError, now: float) -> None:
        if not self._addressed_to_us(error.destination) or not self._valid_client(error.source):
            self.discarded_frames += 1
            return
        self.last_frame_at = now
        if (self._mode is _Mode.CONNECTED and error.source == self._client
                and error.destination == self._server):
            self._last_activity = now
            reasons = FRMR_W_INVALID_CONTROL
            if error.has_information:
                reasons |= FRMR_X_INFORMATION_NOT_PERMITTED
            self._reject(error.control, reasons, error.poll_final)
        elif error.poll_final:
            self._reply_to(error.source, error.destination, FrameKind.DM, True)

    def _in_disconnected(self, frame: HdlcFrame, now: float) -> list[HdlcEvent]:
        """Frames from a client that holds no connection with us (NDM, or another client)."""
        kind = frame.kind
        if kind is FrameKind.SNRM and self._mode is _Mode.DISCONNECTED:
            return self._accept_snrm(frame, now, [])
        if kind in (FrameKind.UI, FrameKind.UA, FrameKind.DM, FrameKind.FRMR):
            return []  # responses, or unconfirmed data we do not take outside a connection
        # SNRM from a second client while connected, DISC, I, RR, RNR: "not connected".
        self._reply_to(frame.source, frame.destination, FrameKind.DM, frame.poll_final)
        return []

    def _accept_snrm(self, frame: HdlcFrame, now: float,
                     events: list[HdlcEvent]) -> list[HdlcEvent]:
        try:
            proposal = (HdlcParameterField.from_bytes(frame.information)
                        if frame.information else HdlcParameterField())
        except HdlcError:
            self.discarded_frames += 1
            self._reply_to(frame.source, frame.destination, FrameKind.DM, frame.poll_final)
            return events
        self._enter_disconnected()
        self.negotiated = self.params.negotiate(proposal)
        self._mode = _Mode.CONNECTED
        self._client = frame.source
        self._server = frame.destination
        self._last_activity = now
        self._reply_to(frame.source, frame.destination, FrameKind.UA, frame.poll_final,
                       self.negotiated.proposal().to_bytes())
        events.append(Connected(frame.source.upper, frame.destination.upper,
                                frame.destination.lower, self.negotiated))
        return events

    def _reject(self, control: int, reasons: int, poll: bool) -> None:
        self.discarded_frames += 1
        self._pending_frmr = FrmrInformation(control, self._vs, self._vr, reasons).to_bytes()
        if poll:
            self._send_pending_frmr()

    def _send_pending_frmr(self) -> None:
        assert self._pending_frmr is not None
        self._emit(FrameKind.FRMR, True, self._pending_frmr)
        self._pending_frmr = None

    def _answer_poll(self) -> None:
        """We hold the poll: send I-frames if any are waiting, else RR (or FRMR)."""
        self._awaiting_response = False
        if self._pending_frmr is not None:
            self._send_pending_frmr()
        elif not self._transmit_window():
            self._emit(FrameKind.RR, True)

    def _in_connected(self, frame: HdlcFrame, now: float) -> list[HdlcEvent]:
        events = self._serve_connected(frame, now)
        if frame.poll_final:
            self._received_in_window = {FrameKind.I: 0, FrameKind.UI: 0}  # the poll hands us the turn
        return events

    def _within_window(self, kind: FrameKind) -> bool:
        """Take one more I- (or UI-) frame before the poll, unless the receive window is used up."""
        if self._received_in_window[kind] >= self.negotiated.window_rx:
            self.discarded_frames += 1
            self.window_violations += 1
            return False
        self._received_in_window[kind] += 1
        return True

    def _serve_connected(self, frame: HdlcFrame, now: float) -> list[HdlcEvent]:
        kind = frame.kind
        poll = frame.poll_final
        if kind is FrameKind.SNRM:
            # A new SNRM resets the link: the association above it is gone.
            return self._accept_snrm(frame, now, [Disconnected("link reset by SNRM")])
        if kind is FrameKind.DISC:
            self._emit(FrameKind.UA, poll)
            self._enter_disconnected()
            return [Disconnected("DISC received")]
        if kind in (FrameKind.UA, FrameKind.DM, FrameKind.FRMR):
            self._reject(frame.control, FRMR_W_INVALID_CONTROL, poll)
            return []
        if frame.information and kind not in KINDS_WITH_INFORMATION:
            self._reject(frame.control, FRMR_W_INVALID_CONTROL | FRMR_X_INFORMATION_NOT_PERMITTED, poll)
            return []
        if kind is FrameKind.UI:
            if not self._within_window(kind):
                if poll:
                    self._answer_poll()
                return []
            if frame.information.startswith(LLC_COMMAND):
                return [ApduReceived(frame.information[len(LLC_COMMAND):])]
            return []
        if kind is FrameKind.I and len(frame.information) > self.negotiated.max_info_rx:
            self._reject(frame.control, FRMR_Y_INFORMATION_TOO_LONG, poll)
            return []
        # I, RR, RNR: all carry N(R).
        if not self._acknowledge(frame.recv_seq):
            self._reject(frame.control, FRMR_Z_INVALID_NR, poll)
            return []
        if kind is FrameKind.RR:
            self._peer_busy = False
            if poll:
                self._answer_poll()
            return []
        if kind is FrameKind.RNR:
            self._peer_busy = True
            if poll:
                self._answer_poll()
            return []
        return self._on_information(frame)

    def _on_information(self, frame: HdlcFrame) -> list[HdlcEvent]:
        poll = frame.poll_final
        if frame.send_seq != self._vr:
            # Out of sequence (lost or repeated frame): discard, tell the expected N(S).
            self.discarded_frames += 1
            if poll:
                self._answer_poll_with_rr()
            return []
        if not self._within_window(FrameKind.I):
            # Beyond the window (the primary sent more than it may before polling): not
            # acknowledged, so the primary sends it again after the poll.
            if poll:
                self._answer_poll()
            return []
        if not self._take_segment(frame):
            self._reject(frame.control, FRMR_Y_INFORMATION_TOO_LONG, poll)
            return []
        self._vr = (self._vr + 1) % 8
        if frame.segmented:
            if poll:
                self._answer_poll_with_rr()
            return []
        event = self._finish_apdu(LLC_COMMAND)
        if not poll:
            return [event] if event else []
        if event is None or self._tx_queue or self._unacked or self._pending_frmr:
            self._answer_poll()
        else:
            # Hold the poll until the application hands over its response.
            self._awaiting_response = True
        return [event] if event else []

    def _answer_poll_with_rr(self) -> None:
        if self._pending_frmr is not None:
            self._send_pending_frmr()
        else:
            self._emit(FrameKind.RR, True)


# --------------------------------------------------------------------------------------
# Client (head-end) side


class HdlcClientLink(_LinkBase):
    """The head-end's HDLC primary station.

    `response_timeout` (seconds, None = never) makes `tick` poll again when the server
    stays silent, up to `max_retries` times, after which the link is given up.
    """

    def __init__(self, client_address: int, server_upper: int, server_lower: int | None = None,
                 params: HdlcParameters = HdlcParameters(), *, server_address_length: int = 0,
                 max_apdu_length: int = 65535, response_timeout: float | None = None,
                 max_retries: int = 3) -> None:
        super().__init__(params, max_apdu_length)
        self._client = HdlcAddress.client(client_address)
        self._server = HdlcAddress(server_upper, server_lower, server_address_length)
        self.response_timeout = response_timeout
        self.max_retries = max_retries
        self._waiting_since: float | None = None  # a P frame is out, its F frame is due
        self._retries = 0
        self._last_request = b""

    def _local_address(self) -> HdlcAddress:
        return self._client

    def _remote_address(self) -> HdlcAddress:
        return self._server

    # -- public API

    def connect(self, now: float | None = None) -> bytes:
        """The SNRM frame that opens the link (parameters sent unless all defaults)."""
        proposal = self.params.proposal()
        # IEC 62056-46 lets the field be left out when every value is the default.
        info = b"" if proposal == HdlcParameters().proposal() else proposal.to_bytes()
        self._reset_sequences()
        self._mode = _Mode.CONNECTING
        frame = HdlcFrame(FrameKind.SNRM, self._server, self._client, True, 0, 0, info)
        return self._start_wait(frame.to_bytes(), now)

    def disconnect(self, now: float | None = None) -> bytes:
        """The DISC frame that closes the link."""
        self._mode = _Mode.DISCONNECTING
        frame = HdlcFrame(FrameKind.DISC, self._server, self._client, True)
        return self._start_wait(frame.to_bytes(), now)

    def send_apdu(self, apdu: bytes, now: float | None = None) -> None:
        """Queue a request APDU for `take_output()`, segmented to the negotiated size."""
        if self._mode is not _Mode.CONNECTED:
            raise HdlcStateError("send_apdu before the HDLC link is connected")
        self._queue_segments(LLC_COMMAND, apdu)
        self._expecting_response = True
        if self._waiting_since is None and not self._unacked:
            self._send_window(now)

    def receive(self, data: bytes, now: float) -> list[HdlcEvent]:
        events: list[HdlcEvent] = []
        for raw in self._splitter.feed(data, now):
            events += self._on_raw_frame(raw, now)
        return events

    def tick(self, now: float) -> list[HdlcEvent]:
        self._splitter.expire(now)
        if (self.response_timeout is None or self._waiting_since is None
                or now - self._waiting_since <= self.response_timeout):
            return []
        if self._retries >= self.max_retries:
            self._mode = _Mode.DISCONNECTED
            self._waiting_since = None
            self._reset_sequences()
            return [Disconnected("no response from the server")]
        self._retries += 1
        self._waiting_since = now
        if self._mode is _Mode.CONNECTED:
            # Ask again: RR with our V(R) makes the server repeat what we missed.
            if not self._transmit_window():
                self._emit(FrameKind.RR, True)
        else:
            self._output += self._last_request
        return []

    # -- internals

    def _start_wait(self, frame_bytes: bytes, now: float | None) -> bytes:
        self._last_request = frame_bytes
        self._waiting_since = now
        self._retries = 0
        return frame_bytes

    def _send_window(self, now: float | None) -> bool:
        if self._transmit_window():
            self._waiting_since = now
            self._retries = 0
            return True
        return False

    def _poll(self, now: float) -> None:
        self._emit(FrameKind.RR, True)
        self._waiting_since = now
        self._retries = 0

    def _on_raw_frame(self, raw: bytes, now: float) -> list[HdlcEvent]:
        try:
            frame = HdlcFrame.from_bytes(raw)
        except HdlcError:
            self.discarded_frames += 1
            return []
        if (frame.destination != self._client or frame.source.upper != self._server.upper
                or frame.source.lower != self._server.lower):
            self.discarded_frames += 1
            return []
        if frame.poll_final:
            self._waiting_since = None
        mode = self._mode
        if mode is _Mode.CONNECTING:
            return self._on_snrm_answer(frame)
        if mode is _Mode.DISCONNECTING:
            if frame.kind in (FrameKind.UA, FrameKind.DM):
                self._mode = _Mode.DISCONNECTED
                self._waiting_since = None
                self._reset_sequences()
                return [Disconnected("disconnected")]
            return []
        if mode is not _Mode.CONNECTED:
            return []
        return self._in_connected(frame, now)

    def _on_snrm_answer(self, frame: HdlcFrame) -> list[HdlcEvent]:
        if frame.kind is FrameKind.UA:
            try:
                field = (HdlcParameterField.from_bytes(frame.information)
                         if frame.information else HdlcParameterField())
            except HdlcError:
                self.discarded_frames += 1
                return []
            self.negotiated = self.params.negotiate(field)
            self._mode = _Mode.CONNECTED
            self._waiting_since = None
            return [Connected(self._client.upper, self._server.upper, self._server.lower,
                              self.negotiated)]
        if frame.kind in (FrameKind.DM, FrameKind.FRMR):
            self._mode = _Mode.DISCONNECTED
            self._waiting_since = None
            return [Disconnected(f"connection refused ({frame.kind.value})")]
        return []

    def _in_connected(self, frame: HdlcFrame, now: float) -> list[HdlcEvent]:
        kind = frame.kind
        if kind in (FrameKind.DM, FrameKind.FRMR, FrameKind.DISC):
            detail = ""
            if kind is FrameKind.FRMR:
                detail = f": {frame.information.hex()}"
            self._mode = _Mode.DISCONNECTED
            self._waiting_since = None
            self._reset_sequences()
            return [Disconnected(f"{kind.value} received{detail}")]
        if kind not in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
            return []
        if not self._acknowledge(frame.recv_seq):
            self.discarded_frames += 1
            return []
        if kind is FrameKind.RNR:
            self._peer_busy = True
            self._waiting_since = now  # poll again after response_timeout
            return []
        self._peer_busy = False
        if kind is FrameKind.RR:
            if frame.poll_final and not self._send_window(now) and self._expecting_response:
                # The server has no response yet: poll again after response_timeout.
                self._waiting_since = now
            return []
        return self._on_information(frame, now)

    def _on_information(self, frame: HdlcFrame, now: float) -> list[HdlcEvent]:
        if frame.send_seq != self._vr:
            self.discarded_frames += 1
            if frame.poll_final:
                self._poll(now)
            return []
        if not self._take_segment(frame):
            # The response is larger than we accept: give up the link rather than loop.
            self._mode = _Mode.DISCONNECTED
            self._reset_sequences()
            return [Disconnected("response APDU exceeds max_apdu_length")]
        self._vr = (self._vr + 1) % 8
        if frame.segmented:
            if frame.poll_final:
                self._poll(now)
            return []
        event = self._finish_apdu(LLC_RESPONSE)
        self._expecting_response = False
        if frame.poll_final and self._tx_queue:
            self._send_window(now)
        return [event] if event else []

