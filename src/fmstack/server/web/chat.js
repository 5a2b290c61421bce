// fmstack chat page: streams answers from /v1/chat/completions and sends feedback to /v1/feedback.
// Plain browser JavaScript, no build step. All model and user text goes through textContent, never innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"),
    modelInfo: $("model-info"),
    collection: $("collection"),
    collectionInfo: $("collection-info"),
    system: $("system"),
    maxTokens: $("max-tokens"),
    temperature: $("temperature"),
    newChat: $("new-chat"),
    messages: $("messages"),
    emptyState: $("empty-state"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    stop: $("stop"),
    errorClose: $("error-close"),
  };

  const state = {
    models: new Map(), // id -> model info from /v1/models
    collections: new Map(), // name -> collection info from /v1/rag/collections
    history: [], // [{role, content}] of finished turns, without the system prompt
    busy: false,
    controller: null,
    conversation: 0, // bumped by "New conversation" so a late answer cannot land in the new one
  };

  // ---------- small helpers ----------

  const { el, icon, showError, hideError, errorMessage, authFetch, streamCompletion } = window.fm;





  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function setBusy(busy) {
    state.busy = busy;
    ui.send.disabled = busy;
    ui.send.textContent = busy ? "Answering…" : "Send";
    ui.stop.hidden = !busy;
  }

  // ---------- models ----------

  async function loadModels() {
    let data;
    try {
      const resp = await authFetch("/v1/models");
      if (!resp.ok) throw new Error(await errorMessage(resp));
      data = (await resp.json()).data || [];
    } catch (err) {
      ui.model.replaceChildren(el("option", { value: "", textContent: "Could not load models" }));
      showError(`Could not load the model list: ${err.message}`);
      return;
    }
    const chatModels = data.filter((m) => m.kind === "chat");
    state.models = new Map(chatModels.map((m) => [m.id, m]));
    if (!chatModels.length) {
      ui.model.replaceChildren(el("option", { value: "", textContent: "No chat models configured" }));
      showError("The server has no chat models. Add one to models.toml and restart it.");
      return;
    }
    ui.model.replaceChildren(...chatModels.map((m) => {
      const label = m.available === false ? `${m.id} (unavailable)` : m.id;
      return el("option", { value: m.id, textContent: label });
    }));
    const pick = chatModels.find((m) => m.loaded) || chatModels.find((m) => m.available !== false) || chatModels[0];
    ui.model.value = pick.id;
    showModelInfo();
  }

  function showModelInfo() {
    const m = state.models.get(ui.model.value);
    if (!m) {
      ui.modelInfo.textContent = "";
      return;
    }
    const parts = [m.engine, m.context_length ? `${m.context_length.toLocaleString()} token context` : null];
    if (m.loaded) parts.push("loaded");
    else if (m.available === false) parts.push("not available on this server");
    else parts.push("loads on first use");
    ui.modelInfo.textContent = parts.filter(Boolean).join(" · ");
  }

  // ---------- RAG collections ----------

  async function loadCollections() {
    let data = [];
    try {
      const resp = await authFetch("/v1/rag/collections");
      if (!resp.ok) throw new Error(await errorMessage(resp));
      data = (await resp.json()).data || [];
    } catch (err) {
      ui.collectionInfo.textContent = `Could not load collections: ${err.message}`;
      return;
    }
    state.collections = new Map(data.map((c) => [c.name, c]));
    ui.collection.replaceChildren(
      el("option", { value: "", textContent: "None (plain chat)" }),
      ...data.map((c) => el("option", { value: c.name, textContent: c.name })),
    );
    showCollectionInfo();
  }

  function showCollectionInfo() {
    const c = state.collections.get(ui.collection.value);
    ui.collectionInfo.textContent = c
      ? `${c.documents} documents · ${c.chunks} chunks · answers cite their sources`
      : (state.collections.size ? "" : "No collections yet: fmstack rag ingest PATH --collection NAME");
  }

  /** Numbered citations under an answer; each expands to the passage it cites. */
  function addSources(answer, sources) {
    if (!sources || !sources.length) return;
    const items = sources.map((s) => {
      const summary = el("summary", {}, [
        el("span", { className: "source-id", textContent: `[${s.id}]` }),
        el("span", { className: "source-name", textContent: s.source }),
        el("span", { className: "source-where", textContent: s.location }),
      ]);
      return el("details", { className: "source", "data-testid": "source", "data-source-id": String(s.id) }, [
        summary, el("blockquote", { className: "source-text", textContent: s.text }),
      ]);
    });
    const box = el("div", { className: "sources", "data-testid": "sources" }, [
      el("div", { className: "sources-title", textContent: "Sources" }), ...items,
    ]);
    answer.meta.before(box);
  }

  // ---------- conversation rendering ----------

  function addUserMessage(text) {
    ui.emptyState.hidden = true;
    const node = el("div", { className: "message user", "data-testid": "user-message" }, [
      el("div", { className: "role", textContent: "You" }),
      el("div", { className: "content", textContent: text }),
    ]);
    ui.messages.append(node);
    scrollToBottom();
    return node;
  }

  function addAssistantMessage(model) {
    const content = el("div", { className: "content" });
    const meta = el("div", { className: "meta" });
    const node = el("div", {
      className: "message assistant streaming",
      "data-testid": "assistant-message",
      "data-state": "streaming",
      "data-model": model,
    }, [el("div", { className: "role", textContent: model }), content, meta]);
    ui.messages.append(node);
    scrollToBottom();
    return { node, content, meta };
  }

  function addFeedbackControls(answer, traceId) {
    const up = el("button", {
      type: "button", className: "btn small thumb-up", "data-testid": "thumb-up",
      title: "Good answer", "aria-label": "Thumbs up: good answer", "aria-pressed": "false",
    }, [icon("up")]);
    const down = el("button", {
      type: "button", className: "btn small thumb-down", "data-testid": "thumb-down",
      title: "Bad answer", "aria-label": "Thumbs down: bad answer", "aria-pressed": "false",
    }, [icon("down")]);
    const suggest = el("button", {
      type: "button", className: "btn small suggest", "data-testid": "suggest",
    }, [icon("edit"), "Suggest a better answer"]);
    const status = el("span", {
      className: "feedback-status", "data-testid": "feedback-status", role: "status", "aria-live": "polite",
    });
    const text = el("textarea", {
      className: "suggest-text", "data-testid": "suggest-text", rows: 4,
      placeholder: "Write the answer you would have wanted…", "aria-label": "A better answer",
    });
    const submit = el("button", {
      type: "button", className: "btn small primary suggest-submit", "data-testid": "suggest-submit",
      textContent: "Submit",
    });
    const cancel = el("button", { type: "button", className: "btn small suggest-cancel", textContent: "Cancel" });
    const form = el("div", { className: "suggest-form", hidden: true }, [
      text, el("div", { className: "actions" }, [cancel, submit]),
    ]);
    const bar = el("div", { className: "feedback" }, [up, down, suggest, status]);
    answer.node.append(bar, form);

    const buttons = [up, down, suggest, submit];

    async function save(payload) {
      buttons.forEach((b) => { b.disabled = true; });
      status.classList.remove("error");
      status.textContent = "Saving…";
      try {
        const resp = await authFetch("/v1/feedback", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ trace_id: traceId, ...payload }),
        });
        if (!resp.ok) throw new Error(await errorMessage(resp));
        status.textContent = "Thanks — feedback saved";
        return true;
      } catch (err) {
        status.textContent = `Could not save feedback: ${err.message}`;
        status.classList.add("error");
        return false;
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    }

    async function rate(rating, chosen, other) {
      if (await save({ rating })) {
        chosen.classList.add("chosen");
        chosen.setAttribute("aria-pressed", "true");
        other.classList.remove("chosen");
        other.setAttribute("aria-pressed", "false");
      }
    }

    up.addEventListener("click", () => rate(1, up, down));
    down.addEventListener("click", () => rate(-1, down, up));
    suggest.addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) text.focus();
    });
    cancel.addEventListener("click", () => { form.hidden = true; });
    submit.addEventListener("click", async () => {
      const correction = text.value.trim();
      if (!correction) {
        status.textContent = "Write a better answer first.";
        status.classList.add("error");
        text.focus();
        return;
      }
      if (await save({ correction })) {
        form.hidden = true;
        text.value = "";
      }
    });
    text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit.click();
    });
  }

  function setMeta(answer, result, seconds) {
    const parts = [];
    if (result.usage) parts.push(`${result.usage.completion_tokens} tokens`);
    parts.push(`${seconds.toFixed(1)} s`);
    if (result.finishReason === "length") parts.push("cut at max tokens");
    if (result.aborted) parts.push("stopped");
    const children = [el("span", { textContent: parts.join(" · ") })];
    if (result.traceId) {
      children.push(el("a", {
        href: `/traces#${encodeURIComponent(result.traceId)}`, textContent: "trace", className: "trace-link",
        title: result.traceId,
      }));
    }
    if (result.error) {
      children.push(el("span", { className: "error-note", textContent: `Error: ${result.error}` }));
    }
    answer.meta.replaceChildren(...children);
  }

  // ---------- streaming ----------

  /** POST a streaming chat completion (the chat API, or a collection's RAG endpoint) and follow it. */
  function streamChat(body, signal, onUpdate, url = "/v1/chat/completions") {
    return streamCompletion(url, body, signal, onUpdate, "web-chat");
  }

  async function send() {
    if (state.busy) return;
    const text = ui.input.value.trim();
    if (!text) {
      ui.input.focus();
      return;
    }
    const model = ui.model.value;
    if (!model) {
      showError("Pick a model first.");
      return;
    }
    hideError();

    const userTurn = { role: "user", content: text };
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...state.history, userTurn);
    const body = { model, messages, stream: true, stream_options: { include_usage: true } };
    const maxTokens = parseInt(ui.maxTokens.value, 10);
    if (maxTokens > 0) body.max_tokens = maxTokens;
    const temperature = parseFloat(ui.temperature.value);
    if (!Number.isNaN(temperature)) body.temperature = temperature;

    ui.input.value = "";
    autosize();
    const userNode = addUserMessage(text);
    const answer = addAssistantMessage(model);
    const controller = new AbortController();
    state.controller = controller;
    const conversation = state.conversation;
    setBusy(true);
    const t0 = performance.now();

    const collection = ui.collection.value;
    const url = collection ? `/v1/rag/${encodeURIComponent(collection)}/chat/completions` : "/v1/chat/completions";
    if (collection) answer.node.dataset.collection = collection;
    const result = await streamChat(body, controller.signal, (partial) => {
      const follow = nearBottom();
      if (partial.traceId) answer.node.dataset.traceId = partial.traceId;
      answer.content.textContent = partial.text;
      const waiting = partial.review === "pending" && !partial.text;  // crawl: a reviewer approves it first
      answer.node.dataset.review = waiting ? "waiting" : "";
      if (waiting) answer.content.replaceChildren(el("span", { className: "muted", textContent: "Waiting for review…" }));
      if (follow) scrollToBottom();
    }, url);

    if (conversation !== state.conversation) return; // the user started a new conversation meanwhile
    state.controller = null;
    setBusy(false);
    answer.node.classList.remove("streaming");

    if (!result.started) {
      // Nothing was generated: undo the turn and give the text back so it can be sent again.
      answer.node.remove();
      userNode.remove();
      if (!ui.input.value) ui.input.value = text;
      if (!ui.messages.querySelector(".message")) ui.emptyState.hidden = false;
      if (result.error) showError(result.error);
      ui.input.focus();
      return;
    }

    if (result.traceId) answer.node.dataset.traceId = result.traceId;
    if (!result.text) {
      answer.content.replaceChildren(el("span", { className: "muted", textContent: "(empty answer)" }));
    }
    setMeta(answer, result, (performance.now() - t0) / 1000);
    addSources(answer, result.sources);

    if (result.error) {
      answer.node.classList.add("failed");
      answer.node.dataset.state = "error";
      showError(result.error);
    } else {
      answer.node.dataset.state = result.aborted ? "stopped" : "done";
      if (!result.aborted || result.text) state.history.push(userTurn, { role: "assistant", content: result.text });
    }
    if (result.traceId && result.text) addFeedbackControls(answer, result.traceId);
    if (nearBottom()) scrollToBottom();
    ui.input.focus();
    refreshLoaded(model);
  }

  /** After the first answer a model is loaded: say so in the picker without a page reload. */
  function refreshLoaded(model) {
    const m = state.models.get(model);
    if (!m || m.loaded) return;
    m.loaded = true;
    showModelInfo();
  }

  function newConversation() {
    if (state.controller) state.controller.abort();
    state.controller = null;
    state.conversation += 1;
    setBusy(false);
    state.history = [];
    ui.messages.querySelectorAll(".message").forEach((n) => n.remove());
    ui.emptyState.hidden = false;
    hideError();
    ui.input.focus();
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 200)}px`;
  }

  // ---------- wiring ----------

  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.input.addEventListener("input", autosize);
  ui.stop.addEventListener("click", () => state.controller && state.controller.abort());
  ui.newChat.addEventListener("click", newConversation);
  ui.model.addEventListener("change", showModelInfo);
  ui.collection.addEventListener("change", showCollectionInfo);
  ui.errorClose.addEventListener("click", hideError);

  loadModels();
  loadCollections();
  ui.input.focus();
})();
