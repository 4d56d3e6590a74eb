"""Our simulated submeters against independent M-Bus implementations.

* pymbusparser (MIT, Rust m-bus-parser) decodes every telegram the simulators send: wired
  RSP_UD of each kind, coding and energy unit, and wireless mode 5 (it decrypts those
  itself). It does not take OMS mode 7 (ELL + AFL): those frames are decrypted here with
  the OMS KDF-A and AES from `cryptography` (written from the OMS text, not with our
  security module) and pymbusparser decodes the plaintext application layer.
* pyMeterBus (BSD-3, `import meterbus`) is a wired master over TCP against the simulated bus
  on loopback: SND_NKE, REQ_UD2 by primary address, secondary selection and 253, the heat
  meter's two telegrams with the FCB toggled.

The expected values come from the scenario: the seed and the simulated time give the
registers (`SimulatedSubmeter.reading`), never from our decoder.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import threading
from decimal import Decimal

import meterbus
import pytest
import serial
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from pymbusparser import MbusParserError, parse, parse_records

from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.link import decode_frame
from smartmeter.mbus.simulated import KINDS, SimulatedBus, SimulatedSubmeter, WirelessSender, serve_bus

START = dt.datetime(2026, 11, 20, 11, 7, 30, tzinfo=dt.timezone.utc).timestamp()
KEY = bytes.fromhex("0102030405060708090A0B0C0D0E0F11")
MEDIUM = {"gas": 3, "water": 7, "heat": 4}


def expected_pymbus(meter: SimulatedSubmeter, now: float) -> list[tuple[str, Decimal | str]]:
    """(quantity as pymbusparser names it, value in its unit) of telegram 0, in record order."""
    r = meter.reading(now)
    out: list[tuple[str, Decimal | str]] = []
    if meter.kind == "heat":
        if meter.energy_unit == "kWh":
            out.append(("Energy", Decimal(r.energy_kwh) * 1000))  # pymbusparser gives Wh
        else:
            out.append(("Energy", Decimal(r.energy_mj) * 1_000_000))  # J
    out.append(("Volume", Decimal(r.volume_l) / 1000))
    if meter.kind == "heat":
        out += [("Flow temperature", Decimal(r.flow_temperature_dc) / 10),
                ("Return temperature", Decimal(r.return_temperature_dc) / 10),
                ("Power", Decimal(r.power_w))]
    if r.flow_l_per_h is not None:
        out.append(("Volume flow", Decimal(r.flow_l_per_h) / 1000))
    out.append(("Time point (date and time)", meter.device_time(now).replace(tzinfo=None).isoformat()[:16] + ":00"))
    out.append(("Fabrication number", Decimal(meter.fabrication_number)))
    out.append(("Error flags", Decimal(meter.error_flags)))
    if meter.kind in ("gas", "water"):
        out.append(("Digital output", Decimal(1 if meter.valve_open(now) else 0)))  # the valve
    return out


def pymbus_values(records: list[dict]) -> list[tuple[str, Decimal | str]]:
    out = []
    for record in records:
        if not record["quantities"]:
            continue  # the 1F "more records follow" marker
        value = record["value"]
        out.append((record["quantities"][0],
                    Decimal(value["value"]) if value["kind"] == "decimal" else value.get("value")))
    return out


def request(address: int, fcb: bool) -> bytes:
    c = 0x7B if fcb else 0x5B
    return bytes((0x10, c, address, (c + address) & 0xFF, 0x16))


@pytest.mark.parametrize("coding", ["bcd", "binary"])
@pytest.mark.parametrize("energy_unit", ["kWh", "MJ"])
def test_pymbusparser_decodes_every_wired_telegram(coding, energy_unit):
    meters = [SimulatedSubmeter(kind, seed=21, primary_address=i + 1, coding=coding, energy_unit=energy_unit)
              for i, kind in enumerate(KINDS)]
    meters[1].alarms.set("leak")
    meters[2].alarms.set("tamper")
    bus = SimulatedBus(meters)
    fcb = {address: True for address in (1, 2, 3)}

    def next_telegram(address: int, now: float) -> dict:
        raw = bus.receive(request(address, fcb[address]), now)
        fcb[address] = not fcb[address]  # answered: the next request is a new one
        return parse(raw)

    for hours in (0, 5, 30 * 24):  # the same telegrams half a day and a month later
        now = START + hours * 3600
        for address, meter in enumerate(meters, start=1):
            access = (meter.access_number + 1) % 256
            decoded = next_telegram(address, now)
            assert decoded["decode_state"] == "complete" and decoded["diagnostics"] == []
            assert decoded["frame"]["function"].startswith("RSP_UD") and decoded["frame"]["address"] == f"Primary ({address})"
            identity = decoded["meter"]["identity"]
            assert (identity["id"], identity["manufacturer_code"], identity["version"], identity["device_type_code"]) == (
                f"{meter.identification:08d}", "SIM", meter.version, MEDIUM[meter.kind])
            assert decoded["transport"]["access_numbers"][0]["value"] == access
            assert int(decoded["transport"]["statuses"][0]["raw"], 16) == meter.status
            assert pymbus_values(decoded["records"]) == expected_pymbus(meter, now)
            if meter.kind == "heat":  # the second telegram: the last due date's values
                second = next_telegram(address, now)
                due = meter.reading(dt.datetime(2026, 11 if hours < 24 else 12, 1,
                                                tzinfo=meter.time_zone).timestamp())
                energy = (Decimal(due.energy_kwh) * 1000 if energy_unit == "kWh"
                          else Decimal(due.energy_mj) * 1_000_000)
                assert pymbus_values(second["records"]) == [
                    ("Energy", energy), ("Volume", Decimal(due.volume_l) / 1000),
                    ("Time point (date)", f"2026-{11 if hours < 24 else 12}-01")]
                assert {r["storage_number"] for r in second["records"]} == {1}


def test_pymbusparser_agrees_with_our_decoder_on_each_record():
    meters = [SimulatedSubmeter(kind, seed=4, primary_address=i + 1) for i, kind in enumerate(KINDS)]
    bus = SimulatedBus(meters)
    for address in (1, 2, 3):
        raw = bus.receive(request(address, True), START)
        frame = decode_frame(raw)
        ours = parse_telegram(frame.ci, frame.data)
        theirs = [r for r in parse(raw)["records"] if r["quantities"]]
        assert len(ours.records) == len(theirs)
        for mine, peer in zip(ours.records, theirs):
            assert mine.storage_number == peer["storage_number"]
            if peer["value"]["kind"] == "decimal" and mine.quantity.startswith(("Volume", "Power", "Flow", "Return")):
                assert mine.scaled() == Decimal(peer["value"]["value"])


@pytest.mark.parametrize("crc", ["A", "B"])
def test_pymbusparser_decrypts_and_decodes_mode5_radio_telegrams(crc):
    for kind in KINDS:
        meter = SimulatedSubmeter(kind, seed=8)
        meter.alarms.set("battery-low")
        sender = WirelessSender(meter, mode=5, key=KEY, crc=crc)
        for minutes in (0, 15, 30):
            now = START + minutes * 60
            access = (meter.access_number + 1) % 256
            decoded = parse(sender.telegram(now), key=KEY)
            assert decoded["protocol"] == "wireless" and decoded["decode_state"] == "complete"
            assert decoded["security"]["mode_code"] == 5
            assert decoded["security"]["decryption_state"].startswith("decrypted")
            identity = decoded["meter"]["identity"]
            assert (identity["id"], identity["manufacturer_code"], identity["device_type_code"]) == (
                f"{meter.identification:08d}", "SIM", MEDIUM[kind])
            assert decoded["transport"]["access_numbers"][0]["value"] == access
            assert int(decoded["transport"]["statuses"][0]["raw"], 16) == 0x04
            assert pymbus_values(decoded["records"]) == expected_pymbus(meter, now)
        # with the wrong key the peer finds no 2F2F: nothing decodes to our values
        wrong = parse(sender.telegram(START), key=bytes(16))
        assert pymbus_values(wrong.get("records", [])) != expected_pymbus(meter, START)


def oms_mode7_plaintext(frame: bytes) -> bytes:
    """OMS Vol. 2 mode 7 from the specification: after L C M(2) A(6), ELL (8C CC ACC),
    AFL (90 AFLL FCL(2) MCL MC(4) MAC(8)), TPL (7A ACC ST CF(2) CFE) then the encrypted
    blocks. Kenc = AES-CMAC(K, 00 || MC (LSB first) || ID (4) || 07 x 7); AES-CBC, IV 0."""
    body = frame[1:]
    assert body[0] == 0x44 and body[9] == 0x8C and body[12] == 0x90
    afl_length = body[13]
    afl = body[14:14 + afl_length]
    counter = afl[3:7]
    tpl = body[14 + afl_length:]
    assert tpl[0] == 0x7A
    configuration = int.from_bytes(tpl[3:5], "little")
    assert (configuration >> 8) & 0x1F == 7
    blocks = (configuration >> 4) & 0x0F
    identification = body[3:7]
    mac = CMAC(algorithms.AES(KEY))
    mac.update(bytes((0x00,)) + counter + identification + bytes((0x07,)) * 7)
    k_enc = mac.finalize()
    encrypted = tpl[6:6 + 16 * blocks]
    decryptor = Cipher(algorithms.AES(k_enc), modes.CBC(bytes(16))).decryptor()
    return decryptor.update(encrypted) + decryptor.finalize() + tpl[6 + 16 * blocks:]


def test_mode7_radio_telegrams_decode_after_the_oms_kdf():
    """pymbusparser does not read the ELL/AFL of mode 7: it decodes the plaintext we get
    from the OMS key derivation applied here."""
    for kind in KINDS:
        meter = SimulatedSubmeter(kind, seed=12)
        sender = WirelessSender(meter, mode=7, key=KEY, crc=None)
        for minutes in (0, 60):
            now = START + minutes * 60
            plain = oms_mode7_plaintext(sender.telegram(now))
            assert plain[:2] == b"\x2F\x2F"
            assert pymbus_values(parse_records(plain)) == expected_pymbus(meter, now)


# ---------------------------------------------------------------------------------------
# pyMeterBus as the master


class BusThread:
    """The simulated bus on TCP loopback in a thread with its own event loop, at a
    simulated time the test sets."""

    def __init__(self, meters: list[SimulatedSubmeter]) -> None:
        self.now = START
        self.bus = SimulatedBus(meters)
        self._ready = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    def _started(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(serve_bus(self.bus, "127.0.0.1", 0, lambda: self.now, self._started))
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)


@pytest.fixture
def wired_bus():
    meters = [SimulatedSubmeter(kind, seed=33, primary_address=i + 1) for i, kind in enumerate(KINDS)]
    meters.append(SimulatedSubmeter("water", seed=1033, primary_address=0))  # unconfigured: secondary only
    bus = BusThread(meters)
    yield bus
    bus.stop()


def meterbus_values(telegram) -> list[tuple[str, Decimal | str]]:
    """pyMeterBus's records as (type, value); its scaling multiplies by a float, so values
    are rounded to the resolution of the record."""
    out = []
    for record in telegram.records:
        value = record.interpreted
        if value["function"] == "FunctionType.MORE_RECORDS_FOLLOW":
            continue
        number = value["value"]
        if isinstance(number, (Decimal, int, float)):
            number = Decimal(number).quantize(Decimal("0.001"))
        out.append((value["type"], number))
    return out


def expected_meterbus(meter: SimulatedSubmeter, now: float) -> list[tuple[str, Decimal | str]]:
    r = meter.reading(now)
    q = Decimal("0.001")
    out: list[tuple[str, Decimal | str]] = []
    if meter.kind == "heat":
        out.append(("VIFUnit.ENERGY_WH", (Decimal(r.energy_kwh) * 1000).quantize(q)))
    out.append(("VIFUnit.VOLUME", (Decimal(r.volume_l) / 1000).quantize(q)))
    if meter.kind == "heat":
        out += [("VIFUnit.FLOW_TEMPERATURE", (Decimal(r.flow_temperature_dc) / 10).quantize(q)),
                ("VIFUnit.RETURN_TEMPERATURE", (Decimal(r.return_temperature_dc) / 10).quantize(q)),
                ("VIFUnit.POWER_W", Decimal(r.power_w).quantize(q))]
    if r.flow_l_per_h is not None:
        out.append(("VIFUnit.VOLUME_FLOW", (Decimal(r.flow_l_per_h) / 1000).quantize(q)))
    out.append(("VIFUnit.DATE_TIME_GENERAL", meter.device_time(now).replace(tzinfo=None).isoformat()[:16]))
    out.append(("VIFUnit.FABRICATION_NO", Decimal(meter.fabrication_number).quantize(q)))
    out.append(("VIFUnitExt.ERROR_FLAGS", Decimal(meter.error_flags).quantize(q)))
    if meter.kind in ("gas", "water"):
        out.append(("VIFUnitExt.DIGITAL_OUTPUT", Decimal(1 if meter.valve_open(now) else 0).quantize(q)))
    return out


def ours(raw: bytes):
    frame = decode_frame(bytes(raw))
    return parse_telegram(frame.ci, frame.data)


def check_against_our_decoder(theirs, raw: bytes) -> None:
    """pyMeterBus's header and numbers equal what our application layer decodes."""
    mine = ours(raw)
    header = theirs.body.bodyHeader
    assert int("".join(f"{b:02x}" for b in header.id_nr)) == mine.header.identification
    assert header.manufacturer_field.decodeManufacturer == mine.header.manufacturer
    assert header.acc_nr_field.parts[0] == mine.header.access_number
    records = [r for r in theirs.records if r.interpreted["function"] != "FunctionType.MORE_RECORDS_FOLLOW"]
    assert len(records) == len(mine.records)
    for peer, record in zip(records, mine.records):
        number = record.scaled()
        if number is not None:
            assert Decimal(peer.interpreted["value"]).quantize(Decimal("0.001")) == number.quantize(Decimal("0.001"))


def test_pymeterbus_reads_every_slave_by_primary_address(wired_bus):
    meters = [s.meter for s in wired_bus.bus.slaves]
    with serial.serial_for_url(f"socket://127.0.0.1:{wired_bus.port}", timeout=5) as ser:
        for step in range(2):
            wired_bus.now = START + step * 7 * 3600
            for address in (1, 2, 3):
                meter = meters[address - 1]
                meterbus.send_ping_frame(ser, address)
                assert isinstance(meterbus.load(meterbus.recv_frame(ser, 1)), meterbus.TelegramACK)
                meterbus.send_request_frame(ser, address)
                raw = meterbus.recv_frame(ser, 1)
                telegram = meterbus.load(raw)
                header = telegram.body.bodyHeader
                assert header.manufacturer_field.decodeManufacturer == "SIM"
                assert header.measure_medium_field.parts[0] == meter.medium
                assert int("".join(f"{b:02x}" for b in header.id_nr)) == meter.identification
                assert meterbus_values(telegram) == expected_meterbus(meter, wired_bus.now)
                check_against_our_decoder(telegram, raw)
        # an address nobody has: no answer (pyMeterBus's read times out empty)
        meterbus.send_ping_frame(ser, 77)
        ser.timeout = 0.5
        assert meterbus.recv_frame(ser, 1) is None


def test_pymeterbus_selects_by_secondary_address(wired_bus):
    unconfigured = wired_bus.bus.slaves[3].meter
    secondary = (f"{unconfigured.identification:08d}"
                 + unconfigured.long_header(0).to_bytes()[4:6].hex().upper()  # manufacturer, LSB first
                 + f"{unconfigured.version:02X}{unconfigured.medium:02X}")
    with serial.serial_for_url(f"socket://127.0.0.1:{wired_bus.port}", timeout=5) as ser:
        meterbus.send_select_frame(ser, secondary)
        assert isinstance(meterbus.load(meterbus.recv_frame(ser, 1)), meterbus.TelegramACK)
        meterbus.send_request_frame(ser, 0xFD)
        raw = meterbus.recv_frame(ser, 1)
        telegram = meterbus.load(raw)
        assert int("".join(f"{b:02x}" for b in telegram.body.bodyHeader.id_nr)) == unconfigured.identification
        assert meterbus_values(telegram) == expected_meterbus(unconfigured, wired_bus.now)
        check_against_our_decoder(telegram, raw)


def test_pymeterbus_reads_the_heat_meters_two_telegrams(wired_bus):
    heat = wired_bus.bus.slaves[2].meter
    with serial.serial_for_url(f"socket://127.0.0.1:{wired_bus.port}", timeout=5) as ser:
        meterbus.send_ping_frame(ser, 3)
        meterbus.recv_frame(ser, 1)
        request_frame = meterbus.send_request_frame_multi(ser, 3)
        telegrams = [meterbus.load(meterbus.recv_frame(ser, 1))]
        while telegrams[-1].more_records_follow and len(telegrams) < 5:
            request_frame.header.cField.parts[0] ^= meterbus.CONTROL_MASK_FCB
            meterbus.send_request_frame_multi(ser, 3, request_frame)
            telegrams.append(meterbus.load(meterbus.recv_frame(ser, 1)))
    assert len(telegrams) == 2
    due = heat.reading(dt.datetime(2026, 11, 1, tzinfo=heat.time_zone).timestamp())
    assert meterbus_values(telegrams[1]) == [
        ("VIFUnit.ENERGY_WH", (Decimal(due.energy_kwh) * 1000).quantize(Decimal("0.001"))),
        ("VIFUnit.VOLUME", (Decimal(due.volume_l) / 1000).quantize(Decimal("0.001"))),
        ("VIFUnit.DATE", "2026-11-01")]
    assert [r.interpreted["storage_number"] for r in telegrams[1].records] == [1, 1, 1]


def test_pymbusparser_decrypts_wired_telegrams_after_a_key_transfer():
    """DSMR 4 transfer_key (the Open Smart Grid Platform vector), then the RSP_UD are OMS mode 5."""
    master_key = bytes.fromhex("FDD0FDD0FDD0FDD0FDD0FDD0FDD0FDD0")
    new_key = bytes.fromhex("FAA0FEA0FEA0FEA0FEA0FEA0FEA0FEA0")
    wrapped = bytes.fromhex("7B3383E2C3EC9360D54A05D05517738B")
    meters = [SimulatedSubmeter(kind, seed=40, primary_address=i + 1) for i, kind in enumerate(KINDS)]
    bus = SimulatedBus(meters)
    for address, meter in enumerate(meters, start=1):
        meter.master_key = master_key
        body = bytes((0x73, address, 0x51, 0x0D, 0xFD, 0x19, 0x10)) + wrapped
        frame = bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))
        assert bus.receive(frame, START) == b"\xE5"
        decoded = parse(bus.receive(request(address, False), START), key=new_key)
        assert decoded["security"]["mode_code"] == 5 and decoded["decode_state"] == "complete"
        assert decoded["security"]["decryption_state"].startswith("decrypted")
        assert pymbus_values(decoded["records"]) == expected_pymbus(meter, START)


def test_pymbusparser_sees_the_faults_as_a_master_would():
    meters = [SimulatedSubmeter(kind, seed=50, primary_address=i + 1) for i, kind in enumerate(KINDS)]
    meters[0].faults.add("wrong-identity")
    meters[1].faults.add("bad-checksum")
    meters[2].faults.add("endless")
    bus = SimulatedBus(meters)
    decoded = parse(bus.receive(request(1, True), START))
    assert decoded["meter"]["identity"]["id"] != f"{meters[0].identification:08d}"
    assert pymbus_values(decoded["records"]) == expected_pymbus(meters[0], START)  # right data, wrong name
    with pytest.raises(MbusParserError):
        parse(bus.receive(request(2, True), START))
    fcb = True
    for _ in range(6):  # the chain never ends: every telegram says more records follow
        records = parse(bus.receive(request(3, fcb), START))["records"]
        assert records[-1]["function"] == "More records follow"
        fcb = not fcb
