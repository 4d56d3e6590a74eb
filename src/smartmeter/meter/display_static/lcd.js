/* The LCD page: shows the meter's screen as the server pushes it (server-sent events) and sends
   the presses of [A] and [R]. A press held LONG_PRESS_MS is a long press: it is sent when the
   time is reached, while the button is still held, as a meter reacts; a shorter one on release. */
(function () {
  "use strict";
  var LONG_PRESS_MS = 2000;
  var LED_POLL_MS = 1000;
  var MODES = {
    scroll: "data scroll list", menu: "menu", standard: "standard data list", service: "service data list",
    "software-id": "software identification", message: "consumer message", test: "display test",
    profile: "load profile", off: "display off (no supply)"
  };
  var UNIT_PARTS = ["k", "M", "V", "A", "W", "var", "h", "Hz"];
  var $ = function (id) { return document.getElementById(id); };
  var pressesSent = 0;

  /* "kWh" -> ["k", "W", "h"], "kvarh" -> ["k", "var", "h"], "VA" -> ["V", "A"]; null when the unit
     is no combination of the LCD's unit symbols */
  function unitParts(unit) {
    var parts = [], rest = unit;
    if (/^[kM]./.test(rest)) { parts.push(rest.charAt(0)); rest = rest.slice(1); }
    var bases = ["var", "Hz", "W", "V", "A", "h"];
    while (rest.length) {
      var found = null;
      for (var n = 0; n < bases.length; n++) {
        if (rest.indexOf(bases[n]) === 0 && parts.indexOf(bases[n]) < 0) { found = bases[n]; break; }
      }
      if (found === null) return null;
      parts.push(found);
      rest = rest.slice(found.length);
    }
    return parts;
  }

  function showUnit(unit) {
    var field = $("unit"), parts = unit ? unitParts(unit) : [];
    field.setAttribute("data-text", unit || "");
    Array.prototype.forEach.call(field.querySelectorAll(".u"), function (el) {
      el.setAttribute("data-on", String(parts !== null && parts.indexOf(el.getAttribute("data-u")) >= 0));
    });
    $("unit-other").textContent = parts === null ? unit : "";
  }

  function setOn(id, on) { $(id).setAttribute("data-on", on ? "true" : "false"); }

  function show(screen) {
    var ind = screen.indicators || {};
    Segments.render($("code"), screen.code || "", { kind: "auto", minCells: 8, align: "left" });
    Segments.render($("value"), screen.value || "", { kind: "auto", minCells: 10, maxPerRow: 24 });
    showUnit(screen.unit || "");
    setOn("ind-t1", ind.tariff === "T1");
    setOn("ind-t2", ind.tariff === "T2");
    setOn("ind-communication", ind.communication);
    setOn("ind-disconnected", ind.disconnected);
    setOn("ind-alarm", ind.alarm);
    setOn("ind-certification", ind.certification);
    setOn("led", ind.led_on);
    setOn("demand", ind.demand_output);
    var message = ind.message == null ? "" : String(ind.message);
    $("message").textContent = message;
    $("message").setAttribute("data-text", message);
    $("message").setAttribute("data-on", message ? "true" : "false");
    var where = MODES[screen.mode] || screen.mode || "";
    if (screen.count > 0) {
      where += " \u00b7 " + (screen.index < screen.count ? (screen.index + 1) + " of " + screen.count : "end of the list");
    }
    $("position").textContent = where;
    var lcd = $("lcd");
    lcd.setAttribute("data-mode", screen.mode || "");
    lcd.setAttribute("data-version", String(screen.version));
  }

  function connected(yes, text) {
    $("meter").setAttribute("data-connected", yes ? "true" : "false");
    $("connection").textContent = text;
  }

  function listen() {
    var source = new EventSource("/events");
    source.onopen = function () { connected(true, "live"); };
    source.onmessage = function (event) {
      var screen;
      try { screen = JSON.parse(event.data); } catch (e) { return; }
      connected(true, "live");
      show(screen);
    };
    // EventSource tries again by itself (the server asks for 1 s): the meter may be restarting
    source.onerror = function () { connected(false, "no connection to the meter - trying again"); };
  }

  function sendPress(button, long) {
    var note = $("last-press");
    fetch("/api/button", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ button: button, long: long })
    }).then(function (response) {
      return response.json().then(function (body) {
        pressesSent += 1;
        note.setAttribute("data-count", String(pressesSent));
        note.textContent = response.ok ? "[" + button + "]" + (long ? " long" : "") + " pressed"
          : "[" + button + "] refused: " + body.error;
      });
    }).catch(function () { note.textContent = "[" + button + "] not sent: no connection to the meter"; });
  }

  function wireButton(el) {
    var button = el.getAttribute("data-button"), timer = null, held = false;
    function down(event) {
      if (held) return;
      held = true;
      el.setAttribute("data-pressed", "true");
      timer = setTimeout(function () {
        timer = null;
        el.setAttribute("data-pressed", "long");
        sendPress(button, true);
      }, LONG_PRESS_MS);
      if (event && event.pointerId !== undefined && el.setPointerCapture) el.setPointerCapture(event.pointerId);
    }
    function up(cancelled) {
      if (!held) return;
      held = false;
      el.removeAttribute("data-pressed");
      if (timer !== null) {
        clearTimeout(timer);
        timer = null;
        if (!cancelled) sendPress(button, false);
      }
    }
    el.addEventListener("pointerdown", function (event) { if (event.button === 0) { event.preventDefault(); down(event); } });
    el.addEventListener("pointerup", function () { up(false); });
    el.addEventListener("pointercancel", function () { up(true); });
    el.addEventListener("keydown", function (event) {
      if ((event.key === " " || event.key === "Enter") && !event.repeat) { event.preventDefault(); down(null); }
    });
    el.addEventListener("keyup", function (event) {
      if (event.key === " " || event.key === "Enter") { event.preventDefault(); up(false); }
    });
    el.addEventListener("blur", function () { up(true); });
    el.addEventListener("contextmenu", function (event) { event.preventDefault(); });
  }

  function pollLed() {
    var counted = true;
    fetch("/api/led").then(function (response) {
      counted = response.status !== 404; // a display without a pulse counter: stop asking
      return response.ok ? response.json() : null;
    }).then(function (body) {
      if (body && typeof body.pulses === "number") $("led-pulses").textContent = "(" + body.pulses + " pulses)";
      if (counted) setTimeout(pollLed, LED_POLL_MS);
    }).catch(function () { setTimeout(pollLed, LED_POLL_MS * 5); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    show({ code: "", value: "", unit: "", mode: "", index: 0, count: 0, indicators: {} });
    wireButton($("button-a"));
    wireButton($("button-r"));
    listen();
    pollLed();
  });
  window.MeterDisplay = { unitParts: unitParts, LONG_PRESS_MS: LONG_PRESS_MS };
})();
