"""`smartmeter client push-setup / push-schedule / push`: a meter's pushes (companion standard §10,
catalog §7) configured as the head-end does it, through the Management client:

    smartmeter client --credentials FILE push-setup SETUP [--to DESTINATION] [--retries N] [--delay S]
                                                         [--randomisation S] [--json]
    smartmeter client --credentials FILE push-schedule SETUP [--every INTERVAL | --at HH:MM[:SS]... | --off]
                                                            [--json]
    smartmeter client --credentials FILE push SETUP

SETUP is a push setup by name (as `smartmeter hes` names them: interval-1 or interval1, alarm,
connectivity, installation, power-down, consumer) or by OBIS code. The commands are attached to
the `client` group by smartmeter.cli.main; what they share with the other client commands (the
association, OBIS parsing, result names) is imported from there when they run.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import click

from smartmeter.cli import UsageProblem

__all__ = ["PUSH_COMMANDS"]

PUSH_SETUP_CLASS, SCHEDULE_CLASS = 40, 22
PUSH_METHOD = 1
# IC 40 v0 attributes a user sets: option -> (attribute, name)
DESTINATION = (3, "send_destination_and_method")
WINDOW = 4
RANDOMISATION = (5, "randomisation_start_interval")
RETRIES = (6, "number_of_retries")
REPETITION_DELAY = (7, "repetition_delay")
EXECUTION_TIME = 4  # IC 22 execution_time; attribute 3 is its type
# transport_service (Blue Book 4.4.8; 201: the companion standard's wired M-Bus, §10.5) <-> --to prefix
TRANSPORT_NAMES = {0: "tcp", 1: "udp", 201: "mbus"}
NO_DESTINATION = "none"
# The push action schedulers (model: executed_script of each runs the push script table
# 0-0:10.0.108.255 script of that setup) and how many execution times each holds (IC 22: 32;
# the consumer push's, §10.5: 60, an interval down to 1 s).
SCHEDULERS = {
    "0-1:25.9.0.255": ("0-1:15.0.4.255", 32),
    "0-2:25.9.0.255": ("0-2:15.0.4.255", 32),
    "0-3:25.9.0.255": ("0-3:15.0.4.255", 32),
    "0-6:25.9.0.255": ("0-4:15.0.4.255", 60),
}
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MANAGEMENT_HINT = "may this client do it? give a management client's --credentials"

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
SETUP_ARGUMENT = click.argument("setup_text", metavar="SETUP")


# ----------------------------------------------------------------------------- what the user names


def _setup_names() -> dict[str, str]:
    from smartmeter.hes.push_listener import SETUPS

    return SETUPS


def resolve_setup(text: str) -> tuple[str, str]:
    """SETUP (a name, with or without the hyphen of interval-1, or an OBIS code) -> (OBIS, name)."""
    from smartmeter.cli.main import _parse_obis

    names = _setup_names()
    wanted = text.lower().replace("-", "")
    for obis, name in names.items():
        if name.replace("-", "") == wanted:
            return obis, name
    if text[:1].isdigit():
        obis = str(_parse_obis(text))
        if obis in names:
            return obis, names[obis]
    raise UsageProblem(f"{text!r} is not a push setup",
                       "name one of " + ", ".join(n.replace("interval-", "interval") for n in names.values())
                       + ", or its OBIS code (0-1:25.9.0.255 is interval1)")


def parse_destination_option(text: str) -> tuple[int, str]:
    """--to tcp:IPv4:PORT | udp:[IPv6]:PORT | mbus:0-2:24.6.0.255:FF:00 -> (transport_service, destination).
    Checked as the meter checks it (ic40 `check_destination`), so a wrong one is refused before anything is sent."""
    from smartmeter.cosem.classes.base import CosemAccessError
    from smartmeter.cosem.classes.ic40_push_setup import check_destination

    hint = ("write --to tcp:IPv4:PORT (WAN), udp:[IPv6]:PORT (LAN), e.g. tcp:192.0.2.10:4060, "
            "mbus:0-2:24.6.0.255:FF:00 (the consumer push on H1), or none")
    prefix, _, address = text.partition(":")
    transport = next((number for number, name in TRANSPORT_NAMES.items() if name == prefix.lower()), None)
    if transport is None or not address:
        raise UsageProblem(f"--to {text!r} is not a push destination", hint)
    try:
        check_destination(transport, address)
    except CosemAccessError as exc:
        reason = str(exc).partition(": ")[2] or str(exc)  # without the data-access-result's name
        raise UsageProblem(f"--to {text!r} is not an address: {reason}", hint) from None
    return transport, address


def destination_text(transport: int, destination: str) -> str:
    if not destination:
        return NO_DESTINATION
    return f"{TRANSPORT_NAMES.get(transport, f'transport {transport}')}:{destination}"


def every_times(text: str) -> list[tuple[int | None, int | None, int]]:
    """--every N{s,m,h,d} -> execution times (hour, minute, second), None a wildcard: the fewest that
    repeat every N, starting at 00:00:00 (15m: *:00:00, *:15:00, *:30:00, *:45:00)."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip().lower())
    seconds = int(match[1]) * UNIT_SECONDS[match[2]] if match else 0
    if not seconds or 86400 % seconds:
        raise UsageProblem(f"--every {text!r} is not an interval that divides a day",
                           "e.g. --every 15m, 1h, 30s or 1d (s, m, h, d)")
    if 60 % seconds == 0:  # every minute, at these seconds
        return [(None, None, s) for s in range(0, 60, seconds)]
    if 3600 % seconds == 0:  # every hour, at these minutes and seconds
        return [(None, s // 60, s % 60) for s in range(0, 3600, seconds)]
    return [(s // 3600, s // 60 % 60, s % 60) for s in range(0, 86400, seconds)]


def at_time(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text.strip())
    hour, minute, second = (int(match[1]), int(match[2]), int(match[3] or 0)) if match else (99, 0, 0)
    if hour > 23 or minute > 59 or second > 59:
        raise UsageProblem(f"--at {text!r} is not a time of day", "write --at HH:MM or HH:MM:SS, e.g. --at 06:30")
    return hour, minute, second


def execution_time_value(times) -> "Data":  # noqa: F821 - imported lazily
    """IC 22 execution_time: array of {time octet-string(4), date octet-string(5)}, every date a wildcard."""
    from smartmeter.cosem import axdr
    from smartmeter.cosem.data import CosemDate, CosemTime, Data

    any_day = axdr.encode_date(CosemDate())
    return Data.array(Data.structure([Data.octet_string(axdr.encode_time(CosemTime(hour, minute, second, 0))),
                                      Data.octet_string(any_day)]) for hour, minute, second in times)


# ----------------------------------------------------------------------------- how it is shown


def _field(value: int | None, width: int) -> str:
    return "*" if value is None else f"{value:0{width}d}"


def _time_text(time) -> str:
    return ":".join(_field(v, 2) for v in (time.hour, time.minute, time.second))


def _date_text(date) -> str:
    text = "-".join(_field(v, w) for v, w in ((date.year, 4), (date.month, 2), (date.day, 2)))
    return text + ("" if date.weekday is None else f" weekday {date.weekday}")


def _decoded_or_hex(raw: bytes, decode, show) -> str:
    from smartmeter.errors import DecodeError

    try:
        return show(decode(raw))
    except (DecodeError, ValueError):
        return "hex:" + raw.hex()


def execution_time_texts(value) -> list[dict[str, str]]:
    from smartmeter.cosem import axdr

    return [{"time": _decoded_or_hex(t.value, axdr.decode_time, _time_text),
             "date": _decoded_or_hex(d.value, axdr.decode_date, _date_text)}
            for t, d in (entry.value for entry in value.value)]


def _window_end_text(raw: bytes) -> str:
    from smartmeter.cosem import axdr

    return _decoded_or_hex(raw, axdr.decode_date_time, lambda v: f"{_date_text(v.date)} {_time_text(v.time)}")


@dataclass(frozen=True)
class PushSetupView:
    obis: str
    name: str
    objects: list[dict]
    transport: int
    destination: str
    message: int
    windows: list[dict]
    randomisation: int
    retries: int
    repetition_delay: int

    def to_dict(self) -> dict:
        return {"logical_name": self.obis, "name": self.name, "push_object_list": self.objects,
                "destination": destination_text(self.transport, self.destination),
                "transport_service": self.transport, "message": self.message,
                "number_of_retries": self.retries, "repetition_delay": self.repetition_delay,
                "randomisation_start_interval": self.randomisation, "communication_window": self.windows}

    def text(self) -> str:
        lines = [f"{self.obis} push setup {self.name}",
                 f"  destination: {destination_text(self.transport, self.destination)}"
                 + ("" if self.destination else " (the push is not sent)"),
                 f"  retries: {self.retries}",
                 f"  repetition delay: {self.repetition_delay} s",
                 f"  randomisation: {self.randomisation} s",
                 "  window: " + ("always open" if not self.windows else
                                 "; ".join(f"{w['start']} .. {w['end']}" for w in self.windows)),
                 f"  objects ({len(self.objects)}):"]
        lines += [f"    {o['obis']}:{o['attribute']}" + (f" element {o['data_index']}" if o["data_index"] else "")
                  + f"  (class {o['class_id']})" for o in self.objects]
        return "\n".join(lines)


async def read_push_setup(c, obis: str, name: str) -> PushSetupView:
    from smartmeter.cosem.obis import Obis

    async def get(attribute: int):
        return await _checked(c.get(obis, attribute, class_id=PUSH_SETUP_CLASS), f"{obis}:{attribute}",
                              "may this client read push setups? give --credentials of one that may "
                              "(management, data_readout, ...)")

    objects = [{"class_id": e.value[0].value, "obis": str(Obis.from_bytes(e.value[1].value)),
                "attribute": e.value[2].value, "data_index": e.value[3].value} for e in (await get(2)).value]
    transport, destination, message = (f.value for f in (await get(DESTINATION[0])).value)
    windows = [{"start": _window_end_text(s.value), "end": _window_end_text(e.value)}
               for s, e in (w.value for w in (await get(WINDOW)).value)]
    randomisation, retries, delay = [(await get(a)).value for a, _ in (RANDOMISATION, RETRIES, REPETITION_DELAY)]
    return PushSetupView(obis, name, objects, transport, bytes(destination).decode("ascii", "replace"), message,
                         windows, randomisation, retries, delay)


PERMISSION_RESULTS = ("read-write-denied", "scope-of-access-violated", "object-unavailable")


async def _checked(request, what: str, hint: str, permission_hint: str | None = None):
    """The result of a DLMS request; a refusal becomes one line naming what was refused, with
    `permission_hint` (when given) for a refusal of this client's rights, else `hint`."""
    from smartmeter.cli.main import _result_name
    from smartmeter.dlms.client import AccessDenied

    try:
        return await request
    except AccessDenied as exc:
        result = _result_name(exc.result)
        chosen = permission_hint if permission_hint is not None and result in PERMISSION_RESULTS else hint
        raise UsageProblem(f"refused: {what}: {result}", chosen) from None


def _echo(ctx: click.Context, as_json: bool, as_dict: dict, text: str) -> None:
    click.echo(json.dumps(as_dict) if as_json or ctx.obj["json"] else text)


# ----------------------------------------------------------------------------- commands


@click.command("push-setup")
@SETUP_ARGUMENT
@click.option("--to", "to_text", default=None, metavar="DESTINATION",
              help="Where the push goes: tcp:IPv4:PORT (WAN), udp:[IPv6]:PORT (LAN), or none.")
@click.option("--retries", type=click.IntRange(0, 255), default=None, help="number_of_retries after a failed push.")
@click.option("--delay", type=click.IntRange(0, 65535), default=None, metavar="S",
              help="repetition_delay: seconds between attempts.")
@click.option("--randomisation", type=click.IntRange(0, 65535), default=None, metavar="S",
              help="randomisation_start_interval: a push starts after a random 0..S seconds.")
@JSON_OPTION
@click.pass_context
def push_setup(ctx: click.Context, setup_text: str, to_text: str | None, retries: int | None, delay: int | None,
               randomisation: int | None, as_json: bool) -> None:
    """Show a push setup (IC 40: objects, destination, retries, delays, window), or write what the
    options give (one SET each; a management client's --credentials) and show the result.

    SETUP: interval1, interval2, interval3, alarm, connectivity, installation, power-down,
    consumer, or the setup's OBIS code."""
    from smartmeter.cli.main import _run_client
    from smartmeter.cosem.data import Data

    obis, name = resolve_setup(setup_text)
    destination = None
    if to_text is not None and to_text != NO_DESTINATION:
        destination = parse_destination_option(to_text)  # before anything is sent
    integers = [(attribute, attribute_name, data_type(value))
                for (attribute, attribute_name), value, data_type in (
                    (RANDOMISATION, randomisation, Data.long_unsigned), (RETRIES, retries, Data.unsigned),
                    (REPETITION_DELAY, delay, Data.long_unsigned)) if value is not None]

    async def write(c, attribute: int, attribute_name: str, value: Data, shown) -> None:
        await _checked(c.set(obis, attribute, value, class_id=PUSH_SETUP_CLASS),
                       f"{obis}:{attribute} {attribute_name} {shown}", MANAGEMENT_HINT)
        if not (as_json or ctx.obj["json"]):
            click.echo(f"wrote {obis}:{attribute} {attribute_name}: {shown}")

    async def work(c):
        for attribute, attribute_name, value in integers:
            await write(c, attribute, attribute_name, value, value.value)
        # the destination last: a push it lets out already has the retries and delays given with it
        if to_text is not None:
            transport, address = destination if destination is not None else \
                ((await read_push_setup(c, obis, name)).transport, "")
            await write(c, *DESTINATION, Data.structure([Data.enum(transport), Data.octet_string(address.encode()),
                                                         Data.enum(0)]), destination_text(transport, address))
        return await read_push_setup(c, obis, name)

    view = _run_client(ctx, work)
    _echo(ctx, as_json, view.to_dict(), view.text())


@click.command("push-schedule")
@SETUP_ARGUMENT
@click.option("--every", "every", default=None, metavar="INTERVAL",
              help="Push every INTERVAL from midnight on (15m, 1h, 30s, 1d: it divides a day).")
@click.option("--at", "at", multiple=True, metavar="HH:MM[:SS]", help="Push daily at this time (repeat).")
@click.option("--off", is_flag=True, help="No scheduled push (an empty execution_time).")
@JSON_OPTION
@click.pass_context
def push_schedule(ctx: click.Context, setup_text: str, every: str | None, at: tuple[str, ...], off: bool,
                  as_json: bool) -> None:
    """Show when a push setup's push action scheduler (IC 22, type 5) pushes, or write its
    execution times (every day; a management client's --credentials) and show them.

    Interval 1, 2 and 3 (0-1/0-2/0-3:15.0.4.255, 32 times at most) and the consumer push
    (0-4:15.0.4.255, 60) have one."""
    from smartmeter.cli.main import _run_client

    obis, name = resolve_setup(setup_text)
    if obis not in SCHEDULERS:
        raise UsageProblem(f"{name} ({obis}) has no push action scheduler",
                           "interval1, interval2, interval3 and consumer are pushed on a schedule; "
                           "the others by their events or `client push`")
    scheduler, capacity = SCHEDULERS[obis]
    if sum((every is not None, bool(at), off)) > 1:
        raise UsageProblem("--every, --at and --off exclude each other", "give one of them, or none to show")
    times = every_times(every) if every is not None else [at_time(a) for a in at] if at else [] if off else None
    if times is not None and len(times) > capacity:
        raise UsageProblem(f"{len(times)} execution times; {scheduler} holds {capacity}",
                           "choose a longer interval")

    async def work(c):
        if times is not None:
            await _checked(c.set(scheduler, EXECUTION_TIME, execution_time_value(times), class_id=SCHEDULE_CLASS),
                           f"{scheduler}:{EXECUTION_TIME} execution_time ({len(times)} times)", MANAGEMENT_HINT)
        hint = "may this client read the schedulers? give --credentials of one that may"
        schedule_type = await _checked(c.get(scheduler, 3, class_id=SCHEDULE_CLASS), f"{scheduler}:3", hint)
        value = await _checked(c.get(scheduler, EXECUTION_TIME, class_id=SCHEDULE_CLASS),
                               f"{scheduler}:{EXECUTION_TIME}", hint)
        return schedule_type.value, execution_time_texts(value)

    schedule_type, shown = _run_client(ctx, work)
    header = f"{scheduler} push action scheduler of {name} ({obis}), type {schedule_type}: "
    header += f"{len(shown)} execution time(s), every day" if shown else "no execution time (not pushed on schedule)"
    _echo(ctx, as_json, {"scheduler": scheduler, "setup": obis, "name": name, "type": schedule_type,
                         "execution_time": shown},
          "\n".join([header, *(f"  {t['time']}  {t['date']}" for t in shown)]))


@click.command("push")
@SETUP_ARGUMENT
@click.pass_context
def push_now(ctx: click.Context, setup_text: str) -> None:
    """Push now: method 1 `push` of the setup (IC 40, integer 0). The meter sends it to the
    setup's destination in the background (retries, delays); the head-end shows what arrived."""
    from smartmeter.cli.main import _run_client
    from smartmeter.cosem.data import Data
    from smartmeter.dlms.client import AccessDenied

    obis, name = resolve_setup(setup_text)

    async def work(c):
        try:
            target = (await c.get(obis, DESTINATION[0], class_id=PUSH_SETUP_CLASS)).value
            where = destination_text(target[0].value, bytes(target[1].value).decode("ascii", "replace"))
        except AccessDenied:
            where = None  # a client that may push but not read the setup
        await _checked(c.action(obis, PUSH_METHOD, Data.integer(0), class_id=PUSH_SETUP_CLASS),
                       f"{obis} method {PUSH_METHOD} push", MANAGEMENT_HINT)
        return where

    where = _run_client(ctx, work)
    if where == NO_DESTINATION:
        click.echo(f"note: {name} has no destination: the meter does not send it "
                   f"(set one with `client push-setup {setup_text} --to ...`)", err=True)
    if ctx.obj["json"]:
        click.echo(json.dumps({"pushed": obis, "name": name, "destination": where}))
    else:
        click.echo(f"{obis} {name}: push started" + ("" if where is None else f" (to {where})"))


PUSH_COMMANDS = (push_setup, push_schedule, push_now)
