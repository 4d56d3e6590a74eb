"""What the tariff and billing interop tests need besides the peers: the meter's stores read as
they are (read-only SQLite), the billing profile's columns from the data sheet, and the COSEM
encodings an answer must have.

The stores are opened read-only, not through the meter's classes: the tests compare what the
clients received with what the meter holds, and must not share the code that produced the
answer (nor hold a writable connection to a running meter's store). The payload layouts are
the stores' documented ones (legal.billing, legal.interface), unpacked here with `struct`.
"""
from __future__ import annotations

import json
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from event_log_peers import cosem_date_time

QUANTITIES = ("a_plus", "a_minus", "r_plus", "r_minus")  # OBIS C = 1, 2, 3, 4
NOT_SPECIFIED_DATE_TIME = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")  # Blue Book 4.1.6.1, every field "not specified"
NO_TIME = -1  # a maximum demand never reached (the store's marker)
# clock status bit 2 "different clock base" (Blue Book 4.1.6.1): a meter whose time runs faster than
# real time (`meter run --speed`) says so in every date-time it sends
DIFFERENT_CLOCK_BASE = 0x04
# the billing profile 0-0:98.1.0.255 as the data sheet lists it (catalog §3.5): class, logical
# name, attribute; data index 0 throughout
BILLING_COLUMNS = (
    (8, "0.0.1.0.0.255", 2), (1, "0.0.0.1.0.255", 2),
    *((3, f"1.0.{c}.8.{rate}.255", 2) for c in (1, 2, 3, 4) for rate in (0, 1, 2)),
    *((4, f"1.0.{c}.6.0.255", a) for c in (1, 2, 3, 4) for a in (2, 5)),
    *((3, f"1.0.{c}.2.0.255", 2) for c in (1, 2, 3, 4)),
)
# entry payload: trigger, counter, per quantity total/rate 1/rate 2, maxima, their times, cumulative maxima
_BILLING_PAYLOAD = struct.Struct(">BB" + "Q" * 12 + "I" * 4 + "q" * 4 + "I" * 4)
TRIGGERS = ("scheduled", "button", "remote", "ad-hoc")


@dataclass(frozen=True)
class HeldBilling:
    """One entry of the billing profile as the legal store holds it (chain_entry, tbl 'billing')."""

    time: int  # UTC seconds
    trigger: str
    counter: int
    energy: tuple[int, ...]  # per quantity: total, rate 1, rate 2 (whole Wh / varh)
    maximum: tuple[int, ...]
    maximum_time: tuple[int, ...]  # UTC seconds or NO_TIME
    cumulative: tuple[int, ...]

    def columns(self) -> list:
        """The 26 values of the COSEM row, in BILLING_COLUMNS order, as plain Python values."""
        maxima = []
        for value, at in zip(self.maximum, self.maximum_time, strict=True):
            maxima += [value, NOT_SPECIFIED_DATE_TIME if at == NO_TIME else simulated_date_time(at)]
        return [simulated_date_time(self.time), self.counter, *self.energy, *maxima, *self.cumulative]


def simulated_date_time(utc: int) -> bytes:
    """The COSEM date-time of a whole second in the meter's local time, from a meter whose clock
    runs faster than real time."""
    octets = cosem_date_time(utc)
    return octets[:-1] + bytes([octets[-1] | DIFFERENT_CLOCK_BASE])


def _legal(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(data_dir) / 'legal.sqlite3'}?mode=ro", uri=True)


def held_billing(data_dir: Path) -> list[HeldBilling]:
    db = _legal(data_dir)
    try:
        rows = db.execute("SELECT time_utc, payload FROM chain_entry WHERE tbl = 'billing' ORDER BY seq").fetchall()
    finally:
        db.close()
    out = []
    for time_utc, payload in rows:
        trigger, counter, *values = _BILLING_PAYLOAD.unpack(payload)
        out.append(HeldBilling(time_utc, TRIGGERS[trigger], counter, tuple(values[:12]), tuple(values[12:16]),
                               tuple(values[16:20]), tuple(values[20:24])))
    return out


def held_rates(data_dir: Path) -> dict[tuple[str, int], int]:
    """(quantity, rate) -> whole Wh / varh; rate 0 holds what was registered while no rate was active."""
    db = _legal(data_dir)
    try:
        return {(name, rate): units for name, rate, units in db.execute("SELECT name, rate, units FROM rate_register")}
    finally:
        db.close()


def held_totals(data_dir: Path) -> dict[str, int]:
    """The energy registers in whole Wh / varh (the store keeps milli-units)."""
    db = _legal(data_dir)
    try:
        return {name: milli // 1000 for name, milli in db.execute("SELECT name, milli_units FROM energy_register")}
    finally:
        db.close()


def held_load_profile(data_dir: Path, utc: int) -> tuple[int, ...]:
    """The load profile 1 entry captured at `utc`: status, +A, -A, +R, -R (whole Wh / varh)."""
    db = _legal(data_dir)
    try:
        (payload,) = db.execute("SELECT payload FROM chain_entry WHERE tbl = 'lp1' AND time_utc = ?", (utc,)).fetchone()
    finally:
        db.close()
    return struct.unpack(">BQQQQ", payload)


def held_setting(data_dir: Path, key: str):
    """One value of the meter's settings store (meter.sqlite3, JSON), None when absent."""
    db = sqlite3.connect(f"file:{Path(data_dir) / 'meter.sqlite3'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return None if row is None else json.loads(row[0])


def cosem_date(year: int | None, month: int, day: int, weekday: int | None = None) -> bytes:
    """A COSEM date (Blue Book 4.1.6.1): year (0xFFFF not specified), month, day, weekday (0xFF)."""
    return struct.pack(">HBBB", 0xFFFF if year is None else year, month, day, 0xFF if weekday is None else weekday)


def cosem_time(hour: int, minute: int) -> bytes:
    """A COSEM time of a whole minute: hour, minute, second 0, hundredths 0."""
    return bytes((hour, minute, 0, 0))
