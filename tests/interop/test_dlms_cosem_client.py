"""dlms-cosem (PyPI) as an independent client: public client over the TCP wrapper and HDLC.

dlms-cosem builds the requests and parses the responses with its own codecs; values are
decoded with its own A-XDR decoder and compared with what the meter holds.

Two gaps of dlms-cosem 25.1.0 are bridged here, and only these:
- its `EntryDescriptor.to_bytes()` raises NotImplementedError, so the entry selection
  (Blue Book selector 2: structure of from_entry, to_entry, from/to selected value) is
  encoded by `EncodedEntryDescriptor` below;
- its HDLC `recv_frame` hangs when a frame's FCS (or last data byte) is 0x7E: after the
  lone closing flag it waits for yet another flag that never comes. HDLC runs over
  `FlagSafeTcpIO`, which answers that one extra read with nothing; dlms-cosem's own HDLC
  frame parser and state machine do everything else.
"""
from __future__ import annotations

import datetime as dt
import logging
import socket
import time

import attr
import pytest
import structlog
from dlms_cosem import a_xdr, cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.io import BlockingTcpIO, HdlcTransport, TcpTransport
from dlms_cosem.security import NoSecurityAuthentication
from dlms_cosem.time import datetime_from_bytes

from smartmeter.cosem.objectmodel import ObjectModel

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

Interface = enumerations.CosemInterface
LOAD_PROFILE = cosem.CosemAttribute(interface=Interface.PROFILE_GENERIC, instance=cosem.Obis(1, 0, 99, 1, 0, 255), attribute=2)


@attr.s(auto_attribs=True)
class EncodedEntryDescriptor:
    from_entry: int
    to_entry: int

    def to_bytes(self) -> bytes:
        return (b"\x02" + b"\x02\x04" + b"\x06" + self.from_entry.to_bytes(4, "big") + b"\x06"
                + self.to_entry.to_bytes(4, "big") + b"\x12\x00\x01" + b"\x12\x00\x00")


@attr.s(auto_attribs=True)
class FlagSafeTcpIO(BlockingTcpIO):
    """BlockingTcpIO with the same recv_until semantics (up to and including the next
    0x7E), except that right after handing out a lone flag, the next call returns
    nothing instead of blocking: dlms-cosem's recv_frame reads a second time after a lone
    flag, which blocks forever when that flag closed a frame whose FCS ended in 0x7E."""

    _pending: bytearray = attr.ib(factory=bytearray, init=False)
    _lone_flag_given: bool = attr.ib(default=False, init=False)

    def recv_until(self, end: bytes) -> bytes:
        if self._lone_flag_given:
            self._lone_flag_given = False
            return b""
        while end not in self._pending:
            self._pending += self.recv(1)
        cut = self._pending.index(end) + len(end)
        segment = bytes(self._pending[:cut])
        del self._pending[:cut]
        self._lone_flag_given = segment == end
        return segment


def _client(meter, transport: str) -> DlmsClient:
    if transport == "hdlc":
        link = HdlcTransport(client_logical_address=16, server_logical_address=1, server_physical_address=0x10,
                             io=FlagSafeTcpIO("127.0.0.1", meter.hdlc_port))
    else:
        link = TcpTransport(client_logical_address=16, server_logical_address=1,
                            io=BlockingTcpIO("127.0.0.1", meter.wrapper_port))
    return DlmsClient(transport=link, authentication=NoSecurityAuthentication())


@pytest.fixture(params=["wrapper", "hdlc"])
def session(request, meter):
    client = _client(meter, request.param)
    with client.session() as s:
        yield s


def _decode(raw: bytes):
    decoder = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(attributes=[a_xdr.Sequence(attribute_name="data")]))
    return decoder.decode(raw)["data"]


def _rows(raw: bytes) -> list[tuple]:
    rows = []
    for clock, *values in _decode(raw):
        when, _status = datetime_from_bytes(clock)
        rows.append((int(when.timestamp()), *values))
    return rows


def test_object_list(session):
    """dlms-cosem's AssociationObjectListParser stops at class ids its enum lacks (the
    companion standard's frame counter class 12544), so the list is decoded with its A-XDR
    decoder and checked entry by entry: class id, version, logical name."""
    raw = session.get(cosem.CosemAttribute(interface=Interface.ASSOCIATION_LN, instance=cosem.Obis(0, 0, 40, 0, 0, 255), attribute=2))
    entries = {(class_id, version, bytes(ln)) for class_id, version, ln, _rights in _decode(raw)}
    granted = {(o.class_id, o.version, o.obis.to_bytes()) for o in ObjectModel.load("ksmw").for_phases(1).objects if "public" in o.access}
    assert entries == granted


def test_logical_device_name(session):
    raw = session.get(cosem.CosemAttribute(interface=Interface.DATA, instance=cosem.Obis(0, 0, 42, 0, 0, 255), attribute=2))
    assert _decode(raw) == b"KFM1000100000001"


def test_clock(session):
    raw = session.get(cosem.CosemAttribute(interface=Interface.CLOCK, instance=cosem.Obis(0, 0, 1, 0, 0, 255), attribute=2))
    when, _ = datetime_from_bytes(_decode(raw))
    assert abs(when.timestamp() - time.time()) < 5


def test_active_energy_import(session, meter):
    scaler_unit = _decode(session.get(cosem.CosemAttribute(interface=Interface.REGISTER, instance=cosem.Obis(1, 0, 1, 8, 0, 255), attribute=3)))
    assert scaler_unit == [0, 30]  # 10^0 Wh
    before = meter.energy_wh("a_plus")
    value = _decode(session.get(cosem.CosemAttribute(interface=Interface.REGISTER, instance=cosem.Obis(1, 0, 1, 8, 0, 255), attribute=2)))
    after = meter.energy_wh("a_plus")
    assert before - 2 <= value <= after + 2


def test_load_profile_whole(session, meter):
    rows = _rows(session.get(LOAD_PROFILE))
    assert len(rows) >= 2880
    assert rows == [tuple(r) for r in meter.profile_rows()][: len(rows)]


def test_load_profile_by_range(session, meter):
    held = meter.profile_rows()
    first, last = held[300][0], held[320][0]
    selection = RangeDescriptor(
        restricting_object=CaptureObject(
            cosem_attribute=cosem.CosemAttribute(interface=Interface.CLOCK, instance=cosem.Obis(0, 0, 1, 0, 0, 255), attribute=2),
            data_index=0),
        from_value=dt.datetime.fromtimestamp(first, dt.timezone.utc),
        to_value=dt.datetime.fromtimestamp(last, dt.timezone.utc),
    )
    rows = _rows(session.get(LOAD_PROFILE, access_descriptor=selection))
    assert rows == [tuple(r) for r in held if first <= r[0] <= last]
    assert len(rows) == 21


def test_load_profile_by_entry(session, meter):
    rows = _rows(session.get(LOAD_PROFILE, access_descriptor=EncodedEntryDescriptor(10, 19)))
    assert rows == [tuple(r) for r in meter.profile_rows()][9:19]
