/*
 * Refinery front-end behaviour. Plain JS, no build step; loaded with `defer`
 * on every page after htmx and uPlot. Contracts are documented in docs/ui.md.
 *
 *   1. Charts   .chart  (inline JSON <script class="chart-data">, data-chart,
 *                        data-chart-script="#id" or data-chart-src [+ data-chart-poll])
 *   2. Uploads  form.upload-form  (XHR with progress, drag & drop onto .upload)
 *   3. Small things: flash close buttons, htmx error toasts, clickable table rows
 *      (tr[data-href]), auto-scrolling logs (.log[data-autoscroll]),
 *      relative times (time[data-relative]).
 */
(function () {
  "use strict";

  var PALETTE = [
    "#5046e5", // indigo
    "#f97316", // orange
    "#10b981", // emerald
    "#e11d48", // rose
    "#0ea5e9", // sky
    "#a855f7", // purple
    "#eab308", // amber
    "#14b8a6", // teal
    "#64748b", // slate
    "#ec4899", // pink
  ];
  var AXIS = "#667085";
  var GRID = "#eef0f4";
  var FONT = '11px ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

  var ICON_CHART =
    '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M3 3v18h18"/><path d="m7 15 4-4 3 3 6-7"/></svg>';

  // ---------------------------------------------------------------------------
  // Helpers
  // ---------------------------------------------------------------------------
  function $$(root, sel) {
    var out = [];
    if (!root) return out;
    if (root.nodeType === 1 && root.matches(sel)) out.push(root);
    if (root.querySelectorAll) out.push.apply(out, root.querySelectorAll(sel));
    return out;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function hexToRgba(hex, a) {
    var m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
    if (!m) return hex;
    var n = parseInt(m[1], 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }

  var compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

  /** Short, readable number: 1.234, 0.0421, 3.0e-5, 12.5K. */
  function fmtNum(v) {
    if (v == null || typeof v !== "number" || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e5) return compact.format(v);
    if (a < 1e-3) return v.toExponential(1);
    if (Number.isInteger(v)) return String(v);
    return String(parseFloat(v.toPrecision(4)));
  }

  function fmtTick(v, a) {
    if (v == null) return "";
    if (a >= 1e4) return compact.format(v);
    return fmtNum(v);
  }

  function fmtBytes(n) {
    if (!isFinite(n)) return "";
    var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
  }

  function getCookie(name) {
    var m = document.cookie.match("(?:^|; )" + name + "=([^;]*)");
    return m ? decodeURIComponent(m[1]) : "";
  }

  function csrfToken(form) {
    var input = form && form.querySelector('input[name="csrfmiddlewaretoken"]');
    if (input && input.value) return input.value;
    var hx = document.body && document.body.getAttribute("hx-headers");
    if (hx) {
      try {
        var h = JSON.parse(hx);
        if (h["x-csrftoken"] || h["X-CSRFToken"]) return h["x-csrftoken"] || h["X-CSRFToken"];
      } catch (e) { /* ignore */ }
    }
    return getCookie("csrftoken");
  }

  // ---------------------------------------------------------------------------
  // 1. Charts
  // ---------------------------------------------------------------------------
  var states = new WeakMap(); // .chart element -> state
  var memory = {}; // chart key -> {hidden: {label: true}, x: {min, max} | null}
  var ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(onResize) : null;

  function chartKey(el) {
    return el.id || el.getAttribute("data-chart-key") || el.getAttribute("data-chart-src") || "";
  }

  function mem(el) {
    var k = chartKey(el);
    if (!k) return { hidden: {}, x: null };
    return memory[k] || (memory[k] = { hidden: {}, x: null });
  }

  function stateOf(el) {
    var st = states.get(el);
    if (!st) {
      st = { plot: null, sig: null, text: null, raw: null, emptyEl: null, timer: null, src: null, zoomed: false, busy: false, pending: false };
      states.set(el, st);
      if (ro) ro.observe(el);
    }
    return st;
  }

  function matchesAny(label, patterns) {
    for (var i = 0; i < patterns.length; i++) {
      var p = patterns[i];
      if (p === label) return true;
      if (p.indexOf("*") >= 0) {
        var re = new RegExp("^" + p.split("*").map(function (s) { return s.replace(/[.+?^${}()|[\]\\]/g, "\\$&"); }).join(".*") + "$");
        if (re.test(label)) return true;
      }
    }
    return false;
  }

  function toNum(v) {
    if (v === null || v === undefined || v === "") return null;
    var n = typeof v === "number" ? v : Number(v);
    return isFinite(n) ? n : null;
  }

  /**
   * {"x": [...], "series": [{"label", "values", "color"?, "scale"?}], "x_label"?, "y_label"?}
   * -> {data: [xs, ys...], series: [...], xLabel, yLabel} or null when there is nothing to draw.
   */
  function normalize(raw, el) {
    if (!raw || typeof raw !== "object") return null;
    var series = Array.isArray(raw.series) ? raw.series.filter(function (s) { return s && Array.isArray(s.values); }) : [];
    var filter = el.getAttribute("data-chart-series");
    if (filter) {
      var pats = filter.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      series = series.filter(function (s) { return matchesAny(String(s.label || ""), pats); });
    }
    if (!series.length) return null;

    var n = Array.isArray(raw.x) ? raw.x.length : Math.max.apply(null, series.map(function (s) { return s.values.length; }));
    var xs = [];
    var xsOk = Array.isArray(raw.x);
    for (var i = 0; i < n; i++) {
      var xv = xsOk ? toNum(raw.x[i]) : i;
      if (xv === null) { xsOk = false; break; }
      xs.push(xv);
    }
    if (!xsOk) { xs = []; for (var j = 0; j < n; j++) xs.push(j); }
    if (!n) return null;

    var ys = series.map(function (s) {
      var out = new Array(n);
      for (var k = 0; k < n; k++) out[k] = toNum(s.values[k]);
      return out;
    });

    // uPlot needs ascending x.
    var sorted = true;
    for (var q = 1; q < n; q++) if (xs[q] < xs[q - 1]) { sorted = false; break; }
    if (!sorted) {
      var idx = xs.map(function (_, ii) { return ii; }).sort(function (a, b) { return xs[a] - xs[b]; });
      xs = idx.map(function (ii) { return xs[ii]; });
      ys = ys.map(function (y) { return idx.map(function (ii) { return y[ii]; }); });
    }

    var any = ys.some(function (y) { return y.some(function (v) { return v !== null; }); });
    if (!any) return null;

    return {
      data: [xs].concat(ys),
      series: series.map(function (s, si) {
        return {
          label: String(s.label == null ? "series " + (si + 1) : s.label),
          color: typeof s.color === "string" ? s.color : null,
          scale: typeof s.scale === "string" && s.scale && s.scale !== "x" ? s.scale : "y",
        };
      }),
      xLabel: raw.x_label || "step",
      yLabel: raw.y_label || "",
    };
  }

  function showMessage(el, st, text, isError) {
    if (st.plot) { st.plot.destroy(); st.plot = null; st.sig = null; }
    if (!st.emptyEl || !el.contains(st.emptyEl)) {
      st.emptyEl = document.createElement("div");
      st.emptyEl.className = "chart-empty";
      el.appendChild(st.emptyEl);
    }
    st.emptyEl.classList.toggle("is-error", !!isError);
    st.emptyEl.innerHTML = ICON_CHART + "<span>" + escapeHtml(text) + "</span>";
  }

  function hideMessage(st) {
    if (st.emptyEl) { st.emptyEl.remove(); st.emptyEl = null; }
  }

  function innerSize(el) {
    var cs = getComputedStyle(el);
    var w = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    var h = el.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
    return { w: Math.floor(w), h: Math.floor(h) };
  }

  function fitPlot(el, st) {
    if (!st.plot) return;
    var s = innerSize(el);
    if (s.w <= 0) return;
    var legend = st.plot.root.querySelector(".u-legend");
    var lh = legend ? legend.offsetHeight + 4 : 0;
    var h = Math.max(80, s.h - lh);
    st.plot.setSize({ width: s.w, height: h });
    // the legend may re-wrap at the new width
    var lh2 = legend ? legend.offsetHeight + 4 : 0;
    if (lh2 !== lh) st.plot.setSize({ width: s.w, height: Math.max(80, s.h - lh2) });
  }

  function dataRange(u) {
    var xs = u.data[0];
    return xs && xs.length ? [xs[0], xs[xs.length - 1]] : null;
  }

  function showLatest(u) {
    if (u.cursor && u.cursor.idx != null) return;
    var cells = u.root.querySelectorAll(".u-legend .u-series");
    for (var i = 0; i < u.series.length && i < cells.length; i++) {
      var col = u.data[i], v = null;
      if (col) for (var j = col.length - 1; j >= 0; j--) if (col[j] != null) { v = col[j]; break; }
      var td = cells[i].querySelector(".u-value");
      if (td) td.textContent = v == null ? "–" : fmtNum(v);
    }
  }

  function buildPlot(el, st, d) {
    var m = mem(el);
    var single = d.series.length === 1;
    var extraScale = null;
    d.series.forEach(function (s) { if (s.scale !== "y" && !extraScale) extraScale = s.scale; });

    var scales = { x: { time: false } };
    scales.y = {};
    if (extraScale) scales[extraScale] = {};

    var axisBase = {
      stroke: AXIS,
      font: FONT,
      labelFont: FONT,
      grid: { stroke: GRID, width: 1 },
      ticks: { stroke: GRID, width: 1, size: 4 },
    };
    var yValues = function (u, splits) {
      var a = 0;
      for (var i = 0; i < splits.length; i++) a = Math.max(a, Math.abs(splits[i] || 0));
      return splits.map(function (v) { return fmtTick(v, a); });
    };
    // y axis as wide as its longest tick label
    var ySize = function (u, values, axisIdx, cycleNum) {
      var ax = u.axes[axisIdx];
      if (cycleNum > 1) return ax._size; // avoid resize ping-pong
      var longest = 0;
      (values || []).forEach(function (v) { if (v != null) longest = Math.max(longest, String(v).length); });
      return Math.ceil(14 + longest * 6.6) + (ax.label ? 18 : 0);
    };
    var axes = [
      Object.assign({}, axisBase, { gap: 4, size: 30, values: yValues }),
      Object.assign({}, axisBase, { scale: "y", gap: 6, size: ySize, values: yValues, label: d.yLabel || undefined, labelSize: d.yLabel ? 16 : 0 }),
    ];
    if (extraScale) {
      axes.push(Object.assign({}, axisBase, { scale: extraScale, side: 1, gap: 6, size: ySize, values: yValues, grid: { show: false } }));
    }

    var series = [{
      label: d.xLabel,
      value: function (u, v) { return v == null ? "–" : fmtNum(v); },
    }];
    d.series.forEach(function (s, i) {
      var color = s.color || PALETTE[i % PALETTE.length];
      var cfg = {
        label: s.label,
        scale: s.scale,
        stroke: color,
        width: 1.75,
        spanGaps: true,
        show: !m.hidden[s.label],
        value: function (u, v) { return v == null ? "–" : fmtNum(v); },
        points: { size: 5, width: 1.5, fill: "#fff" },
      };
      // sparse series (e.g. eval every N steps): always show the points
      var ys = d.data[i + 1], nn = 0;
      for (var k = 0; k < ys.length; k++) if (ys[k] !== null) nn++;
      if (nn > 0 && (nn <= 2 || (nn < ys.length / 4 && nn <= 80))) cfg.points.show = true;
      if (single) {
        cfg.fill = function (u) {
          var b = u.bbox;
          if (!b || !isFinite(b.top) || !isFinite(b.height) || b.height <= 0) return hexToRgba(color, 0.08);
          var g = u.ctx.createLinearGradient(0, b.top, 0, b.top + b.height);
          g.addColorStop(0, hexToRgba(color, 0.16));
          g.addColorStop(1, hexToRgba(color, 0));
          return g;
        };
      }
      series.push(cfg);
    });

    var s = innerSize(el);
    var opts = {
      width: Math.max(s.w, 50),
      height: Math.max(s.h - 28, 80),
      scales: scales,
      axes: axes,
      series: series,
      padding: [10, extraScale ? 4 : 14, 0, 0],
      legend: { show: true, live: true },
      cursor: {
        drag: { x: true, y: false, setScale: true },
        points: { size: 7, width: 2 },
        focus: { prox: 24 },
      },
      focus: { alpha: 0.35 },
      hooks: {
        // with no cursor on the plot, the legend shows each series' latest value
        setLegend: [showLatest],
        ready: [showLatest],
        setData: [showLatest],
        setSeries: [function (u, i) {
          if (i == null || !u.series[i]) return;
          m.hidden[u.series[i].label] = !u.series[i].show;
        }],
        setScale: [function (u, key) {
          if (key !== "x" || st.busy) return;
          var r = dataRange(u);
          var sx = u.scales.x;
          if (!r || sx.min == null) return;
          var full = sx.min <= r[0] && sx.max >= r[1];
          st.zoomed = !full;
          m.x = full ? null : { min: sx.min, max: sx.max };
        }],
      },
    };

    st.busy = true;
    try {
      st.plot = new uPlot(opts, d.data, el);
      if (m.x) {
        st.plot.setScale("x", { min: m.x.min, max: m.x.max });
        st.zoomed = true;
      } else {
        st.zoomed = false;
      }
    } finally {
      st.busy = false;
    }
    fitPlot(el, st);
  }

  function renderChart(el, raw) {
    var st = stateOf(el);
    st.raw = raw;
    var d = normalize(raw, el);
    if (!d) {
      showMessage(el, st, el.getAttribute("data-chart-empty") || "No metrics yet");
      return;
    }
    if (typeof window.uPlot !== "function") {
      showMessage(el, st, "Chart library failed to load", true);
      return;
    }
    if (innerSize(el).w <= 0) { st.pending = true; return; } // hidden (e.g. inactive tab): draw on first resize
    st.pending = false;
    hideMessage(st);

    var sig = d.series.map(function (s) { return s.label + "\u0001" + s.scale + "\u0001" + (s.color || ""); }).join("\u0002") + "|" + d.xLabel + "|" + d.yLabel;
    if (st.plot && st.sig === sig) {
      if (!el.contains(st.plot.root)) { el.appendChild(st.plot.root); fitPlot(el, st); }
      st.busy = true;
      try { st.plot.setData(d.data, !st.zoomed); } finally { st.busy = false; }
      return;
    }
    if (st.plot) { st.plot.destroy(); st.plot = null; }
    st.sig = sig;
    buildPlot(el, st, d);
  }

  function attached(el, st) {
    return (st.plot && el.contains(st.plot.root)) || (st.emptyEl && el.contains(st.emptyEl)) || st.pending;
  }

  function fromText(el, st, text) {
    if (text === st.text && attached(el, st)) return;
    st.text = text;
    var raw = null;
    try { raw = JSON.parse(text); } catch (e) {
      showMessage(el, st, "Invalid chart data", true);
      return;
    }
    renderChart(el, raw);
  }

  function pollSrc(el, st) {
    var src = el.getAttribute("data-chart-src");
    if (st.src === src) return; // already fetching / polling this url
    if (st.timer) clearTimeout(st.timer);
    st.src = src;
    var gen = (st.gen = (st.gen || 0) + 1);
    if (!st.plot && !st.emptyEl) showMessage(el, st, "Loading…");

    function schedule() {
      var every = parseInt(el.getAttribute("data-chart-poll"), 10);
      if (every > 0 && el.isConnected && !el.closest("[data-finished]")) {
        st.timer = setTimeout(tick, Math.max(500, every));
      }
    }
    function tick() {
      if (gen !== st.gen || !el.isConnected) return;
      if (document.hidden && st.text != null) { schedule(); return; } // don't poll background tabs
      fetch(src, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (text) { if (gen === st.gen) fromText(el, st, text); })
        .catch(function (err) {
          if (window.console) console.warn("chart src", src, err);
          if (gen === st.gen && !st.plot) showMessage(el, st, "Couldn't load metrics", true);
        })
        .then(function () { if (gen === st.gen) schedule(); });
    }
    tick();
  }

  function updateChart(el) {
    if (!el.isConnected) return;
    var st = stateOf(el);
    var script = el.querySelector('script.chart-data, script[type="application/json"]');
    var sel = el.getAttribute("data-chart-script");
    if (!script && sel) {
      try { script = document.querySelector(sel); } catch (e) { script = null; }
    }
    if (script) { st.src = null; return fromText(el, st, script.textContent); }
    if (el.hasAttribute("data-chart")) { st.src = null; return fromText(el, st, el.getAttribute("data-chart")); }
    if (el.hasAttribute("data-chart-src")) {
      if (st.text != null && !attached(el, st)) { var t = st.text; st.text = null; fromText(el, st, t); }
      return pollSrc(el, st);
    }
    if (sel) return; // the referenced script has not arrived yet
    showMessage(el, st, el.getAttribute("data-chart-empty") || "No metrics yet");
  }

  function teardownChart(el) {
    var st = states.get(el);
    if (!st) return;
    if (st.timer) clearTimeout(st.timer);
    st.gen = (st.gen || 0) + 1;
    if (st.plot) st.plot.destroy();
    if (ro) ro.unobserve(el);
    states.delete(el);
  }

  function onResize(entries) {
    entries.forEach(function (e) {
      var el = e.target, st = states.get(el);
      if (!st) return;
      if (st.pending && st.raw) { renderChart(el, st.raw); return; }
      if (st.plot) fitPlot(el, st);
    });
  }

  function safeUpdate(el) {
    try { updateChart(el); } catch (err) {
      // one broken chart must not take the page (or the other charts) down
      if (window.console) console.error("chart", el, err);
      try { showMessage(el, stateOf(el), "Couldn't draw this chart", true); } catch (e2) { /* ignore */ }
    }
  }

  function scanCharts(root) {
    $$(root || document, ".chart").forEach(safeUpdate);
  }

  // ---------------------------------------------------------------------------
  // 2. Uploads
  // ---------------------------------------------------------------------------
  function fileLabel(zone, input) {
    var out = zone.querySelector(".upload-file");
    var files = input && input.files ? Array.prototype.slice.call(input.files) : [];
    zone.classList.toggle("has-file", files.length > 0);
    if (!out) return;
    if (!files.length) { out.textContent = ""; return; }
    var total = files.reduce(function (a, f) { return a + f.size; }, 0);
    out.textContent = (files.length === 1 ? files[0].name : files.length + " files") + " · " + fmtBytes(total);
  }

  function zoneInput(zone) {
    return zone.querySelector('input[type="file"]') ||
      (zone.closest("form") && zone.closest("form").querySelector('input[type="file"]'));
  }

  function isFileDrag(e) {
    var t = e.dataTransfer && e.dataTransfer.types;
    return !!t && Array.prototype.indexOf.call(t, "Files") >= 0;
  }

  document.addEventListener("dragover", function (e) {
    if (!isFileDrag(e)) return;
    e.preventDefault(); // never let the browser navigate to a dropped file
    var zone = e.target.closest && e.target.closest(".upload");
    e.dataTransfer.dropEffect = zone ? "copy" : "none";
    document.querySelectorAll(".upload.is-dragover").forEach(function (z) { if (z !== zone) z.classList.remove("is-dragover"); });
    if (zone) zone.classList.add("is-dragover");
  });
  document.addEventListener("dragleave", function (e) {
    var zone = e.target.closest && e.target.closest(".upload");
    if (zone && !zone.contains(e.relatedTarget)) zone.classList.remove("is-dragover");
  });
  document.addEventListener("drop", function (e) {
    if (!isFileDrag(e)) return;
    e.preventDefault();
    var zone = e.target.closest && e.target.closest(".upload");
    document.querySelectorAll(".upload.is-dragover").forEach(function (z) { z.classList.remove("is-dragover"); });
    if (!zone) return;
    var input = zoneInput(zone);
    if (!input || !e.dataTransfer.files.length) return;
    try {
      if (!input.multiple && e.dataTransfer.files.length > 1) {
        var dt = new DataTransfer();
        dt.items.add(e.dataTransfer.files[0]);
        input.files = dt.files;
      } else {
        input.files = e.dataTransfer.files;
      }
    } catch (err) { return; }
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
  document.addEventListener("change", function (e) {
    var input = e.target;
    if (!input || input.type !== "file") return;
    var zone = input.closest(".upload") || (input.form && input.form.querySelector(".upload"));
    if (zone) fileLabel(zone, input);
    var form = input.form;
    if (form && form.classList.contains("upload-form")) {
      form.classList.remove("is-error", "is-done");
      setUploadStatus(form, "", false);
      setUploadBar(form, 0);
    }
  });
  // A .upload that is not a <label> still opens the file picker on click / Enter.
  document.addEventListener("click", function (e) {
    var zone = e.target.closest && e.target.closest(".upload");
    if (!zone || zone.tagName === "LABEL" || e.target.closest("a, button, input, label")) return;
    var input = zoneInput(zone);
    if (input) input.click();
  });

  function setUploadBar(form, pct) {
    var bar = form.querySelector(".upload-progress .progress-bar");
    if (bar) bar.style.width = Math.max(0, Math.min(100, pct)) + "%";
    var prog = form.querySelector(".upload-progress");
    if (prog) prog.setAttribute("aria-valuenow", String(Math.round(pct)));
  }

  function setUploadStatus(form, text, isError) {
    var el = form.querySelector(".upload-status");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("is-error", !!isError);
  }

  function resultContainer(form) {
    return form.querySelector(".upload-result") || form.closest(".upload-result");
  }

  function swapResult(form, html) {
    var box = resultContainer(form);
    if (!box) return null;
    var tpl = document.createElement("template");
    tpl.innerHTML = html.trim();
    var kids = Array.prototype.filter.call(tpl.content.childNodes, function (n) {
      return n.nodeType === 1 || (n.nodeType === 3 && n.textContent.trim());
    });
    var target = box;
    if (kids.length === 1 && kids[0].nodeType === 1 && kids[0].classList.contains("upload-result")) {
      // the response is the whole container: replace it
      var fresh = kids[0];
      box.replaceWith(fresh);
      target = fresh;
    } else {
      box.innerHTML = html;
    }
    if (window.htmx && typeof window.htmx.process === "function") window.htmx.process(target);
    var focus = target.querySelector(".has-error input, .has-error select, .has-error textarea, .form-errors");
    if (focus && focus.scrollIntoView) focus.scrollIntoView({ block: "center", behavior: "smooth" });
    return target;
  }

  function setBusy(form, busy) {
    form.classList.toggle("is-uploading", busy);
    form.setAttribute("aria-busy", busy ? "true" : "false");
    form.querySelectorAll('button[type="submit"], button:not([type]), input[type="submit"]').forEach(function (b) {
      b.disabled = busy;
    });
  }

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.classList || !form.classList.contains("upload-form")) return;
    if (typeof FormData === "undefined" || typeof XMLHttpRequest === "undefined") return;
    e.preventDefault();
    if (form.classList.contains("is-uploading")) return;

    var fd;
    try { fd = e.submitter ? new FormData(form, e.submitter) : new FormData(form); } catch (err) { fd = new FormData(form); }
    var action = form.getAttribute("action") || window.location.href;
    var method = (form.getAttribute("method") || "POST").toUpperCase();
    var xhr = new XMLHttpRequest();
    xhr.open(method, action, true);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json, text/html;q=0.9");

    form.classList.remove("is-error", "is-done");
    setBusy(form, true);
    setUploadBar(form, 0);
    setUploadStatus(form, "Starting upload…", false);

    var started = Date.now();
    xhr.upload.onprogress = function (ev) {
      if (!ev.lengthComputable) { setUploadStatus(form, "Uploading… " + fmtBytes(ev.loaded), false); return; }
      var pct = (ev.loaded / ev.total) * 100;
      setUploadBar(form, pct);
      var secs = (Date.now() - started) / 1000;
      var rate = secs > 0.5 ? " · " + fmtBytes(ev.loaded / secs) + "/s" : "";
      setUploadStatus(form, "Uploading… " + Math.floor(pct) + "%  (" + fmtBytes(ev.loaded) + " of " + fmtBytes(ev.total) + rate + ")", false);
    };
    xhr.upload.onload = function () {
      setUploadBar(form, 100);
      setUploadStatus(form, "Processing…", false);
    };

    function fail(msg) {
      setBusy(form, false);
      form.classList.add("is-error");
      setUploadStatus(form, msg, true);
    }

    xhr.onerror = function () { fail("Upload failed: network error. Check your connection and try again."); };
    xhr.onabort = function () { fail("Upload canceled."); };
    xhr.onload = function () {
      var ct = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
      var body = xhr.responseText || "";
      var redirect = xhr.getResponseHeader("HX-Redirect") || xhr.getResponseHeader("HX-Location");

      if (ct.indexOf("application/json") >= 0) {
        var j = null;
        try { j = JSON.parse(body); } catch (err) { /* fallthrough */ }
        if (j && j.redirect) { form.classList.add("is-done"); setUploadStatus(form, "Done. Redirecting…", false); window.location.assign(j.redirect); return; }
        if (j && (j.error || j.message)) { return fail(String(j.error || j.message)); }
        if (xhr.status >= 200 && xhr.status < 300) { setBusy(form, false); form.classList.add("is-done"); setUploadStatus(form, "Upload complete.", false); return; }
        return fail("Upload failed (" + xhr.status + ").");
      }
      if (redirect) { window.location.assign(redirect); return; }

      // XHR follows 3xx silently: a success that redirected lands on another page.
      var finalUrl = (xhr.responseURL || "").split("#")[0];
      var req = new URL(action, window.location.href).href.split("#")[0];
      if (xhr.status >= 200 && xhr.status < 300 && finalUrl && finalUrl !== req) {
        form.classList.add("is-done");
        setUploadStatus(form, "Done. Redirecting…", false);
        window.location.assign(finalUrl);
        return;
      }

      if (ct.indexOf("text/html") >= 0 && body && resultContainer(form)) {
        var html = body;
        if (/^\s*(<!doctype|<html)/i.test(body)) {
          // a whole page came back (e.g. a view that re-renders with errors): take its .upload-result
          var box = resultContainer(form);
          var doc = new DOMParser().parseFromString(body, "text/html");
          var part = (box.id && doc.getElementById(box.id)) || doc.querySelector(".upload-result");
          html = part ? part.outerHTML : null;
        }
        if (html !== null) {
          var hasErrors = /class="[^"]*\b(has-error|form-errors|errorlist)\b/.test(html);
          var ok = xhr.status >= 200 && xhr.status < 300 && !hasErrors;
          setBusy(form, false);
          var target = swapResult(form, html);
          // the container may have wrapped (and replaced) the form itself
          var f = form.isConnected ? form : (target && (target.matches("form.upload-form") ? target : target.querySelector("form.upload-form")));
          if (f) {
            f.classList.add(ok ? "is-done" : "is-error");
            setUploadStatus(f, ok ? "" : "Please fix the errors below.", !ok);
          }
          return;
        }
      }
      if (xhr.status === 413) return fail("That file is too large for the server.");
      if (xhr.status === 403) return fail("Permission denied (403). Reload the page and try again.");
      if (xhr.status >= 500) return fail("Server error (" + xhr.status + "). Please try again.");
      if (xhr.status >= 200 && xhr.status < 300 && /^\s*(<!doctype|<html)/i.test(body)) {
        // a full page came back and there is nowhere to put it: show it
        document.open(); document.write(body); document.close();
        return;
      }
      fail("Upload failed (" + xhr.status + ").");
    };

    xhr.send(fd);
  });

  // ---------------------------------------------------------------------------
  // 3. Small things
  // ---------------------------------------------------------------------------
  function dismiss(flash) {
    flash.classList.add("is-leaving");
    setTimeout(function () { flash.remove(); }, 200);
  }

  document.addEventListener("click", function (e) {
    var close = e.target.closest && e.target.closest(".flash-close");
    if (close) { var f = close.closest(".flash"); if (f) dismiss(f); return; }

    // clickable table rows: <tr data-href="/runs/12/">
    var tr = e.target.closest && e.target.closest("tr[data-href]");
    if (tr && !e.target.closest("a, button, input, select, textarea, label, form")) {
      var href = tr.getAttribute("data-href");
      if (e.metaKey || e.ctrlKey) window.open(href, "_blank");
      else window.location.assign(href);
    }
  });

  // <select data-autosubmit> submits its form on change (e.g. the sidebar team switcher)
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el && el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
      if (typeof el.form.requestSubmit === "function") el.form.requestSubmit();
      else el.form.submit();
    }
  });

  function toast(message, kind) {
    var box = document.querySelector(".toasts");
    if (!box) {
      box = document.createElement("div");
      box.className = "toasts";
      box.setAttribute("aria-live", "polite");
      document.body.appendChild(box);
    }
    var dup = Array.prototype.some.call(box.children, function (c) { return c.getAttribute("data-msg") === message; });
    if (dup) return;
    var f = document.createElement("div");
    f.className = "flash flash-" + (kind || "error");
    f.setAttribute("role", "status");
    f.setAttribute("data-msg", message);
    f.innerHTML = '<div class="flash-body">' + escapeHtml(message) + '</div><button type="button" class="flash-close" aria-label="Dismiss">×</button>';
    box.appendChild(f);
    setTimeout(function () { if (f.isConnected) dismiss(f); }, 6000);
  }

  document.addEventListener("htmx:responseError", function (e) {
    var x = e.detail && e.detail.xhr;
    var s = x ? x.status : 0;
    toast(s === 403 ? "You don't have permission to do that." : s === 404 ? "Not found (404)." : "Request failed (" + s + ").", "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("Can't reach the server. Retrying when possible…", "warning");
  });

  // auto-scrolling log tails: <pre class="log" id="log" data-autoscroll>
  var logStick = {};
  document.addEventListener("scroll", function (e) {
    var el = e.target;
    if (!el || !el.classList || !el.classList.contains("log") || !el.hasAttribute("data-autoscroll")) return;
    if (el.id) logStick[el.id] = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  }, true);
  function stickLogs(root) {
    $$(root, ".log[data-autoscroll]").forEach(function (el) {
      if (!el.id || logStick[el.id] !== false) el.scrollTop = el.scrollHeight;
    });
  }

  // relative times: <time datetime="2025-01-01T12:00:00Z" data-relative>...</time>
  var rtf = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat("en", { numeric: "auto" }) : null;
  function relTime(root) {
    if (!rtf) return;
    $$(root, "time[data-relative]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      if (!el.title) el.title = new Date(t).toLocaleString();
      var s = Math.round((t - Date.now()) / 1000), a = Math.abs(s);
      var txt = a < 45 ? "just now"
        : a < 3600 ? rtf.format(Math.round(s / 60), "minute")
        : a < 86400 ? rtf.format(Math.round(s / 3600), "hour")
        : a < 86400 * 30 ? rtf.format(Math.round(s / 86400), "day")
        : new Date(t).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
      if (el.textContent !== txt) el.textContent = txt;
    });
  }

  // ---------------------------------------------------------------------------
  // Wiring: initial load, htmx swaps, any other DOM insertion
  // ---------------------------------------------------------------------------
  function enhance(root) {
    scanCharts(root);
    stickLogs(root);
    relTime(root);
  }

  function insideOwnWidgets(node) {
    var el = node.nodeType === 1 ? node : node.parentElement;
    return !!(el && el.closest && el.closest(".uplot, .chart-empty, .toasts, time[data-relative]"));
  }

  var mo = new MutationObserver(function (muts) {
    var charts = new Set(), roots = new Set(), scripts = false;
    muts.forEach(function (m) {
      if (insideOwnWidgets(m.target)) return;
      if (m.type === "attributes") { if (m.target.matches(".chart")) charts.add(m.target); return; }
      m.removedNodes.forEach(function (n) {
        if (n.nodeType !== 1) return;
        $$(n, ".chart").forEach(function (c) { if (!c.isConnected) teardownChart(c); });
      });
      var host = m.target.nodeType === 1 && m.target.closest(".chart");
      if (host) charts.add(host);
      var log = m.target.nodeType === 1 && m.target.closest(".log[data-autoscroll]");
      if (log) roots.add(log);
      m.addedNodes.forEach(function (n) {
        if (n.nodeType !== 1 || insideOwnWidgets(n)) return;
        roots.add(n);
        if ($$(n, 'script[type="application/json"]').length) scripts = true;
      });
    });
    roots.forEach(function (r) { if (r.isConnected) enhance(r); });
    charts.forEach(safeUpdate);
    if (scripts) document.querySelectorAll(".chart[data-chart-script]").forEach(safeUpdate);
  });

  function start() {
    enhance(document);
    mo.observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-chart", "data-chart-src", "data-chart-series"] });
    setInterval(function () { relTime(document); }, 30000);
  }

  document.addEventListener("htmx:afterSettle", function (e) { enhance(e.target || document); });
  document.addEventListener("visibilitychange", function () {
    // come back to a background tab: poll charts right away
    if (document.hidden) return;
    document.querySelectorAll(".chart[data-chart-src][data-chart-poll]").forEach(function (el) {
      var st = states.get(el);
      if (st && st.src) { st.src = null; pollSrc(el, st); }
    });
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  window.Refinery = {
    renderChart: renderChart,
    updateChart: updateChart,
    scan: enhance,
    toast: toast,
    fmtNum: fmtNum,
    plotOf: function (el) { var st = states.get(el); return st ? st.plot : null; },
  };
})();

/* ==========================================================================
 * Compare overlays (templates/runs/compare.html; an extension, not part of
 * the core above). Each series brings its own x values, so that runs logged
 * at different steps or times are sent once each instead of on a shared x
 * padded with nulls:
 *
 *   <script type="application/json" id="C-src">
 *     {"x_label": "step", "series": [{"label", "color", "x": [...], "y": [...]}]}
 *   </script>
 *   <div class="chart" id="C" data-overlay-src="#C-src" data-chart-script="#C-data"></div>
 *
 * This block merges the series onto one sorted x axis (null where a series has
 * no point) and writes the usual chart JSON into <script id="C-data">, which
 * the chart reads through data-chart-script (docs/ui.md, source 2).
 * ========================================================================== */
(function () {
  "use strict";

  function align(raw) {
    var series = raw && Array.isArray(raw.series) ? raw.series : [];
    var seen = new Map(), xs = [];
    series.forEach(function (s) {
      (s.x || []).forEach(function (x) {
        if (typeof x === "number" && isFinite(x) && !seen.has(x)) { seen.set(x, true); xs.push(x); }
      });
    });
    xs.sort(function (a, b) { return a - b; });
    var index = new Map();
    xs.forEach(function (x, i) { index.set(x, i); });
    return {
      x: xs,
      x_label: (raw && raw.x_label) || "step",
      y_label: (raw && raw.y_label) || "",
      series: series.map(function (s) {
        var values = new Array(xs.length).fill(null), sx = s.x || [], sy = s.y || [];
        for (var i = 0; i < sx.length; i++) if (index.has(sx[i])) values[index.get(sx[i])] = sy[i] == null ? null : sy[i];
        var out = { label: s.label, values: values };
        if (s.color) out.color = s.color;
        return out;
      }),
    };
  }

  function convert(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var charts = Array.prototype.slice.call(scope.querySelectorAll(".chart[data-overlay-src]"));
    if (scope.matches && scope.matches(".chart[data-overlay-src]")) charts.push(scope);
    charts.forEach(function (el) {
      var src = null;
      try { src = document.querySelector(el.getAttribute("data-overlay-src")); } catch (e) { src = null; }
      if (!src || !el.id) return;
      var id = el.id + "-data";
      var out = document.getElementById(id);
      if (out && out.getAttribute("data-from") === src.textContent.length + ":" + el.id) return; // done already
      var data;
      try { data = align(JSON.parse(src.textContent)); } catch (e) { data = { series: [] }; }
      if (out) out.remove();
      out = document.createElement("script");
      out.type = "application/json";
      out.id = id;
      out.setAttribute("data-from", src.textContent.length + ":" + el.id);
      out.textContent = JSON.stringify(data);
      src.parentNode.insertBefore(out, src.nextSibling);
      if (window.Refinery && window.Refinery.updateChart) window.Refinery.updateChart(el);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { convert(document); });
  else convert(document);
  document.addEventListener("htmx:afterSettle", function () { convert(document); });
  window.Refinery = window.Refinery || {};
  window.Refinery.alignOverlay = align;
})();

// -----------------------------------------------------------------------------
// Behaviour that used to live in inline handlers, inline <script> and htmx
// expressions. The Content Security Policy allows neither inline script without a
// nonce nor eval (htmx runs with allowEval false), so templates declare it with
// data attributes and it lives here.
// -----------------------------------------------------------------------------
(function () {
  "use strict";

  // <button data-confirm="Cancel run #3?">: ask before the click goes through.
  document.addEventListener("click", function (e) {
    var el = e.target.closest && e.target.closest("[data-confirm]");
    if (el && !window.confirm(el.getAttribute("data-confirm"))) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);

  // <select data-metric-sort> (runs list): picking a metric sorts by it, its better end first;
  // clearing it goes back to the newest runs first. Capture phase: the form's htmx `change`
  // trigger must see the new sort value.
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (!el || !el.hasAttribute || !el.hasAttribute("data-metric-sort") || !el.form) return;
    var s = el.form.elements.sort, o = el.selectedOptions[0];
    if (!s) return;
    s.value = o && o.value ? (o.getAttribute("data-goal") === "min" ? "metric" : "-metric")
                           : (s.value.indexOf("metric") >= 0 ? "-created" : s.value);
  }, true);

  document.addEventListener("htmx:confirm", function (e) {
    var elt = e.detail && e.detail.elt, ev = e.detail && e.detail.triggeringEvent;
    if (!elt || !elt.getAttribute) return;
    // data-ignore-change-from="#run-q": that field's `change` does not trigger the request
    // (it has its own debounced `input` trigger).
    var ignore = elt.getAttribute("data-ignore-change-from");
    if (ignore && ev && ev.type === "change" && ev.target && ev.target.matches && ev.target.matches(ignore)) {
      e.preventDefault();
      return;
    }
    // data-poll-pause-within=".sweep-picker": skip a poll while the focus is in there.
    var pause = elt.getAttribute("data-poll-pause-within");
    var active = document.activeElement;
    if (pause && active && active.closest && active.closest(pause)) e.preventDefault();
  });

  // data-index-of="#stages > .stage" (hx-get button): send index=<how many match>.
  document.addEventListener("htmx:configRequest", function (e) {
    var elt = e.detail && e.detail.elt;
    var sel = elt && elt.getAttribute && elt.getAttribute("data-index-of");
    if (sel) e.detail.parameters.index = String(document.querySelectorAll(sel).length);
  });

  // The run page's poll swaps #run-live whole: keep the log tails and folded charts the user
  // opened (or closed) as they were.
  var openDetails = {};
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (!e.detail.target || e.detail.target.id !== "run-live") return;
    e.detail.target.querySelectorAll("details[id]").forEach(function (d) { openDetails[d.id] = d.open; });
  });
  document.addEventListener("htmx:afterSwap", function () {
    var live = document.getElementById("run-live");
    if (!live) return;
    live.querySelectorAll("details[id]").forEach(function (d) { if (d.id in openDetails) d.open = openDetails[d.id]; });
  });
})();
