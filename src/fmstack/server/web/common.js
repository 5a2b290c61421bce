// Helpers shared by the fmstack pages: DOM building without innerHTML, icons, the error banner, API errors.
"use strict";

window.fm = (() => {
  const PROPS = new Set(["className", "textContent", "hidden", "disabled", "type", "value", "rows", "placeholder",
    "title", "href", "tabIndex", "colSpan"]);

  /** Build an element: known properties are set directly, anything else becomes an attribute. */
  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (PROPS.has(key)) node[key] = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  /** A decorative icon drawn by style.css (.icon-up, .icon-down, .icon-edit, .icon-comment). */
  function icon(name) {
    return el("span", { className: `icon icon-${name}`, "aria-hidden": "true" });
  }

  function showError(message) {
    document.getElementById("error-text").textContent = message;
    document.getElementById("error").hidden = false;
  }

  function hideError() {
    document.getElementById("error").hidden = true;
    document.getElementById("error-text").textContent = "";
  }

  /** The OpenAI-style `error.message` of a failed response, or the best description we can make. */
  async function errorMessage(resp) {
    let text = "";
    try {
      text = await resp.text();
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) return body.error.message;
      if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) {
      // not JSON: fall through
    }
    const snippet = text.trim().slice(0, 300);
    return `HTTP ${resp.status} ${resp.statusText}${snippet ? `: ${snippet}` : ""}`;
  }

  const KEY_STORAGE = "fmstack-api-key";
  let asking = null;

  /** Ask for an API key once, however many requests were refused together; kept in localStorage. */
  function askKey(reason) {
    asking = asking || new Promise((resolve) => {
      setTimeout(() => {
        const key = (window.prompt(`${reason}\n\nThis server needs an API key (fmk_…). Paste yours:`) || "").trim();
        if (key) localStorage.setItem(KEY_STORAGE, key);
        asking = null;
        resolve(Boolean(key));
      }, 0);
    });
    return asking;
  }

  /**
   * fetch() with the saved API key as `Authorization: Bearer`. When the server answers 401 (keys are on, and
   * ours is missing, wrong or revoked) ask for a key and try again; cancelling the prompt returns the 401.
   */
  async function authFetch(url, options = {}) {
    for (;;) {
      const key = localStorage.getItem(KEY_STORAGE);
      const headers = { ...(options.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
      const resp = await fetch(url, { ...options, headers });
      if (resp.status !== 401) return resp;
      const reason = await errorMessage(resp.clone());
      if (localStorage.getItem(KEY_STORAGE) !== key) continue; // another request got a new key meanwhile
      if (!(await askKey(reason))) return resp;
    }
  }

  /**
   * POST a streaming chat completion to `url` and read its server-sent events as they arrive, calling
   * `onUpdate(out)` after each. Events may be split across network reads, so bytes are buffered until a blank
   * line ends each event. `app` names the page in the trace (X-Fmstack-App).
   */
  async function streamCompletion(url, body, signal, onUpdate, app) {
    const out = {
      traceId: null, text: "", usage: null, finishReason: null, error: null, started: false, aborted: false,
      sources: null, prompt: null, review: null,
    };
    let resp;
    try {
      resp = await authFetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-Fmstack-App": app },
        body: JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") out.aborted = true;
      else out.error = `Could not reach the server: ${err.message}`;
      return out;
    }
    out.traceId = resp.headers.get("X-Fmstack-Trace-Id");
    out.prompt = resp.headers.get("X-Fmstack-Prompt");  // set by a prompt's endpoint: name@version
    out.review = resp.headers.get("X-Fmstack-Review");  // "pending": the app is in crawl, a person approves first
    if (!resp.ok) {
      out.error = await errorMessage(resp);
      return out;
    }
    out.started = true;
    onUpdate(out);

    let done = false;
    const handleEvent = (raw) => {
      const data = raw.split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) return;
      if (data === "[DONE]") {
        done = true;
        return;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch (_) {
        return; // not JSON: ignore, as OpenAI clients do
      }
      if (chunk.error) {
        out.error = chunk.error.message || JSON.stringify(chunk.error);
        return;
      }
      if (chunk.id && !out.traceId) out.traceId = chunk.id;
      if (chunk.usage) out.usage = chunk.usage;
      if (chunk.sources) out.sources = chunk.sources;
      const choice = chunk.choices && chunk.choices[0];
      if (choice) {
        const piece = choice.delta && choice.delta.content;
        if (piece) out.text += piece;
        if (choice.finish_reason) out.finishReason = choice.finish_reason;
      }
      onUpdate(out);
    };

    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    const boundary = /\r?\n\r?\n/;
    let buffer = "";
    try {
      while (!done) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        buffer += decoder.decode(value, { stream: true });
        let match;
        while (!done && (match = boundary.exec(buffer))) {
          const raw = buffer.slice(0, match.index);
          buffer = buffer.slice(match.index + match[0].length);
          handleEvent(raw);
        }
      }
      buffer += decoder.decode();
      if (!done && buffer.trim()) handleEvent(buffer);
      if (done) reader.cancel().catch(() => {});
      else if (!out.error && !out.finishReason) out.error = "The stream ended before the answer was complete.";
    } catch (err) {
      if (err.name === "AbortError") out.aborted = true;
      else out.error = `The stream broke: ${err.message}`;
    }
    return out;
  }

  return { el, icon, showError, hideError, errorMessage, authFetch, streamCompletion };
})();
