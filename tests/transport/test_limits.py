"""The connection table and the rate-limited log, sans-io: time is an argument."""
from __future__ import annotations

import logging

from smartmeter.transport.limits import (
    AUTHENTICATED,
    NO_ASSOCIATION,
    UNAUTHENTICATED,
    ConnectionTable,
    RateLimitedLog,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def table(maximum: int, timeout: float, clock: Clock | None = None) -> tuple[ConnectionTable, list]:
    closed: list = []
    log = RateLimitedLog(logging.getLogger("test.limits"), 60.0, clock or Clock())
    return ConnectionTable("test", lambda: (maximum, timeout), log), closed


def admit(t: ConnectionTable, closed: list, key, now: float, rank: int = NO_ASSOCIATION):
    return t.admit(key, lambda: closed.append(key), lambda: rank, now)


def test_at_the_limit_the_least_valuable_longest_idle_connection_makes_room():
    t, closed = table(3, 0)
    admit(t, closed, "public", 0.0, UNAUTHENTICATED)
    admit(t, closed, "idle-old", 1.0)
    admit(t, closed, "idle-new", 2.0)
    t.touch(t.get("idle-old"), 5.0)  # active again: now "idle-new" is the longest idle
    assert admit(t, closed, "a", 6.0) is not None
    assert closed == ["idle-new"]
    assert admit(t, closed, "b", 7.0) is not None
    assert closed == ["idle-new", "idle-old"]
    assert admit(t, closed, "c", 8.0) is not None  # among equals, the oldest without association goes first
    assert closed == ["idle-new", "idle-old", "a"]
    assert len(t) == 3 and t.displaced == 3


def test_authenticated_connections_are_never_displaced():
    t, closed = table(2, 0)
    admit(t, closed, "management", 0.0, AUTHENTICATED)
    admit(t, closed, "public", 0.0, UNAUTHENTICATED)
    assert admit(t, closed, "new", 1.0) is not None
    assert closed == ["public"]
    t.release(t.get("new"))
    admit(t, closed, "data_readout", 2.0, AUTHENTICATED)
    assert admit(t, closed, "newer", 3.0) is None
    assert t.refused == 1 and "management" in t and "data_readout" in t


def test_inactivity_closes_only_connections_idle_longer_than_the_timeout():
    t, closed = table(10, 5.0)
    a = admit(t, closed, "a", 0.0)
    admit(t, closed, "b", 0.0)
    t.touch(a, 4.0)
    assert t.expire(5.0) == 0  # exactly the timeout is not yet longer
    assert t.expire(5.5) == 1 and closed == ["b"]
    assert t.expire(9.5) == 1 and closed == ["b", "a"]
    assert len(t) == 0 and t.expired == 2


def test_no_timeout_means_no_inactivity_supervision():
    t, closed = table(10, 0)
    admit(t, closed, "a", 0.0)
    assert t.expire(1e9) == 0 and closed == []


def test_a_connection_that_ended_itself_is_not_closed_again():
    t, closed = table(1, 1.0)
    slot = admit(t, closed, "a", 0.0)
    t.release(slot)
    assert t.expire(100.0) == 0 and closed == [] and len(t) == 0


def test_rate_limited_log_writes_one_line_per_condition_and_interval(caplog):
    clock = Clock()
    say = RateLimitedLog(logging.getLogger("test.limits"), 60.0, clock)
    caplog.set_level(logging.INFO, logger="test.limits")
    for i in range(1000):
        clock.now = i * 0.1  # 100 s of one condition every 0.1 s
        say("flood", "peer %s misbehaves", i)
        say("other", "something else")
    lines = [r.getMessage() for r in caplog.records]
    # at 0 s and at 60 s for each condition; the second line counts what was held back
    assert len(lines) == 4
    assert lines[0] == "peer 0 misbehaves"
    assert lines[2] == "peer 600 misbehaves (599 more since the last such line)"
