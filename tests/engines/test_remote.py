"""The `openai` engine: a gateway fmstack in front of a second server on loopback gets the same traces,
metrics and cost accounting as a local model."""

import httpx
import openai
import pytest

from tests.conftest import TEST_MODEL, Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("gateway")
    (home / "models.toml").write_text(f"""
[models."remote-smol"]
engine = "openai"
base_url = "{server.base}/v1"
api_key_env = "REMOTE_KEY"
remote_model = "{TEST_MODEL}"
context_length = 8192
price_input = 0.5
price_output = 1.5
""")
    gw = Server(home, model="remote-smol", env={"REMOTE_KEY": "secret"})
    yield gw
    gw.stop()


def test_remote_model_is_served_traced_and_costed(gateway, server):
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="x")
    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model="remote-smol", messages=messages, max_tokens=8, temperature=0, seed=1)
    direct = openai.OpenAI(base_url=f"{server.base}/v1", api_key="x").chat.completions.create(
        model=TEST_MODEL, messages=messages, max_tokens=8, temperature=0, seed=1
    )
    assert r.choices[0].message.content == direct.choices[0].message.content
    assert r.usage.completion_tokens == direct.usage.completion_tokens > 0
    t = httpx.get(f"{gateway.base}/api/traces/{r.id}").json()
    assert t["engine"] == "openai" and t["status"] == "ok" and t["ttft_ms"] > 0
    assert t["cost"] == pytest.approx((r.usage.prompt_tokens * 0.5 + r.usage.completion_tokens * 1.5) / 1e6)
    assert 'fmstack_cost_usd_total{model="remote-smol"}' in httpx.get(f"{gateway.base}/metrics").text


def test_remote_streaming_and_errors_pass_through(gateway):
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="x")
    chunks = list(
        client.chat.completions.create(
            model="remote-smol",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens > 0
    long = "word " * 9000  # more than the remote's 8192-token context
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="remote-smol", messages=[{"role": "user", "content": long}])
    assert info.value.status_code == 400 and "context" in info.value.message
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.APIStatusError) as info:  # streaming too: the error comes before any token
        list(
            client.chat.completions.create(
                model="remote-smol", messages=[{"role": "user", "content": long}], stream=True
            )
        )
    assert info.value.status_code == 400
