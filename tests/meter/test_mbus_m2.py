"""The M2 engine (smartmeter.meter.mbus_m2): installation and primary addresses, reads on the
meter's clock into the M-Bus values by capture_definition, the hourly load profile with its
status, communication error / recovery with alarm and event, a replaced device (fraud), the
key status machine, clock sync every 24 h, wireless telegrams, and that all of it survives a
restart of the store (a kill -9 loses nothing that was committed)."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

from smartmeter.cosem.data import Data
from smartmeter.meter import mbus_m2
from smartmeter.meter.events import EventRecorder, EventTable
from smartmeter.meter.mbus_m2 import (
    BusRequest, ChannelRefused, Identity, MbusM2, MbusM2Driver, NoAnswer, SubmeterRecord, SubmeterTelegram,
    WIRELESS_PORT, encode_record_value,
)
from smartmeter.meter.schedule import Passage

T0 = 1773144000  # 2026-03-10 12:00:00 UTC, on the hour
GAS_ID = Identity(0x12345678, 0x1C08, 0x42, 0x03)  # manufacturer "GWF" is not needed: any 15-bit code
WATER_ID = Identity(0x87654321, 0x1C08, 0x01, 0x07)
VOLUME_DIB, VOLUME_VIB = b"\x0c", b"\x13"  # 8-digit BCD, volume in 0.001 m3 (EN 13757-3 Table 10)
DLMS_M3 = 13


def telegram(identity: Identity, volume: int, *, status: int = 0, access: int = 1, device_time=None,
             encrypted=False) -> SubmeterTelegram:
    return SubmeterTelegram(identity.identification_number, identity.manufacturer_id, identity.version,
                            identity.device_type, access, status, 0,
                            (SubmeterRecord(VOLUME_DIB, VOLUME_VIB, volume, -3, DLMS_M3),
                             SubmeterRecord(b"\x0c", b"\x78", 12345678)),
                            device_time, encrypted)


class Clock:
    def __init__(self) -> None:
        self.t = float(T0)

    def __call__(self) -> float:
        return self.t


class Alarms:
    def __init__(self) -> None:
        self.active: dict[str, bool] = {}
        self.raised: list[str] = []

    def condition(self, flag: str, active: bool) -> None:
        self.active[flag] = active

    def raise_flag(self, flag: str) -> None:
        self.raised.append(flag)


@pytest.fixture
def setup(tmp_path):
    clock, alarms = Clock(), Alarms()
    recorder = EventRecorder(tmp_path, EventTable.load(), clock)

    def make() -> MbusM2:
        return MbusM2(recorder, clock, alarm=alarms.condition, raise_alarm=alarms.raise_flag)

    yield make, clock, alarms, recorder, tmp_path
    recorder.close()


def codes(engine: MbusM2) -> list[int]:
    return [code for _t, code in engine.event_rows(None, None)]


def install_gas(engine: MbusM2, clock: Clock, channel: int = 1, address: int = 0) -> BusRequest:
    engine.set_capture_definition(channel, [(VOLUME_DIB, VOLUME_VIB)])
    for name in ("identification_number", "manufacturer_id", "version", "device_type"):
        engine.set_identity_field(channel, name, getattr(GAS_ID, name))
    engine.install(channel, address)
    [request] = engine.requests(clock())
    assert request.kind == "install" and request.identity == GAS_ID
    engine.answered(request, telegram(GAS_ID, 1000), clock())
    return request


def test_install_assigns_the_first_free_primary_address_and_reads_the_values(setup):
    make, clock, alarms, _, _ = setup
    engine = make()
    engine.set_primary_address(2, 1)  # channel 2 holds address 1 already
    request = install_gas(engine, clock)
    assert request.address == 2
    channel = engine.channel(1)
    assert channel.installed and channel.primary_address == 2
    value = channel.values[0]
    assert (value.value, value.scaler, value.unit, value.status) == (1000, -3, DLMS_M3, 0)
    assert value.capture_time == T0  # no device time in the telegram: when the meter received it
    assert channel.fabrication_number == "12345678"
    assert codes(engine) == [mbus_m2.EVENT_INSTALLED]


def test_reserved_and_taken_addresses_and_a_device_on_two_channels_are_refused(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock, address=5)
    for address in (251, 252, 253, 254, 255):
        with pytest.raises(ChannelRefused):
            engine.install(2, address)
        with pytest.raises(ChannelRefused):
            engine.set_primary_address(2, address)
    with pytest.raises(ChannelRefused):
        engine.install(2, 5)  # channel 1's address
    engine.set_identity_field(2, "manufacturer_id", GAS_ID.manufacturer_id)
    with pytest.raises(ChannelRefused):  # the same device as channel 1
        engine.set_identity_field(2, "identification_number", GAS_ID.identification_number)
    assert engine.channel(2).identification_number == 0  # a refused write changes nothing


def test_wireless_channel_refuses_install_and_capture(setup):
    make, _, _, _, _ = setup
    engine = make()
    engine.set_port(3, WIRELESS_PORT)
    assert engine.channel(3).capture_period == 0
    with pytest.raises(ChannelRefused):
        engine.install(3, 0)
    with pytest.raises(ChannelRefused):
        engine.capture(3)
    with pytest.raises(ChannelRefused):
        engine.set_port(3, bytes([0, 2, 24, 6, 0, 255]))  # the consumer port is no M2 port


def test_reads_follow_the_meter_clock_and_the_profile_captures_hourly(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.requests(clock())  # the installation's clock sync goes out at once
    for request in engine.requests(clock()):
        pass
    volumes = []
    for hour in range(1, 25):
        clock.t = T0 + hour * 3600
        engine.advance(clock.t - 3600, clock.t, Passage.RUNNING)  # the runtime's tick crosses the hour
        reads = [r for r in engine.requests(clock()) if r.kind == "read"]
        assert len(reads) == 1, f"hour {hour}: one read per capture period"
        volumes.append(1000 + hour * 7)
        engine.answered(reads[0], telegram(GAS_ID, volumes[-1]), clock())
    rows = engine.profile_rows(1, None, None)
    assert [t for t, _ in rows] == [T0 + h * 3600 for h in range(1, 25)]
    # the capture at hour h holds the value read before it (hour h-1's read)
    assert [row[1] for _, row in rows] == [1000] + volumes[:-1]
    assert all(row[0] == 0 for _, row in rows)  # every period answered: no status bit


def test_a_removed_submeter_raises_its_alarm_and_event_and_recovers(setup):
    make, clock, alarms, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.failed(read, clock())
    assert alarms.active["mbus_communication_error_1"] is True
    engine.advance(clock.t, clock.t + 3600, Passage.RUNNING)
    assert engine.profile_rows(1, None, None)[-1][1][0] & mbus_m2.STATUS_DNV
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.failed(read, clock())  # still away: no second event
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.answered(read, telegram(GAS_ID, 1100), clock())
    assert alarms.active["mbus_communication_error_1"] is False
    assert codes(engine) == [mbus_m2.EVENT_INSTALLED, mbus_m2.EVENT_COMMUNICATION_ERROR,
                             mbus_m2.EVENT_COMMUNICATION_OK]


def test_another_device_at_the_address_is_a_fraud_attempt(setup):
    make, clock, alarms, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.answered(read, telegram(WATER_ID, 5), clock())
    assert alarms.raised == ["mbus_fraud_attempt_1"]
    assert engine.channel(1).values[0].value == 1000  # the impostor's value is not taken
    assert codes(engine)[-1] == mbus_m2.EVENT_FRAUD_ATTEMPT


def test_key_status_machine(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    with pytest.raises(ChannelRefused):
        engine.transfer_key(1, b"wrapped")  # no key set
    with pytest.raises(ChannelRefused):
        engine.set_encryption_key(1, bytes(15))
    assert engine.channel(1).key_status == mbus_m2.NO_KEY
    engine.set_encryption_key(1, bytes(range(16)))
    assert engine.channel(1).key_status == mbus_m2.KEY_SET
    engine.transfer_key(1, b"\x01" * 24)
    [transfer] = [r for r in engine.requests(clock()) if r.kind == "key_transfer"]
    assert transfer.payload == b"\x01" * 24
    engine.answered(transfer, None, clock())
    assert engine.channel(1).key_status == mbus_m2.KEY_SET_AND_TRANSFERRED
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.answered(read, telegram(GAS_ID, 1001, encrypted=True), clock())
    assert engine.channel(1).key_status == mbus_m2.KEY_IN_USE
    engine.set_encryption_key(1, b"")  # the null key: the device still has one
    assert engine.channel(1).key_status == mbus_m2.KEY_TRANSFERRED
    engine.set_encryption_key(1, bytes(16))
    assert engine.channel(1).key_status == mbus_m2.KEY_SET_AND_TRANSFERRED


def test_clock_sync_at_install_every_24_hours_and_on_meter_sync(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    syncs = []

    def serve():
        for request in engine.requests(clock()):
            if request.kind == "clock_sync":
                syncs.append(request.time)
            engine.answered(request, telegram(GAS_ID, 1000) if request.kind == "read" else None, clock())

    serve()
    assert syncs == [T0]
    for minutes in range(10, 24 * 60 + 1, 10):
        clock.t = T0 + minutes * 60
        serve()
    assert syncs == [T0, T0 + 86400]
    engine.clock_synchronised()
    serve()
    assert syncs[-1] == clock.t and len(syncs) == 3


def test_everything_survives_a_restart(setup):
    make, clock, alarms, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.set_encryption_key(1, bytes(range(16)))
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]
    engine.failed(read, clock())
    alarms.active.clear()
    again = make()  # what a new process finds in the same event store
    c = again.channel(1)
    assert c.installed and c.primary_address == 1 and c.key == bytes(range(16))
    assert c.key_status == mbus_m2.KEY_SET and c.communication_error
    assert c.values[0].value == 1000 and c.values[0].unit == DLMS_M3
    # raised again at start; the others said clear (the stored channels decide, not the last alarm call)
    assert alarms.active == {f"mbus_communication_error_{n}": n == 1 for n in mbus_m2.CHANNELS}
    assert codes(again) == codes(engine)


def test_wireless_telegrams_fill_a_bound_channel_and_set_key_in_use(setup):
    make, clock, _, _, _ = setup
    engine = make()
    engine.set_port(2, WIRELESS_PORT)
    engine.set_capture_definition(2, [(VOLUME_DIB, VOLUME_VIB)])
    engine.set_identity_field(2, "identification_number", WATER_ID.identification_number)
    engine.set_identity_field(2, "manufacturer_id", WATER_ID.manufacturer_id)
    engine.set_encryption_key(2, bytes(16))
    assert engine.wireless_bindings() == [(2, Identity(WATER_ID.identification_number, WATER_ID.manufacturer_id, 0, 0),
                                           bytes(16))]
    engine.received(2, telegram(GAS_ID, 9), clock())  # not the bound device: ignored
    assert not engine.channel(2).installed
    engine.received(2, telegram(WATER_ID, 42, device_time=T0 - 30, encrypted=True), clock())
    c = engine.channel(2)
    assert c.installed and c.values[0].value == 42 and c.values[0].capture_time == T0 - 30
    assert c.key_status == mbus_m2.KEY_IN_USE
    assert engine.requests(clock()) == []  # a wireless channel never uses the wired bus


def test_encode_record_value_codes_integers_and_bcd_as_en_13757_3():
    assert encode_record_value(b"\x04", Data.double_long_unsigned(0x01020304)) == bytes([4, 3, 2, 1])
    assert encode_record_value(b"\x0c", Data.double_long_unsigned(12345678)) == bytes([0x78, 0x56, 0x34, 0x12])
    assert encode_record_value(b"\x01", Data.unsigned(1)) == b"\x01"
    with pytest.raises(ChannelRefused):
        encode_record_value(b"\x01", Data.long_unsigned(256))
    with pytest.raises(ChannelRefused):
        encode_record_value(b"\x05", Data.double_long_unsigned(1))  # real32: not sent


class FakeBus:
    """An in-process wired bus of slaves keyed by primary address (no device: NoAnswer)."""

    def __init__(self) -> None:
        self.devices: dict[int, SubmeterTelegram] = {}
        self.waiting: dict[Identity, SubmeterTelegram] = {}
        self.clock_syncs: list[tuple[int, float]] = []

    async def install(self, address, identity, key=None):
        for known, tg in list(self.waiting.items()):
            if identity is None or (known.identification_number, known.manufacturer_id) == (
                    identity.identification_number, identity.manufacturer_id):
                self.devices[address] = self.waiting.pop(known)
                return self.devices[address]
        raise NoAnswer("no such device")

    async def read(self, address, key=None):
        if address not in self.devices:
            raise NoAnswer("timeout")
        return self.devices[address]

    async def clock_sync(self, address, utc):
        if address not in self.devices:
            raise NoAnswer("timeout")
        self.clock_syncs.append((address, utc))

    async def send(self, address, records):
        raise NoAnswer("timeout")

    async def transfer_key(self, address, wrapped):
        if address not in self.devices:
            raise NoAnswer("timeout")

    async def valve(self, address, open_):
        if address not in self.devices:
            raise NoAnswer("timeout")


def test_driver_runs_the_requests_over_a_bus_and_feeds_wireless_into_a_bounded_queue(setup):
    make, clock, alarms, _, _ = setup
    engine = make()
    bus = FakeBus()
    bus.waiting[GAS_ID] = telegram(GAS_ID, 2000)
    driver = MbusM2Driver(engine, bus, clock)
    engine.set_capture_definition(1, [(VOLUME_DIB, VOLUME_VIB)])
    engine.set_identity_field(1, "identification_number", GAS_ID.identification_number)
    engine.set_identity_field(1, "manufacturer_id", GAS_ID.manufacturer_id)
    engine.install(1, 0)
    asyncio.run(driver.run_once())
    assert engine.channel(1).installed and engine.channel(1).values[0].value == 2000
    asyncio.run(driver.run_once())  # the new device's clock sync
    assert bus.clock_syncs == [(1, T0)]
    del bus.devices[1]  # the submeter is unplugged
    clock.t += 3600
    asyncio.run(driver.run_once())
    assert alarms.active["mbus_communication_error_1"] is True
    for i in range(MbusM2Driver.QUEUE + 5):
        driver.deliver(2, telegram(WATER_ID, i))
    assert len(driver.wireless) == MbusM2Driver.QUEUE and driver.dropped == 5



def test_a_device_that_never_answers_is_logged_once_not_at_every_attempt(setup, caplog):
    make, clock, _, _, _ = setup
    engine = make()
    driver = MbusM2Driver(engine, FakeBus(), clock)  # nobody on the bus
    engine.set_capture_definition(1, [(VOLUME_DIB, VOLUME_VIB)])
    engine.install(1, 0)
    engine.install(2, 0)
    with caplog.at_level(logging.INFO, logger="smartmeter.meter.mbus_m2"):
        for _ in range(10):  # ten attempts of each installation, a retry interval apart
            asyncio.run(driver.run_once())
            clock.t += mbus_m2.RETRY_AFTER
    lines = [r.getMessage() for r in caplog.records if "got no answer" in r.getMessage()]
    # one line per channel: the condition, not each of the twenty attempts
    assert len(lines) == 2 and {line.split(":")[0] for line in lines} == {"M-Bus channel 1", "M-Bus channel 2"}
    assert engine.channel(1).communication_error and engine.channel(2).communication_error


# -- over a real TCP socket to the simulated submeters (smartmeter.mbus.simulated) ---------------------

def test_engine_reads_simulated_gas_water_heat_over_tcp_and_follows_a_removed_meter(setup):
    from zoneinfo import ZoneInfo

    from smartmeter.mbus import simulated
    from smartmeter.mbus.application import manufacturer_from_text

    make, clock, alarms, _, _ = setup
    zone = ZoneInfo("Europe/Berlin")
    meters = {kind: simulated.SimulatedSubmeter(kind, seed=7, time_zone="Europe/Berlin")
              for kind in ("gas", "water", "heat")}
    meters["gas"].clock_offset = -90.0  # the gas meter's clock runs 90 s behind
    bus = simulated.SimulatedBus(meters.values())
    engine = make()
    # what the HES writes before slave_install: the device's address and what to capture
    capture = {"gas": [(b"\x0c", b"\x13")], "water": [(b"\x0c", b"\x13"), (b"\x0b", b"\x3b")],
               "heat": [(b"\x0c", b"\x06"), (b"\x0c", b"\x13")]}
    for number, (kind, meter) in enumerate(meters.items(), start=1):
        engine.set_capture_definition(number, capture[kind])
        engine.set_identity_field(number, "identification_number", int(f"{meter.identification:08d}", 16))
        engine.set_identity_field(number, "manufacturer_id", manufacturer_from_text("SIM"))
        engine.install(number, 0)

    async def scenario():
        port_box = []
        server = asyncio.create_task(simulated.serve_bus(bus, "127.0.0.1", 0, clock, started=port_box.append))
        while not port_box:
            await asyncio.sleep(0.01)
        speed = [2400]  # the wired port setup's comm_speed, as IC 74 gives it
        link = mbus_m2.wired_bus(f"127.0.0.1:{port_box[0]}", zone, lambda: speed[0])
        driver = MbusM2Driver(engine, link, clock)
        try:
            await driver.run_once()  # three installations
            speeds = [link._bus.master.baud_rate]
            speed[0] = 9600  # the head-end writes comm_speed 5: the next exchange runs at 9600 Bd
            await driver.run_once()  # their clock syncs
            speeds.append(link._bus.master.baud_rate)
            assert speeds == [2400, 9600]
            snapshot = {n: [v.value for v in engine.channel(n).values] for n in (1, 2, 3)}
            snapshot["gas time"] = engine.channel(1).values[0].capture_time
            meters["gas"].faults.add("silent")  # unplugged
            clock.t += 3600
            await driver.run_once()
            gas_alarm_while_away = alarms.active.get("mbus_communication_error_1")
            meters["gas"].faults.discard("silent")
            clock.t += 3600
            await driver.run_once()
            return snapshot, gas_alarm_while_away
        finally:
            await link.close()
            server.cancel()

    snapshot, gas_alarm_while_away = asyncio.run(scenario())
    at_install = T0
    gas, water, heat = (meters[k].reading(at_install) for k in ("gas", "water", "heat"))
    assert snapshot[1][0] == gas.volume_l  # 0.001 m3 = litres
    assert snapshot[2][:2] == [water.volume_l, water.flow_l_per_h]
    assert snapshot[3][:2] == [heat.energy_kwh, heat.volume_l]
    for n in (1, 2, 3):
        c = engine.channel(n)
        assert c.installed and c.primary_address == n
        assert c.device_type == simulated.MEDIUM[("gas", "water", "heat")[n - 1]]
    assert (engine.channel(1).values[0].scaler, engine.channel(1).values[0].unit) == (-3, 13)  # 10^-3 m3
    assert (engine.channel(3).values[0].scaler, engine.channel(3).values[0].unit) == (3, 30)  # kWh = 10^3 Wh
    # the installation's reading carries the gas meter's own (late) time; the clock sync then corrects it
    assert snapshot["gas time"] == (T0 - 90) // 60 * 60  # type F (04 6D) holds whole minutes
    assert engine.channel(1).fabrication_number == str(meters["gas"].fabrication_number)
    assert gas_alarm_while_away is True
    assert alarms.active["mbus_communication_error_1"] is False  # back: recovered
    assert meters["gas"].clock_offset == 0  # synchronised to the meter's (the test's) clock
    gas_codes = [c for c in codes(engine) if c in (100, 105)]
    assert gas_codes == [mbus_m2.EVENT_COMMUNICATION_ERROR, mbus_m2.EVENT_COMMUNICATION_OK]
    assert engine.channel(1).values[0].value == meters["gas"].reading(T0 + 7200).volume_l


def test_valve_control_sends_the_command_and_logs_it(setup, tmp_path):
    """IC 70 0-1:24.4.0.255 (control mode 2: remote disconnect b, remote reconnect a): each
    transition is a valve command to the device (SND_UD 01 FD 1A 00/01) and a control log entry."""
    from smartmeter.cosem.classes.base import RequestContext
    from smartmeter.cosem.obis import Obis
    from smartmeter.cosem.objectmodel import ObjectModel
    from smartmeter.meter.clock import MeterClock
    from smartmeter.meter.disconnect import ControlState
    from smartmeter.meter.store import MeterStore

    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.requests(clock())  # the installation's clock sync, in flight
    meter_clock = MeterClock("UTC", source=clock)
    directory = ObjectModel.load("ksmw").instantiate({
        "settings": MeterStore(tmp_path / "settings"), "clock": meter_clock, **mbus_m2.bindings(engine, meter_clock),
        "mbus.1.valve": lambda outcome: engine.valve(1, outcome.new_state == ControlState.CONNECTED)})
    valve = directory.find(70, Obis.parse("0-1:24.4.0.255").to_bytes())[1]
    ctx = RequestContext("management", 1)
    valve.invoke(1, Data.integer(0), ctx)  # remote_disconnect
    assert valve.get(3, ctx) == Data.enum(0)
    [command] = [r for r in engine.requests(clock()) if r.kind == "valve"]
    assert command.payload == b"\x00"
    engine.answered(command, None, clock())
    clock.t += 60
    valve.invoke(2, Data.integer(0), ctx)  # remote_reconnect: mode 2 connects at once
    assert valve.get(3, ctx) == Data.enum(1)
    [command] = [r for r in engine.requests(clock()) if r.kind == "valve"]
    assert command.payload == b"\x01"
    log = directory.find(7, Obis.parse("0-1:24.5.0.255").to_bytes())[1]
    assert log.get(7, ctx) == Data.double_long_unsigned(2)  # entries_in_use
    assert engine.control_rows(1, None, None) == [(T0, mbus_m2.CONTROL_VALVE_CLOSED),
                                                  (T0 + 60, mbus_m2.CONTROL_VALVE_OPENED)]
    event_object = directory.find(1, Obis.parse("0-1:96.11.4.255").to_bytes())[1]
    assert event_object.get(2, ctx) == Data.unsigned(mbus_m2.CONTROL_VALVE_OPENED)


def test_without_a_capture_definition_the_first_current_values_with_a_unit_are_captured(setup):
    make, clock, _, _, _ = setup
    engine = make()
    for name in ("identification_number", "manufacturer_id"):
        engine.set_identity_field(1, name, getattr(GAS_ID, name))
    engine.install(1, 0)
    [request] = engine.requests(clock())
    records = (SubmeterRecord(b"\x0c", b"\x78", 5),  # fabrication number: no unit
               SubmeterRecord(b"\x4c", b"\x13", 900, -3, DLMS_M3),  # storage number 1: a past value
               SubmeterRecord(b"\x0c", b"\x13", 1000, -3, DLMS_M3),
               SubmeterRecord(b"\x8c\x10", b"\x13", 400, -3, DLMS_M3),  # tariff 1
               SubmeterRecord(b"\x0b", b"\x3b", 12, -3, 15),
               SubmeterRecord(b"\x0a", b"\x5a", 612, -1, 9),
               SubmeterRecord(b"\x0a", b"\x5e", 450, -1, 9),
               SubmeterRecord(b"\x0b", b"\x2b", 2000, 0, 27))
    engine.answered(request, SubmeterTelegram(GAS_ID.identification_number, GAS_ID.manufacturer_id, 1, 3,
                                              records=records), clock())
    channel = engine.channel(1)
    assert channel.capture_definition == [(b"\x0c", b"\x13"), (b"\x0b", b"\x3b"), (b"\x0a", b"\x5a"),
                                          (b"\x0a", b"\x5e")]
    assert [v.value for v in channel.values] == [1000, 12, 612, 450]


def test_no_profile_row_for_an_instant_before_the_installation(setup):
    """On a fast clock one registration tick spans more than an hour: a boundary in the stretch
    before the device was installed gets no row."""
    make, clock, _, _, _ = setup
    engine = make()
    clock.t = T0 + 1800  # installed at half past
    install_gas(engine, clock)
    engine.advance(T0 - 600, T0 + 3700, Passage.RUNNING)  # the tick that covers T0 and T0 + 3600
    assert [t for t, _ in engine.profile_rows(1, None, None)] == [T0 + 3600]


def test_a_command_without_answer_waits_before_it_is_tried_again(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    [sync] = [r for r in engine.requests(clock()) if r.kind == "clock_sync"]
    engine.failed(sync, clock())
    assert [r for r in engine.requests(clock() + 1) if r.kind == "clock_sync"] == []
    [again] = [r for r in engine.requests(clock() + mbus_m2.RETRY_AFTER) if r.kind == "clock_sync"]
    engine.answered(again, None, clock() + mbus_m2.RETRY_AFTER)
    assert engine.channel(1).next_clock_sync == clock() + mbus_m2.RETRY_AFTER + mbus_m2.CLOCK_SYNC_INTERVAL


# -- review fixes ---------------------------------------------------------------------------------------

def preset_identity(engine: MbusM2, channel: int, identity: Identity) -> None:
    for name in ("identification_number", "manufacturer_id", "version", "device_type"):
        engine.set_identity_field(channel, name, getattr(identity, name))


def test_a_wireless_device_waiting_for_its_first_telegram_cannot_be_bound_to_a_second_channel(setup):
    make, clock, _, _, _ = setup
    engine = make()
    engine.set_port(1, WIRELESS_PORT)
    preset_identity(engine, 1, WATER_ID)  # bound, no telegram yet: not "installed"
    assert not engine.channel(1).installed
    engine.set_port(2, WIRELESS_PORT)
    engine.set_identity_field(2, "manufacturer_id", WATER_ID.manufacturer_id)
    with pytest.raises(ChannelRefused):
        engine.set_identity_field(2, "identification_number", WATER_ID.identification_number)
    # nor on the wire: a preset wired channel cannot name it either, nor install it
    preset_identity(engine, 3, GAS_ID)
    engine.set_identity_field(4, "manufacturer_id", GAS_ID.manufacturer_id)
    with pytest.raises(ChannelRefused):
        engine.set_identity_field(4, "identification_number", GAS_ID.identification_number)
    assert [c.number for c in engine.channels.values()
            if c.has_identity() and c.manufacturer_id == WATER_ID.manufacturer_id] == [1, 3]


def test_pending_commands_keep_one_per_kind_the_latest(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.set_encryption_key(1, bytes(range(16)))
    for _ in range(50):
        engine.capture(1)
        engine.synchronize_clock(1)
        engine.clock_synchronised()
    for n in range(20):
        engine.data_send(1, [(b"\x01", b"\xfd\x1a", bytes([n]))])
        engine.valve(1, n % 2 == 0)
        engine.transfer_key(1, bytes([n]) * 24)
    pending = engine.channel(1).pending
    assert sorted(op["kind"] for op in pending) == sorted(mbus_m2.PENDING_KINDS)
    requests = {r.kind: r for r in engine.requests(clock())}
    assert requests["valve"].payload == b"\x00"  # n = 19: closed, the latest
    assert requests["data_send"].records == ((b"\x01", b"\xfd\x1a", bytes([19])),)
    assert requests["key_transfer"].payload == bytes([19]) * 24
    stored = json.loads(engine.store.saved("mbus.channel.1"))
    assert len(stored["pending"]) == len(mbus_m2.PENDING_KINDS)


def test_a_valve_command_replaced_while_on_the_bus_is_still_sent(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.valve(1, False)
    [close] = [r for r in engine.requests(clock()) if r.kind == "valve"]
    engine.valve(1, True)  # the HES reconnects while the close is on the bus
    engine.answered(close, None, clock())
    [open_] = [r for r in engine.requests(clock()) if r.kind == "valve"]
    assert open_.payload == b"\x01"


def test_commands_a_channel_without_device_or_a_wireless_one_cannot_do_are_refused(setup):
    make, clock, _, _, _ = setup
    engine = make()
    with pytest.raises(ChannelRefused):
        engine.valve(1, False)  # no device
    engine.set_port(2, WIRELESS_PORT)
    preset_identity(engine, 2, WATER_ID)
    engine.received(2, telegram(WATER_ID, 5), clock())
    assert engine.channel(2).installed
    with pytest.raises(ChannelRefused):
        engine.valve(2, False)  # unidirectional
    engine.synchronize_clock(2)  # no effect, as the catalog says
    engine.data_send(2, [(b"\x01", b"\xfd\x1a", b"\x00")])
    assert engine.channel(2).pending == [] and engine.channel(1).pending == []
    assert engine.control_rows(1, None, None) == [] and engine.control_rows(2, None, None) == []


def test_a_key_transfer_acknowledged_after_the_key_changed_does_not_say_transferred(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.set_encryption_key(1, bytes(range(16)))
    engine.transfer_key(1, b"\x01" * 24)
    [transfer] = [r for r in engine.requests(clock()) if r.kind == "key_transfer"]
    engine.set_encryption_key(1, bytes(range(1, 17)))  # another key while the transfer is on the bus
    engine.answered(transfer, None, clock())
    assert engine.channel(1).key_status == mbus_m2.KEY_SET
    assert mbus_m2.EVENT_KEY_TRANSFERRED in codes(engine)


def test_the_communication_alarm_changes_only_with_the_stored_channel(setup):
    make, clock, alarms, recorder, _ = setup
    engine = make()
    install_gas(engine, clock)
    clock.t += 3600
    [read] = [r for r in engine.requests(clock()) if r.kind == "read"]

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the process dies inside the commit
    saving, recorder.save = recorder.save, killed
    with pytest.raises(KeyboardInterrupt):
        engine.failed(read, clock())
    recorder.save = saving
    assert alarms.active.get("mbus_communication_error_1") is not True  # nothing stored: no alarm
    # a bit left set by an older meter (killed between its alarm and its commit) is cleared at resume
    alarms.active["mbus_communication_error_1"] = True
    again = make()
    again.resume(clock())
    assert alarms.active["mbus_communication_error_1"] is False


def test_resume_sends_a_valve_command_the_disconnect_control_stored_but_the_engine_never_got(setup):
    make, clock, _, _, _ = setup
    engine = make()
    install_gas(engine, clock)
    engine.set_port(2, WIRELESS_PORT)
    # IC 70 stored "disconnected" for channels 1 and 2, then the process died before engine.valve
    again = make()
    again.valve_states = lambda: {1: False, 2: False, 3: True, 4: True}
    clock.t += 10
    again.resume(clock())
    [command] = [r for r in again.requests(clock()) if r.kind == "valve"]
    assert command.channel == 1 and command.payload == b"\x00"
    assert again.control_rows(1, None, None) == [(T0 + 10, mbus_m2.CONTROL_VALVE_CLOSED)]
    assert again.control_rows(2, None, None) == []  # wireless: no valve to command
    again.resume(clock())  # agreed now: nothing more
    assert len(again.control_rows(1, None, None)) == 1
