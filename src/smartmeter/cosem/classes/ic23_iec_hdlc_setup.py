"""IC 23 IEC HDLC setup: the parameters of the WZ optical port's HDLC link (Blue Book 4.7.7)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
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


@REGISTRY.register
class IecHdlcSetup(InterfaceClass):
    class_id = 23
    version = 1
    attributes = {1: "logical_name", **{i: name for i, name in enumerate(HDLC_SETUP_DEFAULTS, start=2)}}

    def parameter(self, name: str) -> int:
        return int(self.config.get(name, HDLC_SETUP_DEFAULTS[name][1]))

    def __getattr__(self, attr: str):
        # get_<attribute> for every table entry: the configured value with its declared type.
        if attr.startswith("get_") and attr[4:] in HDLC_SETUP_DEFAULTS:
            name = attr[4:]
            return lambda ctx: Data(HDLC_SETUP_DEFAULTS[name][0], self.parameter(name))
        raise AttributeError(attr)
