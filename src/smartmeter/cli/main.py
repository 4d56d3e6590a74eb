"""The `smartmeter` command: run a meter, and talk to one."""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import errno
import json
import logging
import signal
import sys
import threading
from decimal import Decimal
from pathlib import Path

import click

from smartmeter.cli.format import to_json, to_text
from smartmeter.cli.pki import pki_group
from smartmeter.cosem.obis import Obis
from smartmeter.errors import SmartmeterError
from smartmeter.legal.interface import LegalProcessDown

DEFAULT_WRAPPER_PORT = 4059
DEFAULT_HDLC_PORT = 4061


class UsageProblem(SmartmeterError):
    """A problem the user can fix; carries the hint shown after the message."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message)


def fail(message: str, hint: str = "") -> None:
    click.echo(f"error: {message}" + (f" (hint: {hint})" if hint else ""), err=True)
    sys.exit(2)


class Cli(click.Group):
    """Turns every expected failure into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageProblem as exc:
            fail(str(exc), exc.hint)
        except SmartmeterError as exc:
            fail(str(exc), "run with --verbose for details")
        except click.exceptions.Exit:
            raise
        except click.ClickException as exc:
            fail(exc.format_message(), "see --help")
        except LegalProcessDown as exc:
            fail(str(exc), "check --data-dir; a damaged store must be restored, not replaced")
        except OSError as exc:
            fail(str(exc), "check the address, port or path")
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (to stderr).")
@click.version_option(package_name="smartmeter")
def main(verbose: bool) -> None:
    """smartmeter: a DLMS/COSEM electricity meter (KSMW-PA2502) and its head-end."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------------------
# meter


@main.group()
def meter() -> None:
    """Run a meter."""


@meter.command("run")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("meter-data"),
              show_default=True, help="Where the meter keeps its non-volatile state.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--wrapper-port", type=int, default=DEFAULT_WRAPPER_PORT, show_default=True,
              help="TCP (and UDP) port of the LAN/WAN interface, IEC 62056-47 wrapper; 0 = off.")
@click.option("--hdlc-port", type=int, default=DEFAULT_HDLC_PORT, show_default=True,
              help="TCP port of the WZ optical interface, HDLC over TCP; 0 = off.")
@click.option("--serial", "serial_device", default=None, metavar="DEVICE",
              help="Also serve the WZ interface (HDLC) on this serial port, e.g. /dev/ttyUSB0.")
@click.option("--serial-number", default="1KFM0100000001", show_default=True, help="DIN 43863-5 meter ID.")
@click.option("--profile", type=click.Choice(["ksmw", "idis"]), default="ksmw", show_default=True,
              help="Object model and clients: ksmw (suite 1, HLS 7 management) or idis (HLS 5, suite 0).")
@click.option("--sensor-port", type=int, default=None, metavar="PORT",
              help="Measure with a paired remote sensor sending to udp://127.0.0.1:PORT instead of the simulated "
                   "household (pair it in certification mode).")
@click.option("--banner", is_flag=True, help="Print the client commands to try once listening.")
def meter_run(data_dir: Path, host: str, wrapper_port: int, hdlc_port: int, serial_device: str | None,
              serial_number: str, profile: str, sensor_port: int | None, banner: bool) -> None:
    """Start a meter with embedded defaults, driven by a simulated household load.

    On first start it back-fills 30 days of 15-minute load profile. Ctrl-C stops it cleanly.
    """
    from smartmeter.meter.runtime import Meter, MeterConfig

    meter_ = Meter(MeterConfig(data_dir=data_dir, serial=serial_number, profile=profile, realtime=True,
                               sensor="remote" if sensor_port is not None else "synthetic", sensor_port=sensor_port))
    try:
        asyncio.run(_serve(meter_, host, wrapper_port, hdlc_port, serial_device, banner))
    finally:
        meter_.close()
    click.echo("meter stopped; state saved in " + str(data_dir))


def _invocation() -> str:
    """How the user started us, so the printed commands can be pasted as they are."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "smartmeter" and argv0.exists():
        try:
            return str(argv0.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(argv0)
    return f"{Path(sys.executable).name} -m smartmeter"


async def _serve(meter_, host: str, wrapper_port: int, hdlc_port: int, serial_device: str | None, banner: bool) -> None:
    from smartmeter.transport import aio

    async def listen(what: str, port: int, start):
        try:
            return await start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageProblem(f"{what} port {port} on {host} is already in use",
                                   f"stop the other program or choose another port with --{what}-port") from None
            raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror}", "check --host") from None

    servers, lines = [], []
    if wrapper_port:
        servers.append(await listen("wrapper", wrapper_port, lambda: aio.serve_wrapper_tcp(meter_.server, host, wrapper_port)))
        udp = await listen("wrapper", wrapper_port, lambda: aio.serve_wrapper_udp(meter_.server, host, wrapper_port))
        lines.append(f"LAN/WAN interface: IEC 62056-47 wrapper on tcp://{host}:{wrapper_port} and udp://{host}:{wrapper_port}")
    if hdlc_port:
        servers.append(await listen("hdlc", hdlc_port, lambda: aio.serve_hdlc_tcp(meter_.server, meter_.hdlc_setup(), host, hdlc_port, meter_.wz_guard.port_open)))
        lines.append(f"WZ optical interface: HDLC over tcp://{host}:{hdlc_port}")
    stop_serial = threading.Event()
    if serial_device:
        try:
            aio.serve_hdlc_serial(meter_.server, meter_.hdlc_setup(), serial_device, stop_serial, meter_.wz_guard.port_open)
        except Exception as exc:  # pyserial raises SerialException (an OSError subclass on most platforms)
            raise UsageProblem(f"cannot open serial port {serial_device}: {exc}", "check the device path and permissions") from None
        lines.append(f"WZ optical interface: HDLC on serial port {serial_device}")
    ident = meter_.identity
    click.echo(f"meter {ident.serial} (logical device {ident.logical_device_name.decode()}, "
               f"system title {ident.system_title.hex().upper()}), data in {meter_.config.data_dir}")
    for line in lines:
        click.echo("  " + line)
    if banner:
        port_opt = "" if wrapper_port == DEFAULT_WRAPPER_PORT else f" --port {wrapper_port}"
        hport = "" if hdlc_port == DEFAULT_HDLC_PORT else f" --port {hdlc_port}"
        prog = _invocation()
        click.echo("\nTry, in another terminal:")
        for command in ("objects", "get 1-0:1.8.0.255", "get 0-0:1.0.0.255",
                        f"profile 1-0:99.1.0.255 --from {(dt.date.today() - dt.timedelta(days=1)).isoformat()}"):
            click.echo(f"  {prog} client{port_opt} {command}")
        click.echo(f"  {prog} client --hdlc{hport} get 0-0:42.0.0.255")
        creds = meter_.config.data_dir / "credentials" / "management.json"
        click.echo(f"  {prog} client{port_opt} --credentials {creds} get 1-0:1.8.0.255   # HLS 7, suite 1 (demo keys)")
        click.echo("Ctrl-C stops the meter.")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registration = asyncio.create_task(meter_.run_registration())
    await stop.wait()
    registration.cancel()
    stop_serial.set()
    for s in servers:
        s.close()
    if wrapper_port:
        udp.close()


main.add_command(pki_group)


# --------------------------------------------------------------------------------------
# legal metrology: identification and offline verification


@main.command("id")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also show the signing key of this meter's data (fingerprint of its exported public key).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def software_id(data_dir: Path | None, as_json: bool) -> None:
    """Show the software identification: the legally relevant part's version and SHA-256 digest
    (checked against the signed release manifest), the platform's (interpreter and libraries
    as the legal process loads them) and the application's."""
    from smartmeter import __version__
    from smartmeter.legal.interface import identify_software

    ident = identify_software(__version__)
    out = {"legal": {"version": ident.legal_version, "identifier": ident.legal_identifier, "sha256": ident.legal_digest,
                     "matches_signed_manifest": ident.ok, "check": ident.reason,
                     "development_key": ident.development_key},
           "application": {"version": ident.application_version, "sha256": ident.application_digest},
           "platform": {"identifier": ident.platform_identifier, "sha256": ident.platform_digest}}
    if data_dir is not None:
        key = data_dir / "meter-signing-key.pub.pem"
        if not key.is_file():
            raise UsageProblem(f"no exported meter signing key in {data_dir}", "give the data directory of a meter that has run")
        import hashlib

        from cryptography.hazmat.primitives import serialization

        der = serialization.load_pem_public_key(key.read_bytes()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        out["signing_key_sha256"] = hashlib.sha256(der).hexdigest()
    if as_json:
        click.echo(json.dumps(out))
        return
    legal = out["legal"]
    state = "matches the signed release manifest" if legal["matches_signed_manifest"] else f"DOES NOT VERIFY: {legal['check']}"
    click.echo(f"legally relevant part  {legal['identifier']}  sha256 {legal['sha256']}")
    click.echo(f"                       {state}")
    if legal["development_key"]:
        click.echo("                       DEVELOPMENT BUILD: signed by a development key, not a certified release")
    click.echo(f"platform               {out['platform']['identifier']}  sha256 {out['platform']['sha256']}")
    click.echo(f"application            {out['application']['version']}  sha256 {out['application']['sha256']}")
    if "signing_key_sha256" in out:
        click.echo(f"meter signing key      sha256 {out['signing_key_sha256']}")
    if not legal["matches_signed_manifest"]:
        sys.exit(1)


def _verify(data_dir: Path, tables: tuple[str, ...], public_key: Path | None, as_json: bool) -> None:
    from smartmeter.legal.interface import verify_stored_data

    if not data_dir.is_dir():
        raise UsageProblem(f"{data_dir} is not a directory", "give a meter's data directory (e.g. meter-data)")
    pem = public_key.read_bytes() if public_key is not None else None
    reports = verify_stored_data(data_dir, tables, pem)
    if as_json:
        click.echo(json.dumps([{"table": r.name, "ok": r.ok, "checked": r.checked, "first_bad_entry": r.first_bad_seq,
                                "problem": r.problem, "unsigned_tail": r.unsigned_tail,
                                "key_sha256": r.key_fingerprint} for r in reports]))
    else:
        for r in reports:
            if r.ok and r.name in ("energy registers", "parameters"):
                click.echo(f"{r.name}: ok, the stored values match the meter's signature")
            elif r.ok:
                click.echo(f"{r.name}: ok, {r.checked} entries, signed through entry {r.signed_through}"
                           + (f", {r.unsigned_tail} newer entries hash-linked only" if r.unsigned_tail else ""))
            else:
                where = f" at entry {r.first_bad_seq}" if r.first_bad_seq is not None else ""
                click.echo(f"{r.name}: FAILED{where}: {r.problem}")
    if not all(r.ok for r in reports):
        sys.exit(1)


@main.command("verify-log")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The meter's public key as you trust it [default: the one exported in DATA_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_log(data_dir: Path, public_key: Path | None, as_json: bool) -> None:
    """Check the legally relevant event logs of DATA_DIR without the meter running; name the
    first bad entry. Exit 1 if anything does not verify."""
    from smartmeter.legal.interface import LOG_TABLES

    _verify(data_dir, LOG_TABLES, public_key, as_json)


@main.command("verify-storage")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The meter's public key as you trust it [default: the one exported in DATA_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_storage(data_dir: Path, public_key: Path | None, as_json: bool) -> None:
    """Check the long-term storage (load profile) of DATA_DIR: any changed, deleted, inserted
    or reordered entry is reported with where it is. Exit 1 if anything does not verify."""
    from smartmeter.legal.interface import STORAGE_TABLES

    _verify(data_dir, STORAGE_TABLES, public_key, as_json)


# --------------------------------------------------------------------------------------
# model


@main.group()
def model() -> None:
    """Inspect the object model (objects, classes, access rights per client)."""


@model.command("show")
@click.option("--profile", default="ksmw", show_default=True, help="Model profile name or a .toml file.")
@click.option("--markdown", is_flag=True, help="Print the tables of docs/objects.md.")
@click.option("--access-rights", is_flag=True, help="Print docs/access-rights.md (per client, by name).")
def model_show(profile: str, markdown: bool, access_rights: bool) -> None:
    """List the model's objects and who may do what with them."""
    from smartmeter.cosem.docs import access_rights_markdown, objects_markdown
    from smartmeter.cosem.objectmodel import ObjectModel

    try:
        loaded = ObjectModel.load(profile)
    except FileNotFoundError:
        raise UsageProblem(f"no model profile {profile!r}", "use ksmw or a path to a .toml model file") from None
    if markdown:
        click.echo(objects_markdown(loaded), nl=False)
        return
    if access_rights:
        click.echo(access_rights_markdown(loaded), nl=False)
        return
    for o in loaded.objects:
        visible = ", ".join(sorted(o.access)) or "nobody"
        click.echo(f"{str(o.obis):<18} IC {o.class_id:>2} v{o.version}  {o.name}  [{visible}]")


# --------------------------------------------------------------------------------------
# client


@main.group()
@click.option("--host", default="127.0.0.1", show_default=True, help="Meter address.")
@click.option("--port", type=int, default=None, help="Meter port [default: 4059, or 4061 with --hdlc].")
@click.option("--hdlc/--wrapper", default=None,
              help="HDLC (the WZ optical interface) or the wrapper [default: wrapper, or the credentials' interface].")
@click.option("--client-sap", type=int, default=None, help="Client SAP [default: 16 = public client, or the credentials'].")
@click.option("--server-sap", type=int, default=None, help="Server SAP (logical device) [default: 1].")
@click.option("--credentials", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A client credentials file (keys, system titles, mechanism): associate securely as that client.")
@click.option("--physical-address", type=int, default=0x10, show_default=True,
              help="HDLC lower (physical) server address, from the meter's HDLC setup.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def client(ctx: click.Context, host, port, hdlc, client_sap, server_sap, physical_address, timeout, as_json,
           credentials) -> None:
    """Talk to a meter as a DLMS/COSEM client."""
    from smartmeter.hes.credentials import client_from_options

    link, security = client_from_options(
        credentials=credentials, host=host, port=port, hdlc=hdlc, client_sap=client_sap, server_sap=server_sap,
        physical_address=physical_address, timeout=timeout, wrapper_port=DEFAULT_WRAPPER_PORT,
        hdlc_port=DEFAULT_HDLC_PORT)
    ctx.obj = {"link": link, "security": security, "json": as_json}


def _run_client(ctx: click.Context, work):
    from smartmeter.hes.client import MeterClient

    async def go():
        async with MeterClient(ctx.obj["link"], security=ctx.obj["security"]) as meter_client:
            return await work(meter_client)

    return asyncio.run(go())


def _parse_obis(text: str) -> Obis:
    try:
        return Obis.parse(text)
    except ValueError as exc:
        raise UsageProblem(str(exc), "write OBIS codes like 1-0:1.8.0.255") from None


@client.command("objects")
@click.pass_context
def client_objects(ctx: click.Context) -> None:
    """List the objects this client may see, with its access rights."""
    objects = _run_client(ctx, lambda c: c.objects())
    if ctx.obj["json"]:
        click.echo(json.dumps([{"class_id": o.class_id, "version": o.version, "obis": str(o.obis),
                                "read": o.readable, "write": o.writable, "execute": o.executable} for o in objects]))
        return
    click.echo(f"{'OBIS':<18} {'class':>5} {'ver':>3}  read / write / execute")
    for o in objects:
        rights = f"{','.join(map(str, o.readable)) or '-'} / {','.join(map(str, o.writable)) or '-'} / {','.join(map(str, o.executable)) or '-'}"
        click.echo(f"{str(o.obis):<18} {o.class_id:>5} {o.version:>3}  {rights}")


@client.command("get")
@click.argument("target", metavar="OBIS[:ATTR]")
@click.pass_context
def client_get(ctx: click.Context, target: str) -> None:
    """Read one attribute (default 2, the value). Registers are shown with their unit."""
    obis_text, _, attr_text = target.rpartition(":") if target.count(":") > 1 else (target, "", "")
    if not obis_text:
        obis_text = target
    try:
        attribute = int(attr_text) if attr_text else 2
    except ValueError:
        raise UsageProblem(f"attribute {attr_text!r} is not a number", "write OBIS:ATTR like 1-0:1.8.0.255:3") from None
    obis = _parse_obis(obis_text)

    async def work(c):
        class_id = await c.class_of(obis)
        value = await c.get(obis, attribute, class_id)
        scaler_unit = None
        if class_id in (3, 4, 5) and attribute == 2:
            scaler_unit = await c.get(obis, 3, class_id)
        return class_id, value, scaler_unit

    class_id, value, scaler_unit = _run_client(ctx, work)
    from smartmeter.cosem.classes.ic3_register import UNITS

    unit = None
    if scaler_unit is not None:
        scaler, unit_code = (v.value for v in scaler_unit.value)
        unit = next((name for name, code in UNITS.items() if code == unit_code), f"unit {unit_code}")
    if ctx.obj["json"]:
        out = {"obis": str(obis), "class_id": class_id, "attribute": attribute, "type": value.type.name.lower(),
               "value": to_json(value)}
        if scaler_unit is not None:
            out.update(scaler=scaler, unit=unit)
        click.echo(json.dumps(out))
    elif scaler_unit is not None:
        click.echo(f"{obis} {Decimal(value.value).scaleb(scaler):f} {unit}")
    else:
        click.echo(f"{obis}:{attribute} {to_text(value)}")


def _parse_time(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageProblem(f"{what} {text!r} is not an ISO date or date-time", "e.g. 2026-11-01 or 2026-11-01T12:00+01:00") from None


@client.command("profile")
@click.argument("obis_text", metavar="OBIS")
@click.option("--from", "from_text", default=None, help="First capture time (ISO; without offset: meter local time).")
@click.option("--to", "to_text", default=None, help="Last capture time (ISO).")
@click.option("--entries", default=None, metavar="A:B", help="Entries A to B (1 = oldest; B 0 = newest).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rows to this CSV file.")
@click.pass_context
def client_profile(ctx: click.Context, obis_text, from_text, to_text, entries, csv_file) -> None:
    """Read a profile (e.g. the load profile 1-0:99.1.0.255), whole, by range or by entry."""
    obis = _parse_obis(obis_text)
    window = None
    if entries is not None:
        try:
            first, last = (int(x) for x in entries.split(":"))
        except ValueError:
            raise UsageProblem(f"--entries {entries!r} is not A:B", "e.g. --entries 1:96") from None
        window = (first, last)
    if window is not None and (from_text or to_text):
        raise UsageProblem("--entries and --from/--to exclude each other", "use one way of selecting")
    start, end = _parse_time(from_text, "--from"), _parse_time(to_text, "--to")
    columns, buffer = _run_client(ctx, lambda c: c.profile(obis, from_time=start, to_time=end, entries=window))
    header = [f"{Obis.from_bytes(col.value[1].value)}:{col.value[2].value}" for col in columns.value]
    rows = [[to_json(v) for v in row.value] for row in buffer.value]
    if csv_file is not None:
        with open(csv_file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    if ctx.obj["json"]:
        click.echo(json.dumps({"columns": header, "rows": rows}))
    elif csv_file is None:
        click.echo("  ".join(f"{h:>25}" for h in header))
        for row in rows:
            click.echo("  ".join(f"{str(v):>25}" for v in row))
        click.echo(f"{len(rows)} entries")
    else:
        click.echo(f"{len(rows)} entries written to {csv_file}")
