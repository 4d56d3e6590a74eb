"""The On Alarm push built but not sent (companion §9.1 repetition): built again a minute later,
not at every tick, and its 10 minutes run from the last push that went out."""
from __future__ import annotations

import pytest

from smartmeter.meter.alarms import AlarmBitmap, AlarmBoard
from smartmeter.meter.store import MeterStore

POWER_UP = 1 << 2  # Alarm Register 1, catalog §6
MINUTE = 60.0
TEN_MINUTES = 600.0
T0 = 1_000_000.0


@pytest.fixture
def board(tmp_path):
    store = MeterStore(tmp_path / "meter")
    board = AlarmBoard(store, AlarmBitmap.load(), lambda code, ctx: None)
    board.raise_flag("power_up")
    yield board
    store.close()


def due(board: AlarmBoard, now: float) -> list[tuple[int, int]]:
    return [(r.register, r.descriptor) for r in board.due_realarms(now)]


def test_a_refused_alarm_push_is_due_again_a_minute_later(board):
    assert due(board, T0) == [(1, POWER_UP)]
    board.alarm_push_refused(T0)
    assert due(board, T0 + MINUTE - 1) == []
    assert due(board, T0 + MINUTE) == [(1, POWER_UP)]  # its bit was never sent
    board.alarm_push_refused(T0 + MINUTE)
    board.alarm_pushed(T0 + MINUTE + 1)  # e.g. a client's push ACTION went out
    assert due(board, T0 + MINUTE + 1 + TEN_MINUTES - 1) == []
    assert due(board, T0 + MINUTE + 1 + TEN_MINUTES) == [(1, POWER_UP)]


def test_a_refusal_keeps_the_ten_minutes_of_the_last_push_that_went_out(board):
    board.alarm_pushed(T0)
    board.alarm_push_refused(T0 + TEN_MINUTES)  # the repetition, refused
    assert due(board, T0 + TEN_MINUTES + MINUTE - 1) == []
    assert due(board, T0 + TEN_MINUTES + MINUTE) == [(1, POWER_UP)]


def test_a_clock_set_back_does_not_hold_the_retry_back(board):
    board.alarm_push_refused(T0)
    assert due(board, T0 - 3600) == [(1, POWER_UP)]
