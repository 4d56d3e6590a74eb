"""Execution time capacity of the single action schedules (IC 22): the consumer information push
scheduler 0-4:15.0.4.255 takes up to 60 execution times (companion §10.5: intervals down to 1 s),
every other schedule 32; one more is other-reason and nothing changes."""
from __future__ import annotations

import pytest

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

CTX = RequestContext("management", 1)


def every_second(count: int) -> Data:
    """`count` execution times, one a second from 00:00:00 (time hh:mm:ss.hh, date all wildcards)."""
    return Data.array([Data.structure([Data.octet_string(bytes([0, s // 60, s % 60, 0])),
                                       Data.octet_string(bytes.fromhex("FFFFFFFFFF"))]) for s in range(count)])


@pytest.fixture
def meter(tmp_path):
    m = Meter(MeterConfig(data_dir=tmp_path, backfill_days=0), clock=MeterClock(source=lambda: 1_773_144_000.0))
    yield m
    m.close()


@pytest.mark.parametrize("obis, capacity", [("0-4:15.0.4.255", 60), ("0-1:15.0.4.255", 32)])
def test_a_schedule_takes_its_capacity_and_refuses_one_more(meter, obis, capacity):
    schedule = meter.directory.by_ln[Obis.parse(obis).to_bytes()][1]
    schedule.set(4, every_second(capacity), CTX)
    assert len(schedule.get(4, CTX).value) == capacity
    with pytest.raises(CosemAccessError) as refused:
        schedule.set(4, every_second(capacity + 1), CTX)
    assert refused.value.result == DataAccessResult.OTHER_REASON
    assert len(schedule.get(4, CTX).value) == capacity
