"""What a misbehaving primary can make the server link hold (IEC 62056-46 §6.4.4.4.3.3 windows):
I-frames beyond the negotiated receive window are not taken, responses waiting for a poll are
bounded, and nothing is connected through the all-station or no-station addresses."""
from __future__ import annotations

import pytest

from hdlc_harness import CLIENT, GET_REQUEST, PHYSICAL, Primary, frame
from smartmeter.transport.hdlc import Connected, HdlcParameters, HdlcServerLink
from smartmeter.transport.hdlc_frame import (
    LLC_COMMAND,
    LLC_RESPONSE,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcParameterField,
)


def connected(window: int) -> Primary:
    p = Primary(HdlcParameters(window_tx=window, window_rx=window))
    p.connect(HdlcParameterField(128, 128, window, window).to_bytes())
    return p


@pytest.mark.parametrize("window", [1, 3, 7])
def test_unpolled_i_frames_beyond_the_window_are_not_taken(window):
    p = connected(window)
    flood = 200
    delivered = 0
    for _ in range(flood):
        exchange = p.send(p.i_frame(LLC_COMMAND + GET_REQUEST, pf=False))
        assert exchange.frames == []  # never answered without the poll
        delivered += len(exchange.apdus)
    assert delivered == window  # a window's worth, not the flood
    # the rest discarded: beyond the window, or (N(S) runs on modulo 8) out of sequence after it
    assert p.link.discarded_frames == flood - window and p.link.window_violations > 0
    # the poll gets V(R) = window: the primary learns which frames to send again
    exchange = p.send(frame(FrameKind.RR, nr=0))
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == window % 8
    p.ns = window % 8
    p.round_trip()  # after the poll the link works normally


def test_window_counts_restart_at_every_poll():
    p = connected(3)
    for _ in range(5):  # a well-behaved primary: 3 frames, the last one polls
        assert p.send(p.i_frame(LLC_COMMAND + GET_REQUEST, pf=False)).apdus == [GET_REQUEST]
        assert p.send(p.i_frame(LLC_COMMAND + GET_REQUEST, pf=False)).apdus == [GET_REQUEST]
        assert p.send(p.i_frame(LLC_COMMAND + GET_REQUEST, pf=True)).apdus == [GET_REQUEST]
        p.send(frame(FrameKind.RR, nr=p.nr))  # nothing queued: RR, turn back to the primary
    assert p.link.window_violations == 0


def test_unpolled_ui_frames_are_bounded_like_the_window():
    p = connected(2)
    delivered = sum(len(p.send(frame(FrameKind.UI, pf=False, info=LLC_COMMAND + GET_REQUEST)).apdus)
                    for _ in range(100))
    assert delivered == 2
    p.send(frame(FrameKind.RR, nr=0))
    assert p.send(frame(FrameKind.UI, pf=False, info=LLC_COMMAND + GET_REQUEST)).apdus == [GET_REQUEST]


def test_responses_waiting_for_a_poll_are_bounded():
    """A primary that polls with every request but never acknowledges the server's I-frames
    (N(R) stays 0) makes every response wait; the queue stops at max_pending_output."""
    p = connected(1)
    answer = bytes(100)
    requests = 300
    for _ in range(requests):
        raw = frame(FrameKind.I, True, p.ns, 0, LLC_COMMAND + GET_REQUEST)
        p.ns = (p.ns + 1) % 8
        exchange = p.send(raw)
        assert exchange.apdus == [GET_REQUEST]
        p.respond(answer)
        assert p.link.pending_output <= p.link.max_pending_output
    per_response = len(LLC_RESPONSE) + len(answer)
    kept = p.link.max_pending_output // per_response
    assert kept < requests
    assert p.link.dropped_responses == requests - kept
    assert p.link.pending_output == kept * per_response


def _snrm(link: HdlcServerLink, destination: HdlcAddress, source: HdlcAddress = CLIENT):
    events = link.receive(HdlcFrame(FrameKind.SNRM, destination, source, True).to_bytes(), 1.0)
    return events, link.take_output()


@pytest.mark.parametrize("client", [0x00, 0x7F])
def test_snrm_from_the_no_station_or_all_station_client_address_is_ignored(client):
    link = HdlcServerLink(PHYSICAL, {1})
    assert _snrm(link, HdlcAddress(1, PHYSICAL, 2), HdlcAddress.client(client)) == ([], b"")
    assert not link.connected
    events, out = _snrm(link, HdlcAddress(1, PHYSICAL, 2))
    assert isinstance(events[0], Connected) and out


@pytest.mark.parametrize("physical, destination", [
    (0x7F, HdlcAddress(1, 0x7F, 2)),        # all-station of the two-byte form
    (0x3FFF, HdlcAddress(1, 0x3FFF, 4)),    # all-station of the four-byte form
    (0x11, HdlcAddress(1, 0x7F, 2)),
    (0x11, HdlcAddress(0x7F, 0x11, 2)),     # all logical devices
    (0x11, HdlcAddress(0x7F, None, 1)),
])
def test_snrm_to_an_all_station_address_is_not_answered(physical, destination):
    link = HdlcServerLink(physical, {1})
    assert _snrm(link, destination) == ([], b"")
    assert not link.connected


def test_frames_to_the_all_station_address_do_not_reach_an_open_link():
    p = Primary()
    p.connect()
    for kind in (FrameKind.I, FrameKind.UI, FrameKind.DISC, FrameKind.SNRM):
        exchange = p.send(frame(kind, info=LLC_COMMAND + GET_REQUEST if kind in (FrameKind.I, FrameKind.UI) else b"",
                                dst=HdlcAddress(1, 0x7F, 2)))
        assert exchange.frames == [] and exchange.events == []
    assert p.link.connected
    p.round_trip()
