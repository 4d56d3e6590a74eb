"""How COSEM values look to a person and to a machine (--json)."""
from __future__ import annotations

import string
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CompactArray, CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.errors import DecodeError

PRINTABLE = set(string.printable.encode()) - set(b"\t\n\r\x0b\x0c")


def date_time_text(raw: bytes) -> str | None:
    """ISO text of a 12-byte COSEM date-time, or None if the bytes are not one."""
    if len(raw) != 12:
        return None
    try:
        value = axdr.decode_date_time(raw)
        return value.to_datetime().isoformat()
    except (DecodeError, ValueError):
        return None


def to_json(value: Data) -> Any:
    """JSON-ready form: octet-strings as hex (or ISO date-time), everything else plain."""
    t, v = value.type, value.value
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        return [to_json(item) for item in v]
    if t == DataType.COMPACT_ARRAY:
        return [to_json(item) for item in v.contents]
    if t == DataType.OCTET_STRING:
        return date_time_text(v) or v.hex()
    if isinstance(v, CosemDateTime):
        try:
            return v.to_datetime().isoformat()
        except ValueError:
            return str(v)
    if isinstance(v, (CosemDate, CosemTime, CompactArray)):
        return str(v)
    return v


def to_text(value: Data) -> str:
    """One-line human form; octet-strings shown as text when printable."""
    t, v = value.type, value.value
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        inner = ", ".join(to_text(item) for item in v)
        return f"[{inner}]" if t == DataType.ARRAY else f"{{{inner}}}"
    if t == DataType.OCTET_STRING:
        when = date_time_text(v)
        if when:
            return when
        if v and all(b in PRINTABLE for b in v):
            return v.decode("ascii")
        return v.hex()
    return str(to_json(value))
