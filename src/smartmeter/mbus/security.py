"""OMS security for wireless M-Bus telegrams (OMS Vol. 2, security modes 5 and 7), sans-io.

* mode 5: AES-128-CBC over the first N 16-byte blocks of the application data (N from the
  TPL configuration field), IV = M (2) || A (6) || access number x 8;
* mode 7: keys derived per message with AES-CMAC (KDF-A), AES-128-CBC with IV 0 under
  Kenc, the AFL MAC (AES-CMAC under Kmac, truncated to 8 bytes: authentication type 5,
  OMS security profile B) over MCL || KI || MC || ML (those present) || the TPL from its
  CI to the end. The MAC type is the receiver's requirement, never the sender's choice:
  a frame whose AFL.MCL names another (shorter) type is refused, AES-GMAC (AT 8) as
  unsupported.

A decrypted payload must start with the 0x2F2F filler the sender puts in front of the
records; without it the key is wrong (mode 5 has no other check). Only the encrypted
blocks are application data: bytes after the N encrypted blocks are returned apart as
`clear_tail` (in mode 5 nothing protects them; in mode 7 the MAC covers them but they
were readable on air) and are not handed to the application layer.

`ReplayGuard` keeps the last accepted counter per meter, `WirelessReceiver` ties
decoding, decryption, authentication, replay checking and the per-meter back-off after
authentication failures into the one call the meter makes per received frame.

All AES and CMAC come from the `cryptography` package.
"""
from __future__ import annotations

import enum
import hmac
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from smartmeter.errors import DecodeError, EncodeError, SmartmeterError
from smartmeter.mbus.wireless import (
    AUTH_TYPE_CMAC_8,
    AUTH_TYPE_GMAC,
    MAC_LENGTH_BY_AUTH_TYPE,
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
    "check_auth_type",
    "WirelessReceiver",
    "OMS_ENCRYPTED_MODES",
    "MODE5_WINDOW",
]

FILLER = 0x2F
_BLOCK = 16
_MAX_ENCRYPTED_BLOCKS = 15  # the configuration field's 4-bit N
# AFL authentication types a binding may require: AES-CMAC-128 truncated to 8, 12, 16 bytes.
_CMAC_AUTH_TYPES = (5, 6, 7)
# How far ahead of the last accepted one a mode-5 access number may be (see ReplayGuard).
MODE5_WINDOW = 16
# A binding that takes whichever of the two OMS encrypted modes a frame uses (see bind()).
OMS_ENCRYPTED_MODES = frozenset({5, 7})


class OmsSecurityError(SmartmeterError, ValueError):
    """Base of the OMS security failures."""


class InvalidKeyError(OmsSecurityError):
    """A key is not 16 bytes."""


class EncryptedLengthError(OmsSecurityError, DecodeError):
    """The configuration field names more encrypted blocks than the payload holds."""


class UnsupportedSecurityError(OmsSecurityError, DecodeError):
    """A security mode or layer combination this receiver does not accept (unknown mode,
    mode 7 without the AFL counter and MAC or with another MAC type than required, AES-GMAC,
    a fragmented telegram, no encrypted block)."""


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
    application_data: bytes  # mode 5/7: the decrypted blocks only, 0x2F2F included; mode 0: all
    counter: int | None  # mode 7: AFL message counter; mode 5 and 0: TPL access number
    clear_tail: bytes = b""  # mode 5/7: bytes after the encrypted blocks, never application data

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
    if blocks == 0:
        # Accepting it would let anyone send clear data under an encrypted binding (in mode 7
        # too: the MAC then only says who sent it, and a weak or leaked MAC would suffice).
        raise UnsupportedSecurityError("TPL configuration field", None, f"mode {mode} with no encrypted block")
    size = blocks * _BLOCK
    if size > len(frame.payload):
        raise EncryptedLengthError("TPL configuration field", None,
                                   f"{blocks} encrypted blocks but only {len(frame.payload)} payload bytes")
    return frame.payload[:size], frame.payload[size:]


def _check_filler(plain: bytes) -> None:
    if plain and plain[:2] != b"\x2F\x2F":
        raise DecryptionCheckError("the decrypted data does not start with 0x2F2F (wrong key?)")


def check_auth_type(auth_type: int) -> int:
    """`auth_type` if a binding may require it (AES-CMAC with an 8, 12 or 16-byte MAC)."""
    if auth_type not in _CMAC_AUTH_TYPES:
        raise ValueError(f"authentication type {auth_type} is not an AES-CMAC type a receiver requires "
                         f"(one of {_CMAC_AUTH_TYPES})")
    return auth_type


def decrypt_frame(frame: WirelessFrame, key: bytes | None, *,
                  auth_type: int = AUTH_TYPE_CMAC_8) -> DecryptedTelegram:
    """Decrypt and authenticate the TPL payload of `frame` as its configuration field says.

    In mode 7 the AFL must carry exactly the authentication type `auth_type` (default 5:
    an 8-byte AES-CMAC); any other type, shorter or longer, is refused before any crypto.
    Raises `EncryptedLengthError`, `UnsupportedSecurityError`, `MacError` (mode 7, checked
    before anything is decrypted) or `DecryptionCheckError` (no 0x2F2F after decryption).
    """
    check_auth_type(auth_type)
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
        return DecryptedTelegram(frame, SecurityMode.MODE_5, plain, tpl.access_number, rest)
    if mode == 7:
        afl = frame.afl
        if afl is None or afl.mac is None or afl.message_counter is None:
            raise UnsupportedSecurityError("frame", None, "mode 7 needs the AFL message counter and MAC")
        if tpl.configuration.kdf_selection != 1:
            raise UnsupportedSecurityError("configuration field extension", None,
                                           f"KDF {tpl.configuration.kdf_selection} (only KDF-A, 1)")
        if afl.auth_type == AUTH_TYPE_GMAC:
            raise UnsupportedSecurityError("AFL MCL", None, "authentication type 8 (AES-GMAC) is not supported")
        if afl.auth_type != auth_type or len(afl.mac) != MAC_LENGTH_BY_AUTH_TYPE[auth_type]:
            # The sender must not pick a shorter MAC than the receiver requires.
            raise UnsupportedSecurityError("AFL MCL", None,
                                           f"authentication type {afl.auth_type}, required {auth_type}")
        encrypted, rest = _split_encrypted(frame, 7)
        k_enc, k_mac = derive_mode7_keys(key, afl.message_counter, frame.address.id_bytes)
        expected = afl_mac(k_mac, afl_mac_input(frame), MAC_LENGTH_BY_AUTH_TYPE[auth_type])
        if not hmac.compare_digest(expected, afl.mac):
            raise MacError("the AFL MAC does not verify")
        plain = decrypt_mode7(k_enc, encrypted)
        _check_filler(plain)
        return DecryptedTelegram(frame, SecurityMode.MODE_7, plain, afl.message_counter, rest)
    raise UnsupportedSecurityError("TPL configuration field", None, f"security mode {mode}")


class ReplayGuard:
    """Last accepted counter per meter (keyed by its 8-byte M || A), bounded as an LRU table.

    Mode 7 message counters (32 bits) must strictly increase. Mode 5 only has the 8-bit
    access number, which wraps: a value is newer when it is 1..`window` steps ahead of the
    last one (serial-number arithmetic; `window` is `MODE5_WINDOW`, 16, by default). A
    replay of any of the last 256 - `window` telegrams is refused. Residual risk of the
    8-bit number: a telegram captured 256 - k telegrams ago (k = 1..window) looks new
    again, and a meter whose telegrams were all missed for more than `window` sends is
    refused until its access number comes round into the window (at most 256 - window
    telegrams later) or its binding gets a new key. Mode 7 does not have this weakness.

    At most `capacity` meters are remembered; the least recently accepted one is forgotten
    first. A forgotten meter's next counter is accepted as a first one, so `capacity` must
    cover every meter whose replays matter: `WirelessReceiver` binds at most as many
    meters as its guard holds, and only authenticated telegrams reach the guard.
    """

    def __init__(self, capacity: int = 256, window: int = MODE5_WINDOW) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not 1 <= window <= 127:
            raise ValueError("the mode-5 window is 1..127 access numbers")
        self.capacity = capacity
        self.window = window
        self._last: OrderedDict[tuple[bytes, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last(self, meter: bytes, modulus: int | None = None) -> int | None:
        return self._last.get((bytes(meter), modulus or 0))

    def check(self, meter: bytes, counter: int, modulus: int | None = None, window: int | None = None) -> None:
        """Raise `OmsReplayError` unless `counter` is newer than the meter's last accepted
        (with a modulus: 1..`window` ahead, the guard's own window unless given)."""
        last = self._last.get((bytes(meter), modulus or 0))
        if last is None:
            return
        if modulus is None:
            newer = counter > last
        else:
            ahead = self.window if window is None else window
            newer = 0 < (counter - last) % modulus <= min(ahead, modulus // 2 - 1)
        if not newer:
            raise OmsReplayError(counter, last)

    def accept(self, meter: bytes, counter: int, modulus: int | None = None, window: int | None = None) -> None:
        """Check, then record `counter` as the meter's last accepted one."""
        self.check(meter, counter, modulus, window)
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
    BACKING_OFF = "backing off"  # the meter's recent frames failed authentication


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
    clear_tail: bytes = b""  # see DecryptedTelegram: not part of application_data

    @property
    def user_data(self) -> tuple[int, bytes]:
        """(CI, bytes after the CI) in the clear, for `application.parse_telegram`."""
        return _user_data(self.frame, self.application_data)


@dataclass(frozen=True)
class Binding:
    """A meter the receiver accepts: its address (manufacturer, ID, version, type), key, the
    security modes it may use and the AFL authentication type mode 7 must carry."""

    address: MeterAddress
    key: bytes | None
    modes: frozenset[SecurityMode]
    auth_type: int = AUTH_TYPE_CMAC_8

    @property
    def mode(self) -> SecurityMode:
        """The strongest mode the binding accepts."""
        return max(self.modes)


@dataclass
class _AuthFailures:
    in_a_row: int = 0
    backoffs: int = 0  # back-offs since the last accepted frame: the exponent
    until: float = float("-inf")


class WirelessReceiver:
    """The meter's sans-io receiver of wireless M-Bus frames from bound meters.

    Input contract, enforced here:

    * at most `max_frames_per_second` frames are processed per second (a token bucket
      refilled at that rate, `burst` deep); the excess is refused as RATE_LIMITED before
      any decoding or crypto, so a flood costs one comparison per frame;
    * `offer` queues at most `queue_length` frames (the rest are refused as RATE_LIMITED)
      and `drain` processes them; `receive` processes one frame at once;
    * a frame longer than `MAX_FRAME_BYTES` (a format-A frame with L=255) is refused unread;
    * at most `max_bindings` meters are bound (the replay table holds exactly them);
    * after `failures_before_backoff` authentication failures in a row (BAD_MAC, or
      WRONG_KEY: mode 5's only check, a 16-bit one) a meter's frames are refused as
      BACKING_OFF, unread, for `backoff_initial` seconds, doubling with every further
      back-off until a frame of that meter is accepted, at most `backoff_max` seconds. It
      caps guessing at `failures_before_backoff` tries per back-off; the price is that a
      forger can make the receiver miss the real meter's frames meanwhile (a jammer can
      anyway).

    Only frames from a bound address, in a bound mode, that decrypt to 0x2F2F (and in
    mode 7 carry a valid MAC of the bound type) and whose counter is newer than the last
    accepted one are returned as `ReceivedTelegram`; everything else is a `Refusal`,
    counted per kind in `refusals`. The counter is checked before the crypto (a stale one
    costs no AES) and stored only after it. A mode-0 binding (no key) still drops repeated
    access numbers: that filters a repeater's duplicates, it authenticates nothing.
    """

    MAX_FRAME_BYTES = 290  # L=255 in format A: 256 data bytes + 17 block CRCs

    def __init__(self, *, crc: CrcFormat | None = "A", max_frames_per_second: float = 20.0,
                 burst: int = 20, queue_length: int = 16, max_bindings: int = 64,
                 mode5_window: int = MODE5_WINDOW, failures_before_backoff: int = 3,
                 backoff_initial: float = 10.0, backoff_max: float = 3600.0) -> None:
        if failures_before_backoff < 1 or not 0 < backoff_initial <= backoff_max:
            raise ValueError("failures_before_backoff >= 1 and 0 < backoff_initial <= backoff_max")
        self.crc = crc
        self.failures_before_backoff = failures_before_backoff
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._failures: dict[bytes, _AuthFailures] = {}
        self._mode7_seen: set[bytes] = set()
        self.max_frames_per_second = max_frames_per_second
        self.burst = burst
        self.queue_length = queue_length
        self.max_bindings = max_bindings
        self._bindings: dict[bytes, Binding] = {}
        self._replay = ReplayGuard(capacity=max_bindings, window=mode5_window)
        self._tokens = float(burst)
        self._last_refill: float | None = None
        self._queue: list[tuple[bytes, float]] = []
        self.refusals: dict[RefusalKind, int] = {kind: 0 for kind in RefusalKind}
        self.accepted = 0

    # -- bindings -----------------------------------------------------------------------
    def bind(self, address: MeterAddress, key: bytes | None,
             mode: SecurityMode | int | Iterable[SecurityMode | int],
             *, auth_type: int = AUTH_TYPE_CMAC_8) -> None:
        """Accept `address`'s frames under `key` in `mode`: one mode, or several, e.g.
        `OMS_ENCRYPTED_MODES` (5 and 7) for a meter whose mode is not known in advance.

        Each frame is then checked by the crypto of the mode it names. Once a frame in mode
        7 was accepted, that binding refuses mode 5 (no downgrade to the weaker mode) until
        the key changes. Binding the same key again - in whatever modes - keeps the replay
        counters and the back-off state; only a new key starts a new counter sequence.
        """
        modes = frozenset(SecurityMode(m) for m in ((mode,) if isinstance(mode, int) else mode))
        if not modes or (SecurityMode.NONE in modes and len(modes) > 1):
            raise ValueError("bind mode 0 alone (no key) or encrypted modes")
        if SecurityMode.NONE not in modes:
            _check_key(key)  # type: ignore[arg-type]
        check_auth_type(auth_type)
        slot = address.to_bytes()
        if slot not in self._bindings and len(self._bindings) >= self.max_bindings:
            raise ValueError(f"at most {self.max_bindings} meters can be bound")
        key = None if key is None or SecurityMode.NONE in modes else bytes(key)
        old = self._bindings.get(slot)
        if old is not None and old.key != key:
            self._forget(slot)  # a new key starts a new counter sequence
        self._bindings[slot] = Binding(address, key, modes, auth_type)

    def unbind(self, address: MeterAddress) -> None:
        slot = address.to_bytes()
        self._bindings.pop(slot, None)
        self._forget(slot)

    def _forget(self, slot: bytes) -> None:
        self._replay.forget(slot)
        self._failures.pop(slot, None)
        self._mode7_seen.discard(slot)

    @property
    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    # -- persistence: what a restart must not forget -------------------------------------
    def replay_state(self, address: MeterAddress) -> tuple[tuple[tuple[int, int], ...], bool]:
        """A bound meter's replay memory: ((modulus, last accepted counter), ...) - modulus 0
        for mode 7's message counter, 256 for the access number - and whether mode 7 was
        accepted (mode 5 refused since). The owner stores it with what the frame gave."""
        slot = address.to_bytes()
        last = tuple((m, c) for m in (0, 256) if (c := self._replay.last(slot, m)) is not None)
        return last, slot in self._mode7_seen

    def restore(self, address: MeterAddress, last: Iterable[tuple[int, int]], mode7_seen: bool) -> None:
        """Give a bound meter back the replay memory `replay_state` gave before a restart. What
        this receiver accepted since it was bound is newer and stays."""
        slot = address.to_bytes()
        if slot not in self._bindings:
            raise ValueError("restore the replay memory of a bound meter only")
        for modulus, counter in last:
            if modulus not in (0, 256) or not 0 <= counter < (1 << 32 if modulus == 0 else 256):
                raise ValueError(f"no counter {counter} of modulus {modulus}")
            if self._replay.last(slot, modulus) is None:
                self._replay.accept(slot, counter, modulus or None)
        if mode7_seen:
            self._mode7_seen.add(slot)

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
        if mode not in binding.modes:
            bound = "/".join(str(int(m)) for m in sorted(binding.modes))
            return self._refuse(RefusalKind.WRONG_MODE, f"mode {mode}, bound to {bound}", address)
        if mode == SecurityMode.MODE_5 and slot in self._mode7_seen:
            return self._refuse(RefusalKind.WRONG_MODE, "mode 5 from a meter already authenticated in mode 7",
                                address)
        failures = self._failures.get(slot)
        if failures is not None and now < failures.until:
            return self._refuse(RefusalKind.BACKING_OFF, f"until {failures.until}", address)
        claimed = self._claimed_counter(decoded, mode)
        if claimed is not None:
            try:
                self._replay.check(slot, *claimed)
            except OmsReplayError as exc:
                return self._refuse(RefusalKind.REPLAY, str(exc), address)
        try:
            telegram = decrypt_frame(decoded, binding.key, auth_type=binding.auth_type)
        except EncryptedLengthError as exc:
            return self._refuse(RefusalKind.ENCRYPTED_LENGTH, str(exc), address)
        except UnsupportedSecurityError as exc:
            return self._refuse(RefusalKind.UNSUPPORTED, str(exc), address)
        except MacError as exc:
            self._authentication_failed(slot, now)
            return self._refuse(RefusalKind.BAD_MAC, str(exc), address)
        except DecryptionCheckError as exc:
            self._authentication_failed(slot, now)
            return self._refuse(RefusalKind.WRONG_KEY, str(exc), address)
        if telegram.counter is not None:
            try:
                self._replay.accept(slot, telegram.counter, *self._counter_rule(mode))
            except OmsReplayError as exc:
                return self._refuse(RefusalKind.REPLAY, str(exc), address)
        # Only a fully accepted frame ends a failure streak: a replayed genuine frame
        # authenticates too, and must not give a forger fresh tries.
        self._failures.pop(slot, None)
        if telegram.mode is SecurityMode.MODE_7:
            self._mode7_seen.add(slot)
        self.accepted += 1
        return ReceivedTelegram(address, telegram.mode, telegram.ci, telegram.application_data,
                                telegram.counter, now, decoded, telegram.clear_tail)

    @staticmethod
    def _counter_rule(mode: int) -> tuple[int | None, int | None]:
        """(modulus, window) of a mode's counter. Mode 0 authenticates nothing: its access
        number only filters a repeater's duplicates, so any of the next 127 is taken."""
        if mode == SecurityMode.MODE_7:
            return None, None
        return 256, (127 if mode == SecurityMode.NONE else None)

    @classmethod
    def _claimed_counter(cls, frame: WirelessFrame, mode: int) -> tuple[int, int | None, int | None] | None:
        """The counter the frame claims, before any authentication (for the cheap pre-check)."""
        if mode == SecurityMode.MODE_7:
            counter = frame.afl.message_counter if frame.afl is not None else None
        else:
            counter = frame.tpl.access_number if frame.tpl is not None else None
        return None if counter is None else (counter, *cls._counter_rule(mode))

    def _authentication_failed(self, slot: bytes, now: float) -> None:
        failures = self._failures.setdefault(slot, _AuthFailures())
        failures.in_a_row += 1
        if failures.in_a_row >= self.failures_before_backoff:
            failures.in_a_row = 0
            pause = min(self.backoff_initial * 2.0 ** min(failures.backoffs, 64), self.backoff_max)
            failures.backoffs += 1
            failures.until = now + pause
