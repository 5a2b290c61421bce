"""Every request is traced (success or failure), feedback links to it, and /metrics reports it."""

import re

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow


def metric(text: str, name: str, **labels) -> float:
    """Sum of a Prometheus sample's values over series whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_trace_row_matches_the_request(server):
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="x", default_headers={"X-Fmstack-App": "shop-bot"})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    r = client.chat.completions.create(
        model="smollm2-priced", messages=messages, max_tokens=12, temperature=0, user="alice", seed=5
    )
    t = httpx.get(f"{server.base}/api/traces/{r.id}").json()
    assert t["model"] == "smollm2-priced" and t["engine"] == "llamacpp" and t["endpoint"] == "chat.completions"
    assert t["app"] == "shop-bot" and t["user"] == "alice" and t["status"] == "ok" and t["status_code"] == 200
    assert t["request"]["messages"] == messages and t["request"]["max_tokens"] == 12 and t["request"]["seed"] == 5
    assert t["response_text"] == r.choices[0].message.content and t["finish_reason"] == r.choices[0].finish_reason
    assert (t["prompt_tokens"], t["completion_tokens"]) == (r.usage.prompt_tokens, r.usage.completion_tokens)
    assert 0 < t["ttft_ms"] <= t["latency_ms"] and t["tokens_per_s"] > 0
    expected_cost = (r.usage.prompt_tokens * 1.5 + r.usage.completion_tokens * 6.0) / 1e6
    assert t["cost"] == pytest.approx(expected_cost)
    listed = httpx.get(f"{server.base}/api/traces", params={"app": "shop-bot"}).json()["data"]
    assert [x["id"] for x in listed] == [r.id]


def test_feedback_is_stored_on_the_trace(server):
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="x")
    r = client.chat.completions.create(model=TEST_MODEL, messages=[{"role": "user", "content": "2+2?"}], max_tokens=8)
    post = lambda body: httpx.post(f"{server.base}/v1/feedback", json=body)  # noqa: E731
    assert post({"trace_id": r.id, "rating": -1, "correction": "4", "comment": "wrong"}).status_code == 200
    assert post({"trace_id": r.id, "rating": 1}).status_code == 200
    feedback = httpx.get(f"{server.base}/api/traces/{r.id}").json()["feedback"]
    assert [(f["rating"], f["correction"], f["comment"]) for f in feedback] == [(-1, "4", "wrong"), (1, None, None)]
    unknown = post({"trace_id": "chatcmpl-nope", "rating": 1})
    assert unknown.status_code == 404 and "error" in unknown.json()
    assert post({"trace_id": r.id, "rating": 5}).status_code == 400
    assert post({"trace_id": r.id}).status_code == 400


def test_metrics_count_requests_latency_tokens_and_cost(server):
    before = httpx.get(f"{server.base}/metrics").text
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="x")
    r = client.chat.completions.create(
        model="smollm2-priced", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
    )
    httpx.post(f"{server.base}/v1/chat/completions", json={"model": TEST_MODEL, "messages": []})
    after = httpx.get(f"{server.base}/metrics").text

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fmstack_requests_total", model="smollm2-priced", status="ok") == 1
    assert delta("fmstack_requests_total", model=TEST_MODEL, status="error") == 1
    assert delta("fmstack_tokens_total", model="smollm2-priced", direction="in") == r.usage.prompt_tokens
    assert delta("fmstack_tokens_total", model="smollm2-priced", direction="out") == r.usage.completion_tokens
    assert delta("fmstack_cost_usd_total", model="smollm2-priced") > 0
    for histogram in ("request_latency_seconds", "time_to_first_token_seconds", "time_per_output_token_seconds"):
        assert delta(f"fmstack_{histogram}_count", model="smollm2-priced") == 1
    assert metric(after, "fmstack_queue_depth", model=TEST_MODEL) == 0
    assert metric(after, "fmstack_requests_in_flight", model="smollm2-priced") == 0
