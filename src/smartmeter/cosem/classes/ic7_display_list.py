"""IC 7 Profile generic with the display lists (catalog §3.11): the one class 7 implementation.

A display list (data scroll list 0-0:21.0.1.255, standard data list 0-0:21.0.2.255, service data
list 0-0:21.0.3.255) is an IC 7 version 1 object whose buffer stays empty: what it says is its
capture_objects (3), the items the display shows in their order, and its capture_period (4), the
interval at which the display advances through them (0: by the button only). Both attributes
are writable and kept in the meter's settings store (`bindings["settings"]`), so a restart
keeps them; the model entry holds the defaults:

    display_list = true
    capture_objects = [[3, "1-0:1.8.0.255", 2, 0], ...]   # the default items
    capture_period = 5                                     # s
    max_objects = 32                                       # optional (default 32)
    historical_of = "0-0:98.1.0.255"                       # optional: F = 101 / 102 items allowed
    required = [[1, "1-0:0.2.0.255", 2, 0], ...]           # optional: items a write must keep

What a write of capture_objects may hold (anything else is refused and changes nothing):
an array of at most `max_objects` structure{long-unsigned, octet-string(6), integer,
long-unsigned} (else type-unmatched; too many: other-reason); each names an attribute (1..)
of an object of that class in this meter, or - with `historical_of` - a historical value:
F = 101 (the last billing value) or F = 102 (the one before) of an attribute the billing
profile named there captures (F = 255); every `required` item (class, logical name,
attribute) stays in the list. An object, attribute or historical value the meter does not
have, a profile's buffer (class 7 attribute 2: no single value), or a dropped required item:
other-reason. capture_period: double-long-unsigned
0..MAX_CAPTURE_PERIOD (else other-reason / type-unmatched).

The class registry holds one class per class id, so this class takes class 7: a profile
without `display_list = true` is served by ProfileGeneric's code unchanged.
"""
from __future__ import annotations

from typing import Any

from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, RequestContext, Selection, expect, other_reason,
    StoredSettings, object_definition, type_unmatched,
)
from smartmeter.cosem.classes.ic7_profile_generic import ProfileGeneric, capture_object_data
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis

MAX_OBJECTS = 32  # items one display list may hold: a bounded list, a bounded screen cycle
MAX_CAPTURE_PERIOD = 3600  # s: an item shown longer than an hour is no scroll list
HISTORICAL = (101, 102)  # F of the last billing value ("VZ") and the one before ("VZ-1")


class _EmptyBuffer:
    """What a display list's buffer is: nothing is ever captured into it."""

    @staticmethod
    def rows(from_time, to_time) -> list:
        return []

    @staticmethod
    def entries_in_use() -> int:
        return 0

    @staticmethod
    def utc_from_cosem(value) -> int:
        return 0


_EMPTY = _EmptyBuffer()


@REGISTRY.register
class ProfileGenericWithDisplayLists(StoredSettings, ProfileGeneric):
    settings_prefix = "display_list"
    class_id = 7
    version = 1

    @property
    def is_display_list(self) -> bool:
        return bool(self.config.get("display_list", False))


    # -- what the list is ------------------------------------------------------------------
    @property
    def source(self):
        return _EMPTY if self.is_display_list else super().source

    @property
    def columns(self) -> list[tuple[int, bytes, int, int]]:
        if not self.is_display_list:
            return super().columns
        stored = self._stored("capture_objects")
        if stored is None:
            return super().columns
        return [(int(c), Obis.parse(o).to_bytes(), int(a), int(i)) for c, o, a, i in stored]

    @property
    def column_types(self) -> list[DataType]:
        if not self.is_display_list:
            return super().column_types
        return []  # never used: no row is ever encoded

    @property
    def max_objects(self) -> int:
        return int(self.config.get("max_objects", MAX_OBJECTS))

    # -- attributes ------------------------------------------------------------------------
    def get_buffer(self, ctx: RequestContext) -> Data:
        if not self.is_display_list:
            return super().get_buffer(ctx)
        return Data.array([])

    def get_buffer_selected(self, ctx: RequestContext, selection: Selection) -> Data:
        if not self.is_display_list:
            return super().get_buffer_selected(ctx, selection)
        if selection.parameters.type != DataType.STRUCTURE:
            raise type_unmatched("a range or entry descriptor is a structure")
        return Data.array([])  # whatever the range or the entries: the buffer holds none

    def get_sort_object(self, ctx: RequestContext) -> Data:
        if self.is_display_list and not self.columns:
            return capture_object_data((0, bytes(6), 0, 0))  # an empty list sorts by nothing
        return super().get_sort_object(ctx)

    def get_capture_period(self, ctx: RequestContext) -> Data:
        if not self.is_display_list:
            return super().get_capture_period(ctx)
        stored = self._stored("capture_period")
        return Data.double_long_unsigned(int(self.config.get("capture_period", 0) if stored is None else stored))

    def set_capture_period(self, value: Data, ctx: RequestContext) -> None:
        if not self.is_display_list:
            return super().set_capture_period(value, ctx)
        seconds = expect(value, DataType.DOUBLE_LONG_UNSIGNED)
        if seconds > MAX_CAPTURE_PERIOD:
            raise other_reason(f"a display list's interval is 0..{MAX_CAPTURE_PERIOD} s")
        self._put("capture_period", seconds)

    def get_profile_entries(self, ctx: RequestContext) -> Data:
        if not self.is_display_list:
            return super().get_profile_entries(ctx)
        return Data.double_long_unsigned(0)

    def set_capture_objects(self, value: Data, ctx: RequestContext) -> None:
        if not self.is_display_list:
            # ProfileGeneric has no setter: the profile's capture objects are fixed by the model
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "capture_objects cannot be written")
        items = expect(value, DataType.ARRAY)
        parsed = []
        for item in items:
            parsed.append(object_definition(item, "a capture object definition"))
        if len(parsed) > self.max_objects:
            raise other_reason(f"{self.name} holds at most {self.max_objects} items")
        for entry in parsed:
            self._check_item(*entry)
        missing = [r for r in self._required() if not any(p[:3] == r[:3] for p in parsed)]
        if missing:
            names = ", ".join(f"{Obis.from_bytes(ln)} attribute {a}" for _, ln, a, _ in missing)
            raise other_reason(f"{self.name} must always show {names}")
        self._put("capture_objects", [[c, str(Obis.from_bytes(ln)), a, i] for c, ln, a, i in parsed])

    # -- checks ----------------------------------------------------------------------------
    def _required(self) -> list[tuple[int, bytes, int, int]]:
        return [(int(c), Obis.parse(o).to_bytes(), int(a), int(i)) for c, o, a, i in self.config.get("required", [])]

    def _check_item(self, class_id: int, ln: bytes, attribute: int, data_index: int) -> None:
        obis = Obis.from_bytes(ln)
        if attribute < 1:
            raise other_reason(f"a display item names one attribute (1..), not {attribute}")
        if class_id == 7 and attribute == 2:
            raise other_reason("a profile's buffer is no display item")
        directory = self.bindings.get("directory")
        if directory is None:
            return  # a class on its own (no meter around it) cannot tell which objects exist
        historical_of = self.config.get("historical_of")
        if historical_of is not None and obis.f in HISTORICAL:
            current = Obis(obis.a, obis.b, obis.c, obis.d, obis.e, 255).to_bytes()
            billing = directory.find(7, Obis.parse(historical_of).to_bytes())
            captured = billing is not None and any(
                col[:3] == (class_id, current, attribute) for col in billing[1].columns)
            if not captured:
                raise other_reason(f"the billing profile keeps no value of class {class_id} "
                                   f"{Obis(obis.a, obis.b, obis.c, obis.d, obis.e, 255)} attribute {attribute}")
            return
        found = directory.find(class_id, ln)
        if found is None:
            raise other_reason(f"no object of class {class_id} {obis} in this meter")
        if attribute not in found[1].attributes:
            raise other_reason(f"class {class_id} has no attribute {attribute}")
