"""IC 7 Profile generic (Blue Book 4.3.6): a buffer of captured rows with selective access.

The rows come from a profile source bound in the model (for the load profile, the legally
relevant store, read through the protective interface). Rows are plain tuples in the
order of capture_objects; `column_types` in the model gives each column's DataType.
"""
from __future__ import annotations

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import (
    REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext, Selection, expect,
)
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import DecodeError

RANGE_DESCRIPTOR = 1
ENTRY_DESCRIPTOR = 2


def capture_object_data(defn: tuple[int, bytes, int, int]) -> Data:
    class_id, obis, attribute, data_index = defn
    return Data.structure([
        Data.long_unsigned(class_id), Data.octet_string(obis), Data.integer(attribute), Data.long_unsigned(data_index),
    ])


@REGISTRY.register
class ProfileGeneric(InterfaceClass):
    class_id = 7
    version = 1
    attributes = {
        1: "logical_name", 2: "buffer", 3: "capture_objects", 4: "capture_period",
        5: "sort_method", 6: "sort_object", 7: "entries_in_use", 8: "profile_entries",
    }
    methods = {1: "reset", 2: "capture"}
    selective_access = {2: (RANGE_DESCRIPTOR, ENTRY_DESCRIPTOR)}

    @property
    def source(self):
        return self.bindings[self.config["buffer"]]

    @property
    def columns(self) -> list[tuple[int, bytes, int, int]]:
        return [
            (int(c), Obis.parse(o).to_bytes(), int(a), int(i)) for c, o, a, i in self.config["capture_objects"]
        ]

    @property
    def column_types(self) -> list[DataType]:
        return [DataType[t.upper().replace("-", "_")] for t in self.config["column_types"]]

    # -- attributes -------------------------------------------------------------------------
    def get_buffer(self, ctx: RequestContext) -> Data:
        return self._encode(self.source.rows(None, None), range(len(self.columns)))

    def get_buffer_selected(self, ctx: RequestContext, selection: Selection) -> Data:
        if selection.selector == RANGE_DESCRIPTOR:
            return self._by_range(selection.parameters)
        return self._by_entry(selection.parameters)

    def get_capture_objects(self, ctx: RequestContext) -> Data:
        return Data.array([capture_object_data(c) for c in self.columns])

    def get_capture_period(self, ctx: RequestContext) -> Data:
        period = getattr(self.source, "capture_period", None)  # a source whose period is configurable
        return Data.double_long_unsigned(int(self.config["capture_period"]) if period is None else period())

    def set_capture_period(self, value: Data, ctx: RequestContext) -> None:
        setter = getattr(self.source, "set_capture_period", None)
        if setter is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "this profile's capture period is fixed")
        setter(expect(value, DataType.DOUBLE_LONG_UNSIGNED))

    def get_sort_method(self, ctx: RequestContext) -> Data:
        return Data.enum(1)  # fifo

    def get_sort_object(self, ctx: RequestContext) -> Data:
        return capture_object_data(self.columns[0])

    def get_entries_in_use(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.source.entries_in_use())

    def get_profile_entries(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(int(self.config["profile_entries"]))

    def do_reset(self, parameters: Data | None, ctx: RequestContext) -> None:
        # a profile that holds no record (the instantaneous readout snapshot) says so by a reset of its source
        reset = getattr(self.source, "reset", None)
        if reset is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "stored records are never erased")
        expect(parameters or Data.integer(0), DataType.INTEGER)
        reset(ctx)

    def do_capture(self, parameters: Data | None, ctx: RequestContext) -> None:
        # a profile captured on request (the billing profile) says so by a capture of its source
        capture = getattr(self.source, "capture", None)
        if capture is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "this profile captures on its own schedule only")
        expect(parameters or Data.integer(0), DataType.INTEGER)
        capture(ctx)

    # -- selective access -------------------------------------------------------------------
    def _encode(self, rows, column_indexes) -> Data:
        """The buffer, packed in bulk (a year of rows in milliseconds): a Data carrying its encoding."""
        types = self.column_types
        idx = list(column_indexes)
        if idx != list(range(len(types))):
            rows = [tuple(row[i] for i in idx) for row in rows]
            types = [types[i] for i in idx]
        return Data(DataType.ARRAY, None, encoded=axdr.encode_rows(rows, types))

    def _selected_columns(self, selected: Data) -> list[int]:
        if selected.type != DataType.ARRAY:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "selected_values must be an array")
        if not selected.value:
            return list(range(len(self.columns)))
        wanted = []
        for item in selected.value:
            try:
                class_id, obis, attribute, data_index = (v.value for v in item.value)
            except (TypeError, ValueError, AttributeError):
                raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "bad capture object definition") from None
            matches = [i for i, c in enumerate(self.columns) if c[:3] == (class_id, obis, attribute)]
            if not matches:
                raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "selected value is not captured")
            wanted.append(matches[0])
        return wanted

    def _by_range(self, parameters: Data) -> Data:
        try:
            restricting, from_value, to_value, selected = parameters.value
            r_class, r_obis, r_attr, _ = (v.value for v in restricting.value)
        except (TypeError, ValueError, AttributeError):
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "bad range descriptor") from None
        if (r_class, r_obis, r_attr) != self.columns[0][:3]:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, "restricting object must be the sort object")
        first = self._time_bound(from_value)
        last = self._time_bound(to_value)
        return self._encode(self.source.rows(first, last), self._selected_columns(selected))

    def _time_bound(self, value: Data) -> int | None:
        if value.type == DataType.OCTET_STRING:
            try:
                when = axdr.decode_date_time(value.value)
            except DecodeError:
                raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "range bound is not a date-time") from None
        elif value.type == DataType.DATE_TIME:
            when = value.value
        else:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "range bound must be a date-time")
        try:
            return self.source.utc_from_cosem(when)
        except ValueError:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "range bound has unspecified date fields") from None

    def _by_entry(self, parameters: Data) -> Data:
        try:
            from_entry, to_entry, from_col, to_col = (int(v.value) for v in parameters.value)
        except (TypeError, ValueError, AttributeError):
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "bad entry descriptor") from None
        rows = self.source.rows(None, None)
        n_cols = len(self.columns)
        to_entry = len(rows) if to_entry == 0 else min(to_entry, len(rows))
        to_col = n_cols if to_col == 0 else to_col
        if from_entry < 1 or from_col < 1 or to_col > n_cols or from_col > to_col:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "entry or column out of range")
        return self._encode(rows[from_entry - 1:to_entry], range(from_col - 1, to_col))
