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
