"""IC 4 Extended register (Blue Book 4.3.3): a value with its capture time (maximum demand)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
from smartmeter.cosem.classes.ic3_register import UNITS
from smartmeter.cosem.data import Data


@REGISTRY.register
class ExtendedRegister(InterfaceClass):
    class_id = 4
    version = 0
    attributes = {1: "logical_name", 2: "value", 3: "scaler_unit", 4: "status", 5: "capture_time"}
    methods = {1: "reset"}

    @property
    def source(self):
        """The bound source: value() -> (value, capture_time or None), cosem_time(t), reset()."""
        return self.bindings[self.config["value"]]

    def get_value(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.source.value()[0])

    def get_scaler_unit(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.integer(int(self.config.get("scaler", 0))), Data.enum(UNITS[self.config["unit"]])])

    def get_status(self, ctx: RequestContext) -> Data:
        return Data.unsigned(0)  # companion standard §5.3: not used, stays 0

    def get_capture_time(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.source.cosem_time(self.source.value()[1]))

    def do_reset(self, parameters: Data | None, ctx: RequestContext) -> None:
        # companion standard §5.3: value 0, capture_time = time of the reset
        self.source.reset()
