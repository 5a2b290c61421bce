// fmstack traces page: lists /api/traces and shows one trace's detail. Plain browser JavaScript, no build step.
// All trace content goes through textContent, never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    layout: $("layout"),
    filters: $("filters"),
    model: $("filter-model"),
    prompt: $("filter-prompt"),
    status: $("filter-status"),
    limit: $("filter-limit"),
    count: $("count"),
    body: $("traces-body"),
    detail: $("trace-detail"),
    detailId: $("detail-id"),
    detailClose: $("detail-close"),
    summary: $("detail-summary"),
    errorSection: $("detail-error-section"),
    detailError: $("detail-error"),
    messages: $("detail-messages"),
    response: $("detail-response"),
    params: $("detail-params"),
    feedback: $("detail-feedback"),
    scores: $("detail-scores"),
  };

  const state = { selected: null, knownModels: new Set(), loading: 0 };

  // ---------- helpers ----------

  const { el, icon, showError, hideError, errorMessage, authFetch } = window.fm;




  async function getJSON(url) {
    const resp = await authFetch(url, { headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    return resp.json();
  }

  /** Timestamps without a zone (SQLite drops it) are UTC. */
  function parseTime(iso) {
    if (!iso) return null;
    const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`;
    const date = new Date(zoned);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatTime(iso, full = false) {
    const date = parseTime(iso);
    if (!date) return iso || "—";
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const sameDay = date.toDateString() === new Date().toDateString();
    if (sameDay && !full) return time;
    return `${date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${time}`;
  }

  function formatMs(value) {
    if (value === null || value === undefined) return "—";
    return Math.round(value).toLocaleString();
  }

  function formatCost(value) {
    if (!value) return "$0";
    if (value >= 0.01) return `$${value.toFixed(4)}`;
    if (value < 0.000001) return "<$0.000001";
    return `$${value.toFixed(6)}`;
  }

  function contentText(content) {
    if (content === null || content === undefined) return "";
    if (typeof content === "string") return content;
    if (Array.isArray(content)) return content.map((p) => (p && typeof p.text === "string" ? p.text : "")).join("");
    return JSON.stringify(content);
  }

  /** The last thing the user said: the last user message of a chat, or a completion's prompt. */
  function inputSnippet(request) {
    if (!request) return "";
    if (Array.isArray(request.messages)) {
      const users = request.messages.filter((m) => m && m.role === "user");
      const last = users.length ? users[users.length - 1] : request.messages[request.messages.length - 1];
      return last ? contentText(last.content) : "";
    }
    if (request.prompt !== undefined) return contentText(request.prompt);
    if (request.input !== undefined) return contentText(request.input);
    return "";
  }

  function feedbackCounts(feedback) {
    const list = feedback || [];
    return {
      up: list.filter((f) => f.rating === 1).length,
      down: list.filter((f) => f.rating === -1).length,
      corrections: list.filter((f) => f.correction).length,
      comments: list.filter((f) => f.comment).length,
    };
  }


  /** Counts of thumbs up, thumbs down, corrections and comments, as icons with numbers. */
  function feedbackCell(feedback) {
    const c = feedbackCounts(feedback);
    const td = el("td", {
      className: "feedback-summary", "data-up": c.up, "data-down": c.down, "data-corrections": c.corrections,
      "data-comments": c.comments,
    });
    const parts = [
      ["up", "up", c.up, "thumbs up"],
      ["down", "down", c.down, "thumbs down"],
      ["edit", "note", c.corrections, "suggested answers"],
      ["comment", "note", c.comments, "comments"],
    ].filter(([, , n]) => n > 0);
    if (!parts.length) {
      td.textContent = "—";
      td.classList.add("muted");
      return td;
    }
    td.append(el("span", { className: "fb-counts" }, parts.map(([name, kind, n, label]) => el("span", {
      className: `fb-count ${kind}`, title: `${n} ${label}`, "aria-label": `${n} ${label}`,
    }, [icon(name), String(n)]))));
    return td;
  }

  function badge(status) {
    const known = ["ok", "error", "cancelled"].includes(status) ? status : "error";
    return el("span", { className: `badge ${known}`, textContent: status || "?" });
  }

  // ---------- list ----------

  function filterParams() {
    const params = new URLSearchParams({ limit: ui.limit.value || "50" });
    if (ui.model.value) params.set("model", ui.model.value);
    if (ui.status.value) params.set("status", ui.status.value);
    if (ui.prompt.value) params.set("prompt", ui.prompt.value);
    return params;
  }

  /** The prompt filter: every stored prompt (all its versions), then each of its versions. */
  async function loadPrompts() {
    let prompts = [];
    try {
      prompts = (await getJSON("/v1/prompts")).data || [];
    } catch (_) {
      return; // the filter stays at "Any prompt"
    }
    const current = ui.prompt.value;
    const options = [el("option", { value: "", textContent: "Any prompt" })];
    for (const p of prompts) {
      options.push(el("option", { value: p.name, textContent: `${p.name} (all versions)` }));
      for (let v = p.latest_version; v >= 1; v -= 1) {
        const aliases = Object.entries(p.aliases).filter(([, to]) => to === v).map(([a]) => a);
        const label = `${p.name}@${v}${aliases.length ? ` (${aliases.join(", ")})` : ""}`;
        options.push(el("option", { value: `${p.name}@${v}`, textContent: label }));
      }
    }
    ui.prompt.replaceChildren(...options);
    if ([...ui.prompt.options].some((o) => o.value === current)) ui.prompt.value = current;
  }

  function promptCell(trace) {
    if (!trace.prompt_name) return el("td", { className: "prompt muted", textContent: "—" });
    const ref = `${trace.prompt_name}@${trace.prompt_version}`;
    const link = el("a", { href: `/prompts#${encodeURIComponent(ref)}`, textContent: ref, title: `Open ${ref}` });
    link.addEventListener("click", (e) => e.stopPropagation());
    return el("td", { className: "prompt", "data-prompt": ref }, [link]);
  }

  function updateModelOptions(names) {
    let added = false;
    for (const name of names) {
      if (name && !state.knownModels.has(name)) {
        state.knownModels.add(name);
        added = true;
      }
    }
    if (!added) return;
    const current = ui.model.value;
    const sorted = [...state.knownModels].sort();
    ui.model.replaceChildren(
      el("option", { value: "", textContent: "All models" }),
      ...sorted.map((name) => el("option", { value: name, textContent: name })),
    );
    ui.model.value = current;
  }

  async function loadModels() {
    try {
      const body = await getJSON("/v1/models");
      updateModelOptions((body.data || []).map((m) => m.id));
    } catch (_) {
      // the filter still fills from the traces themselves
    }
  }

  function row(trace) {
    const tr = el("tr", {
      className: "trace-row", tabIndex: 0, "data-trace-id": trace.id, "data-testid": "trace-row",
      title: trace.id,
    });
    if (trace.id === state.selected) tr.classList.add("selected");
    const input = inputSnippet(trace.request);
    tr.append(
      el("td", { className: "time", textContent: formatTime(trace.created_at), title: formatTime(trace.created_at, true) }),
      el("td", { className: "model" }, [
        document.createTextNode(trace.model || "—"),
        el("span", { className: "endpoint", textContent: trace.endpoint || "" }),
      ]),
      promptCell(trace),
      el("td", { className: "input col-input", textContent: input.replace(/\s+/g, " ").trim() || "—", title: input.slice(0, 500) }),
      el("td", { className: "status" }, [badge(trace.status)]),
      el("td", {
        className: "num tokens",
        textContent: `${trace.prompt_tokens ?? 0} / ${trace.completion_tokens ?? 0}`,
      }),
      el("td", { className: "num ttft", textContent: formatMs(trace.ttft_ms) }),
      el("td", { className: "num latency", textContent: formatMs(trace.latency_ms) }),
      el("td", { className: "num cost", textContent: formatCost(trace.cost), title: String(trace.cost ?? 0) }),
      feedbackCell(trace.feedback),
    );
    const open = () => openTrace(trace.id);
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        open();
      }
    });
    return tr;
  }

  async function loadTraces() {
    const ticket = ++state.loading;
    ui.count.textContent = "Loading…";
    let traces;
    try {
      traces = (await getJSON(`/api/traces?${filterParams()}`)).data || [];
    } catch (err) {
      if (ticket !== state.loading) return;
      ui.count.textContent = "";
      showError(`Could not load traces: ${err.message}`);
      return;
    }
    if (ticket !== state.loading) return; // a newer refresh is on its way
    hideError();
    updateModelOptions(traces.map((t) => t.model));
    if (!traces.length) {
      const filtered = ui.model.value || ui.status.value || ui.prompt.value;
      ui.body.replaceChildren(el("tr", {}, [el("td", {
        className: "empty", colSpan: 10,
        textContent: filtered ? "No traces match these filters." : "No requests yet. Ask something on the Chat page.",
      })]));
    } else {
      ui.body.replaceChildren(...traces.map(row));
    }
    const shown = traces.length === Number(ui.limit.value) ? `${traces.length} newest` : `${traces.length}`;
    ui.count.textContent = `${shown} trace${traces.length === 1 ? "" : "s"} · updated ${formatTime(new Date().toISOString())}`;
  }

  // ---------- detail ----------

  function summaryItems(t) {
    const tokens = `${t.prompt_tokens ?? 0} in / ${t.completion_tokens ?? 0} out`;
    const items = [
      ["Time", formatTime(t.created_at, true)],
      ["Model", t.model],
      ["Engine", t.engine],
      ["Endpoint", t.endpoint],
      ["App", t.app],
      ["User", t.user],
      ["Prompt", t.prompt_name ? `${t.prompt_name}@${t.prompt_version}` : null],
      ["Status", null],
      ["Finish reason", t.finish_reason],
      ["Tokens", tokens],
      ["TTFT", t.ttft_ms == null ? null : `${formatMs(t.ttft_ms)} ms`],
      ["Latency", t.latency_ms == null ? null : `${formatMs(t.latency_ms)} ms`],
      ["Speed", t.tokens_per_s == null ? null : `${t.tokens_per_s.toFixed(1)} tokens/s`],
      ["Cost", formatCost(t.cost)],
    ];
    const nodes = [];
    for (const [label, value] of items) {
      if (label === "Status") {
        nodes.push(el("dt", { textContent: label }), el("dd", {}, [
          badge(t.status), document.createTextNode(t.status_code ? `  HTTP ${t.status_code}` : ""),
        ]));
      } else if (value !== null && value !== undefined && value !== "") {
        nodes.push(el("dt", { textContent: label }), el("dd", { textContent: String(value) }));
      }
    }
    return nodes;
  }

  function requestNodes(request) {
    if (!request) return [el("div", { className: "muted", textContent: "No request body was recorded." })];
    const nodes = [];
    if (Array.isArray(request.messages)) {
      for (const m of request.messages) {
        nodes.push(el("div", { className: "msg", "data-role": m && m.role }, [
          el("span", { className: "role", textContent: (m && m.role) || "?" }),
          el("div", { className: "text-block", textContent: contentText(m && m.content) }),
        ]));
      }
    } else if (request.prompt !== undefined) {
      nodes.push(el("div", { className: "msg" }, [
        el("span", { className: "role", textContent: "prompt" }),
        el("div", { className: "text-block", textContent: contentText(request.prompt) }),
      ]));
    } else if (request.input !== undefined) {
      nodes.push(el("div", { className: "msg" }, [
        el("span", { className: "role", textContent: "input" }),
        el("div", { className: "text-block", textContent: contentText(request.input) }),
      ]));
    }
    if (!nodes.length) nodes.push(el("pre", { textContent: JSON.stringify(request, null, 2) }));
    return nodes;
  }

  function paramsText(request) {
    if (!request) return "—";
    const rest = {};
    for (const [key, value] of Object.entries(request)) {
      if (!["messages", "prompt", "input"].includes(key)) rest[key] = value;
    }
    return Object.keys(rest).length ? JSON.stringify(rest, null, 2) : "—";
  }

  function feedbackNodes(feedback) {
    if (!feedback || !feedback.length) {
      return [el("div", { className: "muted", textContent: "No feedback yet. Rate answers on the Chat page." })];
    }
    return feedback.map((f) => {
      const [kind, name, label] = f.rating === 1 ? ["up", "up", "Thumbs up"]
        : f.rating === -1 ? ["down", "down", "Thumbs down"]
          : f.correction ? ["note", "edit", "Correction"] : ["note", "comment", "Comment"];
      const item = el("div", { className: "fb-item", "data-testid": "feedback-item", "data-rating": String(f.rating) }, [
        el("div", { className: "fb-head" }, [
          el("span", { className: `fb-rating ${kind}` }, [icon(name), label]),
          el("span", { textContent: formatTime(f.created_at, true) }),
        ]),
      ]);
      if (f.correction) {
        item.append(
          el("div", { className: "fb-label", textContent: "Suggested answer" }),
          el("div", { className: "text-block correction", "data-testid": "feedback-correction", textContent: f.correction }),
        );
      }
      if (f.comment) {
        item.append(
          el("div", { className: "fb-label", textContent: "Comment" }),
          el("div", { className: "text-block comment", textContent: f.comment }),
        );
      }
      return item;
    });
  }

  function showBody(visible) {
    for (const section of ui.detail.querySelectorAll(".detail-body")) section.hidden = !visible;
  }

  function renderDetail(t) {
    showBody(true);
    ui.detailId.textContent = t.id;
    ui.detail.dataset.traceId = t.id;
    ui.summary.replaceChildren(...summaryItems(t));
    ui.errorSection.hidden = !t.error;
    ui.detailError.textContent = t.error || "";
    ui.messages.replaceChildren(...requestNodes(t.request));
    if (t.response_text) {
      ui.response.textContent = t.response_text;
      ui.response.classList.remove("muted");
    } else {
      ui.response.textContent = t.status === "ok" ? "(empty response)" : "(no response)";
      ui.response.classList.add("muted");
    }
    ui.params.textContent = paramsText(t.request);
    ui.feedback.replaceChildren(...feedbackNodes(t.feedback));
    ui.scores.replaceChildren(...scoreNodes(t.scores));
  }

  /** Scores attached after the fact by `fmstack eval score --traces`: metric, value or error, judge, reason. */
  function scoreNodes(scores) {
    if (!scores || !scores.length) {
      return [el("div", { className: "muted", textContent: "Not scored. Run `fmstack eval score --traces`." })];
    }
    return scores.map((s) => {
      const value = s.value === null || s.value === undefined ? `error: ${s.error || "no score"}` : s.value.toFixed(3);
      const judge = s.judge ? ` · judge ${s.judge}` : "";
      const item = el("div", { className: "fb-item", "data-testid": "score-item", "data-metric": s.metric }, [
        el("div", { className: "fb-head" }, [
          el("span", { className: "fb-rating note", textContent: `${s.metric}: ${value}` }),
          el("span", { textContent: `${formatTime(s.created_at, true)}${judge}` }),
        ]),
      ]);
      if (s.reason) item.append(el("div", { className: "text-block comment", textContent: s.reason }));
      return item;
    });
  }

  function markSelected(id) {
    for (const tr of ui.body.querySelectorAll("tr.trace-row")) {
      tr.classList.toggle("selected", tr.dataset.traceId === id);
    }
  }

  async function openTrace(id) {
    state.selected = id;
    markSelected(id);
    ui.layout.classList.add("with-detail");
    ui.detail.hidden = false;
    ui.detail.setAttribute("aria-busy", "true");
    if (location.hash.slice(1) !== encodeURIComponent(id)) {
      history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    }
    try {
      const trace = await getJSON(`/api/traces/${encodeURIComponent(id)}`);
      if (state.selected !== id) return;
      renderDetail(trace);
    } catch (err) {
      if (state.selected !== id) return;
      ui.detailId.textContent = id;
      showBody(false);
      ui.errorSection.hidden = false;
      ui.detailError.textContent = `Could not load this trace: ${err.message}`;
    } finally {
      ui.detail.removeAttribute("aria-busy");
    }
  }

  function closeDetail() {
    state.selected = null;
    markSelected(null);
    ui.detail.hidden = true;
    ui.layout.classList.remove("with-detail");
    history.replaceState(null, "", location.pathname + location.search);
  }

  // ---------- wiring ----------

  ui.filters.addEventListener("submit", (e) => {
    e.preventDefault();
    loadTraces();
  });
  for (const select of [ui.model, ui.prompt, ui.status, ui.limit]) select.addEventListener("change", loadTraces);
  ui.detailClose.addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !ui.detail.hidden) closeDetail();
  });
  window.addEventListener("hashchange", () => {
    const id = decodeURIComponent(location.hash.slice(1));
    if (id && id !== state.selected) openTrace(id);
  });

  const wanted = new URLSearchParams(location.search).get("prompt");
  if (wanted) ui.prompt.replaceChildren(el("option", { value: wanted, textContent: wanted }));
  loadModels();
  loadPrompts();
  loadTraces();
  const initial = decodeURIComponent(location.hash.slice(1));
  if (initial) openTrace(initial);
})();
