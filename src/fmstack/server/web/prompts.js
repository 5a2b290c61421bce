// fmstack prompts page: list stored prompts, read their versions, save new ones, diff two, move aliases, and try a
// version with variables (streamed from /v1/prompts/{ref}/chat/completions). Plain browser JavaScript, no build step.
// All prompt and model text goes through textContent, never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("prompt-list"),
    newPrompt: $("new-prompt"),
    empty: $("empty-state"),
    errorClose: $("error-close"),
    editor: $("editor"),
    editorTitle: $("editor-title"),
    editorForm: $("editor-form"),
    editName: $("edit-name"),
    editSystem: $("edit-system"),
    editUser: $("edit-user"),
    editExamples: $("edit-examples"),
    editParams: $("edit-params"),
    editNote: $("edit-note"),
    editCancel: $("edit-cancel"),
    view: $("prompt-view"),
    name: $("prompt-name"),
    aliases: $("prompt-aliases"),
    status: $("status"),
    versionsBody: $("versions-body"),
    versionTitle: $("version-title"),
    editVersion: $("edit-version"),
    versionMeta: $("version-meta"),
    versionParts: $("version-parts"),
    tryForm: $("try-form"),
    tryVars: $("try-vars"),
    tryModel: $("try-model"),
    tryMaxTokens: $("try-max-tokens"),
    tryRun: $("try-run"),
    tryStop: $("try-stop"),
    tryOutput: $("try-output"),
    tryMeta: $("try-meta"),
    aliasForm: $("alias-form"),
    aliasName: $("alias-name"),
    aliasNames: $("alias-names"),
    aliasVersion: $("alias-version"),
    aliasHistory: $("alias-history"),
    diffForm: $("diff-form"),
    diffA: $("diff-a"),
    diffB: $("diff-b"),
    diffOutput: $("diff-output"),
  };

  const state = {
    prompt: null, // GET /v1/prompts/{name}: versions, aliases, alias_moves
    version: null, // the selected version number
    stats: new Map(), // version -> per-version trace stats
    models: [],
    controller: null,
  };

  const { el, showError, hideError, errorMessage, authFetch, streamCompletion } = window.fm;

  // ---------- API ----------

  async function api(method, url, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const resp = await authFetch(url, options);
    if (!resp.ok) throw new Error(await errorMessage(resp));
    return resp.json();
  }

  const enc = encodeURIComponent;

  function formatTime(iso) {
    if (!iso) return "—";
    const zoned = /(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`;
    const date = new Date(zoned);
    if (Number.isNaN(date.getTime())) return iso;
    return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${date.toLocaleTimeString([], {
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    })}`;
  }

  function say(text) {
    ui.status.textContent = text;
  }

  function aliasBadge(alias, version) {
    const text = version === undefined ? alias : `${alias} → ${version}`;
    return el("span", { className: "alias-badge", "data-alias": alias, textContent: text });
  }

  // ---------- prompt list ----------

  async function loadList() {
    let data;
    try {
      data = (await api("GET", "/v1/prompts")).data || [];
    } catch (err) {
      ui.list.replaceChildren(el("li", { className: "muted", textContent: "Could not load prompts" }));
      showError(`Could not load prompts: ${err.message}`);
      return;
    }
    if (!data.length) {
      ui.list.replaceChildren(el("li", { className: "muted", textContent: "No prompts yet." }));
      return;
    }
    ui.list.replaceChildren(...data.map((p) => {
      const item = el("li", {
        className: "prompt-item", tabIndex: 0, "data-name": p.name, "data-testid": "prompt-item",
        "aria-current": state.prompt && state.prompt.name === p.name ? "true" : "false",
      }, [
        el("span", { className: "prompt-item-name", textContent: p.name }),
        el("span", { className: "prompt-item-meta", textContent: `v${p.latest_version} · ${p.versions} version${p.versions === 1 ? "" : "s"}` }),
        el("span", { className: "alias-badges" }, Object.entries(p.aliases).map(([a, v]) => aliasBadge(a, v))),
      ]);
      const open = () => openPrompt(p.name);
      item.addEventListener("click", open);
      item.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open();
        }
      });
      return item;
    }));
  }

  function markCurrent() {
    for (const item of ui.list.querySelectorAll(".prompt-item")) {
      item.setAttribute("aria-current", state.prompt && item.dataset.name === state.prompt.name ? "true" : "false");
    }
  }

  // ---------- one prompt ----------

  async function openPrompt(name, version) {
    hideError();
    let prompt;
    let stats = [];
    try {
      [prompt, stats] = await Promise.all([
        api("GET", `/v1/prompts/${enc(name)}`),
        api("GET", `/v1/prompts/${enc(name)}/stats`).then((s) => s.data || []).catch(() => []),
      ]);
    } catch (err) {
      showError(`Could not load prompt '${name}': ${err.message}`);
      return;
    }
    state.prompt = prompt;
    state.stats = new Map(stats.map((s) => [s.version, s]));
    const wanted = Number(version) || (state.version && state.prompt.name === name ? state.version : null);
    const exists = prompt.versions.some((v) => v.version === wanted);
    state.version = exists ? wanted : prompt.latest_version;
    ui.empty.hidden = true;
    ui.editor.hidden = true;
    ui.view.hidden = false;
    ui.name.textContent = prompt.name;
    ui.aliases.replaceChildren(...Object.entries(prompt.aliases).map(([a, v]) => aliasBadge(a, v)));
    renderVersions();
    renderAliasPanel();
    renderDiffSelects();
    selectVersion(state.version);
    markCurrent();
    const hash = `#${enc(prompt.name)}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function versionsOf(version) {
    return Object.entries(state.prompt.aliases).filter(([, v]) => v === version).map(([a]) => a);
  }

  function renderVersions() {
    const rows = [...state.prompt.versions].reverse().map((v) => {
      const s = state.stats.get(v.version);
      const tr = el("tr", {
        className: "trace-row version-row", tabIndex: 0, "data-version": v.version, "data-testid": "version-row",
      }, [
        el("td", { className: "version", textContent: `v${v.version}` }),
        el("td", { className: "time", textContent: formatTime(v.created_at) }),
        el("td", { className: "note", textContent: v.note || "—" }),
        el("td", { className: "aliases" }, versionsOf(v.version).map((a) => aliasBadge(a))),
        el("td", { className: "num requests" }, [s ? el("a", {
          href: `/traces?prompt=${enc(v.ref)}`, textContent: String(s.requests), title: `Traces of ${v.ref}`,
        }) : document.createTextNode("0")]),
        el("td", { className: "num", textContent: s && s.latency_ms != null ? Math.round(s.latency_ms).toLocaleString() : "—" }),
        el("td", {
          className: "num",
          textContent: s ? `${Math.round(s.prompt_tokens || 0)} / ${Math.round(s.completion_tokens || 0)}` : "—",
        }),
        el("td", { className: "feedback-cell", textContent: s && (s.thumbs_up || s.thumbs_down) ? `▲${s.thumbs_up} ▼${s.thumbs_down}` : "—" }),
      ]);
      const pick = () => selectVersion(v.version);
      tr.addEventListener("click", pick);
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          pick();
        }
      });
      return tr;
    });
    ui.versionsBody.replaceChildren(...rows);
  }

  function currentVersion() {
    return state.prompt.versions.find((v) => v.version === state.version);
  }

  function selectVersion(version) {
    state.version = version;
    for (const tr of ui.versionsBody.querySelectorAll("tr.version-row")) {
      tr.classList.toggle("selected", Number(tr.dataset.version) === version);
    }
    const v = currentVersion();
    ui.versionTitle.textContent = `${v.ref}${versionsOf(v.version).length ? ` (${versionsOf(v.version).join(", ")})` : ""}`;
    const meta = [
      ["Saved", formatTime(v.created_at)],
      ["Variables", v.variables.length ? v.variables.join(", ") : "none"],
      ["Parameters", Object.keys(v.params).length ? JSON.stringify(v.params) : "none"],
      ["Hash", v.content_hash.slice(0, 16)],
    ];
    if (v.note) meta.splice(1, 0, ["Note", v.note]);
    ui.versionMeta.replaceChildren(...meta.flatMap(([k, val]) => [el("dt", { textContent: k }), el("dd", { textContent: val })]));
    const parts = [];
    const part = (label, text, role) => parts.push(el("div", { className: "msg", "data-part": label }, [
      el("span", { className: "role", textContent: label }),
      el("div", { className: `text-block ${role || ""}`, textContent: text }),
    ]));
    if (v.system !== null) part("system", v.system);
    v.examples.forEach((ex, i) => {
      part(`example ${i + 1} · user`, ex.user, "example");
      part(`example ${i + 1} · assistant`, ex.assistant, "example");
    });
    if (v.user !== null) part("user", v.user);
    ui.versionParts.replaceChildren(...parts);
    renderTryVars(v);
    ui.aliasVersion.value = String(v.version);
  }

  // ---------- try it ----------

  function renderTryVars(v) {
    const previous = new Map([...ui.tryVars.querySelectorAll("textarea")].map((t) => [t.dataset.var, t.value]));
    if (!v.variables.length) {
      ui.tryVars.replaceChildren(el("div", { className: "muted", textContent: "This version takes no variables." }));
    } else {
      ui.tryVars.replaceChildren(...v.variables.map((name) => el("label", { className: "field" }, [
        document.createTextNode(name),
        el("textarea", {
          rows: 1, "data-var": name, "data-testid": `var-${name}`, value: previous.get(name) || "",
          "aria-label": `Variable ${name}`,
        }),
      ])));
    }
    ui.tryMaxTokens.placeholder = v.params.max_tokens ? `${v.params.max_tokens} (the version's)` : "model default";
    const stored = v.params.model;
    const options = [el("option", {
      value: "", textContent: stored ? `${stored} (the version's)` : "Pick a model",
    })];
    for (const m of state.models) if (m !== stored) options.push(el("option", { value: m, textContent: m }));
    const chosen = ui.tryModel.value;
    ui.tryModel.replaceChildren(...options);
    if ([...ui.tryModel.options].some((o) => o.value === chosen)) ui.tryModel.value = chosen;
    if (!stored && !ui.tryModel.value && state.models.length) ui.tryModel.value = state.models[0];
  }

  async function loadModels() {
    try {
      const data = (await api("GET", "/v1/models")).data || [];
      const chat = data.filter((m) => m.kind === "chat");
      const loaded = chat.filter((m) => m.loaded).map((m) => m.id);
      state.models = [...loaded, ...chat.map((m) => m.id).filter((id) => !loaded.includes(id))];
    } catch (_) {
      state.models = [];
    }
    if (state.prompt) renderTryVars(currentVersion());
  }

  async function runTry() {
    if (state.controller) return;
    const v = currentVersion();
    const variables = {};
    for (const box of ui.tryVars.querySelectorAll("textarea")) variables[box.dataset.var] = box.value;
    const body = { variables, stream: true, stream_options: { include_usage: true } };
    if (ui.tryModel.value) body.model = ui.tryModel.value;
    const maxTokens = parseInt(ui.tryMaxTokens.value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    hideError();
    const controller = new AbortController();
    state.controller = controller;
    ui.tryRun.disabled = true;
    ui.tryStop.hidden = false;
    ui.tryOutput.textContent = "";
    ui.tryOutput.dataset.state = "streaming";
    ui.tryOutput.classList.add("streaming");
    ui.tryMeta.replaceChildren();
    const t0 = performance.now();
    const url = `/v1/prompts/${enc(v.ref)}/chat/completions`;
    const show = (partial) => {
      ui.tryOutput.textContent = partial.text;
    };
    const result = await streamCompletion(url, body, controller.signal, show, "web-prompts");
    state.controller = null;
    ui.tryRun.disabled = false;
    ui.tryStop.hidden = true;
    ui.tryOutput.classList.remove("streaming");
    ui.tryOutput.textContent = result.text;
    if (result.traceId) ui.tryOutput.dataset.traceId = result.traceId;
    const parts = [result.prompt || v.ref];
    if (result.usage) parts.push(`${result.usage.prompt_tokens} in / ${result.usage.completion_tokens} out`);
    parts.push(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
    if (result.finishReason === "length") parts.push("cut at max tokens");
    if (result.aborted) parts.push("stopped");
    const meta = [el("span", { textContent: parts.join(" · ") })];
    if (result.traceId) {
      meta.push(el("a", { href: `/traces#${enc(result.traceId)}`, textContent: "trace", className: "trace-link", title: result.traceId }));
    }
    ui.tryMeta.replaceChildren(...meta);
    if (result.error) {
      ui.tryOutput.dataset.state = "error";
      showError(result.error);
    } else {
      ui.tryOutput.dataset.state = result.aborted ? "stopped" : "done";
    }
    refreshStats();
  }

  async function refreshStats() {
    if (!state.prompt) return;
    try {
      const stats = (await api("GET", `/v1/prompts/${enc(state.prompt.name)}/stats`)).data || [];
      state.stats = new Map(stats.map((s) => [s.version, s]));
      renderVersions();
      selectVersion(state.version);
    } catch (_) {
      // stats are a convenience: the page works without them
    }
  }

  // ---------- aliases ----------

  function renderAliasPanel() {
    const p = state.prompt;
    ui.aliasNames.replaceChildren(...Object.keys(p.aliases).map((a) => el("option", { value: a })));
    ui.aliasVersion.replaceChildren(...[...p.versions].reverse().map((v) => el("option", {
      value: String(v.version), textContent: `v${v.version}${v.note ? ` — ${v.note}` : ""}`,
    })));
    ui.aliasVersion.value = String(state.version || p.latest_version);
    const moves = [...p.alias_moves].reverse();
    ui.aliasHistory.replaceChildren(...(moves.length ? moves.map((m) => el("li", {
      "data-testid": "alias-move-item",
      textContent: `${formatTime(m.moved_at)} · ${m.alias}: ${m.from_version == null ? "new" : `v${m.from_version}`} → v${m.to_version}`,
    })) : [el("li", { className: "muted", textContent: "No alias set yet." })]));
  }

  async function moveAlias() {
    const alias = ui.aliasName.value.trim();
    const version = Number(ui.aliasVersion.value);
    if (!alias) {
      showError("Name the alias, e.g. production.");
      return;
    }
    hideError();
    try {
      const move = await api("PUT", `/v1/prompts/${enc(state.prompt.name)}/aliases/${enc(alias)}`, { version });
      say(move.moved ? `${alias} → v${move.to_version}` : `${alias} already points at v${move.to_version}`);
    } catch (err) {
      showError(err.message);
      return;
    }
    await openPrompt(state.prompt.name, state.version);
    await loadList();
  }

  // ---------- diff ----------

  function renderDiffSelects() {
    const options = () => [
      ...[...state.prompt.versions].reverse().map((v) => el("option", { value: String(v.version), textContent: `v${v.version}` })),
      ...Object.keys(state.prompt.aliases).map((a) => el("option", { value: a, textContent: a })),
    ];
    ui.diffA.replaceChildren(...options());
    ui.diffB.replaceChildren(...options());
    const versions = state.prompt.versions;
    ui.diffB.value = String(versions[versions.length - 1].version);
    ui.diffA.value = String(versions[Math.max(0, versions.length - 2)].version);
    ui.diffOutput.replaceChildren();
  }

  async function runDiff() {
    hideError();
    let body;
    try {
      const params = new URLSearchParams({ a: ui.diffA.value, b: ui.diffB.value });
      body = await api("GET", `/v1/prompts/${enc(state.prompt.name)}/diff?${params}`);
    } catch (err) {
      showError(err.message);
      return;
    }
    if (!body.diff) {
      ui.diffOutput.replaceChildren(el("span", { className: "muted", textContent: `${body.a} and ${body.b} have the same content.` }));
      return;
    }
    ui.diffOutput.replaceChildren(...body.diff.split("\n").filter((l, i, all) => l || i < all.length - 1).map((line) => {
      const kind = line.startsWith("+++") || line.startsWith("---") ? "file"
        : line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "same";
      return el("span", { className: `diff-line ${kind}`, textContent: `${line}\n` });
    }));
  }

  // ---------- editor ----------

  function openEditor(base) {
    hideError();
    ui.editor.hidden = false;
    ui.empty.hidden = true;
    ui.view.hidden = true;
    ui.editName.readOnly = Boolean(base);
    ui.editorTitle.textContent = base ? `New version of ${state.prompt.name} (from ${base.ref})` : "New prompt";
    ui.editName.value = base ? state.prompt.name : "";
    ui.editSystem.value = base && base.system !== null ? base.system : "";
    ui.editUser.value = base && base.user !== null ? base.user : "";
    ui.editExamples.value = JSON.stringify(base ? base.examples : [], null, 2);
    ui.editParams.value = JSON.stringify(base ? base.params : {}, null, 2);
    ui.editNote.value = "";
    (base ? ui.editUser : ui.editName).focus();
  }

  function closeEditor() {
    ui.editor.hidden = true;
    if (state.prompt) ui.view.hidden = false;
    else ui.empty.hidden = false;
  }

  function parseJSON(text, what) {
    try {
      return JSON.parse(text.trim() || (what === "examples" ? "[]" : "{}"));
    } catch (err) {
      throw new Error(`${what}: not valid JSON (${err.message})`);
    }
  }

  async function saveEditor() {
    hideError();
    let body;
    try {
      body = {
        name: ui.editName.value.trim(),
        system: ui.editSystem.value,
        user: ui.editUser.value,
        examples: parseJSON(ui.editExamples.value, "examples"),
        params: parseJSON(ui.editParams.value, "params"),
      };
    } catch (err) {
      showError(err.message);
      return;
    }
    if (ui.editNote.value.trim()) body.note = ui.editNote.value.trim();
    let saved;
    try {
      saved = await api("POST", "/v1/prompts", body);
    } catch (err) {
      showError(err.message);
      return;
    }
    state.prompt = null;
    await loadList();
    await openPrompt(saved.name, saved.version);
    say(saved.created ? `Saved ${saved.ref}` : `Unchanged: identical to ${saved.ref}, no new version`);
  }

  // ---------- wiring ----------

  ui.newPrompt.addEventListener("click", () => openEditor(null));
  ui.editVersion.addEventListener("click", () => openEditor(currentVersion()));
  ui.editCancel.addEventListener("click", closeEditor);
  ui.editorForm.addEventListener("submit", (e) => {
    e.preventDefault();
    saveEditor();
  });
  ui.tryForm.addEventListener("submit", (e) => {
    e.preventDefault();
    runTry();
  });
  ui.tryStop.addEventListener("click", () => state.controller && state.controller.abort());
  ui.aliasForm.addEventListener("submit", (e) => {
    e.preventDefault();
    moveAlias();
  });
  ui.diffForm.addEventListener("submit", (e) => {
    e.preventDefault();
    runDiff();
  });
  ui.errorClose.addEventListener("click", hideError);

  function fromHash() {
    const [name, version] = decodeURIComponent(location.hash.slice(1)).split("@");
    if (name) openPrompt(name, version);
  }
  window.addEventListener("hashchange", fromHash);

  loadList();
  loadModels();
  fromHash();
})();
