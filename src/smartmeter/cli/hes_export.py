"""`smartmeter hes` commands that take readings out of the fleet store:

    smartmeter hes export --db DSN|FILE --format parquet|csv|cim --out FILE --from T --to T
                          [--meter SERIAL]... [--cell C] [--obis OBIS]... [--source register|profile|all]
    smartmeter hes gaps --db DSN --from T --to T [--meter SERIAL]... [--cell C] [--period S]
                        [--profile OBIS] [--max-drift S] [--json]
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.cli.hes import hes_group
from smartmeter.cli.hes_fleet import DSN_OPTION, open_store

__all__ = ["export_command", "gaps_command"]


def _time(text: str, option: str) -> dt.datetime:
    from smartmeter.hes.push_store import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise UsageProblem(f"{option} {text!r} is not an ISO 8601 date or date-time",
                           "e.g. 2026-03-10 or 2026-03-10T12:00:00+01:00 (no zone = UTC)") from None


def _range(start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
    begin, finish = _time(start, "--from"), _time(end, "--to")
    if finish <= begin:
        raise UsageProblem(f"--to {end} is not after --from {start}", "the range is from ≤ time < to")
    return begin, finish


def _obis_list(values: tuple[str, ...]) -> list[str]:
    from smartmeter.cosem.obis import Obis
    from smartmeter.errors import SmartmeterError

    out = []
    for v in values:
        try:
            out.append(str(Obis.parse(v)))
        except (ValueError, SmartmeterError):
            raise UsageProblem(f"--obis {v!r} is not an OBIS code", "e.g. 1-0:1.8.0.255") from None
    return out


FROM_OPTION = click.option("--from", "start", required=True, metavar="T",
                           help="From this time on (ISO 8601; no zone = UTC).")
TO_OPTION = click.option("--to", "end", required=True, metavar="T", help="Before this time.")
METER_OPTION = click.option("--meter", "serials", multiple=True, metavar="SERIAL", help="Only these meters (repeat).")
CELL_OPTION = click.option("--cell", default=None, help="Only the meters of this network cell.")


@hes_group.command("export")
@DSN_OPTION
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "cim"]), required=True,
              help="parquet (raw + scaler columns), csv (exact decimal value) or cim (IEC 61968-9 MeterReadings "
                   "XML).")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True, path_type=Path), required=True,
              help="The file to write.")
@METER_OPTION
@CELL_OPTION
@click.option("--obis", multiple=True, help="Only these objects (repeat).")
@click.option("--source", type=click.Choice(["register", "profile", "all"]), default="all", show_default=True,
              help="register: values as read (meter clock); profile: load-profile columns; all: both.")
@FROM_OPTION
@TO_OPTION
def export_command(dsn: str, fmt: str, out: Path, serials: tuple[str, ...], cell: str | None,
                   obis: tuple[str, ...], source: str, start: str, end: str) -> None:
    """Write the stored readings of from ≤ time < to as parquet, CSV or CIM, streamed in batches.
    The values are what the meters sent, with their status byte: nothing is validated,
    estimated or edited (that is the MDM's work). --db may also name the SQLite file of
    `hes listen` (the same tables): the same rows come out."""
    from smartmeter.hes.cim import TableError
    from smartmeter.hes.export import ExportError, Selection, export

    begin, finish = _range(start, end)
    selection = Selection(begin, finish, serials, cell, _obis_list(obis), source)

    async def run():
        if _sqlite_file(dsn):  # `hes listen`'s file: the same tables, the same rows
            from smartmeter.hes.export import SqliteReadings
            return await export(SqliteReadings(Path(dsn)), selection, fmt, out)
        store = await open_store(dsn, max_size=2)
        try:
            return await export(store.pool, selection, fmt, out)
        finally:
            await store.close()

    try:
        summary = asyncio.run(run())
    except (ExportError, TableError) as exc:
        raise UsageProblem(str(exc)) from None
    click.echo(summary.line())


def _sqlite_file(db: str) -> bool:
    """Whether --db names a file (`hes listen --db`) rather than a PostgreSQL DSN."""
    return "://" not in db and "=" not in db and Path(db).is_file()


@hes_group.command("gaps")
@DSN_OPTION
@METER_OPTION
@CELL_OPTION
@FROM_OPTION
@TO_OPTION
@click.option("--period", type=click.IntRange(1, 86400), default=900, show_default=True, metavar="S",
              help="The profile's capture period: a row is expected every S seconds (grid aligned to "
                   "00:00 UTC).")
@click.option("--profile", default="1-0:99.1.0.255", show_default=True, metavar="OBIS",
              help="The load profile to check.")
@click.option("--max-drift", type=click.FloatRange(0), default=60.0, show_default=True, metavar="S",
              help="A register read whose meter time differs from the store time by more is a clock drift.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding, then one with the summary.")
def gaps_command(dsn: str, serials: tuple[str, ...], cell: str | None, start: str, end: str, period: int,
                 profile: str, max_drift: float, as_json: bool) -> None:
    """Missing intervals, off-grid and overlapping rows and clock jumps of the meters' load
    profiles, one line each, then a summary. Findings are data: the exit status is 0."""
    from smartmeter.hes.gaps import GapReport, find_gaps

    begin, finish = _range(start, end)
    profile = _obis_list((profile,))[0]

    async def run() -> None:
        store = await open_store(dsn, max_size=2)
        try:
            async for item in find_gaps(store.pool, start=begin, end=finish, period=period, profile=profile,
                                        serials=serials, cell=cell, max_drift=max_drift):
                if isinstance(item, GapReport):
                    click.echo(json.dumps({"summary": item.as_dict()}) if as_json
                               else item.line(profile, period, begin, finish))
                else:
                    click.echo(json.dumps(item.as_dict()) if as_json else item.line())
        finally:
            await store.close()

    asyncio.run(run())
