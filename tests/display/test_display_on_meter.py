"""The display of a real meter process (`smartmeter meter run --http-port`) in a real browser
(Debian's Chromium under Playwright): the scroll list advances at its interval, [A] steps through
the lists and the menu, [R] resets the billing period once and is ignored during its lock, the
consumer message appears, survives a power failure and is cleared by the button, 1.8.0 on the LCD is
what gurux-dlms reads over DLMS, and the software identification is what `smartmeter id` says.

Expected item codes are made here from the model's display lists by the OBIS short-code convention
of real meters (value groups C.D.E; C = 96/97/98/99 written C/F/L/P, the error register "F.F";
F = 101/102 the last and the one before last billing value, "VZ" and "VZ-1"; B > 0 prefixed "A-B:")."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from meterproc import MeterProcess, free_port, start_meter
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.meter.control import request as control_request

SCROLL_LIST, STANDARD_LIST = "0-0:21.0.1.255", "0-0:21.0.2.255"
CONSUMER_MESSAGE = "0-0:96.13.1.255"
LETTERS = {96: "C", 97: "F", 98: "L", 99: "P"}


def short_code(obis: str) -> str:
    a_b, rest = obis.split(":")
    a, b = (int(x) for x in a_b.split("-"))
    c, d, e, f = (int(x) for x in rest.split("."))
    # the error register 0-0:97.97.0 is "F.F" on every meter (IEC 62056-21's error code)
    code = "F.F" if (c, d, e) == (97, 97, 0) else f"{LETTERS.get(c, c)}.{d}.{e}"
    if f == 101:
        code += ".VZ"
    elif f == 102:
        code += ".VZ-1"
    return f"{a}-{b}:{code}" if b > 0 else code


def list_codes(obis: str) -> tuple[list[str], int]:
    """(codes of a display list's items, its capture_period) as the meter's model defines them."""
    (entry,) = [o for o in ObjectModel.load("ksmw").objects if str(o.obis) == obis]
    return [short_code(ln) for _, ln, _, _ in entry.config["capture_objects"]], int(entry.config["capture_period"])


class Meter:
    """A meter process with its display on a port of its own; restartable on the same ports."""

    def __init__(self, data_dir) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.ports = (free_port(), free_port())
        self.process: MeterProcess | None = None
        self.start()

    def start(self) -> None:
        self.process = start_meter(self.data_dir, "--http-port", str(self.http_port), ports=self.ports)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def status(self) -> dict:
        answer = control_request(self.data_dir, {"status": True})
        assert answer["ok"], answer
        return answer["status"]

    def control(self, **fields) -> None:
        answer = control_request(self.data_dir, fields)
        assert answer["ok"], answer

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "smartmeter", *args], capture_output=True, text=True,
                              timeout=60)

    def management(self, *args: str) -> subprocess.CompletedProcess:
        return self.cli("client", "--port", str(self.ports[0]), "--credentials",
                        str(self.data_dir / "credentials" / "management.json"), *args)


@pytest.fixture
def meter(tmp_path):
    m = Meter(tmp_path / "meter")
    yield m
    m.process.stop()


# -- what the page shows, and pressing its buttons ---------------------------------------------------

def shown(page) -> dict:
    """What the LCD shows, read at one instant (the page draws a screen in one go)."""
    return page.eval_on_selector("#meter", """meter => {
        const text = id => document.getElementById(id).getAttribute("data-text");
        return {mode: document.getElementById("lcd").getAttribute("data-mode"), code: text("code"),
                value: text("value"), unit: text("unit"), message: text("message"),
                position: document.getElementById("position").textContent};
    }""")


def open_page(page, meter) -> None:
    page.goto(meter.url)
    page.wait_for_selector('#meter[data-connected="true"]')
    page.wait_for_selector('#lcd[data-mode="scroll"], #lcd[data-mode="message"]')


def wait_shown(page, timeout: float = 5.0, **expected) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        now = shown(page)
        if all(now[k] == v for k, v in expected.items()):
            return now
        assert time.monotonic() < deadline, f"the page shows {now}, not {expected}"
        time.sleep(0.05)


def press(page, button: str, long: bool = False) -> None:
    """A press of the page's button as a person makes it: a click, or held until it is long."""
    selector = f"#button-{button.lower()}"
    count = int(page.get_attribute("#last-press", "data-count") or 0)
    if long:
        page.hover(selector)
        page.mouse.down()
        page.wait_for_selector(f'{selector}[data-pressed="long"]', timeout=5000)
        page.mouse.up()
    else:
        page.click(selector)
    page.wait_for_selector(f'#last-press[data-count="{count + 1}"]')


# -- the tests ------------------------------------------------------------------------------------

def test_the_scroll_list_advances_at_its_interval(meter, page):
    codes, interval = list_codes(SCROLL_LIST)
    assert interval == 5 and codes[:2] == ["1.8.0", "2.8.0"]
    open_page(page, meter)
    seen, deadline = [], time.monotonic() + 4 * interval + 3
    while len(seen) < 5 and time.monotonic() < deadline:  # the first item seen and four changes
        code = page.get_attribute("#code", "data-text")
        if not seen or code != seen[-1][1]:
            seen.append((time.monotonic(), code))
        time.sleep(0.02)
    assert len(seen) == 5, seen
    first = codes.index(seen[0][1])
    assert [c for _, c in seen] == [codes[(first + n) % len(codes)] for n in range(5)]
    # the page learns of a change within a poll (0.25 s) and a frame: the steps are 5 s apart
    steps = [b[0] - a[0] for a, b in zip(seen[1:], seen[2:])]
    assert all(abs(step - interval) < 0.6 for step in steps), steps
    assert page.inner_text("#position").startswith("data scroll list \u00b7 ")


def test_a_steps_through_the_standard_list_and_the_menu(meter, page):
    codes, _ = list_codes(STANDARD_LIST)
    open_page(page, meter)
    press(page, "A")  # in scroll mode: the legally relevant values, first item
    wait_shown(page, mode="standard", code=codes[0], position=f"standard data list \u00b7 1 of {len(codes)}")
    for n in range(1, len(codes)):
        press(page, "A")
        now = wait_shown(page, position=f"standard data list \u00b7 {n + 1} of {len(codes)}")
        assert now["code"] == codes[n] and now["mode"] == "standard"
    press(page, "A")
    wait_shown(page, value="End", position="standard data list \u00b7 end of the list")
    press(page, "A")
    wait_shown(page, code=codes[0], position=f"standard data list \u00b7 1 of {len(codes)}")
    press(page, "A", long=True)  # back to the menu, on the list's entry
    wait_shown(page, mode="menu", value="Std-dAtA")
    press(page, "A")
    wait_shown(page, mode="menu", value="SEr-dAtA")


def test_r_resets_billing_once_and_is_ignored_during_its_lock(meter, page):
    before = meter.status()["billing"]
    assert before["reset lock until"] is None
    open_page(page, meter)
    press(page, "R")
    deadline = time.monotonic() + 5
    while meter.status()["billing"]["counter"] != before["counter"] + 1:
        assert time.monotonic() < deadline, "the billing period did not end"
        time.sleep(0.1)
    locked = meter.status()["billing"]
    assert locked["reset lock until"] is not None
    for _ in range(2):  # pressed again within the lock: ignored
        press(page, "R")
        press(page, "R", long=True)
    time.sleep(1.0)
    assert meter.status()["billing"]["counter"] == before["counter"] + 1


def test_the_consumer_message_appears_survives_a_power_failure_and_the_button_clears_it(meter, page):
    text = "Planned outage 12 March 08:00-10:00"
    open_page(page, meter)
    written = meter.management("set", CONSUMER_MESSAGE, "octet-string:" + text.encode().hex())
    assert written.returncode == 0, written.stderr
    wait_shown(page, mode="message", message=text)  # at once: the first item of a new cycle
    meter.process.power_failure()
    page.wait_for_selector('#meter[data-connected="false"]', timeout=5000)
    meter.start()
    page.wait_for_selector('#meter[data-connected="true"]', timeout=15000)
    wait_shown(page, message=text, timeout=10)
    wait_shown(page, mode="message", timeout=10 * list_codes(SCROLL_LIST)[1])  # its turn in the cycle
    press(page, "A")  # on the message: the consumer acknowledges it
    wait_shown(page, message="", mode="scroll")
    read = meter.management("--json", "get", CONSUMER_MESSAGE)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["value"] in ("", [], {"octet-string": ""})


def test_1_8_0_shown_is_what_gurux_reads_within_one_register_step(meter, page):
    from gurux_dlms.objects import GXDLMSRegister

    from interop.gurux_peer import GuruxClient
    from interop.meter_control import quiet

    meter.control(input="load", power=360)  # 0.1 Wh a second: a register step of 1 Wh takes 10 s
    open_page(page, meter)
    press(page, "A")
    codes, _ = list_codes(STANDARD_LIST)
    for _ in range(codes.index("1.8.0")):
        press(page, "A")
    wait_shown(page, code="1.8.0", mode="standard")
    client = GuruxClient(meter.ports[0])
    quiet(client.associate)
    try:
        register = GXDLMSRegister("1.0.1.8.0.255")
        for _ in range(3):
            page.wait_for_timeout(600)  # a screen at least one poll after the previous read
            shown_value = shown(page)
            read_wh = quiet(client.read, register, 2)
            page.wait_for_timeout(600)
            after = shown(page)
            assert shown_value["unit"] == "kWh" and re.fullmatch(r"\d{6}\.\d{3}", shown_value["value"])
            before_wh = round(float(shown_value["value"]) * 1000)
            after_wh = round(float(after["value"]) * 1000)
            # the display truncates to 1 Wh: what it showed before the read is at most the
            # register, what it shows after is at least it, and they are one register step apart
            assert before_wh <= read_wh <= after_wh <= before_wh + 1, (before_wh, read_wh, after_wh)
    finally:
        client.close()


@pytest.mark.welmec("P2")
def test_the_software_identification_shown_is_what_smartmeter_id_says(meter, page):
    """On command (the display's menu, SoFt-id), the meter's display in a real browser shows the software identification of the legally relevant part, the application and the platform exactly as `smartmeter id --data-dir` gives them."""
    ident = meter.cli("id", "--data-dir", str(meter.data_dir))
    assert ident.returncode == 0, ident.stderr
    parts = {}
    for line in ident.stdout.splitlines():
        found = re.match(r"(legally relevant part|application|platform)\s{2,}(.+?)\s+sha256 ([0-9a-f]{64})$", line)
        if found:
            parts[found[1]] = (found[2], found[3])
    assert set(parts) == {"legally relevant part", "application", "platform"}, ident.stdout
    open_page(page, meter)
    press(page, "A", long=True)
    wait_shown(page, mode="menu", value="Std-dAtA")
    for _ in range(10):
        if shown(page)["value"] == "SoFt-id":
            break
        value = shown(page)["value"]
        press(page, "A")
        deadline = time.monotonic() + 5
        while shown(page)["value"] == value:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert shown(page)["value"] == "SoFt-id"
    press(page, "A", long=True)
    now = wait_shown(page, mode="software-id")
    items = {}
    while now["value"] != "End":
        items[now["code"]] = now["value"]
        position = now["position"]
        press(page, "A")
        deadline = time.monotonic() + 5
        while (now := shown(page))["position"] == position:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert items == {
        "0.2.0": parts["legally relevant part"][0], "0.2.8": parts["legally relevant part"][1],
        "1-1:0.2.0": parts["application"][0], "1-1:0.2.8": parts["application"][1],
        "1-2:0.2.0": parts["platform"][0], "1-2:0.2.8": parts["platform"][1]}


def test_the_charts_draw_the_meters_own_load_profile(meter, page):
    """The first start back-fills 30 days of load profile: yesterday (meter local time) is drawn
    with one point per stored entry, on an axis that holds their +A."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")  # the meter's default time zone
    today = dt.datetime.fromtimestamp(meter.status()["clock"]["utc"], zone).date()
    day = today - dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time(), zone).timestamp()
    end = dt.datetime.combine(today, dt.time(), zone).timestamp()
    stored = [row for row in meter.process.profile_rows() if start <= row[0] <= end]
    assert len(stored) >= 90, "the back-filled profile has yesterday's entries"
    page.goto(f"{meter.url}charts?obis=1-0:99.1.0.255&from={day.isoformat()}&to={day.isoformat()}&values=1")
    page.wait_for_selector("#summary[data-rows]")
    assert page.get_attribute("#summary", "data-rows") == str(len(stored))
    page.uncheck('#legend input[data-column="1-0:2.8.0.255"]')
    drawn = page.eval_on_selector_all('#chart polyline.series[data-column="1-0:1.8.0.255"]',
                                      "els => els.map(e => e.getAttribute('points').split(' ').length)")
    assert sum(drawn) == len(stored)
    low, high = page.eval_on_selector("#chart .y-axis", "a => [+a.getAttribute('data-min'), +a.getAttribute('data-max')]")
    a_plus = [row[2] for row in stored]  # Wh (scaler 0)
    assert low <= min(a_plus) and high >= max(a_plus)
