"""The protective software interface: the only door into the legally relevant part.

Callers outside `smartmeter.legal` hand `LegalInterface.execute` one of the command
objects declared here and get a copy of the result (frozen snapshots, tuples), never a
reference to legally relevant state. Anything that is not a declared command is refused
and counted; the count is itself legally relevant and readable. The meter runs this part
in a process of its own (`start_legal_process`), so commands cross as data.

Inside, the legally relevant part measures (sensor -> metrology -> registers), stores
(registers, load profile, demand; hash-linked and signed), logs (metrological event log,
certification-protected log), identifies itself (software ID against the signed release
manifest) and guards its parameters (certification mode). A failed software check or a
damaged store is a fatal error: energy registration stops, the fatal error register shows
it, and the metrological log records it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from smartmeter.legal import firmware, identification, platform, storage
from smartmeter.legal.authority import AuthorityGate, AuthorityRefused
from smartmeter.legal.billing import (
    BILLING_PROFILE, BILLING_PROFILE_CAPACITY, COUNTER_MODULUS, TRIGGERS, BillingRow,
    NO_TIME as BILLING_NO_TIME,
)
from smartmeter.legal.chain import ChainedTable, ChainError, LogFull, atomic
from smartmeter.legal.demand import DEMAND_PERIOD, DemandRegisters, DemandState, DemandValue, MaximumDemand
from smartmeter.legal.eventlog import CertificationLog, EventLog, encode_fields
from smartmeter.legal.metering import MeteringError, MeteringUnit
from smartmeter.legal.metrology import ENERGY_UNITS_PER_WH, Measurement
from smartmeter.legal.parameters import (
    EVENT_LR_FIRMWARE_ACTIVATED, EVENT_LR_FIRMWARE_FAILED, EVENT_LR_FIRMWARE_READY, NO_CLIENT, CertificationMode,
    CertificationObject, CertificationStatus, Initiator, ParameterRefused, ParameterSeal, ParameterStore,
    RefusalReason,
)
from smartmeter.legal.sensor import PairingRecord, RemoteSensorLink
from smartmeter.legal.registers import (
    ALL_RATES, MILLI, RATES, REGISTER_NAMES, EnergyRegisters, EnergySnapshot, RateRegisters, RateSnapshot,
    registers_message,
)
from smartmeter.legal.signing import MeterSigner, public_key_fingerprint, verify
from smartmeter.legal.timebase import (  # noqa: F401 - STATUS_* and TimeChange are part of the interface
    CAPTURE_PERIOD, STATUS_CAPTURE_DISABLED, STATUS_CLOCK_ADJUSTED, STATUS_CLOCK_INVALID, STATUS_DATA_NOT_VALID,
    STATUS_DAYLIGHT_SAVING, STATUS_ERROR, STATUS_POWER_DOWN, UNCHANGED, LocalDays, TimeBase, TimeBaseState,
    TimeChange, rtc_reading,
)

LOAD_PROFILE_1 = "lp1"
LOAD_PROFILE_1_CAPACITY = 5760  # companion standard §5.7: exactly 5760 entries (60 days)
LOAD_PROFILE_2 = "lp2"  # daily, 1-0:99.2.0.255, captured at local midnight
LOAD_PROFILE_2_CAPACITY = 60  # companion standard §5.7: exactly 60 entries
DEFAULT_TIME_ZONE = "Europe/Berlin"
METROLOGICAL_LOG = "metrological"
METROLOGICAL_LOG_CAPACITY = 1000
PERSIST_PERIOD = 1.0  # seconds: at most this much energy is lost in a power failure (I3-2)
SOFTWARE_CHECK_PERIOD = 600.0  # seconds between periodic software-ID checks (P2, P6)
MICRO_PER_MILLI = ENERGY_UNITS_PER_WH // MILLI
MAX_SIMULATED_INTERVAL = 86400  # seconds one RegisterSimulatedPower may measure (the part stays responsive)
# How a time change was asked for (recorded with it); nothing else is accepted as text
TIME_CHANGE_METHODS = ("set", "adjust_to_quarter", "adjust_to_minute", "shift_time")
# Real time: a capture is for the period that just ended, not one long past or still to come
CAPTURE_WINDOW_PAST = CAPTURE_PERIOD + 60
CAPTURE_WINDOW_FUTURE = 5

# Fatal error register bits (0-0:97.97.128.255, IDIS-like assignment; docs/decisions.md)
FATAL_PROGRAM_MEMORY = 0x01  # software differs from the signed release manifest
FATAL_NV_MEMORY = 0x04  # store damaged or tampered
FATAL_MEASUREMENT = 0x08  # metrology could not recover
FATAL_WATCHDOG = 0x10  # the metering loop had to be restarted (cleared by nothing: evidence)

# Metrological log event ids (manufacturer range; docs/decisions.md)
EVENT_SOFTWARE_MISMATCH = 200
EVENT_STORE_DAMAGED = 201
EVENT_METROLOGY_RESTARTED = 202
EVENT_METROLOGY_UNRECOVERABLE = 203
EVENT_SENSOR_REFUSED = 204
EVENT_SENSOR_PAIRED = 205
EVENT_REGISTERS_BELOW_PROFILE = 207
EVENT_DEMO_HISTORY = 208
EVENT_TIME_CHANGED = 213
EVENT_AUTHORITY_REFUSED = 214  # a command claiming or needing the certification authority was refused
# seconds of signal the measuring front end keeps while the software restarts for an activation:
# a restart within it loses no energy (the new software catches it up); a longer one is an outage
WARM_RESTART_BUFFER = 300.0
EVENT_WARM_RESTART = 215  # metrological log: restart for a firmware activation, the gap caught up
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
FIRMWARE_ATTEMPTS = 3  # starts of one image that may fail before it is refused (D1: re-install attempts are limited)
AUTHORITY_LOG_PERIOD = 3600.0  # seconds: one log entry per refusal condition per period (evidence, not a flood)
FAULTY_OPERATION_EVENTS = {"sensor_gap": 209, "sensor_silent": 210, "sensor_resumed": 211,
                           "measurement_delivery_failed": 212}

_PROFILE_ROW = struct.Struct(">BQQQQ")  # status, +A, -A, +R, -R (whole Wh / varh)


class CommandRefused(Exception):
    """The protective interface refused a command: undeclared, unauthorised or not possible now."""


class LegalProcessDown(Exception):
    """The legally relevant part is not running (or could not start): nothing can be read or changed."""


@dataclass(frozen=True, slots=True)
class ProfileRow:
    capture_time: int  # UTC seconds
    status: int
    a_plus: int
    a_minus: int
    r_plus: int
    r_minus: int


@dataclass(frozen=True, slots=True)
class SoftwareIdentity:
    """What 1-0:0.2.0.255 / 1-0:0.2.8.255 (legal part) and 1-1:... (application) show."""

    legal_version: str
    legal_digest: str  # hex SHA-256 over legal/'s files
    application_version: str
    application_digest: str
    ok: bool  # legal/ matches the signed release manifest
    reason: str
    development_key: bool
    display_text: str
    legal_identifier: str = ""  # as shown in 1-0:0.2.0.255: the version, "-DEV" when signed by a development key
    platform_identifier: str = ""  # 1-2:0.2.0.255: interpreter and libraries (legal/platform.py)
    platform_digest: str = ""  # 1-2:0.2.8.255: hex SHA-256 over the platform's files


@dataclass(frozen=True, slots=True)
class InstantaneousValues:
    """The metrology's values of the latest frame, from the samples."""

    voltage: tuple[float, ...]  # V per phase
    current: tuple[float, ...]  # A per phase
    active_power: float  # W, total (negative: export)
    reactive_power: float  # var, total
    apparent_power: float  # VA, sum of phases
    power_factor: float
    frequency: float  # Hz
    active_power_phases: tuple[float, ...] = ()  # W per phase (negative: export)
    reactive_power_phases: tuple[float, ...] = ()  # var per phase, fundamental (negative: capacitive on import)
    apparent_power_phases: tuple[float, ...] = ()  # VA per phase, Urms·Irms
    power_factor_phases: tuple[float, ...] = ()  # P / S per phase, signed (0 without current)
    angle_phases: tuple[float, ...] = ()  # degrees, U-I angle of the fundamental per phase (0 without current)


@dataclass(frozen=True, slots=True)
class LogRecord:
    seq: int
    time_utc: int
    event_id: int
    fields_json: str  # the entry's fields, canonical JSON


# -- the declared commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadEnergyRegisters:
    """-> EnergySnapshot of +A, -A, +R, -R in whole Wh / varh."""


@dataclass(frozen=True, slots=True)
class ReadInstantaneousValues:
    """-> InstantaneousValues of the last measured frame (None before the first)."""


@dataclass(frozen=True, slots=True)
class ReadLoadProfile:
    """-> tuple[ProfileRow, ...] with from_time <= capture_time <= to_time (bounds optional)."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class CountLoadProfileEntries:
    """-> int: entries in use of load profile 1."""


@dataclass(frozen=True, slots=True)
class EndMeasurementPeriod:
    """-> ProfileRow, or None: at a 15-minute boundary, capture load profile 1 and close the
    demand period, in one transaction. The row returned is the entry stored (its status with
    the bits the legal part adds: CAD, PDN, CDI, CIV, DNV, ERR). None: no entry was made: the
    period was already captured or skipped by a clock adjustment, or capturing of load profile
    1 was disabled for the whole period (ReadCaptureEnabled tells which profile is disabled).
    The demand period closes either way: demand is not the profile."""

    capture_time: int
    status: int = 0


@dataclass(frozen=True, slots=True)
class EndDay:
    """-> ProfileRow, or None: at a local midnight (00:00:00 in the meter's time zone), capture
    load profile 2 (daily, 1-0:99.2.0.255). One entry per local day: None when the day was
    already captured (also after a backward clock adjustment), was skipped by a forward
    adjustment (including the midnight the adjustment jumps over or lands on), or capturing of
    load profile 2 was disabled for the whole day. A capture time that is not a local midnight
    is refused; a part on a clock of its own accepts only the midnight that has just passed."""

    capture_time: int
    status: int = 0


@dataclass(frozen=True, slots=True)
class ReadDailyProfile:
    """-> tuple[ProfileRow, ...] of load profile 2 with from_time <= capture_time <= to_time (bounds optional)."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class CountDailyProfileEntries:
    """-> int: entries in use of load profile 2."""


@dataclass(frozen=True, slots=True)
class ReadLatestProfileEntry:
    """-> ProfileRow | None: the newest entry of load profile "lp1" or "lp2" (None while it is
    empty), e.g. for the profile status object, without reading the whole profile."""

    profile: str


@dataclass(frozen=True, slots=True)
class SetCaptureEnabled:
    """Opt-in (enabled True) or opt-out (False) of capturing in one load profile ("lp1" or
    "lp2") at meter time `time_utc` -> (lp1 enabled, lp2 enabled) after it. Applies from the
    next scheduled capture on; the running period is not interrupted: its entry is made and
    carries CDI, as does the first entry after capturing is enabled again; periods disabled
    throughout get no entry (IDIS §7.5.8). Persisted and signed with the time base. A part on
    a clock of its own uses its own time instead of `time_utc`."""

    profile: str
    enabled: bool
    time_utc: int


@dataclass(frozen=True, slots=True)
class ReadCaptureEnabled:
    """-> (lp1 enabled, lp2 enabled): whether capturing is enabled now in each load profile."""


@dataclass(frozen=True, slots=True)
class ReadTimeBase:
    """-> float: the meter time's offset from the platform clock, seconds (meter time = platform + offset)."""


@dataclass(frozen=True, slots=True)
class SetTime:
    """Request a new meter time (the comms side asks, the legal part decides and records):
    -> TimeChange. Under 2 s nothing changes; from 9 s on it is a clock adjustment and the next
    load-profile entry carries CAD (companion §5.4, §5.7.3). Every change is logged in the
    metrological log with the old and the new time. `reference_time_utc` is the meter time the
    requester sees now; the part uses it only when it is not in real time (a simulation, whose
    clock is the requester's), otherwise it uses its own clock."""

    new_time_utc: float
    reference_time_utc: float
    client_system_title: str  # hex, 8 bytes; zeros for the meter itself
    method: str  # one of TIME_CHANGE_METHODS


@dataclass(frozen=True, slots=True)
class StartDemandPeriod:
    """At power-up: a running demand period begins now (an interrupted one is not completed)."""

    now: int


@dataclass(frozen=True, slots=True)
class ReadDemand:
    """-> DemandValue of one register ("a_plus", "a_minus", "r_plus", "r_minus"), W or var."""

    register: str


@dataclass(frozen=True, slots=True)
class ReadMaximumDemand:
    """-> MaximumDemand of one register: maximum of the billing period, its time, and the cumulative maximum."""

    register: str


@dataclass(frozen=True, slots=True)
class ResetMaximumDemand:
    """End of a billing period: the maximum of one register (or of all, register None) is added
    to its cumulative maximum and restarts at 0 with capture time now."""

    now: int
    register: str | None = None


@dataclass(frozen=True, slots=True)
class ReadRateRegisters:
    """-> RateSnapshot: every quantity's registers per rate (whole Wh / varh) and its active rate."""


@dataclass(frozen=True, slots=True)
class SetActiveRates:
    """-> bool (whether a rate changed): from now on each quantity (REGISTER_NAMES order) registers
    into this rate (1, 2; 0: no rate register). What was registered before stays where it went."""

    rates: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EndBillingPeriod:
    """-> BillingRow: close the billing period at capture_time (companion §5.6), in one
    transaction: the counter goes up (00..99), the maximum demands are added into the cumulative
    maxima, the billing profile captures, the maximum demands restart. `trigger` is one of
    "scheduled", "button", "remote", "ad-hoc" and is kept with the entry."""

    capture_time: int
    trigger: str


@dataclass(frozen=True, slots=True)
class ReadBillingProfile:
    """-> tuple[BillingRow, ...] captured in [from_time, to_time] (None: open), oldest first."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class CountBillingProfileEntries:
    """-> int: entries in the billing profile (at most BILLING_PROFILE_CAPACITY)."""


@dataclass(frozen=True, slots=True)
class ReadBillingCounter:
    """-> int: the billing period counter (0..99; 0 before the first end of a billing period)."""


@dataclass(frozen=True, slots=True)
class SetSimulatedLoad:
    """Synthetic sensor only (the demo installation): what it draws from the next frame on, in
    total. `phase` 0: split evenly over the phases; 1..phases: all of it on that phase (the
    others draw nothing). A phase at 0 V carries no current."""

    active_w: float
    reactive_var: float
    phase: int = 0


@dataclass(frozen=True, slots=True)
class RegisterSimulatedPower:
    """Synthetic sensor only, deterministic: measure `seconds` of signal at this load now
    (`phase` as in SetSimulatedLoad): P x t per phase at any voltage above 0 V, nothing on a
    phase at 0 V."""

    active_w: float
    reactive_var: float
    seconds: float
    phase: int = 0


@dataclass(frozen=True, slots=True)
class SetSimulatedVoltage:
    """Synthetic sensor only: the RMS voltage of each phase from the next frame on (one value
    per phase, each finite and 0..400 V; nominal 230 V until set, and again after a restart).
    The current of a phase is its load divided by its voltage; at 0 V it carries none."""

    volts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class IsFreshMeter:
    """-> bool: nothing registered and nothing captured yet (first start)."""


@dataclass(frozen=True, slots=True)
class BackfillDemoHistory:
    """First start only: seed load profile 1 with a simulated history; registers follow its
    last row. Logged in the metrological log as demo history. `rates`: how the history's energy
    divides into rate 1 and rate 2 (8 values: +A 1, +A 2, -A 1, ...), adding up to the last row's
    totals; empty: the history was registered without a rate (rate 0)."""

    rows: tuple[ProfileRow, ...]
    rates: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Persist:
    """Write registers and metering state to the store now (the part does it every second itself).
    `now`: the meter time, for a part whose clock is the caller's (a simulation on a test clock)."""

    now: float | None = None


@dataclass(frozen=True, slots=True)
class ReadClockState:
    """-> ClockState: how meter time is made from the platform clock, and whether it is valid."""


@dataclass(frozen=True, slots=True)
class ClockState:
    offset: float  # meter time = rtc + offset
    speed: float  # rtc seconds per platform second; not 1: a simulation, never a legal meter
    anchor_platform: float  # rtc = anchor_clock + (platform - anchor_platform) * speed
    anchor_clock: float
    invalid: bool  # the time was lost (backup exhausted during an outage) and not set since
    backup_exhausted: bool

    def rtc(self, platform_time: float) -> float:
        return rtc_reading(self.speed, self.anchor_platform, self.anchor_clock, platform_time)


@dataclass(frozen=True, slots=True)
class SetBackupBattery:
    """The clock's backup battery is fine (True) or exhausted (False): with it exhausted an
    outage loses the time (companion §5.4). Kept with the time base."""

    ok: bool


@dataclass(frozen=True, slots=True)
class PowerDown:
    """The supply fails now: everything is persisted and nothing is measured or captured until
    PowerUp. `reference_time_utc` as in SetTime."""

    reference_time_utc: float


@dataclass(frozen=True, slots=True)
class PowerUp:
    """The supply is back, or the meter starts: -> PowerUpReport, once per outage (a repeated
    PowerUp reports nothing new). The next load-profile entry carries PDN; with the backup
    exhausted the clock restarts at the power-down time + 1 s, invalid (CIV, DNV) until set."""

    reference_time_utc: float


@dataclass(frozen=True, slots=True)
class PowerUpReport:
    down_time: int | None  # the last instant the part had persisted before the outage; None: first start
    up_time: int  # meter time at power-up (after a lost time: down_time + 1)
    clean: bool  # the outage began with PowerDown or a clean stop (False: found at start, e.g. kill -9)
    time_lost: bool  # the backup was exhausted: the clock restarted at down_time + 1 s


@dataclass(frozen=True, slots=True)
class ReadRefusedCommandCount:
    """-> int: how many undeclared or refused commands reached the interface since first start."""


@dataclass(frozen=True, slots=True)
class ReadSoftwareIdentity:
    """-> SoftwareIdentity of the legally relevant part and of the application."""


@dataclass(frozen=True, slots=True)
class ReadFatalErrors:
    """-> int: the fatal error register (bits: 0x01 software, 0x04 store, 0x08 measurement, 0x10 watchdog)."""


@dataclass(frozen=True, slots=True)
class ReadParameters:
    """-> tuple of (name, value) of the device-specific legally relevant parameters."""


@dataclass(frozen=True, slots=True)
class ReadParameterRecordNumber:
    """-> int: the parameter record number (1-0:0.2.1.255), +1 per accepted change."""


@dataclass(frozen=True, slots=True)
class SetParameters:
    """Change legally relevant parameters (all or nothing) in certification mode or with
    certification authority; logged in the certification-protected log -> record number.
    The authority is the legal part's own decision: `authority_token` must be a live token it
    issued (ProveAuthority) to this client system title; a forged, released or expired token, or
    a change without authority outside the mode, is refused, counted and logged (event 214)."""

    changes: tuple[tuple[str, Any], ...]
    time_utc: int
    client_system_title: str  # hex, 8 bytes
    authority_token: str = ""  # from ProveAuthority; "" = no authority claimed


@dataclass(frozen=True, slots=True)
class ReadAuthorityProvisioned:
    """-> bool: whether the legal part holds the Certification client's HLS secret."""


@dataclass(frozen=True, slots=True)
class ProvisionAuthoritySecret:
    """Hand the Certification client's HLS 6 secret (hex, 8..64 bytes) to the legal part. Without
    a token only at first start (no secret held yet); afterwards only with an authority token."""

    secret_hex: str
    authority_token: str = ""


@dataclass(frozen=True, slots=True)
class OpenAuthorityChallenge:
    """HLS 6 pass 2 for the Certification client -> (challenge_id, stoc_hex): the legal part makes
    StoC, which the server sends in the AARE. Single use; at most 8 open, 120 s each."""

    client_system_title: str  # hex, 8 bytes
    server_system_title: str  # hex, 8 bytes
    ctos_hex: str  # the client's challenge, 8..64 bytes


@dataclass(frozen=True, slots=True)
class ProveAuthority:
    """HLS 6 pass 3 -> (authority_token, server_response_hex for pass 4) once the legal part has
    verified f(StoC) = SHA-256(secret || SysT-C || SysT-S || StoC || CtoS) with the Certification
    secret itself; the challenge is used up either way (a replayed response is refused). At most
    4 tokens live (the oldest ends), each until EndAuthority or 4 h. Refused, counted and logged
    (forged / replayed / malformed) otherwise."""

    challenge_id: str
    response_hex: str  # f(StoC), 32 bytes


@dataclass(frozen=True, slots=True)
class EndAuthority:
    """The association that won the token is released: the token ends -> whether it was live."""

    authority_token: str


@dataclass(frozen=True, slots=True)
class ReadCertificationMode:
    """-> CertificationStatus (active, remaining seconds, initiator)."""


@dataclass(frozen=True, slots=True)
class SetCertificationMode:
    """Start (certification authority only: a live `authority_token` from ProveAuthority, checked
    by the legal part) or end the certification mode (companion §5.16). Refusals are counted and
    logged in the metrological log (event 214, one entry per condition per hour)."""

    active: bool
    time_utc: int
    client_system_title: str  # hex, 8 bytes
    authority_token: str = ""  # from ProveAuthority; "" = no authority claimed


@dataclass(frozen=True, slots=True)
class ReadCertificationObject:
    """-> (status, energy_res, demand_res, led_source, led_rate): attribute 2 of the certification mode object."""


@dataclass(frozen=True, slots=True)
class WriteCertificationObject:
    """Companion §5.16 attribute 2: TRUE starts the mode (certification authority: a live
    `authority_token` the legal part issued) and applies the non-zero settings; FALSE applies them
    and ends the mode. Logged; all or nothing."""

    status: bool
    energy_res: int
    demand_res: int
    led_source: int
    led_rate: int
    time_utc: int
    client_system_title: str  # hex, 8 bytes
    authority_token: str = ""  # from ProveAuthority; "" = no authority claimed


@dataclass(frozen=True, slots=True)
class TimeLost:
    """The clock lost date and time: the certification mode ends (companion §5.16)."""

    time_utc: int


@dataclass(frozen=True, slots=True)
class ReadCertificationLog:
    """-> tuple[LogRecord, ...] of the certification-protected log (0-0:99.98.98.255) in a time range."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class ReadMetrologicalLog:
    """-> tuple[LogRecord, ...] of the metrological event log in a time range."""

    from_time: int | None = None
    to_time: int | None = None


@dataclass(frozen=True, slots=True)
class ReadMeteringStatus:
    """-> (next sample position, lag behind real time s, largest lag s, watchdog restarts)."""


@dataclass(frozen=True, slots=True)
class ReadSigningKey:
    """-> (public key PEM, SHA-256 fingerprint) of the key that signs logs and stored data."""


@dataclass(frozen=True, slots=True)
class OpenSensorPairing:
    """Remote sensor input only: accept a new pairing (WELMEC 7.3 §4.1) — in certification mode
    only. The new sensor's ID becomes the legally relevant parameter remote_sensor_id."""

    time_utc: int
    client_system_title: str  # hex, 8 bytes


@dataclass(frozen=True, slots=True)
class ReadSensor:
    """-> (input "synthetic"/"remote", paired sensor ID hex or "", UDP address "host:port" or "")."""


@dataclass(frozen=True, slots=True)
class InjectMetrologyStall:
    """Test hook, refused unless the part was started with fault injection: block the
    metering loop for `seconds` so the watchdog can be shown to work (WELMEC I3-1)."""

    seconds: float


# -- firmware (companion §7, WELMEC 7.2 extension D; legal/firmware.py) ---------------------------


@dataclass(frozen=True, slots=True)
class ImportFirmwareKey:
    """Production: the public key (PEM, ECDSA P-256) that firmware images must be signed with.
    Accepted once, when the meter has none; -> its SHA-256 fingerprint."""

    public_key_pem: str


@dataclass(frozen=True, slots=True)
class ReadFirmwareKey:
    """-> (PEM, fingerprint) of the imported firmware key, or None before production imported one."""


@dataclass(frozen=True, slots=True)
class FirmwareVerification:
    ok: bool
    reason: str
    identifier: str  # from the image header ("" when it could not be read)
    size: int
    signature_hex: str
    sha256: str
    parts: tuple[tuple[int, str, str, str], ...]  # (B, name, version, digest) of each part the image carries


@dataclass(frozen=True, slots=True)
class VerifyFirmwareImage:
    """Verify the image in DATA_DIR/firmware/holding.img for activation (D2, D3), as initiated with
    this identifier (hex) and size; the attempt is logged (D4). -> FirmwareVerification."""

    identifier_hex: str
    size: int
    client_system_title: str  # hex, 8 bytes (ff..ff when no client's system title is known)


@dataclass(frozen=True, slots=True)
class ActivateFirmware:
    """Install the verified image beside the running software and mark it for a trial start;
    the caller then restarts the meter. Refused unless the holding file is the image verified.
    -> the slot name."""

    client_system_title: str


@dataclass(frozen=True, slots=True)
class FirmwareActivation:
    sequence: int  # 0 before the first activation
    outcome: str  # "none", "pending", "activated" or "failed"
    identifier: str
    reason: str
    legal_part: bool  # the image carried the legally relevant part


@dataclass(frozen=True, slots=True)
class ConfirmFirmwareActivation:
    """The software of a pending activation has been running and serving: conclude the activation
    as successful (event 18). Nothing happens when other software runs. -> FirmwareActivation."""


@dataclass(frozen=True, slots=True)
class ReadFirmwareActivation:
    """-> FirmwareActivation: the last activation as this part concluded it at its start."""



# The image format and the boot record, for the head-end's tools and the meter's boot code
# (reachable from outside legal/ only through this module)
from smartmeter.legal.firmware import (  # noqa: E402,F401
    BOOT_RECORD, HOLDING_FILE, MAX_FIRMWARE_IMAGE_SIZE, PART_APPLICATION, PART_LEGAL, SLOTS_DIR, FirmwareImage,
    FirmwareImageError, build_firmware_image, firmware_signature_valid, parse_firmware_image, public_key_of,
    read_boot_record, sign_firmware_image, write_boot_record,
)

# Plain records that may travel inside commands (see legal/process.py)
RECORD_TYPES = (ProfileRow,)


# commands whose heavy part (an image's hashes, a slot's files) runs outside the metering lock
_UNLOCKED_COMMANDS = (VerifyFirmwareImage, ActivateFirmware)

_AUTHORITY_COMMANDS = (SetParameters, SetCertificationMode, WriteCertificationObject, ProvisionAuthoritySecret,
                       OpenAuthorityChallenge, ProveAuthority, EndAuthority)


def _profile_payload(row: ProfileRow) -> bytes:
    return _PROFILE_ROW.pack(row.status, row.a_plus, row.a_minus, row.r_plus, row.r_minus)


def _profile_row(time_utc: int, payload: bytes) -> ProfileRow:
    return ProfileRow(time_utc, *_PROFILE_ROW.unpack(payload))


class LegalInterface:
    """Typed commands into the legally relevant part. Thread-safe: the metering thread and the
    command thread share one lock."""

    def __init__(self, data_dir: Path, *, phases: int = 1, realtime: bool = False, fault_injection: bool = False,
                 monotonic: Callable[[], float] = time.monotonic, software_root: str | None = None,
                 application_version: str = "", sensor: str = "synthetic", sensor_port: int | None = None,
                 meter_id: str = "", speed: float | None = None, start_time: float | None = None,
                 time_zone: str = DEFAULT_TIME_ZONE, meter_type: int = 0) -> None:
        self._application_version = application_version
        self._sensor_port = sensor_port
        self._sensor_kind = sensor
        self._udp = None
        self._data_dir = Path(data_dir)
        self._monotonic = monotonic
        self._fault_injection = fault_injection
        # realtime: the part measures continuously on its own (a meter at real speed). Its clock is
        # the platform's, scaled when `speed` is given (a simulation faster than real time, whose
        # registration the caller drives interval by interval); otherwise, for tests on a clock of
        # their own, meter time is what the commands say it is.
        self._realtime = realtime and (speed is None or speed == 1.0)
        self._own_clock = realtime or speed is not None
        self._command_time: float | None = None
        self._powered = True
        self._started = False
        self._software_root = Path(software_root) if software_root else None
        self._lock = threading.RLock()
        self._damaged_meta: set[str] = set()
        self._db = storage.open_store(self._data_dir)
        self._signer = MeterSigner.load_or_create(self._data_dir)
        self._metro_log = EventLog(self._db, METROLOGICAL_LOG, METROLOGICAL_LOG_CAPACITY, self._signer)
        self._cert_log = CertificationLog(self._db, self._signer)
        self._lp1 = ChainedTable(self._db, LOAD_PROFILE_1, LOAD_PROFILE_1_CAPACITY, "fifo", self._signer)
        self._lp2 = ChainedTable(self._db, LOAD_PROFILE_2, LOAD_PROFILE_2_CAPACITY, "fifo", self._signer)
        self._billing = ChainedTable(self._db, BILLING_PROFILE, BILLING_PROFILE_CAPACITY, "fifo", self._signer)
        # stamps every log entry from here on; local midnights in the meter's time zone
        self._time = TimeBase(self._load_time_base(), LocalDays(time_zone))
        self._apply_speed(speed, start_time)
        # the last instant persisted before this start is when the supply failed (or the meter stopped)
        self._outage: tuple[int | None, bool] | None = (self._meta("alive", None), bool(self._meta("stopped_cleanly", False)))
        # a restart for a firmware activation is not an outage: the signal of the gap is measured
        warm_stop = self._meta("warm_stop", None)
        stopped = warm_stop.get("time") if isinstance(warm_stop, dict) else None
        gap = time.time() - stopped if isinstance(stopped, (int, float)) else None
        # only the meter process that stopped for the activation, restarting itself (exec keeps its
        # pid): any other start after it, e.g. after a power cut during the trial, is an outage
        same_meter = isinstance(warm_stop, dict) and warm_stop.get("meter_pid") == os.getppid()
        self._warm_backlog = gap if same_meter and gap is not None and 0 <= gap <= WARM_RESTART_BUFFER else 0.0
        if self._warm_backlog:
            self._outage = None
        self._powered = not self._meta("powered_down", False)
        self._fatal = int(self._meta("fatal_errors", 0))
        self._integrity = identification.check_software(self._software_root)
        self._software_id = self._integrity.actual or identification.compute_software_id(self._software_root)
        # the certification log records the identifier as 1-0:0.2.0.255 shows it (with "-DEV")
        firmware_id = (identification.marked_version(self._software_id.version, self._integrity.development_key)
                       + " " + self._software_id.digest_hex[:8]).encode()
        self._firmware_id = firmware_id.decode()
        # checked before anything writes to it; a meter that has captured a profile entry must have a seal
        seal = ParameterSeal(self._db, self._signer, verify,
                             expect_signature=self._lp1.count() > 0 or self._lp2.count() > 0)
        # the certification mode's 12 h run on the meter's time, fast in a fast simulation
        speed_factor = self._time.state.speed
        mode_clock = monotonic if speed_factor == 1.0 else (lambda: monotonic() * speed_factor)
        self._mode = CertificationMode(self._db, self._cert_log.log, firmware_id, mode_clock, (LogFull,), seal)
        self._parameters = ParameterStore(self._db, self._cert_log.log, self._mode, firmware_id, (LogFull,), seal)
        self._check_parameters_at_start()
        rows = dict(self._db.execute("SELECT name, milli_units FROM energy_register").fetchall())
        self._registers = EnergyRegisters(rows)
        self._rates, self._rates_before_v2 = self._load_rates()
        self._micro_remainder = dict.fromkeys(REGISTER_NAMES, 0)
        demand = self._meta("demand", None)
        self._demand = DemandRegisters(DemandState.from_json(demand) if demand else DemandState())
        self._migrate_old_profile()
        if self._time.state.capture_floor is None and self._lp1.count():  # a profile migrated just now
            self._time.state.capture_floor = self._lp1.last().time_utc
        self._check_store_at_start()
        if self._rates_before_v2 and not self._fatal & FATAL_NV_MEMORY:
            with atomic(self._db):  # the rates start here (all energy so far in rate 0), signed from now on
                self._write_registers()
        if not self._integrity.ok:
            self._raise_fatal(FATAL_PROGRAM_MEMORY, EVENT_SOFTWARE_MISMATCH, {
                "reason": self._integrity.reason.value, "changed_files": " ".join(self._integrity.changed_files)})
        # the type this meter was built as (companion §5.1): fixed at the first start, what images must name
        if self._meta("meter_type", None) is None and meter_type:
            with atomic(self._db):
                self._put_meta("meter_type", int(meter_type))
        self._meter_type = int(self._meta("meter_type", 0) or 0)
        self._settle_firmware_activation()
        self._warm_installation = None
        if warm_stop is not None:
            if self._warm_backlog:
                self._log_event(EVENT_WARM_RESTART, {"gap": float(self._warm_backlog)})
                self._warm_installation = (warm_stop.get("loads"), warm_stop.get("voltages"))
            with atomic(self._db):
                self._put_meta("warm_stop", None)
        remote = None
        if sensor == "remote":
            try:
                saved = self._meta("sensor_pairing", None)
                record = PairingRecord.from_bytes(bytes.fromhex(saved)) if saved else None
            except ValueError:
                record = None
                self._raise_fatal(FATAL_NV_MEMORY, EVENT_STORE_DAMAGED, {"problems": "sensor pairing unreadable"})
            remote = RemoteSensorLink(bytes.fromhex(meter_id), record)
        elif sensor != "synthetic":
            raise ValueError(f"sensor must be 'synthetic' or 'remote', not {sensor!r}")
        unit = dict(on_measurement=self._on_measurement, on_event=self._on_metering_event, monotonic=monotonic,
                    lock=self._lock, remote=remote)
        try:
            state = self._meta("metering_state", None)
            self._metering = MeteringUnit(phases, state=bytes.fromhex(state) if state else None, **unit)
        except (MeteringError, ValueError, TypeError):
            # a state saved for the other input, or damaged: start the input afresh
            self._metering = MeteringUnit(phases, **unit)
        if self._warm_installation is not None and remote is None:
            # the gap is measured with what the installation drew when the old software stopped
            try:
                self._metering.restore_installation(*self._warm_installation)
            except MeteringError:
                pass
        secret = self._meta("authority_secret", None)
        self._authority = AuthorityGate(bytes.fromhex(secret) if isinstance(secret, str) else None,
                                        self._save_authority_secret, monotonic)
        self._authority_logged: dict[str, tuple[float, int]] = {}  # condition -> (last entry, refusals since)
        self._unsaved = False
        self._last_persist = monotonic()
        self._last_software_check = monotonic()
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._handlers: dict[type, Callable[[Any], Any]] = {
            ReadEnergyRegisters: self._read_energy,
            ReadInstantaneousValues: self._read_instantaneous,
            ReadLoadProfile: self._read_load_profile,
            CountLoadProfileEntries: lambda _: self._lp1.count(),
            EndMeasurementPeriod: self._end_period,
            EndDay: self._end_day,
            ReadDailyProfile: self._read_daily_profile,
            CountDailyProfileEntries: lambda _: self._lp2.count(),
            ReadLatestProfileEntry: self._read_latest_entry,
            SetCaptureEnabled: self._set_capture_enabled,
            ReadCaptureEnabled: lambda _: self._capture_enabled(),
            ReadTimeBase: lambda _: self._time.state.offset,
            ReadClockState: self._read_clock_state,
            SetBackupBattery: self._set_backup_battery,
            PowerDown: self._power_down,
            PowerUp: self._power_up,
            SetTime: self._set_time,
            StartDemandPeriod: self._start_demand,
            ReadRateRegisters: lambda _: self._rates.snapshot(),
            SetActiveRates: self._set_active_rates,
            EndBillingPeriod: self._end_billing_period,
            ReadBillingProfile: lambda cmd: tuple(BillingRow.from_payload(e.time_utc, e.payload)
                                                  for e in self._billing.between(cmd.from_time, cmd.to_time)),
            CountBillingProfileEntries: lambda _: self._billing.count(),
            ReadBillingCounter: lambda _: int(self._meta("billing_counter", 0)),
            ReadDemand: self._read_demand,
            ReadMaximumDemand: self._read_maximum_demand,
            ResetMaximumDemand: self._reset_maximum_demand,
            SetSimulatedLoad: self._set_load,
            RegisterSimulatedPower: self._register_power,
            SetSimulatedVoltage: self._set_voltage,
            IsFreshMeter: self._is_fresh,
            BackfillDemoHistory: self._backfill,
            Persist: self._persist_command,
            ReadRefusedCommandCount: lambda _: int(self._meta("refused_commands", 0)),
            ReadSoftwareIdentity: self._read_software_identity,
            ReadFatalErrors: lambda _: self._fatal,
            ReadParameters: lambda _: tuple(sorted(self._parameters.values().items())),
            ReadParameterRecordNumber: lambda _: self._parameters.record_number,
            SetParameters: self._set_parameters,
            ReadCertificationMode: lambda _: self._mode.status(),
            SetCertificationMode: self._set_certification_mode,
            TimeLost: lambda cmd: self._mode.time_lost(cmd.time_utc),
            ReadCertificationObject: self._read_certification_object,
            WriteCertificationObject: self._write_certification_object,
            ReadCertificationLog: lambda cmd: self._log_records(self._cert_log.log, cmd.from_time, cmd.to_time),
            ReadMetrologicalLog: lambda cmd: self._log_records(self._metro_log, cmd.from_time, cmd.to_time),
            ReadSigningKey: lambda _: (self._signer.public_key_pem(), self._signer.fingerprint()),
            ReadMeteringStatus: lambda _: (self._metering.position, float(self._metering.lag_seconds()),
                                           float(self._metering.max_lag_seconds()), self._metering.restarts),
            InjectMetrologyStall: self._inject_stall,
            OpenSensorPairing: self._open_pairing,
            ReadAuthorityProvisioned: lambda _: self._authority.provisioned,
            ProvisionAuthoritySecret: self._provision_authority,
            OpenAuthorityChallenge: self._open_authority_challenge,
            ProveAuthority: self._prove_authority,
            EndAuthority: self._end_authority,
            ReadSensor: self._read_sensor,
            ImportFirmwareKey: self._import_firmware_key,
            ReadFirmwareKey: self._read_firmware_key,
            VerifyFirmwareImage: self._verify_firmware,
            ActivateFirmware: self._activate_firmware,
            ReadFirmwareActivation: lambda _: self._firmware_activation(),
            ConfirmFirmwareActivation: self._confirm_firmware,
        }

    # -- the door ---------------------------------------------------------------------------------
    @property
    def commands(self) -> tuple[type, ...]:
        """The declared commands: the complete list (documented in docs/welmec/protective-interface.md)."""
        return tuple(self._handlers)

    def execute(self, command: object) -> Any:
        """Run one declared command; anything else is refused, counted, and changes nothing."""
        handler = self._handlers.get(type(command))
        if handler is None:
            self.count_refusal()
            raise CommandRefused(f"{type(command).__name__} is not a command of the protective interface")
        from smartmeter.legal.process import check_fields  # (process.py imports this module)

        try:
            check_fields(command)  # a declared command with a malformed field has no effect either
        except CommandRefused:
            self.count_refusal()
            if type(command) in _AUTHORITY_COMMANDS:
                with self._lock:
                    self._log_authority_refusal(type(command).__name__, "malformed", "a field of the wrong type")
            raise
        if type(command) in _UNLOCKED_COMMANDS:  # they take the lock themselves, around the store only
            return handler(command)
        with self._lock:
            return handler(command)

    def refuse_wire_command(self, raw: bytes) -> None:
        """A command that could not be rebuilt from the pipe: counted; logged (rate-limited) when it
        was one carrying authority data, as a malformed authority claim is evidence too."""
        self.count_refusal()
        try:
            name = json.loads(raw).get("type")
        except (ValueError, TypeError, AttributeError, RecursionError):
            return
        if name in {cls.__name__ for cls in _AUTHORITY_COMMANDS}:
            with self._lock:
                self._log_authority_refusal(name, "malformed", "a field of the wrong type")

    def count_refusal(self) -> None:
        """Count one refused command (persistently)."""
        with self._lock, atomic(self._db):
            self._put_meta("refused_commands", int(self._meta("refused_commands", 0)) + 1)

    # -- store helpers ----------------------------------------------------------------------------
    def _meta(self, key: str, default: Any) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (ValueError, TypeError):  # altered outside the meter: reported at start, default used
            self._damaged_meta.add(key)
            return default

    def _put_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, json.dumps(value)))

    def _registers_message(self) -> bytes:
        return registers_message(self._registers.milli_units(), self._rates)

    def _load_rates(self) -> tuple[RateRegisters, bool]:
        """The rate registers and active rates as stored; -> (registers, whether the store is from
        before rates existed: then all its energy is in rate 0 and its signature covers the totals only)."""
        rows = self._db.execute("SELECT name, rate, units FROM rate_register").fetchall()
        if not rows:
            return RateRegisters.all_in_rate_0(self._registers.snapshot()), True
        active = self._meta("active_rates", {})
        try:
            return RateRegisters({(n, r): u for n, r, u in rows}, active if isinstance(active, dict) else {}), False
        except (ValueError, TypeError):  # altered outside the meter: reported at start
            self._damaged_meta.add("active_rates")
            return RateRegisters({(n, r): u for n, r, u in rows}, {}), False

    def _write_registers(self) -> None:
        """Registers and rates with the meter's signature over them, so an edit of the store shows (P5, I3-4)."""
        self._db.executemany(
            "INSERT INTO energy_register(name, milli_units) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET milli_units = excluded.milli_units",
            sorted(self._registers.milli_units().items()),
        )
        self._db.executemany(
            "INSERT INTO rate_register(name, rate, units) VALUES (?, ?, ?) "
            "ON CONFLICT(name, rate) DO UPDATE SET units = excluded.units",
            sorted((n, r, u) for (n, r), u in self._rates.items().items()),
        )
        self._put_meta("active_rates", self._rates.active())
        self._put_meta("registers_signature", self._signer.sign(self._registers_message()).hex())
        self._rates_before_v2 = False

    def _persist(self, force: bool = False) -> None:
        if not (self._unsaved or force):
            return
        with atomic(self._db):
            if self._powered:
                self._put_meta("alive", int(self._now()))
            self._write_registers()
            self._put_meta("metering_state", self._metering.snapshot().hex())
            record = self._metering.pairing_record()
            if record is not None:  # its last sequence number goes with the registers
                self._put_meta("sensor_pairing", record.to_bytes().hex())
        self._unsaved = False
        self._last_persist = self._monotonic()

    # -- integrity ------------------------------------------------------------------------------
    def _log_event(self, event_id: int, fields: dict) -> None:
        # the log holds no floats (canonical JSON): durations and the like go in as milliseconds
        fields = {(f"{k}_ms" if isinstance(v, float) else k): (round(v * 1000) if isinstance(v, float) else v)
                  for k, v in fields.items()}
        try:
            self._metro_log.append(int(self._now()), event_id, fields)
        except LogFull:
            # the log is evidence and is never overwritten; the counter of refusals is kept by it
            pass

    def _raise_fatal(self, bit: int, event_id: int, fields: dict) -> None:
        first = not self._fatal & bit
        self._fatal |= bit
        with atomic(self._db):
            self._put_meta("fatal_errors", self._fatal)
        if first:
            self._log_event(event_id, fields)

    def _check_store_at_start(self) -> None:
        problems = []
        public = self._signer.public_key_pem()
        for table in (self._lp1, self._lp2, self._billing):
            report = table.verify(public)
            if not report.ok:
                problems.append(f"{table.name}: {report.problem}")
        for name, log in ((METROLOGICAL_LOG, self._metro_log), ("certification", self._cert_log)):
            report = log.verify(public)
            if not report.ok:
                problems.append(f"{name} log: {report.problem}")
        signature = self._meta("registers_signature", None)
        has_energy = any(self._registers.milli_units().values())
        message = registers_message(self._registers.milli_units(), None if self._rates_before_v2 else self._rates)
        try:
            signed = signature is not None and verify(public, message, bytes.fromhex(signature))
        except (ValueError, TypeError):
            signed = False
        if has_energy and not signed:
            problems.append("energy registers: signature does not verify")
        if not self._rates.sums_to(self._registers.snapshot()):
            problems.append("rate registers: they do not add up to the total registers")
        if self._damaged_meta:
            problems.append("stored state unreadable: " + ", ".join(sorted(self._damaged_meta)))
        snap = self._registers.snapshot()
        for table in (self._lp1, self._lp2):
            last = table.last()
            if last is not None:
                row = _profile_row(last.time_utc, last.payload)
                if any(getattr(snap, n) < getattr(row, n) for n in REGISTER_NAMES):
                    problems.append(f"energy registers below the last entry of {table.name}")
        if problems:
            self._raise_fatal(FATAL_NV_MEMORY, EVENT_STORE_DAMAGED, {"problems": "; ".join(problems[:8])})

    def _check_parameters_at_start(self) -> None:
        """Stored parameters outside their declared type or range were altered outside the meter (P7)."""
        faults = self._parameters.integrity_faults
        if faults:
            self._raise_fatal(FATAL_NV_MEMORY, EVENT_STORE_DAMAGED, {"problems": "parameters: " + ", ".join(faults)})

    def _migrate_old_profile(self) -> None:
        """Stores written before the profile was hash-linked: move their rows into the chain once."""
        old = self._db.execute(
            "SELECT capture_time, status, a_plus, a_minus, r_plus, r_minus FROM load_profile "
            "WHERE profile = ? ORDER BY capture_time", (LOAD_PROFILE_1,)).fetchall()
        if old and self._lp1.count() == 0:
            with atomic(self._db):
                for r in old:
                    self._lp1.append(r[0], 0, _profile_payload(ProfileRow(*r)))
                self._db.execute("DELETE FROM load_profile WHERE profile = ?", (LOAD_PROFILE_1,))

    def _read_software_identity(self, _: ReadSoftwareIdentity) -> SoftwareIdentity:
        application = identification.compute_application_id(version=self._application_version)
        platform_id = platform.current()
        return SoftwareIdentity(
            self._software_id.version, self._software_id.digest_hex, application.version, application.digest_hex,
            self._integrity.ok, self._integrity.reason.value, self._integrity.development_key,
            self._software_id.display_text,
            identification.marked_version(self._software_id.version, self._integrity.development_key),
            platform_id.identifier, platform_id.digest_hex)

    # -- firmware (extension D) ----------------------------------------------------------------------
    def _package_root(self) -> Path:
        return (self._software_root or identification.LEGAL_PACKAGE_DIR).parent

    def _running_parts(self) -> dict[str, firmware.RunningPart]:
        application = identification.compute_application_id(self._package_root(), self._application_version)
        return {firmware.PART_LEGAL: firmware.RunningPart(self._software_id.version, self._software_id.digest_hex),
                firmware.PART_APPLICATION: firmware.RunningPart(application.version, application.digest_hex)}

    def _import_firmware_key(self, cmd: ImportFirmwareKey) -> str:
        if self._meta("firmware_key", None) is not None:
            raise CommandRefused("a firmware key has been imported already; it is not replaced")
        pem = cmd.public_key_pem.encode("ascii", "replace")
        try:
            public = firmware.public_key_of(pem)
        except firmware.FirmwareImageError as exc:
            raise CommandRefused(f"firmware key: {exc}") from None
        if public != pem and not pem.startswith(b"-----BEGIN PUBLIC KEY-----"):
            raise CommandRefused("firmware key: give the public key, never the private one")
        with atomic(self._db):
            self._put_meta("firmware_key", public.decode("ascii"))
        return public_key_fingerprint(public)

    def _read_firmware_key(self, _: ReadFirmwareKey) -> tuple[str, str] | None:
        pem = self._meta("firmware_key", None)
        return None if pem is None else (pem, public_key_fingerprint(pem.encode("ascii")))

    def _holding_image(self) -> bytes:
        try:
            with open(self._data_dir / firmware.HOLDING_FILE, "rb") as f:
                return f.read(firmware.MAX_FIRMWARE_IMAGE_SIZE + 1)
        except OSError:
            return b""

    @staticmethod
    def _hex(text: str, what: str) -> bytes:
        """Bytes given as hex digits only (bytes.fromhex would also take spaces and line ends)."""
        if not _HEX_DIGITS.fullmatch(text) or len(text) % 2:
            raise CommandRefused(f"{what} must be hex digits")
        return bytes.fromhex(text)

    @classmethod
    def _title(cls, hex_title: str) -> bytes:
        """A client system title given as hex: 8 bytes (NO_CLIENT's ff...ff when no client is known)."""
        title = cls._hex(hex_title, "client_system_title")
        if len(title) != 8:
            raise CommandRefused("client_system_title must be 8 bytes, hex")
        return title

    def _cert_log_room(self) -> int:
        return self._cert_log.capacity - self._cert_log.count()

    def _verify_firmware(self, cmd: VerifyFirmwareImage) -> FirmwareVerification:
        """Runs without the metering lock (see `execute`): reading, decompressing and hashing an
        image of up to 16 MiB must not hold up the metering thread; the store is touched under it."""
        identifier = self._hex(cmd.identifier_hex, "identifier_hex")
        initiator = self._title(cmd.client_system_title)
        with self._lock:
            key = self._meta("firmware_key", None)
            sealed = not self._parameters.values().get("firmware_download", 1)
            running = self._running_parts()
        raw = self._holding_image()
        if sealed:
            verdict = firmware.Verdict(False, "download of software is disabled on this meter (sealed setting)",
                                       None, "")
        else:
            verdict = firmware.verify_firmware_image(
                raw, key_pem=key.encode("ascii") if key else None, identifier=identifier, size=cmd.size,
                meter_type=self._meter_type, running=running, anchored_keys=identification.anchored_keys(),
                running_is_release=not self._integrity.development_key)
        image = verdict.image
        legal_part = image is None or image.part(firmware.PART_LEGAL) is not None
        with self._lock:
            if verdict.ok and legal_part and self._cert_log_room() < 2:
                # the activation must be recordable too (D4: when the log is full, downloads are impossible)
                verdict = firmware.Verdict(False, "the certification protected log is full: no download of the "
                                           "legally relevant part until it is read out and cleared", image,
                                           verdict.sha256)
            if legal_part and self._cert_log_room() > 0:
                legal = image.part(firmware.PART_LEGAL) if image else None
                downloaded = f"{legal.version} {legal.digest[:8]}" if legal else identifier[:64].decode("latin-1")
                self._cert_log.append(int(self._now()),
                                      EVENT_LR_FIRMWARE_READY if verdict.ok else EVENT_LR_FIRMWARE_FAILED,
                                      initiator, downloaded.encode("latin-1", "replace"))
            with atomic(self._db):
                self._put_meta("firmware_verified", {"sha256": verdict.sha256, "initiator": cmd.client_system_title,
                                                     "identifier": image.identifier} if verdict.ok else None)
        return FirmwareVerification(
            verdict.ok, verdict.reason, image.identifier if image else "", len(raw),
            image.signature.hex() if image else "", verdict.sha256,
            tuple((p.b, p.name, p.version, p.digest) for p in image.parts) if image else ())

    def _activate_firmware(self, cmd: ActivateFirmware) -> str:
        """Runs without the metering lock (see `execute`): the slot is written and synced outside
        it; the store is touched under it."""
        title = self._title(cmd.client_system_title)
        with self._lock:
            verified = self._meta("firmware_verified", None)
            if not isinstance(verified, dict):
                raise CommandRefused("no verified image: verify before activation")
            if not self._parameters.values().get("firmware_download", 1):
                raise CommandRefused("download of software is disabled on this meter (sealed setting)")
            failures = self._meta("firmware_failures", {})
            running = self._running_parts()
        raw = self._holding_image()
        if hashlib.sha256(raw).hexdigest() != verified.get("sha256"):
            raise CommandRefused("the image changed since it was verified: verify again")
        if isinstance(failures, dict) and failures.get(verified["sha256"], 0) >= FIRMWARE_ATTEMPTS:
            raise CommandRefused(f"this image failed to start {FIRMWARE_ATTEMPTS} times: it is not tried again")
        image = firmware.parse_firmware_image(raw)
        legal = image.part(firmware.PART_LEGAL)
        expected = {p: (image.part(p) or running[p]).digest
                    for p in (firmware.PART_LEGAL, firmware.PART_APPLICATION)}
        # the meter's own scheduler activates with no client's title: the client who verified it asked
        initiator = verified.get("initiator") if title == NO_CLIENT else cmd.client_system_title
        with self._lock:
            if legal is not None and self._cert_log_room() < 1:
                raise CommandRefused("the certification protected log is full")
            sequence = int(self._meta("firmware_sequence", 0)) + 1
            slot = f"{sequence:04d}-{verified['sha256'][:12]}"
            pending = {"sequence": sequence, "slot": slot, "identifier": image.identifier,
                       "sha256": verified["sha256"], "legal_part": legal is not None, "initiator": initiator,
                       "legal_digest": expected[firmware.PART_LEGAL],
                       "application_digest": expected[firmware.PART_APPLICATION],
                       "legal_id": f"{legal.version} {legal.digest[:8]}" if legal else ""}
            # recorded first: a power failure from here on ends as a failed activation unless the new
            # software is what then runs
            with atomic(self._db):
                self._put_meta("firmware_sequence", sequence)
                self._put_meta("firmware_pending", pending)
                self._put_meta("firmware_verified", None)
                self._put_meta("warm_restart", True)
            self._persist(force=True)
        try:
            firmware.install_firmware_image(image, raw, self._package_root(), self._data_dir, slot)
            record = firmware.read_boot_record(self._data_dir)
            record["trial"] = {"slot": slot, "attempts": 0, "identifier": image.identifier,
                               "legal_digest": pending["legal_digest"],
                               "application_digest": pending["application_digest"]}
            firmware.write_boot_record(self._data_dir, record)
        except (OSError, firmware.FirmwareImageError) as exc:
            with self._lock:
                self._conclude_activation(pending, False, f"installation failed: {exc}")
                with atomic(self._db):  # still verified: the activation may be asked again (disk freed)
                    self._put_meta("firmware_verified", verified)
            raise CommandRefused(f"installation failed: {exc}") from None
        return slot

    def _confirm_firmware(self, _: "ConfirmFirmwareActivation") -> FirmwareActivation:
        """The new software has been serving: the pending activation succeeded (event 18)."""
        pending = self._meta("firmware_pending", None)
        if isinstance(pending, dict) and self._runs(pending):
            self._conclude_activation(pending, True, "")
        return self._firmware_activation()

    def _runs(self, pending: dict) -> bool:
        running = self._running_parts()
        return (running[firmware.PART_LEGAL].digest == pending.get("legal_digest")
                and running[firmware.PART_APPLICATION].digest == pending.get("application_digest"))

    def _settle_firmware_activation(self) -> None:
        """At start: an activation was pending. Other software than it installs runs now: it failed
        (51). Its software runs: it stays pending until that software has been serving for a while
        and confirms it (ConfirmFirmwareActivation, 18); if it stops before, the boot code returns
        to the previous software, whose start concludes it as failed."""
        pending = self._meta("firmware_pending", None)
        if not isinstance(pending, dict) or self._runs(pending):
            return
        last = firmware.read_boot_record(self._data_dir).get("last") or {}
        reason = (last.get("reason") if isinstance(last, dict) and last.get("slot") == pending.get("slot")
                  else "") or "the new software did not come up; the previous software runs"
        self._conclude_activation(pending, False, str(reason)[:200])

    def _conclude_activation(self, pending: dict, ok: bool, reason: str) -> None:
        if pending.get("legal_part") and self._cert_log_room() > 0:
            shown = self._firmware_id if ok else pending.get("legal_id", "")
            try:
                initiator = self._title(str(pending.get("initiator", "")))
            except CommandRefused:  # recorded by this part itself; an unreadable one is no client
                initiator = NO_CLIENT
            self._cert_log.append(int(self._now()), EVENT_LR_FIRMWARE_ACTIVATED if ok else EVENT_LR_FIRMWARE_FAILED,
                                  initiator, str(shown).encode("latin-1", "replace"))
        failures = self._meta("firmware_failures", {})
        failures = failures if isinstance(failures, dict) else {}
        if not ok:
            sha = str(pending.get("sha256", ""))
            failures[sha] = failures.get(sha, 0) + 1
            failures = dict(list(failures.items())[-16:])
        with atomic(self._db):
            self._put_meta("firmware_pending", None)
            self._put_meta("warm_restart", False)
            self._put_meta("firmware_failures", failures)
            self._put_meta("firmware_outcome", {
                "sequence": pending.get("sequence", 0), "outcome": "activated" if ok else "failed",
                "identifier": pending.get("identifier", ""), "reason": reason,
                "legal_part": bool(pending.get("legal_part"))})

    def _firmware_activation(self) -> FirmwareActivation:
        pending = self._meta("firmware_pending", None)
        if isinstance(pending, dict):
            return FirmwareActivation(int(pending.get("sequence", 0)), "pending", str(pending.get("identifier", "")),
                                      "", bool(pending.get("legal_part")))
        outcome = self._meta("firmware_outcome", None)
        if not isinstance(outcome, dict):
            return FirmwareActivation(0, "none", "", "", False)
        return FirmwareActivation(int(outcome.get("sequence", 0)), str(outcome.get("outcome", "")),
                                  str(outcome.get("identifier", "")), str(outcome.get("reason", "")),
                                  bool(outcome.get("legal_part")))

    # -- measurement ------------------------------------------------------------------------------
    def _on_measurement(self, measurement: Measurement) -> None:
        """Called by the metering unit with the lock held, for every frame, in order."""
        if self._fatal & FATAL_PROGRAM_MEMORY:
            return  # modified software does not register energy (P6)
        delta = measurement.energy_delta
        milli = {}
        for name in REGISTER_NAMES:
            total = self._micro_remainder[name] + getattr(delta, name)
            milli[name], self._micro_remainder[name] = divmod(total, MICRO_PER_MILLI)
        before = self._registers.snapshot()
        self._registers.add_milli(milli)
        self._rates.follow(before, self._registers.snapshot())
        self._unsaved = True
        if self._monotonic() - self._last_persist >= PERSIST_PERIOD:
            self._persist()

    def _on_metering_event(self, name: str, fields: dict) -> None:
        if name == "metrology_restarted":
            self._raise_fatal_event(FATAL_WATCHDOG, EVENT_METROLOGY_RESTARTED, fields)
        elif name == "metrology_unrecoverable":
            # a stuck thread holds the lock: record what can be recorded, then end the process
            # so it starts again from the last persisted state (I3-1's processor reset)
            if self._lock.acquire(timeout=2.0):
                try:
                    self._raise_fatal_event(FATAL_MEASUREMENT, EVENT_METROLOGY_UNRECOVERABLE, fields)
                finally:
                    self._lock.release()
            os._exit(70)
        elif name == "sensor_frame_refused":
            with self._lock:
                self._log_event(EVENT_SENSOR_REFUSED, fields)
        elif name == "sensor_paired":
            with self._lock:
                self._log_event(EVENT_SENSOR_PAIRED, fields)
                self._sensor_paired(str(fields.get("sensor_id", "")))
        elif name in FAULTY_OPERATION_EVENTS:
            # periods of faulty operation, date-stamped (WELMEC 7.2 I3-1 notes)
            with self._lock:
                self._log_event(FAULTY_OPERATION_EVENTS[name], fields)

    def _raise_fatal_event(self, bit: int, event_id: int, fields: dict) -> None:
        # the watchdog reports from its own thread; the metering lock may be held by a stuck
        # loop, so the event is written on the store with its own short transaction
        with self._lock:
            self._fatal |= bit
            with atomic(self._db):
                self._put_meta("fatal_errors", self._fatal)
            self._log_event(event_id, fields)

    def _read_instantaneous(self, _: ReadInstantaneousValues) -> InstantaneousValues | None:
        m = self._metering.latest()
        if m is None:
            return None
        s = sum(p.apparent_power for p in m.phases)
        return InstantaneousValues(
            tuple(float(p.voltage_rms) for p in m.phases), tuple(float(p.current_rms) for p in m.phases),
            float(m.active_power), float(m.reactive_power), float(s), float(m.active_power / s) if s else 0.0,
            float(m.frequency), tuple(float(p.active_power) for p in m.phases),
            tuple(float(p.reactive_power) for p in m.phases), tuple(float(p.apparent_power) for p in m.phases),
            tuple(float(p.power_factor) for p in m.phases),
            tuple(math.degrees(math.atan2(p.reactive_power, p.active_power)) if p.apparent_power else 0.0
                  for p in m.phases))

    def _set_load(self, cmd: SetSimulatedLoad) -> None:
        self._require_power()
        try:
            self._metering.set_load(float(cmd.active_w), float(cmd.reactive_var), cmd.phase)
        except MeteringError as exc:
            raise CommandRefused(str(exc)) from None

    def _register_power(self, cmd: RegisterSimulatedPower) -> None:
        if not 0 <= cmd.seconds <= MAX_SIMULATED_INTERVAL:
            raise CommandRefused(f"seconds must be 0..{MAX_SIMULATED_INTERVAL} per command")
        self._require_power()
        try:
            self._metering.set_load(float(cmd.active_w), float(cmd.reactive_var), cmd.phase)
        except MeteringError as exc:
            raise CommandRefused(str(exc)) from None
        self._metering.measure_for(float(cmd.seconds), steady=True)

    def _set_voltage(self, cmd: SetSimulatedVoltage) -> None:
        self._require_power()
        try:
            self._metering.set_voltages(tuple(float(v) for v in cmd.volts))
        except MeteringError as exc:
            raise CommandRefused(str(exc)) from None

    def _open_pairing(self, cmd: OpenSensorPairing) -> None:
        try:
            if len(bytes.fromhex(cmd.client_system_title)) != 8:
                raise ValueError
        except ValueError:
            raise CommandRefused("client_system_title must be 8 bytes") from None
        if self._sensor_kind != "remote":
            raise CommandRefused("the input is not a remote sensor")
        if not self._mode.is_active():
            raise CommandRefused("a sensor is paired only in certification mode (WELMEC 7.3 §4.1)")
        try:
            self._metering.open_pairing()
        except MeteringError as exc:
            raise CommandRefused(str(exc)) from None
        self._pairing_by = cmd.client_system_title

    def _sensor_paired(self, sensor_id: str) -> None:
        """Persist the pairing and record the sensor ID as a legally relevant parameter."""
        record = self._metering.pairing_record()
        with atomic(self._db):
            if record is not None:
                self._put_meta("sensor_pairing", record.to_bytes().hex())
        try:
            title = bytes.fromhex(getattr(self, "_pairing_by", "")) or bytes(8)
            self._parameters.set({"remote_sensor_id": sensor_id}, int(time.time()), Initiator(title, True))
        except (ParameterRefused, ValueError):
            self._log_event(EVENT_SENSOR_PAIRED, {"sensor_id": sensor_id, "parameter": "not recorded"})

    def _read_sensor(self, _: ReadSensor) -> tuple[str, str, str]:
        record = self._metering.pairing_record()
        address = "" if self._udp is None else "%s:%d" % self._udp.address
        return self._sensor_kind, record.sensor_id.hex() if record is not None else "", address

    def _inject_stall(self, cmd: InjectMetrologyStall) -> bool:
        if not self._fault_injection:
            raise CommandRefused("fault injection is not enabled")
        return self._metering.inject_stall(float(cmd.seconds))

    # -- registers and profile --------------------------------------------------------------------
    def _read_energy(self, _: ReadEnergyRegisters) -> EnergySnapshot:
        return self._registers.snapshot()

    # -- time base ------------------------------------------------------------------------------
    def _now(self) -> float:
        """The meter time that stamps what this part records: the real-time clock + legal offset
        (in a part whose clock is the caller's: the latest time a command brought)."""
        if not self._own_clock and self._command_time is not None:
            return self._command_time
        return self._time.now(time.time())

    def _platform_at(self, reference_time_utc: float) -> float:
        """The platform instant for a command's reference time (the caller's clock, when the part
        has none of its own). A reference that is no time (NaN, out of range) is refused before
        it can become the part's time."""
        if not 0 <= reference_time_utc < 2 ** 32:
            raise CommandRefused("time out of range (1970..2106)")
        if self._own_clock:
            return time.time()
        self._command_time = float(reference_time_utc)
        return self._time.state.platform(reference_time_utc - self._time.state.offset)

    def _apply_speed(self, speed: float | None, start_time: float | None) -> None:
        state = self._time.state
        if start_time is not None:
            # (before the registers are loaded: read from the store)
            registered = any(v for (v,) in self._db.execute("SELECT milli_units FROM energy_register"))
            if self._lp1.count() or self._lp2.count() or registered or self._meta("alive", None) is not None:
                raise ValueError("a start time is only for a fresh data directory (this one has run)")
            state.offset = 0.0
            state.anchor_platform, state.anchor_clock = time.time(), float(start_time)
        wanted = 1.0 if speed is None else float(speed)
        if start_time is not None or wanted != state.speed:
            state.rescale(time.time(), wanted)
            with atomic(self._db):
                self._save_time_base()

    def _read_clock_state(self, _: ReadClockState) -> ClockState:
        st = self._time.state
        return ClockState(st.offset, st.speed, st.anchor_platform, st.anchor_clock, st.clock_invalid,
                          st.backup_exhausted)

    def _set_backup_battery(self, cmd: SetBackupBattery) -> None:
        self._time.state.backup_exhausted = not cmd.ok
        with atomic(self._db):
            self._save_time_base()

    def _persist_command(self, cmd: Persist) -> None:
        if cmd.now is not None:
            self._platform_at(cmd.now)
        self._persist(force=True)

    def _power_down(self, cmd: PowerDown) -> None:
        self._platform_at(cmd.reference_time_utc)
        if not self._powered:
            return
        self._metering.stop()
        self._persist(force=True)
        with atomic(self._db):
            self._put_meta("stopped_cleanly", True)
            self._put_meta("powered_down", True)  # a restart during the outage stays down
        self._powered = False
        if self._outage is None or self._outage[0] is None:  # an outage found at start, not yet reported, goes on
            self._outage = (int(self._now()), True)

    def _power_up(self, cmd: PowerUp) -> PowerUpReport | None:
        platform = self._platform_at(cmd.reference_time_utc)
        if self._outage is None:
            return None  # powered all along: nothing to report
        down_time, clean = self._outage
        lost = False
        if down_time is not None:
            lost = self._time.power_restored(platform, down_time)
            if lost:
                self._command_time = None if self._own_clock else down_time + 1.0
        with atomic(self._db):
            self._save_time_base()
            self._put_meta("stopped_cleanly", False)
            self._put_meta("powered_down", False)
            self._put_meta("alive", int(self._now()))
        self._outage = None
        self._powered = True
        if self._realtime and self._started:
            self._metering.start()
        return PowerUpReport(down_time, int(self._now()), clean, lost)

    def _require_power(self) -> None:
        if not self._powered:
            raise CommandRefused("the meter is powered down")

    @staticmethod
    def _time_base_message(text: str) -> bytes:
        return b"smartmeter/time-base/v1\0" + text.encode()

    def _load_time_base(self) -> TimeBaseState:
        """The stored time base if its signature verifies; an edited one is a damaged store."""
        saved = self._meta("time_base", None)
        if saved is not None:
            signature = self._meta("time_base_signature", None)
            try:
                if not verify(self._signer.public_key_pem(), self._time_base_message(saved), bytes.fromhex(signature)):
                    raise ValueError("signature does not verify")
                return TimeBaseState.from_json(saved)
            except (ValueError, TypeError, KeyError, AttributeError):
                self._damaged_meta.add("time_base")
        state = TimeBaseState()
        for name, table in ((LOAD_PROFILE_1, self._lp1), (LOAD_PROFILE_2, self._lp2)):
            last = table.last()
            state.profiles[name].floor = None if last is None else last.time_utc
        return state

    def _save_time_base(self) -> None:
        """Within the caller's transaction: the time base with the meter's signature over it."""
        text = self._time.state.to_json()
        self._put_meta("time_base", text)
        self._put_meta("time_base_signature", self._signer.sign(self._time_base_message(text)).hex())

    def _set_time(self, cmd: SetTime) -> TimeChange:
        try:
            requester = bytes.fromhex(cmd.client_system_title)
        except ValueError:
            requester = b""
        if len(requester) != 8:
            raise CommandRefused("client_system_title must be 8 bytes")
        if cmd.method not in TIME_CHANGE_METHODS:
            raise CommandRefused(f"method must be one of {', '.join(TIME_CHANGE_METHODS)}")
        if not (0 <= cmd.new_time_utc < 2 ** 32 and 0 <= cmd.reference_time_utc < 2 ** 32):
            raise CommandRefused("time out of range (1970..2106)")
        was_invalid = self._time.state.clock_invalid
        change = self._time.set_time(self._platform_at(cmd.reference_time_utc), float(cmd.new_time_utc))
        if not self._own_clock:
            self._command_time = change.new_time
        if change.kind == UNCHANGED:
            if was_invalid:
                with atomic(self._db):
                    self._save_time_base()
            return change
        with atomic(self._db):
            self._save_time_base()
            if self._powered:  # a power failure right after the change is dated in the new time
                self._put_meta("alive", int(self._now()))
        # every change of the time base, stamped with the new time
        self._log_event(EVENT_TIME_CHANGED, {
            "old_time": int(change.old_time), "new_time": int(change.new_time), "kind": change.kind,
            "method": cmd.method, "client_system_title": requester.hex()})
        return change

    def _check_capture(self, capture_time: int, status: int) -> None:
        """What every capture must satisfy before it changes anything."""
        self._require_power()
        if not 0 <= status <= 0xFF:
            raise CommandRefused("the profile status is one byte")
        if not 0 <= capture_time < 2 ** 32:
            raise CommandRefused("capture time out of range (1970..2106)")
        if self._own_clock:
            now = self._now()
            if not now - CAPTURE_WINDOW_PAST <= capture_time <= now + CAPTURE_WINDOW_FUTURE:
                raise CommandRefused("a capture is for the period that has just ended")

    def _capture(self, table: ChainedTable, capture_time: int, status: int) -> ProfileRow | None:
        """Within the caller's transaction: the entry of `table` at `capture_time` if the time
        base admits one (None otherwise), with the registers as stored in the same transaction."""
        snap = self._registers.snapshot()
        before = self._time.state.to_json()
        extra = self._time.admit_capture(capture_time, table.name)  # one entry per period of the time base
        if extra is not None and self._fatal:
            extra |= STATUS_ERROR | STATUS_DATA_NOT_VALID
        row = None
        if extra is not None:
            row = ProfileRow(capture_time, status | extra, snap.a_plus, snap.a_minus, snap.r_plus, snap.r_minus)
            table.append(capture_time, 0, _profile_payload(row))
        if self._time.state.to_json() != before:  # also a capture suppressed by capturing control
            self._save_time_base()
        return row

    def _end_period(self, cmd: EndMeasurementPeriod) -> ProfileRow | None:
        if cmd.capture_time % CAPTURE_PERIOD:
            raise CommandRefused(f"a capture is at a {CAPTURE_PERIOD} s boundary")
        self._check_capture(cmd.capture_time, cmd.status)
        if not self._own_clock:
            self._command_time = float(cmd.capture_time)
        # demand is not the profile: its period closes whether or not an entry is made
        demand = self._demand.copy()
        demand.close_period(cmd.capture_time, self._registers.milli_units())
        with atomic(self._db):
            self._write_registers()
            self._put_meta("metering_state", self._metering.snapshot().hex())
            row = self._capture(self._lp1, cmd.capture_time, cmd.status)
            self._put_meta("demand", demand.state.to_json())
        self._demand = demand
        self._unsaved = False
        return row

    def _end_day(self, cmd: EndDay) -> ProfileRow | None:
        if not (0 <= cmd.capture_time < 2 ** 32 and self._time.days.is_start(cmd.capture_time)):
            raise CommandRefused(f"a daily capture is at local midnight ({self._time.days.zone.key})")
        self._check_capture(cmd.capture_time, cmd.status)
        if not self._own_clock:
            self._command_time = float(cmd.capture_time)
        with atomic(self._db):
            self._write_registers()
            self._put_meta("metering_state", self._metering.snapshot().hex())
            row = self._capture(self._lp2, cmd.capture_time, cmd.status)
        self._unsaved = False
        return row

    def _read_daily_profile(self, cmd: ReadDailyProfile) -> tuple[ProfileRow, ...]:
        return tuple(_profile_row(e.time_utc, e.payload) for e in self._lp2.between(cmd.from_time, cmd.to_time))

    def _capture_enabled(self) -> tuple[bool, bool]:
        profiles = self._time.state.profiles
        return profiles[LOAD_PROFILE_1].enabled, profiles[LOAD_PROFILE_2].enabled

    def _read_latest_entry(self, cmd: ReadLatestProfileEntry) -> ProfileRow | None:
        table = {LOAD_PROFILE_1: self._lp1, LOAD_PROFILE_2: self._lp2}.get(cmd.profile)
        if table is None:
            raise CommandRefused(f"profile must be {LOAD_PROFILE_1!r} or {LOAD_PROFILE_2!r}")
        last = table.last()
        return None if last is None else _profile_row(last.time_utc, last.payload)

    def _set_capture_enabled(self, cmd: SetCaptureEnabled) -> tuple[bool, bool]:
        if cmd.profile not in (LOAD_PROFILE_1, LOAD_PROFILE_2):
            raise CommandRefused(f"profile must be {LOAD_PROFILE_1!r} or {LOAD_PROFILE_2!r}")
        if not 0 <= cmd.time_utc < 2 ** 32:
            raise CommandRefused("time out of range (1970..2106)")
        # a part with a clock of its own stamps the change itself; while powered down the change
        # is kept and marked on the first entry after power-up
        when = int(self._now()) if self._own_clock else cmd.time_utc
        if self._time.set_capture_enabled(cmd.profile, cmd.enabled, when):
            with atomic(self._db):
                self._save_time_base()
        return self._capture_enabled()

    def _read_load_profile(self, cmd: ReadLoadProfile) -> tuple[ProfileRow, ...]:
        return tuple(_profile_row(e.time_utc, e.payload) for e in self._lp1.between(cmd.from_time, cmd.to_time))

    def _is_fresh(self, _: IsFreshMeter | None = None) -> bool:
        return (self._lp1.count() == 0 and self._lp2.count() == 0
                and not any(self._registers.milli_units().values()))

    def _backfill(self, cmd: BackfillDemoHistory) -> None:
        if not self._is_fresh() or not cmd.rows:
            raise CommandRefused("demo history can only be back-filled into an empty meter")
        rows = sorted(cmd.rows, key=lambda r: r.capture_time)[-LOAD_PROFILE_1_CAPACITY:]
        last = rows[-1]
        if cmd.rates:
            split = dict(zip(((n, r) for n in REGISTER_NAMES for r in RATES), cmd.rates))
            if len(cmd.rates) != len(split) or any(sum(split[(n, r)] for r in RATES) != getattr(last, n)
                                                   for n in REGISTER_NAMES):
                raise CommandRefused("the rates of the history add up to its last totals, per quantity")
            self._rates = RateRegisters(split, self._rates.active())
        else:
            self._rates = RateRegisters({(n, 0): getattr(last, n) for n in REGISTER_NAMES}, self._rates.active())
        self._registers = EnergyRegisters({name: getattr(last, name) * MILLI for name in REGISTER_NAMES})
        with atomic(self._db):
            self._write_registers()
            for row in rows:
                self._lp1.append(row.capture_time, 0, _profile_payload(row))
            self._lp1.checkpoint()
            self._time.state.capture_floor = last.capture_time
            self._save_time_base()
        self._log_event(EVENT_DEMO_HISTORY, {"entries": len(rows), "first": rows[0].capture_time,
                                             "last": last.capture_time})

    # -- rates and billing ------------------------------------------------------------------------
    def _set_active_rates(self, cmd: SetActiveRates) -> bool:
        if len(cmd.rates) != len(REGISTER_NAMES) or any(r not in ALL_RATES for r in cmd.rates):
            raise CommandRefused(f"one rate per quantity ({', '.join(REGISTER_NAMES)}), each one of {ALL_RATES}")
        # (also while powered down: nothing is registered then, and the meter starts with its tariff)
        if not self._rates.set_active(dict(zip(REGISTER_NAMES, cmd.rates))):
            return False
        with atomic(self._db):  # what was registered up to now stays in the old rates
            self._write_registers()
            self._put_meta("metering_state", self._metering.snapshot().hex())
        self._unsaved = False
        return True

    def _end_billing_period(self, cmd: EndBillingPeriod) -> BillingRow:
        if cmd.trigger not in TRIGGERS:
            raise CommandRefused(f"trigger must be one of {', '.join(TRIGGERS)}")
        self._check_capture(cmd.capture_time, 0)
        if not self._own_clock:
            self._command_time = float(cmd.capture_time)
        counter = (int(self._meta("billing_counter", 0)) + 1) % COUNTER_MODULUS
        totals, rates = self._registers.snapshot(), self._rates.snapshot()
        maxima = [self._demand.maximum(n) for n in REGISTER_NAMES]
        # the reset adds each maximum into its cumulative maximum; the entry shows the sum
        demand = self._demand.copy()
        demand.reset_maximum(cmd.capture_time)
        row = BillingRow(
            cmd.capture_time, counter,
            tuple(v for n in REGISTER_NAMES for v in (getattr(totals, n), *(rates.value(n, r) for r in RATES))),
            tuple(m.value for m in maxima),
            tuple(BILLING_NO_TIME if m.capture_time is None else m.capture_time for m in maxima),
            tuple(demand.maximum(n).cumulative for n in REGISTER_NAMES), cmd.trigger)
        with atomic(self._db):
            self._write_registers()
            self._put_meta("metering_state", self._metering.snapshot().hex())
            self._put_meta("billing_counter", counter)
            self._billing.append(cmd.capture_time, 0, row.to_payload())
            self._put_meta("demand", demand.state.to_json())
        self._demand = demand  # a failed commit leaves the period open, its maxima as they were
        self._unsaved = False
        return row

    # -- demand -----------------------------------------------------------------------------------
    def _start_demand(self, cmd: StartDemandPeriod) -> None:
        demand = self._demand.copy()
        demand.start(cmd.now, self._registers.milli_units())
        with atomic(self._db):
            self._put_meta("demand", demand.state.to_json())
        self._demand = demand

    def _register_name(self, name: str) -> str:
        if name not in REGISTER_NAMES:
            raise CommandRefused(f"no register {name!r}; one of {', '.join(REGISTER_NAMES)}")
        return name

    def _read_demand(self, cmd: ReadDemand) -> DemandValue:
        return self._demand.demand(self._register_name(cmd.register), self._registers.milli_units())

    def _read_maximum_demand(self, cmd: ReadMaximumDemand) -> MaximumDemand:
        return self._demand.maximum(self._register_name(cmd.register))

    def _reset_maximum_demand(self, cmd: ResetMaximumDemand) -> None:
        names = REGISTER_NAMES if cmd.register is None else (self._register_name(cmd.register),)
        demand = self._demand.copy()
        demand.reset_maximum(cmd.now, names)
        with atomic(self._db):
            self._put_meta("demand", demand.state.to_json())
        self._demand = demand

    # -- parameters and certification mode ----------------------------------------------------------
    # -- the certification authority (decided here, never taken from the caller) --------------------
    def _save_authority_secret(self, secret: bytes) -> None:
        with atomic(self._db):
            self._put_meta("authority_secret", secret.hex())

    def _log_authority_refusal(self, command: str, condition: str, detail: str) -> None:
        """One metrological log entry per condition per AUTHORITY_LOG_PERIOD, carrying how many
        refusals of that condition it stands for: a flood cannot fill the evidence log."""
        now = self._monotonic()
        last, since = self._authority_logged.get(condition, (None, 0))
        since += 1
        if last is not None and now - last < AUTHORITY_LOG_PERIOD:
            self._authority_logged[condition] = (last, since)
            return
        self._authority_logged[condition] = (now, 0)
        self._log_event(EVENT_AUTHORITY_REFUSED, {"command": command, "condition": condition, "detail": detail,
                                                  "refusals": since})

    def _refuse_authority(self, command: str, exc: AuthorityRefused) -> CommandRefused:
        self.count_refusal()
        self._log_authority_refusal(command, exc.condition, str(exc))
        return CommandRefused(f"{command}: {exc}")

    def _initiator(self, cmd: object) -> Initiator:
        name = type(cmd).__name__
        try:
            title = bytes.fromhex(cmd.client_system_title)
        except ValueError:
            title = b""
        if len(title) != 8:
            raise self._refuse_authority(name, AuthorityRefused("malformed", "client_system_title must be 8 bytes"))
        try:
            return Initiator(title, self._authority.check(cmd.authority_token, title))
        except AuthorityRefused as exc:
            raise self._refuse_authority(name, exc) from None

    def _parameter_refused(self, cmd: object, what: str, exc: ParameterRefused) -> CommandRefused:
        if exc.reason in (RefusalReason.NOT_AUTHORISED, RefusalReason.NOT_IN_CERTIFICATION_MODE):
            # an unauthenticated attempt on a legal parameter is evidence, as a forged claim is
            return self._refuse_authority(type(cmd).__name__, AuthorityRefused("unauthenticated", exc.reason.value))
        return CommandRefused(f"{what}: {exc}")

    def _provision_authority(self, cmd: ProvisionAuthoritySecret) -> None:
        try:
            if self._authority.provisioned:
                if not self._authority.check(cmd.authority_token, self._token_owner(cmd.authority_token)):
                    raise AuthorityRefused("unauthenticated", "the certification secret is set; changing it needs the authority")
                self._authority.set_secret(cmd.secret_hex)
            else:
                self._authority.provision(cmd.secret_hex)
        except AuthorityRefused as exc:
            raise self._refuse_authority(type(cmd).__name__, exc) from None

    def _token_owner(self, token: str) -> bytes:
        owner = self._authority.owner(token)
        return owner if owner is not None else bytes(8)

    def _open_authority_challenge(self, cmd: OpenAuthorityChallenge) -> tuple[str, str]:
        try:
            return self._authority.open_challenge(cmd.client_system_title, cmd.server_system_title, cmd.ctos_hex)
        except AuthorityRefused as exc:
            raise self._refuse_authority(type(cmd).__name__, exc) from None

    def _prove_authority(self, cmd: ProveAuthority) -> tuple[str, str]:
        try:
            return self._authority.prove(cmd.challenge_id, cmd.response_hex)
        except AuthorityRefused as exc:
            raise self._refuse_authority(type(cmd).__name__, exc) from None

    def _end_authority(self, cmd: EndAuthority) -> bool:
        try:
            return self._authority.end(cmd.authority_token)
        except AuthorityRefused as exc:
            raise self._refuse_authority(type(cmd).__name__, exc) from None

    def _set_parameters(self, cmd: SetParameters) -> int:
        initiator = self._initiator(cmd)
        try:
            return self._parameters.set(dict(cmd.changes), int(cmd.time_utc), initiator)
        except ParameterRefused as exc:
            raise self._parameter_refused(cmd, "parameters not changed", exc) from None

    def _set_certification_mode(self, cmd: SetCertificationMode) -> CertificationStatus:
        initiator = self._initiator(cmd)
        try:
            if cmd.active:
                self._mode.start(int(cmd.time_utc), initiator)
            else:
                self._mode.stop(int(cmd.time_utc), initiator)
        except ParameterRefused as exc:
            raise self._parameter_refused(cmd, "certification mode not changed", exc) from None
        return self._mode.status()

    def _read_certification_object(self, _: ReadCertificationObject) -> tuple[bool, int, int, int, int]:
        o = self._parameters.read_certification_object()
        return (o.status, o.energy_res, o.demand_res, o.led_source, o.led_rate)

    def _write_certification_object(self, cmd: WriteCertificationObject) -> None:
        initiator = self._initiator(cmd)
        value = CertificationObject(cmd.status, cmd.energy_res, cmd.demand_res, cmd.led_source, cmd.led_rate)
        try:
            self._parameters.write_certification_object(value, int(cmd.time_utc), initiator)
        except ParameterRefused as exc:
            raise self._parameter_refused(cmd, "certification mode object not written", exc) from None

    @staticmethod
    def _log_records(log: EventLog, from_time: int | None, to_time: int | None) -> tuple[LogRecord, ...]:
        return tuple(LogRecord(e.seq, e.time_utc, e.event_id, encode_fields(e.fields).decode())
                     for e in log.between(from_time, to_time))

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start what runs on its own: the real-time metering loop and its watchdog, and the
        housekeeping that persists every second and re-checks the software periodically."""
        self._started = True
        if self._realtime and self._powered:
            self._metering.start(self._warm_backlog)
        if self._sensor_port is not None:
            self._udp = self._metering.serve_udp("127.0.0.1", self._sensor_port)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="legal-housekeeping", daemon=True)
        self._housekeeper.start()

    def _housekeeping(self) -> None:
        while not self._stop.wait(PERSIST_PERIOD / 2):
            with self._lock:
                # a clock of its own: the instant of a power failure is known to within a period
                self._persist(force=self._own_clock and self._powered
                              and self._monotonic() - self._last_persist >= PERSIST_PERIOD)
                self._mode.poll(int(self._now()))
                if self._monotonic() - self._last_software_check >= SOFTWARE_CHECK_PERIOD:
                    self._last_software_check = self._monotonic()
                    self._integrity = identification.check_software(self._software_root)
                    if not self._integrity.ok:
                        self._raise_fatal(FATAL_PROGRAM_MEMORY, EVENT_SOFTWARE_MISMATCH, {
                            "reason": self._integrity.reason.value,
                            "changed_files": " ".join(self._integrity.changed_files)})

    def close(self) -> None:
        self._stop.set()
        if self._udp is not None:
            self._udp.close()
        self._metering.stop()
        with self._lock:
            # a damaged store is not signed anew by a mere stop: what was found stays for verify-storage
            self._persist(force=not self._fatal & FATAL_NV_MEMORY)
            if self._powered:  # a clean stop: the next start is a power-up after a known power-down
                with atomic(self._db):
                    self._put_meta("stopped_cleanly", True)
                    if self._meta("warm_restart", False):  # stopped to run activated software
                        self._put_meta("warm_restart", False)
                        loads, voltages = self._metering.installation() if self._sensor_kind == "synthetic" else ((), ())
                        self._put_meta("warm_stop", {"time": time.time(), "loads": [list(l) for l in loads],
                                                     "voltages": list(voltages), "meter_pid": os.getppid()})
            for table in (self._lp1, self._lp2):
                try:
                    table.checkpoint()
                except ChainError:
                    pass
            self._db.close()


def start_legal_process(data_dir: Path, options: dict | None = None):
    """Run the legal part in its own process; returns a client with the same `execute`."""
    from smartmeter.legal.process import LegalProcessClient

    return LegalProcessClient(Path(data_dir), options)


# -- offline: what can be checked without the meter running ------------------------------------

LOG_TABLES = (METROLOGICAL_LOG, "certification")
STORAGE_TABLES = (LOAD_PROFILE_1, LOAD_PROFILE_2, BILLING_PROFILE, "energy registers", "parameters")


REGISTERS_TABLE = "energy registers"
PARAMETERS_TABLE = "parameters"  # the signed parameter store (legal/parameters.py)


def verify_stored_data(data_dir: Path, tables: tuple[str, ...], public_key_pem: bytes | None = None):
    """Verify hash links and signatures of the named tables of a data directory, read-only,
    with the exported public key (or the one given): -> list of reports (see legal/verify.py).
    The name REGISTERS_TABLE checks the signature over the stored energy registers."""
    from smartmeter.legal.signing import PUBLIC_KEY_FILE, public_key_fingerprint
    from smartmeter.legal.verify import TableReport, open_read_only, verify_data_dir

    chains = tuple(t for t in tables if t not in (REGISTERS_TABLE, PARAMETERS_TABLE))
    reports = verify_data_dir(Path(data_dir), public_key_pem=public_key_pem, expected_tables=chains,
                              event_logs=tuple(t for t in chains if t in LOG_TABLES))
    reports = [r for r in reports if r.name in chains or r.name == "(store)"]
    if REGISTERS_TABLE in tables and not any(r.name == "(store)" for r in reports):
        pem = public_key_pem or (Path(data_dir) / PUBLIC_KEY_FILE).read_bytes()
        db = open_read_only(Path(data_dir) / "legal.sqlite3")
        try:
            milli = dict(db.execute("SELECT name, milli_units FROM energy_register").fetchall())
            row = db.execute("SELECT value FROM meta WHERE key = 'registers_signature'").fetchone()
            try:
                rate_rows = db.execute("SELECT name, rate, units FROM rate_register").fetchall()
            except sqlite3.OperationalError:  # a store from before rate registers
                rate_rows = []
            active = db.execute("SELECT value FROM meta WHERE key = 'active_rates'").fetchone()
        finally:
            db.close()
        try:
            rates = RateRegisters({(n, r): u for n, r, u in rate_rows}, json.loads(active[0]) if active else {}) \
                if rate_rows else None
            ok = row is not None and verify(pem, registers_message(milli, rates), bytes.fromhex(json.loads(row[0])))
        except (ValueError, TypeError, OverflowError, AttributeError):
            ok = False
        if not any(milli.values()) and row is None:
            ok = True  # nothing registered yet
        reports.append(TableReport(REGISTERS_TABLE, ok, len(milli), None,
                                   "" if ok else "the register values do not match their signature",
                                   key_fingerprint=public_key_fingerprint(pem)))
    if PARAMETERS_TABLE in tables and not any(r.name == "(store)" for r in reports):
        from smartmeter.legal.verify import verify_parameters

        reports.append(verify_parameters(Path(data_dir), public_key_pem))
    return reports


def _read_stored_meta(data_dir: Path, key: str, parse: Callable[[Any], Any]) -> Any:
    """parse(value) of a meta entry of a data directory's legal store, read-only; None when there is
    no store or no such entry, or it cannot be read."""
    from smartmeter.legal.verify import open_read_only

    path = Path(data_dir) / "legal.sqlite3"
    if not path.is_file():
        return None
    try:
        db = open_read_only(path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
        return parse(json.loads(row[0])) if row else None
    except (sqlite3.Error, ValueError, TypeError, KeyError, AttributeError):
        return None


def read_stored_time_base(data_dir: Path) -> TimeBaseState | None:
    """The time base a meter's data directory holds, read-only (None before a first start, or
    when it cannot be read): e.g. whether the meter's clock runs at a simulated speed."""
    return _read_stored_meta(data_dir, "time_base", TimeBaseState.from_json)


def read_stored_firmware_key(data_dir: Path) -> str | None:
    """SHA-256 fingerprint of the firmware key a meter's data directory holds (imported in
    production), read-only; None before one was imported. For comparison with the manufacturer's
    published key (WELMEC 7.2 D2)."""
    return _read_stored_meta(data_dir, "firmware_key", lambda pem: public_key_fingerprint(pem.encode("ascii")))


def identify_software(application_version: str, in_legal_process: bool = False,
                      fallback: bool = True) -> SoftwareIdentity:
    """The software identification as the meter shows it, computed from the installed files
    by a freshly started legal process (so the platform part is what a meter's legal process
    loads); in-process if that process cannot start (e.g. legal/ does not even compile), unless
    `fallback` is False: then LegalProcessDown (a self-test needs the process to start)."""
    if not in_legal_process:
        from smartmeter.legal.process import identify_in_legal_process

        try:
            return identify_in_legal_process(application_version)
        except LegalProcessDown:
            if not fallback:
                raise
    integrity = identification.check_software()
    software = integrity.actual or identification.compute_software_id()
    application = identification.compute_application_id(version=application_version)
    platform_id = platform.current()
    return SoftwareIdentity(software.version, software.digest_hex, application.version, application.digest_hex,
                            integrity.ok, integrity.reason.value, integrity.development_key, software.display_text,
                            identification.marked_version(software.version, integrity.development_key),
                            platform_id.identifier, platform_id.digest_hex)


def package_digests(package_root: Path) -> tuple[str, str]:
    """(legal digest, application digest) of the `smartmeter` package at `package_root`, as the
    identifier objects would show them when it runs (the boot code checks an installed slot)."""
    root = Path(package_root)
    return (identification.compute_software_id(root / identification.LEGAL_DIR_NAME).digest_hex,
            identification.compute_application_id(root).digest_hex)
