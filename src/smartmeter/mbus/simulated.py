"""Simulated M-Bus submeters: a G4 gas meter, a water meter and a heat meter.

They stand beside the simulated electricity meter on its M2 multi-utility interface, as
wired slaves on one bus (EN 13757-2/-3) or as wireless senders (EN 13757-4, OMS mode 5 or
7). Everything they say is a function of a seed and of the simulated time `now` passed
in (seconds since the Unix epoch): the same seed and the same `now` give the same
registers, so a test computes what a meter must read from the scenario alone.

The manufacturer code is "SIM" (a made-up code that says the device is simulated; it is
not a FLAG-registered manufacturer of real meters).

Consumption (each register counts from REFERENCE_EPOCH, the devices' notional
installation date) follows a daily curve with a closed-form integral::

    rate(t)  = mean * (1 + swing * cos(2 pi (t - peak) / 1 day))          swing < 1
    total(t) = mean * ((t - T0) + swing * D / (2 pi) * (sin(2 pi (t - peak) / D)
                                                        - sin(2 pi (T0 - peak) / D)))

so the registers never decrease and the instantaneous flow or power is rate(t). The heat
meter's water volume follows from its energy and a constant temperature difference
(1.163 kWh per m3 and K), its flow and return temperatures from the same daily curve.

Layers:

* `SimulatedSubmeter`: identity, state, registers and records (no link layer);
* `WiredSlave` / `SimulatedBus`: the sans-io slave side of a wired bus (bytes in at a
  `now`, bytes out), with primary and secondary addressing, FCB, SND_UD commands and
  test faults;
* `serve_bus` (asyncio TCP: one client, the master) and `WirelessSender` (UDP datagrams,
  one radio frame each).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from smartmeter.errors import DecodeError
from smartmeter.mbus.application import (
    CI_APPLICATION_RESET, CI_DATA_SEND, CI_SELECTION, CI_TIME_SYNC, Coding, LongHeader, SecondaryAddress,
    encode_datetime_f, encode_dib, encode_record, encode_rsp_ud, parse_telegram,
)
from smartmeter.mbus.keytransfer import KeyTransferError, KeyTransferStyle, unwrap_key, unwrap_smr5
from smartmeter.mbus.link import (
    ADDRESS_BROADCAST, ADDRESS_NETWORK_LAYER, ADDRESS_TEST, C_FCV, C_FUNCTION_MASK, Ack, BadFrame,
    ControlFrame, FrameReader, LongFrame, ShortFrame,
)
from smartmeter.mbus.security import encrypt_mode5, pad_plaintext
from smartmeter.mbus.wireless import MeterAddress

SIMULATED_MANUFACTURER = "SIM"
REFERENCE_EPOCH = 1704067200.0  # 2024-01-01T00:00:00Z
DAY = 86400.0
DEFAULT_TIME_ZONE = "Europe/Berlin"

KINDS = ("gas", "water", "heat")
MEDIUM = {"gas": 0x03, "water": 0x07, "heat": 0x04}
MEDIUM_NAME = {0x03: "gas", 0x07: "water", 0x04: "heat (outlet)"}
# plausible firmware versions of the simulated models
VERSION = {"gas": 0x21, "water": 0x15, "heat": 0x0A}

# --- EN 13757-3 status byte
STATUS_ABNORMAL = 0x03  # bits 0-1 = 11: abnormal situation
STATUS_POWER_LOW = 0x04
STATUS_TAMPER = 0x20  # manufacturer-specific bit 5 (the standard leaves bits 5-7 to the maker)

# --- the error flags record (DIF 02, VIF FD 17): one bit an alarm
ERROR_FLAG_BATTERY_LOW = 0x0001
ERROR_FLAG_LEAK = 0x0002
ERROR_FLAG_TAMPER = 0x0004

ALARMS = ("battery-low", "leak", "tamper")
FAULTS = ("silent", "wrong-identity", "bad-checksum", "endless", "collision")



# ---------------------------------------------------------------------------------------
# the physical side


@dataclass(frozen=True)
class DailyCurve:
    """A rate with a daily swing and its exact integral (see the module docstring)."""

    mean: float   # units per second
    swing: float  # 0 <= swing < 1: the rate never goes negative
    peak: float   # seconds after midnight UTC of the highest rate

    def rate(self, t: float) -> float:
        return self.mean * (1.0 + self.swing * math.cos(2 * math.pi * (t - self.peak) / DAY))

    def total(self, t: float) -> float:
        """Units accumulated from REFERENCE_EPOCH to t (0 before it)."""
        if t <= REFERENCE_EPOCH:
            return 0.0
        k = 2 * math.pi / DAY
        return self.mean * ((t - REFERENCE_EPOCH) + self.swing / k * (
            math.sin(k * (t - self.peak)) - math.sin(k * (REFERENCE_EPOCH - self.peak))))


@dataclass(frozen=True)
class Reading:
    """A submeter's registers at one instant, in the units of its records.

    volume_l (0.001 m3); flow_l_per_h (0.001 m3/h); energy_kwh / energy_mj (whole units,
    both from the same energy); power_w; flow / return temperature in 0.1 degC.
    Quantities a kind does not have are None.
    """

    volume_l: int
    flow_l_per_h: int | None = None
    energy_kwh: int | None = None
    energy_mj: int | None = None
    power_w: int | None = None
    flow_temperature_dc: int | None = None
    return_temperature_dc: int | None = None


@dataclass
class Alarms:
    battery_low: bool = False
    leak: bool = False  # water meters only
    tamper: bool = False

    def set(self, name: str, on: bool = True) -> None:
        if name not in ALARMS:
            raise ValueError(f"unknown alarm {name!r} (one of {', '.join(ALARMS)})")
        setattr(self, name.replace("-", "_"), on)


class SimulatedSubmeter:
    """One simulated submeter: identity, registers from a seed and `now`, and its records.

    Wired and wireless use the same records; the link layers are elsewhere.
    """

    def __init__(self, kind: str, *, seed: int = 0, identification: int | None = None,
                 primary_address: int = 0, fabrication_number: int | None = None,
                 version: int | None = None, coding: str = "bcd", energy_unit: str = "kWh",
                 time_zone: str = DEFAULT_TIME_ZONE) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown submeter kind {kind!r} (one of {', '.join(KINDS)})")
        if coding not in ("bcd", "binary"):
            raise ValueError(f"coding must be bcd or binary, not {coding!r}")
        if energy_unit not in ("kWh", "MJ"):
            raise ValueError(f"energy unit must be kWh or MJ, not {energy_unit!r}")
        if not 0 <= primary_address <= 250:
            raise ValueError(f"primary address {primary_address} is not 0..250")
        self.kind = kind
        self.seed = seed
        # string seeds hash the same in every process (random.seed with str, version 2)
        rng = random.Random(f"smartmeter-sim-{kind}-{seed}")
        self.identification = rng.randrange(10_000_000, 100_000_000) if identification is None else identification
        if not 0 <= self.identification <= 99_999_999:
            raise ValueError(f"identification {self.identification} is not 8 decimal digits")
        self.fabrication_number = (rng.randrange(10_000_000, 100_000_000) if fabrication_number is None
                                   else fabrication_number)
        self.manufacturer = SIMULATED_MANUFACTURER
        self.version = VERSION[kind] if version is None else version
        self.medium = MEDIUM[kind]
        self.primary_address = primary_address
        self.coding = coding
        self.energy_unit = energy_unit
        self.time_zone = ZoneInfo(time_zone)
        self.access_number = rng.randrange(256)
        self.message_counter = rng.randrange(1, 1 << 16)  # mode 7 AFL counter
        self.alarms = Alarms()
        self.clock_offset = 0.0  # the device clock minus true time, seconds
        # the operational AES key (wired: RSP_UD in OMS mode 5 once set) and the master
        # (default) key a transfer_key is wrapped under, with the wrap's style
        self.key: bytes | None = None
        self.master_key: bytes | None = None
        self.key_style = KeyTransferStyle.DSMR4
        self.key_change_counter: int | None = None  # SMR 5: the last counter accepted
        self.faults: set[str] = set()
        # the shut-off valve of gas and water meters: closed intervals [start, end or None]
        self.valve_closures: list[list[float | None]] = []
        peak = rng.uniform(6, 20) * 3600
        if kind == "gas":
            # a G4 in a heated home: 0.1-0.35 m3/h on average, 1000-9000 m3 on the register
            self.base_l = rng.randrange(1_000_000, 9_000_000)
            self.curve = DailyCurve(rng.uniform(0.10, 0.35) * 1000 / 3600, 0.8, peak)
        elif kind == "water":
            self.base_l = rng.randrange(100_000, 900_000)
            self.curve = DailyCurve(rng.uniform(120, 360) / DAY, 0.9, peak)  # 120-360 l a day
        else:
            self.base_wh = rng.randrange(5_000, 40_000) * 1000
            self.curve = DailyCurve(rng.uniform(1500, 4000) / 3600, 0.6, peak)  # Wh/s: mean 1.5-4 kW
            self.delta_t_dk = rng.randrange(150, 251)  # flow minus return, 0.1 K
            self.flow_mean_dc = rng.randrange(550, 701)

    # --- registers

    @property
    def has_valve(self) -> bool:
        return self.kind in ("gas", "water")

    def valve_open(self, now: float) -> bool:
        return not any(start <= now and (end is None or now < end) for start, end in self.valve_closures)

    def set_valve(self, open_: bool, now: float) -> None:
        """Open or close the shut-off valve at `now` (nothing flows while it is closed)."""
        if open_ == self.valve_open(now):
            return
        if open_:
            self.valve_closures[-1][1] = now
        else:
            self.valve_closures.append([now, None])

    def _used(self, now: float) -> float:
        """The curve's total up to `now` less what the closed valve held back."""
        held = 0.0
        for start, end in self.valve_closures:
            if start < now:
                held += self.curve.total(now if end is None else min(end, now)) - self.curve.total(start)
        return self.curve.total(now) - held

    def reading(self, now: float) -> Reading:
        flowing = self.valve_open(now)
        if self.kind == "gas":
            return Reading(volume_l=self.base_l + math.floor(self._used(now)))
        if self.kind == "water":
            return Reading(volume_l=self.base_l + math.floor(self._used(now)),
                           flow_l_per_h=round(self.curve.rate(now) * 3600) if flowing else 0)
        energy_wh = self.base_wh + self.curve.total(now)
        litres_per_wh = 1 / (1.163 * self.delta_t_dk / 10)  # 1.163 Wh per litre and K
        power_w = self.curve.rate(now) * 3600
        # the flow temperature rises and falls with the load, 5 K either side of its mean
        swing = (power_w / (self.curve.mean * 3600) - 1) / self.curve.swing
        flow_dc = self.flow_mean_dc + round(50 * swing)
        return Reading(volume_l=math.floor(energy_wh * litres_per_wh), flow_l_per_h=round(power_w * litres_per_wh),
                       energy_kwh=math.floor(energy_wh / 1000), energy_mj=math.floor(energy_wh * 0.0036),
                       power_w=round(power_w), flow_temperature_dc=flow_dc,
                       return_temperature_dc=flow_dc - self.delta_t_dk)

    def due_date(self, now: float) -> dt.date:
        """The last billing due date: the first day of the device's current month."""
        return self.device_time(now).date().replace(day=1)

    def due_date_reading(self, now: float) -> Reading:
        due = dt.datetime.combine(self.due_date(now), dt.time(), self.time_zone)
        return self.reading(due.timestamp() - self.clock_offset)

    def device_time(self, now: float) -> dt.datetime:
        """The submeter's own clock (local time of its zone), to the second."""
        return dt.datetime.fromtimestamp(math.floor(now + self.clock_offset), self.time_zone)

    def set_clock(self, local: dt.datetime, now: float) -> None:
        """Set the device clock to `local` (naive: the device's zone) at true time `now`."""
        if local.tzinfo is None:
            local = local.replace(tzinfo=self.time_zone)
        self.clock_offset = local.timestamp() - now

    # --- header fields

    @property
    def status(self) -> int:
        status = 0
        if self.alarms.battery_low:
            status |= STATUS_POWER_LOW
        if self.alarms.leak:
            status |= STATUS_ABNORMAL
        if self.alarms.tamper:
            status |= STATUS_TAMPER
        return status

    @property
    def error_flags(self) -> int:
        return ((ERROR_FLAG_BATTERY_LOW if self.alarms.battery_low else 0)
                | (ERROR_FLAG_LEAK if self.alarms.leak else 0)
                | (ERROR_FLAG_TAMPER if self.alarms.tamper else 0))

    @property
    def secondary_address(self) -> bytes:
        """ID (BCD, least significant byte first), manufacturer, version, medium: as in CI 0x52."""
        return self.long_header(0).secondary_address().to_bytes()

    def describe(self, wired: bool = True) -> str:
        return (f"{self.kind:<5} ID {self.identification:08d}  manufacturer {self.manufacturer} (simulated)  "
                f"version {self.version}  medium 0x{self.medium:02X} ({MEDIUM_NAME[self.medium]})  "
                f"fabrication number {self.fabrication_number:08d}"
                + (f"  primary address {self.primary_address}" if wired else ""))

    def next_access_number(self) -> int:
        self.access_number = (self.access_number + 1) & 0xFF
        return self.access_number

    # --- records (EN 13757-3 variable data structure)

    def records(self, now: float, telegram: int = 0) -> bytes:
        """The data records of telegram `telegram` (0: current values; heat meters also 1:
        the last due date's values, storage number 1). Without the trailing 1F; see
        `telegram_count`."""
        energy_vif = 0x06 if self.energy_unit == "kWh" else 0x0E  # kWh (10^3 Wh) / MJ (10^6 J)
        if telegram == 1 and self.kind == "heat":
            due = self.due_date_reading(now)
            energy = due.energy_kwh if self.energy_unit == "kWh" else due.energy_mj
            return b"".join((
                self._number(energy, energy_vif, 4, storage_number=1),
                self._number(due.volume_l, 0x13, 4, storage_number=1),
                encode_record(self.due_date(now), 0x6C, coding=Coding.DATE_G, storage_number=1)))
        reading = self.reading(now)
        out = []
        if self.kind == "heat":
            out.append(self._number(reading.energy_kwh if self.energy_unit == "kWh" else reading.energy_mj,
                                    energy_vif, 4))
        out.append(self._number(reading.volume_l, 0x13, 4))  # 0.001 m3
        if self.kind == "heat":
            out.append(self._number(reading.flow_temperature_dc, 0x5A, 2))  # 0.1 degC
            out.append(self._number(reading.return_temperature_dc, 0x5E, 2))
            out.append(self._number(reading.power_w, 0x2B, 3))  # W
        if reading.flow_l_per_h is not None:
            out.append(self._number(reading.flow_l_per_h, 0x3B, 3))  # 0.001 m3/h
        local = self.device_time(now)
        out.append(encode_datetime_record(local))
        out.append(encode_record(self.fabrication_number, 0x78, coding=Coding.BCD8))
        out.append(encode_record(self.error_flags, 0x7D, vifes=(0x17,), coding=Coding.INT16))
        if self.has_valve:  # VIFE FD 1A digital output: 1 the valve is open, 0 closed
            out.append(encode_record(1 if self.valve_open(now) else 0, 0x7D, vifes=(0x1A,), coding=Coding.INT8))
        return b"".join(out)

    @property
    def telegram_count(self) -> int:
        return 2 if self.kind == "heat" else 1

    def _number(self, value: int | None, vif: int, size: int, storage_number: int = 0) -> bytes:
        """A value of `size` bytes: binary, or 2*size BCD digits."""
        assert value is not None
        if self.coding == "bcd":
            coding = {2: Coding.BCD4, 3: Coding.BCD6, 4: Coding.BCD8}[size]
        else:
            coding = {2: Coding.INT16, 3: Coding.INT24, 4: Coding.INT32}[size]
        return encode_record(value, vif, coding=coding, storage_number=storage_number)

    def long_header(self, access_number: int, identification: int | None = None,
                    configuration: int = 0) -> LongHeader:
        """CI 0x72 header: ID, manufacturer, version, medium, access number, status,
        configuration (0: no encryption)."""
        ident = self.identification if identification is None else identification
        return LongHeader(ident, self.manufacturer, self.version, self.medium, access_number, self.status,
                          configuration)

    @property
    def address_bytes(self) -> bytes:
        """M (2) || ID (4) || version || medium: the mode-5 IV's first 8 bytes."""
        return self.long_header(0).to_bytes()[4:6] + self.long_header(0).to_bytes()[0:4] + bytes(
            (self.version, self.medium))

    def transfer_key(self, wrapped: bytes) -> bool:
        """A transfer_key from the master: unwrap under the master key; True when taken."""
        if self.master_key is None:
            return False
        address = MeterAddress(self.manufacturer, f"{self.identification:08d}", self.version, self.medium)
        try:
            if self.key_style is KeyTransferStyle.SMR5:
                data = unwrap_smr5(self.master_key, wrapped, address, self.key_change_counter)
                self.key, self.key_change_counter = data.key, data.key_change_counter
            else:
                self.key = unwrap_key(self.key_style, self.master_key, wrapped)
        except (KeyTransferError, DecodeError):
            return False
        return True


def encode_datetime_record(local: dt.datetime) -> bytes:
    """04 6D + type F of an aware local time, with its summer-time bit."""
    return (encode_dib(Coding.INT32) + bytes((0x6D,))
            + encode_datetime_f(local.replace(tzinfo=None), summer_time=bool(local.dst())))


# ---------------------------------------------------------------------------------------
# the wired slave (sans-io)


@dataclass
class WiredSlave:
    """A submeter's link-layer state on a wired bus."""

    meter: SimulatedSubmeter
    selected: bool = False  # selected by secondary address (answers at 0xFD)
    last_c: int | None = None  # C field of the last frame with FCV
    last_reply: bytes | None = None
    next_telegram: int = 0
    twin: "WiredSlave | None" = None  # fault "collision": the other device on our address

    def addressed(self, address: int) -> bool:
        if address == ADDRESS_NETWORK_LAYER:
            return self.selected
        return address in (self.meter.primary_address, ADDRESS_TEST, ADDRESS_BROADCAST)

    def reset_link(self) -> None:
        """SND_NKE: forget the FCB and the last answer; the next telegram is the first."""
        self.last_c = None
        self.last_reply = None
        self.next_telegram = 0

    def is_repeat(self, c: int) -> bool:
        """A frame with FCV, of the same function and with the same FCB as the last one: the
        master did not get our answer and asks again. (The function counts too, so that a
        REQ_UD2 after a SND_UD with the same bit is not answered with that SND_UD's E5.)"""
        if not c & C_FCV:
            return False
        repeat = self.last_c == c and self.last_reply is not None
        self.last_c = c
        return repeat

    def twin_answer(self, reply: bytes, now: float, address: int) -> bytes:
        """Fault "collision": what a second device of the same kind with the same primary
        address (a wiring mistake) answers at the same time: its own telegram to a request,
        the same E5 to a command."""
        if reply == Ack().to_bytes():
            return reply
        if self.twin is None:
            meter = self.meter
            self.twin = WiredSlave(SimulatedSubmeter(meter.kind, seed=meter.seed + 1_000_003,
                                                     primary_address=meter.primary_address))
        return self.twin.rsp_ud(now, address)

    def rsp_ud(self, now: float, address: int) -> bytes:
        """The next telegram (RSP_UD long frame)."""
        meter = self.meter
        index = self.next_telegram
        endless = "endless" in meter.faults
        count = meter.telegram_count
        more = endless or index + 1 < count
        ident = (meter.identification + 1) % 100_000_000 if "wrong-identity" in meter.faults else None
        access = meter.next_access_number()
        records = meter.records(now, index % count) + (b"\x1F" if more else b"")
        if meter.key is None:
            header = meter.long_header(access, ident)
        else:
            # OMS mode 5 on the wired bus: the records (and the 1F) encrypted behind 2F2F
            plain = pad_plaintext(records)
            header = meter.long_header(access, ident, (5 << 8) | ((len(plain) // 16) << 4))
            records = encrypt_mode5(meter.key, meter.address_bytes, access, plain)
        reply = encode_rsp_ud(address, header, [records])
        self.next_telegram = index + 1 if more else 0
        if "bad-checksum" in meter.faults:
            reply = reply[:-2] + bytes(((reply[-2] + 1) & 0xFF,)) + reply[-1:]
        return reply


class SimulatedBus:
    """Several wired slaves on one bus, sans-io: `receive(bytes, now)` returns what the
    slaves put on the bus in answer (b"" when none answers).

    When more than one slave answers at once the bus carries the bitwise AND of their
    bytes (a space, 0, is the slave drawing current: it wins over a mark), which is how a
    collision looks to the master: a checksum error or garbage.
    """

    def __init__(self, meters: Iterable[SimulatedSubmeter], log: Callable[[str], None] | None = None) -> None:
        self.slaves = [WiredSlave(m) for m in meters]
        self._reader = FrameReader()
        self._log = log or (lambda line: None)

    def receive(self, data: bytes, now: float) -> bytes:
        self._reader.feed(data)
        out = bytearray()
        for item in self._reader.take():
            if isinstance(item, BadFrame):
                continue  # a slave ignores a frame it cannot read: the master times out
            out += self._answer(item, now)
        return bytes(out)

    def _answer(self, frame, now: float) -> bytes:
        if isinstance(frame, Ack) or frame.c & 0x40 == 0:
            return b""  # not from a master
        address = frame.a
        replies: list[bytes] = []
        if isinstance(frame, (ControlFrame, LongFrame)) and frame.ci == CI_SELECTION and address == ADDRESS_NETWORK_LAYER:
            for slave in self.slaves:
                if "silent" in slave.meter.faults:
                    continue
                slave.selected = _matches(frame.data, slave.meter)
                if slave.selected:
                    replies.append(Ack().to_bytes())
                    self._log(f"{slave.meter.kind} {slave.meter.identification:08d} selected")
            return _collide(replies)
        for slave in self.slaves:
            if "silent" in slave.meter.faults or not slave.addressed(address):
                continue
            reply = self._slave_answer(slave, frame, now)
            if address == ADDRESS_BROADCAST:
                continue  # everyone listens, nobody answers
            if reply:
                replies.append(reply)
                if "collision" in slave.meter.faults:
                    replies.append(slave.twin_answer(reply, now, address))
        return _collide(replies)

    def _slave_answer(self, slave: WiredSlave, frame, now: float) -> bytes:
        function = frame.c & C_FUNCTION_MASK
        ack = Ack().to_bytes()
        if isinstance(frame, ShortFrame) and frame.c == 0x40:  # SND_NKE
            slave.reset_link()
            if frame.a == ADDRESS_NETWORK_LAYER:
                slave.selected = False  # EN 13757-3: SND_NKE to 253 ends the selection
            return ack
        if isinstance(frame, ShortFrame) and function in (0xA, 0xB):
            # REQ_UD2, and REQ_UD1 alike: the devices have no class 1 (alarm) data of their own
            if slave.is_repeat(frame.c):
                return slave.last_reply or b""
            reply_address = frame.a if frame.a == ADDRESS_NETWORK_LAYER else slave.meter.primary_address
            slave.last_reply = slave.rsp_ud(now, reply_address)
            return slave.last_reply
        if isinstance(frame, (ControlFrame, LongFrame)) and function == 0x3:  # SND_UD
            if slave.is_repeat(frame.c):
                slave.last_reply = ack
                return ack  # applied already: only the acknowledgement was lost
            if not self._apply(slave, frame.ci, frame.data, now):
                slave.last_reply = None  # nothing to repeat: asked again, it is refused again
                return b""  # a command the slave does not understand: no answer
            slave.last_reply = ack
            return ack
        return b""

    def _apply(self, slave: WiredSlave, ci: int, data: bytes, now: float) -> bool:
        """A SND_UD's command; False (and no answer) for one the slave does not know."""
        meter = slave.meter
        try:
            telegram = parse_telegram(ci, data)
        except DecodeError:
            return False
        if ci == CI_APPLICATION_RESET:
            slave.next_telegram = 0
            return True
        if ci == CI_TIME_SYNC:
            return self._set_time(slave, telegram.time, now)
        if ci != CI_DATA_SEND or len(telegram.records) != 1:
            return False
        record = telegram.records[0]
        try:
            value = record.value
        except DecodeError:
            return False
        if record.vif is not None and record.vif & 0x7F == 0x7A and not record.vifes and isinstance(value, int):
            if not 0 <= value <= 250:
                return False
            meter.primary_address = value
            self._log(f"{meter.kind} {meter.identification:08d} primary address now {value}")
            return True
        if record.vif is not None and record.vif & 0x7F == 0x6D and isinstance(value, dt.datetime):
            return self._set_time(slave, value, now)
        if record.vif is not None and record.vif & 0x7F == 0x7D and record.vifes[:1] == (0x19,) \
                and record.coding == 0x0D:
            # transfer_key: the LVAR's bytes as the head-end wrapped them (not a text)
            if not meter.transfer_key(record.data[1:]):
                return False
            self._log(f"{meter.kind} {meter.identification:08d} took a new key: telegrams now in OMS mode 5")
            return True
        if record.vif is not None and record.vif & 0x7F == 0x7D and record.vifes[:1] == (0x1A,) \
                and meter.has_valve and value in (0, 1):
            meter.set_valve(value == 1, now)
            self._log(f"{meter.kind} {meter.identification:08d} valve {'opened' if value else 'closed'}")
            return True
        return False

    def _set_time(self, slave: WiredSlave, local: dt.datetime | None, now: float) -> bool:
        if local is None:
            return False
        slave.meter.set_clock(local, now)
        self._log(f"{slave.meter.kind} {slave.meter.identification:08d} clock set to {local.isoformat()}")
        return True


def _matches(selection: bytes, meter: SimulatedSubmeter) -> bool:
    """CI 0x52 selection: ID digits (F = any digit), manufacturer (FFFF any), version and
    medium (FF any) against the meter's own address."""
    try:
        wanted = parse_telegram(CI_SELECTION, selection).header
    except DecodeError:
        return False
    return isinstance(wanted, SecondaryAddress) and wanted.matches(meter.long_header(0))


def _collide(replies: list[bytes]) -> bytes:
    if not replies:
        return b""
    if len(replies) == 1:
        return replies[0]
    length = max(len(r) for r in replies)
    out = bytearray(b"\xff" * length)  # idle line: mark
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] &= byte
    return bytes(out)


# ---------------------------------------------------------------------------------------
# time and transports


class SimulatedClock:
    """Simulated time: starts at `start` (Unix seconds) and runs `speed` times faster than
    the monotonic clock."""

    def __init__(self, start: float, speed: float = 1.0, monotonic: Callable[[], float] | None = None) -> None:
        self._monotonic = monotonic or time.monotonic
        self._origin = self._monotonic()
        self.start = start
        self.speed = speed

    def now(self) -> float:
        return self.start + (self._monotonic() - self._origin) * self.speed


async def serve_bus_pty(bus: SimulatedBus, clock: Callable[[], float],
                        started: Callable[[str], None] | None = None) -> None:
    """The bus on a new pseudo-terminal: the master opens its path as a serial port (a pty has
    no baud rate or parity; the bytes are the bus's). Runs until cancelled."""
    import os
    import tty

    master_fd, slave_fd = os.openpty()
    # raw: no echo and no line discipline between the master's bytes and ours. The slave side
    # stays open here too, so a master that closes and opens the port again finds the bus.
    tty.setraw(slave_fd)
    os.set_blocking(master_fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(master_fd, 4096)
        except OSError:  # nothing there after all
            return
        answer = bus.receive(data, clock())
        if answer:
            os.write(master_fd, answer)  # an answer is at most a few hundred bytes: the pty takes it

    loop.add_reader(master_fd, readable)
    try:
        if started is not None:
            started(os.ttyname(slave_fd))
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(master_fd)
        os.close(master_fd)
        os.close(slave_fd)


async def serve_bus(bus: SimulatedBus, host: str, port: int, clock: Callable[[], float],
                    started: Callable[[int], None] | None = None) -> None:
    """The bus on TCP (a serial-over-TCP M-Bus level converter): one client at a time, the
    master; a second connection is closed at once. Runs until cancelled."""
    busy = asyncio.Lock()

    async def master(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if busy.locked():
            writer.close()
            return
        async with busy:
            try:
                while data := await reader.read(4096):
                    answer = bus.receive(data, clock())
                    if answer:
                        writer.write(answer)
                        await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

    server = await asyncio.start_server(master, host, port)
    async with server:
        if started is not None:
            started(server.sockets[0].getsockname()[1])
        await server.serve_forever()


class WirelessSender:
    """Periodic wireless M-Bus telegrams (SND_NR) of one submeter, encrypted in OMS mode 5
    or 7, as one UDP datagram per radio frame. Sans-io apart from `run`."""

    def __init__(self, meter: SimulatedSubmeter, *, mode: int, key: bytes, crc: str = "A",
                 interval: float = 30.0, jitter: float = 0.1) -> None:
        if mode not in (5, 7):
            raise ValueError(f"security mode {mode} is not 5 or 7")
        if len(key) != 16:
            raise ValueError("the key is 16 bytes (AES-128)")
        self.meter = meter
        self.mode = mode
        self.key = key
        self.crc = crc
        self.interval = interval
        self.jitter = jitter
        self._rng = random.Random(f"smartmeter-sim-radio-{meter.kind}-{meter.seed}")

    def telegram(self, now: float) -> bytes:
        """The next radio frame (with CRCs of format A or B)."""
        from smartmeter.mbus.wireless import encode_wmbus

        meter = self.meter
        address = MeterAddress(meter.manufacturer, f"{meter.identification:08d}", meter.version, meter.medium)
        counter = None
        if self.mode == 7:
            meter.message_counter += 1
            counter = meter.message_counter
        return encode_wmbus(address, meter.records(now), access_number=meter.next_access_number(),
                            security=self.mode, key=self.key, message_counter=counter, crc=self.crc,
                            status=meter.status)

    def next_delay(self) -> float:
        """Seconds to the next transmission: the interval with a random +-jitter, so that
        several senders do not keep colliding."""
        return self.interval * (1 + self._rng.uniform(-self.jitter, self.jitter))

    async def run(self, target: tuple[str, int], clock: Callable[[], float],
                  sent: Callable[[bytes], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=target,
                                                           family=socket.AF_INET)
        try:
            await asyncio.sleep(self._rng.uniform(0, min(1.0, self.interval)))
            while True:
                frame = self.telegram(clock())
                transport.sendto(frame)
                if sent is not None:
                    sent(frame)
                await asyncio.sleep(self.next_delay())
        finally:
            transport.close()
