"""Human review against a real server running SmolLM2, on its own store: crawl holds answers until a person decides
(plain, streamed, `Prefer: respond-async`, hold timeout), walk queues its sample and thumbs-downs, run has a real
judge score answers, a restart loses no pending answer, and bad input gets a clear 4xx naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from fmstack.app.review.sampling import sampled
from tests.conftest import TEST_MODEL, Server, make_home
from tests.server.test_traces_and_metrics import metric

pytestmark = pytest.mark.slow
TIMEOUT = 120


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server of its own: policies set here (the chat page's app in crawl) must not reach other tests."""
    server = Server(make_home(tmp_path_factory.mktemp("review-home")))
    yield server
    server.stop()


def set_policy(srv: Server, app: str, **body) -> dict:
    resp = httpx.put(f"{srv.base}/v1/reviews/policies/{app}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def chat(srv: Server, app: str, question: str, headers: dict | None = None, **body) -> httpx.Response:
    payload = {"model": TEST_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
    payload |= {"temperature": 0} | body
    headers = {"X-Fmstack-App": app} | (headers or {})
    return httpx.post(f"{srv.base}/v1/chat/completions", json=payload, headers=headers, timeout=TIMEOUT)


def eventually(check: Callable, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def pending_items(srv: Server, app: str) -> list[dict]:
    resp = httpx.get(f"{srv.base}/v1/reviews/items", params={"app": app, "status": "pending"}, timeout=30)
    return resp.json()["data"]


def item_for(srv: Server, app: str, question: str) -> dict:
    def find() -> dict | None:
        for item in pending_items(srv, app):
            detail = httpx.get(f"{srv.base}/v1/reviews/items/{item['id']}", timeout=30).json()
            if detail["trace"]["messages"][-1]["content"] == question:
                return detail
        return None

    return eventually(find, f"the held answer to {question!r}")


def review(srv: Server, item_id: int, action: str, **body) -> httpx.Response:
    return httpx.post(f"{srv.base}/v1/reviews/items/{item_id}/{action}", json={"reviewer": "alice"} | body, timeout=30)


class Waiting:
    """A request in a thread: the client that waits while a person reviews."""

    def __init__(self, send: Callable[[], httpx.Response]):
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=lambda: setattr(self, "response", send()))
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(TIMEOUT)
        assert self.response is not None, "the held request never returned"
        return self.response


def test_crawl_holds_each_answer_until_approved_edited_or_rejected(srv):
    set_policy(srv, "crawl-json", stage="crawl", hold_seconds=TIMEOUT)
    questions = {"approve": "Say yes.", "edit": "Say hello.", "reject": "Say no."}
    waiting = {action: Waiting(lambda q=q: chat(srv, "crawl-json", q)) for action, q in questions.items()}
    items = {action: item_for(srv, "crawl-json", q) for action, q in questions.items()}
    assert all(w.response is None for w in waiting.values())  # held: nobody got an answer before a decision
    assert review(srv, items["approve"]["id"], "approve").json()["status"] == "approved"
    assert review(srv, items["edit"]["id"], "edit", text="Hello from a person.").json()["status"] == "edited"
    assert review(srv, items["reject"]["id"], "reject", reason="Off topic").json()["status"] == "rejected"

    approved = waiting["approve"].result()
    assert approved.status_code == 200 and approved.headers["x-fmstack-review"] == "approved"
    assert approved.json()["choices"][0]["message"]["content"] == items["approve"]["answer"]
    assert approved.json()["id"] == items["approve"]["trace_id"]
    edited = waiting["edit"].result()
    assert edited.json()["choices"][0]["message"]["content"] == "Hello from a person."
    rejected = waiting["reject"].result()
    assert rejected.status_code == 422 and rejected.headers["x-should-retry"] == "false"
    assert rejected.json()["error"]["code"] == "answer_rejected"
    assert "Off topic" in rejected.json()["error"]["message"]
    again = review(srv, items["approve"]["id"], "reject", reason="changed my mind")
    assert again.status_code == 409 and "already approved by alice" in again.json()["error"]["message"]


def test_crawl_timeout_is_a_clear_error_an_openai_client_does_not_retry_then_the_url_gives_the_decision(srv):
    set_policy(srv, "crawl-slow", stage="crawl", hold_seconds=1)
    client = openai.OpenAI(base_url=f"{srv.base}/v1", api_key="none", max_retries=2, timeout=TIMEOUT)
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(
            model=TEST_MODEL,
            messages=[{"role": "user", "content": "Name a color."}],
            max_tokens=8,
            extra_headers={"X-Fmstack-App": "crawl-slow"},
        )
    assert exc.value.status_code == 504 and exc.value.code == "review_timeout"
    assert "waiting for human review" in exc.value.message
    location = exc.value.response.headers["location"]
    (item,) = pending_items(srv, "crawl-slow")  # one answer held: the client did not retry
    assert location == f"/v1/reviews/pending/{item['trace_id']}"
    assert httpx.get(srv.base + location, timeout=30).status_code == 202
    review(srv, item["id"], "edit", text="Blue.")
    done = httpx.get(srv.base + location, timeout=30)
    assert done.status_code == 200 and done.json()["choices"][0]["message"]["content"] == "Blue."
    assert done.json()["object"] == "chat.completion" and done.json()["usage"]["completion_tokens"] > 0


def test_prefer_respond_async_answers_202_with_a_url_to_poll(srv):
    set_policy(srv, "crawl-async", stage="crawl")
    accepted = chat(srv, "crawl-async", "Count to three.", headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    url = srv.base + accepted.headers["location"]
    assert httpx.get(url, timeout=30).status_code == 202
    (item,) = pending_items(srv, "crawl-async")  # stored before the 202: the URL is good at once
    review(srv, item["id"], "reject", reason="Too long")
    rejected = httpx.get(url, timeout=30)
    assert rejected.status_code == 422 and "Too long" in rejected.json()["error"]["message"]


def test_the_responses_api_goes_through_the_same_policy(srv):
    set_policy(srv, "crawl-responses", stage="crawl")
    accepted = httpx.post(
        f"{srv.base}/v1/responses",
        json={"model": TEST_MODEL, "input": "Say yes.", "max_output_tokens": 8},
        headers={"X-Fmstack-App": "crawl-responses", "Prefer": "respond-async"},
        timeout=TIMEOUT,
    )
    assert accepted.status_code == 202, accepted.text
    (item,) = pending_items(srv, "crawl-responses")
    detail = httpx.get(f"{srv.base}/v1/reviews/items/{item['id']}", timeout=30).json()
    assert detail["trace"]["messages"] == [{"role": "user", "content": "Say yes."}]
    review(srv, item["id"], "edit", text="Yes.")
    done = httpx.get(srv.base + accepted.headers["location"], timeout=30).json()
    assert done["object"] == "response" and done["output"][0]["content"][0]["text"] == "Yes."


def test_a_streamed_crawl_answer_says_pending_then_sends_the_approved_text(srv):
    set_policy(srv, "crawl-stream", stage="crawl", hold_seconds=TIMEOUT)
    body = {"model": TEST_MODEL, "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 8}
    lines: list[str] = []
    headers: dict = {}

    def stream() -> None:
        payload = body | {"stream": True}
        with httpx.stream(
            "POST",
            f"{srv.base}/v1/chat/completions",
            json=payload,
            headers={"X-Fmstack-App": "crawl-stream"},
            timeout=TIMEOUT,
        ) as resp:
            headers.update(resp.headers)
            lines.extend(line for line in resp.iter_lines() if line.startswith("data: "))

    thread = threading.Thread(target=stream)
    thread.start()
    item = item_for(srv, "crawl-stream", "Say ok.")
    assert headers["x-fmstack-review"] == "pending" and not any('"content": "' + item["answer"] in x for x in lines)
    review(srv, item["id"], "edit", text="OK, from a reviewer.")
    thread.join(TIMEOUT)
    chunks = [json.loads(x[6:]) for x in lines if x != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == "OK, from a reviewer." and lines[-1] == "data: [DONE]"


def test_walk_queues_its_share_and_every_thumbs_down(srv):
    set_policy(srv, "walk", stage="walk", share=0.5)
    ids = [chat(srv, "walk", f"Say {i}.", max_tokens=2).headers["x-fmstack-trace-id"] for i in range(12)]
    expected = {t for t in ids if sampled(t, 0.5)}

    def queued() -> set[str] | None:
        got = {i["trace_id"] for i in pending_items(srv, "walk")}
        return got if got == expected else None

    eventually(queued, f"the {len(expected)} sampled answers of 12 in the queue")
    down = next(t for t in ids if t not in expected)
    assert httpx.post(f"{srv.base}/v1/feedback", json={"trace_id": down, "rating": -1}, timeout=30).status_code == 200
    reasons = {i["trace_id"]: i["reason"] for i in pending_items(srv, "walk")}
    assert reasons[down] == "thumbs-down" and {reasons[t] for t in expected} == {"sampled"}


def test_walk_sampling_hits_its_share_over_200_requests(srv):
    """200 real requests in walk at a 20 % share: exactly the sampled answers are queued, and they are 20 % of the
    answers within 4 standard deviations of a binomial (0.028 at 200), so the test does not flake."""
    set_policy(srv, "walk-200", stage="walk", share=0.2)
    with ThreadPoolExecutor(4) as pool:  # four clients at a time, within the server's queue
        answers = list(pool.map(lambda i: chat(srv, "walk-200", f"Say {i}.", max_tokens=1), range(200)))
    assert {a.status_code for a in answers} == {200}
    ids = [a.headers["x-fmstack-trace-id"] for a in answers]
    expected = {t for t in ids if sampled(t, 0.2)}

    def queued() -> set[str] | None:
        resp = httpx.get(f"{srv.base}/v1/reviews/items", params={"app": "walk-200", "limit": 1000}, timeout=30)
        got = {i["trace_id"] for i in resp.json()["data"]}
        return got if got == expected else None

    eventually(queued, f"the {len(expected)} sampled answers of 200 in the queue")
    assert abs(len(expected) / 200 - 0.2) <= 4 * 0.0283, len(expected)
    scraped = httpx.get(f"{srv.base}/metrics", timeout=30).text
    assert metric(scraped, "fmstack_review_answers_total", app="walk-200", delivery="automated") == 200
    assert metric(scraped, "fmstack_review_queue_depth", app="walk-200", reason="sampled") == len(expected)


def test_run_has_a_real_judge_score_answers_and_queues_the_low_ones(srv):
    set_policy(srv, "run", stage="run", judge_model=TEST_MODEL, share=0.0, threshold=0.75, rubric="Answer exactly.")
    trace_id = chat(srv, "run", "What is 2 + 2?").headers["x-fmstack-trace-id"]

    def scored() -> dict | None:
        scores = httpx.get(f"{srv.base}/api/traces/{trace_id}", timeout=30).json()["scores"]
        return next((s for s in scores if s["metric"] == "review_judge"), None)

    score = eventually(scored, "the judge's score", timeout=300)
    assert score["judge"] == TEST_MODEL
    items = {i["trace_id"]: i for i in pending_items(srv, "run")}
    if score["value"] is None:  # a judge that could not answer: a person looks, with the error
        assert items[trace_id]["reason"] == "judge-error" and score["error"]
    elif score["value"] < 0.75:
        assert items[trace_id]["reason"] == "judge-low" and items[trace_id]["judge_score"] == score["value"]
    else:
        assert trace_id not in items


def test_bad_input_gets_a_clear_4xx_naming_the_field(srv):
    base = srv.base
    assert httpx.get(f"{base}/v1/reviews/policies/nobody", timeout=30).status_code == 404
    assert httpx.get(f"{base}/v1/reviews/items", params={"app": "nobody"}, timeout=30).status_code == 404
    unknown_judge = httpx.put(f"{base}/v1/reviews/policies/x", json={"judge_model": "nope"}, timeout=30)
    assert unknown_judge.status_code == 404 and unknown_judge.json()["error"]["param"] == "judge_model"
    share = httpx.put(f"{base}/v1/reviews/policies/x", json={"share": 2}, timeout=30)
    assert share.status_code == 400 and share.json()["error"]["param"] == "share"
    assert httpx.get(f"{base}/v1/reviews/policies/x", timeout=30).status_code == 404  # nothing half-written
    set_policy(srv, "bad", stage="crawl")
    jump = httpx.post(f"{base}/v1/reviews/policies/bad/move", json={"stage": "run"}, timeout=30)
    assert jump.status_code == 400 and jump.json()["error"]["param"] == "stage"
    assert review(srv, 99999, "approve").status_code == 404
    assert httpx.post(f"{base}/v1/reviews/next", json={}, timeout=30).json()["error"]["param"] == "reviewer"
    several = chat(srv, "bad", "Hi", n=2)
    assert several.status_code == 400 and several.json()["error"]["param"] == "n"


def test_a_restart_loses_no_pending_answer(tmp_path):
    home = make_home(tmp_path / "home")
    first = Server(home)
    try:
        set_policy(first, "shop", stage="crawl")
        set_policy(first, "help", stage="walk", share=1.0)
        accepted = chat(first, "shop", "Where is my order?", headers={"Prefer": "respond-async"})
        assert accepted.status_code == 202
        sampled_id = chat(first, "help", "Hi", max_tokens=2).headers["x-fmstack-trace-id"]
        eventually(lambda: pending_items(first, "help"), "the walk sample in the queue")
        cut: list = []  # a client waiting when the server stops: its request fails, the answer stays queued

        def ask() -> None:
            try:
                cut.append(chat(first, "shop", "Is it late?"))
            except httpx.HTTPError as exc:
                cut.append(exc)

        client = threading.Thread(target=ask)
        client.start()
        eventually(lambda: len(pending_items(first, "shop")) == 2, "the waiting client's answer in the queue")
    finally:
        first.stop()
    client.join(TIMEOUT)
    assert cut and getattr(cut[0], "status_code", None) != 200, cut  # never delivered without a person
    second = Server(home)
    try:
        assert [i["trace_id"] for i in pending_items(second, "help")] == [sampled_id]
        waiting = {i["trace_id"]: i for i in pending_items(second, "shop")}
        assert len(waiting) == 2 and all(i["answer"] and i["status"] == "pending" for i in waiting.values())
        item = waiting[accepted.json()["id"]]
        assert item["answer"] and item["trace_id"] == accepted.json()["id"]
        approve = subprocess.run(
            [sys.executable, "-m", "fmstack", "review", "approve", str(item["id"]), "--reviewer", "bob"],
            env=second.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert approve.returncode == 0, approve.stderr
        done = httpx.get(second.base + accepted.headers["location"], timeout=30)
        assert done.status_code == 200 and done.json()["choices"][0]["message"]["content"] == item["answer"]
    finally:
        second.stop()


def test_metrics_show_the_queue_held_answers_decisions_and_the_automated_share(srv):
    def scrape() -> str:
        return httpx.get(f"{srv.base}/metrics", timeout=30).text

    set_policy(srv, "metrics-crawl", stage="crawl")
    set_policy(srv, "metrics-walk", stage="walk", share=0.0)
    empty = scrape()
    assert metric(empty, "fmstack_review_stage", app="metrics-crawl", stage="crawl") == 1
    assert metric(empty, "fmstack_review_held_answers", app="metrics-crawl") == 0
    assert metric(empty, "fmstack_review_answers_total", app="metrics-walk", delivery="automated") == 0

    accepted = chat(srv, "metrics-crawl", "Say hi.", headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202
    assert chat(srv, "metrics-walk", "Say hi.").status_code == 200
    waiting = scrape()
    assert metric(waiting, "fmstack_review_held_answers", app="metrics-crawl") == 1
    assert metric(waiting, "fmstack_review_queue_depth", app="metrics-crawl", reason="crawl") == 1
    assert metric(waiting, "fmstack_review_answers_total", app="metrics-crawl", delivery="human") == 1
    assert metric(waiting, "fmstack_review_answers_total", app="metrics-walk", delivery="automated") == 1
    assert metric(waiting, "fmstack_review_automated_share", app="metrics-walk") == 1

    (item,) = pending_items(srv, "metrics-crawl")
    assert review(srv, item["id"], "approve", seconds=3.5).status_code == 200
    done = scrape()
    assert metric(done, "fmstack_review_held_answers", app="metrics-crawl") == 0
    assert metric(done, "fmstack_review_queue_depth", app="metrics-crawl") == 0
    assert metric(done, "fmstack_reviews_total", app="metrics-crawl", decision="approved") == 1
    assert metric(done, "fmstack_review_seconds_total", app="metrics-crawl") == 3.5
    assert metric(done, "fmstack_review_automated_share", app="metrics-crawl") == 0
