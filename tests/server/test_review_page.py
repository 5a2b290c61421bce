"""The /review page in a real browser (Debian's Chromium through Playwright) against a real server running SmolLM2:
with the chat page's app in crawl, a question waits ("waiting for review") until a reviewer edits the answer on the
review page, with the keyboard; a rejection reaches the chat as an error with the reviewer's reason."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from fmstack.app.review.policy import save_policy, settings_from
from fmstack.app.review.queue import Verdict, enqueue, record_verdict
from fmstack.core.config import Settings
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.core.store.schema import Trace
from tests.conftest import TEST_MODEL, Server, make_home

pytestmark = pytest.mark.slow
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Server(make_home(tmp_path_factory.mktemp("review-page-home")))
    resp = httpx.put(
        f"{server.base}/v1/reviews/policies/web-chat",
        json={"stage": "crawl", "hold_seconds": 300, "rubric": "Polite, and at most one sentence."},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    yield server
    server.stop()


@pytest.fixture()
def pages(browser):
    """Two tabs: the user's chat and the reviewer's queue; JavaScript errors or 5xx fail the test."""
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    problems: list[str] = []
    tabs = []
    for _ in range(2):
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.on("pageerror", lambda exc: problems.append(f"JavaScript error: {exc}"))
        tab.on("response", lambda r: r.status >= 500 and problems.append(f"{r.status} from {r.url}"))
        tabs.append(tab)
    yield tabs
    context.close()
    assert not problems, problems


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def ask(chat, srv, question: str):
    chat.fill("#input", question)
    chat.press("#input", "Enter")
    return chat.locator(".message.assistant").last


def test_a_crawl_answer_waits_for_the_review_page_and_a_rejection_reaches_the_chat(pages, srv):
    chat, reviewer = pages
    chat.goto(f"{srv.base}/")
    expect(chat.locator(f"#model option[value='{TEST_MODEL}']")).to_have_count(1)
    chat.fill("#max-tokens", "8")
    chat.fill("#temperature", "0")

    answer = ask(chat, srv, "What is the capital of France?")
    expect(answer).to_have_attribute("data-review", "waiting", timeout=WAIT_MS)
    expect(answer.locator(".content")).to_have_text("Waiting for review…")

    reviewer.goto(f"{srv.base}/review")
    reviewer.fill("#reviewer", "alice")
    reviewer.press("#reviewer", "Tab")  # the change event asks for the next item
    item = reviewer.get_by_test_id("review-item")
    expect(item).to_be_visible(timeout=WAIT_MS)
    expect(reviewer.get_by_test_id("conversation")).to_contain_text("What is the capital of France?")
    expect(reviewer.get_by_test_id("rubric")).to_have_text("Polite, and at most one sentence.")
    expect(reviewer.get_by_test_id("item-reason")).to_have_text("crawl")
    expect(answer).to_have_attribute("data-review", "waiting")  # still held while the reviewer reads
    reviewer.screenshot(path="/tmp/fmstack-review.png")

    reviewer.keyboard.press("e")  # edit, with the keyboard
    reviewer.fill("#edit-text", "Paris is the capital of France.")
    reviewer.press("#edit-text", "Control+Enter")
    expect(reviewer.get_by_test_id("status")).to_contain_text("edited")

    expect(answer).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(answer.locator(".content")).to_have_text("Paris is the capital of France.")

    second = ask(chat, srv, "Tell me a secret.")
    expect(second).to_have_attribute("data-review", "waiting", timeout=WAIT_MS)
    expect(reviewer.get_by_test_id("conversation")).to_contain_text("Tell me a secret.", timeout=WAIT_MS)
    reviewer.keyboard.press("r")
    reviewer.fill("#reject-reason", "We do not share secrets.")
    reviewer.press("#reject-reason", "Enter")
    expect(reviewer.get_by_test_id("status")).to_contain_text("rejected")
    expect(chat.get_by_test_id("error")).to_contain_text("A reviewer rejected the answer: We do not share secrets.")

    items = httpx.get(f"{srv.base}/v1/reviews/items", params={"app": "web-chat"}, timeout=30).json()["data"]
    assert [(i["status"], i["reviewer"]) for i in items] == [("rejected", "alice"), ("edited", "alice")]
    assert all(i["seconds"] is not None and i["seconds"] > 0 for i in items)  # the page timed the reviewer


def test_the_page_shows_a_rag_answers_sources_and_the_judges_score(pages, srv):
    """An answer the judge scored low, written to the server's store as the run stage would: the reviewer sees the
    retrieved passages and the judge's score and reason, and approves with the keyboard."""
    chunk = {"id": 1, "source": "docs/returns.md", "location": "line 3", "text": "Returns are free for 30 days."}
    with open_store(Settings(home=srv.home)).begin() as s:
        s.add(
            Trace(
                id="chatcmpl-rag-1",
                endpoint="rag.chat.completions",
                app="rag-bot",
                model=TEST_MODEL,
                status="ok",
                status_code=200,
                request={"messages": [{"role": "user", "content": "Can I return it?"}]},
                response_text="Yes, within a year.",
                retrieval={"collection": "docs", "chunks": [chunk]},
            )
        )
        s.flush()
        policy = save_policy(s, Registry(Settings(home=srv.home)), "rag-bot", settings_from({}), "crawl")
        enqueue(s, replace(policy, stage="run"), "chatcmpl-rag-1", "Yes, within a year.", "judge-low")
        record_verdict(s, "chatcmpl-rag-1", Verdict(0.25, "Contradicts the 30-day window.", TEST_MODEL))
    _, reviewer = pages
    reviewer.goto(f"{srv.base}/review")
    reviewer.fill("#reviewer", "bob")
    reviewer.select_option("#app", "rag-bot")
    expect(reviewer.get_by_test_id("item-reason")).to_have_text("judge-low")
    expect(reviewer.get_by_test_id("judge-score")).to_have_text("0.25")
    expect(reviewer.get_by_test_id("judge")).to_contain_text("Contradicts the 30-day window.")
    expect(reviewer.get_by_test_id("source")).to_contain_text("docs/returns.md")
    expect(reviewer.get_by_test_id("policy-numbers")).to_contain_text("crawl")
    reviewer.screenshot(path="/tmp/fmstack-review-rag.png")
    reviewer.keyboard.press("a")
    expect(reviewer.get_by_test_id("status")).to_contain_text("approved")
    expect(reviewer.get_by_test_id("empty")).to_be_visible()


def test_an_openai_client_waiting_in_crawl_gets_the_answer_approved_on_the_page(pages, srv):
    """A plain (not streamed) OpenAI SDK request waits while the answer is held; approving it on the page with the
    keyboard releases it to the client, unchanged, marked approved."""
    import threading

    import openai

    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key="none", max_retries=0, timeout=WAIT_MS / 1000)
    got: list = []

    def ask_api() -> None:
        try:
            got.append(client.chat.completions.with_raw_response.create(
                model=TEST_MODEL, messages=[{"role": "user", "content": "Name a planet."}], max_tokens=8,
                temperature=0, extra_headers={"X-Fmstack-App": "web-chat"}))
        except openai.OpenAIError as exc:
            got.append(exc)

    waiting = threading.Thread(target=ask_api)
    waiting.start()
    _, reviewer = pages
    reviewer.goto(f"{srv.base}/review")
    reviewer.fill("#reviewer", "carol")
    reviewer.select_option("#app", "web-chat")
    expect(reviewer.get_by_test_id("conversation")).to_contain_text("Name a planet.", timeout=WAIT_MS)
    expect(reviewer.get_by_test_id("item-reason")).to_have_text("crawl")
    assert waiting.is_alive() and not got  # held: the client has nothing yet
    reviewer.keyboard.press("a")
    expect(reviewer.get_by_test_id("status")).to_contain_text("approved")
    waiting.join(WAIT_MS / 1000)
    (raw,) = got
    assert not isinstance(raw, Exception), raw
    items = httpx.get(f"{srv.base}/v1/reviews/items", params={"app": "web-chat"}, timeout=30).json()["data"]
    approved = next(i for i in items if i["status"] == "approved" and i["reviewer"] == "carol")
    assert raw.headers["x-fmstack-review"] == "approved"
    completion = raw.parse()
    assert completion.id == approved["trace_id"] and completion.choices[0].message.content == approved["answer"]
