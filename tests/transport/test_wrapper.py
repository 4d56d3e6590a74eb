"""TCP/UDP wrapper framing (IEC 62056-47): encoding, stream reassembly, datagrams, peers."""
from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.transport.wrapper import (
    WrapperDecoder,
    WrapperError,
    WrapperFrame,
    decode_datagram,
)

AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
AARQ_FRAME = bytes.fromhex("0001 0010 0001 001F".replace(" ", "")) + AARQ


def test_encoding_of_a_frame():
    frame = WrapperFrame(source_wport=0x10, destination_wport=0x01, payload=AARQ)
    assert frame.to_bytes() == AARQ_FRAME
    assert WrapperFrame(1, 2, b"").to_bytes() == bytes.fromhex("0001000100020000")


@pytest.mark.parametrize(
    "frame",
    [
        WrapperFrame(-1, 1, b""),
        WrapperFrame(1, 0x10000, b""),
        WrapperFrame(1, 1, b"", version=0x10000),
        WrapperFrame(1, 1, bytes(0x10000)),
    ],
)
def test_unencodable_frames_raise_encode_error(frame):
    with pytest.raises(EncodeError):
        frame.to_bytes()


# ------------------------------------------------------------------ stream reassembly


def test_frame_split_at_every_byte_boundary():
    for cut in range(len(AARQ_FRAME) + 1):
        decoder = WrapperDecoder()
        first = decoder.feed(AARQ_FRAME[:cut])
        second = decoder.feed(AARQ_FRAME[cut:])
        frames = first + second
        assert frames == [WrapperFrame(0x10, 0x01, AARQ)], cut
        assert (first == []) == (cut < len(AARQ_FRAME))
        assert decoder.buffered == 0


def test_frame_fed_one_byte_at_a_time():
    decoder = WrapperDecoder()
    frames = []
    for i in range(len(AARQ_FRAME)):
        frames += decoder.feed(AARQ_FRAME[i : i + 1])
        if i < len(AARQ_FRAME) - 1:
            assert frames == []
            assert decoder.buffered == i + 1
    assert frames == [WrapperFrame(0x10, 0x01, AARQ)]


def test_several_frames_in_one_chunk_and_a_partial_tail():
    frames = [WrapperFrame(0x10, 1, AARQ), WrapperFrame(1, 0x10, b""), WrapperFrame(0x20, 1, b"\xC0\x01")]
    stream = b"".join(f.to_bytes() for f in frames)
    decoder = WrapperDecoder()
    assert decoder.feed(stream + AARQ_FRAME[:5]) == frames
    assert decoder.buffered == 5
    assert decoder.feed(AARQ_FRAME[5:]) == [WrapperFrame(0x10, 1, AARQ)]


def test_two_frames_split_at_every_pair_of_boundaries():
    stream = AARQ_FRAME + WrapperFrame(1, 0x10, b"\x01\x02\x03").to_bytes()
    expected = [WrapperFrame(0x10, 1, AARQ), WrapperFrame(1, 0x10, b"\x01\x02\x03")]
    for a in range(0, len(stream) + 1, 3):
        for b in range(a, len(stream) + 1):
            decoder = WrapperDecoder()
            got = decoder.feed(stream[:a]) + decoder.feed(stream[a:b]) + decoder.feed(stream[b:])
            assert got == expected


@given(
    st.lists(
        st.builds(WrapperFrame, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300)),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_random_chunking_reassembles_every_frame(frames, rnd):
    stream = b"".join(f.to_bytes() for f in frames)
    decoder = WrapperDecoder()
    got: list[WrapperFrame] = []
    pos = 0
    while pos < len(stream):
        step = rnd.randint(1, 40)
        got += decoder.feed(stream[pos : pos + step])
        pos += step
    assert got == frames
    assert decoder.buffered == 0
    decoder.eof()  # nothing left over


def test_eof_in_the_middle_of_a_frame_is_truncation():
    decoder = WrapperDecoder()
    decoder.feed(AARQ_FRAME[:-1])
    with pytest.raises(TruncatedError):
        decoder.eof()


def test_bad_version_makes_the_stream_unusable():
    decoder = WrapperDecoder()
    bad = bytes.fromhex("0002 0010 0001 0000".replace(" ", ""))
    with pytest.raises(WrapperError) as info:
        decoder.feed(bad)
    assert isinstance(info.value, DecodeError)
    assert not decoder.usable
    # Once broken, even a valid frame is refused: the connection must be closed.
    with pytest.raises(WrapperError):
        decoder.feed(AARQ_FRAME)


def test_bad_version_is_detected_as_soon_as_the_header_is_complete():
    decoder = WrapperDecoder()
    bad = bytes.fromhex("0000 0010 0001 0005".replace(" ", ""))
    assert decoder.feed(bad[:7]) == []
    assert decoder.usable
    with pytest.raises(WrapperError):
        decoder.feed(bad[7:])


def test_frames_before_a_bad_header_ride_along_on_the_error():
    decoder = WrapperDecoder()
    with pytest.raises(WrapperError) as info:
        decoder.feed(AARQ_FRAME + bytes(8))
    assert info.value.frames == [WrapperFrame(0x10, 1, AARQ)]


def test_length_above_max_payload_is_refused_before_the_payload_arrives():
    decoder = WrapperDecoder(max_payload=30)
    assert decoder.feed(WrapperFrame(1, 1, bytes(30)).to_bytes()) == [WrapperFrame(1, 1, bytes(30))]
    with pytest.raises(WrapperError):
        decoder.feed(AARQ_FRAME[:8])  # declares 31 bytes
    assert not decoder.usable


def test_default_max_payload_accepts_the_largest_frame():
    frame = WrapperFrame(1, 2, bytes(range(256)) * 255 + bytes(255))
    assert len(frame.payload) == 0xFFFF
    decoder = WrapperDecoder()
    assert decoder.feed(frame.to_bytes()) == [frame]


def test_max_payload_is_validated():
    with pytest.raises(ValueError):
        WrapperDecoder(max_payload=0x10000)


# ------------------------------------------------------------------ datagrams


def test_datagram_round_trip():
    assert decode_datagram(AARQ_FRAME) == WrapperFrame(0x10, 1, AARQ)
    assert WrapperFrame.from_bytes(AARQ_FRAME) == WrapperFrame(0x10, 1, AARQ)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        AARQ_FRAME[:7],
        AARQ_FRAME[:-1],  # length field says more than the datagram holds
        AARQ_FRAME + b"\x00",  # two frames or trailing garbage in one datagram
        b"\x00\x02" + AARQ_FRAME[2:],  # version 2
    ],
)
def test_bad_datagrams_raise_wrapper_error(data):
    with pytest.raises(WrapperError):
        decode_datagram(data)


def test_datagram_above_max_payload():
    with pytest.raises(WrapperError):
        decode_datagram(AARQ_FRAME, max_payload=30)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=2000))
def test_datagram_hypothesis_round_trip(source, destination, payload):
    frame = WrapperFrame(source, destination, payload)
    assert decode_datagram(frame.to_bytes()) == frame


# ------------------------------------------------------------------ peers


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=500))
def test_agrees_with_dlms_cosem_wrapper(source, destination, payload):
    from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit

    ours = WrapperFrame(source, destination, payload).to_bytes()
    theirs = WrapperProtocolDataUnit.from_bytes(ours)
    assert theirs.data == payload
    assert theirs.wrapper_header.source_wport == source
    assert theirs.wrapper_header.destination_wport == destination
    assert theirs.wrapper_header.version == 1
    their_bytes = WrapperProtocolDataUnit(
        payload, WrapperHeader(source_wport=source, destination_wport=destination, length=len(payload))
    ).to_bytes()
    assert their_bytes == ours
    assert decode_datagram(their_bytes) == WrapperFrame(source, destination, payload)


@pytest.mark.parametrize("client_address,server_address", [(16, 1), (1, 1), (0x20, 0x11)])
def test_gurux_wrapper_frames_are_decoded(client_address, server_address):
    from gurux_dlms import GXDLMSClient
    from gurux_dlms.enums import Authentication, InterfaceType

    client = GXDLMSClient(True, client_address, server_address, Authentication.NONE, None,
                          InterfaceType.WRAPPER)
    frames = [bytes(f) for f in client.aarqRequest()]
    assert len(frames) == 1
    decoded = decode_datagram(frames[0])
    assert decoded.source_wport == client_address
    assert decoded.destination_wport == server_address
    assert decoded.payload[0] == 0x60
    # the same frame over TCP, split at a random boundary
    rnd = random.Random(client_address)
    cut = rnd.randrange(len(frames[0]))
    decoder = WrapperDecoder()
    assert decoder.feed(frames[0][:cut]) + decoder.feed(frames[0][cut:]) == [decoded]
    # and our encoding of the same content is the same bytes
    assert decoded.to_bytes() == frames[0]


def test_gurux_reads_our_wrapper_frame():
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator

    translator = GXDLMSTranslator()
    xml = translator.messageToXml(GXByteBuffer(WrapperFrame(0x10, 0x01, AARQ).to_bytes()))
    # gurux prints the wPorts in hex and names them from its own point of view, so only
    # the set of addresses is compared.
    addresses = set(re.findall(r'<(?:Target|Source)Address Value="([0-9A-F]+)"', xml))
    assert addresses == {"10", "1"}
    # gurux reports the whole frame's length (8 + 31 = 39) in hex
    assert re.search(r'<WRAPPER len="(\w+)"', xml).group(1) == "27"
    assert "<AssociationRequest>" in xml
    assert '<ProposedMaxPduSize Value="04B0" />' in xml


def test_non_bytes_payload_raises_encode_error():
    with pytest.raises(EncodeError):
        WrapperFrame(1, 1, 5).to_bytes()
