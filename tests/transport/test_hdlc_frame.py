"""HDLC frame codec (IEC 62056-46): CRC, known frames, addresses, parameter field,
stream splitting, and cross-checks with gurux-dlms and dlms-cosem as independent peers."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.transport.hdlc_frame import (
    FrameKind,
    FrmrInformation,
    HdlcAddress,
    HdlcAddressError,
    HdlcChecksumError,
    HdlcControlError,
    HdlcError,
    HdlcFrame,
    HdlcFrameSplitter,
    HdlcParameterField,
    KINDS_WITH_INFORMATION,
    checksum_bytes,
    crc16_x25,
)

SNRM_16_TO_1 = bytes.fromhex("7EA0070321930F017E")
CLIENT_16 = HdlcAddress.client(0x10)
SERVER_1 = HdlcAddress.server(1)


# ------------------------------------------------------------------ CRC


def test_crc16_x25_catalogue_check_value():
    # CRC-16/X.25 (= CRC-16/IBM-SDLC) check value from the CRC catalogue.
    assert crc16_x25(b"123456789") == 0x906E


def test_crc16_x25_empty_and_residue():
    assert crc16_x25(b"") == 0x0000
    # Appending the FCS (LSB first) gives the X.25 "good FCS" residue 0xF0B8 before the
    # final XOR, i.e. 0x0F47 after it.
    data = b"\x01\x02\x03 some frame"
    assert crc16_x25(data + checksum_bytes(data)) == 0x0F47


def test_known_snrm_frame_decodes():
    frame = HdlcFrame.from_bytes(SNRM_16_TO_1)
    assert frame.kind is FrameKind.SNRM
    assert frame.poll_final
    assert frame.destination == SERVER_1
    assert frame.source == CLIENT_16
    assert frame.information == b""
    assert not frame.segmented


def test_known_snrm_frame_encodes():
    assert HdlcFrame(FrameKind.SNRM, SERVER_1, CLIENT_16, True).to_bytes() == SNRM_16_TO_1


# ------------------------------------------------------------------ control field


@pytest.mark.parametrize("kind, pf, ns, nr, byte", [
    (FrameKind.SNRM, True, 0, 0, 0x93),
    (FrameKind.SNRM, False, 0, 0, 0x83),
    (FrameKind.DISC, True, 0, 0, 0x53),
    (FrameKind.UA, True, 0, 0, 0x73),
    (FrameKind.DM, True, 0, 0, 0x1F),
    (FrameKind.FRMR, True, 0, 0, 0x97),
    (FrameKind.UI, True, 0, 0, 0x13),
    (FrameKind.UI, False, 0, 0, 0x03),
    (FrameKind.RR, True, 0, 1, 0x31),
    (FrameKind.RR, True, 0, 7, 0xF1),
    (FrameKind.RNR, True, 0, 2, 0x55),
    (FrameKind.I, True, 0, 0, 0x10),
    (FrameKind.I, True, 1, 1, 0x32),
    (FrameKind.I, False, 7, 5, 0xAE),
])
def test_control_bytes(kind, pf, ns, nr, byte):
    frame = HdlcFrame(kind, SERVER_1, CLIENT_16, pf, ns, nr)
    assert frame.control == byte
    decoded = HdlcFrame.from_bytes(frame.to_bytes())
    assert (decoded.kind, decoded.poll_final, decoded.send_seq, decoded.recv_seq) == (kind, pf, ns, nr)


@pytest.mark.parametrize("control", [0x09, 0x0D, 0x19, 0xE3, 0x23, 0xAF])
def test_unknown_control_is_a_decode_error_that_keeps_addresses(control):
    # REJ (0x09), SREJ (0x0D) and unassigned U-frames are not part of IEC 62056-46.
    body = bytes([0xA0, 0x07, 0x03, 0x21, control])
    raw = b"\x7E" + body + checksum_bytes(body) + b"\x7E"
    with pytest.raises(HdlcControlError) as info:
        HdlcFrame.from_bytes(raw)
    assert isinstance(info.value, DecodeError)
    assert info.value.destination == SERVER_1 and info.value.source == CLIENT_16
    assert info.value.control == control


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize("address, encoded", [
    (HdlcAddress.client(0x10), "21"),
    (HdlcAddress.client(0x01), "03"),
    (HdlcAddress.server(1), "03"),
    (HdlcAddress.server(0x7F), "FF"),
    (HdlcAddress.server(1, 17), "0223"),
    (HdlcAddress.server(1, 0x7F), "02FF"),
    (HdlcAddress.server(1, 0x1234), "00024869"),
    (HdlcAddress.server(0x3FFF, 0x3FFF, 4), "FEFEFEFF"),
    (HdlcAddress.server(1, 17, 4), "00020023"),
])
def test_address_forms(address, encoded):
    assert address.to_bytes().hex().upper() == encoded
    assert HdlcAddress.from_bytes(bytes.fromhex(encoded)) == address


def test_address_length_chosen_automatically():
    assert HdlcAddress.server(1).length == 1
    assert HdlcAddress.server(1, 0x10).length == 2
    assert HdlcAddress.server(0x80, 1).length == 4


@pytest.mark.parametrize("upper, lower, length", [
    (0x80, None, 1), (1, 0x80, 2), (0x4000, 1, 4), (1, None, 3), (1, None, 2), (-1, None, 1),
])
def test_address_out_of_range_is_an_encode_error(upper, lower, length):
    with pytest.raises(EncodeError):
        HdlcAddress(upper, lower, length)


@pytest.mark.parametrize("raw, error", [
    ("000203", HdlcAddressError),     # three bytes
    ("0002040609", HdlcAddressError),  # five bytes
    ("0002", TruncatedError),         # no end bit
    ("", TruncatedError),
])
def test_bad_address_fields(raw, error):
    with pytest.raises(error):
        HdlcAddress.from_bytes(bytes.fromhex(raw))


@given(st.integers(0, 0x7F), st.one_of(st.none(), st.integers(0, 0x7F)))
def test_address_round_trip_short(upper, lower):
    address = HdlcAddress(upper, lower)
    assert HdlcAddress.from_bytes(address.to_bytes()) == address


@given(st.integers(0, 0x3FFF), st.integers(0, 0x3FFF))
def test_address_round_trip_four_bytes(upper, lower):
    address = HdlcAddress(upper, lower, 4)
    raw = address.to_bytes()
    assert len(raw) == 4 and [b & 1 for b in raw] == [0, 0, 0, 1]
    assert HdlcAddress.from_bytes(raw) == address


# ------------------------------------------------------------------ frames: errors


def _frame(info=b"\xE6\xE6\x00\x01\x02", **kw):
    return HdlcFrame(FrameKind.I, SERVER_1, CLIENT_16, True, information=info, **kw).to_bytes()


def test_frame_with_information_has_hcs_and_fcs():
    raw = _frame()
    # 7E, format 2, dst 1, src 1, ctrl 1, HCS 2, info 5, FCS 2, 7E
    assert len(raw) == 1 + 2 + 1 + 1 + 1 + 2 + 5 + 2 + 1
    assert raw[1] == 0xA0 and raw[2] == len(raw) - 2
    assert raw[6:8] == checksum_bytes(raw[1:6])
    assert raw[-3:-1] == checksum_bytes(raw[1:-3])


def test_segmentation_bit_and_long_length():
    raw = HdlcFrame(FrameKind.I, SERVER_1, CLIENT_16, False, information=bytes(300),
                    segmented=True).to_bytes()
    assert raw[1] & 0xF8 == 0xA8 and (((raw[1] & 7) << 8) | raw[2]) == len(raw) - 2
    frame = HdlcFrame.from_bytes(raw)
    assert frame.segmented and frame.information == bytes(300)


def test_bad_fcs_rejected():
    raw = bytearray(_frame())
    raw[-2] ^= 0x01
    with pytest.raises(HdlcChecksumError):
        HdlcFrame.from_bytes(bytes(raw))


def test_bad_hcs_rejected_even_with_matching_fcs():
    raw = bytearray(_frame())
    raw[6] ^= 0xFF
    raw[-3:-1] = checksum_bytes(bytes(raw[1:-3]))
    with pytest.raises(HdlcChecksumError, match="HCS"):
        HdlcFrame.from_bytes(bytes(raw))


@pytest.mark.parametrize("mutate", [
    lambda r: r[:-1],                      # closing flag missing
    lambda r: r[1:],                       # opening flag missing
    lambda r: r + b"\x00",                 # trailing byte
    lambda r: b"\x7E\xB0" + r[2:],         # format type not 3
    lambda r: r[:5],                       # truncated
    lambda r: b"",
    lambda r: b"\x7E\x7E",
])
def test_malformed_frames_raise_hdlc_errors(mutate):
    with pytest.raises(HdlcError):
        HdlcFrame.from_bytes(mutate(_frame()))


def test_frame_too_long_for_length_field_is_encode_error():
    with pytest.raises(EncodeError):
        HdlcFrame(FrameKind.I, SERVER_1, CLIENT_16, information=bytes(2040)).to_bytes()


def test_information_on_rr_cannot_be_encoded():
    with pytest.raises(EncodeError):
        HdlcFrame(FrameKind.RR, SERVER_1, CLIENT_16, information=b"x").to_bytes()


# ------------------------------------------------------------------ frames: round trips

addresses = st.one_of(
    st.builds(HdlcAddress.client, st.integers(0, 0x7F)),
    st.builds(lambda u, l: HdlcAddress(u, l, 2), st.integers(0, 0x7F), st.integers(0, 0x7F)),
    st.builds(lambda u, l: HdlcAddress(u, l, 4), st.integers(0, 0x3FFF), st.integers(0, 0x3FFF)),
)


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(list(FrameKind)))
    numbered = kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR)
    info = draw(st.binary(max_size=300)) if kind in KINDS_WITH_INFORMATION else b""
    return HdlcFrame(
        kind, draw(addresses), draw(addresses), draw(st.booleans()),
        draw(st.integers(0, 7)) if kind is FrameKind.I else 0,
        draw(st.integers(0, 7)) if numbered else 0,
        info, draw(st.booleans()),
    )


@settings(max_examples=400)
@given(frames())
def test_frame_round_trip(frame):
    raw = frame.to_bytes()
    assert HdlcFrame.from_bytes(raw) == frame
    # A frame is one candidate of the splitter, however it is cut.
    splitter = HdlcFrameSplitter()
    got = []
    for i in range(0, len(raw), 7):
        got += splitter.feed(raw[i:i + 7])
    assert got == [raw]


@settings(max_examples=200)
@given(st.lists(frames(), min_size=1, max_size=5), st.data())
def test_splitter_any_cut_points_and_shared_flags(frame_list, data):
    shared = data.draw(st.booleans())
    encoded = [f.to_bytes() for f in frame_list]
    if shared:
        stream = encoded[0] + b"".join(e[1:] for e in encoded[1:])
    else:
        stream = b"".join(encoded)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    splitter = HdlcFrameSplitter()
    got = []
    last = 0
    for cut in cuts + [len(stream)]:
        got += splitter.feed(stream[last:cut])
        last = cut
    assert [HdlcFrame.from_bytes(g) for g in got] == frame_list


# ------------------------------------------------------------------ splitter details


def test_splitter_every_byte_boundary():
    raw = _frame(info=bytes(range(0x70, 0x90)))  # information holds a 0x7E byte
    for cut in range(1, len(raw)):
        splitter = HdlcFrameSplitter()
        assert splitter.feed(raw[:cut]) == []
        assert splitter.feed(raw[cut:]) == [raw]


def test_splitter_skips_garbage_and_inter_frame_flags():
    raw = _frame()
    stream = b"\x00\x11garbage\x7E\x7E\x7E" + raw + b"\xFF\xFF" + raw + b"\x7E"
    assert HdlcFrameSplitter().feed(stream) == [raw, raw]


def test_splitter_resynchronises_after_false_start():
    # A flag followed by a plausible format field announcing 0x50 bytes swallows the next
    # frame; when the closing flag is not where the length says, the splitter rescans.
    raw = _frame()
    stream = b"\x7E\xA0\x50" + raw + bytes(0x60)
    assert HdlcFrameSplitter().feed(stream) == [raw]


def test_splitter_inter_octet_timeout_drops_partial_frame():
    raw = _frame()
    splitter = HdlcFrameSplitter(inter_octet_timeout=0.025)
    assert splitter.feed(raw[:6], now=0.0) == []
    assert splitter.pending == 6
    assert not splitter.expire(0.02)
    assert splitter.expire(0.1)
    assert splitter.pending == 0
    # The rest of the stale frame is garbage now; the next frame is found.
    assert splitter.feed(raw[6:] + raw, now=0.2) == [raw]


def test_splitter_buffer_bounded():
    splitter = HdlcFrameSplitter()
    splitter.feed(b"\x7E\xA7\xFF" + bytes(5000))
    assert splitter.pending <= 2049


# ------------------------------------------------------------------ parameter field


def test_parameter_field_encoding():
    field = HdlcParameterField(max_info_tx=0x80, max_info_rx=0x200, window_tx=1, window_rx=7)
    assert field.to_bytes().hex().upper() == (
        "818013" "050180" "06020200" "070400000001" "080400000007")
    assert HdlcParameterField.from_bytes(field.to_bytes()) == field


def test_parameter_field_partial_and_empty():
    assert HdlcParameterField.from_bytes(bytes.fromhex("818000")) == HdlcParameterField()
    assert HdlcParameterField.from_bytes(bytes.fromhex("818003070102")) == HdlcParameterField(window_tx=2)


@pytest.mark.parametrize("raw", [
    "", "81", "8280", "818100", "818001", "81800305", "8180030503000001", "818004050200",
    "8180030901FF",
])
def test_parameter_field_errors(raw):
    with pytest.raises(HdlcError):
        HdlcParameterField.from_bytes(bytes.fromhex(raw))


@given(*(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)) for _ in range(4)))
def test_parameter_field_round_trip(a, b, c, d):
    field = HdlcParameterField(a, b, c, d)
    assert HdlcParameterField.from_bytes(field.to_bytes()) == field


def test_frmr_information_layout():
    info = FrmrInformation(rejected_control=0x32, send_state=3, receive_state=5, reasons=0x04)
    # byte 2: 0, V(S) in bits 1-3, C/R bit 4, V(R) in bits 5-7
    assert info.to_bytes() == bytes([0x32, (3 << 1) | (5 << 5), 0x04])
    assert FrmrInformation.from_bytes(info.to_bytes()) == info
    with pytest.raises(HdlcError):
        FrmrInformation.from_bytes(b"\x00\x00")


# ------------------------------------------------------------------ gurux-dlms cross-checks



def _gurux_client(server_address=1, size=0, **hdlc):
    from gurux_dlms import GXDLMSClient
    from gurux_dlms.enums import Authentication, InterfaceType

    client = GXDLMSClient(True, 16, server_address, Authentication.NONE, None, InterfaceType.HDLC)
    client.serverAddressSize = size
    for name, value in hdlc.items():
        setattr(client.hdlcSettings, name, value)
    return client


def test_gurux_snrm_matches_known_frame():
    assert bytes(_gurux_client().snrmRequest()) == SNRM_16_TO_1


def test_gurux_snrm_with_parameters_parses():
    client = _gurux_client(maxInfoTX=512, maxInfoRX=256, windowSizeTX=3, windowSizeRX=7)
    raw = bytes(client.snrmRequest())
    frame = HdlcFrame.from_bytes(raw)
    assert frame.kind is FrameKind.SNRM and frame.poll_final
    assert HdlcParameterField.from_bytes(frame.information) == HdlcParameterField(512, 256, 3, 7)
    assert frame.to_bytes() == raw


@pytest.mark.parametrize("logical, physical, size, expected", [
    (1, 0, 0, None),
    (1, 17, 0, HdlcAddress(1, 17, 2)),
    (1, 0x1234, 4, HdlcAddress(1, 0x1234, 4)),
    (1, 17, 4, HdlcAddress(1, 17, 4)),
])
def test_gurux_server_address_forms(logical, physical, size, expected):
    from gurux_dlms import GXDLMSClient

    address = GXDLMSClient.getServerAddress(logical, physical, size) if physical else logical
    client = _gurux_client(address, size)
    frame = HdlcFrame.from_bytes(bytes(client.snrmRequest()))
    if expected is None:
        expected = HdlcAddress.server(1)
    assert frame.destination == expected
    assert frame.source == CLIENT_16


def test_gurux_aarq_frames_parse_and_reencode_identically():
    client = _gurux_client()
    client.snrmRequest()
    for raw in client.aarqRequest():
        raw = bytes(raw)
        frame = HdlcFrame.from_bytes(raw)
        assert frame.kind is FrameKind.I
        assert frame.information.startswith(b"\xE6\xE6\x00\x60")  # LLC + AARQ tag
        assert frame.to_bytes() == raw


def test_gurux_accepts_our_ua_and_i_frame():
    from gurux_dlms import GXByteBuffer, GXReplyData

    client = _gurux_client()
    client.snrmRequest()
    ua = HdlcFrame(FrameKind.UA, CLIENT_16, SERVER_1, True,
                   information=HdlcParameterField(256, 512, 1, 1).to_bytes()).to_bytes()
    reply = GXReplyData()
    client.getData(GXByteBuffer(ua), reply)
    client.parseUAResponse(reply.data)
    # Our tx is gurux's rx and vice versa.
    assert client.hdlcSettings.maxInfoRX == 256
    assert client.hdlcSettings.maxInfoTX == 512
    client.aarqRequest()  # advances gurux's sequence numbers: it sent N(S)=0
    aare = bytes.fromhex("6129A109060760857405080101A203020100A305A103020100"
                         "BE10040E0800065F1F040000181D04000007")
    i_frame = HdlcFrame(FrameKind.I, CLIENT_16, SERVER_1, True, 0, 1,
                        b"\xE6\xE7\x00" + aare).to_bytes()
    reply = GXReplyData()
    assert client.getData(GXByteBuffer(i_frame), reply)
    assert bytes(reply.data.array()[:reply.data.size]) == aare


def test_gurux_rejects_our_frame_with_corrupted_fcs():
    # Guards the cross-check above: gurux does verify what it is given.
    from gurux_dlms import GXByteBuffer, GXReplyData

    client = _gurux_client()
    client.snrmRequest()
    ua = bytearray(HdlcFrame(FrameKind.UA, CLIENT_16, SERVER_1, True).to_bytes())
    ua[-2] ^= 0xFF
    with pytest.raises(Exception, match="CRC"):
        client.getData(GXByteBuffer(bytes(ua)), GXReplyData())
    ua[-2] ^= 0xFF
    reply = GXReplyData()
    assert client.getData(GXByteBuffer(bytes(ua)), reply) and reply.isComplete()


# ------------------------------------------------------------------ dlms-cosem cross-checks


def test_dlms_cosem_parses_our_frames():
    from dlms_cosem.hdlc import frames as dc

    ua = HdlcFrame(FrameKind.UA, CLIENT_16, SERVER_1, True,
                   information=HdlcParameterField(128, 128, 1, 1).to_bytes()).to_bytes()
    parsed = dc.UnNumberedAcknowledgmentFrame.from_bytes(ua)
    assert parsed.payload == HdlcParameterField(128, 128, 1, 1).to_bytes()
    assert parsed.to_bytes() == ua

    info = b"\xE6\xE7\x00\xC4\x01\xC1\x00\x06\x00\x00\x00\x2A"
    i_frame = HdlcFrame(FrameKind.I, CLIENT_16, HdlcAddress(1, 17, 2), True, 3, 5, info,
                        segmented=True).to_bytes()
    parsed = dc.InformationFrame.from_bytes(i_frame)
    assert (parsed.send_sequence_number, parsed.receive_sequence_number) == (3, 5)
    assert parsed.segmented and parsed.final and parsed.payload == info
    assert parsed.source_address.logical_address == 1
    assert parsed.source_address.physical_address == 17

    rr = HdlcFrame(FrameKind.RR, CLIENT_16, SERVER_1, True, 0, 6).to_bytes()
    assert dc.ReceiveReadyFrame.from_bytes(rr).receive_sequence_number == 6


def test_we_parse_dlms_cosem_frames():
    from dlms_cosem.hdlc import frames as dc
    from dlms_cosem.hdlc.address import HdlcAddress as DcAddress

    server = DcAddress(1, 17, "server")
    client = DcAddress(16, None, "client")
    snrm = HdlcFrame.from_bytes(dc.SetNormalResponseModeFrame(server, client).to_bytes())
    assert snrm.kind is FrameKind.SNRM and snrm.destination == HdlcAddress(1, 17, 2)
    assert snrm.source == CLIENT_16

    payload = b"\xE6\xE6\x00\xC0\x01\xC1\x00\x01\x00\x00\x2A\x00\x00\xFF\x02\x00"
    raw = dc.InformationFrame(server, client, payload, send_sequence_number=2,
                              receive_sequence_number=4, segmented=False, final=True).to_bytes()
    frame = HdlcFrame.from_bytes(raw)
    assert (frame.kind, frame.send_seq, frame.recv_seq, frame.poll_final) == (FrameKind.I, 2, 4, True)
    assert frame.information == payload
    assert frame.to_bytes() == raw

    rr = HdlcFrame.from_bytes(dc.ReceiveReadyFrame(server, client, receive_sequence_number=3).to_bytes())
    assert rr.kind is FrameKind.RR and rr.recv_seq == 3

    disc = HdlcFrame.from_bytes(dc.DisconnectFrame(server, client).to_bytes())
    assert disc.kind is FrameKind.DISC


def test_wrong_closing_flag_rejected():
    raw = bytearray(_frame())
    raw[-1] = 0x00
    with pytest.raises(HdlcError, match="closing flag"):
        HdlcFrame.from_bytes(bytes(raw))


def test_hcs_without_information_field_rejected():
    # A frame that carries an HCS but no information: the length counts 2 bytes too many.
    header = bytes([0xA0, 0x09, 0x03, 0x21, 0x10])
    body = header + checksum_bytes(header)
    with pytest.raises(HdlcError, match="without information"):
        HdlcFrame.from_bytes(b"\x7E" + body + checksum_bytes(body) + b"\x7E")


def test_frame_with_header_but_no_room_for_fcs_rejected():
    # Length 11 = format + two 4-byte addresses + control: nothing left for the FCS.
    body = bytes([0xA0, 0x0B]) + bytes.fromhex("00020023") + bytes.fromhex("00020021") + b"\x93"
    with pytest.raises(TruncatedError, match="FCS"):
        HdlcFrame.from_bytes(b"\x7E" + body + b"\x7E")
