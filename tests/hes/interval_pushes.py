"""An in-process meter and the Interval 1 push it sends, for the tests of pushes into the
fleet store's layout (SQLite and PostgreSQL)."""
from __future__ import annotations

import datetime as dt

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.cosem.obis import Obis
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

START = 1773144000.0  # 2026-03-10T12:00:00Z
INTERVAL = "0-1:25.9.0.255"
CLOCK = "0-0:1.0.0.255"
# the interval push with the reactive register as a whole object (value and scaler_unit)
LISTS = {INTERVAL: [(40, INTERVAL, 1, 0), (8, CLOCK, 2, 0), (3, "1-0:1.8.0.255", 2, 0), (3, "1-0:3.8.0.255", 0, 0),
                    (1, "0-0:96.1.0.255", 2, 0)]}


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    """The meter, its clock at `meter.now[0]` (from START)."""
    now = [START]
    m = Meter(MeterConfig(data_dir=tmp_path_factory.mktemp("meter"), backfill_days=0),
              clock=MeterClock(source=lambda: now[0]))
    m.now = now
    yield m
    m.close()


def ln(obis: str) -> Data:
    return Data.octet_string(Obis.parse(obis).to_bytes())


def interval_push(meter, t: float, import_wh: int, reactive: int, scaler: int, unit: int) -> bytes:
    """The meter's protected Interval 1 push at time t (the reactive register with its scaler_unit)."""
    when = axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(t, dt.timezone.utc)))
    body = Data.structure([ln(INTERVAL), Data.octet_string(when), Data.double_long_unsigned(import_wh),
                           Data.structure([ln("1-0:3.8.0.255"), Data.double_long_unsigned(reactive),
                                           Data.structure([Data.integer(scaler), Data.enum(unit)])]),
                           Data.octet_string(b"KFM1")])
    meter.now[0] = t
    return meter.server.protected_notification("data_readout", body)
