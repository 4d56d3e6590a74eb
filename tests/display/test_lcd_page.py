"""The LCD page in a real browser (Debian's Chromium under Playwright) against a fake engine: it
shows the screen in segments and annunciators, follows every change live, sends the button
presses, comes back after the server restarts; and its screenshot for the README."""
from __future__ import annotations

import time

from display_fakes import DOCS, FakeDisplay, Presses, ServerThread, png_pixels, save_screenshot

# the lit segments of a 7-segment digit, as on any such display (a top, b/c right, d bottom,
# e/f left, g middle)
SEVEN = {"0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg", "5": "acdfg", "6": "acdefg",
         "7": "abc", "8": "abcdefg", "9": "abcdfg"}


def lit(page, selector):
    """[(char, lit segments, decimal point)] of the segment cells of a field, blanks included."""
    return page.eval_on_selector(selector, """field => Array.from(field.querySelectorAll("svg.cell")).map(cell => [
        cell.getAttribute("data-char"),
        Array.from(cell.querySelectorAll(".s.on")).map(s => s.getAttribute("data-seg")).filter(s => s && s !== "dp").sort().join(""),
        !!cell.querySelector('[data-seg="dp"].on')])""")


def on(page, selector) -> bool:
    return page.get_attribute(selector, "data-on") == "true"


def wait_text(page, selector, text, timeout=3000):
    page.wait_for_selector(f"{selector}[data-text=\"{text}\"]", timeout=timeout)


def test_the_page_shows_the_screen_in_segments_and_symbols(served, page):
    display, _, thread = served
    display.show(code="1.8.0", value="000123.456", unit="kWh", index=0, count=5, tariff="T1", communication=True,
                 alarm=True, message="Planned outage 12.03. 08:00-10:00")
    page.goto(thread.url)
    wait_text(page, "#value", "000123.456")
    # every digit in its 7-segment form, the decimal point after the "3"
    cells = [c for c in lit(page, "#value") if c[0] != " "]
    assert [c[0] for c in cells] == list("000123456")
    for char, segments, _ in cells:
        assert segments == "".join(sorted(SEVEN[char])), char
    assert [c[2] for c in cells] == [False] * 5 + [True] + [False] * 3
    assert page.get_attribute("#code", "data-text") == "1.8.0"
    assert [(c[0], c[2]) for c in lit(page, "#code") if c[0] != " "] == [("1", True), ("8", True), ("0", False)]
    # the unit by the LCD's unit symbols: k, W and h lit, the others dark
    lit_units = page.eval_on_selector_all('#unit .u[data-on="true"]', "els => els.map(e => e.textContent)")
    assert lit_units == ["k", "W", "h"]
    assert on(page, "#ind-t1") and not on(page, "#ind-t2")
    assert on(page, "#ind-communication") and on(page, "#ind-alarm")
    assert not on(page, "#ind-disconnected") and not on(page, "#ind-certification")
    assert page.get_attribute("#message", "data-text") == "Planned outage 12.03. 08:00-10:00"
    assert page.inner_text("#position") == "data scroll list \u00b7 1 of 5"


def test_letters_take_7_segments_where_they_can_and_14_where_not(served, page):
    display, _, thread = served
    display.show(code="F.F", value="Std-dAtA", unit="", mode="menu")
    page.goto(thread.url)
    wait_text(page, "#value", "Std-dAtA")
    assert page.get_attribute("#value", "data-kind") == "7"
    cells = [c for c in lit(page, "#value") if c[0] != " "]
    assert [(c[0], c[1]) for c in cells] == [("S", "acdfg"), ("t", "defg"), ("d", "bcdeg"), ("-", "g"),
                                             ("d", "bcdeg"), ("A", "abcefg"), ("t", "defg"), ("A", "abcefg")]
    display.show(code="1.8.0.VZ", value="KSMW 1.0")
    wait_text(page, "#value", "KSMW 1.0")
    assert page.get_attribute("#value", "data-kind") == "14"  # K, M and W need the diagonals
    assert page.get_attribute("#code", "data-kind") == "14"
    assert [c[0] for c in lit(page, "#value") if c[0] != " "] == list("KSMW10")


def test_the_page_follows_the_display_live(served, page):
    display, _, thread = served
    page.goto(thread.url)
    wait_text(page, "#value", "000123.456")
    assert page.get_attribute("#meter", "data-connected") == "true"
    delays = []
    for n, value in enumerate(("000123.457", "000123.458", "000123.459")):
        started = time.monotonic()
        display.show(value=value, index=n + 1)
        wait_text(page, "#value", value)
        delays.append(time.monotonic() - started)
    assert max(delays) < 1.5, delays
    display.show(tariff="T2", disconnected=True, certification=True, alarm=True)
    page.wait_for_selector('#ind-t2[data-on="true"]')
    assert not on(page, "#ind-t1") and on(page, "#ind-disconnected") and on(page, "#ind-certification")
    display.show(message="Hello consumer")
    wait_text(page, "#message", "Hello consumer")
    display.show(message=None)
    wait_text(page, "#message", "")
    # the test LED and the demand output blink as the engine switches them
    for state in (True, False, True, False):
        display.show(led_on=state, demand_output=not state)
        page.wait_for_selector(f'#led[data-on="{str(state).lower()}"]')
        page.wait_for_selector(f'#demand[data-on="{str(not state).lower()}"]')


def test_the_buttons_send_short_and_long_presses(served, page):
    _, presses, thread = served
    page.goto(thread.url)
    wait_text(page, "#value", "000123.456")
    page.click("#button-a")  # a click is a short press
    page.wait_for_selector('#last-press[data-count="1"]')
    assert presses.list() == [("A", False)]
    long_ms = page.evaluate("MeterDisplay.LONG_PRESS_MS")
    page.hover("#button-r")
    page.mouse.down()
    started = time.monotonic()
    page.wait_for_selector('#last-press[data-count="2"]', timeout=long_ms + 2000)
    held = time.monotonic() - started
    page.wait_for_timeout(300)
    page.mouse.up()
    page.wait_for_timeout(300)
    assert presses.list() == [("A", False), ("R", True)]  # sent once, when held long enough
    assert long_ms / 1000 - 0.1 <= held < long_ms / 1000 + 1.0
    page.focus("#button-a")
    page.keyboard.press("Enter")
    page.wait_for_selector('#last-press[data-count="3"]')
    assert presses.list()[-1] == ("A", False)
    assert page.inner_text("#last-press") == "[A] pressed"


def test_a_press_the_meter_refuses_is_shown(page):
    def refuse(button, long):
        raise RuntimeError("power failure")

    thread = ServerThread(FakeDisplay(), refuse)
    try:
        page.goto(thread.url)
        page.wait_for_selector('#meter[data-connected="true"]')
        page.click("#button-a")
        page.wait_for_selector('#last-press[data-count="1"]')
        assert page.inner_text("#last-press").startswith("[A] refused:")
    finally:
        thread.close()


def test_the_page_reconnects_when_the_server_comes_back(page):
    display = FakeDisplay()
    first = ServerThread(display, Presses())
    port = first.server.port
    page.goto(first.url)
    wait_text(page, "#value", "000123.456")
    first.close()
    page.wait_for_selector('#meter[data-connected="false"]', timeout=5000)
    display.show(value="000999.000")
    second = ServerThread(display, Presses(), port=port)  # the meter back after a restart
    try:
        wait_text(page, "#value", "000999.000", timeout=8000)
        assert page.get_attribute("#meter", "data-connected") == "true"
    finally:
        second.close()


def test_screenshot_of_the_display(served, page):
    display, _, thread = served
    display.show(code="1.8.0", value="004711.250", unit="kWh", index=0, count=8, tariff="T1", communication=True,
                 led_on=True, message="Planned maintenance on 12 March, 08:00 to 10:00")
    display.pulses = 4711250
    page.goto(thread.url)
    wait_text(page, "#value", "004711.250")
    page.wait_for_selector("#led-pulses:has-text('4711250')")
    path = DOCS / "display.png"
    shot = page.screenshot(full_page=True)
    save_screenshot(shot, path)
    assert png_pixels(path.read_bytes()) == png_pixels(shot) and len(shot) > 10_000
