"""The display's COSEM objects on the meter's model, through the server path (catalog §3.11): the
display lists (IC 7 v1, empty buffer, writable capture_objects and capture_period), the consumer
message, the tariffication scheme and the load profile display control (status, script table,
schedule). Bad input gets its data-access-result and changes nothing; what was written survives a
restart; the display engine, reading through the meter's own object directory, shows what was
written and what the registers hold."""
from __future__ import annotations

import pytest

from meter_sessions import SUCCESS, ClientSession, interface_of
from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.dlms.apdu.common import DataAccessResult
from smartmeter.dlms.client import CounterStore
from smartmeter.legal import interface as legal
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.display import Display, indicators_from_objects
from smartmeter.meter.runtime import Meter, MeterConfig

START = 1780000000.0
SCROLL, STANDARD, SERVICE = "0-0:21.0.1.255", "0-0:21.0.2.255", "0-0:21.0.3.255"
MESSAGE, SCHEME = "0-0:96.13.1.255", "0-0:94.43.142.255"
LP_STATUS, LP_SCRIPTS, LP_SCHEDULE = "0-0:96.5.4.255", "0-0:10.1.109.255", "0-0:15.1.5.255"
OTHER_REASON, TYPE_UNMATCHED = int(DataAccessResult.OTHER_REASON), int(DataAccessResult.TYPE_UNMATCHED)
DENIED = int(DataAccessResult.READ_WRITE_DENIED)
REQUIRED = [(1, "1-0:0.2.0.255", 2, 0), (1, "1-0:0.2.8.255", 2, 0), (1, "0-0:97.97.0.255", 2, 0)]


def entry(class_id: int, obis: str, attribute: int, data_index: int = 0) -> Data:
    return Data.structure([Data.long_unsigned(class_id), Data.octet_string(Obis.parse(obis).to_bytes()),
                           Data.integer(attribute), Data.long_unsigned(data_index)])


def items(definitions) -> Data:
    return Data.array(entry(*d) for d in definitions)


class Site:
    def __init__(self, data_dir) -> None:
        self.data_dir = data_dir
        self.t = START
        self.counters: dict[str, CounterStore] = {}
        self.sessions: dict[str, ClientSession] = {}
        self.meter = self._open()

    def _open(self) -> Meter:
        return Meter(MeterConfig(data_dir=self.data_dir, backfill_days=0), clock=MeterClock(source=lambda: self.t))

    def restart(self) -> None:
        self.meter.close()
        self.sessions.clear()
        self.meter = self._open()

    def session(self, client: str) -> ClientSession:
        """The client's association, opened on first use; the optical port holds one at a time."""
        if client not in self.sessions:
            if interface_of(self.meter, client) == "wz":
                for name in [n for n, s in self.sessions.items() if s.interface == "wz"]:
                    self.sessions.pop(name).close()
            self.sessions[client] = ClientSession(self.meter, client, self.counters.setdefault(client, CounterStore()))
        return self.sessions[client]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path / "meter")
    yield s
    s.meter.close()


def read(session: ClientSession, class_id: int, obis: str, attribute: int) -> Data:
    result, value = session.get(class_id, obis, attribute)
    assert result == SUCCESS, (obis, attribute, result)
    return value


def model_items(obis: str) -> Data:
    """The defaults as the model file gives them (single-phase meter: no L2/L3 values)."""
    o = next(o for o in ObjectModel.load("ksmw").for_phases(1).objects if str(o.obis) == obis)
    return items([tuple(c) for c in o.config["capture_objects"]])


# -- display lists --------------------------------------------------------------------------------------
def test_the_lists_read_as_the_model_gives_them_with_an_empty_buffer(site):
    public = site.session("public")
    for obis, period in ((SCROLL, 5), (STANDARD, 0), (SERVICE, 0)):
        assert read(public, 7, obis, 3) == model_items(obis)
        assert read(public, 7, obis, 4) == Data.double_long_unsigned(period)
        assert read(public, 7, obis, 2) == Data.array([])
        assert read(public, 7, obis, 7) == Data.double_long_unsigned(0)
    standard = [tuple(v.value for v in e.value) for e in model_items(STANDARD).value]
    for class_id, obis, attribute, data_index in REQUIRED:
        assert (class_id, Obis.parse(obis).to_bytes(), attribute, data_index) in standard
    assert all(not str(Obis.from_bytes(e.value[1].value)).startswith("1-0:52") for e in model_items(SERVICE).value)


def test_a_written_list_and_interval_are_kept_across_a_restart(site):
    written = [(3, "1-0:2.8.0.255", 2, 0), (3, "1-0:1.8.0.101", 2, 0), (3, "1-0:1.8.0.102", 2, 0),
               (4, "1-0:1.6.0.255", 5, 0), (8, "0-0:1.0.0.255", 2, 0)]
    management = site.session("management")
    assert management.set(7, SCROLL, 3, items(written)) == SUCCESS
    assert management.set(7, SCROLL, 4, Data.double_long_unsigned(12)) == SUCCESS
    site.restart()
    reader = site.session("data_readout")
    assert read(reader, 7, SCROLL, 3) == items(written)
    assert read(reader, 7, SCROLL, 4) == Data.double_long_unsigned(12)
    assert read(reader, 7, SCROLL, 2) == Data.array([])


def test_the_standard_list_keeps_its_required_items(site):
    management = site.session("management")
    mine = [(3, "1-0:1.8.0.255", 2, 0), *REQUIRED]
    assert management.set(7, STANDARD, 3, items(mine)) == SUCCESS
    for dropped in REQUIRED:
        assert management.set(7, STANDARD, 3, items([d for d in mine if d != dropped])) == OTHER_REASON
    assert read(management, 7, STANDARD, 3) == items(mine)
    # the scroll list has no such rule
    assert management.set(7, SCROLL, 3, items([(3, "1-0:1.8.0.255", 2, 0)])) == SUCCESS


BAD_LISTS = [
    ("an object the meter does not have", items([(3, "1-0:99.99.99.255", 2, 0)]), OTHER_REASON),
    ("an object of another class", items([(3, "0-0:96.1.0.255", 2, 0)]), OTHER_REASON),
    ("an attribute the class does not have", items([(3, "1-0:1.8.0.255", 9, 0)]), OTHER_REASON),
    ("attribute 0", items([(3, "1-0:1.8.0.255", 0, 0)]), OTHER_REASON),
    ("a profile's buffer", items([(7, "1-0:99.1.0.255", 2, 0)]), OTHER_REASON),
    ("a historical value the billing profile does not keep", items([(3, "1-0:32.7.0.101", 2, 0)]), OTHER_REASON),
    ("F = 103", items([(3, "1-0:1.8.0.103", 2, 0)]), OTHER_REASON),
    ("L2 voltage on a single-phase meter", items([(3, "1-0:52.7.0.255", 2, 0)]), OTHER_REASON),
    ("33 items", items([(3, "1-0:1.8.0.255", 2, 0)] * 33), OTHER_REASON),
    ("not an array", entry(3, "1-0:1.8.0.255", 2), TYPE_UNMATCHED),
    ("an item of three", Data.array([Data.structure([Data.long_unsigned(3), Data.octet_string(bytes(6)),
                                                     Data.integer(2)])]), TYPE_UNMATCHED),
    ("a logical name of five octets", Data.array([Data.structure([
        Data.long_unsigned(3), Data.octet_string(bytes(5)), Data.integer(2), Data.long_unsigned(0)])]), TYPE_UNMATCHED),
    ("the class as unsigned", Data.array([Data.structure([
        Data.unsigned(3), Data.octet_string(Obis.parse("1-0:1.8.0.255").to_bytes()), Data.integer(2),
        Data.long_unsigned(0)])]), TYPE_UNMATCHED),
]


@pytest.mark.parametrize("what, value, result", BAD_LISTS, ids=[b[0] for b in BAD_LISTS])
def test_a_bad_list_is_refused_and_changes_nothing(site, what, value, result):
    management = site.session("management")
    before = read(management, 7, SCROLL, 3)
    assert management.set(7, SCROLL, 3, value) == result
    assert read(management, 7, SCROLL, 3) == before


@pytest.mark.parametrize("value, result", [(Data.double_long_unsigned(3601), OTHER_REASON),
                                           (Data.long_unsigned(5), TYPE_UNMATCHED)])
def test_a_bad_interval_is_refused(site, value, result):
    management = site.session("management")
    assert management.set(7, SCROLL, 4, value) == result
    assert read(management, 7, SCROLL, 4) == Data.double_long_unsigned(5)


def test_who_may_write_the_lists(site):
    value = items([(3, "1-0:1.8.0.255", 2, 0)])
    for client, result in (("data_readout", DENIED), ("installation", DENIED), ("certification", DENIED),
                           ("maintenance", SUCCESS)):
        assert site.session(client).set(7, SCROLL, 3, value) == result, client
    assert site.session("management").set(7, SCROLL, 2, Data.array([])) == DENIED  # the buffer never


# -- consumer message, tariffication scheme -----------------------------------------------------------------------
def test_the_consumer_message_is_written_kept_and_cleared(site):
    management = site.session("management")
    assert read(management, 1, MESSAGE, 2) == Data.octet_string(b"")
    text = b"Ablesung am 01.06.: bitte Zugang zum Zaehler ermoeglichen!"
    assert management.set(1, MESSAGE, 2, Data.octet_string(text)) == SUCCESS
    shown = site.meter.display.screen(site.t)  # at once, without waiting for a tick
    assert (shown.mode, shown.indicators.message) == ("message", text.decode("ascii"))
    site.restart()
    assert read(site.session("data_readout"), 1, MESSAGE, 2) == Data.octet_string(text)
    assert site.meter.display.screen(site.t).indicators.message == text.decode("ascii")
    management = site.session("management")
    assert management.set(1, MESSAGE, 2, Data.array([])) == SUCCESS
    assert read(management, 1, MESSAGE, 2) == Data.octet_string(b"")
    assert site.meter.display.screen(site.t).mode == "scroll"


@pytest.mark.parametrize("value, result", [
    (Data.octet_string(b"x" * 65), OTHER_REASON),
    (Data.octet_string(b"tab\there"), OTHER_REASON),
    (Data.octet_string(b"\x00"), OTHER_REASON),
    (Data.octet_string(bytes([0xC4])), OTHER_REASON),
    (Data.double_long_unsigned(1), TYPE_UNMATCHED),
    (Data.array([Data.octet_string(b"a")]), TYPE_UNMATCHED),
])
def test_a_bad_consumer_message_is_refused(site, value, result):
    management = site.session("management")
    assert management.set(1, MESSAGE, 2, Data.octet_string(b"kept")) == SUCCESS
    assert management.set(1, MESSAGE, 2, value) == result
    assert read(management, 1, MESSAGE, 2) == Data.octet_string(b"kept")


def test_only_the_management_client_writes_the_message_and_the_scheme(site):
    for client in ("data_readout", "installation", "maintenance", "certification"):
        session = site.session(client)
        assert session.set(1, MESSAGE, 2, Data.octet_string(b"hi")) == DENIED, client
        assert session.set(1, SCHEME, 2, Data.enum(0)) == DENIED, client


def test_the_tariffication_scheme(site):
    management = site.session("management")
    assert read(management, 1, SCHEME, 2) == Data.enum(1)  # local: the meter runs the T1/T2 calendar
    assert management.set(1, SCHEME, 2, Data.enum(0)) == SUCCESS
    assert management.set(1, SCHEME, 2, Data.enum(2)) == OTHER_REASON
    assert management.set(1, SCHEME, 2, Data.unsigned(1)) == TYPE_UNMATCHED
    site.restart()
    assert read(site.session("management"), 1, SCHEME, 2) == Data.enum(0)


# -- load profile display control ---------------------------------------------------------------------------------
# catalog §3.11: script -> (LP1 shown, LP2 shown) after it, from a state
SCRIPTS = {1: (True, True), 2: (False, False), 3: (True, None), 4: (False, None), 5: (None, True), 6: (None, False)}


def test_the_scripts_show_and_hide_the_profiles(site):
    management = site.session("management")
    state = [True, True]  # shown by default
    assert read(management, 1, LP_STATUS, 2) == Data.unsigned(0b11)
    for script in (4, 6, 3, 2, 5, 1, 6, 4, 1):
        assert management.action(9, LP_SCRIPTS, 1, Data.long_unsigned(script)) == SUCCESS
        state = [s if change is None else change for s, change in zip(state, SCRIPTS[script])]
        assert read(management, 1, LP_STATUS, 2) == Data.unsigned(int(state[0]) | int(state[1]) << 1), script
    assert management.action(9, LP_SCRIPTS, 1, Data.long_unsigned(7)) != SUCCESS


def test_no_client_writes_the_status_and_only_management_runs_the_scripts(site):
    for client in ("management", "data_readout", "installation", "maintenance", "certification"):
        assert site.session(client).set(1, LP_STATUS, 2, Data.unsigned(0x30)) == DENIED, client
    assert site.session("data_readout").action(9, LP_SCRIPTS, 1, Data.long_unsigned(2)) == DENIED
    assert read(site.session("management"), 1, LP_STATUS, 2) == Data.unsigned(0b11)


def test_the_schedule_hides_lp1_at_its_time(site):
    management = site.session("management")
    when = START + 3600  # 2026-05-28 21:26:40 UTC, one hour on
    local = site.meter.clock.local(when)
    time = bytes([local.hour, local.minute, local.second, 0])
    date = bytes([local.year >> 8, local.year & 0xFF, local.month, local.day, 0xFF])
    script = Data.structure([Data.octet_string(Obis.parse(LP_SCRIPTS).to_bytes()), Data.long_unsigned(4)])
    assert management.set(22, LP_SCHEDULE, 2, script) == SUCCESS
    assert management.set(22, LP_SCHEDULE, 4, Data.array([Data.structure([Data.octet_string(time),
                                                                          Data.octet_string(date)])])) == SUCCESS
    for t in (when - 1, when + 1):
        site.t = t
        site.meter.tick()
        shown = read(site.session("data_readout"), 1, LP_STATUS, 2)
        assert shown == Data.unsigned(0b11 if t < when else 0b10), t


# -- the engine on the meter ---------------------------------------------------------------------------------------
def energy_decimals(site) -> int:
    """The certification mode object's energy resolution (enum 1..5: 0..4 decimals)."""
    return read(site.session("maintenance"), 1, "0-0:94.43.143.255", 2).value[1].value - 1


def kwh_text(wh: int, decimals: int) -> str:
    """Whole Wh as kWh, truncated to `decimals`, at least six integer digits."""
    return str(wh // 1000).rjust(6, "0") + (f".{wh % 1000:03d}{0:01d}"[:decimals + 1] if decimals else "")


def engine(site) -> Display:
    """The meter's own display, having read its configuration."""
    site.meter.tick()
    return site.meter.display


def test_the_display_shows_what_a_client_reads_and_what_was_written(site):
    site.meter.control({"input": "load", "power": 2000})
    site.t += 900
    site.meter.tick()
    management = site.session("management")
    assert management.set(7, SCROLL, 3, items([(3, "1-0:1.8.0.255", 2, 0), (1, "0-0:96.1.0.255", 2, 0)])) == SUCCESS
    assert management.set(7, SCROLL, 4, Data.double_long_unsigned(9)) == SUCCESS
    display = engine(site)
    wh = read(management, 3, "1-0:1.8.0.255", 2).value
    assert wh >= 500  # 2 kW for 15 minutes
    shown = display.screen(site.t)
    assert (shown.code, shown.value, shown.unit) == ("1.8.0", kwh_text(wh, energy_decimals(site)), "kWh")
    assert display.screen(site.t + 9).value == site.meter.identity.serial


def test_the_last_billing_values_after_a_billing_reset(site):
    site.meter.control({"input": "load", "power": 3000})
    site.t += 1800
    site.meter.tick()
    management = site.session("management")
    assert management.action(9, "0-0:10.0.1.255", 1, Data.long_unsigned(1)) == SUCCESS  # end of billing period
    billed = read(management, 3, "1-0:1.8.0.255", 2).value
    site.t += 1800
    site.meter.tick()
    assert management.set(7, SCROLL, 3, items([(3, "1-0:1.8.0.101", 2, 0), (3, "1-0:1.8.0.102", 2, 0),
                                                (3, "1-0:1.8.0.255", 2, 0)])) == SUCCESS
    display = engine(site)
    now = read(management, 3, "1-0:1.8.0.255", 2).value
    assert now > billed
    period = read(management, 7, SCROLL, 4).value
    shown = [display.screen(site.t + k * period) for k in range(3)]
    assert [s.code for s in shown] == ["1.8.0.VZ", "1.8.0.VZ-1", "1.8.0"]
    decimals = energy_decimals(site)
    assert [s.value for s in shown] == [kwh_text(billed, decimals), "--------", kwh_text(now, decimals)]
    # one billing period closed so far: no value before it


def test_the_software_identification_shown_is_the_legal_parts(site):
    display = engine(site)
    display.press("A", True, site.t)
    for _ in range(4):  # Std-dAtA, SEr-dAtA, P.01, P.02, SoFt-id
        display.press("A", False, site.t)
    display.press("A", True, site.t)
    software = site.meter.legal.execute(legal.ReadSoftwareIdentity())
    shown = []
    for _ in range(2):
        screen = display.screen(site.t)
        shown.append((screen.mode, screen.code, screen.value))
        display.press("A", False, site.t)
    assert shown == [("software-id", "0.2.0", software.legal_identifier),
                     ("software-id", "0.2.8", software.legal_digest)]


def test_the_symbols_follow_the_meters_objects(site):
    management = site.session("management")
    connected = {"now": False}
    display = Display(site.meter.server.read_locally, site.meter.store, lambda: site.t,
                      indicators_from_objects(site.meter.server.read_locally, lambda: connected["now"]))
    display.tick(site.t)
    active = read(management, 1, "0-0:96.14.0.255", 2).value.decode("ascii")
    symbols = display.screen(site.t).indicators
    assert (symbols.tariff, symbols.disconnected, symbols.communication, symbols.alarm, symbols.certification) == \
        (active, False, False, False, False)
    assert management.action(70, "0-0:96.3.10.255", 1, Data.integer(0)) == SUCCESS  # remote disconnect (b)
    connected["now"] = True
    assert management.set(1, SCHEME, 2, Data.enum(0)) == SUCCESS  # central: no tariff symbol
    symbols = display.screen(site.t).indicators
    assert (symbols.tariff, symbols.disconnected, symbols.communication) == (None, True, True)
    assert site.meter.control({"input": "cover", "value": "open"})["ok"]  # an alarm (meter cover opened)
    raised = [read(management, 1, ln, 2).value for ln in ("0-0:97.97.0.255", "0-0:97.98.0.255", "0-0:97.98.1.255")]
    assert any(raised)
    assert display.screen(site.t).indicators.alarm is True


def test_the_led_counts_an_hour_at_a_known_load_like_a_reference_meter(site):
    """2 kW for an hour is 2 kWh: at the LED rate the certification object gives, that many pulses
    within one, counted from the registers as the meter registered them."""
    watts, seconds = 2000, 3600
    rate = read(site.session("maintenance"), 1, "0-0:94.43.143.255", 2).value[4].value
    site.meter.control({"input": "load", "power": watts})
    display = engine(site)
    start = display.led_pulses(site.t)
    for _ in range(seconds // 60):
        site.t += 60
        site.meter.tick()  # the meter ticks its display
    counted = display.led_pulses(site.t) - start
    assert abs(counted - watts * seconds / 3600 * rate / 1000) <= 1
