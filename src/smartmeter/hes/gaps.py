"""Where the fleet store's load profiles have holes or doubtful timestamps, per meter.

Findings (all data, none an error):

* missing: grid times (every `period` seconds, aligned to the Unix epoch, from the first at or
  after `start` to the last before `end` or now) with no profile row, as ranges;
* off_grid: a row whose time is not on the grid (a meter that captured on a clock change);
* overlap: an interval closed by more than one row (an off-grid row and the row at the end of
  its interval, or several off-grid rows);
* clock_adjusted / clock_invalid: rows whose status byte has CAD (bit 5) or CIV (bit 1) set;
* clock_drift: register reads whose meter time differs from when the head-end stored them by
  more than `max_drift` seconds (the store time is taken when the session ends, so a session's
  length counts too: choose the threshold above the longest session).

All of it is computed in PostgreSQL with window functions over the primary key's order; the
findings come back through a server-side cursor, so neither side holds a whole table.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

__all__ = ["Finding", "GapReport", "KINDS", "STATUS_FLAGS", "find_gaps", "status_flags"]

KINDS = ("missing", "off_grid", "overlap", "clock_adjusted", "clock_invalid", "clock_drift")
# the profile status byte (KSMW PA 25.02 companion standard 5.7.3, IDIS package 2)
STATUS_FLAGS = ((7, "PDN"), (5, "CAD"), (4, "CDI"), (3, "DST"), (2, "DNV"), (1, "CIV"), (0, "ERR"))
CLOCK_ADJUSTED = 1 << 5
CLOCK_INVALID = 1 << 1


def status_flags(status: int) -> str:
    return ",".join(name for bit, name in STATUS_FLAGS if status >> bit & 1) or "-"


def _utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True)
class Finding:
    serial: str
    kind: str
    time: dt.datetime
    last: dt.datetime | None = None  # missing: the last missing grid time of the range
    count: int = 1  # missing: intervals; overlap: rows closing the interval
    quality: int | None = None
    drift_s: float | None = None  # clock_drift: store time minus meter time

    def line(self) -> str:
        head = f"{self.serial}  {self.kind:<14} {_iso(self.time)}"
        if self.kind == "missing":
            span = f"..{_iso(self.last)}" if self.last is not None and self.last != self.time else ""
            return f"{head}{span} ({self.count} interval{'s' if self.count != 1 else ''})"
        if self.kind == "overlap":
            return f"{head} {self.count} rows close this interval (status {status_flags(self.quality or 0)})"
        if self.kind == "clock_drift":
            side = "behind" if self.drift_s >= 0 else "ahead of"
            return f"{head} meter clock {abs(self.drift_s):g} s {side} the head-end's"
        return f"{head} status 0x{(self.quality or 0):02X} ({status_flags(self.quality or 0)})"

    def as_dict(self) -> dict[str, Any]:
        return {"meter": self.serial, "kind": self.kind, "time": _iso(self.time),
                "last": _iso(self.last) if self.last is not None else None, "count": self.count,
                "quality": self.quality, "drift_s": self.drift_s}


@dataclass
class GapReport:
    """What a run found, counted (the findings themselves are streamed)."""

    meters: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    missing_intervals: int = 0
    meters_with_findings: int = 0

    def add(self, finding: Finding) -> None:
        self.counts[finding.kind] += 1
        if finding.kind == "missing":
            self.missing_intervals += finding.count

    def line(self, profile: str, period: int, start: dt.datetime, end: dt.datetime) -> str:
        c = self.counts
        return (f"{self.meters} meters, profile {profile} every {period} s, {_iso(start)} to {_iso(end)}: "
                f"{self.missing_intervals} missing intervals in {c['missing']} gaps, {c['off_grid']} off-grid rows, "
                f"{c['overlap']} overlaps, {c['clock_adjusted']} clock adjusted, {c['clock_invalid']} clock invalid, "
                f"{c['clock_drift']} clock drifts; {self.meters_with_findings} meters with findings")

    def as_dict(self) -> dict[str, Any]:
        return {"meters": self.meters, "meters_with_findings": self.meters_with_findings,
                "missing_intervals": self.missing_intervals, **{k: v for k, v in self.counts.items()}}


def _meter_filter(serials: Sequence[str], cell: str | None, args: list[Any]) -> str:
    where = []
    if serials:
        args.append(list(serials))
        where.append(f"serial = ANY(${len(args)})")
    if cell is not None:
        args.append(cell)
        where.append(f"cell = ${len(args)}")
    return ("WHERE " + " AND ".join(where)) if where else ""


def grid_bounds(start: dt.datetime, end: dt.datetime, period: int,
                now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime] | None:
    """The first grid time at or after `start` and the last before `end` (and not after now),
    or None when there is none."""
    first = -(-int(start.timestamp()) // period) * period
    if first < start.timestamp():
        first += period
    stop = min(end, now) if now is not None else end
    last = -(-int(stop.timestamp()) // period) * period - period
    if last + period < stop.timestamp():  # stop between seconds: the ceiling above is one short
        last += period
    if last < first:
        return None
    return _utc(first), _utc(last)


async def find_gaps(pool, *, start: dt.datetime, end: dt.datetime, period: int = 900,
                    profile: str = "1-0:99.1.0.255", serials: Sequence[str] = (), cell: str | None = None,
                    max_drift: float = 60.0, now: dt.datetime | None = None,
                    batch_rows: int = 10_000) -> AsyncIterator[Finding | GapReport]:
    """Yields the findings ordered by meter serial and time, then the GapReport."""
    now = now or dt.datetime.now(dt.timezone.utc)
    bounds = grid_bounds(start, end, period, now)
    args: list[Any] = [start, end, period, dt.timedelta(seconds=period), profile, float(max_drift)]
    meters = _meter_filter(serials, cell, args)
    if bounds is None:
        missing_sql = ""
    else:
        args += list(bounds)
        first, last = f"${len(args) - 1}", f"${len(args)}"
        # the grid rows of each meter between two sentinels (one period before the first
        # expected time, one after the last): a step of more than a period is a gap
        missing_sql = f"""
        UNION ALL
        SELECT meter_id, 'missing', prev + $4::interval, time - $4::interval, (extract(epoch FROM time - prev)::bigint / $3::int) - 1,
               NULL::int, NULL::float8
        FROM (SELECT meter_id, time, lag(time) OVER (PARTITION BY meter_id ORDER BY time) AS prev
              FROM (SELECT meter_id, time FROM marked WHERE on_grid AND time BETWEEN {first} AND {last}
                    UNION ALL SELECT id, {first}::timestamptz - $4::interval FROM sel
                    UNION ALL SELECT id, {last}::timestamptz + $4::interval FROM sel) grid) steps
        WHERE time - prev > $4::interval"""
    query = f"""
        WITH sel AS (SELECT id, serial FROM meter {meters}),
        profile_rows AS (
            SELECT s.meter_id, r.time, bit_or(r.quality)::int AS quality
            FROM sel JOIN series s ON s.meter_id = sel.id AND s.source = $5
            JOIN reading r ON r.series_id = s.id AND r.time >= $1 AND r.time < $2
            GROUP BY s.meter_id, r.time),
        marked AS (
            SELECT meter_id, time, quality, extract(epoch FROM time) % $3::int = 0 AS on_grid,
                   -- the grid time that ends the interval the row belongs to
                   to_timestamp(ceil(extract(epoch FROM time) / $3::int) * $3::int) AS slot
            FROM profile_rows)
        SELECT sel.serial, f.kind, f.time, f.last, f.n, f.quality, f.drift
        FROM (
            SELECT meter_id, 'off_grid' AS kind, time, NULL::timestamptz AS last, 1::bigint AS n, quality,
                   NULL::float8 AS drift
            FROM marked WHERE NOT on_grid
            UNION ALL
            SELECT meter_id, 'overlap', slot, NULL, count(*), bit_or(quality), NULL
            FROM marked GROUP BY meter_id, slot HAVING count(*) > 1
            UNION ALL
            SELECT meter_id, 'clock_adjusted', time, NULL, 1, quality, NULL FROM marked WHERE quality & 32 <> 0
            UNION ALL
            SELECT meter_id, 'clock_invalid', time, NULL, 1, quality, NULL FROM marked WHERE quality & 2 <> 0
            UNION ALL
            SELECT s.meter_id, 'clock_drift', r.time, NULL, count(*), NULL,
                   extract(epoch FROM r.received - r.time)::float8
            FROM sel JOIN series s ON s.meter_id = sel.id AND s.source = ''
            JOIN reading r ON r.series_id = s.id AND r.time >= $1 AND r.time < $2
            WHERE abs(extract(epoch FROM r.received - r.time))::float8 > $6::float8
            GROUP BY s.meter_id, r.time, r.received
            {missing_sql}
        ) f JOIN sel ON sel.id = f.meter_id
        ORDER BY sel.serial, f.time, f.kind"""
    report = GapReport()
    async with pool.acquire() as conn:
        async with conn.transaction(readonly=True):
            count_args: list[Any] = []
            report.meters = await conn.fetchval(f"SELECT count(*) FROM meter {_meter_filter(serials, cell, count_args)}",
                                                *count_args)
            cursor = await conn.cursor(query, *args)
            last_serial = None
            while True:
                records = await cursor.fetch(batch_rows)
                for serial, kind, time, last, n, quality, drift in records:
                    finding = Finding(serial, kind, time, last, int(n), quality, drift)
                    report.add(finding)
                    if serial != last_serial:
                        report.meters_with_findings += 1
                        last_serial = serial
                    yield finding
                if len(records) < batch_rows:
                    break
    yield report
