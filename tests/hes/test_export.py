"""`smartmeter hes export`: parquet, CSV and IEC 61968-9 MeterReadings from the fleet store.

The store is filled by export_scenario.py; every expectation is computed from what it wrote (or
with the test's own SQL over the store), never from the exporter."""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import math
from decimal import Decimal
from xml.etree import ElementTree

import asyncpg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import export_scenario as sc
from smartmeter.cli.main import main
from smartmeter.hes.cim import read_meter_readings
from smartmeter.hes.export import Selection, export
from smartmeter.hes.store.pg import FleetStore

NS = "{http://iec.ch/TC57/2011/MeterReadings#}"
INTERVAL_A_PLUS = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.0.72.0"
CUMULATIVE_A_PLUS = "0.0.2.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"
INTERVAL_A_MINUS = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.0.72.0"
REGISTER_A_PLUS = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"
CLOCK_CHANGED = "1.4.9"
MISSING = "2.5.259"


@pytest.fixture
def fleet_dsn(pg_dsn) -> str:
    sc.setup(pg_dsn)
    return pg_dsn


def _run(args: list[str]):
    result = CliRunner().invoke(main, ["hes", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _day_args(dsn: str) -> list[str]:
    return ["--db", dsn, "--from", sc.DAY.isoformat(), "--to", sc.NEXT_DAY.isoformat()]


def _in_day(t: dt.datetime) -> bool:
    return sc.DAY <= t < sc.NEXT_DAY


def _expected_rows() -> list[tuple[str, str, str, dt.datetime, Decimal, int]]:
    """(meter, source, obis, time, value, quality) of every stored row inside [D, D+1)."""
    rows = []
    for t, wh, raw in sc.m1_rows():
        if _in_day(t):
            rows.append(("M-0001", sc.PROFILE, sc.A_PLUS, t, Decimal(wh), 0))
            rows.append(("M-0001", sc.PROFILE, sc.A_MINUS, t, Decimal(raw) / 10, 0))
    rows.append(("M-0001", "", sc.A_PLUS, sc.M1_REGISTER_TIME, Decimal(1_002_345), 0))
    for t, wh, status in sc.m2_rows():
        rows.append(("M-0002", sc.PROFILE, sc.A_PLUS, t, Decimal(wh), status))
    rows.append(("M-0002", "", sc.A_PLUS, sc.M2_DRIFT_TIME, Decimal(60_000), 0))
    rows.append(("M-0002", "", sc.A_PLUS, sc.M2_CLOSE_TIME, Decimal(70_000), 0))
    return rows


def test_parquet_has_every_row_exactly_in_one_row_group_per_batch(fleet_dsn, tmp_path):
    out = tmp_path / "day.parquet"
    batch = 100

    async def run():
        store = await FleetStore.open(fleet_dsn)
        try:
            return await export(store.pool, Selection(sc.DAY, sc.NEXT_DAY), "parquet", out, batch_rows=batch)
        finally:
            await store.close()

    summary = asyncio.run(run())
    expected = _expected_rows()
    assert (summary.rows, summary.meters) == (len(expected), 2)

    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups == math.ceil(len(expected) / batch)
    assert all(parquet.metadata.row_group(i).num_rows <= batch for i in range(parquet.metadata.num_row_groups))
    table = parquet.read().to_pylist()
    got = sorted((r["meter"], r["source"], r["obis"], r["time"], Decimal(r["raw"]).scaleb(r["scaler"]), r["quality"])
                 for r in table)
    assert got == sorted(expected)
    assert {r["unit"] for r in table} == {"Wh"}
    assert {(r["meter"], r["system_title"]) for r in table} == {(m.serial, m.system_title.hex()) for m in sc.METERS[:2]}
    assert all(r["time"].tzinfo is not None for r in table)


def test_csv_has_a_header_and_exact_decimal_values(fleet_dsn, tmp_path):
    out = tmp_path / "day.csv"
    line = _run(["export", *_day_args(fleet_dsn), "--format", "csv", "--out", str(out)])
    expected = _expected_rows()
    assert f"{len(expected)} rows of 2 meters" in line

    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, r)) for r in reader]
    assert header == ["meter", "system_title", "source", "obis", "attribute", "time", "value", "unit", "quality",
                      "received"]
    got = sorted((r["meter"], r["source"], r["obis"], dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")),
                  Decimal(r["value"]), int(r["quality"])) for r in rows)
    assert got == sorted(expected)
    # -A has scaler -1: raw 510 is 51.0 Wh, written without exponent or rounding
    minus = [r["value"] for r in rows if r["obis"] == sc.A_MINUS]
    assert "51.0" in minus and all("E" not in v and "e" not in v for v in minus)


def test_selection_by_meter_cell_obis_and_source(fleet_dsn, tmp_path):
    expected = _expected_rows()

    def rows(*args: str) -> list[tuple[str, str, str]]:
        out = tmp_path / "sel.csv"
        _run(["export", *_day_args(fleet_dsn), "--format", "csv", "--out", str(out), *args])
        with open(out, newline="", encoding="utf-8") as f:
            return sorted((r["meter"], r["source"], r["obis"]) for r in csv.DictReader(f))

    def want(keep) -> list[tuple[str, str, str]]:
        return sorted((m, s, o) for m, s, o, *_ in expected if keep(m, s, o))

    assert rows("--meter", "M-0002") == want(lambda m, s, o: m == "M-0002")
    assert rows("--cell", "north") == want(lambda m, s, o: m == "M-0001")
    assert rows("--obis", sc.A_MINUS) == want(lambda m, s, o: o == sc.A_MINUS)
    assert rows("--source", "register") == want(lambda m, s, o: s == "")
    assert rows("--source", "profile", "--meter", "M-0001") == want(lambda m, s, o: s != "" and m == "M-0001")


async def _sql_totals(dsn: str, serial: str) -> dict[str, int]:
    """The test's own arithmetic over the store: +A at the last profile row before D+1 and at
    the last before D, and around M-0002's missing row."""
    conn = await asyncpg.connect(dsn)
    try:
        query = """SELECT r.raw FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id
                   WHERE m.serial = $1 AND s.source = $2 AND s.obis = $3 AND r.time {} $4
                   ORDER BY r.time DESC LIMIT 1"""
        at_or_before = query.format("<=")
        before = query.format("<")
        out = {"last": await conn.fetchval(before, serial, sc.PROFILE, sc.A_PLUS, sc.NEXT_DAY),
               "first": await conn.fetchval(before, serial, sc.PROFILE, sc.A_PLUS, sc.DAY)}
        if serial == "M-0002":
            gap_end = sc.M2_MISSING + sc.PERIOD
            out["gap_end"] = await conn.fetchval(at_or_before, serial, sc.PROFILE, sc.A_PLUS, gap_end)
            out["gap_start"] = await conn.fetchval(before, serial, sc.PROFILE, sc.A_PLUS, sc.M2_MISSING)
            out["first_row"] = await conn.fetchval(
                """SELECT r.raw FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id
                   WHERE m.serial = $1 AND s.source = $2 AND s.obis = $3 AND r.time >= $4 ORDER BY r.time LIMIT 1""",
                serial, sc.PROFILE, sc.A_PLUS, sc.DAY)
        return out
    finally:
        await conn.close()


def _blocks(meter_reading) -> dict[str, list]:
    out = {}
    for block in meter_reading.findall(NS + "IntervalBlocks"):
        out[block.find(NS + "ReadingType").get("ref")] = block.findall(NS + "IntervalReadings")
    return out


def _value(reading) -> Decimal | None:
    text = reading.findtext(NS + "value")
    return None if text is None else Decimal(text)


def _qualities(reading) -> set[str]:
    return {q.get("ref") for q in reading.findall(f"{NS}ReadingQualities/{NS}ReadingQualityType")}


def test_cim_document_intervals_sum_to_the_stored_totals(fleet_dsn, tmp_path):
    out = tmp_path / "day.xml"
    _run(["export", *_day_args(fleet_dsn), "--format", "cim", "--out", str(out)])

    root = ElementTree.parse(out).getroot()  # well-formed, read by the standard library's parser
    assert root.tag == NS + "MeterReadings"
    by_meter = {}
    for mr in root.findall(NS + "MeterReading"):
        names = {n.findtext(f"{NS}NameType/{NS}name"): n.findtext(NS + "name") for n in mr.findall(f"{NS}Meter/{NS}Names")}
        by_meter[names["serialNumber"]] = mr
        assert names["systemTitle"] == {m.serial: m.system_title.hex().upper() for m in sc.METERS}[names["serialNumber"]]
    assert set(by_meter) == {"M-0001", "M-0002"}
    # every reading type and quality referenced is defined once in the document
    defined_types = {rt.findtext(NS + "mRID") for rt in root.findall(NS + "ReadingType")}
    referenced = {e.get("ref") for e in root.iter(NS + "ReadingType") if e.get("ref")}
    assert referenced <= defined_types
    defined_qualities = {q.findtext(NS + "mRID") for q in root.findall(NS + "ReadingQualityType")}
    assert {e.get("ref") for e in root.iter(NS + "ReadingQualityType") if e.get("ref")} <= defined_qualities

    # M-0001: 400 W for 15 minutes is 100 Wh in each of the day's 96 intervals, and the sum is
    # the store's last cumulative value of the day minus the last of the day before
    totals = asyncio.run(_sql_totals(fleet_dsn, "M-0001"))
    blocks = _blocks(by_meter["M-0001"])
    intervals = blocks[INTERVAL_A_PLUS]
    assert len(intervals) == 96
    assert all(_value(r) == 100 for r in intervals)
    assert sum(_value(r) for r in intervals) == totals["last"] - totals["first"] == 9600
    assert [r.findtext(NS + "timeStamp") for r in intervals[:2]] == ["2026-03-10T00:00:00Z", "2026-03-10T00:15:00Z"]
    assert all(_value(r) == Decimal("1.0") for r in blocks[INTERVAL_A_MINUS])
    cumulative = blocks[CUMULATIVE_A_PLUS]
    assert [_value(r) for r in cumulative] == [Decimal(wh) for t, wh, _ in sc.m1_rows() if _in_day(t)]
    registers = by_meter["M-0001"].findall(NS + "Readings")
    assert [(r.find(NS + "ReadingType").get("ref"), _value(r)) for r in registers] == [(REGISTER_A_PLUS, 1_002_345)]

    # M-0002: no predecessor of 00:00 (the first row of the store), none for 10:15 and so no
    # interval value for 10:15 nor 10:30; the rest sums to the stored total without those
    totals = asyncio.run(_sql_totals(fleet_dsn, "M-0002"))
    intervals = _blocks(by_meter["M-0002"])[INTERVAL_A_PLUS]
    valueless = [r.findtext(NS + "timeStamp") for r in intervals if _value(r) is None]
    assert valueless == ["2026-03-10T00:00:00Z", "2026-03-10T10:15:00Z", "2026-03-10T10:30:00Z"]
    assert all(_qualities(r) == {MISSING} for r in intervals if _value(r) is None)
    unknown = totals["gap_end"] - totals["gap_start"]
    assert sum(_value(r) for r in intervals if _value(r) is not None) == totals["last"] - totals["first_row"] - unknown
    # the interval values are M-0002's steps, read from the scenario
    steps = {t: sc.m2_step(n) for n, t in enumerate(sc.grid(sc.DAY, sc.M2_LAST))}
    for r in intervals:
        t = dt.datetime.fromisoformat(r.findtext(NS + "timeStamp").replace("Z", "+00:00"))
        if _value(r) is not None:
            assert _value(r) == steps[t], t
    # the off-grid row is no interval of the 15-minute grid, but a cumulative reading
    stamps = [r.findtext(NS + "timeStamp") for r in intervals]
    assert "2026-03-10T13:07:00Z" not in stamps
    cumulative = _blocks(by_meter["M-0002"])[CUMULATIVE_A_PLUS]
    assert "2026-03-10T13:07:00Z" in [r.findtext(NS + "timeStamp") for r in cumulative]
    # the clock-adjusted row's quality, on its interval and on its cumulative value
    adjusted = [r for r in intervals + cumulative if r.findtext(NS + "timeStamp") == "2026-03-10T12:00:00Z"]
    assert len(adjusted) == 2 and all(_qualities(r) == {CLOCK_CHANGED} for r in adjusted)
    flagged = {r.findtext(NS + "timeStamp") for r in cumulative if CLOCK_CHANGED in _qualities(r)}
    assert flagged == {"2026-03-10T12:00:00Z", "2026-03-10T13:07:00Z"}


def test_cim_parse_back_gives_the_document_rows(fleet_dsn, tmp_path):
    out = tmp_path / "day.xml"
    _run(["export", *_day_args(fleet_dsn), "--format", "cim", "--out", str(out)])
    rows = list(read_meter_readings(out))

    root = ElementTree.parse(out).getroot()
    count = sum(len(mr.findall(f"{NS}IntervalBlocks/{NS}IntervalReadings")) + len(mr.findall(NS + "Readings"))
                for mr in root.findall(NS + "MeterReading"))
    assert len(rows) == count
    register = [r for r in rows if r.block == "register"]
    assert sorted((r.serial, r.time, r.value) for r in register) == sorted(
        [("M-0001", sc.M1_REGISTER_TIME, 1_002_345), ("M-0002", sc.M2_DRIFT_TIME, 60_000),
         ("M-0002", sc.M2_CLOSE_TIME, 70_000)])
    m2 = [r for r in rows if r.serial == "M-0002" and r.reading_type == CUMULATIVE_A_PLUS]
    assert [(r.time, r.value) for r in m2] == [(t, wh) for t, wh, _ in sc.m2_rows()]
    assert {r.system_title for r in rows} == {"534D4D0000000001", "534D4D0000000002"}


def test_cim_of_consecutive_days_covers_each_interval_once(fleet_dsn, tmp_path):
    """Two half-day exports: the interval ending at noon is in the second (its row's time is
    noon), and together they hold the day's 96 values of M-0001."""
    noon = sc.DAY + dt.timedelta(hours=12)
    values = []
    for start, end in ((sc.DAY, noon), (noon, sc.NEXT_DAY)):
        out = tmp_path / f"{start.hour}.xml"
        _run(["export", "--db", fleet_dsn, "--from", start.isoformat(), "--to", end.isoformat(), "--format", "cim",
              "--out", str(out), "--meter", "M-0001", "--obis", sc.A_PLUS])
        root = ElementTree.parse(out).getroot()
        (mr,) = root.findall(NS + "MeterReading")
        values.append([(r.findtext(NS + "timeStamp"), _value(r)) for r in _blocks(mr)[INTERVAL_A_PLUS]])
    assert len(values[0]) == len(values[1]) == 48
    assert values[1][0] == ("2026-03-10T12:00:00Z", 100)
    assert sum(v for _, v in values[0] + values[1]) == 9600


def test_export_refuses_a_range_that_ends_before_it_starts(fleet_dsn, tmp_path):
    result = CliRunner().invoke(main, ["hes", "export", "--db", fleet_dsn, "--format", "csv", "--out",
                                       str(tmp_path / "x.csv"), "--from", "2026-03-11", "--to", "2026-03-10"])
    assert result.exit_code != 0
    assert "--to" in result.output and not (tmp_path / "x.csv").exists()


def test_a_meter_with_only_the_predecessor_row_gets_no_meter_reading(fleet_dsn, tmp_path):
    # M-0001's last row is D+1 00:00; from D+1 00:15 on it is only the first interval's start
    start = sc.NEXT_DAY + sc.PERIOD
    out = tmp_path / "after.xml"
    line = _run(["export", "--db", fleet_dsn, "--from", start.isoformat(), "--to",
                 (start + dt.timedelta(days=1)).isoformat(), "--format", "cim", "--out", str(out)])
    assert "0 rows of 0 meters" in line
    root = ElementTree.parse(out).getroot()
    assert root.findall(NS + "MeterReading") == []
    assert list(read_meter_readings(out)) == []


@pytest.mark.parametrize("text, says", [
    ("<MeterReadings xmlns='http://iec.ch/TC57/2011/MeterReadings#'><MeterReading>", "not well-formed"),
    ("<Other/>", "not MeterReadings"),
    ("<MeterReadings xmlns='http://iec.ch/TC57/2011/MeterReadings#'><MeterReading><IntervalBlocks>"
     "<IntervalReadings><timeStamp>2026-03-10T00:00:00Z</timeStamp><value>1</value></IntervalReadings>"
     "</IntervalBlocks></MeterReading></MeterReadings>", "without a ReadingType"),
    ("<MeterReadings xmlns='http://iec.ch/TC57/2011/MeterReadings#'><MeterReading><Readings>"
     "<timeStamp>2026-03-10T00:00:00Z</timeStamp><value>twelve</value><ReadingType ref='x'/></Readings>"
     "</MeterReading></MeterReadings>", "not a number"),
    ("<MeterReadings xmlns='http://iec.ch/TC57/2011/MeterReadings#'><MeterReading><Readings>"
     "<timeStamp>2026-03-10T00:00:00</timeStamp><value>1</value><ReadingType ref='x'/></Readings>"
     "</MeterReading></MeterReadings>", "no time zone"),
    ("", "not well-formed"),
])
def test_parse_back_refuses_what_is_not_a_meter_readings_document(tmp_path, text, says):
    from smartmeter.hes.cim import CimFormatError

    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CimFormatError, match=says):
        list(read_meter_readings(path))


@pytest.mark.parametrize("change, says", [
    (('mrid = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"', 'mrid = "0.0.0.1.1.1.12"'), "18 dotted numbers"),
    (('quality = "1.4.9"', 'quality = "clock"'), "systemId.category.index"),
    (('period_s = 900', 'period = 900'), "lacks or mistypes"),
    (('[head_end]', '[head_end'), "not TOML"),
])
def test_a_broken_reading_type_table_is_refused_with_what_is_wrong(change, says):
    from importlib import resources

    from smartmeter.hes.cim import TableError, load_table

    text = resources.files("smartmeter.hes").joinpath("cim_reading_types.toml").read_text(encoding="utf-8")
    old, new = change
    assert old in text
    with pytest.raises(TableError, match=says):
        load_table(text.replace(old, new, 1))
