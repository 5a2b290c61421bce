// fmstack review page: the next answer to review, with its conversation, sources, judge and rubric; approve, edit,
// reject or skip it through /v1/reviews. Plain browser JavaScript, no build step; text goes through textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { el, showError, hideError, errorMessage, authFetch } = window.fm;
  const REVIEWER_KEY = "fmstack-reviewer";
  const POLL_MS = 3000; // while the queue is empty, look for new items this often

  const state = { item: null, shownAt: 0, busy: false, poll: null };

  async function api(url, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const resp = await authFetch(url, options);
    if (!resp.ok) throw new Error(await errorMessage(resp));
    return resp.json();
  }

  function reviewer() {
    return $("reviewer").value.trim();
  }

  function status(text, error = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", error);
  }

  // ---------- apps and their policy ----------

  async function loadApps() {
    try {
      const apps = (await api("/v1/reviews/policies")).data;
      const chosen = $("app").value;
      $("app").replaceChildren(el("option", { value: "", textContent: "All apps" }),
        ...apps.map((p) => el("option", { value: p.app, textContent: `${p.app} (${p.stage})` })));
      $("app").value = chosen;
    } catch (err) {
      showError(`Could not load the review policies: ${err.message}`);
    }
  }

  function pct(x) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)} %`;
  }

  function num(x, digits = 2) {
    return x === null || x === undefined ? "–" : x.toFixed(digits);
  }

  async function showPolicy(app) {
    if (!app) {
      $("policy").hidden = true;
      return;
    }
    try {
      const report = await api(`/v1/reviews/policies/${encodeURIComponent(app)}`);
      const stage = report.stages.find((s) => s.current);
      const rows = [
        ["stage", `${report.policy.stage}${report.ready ? " · bars met" : ""}`],
        ["reviewed", String(stage.reviewed)],
        ["approval", pct(stage.approval_rate)],
        ["edit distance", num(stage.edit_distance)],
        ["judge κ", num(stage.judge_kappa)],
        ["reviewer κ", num(stage.reviewer_kappa)],
        ["s / item", num(stage.seconds_per_item, 0)],
      ];
      $("policy-numbers").replaceChildren(...rows.flatMap(([k, v]) => [
        el("dt", { textContent: k }), el("dd", { textContent: v }),
      ]));
      $("policy").hidden = false;
    } catch (err) {
      showError(err.message);
    }
  }

  // ---------- the item ----------

  function renderConversation(trace) {
    const turns = (trace.messages || []).map((m) => el("div", { className: `turn ${m.role}` }, [
      el("div", { className: "who", textContent: m.role }),
      el("div", { className: "what", textContent: contentText(m.content) }),
    ]));
    if (!turns.length && trace.prompt) {
      turns.push(el("div", { className: "turn" }, [
        el("div", { className: "who", textContent: "prompt" }),
        el("div", { className: "what", textContent: String(trace.prompt) }),
      ]));
    }
    $("conversation").replaceChildren(...turns);
  }

  function contentText(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) return content.map((p) => p.text || `[${p.type}]`).join("\n");
    return JSON.stringify(content);
  }

  function renderSources(sources) {
    $("sources-box").hidden = !sources.length;
    $("sources").replaceChildren(...sources.map((s) => el("details", { className: "source", "data-testid": "source", open: "" }, [
      el("summary", {}, [
        el("span", { className: "source-id", textContent: `[${s.id}]` }),
        el("span", { className: "source-name", textContent: s.source || "" }),
        el("span", { className: "source-where", textContent: s.location || "" }),
      ]),
      el("blockquote", { className: "source-text", textContent: s.text || "" }),
    ])));
  }

  function renderJudge(item) {
    const judged = item.judge_score !== null || item.judge_reason;
    $("judge-box").hidden = !judged;
    if (!judged) return;
    const low = item.judge_score !== null && item.judge_score < item.threshold;
    const score = item.judge_score === null ? "no score" : item.judge_score.toFixed(2);
    $("judge").replaceChildren(
      el("span", { className: `score ${low ? "low" : "high"}`, "data-testid": "judge-score", textContent: score }),
      el("span", { className: "muted", textContent: ` (threshold ${item.threshold}, ${item.judge || "judge"}) ` }),
      el("div", { textContent: item.judge_reason || "" }),
    );
  }

  function show(item) {
    state.item = item;
    state.shownAt = performance.now();
    $("empty").hidden = Boolean(item);
    $("item").hidden = !item;
    closeForms();
    if (!item) return;
    $("item").dataset.itemId = String(item.id);
    $("item").dataset.traceId = item.trace_id;
    $("item-title").textContent = `Review ${item.id} · ${item.app}`;
    $("item-reason").textContent = item.reason;
    $("item-reason").className = `badge ${item.reason === "crawl" ? "crawl" : ""}`;
    const parts = [item.stage, item.trace ? item.trace.model : null];
    if (item.copy) parts.push("second review");
    if (item.reason === "crawl") parts.push("the user is waiting");
    if (item.assignee) parts.push(`assigned to ${item.assignee}`);
    $("item-meta").textContent = parts.filter(Boolean).join(" · ");
    renderConversation(item.trace || {});
    renderSources((item.trace && item.trace.sources) || []);
    $("answer").textContent = item.answer;
    renderJudge(item);
    $("rubric-box").hidden = !item.rubric;
    $("rubric").textContent = item.rubric || "";
    // the keyboard shortcuts work at once, unless the reviewer is typing elsewhere (an assignee's name)
    if ([document.body, $("reviewer"), $("app"), $("next")].includes(document.activeElement)) $("item").focus();
  }

  async function next() {
    if (state.busy) return;
    if (!reviewer()) {
      showError("Write your name as reviewer first: decisions and review time are counted per reviewer.");
      $("reviewer").focus();
      return;
    }
    hideError();
    try {
      const found = await api("/v1/reviews/next", { reviewer: reviewer(), app: $("app").value || null });
      $("pending").textContent = `${found.pending} pending`;
      show(found.item);
    } catch (err) {
      showError(err.message);
    }
    schedulePoll();
  }

  function schedulePoll() {
    clearTimeout(state.poll);
    if (!state.item && reviewer()) state.poll = setTimeout(next, POLL_MS);
  }

  async function decide(action, extra = {}) {
    const item = state.item;
    if (!item || state.busy) return;
    state.busy = true;
    const seconds = (performance.now() - state.shownAt) / 1000;
    try {
      const done = await api(`/v1/reviews/items/${item.id}/${action}`, { reviewer: reviewer(), seconds, ...extra });
      status(action === "skip" ? `Skipped review ${item.id}.` : `Review ${item.id}: ${done.status}.`);
      state.busy = false;
      showPolicy($("app").value || item.app);
      await next();
    } catch (err) {
      state.busy = false;
      status(err.message, true);
    }
  }

  async function assign() {
    if (!state.item) return;
    try {
      const done = await api(`/v1/reviews/items/${state.item.id}/assignee`, { assignee: $("assignee").value.trim() });
      status(done.assignee ? `Review ${done.id} assigned to ${done.assignee}.` : `Review ${done.id} unassigned.`);
    } catch (err) {
      status(err.message, true);
    }
  }

  // ---------- edit and reject forms ----------

  function closeForms() {
    $("editor").hidden = true;
    $("rejecter").hidden = true;
  }

  function openEditor() {
    if (!state.item) return;
    closeForms();
    $("edit-text").value = state.item.answer;
    $("editor").hidden = false;
    $("edit-text").focus();
  }

  function saveEdit() {
    const text = $("edit-text").value;
    if (!text.trim()) {
      status("Write the corrected answer first.", true);
      return;
    }
    decide("edit", { text });
  }

  function openRejecter() {
    if (!state.item) return;
    closeForms();
    $("reject-reason").value = "";
    $("rejecter").hidden = false;
    $("reject-reason").focus();
  }

  function confirmReject() {
    const reason = $("reject-reason").value.trim();
    if (!reason) {
      status("Say why the answer is rejected: the user is told.", true);
      return;
    }
    decide("reject", { reason });
  }

  // ---------- wiring ----------

  const typing = (e) => ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);
  const KEYS = { a: () => decide("approve"), e: openEditor, r: openRejecter, s: () => decide("skip"), n: next };

  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const action = KEYS[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  });
  $("edit-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) saveEdit();
    if (e.key === "Escape") closeForms();
  });
  $("reject-reason").addEventListener("keydown", (e) => {
    if (e.key === "Enter") confirmReject();
    if (e.key === "Escape") closeForms();
  });
  $("approve").addEventListener("click", () => decide("approve"));
  $("edit").addEventListener("click", openEditor);
  $("save-edit").addEventListener("click", saveEdit);
  $("cancel-edit").addEventListener("click", closeForms);
  $("reject").addEventListener("click", openRejecter);
  $("confirm-reject").addEventListener("click", confirmReject);
  $("cancel-reject").addEventListener("click", closeForms);
  $("skip").addEventListener("click", () => decide("skip"));
  $("assign").addEventListener("click", assign);
  $("next").addEventListener("click", next);
  $("error-close").addEventListener("click", hideError);
  $("reviewer").addEventListener("change", () => {
    localStorage.setItem(REVIEWER_KEY, reviewer());
    next();
  });
  $("app").addEventListener("change", () => {
    showPolicy($("app").value);
    next();
  });

  $("reviewer").value = localStorage.getItem(REVIEWER_KEY) || "";
  loadApps().then(() => (reviewer() ? next() : $("reviewer").focus()));
})();
