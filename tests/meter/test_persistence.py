"""Registers and the load profile survive a clean stop and a kill -9 (power failure)."""
from __future__ import annotations

import asyncio

from meterproc import start_meter
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink


def read_a_plus(port: int) -> int:
    async def go():
        async with MeterClient(WrapperLink("127.0.0.1", port)) as client:
            return (await client.get("1-0:1.8.0.255", 2, class_id=3)).value
    return asyncio.run(go())


def test_state_survives_stop_and_power_failure(tmp_path):
    first = start_meter(tmp_path)
    value_before = read_a_plus(first.wrapper_port)
    rows_before = first.profile_rows()
    assert len(rows_before) >= 2880
    assert first.stop() == 0  # Ctrl-C: clean stop

    second = start_meter(tmp_path)
    try:
        assert read_a_plus(second.wrapper_port) >= value_before
        rows_after = second.profile_rows()
        assert rows_after[: len(rows_before)] == rows_before  # no second back-fill, nothing lost
        value_before_kill = second.energy_wh("a_plus")
    finally:
        second.power_failure()

    third = start_meter(tmp_path)
    try:
        assert read_a_plus(third.wrapper_port) >= value_before_kill
        assert third.profile_rows()[: len(rows_before)] == rows_before
    finally:
        third.stop()
