"""`smartmeter display`: the running meter's LCD and buttons in a terminal.

The screen comes from the meter's control channel (the UNIX socket in its data directory, like
`smartmeter sim`), a few times a second; the keys press the meter's buttons the way `sim button`
does: a = [A], A = [A] held long, r = [R], R = [R] held long, q = quit. Not on a terminal (or
with --once) it prints the screen once and ends.
"""
from __future__ import annotations

import os
import select
import sys
from pathlib import Path

import click

from smartmeter.cli import UsageProblem
from smartmeter.cli.sim import DATA_DIR_OPTION, SimRefused
from smartmeter.meter.control import ControlChannelError, request

REFRESH = 0.25  # s between two looks at the meter's screen
WIDTH = 44
KEYS = {"a": ("A", False), "A": ("A", True), "r": ("R", False), "R": ("R", True)}


def _ask(data_dir: Path, message: dict) -> dict:
    try:
        answer = request(data_dir, message, timeout=10)
    except ControlChannelError as exc:
        raise UsageProblem(str(exc), f"start the meter first: smartmeter meter run --data-dir {data_dir}") from None
    if not answer.get("ok"):
        raise SimRefused(str(answer.get("error", "the meter refused the request")))
    return answer


def render(screen: dict) -> list[str]:
    """The LCD as text lines: the symbols row, the item code with value and unit, the message."""
    flags = screen.get("indicators") or {}
    symbols = [flags.get("tariff") or "  ",
               "OFF" if flags.get("disconnected") else "   ",
               "COM" if flags.get("communication") else "   ",
               "ALM" if flags.get("alarm") else "   ",
               "CERT" if flags.get("certification") else "    ",
               "LED*" if flags.get("led_on") else "LED ",
               "DMD" if flags.get("demand_output") else "   "]
    value = f"{screen.get('value', '')} {screen.get('unit', '')}".rstrip()
    code = str(screen.get("code", ""))
    middle = code + " " * max(1, WIDTH - 4 - len(code) - len(value)) + value
    position = f"{screen.get('mode', '')} {screen.get('index', 0) + 1}/{screen.get('count', 0)}"
    message = flags.get("message") or ""
    inner = WIDTH - 2
    lines = ["+" + "-" * inner + "+",
             "| " + " ".join(symbols)[:inner - 2].ljust(inner - 2) + " |",
             "| " + middle[:inner - 2].ljust(inner - 2) + " |",
             "| " + position[:inner - 2].rjust(inner - 2) + " |"]
    if message:
        lines.append("| " + message[:inner - 2].ljust(inner - 2) + " |")
    lines.append("+" + "-" * inner + "+")
    return lines


@click.command("display")
@DATA_DIR_OPTION
@click.option("--once", is_flag=True, help="Print the screen once and end (also when not on a terminal).")
def display_command(data_dir: Path, once: bool) -> None:
    """Show the running meter's display in the terminal; keys: a/A [A] short/long, r/R [R], q quit."""
    screen = _ask(data_dir, {"display": True})["display"]
    if once or not (sys.stdin.isatty() and sys.stdout.isatty()):
        click.echo("\n".join(render(screen)))
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        sys.stdout.write("\x1b[?25l")  # no cursor over the LCD
        shown: list[str] = []
        while True:
            lines = render(screen) + ["", "keys: a [A]  A [A] long  r [R]  R [R] long  q quit"]
            if lines != shown:
                sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
                sys.stdout.flush()
                shown = lines
            ready, _, _ = select.select([fd], [], [], REFRESH)
            if ready:
                key = os.read(fd, 1).decode("ascii", "replace")
                if key in ("q", "\x03", "\x04"):
                    break
                if key in KEYS:
                    button, long = KEYS[key]
                    _ask(data_dir, {"input": "button", "value": button, "long": long})
            screen = _ask(data_dir, {"display": True})["display"]
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stdout.write("\x1b[?25h\n")
        sys.stdout.flush()
