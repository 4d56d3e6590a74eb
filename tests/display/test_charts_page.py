"""The charts page in a real browser (Debian's Chromium under Playwright): it draws the rows the
meter gives for the chosen days - one SVG point a row, energy per interval as the differences -
scales its axes to them, zooms, breaks the line where entries are missing; and its screenshot."""
from __future__ import annotations

import datetime as dt
import math
import re

import pytest

from display_fakes import DOCS, FakeDisplay, Presses, ServerThread, cosem_time, png_pixels, save_screenshot

ZONE = dt.timezone(dt.timedelta(hours=1))  # the meter's zone in these rows (winter time, CET)
START = int(dt.datetime(2026, 3, 1, tzinfo=ZONE).timestamp())  # 2026-03-01 00:00 local
DAY = 86400
LP1, LP2, PQ = "1-0:99.1.0.255", "1-0:99.2.0.255", "1-0:99.14.0.255"
A_PLUS = "1-0:1.8.0.255"


def household(n: int) -> int:
    """Wh drawn in the 15 minutes ending at entry n: a base load, a morning and an evening peak."""
    hour = (n % 96) / 4
    return round(60 + 260 * math.exp(-((hour - 7.5) / 1.2) ** 2) + 420 * math.exp(-((hour - 19) / 1.8) ** 2)
                 + 3 * ((n * n * 7 + n * 13) % 17))  # and some jitter


class Meter:
    """The rows of a meter whose load profile runs from START for `days` days: COSEM form, only
    those within the asked range, as the meter's profile sources answer."""

    def __init__(self, days: int = 3, missing: range = range(0)) -> None:
        self.asked: list[tuple] = []
        self.lp1, energy = [], 1_000_000
        for n in range(days * 96 + 1):
            if n:
                energy += household(n)
            if n not in missing:
                self.lp1.append((START + 900 * n, 0, energy, 5 * n, 2 * n, n))
        self.lp2 = [(t, s, *v) for (t, s, *v) in self.lp1 if (t - START) % DAY == 0]
        self.pq = [(START + 600 * n, 0, *(2300 + round(35 * math.sin(n / 23 + k)) for k in range(3)),
                    *(2260 + k for k in range(3)), *(2345 + k for k in range(3)), 4000, 5000, 6000)
                   for n in range(days * 144)]

    def __call__(self, obis, start, end):
        self.asked.append((obis, start, end))
        rows = {LP1: self.lp1, LP2: self.lp2, PQ: self.pq}[obis]
        return [(cosem_time(t, 60), *rest) for t, *rest in rows
                if (start is None or t >= start) and (end is None or t <= end)]


@pytest.fixture
def meter_rows():
    rows = Meter()
    thread = ServerThread(FakeDisplay(), Presses(), rows, clock_now=lambda: START + 3 * DAY - 1800)
    yield rows, thread
    thread.close()


def show(page, thread, query):
    page.goto(f"{thread.url}charts?{query}")
    page.wait_for_selector("#summary[data-rows]")


def points(page, column=A_PLUS):
    """[[(x, y), ...] per polyline] of a column's series as drawn."""
    lines = page.eval_on_selector_all(f'#chart polyline.series[data-column="{column}"]',
                                      "els => els.map(e => e.getAttribute('points'))")
    return [[tuple(map(float, p.split(","))) for p in line.split()] for line in lines]


def y_axis(page, index=0):
    axes = page.eval_on_selector_all("#chart .y-axis", "els => els.map(e => [e.getAttribute('data-unit'), "
                                     "+e.getAttribute('data-min'), +e.getAttribute('data-max')])")
    return axes[index]


def view(page):
    return (float(page.get_attribute("#chart", "data-view-from")), float(page.get_attribute("#chart", "data-view-to")))


def test_one_point_a_row_of_the_chosen_day(meter_rows, page):
    rows, thread = meter_rows
    show(page, thread, f"obis={LP1}&from=2026-03-02&to=2026-03-02&values=1")
    day = [r for r in rows.lp1 if START + DAY <= r[0] <= START + 2 * DAY]  # 00:00 to 24:00 local
    assert len(day) == 97 and page.get_attribute("#summary", "data-rows") == "97"
    (line,) = points(page)
    assert len(line) == 97
    assert len(points(page, "1-0:2.8.0.255")[0]) == 97  # -A is the other Wh series shown at first
    page.uncheck('#legend input[data-column="1-0:2.8.0.255"]')
    assert points(page, "1-0:2.8.0.255") == []
    (line,) = points(page)  # the axis now scales to +A alone
    assert len(line) == 97
    xs = [x for x, _ in line]
    assert xs == sorted(xs) and len(set(xs)) == 97
    unit, low, high = y_axis(page)
    energies = [r[2] for r in day]
    assert unit == "Wh" and low <= min(energies) and high >= max(energies)
    assert high - low <= 2 * (max(energies) - min(energies))
    # the highest value is drawn highest (SVG y grows downwards)
    assert min(range(97), key=lambda n: line[n][1]) == energies.index(max(energies))
    assert view(page) == (day[0][0], day[-1][0])
    # the meter was asked for the day with a margin for any time zone
    obis, asked_from, asked_to = rows.asked[-1]
    midnight_utc = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc).timestamp()
    assert (obis, asked_from, asked_to) == (LP1, midnight_utc - 14 * 3600, midnight_utc + DAY + 14 * 3600)


def test_energy_per_interval_is_the_increase_between_entries(meter_rows, page):
    rows, thread = meter_rows
    show(page, thread, f"obis={LP1}&from=2026-03-01&to=2026-03-02")
    assert page.is_checked("#per-interval")
    (line,) = points(page)
    assert len(line) == 2 * 96  # the first entry (00:00) has no interval before it within the days
    increases = [household(n) for n in range(1, 2 * 96 + 1)]
    unit, low, high = y_axis(page)
    assert unit == "Wh per interval" and low <= min(increases) and high >= max(increases)
    assert high - low <= 2 * (max(increases) - min(increases))
    assert min(range(len(line)), key=lambda n: line[n][1]) == increases.index(max(increases))
    page.uncheck("#per-interval")
    (line,) = points(page)
    assert len(line) == 2 * 96 + 1 and "values=1" in page.url


def test_zoom_by_dragging_wheel_and_back_to_the_whole_days(meter_rows, page):
    rows, thread = meter_rows
    show(page, thread, f"obis={LP1}&from=2026-03-01&to=2026-03-01&values=1")
    whole = view(page)
    box = page.locator("#chart").bounding_box()
    left, right = box["x"] + 78, box["x"] + box["width"] - 78  # the plot's margins (charts.js)
    page.mouse.move(left + 0.25 * (right - left), box["y"] + 120)
    page.mouse.down()
    page.mouse.move(left + 0.75 * (right - left), box["y"] + 160, steps=6)
    page.mouse.up()
    start, end = view(page)
    span = whole[1] - whole[0]
    assert abs(start - (whole[0] + 0.25 * span)) < 0.02 * span and abs(end - (whole[0] + 0.75 * span)) < 0.02 * span
    expected = [r for r in rows.lp1 if start <= r[0] <= end]
    assert sum(len(line) for line in points(page)) == len(expected) < 97
    page.mouse.move(left + 0.5 * (right - left), box["y"] + 150)
    page.mouse.wheel(0, -100)
    narrower = view(page)
    assert narrower[1] - narrower[0] == pytest.approx(0.8 * (end - start), rel=1e-6)
    page.dblclick("#chart")
    assert view(page) == whole and sum(len(line) for line in points(page)) == 97
    page.click("#zoom-in")
    assert view(page)[1] - view(page)[0] == pytest.approx(span / 2)
    page.click("#zoom-reset")
    assert view(page) == whole


def test_missing_entries_break_the_line_in_the_chart(browser):
    rows = Meter(days=1, missing=range(40, 48))  # two hours without entries (a power failure)
    thread = ServerThread(FakeDisplay(), Presses(), rows)
    context = browser.new_context(viewport={"width": 1000, "height": 600})
    try:
        page = context.new_page()
        show(page, thread, f"obis={LP1}&from=2026-03-01&to=2026-03-01&values=1")
        lines = points(page)
        assert [len(line) for line in lines] == [40, 97 - 48]
        page.check("#per-interval")
        # an increase needs the entry before it: none after the gap's first entry
        assert [len(line) for line in points(page)] == [39, 97 - 48 - 1]
    finally:
        context.close()
        thread.close()


def test_power_quality_in_volts_and_the_daily_profile(meter_rows, page):
    rows, thread = meter_rows
    show(page, thread, f"obis={PQ}&from=2026-03-02&to=2026-03-02")
    drawn = page.eval_on_selector_all("#chart polyline.series", "els => els.map(e => e.getAttribute('data-column'))")
    assert drawn == ["1-0:32.24.0.255", "1-0:52.24.0.255", "1-0:72.24.0.255"]  # the average voltages
    day = [r for r in rows.pq if START + DAY <= r[0] <= START + 2 * DAY]
    volts = [v / 10 for r in day for v in r[2:5]]
    unit, low, high = y_axis(page)
    assert unit == "V" and low <= min(volts) and high >= max(volts) and high - low < 20
    assert all(len(line) == len(day) for line in (points(page, c) for c in drawn) for line in line)
    assert page.is_disabled("#per-interval")  # nothing of it is cumulative
    # the currents join on a second axis
    page.check('#legend input[data-column="1-0:31.24.0.255"]')
    assert y_axis(page, 1)[0] == "A"
    show(page, thread, f"obis={LP2}&from=2026-03-01&to=2026-03-02")
    (line,) = points(page)
    assert len(line) == 2  # the days' consumption: 00:00 to 00:00, twice


def test_choosing_days_in_the_form(meter_rows, page):
    rows, thread = meter_rows
    page.goto(f"{thread.url}charts")
    page.wait_for_selector("#summary[data-rows]")
    # without days in the address the page shows the meter's latest day (its clock: 03-03 23:30)
    assert (page.input_value("#from-day"), page.input_value("#to-day")) == ("2026-03-03", "2026-03-03")
    page.fill("#from-day", "2026-03-01")
    page.fill("#to-day", "2026-03-02")
    page.click("#show")
    page.wait_for_selector('#summary[data-rows="193"]')
    assert re.search(r"from=2026-03-01&to=2026-03-02", page.url)
    page.select_option("#profile", PQ)
    page.wait_for_selector("#title:has-text('99.14.0')")
    page.wait_for_selector(f'#summary[data-rows="{2 * 144 + 1}"]')


def test_screenshot_of_the_charts(meter_rows, browser):
    rows, thread = meter_rows
    context = browser.new_context(viewport={"width": 1040, "height": 690})
    try:
        page = context.new_page()
        show(page, thread, f"obis={LP1}&from=2026-03-01&to=2026-03-02")
        page.uncheck('#legend input[data-column="1-0:2.8.0.255"]')
        box = page.locator("#chart").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + 200)
        page.wait_for_selector("#chart .tip")
        path = DOCS / "charts.png"
        shot = page.screenshot()  # the viewport as it is (a full-page shot redraws without the tooltip)
        save_screenshot(shot, path)
        assert png_pixels(path.read_bytes()) == png_pixels(shot) and len(shot) > 10_000
    finally:
        context.close()
