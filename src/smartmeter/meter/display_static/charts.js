/* The charts page: a profile of the meter (/api/profile) for chosen days, drawn as SVG by hand.
   Days are the meter's local days: rows are chosen by their local capture time, from the first
   day's 00:00 to the day after the last one, 00:00 (the entry at 00:00 closes the day before).
   Energy registers are cumulative; "energy per interval" draws the increase from one entry to the
   next instead. Zoom: drag a range, the mouse wheel, the buttons; double-click shows the days whole. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#1f6fb4", "#d9622b", "#2e9a4a", "#9b3fb5", "#b8962e", "#2aa6a6", "#c43d6b", "#6b7a2a",
                "#4b4bd6", "#8a5a2b", "#1a8f7a", "#a02a2a"];
  var MARGIN = { left: 78, right: 78, top: 22, bottom: 46 };
  var DAY = 86400;
  var MARGIN_SECONDS = 14 * 3600; // a day in any time zone lies within UTC 00:00 -14 h ... 24:00 +14 h
  var MARKERS_BELOW = 60;          // points in view under which each one gets a marker
  var $ = function (id) { return document.getElementById(id); };

  var state = {
    obis: "1-0:99.1.0.255", fromDay: null, toDay: null, perInterval: true,
    profile: null,   // the answer of /api/profile
    rows: [],        // its rows within the chosen days
    visible: [],     // per column: drawn or not
    view: null,      // [from, to] UTC seconds shown
    full: null       // [from, to] of the chosen days' rows
  };

  // -- days and times --------------------------------------------------------------------------------
  function dayUtc(day) { // "YYYY-MM-DD" -> seconds of its 00:00 UTC
    var p = day.split("-");
    return Date.UTC(+p[0], +p[1] - 1, +p[2]) / 1000;
  }
  function dayText(seconds) { return new Date(seconds * 1000).toISOString().slice(0, 10); }
  function addDays(day, n) { return dayText(dayUtc(day) + n * DAY); }
  function localSeconds(local) { return Date.parse(local + "Z") / 1000; } // wall clock as if UTC
  function validDay(text) { return /^\d{4}-\d{2}-\d{2}$/.test(text || "") && !isNaN(dayUtc(text)); }

  // local - UTC of the row nearest to `t` (the meter's zone, with its daylight saving time)
  function offsetAt(t) {
    var rows = state.rows;
    if (!rows.length) return 0;
    var lo = 0, hi = rows.length - 1;
    while (hi - lo > 1) {
      var mid = (lo + hi) >> 1;
      if (rows[mid].t <= t) lo = mid; else hi = mid;
    }
    var row = Math.abs(rows[hi].t - t) < Math.abs(rows[lo].t - t) ? rows[hi] : rows[lo];
    return row.offset;
  }

  // -- numbers ---------------------------------------------------------------------------------------
  function niceStep(span, count) {
    if (!(span > 0)) return 1;
    var raw = span / count, power = Math.pow(10, Math.floor(Math.log(raw) / Math.LN10)), unit = raw / power;
    return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 2.5 ? 2.5 : unit <= 5 ? 5 : 10) * power;
  }
  function format(value, step) {
    var decimals = Math.max(0, Math.min(6, -Math.floor(Math.log(step) / Math.LN10 + 1e-9)));
    return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // -- data ------------------------------------------------------------------------------------------
  /* the points of column `c`: [{t, v}] in runs without gaps (a gap: a missing entry) */
  function seriesRuns(c) {
    var column = state.profile.columns[c], rows = state.rows, runs = [], run = [];
    var gap = 1.5 * (state.profile.capture_period || DAY);
    var difference = state.perInterval && column.cumulative;
    for (var n = 0; n < rows.length; n++) {
      var broken = n > 0 && rows[n].t - rows[n - 1].t > gap;
      if (broken && run.length) { runs.push(run); run = []; }
      if (difference) {
        if (n > 0 && !broken) run.push({ t: rows[n].t, v: rows[n].values[c] - rows[n - 1].values[c], row: n });
      } else {
        run.push({ t: rows[n].t, v: rows[n].values[c], row: n });
      }
    }
    if (run.length) runs.push(run);
    return runs;
  }

  function load() {
    var from = dayUtc(state.fromDay) - MARGIN_SECONDS, to = dayUtc(state.toDay) + DAY + MARGIN_SECONDS;
    $("summary").textContent = "loading\u2026";
    return fetch("/api/profile?obis=" + encodeURIComponent(state.obis) + "&from=" + from + "&to=" + to)
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
          return body;
        });
      })
      .then(function (profile) {
        var first = state.fromDay + "T00:00:00", last = addDays(state.toDay, 1) + "T00:00:00";
        state.profile = profile;
        state.rows = profile.rows.filter(function (row) { return row.local >= first && row.local <= last; })
          .map(function (row) { row.offset = localSeconds(row.local) - row.t; return row; })
          .sort(function (a, b) { return a.t - b.t; });
        if (state.visible.length !== profile.columns.length || state.visibleFor !== profile.obis) {
          var unit = profile.columns.length ? profile.columns[0].unit : "";
          var shown = 0;
          state.visible = profile.columns.map(function (column) {
            var on = column.unit === unit && shown < 3;
            if (on) shown += 1;
            return on;
          });
          state.visibleFor = profile.obis;
        }
        state.full = state.rows.length ? [state.rows[0].t, state.rows[state.rows.length - 1].t] : null;
        if (state.full && state.full[0] === state.full[1]) state.full = [state.full[0] - 1800, state.full[1] + 1800];
        state.view = state.full ? state.full.slice() : null;
        $("title").textContent = profile.name + " " + profile.obis;
        var cumulative = profile.columns.some(function (c) { return c.cumulative; });
        $("per-interval").disabled = !cumulative;
        legend();
        draw();
        var summary = state.rows.length + " entries, " + state.fromDay + (state.toDay !== state.fromDay ? " to " + state.toDay : "");
        if (profile.truncated) summary += " (more than the meter sends at once: choose fewer days)";
        $("summary").textContent = summary;
        $("summary").setAttribute("data-rows", String(state.rows.length));
      })
      .catch(function (error) {
        state.profile = null; state.rows = []; state.view = null;
        draw();
        $("summary").textContent = "no profile: " + error.message;
        $("summary").setAttribute("data-rows", "0");
      });
  }

  function legend() {
    var box = $("legend");
    while (box.firstChild) box.removeChild(box.firstChild);
    state.profile.columns.forEach(function (column, c) {
      var label = document.createElement("label"), box1 = document.createElement("input"), swatch = document.createElement("span");
      box1.type = "checkbox"; box1.checked = state.visible[c]; box1.setAttribute("data-column", column.obis);
      box1.addEventListener("change", function () { state.visible[c] = box1.checked; draw(); });
      swatch.className = "swatch"; swatch.style.background = COLORS[c % COLORS.length];
      label.appendChild(box1); label.appendChild(swatch);
      label.appendChild(document.createTextNode(column.name + (column.unit ? " [" + column.unit + "]" : "")));
      box.appendChild(label);
    });
  }

  // -- drawing ---------------------------------------------------------------------------------------
  function el(name, attrs, parent, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function size() {
    var svg = $("chart"), box = svg.getBoundingClientRect();
    return { w: Math.max(300, box.width || 900), h: Math.max(200, box.height || 400) };
  }

  function timeTicks(x0, x1) {
    var steps = [60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY];
    var step = steps[steps.length - 1];
    for (var n = 0; n < steps.length; n++) { if ((x1 - x0) / steps[n] <= 8) { step = steps[n]; break; } }
    var ticks = [], off = offsetAt(x0), local = Math.ceil((x0 + off) / step) * step;
    for (var guard = 0; guard < 64; guard++, local += step) {
      var t = local - offsetAt(local - off);
      if (t > x1) break;
      if (t >= x0) ticks.push({ t: t, local: local, step: step });
    }
    return ticks;
  }
  function timeLabel(tick) {
    var d = new Date(tick.local * 1000);
    var date = pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    if (tick.step >= DAY) return [date];
    var clock = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return d.getUTCHours() === 0 && d.getUTCMinutes() === 0 ? [clock, date] : [clock];
  }

  function draw() {
    var svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var dims = size(), w = dims.w, h = dims.h;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    var plotW = w - MARGIN.left - MARGIN.right, plotH = h - MARGIN.top - MARGIN.bottom;
    svg.removeAttribute("data-view-from"); svg.removeAttribute("data-view-to");
    if (!state.profile || !state.rows.length || !state.view) {
      el("text", { x: w / 2, y: h / 2, "text-anchor": "middle", "class": "empty" }, svg,
         state.profile ? "the meter holds no entries for these days" : "");
      return;
    }
    var x0 = state.view[0], x1 = state.view[1];
    svg.setAttribute("data-view-from", String(x0)); svg.setAttribute("data-view-to", String(x1));
    var X = function (t) { return MARGIN.left + (t - x0) / (x1 - x0) * plotW; };

    // the series in view, grouped by unit: the first unit on the left axis, the second on the right
    var groups = [], drawn = [];
    state.profile.columns.forEach(function (column, c) {
      if (!state.visible[c]) return;
      var runs = seriesRuns(c).map(function (run) {
        return run.filter(function (p) { return p.t >= x0 && p.t <= x1; });
      }).filter(function (run) { return run.length; });
      var unit = column.unit + (state.perInterval && column.cumulative ? " per interval" : "");
      var g = groups.filter(function (x) { return x.unit === unit; })[0];
      if (!g) { g = { unit: unit, min: Infinity, max: -Infinity }; if (groups.length < 2) groups.push(g); else g = groups[0]; }
      runs.forEach(function (run) { run.forEach(function (p) { g.min = Math.min(g.min, p.v); g.max = Math.max(g.max, p.v); }); });
      drawn.push({ c: c, runs: runs, group: g });
    });
    groups.forEach(function (g) {
      if (g.min === Infinity) { g.min = 0; g.max = 1; }
      if (g.min === g.max) { var pad1 = Math.abs(g.min) * 0.05 || 1; g.min -= pad1; g.max += pad1; }
      g.step = niceStep(g.max - g.min, 6);
      g.lo = Math.floor(g.min / g.step) * g.step; g.hi = Math.ceil(g.max / g.step) * g.step;
      g.Y = function (v) { return MARGIN.top + plotH - (v - g.lo) / (g.hi - g.lo) * plotH; };
    });

    var grid = el("g", { "class": "grid" }, svg), axes = el("g", { "class": "axis" }, svg);
    timeTicks(x0, x1).forEach(function (tick) {
      var x = X(tick.t);
      el("line", { x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + plotH }, grid);
      el("line", { x1: x, x2: x, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 5 }, axes);
      timeLabel(tick).forEach(function (line, n) {
        el("text", { x: x, y: MARGIN.top + plotH + 17 + 13 * n, "text-anchor": "middle", "class": "x-label" }, axes, line);
      });
    });
    groups.forEach(function (g, side) {
      var axis = el("g", { "class": "y-axis", "data-unit": g.unit, "data-min": String(g.lo), "data-max": String(g.hi) }, axes);
      var ax = side === 0 ? MARGIN.left : MARGIN.left + plotW;
      el("line", { x1: ax, x2: ax, y1: MARGIN.top, y2: MARGIN.top + plotH }, axis);
      for (var v = g.lo, n = 0; v <= g.hi + g.step / 2 && n < 40; v += g.step, n++) {
        var y = g.Y(v);
        if (side === 0) el("line", { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: y, y2: y }, grid);
        el("line", { x1: ax, x2: ax + (side === 0 ? -5 : 5), y1: y, y2: y }, axis);
        el("text", { x: ax + (side === 0 ? -8 : 8), y: y + 4, "text-anchor": side === 0 ? "end" : "start", "class": "y-label" }, axis, format(v, g.step));
      }
      el("text", { x: side === 0 ? 4 : w - 4, y: 13, "text-anchor": side === 0 ? "start" : "end", "class": "unit" }, axis, g.unit);
    });
    el("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, fill: "none", stroke: "#80868c" }, axes);

    var clip = el("clipPath", { id: "plot-area" }, el("defs", {}, svg));
    el("rect", { x: MARGIN.left - 4, y: MARGIN.top - 4, width: plotW + 8, height: plotH + 8 }, clip);
    var lines = el("g", { "clip-path": "url(#plot-area)" }, svg);
    var inView = 0;
    drawn.forEach(function (s) {
      var color = COLORS[s.c % COLORS.length], column = state.profile.columns[s.c];
      s.runs.forEach(function (run) {
        inView += run.length;
        el("polyline", {
          "class": "series", stroke: color, "data-column": column.obis, "data-series": String(s.c),
          points: run.map(function (p) { return X(p.t).toFixed(1) + "," + s.group.Y(p.v).toFixed(1); }).join(" ")
        }, lines);
      });
    });
    if (inView / Math.max(drawn.length, 1) < MARKERS_BELOW) {
      drawn.forEach(function (s) {
        s.runs.forEach(function (run) {
          run.forEach(function (p) {
            el("circle", { "class": "marker", cx: X(p.t).toFixed(1), cy: s.group.Y(p.v).toFixed(1), r: 2.6, fill: COLORS[s.c % COLORS.length] }, lines);
          });
        });
      });
    }
    state.layout = { X: X, plotW: plotW, plotH: plotH, drawn: drawn };
    interaction(svg);
  }

  // -- zoom and the pointer --------------------------------------------------------------------------
  function setView(a, b) {
    if (!state.full) return;
    var lo = state.full[0], hi = state.full[1], minSpan = Math.min(hi - lo, 4 * (state.profile.capture_period || 900));
    a = Math.max(lo, a); b = Math.min(hi, b);
    if (b - a < minSpan) { var mid = (a + b) / 2; a = Math.max(lo, mid - minSpan / 2); b = Math.min(hi, a + minSpan); }
    state.view = [a, b];
    draw();
  }
  function zoom(factor, center) {
    if (!state.view) return;
    var a = state.view[0], b = state.view[1];
    if (center === undefined) center = (a + b) / 2;
    setView(center - (center - a) * factor, center + (b - center) * factor);
  }
  function timeAt(svg, clientX) {
    var box = svg.getBoundingClientRect(), w = size().w;
    var x = (clientX - box.left) * (w / box.width);
    var frac = (x - MARGIN.left) / state.layout.plotW;
    return state.view[0] + Math.max(0, Math.min(1, frac)) * (state.view[1] - state.view[0]);
  }

  function interaction(svg) {
    if (svg.getAttribute("data-wired")) return;
    svg.setAttribute("data-wired", "true");
    var start = null, brush = null;
    svg.addEventListener("mousedown", function (event) {
      if (!state.view || event.button !== 0) return;
      start = timeAt(svg, event.clientX);
      brush = el("rect", { "class": "brush", y: MARGIN.top, height: state.layout.plotH, x: state.layout.X(start), width: 0 }, svg);
      event.preventDefault();
    });
    svg.addEventListener("mousemove", function (event) {
      if (!state.view) return;
      var t = timeAt(svg, event.clientX);
      if (start !== null && brush) {
        var a = Math.min(start, t), b = Math.max(start, t);
        brush.setAttribute("x", state.layout.X(a)); brush.setAttribute("width", state.layout.X(b) - state.layout.X(a));
      } else {
        tooltip(svg, t);
      }
    });
    window.addEventListener("mouseup", function (event) {
      if (start === null) return;
      var t = timeAt(svg, event.clientX), a = Math.min(start, t), b = Math.max(start, t);
      start = null;
      if (brush && brush.parentNode) brush.parentNode.removeChild(brush);
      brush = null;
      if (state.layout.X(b) - state.layout.X(a) > 4) setView(a, b);
    });
    svg.addEventListener("mouseleave", function () { var tip = svg.querySelector(".tip"); if (tip && start === null) draw(); });
    svg.addEventListener("dblclick", function () { if (state.full) setView(state.full[0], state.full[1]); });
    svg.addEventListener("wheel", function (event) {
      if (!state.view) return;
      event.preventDefault();
      zoom(event.deltaY < 0 ? 0.8 : 1.25, timeAt(svg, event.clientX));
    }, { passive: false });
  }

  function tooltip(svg, t) {
    var old = svg.querySelectorAll(".tip, .cursor");
    Array.prototype.forEach.call(old, function (node) { node.parentNode.removeChild(node); });
    var best = null;
    state.layout.drawn.forEach(function (s) {
      s.runs.forEach(function (run) {
        run.forEach(function (p) { if (best === null || Math.abs(p.t - t) < Math.abs(best.t - t)) best = p; });
      });
    });
    if (best === null) return;
    var x = state.layout.X(best.t), row = state.rows[best.row];
    el("line", { "class": "cursor", x1: x, x2: x, y1: MARGIN.top, y2: MARGIN.top + state.layout.plotH }, svg);
    var lines = [row.local.replace("T", " ")];
    state.layout.drawn.forEach(function (s) {
      var column = state.profile.columns[s.c], value = null;
      s.runs.forEach(function (run) { run.forEach(function (p) { if (p.row === best.row) value = p.v; }); });
      if (value !== null) lines.push(column.name + ": " + value.toLocaleString("en-US", { maximumFractionDigits: 3 }) + " " + column.unit);
    });
    var tip = el("g", { "class": "tip" }, svg), width = 12 + 6.6 * Math.max.apply(null, lines.map(function (s) { return s.length; }));
    var left = x + 10 + width > size().w - 4 ? x - 10 - width : x + 10;
    el("rect", { x: left, y: MARGIN.top + 6, width: width, height: 8 + 14 * lines.length, rx: 3 }, tip);
    lines.forEach(function (line, n) { el("text", { x: left + 6, y: MARGIN.top + 20 + 14 * n }, tip, line); });
  }

  // -- the controls ----------------------------------------------------------------------------------
  function remember() {
    var query = "?obis=" + encodeURIComponent(state.obis) + "&from=" + state.fromDay + "&to=" + state.toDay +
      (state.perInterval ? "" : "&values=1");
    history.replaceState(null, "", "/charts" + query);
  }

  function choose() {
    var from = $("from-day").value, to = $("to-day").value;
    if (!validDay(from) || !validDay(to)) { $("summary").textContent = "choose the days"; return; }
    if (from > to) { var x = from; from = to; to = x; $("from-day").value = from; $("to-day").value = to; }
    state.obis = $("profile").value; state.fromDay = from; state.toDay = to;
    state.perInterval = $("per-interval").checked;
    remember();
    load();
  }

  /* the days to show first: those of the URL, else the meter's latest entry's day (a simulated
     meter's clock may be far from the browser's) */
  function firstDays(params) {
    if (validDay(params.get("from")) && validDay(params.get("to"))) {
      return Promise.resolve([params.get("from"), params.get("to")]);
    }
    return fetch("/api/screen").then(function (r) { return r.ok ? r.json() : {}; }).catch(function () { return {}; })
      .then(function (screen) {
        var now = typeof screen.time === "number" ? screen.time : Date.now() / 1000;
        var back = state.obis === "1-0:99.2.0.255" ? 15 * DAY : 3 * DAY;
        return fetch("/api/profile?obis=" + encodeURIComponent(state.obis) + "&from=" + Math.floor(now - back) + "&to=" + Math.ceil(now + DAY))
          .then(function (r) { return r.ok ? r.json() : { rows: [] }; })
          .then(function (profile) {
            var rows = profile.rows || [];
            var last = rows.length ? rows[rows.length - 1].local : new Date(now * 1000).toISOString();
            var to = last.slice(0, 10);
            if (rows.length && last.slice(11) === "00:00:00" && rows.length > 1) to = addDays(to, -1); // it closes the day before
            return [state.obis === "1-0:99.2.0.255" ? addDays(to, -13) : to, to];
          });
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var params = new URLSearchParams(location.search);
    var obis = params.get("obis");
    if (obis && Array.prototype.some.call($("profile").options, function (o) { return o.value === obis; })) state.obis = obis;
    $("profile").value = state.obis;
    state.perInterval = params.get("values") !== "1";
    $("per-interval").checked = state.perInterval;
    $("controls").addEventListener("submit", function (event) { event.preventDefault(); choose(); });
    $("profile").addEventListener("change", function () {
      if ($("profile").value === "1-0:99.2.0.255" && $("from-day").value === $("to-day").value && validDay($("to-day").value)) {
        $("from-day").value = addDays($("to-day").value, -13);
      }
      choose();
    });
    $("per-interval").addEventListener("change", function () { state.perInterval = $("per-interval").checked; remember(); draw(); });
    $("zoom-in").addEventListener("click", function () { zoom(0.5); });
    $("zoom-out").addEventListener("click", function () { zoom(2); });
    $("zoom-reset").addEventListener("click", function () { if (state.full) setView(state.full[0], state.full[1]); });
    window.addEventListener("resize", function () { if (state.profile) draw(); });
    firstDays(params).then(function (days) {
      $("from-day").value = days[0]; $("to-day").value = days[1];
      choose();
    });
  });
})();
