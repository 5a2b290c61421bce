"""API keys through a real server (`fmstack up --host 0.0.0.0` with SmolLM2 and keys made before it started):
401 without a good key, 403 without the scope, 429 over rpm/tpm (Retry-After) and over budget
(`insufficient_quota`), limits that survive a restart, the app and key name taken from the key, revoke and rotate
at once, the secret never stored; a loopback server without keys unchanged; other interfaces refused without a
key unless --insecure; the pages asking for a key."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from fmstack.core.config import Settings
from fmstack.core.keys import KeyStore
from fmstack.core.store import open_store
from fmstack.server.auth import rule_for
from tests.conftest import TEST_MODEL, Server, make_home

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hi"}]
EXPOSED = ("--host", "0.0.0.0")
KEYS = {  # name: KeyStore.create arguments
    "admin": dict(scopes=["admin"]),
    "bot": dict(app="shop-bot", scopes=["inference"]),
    "fb": dict(scopes=["feedback"]),
    "limited": dict(scopes=["inference"], rpm=2),
    "tokens": dict(scopes=["inference"], tpm=5),
    "spender": dict(scopes=["inference"], budget="0.000001/day"),
    "turn": dict(scopes=["inference"]),
    "gone": dict(),
}


class Keyed:
    """A server on 0.0.0.0 whose keys were made before it started ('gone' revoked); `restart` keeps the store."""

    def __init__(self, home):
        self.home = home
        store = KeyStore(open_store(Settings(home=home, database_url=None)))
        self.secrets = {name: store.create(name, **args).secret for name, args in KEYS.items()}
        store.revoke("gone")
        self.server = Server(home, args=EXPOSED)

    def restart(self) -> None:
        self.server.stop()
        self.server = Server(self.home, args=EXPOSED)

    def request(self, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        """`key`: a key's name (its secret is sent), or a raw Authorization value when it has a space."""
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = key if " " in key else f"Bearer {self.secrets.get(key, key)}"
        return httpx.request(method, f"{self.server.base}{path}", headers=headers, timeout=120, **kwargs)

    def chat(self, key: str | None, model: str = TEST_MODEL, **kwargs) -> httpx.Response:
        body = {"model": model, "messages": HELLO, "max_tokens": 2}
        return self.request("POST", CHAT, key, json=body, **kwargs)

    def trace(self, trace_id: str) -> dict:
        resp = self.request("GET", f"/api/traces/{trace_id}", "admin")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def trace_count(self) -> int:
        return len(self.request("GET", "/api/traces", "admin", params={"limit": 1000}).json()["data"])


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    keyed = Keyed(make_home(tmp_path_factory.mktemp("keyed")))
    yield keyed
    keyed.server.stop()


@pytest.mark.parametrize(
    "method, path, scope, metered",
    [
        ("POST", "/v1/chat/completions", "inference", True),
        ("POST", "/v1/responses", "inference", True),
        ("POST", "/v1/rag/docs/chat/completions", "inference", True),
        ("POST", "/v1/prompts/capitals@production/chat/completions", "inference", True),
        ("GET", "/v1/models/smollm2-135m-instruct", "inference", False),
        ("GET", "/v1/reviews/pending/chatcmpl-1", "inference", False),
        ("POST", "/v1/feedback", "feedback", False),
        ("GET", "/api/traces", "admin", False),
        ("POST", "/v1/prompts", "admin", False),
        ("GET", "/v1/models/x", "inference", False),
        ("DELETE", "/v1/models/x", "admin", False),
        ("POST", "/v1/some/route/added/later", "admin", False),
    ],
)
def test_each_route_has_its_scope_and_unlisted_ones_need_admin(method, path, scope, metered):
    rule = rule_for(method, path)
    assert (rule.scope, rule.metered) == (scope, metered)


def error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


@pytest.mark.parametrize(
    "authorization, says",
    [
        (None, "requires an API key"),
        ("Basic dXNlcjpwdw==", "must read `Bearer KEY`"),
        ("Bearer not-needed", "not in fmstack's format"),
        ("Bearer fmk_" + "A" * 43, "Incorrect API key fmk_AAAAAAAA…"),
        ("gone", "'gone' was revoked"),
    ],
)
def test_a_missing_bad_or_revoked_key_is_401(keyed, authorization, says):
    for method, path in (("POST", CHAT), ("GET", "/v1/models"), ("GET", "/api/traces"), ("POST", "/v1/feedback")):
        resp = keyed.request(method, path, authorization, json={"model": TEST_MODEL, "messages": HELLO})
        body = error(resp, 401)
        assert body["code"] == "invalid_api_key" and says in body["message"], (path, body)
        assert resp.headers["www-authenticate"] == "Bearer" and resp.headers["x-request-id"]
        assert "A" * 20 not in body["message"]  # the key is never echoed in full


def test_refused_requests_are_not_traced_and_open_routes_stay_open(keyed):
    before = keyed.trace_count()
    error(keyed.request("POST", CHAT, content=b'{"model": '), 401)  # not a 400: the body is never read
    error(keyed.chat("fb"), 403)
    assert keyed.trace_count() == before
    for path in ("/healthz", "/metrics", "/", "/traces", "/prompts", "/openapi.json", "/static/common.js"):
        assert keyed.request("GET", path).status_code == 200, path


def test_each_scope_opens_its_routes_only(keyed):
    answered = keyed.chat("bot")
    assert answered.status_code == 200, answered.text
    trace_id = answered.json()["id"]
    denied = error(keyed.request("GET", "/api/traces", "bot"), 403)
    assert denied["type"] == "permission_error" and denied["code"] == "missing_scope"
    assert "'admin' scope" in denied["message"] and "'bot'" in denied["message"]
    error(keyed.request("POST", "/v1/keys", "bot", json={"name": "mine"}), 403)
    error(keyed.request("POST", "/v1/prompts", "bot", json={"name": "p", "user": "hi"}), 403)
    assert "'inference' scope" in error(keyed.chat("fb"), 403)["message"]
    error(keyed.request("POST", "/v1/feedback", "bot", json={"trace_id": trace_id, "rating": 1}), 403)
    given = keyed.request("POST", "/v1/feedback", "fb", json={"trace_id": trace_id, "rating": 1})
    assert given.status_code == 200, given.text
    assert keyed.request("GET", "/v1/models", "bot").status_code == 200
    assert keyed.chat("admin").status_code == 200  # admin may do everything
    assert keyed.request("POST", "/v1/prompts", "admin", json={"name": "p", "user": "hi"}).status_code == 201
    assert keyed.trace(trace_id)["feedback"][0]["rating"] == 1


def test_the_app_and_key_name_come_from_the_key_not_the_headers(keyed):
    client = openai.OpenAI(
        base_url=f"{keyed.server.base}/v1", api_key=keyed.secrets["bot"], default_headers={"X-Fmstack-App": "forged"}
    )
    reply = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2)
    trace = keyed.trace(reply.id)
    assert (trace["app"], trace["key_name"]) == ("shop-bot", "bot")
    assert all(secret not in str(trace) for secret in keyed.secrets.values())
    bad = openai.OpenAI(base_url=f"{keyed.server.base}/v1", api_key="fmk_" + "b" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=2)


def test_over_tokens_per_minute_is_429_with_retry_after(keyed):
    first = keyed.chat("tokens")
    assert first.status_code == 200, first.text
    keyed.trace(first.json()["id"])  # committed: the next check reads it
    resp = keyed.chat("tokens")
    body = error(resp, 429)
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded" and "tokens" in body["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 60


def test_over_budget_is_429_insufficient_quota(keyed):
    first = keyed.chat("spender", model="smollm2-priced")
    assert first.status_code == 200, first.text
    assert keyed.trace(first.json()["id"])["cost"] > 0.000001
    resp = keyed.chat("spender", model="smollm2-priced")
    body = error(resp, 429)
    assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota"
    assert "per day budget" in body["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 86400  # until midnight UTC


def test_rpm_and_budget_survive_a_restart(keyed):
    spent = keyed.chat("spender", model="smollm2-priced")  # over budget now, if it was not already
    if spent.status_code == 200:
        keyed.trace(spent.json()["id"])
    assert [keyed.chat("limited").status_code for _ in range(2)] == [200, 200]
    refused = keyed.chat("limited")
    assert error(refused, 429)["code"] == "rate_limit_exceeded" and 1 <= int(refused.headers["retry-after"]) <= 60
    keyed.restart()
    still = keyed.chat("limited")
    assert error(still, 429)["code"] == "rate_limit_exceeded", "the last minute's requests come from the traces"
    assert error(keyed.chat("spender", model="smollm2-priced"), 429)["code"] == "insufficient_quota"
    assert keyed.chat("bot").status_code == 200


def test_rotate_and_revoke_take_effect_at_once(keyed):
    old = keyed.secrets["turn"]
    rotated = keyed.request("POST", "/v1/keys/turn/rotate", "admin")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert "Incorrect API key" in error(keyed.chat(old), 401)["message"]
    answered = keyed.chat(new)
    assert answered.status_code == 200 and keyed.trace(answered.json()["id"])["key_name"] == "turn"
    cli = [sys.executable, "-m", "fmstack", "keys", "revoke", "turn"]  # another process, the same store
    subprocess.run(cli, env=keyed.server.env, check=True, capture_output=True)
    assert "revoked" in error(keyed.chat(new), 401)["message"]
    listed = {k["name"]: k for k in keyed.request("GET", "/v1/keys", "admin").json()["data"]}
    assert listed["turn"]["status"] == "revoked" and all("secret" not in k for k in listed.values())


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"name": "made", "scopes": ["inference", "write"]}, 400, "scopes"),
        ({"name": "made", "budget": "5/week"}, 400, "budget"),
        ({"name": "made", "rpm": 0}, 400, "rpm"),
        ({"name": "made", "tpm": 2**70}, 400, "tpm"),  # beyond the store's INTEGER: was a 500
        ({"name": "made mine"}, 400, "name"),
        ({"name": "bot"}, 409, "name"),
        ({"name": "made", "colour": "red"}, 400, "colour"),
    ],
)
def test_bad_keys_over_http_name_the_field_and_write_nothing(keyed, body, status, param):
    assert error(keyed.request("POST", "/v1/keys", "admin", json=body), status)["param"] == param
    names = [k["name"] for k in keyed.request("GET", "/v1/keys", "admin").json()["data"]]
    assert "made" not in names and names.count("bot") == 1


def test_a_key_made_over_http_works_at_once(keyed):
    made = keyed.request("POST", "/v1/keys", "admin", json={"name": "made", "app": "web", "scopes": ["inference"]})
    assert made.status_code == 201, made.text
    answered = keyed.chat(made.json()["secret"])
    assert answered.status_code == 200 and keyed.trace(answered.json()["id"])["app"] == "web"


def test_no_secret_is_ever_written_to_the_store(keyed):
    stored = b"".join(path.read_bytes() for path in keyed.home.glob("fmstack.db*"))
    assert stored and not [name for name, secret in keyed.secrets.items() if secret.encode() in stored]


def test_the_pages_ask_for_a_key_once_and_keep_it(keyed, browser):
    context = browser.new_context()
    page = context.new_page()
    asked: list[str] = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept(keyed.secrets["admin"])

    page.on("dialog", answer)
    page.goto(f"{keyed.server.base}/traces")
    page.locator("tr.trace-row").first.wait_for(timeout=30_000)
    assert len(asked) == 1 and "requires an API key" in asked[0]
    page.goto(f"{keyed.server.base}/")
    page.locator(f"#model option[value='{TEST_MODEL}']").wait_for(state="attached", timeout=30_000)
    assert len(asked) == 1  # kept in localStorage
    context.close()


def test_loopback_without_keys_is_unchanged(server):
    for authorization in ({}, {"Authorization": "Bearer not-needed"}):  # what OpenAI clients send
        headers = {"X-Fmstack-App": "loopback-app"} | authorization
        body = {"model": TEST_MODEL, "messages": HELLO, "max_tokens": 2}
        resp = httpx.post(f"{server.base}{CHAT}", json=body, headers=headers, timeout=120)
        assert resp.status_code == 200, resp.text
        trace = httpx.get(f"{server.base}/api/traces/{resp.json()['id']}", timeout=30).json()
        assert (trace["app"], trace["key_name"]) == ("loopback-app", None)
    made = httpx.post(f"{server.base}/v1/keys", json={"name": "intruder", "scopes": ["admin"]}, timeout=30)
    assert error(made, 403)["code"] == "admin_key_required" and "fmstack keys create" in made.text


def test_other_interfaces_need_a_key_or_insecure_and_a_first_key_turns_auth_on(tmp_path):
    home = make_home(tmp_path)
    env = os.environ | {"FMSTACK_HOME": str(home)}
    refused = subprocess.run(
        [sys.executable, "-m", "fmstack", "up", *EXPOSED], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "fmstack keys create" in refused.stderr and "--insecure" in refused.stderr
    server = Server(home, args=(*EXPOSED, "--insecure"))
    try:
        body = {"model": TEST_MODEL, "messages": HELLO, "max_tokens": 1}
        assert httpx.post(f"{server.base}{CHAT}", json=body, timeout=120).status_code == 200
        cli = [sys.executable, "-m", "fmstack", "keys", "create", "--name", "first"]
        subprocess.run(cli, env=env, check=True, capture_output=True)
        time.sleep(1.5)  # a running server looks for a first key every second
        assert error(httpx.post(f"{server.base}{CHAT}", json=body, timeout=120), 401)["code"] == "invalid_api_key"
    finally:
        server.stop()
    assert "without API keys (--insecure)" in server.proc.stdout.read()
