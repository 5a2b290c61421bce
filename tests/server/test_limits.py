"""Production limits: a bounded queue answering 429, disconnects stopping generation, timeouts."""

import concurrent.futures
import json
import socket
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
    body = {
        "model": TEST_MODEL,
        "messages": LONG,
        "max_tokens": 3000,
        "stream": True,
        "temperature": 1.0,
        "seed": 3,
        "logit_bias": NO_END,
    }
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body, timeout=60) as r:
        trace_id = r.headers["x-fmstack-trace-id"]
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
    assert chat(server.base, 1).status_code == 200
    deadline = time.monotonic() + 10
    while trace(server.base, trace_id).get("status") != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    cancelled = trace(server.base, trace_id)
    assert cancelled["status"] == "cancelled" and cancelled["response_text"]
    assert cancelled["prompt_tokens"] > 10 and 0 < cancelled["completion_tokens"] < 3000  # usage still counted


def in_flight(base: str) -> float:
    lines = httpx.get(f"{base}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("fmstack_requests_in_flight{"))


def test_non_streaming_client_that_leaves_stops_its_generation(server):
    """The client leaves once the server is generating for it (not on a timer: on a busy machine a timer can fire
    before the server has read the request, and a request never read is never started). The end token is barred:
    a sampled story may end on its own before a loaded server notices the client left, and then `ok` is right."""
    body = {"model": TEST_MODEL, "messages": LONG, "max_tokens": 3000, "temperature": 1.0, "seed": 9}
    body = json.dumps(body | {"logit_bias": NO_END})
    host, port = server.base.removeprefix("http://").split(":")
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"X-Fmstack-App: leaver\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port))) as client:
        client.sendall(head.encode() + body.encode())
        deadline = time.monotonic() + 60
        while in_flight(server.base) < 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 60
    while not (traces := httpx.get(f"{server.base}/api/traces", params={"app": "leaver"}).json()["data"]):
        assert time.monotonic() < deadline, "the request that lost its client was never traced"
        time.sleep(0.1)
    assert traces[0]["status"] == "cancelled" and traces[0]["completion_tokens"] < 3000
    assert chat(server.base, 1).status_code == 200  # and it keeps serving


def test_request_timeout(tmp_path):
    """8 s: 3000 tokens take SmolLM2 25 s at best, and a 1-token answer has room on a loaded machine too."""
    srv = Server(make_home(tmp_path), env={"FMSTACK_REQUEST_TIMEOUT": "8"})
    try:
        start = time.monotonic()
        r = chat(srv.base, 3000, logit_bias=NO_END)  # tens of seconds of decoding: it cannot stop early
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        assert time.monotonic() - start < 15
        assert chat(srv.base, 1).status_code == 200
        last = httpx.get(f"{srv.base}/api/traces", params={"status": "error"}).json()["data"][0]
        assert last["status_code"] == 504 and "timeout" in last["error"]
    finally:
        srv.stop()
