// fmstack dashboard: reads /api/dashboard and draws it. Plain browser JavaScript, no build step, no chart library:
// the plots are SVG built here. Text goes through textContent, never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { el, showError, hideError, errorMessage, authFetch } = window.fm;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 560;
  const H = 230;
  const M = { left: 56, right: 12, top: 12, bottom: 44 };
  const HOURS = { "1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30 };
  const ui = {
    form: $("filters"), range: $("range"), since: $("since"), until: $("until"), app: $("app"), route: $("route"),
    sinceField: $("since-field"), untilField: $("until-field"), took: $("took"), kpis: $("kpis"),
  };

  // ---------- formatting ----------

  const none = (v) => v === null || v === undefined || Number.isNaN(v);
  const fmt = {
    int: (v) => (none(v) ? "–" : Math.round(v).toLocaleString("en-US")),
    ms: (v) => (none(v) ? "–" : `${Math.round(v).toLocaleString("en-US")} ms`),
    pct: (v) => (none(v) ? "–" : `${(v * 100).toFixed(1)} %`),
    usd: (v) => (none(v) ? "–" : `$${v !== 0 && Math.abs(v) < 0.01 ? v.toPrecision(2) : v.toFixed(2)}`),
    sec: (v) => (none(v) ? "–" : `${v.toFixed(0)} s`),
    score: (v) => (none(v) ? "–" : v.toFixed(2)),
  };

  function short(v) {
    if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
    if (Math.abs(v) >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
    return `${+v.toPrecision(3)}`;
  }

  function timeLabel(iso, bucketSeconds) {
    const d = new Date(iso);
    const hm = d.toISOString().slice(11, 16);
    return bucketSeconds >= 3600 * 3 ? `${d.toISOString().slice(5, 10)} ${hm}` : hm;
  }

  // ---------- SVG charts ----------

  function svg(tag, attrs = {}, children = []) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  function title(text) {
    const t = svg("title");
    t.textContent = text;
    return t;
  }

  function text(x, y, content, attrs = {}) {
    const t = svg("text", { x, y, ...attrs });
    t.textContent = content;
    return t;
  }

  /** Round tick steps (1, 2, 5 × 10^k) from 0 to at least `max`. */
  function ticks(max, count = 4) {
    const top = max > 0 ? max : 1;
    const raw = top / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let v = 0; v < top + step * 0.999; v += step) out.push(v);
    return out;
  }

  function frame(yTicks, yMax, format) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const grid = svg("g", { class: "grid" });
    const axis = svg("g", { class: "axis" });
    const y = (v) => M.top + (H - M.top - M.bottom) * (1 - v / yMax);
    for (const t of yTicks) {
      grid.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }));
      axis.append(text(M.left - 6, y(t) + 4, format(t), { "text-anchor": "end" }));
    }
    root.append(grid, axis);
    return { root, y, axis };
  }

  /** Coloured squares and names along the bottom of a plot `height` high, from `left`. */
  function legend(root, names, left = M.left, height = H) {
    const g = svg("g", { class: "legend" });
    let x = left;
    names.forEach((name, i) => {
      g.append(svg("rect", { x, y: height - 14, width: 10, height: 10, class: `s${i}` }));
      g.append(text(x + 14, height - 5, name));
      x += 24 + name.length * 6.5;
    });
    root.append(g);
  }

  function xLabels(axis, labels, xOf) {
    const every = Math.max(1, Math.ceil(labels.length / 6));
    labels.forEach((label, i) => {
      if (i % every === 0) axis.append(text(xOf(i), H - M.bottom + 16, label, { "text-anchor": "middle" }));
    });
  }

  /** One plot over time: `series` [{name, values}] as lines (gaps where null) or stacked bars. */
  function timeChart(node, labels, series, { bars = false, format = short } = {}) {
    node.replaceChildren();
    const n = labels.length;
    const totals = labels.map((_, i) => series.reduce((s, ser) => s + (ser.values[i] || 0), 0));
    const peaks = series.flatMap((s) => s.values.filter((v) => !none(v)));
    const max = bars ? Math.max(0, ...totals) : Math.max(0, ...peaks);
    if (!n || (!bars && !peaks.length) || (bars && max === 0)) {
      node.append(el("div", { className: "empty", textContent: "No requests in this range." }));
      return;
    }
    const yTicks = ticks(max);
    const { root, y, axis } = frame(yTicks, yTicks[yTicks.length - 1], format);
    const slot = (W - M.left - M.right) / n;
    const xOf = (i) => M.left + slot * (i + 0.5);
    xLabels(axis, labels, xOf);
    const plot = svg("g", { class: "data" });
    if (bars) {
      labels.forEach((label, i) => {
        let base = 0;
        series.forEach((s, k) => {
          const v = s.values[i] || 0;
          if (!v) return;
          const top = y(base + v);
          const rect = svg("rect", {
            x: M.left + slot * i + slot * 0.1, y: top, width: Math.max(1, slot * 0.8), height: y(base) - top,
            class: `bar s${k}`,
          }, [title(`${label} · ${s.name}: ${format(v)}`)]);
          plot.append(rect);
          base += v;
        });
      });
    } else {
      series.forEach((s, k) => {
        let d = "";
        let pen = "M";
        s.values.forEach((v, i) => {
          if (none(v)) {
            pen = "M";
            return;
          }
          d += `${pen}${xOf(i).toFixed(1)},${y(v).toFixed(1)}`;
          pen = "L";
          plot.append(svg("circle", { cx: xOf(i), cy: y(v), r: 2.5, class: `point s${k}` },
            [title(`${labels[i]} · ${s.name}: ${format(v)}`)]));
        });
        plot.prepend(svg("path", { d, class: `line s${k}` }));
      });
    }
    root.append(plot);
    legend(root, series.map((s) => s.name));
    node.append(root);
  }

  /** Horizontal grouped bars: one group per row (an app, a variant), one bar per series. */
  function barChart(node, rows, series, { max = null, format = short } = {}) {
    node.replaceChildren();
    const values = rows.flatMap((r) => series.map((s) => s.value(r)).filter((v) => !none(v)));
    if (!rows.length || !values.length) {
      node.append(el("div", { className: "empty", textContent: "Nothing to show in this range." }));
      return;
    }
    const top = max ?? ticks(Math.max(...values)).slice(-1)[0];
    const left = 150;
    const band = 14 * series.length + 12;
    const height = M.top + band * rows.length + 30;
    const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, role: "img" });
    const xOf = (v) => left + (W - left - M.right - 60) * (v / top);
    const grid = svg("g", { class: "grid" });
    for (const t of ticks(top)) {
      if (t > top) continue;
      grid.append(svg("line", { x1: xOf(t), x2: xOf(t), y1: M.top, y2: height - 28 }));
    }
    root.append(grid);
    rows.forEach((row, i) => {
      const y0 = M.top + band * i;
      root.append(text(left - 8, y0 + band / 2, row.label, { "text-anchor": "end", class: "label strong" }));
      series.forEach((s, k) => {
        const v = s.value(row);
        const y = y0 + 6 + 14 * k;
        if (none(v)) {
          root.append(text(left + 4, y + 10, `${s.name}: –`, { class: "label" }));
          return;
        }
        root.append(svg("rect", { x: left, y, width: Math.max(1, xOf(v) - left), height: 11, class: `bar s${k}` },
          [title(`${row.label} · ${s.name}: ${format(v)}`)]));
        root.append(text(xOf(v) + 4, y + 10, format(v), { class: "label" }));
      });
    });
    legend(root, series.map((s) => s.name), left, height);
    node.append(root);
  }

  // ---------- tables ----------

  function table(node, columns, rows, empty) {
    const head = el("tr", {}, columns.map((c) => el("th", { className: c.num ? "num" : "", textContent: c.label })));
    const body = rows.length
      ? rows.map((r) => el("tr", {}, columns.map((c) => el("td", {
        className: c.num ? "num" : "", textContent: c.value(r),
      }))))
      : [el("tr", {}, [el("td", { className: "empty", colSpan: columns.length, textContent: empty })])];
    node.replaceChildren(el("thead", {}, [head]), el("tbody", {}, body));
  }

  const scores = (r) => Object.entries(r.scores || {})
    .map(([metric, s]) => `${metric} ${fmt.score(s.mean)} (n=${s.n})`).join(", ") || "–";
  const thumbs = (r) => `${fmt.pct(r.thumbs_up_share)} (${r.thumbs_up}/${r.thumbs_up + r.thumbs_down})`;
  const common = [
    { label: "Requests", num: true, value: (r) => fmt.int(r.requests) },
    { label: "Error rate", num: true, value: (r) => fmt.pct(r.error_rate) },
    { label: "p50", num: true, value: (r) => fmt.ms(r.latency_ms_p50) },
    { label: "p95", num: true, value: (r) => fmt.ms(r.latency_ms_p95) },
    { label: "p99", num: true, value: (r) => fmt.ms(r.latency_ms_p99) },
    { label: "TTFT p50", num: true, value: (r) => fmt.ms(r.ttft_ms_p50) },
    { label: "Tokens in / out", num: true, value: (r) => `${short(r.prompt_tokens)} / ${short(r.completion_tokens)}` },
    { label: "Cost", num: true, value: (r) => fmt.usd(r.cost) },
    { label: "Thumbs up", num: true, value: thumbs },
    { label: "Automated", num: true, value: (r) => fmt.pct(r.automated_share) },
    { label: "Reviewed", num: true, value: (r) => fmt.int(r.reviewed) },
    { label: "Approved", num: true, value: (r) => fmt.pct(r.approval_rate) },
    { label: "Human time / item", num: true, value: (r) => fmt.sec(r.human_seconds_per_item) },
    { label: "Judge scores", value: scores },
  ];

  function historyRows(data) {
    const stages = data.stage_moves.map((m) => ({
      at: m.at, what: `app ${m.app}`,
      detail: [`${m.from || "new"} → ${m.to}`, m.forced ? "forced" : "", m.bars_met === false ? "bars not met" : ""]
        .filter(Boolean).join(" · "),
      by: m.by,
    }));
    const split = (w) => (w ? Object.entries(w).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`).join(" ") : "–");
    const routes = data.route_changes.map((c) => ({
      at: c.at, what: `route ${c.route}`, detail: `${c.action}: ${split(c.before)} → ${split(c.after)}`, by: c.actor,
    }));
    return [...stages, ...routes].sort((a, b) => b.at.localeCompare(a.at));
  }

  // ---------- page ----------

  function kpi(label, value, sub) {
    return el("div", { className: "kpi", "data-testid": `kpi-${label.toLowerCase().replace(/[^a-z]+/g, "-")}` }, [
      el("div", { className: "label", textContent: label }),
      el("div", { className: "value", textContent: value }),
      el("div", { className: "sub", textContent: sub || "" }),
    ]);
  }

  function render(data) {
    const t = data.totals;
    ui.kpis.replaceChildren(
      kpi("Requests", fmt.int(t.requests), `${t.errors} error${t.errors === 1 ? "" : "s"}, ${fmt.pct(t.error_rate)}`),
      kpi("Latency p50", fmt.ms(t.latency_ms_p50), `p95 ${fmt.ms(t.latency_ms_p95)}, p99 ${fmt.ms(t.latency_ms_p99)}`),
      kpi("TTFT p50", fmt.ms(t.ttft_ms_p50), `p95 ${fmt.ms(t.ttft_ms_p95)}`),
      kpi("Tokens", short(t.prompt_tokens + t.completion_tokens),
        `${short(t.prompt_tokens)} in · ${short(t.completion_tokens)} out`),
      kpi("Cost", fmt.usd(t.cost), "at the registry's prices"),
      kpi("Thumbs up", fmt.pct(t.thumbs_up_share), `${t.thumbs_up} up · ${t.thumbs_down} down`),
      kpi("Automated", fmt.pct(t.automated_share), "delivered with no person before"),
      kpi("Approval", fmt.pct(t.approval_rate), `${fmt.int(t.reviewed)} reviewed`),
      kpi("Human time", fmt.sec(t.human_seconds_per_item), "per reviewed item"),
    );
    const labels = data.series.map((p) => timeLabel(p.start, data.range.bucket_seconds));
    const pick = (key) => data.series.map((p) => p[key]);
    timeChart($("chart-requests"), labels, [
      { name: "answered or cancelled", values: data.series.map((p) => p.requests - p.errors) },
      { name: "errors", values: pick("errors") },
    ], { bars: true });
    timeChart($("chart-latency"), labels, [
      { name: "latency p50", values: pick("latency_ms_p50") },
      { name: "latency p95", values: pick("latency_ms_p95") },
      { name: "TTFT p50", values: pick("ttft_ms_p50") },
    ]);
    timeChart($("chart-cost"), labels, [{ name: "cost", values: pick("cost") }], { bars: true, format: fmt.usd });
    const pctFormat = (v) => `${Math.round(v * 100)} %`;
    const apps = data.apps.map((r) => ({ ...r, label: r.app || "(no app)" }));
    barChart($("chart-apps"), apps, [
      { name: "automated", value: (r) => r.automated_share },
      { name: "approved", value: (r) => r.approval_rate },
      { name: "thumbs up", value: (r) => r.thumbs_up_share },
    ], { max: 1, format: pctFormat });
    const variants = data.routes.map((r) => ({ ...r, label: `${r.route} · ${r.variant}` }));
    barChart($("chart-variants"), variants, [
      { name: "p50", value: (r) => r.latency_ms_p50 },
      { name: "p95", value: (r) => r.latency_ms_p95 },
    ], { format: (v) => `${Math.round(v)} ms` });
    barChart($("chart-variant-quality"), variants, [
      { name: "thumbs up", value: (r) => r.thumbs_up_share },
      { name: "approved", value: (r) => r.approval_rate },
      { name: "error rate", value: (r) => r.error_rate },
    ], { max: 1, format: pctFormat });
    table($("apps-table"), [
      { label: "App", value: (r) => r.app || "(no app)" },
      { label: "Stage", value: (r) => data.stages[r.app] || "–" },
      ...common,
    ], data.apps, "No requests in this range.");
    table($("routes-table"), [
      { label: "Route", value: (r) => r.route },
      { label: "Variant", value: (r) => r.variant },
      ...common,
    ], data.routes, "No A/B traffic in this range.");
    table($("history-table"), [
      { label: "When (UTC)", value: (r) => r.at.slice(0, 19).replace("T", " ") },
      { label: "What", value: (r) => r.what },
      { label: "Change", value: (r) => r.detail },
      { label: "By", value: (r) => r.by || "–" },
    ], historyRows(data), "No stage moves or route changes yet.");
    fillSelect(ui.app, data.known_apps, "All apps");
    fillSelect(ui.route, data.known_routes, "All traffic");
  }

  function fillSelect(select, names, all) {
    const chosen = select.value;
    const options = names.map((n) => el("option", { value: n, textContent: n }));
    select.replaceChildren(el("option", { value: "", textContent: all }), ...options);
    select.value = names.includes(chosen) ? chosen : "";
  }

  /** The query for /api/dashboard and the page's own URL, from the controls. */
  function query() {
    const params = new URLSearchParams();
    const range = ui.range.value;
    if (range === "custom") {
      if (ui.since.value) params.set("since", new Date(`${ui.since.value}Z`).toISOString());
      if (ui.until.value) params.set("until", new Date(`${ui.until.value}Z`).toISOString());
    } else {
      params.set("since", new Date(Date.now() - HOURS[range] * 3600e3).toISOString());
    }
    if (ui.app.value) params.set("app", ui.app.value);
    if (ui.route.value) params.set("route", ui.route.value);
    const page = new URLSearchParams({ range });
    for (const key of ["app", "route", ...(range === "custom" ? ["since", "until"] : [])]) {
      if (params.has(key)) page.set(key, params.get(key));
    }
    history.replaceState(null, "", `/dashboard?${page}`);
    return params;
  }

  async function load() {
    document.body.dataset.state = "loading";
    hideError();
    const t0 = performance.now();
    try {
      const resp = await authFetch(`/api/dashboard?${query()}`, { headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      render(await resp.json());
      ui.took.textContent = `loaded in ${Math.round(performance.now() - t0)} ms`;
      document.body.dataset.state = "ready";
    } catch (err) {
      showError(`Could not load the dashboard: ${err.message}`);
      document.body.dataset.state = "error";
    }
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    const range = params.get("range");
    if (range && [...ui.range.options].some((o) => o.value === range)) ui.range.value = range;
    for (const key of ["app", "route"]) {
      const value = params.get(key);
      if (value) ui[key].append(el("option", { value, textContent: value }));
      if (value) ui[key].value = value;
    }
    for (const key of ["since", "until"]) {
      if (params.get(key)) ui[key].value = params.get(key).slice(0, 16);
    }
    toggleCustom();
  }

  function toggleCustom() {
    const custom = ui.range.value === "custom";
    ui.sinceField.hidden = !custom;
    ui.untilField.hidden = !custom;
  }

  ui.range.addEventListener("change", () => {
    toggleCustom();
    if (ui.range.value !== "custom") load();
  });
  ui.app.addEventListener("change", load);
  ui.route.addEventListener("change", load);
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  fromUrl();
  load();
})();
