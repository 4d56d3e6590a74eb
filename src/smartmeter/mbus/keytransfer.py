"""Key-transfer wraps of M-Bus client setup (IC 72) method 8, transfer_key.

The head-end sends the M-Bus device's new key wrapped under that device's master
(default) key; the meter passes the wrapped bytes on to the device. Two styles are in
use and neither the Blue Book nor EN 13757 fixes one, so each M-Bus channel names its
style (`KeyTransferStyle`):

* DSMR 4: AES-128-CBC with IV 0 (one block, no padding) of the 16-byte key. It carries
  no integrity check: a wrong master key unwraps to a wrong key without an error.
* SMR 5: AES-128-GCM, 8-byte tag, no additional data, IV = ID (4, least significant
  byte first) || M (2, least significant byte first, as sent on the bus) || version ||
  medium || key change counter (4, most significant byte first); (the Open Smart Grid
  Platform put M most significant byte first until it changed to this order, so a raw
  8-byte IV prefix is accepted too); the plaintext is key id || key size || key, and the
  transfer_key bytes are KCC (4, big-endian) || ciphertext || tag (30 bytes for a
  16-byte key). Unwrapping checks the tag, the key size and, when asked, that the key
  change counter is above the last one.

All AES comes from `cryptography`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smartmeter.errors import DecodeError, EncodeError, SmartmeterError, TruncatedError
from smartmeter.mbus.wireless import MeterAddress

__all__ = [
    "KeyTransferStyle",
    "KeyTransferError",
    "KeyTransferLengthError",
    "KeyTransferTagError",
    "KeyTransferCounterError",
    "Smr5KeyData",
    "smr5_device_prefix",
    "smr5_iv",
    "wrap_dsmr4",
    "unwrap_dsmr4",
    "wrap_smr5",
    "unwrap_smr5",
    "wrap_key",
    "unwrap_key",
]

KEY_LENGTH = 16
SMR5_TAG_LENGTH = 8
_KCC_LENGTH = 4
SMR5_WRAPPED_LENGTH = _KCC_LENGTH + 2 + KEY_LENGTH + SMR5_TAG_LENGTH


class KeyTransferStyle(enum.Enum):
    """How a channel's transfer_key argument is wrapped."""

    DSMR4 = "dsmr4"
    SMR5 = "smr5"


class KeyTransferError(SmartmeterError, ValueError):
    """Base of the key-transfer failures."""


class KeyTransferLengthError(KeyTransferError, DecodeError):
    """A key or wrapped key of the wrong length (or a key size byte that disagrees)."""


class _TruncatedKeyError(KeyTransferLengthError, TruncatedError):
    """The wrapped key ends early."""


class KeyTransferTagError(KeyTransferError):
    """The SMR 5 GCM tag does not verify (wrong master key, address or altered bytes)."""


class KeyTransferCounterError(KeyTransferError):
    """The SMR 5 key change counter is not above the last one accepted."""


@dataclass(frozen=True)
class Smr5KeyData:
    key_id: int
    key: bytes
    key_change_counter: int


def _key(key: bytes, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LENGTH:
        raise KeyTransferLengthError(what, None, f"must be {KEY_LENGTH} bytes")
    return bytes(key)


def wrap_dsmr4(master_key: bytes, new_key: bytes) -> bytes:
    enc = Cipher(algorithms.AES(_key(master_key, "master key")), modes.CBC(bytes(16))).encryptor()
    return enc.update(_key(new_key, "new key")) + enc.finalize()


def unwrap_dsmr4(master_key: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) != KEY_LENGTH:
        cls = _TruncatedKeyError if len(wrapped) < KEY_LENGTH else KeyTransferLengthError
        raise cls("DSMR 4 wrapped key", len(wrapped), f"needs {KEY_LENGTH} bytes")
    dec = Cipher(algorithms.AES(_key(master_key, "master key")), modes.CBC(bytes(16))).decryptor()
    return dec.update(bytes(wrapped)) + dec.finalize()


def smr5_device_prefix(device: MeterAddress | bytes) -> bytes:
    """The first 8 IV bytes: ID (LSB first) || M (LSB first, as sent) || version || medium.

    Bytes are taken as that prefix verbatim (for a head-end that orders M otherwise).
    """
    if isinstance(device, MeterAddress):
        return device.id_bytes + device.manufacturer_bytes + bytes((device.version, device.device_type))
    if len(device) != 8:
        raise KeyTransferLengthError("SMR 5 IV device prefix", len(device), "needs 8 bytes")
    return bytes(device)


def smr5_iv(device: MeterAddress | bytes, key_change_counter: int) -> bytes:
    """Device prefix || key change counter (4, MSB first)."""
    if not 0 <= key_change_counter <= 0xFFFFFFFF:
        raise EncodeError("the key change counter is 32 bits")
    return smr5_device_prefix(device) + key_change_counter.to_bytes(4, "big")


def wrap_smr5(master_key: bytes, new_key: bytes, device: MeterAddress | bytes, key_change_counter: int,
              key_id: int = 0) -> bytes:
    """KCC || AES-GCM(key id || key size || key) || 8-byte tag."""
    if not 0 <= key_id <= 0xFF:
        raise EncodeError("the key id is one byte")
    plaintext = bytes((key_id, KEY_LENGTH)) + _key(new_key, "new key")
    enc = Cipher(algorithms.AES(_key(master_key, "master key")),
                 modes.GCM(smr5_iv(device, key_change_counter))).encryptor()
    ciphertext = enc.update(plaintext) + enc.finalize()
    return key_change_counter.to_bytes(4, "big") + ciphertext + enc.tag[:SMR5_TAG_LENGTH]


def unwrap_smr5(master_key: bytes, wrapped: bytes, device: MeterAddress | bytes,
                last_key_change_counter: int | None = None) -> Smr5KeyData:
    """Check the tag (and that the counter is above `last_key_change_counter`), then unwrap."""
    wrapped = bytes(wrapped)
    if len(wrapped) != SMR5_WRAPPED_LENGTH:
        cls = _TruncatedKeyError if len(wrapped) < SMR5_WRAPPED_LENGTH else KeyTransferLengthError
        raise cls("SMR 5 wrapped key", len(wrapped), f"needs {SMR5_WRAPPED_LENGTH} bytes")
    counter = int.from_bytes(wrapped[:_KCC_LENGTH], "big")
    ciphertext, tag = wrapped[_KCC_LENGTH:-SMR5_TAG_LENGTH], wrapped[-SMR5_TAG_LENGTH:]
    dec = Cipher(algorithms.AES(_key(master_key, "master key")),
                 modes.GCM(smr5_iv(device, counter), tag, min_tag_length=SMR5_TAG_LENGTH)).decryptor()
    try:
        plaintext = dec.update(ciphertext) + dec.finalize()
    except InvalidTag:
        raise KeyTransferTagError("the SMR 5 key transfer tag does not verify") from None
    if plaintext[1] != KEY_LENGTH:
        raise KeyTransferLengthError("SMR 5 key data", _KCC_LENGTH + 1,
                                     f"key size {plaintext[1]}, expected {KEY_LENGTH}")
    # Checked after the tag: an unauthenticated counter must not tell anything.
    if last_key_change_counter is not None and counter <= last_key_change_counter:
        raise KeyTransferCounterError(f"key change counter {counter} is not above {last_key_change_counter}")
    return Smr5KeyData(plaintext[0], plaintext[2:], counter)


def wrap_key(style: KeyTransferStyle, master_key: bytes, new_key: bytes, *,
             address: MeterAddress | bytes | None = None, key_change_counter: int | None = None,
             key_id: int = 0) -> bytes:
    """The transfer_key argument for a channel of `style` (SMR 5 needs address and counter)."""
    if style is KeyTransferStyle.DSMR4:
        return wrap_dsmr4(master_key, new_key)
    if address is None or key_change_counter is None:
        raise EncodeError("the SMR 5 wrap needs the M-Bus device address and a key change counter")
    return wrap_smr5(master_key, new_key, address, key_change_counter, key_id)


def unwrap_key(style: KeyTransferStyle, master_key: bytes, wrapped: bytes, *,
               address: MeterAddress | bytes | None = None, last_key_change_counter: int | None = None) -> bytes:
    """The new key inside a transfer_key argument (what the M-Bus device does with it)."""
    if style is KeyTransferStyle.DSMR4:
        return unwrap_dsmr4(master_key, wrapped)
    if address is None:
        raise EncodeError("the SMR 5 unwrap needs the M-Bus device address")
    return unwrap_smr5(master_key, wrapped, address, last_key_change_counter).key
