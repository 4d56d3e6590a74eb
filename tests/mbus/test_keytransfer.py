"""M-Bus key-transfer wraps (IC 72 transfer_key): round trips and typed refusals.

The vector checks are in test_wireless_vectors.py; here expectations are computed with
`cryptography` directly from the two styles' rules.
"""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.mbus import keytransfer as kt
from smartmeter.mbus.wireless import MeterAddress

MASTER = bytes(range(0xA0, 0xB0))
NEW = bytes(range(0x30, 0x40))
GAS = MeterAddress("ITW", "20250001", 0x50, 0x03)


def test_dsmr4_is_one_cbc_block_with_iv_zero():
    enc = Cipher(algorithms.AES(MASTER), modes.CBC(bytes(16))).encryptor()
    assert kt.wrap_dsmr4(MASTER, NEW) == enc.update(NEW) + enc.finalize()
    assert kt.unwrap_dsmr4(MASTER, kt.wrap_dsmr4(MASTER, NEW)) == NEW


def test_dsmr4_wrong_master_key_gives_another_key_not_an_error():
    # DSMR 4 carries no integrity: the device cannot tell (documented in the module).
    assert kt.unwrap_dsmr4(bytes(16), kt.wrap_dsmr4(MASTER, NEW)) != NEW


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_dsmr4_bad_lengths(length):
    with pytest.raises(kt.KeyTransferLengthError):
        kt.unwrap_dsmr4(MASTER, bytes(length))
    with pytest.raises(kt.KeyTransferLengthError):
        kt.wrap_dsmr4(MASTER, bytes(length))
    with pytest.raises(kt.KeyTransferLengthError):
        kt.wrap_dsmr4(bytes(length), NEW)


def test_smr5_layout_from_the_rule():
    counter = 0x01020304
    iv = bytes.fromhex("01002520") + bytes.fromhex("9726") + bytes((0x50, 0x03)) + counter.to_bytes(4, "big")
    assert kt.smr5_iv(GAS, counter) == iv  # ITW = 0x2697, sent 97 26
    sealed = AESGCM(MASTER).encrypt(iv, bytes((3, 16)) + NEW, None)
    wrapped = kt.wrap_smr5(MASTER, NEW, GAS, counter, key_id=3)
    assert wrapped == counter.to_bytes(4, "big") + sealed[:18] + sealed[18:26]
    assert len(wrapped) == kt.SMR5_WRAPPED_LENGTH == 30
    data = kt.unwrap_smr5(MASTER, wrapped, GAS)
    assert (data.key_id, data.key, data.key_change_counter) == (3, NEW, counter)


def test_smr5_every_flipped_bit_fails_the_tag():
    wrapped = kt.wrap_smr5(MASTER, NEW, GAS, 7)
    for i in range(len(wrapped) * 8):
        broken = bytearray(wrapped)
        broken[i // 8] ^= 1 << (i % 8)
        with pytest.raises(kt.KeyTransferTagError):
            kt.unwrap_smr5(MASTER, bytes(broken), GAS)


def test_smr5_wrong_master_key_or_device_fails_the_tag():
    wrapped = kt.wrap_smr5(MASTER, NEW, GAS, 7)
    with pytest.raises(kt.KeyTransferTagError):
        kt.unwrap_smr5(bytes(16), wrapped, GAS)
    with pytest.raises(kt.KeyTransferTagError):
        kt.unwrap_smr5(MASTER, wrapped, MeterAddress("ITW", "20250002", 0x50, 0x03))


@pytest.mark.parametrize("length", [0, 4, 29, 31, 46])
def test_smr5_bad_lengths(length):
    with pytest.raises(kt.KeyTransferLengthError) as info:
        kt.unwrap_smr5(MASTER, bytes(length), GAS)
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, TruncatedError) == (length < 30)


def test_smr5_key_size_byte_checked_after_the_tag():
    iv = kt.smr5_iv(GAS, 9)
    sealed = AESGCM(MASTER).encrypt(iv, bytes((0, 32)) + NEW, None)  # claims a 32-byte key
    wrapped = (9).to_bytes(4, "big") + sealed[:18] + sealed[18:26]
    with pytest.raises(kt.KeyTransferLengthError):
        kt.unwrap_smr5(MASTER, wrapped, GAS)


def test_smr5_key_change_counter_must_grow():
    wrapped = kt.wrap_smr5(MASTER, NEW, GAS, 10)
    assert kt.unwrap_smr5(MASTER, wrapped, GAS, last_key_change_counter=9).key == NEW
    for last in (10, 11):
        with pytest.raises(kt.KeyTransferCounterError):
            kt.unwrap_smr5(MASTER, wrapped, GAS, last_key_change_counter=last)


def test_style_dispatch_and_arguments():
    for style in kt.KeyTransferStyle:
        wrapped = kt.wrap_key(style, MASTER, NEW, address=GAS, key_change_counter=1)
        assert kt.unwrap_key(style, MASTER, wrapped, address=GAS) == NEW
    assert len(kt.wrap_key(kt.KeyTransferStyle.DSMR4, MASTER, NEW)) == 16
    with pytest.raises(EncodeError):
        kt.wrap_key(kt.KeyTransferStyle.SMR5, MASTER, NEW, address=GAS)
    with pytest.raises(EncodeError):
        kt.unwrap_key(kt.KeyTransferStyle.SMR5, MASTER, bytes(30))
    with pytest.raises(EncodeError):
        kt.wrap_smr5(MASTER, NEW, GAS, 1 << 32)
    with pytest.raises(EncodeError):
        kt.wrap_smr5(MASTER, NEW, GAS, 1, key_id=256)
    with pytest.raises(kt.KeyTransferLengthError):
        kt.wrap_smr5(MASTER, NEW, b"\x00" * 7, 1)
