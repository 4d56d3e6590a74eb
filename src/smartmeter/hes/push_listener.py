"""The head-end's push listener: receives the meters' data-notifications and stores what they say.

A push (companion standard §10, catalog §7) is a wrapper message (IEC 62056-47) holding a
general-glo-ciphering APDU (suite 1, authenticated and encrypted with the Data Readout client's
global keys, the meter's system title and invocation counter) whose plaintext is a
data-notification; one too large for a PDU comes as general-block-transfer blocks, each in a
wrapper message of its own (a UDP datagram, or consecutive messages on one TCP connection).

`PushReceiver` is the sans-io core, one call per datagram or wrapper frame:

1. the wrapper frame and, for GBT, the reassembly of the sender's blocks (bounded in blocks,
   bytes, time and number of senders);
2. the sender's keys, found by the system title in the APDU (`Keyring`); an unknown system
   title is refused;
   A first block must begin a push of a known meter (general-glo-ciphering, its system title),
   so that blocks of strangers hold nothing;
3. replay protection: a window of `REPLAY_WINDOW` counters below the highest one accepted from
   that meter under its key, in which each counter is accepted once (kept in the store, so a
   restarted listener refuses the same replays; a meter starts its counter again under a new
   key, so the window is per meter and key, `push_key_id`); the very same message again is a
   retry (UDP pushes send every retry) and is counted as such;
4. the GCM tag (a forged or damaged push fails here) and the data-notification;
5. the values mapped to objects with the push object list of the setup that sent them
   (`ObjectLists`), and stored with the meter, OBIS, attribute, class, capture time and receive
   time (`PushStore`) in one transaction with the new counter.

Every refusal is counted (`counts`) and logged at most once a minute per condition
(`RateLimitedLog`); nothing of a refused message is stored. `serve_udp` / `serve_tcp` put the
core on sockets, bounded in datagram size, connections and per-connection buffer.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import socket
import sqlite3
import time
import traceback
import tomllib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from smartmeter.cli.format import to_json
from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.gbt import GENERAL_BLOCK_TRANSFER_TAG, GeneralBlockTransfer
from smartmeter.dlms.apdu.notification import DATA_NOTIFICATION_TAG, DataNotification
from smartmeter.dlms.client import CounterStore
from smartmeter.dlms.security.errors import AuthenticationError, SecurityError
from smartmeter.errors import DecodeError, SmartmeterError, TruncatedError
from smartmeter.hes.credentials import Credentials, CredentialsError, parse_credentials
from smartmeter.hes.push_store import PushStore, Reading, StoredPush, format_time
from smartmeter.ratelog import RateLimitedLog
from smartmeter.transport.limits import NO_ASSOCIATION, ConnectionTable
from smartmeter.transport.wrapper import HEADER_LENGTH, WRAPPER_VERSION, WrapperDecoder, WrapperError, WrapperFrame

log = logging.getLogger(__name__)

__all__ = [
    "AlarmAcknowledger", "DATA_READOUT_SAP", "MANAGEMENT_SAP", "SETUPS", "Keyring", "Limits", "MeterKeys", "ObjectLists",
    "PushIntake", "PushReceiver", "decode_push", "load_object_list_file", "model_object_lists", "push_key_id",
    "serve_tcp", "serve_udp",
]

DATA_READOUT_SAP = 2  # every push to the head-end runs in the Data Readout client's context (catalog §7)
MANAGEMENT_SAP = 1  # the client that clears alarm descriptors (write access to attribute 2)

# The push setups (catalog §7, push script table 0-0:10.0.108.255), in the order a body that
# fits several lists is attributed: installation before connectivity (same default content;
# the first push of a meter is its installation push).
SETUPS: dict[str, str] = {
    "0-7:25.9.0.255": "installation",
    "0-0:25.9.0.255": "connectivity",
    "0-4:25.9.0.255": "alarm",
    "0-1:25.9.0.255": "interval-1",
    "0-2:25.9.0.255": "interval-2",
    "0-3:25.9.0.255": "interval-3",
    "0-5:25.9.0.255": "power-down",
    "0-6:25.9.0.255": "consumer",
}
PUSH_SETUP_CLASS = 40
INSTALLATION, CONNECTIVITY = "0-7:25.9.0.255", "0-0:25.9.0.255"
CLOCK = (8, "0-0:1.0.0.255", 2)
SYSTEM_TITLE_LENGTH = 8  # the meter's system title, the length byte of its octet-string in general-glo-ciphering
DEVICE_ID_1 = "0-0:96.1.0.255"
ALARM_DESCRIPTORS = ("0-0:97.98.20.255", "0-0:97.98.21.255", "0-0:97.98.22.255")
IPV4_SETUP_CLASS, IPV4_ADDRESS_ATTRIBUTE = 42, 3  # IC 42 IPv4 setup: IP_address (double-long-unsigned)
IPV6_SETUP_CLASS, IPV6_ADDRESS_ATTRIBUTE = 48, 4  # IC 48 IPv6 setup: unicast_IPv6_addresses (array)

# The meter takes a push's invocation counter when the push is triggered and sends it later (after
# its randomisation and window wait, retried, over up to 4 connections), so pushes arrive out of
# counter order: a counter is accepted once if it is above the highest accepted minus this many
# (the IPsec anti-replay window, RFC 4303 §3.4.3). The Data Readout client's counter also counts
# that client's association traffic; 1024 covers a push's retries (minutes) with room to spare.
REPLAY_WINDOW = 1024
RECENT_MESSAGES = 8  # accepted pushes per meter remembered to tell a retry from a replay


@dataclass(frozen=True)
class Limits:
    """What a sender can make the listener hold."""

    max_message: int = 4096  # bytes of one wrapper message's APDU (the meter's PDU is 1224)
    max_notification: int = 65536  # bytes of a push reassembled from GBT blocks
    max_blocks: int = 128  # GBT blocks of one push
    gbt_timeout: float = 30.0  # s from a push's first block to its last
    max_reassemblies: int = 4096  # senders with a GBT push under way
    max_reassembly_bytes: int = 16 * 1024 * 1024  # bytes of all GBT pushes under way (the oldest dropped beyond)
    # GBT pushes under way from one origin: a UDP source address (its ports are the sender's to
    # choose) or a TCP connection (a NAT may put many meters behind one address)
    max_reassemblies_per_origin: int = 8
    max_connections: int = 2048  # TCP connections at a time (the longest idle gives way to a new one)
    idle_timeout: float = 60.0  # s a TCP connection may stay without a message


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class MeterKeys:
    """What the head-end holds for one meter: the Data Readout client's global keys (they protect
    the pushes) and, when given, the Management client's credentials file (alarm acknowledgement)."""

    system_title: bytes
    suite: int
    ek: bytes
    ak: bytes
    source: Path
    management: Path | None = None


def push_key_id(ek: bytes) -> str:
    """A push's key, as a short fingerprint of the encryption key its tag verified with: a meter
    starts its invocation counter again under a new key, so a push is (meter, key, counter).
    The same on every listener and worker, SQLite or fleet store; the key cannot be had from it."""
    return hashlib.sha256(b"smartmeter push key\0" + ek).hexdigest()[:16]


class Keyring:
    """The keys of every known meter, by system title, from credentials files.

    A credentials file (`smartmeter.hes.credentials`, as the meter's demo provisioning and
    `smartmeter pki provision` write them) names its meter in `server_system_title`; the one
    of the Data Readout client (client SAP 2) gives the push keys, the one of the Management
    client (SAP 1) is kept for acknowledging alarms. Other files are ignored.
    """

    def __init__(self, meters: Iterable[MeterKeys] = ()) -> None:
        self.meters: dict[bytes, MeterKeys] = {m.system_title: m for m in meters}

    def __len__(self) -> int:
        return len(self.meters)

    def get(self, system_title: bytes) -> MeterKeys | None:
        return self.meters.get(system_title)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> "Keyring":
        """From credentials files and directories of them (each directory's *.json, not deeper)."""
        push: dict[bytes, MeterKeys] = {}
        management: dict[bytes, Path] = {}
        for path in map(Path, paths):
            if path.is_dir():
                files = sorted(path.glob("*.json"))
            elif path.is_file():
                files = [path]
            else:
                raise CredentialsError(f"{path}: no such file or directory of credentials")
            for file in files:
                credentials = _read_credentials(file)
                if credentials is None:
                    continue
                title = credentials.security.server_system_title
                if credentials.client_sap == MANAGEMENT_SAP:
                    management.setdefault(title, file)
                    continue
                if credentials.client_sap != DATA_READOUT_SAP:
                    continue
                security = credentials.security
                if security.ek is None or security.ak is None or not security.suite:
                    raise CredentialsError(f"{file}: the Data Readout client needs suite 1 or 2 and its EK and AK")
                known = push.get(title)
                if known is not None and (known.ek, known.ak) != (security.ek, security.ak):
                    raise CredentialsError(f"{file}: system title {title.hex().upper()} has other keys in "
                                           f"{known.source}")
                push.setdefault(title, MeterKeys(title, security.suite, security.ek, security.ak, file))
        return cls(MeterKeys(m.system_title, m.suite, m.ek, m.ak, m.source, management.get(m.system_title))
                   for m in push.values())


def _read_credentials(file: Path) -> Credentials | None:
    """The credentials in `file` if it is a client's credentials file naming its meter, else None."""
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(raw, dict) or "client_sap" not in raw or not raw.get("server_system_title"):
        return None  # another kind of JSON file (a PKI index, public.json, ...)
    # the counters of these clients are not used here: the listener only receives
    return parse_credentials(raw, file, counters=CounterStore())


# ------------------------------------------------------------------ push object lists

Entry = tuple[int, str, int, int]  # class_id, OBIS text, attribute (0 = all), data index


def _entries(raw: Any, where: str) -> list[Entry]:
    if not isinstance(raw, list):
        raise SmartmeterError(f"{where}: a push object list is a list of [class_id, OBIS, attribute, index]")
    entries = []
    for item in raw:
        if not (isinstance(item, list) and len(item) in (3, 4) and all(type(v) is int for v in item[:1] + item[2:])
                and isinstance(item[1], str)):
            raise SmartmeterError(f"{where}: {item!r} is not [class_id, \"OBIS\", attribute, index]")
        try:
            obis = str(Obis.parse(item[1]))
        except (ValueError, SmartmeterError):
            raise SmartmeterError(f"{where}: {item[1]!r} is not an OBIS code") from None
        entries.append((item[0], obis, item[2], item[3] if len(item) == 4 else 0))
    return entries


def load_object_list_file(path: str | Path) -> dict[str, list[Entry]]:
    """Push object lists by setup OBIS from a TOML or JSON file:
    `"0-1:25.9.0.255" = [[8, "0-0:1.0.0.255", 2, 0], ...]` (the model's capture_objects form)."""
    path = Path(path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise SmartmeterError(f"{path}: cannot read the push object lists ({exc})") from None
    if not isinstance(doc, dict):
        raise SmartmeterError(f"{path}: push object lists are a table of setup OBIS -> list")
    lists = {}
    for setup, raw in doc.items():
        try:
            key = str(Obis.parse(setup))
        except (ValueError, SmartmeterError):
            raise SmartmeterError(f"{path}: {setup!r} is not the OBIS code of a push setup") from None
        lists[key] = _entries(raw, f"{path} {setup}")
    return lists


def model_object_lists(profile: str = "ksmw") -> list[dict[str, list[Entry]]]:
    """The default push object lists of the meter's object model, for a single- and a
    poly-phase meter (the HES knows the setups' contents, as IDIS has it); empty if the model
    defines none."""
    from smartmeter.cosem.objectmodel import ObjectModel

    model = ObjectModel.load(profile)
    variants = []
    for phases in (3, 1):
        present = {str(o.obis) for o in model.for_phases(phases).objects}
        lists = {}
        for o in model.objects:
            raw = o.config.get("push_object_list")
            if o.class_id == PUSH_SETUP_CLASS and raw and str(o.obis) in present:
                lists[str(o.obis)] = [e for e in _entries(raw, f"model {o.obis}") if e[1] in present]
        if lists and lists not in variants:
            variants.append(lists)
    return variants


NUMBERS = frozenset({DataType.INTEGER, DataType.LONG, DataType.DOUBLE_LONG, DataType.LONG64, DataType.UNSIGNED,
                     DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.LONG64_UNSIGNED,
                     DataType.FLOAT32, DataType.FLOAT64})
STRINGS = frozenset({DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING})
# What the value of an attribute is, where the class (Blue Book) or the object says it, so that
# lists of the same length (the alarm push and the installation push both have four entries)
# are told apart: (class_id or None for any, attribute) -> its types.
_VALUE_TYPES: dict[tuple[int, int], frozenset] = {
    (3, 2): NUMBERS, (4, 2): NUMBERS, (5, 2): NUMBERS, (5, 3): NUMBERS,  # register values
    (3, 3): frozenset({DataType.STRUCTURE}), (4, 3): frozenset({DataType.STRUCTURE}),  # scaler_unit
    (5, 4): frozenset({DataType.STRUCTURE}),
    (7, 2): frozenset({DataType.ARRAY}),  # profile buffer
    (IPV4_SETUP_CLASS, IPV4_ADDRESS_ATTRIBUTE): frozenset({DataType.DOUBLE_LONG_UNSIGNED}),
    (IPV6_SETUP_CLASS, IPV6_ADDRESS_ATTRIBUTE): frozenset({DataType.ARRAY}),
}
_OBJECT_TYPES: dict[str, frozenset] = {DEVICE_ID_1: STRINGS,
                                       **{d: frozenset({DataType.DOUBLE_LONG_UNSIGNED}) for d in ALARM_DESCRIPTORS}}


def _ln(obis: str) -> bytes:
    return Obis.parse(obis).to_bytes()


def _plausible(entry: Entry, value: Data) -> bool:
    """Whether `value` can be what `entry` selects."""
    class_id, obis, attribute, data_index = entry
    if value.type == DataType.NULL_DATA:
        return True  # the meter pushes an attribute it cannot read as null-data
    if attribute == 0:  # all attributes: the first is the logical name
        inner = value.value if value.type == DataType.STRUCTURE else None
        return bool(inner) and inner[0].type == DataType.OCTET_STRING and inner[0].value == _ln(obis)
    if data_index:
        return True  # one element of the attribute: its type is not known here
    if attribute == 1:
        return value.type == DataType.OCTET_STRING and value.value == _ln(obis)
    if (class_id, obis, attribute) == CLOCK:
        return value.type == DataType.OCTET_STRING and len(value.value) == 12
    types = _OBJECT_TYPES.get(obis) if attribute == 2 else None
    types = types or _VALUE_TYPES.get((class_id, attribute))
    return types is None or value.type in types


def _fits(entries: list[Entry], values: list[Data]) -> bool:
    return len(entries) == len(values) and all(_plausible(e, v) for e, v in zip(entries, values))


class ObjectLists:
    """Which object each value of a push body is: the push object list of the setup that sent it.

    The body does not say which setup sent it, so the lists known for the meter are tried in
    turn: those learnt for this meter (the store's `push_object_list` table: read from the
    meter, or loaded by `hes lists`), then the configured ones (`--objects FILE`), then the
    model's defaults. A list fits when it has as many entries as the body has values and the
    logical names inside attribute-0 and attribute-1 values are its own; a list that holds
    its setup's logical name (class 40, attribute 1) identifies the setup at once. The lists
    learnt are read again once another connection (`hes lists`) changed the store.
    """

    def __init__(self, store: PushStore | None = None, configured: dict[str, list[Entry]] | None = None,
                 defaults: Iterable[dict[str, list[Entry]]] = ()) -> None:
        self.store = store
        self.general = [lists for lists in ([configured] if configured else []) + list(defaults) if lists]
        self._learnt: dict[str, dict[str, list[Entry]]] = {}
        self._store_version: int | None = None  # the store's data_version the lists learnt were read at

    def forget(self, meter: str) -> None:
        self._learnt.pop(meter, None)

    def _for_meter(self, meter: str) -> list[dict[str, list[Entry]]]:
        if self.store is not None and self.store.data_version() != self._store_version:
            self._learnt.clear()
            self._store_version = self.store.data_version()
        if self.store is not None and meter not in self._learnt:
            self._learnt[meter] = {setup: [tuple(e) for e in entries]
                                   for setup, entries in self.store.object_lists(meter).items()}
        learnt = self._learnt.get(meter)
        return ([learnt] if learnt else []) + self.general

    def match(self, meter: str, values: list[Data]) -> list[tuple[str, list[Entry]]]:
        """The (setup OBIS, its entries) that fit a body of `values`, from the first source with
        any, in the order of SETUPS; a list naming its own setup alone; empty if none fits."""
        order = list(SETUPS)
        for lists in self._for_meter(meter):
            fitting = [(setup, entries) for setup, entries in lists.items() if _fits(entries, values)]
            for setup, entries in fitting:
                if any(e[0] == PUSH_SETUP_CLASS and e[2] == 1 and e[1] == setup for e in entries):
                    return [(setup, entries)]
            if fitting:
                return sorted(fitting, key=lambda f: order.index(f[0]) if f[0] in order else len(order))
        return []


# ------------------------------------------------------------------------ decoding


CAPTURE_YEARS = range(1000, 9999)  # four digits in UTC, with room for a deviation (format_time's fixed width)


def _capture_time(date_time: bytes) -> dt.datetime | None:
    """A COSEM date-time as an aware UTC datetime (one without deviation is taken as UTC); None
    if it is none or its year is outside CAPTURE_YEARS (the next source of the time applies)."""
    if len(date_time) != 12:
        return None
    try:
        when = axdr.decode_date_time(date_time).to_datetime()
        when = when.astimezone(dt.timezone.utc) if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
    except (DecodeError, ValueError, OverflowError):  # 9999-12-31 23:59 with a deviation is past datetime.max
        return None
    return when if when.year in CAPTURE_YEARS else None


def _values(notification: DataNotification) -> list[Data]:
    """The values of a push body (a structure of the captured attributes, or one value)."""
    body = notification.body
    return list(body.value) if body.type == DataType.STRUCTURE else [body]


def _ascii(value: Data) -> str | None:
    if value.type in (DataType.OCTET_STRING, DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        raw = value.value if isinstance(value.value, bytes) else str(value.value).encode()
        return raw.decode("ascii", errors="replace")
    return None


def _address(class_id: int, attribute: int, value: Data) -> str | None:
    if class_id == IPV4_SETUP_CLASS and attribute == IPV4_ADDRESS_ATTRIBUTE and value.type == DataType.DOUBLE_LONG_UNSIGNED:
        return str(ipaddress.IPv4Address(value.value)) if value.value else None
    if class_id == IPV6_SETUP_CLASS and attribute == IPV6_ADDRESS_ATTRIBUTE and value.type == DataType.ARRAY:
        for item in value.value:
            if item.type == DataType.OCTET_STRING and len(item.value) == 16:
                return str(ipaddress.IPv6Address(item.value))
    return None


def _attributes(entries: list[Entry], values: list[Data]) -> Iterable[tuple[int, str, int, Data]]:
    """(class_id, OBIS, attribute, value) of each value but logical names (they name the object,
    they are no reading); an attribute-0 value (all attributes as one structure) gives each of
    its attributes."""
    for (class_id, obis, attribute, _), value in zip(entries, values):
        if attribute == 1:
            continue
        if attribute == 0 and value.type == DataType.STRUCTURE:
            for index, item in enumerate(value.value[1:], start=2):
                yield class_id, obis, index, item
        else:
            yield class_id, obis, attribute, value


@dataclass
class _Reassembly:
    started: float
    origin: Any  # what max_reassemblies_per_origin counts by
    next_block: int = 1
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class PushIntake:
    """What every push listener does before a push is whole (sans-io): wrapper datagrams and
    frames in, general-block-transfer reassembled within bounds, garbage refused and counted;
    a complete APDU goes to `notification`, which a subclass defines. `sender` identifies
    where blocks of one GBT push come from (a UDP peer, a TCP connection)."""

    def __init__(self, keyring: Keyring, *, limits: Limits = Limits(), monotonic: Callable[[], float] = time.monotonic,
                 say: RateLimitedLog | None = None) -> None:
        self.keyring = keyring
        self.limits = limits
        self.monotonic = monotonic
        self.say = say if say is not None else RateLimitedLog(log)
        self.counts: Counter[str] = Counter()
        self._reassembly: OrderedDict[Any, _Reassembly] = OrderedDict()  # in the order they started
        self._reassembly_bytes = 0
        self._reassembly_by_origin: dict[Any, list[Any]] = {}  # keys, oldest first

    def notification(self, apdu: bytes, sender: Any) -> str:
        raise NotImplementedError

    def ciphered_push(self, apdu: bytes, sender: Any) -> "tuple[GeneralGloCiphering, MeterKeys] | str":
        """The push's ciphered APDU and its meter's keys, or the refusal (counted and said):
        unprotected, no push, truncated, garbage, or an unknown system title."""
        if apdu[:1] == bytes([DATA_NOTIFICATION_TAG]):
            return self.refuse("unprotected", "unprotected data-notification from %s refused", sender)
        if apdu[:1] != bytes([GeneralGloCiphering.TAG]):
            return self.refuse("garbage", "message from %s is no push (tag 0x%s)", sender, apdu[:1].hex())
        try:
            ciphered = GeneralGloCiphering.from_bytes(apdu)
        except TruncatedError as exc:
            return self.refuse("truncated", "push from %s: %s", sender, exc)
        except DecodeError as exc:
            return self.refuse("garbage", "push from %s: %s", sender, exc)
        keys = self.keyring.get(ciphered.system_title)
        if keys is None:
            return self.unknown_sender(ciphered, apdu, sender)
        return ciphered, keys

    def unknown_sender(self, ciphered: GeneralGloCiphering, apdu: bytes, sender: Any) -> str:
        """A push whose system title has no keys here: refused (a listener that can look keys up
        elsewhere does that instead)."""
        return self.refuse("unknown_sender", "push from %s with unknown system title %s", sender,
                           ciphered.system_title.hex().upper()[:32])

    def refuse(self, condition: str, message: str, *args, level: int = logging.WARNING) -> str:
        self.counts[condition] += 1
        self.say(condition, message, *args, level=level)
        return condition

    def flush_soon(self) -> None:
        """Called after each datagram or read of a connection: what was taken may be committed."""

    # -- entry points ------------------------------------------------------------------

    def datagram(self, data: bytes, sender: Any) -> str:
        """One UDP datagram: exactly one wrapper message. Never raises: an unexpected error is
        counted (`internal`) and logged, and nothing of the message stays."""
        try:
            return self._datagram(data, sender)
        except Exception as exc:
            return self._internal(exc, sender)

    def frame(self, frame: WrapperFrame, sender: Any) -> str:
        """One wrapper message (its APDU, or one GBT block of a push); never raises, as `datagram`."""
        try:
            return self._frame(frame, sender)
        except Exception as exc:
            return self._internal(exc, sender)

    def _internal(self, exc: Exception, sender: Any) -> str:
        # the push's savepoint was rolled back and its counter not taken as used: the meter's
        # repetition is processed anew
        return self.refuse("internal", "message from %s could not be processed: %s", sender,
                           "".join(traceback.format_exception(exc)).rstrip(), level=logging.ERROR)

    def _datagram(self, data: bytes, sender: Any) -> str:
        if len(data) > HEADER_LENGTH + self.limits.max_message:
            return self.refuse("oversized", "datagram of %d bytes from %s exceeds %d", len(data), sender,
                                HEADER_LENGTH + self.limits.max_message)
        if len(data) < HEADER_LENGTH:
            return self.refuse("truncated", "datagram of %d bytes from %s: no wrapper header", len(data), sender)
        version = int.from_bytes(data[0:2], "big")
        length = int.from_bytes(data[6:8], "big")
        if version != WRAPPER_VERSION:
            return self.refuse("garbage", "datagram from %s: wrapper version 0x%04X", sender, version)
        if length > len(data) - HEADER_LENGTH:
            return self.refuse("truncated", "datagram from %s: header says %d bytes, %d follow", sender, length,
                                len(data) - HEADER_LENGTH)
        if length < len(data) - HEADER_LENGTH:
            return self.refuse("garbage", "datagram from %s: %d bytes after the %d its header says", sender,
                                len(data) - HEADER_LENGTH - length, length)
        origin = sender[0] if isinstance(sender, tuple) else sender  # the address: the port is the sender's choice
        return self._frame(WrapperFrame(int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:6], "big"),
                                        bytes(data[HEADER_LENGTH:])), sender, origin)

    def _frame(self, frame: WrapperFrame, sender: Any, origin: Any = None) -> str:
        """`origin`: what GBT pushes under way are counted by, the sender (a TCP connection) if None."""
        apdu = frame.payload
        if len(apdu) > self.limits.max_message:
            return self.refuse("oversized", "message of %d bytes from %s exceeds %d", len(apdu), sender,
                                self.limits.max_message)
        if not apdu:
            return self.refuse("garbage", "empty message from %s", sender)
        tag = apdu[0]
        if tag == GENERAL_BLOCK_TRANSFER_TAG:
            return self._block(apdu, (sender, frame.source_wport), sender if origin is None else origin)
        return self.notification(apdu, sender)

    def expire(self) -> int:
        """Drop GBT pushes not completed within the time limit; how many were."""
        deadline = self.monotonic() - self.limits.gbt_timeout
        stale = 0
        while self._reassembly:  # oldest first: the stale ones are at the front
            key, oldest = next(iter(self._reassembly.items()))
            if oldest.started >= deadline:
                break
            self._drop(key)
            stale += 1
        if stale:
            self.counts["gbt_timeout"] += stale
            self.say("gbt_timeout", "%d block transfer(s) not completed within %g s dropped", stale,
                     self.limits.gbt_timeout)
        return stale

    def forget_sender(self, sender: Any) -> None:
        """A TCP connection closed: its unfinished block transfers end with it."""
        for key in list(self._reassembly_by_origin.get(sender, ())):
            self._drop(key)
            self.counts["gbt_incomplete"] += 1
            self.say("gbt_incomplete", "connection from %s closed in the middle of a block transfer", sender)

    # -- general-block-transfer ---------------------------------------------------------

    def _block(self, apdu: bytes, key: Any, origin: Any) -> str:
        try:
            block = GeneralBlockTransfer.from_bytes(apdu)
        except TruncatedError as exc:
            return self.refuse("truncated", "block from %s: %s", key[0], exc)
        except DecodeError as exc:
            return self.refuse("garbage", "block from %s: %s", key[0], exc)
        self.expire()
        partial = self._reassembly.get(key)
        if block.block_number == 1:
            if partial is not None:
                self._drop(key)
                self.counts["gbt_restarted"] += 1
            refusal = self._foreign_start(block.block_data)
            if refusal is not None:
                return self.refuse(refusal, "block transfer from %s begins no push of a known meter (%s)", key[0],
                                   refusal)
            partial = self._start(key, origin)
        elif partial is None or block.block_number != partial.next_block:
            if partial is not None:
                self._drop(key)
            return self.refuse("gbt_sequence", "block %d from %s out of sequence: its push dropped",
                                block.block_number, key[0])
        partial.size += len(block.block_data)
        self._reassembly_bytes += len(block.block_data)
        if partial.size > self.limits.max_notification or partial.next_block > self.limits.max_blocks:
            self._drop(key)
            return self.refuse("oversized", "block transfer from %s exceeds %d bytes or %d blocks", key[0],
                                self.limits.max_notification, self.limits.max_blocks)
        partial.parts.append(block.block_data)
        partial.next_block += 1
        while self._reassembly_bytes > self.limits.max_reassembly_bytes and len(self._reassembly) > 1:
            self._evict(next(k for k in self._reassembly if k != key), "together more than %d bytes",
                        self.limits.max_reassembly_bytes)
        if not block.last_block:
            self.counts["gbt_block"] += 1
            return "gbt_block"
        self._drop(key)
        return self.notification(b"".join(partial.parts), key[0])

    def _foreign_start(self, data: bytes) -> str | None:
        """The refusal if `data` (a first block) cannot begin a known meter's push, else None."""
        if data[:1] == bytes([DATA_NOTIFICATION_TAG]):
            return "unprotected"
        if data[:2] != bytes([GeneralGloCiphering.TAG, SYSTEM_TITLE_LENGTH]) or len(data) < 2 + SYSTEM_TITLE_LENGTH:
            return "garbage"
        if self.keyring.get(data[2:2 + SYSTEM_TITLE_LENGTH]) is None:
            return "unknown_sender"
        return None

    def _start(self, key: Any, origin: Any) -> _Reassembly:
        """A GBT push under way from `key`, within the bounds in number (all, per origin)."""
        of_origin = self._reassembly_by_origin.setdefault(origin, [])
        while len(of_origin) >= self.limits.max_reassemblies_per_origin:
            self._evict(of_origin[0], "more than %d from %s", self.limits.max_reassemblies_per_origin, origin)
        partial = self._reassembly[key] = _Reassembly(self.monotonic(), origin)
        self._reassembly_by_origin.setdefault(origin, []).append(key)  # _evict may have dropped the list
        while len(self._reassembly) > self.limits.max_reassemblies:
            self._evict(next(iter(self._reassembly)), "more than %d", self.limits.max_reassemblies)
        return partial

    def _evict(self, key: Any, why: str, *args) -> None:
        self._drop(key)
        self.counts["gbt_evicted"] += 1
        self.say("gbt_evicted", "block transfers under way " + why + ": the oldest dropped", *args)

    def _drop(self, key: Any) -> None:
        partial = self._reassembly.pop(key)
        self._reassembly_bytes -= partial.size
        of_origin = self._reassembly_by_origin[partial.origin]
        of_origin.remove(key)
        if not of_origin:
            del self._reassembly_by_origin[partial.origin]


class PushReceiver(PushIntake):
    """The SQLite listener's core (sans-io): a datagram or a wrapper frame in, a stored push or
    a counted refusal out."""

    def __init__(self, keyring: Keyring, store: PushStore, object_lists: ObjectLists | None = None, *,
                 limits: Limits = Limits(), clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_alarm: Callable[[StoredPush, dict[str, int], Any], None] | None = None,
                 on_stored: Callable[[StoredPush], None] | None = None, say: RateLimitedLog | None = None) -> None:
        super().__init__(keyring, limits=limits, monotonic=monotonic, say=say)
        self.store = store
        self.object_lists = object_lists if object_lists is not None else ObjectLists(store)
        self.clock = clock
        self.on_alarm = on_alarm
        self.on_stored = on_stored
        store.adopt_unkeyed({title.hex().upper(): push_key_id(keys.ek) for title, keys in keyring.meters.items()})
        self.counters = store.counters()  # highest accepted invocation counter by (meter, key id)
        # hash of the latest accepted pushes by (meter, key id) and counter (a retry is the very same message)
        self._recent: dict[tuple[str, str], OrderedDict[int, int]] = {}
        self._flush_scheduled = False

    def flush_soon(self) -> None:
        """On the event loop: commit what this turn of the loop stored once it is over (a burst of
        pushes shares one commit; `PushStore.deferred`)."""
        if self.store.deferred and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        try:
            self.store.flush()
        except sqlite3.Error as exc:
            # the pushes of this turn are lost with their counters: take the counters from the
            # store again, so that the meters' repetitions are accepted
            self.store.rollback()
            self.counters = self.store.counters()
            self._recent.clear()
            self.refuse("internal", "commit of the pushes received failed, they are lost: %s", exc,
                        level=logging.ERROR)

    # -- the protected notification -----------------------------------------------------

    def notification(self, apdu: bytes, sender: Any) -> str:
        """One complete push APDU (general-glo-ciphering of a data-notification)."""
        found = self.ciphered_push(apdu, sender)
        if isinstance(found, str):
            return found
        ciphered, keys = found
        meter = ciphered.system_title.hex().upper()
        key = (meter, push_key_id(keys.ek))
        counter = ciphered.invocation_counter
        last = self.counters.get(key)
        if last is not None and counter <= last:
            if self._recent.get(key, {}).get(counter) == hash(apdu):
                self.counts["retry"] += 1  # a UDP push sends every retry: already stored
                return "retry"
            if counter <= last - REPLAY_WINDOW or self.store.counter_used(*key, counter):
                return self.refuse("replay", "push from meter %s with invocation counter %d (highest accepted %d "
                                   "under its key) refused as a replay", meter, counter, last)
        try:
            plain = ciphered.unprotect(keys.ek, keys.ak, expected_suite=keys.suite)
        except AuthenticationError:
            return self.refuse("forged", "push from %s claiming meter %s fails its authentication tag",
                                sender, meter)
        except (SecurityError, DecodeError) as exc:
            return self.refuse("unprotected", "push from %s for meter %s: %s", sender, meter, exc)
        # authentic: its counter is used up whatever follows, but taken as used only once the
        # store holds it (a failure before leaves the meter's repetition welcome)
        receive_time = format_time(dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc))
        try:
            notification = DataNotification.from_bytes(plain)
        except DecodeError as exc:
            self._unstored(key, counter, apdu, receive_time, "malformed", sender)
            return self.refuse("malformed", "push of meter %s (counter %d) is no data-notification: %s",
                                meter, counter, exc)
        push = self._decode(meter, counter, notification, receive_time)
        if push is not None:
            push = replace(push, apdu=apdu, source=str(sender), key_id=key[1])
        if push is None:
            self._unstored(key, counter, apdu, receive_time, "unmapped", sender)
            return self.refuse("unmapped", "push of meter %s (counter %d, %d values) fits no known push object "
                               "list: not stored", meter, counter, len(_values(notification)))
        self.store.add(push)
        self._accepted(key, counter, apdu)
        self.counts["stored"] += 1
        if self.on_stored is not None:
            self.on_stored(push)
        alarms = {r.obis: r.value for r in push.readings
                  if r.obis in ALARM_DESCRIPTORS and r.attribute == 2 and isinstance(r.value, int)}
        if self.on_alarm is not None and any(alarms.values()):
            self.on_alarm(push, alarms, sender)
        return "stored"

    def _unstored(self, key: tuple[str, str], counter: int, apdu: bytes, receive_time: str, reason: str,
                  sender: Any) -> None:
        highest = max(counter, self.counters.get(key, counter))
        self.store.record_unstored(*key, counter, receive_time, reason, forget_below=highest - REPLAY_WINDOW,
                                   apdu=apdu, source=str(sender))
        self._accepted(key, counter, apdu)

    def _accepted(self, key: tuple[str, str], counter: int, apdu: bytes) -> None:
        """The store holds the push (or its counter) of (meter, key id) `key`: the counter is
        used up, the window moves."""
        self.counters[key] = max(counter, self.counters.get(key, counter))
        recent = self._recent.setdefault(key, OrderedDict())
        recent[counter] = hash(apdu)
        while len(recent) > RECENT_MESSAGES:
            recent.popitem(last=False)

    def _decode(self, meter: str, counter: int, notification: DataNotification, receive_time: str
                ) -> StoredPush | None:
        return decode_push(meter, counter, notification, receive_time, self.object_lists, self._registered)

    def _registered(self, meter: str) -> bool:
        row = self.store.db.execute("SELECT registered FROM meter WHERE system_title = ?", (meter,)).fetchone()
        return row is not None and row[0] is not None

def decode_push(meter: str, counter: int, notification: DataNotification, receive_time: str,
                object_lists: ObjectLists, registered: Callable[[str], bool]) -> StoredPush | None:
    """What a push says (`StoredPush`, without its APDU), None when it fits no push object list.

    The capture time is the clock in the body (the instant of the schedule or monitor that
    triggered the push, which a meter running behind sends a little later), else the
    notification's date-time, else `receive_time`. `registered(meter)` tells an installation
    push from a connectivity push (the same contents by default). Used by the SQLite listener
    and by the fleet store's push ingester alike."""
    values = _values(notification)
    fitting = object_lists.match(meter, values)
    if not fitting:
        return None
    setup, entries = fitting[0]
    setups = {s for s, _ in fitting}
    if {INSTALLATION, CONNECTIVITY} <= setups:
        # the same contents by default: a meter's first is its installation push, later ones
        # follow its reconnections
        setup = CONNECTIVITY if registered(meter) else INSTALLATION
        entries = dict(fitting)[setup]
    serial = address = None
    captured = None
    readings = []
    for class_id, obis, attribute, value in _attributes(entries, values):
        if value.type == DataType.NULL_DATA:
            continue  # not read by the meter: no reading
        if (class_id, obis, attribute) == CLOCK and captured is None and value.type == DataType.OCTET_STRING:
            captured = _capture_time(value.value)
        if obis == DEVICE_ID_1 and attribute == 2:
            serial = _ascii(value)
        address = _address(class_id, attribute, value) or address
        readings.append(Reading(obis, attribute, class_id, to_json(value)))
    kind = SETUPS.get(setup, "unknown")
    captured = captured or _capture_time(notification.date_time)
    capture_time = format_time(captured) if captured is not None else receive_time
    registers = kind == "installation" or (serial is not None and not registered(meter))
    return StoredPush(meter, counter, receive_time, capture_time, kind, setup, tuple(readings), serial, address,
                      registers)


# ----------------------------------------------------------------- alarm clearing


class AlarmAcknowledger:
    """Clears the alarm descriptors an alarm push reported, on the meter, as the Management
    client: IDIS has the head-end write back the bits it read, and the meter clears the bits
    written as 1 (so an alarm that occurred since stays). One association per meter at a time;
    the alarm push repeats every 10 minutes until cleared, so a failed clearing is retried then.
    `say` gets one line per outcome."""

    def __init__(self, keyring: Keyring, port: int, say: Callable[[str], None], timeout: float = 10.0) -> None:
        self.keyring = keyring
        self.port = port
        self.say = say
        self.timeout = timeout
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    def clear(self, meter: str, descriptors: dict[str, int], sender: Any) -> None:
        """Start clearing `descriptors` (OBIS -> bits) of `meter`, reached at the address its push
        came from (`sender`'s host) on the wrapper port."""
        keys = self.keyring.get(bytes.fromhex(meter))
        if keys is None or keys.management is None:
            self.say(f"ACK meter {meter}: no Management client credentials file next to its push keys")
            return
        if meter in self.busy:
            return
        self.busy.add(meter)
        task = asyncio.get_running_loop().create_task(self._clear(meter, keys.management, descriptors, sender[0]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _clear(self, meter: str, credentials_path: Path, descriptors: dict[str, int], host: str) -> None:
        from smartmeter.hes.client import MeterClient
        from smartmeter.hes.connection import WrapperLink
        from smartmeter.hes.credentials import load_credentials

        try:
            credentials = load_credentials(credentials_path)
            link = WrapperLink(host, self.port, credentials.client_sap, credentials.server_sap, self.timeout)
            async with MeterClient(link, security=credentials.security) as client:
                for obis, bits in sorted(descriptors.items()):
                    if bits:
                        await client.set(obis, 2, Data.double_long_unsigned(bits), class_id=1)
                        self.say(f"ACK meter {meter}: {obis} cleared (0x{bits:08X})")
        except (SmartmeterError, OSError) as exc:
            self.say(f"ACK meter {meter} failed: {exc}")
        finally:
            self.busy.discard(meter)

    async def wait(self) -> None:
        """Let the clearings under way finish."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.timeout)


# ------------------------------------------------------------------------ sockets


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: PushIntake) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr) -> None:
        self.receiver.datagram(data, addr[:2])
        self.receiver.flush_soon()

    def error_received(self, exc: Exception) -> None:
        self.receiver.say("udp_error", "UDP socket error: %s", exc)


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes the kernel may queue: bursts of pushes are not dropped


async def serve_udp(receiver: PushIntake, host: str, port: int) -> asyncio.DatagramTransport:
    """The UDP listener (LAN pushes); `transport.get_extra_info("sockname")` gives the port bound."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    except OSError:
        pass  # the kernel's maximum applies
    sock.bind((host, port))
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(receiver), sock=sock)
    return transport


async def serve_tcp(receiver: PushIntake, host: str, port: int) -> asyncio.AbstractServer:
    """The TCP listener (WAN pushes): wrapper messages one after another on a connection; the
    meter only sends. The returned server's `connections` is its `ConnectionTable`."""
    loop = asyncio.get_running_loop()
    limits = receiver.limits
    table = ConnectionTable("push tcp", lambda: (limits.max_connections, limits.idle_timeout), receiver.say)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slot = table.admit(writer, writer.transport.abort, lambda: NO_ASSOCIATION, loop.time())
        if slot is None:
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peername")
        sender = peer[:2] if peer else ("?", id(writer))  # the peer's port tells its connections apart
        # the header's length is bounded, so the buffer holds at most one message and a chunk
        decoder = WrapperDecoder(max_payload=limits.max_message)
        try:
            while not slot.closed:
                data = await reader.read(65536)
                if not data:
                    try:
                        decoder.eof()
                    except TruncatedError:
                        receiver.refuse("truncated", "connection from %s closed inside a message", sender)
                    break
                table.touch(slot, loop.time())
                try:
                    frames = decoder.feed(data)
                except WrapperError as exc:
                    frames = exc.frames
                    condition = "oversized" if "exceeds" in exc.detail else "garbage"
                    for frame in frames:
                        receiver.frame(frame, sender)
                    receiver.flush_soon()
                    receiver.refuse(condition, "connection from %s closed: %s", sender, exc)
                    break
                for frame in frames:
                    receiver.frame(frame, sender)
                receiver.flush_soon()
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # the connection's own handling (messages are handled by `frame`)
            receiver._internal(exc, sender)
        finally:
            receiver.forget_sender(sender)
            table.release(slot)
            writer.transport.abort()

    server = await asyncio.start_server(on_connection, host, port, limit=limits.max_message + HEADER_LENGTH)

    def sweep() -> None:
        if server.is_serving():
            table.expire(loop.time())
            receiver.expire()
            loop.call_later(1.0, sweep)

    loop.call_later(1.0, sweep)
    server.connections = table
    return server
