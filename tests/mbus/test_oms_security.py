"""OMS security: mode 5 and 7 decryption and refusals, the replay guard, the wireless receiver.

Ciphertexts the tests build themselves are computed here with `cryptography` from the
OMS rules (IV from address and access number; KDF-A and CMAC for mode 7), not with the
module under test.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from smartmeter.errors import DecodeError
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.security import (
    DecryptionCheckError,
    EncryptedLengthError,
    InvalidKeyError,
    MacError,
    OmsReplayError,
    RefusalKind,
    ReceivedTelegram,
    Refusal,
    ReplayGuard,
    SecurityMode,
    UnsupportedSecurityError,
    WirelessReceiver,
    decrypt_frame,
)
from smartmeter.mbus.wireless import MeterAddress, add_crc_format_a, add_crc_format_b, decode_wmbus, encode_wmbus

VECTORS = {v["id"]: v for v in json.loads(
    (Path(__file__).parents[1] / "vectors" / "mbus-vectors.json").read_text())["vectors"]}
MODE5 = VECTORS["oms-annex-n-mode5"]
MODE7 = VECTORS["oms-annex-n-mode7"]
GAS = MeterAddress("ELS", "12345678", 0x33, 0x03)
WATER = MeterAddress("KAM", "00112233", 0x1B, 0x07)
KEY = bytes(range(0x20, 0x30))
RECORDS = bytes.fromhex("0413E8030000")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def mode5_frame(address: MeterAddress, acc: int, plaintext: bytes, blocks: int, key: bytes = KEY,
                trailer: bytes = b"") -> bytes:
    """A CRC-free mode-5 frame built from the OMS rule by hand."""
    encrypted = cbc(key, address.to_bytes() + bytes((acc,)) * 8, plaintext)
    cf = (5 << 8) | (blocks << 4)
    body = bytes((0x44,)) + address.to_bytes() + bytes((0x7A, acc, 0)) + cf.to_bytes(2, "little") + encrypted + trailer
    return bytes((len(body),)) + body


# -- mode 5 ------------------------------------------------------------------------------

def test_mode5_wrong_key_refused():
    with pytest.raises(DecryptionCheckError):
        decrypt_frame(decode_wmbus(h(MODE5["frame"])), bytes(16))


def test_mode5_hand_built_frame_and_unencrypted_trailer():
    plaintext = b"\x2F\x2F" + RECORDS + b"\x2F" * 8
    frame = decode_wmbus(mode5_frame(WATER, 0x31, plaintext, 1, trailer=b"\x02\xFD\x17\x00\x00"))
    telegram = decrypt_frame(frame, KEY)
    # only the encrypted part is application data; the clear trailer is kept apart
    assert telegram.application_data == plaintext
    assert telegram.clear_tail == b"\x02\xFD\x17\x00\x00"
    assert telegram.counter == 0x31


@pytest.mark.parametrize("blocks", [2, 3, 15])
def test_mode5_encrypted_blocks_beyond_payload(blocks):
    frame = decode_wmbus(mode5_frame(WATER, 1, b"\x2F\x2F" + RECORDS + b"\x2F" * 8, 1))
    raw = bytearray(frame.raw)
    raw[13] = (raw[13] & 0x0F) | (blocks << 4)  # CF low byte: N in bits 4-7
    with pytest.raises(EncryptedLengthError):
        decrypt_frame(decode_wmbus(bytes(raw)), KEY)


def test_mode5_zero_encrypted_blocks_refused():
    body = bytes((0x44,)) + WATER.to_bytes() + bytes((0x7A, 1, 0, 0x00, 0x05)) + b"\x2F\x2F" + RECORDS
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(decode_wmbus(bytes((len(body),)) + body), KEY)


def test_mode5_partial_block_refused():
    raw = mode5_frame(WATER, 1, b"\x2F\x2F" + RECORDS + b"\x2F" * 8, 1)
    raw = bytes((raw[0] - 3,)) + raw[1:-3]
    with pytest.raises(EncryptedLengthError):
        decrypt_frame(decode_wmbus(raw), KEY)


def test_bad_key_length_and_unknown_mode():
    with pytest.raises(InvalidKeyError):
        decrypt_frame(decode_wmbus(h(MODE5["frame"])), bytes(15))
    raw = bytearray(h(MODE5["frame"]))
    raw[14] = (raw[14] & 0xE0) | 13  # mode 13 (TLS) is not handled here
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(decode_wmbus(bytes(raw)), h(MODE5["key"]))


# -- mode 7 ------------------------------------------------------------------------------

def mode7_frame(counter: int, key: bytes = KEY, mac_override: bytes | None = None) -> bytes:
    """A CRC-free mode-7 frame from the OMS rules (KDF-A, CBC IV 0, CMAC over MCL||MC||TPL)."""
    ident = WATER.id_bytes
    tail = counter.to_bytes(4, "little") + ident + b"\x07" * 7
    k_enc, k_mac = cmac(key, b"\x00" + tail), cmac(key, b"\x01" + tail)
    plaintext = b"\x2F\x2F" + RECORDS + b"\x2F" * 8
    tpl = bytes((0x7A, 9, 0)) + ((7 << 8) | (1 << 4)).to_bytes(2, "little") + b"\x10" + cbc(k_enc, bytes(16), plaintext)
    mac = cmac(k_mac, b"\x25" + counter.to_bytes(4, "little") + tpl)[:8] if mac_override is None else mac_override
    afl = (0x2C00).to_bytes(2, "little") + b"\x25" + counter.to_bytes(4, "little") + mac
    body = bytes((0x44,)) + WATER.to_bytes() + bytes((0x8C, 0x20, 9, 0x90, len(afl))) + afl + tpl
    return bytes((len(body),)) + body


def test_mode7_hand_built_frame_decrypts():
    telegram = decrypt_frame(decode_wmbus(mode7_frame(1000)), KEY)
    assert telegram.mode is SecurityMode.MODE_7 and telegram.counter == 1000
    assert telegram.application_data == b"\x2F\x2F" + RECORDS + b"\x2F" * 8


def test_mode7_any_flipped_bit_after_the_afl_mac_is_refused():
    raw = mode7_frame(5)
    for i in range(30, len(raw)):  # the whole TPL and ciphertext
        broken = bytearray(raw)
        broken[i] ^= 0x04
        try:
            frame = decode_wmbus(bytes(broken))
        except DecodeError:  # a flipped CF can make the header malformed
            continue
        with pytest.raises((MacError, UnsupportedSecurityError, EncryptedLengthError)):
            decrypt_frame(frame, KEY)


@pytest.mark.parametrize("index", [14, 17])  # AFL.L, MCL (authentication type = MAC length)
def test_mode7_any_flipped_bit_of_the_afl_length_and_mcl_is_refused(index):
    raw = mode7_frame(5)
    assert raw[13] == 0x90 and raw[17] == 0x25  # the AFL CI; MCL: counter present, AT 5
    for bit in range(8):
        broken = bytearray(raw)
        broken[index] ^= 1 << bit
        try:
            frame = decode_wmbus(bytes(broken))
        except DecodeError:  # an AFL length or type that disagrees with the fields
            continue
        with pytest.raises((MacError, UnsupportedSecurityError, EncryptedLengthError)):
            decrypt_frame(frame, KEY)


def test_mode7_flipped_fcl_bits_never_change_what_is_accepted():
    """The FCL is outside the MAC (OMS): a flip may only be refused or change nothing."""
    raw = mode7_frame(5)
    genuine = decrypt_frame(decode_wmbus(raw), KEY)
    for index in (15, 16):
        for bit in range(8):
            broken = bytearray(raw)
            broken[index] ^= 1 << bit
            try:
                telegram = decrypt_frame(decode_wmbus(bytes(broken)), KEY)
            except (DecodeError, MacError, UnsupportedSecurityError):
                continue
            assert (telegram.application_data, telegram.counter) == (genuine.application_data, 5)


@pytest.mark.parametrize("auth_type, mac_length", [(3, 2), (4, 4)])
def test_mode7_mac_truncated_by_rewriting_the_mcl_is_refused(auth_type, mac_length):
    """A forger who rewrites AT 5 to a shorter type and cuts the genuine MAC to its prefix
    (a valid truncated CMAC) must not get the frame accepted: the receiver requires AT 5."""
    raw = mode7_frame(5)
    afl_length, mcl_at, mac_at = 14, 17, 22
    shortened = bytearray(raw[:mac_at + mac_length] + raw[mac_at + 8:])
    shortened[afl_length] -= 8 - mac_length
    shortened[mcl_at] = (raw[mcl_at] & 0xF0) | auth_type
    shortened[0] = len(shortened) - 1
    frame = decode_wmbus(bytes(shortened))
    assert frame.afl.mac == raw[mac_at:mac_at + mac_length] and frame.afl.auth_type == auth_type
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(frame, KEY)
    rx = WirelessReceiver(crc=None)
    rx.bind(WATER, KEY, 7)
    assert rx.receive(bytes(shortened), 0.0).kind is RefusalKind.UNSUPPORTED
    assert isinstance(rx.receive(raw, 1.0), ReceivedTelegram)  # the genuine frame still is


def test_mode7_counter_is_authenticated():
    broken = bytearray(mode7_frame(5))
    broken[18] ^= 0x01  # AFL message counter, low byte
    with pytest.raises(MacError):
        decrypt_frame(decode_wmbus(bytes(broken)), KEY)


def test_mode7_wrong_key_is_a_mac_error():
    with pytest.raises(MacError):
        decrypt_frame(decode_wmbus(mode7_frame(5)), bytes(16))


def test_mode7_without_afl_refused():
    vector = decode_wmbus(h(MODE7["frame"]))
    tpl = vector.tpl_bytes
    body = bytes((0x44,)) + vector.link.address_bytes + tpl
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(decode_wmbus(bytes((len(body),)) + body), h(MODE7["key"]))


def test_mode7_fragment_refused():
    raw = bytearray(h(MODE7["frame"]))
    raw[16] |= 0x40  # FCL "more fragments"
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(decode_wmbus(bytes(raw)), h(MODE7["key"]))


# -- replay guard --------------------------------------------------------------------------

def test_replay_guard_strictly_increasing():
    guard = ReplayGuard()
    guard.accept(b"m1", 10)
    for stale in (10, 9, 0):
        with pytest.raises(OmsReplayError):
            guard.accept(b"m1", stale)
    guard.accept(b"m1", 11)
    guard.accept(b"m2", 3)  # another meter has its own counter
    assert guard.last(b"m1") == 11 and guard.last(b"m2") == 3


def test_replay_guard_access_number_wraps():
    guard = ReplayGuard()
    guard.accept(b"m", 250, 256)
    guard.accept(b"m", 3, 256)  # 250 -> 3 is 9 steps ahead
    with pytest.raises(OmsReplayError):
        guard.accept(b"m", 250, 256)  # 247 steps ahead is a step back
    with pytest.raises(OmsReplayError):
        guard.accept(b"m", 3, 256)
    guard.accept(b"m", 3 + 16, 256)  # the default window: 16 ahead


def test_replay_guard_access_number_window():
    guard = ReplayGuard(window=4)
    guard.accept(b"m", 10, 256)
    for far in (15, 100, 137, 9):  # 5, 90, 127 ahead and one back
        with pytest.raises(OmsReplayError):
            guard.accept(b"m", far, 256)
    guard.accept(b"m", 14, 256)
    with pytest.raises(ValueError):
        ReplayGuard(window=128)


def test_replay_guard_is_bounded_lru():
    guard = ReplayGuard(capacity=3)
    for n, meter in enumerate((b"a", b"b", b"c")):
        guard.accept(meter, 100 + n)
    guard.accept(b"a", 200)  # a is now the most recently used
    guard.accept(b"d", 1)  # evicts b, the least recently used
    assert len(guard) == 3
    assert guard.last(b"b") is None and guard.last(b"a") == 200
    with pytest.raises(OmsReplayError):
        guard.accept(b"c", 102)


# -- receiver --------------------------------------------------------------------------------

def _receiver(**kwargs) -> WirelessReceiver:
    rx = WirelessReceiver(**kwargs)
    rx.bind(GAS, h(MODE5["key"]), SecurityMode.MODE_5)
    rx.bind(WATER, KEY, SecurityMode.MODE_7)
    return rx


def test_receiver_accepts_vector_then_refuses_its_replay():
    rx = _receiver()
    frame = add_crc_format_a(h(MODE5["frame"]))
    got = rx.receive(frame, 0.0)
    assert isinstance(got, ReceivedTelegram)
    assert got.address == GAS and got.mode is SecurityMode.MODE_5 and got.counter == 0x2A
    assert got.application_data == h(MODE5["plaintext"])
    volume = parse_telegram(*got.user_data).records[0]
    assert (volume.quantity, volume.raw_value, volume.exponent) == ("Volume", 2850427, -2)
    again = rx.receive(frame, 1.0)
    assert isinstance(again, Refusal) and again.kind is RefusalKind.REPLAY
    assert rx.accepted == 1 and rx.refusals[RefusalKind.REPLAY] == 1


def test_receiver_mode7_counter_must_increase():
    rx = _receiver(crc=None)
    assert isinstance(rx.receive(mode7_frame(50), 0.0), ReceivedTelegram)
    assert rx.receive(mode7_frame(50), 1.0).kind is RefusalKind.REPLAY
    assert rx.receive(mode7_frame(49), 2.0).kind is RefusalKind.REPLAY
    assert isinstance(rx.receive(mode7_frame(51), 3.0), ReceivedTelegram)
    # a forged MAC never reaches (or poisons) the replay table
    assert rx.receive(mode7_frame(1000, mac_override=bytes(8)), 4.0).kind is RefusalKind.BAD_MAC
    assert isinstance(rx.receive(mode7_frame(52), 5.0), ReceivedTelegram)


def test_receiver_refusal_kinds_are_counted():
    rx = _receiver()
    vector = add_crc_format_a(h(MODE5["frame"]))
    crc_broken = bytearray(vector)
    crc_broken[20] ^= 1
    stranger = add_crc_format_a(encode_wmbus(MeterAddress("ABC", "99999999", 1, 7), RECORDS, access_number=1,
                                             security=5, key=KEY, crc=None))
    wrong_key = add_crc_format_a(encode_wmbus(GAS, RECORDS, access_number=0x40, security=5, key=bytes(16), crc=None))
    wrong_mode = add_crc_format_a(encode_wmbus(GAS, RECORDS, access_number=0x41, crc=None))
    too_many_blocks = bytearray(h(MODE5["frame"]))
    too_many_blocks[13] = 0x30 | (too_many_blocks[13] & 0x0F)
    cases = [
        (bytes(crc_broken), RefusalKind.CRC),
        (b"\x05\x44\x00", RefusalKind.MALFORMED),
        (stranger, RefusalKind.UNBOUND),
        (wrong_key, RefusalKind.WRONG_KEY),
        (wrong_mode, RefusalKind.WRONG_MODE),
        (add_crc_format_a(bytes(too_many_blocks)), RefusalKind.ENCRYPTED_LENGTH),
        (add_crc_format_a(mode7_frame(7, mac_override=bytes(8))), RefusalKind.BAD_MAC),
        (bytes(400), RefusalKind.TOO_LONG),
    ]
    for n, (frame, kind) in enumerate(cases):
        got = rx.receive(frame, float(n))
        assert isinstance(got, Refusal) and got.kind is kind, (kind, got)
    assert rx.accepted == 0
    assert all(rx.refusals[kind] == 1 for _, kind in cases)
    assert rx.refusals[RefusalKind.REPLAY] == rx.refusals[RefusalKind.RATE_LIMITED] == 0


def test_receiver_format_b():
    rx = _receiver(crc="B")
    frame = add_crc_format_b(encode_wmbus(WATER, RECORDS, access_number=9, security=7, key=KEY,
                                          message_counter=3, crc=None))
    assert isinstance(rx.receive(frame, 0.0), ReceivedTelegram)


def test_receiver_rate_limit_and_queue_bound():
    rx = _receiver(crc=None, max_frames_per_second=10, burst=5, queue_length=4)
    frames = [encode_wmbus(WATER, RECORDS, access_number=n, security=7, key=KEY, message_counter=n, crc=None)
              for n in range(1, 40)]
    results = [rx.receive(f, 100.0) for f in frames[:8]]  # 8 frames at one instant, a 5-deep bucket
    assert [isinstance(r, ReceivedTelegram) for r in results] == [True] * 5 + [False] * 3
    assert all(r.kind is RefusalKind.RATE_LIMITED for r in results[5:])
    # 0.3 s later three tokens have come back (10 per second)
    assert isinstance(rx.receive(frames[8], 100.3), ReceivedTelegram)
    # the queue holds 4; the fifth offer is refused and counted
    assert [rx.offer(f, 200.0) for f in frames[10:15]] == [True] * 4 + [False]
    drained = rx.drain()
    assert len(drained) == 4 and all(isinstance(r, ReceivedTelegram) for r in drained)
    assert rx.refusals[RefusalKind.RATE_LIMITED] == 4
    assert rx.drain() == []


def test_receiver_binding_limit_and_rebind_with_a_new_key_resets_counter():
    rx = WirelessReceiver(crc=None, max_bindings=2)
    rx.bind(GAS, KEY, 5)
    rx.bind(WATER, KEY, 7)
    with pytest.raises(ValueError):
        rx.bind(MeterAddress("ABC", "00000001", 1, 7), KEY, 5)
    assert isinstance(rx.receive(mode7_frame(10), 0.0), ReceivedTelegram)
    rx.bind(WATER, KEY, 7)  # the same key again: the counter stays
    assert rx.receive(mode7_frame(10), 0.5).kind is RefusalKind.REPLAY
    new_key = bytes(range(0x40, 0x50))
    rx.bind(WATER, new_key, 7)  # a key exchange starts a new counter sequence
    assert isinstance(rx.receive(mode7_frame(1, key=new_key), 1.0), ReceivedTelegram)
    rx.bind(WATER, KEY, 7)
    rx.unbind(WATER)
    assert rx.receive(mode7_frame(2), 2.0).kind is RefusalKind.UNBOUND
    with pytest.raises(InvalidKeyError):
        rx.bind(WATER, bytes(8), 7)
