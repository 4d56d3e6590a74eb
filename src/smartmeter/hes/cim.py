"""IEC 61968-9 MeterReadings documents (namespace http://iec.ch/TC57/2011/MeterReadings#):
written from the fleet store's readings, and read back into rows.

One MeterReading per meter: the meter's serial (and system title) in Meter/Names, an
IntervalBlock per reading type for its load-profile columns, and Readings for its register
values. A profile column gives two blocks: the consumption of each interval (the difference of
consecutive cumulative values, stamped with the end of the interval as the profile row is) and
the cumulative values as the meter captured them. The status byte of the profile row becomes
ReadingQualities (the table in cim_reading_types.toml); an interval whose value cannot be had
(no row for it, or none for the interval before it) is written without a value and with the
head-end's "known missing read" quality: the head-end does not estimate.

Which OBIS code is which ReadingType is data: cim_reading_types.toml, shipped in the package.
The document is written as the rows arrive (a meter's cumulative block waits in a spooled
temporary file while its interval block is written), so memory stays bounded.
"""
from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import IO, Iterator
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from smartmeter.errors import SmartmeterError
from smartmeter.hes.export import (
    BATCH_ROWS, ExportError, ExportRow, ExportSummary, Selection, decimal_text, decimal_value, iso_utc, stream_rows,
)

__all__ = ["CimFormatError", "CimReading", "NAMESPACE", "ReadingTypeTable", "TableError", "export_cim",
           "load_table", "read_meter_readings"]

NAMESPACE = "http://iec.ch/TC57/2011/MeterReadings#"
_NS = "{" + NAMESPACE + "}"
# Meter/Names: what each name is (NameType) and who gives it (NameTypeAuthority)
SERIAL_NAME_TYPE = "serialNumber"
SYSTEM_TITLE_NAME_TYPE = "systemTitle"
NAME_AUTHORITY = "smartmeter head-end"
# a cumulative block larger than this goes from memory to a temporary file
SPOOL_BYTES = 4 * 1024 * 1024
READING_TYPE_FIELDS = ("macroPeriod", "aggregate", "measuringPeriod", "accumulation", "flowDirection", "commodity",
                       "measurementKind", "interharmonicNumerator", "interharmonicDenominator", "argumentNumerator",
                       "argumentDenominator", "tou", "cpp", "consumptionTier", "phases", "multiplier", "unit",
                       "currency")


class TableError(SmartmeterError):
    """The reading type table (cim_reading_types.toml) is not what it must be."""


class CimFormatError(SmartmeterError):
    """A MeterReadings document that cannot be read back."""


@dataclass(frozen=True)
class ReadingType:
    mrid: str
    name: str


@dataclass(frozen=True)
class QualityCode:
    code: str
    name: str


@dataclass
class ReadingTypeTable:
    """OBIS (and source kind) → ReadingType; status bit → ReadingQualityType."""

    reading_types: dict[tuple[str, str, str], tuple[int, ReadingType]]  # (kind, profile, obis) → (dlms unit, type)
    periods: dict[str, int]  # profile OBIS → capture period, s
    status_bits: dict[int, QualityCode]
    missing: QualityCode

    def lookup(self, kind: str, profile: str, obis: str, attribute: int, unit: int) -> ReadingType | None:
        entry = self.reading_types.get((kind, profile, obis))
        if entry is None or attribute != 2 or entry[0] != unit:
            return None
        return entry[1]

    def qualities(self, status: int) -> list[QualityCode]:
        return [q for bit, q in sorted(self.status_bits.items()) if status >> bit & 1]


def _mrid_ok(code: str, parts: int) -> bool:
    fields = code.split(".")
    return len(fields) == parts and all(f.isdigit() for f in fields)


def load_table(text: str | None = None) -> ReadingTypeTable:
    """The table shipped in the package, or the one in `text` (TOML)."""
    if text is None:
        text = resources.files("smartmeter.hes").joinpath("cim_reading_types.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
        periods = {str(p["obis"]): int(p["period_s"]) for p in data.get("profile", [])}
        types: dict[tuple[str, str, str], tuple[int, ReadingType]] = {}
        for entry in data["reading_type"]:
            kind = str(entry["kind"])
            profile = str(entry.get("profile", ""))
            if kind not in ("register", "interval", "cumulative") or (kind == "register") != (profile == ""):
                raise TableError(f"reading type {entry.get('mrid')}: kind {kind!r} with profile {profile!r}")
            if profile and profile not in periods:
                raise TableError(f"reading type {entry.get('mrid')}: profile {profile} has no [[profile]] period")
            mrid = str(entry["mrid"])
            if not _mrid_ok(mrid, 18):
                raise TableError(f"reading type {mrid!r}: not 18 dotted numbers")
            types[(kind, profile, str(entry["obis"]))] = (int(entry["dlms_unit"]), ReadingType(mrid, str(entry["name"])))
        bits = {}
        for entry in data["status_bit"]:
            bit, code = int(entry["bit"]), str(entry["quality"])
            if not 0 <= bit <= 7 or not _mrid_ok(code, 3):
                raise TableError(f"status bit {bit}: quality {code!r} is not systemId.category.index")
            bits[bit] = QualityCode(code, str(entry["name"]))
        head_end = data["head_end"]
        missing = QualityCode(str(head_end["missing_interval"]), str(head_end["missing_interval_name"]))
    except tomllib.TOMLDecodeError as exc:
        raise TableError(f"the reading type table is not TOML: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"the reading type table lacks or mistypes {exc}") from None
    return ReadingTypeTable(types, periods, bits, missing)


# --------------------------------------------------------------------------------- writer


def _reading(tag: str, time: dt.datetime, value: Decimal | None, reported: dt.datetime | None,
             qualities: list[QualityCode], reading_type: str | None = None) -> str:
    parts = [f"<{tag}>"]
    if reported is not None:
        parts.append(f"<reportedDateTime>{iso_utc(reported)}</reportedDateTime>")
    parts.append(f"<timeStamp>{iso_utc(time)}</timeStamp>")
    if value is not None:
        parts.append(f"<value>{decimal_text(value)}</value>")
    for q in qualities:
        parts.append(f'<ReadingQualities><ReadingQualityType ref="{q.code}"/></ReadingQualities>')
    if reading_type is not None:
        parts.append(f'<ReadingType ref="{reading_type}"/>')
    parts.append(f"</{tag}>")
    return "".join(parts)


class _Document:
    """Writes one MeterReadings document as rows arrive (ordered by meter, series, time)."""

    def __init__(self, out: IO[str], table: ReadingTypeTable, selection: Selection) -> None:
        self.out = out
        self.table = table
        self.selection = selection
        self.used_types: dict[str, ReadingType] = {}
        self.used_qualities: dict[str, QualityCode] = {}
        self.summary = ExportSummary(format="cim")
        self.meter: tuple[int, str, bytes] | None = None
        self.meter_begun = False  # <MeterReading> written: only once the meter has something to show
        self.meter_written = False  # the Meter element (after the interval blocks, before Readings)
        self.series: _ProfileSeries | None = None
        self.series_id: int | None = None  # the profile series the rows are of (None: a register)
        out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<MeterReadings xmlns="{NAMESPACE}">\n')

    def row(self, r: ExportRow) -> None:
        if self.meter is None or self.meter[0] != r.meter_id:
            self._end_meter()
            self.meter = (r.meter_id, r.serial, r.system_title)
            self.meter_begun = self.meter_written = False
        if r.source:
            if self.series_id != r.series_id:
                self._end_series()
                self.series = self._profile_series(r)
                self.series_id = r.series_id
            if self.series is not None:
                self.series.add(r)
            elif r.time >= self.selection.start:
                self._skip(r)
            return
        self._end_series()
        if r.time < self.selection.start:
            return  # fetched only as a predecessor of profile intervals
        reading_type = self.table.lookup("register", "", r.obis, r.attribute, r.unit)
        if reading_type is None:
            self._skip(r)
            return
        self._write_meter()
        qualities = self.table.qualities(r.quality)
        self._use(reading_type, qualities)
        self.out.write(_reading("Readings", r.time, decimal_value(r.raw, r.scaler), r.received, qualities,
                                reading_type.mrid) + "\n")
        self.summary.rows += 1

    def _skip(self, r: ExportRow) -> None:
        key = (r.source, r.obis, r.attribute, r.unit)
        if key in self.summary.skipped or len(self.summary.skipped) < 10_000:
            self.summary.skipped[key] = self.summary.skipped.get(key, 0) + 1

    def _use(self, reading_type: ReadingType, qualities: list[QualityCode]) -> None:
        self.used_types.setdefault(reading_type.mrid, reading_type)
        for q in qualities:
            self.used_qualities.setdefault(q.code, q)

    def _profile_series(self, r: ExportRow) -> "_ProfileSeries | None":
        interval = self.table.lookup("interval", r.source, r.obis, r.attribute, r.unit)
        cumulative = self.table.lookup("cumulative", r.source, r.obis, r.attribute, r.unit)
        if interval is None and cumulative is None:
            return None
        return _ProfileSeries(self, r.series_id, self.table.periods[r.source], interval, cumulative)

    def _end_series(self) -> None:
        if self.series is not None:
            self.series.close()
        self.series = None
        self.series_id = None

    def begin_meter(self) -> None:
        """<MeterReading>, before the meter's first block or reading (a meter whose rows are all
        predecessors of the range gets none)."""
        if not self.meter_begun:
            self.out.write("<MeterReading>\n")
            self.summary.meters += 1
            self.meter_begun = True

    def _write_meter(self) -> None:
        if self.meter_written or self.meter is None:
            return
        self.begin_meter()
        _, serial, system_title = self.meter
        self.out.write(
            "<Meter>"
            f"<Names><name>{escape(serial)}</name><NameType><name>{SERIAL_NAME_TYPE}</name>"
            f"<NameTypeAuthority><name>{NAME_AUTHORITY}</name></NameTypeAuthority></NameType></Names>"
            f"<Names><name>{system_title.hex().upper()}</name><NameType><name>{SYSTEM_TITLE_NAME_TYPE}</name>"
            f"<NameTypeAuthority><name>{NAME_AUTHORITY}</name></NameTypeAuthority></NameType></Names>"
            "</Meter>\n")
        self.meter_written = True

    def _end_meter(self) -> None:
        if self.meter is None:
            return
        self._end_series()
        if not self.meter_begun:
            return
        self._write_meter()
        self.out.write(f"<valuesInterval><end>{iso_utc(self.selection.end)}</end>"
                       f"<start>{iso_utc(self.selection.start)}</start></valuesInterval>\n</MeterReading>\n")

    def close(self) -> ExportSummary:
        self._end_meter()
        for code, q in sorted(self.used_qualities.items()):
            system, category, index = code.split(".")
            self.out.write(f"<ReadingQualityType><mRID>{code}</mRID><category>{category}</category>"
                           f"<subCategory>{index}</subCategory><systemId>{system}</systemId>"
                           f"<Names><name>{escape(q.name)}</name></Names></ReadingQualityType>\n")
        for mrid, t in sorted(self.used_types.items()):
            fields = dict(zip(READING_TYPE_FIELDS, mrid.split(".")))
            # the XSD's element order (alphabetical after mRID), then argument and interharmonic
            simple = ("accumulation", "aggregate", "commodity", "consumptionTier", "cpp", "currency",
                      "flowDirection", "macroPeriod", "measurementKind", "measuringPeriod", "multiplier", "phases",
                      "tou", "unit")
            body = "".join(f"<{name}>{fields[name]}</{name}>" for name in simple)
            body += (f"<argument><denominator>{fields['argumentDenominator']}</denominator>"
                     f"<numerator>{fields['argumentNumerator']}</numerator></argument>"
                     f"<interharmonic><denominator>{fields['interharmonicDenominator']}</denominator>"
                     f"<numerator>{fields['interharmonicNumerator']}</numerator></interharmonic>")
            self.out.write(f"<ReadingType><mRID>{mrid}</mRID>{body}<Names><name>{escape(t.name)}</name></Names>"
                           "</ReadingType>\n")
        self.out.write("</MeterReadings>\n")
        return self.summary


class _ProfileSeries:
    """One profile column of one meter: its interval block is written as the rows come, its
    cumulative block is spooled and follows."""

    def __init__(self, doc: _Document, series_id: int, period: int, interval: ReadingType | None,
                 cumulative: ReadingType | None) -> None:
        self.doc = doc
        self.series_id = series_id
        self.period = dt.timedelta(seconds=period)
        self.interval = interval
        self.cumulative = cumulative
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", encoding="utf-8")
        self.last_on_grid: ExportRow | None = None  # the latest row on the period grid
        self.next_expected: dt.datetime | None = None  # the first grid time not yet given an interval
        self.any_interval = False
        self.any_cumulative = False
        self.grid_s = period

    def _on_grid(self, t: dt.datetime) -> bool:
        return int(t.timestamp()) % self.grid_s == 0 and t.microsecond == 0

    def _first_grid_at_or_after(self, t: dt.datetime) -> dt.datetime:
        seconds = -(-int(t.timestamp()) // self.grid_s) * self.grid_s
        if seconds == int(t.timestamp()) and t.microsecond:
            seconds += self.grid_s
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)

    def _interval_open(self) -> None:
        if not self.any_interval:
            self.doc.begin_meter()
            self.doc.out.write("<IntervalBlocks>\n")
            self.any_interval = True

    def _missing(self, t: dt.datetime) -> None:
        self._interval_open()
        q = self.doc.table.missing
        self.doc.used_qualities.setdefault(q.code, q)
        self.doc.out.write(_reading("IntervalReadings", t, None, None, [q]) + "\n")

    def add(self, r: ExportRow) -> None:
        start = self.doc.selection.start
        on_grid = self._on_grid(r.time)
        if r.time >= start:
            self.doc.summary.rows += 1
            if self.cumulative is not None:
                qualities = self.doc.table.qualities(r.quality)
                self.doc._use(self.cumulative, qualities)
                self.spool.write(_reading("IntervalReadings", r.time, decimal_value(r.raw, r.scaler), r.received,
                                          qualities) + "\n")
                self.any_cumulative = True
            if self.interval is not None and on_grid:
                if self.next_expected is None:
                    self.next_expected = self._first_grid_at_or_after(start)
                # grid times with no row (and so no interval value) before this one
                while self.next_expected < r.time:
                    self._missing(self.next_expected)
                    self.next_expected += self.period
                previous = self.last_on_grid
                if previous is not None and r.time - previous.time == self.period:
                    self._interval_open()
                    qualities = self.doc.table.qualities(r.quality)
                    self.doc._use(self.interval, qualities)
                    value = decimal_value(r.raw, r.scaler) - decimal_value(previous.raw, previous.scaler)
                    self.doc.out.write(_reading("IntervalReadings", r.time, value, r.received, qualities) + "\n")
                else:
                    self._missing(r.time)
                self.next_expected = r.time + self.period
        if on_grid:
            self.last_on_grid = r

    def close(self) -> None:
        # after the series' last row nothing is marked missing: those intervals may simply not
        # have been read yet (`smartmeter hes gaps` reports them)
        if self.any_interval:
            self.doc.out.write(f'<ReadingType ref="{self.interval.mrid}"/>\n</IntervalBlocks>\n')
        if self.any_cumulative:
            self.doc.begin_meter()
            self.doc.out.write("<IntervalBlocks>\n")
            self.spool.seek(0)
            while chunk := self.spool.read(1 << 16):
                self.doc.out.write(chunk)
            self.doc.out.write(f'<ReadingType ref="{self.cumulative.mrid}"/>\n</IntervalBlocks>\n')
        self.spool.close()


async def export_cim(pool, selection: Selection, path: Path, batch_rows: int = BATCH_ROWS,
                     table: ReadingTypeTable | None = None) -> ExportSummary:
    """Write the selection as one MeterReadings document to `path`."""
    table = table or load_table()
    selection = Selection(selection.start, selection.end, selection.serials, selection.cell, selection.obis,
                          selection.source, lead=dict(table.periods))
    try:
        out = open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    with out:
        doc = _Document(out, table, selection)
        async for rows in stream_rows(pool, selection, batch_rows):
            for r in rows:
                doc.row(r)
        summary = doc.close()
    summary.path = path
    return summary


# ------------------------------------------------------------------------------ read back


@dataclass(frozen=True)
class CimReading:
    """One reading of a MeterReadings document: `block` is 'interval' (an IntervalReading) or
    'register' (a Reading); value None where the document gives none."""

    serial: str
    system_title: str
    block: str
    reading_type: str
    time: dt.datetime
    value: Decimal | None
    qualities: tuple[str, ...]
    reported: dt.datetime | None


def _time(text: str | None, where: str) -> dt.datetime:
    if not text:
        raise CimFormatError(f"{where}: no timeStamp")
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CimFormatError(f"{where}: {text!r} is not an xs:dateTime") from None
    if value.tzinfo is None:
        raise CimFormatError(f"{where}: {text!r} has no time zone")
    return value.astimezone(dt.timezone.utc)


def _value(text: str | None, where: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise CimFormatError(f"{where}: value {text!r} is not a number") from None
    if not value.is_finite():
        raise CimFormatError(f"{where}: value {text!r} is not a finite number")
    return value


def _readings(element, tag: str, where: str) -> Iterator[tuple[dt.datetime, Decimal | None, tuple[str, ...],
                                                                 dt.datetime | None]]:
    for item in element.findall(_NS + tag):
        reported = item.findtext(_NS + "reportedDateTime")
        qualities = tuple(q.get("ref", "") for q in item.findall(f"{_NS}ReadingQualities/{_NS}ReadingQualityType"))
        yield (_time(item.findtext(_NS + "timeStamp"), where), _value(item.findtext(_NS + "value"), where),
               qualities, _time(reported, where) if reported is not None else None)


def read_meter_readings(path: Path) -> Iterator[CimReading]:
    """The readings of a MeterReadings document, a MeterReading at a time (memory bounded by the
    largest MeterReading). CimFormatError when it is not one."""
    try:
        events = ElementTree.iterparse(str(path), events=("start", "end"))
        root = None
        depth = 0
        for event, element in events:
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                    if element.tag != _NS + "MeterReadings":
                        raise CimFormatError(f"{path}: the root is {element.tag}, not MeterReadings in {NAMESPACE}")
                continue
            depth -= 1
            if depth != 1 or element.tag != _NS + "MeterReading":
                continue
            serial = system_title = ""
            for name in element.findall(f"{_NS}Meter/{_NS}Names"):
                kind = name.findtext(f"{_NS}NameType/{_NS}name")
                if kind == SERIAL_NAME_TYPE:
                    serial = name.findtext(_NS + "name") or ""
                elif kind == SYSTEM_TITLE_NAME_TYPE:
                    system_title = name.findtext(_NS + "name") or ""
            where = f"{path}: meter {serial or '?'}"
            for block in element.findall(_NS + "IntervalBlocks"):
                reading_type = block.find(_NS + "ReadingType")
                if reading_type is None or not reading_type.get("ref"):
                    raise CimFormatError(f"{where}: an IntervalBlock without a ReadingType")
                for time, value, qualities, reported in _readings(block, "IntervalReadings", where):
                    yield CimReading(serial, system_title, "interval", reading_type.get("ref"), time, value,
                                     qualities, reported)
            for reading in element.findall(_NS + "Readings"):
                reading_type = reading.find(_NS + "ReadingType")
                if reading_type is None or not reading_type.get("ref"):
                    raise CimFormatError(f"{where}: a Reading without a ReadingType")
            for reading, (time, value, qualities, reported) in zip(element.findall(_NS + "Readings"),
                                                                  _readings(element, "Readings", where)):
                yield CimReading(serial, system_title, "register", reading.find(_NS + "ReadingType").get("ref"), time,
                                 value, qualities, reported)
            root.remove(element)  # what was read is dropped: memory stays at one MeterReading
    except ElementTree.ParseError as exc:
        raise CimFormatError(f"{path}: not well-formed XML ({exc})") from None
    except OSError as exc:
        raise CimFormatError(f"{path}: cannot read it ({exc.strerror or exc})") from None
