"""Export the fleet store's readings (parquet, CSV, IEC 61968-9 MeterReadings XML).

The rows are streamed from a server-side cursor in batches (`BATCH_ROWS`), so an export of any
size holds one batch at a time: parquet gets one row group per batch, CSV and CIM are written as
the rows arrive. The selection is half-open on the row's timestamp: `start <= time < end`, so
consecutive exports neither overlap nor miss a row.

What is exported is what the meters said: the integer they sent with its scaler and unit, the
profile row's status byte, and when the head-end stored it. Nothing is validated, estimated or
edited here: that is the meter data management system's work (docs/hes-export.md).
"""
from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Sequence

from smartmeter.errors import SmartmeterError
from smartmeter.hes.client import unit_name

__all__ = ["BATCH_ROWS", "ExportError", "ExportRow", "ExportSummary", "Selection", "SqliteReadings", "decimal_value",
           "export", "iso_utc", "stream_rows"]

# Rows fetched from the cursor at a time, and rows per parquet row group.
BATCH_ROWS = 50_000

PROFILE_SOURCES = ("register", "profile", "all")
FORMATS = ("parquet", "csv", "cim")

CSV_COLUMNS = ("meter", "system_title", "source", "obis", "attribute", "time", "value", "unit", "quality",
               "received")


class ExportError(SmartmeterError):
    """The export cannot be written (the output, or pyarrow missing)."""


@dataclass(frozen=True)
class Selection:
    """Which readings: time range [start, end), and optionally meters, a cell, OBIS codes and a
    source kind ('register': values as read, 'profile': load-profile columns, 'all')."""

    start: dt.datetime
    end: dt.datetime
    serials: Sequence[str] = ()
    cell: str | None = None
    obis: Sequence[str] = ()
    source: str = "all"
    # profile OBIS → seconds: rows of that profile this long before `start` come along as the
    # predecessors of the first intervals (CIM interval values); they are never exported themselves
    lead: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExportRow:
    meter_id: int
    serial: str
    system_title: bytes
    series_id: int
    source: str  # '' for a register value as read, else the profile's OBIS
    obis: str
    attribute: int
    time: dt.datetime
    raw: int
    scaler: int
    unit: int
    quality: int
    received: dt.datetime


@dataclass
class ExportSummary:
    rows: int = 0
    meters: int = 0
    path: Path | None = None
    format: str = ""
    # CIM: series that have no reading type in the table, (source, obis, attribute, unit) → rows
    skipped: dict[tuple[str, str, int, int], int] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.rows} rows of {self.meters} meters written to {self.path} ({self.format})"
        if self.skipped:
            kinds = ", ".join(f"{obis}:{attribute} ({'register' if not source else source}, unit {unit})"
                              for source, obis, attribute, unit in sorted(self.skipped)[:5])
            more = len(self.skipped) - 5
            text += (f"; {sum(self.skipped.values())} rows of {len(self.skipped)} series without a CIM reading "
                     f"type left out: {kinds}" + (f" and {more} more" if more > 0 else ""))
        return text


def decimal_value(raw: int, scaler: int) -> Decimal:
    """raw × 10^scaler, exactly."""
    return Decimal(raw).scaleb(scaler)


def decimal_text(value: Decimal) -> str:
    """A decimal in plain notation (never an exponent): 12.345, 5000, -0.5."""
    return format(value, "f")


def iso_utc(when: dt.datetime) -> str:
    """xs:dateTime in UTC with a Z; microseconds only when there are some."""
    text = when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
    return text + "Z"


def _query(selection: Selection) -> tuple[str, list[Any]]:
    args: list[Any] = [selection.start, selection.end, list(selection.lead), list(selection.lead.values())]
    where = []
    if selection.serials:
        args.append(list(selection.serials))
        where.append(f"m.serial = ANY(${len(args)})")
    if selection.cell is not None:
        args.append(selection.cell)
        where.append(f"m.cell = ${len(args)}")
    if selection.obis:
        args.append(list(selection.obis))
        where.append(f"s.obis = ANY(${len(args)})")
    if selection.source == "register":
        where.append("s.source = ''")
    elif selection.source == "profile":
        where.append("s.source <> ''")
    # The series are few and selected first; each one's readings come from the primary key
    # (series_id, time) in time order, so PostgreSQL sorts at most one series at a time
    # (incremental sort) however many rows the range holds. Per meter, profile series come
    # first: the CIM document wants a meter's interval blocks before its register readings.
    query = f"""
        SELECT sel.meter_id, sel.serial, sel.system_title, sel.id, sel.source, sel.obis, sel.attribute,
               r.time, r.raw, sel.scaler, sel.unit, r.quality, r.received
        FROM (SELECT s.id, s.meter_id, s.source, s.obis, s.attribute, s.scaler, s.unit, m.serial, m.system_title,
                     make_interval(secs => coalesce((SELECT lead FROM unnest($3::text[], $4::int[]) AS p(obis, lead)
                                                     WHERE p.obis = s.source), 0)) AS lead
              FROM series s JOIN meter m ON m.id = s.meter_id
              {"WHERE " + " AND ".join(where) if where else ""}) sel
        CROSS JOIN LATERAL (SELECT time, raw, quality, received FROM reading
                            WHERE series_id = sel.id AND time >= $1::timestamptz - sel.lead AND time < $2) r
        ORDER BY sel.meter_id, sel.source = '', sel.source, sel.obis, sel.attribute, sel.id, r.time"""
    return query, args


class SqliteReadings:
    """`hes listen`'s SQLite file as the source of an export, in place of the fleet store's
    pool: the same tables (meter, series, reading; `smartmeter.hes.push_store`), so the same
    rows in the same order. Its meters have no cell: they are all in cell 'default'; a meter
    that never sent its serial number (Device ID 1) is named by its system title."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)


def _sqlite_time(when: dt.datetime) -> str:
    """The file's time text of the first millisecond at or after `when` (its times have
    milliseconds), so `start <= time < end` selects what it selects at full precision."""
    from smartmeter.hes.push_store import format_time

    if when.microsecond % 1000:
        when += dt.timedelta(microseconds=1000 - when.microsecond % 1000)
    return format_time(when)


def _sqlite_rows(source: SqliteReadings, selection: Selection, batch_rows: int) -> Iterable[list[ExportRow]]:
    from smartmeter.hes.push_store import PushStore

    if selection.cell not in (None, "default"):
        return
    args: list[Any] = [_sqlite_time(selection.start), _sqlite_time(selection.end)]
    where = []
    if selection.serials:
        where.append(f"coalesce(m.serial, m.system_title) IN ({', '.join('?' * len(selection.serials))})")
        args.extend(selection.serials)
    if selection.obis:
        where.append(f"s.obis IN ({', '.join('?' * len(selection.obis))})")
        args.extend(selection.obis)
    if selection.source == "register":
        where.append("s.source = ''")
    elif selection.source == "profile":
        where.append("s.source <> ''")
    query = f"""
        SELECT m.id, coalesce(m.serial, m.system_title), m.system_title, s.id, s.source, s.obis, s.attribute,
               r.time, r.raw, s.scaler, s.unit, r.quality, r.received
        FROM series s JOIN meter m ON m.id = s.meter_id JOIN reading r ON r.series_id = s.id
        WHERE r.time >= ? AND r.time < ? {"AND " + " AND ".join(where) if where else ""}
        ORDER BY m.id, s.source = '', s.source, s.obis, s.attribute, s.id, r.time"""
    store = PushStore(source.path, read_only=True)
    try:
        cursor = store.db.execute(query, args)
        while records := cursor.fetchmany(batch_rows):
            yield [ExportRow(r[0], r[1], bytes.fromhex(r[2]), r[3], r[4], r[5], r[6], dt.datetime.fromisoformat(r[7]),
                             r[8], r[9], r[10], r[11], dt.datetime.fromisoformat(r[12])) for r in records]
    finally:
        store.close()


async def stream_rows(pool, selection: Selection, batch_rows: int = BATCH_ROWS) -> AsyncIterator[list[ExportRow]]:
    """The selected readings in batches of at most `batch_rows`, ordered by meter, series
    (profile series first) and time, from a server-side cursor (or from `SqliteReadings`)."""
    if isinstance(pool, SqliteReadings):
        for rows in _sqlite_rows(pool, selection, batch_rows):
            yield rows
        return
    query, args = _query(selection)
    async with pool.acquire() as conn:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(query, *args)
            while True:
                records = await cursor.fetch(batch_rows)
                if not records:
                    return
                yield [ExportRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                                 r[12]) for r in records]
                if len(records) < batch_rows:
                    return


# ------------------------------------------------------------------------------- writers


def _parquet_schema():
    import pyarrow as pa

    utc = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("meter", pa.string()), ("system_title", pa.string()), ("source", pa.string()), ("obis", pa.string()),
        ("attribute", pa.int16()), ("time", utc), ("raw", pa.int64()), ("scaler", pa.int8()),
        ("unit", pa.string()), ("quality", pa.int16()), ("received", utc),
    ], metadata={b"value": b"raw * 10^scaler (exact); unit: Blue Book unit symbol; quality: profile status byte",
                 b"selection": b"start <= time < end"})


class _ParquetWriter:
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ExportError("parquet needs pyarrow: pip install pyarrow") from None
        self._schema = _parquet_schema()
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, rows: list[ExportRow]) -> None:
        import pyarrow as pa

        columns = {
            "meter": [r.serial for r in rows], "system_title": [r.system_title.hex() for r in rows],
            "source": [r.source for r in rows], "obis": [r.obis for r in rows],
            "attribute": [r.attribute for r in rows], "time": [r.time for r in rows],
            "raw": [r.raw for r in rows], "scaler": [r.scaler for r in rows],
            "unit": [unit_name(r.unit) for r in rows], "quality": [r.quality for r in rows],
            "received": [r.received for r in rows],
        }
        table = pa.Table.from_pydict(columns, schema=self._schema)
        # one row group per batch: a reader can take the file a batch at a time
        self._writer.write_table(table, row_group_size=len(rows))

    def close(self) -> None:
        self._writer.close()


class _CsvWriter:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(CSV_COLUMNS)

    def write(self, rows: list[ExportRow]) -> None:
        self._csv.writerows(
            (r.serial, r.system_title.hex(), r.source, r.obis, r.attribute, iso_utc(r.time),
             decimal_text(decimal_value(r.raw, r.scaler)), unit_name(r.unit), r.quality, iso_utc(r.received))
            for r in rows)

    def close(self) -> None:
        self._file.close()


async def export(pool, selection: Selection, fmt: str, path: Path, batch_rows: int = BATCH_ROWS,
                 table=None) -> ExportSummary:
    """Write the selected readings to `path` in `fmt` ('parquet', 'csv', 'cim')."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "cim":
        from smartmeter.hes.cim import export_cim

        return await export_cim(pool, selection, path, batch_rows=batch_rows, table=table)
    summary = ExportSummary(path=path, format=fmt)
    try:
        writer = _ParquetWriter(path) if fmt == "parquet" else _CsvWriter(path)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    last_meter = None
    try:
        async for rows in stream_rows(pool, selection, batch_rows):
            writer.write(rows)
            summary.rows += len(rows)
            summary.meters += _meter_changes(rows, last_meter)
            last_meter = rows[-1].meter_id
    finally:
        writer.close()
    return summary


def _meter_changes(rows: Iterable[ExportRow], last_meter: int | None) -> int:
    """Meters that start in this batch (rows come ordered by meter)."""
    count = 0
    for r in rows:
        if r.meter_id != last_meter:
            count += 1
            last_meter = r.meter_id
    return count
