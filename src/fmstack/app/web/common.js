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

  return { el, icon, showError, hideError, errorMessage };
})();
