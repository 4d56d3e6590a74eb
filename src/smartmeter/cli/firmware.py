"""`smartmeter fw`: firmware images and the remote upgrade of a meter (companion standard §7).

    smartmeter fw build --out FILE [--parts legal,application] [--meter-types 100,300]
                        [--identifier TEXT] [--package DIR]
    smartmeter fw sign --key KEY.pem FILE
    smartmeter fw inspect FILE [--key KEY.pem] [--json]
    smartmeter fw upgrade --meter HOST[:PORT] [--hdlc] --credentials FILE IMAGE
                          [--activate now|ISO] [--block-size N] [--timeout S] [--json]

The image format belongs to the legally relevant part and is reached through
smartmeter.legal.interface only; the transfer is smartmeter.hes.firmware. Every failure is one
line on stderr naming what failed and what to do, and exit code 1.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import click

from smartmeter.cli import UsageProblem
from smartmeter.errors import SmartmeterError

__all__ = ["fw_group", "ProgressBar"]

DEFAULT_WRAPPER_PORT = 4059
DEFAULT_HDLC_PORT = 4061
PART_NAMES = ("legal", "application")
BAR_WIDTH = 30
BAR_INTERVAL = 0.1  # seconds between redraws of the progress bar


def _fail(message: str, hint: str = "") -> None:
    one_line = " / ".join(line.strip() for line in str(message).splitlines() if line.strip())
    click.echo(f"error: {one_line}" + (f" (hint: {hint})" if hint else ""), err=True)
    sys.exit(1)


class FwGroup(click.Group):
    """Every failure of a fw command: one line on stderr, exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        from smartmeter.hes.firmware import UpgradeError
        from smartmeter.legal.interface import FirmwareImageError

        try:
            return super().invoke(ctx)
        except UpgradeError as exc:
            _fail(str(exc), exc.hint)
        except UsageProblem as exc:
            _fail(str(exc), exc.hint)
        except FirmwareImageError as exc:
            _fail(f"{exc}", "the file is not a firmware image this meter reads")
        except SmartmeterError as exc:
            _fail(str(exc), "check the credentials file and the meter's address")
        except OSError as exc:
            _fail(str(exc), "check the address, port or path")


@click.group("fw", cls=FwGroup)
def fw_group() -> None:
    """Firmware images: build, sign and inspect them, and upgrade a meter remotely (image transfer)."""


# ------------------------------------------------------------------------------- files


def _read_image_file(path: Path) -> bytes:
    from smartmeter.legal.interface import MAX_FIRMWARE_IMAGE_SIZE

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FIRMWARE_IMAGE_SIZE + 1)  # one byte more than an image may have: too large is refused
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}", "give a firmware image file") from None
    return raw


def _parse(path: Path, raw: bytes):
    from smartmeter.legal.interface import FirmwareImageError, parse_firmware_image

    try:
        return parse_firmware_image(raw)
    except FirmwareImageError as exc:
        raise UsageProblem(f"{path}: {exc}", "give a file written by `smartmeter fw build`") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: a failed write leaves the old file."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageProblem(f"cannot write {path}: {exc.strerror}", "give a file in a directory you may write") \
            from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageProblem(f"cannot write {path}: {exc.strerror}", "give a file in a directory you may write") \
            from None


def _read_key(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(64 * 1024)
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}", "give a PEM key file") from None


def _parts_option(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in PART_NAMES]
    if not parts or unknown:
        raise UsageProblem(f"--parts {text!r}: " + (f"{unknown[0]!r} is not a part" if unknown else "no part"),
                           "write --parts legal, application or legal,application")
    return parts


def _meter_types_option(text: str) -> tuple[int, ...]:
    try:
        types = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        types = ()
    if not types:
        raise UsageProblem(f"--meter-types {text!r} is not a list of meter types",
                           "e.g. --meter-types 100,300 (100 single phase, 200 poly phase direct, 300 poly phase CT)")
    return types


def _short_hex(raw: bytes, keep: int = 8) -> str:
    text = raw.hex()
    return text if len(text) <= 2 * keep else f"{text[:2 * keep]}..."


def _image_line(path: Path, image) -> str:
    parts = ", ".join(f"{p.name} {p.version}" for p in image.parts)
    return f"{path}: {image.identifier} ({parts}; meter types {','.join(map(str, image.meter_types))}; " \
           f"{image.size} bytes)"


# ------------------------------------------------------------------------------- build / sign / inspect


@fw_group.command("build")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The image file to write (unsigned).")
@click.option("--parts", "parts_text", default="legal,application", show_default=True,
              help="The software parts the image carries: legal, application or both.")
@click.option("--meter-types", "types_text", default="100,200,300", show_default=True,
              help="The meter types the image is for (100 single phase, 200 poly phase direct, 300 poly phase CT).")
@click.option("--identifier", default=None, metavar="TEXT",
              help="The image_identifier (1..64 printable ASCII) [default: SM-L<legal version>-A<application "
                   "version>].")
@click.option("--package", "package", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="The smartmeter package directory to build from [default: the one running this command].")
def fw_build(out: Path, parts_text: str, types_text: str, identifier: str | None, package: Path | None) -> None:
    """Build an unsigned firmware image of the chosen software parts; sign it with `fw sign`."""
    import smartmeter
    from smartmeter.legal.interface import build_firmware_image

    parts, types = _parts_option(parts_text), _meter_types_option(types_text)
    root = package if package is not None else Path(smartmeter.__file__).parent
    raw = build_firmware_image(root, parts=parts, meter_types=types, identifier=identifier)
    _write_atomically(out, raw)
    click.echo(_image_line(out, _parse(out, raw)) + f", unsigned: sign it with `smartmeter fw sign --key KEY.pem {out}`")


@fw_group.command("sign")
@click.option("--key", "key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The ECDSA P-256 private key (PEM) the meters verify images with, e.g. a demo meter's "
                   "meter-data/credentials/demo-pki/firmware-signing-key.pem.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def fw_sign(key: Path, file: Path) -> None:
    """Sign the image FILE in place (an earlier signature is replaced)."""
    from smartmeter.legal.interface import sign_firmware_image

    raw = _read_image_file(file)
    _parse(file, raw)
    signed = sign_firmware_image(raw, _read_key(key))
    image = _parse(file, signed)
    _write_atomically(file, signed)
    click.echo(_image_line(file, image) + f", signed by key {image.key_id}")


@fw_group.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check the signature with this key (PEM, public or private); exit 1 if it does not verify.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fw_inspect(file: Path, key: Path | None, as_json: bool) -> None:
    """Show what an image holds: identifier, meter types, parts with versions and digests,
    files, creation time and signature."""
    from smartmeter.legal.interface import firmware_signature_valid, public_key_of

    raw = _read_image_file(file)
    image = _parse(file, raw)
    shown = image.to_json()
    valid = None
    if key is not None:
        try:
            public = public_key_of(_read_key(key))
        except Exception as exc:  # the legal part's key errors are not SmartmeterErrors
            raise UsageProblem(f"{key}: {exc}", "give the firmware signing key (PEM)") from None
        valid = firmware_signature_valid(raw, public)
        shown["signature_valid"] = valid
    if as_json:
        click.echo(json.dumps(shown))
    else:
        lines = [f"{file}: firmware image, {image.size} bytes",
                 f"  identifier   {image.identifier}",
                 f"  meter types  {', '.join(map(str, image.meter_types))}"]
        lines += [f"  part {p.b}       {p.name} {p.version}  digest {p.digest}" for p in image.parts]
        lines += [f"  files        {len(image.files)} ({image.body_size} bytes uncompressed)",
                  f"  created      {image.created}"]
        if image.signature:
            lines.append(f"  signature    {len(image.signature)} bytes by key {image.key_id or '(not named)'}: "
                         f"{image.signature.hex()}")
        else:
            lines.append(f"  signature    none (sign it: smartmeter fw sign --key KEY.pem {file})")
        if valid is not None:
            lines.append(f"  checked      {'valid' if valid else 'DOES NOT VERIFY'} with {key}")
        click.echo("\n".join(lines))
    if valid is False:
        sys.exit(1)


# ------------------------------------------------------------------------------- upgrade


class ProgressBar:
    """`[#####.....] 512/1024 blocks  50%  96 kB/s` redrawn in place on a terminal, at most ten
    times a second; `finish()` ends its line."""

    def __init__(self, stream: TextIO, image_size: int, clock=time.monotonic) -> None:
        self.stream, self.image_size, self.clock = stream, image_size, clock
        self.started = clock()
        self.first_held: int | None = None
        self.drawn_at: float | None = None
        self.text = ""

    def __call__(self, held: int, total: int) -> None:
        now = self.clock()
        if self.first_held is None:
            self.first_held = held
        if self.drawn_at is not None and now - self.drawn_at < BAR_INTERVAL and held < total:
            return
        self.drawn_at = now
        filled = BAR_WIDTH * held // total if total else BAR_WIDTH
        elapsed = now - self.started
        sent_bytes = (held - self.first_held) * self.image_size / total if total else 0
        rate = sent_bytes / elapsed / 1000 if elapsed > 0 else 0.0
        self.text = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {held}/{total} blocks "
                     f"{100 * held // total if total else 100:3d}%  {rate:.0f} kB/s")
        self.stream.write("\r" + self.text)
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn_at is not None:
            self.stream.write("\n")
            self.stream.flush()


def _host_port(address: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; no port: None (the interface's default port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise UsageProblem(f"--meter {address!r} is not HOST:PORT", "e.g. --meter 127.0.0.1:4059 or [::1]:4059")
    return host, int(port) if port else None


def _check_interface(credentials: Path, hdlc: bool | None) -> None:
    """A client the meter lets associate on the LAN only (its credentials' "interfaces", as a
    meter's provisioning writes them) is refused on the optical port, and the other way round:
    said before anything is sent. The companion standard's Management client is LAN only, the
    Maintenance client optical port only."""
    try:
        interfaces = json.loads(credentials.read_text()).get("interfaces")
    except (OSError, ValueError, AttributeError):
        return  # the credentials loader names what is wrong with the file
    if hdlc is None or not isinstance(interfaces, list):
        return
    wanted, name = ("wz", "the optical port (HDLC)") if hdlc else ("lan", "the LAN (wrapper)")
    if wanted not in interfaces:
        raise UsageProblem(f"{credentials}: this client may associate over {', '.join(map(str, interfaces))} only, "
                           f"not over {name}", "leave out --hdlc" if hdlc else "give --hdlc")


def _activation_time(text: str | None):
    if text is None or text == "now":
        return text
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageProblem(f"--activate {text!r} is neither now nor an ISO date and time",
                           "e.g. --activate now or --activate 2026-05-02T03:00 (meter local time)") from None


class _Session:
    """One association as the credentials' client, made anew for every `async with`; a meter that
    refuses it after a power failure (counters it reserved but never received) gets the frame
    counter readout and one more attempt above it, as `smartmeter client` does."""

    def __init__(self, credentials: Path, host: str, port: int | None, hdlc: bool | None, timeout: float) -> None:
        self.credentials, self.host, self.port, self.hdlc, self.timeout = credentials, host, port, hdlc, timeout
        self.client = None

    def _link(self, public: bool = False):
        from smartmeter.hes.connection import HdlcLink
        from smartmeter.hes.credentials import client_from_options

        if public:
            link, _ = self._link()
            return client_from_options(credentials=None, host=self.host, port=self.port,
                                       hdlc=isinstance(link, HdlcLink), client_sap=16, server_sap=None,
                                       physical_address=0x10, timeout=self.timeout,
                                       wrapper_port=DEFAULT_WRAPPER_PORT, hdlc_port=DEFAULT_HDLC_PORT)[0]
        return client_from_options(credentials=self.credentials, host=self.host, port=self.port, hdlc=self.hdlc,
                                   client_sap=None, server_sap=None, physical_address=0x10, timeout=self.timeout,
                                   wrapper_port=DEFAULT_WRAPPER_PORT, hdlc_port=DEFAULT_HDLC_PORT)

    async def __aenter__(self):
        from smartmeter.dlms.client import AssociationRefused, ClientError
        from smartmeter.hes.client import MeterClient
        from smartmeter.hes.credentials import load_credentials
        from smartmeter.hes.resync import resynchronise

        link, security = self._link()
        self.client = MeterClient(link, security=security)
        try:
            await self.client.connect()
            return self.client
        except AssociationRefused as exc:
            if security is None or security.client_system_title is None or security.ak is None:
                raise  # no invocation counter of ours the meter could be ahead of
            refusal = exc
        credentials = load_credentials(self.credentials)
        ours = credentials.security.invocation_counter.last_used
        try:
            counter = await resynchronise(self._link(public=True), credentials)
        except (ClientError, SmartmeterError, OSError):
            raise AssociationRefused(f"{refusal}, and its frame counter readout could not be read to continue "
                                     "above it") from None
        if ours is not None and counter <= ours:
            raise refusal  # the meter is not ahead of us: the refusal is not about counters
        click.echo(f"note: the meter holds invocation counter {counter} for this client; continuing above it",
                   err=True)
        link, security = self._link()
        self.client = MeterClient(link, security=security)
        await self.client.connect()
        return self.client

    async def __aexit__(self, *exc) -> None:
        if self.client is not None:
            try:
                await self.client.close()
            except (SmartmeterError, OSError):
                pass  # a meter restarting on new software has gone away: nothing to release


def _summary(report) -> str:
    """The one line a person reads at the end."""
    from smartmeter.hes.firmware import status_text

    if report.already_verified:
        text = f"{report.identifier}: already on the meter and verified"
    else:
        again = f", {report.resent} sent again" if report.resent else ""
        before = f", {report.already_on_meter} already on the meter" if report.already_on_meter else ""
        text = (f"{report.identifier}: {report.size} bytes in {report.blocks} blocks of {report.block_size} "
                f"({report.sent} sent{again}{before}) in {report.seconds:.1f} s, verified")
    for waiting in report.to_activate:
        shown = waiting.to_dict()
        text += (f"; to activate: {shown['identification']}, {waiting.size} bytes, "
                 f"signature {waiting.signature.hex() or '(none)'}")
    if report.activation is None:
        text += "; not activated (upgrade again with --activate now or --activate ISO)"
    elif report.activation == "scheduled":
        text += f"; activation scheduled for {report.scheduled_at.isoformat(sep=' ')} meter time"
    elif report.firmware:
        running = ", ".join(f"{f.part} {f.to_dict()['identifier']}" for f in report.firmware
                            if f.identifier is not None)
        text += f"; activated: {status_text(report.status)}" + (f", running {running}" if running else "")
    else:
        text += f"; activation started: {status_text(report.status)}"
    return text


@fw_group.command("upgrade")
@click.option("--meter", "address", required=True, metavar="HOST[:PORT]",
              help=f"The meter's address [port {DEFAULT_WRAPPER_PORT}, or {DEFAULT_HDLC_PORT} with --hdlc].")
@click.option("--hdlc/--wrapper", default=None,
              help="HDLC (the WZ optical interface) or the wrapper [default: the credentials' interface].")
@click.option("--credentials", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The credentials file of a client that may upgrade the meter: a demo meter's "
                   "meter-data/credentials/management.json (LAN), or maintenance.json with --hdlc (optical port). "
                   "One association initiates, sends the blocks, verifies and activates.")
@click.argument("image_path", metavar="IMAGE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--activate", "activate_text", default=None, metavar="now|ISO",
              help="Activate at once (the meter restarts on it; waits for it to come back), or at this time "
                   "(meter local time, or with an offset) through the image activation scheduler. Without it the "
                   "verified image waits.")
@click.option("--block-size", type=click.IntRange(64, 1024), default=None, metavar="N",
              help="Write image_block_size first (64..1024) [default: the meter's].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--restart-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
              help="Seconds to wait for the meter to come back after --activate now.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (also for a failure).")
def fw_upgrade(address: str, hdlc: bool | None, credentials: Path, image_path: Path, activate_text: str | None,
               block_size: int | None, timeout: float, restart_timeout: float, as_json: bool) -> None:
    """Upgrade a meter: transfer IMAGE (only the blocks the meter does not hold yet: an interrupted
    upgrade resumes), verify it, show what the meter will activate, and activate it now or at
    a time. Without --activate the verified image waits; the same command with --activate
    later activates it without sending it again."""
    from smartmeter.hes import firmware

    raw = _read_image_file(image_path)
    image = _parse(image_path, raw)
    if not image.signature:
        raise UsageProblem(f"{image_path} is not signed; the meter would refuse it at verification",
                           f"sign it first: smartmeter fw sign --key KEY.pem {image_path}")
    activate = _activation_time(activate_text)
    host, port = _host_port(address)
    _check_interface(credentials, hdlc)
    bar = ProgressBar(sys.stderr, image.size) if sys.stderr.isatty() and not as_json else None

    async def go():
        session = _Session(credentials, host, port, hdlc, timeout)
        try:
            client = await session.__aenter__()
        except (SmartmeterError, OSError) as exc:
            raise firmware.UpgradeError("associate", str(exc).rstrip("."),
                                        hint="check --meter, and that --credentials is this meter's Management (LAN) or "
                                             "Maintenance (--hdlc) client's file") from None
        try:
            return await firmware.upgrade(
                client, raw, image.identifier, image.size, signature=image.signature, block_size=block_size,
                activate=activate, progress=bar,
                reconnect=lambda: _Session(credentials, host, port, hdlc, timeout), restart_timeout=restart_timeout)
        finally:
            await session.__aexit__(None, None, None)

    try:
        report = asyncio.run(go())
    except firmware.UpgradeError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "step": exc.step, "block": exc.block,
                                   "result": None if exc.result is None else firmware.result_name(exc.result),
                                   "detail": exc.detail, "hint": exc.hint}))
        raise
    finally:
        if bar is not None:
            bar.finish()
    if as_json:
        click.echo(json.dumps({"ok": True, **report.to_dict()}))
    else:
        click.echo(_summary(report))
