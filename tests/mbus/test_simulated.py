"""The simulated submeters as a master and a receiver see them: registers from the seed and
the simulated time, the wired slave's link layer (FCB, addressing, SND_UD commands, faults)
and the wireless sender's frames. Frames to the slaves are written out byte by byte from
EN 13757-2/-3 here, not built by the code under test."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from smartmeter.mbus import simulated
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.link import LongFrame, MbusFrameError, decode_frame
from smartmeter.mbus.security import decrypt_frame
from smartmeter.mbus.simulated import SimulatedBus, SimulatedSubmeter, WirelessSender
from smartmeter.mbus.wireless import decode_wmbus

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc).timestamp()
BERLIN = ZoneInfo("Europe/Berlin")
ACK = b"\xE5"
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
DAY_S = 86400


def short(c: int, a: int) -> bytes:
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def long_frame(c: int, a: int, ci: int, data: bytes) -> bytes:
    body = bytes((c, a, ci)) + data
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def snd_nke(a: int) -> bytes:
    return short(0x40, a)


def req_ud2(a: int, fcb: bool) -> bytes:
    return short(0x7B if fcb else 0x5B, a)


def telegram_of(reply: bytes):
    frame = decode_frame(reply)
    assert isinstance(frame, LongFrame) and frame.c == 0x08
    return frame, parse_telegram(frame.ci, frame.data)


def values(telegram) -> dict[tuple[int, int], object]:
    """(VIF, storage number) -> scaled value or the raw value for dates."""
    out = {}
    for record in telegram.records:
        vif = record.vif & 0x7F if record.vif is not None else None
        key = (vif if vif != 0x7D else 0xFD00 | record.vifes[0], record.storage_number)
        out[key] = record.scaled() if isinstance(record.raw_value, int) else record.raw_value
    return out


# ---------------------------------------------------------------------------------------
# registers


@pytest.mark.parametrize("kind", simulated.KINDS)
def test_registers_follow_from_seed_and_time_alone(kind):
    a, b = SimulatedSubmeter(kind, seed=3), SimulatedSubmeter(kind, seed=3)
    assert a.reading(NOW) == b.reading(NOW)
    assert a.identification == b.identification and a.fabrication_number == b.fabrication_number
    other = SimulatedSubmeter(kind, seed=4)
    assert other.identification != a.identification and other.reading(NOW) != a.reading(NOW)
    # the registers never run backwards, and a day adds what a household uses in a day
    day = [a.reading(NOW + h * 3600).volume_l for h in range(25)]
    assert day == sorted(day)
    if kind == "gas":
        assert 100 * 24 <= day[-1] - day[0] <= 350 * 24  # 0.10-0.35 m3/h on average
    elif kind == "water":
        assert 100 <= day[-1] - day[0] <= 400  # litres a day


@pytest.mark.parametrize("kind", simulated.KINDS)
def test_register_growth_is_the_integral_of_the_flow(kind):
    """The closed-form register against a numerical sum of the instantaneous rate."""
    meter = SimulatedSubmeter(kind, seed=11)
    step = 60.0
    rate_sum = sum(meter.curve.rate(NOW + (i + 0.5) * step) * step for i in range(24 * 60))
    exact = meter.curve.total(NOW + DAY_S) - meter.curve.total(NOW)
    assert abs(rate_sum - exact) < 1e-6 * exact


def test_heat_meter_physics_agree():
    """Power = volume flow x 1.163 Wh/(l K) x (flow - return temperature)."""
    meter = SimulatedSubmeter("heat", seed=5)
    for hours in range(0, 24, 3):
        r = meter.reading(NOW + hours * 3600)
        delta_k = (r.flow_temperature_dc - r.return_temperature_dc) / 10
        assert 15 <= delta_k <= 25 and 45 <= r.flow_temperature_dc / 10 <= 80
        assert abs(r.flow_l_per_h * 1.163 * delta_k - r.power_w) <= 1.163 * delta_k  # rounding of l/h
        assert r.energy_kwh * 3.6 - 1 <= r.energy_mj <= (r.energy_kwh + 1) * 3.6  # the same energy in MJ


def test_device_clock_is_local_time_with_summer_flag():
    meter = SimulatedSubmeter("gas", seed=1, primary_address=1)
    bus = SimulatedBus([meter])
    summer = dt.datetime(2026, 7, 1, 10, 30, tzinfo=dt.timezone.utc).timestamp()
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), summer))
    record = next(r for r in telegram.records if r.vif == 0x6D)
    assert record.raw_value == dt.datetime(2026, 7, 1, 12, 30)  # CEST
    assert record.data[1] & 0x80  # SU: summer time


# ---------------------------------------------------------------------------------------
# wired link layer


def bus_of(*kinds: str, seed: int = 0) -> SimulatedBus:
    return SimulatedBus([SimulatedSubmeter(k, seed=seed, primary_address=i + 1) for i, k in enumerate(kinds)])


def test_snd_nke_is_acknowledged_and_unknown_addresses_stay_silent():
    bus = bus_of("gas", "water")
    assert bus.receive(snd_nke(1), NOW) == ACK
    assert bus.receive(snd_nke(2), NOW) == ACK
    assert bus.receive(snd_nke(9), NOW) == b""
    assert bus.receive(req_ud2(9, True), NOW) == b""


def test_rsp_ud_header_is_the_devices_identity():
    bus = bus_of("gas", "water", "heat")
    for address, slave in enumerate(bus.slaves, start=1):
        meter = slave.meter
        before = meter.access_number
        frame, telegram = telegram_of(bus.receive(req_ud2(address, True), NOW))
        assert frame.a == address and frame.ci == 0x72
        h = telegram.header
        assert (h.identification, h.manufacturer, h.version, h.medium) == (
            meter.identification, "SIM", meter.version, {"gas": 3, "water": 7, "heat": 4}[meter.kind])
        assert h.access_number == (before + 1) % 256 and h.status == 0


def test_repeated_fcb_gets_the_same_telegram_and_a_toggled_one_the_next():
    bus = bus_of("gas")
    bus.receive(snd_nke(1), NOW)
    first = bus.receive(req_ud2(1, True), NOW)
    again = bus.receive(req_ud2(1, True), NOW + 600)  # the master lost it: the same bytes, old values
    assert again == first
    fresh = bus.receive(req_ud2(1, False), NOW + 600)
    assert fresh != first
    a0 = telegram_of(first)[1].header.access_number
    assert telegram_of(fresh)[1].header.access_number == (a0 + 1) % 256
    assert values(telegram_of(fresh)[1])[(0x13, 0)] > values(telegram_of(first)[1])[(0x13, 0)]
    # after SND_NKE the next request is new whatever its FCB
    bus.receive(snd_nke(1), NOW + 600)
    after_reset = bus.receive(req_ud2(1, False), NOW + 600)
    assert telegram_of(after_reset)[1].header.access_number == (a0 + 2) % 256


def test_a_master_without_fcv_gets_fresh_data_every_time():
    bus = bus_of("water")
    first = bus.receive(short(0x4B, 1), NOW)  # REQ_UD2 with FCV = 0
    second = bus.receive(short(0x4B, 1), NOW)
    assert telegram_of(second)[1].header.access_number == (telegram_of(first)[1].header.access_number + 1) % 256


def test_heat_meter_sends_two_telegrams_then_starts_again():
    bus = bus_of("heat")
    meter = bus.slaves[0].meter
    bus.receive(snd_nke(1), NOW)
    _, first = telegram_of(bus.receive(req_ud2(1, True), NOW))
    _, second = telegram_of(bus.receive(req_ud2(1, False), NOW))
    _, third = telegram_of(bus.receive(req_ud2(1, True), NOW))
    assert first.more_records_follow and not second.more_records_follow
    assert {r.storage_number for r in second.records} == {1}
    due_local = dt.datetime(2026, 11, 1, tzinfo=BERLIN).timestamp()
    due = meter.reading(due_local)
    assert values(second)[(0x06, 1)] == due.energy_kwh * 1000  # Wh
    assert values(second)[(0x13, 1)] == Decimal(due.volume_l) / 1000
    assert values(second)[(0x6C, 1)] == dt.date(2026, 11, 1)
    assert third.more_records_follow and third.records[0].storage_number == 0
    # an application reset starts the sequence again
    bus.receive(snd_nke(1), NOW)
    bus.receive(req_ud2(1, True), NOW)
    assert bus.receive(long_frame(0x73, 1, 0x50, b""), NOW) == ACK
    _, restarted = telegram_of(bus.receive(req_ud2(1, True), NOW))
    assert restarted.more_records_follow


def test_set_primary_address():
    bus = bus_of("gas", "water")
    bus.slaves[1].meter.primary_address = 0  # unconfigured
    assert bus.receive(long_frame(0x53, 0, 0x51, bytes((0x01, 0x7A, 42))), NOW) == ACK
    assert bus.receive(req_ud2(0, True), NOW) == b""
    frame, telegram = telegram_of(bus.receive(req_ud2(42, True), NOW))
    assert frame.a == 42 and telegram.header.medium == 0x07
    assert bus.receive(long_frame(0x53, 42, 0x51, bytes((0x01, 0x7A, 43))), NOW) == ACK
    assert bus.receive(req_ud2(42, False), NOW) == b""  # the old address is free now
    # a repeated SND_UD (same C field, same FCB) is acknowledged again but not applied twice
    assert bus.receive(long_frame(0x73, 43, 0x6C, type_f(dt.datetime(2026, 1, 2, 3, 4))), NOW) == ACK
    assert bus.receive(long_frame(0x73, 43, 0x6C, type_f(dt.datetime(2027, 1, 2, 3, 4))), NOW) == ACK
    assert bus.slaves[1].meter.device_time(NOW).year == 2026
    # an address out of range or a record the slave does not take: no answer, nothing changes
    assert bus.receive(long_frame(0x53, 43, 0x51, bytes((0x01, 0x7A, 251))), NOW) == b""
    assert bus.receive(long_frame(0x73, 43, 0x51, bytes((0x01, 0x13, 1))), NOW) == b""
    assert bus.receive(long_frame(0x73, 43, 0x51, bytes((0x01, 0x13, 1))), NOW) == b""  # also when repeated
    assert bus.slaves[1].meter.primary_address == 43


def type_f(local: dt.datetime) -> bytes:
    year = local.year - 2000
    return bytes((local.minute, local.hour, local.day | ((year & 7) << 5), local.month | ((year >> 3) << 4)))


@pytest.mark.parametrize("command", ["ci6c", "ci51"])
def test_time_sync_sets_the_device_clock(command):
    bus = bus_of("water")
    meter = bus.slaves[0].meter
    target = dt.datetime(2026, 11, 20, 9, 15)  # device local time; true local time is 13:00
    data = type_f(target) if command == "ci6c" else bytes((0x04, 0x6D)) + type_f(target)
    ci = 0x6C if command == "ci6c" else 0x51
    assert bus.receive(long_frame(0x53, 1, ci, data), NOW) == ACK
    later = NOW + 3600
    _, telegram = telegram_of(bus.receive(req_ud2(1, False), later))
    assert values(telegram)[(0x6D, 0)] == dt.datetime(2026, 11, 20, 10, 15)
    assert meter.device_time(later).replace(tzinfo=None) == dt.datetime(2026, 11, 20, 10, 15)


def selection(ident: str, manufacturer: bytes = b"\xFF\xFF", version: int = 0xFF, medium: int = 0xFF) -> bytes:
    return long_frame(0x53, 0xFD, 0x52, bytes.fromhex(ident)[::-1] + manufacturer + bytes((version, medium)))


def sim_code() -> bytes:
    # S=19, I=9, M=13: (19 << 10) | (9 << 5) | 13, least significant byte first
    return ((19 << 10) | (9 << 5) | 13).to_bytes(2, "little")


def test_secondary_selection_then_address_253():
    bus = bus_of("gas", "water", "heat")
    for slave in bus.slaves:
        slave.meter.primary_address = 0
    water = bus.slaves[1].meter
    ident = f"{water.identification:08d}"
    assert bus.receive(selection(ident, sim_code(), water.version, 0x07), NOW) == ACK
    frame, telegram = telegram_of(bus.receive(req_ud2(0xFD, True), NOW))
    assert frame.a == 0xFD and telegram.header.identification == water.identification
    # a selection that matches no one deselects the water meter: silence
    assert bus.receive(selection("99999999"), NOW) == b""
    assert bus.receive(req_ud2(0xFD, False), NOW) == b""
    # wildcards: the first digits of the ID, then F nibbles; medium gas
    gas = bus.slaves[0].meter
    wildcard = f"{gas.identification:08d}"[:3] + "FFFFF"
    assert bus.receive(selection(wildcard, medium=0x03), NOW) == ACK
    _, telegram = telegram_of(bus.receive(req_ud2(0xFD, True), NOW))
    assert telegram.header.identification == gas.identification
    # SND_NKE to 253 ends the selection
    assert bus.receive(snd_nke(0xFD), NOW) == ACK
    assert bus.receive(req_ud2(0xFD, False), NOW) == b""


def test_two_selected_slaves_collide():
    bus = bus_of("gas", "water", "heat")
    assert bus.receive(selection("FFFFFFFF", sim_code()), NOW) == ACK  # three E5 at once look like one
    garbled = bus.receive(req_ud2(0xFD, True), NOW)
    with pytest.raises(MbusFrameError):
        decode_frame(garbled)


def test_broadcast_reaches_everyone_and_nobody_answers():
    bus = bus_of("gas", "water")
    bus.receive(req_ud2(1, True), NOW)
    assert bus.receive(snd_nke(0xFF), NOW) == b""
    # the reset reached the gas meter: its next request is new although the FCB is the same
    a0 = bus.slaves[0].meter.access_number
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), NOW))
    assert telegram.header.access_number == (a0 + 1) % 256


def test_alarms_set_status_bits_and_error_flags():
    bus = bus_of("water")
    meter = bus.slaves[0].meter
    meter.alarms.set("leak")
    meter.alarms.set("battery-low")
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), NOW))
    # EN 13757-3 status: bit 2 power low, bits 0-1 = 11 abnormal situation
    assert telegram.header.status == 0x04 | 0x03
    assert values(telegram)[(0xFD17, 0)] == 0x0003
    meter.alarms.set("leak", False)
    meter.alarms.set("battery-low", False)
    meter.alarms.set("tamper")
    _, telegram = telegram_of(bus.receive(req_ud2(1, False), NOW))
    assert telegram.header.status == 0x20 and values(telegram)[(0xFD17, 0)] == 0x0004
    with pytest.raises(ValueError):
        meter.alarms.set("fire")


@pytest.mark.parametrize("coding", ["bcd", "binary"])
def test_gas_meter_volume_in_litres_bcd_or_binary(coding):
    meter = SimulatedSubmeter("gas", seed=9, primary_address=1, coding=coding)
    bus = SimulatedBus([meter])
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), NOW))
    volume = next(r for r in telegram.records if r.vif == 0x13)
    assert volume.coding == (0x0C if coding == "bcd" else 0x04)
    assert volume.scaled() == Decimal(meter.reading(NOW).volume_l) / 1000 and volume.unit == "m³"


# ---------------------------------------------------------------------------------------
# faults


def test_fault_silent():
    bus = bus_of("gas", "water")
    bus.slaves[0].meter.faults.add("silent")
    assert bus.receive(snd_nke(1), NOW) == b""
    assert bus.receive(req_ud2(1, True), NOW) == b""
    assert bus.receive(selection("FFFFFFFF"), NOW) == ACK  # only the water meter
    assert telegram_of(bus.receive(req_ud2(0xFD, True), NOW))[1].header.medium == 0x07


def test_fault_wrong_identity():
    bus = bus_of("gas")
    meter = bus.slaves[0].meter
    meter.faults.add("wrong-identity")
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), NOW))
    assert telegram.header.identification != meter.identification


def test_fault_bad_checksum():
    bus = bus_of("gas")
    bus.slaves[0].meter.faults.add("bad-checksum")
    reply = bus.receive(req_ud2(1, True), NOW)
    assert reply[0] == 0x68 and reply[-1] == 0x16
    with pytest.raises(MbusFrameError, match="checksum"):
        decode_frame(reply)


def test_fault_endless_chain():
    bus = bus_of("gas")
    bus.slaves[0].meter.faults.add("endless")
    fcb = True
    for _ in range(20):
        assert telegram_of(bus.receive(req_ud2(1, fcb), NOW))[1].more_records_follow
        fcb = not fcb


def test_fault_collision():
    bus = bus_of("heat")
    bus.slaves[0].meter.faults.add("collision")
    assert bus.receive(snd_nke(1), NOW) == ACK  # two identical E5: indistinguishable
    with pytest.raises(MbusFrameError):
        decode_frame(bus.receive(req_ud2(1, True), NOW))


def test_garbage_on_the_bus_never_raises():
    rng = random.Random(1)
    bus = bus_of("gas", "water", "heat")
    for _ in range(300):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        assert isinstance(bus.receive(noise, NOW), bytes)
    # and the bus still works afterwards (a partial frame is completed by noise or dropped)
    bus.receive(b"\x16" * 300, NOW)
    assert bus.receive(snd_nke(2), NOW) == ACK


def test_frames_split_across_reads_are_answered_once_complete():
    bus = bus_of("water")
    frame = req_ud2(1, True)
    assert bus.receive(frame[:2], NOW) == b""
    assert telegram_of(bus.receive(frame[2:], NOW))[1].header.medium == 0x07


# ---------------------------------------------------------------------------------------
# TCP


def test_bus_on_tcp_takes_one_master_at_a_time():
    bus = bus_of("gas", "water")

    async def scenario():
        bound = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(simulated.serve_bus(bus, "127.0.0.1", 0, lambda: NOW, bound.set_result))
        port = await bound
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(snd_nke(2))
        assert await reader.readexactly(1) == ACK
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await other_reader.read(10) == b""  # closed: the bus has its master
        other_writer.close()
        writer.write(req_ud2(2, True))
        head = await reader.readexactly(4)
        body = await reader.readexactly(head[1] + 2)
        writer.close()
        server.cancel()
        return head + body

    reply = asyncio.run(scenario())
    assert telegram_of(reply)[1].header.medium == 0x07


# ---------------------------------------------------------------------------------------
# wireless


@pytest.mark.parametrize("mode,crc", [(5, "A"), (5, "B"), (7, "A")])
def test_wireless_telegrams_decrypt_to_the_registers(mode, crc):
    meter = SimulatedSubmeter("water", seed=2)
    meter.alarms.set("battery-low")
    sender = WirelessSender(meter, mode=mode, key=KEY, crc=crc)
    numbers = []
    for minutes in (0, 15):
        now = NOW + minutes * 60
        frame = decode_wmbus(sender.telegram(now), crc=crc)
        assert frame.link.c_field == 0x44  # SND_NR
        assert frame.address.identification == f"{meter.identification:08d}"
        assert (frame.address.manufacturer, frame.address.device_type) == ("SIM", 0x07)
        assert frame.tpl.configuration.mode == mode and frame.tpl.status == 0x04
        plain = decrypt_frame(frame, KEY)
        ci, data = plain.user_data
        telegram = parse_telegram(ci, data)
        assert values(telegram)[(0x13, 0)] == Decimal(meter.reading(now).volume_l) / 1000
        assert values(telegram)[(0x3B, 0)] == Decimal(meter.reading(now).flow_l_per_h) / 1000
        numbers.append(frame.tpl.access_number)
    assert numbers[1] == (numbers[0] + 1) % 256
    with pytest.raises(Exception):
        decrypt_frame(decode_wmbus(sender.telegram(NOW), crc=crc), bytes(16))


def test_wireless_jitter_is_seeded_and_bounded():
    delays = [WirelessSender(SimulatedSubmeter("gas", seed=1), mode=5, key=KEY, interval=100).next_delay()
              for _ in range(2)]
    assert delays[0] == delays[1]
    sender = WirelessSender(SimulatedSubmeter("gas", seed=1), mode=5, key=KEY, interval=100)
    spread = [sender.next_delay() for _ in range(200)]
    assert all(90 <= d <= 110 for d in spread) and max(spread) - min(spread) > 10


def test_wireless_sender_refuses_bad_settings():
    with pytest.raises(ValueError):
        WirelessSender(SimulatedSubmeter("gas"), mode=6, key=KEY)
    with pytest.raises(ValueError):
        WirelessSender(SimulatedSubmeter("gas"), mode=5, key=KEY[:8])


# ---------------------------------------------------------------------------------------
# key transfer, encrypted RSP_UD, valve

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "mbus-vectors.json").read_text())


def vector(name: str) -> dict:
    return next(v for v in VECTORS["vectors"] if v["id"] == name)


def transfer_key_frame(c: int, address: int, wrapped: bytes) -> bytes:
    # DIF 0D (LVAR), VIF FD, VIFE 19 "security key", LVAR length, the wrapped bytes
    return long_frame(c, address, 0x51, bytes((0x0D, 0xFD, 0x19, len(wrapped))) + wrapped)


def decrypt_wired_mode5(reply: bytes, key: bytes) -> tuple[int, bytes]:
    """OMS mode 5 by hand: IV = M (2) || ID (4) || version || medium || 8 x access number."""
    frame = decode_frame(reply)
    header = frame.data[:12]
    configuration = int.from_bytes(header[10:12], "little")
    assert (configuration >> 8) & 0x1F == 5
    blocks = (configuration >> 4) & 0x0F
    iv = header[4:6] + header[0:4] + header[6:8] + bytes((header[8],)) * 8
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(frame.data[12:12 + 16 * blocks]) + decryptor.finalize()
    assert plain[:2] == b"\x2F\x2F"
    return frame.ci, header + plain


def test_transfer_key_dsmr4_then_telegrams_are_encrypted_with_the_new_key():
    v = vector("dsmr4-transfer-key")
    meter = SimulatedSubmeter("gas", seed=6, primary_address=1)
    bus = SimulatedBus([meter])
    wrapped = bytes.fromhex(v["wrapped"])
    # without a master key the device cannot take a key: no answer
    assert bus.receive(transfer_key_frame(0x53, 1, wrapped), NOW) == b""
    meter.master_key = bytes.fromhex(v["master_key"])
    assert bus.receive(transfer_key_frame(0x73, 1, wrapped), NOW) == ACK
    reply = bus.receive(req_ud2(1, False), NOW)
    ci, clear = decrypt_wired_mode5(reply, bytes.fromhex(v["new_key"]))
    telegram = parse_telegram(ci, clear)
    assert telegram.header.identification == meter.identification
    assert values(telegram)[(0x13, 0)] == Decimal(meter.reading(NOW).volume_l) / 1000
    # a wrapped key of the wrong length is refused
    assert bus.receive(transfer_key_frame(0x53, 1, wrapped[:8]), NOW) == b""


def test_transfer_key_smr5_checks_tag_and_counter():
    from smartmeter.mbus.keytransfer import KeyTransferStyle

    master, new_key = bytes(range(16)), bytes(range(16, 32))
    meter = SimulatedSubmeter("water", seed=6, primary_address=1)
    meter.master_key, meter.key_style = master, KeyTransferStyle.SMR5
    bus = SimulatedBus([meter])

    def wrap(counter: int, key: bytes = master) -> bytes:
        # SMR 5: IV = ID (LSB first) || M (LSB first) || version || medium || counter (MSB first)
        iv = (bytes.fromhex(f"{meter.identification:08d}")[::-1] + sim_code()
              + bytes((meter.version, 0x07)) + counter.to_bytes(4, "big"))
        encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
        body = encryptor.update(bytes((0, 16)) + new_key) + encryptor.finalize()
        return counter.to_bytes(4, "big") + body + encryptor.tag[:8]

    assert bus.receive(transfer_key_frame(0x53, 1, wrap(5, bytes(16))), NOW) == b""  # wrong master key
    assert bus.receive(transfer_key_frame(0x73, 1, wrap(5)), NOW) == ACK
    assert meter.key == new_key
    assert bus.receive(transfer_key_frame(0x53, 1, wrap(5)), NOW) == b""  # a replayed counter
    assert bus.receive(transfer_key_frame(0x73, 1, wrap(6)), NOW) == ACK
    ci, clear = decrypt_wired_mode5(bus.receive(req_ud2(1, False), NOW), new_key)
    assert parse_telegram(ci, clear).header.medium == 0x07


def test_heat_meter_encrypts_both_telegrams_with_more_records_follow_inside():
    meter = SimulatedSubmeter("heat", seed=6, primary_address=1)
    meter.key = KEY
    bus = SimulatedBus([meter])
    first = parse_telegram(*decrypt_wired_mode5(bus.receive(req_ud2(1, True), NOW), KEY))
    second = parse_telegram(*decrypt_wired_mode5(bus.receive(req_ud2(1, False), NOW), KEY))
    assert first.more_records_follow and not second.more_records_follow
    assert {r.storage_number for r in second.records} == {1}


def valve_frame(c: int, address: int, open_: bool) -> bytes:
    return long_frame(c, address, 0x51, bytes((0x01, 0xFD, 0x1A, 1 if open_ else 0)))


@pytest.mark.parametrize("kind", ["gas", "water"])
def test_a_closed_valve_stops_consumption(kind):
    meter = SimulatedSubmeter(kind, seed=6, primary_address=1)
    reference = SimulatedSubmeter(kind, seed=6)  # the same scenario, valve never touched
    bus = SimulatedBus([meter])
    hour = 3600
    assert bus.receive(valve_frame(0x53, 1, False), NOW) == ACK
    _, telegram = telegram_of(bus.receive(req_ud2(1, True), NOW + 2 * hour))
    assert values(telegram)[(0xFD1A, 0)] == 0
    assert values(telegram)[(0x13, 0)] == Decimal(reference.reading(NOW).volume_l) / 1000
    if kind == "water":
        assert values(telegram)[(0x3B, 0)] == 0
    assert bus.receive(valve_frame(0x73, 1, True), NOW + 2 * hour) == ACK
    _, telegram = telegram_of(bus.receive(req_ud2(1, False), NOW + 5 * hour))
    assert values(telegram)[(0xFD1A, 0)] == 1
    # what flows from the reopening on is added; the two closed hours are missing for good
    held_back = reference.curve.total(NOW + 2 * hour) - reference.curve.total(NOW)
    expected = reference.base_l + int(reference.curve.total(NOW + 5 * hour) - held_back)
    assert abs(values(telegram)[(0x13, 0)] * 1000 - expected) <= 1


def test_a_heat_meter_has_no_valve():
    bus = bus_of("heat")
    assert bus.receive(valve_frame(0x53, 1, False), NOW) == b""
