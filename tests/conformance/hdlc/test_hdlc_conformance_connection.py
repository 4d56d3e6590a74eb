"""Connection management of the HDLC server link (IEC 62056-46 §6.4.4; CTT HDLC_1 style):
SNRM/UA with parameter negotiation, DISC/DM, addressing, inactivity timeout."""
from __future__ import annotations

import pytest

from hdlc_harness import CLIENT, PHYSICAL, SERVER, Primary, frame
from smartmeter.transport.hdlc import ApduReceived, Connected, Disconnected, HdlcParameters
from smartmeter.transport.hdlc_frame import (
    FrameKind,
    HdlcAddress,
    HdlcParameterField,
    LLC_COMMAND,
)


def test_snrm_without_information_gives_default_parameters():
    # Our own capabilities are larger; the client announced nothing, i.e. the defaults.
    p = Primary(HdlcParameters(max_info_tx=1024, max_info_rx=1024, window_tx=7, window_rx=7))
    exchange = p.connect()
    ua = exchange.only
    assert ua.poll_final and ua.destination == CLIENT and ua.source == SERVER
    assert HdlcParameterField.from_bytes(ua.information) == HdlcParameterField(128, 128, 1, 1)
    (event,) = exchange.events
    assert event == Connected(0x10, 1, PHYSICAL, event.parameters)
    assert (event.parameters.max_info_tx, event.parameters.max_info_rx,
            event.parameters.window_tx, event.parameters.window_rx) == (128, 128, 1, 1)
    p.round_trip()


@pytest.mark.parametrize("ours, proposal, expected", [
    # ours (tx, rx, wtx, wrx); client proposal from its side (tx, rx, wtx, wrx);
    # expected UA from our side (tx, rx, wtx, wrx)
    ((512, 512, 7, 7), (256, 1024, 3, 5), (512, 256, 5, 3)),
    ((128, 128, 1, 1), (1024, 1024, 7, 7), (128, 128, 1, 1)),
    ((2030, 256, 4, 2), (None, 2030, None, 7), (2030, 128, 4, 1)),
])
def test_snrm_parameters_negotiated_to_the_minimum(ours, proposal, expected):
    p = Primary(HdlcParameters(*ours))
    exchange = p.connect(HdlcParameterField(*proposal).to_bytes())
    assert HdlcParameterField.from_bytes(exchange.only.information) == HdlcParameterField(*expected)
    params = exchange.events[0].parameters
    assert (params.max_info_tx, params.max_info_rx, params.window_tx, params.window_rx) == expected
    assert p.link.negotiated == params
    p.round_trip()


def test_snrm_with_malformed_parameter_field_is_refused_with_dm():
    p = Primary()
    exchange = p.send(frame(FrameKind.SNRM, info=b"\x81\x80\x05\x05\x03\x00"))
    assert exchange.only.kind is FrameKind.DM and exchange.events == []
    p.connect()
    p.round_trip()


@pytest.mark.parametrize("destination", [
    HdlcAddress(2, PHYSICAL, 2),          # logical device we do not have
    HdlcAddress(1, PHYSICAL + 1, 2),      # another meter on the bus
    HdlcAddress(1, PHYSICAL + 1, 4),
    HdlcAddress.server(0x7F),             # all-station: not answered with a connection
])
def test_frames_to_unknown_addresses_are_ignored(destination):
    p = Primary()
    for kind in (FrameKind.SNRM, FrameKind.DISC, FrameKind.I):
        exchange = p.send(frame(kind, dst=destination))
        assert exchange.frames == [] and exchange.events == []
    p.connect()
    exchange = p.send(frame(FrameKind.I, ns=0, info=LLC_COMMAND + b"\xC0", dst=destination))
    assert exchange.frames == [] and exchange.events == []
    p.round_trip()


@pytest.mark.parametrize("server_address", [
    HdlcAddress.server(1), HdlcAddress(1, PHYSICAL, 2), HdlcAddress(1, PHYSICAL, 4),
])
def test_server_answers_in_the_address_form_it_was_called_with(server_address):
    p = Primary()
    exchange = p.send(frame(FrameKind.SNRM, dst=server_address))
    assert exchange.only.kind is FrameKind.UA
    assert exchange.only.source == server_address
    assert exchange.only.source.to_bytes() == server_address.to_bytes()


def test_several_logical_devices():
    p = Primary(logical_devices=frozenset({1, 0x10}))
    exchange = p.send(frame(FrameKind.SNRM, dst=HdlcAddress(0x10, PHYSICAL, 2)))
    assert exchange.only.kind is FrameKind.UA
    assert exchange.events[0].server_upper == 0x10


def test_disc_when_connected_answers_ua_and_disconnects():
    p = Primary()
    p.connect()
    p.round_trip()
    exchange = p.send(frame(FrameKind.DISC))
    assert exchange.only.kind is FrameKind.UA and exchange.only.poll_final
    assert exchange.only.information == b""
    assert exchange.events == [Disconnected("DISC received")]
    assert not p.link.connected
    # Now disconnected: I-frame -> DM; a new SNRM works.
    assert p.send(frame(FrameKind.I, info=LLC_COMMAND + b"\xC0")).only.kind is FrameKind.DM
    p.connect()
    p.round_trip()


def test_disc_when_disconnected_answers_dm():
    p = Primary()
    exchange = p.send(frame(FrameKind.DISC))
    assert exchange.only.kind is FrameKind.DM and exchange.only.poll_final
    assert exchange.events == []
    p.connect()
    p.round_trip()


@pytest.mark.parametrize("kind", [FrameKind.I, FrameKind.RR, FrameKind.RNR])
def test_frames_before_snrm_answered_with_dm(kind):
    p = Primary()
    info = LLC_COMMAND + b"\xC0\x01" if kind is FrameKind.I else b""
    exchange = p.send(frame(kind, info=info))
    assert exchange.only.kind is FrameKind.DM
    assert exchange.only.destination == CLIENT and exchange.only.source == SERVER
    assert exchange.events == []
    p.connect()
    p.round_trip()


def test_ui_before_snrm_ignored():
    p = Primary()
    exchange = p.send(frame(FrameKind.UI, info=LLC_COMMAND + b"\xC0"))
    assert exchange.frames == [] and exchange.events == []


def test_snrm_while_connected_resets_the_link():
    p = Primary()
    p.connect()
    p.round_trip()
    p.round_trip()
    exchange = p.connect()
    assert [type(e) for e in exchange.events] == [Disconnected, Connected]
    p.round_trip()  # sequence numbers start again at 0


def test_second_client_while_connected_gets_dm_and_first_keeps_working():
    p = Primary()
    p.connect()
    other = HdlcAddress.client(0x01)
    exchange = p.send(frame(FrameKind.SNRM, src=other))
    assert exchange.only.kind is FrameKind.DM and exchange.only.destination == other
    exchange = p.send(frame(FrameKind.I, info=LLC_COMMAND + b"\xC0", src=other))
    assert exchange.only.kind is FrameKind.DM and exchange.events == []
    p.round_trip()


def test_inactivity_timeout_disconnects_silently():
    p = Primary(HdlcParameters(inactivity_timeout=120.0))
    p.connect()
    p.round_trip()
    assert p.link.tick(p.now + 119.0) == []
    events = p.link.tick(p.now + 121.0)
    assert events == [Disconnected("inactivity timeout")]
    assert p.link.take_output() == b""  # IEC 62056-46: no frame is sent
    p.now += 121.0
    assert p.send(frame(FrameKind.I, info=LLC_COMMAND + b"\xC0")).only.kind is FrameKind.DM
    p.connect()
    p.round_trip()


def test_inactivity_timeout_applied_on_receive_without_tick():
    p = Primary(HdlcParameters(inactivity_timeout=10.0))
    p.connect()
    exchange = p.send(p.i_frame(LLC_COMMAND + b"\xC0"), dt=11.0)
    assert exchange.events == [Disconnected("inactivity timeout")]
    assert exchange.only.kind is FrameKind.DM


def test_traffic_restarts_the_inactivity_timer():
    p = Primary(HdlcParameters(inactivity_timeout=10.0))
    p.connect()
    for _ in range(5):
        p.now += 9.0
        assert p.link.tick(p.now) == []
        p.round_trip()


def test_zero_inactivity_timeout_disables_supervision():
    p = Primary(HdlcParameters(inactivity_timeout=0))
    p.connect()
    assert p.link.tick(1e9) == []
    p.now = 1e9
    p.round_trip()


def test_send_apdu_without_connection_sends_nothing():
    p = Primary()
    assert p.link.send_apdu(b"\xC4") is False
    assert p.link.take_output() == b""


def test_answer_to_a_request_after_disc_in_the_same_chunk_is_dropped():
    p = Primary()
    p.connect()
    exchange = p.send(p.i_frame(LLC_COMMAND + b"\xC0\x01") + frame(FrameKind.DISC))
    assert [type(e) for e in exchange.events] == [ApduReceived, Disconnected]
    assert exchange.only.kind is FrameKind.UA
    assert p.link.send_apdu(b"\xC4") is False
    assert p.link.take_output() == b""


def test_ui_frame_in_normal_response_mode_is_delivered_without_answer():
    p = Primary()
    p.connect()
    exchange = p.send(frame(FrameKind.UI, pf=False, info=LLC_COMMAND + b"\xC0\x01"))
    assert exchange.apdus == [b"\xC0\x01"] and exchange.frames == []
    p.round_trip()
