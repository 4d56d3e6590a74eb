"""IC 5 Demand register (Blue Book 4.3.4): running and last average over a demand period."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, CosemAccessError, DataAccessResult, InterfaceClass, RequestContext
from smartmeter.cosem.classes.ic3_register import UNITS
from smartmeter.cosem.data import Data


@REGISTRY.register
class DemandRegister(InterfaceClass):
    class_id = 5
    version = 0
    attributes = {
        1: "logical_name", 2: "current_average_value", 3: "last_average_value", 4: "scaler_unit", 5: "status",
        6: "capture_time", 7: "start_time_current", 8: "period", 9: "number_of_periods",
    }
    methods = {1: "reset", 2: "next_period"}

    @property
    def source(self):
        """The bound demand source: value() -> DemandValue, period, number_of_periods, cosem_time(t)."""
        return self.bindings[self.config["value"]]

    def get_current_average_value(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.source.value().current_average)

    def get_last_average_value(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.source.value().last_average)

    def get_scaler_unit(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.integer(int(self.config.get("scaler", 0))), Data.enum(UNITS[self.config["unit"]])])

    def get_status(self, ctx: RequestContext) -> Data:
        return Data.unsigned(0)  # companion standard §5.3: not used, stays 0

    def get_capture_time(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.source.cosem_time(self.source.value().capture_time))

    def get_start_time_current(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.source.cosem_time(self.source.value().start_time_current))

    def get_period(self, ctx: RequestContext) -> Data:
        return Data.double_long_unsigned(self.source.period)

    def get_number_of_periods(self, ctx: RequestContext) -> Data:
        return Data.long_unsigned(self.source.number_of_periods)

    def do_reset(self, parameters: Data | None, ctx: RequestContext) -> None:
        raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "demand follows the measurement period only")

    def do_next_period(self, parameters: Data | None, ctx: RequestContext) -> None:
        raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "demand follows the measurement period only")
