"""A/B serving on a real server with SmolLM2: a route's requests are answered by its variants (sticky by user) and
every trace records the route and the variant; the API refuses bad input naming the field; promotion and rollback
are recorded and served at once, also when made from the CLI in another process; report and /metrics see them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from fmstack.gateway.routes import Route, Variant
from tests.server.test_traces_and_metrics import metric

pytestmark = pytest.mark.slow
A, B = "smollm2-135m-instruct", "smollm2-priced"
ROUTE = "ab-shop"  # not a model's own name: the session server's other tests are not routed
SPLIT = Route(ROUTE, (Variant(A, A, 50), Variant(B, B, 50)))
USERS = {v: [u for u in (f"user-{i}" for i in range(40)) if SPLIT.pick(u).name == v][:2] for v in (A, B)}


def api(server, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.base}/api/ab{path}", timeout=60, **kwargs)


def chat(server, user: str | None = None) -> dict:
    """One short answer through the route; its stored trace."""
    body = {"model": ROUTE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}
    response = httpx.post(
        f"{server.base}/v1/chat/completions", json=body | ({"user": user} if user else {}), timeout=120,
        headers={"X-Fmstack-App": "ab-test"},
    )
    assert response.status_code == 200, response.text
    return httpx.get(f"{server.base}/api/traces/{response.json()['id']}", timeout=30).json()


@pytest.fixture()
def route(server):
    created = api(server, "POST", "/routes", json={"name": ROUTE, "variants": [
        {"model": A, "weight": 50}, {"model": B, "weight": 50}]})
    assert created.status_code == 201, created.text
    yield created.json()
    api(server, "DELETE", f"/routes/{ROUTE}")


def test_every_trace_records_its_route_and_a_sticky_variant(server, route):
    assert route["split"] == f"{A}=50 {B}=50"
    for variant, users in USERS.items():
        for user in users:
            for _ in range(2):
                t = chat(server, user)
                assert (t["route"], t["variant"], t["model"], t["user"]) == (ROUTE, variant, variant, user)
    anonymous = chat(server)
    assert anonymous["route"] == ROUTE and anonymous["variant"] in (A, B) and anonymous["model"] == anonymous["variant"]


def test_bad_input_is_a_4xx_that_names_the_field_and_writes_nothing(server, route):
    def create(variants, name="ab-bad"):
        return api(server, "POST", "/routes", json={"name": name, "variants": variants})

    cases = [
        (create([{"model": A, "weight": 90}, {"model": B, "weight": 20}]), 400, "weight", "sum to 110"),
        (create([{"model": "nope", "weight": 100}]), 400, "variant", "'nope' is not a chat model"),
        (create([{"model": A, "weight": 50}, {"model": A, "weight": 50}]), 400, "variants", "once"),
        (create([{"model": A, "weight": 101}]), 400, "variants.0.weight", ""),
        (create([{"model": A, "weight": 100}], name=ROUTE), 409, "route", "exists"),
        (api(server, "POST", "/routes/nope/promote", json={"variant": A}), 404, "route", "no route 'nope'"),
        (api(server, "POST", f"/routes/{ROUTE}/promote", json={"variant": "x"}), 400, "variant", "no variant 'x'"),
        (api(server, "GET", f"/routes/{ROUTE}/report", params={"baseline": "x"}), 400, "baseline", "no variant"),
    ]
    for response, status, param, words in cases:
        error = response.json()["error"]
        assert (response.status_code, error["param"]) == (status, param), response.text
        assert words in error["message"]
    listed = api(server, "GET", "/routes").json()["data"]
    assert [r["name"] for r in listed if r["name"].startswith("ab-")] == [ROUTE]
    assert api(server, "GET", f"/routes/{ROUTE}").json()["history"][-1]["action"] == "create"  # no change since


def test_promotion_and_rollback_are_recorded_and_served_at_once(server, route):
    user = USERS[A][0]
    promoted = api(server, "POST", f"/routes/{ROUTE}/promote", json={"variant": B})
    assert promoted.status_code == 200 and promoted.json()["split"] == f"{B}=100"
    assert chat(server, user)["variant"] == B
    gated = api(server, "POST", f"/routes/{ROUTE}/promote", json={"variant": A, "gate": True})
    assert gated.status_code == 409 and "the gate needs 30" in gated.json()["error"]["message"]
    rolled = api(server, "POST", f"/routes/{ROUTE}/rollback")
    assert rolled.status_code == 200 and rolled.json()["split"] == f"{A}=50 {B}=50"
    assert chat(server, user)["variant"] == A
    history = api(server, "GET", f"/routes/{ROUTE}").json()["history"][-3:]  # the name's earlier lives come first
    assert [(c["action"], c["after"]) for c in history] == [
        ("create", {A: 50, B: 50}), ("promote", {A: 0, B: 100}), ("rollback", {A: 50, B: 50})
    ]


def test_a_change_made_by_the_cli_reaches_the_running_server(server, route):
    done = subprocess.run(
        [sys.executable, "-m", "fmstack", "ab", "promote", ROUTE, B], env=server.env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)  # the server reads the routes at most once a second
    assert chat(server, USERS[A][0])["variant"] == B


def test_the_report_and_metrics_count_the_route(server, route):
    before = httpx.get(f"{server.base}/metrics").text
    made = {A: [chat(server, u) for u in USERS[A]], B: [chat(server, u) for u in USERS[B]]}
    after = httpx.get(f"{server.base}/metrics").text
    for variant, traces in made.items():
        labels = {"route": ROUTE, "variant": variant, "status": "ok"}
        assert metric(after, "fmstack_ab_requests_total", **labels) - metric(before, "fmstack_ab_requests_total",
                                                                             **labels) == len(traces)
    assert metric(after, "fmstack_ab_request_latency_seconds_count", route=ROUTE, variant=B) >= 2
    since = min(t["created_at"] for ts in made.values() for t in ts)
    report = api(server, "GET", f"/routes/{ROUTE}/report", params={"since": since}).json()
    answered = {v["name"]: v["answered"] for v in report["variants"]}
    assert answered == {A: 2, B: 2} and report["baseline"] == A
    latency = {v["name"]: v["estimates"]["latency"]["mean"] for v in report["variants"]}
    assert latency[B] == pytest.approx(sum(t["latency_ms"] for t in made[B]) / 2)
    assert B in report["verdicts"]


def test_a_stored_prompt_whose_model_is_a_route_is_routed_too(server, route):
    saved = httpx.post(f"{server.base}/v1/prompts", timeout=30, json={
        "name": "ab-greeting", "user": "Say {{ word }}.", "params": {"model": ROUTE, "max_tokens": 3}})
    assert saved.status_code in (200, 201), saved.text
    user = USERS[B][0]
    answer = httpx.post(f"{server.base}/v1/prompts/ab-greeting/chat/completions", timeout=120,
                        json={"variables": {"word": "hi"}, "user": user})
    assert answer.status_code == 200, answer.text
    t = httpx.get(f"{server.base}/api/traces/{answer.json()['id']}", timeout=30).json()
    assert (t["route"], t["variant"], t["model"], t["prompt_name"]) == (ROUTE, B, B, "ab-greeting")


def test_a_prompt_alias_route_splits_its_traffic_between_prompt_versions(server):
    """A route named by a stored prompt's alias: each user's request through the alias renders one version of the
    prompt (sticky), the trace records route, variant and version, and /metrics counts the variants."""
    name, route = "ab-capitals", "ab-capitals@production"
    for user_template in ("Capital of {{ country }}?", "Name the capital city of {{ country }}."):
        saved = httpx.post(f"{server.base}/v1/prompts", timeout=30, json={
            "name": name, "user": user_template, "params": {"model": A, "max_tokens": 3, "temperature": 0}})
        assert saved.status_code in (200, 201), saved.text
    httpx.put(f"{server.base}/v1/prompts/{name}/aliases/production", json={"version": 1}, timeout=30)
    v1, v2 = f"{name}@1", f"{name}@2"
    bad = [
        ([{"prompt": v1, "weight": 50}, {"prompt": f"{name}@7", "weight": 50}], "variant", "no version 7"),
        ([{"prompt": v1, "weight": 50}, {"model": A, "prompt": v2, "weight": 50}], "variants.1", "either"),
        ([{"prompt": v1, "weight": 50}, {"prompt": "ab-greeting@1", "weight": 50}], "variant", "not a version"),
    ]
    for variants, param, words in bad:
        refused = api(server, "POST", "/routes", json={"name": route, "variants": variants})
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, param), refused.text
        assert words in refused.json()["error"]["message"]
    assert api(server, "GET", f"/routes/{route}").status_code == 404  # nothing written
    created = api(server, "POST", "/routes", json={"name": route, "variants": [
        {"prompt": v1, "weight": 50}, {"prompt": v2, "weight": 50}]})
    assert created.status_code == 201, created.text
    assert [(v["name"], v["prompt"]) for v in created.json()["variants"]] == [(v1, v1), (v2, v2)]
    split = Route(route, (Variant(v1, A, 50, v1), Variant(v2, A, 50, v2)))
    users = {v: [u for u in (f"user-{i}" for i in range(40)) if split.pick(u).name == v][:2] for v in (v1, v2)}
    try:
        before = httpx.get(f"{server.base}/metrics").text
        for variant, chosen in users.items():
            for user in chosen:
                for _ in range(2):
                    answer = httpx.post(f"{server.base}/v1/prompts/{route}/chat/completions", timeout=120,
                                        json={"variables": {"country": "France"}, "user": user})
                    assert answer.status_code == 200, answer.text
                    assert answer.headers["x-fmstack-prompt"] == variant
                    t = httpx.get(f"{server.base}/api/traces/{answer.json()['id']}", timeout=30).json()
                    assert (t["route"], t["variant"], t["user"]) == (route, variant, user)
                    assert (t["prompt_name"], str(t["prompt_version"]), t["model"]) == (name, variant[-1], A)
        after = httpx.get(f"{server.base}/metrics").text
        for variant in (v1, v2):
            labels = {"route": route, "variant": variant, "status": "ok"}
            assert metric(after, "fmstack_ab_requests_total", **labels) - metric(
                before, "fmstack_ab_requests_total", **labels) == 4
        pinned = httpx.post(f"{server.base}/v1/prompts/{v2}/chat/completions", timeout=120,
                            json={"variables": {"country": "France"}, "user": users[v1][0]})
        t = httpx.get(f"{server.base}/api/traces/{pinned.json()['id']}", timeout=30).json()
        assert t["route"] is None and str(t["prompt_version"]) == "2"  # a version asked for by number is not routed
        promoted = api(server, "POST", f"/routes/{route}/promote", json={"variant": v2})
        assert promoted.status_code == 200 and promoted.json()["split"] == f"{v2}=100"
        moved = httpx.post(f"{server.base}/v1/prompts/{route}/chat/completions", timeout=120,
                           json={"variables": {"country": "France"}, "user": users[v1][0]})
        assert moved.headers["x-fmstack-prompt"] == v2
    finally:
        api(server, "DELETE", f"/routes/{route}")
    unrouted = httpx.post(f"{server.base}/v1/prompts/{route}/chat/completions", timeout=120,
                          json={"variables": {"country": "France"}, "user": users[v2][0]})
    assert unrouted.headers["x-fmstack-prompt"] == v2  # the route deleted: the alias, moved by the promotion
