"""A small fleet in the fleet store for the export and gaps tests: what is stored is written
here, row by row, so the tests can compute what they expect from it.

Day D = 2026-03-10 (UTC), load profile 1 (15 min), rows at the end of each interval:

* M-0001 (cell north): a constant 400 W, so +A grows by 100 Wh every interval; -A (scaler -1)
  grows by 1.0 Wh (raw 10) every interval. Rows from D-1 23:45 to D+1 00:00 (the first is the
  predecessor of D 00:00's interval, the last is outside [D, D+1)). One register read of +A.
* M-0002 (cell south): +A grows by a varying amount per interval (`m2_step`); no row at 10:15;
  the row at 12:00 has the clock-adjusted status bit; an off-grid row at 13:07; rows only up to
  20:00. Two register reads: one 90 s behind the store time, one 10 s.
* M-0003 (cell south): no readings at all.
"""
from __future__ import annotations

import asyncio
import datetime as dt

from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

UTC = dt.timezone.utc
DAY = dt.datetime(2026, 3, 10, tzinfo=UTC)
NEXT_DAY = DAY + dt.timedelta(days=1)
PERIOD = dt.timedelta(minutes=15)
PROFILE = "1-0:99.1.0.255"
A_PLUS, A_MINUS = "1-0:1.8.0.255", "1-0:2.8.0.255"
WH = 30
CLOCK_ADJUSTED = 0x20
M1_START_WH = 1_000_000
M2_START_WH = 52_000
M2_MISSING = DAY + dt.timedelta(hours=10, minutes=15)
M2_ADJUSTED = DAY + dt.timedelta(hours=12)
M2_OFF_GRID = DAY + dt.timedelta(hours=13, minutes=7)
M2_LAST = DAY + dt.timedelta(hours=20)
M1_REGISTER_TIME = DAY + dt.timedelta(hours=6, seconds=3)
M2_DRIFT_TIME = DAY + dt.timedelta(hours=8, seconds=1)       # received 90 s later
M2_CLOSE_TIME = DAY + dt.timedelta(hours=16, seconds=2)      # received 10 s later

METERS = [
    MeterRecord("M-0001", bytes.fromhex("534D4D0000000001"), "127.0.0.1", 4059, cell="north"),
    MeterRecord("M-0002", bytes.fromhex("534D4D0000000002"), "127.0.0.1", 4060, cell="south"),
    MeterRecord("M-0003", bytes.fromhex("534D4D0000000003"), "127.0.0.1", 4061, cell="south"),
]


def m2_step(n: int) -> int:
    """Wh of M-0002's n-th interval of the day: varies, never twice the same pattern in a row."""
    return 37 + (n * 53) % 211


def grid(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Grid times start, start + 15 min, ..., end (inclusive)."""
    out, t = [], start
    while t <= end:
        out.append(t)
        t += PERIOD
    return out


def m1_rows() -> list[tuple[dt.datetime, int, int]]:
    """(time, +A Wh, -A raw at scaler -1) of M-0001's profile."""
    rows = []
    for n, t in enumerate(grid(DAY - PERIOD, NEXT_DAY)):
        rows.append((t, M1_START_WH + 100 * n, 500 + 10 * n))
    return rows


def m2_rows() -> list[tuple[dt.datetime, int, int]]:
    """(time, +A Wh, status) of M-0002's profile (the off-grid row included)."""
    rows, value = [], M2_START_WH
    for n, t in enumerate(grid(DAY, M2_LAST)):
        value += m2_step(n)
        if t == M2_MISSING:
            continue
        rows.append((t, value, CLOCK_ADJUSTED if t == M2_ADJUSTED else 0))
        if t == M2_OFF_GRID - dt.timedelta(minutes=7):
            rows.append((M2_OFF_GRID, value + 5, CLOCK_ADJUSTED))
    return rows


async def _series(conn, meter: str, source: str, obis: str, scaler: int, unit: int) -> int:
    return await conn.fetchval(
        """INSERT INTO series (meter_id, source, obis, attribute, scaler, unit)
           SELECT id, $2, $3, 2, $4, $5 FROM meter WHERE serial = $1 RETURNING id""",
        meter, source, obis, scaler, unit)


async def _readings(conn, series_id: int, rows) -> None:
    await conn.executemany("INSERT INTO reading (series_id, time, raw, quality, received) VALUES ($1, $2, $3, $4, $5)",
                           [(series_id, t, raw, quality, received) for t, raw, quality, received in rows])


async def populate(dsn: str) -> None:
    store = await FleetStore.open(dsn, KeyVault(bytes(32)), migrate=True)
    try:
        await store.add_meters(METERS)
        async with store.pool.acquire() as conn:
            for month in (dt.date(2026, 3, 1),):
                await FleetStore.ensure_partition(conn, month)
            received = NEXT_DAY + dt.timedelta(hours=1)
            a_plus = await _series(conn, "M-0001", PROFILE, A_PLUS, 0, WH)
            a_minus = await _series(conn, "M-0001", PROFILE, A_MINUS, -1, WH)
            await _readings(conn, a_plus, [(t, wh, 0, received) for t, wh, _ in m1_rows()])
            await _readings(conn, a_minus, [(t, raw, 0, received) for t, _, raw in m1_rows()])
            register = await _series(conn, "M-0001", "", A_PLUS, 0, WH)
            await _readings(conn, register, [(M1_REGISTER_TIME, 1_002_345, 0, M1_REGISTER_TIME + dt.timedelta(seconds=4))])

            m2 = await _series(conn, "M-0002", PROFILE, A_PLUS, 0, WH)
            await _readings(conn, m2, [(t, wh, status, received) for t, wh, status in m2_rows()])
            register = await _series(conn, "M-0002", "", A_PLUS, 0, WH)
            await _readings(conn, register, [
                (M2_DRIFT_TIME, 60_000, 0, M2_DRIFT_TIME + dt.timedelta(seconds=90)),
                (M2_CLOSE_TIME, 70_000, 0, M2_CLOSE_TIME + dt.timedelta(seconds=10)),
            ])
    finally:
        await store.close()


def setup(dsn: str) -> None:
    asyncio.run(populate(dsn))
