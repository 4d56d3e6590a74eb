"""An in-process meter on a fixed clock, and a way to talk to its server APDU by APDU."""
from __future__ import annotations

import pytest

from smartmeter.dlms.client import ClientAssociation
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

# 2026-03-10 12:00:00 UTC: a fixed instant so profile contents are predictable
FIXED_NOW = 1773144000.0


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    clock = MeterClock(source=lambda: FIXED_NOW)
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=2), clock=clock)
    yield m
    m.close()


@pytest.fixture
def associate(meter):
    """associate(interface="lan", client_sap=16, **client options) -> (server association, client)."""

    def make(interface: str = "lan", client_sap: int = 16, **options):
        server_side = meter.server.association(client_sap, interface)
        client = ClientAssociation(**options)
        client.on_aare(server_side.handle(client.aarq()))
        return server_side, client

    return make
