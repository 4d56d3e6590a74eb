"""gurux-dlms as a black-box client over a real socket sends a request longer than the PDU in
general-block-transfer: the meter reassembles it and answers the service, not pdu-too-long."""
from __future__ import annotations

import sys
from pathlib import Path

from gurux_dlms.enums import Conformance, ErrorCode
from gurux_dlms.objects import GXDLMSData

from smartmeter.meter.identity import MeterIdentity
from smartmeter.meter.runtime import MeterConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
from gurux_peer import GuruxClient  # noqa: E402


def test_gurux_set_longer_than_the_pdu_goes_in_gbt_and_gets_its_answer(meter):
    client = GuruxClient(meter.wrapper_port)
    try:
        client.client.proposedConformance |= Conformance.GENERAL_BLOCK_TRANSFER
        client.associate()
        assert client.client.negotiatedConformance & Conformance.GENERAL_BLOCK_TRANSFER
        ldn = GXDLMSData("0.0.42.0.0.255")
        ldn.value = b"x" * 3000
        frames = client.client.write(ldn, 2)
        assert len(frames) > 1  # gurux split it into GBT blocks
        reply = client.transfer(frames)
        # the public client may not write the logical device name: the SET's own answer
        assert reply.error == ErrorCode.READ_WRITE_DENIED
        # and the association goes on: the name is unchanged
        client.read(ldn, 2)
        value = ldn.value if isinstance(ldn.value, str) else bytes(ldn.value).decode()
        assert value == MeterIdentity(MeterConfig().serial, MeterConfig().meter_type,
                                      MeterConfig().comms_module_serial).logical_device_name.decode()
    finally:
        client.close()
