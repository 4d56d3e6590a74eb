"""The meter's display as a web page (catalog §3.11-§3.13): the LCD with its [A] and [R] buttons,
kept live by server-sent events, and a page that charts the meter's profiles.

    GET  /              the LCD page
    GET  /charts        the charts page (load profile, daily profile, power quality profile)
    GET  /static/<f>    the pages' own CSS and JS (nothing is ever fetched from elsewhere)
    GET  /events        server-sent events: the screen as JSON whenever it changes, and a keep-alive
    GET  /api/screen    the screen now, as JSON
    POST /api/button    {"button": "A" | "R", "long": bool}: a press of a button
    GET  /api/profile   ?obis=<profile>&from=<t>&to=<t>: the profile's rows for the charts
    GET  /api/led       {"pulses": n}: the test LED's pulse counter

The server shows what the display engine (meter/display.py) says and passes button presses to
the runtime: it computes no value of its own, so nothing it receives can change the legally
relevant indication (WELMEC S2). It is bounded - at most MAX_STREAMS event streams, request bodies
of at most MAX_BODY bytes, at most MAX_PROFILE_ROWS rows an answer - and answers every bad request
with a one-line JSON error; an exception of the engine or the runtime is logged and answered 500,
never passed on to the meter's event loop.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime

log = logging.getLogger(__name__)

# The profiles the charts page draws: load profile 1 (15 min), load profile 2 (daily) and the
# power quality profile.
CHART_PROFILES = ("1-0:99.1.0.255", "1-0:99.2.0.255", "1-0:99.14.0.255")
BUTTONS = ("A", "R")
MAX_STREAMS = 16          # event streams open at once; one more is answered 503
MAX_BODY = 1024           # bytes of a request body
POLL_SECONDS = 0.25       # how often the engine is asked whether the screen changed
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle event stream (proxies, dead peers)
PEER_CHECK_SECONDS = 0.5  # how soon a closed event stream gives its place back
MAX_PROFILE_ROWS = 10_000  # rows an answer carries (load profile 1 holds 5760)
RECONNECT_MS = 1000       # EventSource retry hint: the page comes back soon after a meter restart

STATIC = resources.files("smartmeter.meter").joinpath("display_static")
PAGES = {"/": "index.html", "/charts": "charts.html"}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html", ".svg": "image/svg+xml",
                ".txt": "text/plain"}
# The pages load their own files only (and draw with inline SVG): the browser refuses anything else.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


class BadRequest(Exception):
    """A request the server refuses: answered with `status` and a one-line JSON error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- what the pages are sent ------------------------------------------------------------------------

def screen_json(screen: Any, version: int | None = None, now: float | None = None) -> dict:
    """The engine's Screen (a dataclass with an Indicators dataclass) as plain JSON, with the
    version it had and the meter time it was taken at."""
    out = dataclasses.asdict(screen) if dataclasses.is_dataclass(screen) else dict(vars(screen))
    if version is not None:
        out["version"] = version
    if now is not None:
        out["time"] = now
    return out


@dataclass(frozen=True)
class ProfileColumn:
    """One value column of a profile: the captured register, its name, unit and scaler."""

    obis: str
    name: str
    unit: str
    scaler: int
    cumulative: bool  # an energy register: the charts can show its increase per interval

    def as_json(self) -> dict:
        return {"obis": self.obis, "name": self.name, "unit": self.unit, "cumulative": self.cumulative}


@dataclass(frozen=True)
class ProfileDescription:
    obis: str
    name: str
    capture_period: int
    columns: tuple[ProfileColumn, ...]


def profile_descriptions(model) -> dict[str, ProfileDescription]:
    """The chart profiles as the object model defines them: for every capture object after the
    clock (class 8) and the profile status (class 1), the register's name, unit and scaler.
    A profile the model lacks is left out; a captured object the model lacks is an unnamed column
    shown unscaled."""
    by_obis = {str(o.obis): o for o in model.objects}
    out = {}
    for obis in CHART_PROFILES:
        profile = by_obis.get(obis)
        if profile is None:
            continue
        columns = []
        for class_id, ln, _attribute, _index in profile.config.get("capture_objects", []):
            if class_id in (1, 8) and not columns:  # the leading clock and status columns
                continue
            captured = by_obis.get(ln)
            config = captured.config if captured is not None else {}
            unit = str(config.get("unit", ""))
            columns.append(ProfileColumn(ln, captured.name if captured is not None else ln, unit,
                                         int(config.get("scaler", 0)), unit in ("Wh", "varh", "VAh")))
        out[obis] = ProfileDescription(obis, profile.name, int(profile.config.get("capture_period", 0)),
                                       tuple(columns))
    return out


def _capture_time(value: Any, utc_from_cosem: Callable[[CosemDateTime], float] | None) -> tuple[float, str]:
    """(UTC seconds, local wall-clock ISO text) of a profile row's capture time: the 12 octets of a
    COSEM date-time (or a CosemDateTime). Raises ValueError for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = axdr.decode_date_time(bytes(value))
    if not isinstance(value, CosemDateTime):
        raise ValueError(f"a capture time is a COSEM date-time, not {type(value).__name__}")
    d, t = value.date, value.time
    if None in (d.year, d.month, d.day, t.hour, t.minute):
        raise ValueError("the capture time has unspecified fields")
    local = dt.datetime(d.year, d.month, d.day, t.hour, t.minute, t.second or 0)
    if value.deviation is None:
        # a meter without deviation means its own local time: only its clock knows the offset
        if utc_from_cosem is None:
            raise ValueError("a capture time without deviation and no clock to place it")
        utc = float(utc_from_cosem(value))
    else:
        utc = value.to_datetime().timestamp()
    return utc, local.isoformat(timespec="seconds")


def profile_rows_from(sources: Mapping[str, Any]) -> Callable[[str, float | None, float | None], list]:
    """A `profile_rows` callable over the meter's IC 7 sources ({obis: source} whose
    rows(from_utc, to_utc) are the buffer in COSEM form and whose utc_from_cosem places a capture
    time without deviation)."""
    def rows(obis: str, from_time: float | None, to_time: float | None) -> list:
        source = sources.get(obis)
        if source is None:
            return []
        return source.rows(None if from_time is None else math.floor(from_time),
                           None if to_time is None else math.ceil(to_time))
    rows.utc_from_cosem = {obis: getattr(s, "utc_from_cosem", None) for obis, s in sources.items()}
    return rows


def chart_rows(description: ProfileDescription, raw_rows: Iterable, utc_from_cosem=None,
               limit: int = MAX_PROFILE_ROWS) -> tuple[list[dict], int]:
    """Profile rows in COSEM form (capture time, status, register values) as the charts take them:
    {"t": UTC seconds, "local": wall-clock time, "status": n, "values": [physical values]}.
    A row that cannot be read (wrong length, a value that is no number) is left out and counted.
    -> (rows, number left out)."""
    scales = [10.0 ** c.scaler for c in description.columns]
    out, skipped = [], 0
    for row in raw_rows:
        if len(out) >= limit:
            break
        try:
            row = tuple(row)
            if len(row) != 2 + len(scales):
                raise ValueError(f"{len(row)} columns, the profile has {2 + len(scales)}")
            utc, local = _capture_time(row[0], utc_from_cosem)
            status = row[1]
            if isinstance(status, bool) or not isinstance(status, int):
                raise ValueError("the status is no integer")
            values = []
            for raw, scale in zip(row[2:], scales):
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                    raise ValueError(f"value {raw!r} is no number")
                values.append(round(raw * scale, 6))
        except (ValueError, TypeError, axdr.DecodeError) as exc:
            skipped += 1
            log.debug("profile %s: a row left out of the chart: %s", description.obis, exc)
            continue
        out.append({"t": utc, "local": local, "status": status, "values": values})
    return out, skipped


def parse_time(text: str | None, name: str) -> float | None:
    """A query's time: empty or absent = open; UTC seconds; or ISO 8601 (a date or a date-time,
    UTC unless it carries an offset)."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if len(text) > 40:
        raise BadRequest(f"{name}: too long for a time")
    try:
        value = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"{name}: neither UTC seconds nor an ISO 8601 date-time: {text!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when.timestamp()
    if not math.isfinite(value) or not 0 <= value < 2 ** 40:
        raise BadRequest(f"{name}: {text!r} is no time")
    return value


# -- the server -------------------------------------------------------------------------------------

class DisplayServer:
    """The display's web server on `host`:`port` (port 0: one the system chooses, see `.port`).

    display: the engine (screen(now), version()); press(button, long): the runtime's button
    handler (may be a coroutine function; an answer {"ok": False, "error": ...} is a refusal, 409);
    profile_rows(obis, from_utc, to_utc): a profile's rows in
    COSEM form (see profile_rows_from); clock_now: the meter's time (a simulated meter's clock may
    run fast); led_pulses: the test LED's pulse counter; model: the object model that names the
    profiles' columns (the KSMW model by default)."""

    def __init__(self, display, press: Callable[[str, bool], Any],
                 profile_rows: Callable[[str, float | None, float | None], list],
                 host: str = "127.0.0.1", port: int = 8080, *, clock_now: Callable[[], float] | None = None,
                 led_pulses: Callable[[], int] | None = None, model=None) -> None:
        self.display = display
        self._press = press
        self._profile_rows = profile_rows
        self.host = host
        self.port = port
        self._clock_now = clock_now or getattr(display, "clock_now", None) or time.time
        self._led_pulses = led_pulses or getattr(display, "led_pulses", None)
        if model is None:
            from smartmeter.cosem.objectmodel import ObjectModel
            model = ObjectModel.load("ksmw")
        self.profiles = profile_descriptions(model)
        self._runner: web.AppRunner | None = None
        self._streams = 0
        self._changed = asyncio.Condition()
        self._latest: tuple[int, str] | None = None  # (sequence, event payload) of the last screen sent
        self._sequence = 0
        self._poller: asyncio.Task | None = None
        self._closing = False
        self._loopback = _is_loopback(host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def streams(self) -> int:
        """Event streams open now."""
        return self._streams

    # -- life ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/charts", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/screen", self._screen)
        app.router.add_post("/api/button", self._button)
        app.router.add_get("/api/profile", self._profile)
        app.router.add_get("/api/led", self._led)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # the one the system chose for port 0
        log.info("display on %s", self.url)

    async def close(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the guard every request passes -------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            self._check_origin(request)
            response = await handler(request)
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason or "refused")
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:  # the engine's or the runtime's: logged, never the meter's end
            log.exception("display request %s %s failed", request.method, request.path)
            return _error(500, "the meter could not answer this request")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _check_origin(self, request: web.Request) -> None:
        """Only the meter's own pages act on it. Bound to loopback, the Host must name loopback (a
        site whose name was made to point at 127.0.0.1 is refused); a request that names an Origin
        must come from this server's own address, so another site in the user's browser can
        neither press a button nor read the meter."""
        host = request.host or ""
        if self._loopback and not _names_loopback(host):
            raise BadRequest("this display answers requests to the loopback address only", 403)
        origin = request.headers.get("Origin")
        if origin is None:
            return  # no browser sends a cross-site request without it
        if origin == "null":  # a sandboxed frame or a local file: reads only
            if request.method not in ("GET", "HEAD"):
                raise BadRequest("requests from another site are refused", 403)
        elif urlsplit(origin).netloc.lower() != host.lower():
            raise BadRequest("requests from another site are refused", 403)

    # -- pages and static files ---------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        return self._file(PAGES[request.path])

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        # a flat folder: a name with a path separator or a leading dot is no file of ours
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise BadRequest("no such file", 404)
        item = STATIC.joinpath(name)
        if not item.is_file():
            raise BadRequest("no such file", 404)
        response = web.Response(body=item.read_bytes(), content_type=STATIC_TYPES[suffix], charset="utf-8")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # -- the screen ---------------------------------------------------------------------------------
    def _screen_now(self) -> dict:
        now = self._clock_now()
        version = self.display.version()
        return screen_json(self.display.screen(now), version, now)

    async def _screen(self, request: web.Request) -> web.Response:
        return web.json_response(self._screen_now())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":  # no stream to hold a place for
            return web.Response(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        if self._closing:
            raise BadRequest("the display is closing", 503)
        if self._streams >= MAX_STREAMS:
            raise BadRequest(f"at most {MAX_STREAMS} live displays at once", 503)
        self._streams += 1
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
            await response.prepare(request)
            if self._poller is None or self._poller.done():
                self._latest = None
                self._poller = asyncio.create_task(self._poll(), name="display-poll")
            await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
            seen, quiet_since = -1, time.monotonic()
            while not self._closing:
                async with self._changed:
                    try:  # woken by a new screen; at least twice a second to notice a page gone
                        await asyncio.wait_for(
                            self._changed.wait_for(lambda: self._closing or (self._latest or (seen,))[0] != seen),
                            min(PEER_CHECK_SECONDS, KEEPALIVE_SECONDS))
                    except asyncio.TimeoutError:
                        pass
                    latest = self._latest
                if self._closing or request.transport is None or request.transport.is_closing():
                    break
                if latest is not None and latest[0] != seen:
                    seen = latest[0]
                    await response.write(latest[1].encode())
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
            return response
        except ConnectionError:  # the page went away
            return response
        finally:
            self._streams -= 1

    async def _poll(self) -> None:
        """Asks the engine about 4 times a second while a page watches; wakes the streams when the
        screen changed (its version, or what it shows: the blinking indicators follow the time)."""
        last_version, last_text, failures = None, None, 0
        while not self._closing and self._streams > 0:
            try:
                version = self.display.version()
                now = self._clock_now()
                shown = screen_json(self.display.screen(now))
                text = json.dumps(shown, separators=(",", ":"))
                failures = 0
            except Exception:
                failures += 1
                if failures == 1 or failures % 240 == 0:  # once, then about once a minute
                    log.exception("the display engine failed (%d times in a row)", failures)
                await asyncio.sleep(POLL_SECONDS)
                continue
            if version != last_version or text != last_text:
                last_version, last_text = version, text
                payload = json.dumps(dict(shown, version=version, time=now), separators=(",", ":"))
                self._sequence += 1
                async with self._changed:
                    self._latest = (self._sequence, f"id: {version}\ndata: {payload}\n\n")
                    self._changed.notify_all()
            await asyncio.sleep(POLL_SECONDS)

    # -- the buttons --------------------------------------------------------------------------------
    async def _button(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise BadRequest("send the press as application/json", 415)
        body = await _read_body(request)
        try:
            press = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is no JSON") from None
        if not isinstance(press, dict) or set(press) - {"button", "long"}:
            raise BadRequest('send {"button": "A" or "R", "long": true or false}')
        button, long = press.get("button"), press.get("long", False)
        if button not in BUTTONS:
            raise BadRequest(f"button {button!r}: the meter has the buttons A and R")
        if not isinstance(long, bool):
            raise BadRequest('"long" is true or false')
        log.info("display: button %s pressed%s", button, " long" if long else "")
        outcome = self._press(button, long)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if isinstance(outcome, dict) and outcome.get("ok") is False:  # the control channel's refusal
            raise BadRequest(str(outcome.get("error") or "the meter refused the press"), 409)
        return web.json_response({"ok": True, "button": button, "long": long})

    # -- the charts ---------------------------------------------------------------------------------
    async def _profile(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = set(query) - {"obis", "from", "to"}
        if unknown:
            raise BadRequest(f"unknown parameter {sorted(unknown)[0]!r}: obis, from and to are known")
        obis = query.get("obis", "")
        description = self.profiles.get(obis)
        if description is None:
            raise BadRequest(f"obis: the charts show {', '.join(self.profiles)}, not {obis[:40]!r}")
        from_time, to_time = parse_time(query.get("from"), "from"), parse_time(query.get("to"), "to")
        if from_time is not None and to_time is not None and from_time > to_time:
            raise BadRequest("from is after to")
        raw = self._profile_rows(obis, from_time, to_time)
        if inspect.isawaitable(raw):
            raw = await raw
        places = getattr(self._profile_rows, "utc_from_cosem", None)
        utc_from_cosem = places.get(obis) if isinstance(places, dict) else None
        rows, skipped = chart_rows(description, raw, utc_from_cosem)
        return web.json_response({
            "obis": obis, "name": description.name, "capture_period": description.capture_period,
            "columns": [c.as_json() for c in description.columns], "rows": rows,
            "truncated": len(rows) >= MAX_PROFILE_ROWS, "unreadable": skipped})

    async def _led(self, request: web.Request) -> web.Response:
        if self._led_pulses is None:
            raise BadRequest("this display counts no LED pulses", 404)
        return web.json_response({"pulses": int(self._led_pulses())})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": " ".join(message.split())}, status=status,
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"a request body has at most {MAX_BODY} bytes", 413)
    body = bytearray()
    while True:  # a chunked body has no length: read no more than one byte past the limit
        chunk = await request.content.read(MAX_BODY + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"a request body has at most {MAX_BODY} bytes", 413)


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names_loopback(host_header: str) -> bool:
    """Whether a Host header ("127.0.0.1:8080", "[::1]:8080", "localhost") names loopback."""
    name = host_header.strip()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return _is_loopback(name)
