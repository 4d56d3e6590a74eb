"""The `smartmeter` command: run a meter, and talk to one."""
from __future__ import annotations

import asyncio
import csv
import datetime as dt
import errno
import json
import logging
import os
import select
import shlex
import shutil
import signal
import sys
import threading
import traceback
from decimal import Decimal
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.cli.consumer import consumer_key
from smartmeter.cli.display import display_command
from smartmeter.cli.firmware import fw_group
from smartmeter.cli.format import logical_name_paths, to_json, to_text
from smartmeter.cli.hes import hes_group
from smartmeter.cli import hes_fleet  # noqa: F401  (registers the fleet commands under `hes`)
from smartmeter.cli import hes_export  # noqa: F401  (registers `hes export` and `hes gaps`)
from smartmeter.cli import hes_events  # noqa: F401  (registers `hes events`)
from smartmeter.cli.mbus import mbus_group
from smartmeter.cli.pki import pki_group
from smartmeter.cli.push import PUSH_COMMANDS
from smartmeter.cli.sim import sim_group
from smartmeter.cosem.data import DataType
from smartmeter.cosem.obis import Obis
from smartmeter.errors import SmartmeterError
from smartmeter.legal import interface as legal
from smartmeter.legal.interface import LegalProcessDown

DEFAULT_WRAPPER_PORT = 4059
DEFAULT_HDLC_PORT = 4061
DEFAULT_HTTP_PORT = 8080
RESTART_DELAY = 0.5  # s between an activation's response and the meter's stop for its restart


def fail(message: str, hint: str = "") -> None:
    one_line = " / ".join(line.strip() for line in str(message).splitlines() if line.strip())
    click.echo(f"error: {one_line}" + (f" (hint: {hint})" if hint else ""), err=True)
    sys.exit(2)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (`smartmeter ... | head`): a pipe
    without readers polls as an error. A broken pipe elsewhere (a socket) leaves it writable."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return False


def _leave_quietly_for_a_closed_pipe() -> None:
    # What Unix tools do when the reader of their output goes away: stop without a word, with
    # the status a shell shows for SIGPIPE (128 + 13). Not by restoring SIGPIPE's default
    # action: that would also kill the process on a peer's closed socket (Python docs,
    # "Note on SIGPIPE"). stdout is pointed at /dev/null so the flush at exit cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(128 + signal.SIGPIPE)


class Cli(click.Group):
    """Turns every failure into one line on stderr and exit code 2; never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageProblem as exc:
            fail(str(exc), exc.hint)
        except SmartmeterError as exc:
            fail(str(exc), "run with --verbose for details")
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:
            fail(exc.format_message(), "see --help")
        except LegalProcessDown as exc:
            fail(str(exc), "check --data-dir; a damaged store must be restored, not replaced")
        except BrokenPipeError as exc:
            if _stdout_reader_gone():
                _leave_quietly_for_a_closed_pipe()
            fail(str(exc), "the meter closed the connection")
        except OSError as exc:
            fail(str(exc), "check the address, port or path")
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug; the user still gets one line, with where it happened
            where = traceback.extract_tb(exc.__traceback__)[-1]
            fail(f"internal error {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})",
                 "this is a bug in smartmeter; please report it with the command line that caused it")


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
@click.option("--speed", type=click.FloatRange(0, 100_000, min_open=True), default=1.0, show_default=True,
              help="Run the meter's whole notion of time N times faster than real time (96: a day in 15 minutes). "
                   "A simulation: the meter says so in its clock status and in `smartmeter id --data-dir`.")
@click.option("--start-time", default=None, metavar="ISO",
              help="The simulated time at the first start of a fresh data directory, e.g. 2026-03-28T22:00 "
                   "(meter local time) or 2026-03-28T21:00+00:00.")
@click.option("--phases", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="A single-phase (meter type 100) or three-phase meter (300); fixed at the first start.")
@click.option("--firmware-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              metavar="PEM", help="Production: the public key firmware images must be signed with, imported at the "
                                  "first start (without it the meter makes a demo key pair in its credentials).")
@click.option("--http-port", type=int, default=DEFAULT_HTTP_PORT, show_default=True,
              help="Port of the display's web page (the meter's LCD and buttons, and its profiles as charts); "
                   "0 = off. On --host, like the other interfaces.")
@click.option("--h1", "h1_device", default=None, metavar="DEVICE",
              help="The H1 consumer port (wired M-Bus, 2400 Bd 8E1, push only): a serial device such as "
                   "/dev/ttyUSB1, or 'pty' for a new pseudo-terminal whose path the meter prints.")
@click.option("--mbus-wired", default=None, metavar="BUS",
              help="The M2 wired M-Bus the meter is master of: a serial device, or HOST:PORT of a bus on TCP "
                   "(such as `smartmeter sim mbus ... --wired`).")
@click.option("--mbus-wireless", default=None, metavar="HOST:PORT",
              help="The M2 wireless M-Bus receiver: the meter takes radio frames as UDP datagrams on HOST:PORT.")
@click.option("--banner", is_flag=True, help="Print the client commands to try once listening.")
def meter_run(data_dir: Path, host: str, wrapper_port: int, hdlc_port: int, serial_device: str | None,
              serial_number: str, profile: str, sensor_port: int | None, speed: float, start_time: str | None,
              phases: str, firmware_key: Path | None, http_port: int, h1_device: str | None,
              mbus_wired: str | None, mbus_wireless: str | None, banner: bool) -> None:
    """Start a meter with embedded defaults, driven by a simulated household load.

    On first start it back-fills 30 days of 15-minute load profile. Ctrl-C stops it cleanly.
    `smartmeter sim` changes its physical world (supply, covers, load, ...) while it runs.
    """
    from smartmeter.meter import boot

    if not os.environ.get(boot.ENV_BOOTED) and (data_dir / "firmware").is_dir():
        # runs an activated firmware instead of this one, if there is one
        _boot_installed_software(data_dir, {"serial": serial_number, "profile": profile,
                                            "meter_type": 100 if phases == "1" else 300})
    from smartmeter.meter.clock import DEFAULT_TIME_ZONE
    from smartmeter.meter.runtime import Meter, MeterConfig

    # a restart on activated software repeats the command line, whose start time was for the first start
    start = None if os.environ.get(boot.ENV_RESTARTED) else _parse_start_time(start_time, DEFAULT_TIME_ZONE)
    if start is not None and (data_dir / "legal.sqlite3").exists():
        raise UsageProblem(f"--start-time is for a fresh data directory, and {data_dir} has run",
                           "choose a new --data-dir, or leave --start-time out to continue this meter's time")
    if (data_dir / "meter.sqlite3").exists():
        from smartmeter.meter.store import MeterStore

        store = MeterStore(data_dir)
        try:
            built = store.get("phases")
        finally:
            store.close()
        if built is not None and built != int(phases):
            raise UsageProblem(f"{data_dir} holds a {built}-phase meter; it cannot become a {phases}-phase one",
                               f"give --phases {built}, or a new --data-dir for a {phases}-phase meter")
    config = MeterConfig(data_dir=data_dir, serial=serial_number, profile=profile, realtime=True,
                         meter_type=100 if phases == "1" else 300,
                         sensor="remote" if sensor_port is not None else "synthetic", sensor_port=sensor_port,
                         speed=speed, start_time=start, backfill_days=0 if start is not None else 30,
                         firmware_key=firmware_key, h1_device=h1_device, mbus_wired=mbus_wired,
                         mbus_wireless=mbus_wireless)
    # new software on probation that fails is started again through the factory command: after
    # boot.TRIAL_ATTEMPTS such starts the boot code returns to the previous software by itself
    on_probation = bool(os.environ.get(boot.ENV_BOOTED)) and boot.on_probation(data_dir)
    try:
        meter_ = Meter(config)
    except (UsageProblem, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not on_probation:
            raise
        _restart_after_failure(exc)
    try:
        asyncio.run(_serve(meter_, host, wrapper_port, hdlc_port, serial_device, banner, http_port))
    except (UsageProblem, KeyboardInterrupt):
        raise
    except Exception as exc:
        if not on_probation:
            raise
        meter_.close()
        _restart_after_failure(exc)
    finally:
        meter_.close()
    if meter_.restart_requested:
        click.echo("meter stopped for the activation of new software; state saved; restarting")
        boot.restart()
    click.echo("meter stopped; state saved in " + str(data_dir))


def _restart_after_failure(exc: Exception) -> None:
    from smartmeter.meter import boot

    click.echo(f"firmware: the new software failed before it was confirmed ({type(exc).__name__}: {exc}); "
               "restarting", err=True)
    boot.restart()


def _boot_installed_software(data_dir: Path, meter: dict) -> None:
    """Decide a pending trial of newly activated software and run the active firmware slot."""
    from smartmeter.meter import boot

    before = legal.read_boot_record(data_dir)
    trial = before.get("trial")
    if isinstance(trial, dict):
        click.echo(f"firmware: trying the activated software {trial.get('identifier', '')} ...")
    try:
        slot = boot.choose(data_dir, meter)
    except KeyboardInterrupt:  # the attempt is counted; the next start tries again (at most twice)
        raise UsageProblem("interrupted during the trial of the activated software",
                           "start the meter again: it tries once more, then returns to the previous software")

    last = legal.read_boot_record(data_dir).get("last")
    if isinstance(trial, dict) and isinstance(last, dict):
        if last.get("outcome") == "activated":
            click.echo(f"firmware: {last.get('identifier', '')} passed its self-test and runs now")
        else:
            click.echo(f"firmware: {last.get('identifier', '')} was not activated: {last.get('reason', '')}; "
                       "the previous software runs", err=True)
    if slot is not None:
        boot.run_slot(data_dir, slot)


async def _serve_display(meter_, host: str, port: int, lines: list[str]):
    """The display's web page, unless --http-port 0. The default port taken by another program
    leaves the page off with a line saying so; a port given and taken is an error."""
    if not port:
        return None
    from smartmeter.meter.display_http import DisplayServer, profile_rows_from

    sources = {str(o.obis): instance.source for o, instance in meter_.directory.by_ln.values()
               if o.class_id == 7 and "buffer" in o.config}
    server = DisplayServer(meter_.display, lambda button, long: meter_.control(
        {"input": "button", "value": button, "long": long}), profile_rows_from(sources), host, port,
        clock_now=meter_.clock.now, led_pulses=meter_.display.led_pulses, model=meter_.model)
    try:
        await server.start()
    except OSError as exc:
        given = click.get_current_context().get_parameter_source("http_port") != click.core.ParameterSource.DEFAULT
        if given or exc.errno != errno.EADDRINUSE:
            raise UsageProblem(f"cannot serve the display on {host}:{port}: {exc.strerror}",
                               "choose another --http-port (0: no display page)") from None
        lines.append(f"display: port {port} is in use, so no display page (give --http-port)")
        return None
    lines.append(f"display: http://{host}:{server.port}/ (the LCD and its buttons; charts: /charts)")
    return server


def _parse_start_time(text: str | None, zone_name: str) -> float | None:
    if text is None:
        return None
    from zoneinfo import ZoneInfo

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageProblem(f"--start-time {text!r} is not an ISO date and time", "e.g. 2026-03-28T22:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(zone_name))
    return when.timestamp()


def _command_path(program: Path) -> str:
    """How to name `program` so that a command pasted in any directory runs this very file:
    its bare name when the PATH finds it, else its absolute path (another terminal need not
    start where this one is)."""
    found = shutil.which(program.name)
    try:
        if found is not None and Path(found).resolve() == program.resolve():
            return program.name
    except OSError:
        pass
    return shlex.quote(str(program.absolute()))


def _invocation() -> str:
    """How the user started us, so the printed commands can be pasted as they are."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "smartmeter" and argv0.exists():
        return _command_path(argv0)
    # python -m smartmeter: the same interpreter (a venv's), not whatever "python" is on PATH
    return f"{_command_path(Path(sys.executable))} -m smartmeter"


def _print_banner(meter_, host: str, wrapper_port: int, hdlc_port: int) -> None:
    """Client commands to paste into another terminal, each one runnable as printed."""
    prog = _invocation()
    # a meter listening on every address is reached on the loopback, the client's default
    host_opt = "" if host in ("127.0.0.1", "0.0.0.0", "::", "") else f" --host {shlex.quote(host)}"
    port_opt = host_opt + ("" if wrapper_port == DEFAULT_WRAPPER_PORT else f" --port {wrapper_port}")
    hport = host_opt + ("" if hdlc_port == DEFAULT_HDLC_PORT else f" --port {hdlc_port}")
    lines = []
    if wrapper_port:
        # the meter's yesterday: a simulated meter's clock is not the wall clock
        yesterday = (meter_.clock.local(meter_.clock.now()).date() - dt.timedelta(days=1)).isoformat()
        for command in ("objects", "get 1-0:1.8.0.255", "get 0-0:1.0.0.255", "get 1-0:1.4.0.255",
                        f"profile 1-0:99.1.0.255 --from {yesterday}"):
            lines.append(f"{prog} client{port_opt} {command}")
    if hdlc_port:
        lines.append(f"{prog} client --hdlc{hport} get 0-0:42.0.0.255")
    # no "# comment" after a command: zsh, macOS's shell, takes "#" as an argument when pasted
    secured = []
    management = meter_.security.clients.get("management")
    creds = (meter_.config.data_dir / "credentials" / "management.json").absolute()
    if wrapper_port and management is not None and creds.is_file():
        secured.append(f"As the management client (HLS {management.mechanism}, suite {management.security_suite}, "
                       f"demo keys):")
        secured.append(f"  {prog} client{port_opt} --credentials {shlex.quote(str(creds))} get 1-0:1.8.0.255")
    if not lines:
        return
    click.echo("\nTry, in another terminal:")
    for line in lines:
        click.echo("  " + line)
    for line in secured:
        click.echo(line)
    click.echo("Ctrl-C stops the meter.")


def _open_h1(meter_, lines: list[str]):
    """The H1 consumer port of `--h1 DEVICE|pty` (companion §2.2, §10.5), or None without it: the
    consumer information push (transport 201) is written there, protected for the CIP client."""
    device = meter_.config.h1_device
    if not device:
        return None
    from smartmeter.meter.consumer_port import ConsumerPort, ConsumerPush

    port = ConsumerPort(device)
    try:
        path = port.open()
    except Exception as exc:  # pyserial's SerialException (an OSError on most platforms), or openpty's
        raise UsageProblem(f"cannot open the H1 port {device}: {exc}",
                           "check the device path and permissions, or give --h1 pty") from None
    # the CIP client's sending counter at its maximum: the push stops, and the meter says so as an event
    meter_.push.h1 = ConsumerPush(meter_.server, port, on_exhausted=lambda client: meter_.on_event(
        "frame_counter_exhausted", {"client": client}))
    lines.append(f"H1 consumer port: wired M-Bus, 2400 Bd 8E1, push only, on {path}"
                 + (" (a pseudo-terminal: the consumer device opens it)" if device == "pty" else ""))
    return port


async def _open_m2(meter_, lines: list[str]):
    """The M2 submeter interface (companion §2.3, §6): the wired M-Bus master on `--mbus-wired
    BUS` (HOST:PORT of a TCP level converter, or a serial device) and the wireless receiver on
    `--mbus-wireless HOST:PORT` (UDP radio frames); None without either."""
    wired, wireless = meter_.config.mbus_wired, meter_.config.mbus_wireless
    if not (wired or wireless):
        return None
    from smartmeter.meter.mbus_m2 import M2Interface

    m2 = M2Interface(meter_)
    try:
        lines.extend(await m2.start(wired, wireless))
    except (OSError, ValueError) as exc:
        await m2.close()
        raise UsageProblem(f"cannot open the M2 M-Bus port: {exc}",
                           "check --mbus-wired (HOST:PORT or a serial device) and --mbus-wireless HOST:PORT") from None
    return m2


async def _serve(meter_, host: str, wrapper_port: int, hdlc_port: int, serial_device: str | None, banner: bool,
                 http_port: int = 0) -> None:
    from smartmeter.meter import boot
    from smartmeter.transport import aio

    async def listen(what: str, port: int, start):
        try:
            return await start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageProblem(f"{what} port {port} on {host} is already in use",
                                   f"stop the other program or choose another port with --{what}-port") from None
            raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror}", "check --host") from None

    from smartmeter.meter.control import ControlChannelError, ControlServer

    def wz_open() -> bool:  # a powered-down meter's optical port answers nothing
        return meter_.powered and meter_.wz_guard.port_open()

    servers: list = []

    async def open_interfaces() -> None:
        if wrapper_port:
            servers.append(await listen("wrapper", wrapper_port, lambda: aio.serve_wrapper_tcp(meter_.server, host, wrapper_port)))
            servers.append(await listen("wrapper", wrapper_port, lambda: aio.serve_wrapper_udp(meter_.server, host, wrapper_port)))
            meter_.lan_wan_started(host)  # a new network connection: the On Connectivity push (§10.4)
        if hdlc_port:
            servers.append(await listen("hdlc", hdlc_port, lambda: aio.serve_hdlc_tcp(meter_.server, meter_.hdlc_setup(), host, hdlc_port, wz_open)))

    def close_interfaces() -> None:
        """Power down: no communication; every connection is dropped, as the modem loses power."""
        while servers:
            listener = servers.pop()
            listener.close()
            table = getattr(listener, "connections", None)
            if table is not None:
                table.close_all()

    opening: list[asyncio.Future] = []

    def on_supply(powered: bool) -> None:
        if powered:
            opening.append(asyncio.ensure_future(open_interfaces()))
        else:
            close_interfaces()

    async def interfaces_settled() -> None:  # `sim supply on` answers once the meter is reachable
        while opening:
            try:
                await opening.pop()
            except UsageProblem as exc:  # e.g. another program took the port while the meter was off
                logging.getLogger("smartmeter").error("after power-up: %s (%s)", exc, exc.hint)

    from smartmeter.meter.push_sender import PushSender

    # the pushes go out from this loop; waits (randomisation, repetition delay) are meter time
    speed = meter_.config.speed
    meter_.push.sender = PushSender(asyncio.get_running_loop(), now=meter_.clock.now, zone=meter_.clock.zone,
                                    sleep=lambda seconds: asyncio.sleep(seconds / speed))
    lines = []
    h1_port = _open_h1(meter_, lines)  # the H1 consumer port (--h1): the consumer information push
    m2 = await _open_m2(meter_, lines)  # the M2 multi-utility interface (--mbus-wired, --mbus-wireless)
    if meter_.powered:
        await open_interfaces()
    if wrapper_port:
        lines.append(f"LAN/WAN interface: IEC 62056-47 wrapper on tcp://{host}:{wrapper_port} and udp://{host}:{wrapper_port}")
    if hdlc_port:
        lines.append(f"WZ optical interface: HDLC over tcp://{host}:{hdlc_port}")
    meter_.supply_listeners.append(on_supply)
    control = ControlServer(meter_.config.data_dir, meter_.control, interfaces_settled)
    try:
        await control.start()
    except ControlChannelError as exc:
        raise UsageProblem(str(exc), "stop the other meter, or choose another --data-dir") from None
    lines.append(f"simulated world: {_invocation()} sim status --data-dir {shlex.quote(str(meter_.config.data_dir))} "
                 "(and sim supply, load, cover, magnet, button, battery: see sim --help)")
    if meter_.clock.simulated:
        lines.append(f"time: simulated, {meter_.config.speed:g}x real time (clock status 'different clock base'; "
                     "not a legal meter)")
    if not meter_.powered:
        lines.append("supply: OFF (stopped during a simulated power failure); smartmeter sim supply on restores it")
    display_server = await _serve_display(meter_, host, http_port, lines)
    stop_serial = threading.Event()
    if serial_device:
        try:
            aio.serve_hdlc_serial(meter_.server, meter_.hdlc_setup(), serial_device, stop_serial, wz_open)
        except Exception as exc:  # pyserial raises SerialException (an OSError subclass on most platforms)
            raise UsageProblem(f"cannot open serial port {serial_device}: {exc}", "check the device path and permissions") from None
        lines.append(f"WZ optical interface: HDLC on serial port {serial_device}")
    ident = meter_.identity
    click.echo(f"meter {ident.serial} (logical device {ident.logical_device_name.decode()}, "
               f"system title {ident.system_title.hex().upper()}), data in {meter_.config.data_dir}")
    for line in lines:
        click.echo("  " + line)
    if banner:
        _print_banner(meter_, host, wrapper_port, hdlc_port)
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopped_by_user() -> None:  # also in the moment before an activation's restart: then no restart
        meter_.restart_requested = False
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped_by_user)
    # an activated firmware: stop as for Ctrl-C once the activation's response has gone out, then restart
    meter_.on_restart = lambda: loop.call_soon_threadsafe(loop.call_later, RESTART_DELAY, stop.set)
    # new software on probation stays once it has served a while (boot.CONFIRM_AFTER)
    loop.call_later(boot.CONFIRM_AFTER, meter_.confirm_software)
    registration = asyncio.create_task(meter_.run_registration())
    await stop.wait()
    registration.cancel()
    stop_serial.set()
    if display_server is not None:
        await display_server.close()
    await control.close()
    close_interfaces()
    if m2 is not None:
        await m2.close()
        counts = m2.stats()
        if counts:
            click.echo("M2 M-Bus: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    if h1_port is not None:
        meter_.push.h1 = None
        h1_port.close()
        click.echo("H1 consumer port: " + ", ".join(f"{name.replace('_', ' ')} {count}"
                                                   for name, count in h1_port.stats().items()))
    sender, meter_.push.sender = meter_.push.sender, None
    await sender.close()
    counts = sender.stats()
    if counts["submitted"] or counts["refused"]:  # what the pushes came to, for the user who stops the meter
        click.echo("pushes: " + ", ".join(f"{name} {count}" for name, count in counts.items()))


main.add_command(pki_group)
main.add_command(sim_group)
main.add_command(hes_group)
main.add_command(fw_group)
main.add_command(display_command)


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
    from smartmeter.meter import boot

    if data_dir is not None and not os.environ.get(boot.ENV_BOOTED):
        slot = boot.active_slot(data_dir)
        if slot is not None:  # that meter runs activated firmware: let it identify itself
            boot.run_slot(data_dir, slot)
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
        from smartmeter.legal.interface import read_stored_time_base

        time_base = read_stored_time_base(data_dir)
        out["time_speed"] = time_base.speed if time_base is not None else 1.0
        out["firmware_slot"] = os.environ.get(boot.ENV_BOOTED)
        from smartmeter.legal.interface import read_stored_firmware_key

        out["firmware_key_sha256"] = read_stored_firmware_key(data_dir)
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
    if out.get("firmware_key_sha256"):
        click.echo(f"firmware key           sha256 {out['firmware_key_sha256']}  (images must be signed with it)")
    if os.environ.get(boot.ENV_BOOTED):
        click.echo(f"installed              by a firmware upgrade: slot {os.environ[boot.ENV_BOOTED]} in {data_dir}")
    if out.get("time_speed", 1.0) != 1.0:
        click.echo(f"meter time             SIMULATED: runs {out['time_speed']:g}x faster than real time; not a legal meter")
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


@main.command("verify-reading")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cert", "cert", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The meter's signing certificate (PEM) as you trust it.")
@click.option("--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The reading client's credentials file: its EK/AK open encrypted content.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_reading(file: Path, cert: Path, credentials: Path | None, as_json: bool) -> None:
    """Check a captured signed readout FILE offline against the meter's certificate and show
    its values. Exit 1 with one line if it does not verify."""
    from smartmeter.hes.client import unit_name
    from smartmeter.hes.credentials import load_credentials
    from smartmeter.hes.readout import MAX_FILE, ReadoutError, verify_readout

    try:
        with open(file, "rb") as f:
            raw = f.read(MAX_FILE + 1)  # one byte more than a readout may have: too large is refused
        with open(cert, "rb") as f:
            cert_pem = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise UsageProblem(f"cannot read {exc.filename}: {exc.strerror}") from None
    ek = ak = None
    if credentials is not None:
        security = load_credentials(credentials).security
        ek, ak = security.ek, security.ak
    try:
        reading = verify_readout(raw, cert_pem, ek, ak)
    except ReadoutError as exc:
        click.echo(f"refused ({exc.kind}): {exc}", err=True)
        sys.exit(1)
    signer = reading.signer_system_title.hex().upper()
    rows = []
    scalers = {}
    for item, result in zip(reading.items, reading.results or ()):
        if item.attribute_id == 3 and item.class_id in (3, 4) and not isinstance(result, int) \
                and result.type == DataType.STRUCTURE and len(result.value) == 2 \
                and all(type(part.value) is int for part in result.value):
            scalers[item.instance_id] = (result.value[0].value, result.value[1].value)
    for i, item in enumerate(reading.items):
        obis = str(Obis.from_bytes(item.instance_id))
        result = reading.results[i] if reading.results is not None else None
        if result is None:
            text = "(encrypted: give --credentials to read)"
        elif not hasattr(result, "type"):
            text = f"no value: {result.name}"
        elif item.attribute_id == 2 and item.instance_id in scalers and isinstance(result.value, int):
            scaler, unit = scalers[item.instance_id]
            text = f"{Decimal(result.value).scaleb(scaler)} {unit_name(unit)}"
        else:
            text = to_text(result)
        if item.attribute_id == 3 and item.instance_id in scalers:
            continue
        rows.append({"obis": obis, "class_id": item.class_id, "attribute": item.attribute_id, "value": text})
    if as_json:
        click.echo(json.dumps({"signer_system_title": signer, "signature": "valid", "values": rows}))
        return
    click.echo(f"signature valid: signed by the meter with system title {signer}")
    for row in rows:
        click.echo(f"{row['obis']:<16} attr {row['attribute']}  {row['value']}")


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
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for an answer.")
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
    from smartmeter.hes.connection import HdlcLink

    public_link = None
    if credentials is not None:  # the public client on the same port, for the frame counter readout
        public_link = lambda: client_from_options(  # noqa: E731
            credentials=None, host=host, port=port, hdlc=isinstance(link, HdlcLink), client_sap=16,
            server_sap=None, physical_address=physical_address, timeout=timeout, wrapper_port=DEFAULT_WRAPPER_PORT,
            hdlc_port=DEFAULT_HDLC_PORT)[0]
    ctx.obj = {"link": link, "security": security, "json": as_json, "credentials": credentials,
               "public_link": public_link}


def _run_client(ctx: click.Context, work):
    from smartmeter.dlms.client import AssociationRefused, ClientError
    from smartmeter.hes.client import MeterClient

    async def attempt():
        async with MeterClient(ctx.obj["link"], security=ctx.obj["security"]) as meter_client:
            return await work(meter_client)

    async def go():
        try:
            return await attempt()
        except AssociationRefused:
            await ctx.obj["link"].close()
            if ctx.obj.get("public_link") is None:
                raise
        # After a power failure the meter refuses up to one reserved block of counters it never
        # received (docs/decisions.md): read where it stands, continue above it, try once more.
        from smartmeter.hes.credentials import load_credentials
        from smartmeter.hes.resync import resynchronise

        try:
            counter = await resynchronise(ctx.obj["public_link"](), load_credentials(ctx.obj["credentials"]))
        except (ClientError, OSError):
            raise AssociationRefused("the meter refused the association, and its frame counter readout "
                                     "could not be read to continue above it") from None
        click.echo(f"note: the meter holds invocation counter {counter} for this client; continuing above it",
                   err=True)
        return await attempt()

    return asyncio.run(go())


def _parse_obis(text: str) -> Obis:
    try:
        return Obis.parse(text)
    except ValueError as exc:
        raise UsageProblem(str(exc), "write OBIS codes like 1-0:1.8.0.255") from None


def _parse_target(target: str, default_attribute: int = 2) -> tuple[Obis, int]:
    """OBIS[:ATTR] -> (logical name, attribute)."""
    obis_text, _, attr_text = target.rpartition(":") if target.count(":") > 1 else (target, "", "")
    try:
        attribute = int(attr_text) if attr_text else default_attribute
    except ValueError:
        raise UsageProblem(f"attribute {attr_text!r} is not a number", "write OBIS:ATTR like 1-0:1.8.0.255:3") from None
    if not 0 <= attribute <= 255:
        raise UsageProblem(f"attribute {attribute} is not 0..255", "attribute 0 reads all attributes at once")
    return _parse_obis(obis_text or target), attribute


SETTABLE_TYPES = ("boolean", "integer", "long", "double-long", "long64", "unsigned", "long-unsigned",
                  "double-long-unsigned", "long64-unsigned", "enum", "octet-string", "visible-string")


def _parse_value(text: str):
    """TYPE:VALUE (e.g. long-unsigned:207, boolean:true, octet-string:0102ff) -> Data."""
    from smartmeter.cosem.data import INTEGER_RANGES, Data

    hint = f"write TYPE:VALUE with TYPE one of {', '.join(SETTABLE_TYPES)}, e.g. long-unsigned:207"
    type_text, sep, value_text = text.partition(":")
    if not sep or type_text not in SETTABLE_TYPES:
        raise UsageProblem(f"{text!r} is not a typed value", hint)
    data_type = DataType[type_text.upper().replace("-", "_")]
    if data_type == DataType.BOOLEAN:
        if value_text not in ("true", "false"):
            raise UsageProblem(f"a boolean is true or false, not {value_text!r}", hint)
        return Data(data_type, value_text == "true")
    if data_type == DataType.OCTET_STRING:
        try:
            return Data(data_type, bytes.fromhex(value_text))
        except ValueError:
            raise UsageProblem(f"{value_text!r} is not hex", "write an octet-string as hex, e.g. octet-string:0102ff") \
                from None
    if data_type == DataType.VISIBLE_STRING:
        return Data(data_type, value_text.encode("ascii", "replace"))
    low, high = INTEGER_RANGES[data_type]
    try:
        number = int(value_text)
    except ValueError:
        raise UsageProblem(f"{value_text!r} is not a whole number", hint) from None
    if not low <= number <= high:
        raise UsageProblem(f"{number} is outside {type_text} ({low}..{high})", hint)
    return Data(data_type, number)


@client.command("set")
@click.argument("target", metavar="OBIS[:ATTR]")
@click.argument("value", metavar="TYPE:VALUE")
@click.pass_context
def client_set(ctx: click.Context, target: str, value: str) -> None:
    """Write one attribute (default 2, the value), e.g. `set 1-0:12.31.0.255 long-unsigned:200`."""
    from smartmeter.dlms.client import AccessDenied

    obis, attribute = _parse_target(target)
    data = _parse_value(value)

    async def work(c):
        await c.set(obis, attribute, data, await c.class_of(obis))

    try:
        _run_client(ctx, work)
    except AccessDenied as exc:
        raise UsageProblem(f"refused: {obis}:{attribute}: {_result_name(exc.result)}",
                           "is the value one the object takes, and may this client write it? "
                           "(a management client's --credentials)") from None
    click.echo(json.dumps({"obis": str(obis), "attribute": attribute, "written": to_json(data)}) if ctx.obj["json"]
               else f"{obis}:{attribute} written")


@client.command("capture")
@click.argument("obis_text", metavar="OBIS")
@click.pass_context
def client_capture(ctx: click.Context, obis_text: str) -> None:
    """Execute a profile's capture method (e.g. the instantaneous readout profile 0-0:21.0.5.255),
    then read it with `client profile OBIS`."""
    from smartmeter.cosem.data import Data
    from smartmeter.dlms.client import AccessDenied

    obis = _parse_obis(obis_text)
    try:
        _run_client(ctx, lambda c: c.action(obis, 2, Data.integer(0), class_id=7))
    except AccessDenied as exc:
        raise UsageProblem(f"refused: {obis} capture: {_result_name(exc.result)}",
                           "may this client execute it? give a management client's --credentials") from None
    click.echo(json.dumps({"captured": str(obis)}) if ctx.obj["json"] else f"{obis}: captured")


@client.command("signed-readout")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def client_signed_readout(ctx: click.Context, file: Path) -> None:
    """Capture a billing readout signed by the meter (+A, -A with scaler/unit, clock) into FILE;
    check it later with `smartmeter verify-reading`. Needs an HLS 7 client's credentials."""
    from smartmeter.hes.readout import capture

    security = ctx.obj["security"]
    if security is None or security.client_signing_key is None:
        raise UsageProblem("a signed readout needs a client with a certified signing key",
                           "give --credentials of an HLS 7 client (management, data_readout)")
    if file.exists():
        raise UsageProblem(f"{file} exists", "a captured readout is evidence: choose a new file name")
    text = _run_client(ctx, lambda c: capture(c, security.client_signing_key))
    file.write_text(text)
    click.echo(f"signed readout written to {file}")


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
    obis, attribute = _parse_target(target)

    async def work(c):
        from smartmeter.dlms.client import ClientError
        from smartmeter.hes.client import SCALED_ATTRIBUTES

        class_id = await c.class_of(obis)
        value = await c.get(obis, attribute, class_id)
        scaler_unit = None
        if attribute in SCALED_ATTRIBUTES.get(class_id, ()) and _is_number(value):
            try:
                scaler_unit = await c.scaler_unit(obis, class_id)
            except ClientError:
                scaler_unit = None  # a client that may not read the unit gets the plain number
        return class_id, value, scaler_unit

    class_id, value, scaler_unit = _run_client(ctx, work)
    from smartmeter.hes.client import unit_name

    if ctx.obj["json"]:
        out = {"obis": str(obis), "class_id": class_id, "attribute": attribute, "type": value.type.name.lower(),
               "value": to_json(value)}
        if scaler_unit is not None:
            out.update(scaler=scaler_unit[0], unit=unit_name(scaler_unit[1]))
        click.echo(json.dumps(out))
    elif scaler_unit is not None:
        scaler, unit_code = scaler_unit
        click.echo(f"{obis}" + ("" if attribute == 2 else f":{attribute}")
                   + f" {Decimal(str(value.value)).scaleb(scaler):f} {unit_name(unit_code)}")
    else:
        count = len(value.value) if attribute == 0 and value.type == DataType.STRUCTURE else None
        click.echo(f"{obis}:{attribute} {to_text(value, logical_name_paths(class_id, attribute, count))}")


def _is_number(value) -> bool:
    return isinstance(value.value, (int, float)) and not isinstance(value.value, bool)


def _parse_time(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageProblem(f"{what} {text!r} is not an ISO date or date-time", "e.g. 2026-11-01 or 2026-11-01T12:00+01:00") from None


def _column_names(columns) -> list[str]:
    """"OBIS:attribute" of each capture object {class_id, logical_name, attribute, data_index}."""
    names = []
    try:
        for column in columns.value:
            names.append(f"{Obis.from_bytes(column.value[1].value)}:{column.value[2].value}")
    except (TypeError, ValueError, IndexError, AttributeError):
        raise UsageProblem("the capture objects of this profile have an unexpected shape",
                           "read them with get OBIS:3") from None
    return names


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
    header = _column_names(columns)
    if buffer.type != DataType.ARRAY or any(row.type != DataType.STRUCTURE for row in buffer.value):
        raise UsageProblem(f"{obis}:2 is not a profile buffer (an array of structures)", "is it a profile generic?")
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


# --------------------------------------------------------------------------------------
# client: billing profile and tariff calendar


def _entry_window(entries: str | None) -> tuple[int, int] | None:
    if entries is None:
        return None
    try:
        first, last = (int(x) for x in entries.split(":"))
    except ValueError:
        raise UsageProblem(f"--entries {entries!r} is not FIRST:LAST", "e.g. --entries 1:12 (1 = oldest; 0 = newest)") \
            from None
    return first, last


def _result_name(result) -> str:
    return result.name.lower().replace("_", "-")


@client.command("billing")
@click.option("--from", "from_text", default=None, help="First capture time (ISO; without offset: meter local time).")
@click.option("--to", "to_text", default=None, help="Last capture time (ISO).")
@click.option("--entries", default=None, metavar="FIRST:LAST", help="Entries FIRST to LAST (1 = oldest; LAST 0 = newest).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the billing periods to this CSV file (one row each, every value in its own column).")
@click.pass_context
def client_billing(ctx: click.Context, from_text, to_text, entries, csv_file) -> None:
    """Show the billing profile (0-0:98.1.0.255): per billing period its energy by rate,
    maximum demands with their times, and cumulative maxima."""
    from smartmeter.hes.billing import BILLING_PROFILE, billing_entries, billing_table, entry_to_dict, write_billing_csv

    window = _entry_window(entries)
    if window is not None and (from_text or to_text):
        raise UsageProblem("--entries and --from/--to exclude each other", "use one way of selecting")
    start, end = _parse_time(from_text, "--from"), _parse_time(to_text, "--to")
    columns, buffer = _run_client(ctx, lambda c: c.profile(BILLING_PROFILE, from_time=start, to_time=end,
                                                           entries=window))
    periods = billing_entries(columns, buffer)
    if csv_file is not None:
        with open(csv_file, "w", newline="") as f:
            write_billing_csv(periods, f)
    if ctx.obj["json"]:
        click.echo(json.dumps([entry_to_dict(p) for p in periods]))
    elif csv_file is None:
        click.echo(billing_table(periods), nl=False)
    else:
        click.echo(f"{len(periods)} billing period{'' if len(periods) == 1 else 's'} written to {csv_file}")


@client.command("billing-reset")
@click.pass_context
def client_billing_reset(ctx: click.Context) -> None:
    """End the billing period now: script 1 of 0-0:10.0.1.255 (capture the billing profile,
    reset the maximum demands). The meter refuses it during the 15-minute reset lock."""
    from smartmeter.cosem.data import Data
    from smartmeter.cosem.results import DataAccessResult
    from smartmeter.dlms.client import AccessDenied, ClientError
    from smartmeter.hes.billing import BILLING_PERIOD_COUNTER, BILLING_SCRIPT_TABLE, END_OF_BILLING_PERIOD_SCRIPT

    async def work(c):
        await c.action(BILLING_SCRIPT_TABLE, 1, Data.long_unsigned(END_OF_BILLING_PERIOD_SCRIPT), class_id=9)
        try:
            return (await c.get(BILLING_PERIOD_COUNTER, 2, class_id=1)).value
        except ClientError:
            return None  # a client that may not read the counter: the reset happened all the same

    try:
        counter = _run_client(ctx, work)
    except AccessDenied as exc:
        # companion §5.6: other-reason is how the meter answers during the lock (an action-result,
        # numerically the data-access-result other-reason, 250)
        if int(exc.result) == DataAccessResult.OTHER_REASON:
            raise UsageProblem("refused: the 15-minute reset lock is running",
                               "a billing period ends at most once in 15 minutes after a reset; try again later") \
                from None
        raise UsageProblem(f"refused: {BILLING_SCRIPT_TABLE} script {END_OF_BILLING_PERIOD_SCRIPT}: "
                           f"{_result_name(exc.result)}", "may this client execute it? give a management client's --credentials") from None
    if ctx.obj["json"]:
        click.echo(json.dumps({"billing_period_ended": True, "billing_period_counter": counter}))
    else:
        click.echo("billing period ended" + ("" if counter is None else f"; billing period counter {counter}"))


_CONTROL_STATES = {0: "disconnected", 1: "connected", 2: "ready for reconnection"}


def _disconnect_control(ctx: click.Context, method: int, relay: bool) -> None:
    """remote_disconnect (1) or remote_reconnect (2) of the disconnector or the load-management
    relay, then its state as the meter reports it (a transition its control mode forbids is
    ignored by the meter: the state says what happened)."""
    from smartmeter.cosem.data import Data
    from smartmeter.dlms.client import AccessDenied

    obis = "0-1:96.3.10.255" if relay else "0-0:96.3.10.255"

    async def work(c):
        await c.action(obis, method, Data.integer(0), class_id=70)
        return [(await c.get(obis, index, class_id=70)).value for index in (2, 3, 4)]

    try:
        output, state, mode = _run_client(ctx, work)
    except AccessDenied as exc:
        raise UsageProblem(f"refused: {obis} method {method}: {_result_name(exc.result)}",
                           "may this client execute it? give a management client's --credentials") from None
    if ctx.obj["json"]:
        click.echo(json.dumps({"logical_name": obis, "output_state": output, "control_state": state,
                               "control_mode": mode}))
    else:
        click.echo(f"{obis}: {_CONTROL_STATES.get(state, state)}, output {'connected' if output else 'open'} "
                   f"(control mode {mode})")


@client.command("disconnect")
@click.option("--relay", is_flag=True, help="The load-management relay 0-1:96.3.10.255 instead of the disconnector.")
@click.pass_context
def client_disconnect(ctx: click.Context, relay: bool) -> None:
    """Open the disconnector (remote_disconnect of 0-0:96.3.10.255) and show its state."""
    _disconnect_control(ctx, 1, relay)


@client.command("reconnect")
@click.option("--relay", is_flag=True, help="The load-management relay 0-1:96.3.10.255 instead of the disconnector.")
@click.pass_context
def client_reconnect(ctx: click.Context, relay: bool) -> None:
    """remote_reconnect of the disconnector: in control mode 3 (the default) it becomes ready for
    reconnection and the customer closes it with the button (`smartmeter sim button A --long`)."""
    _disconnect_control(ctx, 2, relay)


for _command in PUSH_COMMANDS:  # push-setup, push-schedule, push: smartmeter.cli.push
    client.add_command(_command)
client.add_command(mbus_group)  # smartmeter.cli.mbus
client.add_command(consumer_key)  # smartmeter.cli.consumer


@client.group("calendar")
def client_calendar() -> None:
    """The tariff calendar (0-0:13.0.0.255) and special days (0-0:11.0.0.255) as a calendar file;
    with --object disconnect or relay the disconnect control (0-0:13.0.1.255, 0-0:11.0.1.255) or the
    load-management relay calendar (0-0:13.0.2.255, 0-0:11.0.2.255)."""


# the keys of hes.calendar_file.CALENDAR_OBJECTS (imported lazily, as every command's modules)
_CALENDAR_OBJECT = click.option("--object", "which", type=click.Choice(["tariff", "disconnect", "relay"]),
                                default="tariff", show_default=True, help="Which calendar and special days table.")


@client_calendar.command("show")
@click.option("--active/--passive", default=True, show_default=True,
              help="The calendar in force, or the one written to become active.")
@click.option("--json", "as_json", is_flag=True, help="As a JSON calendar file (default TOML).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the calendar file there instead of printing it.")
@_CALENDAR_OBJECT
@click.pass_context
def client_calendar_show(ctx: click.Context, active: bool, as_json: bool, output: Path | None, which: str) -> None:
    """Print the calendar and the special days as a calendar file: edit it and `calendar load` it."""
    from smartmeter.dlms.client import AccessDenied
    from smartmeter.hes.calendar_file import (
        ACTIVATION_TIME_ATTRIBUTE, ACTIVE_ATTRIBUTES, CALENDAR_OBJECTS, PASSIVE_ATTRIBUTES, SPECIAL_DAYS_ATTRIBUTE,
        calendar_from_attributes, calendar_to_json, calendar_to_toml,
    )

    calendar_obis, special_days_obis = CALENDAR_OBJECTS[which]
    attributes = ACTIVE_ATTRIBUTES if active else PASSIVE_ATTRIBUTES

    async def read(c, attribute: int):
        try:
            return await c.get(calendar_obis, attribute, class_id=20)
        except AccessDenied as exc:
            raise UsageProblem(f"refused: {calendar_obis}:{attribute}: {_result_name(exc.result)}",
                               "may this client read the calendar? give --credentials of one that may "
                               "(management, data_readout, ...)") from None

    async def work(c):
        values = [await read(c, attributes[part]) for part in ("name", "seasons", "weeks", "days")]
        activate_at = None if active else await read(c, ACTIVATION_TIME_ATTRIBUTE)
        try:
            special, refused = await c.get(special_days_obis, SPECIAL_DAYS_ATTRIBUTE, class_id=11), None
        except AccessDenied as exc:
            special, refused = None, exc.result
        return values, activate_at, special, refused

    values, activate_at, special, refused = _run_client(ctx, work)
    calendar = calendar_from_attributes(*values, activate_at=activate_at, special_days=special)
    if refused is not None:
        click.echo(f"note: the special days ({special_days_obis}:{SPECIAL_DAYS_ATTRIBUTE}) could not be read: "
                   f"{_result_name(refused)}", err=True)
    if as_json or ctx.obj["json"]:
        text = calendar_to_json(calendar)
    else:
        first, last = min(attributes.values()), max(attributes.values()) + (0 if active else 1)
        text = calendar_to_toml(calendar, f"{'active' if active else 'passive'} calendar: {calendar_obis} "
                                          f"attributes {first}..{last}"
                                          + ("" if special is None else f"; special days: {special_days_obis}"))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise UsageProblem(f"cannot write {output}: {exc.strerror}", "give a file in a directory you may write") from None
    object_option = "" if which == "tariff" else f" --object {which}"
    click.echo(f"wrote the {'active' if active else 'passive'} calendar to {output}: edit it, then "
               f"smartmeter client calendar load{object_option} {output}")


def _calendar_writes(calendar) -> list[tuple[int, str, str]]:
    """(attribute, its name, what is written) for every passive attribute, in writing order."""
    from smartmeter.hes.calendar_file import calendar_to_dict

    content = calendar_to_dict(calendar)
    switches = sum(len(d["switches"]) for d in content["day"])
    return [
        (6, "calendar_name_passive", json.dumps(content["name"])),
        (7, "season_profile_passive", f"{len(content['season'])} season(s): "
            + ", ".join(f"{s['name']} from {s['start']}" for s in content["season"])),
        (8, "week_profile_table_passive", f"{len(content['week'])} week profile(s): "
            + ", ".join(w["name"] for w in content["week"])),
        (9, "day_profile_table_passive", f"{len(content['day'])} day profile(s) with {switches} switch(es)"),
        (10, "activate_passive_calendar_time", content.get("activate_at", "not specified")),
    ]


@client_calendar.command("load")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--activate-now", is_flag=True, help="Make the written calendar active at once (method 1).")
@_CALENDAR_OBJECT
@click.pass_context
def client_calendar_load(ctx: click.Context, file: Path, activate_now: bool, which: str) -> None:
    """Check a calendar file (TOML or JSON), write it as the passive calendar (attributes 6..10)
    and, when it has special days, replace the special days table. A management client's
    --credentials are needed to write."""
    from smartmeter.cosem.data import Data
    from smartmeter.dlms.client import AccessDenied
    from smartmeter.hes.calendar_file import (
        CALENDAR_OBJECTS, SPECIAL_DAYS_ATTRIBUTE, CalendarFileError, load_calendar_file, passive_attribute_values,
        special_days_value,
    )

    calendar_obis, special_days_obis = CALENDAR_OBJECTS[which]

    try:
        calendar = load_calendar_file(file)
    except CalendarFileError as exc:
        raise UsageProblem(f"{file}: {exc}", "fix the file; nothing was sent to the meter") from None
    values = passive_attribute_values(calendar)
    special = special_days_value(calendar)

    def refused(exc: AccessDenied, what: str, state: str) -> UsageProblem:
        return UsageProblem(f"refused: {what}: {_result_name(exc.result)}", state)

    async def work(c):
        for attribute, name, shown in _calendar_writes(calendar):
            try:
                await c.set(calendar_obis, attribute, values[attribute], class_id=20)
            except AccessDenied as exc:
                raise refused(exc, f"{calendar_obis}:{attribute} {name}",
                              "the active calendar is unchanged; what is listed above was written") from None
            click.echo(f"wrote {calendar_obis}:{attribute} {name}: {shown}")
        if activate_now:
            try:
                await c.action(calendar_obis, 1, Data.integer(0), class_id=20)
            except AccessDenied as exc:
                raise refused(exc, f"{calendar_obis} method 1 activate_passive_calendar",
                              "the passive calendar was written; the active calendar is unchanged") from None
            click.echo(f"executed {calendar_obis} method 1 activate_passive_calendar: the calendar is active")
        if special is not None:
            target = f"{special_days_obis}:{SPECIAL_DAYS_ATTRIBUTE} entries"
            try:
                await c.set(special_days_obis, SPECIAL_DAYS_ATTRIBUTE, special, class_id=11)
            except AccessDenied as exc:
                raise refused(exc, target, "the calendar was written as listed above; "
                                           "the special days table is unchanged") from None
            click.echo(f"wrote {target}: {len(special.value)} special day(s)")

    _run_client(ctx, work)
