"""Pushes on a running meter (companion §10, catalog §7), on a clock the test moves, with a sender
that records what the meter hands it (push_support.RecordingSender: no sockets here).

Every push is decrypted with the Data Readout client's keys by our own client code and compared
with what the objects read through that client's association at the same meter time; the
expected times, counts and values come from the scenario (the schedule written, the clock moved,
the cover opened, the descriptor cleared)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from meter_sessions import SUCCESS, Sessions
from push_support import SETUPS, RecordingSender, open_push, reassembled
from meter_site import MeterSite
from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.security.suites import SecurityControl

BERLIN = ZoneInfo("Europe/Berlin")
START = dt.datetime(2026, 6, 9, 6, 0, tzinfo=BERLIN).timestamp()  # on a quarter hour
PUSH_SCRIPTS = Obis.parse("0-0:10.0.108.255").to_bytes()
MAX_PDU = 1224  # companion §3.3.1
UDP_HES = b"[2001:db8::2]:4059"
COMMISSIONING = 246
QUARTERS = [bytes([0xFF, m, 0, 0]) for m in (0, 15, 30, 45)]  # every 15 minutes (type 5, any date)
ANY_DATE = bytes([0xFF] * 5)


def destination(text: bytes = UDP_HES, transport: int = 1) -> Data:
    return Data.structure([Data.enum(transport), Data.octet_string(text), Data.enum(0)])


class Site(MeterSite):
    def __init__(self, data_dir, backfill_days: int = 0) -> None:
        super().__init__(data_dir, START, backfill_days=backfill_days)
        self.sender = RecordingSender(self.meter.clock)
        self.meter.push.sender = self.sender
        self.session = Sessions(self.meter)

    def configure(self, selector: int, text: bytes = UDP_HES, transport: int = 1) -> None:
        assert self.session("management").set(40, SETUPS[selector], 3, destination(text, transport)) == SUCCESS

    def read(self, class_id: int, obis: bytes, attribute: int) -> Data:
        result, value = self.session("data_readout").get(class_id, str(Obis.from_bytes(obis)), attribute)
        assert result == SUCCESS, (class_id, Obis.from_bytes(obis), attribute)
        return value

    def pushed_body(self, submitted) -> Data:
        return open_push(self.meter, submitted.frames)[1].body


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path, backfill_days=1)
    yield s
    s.meter.close()


def plain(value: Data) -> Data:
    """A value as the wire carries it (a profile buffer packed in bulk, decoded)."""
    return axdr.decode_all(axdr.encode(value))


def test_each_default_push_carries_what_its_objects_read(site):
    """Every default setup pushed (scripts 1..7 as a schedule, a monitor or the runtime starts
    them; the consumer push's body built the same way): the body, decrypted, equals the
    attribute reads of the Data Readout client, entry by entry; attribute 0 as GET reads it."""
    site.meter.lan_wan_started("127.0.0.1")  # the IP addresses the installation pushes carry
    for selector in range(1, 8):
        site.configure(selector)
    site.session("data_readout")  # associated before: its events are in the logs the pushes carry
    consumer = site.meter.directory.by_ln[Obis.parse(SETUPS[8]).to_bytes()][1]
    bodies = []
    for selector in range(1, 9):
        if selector < 8:
            before = len(site.sender.submitted)
            assert site.meter.server.run_script(PUSH_SCRIPTS, selector) == 0
            assert len(site.sender.submitted) == before + 1, selector
            body = site.pushed_body(site.sender.submitted[-1])
        else:  # H1 is not sent: its push as it would be
            body = open_push(site.meter, site.meter.push.frames(consumer, site.platform[0]))[1].body
        bodies.append(body)
        entries = site.read(40, Obis.parse(SETUPS[selector]).to_bytes(), 2).value
        assert len(body.value) == len(entries) >= 4
        for value, item in zip(body.value, entries):
            class_id, ln, attribute, _ = (f.value for f in item.value)
            assert plain(value) == plain(site.read(class_id, ln, attribute)), (selector, Obis.from_bytes(ln), attribute)
    # what the defaults are: installation and connectivity carry the serial number and 127.0.0.1
    assert bodies[5].value[1] == Data.octet_string(site.meter.identity.serial.encode())
    assert bodies[5].value[2] == Data.double_long_unsigned(0x7F000001)
    # the consumer push's attribute 0 entries: OBIS code, value, scaler and unit (IC 3 +A)
    plus_a = bodies[7].value[-4]
    assert [v.type for v in plus_a.value] == [DataType.OCTET_STRING, DataType.DOUBLE_LONG_UNSIGNED, DataType.STRUCTURE]
    assert plus_a.value[0] == Data.octet_string(Obis.parse("1-0:1.8.0.255").to_bytes())


def test_the_push_is_protected_for_the_data_readout_client_and_long_ones_go_in_blocks(site):
    """general-glo-ciphering, authenticated and encrypted, the meter's system title, a counter that
    never repeats; a push beyond the PDU in general-block-transfer blocks of at most 1224 octets."""
    management = site.session("management")
    lp1 = Data.structure([Data.long_unsigned(7), Data.octet_string(Obis.parse("1-0:99.1.0.255").to_bytes()),
                          Data.integer(2), Data.long_unsigned(0)])
    clock = Data.structure([Data.long_unsigned(8), Data.octet_string(Obis.parse("0-0:1.0.0.255").to_bytes()),
                            Data.integer(2), Data.long_unsigned(0)])
    assert management.set(40, SETUPS[2], 2, Data.array([clock, lp1])) == SUCCESS
    site.configure(1)
    site.configure(2)
    for selector in (1, 2, 1):
        site.meter.server.run_script(PUSH_SCRIPTS, selector)
    short, long_, again = site.sender.submitted
    assert len(short.frames) == 1 and len(long_.frames) > 1
    assert all(len(f) <= MAX_PDU for f in long_.frames)
    counters = []
    for pushed in (short, long_, again):
        protected, notification = open_push(site.meter, pushed.frames)
        assert protected.system_title == site.meter.identity.system_title
        assert SecurityControl.from_byte(protected.content.security_control) == SecurityControl(1, True, True)
        counters.append(protected.content.invocation_counter)
        assert notification.date_time == site.meter.clock.cosem(site.platform[0])
    assert counters == sorted(set(counters))
    buffer = site.pushed_body(long_).value[1]
    day_of_entries = 96  # one day back-filled, every 15 minutes
    assert len(buffer.value) == day_of_entries
    assert plain(buffer) == plain(site.read(7, Obis.parse("1-0:99.1.0.255").to_bytes(), 2))
    # the blocks carry the protected APDU, nothing else: the last block ends it exactly
    assert GeneralGloCiphering.from_bytes(reassembled(long_.frames)).to_bytes() == reassembled(long_.frames)
    # the setup's sending parameters go to the sender as configured (defaults: 3 retries, 30 s)
    assert (short.transport_service, short.destination, short.retries, short.randomisation,
            short.repetition_delay, short.window) == (1, UDP_HES.decode(), 3, 0, 30, ())


def test_interval_push_every_15_minutes_for_a_day(tmp_path):
    """The HES writes a destination and the push action scheduler's quarter hours: 96 pushes in a
    day, each carrying the clock time of its instant, though the meter ticks every 7 minutes."""
    site = Site(tmp_path)
    try:
        site.configure(1)
        schedule = Data.array(Data.structure([Data.octet_string(t), Data.octet_string(ANY_DATE)]) for t in QUARTERS)
        assert site.session("management").set(22, "0-1:15.0.4.255", 4, schedule) == SUCCESS
        site.run_until(START + 86400, step=420)
        instants = [START + 900 * k for k in range(1, 97)]
        pushed = site.sender.submitted
        assert len(pushed) == 96
        clock_values = [site.pushed_body(p).value[0] for p in pushed]
        assert clock_values == [Data.octet_string(site.meter.clock.cosem(t)) for t in instants]
        # handed over at the tick that reached the instant: never before it, at most one tick after
        assert all(0 <= p.meter_time - t < 420 for p, t in zip(pushed, instants))
    finally:
        site.meter.close()


def acknowledge_alarms(site: Site) -> None:
    """The head-end clears the three alarm descriptors (a clean start: whatever the start raised)."""
    for n in range(3):
        obis = f"0-0:97.98.2{n}.255"
        value = site.read(1, Obis.parse(obis).to_bytes(), 2)
        assert site.session("management").set(1, obis, 2, value) == SUCCESS


def test_alarm_push_repeats_every_10_minutes_until_the_descriptor_is_cleared(tmp_path):
    site = Site(tmp_path)
    try:
        management = site.session("management")
        acknowledge_alarms(site)
        site.configure(4)
        site.run_until(START + 60, step=60)
        assert site.sender.submitted == []
        opened = site.platform[0]
        # meter cover removed: alarm register 2, and the fraud attempt of register 1 its event raises;
        # each descriptor's monitor pushes at once
        site.meter.control({"input": "cover", "value": "open"})
        at_once = len(site.sender.submitted)
        assert at_once >= 1 and {p.meter_time for p in site.sender.submitted} == {opened}
        site.run_until(opened + 35 * 60, step=60)
        repeated = [p.meter_time for p in site.sender.submitted[at_once:]]
        assert repeated == [opened + 600, opened + 1200, opened + 1800]
        descriptors = [site.read(1, Obis.parse(f"0-0:97.98.2{n}.255").to_bytes(), 2) for n in range(3)]
        assert descriptors[1].value != 0
        for pushed in site.sender.submitted[at_once - 1:]:
            assert list(site.pushed_body(pushed).value[1:]) == descriptors
        for n in range(3):  # the head-end clears them
            assert management.set(1, f"0-0:97.98.2{n}.255", 2, descriptors[n]) == SUCCESS
        site.run_until(site.platform[0] + 3600, step=60)
        assert len(site.sender.submitted) == at_once + 3
    finally:
        site.meter.close()


REALARM = 600  # companion §9.1: the alarm push again every 10 minutes
RETRY = 60  # a refused alarm push is built again a minute later, not at every tick


def test_a_refused_alarm_push_is_tried_again_a_minute_later_not_10_minutes(tmp_path):
    """The sender refuses (its queue full) from the cover's opening until 90 s later: the alarm
    push is built again every minute meanwhile, goes out at the first try after, and then repeats
    10 minutes after that one; the meter ticks every second."""
    site = Site(tmp_path)
    try:
        acknowledge_alarms(site)
        site.configure(4)
        site.run_until(START + 60, step=60)
        site.sender.accepting = False
        opened = site.platform[0]
        site.meter.control({"input": "cover", "value": "open"})
        at_once = len(site.sender.submitted)
        assert at_once >= 1 and {p.meter_time for p in site.sender.submitted} == {opened}
        site.run_until(opened + 90, step=1)
        site.sender.accepting = True
        site.run_until(opened + 800, step=1)
        again = [p.meter_time for p in site.sender.submitted[at_once:]]
        first_accepted = opened + 2 * RETRY  # the first try after the sender took pushes again
        assert again == [opened + RETRY, first_accepted, first_accepted + REALARM]
    finally:
        site.meter.close()


def test_an_alarm_push_without_a_destination_goes_out_as_soon_as_one_is_written(tmp_path):
    site = Site(tmp_path)
    try:
        acknowledge_alarms(site)
        site.run_until(START + 60, step=60)
        site.meter.control({"input": "cover", "value": "open"})
        site.run(120, step=1)
        assert site.sender.submitted == []  # nowhere to go
        written = site.platform[0]
        site.configure(4)
        site.run(5, step=1)
        (pushed,) = site.sender.submitted
        assert written <= pushed.meter_time <= written + 1  # at the next tick of a meter ticking every second
    finally:
        site.meter.close()


def test_installation_push_records_the_commissioning_event(site):
    site.meter.lan_wan_started("127.0.0.1")
    site.configure(5, b"192.0.2.10:4059", transport=0)
    site.configure(6, b"192.0.2.10:4059", transport=0)
    site.meter.lan_wan_started("127.0.0.1")  # connectivity: no commissioning
    assert COMMISSIONING not in [e.code for e in site.meter.events.entries("standard")]
    installer = site.session("installation")  # the installation tool on the optical port invokes it
    assert installer.action(40, SETUPS[6], 1, Data.integer(0)) == SUCCESS
    codes = [e.code for e in site.meter.events.entries("standard")]
    assert codes.count(COMMISSIONING) == 1
    connectivity, installation = site.sender.submitted
    assert installation.destination == "192.0.2.10:4059" and installation.transport_service == 0
    body = site.pushed_body(installation).value
    assert body[1] == Data.octet_string(site.meter.identity.serial.encode())
    assert body[2] == Data.double_long_unsigned(0x7F000001) and body[3] == Data.array([])
    # the installation client may push only this setup
    assert installer.action(40, SETUPS[5], 1, Data.integer(0)) != SUCCESS


def test_connectivity_push_at_every_start_of_the_lan_wan_interface(site):
    site.configure(5)
    site.meter.lan_wan_started("::1")
    site.meter.lan_wan_started("127.0.0.1")
    first, second = site.sender.submitted
    assert list(site.pushed_body(first).value[2:]) == [Data.double_long_unsigned(0),
                                                      Data.array([Data.octet_string(bytes(15) + b"\x01")])]
    assert list(site.pushed_body(second).value[2:]) == [Data.double_long_unsigned(0x7F000001), Data.array([])]


def test_power_down_push_is_sent_once_without_retries_before_the_interfaces_stop(site):
    site.configure(7)
    assert site.session("management").set(40, SETUPS[7], 6, Data.unsigned(5)) == SUCCESS
    seen = []
    site.meter.supply_listeners.append(lambda powered: seen.append(len(site.sender.submitted)))
    site.meter.control({"input": "supply", "value": "off"})
    assert seen == [1]  # handed over before the interfaces were told to stop
    (pushed,) = site.sender.submitted
    assert (pushed.retries, pushed.randomisation) == (0, 0)
    body = site.pushed_body(pushed).value
    assert body[2] == site.read(3, Obis.parse("1-0:1.8.0.255").to_bytes(), 2)


def test_no_destination_or_h1_sends_nothing(site):
    for selector in (1, 8):
        assert site.meter.server.run_script(PUSH_SCRIPTS, selector) == 0
    assert site.sender.submitted == []


def test_the_communication_window_goes_to_the_sender_as_written(site):
    daily_02, daily_04 = (bytes([0xFF] * 5 + [h, 0, 0, 0, 0x80, 0x00, 0xFF]) for h in (2, 4))
    window = Data.array([Data.structure([Data.octet_string(daily_02), Data.octet_string(daily_04)])])
    assert site.session("management").set(40, SETUPS[1], 4, window) == SUCCESS
    site.configure(1)
    site.meter.server.run_script(PUSH_SCRIPTS, 1)
    assert site.sender.submitted[0].window == ((daily_02, daily_04),)
