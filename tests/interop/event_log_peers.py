"""What the event-log interop tests need besides the peers themselves: the meter's event store
read as it is (read-only), the COSEM date-time an entry's time must have on the wire, and the
peers set up for the clients that may read event logs.

The store is opened read-only with SQLite, not through the meter's EventRecorder: the test
compares what the clients received with what the meter holds, and must not share the code
that produced the answer (nor hold a writable connection to a running meter's store).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from gurux_dlms import GXDLMSClient
from gurux_dlms.enums import ErrorCode, InterfaceType, Security

from gurux_secure_peer import GuruxSecureClient
from meter_control import quiet

METER_ZONE = ZoneInfo("Europe/Berlin")  # the meter's default time zone (`meter run` without --time-zone)
DST_ACTIVE = 0x80  # clock status bit 7 (Blue Book 4.1.6.1)


@dataclass(frozen=True)
class HeldEntry:
    """One row of the meter's event store (events.sqlite3, table entry)."""

    seq: int
    time: int  # UTC seconds
    code: int
    client_sap: int
    server_sap: int
    system_title: bytes
    value: int  # duration of a power failure
    detail: bytes  # IdDetail: service_id, class_id (2), logical name (6), index (signed)


def held(data_dir: Path, log: str) -> list[HeldEntry]:
    """The entries of one log as the meter's store holds them now, oldest first."""
    db = sqlite3.connect(f"file:{Path(data_dir) / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, time, code, client_sap, server_sap, system_title, value, detail "
                          "FROM entry WHERE log = ? ORDER BY seq", (log,)).fetchall()
    finally:
        db.close()
    return [HeldEntry(*row) for row in rows]


def cosem_date_time(utc: int, zone: ZoneInfo = METER_ZONE) -> bytes:
    """The 12-byte COSEM date-time of a whole second in the meter's local time (Blue Book
    4.1.6.1): year, month, day, weekday (Monday 1), hour, minute, second, hundredths 0,
    deviation (minutes local time is behind UTC, so -60 for CET) and status (DST bit)."""
    local = dt.datetime.fromtimestamp(utc, zone)
    deviation = -int(local.utcoffset().total_seconds()) // 60
    return struct.pack(">HBBBBBBBhB", local.year, local.month, local.day, local.isoweekday(), local.hour,
                       local.minute, local.second, 0, deviation, DST_ACTIVE if local.dst() else 0)


def partners(entry: HeldEntry) -> list[int]:
    """The associated partners id (IC 15 attribute 3): structure {client SAP integer, server SAP
    long-unsigned}; the client SAP is a signed integer, so "no client" (0xFF) reads -1."""
    return [entry.client_sap - 256 if entry.client_sap > 127 else entry.client_sap, entry.server_sap]


def id_detail(entry: HeldEntry) -> list:
    """IdDetail (companion §5.13): structure {service_id unsigned, class_id long-unsigned,
    logical_name octet-string(6), index integer}."""
    d = entry.detail
    return [d[0], int.from_bytes(d[1:3], "big"), bytes(d[3:9]), int.from_bytes(d[9:10], "big", signed=True)]


def column_values(entry: HeldEntry, columns: tuple[str, ...]) -> list:
    """The values after the clock column, as plain Python values, in the log's column order."""
    out = []
    for kind in columns:
        if kind == "code":
            out.append(entry.code)
        elif kind == "partners":
            out.append(partners(entry))
        elif kind == "system_title":
            out.append(bytes(entry.system_title))
        elif kind == "duration":
            out.append(entry.value)
        elif kind == "id_detail":
            out.append(id_detail(entry))
        else:
            raise ValueError(kind)
    return out


def plain(value):
    """A peer's value as plain Python: bytearray -> bytes, nested lists kept, int subclasses -> int."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if value is None or type(value) is bool:
        return value
    return int(value)


def credentials(data_dir: Path, client: str) -> dict:
    return json.loads((Path(data_dir) / "credentials" / f"{client}.json").read_text())


def gurux_lan(meter, client: str, invocation_counter: int) -> GuruxSecureClient:
    """gurux's secure client over the TCP wrapper (LAN) with the demo credentials of `client`."""
    return GuruxSecureClient(meter.wrapper_port, meter.data_dir / "credentials" / f"{client}.json", invocation_counter)


def gurux_wz(meter, client: str, invocation_counter: int) -> GuruxSecureClient:
    """gurux's secure client over HDLC on the optical port (WZ): the local clients (installation,
    maintenance) associate only there, with HLS 6; the protection is the client's policy
    (installation: authenticated only; maintenance: authenticated and encrypted)."""
    path = meter.data_dir / "credentials" / f"{client}.json"
    policy = credentials(meter.data_dir, client)["security_policy"]
    peer = GuruxSecureClient(meter.wrapper_port, path, invocation_counter)
    peer.sock.close()  # the constructor connects to the wrapper; this client goes to the optical port
    peer.client.interfaceType = InterfaceType.HDLC
    peer.client.serverAddress = GXDLMSClient.getServerAddress(1, 0x10)
    encrypted = policy & 0x08  # encrypted requests (Blue Book security policy, version 1)
    peer.client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION if encrypted else Security.AUTHENTICATION
    peer.hdlc = True
    peer.sock = socket.create_connection(("127.0.0.1", meter.hdlc_port), timeout=10)
    reply = peer.transfer(peer.client.snrmRequest())
    peer.client.parseUAResponse(reply.data)
    return peer


def dlms_cosem_management(meter, invocation_counter: int):
    """dlms-cosem as the management client of the "idis" profile: HLS 5 (GMAC), suite 0, the
    only secured client dlms-cosem can be (it has neither HLS 6/7 nor suite 1)."""
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.io import BlockingTcpIO, TcpTransport
    from dlms_cosem.security import HighLevelSecurityGmacAuthentication

    creds = credentials(meter.data_dir, "management")
    transport = TcpTransport(client_logical_address=creds["client_sap"], server_logical_address=1,
                             io=BlockingTcpIO("127.0.0.1", meter.wrapper_port))
    return DlmsClient(transport=transport, authentication=HighLevelSecurityGmacAuthentication(challenge_length=16),
                      encryption_key=bytes.fromhex(creds["ek"]), authentication_key=bytes.fromhex(creds["ak"]),
                      client_system_title=bytes.fromhex(creds["client_system_title"]), security_suite=0,
                      client_initial_invocation_counter=invocation_counter)


@contextlib.contextmanager
def gurux_session(meter, client: str, invocation_counter: int):
    """gurux associated over the LAN as `client` for the block, released after."""
    peer = gurux_lan(meter, client, invocation_counter)
    quiet(peer.associate)
    try:
        yield peer
    finally:
        quiet(peer.close)


def gurux_read(peer, obj, attribute: int):
    """The attribute as gurux decoded the A-XDR, as plain Python values (before gurux types it in
    place: the date-times of a profile buffer); also typed into gurux's object."""
    reply = quiet(peer.transfer, peer.client.read(obj, attribute))
    assert reply.error == ErrorCode.OK, (obj.logicalName, attribute, reply.error)
    value = plain(reply.value)
    peer.client.updateValue(obj, attribute, reply.value)
    return value
