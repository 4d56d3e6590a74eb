"""The consumer information push on the wire (companion §4.2.1, Green Book 10.5 subset): M-Bus
SND_UD long frames to the broadcast address, CI = transport segment field, wrapper SAPs 01/67.

The reference is the published Austrian example of a customer interface push:
  https://github.com/fneur/smart-meter-tirol/blob/8538b263572e93288cbd8aaee425f5cd2792bf18/doc/EXAMPLE.md
  (file doc/EXAMPLE.md of the repository fneur/smart-meter-tirol): key 10 11 .. 1F, system title
  4B464D1010000023, frame counter 00295B9A, suite 1 encryption only, general-glo-ciphering,
  two frames (CI 0x00 then 0x11). Its bytes are copied below as the page prints them.
Our encoder there is the meter's own path: the CIP client's security context (its key, its
sending counter, its policy 0x48) protects the data-notification, and the transport cuts it.
"""
from __future__ import annotations

import random

import pytest

from smartmeter.cosem.data import DataType
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.context import ClientPolicy, SecurityContext
from smartmeter.errors import DecodeError, EncodeError
from smartmeter.mbus.consumer_port import (
    MAX_APDU, MAX_SEGMENTS, ConsumerApdu, ConsumerPushReader, ConsumerSegmentError, Discarded, decode_segment,
    reassemble, segment_frames,
)
from smartmeter.mbus.link import LongFrame, MbusFrameError
from smartmeter.dlms.server import protect_notification

# --- doc/EXAMPLE.md, "Beispieldaten": the byte sequence S = S_1 + S_2 as the meter sent it
EXAMPLE_STREAM = bytes.fromhex("""
68FAFA6853FF000167DB084B464D1010 0000238201092100295B9AEFC1546E64 4A2C9E32EDD42CBD0F1B945B194D0868
85C4D8DF86DD52CB5B448854A6D548D5 D270739B2A169D05B013F9015070089D 3C5FA45CA05E92309A645CC83D7DA40F
BC8F4CF9C225AFA69A25FF0B2AC9C274 4550ABA53CE9143FD10B0AD85FD30BD6 B6DFFEE65F8204DC9C5067CA73B62E29
9A39D50AA730B2B9AE3836BC2F3490FB 41BE5B6F930D84952976369DD7DABBB5 A4354AECA1D2486CFF2EB0C6206380BA
501D122AF75D716D3092C3960506A15E 06FAB0EE5B7DFA3C2CDF0CAFD051B88E 44B8B9FB8865F20CB89D1143CDC7EFEB
07FB4C4898E764E9E3A32DDC3D1F0F16
6826266853FF110167B46961CE962B2C 78050C96598C7E4D26658043F9CBCA78 189BD01B139F8AE0F7391116
""")
# "S_2 entspricht den letzten 3 Zeilen": the second frame starts at its 68 26 26 68
EXAMPLE_FRAMES = [EXAMPLE_STREAM[:EXAMPLE_STREAM.index(bytes.fromhex("6826266853"))],
                  EXAMPLE_STREAM[EXAMPLE_STREAM.index(bytes.fromhex("6826266853")):]]
# "Transportierte DLMS/COSEM Nachricht": the two APDU parts joined
EXAMPLE_APDU = bytes.fromhex("""
DB084B464D10100000238201092100295B9AEFC1546E644A2C9E32EDD42CBD0F
1B945B194D086885C4D8DF86DD52CB5B448854A6D548D5D270739B2A169D05B0
13F9015070089D3C5FA45CA05E92309A645CC83D7DA40FBC8F4CF9C225AFA69A
25FF0B2AC9C2744550ABA53CE9143FD10B0AD85FD30BD6B6DFFEE65F8204DC9C
5067CA73B62E299A39D50AA730B2B9AE3836BC2F3490FB41BE5B6F930D849529
76369DD7DABBB5A4354AECA1D2486CFF2EB0C6206380BA501D122AF75D716D30
92C3960506A15E06FAB0EE5B7DFA3C2CDF0CAFD051B88E44B8B9FB8865F20CB8
9D1143CDC7EFEB07FB4C4898E764E9E3A32DDC3D1FB46961CE962B2C78050C96
598C7E4D26658043F9CBCA78189BD01B139F8AE0F739
""")
# the decrypted data-notification the page shows (CyberChef's output)
EXAMPLE_PLAINTEXT = bytes.fromhex("""
0f0029b2dc0c07e50713010f2e2300ff8880020c09060000010000ff090c07e5
0713010f2e2300ff8880020209060000600100ff090e314b464d303130303030
303033350202090600002a0000ff09104b464d31313030313030303030303335
020309060100200700ff12090402020fff16230203090601001f0700ff120000
02020ffe1621020309060100010700ff060000000002020f00161b0203090601
00020700ff060000000002020f00161b020309060100010800ff060000239402
020f00161e020309060100020800ff060000000002020f00161e020309060100
030800ff060000006002020f001620020309060100040800ff06000000090202
0f001620
""")
EXAMPLE_KEY = bytes(range(0x10, 0x20))
EXAMPLE_SYSTEM_TITLE = bytes.fromhex("4B464D1010000023")
EXAMPLE_COUNTER = 0x00295B9A
CIP_POLICY = 0x48  # encrypted request and response (catalog §2.6)


class DictStore:
    """The security store protocol over a dict (the meter's is SQLite)."""

    def __init__(self) -> None:
        self.values, self.counters = {}, {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def put(self, key, value):
        self.values[key] = value

    def counter(self, key):
        return self.counters.get(key, 0)

    def set_counter(self, key, value):
        self.counters[key] = value


def cip_context(key: bytes, last_used_counter: int, store: DictStore | None = None) -> SecurityContext:
    """The CIP client's context as the meter holds it, with `key` and a sending counter whose
    last durable use is `last_used_counter` (the store keeps "highest covered + 1")."""
    store = store or DictStore()
    store.put("security.cip", {"suite": 1, "policy": CIP_POLICY, "client_system_title": None, "ek": key.hex(),
                               "ak": bytes(16).hex(), "hls_secret": None})
    store.set_counter("fc.tx.cip", last_used_counter + 1)
    return SecurityContext(ClientPolicy("cip", 103, 1, CIP_POLICY, 0), store)


def long_frame_bytes(c: int, a: int, ci: int, data: bytes) -> bytes:
    """EN 13757-2 long frame, written out here: 68 L L 68 C A CI data CS 16."""
    body = bytes([c, a, ci]) + data
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


def test_the_example_frames_are_what_the_page_says():
    """The copy is right: the page's frames are two long frames whose APDU parts join to the
    page's APDU, which decrypts (AES-GCM, no tag) to the page's plaintext."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    assert [f[:4] for f in EXAMPLE_FRAMES] == [bytes.fromhex("68FAFA68"), bytes.fromhex("68262668")]
    assert EXAMPLE_FRAMES[0][9:-2] + EXAMPLE_FRAMES[1][9:-2] == EXAMPLE_APDU
    ciphertext = EXAMPLE_APDU[2 + 8 + 3 + 1 + 4:]
    decryptor = Cipher(algorithms.AES(EXAMPLE_KEY),
                       modes.CTR(EXAMPLE_SYSTEM_TITLE + EXAMPLE_COUNTER.to_bytes(4, "big") + b"\x00\x00\x00\x02")
                       ).decryptor()
    assert decryptor.update(ciphertext) + decryptor.finalize() == EXAMPLE_PLAINTEXT


def test_the_meters_encoder_reproduces_the_austrian_example_byte_for_byte():
    """Key, system title and counter of the page, its data-notification (decoded, then encoded by
    our APDU code): the CIP client's protection (encryption only, 0x21) and our segmentation give
    both frames as the page prints them."""
    notification = DataNotification.from_bytes(EXAMPLE_PLAINTEXT)
    assert notification.long_invoke_id_and_priority == 0x0029B2DC
    assert notification.body.type == DataType.STRUCTURE and len(notification.body.value) == 12
    rebuilt = DataNotification(notification.long_invoke_id_and_priority, notification.date_time,
                               notification.body).to_bytes()
    assert rebuilt == EXAMPLE_PLAINTEXT
    context = cip_context(EXAMPLE_KEY, EXAMPLE_COUNTER - 1)
    apdu = protect_notification(context, EXAMPLE_SYSTEM_TITLE, rebuilt)
    assert apdu == EXAMPLE_APDU
    assert apdu[0] == 0xDB and apdu[13] == 0x21  # general-glo-ciphering; suite 1, encrypted, no authentication
    assert segment_frames(apdu) == EXAMPLE_FRAMES
    assert context.tx.last_used == EXAMPLE_COUNTER  # the counter was spent (and made durable) once


def test_the_frames_are_m_bus_long_frames_of_the_transport_layout():
    """Each frame, built independently from EN 13757-2 and §4.2.1: SND_UD (0x53) to 0xFF, CI =
    sequence | 0x10 on the last, 01 67, then the APDU part."""
    apdu = EXAMPLE_APDU
    expected = [long_frame_bytes(0x53, 0xFF, 0x00, b"\x01\x67" + apdu[:245]),
                long_frame_bytes(0x53, 0xFF, 0x11, b"\x01\x67" + apdu[245:])]
    assert expected == EXAMPLE_FRAMES
    assert segment_frames(apdu) == expected


@pytest.mark.parametrize("length, cis", [(1, [0x10]), (245, [0x10]), (246, [0x00, 0x11]), (490, [0x00, 0x11]),
                                         (491, [0x00, 0x01, 0x12]), (MAX_APDU, list(range(15)) + [0x1F])])
def test_segment_boundaries(length, cis):
    apdu = bytes(random.Random(length).randbytes(length))
    frames = segment_frames(apdu)
    assert [f[6] for f in frames] == cis
    assert all(f[1] <= 0xFA for f in frames)
    assert reassemble(b"".join(frames)) == [apdu]


def test_an_apdu_beyond_sixteen_segments_or_none_at_all_is_not_encoded():
    with pytest.raises(EncodeError):
        segment_frames(bytes(MAX_APDU + 1))
    with pytest.raises(EncodeError):
        segment_frames(b"")


def test_the_reader_reassembles_the_example_from_any_chunking():
    rng = random.Random(7)
    for _ in range(50):
        reader = ConsumerPushReader()
        stream = b"\x00\xE5noise" + EXAMPLE_STREAM + EXAMPLE_STREAM
        pos, items = 0, []
        while pos < len(stream):
            step = rng.randint(1, 40)
            reader.feed(stream[pos:pos + step])
            items += reader.take()
            pos += step
        apdus = [i for i in items if isinstance(i, ConsumerApdu)]
        assert [a.apdu for a in apdus] == [EXAMPLE_APDU, EXAMPLE_APDU]
        assert all(a.segments == 2 and (a.source_sap, a.destination_sap) == (0x01, 0x67) for a in apdus)


def test_segments_out_of_order_lost_or_foreign_are_discarded():
    first, second = EXAMPLE_FRAMES
    other = segment_frames(bytes(range(200)) * 2)  # 400 octets: CI 00, 11
    reader = ConsumerPushReader()
    reader.feed(second)  # a last segment without its first
    reader.feed(first + other[0] + other[1])  # an APDU begun, then a new one
    reader.feed(long_frame_bytes(0x08, 0x01, 0x72, b"\x01\x02\x03"))  # a slave's RSP_UD: no transport CI
    reader.feed(long_frame_bytes(0x53, 0xFF, 0x00, b"\x01"))  # no APDU part
    items = reader.take()
    assert [type(i) for i in items] == [Discarded, Discarded, ConsumerApdu, Discarded, Discarded]
    assert items[2].apdu == bytes(range(200)) * 2
    assert isinstance(items[3].error, ConsumerSegmentError)


def test_sixteen_segments_without_a_last_one_are_dropped_and_the_reader_stays_bounded():
    reader = ConsumerPushReader()
    for n in range(MAX_SEGMENTS):
        reader.feed(long_frame_bytes(0x53, 0xFF, n, b"\x01\x67" + bytes(200)))
    items = reader.take()
    assert len(items) == 1 and isinstance(items[0], Discarded)
    for _ in range(1000):  # nobody takes: what waits stays bounded
        reader.feed(long_frame_bytes(0x53, 0xFF, 0x05, b"\x01\x67\x00"))
    assert len(reader.take()) <= 4 * MAX_SEGMENTS


def test_decode_segment_is_total():
    """Any bytes: a Segment or a DecodeError subclass, nothing else."""
    rng = random.Random(2502)
    seeds = EXAMPLE_FRAMES + [b"", b"\x68", b"\x68\x03\x03\x68\x53\xff\x00\x52\x16", b"\x10\x5b\xfe\x59\x16"]
    for _ in range(3000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(0, 4)):
            if base and rng.random() < 0.7:
                base[rng.randrange(len(base))] = rng.randrange(256)
            else:
                base = base[:rng.randrange(len(base) + 1)]
        try:
            segment = decode_segment(bytes(base))
        except DecodeError:
            continue
        assert segment.part and segment.sequence < 16
    with pytest.raises(MbusFrameError):
        decode_segment(EXAMPLE_FRAMES[0][:-1])
    assert decode_segment(LongFrame(0x53, 0xFF, 0x11, b"\x01\x67\xAA")).last


def test_the_reader_is_total_on_noise():
    rng = random.Random(103)
    reader = ConsumerPushReader()
    for _ in range(300):
        chunk = bytearray(rng.randbytes(rng.randint(0, 300)))
        if rng.random() < 0.3:
            chunk += rng.choice(EXAMPLE_FRAMES)
        reader.feed(bytes(chunk))
        for item in reader.take():
            assert isinstance(item, (ConsumerApdu, Discarded))
    assert reader.frames.buffered_bytes <= 261


def test_gurux_reads_our_frames_as_wired_m_bus():
    """GXDLMSTranslator (interface WIRED_MBUS) cuts the meter's frames: SAPs 1 -> 0x67, the APDU
    parts join to the APDU, which it decrypts with the CIP key to the example's notification."""
    import re

    from gurux_dlms import GXByteBuffer, GXDLMSTranslator, GXDLMSTranslatorMessage
    from gurux_dlms.enums import InterfaceType, Security, TranslatorOutputType

    context = cip_context(EXAMPLE_KEY, EXAMPLE_COUNTER - 1)
    frames = segment_frames(protect_notification(context, EXAMPLE_SYSTEM_TITLE, EXAMPLE_PLAINTEXT))
    translator = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    translator.blockCipherKey = bytearray(EXAMPLE_KEY)
    translator.security = Security.ENCRYPTION
    translator.comments = True  # the decrypted plaintext is shown as a comment
    message = GXDLMSTranslatorMessage()
    message.message = GXByteBuffer(b"".join(frames))
    message.interfaceType = InterfaceType.WIRED_MBUS
    parts = []
    while translator.findNextFrame(message, GXByteBuffer()):
        xml = translator.messageToXml(message)
        assert '<TargetAddress Value="67" />' in xml and '<SourceAddress Value="1" />' in xml
        parts.append(bytes.fromhex(re.search(r'NextFrame Value="([0-9A-F]+)"', xml).group(1)))
    assert b"".join(parts) == EXAMPLE_APDU
    described = translator.pduToXml(GXByteBuffer(b"".join(parts)))
    decrypted = bytes.fromhex(described.split("Decrypt data:")[1].split("\n")[0])
    assert decrypted == EXAMPLE_PLAINTEXT
    assert "<LongInvokeIdAndPriority Value=\"0029B2DC\" />" in described
