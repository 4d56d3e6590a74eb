"""`smartmeter sim`: change the physical world of a running meter (its simulated hardware).

Talks to the meter over its control channel (a UNIX socket in the data directory that only
the meter's owner can open), never over DLMS.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.meter.control import ControlChannelError, request
from smartmeter.meter.world import PHASES

DATA_DIR_OPTION = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("meter-data"),
                               show_default=True, help="The data directory of the running meter.")


class SimRefused(click.ClickException):
    """The meter refused the input: one line, exit code 2."""

    exit_code = 2


def _send(data_dir: Path, message: dict) -> dict:
    try:
        answer = request(data_dir, message)
    except ControlChannelError as exc:
        raise UsageProblem(str(exc), f"give the --data-dir the meter runs with, or start one with "
                                     f"smartmeter meter run --data-dir {data_dir}") from None
    if not answer.get("ok"):
        raise SimRefused(str(answer.get("error", "the meter refused the request")))
    return answer.get("status", {})


def _show(status: dict) -> None:
    world = status.get("world", {})
    clock = status.get("clock", {})
    powered = "on" if status.get("powered") else "OFF (the meter is powered down)"
    click.echo(f"supply            {powered}")
    click.echo(f"meter time        {clock.get('local', '?')}"
               + (f"  (simulated, {clock['speed']:g}x real time)" if clock.get("speed", 1) != 1 else "")
               + ("  CLOCK INVALID until set" if clock.get("invalid") else ""))
    voltages = ", ".join(f"{p} {v:g} V" for p, v in world.get("voltages", {}).items())
    click.echo(f"voltages          {voltages}")
    load = world.get("load")
    click.echo("load              " + ("simulated household" if load == "household" else
                                   f"{load['power_w']:g} W at power factor {load['pf']:g} on {load['phase']}"))
    click.echo(f"meter cover       {world.get('cover')}   terminal cover {world.get('terminal_cover')}   "
               f"magnet {world.get('magnet')}   backup battery {world.get('battery')}")
    energy = status.get("energy")
    if energy:
        click.echo("energy            " + "   ".join(f"{k} {v}" for k, v in energy.items()))
    for key, label in (("disconnector", "disconnector"), ("load management relay", "relay (load mgmt)")):
        device = status.get(key)
        if device:
            click.echo(f"{label:<18}{device['state']} (control mode {device['mode']}, output {device['output']})")
    for key, label in (("disconnect calendar", "disconnect cal."), ("load management calendar", "relay calendar")):
        if key in status:
            upcoming = status[key].get("next switch")
            click.echo(f"{label:<18}" + ("empty" if upcoming is None else
                       f"next {upcoming['at']}: script {upcoming['script']} ({'off' if upcoming['script'] == 3 else 'on'})"))
    if status.get("tariff"):
        click.echo(f"tariff            {status['tariff']}")
    billing = status.get("billing")
    if billing:
        lock = billing.get("reset lock until")
        click.echo(f"billing           counter {billing['counter']:02d}   monthly billing {billing['monthly schedule']}"
                   + (f"   reset lock until {lock}" if lock else ""))
    for name, value in status.get("registers", {}).items():
        click.echo(f"{name:<18}{value}")


def _done(data_dir: Path, message: dict) -> None:
    _show(_send(data_dir, message))


@click.group("sim")
def sim_group() -> None:
    """Change the physical world of a running meter: supply, voltages, load, covers, magnet,
    buttons, backup battery. Each change is what the meter's hardware would sense; the meter
    logs and alarms as a real one does."""


@sim_group.command("supply")
@click.argument("state", type=click.Choice(["on", "off"]))
@DATA_DIR_OPTION
def sim_supply(state: str, data_dir: Path) -> None:
    """Switch the supply off (a complete power failure: no registration, no communication) or on."""
    _done(data_dir, {"input": "supply", "value": state})


@sim_group.command("voltage")
@click.argument("phase", type=click.Choice(list(PHASES)))
@click.argument("volts", type=click.FloatRange(0, 400))
@DATA_DIR_OPTION
def sim_voltage(phase: str, volts: float, data_dir: Path) -> None:
    """Set the RMS voltage of one phase (0 = the phase is cut)."""
    _done(data_dir, {"input": "voltage", "phase": phase, "value": volts})


@sim_group.command("load")
@click.option("--power", type=float, default=None, metavar="W",
              help="Active power in W (negative: export). Without it: back to the simulated household.")
@click.option("--pf", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Power factor (inductive).")
@click.option("--phase", type=click.Choice(list(PHASES)), default=None, help="All of it on this phase (default: spread).")
@DATA_DIR_OPTION
def sim_load(power: float | None, pf: float, phase: str | None, data_dir: Path) -> None:
    """Set what the installation draws, instead of the simulated household."""
    if power is None:
        _done(data_dir, {"input": "load", "value": "household"})
    else:
        _done(data_dir, {"input": "load", "power": power, "pf": pf, "phase": phase})


def _two_state(name: str, states: tuple[str, str], help_text: str):
    @sim_group.command(name, help=help_text)
    @click.argument("state", type=click.Choice(list(states)))
    @DATA_DIR_OPTION
    def command(state: str, data_dir: Path) -> None:
        _done(data_dir, {"input": name, "value": state})

    return command


_two_state("cover", ("open", "close"), "Open or close the meter cover (fraud detection).")
_two_state("terminal-cover", ("open", "close"), "Open or close the terminal cover (fraud detection).")
_two_state("magnet", ("on", "off"), "Put a strong magnet near the meter, or take it away (fraud detection).")
_two_state("battery", ("ok", "exhausted"), "The clock's backup battery: with it exhausted a power failure loses the time.")


@sim_group.command("button")
@click.argument("button", type=click.Choice(["A", "R"]))
@click.option("--long", "long_press", is_flag=True, help="A long press.")
@DATA_DIR_OPTION
def sim_button(button: str, long_press: bool, data_dir: Path) -> None:
    """Press button A or R of the meter."""
    _done(data_dir, {"input": "button", "value": button, "long": long_press})


@sim_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@DATA_DIR_OPTION
def sim_status(as_json: bool, data_dir: Path) -> None:
    """Show the meter's physical world, its time and its registers."""
    status = _send(data_dir, {"status": True})
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
    else:
        _show(status)


# --------------------------------------------------------------------------------------
# simulated M-Bus submeters (not the meter's world: devices of their own beside it)


def _host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageProblem(f"{option} {value!r} is not HOST:PORT", f"e.g. {option} 127.0.0.1:10001")
    return host, int(port)


def _per_kind(values: tuple[str, ...], kinds: tuple[str, ...], option: str, names: tuple[str, ...]) -> list[set[str]]:
    """`--alarm water:leak` style options: a set of names for each device (KIND applies to
    every device of that kind, KIND#N to the N-th device on the command line)."""
    chosen: list[set[str]] = [set() for _ in kinds]
    for value in values:
        target, sep, name = value.partition(":")
        if not sep or name not in names:
            raise UsageProblem(f"{option} {value!r} is not KIND:NAME", f"NAME is one of {', '.join(names)}")
        kind, _, index = target.partition("#")
        matched = [i for i, k in enumerate(kinds) if k == kind and (not index or index == str(i + 1))]
        if not matched:
            raise UsageProblem(f"{option} {value!r} names no device started here",
                               f"the devices are {', '.join(f'{k}#{i + 1}' for i, k in enumerate(kinds))}")
        for i in matched:
            chosen[i].add(name)
    return chosen


CONSOLE_HELP = ("commands: status | alarm KIND:NAME on|off (battery-low, leak, tamper) | "
                "fault KIND:NAME on|off (wired: silent, wrong-identity, bad-checksum, endless, collision) | help")


def _console_command(line: str, meters: list, kinds: tuple[str, ...], wired: bool, now: float) -> str:
    """One line typed while the submeters run; the answer is one line (or one per device)."""
    from smartmeter.mbus import simulated

    words = line.split()
    if not words:
        return ""
    if words == ["help"]:
        return CONSOLE_HELP
    if words == ["status"]:
        rows = []
        for i, meter in enumerate(meters):
            reading = meter.reading(now)
            values = "  ".join(f"{name} {value}" for name, value in vars(reading).items() if value is not None)
            alarms = [a for a in simulated.ALARMS if getattr(meter.alarms, a.replace("-", "_"))]
            rows.append(f"{kinds[i]}#{i + 1} ID {meter.identification:08d}  {values}  status 0x{meter.status:02X}"
                        + (f"  alarms {','.join(alarms)}" if alarms else "")
                        + (f"  faults {','.join(sorted(meter.faults))}" if meter.faults else ""))
        return "\n".join(rows)
    if len(words) == 3 and words[0] in ("alarm", "fault") and words[2] in ("on", "off"):
        names = simulated.ALARMS if words[0] == "alarm" else simulated.FAULTS
        if words[0] == "fault" and not wired:
            return "error: faults are those of a wired bus"
        try:
            chosen = _per_kind((words[1],), kinds, words[0], names)
        except UsageProblem as exc:
            return f"error: {exc} ({exc.hint})"
        name = words[1].partition(":")[2]
        changed = []
        for meter, kind, names_for_it in zip(meters, kinds, chosen):
            if not names_for_it:
                continue
            if name == "leak" and kind != "water":
                return f"error: a {kind} meter has no leak alarm"
            if words[0] == "alarm":
                meter.alarms.set(name, words[2] == "on")
            elif words[2] == "on":
                meter.faults.add(name)
            else:
                meter.faults.discard(name)
            changed.append(f"{kind} {meter.identification:08d}")
        return f"{words[0]} {name} {words[2]}: " + ", ".join(changed)
    return f"error: {line.strip()!r} is no command; {CONSOLE_HELP}"


def _aes_key(text: str | None, option: str) -> bytes | None:
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise UsageProblem(f"{option} {text!r} is not 32 hex digits", "an AES-128 key: 16 bytes")
    return key


def _in_order(values: tuple[int, ...], kinds: tuple[str, ...], option: str) -> list[int | None]:
    if len(values) > len(kinds):
        raise UsageProblem(f"{len(values)} times {option} for {len(kinds)} devices",
                           f"give {option} once per device, in the order of the kinds")
    return list(values) + [None] * (len(kinds) - len(values))


def _install_hint(meter, channel: int, wired: bool, bus: str, key_hex: str | None = None) -> str:
    """The head-end command that installs `meter` on `channel` of a meter run with this bus."""
    from smartmeter.cli.mbus import MEDIA

    medium = next((name for name, code in MEDIA.items() if code == meter.medium), str(meter.medium))
    address = f" --primary-address {meter.primary_address}" if wired and meter.primary_address else ""
    radio = "" if wired else f" --wireless --key {key_hex or 'HEX'}"
    return (f"    install (a meter run with --mbus-{'wired' if wired else 'wireless'} {bus}; channel {channel} is "
            f"IC 72 0-{channel}:24.1.0.255):\n"
            f"      smartmeter client --credentials meter-data/credentials/management.json mbus install {channel} "
            f"--id {meter.identification:08d} --manufacturer {meter.manufacturer} --version {meter.version} "
            f"--medium {medium}{address}{radio}")


@sim_group.command("mbus")
@click.argument("kinds", nargs=-1, required=True, metavar="KIND...",
                type=click.Choice(["gas", "water", "heat"]))
@click.option("--wired", is_flag=True, help="Slaves on one wired bus, served on TCP (--listen).")
@click.option("--wireless", is_flag=True, help="Senders of periodic radio telegrams as UDP datagrams (--to).")
@click.option("--listen", default="127.0.0.1:10001", show_default=True, metavar="HOST:PORT|pty",
              help="--wired: where the bus takes its master: one TCP client (port 0: any free port), or "
                   "'pty': a new pseudo-terminal whose path the master opens as its serial port.")
@click.option("--to", "target", default=None, metavar="HOST:PORT",
              help="--wireless: where the radio frames go (the meter's --mbus-wireless).")
@click.option("--mode", type=click.Choice(["5", "7"]), default="5", show_default=True,
              help="--wireless: OMS security mode (5: AES-CBC; 7: AES-CBC with CMAC and key derivation).")
@click.option("--key", default=None, metavar="HEX",
              help="The AES-128 key, 32 hex digits: --wireless always sends encrypted; --wired devices with a key "
                   "answer in OMS mode 5.")
@click.option("--master-key", default=None, metavar="HEX",
              help="--wired: the devices' master (default) key, 32 hex digits: with it they take a key by "
                   "transfer_key (SND_UD, DIF 0D VIF FD 19).")
@click.option("--key-style", type=click.Choice(["dsmr4", "smr5"]), default="dsmr4", show_default=True,
              help="--wired: how a transferred key is wrapped under the master key.")
@click.option("--format", "crc_format", type=click.Choice(["A", "B"]), default="A", show_default=True,
              help="--wireless: EN 13757-4 frame format (CRC layout).")
@click.option("--interval", type=click.FloatRange(0.05, 86400), default=30.0, show_default=True, metavar="S",
              help="--wireless: seconds between telegrams of one device (each varied by +-10 %).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Identities, registers and consumption follow from the seed.")
@click.option("--speed", type=click.FloatRange(0, 100_000, min_open=True), default=1.0, show_default=True,
              help="Simulated time runs this many times faster than real time.")
@click.option("--id", "identifications", type=click.IntRange(0, 99_999_999), multiple=True, metavar="NUMBER",
              help="Identification number (8 digits) of each device in the order of the kinds (default: from the seed).")
@click.option("--address", "addresses", type=click.IntRange(0, 250), multiple=True, metavar="N",
              help="--wired: primary address of each device in the order of the kinds (default 0: unconfigured).")
@click.option("--coding", type=click.Choice(["bcd", "binary"]), default="bcd", show_default=True,
              help="Values as BCD digits or binary integers.")
@click.option("--energy-unit", type=click.Choice(["kWh", "MJ"]), default="kWh", show_default=True,
              help="Heat meters: the energy register's unit.")
@click.option("--alarm", "alarms", multiple=True, metavar="KIND:ALARM",
              help="Raise an alarm: battery-low, leak (water) or tamper; KIND or KIND#N (N-th device).")
@click.option("--fault", "faults", multiple=True, metavar="KIND:FAULT",
              help="--wired test faults: silent, wrong-identity, bad-checksum, endless, collision.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds of real time (default: run until Ctrl-C).")
def sim_mbus(kinds: tuple[str, ...], wired: bool, wireless: bool, listen: str, target: str | None, mode: str,
             key: str | None, master_key: str | None, key_style: str, crc_format: str, interval: float, seed: int, speed: float,
             identifications: tuple[int, ...], addresses: tuple[int, ...], coding: str, energy_unit: str,
             alarms: tuple[str, ...], faults: tuple[str, ...], duration: float | None) -> None:
    """Simulated M-Bus submeters (KIND: gas, water, heat) for the meter's M2 interface.

    --wired: the devices are slaves on one bus that a master (the meter, `meter run
    --mbus-wired HOST:PORT`) reaches over TCP. --wireless: each device sends an encrypted
    radio telegram every --interval seconds as a UDP datagram to --to. Prints each device's
    identity and how to install it on the meter; Ctrl-C stops them.
    """
    import asyncio
    import time

    from smartmeter.mbus import simulated
    from smartmeter.mbus.keytransfer import KeyTransferStyle

    if wired == wireless:
        raise UsageProblem("say --wired or --wireless", "e.g. smartmeter sim mbus gas water --wired --listen 127.0.0.1:10001")
    if wired and target:
        raise UsageProblem("--to is for --wireless", "a wired bus listens on --listen")
    if wireless and master_key:
        raise UsageProblem("--master-key is for --wired", "wireless devices take their key from --key")
    if wireless and addresses:
        raise UsageProblem("--address is for --wired", "wireless devices have no primary address")
    if wireless and faults:
        raise UsageProblem("--fault is for --wired", "the faults are those of a wired bus")
    if wireless:
        if target is None:
            raise UsageProblem("--wireless needs --to HOST:PORT", "the meter's --mbus-wireless address")
        if key is None:
            raise UsageProblem("--wireless needs --key HEX", "an AES-128 key: 32 hex digits")
    radio_key = _aes_key(key, "--key")
    device_master_key = _aes_key(master_key, "--master-key")
    on_pty = wired and listen == "pty"
    host, port = ("pty", 0) if on_pty else _host_port(listen if wired else target, "--listen" if wired else "--to")
    alarm_sets = _per_kind(alarms, kinds, "--alarm", simulated.ALARMS)
    fault_sets = _per_kind(faults, kinds, "--fault", simulated.FAULTS)
    for kind, chosen in zip(kinds, alarm_sets):
        if "leak" in chosen and kind != "water":
            raise UsageProblem(f"a {kind} meter has no leak alarm", "leak is a water meter's alarm")
    ids = _in_order(identifications, kinds, "--id")
    primaries = _in_order(addresses, kinds, "--address")
    meters = []
    for i, kind in enumerate(kinds):
        # the n-th device of a kind gets its own identity from the same seed
        nth = kinds[:i].count(kind)
        meter = simulated.SimulatedSubmeter(kind, seed=seed + 1000 * nth, identification=ids[i],
                                            primary_address=primaries[i] or 0, coding=coding,
                                            energy_unit=energy_unit)
        for name in alarm_sets[i]:
            meter.alarms.set(name)
        if wired:
            meter.key = radio_key
            meter.master_key = device_master_key
            meter.key_style = KeyTransferStyle(key_style)
        meter.faults |= fault_sets[i]
        meters.append(meter)
    taken = [m.identification for m in meters]
    if len(set(taken)) != len(taken):
        raise UsageProblem("two devices have the same identification number", "give each its own --id")
    clock = simulated.SimulatedClock(time.time(), speed)

    def say(line: str) -> None:
        click.echo(line)

    def console(loop) -> None:
        # Lines typed while they run. A thread with raw os.read on fd 0: blocking reads leave
        # the terminal's modes alone, and no buffered sys.stdin lock is held when the
        # interpreter exits with the thread still waiting.
        import os
        import threading

        def handle(text: str) -> None:
            answer = _console_command(text, meters, kinds, wired, clock.now())
            if answer:
                say(answer)

        def read() -> None:
            pending = b""
            try:
                while chunk := os.read(0, 4096):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        loop.call_soon_threadsafe(handle, line.decode("utf-8", "replace"))
                    pending = pending[-4096:]  # a line longer than that is no command anyway
            except (OSError, RuntimeError):
                pass  # no stdin, or the loop is closed: nothing more to read

        threading.Thread(target=read, daemon=True).start()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        if wired:
            bus = simulated.SimulatedBus(meters, log=lambda line: say(f"bus: {line}"))

            def started(bound: int | str) -> None:
                where = bound if on_pty else f"{host}:{bound}"
                say(f"wired M-Bus with {len(meters)} slave(s) on {where} "
                    + ("(a pseudo-terminal: the master's serial port)" if on_pty else "(TCP, one master at a time)")
                    + (f"; simulated time {speed:g}x real time" if speed != 1 else "")
                    + ("; answers in OMS mode 5 with --key" if radio_key else "")
                    + (f"; takes a key by transfer_key ({key_style} wrap under --master-key)" if device_master_key
                       else ""))
                for channel, meter in enumerate(meters, start=1):
                    say(meter.describe())
                    say(_install_hint(meter, channel, True, where))
                say("Type status, alarm KIND:NAME on|off, fault KIND:NAME on|off or help.")
                say("Ctrl-C stops the simulated submeters.")
                console(loop)

            await serve_bus_or_fail(simulated.serve_bus_pty(bus, clock.now, started) if on_pty
                                    else simulated.serve_bus(bus, host, port, clock.now, started))
        else:
            say(f"wireless M-Bus: {len(meters)} sender(s) to udp {host}:{port}, OMS mode {mode}, format {crc_format}, "
                f"every {interval:g} s" + (f"; simulated time {speed:g}x real time" if speed != 1 else ""))
            senders = [simulated.WirelessSender(m, mode=int(mode), key=radio_key, crc=crc_format, interval=interval)
                       for m in meters]
            for channel, meter in enumerate(meters, start=1):
                say(meter.describe(wired=False))
                say(_install_hint(meter, channel, False, f"{host}:{port}", radio_key.hex().upper()))
            say("Type status, alarm KIND:NAME on|off or help.")
            say("Ctrl-C stops the simulated submeters.")
            console(loop)
            await asyncio.gather(*(s.run((host, port), clock.now,
                                         sent=lambda frame, m=s.meter: say(
                                             f"sent {m.kind} {m.identification:08d} access number {m.access_number}"
                                             f" ({len(frame)} bytes)"))
                                   for s in senders))

    async def serve_bus_or_fail(server) -> None:
        try:
            await server
        except BrokenPipeError:
            raise  # our stdout's reader went away: the command line's handling, not a port problem
        except OSError as exc:
            raise UsageProblem(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               "choose another --listen port (0: any free one)") from None

    async def bounded() -> None:
        if duration is None:
            await run()
        else:
            try:
                await asyncio.wait_for(run(), duration)
            except asyncio.TimeoutError:
                pass

    try:
        asyncio.run(bounded())
    except KeyboardInterrupt:
        pass
    say("simulated submeters stopped")


# --------------------------------------------------------------------------------------
# a fleet of simulated meters for load-testing a head-end (docs/fleet.md)

FLEET_CLIENT_TITLE = bytes.fromhex("4845530000000001")  # "HES" + 1: the example credentials' client title


def _fraction(option: str, help_text: str):
    return click.option(option, type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="FRACTION",
                        help=f"This fraction of the meters {help_text}")


def _fleet_start(text: str | None, now: float) -> float:
    import datetime as dt

    from smartmeter.meter import fleet

    if text is None:
        return fleet.default_start(now)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageProblem(f"--start {text!r} is not an ISO date-time", "e.g. --start 2026-03-01T00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # the fleet's meters keep UTC
    return when.timestamp()


@sim_group.command("fleet")
@click.option("--meters", type=click.IntRange(1, 100_000), required=True, metavar="N", help="How many meters.")
@click.option("--cells", type=click.IntRange(1, 100_000), default=1, show_default=True, metavar="K",
              help="Network cells: meter i is in cell-(i mod K).")
@click.option("--base-port", type=click.IntRange(1, 65535), default=21000, show_default=True, metavar="P",
              help="Meter i listens on 127.0.0.1:P+i.")
@click.option("--start", "start_text", default=None, metavar="ISO",
              help="Meter time at the fleet's start (UTC unless an offset is given) [default: now: at speed 1 "
                   "the meters' clocks show real time].")
@click.option("--speed", type=click.FloatRange(0, 1_000_000, min_open=True), default=1.0, show_default=True,
              help="Meter seconds per real second.")
@click.option("--seed", type=int, default=0, show_default=True, help="Keys, identities and faulty meters follow from it.")
@_fraction("--slow", "holds back every answer by --slow-delay.")
@click.option("--slow-delay", type=click.FloatRange(0, 600), default=2.0, show_default=True, metavar="S",
              help="How long a slow meter holds back each answer.")
@_fraction("--refusing", "holds other keys than the manifest lists: the association is refused.")
@_fraction("--silent", "accepts TCP connections and never answers.")
@click.option("--latency", type=click.FloatRange(0, 600), default=0.0, show_default=True, metavar="S",
              help="Every answer of every meter is held back this long.")
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="P",
              help="Probability per request that the meter drops the connection instead of answering.")
@_fraction("--no-range", "refuses range access (selector 1) to the load profile; entries work.")
@_fraction("--no-selective", "refuses both selectors of the load profile: only the whole buffer.")
@click.option("--processes", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2: the odd meters are served by a second OS process.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=Path("fleet-manifest.json"),
              show_default=True, help="Where the manifest goes (mode 0600: it holds keys).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Report file, rewritten every second and at the stop [default: none].")
@click.option("--report-counters", is_flag=True, help="Every meter's list of received invocation counters in the report.")
@click.option("--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Credentials file for `smartmeter client` to read the first healthy meter [default: "
                   "<manifest>-client.json].")
@click.option("--meter-connections", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Connections one meter holds at once.")
@click.option("--max-connections", type=click.IntRange(1, 60_000), default=2048, show_default=True,
              help="Connections one fleet process holds at once.")
@click.option("--idle-timeout", type=click.FloatRange(0), default=60.0, show_default=True, metavar="S",
              help="A connection without a request for this long is closed (0: never).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds of real time (default: run until Ctrl-C or SIGTERM).")
def sim_fleet(meters: int, cells: int, base_port: int, start_text: str | None, speed: float, seed: int, slow: float,
              slow_delay: float, refusing: float, silent: float, latency: float, loss: float, no_range: float,
              no_selective: float, processes: int, manifest: Path, report_path: Path | None, report_counters: bool,
              credentials: Path | None, meter_connections: int, max_connections: int, idle_timeout: float,
              duration: float | None) -> None:
    """A fleet of simulated DLMS/COSEM meters for load-testing a head-end: each a real server on
    its own TCP port (wrapper), the management client (SAP 1) with HLS 5 GMAC, suite 0, the public
    client (SAP 16) without security. Values are a documented function of time (docs/fleet.md);
    faults are injected into chosen fractions of the fleet. Writes a manifest (addresses, keys,
    faults) and, with --report, what the head-end did. Ctrl-C or SIGTERM stops it."""
    import shlex
    import time

    from smartmeter.hes.credentials import write_credentials
    from smartmeter.meter import fleet
    from smartmeter.meter.fleet_report import write_atomically
    from smartmeter.meter.fleet_serve import FleetLimits, FleetProblem, allocate_ports, run

    now = time.time()
    fractions = {"slow": slow, "refusing": refusing, "silent": silent, "no-range": no_range,
                 "no-selective": no_selective}
    try:
        ports = allocate_ports("127.0.0.1", base_port, meters)
    except FleetProblem as exc:
        raise UsageProblem(str(exc)) from None
    try:
        scenario = fleet.FleetScenario(meters=meters, start=_fleet_start(start_text, now), speed=speed, real_start=now,
                                       seed=seed, cells=cells, base_port=base_port, ports=ports,
                                       fractions={k: v for k, v in fractions.items() if v},
                                       slow_delay=slow_delay, latency=latency, loss=loss)
    except ValueError as exc:
        raise UsageProblem(str(exc), "--silent, --refusing and --slow together at most 1; "
                                     "--no-selective and --no-range likewise") from None
    limits = FleetLimits(meter_connections=meter_connections, process_connections=max_connections,
                         idle_timeout=idle_timeout)
    document = scenario.manifest()
    healthy = next((m for m in document["meters"] if not m["faults"]), None)
    credentials = credentials or manifest.with_name(f"{manifest.stem}-client.json")

    for path in (manifest, report_path, credentials):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)  # an old one must not pass for this fleet's

    def ready() -> None:
        # the manifest appears once every meter listens: a test may wait for it
        write_atomically(manifest, document, mode=0o600)
        example = ""
        if healthy is not None:
            write_credentials(credentials, client_sap=fleet.MANAGEMENT_SAP, authentication=fleet.MECHANISM,
                              security_suite=fleet.SUITE, security_policy=fleet.POLICY,
                              client_system_title=FLEET_CLIENT_TITLE,
                              server_system_title=bytes.fromhex(healthy["system_title"]),
                              ek=bytes.fromhex(healthy["ek"]), ak=bytes.fromhex(healthy["ak"]), name="management",
                              interface="lan", reset_counter=True)
            example = (f"smartmeter client --port {healthy['port']} --credentials {shlex.quote(str(credentials))} "
                       f"get 1-0:1.8.0.255")
        last = ports[-1]
        skipped = last - base_port + 1 - meters
        counted = {name: len(scenario.meters_with(name)) for name in (*fleet.FAULTS, *fleet.CAPABILITIES)}
        click.echo(f"fleet of {meters} meter(s) on 127.0.0.1:{base_port}" + (f"..{last}" if meters > 1 else "")
                   + (f" ({skipped} port(s) in use by others skipped)" if skipped else "")
                   + f" in {cells} cell(s), {processes} process(es); meter time from {fleet.iso(scenario.start)}"
                   + (f" at {speed:g}x real time" if speed != 1 else ""))
        faults = ", ".join(f"{name} {count}" for name, count in counted.items() if count)
        extras = [f"latency {latency:g} s" if latency else "", f"loss {loss:g}" if loss else ""]
        click.echo("faults: " + (", ".join(x for x in [faults, *extras] if x) or "none"))
        click.echo(f"manifest (keys, mode 0600): {manifest}")
        click.echo(f"report: {report_path} (every second and at the stop)" if report_path else
                   "report: none (give --report FILE for one)")
        if example:
            click.echo(f"read meter {healthy['index']}: {example}")
        click.echo("Ctrl-C or SIGTERM stops the fleet.", nl=True)

    try:
        final = run(scenario, limits, processes=processes, report_path=report_path, with_counters=report_counters,
                    on_ready=ready, duration=duration)
    except FleetProblem as exc:
        raise UsageProblem(str(exc)) from None
    totals = final["totals"]
    click.echo(f"fleet stopped: {totals['sessions']} session(s), {totals['counters_seen']} counter(s) seen, "
               f"{totals['refused']} refused as replays")
