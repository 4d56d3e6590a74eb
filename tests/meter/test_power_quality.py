"""Sag, swell and cut detection and the power quality profile's period values (companion §5.9.2,
§5.9.4; catalog §3.8), pure. Each expectation is computed here from the waveform the test feeds:
the condition's start, the instant the voltage came back, the voltages held."""
from __future__ import annotations

import pytest

from smartmeter.meter.power_quality import (
    PeriodAccumulator, QualityEvent, Thresholds, VoltageQuality, STATUS_POWER_DOWN,
)

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
NOMINAL = 230.0
SAG, SWELL, CUT = 76, 79, 82
NORMAL = 85


def feed(quality: VoltageQuality, pieces, start: float = T0, step: float | None = None) -> list[QualityEvent]:
    """Feed (seconds, volts per phase) pieces from `start`, each at once or in `step` s slices."""
    events, t = [], start
    for seconds, volts in pieces:
        end = t + seconds
        while t < end:
            slice_end = end if step is None else min(end, t + step)
            events += quality.observe(t, slice_end, volts)
            t = slice_end
    return events


@pytest.mark.parametrize("step", [None, 1.0, 0.2])
def test_a_sag_to_80_percent_for_3_s(step):
    """A sag to 80 % for 3 s: logged at its start, Normal at the return; count, duration and
    magnitude as held (however finely the meter samples it)."""
    q = VoltageQuality(1)
    events = feed(q, [(60, (NOMINAL,)), (3, (0.8 * NOMINAL,)), (60, (NOMINAL,))], step=step)
    assert events == [QualityEvent(SAG, T0 + 60), QualityEvent(NORMAL, T0 + 63)]
    assert (q.last[0].sags, q.last[0].sag_duration, q.last[0].sag_magnitude) == (1, 3.0, 0.8 * NOMINAL)
    assert q.last[0].cuts == q.last[0].swells == 0


def test_a_dip_shorter_than_the_time_threshold_is_no_sag():
    q = VoltageQuality(1, Thresholds(sag_time=3.0))
    assert feed(q, [(10, (NOMINAL,)), (2.9, (150.0,)), (60, (NOMINAL,))]) == []
    assert q.last[0].sags == 0


def test_a_swell_on_one_phase_of_three():
    q = VoltageQuality(3)
    events = feed(q, [(10, (NOMINAL,) * 3), (2, (NOMINAL, 1.15 * NOMINAL, NOMINAL)), (10, (NOMINAL,) * 3)])
    assert events == [QualityEvent(SWELL + 1, T0 + 10), QualityEvent(NORMAL + 1, T0 + 12)]
    assert (q.last[1].swells, q.last[1].swell_duration, q.last[1].swell_magnitude) == (1, 2.0, 1.15 * NOMINAL)
    assert q.last[0].swells == q.last[2].swells == 0


def test_a_cut_of_10_s_is_no_sag():
    """Cut and sag start together (0 V is below both thresholds): the cut prevails."""
    q = VoltageQuality(1)
    events = feed(q, [(10, (NOMINAL,)), (10, (0.0,)), (10, (NOMINAL,))], step=1.0)
    assert events == [QualityEvent(CUT, T0 + 10), QualityEvent(NORMAL, T0 + 20)]
    assert (q.last[0].cuts, q.last[0].cut_duration, q.last[0].sags) == (1, 10.0, 0)


def test_a_cut_declared_before_the_sag_silences_it():
    """Cut first: a 1 s cut time threshold against a 5 s sag time threshold."""
    q = VoltageQuality(1, Thresholds(sag_time=5.0, cut_time=1.0))
    events = feed(q, [(10, (NOMINAL,)), (8, (0.0,)), (10, (NOMINAL,))], step=1.0)
    assert events == [QualityEvent(CUT, T0 + 10), QualityEvent(NORMAL, T0 + 18)]
    assert q.last[0].sags == 0


def test_a_sag_first_then_a_cut_logs_both():
    q = VoltageQuality(1)
    events = feed(q, [(10, (NOMINAL,)), (3, (184.0,)), (10, (0.0,)), (10, (NOMINAL,))], step=1.0)
    assert events == [QualityEvent(SAG, T0 + 10), QualityEvent(CUT, T0 + 13), QualityEvent(NORMAL, T0 + 23)]
    last = q.last[0]
    assert (last.sags, last.cuts) == (1, 1)
    assert (last.sag_duration, last.cut_duration, last.sag_magnitude) == (13.0, 10.0, 0.0)


def test_recovery_needs_the_hysteresis_and_5_s_of_stabilisation():
    """Back above the threshold but inside its 2 % band is not back; back for less than 5 s is
    not over: one sag from the first dip to the final return, with its deepest voltage."""
    q = VoltageQuality(1)
    threshold = Thresholds().sag
    in_band = threshold * 1.01  # above the threshold, below threshold + 2 %
    events = feed(q, [(10, (NOMINAL,)), (2, (200.0,)), (10, (in_band,)), (3, (NOMINAL,)), (2, (190.0,)),
                      (20, (NOMINAL,))], step=1.0)
    back_at = T0 + 10 + 2 + 10 + 3 + 2
    assert events == [QualityEvent(SAG, T0 + 10), QualityEvent(NORMAL, back_at)]
    assert (q.last[0].sags, q.last[0].sag_duration, q.last[0].sag_magnitude) == (1, back_at - (T0 + 10), 190.0)


def test_a_long_power_failure_is_a_cut_on_every_phase_logged_at_power_up():
    q = VoltageQuality(3)
    feed(q, [(60, (NOMINAL,) * 3)])
    down, up = T0 + 60, T0 + 60 + 300
    events = q.power_down(down, up)
    assert sorted(events, key=lambda e: e.code) == sorted(
        [QualityEvent(CUT + p, down) for p in range(3)] + [QualityEvent(NORMAL + p, up) for p in range(3)],
        key=lambda e: e.code)
    assert all((v.cuts, v.cut_duration) == (1, 300.0) for v in q.last)
    assert feed(q, [(60, (NOMINAL,) * 3)], start=up) == []


def test_a_power_failure_shorter_than_the_cut_time_threshold_logs_nothing():
    q = VoltageQuality(1, Thresholds(cut_time=5.0))
    assert q.power_down(T0, T0 + 4) == []
    assert q.last[0].cuts == 0


def test_a_sag_running_at_a_long_power_failure_ends_there():
    q = VoltageQuality(1)
    assert feed(q, [(10, (NOMINAL,)), (5, (184.0,))]) == [QualityEvent(SAG, T0 + 10)]
    events = q.power_down(T0 + 15, T0 + 75)
    assert events == [QualityEvent(CUT, T0 + 15), QualityEvent(NORMAL, T0 + 75)]
    assert (q.last[0].sags, q.last[0].sag_duration, q.last[0].cuts) == (1, 5.0, 1)


def test_the_state_survives_a_restart_mid_sag():
    """Saved mid-condition and restored into a new detector: the same events as without the restart."""
    pieces = [(10, (NOMINAL,)), (4, (184.0,)), (10, (NOMINAL,))]
    whole = feed(VoltageQuality(1), pieces)
    first = VoltageQuality(1)
    before = feed(first, pieces[:1] + [(2, (184.0,))])
    second = VoltageQuality(1)
    second.restore(first.to_json())
    after = feed(second, [(2, (184.0,)), pieces[2]], start=T0 + 12)
    assert before + after == whole


def test_thresholds_that_cannot_work_are_refused():
    q = VoltageQuality(1)
    for bad in (Thresholds(sag=10.0), Thresholds(swell=200.0), Thresholds(cut_time=0.0)):
        with pytest.raises(ValueError):
            q.set_thresholds(bad)
    assert q.thresholds == Thresholds()


# -- power quality profile ---------------------------------------------------------------------------
def test_averages_use_only_the_samples_taken():
    """Companion §5.9.4: 220 V / 10 A with 5 min off in a 10 min period stays 220 V / 10 A."""
    acc = PeriodAccumulator(1, 600)
    start = T0  # a period boundary
    assert acc.observe(start, start + 120, (220.0,), (10.0,)) == []
    acc.flag(STATUS_POWER_DOWN)
    closed = acc.observe(start + 420, start + 600, (220.0,), (10.0,))
    assert len(closed) == 1
    entry = closed[0]
    assert (entry.end, entry.average_volts, entry.average_amps) == (start + 600, (220.0,), (10.0,))
    assert entry.status & STATUS_POWER_DOWN


def test_min_max_start_from_the_first_sample_of_each_period():
    acc = PeriodAccumulator(3, 300)
    first = acc.observe(T0, T0 + 300, (230.0, 231.0, 229.0), (1.0, 2.0, 3.0))
    # the second period: 200 V on L1 for 100 s, then 240 V for 200 s
    acc.observe(T0 + 300, T0 + 400, (200.0, 231.0, 229.0), (1.0, 2.0, 3.0))
    second = acc.observe(T0 + 400, T0 + 600, (240.0, 231.0, 229.0), (1.0, 2.0, 3.0))
    assert first[0].min_volts == first[0].max_volts == (230.0, 231.0, 229.0)
    assert second[0].min_volts[0] == 200.0 and second[0].max_volts[0] == 240.0
    assert second[0].average_volts[0] == pytest.approx((200 * 100 + 240 * 200) / 300)
    assert second[0].end == T0 + 600


def test_a_period_without_samples_has_no_entry():
    acc = PeriodAccumulator(1, 600)
    acc.observe(T0, T0 + 100, (230.0,), (1.0,))
    # off from T0+100 to T0+2000: the open period closes at its own boundary, the next two have no sample
    closed = acc.catch_up(T0 + 2000)
    assert [c.end for c in closed] == [T0 + 600]
    assert [c.end for c in acc.observe(T0 + 2000, T0 + 2400, (230.0,), (1.0,))] == [T0 + 2400]


def test_a_capture_period_of_7_minutes_is_refused():
    acc = PeriodAccumulator(1, 600)
    with pytest.raises(ValueError):
        acc.set_period(420)
    assert acc.period == 600


def test_a_clock_set_back_closes_the_open_period_at_the_old_time():
    """12:15 set back to 12:05 with 10-minute periods: the 12:10-12:20 period closes at 12:15 (the
    adjustment), not at a 12:20 the clock has not reached, and the profile goes on from 12:05."""
    acc = PeriodAccumulator(1, 600)
    first = acc.observe(T0, T0 + 900, (230.0,), (1.0,))  # T0 + 600 closed; T0+600..T0+1200 open
    assert [e.end for e in first] == [T0 + 600]
    closed = acc.set_back(T0 + 900, T0 + 300)
    assert [(e.end, e.average_volts) for e in closed] == [(T0 + 900, (230.0,))]
    assert acc.observe(T0 + 300, T0 + 400, (220.0,), (1.0,)) == []
    assert acc.set_back(T0 + 400, T0 + 350) == []  # back within the open period: it goes on
    entries = acc.observe(T0 + 350, T0 + 600, (220.0,), (1.0,))
    assert [(e.end, e.average_volts) for e in entries] == [(T0 + 600, (220.0,))]
