"""Tariffs and billing read, written and refused by gurux-dlms and dlms-cosem over real sockets.

One meter process ("idis" profile: its management client is HLS 5 / suite 0, the one secured
client dlms-cosem can be) runs 60 times faster than real time from Tuesday 2026-03-10 05:55
local time, so the companion calendar's 06:00 switch T1 -> T2 happens within seconds. Its
history comes from real causes only: the load through the control channel (what `smartmeter
sim load` sends: import with a reactive part, export, import again, spanning the switch), then
the management client (gurux) programs the monthly billing schedule 0-0:15.0.0.255 with 14
dated execution times 10 s apart (type 5: several times of day; type 4 would refuse the
wildcard date the schedule holds when the type is written first) - scheduled ends of billing
periods, which the reset lock never blocks - and the load is set to 0 W, so nothing changes
the registers afterwards. A meter whose time runs faster than real time says so in every
date-time it sends (clock status bit 2, "different clock base"): the expected stamps have it.

Every value a peer reads is compared with a path that is not the peer: the meter's legal and
settings stores read as they are (read-only SQLite), the load profile entry at 06:00 (all the
energy before the switch is tariff 1), the rule rate 1 + rate 2 == total to the Wh, the
companion's calendar example and the Austrian public holidays from a public calendar (typed
here; Easter by python-dateutil), and what a writing peer wrote. Tests run in file order: the
reads come first, then the writes (a passive calendar activated, the MDI reset, refused writes).

What a peer cannot do is shown with the other and pinned here, not skipped:
- dlms-cosem 25.1.0's RangeDescriptor raises NotImplementedError for selected values, so the
  column subset by range (clock, counter, +A total/rate 1/rate 2) is read by gurux (asserted
  below); its EntryDescriptor cannot encode itself, so the entry selection is encoded here from
  the Blue Book (as in test_dlms_cosem_client.py); its date_from_bytes / datetime_from_bytes
  turn an octet date into a Python date and raise TypeError for a year wildcard (the special
  days of every year, the every-year season starts), so those are compared as octets.
- gurux-dlms 1.0.203's readRowsByEntry(columns=...) sends the NUMBER of columns as
  to_selected_value where the Blue Book wants the index of the last column (see
  test_event_logs_interop.py): gurux reads a subset starting at column 1, dlms-cosem the subset
  +A total..rate 2 (columns 3..5).
- gurux-dlms 1.0.203 reckons 22 octets of ciphering overhead when it cuts a long Set into
  blocks (GXDLMS.__CIPHERING_HEADER_SIZE), but its general-glo-ciphering APDU has 30 (tag,
  system title 1+8, a three-octet length, security control, invocation counter, tag 12): the
  first block of the 201 special days is 1232 octets where the meter's AARE allowed 1224, and
  the meter answers the exception-response "PDU too long" (asserted below). The write is then
  sent again with gurux's PDU size lowered by those 8 octets, so its blocks are 1224.
- Writes are gurux's (dlms-cosem 25.1.0 has SetRequestNormal only, no Set in blocks, and no
  object model to encode them); a wrong type gurux's object API never produces is sent through
  gurux as raw A-XDR of the attribute.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import time
from dataclasses import dataclass

import pytest
import structlog
from dateutil.easter import easter
from dlms_cosem import a_xdr, cosem, enumerations
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.time import date_from_bytes, datetime_from_bytes, time_from_bytes
from gurux_dlms import GXDate, GXDateTime, GXDLMSExceptionResponse, GXTime
from gurux_dlms.enums import DataType, DateTimeSkips, ErrorCode, ObjectType
from gurux_dlms.objects import (
    GXDLMSActionSchedule, GXDLMSActivityCalendar, GXDLMSData, GXDLMSDayProfile, GXDLMSDayProfileAction,
    GXDLMSObject, GXDLMSProfileGeneric, GXDLMSRegister, GXDLMSRegisterActivation, GXDLMSScriptTable,
    GXDLMSSeasonProfile, GXDLMSSpecialDay, GXDLMSSpecialDaysTable, GXDLMSWeekProfile,
)

from event_log_peers import METER_ZONE, dlms_cosem_management, gurux_lan, plain
from meter_control import control as _control, meter_now as _meter_now, quiet as _quiet
from meter_control import wait_until as _wait_for_meter_time
from meterproc import start_meter
from tariff_billing_peers import (
    BILLING_COLUMNS, QUANTITIES, HeldBilling, cosem_date, cosem_time, held_billing, held_load_profile, held_rates,
    held_setting, held_totals, simulated_date_time,
)

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

Interface = enumerations.CosemInterface
START = dt.datetime(2026, 3, 10, 5, 55, tzinfo=METER_ZONE)  # a Tuesday, no public holiday, CET
SWITCH = dt.datetime(2026, 3, 10, 6, 0, tzinfo=METER_ZONE)  # the companion calendar: T1 -> T2
SPEED = 60
SCHEDULED = 14  # scheduled ends of billing period; the MDI reset test adds the 15th
SPACING = 10  # s of meter time between them
CAPACITY = 15  # billing profile entries (companion §5.6)
T1, T2 = b"T1", b"T2"
TARIFF_SCRIPTS = "0.0.10.0.100.255"
TARIFF_SCRIPTS_LN = bytes((0, 0, 10, 0, 100, 255))
CALENDAR, SPECIAL_DAYS, ENERGY_ACTIVATION = "0.0.13.0.0.255", "0.0.11.0.0.255", "0.0.14.0.1.255"
ACTIVE_TARIFF, BILLING, ACTIVATION_LOG = "0.0.96.14.0.255", "0.0.98.1.0.255", "0.0.99.98.11.255"
MDI_RESET, MONTHLY_BILLING, BILLING_COUNTER = "0.0.10.0.1.255", "0.0.15.0.0.255", "0.0.0.1.0.255"
MAX_PDU = 1224  # the meter's max receive PDU size (companion §3.3.1), as its AARE says
WRAPPER_HEADER = 8  # IEC 62056-47: version, source and destination wport, length
GURUX_MISSED_OVERHEAD = 8  # general-glo-ciphering octets gurux leaves out of a block's size (pinned above)
UNITS = {1: 30, 2: 30, 3: 32, 4: 32}  # OBIS C -> unit (Wh, Wh, varh, varh; Blue Book table 4)
NOT_SPECIFIED = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")  # a date-time with every field not specified
EVERY_YEAR_JAN_1 = bytes.fromhex("FFFF0101FF000000008000FF")  # date-time: every year, 01-01 00:00:00.00
# the companion standard's example calendar (the meter's default): T1 22:00-06:00, T2 06:00-22:00
# every day; day 2 (public holidays, named by the special days table) T1 all day
DEFAULT_CALENDAR = {
    2: b"T1T2",
    3: [[b"S1", EVERY_YEAR_JAN_1, b"W1"]],
    4: [[b"W1", 1, 1, 1, 1, 1, 1, 1]],
    5: [[1, [[cosem_time(0, 0), TARIFF_SCRIPTS_LN, 1], [cosem_time(6, 0), TARIFF_SCRIPTS_LN, 2],
             [cosem_time(22, 0), TARIFF_SCRIPTS_LN, 1]]],
        [2, [[cosem_time(0, 0), TARIFF_SCRIPTS_LN, 1]]]],
}
# the Austrian public holidays on fixed dates
FIXED_HOLIDAYS = {(1, 1), (1, 6), (5, 1), (8, 15), (10, 26), (11, 1), (12, 8), (12, 25), (12, 26)}
# movable ones, as days after Easter Sunday: Easter Monday, Ascension, Whit Monday, Corpus Christi
MOVABLE_AFTER_EASTER = (1, 39, 50, 60)
# a few as a public calendar lists them
KNOWN_HOLIDAYS = {dt.date(2026, 4, 6), dt.date(2026, 5, 14), dt.date(2026, 5, 25), dt.date(2026, 6, 4),
                  dt.date(2025, 4, 21), dt.date(2027, 3, 29), dt.date(2050, 4, 11)}


def _obis(dotted: str) -> cosem.Obis:
    return cosem.Obis(*(int(x) for x in dotted.split(".")))


def _load(meter, power_w: float, pf: float = 1.0) -> None:
    """`smartmeter sim load --power W --pf PF`."""
    _control(meter, input="load", power=power_w, pf=pf, phase=None)


@dataclass
class Scenario:
    meter: object
    counters: itertools.count
    started: int  # meter time (UTC s) when the scenario began
    scheduled: list[int]  # the instants of the scheduled ends of billing period (UTC s)


@contextlib.contextmanager
def _gurux(scenario):
    peer = gurux_lan(scenario.meter, "management", next(scenario.counters))
    _quiet(peer.associate)
    try:
        yield peer
    finally:
        _quiet(peer.close)


@contextlib.contextmanager
def _dlms_cosem(scenario):
    client = dlms_cosem_management(scenario.meter, next(scenario.counters))
    with client.session() as session:
        yield session


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    meter = start_meter(tmp_path_factory.mktemp("tariffs") / "meter", "--profile", "idis",
                        "--start-time", START.isoformat(), "--speed", str(SPEED))
    try:
        counters = itertools.count(1, 1000)  # each client's first counter well above the last one used
        started = int(_meter_now(meter))
        assert started < SWITCH.timestamp() - 4 * SPEED  # the meter is up well before the import must end
        # 1. import with a reactive part, then export, in T1; the export goes on across the switch into
        # T2, then import again. Each lasts two registration ticks at least: a tick registers the time
        # since the previous one at the load set when it runs (a second of real time: 60 s here).
        _load(meter, 3000, 0.8)
        _wait_for_meter_time(meter, SWITCH.timestamp() - 3 * SPEED)
        _load(meter, -2000, 0.9)
        _wait_for_meter_time(meter, SWITCH.timestamp() + 2 * SPEED)
        _load(meter, 1500, 0.8)
        # 2. management programs the monthly billing schedule with dated times, 10 s apart
        peer = gurux_lan(meter, "management", next(counters))
        _quiet(peer.associate)
        schedule = GXDLMSActionSchedule(MONTHLY_BILLING)
        for attribute in (2, 3, 4):
            _quiet(peer.read, schedule, attribute)
        first = (int(_meter_now(meter)) // 60 + 3) * 60  # a whole minute, 2..3 s of real time ahead
        scheduled = [first + SPACING * i for i in range(SCHEDULED)]
        schedule.type_ = 5  # several execution times, different times of day
        schedule.executionTime = [GXDateTime(dt.datetime.fromtimestamp(t, METER_ZONE)) for t in scheduled]
        for attribute in (3, 4):
            assert _quiet(peer.transfer, peer.client.write(schedule, attribute)).error == ErrorCode.OK
        _quiet(peer.close)
        assert _meter_now(meter) < first
        deadline = time.monotonic() + 30
        while len(held_billing(meter.data_dir)) < SCHEDULED:
            assert time.monotonic() < deadline, "the scheduled ends of billing period did not happen"
            time.sleep(0.1)
        # 3. nothing consumes from now on: the registers stay as they are once a tick has passed
        _load(meter, 0)
        _wait_for_meter_time(meter, _meter_now(meter) + 2 * SPEED)
        yield Scenario(meter, counters, started, scheduled)
    finally:
        meter.stop()


# -- the premise: the stores hold what the scenario caused -----------------------------------------


def test_the_store_holds_what_the_scenario_caused(scenario):
    data_dir = scenario.meter.data_dir
    rates, totals = held_rates(data_dir), held_totals(data_dir)
    at_switch = held_load_profile(data_dir, int(SWITCH.timestamp()))  # status, +A, -A, +R, -R at 06:00
    for n, name in enumerate(QUANTITIES):
        assert rates[(name, 0)] == 0, name  # a fresh meter: nothing registered without a rate
        assert rates[(name, 1)] + rates[(name, 2)] == totals[name], name
        # everything up to 06:00 went to T1 and nothing after it
        assert rates[(name, 1)] == at_switch[1 + n], name
        assert rates[(name, 1)] > 0 and rates[(name, 2)] > 0, name  # each quantity registered in both
    billing = held_billing(data_dir)
    assert [(b.time, b.trigger, b.counter) for b in billing] == [
        (t, "scheduled", n) for n, t in enumerate(scenario.scheduled, start=1)]
    for b in billing:
        for n, name in enumerate(QUANTITIES):
            total, rate1, rate2 = b.energy[3 * n:3 * n + 3]
            assert rate1 + rate2 == total and rate1 == rates[(name, 1)], (b, name)
    # during the captures only import ran (1500 W, pf 0.8): +A and +R grow, -A and -R stand still
    for before, after in itertools.pairwise(billing):
        assert after.energy[0] > before.energy[0] and after.energy[6] > before.energy[6]
        assert (after.energy[3], after.energy[9]) == (before.energy[3], before.energy[9])
    # the tariff activation log: T1 from the start, T2 from the switch
    log = held_setting(data_dir, "tariff.activation_log")
    assert [bytes.fromhex(mask) for _, mask in log] == [T1, T2]
    assert log[0][0] <= scenario.started < SWITCH.timestamp() <= log[1][0]


# -- gurux-dlms reads ---------------------------------------------------------------------------


def _gurux_raw(peer, obj, attribute: int):
    """The attribute as gurux decoded the A-XDR (before its object model): plain Python values."""
    reply = _quiet(peer.transfer, peer.client.read(obj, attribute))
    assert reply.error == ErrorCode.OK, (obj.logicalName, attribute, reply.error)
    value = plain(reply.value) if not isinstance(reply.value, str) else reply.value
    peer.client.updateValue(obj, attribute, reply.value)  # typed in place, into gurux's object model
    return value


def _gurux_time(value: GXDateTime) -> tuple[int, int, int]:
    return value.value.hour, value.value.minute, value.value.second


def test_gurux_reads_the_activity_calendar(scenario):
    with _gurux(scenario) as peer:
        calendar = GXDLMSActivityCalendar(CALENDAR)
        raw = {a: _gurux_raw(peer, calendar, a) for a in range(2, 11)}
    assert {a: raw[a] for a in (2, 3, 4, 5)} == DEFAULT_CALENDAR
    # no passive calendar yet: gurux gives an empty array as None (dlms-cosem as [], below)
    assert raw[6] == b"" and raw[7] is raw[8] is raw[9] is None
    assert raw[10] == NOT_SPECIFIED  # no activation time
    # gurux's own reading of the same
    assert calendar.calendarNameActive == "T1T2"
    (season,) = calendar.seasonProfileActive
    assert (bytes(season.name), bytes(season.weekName)) == (b"S1", b"W1")
    assert season.start.skip & DateTimeSkips.YEAR and (season.start.value.month, season.start.value.day) == (1, 1)
    (week,) = calendar.weekProfileTableActive
    assert [week.monday, week.tuesday, week.wednesday, week.thursday, week.friday, week.saturday,
            week.sunday] == [1] * 7
    days = {d.dayId: [(_gurux_time(a.startTime), a.scriptLogicalName, a.scriptSelector) for a in d.daySchedules]
            for d in calendar.dayProfileTableActive}
    assert days == {1: [((0, 0, 0), TARIFF_SCRIPTS, 1), ((6, 0, 0), TARIFF_SCRIPTS, 2),
                        ((22, 0, 0), TARIFF_SCRIPTS, 1)],
                    2: [((0, 0, 0), TARIFF_SCRIPTS, 1)]}


def _expected_holidays() -> set[tuple[int | None, int, int]]:
    movable = {(d.year, d.month, d.day) for year in range(2025, 2051)
               for d in (easter(year) + dt.timedelta(days=after) for after in MOVABLE_AFTER_EASTER)}
    return {(None, m, d) for m, d in FIXED_HOLIDAYS} | movable


def _check_special_days(entries: list[list]) -> None:
    """[index, date octets, day_id] entries: the Austrian holidays, every one day profile 2."""
    assert len(entries) == 113
    assert sorted(e[0] for e in entries) == list(range(1, 114))
    dates = set()
    for _, raw, day_id in entries:
        assert day_id == 2 and len(raw) == 5
        year, month, day, weekday = int.from_bytes(raw[:2], "big"), raw[2], raw[3], raw[4]
        dates.add((None if year == 0xFFFF else year, month, day))
        if year != 0xFFFF:  # the weekday: not specified, or the date's own
            assert weekday in (0xFF, dt.date(year, month, day).isoweekday()), raw
        else:
            assert weekday == 0xFF, raw
    assert dates == _expected_holidays()
    assert {(d.year, d.month, d.day) for d in KNOWN_HOLIDAYS} <= dates
    assert (None, 12, 25) in dates and (2026, 12, 25) not in dates  # Christmas once, every year


def test_gurux_reads_the_special_days(scenario):
    with _gurux(scenario) as peer:
        table = GXDLMSSpecialDaysTable(SPECIAL_DAYS)
        raw = _gurux_raw(peer, table, 2)
    _check_special_days(raw)
    # gurux's own reading: a year wildcard is a skipped year, Easter Monday 2026 a date
    by_date = {}
    for entry in table.entries:
        assert isinstance(entry.date, GXDate)
        key = (None if entry.date.skip & DateTimeSkips.YEAR else entry.date.value.year, entry.date.value.month,
               entry.date.value.day)
        by_date[key] = entry.dayId
    assert by_date[(2026, 4, 6)] == 2 and by_date[(None, 12, 25)] == 2
    assert set(by_date) == _expected_holidays()


def _check_registers(values: dict[tuple[int, int], int], scenario) -> None:
    """(C, E) -> value: equal to the stores, and the rates add up to each total to the Wh."""
    rates, totals = held_rates(scenario.meter.data_dir), held_totals(scenario.meter.data_dir)
    for c, name in enumerate(QUANTITIES, start=1):
        assert values[(c, 0)] == totals[name]
        assert values[(c, 1)] + values[(c, 2)] == values[(c, 0)]
        assert (values[(c, 1)], values[(c, 2)]) == (rates[(name, 1)], rates[(name, 2)])


def test_gurux_reads_the_rate_registers_and_totals(scenario):
    values = {}
    with _gurux(scenario) as peer:
        for c, e in itertools.product((1, 2, 3, 4), (0, 1, 2)):
            register = GXDLMSRegister(f"1.0.{c}.8.{e}.255")
            values[(c, e)] = _gurux_raw(peer, register, 2)
            assert _gurux_raw(peer, register, 3) == [0, UNITS[c]]
            assert (register.scaler, int(register.unit)) == (1.0, UNITS[c])  # gurux shows 10^scaler
    _check_registers(values, scenario)


def _held_active_tariff(scenario) -> bytes:
    return bytes.fromhex(held_setting(scenario.meter.data_dir, "register_activation.0-0:14.0.1.255")["active"])


def test_gurux_reads_the_active_tariff_and_the_activation_log(scenario):
    with _gurux(scenario) as peer:
        active = _gurux_raw(peer, GXDLMSData(ACTIVE_TARIFF), 2)
        log = GXDLMSProfileGeneric(ACTIVATION_LOG)
        _gurux_raw(peer, log, 3)
        rows = _gurux_raw(peer, log, 2)
        held = held_setting(scenario.meter.data_dir, "tariff.activation_log")
    assert active == _held_active_tariff(scenario)
    assert rows == [[simulated_date_time(t), bytes.fromhex(mask)] for t, mask in held]
    assert [int(r[0].value.timestamp()) for r in log.buffer] == [t for t, _ in held]


def _gurux_billing_rows(profile: GXDLMSProfileGeneric) -> list[list]:
    """gurux's typed rows (its object model: date-times as GXDateTime), each value as
    _as_gurux_typed makes the held columns."""
    return [[_Instant.of(v) if isinstance(v, GXDateTime) else plain(v) for v in row] for row in profile.buffer]


def _as_gurux_typed(columns: list) -> list:
    return [_Instant.of_octets(v) if isinstance(v, bytes) else v for v in columns]


@dataclass(frozen=True)
class _Instant:
    """A date-time as an instant (UTC s), its deviation from UTC (minutes) and its clock status;
    None for a date-time with every field not specified."""

    utc: int | None
    offset: int | None = None
    status: int | None = None

    @classmethod
    def of(cls, value: GXDateTime) -> "_Instant":
        if value.skip & DateTimeSkips.YEAR and value.skip & DateTimeSkips.HOUR:
            return cls(None)
        return cls(int(value.value.timestamp()), int(value.value.utcoffset().total_seconds()) // 60, int(value.status))

    @classmethod
    def of_octets(cls, octets: bytes) -> "_Instant":
        if octets == NOT_SPECIFIED:
            return cls(None)
        when, _ = datetime_from_bytes(octets)
        return cls(int(when.timestamp()), int(when.utcoffset().total_seconds()) // 60, octets[11])


def _gurux_billing_profile(peer) -> GXDLMSProfileGeneric:
    profile = GXDLMSProfileGeneric(BILLING)
    columns = _gurux_raw(peer, profile, 3)
    assert [(c, ".".join(map(str, ln)), a) for c, ln, a, _ in columns] == list(BILLING_COLUMNS)
    assert all(index == 0 for *_, index in columns)
    return profile


def test_gurux_reads_the_billing_profile_whole(scenario):
    with _gurux(scenario) as peer:
        profile = _gurux_billing_profile(peer)
        rows = _gurux_raw(peer, profile, 2)
        held = held_billing(scenario.meter.data_dir)
        in_use = _gurux_raw(peer, profile, 7)
        capacity = _gurux_raw(peer, profile, 8)
    assert rows == [b.columns() for b in held]
    assert _gurux_billing_rows(profile) == [_as_gurux_typed(b.columns()) for b in held]
    assert in_use == len(held) >= SCHEDULED and capacity == CAPACITY


def _window(scenario) -> tuple[int, int]:
    """The 3rd to 6th scheduled capture, bounds included."""
    return scenario.scheduled[2], scenario.scheduled[5]


def test_gurux_reads_the_billing_profile_by_range_with_selected_columns(scenario):
    first, last = _window(scenario)
    with _gurux(scenario) as peer:
        profile = _gurux_billing_profile(peer)
        start = dt.datetime.fromtimestamp(first, METER_ZONE)
        end = dt.datetime.fromtimestamp(last, METER_ZONE)
        whole = plain(_quiet(peer.transfer, peer.client.readRowsByRange(profile, start, end)).value)
        # clock, counter, +A total, +A rate 1, +A rate 2
        subset = profile.captureObjects[:5]
        reply = _quiet(peer.transfer, peer.client.readRowsByRange(profile, start, end, subset))
        assert reply.error == ErrorCode.OK
        held = held_billing(scenario.meter.data_dir)
    inside = [b for b in held if first <= b.time <= last]
    assert [b.counter for b in inside] == [3, 4, 5, 6]
    assert whole == [b.columns() for b in inside]
    assert plain(reply.value) == [b.columns()[:5] for b in inside]


def test_gurux_reads_the_billing_profile_by_entry(scenario):
    with _gurux(scenario) as peer:
        profile = _gurux_billing_profile(peer)
        _quiet(peer.rows_by_entry, profile, 2, 3)  # entries 2..4, typed into profile.buffer
        rows = _gurux_billing_rows(profile)
        # columns 1..2 (clock, counter): a subset from column 1, which gurux encodes as the Blue Book says
        reply = _quiet(peer.transfer, peer.client.readRowsByEntry(profile, 2, 3, profile.captureObjects[:2]))
        held = held_billing(scenario.meter.data_dir)
    assert rows == [_as_gurux_typed(b.columns()) for b in held[1:4]]
    assert plain(reply.value) == [b.columns()[:2] for b in held[1:4]]


# -- dlms-cosem reads ---------------------------------------------------------------------------


def _decode(raw: bytes):
    decoder = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(attributes=[a_xdr.Sequence(attribute_name="data")]))
    return plain(decoder.decode(raw)["data"])


def _attribute(interface, dotted: str, attribute: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(interface=interface, instance=_obis(dotted), attribute=attribute)


def test_dlms_cosem_reads_the_activity_calendar(scenario):
    with _dlms_cosem(scenario) as session:
        raw = {a: _decode(session.get(_attribute(Interface.ACTIVITY_CALENDAR, CALENDAR, a))) for a in range(2, 11)}
    assert {a: raw[a] for a in (2, 3, 4, 5)} == DEFAULT_CALENDAR
    assert raw[6] == b"" and raw[7] == raw[8] == raw[9] == []
    assert raw[10] == NOT_SPECIFIED
    # dlms-cosem's own reading of the switch times; a year wildcard is no Python date (pinned)
    assert [time_from_bytes(a[0]) for a in raw[5][0][1]] == [dt.time(0), dt.time(6), dt.time(22)]
    with pytest.raises(TypeError):
        datetime_from_bytes(raw[3][0][1])


def test_dlms_cosem_reads_the_special_days(scenario):
    with _dlms_cosem(scenario) as session:
        entries = _decode(session.get(_attribute(Interface.SPECIAL_DAYS_TABLE, SPECIAL_DAYS, 2)))
    _check_special_days(entries)
    dated = {date_from_bytes(raw) for _, raw, _ in entries if raw[:2] != b"\xff\xff"}
    assert KNOWN_HOLIDAYS <= dated
    christmas = next(raw for _, raw, _ in entries if raw[2:4] == bytes((12, 25)))
    assert christmas == cosem_date(None, 12, 25)
    with pytest.raises(TypeError):
        date_from_bytes(christmas)  # dlms-cosem cannot represent a year wildcard as a date


def test_dlms_cosem_reads_the_rate_registers_and_totals(scenario):
    values = {}
    with _dlms_cosem(scenario) as session:
        for c, e in itertools.product((1, 2, 3, 4), (0, 1, 2)):
            values[(c, e)] = _decode(session.get(_attribute(Interface.REGISTER, f"1.0.{c}.8.{e}.255", 2)))
            assert _decode(session.get(_attribute(Interface.REGISTER, f"1.0.{c}.8.{e}.255", 3))) == [0, UNITS[c]]
    _check_registers(values, scenario)


def test_dlms_cosem_reads_the_active_tariff_and_the_activation_log(scenario):
    with _dlms_cosem(scenario) as session:
        active = _decode(session.get(_attribute(Interface.DATA, ACTIVE_TARIFF, 2)))
        rows = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, ACTIVATION_LOG, 2)))
        held = held_setting(scenario.meter.data_dir, "tariff.activation_log")
    assert active == _held_active_tariff(scenario)
    assert rows == [[simulated_date_time(t), bytes.fromhex(mask)] for t, mask in held]
    assert [int(datetime_from_bytes(r[0])[0].timestamp()) for r in rows] == [t for t, _ in held]


def _check_dlms_cosem_rows(rows: list[list], held: list[HeldBilling]) -> None:
    assert rows == [b.columns() for b in held]
    assert [int(datetime_from_bytes(r[0])[0].timestamp()) for r in rows] == [b.time for b in held]


def test_dlms_cosem_reads_the_billing_profile_whole(scenario):
    with _dlms_cosem(scenario) as session:
        columns = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 3)))
        rows = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 2)))
        held = held_billing(scenario.meter.data_dir)
        in_use = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 7)))
        capacity = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 8)))
    assert columns == [[c, bytes(int(x) for x in ln.split(".")), a, 0] for c, ln, a in BILLING_COLUMNS]
    _check_dlms_cosem_rows(rows, held)
    assert in_use == len(held) and capacity == CAPACITY


def test_dlms_cosem_reads_the_billing_profile_by_range(scenario):
    first, last = _window(scenario)
    clock = CaptureObject(cosem_attribute=_attribute(Interface.CLOCK, "0.0.1.0.0.255", 2), data_index=0)
    # in UTC (gurux sends local time): the meter reads the deviation either way
    selection = RangeDescriptor(restricting_object=clock, from_value=dt.datetime.fromtimestamp(first, dt.timezone.utc),
                                to_value=dt.datetime.fromtimestamp(last, dt.timezone.utc))
    with _dlms_cosem(scenario) as session:
        rows = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 2), access_descriptor=selection))
        held = held_billing(scenario.meter.data_dir)
    inside = [b for b in held if first <= b.time <= last]
    assert [b.counter for b in inside] == [3, 4, 5, 6]
    _check_dlms_cosem_rows(rows, inside)
    with pytest.raises(NotImplementedError):  # no column subset by range (gurux reads it, above)
        RangeDescriptor(restricting_object=clock, from_value=selection.from_value, to_value=selection.to_value,
                        selected_values=[clock]).to_bytes()


@dataclass
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


def test_dlms_cosem_reads_the_billing_profile_by_entry(scenario):
    billing = _attribute(Interface.PROFILE_GENERIC, BILLING, 2)
    with _dlms_cosem(scenario) as session:
        rows = _decode(session.get(billing, access_descriptor=EntryDescriptor(2, 4)))
        subset = _decode(session.get(billing, access_descriptor=EntryDescriptor(2, 4, 3, 5)))  # +A total..rate 2
        held = held_billing(scenario.meter.data_dir)
    _check_dlms_cosem_rows(rows, held[1:4])
    assert subset == [list(b.energy[0:3]) for b in held[1:4]]


# -- the tariff activation log's times --------------------------------------------------------------


def test_the_activation_log_stamps_the_switch_at_its_switching_time(scenario):
    """The legal part split the energy at 06:00:00 (the load profile entry of 06:00 is all T1),
    so the log must say the tariff changed then, not when the meter's registration tick that
    crossed 06:00 ended (up to a tick of meter time later: a minute at speed 60)."""
    with _dlms_cosem(scenario) as session:
        rows = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, ACTIVATION_LOG, 2)))
    assert rows[1] == [simulated_date_time(int(SWITCH.timestamp())), T2]


# -- writes: a passive calendar, activated ----------------------------------------------------------

PASSIVE_NAME = b"SUMWIN26"
SEASON_SKIPS = DateTimeSkips.YEAR | DateTimeSkips.DAY_OF_WEEK | DateTimeSkips.DEVITATION | DateTimeSkips.STATUS


def _season(name: bytes, month: int, week: bytes) -> GXDLMSSeasonProfile:
    start = GXDateTime(dt.datetime(2026, month, 1))
    start.skip = SEASON_SKIPS  # every year, from the 1st of `month`
    return GXDLMSSeasonProfile(name, start, week)


def _week(name: bytes, days: list[int]) -> GXDLMSWeekProfile:
    week = GXDLMSWeekProfile()
    week.name = name
    (week.monday, week.tuesday, week.wednesday, week.thursday, week.friday, week.saturday, week.sunday) = days
    return week


def _day(day_id: int, switches: list[tuple[int, int, int]], script: str = TARIFF_SCRIPTS) -> GXDLMSDayProfile:
    day = GXDLMSDayProfile()
    day.dayId = day_id
    day.daySchedules = [GXDLMSDayProfileAction(GXTime(dt.datetime(2000, 1, 1, h, m)), script, selector)
                        for h, m, selector in switches]
    return day


SUMMER_WEEK, WINTER_WEEK = [1, 1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1, 2]
DAY_1 = [(0, 0, 1), (8, 0, 2), (20, 0, 1)]  # T2 08:00-20:00
DAY_2 = [(0, 0, 1)]  # T1 all day
# the written calendar as the Blue Book encodes it (IC 20 attributes 6..9)
WRITTEN = {
    6: PASSIVE_NAME,
    7: [[b"SUMMER", bytes.fromhex("FFFF0401FF000000008000FF"), b"WS"],
        [b"WINTER", bytes.fromhex("FFFF0A01FF000000008000FF"), b"WW"]],
    8: [[b"WS", *SUMMER_WEEK], [b"WW", *WINTER_WEEK]],
    9: [[1, [[cosem_time(h, m), TARIFF_SCRIPTS_LN, s] for h, m, s in DAY_1]],
        [2, [[cosem_time(h, m), TARIFF_SCRIPTS_LN, s] for h, m, s in DAY_2]]],
}


def _passive_calendar() -> GXDLMSActivityCalendar:
    calendar = GXDLMSActivityCalendar(CALENDAR)
    calendar.calendarNamePassive = PASSIVE_NAME.decode()
    calendar.seasonProfilePassive = [_season(b"SUMMER", 4, b"WS"), _season(b"WINTER", 10, b"WW")]
    calendar.weekProfileTablePassive = [_week(b"WS", SUMMER_WEEK), _week(b"WW", WINTER_WEEK)]
    calendar.dayProfileTablePassive = [_day(1, DAY_1), _day(2, DAY_2)]
    return calendar


def _wait_for_tariff(peer, tariff: bytes) -> bytes:
    """The active tariff once it is `tariff` (the meter applies a new calendar at its next tick)."""
    deadline = time.monotonic() + 10
    while (active := _gurux_raw(peer, GXDLMSData(ACTIVE_TARIFF), 2)) != tariff and time.monotonic() < deadline:
        time.sleep(0.1)
    return active


def test_gurux_writes_and_activates_a_passive_calendar_both_read_it_back(scenario):
    calendar = _passive_calendar()
    with _gurux(scenario) as peer:
        for attribute in (6, 7, 8, 9):
            assert _quiet(peer.transfer, peer.client.write(calendar, attribute)).error == ErrorCode.OK, attribute
        passive = {a: _gurux_raw(peer, GXDLMSActivityCalendar(CALENDAR), a) for a in (6, 7, 8, 9)}
        tariff_before = _gurux_raw(peer, GXDLMSData(ACTIVE_TARIFF), 2)
        assert _quiet(peer.transfer, calendar.activatePassiveCalendar(peer.client)).error == ErrorCode.OK
        read_back = GXDLMSActivityCalendar(CALENDAR)
        active = {a: _gurux_raw(peer, read_back, a) for a in (2, 3, 4, 5)}
        # 2026-03-10 is a Tuesday of the winter season (before 04-01: the season of the year before), whose
        # day 1 has T2 from 08:00: before that, T1 - where the companion calendar had T2 from 06:00
        tariff = _wait_for_tariff(peer, T1)
        local = dt.datetime.fromtimestamp(_meter_now(scenario.meter), METER_ZONE)
    assert (local.date(), local.hour) in ((SWITCH.date(), 6), (SWITCH.date(), 7))
    assert (tariff_before, tariff) == (T2, T1)
    assert passive == WRITTEN
    assert active == {a - 4: v for a, v in WRITTEN.items()}  # 6..9 became 2..5
    assert _held_active_tariff(scenario) == T1
    # gurux's own reading of the active calendar: what it wrote
    assert read_back.calendarNameActive == PASSIVE_NAME.decode()
    assert [(bytes(s.name), s.start.value.month, s.start.value.day, bool(s.start.skip & DateTimeSkips.YEAR))
            for s in read_back.seasonProfileActive] == [(b"SUMMER", 4, 1, True), (b"WINTER", 10, 1, True)]
    assert [[d.dayId, [(_gurux_time(a.startTime), a.scriptSelector) for a in d.daySchedules]]
            for d in read_back.dayProfileTableActive] == [[1, [((h, m, 0), s) for h, m, s in DAY_1]],
                                                          [2, [((h, m, 0), s) for h, m, s in DAY_2]]]
    with _dlms_cosem(scenario) as session:
        by_dlms_cosem = {a: _decode(session.get(_attribute(Interface.ACTIVITY_CALENDAR, CALENDAR, a)))
                         for a in range(2, 10)}
    assert by_dlms_cosem == {**{a - 4: v for a, v in WRITTEN.items()}, **WRITTEN}  # active and passive alike
    assert [time_from_bytes(a[0]) for a in by_dlms_cosem[5][0][1]] == [dt.time(0), dt.time(8), dt.time(20)]


# -- writes: the end of a billing period by the MDI reset script -----------------------------------


def _gurux_registers(peer) -> list[int]:
    """The 12 energy columns of a billing row: per quantity total, rate 1, rate 2."""
    return [_gurux_raw(peer, GXDLMSRegister(f"1.0.{c}.8.{e}.255"), 2) for c in (1, 2, 3, 4) for e in (0, 1, 2)]


def test_gurux_ends_the_billing_period_and_the_reset_lock_refuses_a_second(scenario):
    held_before = held_billing(scenario.meter.data_dir)
    assert len(held_before) == SCHEDULED  # this is the first remote reset
    script = GXDLMSScriptTable(MDI_RESET)
    with _gurux(scenario) as peer:
        counter_before = _gurux_raw(peer, GXDLMSData(BILLING_COUNTER), 2)
        registers_before = _gurux_registers(peer)
        executed = _quiet(peer.transfer, peer.client.method(script, 1, 1, DataType.UINT16))
        registers_after = _gurux_registers(peer)
        counter_after = _gurux_raw(peer, GXDLMSData(BILLING_COUNTER), 2)
        profile = _gurux_billing_profile(peer)
        in_use = _gurux_raw(peer, profile, 7)
        last_row = plain(_quiet(peer.transfer, peer.client.readRowsByEntry(profile, in_use, 1)).value)
        again = _quiet(peer.transfer, peer.client.method(script, 1, 1, DataType.UINT16))
        in_use_after_refusal = _gurux_raw(peer, profile, 7)
        counter_after_refusal = _gurux_raw(peer, GXDLMSData(BILLING_COUNTER), 2)
    held = held_billing(scenario.meter.data_dir)
    assert executed.error == ErrorCode.OK
    assert registers_before == registers_after  # nothing consumed in between
    assert counter_before == held_before[-1].counter == SCHEDULED and counter_after == counter_before + 1
    assert in_use == len(held_before) + 1 == len(held)
    new = held[-1]
    assert (new.counter, new.trigger) == (counter_before + 1, "remote")
    assert scenario.scheduled[-1] < new.time <= _meter_now(scenario.meter)
    assert list(new.energy) == registers_before
    assert last_row == [new.columns()]
    assert last_row[0][2:14] == registers_before
    # at once: the 15-minute reset lock answers other-reason and adds nothing
    assert again.error == ErrorCode.OTHER_REASON
    assert in_use_after_refusal == in_use and counter_after_refusal == counter_after
    assert held_billing(scenario.meter.data_dir) == held
    # both peers read the full profile (15 entries) equal to the store
    with _dlms_cosem(scenario) as session:
        rows = _decode(session.get(_attribute(Interface.PROFILE_GENERIC, BILLING, 2)))
    assert len(held) == CAPACITY
    _check_dlms_cosem_rows(rows, held)


# -- bad input: the meter answers what its classes define and keeps the old value -------------------


class _RawAttribute(GXDLMSObject):
    """An attribute value sent as it is (A-XDR with its tag), through gurux's write request: for a
    wrong type gurux's object model never produces."""

    def __init__(self, object_type: ObjectType, logical_name: str, encoded: bytes) -> None:
        super().__init__(object_type, logical_name, 0)
        self.encoded = encoded

    def getValue(self, settings, e):
        return self.encoded

    def getDataType(self, index):
        return DataType.ARRAY if self.encoded[0] == DataType.ARRAY else DataType.STRUCTURE


def _special_days(count: int) -> GXDLMSSpecialDaysTable:
    table = GXDLMSSpecialDaysTable(SPECIAL_DAYS)
    table.entries = []
    for n in range(count):
        entry = GXDLMSSpecialDay()
        entry.index, entry.dayId = n + 1, 2
        entry.date = GXDate(dt.datetime(2030, 1, 1) + dt.timedelta(days=n))
        table.entries.append(entry)
    return table


def _activation_with_index_9() -> GXDLMSRegisterActivation:
    activation = GXDLMSRegisterActivation(ENERGY_ACTIVATION)
    activation.maskList = [(b"T1", [1, 3, 5, 7]), (b"T2", [2, 4, 6, 9])]  # 9: there are 8 registers
    return activation


def _calendar_with(attribute: int, value) -> GXDLMSActivityCalendar:
    calendar = GXDLMSActivityCalendar(CALENDAR)
    setattr(calendar, {7: "seasonProfilePassive", 9: "dayProfileTablePassive"}[attribute], value)
    return calendar


# a week profile of seven elements instead of name + seven day_ids
SHORT_WEEK = bytes([DataType.ARRAY, 1, DataType.STRUCTURE, 7, DataType.OCTET_STRING, 2]) + b"WX" + \
    b"".join(bytes([DataType.UINT8, 1]) for _ in range(6))

BAD_WRITES = {
    # case: (what gurux writes, attribute, class and logical name to read it back with, the answer)
    "unsorted switch times": (lambda: _calendar_with(9, [_day(1, [(0, 0, 1), (20, 0, 1), (8, 0, 2)])]), 9,
                              ObjectType.ACTIVITY_CALENDAR, CALENDAR, ErrorCode.OTHER_REASON),
    "two seasons starting the same day": (
        lambda: _calendar_with(7, [_season(b"A", 4, b"WS"), _season(b"B", 4, b"WW")]), 7,
        ObjectType.ACTIVITY_CALENDAR, CALENDAR, ErrorCode.OTHER_REASON),
    "201 special days": (lambda: _special_days(201), 2, ObjectType.SPECIAL_DAYS_TABLE, SPECIAL_DAYS,
                         ErrorCode.OTHER_REASON),
    "a mask naming register 9 of 8": (_activation_with_index_9, 3, ObjectType.REGISTER_ACTIVATION,
                                      ENERGY_ACTIVATION, ErrorCode.OTHER_REASON),
    "a day profile naming script 3": (lambda: _calendar_with(9, [_day(1, [(0, 0, 1), (8, 0, 3)])]), 9,
                                      ObjectType.ACTIVITY_CALENDAR, CALENDAR, ErrorCode.OTHER_REASON),
    "a week profile of seven elements": (
        lambda: _RawAttribute(ObjectType.ACTIVITY_CALENDAR, CALENDAR, SHORT_WEEK), 8,
        ObjectType.ACTIVITY_CALENDAR, CALENDAR, ErrorCode.UNMATCHED_TYPE),
}


@pytest.mark.parametrize("case", BAD_WRITES)
def test_a_bad_write_is_refused_and_changes_nothing(scenario, case):
    make, attribute, object_type, logical_name, answer = BAD_WRITES[case]
    reader = {ObjectType.ACTIVITY_CALENDAR: GXDLMSActivityCalendar,
              ObjectType.SPECIAL_DAYS_TABLE: GXDLMSSpecialDaysTable,
              ObjectType.REGISTER_ACTIVATION: GXDLMSRegisterActivation}[object_type]
    with _gurux(scenario) as peer:
        before = _gurux_raw(peer, reader(logical_name), attribute)
        request_frames = peer.client.write(make(), attribute)
        if len(request_frames) > 1:  # a set in blocks: gurux's first block is over-long (pinned above)
            assert len(request_frames[0]) - WRAPPER_HEADER == MAX_PDU + GURUX_MISSED_OVERHEAD
            with pytest.raises(GXDLMSExceptionResponse, match="PDU is too long"):
                _quiet(peer.transfer, request_frames)
            peer.client.settings.maxPduSize = MAX_PDU - GURUX_MISSED_OVERHEAD
            request_frames = peer.client.write(make(), attribute)
            assert max(len(f) for f in request_frames) - WRAPPER_HEADER == MAX_PDU
        reply = _quiet(peer.transfer, request_frames)
        after = _gurux_raw(peer, reader(logical_name), attribute)
    assert reply.error == answer
    assert after == before
    if case == "201 special days":
        _check_special_days(after)
    if case == "a mask naming register 9 of 8":
        assert after == [[b"T1", [1, 3, 5, 7]], [b"T2", [2, 4, 6, 8]]]
