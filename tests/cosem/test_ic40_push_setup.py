"""IC 40 Push setup v0 (Blue Book 4.4.8; companion §10) on the meter's model, through the server
path: the management client reads and writes, the other clients read; bad input gets its
data-access-result and changes nothing; what was written survives a restart."""
from __future__ import annotations

import pytest

from meter_sessions import SUCCESS, ClientSession
from smartmeter.dlms.client import CounterStore
from push_support import SETUPS
from smartmeter.cosem.data import Data
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import DataAccessResult
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.runtime import Meter, MeterConfig

START = 1780000000.0
INTERVAL_1 = SETUPS[1]
OTHER_REASON, TYPE_UNMATCHED = int(DataAccessResult.OTHER_REASON), int(DataAccessResult.TYPE_UNMATCHED)
DENIED = int(DataAccessResult.READ_WRITE_DENIED)


def entry(class_id: int, obis: str, attribute: int, data_index: int = 0) -> Data:
    return Data.structure([Data.long_unsigned(class_id), Data.octet_string(Obis.parse(obis).to_bytes()),
                           Data.integer(attribute), Data.long_unsigned(data_index)])


def destination(transport: int, text: bytes, message: int = 0) -> Data:
    return Data.structure([Data.enum(transport), Data.octet_string(text), Data.enum(message)])


def window(start: bytes, end: bytes) -> Data:
    return Data.structure([Data.octet_string(start), Data.octet_string(end)])


DAILY_02_00 = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0x80, 0x00, 0xFF])  # every day 02:00
DAILY_04_00 = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 4, 0, 0, 0, 0x80, 0x00, 0xFF])
# twenty different attributes of this meter (an attribute 0 entry among them)
TWENTY = [entry(3, f"1-0:{q}.8.{r}.255", 2) for q in (1, 2, 3, 4) for r in (0, 1, 2)] + \
         [entry(8, "0-0:1.0.0.255", a) for a in (1, 2, 3, 4)] + [entry(1, "0-0:96.1.0.255", 0),
                                                                  entry(1, "0-0:42.0.0.255", 2),
                                                                  entry(7, "1-0:99.1.0.255", 3),
                                                                  entry(3, "1-0:32.7.0.255", 3)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("push-setup")
    meter = Meter(MeterConfig(data_dir=data_dir, backfill_days=0), clock=MeterClock(source=lambda: START))
    holder = {"meter": meter, "counters": {}}
    yield holder
    holder["meter"].close()


def session(site, client: str) -> ClientSession:
    """A new association of `client`, its invocation counters going on from its earlier ones."""
    return ClientSession(site["meter"], client, site["counters"].setdefault(client, CounterStore()))


@pytest.fixture
def management(site):
    return session(site, "management")


def read(session, obis: str, attribute: int) -> Data:
    result, value = session.get(40, obis, attribute)
    assert result == SUCCESS, (obis, attribute, result)
    return value


def test_the_defaults_read_as_the_model_gives_them(management):
    for obis in SETUPS.values():
        objects = read(management, obis, 2).value
        assert 1 <= len(objects) <= 20
        assert all([f.type for f in o.value] == [Data.long_unsigned(0).type, Data.octet_string(b"").type,
                                                 Data.integer(0).type, Data.long_unsigned(0).type] for o in objects)
        assert read(management, obis, 4) == Data.array([])
        assert read(management, obis, 5) == Data.long_unsigned(0)
        assert read(management, obis, 6) == Data.unsigned(3)
        assert read(management, obis, 7) == Data.long_unsigned(30)
    # no destination by default; the consumer push names the H1 port (§10.5)
    assert read(management, INTERVAL_1, 3) == destination(0, b"")
    assert read(management, SETUPS[8], 3) == destination(201, b"0-2:24.6.0.255:FF:00")
    # on alarm: the clock time and the three alarm descriptors (§10.2)
    assert read(management, SETUPS[4], 2) == Data.array([entry(8, "0-0:1.0.0.255", 2), entry(1, "0-0:97.98.20.255", 2),
                                                          entry(1, "0-0:97.98.21.255", 2),
                                                          entry(1, "0-0:97.98.22.255", 2)])


def test_every_client_but_management_reads_only(site):
    readout = session(site, "data_readout")
    before = read(readout, INTERVAL_1, 3)
    assert readout.set(40, INTERVAL_1, 3, destination(0, b"192.0.2.7:4059")) == DENIED
    assert readout.action(40, INTERVAL_1, 1, Data.integer(0)) == DENIED
    assert read(readout, INTERVAL_1, 3) == before
    public = session(site, "public")
    assert public.get(40, INTERVAL_1, 2)[0] == int(DataAccessResult.OBJECT_UNDEFINED)  # invisible to it


def test_management_writes_every_configuration_attribute(management):
    obis = SETUPS[3]
    writes = {2: Data.array(TWENTY), 3: destination(1, b"[2001:db8::17]:4059"),
              4: Data.array([window(DAILY_02_00, DAILY_04_00)]), 5: Data.long_unsigned(120),
              6: Data.unsigned(5), 7: Data.long_unsigned(45)}
    for attribute, value in writes.items():
        assert management.set(40, obis, attribute, value) == SUCCESS, attribute
        assert read(management, obis, attribute) == value
    assert management.set(40, obis, 3, destination(0, b"192.0.2.7:4059")) == SUCCESS
    assert read(management, obis, 3) == destination(0, b"192.0.2.7:4059")
    assert management.set(40, obis, 3, destination(0, b"")) == SUCCESS  # no destination: not sent


@pytest.mark.parametrize("attribute, value, result", [
    # 21 object definitions where 20 fit
    (2, Data.array(TWENTY + [entry(1, "0-0:96.1.1.255", 2)]), OTHER_REASON),
    # an object this meter does not have, an attribute its class does not have
    (2, Data.array([entry(3, "1-0:99.8.0.255", 2)]), OTHER_REASON),
    (2, Data.array([entry(1, "0-0:96.1.0.255", 3)]), OTHER_REASON),
    (2, Data.array([entry(8, "0-0:96.1.0.255", 2)]), OTHER_REASON),  # class inconsistent with the object
    # wrong types
    (2, Data.structure([entry(8, "0-0:1.0.0.255", 2)]), TYPE_UNMATCHED),
    (2, Data.array([Data.structure([Data.unsigned(8), Data.octet_string(bytes(6)), Data.integer(2),
                                    Data.long_unsigned(0)])]), TYPE_UNMATCHED),
    (2, Data.array([Data.structure([Data.long_unsigned(8), Data.octet_string(bytes(6)), Data.integer(2)])]),
     TYPE_UNMATCHED),
    (2, Data.array([Data.structure([Data.long_unsigned(8), Data.octet_string(bytes(5)), Data.integer(2),
                                    Data.long_unsigned(0)])]), TYPE_UNMATCHED),
    # destinations that are not an address of the transport's form (§10.6)
    (3, destination(0, b"meter-hes.example:4059"), OTHER_REASON),
    (3, destination(0, b"192.0.2.7"), OTHER_REASON),
    (3, destination(0, b"192.0.2.7:70000"), OTHER_REASON),
    (3, destination(0, b"[2001:db8::17]:4059"), OTHER_REASON),  # TCP goes to IPv4 (WAN)
    (3, destination(1, b"192.0.2.7:4059"), OTHER_REASON),  # UDP goes to [IPv6] (LAN)
    (3, destination(1, b"[2001:db8::zz]:4059"), OTHER_REASON),
    (3, destination(201, b"0-2:24.6.0.255"), OTHER_REASON),
    (3, destination(1, b"\xff\xfe"), OTHER_REASON),
    (3, destination(2, b"192.0.2.7:4059"), OTHER_REASON),  # a transport the meter has not
    (3, destination(0, b"192.0.2.7:4059", 1), OTHER_REASON),  # a message type other than A-XDR
    (3, Data.structure([Data.unsigned(0), Data.octet_string(b"192.0.2.7:4059"), Data.enum(0)]), TYPE_UNMATCHED),
    (3, Data.structure([Data.enum(0), Data.visible_string("192.0.2.7:4059"), Data.enum(0)]), TYPE_UNMATCHED),
    (3, Data.structure([Data.enum(0), Data.octet_string(b"192.0.2.7:4059")]), TYPE_UNMATCHED),
    (4, Data.array([window(DAILY_02_00, DAILY_04_00[:11])]), TYPE_UNMATCHED),
    (4, Data.array([window(DAILY_02_00, bytes([0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 4, 0, 0, 0, 0x80, 0, 0xFF]))]),
     OTHER_REASON),  # the DST month value: no window the sender can read
    (4, Data.array([window(DAILY_02_00, bytes([0xFF, 0xFF, 13, 1, 0xFF, 4, 0, 0, 0, 0x80, 0, 0xFF]))]),
     OTHER_REASON),  # month 13
    (4, Data.array([window(DAILY_02_00, DAILY_04_00)] * 9), OTHER_REASON),
    (5, Data.unsigned(10), TYPE_UNMATCHED),
    (6, Data.long_unsigned(3), TYPE_UNMATCHED),
    (7, Data.double_long_unsigned(30), TYPE_UNMATCHED),
])
def test_bad_input_is_refused_and_changes_nothing(management, attribute, value, result):
    obis = SETUPS[2]
    before = read(management, obis, attribute)
    assert management.set(40, obis, attribute, value) == result
    assert read(management, obis, attribute) == before


# The consumer push's one destination (companion §10.5; catalog §7): the H1 port's logical name
# 0-2:24.6.0.255, the broadcast link address FF, the first transport CI 00, with ':' or '.' between.
CONSUMER = SETUPS[8]


@pytest.mark.parametrize("text", [b"0-2:24.6.0.255:FF:00", b"0-2:24.6.0.255.FF.00", b"0-2:24.6.0.255:ff:00",
                                  b"0-2:24.6.0.255.FF:00"])
def test_the_consumer_port_is_taken_with_colons_or_dots(management, text):
    assert management.set(40, CONSUMER, 3, destination(201, text)) == SUCCESS
    assert read(management, CONSUMER, 3) == destination(201, text)


@pytest.mark.parametrize("text", [
    b"0-1:24.6.0.255:FF:00",  # the wired M2 port, not the consumer port
    b"0-2:24.6.0.254:FF:00",
    b"0-2:25.9.0.255:FF:00",
    b"0-2:24.6.0.255:01:00",  # an addressed slave: H1 is broadcast only
    b"0-2:24.6.0.255:FE:00",
    b"0-2:24.6.0.255:FF:01",  # not the first transport CI
    b"0-2:24.6.0.255:FF:1F",
    b"0-2:24.6.0.255:FF:00:00",
    b"0-2:24.6.0.255;FF;00",
    b"0-2:24.6.0.256:FF:00",
    b"0-2:24.6.0.255:FF:00\n",
    b" 0-2:24.6.0.255:FF:00",
    b"0-2:24.6.0.255:FFF:00",
    b"[2001:db8::17]:4059",
])
def test_a_wired_mbus_destination_other_than_the_consumer_port_is_refused_and_changes_nothing(management, text):
    before = read(management, CONSUMER, 3)
    assert management.set(40, CONSUMER, 3, destination(201, text)) == OTHER_REASON
    assert read(management, CONSUMER, 3) == before


def test_push_takes_integer_zero_only(management):
    assert management.action(40, INTERVAL_1, 1, Data.integer(1)) == OTHER_REASON
    assert management.action(40, INTERVAL_1, 1, Data.unsigned(0)) == TYPE_UNMATCHED
    assert management.action(40, INTERVAL_1, 1, Data.integer(0)) == SUCCESS  # no destination: not sent


def test_what_was_written_survives_a_restart(site, management):
    obis = SETUPS[1]
    values = {2: Data.array(TWENTY[:3]), 3: destination(1, b"[::1]:4059"),
              4: Data.array([window(DAILY_02_00, DAILY_04_00)]), 5: Data.long_unsigned(7), 6: Data.unsigned(0),
              7: Data.long_unsigned(600)}
    for attribute, value in values.items():
        assert management.set(40, obis, attribute, value) == SUCCESS
    meter = site["meter"]
    data_dir = meter.config.data_dir
    meter.close()
    site["meter"] = Meter(MeterConfig(data_dir=data_dir, backfill_days=0), clock=MeterClock(source=lambda: START))
    again = session(site, "management")
    for attribute, value in values.items():
        assert read(again, obis, attribute) == value


@pytest.mark.parametrize("transport, text", [(0, b"192.0.2.7:4059"), (1, b"[2001:db8::17]:4059")])
def test_the_consumer_push_keeps_the_consumer_port(management, transport, text):
    """§10.5: the consumer information push goes to H1 only; a HES destination is refused."""
    before = read(management, CONSUMER, 3)
    assert management.set(40, CONSUMER, 3, destination(transport, text)) == OTHER_REASON
    assert read(management, CONSUMER, 3) == before


def test_only_the_consumer_push_goes_to_the_consumer_port(management):
    """The HES pushes run in the Data Readout client's context (catalog §7); H1 is the consumer's."""
    before = read(management, INTERVAL_1, 3)
    assert management.set(40, INTERVAL_1, 3, destination(201, b"0-2:24.6.0.255:FF:00")) == OTHER_REASON
    assert read(management, INTERVAL_1, 3) == before
