"""A head-end installs and reads submeters through a real meter process's M2 interface.

One meter process (`meter run --mbus-wired HOST:PORT --mbus-wireless HOST:PORT --speed 3600`: an
hour of meter time a second) and, in this process, the simulated submeters of
smartmeter.mbus.simulated: gas, water and heat as wired slaves on one TCP bus (every RSP_UD the
bus sends is recorded with the simulated time it was made at, so each value the meter shows
can be traced to what a submeter really said), and a water meter sending OMS mode 5 radio
frames as UDP datagrams.

Our client (smartmeter.hes.client, the management client) writes capture_definition and the
devices' addresses and calls slave_install on channels 1-2, gurux-dlms (management client) the
heat meter's address and slave_install on channel 3; gurux-dlms (data readout client) and
our client then read the M-Bus values with scaler, unit and capture time, and 24 hourly rows of
each channel's load profile. The gas meter is unplugged (it stops answering): its
communication error shows in the error and alarm registers and the M-Bus event log, and clears
when it returns. The encryption key status goes 0 -> 1 (set_encryption_key) -> 3 (transfer_key
acknowledged by the device, which unwraps the DSMR 4 wrap with its master key) on a wired
channel, and 0 -> 1 -> 4 (key in use: encrypted telegrams decrypted) on the wireless channel 4.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from gurux_dlms.objects import GXDLMSData, GXDLMSExtendedRegister, GXDLMSMBusClient, GXDLMSProfileGeneric

from event_log_peers import gurux_lan, gurux_read
from meter_control import meter_now, quiet
from meterproc import free_port, start_meter
from smartmeter.cosem.data import Data
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials
from smartmeter.mbus import simulated
from smartmeter.mbus.application import manufacturer_from_text, parse_telegram
from smartmeter.mbus.keytransfer import unwrap_dsmr4, wrap_dsmr4
from smartmeter.mbus.link import LongFrame, decode_frame

SPEED = 3600
ZONE = ZoneInfo("Europe/Berlin")  # the meter's and the simulated devices' zone
KINDS = ("gas", "water", "heat")
SEED = 11
# what the HES captures per device: (DIB, VIB) of the records the simulators send
CAPTURE = {"gas": [(b"\x0c", b"\x13")], "water": [(b"\x0c", b"\x13"), (b"\x0b", b"\x3b")],
           "heat": [(b"\x0c", b"\x06"), (b"\x0c", b"\x13")]}
# (scaler, DLMS unit) of capture element 1, from EN 13757-3's VIF table and the Blue Book units:
# VIF 13 = volume 10^-3 m3 (unit 13 m3), VIF 06 = energy 10^3 Wh (unit 30 Wh)
SCALER_UNIT = {"gas": [-3, 13], "water": [-3, 13], "heat": [3, 30]}
DEVICE_MASTER_KEY = bytes(range(16, 32))  # what the wired gas meter was made with (DSMR 4 default key)
NEW_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
RADIO_KEY = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")
ERROR_REGISTER = "0-0:97.97.0.255"
ALARM_REGISTER_1 = "0-0:97.98.0.255"
GAS_COMMUNICATION_BIT = 1 << 16  # alarms.toml: mbus_communication_error_1


class RecordingBus(simulated.SimulatedBus):
    """The simulated bus, recording each RSP_UD as (kind, the register values then, the device's
    time then); it also takes a DSMR 4 key transfer (SND_UD CI 51, 0D FD 19 + wrapped key)."""

    def __init__(self, meters) -> None:
        super().__init__(meters)
        self.answers: list[tuple[str, dict, dt.datetime]] = []
        self.keys: dict[str, bytes] = {}

    def receive(self, data: bytes, now: float) -> bytes:
        reply = super().receive(data, now)
        try:
            frame = decode_frame(reply) if reply[:1] == b"\x68" else None
        except Exception:  # noqa: BLE001 - a collision or nothing: not an answer to record
            frame = None
        if isinstance(frame, LongFrame) and frame.c & 0x0F == 0x08:
            header = parse_telegram(frame.ci, frame.data).header
            meter = next(s.meter for s in self.slaves if s.meter.identification == header.identification)
            self.answers.append((meter.kind, dataclasses.asdict(meter.reading(now)), meter.device_time(now)))
        return reply

    def _apply(self, slave, ci: int, data: bytes, now: float) -> bool:
        if ci == 0x51 and data[:3] == b"\x0d\xfd\x19" and len(data) == 4 + data[3]:
            self.keys[slave.meter.kind] = unwrap_dsmr4(DEVICE_MASTER_KEY, data[4:])
            return True
        return super()._apply(slave, ci, data, now)


class SubmeterWorld:
    """The simulated devices on their own event loop thread."""

    def __init__(self, wireless_to: tuple[str, int]) -> None:
        self.clock = simulated.SimulatedClock(time.time(), SPEED)
        self.meters = {kind: simulated.SimulatedSubmeter(kind, seed=SEED, time_zone="Europe/Berlin") for kind in KINDS}
        self.radio = simulated.SimulatedSubmeter("water", seed=SEED + 1000, time_zone="Europe/Berlin")
        self.bus = RecordingBus(self.meters.values())
        self.loop = asyncio.new_event_loop()
        self.port: list[int] = []
        self.wireless_to = wireless_to
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.port:
            assert time.monotonic() < deadline, "the simulated bus did not start"
            time.sleep(0.02)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        sender = simulated.WirelessSender(self.radio, mode=5, key=RADIO_KEY, interval=0.3)

        async def devices():
            await asyncio.gather(simulated.serve_bus(self.bus, "127.0.0.1", 0, self.clock.now, started=self.port.append),
                                 sender.run(self.wireless_to, self.clock.now))

        self.main = self.loop.create_task(devices())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.main)
        self.loop.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.main.cancel)
        self.thread.join(10)


def identification(meter: simulated.SimulatedSubmeter) -> int:
    """IC 72 attribute 6: the 8 BCD digits read as hex digits (DSMR/IDIS)."""
    return int(f"{meter.identification:08d}", 16)


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Management:
    """Our client as the management client, one association per call."""

    def __init__(self, meter) -> None:
        self.meter = meter
        self.credentials = load_credentials(meter.data_dir / "credentials" / "management.json")

    def run(self, steps):
        async def go():
            link = WrapperLink("127.0.0.1", self.meter.wrapper_port, self.credentials.client_sap,
                               self.credentials.server_sap, 20)
            async with MeterClient(link, security=self.credentials.security) as client:
                return await steps(client)
        return asyncio.run(go())


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    radio_port = free_port()
    world = SubmeterWorld(("127.0.0.1", radio_port))
    meter = start_meter(tmp_path_factory.mktemp("m2") / "meter", "--speed", str(SPEED),
                        "--mbus-wired", f"127.0.0.1:{world.port[0]}", "--mbus-wireless", f"127.0.0.1:{radio_port}")
    management = Management(meter)
    manufacturer = manufacturer_from_text(simulated.SIMULATED_MANUFACTURER)

    async def install(client):
        for x, kind in enumerate(KINDS[:2], start=1):
            ln = f"0-{x}:24.1.0.255"
            await client.set(ln, 3, Data.array([Data.structure([Data.octet_string(d), Data.octet_string(v)])
                                                for d, v in CAPTURE[kind]]))
            await client.set(ln, 6, Data.double_long_unsigned(identification(world.meters[kind])))
            await client.set(ln, 7, Data.long_unsigned(manufacturer))
            await client.action(ln, 1, Data.integer(0))  # slave_install, as Gurux sends it
        # channel 4: the radio water meter, bound by its whole address and key (mode 5)
        radio, ln = world.radio, "0-4:24.1.0.255"
        await client.set(ln, 2, Data.octet_string(bytes([0, 1, 24, 6, 0, 255])))
        await client.set(ln, 3, Data.array([Data.structure([Data.octet_string(b"\x0c"), Data.octet_string(b"\x13")])]))
        for attribute, value in ((6, Data.double_long_unsigned(identification(radio))),
                                 (7, Data.long_unsigned(manufacturer)), (8, Data.unsigned(radio.version)),
                                 (9, Data.unsigned(radio.medium))):
            await client.set(ln, attribute, value)
        await client.action(ln, 7, Data.octet_string(RADIO_KEY))
        return int(meter_now(meter))

    def gurux_installs_heat():
        # gurux as the management client: attributes 6 and 7, then slave_install (integer 0, as
        # GXDLMSMBusClient sends it); no capture_definition (gurux encodes its elements as
        # {unsigned, octet-string}, not the Blue Book's {octet-string, octet-string}), so the
        # meter captures the heat meter's first current values (energy first)
        # one management client, two programs: gurux takes counters from our client's counter file
        counters = management.credentials.security.invocation_counter
        first = counters.reserve()
        peer = gurux_lan(meter, "management", first)
        quiet(peer.associate)
        try:
            channel = GXDLMSMBusClient("0.3.24.1.0.255")
            channel.identificationNumber = identification(world.meters["heat"])
            channel.manufacturerID = manufacturer
            for attribute in (6, 7):
                assert quiet(peer.transfer, peer.client.write(channel, attribute)).error == 0
            assert quiet(peer.transfer, channel.slaveInstall(peer.client)).error == 0
        finally:
            quiet(peer.close)
            counters.advance_to(peer.client.ciphering.invocationCounter + 1)

    try:
        installed_at = management.run(install)
        gurux_installs_heat()
        yield meter, world, management, installed_at
    finally:
        meter.stop()
        world.close()


def test_installed_values_have_scaler_unit_and_the_submeters_time(scenario):
    meter, world, management, _ = scenario

    def installed():
        async def steps(client):
            return [(await client.get(f"0-{x}:24.2.1.255", 2)).value for x in (1, 2, 3)]
        return all(v is not None for v in management.run(steps))

    wait_for(installed, "three installed channels with values")
    peer = gurux_lan(meter, "data_readout", 1)
    quiet(peer.associate)
    try:
        for x, kind in enumerate(KINDS, start=1):
            value = GXDLMSExtendedRegister(f"0.{x}.24.2.1.255")
            scaler_unit = gurux_read(peer, value, 3)
            number = gurux_read(peer, value, 2)
            capture_time = gurux_read(peer, value, 5)
            assert scaler_unit == SCALER_UNIT[kind]
            # the value and the time are one answer the device really sent (type F: whole minutes)
            register = "energy_kwh" if kind == "heat" else "volume_l"
            said = [(r[register], t.replace(second=0)) for k, r, t in world.bus.answers if k == kind]
            device_time = dt.datetime(int.from_bytes(capture_time[0:2], "big"), capture_time[2], capture_time[3],
                                      capture_time[5], capture_time[6], capture_time[7], tzinfo=ZONE)
            assert (number, device_time) in [(v, t.astimezone(ZONE)) for v, t in said], (kind, number, device_time)
            client = GXDLMSMBusClient(f"0.{x}.24.1.0.255")
            assert gurux_read(peer, client, 5) == x  # primary addresses assigned 1, 2, 3
            assert gurux_read(peer, client, 9) == simulated.MEDIUM[kind]
            device_id_1 = gurux_read(peer, GXDLMSData(f"0.{x}.96.1.0.255"), 2)
            assert device_id_1 == str(world.meters[kind].fabrication_number).encode()
    finally:
        quiet(peer.close)


def test_24_hourly_profile_rows_per_channel(scenario):
    meter, world, management, installed_at = scenario
    async def entries(client):
        return min([(await client.get(f"0-{x}:24.3.0.255", 7)).value for x in (1, 2, 3)])

    wait_for(lambda: management.run(entries) >= 24, "24 hourly rows in each channel's profile", timeout=180)
    assert meter_now(meter) >= installed_at + 24 * 3600  # no row before the installation
    peer = gurux_lan(meter, "data_readout", 1000)
    quiet(peer.associate)
    try:
        for x, kind in enumerate(KINDS, start=1):
            profile = GXDLMSProfileGeneric(f"0.{x}.24.3.0.255")
            columns = gurux_read(peer, profile, 3)
            assert [c[1] for c in columns] == [bytes([0, 0, 1, 0, 0, 255]), bytes([0, x, 96, 10, 3, 255]),
                                               *(bytes([0, x, 24, 2, n, 255]) for n in (1, 2, 3, 4))]
            assert gurux_read(peer, profile, 4) == 3600
            rows = gurux_read(peer, profile, 2)
            times = [dt.datetime(int.from_bytes(r[0][0:2], "big"), r[0][2], r[0][3], r[0][5], r[0][6],
                                 tzinfo=ZONE).timestamp() for r in rows]
            assert len(rows) >= 24
            assert all(b - a == 3600 for a, b in zip(times, times[1:])), "one row an hour"
            register = "energy_kwh" if kind == "heat" else "volume_l"
            said = {r[register] for k, r, _t in world.bus.answers if k == kind}
            for row in rows[-24:]:
                assert row[2] in said  # every captured value is one the device sent
            values = [row[2] for row in rows]
            assert values == sorted(values)  # registers never go back
    finally:
        quiet(peer.close)

    async def read(client):
        _columns, rows = await client.profile("0-2:24.3.0.255", rows=True)
        return rows
    ours = management.run(read)
    assert len(ours) >= 24 and ours[-24][2] in {r["volume_l"] for k, r, _t in world.bus.answers if k == "water"}


def test_a_removed_gas_meter_raises_its_alarm_and_event_and_recovers(scenario):
    meter, world, management, _ = scenario

    async def registers(client):
        return ((await client.get(ERROR_REGISTER)).value, (await client.get(ALARM_REGISTER_1)).value,
                [row[1] for row in (await client.profile("0-0:99.98.3.255", rows=True))[1]])

    world.meters["gas"].faults.add("silent")
    error, alarm, codes = wait_for(lambda: (lambda r: r if r[0] & GAS_COMMUNICATION_BIT else None)(
        management.run(registers)), "the gas meter's communication error")
    assert alarm & GAS_COMMUNICATION_BIT and 100 in codes
    world.meters["gas"].faults.discard("silent")
    error, alarm, codes = wait_for(lambda: (lambda r: r if not r[0] & GAS_COMMUNICATION_BIT else None)(
        management.run(registers)), "the gas meter back")
    assert codes[codes.index(100):].count(105) == 1  # communication ok after the error
    assert alarm & GAS_COMMUNICATION_BIT  # the alarm register keeps it until the head-end clears it


def test_key_status_goes_through_its_states(scenario):
    meter, world, management, _ = scenario

    async def status(client, x):
        return (await client.get(f"0-{x}:24.1.0.255", 14)).value

    async def set_and_transfer(client):
        seen = [await status(client, 1)]
        await client.action("0-1:24.1.0.255", 7, Data.octet_string(NEW_KEY))
        seen.append(await status(client, 1))
        await client.action("0-1:24.1.0.255", 8, Data.octet_string(wrap_dsmr4(DEVICE_MASTER_KEY, NEW_KEY)))
        return seen

    assert management.run(set_and_transfer) == [0, 1]
    wait_for(lambda: management.run(lambda c: status(c, 1)) == 3, "key set and transferred")
    assert world.bus.keys["gas"] == NEW_KEY  # the device unwrapped the very key
    # the wireless channel: key set at installation; the first decrypted telegram puts it in use
    wait_for(lambda: management.run(lambda c: status(c, 4)) == 4, "the radio key in use")

    async def radio_value(client):
        return (await client.get("0-4:24.2.1.255", 2)).value, (await client.get("0-4:24.2.1.255", 3)).value
    value, scaler_unit = management.run(radio_value)
    assert scaler_unit[0].value == -3 and scaler_unit[1].value == 13
    # what the radio meter's register held at some moment while it sent
    assert world.radio.reading(world.clock.start).volume_l <= value <= world.radio.reading(world.clock.now()).volume_l


def test_kill_9_loses_no_channel_key_value_or_row(scenario):
    """A power failure of the whole meter (kill -9) keeps what the M2 interface had committed:
    installed channels and their addresses, the key status, the values and the profile rows.
    Read with gurux before and after (a fresh invocation counter well above anything the meter
    may have reserved across the kill)."""
    meter, world, _management, _ = scenario

    def state(process, invocation_counter):
        peer = gurux_lan(process, "data_readout", invocation_counter)
        quiet(peer.associate)
        try:
            channels = [(gurux_read(peer, GXDLMSMBusClient(f"0.{x}.24.1.0.255"), 5),
                         gurux_read(peer, GXDLMSMBusClient(f"0.{x}.24.1.0.255"), 14)) for x in (1, 2, 3, 4)]
            rows = [gurux_read(peer, GXDLMSProfileGeneric(f"0.{x}.24.3.0.255"), 7) for x in (1, 2, 3)]
            events = gurux_read(peer, GXDLMSProfileGeneric("0.0.99.98.3.255"), 7)
            water = gurux_read(peer, GXDLMSExtendedRegister("0.2.24.2.1.255"), 2)
            return channels, rows, events, water
        finally:
            quiet(peer.close)

    world.meters["water"].faults.add("silent")  # what the meter shows of channel 2 now comes from its store
    before_channels, before_rows, before_events, water_before = state(meter, 2_000_000)
    meter.power_failure()
    again = start_meter(meter.data_dir, "--speed", str(SPEED), "--mbus-wired", f"127.0.0.1:{world.port[0]}")
    try:
        channels, rows, events, water = state(again, 4_000_000)
        assert channels == before_channels  # primary addresses 1, 2, 3 (4: wireless, 0) and key statuses
        assert [c[1] for c in channels[:1]] == [3]  # the transferred key of channel 1 is still "set and transferred"
        assert all(r >= b for r, b in zip(rows, before_rows)) and events >= before_events
        assert water == water_before
    finally:
        again.stop()
        world.meters["water"].faults.discard("silent")
