"""The one family of typed errors raised by every decoder and protocol machine.

A decoder never lets an IndexError, struct.error or UnicodeDecodeError escape: it raises
a subclass of DecodeError that says what was being decoded and at which offset.
"""
from __future__ import annotations


class SmartmeterError(Exception):
    """Base of every error this package raises on purpose."""


class DecodeError(SmartmeterError, ValueError):
    """Malformed bytes: `what` names the construct, `offset` the byte where it failed."""

    def __init__(self, what: str, offset: int | None = None, detail: str = "") -> None:
        self.what = what
        self.offset = offset
        self.detail = detail
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"cannot decode {what}{where}" + (f": {detail}" if detail else ""))


class TruncatedError(DecodeError):
    """The input ended before the construct was complete (more bytes may complete it)."""


class EncodeError(SmartmeterError, ValueError):
    """A value cannot be represented in the requested encoding (range, type, length)."""
