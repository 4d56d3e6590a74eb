"""IC 1 Data: a single value bound to a runtime source (Blue Book 4.3.1)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, DataAccessResult, CosemAccessError, InterfaceClass, RequestContext
from smartmeter.cosem.data import Data


@REGISTRY.register
class DataObject(InterfaceClass):
    class_id = 1
    version = 0
    attributes = {1: "logical_name", 2: "value"}

    def get_value(self, ctx: RequestContext) -> Data:
        return self.binding("value").get()

    def set_value(self, value: Data, ctx: RequestContext) -> None:
        binding = self.binding("value")
        if binding.set_with_context is not None:
            binding.set_with_context(value, ctx)
            return
        setter = binding.set
        if setter is None:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, f"{self.name} is read-only")
        setter(value)
