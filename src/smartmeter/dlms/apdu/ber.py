"""Minimal BER (ITU-T X.690) tag-length-value helpers for the ACSE APDUs.

Only what DLMS/COSEM ACSE needs: identifier octets (including the high-tag-number form),
definite lengths (short and long form), OBJECT IDENTIFIER, INTEGER and BIT STRING
contents. Indefinite lengths are rejected: DLMS encoders never emit them and accepting
them would need unbounded look-ahead.

Every read is bounded by an explicit `end` offset, so a declared length can never reach
past the enclosing construct.
"""
from __future__ import annotations

from dataclasses import dataclass

from smartmeter.errors import DecodeError, EncodeError, TruncatedError

CLASS_UNIVERSAL = 0
CLASS_APPLICATION = 1
CLASS_CONTEXT = 2
CLASS_PRIVATE = 3

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_OBJECT_IDENTIFIER = 0x06

# A tag number or an OID arc longer than this many base-128 digits (28 bits) is refused:
# nothing in DLMS comes close, and it keeps int building bounded.
_MAX_BASE128_DIGITS = 4
# Lengths are at most 4 octets in long form (up to 4 GiB, which the remaining-bytes
# check then refuses anyway).
_MAX_LENGTH_OCTETS = 4
# INTEGER contents longer than this are refused (values DLMS carries fit in one octet).
_MAX_INTEGER_OCTETS = 8


@dataclass(frozen=True, slots=True)
class Tlv:
    """One decoded BER element: its identifier, where its contents are, where it ends."""

    tag_class: int
    constructed: bool
    number: int
    start: int  # offset of the identifier octet
    content_start: int
    end: int  # offset just past the contents

    @property
    def identifier(self) -> tuple[int, bool, int]:
        return (self.tag_class, self.constructed, self.number)


def read_tlv(buf: bytes, offset: int, end: int, what: str) -> Tlv:
    """Decode one TLV starting at `offset`, whose contents must end at or before `end`."""
    pos = offset
    if pos >= end:
        raise TruncatedError(what, pos, "identifier octet missing")
    first = buf[pos]
    pos += 1
    tag_class = first >> 6
    constructed = bool(first & 0x20)
    number = first & 0x1F
    if number == 0x1F:
        number = 0
        for digits in range(_MAX_BASE128_DIGITS + 1):
            if pos >= end:
                raise TruncatedError(what, pos, "high tag number truncated")
            octet = buf[pos]
            pos += 1
            if digits == 0 and octet == 0x80:
                raise DecodeError(what, pos - 1, "high tag number has a leading zero digit")
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
        else:
            raise DecodeError(what, offset, "tag number too large")
        if number < 0x1F:
            raise DecodeError(what, offset, "high tag number form used for a low tag number")
    if pos >= end:
        raise TruncatedError(what, pos, "length octet missing")
    length_octet = buf[pos]
    pos += 1
    if length_octet < 0x80:
        length = length_octet
    elif length_octet == 0x80:
        raise DecodeError(what, pos - 1, "indefinite length is not supported")
    elif length_octet == 0xFF:
        raise DecodeError(what, pos - 1, "reserved length octet 0xFF")
    else:
        count = length_octet & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise DecodeError(what, pos - 1, f"length of {count} octets is too long")
        if pos + count > end:
            raise TruncatedError(what, pos, "long-form length truncated")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    if length > end - pos:
        raise TruncatedError(
            what, pos, f"declared length {length} exceeds the {end - pos} bytes remaining"
        )
    return Tlv(tag_class, constructed, number, offset, pos, pos + length)


def encode_identifier(tag_class: int, constructed: bool, number: int) -> bytes:
    if not 0 <= tag_class <= 3 or number < 0:
        raise EncodeError(f"invalid BER tag class {tag_class} / number {number}")
    lead = (tag_class << 6) | (0x20 if constructed else 0)
    if number < 0x1F:
        return bytes([lead | number])
    return bytes([lead | 0x1F]) + _base128(number)


def encode_length(length: int) -> bytes:
    if length < 0:
        raise EncodeError(f"negative BER length {length}")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > _MAX_LENGTH_OCTETS:
        raise EncodeError(f"BER length {length} too large")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag_class: int, constructed: bool, number: int, content: bytes) -> bytes:
    return encode_identifier(tag_class, constructed, number) + encode_length(len(content)) + content


def _base128(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode_oid_content(arcs: tuple[int, ...]) -> bytes:
    if len(arcs) < 2 or arcs[0] not in (0, 1, 2) or any(a < 0 for a in arcs):
        raise EncodeError(f"invalid object identifier {arcs}")
    if arcs[0] < 2 and arcs[1] >= 40:
        raise EncodeError(f"invalid object identifier {arcs}")
    return _base128(arcs[0] * 40 + arcs[1]) + b"".join(_base128(a) for a in arcs[2:])


def decode_oid_content(buf: bytes, start: int, end: int, what: str) -> tuple[int, ...]:
    if start >= end:
        raise DecodeError(what, start, "empty object identifier")
    subids: list[int] = []
    value = 0
    digits = 0
    for pos in range(start, end):
        octet = buf[pos]
        if digits == 0 and octet == 0x80:
            raise DecodeError(what, pos, "object identifier arc has a leading zero digit")
        value = (value << 7) | (octet & 0x7F)
        digits += 1
        if digits > _MAX_BASE128_DIGITS:
            raise DecodeError(what, pos, "object identifier arc too large")
        if not octet & 0x80:
            subids.append(value)
            value = 0
            digits = 0
    if digits:
        raise TruncatedError(what, end, "object identifier ends inside an arc")
    first = subids[0]
    if first < 40:
        head = (0, first)
    elif first < 80:
        head = (1, first - 40)
    else:
        head = (2, first - 80)
    return head + tuple(subids[1:])


def encode_integer_content(value: int) -> bytes:
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(length, "big", signed=True)


def decode_integer_content(buf: bytes, start: int, end: int, what: str) -> int:
    length = end - start
    if length == 0:
        raise DecodeError(what, start, "empty INTEGER")
    if length > _MAX_INTEGER_OCTETS:
        raise DecodeError(what, start, f"INTEGER of {length} octets is too long")
    return int.from_bytes(buf[start:end], "big", signed=True)


def encode_bit_string_content(bits: int) -> bytes:
    """Encode a named-bit BIT STRING where bit n (counted from the left) is `1 << n`.

    Trailing zero bits are dropped, as X.690 11.2.2 requires for named-bit lists.
    """
    if bits < 0:
        raise EncodeError(f"negative bit string value {bits}")
    nbits = bits.bit_length()
    if nbits == 0:
        return b"\x00"
    nbytes = (nbits + 7) // 8
    # Reverse the bit order: named bit n becomes the n-th bit from the left.
    value = 0
    for n in range(nbits):
        if bits >> n & 1:
            value |= 1 << (nbytes * 8 - 1 - n)
    return bytes([nbytes * 8 - nbits]) + value.to_bytes(nbytes, "big")


def decode_bit_string_content(buf: bytes, start: int, end: int, what: str) -> int:
    """Inverse of `encode_bit_string_content`: bit n from the left becomes `1 << n`."""
    if start >= end:
        raise DecodeError(what, start, "BIT STRING without the unused-bits octet")
    unused = buf[start]
    nbytes = end - start - 1
    if unused > 7 or (nbytes == 0 and unused != 0):
        raise DecodeError(what, start, f"invalid unused-bits count {unused}")
    if nbytes > 8:
        raise DecodeError(what, start, "BIT STRING too long")
    raw = int.from_bytes(buf[start + 1 : end], "big") >> unused
    nbits = nbytes * 8 - unused
    bits = 0
    for n in range(nbits):
        if raw >> (nbits - 1 - n) & 1:
            bits |= 1 << n
    return bits
