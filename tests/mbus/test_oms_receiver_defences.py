"""The wireless receiver's defences against forged and replayed OMS telegrams.

Frames are built here from the OMS rules with `cryptography` (KDF-A, CBC, CMAC; the mode-5
IV from address and access number), not with the module under test, so that frames the
encoder would never produce (a shorter MAC type, no encrypted block, a clear tail) can be
offered too.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.security import (
    OMS_ENCRYPTED_MODES,
    MacError,
    ReceivedTelegram,
    RefusalKind,
    UnsupportedSecurityError,
    WirelessReceiver,
    decrypt_frame,
)
from smartmeter.mbus.wireless import MeterAddress, decode_wmbus

METER = MeterAddress("ELS", "12345678", 0x33, 0x03)
KEY = bytes(range(16))
OTHER_KEY = bytes(range(0x50, 0x60))
VOLUME = bytes.fromhex("0C1427048502")  # 8-digit BCD volume 02850427, 0.01 m3
FORGED_VOLUME = bytes.fromhex("0C1499999999")
MAC_LENGTH = {3: 2, 4: 4, 5: 8, 6: 12, 7: 16, 8: 12}  # OMS Vol. 2 AFL.MCL authentication types


def _cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _padded(records: bytes) -> bytes:
    data = b"\x2F\x2F" + records
    return data + b"\x2F" * (-len(data) % 16)


def mode7(counter: int, records: bytes = VOLUME, *, key: bytes = KEY, encrypt: bool = True,
          auth_type: int = 5, clear_tail: bytes = b"", mac: bytes | None = None) -> bytes:
    """A CRC-free mode-7 frame: ELL, AFL (MCL, MC, MAC of `auth_type`), TPL short header."""
    tail = counter.to_bytes(4, "little") + METER.id_bytes + b"\x07" * 7
    k_enc, k_mac = _cmac(key, b"\x00" + tail), _cmac(key, b"\x01" + tail)
    body = _cbc(k_enc, bytes(16), _padded(records)) if encrypt else records
    blocks = len(body) // 16 if encrypt else 0
    tpl = bytes((0x7A, counter & 0xFF, 0)) + ((7 << 8) | (blocks << 4)).to_bytes(2, "little") + b"\x10"
    tpl += body + clear_tail
    mcl = 0x20 | auth_type
    if mac is None:
        mac = _cmac(k_mac, bytes((mcl,)) + counter.to_bytes(4, "little") + tpl)[:MAC_LENGTH[auth_type]]
    afl = (0x2C00).to_bytes(2, "little") + bytes((mcl,)) + counter.to_bytes(4, "little") + mac
    frame = bytes((0x44,)) + METER.to_bytes() + bytes((0x8C, 0x20, counter & 0xFF, 0x90, len(afl))) + afl + tpl
    return bytes((len(frame),)) + frame


def mode5(access: int, records: bytes = VOLUME, *, key: bytes = KEY, clear_tail: bytes = b"") -> bytes:
    """A CRC-free mode-5 frame, IV = M || A || access number x 8."""
    plain = _padded(records)
    cipher = _cbc(key, METER.to_bytes() + bytes((access,)) * 8, plain)
    config = (5 << 8) | ((len(plain) // 16) << 4)
    frame = (bytes((0x44,)) + METER.to_bytes() + bytes((0x7A, access, 0)) + config.to_bytes(2, "little")
             + cipher + clear_tail)
    return bytes((len(frame),)) + frame


def receiver(mode=7, **options) -> WirelessReceiver:
    rx = WirelessReceiver(crc=None, **options)
    rx.bind(METER, KEY, mode)
    return rx


def volumes(received: ReceivedTelegram) -> list[int]:
    return [r.value for r in parse_telegram(*received.user_data).records]


# -- the MAC type is the binding's, not the sender's --------------------------------------

def test_mode7_without_encrypted_blocks_is_refused_even_with_a_valid_mac():
    frame = mode7(20, FORGED_VOLUME, encrypt=False)
    with pytest.raises(UnsupportedSecurityError):
        decrypt_frame(decode_wmbus(frame), KEY)
    assert receiver().receive(frame, 0.0).kind is RefusalKind.UNSUPPORTED


def test_short_cmac_types_are_refused_and_do_not_move_the_counter():
    rx = receiver()
    for auth_type in (3, 4):  # 2- and 4-byte MACs, correctly computed, counter near the top
        refused = rx.receive(mode7(0xFFFFFFFF, FORGED_VOLUME, auth_type=auth_type), 0.0)
        assert refused.kind is RefusalKind.UNSUPPORTED
    got = rx.receive(mode7(6), 1.0)
    assert isinstance(got, ReceivedTelegram) and got.counter == 6 and volumes(got) == [2850427]


def test_gmac_is_refused_as_unsupported_not_checked_as_a_cmac():
    # the 12 bytes are the truncated CMAC a checker that mistakes AT 8 for a CMAC would want
    frame = decode_wmbus(mode7(9, auth_type=8))
    assert frame.afl.auth_type == 8 and len(frame.afl.mac) == 12
    with pytest.raises(UnsupportedSecurityError) as refused:
        decrypt_frame(frame, KEY)
    assert not isinstance(refused.value, MacError) and "GMAC" in str(refused.value)


def test_a_binding_may_require_a_longer_cmac_and_then_refuses_the_8_byte_one():
    rx = WirelessReceiver(crc=None)
    rx.bind(METER, KEY, 7, auth_type=6)
    assert isinstance(rx.receive(mode7(3, auth_type=6), 0.0), ReceivedTelegram)
    assert rx.receive(mode7(4, auth_type=5), 1.0).kind is RefusalKind.UNSUPPORTED
    with pytest.raises(ValueError):
        rx.bind(METER, KEY, 7, auth_type=3)
    with pytest.raises(ValueError):
        rx.bind(METER, KEY, 7, auth_type=8)


# -- back-off after authentication failures ------------------------------------------------

def test_failed_macs_back_off_exponentially_bounded_and_reset_on_acceptance():
    rx = receiver(failures_before_backoff=3, backoff_initial=10.0, backoff_max=25.0)
    bad = [mode7(100 + n, mac=bytes(8)) for n in range(20)]

    def fail_three(start: float) -> None:
        for n in range(3):
            assert rx.receive(bad.pop(), start + n).kind is RefusalKind.BAD_MAC

    fail_three(0.0)  # the third failure, at t=2, starts a 10 s pause
    assert rx.receive(mode7(1), 11.9).kind is RefusalKind.BACKING_OFF
    fail_three(12.0)  # at t=14 a 20 s pause
    assert rx.receive(mode7(1), 33.9).kind is RefusalKind.BACKING_OFF
    fail_three(34.0)  # at t=36: 40 s, bounded to 25
    assert rx.receive(mode7(1), 60.9).kind is RefusalKind.BACKING_OFF
    assert isinstance(rx.receive(mode7(1), 61.0), ReceivedTelegram)
    fail_three(70.0)  # the acceptance reset the exponent: 10 s again from t=72
    assert rx.receive(mode7(2), 81.9).kind is RefusalKind.BACKING_OFF
    assert isinstance(rx.receive(mode7(2), 82.0), ReceivedTelegram)
    assert rx.refusals[RefusalKind.BACKING_OFF] == 4 and rx.refusals[RefusalKind.BAD_MAC] == 12


def test_mode5_wrong_key_failures_back_off_too_and_other_meters_are_not_affected():
    rx = receiver(5, failures_before_backoff=3, backoff_initial=10.0)
    other = MeterAddress("KAM", "00112233", 0x1B, 0x07)
    rx.bind(other, KEY, 7)
    for n in range(3):
        assert rx.receive(mode5(1 + n, key=OTHER_KEY), float(n)).kind is RefusalKind.WRONG_KEY
    assert rx.receive(mode5(5), 3.0).kind is RefusalKind.BACKING_OFF
    assert rx.receive(mode5(5), 12.0).counter == 5


def test_replayed_genuine_frames_neither_reset_the_failure_streak_nor_count_as_failures():
    rx = receiver(failures_before_backoff=3, backoff_initial=10.0)
    genuine = mode7(50)
    assert isinstance(rx.receive(genuine, 0.0), ReceivedTelegram)
    for n in range(5):  # a stale counter is refused before any crypto
        assert rx.receive(mode7(40, mac=bytes(8)), 1.0 + n).kind is RefusalKind.REPLAY
    assert rx.receive(mode7(60, mac=bytes(8)), 10.0).kind is RefusalKind.BAD_MAC
    assert rx.receive(genuine, 11.0).kind is RefusalKind.REPLAY
    assert rx.receive(mode7(61, mac=bytes(8)), 12.0).kind is RefusalKind.BAD_MAC
    assert rx.receive(genuine, 13.0).kind is RefusalKind.REPLAY
    assert rx.receive(mode7(62, mac=bytes(8)), 14.0).kind is RefusalKind.BAD_MAC
    assert rx.receive(mode7(51), 15.0).kind is RefusalKind.BACKING_OFF


# -- counters survive rebinding with the same key -------------------------------------------

def test_rebinding_the_same_key_in_another_mode_keeps_the_counters():
    rx = receiver(5)
    legit = mode5(10)
    assert isinstance(rx.receive(legit, 0.0), ReceivedTelegram)
    rx.bind(METER, KEY, 7)  # what a mode-following engine did after an unauthenticated frame
    rx.bind(METER, KEY, 5)
    assert rx.receive(legit, 1.0).kind is RefusalKind.REPLAY
    rx.bind(METER, OTHER_KEY, 5)  # a new key: a new counter sequence
    assert isinstance(rx.receive(mode5(3, key=OTHER_KEY), 2.0), ReceivedTelegram)


def test_a_binding_for_both_modes_decides_per_frame_and_never_downgrades():
    rx = receiver(OMS_ENCRYPTED_MODES)
    assert rx.receive(mode7(1, key=OTHER_KEY), 0.0).kind is RefusalKind.BAD_MAC  # a stranger's mode 7
    assert rx.receive(mode5(10), 1.0).counter == 10
    assert rx.receive(mode5(10), 2.0).kind is RefusalKind.REPLAY
    got = rx.receive(mode7(500), 3.0)
    assert isinstance(got, ReceivedTelegram) and got.counter == 500 and volumes(got) == [2850427]
    # mode 7 authenticated: mode 5 (no MAC, 8-bit counter) is refused from now on
    assert rx.receive(mode5(11), 4.0).kind is RefusalKind.WRONG_MODE
    rx.bind(METER, KEY, OMS_ENCRYPTED_MODES)  # the same binding again changes nothing
    assert rx.receive(mode5(12), 5.0).kind is RefusalKind.WRONG_MODE
    assert rx.receive(mode7(500), 6.0).kind is RefusalKind.REPLAY
    with pytest.raises(ValueError):
        rx.bind(METER, KEY, {0, 5})


# -- mode 5: a narrow window and no unprotected records -----------------------------------

def test_mode5_old_captures_far_ahead_are_replays():
    rx = receiver(5)
    captured = mode5(130)  # sent 136 telegrams before the one the receiver has
    assert rx.receive(mode5(10), 0.0).counter == 10
    assert rx.receive(captured, 1.0).kind is RefusalKind.REPLAY
    assert rx.receive(mode5(27), 2.0).kind is RefusalKind.REPLAY  # 17 ahead
    assert rx.receive(mode5(26), 3.0).counter == 26  # 16 ahead: missed 15 telegrams


@pytest.mark.parametrize("build", [lambda tail: mode5(7, clear_tail=tail), lambda tail: mode7(7, clear_tail=tail)])
def test_records_after_the_encrypted_blocks_are_not_application_data(build):
    rx = receiver(OMS_ENCRYPTED_MODES)
    got = rx.receive(build(FORGED_VOLUME), 0.0)
    assert isinstance(got, ReceivedTelegram)
    assert got.application_data == _padded(VOLUME)
    assert got.clear_tail == FORGED_VOLUME
    assert volumes(got) == [2850427]


def test_mode0_duplicates_are_filtered_with_the_wide_window():
    rx = WirelessReceiver(crc=None)
    rx.bind(METER, None, 0)
    clear = [bytes((0x44,)) + METER.to_bytes() + bytes((0x7A, access, 0, 0, 0)) + VOLUME for access in (10, 110)]
    first, far_ahead = (bytes((len(f),)) + f for f in clear)
    assert rx.receive(first, 0.0).counter == 10
    assert rx.receive(first, 1.0).kind is RefusalKind.REPLAY  # a repeater's copy
    assert rx.receive(far_ahead, 2.0).counter == 110  # mode 0 proves nothing: only duplicates go


# -- the replay memory handed to the owner and back (persistence over a restart) ---------------------

def test_replay_state_restored_into_a_new_receiver_refuses_what_the_old_one_took():
    old = receiver(OMS_ENCRYPTED_MODES)
    assert isinstance(old.receive(mode5(40), 0.0), ReceivedTelegram)
    assert isinstance(old.receive(mode7(300), 1.0), ReceivedTelegram)
    last, mode7_seen = old.replay_state(METER)
    assert dict(last) == {0: 300, 256: 40} and mode7_seen

    new = receiver(OMS_ENCRYPTED_MODES)
    new.restore(METER, last, mode7_seen)
    assert new.receive(mode7(300), 2.0).kind is RefusalKind.REPLAY
    assert new.receive(mode5(41), 3.0).kind is RefusalKind.WRONG_MODE  # no downgrade after mode 7
    assert isinstance(new.receive(mode7(301), 4.0), ReceivedTelegram)


def test_restore_keeps_newer_counters_and_refuses_nonsense():
    rx = receiver(5)
    assert isinstance(rx.receive(mode5(50), 0.0), ReceivedTelegram)
    rx.restore(METER, [(256, 10)], False)  # older than what this receiver took since binding
    assert rx.replay_state(METER) == (((256, 50),), False)
    for bad in ([(256, 256)], [(3, 1)], [(0, -1)]):
        with pytest.raises(ValueError):
            rx.restore(METER, bad, False)
    with pytest.raises(ValueError):
        WirelessReceiver(crc=None).restore(METER, [(256, 1)], False)  # not bound
