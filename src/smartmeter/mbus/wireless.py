"""Wireless M-Bus frames (EN 13757-4 link layer, OMS ELL/AFL/TPL headers), sans-io.

`decode_wmbus` is total: any bytes give a `WirelessFrame` or a `DecodeError` subclass
(`WirelessCrcError` when a block CRC does not match). It decodes the layers a frame
carries - data link header (L, C, M, A), extended link layer (CI 0x8C/0x8D),
authentication and fragmentation layer (CI 0x90) and transport layer (CI 0x7A/0x72/0x78)
- and leaves the application bytes as they are (still encrypted when the configuration
field says so; `smartmeter.mbus.security` decrypts them).

Three byte representations of one frame exist:

* format A: a 10-byte first block + CRC, then 16-byte blocks each followed by its CRC;
  L counts the bytes after L without the CRCs;
* format B: one CRC over the first 126 bytes, a second over the rest when the frame is
  longer than 128 bytes; L counts every byte after L including the CRCs;
* without CRCs (what a radio chip that checks the CRCs itself delivers, and how the OMS
  annex prints its examples): L counts the bytes after L.

`strip_crc_format_a/b` and `add_crc_format_a/b` convert between them; the CRC-free form is
the one `encode_wmbus` builds and `WirelessFrame.raw` holds.

Example - a simulated gas meter's mode-5 telegram, as the receiver sees it on air::

    >>> from smartmeter.mbus.wireless import MeterAddress, SecurityMode, decode_wmbus, encode_wmbus
    >>> meter = MeterAddress("ELS", "12345678", version=0x33, device_type=0x03)
    >>> frame = encode_wmbus(meter, bytes.fromhex("0C1427048502"), access_number=0x2A,
    ...                      security=SecurityMode.MODE_5, key=bytes(range(16)), crc="A")
    >>> decode_wmbus(frame, crc="A").tpl.configuration.mode
    5
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.mbus.application import manufacturer_from_text, manufacturer_to_text

__all__ = [
    "CrcFormat",
    "SecurityMode",
    "WirelessDecodeError",
    "WirelessCrcError",
    "crc16_en13757",
    "add_crc_format_a",
    "add_crc_format_b",
    "strip_crc_format_a",
    "strip_crc_format_b",
    "MeterAddress",
    "LinkHeader",
    "ExtendedLinkLayer",
    "AuthenticationLayer",
    "ConfigurationField",
    "TransportLayer",
    "WirelessFrame",
    "decode_wmbus",
    "encode_wmbus",
    "CI_ELL_SHORT",
    "CI_ELL_LONG",
    "CI_AFL",
    "CI_TPL_SHORT",
    "CI_TPL_LONG",
    "CI_TPL_NONE",
    "MAC_LENGTH_BY_AUTH_TYPE",
    "AUTH_TYPE_CMAC_8",
    "AUTH_TYPE_GMAC",
]

CrcFormat = Literal["A", "B"]

CI_ELL_SHORT = 0x8C
CI_ELL_LONG = 0x8D
CI_AFL = 0x90
CI_TPL_SHORT = 0x7A
CI_TPL_LONG = 0x72
CI_TPL_NONE = 0x78

# A CRC-free frame is at most L=255 plus L itself; the 10-byte block 1 is the minimum.
_MIN_FRAME = 10
_MAX_L = 255
_CRC_POLY = 0x3D65
# Format B: the first CRC sits after the first 126 bytes (blocks 1 and 2).
_FORMAT_B_FIRST_SPAN = 126

# OMS Vol. 2, AFL.MCL authentication type -> MAC length in bytes (0: no MAC). The decoder
# needs it only to find the fields after the MAC: the AT comes from the (unauthenticated)
# sender, so it must never decide how much MAC a receiver checks - the binding does
# (`security.WirelessReceiver`, OMS security profile B: AT 5).
MAC_LENGTH_BY_AUTH_TYPE = {0: 0, 3: 2, 4: 4, 5: 8, 6: 12, 7: 16, 8: 12}
AUTH_TYPE_CMAC_8 = 5  # AES-CMAC-128 truncated to 8 bytes (OMS security profile B)
AUTH_TYPE_GMAC = 8  # AES-GMAC-128, 12 bytes: not implemented by this package


class SecurityMode(enum.IntEnum):
    """TPL security modes this package decrypts and encrypts (configuration field bits 8-12)."""

    NONE = 0
    MODE_5 = 5  # AES-128-CBC, IV from address and access number
    MODE_7 = 7  # AES-128-CBC with IV 0 under a derived key, AFL CMAC


class WirelessDecodeError(DecodeError):
    """Malformed wireless M-Bus bytes."""


class WirelessTruncatedError(WirelessDecodeError, TruncatedError):
    """The frame ends inside a header or before its L field says."""


class WirelessCrcError(WirelessDecodeError):
    """A block CRC (or the ELL payload CRC) does not match."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16_en13757(data: bytes) -> int:
    """The EN 13757-4 CRC: polynomial 0x3D65, initial value 0, result complemented."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc ^ 0xFFFF


def _crc_bytes(data: bytes) -> bytes:
    return crc16_en13757(data).to_bytes(2, "big")


def _check_crc_free(frame: bytes) -> None:
    if len(frame) < _MIN_FRAME:
        raise WirelessTruncatedError("wireless frame", len(frame), "shorter than the 10-byte first block")
    if frame[0] != len(frame) - 1:
        raise WirelessDecodeError("wireless frame L field", 0,
                                  f"L={frame[0]} but {len(frame) - 1} bytes follow")


def add_crc_format_a(frame: bytes) -> bytes:
    """Insert the format-A block CRCs into a CRC-free frame (L unchanged)."""
    _check_crc_free(frame)
    out = bytearray(frame[:10] + _crc_bytes(frame[:10]))
    for start in range(10, len(frame), 16):
        block = frame[start:start + 16]
        out += block + _crc_bytes(block)
    return bytes(out)


def strip_crc_format_a(frame: bytes) -> bytes:
    """Check and remove the format-A block CRCs; raises `WirelessCrcError` on a mismatch."""
    if len(frame) < _MIN_FRAME + 2:
        raise WirelessTruncatedError("format A frame", len(frame), "shorter than block 1 and its CRC")
    data_len = frame[0] + 1
    if data_len < _MIN_FRAME:
        raise WirelessDecodeError("format A L field", 0, f"L={frame[0]} is below 9")
    blocks = 1 + (data_len - 10 + 15) // 16
    expected = data_len + 2 * blocks
    if len(frame) != expected:
        cls = WirelessTruncatedError if len(frame) < expected else WirelessDecodeError
        raise cls("format A frame", len(frame), f"L={frame[0]} needs {expected} bytes, got {len(frame)}")
    out = bytearray()
    pos = 0
    for size in [10] + [min(16, data_len - 10 - 16 * i) for i in range(blocks - 1)]:
        block = frame[pos:pos + size]
        if frame[pos + size:pos + size + 2] != _crc_bytes(block):
            raise WirelessCrcError("format A block CRC", pos + size)
        out += block
        pos += size + 2
    return bytes(out)


def add_crc_format_b(frame: bytes) -> bytes:
    """Turn a CRC-free frame into format B: L rewritten to count the CRCs too."""
    _check_crc_free(frame)
    total = len(frame) + (2 if len(frame) + 2 <= _FORMAT_B_FIRST_SPAN + 2 else 4)
    if total - 1 > _MAX_L:
        raise EncodeError(f"a {len(frame)}-byte frame does not fit format B (L would be {total - 1})")
    data = bytes([total - 1]) + frame[1:]
    if total <= _FORMAT_B_FIRST_SPAN + 2:
        return data + _crc_bytes(data)
    first = data[:_FORMAT_B_FIRST_SPAN]
    rest = data[_FORMAT_B_FIRST_SPAN:]
    return first + _crc_bytes(first) + rest + _crc_bytes(rest)


def strip_crc_format_b(frame: bytes) -> bytes:
    """Check and remove the format-B CRCs; the result's L counts the bytes after L."""
    if len(frame) < _MIN_FRAME + 2:
        raise WirelessTruncatedError("format B frame", len(frame), "shorter than block 1 and a CRC")
    total = frame[0] + 1
    if len(frame) != total:
        cls = WirelessTruncatedError if len(frame) < total else WirelessDecodeError
        raise cls("format B frame", len(frame), f"L={frame[0]} needs {total} bytes, got {len(frame)}")
    if total <= _FORMAT_B_FIRST_SPAN + 2:
        spans = [(0, total - 2)]
    else:
        if total < _FORMAT_B_FIRST_SPAN + 2 + 3:  # a second block needs data and its CRC
            raise WirelessDecodeError("format B L field", 0, f"L={frame[0]} leaves an empty block 3")
        spans = [(0, _FORMAT_B_FIRST_SPAN), (_FORMAT_B_FIRST_SPAN + 2, total - 2)]
    out = bytearray()
    for start, end in spans:
        if frame[end:end + 2] != _crc_bytes(frame[start:end]):
            raise WirelessCrcError("format B block CRC", end)
        out += frame[start:end]
    if len(out) < _MIN_FRAME:
        raise WirelessTruncatedError("format B frame", len(frame), "shorter than the 10-byte first block")
    out[0] = len(out) - 1
    return bytes(out)


@dataclass(frozen=True)
class MeterAddress:
    """The 8-byte address of a meter: manufacturer, identification number, version, device type.

    `identification` is the 8 digits as printed (the bytes are BCD, least significant
    byte first); a received non-BCD number shows its hex digits.
    """

    manufacturer: str
    identification: str
    version: int
    device_type: int

    def to_bytes(self) -> bytes:
        ident = self.identification
        if len(ident) != 8 or not all(ch in "0123456789ABCDEFabcdef" for ch in ident):
            raise EncodeError(f"identification must be 8 digits, got {ident!r}")
        if not (0 <= self.version <= 0xFF and 0 <= self.device_type <= 0xFF):
            raise EncodeError("version and device type are one byte each")
        return (manufacturer_from_text(self.manufacturer).to_bytes(2, "little")
                + bytes.fromhex(ident)[::-1] + bytes((self.version, self.device_type)))

    @property
    def id_bytes(self) -> bytes:
        """The 4 identification bytes as sent (least significant first)."""
        return bytes.fromhex(self.identification)[::-1]

    @property
    def manufacturer_bytes(self) -> bytes:
        return manufacturer_from_text(self.manufacturer).to_bytes(2, "little")

    @classmethod
    def from_bytes(cls, data: bytes) -> "MeterAddress":
        """M (2) then A (ID 4, version, device type), as in the link and the long TPL header."""
        if len(data) != 8:
            raise WirelessDecodeError("meter address", len(data), "needs 8 bytes")
        code = int.from_bytes(data[0:2], "little")
        return cls(manufacturer_to_text(code), data[2:6][::-1].hex().upper(), data[6], data[7])


@dataclass(frozen=True)
class LinkHeader:
    """Block 1: L, C, M and A."""

    length: int
    c_field: int
    address: MeterAddress
    address_bytes: bytes  # M || A as received, for the mode-5 IV and replay keys


@dataclass(frozen=True)
class ExtendedLinkLayer:
    """ELL, CI 0x8C (CC, ACC) or 0x8D (also session number and payload CRC)."""

    ci: int
    communication_control: int
    access_number: int
    session_number: int | None = None
    payload_crc: int | None = None

    @property
    def encryption(self) -> int | None:
        """The session number's ENC field (bits 29-31); 0 means the ELL payload is plain."""
        return None if self.session_number is None else self.session_number >> 29

    @property
    def header_length(self) -> int:
        return 3 if self.ci == CI_ELL_SHORT else 9


@dataclass(frozen=True)
class AuthenticationLayer:
    """AFL, CI 0x90: fragmentation control and the fields its flags announce."""

    length: int
    fragment_control: int
    message_control: int | None
    key_info: int | None
    message_counter: int | None
    mac: bytes | None
    message_length: int | None
    raw: bytes  # the AFL bytes from CI to the last AFL field

    @property
    def more_fragments(self) -> bool:
        return bool(self.fragment_control & 0x4000)

    @property
    def fragment_id(self) -> int:
        return self.fragment_control & 0xFF

    @property
    def auth_type(self) -> int | None:
        return None if self.message_control is None else self.message_control & 0x0F


@dataclass(frozen=True)
class ConfigurationField:
    """The TPL configuration field (and, in mode 7, its extension byte)."""

    raw: int
    extension: int | None = None

    @property
    def mode(self) -> int:
        """Security mode, bits 8-12."""
        return (self.raw >> 8) & 0x1F

    @property
    def encrypted_blocks(self) -> int:
        """Number of encrypted 16-byte blocks, bits 4-7 (modes 5 and 7)."""
        return (self.raw >> 4) & 0x0F

    @property
    def bidirectional(self) -> bool:
        return bool(self.raw & 0x8000)

    @property
    def accessibility(self) -> bool:
        return bool(self.raw & 0x4000)

    @property
    def synchronous(self) -> bool:
        return bool(self.raw & 0x2000)

    @property
    def content(self) -> int:
        """Content of message, bits 2-3 (0: standard data)."""
        return (self.raw >> 2) & 0x03

    @property
    def hop_count(self) -> int:
        """Repeated access / hop counter, bits 0-1."""
        return self.raw & 0x03

    @property
    def kdf_selection(self) -> int | None:
        """Mode 7: key derivation function, extension bits 4-6 (1: OMS KDF-A)."""
        return None if self.extension is None else (self.extension >> 4) & 0x07

    @property
    def key_id(self) -> int | None:
        return None if self.extension is None else self.extension & 0x0F


@dataclass(frozen=True)
class TransportLayer:
    """TPL: CI 0x7A (short header), 0x72 (long header with its own address) or 0x78 (none)."""

    ci: int
    access_number: int | None
    status: int | None
    configuration: ConfigurationField | None
    address: MeterAddress | None = None
    address_bytes: bytes | None = None

    @property
    def header_length(self) -> int:
        """Bytes from CI to the first application byte."""
        if self.ci == CI_TPL_NONE:
            return 1
        base = 5 if self.ci == CI_TPL_SHORT else 13
        return base + (0 if self.configuration is None or self.configuration.extension is None else 1)


@dataclass(frozen=True)
class WirelessFrame:
    """One decoded wireless M-Bus frame (CRC-free bytes in `raw`)."""

    link: LinkHeader
    ell: ExtendedLinkLayer | None
    afl: AuthenticationLayer | None
    tpl: TransportLayer | None
    ci: int  # the CI of the application part (the TPL's, or the first unknown one)
    payload: bytes  # bytes after the TPL header (encrypted as received)
    raw: bytes
    tpl_offset: int = field(default=0)  # where the TPL CI byte sits in `raw`

    @property
    def address(self) -> MeterAddress:
        """The meter the data is from: the long TPL header's address, else the link's."""
        return self.tpl.address if self.tpl is not None and self.tpl.address is not None else self.link.address

    @property
    def address_bytes(self) -> bytes:
        if self.tpl is not None and self.tpl.address_bytes is not None:
            return self.tpl.address_bytes
        return self.link.address_bytes

    @property
    def tpl_bytes(self) -> bytes:
        """From the TPL CI to the end of the frame (what the AFL MAC covers)."""
        return self.raw[self.tpl_offset:]


def _need(data: bytes, pos: int, n: int, what: str) -> bytes:
    if pos + n > len(data):
        raise WirelessTruncatedError(what, pos, f"needs {n} bytes, {max(0, len(data) - pos)} left")
    return data[pos:pos + n]


def _decode_afl(data: bytes, pos: int) -> tuple[AuthenticationLayer, int]:
    length = _need(data, pos + 1, 1, "AFL length")[0]
    body = _need(data, pos + 2, length, "AFL")
    if length < 2:
        raise WirelessDecodeError("AFL length", pos + 1, f"{length} leaves no room for the FCL")
    fcl = int.from_bytes(body[0:2], "little")
    p = 2
    fields: dict[str, object] = {}
    for name, flag, size in (("mcl", 0x2000, 1), ("ki", 0x0200, 2), ("mc", 0x0800, 4)):
        if fcl & flag:
            if p + size > length:
                raise WirelessDecodeError("AFL", pos + 2 + p, f"AFL.L={length} too short for {name}")
            fields[name] = int.from_bytes(body[p:p + size], "little")
            p += size
    mac = None
    if fcl & 0x0400:
        mcl = fields.get("mcl")
        if mcl is None:
            raise WirelessDecodeError("AFL", pos + 2, "a MAC without the message control field")
        mac_len = MAC_LENGTH_BY_AUTH_TYPE.get(int(mcl) & 0x0F)
        if not mac_len:
            raise WirelessDecodeError("AFL MCL", pos + 4, f"authentication type {int(mcl) & 0x0F} has no MAC")
        if p + mac_len > length:
            raise WirelessDecodeError("AFL", pos + 2 + p, f"AFL.L={length} too short for the MAC")
        mac = bytes(body[p:p + mac_len])
        p += mac_len
    message_length = None
    if fcl & 0x1000:
        if p + 2 > length:
            raise WirelessDecodeError("AFL", pos + 2 + p, f"AFL.L={length} too short for the message length")
        message_length = int.from_bytes(body[p:p + 2], "little")
        p += 2
    if p != length:
        raise WirelessDecodeError("AFL", pos + 2 + p, f"AFL.L={length} but its flags announce {p} bytes")
    afl = AuthenticationLayer(length, fcl, fields.get("mcl"), fields.get("ki"), fields.get("mc"),  # type: ignore[arg-type]
                              mac, message_length, bytes(data[pos:pos + 2 + length]))
    return afl, pos + 2 + length


def _decode_tpl(data: bytes, pos: int) -> tuple[TransportLayer, int]:
    ci = data[pos]
    if ci == CI_TPL_NONE:
        return TransportLayer(ci, None, None, None), pos + 1
    address = address_bytes = None
    p = pos + 1
    if ci == CI_TPL_LONG:
        address_bytes = bytes(_need(data, p, 8, "long TPL address"))
        # The long header orders ID, M, version, type; MeterAddress wants M first.
        address_bytes = address_bytes[4:6] + address_bytes[0:4] + address_bytes[6:8]
        address = MeterAddress.from_bytes(address_bytes)
        p += 8
    head = _need(data, p, 4, "TPL header")
    config = int.from_bytes(head[2:4], "little")
    p += 4
    extension = None
    if (config >> 8) & 0x1F == 7:
        extension = _need(data, p, 1, "mode 7 configuration field extension")[0]
        p += 1
    return TransportLayer(ci, head[0], head[1], ConfigurationField(config, extension), address, address_bytes), p


def decode_wmbus(frame: bytes, *, crc: CrcFormat | None = None) -> WirelessFrame:
    """Decode one wireless M-Bus frame.

    `crc` says which representation `frame` is in: "A" or "B" (the CRCs are checked and
    removed) or None (already CRC-free; L must count the bytes after it).
    """
    frame = bytes(frame)
    if crc == "A":
        raw = strip_crc_format_a(frame)
    elif crc == "B":
        raw = strip_crc_format_b(frame)
    elif crc is None:
        _check_crc_free(frame)
        raw = frame
    else:
        raise ValueError(f"crc must be 'A', 'B' or None, not {crc!r}")
    address_bytes = raw[2:10]
    link = LinkHeader(raw[0], raw[1], MeterAddress.from_bytes(address_bytes), address_bytes)
    pos = 10
    ell = afl = tpl = None
    ci = _need(raw, pos, 1, "CI field")[0]
    if ci in (CI_ELL_SHORT, CI_ELL_LONG):
        size = 2 if ci == CI_ELL_SHORT else 8
        head = _need(raw, pos + 1, size, "ELL")
        if ci == CI_ELL_SHORT:
            ell = ExtendedLinkLayer(ci, head[0], head[1])
        else:
            ell = ExtendedLinkLayer(ci, head[0], head[1], int.from_bytes(head[2:6], "little"),
                                    int.from_bytes(head[6:8], "little"))
            if ell.encryption == 0 and crc16_en13757(raw[pos + 9:]) != ell.payload_crc:
                raise WirelessCrcError("ELL payload CRC", pos + 7)
        pos += 1 + size
        ci = _need(raw, pos, 1, "CI field after the ELL")[0]
    if ci == CI_AFL:
        afl, pos = _decode_afl(raw, pos)
        ci = _need(raw, pos, 1, "CI field after the AFL")[0]
    tpl_offset = pos
    if ci in (CI_TPL_SHORT, CI_TPL_LONG, CI_TPL_NONE):
        tpl, pos = _decode_tpl(raw, pos)
        payload = raw[pos:]
    else:
        payload = raw[pos + 1:]
    return WirelessFrame(link, ell, afl, tpl, ci, payload, raw, tpl_offset)


def encode_wmbus(meter: MeterAddress, records: bytes, *, access_number: int,
                 security: SecurityMode | int = SecurityMode.NONE, key: bytes | None = None,
                 message_counter: int | None = None, crc: CrcFormat | None = "A",
                 c_field: int = 0x44, status: int = 0, long_header: bool = False,
                 synchronous: bool = False, bidirectional: bool = False,
                 ell_communication_control: int | None = None) -> bytes:
    """Build a meter's SND_NR telegram carrying `records` (EN 13757-3 data records).

    * mode 0: TPL short (or long) header, `records` in clear;
    * mode 5: 0x2F2F, `records`, 0x2F padding to whole blocks, AES-CBC under `key` with
      the IV from address and access number (`security.encrypt_mode5`);
    * mode 7: ELL (CI 0x8C) + AFL with message counter and 8-byte CMAC + TPL with the
      configuration field extension (KDF-A, key id 0); `message_counter` is required.
      Mode 7 needs an ELL in OMS, so one is added even when `ell_communication_control`
      is None (CC 0x20, the value the OMS annex example uses).

    `crc` picks the on-air representation ("A", "B" or None for CRC-free).
    """
    # Imported here: the security module builds on this one's frame types.
    from smartmeter.mbus import security as sec

    mode = int(security)
    if not 0 <= access_number <= 0xFF or not 0 <= status <= 0xFF or not 0 <= c_field <= 0xFF:
        raise EncodeError("access number, status and C field are one byte each")
    address_bytes = meter.to_bytes()
    flags = (0x8000 if bidirectional else 0) | (0x2000 if synchronous else 0)
    if mode == 0:
        body, config, extension = bytes(records), flags, None
    elif mode == 5:
        if key is None:
            raise EncodeError("mode 5 needs a key")
        body = sec.pad_plaintext(records)
        config = flags | (5 << 8) | ((len(body) // 16) << 4)
        body = sec.encrypt_mode5(key, address_bytes, access_number, body)
        extension = None
    elif mode == 7:
        if key is None or message_counter is None:
            raise EncodeError("mode 7 needs a key and a message counter")
        body = sec.pad_plaintext(records)
        config = flags | (7 << 8) | ((len(body) // 16) << 4)
        extension = 0x10  # KDF-A, key id 0
        body = sec.encrypt_mode7(key, message_counter, meter.id_bytes, body)
    else:
        raise EncodeError(f"security mode {mode} is not supported by the encoder")
    if long_header:
        tpl_head = bytes((CI_TPL_LONG,)) + meter.id_bytes + meter.manufacturer_bytes + address_bytes[6:8]
    else:
        tpl_head = bytes((CI_TPL_SHORT,))
    tpl_head += bytes((access_number, status)) + config.to_bytes(2, "little")
    if extension is not None:
        tpl_head += bytes((extension,))
    tpl = tpl_head + body
    head = b""
    if mode == 7 or ell_communication_control is not None:
        cc = 0x20 if ell_communication_control is None else ell_communication_control
        head += bytes((CI_ELL_SHORT, cc, access_number))
    if mode == 7:
        mcl = 0x25  # message counter present, AES-CMAC-128 with an 8-byte MAC
        fcl = 0x2000 | 0x0800 | 0x0400
        mac = sec.afl_mac(sec.derive_mode7_keys(key, message_counter, meter.id_bytes)[1],  # type: ignore[arg-type]
                          bytes((mcl,)) + message_counter.to_bytes(4, "little") + tpl)  # type: ignore[union-attr]
        afl_body = fcl.to_bytes(2, "little") + bytes((mcl,)) + message_counter.to_bytes(4, "little") + mac  # type: ignore[union-attr]
        head += bytes((CI_AFL, len(afl_body))) + afl_body
    frame_body = bytes((c_field,)) + address_bytes + head + tpl
    if len(frame_body) > _MAX_L:
        raise EncodeError(f"telegram of {len(frame_body)} bytes after L exceeds L=255")
    frame = bytes((len(frame_body),)) + frame_body
    if crc == "A":
        return add_crc_format_a(frame)
    if crc == "B":
        return add_crc_format_b(frame)
    return frame

