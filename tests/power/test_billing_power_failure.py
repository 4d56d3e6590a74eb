"""Ends of billing periods across power failures (companion §5.6, WELMEC 7.2 I3-2): kill -9 of
the legally relevant part while it closes billing periods leaves each period closed with its
whole entry, or not closed at all.

A driver process (this file run as a script) stands where the meter's communication side
stands: it starts the legal process (`start_legal_process`, its own process, as in the meter)
and, through the protective interface only, closes one billing period after another on a
clock the commands carry: a rate for the period, 15 minutes of a load that depends on the
period counter (so each period has a maximum demand of its own, in one quantity of A and one
of R), the end of the demand period, the end of the billing period. It prints every step and
every entry the legal part answered. The test kills the driver's process group (driver and
legal process together) at random instants, or just after the driver announced a capture so
that the kill falls into it; the restarted driver first prints what the legal part holds.

What the test checks after every restart, from its own record of the entries answered:
- the counter is the number of billing periods ever closed modulo 100: the entries answered,
  plus the capture in progress at the kill if and only if its entry is stored;
- the stored entries are the last min(15, closed) of them, each exactly as answered, with
  consecutive counters (no gap, no duplicate);
- every entry: rate 1 + rate 2 = total per quantity, all of the period's energy in the period's
  rate, the period's maximum demand where the load was and 0 elsewhere, its time within the
  period (the reset time where nothing was registered), cumulative maximum = the previous
  entry's + this entry's maximum;
- the live registers: rate 0 (nothing registered without a rate on this fresh meter) + rate 1
  + rate 2 = total; after the last capture the maximum demands are 0 (or, when a demand period
  already closed after it, that period's demand) and the cumulative maxima are the last entry's;
- `verify_stored_data` finds every stored table intact, and the fatal error register is 0.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smartmeter.legal import interface as legal

# companion §5.6: the counter runs 00..99, the profile keeps at least the last 15 periods;
# §5.3: a cumulative maximum wraps after 9 999 999 W (direct connection)
COUNTER_MODULUS = 100
KEPT_ENTRIES = 15
CUMULATIVE_WRAP = 10_000_000
TRIGGERS = ("scheduled", "button", "remote", "ad-hoc")  # §5.6, as the legal part names them
QUANTITIES = ("a_plus", "a_minus", "r_plus", "r_minus")  # columns of each energy triple, in order
NO_TIME = -1  # a maximum never reached and never reset: no time
T0 = 1_773_144_000  # 2026-03-10 12:00 UTC, a 15-minute boundary: the first demand period starts here
PERIOD = 900
ROUNDS = 24


# -- the scenario: what each billing period registers (both sides compute it from the counter) -------

def rate_of(counter: int) -> int:
    """Odd periods in rate 1, even ones in rate 2 (99 -> 0 alternates too: 100 is even)."""
    return 1 if counter % 2 else 2


def load_of(counter: int) -> tuple[float, float]:
    """(W, var) drawn during the period: active import, or export every third period; reactive
    import in even periods, export in odd ones."""
    active, reactive = 1000 + 37 * counter, 200 + 11 * counter
    return (float(active if counter % 3 else -active), float(reactive if counter % 2 == 0 else -reactive))


def trigger_of(counter: int) -> str:
    return TRIGGERS[counter % len(TRIGGERS)]


def demand_of(counter: int) -> dict[str, int]:
    """The average demand of one full 15-minute period of the period's load, per quantity (W/var)."""
    active, reactive = load_of(counter)
    return {"a_plus": max(active, 0), "a_minus": max(-active, 0), "r_plus": max(reactive, 0),
            "r_minus": max(-reactive, 0)}


# -- the driver (the process that is killed) -------------------------------------------------------

def _row_json(row: legal.BillingRow) -> dict:
    return {"capture_time": row.capture_time, "counter": row.counter, "energy": list(row.energy),
            "maximum": list(row.maximum), "maximum_time": list(row.maximum_time),
            "cumulative": list(row.cumulative), "trigger": row.trigger}


def _emit(kind: str, value) -> None:
    print(json.dumps([kind, value]), flush=True)


def _state(part) -> dict:
    """Everything the checks need, read through the protective interface after a start."""
    rates = part.execute(legal.ReadRateRegisters())
    totals = part.execute(legal.ReadEnergyRegisters())
    latest = part.execute(legal.ReadLatestProfileEntry(legal.LOAD_PROFILE_1))
    return {
        "fatal": part.execute(legal.ReadFatalErrors()),
        "counter": part.execute(legal.ReadBillingCounter()),
        "entries": part.execute(legal.CountBillingProfileEntries()),
        "rows": [_row_json(r) for r in part.execute(legal.ReadBillingProfile())],
        "totals": {n: getattr(totals, n) for n in QUANTITIES},
        "rates": {n: [rates.value(n, r) for r in (0, 1, 2)] for n in QUANTITIES},
        "maximum": {n: [m.value, m.capture_time, m.cumulative]
                    for n in QUANTITIES for m in [part.execute(legal.ReadMaximumDemand(n))]},
        "last_demand_period_end": None if latest is None else latest.capture_time,
    }


def drive(data_dir: Path, only_state: bool) -> None:
    """Print the state found, then close billing periods until killed."""
    part = legal.start_legal_process(data_dir)
    state = _state(part)
    _emit("state", state)
    if only_state:
        part.close()
        return
    # a start begins a demand period; the one interrupted is not completed (as the meter does)
    t = state["last_demand_period_end"] or T0
    part.execute(legal.StartDemandPeriod(t))
    counter = state["counter"]
    while True:
        counter = (counter + 1) % COUNTER_MODULUS
        part.execute(legal.SetActiveRates((rate_of(counter),) * len(QUANTITIES)))
        part.execute(legal.RegisterSimulatedPower(*load_of(counter), float(PERIOD)))
        t += PERIOD
        part.execute(legal.EndMeasurementPeriod(t))
        _emit("closing", counter)
        _emit("billed", _row_json(part.execute(legal.EndBillingPeriod(t, trigger_of(counter)))))


# -- the test side -----------------------------------------------------------------------------------

@dataclass
class Driver:
    process: subprocess.Popen
    lines: list[list] = field(default_factory=list)  # [kind, value] as printed
    closing: int = 0  # "closing" lines read so far
    seen: threading.Condition = field(default_factory=threading.Condition)
    # (n, delay): the kill comes `delay` seconds after the n-th "closing" line is read
    kill_into_capture: tuple[int, float] | None = None

    def read(self) -> None:
        for line in self.process.stdout:
            with self.seen:
                self.lines.append(json.loads(line))
                self.closing += self.lines[-1][0] == "closing"
                if self.kill_into_capture is not None and self.closing == self.kill_into_capture[0]:
                    # from this thread, at once: the capture takes about a millisecond
                    until = time.monotonic() + self.kill_into_capture[1]
                    while time.monotonic() < until:
                        pass
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.kill_into_capture = None
                self.seen.notify_all()
        with self.seen:
            self.seen.notify_all()

    def state(self, timeout: float = 60.0) -> dict:
        """The first line: what the driver found at its start."""
        with self.seen:
            self.seen.wait_for(lambda: self.lines or self.process.poll() is not None, timeout)
            if not self.lines:
                ended = self.process.poll() is not None
                raise AssertionError(f"driver: no state within {timeout} s (exit {self.process.poll()}):\n"
                                     f"{self.process.stderr.read() if ended else ''}")
        kind, value = self.lines[0]
        assert kind == "state", self.lines[0]
        return value


def start_driver(data_dir: Path, only_state: bool = False,
                 kill_into_capture: tuple[int, float] | None = None) -> tuple[Driver, threading.Thread]:
    process = subprocess.Popen(
        [sys.executable, __file__, str(data_dir), *(["--state"] if only_state else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True)  # its own process group: the kill takes the legal process with it
    driver = Driver(process, kill_into_capture=kill_into_capture)
    reader = threading.Thread(target=driver.read, daemon=True)
    reader.start()
    return driver, reader


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie runs nothing)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, _ppid, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def power_failure(driver: Driver, reader: threading.Thread) -> None:
    """kill -9 of the driver and the legal process; returns when both are gone and every line
    the driver wrote before has been read."""
    try:
        os.killpg(driver.process.pid, signal.SIGKILL)
    except ProcessLookupError:  # killed into a capture already, and all of it gone
        pass
    driver.process.wait()
    deadline = time.monotonic() + 10
    while _group_alive(driver.process.pid):
        assert time.monotonic() < deadline, "the legal process outlived the kill"
        time.sleep(0.005)
    reader.join(10)
    assert not reader.is_alive()


@dataclass
class History:
    """Every entry the legal part answered or was found to hold, oldest first (index n-1 is the
    n-th billing period ever closed), and the driver run each was made in."""

    rows: list[dict] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)

    def add(self, row: dict, run: int, where: str) -> None:
        check_row(row, self.rows[-1] if self.rows else None, self.runs[-1] == run if self.rows else False, where)
        self.rows.append(row)
        self.runs.append(run)


def check_row(row: dict, previous: dict | None, same_run: bool, where: str) -> None:
    """One entry against the scenario and the entry before it."""
    counter = row["counter"]
    expected_counter = (previous["counter"] + 1) % COUNTER_MODULUS if previous else 1
    assert counter == expected_counter, f"{where}: counter {counter} after {previous and previous['counter']}"
    assert row["trigger"] == trigger_of(counter), where
    if previous:
        assert row["capture_time"] > previous["capture_time"], where
    energy = {n: row["energy"][3 * i:3 * i + 3] for i, n in enumerate(QUANTITIES)}
    before = {n: previous["energy"][3 * i:3 * i + 3] for i, n in enumerate(QUANTITIES)} if previous \
        else dict.fromkeys(QUANTITIES, [0, 0, 0])
    demand = demand_of(counter)
    rate = rate_of(counter)
    for i, n in enumerate(QUANTITIES):
        total, rate1, rate2 = energy[n]
        assert rate1 + rate2 == total, f"{where}: {n} rates {rate1} + {rate2} != total {total}"
        delta = [now - then for now, then in zip(energy[n], before[n])]
        # all of the period's energy went to the period's rate
        assert delta[rate] == delta[0] and delta[3 - rate] == 0, f"{where}: {n} {before[n]} -> {energy[n]}"
        one_period = demand[n] * PERIOD / 3600  # Wh / varh of one full demand period
        if same_run:  # exactly one demand period of the load (the fraction of a Wh carries over)
            assert abs(delta[0] - one_period) <= 1, f"{where}: {n} grew {delta[0]}, expected {one_period}"
        else:  # a restart in the period: what was persisted of the interrupted period adds to a full one
            assert one_period - 1 <= delta[0] <= 2 * one_period + 1, f"{where}: {n} grew {delta[0]} ({one_period})"
        maximum, at, cumulative = row["maximum"][i], row["maximum_time"][i], row["cumulative"][i]
        # the sampled metrology may leave the last Wh of a period unfinished: 1 W/var less
        assert demand[n] - 1 <= maximum <= demand[n], f"{where}: {n} maximum {maximum}, load {demand[n]}"
        if maximum:
            earliest = previous["capture_time"] + PERIOD if previous else T0 + PERIOD
            assert earliest <= at <= row["capture_time"] and at % PERIOD == 0, f"{where}: {n} maximum at {at}"
            if same_run:
                assert at == row["capture_time"], where
        else:  # nothing registered: the time of the last reset (none before the first capture)
            assert at == (previous["capture_time"] if previous else NO_TIME), f"{where}: {n} maximum at {at}"
        expected_cumulative = ((previous["cumulative"][i] if previous else 0) + maximum) % CUMULATIVE_WRAP
        assert cumulative == expected_cumulative, f"{where}: {n} cumulative {cumulative} != {expected_cumulative}"


def check_state(state: dict, history: History, in_flight: int | None, run: int, where: str) -> str:
    """The state found at start `run` against what was answered before the kill; an entry stored
    for the capture in flight joins the history. -> what became of the capture in flight."""
    assert state["fatal"] == 0, f"{where}: fatal error register {state['fatal']:#x}"
    outcome = "none in flight"
    if in_flight is not None:
        if state["counter"] == in_flight:
            assert state["rows"], where
            history.add(state["rows"][-1], run - 1, f"{where}, the capture in flight")  # made before the kill
            outcome = "stored"
        else:
            outcome = "not stored"
    made = len(history.rows)
    assert state["counter"] == made % COUNTER_MODULUS, \
        f"{where}: counter {state['counter']} after {made} periods closed (in flight: {in_flight})"
    kept = history.rows[-KEPT_ENTRIES:]
    assert state["entries"] == len(kept) == min(made, KEPT_ENTRIES), where
    assert state["rows"] == kept, f"{where}: stored entries differ from those answered"
    # the live registers: rate 0 holds nothing on this meter, the rates add up to the totals
    for n in QUANTITIES:
        rate0, rate1, rate2 = state["rates"][n]
        assert rate0 == 0 and rate0 + rate1 + rate2 == state["totals"][n], f"{where}: {n} {state['rates'][n]}"
    if not kept:
        return outcome
    last = kept[-1]
    for i, n in enumerate(QUANTITIES):
        assert state["totals"][n] >= last["energy"][3 * i], where
        value, at, cumulative = state["maximum"][n]
        assert cumulative == last["cumulative"][i], f"{where}: {n} cumulative {cumulative} after the capture"
        if state["last_demand_period_end"] == last["capture_time"]:
            # the capture was the last step: the maxima restarted at 0 with it
            assert (value, at) == (0, last["capture_time"]), f"{where}: {n} maximum {value} at {at} after the capture"
        else:  # a demand period of the next billing period closed before the kill
            demand = demand_of((last["counter"] + 1) % COUNTER_MODULUS)[n]
            assert demand - 1 <= value <= demand, f"{where}: {n} maximum {value}, load {demand}"
    return outcome


def verify_offline(data_dir: Path, where: str) -> None:
    reports = legal.verify_stored_data(data_dir, legal.STORAGE_TABLES)
    assert {r.name for r in reports} >= {"billing", "energy registers"}, reports
    assert all(r.ok for r in reports), f"{where}: {[(r.name, r.problem) for r in reports if not r.ok]}"


@pytest.mark.welmec("I3-2")
def test_a_kill_during_billing_leaves_each_capture_whole_or_absent(tmp_path):
    """Twenty-four kills -9 of the legal process (with its caller) while billing periods are closed
    every few milliseconds: half at a random instant, half just after a capture was asked for;
    after each restart the counter counts the periods closed (modulo 100), the stored entries
    are exactly those answered plus the capture in flight if and only if its counter went up,
    and every entry and the live registers keep the billing invariants (module docstring)."""
    rng = random.Random(20260310)
    data_dir = tmp_path / "d"
    history = History()
    outcomes: list[str] = []
    notes: list[str] = []
    in_flight: int | None = None
    driver = None
    try:
        for run in range(ROUNDS + 1):
            where = f"start {run}"
            # odd runs: killed just after the driver asked for its n-th capture, into the capture
            # (about a millisecond passes from that line to the answer: short delays mostly land before
            # the commit, longer ones after it)
            delay = rng.uniform(0.0, 0.0004) if run % 4 == 1 else rng.uniform(0.0004, 0.002)
            into_capture = (rng.randint(5, 150), delay) if run % 2 else None
            driver, reader = start_driver(data_dir, only_state=run == ROUNDS, kill_into_capture=into_capture)
            outcomes.append(check_state(driver.state(), history, in_flight, run, where))
            if run == ROUNDS:
                assert driver.process.wait(30) == 0, driver.process.stderr.read()
                break
            if into_capture:
                driver.process.wait(60)
            else:  # anywhere in the loop
                time.sleep(rng.uniform(0.05, 0.6))
            power_failure(driver, reader)
            verify_offline(data_dir, f"after kill {run}")
            in_flight = None
            for kind, value in driver.lines[1:]:
                if kind == "closing":
                    in_flight = value
                elif kind == "billed":
                    assert value["counter"] == in_flight, f"{where}: answered {value['counter']} for {in_flight}"
                    history.add(value, run, f"{where}, entry {len(history.rows) + 1}")
                    in_flight = None
            notes.append(f"kill {run}: {len(history.rows)} periods closed, in flight {in_flight}")
    finally:
        if driver is not None and driver.process.poll() is None:  # a failed check: no driver left behind
            os.killpg(driver.process.pid, signal.SIGKILL)
            driver.process.wait()
        print("\n".join(f"{note} -> {outcome}" for note, outcome in zip(notes, outcomes[1:])))
    # the counter wrapped, the profile was full, and kills fell on both sides of a capture's commit
    assert len(history.rows) > 2 * COUNTER_MODULUS, len(history.rows)
    assert {"stored", "not stored"} <= set(outcomes), outcomes


if __name__ == "__main__":
    drive(Path(sys.argv[1]), "--state" in sys.argv[2:])
