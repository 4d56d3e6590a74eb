"""A meter on a clock the test moves: the scenario tests' site. The platform time is a list the
test advances (`run`, `run_until`); each step ticks the meter, as its registration loop would."""
from __future__ import annotations

from pathlib import Path

from smartmeter.cosem.obis import Obis
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

METER_TYPE = {1: 100, 3: 300}  # `meter run --phases`: single-phase 100, poly-phase 300


class MeterSite:
    STEP = 15.0  # s of meter time per tick unless a test says otherwise

    def __init__(self, data_dir: Path, start: float, phases: int = 1, backfill_days: int = 0) -> None:
        self.platform = [float(start)]
        self.data_dir, self.phases, self.backfill_days = data_dir, phases, backfill_days
        self.meter = self.open()

    def open(self) -> Meter:
        return Meter(MeterConfig(data_dir=self.data_dir, backfill_days=self.backfill_days,
                                 meter_type=METER_TYPE[self.phases]),
                     clock=MeterClock(source=lambda: self.platform[0]))

    def restart(self) -> None:
        """A clean stop and start on the same data directory."""
        self.meter.close()
        self.meter = self.open()

    def now(self) -> int:
        return int(self.platform[0])

    def run_until(self, t: float, step: float | None = None) -> None:
        while self.platform[0] < t:
            self.platform[0] = min(t, self.platform[0] + (step or self.STEP))
            self.meter.tick()

    def run(self, seconds: float, step: float | None = None) -> None:
        self.run_until(self.platform[0] + seconds, step)

    def sim(self, name: str, **args) -> dict:
        """One input of the physical world, as `smartmeter sim NAME ...` sends it."""
        answer = self.meter.control({"input": name, **args})
        assert answer["ok"], answer
        return answer["status"]

    def obj(self, obis: str):
        return self.meter.directory.by_ln[Obis.parse(obis).to_bytes()][1]

    def a_plus(self) -> int:
        return self.meter.legal.execute(legal.ReadEnergyRegisters()).a_plus

    def log(self, name: str) -> list[tuple[int, int]]:
        """(time, code) of an event log's entries, in the order recorded."""
        return [(e.time, e.code) for e in self.meter.events.entries(name)]
