"""`smartmeter hes`: the head-end's push listener and what it stored.

    smartmeter hes listen [--udp PORT] [--tcp PORT] [--host ADDR] --keys DIR... [--db FILE]
                          [--objects FILE] [--ack [--meter-port PORT]]
    smartmeter hes show [--db FILE] [--meter SYSTEM_TITLE] [--obis OBIS]... [--from T] [--to T]
                        [--json | --csv FILE]
    smartmeter hes meters [--db FILE] [--json]
    smartmeter hes lists --meter HOST[:PORT] --credentials FILE [--db FILE]
    smartmeter hes upgrade [--db FILE]
"""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import signal
import sys
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.errors import SmartmeterError
from smartmeter.hes.push_listener import (
    ALARM_DESCRIPTORS, SETUPS, AlarmAcknowledger, Keyring, Limits, ObjectLists, PushReceiver, load_object_list_file,
    model_object_lists, serve_tcp, serve_udp,
)
from smartmeter.hes.push_store import SCHEMA_VERSION, PushStore, StoredPush, format_time, parse_time

__all__ = ["hes_group"]

DEFAULT_DB = Path("hes-pushes.sqlite")
DEFAULT_PUSH_PORT = 4060  # 4059 is the meter's own wrapper port (a demo meter often runs on the same host)
DEFAULT_METER_PORT = 4059

DB_OPTION = click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_DB,
                         show_default=True, help="The SQLite file of the pushes.")


@click.group("hes")
def hes_group() -> None:
    """The head-end: receive the meters' pushes and read back what they said."""


# ------------------------------------------------------------------------- listen


@hes_group.command("listen")
@click.option("--udp", "udp_port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help=f"UDP port of the LAN pushes (default {DEFAULT_PUSH_PORT} when neither --udp nor --tcp is "
                   "given; 0 = any free port).")
@click.option("--tcp", "tcp_port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help=f"TCP port of the WAN pushes (default {DEFAULT_PUSH_PORT} when neither is given).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (IPv4 or IPv6).")
@click.option("--keys", "keys", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="A credentials file or a directory of them (a meter's DATA_DIR/credentials): the Data Readout "
                   "client's file of a meter decrypts its pushes. Repeat for more meters.")
@DB_OPTION
@click.option("--nats", "nats_url", default=None, metavar="URL",
              help="Publish the authentic pushes to NATS JetStream (nats://HOST:PORT) for the workers to store, "
                   "instead of storing them in --db. Run as many such listeners as you like.")
@click.option("--store", "store_dsn", default=None, metavar="DSN",
              help="With --nats: take the meters' keys from the fleet store (postgresql://...) as well as --keys.")
@click.option("--kek", "kek_file", envvar="SMARTMETER_HES_KEK", default=Path("hes-kek.hex"), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="With --store: the store's key-encryption key (or $SMARTMETER_HES_KEK).")
@click.option("--objects", "objects_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Push object lists by setup OBIS (TOML or JSON), for meters whose lists were "
                                 "not read with `hes lists`.")
@click.option("--ack", is_flag=True, help="Clear the alarm descriptors an alarm push reports, on the meter, as the "
                                          "Management client (its credentials file next to the push keys).")
@click.option("--meter-port", type=click.IntRange(1, 65535), default=DEFAULT_METER_PORT, show_default=True,
              help="The meters' wrapper port for --ack (at the address the push came from).")
def listen(udp_port: int | None, tcp_port: int | None, host: str, keys: tuple[Path, ...], db: Path,
           nats_url: str | None, store_dsn: str | None, kek_file: Path, objects_file: Path | None, ack: bool,
           meter_port: int) -> None:
    """Receive pushes (UDP and/or TCP, IEC 62056-47 wrapper) and store every value they carry.

    Refused (counted, logged once a minute per condition, never stored): unknown system titles,
    replays (an invocation counter already used under the meter's key, kept across restarts;
    a new key starts the counter again), forged pushes (GCM tag), unprotected, garbage,
    truncated and oversized messages. Alarm pushes are printed at once, one line each. Ctrl-C
    prints the counts and stops. A file of an older layout is upgraded first (`hes upgrade`)."""
    if udp_port is None and tcp_port is None:
        udp_port = tcp_port = DEFAULT_PUSH_PORT
    if store_dsn is not None and nats_url is None:
        raise UsageProblem("--store gives keys to a listener that publishes to NATS", "add --nats URL")
    if nats_url is not None:
        if ack or objects_file is not None:
            raise UsageProblem("--ack and --objects work with the SQLite listener only", "leave out --nats")
        from smartmeter.cli.hes_fleet import listen_to_nats
        listen_to_nats(keys, nats_url, store_dsn, kek_file, host, udp_port, tcp_port)
        return
    if not keys:
        raise UsageProblem("no --keys given", "give a meter's DATA_DIR/credentials (or --nats with --store)")
    keyring = Keyring.load(keys)
    if not len(keyring):
        raise UsageProblem("no Data Readout credentials (client SAP 2, naming the meter's server_system_title) "
                           "in " + ", ".join(map(str, keys)), "give a meter's DATA_DIR/credentials")
    configured = load_object_list_file(objects_file) if objects_file is not None else None
    asyncio.run(_listen(keyring, db, host, udp_port, tcp_port, configured, ack, meter_port))


async def _listen(keyring: Keyring, db: Path, host: str, udp_port: int | None, tcp_port: int | None,
                  configured, ack: bool, meter_port: int) -> None:
    store = PushStore(db, deferred=True)
    if store.upgraded_from is not None:
        click.echo(_upgraded(store))
    acks = AlarmAcknowledger(keyring, meter_port, _say) if ack else None

    def on_alarm(push: StoredPush, descriptors: dict[str, int], sender) -> None:
        shown = ", ".join(f"descriptor {ALARM_DESCRIPTORS.index(obis) + 1} = 0x{bits:08X}"
                          for obis, bits in sorted(descriptors.items()) if bits)
        meter = push.meter + (f" ({push.serial})" if push.serial else "")
        _say(f"ALARM {push.capture_time} meter {meter}: {shown}")
        if acks is not None:
            acks.clear(push.meter, descriptors, sender)

    receiver = PushReceiver(keyring, store, ObjectLists(store, configured, model_object_lists()),
                            limits=Limits(), on_alarm=on_alarm)
    closers, lines = await serve_pushes(receiver, host, udp_port, tcp_port)
    click.echo(f"listening for pushes on {', '.join(lines)}; keys of {len(keyring)} meter(s); storing in {db}")
    sys.stdout.flush()
    await until_stopped()
    for close in closers:
        close()
    if acks is not None:
        await acks.wait()
    store.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(receiver.counts.items())) or "nothing received"
    click.echo(f"stopped: {counts}")


async def until_stopped() -> None:
    """Return on Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_pushes(intake, host: str, udp_port: int | None, tcp_port: int | None):
    """The UDP and TCP listeners of a push intake: (their close functions, "UDP host:port" lines)."""
    closers, lines = [], []
    if udp_port is not None:
        transport = await serve_udp(intake, host, udp_port)
        closers.append(transport.close)
        lines.append(f"UDP {_where(transport.get_extra_info('sockname'))}")
    if tcp_port is not None:
        server = await serve_tcp(intake, host, tcp_port)
        closers.append(server.close)
        lines.append(f"TCP {_where(server.sockets[0].getsockname())}")
    return closers, lines


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def _where(sockname) -> str:
    host, port = sockname[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- show


def _open(db: Path) -> PushStore:
    try:
        return PushStore(db, read_only=True)
    except FileNotFoundError:
        raise UsageProblem(f"{db}: no such database", "give the --db of `smartmeter hes listen`") from None


def _time_option(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return format_time(parse_time(text))
    except ValueError:
        raise UsageProblem(f"{option} {text!r} is not an ISO 8601 date or date-time",
                           "e.g. 2026-03-10 or 2026-03-10T12:00:00+01:00 (no zone = UTC)") from None


def _system_title(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise UsageProblem(f"--meter {text!r} is not a system title", "16 hex digits, as `hes meters` lists them")
    return raw.hex().upper()


def _obis_list(values: tuple[str, ...]) -> list[str]:
    from smartmeter.cosem.obis import Obis

    try:
        return [str(Obis.parse(v)) for v in values]
    except (ValueError, SmartmeterError):
        raise UsageProblem(f"--obis {values!r}: not an OBIS code", "e.g. 1-0:1.8.0.255") from None


COLUMNS = ("meter", "obis", "attribute", "class_id", "capture_time", "receive_time", "value")


@hes_group.command("show")
@DB_OPTION
@click.option("--meter", default=None, metavar="SYSTEM_TITLE", help="Only this meter (16 hex digits).")
@click.option("--obis", multiple=True, help="Only these objects (repeat).")
@click.option("--from", "start", default=None, metavar="T", help="Captured at or after T (ISO 8601; no zone = UTC).")
@click.option("--to", "end", default=None, metavar="T", help="Captured before T.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write CSV to FILE (- = stdout).")
def show(db: Path, meter: str | None, obis: tuple[str, ...], start: str | None, end: str | None, as_json: bool,
         csv_file: str | None) -> None:
    """The stored values, by meter, object, attribute and capture time."""
    if as_json and csv_file:
        raise UsageProblem("--json and --csv exclude each other")
    store = _open(db)
    try:
        rows = store.readings(meter=_system_title(meter), obis=_obis_list(obis),
                              start=_time_option(start, "--from"), end=_time_option(end, "--to"))
        if csv_file is not None:
            with click.open_file(csv_file, "w") as out:
                writer = csv.writer(out)
                writer.writerow(COLUMNS)
                for row in rows:
                    writer.writerow((*row[:6], json.dumps(row[6])))
        elif as_json:
            for row in rows:
                click.echo(json.dumps(dict(zip(COLUMNS, row))))
        else:
            for m, o, attribute, _, captured, _, value in rows:
                click.echo(f"{m}  {captured}  {o}:{attribute}  {json.dumps(value)}")
    finally:
        store.close()


@hes_group.command("meters")
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def meters(db: Path, as_json: bool) -> None:
    """The meters that pushed: system title, serial number and address (from the installation
    push), first and last push, registration time, number of pushes."""
    store = _open(db)
    try:
        names = ("system_title", "serial", "address", "first_seen", "last_seen", "registered", "pushes")
        for row in store.meters():
            if as_json:
                click.echo(json.dumps(dict(zip(names, row))))
            else:
                title, serial, address, first, last, registered, pushes = row
                click.echo(f"{title}  serial {serial or '-'}  address {address or '-'}  "
                           f"{'registered ' + registered if registered else 'not registered'}  "
                           f"pushes {pushes} ({first} .. {last})")
    finally:
        store.close()


# --------------------------------------------------------------------------- lists


@hes_group.command("lists")
@click.option("--meter", "address", required=True, metavar="HOST[:PORT]",
              help=f"The meter's wrapper address (port {DEFAULT_METER_PORT} if not given).")
@click.option("--credentials", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A client's credentials file (Data Readout or Management) that may read the push setups.")
@DB_OPTION
def lists(address: str, credentials: Path, db: Path) -> None:
    """Read the push object list of every push setup from the meter over DLMS and keep it in the
    database: the listener then maps that meter's pushes by them."""
    host, port = _host_port(address)
    meter, found = asyncio.run(_read_lists(host, port, credentials))
    store = PushStore(db)
    try:
        now = format_time(dt.datetime.now(dt.timezone.utc))
        for setup, entries in found.items():
            store.put_object_list(meter, setup, entries, "meter", now)
            click.echo(f"{meter} {setup} ({SETUPS[setup]}): {len(entries)} entries")
        if not found:
            click.echo(f"{meter}: no push setup readable with {credentials}")
    finally:
        store.close()


@hes_group.command("upgrade")
@DB_OPTION
def upgrade(db: Path) -> None:
    """Bring the file of an older smartmeter's listener to this one's layout, in place (one
    transaction; then compacted). Stop the older listener first: it cannot write the new layout.
    `hes listen` does the same when it starts; `hes show` and `hes meters` never change the file."""
    if not db.exists():
        raise UsageProblem(f"{db}: no such database", "give the --db of `smartmeter hes listen`")
    store = PushStore(db)
    try:
        click.echo(_upgraded(store) if store.upgraded_from is not None
                   else f"{db}: layout version {SCHEMA_VERSION} already; nothing to do")
    finally:
        store.close()


def _upgraded(store: PushStore) -> str:
    return (f"{store.path}: upgraded from layout version {store.upgraded_from} to {SCHEMA_VERSION} "
            f"({store.push_count()} pushes kept)")


def _host_port(address: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if port and not port.isdigit():
        raise UsageProblem(f"--meter {address!r}: the port is not a number", "HOST:PORT or [IPv6]:PORT")
    return host, int(port) if port else DEFAULT_METER_PORT


async def _read_lists(host: str, port: int, credentials_path: Path) -> tuple[str, dict[str, list]]:
    from smartmeter.cosem.obis import Obis
    from smartmeter.dlms.client import AccessDenied
    from smartmeter.hes.client import MeterClient
    from smartmeter.hes.connection import WrapperLink
    from smartmeter.hes.credentials import load_credentials

    credentials = load_credentials(credentials_path)
    link = WrapperLink(host, port, credentials.client_sap, credentials.server_sap)
    found: dict[str, list] = {}
    async with MeterClient(link, security=credentials.security) as client:
        known = {str(o.obis) for o in await client.objects()}
        for setup in SETUPS:
            if setup not in known:
                continue
            try:
                value = await client.get(setup, 2, class_id=40)
            except AccessDenied:
                continue
            found[setup] = [[e.value[0].value, str(Obis.from_bytes(e.value[1].value)), e.value[2].value,
                             e.value[3].value] for e in value.value]
        meter = client.association.server_system_title or b""
    return meter.hex().upper(), found
