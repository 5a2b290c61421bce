"""Bad input never hurts the server: a 4xx with an OpenAI-style error body, and the failed request is traced."""

import httpx
import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hi"}]


def error_count(server) -> int:
    traces = httpx.get(f"{server.base}/api/traces", params={"status": "error", "limit": 1000}).json()["data"]
    return len(traces)


CASES = [
    ("malformed json", dict(content=b'{"model": "x", "messages": [')),
    (
        "invalid utf-8",
        dict(content=b'{"model": "\xff\xfe", "messages": []}', headers={"content-type": "application/json"}),
    ),
    ("not an object", dict(json=[1, 2, 3])),
    ("missing messages", dict(json={"model": TEST_MODEL})),
    ("messages wrong type", dict(json={"model": TEST_MODEL, "messages": "hello"})),
    ("empty messages", dict(json={"model": TEST_MODEL, "messages": []})),
    ("unknown role", dict(json={"model": TEST_MODEL, "messages": [{"role": "wizard", "content": "x"}]})),
    ("negative max_tokens", dict(json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": -5})),
    ("huge max_tokens", dict(json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 10**12})),
    ("temperature not a number", dict(json={"model": TEST_MODEL, "messages": HELLO, "temperature": "hot"})),
    ("temperature out of range", dict(json={"model": TEST_MODEL, "messages": HELLO, "temperature": 9})),
    ("logit_bias key not a token id", dict(json={"model": TEST_MODEL, "messages": HELLO, "logit_bias": {"a": 1}})),
    ("logit_bias out of range", dict(json={"model": TEST_MODEL, "messages": HELLO, "logit_bias": {"5": 101}})),
    ("logit_bias past vocab", dict(json={"model": TEST_MODEL, "messages": HELLO, "logit_bias": {"99999999": 1}})),
    ("n larger than the queue", dict(json={"model": TEST_MODEL, "messages": HELLO, "n": 100})),
    ("n over the schema limit", dict(json={"model": TEST_MODEL, "messages": HELLO, "n": 1000})),
    (
        "bad json schema",
        dict(
            json={
                "model": TEST_MODEL,
                "messages": HELLO,
                "response_format": {"type": "json_schema", "json_schema": {"schema": 5}},
            }
        ),
    ),
    (
        "unknown response format",
        dict(json={"model": TEST_MODEL, "messages": HELLO, "response_format": {"type": "yaml"}}),
    ),
    ("embedding model for chat", dict(json={"model": "all-minilm-l6-v2", "messages": HELLO})),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_chat_request_is_a_4xx_with_error_body_and_a_trace(server, case):
    _, kwargs = case
    before = error_count(server)
    r = httpx.post(f"{server.base}{CHAT}", timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error_count(server) == before + 1
    assert (
        httpx.post(
            f"{server.base}{CHAT}", json={"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2}, timeout=30
        ).status_code
        == 200
    )


def test_unknown_model_is_404_naming_known_models(server):
    r = httpx.post(f"{server.base}{CHAT}", json={"model": "gpt-9", "messages": HELLO})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found" and TEST_MODEL in r.json()["error"]["message"]


def test_oversized_body_is_413(server):
    huge = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (5 * 1024 * 1024) + b'"}]}'
    before = error_count(server)
    r = httpx.post(f"{server.base}{CHAT}", content=huge, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(f"{server.base}{CHAT}", content=iter([huge[:3_000_000], huge[3_000_000:]]), timeout=30)
    assert chunked.status_code == 413
    assert error_count(server) == before + 2


def test_prompt_longer_than_context_says_by_how_much(server):
    long = "word " * 700  # smollm2-priced is served with a 512-token context
    r = httpx.post(
        f"{server.base}{CHAT}",
        json={"model": "smollm2-priced", "messages": [{"role": "user", "content": long}]},
        timeout=60,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "512" in error["message"] and "too many" in error["message"]


def test_max_tokens_is_capped_to_the_room_left(server):
    prompt = "word " * 450
    r = httpx.post(
        f"{server.base}{CHAT}",
        timeout=120,
        json={"model": "smollm2-priced", "messages": [{"role": "user", "content": prompt}], "max_tokens": 500},
    )
    assert r.status_code == 200
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 512


def test_unknown_route_is_openai_style_404(server):
    r = httpx.get(f"{server.base}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_an_offset_past_what_a_store_can_hold_is_a_400_not_a_500(server):
    """Found by the schema fuzzer: an offset beyond 64 bits overflowed SQLite's INTEGER inside the query."""
    r = httpx.get(f"{server.base}/api/traces", params={"offset": 2**76, "limit": 5}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "query.offset", r.text
    last = httpx.get(f"{server.base}/api/traces", params={"offset": 2**53, "limit": 5}, timeout=30)
    assert last.status_code == 200 and last.json()["data"] == []
