"""Wired M-Bus encryption on the M2 port: a simulated device that took a key (transfer_key, DSMR 4
wrap under its master key) answers RSP_UD in OMS mode 5; the meter decrypts with the channel's
key, the key status goes 0 -> 1 -> 3 -> 4, and a telegram that does not decrypt gives no values.

The devices are the real simulator (smartmeter.mbus.simulated, nothing subclassed); expected
register values come from the scenario (seed and simulated time: `SimulatedSubmeter.reading`).
"""
from __future__ import annotations

import asyncio
import logging
import random

from zoneinfo import ZoneInfo

import pytest

from meterproc import start_meter
from smartmeter.meter.events import EventRecorder, EventTable
from smartmeter.meter.schedule import Passage
from smartmeter.meter.mbus_m2 import (
    KEY_FAILURE_NO_KEY, KEY_FAILURE_UNSUPPORTED, KEY_FAILURE_WRONG_KEY, KEY_IN_USE, KEY_SET,
    KEY_SET_AND_TRANSFERRED, NO_KEY, STATUS_DNV, MbusM2, MbusM2Driver, WiredKeyFailure, decrypt_wired, wired_bus,
)
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.keytransfer import wrap_dsmr4
from smartmeter.mbus.link import FrameReader
from smartmeter.mbus.simulated import SimulatedBus, SimulatedSubmeter, WiredSlave, serve_bus

T0 = 1773144000  # meter time, 2026-03-10 12:00:00 UTC, on the hour
SIM_START = 1780000000.0  # the submeters' simulated time
MASTER_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
NEW_KEY = bytes.fromhex("A1A2A3A4A5A6A7A8A9AAABACADAEAFB0")
WRONG_MASTER_KEY = bytes.fromhex("FFEEDDCCBBAA99887766554433221100")
VOLUME = (b"\x0c", b"\x13")  # the simulated gas meter's volume: 8 BCD digits, 0.001 m3 (EN 13757-3)


def rsp_ud_user_data(meter: SimulatedSubmeter, now: float) -> bytes:
    """The user data (after CI) of the device's next RSP_UD, cut from the frame it puts on the bus."""
    reader = FrameReader()
    reader.feed(WiredSlave(meter).rsp_ud(now, 1))
    [frame] = list(reader)
    assert frame.ci == 0x72
    return frame.data


def volume_of(user_data: bytes) -> int:
    records = parse_telegram(0x72, user_data).records
    return next(r.value for r in records if (bytes([r.dif]), bytes([r.vif])) == VOLUME)


# -- decrypt_wired: the sans-io decryption of a wired mode-5 RSP_UD ---------------------------------

def test_decrypt_wired_gives_the_registers_the_device_encrypted():
    meter = SimulatedSubmeter("gas", seed=7)
    meter.key = NEW_KEY
    data = rsp_ud_user_data(meter, SIM_START)
    assert (int.from_bytes(data[10:12], "little") >> 8) & 0x1F == 5  # the device did encrypt
    plain = decrypt_wired(data, NEW_KEY)
    assert plain[:12] == data[:12] and plain[12:14] == b"\x2f\x2f"
    assert volume_of(plain) == meter.reading(SIM_START).volume_l
    # records appended in clear after the encrypted blocks are not taken as the device's
    assert decrypt_wired(data + bytes.fromhex("0C13" "99999999"), NEW_KEY) == plain


def test_decrypt_wired_refuses_wrong_or_missing_key_and_passes_clear_text():
    meter = SimulatedSubmeter("water", seed=3)
    clear = rsp_ud_user_data(meter, SIM_START)
    assert decrypt_wired(clear, None) == clear  # mode 0: nothing to decrypt
    meter.key = NEW_KEY
    data = rsp_ud_user_data(meter, SIM_START)
    with pytest.raises(WiredKeyFailure) as wrong:
        decrypt_wired(data, MASTER_KEY)
    assert wrong.value.reason == KEY_FAILURE_WRONG_KEY
    with pytest.raises(WiredKeyFailure) as missing:
        decrypt_wired(data, None)
    assert missing.value.reason == KEY_FAILURE_NO_KEY
    mode7 = data[:10] + ((7 << 8) | (int.from_bytes(data[10:12], "little") & 0xFF)).to_bytes(2, "little") + data[12:]
    with pytest.raises(WiredKeyFailure) as unsupported:
        decrypt_wired(mode7, NEW_KEY)
    assert unsupported.value.reason == KEY_FAILURE_UNSUPPORTED


def test_decrypt_wired_is_total():
    rng = random.Random(72)
    meter = SimulatedSubmeter("heat", seed=1)
    meter.key = NEW_KEY
    genuine = rsp_ud_user_data(meter, SIM_START)
    for _ in range(3000):
        data = bytearray(genuine[:rng.randrange(len(genuine) + 1)])
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            out = decrypt_wired(bytes(data), rng.choice([NEW_KEY, None, MASTER_KEY]))
        except WiredKeyFailure:
            continue
        assert isinstance(out, bytes) and len(out) <= len(data)


# -- the engine and its driver over the real master, against the real simulated bus --------------------

class World:
    """One simulated gas meter (made with MASTER_KEY) on a TCP bus; the engine reads it over
    smartmeter.mbus (MasterBus) on a meter clock and a simulated clock both set by the test."""

    def __init__(self, tmp_path) -> None:
        self.meter_time = float(T0)
        self.sim_time = SIM_START
        self.device = SimulatedSubmeter("gas", seed=11)
        self.device.master_key = MASTER_KEY
        self.bus = SimulatedBus([self.device])
        self.recorder = EventRecorder(tmp_path, EventTable.load(), lambda: self.meter_time)
        self.engine = MbusM2(self.recorder, lambda: self.meter_time)

    async def start(self):
        bound: list[int] = []
        self.server = asyncio.create_task(serve_bus(self.bus, "127.0.0.1", 0, lambda: self.sim_time, bound.append))
        while not bound:
            await asyncio.sleep(0.01)
        self.wired = wired_bus(f"127.0.0.1:{bound[0]}", ZoneInfo("Europe/Vienna"))
        self.driver = MbusM2Driver(self.engine, self.wired, lambda: self.meter_time)

    async def stop(self):
        await self.wired.close()
        self.server.cancel()
        try:
            await self.server
        except asyncio.CancelledError:
            pass
        self.recorder.close()

    async def hour(self) -> None:
        """An hour of meter and simulated time: the channel's hourly read."""
        self.meter_time += 3600
        self.sim_time += 3600
        await self.driver.run_once()

    def volume(self) -> int | None:
        return self.engine.channel(1).values[0].value

    def expected_volume(self) -> int:
        return self.device.reading(self.sim_time).volume_l


def run(tmp_path, scenario):
    async def go():
        world = World(tmp_path)
        await world.start()
        try:
            await scenario(world)
        finally:
            await world.stop()
    asyncio.run(go())


async def install(world: World) -> None:
    engine = world.engine
    engine.set_capture_definition(1, [VOLUME])
    engine.set_identity_field(1, "identification_number", int(f"{world.device.identification:08d}", 16))
    engine.set_identity_field(1, "manufacturer_id", world.device.long_header(0).manufacturer_code)
    engine.install(1, 0)
    await world.driver.run_once()
    assert engine.channel(1).installed
    assert world.volume() == world.expected_volume()


def test_key_transfer_then_encrypted_reads_go_on(tmp_path):
    async def scenario(world: World) -> None:
        engine = world.engine
        await install(world)
        assert engine.channel(1).key_status == NO_KEY
        engine.set_encryption_key(1, NEW_KEY)
        assert engine.channel(1).key_status == KEY_SET
        engine.transfer_key(1, wrap_dsmr4(MASTER_KEY, NEW_KEY))
        await world.driver.run_once()
        assert world.device.key == NEW_KEY  # the device took it ...
        assert engine.channel(1).key_status == KEY_SET_AND_TRANSFERRED  # ... and acknowledged
        for _ in range(3):
            await world.hour()
            channel = engine.channel(1)
            assert (channel.configuration >> 8) & 0x1F == 5  # the answer came encrypted
            assert channel.key_status == KEY_IN_USE
            assert world.volume() == world.expected_volume()
            assert channel.values[0].status == 0 and channel.key_failures == 0

    run(tmp_path, scenario)


def test_a_wrong_master_key_gives_the_device_garbage_and_the_values_stop(tmp_path, caplog):
    async def scenario(world: World) -> None:
        engine = world.engine
        await install(world)
        engine.set_encryption_key(1, NEW_KEY)
        # DSMR 4's wrap has no integrity: the device unwraps another key and acknowledges it
        engine.transfer_key(1, wrap_dsmr4(WRONG_MASTER_KEY, NEW_KEY))
        await world.driver.run_once()
        assert world.device.key is not None and world.device.key != NEW_KEY
        assert engine.channel(1).key_status == KEY_SET_AND_TRANSFERRED
        before = world.volume()
        access = engine.channel(1).access_number
        with caplog.at_level(logging.INFO, logger="smartmeter.meter.mbus_m2"):
            for n in (1, 2, 3):
                await world.hour()
                channel = engine.channel(1)
                assert channel.access_number != access  # the device did answer ...
                access = channel.access_number
                assert channel.values[0].value == before != world.expected_volume()  # ... no value taken
                assert channel.key_failures == n
                assert channel.key_status == KEY_SET_AND_TRANSFERRED
                assert not channel.communication_error
        refused = [r for r in caplog.records if "telegram refused" in r.getMessage()]
        assert len(refused) == 1 and KEY_FAILURE_WRONG_KEY in refused[0].getMessage()
        # the hour's profile row says the meter holds no valid value for it
        engine.advance(world.meter_time, world.meter_time + 3600, Passage.RUNNING)
        [(_, row)] = engine.profile_rows(1, int(world.meter_time), None)
        assert row[0] & STATUS_DNV and row[1] == before

    run(tmp_path, scenario)


def test_a_device_with_a_key_but_a_channel_without_one_gives_no_values(tmp_path):
    async def scenario(world: World) -> None:
        world.device.key = NEW_KEY  # made with its key (`sim mbus --wired --key`), the meter not told
        engine = world.engine
        engine.set_capture_definition(1, [VOLUME])
        engine.set_identity_field(1, "identification_number", int(f"{world.device.identification:08d}", 16))
        engine.set_identity_field(1, "manufacturer_id", world.device.long_header(0).manufacturer_code)
        engine.install(1, 0)
        await world.driver.run_once()
        channel = engine.channel(1)
        assert channel.installed and world.volume() is None and channel.key_failures == 1
        engine.set_encryption_key(1, NEW_KEY)
        await world.hour()
        assert world.volume() == world.expected_volume() and engine.channel(1).key_status == KEY_IN_USE

    run(tmp_path, scenario)


# -- end to end: `smartmeter sim mbus` and a meter process, driven by our head-end commands -------------

SEED = 5
SIM_MASTER_KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F0"
SIM_NEW_KEY = "112233445566778899AABBCCDDEEFF00"
SIM_SECOND_KEY = "FFEEDDCCBBAA00998877665544332211"
SIM_WRONG_MASTER_KEY = "00000000000000000000000000000001"
# meter time: 10 min past the hour, so the hourly read is 50 min (real time) away and every read
# below is one the head-end asked for (`mbus read`)
METER_START = "2026-03-10T12:10:00+01:00"


class SimulatedGasProcess:
    """`smartmeter sim mbus gas --wired --master-key M` on a free port, its output drained."""

    def __init__(self) -> None:
        import subprocess
        import sys
        import threading
        import time

        self.started_at = time.time()  # the simulated clock's start: real time at speed 1
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smartmeter", "sim", "mbus", "gas", "--wired", "--master-key", SIM_MASTER_KEY,
             "--listen", "127.0.0.1:0", "--seed", str(SEED)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.port = None
        for line in self.process.stdout:
            self.lines.append(line)
            if "wired M-Bus with" in line:
                self.port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1].rstrip(";"))
                break
        assert self.port, "".join(self.lines)
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def head_end(meter, *args: str) -> dict:
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "smartmeter", "client", "--port", str(meter.wrapper_port),
         "--credentials", str(meter.data_dir / "credentials" / "management.json"), "mbus", *args, "--json"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    views = json.loads(result.stdout)
    return views[0] if isinstance(views, list) else views


def poll(meter, condition, what: str, attempts: int = 60) -> dict:
    import time

    for _ in range(attempts):
        view = head_end(meter, "list", "--all")
        if condition(view):
            return view
        time.sleep(0.5)
    raise AssertionError(f"{what}: last seen {view}")


def stored_channel(meter) -> dict:
    import json
    import sqlite3

    db = sqlite3.connect(f"file:{meter.data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        (text,) = db.execute("SELECT value FROM saved WHERE name = 'mbus.channel.1'").fetchone()
    finally:
        db.close()
    return json.loads(text)


def test_head_end_transfers_the_key_to_the_simulated_gas_meter_and_reads_on(tmp_path):
    import time

    gas = SimulatedSubmeter("gas", seed=SEED)  # the same device as the process's: from the seed

    def volume_between(view: dict, since: float, until: float) -> int:
        value = view["values"][0]["value"]
        # the simulated clock runs at real speed from the process start; one second either side
        # covers the two clocks' drift
        assert gas.reading(since - 1).volume_l <= value <= gas.reading(until + 1).volume_l, (value, since, until)
        return value

    sim = SimulatedGasProcess()
    meter = start_meter(tmp_path / "meter", "--mbus-wired", f"127.0.0.1:{sim.port}", "--start-time", METER_START,
                        cli_options=("-v",))
    try:
        t = time.time()
        head_end(meter, "install", "1", "--id", f"{gas.identification:08d}", "--manufacturer", gas.manufacturer,
                 "--version", str(gas.version), "--medium", "gas")
        view = poll(meter, lambda v: v["values"][0]["value"] is not None, "the installation's read")
        assert view["key_status"] == "no key" and view["identification_number"] == f"{gas.identification:08d}"
        volume_between(view, t, time.time())

        assert head_end(meter, "key", "1", "--key", SIM_NEW_KEY)["key_status"] == "key set"
        head_end(meter, "transfer-key", "1", "--key", SIM_NEW_KEY, "--master-key", SIM_MASTER_KEY)
        poll(meter, lambda v: v["key_status"] == "key set and transferred", "the device's acknowledgement")

        previous = None
        for _ in range(2):  # the values go on after the transfer, each read a new one
            t = time.time()
            head_end(meter, "read", "1")
            view = poll(meter, lambda v: v["access_number"] != (previous or {}).get("access_number")
                        and v["key_status"] == "key in use", "an encrypted read")
            assert (view["configuration"] >> 8) & 0x1F == 5  # it came in OMS mode 5
            value = volume_between(view, t, time.time())
            assert previous is None or value >= previous["values"][0]["value"]
            previous = view
        assert stored_channel(meter)["key_failures"] == 0

        # a wrong master key: DSMR 4's wrap has no integrity, the device takes garbage and says E5
        head_end(meter, "transfer-key", "1", "--key", SIM_SECOND_KEY, "--master-key", SIM_WRONG_MASTER_KEY)
        poll(meter, lambda v: v["key_status"] == "key set and transferred", "the device's acknowledgement")
        stopped = previous["values"][0]["value"]
        for n in (1, 2, 3):
            before = head_end(meter, "list", "--all")["access_number"]
            head_end(meter, "read", "1")
            view = poll(meter, lambda v: v["access_number"] != before, "the device's answer")
            assert view["values"][0]["value"] == stopped  # no value taken
            assert view["key_status"] == "key set and transferred"  # never "key in use"
            assert view["communication"] == "ok"  # the device answers: no communication error
        assert stored_channel(meter)["key_failures"] == 3
        refused = [line for line in meter.output if "telegram refused" in line]
        assert len(refused) == 1, refused  # one line for the condition, not one per read
    finally:
        meter.stop()
        sim.stop()


# -- wireless: a refusal rebinds nothing ---------------------------------------------------------------

def test_junk_frames_cannot_rebind_a_wireless_device_or_reset_its_replay_guard(tmp_path):
    from smartmeter.meter.mbus_m2 import WIRELESS_PORT, WirelessPort
    from smartmeter.mbus.simulated import WirelessSender

    radio_key = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
    meter_time = [float(T0)]
    recorder = EventRecorder(tmp_path, EventTable.load(), lambda: meter_time[0])
    try:
        engine = MbusM2(recorder, lambda: meter_time[0])
        radio = SimulatedSubmeter("water", seed=9)
        header = radio.long_header(0)
        engine.set_port(1, WIRELESS_PORT)
        engine.set_capture_definition(1, [VOLUME])
        for name, value in (("identification_number", int(f"{radio.identification:08d}", 16)),
                            ("manufacturer_id", header.manufacturer_code), ("version", radio.version),
                            ("device_type", radio.medium)):
            engine.set_identity_field(1, name, value)
        engine.set_encryption_key(1, radio_key)
        driver = MbusM2Driver(engine, None, lambda: meter_time[0])
        port = WirelessPort(engine, driver, ZoneInfo("Europe/Vienna"))
        sender = WirelessSender(radio, mode=5, key=radio_key)

        genuine = sender.telegram(SIM_START)
        port.datagram(genuine, 1.0)
        assert len(driver.wireless) == 1
        # a stranger sends the device's address in the other OMS mode, under a key of its own
        # (the attack on a port that follows a refusal's mode: flip to 7 and back, counters reset)
        impostor = WirelessSender(SimulatedSubmeter("water", seed=9), mode=7, key=bytes(range(16)))
        for n in (2, 3):
            port.datagram(impostor.telegram(SIM_START), float(n))
        assert len(driver.wireless) == 1
        fresh = sender.telegram(SIM_START + 30)
        port.datagram(fresh, 4.0)  # the device's next telegram is still taken, in its mode 5
        assert len(driver.wireless) == 2
        for n, replayed in enumerate((genuine, fresh, genuine), start=5):
            port.datagram(replayed, float(n))  # the genuine frames again: replays, refused
        assert len(driver.wireless) == 2
        asyncio.run(driver.run_once())
        channel = engine.channel(1)
        assert channel.values[0].value == radio.reading(SIM_START + 30).volume_l
        assert channel.key_status == KEY_IN_USE
    finally:
        recorder.close()


# -- wireless: the replay memory survives a restart ------------------------------------------------------

def _wireless_meter(tmp_path, radio, radio_key, meter_time, preset: bool):
    from smartmeter.meter.mbus_m2 import WIRELESS_PORT, WirelessPort

    recorder = EventRecorder(tmp_path, EventTable.load(), lambda: meter_time[0])
    engine = MbusM2(recorder, lambda: meter_time[0])
    if preset:
        header = radio.long_header(0)
        engine.set_port(1, WIRELESS_PORT)
        engine.set_capture_definition(1, [VOLUME])
        for name, value in (("identification_number", int(f"{radio.identification:08d}", 16)),
                            ("manufacturer_id", header.manufacturer_code), ("version", radio.version),
                            ("device_type", radio.medium)):
            engine.set_identity_field(1, name, value)
        engine.set_encryption_key(1, radio_key)
    driver = MbusM2Driver(engine, None, lambda: meter_time[0])
    return recorder, engine, driver, WirelessPort(engine, driver, ZoneInfo("Europe/Vienna"))


@pytest.mark.parametrize("mode", [5, 7])
def test_frames_taken_before_a_restart_are_replays_after_it(tmp_path, mode):
    from smartmeter.mbus.simulated import WirelessSender

    radio_key = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
    meter_time = [float(T0)]
    radio = SimulatedSubmeter("water", seed=9)
    sender = WirelessSender(radio, mode=mode, key=radio_key)
    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=True)
    frames = [sender.telegram(SIM_START + 30 * n) for n in range(3)]
    for n, frame in enumerate(frames):
        port.datagram(frame, float(n))
    asyncio.run(driver.run_once())
    assert engine.channel(1).values[0].value == radio.reading(SIM_START + 60).volume_l
    recorder.close()  # the meter stops (or is killed: every telegram taken was committed)

    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=False)
    try:
        for n, frame in enumerate(frames):
            port.datagram(frame, 10.0 + n)
        assert len(driver.wireless) == 0
        assert port.stats()["replay"] == 3
        fresh = sender.telegram(SIM_START + 90)
        port.datagram(fresh, 20.0)  # the device's next frame is taken
        asyncio.run(driver.run_once())
        assert engine.channel(1).values[0].value == radio.reading(SIM_START + 90).volume_l
    finally:
        recorder.close()


def test_no_mode_5_after_mode_7_survives_a_restart(tmp_path):
    from smartmeter.mbus.simulated import WirelessSender

    radio_key = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
    meter_time = [float(T0)]
    radio = SimulatedSubmeter("water", seed=9)
    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=True)
    port.datagram(WirelessSender(radio, mode=7, key=radio_key).telegram(SIM_START), 1.0)
    asyncio.run(driver.run_once())
    assert engine.channel(1).mode7_seen
    recorder.close()

    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=False)
    try:  # the weaker mode under the same key, with a fresh access number: a downgrade, refused
        port.datagram(WirelessSender(radio, mode=5, key=radio_key).telegram(SIM_START + 30), 2.0)
        assert len(driver.wireless) == 0
        assert port.stats()["wrong security mode"] == 1
    finally:
        recorder.close()


def test_refused_wireless_frames_are_logged_once_per_reason_and_counted(tmp_path, caplog):
    from smartmeter.meter.mbus_m2 import M2Interface
    from smartmeter.mbus.simulated import WirelessSender

    radio_key = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
    meter_time = [float(T0)]
    radio = SimulatedSubmeter("water", seed=9)
    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=True)
    try:
        stranger = WirelessSender(SimulatedSubmeter("gas", seed=4), mode=5, key=radio_key)
        with caplog.at_level(logging.INFO, logger="smartmeter.meter.mbus_m2"):
            for n in range(5):
                port.datagram(stranger.telegram(SIM_START + n), float(n))  # unbound address
                broken = bytearray(WirelessSender(radio, mode=5, key=radio_key).telegram(SIM_START + n))
                broken[5] ^= 0xFF  # in the first block: its CRC no longer matches
                port.datagram(bytes(broken), float(n))
        refused = [r.getMessage() for r in caplog.records if "frame refused" in r.getMessage()]
        assert len(refused) == 2, refused
        assert port.stats()["unbound address"] == 5 and port.stats()["CRC error"] == 5
        interface = M2Interface.__new__(M2Interface)
        interface.engine, interface.wireless, interface.driver = engine, port, driver
        assert interface.stats()["CRC error"] == 5
    finally:
        recorder.close()


def test_a_frame_taken_under_the_old_key_is_not_taken_for_the_new_one(tmp_path):
    from smartmeter.mbus.simulated import WirelessSender

    radio_key = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
    meter_time = [float(T0)]
    radio = SimulatedSubmeter("water", seed=9)
    recorder, engine, driver, port = _wireless_meter(tmp_path, radio, radio_key, meter_time, preset=True)
    try:
        port.datagram(WirelessSender(radio, mode=7, key=radio_key).telegram(SIM_START), 1.0)
        engine.set_encryption_key(1, NEW_KEY)  # while the frame waits in the driver's queue
        asyncio.run(driver.run_once())
        channel = engine.channel(1)
        assert channel.replay_last == [] and not channel.mode7_seen
        assert channel.key_status == KEY_SET and channel.values[0].value is None  # nothing "in use" of the new key
    finally:
        recorder.close()
