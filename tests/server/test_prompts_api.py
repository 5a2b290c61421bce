"""The prompts API: versions, aliases, render and diff in-process; chat completions through a stored prompt against
the real SmolLM2 server — answered exactly like /v1/chat/completions, streaming included, and traced with the
prompt's name and version."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from fmstack.app.prompts import Prompts
from fmstack.core.config import get_settings
from tests.conftest import TEST_MODEL

CAPITALS = {
    "system": "Answer with the name of the city only.",
    "user": "What is the capital of {{ country }}?",
    "params": {"model": TEST_MODEL, "temperature": 0, "max_tokens": 12, "seed": 3},
}


def counts(usage: dict) -> tuple[int, int, int]:
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


@pytest.fixture()
def client(home):
    from fmstack.server import create_app

    with TestClient(create_app()) as c:
        yield c


def test_save_read_alias_render_diff(client):
    first = client.post("/v1/prompts", json={"name": "capitals", **CAPITALS, "note": "first"})
    assert first.status_code == 201 and first.json()["ref"] == "capitals@1" and first.json()["created"] is True
    again = client.post("/v1/prompts", json={"name": "capitals", **CAPITALS})
    assert again.status_code == 200 and again.json()["created"] is False and "no new version" in again.json()["message"]
    edited = CAPITALS | {"user": "Name the capital of {{ country }}."}
    assert client.post("/v1/prompts", json={"name": "capitals", **edited}).json()["version"] == 2

    move = client.put("/v1/prompts/capitals/aliases/production", json={"version": 2}).json()
    assert (move["from_version"], move["to_version"], move["moved"]) == (None, 2, True)
    back = client.put("/v1/prompts/capitals/aliases/production", json={"version": "v1"}).json()
    assert (back["from_version"], back["to_version"]) == (2, 1)

    listed = client.get("/v1/prompts").json()["data"]
    assert listed == [listed[0]] and listed[0]["latest_version"] == 2 and listed[0]["aliases"] == {"production": 1}
    prompt = client.get("/v1/prompts/capitals").json()
    assert [v["version"] for v in prompt["versions"]] == [1, 2] and prompt["versions"][0]["note"] == "first"
    assert [(m["from_version"], m["to_version"]) for m in prompt["alias_moves"]] == [(None, 2), (2, 1)]
    assert client.get("/v1/prompts/capitals/versions/production").json()["version"] == 1
    assert client.get("/v1/prompts/capitals/versions/latest").json()["variables"] == ["country"]

    rendered = client.post("/v1/prompts/capitals@production/render", json={"variables": {"country": "Peru"}}).json()
    assert rendered["ref"] == "capitals@1" and rendered["messages"][1]["content"] == "What is the capital of Peru?"
    diff = client.get("/v1/prompts/capitals/diff", params={"a": "production", "b": "2"}).json()
    assert diff["a"] == "capitals@1" and "+Name the capital of {{ country }}." in diff["diff"]


def test_errors_are_openai_style(client):
    client.post("/v1/prompts", json={"name": "capitals", **CAPITALS})
    missing = client.post("/v1/prompts/capitals/render", json={"variables": {}})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "variables.country" and "'country'" in missing.json()["error"]["message"]
    bad = client.post("/v1/prompts", json={"name": "x", "user": "{{ oops"})
    assert bad.status_code == 400 and "template error" in bad.json()["error"]["message"]
    assert client.get("/v1/prompts/nope").status_code == 404
    assert client.get("/v1/prompts/capitals/versions/9").json()["error"]["type"] == "not_found_error"
    assert client.put("/v1/prompts/capitals/aliases/Prod", json={"version": 1}).status_code == 400


def test_prompt_completion_errors_are_traced_before_any_model_runs(client):
    client.post("/v1/prompts", json={"name": "capitals", **CAPITALS})
    client.post("/v1/prompts", json={"name": "modelless", "user": "Hi {{ name }}"})
    missing = client.post("/v1/prompts/capitals/chat/completions", json={"variables": {"city": "x"}})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_variable"
    assert "'country'" in missing.json()["error"]["message"]
    no_model = client.post("/v1/prompts/modelless/chat/completions", json={"variables": {"name": "a"}})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    bad_param = client.post(
        "/v1/prompts/capitals/chat/completions", json={"variables": {"country": "x"}, "temperature": 5}
    )
    assert bad_param.status_code == 400 and bad_param.json()["error"]["param"] == "temperature"
    traces = client.get("/api/traces", params={"prompt": "capitals"}).json()["data"]
    assert [(t["status_code"], t["prompt_name"], t["prompt_version"]) for t in traces] == [(400, "capitals", 1)] * 2
    assert all(t["endpoint"] == "prompts.chat.completions" for t in traces)
    assert traces[-1]["request"]["variables"] == {"city": "x"}


# --- against the real server ------------------------------------------------------------------------------------


def post(server, path: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body, timeout=120, **kw)


def sse(server, path: str, body: dict) -> tuple[httpx.Headers, list]:
    events = []
    with httpx.stream("POST", f"{server.base}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
        return r.headers, events


@pytest.mark.slow
def test_prompt_completion_answers_like_chat_completions_and_is_traced(server):
    name = "api-capitals"
    post(server, "/v1/prompts", {"name": name, **CAPITALS})
    v2 = CAPITALS | {"system": "You are a geography teacher. Answer with the city only."}
    post(server, "/v1/prompts", {"name": name, **v2})
    httpx.put(f"{server.base}/v1/prompts/{name}/aliases/production", json={"version": 1})

    r = post(
        server,
        f"/v1/prompts/{name}@production/chat/completions",
        {"variables": {"country": "France"}},
        headers={"X-Fmstack-App": "prompt-test"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["X-Fmstack-Prompt"] == f"{name}@1" and r.headers["X-Fmstack-Trace-Id"] == body["id"]
    assert body["object"] == "chat.completion" and body["model"] == TEST_MODEL
    assert body["usage"]["completion_tokens"] > 0 and body["choices"][0]["finish_reason"] in ("stop", "length")
    # the same messages and parameters sent to /v1/chat/completions give the same answer
    messages = [
        {"role": "system", "content": CAPITALS["system"]},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    direct = post(server, "/v1/chat/completions", {"messages": messages, **CAPITALS["params"]}).json()
    assert direct["choices"][0]["message"] == body["choices"][0]["message"]
    assert counts(direct["usage"]) == counts(body["usage"])  # cached_tokens depend on what ran before

    headers, events = sse(
        server,
        f"/v1/prompts/{name}@production/chat/completions",
        {"variables": {"country": "France"}, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert headers["x-fmstack-prompt"] == f"{name}@1" and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks) and len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == body["choices"][0]["message"]["content"]
    assert counts(chunks[-1]["usage"]) == counts(body["usage"])

    # overrides: another version through the latest ref, and a request parameter over the stored one
    latest = post(server, f"/v1/prompts/{name}/chat/completions", {"variables": {"country": "Japan"}, "max_tokens": 2})
    assert latest.headers["X-Fmstack-Prompt"] == f"{name}@2" and latest.json()["usage"]["completion_tokens"] <= 2

    for trace_id, version, stream in (
        (body["id"], 1, False),
        (chunks[0]["id"], 1, True),
        (latest.json()["id"], 2, False),
    ):
        t = httpx.get(f"{server.base}/api/traces/{trace_id}", timeout=10).json()
        assert (t["prompt_name"], t["prompt_version"], t["status"]) == (name, version, "ok")
        assert t["endpoint"] == "prompts.chat.completions" and t["request"]["stream"] is stream
        assert (
            t["request"]["variables"]["country"] in ("France", "Japan")
            and t["request"]["prompt_ref"] == f"{name}@{version}"
        )
        assert t["request"]["messages"][-1]["role"] == "user"
    assert httpx.get(f"{server.base}/api/traces/{body['id']}").json()["app"] == "prompt-test"
    httpx.post(f"{server.base}/v1/feedback", json={"trace_id": body["id"], "rating": 1})

    by_alias = httpx.get(f"{server.base}/api/traces", params={"prompt": f"{name}@production"}).json()["data"]
    assert {t["id"] for t in by_alias} == {body["id"], chunks[0]["id"]}
    assert len(httpx.get(f"{server.base}/api/traces", params={"prompt": name}).json()["data"]) == 3
    stats = {s["version"]: s for s in httpx.get(f"{server.base}/v1/prompts/{name}/stats").json()["data"]}
    assert (stats[1]["requests"], stats[1]["errors"], stats[1]["thumbs_up"]) == (2, 0, 1)
    assert stats[2]["requests"] == 1 and stats[1]["latency_ms"] > 0 and stats[1]["completion_tokens"] > 0


@pytest.mark.slow
def test_python_api_calls_the_model_through_a_prompt_and_traces_it(server):
    name = "py-capitals"
    post(server, "/v1/prompts", {"name": name, **CAPITALS})
    # through the server
    from fmstack.app import prompts

    remote = prompts.complete(name, {"country": "Italy"}, base_url=f"{server.base}/v1", max_tokens=6)
    assert remote.prompt == f"{name}@1" and remote.text and remote.completion_tokens <= 6
    t = httpx.get(f"{server.base}/api/traces/{remote.trace_id}").json()
    assert (t["prompt_name"], t["prompt_version"], t["app"]) == (name, 1, "fmstack-python")
    # in this process, on the server's store (the model loads here too)
    local = Prompts(settings=get_settings().__class__(home=server.home, database_url=None))
    try:
        reply = local.complete(f"{name}@1", {"country": "Italy"}, max_tokens=6)
        with pytest.raises(prompts.MissingVariable, match="'country'"):
            local.complete(name, {}, max_tokens=6)
    finally:
        local.close()
    assert reply.text == remote.text and reply.model == TEST_MODEL
    t = httpx.get(f"{server.base}/api/traces/{reply.trace_id}").json()
    assert (t["prompt_name"], t["prompt_version"], t["endpoint"], t["status"]) == (name, 1, "prompts.complete", "ok")
    assert t["completion_tokens"] == reply.completion_tokens and t["ttft_ms"] > 0
