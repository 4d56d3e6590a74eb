"""Demand registration (companion standard §5.3) through the protective interface and DLMS."""
from __future__ import annotations

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor
from smartmeter.dlms.client import CLIENT_CONFORMANCE, ClientAssociation, GetExchange
from smartmeter.legal import interface as legal
from smartmeter.legal.demand import average
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

T0 = 1773144000  # a quarter-hour boundary


def test_average_of_a_period():
    assert average(250_000) == 1000  # 250 Wh in 15 min = 1 kW
    assert average(250_249) == 1000  # floored to whole W
    assert average(0) == 0
    assert average(100_000 * 250) == 0  # 100 kW wraps at 99 999 W (direct connection)


def test_demand_maximum_and_cumulative(tmp_path):
    part = legal.LegalInterface(tmp_path)
    part.execute(legal.StartDemandPeriod(T0))
    part.execute(legal.RegisterSimulatedPower(2000.0, 500.0, 450.0))  # half a period at 2 kW
    running = part.execute(legal.ReadDemand("a_plus"))
    # energy is measured from samples and floored to whole units: averages within 1 W
    assert abs(running.current_average - 1000) <= 1
    assert (running.last_average, running.start_time_current) == (0, T0)
    part.execute(legal.RegisterSimulatedPower(2000.0, 500.0, 450.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 900))
    closed = part.execute(legal.ReadDemand("a_plus"))
    assert abs(closed.last_average - 2000) <= 1
    assert (closed.current_average, closed.capture_time) == (0, T0 + 900)
    assert abs(part.execute(legal.ReadDemand("r_plus")).last_average - 500) <= 1
    part.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 900.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 1800))
    maximum = part.execute(legal.ReadMaximumDemand("a_plus"))
    assert (maximum.value, maximum.capture_time, maximum.cumulative) == (closed.last_average, T0 + 900, 0)
    part.close()
    # survives a restart
    part = legal.LegalInterface(tmp_path)
    assert part.execute(legal.ReadMaximumDemand("a_plus")).value == maximum.value
    part.execute(legal.ResetMaximumDemand(T0 + 2000, "a_plus"))
    after = part.execute(legal.ReadMaximumDemand("a_plus"))
    assert (after.value, after.capture_time, after.cumulative) == (0, T0 + 2000, maximum.value)
    assert part.execute(legal.ReadMaximumDemand("r_plus")).value > 0  # only the one register reset
    part.close()


def test_demand_objects_over_dlms(tmp_path):
    now = [float(T0)]
    meter = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: now[0]))
    now[0] += 900
    meter.tick()
    server_side = meter.server.association(16, "lan")
    client = ClientAssociation(conformance=CLIENT_CONFORMANCE)
    client.on_aare(server_side.handle(client.aarq()))

    def read(class_id, obis, attribute):
        exchange = GetExchange(CosemAttributeDescriptor(class_id, bytes(obis), attribute))
        assert exchange.feed(server_side.handle(exchange.first())) is None
        return exchange.result

    period_energy = meter.load.energy(T0, T0 + 900)[0]  # +A Wh of the household in that period
    last = read(5, [1, 0, 1, 4, 0, 255], 3).value
    assert abs(last - period_energy * 4) <= 4  # W = Wh per quarter hour x 4 (integer rounding)
    assert read(5, [1, 0, 1, 4, 0, 255], 8) == Data.double_long_unsigned(900)
    assert read(5, [1, 0, 1, 4, 0, 255], 9) == Data.long_unsigned(1)
    assert read(5, [1, 0, 1, 4, 0, 255], 4) == Data.structure([Data.integer(0), Data.enum(27)])  # W
    capture = axdr.decode_date_time(read(5, [1, 0, 1, 4, 0, 255], 6).value)
    assert meter.clock.utc_from_cosem(capture) == T0 + 900
    assert read(4, [1, 0, 1, 6, 0, 255], 2).value == last
    assert read(3, [1, 0, 1, 2, 0, 255], 2).value == 0
    meter.close()
