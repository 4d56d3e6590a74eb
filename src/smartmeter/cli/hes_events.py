"""`smartmeter hes events`: the meters' event log entries the fleet store holds.

    smartmeter hes events [SERIAL]... --db DSN [--from T] [--to T] [--cell C] [--log OBIS]...
                          [--format text|csv|json] [--out FILE]
"""
from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.cli.hes import hes_group
from smartmeter.cli.hes_export import _obis_list, _time
from smartmeter.cli.hes_fleet import DSN_OPTION, open_store

__all__ = ["CSV_COLUMNS", "events_command"]

CSV_COLUMNS = ("meter", "log", "log_name", "time", "code", "event", "received")


def _names() -> tuple[dict[str, str], dict[int, str]]:
    """(log OBIS → log name, event code → event name) of the IDIS event tables the meter uses."""
    from smartmeter.meter.events import EventTable

    table = EventTable.load()
    return ({log.obis: log.title for log in table.logs.values()},
            {code: event.name for code, event in table.events.items()})


@hes_group.command("events")
@click.argument("serials", nargs=-1, metavar="[SERIAL]...")
@DSN_OPTION
@click.option("--from", "start", default=None, metavar="T", help="From this time on (ISO 8601; no zone = UTC).")
@click.option("--to", "end", default=None, metavar="T", help="Before this time.")
@click.option("--cell", default=None, help="Only the meters of this network cell.")
@click.option("--log", "logs", multiple=True, metavar="OBIS",
              help="Only this event log (repeat), e.g. 0-0:99.98.0.255 (standard event log).")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True,
              help="text: one line per event; csv: columns " + ", ".join(CSV_COLUMNS) + "; json: one object "
                   "per line.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write to this file instead of the standard output.")
def events_command(serials: tuple[str, ...], dsn: str, start: str | None, end: str | None, cell: str | None,
                   logs: tuple[str, ...], fmt: str, out: Path | None) -> None:
    """The event log entries the head-end read from the meters (all meters without SERIAL),
    from ≤ time < to, oldest first: the meter's time stamp, the IDIS event code and its name.
    Each entry is stored once, however often it was read."""
    from smartmeter.hes.export import iso_utc
    from smartmeter.hes.store.pg import events_of

    begin = _time(start, "--from") if start else None
    finish = _time(end, "--to") if end else None
    if begin is not None and finish is not None and finish <= begin:
        raise UsageProblem(f"--to {end} is not after --from {start}", "the range is from ≤ time < to")
    wanted_logs = _obis_list(logs)
    log_names, event_names = _names()

    async def run(write) -> int:
        store = await open_store(dsn, max_size=1)
        count = 0
        try:
            if serials:
                known = {serial for _, serial, _ in await store.meter_ids(serials=serials)}
                unknown = [s for s in serials if s not in known]
                if unknown:
                    raise UsageProblem(f"no meter {', '.join(unknown)} in the store",
                                       "`smartmeter hes db import-fleet` adds meters")
            async for e in events_of(store.pool, serials=serials, cell=cell, logs=wanted_logs, start=begin,
                                     end=finish):
                write({"meter": e["serial"], "log": e["log"], "log_name": log_names.get(e["log"], ""),
                       "time": iso_utc(e["time"]), "code": e["code"],
                       "event": event_names.get(e["code"], "manufacturer specific" if e["code"] >= 230 else ""),
                       "received": iso_utc(e["received"])})
                count += 1
        finally:
            await store.close()
        return count

    # a file is written beside `out` and takes its place only when complete: an unknown serial,
    # a store that cannot be reached or an interruption leaves what `out` held before
    partial = out.with_name(f".{out.name}.{os.getpid()}.part") if out is not None else None
    stream = open(partial, "w", newline="", encoding="utf-8") if partial is not None else sys.stdout
    complete = False
    try:
        if fmt == "csv":
            writer = csv.DictWriter(stream, CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            write = writer.writerow
        elif fmt == "json":
            def write(row: dict) -> None:
                stream.write(json.dumps(row) + "\n")
        else:
            def write(row: dict) -> None:
                stream.write(f"{row['time']}  {row['meter']}  {row['log']}  {row['code']:>3}  {row['event']}\n")
        count = asyncio.run(run(write))
        complete = True
    finally:
        if partial is not None:
            stream.close()
            if complete:
                os.replace(partial, out)
            else:
                partial.unlink(missing_ok=True)
    if out is not None:
        click.echo(f"{count} event(s) written to {out}")
    elif count == 0 and fmt == "text":
        click.echo("no event stored in that selection", err=True)
