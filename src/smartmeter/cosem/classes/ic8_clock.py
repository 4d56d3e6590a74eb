"""IC 8 Clock (Blue Book 4.5.1): bound to the meter's clock service."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, DataAccessResult, CosemAccessError, InterfaceClass, RequestContext, expect
from smartmeter.cosem.data import Data, DataType


@REGISTRY.register
class Clock(InterfaceClass):
    class_id = 8
    version = 0
    attributes = {
        1: "logical_name", 2: "time", 3: "time_zone", 4: "status", 5: "daylight_savings_begin",
        6: "daylight_savings_end", 7: "daylight_savings_deviation", 8: "daylight_savings_enabled",
        9: "clock_base",
    }
    methods = {1: "adjust_to_quarter", 3: "adjust_to_minute", 6: "shift_time"}

    @property
    def clock(self):
        return self.bindings[self.config.get("source", "clock")]

    @staticmethod
    def _requester(ctx: RequestContext) -> bytes:
        """The requesting client's system title, recorded with the time change."""
        return ctx.association.requester_system_title if ctx.association is not None else bytes(8)

    def get_time(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.clock.cosem_now())

    def set_time(self, value: Data, ctx: RequestContext) -> None:
        raw = expect(value, DataType.OCTET_STRING)
        try:
            self.clock.set_from_cosem(raw, self._requester(ctx), ctx.association)
        except ValueError as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None

    def get_time_zone(self, ctx: RequestContext) -> Data:
        return Data.long(self.clock.time_zone_deviation())

    def get_status(self, ctx: RequestContext) -> Data:
        return Data.unsigned(self.clock.status())

    def get_daylight_savings_begin(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.clock.dst_rule_bytes(begin=True))

    def get_daylight_savings_end(self, ctx: RequestContext) -> Data:
        return Data.octet_string(self.clock.dst_rule_bytes(begin=False))

    def get_daylight_savings_deviation(self, ctx: RequestContext) -> Data:
        return Data.integer(60)

    def get_daylight_savings_enabled(self, ctx: RequestContext) -> Data:
        return Data.boolean(self.clock.dst_enabled())

    def get_clock_base(self, ctx: RequestContext) -> Data:
        # a simulated clock (faster than real time) has no physical base: "not defined"
        return Data.enum(0 if getattr(self.clock, "simulated", False) else 1)  # else internal crystal

    def do_adjust_to_quarter(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.clock.adjust_to(15 * 60, self._requester(ctx), ctx.association)

    def do_adjust_to_minute(self, parameters: Data | None, ctx: RequestContext) -> None:
        self.clock.adjust_to(60, self._requester(ctx), ctx.association)

    def do_shift_time(self, parameters: Data | None, ctx: RequestContext) -> None:
        seconds = expect(parameters or Data.null(), DataType.LONG)
        if not -900 <= seconds <= 900:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "shift_time is limited to ±900 s")
        self.clock.shift(seconds, self._requester(ctx), ctx.association)
