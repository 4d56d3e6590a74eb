"""`smartmeter client mbus ...`: a meter's M-Bus submeters (M2, companion §4.3 and §6), as a
head-end installs, reads and keys them through the M-Bus client objects (IC 72 v1,
0-x:24.1.0.255, channels 1..4), their values (IC 4, 0-x:24.2.n.255) and valves (IC 70,
0-x:24.4.0.255):

    smartmeter client --credentials FILE mbus list
    smartmeter client --credentials FILE mbus install CHANNEL --id 12345678 --manufacturer SIM
                                                    --version 1 --medium gas [--primary-address A]
                                                    [--wireless --key HEX]
    smartmeter client --credentials FILE mbus read CHANNEL
    smartmeter client --credentials FILE mbus remove CHANNEL
    smartmeter client --credentials FILE mbus key CHANNEL (--key HEX | --clear)
    smartmeter client --credentials FILE mbus transfer-key CHANNEL --key HEX --master-key HEX
                                                    [--style dsmr4|smr5 --counter N]
    smartmeter client --credentials FILE mbus sync-clock CHANNEL
    smartmeter client --credentials FILE mbus valve CHANNEL open|close

The group is attached to `client` by smartmeter.cli.main; the association, OBIS parsing and
result names come from there when a command runs. Writing and methods need a management
client; `list` works for every client that may read the objects (data readout, maintenance).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import click

from smartmeter.cli import UsageProblem

__all__ = ["mbus_group"]

MBUS_CLIENT, MBUS_VALUE, DATA, DISCONNECT_CONTROL = 72, 4, 1, 70
CHANNELS = (1, 2, 3, 4)
WIRED_PORT, WIRELESS_PORT = "0-0:24.6.0.255", "0-1:24.6.0.255"
# IC 72 v1 attributes and methods (Blue Book 4.8.3)
PORT, CAPTURE_DEFINITION, PRIMARY_ADDRESS = 2, 3, 5
IDENTIFICATION, MANUFACTURER, VERSION, DEVICE_TYPE = 6, 7, 8, 9
ACCESS_NUMBER, STATUS, CONFIGURATION, KEY_STATUS = 10, 11, 13, 14
SLAVE_INSTALL, SLAVE_DEINSTALL, CAPTURE, SYNCHRONIZE_CLOCK = 1, 2, 3, 5
SET_ENCRYPTION_KEY, TRANSFER_KEY = 7, 8
REMOTE_DISCONNECT, REMOTE_RECONNECT = 1, 2  # IC 70: the valve closes / opens
KEY_STATUS_NAMES = {0: "no key", 1: "key set", 2: "key transferred", 3: "key set and transferred", 4: "key in use"}
# EN 13757-3 device types (medium) a user names
MEDIA = {"gas": 0x03, "water": 0x07, "heat": 0x04, "warm-water": 0x06, "electricity": 0x02,
         "heat-inlet": 0x0C, "cooling": 0x0A, "heat-cost-allocator": 0x08}
MANAGEMENT_HINT = "may this client do it? give a management client's --credentials"
OTHER_REASON_HINT = "`smartmeter client mbus list --all` shows the channel: is it free, or is the device on another?"
ERROR_REGISTER = "0-0:97.97.0.255"
COMMUNICATION_ERROR_BIT = 16  # + channel - 1: M-Bus communication error, channel x (alarms.toml)

CHANNEL_ARGUMENT = click.argument("channel", type=click.IntRange(1, 4), metavar="CHANNEL")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _client_obis(channel: int) -> str:
    return f"0-{channel}:24.1.0.255"


def _key_option(text: str, option: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise UsageProblem(f"{option} must be 16 bytes in hex (32 hex digits), not {text!r}",
                           f"e.g. {option} 000102030405060708090A0B0C0D0E0F")
    return key


def _identification(text: str) -> int:
    """The 8 digits of an M-Bus identification number -> IC 72 attribute 6, which holds the BCD
    digits read as hex (12345678 -> 0x12345678, as the device sends them)."""
    if len(text) != 8 or not text.isdigit():
        raise UsageProblem(f"--id {text!r} is not an M-Bus identification number",
                           "give its 8 decimal digits as on the device's label, e.g. --id 12345678")
    return int(text, 16)


def _manufacturer(text: str) -> int:
    from smartmeter.mbus.application import manufacturer_from_text

    try:
        return manufacturer_from_text(text.upper())
    except (ValueError, KeyError):
        raise UsageProblem(f"--manufacturer {text!r} is not an M-Bus manufacturer code",
                           "give its three letters (FLAG code, e.g. ELS, KAM, SIM) or a number") from None


def _manufacturer_option(text: str) -> int:
    if text.isdigit():
        value = int(text)
        if value > 0xFFFF:
            raise UsageProblem(f"--manufacturer {text} is more than 16 bits", "give the three letters, e.g. ELS")
        return value
    return _manufacturer(text)


def _medium(text: str) -> int:
    if text.lower() in MEDIA:
        return MEDIA[text.lower()]
    if text.isdigit() and int(text) <= 255:
        return int(text)
    raise UsageProblem(f"--medium {text!r} is not a device type",
                       "name one of " + ", ".join(MEDIA) + ", or give the EN 13757-3 number (0..255)")


# ----------------------------------------------------------------------------- reading a channel


@dataclass
class ValueView:
    obis: str
    value: object
    scaler: int | None
    unit: int | None
    status: object
    capture_time: str | None

    def text(self) -> str:
        from smartmeter.hes.client import unit_name

        if self.value is None:
            return f"    {self.obis}  (no value yet)"
        shown = self.value
        if isinstance(self.value, int) and self.scaler is not None:
            shown = _scaled(self.value, self.scaler)
        unit = "" if self.unit in (None, 255) else " " + unit_name(self.unit)
        when = f"  at {self.capture_time}" if self.capture_time else ""
        return f"    {self.obis}  {shown}{unit}{when}"


@dataclass
class ChannelView:
    channel: int
    port: str
    primary_address: int
    identification_number: str
    manufacturer: str
    version: int
    device_type: int
    access_number: int
    status: int
    configuration: int
    key_status: str
    device_id_1: str
    communication: str  # "ok", "no answer" (the channel's communication error bit) or "not read yet"
    captured: int  # elements of the capture definition: values 1..captured are in use
    values: list[ValueView]

    @property
    def installed(self) -> bool:
        return self.identification_number != "00000000" or self.primary_address != 0

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        from smartmeter.mbus.application import MEDIUM_NAMES

        medium = MEDIUM_NAMES.get(self.device_type, f"device type {self.device_type}")
        kind = "wireless" if self.port == WIRELESS_PORT else "wired" if self.port == WIRED_PORT else self.port or "no port"
        head = (f"channel {self.channel} ({_client_obis(self.channel)}): {kind}, "
                f"id {self.identification_number} {self.manufacturer} version {self.version} {medium}")
        lines = [head,
                 f"  primary address {self.primary_address}, access number {self.access_number}, "
                 f"status 0x{self.status:02X}, key: {self.key_status}"
                 + (f", fabrication number {self.device_id_1}" if self.device_id_1 else "")]
        if self.communication != "ok":
            lines.append(f"  {self.communication}")
        lines += [v.text() for n, v in enumerate(self.values, start=1) if n <= self.captured or v.value is not None]
        return "\n".join(lines)


def _scaled(value: int, scaler: int) -> str:
    if scaler >= 0:
        return str(value * 10 ** scaler)
    digits = -scaler
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10 ** digits)
    return f"{sign}{whole}.{fraction:0{digits}d}"


def _plain(value):
    from smartmeter.cli.format import date_time_text

    if isinstance(value, (bytes, bytearray)):
        text = date_time_text(bytes(value))
        if text is not None:
            return text
        try:
            return bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return bytes(value).hex()
    return value


async def read_channel(c, channel: int) -> ChannelView:
    """Every attribute a head-end shows of one channel, in one association."""
    from smartmeter.cosem.obis import Obis
    from smartmeter.hes.client import parse_scaler_unit
    from smartmeter.mbus.application import manufacturer_to_text

    obis = _client_obis(channel)

    async def attribute(n: int):
        return (await _checked(c.get(obis, n, class_id=MBUS_CLIENT), f"{obis}:{n}",
                               "may this client read M-Bus clients? give --credentials of one that may")).value

    port = await attribute(PORT)
    elements = len(await attribute(CAPTURE_DEFINITION))
    numbers = {n: await attribute(n) for n in (PRIMARY_ADDRESS, IDENTIFICATION, MANUFACTURER, VERSION, DEVICE_TYPE,
                                               ACCESS_NUMBER, STATUS, CONFIGURATION, KEY_STATUS)}
    device_id = (await c.get(f"0-{channel}:96.1.0.255", 2, class_id=DATA)).value
    values = []
    for n in (1, 2, 3, 4):
        value_obis = f"0-{channel}:24.2.{n}.255"
        value = await c.get(value_obis, 2, class_id=MBUS_VALUE)
        scaler_unit = parse_scaler_unit(await c.get(value_obis, 3, class_id=MBUS_VALUE))
        status = (await c.get(value_obis, 4, class_id=MBUS_VALUE)).value
        capture_time = _plain((await c.get(value_obis, 5, class_id=MBUS_VALUE)).value)
        empty = value.value is None or capture_time is None
        values.append(ValueView(value_obis, None if value.value is None else _plain(value.value),
                                scaler_unit[0] if scaler_unit else None, scaler_unit[1] if scaler_unit else None,
                                _plain(status), None if empty or not isinstance(capture_time, str) else capture_time))
    manufacturer = numbers[MANUFACTURER]
    errors = (await c.get(ERROR_REGISTER, 2, class_id=DATA)).value
    if isinstance(errors, int) and errors >> (COMMUNICATION_ERROR_BIT + channel - 1) & 1:
        communication = "no answer: the device does not answer (communication error)"
    elif all(v.value is None for v in values) and numbers[ACCESS_NUMBER] == 0:
        communication = "not read yet: waiting for the device's first answer"
    else:
        communication = "ok"
    return ChannelView(
        channel, str(Obis.from_bytes(bytes(port))) if len(bytes(port)) == 6 else bytes(port).hex(),
        numbers[PRIMARY_ADDRESS], f"{numbers[IDENTIFICATION]:08X}",
        manufacturer_to_text(manufacturer) if manufacturer else "---", numbers[VERSION], numbers[DEVICE_TYPE],
        numbers[ACCESS_NUMBER], numbers[STATUS], numbers[CONFIGURATION],
        KEY_STATUS_NAMES.get(numbers[KEY_STATUS], f"status {numbers[KEY_STATUS]}"),
        _plain(device_id) if device_id else "", communication, elements, values)


async def _checked(request, what: str, hint: str = OTHER_REASON_HINT):
    """A refusal of this client's rights suggests other credentials; any other, `hint`."""
    from smartmeter.cli.push import _checked as checked

    return await checked(request, what, hint, MANAGEMENT_HINT)


async def _set_key(c, obis: str, key: bytes) -> None:
    """IC 72 method 7 set_encryption_key: the key the channel's device encrypts with (empty: none)."""
    from smartmeter.cosem.data import Data

    await _checked(c.action(obis, SET_ENCRYPTION_KEY, Data.octet_string(key), class_id=MBUS_CLIENT),
                   f"{obis} set_encryption_key")


def _show(ctx: click.Context, as_json: bool, views: list[ChannelView]) -> None:
    if as_json or ctx.obj["json"]:
        click.echo(json.dumps([v.to_dict() for v in views], default=str))
    else:
        click.echo("\n".join(v.text() for v in views))


# ----------------------------------------------------------------------------- commands


@click.group("mbus")
def mbus_group() -> None:
    """The meter's M-Bus submeters (gas, water, heat) on channels 1..4: install, read, key, valve."""


@mbus_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the channels with no device.")
@JSON_OPTION
@click.pass_context
def mbus_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Show the installed submeters: identity, status, key status and values 1..4."""
    from smartmeter.cli.main import _run_client

    async def work(c):
        return [await read_channel(c, n) for n in CHANNELS]

    views = _run_client(ctx, work)
    shown = views if show_all else [v for v in views if v.installed]
    if not shown and not (as_json or ctx.obj["json"]):
        click.echo("no M-Bus device installed (install one with `smartmeter client mbus install`)")
        return
    _show(ctx, as_json, shown)


@mbus_group.command("install")
@CHANNEL_ARGUMENT
@click.option("--id", "identification", required=True, metavar="DIGITS",
              help="The device's identification number (8 digits, as on its label).")
@click.option("--manufacturer", required=True, help="Its manufacturer (three letters, e.g. ELS).")
@click.option("--version", type=click.IntRange(0, 255), required=True, help="Its version (generation).")
@click.option("--medium", required=True, help="Its device type: gas, water, heat, ... or a number.")
@click.option("--primary-address", type=click.IntRange(0, 250), default=0, show_default=True,
              help="Wired: the primary address to give it (0: the meter picks a free one).")
@click.option("--wireless", is_flag=True, help="A wireless device: bind it by address and --key (it only sends).")
@click.option("--key", "key_text", default=None, metavar="HEX",
              help="Its encryption key (16 bytes in hex): the key it encrypts its telegrams with.")
@JSON_OPTION
@click.pass_context
def mbus_install(ctx: click.Context, channel: int, identification: str, manufacturer: str, version: int,
                 medium: str, primary_address: int, wireless: bool, key_text: str | None, as_json: bool) -> None:
    """Install a submeter on CHANNEL: write its address (IC 72 attributes 2 and 5..9), its key if
    given (method 7), then slave_install (method 1; a wired device is found by its secondary address
    and given its primary address; a wireless one is bound and waits for its telegrams)."""
    from smartmeter.cli.main import _run_client
    from smartmeter.cosem.data import Data
    from smartmeter.cosem.obis import Obis

    fields = [(IDENTIFICATION, "identification_number", Data.double_long_unsigned(_identification(identification))),
              (MANUFACTURER, "manufacturer_id", Data.long_unsigned(_manufacturer_option(manufacturer))),
              (VERSION, "version", Data.unsigned(version)), (DEVICE_TYPE, "device_type", Data.unsigned(_medium(medium)))]
    key = _key_option(key_text, "--key") if key_text is not None else None
    if wireless and key is None:
        raise UsageProblem("a wireless device is bound by its address and its key", "give --key HEX")
    obis = _client_obis(channel)
    port = WIRELESS_PORT if wireless else WIRED_PORT

    async def work(c):
        await _checked(c.set(obis, PORT, Data.octet_string(Obis.parse(port).to_bytes()), class_id=MBUS_CLIENT),
                       f"{obis}:{PORT} mbus_port_reference {port}")
        if not wireless:
            await _checked(c.set(obis, PRIMARY_ADDRESS, Data.unsigned(primary_address), class_id=MBUS_CLIENT),
                           f"{obis}:{PRIMARY_ADDRESS} primary_address {primary_address}")
        for attribute, name, value in fields:
            await _checked(c.set(obis, attribute, value, class_id=MBUS_CLIENT), f"{obis}:{attribute} {name}")
        if key is not None:
            await _set_key(c, obis, key)
        if not wireless:  # a wireless channel's install answers other-reason (companion §4.3): binding is enough
            await _checked(c.action(obis, SLAVE_INSTALL, Data.unsigned(primary_address), class_id=MBUS_CLIENT),
                           f"{obis} slave_install")
        return await read_channel(c, channel)

    _show(ctx, as_json, [_run_client(ctx, work)])


def _method_command(name: str, method: int, help_text: str):
    @mbus_group.command(name, help=help_text)
    @CHANNEL_ARGUMENT
    @JSON_OPTION
    @click.pass_context
    def command(ctx: click.Context, channel: int, as_json: bool) -> None:
        from smartmeter.cli.main import _run_client
        from smartmeter.cosem.data import Data

        obis = _client_obis(channel)

        async def work(c):
            await _checked(c.action(obis, method, Data.integer(0), class_id=MBUS_CLIENT), f"{obis} {name}")
            return await read_channel(c, channel)

        _show(ctx, as_json, [_run_client(ctx, work)])

    return command


_method_command("read", CAPTURE, "Read CHANNEL's device now (capture, method 3) and show its values "
                                 "(the meter reads at once; values follow its answer).")
_method_command("remove", SLAVE_DEINSTALL, "De-install CHANNEL's device (slave_deinstall, method 2): the channel "
                                           "forgets it and reads nothing more.")
_method_command("sync-clock", SYNCHRONIZE_CLOCK, "Set CHANNEL's device clock to the meter's (synchronize_clock, "
                                                 "method 5); the meter also does it daily.")


@mbus_group.command("key")
@CHANNEL_ARGUMENT
@click.option("--key", "key_text", default=None, metavar="HEX", help="The device's key (16 bytes in hex).")
@click.option("--clear", is_flag=True, help="No key: the channel takes no encrypted telegrams.")
@JSON_OPTION
@click.pass_context
def mbus_key(ctx: click.Context, channel: int, key_text: str | None, clear: bool, as_json: bool) -> None:
    """Tell the meter the key CHANNEL's device encrypts with (set_encryption_key, method 7)."""
    from smartmeter.cli.main import _run_client

    if clear == (key_text is not None):
        raise UsageProblem("give either --key HEX or --clear", "e.g. --key 000102030405060708090A0B0C0D0E0F")
    key = b"" if clear else _key_option(key_text, "--key")
    obis = _client_obis(channel)

    async def work(c):
        await _set_key(c, obis, key)
        return await read_channel(c, channel)

    _show(ctx, as_json, [_run_client(ctx, work)])


@mbus_group.command("transfer-key")
@CHANNEL_ARGUMENT
@click.option("--key", "key_text", required=True, metavar="HEX", help="The device's new key (16 bytes in hex).")
@click.option("--master-key", "master_text", required=True, metavar="HEX",
              help="The device's master (default) key, which the new key is wrapped under.")
@click.option("--style", type=click.Choice(["dsmr4", "smr5"]), default="dsmr4", show_default=True,
              help="The wrap the device expects: DSMR 4 (AES-CBC) or SMR 5 (AES-GCM with a key change counter).")
@click.option("--counter", type=click.IntRange(0, 0xFFFFFFFF), default=None,
              help="SMR 5: the key change counter, above the device's last one.")
@JSON_OPTION
@click.pass_context
def mbus_transfer_key(ctx: click.Context, channel: int, key_text: str, master_text: str, style: str,
                      counter: int | None, as_json: bool) -> None:
    """Give CHANNEL's device a new key: the meter learns it (method 7), then passes it wrapped under
    the device's master key to the device (transfer_key, method 8); the key status shows the progress."""
    from smartmeter.cli.main import _run_client
    from smartmeter.cosem.data import Data
    from smartmeter.mbus.keytransfer import KeyTransferStyle, wrap_key
    from smartmeter.mbus.wireless import MeterAddress

    key, master = _key_option(key_text, "--key"), _key_option(master_text, "--master-key")
    if style == "smr5" and counter is None:
        raise UsageProblem("an SMR 5 key transfer needs the key change counter", "give --counter N")
    obis = _client_obis(channel)

    async def work(c):
        wrap_style = KeyTransferStyle(style)
        address = None
        if wrap_style is KeyTransferStyle.SMR5:
            view = await read_channel(c, channel)
            address = MeterAddress(view.manufacturer, view.identification_number, view.version, view.device_type)
        wrapped = wrap_key(wrap_style, master, key, address=address, key_change_counter=counter)
        await _set_key(c, obis, key)
        await _checked(c.action(obis, TRANSFER_KEY, Data.octet_string(wrapped), class_id=MBUS_CLIENT),
                       f"{obis} transfer_key")
        return await read_channel(c, channel)

    _show(ctx, as_json, [_run_client(ctx, work)])


@mbus_group.command("valve")
@CHANNEL_ARGUMENT
@click.argument("state", type=click.Choice(["open", "close"]))
@click.pass_context
def mbus_valve(ctx: click.Context, channel: int, state: str) -> None:
    """Open or close CHANNEL's valve (gas, water): the disconnect control 0-x:24.4.0.255 (IC 70)."""
    from smartmeter.cli.main import _run_client
    from smartmeter.cosem.data import Data

    obis = f"0-{channel}:24.4.0.255"
    method = REMOTE_RECONNECT if state == "open" else REMOTE_DISCONNECT

    async def work(c):
        await _checked(c.action(obis, method, Data.integer(0), class_id=DISCONNECT_CONTROL), f"{obis} valve {state}")
        output = await c.get(obis, 2, class_id=DISCONNECT_CONTROL)
        control_state = await c.get(obis, 3, class_id=DISCONNECT_CONTROL)
        return output.value, control_state.value

    output, control_state = _run_client(ctx, work)
    names = {0: "disconnected", 1: "connected", 2: "ready for reconnection"}
    click.echo(f"{obis}: valve {'open' if output else 'closed'} ({names.get(control_state, control_state)})")
