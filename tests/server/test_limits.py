"""Production limits: a bounded queue answering 429, disconnects stopping generation, timeouts."""

import concurrent.futures
import time

import httpx
import pytest

from tests.conftest import NO_END, TEST_MODEL, Server, make_home

pytestmark = pytest.mark.slow
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


def chat(base: str, max_tokens: int, **extra) -> httpx.Response:
    body = {"model": TEST_MODEL, "messages": LONG, "max_tokens": max_tokens} | extra
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def trace(base: str, trace_id: str) -> dict:
    return httpx.get(f"{base}/api/traces/{trace_id}").json()


def test_burst_past_the_queue_gets_429_with_retry_after(server):
    """The fixture's server queues at most 4 requests behind the one decoding."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: chat(server.base, 48), range(16)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 5 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["error"]["type"] == "rate_limit_error"
    assert chat(server.base, 2).status_code == 200  # and it keeps serving
    statuses = [t["status_code"] for t in httpx.get(f"{server.base}/api/traces", params={"limit": 18}).json()["data"]]
    assert statuses.count(429) == codes.count(429)


def test_client_disconnect_stops_generation_at_once(server):
    body = {"model": TEST_MODEL, "messages": LONG, "max_tokens": 3000, "stream": True, "temperature": 1.0, "seed": 3}
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body, timeout=60) as r:
        trace_id = r.headers["x-fmstack-trace-id"]
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    # the worker is free again almost at once: 3000 tokens would have taken tens of seconds
    start = time.monotonic()
    assert chat(server.base, 1).status_code == 200
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 10
    while trace(server.base, trace_id).get("status") != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    cancelled = trace(server.base, trace_id)
    assert cancelled["status"] == "cancelled" and cancelled["response_text"]
    assert cancelled["prompt_tokens"] > 10 and 0 < cancelled["completion_tokens"] < 3000  # usage still counted


def test_non_streaming_client_that_leaves_stops_its_generation(server):
    body = {"model": TEST_MODEL, "messages": LONG, "max_tokens": 3000, "temperature": 1.0, "seed": 9}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=1.5, headers={"X-Fmstack-App": "leaver"})
    start = time.monotonic()
    assert chat(server.base, 1).status_code == 200  # not stuck behind 3000 tokens nobody will read
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        traces = httpx.get(f"{server.base}/api/traces", params={"app": "leaver"}).json()["data"]
        if traces and traces[0]["status"] == "cancelled":
            break
        time.sleep(0.2)
    assert traces[0]["status"] == "cancelled" and traces[0]["completion_tokens"] < 3000


def test_request_timeout(tmp_path):
    srv = Server(make_home(tmp_path), env={"FMSTACK_REQUEST_TIMEOUT": "3"})
    try:
        start = time.monotonic()
        r = chat(srv.base, 3000, logit_bias=NO_END)  # tens of seconds of decoding: it cannot stop early
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        assert time.monotonic() - start < 10
        assert chat(srv.base, 1).status_code == 200
        last = httpx.get(f"{srv.base}/api/traces", params={"status": "error"}).json()["data"][0]
        assert last["status_code"] == 504 and "timeout" in last["error"]
    finally:
        srv.stop()
