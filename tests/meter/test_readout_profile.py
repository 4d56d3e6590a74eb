"""The Instantaneous Readout Profile 0-0:21.0.5.255 (companion §5.9.1, catalog §3.8) on a running
meter, through the real server path (meter_sessions): IC 7 version 0 in the object list; one
entry of clock.time and every instantaneous value object the meter has; captured only by its
capture method, from one reading of the metrology, so every value equals what the object itself
reads at that moment; a capture replaces the entry; selective access by range and by entry.

The capture objects expected are the companion's table (§5.9.1, OBIS codes of catalog §8), written
here: 44 values on a poly-phase meter (45 capture objects with the clock, as the companion says),
22 on a single-phase one (its L2/L3 objects do not exist). Values follow from the load the test
sets (`smartmeter sim load`), at 230 V: P, S = P / pf, I = S / U.
"""
from __future__ import annotations

import pytest

from meter_sessions import SUCCESS, ClientSession
from meter_site import MeterSite
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import EntryDescriptor, RangeDescriptor, SelectiveAccessDescriptor
from smartmeter.legal import interface as legal

PROFILE, CLOCK, ASSOCIATION = "0-0:21.0.5.255", "0-0:1.0.0.255", "0-0:40.0.0.255"
CLOCK_COLUMN = (8, Obis.parse(CLOCK).to_bytes(), 2, 0)
START = 1_773_144_030.0
NOMINAL_V = 230.0

POWERS = (1, 2, 3, 4, 9, 10)  # +P -P +Q -Q +S -S: C of the total; L1 +20, L2 +40, L3 +60
SINGLE_PHASE_VALUES = {
    "1-0:32.7.0.255", "1-0:31.7.0.255", "1-0:90.7.0.255", "1-0:14.7.0.255",
    *(f"1-0:{c}.7.0.255" for c in POWERS), *(f"1-0:{c + 20}.7.0.255" for c in POWERS),
    "1-0:15.7.0.255", "1-0:13.7.0.255", "1-0:33.7.0.255", "1-0:84.7.0.255", "1-0:85.7.0.255", "1-0:81.7.40.255",
}
POLY_PHASE_ONLY = {
    "1-0:52.7.0.255", "1-0:72.7.0.255", "1-0:51.7.0.255", "1-0:71.7.0.255",
    *(f"1-0:{c + 40}.7.0.255" for c in POWERS), *(f"1-0:{c + 60}.7.0.255" for c in POWERS),
    "1-0:53.7.0.255", "1-0:73.7.0.255", "1-0:86.7.0.255", "1-0:87.7.0.255", "1-0:81.7.51.255", "1-0:81.7.62.255",
}
VALUES = {1: SINGLE_PHASE_VALUES, 3: SINGLE_PHASE_VALUES | POLY_PHASE_ONLY}


class Site(MeterSite):
    def __init__(self, data_dir, phases: int) -> None:
        super().__init__(data_dir, START, phases)
        self.management = ClientSession(self.meter, "management")

    def load(self, power: float, pf: float) -> None:
        self.sim("load", power=power, pf=pf)
        self.run(60)

    def capture(self, session: ClientSession | None = None) -> int:
        return (session or self.management).action(7, PROFILE, 2, Data.integer(0))

    def read(self, obis: str, attribute: int = 2, class_id: int = 7, selection=None) -> Data:
        result, value = self.management.get(class_id, obis, attribute, selection)
        assert result == SUCCESS, (obis, attribute, result)
        return value

    def buffer(self, selector=None) -> list[list[Data]]:
        selection = None if selector is None else SelectiveAccessDescriptor(selector.SELECTOR, selector.to_data())
        return [row.value for row in self.read(PROFILE, 2, selection=selection).value]

    def columns(self) -> list[tuple]:
        return [tuple(v.value for v in c.value) for c in self.read(PROFILE, 3).value]


@pytest.fixture(params=[1, 3], ids=["single-phase", "poly-phase"])
def site(request, tmp_path):
    s = Site(tmp_path, request.param)
    s.phases = request.param
    yield s
    s.meter.close()


def test_the_object_list_says_profile_generic_version_0(site):
    """The companion's table gives 0-0:21.0.5.255 class 7 version 0; the other profiles stay version 1."""
    public = ClientSession(site.meter, "public")
    result, objects = public.get(15, ASSOCIATION, 2)
    assert result == SUCCESS
    versions = {bytes(o.value[2].value): (o.value[0].value, o.value[1].value) for o in objects.value}
    assert versions[Obis.parse(PROFILE).to_bytes()] == (7, 0)
    assert versions[Obis.parse("1-0:99.1.0.255").to_bytes()] == (7, 1)


def test_it_captures_the_clock_and_every_instantaneous_value_the_meter_has(site):
    columns = site.columns()
    assert columns[0] == CLOCK_COLUMN
    captured = [str(Obis.from_bytes(ln)) for _, ln, _, _ in columns[1:]]
    assert len(captured) == len(set(captured)) == (44 if site.phases == 3 else 22)
    assert set(captured) == VALUES[site.phases]
    assert {(class_id, attribute, index) for class_id, _, attribute, index in columns[1:]} == {(3, 2, 0)}
    # the profile's own description: captured on request only, one entry
    assert (site.read(PROFILE, 4).value, site.read(PROFILE, 8).value) == (0, 1)


def test_nothing_is_captured_before_the_capture_method(site):
    site.load(2300.0, 1.0)
    site.run(2 * 3600, step=300)  # two hours, over every capture period a profile has
    assert site.read(PROFILE, 7).value == 0
    assert site.buffer() == []


def test_a_capture_holds_what_each_object_reads_at_that_moment(site):
    site.load(3000.0, 0.8)
    assert site.capture() == SUCCESS
    clock_time = site.read(CLOCK, 2, class_id=8)
    (row,) = site.buffer()
    assert site.read(PROFILE, 7).value == 1
    assert row[0] == clock_time  # the clock does not move between the capture and this read
    for (class_id, ln, attribute, _), captured in zip(site.columns()[1:], row[1:]):
        obis = str(Obis.from_bytes(ln))
        assert captured == site.read(obis, attribute, class_id), obis  # type and value
    by_obis = {str(Obis.from_bytes(c[1])): v.value for c, v in zip(site.columns(), row)}
    per_phase_va = 3000.0 / 0.8 / site.phases
    assert by_obis["1-0:1.7.0.255"] == pytest.approx(3000, abs=1)  # +P, W (scaler 0)
    assert by_obis["1-0:32.7.0.255"] == pytest.approx(NOMINAL_V * 10, abs=1)  # V, scaler -1
    assert by_obis["1-0:31.7.0.255"] == pytest.approx(per_phase_va / NOMINAL_V * 1000, abs=2)  # A, scaler -3
    assert by_obis["1-0:13.7.0.255"] == pytest.approx(800, abs=1)  # power factor, scaler -3


def test_a_capture_replaces_the_entry(site):
    site.load(1000.0, 1.0)
    assert site.capture() == SUCCESS
    (first,) = site.buffer()
    site.load(2500.0, 1.0)
    assert site.capture() == SUCCESS
    rows = site.buffer()
    assert len(rows) == 1 and site.read(PROFILE, 7).value == 1
    plus_p = [str(Obis.from_bytes(c[1])) for c in site.columns()].index("1-0:1.7.0.255")
    assert (first[plus_p].value, rows[0][plus_p].value) == (pytest.approx(1000, abs=1), pytest.approx(2500, abs=1))
    assert rows[0][0] != first[0]  # 60 s later


def test_one_capture_is_one_reading_of_the_metrology(site, monkeypatch):
    """Consistency: every value of the entry comes from the same frame, not one reading each."""
    site.load(2000.0, 0.9)
    commands = []
    execute = site.meter.legal.execute

    def counting(command):
        commands.append(type(command))
        return execute(command)

    monkeypatch.setattr(site.meter.legal, "execute", counting)
    assert site.capture() == SUCCESS
    assert commands.count(legal.ReadInstantaneousValues) == 1


def test_selective_access_by_range_and_by_entry(site):
    site.load(1500.0, 1.0)
    captured_at = int(site.platform[0])
    assert site.capture() == SUCCESS
    (row,) = site.buffer()
    cosem = site.meter.clock.cosem

    def by_range(first: int, last: int, selected=()) -> list:
        return site.buffer(RangeDescriptor(CLOCK_COLUMN, Data.octet_string(cosem(first)),
                                           Data.octet_string(cosem(last)), selected))

    assert by_range(captured_at - 60, captured_at + 60) == [row]
    assert by_range(captured_at, captured_at) == [row]
    assert by_range(captured_at - 120, captured_at - 1) == []
    assert by_range(captured_at + 1, captured_at + 60) == []
    plus_p_column = (3, Obis.parse("1-0:1.7.0.255").to_bytes(), 2, 0)
    assert by_range(captured_at - 60, captured_at, (CLOCK_COLUMN, plus_p_column)) == \
        [(row[0], row[site.columns().index(plus_p_column)])]
    assert site.buffer(EntryDescriptor(1, 1)) == [row]
    assert site.buffer(EntryDescriptor(1, 0, 2, 4)) == [row[1:4]]
    assert site.buffer(EntryDescriptor(2, 0)) == []  # there is one entry only


def test_the_source_s_reset_empties_it(site):
    site.load(1500.0, 1.0)
    assert site.capture() == SUCCESS
    source = site.meter.directory.by_ln[Obis.parse(PROFILE).to_bytes()][1].source
    source.reset()
    assert site.read(PROFILE, 7).value == 0
    assert site.buffer() == []


def test_reset_by_management_empties_it(site):
    site.load(1500.0, 1.0)
    assert site.capture() == SUCCESS
    assert site.management.action(7, PROFILE, 1, Data.integer(0)) == SUCCESS
    assert site.read(PROFILE, 7).value == 0
    assert site.buffer() == []


def test_a_client_that_reads_instantaneous_values_reads_it(site):
    site.load(1500.0, 1.0)
    assert site.capture() == SUCCESS
    for client in ("public", "data_readout"):
        session = ClientSession(site.meter, client)
        result, value = session.get(7, PROFILE, 2)
        assert result == SUCCESS, client
        assert [r.value for r in value.value] == site.buffer()
