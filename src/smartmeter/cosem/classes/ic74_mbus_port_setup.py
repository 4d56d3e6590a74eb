"""IC 74 M-Bus master port setup, version 0 (Blue Book 4.8.5): the speed of an M-Bus port.

Attribute 2 `comm_speed` (enum, Blue Book: 0 300 Bd, 1 600, 2 1200, 3 2400, 4 4800, 5 9600,
6 19200, 7 38400, 8 57600, 9 115200). The meter has three such ports (companion Table 12, 14):
the wired M2 bus 0-0:24.6.0.255, the wireless M2 receiver 0-1:24.6.0.255 (the companion gives it
the wired one's code too, a typo: docs/decisions.md) and the H1 consumer interface
0-2:24.6.0.255. Model entry:

    port = "wired"          # "wired", "wireless" or "consumer": what an M-Bus client may refer to
    comm_speed = 3          # the default (2400 Bd, EN 13757-2's usual speed)
    speeds = [0, 3, 5]      # optional: what a write may set (default 0..9); [] = fixed

A write of another speed is refused (other-reason), a value of another type type-unmatched; a
written speed is kept in the meter's settings store and applies to the next exchange on the bus.
The H1 port is fixed at 2400 Bd (companion §2.2: "a fixed baud rate ... 2400 baud").
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import (
    REGISTRY, InterfaceClass, RequestContext, StoredSettings, expect, other_reason,
)
from smartmeter.cosem.data import Data, DataType

BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)  # enum index -> Bd
DEFAULT_SPEED = 3  # 2400 Bd
PORT_KINDS = ("wired", "wireless", "consumer")


@REGISTRY.register
class MBusMasterPortSetup(StoredSettings, InterfaceClass):
    class_id = 74
    version = 0
    attributes = {1: "logical_name", 2: "comm_speed"}
    settings_prefix = "mbus_port"

    @property
    def kind(self) -> str:
        """What the port is: "wired", "wireless" or "consumer" (an M-Bus client may refer to the first two)."""
        kind = self.config.get("port", "wired")
        return kind if kind in PORT_KINDS else "wired"

    def speed(self) -> int:
        stored = self._stored("comm_speed")
        return int(self.config.get("comm_speed", DEFAULT_SPEED)) if stored is None else stored

    def baud_rate(self) -> int:
        return BAUD_RATES[self.speed()]

    def get_comm_speed(self, ctx: RequestContext) -> Data:
        return Data.enum(self.speed())

    def set_comm_speed(self, value: Data, ctx: RequestContext) -> None:
        speed = expect(value, DataType.ENUM)
        allowed = self.config.get("speeds", list(range(len(BAUD_RATES))))
        if speed not in allowed:
            raise other_reason(f"{self.name}: comm_speed must be one of {allowed}")
        self._put("comm_speed", speed)
