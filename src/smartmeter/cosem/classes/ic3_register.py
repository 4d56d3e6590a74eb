"""IC 3 Register: a value with a scaler and a unit (Blue Book 4.3.2)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, DataAccessResult, CosemAccessError, InterfaceClass, RequestContext
from smartmeter.cosem.data import Data

# Unit enumeration (Blue Book table "Enumerated values for physical units"), the ones we use.
UNITS = {"W": 27, "var": 29, "VA": 28, "Wh": 30, "VAh": 31, "varh": 32, "A": 33, "V": 35, "Hz": 44, "s": 7,
         "deg": 8, "count": 255}


@REGISTRY.register
class Register(InterfaceClass):
    class_id = 3
    version = 0
    attributes = {1: "logical_name", 2: "value", 3: "scaler_unit"}
    methods = {1: "reset"}

    def get_value(self, ctx: RequestContext) -> Data:
        return self.binding("value").get()

    def set_value(self, value: Data, ctx: RequestContext) -> None:
        setter = self.binding("value").set
        if setter is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is read-only")
        setter(value)

    def get_scaler_unit(self, ctx: RequestContext) -> Data:
        return Data.structure([Data.integer(int(self.config.get("scaler", 0))), Data.enum(UNITS[self.config["unit"]])])

    def do_reset(self, parameters: Data | None, ctx: RequestContext) -> None:
        # Cumulative energy registers are never reset (WELMEC 7.2 I3-4, companion §5.2).
        raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "this register cannot be reset")
