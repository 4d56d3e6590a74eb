"""How COSEM values look to a person and to a machine (--json)."""
from __future__ import annotations

import string
from typing import Any

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CompactArray, CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
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


# Where a logical name sits inside an attribute, by class and attribute (Blue Book): a path of
# steps into the value, "*" for every element of an array, a number for a structure field.
# Attribute 1 is the logical name in every class. Known by the schema, not guessed from the
# bytes: any 6-byte octet-string is not an OBIS code (a system title prefix, a MAC, ...).
Path = tuple[Any, ...]
ANY = "*"
LOGICAL_NAME_PATHS: dict[tuple[int, int], tuple[Path, ...]] = {
    (6, 2): ((ANY, 1),),             # Register activation: register_assignment {class_id, logical_name}
    (7, 3): ((ANY, 1),),             # Profile generic: capture_objects {class_id, logical_name, attr, data}
    (7, 6): ((1,),),                 # Profile generic: sort_object
    (9, 2): ((ANY, 1, ANY, 2),),     # Script table: scripts {id, actions {service, class_id, logical_name, ...}}
    (15, 2): ((ANY, 2),),            # Association LN: object_list {class_id, version, logical_name, rights}
    (15, 9): ((),),                  # Association LN: security_setup_reference
    (20, 5): ((ANY, 1, ANY, 1),),    # Activity calendar: day_profile_table_active {.., script_logical_name, ..}
    (20, 9): ((ANY, 1, ANY, 1),),    # Activity calendar: day_profile_table_passive
    (21, 3): ((1,),),                # Register monitor: monitored_value {class_id, logical_name, attr}
    (22, 2): ((0,),),                # Single action schedule: executed_script {script_logical_name, selector}
    (40, 2): ((ANY, 1),),            # Push setup: push_object_list {class_id, logical_name, attr, data}
    (41, 3): ((),),                  # TCP-UDP setup: IP_reference
    (42, 2): ((),),                  # IPv4 setup: DL_reference
    (44, 2): ((),),                  # PPP setup: PHY_reference
    (48, 2): ((),),                  # IPv6 setup: DL_reference
    (61, 3): ((1,),),                # Register table: table_cell_definition {class_id, logical_name, ..}
    (71, 2): ((1,),),                # Limiter: monitored_value {class_id, logical_name, attr}
    (71, 11): ((0, 0), (1, 0)),      # Limiter: actions {over {script_logical_name, ..}, under {..}}
}


def logical_name_paths(class_id: int, attribute: int, attribute_count: int | None = None) -> tuple[Path, ...]:
    """The paths of logical names in attribute `attribute` of class `class_id`. Attribute 0
    (all attributes as one structure, element i = attribute i + 1) takes those of each."""
    if attribute == 0:
        last = attribute_count or max([a for c, a in LOGICAL_NAME_PATHS if c == class_id] + [1])
        return tuple((index - 1, *path) for index in range(1, last + 1)
                     for path in logical_name_paths(class_id, index))
    if attribute == 1:
        return ((),)
    return LOGICAL_NAME_PATHS.get((class_id, attribute), ())


def _inner(paths: tuple[Path, ...], step: int) -> tuple[Path, ...]:
    """The paths that continue into element `step` of the current array or structure."""
    return tuple(p[1:] for p in paths if p and p[0] in (ANY, step))


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


def to_text(value: Data, logical_names: tuple[Path, ...] = ()) -> str:
    """One-line human form; octet-strings shown as text when printable, and as OBIS codes
    (0-0:41.0.0.255) where `logical_names` (see `logical_name_paths`) says a logical name is."""
    t, v = value.type, value.value
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        inner = ", ".join(to_text(item, _inner(logical_names, i)) for i, item in enumerate(v))
        return f"[{inner}]" if t == DataType.ARRAY else f"{{{inner}}}"
    if t == DataType.OCTET_STRING and len(v) == 6 and () in logical_names:
        return str(Obis.from_bytes(v))
    if t == DataType.OCTET_STRING:
        when = date_time_text(v)
        if when:
            return when
        if v and all(b in PRINTABLE for b in v):
            return v.decode("ascii")
        return v.hex()
    return str(to_json(value))
