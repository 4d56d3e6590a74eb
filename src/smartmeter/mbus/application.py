"""EN 13757-3 M-Bus application layer: telegram headers, data records, and their encoder.

`parse_telegram(ci, data)` decodes the user data of a long frame (everything after the CI
field) into a `Telegram`: its header, its data records and the special functions. It is
total: any bytes give a Telegram or an `MbusApplicationError` (a DecodeError). A record
whose data field holds an invalid value (a BCD digit above 9, a calendar date that does
not exist) does not spoil the telegram: the record keeps its raw bytes and
`Record.value` raises the typed error.

A data record::

    DIF [DIFE x 0..10] VIF [plain-text unit] [VIFE x 0..10] data

* DIF: bit 7 extension, bit 6 lowest storage-number bit, bits 5-4 function
  (instantaneous / maximum / minimum / during error), bits 3-0 data field coding.
* DIFE: bit 7 extension, bit 6 subunit bit, bits 5-4 tariff bits, bits 3-0 storage bits;
  each DIFE adds its bits above those of the previous one.
* VIF: bit 7 extension, bits 6-0 the quantity and its decimal exponent (primary table), or
  0x7B / 0x7D: the first VIFE selects from extension table FB / FD, 0x7C: a plain-text
  unit, 0x7E: any quantity (readout selection), 0x7F: manufacturer specific.
* later VIFEs are "combinable" (orthogonal): they scale (0x70-0x77, 0x7D) or qualify the
  value (per time, limit values, error codes ...).

The tables below are data copied from EN 13757-3 (tables "VIF codes", "FB", "FD",
"combinable VIFE"); the DLMS units are the Blue Book enumeration (IEC 62056-6-2, class
id 3 "scaler_unit"), checked against the `Unit` enum of the gurux-dlms package.

Encoding example (a gas meter's volume and its date-time, as in OMS Annex N)::

    >>> header = LongHeader(12345678, "ELS", version=0x33, medium=MEDIUM_GAS, access_number=0x2A)
    >>> records = [encode_record(2850427, vif=0x14, coding=Coding.BCD8),
    ...            encode_record(dt.datetime(2008, 5, 31, 23, 50), vif=0x6D, coding=Coding.DATETIME_F)]
    >>> encode_rsp_ud(0xFD, header, records).hex().upper()
    '681B1B6808FD7278563412931533032A0000000C1427048502046D32371F157316'
"""
from __future__ import annotations

import datetime as dt
import enum
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Union

from smartmeter.errors import DecodeError, EncodeError, TruncatedError
from smartmeter.mbus.link import C_ACD, C_DFC, RSP_UD, LongFrame

# --- CI fields (EN 13757-3 table 1, the ones a wired master and its slaves use)
CI_APPLICATION_RESET = 0x50
CI_DATA_SEND = 0x51  # SND_UD with data records, no header
CI_SELECTION = 0x52  # select a slave by its secondary address
CI_TIME_SYNC = 0x6C  # clock synchronisation, one type F date-time
CI_APPLICATION_ERROR = 0x70  # slave -> master: error code
CI_ALARM = 0x71  # slave -> master: alarm status
CI_RSP_LONG = 0x72  # variable data, long header (12 bytes)
CI_RSP_FIXED = 0x73  # fixed data structure (EN 1434-3), LSB first
CI_RSP_NONE = 0x78  # variable data, no header
CI_RSP_SHORT = 0x7A  # variable data, short header (4 bytes)

MAX_DIFE = 10
MAX_VIFE = 10
MAX_RECORDS = 256  # no 252-byte telegram holds more than 126; bounds memory for any input
MAX_PLAIN_TEXT_UNIT = 32  # what libmbus admits; the length byte of a frame allows 250

# --- Medium (device type) codes, EN 13757-3 table 3 / OMS
MEDIUM_OTHER = 0x00
MEDIUM_OIL = 0x01
MEDIUM_ELECTRICITY = 0x02
MEDIUM_GAS = 0x03
MEDIUM_HEAT_OUTLET = 0x04
MEDIUM_STEAM = 0x05
MEDIUM_WARM_WATER = 0x06
MEDIUM_WATER = 0x07
MEDIUM_HEAT_COST_ALLOCATOR = 0x08
MEDIUM_HEAT_INLET = 0x0C

MEDIUM_NAMES: dict[int, str] = {
    0x00: "Other", 0x01: "Oil", 0x02: "Electricity", 0x03: "Gas", 0x04: "Heat (outlet)",
    0x05: "Steam", 0x06: "Warm water (30-90 °C)", 0x07: "Water", 0x08: "Heat cost allocator",
    0x09: "Compressed air", 0x0A: "Cooling load meter (outlet)", 0x0B: "Cooling load meter (inlet)",
    0x0C: "Heat (inlet)", 0x0D: "Heat / cooling load meter", 0x0E: "Bus / system component",
    0x0F: "Unknown medium", 0x15: "Hot water (>= 90 °C)", 0x16: "Cold water",
    0x17: "Dual register (hot/cold) water", 0x18: "Pressure", 0x19: "A/D converter",
    0x1A: "Smoke detector", 0x1B: "Room sensor", 0x1C: "Gas detector", 0x20: "Breaker (electricity)",
    0x21: "Valve (gas or water)", 0x25: "Customer unit (display)", 0x28: "Waste water",
    0x29: "Garbage", 0x31: "Communication controller", 0x32: "Unidirectional repeater",
    0x33: "Bidirectional repeater", 0x36: "Radio converter (system side)",
    0x37: "Radio converter (meter side)",
}

# --- Status byte (EN 13757-3 table 5)
STATUS_APPLICATION_MASK = 0x03
STATUS_APPLICATION_BUSY = 0x01
STATUS_APPLICATION_ERROR = 0x02
STATUS_ABNORMAL_CONDITION = 0x03
STATUS_POWER_LOW = 0x04
STATUS_PERMANENT_ERROR = 0x08
STATUS_TEMPORARY_ERROR = 0x10



def status_flags(status: int) -> tuple[str, ...]:
    """The conditions the status byte reports, in the standard's words (bits 5-7 are the
    manufacturer's and are named by number)."""
    flags = []
    application = status & STATUS_APPLICATION_MASK
    if application:
        flags.append({STATUS_APPLICATION_BUSY: "application busy", STATUS_APPLICATION_ERROR: "application error",
                      STATUS_ABNORMAL_CONDITION: "abnormal condition"}[application])
    for bit, name in ((STATUS_POWER_LOW, "power low"), (STATUS_PERMANENT_ERROR, "permanent error"),
                      (STATUS_TEMPORARY_ERROR, "temporary error")):
        if status & bit:
            flags.append(name)
    flags += [f"manufacturer bit {n}" for n in (5, 6, 7) if status & (1 << n)]
    return tuple(flags)


# Application error codes a slave sends with CI 0x70 (EN 13757-3 table 23).
APPLICATION_ERRORS: dict[int, str] = {
    0: "Unspecified error", 1: "Unimplemented CI-Field", 2: "Buffer too long, truncated",
    3: "Too many records", 4: "Premature end of record", 5: "More than 10 DIFE's",
    6: "More than 10 VIFE's", 7: "Reserved", 8: "Application too busy for handling readout request",
    9: "Too many readouts (for battery powered slaves)",
}


class MbusApplicationError(DecodeError):
    """Malformed EN 13757-3 user data."""


class MbusApplicationTruncatedError(MbusApplicationError, TruncatedError):
    """The user data end inside a header or record."""


class MbusUnknownCiError(MbusApplicationError):
    """A CI field this decoder does not implement."""


class MbusTooManyExtensionsError(MbusApplicationError):
    """More than 10 DIFEs or VIFEs."""


class MbusValueError(MbusApplicationError):
    """A data field whose content is not a value of its coding (bad BCD digit, no such date)."""


# --------------------------------------------------------------------------------------
# Manufacturer code and identification


def manufacturer_to_text(code: int) -> str:
    """The three letters of a manufacturer code (EN 13757-3 §5.6, letters - 64 in 5 bits each)."""
    # 0 and 27..31 are no letters; shown as the characters 64 + n ("@", "[" ...) like
    # libmbus does, so that every code has a text and the text gives the code back.
    return "".join(chr(64 + n) for n in ((code >> 10) & 0x1F, (code >> 5) & 0x1F, code & 0x1F))


def manufacturer_from_text(text: str) -> int:
    """The code of three capital letters (or the characters `manufacturer_to_text` shows for
    codes that are no letters)."""
    if len(text) != 3 or not all("@" <= ch <= "_" for ch in text):
        raise EncodeError(f"a manufacturer code is three letters A-Z, not {text!r}")
    a, b, c = (ord(ch) - 64 for ch in text)
    return (a << 10) | (b << 5) | c


def _bcd_digits(raw: bytes) -> str:
    """The nibbles of a little-endian BCD field, most significant first, as hex digits."""
    return raw[::-1].hex().upper()


def _identification_to_bcd(identification: int | str) -> bytes:
    text = f"{identification:08d}" if isinstance(identification, int) else identification
    if len(text) != 8 or not text.isdigit():
        raise EncodeError(f"an identification number is 8 decimal digits, not {identification!r}")
    return bytes.fromhex(text)[::-1]


# --------------------------------------------------------------------------------------
# Headers


@dataclass(frozen=True)
class LongHeader:
    """The 12-byte header after CI 0x72: the slave's secondary address and its state."""

    identification: int | str  # 8 BCD digits; decoded as text when a digit is not decimal
    manufacturer: str
    version: int = 0
    medium: int = MEDIUM_OTHER
    access_number: int = 0
    status: int = 0
    configuration: int = 0  # "signature" in EN 1434-3; the encryption mode in OMS

    @property
    def identification_text(self) -> str:
        ident = self.identification
        return f"{ident:08d}" if isinstance(ident, int) else ident

    @property
    def manufacturer_code(self) -> int:
        return manufacturer_from_text(self.manufacturer)

    @property
    def medium_name(self) -> str:
        return MEDIUM_NAMES.get(self.medium, f"Reserved (0x{self.medium:02X})")

    def secondary_address(self) -> "SecondaryAddress":
        return SecondaryAddress(self.identification, self.manufacturer, self.version, self.medium)

    def to_bytes(self) -> bytes:
        for name in ("version", "medium", "access_number", "status"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise EncodeError(f"long header {name} is one byte")
        if not 0 <= self.configuration <= 0xFFFF:
            raise EncodeError("long header configuration is two bytes")
        return (_identification_to_bcd(self.identification)
                + self.manufacturer_code.to_bytes(2, "little")
                + bytes([self.version, self.medium, self.access_number, self.status])
                + self.configuration.to_bytes(2, "little"))


@dataclass(frozen=True)
class ShortHeader:
    """The 4-byte header after CI 0x7A."""

    access_number: int
    status: int
    configuration: int

    def to_bytes(self) -> bytes:
        return bytes([self.access_number, self.status]) + self.configuration.to_bytes(2, "little")


@dataclass(frozen=True)
class FixedHeader:
    """The identification and state of a fixed data structure (CI 0x73)."""

    identification: int | str
    access_number: int
    status: int
    medium: int

    @property
    def identification_text(self) -> str:
        ident = self.identification
        return f"{ident:08d}" if isinstance(ident, int) else ident


@dataclass(frozen=True)
class SecondaryAddress:
    """The 8 bytes of a CI 0x52 selection: ID, manufacturer, version, medium.

    In a selection an ID nibble 0xF, manufacturer 0xFFFF, version or medium 0xFF are
    wildcards; `manufacturer` is then "" and the identification text carries the 'F's.
    """

    identification: int | str
    manufacturer: str
    version: int
    medium: int

    @property
    def identification_text(self) -> str:
        ident = self.identification
        return f"{ident:08d}" if isinstance(ident, int) else ident

    def to_bytes(self) -> bytes:
        text = self.identification_text
        if len(text) != 8 or any(ch not in "0123456789F" for ch in text.upper()):
            raise EncodeError(f"a selection ID is 8 digits or F wildcards, not {text!r}")
        man = 0xFFFF if self.manufacturer == "" else manufacturer_from_text(self.manufacturer)
        return bytes.fromhex(text)[::-1] + man.to_bytes(2, "little") + bytes([self.version, self.medium])

    def matches(self, header: LongHeader) -> bool:
        """Whether `header` is this address (wildcards match anything)."""
        mine, theirs = self.identification_text.upper(), header.identification_text.upper()
        if any(a != "F" and a != b for a, b in zip(mine, theirs)):
            return False
        if self.manufacturer and self.manufacturer != header.manufacturer:
            return False
        if self.version != 0xFF and self.version != header.version:
            return False
        return self.medium == 0xFF or self.medium == header.medium


def _decode_identification(raw: bytes) -> int | str:
    digits = _bcd_digits(raw)
    return int(digits) if digits.isdigit() else digits


def _decode_long_header(data: bytes) -> LongHeader:
    if len(data) < 12:
        raise MbusApplicationTruncatedError("M-Bus long header", len(data), "fewer than 12 bytes")
    return LongHeader(
        _decode_identification(data[0:4]),
        manufacturer_to_text(int.from_bytes(data[4:6], "little")),
        data[6], data[7], data[8], data[9], int.from_bytes(data[10:12], "little"))


# --------------------------------------------------------------------------------------
# Value information: tables as data


class TimeUnit(enum.Enum):
    SECOND = "s"
    MINUTE = "min"
    HOUR = "h"
    DAY = "d"
    MONTH = "month"
    YEAR = "a"


_NN_TIME = (TimeUnit.SECOND, TimeUnit.MINUTE, TimeUnit.HOUR, TimeUnit.DAY)
_PP_TIME = (TimeUnit.HOUR, TimeUnit.DAY, TimeUnit.MONTH, TimeUnit.YEAR)

# DLMS Blue Book unit enumeration (IEC 62056-6-2 class 3 scaler_unit), the entries used here.
DLMS_UNITS: dict[str, int] = {
    "a": 1, "month": 2, "d": 4, "h": 5, "min": 6, "s": 7, "°C": 9, "currency": 10,
    "m³": 13, "m³/h": 15, "m³/d": 17, "l": 19, "kg": 20, "J": 25, "J/h": 26, "W": 27,
    "Wh": 30, "A": 33, "V": 35, "Hz": 44, "kg/s": 50, "K": 52, "%": 56, "bar": 24,
    "dBm": 70, "°F": 131, "ft³": 137, "gal (US)": 140,
    "": 255,  # a count, no unit
}
DLMS_UNIT_OTHER = 254


@dataclass(frozen=True)
class Quantity:
    """What a VIF (or FB/FD entry) says: the quantity, its unit and decimal exponent.

    `coding` names a value type other than a number where the VIF implies one
    ("date", "datetime", "binary": an unsigned bit field); None means a signed number.
    """

    name: str
    unit: str
    exponent: int = 0
    coding: str | None = None


def _range(start: int, count: int, name: str, unit: str, offset: int) -> dict[int, Quantity]:
    return {start + n: Quantity(name, unit, n + offset) for n in range(count)}


def _time_range(start: int, name: str, units=_NN_TIME) -> dict[int, Quantity]:
    return {start + n: Quantity(name, units[n].value) for n in range(4)}


PRIMARY_VIF: dict[int, Quantity] = {
    **_range(0x00, 8, "Energy", "Wh", -3),
    **_range(0x08, 8, "Energy", "J", 0),
    **_range(0x10, 8, "Volume", "m³", -6),
    **_range(0x18, 8, "Mass", "kg", -3),
    **_time_range(0x20, "On time"),
    **_time_range(0x24, "Operating time"),
    **_range(0x28, 8, "Power", "W", -3),
    **_range(0x30, 8, "Power", "J/h", 0),
    **_range(0x38, 8, "Volume flow", "m³/h", -6),
    **_range(0x40, 8, "Volume flow", "m³/min", -7),
    **_range(0x48, 8, "Volume flow", "m³/s", -9),
    **_range(0x50, 8, "Mass flow", "kg/h", -3),
    **_range(0x58, 4, "Flow temperature", "°C", -3),
    **_range(0x5C, 4, "Return temperature", "°C", -3),
    **_range(0x60, 4, "Temperature difference", "K", -3),
    **_range(0x64, 4, "External temperature", "°C", -3),
    **_range(0x68, 4, "Pressure", "bar", -3),
    0x6C: Quantity("Time point (date)", "", 0, "date"),
    0x6D: Quantity("Time point (date & time)", "", 0, "datetime"),
    0x6E: Quantity("Units for H.C.A.", ""),
    **_time_range(0x70, "Averaging duration"),
    **_time_range(0x74, "Actuality duration"),
    0x78: Quantity("Fabrication number", ""),
    0x79: Quantity("Enhanced identification", ""),
    0x7A: Quantity("Bus address", ""),
}

VIF_FB = 0x7B
VIF_PLAIN_TEXT = 0x7C
VIF_FD = 0x7D
VIF_ANY = 0x7E
VIF_MANUFACTURER = 0x7F

EXTENSION_FB: dict[int, Quantity] = {
    **_range(0x00, 2, "Energy", "Wh", 5),  # 10^(n-1) MWh
    **_range(0x08, 2, "Energy", "J", 8),  # 10^(n-1) GJ
    **_range(0x10, 2, "Volume", "m³", 2),
    **_range(0x18, 2, "Mass", "kg", 5),  # 10^(n+2) t
    0x21: Quantity("Volume", "ft³", -1), 0x22: Quantity("Volume", "gal (US)", -1),
    0x23: Quantity("Volume", "gal (US)", 0), 0x24: Quantity("Volume flow", "gal (US)/min", -3),
    0x25: Quantity("Volume flow", "gal (US)/min", 0), 0x26: Quantity("Volume flow", "gal (US)/h", 0),
    **_range(0x28, 2, "Power", "W", 5),  # 10^(n-1) MW
    **_range(0x30, 2, "Power", "J/h", 8),  # 10^(n-1) GJ/h
    **_range(0x58, 4, "Flow temperature", "°F", -3),
    **_range(0x5C, 4, "Return temperature", "°F", -3),
    **_range(0x60, 4, "Temperature difference", "°F", -3),
    **_range(0x64, 4, "External temperature", "°F", -3),
    **_range(0x70, 4, "Cold / warm temperature limit", "°F", -3),
    **_range(0x74, 4, "Cold / warm temperature limit", "°C", -3),
    **_range(0x78, 8, "Cumulative count max power", "W", -3),
}

EXTENSION_FD: dict[int, Quantity] = {
    **_range(0x00, 4, "Credit", "currency", -3),
    **_range(0x04, 4, "Debit", "currency", -3),
    0x08: Quantity("Access number", ""), 0x09: Quantity("Medium", ""),
    0x0A: Quantity("Manufacturer", ""), 0x0B: Quantity("Parameter set identification", ""),
    0x0C: Quantity("Model / version", ""), 0x0D: Quantity("Hardware version", ""),
    0x0E: Quantity("Firmware version", ""), 0x0F: Quantity("Software version", ""),
    0x10: Quantity("Customer location", ""), 0x11: Quantity("Customer", ""),
    0x12: Quantity("Access code user", ""), 0x13: Quantity("Access code operator", ""),
    0x14: Quantity("Access code system operator", ""), 0x15: Quantity("Access code developer", ""),
    0x16: Quantity("Password", ""), 0x17: Quantity("Error flags", "", 0, "binary"),
    0x18: Quantity("Error mask", "", 0, "binary"), 0x1A: Quantity("Digital output", "", 0, "binary"),
    0x1B: Quantity("Digital input", "", 0, "binary"), 0x1C: Quantity("Baud rate", "Bd"),
    0x1D: Quantity("Response delay time", "bit times"), 0x1E: Quantity("Retry", ""),
    0x1F: Quantity("Remote control", "", 0, "binary"),
    0x20: Quantity("First storage number for cyclic storage", ""),
    0x21: Quantity("Last storage number for cyclic storage", ""),
    0x22: Quantity("Size of storage block", ""),
    **_time_range(0x24, "Storage interval"),
    0x28: Quantity("Storage interval", "month"), 0x29: Quantity("Storage interval", "a"),
    **_time_range(0x2C, "Duration since last readout"),
    0x30: Quantity("Start of tariff", "", 0, "datetime"),
    0x31: Quantity("Duration of tariff", "min"), 0x32: Quantity("Duration of tariff", "h"),
    0x33: Quantity("Duration of tariff", "d"),
    **_time_range(0x34, "Period of tariff"),
    0x38: Quantity("Period of tariff", "month"), 0x39: Quantity("Period of tariff", "a"),
    0x3A: Quantity("Dimensionless", ""),
    **_range(0x40, 16, "Voltage", "V", -9),
    **_range(0x50, 16, "Current", "A", -12),
    0x60: Quantity("Reset counter", ""), 0x61: Quantity("Cumulation counter", ""),
    0x62: Quantity("Control signal", ""), 0x63: Quantity("Day of week", ""),
    0x64: Quantity("Week number", ""), 0x65: Quantity("Time point of day change", ""),
    0x66: Quantity("State of parameter activation", ""),
    0x67: Quantity("Special supplier information", ""),
    **_time_range(0x68, "Duration since last cumulation", _PP_TIME),
    **_time_range(0x6C, "Operating time battery", _PP_TIME),
    0x70: Quantity("Date and time of battery change", "", 0, "datetime"),
    0x71: Quantity("RSSI", "dBm"),
    0x74: Quantity("Remaining battery life time", "d"),
    0x75: Quantity("Number of times the meter was stopped", ""),
}

# Combinable VIFEs that name a time base or a divisor: the unit becomes unit + suffix.
_PER_SUFFIX = {0x20: "/s", 0x21: "/min", 0x22: "/h", 0x23: "/d", 0x24: "/week", 0x25: "/month",
               0x26: "/a", 0x27: "/revolution", 0x2C: "/l", 0x2D: "/m³", 0x2E: "/kg", 0x2F: "/K",
               0x30: "/kWh", 0x31: "/GJ", 0x32: "/kW", 0x33: "/(K·l)", 0x34: "/V", 0x35: "/A",
               0x36: "·s", 0x37: "·s/V", 0x38: "·s/A"}

# Combinable VIFE descriptions (EN 13757-3 table 14), for display.
_COMBINABLE_NAMES = {
    0x28: "increment per input pulse on input channel 0", 0x29: "increment per input pulse on input channel 1",
    0x2A: "increment per output pulse on output channel 0", 0x2B: "increment per output pulse on output channel 1",
    0x39: "start date(/time) of", 0x3A: "uncorrected unit", 0x3B: "accumulation only if positive",
    0x3C: "accumulation of abs value only if negative", 0x40: "lower limit value",
    0x48: "upper limit value", 0x41: "number of exceeds of lower limit",
    0x49: "number of exceeds of upper limit", 0x7E: "future value",
    0x7F: "manufacturer specific",
}


class Function(enum.IntEnum):
    INSTANTANEOUS = 0
    MAXIMUM = 1
    MINIMUM = 2
    DURING_ERROR = 3


class Coding(enum.IntEnum):
    """The DIF data field (bits 3-0)."""

    NONE = 0x0
    INT8 = 0x1
    INT16 = 0x2
    INT24 = 0x3
    INT32 = 0x4
    REAL32 = 0x5
    INT48 = 0x6
    INT64 = 0x7
    SELECTION = 0x8
    BCD2 = 0x9
    BCD4 = 0xA
    BCD6 = 0xB
    BCD8 = 0xC
    VARIABLE = 0xD
    BCD12 = 0xE
    SPECIAL = 0xF
    # Aliases the encoder accepts: the DIF nibble with how to write the value.
    DATE_G = 0x102  # 16-bit date, type G
    DATETIME_F = 0x104  # 32-bit date and time, type F
    DATETIME_I = 0x106  # 48-bit date and time, type I
    TEXT = 0x10D  # LVAR ASCII text


_FIXED_LENGTH = {0x0: 0, 0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x5: 4, 0x6: 6, 0x7: 8, 0x8: 0,
                 0x9: 1, 0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}
_BCD_CODINGS = {0x9, 0xA, 0xB, 0xC, 0xE}


# --------------------------------------------------------------------------------------
# Dates


def _year(low: int, high: int, century_bits: int = 0) -> int:
    yy = (high << 3) | low
    if century_bits:
        return 1900 + 100 * century_bits + yy
    # EN 13757-3 without the hundred-year bits: 00..80 are 2000..2080 (as libmbus reads them).
    return 2000 + yy if yy <= 80 else 1900 + yy


def decode_date_g(raw: bytes) -> dt.date:
    """Type G: day (b0 0-4), year (b0 5-7 low, b1 4-7 high), month (b1 0-3)."""
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    year = _year(raw[0] >> 5, raw[1] >> 4)
    try:
        return dt.date(year, month, day)
    except ValueError as exc:
        raise MbusValueError("type G date", 0, f"{year}-{month:02d}-{day:02d}") from exc


def decode_datetime_f(raw: bytes) -> dt.datetime:
    """Type F: minute (b0 0-5, IV bit 7), hour (b1 0-4, SU bit 7, century b1 5-6),
    day (b2 0-4), year (b2 5-7 low, b3 4-7 high), month (b3 0-3)."""
    if raw[0] & 0x80:
        raise MbusValueError("type F date-time", 0, "invalid bit set")
    minute, hour, day, month = raw[0] & 0x3F, raw[1] & 0x1F, raw[2] & 0x1F, raw[3] & 0x0F
    year = _year(raw[2] >> 5, raw[3] >> 4, (raw[1] >> 5) & 0x03)
    try:
        return dt.datetime(year, month, day, hour, minute)
    except ValueError as exc:
        raise MbusValueError("type F date-time", 0,
                             f"{year}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}") from exc


def decode_datetime_i(raw: bytes) -> dt.datetime:
    """Type I: second (b0 0-5), minute (b1 0-5), hour (b2 0-4, weekday 5-7), then day,
    month and year laid out as in type F (b3 0-4 day, b3 5-7 and b4 4-7 year, b4 0-3 month);
    b5 holds the week and daylight-saving bits, not needed for the instant."""
    second, minute, hour = raw[0] & 0x3F, raw[1] & 0x3F, raw[2] & 0x1F
    day, month, year = raw[3] & 0x1F, raw[4] & 0x0F, _year(raw[3] >> 5, raw[4] >> 4)
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise MbusValueError("type I date-time", 0, "no such date-time") from exc


def decode_time_j(raw: bytes) -> dt.time:
    try:
        return dt.time(raw[2] & 0x1F, raw[1] & 0x3F, raw[0] & 0x3F)
    except ValueError as exc:
        raise MbusValueError("type J time", 0, "no such time") from exc


def encode_date_g(value: dt.date) -> bytes:
    yy = _two_digit_year(value.year)
    return bytes([value.day | ((yy & 0x07) << 5), value.month | ((yy >> 3) << 4)])


def encode_datetime_f(value: dt.datetime, summer_time: bool = False) -> bytes:
    """Type F with the hundred-year bits set (as OMS Annex N does: 2008 -> 01 and 08)."""
    if not 1981 <= value.year <= 2199:
        raise EncodeError(f"type F holds 1981..2199 here, not {value.year}")
    century, yy = divmod(value.year - 1900, 100)
    return bytes([value.minute, value.hour | (century << 5) | (0x80 if summer_time else 0),
                  value.day | ((yy & 0x07) << 5), value.month | ((yy >> 3) << 4)])


def encode_datetime_i(value: dt.datetime) -> bytes:
    yy = _two_digit_year(value.year)
    return bytes([value.second, value.minute, value.hour | (value.isoweekday() << 5),
                  value.day | ((yy & 0x07) << 5), value.month | ((yy >> 3) << 4),
                  value.isocalendar()[1]])


def _two_digit_year(year: int) -> int:
    if not 1981 <= year <= 2080:
        raise EncodeError(f"types F and G without century bits hold 1981..2080, not {year}")
    return year % 100


# --------------------------------------------------------------------------------------
# Numbers


def decode_bcd(raw: bytes) -> int:
    """Type A: little-endian BCD; a most significant nibble F is a minus sign (EN 13757-3)."""
    digits = _bcd_digits(raw)
    negative = False
    if digits and digits[0] == "F":
        negative, digits = True, digits[1:]
    if not digits.isdigit() and digits:
        raise MbusValueError("BCD value", 0, f"digits {_bcd_digits(raw)}")
    value = int(digits) if digits else 0
    return -value if negative else value


def encode_bcd(value: int, length: int) -> bytes:
    digits = 2 * length
    if value < 0:
        magnitude = f"{-value:0{digits - 1}d}"
        if len(magnitude) > digits - 1:
            raise EncodeError(f"{value} does not fit {digits} BCD digits with a sign")
        text = "F" + magnitude
    else:
        text = f"{value:0{digits}d}"
        if len(text) > digits:
            raise EncodeError(f"{value} does not fit {digits} BCD digits")
    return bytes.fromhex(text)[::-1]


# --------------------------------------------------------------------------------------
# Records


Value = Union[int, float, str, bytes, dt.date, dt.datetime, dt.time, None]


# Quantities whose number has no meaning a DLMS unit could state.
_NO_DLMS_UNIT = ("Time point", "Reserved", "Unknown", "Manufacturer specific", "Any VIF")


@dataclass(frozen=True)
class Record:
    """One data record. `value` is the number (raw, without its exponent), a date, a text
    or bytes; `scaled()` applies the exponent; `unit` is SI-style text ("m³", "Wh")."""

    dif: int
    difes: tuple[int, ...]
    vif: int | None
    vifes: tuple[int, ...]
    data: bytes  # the data field as sent (for LVAR with its length byte)
    storage_number: int
    tariff: int
    subunit: int
    function: Function
    quantity: str
    unit: str
    exponent: int
    plain_text_unit: str | None = None
    notes: tuple[str, ...] = ()
    raw_value: Value = None
    value_error: MbusValueError | None = field(default=None, compare=False)

    @property
    def coding(self) -> int:
        return self.dif & 0x0F

    @property
    def value(self) -> Value:
        if self.value_error is not None:
            raise self.value_error
        return self.raw_value

    def scaled(self) -> Decimal | float | None:
        """The number times 10^exponent (Decimal for integers, float for real32)."""
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float):
            return value * 10.0 ** self.exponent
        return Decimal(value).scaleb(self.exponent)

    def dlms_scaler_unit(self) -> tuple[int, int] | None:
        """(scaler, unit) of the DLMS Blue Book for this value, None when DLMS has no unit
        for it (dates, texts, per-time qualified units without an equivalent)."""
        if self.quantity.startswith(_NO_DLMS_UNIT) or not isinstance(self.raw_value, (int, float)):
            return None
        if self.plain_text_unit is not None:
            return None
        unit = DLMS_UNITS.get(self.unit)
        if unit is None or not -128 <= self.exponent <= 127:
            return None
        return self.exponent, unit


@dataclass(frozen=True)
class Telegram:
    ci: int
    header: LongHeader | ShortHeader | FixedHeader | SecondaryAddress | None
    records: tuple[Record, ...] = ()
    more_records_follow: bool = False
    manufacturer_data: bytes = b""
    special_function: int | None = None  # DIF 0x0F or 0x1F when the records ended with one
    application_error: int | None = None  # CI 0x70
    alarm: int | None = None  # CI 0x71
    time: dt.datetime | None = None  # CI 0x6C

    @property
    def application_error_text(self) -> str | None:
        if self.application_error is None:
            return None
        return APPLICATION_ERRORS.get(self.application_error, f"error {self.application_error}")


class _Cursor:
    def __init__(self, data: bytes, base: int) -> None:
        self.data = data
        self.pos = 0
        self.base = base

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise MbusApplicationTruncatedError(what, self.base + self.pos,
                                                f"{n} bytes needed, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _lvar_length(lvar: int, offset: int) -> tuple[int, str]:
    if lvar <= 0xBF:
        return lvar, "text"
    if 0xC0 <= lvar <= 0xC9:
        return lvar - 0xC0, "bcd+"  # (LVAR - C0h) * 2 digits
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0, "bcd-"
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0, "binary"
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC), "binary"
    if lvar == 0xF5:
        return 48, "binary"
    if lvar == 0xF6:
        return 64, "binary"
    raise MbusApplicationError("LVAR", offset, f"reserved length byte 0x{lvar:02X}")


def _decode_vib(cur: _Cursor) -> tuple[int, tuple[int, ...], str | None, Quantity, list[str], int]:
    """VIF, plain text, VIFEs. Returns vif, vifes, plain text, quantity, notes, exponent delta."""
    vif_offset = cur.base + cur.pos
    vif = cur.byte("VIF")
    plain_text = None
    if vif & 0x7F == VIF_PLAIN_TEXT:
        # Real devices (and libmbus) put the length and text right after the VIF, before the VIFEs.
        length = cur.byte("plain-text VIF length")
        if length > MAX_PLAIN_TEXT_UNIT:
            raise MbusApplicationError("plain-text VIF", vif_offset + 1, f"{length} characters")
        plain_text = cur.take(length, "plain-text VIF")[::-1].decode("latin-1")
    vifes: list[int] = []
    more = bool(vif & 0x80)
    while more:
        if len(vifes) >= MAX_VIFE:
            raise MbusTooManyExtensionsError("VIFE chain", cur.base + cur.pos, "more than 10 VIFEs")
        vife = cur.byte("VIFE")
        vifes.append(vife)
        more = bool(vife & 0x80)
    notes: list[str] = []
    code = vif & 0x7F
    combinable = vifes
    if code in PRIMARY_VIF:
        quantity = PRIMARY_VIF[code]
    elif code in (VIF_FB, VIF_FD):
        if not vifes:
            # Malformed (the table entry is missing) but sent by real meters (libmbus's
            # sen_pollutherm frame): keep the value, name no quantity.
            quantity = Quantity(f"Unknown (VIF 0x{code:02X} without extension)", "")
        else:
            table = EXTENSION_FB if code == VIF_FB else EXTENSION_FD
            entry = vifes[0] & 0x7F
            name = "FB" if code == VIF_FB else "FD"
            quantity = table.get(entry, Quantity(f"Reserved ({name} {entry:02X})", ""))
            combinable = vifes[1:]
    elif code == VIF_PLAIN_TEXT:
        quantity = Quantity(plain_text or "", plain_text or "")
    elif code == VIF_ANY:
        quantity = Quantity("Any VIF", "")
    elif code == VIF_MANUFACTURER:
        quantity = Quantity("Manufacturer specific", "")
        combinable = []  # what follows is the manufacturer's
    else:
        quantity = Quantity(f"Reserved (VIF {code:02X})", "")
    exponent_delta = 0
    unit_suffix = ""
    for vife in combinable:
        e = vife & 0x7F
        if e == 0x7F:  # the rest is manufacturer specific
            notes.append("manufacturer specific")
            break
        if 0x70 <= e <= 0x77:
            exponent_delta += e - 0x76  # multiplicative correction factor 10^(nnn-6)
        elif e == 0x7D:
            exponent_delta += 3
        elif e in _PER_SUFFIX:
            unit_suffix += _PER_SUFFIX[e]
        elif e <= 0x1F:
            notes.append(f"record error {e}")
        elif 0x78 <= e <= 0x7B:
            notes.append(f"additive correction 10^{e - 0x7B}")
        else:
            notes.append(_COMBINABLE_NAMES.get(e, f"VIFE {e:02X}"))
    if unit_suffix:
        quantity = Quantity(quantity.name, quantity.unit + unit_suffix, quantity.exponent, quantity.coding)
    return vif, tuple(vifes), plain_text, quantity, notes, exponent_delta


def _decode_value(coding: int, quantity: Quantity, raw: bytes, offset: int) -> tuple[Value, MbusValueError | None]:
    try:
        if coding in (0x0, 0x8):
            return None, None
        if coding in _BCD_CODINGS:
            return decode_bcd(raw), None
        if coding == 0x5:
            return struct.unpack("<f", raw)[0], None
        if coding == 0xD:
            return _decode_lvar(raw), None
        if quantity.coding == "date" and len(raw) == 2:
            return decode_date_g(raw), None
        if quantity.coding in ("date", "datetime") and len(raw) == 4:
            return decode_datetime_f(raw), None
        if quantity.coding == "datetime" and len(raw) == 6:
            return decode_datetime_i(raw), None
        if quantity.coding == "datetime" and len(raw) == 3:
            return decode_time_j(raw), None
        signed = quantity.coding != "binary"
        return int.from_bytes(raw, "little", signed=signed), None
    except MbusValueError as exc:
        exc.offset = offset
        return None, exc


def _decode_lvar(raw: bytes) -> Value:
    lvar, body = raw[0], raw[1:]
    _, kind = _lvar_length(lvar, 0)
    if kind == "text":
        return body[::-1].decode("latin-1")
    if kind in ("bcd+", "bcd-"):
        value = decode_bcd(body)
        return -value if kind == "bcd-" else value
    return int.from_bytes(body, "little") if len(body) <= 8 else bytes(body)


def _decode_record(cur: _Cursor, dif: int, dif_offset: int) -> Record:
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    difes: list[int] = []
    more = bool(dif & 0x80)
    while more:
        if len(difes) >= MAX_DIFE:
            raise MbusTooManyExtensionsError("DIFE chain", cur.base + cur.pos, "more than 10 DIFEs")
        dife = cur.byte("DIFE")
        n = len(difes)
        storage |= (dife & 0x0F) << (1 + 4 * n)
        tariff |= ((dife >> 4) & 0x03) << (2 * n)
        subunit |= ((dife >> 6) & 1) << n
        difes.append(dife)
        more = bool(dife & 0x80)
    vif, vifes, plain_text, quantity, notes, exponent_delta = _decode_vib(cur)
    coding = dif & 0x0F
    data_offset = cur.base + cur.pos
    if coding == 0xD:
        lvar = cur.byte("LVAR")
        length, _ = _lvar_length(lvar, data_offset)
        data = bytes([lvar]) + cur.take(length, "LVAR data")
    else:
        data = cur.take(_FIXED_LENGTH[coding], "data field")
    value, error = _decode_value(coding, quantity, data, data_offset)
    return Record(dif, tuple(difes), vif, vifes, data, storage, tariff, subunit,
                  Function((dif >> 4) & 0x03), quantity.name, quantity.unit,
                  quantity.exponent + exponent_delta, plain_text, tuple(notes), value, error)


def parse_records(data: bytes, base: int = 0) -> tuple[tuple[Record, ...], int | None, bytes]:
    """Data records up to the end or a 0x0F / 0x1F special function.

    Returns the records, the special function DIF that ended them (0x1F: "more records
    follow") or None, and the manufacturer-specific bytes after it.
    """
    cur = _Cursor(data, base)
    records: list[Record] = []
    while cur.left:
        dif_offset = cur.base + cur.pos
        dif = cur.byte("DIF")
        if dif == 0x2F:  # idle filler
            continue
        if dif in (0x0F, 0x1F):
            return tuple(records), dif, bytes(cur.take(cur.left, "manufacturer data"))
        if len(records) >= MAX_RECORDS:
            raise MbusApplicationError("data records", dif_offset, f"more than {MAX_RECORDS}")
        if dif & 0x0F == 0x0F:
            if dif == 0x7F:  # global readout request: a DIF alone
                records.append(Record(dif, (), None, (), b"", 0, 0, 0, Function.INSTANTANEOUS,
                                      "Global readout request", "", 0))
                continue
            raise MbusApplicationError("DIF", dif_offset, f"reserved special function 0x{dif:02X}")
        records.append(_decode_record(cur, dif, dif_offset))
    return tuple(records), None, b""


# --- Fixed data structure (CI 0x73, EN 1434-3): two counters with a unit code each.
# Units 0x02..0x37 come in threes (x1, x10, x100) of one base unit.
_FIXED_BASES = [("Energy", "Wh", 0), ("Energy", "Wh", 3), ("Energy", "Wh", 6),
                ("Energy", "J", 3), ("Energy", "J", 6), ("Energy", "J", 9),
                ("Power", "W", 0), ("Power", "W", 3), ("Power", "W", 6),
                ("Power", "J/h", 3), ("Power", "J/h", 6), ("Power", "J/h", 9),
                ("Volume", "m³", -6), ("Volume", "m³", -3), ("Volume", "m³", 0),
                ("Volume flow", "m³/h", -6), ("Volume flow", "m³/h", -3), ("Volume flow", "m³/h", 0)]
FIXED_UNITS: dict[int, Quantity] = {
    0x02 + 3 * i + k: Quantity(name, unit, exp + k)
    for i, (name, unit, exp) in enumerate(_FIXED_BASES) for k in range(3)
}
FIXED_UNITS.update({0x38: Quantity("Temperature", "°C", -3), 0x39: Quantity("Units for H.C.A.", ""),
                    0x3F: Quantity("Without units", "")})


def _parse_fixed(data: bytes) -> Telegram:
    if len(data) < 16:
        raise MbusApplicationTruncatedError("M-Bus fixed data structure", len(data), "fewer than 16 bytes")
    access, status = data[4], data[5]
    medium = (data[6] >> 6) | ((data[7] >> 6) << 2)
    header = FixedHeader(_decode_identification(data[0:4]), access, status, medium)
    records = []
    binary = bool(status & 0x80)  # EN 1434-3: counters binary instead of BCD
    for n, (unit_byte, raw) in enumerate(((data[6], data[8:12]), (data[7], data[12:16]))):
        unit_code = unit_byte & 0x3F
        quantity = FIXED_UNITS.get(unit_code, Quantity(f"Reserved (fixed unit {unit_code:02X})", ""))
        coding = 0x4 if binary else 0xC
        value, error = _decode_value(coding, quantity, bytes(raw), 8 + 4 * n)
        records.append(Record(coding, (), None, (), bytes(raw), 1 if status & 0x40 else 0, 0, 0,
                              Function.INSTANTANEOUS, quantity.name, quantity.unit, quantity.exponent,
                              None, (), value, error))
    return Telegram(CI_RSP_FIXED, header, tuple(records), manufacturer_data=bytes(data[16:]))


def _with_records(ci: int, header, data: bytes, base: int) -> Telegram:
    records, special, manufacturer = parse_records(data, base)
    return Telegram(ci, header, records, special == 0x1F, manufacturer, special)


def parse_telegram(ci: int, data: bytes) -> Telegram:
    """Decode the user data after CI `ci`. Total: a Telegram or an MbusApplicationError."""
    data = bytes(data)
    if ci == CI_RSP_LONG:
        header = _decode_long_header(data)
        return _with_records(ci, header, data[12:], 12)
    if ci == CI_RSP_SHORT:
        if len(data) < 4:
            raise MbusApplicationTruncatedError("M-Bus short header", len(data), "fewer than 4 bytes")
        header = ShortHeader(data[0], data[1], int.from_bytes(data[2:4], "little"))
        return _with_records(ci, header, data[4:], 4)
    if ci in (CI_RSP_NONE, CI_DATA_SEND):
        return _with_records(ci, None, data, 0)
    if ci == CI_RSP_FIXED:
        return _parse_fixed(data)
    if ci == CI_APPLICATION_ERROR:
        # An empty error telegram is "unspecified error" (libmbus reads it so too).
        return Telegram(ci, None, application_error=data[0] if data else 0, manufacturer_data=data[1:])
    if ci == CI_ALARM:
        if not data:
            raise MbusApplicationTruncatedError("M-Bus alarm status", 0, "no alarm byte")
        return Telegram(ci, None, alarm=data[0], manufacturer_data=data[1:])
    if ci == CI_SELECTION:
        if len(data) != 8:
            raise MbusApplicationError("M-Bus selection", min(len(data), 8),
                                       f"8 bytes expected, {len(data)} present")
        man = int.from_bytes(data[4:6], "little")
        header = SecondaryAddress(_decode_identification(data[0:4]),
                                  "" if man == 0xFFFF else manufacturer_to_text(man), data[6], data[7])
        return Telegram(ci, header)
    if ci == CI_APPLICATION_RESET:
        return Telegram(ci, None, manufacturer_data=data)  # optional subcode byte(s)
    if ci == CI_TIME_SYNC:
        # This master sends type F (4 bytes); type I (6 bytes, with seconds) is read as well.
        if len(data) not in (4, 6):
            raise MbusApplicationError("M-Bus time sync", 0,
                                       f"4 (type F) or 6 (type I) bytes expected, {len(data)} present")
        try:
            time = decode_datetime_f(data) if len(data) == 4 else decode_datetime_i(data)
            return Telegram(ci, None, time=time)
        except MbusValueError as exc:
            raise MbusApplicationError("M-Bus time sync", 0, exc.detail) from exc
    raise MbusUnknownCiError("M-Bus CI field", None, f"CI 0x{ci:02X} not implemented")


# --------------------------------------------------------------------------------------
# Encoder


def encode_dib(coding: int, storage_number: int = 0, tariff: int = 0, subunit: int = 0,
               function: Function = Function.INSTANTANEOUS) -> bytes:
    """DIF and the DIFEs the storage number, tariff and subunit need."""
    if storage_number < 0 or tariff < 0 or subunit < 0:
        raise EncodeError("storage number, tariff and subunit are not negative")
    dif = (coding & 0x0F) | (int(function) << 4) | ((storage_number & 1) << 6)
    storage, rest_tariff, rest_subunit = storage_number >> 1, tariff, subunit
    difes = []
    while storage or rest_tariff or rest_subunit:
        if len(difes) == MAX_DIFE:
            raise EncodeError("storage number / tariff / subunit need more than 10 DIFEs")
        difes.append((storage & 0x0F) | ((rest_tariff & 0x03) << 4) | ((rest_subunit & 1) << 6))
        storage, rest_tariff, rest_subunit = storage >> 4, rest_tariff >> 2, rest_subunit >> 1
    out = bytearray([dif | (0x80 if difes else 0)])
    for n, dife in enumerate(difes):
        out.append(dife | (0x80 if n < len(difes) - 1 else 0))
    return bytes(out)


def _encode_vib(vif: int | bytes, vifes: Iterable[int]) -> bytes:
    head = bytes([vif]) if isinstance(vif, int) else bytes(vif)
    tail = list(vifes)
    if not head:
        raise EncodeError("a record needs a VIF")
    if len(tail) > MAX_VIFE:
        raise EncodeError("more than 10 VIFEs")
    chain = [head[0] | (0x80 if tail else 0)] + [
        v | (0x80 if n < len(tail) - 1 else 0) for n, v in enumerate(tail)]
    return bytes(chain[:1]) + head[1:] + bytes(chain[1:])


def encode_record(value: Value, vif: int | bytes, *, coding: Coding = Coding.INT32,
                  vifes: Iterable[int] = (), storage_number: int = 0, tariff: int = 0,
                  subunit: int = 0, function: Function = Function.INSTANTANEOUS) -> bytes:
    """One data record: DIB, VIB and the value in `coding`.

    `vif` is the VIF byte without its extension bit (e.g. 0x14 volume 0.01 m³, 0x6D date-time,
    0x7D then the FD entry in `vifes`), or bytes for a plain-text VIF (0x7C, length, text
    reversed). The extension bits are set here. `value` is the unscaled number, a
    date/datetime for DATE_G / DATETIME_F / DATETIME_I, or a str for TEXT.
    """
    coding = Coding(coding)
    if coding == Coding.DATE_G:
        body = encode_date_g(value)  # type: ignore[arg-type]
    elif coding == Coding.DATETIME_F:
        body = encode_datetime_f(value)  # type: ignore[arg-type]
    elif coding == Coding.DATETIME_I:
        body = encode_datetime_i(value)  # type: ignore[arg-type]
    elif coding == Coding.TEXT:
        text = str(value).encode("latin-1")
        if len(text) > 0xBF:
            raise EncodeError("LVAR text holds at most 191 characters")
        body = bytes([len(text)]) + text[::-1]
    elif coding in (Coding.NONE, Coding.SELECTION):
        body = b""
    elif coding == Coding.REAL32:
        body = struct.pack("<f", float(value))  # type: ignore[arg-type]
    elif coding in _BCD_CODINGS:
        body = encode_bcd(int(value), _FIXED_LENGTH[coding])  # type: ignore[arg-type]
    elif coding in (Coding.INT8, Coding.INT16, Coding.INT24, Coding.INT32, Coding.INT48, Coding.INT64):
        length = _FIXED_LENGTH[coding]
        number = int(value)  # type: ignore[arg-type]
        try:
            body = number.to_bytes(length, "little", signed=number < 0)
        except OverflowError as exc:
            raise EncodeError(f"{number} does not fit {length} bytes") from exc
    else:
        raise EncodeError(f"the encoder does not write coding {coding.name}")
    dif_coding = coding & 0x0F
    return encode_dib(dif_coding, storage_number, tariff, subunit, function) + _encode_vib(vif, vifes) + body


def encode_long_header(identification: int | str, manufacturer: str, version: int, medium: int,
                       access_number: int, status: int = 0, configuration: int = 0) -> bytes:
    return LongHeader(identification, manufacturer, version, medium, access_number, status,
                      configuration).to_bytes()


def encode_rsp_ud(address: int, header: LongHeader | ShortHeader | None, records: Iterable[bytes], *,
                  more_records_follow: bool = False, manufacturer_data: bytes = b"",
                  acd: bool = False, dfc: bool = False) -> bytes:
    """A complete RSP_UD long frame: CI 0x72 / 0x7A / 0x78 by the header given."""
    if isinstance(header, LongHeader):
        ci, head = CI_RSP_LONG, header.to_bytes()
    elif isinstance(header, ShortHeader):
        ci, head = CI_RSP_SHORT, header.to_bytes()
    else:
        ci, head = CI_RSP_NONE, b""
    body = head + b"".join(records)
    if more_records_follow:
        body += b"\x1F" + manufacturer_data
    elif manufacturer_data:
        body += b"\x0F" + manufacturer_data
    if not body:
        body = b"\x2F"  # a long frame needs a data byte: one filler
    c = RSP_UD | (C_ACD if acd else 0) | (C_DFC if dfc else 0)
    return LongFrame(c, address, ci, body).to_bytes()


def primary_vif(quantity: str, unit: str, exponent: int) -> int:
    """The primary-table VIF of `quantity` in `unit` at 10^`exponent` (e.g. ("Volume", "m³", -2) -> 0x14)."""
    for code, entry in PRIMARY_VIF.items():
        if (entry.name, entry.unit, entry.exponent) == (quantity, unit, exponent):
            return code
    raise EncodeError(f"no primary VIF for {quantity} in 10^{exponent} {unit}")
