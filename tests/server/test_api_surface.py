"""The rest of OpenAI's common API surface, as the official client uses it: `n`, one model by id, request ids and
the Responses API."""

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
COUNT = [{"role": "user", "content": "Count from one to five."}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="anything")


def traces(server, **params) -> list[dict]:
    return httpx.get(f"{server.base}/api/traces", params=params, timeout=30).json()["data"]


def test_n_choices_are_separate_sequences_with_summed_usage(client, server):
    r = client.chat.completions.create(model=TEST_MODEL, messages=COUNT, n=3, max_tokens=12, temperature=1, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") and c.message.content for c in r.choices)
    assert len({c.message.content for c in r.choices}) > 1  # seeds 7, 8, 9: the choices differ
    assert r.usage.completion_tokens <= 36 and r.usage.prompt_tokens < 60  # the prompt is counted once
    [trace] = [t for t in traces(server, limit=5) if t["id"] == r.id]
    assert trace["completion_tokens"] == r.usage.completion_tokens
    assert trace["response_text"] == r.choices[0].message.content


def test_n_choices_stream_with_their_index(client):
    chunks = list(
        client.chat.completions.create(model=TEST_MODEL, messages=COUNT, n=2, max_tokens=8, temperature=0, stream=True)
    )
    texts = {0: "", 1: ""}
    reasons = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert set(reasons) == {0, 1} and texts[0] and texts[0] == texts[1]  # greedy: both choices are the same


def test_n_larger_than_the_queue_names_the_field(server):
    body = {"model": TEST_MODEL, "messages": COUNT, "n": 50, "max_tokens": 2}
    r = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_one_model_by_id(client, server):
    model = client.models.retrieve(TEST_MODEL)
    assert model.id == TEST_MODEL and model.model_extra["engine"] == "llamacpp"
    missing = httpx.get(f"{server.base}/v1/models/no-such-model", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_every_response_has_a_request_id(server):
    mine = httpx.get(f"{server.base}/healthz", headers={"X-Request-Id": "abc-123"}, timeout=30)
    assert mine.headers["x-request-id"] == "abc-123"
    fresh = [httpx.get(f"{server.base}/v1/models", timeout=30).headers["x-request-id"] for _ in range(2)]
    assert fresh[0] != fresh[1] and all(r.startswith("req-") for r in fresh)


def test_responses_api_with_the_openai_client(client, server):
    r = client.responses.create(
        model=TEST_MODEL, input="Say hello.", instructions="Answer in one word.", max_output_tokens=8, temperature=0
    )
    assert r.object == "response" and r.status in ("completed", "incomplete") and r.output_text
    assert r.usage.output_tokens <= 8 and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    [trace] = [t for t in traces(server, limit=5) if t["id"] == r.id]
    assert trace["endpoint"] == "responses" and trace["response_text"] == r.output_text
    assert trace["request"]["instructions"] == "Answer in one word."


def test_responses_api_streams_typed_events(client):
    kinds, text = [], ""
    # long enough to finish: the SDK's stream helper only accepts a `response.completed` ending
    with client.responses.stream(model=TEST_MODEL, input="Say hello.", max_output_tokens=64, temperature=0) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in kinds and final.output_text == text and text
    assert final.usage.output_tokens > 0 and final.id.startswith("resp-")


def test_responses_api_bad_input_is_a_400_naming_the_field(server):
    bad = {"model": TEST_MODEL, "input": [{"role": "robot", "content": "hi"}]}
    r = httpx.post(f"{server.base}/v1/responses", json=bad, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input.0"
    chained = {"model": TEST_MODEL, "input": "hi", "previous_response_id": "resp-1"}
    r = httpx.post(f"{server.base}/v1/responses", json=chained, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"
