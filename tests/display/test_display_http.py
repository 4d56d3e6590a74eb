"""The display's web server over plain HTTP: the screen as JSON, live events, the buttons, the
profile rows for the charts, its bounds and its answers to bad requests."""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from display_fakes import FakeDisplay, Presses, ServerThread, cosem_time
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.meter import display_http
from smartmeter.meter.display_http import MAX_BODY, MAX_STREAMS, DisplayServer, profile_descriptions


def request(thread, method, path, body=None, headers=None):
    """-> (status, headers, body bytes) of one request to the server."""
    connection = http.client.HTTPConnection("127.0.0.1", thread.server.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def press(thread, payload, content_type="application/json", **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(thread, "POST", "/api/button", body, {"Content-Type": content_type, **headers})


def one_line_error(status_headers_body) -> str:
    _, headers, body = status_headers_body
    assert headers["Content-Type"].startswith("application/json")
    assert b"\n" not in body.strip()
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


class EventStream:
    """GET /events read line by line from a raw socket (a browser's EventSource, by hand)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self._pending = b""

    def _more(self) -> bytes:
        if not self.chunked:
            return self.file.read1(4096)
        size = int(self.file.readline().strip(), 16)
        data = self.file.read(size)
        self.file.readline()
        return data

    def next_block(self, timeout: float = 5.0) -> str:
        """The next event or comment (up to a blank line)."""
        self.sock.settimeout(timeout)
        while b"\n\n" not in self._pending:
            data = self._more()
            if not data:
                raise EOFError("the stream ended")
            self._pending += data
        block, self._pending = self._pending.split(b"\n\n", 1)
        return block.decode()

    def next_screen(self, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            block = self.next_block(max(0.1, deadline - time.monotonic()))
            data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
            if data:
                return json.loads("".join(data))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_the_screen_is_the_engines_as_json(served):
    display, _, thread = served
    display.show(code="1.8.1", value="000042.000", unit="kWh", index=1, count=7, tariff="T1", alarm=True,
                 message="Hello")
    status, headers, body = request(thread, "GET", "/api/screen")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    screen = json.loads(body)
    assert {k: screen[k] for k in ("mode", "code", "value", "unit", "index", "count")} == {
        "mode": "scroll", "code": "1.8.1", "value": "000042.000", "unit": "kWh", "index": 1, "count": 7}
    assert screen["indicators"] == {"tariff": "T1", "disconnected": False, "communication": False, "alarm": True,
                                    "certification": False, "led_on": False, "demand_output": False,
                                    "message": "Hello"}
    assert screen["version"] == display.version()


def test_events_push_each_change_of_the_screen(served):
    display, _, thread = served
    stream = EventStream(thread.server.port)
    try:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert stream.next_block().startswith("retry: ")
        assert stream.next_screen()["value"] == "000123.456"  # what the display shows now, at once
        for value in ("000123.457", "000123.458"):
            started = time.monotonic()
            display.show(value=value)
            assert stream.next_screen(2.0)["value"] == value
            assert time.monotonic() - started < 1.0  # polled about 4 times a second
        # an indicator that blinks with the time changes what is shown without a new version
        with display._lock:
            display._screen = display._screen.__class__(**{**display._screen.__dict__, "indicators":
                                                           display._screen.indicators.__class__(led_on=True)})
        assert stream.next_screen(2.0)["indicators"]["led_on"] is True
    finally:
        stream.close()


def test_an_idle_stream_gets_keep_alives(served, monkeypatch):
    monkeypatch.setattr(display_http, "KEEPALIVE_SECONDS", 0.3)
    _, _, thread = served
    stream = EventStream(thread.server.port)
    try:
        stream.next_screen()
        assert stream.next_block(2.0) == ": keep-alive"
        assert stream.next_block(2.0) == ": keep-alive"
    finally:
        stream.close()


def test_at_most_16_streams_and_a_closed_one_frees_its_place(served):
    _, _, thread = served
    streams = [EventStream(thread.server.port) for _ in range(MAX_STREAMS)]
    try:
        for stream in streams:
            assert stream.status == 200
            stream.next_screen()
        assert thread.server.streams == MAX_STREAMS
        status, _, body = request(thread, "GET", "/events")
        assert status == 503 and "16" in json.loads(body)["error"]
        streams.pop().close()
        deadline = time.monotonic() + 5
        while thread.server.streams == MAX_STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)  # the server notices the closed peer at its next write
        again = EventStream(thread.server.port)
        streams.append(again)
        assert again.status == 200 and again.next_screen()["code"] == "1.8.0"
    finally:
        for stream in streams:
            stream.close()


def test_a_head_request_holds_no_stream(served):
    _, _, thread = served
    status, headers, body = request(thread, "HEAD", "/events")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream") and body == b""
    assert thread.server.streams == 0


def test_the_buttons_reach_the_runtime(served):
    _, presses, thread = served
    for payload in ({"button": "A"}, {"button": "A", "long": True}, {"button": "R", "long": False},
                    {"button": "R", "long": True}):
        status, _, body = press(thread, payload)
        assert status == 200 and json.loads(body)["ok"] is True
    assert presses.list() == [("A", False), ("A", True), ("R", False), ("R", True)]


@pytest.mark.parametrize("payload, content_type, status", [
    ({"button": "B"}, "application/json", 400),
    ({"button": "a"}, "application/json", 400),
    ({"button": "A", "long": "yes"}, "application/json", 400),
    ({"button": "A", "long": 1}, "application/json", 400),
    ({"button": "A", "force": True}, "application/json", 400),
    (["A"], "application/json", 400),
    (b"{\"button\": ", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    ({"button": "A"}, "text/plain", 415),
    ({"button": "A"}, "application/x-www-form-urlencoded", 415),
    ({"button": "A", "pad": "x" * MAX_BODY}, "application/json", 413),
])
def test_a_bad_press_is_refused_with_one_line_and_pressed_nothing(served, payload, content_type, status):
    _, presses, thread = served
    answer = press(thread, payload, content_type)
    assert answer[0] == status
    one_line_error(answer)
    assert presses.list() == []


def test_a_chunked_body_over_the_limit_is_refused(served):
    _, presses, thread = served
    connection = http.client.HTTPConnection("127.0.0.1", thread.server.port, timeout=5)
    chunks = (b'{"button": "A", "pad": "' + b"x" * 200 + b'"' for _ in range(8))
    connection.request("POST", "/api/button", body=chunks, headers={"Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "1024" in json.loads(response.read())["error"]
    connection.close()
    assert presses.list() == []


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Host": "evil.example"},  # a name made to point at 127.0.0.1 (DNS rebinding)
])
def test_another_site_cannot_press_a_button(served, headers):
    _, presses, thread = served
    answer = press(thread, {"button": "R"}, **headers)
    assert answer[0] == 403
    one_line_error(answer)
    assert presses.list() == []


def test_the_pages_own_origin_may_press(served):
    _, presses, thread = served
    own = f"http://127.0.0.1:{thread.server.port}"
    assert press(thread, {"button": "A"}, Origin=own)[0] == 200
    assert presses.list() == [("A", False)]


def test_a_failing_runtime_or_engine_is_a_500_and_the_server_goes_on():
    display = FakeDisplay()

    def press_fails(button, long):
        raise RuntimeError("the runtime failed")

    thread = ServerThread(display, press_fails)
    try:
        answer = press(thread, {"button": "A"})
        assert answer[0] == 500
        one_line_error(answer)
        display.fail = True
        assert request(thread, "GET", "/api/screen")[0] == 500
        stream = EventStream(thread.server.port)
        try:
            time.sleep(0.6)  # the engine fails at a few polls: the stream stays open
            display.fail = False
            display.show(value="000000.001")
            assert stream.next_screen(3.0)["value"] == "000000.001"
        finally:
            stream.close()
        assert request(thread, "GET", "/api/screen")[0] == 200
    finally:
        thread.close()


def test_a_press_the_runtime_refuses_is_409_with_its_reason():
    thread = ServerThread(FakeDisplay(), lambda button, long: {"ok": False, "error": "no supply"})
    try:
        answer = press(thread, {"button": "R"})
        assert answer[0] == 409 and one_line_error(answer) == "no supply"
    finally:
        thread.close()


def test_pages_and_files_are_served_only_from_the_static_folder(served):
    _, _, thread = served
    for path, kind in (("/", "text/html"), ("/charts", "text/html"), ("/static/lcd.js", "text/javascript"),
                       ("/static/display.css", "text/css"), ("/static/charts.js", "text/javascript")):
        status, headers, body = request(thread, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path in ("/static/..%2Fdisplay_http.py", "/static/.hidden.js", "/static/nothing.js",
                 "/static/display_http.py", "/nothing"):
        answer = request(thread, "GET", path)
        assert answer[0] == 404, path
        one_line_error(answer)
    assert request(thread, "DELETE", "/api/screen")[0] == 405


def test_the_led_pulse_counter(served):
    display, _, thread = served
    display.pulses = 1234
    assert json.loads(request(thread, "GET", "/api/led")[2]) == {"pulses": 1234}


def test_the_server_listens_on_loopback_by_default():
    server = DisplayServer(FakeDisplay(), Presses(), lambda *a: [])
    assert server.host == "127.0.0.1" and server.port == 8080


# -- the profile rows of the charts -------------------------------------------------------------------
START = 1_772_319_600  # 2026-03-01 00:00 at UTC+1
PQ = "1-0:99.14.0.255"
LP1 = "1-0:99.1.0.255"


class ProfileRows:
    """profile_rows as the runtime gives it: COSEM-form rows; records what it was asked."""

    def __init__(self, rows: dict) -> None:
        self.rows, self.asked = rows, []

    def __call__(self, obis, start, end):
        self.asked.append((obis, start, end))
        return self.rows.get(obis, [])


@pytest.fixture
def charts():
    lp1 = [(cosem_time(START + 900 * n), 0, 1000 + 25 * n, 7, 3 * n, 0) for n in range(4)]
    # the power quality profile: voltages with scaler -1 (V), currents with scaler -3 (A)
    pq = [(cosem_time(START + 600 * n, offset_minutes=120), 8,
           2301 + n, 2302, 2303, 2290, 2291, 2292, 2310, 2311, 2312, 5000 + n, 6250, 10)
          for n in range(3)]
    rows = ProfileRows({LP1: lp1, PQ: pq})
    thread = ServerThread(FakeDisplay(), Presses(), rows)
    yield thread, rows
    thread.close()


def get_json(thread, path):
    status, _, body = request(thread, "GET", path)
    return status, json.loads(body)


def test_profile_rows_carry_utc_local_time_and_physical_values(charts):
    thread, rows = charts
    status, answer = get_json(thread, f"/api/profile?obis={PQ}")
    assert status == 200 and answer["obis"] == PQ and answer["capture_period"] == 600
    assert [c["unit"] for c in answer["columns"]] == ["V"] * 9 + ["A"] * 3
    assert answer["rows"][1] == {
        "t": START + 600, "local": "2026-03-01T01:10:00", "status": 8,  # UTC+2: an hour ahead of UTC+1
        "values": [230.2, 230.2, 230.3, 229.0, 229.1, 229.2, 231.0, 231.1, 231.2, 5.001, 6.25, 0.01]}
    status, answer = get_json(thread, f"/api/profile?obis={LP1}")
    assert [c["cumulative"] for c in answer["columns"]] == [True] * 4
    assert [(r["t"], r["local"], r["values"][0]) for r in answer["rows"]] == [
        (START + 900 * n, f"2026-03-01T00:{15 * n:02d}:00", 1000 + 25 * n) for n in range(4)]
    assert answer["unreadable"] == 0 and answer["truncated"] is False


def test_the_chosen_range_reaches_the_meter_as_utc_seconds(charts):
    thread, rows = charts
    get_json(thread, f"/api/profile?obis={LP1}&from={START}&to={START + 86400}")
    get_json(thread, f"/api/profile?obis={LP1}&from=2026-03-01T00:00:00%2B01:00&to=2026-03-02")
    get_json(thread, f"/api/profile?obis={LP1}&from=&to=")
    assert rows.asked == [(LP1, START, START + 86400), (LP1, START, START + 3600 * 25), (LP1, None, None)]


@pytest.mark.parametrize("query", [
    "obis=1-0:1.8.0.255", "obis=", "", f"obis={LP1}&from=yesterday", f"obis={LP1}&from=nan",
    f"obis={LP1}&from=-5", f"obis={LP1}&from={START + 10}&to={START}", f"obis={LP1}&days=3",
    f"obis={LP1}&to=" + "9" * 60,
])
def test_a_bad_profile_request_is_400(charts, query):
    thread, rows = charts
    answer = request(thread, "GET", f"/api/profile?{query}")
    assert answer[0] == 400
    one_line_error(answer)
    assert rows.asked == []


def test_unreadable_rows_are_left_out_and_counted(charts):
    thread, rows = charts
    good = (cosem_time(START), 0, 1, 2, 3, 4)
    rows.rows[LP1] = [good, (b"\x00" * 5, 0, 1, 2, 3, 4), (cosem_time(START + 900), 0, 1, 2, 3),
                      (cosem_time(START + 1800), 0, "x", 2, 3, 4), (cosem_time(START + 2700), None, 1, 2, 3, 4),
                      42, (cosem_time(START + 3600), 0, 5, 6, 7, 8)]
    status, answer = get_json(thread, f"/api/profile?obis={LP1}")
    assert status == 200 and answer["unreadable"] == 5
    assert [r["values"] for r in answer["rows"]] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_the_columns_follow_the_meters_model():
    three = profile_descriptions(ObjectModel.load("ksmw"))
    one = profile_descriptions(ObjectModel.load("ksmw").for_phases(1))
    assert set(three) == {LP1, "1-0:99.2.0.255", PQ}
    assert [c.obis for c in three[LP1].columns] == ["1-0:1.8.0.255", "1-0:2.8.0.255", "1-0:3.8.0.255", "1-0:4.8.0.255"]
    assert len(three[PQ].columns) == 12
    # a single-phase meter has no L2/L3 columns: the charts show what its profile holds
    assert [c.obis for c in one[PQ].columns] == ["1-0:32.24.0.255", "1-0:32.23.0.255", "1-0:32.26.0.255",
                                                 "1-0:31.24.0.255"]
