"""The display engine (companion §2.5, §5.15, §5.16, §5.18) against a scripted set of objects: the
scroll list advances at the interval its object says, [A] steps through the lists and the menu,
the 60 s timeout, item codes, values at the configured resolution, historical values from the
billing profile, symbols, the test LED's pulse count and the demand-period output, the consumer
message, and bad input (a power failure, unknown buttons, failing reads) that the display survives.

Every expectation is computed here from the scenario (the list written, the interval, the
presses, the register values), not taken from the engine."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import CosemAccessError
from smartmeter.cosem.data import CosemDateTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.meter.display import Display, Indicators, Screen

T0 = 1_780_000_000.0  # meter time of the scenarios
SCROLL, STANDARD, SERVICE = "0-0:21.0.1.255", "0-0:21.0.2.255", "0-0:21.0.3.255"
UNIT = {"Wh": 30, "varh": 32, "W": 27, "V": 35, "A": 33}


def ln(obis: str) -> bytes:
    return Obis.parse(obis).to_bytes()


def capture_objects(items) -> Data:
    return Data.array(Data.structure([Data.long_unsigned(c), Data.octet_string(ln(o)), Data.integer(a),
                                      Data.long_unsigned(i)]) for c, o, a, i in items)


class Store:
    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def put(self, key, value) -> None:
        self.values[key] = value


class Objects:
    """The meter's objects as the display reads them: (class, logical name, attribute) -> Data (or a
    callable giving it), answered as DlmsServer.read_locally answers."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.reads = 0

    def set(self, class_id: int, obis: str, attribute: int, value) -> None:
        self.values[(class_id, ln(obis), attribute)] = value

    def register(self, obis: str, value: int, unit: str, scaler: int = 0, class_id: int = 3) -> None:
        self.set(class_id, obis, 2, Data.double_long_unsigned(value))
        self.set(class_id, obis, 3, Data.structure([Data.integer(scaler), Data.enum(UNIT[unit])]))

    def display_list(self, obis: str, items, period: int) -> None:
        self.set(7, obis, 3, capture_objects(items))
        self.set(7, obis, 4, Data.double_long_unsigned(period))

    def certification(self, status=False, energy_res=4, demand_res=4, led_source=1, led_rate=1000) -> None:
        self.set(1, "0-0:94.43.143.255", 2, Data.structure([
            Data.boolean(status), Data.enum(energy_res), Data.enum(demand_res), Data.unsigned(led_source),
            Data.long_unsigned(led_rate)]))

    def read(self, class_id: int, logical_name: bytes, attribute: int):
        self.reads += 1
        value = self.values.get((class_id, bytes(logical_name), attribute))
        if callable(value):
            value = value()
        if value is None:
            return None, DataAccessResult.OBJECT_UNDEFINED
        return value, DataAccessResult.SUCCESS


@pytest.fixture
def objects() -> Objects:
    o = Objects()
    o.register("1-0:1.8.0.255", 1_234_567, "Wh")
    o.register("1-0:2.8.0.255", 89_012, "Wh")
    o.register("1-0:1.8.1.255", 1_000_000, "Wh")
    o.set(1, "1-0:0.9.1.255", 2, Data.octet_string(bytes([12, 34, 56, 0])))
    o.set(1, "0-0:96.1.0.255", 2, Data.octet_string(b"1KFM0100000001"))
    o.set(1, "0-0:97.97.0.255", 2, Data.double_long_unsigned(0))
    o.set(1, "1-0:0.2.0.255", 2, Data.octet_string(b"1.0.0"))
    o.set(1, "1-0:0.2.8.255", 2, Data.octet_string(bytes(range(32))))
    o.certification()
    o.display_list(SCROLL, [(3, "1-0:1.8.0.255", 2, 0), (3, "1-0:2.8.0.255", 2, 0), (1, "1-0:0.9.1.255", 2, 0)], 7)
    o.display_list(STANDARD, [(1, "0-0:96.1.0.255", 2, 0), (3, "1-0:1.8.0.255", 2, 0), (3, "1-0:1.8.1.255", 2, 0),
                              (1, "0-0:97.97.0.255", 2, 0), (1, "1-0:0.2.0.255", 2, 0), (1, "1-0:0.2.8.255", 2, 0)], 0)
    o.display_list(SERVICE, [(3, "1-0:32.7.0.255", 2, 0)], 0)
    o.register("1-0:32.7.0.255", 2301, "V", scaler=-1)
    return o


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(objects: Objects, store: Store | None = None, clock: Clock | None = None, **kwargs) -> Display:
    display = Display(objects.read, store or Store(), clock or Clock(), **kwargs)
    display.tick(T0)
    return display


def kwh(wh: int, decimals: int, digits: int = 6) -> str:
    """Wh as the display shows kWh: truncated to `decimals`, at least `digits` integer digits."""
    value = (Decimal(wh) / 1000).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)
    whole, _, fraction = f"{value:f}".partition(".")
    return whole.rjust(digits, "0") + (f".{fraction}" if decimals else "")


def codes_of(display: Display, times) -> list[str]:
    return [display.screen(t).code for t in times]


# -- scrolling ------------------------------------------------------------------------------------------
def test_the_scroll_list_advances_at_the_interval_its_object_says(objects):
    display = make(objects)
    codes = ["1.8.0", "2.8.0", "0.9.1"]
    period = 7
    for k in range(8):
        for offset in (0.0, period - 0.01):
            screen = display.screen(T0 + k * period + offset)
            assert (screen.mode, screen.code, screen.index, screen.count) == ("scroll", codes[k % 3], k % 3, 3)


def test_a_new_list_and_interval_written_to_the_object_take_effect_at_the_next_tick(objects):
    display = make(objects)
    objects.display_list(SCROLL, [(1, "0-0:96.1.0.255", 2, 0), (3, "1-0:1.8.1.255", 2, 0)], 3)
    display.tick(T0 + 1)
    assert codes_of(display, [T0 + 3 * k for k in range(4)]) == ["C.1.0", "1.8.1", "C.1.0", "1.8.1"]
    objects.display_list(SCROLL, [(1, "0-0:96.1.0.255", 2, 0), (3, "1-0:1.8.1.255", 2, 0)], 0)
    display.tick(T0 + 1)
    assert set(codes_of(display, [T0 + 5 * k for k in range(10)])) == {"C.1.0"}  # interval 0: the first item stays


def test_an_empty_scroll_list_shows_no_value_and_keeps_running(objects):
    objects.display_list(SCROLL, [], 5)
    display = make(objects)
    assert (display.screen(T0 + 12).count, display.screen(T0 + 12).value) == (0, "--------")
    display.press("A", False, T0 + 13)
    assert display.screen(T0 + 13).mode == "standard"


# -- the button ----------------------------------------------------------------------------------------
STANDARD_CODES = ["C.1.0", "1.8.0", "1.8.1", "F.F", "0.2.0", "0.2.8"]


def test_short_presses_step_through_the_standard_list_to_end_and_round(objects):
    display = make(objects)
    t = T0 + 20
    display.press("A", False, t)
    seen = []
    for step in range(len(STANDARD_CODES) + 2):
        screen = display.screen(t)
        seen.append((screen.mode, screen.code or screen.value, screen.index))
        display.press("A", False, t)
    expected = [("standard", code, i) for i, code in enumerate(STANDARD_CODES)]
    expected += [("standard", "End", len(STANDARD_CODES)), ("standard", STANDARD_CODES[0], 0)]
    assert seen == expected
    assert display.screen(t).count == len(STANDARD_CODES)


MENU = ["Std-dAtA", "SEr-dAtA", "P.01", "P.02", "SoFt-id", "tESt", "End"]


def test_a_long_press_opens_the_menu_and_short_presses_step_through_it(objects):
    display = make(objects)
    t = T0 + 3
    display.press("A", True, t)
    seen = []
    for _ in range(len(MENU) + 1):
        seen.append(display.screen(t).value)
        display.press("A", False, t)
    assert seen == MENU + MENU[:1]
    assert display.screen(t).mode == "menu"


@pytest.mark.parametrize("entry, mode, first_code", [(1, "service", "32.7.0"), (4, "software-id", "0.2.0")])
def test_a_long_press_on_a_menu_entry_opens_it_and_another_returns_to_that_entry(objects, entry, mode, first_code):
    display = make(objects)
    t = T0
    display.press("A", True, t)
    for _ in range(entry):
        display.press("A", False, t)
    display.press("A", True, t)
    screen = display.screen(t)
    assert (screen.mode, screen.code, screen.index) == (mode, first_code, 0)
    display.press("A", False, t)
    display.press("A", True, t)
    assert (display.screen(t).mode, display.screen(t).value) == ("menu", MENU[entry])


def test_end_in_the_menu_restarts_scrolling_at_the_first_item(objects):
    display = make(objects)
    t = T0 + 10.5  # the scroll list is on its second item (period 7)
    display.press("A", True, t)
    for _ in range(MENU.index("End")):
        display.press("A", False, t)
    display.press("A", True, t)
    assert codes_of(display, [t, t + 6.9, t + 7, t + 14]) == ["1.8.0", "1.8.0", "2.8.0", "0.9.1"]


def test_sixty_seconds_without_a_press_return_to_scrolling(objects):
    display = make(objects)
    pressed = T0 + 100
    display.press("A", False, pressed)
    display.press("A", False, pressed + 30)  # the second item; the 60 s count from here
    assert display.screen(pressed + 30 + 59.9).mode == "standard"
    back = pressed + 30 + 60
    screens = [display.screen(back + dt) for dt in (0, 6.99, 7, 14)]
    assert [(s.mode, s.code) for s in screens] == [("scroll", "1.8.0"), ("scroll", "1.8.0"), ("scroll", "2.8.0"),
                                                   ("scroll", "0.9.1")]


def test_a_standard_list_with_an_interval_advances_by_itself_from_the_last_press(objects):
    objects.display_list(STANDARD, [(1, "0-0:96.1.0.255", 2, 0), (3, "1-0:1.8.0.255", 2, 0)], 4)
    display = make(objects)
    t = T0 + 1
    display.press("A", False, t)
    # items C.1.0, 1.8.0, then End, every 4 s
    assert [display.screen(t + dt).code or display.screen(t + dt).value for dt in (0, 4, 8, 12)] == \
        ["C.1.0", "1.8.0", "End", "C.1.0"]
    display.press("A", False, t + 5)  # on 1.8.0: the next item, and the interval counts from here
    assert [display.screen(t + 5 + dt).value for dt in (0, 3.9)] == ["End", "End"]


def test_the_menu_offers_only_the_load_profiles_the_control_shows(objects):
    display = make(objects)
    hide_lp2 = Data.unsigned(0x20)
    display.bindings()["display.profile_display"].set(hide_lp2)
    display.press("A", True, T0)
    seen = []
    for _ in range(len(MENU) - 1):
        seen.append(display.screen(T0).value)
        display.press("A", False, T0)
    assert seen == [e for e in MENU if e != "P.02"]
    assert (display.profile_shown(1), display.profile_shown(2)) == (True, False)


# -- codes and values ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("obis, code", [
    ("1-0:1.8.0.255", "1.8.0"), ("1-0:2.8.0.255", "2.8.0"), ("1-0:1.8.1.255", "1.8.1"),
    ("1-0:1.8.0.101", "1.8.0.VZ"), ("1-0:1.8.0.102", "1.8.0.VZ-1"), ("1-0:0.9.1.255", "0.9.1"),
    ("1-0:0.9.2.255", "0.9.2"), ("0-0:97.97.0.255", "F.F"), ("0-0:96.1.0.255", "C.1.0"),
    ("1-1:0.2.0.255", "1-1:0.2.0"), ("1-0:1.8.0.7", "1.8.0*7"), ("0-0:0.1.0.255", "0.1.0"),
])
def test_item_codes_are_obis_short_codes(obis, code):
    from smartmeter.meter.display import item_code
    assert item_code(Obis.parse(obis)) == code


@pytest.mark.parametrize("energy_res", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("wh, scaler", [(1_234_567, 0), (9, 0), (123_456, 1), (98_765, -1)])
def test_energy_shows_at_the_certification_resolution_truncated(objects, energy_res, wh, scaler):
    objects.register("1-0:1.8.0.255", wh, "Wh", scaler=scaler)
    objects.certification(energy_res=energy_res)
    display = make(objects)
    screen = display.screen(T0)
    exact_wh = Decimal(wh).scaleb(scaler)
    decimals = energy_res - 1
    value = (exact_wh / 1000).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)
    whole, _, fraction = f"{value:f}".partition(".")
    assert (screen.code, screen.value, screen.unit) == ("1.8.0", whole.rjust(6, "0") + (f".{fraction}" if decimals else ""),
                                                        "kWh")


@pytest.mark.parametrize("demand_res", [1, 3, 5])
def test_demand_shows_at_the_demand_resolution(objects, demand_res):
    objects.register("1-0:1.6.0.255", 4321, "W", class_id=4)
    objects.certification(demand_res=demand_res)
    objects.display_list(SCROLL, [(4, "1-0:1.6.0.255", 2, 0)], 5)
    display = make(objects)
    decimals = demand_res - 1
    expected = (Decimal(4321) / 1000).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)
    assert (display.screen(T0).value, display.screen(T0).unit) == (f"{expected:f}", "kW")


def test_without_a_certification_resolution_the_display_parameters_apply(objects):
    objects.certification(energy_res=0, demand_res=0)
    display = make(objects, parameters=lambda: {"display_energy_decimals": 1, "display_demand_decimals": 2})
    assert display.screen(T0).value == kwh(1_234_567, 1)
    objects.set(1, "0-0:94.43.143.255", 2, None)  # unreadable: the parameters too
    display = make(objects, parameters=lambda: {"display_energy_decimals": 4})
    assert display.screen(T0).value == kwh(1_234_567, 4)


def test_values_of_the_standard_list_are_formatted_by_kind(objects):
    objects.set(1, "0-0:97.97.0.255", 2, Data.double_long_unsigned(0x104))
    display = make(objects)
    display.press("A", False, T0)
    shown = {}
    for _ in STANDARD_CODES:
        screen = display.screen(T0)
        shown[screen.code] = (screen.value, screen.unit)
        display.press("A", False, T0)
    assert shown == {"C.1.0": ("1KFM0100000001", ""), "1.8.0": (kwh(1_234_567, 3), "kWh"),
                     "1.8.1": (kwh(1_000_000, 3), "kWh"), "F.F": (f"{0x104:08X}", ""), "0.2.0": ("1.0.0", ""),
                     "0.2.8": (bytes(range(32)).hex(), "")}


def test_time_date_voltage_and_date_time(objects):
    objects.set(1, "1-0:0.9.2.255", 2, Data.octet_string(bytes([0x07, 0xEA, 5, 28, 4])))
    capture = CosemDateTime.from_datetime(datetime(2026, 5, 28, 13, 45, 7, tzinfo=timezone.utc))
    objects.set(4, "1-0:1.6.0.255", 5, Data.octet_string(axdr.encode_date_time(capture)))
    objects.display_list(SCROLL, [(1, "1-0:0.9.1.255", 2, 0), (1, "1-0:0.9.2.255", 2, 0), (3, "1-0:32.7.0.255", 2, 0),
                                  (4, "1-0:1.6.0.255", 5, 0)], 1)
    display = make(objects)
    assert [(s.code, s.value, s.unit) for s in (display.screen(T0 + k) for k in range(4))] == [
        ("0.9.1", "12:34:56", ""), ("0.9.2", "26-05-28", ""), ("32.7.0", "230.1", "V"), ("1.6.0", "26-05-28 13:45", "")]


def test_historical_values_come_from_the_billing_profile(objects):
    columns = [(8, "0-0:1.0.0.255", 2, 0), (3, "1-0:1.8.0.255", 2, 0), (3, "1-0:2.8.0.255", 2, 0)]
    objects.set(7, "0-0:98.1.0.255", 3, capture_objects(columns))
    rows = [(b"\x00" * 12, 1_000_000, 50_000), (b"\x00" * 12, 1_100_500, 60_250)]
    buffer = axdr.encode_rows(rows, [DataType.OCTET_STRING, DataType.DOUBLE_LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED])
    objects.set(7, "0-0:98.1.0.255", 2, Data(DataType.ARRAY, None, encoded=buffer))  # packed, as the profile gives it
    objects.display_list(SCROLL, [(3, "1-0:1.8.0.101", 2, 0), (3, "1-0:1.8.0.102", 2, 0), (3, "1-0:2.8.0.101", 2, 0)], 1)
    display = make(objects)
    assert [(s.code, s.value) for s in (display.screen(T0 + k) for k in range(3))] == [
        ("1.8.0.VZ", kwh(rows[-1][1], 3)), ("1.8.0.VZ-1", kwh(rows[-2][1], 3)), ("2.8.0.VZ", kwh(rows[-1][2], 3))]
    one_row = axdr.encode_rows(rows[:1], [DataType.OCTET_STRING, DataType.DOUBLE_LONG_UNSIGNED,
                                          DataType.DOUBLE_LONG_UNSIGNED])
    objects.set(7, "0-0:98.1.0.255", 2, Data(DataType.ARRAY, None, encoded=one_row))
    assert [display.screen(T0 + k).value for k in range(2)] == [kwh(rows[0][1], 3), "--------"]


# -- symbols, LED, demand output ------------------------------------------------------------------------------------
def test_the_tariff_symbol_follows_the_scheme_and_the_runtime_gives_the_others(objects):
    given = Indicators(tariff="T2", disconnected=True, communication=True, alarm=True, certification=True)
    display = make(objects, indicators=lambda: given)
    shown = display.screen(T0).indicators
    assert (shown.tariff, shown.disconnected, shown.communication, shown.alarm, shown.certification) == \
        ("T2", True, True, True, True)
    display.bindings()["display.tariffication_scheme"].set(Data.enum(0))  # central
    assert display.screen(T0).indicators.tariff is None
    with pytest.raises(CosemAccessError) as refused:
        display.bindings()["display.tariffication_scheme"].set(Data.enum(2))
    assert refused.value.result == DataAccessResult.OTHER_REASON
    with pytest.raises(CosemAccessError) as refused:
        display.bindings()["display.tariffication_scheme"].set(Data.unsigned(1))
    assert refused.value.result == DataAccessResult.TYPE_UNMATCHED


def test_the_led_counts_energy_times_rate_exactly_across_a_rate_change(objects):
    energy = {"a_plus": 0, "a_minus": 0}
    objects.set(3, "1-0:1.8.0.255", 2, lambda: Data.double_long_unsigned(energy["a_plus"]))
    objects.set(3, "1-0:2.8.0.255", 2, lambda: Data.double_long_unsigned(energy["a_minus"]))
    objects.certification(led_rate=1000, led_source=0x01)
    display = make(objects)  # counts from here (energy 0)
    steps = [(1_234, 1000), (5_000, 1000), (5_777, 16000), (7_001, 16000), (7_500, 2000)]
    counted, base, last_rate = 0, 0, 1000
    for i, (wh, rate) in enumerate(steps):
        if rate != last_rate:  # a new stretch: what the old rate counted up to the change stays
            counted += math.floor(energy["a_plus"] * last_rate / 1000) - math.floor(base * last_rate / 1000)
            base, last_rate = energy["a_plus"], rate
            objects.certification(led_rate=rate, led_source=0x01)
            display.tick(T0 + i)
        energy["a_plus"] = wh
        expected = counted + math.floor(wh * rate / 1000) - math.floor(base * rate / 1000)
        assert display.led_pulses(T0 + i + 0.5) == expected


def test_the_led_source_chooses_the_register(objects):
    energy = {"a_minus": 0}
    objects.set(3, "1-0:2.8.0.255", 2, lambda: Data.double_long_unsigned(energy["a_minus"]))
    objects.certification(led_rate=4000, led_source=0x02)  # -A
    display = make(objects)
    energy["a_minus"] = 321
    assert display.led_pulses(T0 + 1) == 321 * 4000 // 1000


def test_the_led_blinks_the_pulses_of_the_last_interval(objects):
    energy = {"a_plus": 0}
    objects.set(3, "1-0:1.8.0.255", 2, lambda: Data.double_long_unsigned(energy["a_plus"]))
    objects.certification(led_rate=1000, led_source=0x01)
    display = make(objects)  # a sample at T0, energy 0
    energy["a_plus"] = 10  # 10 pulses over the next 10 s: one every second
    display.tick(T0 + 10)
    lit = {dt: display.screen(T0 + 10 + dt).indicators.led_on for dt in (0.5, 1.2, 1.7, 5.1, 9.4, 9.6, 10.5)}
    # replayed from T0 + 10: pulse k at k s, lit for the first half second after it
    assert lit == {0.5: False, 1.2: True, 1.7: False, 5.1: True, 9.4: True, 9.6: False, 10.5: False}


def test_the_demand_output_opens_nine_seconds_at_each_period_start(objects):
    start = 1_780_000_200  # a period start the demand register names (not a multiple of 900)
    begun = CosemDateTime.from_datetime(datetime.fromtimestamp(start, timezone.utc))
    objects.set(5, "1-0:1.4.0.255", 7, Data.octet_string(axdr.encode_date_time(begun)))
    objects.set(5, "1-0:1.4.0.255", 8, Data.double_long_unsigned(900))
    display = make(objects)
    opened = {dt: display.screen(start + dt).indicators.demand_output for dt in (0, 8.9, 9, 450, 900, 908.5, 909)}
    assert opened == {0: True, 8.9: True, 9: False, 450: False, 900: True, 908.5: True, 909: False}


# -- the consumer message ------------------------------------------------------------------------------------------
def write_message(display: Display, value: Data) -> None:
    display.bindings()["display.consumer_message"].set(value)


def test_a_consumer_message_is_shown_at_once_then_scrolls_with_the_list_and_is_acknowledged(objects):
    store, clock = Store(), Clock(T0 + 50)
    display = make(objects, store, clock)
    display.press("A", True, T0 + 45)  # in the menu when it arrives
    write_message(display, Data.octet_string(b"Zaehlerablesung am 1.6."))
    screen = display.screen(clock.t)
    # the text on the message line only: code and value fields hold no text but the meter's (WELMEC S2)
    assert (screen.mode, screen.code, screen.value, screen.indicators.message) == (
        "message", "MSG", "", "Zaehlerablesung am 1.6.")
    # each cycle: the message, then the list's three items, 7 s each
    assert codes_of(display, [clock.t + 7 * k for k in range(5)]) == ["MSG", "1.8.0", "2.8.0", "0.9.1", "MSG"]
    display.press("A", False, clock.t + 7)  # not on the message: the standard list
    assert display.screen(clock.t + 7).mode == "standard"
    ack = clock.t + 7 + 60 + 28  # back to scrolling at +67, the message again from +95
    assert display.screen(ack).mode == "message"
    display.press("A", False, ack)
    assert store.get("display.consumer_message") == ""
    screen = display.screen(ack)
    assert (screen.mode, screen.code, screen.indicators.message) == ("scroll", "1.8.0", None)


def test_the_message_survives_a_restart_and_an_empty_array_clears_it(objects):
    store = Store()
    write_message(make(objects, store), Data.octet_string(b"Hello"))
    restarted = make(objects, store)
    assert restarted.screen(T0).mode == "message"
    assert restarted.bindings()["display.consumer_message"].get() == Data.octet_string(b"Hello")
    write_message(restarted, Data.array([]))
    assert (restarted.screen(T0).mode, restarted.screen(T0).indicators.message) == ("scroll", None)


@pytest.mark.parametrize("value, result", [
    (Data.octet_string(b"A" * 65), DataAccessResult.OTHER_REASON),
    (Data.octet_string(b"bell\x07"), DataAccessResult.OTHER_REASON),
    (Data.octet_string(b"del\x7f"), DataAccessResult.OTHER_REASON),
    (Data.octet_string("Grüße".encode("latin-1")), DataAccessResult.OTHER_REASON),
    (Data.array([Data.octet_string(b"x")]), DataAccessResult.TYPE_UNMATCHED),
    (Data.unsigned(7), DataAccessResult.TYPE_UNMATCHED),
])
def test_a_bad_message_is_refused_and_the_old_one_stays(objects, value, result):
    store = Store()
    display = make(objects, store)
    write_message(display, Data.octet_string(b"old"))
    with pytest.raises(CosemAccessError) as refused:
        write_message(display, value)
    assert refused.value.result == result
    assert store.get("display.consumer_message") == "old"
    assert display.screen(T0).indicators.message == "old"


def test_sixty_four_printable_bytes_are_a_message(objects):
    text = bytes(range(0x20, 0x60)).decode("ascii")  # 64 bytes, from space to underscore
    display = make(objects)
    write_message(display, Data.octet_string(text.encode("ascii")))
    assert display.screen(T0).indicators.message == text


# -- the other views ------------------------------------------------------------------------------------------
def test_the_test_view_lights_everything_then_shows_the_led(objects):
    objects.certification(led_rate=2000)
    display = make(objects)
    display.press("A", True, T0)
    for _ in range(MENU.index("tESt")):
        display.press("A", False, T0)
    display.press("A", True, T0)
    segments = display.screen(T0)
    assert (segments.mode, segments.value) == ("test", "88888888")
    lit = segments.indicators
    assert all((lit.disconnected, lit.communication, lit.alarm, lit.certification, lit.led_on, lit.demand_output))
    display.press("A", False, T0)
    assert (display.screen(T0).code, display.screen(T0).value) == ("LEd", str(display.led_pulses(T0)))
    display.press("A", False, T0)
    assert (display.screen(T0).code, display.screen(T0).value, display.screen(T0).unit) == ("LEd.r", "2000", "imp/kWh")


def test_the_load_profile_view_shows_the_newest_entries_first(objects):
    columns = [(8, "0-0:1.0.0.255", 2, 0), (1, "0-0:96.10.1.255", 2, 0), (3, "1-0:1.8.0.255", 2, 0),
               (3, "1-0:2.8.0.255", 2, 0)]
    objects.set(7, "1-0:99.1.0.255", 3, capture_objects(columns))
    times = [T0 - 900, T0]
    stamps = [axdr.encode_date_time(CosemDateTime.from_datetime(datetime.fromtimestamp(t, timezone.utc))) for t in times]
    rows = [(stamps[0], 0, 500_000, 1_000), (stamps[1], 0, 500_250, 1_000)]
    objects.set(7, "1-0:99.1.0.255", 2, Data(DataType.ARRAY, None, encoded=axdr.encode_rows(
        rows, [DataType.OCTET_STRING, DataType.UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED])))
    display = make(objects)
    display.press("A", True, T0)
    for _ in range(MENU.index("P.01")):
        display.press("A", False, T0)
    display.press("A", True, T0)
    shown = []
    for _ in range(7):
        screen = display.screen(T0)
        shown.append((screen.mode, screen.code, screen.value))
        display.press("A", False, T0)

    def when(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%y-%m-%d %H:%M")
    assert shown == [("profile", "P.01", when(times[1])), ("profile", "1.8.0", kwh(rows[1][2], 3)),
                     ("profile", "2.8.0", kwh(rows[1][3], 3)), ("profile", "P.01", when(times[0])),
                     ("profile", "1.8.0", kwh(rows[0][2], 3)), ("profile", "2.8.0", kwh(rows[0][3], 3)),
                     ("profile", "", "End")]


# -- bad input and robustness -------------------------------------------------------------------------------------
def test_a_power_failure_darkens_the_display_and_presses_are_ignored(objects):
    supply = {"on": True}
    display = make(objects, powered=lambda: supply["on"])
    supply["on"] = False
    display.tick(T0 + 1)
    assert display.screen(T0 + 1) == Screen("off", "", "", "", 0, 0, Indicators())
    display.press("A", True, T0 + 2)
    display.press("A", False, T0 + 3)
    supply["on"] = True
    display.tick(T0 + 10)
    assert [display.screen(T0 + 10 + dt).code for dt in (0, 7)] == ["1.8.0", "2.8.0"]  # scrolling from power-up


@pytest.mark.parametrize("button, long", [("B", False), ("", True), ("menu", False), ("A", "yes"), (None, None)])
def test_an_unknown_request_is_ignored(objects, button, long):
    display = make(objects)
    before = display.version()
    display.press(button, long, T0 + 1)
    assert (display.screen(T0 + 1).mode, display.version()) == ("scroll", before)


def test_the_r_button_is_not_the_displays(objects):
    display = make(objects)
    display.press("R", False, T0)
    display.press("R", True, T0)
    assert display.screen(T0).mode == "scroll"


def test_failing_reads_show_no_value_and_the_display_runs_on(objects):
    def broken(class_id, logical_name, attribute):
        if bytes(logical_name) == ln("1-0:2.8.0.255"):
            raise RuntimeError("the legal part is not answering")
        return objects.read(class_id, logical_name, attribute)
    display = Display(broken, Store(), Clock())
    display.tick(T0)
    assert [(s.code, s.value) for s in (display.screen(T0 + 7 * k) for k in range(3))] == [
        ("1.8.0", kwh(1_234_567, 3)), ("2.8.0", "--------"), ("0.9.1", "12:34:56")]


def test_an_item_of_an_object_that_vanished_shows_no_value(objects):
    objects.display_list(SCROLL, [(3, "1-0:88.88.88.255", 2, 0), (3, "1-0:1.8.0.255", 2, 0)], 1)
    display = make(objects)
    assert [(display.screen(T0 + k).code, display.screen(T0 + k).value) for k in range(2)] == [
        ("88.88.88", "--------"), ("1.8.0", kwh(1_234_567, 3))]


def test_the_version_moves_with_presses_and_with_what_is_shown(objects):
    display = make(objects)
    first = display.version()
    display.tick(T0 + 1)
    assert display.version() == first  # nothing changed on screen
    display.press("A", False, T0 + 2)
    assert display.version() > first
    after_press = display.version()
    objects.register("1-0:1.8.0.255", 2_000_000, "Wh")  # the value on screen changes
    display.press("A", False, T0 + 2)  # to 1.8.0
    display.tick(T0 + 3)
    moved = display.version()
    objects.register("1-0:1.8.0.255", 2_000_001, "Wh")
    display.tick(T0 + 4)
    assert moved > after_press and display.version() > moved


def test_a_message_cleared_remotely_restarts_the_scroll_cycle_and_leaves_a_menu_alone(objects):
    clock = Clock(T0 + 30)
    display = make(objects, clock=clock)
    write_message(display, Data.octet_string(b"hello"))
    clock.t = T0 + 44  # the cycle: message, 1.8.0, 2.8.0 (at +14)
    assert display.screen(clock.t).code == "2.8.0"
    write_message(display, Data.octet_string(b""))
    assert codes_of(display, [clock.t, clock.t + 7]) == ["1.8.0", "2.8.0"]
    write_message(display, Data.octet_string(b"again"))
    display.press("A", True, clock.t)  # the menu
    write_message(display, Data.array([]))
    assert display.screen(clock.t).mode == "menu"


def test_a_malformed_list_answer_shows_what_it_can(objects):
    """Whatever the list object answers, the display takes the well-formed items and runs on."""
    good = capture_objects([(3, "1-0:1.8.0.255", 2, 0)]).value[0]
    objects.set(7, SCROLL, 3, Data.array([
        Data.unsigned(3), Data.structure([Data.null()] * 4), good,
        Data.structure([Data.long_unsigned(3), Data.octet_string(b"short"), Data.integer(2), Data.long_unsigned(0)])]))
    objects.set(7, SCROLL, 4, Data.octet_string(b"five"))  # no interval: the first item stays
    display = make(objects)
    assert [(display.screen(T0 + k).code, display.screen(T0 + k).count) for k in (0, 30)] == [("1.8.0", 1)] * 2
