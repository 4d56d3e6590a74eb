"""Wireless M-Bus frames: CRC, formats A and B, the ELL/AFL/TPL layers, encoder round trips.

Expectations come from EN 13757-4's layout rules restated here (block sizes, CRC
positions), the CRC catalogue's check value, a bit-by-bit CRC written independently of
the table-driven one, and pymbusparser (which strips format-A CRCs itself).
"""
from __future__ import annotations

import pymbusparser
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smartmeter.errors import DecodeError, EncodeError
from smartmeter.mbus.security import SecurityMode, decrypt_frame
from smartmeter.mbus.application import manufacturer_from_text
from smartmeter.mbus.wireless import (
    MeterAddress,
    WirelessCrcError,
    add_crc_format_a,
    add_crc_format_b,
    crc16_en13757,
    decode_wmbus,
    encode_wmbus,
    strip_crc_format_a,
    strip_crc_format_b,
)

GAS = MeterAddress("ELS", "12345678", 0x33, 0x03)
KEY = bytes(range(0x10, 0x20))


def bitwise_crc(data: bytes) -> int:
    """CRC-16/EN-13757 bit by bit: poly 0x3D65, init 0, no reflection, xorout 0xFFFF."""
    crc = 0
    for byte in data:
        for bit in range(7, -1, -1):
            top = ((crc >> 15) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFF
            if top:
                crc ^= 0x3D65
    return crc ^ 0xFFFF


def plain_frame(n_after_l: int) -> bytes:
    """A CRC-free frame with `n_after_l` bytes after L (C, M, A, CI 0x78, then data)."""
    body = bytes((0x44,)) + GAS.to_bytes() + bytes((0x78,)) + bytes((i * 7) & 0xFF for i in range(n_after_l))
    return bytes((n_after_l,)) + body[:n_after_l]


def padded(records: bytes) -> bytes:
    data = b"\x2F\x2F" + records
    return data + b"\x2F" * (-len(data) % 16)


def test_crc_catalogue_check_value():
    assert crc16_en13757(b"123456789") == 0xC2B7
    assert bitwise_crc(b"123456789") == 0xC2B7


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 37, bytes(range(256))])
def test_crc_table_equals_bitwise(data):
    assert crc16_en13757(data) == bitwise_crc(data)


def test_manufacturer_code_matches_annex_bytes():
    # The annex's frames carry ELS as 93 15 (least significant byte first).
    assert manufacturer_from_text("ELS") == 0x1593
    assert GAS.to_bytes() == bytes.fromhex("9315785634123303")
    assert MeterAddress.from_bytes(bytes.fromhex("9315785634123303")) == GAS


@pytest.mark.parametrize("n", [9, 10, 11, 25, 26, 27, 42, 100, 255])
def test_format_a_layout(n):
    frame = plain_frame(n)
    with_crc = add_crc_format_a(frame)
    data_blocks = [frame[:10]] + [frame[i:i + 16] for i in range(10, len(frame), 16)]
    assert with_crc == b"".join(b + bitwise_crc(b).to_bytes(2, "big") for b in data_blocks)
    assert with_crc[0] == n  # L does not count the CRCs in format A
    assert strip_crc_format_a(with_crc) == frame
    if n > 9:
        assert decode_wmbus(with_crc, crc="A").raw == frame
    else:  # block 1 alone carries no CI: nothing for a receiver to act on
        with pytest.raises(DecodeError):
            decode_wmbus(with_crc, crc="A")


@pytest.mark.parametrize("n", [9, 12, 100, 125, 126, 127, 128, 200, 251])
def test_format_b_layout(n):
    frame = plain_frame(n)
    with_crc = add_crc_format_b(frame)
    total = len(with_crc)
    assert with_crc[0] == total - 1  # L counts every byte after it, CRCs included
    if total <= 128:
        assert total == len(frame) + 2
        assert with_crc[-2:] == bitwise_crc(with_crc[:-2]).to_bytes(2, "big")
    else:
        assert total == len(frame) + 4
        assert with_crc[126:128] == bitwise_crc(with_crc[:126]).to_bytes(2, "big")
        assert with_crc[-2:] == bitwise_crc(with_crc[128:-2]).to_bytes(2, "big")
    assert strip_crc_format_b(with_crc) == frame
    if n > 9:
        assert decode_wmbus(with_crc, crc="B").raw == frame
    else:  # block 1 alone carries no CI: nothing for a receiver to act on
        with pytest.raises(DecodeError):
            decode_wmbus(with_crc, crc="B")


def test_format_b_too_long_for_l():
    with pytest.raises(EncodeError):
        add_crc_format_b(plain_frame(253))


@pytest.mark.parametrize("n", [20, 60, 130])
def test_format_a_crc_error_in_every_position(n):
    with_crc = add_crc_format_a(plain_frame(n))
    for i in range(1, len(with_crc)):
        broken = bytearray(with_crc)
        broken[i] ^= 0x10
        with pytest.raises(WirelessCrcError):
            decode_wmbus(bytes(broken), crc="A")


@pytest.mark.parametrize("n", [20, 126, 140])
def test_format_b_crc_error_in_every_position(n):
    with_crc = add_crc_format_b(plain_frame(n))
    for i in range(1, len(with_crc)):
        broken = bytearray(with_crc)
        broken[i] ^= 0x01
        with pytest.raises(WirelessCrcError):
            decode_wmbus(bytes(broken), crc="B")


@pytest.mark.parametrize("crc", [None, "A", "B"])
def test_every_prefix_and_wrong_l_is_a_decode_error(crc):
    frame = encode_wmbus(GAS, bytes.fromhex("0C1427048502"), access_number=3, security=SecurityMode.MODE_7,
                         key=KEY, message_counter=9, crc=crc)
    decode_wmbus(frame, crc=crc)
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_wmbus(frame[:cut], crc=crc)
    with pytest.raises(DecodeError):
        decode_wmbus(frame + b"\x00", crc=crc)


@pytest.mark.parametrize("n", [12, 30, 90, 200])
def test_pymbusparser_strips_our_format_a_crcs(n):
    records = bytes.fromhex("0413E8030000") * (n // 6)
    frame = encode_wmbus(GAS, records, access_number=1, crc=None)
    peer = pymbusparser.parse(add_crc_format_a(frame))
    assert peer["raw"]["format_a_crc_stripped"] is True
    assert peer["raw"]["normalized_frame_hex"] == frame.hex().upper()
    assert len(peer["records"]) == n // 6


def test_dll_and_short_tpl_fields():
    frame = decode_wmbus(encode_wmbus(GAS, b"\x01\xFD\x1B\x00", access_number=0x5A, status=0x04,
                                      c_field=0x46, bidirectional=True, crc="A"), crc="A")
    assert frame.link.c_field == 0x46 and frame.link.length == len(frame.raw) - 1
    assert frame.address == GAS and frame.ell is None and frame.afl is None
    tpl = frame.tpl
    assert (tpl.ci, tpl.access_number, tpl.status) == (0x7A, 0x5A, 0x04)
    assert tpl.configuration.raw == 0x8000 and tpl.configuration.bidirectional
    assert tpl.configuration.mode == 0 and frame.payload == b"\x01\xFD\x1B\x00"


def test_configuration_field_bits():
    # CF 0x2520 of the annex: synchronous, mode 5, two encrypted blocks.
    cf = decode_wmbus(bytes.fromhex("2E4493157856341233037A2A002025") + bytes(32)).tpl.configuration
    assert (cf.synchronous, cf.bidirectional, cf.accessibility, cf.mode, cf.encrypted_blocks, cf.content,
            cf.hop_count) == (True, False, False, 5, 2, 0, 0)
    cf = decode_wmbus(bytes.fromhex("1E4493157856341233037A2A00FFC0") + bytes(16)).tpl.configuration
    assert (cf.bidirectional, cf.accessibility, cf.synchronous, cf.mode, cf.encrypted_blocks, cf.content,
            cf.hop_count) == (True, True, False, 0, 15, 3, 3)


def test_long_tpl_header_address_is_the_meter_and_keys_the_iv():
    # A repeater (link address) forwards a meter's telegram with a long TPL header.
    repeater = MeterAddress("ABC", "00000042", 0x01, 0x32)
    records = bytes.fromhex("0C1427048502")
    plaintext = padded(records)
    iv = GAS.to_bytes() + bytes((0x11,)) * 8  # OMS: M || A of the long header's meter
    enc = Cipher(algorithms.AES(KEY), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    tpl = (bytes((0x72,)) + bytes.fromhex("78563412") + bytes.fromhex("9315") + bytes((0x33, 0x03))
           + bytes((0x11, 0x00)) + (0x0510).to_bytes(2, "little") + ciphertext)
    body = bytes((0x44,)) + repeater.to_bytes() + tpl
    frame = decode_wmbus(bytes((len(body),)) + body)
    assert frame.link.address == repeater and frame.tpl.address == GAS and frame.address == GAS
    assert decrypt_frame(frame, KEY).application_data == plaintext
    # and the encoder's own long header is read back the same way
    ours = decode_wmbus(encode_wmbus(GAS, records, access_number=0x11, security=5, key=KEY,
                                     long_header=True, crc=None))
    assert ours.tpl.ci == 0x72 and ours.tpl.address == GAS
    assert decrypt_frame(ours, KEY).application_data == plaintext


def test_tpl_without_header_and_unknown_ci():
    frame = decode_wmbus(plain_frame(20))
    assert frame.tpl.ci == 0x78 and frame.tpl.configuration is None and len(frame.payload) == 10
    body = bytes((0x44,)) + GAS.to_bytes() + bytes((0xA0, 1, 2, 3))
    frame = decode_wmbus(bytes((len(body),)) + body)
    assert frame.tpl is None and frame.ci == 0xA0 and frame.payload == b"\x01\x02\x03"


def _ell_long(session: int, payload: bytes, crc: int | None = None) -> bytes:
    crc = bitwise_crc(payload) if crc is None else crc
    body = (bytes((0x44,)) + GAS.to_bytes() + bytes((0x8D, 0x20, 0x07)) + session.to_bytes(4, "little")
            + crc.to_bytes(2, "little") + payload)
    return bytes((len(body),)) + body


def test_ell_long_payload_crc():
    payload = bytes.fromhex("780C1427048502")
    frame = decode_wmbus(_ell_long(0x00001234, payload))
    assert frame.ell.session_number == 0x1234 and frame.ell.encryption == 0
    assert frame.ell.payload_crc == bitwise_crc(payload) and frame.tpl.ci == 0x78
    with pytest.raises(WirelessCrcError):
        decode_wmbus(_ell_long(0x00001234, payload, bitwise_crc(payload) ^ 1))
    # ELL-encrypted (ENC != 0): the CRC is inside the ciphertext, not checked here
    assert decode_wmbus(_ell_long(0x20000001, payload, 0)).ell.encryption == 1


def test_afl_with_every_field():
    fcl = 0x2000 | 0x0200 | 0x0800 | 0x0400 | 0x1000 | 0x4000 | 0x07  # MCL KI MC MAC ML, more fragments, id 7
    afl_body = (fcl.to_bytes(2, "little") + bytes((0x24,)) + bytes.fromhex("3412") + bytes.fromhex("01000000")
                + bytes.fromhex("AABBCCDD") + bytes.fromhex("2000"))
    body = bytes((0x44,)) + GAS.to_bytes() + bytes((0x90, len(afl_body))) + afl_body + bytes((0x78, 1))
    afl = decode_wmbus(bytes((len(body),)) + body).afl
    assert (afl.message_control, afl.key_info, afl.message_counter, afl.mac, afl.message_length) == \
        (0x24, 0x1234, 1, bytes.fromhex("AABBCCDD"), 0x20)
    assert afl.more_fragments and afl.fragment_id == 7 and afl.auth_type == 4
    # an AFL.L that disagrees with its flags is malformed
    bad = bytearray(bytes((len(body),)) + body)
    bad[11] += 1  # AFL.L
    bad += b"\x00"
    bad[0] += 1
    with pytest.raises(DecodeError):
        decode_wmbus(bytes(bad))


@pytest.mark.parametrize("crc", [None, "A", "B"])
@pytest.mark.parametrize("mode", [0, 5, 7])
@pytest.mark.parametrize("size", [0, 1, 13, 14, 30, 100, 200])
def test_encode_decode_round_trip(crc, mode, size):
    records = bytes((i * 13 + 5) & 0xFF for i in range(size))
    frame = encode_wmbus(GAS, records, access_number=7, security=mode, key=KEY, message_counter=77, crc=crc)
    decoded = decode_wmbus(frame, crc=crc)
    assert decoded.address == GAS and decoded.tpl.access_number == 7
    telegram = decrypt_frame(decoded, KEY)
    assert int(telegram.mode) == mode
    expected_data = records if mode == 0 else padded(records)
    assert telegram.application_data == expected_data and telegram.clear_tail == b""
    assert decoded.tpl.configuration.encrypted_blocks == (0 if mode == 0 else len(expected_data) // 16)
    assert (decoded.payload == records) == (mode == 0)  # encrypted modes change every block
    afl = decoded.afl
    assert (afl.message_counter, len(afl.mac)) == (77, 8) if mode == 7 else afl is None


def test_encoder_refuses_more_than_15_encrypted_blocks():
    # mode 5 (C, M/A, 5-byte TPL: 14 bytes) leaves room for 241 bytes: 15 blocks fit in L
    fits = bytes(240 - 2)  # 0x2F2F + 238 bytes: exactly 15 blocks
    frame = encode_wmbus(GAS, fits, access_number=1, security=5, key=KEY, crc=None)
    assert decode_wmbus(frame).tpl.configuration.encrypted_blocks == 15
    with pytest.raises(EncodeError):  # one byte more needs a 16th block, N has 4 bits
        encode_wmbus(GAS, bytes(240 - 1), access_number=1, security=5, key=KEY, crc=None)


def test_format_b_refuses_a_frame_its_crcs_push_past_l_255():
    # mode 0, short TPL: C (1) + M/A (8) + TPL header (5) + records = L
    records = bytes(255 - 14)
    plain = encode_wmbus(GAS, records, access_number=1, crc=None)
    assert plain[0] == 255 and add_crc_format_a(plain)  # format A's L does not count its CRCs
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, records, access_number=1, crc="B")
    shorter = encode_wmbus(GAS, records[:-4], access_number=1, crc="B")
    assert shorter[0] == 255  # 251 data bytes + two CRCs


def test_encoder_refuses_bad_arguments():
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, b"", access_number=256)
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, b"", access_number=1, security=5)
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, b"", access_number=1, security=7, key=KEY)
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, b"", access_number=1, security=13, key=KEY)
    with pytest.raises(EncodeError):
        encode_wmbus(GAS, bytes(250), access_number=1)
    with pytest.raises(EncodeError):
        MeterAddress("els", "12345678", 1, 1).to_bytes()
    with pytest.raises(EncodeError):
        MeterAddress("ELS", "1234567", 1, 1).to_bytes()


def test_non_bcd_identification_shows_hex_digits():
    raw = bytes.fromhex("0B44" "9315" "FFEEDDCC" "01" "07" "78" "00")
    assert decode_wmbus(raw).address.identification == "CCDDEEFF"
