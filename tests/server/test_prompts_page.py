"""The prompts page in Debian's Chromium against the real SmolLM2 server: create a prompt, save versions, diff them,
move an alias, try a version with variables (streamed), and find the traced call on the traces page."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import TEST_MODEL
from tests.server.test_web_ui import ANSWER_TIMEOUT_MS, expect, page  # noqa: F401 - `page` is a fixture

pytestmark = pytest.mark.slow


def api(server, path: str) -> dict:
    resp = httpx.get(f"{server.base}{path}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_create_version_diff_alias_and_try_a_prompt(page, server):  # noqa: F811
    name = "web-capitals"
    page.goto(f"{server.base}/")
    page.click("#prompts-link")
    page.wait_for_url(f"{server.base}/prompts")

    # create
    page.click("#new-prompt")
    page.fill("#edit-name", name)
    page.fill("#edit-system", "Answer with the name of the city only.")
    page.fill("#edit-user", "What is the capital of {{ country }}?")
    page.fill("#edit-params", json.dumps({"model": TEST_MODEL, "temperature": 0, "max_tokens": 12}))
    page.fill("#edit-note", "first")
    page.click("#edit-save")
    expect(page.locator("#prompt-name")).to_have_text(name)
    expect(page.locator("#status")).to_have_text(f"Saved {name}@1")
    expect(page.locator(f".prompt-item[data-name='{name}']")).to_be_visible()

    # a second version from the first, then the same content again: no new version
    page.click("#edit-version")
    expect(page.locator("#edit-user")).to_have_value("What is the capital of {{ country }}?")
    page.fill("#edit-user", "Name the capital city of {{ country }}.")
    page.fill("#edit-note", "clearer")
    page.click("#edit-save")
    expect(page.locator("#status")).to_have_text(f"Saved {name}@2")
    expect(page.locator("tr.version-row")).to_have_count(2)
    page.click("#edit-version")
    page.click("#edit-save")
    expect(page.locator("#status")).to_have_text(f"Unchanged: identical to {name}@2, no new version")
    expect(page.locator("tr.version-row")).to_have_count(2)
    assert [v["version"] for v in api(server, f"/v1/prompts/{name}")["versions"]] == [1, 2]

    # the selected version's parts and variables
    page.click("tr.version-row[data-version='1']")
    expect(page.locator("#version-title")).to_have_text(f"{name}@1")
    expect(page.locator("#version-parts [data-part='user']")).to_contain_text("What is the capital of {{ country }}?")
    expect(page.locator("#version-meta")).to_contain_text("country")

    # diff v1 -> v2
    page.select_option("#diff-a", "1")
    page.select_option("#diff-b", "2")
    page.click("#diff-run")
    expect(page.locator("#diff-output .diff-line.del")).to_contain_text(["-What is the capital of {{ country }}?"])
    expect(page.locator("#diff-output .diff-line.add")).to_contain_text(["+Name the capital city of {{ country }}."])

    # move the alias to v2, then roll it back to v1
    page.fill("#alias-name", "production")
    page.select_option("#alias-version", "2")
    page.click("#alias-move")
    expect(page.locator("#prompt-aliases [data-alias='production']")).to_have_text("production → 2")
    page.select_option("#alias-version", "1")
    page.click("#alias-move")
    expect(page.locator("#prompt-aliases [data-alias='production']")).to_have_text("production → 1")
    expect(page.locator("#alias-history li")).to_have_count(2)
    assert api(server, f"/v1/prompts/{name}")["aliases"] == {"production": 1}
    expect(page.locator(f".prompt-item[data-name='{name}'] [data-alias='production']")).to_have_text("production → 1")

    # try v1 with a variable: the answer streams in, and the call is traced with the prompt version
    page.click("tr.version-row[data-version='1']")
    page.fill("[data-testid='var-country']", "France")
    page.evaluate("""() => {
        window.__seen = [];
        const out = document.getElementById('try-output');
        new MutationObserver(() => out.textContent && window.__seen.push(out.textContent))
            .observe(out, {childList: true, subtree: true, characterData: true});
    }""")
    page.click("#try-run")
    output = page.locator("#try-output")
    expect(output).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    text = output.text_content()
    assert text and text.strip()
    assert len(set(page.evaluate("window.__seen"))) > 1, "the answer did not stream"
    trace_id = output.get_attribute("data-trace-id")
    trace = api(server, f"/api/traces/{trace_id}")
    assert (trace["prompt_name"], trace["prompt_version"], trace["response_text"]) == (name, 1, text)
    assert trace["request"]["variables"] == {"country": "France"} and trace["app"] == "web-prompts"
    expect(page.locator("#try-meta")).to_contain_text(f"{name}@1")
    expect(page.locator("tr.version-row[data-version='1'] td.requests")).to_have_text("1")
    page.screenshot(path="/tmp/fmstack-prompts.png", full_page=True)

    # a missing variable is shown, not sent
    page.fill("[data-testid='var-country']", "")
    page.evaluate("document.querySelector(\"[data-testid='var-country']\").remove()")
    page.click("#try-run")
    expect(page.locator("#error-text")).to_contain_text("Missing variable 'country'")

    # the traces page shows the prompt column and filters by prompt version
    page.click("tr.version-row[data-version='1'] td.requests a")
    page.wait_for_url(f"{server.base}/traces?prompt={name}%401")
    row = page.locator(f"tr.trace-row[data-trace-id='{trace_id}']")
    expect(row.locator("td.prompt")).to_have_text(f"{name}@1")
    # the call with the missing variable is traced too (as a 400), under the same version
    expect(page.locator("tr.trace-row td.prompt a")).to_have_count(2)
    expect(page.locator("tr.trace-row td.status")).to_have_text(["error", "ok"])
    page.select_option("#filter-prompt", f"{name}@2")
    expect(row).to_have_count(0)
    page.select_option("#filter-prompt", name)
    expect(row).to_have_count(1)
    row.click()
    expect(page.locator("#detail-summary")).to_contain_text(f"{name}@1")
