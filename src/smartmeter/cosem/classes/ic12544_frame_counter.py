"""IC 12544 (0x3100) Frame counter provider, version 0: companion standard Appendix 1.

get_frame_counter(challenge: 64 bytes) -> structure{challenge_response (HMAC-SHA256 with
the client's AK over SysT-S || SysT-C || challenge || FC), frame_counter}.
"""
from __future__ import annotations

from smartmeter.cosem.classes.base import REGISTRY, InterfaceClass, RequestContext, expect
from smartmeter.cosem.data import Data, DataType


@REGISTRY.register
class FrameCounterProvider(InterfaceClass):
    class_id = 12544
    version = 0
    attributes = {1: "logical_name"}
    methods = {1: "get_frame_counter"}

    def do_get_frame_counter(self, parameters: Data | None, ctx: RequestContext) -> Data:
        challenge = expect(parameters or Data.null(), DataType.OCTET_STRING)
        response, counter = self.bindings["security"].frame_counter_readout(self.config["client"], challenge, ctx)
        return Data.structure([Data.octet_string(response), Data.double_long_unsigned(counter)])
