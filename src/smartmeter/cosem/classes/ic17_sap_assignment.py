"""IC 17 SAP assignment: the logical devices of the physical device (Blue Book 4.4.4)."""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext
from smartmeter.cosem.data import Data


@REGISTRY.register
class SapAssignment(InterfaceClass):
    class_id = 17
    version = 0
    attributes = {1: "logical_name", 2: "sap_assignment_list"}

    def get_sap_assignment_list(self, ctx: RequestContext) -> Data:
        name = self.binding("logical_device_name").get()
        return Data.array([Data.structure([Data.long_unsigned(1), name])])
