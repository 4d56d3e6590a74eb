"""OBIS codes (IEC 62056-6-1): the six value groups A-B:C.D.E.F that name a COSEM object.

On the wire a logical name is an octet-string of six bytes, one per group.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from smartmeter.errors import SmartmeterError

__all__ = ["Obis", "ObisError"]

_EXPECTED = 'expected "A-B:C.D.E.F" (e.g. "1-0:1.8.0.255"), "A.B.C.D.E.F", 12 hex digits, or 5 groups with F = 255'

# A-B:C.D.E[.F|*F] with each group a decimal 0..255 (F optional, defaults to 255).
_TEXT_FORM = re.compile(r"([0-9]{1,3})-([0-9]{1,3}):([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?:[.*&]([0-9]{1,3}))?")
# Six (or five) dot-separated groups.
_DOTTED_FORM = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})(?:\.([0-9]{1,3}))?")
_HEX_FORM = re.compile(r"[0-9A-Fa-f]{12}")


class ObisError(SmartmeterError, ValueError):
    """A string or byte sequence that is not an OBIS code."""


@dataclass(frozen=True, slots=True, order=True)
class Obis:
    """One OBIS code; every group is 0..255."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for name in ("a", "b", "c", "d", "e", "f"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= 255:
                raise ObisError(f"OBIS group {name.upper()} = {v!r} is not an int 0..255")

    @classmethod
    def parse(cls, text: str) -> "Obis":
        """From "1-0:1.8.0.255", "1-0:1.8.0*255", "1.0.1.8.0.255", "0100010800FF" or 5-group forms."""
        if not isinstance(text, str):
            raise ObisError(f"OBIS code must be a str, got {type(text).__name__}; {_EXPECTED}")
        s = text.strip()
        if _HEX_FORM.fullmatch(s):
            return cls.from_bytes(bytes.fromhex(s))
        m = _TEXT_FORM.fullmatch(s) or _DOTTED_FORM.fullmatch(s)
        if m is None:
            raise ObisError(f"{text!r} is not an OBIS code; {_EXPECTED}")
        groups = [int(g) for g in m.groups() if g is not None]
        if any(g > 255 for g in groups):
            raise ObisError(f"{text!r} has a group above 255; {_EXPECTED}")
        return cls(*groups)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> "Obis":
        """From the six bytes of a logical name."""
        raw = bytes(data)
        if len(raw) != 6:
            raise ObisError(f"a logical name is 6 bytes, got {len(raw)}")
        return cls(*raw)

    def to_bytes(self) -> bytes:
        """The six bytes of the logical name."""
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}.{self.f}"
