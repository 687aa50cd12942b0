/* highmark dashboard: the runs table and the learning curves (uPlot), live or static.
   Live (body[data-mode=live]): data from api/runs and api/run, changes pushed by api/events (SSE).
   Static (highmark report): data from the JSON block #hm-data. Text from runs is only ever set
   with textContent, never parsed as HTML. */
(function () {
  "use strict";
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const X_LABELS = { step: null, epoch: "epoch", time: "wall time (s)" };
  const live = document.body.dataset.mode === "live";
  const state = {
    runs: [], payloads: {}, selected: new Set(), chosen: new Set(), seen: new Set(), xMode: "step", log: false,
    charts: {}, picked: false,
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const num = (v) => (v === null || v === undefined ? "–"
    : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(6).replace(/\.?0+$/, "")) : String(v));
  const colourOf = (id) => COLOURS[state.runs.findIndex((r) => r.id === id) % COLOURS.length] || COLOURS[0];
  const ago = (t) => (!t ? "–" : live ? Math.max(0, Math.round(Date.now() / 1000 - t)) + " s ago"
    : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC");

  /* ---------------------------------------------------------------- runs table */
  const COLUMNS = [
    ["run", (r) => r.name], ["status", (r) => r.status], ["monitor", (r) => r.monitor],
    ["best value", (r) => num(r.best_value)], ["best step", (r) => num(r.best_step)],
    ["stop reason", (r) => r.stop_reason || (r.error ? "unreadable: " + r.error : "–")],
    ["patience left", (r) => (r.patience === null ? "–" : num(r.patience_left) + " of " + num(r.patience))],
    ["checkpoints", (r) => (r.checkpoints ? r.checkpoints + " (" + r.checkpoint_steps.join(", ") + ")" : "0")],
    ["evaluations", (r) => num(r.evaluations)], ["last evaluation", (r) => ago(r.last_time)],
  ];

  function renderTable() {
    const table = document.getElementById("runs");
    const head = table.tHead, body = table.tBodies[0];
    if (!head.rows.length) {
      const row = head.insertRow();
      row.appendChild(el("th", {}, ""));
      for (const [name] of COLUMNS) row.appendChild(el("th", {}, name));
    }
    body.replaceChildren();
    for (const run of state.runs) {
      const row = el("tr", { "data-id": run.id, class: "status-" + run.status });
      const box = el("input", { type: "checkbox", "aria-label": "plot " + run.name });
      box.checked = state.selected.has(run.id);
      box.addEventListener("change", () => toggle(run.id, box.checked));
      const cell = el("td", {});
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colourOf(run.id);
      cell.append(box, swatch);
      row.appendChild(cell);
      COLUMNS.forEach(([name, get], i) => {
        const td = el("td", { class: "c" + i, "data-col": name }, get(run));
        if (name === "run") td.title = run.url;
        row.appendChild(td);
      });
      body.appendChild(row);
    }
    const meta = document.getElementById("meta");
    if (live) meta.textContent = state.runs.length + " run(s) under " + (state.root || "");
    else if (!meta.textContent) meta.textContent = state.runs.length + " run(s)";
    meta.dataset.runs = String(state.runs.length);
  }

  async function toggle(id, on) {
    state.picked = true;
    if (on) state.selected.add(id); else state.selected.delete(id);
    if (on && !state.payloads[id]) await fetchPayload(id);
    draw();
  }

  /* ---------------------------------------------------------------- data */
  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }
  async function fetchPayload(id) {
    try { state.payloads[id] = await getJSON("api/run?id=" + encodeURIComponent(id)); }
    catch (err) { console.warn("highmark:", err.message); delete state.payloads[id]; }
  }
  function defaultSelection() {
    if (state.picked) return;
    const ids = state.runs.map((r) => r.id);
    const newest = state.runs.slice().sort((a, b) => (b.last_time || 0) - (a.last_time || 0));
    state.selected = new Set(ids.length <= 6 ? ids : newest.slice(0, 1).map((r) => r.id));
  }

  /* ---------------------------------------------------------------- controls */
  function metricNames(runs) {
    const kinds = {};
    for (const p of runs) for (const [k, kind] of Object.entries(p.kinds)) kinds[k] = kinds[k] || kind;
    const monitors = runs.map((p) => p.monitor).filter((m) => m && kinds[m]);
    const names = [...new Set([...monitors, ...Object.keys(kinds)])];
    return { names, kinds };
  }

  function renderControls(names, kinds) {
    const box = document.getElementById("controls");
    box.replaceChildren();
    const axis = el("label", {}, "x axis ");
    const select = el("select", { id: "x-axis" });
    for (const [value, label] of [["step", "step (the run's unit)"], ["epoch", "epoch"], ["time", "wall time"]]) {
      const option = el("option", { value }, label);
      option.selected = value === state.xMode;
      select.appendChild(option);
    }
    select.addEventListener("change", () => { state.xMode = select.value; draw(); });
    axis.appendChild(select);
    const log = el("label", {}, " ");
    const logBox = el("input", { type: "checkbox", id: "log-scale" });
    logBox.checked = state.log;
    logBox.addEventListener("change", () => { state.log = logBox.checked; draw(true); });
    log.append(logBox, document.createTextNode(" log scale"));
    const main = el("div", { id: "metrics", class: "metrics" });
    const more = el("details", { id: "more-metrics" });
    const others = names.filter((n) => kinds[n] === "other");
    more.appendChild(el("summary", {}, others.length + " more metric(s): runtimes, throughput, counters"));
    for (const name of names) {
      const label = el("label", { class: "metric" });
      const check = el("input", { type: "checkbox", value: name });
      check.checked = state.chosen.has(name);
      check.addEventListener("change", () => {
        if (check.checked) state.chosen.add(name); else state.chosen.delete(name);
        draw();
      });
      label.append(check, document.createTextNode(" " + name + (kinds[name] === "lr" ? " (LR)" : "")));
      (kinds[name] === "other" ? more : main).appendChild(label);
    }
    box.append(axis, log, main);
    if (others.length) box.appendChild(more);
  }

  /* ---------------------------------------------------------------- charts */
  function xOf(p, mode) {
    if (mode === "epoch") return p.epochs;
    if (mode === "time") return p.times;
    return p.steps;
  }

  function seriesOf(p, metric, mode) {
    const xs = xOf(p, mode), ys = p.metrics[metric];
    if (!ys) return null;
    const byX = new Map(), xAtStep = new Map();
    p.steps.forEach((step, i) => {
      if (xs[i] === null || xs[i] === undefined) return;
      xAtStep.set(step, xs[i]);
      let y = ys[i];
      if (y !== null && state.log && y <= 0) y = null;
      if (y !== null) byX.set(xs[i], y);
    });
    if (!byX.size) return null;
    const sorted = [...byX.keys()].sort((a, b) => a - b);
    const mark = (step) => (xAtStep.has(step) && byX.has(xAtStep.get(step))
      ? [xAtStep.get(step), byX.get(xAtStep.get(step))] : null);
    return {
      xs: sorted, ys: sorted.map((x) => byX.get(x)),
      best: p.best_step === null ? null : mark(p.best_step),
      checkpoints: p.checkpoint_rows.map((c) => mark(c.step)).filter(Boolean),
      stop: p.stop_step === null || !xAtStep.has(p.stop_step) ? null : xAtStep.get(p.stop_step),
    };
  }

  function star(ctx, x, y, r) {
    ctx.beginPath();
    for (let i = 0; i < 10; i++) {
      const a = -Math.PI / 2 + (i * Math.PI) / 5, rr = i % 2 ? r * 0.45 : r;
      ctx.lineTo(x + rr * Math.cos(a), y + rr * Math.sin(a));
    }
    ctx.closePath();
  }

  function drawMarks(u, marks) {
    const ctx = u.ctx, dpr = devicePixelRatio || 1, { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
    for (const m of marks) {
      ctx.strokeStyle = m.colour; ctx.fillStyle = m.colour; ctx.lineWidth = 1.5 * dpr;
      if (m.stop !== null) {
        const x = u.valToPos(m.stop, "x", true);
        ctx.setLineDash([6 * dpr, 4 * dpr]);
        ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
        ctx.setLineDash([]);
      }
      for (const [cx, cy] of m.checkpoints) {
        ctx.beginPath();
        ctx.arc(u.valToPos(cx, "x", true), u.valToPos(cy, "y", true), 5 * dpr, 0, 2 * Math.PI);
        ctx.fillStyle = "#fff"; ctx.fill(); ctx.stroke();
      }
      if (m.best) {
        star(ctx, u.valToPos(m.best[0], "x", true), u.valToPos(m.best[1], "y", true), 9 * dpr);
        ctx.fillStyle = m.colour; ctx.fill(); ctx.strokeStyle = "#000"; ctx.lineWidth = dpr; ctx.stroke();
      }
    }
    ctx.restore();
  }

  function caption(list, run, s) {
    const parts = [run.name + ":"];
    if (s.best) parts.push("best ★ at " + run.unit + " " + run.best_step);
    if (s.stop !== null) parts.push("stopped ┆ at " + run.unit + " " + run.stop_step);
    parts.push(s.checkpoints.length ? "checkpoints ○ at " + run.checkpoint_rows.map((c) => c.step).join(", ") : "no checkpoint");
    list.appendChild(el("li", {
      "data-run": run.id, "data-points": String(s.xs.length),
      "data-best": run.best_step === null ? "" : String(run.best_step),
      "data-stop": run.stop_step === null ? "" : String(run.stop_step),
      "data-checkpoints": run.checkpoint_rows.map((c) => c.step).join(","),
    }, parts.join(" ")));
  }

  function plotRuns(runs, notes) {
    if (state.xMode === "epoch") {
      const without = runs.filter((p) => !p.epochs.some((e) => e !== null));
      without.forEach((p) => notes.push(p.name + " records no epochs: choose step or wall time"));
      return runs.filter((p) => !without.includes(p));
    }
    if (state.xMode === "step" && runs.length) {
      const unit = runs[0].unit;
      const other = runs.filter((p) => p.unit !== unit);
      other.forEach((p) => notes.push(p.name + " counts " + p.unit + "s, not " + unit + "s: choose wall time to compare"));
      return runs.filter((p) => p.unit === unit);
    }
    return runs;
  }

  function chartFor(metric, runs, width) {
    const parts = [], marks = [], drawn = [];
    for (const p of runs) {
      const s = seriesOf(p, metric, state.xMode);
      if (!s) continue;
      parts.push([s.xs, s.ys]);
      marks.push({ colour: colourOf(p.id), best: s.best, checkpoints: s.checkpoints, stop: s.stop });
      drawn.push([p, s]);
    }
    if (!drawn.length) return null;
    const data = uPlot.join(parts);
    const xLabel = X_LABELS[state.xMode] || drawn[0][0].unit;
    const opts = {
      width, height: 260, title: metric,
      cursor: { sync: { key: "hm" }, drag: { x: true, y: false } },
      scales: {
        x: { time: false, range: (u, lo, hi) => { const pad = (hi - lo) * 0.03 || 1; return [lo - pad, hi + pad]; } },
        y: { distr: state.log ? 3 : 1 },
      },
      axes: [{ label: xLabel }, { label: metric, size: 60 }],
      series: [{ label: xLabel }].concat(drawn.map(([p]) => ({
        label: p.name, stroke: colourOf(p.id), width: 2, spanGaps: true,
        value: (u, v) => (v === null || v === undefined ? "–" : num(v)),
      }))),
      hooks: { draw: [(u) => drawMarks(u, marks)] },
    };
    return { opts, data, drawn };
  }

  function draw(rebuild) {
    const runs = [...state.selected].map((id) => state.payloads[id]).filter(Boolean);
    const { names, kinds } = metricNames(runs);
    for (const name of names) {  // a metric seen for the first time is shown unless it is no curve
      if (!state.seen.has(name) && kinds[name] !== "other") state.chosen.add(name);
      state.seen.add(name);
    }
    renderControls(names, kinds);
    const notes = [];
    const plotted = plotRuns(runs, notes);
    const box = document.getElementById("charts");
    const cols = box.clientWidth > 1100 ? 2 : 1;
    const width = Math.max(320, Math.floor((Math.min(box.clientWidth || 900, 1600) - 16 * cols) / cols) - 12);
    const keep = {};
    for (const metric of names.filter((n) => state.chosen.has(n))) {
      const spec = chartFor(metric, plotted, width);
      if (!spec) continue;
      const key = metric + "|" + spec.drawn.map(([p]) => p.id).join("|") + "|" + state.xMode + "|" + state.log;
      let entry = state.charts[metric];
      if (entry && (entry.key !== key || rebuild)) { entry.plot.destroy(); entry.node.remove(); entry = null; }
      if (!entry) {
        const node = el("div", { class: "chart", "data-metric": metric });
        const plot = new uPlot(spec.opts, spec.data, node);
        entry = { key, plot, node, list: el("ul", { class: "marks" }) };
        node.appendChild(entry.list);
      } else {
        const x = entry.plot.scales.x, old = entry.plot.data[0];
        const zoomed = old.length && (x.min > old[0] || x.max < old[old.length - 1]);
        entry.plot.setData(spec.data, !zoomed);
      }
      entry.list.replaceChildren();
      for (const [p, s] of spec.drawn) caption(entry.list, p, s);
      entry.node.dataset.xAxis = state.xMode;
      entry.node.dataset.log = String(state.log);
      entry.node.dataset.points = String(spec.drawn.reduce((n, [, s]) => n + s.xs.length, 0));
      box.appendChild(entry.node);
      keep[metric] = entry;
    }
    for (const [metric, entry] of Object.entries(state.charts)) {
      if (!keep[metric]) { entry.plot.destroy(); entry.node.remove(); }
    }
    state.charts = keep;
    const noteBox = document.getElementById("notes") || el("p", { id: "notes", class: "hint" });
    noteBox.textContent = notes.join("; ");
    box.before(noteBox);
    renderCheckpoints(runs);
  }

  function renderCheckpoints(runs) {
    const box = document.getElementById("ckpt");
    box.replaceChildren();
    for (const p of runs) {
      box.appendChild(el("h3", {}, p.name));
      if (!p.checkpoint_rows.length) { box.appendChild(el("p", {}, "No checkpoints saved.")); continue; }
      const table = el("table", { class: "checkpoints", "data-run": p.id });
      const head = table.createTHead().insertRow();
      for (const h of ["step", p.monitor || "monitored", "flags", "kept by", "size (bytes)"]) head.appendChild(el("th", {}, h));
      const values = new Map(p.steps.map((s, i) => [s, p.monitor && p.metrics[p.monitor] ? p.metrics[p.monitor][i] : null]));
      for (const c of p.checkpoint_rows) {
        const row = table.insertRow();
        if (c.is_best) row.className = "best";
        const flags = [c.is_best ? "best" : "", c.is_latest ? "latest" : ""].filter(Boolean).join(" ");
        const kept = Array.isArray(c.kept_by) ? c.kept_by.join(", ") : c.kept_by;
        for (const v of [c.step, num(values.get(c.step)), flags, kept || "–", num(c.size)]) row.appendChild(el("td", {}, v));
      }
      box.appendChild(table);
    }
  }

  /* ---------------------------------------------------------------- live feed */
  async function onRuns(message) {
    state.runs = message.runs;
    state.root = message.root;
    defaultSelection();
    for (const id of [...state.selected]) {
      if (!state.runs.some((r) => r.id === id)) state.selected.delete(id);
    }
    const changed = new Set(message.changed || []);
    await Promise.all([...state.selected]
      .filter((id) => changed.has(id) || !state.payloads[id])
      .map(fetchPayload));
    renderTable();
    draw();
    const stamp = document.getElementById("live");
    stamp.hidden = false;
    stamp.textContent = "live · updated " + new Date().toLocaleTimeString();
    stamp.dataset.updates = String(Number(stamp.dataset.updates || 0) + 1);
  }

  function startLive() {
    let queue = Promise.resolve();
    const source = new EventSource("api/events");
    source.addEventListener("runs", (event) => {
      const message = JSON.parse(event.data);
      queue = queue.then(() => onRuns(message)).catch((err) => console.warn("highmark:", err.message));
    });
    source.onerror = () => {
      const stamp = document.getElementById("live");
      stamp.hidden = false;
      stamp.textContent = "connection lost, retrying…";
    };
  }

  function startStatic() {
    const data = JSON.parse(document.getElementById("hm-data").textContent);
    state.runs = data.runs;
    for (const p of data.runs) state.payloads[p.id] = p;
    defaultSelection();
    renderTable();
    draw();
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => draw(true), 200);
  });
  if (live) startLive(); else startStatic();
})();
