"""IC 23 IEC HDLC setup: the parameters of the WZ optical port's HDLC link (Blue Book 4.7.7)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext, store_integer_setting
from smartmeter.cosem.data import Data, DataType

# attribute name -> (DataType, default) ; defaults from IDIS P2 / CTT HDLC_2
HDLC_SETUP_DEFAULTS = {
    "comm_speed": (DataType.ENUM, 5),  # 9600 Bd
    "window_size_transmit": (DataType.UNSIGNED, 1),
    "window_size_receive": (DataType.UNSIGNED, 1),
    "max_info_field_length_transmit": (DataType.LONG_UNSIGNED, 128),
    "max_info_field_length_receive": (DataType.LONG_UNSIGNED, 128),
    "inter_octet_time_out": (DataType.LONG_UNSIGNED, 25),  # ms
    "inactivity_time_out": (DataType.LONG_UNSIGNED, 120),  # s
    "device_address": (DataType.LONG_UNSIGNED, 0x0010),
}
# what a write may set (IEC 62056-46 / Blue Book 4.7.7 ranges); changes apply to the next link
HDLC_SETUP_RANGES = {
    "comm_speed": (0, 9), "window_size_transmit": (1, 7), "window_size_receive": (1, 7),
    "max_info_field_length_transmit": (32, 2030), "max_info_field_length_receive": (32, 2030),
    "inter_octet_time_out": (20, 6000), "inactivity_time_out": (0, 65535), "device_address": (0x10, 0x3FFD),
}


@REGISTRY.register
class IecHdlcSetup(InterfaceClass):
    class_id = 23
    version = 1
    attributes = {1: "logical_name", **{i: name for i, name in enumerate(HDLC_SETUP_DEFAULTS, start=2)}}

    @property
    def _store(self):
        """Where written values persist (the meter's store), if bound."""
        return self.bindings.get("settings")

    def parameter(self, name: str) -> int:
        default = int(self.config.get(name, HDLC_SETUP_DEFAULTS[name][1]))
        return int(self._store.get(f"hdlc.{name}", default)) if self._store is not None else default

    def _set(self, name: str, value: Data) -> None:
        store_integer_setting(self._store, f"hdlc.{name}", value, HDLC_SETUP_DEFAULTS[name][0],
                              HDLC_SETUP_RANGES[name], name, "HDLC setup")

    def __getattr__(self, attr: str):
        # get_/set_<attribute> for every table entry, with its declared type
        name = attr[4:]
        if name in HDLC_SETUP_DEFAULTS:
            if attr.startswith("get_"):
                return lambda ctx: Data(HDLC_SETUP_DEFAULTS[name][0], self.parameter(name))
            if attr.startswith("set_"):
                return lambda value, ctx: self._set(name, value)
        raise AttributeError(attr)
