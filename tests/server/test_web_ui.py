"""The web UI in a real browser: Debian's Chromium driven by Playwright, against a real server running SmolLM2.

What a user does on the pages is checked against what the server stored, through /api/traces.
"""

from __future__ import annotations

import httpx
import pytest

MODEL = "smollm2-135m-instruct"  # the model the session `server` fixture serves
ANSWER_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


@pytest.fixture()
def page(browser):
    """A fresh page at laptop size; fails the test if the page's JavaScript throws or a request 5xx's."""
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"JavaScript error: {exc}"))
    page.on("response", lambda r: r.status >= 500 and problems.append(f"{r.status} from {r.url}"))
    yield page
    context.close()
    assert not problems, problems


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def trace(server, trace_id: str) -> dict:
    resp = httpx.get(f"{server.base}/api/traces/{trace_id}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def open_chat(page, server, system: str = "") -> None:
    page.goto(f"{server.base}/")
    expect(page.locator(f"#model option[value='{MODEL}']")).to_have_count(1)
    page.select_option("#model", MODEL)
    page.fill("#max-tokens", "32")
    page.fill("#temperature", "0")
    page.fill("#system", system)


def ask(page, question: str, press_enter: bool = True):
    """Send one message; wait for its streamed answer to finish; return (answer locator, trace id, text)."""
    count = page.locator(".message.assistant").count()
    page.fill("#input", question)
    if press_enter:
        page.press("#input", "Enter")
    else:
        page.click("#send")
    answer = page.locator(".message.assistant").nth(count)
    expect(answer).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    trace_id = answer.get_attribute("data-trace-id")
    assert trace_id and trace_id.startswith("chatcmpl-"), trace_id
    text = answer.locator(".content").text_content()
    assert text and text.strip(), "the answer is empty"
    return answer, trace_id, text


def test_chat_streams_an_answer_keeps_history_and_records_thumbs_up(page, server):
    system = "You are a terse assistant. Answer in one short sentence."
    open_chat(page, server, system)
    # The picker lists chat models only and starts on a loaded one.
    models = httpx.get(f"{server.base}/v1/models", timeout=10).json()["data"]
    options = page.locator("#model option").evaluate_all("els => els.map(e => e.value)")
    assert options == [m["id"] for m in models if m["kind"] == "chat"]
    assert "all-minilm-l6-v2" not in options

    # Record every text the answer bubble shows while streaming: it must grow in several steps.
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            const c = [...document.querySelectorAll('.message.assistant .content')].pop();
            if (c && c.textContent) window.__seen.push(c.textContent);
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    }""")
    answer, trace_id, text = ask(page, "What is the capital of France?")
    seen = page.evaluate("window.__seen")
    assert len(set(seen)) > 1, f"the answer did not render incrementally: {seen}"
    assert seen[-1] == text

    answer.locator(".thumb-up").click()
    expect(answer.locator(".feedback-status")).to_have_text("Thanks — feedback saved")
    stored = trace(server, trace_id)
    assert stored["status"] == "ok"
    assert stored["response_text"] == text
    assert [f["rating"] for f in stored["feedback"]] == [1]
    first_turn = [{"role": "system", "content": system}, {"role": "user", "content": "What is the capital of France?"}]
    assert stored["request"]["messages"] == first_turn
    assert stored["request"]["max_tokens"] == 32 and stored["request"]["stream"] is True

    # A second turn (sent with the button) carries the whole conversation.
    _, second_id, _ = ask(page, "And of Italy?", press_enter=False)
    second = trace(server, second_id)
    assert second["request"]["messages"] == first_turn + [
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And of Italy?"},
    ]
    page.screenshot(path="/tmp/fmstack-chat.png")


def test_suggest_a_better_answer_and_thumbs_down_are_stored(page, server):
    open_chat(page, server)
    answer, trace_id, _ = ask(page, "How many legs does a spider have?")

    answer.locator(".thumb-down").click()
    expect(answer.locator(".feedback-status")).to_have_text("Thanks — feedback saved")
    answer.locator(".suggest").click()
    box = answer.locator(".suggest-text")
    expect(box).to_be_visible()
    correction = "A spider has eight legs. <b>not bold</b>"
    box.fill(correction)
    answer.locator(".suggest-submit").click()
    expect(answer.locator(".feedback-status")).to_have_text("Thanks — feedback saved")
    expect(box).to_be_hidden()

    feedback = trace(server, trace_id)["feedback"]
    assert [f["rating"] for f in feedback] == [-1, None]
    assert feedback[1]["correction"] == correction


def test_chat_shows_api_errors(page, server):
    open_chat(page, server)
    # A model the server does not know: the page must show the API's own error message.
    page.evaluate("""() => {
        const o = document.createElement('option');
        o.value = o.textContent = 'no-such-model';
        document.getElementById('model').append(o);
    }""")
    page.select_option("#model", "no-such-model")
    page.fill("#input", "hello")
    page.click("#send")
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hello"}]}
    api = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=10)
    assert api.status_code == 404
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-text")).to_have_text(api.json()["error"]["message"])
    # The failed turn is undone and the text given back for another try.
    expect(page.locator("#input")).to_have_value("hello")
    expect(page.locator(".message")).to_have_count(0)


def test_traces_page_lists_the_request_and_shows_its_detail(page, server):
    open_chat(page, server, "Be brief.")
    answer, trace_id, text = ask(page, "Name a primary colour.")
    answer.locator(".thumb-up").click()
    expect(answer.locator(".feedback-status")).to_have_text("Thanks — feedback saved")

    page.click("#traces-link")
    page.wait_for_url(f"{server.base}/traces")
    row = page.locator(f"tr.trace-row[data-trace-id='{trace_id}']")
    expect(row).to_be_visible()
    # Newest first: the request just made heads the table.
    assert page.locator("tr.trace-row").first.get_attribute("data-trace-id") == trace_id
    expect(row.locator("td.status")).to_have_text("ok")
    expect(row.locator("td.model")).to_contain_text(MODEL)
    expect(row.locator("td.feedback-summary")).to_have_attribute("data-up", "1")
    expect(row.locator("td.feedback-summary")).to_have_attribute("data-down", "0")
    stored = trace(server, trace_id)
    expect(row.locator("td.tokens")).to_have_text(f"{stored['prompt_tokens']} / {stored['completion_tokens']}")

    row.click()
    detail = page.locator("#trace-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(trace_id)
    expect(page.locator("#detail-response")).to_have_text(text)
    expect(page.locator("#detail-messages")).to_contain_text("Be brief.")
    expect(page.locator("#detail-messages")).to_contain_text("Name a primary colour.")
    expect(page.locator("#detail-params")).to_contain_text('"max_tokens": 32')
    expect(page.locator("#detail-feedback [data-testid=feedback-item]")).to_have_count(1)
    expect(row).to_have_class("trace-row selected")
    page.screenshot(path="/tmp/fmstack-traces.png")

    # Filters go to the API: no error traces include this one; filtering on its model does.
    page.select_option("#filter-status", "error")
    expect(row).to_have_count(0)
    page.select_option("#filter-status", "")
    page.select_option("#filter-model", MODEL)
    expect(row).to_have_count(1)
    page.click("#refresh")
    expect(row).to_have_count(1)

    # A trace can be linked to directly.
    page.goto(f"{server.base}/traces#{trace_id}")
    expect(page.locator("#detail-response")).to_have_text(text)


def test_chat_answers_from_a_collection_with_expandable_citations(page, server, tmp_path):
    from fmstack.app.rag import ChunkConfig
    from tests.app.rag.helpers import make_rag, write_formats

    write_formats(tmp_path / "manuals")
    make_rag(server.home).ingest(tmp_path / "manuals", "web-manuals", ChunkConfig(by="structure"))
    open_chat(page, server)
    expect(page.locator("#collection option[value='web-manuals']")).to_have_count(1)
    page.select_option("#collection", "web-manuals")
    expect(page.locator("#collection-info")).to_contain_text("5 documents")

    answer, trace_id, _ = ask(page, "How often should the Zephyr kettle be descaled?")
    assert answer.get_attribute("data-collection") == "web-manuals"
    sources = answer.locator("[data-testid=source]")
    expect(sources.first).to_be_visible()
    first = sources.first
    expect(first.locator(".source-id")).to_have_text("[1]")
    expect(first.locator(".source-name")).to_have_text("manuals/kettle.md")
    expect(first.locator(".source-where")).to_contain_text("§ Kettle manual > Cleaning")
    snippet = first.locator(".source-text")
    expect(snippet).to_be_hidden()
    first.locator("summary").click()
    expect(snippet).to_be_visible()
    expect(snippet).to_contain_text("Descale the Zephyr kettle every month")
    page.screenshot(path="/tmp/fmstack-rag-chat.png")

    stored = trace(server, trace_id)
    assert stored["endpoint"] == "rag.chat.completions"
    assert stored["retrieval"]["chunks"][0]["source"] == "manuals/kettle.md"
    assert sources.count() == len(stored["retrieval"]["chunks"])

    # Back to plain chat: no sources.
    page.select_option("#collection", "")
    plain, _, _ = ask(page, "Say hello.")
    expect(plain.locator("[data-testid=sources]")).to_have_count(0)
