"""The meter's display: what its LCD shows, how the [A] button steps through it, its symbols,
the test LED and the demand-period output (companion §2.5, §5.15, §5.16, §5.18; catalog §1.6,
§3.11-§3.13).

Nothing but this engine writes the screen. Every value it shows is read through `read(class_id,
logical_name, attribute)`, a local GET through the meter's own object directory: legally
relevant values come from the legal part through its protective interface, exactly as a
client reads them. The display lists are the IC 7 objects 0-0:21.0.1.255 (data scroll list),
0-0:21.0.2.255 (standard data list) and 0-0:21.0.3.255 (service data list); their items and
intervals are read from them (capture_objects, capture_period) at every tick.

The button ([A]; [R] is the runtime's billing reset) - time `now` is meter time in seconds:

- scroll mode (the default): the data scroll list, one item per capture_period seconds from
  the moment scrolling (re)started, cyclic; capture_period 0 keeps its first item. A pending
  consumer message is the first item of every cycle (mode "message"), and a new one is shown at
  once: scrolling restarts with it.
- short press in scroll mode: the standard data list, first item (the legally relevant values
  on command); on the consumer message: acknowledges it (it is cleared) and scrolling restarts.
- long press in scroll mode: the menu, first entry. Menu entries, in order: "Std-dAtA" (the
  standard data list), "SEr-dAtA" (the service data list), "P.01" / "P.02" (load profile 1 / 2,
  each only while the load profile display control shows it), "SoFt-id" (the software
  identification), "tESt" (segment test and the test LED), "End" (back to scrolling). A short
  press steps to the next entry (after "End": the first), a long press opens the entry.
- in a list: a short press steps to the next item; after the last item "End" is shown, and a
  short press there starts the list again; a long press returns to the menu (on the entry of
  the list). A standard or service list whose capture_period is not 0 also advances by itself
  at that interval, counted from the last press.
- 60 s without a press in the menu or a list: scrolling restarts at the data scroll list's first
  item (at the instant the 60 s ran out).
- the supply is off (power failure): the display is dark (mode "off") and presses are ignored;
  another button than "A" / "R" is ignored (one log line), and so is anything that is no press.

A long press of [A] while the disconnector is ready for reconnection is the customer's
reconnection (companion §5.8, transition e): the runtime takes it before it reaches the display.

Item codes are OBIS short codes as on real meters: value groups C.D.E ("1.8.0"); C = 96, 97, 98,
99 are the letters C, F, L, P ("C.1.0" the serial number, "F.F" the error register 0-0:97.97.0);
F = 101 is the last billing value ("1.8.0.VZ"), F = 102 the one before ("1.8.0.VZ-1"), another F
"*F"; an object of B > 0 is prefixed "A-B:" ("1-1:0.2.0", the application's identifier).

Values: energy (Wh, varh, VAh) in k-units with the energy resolution, demand and power (W, var,
VA) in k-units with the demand resolution, both truncated (a display never runs ahead of the
register); the resolutions are the certification mode object's (0-0:94.43.143.255, enum 1..5 =
0..4 decimals), or where it says 0 ("no change") the display resolution parameters of the legal
part. Energy shows at least 6 integer digits ("000123.456"). Other registers with the decimals
of their scaler; error and alarm registers (C = 97) as 8 hex digits; time "hh:mm:ss", date
"yy-mm-dd", date-time "yy-mm-dd hh:mm"; printable octet-strings as text, others as hex
(the firmware signatures, as `smartmeter id` prints them). A value that cannot be read shows
"--------".

The test LED pulses at the certification LED rate (pulses per k-unit) for the energy of the LED
source (bit 0 +A 1.8.0, bit 1 -A 2.8.0, bits 2/3 +R 3.8.0, bits 4/5 -R 4.8.0, bits 6/7 apparent
energy 9.8.0/10.8.0 where the meter has it): the count since the display started is exactly
floor(E x rate / 1000) - floor(E0 x rate / 1000) of the energy registers (a change of the rate or
the source starts a new stretch), readable by `led_pulses()`. The demand-period output opens for
9 s (1 % of 900 s) at the start of every demand period (the demand register's start_time_current
and period).
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Callable, Mapping

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, expect, other_reason, type_unmatched
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.errors import SmartmeterError
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# -- the objects the display reads -------------------------------------------------------------
SCROLL_LIST = Obis.parse("0-0:21.0.1.255").to_bytes()
STANDARD_LIST = Obis.parse("0-0:21.0.2.255").to_bytes()
SERVICE_LIST = Obis.parse("0-0:21.0.3.255").to_bytes()
BILLING_PROFILE = Obis.parse("0-0:98.1.0.255").to_bytes()
LOAD_PROFILES = {1: Obis.parse("1-0:99.1.0.255").to_bytes(), 2: Obis.parse("1-0:99.2.0.255").to_bytes()}
CERTIFICATION_MODE = Obis.parse("0-0:94.43.143.255").to_bytes()
DEMAND_REGISTER = Obis.parse("1-0:1.4.0.255").to_bytes()
ACTIVE_TARIFF = Obis.parse("0-0:96.14.0.255").to_bytes()
DISCONNECTOR = Obis.parse("0-0:96.3.10.255").to_bytes()
ALARM_SOURCES = tuple(Obis.parse(o).to_bytes() for o in (
    "0-0:97.97.0.255", "0-0:97.97.128.255", "0-0:97.98.0.255", "0-0:97.98.1.255", "0-0:97.98.2.255"))
SOFTWARE_IDENTIFICATION = tuple((1, Obis.parse(o).to_bytes(), 2, 0) for o in (
    "1-0:0.2.0.255", "1-0:0.2.8.255", "1-1:0.2.0.255", "1-1:0.2.8.255", "1-2:0.2.0.255", "1-2:0.2.8.255"))
# LED source bits (companion §5.16) -> the energy registers that carry them, best first
LED_SOURCES = {0: ("1-0:1.8.0.255",), 1: ("1-0:2.8.0.255",), 2: ("1-0:5.8.0.255", "1-0:3.8.0.255"),
               3: ("1-0:6.8.0.255", "1-0:3.8.0.255"), 4: ("1-0:7.8.0.255", "1-0:4.8.0.255"),
               5: ("1-0:8.8.0.255", "1-0:4.8.0.255"), 6: ("1-0:9.8.0.255",), 7: ("1-0:10.8.0.255",)}

# -- behaviour -----------------------------------------------------------------------------------
MENU_TIMEOUT = 60.0  # s without a press: back to scrolling
DEMAND_OUTPUT_OPEN = 9.0  # s at each demand period start (companion §5.18: 1 % of 900 s)
DEFAULT_DEMAND_PERIOD = 900
PROFILE_ENTRIES_SHOWN = 96  # newest entries of a load profile on the display (LP1: one day)
DEFAULT_DECIMALS = 3
DEFAULT_LED_RATE = 1000
DEFAULT_LED_SOURCE = 0x01
ENERGY_DIGITS = 6  # integer digits an energy value shows at least
NO_VALUE = "--------"

SCROLL, MESSAGE, MENU, STANDARD, SERVICE, SOFTWARE_ID, TEST, PROFILE, OFF = (
    "scroll", "message", "menu", "standard", "service", "software-id", "test", "profile", "off")
BUTTONS = ("A", "R")

# unit enumeration (Blue Book) -> (shown unit, k-unit kind): kind "energy"/"demand" is shown in k-units
UNITS: dict[int, tuple[str, str | None]] = {
    27: ("kW", "demand"), 28: ("kVA", "demand"), 29: ("kvar", "demand"),
    30: ("kWh", "energy"), 31: ("kVAh", "energy"), 32: ("kvarh", "energy"),
    33: ("A", None), 35: ("V", None), 44: ("Hz", None), 7: ("s", None), 8: ("°", None), 6: ("h", None),
    5: ("min", None), 56: ("%", None), 255: ("", None),
}
# the attribute holding scaler_unit, per class, for the value attributes it scales
SCALED = {3: (3, (2,)), 4: (3, (2,)), 5: (4, (2, 3))}

# -- the settings the display's own objects keep -----------------------------------------------
MESSAGE_KEY = "display.consumer_message"
SCHEME_KEY = "display.tariffication_scheme"
PROFILE_DISPLAY_KEY = "display.profile_display"
MESSAGE_MAX = 64
MESSAGE_CODE = "MSG"  # the item code while the consumer message has its turn (no OBIS short code looks so)
PRINTABLE = range(0x20, 0x7F)
CENTRAL, LOCAL = 0, 1
DEFAULT_SCHEME = LOCAL
BOTH_PROFILES_SHOWN = 0x03


@dataclass(frozen=True)
class Indicators:
    tariff: str | None = None  # "T1"/"T2" with the local scheme, None with the central one
    disconnected: bool = False
    communication: bool = False
    alarm: bool = False
    certification: bool = False
    led_on: bool = False  # the test LED (blinks at the certification LED rate, pulses of energy)
    demand_output: bool = False  # the demand-period output (open 9 s at each demand period start)
    message: str | None = None  # the consumer message, shown at once when set


@dataclass(frozen=True)
class Screen:
    mode: str  # "scroll", "message", "menu", "standard", "service", "software-id", "test", "profile", "off"
    code: str  # the item code as on real meters: "1.8.0", "1.8.0.VZ", "0.9.1", "F.F", "C.1.0" ...
    value: str  # formatted value ("000123.456"), menu text ("Std-dAtA"), "End"
    unit: str  # "kWh", "kW", "V", "A", "" ...
    index: int  # position in the current list, 0-based ("End" is at index == count)
    count: int  # items in the current list
    indicators: Indicators = field(default_factory=Indicators)


class DisplayError(SmartmeterError):
    """A value the display cannot show (the item shows NO_VALUE)."""


# -- item codes and values -------------------------------------------------------------------------
_LETTERS = {96: "C", 97: "F", 98: "L", 99: "P"}
_HISTORICAL = {101: ".VZ", 102: ".VZ-1"}
_SPECIAL_CODES = {Obis.parse("0-0:97.97.0.255"): "F.F"}


def item_code(obis: Obis) -> str:
    """The OBIS short code a meter's display shows for `obis` (see the module docstring)."""
    base = _SPECIAL_CODES.get(Obis(obis.a, obis.b, obis.c, obis.d, obis.e, 255))
    if base is None:
        base = f"{_LETTERS.get(obis.c, obis.c)}.{obis.d}.{obis.e}"
        if obis.b != 0:
            base = f"{obis.a}-{obis.b}:{base}"
    if obis.f == 255:
        return base
    return base + _HISTORICAL.get(obis.f, f"*{obis.f}")


def _truncated(value: int, scaler: int, decimals: int, shift: int) -> tuple[bool, int]:
    """(negative, |value| x 10^(scaler - shift) in units of 10^-decimals, truncated), exactly."""
    exact = Fraction(abs(value)) * Fraction(10) ** (scaler - shift + decimals)
    return value < 0, math.floor(exact)


def format_number(value: int, scaler: int, decimals: int, shift: int = 0, digits: int = 1) -> str:
    """`value` x 10^scaler / 10^shift with `decimals` decimals (truncated) and at least `digits`
    integer digits."""
    negative, units = _truncated(value, scaler, decimals, shift)
    whole, fraction = divmod(units, 10 ** decimals)
    text = str(whole).rjust(digits, "0") + (f".{fraction:0{decimals}d}" if decimals else "")
    return ("-" if negative and units else "") + text


def _date_text(raw: bytes) -> str | None:
    year, month, day = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if year == 0xFFFF or month > 12 or day > 31:
        return None
    return f"{year % 100:02d}-{month:02d}-{day:02d}"


def _time_text(raw: bytes, seconds: bool = True) -> str | None:
    hour, minute, second = raw[0], raw[1], raw[2]
    if hour > 23 or minute > 59:
        return None
    return f"{hour:02d}:{minute:02d}" + (f":{min(second, 59):02d}" if seconds else "")


def format_octets(raw: bytes, obis: Obis | None = None) -> str:
    """Local time (x.x:0.9.1) and date (0.9.2) by their code; printable ASCII as text; a date-time
    (12 octets, never printable: its year's first octet is not) as such; anything else as hex."""
    groups = None if obis is None else (obis.c, obis.d, obis.e)
    if len(raw) == 4 and groups == (0, 9, 1):
        return _time_text(raw) or NO_VALUE
    if len(raw) == 5 and groups == (0, 9, 2):
        return _date_text(raw) or NO_VALUE
    if raw and all(b in PRINTABLE for b in raw):
        return raw.decode("ascii")
    if len(raw) == 12:
        date, time = _date_text(raw[0:5]), _time_text(raw[5:9], seconds=False)
        return NO_VALUE if date is None or time is None else f"{date} {time}"
    return raw.hex()


@dataclass(frozen=True)
class Resolution:
    energy: int = DEFAULT_DECIMALS  # decimals of kWh
    demand: int = DEFAULT_DECIMALS  # decimals of kW


def format_value(value: Any, obis: Obis, scaler_unit: tuple[int, int] | None, resolution: Resolution) -> tuple[str, str]:
    """(text, unit) of a plain value (Data.value form) of the object `obis`."""
    if value is None:
        return NO_VALUE, ""
    if isinstance(value, bool):
        return ("1" if value else "0"), ""
    if isinstance(value, int):
        if scaler_unit is not None:
            scaler, unit = scaler_unit
            shown, kind = UNITS.get(unit, ("", None))
            if kind == "energy":
                return format_number(value, scaler, resolution.energy, 3, ENERGY_DIGITS), shown
            if kind == "demand":
                return format_number(value, scaler, resolution.demand, 3), shown
            return format_number(value, scaler, max(0, -scaler)), shown
        if obis.c == 97:  # error and alarm registers: their bits, as hex
            return f"{value & 0xFFFFFFFF:08X}", ""
        return str(value), ""
    if isinstance(value, float):
        return (f"{value:.3f}" if math.isfinite(value) else NO_VALUE), ""
    if isinstance(value, (bytes, bytearray)):
        return format_octets(bytes(value), obis), ""
    if isinstance(value, str):
        return value, ""
    return NO_VALUE, ""


# -- the display's own objects: consumer message, tariffication scheme, load profile display ----
class DisplaySettings:
    """The values of the display's IC 1 objects, kept in the meter's settings store (they survive
    a power failure and a restart); `on_change` is told of every change."""

    def __init__(self, store, on_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_change = on_change

    def _changed(self, what: str) -> None:
        if self.on_change is not None:
            self.on_change(what)

    # consumer message 0-0:96.13.1.255
    def message(self) -> str:
        return str(self.store.get(MESSAGE_KEY, ""))

    def set_message(self, text: str) -> None:
        self.store.put(MESSAGE_KEY, text)
        self._changed("message")

    def _message_data(self) -> Data:
        return Data.octet_string(self.message().encode("ascii"))

    def _write_message(self, value: Data) -> None:
        """≤ 64 bytes of 0x20..0x7E as an octet-string (or visible-string); empty, or an empty
        array (companion §5.15), clears. Another type: type-unmatched; too long or a byte outside
        the range: other-reason."""
        if value.type == DataType.ARRAY:
            if value.value:
                raise type_unmatched("the consumer message is an octet-string; only an empty array clears it")
            raw = b""
        elif value.type == DataType.VISIBLE_STRING:
            raw = value.value.encode("latin-1", "replace") if isinstance(value.value, str) else bytes(value.value)
        else:
            raw = bytes(expect(value, DataType.OCTET_STRING))
        if len(raw) > MESSAGE_MAX:
            raise other_reason(f"a consumer message is at most {MESSAGE_MAX} bytes")
        bad = next((b for b in raw if b not in PRINTABLE), None)
        if bad is not None:
            raise other_reason(f"a consumer message is printable ASCII 0x20..0x7E, not 0x{bad:02X}")
        self.set_message(raw.decode("ascii"))

    # tariffication scheme 0-0:94.43.142.255
    def scheme(self) -> int:
        return int(self.store.get(SCHEME_KEY, DEFAULT_SCHEME))

    def _write_scheme(self, value: Data) -> None:
        scheme = expect(value, DataType.ENUM)
        if scheme not in (CENTRAL, LOCAL):
            raise other_reason("the tariffication scheme is 0 (central) or 1 (local)")
        self.store.put(SCHEME_KEY, scheme)
        self._changed("scheme")

    # load profile display control status 0-0:96.5.4.255
    def profile_display(self) -> int:
        return int(self.store.get(PROFILE_DISPLAY_KEY, BOTH_PROFILES_SHOWN))

    def profile_shown(self, profile: int) -> bool:
        return bool(self.profile_display() & (1 << (profile - 1)))

    def _write_profile_display(self, value: Data) -> None:
        """The scripts' change: bits 4/5 name the profiles that change (LP1/LP2), bits 0/1 their
        new state (shown)."""
        raw = expect(value, DataType.UNSIGNED)
        if not raw & 0x30 or raw & 0xCC:
            raise other_reason("bits 4/5 name the profiles that change, 0/1 their state")
        state = self.profile_display()
        for bit in (0, 1):
            if raw & (0x10 << bit):
                state = (state | (1 << bit)) if raw & (1 << bit) else (state & ~(1 << bit))
        self.store.put(PROFILE_DISPLAY_KEY, state)
        self._changed("profile_display")

    def bindings(self) -> dict[str, Binding]:
        """The model's `value = "display.…"` bindings."""
        return {
            "display.consumer_message": Binding(self._message_data, self._write_message),
            "display.tariffication_scheme": Binding(lambda: Data.enum(self.scheme()), self._write_scheme),
            "display.profile_display": Binding(lambda: Data.unsigned(self.profile_display()), self._write_profile_display),
        }


def read_value(read: Callable[[int, bytes, int], Any], class_id: int, ln: bytes, attribute: int,
               say: RateLimitedLog | None = None) -> Data | None:
    """A local GET; None when it is refused or fails (the display shows what it can). `read`
    gives a Data, or (value or None, data-access-result) as DlmsServer.read_locally does."""
    try:
        answer = read(class_id, ln, attribute)
    except Exception as exc:  # noqa: BLE001 - whatever a read raises, the display keeps running
        if say is not None:
            say("display.read", "display: reading %s attribute %s failed: %s", Obis.from_bytes(ln), attribute, exc,
                level=logging.INFO)
        return None
    if isinstance(answer, tuple) and not isinstance(answer, Data):
        try:
            value, result = answer
        except ValueError:
            return None
        if result != DataAccessResult.SUCCESS:
            return None
        answer = value
    return answer if isinstance(answer, Data) else None


def read_certification(read: Callable[[int, bytes, int], Any], say: RateLimitedLog | None = None) -> tuple | None:
    """Attribute 2 of the certification mode object: (status, energy_res, demand_res, led_source,
    led_rate), or None when it cannot be read."""
    value = read_value(read, 1, CERTIFICATION_MODE, 2, say)
    if value is None or value.type != DataType.STRUCTURE or len(value.value) != 5:
        return None
    return tuple(f.value for f in value.value)


def _is_int(value: Data | None) -> bool:
    return value is not None and isinstance(value.value, int) and not isinstance(value.value, bool)


# -- the engine ----------------------------------------------------------------------------------
Item = tuple[int, bytes, int, int]  # class_id, logical name, attribute, data_index (a capture object)


@dataclass(frozen=True)
class _Fixed:
    """A prepared line (a menu entry, "End", a load profile entry read when the view opened)."""

    code: str
    value: str
    unit: str = ""


_END = _Fixed("", "End")
_MENU = ((STANDARD, "Std-dAtA"), (SERVICE, "SEr-dAtA"), ("profile-1", "P.01"), ("profile-2", "P.02"),
         (SOFTWARE_ID, "SoFt-id"), (TEST, "tESt"), (SCROLL, "End"))


@dataclass
class _ListDefinition:
    items: tuple[Item, ...] = ()
    period: int = 0


class _LedCounter:
    """The test LED's pulses: exact from the energy registers, counted in stretches of one rate
    and source; and when it is lit, replaying the pulses of the latest sampled interval."""

    def __init__(self) -> None:
        self.counted = 0  # pulses of the stretches before the current one
        self.settings: tuple[int, tuple[bytes, ...]] | None = None  # (rate, source registers)
        self.base: Fraction | None = None  # energy (Wh) at the start of the current stretch
        self.samples: list[tuple[float, int]] = []  # the last two (time, total pulses)

    @staticmethod
    def _pulses(energy: Fraction, rate: int) -> int:
        return math.floor(energy * rate / 1000)

    def sample(self, now: float, rate: int, registers: tuple[bytes, ...], energy: Fraction) -> int:
        settings = (rate, registers)
        if self.settings != settings or self.base is None:
            if self.settings is not None and self.base is not None and self.settings[1] == registers:
                # the same energy, a new rate: what the old rate counted up to now stays counted
                self.counted += self._pulses(energy, self.settings[0]) - self._pulses(self.base, self.settings[0])
            elif self.samples:
                self.counted = self.samples[-1][1]
            self.settings, self.base = settings, energy
        total = self.counted + self._pulses(energy, rate) - self._pulses(self.base, rate)
        self.samples = (self.samples + [(now, total)])[-2:]
        return total

    def lit(self, now: float) -> bool:
        """On for the first half of each pulse's spacing, the latest interval replayed once."""
        if len(self.samples) < 2:
            return False
        (t0, p0), (t1, p1) = self.samples
        span, pulses = t1 - t0, p1 - p0
        if span <= 0 or pulses <= 0 or not t1 <= now < t1 + span:
            return False
        q = pulses * (now - t1) / span
        return q >= 1 and q % 1 < 0.5


class Display:
    """The display engine; see the module docstring for what it shows and how [A] steps."""

    def __init__(self, read: Callable[[int, bytes, int], Any], store, clock_now: Callable[[], float],
                 indicators: Callable[[], Indicators] | None = None, on_event=None, *,
                 powered: Callable[[], bool] | None = None,
                 parameters: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self._read_fn = read
        self.settings = DisplaySettings(store, self._settings_changed)
        self._clock_now = clock_now
        self._indicators = indicators
        self._on_event = on_event
        self._powered = powered
        self._parameters = parameters
        self._lock = threading.RLock()
        self._say = RateLimitedLog(log)
        self._version = 0
        self._last_screen: Screen | None = None
        # state of the button's navigation
        self._mode = SCROLL
        self._scroll_start = float(clock_now())
        self._last_press = self._scroll_start
        self._menu_cursor = 0
        self._index = 0
        self._fixed: tuple[_Fixed, ...] = ()  # the items of a view prepared when it opened
        self._profile = 0
        # what is read at every tick
        self._lists: dict[bytes, _ListDefinition] | None = None
        self._resolution = Resolution()
        self._demand: tuple[float, int] | None = None  # (start of the current period, period)
        self._certification: tuple | None = None  # attribute 2 of the certification mode object
        self._scaler_units: dict[tuple[int, bytes], tuple[int, int] | None] = {}
        self._led = _LedCounter()
        self._led_unit = "kWh"
        self._message_seen = self.settings.message()

    # -- the runtime's side ------------------------------------------------------------------------
    def bindings(self) -> dict[str, Binding]:
        """The bindings of the display's own objects (consumer message, tariffication scheme,
        load profile display control status) for the object model."""
        return self.settings.bindings()

    def version(self) -> int:
        """Increments whenever the screen may have changed (a press, a step of a list, a new
        message, a value or symbol that changed since the last tick)."""
        return self._version

    def profile_shown(self, profile: int) -> bool:
        """Whether load profile 1 or 2 may be shown (load profile display control, §5.15)."""
        return self.settings.profile_shown(profile)

    def led_pulses(self, now: float | None = None) -> int:
        """The test LED's pulses since the display started, up to the energy registered now."""
        if self._lists is None:
            self._refresh()
        with self._lock:
            return self._sample_led(self._clock_now() if now is None else now)

    def tick(self, now: float) -> None:
        """Once a second or so: read the list definitions, the resolutions, the demand period
        and the LED's energy; return to scrolling after the timeout; bump the version when what
        the screen shows changed."""
        if not self._is_powered():
            with self._lock:
                self._mode = OFF
            self._publish(self.screen(now))
            return
        self._refresh(now)
        with self._lock:
            self._settle(now)
            self._sample_led(now)
        self._publish(self.screen(now))

    def press(self, button: str, long: bool, now: float) -> None:
        """A press of [A] (short or long). [R] is the runtime's billing reset: nothing here.
        Ignored during a power failure, and whatever is no known button."""
        if button not in BUTTONS or not isinstance(long, bool):
            self._say("display.unknown_button", "display: press of %r (long %r) ignored", button, long,
                      level=logging.INFO)
            return
        if button == "R" or not self._is_powered():
            return
        if self._lists is None:
            self._refresh()
        with self._lock:
            self._settle(now)
            self._step(long, now)
            self._last_press = now
            self._version += 1

    def screen(self, now: float) -> Screen:
        """What the LCD shows at meter time `now`."""
        if not self._is_powered():
            return Screen(OFF, "", "", "", 0, 0, Indicators())
        if self._lists is None:
            self._refresh()
        with self._lock:
            self._settle(now)
            mode, entries, index = self._view(now)
            message = self.settings.message() or None
        if mode == TEST and index == 0:  # the segment test: everything lit
            indicators = Indicators("T1", True, True, True, True, True, True, message)
        else:
            indicators = self._current_indicators(now, message)
        if not entries:
            return Screen(mode, "", NO_VALUE, "", 0, 0, indicators)
        code, value, unit = self._render(entries[index] if index < len(entries) else _END)
        return Screen(mode, code, value, unit, index, len(entries), indicators)

    # -- navigation ----------------------------------------------------------------------------
    def _restart_scroll(self, at: float) -> None:
        self._mode, self._scroll_start, self._index = SCROLL, at, 0

    def _settle(self, now: float) -> None:
        """While powered: after a power failure scrolling starts again; 60 s after the last press
        a menu or a list gives way to scrolling."""
        if self._mode == OFF:
            self._restart_scroll(now)
        elif self._mode != SCROLL and now - self._last_press >= MENU_TIMEOUT:
            self._restart_scroll(self._last_press + MENU_TIMEOUT)

    def _scroll_entries(self) -> tuple:
        items = self._definition(SCROLL_LIST).items
        message = self.settings.message()
        # the message's place in the cycle; its text is shown only on the message line, never in the
        # item code, value or unit fields, which carry values of the meter's objects alone (WELMEC S2)
        return ((_Fixed(MESSAGE_CODE, ""),) if message else ()) + items

    def _scroll_position(self, now: float, count: int) -> int:
        period = self._definition(SCROLL_LIST).period
        if count == 0 or period <= 0 or now < self._scroll_start:
            return 0
        return int((now - self._scroll_start) // period) % count

    def _menu(self) -> tuple[tuple[str, str], ...]:
        return tuple((target, text) for target, text in _MENU
                     if not target.startswith("profile-") or self.settings.profile_shown(int(target[-1])))

    def _list_entries(self) -> tuple:
        if self._mode == STANDARD:
            return self._definition(STANDARD_LIST).items
        if self._mode == SERVICE:
            return self._definition(SERVICE_LIST).items
        if self._mode == SOFTWARE_ID:
            return SOFTWARE_IDENTIFICATION
        return self._fixed  # test, profile

    def _list_position(self, now: float) -> int:
        """The item shown: the stepped one, advanced by the list's own interval since the last press."""
        count = len(self._list_entries()) + 1  # with "End"
        period = {STANDARD: self._definition(STANDARD_LIST).period,
                  SERVICE: self._definition(SERVICE_LIST).period}.get(self._mode, 0)
        steps = int((now - self._last_press) // period) if period > 0 and now > self._last_press else 0
        return (self._index + steps) % count

    def _view(self, now: float) -> tuple[str, tuple, int]:
        """(mode, the entries of the current list, the index shown)."""
        if self._mode == SCROLL:
            entries = self._scroll_entries()
            index = self._scroll_position(now, len(entries))
            shows_message = bool(self.settings.message()) and index == 0
            return (MESSAGE if shows_message else SCROLL), entries, index
        if self._mode == MENU:
            menu = self._menu()
            return MENU, tuple(_Fixed("", text) for _, text in menu), min(self._menu_cursor, len(menu) - 1)
        return self._mode, self._list_entries(), self._list_position(now)

    def _step(self, long: bool, now: float) -> None:
        if self._mode in (SCROLL, OFF):
            entries = self._scroll_entries()
            on_message = bool(self.settings.message()) and self._scroll_position(now, len(entries)) == 0
            if long:
                self._mode, self._menu_cursor = MENU, 0
            elif on_message:  # the consumer acknowledges the message: it is cleared
                self.settings.set_message("")
                self._message_seen = ""
                self._restart_scroll(now)
                if self._on_event is not None:
                    self._on_event("consumer_message_acknowledged", {})
            else:
                self._open(STANDARD)
            return
        if self._mode == MENU:
            menu = self._menu()
            cursor = min(self._menu_cursor, len(menu) - 1)
            if not long:
                self._menu_cursor = (cursor + 1) % len(menu)
                return
            target = menu[cursor][0]
            if target == SCROLL:
                self._restart_scroll(now)
            else:
                self._open(target)
            return
        # a list
        if long:
            target = f"profile-{self._profile}" if self._mode == PROFILE else self._mode
            menu = self._menu()
            self._menu_cursor = next((i for i, (t, _) in enumerate(menu) if t == target), 0)
            self._mode = MENU
        else:
            self._index = (self._list_position(now) + 1) % (len(self._list_entries()) + 1)

    def _open(self, target: str) -> None:
        self._index = 0
        if target.startswith("profile-"):
            self._profile = int(target[-1])
            self._mode = PROFILE
            self._fixed = self._profile_entries(self._profile)
        elif target == TEST:
            self._mode = TEST
            self._fixed = self._test_entries()
        else:
            self._mode = target

    # -- settings, lists, resolutions ------------------------------------------------------------
    def _settings_changed(self, what: str) -> None:
        with self._lock:
            if what == "message":
                message = self.settings.message()
                changed = message != self._message_seen
                if changed and self._mode != OFF and (message or self._mode == SCROLL):
                    # a new message is shown at once (from a menu or list too); a cleared one
                    # leaves the scroll cycle at its start
                    self._restart_scroll(self._clock_now())
                self._message_seen = message
            self._version += 1

    def _definition(self, ln: bytes) -> _ListDefinition:
        return (self._lists or {}).get(ln, _ListDefinition())

    def _refresh(self, now: float | None = None) -> None:
        """Read what the display is configured with (outside the lock: reads reach other parts).
        The demand period's start is read again only once the period it knows has run out."""
        lists = {}
        for ln in (SCROLL_LIST, STANDARD_LIST, SERVICE_LIST):
            objects = self._read(7, ln, 3)
            period = self._read(7, ln, 4)
            items = tuple(self._items(objects)) if objects is not None else ()
            lists[ln] = _ListDefinition(items, int(period.value) if _is_int(period) else 0)
        certification = read_certification(self._read_fn, self._say)
        resolution = self._read_resolution(certification)
        with self._lock:
            demand = self._demand
        if demand is None or now is None or not demand[0] <= now < demand[0] + demand[1]:
            demand = self._read_demand()
        with self._lock:
            if lists != self._lists or resolution != self._resolution:
                self._version += 1
            self._lists, self._resolution, self._demand = lists, resolution, demand
            self._certification = certification

    @staticmethod
    def _items(value: Data) -> list[Item]:
        items = []
        for entry in value.value if value.type == DataType.ARRAY else ():
            try:
                class_id, ln, attribute, data_index = (f.value for f in entry.value)
                if isinstance(ln, (bytes, bytearray)) and len(ln) == 6:
                    items.append((int(class_id), bytes(ln), int(attribute), int(data_index)))
            except (TypeError, ValueError, AttributeError):
                continue  # not an item: the object gives none such, but a display takes no chances
        return items

    def _parameter(self, name: str, default: int) -> int:
        if self._parameters is None:
            return default
        try:
            return int(dict(self._parameters()).get(name, default))
        except Exception:  # noqa: BLE001 - a display shows what it can
            self._say("display.parameters", "display: the display parameters cannot be read", level=logging.INFO)
            return default

    def _read_resolution(self, certification: tuple | None) -> Resolution:
        """The certification mode object's resolutions (enum 1..5 = 0..4 decimals); 0 ("no
        change") or unreadable: the display resolution parameters."""
        decimals = []
        for position, name in ((1, "display_energy_decimals"), (2, "display_demand_decimals")):
            res = certification[position] if certification is not None else 0
            if isinstance(res, int) and 1 <= res <= 5:
                decimals.append(res - 1)
            else:
                decimals.append(max(0, min(4, self._parameter(name, DEFAULT_DECIMALS))))
        return Resolution(*decimals)

    def _read_demand(self) -> tuple[float, int] | None:
        start = self._read(5, DEMAND_REGISTER, 7)
        period = self._read(5, DEMAND_REGISTER, 8)
        if start is None or start.type != DataType.OCTET_STRING or not _is_int(period) or period.value <= 0:
            return None
        try:
            when = axdr.decode_date_time(start.value).to_datetime()
        except (SmartmeterError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return when.timestamp(), int(period.value)

    # -- the LED and the demand output ----------------------------------------------------------------
    def _led_settings(self) -> tuple[int, int]:
        """Source and rate as the certification mode object said at the last tick."""
        certification = self._certification
        source = certification[3] if certification is not None else 0
        rate = certification[4] if certification is not None else 0
        if not isinstance(source, int) or not source:
            source = self._parameter("led_source", DEFAULT_LED_SOURCE)
        if not isinstance(rate, int) or not rate:
            rate = self._parameter("led_pulse_rate", DEFAULT_LED_RATE)
        return source, rate

    def _sample_led(self, now: float) -> int:
        source, rate = self._led_settings()
        registers: list[bytes] = []
        energy = Fraction(0)
        units = set()
        for bit, candidates in LED_SOURCES.items():
            if not source & (1 << bit):
                continue
            for obis in candidates:
                ln = Obis.parse(obis).to_bytes()
                value = self._read(3, ln, 2)
                scaler_unit = self._scaler_unit(3, ln)
                if _is_int(value) and scaler_unit is not None:
                    if ln not in registers:  # two quadrant bits of one register count it once
                        registers.append(ln)
                        energy += Fraction(value.value) * Fraction(10) ** scaler_unit[0]
                        units.add(UNITS.get(scaler_unit[1], ("", None))[0])
                    break
        self._led_unit = units.pop() if len(units) == 1 else "k-unit"
        return self._led.sample(now, rate, tuple(registers), energy)

    def _demand_output(self, now: float) -> bool:
        if self._demand is None:
            start, period = 0.0, DEFAULT_DEMAND_PERIOD
        else:
            start, period = self._demand
        return (now - start) % period < DEMAND_OUTPUT_OPEN

    def _current_indicators(self, now: float, message: str | None) -> Indicators:
        base = Indicators()
        if self._indicators is not None:
            try:
                base = self._indicators()
            except Exception:  # noqa: BLE001 - the symbols go dark, the display runs on
                self._say("display.indicators", "display: the indicators cannot be read", level=logging.INFO)
        tariff = base.tariff if self.settings.scheme() == LOCAL else None
        with self._lock:
            led_on = self._led.lit(now)
            demand_output = self._demand_output(now)
        return replace(base, tariff=tariff, led_on=led_on, demand_output=demand_output, message=message)

    # -- views prepared when they open ---------------------------------------------------------------
    def _test_entries(self) -> tuple[_Fixed, ...]:
        pulses = self._sample_led(self._clock_now())
        _, rate = self._led_settings()
        return (_Fixed("8.8.8.8.8", "88888888", "kWh"), _Fixed("LEd", str(pulses), "imp"),
                _Fixed("LEd.r", str(rate), f"imp/{self._led_unit}"))

    def _profile_entries(self, profile: int) -> tuple[_Fixed, ...]:
        """The newest entries of a load profile: each its capture time ("P.01"), +A and -A."""
        ln = LOAD_PROFILES[profile]
        columns = self._read(7, ln, 3)
        rows = self._rows(self._read(7, ln, 2))
        if columns is None or rows is None:
            return ()
        items = self._items(columns)
        wanted = [(i, item) for i, item in enumerate(items)
                  if (item[0], Obis.from_bytes(item[1])) in ((3, Obis.parse("1-0:1.8.0.255")), (3, Obis.parse("1-0:2.8.0.255")))]
        out: list[_Fixed] = []
        for row in rows[-PROFILE_ENTRIES_SHOWN:][::-1]:
            time = row[0] if row else None
            out.append(_Fixed(f"P.{profile:02d}", format_octets(time) if isinstance(time, bytes) else NO_VALUE))
            for i, (class_id, item_ln, attribute, _) in wanted:
                text, unit = format_value(row[i] if i < len(row) else None, Obis.from_bytes(item_ln),
                                          self._scaler_unit(class_id, item_ln, attribute), self._resolution)
                out.append(_Fixed(item_code(Obis.from_bytes(item_ln)), text, unit))
        return tuple(out)

    # -- reading and formatting ---------------------------------------------------------------------
    def _read(self, class_id: int, ln: bytes, attribute: int) -> Data | None:
        return read_value(self._read_fn, class_id, ln, attribute, self._say)

    @staticmethod
    def _rows(value: Data | None) -> list[tuple] | None:
        if value is None or value.type != DataType.ARRAY:
            return None
        try:
            if value.value is None and value.encoded is not None:
                return axdr.decode_rows(value.encoded)[0]
            return axdr.rows_of(value)
        except SmartmeterError:
            return None

    def _scaler_unit(self, class_id: int, ln: bytes, attribute: int = 2) -> tuple[int, int] | None:
        """The scaler and unit of a register's value attribute (read once: fixed by the model)."""
        scaled = SCALED.get(class_id)
        if scaled is None or attribute not in scaled[1]:
            return None
        key = (class_id, ln)
        if key not in self._scaler_units:
            value = self._read(class_id, ln, scaled[0])
            if value is None:
                return None  # not cached: the next read may succeed
            try:
                scaler, unit = (f.value for f in value.value)
                self._scaler_units[key] = (int(scaler), int(unit))
            except (TypeError, ValueError):
                self._scaler_units[key] = None
        return self._scaler_units[key]

    def _historical(self, class_id: int, obis: Obis, attribute: int) -> Any:
        """F = 101: the last billing profile entry's value of the object (F = 255); 102: the one before."""
        current = Obis(obis.a, obis.b, obis.c, obis.d, obis.e, 255).to_bytes()
        columns = self._read(7, BILLING_PROFILE, 3)
        if columns is None:
            return None
        index = next((i for i, item in enumerate(self._items(columns)) if item[:3] == (class_id, current, attribute)), None)
        rows = self._rows(self._read(7, BILLING_PROFILE, 2))
        back = obis.f - 100  # 1: the last entry, 2: the one before
        if index is None or rows is None or len(rows) < back or index >= len(rows[-back]):
            return None
        return rows[-back][index]

    def _render(self, entry) -> tuple[str, str, str]:
        if isinstance(entry, _Fixed):
            return entry.code, entry.value, entry.unit
        class_id, ln, attribute, data_index = entry
        obis = Obis.from_bytes(ln)
        if obis.f in _HISTORICAL:
            value = self._historical(class_id, obis, attribute)
            scaler_unit = self._scaler_unit(class_id, Obis(obis.a, obis.b, obis.c, obis.d, obis.e, 255).to_bytes(),
                                            attribute)
        else:
            data = self._read(class_id, ln, attribute)
            value = None if data is None else (data.to_python() if data.value is not None else None)
            scaler_unit = self._scaler_unit(class_id, ln, attribute)
        if data_index and value is not None:
            value = value[data_index - 1] if isinstance(value, list) and data_index <= len(value) else None
        with self._lock:
            resolution = self._resolution
        text, unit = format_value(value, obis, scaler_unit, resolution)
        return item_code(obis), text, unit

    # -- helpers ------------------------------------------------------------------------------------
    def _is_powered(self) -> bool:
        if self._powered is None:
            return True
        try:
            return bool(self._powered())
        except Exception:  # noqa: BLE001
            return False

    def _publish(self, screen: Screen) -> None:
        with self._lock:
            if screen != self._last_screen:
                self._last_screen = screen
                self._version += 1


def indicators_from_objects(read: Callable[[int, bytes, int], Any],
                            communication: Callable[[], bool] = lambda: False) -> Callable[[], Indicators]:
    """The symbols from the meter's objects, for Display(indicators=...): the active tariff
    (0-0:96.14.0.255), the disconnector's output (0-0:96.3.10.255 open: disconnected), an alarm
    (error, fatal error or alarm register not 0), the certification mode (0-0:94.43.143.255);
    `communication` says whether a client is associated (only the runtime knows)."""
    say = RateLimitedLog(log)

    def indicators() -> Indicators:
        tariff = read_value(read, 1, ACTIVE_TARIFF, 2, say)
        output = read_value(read, 70, DISCONNECTOR, 2, say)
        alarm = any(_is_int(v) and v.value != 0 for v in (read_value(read, 1, ln, 2, say) for ln in ALARM_SOURCES))
        certification = read_certification(read, say)
        name = tariff.value.decode("ascii", "replace") if tariff is not None and isinstance(tariff.value, bytes) else ""
        return Indicators(
            tariff=name or None,
            disconnected=output is not None and output.value is False,
            communication=bool(communication()),
            alarm=alarm,
            certification=bool(certification is not None and certification[0] is True))

    return indicators
