"""Rate registers and the end of a billing period inside the legally relevant part (companion
§5.5, §5.6), through the protective interface on a test clock (commands carry the times).

Expectations come from the scenario: the energy injected per rate, the demand periods ended with
their averages, the number of billing periods closed; never from the code under test.
"""
from __future__ import annotations

import json
import random
import sqlite3

import pytest

from smartmeter.legal import interface as legal
from smartmeter.legal.metering import MeteringUnit
from smartmeter.legal.registers import REGISTER_NAMES

T0 = 1_773_144_000  # 2026-03-10 12:00 UTC, on a 15-minute boundary
ALL_1, ALL_2 = (1, 1, 1, 1), (2, 2, 2, 2)


@pytest.fixture
def part(tmp_path):
    p = legal.LegalInterface(tmp_path)
    yield p
    p.close()


def rates(p) -> dict[tuple[str, int], int]:
    snap = p.execute(legal.ReadRateRegisters())
    return {(n, r): snap.value(n, r) for n in REGISTER_NAMES for r in (0, 1, 2)}


def assert_rates_sum_to_totals(p) -> None:
    totals = p.execute(legal.ReadEnergyRegisters())
    values = rates(p)
    for n in REGISTER_NAMES:
        assert sum(values[(n, r)] for r in (0, 1, 2)) == getattr(totals, n), n


def test_energy_goes_to_the_rate_active_when_it_was_registered(part):
    """Whole hours at 1 kW under T1, then under T2: each rate holds exactly its hours; the rates
    add up to the total at every step."""
    part.execute(legal.SetActiveRates(ALL_1))
    part.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 3 * 3600.0))  # 3 kWh in rate 1
    assert_rates_sum_to_totals(part)
    part.execute(legal.SetActiveRates(ALL_2))
    part.execute(legal.RegisterSimulatedPower(2000.0, 0.0, 2 * 3600.0))  # 4 kWh in rate 2
    values = rates(part)
    assert values[("a_plus", 1)] == 3000
    assert 3999 <= values[("a_plus", 2)] <= 4000  # the sampled metrology may leave the last Wh unfinished
    assert values[("a_plus", 0)] == 0 and values[("a_minus", 1)] == values[("a_minus", 2)] == 0
    assert_rates_sum_to_totals(part)
    assert part.execute(legal.ReadRateRegisters()).active == ALL_2


def test_rates_add_up_to_the_total_at_every_step_of_random_switching(part):
    """Random loads in every quadrant, random switches (also to no rate and back) in between:
    after every step the rates of each quantity add up to its total, to the Wh."""
    rng = random.Random(7)
    for _ in range(200):
        if rng.random() < 0.5:
            part.execute(legal.SetActiveRates(tuple(rng.choice((0, 1, 2)) for _ in REGISTER_NAMES)))
        part.execute(legal.RegisterSimulatedPower(rng.uniform(-3000, 3000), rng.uniform(-2000, 2000),
                                                  rng.choice((0.3, 7.0, 61.0, 900.0))))
        assert_rates_sum_to_totals(part)


def test_rates_and_active_rate_survive_a_restart(tmp_path):
    p = legal.LegalInterface(tmp_path)
    p.execute(legal.SetActiveRates((2, 1, 2, 1)))
    p.execute(legal.RegisterSimulatedPower(1500.0, 500.0, 1800.0))
    before = (p.execute(legal.ReadRateRegisters()), p.execute(legal.ReadEnergyRegisters()))
    p.close()
    p = legal.LegalInterface(tmp_path)
    try:
        assert (p.execute(legal.ReadRateRegisters()), p.execute(legal.ReadEnergyRegisters())) == before
        assert p.execute(legal.ReadFatalErrors()) == 0
    finally:
        p.close()


@pytest.mark.welmec("I3-4")
@pytest.mark.parametrize("edit", ["UPDATE rate_register SET units = units + 5 WHERE name = 'a_plus' AND rate = 1",
                                  "UPDATE meta SET value = '{\"a_plus\": 1, \"a_minus\": 1, \"r_plus\": 1, "
                                  "\"r_minus\": 1}' WHERE key = 'active_rates'"])
def test_an_edited_rate_register_or_active_rate_is_a_damaged_store(tmp_path, edit):
    p = legal.LegalInterface(tmp_path)
    p.execute(legal.SetActiveRates(ALL_2))
    p.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 3600.0))
    p.close()
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    with db:
        db.execute(edit)
    db.close()
    p = legal.LegalInterface(tmp_path)
    try:
        assert p.execute(legal.ReadFatalErrors()) & legal.FATAL_NV_MEMORY
    finally:
        p.close()
    report = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}
    assert not report["energy registers"].ok


def test_a_store_from_before_rates_keeps_its_energy_in_rate_0(tmp_path):
    """A data directory written before rate registers existed: its totals verify with their old
    signature and become rate 0; what is registered afterwards goes into the rates."""
    p = legal.LegalInterface(tmp_path)
    p.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 3600.0))
    totals = p.execute(legal.ReadEnergyRegisters())
    p.close()
    # what such a store held: totals signed alone (v1), no rate rows, no active rates
    from smartmeter.legal.signing import MeterSigner

    signer = MeterSigner.load_or_create(tmp_path)
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    milli = dict(db.execute("SELECT name, milli_units FROM energy_register").fetchall())
    message = b"smartmeter/registers/v1\0" + b"".join(milli[n].to_bytes(8, "big") for n in REGISTER_NAMES)
    with db:
        db.execute("DROP TABLE rate_register")
        db.execute("DELETE FROM meta WHERE key = 'active_rates'")
        db.execute("UPDATE meta SET value = ? WHERE key = 'registers_signature'", (json.dumps(signer.sign(message).hex()),))
    db.close()
    p = legal.LegalInterface(tmp_path)
    try:
        assert p.execute(legal.ReadFatalErrors()) == 0
        assert rates(p)[("a_plus", 0)] == totals.a_plus
        p.execute(legal.SetActiveRates(ALL_1))
        p.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 3600.0))
        assert rates(p)[("a_plus", 1)] == 1000
        assert_rates_sum_to_totals(p)
    finally:
        p.close()
    assert all(r.ok for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES))


def test_a_billing_period_closes_in_the_order_of_the_companion_standard(part):
    """Counter +1, maxima into the cumulative maxima, capture, maxima reset (§5.6)."""
    part.execute(legal.StartDemandPeriod(T0))
    part.execute(legal.SetActiveRates(ALL_1))
    part.execute(legal.RegisterSimulatedPower(4000.0, 1200.0, 900.0))  # 1000 Wh, 300 varh: 4000 W, 1200 var
    part.execute(legal.EndMeasurementPeriod(T0 + 900))
    part.execute(legal.SetActiveRates(ALL_2))
    part.execute(legal.RegisterSimulatedPower(2000.0, 0.0, 900.0))  # 500 Wh: 2000 W
    part.execute(legal.EndMeasurementPeriod(T0 + 1800))
    totals = part.execute(legal.ReadEnergyRegisters())
    split = rates(part)
    row = part.execute(legal.EndBillingPeriod(T0 + 1800, "remote"))
    assert (row.capture_time, row.counter, row.trigger) == (T0 + 1800, 1, "remote")
    assert row.energy[:3] == (totals.a_plus, split[("a_plus", 1)], split[("a_plus", 2)])
    assert row.energy[:3] == (1500, 1000, 500) or row.energy[0] == 1499  # 1 Wh may still be a fraction
    assert row.energy[6:9] == (totals.r_plus, split[("r_plus", 1)], split[("r_plus", 2)])
    assert row.maximum[0] in (3999, 4000) and row.maximum_time[0] == T0 + 900
    assert row.maximum[2] in (1199, 1200) and row.maximum_time[2] == T0 + 900
    assert row.maximum[1] == 0 and row.maximum_time[1] == legal.BILLING_NO_TIME
    assert row.cumulative == row.maximum  # the first period: cumulative = 0 + its maxima
    after = part.execute(legal.ReadMaximumDemand("a_plus"))
    assert (after.value, after.cumulative) == (0, row.maximum[0])
    # the second period adds its maxima onto the first
    part.execute(legal.RegisterSimulatedPower(1000.0, 0.0, 900.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 2700))
    second = part.execute(legal.EndBillingPeriod(T0 + 2700, "button"))
    assert second.counter == 2 and second.maximum[0] in (999, 1000)
    assert second.cumulative[0] == row.cumulative[0] + second.maximum[0]
    assert part.execute(legal.ReadBillingProfile()) == (row, second)


def test_the_counter_rolls_over_from_99_to_0_and_the_profile_keeps_the_newest_15(part):
    rows = [part.execute(legal.EndBillingPeriod(T0 + 60 * i, "ad-hoc")) for i in range(101)]
    assert [r.counter for r in rows[97:]] == [98, 99, 0, 1]
    assert part.execute(legal.ReadBillingCounter()) == 1
    kept = part.execute(legal.ReadBillingProfile())
    assert kept == tuple(rows[-legal.BILLING_PROFILE_CAPACITY:])
    assert part.execute(legal.CountBillingProfileEntries()) == 15


def test_billing_refuses_what_it_cannot_do(part):
    with pytest.raises(legal.CommandRefused, match="trigger"):
        part.execute(legal.EndBillingPeriod(T0, "someone"))
    part.execute(legal.PowerDown(T0))
    with pytest.raises(legal.CommandRefused, match="powered down"):
        part.execute(legal.EndBillingPeriod(T0 + 1, "remote"))
    assert part.execute(legal.ReadBillingCounter()) == 0
    with pytest.raises(legal.CommandRefused):
        part.execute(legal.SetActiveRates((1, 2, 3, 1)))
    part.execute(legal.SetActiveRates((2, 2, 2, 2)))  # a meter started during an outage sets its tariff
    assert part.execute(legal.ReadRateRegisters()).active == (2, 2, 2, 2)


@pytest.mark.welmec("L2")
def test_the_billing_profile_is_hash_linked_and_an_edit_shows(tmp_path):
    """The billing profile is stored like the load profile: hash-linked, checked by verify-storage."""
    p = legal.LegalInterface(tmp_path)
    for i in range(3):
        p.execute(legal.EndBillingPeriod(T0 + 60 * i, "remote"))
    p.close()
    assert {r.name: r.ok for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}["billing"]
    db = sqlite3.connect(tmp_path / "legal.sqlite3")
    with db:
        db.execute("UPDATE chain_entry SET time_utc = time_utc + 1 WHERE tbl = 'billing' AND seq = 2")
    db.close()
    report = {r.name: r for r in legal.verify_stored_data(tmp_path, legal.STORAGE_TABLES)}["billing"]
    assert not report.ok and report.first_bad_seq == 2


def test_a_steady_load_measured_as_repeated_frames_equals_frame_by_frame():
    """The fast path for long simulated intervals (one frame standing for its copies) registers
    what measuring every frame registers, and what the load is (P·t)."""
    delivered = []
    for interval in ([600.0], [0.1] * 6000):
        got = {"a_plus": 0, "r_minus": 0}

        def take(m, got=got):
            got["a_plus"] += m.energy_delta.a_plus
            got["r_minus"] += m.energy_delta.r_minus

        unit = MeteringUnit(3, on_measurement=take)
        unit.set_load(2300.0, -700.0)
        for seconds in interval:
            unit.measure_for(seconds, steady=True)
        delivered.append(got)
    assert abs(delivered[0]["a_plus"] - delivered[1]["a_plus"]) <= 2  # µWh
    assert abs(delivered[0]["r_minus"] - delivered[1]["r_minus"]) <= 2
    assert abs(delivered[0]["a_plus"] - 2300 * 1_000_000 / 6) <= 50  # 2300 W for 600 s, in µWh
    assert abs(delivered[0]["r_minus"] - 700 * 1_000_000 / 6) <= 1_000  # (the first window is deferred)


def test_a_billing_capture_whose_commit_fails_changes_nothing(part, monkeypatch):
    """A store that refuses the capture (a full disk): the period stays open with its maxima, as
    if the capture had not been asked; the next capture holds them."""
    part.execute(legal.StartDemandPeriod(T0))
    part.execute(legal.RegisterSimulatedPower(2000.0, 0.0, 900.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 900))
    before = part.execute(legal.ReadMaximumDemand("a_plus"))

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(part._billing, "append", full)
        with pytest.raises(sqlite3.OperationalError):
            part.execute(legal.EndBillingPeriod(T0 + 900, "remote"))
    assert part.execute(legal.ReadMaximumDemand("a_plus")) == before
    assert part.execute(legal.ReadBillingCounter()) == 0 and part.execute(legal.CountBillingProfileEntries()) == 0
    part.execute(legal.RegisterSimulatedPower(500.0, 0.0, 900.0))
    part.execute(legal.EndMeasurementPeriod(T0 + 1800))
    row = part.execute(legal.EndBillingPeriod(T0 + 1800, "remote"))
    assert (row.counter, row.maximum[0], row.maximum_time[0], row.cumulative[0]) == (1, before.value, T0 + 900,
                                                                                      before.value)
