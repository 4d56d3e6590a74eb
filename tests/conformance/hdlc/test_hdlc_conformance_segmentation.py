"""Segmentation, windows and flow control of the HDLC links (IEC 62056-46 §6.4.4.4.3.3),
the head-end client link against the server link, and gurux-dlms as an outside peer."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from hdlc_harness import GET_REQUEST, GET_RESPONSE, Primary, frame, parse_all
from smartmeter.transport.hdlc import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcClientLink,
    HdlcParameters,
    HdlcServerLink,
)
from smartmeter.transport.hdlc_frame import (
    FrameKind,
    HdlcFrame,
    HdlcParameterField,
    LLC_COMMAND,
    LLC_RESPONSE,
)


def connected(window: int = 1, max_info: int = 128) -> Primary:
    p = Primary(HdlcParameters(max_info_tx=max_info, max_info_rx=max_info,
                               window_tx=window, window_rx=window))
    p.connect(HdlcParameterField(max_info, max_info, window, window).to_bytes())
    return p


# ------------------------------------------------------------------ server -> client


def test_response_segmented_with_window_1():
    p = connected()
    p.request()
    answer = bytes(range(256)) * 2  # 3 + 512 bytes -> 5 segments of <= 128
    out = p.respond(answer).only
    assert out.segmented and out.poll_final and len(out.information) == 128
    data = p.take_i_frames([out])
    segments = 1
    while True:
        exchange = p.send(frame(FrameKind.RR, nr=p.nr))
        seg = exchange.only
        assert seg.kind is FrameKind.I and seg.poll_final and len(seg.information) <= 128
        data += p.take_i_frames([seg])
        segments += 1
        if not seg.segmented:
            break
    assert segments == 5
    assert data == LLC_RESPONSE + answer
    # Nothing more to send: an RR poll is answered with RR.
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == p.ns
    p.round_trip()


def test_response_segmented_with_window_3():
    p = connected(window=3, max_info=64)
    p.request()
    answer = bytes(range(200)) * 3  # 603 bytes -> 10 segments
    burst = p.respond(answer).frames
    assert len(burst) == 3
    assert [f.poll_final for f in burst] == [False, False, True]
    assert all(f.segmented for f in burst)
    data = p.take_i_frames(burst)
    bursts = [burst]
    while bursts[-1][-1].segmented:
        burst = p.send(frame(FrameKind.RR, nr=p.nr)).frames
        assert burst[-1].poll_final and not any(f.poll_final for f in burst[:-1])
        data += p.take_i_frames(burst)
        bursts.append(burst)
    assert [len(b) for b in bursts] == [3, 3, 3, 1]
    assert data == LLC_RESPONSE + answer
    p.round_trip()


def test_window_go_back_n_when_client_acknowledges_part_of_a_burst():
    p = connected(window=3, max_info=64)
    p.request()
    burst = p.respond(bytes(400)).frames
    assert [f.send_seq for f in burst] == [0, 1, 2]
    # The client received only the first frame of the burst: RR with N(R)=1.
    p.take_i_frames(burst[:1])
    again = p.send(frame(FrameKind.RR, nr=p.nr)).frames
    assert [f.send_seq for f in again] == [1, 2, 3]
    assert [f.information for f in again[:2]] == [f.information for f in burst[1:]]
    data = burst[0].information + p.take_i_frames(again)
    while again[-1].segmented:
        again = p.send(frame(FrameKind.RR, nr=p.nr)).frames
        data += p.take_i_frames(again)
    assert data == LLC_RESPONSE + bytes(400)
    p.round_trip()


def test_rnr_stops_the_server_and_rr_resumes():
    p = connected()
    p.request()
    first = p.respond(bytes(300)).only
    p.take_i_frames([first])
    exchange = p.send(frame(FrameKind.RNR, nr=p.nr))
    assert exchange.only.kind is FrameKind.RR  # busy client: no I-frame
    exchange = p.send(frame(FrameKind.RNR, nr=p.nr))
    assert exchange.only.kind is FrameKind.RR
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert exchange.only.kind is FrameKind.I and exchange.only.send_seq == 1
    p.take_i_frames(exchange.frames)
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert not exchange.only.segmented
    p.take_i_frames(exchange.frames)
    p.round_trip()


def test_rr_poll_while_application_is_still_working_is_answered_with_rr():
    p = connected()
    p.request()
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == 1
    # The answer comes later and waits for the next poll.
    assert p.respond(GET_RESPONSE).frames == []
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert p.take_i_frames(exchange.frames) == LLC_RESPONSE + GET_RESPONSE


# ------------------------------------------------------------------ client -> server


def test_request_segmented_with_window_1_each_segment_acknowledged():
    p = connected(max_info=32)
    apdu = bytes(range(100))
    data = LLC_COMMAND + apdu
    segments = [data[i:i + 32] for i in range(0, len(data), 32)]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        exchange = p.send(p.i_frame(seg, segmented=not last))
        if last:
            assert exchange.apdus == [apdu] and exchange.frames == []
        else:
            assert exchange.apdus == []
            rr = exchange.only
            assert rr.kind is FrameKind.RR and rr.poll_final and rr.recv_seq == p.ns
    reply = p.respond(GET_RESPONSE)
    assert p.take_i_frames(reply.frames) == LLC_RESPONSE + GET_RESPONSE


def test_request_segmented_with_window_4_acknowledged_at_poll_only():
    p = connected(window=4, max_info=32)
    apdu = bytes(range(250))
    data = LLC_COMMAND + apdu
    segments = [data[i:i + 32] for i in range(0, len(data), 32)]  # 8 segments
    sent = 0
    while sent < len(segments):
        window = segments[sent:sent + 4]
        for j, seg in enumerate(window):
            last_of_window = j == len(window) - 1
            last = sent + j == len(segments) - 1
            exchange = p.send(p.i_frame(seg, pf=last_of_window, segmented=not last))
            if last:
                assert exchange.apdus == [apdu]
            elif last_of_window:
                assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == p.ns
            else:
                assert exchange.frames == [] and exchange.events == []
        sent += len(window)


def test_lost_segment_in_a_window_is_recovered_by_rr():
    p = connected(window=3, max_info=32)
    apdu = bytes(range(80))
    data = LLC_COMMAND + apdu
    segments = [data[i:i + 32] for i in range(0, len(data), 32)]  # 3 segments
    f0 = p.i_frame(segments[0], pf=False, segmented=True)
    p.i_frame(segments[1], pf=False, segmented=True)  # lost on the line
    f2 = p.i_frame(segments[2], pf=True)
    assert p.send(f0).frames == []
    exchange = p.send(f2)  # N(S)=2 while 1 is expected
    assert exchange.apdus == []
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == 1
    p.ns = 1  # go back
    assert p.send(p.i_frame(segments[1], pf=False, segmented=True)).frames == []
    assert p.send(p.i_frame(segments[2])).apdus == [apdu]


# ------------------------------------------------------------------ client link vs server link


def _pump(client: HdlcClientLink, server: HdlcServerLink, now: float, answer,
          chunk: int | None = None) -> list:
    """Carry bytes both ways until both sides are silent; `answer` maps request -> response."""
    client_events = []
    for _ in range(10_000):
        out = client.take_output()
        moved = bool(out)
        pieces = [out] if chunk is None else [out[i:i + chunk] for i in range(0, len(out), chunk)]
        for piece in pieces:
            for event in server.receive(piece, now):
                if isinstance(event, ApduReceived):
                    server.send_apdu(answer(event.apdu))
        back = server.take_output()
        moved |= bool(back)
        pieces = [back] if chunk is None else [back[i:i + chunk] for i in range(0, len(back), chunk)]
        for piece in pieces:
            client_events += client.receive(piece, now)
        if not moved:
            return client_events
    raise AssertionError("the links did not settle")


def _pair(client_params: HdlcParameters, server_params: HdlcParameters):
    server = HdlcServerLink(0x11, {1}, server_params, max_apdu_length=1 << 16)
    client = HdlcClientLink(0x10, 1, 0x11, client_params)
    events = server.receive(client.connect(), 0.0)
    assert isinstance(events[0], Connected)
    (connected_event,) = client.receive(server.take_output(), 0.0)
    assert isinstance(connected_event, Connected)
    return client, server, connected_event.parameters


def test_client_link_negotiation_matches_server():
    client, server, params = _pair(
        HdlcParameters(max_info_tx=256, max_info_rx=512, window_tx=3, window_rx=7),
        HdlcParameters(max_info_tx=1024, max_info_rx=200, window_tx=7, window_rx=2))
    assert (params.max_info_tx, params.max_info_rx, params.window_tx, params.window_rx) == (200, 512, 2, 7)
    s = server.negotiated
    assert (s.max_info_tx, s.max_info_rx, s.window_tx, s.window_rx) == (512, 200, 7, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(32, 300), st.integers(32, 300), st.integers(1, 7), st.integers(1, 7),
    st.binary(min_size=1, max_size=3000), st.binary(max_size=3000),
    st.one_of(st.none(), st.integers(1, 40)),
)
def test_client_and_server_links_carry_any_apdu(info_c, info_s, win_c, win_s, request, response,
                                                chunk):
    client, server, _ = _pair(
        HdlcParameters(max_info_tx=info_c, max_info_rx=info_c, window_tx=win_c, window_rx=win_c),
        HdlcParameters(max_info_tx=info_s, max_info_rx=info_s, window_tx=win_s, window_rx=win_s))
    received = []

    def answer(apdu):
        received.append(apdu)
        return response

    for round_ in range(2):
        client.send_apdu(request)
        events = _pump(client, server, float(round_), answer, chunk)
        assert [e.apdu for e in events if isinstance(e, ApduReceived)] == [response]
    assert received == [request, request]
    server.receive(client.disconnect(), 3.0)
    assert client.receive(server.take_output(), 3.0) == [Disconnected("disconnected")]


def test_client_link_recovers_from_lost_frames_by_polling_again():
    rng = random.Random(7)
    server = HdlcServerLink(0x11, {1}, HdlcParameters(window_tx=2, window_rx=2, max_info_tx=40,
                                                      max_info_rx=40))
    client = HdlcClientLink(0x10, 1, 0x11, HdlcParameters(window_tx=2, window_rx=2, max_info_tx=40,
                                                          max_info_rx=40),
                            response_timeout=1.0, max_retries=50)
    now = 0.0
    server.receive(client.connect(now), now)
    client.receive(server.take_output(), now)
    assert client.connected
    request, response = bytes(range(150)), bytes(range(255, 0, -1)) * 2
    client.send_apdu(request, now)
    delivered, got = [], []
    for _ in range(2000):
        now += 0.3
        out = client.take_output()
        # Drop whole frames now and then, in both directions.
        for raw in parse_all(out):
            if rng.random() > 0.2:
                for event in server.receive(raw.to_bytes(), now):
                    if isinstance(event, ApduReceived):
                        delivered.append(event.apdu)
                        server.send_apdu(response)
        for raw in parse_all(server.take_output()):
            if rng.random() > 0.2:
                got += [e.apdu for e in client.receive(raw.to_bytes(), now)
                        if isinstance(e, ApduReceived)]
        if got:
            break
        assert all(not isinstance(e, Disconnected) for e in client.tick(now))
    assert delivered == [request]
    assert got == [response]


def test_client_gives_up_after_retries():
    client = HdlcClientLink(0x10, 1, 0x11, response_timeout=1.0, max_retries=2)
    client.connect(0.0)
    assert client.tick(1.5) == [] and client.take_output()  # SNRM repeated
    assert client.tick(3.0) == [] and client.take_output()
    assert client.tick(4.5) == [Disconnected("no response from the server")]


def test_client_reports_dm_refusal():
    client = HdlcClientLink(0x10, 1, 0x11)
    client.connect()
    dm = HdlcFrame(FrameKind.DM, client._client, client._server, True).to_bytes()
    assert client.receive(dm, 0.0) == [Disconnected("connection refused (DM)")]


# ------------------------------------------------------------------ gurux-dlms as the peer


def _gurux(max_info: int = 128, window: int = 1, physical: int = 0x11):
    from gurux_dlms import GXDLMSClient
    from gurux_dlms.enums import Authentication, InterfaceType

    address = GXDLMSClient.getServerAddress(1, physical)
    client = GXDLMSClient(True, 16, address, Authentication.NONE, None, InterfaceType.HDLC)
    client.hdlcSettings.maxInfoTX = max_info
    client.hdlcSettings.maxInfoRX = max_info
    client.hdlcSettings.windowSizeTX = window
    client.hdlcSettings.windowSizeRX = window
    return client


@pytest.mark.parametrize("max_info", [128, 32])
def test_gurux_client_against_our_server_with_segmented_response(max_info):
    from gurux_dlms import GXByteBuffer, GXReplyData

    gx = _gurux(max_info)
    server = HdlcServerLink(0x11, {1})
    events = server.receive(bytes(gx.snrmRequest()), 0.0)
    assert isinstance(events[0], Connected)
    reply = GXReplyData()
    gx.getData(GXByteBuffer(server.take_output()), reply)
    gx.parseUAResponse(reply.data)
    assert server.negotiated.max_info_tx == max_info

    # Gurux segments its AARQ when max_info is small; every segment but the last is RR'd.
    frames = [bytes(f) for f in gx.aarqRequest()]
    apdus = []
    for raw in frames:
        for event in server.receive(raw, 0.1):
            apdus.append(event.apdu)
        out = server.take_output()
        if raw is not frames[-1]:
            assert HdlcFrame.from_bytes(out).kind is FrameKind.RR
            gx.getData(GXByteBuffer(out), GXReplyData())
    assert len(apdus) == 1 and apdus[0][0] == 0x60  # AARQ

    aare = bytes.fromhex("6129A109060760857405080101A203020100A305A103020100"
                         "BE10040E0800065F1F040000181D04000007")
    server.send_apdu(aare + bytes(0))
    reply = GXReplyData()
    out = server.take_output()
    while True:
        gx.getData(GXByteBuffer(out), reply)
        if not reply.isMoreData():
            break
        out_rr = bytes(gx.receiverReady(reply))
        assert HdlcFrame.from_bytes(out_rr).kind is FrameKind.RR
        server.receive(out_rr, 0.2)
        out = server.take_output()
    assert bytes(reply.data.array()[:reply.data.size]) == aare
    gx.parseAareResponse(reply.data)

    disc = bytes(gx.disconnectRequest())
    events = server.receive(disc, 0.3)
    assert events == [Disconnected("DISC received")]
    assert HdlcFrame.from_bytes(server.take_output()).kind is FrameKind.UA


def test_final_segment_without_poll_is_delivered_and_answer_waits_for_poll():
    p = connected()
    exchange = p.send(p.i_frame(LLC_COMMAND + GET_REQUEST, pf=False))
    assert exchange.apdus == [GET_REQUEST] and exchange.frames == []
    assert p.respond(GET_RESPONSE).frames == []  # not polled: nothing may be sent
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))
    assert p.take_i_frames(exchange.frames) == LLC_RESPONSE + GET_RESPONSE


# ------------------------------------------------------------------ client link reactions


def _connected_client(**kw) -> HdlcClientLink:
    client = HdlcClientLink(0x10, 1, 0x11, **kw)
    client.connect(0.0)
    ua = HdlcFrame(FrameKind.UA, client._client, client._server, True).to_bytes()
    assert isinstance(client.receive(ua, 0.0)[0], Connected)
    return client


def _from_server(client: HdlcClientLink, kind: FrameKind, **kw) -> bytes:
    return HdlcFrame(kind, client._client, client._server, **kw).to_bytes()


@pytest.mark.parametrize("kind, info", [(FrameKind.DM, b""), (FrameKind.FRMR, b"\x10\x00\x04")])
def test_client_link_reports_dm_and_frmr_while_connected(kind, info):
    client = _connected_client()
    (event,) = client.receive(_from_server(client, kind, poll_final=True, information=info), 1.0)
    assert isinstance(event, Disconnected) and kind.value in event.reason
    assert not client.connected


def test_client_link_asks_for_retransmission_on_wrong_ns():
    client = _connected_client()
    client.send_apdu(GET_REQUEST)
    client.take_output()
    wrong = _from_server(client, FrameKind.I, poll_final=True, send_seq=3, recv_seq=1,
                         information=LLC_RESPONSE + GET_RESPONSE)
    assert client.receive(wrong, 1.0) == []
    rr = HdlcFrame.from_bytes(client.take_output())
    assert rr.kind is FrameKind.RR and rr.poll_final and rr.recv_seq == 0
    right = _from_server(client, FrameKind.I, poll_final=True, send_seq=0, recv_seq=1,
                         information=LLC_RESPONSE + GET_RESPONSE)
    assert client.receive(right, 1.1) == [ApduReceived(GET_RESPONSE)]


def test_client_link_refuses_responses_above_its_limit():
    client = _connected_client(max_apdu_length=100)
    client.send_apdu(GET_REQUEST)
    client.take_output()
    seg = _from_server(client, FrameKind.I, poll_final=True, send_seq=0, recv_seq=1,
                       information=LLC_RESPONSE + bytes(120), segmented=True)
    (event,) = client.receive(seg, 1.0)
    assert isinstance(event, Disconnected) and "max_apdu_length" in event.reason


def test_client_link_waits_while_server_busy_and_polls_again():
    client = _connected_client(params=HdlcParameters(max_info_tx=32), response_timeout=1.0)
    client.send_apdu(bytes(100))  # 4 segments of 32
    first = HdlcFrame.from_bytes(client.take_output())
    assert first.segmented and first.poll_final
    rnr = _from_server(client, FrameKind.RNR, poll_final=True, recv_seq=1)
    assert client.receive(rnr, 1.0) == []
    assert client.take_output() == b""  # busy: no I-frame
    client.tick(2.5)
    poll = HdlcFrame.from_bytes(client.take_output())
    assert poll.kind is FrameKind.RR and poll.poll_final
    rr = _from_server(client, FrameKind.RR, poll_final=True, recv_seq=1)
    client.receive(rr, 2.6)
    second = HdlcFrame.from_bytes(client.take_output())
    assert second.kind is FrameKind.I and second.send_seq == 1


# ------------------------------------------------------------------ dlms-cosem as the peer


def test_dlms_cosem_hdlc_connection_against_our_server():
    """dlms-cosem's client state machine checks our N(S)/N(R) on every response."""
    from dlms_cosem.hdlc import frames as dc
    from dlms_cosem.hdlc.address import HdlcAddress as DcAddress
    from dlms_cosem.hdlc.connection import HdlcConnection

    client_address = DcAddress(16, None, "client")
    server_address = DcAddress(1, 0x11, "server")
    conn = HdlcConnection(client_address, server_address)
    server = HdlcServerLink(0x11, {1})

    def round_trip(out: bytes, now: float):
        events = server.receive(out, now)
        for event in events:
            if isinstance(event, ApduReceived):
                server.send_apdu(event.apdu[::-1])
        conn.receive_data(server.take_output())
        return events, conn.next_event()

    events, ua = round_trip(conn.send(dc.SetNormalResponseModeFrame(server_address, client_address)), 0.0)
    assert isinstance(events[0], Connected) and isinstance(ua, dc.UnNumberedAcknowledgmentFrame)

    for n in range(10):  # wraps the modulo-8 sequence numbers
        apdu = bytes([0xC0, 0x01, n]) + bytes(20)
        request = dc.InformationFrame(server_address, client_address, LLC_COMMAND + apdu,
                                      send_sequence_number=conn.server_ssn,
                                      receive_sequence_number=conn.server_rsn)
        events, response = round_trip(conn.send(request), 1.0 + n)
        assert [e.apdu for e in events] == [apdu]
        assert isinstance(response, dc.InformationFrame)  # sequence numbers were accepted
        assert response.payload == LLC_RESPONSE + apdu[::-1]

    events, ua = round_trip(conn.send(dc.DisconnectFrame(server_address, client_address)), 20.0)
    assert events == [Disconnected("DISC received")]
    assert isinstance(ua, dc.UnNumberedAcknowledgmentFrame)


def test_rnr_without_acknowledgement_then_rr_acknowledging_the_whole_burst():
    p = connected(window=2, max_info=64)
    p.request()
    burst = p.respond(bytes(300)).frames
    assert [f.send_seq for f in burst] == [0, 1]
    exchange = p.send(frame(FrameKind.RNR, nr=p.nr))  # busy, acknowledges nothing yet
    assert exchange.only.kind is FrameKind.RR
    data = p.take_i_frames(burst)
    exchange = p.send(frame(FrameKind.RR, nr=p.nr))  # now acknowledges both
    assert [f.send_seq for f in exchange.frames] == [2, 3]
    data += p.take_i_frames(exchange.frames)
    while exchange.frames[-1].segmented:
        exchange = p.send(frame(FrameKind.RR, nr=p.nr))
        data += p.take_i_frames(exchange.frames)
    assert data == LLC_RESPONSE + bytes(300)
