"""IC 71 Limiter (Blue Book 4.5.9, companion §5.8): attributes from the model, writes and their
refusals (nothing changes, also after a restart), the over / under timing of `evaluate`, and
the emergency profile switching the active threshold."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic9_script_table import ScriptConfigError
from smartmeter.cosem.classes.ic71_limiter import Limiter
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime, Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu import get, set as set_
from smartmeter.dlms.apdu.common import CosemAttributeDescriptor, DataAccessResult
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.client import ClientAssociation
from smartmeter.dlms.server import DlmsServer
from smartmeter.meter.store import MeterStore

LIMITER = Obis.parse("0-0:17.0.0.255").to_bytes()
POWER = Obis.parse("1-0:1.7.0.255").to_bytes()
SCRIPTS = Obis.parse("0-0:10.0.106.255").to_bytes()
DISCONNECTOR = Obis.parse("0-0:96.3.10.255").to_bytes()
KEY = "limiter.0-0:17.0.0.255"
VIENNA = ZoneInfo("Europe/Vienna")
CTX = RequestContext("tester", 16)
TYPE_UNMATCHED, OTHER_REASON = DataAccessResult.TYPE_UNMATCHED, DataAccessResult.OTHER_REASON
READ_WRITE_DENIED = DataAccessResult.READ_WRITE_DENIED


def local(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VIENNA).timestamp()


def date_time(year, month, day, hour, minute, second, deviation=None) -> bytes:
    return axdr.encode_date_time(CosemDateTime(CosemDate(year, month, day), CosemTime(hour, minute, second, 0),
                                               deviation))


NEVER = bytes([0xFF] * 9 + [0x80, 0x00, 0xFF])
# the model's emergency profile: id 7 from 2026-06-01 12:00 local (CEST: 10:00 UTC) for an hour
EMERGENCY_START = local("2026-06-01 12:00:00")
EMERGENCY_RAW = date_time(2026, 6, 1, 12, 0, 0)
BEFORE = local("2026-06-01 11:00:00")

LIMITER_ENTRY = {
    "name": "Limiter Import", "class_id": 71, "obis": "0-0:17.0.0.255",
    "monitored_value": [3, "1-0:1.7.0.255", 2],
    "threshold_normal": 5000, "threshold_emergency": 2000,
    "min_over_threshold_duration": 60, "min_under_threshold_duration": 30,
    "emergency_profile": {"id": 7, "activation_time": "2026-06-01 12:00:00", "duration": 3600},
    "emergency_profile_group_id_list": [1, 7],
    "actions": {"over": ["0-0:10.0.106.255", 1], "under": ["0-0:10.0.106.255", 0]},
    "access": {"tester": {"read": "*", "write": [4, 5, 6, 7, 8, 9, 11]}},
}


def model_doc(change: dict | None = None) -> dict:
    entry = {k: v for k, v in dict(LIMITER_ENTRY, **(change or {})).items() if v is not None}
    return {
        "profile": {"name": "test"},
        "clients": {"tester": {"sap": 16, "interfaces": ["lan"], "mechanism": 0}},
        "object": [
            {"name": "Disconnect control", "class_id": 70, "obis": "0-0:96.3.10.255", "control_mode": 3,
             "access": {"tester": {"read": "*"}}},
            {"name": "Disconnect control script table", "class_id": 9, "obis": "0-0:10.0.106.255",
             "scripts": [{"id": 1, "actions": [{"service": "write", "class_id": 70, "obis": "0-0:96.3.10.255",
                                                "index": 3, "parameter": {"type": "enum", "value": 2}}]},
                         {"id": 2, "actions": [{"service": "write", "class_id": 70, "obis": "0-0:96.3.10.255",
                                                "index": 3, "parameter": {"type": "enum", "value": 1}}]}],
             "access": {"tester": {"read": "*"}}},
            entry,
        ],
    }


class Clock:
    zone = VIENNA

    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


@pytest.fixture
def store(tmp_path):
    s = MeterStore(tmp_path / "meter")
    yield s
    s.close()


@pytest.fixture
def clock():
    return Clock(BEFORE)


def directory(store, clock=None, change: dict | None = None):
    bindings = {}
    if clock is not None:
        bindings["clock"] = clock
    if store is not None:
        bindings["settings"] = store
    return ObjectModel.from_toml(model_doc(change)).instantiate(bindings)


def meter(store, clock=None, change: dict | None = None) -> Limiter:
    return directory(store, clock, change).by_ln[LIMITER][1]


def attributes(limiter: Limiter) -> list[Data]:
    return [limiter.get(i, CTX) for i in range(2, 12)]


def action(script: bytes, selector: int) -> Data:
    return Data.structure([Data.octet_string(script), Data.long_unsigned(selector)])


def profile(profile_id: int, start: bytes, duration: int) -> Data:
    return Data.structure([Data.long_unsigned(profile_id), Data.octet_string(start),
                           Data.double_long_unsigned(duration)])


MODEL_ATTRIBUTES = [
    Data.structure([Data.long_unsigned(3), Data.octet_string(POWER), Data.integer(2)]),
    Data.double_long_unsigned(5000),  # threshold_active: no emergency at 11:00
    Data.double_long_unsigned(5000), Data.double_long_unsigned(2000),
    Data.double_long_unsigned(60), Data.double_long_unsigned(30),
    profile(7, EMERGENCY_RAW, 3600),
    Data.array([Data.long_unsigned(1), Data.long_unsigned(7)]),
    Data.boolean(False),
    Data.structure([action(SCRIPTS, 1), action(SCRIPTS, 0)]),
]


def test_the_initial_attributes_are_the_model_s(store, clock):
    limiter = meter(store, clock)
    assert attributes(limiter) == MODEL_ATTRIBUTES
    assert limiter.get(1, CTX) == Data.octet_string(LIMITER)
    assert limiter.action("over") == (SCRIPTS, 1) and limiter.action("under") == (SCRIPTS, 0)
    with pytest.raises(ValueError):
        limiter.action("sideways")
    assert store.get(KEY) is None


def test_the_defaults(store, clock):
    bare = {k: None for k in ("threshold_normal", "threshold_emergency", "min_over_threshold_duration",
                              "min_under_threshold_duration", "emergency_profile", "emergency_profile_group_id_list",
                              "actions")}
    limiter = meter(store, clock, bare)
    assert attributes(limiter)[1:] == [
        Data.double_long_unsigned(0), Data.double_long_unsigned(0), Data.double_long_unsigned(0),
        Data.double_long_unsigned(0), Data.double_long_unsigned(0), profile(0, NEVER, 0), Data.array([]),
        Data.boolean(False), Data.structure([action(bytes(6), 0), action(bytes(6), 0)])]


def test_every_attribute_survives_encoding(store, clock):
    limiter = meter(store, clock)
    for index in range(1, 12):
        value = limiter.get(index, CTX)
        assert axdr.decode_all(axdr.encode(value)) == value


GOOD_WRITES = [
    (4, Data.double_long_unsigned(7000)),
    (5, Data.double_long_unsigned(0)),
    (6, Data.double_long_unsigned(5)),
    (7, Data.double_long_unsigned(2**32 - 1)),
    (8, profile(9, date_time(2027, 1, 15, 18, 30, 0, -60), 900)),
    (8, profile(0, NEVER, 0)),
    (9, Data.array([Data.long_unsigned(i) for i in range(16)])),
    (9, Data.array([])),
    (11, Data.structure([action(SCRIPTS, 2), action(SCRIPTS, 1)])),
    (11, Data.structure([action(bytes(6), 0), action(SCRIPTS, 0)])),
]


@pytest.mark.parametrize("index, value", GOOD_WRITES)
def test_a_write_is_kept_over_a_restart(store, clock, index, value):
    limiter = meter(store, clock)
    limiter.set(index, value, CTX)
    expected = list(MODEL_ATTRIBUTES)
    expected[index - 2] = value
    if index == 4:
        expected[1] = value  # threshold_active follows threshold_normal outside an emergency
    assert attributes(limiter) == expected
    assert attributes(meter(store, clock)) == expected


def test_the_date_time_type_is_taken_for_the_activation_time(store, clock):
    limiter = meter(store, clock)
    typed = Data(DataType.DATE_TIME, CosemDateTime(CosemDate(2027, 1, 15), CosemTime(18, 30, 0, 0), -60))
    limiter.set(8, Data.structure([Data.long_unsigned(7), typed, Data.double_long_unsigned(60)]), CTX)
    assert limiter.get(8, CTX) == profile(7, date_time(2027, 1, 15, 18, 30, 0, -60), 60)


BAD_WRITES = [
    # (what, attribute, value, expected)
    ("a threshold as long-unsigned", 4, Data.long_unsigned(5000), TYPE_UNMATCHED),
    ("a threshold as double-long", 4, Data.double_long(5000), TYPE_UNMATCHED),
    ("a threshold as float", 5, Data(DataType.FLOAT32, 5000.0), TYPE_UNMATCHED),
    ("a threshold beyond its type", 4, Data(DataType.DOUBLE_LONG_UNSIGNED, 2**32), OTHER_REASON),
    ("a negative threshold", 5, Data(DataType.DOUBLE_LONG_UNSIGNED, -1), OTHER_REASON),
    ("a duration as long-unsigned", 6, Data.long_unsigned(60), TYPE_UNMATCHED),
    ("a duration as integer", 7, Data.integer(60), TYPE_UNMATCHED),
    ("a duration beyond its type", 7, Data(DataType.DOUBLE_LONG_UNSIGNED, 2**32), OTHER_REASON),
    ("an emergency profile of two fields", 8,
     Data.structure([Data.long_unsigned(7), Data.octet_string(EMERGENCY_RAW)]), TYPE_UNMATCHED),
    ("an emergency profile id as unsigned", 8,
     Data.structure([Data.unsigned(7), Data.octet_string(EMERGENCY_RAW), Data.double_long_unsigned(1)]),
     TYPE_UNMATCHED),
    ("an activation time of 11 octets", 8, profile(7, EMERGENCY_RAW[:11], 60), TYPE_UNMATCHED),
    ("an activation time with a year wildcard", 8, profile(7, b"\xff\xff" + EMERGENCY_RAW[2:], 60), OTHER_REASON),
    ("an activation time in month 13", 8, profile(7, EMERGENCY_RAW[:2] + b"\x0d" + EMERGENCY_RAW[3:], 60),
     OTHER_REASON),
    ("an emergency duration as long-unsigned", 8,
     Data.structure([Data.long_unsigned(7), Data.octet_string(EMERGENCY_RAW), Data.long_unsigned(1)]),
     TYPE_UNMATCHED),
    ("17 group ids", 9, Data.array([Data.long_unsigned(i) for i in range(17)]), OTHER_REASON),
    ("a group id as unsigned", 9, Data.array([Data.unsigned(1)]), TYPE_UNMATCHED),
    ("a group id list as a structure", 9, Data.structure([Data.long_unsigned(1)]), TYPE_UNMATCHED),
    ("an action naming script 9", 11, Data.structure([action(SCRIPTS, 9), action(SCRIPTS, 0)]), OTHER_REASON),
    ("an action naming no script table", 11, Data.structure([action(DISCONNECTOR, 1), action(SCRIPTS, 0)]),
     OTHER_REASON),
    ("an action name of 5 octets", 11, Data.structure([action(SCRIPTS[:5], 1), action(SCRIPTS, 0)]),
     TYPE_UNMATCHED),
    ("a selector as unsigned", 11,
     Data.structure([action(SCRIPTS, 1), Data.structure([Data.octet_string(SCRIPTS), Data.unsigned(0)])]),
     TYPE_UNMATCHED),
    ("one action", 11, Data.structure([action(SCRIPTS, 1)]), TYPE_UNMATCHED),
    ("actions as an array", 11, Data.array([action(SCRIPTS, 1), action(SCRIPTS, 0)]), TYPE_UNMATCHED),
    ("monitored_value", 2, MODEL_ATTRIBUTES[0], READ_WRITE_DENIED),
    ("threshold_active", 3, Data.double_long_unsigned(1), READ_WRITE_DENIED),
    ("emergency_profile_active", 10, Data.boolean(True), READ_WRITE_DENIED),
]


@pytest.mark.parametrize("what, index, value, expected", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_a_refused_write_changes_nothing(store, clock, what, index, value, expected):
    limiter = meter(store, clock)
    limiter.set(4, Data.double_long_unsigned(6000), CTX)  # something stored to compare with
    before = attributes(limiter), store.get(KEY)
    with pytest.raises(CosemAccessError) as refused:
        limiter.set(index, value, CTX)
    assert refused.value.result == expected
    assert (attributes(limiter), store.get(KEY)) == before
    assert attributes(meter(store, clock)) == before[0]  # nor after a restart


# -- timing -------------------------------------------------------------------------------------

T0 = local("2026-03-01 08:00:00")  # far from the emergency profile


def run(limiter: Limiter, samples: list[tuple[float, int]]) -> list[tuple[float, str]]:
    """Feed (seconds after T0, watts); what was reported when."""
    return [(at, what) for at, watts in samples for what in limiter.evaluate(T0 + at, watts)]


def test_one_watt_over_held_longer_than_the_minimum_trips_once(store, clock):
    limiter = meter(store, clock)  # threshold 5000 W, 60 s over, 30 s under
    assert run(limiter, [(0, 5001), (30, 5001), (59, 5001), (60, 5001), (61, 5001), (600, 9000)]) == [(60, "over")]
    assert limiter.over


def test_over_held_shorter_than_the_minimum_does_not_trip(store, clock):
    limiter = meter(store, clock)
    # 59 s over, a sample at the threshold (not over), then a new excursion from its own start
    assert run(limiter, [(0, 5001), (59, 5001), (60, 5000), (61, 5001), (120, 5001)]) == []
    assert run(limiter, [(121, 5001)]) == [(121, "over")]


def test_under_threshold_recovery(store, clock):
    limiter = meter(store, clock)
    run(limiter, [(0, 6000), (60, 6000)])
    # back to the threshold (at it counts as under): 30 s later "under"; a dip over restarts the period
    assert run(limiter, [(100, 5000), (120, 100), (125, 5001), (140, 4000), (169, 4000), (170, 4000),
                         (400, 0)]) == [(170, "under")]
    assert not limiter.over
    # the next excursion trips again
    assert run(limiter, [(500, 5001), (560, 5001)]) == [(560, "over")]


def test_minimum_durations_of_zero_act_on_the_first_sample(store, clock):
    limiter = meter(store, clock, {"min_over_threshold_duration": 0, "min_under_threshold_duration": 0})
    assert run(limiter, [(0, 5001), (1, 5000), (2, 5001)]) == [(0, "over"), (1, "under"), (2, "over")]


def test_threshold_zero_switches_the_limiter_off(store, clock):
    limiter = meter(store, clock, {"threshold_normal": 0})
    assert run(limiter, [(0, 10**6), (3600, 10**6)]) == []
    limiter.set(4, Data.double_long_unsigned(5000), CTX)
    assert run(limiter, [(3601, 10**6), (3661, 10**6)]) == [(3601, "threshold_changed"), (3661, "over")]
    # switched off while over: the excursion is forgotten, no "under"
    limiter.set(4, Data.double_long_unsigned(0), CTX)
    assert run(limiter, [(3700, 10**6), (3800, 0)]) == [(3700, "threshold_changed")]
    assert not limiter.over


def test_the_clock_set_back_starts_the_period_again(store, clock):
    limiter = meter(store, clock)
    assert run(limiter, [(100, 5001), (50, 5001), (109, 5001), (110, 5001)]) == [(110, "over")]


def test_a_restart_keeps_the_settings_not_the_excursion(store, clock):
    limiter = meter(store, clock)
    limiter.set(6, Data.double_long_unsigned(10), CTX)
    assert run(limiter, [(0, 5001), (10, 5001)]) == [(10, "over")]
    restarted = meter(store, clock)
    assert not restarted.over
    assert run(restarted, [(20, 5001), (25, 5001), (30, 5001)]) == [(30, "over")]


def test_the_monitored_value_is_a_whole_number(store, clock):
    limiter = meter(store, clock)
    assert limiter.evaluate(T0, Data.double_long_unsigned(5001)) == []
    for value in (True, 5001.5, "5001"):
        with pytest.raises(TypeError):
            limiter.evaluate(T0, value)


# -- emergency profile ----------------------------------------------------------------------------

def test_the_emergency_profile_switches_the_threshold(store, clock):
    limiter = meter(store, clock)
    expected = [
        # (local time, threshold_active, emergency_profile_active)
        ("2026-06-01 11:59:59", 5000, False),
        ("2026-06-01 12:00:00", 2000, True),
        ("2026-06-01 12:59:59", 2000, True),
        ("2026-06-01 13:00:00", 5000, False),
    ]
    for text, threshold, active in expected:
        clock.at = local(text)
        assert limiter.get(3, CTX) == Data.double_long_unsigned(threshold), text
        assert limiter.get(10, CTX) == Data.boolean(active), text
        assert limiter.threshold_active(local(text)) == threshold


def test_3000_w_trips_only_during_the_emergency(store, clock):
    limiter = meter(store, clock)
    start = EMERGENCY_START
    samples = [(start - 60, 3000), (start, 3000), (start + 59, 3000), (start + 60, 3000), (start + 3599, 3000),
               (start + 3600, 3000), (start + 3629, 3000), (start + 3630, 3000)]
    reported = [(at - start, what) for at, watts in samples for what in limiter.evaluate(at, watts)]
    assert reported == [(0, "threshold_changed"), (60, "over"), (3600, "threshold_changed"), (3630, "under")]


@pytest.mark.parametrize("change, active_at_12_30", [
    ({"emergency_profile_group_id_list": [1, 2]}, False),  # the profile's id 7 is not in the group list
    ({"emergency_profile_group_id_list": []}, False),
    ({"emergency_profile": {"id": 7, "activation_time": "2026-06-01 12:00:00", "duration": 0}}, False),
    ({"emergency_profile": {"id": 7, "duration": 3600}}, False),  # activation time not specified
    ({"emergency_profile": {"id": 1, "activation_time": "2026-06-01 12:00:00", "duration": 3600}}, True),
])
def test_when_the_emergency_profile_applies(store, clock, change, active_at_12_30):
    limiter = meter(store, clock, change)
    assert limiter.emergency_active(local("2026-06-01 12:30:00")) is active_at_12_30


def test_an_activation_time_with_deviation_is_that_offset_not_the_zone(store, clock):
    limiter = meter(store, clock)
    # 12:00 at UTC+1 (deviation -60) is 11:00 UTC, 13:00 in Vienna's summer time
    limiter.set(8, profile(7, date_time(2026, 6, 1, 12, 0, 0, -60), 600), CTX)
    assert not limiter.emergency_active(local("2026-06-01 12:59:59"))
    assert limiter.emergency_active(local("2026-06-01 13:00:00"))
    assert not limiter.emergency_active(local("2026-06-01 13:10:00"))


def test_without_a_clock_attributes_3_and_10_are_unavailable(store):
    limiter = meter(store)
    assert limiter.get(4, CTX) == Data.double_long_unsigned(5000)
    for index in (3, 10):
        with pytest.raises(CosemAccessError) as refused:
            limiter.get(index, CTX)
        assert refused.value.result == DataAccessResult.OBJECT_UNAVAILABLE
    # local date-times are then UTC: 12:00 UTC, not 10:00 UTC
    assert not limiter.emergency_active(dt.datetime(2026, 6, 1, 11, 59, tzinfo=dt.timezone.utc).timestamp())
    assert limiter.emergency_active(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp())


def test_without_a_store_the_limiter_is_fixed(clock):
    limiter = meter(None, clock)
    with pytest.raises(CosemAccessError) as refused:
        limiter.set(4, Data.double_long_unsigned(1), CTX)
    assert refused.value.result == READ_WRITE_DENIED
    assert limiter.get(4, CTX) == Data.double_long_unsigned(5000)


@pytest.mark.parametrize("change, message", [
    ({"threshold_type": "visible-string"}, "threshold_type"),
    ({"threshold_type": "float32"}, "threshold_type"),
    ({"threshold_normal": -1}, "threshold_normal"),
    ({"threshold_normal": "5000"}, "whole number"),
    ({"monitored_value": [3, "1-0:1.7.0.255"]}, "monitored_value"),
    ({"monitored_value": [3, "1-0:1.7.0.255", 1]}, "value attribute"),
    ({"monitored_value": [3, "1-0:1.7.x.255", 2]}, "monitored_value"),
    ({"actions": {"over": ["0-0:10.0.106.255", 9]}}, "no script 9"),
    ({"actions": {"over": ["0-0:96.3.10.255", 1]}}, "not a script table"),
    ({"actions": {"sideways": ["0-0:10.0.106.255", 1]}}, "actions is"),
    ({"emergency_profile": {"id": 7, "activation_time": "2026-06-01"}}, "activation_time"),
    ({"emergency_profile_group_id_list": list(range(17))}, "at most 16"),
])
def test_a_malformed_model_entry_stops_the_start(store, clock, change, message):
    with pytest.raises(ScriptConfigError, match=message):
        meter(store, clock, change)


def test_a_stored_limiter_edited_outside_the_meter_stops_the_start(store, clock):
    meter(store, clock).set(4, Data.double_long_unsigned(6000), CTX)
    record = store.get(KEY)
    store.put(KEY, dict(record, actions=[[SCRIPTS.hex(), 9], [SCRIPTS.hex(), 0]]))
    with pytest.raises(ScriptConfigError, match="stored"):
        meter(store, clock)
    store.put(KEY, dict(record, normal="6000"))
    with pytest.raises(ScriptConfigError, match="malformed"):
        meter(store, clock)


def test_over_the_wire(store, clock):
    server = DlmsServer(directory(store, clock), system_title=b"TESTMETR")
    association = server.association(16, "lan")
    client = ClientAssociation()
    client.on_aare(association.handle(client.aarq()))

    def write(index: int, value: Data) -> int:
        request = set_.SetRequestNormal(0xC1, CosemAttributeDescriptor(71, LIMITER, index), None, value)
        return decode_xdlms(association.handle(request.to_bytes())).result

    def read(index: int) -> Data:
        request = get.GetRequestNormal(0xC1, CosemAttributeDescriptor(71, LIMITER, index), None)
        return decode_xdlms(association.handle(request.to_bytes())).result

    assert write(4, Data.double_long_unsigned(4500)) == DataAccessResult.SUCCESS
    assert write(5, Data.long_unsigned(1)) == TYPE_UNMATCHED
    assert write(3, Data.double_long_unsigned(1)) == READ_WRITE_DENIED
    assert read(3) == Data.double_long_unsigned(4500)
    clock.at = EMERGENCY_START
    assert read(3) == Data.double_long_unsigned(2000)
    assert read(10) == Data.boolean(True)
    assert meter(store, clock).get(4, CTX) == Data.double_long_unsigned(4500)
