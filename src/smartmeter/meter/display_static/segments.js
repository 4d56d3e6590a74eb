/* Segment-style digits for the meter's LCD: 7-segment cells for numbers and the few letters a
   7-segment display can show ("Std-dAtA"), 14-segment cells for any other text, each with a
   decimal point; a colon is a narrow cell of its own. Drawn as inline SVG: unlit segments stay
   faintly visible, as on a real LCD. No dependencies, nothing fetched. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var T = 8; // segment thickness in cell units (cell box 0..50 x 0..90, decimal point to the right)

  function hbar(x1, x2, y) {
    var h = T / 2;
    return [[x1, y], [x1 + h, y - h], [x2 - h, y - h], [x2, y], [x2 - h, y + h], [x1 + h, y + h]];
  }
  function vbar(x, y1, y2) {
    var h = T / 2;
    return [[x, y1], [x + h, y1 + h], [x + h, y2 - h], [x, y2], [x - h, y2 - h], [x - h, y1 + h]];
  }
  function diag(x1, y1, x2, y2) {
    var w = 2.6, dx = x2 - x1, dy = y2 - y1, len = Math.sqrt(dx * dx + dy * dy);
    var nx = -dy / len * w, ny = dx / len * w;
    return [[x1 + nx, y1 + ny], [x2 + nx, y2 + ny], [x2 - nx, y2 - ny], [x1 - nx, y1 - ny]];
  }

  var SHAPES7 = {
    a: hbar(6, 44, 5), b: vbar(45, 6, 44), c: vbar(45, 46, 84), d: hbar(6, 44, 85),
    e: vbar(5, 46, 84), f: vbar(5, 6, 44), g: hbar(6, 44, 45)
  };
  var SHAPES14 = {
    a: SHAPES7.a, b: SHAPES7.b, c: SHAPES7.c, d: SHAPES7.d, e: SHAPES7.e, f: SHAPES7.f,
    g1: hbar(6, 24.6, 45), g2: hbar(25.4, 44, 45),
    i: vbar(25, 10, 40), l: vbar(25, 50, 80),
    h: diag(11, 10, 20.5, 39), j: diag(39, 10, 29.5, 39), k: diag(20.5, 51, 11, 80), m: diag(29.5, 51, 39, 80)
  };

  // 7-segment glyphs: exact characters first; a letter missing in one case may use the other
  var GLYPHS7 = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg", "5": "acdfg", "6": "acdefg",
    "7": "abc", "8": "abcdefg", "9": "abcdfg", " ": "",
    "A": "abcefg", "b": "cdefg", "C": "adef", "c": "deg", "d": "bcdeg", "E": "adefg", "F": "aefg",
    "G": "acdef", "H": "bcefg", "h": "cefg", "I": "ef", "i": "c", "J": "bcde", "L": "def", "l": "ef",
    "n": "ceg", "o": "cdeg", "O": "abcdef", "P": "abefg", "q": "abcfg", "r": "eg", "S": "acdfg",
    "t": "defg", "U": "bcdef", "u": "cde", "y": "bcdfg", "-": "g", "_": "d", "=": "dg", "°": "abfg"
  };
  var GLYPHS14 = {
    "0": "abcdef", "1": "bc", "2": "abdeg1g2", "3": "abcdg2", "4": "bcfg1g2", "5": "acdfg1g2",
    "6": "acdefg1g2", "7": "abc", "8": "abcdefg1g2", "9": "abcdfg1g2", " ": "",
    "A": "abcefg1g2", "B": "abcdg2il", "C": "adef", "D": "abcdil", "E": "adefg1", "F": "aefg1",
    "G": "acdefg2", "H": "bcefg1g2", "I": "adil", "J": "bcde", "K": "efg1jm", "L": "def", "M": "bcefhj",
    "N": "bcefhm", "O": "abcdef", "P": "abefg1g2", "Q": "abcdefm", "R": "abefg1g2m", "S": "acdfg1g2",
    "T": "ail", "U": "bcdef", "V": "efjk", "W": "bcefkm", "X": "hjkm", "Y": "hjl", "Z": "adjk",
    "-": "g1g2", "_": "d", "+": "g1g2il", "/": "jk", "\\": "hm", "*": "g1g2hijklm", "=": "dg1g2",
    "(": "jm", ")": "hk", "<": "jm", ">": "hk", "'": "i", "\"": "bi", "?": "abg2l", "!": "bc",
    "#": "bcdg1g2il", "%": "cfg1g2jk", "&": "adeg1hjm", "°": "abfg1g2", "[": "adef", "]": "abcd"
  };
  var NAMES14 = ["g1", "g2", "a", "b", "c", "d", "e", "f", "h", "i", "j", "k", "l", "m"];

  function segs7(ch) {
    if (Object.prototype.hasOwnProperty.call(GLYPHS7, ch)) return GLYPHS7[ch].split("");
    var other = ch === ch.toUpperCase() ? ch.toLowerCase() : ch.toUpperCase();
    if (Object.prototype.hasOwnProperty.call(GLYPHS7, other)) return GLYPHS7[other].split("");
    return null;
  }
  function segs14(ch) {
    var up = ch.toUpperCase();
    var spec = Object.prototype.hasOwnProperty.call(GLYPHS14, up) ? GLYPHS14[up] : null;
    if (spec === null) return null;
    var out = [];
    for (var n = 0; n < NAMES14.length; n++) {
      var name = NAMES14[n];
      var at = spec.indexOf(name);
      // "g1"/"g2" are two letters: an "g" alone never occurs in a 14-segment spec
      if (at >= 0) { out.push(name); spec = spec.slice(0, at) + spec.slice(at + name.length); }
    }
    return out;
  }

  /* text -> cells [{ch, dp, colon}]: a "." or "," lights the previous cell's point */
  function cells(text) {
    var out = [];
    for (var n = 0; n < text.length; n++) {
      var ch = text.charAt(n);
      if ((ch === "." || ch === ",") && out.length && !out[out.length - 1].dp && !out[out.length - 1].colon) {
        out[out.length - 1].dp = true;
      } else if (ch === "." || ch === ",") {
        out.push({ ch: " ", dp: true, colon: false });
      } else if (ch === ":") {
        out.push({ ch: ":", dp: false, colon: true });
      } else {
        out.push({ ch: ch, dp: false, colon: false });
      }
    }
    return out;
  }

  function kindFor(list) {
    for (var n = 0; n < list.length; n++) {
      if (!list[n].colon && segs7(list[n].ch) === null) return "14";
    }
    return "7";
  }

  function polygon(points, name, on) {
    var p = document.createElementNS(SVG, "polygon");
    p.setAttribute("points", points.map(function (xy) { return xy[0].toFixed(1) + "," + xy[1].toFixed(1); }).join(" "));
    p.setAttribute("class", on ? "s on" : "s");
    p.setAttribute("data-seg", name);
    return p;
  }

  function cellSvg(cell, kind) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("data-char", cell.ch);
    if (cell.colon) {
      svg.setAttribute("viewBox", "0 0 16 92");
      svg.setAttribute("class", "cell colon");
      [30, 62].forEach(function (y) {
        var c = document.createElementNS(SVG, "circle");
        c.setAttribute("cx", "8"); c.setAttribute("cy", String(y)); c.setAttribute("r", "4.2");
        c.setAttribute("class", "s on");
        svg.appendChild(c);
      });
      return svg;
    }
    svg.setAttribute("viewBox", "-2 -2 62 94");
    svg.setAttribute("class", "cell seg" + kind);
    var g = document.createElementNS(SVG, "g");
    g.setAttribute("transform", "translate(8,0) skewX(-6)");
    var shapes = kind === "7" ? SHAPES7 : SHAPES14;
    var lit = (kind === "7" ? segs7(cell.ch) : segs14(cell.ch)) || [];
    Object.keys(shapes).forEach(function (name) {
      g.appendChild(polygon(shapes[name], name, lit.indexOf(name) >= 0));
    });
    var dp = document.createElementNS(SVG, "circle");
    dp.setAttribute("cx", "53"); dp.setAttribute("cy", "85"); dp.setAttribute("r", "4.2");
    dp.setAttribute("class", cell.dp ? "s on" : "s");
    dp.setAttribute("data-seg", "dp");
    g.appendChild(dp);
    svg.appendChild(g);
    return svg;
  }

  /* Shows `text` in `field` as segment cells; at least `minCells` cells (blank ones unlit), the
     text aligned right ("right") or left. kind: "7", "14" or "auto" (7 where it can). A text of
     more than `maxPerRow` cells (a signature of 64 hex digits) is split into even rows. */
  function render(field, text, options) {
    options = options || {};
    text = text == null ? "" : String(text);
    var list = cells(text);
    var kind = options.kind && options.kind !== "auto" ? options.kind : kindFor(list);
    var minCells = options.minCells || 0, maxPerRow = options.maxPerRow || Infinity;
    var blank = function () { return { ch: " ", dp: false, colon: false }; };
    var rows = Math.max(1, Math.ceil(list.length / maxPerRow));
    if (rows === 1) {
      for (var n = list.length; n < minCells; n++) {
        if (options.align === "left") list.push(blank()); else list.unshift(blank());
      }
    }
    var perRow = Math.max(1, Math.ceil(list.length / rows));
    while (field.firstChild) field.removeChild(field.firstChild);
    for (var r = 0; r < rows; r++) {
      var row = document.createElement("div");
      row.className = "row";
      list.slice(r * perRow, (r + 1) * perRow).forEach(function (cell) { row.appendChild(cellSvg(cell, kind)); });
      field.appendChild(row);
    }
    field.setAttribute("data-text", text);
    field.setAttribute("data-kind", kind);
    field.setAttribute("data-rows", String(rows));
    field.style.setProperty("--cells", String(Math.max(list.length, 1)));
    field.style.setProperty("--per-row", String(perRow));
    field.style.setProperty("--rows", String(rows));
  }

  window.Segments = { render: render, segs7: segs7, segs14: segs14, cells: cells };
})();
