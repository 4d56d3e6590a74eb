"""The event logs (IC 7 over the durable event store) read by gurux-dlms and dlms-cosem over real sockets.

One meter process ("idis" profile: its management client is HLS 5 / suite 0, the one secured
client dlms-cosem can be) gets a known history from real causes: a management SET of the
long-power-failure threshold, an association refused on the wrong interface, the covers and
the magnet opened and closed through the control channel (what `smartmeter sim` sends), an
outage, a clock write 120 s ahead (beyond the 9 s limit: events 4 and 5), then covers and an
outage again after the jump. Each log is then read whole, by range (a window the scenario
computes: everything before the jump) and by entry (entries 2..3, also a column subset), with
attributes 3, 7 and 8, and every value must equal what the meter's store holds: times as
COSEM date-times in the meter's local time (Europe/Berlin, deviation and DST bit), codes,
the client/server SAP structure, the client's system title, durations and IdDetail.

Reads open associations, which the session and security logs record (26/27): those logs are
compared with the store as it is while the reading association is open, and their scenario
part is checked as a prefix. The meter is shared by this module's tests (building the history
takes two outages); no test writes to it after the scenario.

What a peer cannot do is shown with the other and pinned here, not skipped:
- dlms-cosem 25.1.0 has no HLS 6/7 and no suite 1, so the data readout (HLS 7) and the local
  WZ clients (HLS 6) are gurux only; its RangeDescriptor raises NotImplementedError for
  selected values (a column subset by range), so that subset is read by gurux (asserted below);
  its EntryDescriptor cannot encode itself (see test_dlms_cosem_client.py), so the entry
  selection is encoded here from the Blue Book (from/to entry, from/to selected value).
- gurux-dlms 1.0.203's readRowsByEntry(columns=...) sends the NUMBER of columns as
  to_selected_value where the Blue Book wants the index of the last column; the two agree only
  for a subset starting at column 1, so gurux reads the subset clock..code (1..2) and
  dlms-cosem the subset from column 2 to the last.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import attr
import pytest
import structlog
from dlms_cosem import a_xdr, cosem, enumerations
from dlms_cosem.client import DataResultError
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.time import datetime_from_bytes
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSTranslator
from gurux_dlms.enums import ClockStatus, DataType, ErrorCode, Security, TranslatorOutputType
from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister

from event_log_peers import (
    METER_ZONE, HeldEntry, column_values, cosem_date_time, credentials, dlms_cosem_management, gurux_lan,
    gurux_wz, held, plain,
)
from gurux_peer import GuruxClient
from meter_control import control, meter_now as clock_now, quiet as _quiet
from meterproc import start_meter
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.objectmodel import ObjectModel

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

Interface = enumerations.CosemInterface
# The data sheet's event logs: logical name and the columns after the clock
LOGS = {
    "standard": ("0-0:99.98.0.255", ("code",)),
    "fraud": ("0-0:99.98.1.255", ("code",)),
    "communication": ("0-0:99.98.5.255", ("code",)),
    "session": ("0-0:99.98.6.255", ("code", "partners", "system_title")),
    "security": ("0-0:99.98.9.255", ("code", "partners", "system_title")),
    "configuration": ("0-0:99.98.10.255", ("id_detail",)),
    "power_failure": ("1-0:99.97.0.255", ("duration",)),
}
CLOCK_JUMP = 120  # s, the clock write: far beyond the 9 s synchronisation limit
THRESHOLD_LN = bytes((0, 0, 96, 7, 20, 255))
CLOCK_LN = bytes((0, 0, 1, 0, 0, 255))
NO_CLIENT = (255, 255, b"\xff")  # SAPs and title of an event without a client (companion §5.12)


def _dotted(obis: str) -> str:
    return obis.replace("-", ".").replace(":", ".")


def _obis(obis: str) -> cosem.Obis:
    return cosem.Obis(*(int(x) for x in _dotted(obis).split(".")))


@dataclass
class Scenario:
    meter: object
    counters: itertools.count
    management: dict  # the management client's credentials
    start: int  # meter time (UTC s) before the first cause
    jump_to: int  # the time the clock write set (UTC s)
    expected_codes: dict[str, list[int]]  # what the scenario causes, per log, in order

    def window(self) -> tuple[int, int]:
        """Everything before the clock jump and nothing after it: the scenario's first part
        lasts seconds, and every entry after the jump is at jump_to or later."""
        return self.start, self.jump_to - CLOCK_JUMP // 2

    def held(self, log: str) -> list[HeldEntry]:
        return held(self.meter.data_dir, log)


def _control(meter, name: str, value: str) -> dict:
    return control(meter, input=name, value=value)


def _gurux_write(peer, obj, attribute: int) -> None:
    reply = _quiet(peer.transfer, peer.client.write(obj, attribute))
    assert reply.error == 0, reply.error


def _outage(meter) -> None:
    _control(meter, "supply", "off")
    time.sleep(1.1)  # whole seconds of the meter clock: the recorded duration is at least 1 s
    _control(meter, "supply", "on")
    # the interfaces open again after the power up (asynchronously, like a communication module
    # booting): the control channel's answer can come before the ports listen
    for port in (meter.wrapper_port, meter.hdlc_port):
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    meter = start_meter(tmp_path_factory.mktemp("events") / "meter", "--profile", "idis")
    try:
        counters = itertools.count(1, 1000)  # each client's first counter well above the last one used
        start = int(clock_now(meter))
        # 1. management lowers the long-power-failure threshold to 1 s (a configuration SET)
        peer = gurux_lan(meter, "management", next(counters))
        _quiet(peer.associate)
        threshold = GXDLMSRegister("0.0.96.7.20.255")
        threshold.value = 1
        threshold.setDataType(2, DataType.UINT16)  # long-unsigned, as the register holds it
        _gurux_write(peer, threshold, 2)
        _quiet(peer.close)
        # 2. the local clients (installation, maintenance, certification: WZ only) try the LAN:
        # refused, and the communication log says so
        for sap in (5, 6, 7):
            stray = GuruxClient(meter.wrapper_port, client_address=sap)
            with pytest.raises(Exception, match="rejected"):
                stray.associate()
            stray.sock.close()
        # 3. the physical world: covers and magnet, then an outage
        for name, on, off in (("cover", "open", "close"), ("terminal-cover", "open", "close"), ("magnet", "on", "off")):
            _control(meter, name, on)
            _control(meter, name, off)
        _outage(meter)
        # 4. management writes the clock CLOCK_JUMP s ahead, as local time (companion §5.4)
        peer = gurux_lan(meter, "management", next(counters))
        _quiet(peer.associate)
        clock = GXDLMSClock()
        meter_now = int(_quiet(peer.read, clock, 2).value.timestamp())
        jump_to = meter_now + CLOCK_JUMP
        clock.time = GXDateTime(dt.datetime.fromtimestamp(jump_to, METER_ZONE))
        _gurux_write(peer, clock, 2)
        _quiet(peer.close)
        assert meter_now - start < CLOCK_JUMP // 2  # the first part fits the window before the jump
        # 5. after the jump: the cover again, two more outages, the threshold back to its default
        _control(meter, "cover", "open")
        _control(meter, "cover", "close")
        _outage(meter)
        _outage(meter)
        peer = gurux_lan(meter, "management", next(counters))
        _quiet(peer.associate)
        threshold.value = 180
        _gurux_write(peer, threshold, 2)
        _quiet(peer.close)
        expected = {
            "standard": [47, 1, 2, 4, 5, 47, 1, 2, 1, 2, 47],
            "fraud": [44, 45, 40, 41, 42, 43, 44, 45],
            "communication": [240, 240, 240],
            "session": [26, 27, 26, 27, 26, 27],
            "security": [26, 27, 44, 45, 40, 41, 42, 43, 1, 2, 26, 4, 5, 27, 44, 45, 1, 2, 1, 2, 26, 27],
            "configuration": [47, 47, 47],
            "power_failure": [0, 0, 0],
        }
        yield Scenario(meter, counters, credentials(meter.data_dir, "management"), start, jump_to, expected)
    finally:
        meter.stop()


# -- the premise: the store holds what the scenario caused ------------------------------------------


def test_the_store_holds_what_the_scenario_caused(scenario):
    management = (1, 1, bytes.fromhex(scenario.management["client_system_title"]))
    for log, codes in scenario.expected_codes.items():
        entries = scenario.held(log)
        assert [e.code for e in entries][: len(codes)] == codes, log
    # who: the world's events have no client; the management associations are SAP 1 -> 1
    for e in scenario.held("fraud") + scenario.held("power_failure"):
        assert (e.client_sap, e.server_sap, e.system_title) == NO_CLIENT
    security = scenario.held("security")
    for e in security[: len(scenario.expected_codes["security"])]:
        expected = management if e.code in (26, 27, 4, 5) else NO_CLIENT
        assert (e.client_sap, e.server_sap, e.system_title) == expected, e
    strays = scenario.held("communication")
    assert [(e.client_sap, e.server_sap) for e in strays] == [(5, 1), (6, 1), (7, 1)]
    # when: events 4/5 carry the old and the new time; 5 is exactly where the write put the clock
    standard = scenario.held("standard")
    assert standard[4].time == scenario.jump_to
    assert scenario.start <= standard[3].time < scenario.jump_to - CLOCK_JUMP // 2
    # the configuration log: IdDetail of the two SETs (service 1, class, logical name, attribute)
    threshold_set = bytes([1]) + (3).to_bytes(2, "big") + THRESHOLD_LN + bytes([2])
    assert [e.detail for e in scenario.held("configuration")] == [
        threshold_set, bytes([1]) + (8).to_bytes(2, "big") + CLOCK_LN + bytes([2]), threshold_set]
    # each long power failure: stamped at power up, its duration from power down to power up
    failures = scenario.held("power_failure")
    outages = ((standard[1], standard[2]), (standard[6], standard[7]), (standard[8], standard[9]))
    for failure, (down, up) in zip(failures, outages, strict=True):
        assert (down.code, up.code) == (1, 2)
        assert failure.time == up.time
        assert failure.value == up.time - down.time >= 1


# -- gurux-dlms -----------------------------------------------------------------------------------


def _model_object(log: str):
    """The log's object in the meter's model ("idis" profile): capture objects and capacity."""
    return next(o for o in ObjectModel.load("idis").objects if o.obis == Obis.parse(LOGS[log][0]))


def _model_columns(log: str) -> list[tuple[int, str, int, int]]:
    return [(c, _dotted(ln), a, d) for c, ln, a, d in _model_object(log).config["capture_objects"]]


@contextlib.contextmanager
def _gurux(scenario, client: str = "management", *, wz: bool = False):
    peer = (gurux_wz if wz else gurux_lan)(scenario.meter, client, next(scenario.counters))
    _quiet(peer.associate)
    try:
        yield peer
    finally:
        _quiet(peer.close)


def _gurux_rows(profile: GXDLMSProfileGeneric) -> list[tuple]:
    """(UTC s, offset minutes, DST flag, values...) of each row as gurux parsed it."""
    rows = []
    for clock, *values in profile.buffer:
        assert isinstance(clock, GXDateTime)
        rows.append((int(clock.value.timestamp()), int(clock.value.utcoffset().total_seconds()) // 60,
                     bool(clock.status & ClockStatus.DAYLIGHT_SAVE_ACTIVE), *plain(values)))
    return rows


def _expected_gurux(entries: list[HeldEntry], columns: tuple[str, ...], clock: bool = True) -> list[tuple]:
    rows = []
    for e in entries:
        local = dt.datetime.fromtimestamp(e.time, METER_ZONE)
        stamp = (e.time, int(local.utcoffset().total_seconds()) // 60, bool(local.dst())) if clock else ()
        rows.append((*stamp, *column_values(e, columns)))
    return rows


def _gurux_profile(peer, log: str) -> GXDLMSProfileGeneric:
    profile = GXDLMSProfileGeneric(_dotted(LOGS[log][0]))
    _quiet(peer.read, profile, 3)
    return profile


@pytest.mark.parametrize("log", LOGS)
def test_gurux_reads_each_log_whole_with_its_attributes(scenario, log):
    with _gurux(scenario) as peer:
        profile = _gurux_profile(peer, log)
        columns = [(o.objectType, o.logicalName, a.attributeIndex, a.dataIndex) for o, a in profile.captureObjects]
        assert columns == _model_columns(log)
        _quiet(peer.read, profile, 2)
        entries = scenario.held(log)  # the association is open: its own session entry is in both
        in_use = _quiet(peer.read, profile, 7)
        capacity = _quiet(peer.read, profile, 8)
    assert _gurux_rows(profile) == _expected_gurux(entries, LOGS[log][1])
    assert len(entries) >= len(scenario.expected_codes[log])
    assert in_use == len(entries)
    assert capacity == _model_object(log).config["profile_entries"]


@pytest.mark.parametrize("log", LOGS)
def test_gurux_reads_the_window_before_the_jump_by_range(scenario, log):
    first, last = scenario.window()
    with _gurux(scenario) as peer:
        profile = _gurux_profile(peer, log)
        start = dt.datetime.fromtimestamp(first, METER_ZONE)
        end = dt.datetime.fromtimestamp(last, METER_ZONE)
        reply = _quiet(peer.transfer, peer.client.readRowsByRange(profile, start, end))
        peer.client.updateValue(profile, 2, reply.value)
        whole = _gurux_rows(profile)
        # a column subset by range (selected values): the clock and the last column
        subset = [profile.captureObjects[0], profile.captureObjects[-1]]
        reply = _quiet(peer.transfer, peer.client.readRowsByRange(profile, start, end, subset))
        subset_rows = plain(reply.value)
        entries = scenario.held(log)
    inside = [e for e in entries if first <= e.time <= last]
    assert whole == _expected_gurux(inside, LOGS[log][1])
    # the scenario's part before the jump, by its own account
    before_jump = {"standard": [47, 1, 2, 4], "fraud": [44, 45, 40, 41, 42, 43], "communication": [240, 240, 240],
                   "session": [26, 27, 26], "security": [26, 27, 44, 45, 40, 41, 42, 43, 1, 2, 26, 4],
                   "configuration": [47], "power_failure": [0]}[log]
    assert [e.code for e in inside] == before_jump
    assert subset_rows == [[cosem_date_time(e.time), *column_values(e, LOGS[log][1][-1:])] for e in inside]


@pytest.mark.parametrize("log", LOGS)
def test_gurux_reads_entries_two_and_three(scenario, log):
    with _gurux(scenario) as peer:
        profile = _gurux_profile(peer, log)
        _quiet(peer.rows_by_entry, profile, 2, 2)
        rows = _gurux_rows(profile)
        # columns 1..2 (clock and the first value): gurux encodes this subset as the Blue Book says
        reply = _quiet(peer.transfer, peer.client.readRowsByEntry(profile, 2, 2, profile.captureObjects[:2]))
        subset = plain(reply.value)
        entries = scenario.held(log)
    expected = entries[1:3]
    assert len(expected) == 2  # every log has at least three entries after the scenario
    assert rows == _expected_gurux(expected, LOGS[log][1])
    assert subset == [[cosem_date_time(e.time), *column_values(e, LOGS[log][1][:1])] for e in expected]


# -- dlms-cosem ---------------------------------------------------------------------------------


@attr.s(auto_attribs=True)
class EntryDescriptor:
    """Blue Book selector 2: structure {from_entry, to_entry double-long-unsigned, from_selected_value,
    to_selected_value long-unsigned} (dlms-cosem's own EntryDescriptor cannot encode itself)."""

    from_entry: int
    to_entry: int
    from_value: int = 1
    to_value: int = 0

    def to_bytes(self) -> bytes:
        return (b"\x02\x02\x04\x06" + self.from_entry.to_bytes(4, "big") + b"\x06" + self.to_entry.to_bytes(4, "big")
                + b"\x12" + self.from_value.to_bytes(2, "big") + b"\x12" + self.to_value.to_bytes(2, "big"))


def _decode(raw: bytes):
    decoder = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(attributes=[a_xdr.Sequence(attribute_name="data")]))
    return decoder.decode(raw)["data"]


def _attribute(log: str, attribute: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(interface=Interface.PROFILE_GENERIC, instance=_obis(LOGS[log][0]), attribute=attribute)


def _dlms_cosem_rows(raw: bytes) -> list[list]:
    rows = plain(_decode(raw))
    for clock, *_ in rows:  # dlms-cosem's own reading of each stamp: the same instant
        assert isinstance(datetime_from_bytes(clock)[0], dt.datetime)
    return rows


def _expected_raw(entries: list[HeldEntry], columns: tuple[str, ...]) -> list[list]:
    return [[cosem_date_time(e.time), *column_values(e, columns)] for e in entries]


@contextlib.contextmanager
def _dlms_cosem(scenario):
    client = dlms_cosem_management(scenario.meter, next(scenario.counters))
    with client.session() as session:
        yield session


@pytest.mark.parametrize("log", LOGS)
def test_dlms_cosem_reads_each_log_whole_with_its_attributes(scenario, log):
    with _dlms_cosem(scenario) as session:
        columns = plain(_decode(session.get(_attribute(log, 3))))
        rows = _dlms_cosem_rows(session.get(_attribute(log, 2)))
        entries = scenario.held(log)
        in_use = _decode(session.get(_attribute(log, 7)))
        capacity = _decode(session.get(_attribute(log, 8)))
    assert columns == [[c, Obis.parse(ln).to_bytes(), a, d] for c, ln, a, d in
                       _model_object(log).config["capture_objects"]]
    assert rows == _expected_raw(entries, LOGS[log][1])
    assert [int(datetime_from_bytes(r[0])[0].timestamp()) for r in rows] == [e.time for e in entries]
    assert in_use == len(entries) >= len(scenario.expected_codes[log])
    assert capacity == _model_object(log).config["profile_entries"]


@pytest.mark.parametrize("log", LOGS)
def test_dlms_cosem_reads_the_window_before_the_jump_by_range(scenario, log):
    first, last = scenario.window()
    clock = CaptureObject(cosem_attribute=cosem.CosemAttribute(interface=Interface.CLOCK, instance=cosem.Obis(0, 0, 1, 0, 0, 255),
                                                               attribute=2), data_index=0)
    # in UTC this time (gurux sends local time): the meter reads the deviation either way
    selection = RangeDescriptor(restricting_object=clock, from_value=dt.datetime.fromtimestamp(first, dt.timezone.utc),
                                to_value=dt.datetime.fromtimestamp(last, dt.timezone.utc))
    with _dlms_cosem(scenario) as session:
        rows = _dlms_cosem_rows(session.get(_attribute(log, 2), access_descriptor=selection))
        entries = scenario.held(log)
    inside = [e for e in entries if first <= e.time <= last]
    assert inside and rows == _expected_raw(inside, LOGS[log][1])
    assert all(e.time < scenario.jump_to for e in inside)
    # dlms-cosem cannot ask for a column subset by range (gurux does, above)
    with pytest.raises(NotImplementedError):
        attr.evolve(selection, selected_values=[clock]).to_bytes()


@pytest.mark.parametrize("log", LOGS)
def test_dlms_cosem_reads_entries_two_and_three_and_a_column_subset(scenario, log):
    width = 1 + len(LOGS[log][1])
    with _dlms_cosem(scenario) as session:
        rows = _dlms_cosem_rows(session.get(_attribute(log, 2), access_descriptor=EntryDescriptor(2, 3)))
        subset = plain(_decode(session.get(_attribute(log, 2), access_descriptor=EntryDescriptor(2, 3, 2, width))))
        entries = scenario.held(log)
    assert rows == _expected_raw(entries[1:3], LOGS[log][1])
    assert subset == [column_values(e, LOGS[log][1]) for e in entries[1:3]]


# -- who may read which log (the model's access rights) --------------------------------------------


def test_public_client_sees_no_event_log(scenario):
    """Every event log is for the secured clients only: not in the public client's object list,
    so a read is object-undefined, with both peers."""
    peer = GuruxClient(scenario.meter.wrapper_port)
    peer.associate()
    try:
        for log in LOGS:
            reply = peer.transfer(peer.client.read(GXDLMSProfileGeneric(_dotted(LOGS[log][0])), 2))
            assert reply.error == ErrorCode.UNDEFINED_OBJECT, log
    finally:
        peer.close()
    from dlms_cosem.client import DlmsClient
    from dlms_cosem.io import BlockingTcpIO, TcpTransport
    from dlms_cosem.security import NoSecurityAuthentication

    client = DlmsClient(transport=TcpTransport(client_logical_address=16, server_logical_address=1,
                                               io=BlockingTcpIO("127.0.0.1", scenario.meter.wrapper_port)),
                        authentication=NoSecurityAuthentication())
    with client.session() as session:
        for log in LOGS:
            with pytest.raises(DataResultError, match="OBJECT_UNDEFINED"):
                session.get(_attribute(log, 2))


@pytest.mark.parametrize("client, wz", [("data_readout", False), ("maintenance", True)])
def test_data_readout_and_maintenance_read_the_security_log(scenario, client, wz):
    """The security log is for management, data readout and maintenance (HLS 7 on the LAN, HLS 6
    on the optical port: gurux only, dlms-cosem has neither)."""
    with _gurux(scenario, client, wz=wz) as peer:
        profile = _gurux_profile(peer, "security")
        _quiet(peer.read, profile, 2)
        entries = scenario.held("security")
    assert _gurux_rows(profile) == _expected_gurux(entries, LOGS["security"][1])
    title = bytes.fromhex(credentials(scenario.meter.data_dir, client)["client_system_title"])
    sap = credentials(scenario.meter.data_dir, client)["client_sap"]
    opened = entries[-1]  # this association: 26 on the LAN, 28 on the optical port
    assert (opened.code, opened.client_sap, opened.server_sap, opened.system_title) == (28 if wz else 26, sap, 1, title)


def test_installation_reads_the_standard_log_but_not_the_security_log(scenario):
    with _gurux(scenario, "installation", wz=True) as peer:
        profile = _gurux_profile(peer, "standard")
        _quiet(peer.read, profile, 2)
        entries = scenario.held("standard")
        refused = _quiet(peer.transfer, peer.client.read(GXDLMSProfileGeneric(_dotted(LOGS["security"][0])), 2))
    assert _gurux_rows(profile) == _expected_gurux(entries, LOGS["standard"][1])
    assert refused.error == ErrorCode.UNDEFINED_OBJECT


# -- gurux's APDU translator as a second decoder of a raw buffer response ---------------------------


def test_translator_decodes_the_raw_configuration_log_response(scenario):
    """The protected GET response of the configuration log, as it came over the socket, opened
    and described by GXDLMSTranslator: the plaintext is a get-response-normal whose data is
    exactly the A-XDR buffer written here from the store and the Blue Book, and the XML view
    shows the same IdDetail fields."""
    with _gurux(scenario) as peer:
        profile = _gurux_profile(peer, "configuration")
        frame = bytes(peer.client.read(profile, 2)[0])
        answer = peer.raw(frame)
        entries = scenario.held("configuration")
    translator = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    translator.comments = True
    translator.security = Security.AUTHENTICATION_ENCRYPTION
    translator.systemTitle = bytes.fromhex(scenario.management["client_system_title"])
    translator.blockCipherKey = bytes.fromhex(scenario.management["ek"])
    translator.authenticationKey = bytes.fromhex(scenario.management["ak"])
    described = translator.pduToXml(GXByteBuffer(answer))
    plaintext = bytes.fromhex(described.split("Decrypt data:")[1].split("\n")[0])
    expected = bytes([0x01, len(entries)]) + b"".join(
        b"\x02\x02\x09\x0c" + cosem_date_time(e.time) + b"\x02\x04\x11" + e.detail[0:1] + b"\x12" + e.detail[1:3]
        + b"\x09\x06" + e.detail[3:9] + b"\x0f" + e.detail[9:10] for e in entries)
    assert plaintext[0:2] == b"\xc4\x01" and plaintext[3] == 0x00  # get-response-normal, data follows
    assert plaintext[4:] == expected
    plain_xml = ET.fromstring(GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML).pduToXml(GXByteBuffer(plaintext)))
    structures = plain_xml.findall(".//Array/Structure")
    assert len(structures) == len(entries) == len(scenario.expected_codes["configuration"])
    for node, entry in zip(structures, entries, strict=True):
        stamp, detail = list(node)
        assert stamp.get("Value") == cosem_date_time(entry.time).hex().upper()
        fields = [f.get("Value") for f in detail]
        assert [f.tag for f in detail] == ["UInt8", "UInt16", "OctetString", "Int8"]
        assert [int(fields[0], 16), int(fields[1], 16), bytes.fromhex(fields[2]), int(fields[3], 16)] == \
            [entry.detail[0], int.from_bytes(entry.detail[1:3], "big"), entry.detail[3:9], entry.detail[9]]
