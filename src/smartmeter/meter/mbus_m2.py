"""The M2 multi-utility interface (companion §2.3, §4.3, §6): the meter reads up to four
submeters (gas, water, heat) over wired or wireless M-Bus into its COSEM objects.

This module is the sans-io core. It keeps one `Channel` per M-Bus client object (IC 72,
channels 1..4), decides what the bus must do and when (on the meter's clock, so a fast clock
reads and captures fast), and takes what the bus answered:

    requests(now)                 -> the bus operations due now (install, read, clock sync,
                                     data send, key transfer, valve command)
    answered(request, telegram, now) / failed(request, now)
    received(channel, telegram, now)   a wireless telegram the receiver decrypted for a binding

Nothing here touches a socket: `MbusM2Driver` (bottom) runs the requests over the wired bus
driver (smartmeter.mbus.aio) and feeds the wireless receiver's telegrams in.

Persistence: every change of a channel (its settings, identity, key, key status, values,
communication state) is one transaction of the event store, together with the M-Bus event
and the load-profile rows it causes, so a kill -9 loses nothing and never half of a change.

The M-Bus event log (0-0:99.98.3.255) and the per-channel load profiles (0-x:24.3.0.255) and
control logs (0-x:24.5.0.255) are profiles of the event store (`append_row`), their codes are
`EVENTS` below (IDIS/DSMR as commonly implemented; docs/decisions.md).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol

from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.errors import SmartmeterError
from smartmeter.meter.schedule import Passage
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
# A bus failure repeats at every read of a channel: one line per channel and condition, then at
# most one an hour (real time, so a fast meter clock does not multiply them) with the count held.
LOG_INTERVAL = 3600.0

CHANNELS = (1, 2, 3, 4)
WIRED_PORT = Obis.parse("0-0:24.6.0.255").to_bytes()
WIRELESS_PORT = Obis.parse("0-1:24.6.0.255").to_bytes()
PRIMARY_ADDRESSES = range(1, 251)  # 0 is "not configured", 251..255 are reserved (EN 13757-2 §5.5)
DEFAULT_CAPTURE_PERIOD = 3600  # s: the wired read interval until the HES writes its own (catalog §4: hourly profile)
CLOCK_SYNC_INTERVAL = 86400  # companion §6.6: every 24 h
PROFILE_PERIODS = (60, 300, 600, 900, 3600, 86400)  # companion §6.3: 1, 5, 10, 15, 60 min or daily
PROFILE_ENTRIES = 240  # 10 days of hourly entries
MBUS_EVENT_LOG_ENTRIES = 100
CONTROL_LOG_ENTRIES = 10
RETRY_AFTER = 60  # s of meter time before an installation that got no answer is tried again
KEY_LENGTH = 16

# Encryption key status, Blue Book IC 72 attribute 14 (Gurux MBusEncryptionKeyStatus alike)
NO_KEY, KEY_SET, KEY_TRANSFERRED, KEY_SET_AND_TRANSFERRED, KEY_IN_USE = 0, 1, 2, 3, 4

# why an encrypted wired telegram's records were refused (SubmeterTelegram.key_failure)
KEY_FAILURE_NO_KEY = "encrypted, the channel has no key"
KEY_FAILURE_WRONG_KEY = "does not decrypt with the channel's key"
KEY_FAILURE_UNSUPPORTED = "security mode not supported on the wired bus"
KEY_FAILURE_CLEAR_TEXT = "clear text although the key is in use"

# M-Bus header status byte (EN 13757-3 §6.6)
STATUS_POWER_LOW = 0x04
STATUS_PERMANENT_ERROR = 0x08

# profile status bits (companion §5.7.3 / catalog §3.6)
STATUS_DNV = 0x04  # data not valid: no answer from the submeter in the period
STATUS_CAD = 0x20  # the meter clock was adjusted in the period
STATUS_PDN = 0x80  # a power outage in the period

# M-Bus event codes, one per channel: base + channel - 1. 100..121 as IDIS P2 / DSMR 5 as
# commonly implemented; 122..145 fill the companion's gap (its M-Bus event list is in [1]).
EVENT_COMMUNICATION_ERROR = 100
EVENT_COMMUNICATION_OK = 105
EVENT_REPLACE_BATTERY = 110
EVENT_FRAUD_ATTEMPT = 114
EVENT_CLOCK_ADJUSTED = 118
EVENT_INSTALLED = 122
EVENT_DEINSTALLED = 126
EVENT_PERMANENT_ERROR = 130
EVENT_KEY_SET = 134
EVENT_KEY_TRANSFERRED = 138
EVENT_KEY_TRANSFER_FAILED = 142
EVENT_NAMES = {
    EVENT_COMMUNICATION_ERROR: "communication error", EVENT_COMMUNICATION_OK: "communication ok",
    EVENT_REPLACE_BATTERY: "replace battery", EVENT_FRAUD_ATTEMPT: "fraud attempt (another device answers)",
    EVENT_CLOCK_ADJUSTED: "clock adjusted", EVENT_INSTALLED: "device installed",
    EVENT_DEINSTALLED: "device de-installed", EVENT_PERMANENT_ERROR: "permanent error",
    EVENT_KEY_SET: "encryption key set", EVENT_KEY_TRANSFERRED: "encryption key transferred",
    EVENT_KEY_TRANSFER_FAILED: "key transfer failed",
}
# control log codes (IDIS disconnector control log codes, per channel log)
CONTROL_VALVE_CLOSED = 60
CONTROL_VALVE_OPENED = 61

STATE_KEY = "mbus.channel.{}"
EVENT_LOG = "mbus.events"
PROFILE = "mbus.profile.{}"
CONTROL_LOG = "mbus.control.{}"


class ChannelRefused(SmartmeterError):
    """An M-Bus client operation the channel cannot take (the class answers other-reason).
    `condition`: a fixed text naming the kind of refusal (what IC 72 logs and counts by)."""

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        self.condition = condition or message


# -- what the bus delivers -------------------------------------------------------------------------

@dataclass(frozen=True)
class SubmeterRecord:
    """One data record of a telegram: its DIB (DIF + DIFEs), VIB (VIF + VIFEs), the value as
    the record codes it and the DLMS scaler and unit its VIF gives (unit 255 = count)."""

    dib: bytes
    vib: bytes
    value: int | float | str | bytes | None
    scaler: int = 0
    unit: int = 255


@dataclass(frozen=True)
class SubmeterTelegram:
    """What a submeter answered (RSP_UD) or sent (wireless), decoded: the header and records.
    identification_number is the header's BCD number as its hex digits read (0x12345678 for
    12345678), as IC 72 attribute 6 holds it; device_time the submeter's own clock (UTC s)."""

    identification_number: int
    manufacturer_id: int
    version: int
    device_type: int
    access_number: int = 0
    status: int = 0
    configuration: int = 0
    records: tuple[SubmeterRecord, ...] = ()
    device_time: float | None = None
    encrypted: bool = False  # the records came encrypted and decrypted (OMS mode 5: 2F2F verified)
    key_failure: str = ""  # the records came encrypted and did not decrypt (no key, wrong key): none taken
    # wireless: the receiver's replay memory right after it accepted this frame (WirelessReceiver.replay_state),
    # stored with the values the frame gives, so a restart does not take old frames again
    replay_last: tuple[tuple[int, int], ...] = ()
    mode7_seen: bool = False
    replay_epoch: int | None = None  # the channel's replay_epoch when the receiver took the frame


# -- what the engine asks the bus ----------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    identification_number: int
    manufacturer_id: int
    version: int
    device_type: int


@dataclass(frozen=True)
class BusRequest:
    """One operation on the wired bus for a channel. kind: "install" (select by `identity` when
    given, set the primary address to `address`, read), "read", "clock_sync" (`time`: UTC s),
    "data_send" (`records`: (dib, vib, value bytes)), "key_transfer" (`payload`: the wrapped key
    as the HES gave it), "valve" (`payload`: 1 open / 0 close)."""

    channel: int
    kind: str
    address: int
    identity: Identity | None = None
    time: float | None = None
    records: tuple[tuple[bytes, bytes, bytes], ...] = ()
    payload: bytes = b""
    old_address: int = 0
    key: bytes | None = None  # key_transfer: the channel's key when the transfer was asked for


@dataclass
class Value:
    """An M-Bus value instance (IC 4 0-x:24.2.n.255): the last value read, its scaler/unit from
    the VIF, status (0 ok, 1 not in the telegram), and the capture time (UTC s)."""

    value: int | float | str | None = None
    scaler: int = 0
    unit: int = 255
    status: int = 0
    capture_time: float | None = None


@dataclass
class Channel:
    number: int
    port: bytes = WIRED_PORT
    capture_definition: list[tuple[bytes, bytes]] = field(default_factory=list)
    capture_period: int = DEFAULT_CAPTURE_PERIOD
    primary_address: int = 0
    identification_number: int = 0
    manufacturer_id: int = 0
    version: int = 0
    device_type: int = 0
    access_number: int = 0
    status: int = 0
    configuration: int = 0
    installed: bool = False
    installing: bool = False
    key: bytes | None = None
    key_status: int = NO_KEY
    values: list[Value] = field(default_factory=lambda: [Value() for _ in range(4)])
    fabrication_number: str = ""
    communication_error: bool = False
    key_failures: int = 0  # telegrams refused for their encryption (no key, wrong key, clear text after use)
    failed_period: bool = False  # no answer since the last profile capture (status DNV)
    next_read: float | None = None
    next_clock_sync: float | None = None
    valve_open: bool = True
    profile_period: int = 3600
    installed_at: float | None = None  # meter time: the profile has no row for an instant before it
    commands_after: float | None = None  # a command got no answer: the next try not before (meter time)
    # wireless: the receiver's replay memory of this device under its key ([modulus, last counter], ...,
    # and whether mode 7 was accepted): restored when the receiver is bound again after a restart
    replay_last: list = field(default_factory=list)
    mode7_seen: bool = False
    replay_epoch: int = 0  # + 1 whenever the replay memory is forgotten (new key, device, port)
    # one-shot operations the HES asked for, done at the next chance
    pending: list[dict] = field(default_factory=list)

    @property
    def wireless(self) -> bool:
        return self.port == WIRELESS_PORT

    @property
    def identity(self) -> Identity:
        return Identity(self.identification_number, self.manufacturer_id, self.version, self.device_type)

    def has_identity(self) -> bool:
        return self.identification_number != 0

    # -- stored form ---------------------------------------------------------------------------
    def to_json(self) -> str:
        doc = asdict(self)
        doc["port"] = self.port.hex()
        doc["capture_definition"] = [[d.hex(), v.hex()] for d, v in self.capture_definition]
        doc["key"] = None if self.key is None else self.key.hex()
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, number: int, text: str | None) -> "Channel":
        if text is None:
            return cls(number)
        doc = json.loads(text)
        doc["port"] = bytes.fromhex(doc["port"])
        doc["capture_definition"] = [(bytes.fromhex(d), bytes.fromhex(v)) for d, v in doc["capture_definition"]]
        doc["key"] = None if doc["key"] is None else bytes.fromhex(doc["key"])
        doc["values"] = [Value(**v) for v in doc["values"]]
        doc["number"] = number
        latest = {op.get("kind"): op for op in doc.get("pending", []) if isinstance(op, dict)}
        doc["pending"] = [op for kind, op in latest.items() if kind in PENDING_KINDS]  # stored before the bound
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})


def application_layer_address(identity: Identity) -> str:
    """Device ID 2: the submeter's secondary address as ASCII: identification number (8 digits),
    manufacturer (3 letters, EN 13757-3 §6.3.2), version and device type (2 hex digits each)."""
    m = identity.manufacturer_id
    letters = "".join(chr(((m >> s) & 0x1F) + 64) for s in (10, 5, 0))
    return f"{identity.identification_number:08X}{letters}{identity.version:02X}{identity.device_type:02X}"


class EventStore(Protocol):
    def transaction(self): ...
    def save(self, name: str, value: str) -> None: ...
    def saved(self, name: str) -> str | None: ...
    def append_row(self, profile: str, when: int, row: str, capacity: int) -> None: ...
    def profile_rows(self, profile: str, from_time: int | None = None, to_time: int | None = None) -> list: ...
    def profile_count(self, profile: str) -> int: ...


class MbusM2:
    """The M2 engine: channels 1..4, their persisted state, and what is due on the bus.

    store: the meter's event store (EventRecorder: save/saved/append_row/profile_rows/transaction);
    now: the meter's clock (UTC s); alarm(flag, active): a condition of the alarm and error
    registers (communication error); raise_alarm(flag): an occurrence (fraud attempt, latched).
    """

    def __init__(self, store: EventStore, now: Callable[[], float],
                 alarm: Callable[[str, bool], None] = lambda flag, active: None,
                 raise_alarm: Callable[[str], None] = lambda flag: None,
                 say: RateLimitedLog | None = None) -> None:
        self.store = store
        self.now = now
        self.alarm = alarm
        self.raise_alarm = raise_alarm
        self.say = say if say is not None else RateLimitedLog(log, LOG_INTERVAL)
        self.channels = {n: Channel.from_json(n, store.saved(STATE_KEY.format(n))) for n in CHANNELS}
        self._in_flight: set[tuple[int, str]] = set()
        self.running_instant: float | None = None  # the runtime's timed-engine protocol: nothing runs scripts here
        # the runtime's view of each channel's disconnect control (IC 70 0-x:24.4.0.255): channel ->
        # connected (valve open). Read at resume: see reconcile_valves.
        self.valve_states: Callable[[], Mapping[int, bool]] | None = None
        self.refused_operations: dict[str, int] = {}  # IC 72 operations refused, per condition (refused())
        self._align_alarms()

    def refused(self, number: int, condition: str, detail: str) -> None:
        """An M-Bus client operation of channel `number` was refused: counted per condition, one
        log line per condition and interval (a HES retrying a bad write must not flood the log)."""
        self.refused_operations[condition] = self.refused_operations.get(condition, 0) + 1
        self.say(f"ic72 refused {condition}", "M-Bus client channel %d: operation refused (%s); %d refused so "
                 "far for this reason", number, detail, self.refused_operations[condition], level=logging.INFO)

    def _align_alarms(self) -> None:
        """The communication error alarms say what the stored channels say (a kill between a
        channel's commit and its alarm leaves neither a bit set for ever nor one missing)."""
        for channel in self.channels.values():
            self.alarm(f"mbus_communication_error_{channel.number}", channel.communication_error)

    # -- persistence ---------------------------------------------------------------------------
    def _commit(self, channel: Channel, events: Iterable[int] = (), at: float | None = None) -> None:
        """Store the channel and log its events, in one transaction."""
        when = int(self.now() if at is None else at)
        with self.store.transaction():
            self.store.save(STATE_KEY.format(channel.number), channel.to_json())
            for code in events:
                self._log_event(code + channel.number - 1, when)
        was = self.channels[channel.number].communication_error
        self.channels[channel.number] = channel
        if channel.communication_error != was:  # only what is stored raises or clears the alarm
            self.alarm(f"mbus_communication_error_{channel.number}", channel.communication_error)

    def _log_event(self, code: int, when: int) -> None:
        self.store.append_row(EVENT_LOG, when, json.dumps(code), MBUS_EVENT_LOG_ENTRIES)
        self.store.save("mbus.last_event", json.dumps(code))

    def last_event(self) -> int:
        text = self.store.saved("mbus.last_event")
        return 0 if text is None else json.loads(text)

    def event_rows(self, from_time: int | None, to_time: int | None) -> list[tuple[int, int]]:
        return [(t, json.loads(row)) for t, row in self.store.profile_rows(EVENT_LOG, from_time, to_time)]

    def channel(self, number: int) -> Channel:
        return self.channels[number]

    def _edit(self, number: int) -> Channel:
        """A copy of the channel to change (the stored one stays until the change is committed)."""
        old = self.channels[number]
        return Channel.from_json(number, old.to_json())

    # -- the M-Bus client object's attributes ------------------------------------------------------
    def set_port(self, number: int, port: bytes) -> None:
        if port not in (WIRED_PORT, WIRELESS_PORT):
            raise ChannelRefused("mbus_port_reference must name M-Bus master port setup 1 (wired) or 2 (wireless)")
        channel = self._edit(number)
        if channel.installed and port != channel.port:
            raise ChannelRefused("de-install the device before moving it to another port")
        if port == WIRELESS_PORT:
            channel.capture_period = 0  # companion: wireless is externally triggered
        elif channel.port == WIRELESS_PORT:
            channel.capture_period = DEFAULT_CAPTURE_PERIOD  # back on the wire: read as a wired device
        if port != channel.port:
            _forget_replay(channel)
        channel.port = port
        self._commit(channel)

    def set_capture_definition(self, number: int, elements: list[tuple[bytes, bytes]]) -> None:
        for dib, vib in elements:
            if not 1 <= len(dib) <= 11 or not 1 <= len(vib) <= 11:
                raise ChannelRefused("a capture element is a DIB of 1..11 and a VIB of 1..11 octets")
        channel = self._edit(number)
        channel.capture_definition = list(elements)
        channel.values = [Value() for _ in range(4)]  # instance n now means another record
        self._commit(channel)

    def set_capture_period(self, number: int, seconds: int) -> None:
        channel = self._edit(number)
        if channel.wireless and seconds != 0:
            raise ChannelRefused("a wireless channel is read when its device sends (capture_period 0)")
        channel.capture_period = seconds
        channel.next_read = None if seconds == 0 else _next_multiple(self.now(), seconds)
        self._commit(channel)

    def set_primary_address(self, number: int, address: int) -> None:
        if address != 0 and address not in PRIMARY_ADDRESSES:
            raise ChannelRefused("primary addresses 251..255 are reserved")
        channel = self._edit(number)
        if channel.installed:
            raise ChannelRefused("the primary address of an installed device is set at installation")
        if address and self._address_taken(address, number):
            raise ChannelRefused(f"primary address {address} is another channel's", "primary address taken")
        channel.primary_address = address
        self._commit(channel)

    def set_identity_field(self, number: int, name: str, value: int) -> None:
        channel = self._edit(number)
        if channel.installed:
            raise ChannelRefused("the identity of an installed device is read from the device")
        if getattr(channel, name) != value:
            _forget_replay(channel)  # another device: its own counters
        setattr(channel, name, value)
        if channel.has_identity() and self._identity_taken(channel.identity, number):
            raise ChannelRefused("this device is bound to another channel")
        self._commit(channel)

    def set_profile_period(self, number: int, seconds: int) -> None:
        if seconds not in PROFILE_PERIODS:
            raise ChannelRefused(f"the M-Bus load profile's capture period is one of {PROFILE_PERIODS} s")
        channel = self._edit(number)
        channel.profile_period = seconds
        self._commit(channel)

    def _address_taken(self, address: int, number: int) -> bool:
        return any(c.primary_address == address and not c.wireless and c.number != number
                   for c in self.channels.values() if c.installed or c.installing or c.primary_address)

    def _identity_taken(self, identity: Identity, number: int) -> bool:
        # every channel holding an identity counts, installed or not: a wireless channel is
        # "installed" only at its device's first telegram, and a wired one the HES preset is
        # waiting for its installation; both already name their device
        return any(c.number != number and c.has_identity() and _same_device(c.identity, identity)
                   for c in self.channels.values())

    def _free_address(self, number: int) -> int:
        for address in PRIMARY_ADDRESSES:
            if not self._address_taken(address, number):
                return address
        raise ChannelRefused("no free primary address")

    # -- the M-Bus client object's methods -------------------------------------------------------
    def install(self, number: int, address: int) -> None:
        """slave_install: bind the device at primary address `address` (0: attribute 5, or a free
        one). The bus does it at the next chance; the channel says installed once it answered."""
        channel = self._edit(number)
        if channel.wireless:
            raise ChannelRefused("a wireless device is bound by its address and key, not installed")
        if address != 0 and address not in PRIMARY_ADDRESSES:
            raise ChannelRefused("primary addresses 0 and 251..255 cannot be assigned")
        if channel.installed:
            raise ChannelRefused("a device is installed on this channel: de-install it first")
        if channel.has_identity() and self._identity_taken(channel.identity, number):
            raise ChannelRefused("this device is bound to another channel")
        address = address or channel.primary_address or self._free_address(number)
        if self._address_taken(address, number):
            raise ChannelRefused(f"primary address {address} is another channel's", "primary address taken")
        channel.primary_address = address
        channel.installing = True
        channel.next_read = None
        self._commit(channel)

    def deinstall(self, number: int) -> None:
        channel = self._edit(number)
        was = channel.installed or channel.installing
        fresh = Channel(number, port=channel.port, capture_definition=channel.capture_definition,
                        capture_period=channel.capture_period, profile_period=channel.profile_period,
                        replay_epoch=channel.replay_epoch + 1)
        self._commit(fresh, [EVENT_DEINSTALLED] if was else [])

    def capture(self, number: int) -> None:
        channel = self._edit(number)
        if channel.wireless:
            raise ChannelRefused("a wireless device sends on its own: no ad-hoc read")
        if not channel.installed:
            raise ChannelRefused("no device is installed on this channel")
        _queue(channel, {"kind": "read"})
        self._commit(channel)

    def synchronize_clock(self, number: int) -> None:
        channel = self._edit(number)
        if channel.wireless:
            return  # a unidirectional device takes no command: the method has no effect
        if not channel.installed:
            raise ChannelRefused("no device is installed on this channel")
        _queue(channel, {"kind": "clock_sync"})
        self._commit(channel)

    def data_send(self, number: int, records: list[tuple[bytes, bytes, bytes]]) -> None:
        channel = self._edit(number)
        if channel.wireless:
            return
        if not channel.installed:
            raise ChannelRefused("no device is installed on this channel")
        _queue(channel, {"kind": "data_send", "records": [[d.hex(), v.hex(), x.hex()] for d, v, x in records]})
        self._commit(channel)

    def set_encryption_key(self, number: int, key: bytes) -> None:
        """16 octets: the key the meter decrypts the device's telegrams with; empty: no key."""
        if len(key) not in (0, KEY_LENGTH):
            raise ChannelRefused("an encryption key is 16 octets (or empty to clear it)")
        channel = self._edit(number)
        transferred = channel.key_status in (KEY_TRANSFERRED, KEY_SET_AND_TRANSFERRED, KEY_IN_USE)
        if (bytes(key) or None) != channel.key:
            _forget_replay(channel)  # a new key starts a new counter sequence
        if key:
            channel.key = bytes(key)
            channel.key_status = KEY_SET_AND_TRANSFERRED if channel.key_status == KEY_TRANSFERRED else KEY_SET
        else:
            channel.key = None
            channel.key_status = KEY_TRANSFERRED if transferred else NO_KEY
        self._commit(channel, [EVENT_KEY_SET])

    def transfer_key(self, number: int, wrapped: bytes) -> None:
        """Send the key (wrapped by the HES for the device) to the device; attribute 14 follows
        when the device acknowledges."""
        channel = self._edit(number)
        if channel.key is None:
            raise ChannelRefused("set the encryption key before transferring it")
        if not wrapped:
            raise ChannelRefused("the transferred key is not empty")
        if channel.wireless:
            raise ChannelRefused("a unidirectional device cannot take a key")
        if not channel.installed:
            raise ChannelRefused("no device is installed on this channel")
        # the key goes with the transfer: an acknowledgement confirms this key, not a later one
        _queue(channel, {"kind": "key_transfer", "payload": bytes(wrapped).hex(), "key": channel.key.hex()})
        self._commit(channel)

    def valve(self, number: int, open_: bool) -> None:
        """The valve command of the channel's disconnect control (IC 70 0-x:24.4.0.255)."""
        channel = self._edit(number)
        if channel.wireless:
            raise ChannelRefused("a unidirectional device takes no valve command")
        if not channel.installed:
            raise ChannelRefused("no device is installed on this channel")
        channel.valve_open = open_
        _queue(channel, {"kind": "valve", "payload": (b"\x01" if open_ else b"\x00").hex()})
        when = int(self.now())
        with self.store.transaction():
            self.store.append_row(CONTROL_LOG.format(number), when,
                                  json.dumps(CONTROL_VALVE_OPENED if open_ else CONTROL_VALVE_CLOSED),
                                  CONTROL_LOG_ENTRIES)
            self.store.save(CONTROL_LOG.format(number) + ".last", json.dumps(
                CONTROL_VALVE_OPENED if open_ else CONTROL_VALVE_CLOSED))
            self._commit(channel)

    def control_rows(self, number: int, from_time: int | None, to_time: int | None) -> list[tuple[int, int]]:
        return [(t, json.loads(r)) for t, r in self.store.profile_rows(CONTROL_LOG.format(number), from_time, to_time)]

    def last_control(self, number: int) -> int:
        text = self.store.saved(CONTROL_LOG.format(number) + ".last")
        return 0 if text is None else json.loads(text)

    # -- the meter's clock ------------------------------------------------------------------------
    def clock_synchronised(self) -> None:
        """The meter's clock was set or synchronised: every installed wired device follows it."""
        for channel in self.channels.values():
            if channel.installed and not channel.wireless:
                edited = self._edit(channel.number)
                _queue(edited, {"kind": "clock_sync"})
                self._commit(edited)

    def next_instant(self, start: float, end: float) -> float | None:
        """The first profile capture instant in (start, end] of any channel (the runtime stops its
        registration there, so a capture holds what that instant held)."""
        first = None
        for channel in self.channels.values():
            if channel.installed or channel.wireless and channel.has_identity():
                t = _next_multiple(start, channel.profile_period)
                if t <= end and (first is None or t < first):
                    first = t
        return first

    def advance(self, start: float, end: float, passage: Passage) -> None:
        """The meter's clock got from `start` to `end`: capture the load profiles whose instant
        lies in (start, end] (a shifted clock: once, at the new time, marked CAD; backwards:
        nothing), and mark reads and clock syncs due."""
        if end <= start:
            return
        for number in CHANNELS:
            channel = self.channels[number]
            if not (channel.installed or channel.wireless and channel.has_identity()):
                continue
            period = channel.profile_period
            # a tick may register a stretch that began before the installation (a fast clock)
            since = max(start, channel.installed_at or start)
            if passage is Passage.RUNNING:
                t = _next_multiple(since, period)
                while t <= end:
                    self._capture_profile(number, t, 0)
                    t += period
            elif _next_multiple(since, period) <= end:
                self._capture_profile(number, end, STATUS_CAD if passage is Passage.SHIFTED else STATUS_PDN)

    def resume(self, now: float) -> None:
        """After a start or a power return: no capture owed (a missed one is not invented); the
        alarms follow the stored channels and the valves their disconnect controls."""
        self._align_alarms()
        if self.valve_states is not None:
            self.reconcile_valves(self.valve_states())

    def reconcile_valves(self, connected: Mapping[int, bool]) -> list[int]:
        """The disconnect control (IC 70) stores its new state before it tells the engine; a
        kill between the two leaves a valve command never queued nor logged. `connected` is
        each channel's stored IC 70 state (True: connected, valve open): an installed wired
        channel whose last valve state differs gets the missing command and control log row.
        The channels reconciled."""
        done = []
        for number, open_ in connected.items():
            channel = self.channels.get(number)
            if channel is None or channel.wireless or not channel.installed or channel.valve_open == bool(open_):
                continue
            self.say(f"channel {number} valve reconciled", "M-Bus channel %d: the valve command to %s was "
                     "not recorded before a stop; sent now", number, "open" if open_ else "close")
            self.valve(number, bool(open_))
            done.append(number)
        return done

    def _capture_profile(self, number: int, at: float, status: int) -> None:
        channel = self._edit(number)
        if channel.failed_period or channel.communication_error or all(v.value is None for v in channel.values):
            status |= STATUS_DNV
        row = [status, *[v.value for v in channel.values]]
        channel.failed_period = False
        with self.store.transaction():
            self.store.append_row(PROFILE.format(number), int(at), json.dumps(row), PROFILE_ENTRIES)
            self.store.save(PROFILE.format(number) + ".status", json.dumps(status))
            self._commit(channel)

    def profile_rows(self, number: int, from_time: int | None, to_time: int | None) -> list[tuple[int, list]]:
        return [(t, json.loads(r)) for t, r in self.store.profile_rows(PROFILE.format(number), from_time, to_time)]

    def profile_count(self, number: int) -> int:
        return self.store.profile_count(PROFILE.format(number))

    def profile_status(self, number: int) -> int:
        text = self.store.saved(PROFILE.format(number) + ".status")
        return 0 if text is None else json.loads(text)

    # -- the bus ----------------------------------------------------------------------------------
    def requests(self, now: float) -> list[BusRequest]:
        """The wired bus operations due at meter time `now`, at most one per channel and kind not
        already in flight. Call `answered` or `failed` for each."""
        out = []
        for number in CHANNELS:
            channel = self.channels[number]
            if channel.wireless:
                continue
            for request in self._due(channel, now):
                key = (number, request.kind)
                if key not in self._in_flight:
                    self._in_flight.add(key)
                    out.append(request)
        return out

    def _due(self, channel: Channel, now: float) -> list[BusRequest]:
        n, address = channel.number, channel.primary_address
        if channel.installing:
            if channel.next_read is None or now >= channel.next_read:
                identity = channel.identity if channel.has_identity() else None
                return [BusRequest(n, "install", address, identity=identity)]
            return []
        if not channel.installed:
            return []
        due = []
        holding = channel.commands_after is not None and now < channel.commands_after
        for op in [] if holding else channel.pending:
            kind = op["kind"]
            if kind == "read":
                due.append(BusRequest(n, "read", address, identity=channel.identity))
            elif kind == "clock_sync":
                due.append(BusRequest(n, "clock_sync", address, time=now))
            elif kind == "data_send":
                due.append(BusRequest(n, "data_send", address, records=tuple(
                    (bytes.fromhex(d), bytes.fromhex(v), bytes.fromhex(x)) for d, v, x in op["records"])))
            elif kind == "valve":
                due.append(BusRequest(n, kind, address, payload=bytes.fromhex(op["payload"])))
            elif kind == "key_transfer":
                key = op.get("key")
                due.append(BusRequest(n, kind, address, payload=bytes.fromhex(op["payload"]),
                                      key=None if key is None else bytes.fromhex(key)))
        if channel.next_clock_sync is not None and now >= channel.next_clock_sync and not holding \
                and not any(r.kind == "clock_sync" for r in due):
            due.append(BusRequest(n, "clock_sync", address, time=now))
        if channel.capture_period and (channel.next_read is None or now >= channel.next_read) \
                and not any(r.kind == "read" for r in due):
            due.append(BusRequest(n, "read", address, identity=channel.identity))
        return due

    def _done(self, channel: Channel, kind: str, request: BusRequest | None = None) -> None:
        """The pending operation of `kind` is done - unless the HES replaced it by another one
        (another valve state, other records, another key) while the request was on the bus:
        that one is still owed."""
        for i, op in enumerate(channel.pending):
            if op["kind"] == kind:
                if request is None or _carries(op, request):
                    del channel.pending[i]
                return

    def answered(self, request: BusRequest, telegram: SubmeterTelegram | None, now: float) -> None:
        """The device answered `request` (a telegram for install/read, None for an acknowledged
        command)."""
        self._in_flight.discard((request.channel, request.kind))
        channel = self._edit(request.channel)
        events: list[int] = []
        if channel.communication_error:
            channel.communication_error = False
            events.append(EVENT_COMMUNICATION_OK)
        if request.kind == "install":
            if not channel.installing:
                return  # de-installed meanwhile
            if telegram is None:
                raise ValueError("an installation is answered by the device's data")
            if self._identity_taken(_identity_of(telegram), channel.number) or (
                    channel.has_identity() and not _same_device(_identity_of(telegram), channel.identity)):
                self.say(f"channel {channel.number} install foreign",
                         "M-Bus channel %d: the device answering is not the one to install", channel.number)
                self._fail(channel, now)
                return
            channel.installing, channel.installed = False, True
            channel.installed_at = now
            _take_header(channel, telegram)
            events.append(EVENT_INSTALLED)
            events.extend(self._take_secured_values(channel, telegram, now))
            channel.next_read = _next_multiple(now, channel.capture_period) if channel.capture_period else None
            channel.next_clock_sync = now  # a new device takes the meter's time at once
        elif request.kind == "read":
            if telegram is None:
                raise ValueError("a read is answered by the device's data")
            if not channel.installed:
                return
            if not _same_device(_identity_of(telegram), channel.identity):
                # another device answers at this address: a replaced or manipulated submeter
                self.raise_alarm(f"mbus_fraud_attempt_{channel.number}")
                events.append(EVENT_FRAUD_ATTEMPT)
            else:
                _take_header(channel, telegram)
                events.extend(self._take_secured_values(channel, telegram, now))
            self._done(channel, "read")
            if channel.capture_period:
                channel.next_read = _next_multiple(now, channel.capture_period)
        elif request.kind == "clock_sync":
            channel.commands_after = None
            self._done(channel, "clock_sync")
            channel.next_clock_sync = now + CLOCK_SYNC_INTERVAL
            events.append(EVENT_CLOCK_ADJUSTED)
        elif request.kind == "key_transfer":
            self._done(channel, "key_transfer", request)
            events.append(EVENT_KEY_TRANSFERRED)
            if request.key is not None and request.key == channel.key:
                channel.key_status = KEY_SET_AND_TRANSFERRED
            else:  # the channel's key changed after the transfer was queued: the device has the old one
                self.say(f"channel {channel.number} key transfer stale",
                         "M-Bus channel %d: the device acknowledged a key the channel no longer holds",
                         channel.number)
        else:
            channel.commands_after = None
            self._done(channel, request.kind, request)
        self._commit(channel, events, at=now)

    def failed(self, request: BusRequest, now: float) -> None:
        """The device did not answer `request` (after the master's retries)."""
        self._in_flight.discard((request.channel, request.kind))
        channel = self._edit(request.channel)
        if request.kind == "key_transfer":
            self._done(channel, "key_transfer", request)
            self._commit(channel, [EVENT_KEY_TRANSFER_FAILED], at=now)
            return
        if request.kind in ("install", "read"):
            self._fail(channel, now)
            return
        channel.commands_after = now + RETRY_AFTER  # the command stays pending: tried again later, not at once
        self._commit(channel, at=now)

    def _fail(self, channel: Channel, now: float) -> None:
        events = []
        channel.failed_period = True
        if channel.installing:
            channel.next_read = now + RETRY_AFTER
        else:
            self._done(channel, "read")
            if channel.capture_period:
                channel.next_read = _next_multiple(now, channel.capture_period)
        if not channel.communication_error:
            channel.communication_error = True
            events.append(EVENT_COMMUNICATION_ERROR)
        self._commit(channel, events, at=now)

    def received(self, number: int, telegram: SubmeterTelegram, now: float) -> None:
        """A wireless telegram of channel `number`'s device, authenticated and decrypted by the
        receiver with the channel's key (or plain when the channel has none)."""
        channel = self._edit(number)
        if not channel.wireless or not _same_device(_identity_of(telegram), channel.identity):
            return
        if telegram.replay_epoch is not None and telegram.replay_epoch != channel.replay_epoch:
            return  # taken under the channel's key (device, port) of before: it says nothing of the current one
        events = []
        if channel.communication_error:
            channel.communication_error = False
            events.append(EVENT_COMMUNICATION_OK)
        if telegram.encrypted and channel.key is not None and channel.key_status != KEY_IN_USE:
            channel.key_status = KEY_IN_USE
        if not channel.installed:
            channel.installed, channel.installed_at = True, now
            events.append(EVENT_INSTALLED)
        _take_header(channel, telegram)
        events.extend(self._take_values(channel, telegram, now))
        channel.replay_last = [list(pair) for pair in telegram.replay_last]
        channel.mode7_seen = telegram.mode7_seen
        self._commit(channel, events, at=now)

    def wireless_bindings(self) -> list[tuple[int, Identity, bytes | None]]:
        """(channel, device address, key) of each wireless channel with an address: what the
        receiver accepts."""
        return [(c.number, c.identity, c.key) for c in self.channels.values() if c.wireless and c.has_identity()]

    def wireless_replay(self, number: int) -> tuple[list[tuple[int, int]], bool]:
        """The stored replay memory of channel `number`'s device (see Channel.replay_last)."""
        channel = self.channels[number]
        pairs = []
        for pair in channel.replay_last:
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(type(x) is int for x in pair):
                pairs.append((pair[0], pair[1]))
        return pairs, bool(channel.mode7_seen)

    def _take_secured_values(self, channel: Channel, telegram: SubmeterTelegram, now: float) -> list[int]:
        """The values of a wired telegram, unless its encryption refuses them: it did not decrypt
        with the channel's key (none, or another one than the device's), or it came in clear text
        although the device's key is in use (a downgrade). A refused telegram is counted, logged
        once per condition, leaves the values and the key status as they were and marks the
        profile period DNV: the meter holds no valid value for it."""
        refusal = telegram.key_failure
        if not refusal and not telegram.encrypted and channel.key_status == KEY_IN_USE:
            refusal = KEY_FAILURE_CLEAR_TEXT
        if not refusal:
            return self._take_values(channel, telegram, now)
        channel.key_failures += 1
        channel.failed_period = True
        self.say(f"channel {channel.number} key {refusal}",
                 "M-Bus channel %d: telegram refused (%s), values not taken; %d refused so far",
                 channel.number, refusal, channel.key_failures)
        return []

    def _take_values(self, channel: Channel, telegram: SubmeterTelegram, now: float) -> list[int]:
        events = []
        capture_time = telegram.device_time if telegram.device_time is not None else now
        if not channel.capture_definition:
            channel.capture_definition = default_capture_definition(telegram)
        by_key = {}
        for record in telegram.records:
            by_key.setdefault((bytes(record.dib), bytes(record.vib)), record)
            if record.vib[:1] == b"\x78" and isinstance(record.value, int):  # fabrication number
                channel.fabrication_number = str(record.value)
        for i, (dib, vib) in enumerate(channel.capture_definition[:4]):
            record = by_key.get((dib, vib))
            if record is None:
                channel.values[i] = replace(channel.values[i], status=1)
                continue
            value = record.value
            if isinstance(value, bytes):
                value = int.from_bytes(value, "little")
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            channel.values[i] = Value(value if isinstance(value, int) else None, record.scaler, record.unit, 0,
                                      capture_time)
        if telegram.status & STATUS_POWER_LOW:
            events.append(EVENT_REPLACE_BATTERY)
        if telegram.status & STATUS_PERMANENT_ERROR:
            events.append(EVENT_PERMANENT_ERROR)
        if telegram.encrypted and channel.key is not None and channel.key_status in (KEY_SET_AND_TRANSFERRED,
                                                                                     KEY_SET):
            channel.key_status = KEY_IN_USE
        return events



def default_capture_definition(telegram: SubmeterTelegram) -> list[tuple[bytes, bytes]]:
    """What a channel captures when the head-end wrote no capture_definition: the first four
    current values with a unit (no storage number, tariff or subunit: a one-octet DIB with
    storage bit 0), in the device's order. The head-end reads attribute 3 to see which."""
    chosen: list[tuple[bytes, bytes]] = []
    for record in telegram.records:
        key = (bytes(record.dib), bytes(record.vib))
        if (len(record.dib) == 1 and not record.dib[0] & 0x40 and record.unit != 255
                and isinstance(record.value, int) and key not in chosen):
            chosen.append(key)
        if len(chosen) == 4:
            break
    return chosen


PENDING_KINDS = ("read", "clock_sync", "data_send", "key_transfer", "valve")


def _queue(channel: Channel, op: dict) -> None:
    """Owe `op` to the device: at most one operation per kind, the latest (a second capture or
    clock sync adds nothing; a newer valve state, data or key replaces the older), so the
    pending list - stored with the channel at every commit - stays within PENDING_KINDS."""
    channel.pending = [p for p in channel.pending if p.get("kind") != op["kind"]]
    channel.pending.append(op)


def _forget_replay(channel: Channel) -> None:
    channel.replay_last, channel.mode7_seen = [], False
    channel.replay_epoch += 1


def _carries(op: dict, request: BusRequest) -> bool:
    """Whether `request` was made of the pending `op` (not of one that replaced it since)."""
    kind = op["kind"]
    if kind in ("valve", "key_transfer"):
        return bytes.fromhex(op["payload"]) == request.payload
    if kind == "data_send":
        return tuple((bytes.fromhex(d), bytes.fromhex(v), bytes.fromhex(x)) for d, v, x in op["records"]) \
            == request.records
    return True


def _identity_of(telegram: SubmeterTelegram) -> Identity:
    return Identity(telegram.identification_number, telegram.manufacturer_id, telegram.version, telegram.device_type)


def _same_device(a: Identity, b: Identity) -> bool:
    """One device: the same identification number and manufacturer (IDIS §5.3.1.1 uniqueness);
    version and device type may be 0 (not preset by the HES)."""
    return (a.identification_number == b.identification_number and a.manufacturer_id == b.manufacturer_id
            and (not a.version or not b.version or a.version == b.version)
            and (not a.device_type or not b.device_type or a.device_type == b.device_type))


def _take_header(channel: Channel, telegram: SubmeterTelegram) -> None:
    channel.identification_number = telegram.identification_number
    channel.manufacturer_id = telegram.manufacturer_id
    channel.version = telegram.version
    channel.device_type = telegram.device_type
    channel.access_number = telegram.access_number
    channel.status = telegram.status
    channel.configuration = telegram.configuration


def _next_multiple(t: float, period: int) -> float:
    return (int(t) // period + 1) * period


# -- data_send: the records of a data_definition_element, coded for SND_UD ---------------------------

def encode_record_value(dib: bytes, value: Data) -> bytes:
    """The value octets of a record with data field DIF & 0x0F (EN 13757-3 Table 4): binary
    integers of 1..4, 6, 8 octets (little-endian), BCD of 2..12 digits, variable length
    (an octet-string with its LVAR). ChannelRefused for anything else."""
    if not dib:
        raise ChannelRefused("a data_definition_element has a DIB")
    code = dib[0] & 0x0F
    raw = value.value
    integer_octets = {1: 1, 2: 2, 3: 3, 4: 4, 6: 6, 7: 8}
    bcd_digits = {9: 2, 0xA: 4, 0xB: 6, 0xC: 8, 0xE: 12}
    if code == 0:
        return b""
    if code in integer_octets:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ChannelRefused("an integer record takes an integer value")
        size = integer_octets[code]
        try:
            return raw.to_bytes(size, "little", signed=raw < 0)
        except OverflowError:
            raise ChannelRefused(f"the value does not fit {size} octets", "record value too large") from None
    if code in bcd_digits:
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0 or raw >= 10 ** bcd_digits[code]:
            raise ChannelRefused(f"a BCD record takes 0..{10 ** bcd_digits[code] - 1}", "BCD value out of range")
        digits = f"{raw:0{bcd_digits[code]}d}"
        return bytes(int(digits[i:i + 2], 16) for i in range(len(digits) - 2, -1, -2))
    if code == 0xD:
        if not isinstance(raw, (bytes, bytearray)) or len(raw) > 0xBF:
            raise ChannelRefused("a variable-length record takes an octet-string of at most 191 octets")
        return bytes([len(raw)]) + bytes(raw)
    raise ChannelRefused(f"data field {code:#x} cannot be sent", "data field cannot be sent")


# -- the driver: the engine's requests over the real bus ----------------------------------------------

class WiredBus(Protocol):
    """What the driver needs of the wired master (smartmeter.mbus): each coroutine raises
    `NoAnswer` (or any SmartmeterError) when the device does not answer after the retries.
    install and read decrypt an encrypted answer with `key` (the channel's); one that does not
    decrypt is still the device's answer: a telegram with its header, no records and key_failure."""

    async def install(self, address: int, identity: Identity | None, key: bytes | None = None) -> SubmeterTelegram: ...
    async def read(self, address: int, key: bytes | None = None) -> SubmeterTelegram: ...
    async def clock_sync(self, address: int, utc: float) -> None: ...
    async def send(self, address: int, records: tuple[tuple[bytes, bytes, bytes], ...]) -> None: ...
    async def transfer_key(self, address: int, wrapped: bytes) -> None: ...
    async def valve(self, address: int, open_: bool) -> None: ...


class NoAnswer(SmartmeterError):
    """The submeter did not answer (after the master's retries), or answered garbage."""


class MbusM2Driver:
    """Runs the engine against the bus: once a (real) second, what is due on the meter's clock.
    wireless telegrams arrive through `deliver` (the receiver's callback) into a bounded queue."""

    QUEUE = 64

    def __init__(self, engine: MbusM2, bus: WiredBus | None, now: Callable[[], float]) -> None:
        self.engine = engine
        self.bus = bus
        self.now = now
        self.say = engine.say
        self.wireless: deque[tuple[int, SubmeterTelegram]] = deque(maxlen=self.QUEUE)
        self.dropped = 0

    def deliver(self, number: int, telegram: SubmeterTelegram) -> None:
        if len(self.wireless) == self.wireless.maxlen:
            self.dropped += 1  # the oldest goes: the newest values count
        self.wireless.append((number, telegram))

    async def run_once(self) -> None:
        while self.wireless:
            number, telegram = self.wireless.popleft()
            self.engine.received(number, telegram, self.now())
        if self.bus is None:
            return
        for request in self.engine.requests(self.now()):
            await self._perform(request)

    async def _perform(self, request: BusRequest) -> None:
        bus = self.bus
        key = self.engine.channel(request.channel).key  # the key of now: the HES may have set another
        try:
            telegram = None
            if request.kind == "install":
                telegram = await bus.install(request.address, request.identity, key)
            elif request.kind == "read":
                telegram = await bus.read(request.address, key)
            elif request.kind == "clock_sync":
                await bus.clock_sync(request.address, request.time if request.time is not None else self.now())
            elif request.kind == "data_send":
                await bus.send(request.address, request.records)
            elif request.kind == "key_transfer":
                await bus.transfer_key(request.address, request.payload)
            elif request.kind == "valve":
                await bus.valve(request.address, request.payload == b"\x01")
        except (SmartmeterError, OSError, asyncio.TimeoutError) as exc:
            self.say(f"channel {request.channel} {request.kind} no answer",
                     "M-Bus channel %d: %s got no answer (%s)", request.channel, request.kind, exc,
                     level=logging.INFO)
            self.engine.failed(request, self.now())
            return
        except Exception as exc:  # a fault of ours must not leave the request in flight for ever
            self.say(f"channel {request.channel} {request.kind} fault", "M-Bus channel %d: %s failed: %r",
                     request.channel, request.kind, exc, level=logging.ERROR)
            self.engine.failed(request, self.now())
            return
        self.engine.answered(request, telegram, self.now())

    async def run(self, period: float = 1.0) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the M2 port must not take the meter down
                self.say("engine step", "M-Bus engine step failed: %r", exc, level=logging.ERROR)
            await asyncio.sleep(period)


# -- the COSEM side: what the model's M-Bus objects bind to ---------------------------------------------

class _ChannelProfileSource:
    """The M-Bus load profile of one channel (IC 7 0-x:24.3.0.255): clock, status, values 1..4.
    A value never read is 0 with the row's DNV bit set."""

    def __init__(self, engine: MbusM2, number: int, clock) -> None:
        self.engine, self.number, self.clock = engine, number, clock

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        cosem = self.clock.cosem
        return [(cosem(t), row[0], *(0 if v is None else v for v in row[1:5]))
                for t, row in self.engine.profile_rows(self.number, from_time, to_time)]

    def entries_in_use(self) -> int:
        return self.engine.profile_count(self.number)

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

    def capture_period(self) -> int:
        return self.engine.channel(self.number).profile_period

    def set_capture_period(self, seconds: int) -> None:
        from smartmeter.cosem.classes.base import other_reason
        try:
            self.engine.set_profile_period(self.number, seconds)
        except ChannelRefused as exc:
            raise other_reason(str(exc)) from None


class _CodeLogSource:
    """A log of (time, code) rows (the M-Bus event log, a channel's control log)."""

    def __init__(self, rows: Callable[[int | None, int | None], list[tuple[int, int]]], clock) -> None:
        self._rows, self.clock = rows, clock

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        return [(self.clock.cosem(t), code) for t, code in self._rows(from_time, to_time)]

    def entries_in_use(self) -> int:
        return len(self._rows(None, None))

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)


def bindings(engine: MbusM2, clock) -> dict[str, Any]:
    """The runtime bindings the model's M-Bus objects name (cosem/model/ksmw.toml, M-Bus section)."""
    from smartmeter.cosem.classes.base import Binding

    def device_id_1(n: int) -> Data:
        c = engine.channel(n)
        # companion §6: the fabrication number, as the device's telegram gives it (VIF 0x78);
        # empty until one did
        return Data.octet_string((c.fabrication_number or "").encode("ascii"))

    def device_id_2(n: int) -> Data:
        c = engine.channel(n)
        return Data.octet_string(application_layer_address(c.identity).encode("ascii") if c.has_identity() else b"")

    out: dict[str, Any] = {
        "mbus": engine,
        "mbus.events": _CodeLogSource(engine.event_rows, clock),
        "mbus.events.last_code": Binding(lambda: Data.unsigned(engine.last_event())),
    }
    for n in CHANNELS:
        out[f"mbus.{n}.device_id_1"] = Binding(lambda n=n: device_id_1(n))
        out[f"mbus.{n}.device_id_2"] = Binding(lambda n=n: device_id_2(n))
        out[f"mbus.{n}.profile"] = _ChannelProfileSource(engine, n, clock)
        out[f"mbus.{n}.profile.status"] = Binding(lambda n=n: Data.unsigned(engine.profile_status(n)))
        out[f"mbus.{n}.control_log"] = _CodeLogSource(
            lambda f, t, n=n: engine.control_rows(n, f, t), clock)
        out[f"mbus.{n}.control_log.last_code"] = Binding(lambda n=n: Data.unsigned(engine.last_control(n)))
    return out


# -- from the M-Bus layers (smartmeter.mbus) to the engine's telegram ------------------------------------

def submeter_records(records) -> tuple[tuple[SubmeterRecord, ...], dt.datetime | None]:
    """The engine's records of application-layer records (smartmeter.mbus.application.Record),
    and the device's own date-time (the first current-value type F record), as local time."""

    out, device_time = [], None
    for record in records:
        try:
            value = record.value
        except SmartmeterError:
            value = None  # a record the device marked invalid: it fills no value
        dib = bytes([record.dif, *record.difes])
        vib = b"" if record.vif is None else bytes([record.vif, *record.vifes])
        if isinstance(value, dt.datetime) and device_time is None and record.storage_number == 0:
            device_time = value
            continue
        scaler_unit = record.dlms_scaler_unit() if isinstance(value, (int, float)) else None
        scaler, unit = scaler_unit if scaler_unit is not None else (0, 255)
        out.append(SubmeterRecord(dib, vib, value if isinstance(value, (int, float)) else None, scaler, unit))
    return tuple(out), device_time


def _utc(local, zone) -> float | None:
    if local is None:
        return None
    return local.replace(tzinfo=zone).timestamp() if local.tzinfo is None else local.timestamp()


def _identification(ident: int | str) -> int:
    """IC 72 attribute 6: the 8 BCD digits as hex digits (12345678 -> 0x12345678)."""
    text = f"{ident:08d}" if isinstance(ident, int) else str(ident)
    try:
        return int(text, 16) & 0xFFFFFFFF
    except ValueError:
        return 0


def wired_telegram(telegram, zone, encrypted: bool = False, key_failure: str = "") -> SubmeterTelegram:
    """The engine's telegram of a wired RSP_UD (smartmeter.mbus.application.Telegram, CI 0x72)."""
    from smartmeter.mbus.application import LongHeader

    header = telegram.header
    if not isinstance(header, LongHeader):
        raise NoAnswer("the answer has no long header (CI 0x72)")
    records, local = submeter_records(() if key_failure else telegram.records)
    return SubmeterTelegram(_identification(header.identification), header.manufacturer_code, header.version,
                            header.medium, header.access_number, header.status, header.configuration,
                            records, _utc(local, zone), encrypted and not key_failure, key_failure)


# -- wired OMS security: an RSP_UD whose long header's configuration field names mode 5 --------------

LONG_HEADER_SIZE = 12  # CI 0x72: ID (4), manufacturer (2), version, medium, access number, status, configuration (2)


class WiredKeyFailure(SmartmeterError):
    """The records of an encrypted wired telegram cannot be read; `reason` is a KEY_FAILURE_*."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason


def wired_security_mode(user_data: bytes) -> int:
    """The security mode a CI 0x72 RSP_UD's configuration field names (0: clear text)."""
    from smartmeter.mbus.wireless import ConfigurationField

    if len(user_data) < LONG_HEADER_SIZE:
        return 0
    return ConfigurationField(int.from_bytes(user_data[10:12], "little")).mode


def decrypt_wired(user_data: bytes, key: bytes | None) -> bytes:
    """The user data (after CI 0x72) of a mode-5 RSP_UD with its encrypted blocks decrypted, the
    header (configuration included) unchanged, so the application layer reads the records as
    clear text; clear-text user data comes back as it is. Bytes after the encrypted blocks are
    dropped: nothing protects them, so they must not stand beside decrypted records (as the
    wireless receiver does, docs/decisions.md). OMS Vol. 2 mode 5 as the wireless
    TPL does it: AES-128-CBC, IV = M || ID || version || medium || access number x 8, the
    plaintext begins with 2F2F (the only check mode 5 has). Raises WiredKeyFailure."""
    from smartmeter.mbus.security import OmsSecurityError, decrypt_mode5
    from smartmeter.mbus.wireless import ConfigurationField

    mode = wired_security_mode(user_data)
    if mode == 0:
        return bytes(user_data)
    if mode != 5:
        raise WiredKeyFailure(KEY_FAILURE_UNSUPPORTED, f"mode {mode}")
    if key is None:
        raise WiredKeyFailure(KEY_FAILURE_NO_KEY)
    header, payload = bytes(user_data[:LONG_HEADER_SIZE]), bytes(user_data[LONG_HEADER_SIZE:])
    size = 16 * ConfigurationField(int.from_bytes(header[10:12], "little")).encrypted_blocks
    if size == 0 or size > len(payload):
        raise WiredKeyFailure(KEY_FAILURE_WRONG_KEY, f"{size} encrypted bytes named, {len(payload)} present")
    address = header[4:6] + header[0:4] + header[6:8]  # M || ID || version || medium
    try:
        plain = decrypt_mode5(key, address, header[8], payload[:size])
    except OmsSecurityError as exc:
        raise WiredKeyFailure(KEY_FAILURE_WRONG_KEY, str(exc)) from None
    if plain[:2] != b"\x2f\x2f":
        raise WiredKeyFailure(KEY_FAILURE_WRONG_KEY)
    return header + plain


class WiredDecryption:
    """The wired master's `user_data` hook (smartmeter.mbus.master): an RSP_UD in OMS mode 5 is
    decrypted with `key` before it is parsed; one that does not decrypt goes on as its header
    alone (the device did answer) and its reason is appended to `failures`; `decrypted` counts
    the telegrams that decrypted. The key is set for one request at a time."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.failures: list[str] = []
        self.decrypted = 0

    def __call__(self, ci: int, data: bytes) -> bytes:
        from smartmeter.mbus.application import CI_RSP_LONG

        if ci != CI_RSP_LONG or not wired_security_mode(data):
            return data
        try:
            plain = decrypt_wired(data, self.key)
        except WiredKeyFailure as exc:
            self.failures.append(exc.reason)
            return bytes(data[:LONG_HEADER_SIZE])
        self.decrypted += 1
        return plain


def wireless_telegram(received, zone) -> SubmeterTelegram:
    """The engine's telegram of a frame the WirelessReceiver accepted (smartmeter.mbus.security)."""
    from smartmeter.mbus.application import LongHeader, ShortHeader, parse_telegram
    from smartmeter.mbus.application import manufacturer_from_text

    ci, data = received.user_data
    telegram = parse_telegram(ci, data)
    address = received.address
    header = telegram.header
    access = status = configuration = 0
    if isinstance(header, (ShortHeader, LongHeader)):
        access, status, configuration = header.access_number, header.status, header.configuration
    records, local = submeter_records(telegram.records)
    return SubmeterTelegram(_identification(address.identification), manufacturer_from_text(address.manufacturer),
                            address.version, address.device_type, access, status, configuration, records,
                            _utc(local, zone), encrypted=int(received.mode) != 0)


def meter_address(identity: Identity):
    """The wireless receiver's address of a channel's device (smartmeter.mbus.wireless.MeterAddress)."""
    from smartmeter.mbus.application import manufacturer_to_text
    from smartmeter.mbus.wireless import MeterAddress

    return MeterAddress(manufacturer_to_text(identity.manufacturer_id), f"{identity.identification_number:08X}",
                        identity.version, identity.device_type)


class WirelessPort:
    """The M2 wireless receiver: UDP datagrams (one radio frame each) on HOST:PORT, checked and
    decrypted by the WirelessReceiver for the channels' bindings (address and key; with a key
    OMS modes 5 and 7, each frame checked by the crypto of the mode it names and no mode 5 once
    mode 7 authenticated; without a key mode 0), then handed to the driver's bounded queue.
    A refused frame changes no binding: what a refusal says is unauthenticated, so a stranger
    must not be able to rebind the device (and reset its replay counter) with junk frames."""

    def __init__(self, engine: MbusM2, driver: MbusM2Driver, zone) -> None:
        from smartmeter.mbus.security import WirelessReceiver

        self.engine, self.driver, self.zone = engine, driver, zone
        self.receiver = WirelessReceiver()
        self._bound: dict[bytes, tuple] = {}
        self.transport = None
        self.undecodable = 0

    def rebind(self) -> None:
        from smartmeter.errors import EncodeError
        from smartmeter.mbus.security import OMS_ENCRYPTED_MODES

        wanted = {}
        for number, identity, key in self.engine.wireless_bindings():
            try:
                address = meter_address(identity)
                slot = address.to_bytes()
            except (EncodeError, ValueError):
                continue
            mode = OMS_ENCRYPTED_MODES if key is not None else 0
            wanted[slot] = (number, key, mode, address)
        for slot in set(self._bound) - set(wanted):
            self.receiver.unbind(self._bound.pop(slot)[3])
        for slot, (number, key, mode, address) in wanted.items():
            if self._bound.get(slot, (None,))[:3] != (number, key, mode):
                self.receiver.bind(address, key, mode)
                self._bound[slot] = (number, key, mode, address)
                last, mode7_seen = self.engine.wireless_replay(number)
                try:  # what the receiver took before a restart stays taken
                    self.receiver.restore(address, last, mode7_seen)
                except ValueError as exc:
                    self.engine.say(f"channel {number} replay memory", "M-Bus channel %d: stored replay memory "
                                    "not usable (%s)", number, exc)

    def datagram(self, frame: bytes, now: float) -> None:
        from smartmeter.mbus.security import Refusal

        self.rebind()
        result = self.receiver.receive(frame, now)
        if isinstance(result, Refusal):
            # a frame is the radio's, anyone's: one line per kind and interval, each counted (stats)
            self.engine.say(f"wireless refused {result.kind.name}",
                            "M-Bus wireless: frame refused (%s: %s); %d refused so far for this reason",
                            result.kind.value, result.detail, self.receiver.refusals[result.kind],
                            level=logging.INFO)
            return
        slot = result.address.to_bytes()
        number = self._bound[slot][0]
        try:
            telegram = wireless_telegram(result, self.zone)
        except SmartmeterError as exc:
            self.undecodable += 1
            self.engine.say(f"channel {number} wireless undecodable",
                            "M-Bus channel %d: undecodable wireless telegram (%s)", number, exc, level=logging.INFO)
            return
        last, mode7_seen = self.receiver.replay_state(result.address)
        self.driver.deliver(number, replace(telegram, replay_last=last, mode7_seen=mode7_seen,
                                            replay_epoch=self.engine.channel(number).replay_epoch))

    def stats(self) -> dict[str, int]:
        """Frames accepted, undecodable after acceptance, and refused per reason (non-zero ones)."""
        counts = {"accepted": self.receiver.accepted, "undecodable": self.undecodable}
        counts.update({kind.value: n for kind, n in self.receiver.refusals.items() if n})
        return counts

    async def start(self, host: str, port: int, now: Callable[[], float]) -> None:
        loop = asyncio.get_running_loop()
        port_ = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr) -> None:
                port_.datagram(data, now())

        self.transport, _ = await loop.create_datagram_endpoint(_Protocol, local_addr=(host, port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _host_port(spec: str, what: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{what} is HOST:PORT, not {spec!r}")
    return host.strip("[]"), int(port)


class M2Interface:
    """The M2 port of a running meter (`meter run --mbus-wired BUS --mbus-wireless HOST:PORT`):
    the driver ticking once a real second on the meter's clock, the wired bus and the wireless
    receiver. `start` returns the lines that say what runs; `close` stops it."""

    def __init__(self, meter) -> None:
        self.meter = meter
        self.engine: MbusM2 = meter.mbus
        self.bus = None
        self.driver: MbusM2Driver | None = None
        self.wireless: WirelessPort | None = None
        self._task: asyncio.Task | None = None

    async def start(self, wired: str | None, wireless: str | None) -> list[str]:
        lines = []
        zone = self.meter.clock.zone
        if wired:
            port = self.meter.directory.find(74, WIRED_PORT)
            self.bus = wired_bus(wired, zone, None if port is None else port[1].baud_rate)
            lines.append(f"M2 multi-utility interface: wired M-Bus master on {wired}")
        self.driver = MbusM2Driver(self.engine, self.bus, self._now)
        if wireless:
            host, port = _host_port(wireless, "--mbus-wireless")
            self.wireless = WirelessPort(self.engine, self.driver, zone)
            await self.wireless.start(host, port, self._now)
            lines.append(f"M2 multi-utility interface: wireless M-Bus receiver on udp://{host}:{port}")
        self._task = asyncio.create_task(self.driver.run())
        return lines

    def _now(self) -> float:
        return self.meter.clock.now()

    def stats(self) -> dict[str, int]:
        """What the wireless receiver did (frames accepted, refused per reason) and the wireless
        telegrams the driver dropped from its full queue: for the line the meter prints at stop."""
        counts = {} if self.wireless is None else self.wireless.stats()
        counts.update({f"IC 72 refused ({c})": n for c, n in self.engine.refused_operations.items()})
        if self.driver is not None and self.driver.dropped:
            counts["dropped (queue full)"] = self.driver.dropped
        return counts

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.wireless is not None:
            self.wireless.close()
        close = getattr(self.bus, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result


# -- the wired bus: the M-Bus master of smartmeter.mbus (TCP level converter or serial device) --------

VALVE_VIB = b"\xfd\x1a"  # EN 13757-3 VIFE FD 1A "digital output (binary)": 1 open, 0 closed
KEY_VIB = b"\xfd\x19"  # VIFE FD 19 "security key"
CI_DATA_SEND = 0x51
ADDRESS_SELECTED = 0xFD  # the slave selected by its secondary address


def secondary_address(identity: Identity):
    """The CI 0x52 selection of a channel's device; version and device type 0 select any."""
    from smartmeter.mbus.application import SecondaryAddress, manufacturer_to_text

    return SecondaryAddress(f"{identity.identification_number:08X}", manufacturer_to_text(identity.manufacturer_id),
                            identity.version or 0xFF, identity.device_type or 0xFF)


class MasterBus:
    """The engine's wired bus over the M-Bus master (smartmeter.mbus.aio): connected when first
    used and again after a lost connection (a level converter that was away is no reason for the
    meter to stop), each outcome other than success a SmartmeterError the driver counts as no
    answer. Device commands are SND_UD CI 51 records (docs/mbus.md)."""

    def __init__(self, spec: str, zone, baud_rate: Callable[[], int] | None = None) -> None:
        self.spec, self.zone = spec, zone
        self.baud_rate = baud_rate  # the wired port setup's comm_speed (IC 74): at each (re)connection
        self._bus = None
        self._speed: int | None = None

    async def _call(self, operation):
        from smartmeter.mbus.aio import open_bus

        try:
            speed = self.baud_rate() if self.baud_rate is not None else None
            if self._bus is not None and speed != self._speed:
                await self.close()  # the head-end changed the port's speed: the next exchange uses it
            if self._bus is None:
                bus = await (open_bus(self.spec) if speed is None else open_bus(self.spec, baud_rate=speed))
                bus.master.user_data = WiredDecryption()
                self._bus, self._speed = bus, speed
            return await operation(self._bus)
        except OSError as exc:
            await self.close()
            raise NoAnswer(f"the bus at {self.spec}: {exc}") from None

    async def _secured(self, key: bytes | None, operation) -> SubmeterTelegram:
        """Run a read with `key` for the decryption of its answer: the engine's telegram, encrypted
        when every part decrypted, key_failure when one did not."""
        async def run(bus):
            decryption = bus.master.user_data
            decryption.key, decryption.failures, decryption.decrypted = key, [], 0
            try:
                telegram = await operation(bus)
                return telegram, list(decryption.failures), decryption.decrypted
            finally:
                decryption.key = None  # the key is held for one request only
        telegram, failures, decrypted = await self._call(run)
        return wired_telegram(telegram, self.zone, encrypted=decrypted > 0,
                              key_failure=failures[0] if failures else "")

    async def install(self, address: int, identity: Identity | None, key: bytes | None = None) -> SubmeterTelegram:
        async def run(bus):
            if identity is not None:
                await bus.select(secondary_address(identity))
                await bus.set_primary_address(ADDRESS_SELECTED, address)
                await bus.initialise(ADDRESS_SELECTED)  # SND_NKE to FD ends the selection
            await bus.initialise(address)
            return (await bus.read(address)).merged()
        return await self._secured(key, run)

    async def read(self, address: int, key: bytes | None = None) -> SubmeterTelegram:
        # no expected identity here: another device answering is the engine's fraud attempt, not a silence
        return await self._secured(key, lambda bus: _merged(bus.read(address)))

    async def clock_sync(self, address: int, utc: float) -> None:
        local = dt.datetime.fromtimestamp(utc, self.zone).replace(tzinfo=None)
        await self._call(lambda bus: bus.synchronise_clock(address, local))

    async def send(self, address: int, records: tuple[tuple[bytes, bytes, bytes], ...]) -> None:
        await self._call(lambda bus: bus.send_user_data(address, CI_DATA_SEND, b"".join(d + v + x for d, v, x in records)))

    async def transfer_key(self, address: int, wrapped: bytes) -> None:
        data = b"\x0d" + KEY_VIB + bytes([len(wrapped)]) + wrapped
        await self._call(lambda bus: bus.send_user_data(address, CI_DATA_SEND, data))

    async def valve(self, address: int, open_: bool) -> None:
        data = b"\x01" + VALVE_VIB + bytes([1 if open_ else 0])
        await self._call(lambda bus: bus.send_user_data(address, CI_DATA_SEND, data))

    async def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                await bus.close()
            except OSError:
                pass


async def _merged(read):
    return (await read).merged()


def wired_bus(spec: str, zone, baud_rate: Callable[[], int] | None = None) -> MasterBus:
    """The wired bus of `--mbus-wired BUS`: HOST:PORT of a TCP level converter (the simulated
    submeters' `smartmeter sim mbus ... --wired --listen`) or a serial device."""
    if not spec:
        raise ValueError("--mbus-wired names a bus: HOST:PORT or a serial device")
    return MasterBus(spec, zone, baud_rate)
