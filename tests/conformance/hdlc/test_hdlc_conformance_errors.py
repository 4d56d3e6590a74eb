"""Error handling of the HDLC server link (IEC 62056-46; CTT HDLC_2 style): each faulty
input gets the standard reaction, and the link is usable afterwards."""
from __future__ import annotations

import pytest

from hdlc_harness import GET_REQUEST, Primary, frame
from smartmeter.transport.hdlc import HdlcParameters
from smartmeter.transport.hdlc_frame import (
    FRMR_W_INVALID_CONTROL,
    FRMR_X_INFORMATION_NOT_PERMITTED,
    FRMR_Y_INFORMATION_TOO_LONG,
    FRMR_Z_INVALID_NR,
    FrameKind,
    FrmrInformation,
    LLC_COMMAND,
    checksum_bytes,
)


def connected(**kw) -> Primary:
    p = Primary(**kw)
    p.connect()
    return p


def _corrupt(raw: bytes, index: int) -> bytes:
    data = bytearray(raw)
    data[index] ^= 0x40
    return bytes(data)


# ------------------------------------------------------------------ checksums


def test_wrong_fcs_discarded_silently():
    p = connected()
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    exchange = p.send(_corrupt(raw, len(raw) - 2))
    assert exchange.frames == [] and exchange.events == []
    p.ns = 0  # the frame never counted
    p.round_trip()


def test_wrong_fcs_on_snrm_discarded_silently():
    p = Primary()
    exchange = p.send(_corrupt(frame(FrameKind.SNRM), -3))
    assert exchange.frames == [] and exchange.events == []
    assert not p.link.connected
    p.connect()
    p.round_trip()


def test_wrong_hcs_discarded_silently_even_if_fcs_recomputed():
    p = connected()
    raw = bytearray(p.i_frame(LLC_COMMAND + GET_REQUEST))
    raw[6] ^= 0x01                                   # HCS byte (2-byte server address)
    raw[-3:-1] = checksum_bytes(bytes(raw[1:-3]))    # FCS is right
    exchange = p.send(bytes(raw))
    assert exchange.frames == [] and exchange.events == []
    p.ns = 0
    p.round_trip()


@pytest.mark.parametrize("index", range(1, 10))
def test_any_corrupted_header_byte_is_never_answered_wrongly(index):
    p = connected()
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    exchange = p.send(_corrupt(raw, index))
    assert exchange.events == []
    p.link.tick(p.now + 1.0)  # a length corruption leaves a partial frame: let it expire
    p.now += 1.0
    p.link.receive(b"", p.now)
    p.ns = 0
    p.round_trip()


# ------------------------------------------------------------------ too long


def test_information_field_longer_than_negotiated_gets_frmr_y():
    p = connected()  # max_info_rx = 128
    raw = p.i_frame(LLC_COMMAND + bytes(126))  # 129 bytes of information
    exchange = p.send(raw)
    frmr = exchange.only
    assert frmr.kind is FrameKind.FRMR and frmr.poll_final
    info = FrmrInformation.from_bytes(frmr.information)
    assert info.reasons == FRMR_Y_INFORMATION_TOO_LONG
    assert info.rejected_control == raw[6]  # control byte of the rejected frame
    assert (info.send_state, info.receive_state) == (0, 0)
    assert exchange.events == []
    p.ns = 0  # rejected: V(R) unchanged
    p.round_trip()


def test_information_exactly_max_info_rx_is_accepted():
    p = connected()
    apdu = bytes([0xC0]) + bytes(124)  # 3 + 125 = 128
    exchange = p.send(p.i_frame(LLC_COMMAND + apdu))
    assert exchange.apdus == [apdu]


def test_negotiated_larger_max_info_rx_is_honoured():
    p = Primary(HdlcParameters(max_info_rx=512))
    from smartmeter.transport.hdlc_frame import HdlcParameterField
    p.connect(HdlcParameterField(max_info_tx=300).to_bytes())
    apdu = bytes([0xC0]) + bytes(296)
    assert p.send(p.i_frame(LLC_COMMAND + apdu)).apdus == [apdu]
    raw = p.i_frame(LLC_COMMAND + apdu + b"\x00")  # 301 > 300
    assert p.send(raw).only.kind is FrameKind.FRMR
    p.ns -= 1
    p.link.send_apdu(b"\xC4")  # answer the earlier request so the link is idle again
    assert p.take_i_frames(parse_all_output(p)) == b"\xE6\xE7\x00\xC4"


def parse_all_output(p: Primary):
    from hdlc_harness import parse_all
    return parse_all(p.link.take_output())


def test_frame_at_maximum_length_field_is_not_buffered_beyond_one_frame():
    p = connected()
    huge = frame(FrameKind.I, info=bytes(2030))
    exchange = p.send(huge)
    assert exchange.only.kind is FrameKind.FRMR
    assert p.link.buffered_bytes <= 2049
    p.round_trip()


def test_reassembled_apdu_above_limit_is_refused_with_frmr():
    p = connected(max_apdu_length=300)
    for _ in range(2):
        exchange = p.send(p.i_frame(LLC_COMMAND + bytes(125) if _ == 0 else bytes(128),
                                    segmented=True))
        assert exchange.only.kind is FrameKind.RR
    exchange = p.send(p.i_frame(bytes(128), segmented=True))  # 128+128+128 > 303
    assert exchange.only.kind is FrameKind.FRMR
    assert FrmrInformation.from_bytes(exchange.only.information).reasons == FRMR_Y_INFORMATION_TOO_LONG
    assert p.link.buffered_bytes == 0
    p.ns = (p.ns - 1) % 8
    p.round_trip()


# ------------------------------------------------------------------ sequence numbers


@pytest.mark.parametrize("wrong_ns", [1, 2, 7])
def test_wrong_ns_discarded_and_answered_with_rr_expected_nr(wrong_ns):
    p = connected()
    p.round_trip()  # V(R) = 1 now
    raw = frame(FrameKind.I, ns=(p.ns + wrong_ns) % 8, nr=p.nr, info=LLC_COMMAND + GET_REQUEST)
    exchange = p.send(raw)
    assert exchange.events == []
    rr = exchange.only
    assert rr.kind is FrameKind.RR and rr.poll_final and rr.recv_seq == p.ns
    p.round_trip()


def test_repeated_i_frame_is_not_delivered_twice():
    p = connected()
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    assert p.send(raw).apdus == [GET_REQUEST]
    exchange = p.send(raw)  # the client did not see our answer and repeats
    assert exchange.apdus == []
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == 1


def test_lost_response_is_retransmitted_on_rr_poll():
    p = connected()
    p.request()
    lost = p.respond(b"\xC4\x01\xC1\x00\x11\x05").only
    # The client never saw it: it polls with N(R) still 0.
    exchange = p.send(frame(FrameKind.RR, nr=0))
    assert exchange.only == lost
    p.take_i_frames(exchange.frames)
    p.round_trip()


def test_invalid_nr_gets_frmr_z():
    p = connected()
    exchange = p.send(frame(FrameKind.I, ns=0, nr=3, info=LLC_COMMAND + GET_REQUEST))
    assert exchange.events == []
    info = FrmrInformation.from_bytes(exchange.only.information)
    assert exchange.only.kind is FrameKind.FRMR and info.reasons == FRMR_Z_INVALID_NR
    exchange = p.send(frame(FrameKind.RR, nr=5))
    assert FrmrInformation.from_bytes(exchange.only.information).reasons == FRMR_Z_INVALID_NR
    p.round_trip()


# ------------------------------------------------------------------ control field


@pytest.mark.parametrize("control", [0x19, 0x1D, 0xF3])  # REJ, SREJ, unassigned U
def test_unknown_command_gets_frmr_w(control):
    p = connected()
    body = bytes([0xA0, 0x08, 0x02, 0x23, 0x21, control])
    exchange = p.send(b"\x7E" + body + checksum_bytes(body) + b"\x7E")
    frmr = exchange.only
    assert frmr.kind is FrameKind.FRMR
    info = FrmrInformation.from_bytes(frmr.information)
    assert info.reasons == FRMR_W_INVALID_CONTROL and info.rejected_control == control
    p.round_trip()


def test_unknown_command_when_disconnected_gets_dm():
    p = Primary()
    body = bytes([0xA0, 0x08, 0x02, 0x23, 0x21, 0x19])
    exchange = p.send(b"\x7E" + body + checksum_bytes(body) + b"\x7E")
    assert exchange.only.kind is FrameKind.DM


def test_information_on_rr_gets_frmr_wx():
    p = connected()
    # RR cannot be built with information by our encoder, so assemble it by hand.
    header = bytes([0xA0, 0x0D, 0x02, 0x23, 0x21, 0x11])
    body = header + checksum_bytes(header) + b"\x01\x02\x03"
    body = bytes([0xA0, len(body) + 2]) + body[2:]
    body = body[:6] + checksum_bytes(body[:6]) + body[8:]
    exchange = p.send(b"\x7E" + body + checksum_bytes(body) + b"\x7E")
    info = FrmrInformation.from_bytes(exchange.only.information)
    assert info.reasons == FRMR_W_INVALID_CONTROL | FRMR_X_INFORMATION_NOT_PERMITTED
    p.round_trip()


def test_frmr_without_poll_is_sent_at_the_next_poll():
    p = connected()
    exchange = p.send(frame(FrameKind.I, pf=False, ns=0, info=LLC_COMMAND + bytes(200)))
    assert exchange.frames == []
    exchange = p.send(frame(FrameKind.RR, nr=0))
    assert exchange.only.kind is FrameKind.FRMR
    p.round_trip()


# ------------------------------------------------------------------ byte stream


def test_exchange_fed_one_byte_at_a_time():
    p = Primary()
    for byte in frame(FrameKind.SNRM):
        exchange = p.send(bytes([byte]))
    assert exchange.only.kind is FrameKind.UA
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    events = []
    for byte in raw:
        events += p.send(bytes([byte])).events
    assert [e.apdu for e in events] == [GET_REQUEST]
    p.respond(b"\xC4")
    p.nr = 1
    p.round_trip()


def test_every_split_point_of_a_request():
    length = len(frame(FrameKind.I, info=LLC_COMMAND + GET_REQUEST + bytes(10)))
    for cut in range(1, length):
        p = connected()
        raw = p.i_frame(LLC_COMMAND + GET_REQUEST + bytes(10))
        assert p.send(raw[:cut]).events == []
        assert p.send(raw[cut:]).apdus == [GET_REQUEST + bytes(10)]


def test_garbage_between_frames_is_skipped():
    p = Primary()
    exchange = p.send(b"\x00\xFF\x7E\x7E" + frame(FrameKind.SNRM) + b"noise")
    assert exchange.only.kind is FrameKind.UA
    p.ns = p.nr = 0
    p.round_trip()


def test_inter_octet_timeout_discards_partial_frame():
    p = connected(params=HdlcParameters(inter_octet_timeout=0.025))
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    assert p.send(raw[:8], dt=0.001).events == []
    assert p.link.buffered_bytes == 8
    p.link.tick(p.now + 0.05)
    assert p.link.buffered_bytes == 0
    # The tail arrives late: it is noise now, not the end of the frame.
    exchange = p.send(raw[8:], dt=0.05)
    assert exchange.events == [] and exchange.frames == []
    p.ns = 0
    p.round_trip()


def test_inter_octet_timeout_applied_on_receive_without_tick():
    p = connected()
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    p.send(raw[:8], dt=0.001)
    full = p.send(raw, dt=0.5)  # after a pause, the whole frame is sent again
    assert full.apdus == [GET_REQUEST]


def test_gaps_shorter_than_inter_octet_timeout_keep_the_frame():
    p = connected()
    raw = p.i_frame(LLC_COMMAND + GET_REQUEST)
    events = []
    for byte in raw:
        events += p.send(bytes([byte]), dt=0.02).events
    assert [e.apdu for e in events] == [GET_REQUEST]


# ------------------------------------------------------------------ further cases


def test_i_frame_without_llc_header_is_not_delivered():
    p = connected()
    exchange = p.send(p.i_frame(b"\xE6\xE7\x00" + GET_REQUEST))  # response LLC from a client
    assert exchange.apdus == []
    # The frame itself was fine (it is acknowledged), only its content is refused.
    assert exchange.only.kind is FrameKind.RR and exchange.only.recv_seq == 1
    p.round_trip()


@pytest.mark.parametrize("kind", [FrameKind.UA, FrameKind.DM])
def test_response_frames_from_the_client_get_frmr_w(kind):
    p = connected()
    exchange = p.send(frame(kind))
    info = FrmrInformation.from_bytes(exchange.only.information)
    assert exchange.only.kind is FrameKind.FRMR and info.reasons == FRMR_W_INVALID_CONTROL
    p.round_trip()


def test_unknown_command_with_information_gets_frmr_wx():
    p = connected()
    header = bytes([0xA0, 0x0D, 0x02, 0x23, 0x21, 0x19])  # REJ with information
    body = header + checksum_bytes(header) + b"\x01\x02\x03"
    exchange = p.send(b"\x7E" + body + checksum_bytes(body) + b"\x7E")
    info = FrmrInformation.from_bytes(exchange.only.information)
    assert info.reasons == FRMR_W_INVALID_CONTROL | FRMR_X_INFORMATION_NOT_PERMITTED
    assert info.rejected_control == 0x19
    p.round_trip()


def test_pending_frmr_reported_at_a_poll_with_wrong_ns():
    p = connected()
    p.send(frame(FrameKind.I, pf=False, ns=0, info=LLC_COMMAND + bytes(200)))
    exchange = p.send(frame(FrameKind.I, ns=5, info=LLC_COMMAND + GET_REQUEST))
    assert exchange.only.kind is FrameKind.FRMR and exchange.events == []
    p.round_trip()


def test_frmr_reports_the_link_state_variables():
    p = connected()
    p.round_trip()
    p.round_trip()  # V(S) = V(R) = 2
    exchange = p.send(frame(FrameKind.I, ns=p.ns, nr=p.nr, info=LLC_COMMAND + bytes(200)))
    info = FrmrInformation.from_bytes(exchange.only.information)
    assert (info.send_state, info.receive_state) == (2, 2)
