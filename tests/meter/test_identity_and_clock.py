"""Identification (companion standard §5.1, public worked example) and the meter clock."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CLOCK_STATUS_DST_ACTIVE
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.identity import IdentityError, MeterIdentity

EXAMPLE = json.loads((Path(__file__).parents[1] / "vectors" / "dlms-vectors.json").read_text())["ksmw_identification_example"]


def test_companion_standard_identification_example():
    ident = MeterIdentity(EXAMPLE["meter_serial_number"], 100)
    assert ident.logical_device_name.decode() == EXAMPLE["cosem_logical_device_name_ascii"]
    assert ident.logical_device_name.hex().upper() == EXAMPLE["cosem_logical_device_name_hex"]
    assert ident.system_title.hex().upper() == EXAMPLE["system_title"]


def test_meter_type_goes_into_the_logical_device_name():
    assert MeterIdentity("1KFM0100000001", 300).logical_device_name == b"KFM3000100000001"


@pytest.mark.parametrize("serial, meter_type", [("KFM0100000001", 100), ("1KFM01", 100), ("1kfm0100000001", 100),
                                                ("1KFM0100000001", 150)])
def test_bad_identities_are_refused(serial, meter_type):
    with pytest.raises(IdentityError):
        MeterIdentity(serial, meter_type)


def test_clock_in_winter_and_summer():
    winter = dt.datetime(2026, 1, 15, 11, 30, tzinfo=dt.timezone.utc).timestamp()
    summer = dt.datetime(2026, 7, 15, 11, 30, tzinfo=dt.timezone.utc).timestamp()
    clock = MeterClock(source=lambda: winter)
    w = axdr.decode_date_time(clock.cosem_now())
    assert (w.time.hour, w.deviation, w.clock_status) == (12, -60, 0)
    s = axdr.decode_date_time(clock.cosem(summer))
    assert (s.time.hour, s.deviation, s.clock_status) == (13, -120, CLOCK_STATUS_DST_ACTIVE)
    assert clock.time_zone_deviation() == -60
    assert clock.utc_from_cosem(s) == int(summer)


def test_time_without_deviation_is_meter_local_time():
    clock = MeterClock(source=lambda: 0)
    local_noon = axdr.decode_date_time(bytes.fromhex("07EA010FFF0C000000800000"))  # 2026-01-15 12:00, no deviation
    assert clock.utc_from_cosem(local_noon) == int(dt.datetime(2026, 1, 15, 11, 0, tzinfo=dt.timezone.utc).timestamp())


def test_set_shift_and_adjust():
    now = 1_800_000_007.0
    clock = MeterClock(source=lambda: now)
    clock.shift(60)
    assert clock.now() == now + 60
    clock.adjust_to(60)
    assert clock.now() % 60 == 0
    target = dt.datetime(2030, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
    clock.set_from_cosem(axdr.encode_date_time(axdr.decode_date_time(MeterClock(source=lambda: target.timestamp()).cosem_now())))
    assert clock.now() == target.timestamp()
