"""OMS security for wireless M-Bus telegrams (OMS Vol. 2, security modes 5 and 7), sans-io.

* mode 5: AES-128-CBC over the first N 16-byte blocks of the application data (N from the
  TPL configuration field), IV = M (2) || A (6) || access number x 8;
* mode 7: keys derived per message with AES-CMAC (KDF-A), AES-128-CBC with IV 0 under
  Kenc, the AFL MAC (AES-CMAC under Kmac, truncated to the length the AFL.MCL names) over
  MCL || KI || MC || ML (those present) || the TPL from its CI to the end.

A decrypted payload must start with the 0x2F2F filler the sender puts in front of the
records; without it the key is wrong (mode 5 has no other check). `ReplayGuard` keeps the
last accepted counter per meter, `WirelessReceiver` ties decoding, decryption,
authentication and replay checking into the one call the meter makes per received frame.

All AES and CMAC come from the `cryptography` package.
"""
from __future__ import annotations

import enum
import hmac
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from smartmeter.errors import DecodeError, EncodeError, SmartmeterError
from smartmeter.mbus.wireless import (
    CrcFormat,
    MeterAddress,
    SecurityMode,
    WirelessCrcError,
    WirelessFrame,
    decode_wmbus,
)

__all__ = [
    "SecurityMode",
    "OmsSecurityError",
    "InvalidKeyError",
    "EncryptedLengthError",
    "UnsupportedSecurityError",
    "DecryptionCheckError",
    "MacError",
    "OmsReplayError",
    "FILLER",
    "pad_plaintext",
    "mode5_iv",
    "encrypt_mode5",
    "decrypt_mode5",
    "derive_mode7_keys",
    "encrypt_mode7",
    "decrypt_mode7",
    "afl_mac",
    "afl_mac_input",
    "DecryptedTelegram",
    "decrypt_frame",
    "ReplayGuard",
    "RefusalKind",
    "Refusal",
    "ReceivedTelegram",
    "Binding",
    "WirelessReceiver",
]

FILLER = 0x2F
_BLOCK = 16
_MAX_ENCRYPTED_BLOCKS = 15  # the configuration field's 4-bit N


class OmsSecurityError(SmartmeterError, ValueError):
    """Base of the OMS security failures."""


class InvalidKeyError(OmsSecurityError):
    """A key is not 16 bytes."""


class EncryptedLengthError(OmsSecurityError, DecodeError):
    """The configuration field names more encrypted blocks than the payload holds."""


class UnsupportedSecurityError(OmsSecurityError, DecodeError):
    """A security mode or layer combination this receiver does not accept (unknown mode,
    mode 7 without the AFL counter and MAC, a fragmented telegram, no encrypted block)."""


class DecryptionCheckError(OmsSecurityError):
    """The decrypted payload does not start with 0x2F2F: the key is wrong (or the data)."""


class MacError(OmsSecurityError):
    """The AFL MAC does not verify."""


class OmsReplayError(OmsSecurityError):
    """A counter (mode 7 message counter, mode 5 access number) is not newer than the last."""

    def __init__(self, counter: int, last_accepted: int) -> None:
        self.counter = counter
        self.last_accepted = last_accepted
        super().__init__(f"counter {counter} is not newer than the last accepted {last_accepted}")


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
        raise InvalidKeyError("an OMS key is 16 bytes (AES-128)")
    return bytes(key)


def _cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(_check_key(key)), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(_check_key(key)))
    mac.update(data)
    return mac.finalize()


def pad_plaintext(records: bytes) -> bytes:
    """0x2F2F, the records, then 0x2F filler up to whole 16-byte blocks."""
    data = b"\x2F\x2F" + bytes(records)
    data += bytes((FILLER,)) * (-len(data) % _BLOCK)
    if len(data) > _MAX_ENCRYPTED_BLOCKS * _BLOCK:
        raise EncodeError(f"{len(records)} bytes of records exceed the 15 blocks one telegram encrypts")
    return data


def mode5_iv(address_bytes: bytes, access_number: int) -> bytes:
    """M (2) || A (ID 4, version, device type) || access number repeated 8 times."""
    if len(address_bytes) != 8:
        raise EncodeError("the mode 5 IV needs the 8-byte M || A")
    return bytes(address_bytes) + bytes((access_number & 0xFF,)) * 8


def encrypt_mode5(key: bytes, address_bytes: bytes, access_number: int, plaintext: bytes) -> bytes:
    if len(plaintext) % _BLOCK:
        raise EncodeError("mode 5 encrypts whole 16-byte blocks (pad_plaintext pads)")
    return _cbc(key, mode5_iv(address_bytes, access_number), plaintext, True)


def decrypt_mode5(key: bytes, address_bytes: bytes, access_number: int, ciphertext: bytes) -> bytes:
    if len(ciphertext) % _BLOCK:
        raise EncryptedLengthError("mode 5 ciphertext", len(ciphertext), "not whole blocks")
    return _cbc(key, mode5_iv(address_bytes, access_number), ciphertext, False)


def derive_mode7_keys(key: bytes, message_counter: int, id_bytes: bytes) -> tuple[bytes, bytes]:
    """KDF-A from meter to receiver: (Kenc, Kmac) = CMAC(K, D || MC || ID || 0x07 x 7), D = 0, 1."""
    if len(id_bytes) != 4 or not 0 <= message_counter <= 0xFFFFFFFF:
        raise EncodeError("KDF-A needs the 4 ID bytes and a 32-bit message counter")
    tail = message_counter.to_bytes(4, "little") + bytes(id_bytes) + b"\x07" * 7
    return _cmac(key, b"\x00" + tail), _cmac(key, b"\x01" + tail)


def encrypt_mode7(key: bytes, message_counter: int, id_bytes: bytes, plaintext: bytes) -> bytes:
    if len(plaintext) % _BLOCK:
        raise EncodeError("mode 7 encrypts whole 16-byte blocks (pad_plaintext pads)")
    k_enc, _ = derive_mode7_keys(key, message_counter, id_bytes)
    return _cbc(k_enc, bytes(_BLOCK), plaintext, True)


def decrypt_mode7(k_enc: bytes, ciphertext: bytes) -> bytes:
    if len(ciphertext) % _BLOCK:
        raise EncryptedLengthError("mode 7 ciphertext", len(ciphertext), "not whole blocks")
    return _cbc(k_enc, bytes(_BLOCK), ciphertext, False)


def afl_mac(k_mac: bytes, data: bytes, length: int = 8) -> bytes:
    """The first `length` bytes of AES-CMAC(Kmac, data)."""
    return _cmac(k_mac, data)[:length]


def afl_mac_input(frame: WirelessFrame) -> bytes:
    """MCL || KI || MC || ML (the ones the AFL carries) || TPL from its CI to the end."""
    afl = frame.afl
    if afl is None or afl.message_control is None:
        raise UnsupportedSecurityError("AFL", None, "no message control field to authenticate")
    out = bytes((afl.message_control,))
    if afl.key_info is not None:
        out += afl.key_info.to_bytes(2, "little")
    if afl.message_counter is not None:
        out += afl.message_counter.to_bytes(4, "little")
    if afl.message_length is not None:
        out += afl.message_length.to_bytes(2, "little")
    return out + frame.tpl_bytes


@dataclass(frozen=True)
class DecryptedTelegram:
    """A telegram whose encrypted blocks were decrypted (and, in mode 7, authenticated)."""

    frame: WirelessFrame
    mode: SecurityMode
    application_data: bytes  # decrypted blocks then the unencrypted rest, 0x2F2F included
    counter: int | None  # mode 7: AFL message counter; mode 5 and 0: TPL access number

    @property
    def ci(self) -> int:
        return self.frame.ci

    @property
    def user_data(self) -> tuple[int, bytes]:
        """(CI, bytes after the CI) in the clear, for `application.parse_telegram`."""
        return _user_data(self.frame, self.application_data)


def _user_data(frame: WirelessFrame, application_data: bytes) -> tuple[int, bytes]:
    tpl = frame.tpl
    if tpl is None:
        return frame.ci, application_data
    # The TPL header after CI without the mode-7 extension byte: EN 13757-3's short
    # (4 bytes) or long (12 bytes) header, which the wired application layer reads too.
    size = {0x7A: 4, 0x72: 12}.get(tpl.ci, 0)
    start = frame.tpl_offset + 1
    return tpl.ci, frame.raw[start:start + size] + application_data


def _split_encrypted(frame: WirelessFrame, mode: int) -> tuple[bytes, bytes]:
    config = frame.tpl.configuration  # type: ignore[union-attr]
    blocks = config.encrypted_blocks  # type: ignore[union-attr]
    if mode == 5 and blocks == 0:
        # Accepting it would let anyone send clear data under a mode-5 binding.
        raise UnsupportedSecurityError("TPL configuration field", None, "mode 5 with no encrypted block")
    size = blocks * _BLOCK
    if size > len(frame.payload):
        raise EncryptedLengthError("TPL configuration field", None,
                                   f"{blocks} encrypted blocks but only {len(frame.payload)} payload bytes")
    return frame.payload[:size], frame.payload[size:]


def _check_filler(plain: bytes) -> None:
    if plain and plain[:2] != b"\x2F\x2F":
        raise DecryptionCheckError("the decrypted data does not start with 0x2F2F (wrong key?)")


def decrypt_frame(frame: WirelessFrame, key: bytes | None) -> DecryptedTelegram:
    """Decrypt and authenticate the TPL payload of `frame` as its configuration field says.

    Raises `EncryptedLengthError`, `UnsupportedSecurityError`, `MacError` (mode 7, checked
    before anything is decrypted) or `DecryptionCheckError` (no 0x2F2F after decryption).
    """
    tpl = frame.tpl
    if tpl is None or tpl.configuration is None:
        if frame.afl is not None and frame.afl.mac is not None:
            raise UnsupportedSecurityError("frame", None, "an AFL MAC without a TPL configuration field")
        return DecryptedTelegram(frame, SecurityMode.NONE, frame.payload, None)
    mode = tpl.configuration.mode
    if frame.afl is not None and frame.afl.more_fragments:
        raise UnsupportedSecurityError("AFL", None, "fragmented telegrams are not reassembled")
    if mode == 0:
        return DecryptedTelegram(frame, SecurityMode.NONE, frame.payload, tpl.access_number)
    if key is None:
        raise InvalidKeyError(f"mode {mode} needs a key")
    if mode == 5:
        encrypted, rest = _split_encrypted(frame, 5)
        plain = decrypt_mode5(key, frame.address_bytes, tpl.access_number or 0, encrypted)
        _check_filler(plain)
        return DecryptedTelegram(frame, SecurityMode.MODE_5, plain + rest, tpl.access_number)
    if mode == 7:
        afl = frame.afl
        if afl is None or afl.mac is None or afl.message_counter is None:
            raise UnsupportedSecurityError("frame", None, "mode 7 needs the AFL message counter and MAC")
        if tpl.configuration.kdf_selection != 1:
            raise UnsupportedSecurityError("configuration field extension", None,
                                           f"KDF {tpl.configuration.kdf_selection} (only KDF-A, 1)")
        k_enc, k_mac = derive_mode7_keys(key, afl.message_counter, frame.address.id_bytes)
        expected = afl_mac(k_mac, afl_mac_input(frame), len(afl.mac))
        if not hmac.compare_digest(expected, afl.mac):
            raise MacError("the AFL MAC does not verify")
        encrypted, rest = _split_encrypted(frame, 7)
        plain = decrypt_mode7(k_enc, encrypted)
        _check_filler(plain)
        return DecryptedTelegram(frame, SecurityMode.MODE_7, plain + rest, afl.message_counter)
    raise UnsupportedSecurityError("TPL configuration field", None, f"security mode {mode}")


class ReplayGuard:
    """Last accepted counter per meter (keyed by its 8-byte M || A), bounded as an LRU table.

    Mode 7 message counters (32 bits) must strictly increase. Mode 5 only has the 8-bit
    access number, which wraps: a value is newer when it is 1..127 steps ahead of the last
    one (serial-number arithmetic), so a replay of any of the last 128 telegrams is refused.

    At most `capacity` meters are remembered; the least recently accepted one is forgotten
    first. A forgotten meter's next counter is accepted as a first one, so `capacity` must
    cover every meter whose replays matter: `WirelessReceiver` binds at most as many
    meters as its guard holds, and only authenticated telegrams reach the guard.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._last: OrderedDict[tuple[bytes, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last(self, meter: bytes, modulus: int | None = None) -> int | None:
        return self._last.get((bytes(meter), modulus or 0))

    def check(self, meter: bytes, counter: int, modulus: int | None = None) -> None:
        """Raise `OmsReplayError` unless `counter` is newer than the meter's last accepted."""
        last = self._last.get((bytes(meter), modulus or 0))
        if last is None:
            return
        if modulus is None:
            newer = counter > last
        else:
            newer = 0 < (counter - last) % modulus < modulus // 2
        if not newer:
            raise OmsReplayError(counter, last)

    def accept(self, meter: bytes, counter: int, modulus: int | None = None) -> None:
        """Check, then record `counter` as the meter's last accepted one."""
        self.check(meter, counter, modulus)
        slot = (bytes(meter), modulus or 0)
        self._last[slot] = counter
        self._last.move_to_end(slot)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)

    def forget(self, meter: bytes) -> None:
        for slot in [s for s in self._last if s[0] == bytes(meter)]:
            del self._last[slot]


class RefusalKind(enum.Enum):
    """Why `WirelessReceiver.receive` refused a frame (one counter each)."""

    RATE_LIMITED = "rate limited"  # more than the documented frames per second
    TOO_LONG = "too long"  # longer than any wireless M-Bus frame
    CRC = "CRC error"
    MALFORMED = "malformed"
    UNBOUND = "unbound address"
    WRONG_MODE = "wrong security mode"  # not the mode the binding asks for
    UNSUPPORTED = "unsupported security"
    ENCRYPTED_LENGTH = "encrypted blocks exceed payload"
    WRONG_KEY = "wrong key"  # 0x2F2F missing after decryption
    BAD_MAC = "bad MAC"
    REPLAY = "replay"


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    detail: str
    address: MeterAddress | None = None


@dataclass(frozen=True)
class ReceivedTelegram:
    """A frame from a bound meter, decrypted, authenticated (mode 7) and not a replay."""

    address: MeterAddress
    mode: SecurityMode
    ci: int
    application_data: bytes
    counter: int | None
    received_at: float
    frame: WirelessFrame

    @property
    def user_data(self) -> tuple[int, bytes]:
        """(CI, bytes after the CI) in the clear, for `application.parse_telegram`."""
        return _user_data(self.frame, self.application_data)


@dataclass(frozen=True)
class Binding:
    """A meter the receiver accepts: its address (manufacturer, ID, version, type), key, mode."""

    address: MeterAddress
    key: bytes | None
    mode: SecurityMode


class WirelessReceiver:
    """The meter's sans-io receiver of wireless M-Bus frames from bound meters.

    Input contract, enforced here:

    * at most `max_frames_per_second` frames are processed per second (a token bucket
      refilled at that rate, `burst` deep); the excess is refused as RATE_LIMITED before
      any decoding or crypto, so a flood costs one comparison per frame;
    * `offer` queues at most `queue_length` frames (the rest are refused as RATE_LIMITED)
      and `drain` processes them; `receive` processes one frame at once;
    * a frame longer than `MAX_FRAME_BYTES` (a format-A frame with L=255) is refused unread;
    * at most `max_bindings` meters are bound (the replay table holds exactly them).

    Only frames from a bound address, in the bound mode, that decrypt to 0x2F2F (and in
    mode 7 carry a valid MAC) and whose counter is newer than the last accepted one
    are returned as `ReceivedTelegram`; everything else is a `Refusal`, counted per kind
    in `refusals`. A mode-0 binding (no key) still drops repeated access numbers: that
    filters a repeater's duplicates, it authenticates nothing.
    """

    MAX_FRAME_BYTES = 290  # L=255 in format A: 256 data bytes + 17 block CRCs

    def __init__(self, *, crc: CrcFormat | None = "A", max_frames_per_second: float = 20.0,
                 burst: int = 20, queue_length: int = 16, max_bindings: int = 64) -> None:
        self.crc = crc
        self.max_frames_per_second = max_frames_per_second
        self.burst = burst
        self.queue_length = queue_length
        self.max_bindings = max_bindings
        self._bindings: dict[bytes, Binding] = {}
        self._replay = ReplayGuard(capacity=max_bindings)
        self._tokens = float(burst)
        self._last_refill: float | None = None
        self._queue: list[tuple[bytes, float]] = []
        self.refusals: dict[RefusalKind, int] = {kind: 0 for kind in RefusalKind}
        self.accepted = 0

    # -- bindings -----------------------------------------------------------------------
    def bind(self, address: MeterAddress, key: bytes | None, mode: SecurityMode | int) -> None:
        mode = SecurityMode(mode)
        if mode is not SecurityMode.NONE:
            _check_key(key)  # type: ignore[arg-type]
        slot = address.to_bytes()
        if slot not in self._bindings and len(self._bindings) >= self.max_bindings:
            raise ValueError(f"at most {self.max_bindings} meters can be bound")
        if slot in self._bindings:
            self._replay.forget(slot)  # a new key starts a new counter sequence
        self._bindings[slot] = Binding(address, None if key is None else bytes(key), mode)

    def unbind(self, address: MeterAddress) -> None:
        slot = address.to_bytes()
        self._bindings.pop(slot, None)
        self._replay.forget(slot)

    @property
    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    # -- input --------------------------------------------------------------------------
    def offer(self, frame: bytes, now: float) -> bool:
        """Queue a frame for `drain`; False (and counted) when the queue is full."""
        if len(self._queue) >= self.queue_length:
            self.refusals[RefusalKind.RATE_LIMITED] += 1
            return False
        self._queue.append((bytes(frame[:self.MAX_FRAME_BYTES + 1]), now))
        return True

    @property
    def queued(self) -> int:
        return len(self._queue)

    def drain(self) -> list[ReceivedTelegram | Refusal]:
        queued, self._queue = self._queue, []
        return [self.receive(frame, now) for frame, now in queued]

    def _take_token(self, now: float) -> bool:
        if self._last_refill is not None and now > self._last_refill:
            self._tokens = min(float(self.burst),
                               self._tokens + (now - self._last_refill) * self.max_frames_per_second)
        if self._last_refill is None or now > self._last_refill:
            self._last_refill = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refuse(self, kind: RefusalKind, detail: str, address: MeterAddress | None = None) -> Refusal:
        self.refusals[kind] += 1
        return Refusal(kind, detail, address)

    def receive(self, frame: bytes, now: float) -> ReceivedTelegram | Refusal:
        """Decode, check and decrypt one received frame (never raises on frame bytes)."""
        if not self._take_token(now):
            return self._refuse(RefusalKind.RATE_LIMITED, f"over {self.max_frames_per_second} frames/s")
        if len(frame) > self.MAX_FRAME_BYTES:
            return self._refuse(RefusalKind.TOO_LONG, f"{len(frame)} bytes")
        try:
            decoded = decode_wmbus(frame, crc=self.crc)
        except WirelessCrcError as exc:
            return self._refuse(RefusalKind.CRC, str(exc))
        except DecodeError as exc:
            return self._refuse(RefusalKind.MALFORMED, str(exc))
        address = decoded.address
        slot = decoded.address_bytes
        binding = self._bindings.get(slot)
        if binding is None:
            return self._refuse(RefusalKind.UNBOUND, "no binding for this address", address)
        mode = decoded.tpl.configuration.mode if decoded.tpl and decoded.tpl.configuration else 0
        if mode != binding.mode:
            return self._refuse(RefusalKind.WRONG_MODE, f"mode {mode}, bound to {int(binding.mode)}", address)
        try:
            telegram = decrypt_frame(decoded, binding.key)
        except EncryptedLengthError as exc:
            return self._refuse(RefusalKind.ENCRYPTED_LENGTH, str(exc), address)
        except UnsupportedSecurityError as exc:
            return self._refuse(RefusalKind.UNSUPPORTED, str(exc), address)
        except MacError as exc:
            return self._refuse(RefusalKind.BAD_MAC, str(exc), address)
        except DecryptionCheckError as exc:
            return self._refuse(RefusalKind.WRONG_KEY, str(exc), address)
        if telegram.counter is not None:
            modulus = None if telegram.mode is SecurityMode.MODE_7 else 256
            try:
                self._replay.accept(slot, telegram.counter, modulus)
            except OmsReplayError as exc:
                return self._refuse(RefusalKind.REPLAY, str(exc), address)
        self.accepted += 1
        return ReceivedTelegram(address, telegram.mode, telegram.ci, telegram.application_data,
                                telegram.counter, now, decoded)
