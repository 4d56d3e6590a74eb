"""The public wireless M-Bus and key-transfer vectors (tests/vectors/mbus-vectors.json).

Each vector's stated values - plaintext, derived keys, MAC, wrapped keys - are compared
with what our decoders and wraps give; the encoders must reproduce the vector frames
byte for byte from the stated fields. pymbusparser (an independent Rust parser) decodes
our mode-5 telegrams with the key.
"""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pymbusparser
import pytest

from smartmeter.mbus import keytransfer as kt
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.security import (
    MacError,
    SecurityMode,
    afl_mac,
    afl_mac_input,
    decrypt_frame,
    derive_mode7_keys,
)
from smartmeter.mbus.wireless import MeterAddress, add_crc_format_a, decode_wmbus, encode_wmbus

VECTORS = {v["id"]: v for v in json.loads(
    (Path(__file__).parents[1] / "vectors" / "mbus-vectors.json").read_text())["vectors"]}
MODE5 = VECTORS["oms-annex-n-mode5"]
MODE7 = VECTORS["oms-annex-n-mode7"]
DSMR4 = VECTORS["dsmr4-transfer-key"]
SMR5 = VECTORS["smr5-transfer-key"]
# The annex's records, as its "meaning" line states them: volume 0C 14 (8-digit BCD,
# 0.01 m3), date-time 04 6D, error flags 02 FD 17.
RECORDS = bytes.fromhex("0C1427048502" "046D32371F15" "02FD170000")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_mode5_vector_decodes_to_its_fields_and_plaintext():
    frame = decode_wmbus(h(MODE5["frame"]))
    assert frame.link.c_field == 0x44
    assert frame.address == MeterAddress("ELS", "12345678", 0x33, 0x03)
    assert frame.tpl.ci == 0x7A and frame.tpl.access_number == 0x2A and frame.tpl.status == 0
    assert frame.tpl.configuration.mode == 5
    assert frame.tpl.configuration.encrypted_blocks == MODE5["encrypted_blocks"]
    telegram = decrypt_frame(frame, h(MODE5["key"]))
    assert telegram.mode is SecurityMode.MODE_5
    assert telegram.application_data == h(MODE5["plaintext"])


def assert_annex_meaning(telegram) -> None:
    """The vectors' "meaning": volume 28504.27 m3, date-time 2008-05-31 23:50, error flags 0."""
    parsed = parse_telegram(*telegram.user_data)
    volume, when, flags = parsed.records
    assert volume.scaled() == Decimal("28504.27") and volume.unit == "m³" and volume.quantity == "Volume"
    assert when.value == dt.datetime(2008, 5, 31, 23, 50)
    assert flags.quantity == "Error flags" and flags.value == 0


@pytest.mark.parametrize("vector", [MODE5, MODE7], ids=["mode5", "mode7"])
def test_vector_records_decode_to_the_stated_meaning(vector):
    assert_annex_meaning(decrypt_frame(decode_wmbus(h(vector["frame"])), h(vector["key"])))


def test_mode5_vector_iv_rule():
    # iv_rule: M(2) || ID(4) || version || device type || ACC x 8, i.e. bytes 2..9 of the frame.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    raw = h(MODE5["frame"])
    iv = raw[2:10] + bytes((raw[11],)) * 8
    enc = Cipher(algorithms.AES(h(MODE5["key"])), modes.CBC(iv)).encryptor()
    assert enc.update(h(MODE5["plaintext"])) + enc.finalize() == raw[15:]


def test_mode5_vector_reencoded_byte_for_byte():
    frame = encode_wmbus(MeterAddress("ELS", "12345678", 0x33, 0x03), RECORDS, access_number=0x2A,
                         security=SecurityMode.MODE_5, key=h(MODE5["key"]), crc=None, synchronous=True)
    assert frame == h(MODE5["frame"])


def test_mode7_vector_keys_mac_and_plaintext():
    frame = decode_wmbus(h(MODE7["frame"]))
    assert frame.ell.ci == 0x8C and frame.ell.communication_control == 0x20 and frame.ell.access_number == 0x75
    afl = frame.afl
    assert afl.message_counter == 0x00000AB3 and afl.mac == h(MODE7["afl_mac"])
    assert afl.auth_type == 5 and afl.key_info is None and afl.message_length is None
    assert frame.tpl.configuration.mode == 7 and frame.tpl.configuration.encrypted_blocks == 2
    assert frame.tpl.configuration.kdf_selection == 1 and frame.tpl.configuration.key_id == 0
    k_enc, k_mac = derive_mode7_keys(h(MODE7["key"]), afl.message_counter, frame.address.id_bytes)
    assert k_enc == h(MODE7["k_enc"]) and k_mac == h(MODE7["k_mac"])
    assert afl_mac(k_mac, afl_mac_input(frame)) == h(MODE7["afl_mac"])
    telegram = decrypt_frame(frame, h(MODE7["key"]))
    assert telegram.mode is SecurityMode.MODE_7 and telegram.counter == 0xAB3
    assert telegram.application_data == h(MODE7["plaintext"])


def test_mode7_vector_mac_input_is_mcl_mc_tpl():
    # mac_rule: MCL || MC || TPL from CI to the end; the frame lays them out at 17, 18..21, 30..
    raw = h(MODE7["frame"])
    assert afl_mac_input(decode_wmbus(raw)) == raw[17:22] + raw[30:]


def test_mode7_vector_reencoded_byte_for_byte():
    frame = encode_wmbus(MeterAddress("ELS", "12345678", 0x33, 0x03), RECORDS, access_number=0x75,
                         security=SecurityMode.MODE_7, key=h(MODE7["key"]), message_counter=0xAB3, crc=None)
    assert frame == h(MODE7["frame"])


@pytest.mark.parametrize("bit", range(64))
def test_mode7_vector_flipped_mac_bit_refused(bit):
    raw = bytearray(h(MODE7["frame"]))
    raw[22 + bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(MacError):
        decrypt_frame(decode_wmbus(bytes(raw)), h(MODE7["key"]))


def test_dsmr4_transfer_key_vector():
    assert kt.wrap_dsmr4(h(DSMR4["master_key"]), h(DSMR4["new_key"])) == h(DSMR4["wrapped"])
    assert kt.unwrap_dsmr4(h(DSMR4["master_key"]), h(DSMR4["wrapped"])) == h(DSMR4["new_key"])
    assert kt.wrap_key(kt.KeyTransferStyle.DSMR4, h(DSMR4["master_key"]), h(DSMR4["new_key"])) \
        == h(DSMR4["wrapped"])


def test_smr5_transfer_key_vector():
    # The vector's IV puts M most significant byte first (the Open Smart Grid Platform's
    # older order), so its 8-byte prefix is given as bytes; KCC is IV bytes 8..11.
    iv = h(SMR5["iv"])
    plaintext = h(SMR5["plaintext"])
    counter = int.from_bytes(iv[8:], "big")
    wrapped = kt.wrap_smr5(h(SMR5["master_key"]), plaintext[2:], iv[:8], counter, key_id=plaintext[0])
    assert wrapped == iv[8:] + h(SMR5["ciphertext"]) + h(SMR5["tag8"])
    data = kt.unwrap_smr5(h(SMR5["master_key"]), wrapped, iv[:8])
    assert (data.key_id, data.key, data.key_change_counter) == (plaintext[0], plaintext[2:], counter)
    assert kt.smr5_iv(iv[:8], counter) == iv


def test_smr5_transfer_key_osgp_address_order():
    # Open Smart Grid Platform (Apache-2.0), SetKeyOnGMeterKeyEncryptionAndMacGenerationTest,
    # "Verified example for SMR5 P0 key": FLO 99310014, version 0x50, medium 3, KCC 1,
    # key id 2, IV 14 00 31 99 8F 19 50 03 00000001 (M least significant byte first).
    meter = MeterAddress("FLO", "99310014", 0x50, 0x03)
    assert kt.smr5_iv(meter, 1) == h("140031998F19500300000001")
    wrapped = kt.wrap_smr5(bytes(range(16)), h("11111111222222223333333344444455"), meter, 1, key_id=2)
    assert wrapped == h("00000001" "1928DD82E493E489EED5A235E771C2232523" "C60AC982F22C820A")
    assert kt.unwrap_key(kt.KeyTransferStyle.SMR5, bytes(range(16)), wrapped, address=meter) \
        == h("11111111222222223333333344444455")


def _peer_records(decoded: dict) -> list[tuple[str, str]]:
    return [(r["header_hex"], r["data_hex"]) for r in decoded["records"]]


@pytest.mark.parametrize("crc", [None, "A"])
def test_pymbusparser_decrypts_our_mode5_telegrams(crc):
    key = bytes(range(0x40, 0x50))
    meter = MeterAddress("KAM", "87654321", 0x1B, 0x07)  # a water meter
    records = bytes.fromhex("0413E8030000" "426C5F2C" "02FD170100")
    frame = encode_wmbus(meter, records, access_number=0x99, security=SecurityMode.MODE_5, key=key, crc=crc)
    peer = pymbusparser.parse(frame, key=key)
    identity = peer["meter"]["identity"]
    assert (identity["id"], identity["manufacturer_code"], identity["version"], identity["device_type_code"]) \
        == ("87654321", "KAM", 0x1B, 0x07)
    assert peer["security"]["mode_code"] == 5
    assert peer["security"]["decrypted_payload_hex"] \
        == decrypt_frame(decode_wmbus(frame, crc=crc), key).application_data.hex().upper()
    assert _peer_records(peer) == [("04 13", "E8 03 00 00"), ("42 6C", "5F 2C"), ("02 FD 17", "01 00")]


def test_pymbusparser_reads_the_annex_vector_like_we_do():
    peer = pymbusparser.parse(h(MODE5["frame"]), key=h(MODE5["key"]))
    assert peer["security"]["decrypted_payload_hex"] == MODE5["plaintext"]
    assert peer["records"][0]["value"] == {"kind": "decimal", "value": "28504.27"}
    assert peer["records"][0]["unit"] == "m3"
    # Our format-A representation of the same frame is read the same way by the peer.
    peer_a = pymbusparser.parse(add_crc_format_a(h(MODE5["frame"])), key=h(MODE5["key"]))
    assert _peer_records(peer_a) == _peer_records(peer)
