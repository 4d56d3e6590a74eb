"""The consumer information push captured from a real meter's H1 port (`meter run --h1 pty`), read
by two independent consumers with the consumer key:

- gurux-dlms's GXDLMSTranslator, interface WIRED_MBUS: cuts the M-Bus frames, joins the APDU
  parts, decrypts general-glo-ciphering (encryption only) and describes the data-notification;
- smartmeter_austria_energy (the Home Assistant integration's reader, from PyPI): opens the
  pseudo-terminal with pyserial as it opens a meter's M-Bus adapter, finds the two frames,
  decrypts and picks the OBIS values out.

The head-end sets things up as a user would: the consumer key by key_transfer (method 2 of
0-0:43.0.103.255, the Management client, wrapped with its master key), the push action
scheduler 0-4:15.0.4.255 by `smartmeter client push-schedule consumer --at ...`. A constant load
(`smartmeter sim load`) keeps voltage, current and power steady, so what the peers find is
compared with the registers read over DLMS by the Data Readout client: exactly, and the energy
between the reads before and after.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import select
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSTranslator, GXDLMSTranslatorMessage
from gurux_dlms.enums import InterfaceType, Security, TranslatorOutputType
from smartmeter_austria_energy.smartmeter import Smartmeter as AustrianReader
from smartmeter_austria_energy.supplier import Supplier

from meterproc import start_meter
from smartmeter.cosem import axdr
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials

CONSUMER_KEY = bytes.fromhex("5A6B7C8D9EAFB0C1D2E3F40516273849")
LOAD_W = 2760  # 4 A on each of three phases at 230 V: steady instantaneous values
PTY_LINE = re.compile(r"H1 consumer port: .* on (/dev/\S+)")
CLOCK = "0-0:1.0.0.255"


def smartmeter(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


class Meter:
    def __init__(self, process) -> None:
        self.process = process
        self.credentials = process.data_dir / "credentials"
        self.pty = self._pty_path()

    def _pty_path(self) -> str:
        for line in self.process.output:
            match = PTY_LINE.search(line)
            if match:
                return match.group(1)
        raise AssertionError("the meter printed no H1 pty:\n" + "".join(self.process.output))

    def cli(self, client: str, *args: str) -> str:
        return smartmeter("client", "--port", str(self.process.wrapper_port), "--credentials",
                          str(self.credentials / f"{client}.json"), *args)

    async def _session(self, client: str, work):
        creds = load_credentials(self.credentials / f"{client}.json")
        link = WrapperLink("127.0.0.1", self.process.wrapper_port, creds.client_sap, creds.server_sap, 20)
        async with MeterClient(link, security=creds.security) as session:
            return await work(session, creds)

    def set_consumer_key(self, key: bytes) -> None:
        async def work(session, creds):
            transfer = encode_key_transfer([KeyTransfer.wrap(creds.master_key, KeyId.GLOBAL_UNICAST_ENCRYPTION, key)])
            await session.action("0-0:43.0.103.255", 2, transfer, class_id=64)
        asyncio.run(self._session("management", work))

    def read(self, *targets: tuple[str, int]) -> list:
        """(OBIS, attribute) values as the Data Readout client reads them, as plain Python."""
        async def work(session, creds):
            return [(await session.get(obis, attribute)).to_python() for obis, attribute in targets]
        return asyncio.run(self._session("data_readout", work))

    def now(self) -> dt.datetime:
        (stamp,) = self.read((CLOCK, 2))
        return axdr.decode_date_time(stamp).to_datetime()


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    process = start_meter(tmp_path_factory.mktemp("h1") / "meter", "--h1", "pty", "--http-port", "0",
                          "--start-time", "2026-06-09T06:00", "--phases", "3")
    try:
        m = Meter(process)
        smartmeter("sim", "load", "--power", str(LOAD_W), "--data-dir", str(process.data_dir))
        m.set_consumer_key(CONSUMER_KEY)
        yield m
    finally:
        process.stop()


class Capture:
    """What a consumer device on the pty receives, read as it arrives."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                self.data += os.read(self.fd, 4096)

    def close(self) -> bytes:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)
        return bytes(self.data)


def gurux_notifications(stream: bytes, key: bytes) -> list[ET.Element]:
    """GXDLMSTranslator on the captured bytes: the frames (SAPs 1 -> 0x67) cut and joined per
    push (a push ends with its last segment, CI 0x1n), each decrypted and described."""
    translator = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    translator.blockCipherKey = bytearray(key)
    translator.security = Security.ENCRYPTION
    translator.comments = True  # gurux decrypts a ciphered PDU when it comments on it
    message = GXDLMSTranslatorMessage()
    message.message = GXByteBuffer(stream)
    message.interfaceType = InterfaceType.WIRED_MBUS
    pushes, parts = [], []
    while translator.findNextFrame(message, GXByteBuffer()):
        xml = translator.messageToXml(message)
        assert '<TargetAddress Value="67" />' in xml and '<SourceAddress Value="1" />' in xml
        parts.append(bytes.fromhex(re.search(r'NextFrame Value="([0-9A-F]+)"', xml).group(1)))
        if not message.moreData:  # gurux saw the last segment
            pushes.append(b"".join(parts))
            parts = []
    return [_decrypted(translator.pduToXml(GXByteBuffer(apdu))) for apdu in pushes]


def _decrypted(described: str) -> ET.Element:
    """The DataNotification gurux shows in its comment on the ciphered PDU (its decryption)."""
    end_tag = "</DataNotification>"
    return ET.fromstring(described[described.index("<DataNotification>"):described.index(end_tag) + len(end_tag)])


def gurux_values(notification: ET.Element) -> dict:
    """The pushed structure as gurux describes it: OBIS (hex) -> (value, scaler, unit), and the clock."""
    body = notification.find(".//NotificationBody/DataValue/Structure")
    items = list(body)
    values = {"clock_ln": items[0].get("Value"), "clock": bytes.fromhex(items[1].get("Value"))}
    for entry in items[2:]:
        fields = list(entry)
        ln = fields[0].get("Value")
        value = fields[1].get("Value")
        scaler_unit = [_number(f) for f in fields[2]] if len(fields) == 3 else None
        values[ln] = (fields[1].tag, value, scaler_unit)
    return values


def _number(element: ET.Element) -> int:
    value = int(element.get("Value"), 16)
    return value - 256 if element.tag == "Int8" and value >= 128 else value


def local(moment: dt.datetime) -> str:
    return moment.strftime("%H:%M:%S")


INSTANTANEOUS = ("1-0:32.7.0.255", "1-0:52.7.0.255", "1-0:72.7.0.255", "1-0:31.7.0.255", "1-0:51.7.0.255",
                 "1-0:71.7.0.255", "1-0:1.7.0.255", "1-0:2.7.0.255", "1-0:2.8.0.255", "1-0:3.8.0.255", "1-0:4.8.0.255")
GURUX_TAGS = {2: "UInt16", 4: "UInt32"}  # long-unsigned, double-long-unsigned: by the value's octets


def hex_ln(obis: str) -> str:
    return Obis.parse(obis).to_bytes().hex().upper()


def test_pushes_come_at_the_written_times_and_gurux_reads_what_the_registers_hold(meter):
    """Three execution times written with the head-end CLI: three pushes, each standing for its
    instant (the clock entry), none else; gurux's values equal the registers (value, scaler, unit)."""
    start = meter.now()
    due = [start + dt.timedelta(seconds=s) for s in (12, 16, 21)]  # room for the CLI's association first
    energy_before, = meter.read(("1-0:1.8.0.255", 2))
    capture = Capture(meter.pty)
    meter.cli("management", "push-schedule", "consumer", *(a for d in due for a in ("--at", local(d))))
    while meter.now() < due[-1] + dt.timedelta(seconds=4):
        time.sleep(0.5)
    stream = capture.close()
    energy_after, serial, ldn, energy_su = meter.read(("1-0:1.8.0.255", 2), ("0-0:96.1.0.255", 2),
                                                      ("0-0:42.0.0.255", 2), ("1-0:1.8.0.255", 3))
    registers = meter.read(*((obis, attribute) for obis in INSTANTANEOUS for attribute in (2, 3)))
    notifications = gurux_notifications(stream, CONSUMER_KEY)
    assert len(notifications) == 3, stream.hex()
    energies = []
    for notification, when in zip(notifications, due):
        values = gurux_values(notification)
        assert values["clock_ln"] == "0000010000FF"
        pushed_at = axdr.decode_date_time(values["clock"]).to_datetime()
        assert pushed_at == when.replace(microsecond=0)  # the instant the schedule says
        assert values["0000600100FF"][1] == serial.hex().upper()
        assert values["00002A0000FF"][1] == ldn.hex().upper()
        assert len(values) == 2 + 16 - 2  # clock OBIS and time, then 14 attribute-0 entries (poly phase)
        for n, obis in enumerate(INSTANTANEOUS):
            value, scaler_unit = registers[2 * n], registers[2 * n + 1]
            tag, pushed, pushed_su = values[hex_ln(obis)]
            assert int(pushed, 16) == value and pushed_su == scaler_unit, obis
            assert tag == GURUX_TAGS[len(pushed) // 2], obis
        tag, energy, scaler_unit = values["0100010800FF"]
        assert tag == "UInt32" and scaler_unit == energy_su
        energies.append(int(energy, 16))
    assert [registers[6], registers[8], registers[10]] == [4000, 4000, 4000]  # mA: 2760 W spread on three phases
    assert energy_before <= energies[0] <= energies[1] <= energies[2] <= energy_after
    assert energies[2] > energies[0]  # 2760 W for 9 s: more than 6 Wh


class ThisMeter(Supplier):
    """The reader's supplier settings for this meter: its first frame is 68 FA FA 68 as every
    supplier's, the second one's L field is what this push setup's 16 entries come to, and the
    ciphered content's length takes two octets (82 xx xx) as at TINETZ."""

    name = "KSMW test meter"
    ic_start_byte = 23
    enc_data_start_byte = 27
    supplied_values = ["VoltageL1", "VoltageL2", "VoltageL3", "CurrentL1", "CurrentL2", "CurrentL3", "RealPowerIn",
                       "RealPowerOut", "RealEnergyIn", "RealEnergyOut", "ReactiveEnergyIn", "ReactiveEnergyOut",
                       "DeviceNumber", "LogicalDeviceNumber"]

    def __init__(self, second_frame_l: int) -> None:
        self.frame2_start_bytes = bytes([0x68, second_frame_l, second_frame_l, 0x68])
        self.frame2_start_bytes_hex = self.frame2_start_bytes.hex()


def test_smartmeter_austria_energy_reads_the_push_from_the_pty(meter):
    """The reader opens the pty itself (pyserial), as it opens an M-Bus adapter, and reads a push
    of the schedule written with the CLI (every 5 s)."""
    meter.cli("management", "push-schedule", "consumer", "--every", "5s")
    capture = Capture(meter.pty)  # one push, to learn the second frame's L field as a user reads it off
    hang_guard = time.monotonic() + 120
    while not re.search(rb"\x68\xFA\xFA\x68[\s\S]{251}\x16\x68([\s\S])\1\x68", bytes(capture.data)):
        assert time.monotonic() < hang_guard, "no push came on the pty"
        time.sleep(0.2)
    second_l = re.search(rb"\x68\xFA\xFA\x68[\s\S]{251}\x16\x68([\s\S])\1\x68", capture.close()).group(1)[0]
    # the reader splits its stream with a regular expression built from these bytes, unescaped
    assert chr(second_l) not in "()[]{}?*+|^$.\\", f"L = 0x{second_l:02X} would break the reader's pattern"
    energy_before, = meter.read(("1-0:1.8.0.255", 2))
    reading = AustrianReader(ThisMeter(second_l), meter.pty, CONSUMER_KEY.hex(), interval=6).read()
    energy_after, serial, ldn, u1, u2, u3, i1, i2, i3, p_plus, p_minus, a_minus, r_plus, r_minus = meter.read(
        ("1-0:1.8.0.255", 2), ("0-0:96.1.0.255", 2), ("0-0:42.0.0.255", 2), ("1-0:32.7.0.255", 2),
        ("1-0:52.7.0.255", 2), ("1-0:72.7.0.255", 2), ("1-0:31.7.0.255", 2), ("1-0:51.7.0.255", 2),
        ("1-0:71.7.0.255", 2), ("1-0:1.7.0.255", 2), ("1-0:2.7.0.255", 2), ("1-0:2.8.0.255", 2),
        ("1-0:3.8.0.255", 2), ("1-0:4.8.0.255", 2))
    assert reading.DeviceNumber.value == serial.decode()
    assert reading.LogicalDeviceNumber.value == ldn.decode()
    for got, register in ((reading.VoltageL1, u1), (reading.VoltageL2, u2), (reading.VoltageL3, u3)):
        assert got.value == pytest.approx(register / 10) and got.unit.name == "V"
    for got, register in ((reading.CurrentL1, i1), (reading.CurrentL2, i2), (reading.CurrentL3, i3)):
        assert got.value == pytest.approx(register / 1000) and got.unit.name == "A"
    assert reading.RealPowerIn.value == p_plus == LOAD_W
    assert reading.RealPowerOut.value == p_minus
    assert energy_before <= reading.RealEnergyIn.value <= energy_after
    assert reading.RealEnergyOut.value == a_minus
    assert reading.ReactiveEnergyIn.value == r_plus and reading.ReactiveEnergyOut.value == r_minus


def test_a_schedule_faster_than_the_airtime_skips_and_what_arrives_on_h1_is_ignored(tmp_path):
    """Every second (60 execution times) while a push takes about 1.4 s on the line: some are
    skipped, and the meter says so once and counts them; octets a consumer writes are counted
    and dropped. What the meter says at its stop is its count."""
    process = start_meter(tmp_path / "meter", "--h1", "pty", "--http-port", "0", "--start-time",
                          "2026-06-09T06:00", cli_options=("-v",))
    try:
        m = Meter(process)
        m.set_consumer_key(CONSUMER_KEY)
        m.cli("management", "push-schedule", "consumer", "--every", "1s")
        capture = Capture(m.pty)
        talker = os.open(m.pty, os.O_WRONLY | os.O_NOCTTY)
        os.write(talker, b"\x10\x40\xfe\x3e\x16" * 4)  # SND_NKE to the test address, four times: 20 octets
        os.close(talker)
        started = m.now()
        while m.now() < started + dt.timedelta(seconds=8):
            time.sleep(0.5)
        stream = capture.close()
    finally:
        process.stop()
    output = "".join(process.output)
    stats = re.search(r"H1 consumer port: pushes offered (\d+), pushes sent (\d+), pushes skipped (\d+), "
                      r"frames sent (\d+), octets sent (\d+), octets received ignored (\d+), write failures (\d+)",
                      output)
    assert stats, output
    offered, sent, skipped, frames, octets, ignored, failures = map(int, stats.groups())
    assert skipped >= 1 and sent >= 1 and offered >= sent + skipped
    assert frames == 2 * sent or frames == 2 * sent + 1  # two frames a push (the last may be cut by the stop)
    assert ignored == 20 and failures == 0
    assert output.count("a consumer push skipped") == 1
    assert output.count("arrived on the consumer port and were ignored") == 1
    assert len(gurux_notifications(stream, CONSUMER_KEY)) >= 1
