"""`/v1/completions` as eval harnesses call it: `echo` puts the prompt before the answer, and with `logprobs` the
prompt's tokens are scored (the legacy `tokens` / `token_logprobs` / `top_logprobs` / `text_offset` layout, the
first token's log-probability `null`); `max_tokens: 0` scores the prompt only. `suffix` is refused."""

from types import SimpleNamespace

import httpx
import openai
import pytest

from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import GenerationRequest, check_supported
from tests.conftest import TEST_MODEL

PROMPT = "Question: What is the capital of France?\nAnswer: Paris"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="anything")


def check_layout(logprobs, text: str) -> None:
    """Offsets index the choice's text, and each token's text is there."""
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert len(logprobs.text_offset) == len(logprobs.tokens)
    for token, offset in zip(logprobs.tokens, logprobs.text_offset, strict=True):
        assert text[offset : offset + len(token)] == token


@pytest.mark.slow
def test_max_tokens_0_with_echo_scores_the_prompt_only(client):
    r = client.completions.create(model=TEST_MODEL, prompt=PROMPT, echo=True, logprobs=2, max_tokens=0)
    [choice] = r.choices
    lp = choice.logprobs
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert "".join(lp.tokens) == PROMPT and len(lp.tokens) == r.usage.prompt_tokens
    assert r.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    assert all(x < 0 for x in lp.token_logprobs[1:])
    assert all(
        len(top) <= 2 and max(top.values()) >= lp.token_logprobs[i + 1] - 1e-4
        for i, top in enumerate(lp.top_logprobs[1:])
    )
    assert lp.text_offset[0] == 0
    check_layout(lp, choice.text)
    # the same prompt scored again, with one token generated after it: the same prompt log-probabilities
    again = client.completions.create(
        model=TEST_MODEL, prompt=PROMPT, echo=True, logprobs=1, max_tokens=1, temperature=0
    ).choices[0]
    n = len(lp.tokens)
    assert again.text.startswith(PROMPT) and again.logprobs.tokens[:n] == lp.tokens
    assert again.logprobs.token_logprobs[:n] == pytest.approx(lp.token_logprobs, abs=1e-4)
    assert len(again.logprobs.tokens) in (n, n + 1)  # the generated token (none when it was the end token)
    if len(again.logprobs.tokens) > n:
        assert again.logprobs.text_offset[n] == len(PROMPT)
    check_layout(again.logprobs, again.text)


@pytest.mark.slow
def test_the_prompt_scores_match_what_the_model_said_generating(client):
    """A greedy answer's own log-probabilities, scored again as part of an echoed prompt, are the same numbers."""
    prompt = "The three primary colors are"
    made = client.completions.create(model=TEST_MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=1)
    text = made.choices[0].text
    scored = client.completions.create(model=TEST_MODEL, prompt=prompt + text, echo=True, logprobs=1, max_tokens=0)
    lp = scored.choices[0].logprobs
    generated = made.choices[0].logprobs
    k = len(generated.tokens)
    if lp.tokens[-k:] != generated.tokens:
        pytest.skip("the answer tokenizes differently when read back as a prompt")
    # batch shapes differ (one prefill vs token by token), so llama.cpp's kernels round differently
    assert lp.token_logprobs[-k:] == pytest.approx(generated.token_logprobs, abs=0.3)


@pytest.mark.slow
def test_echo_streams_the_prompt_first(client):
    chunks = list(client.completions.create(model=TEST_MODEL, prompt=PROMPT, echo=True, max_tokens=4, stream=True))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert texts[0] == PROMPT and "".join(texts).startswith(PROMPT)
    scored = list(
        client.completions.create(
            model=TEST_MODEL, prompt=PROMPT, echo=True, logprobs=0, max_tokens=3, temperature=0, stream=True
        )
    )
    first = scored[0].choices[0]
    assert first.text == PROMPT and first.logprobs.token_logprobs[0] is None
    assert "".join(first.logprobs.tokens) == PROMPT
    rest = [c.choices[0] for c in scored[1:] if c.choices and c.choices[0].text]
    assert all(c.logprobs.text_offset[0] >= len(PROMPT) for c in rest)


@pytest.mark.slow
def test_echo_without_logprobs_and_plain_completions(client):
    r = client.completions.create(model=TEST_MODEL, prompt=PROMPT, echo=True, max_tokens=3, temperature=0)
    plain = client.completions.create(model=TEST_MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
    assert r.choices[0].text == PROMPT + plain.choices[0].text and r.choices[0].logprobs is None
    only = client.completions.create(model=TEST_MODEL, prompt=[PROMPT], echo=True, max_tokens=0)
    assert only.choices[0].text == PROMPT and only.usage.completion_tokens == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"suffix": " is the answer."}, "suffix"),
        ({"max_tokens": 0}, "max_tokens"),  # nothing to generate and nothing to echo
        ({"max_tokens": -1}, "max_tokens"),
        ({"echo": True, "logprobs": 21}, "logprobs"),
    ],
)
def test_bad_input_names_the_field(server, body, param):
    r = httpx.post(f"{server.base}/v1/completions", json={"model": TEST_MODEL, "prompt": PROMPT} | body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_engines_that_cannot_score_prompts_refuse_echo_with_logprobs():
    """The transformers engine does not return prompt log-probabilities: a 400 naming `echo`, before anything runs."""
    from fmstack.engines.transformers import TransformersEngine

    assert not TransformersEngine.scores_prompts
    spec = SimpleNamespace(name="smollm2-hf", engine="transformers")
    engine = SimpleNamespace(scores_prompts=False, calls_tools=False, spec=spec)
    with pytest.raises(InvalidRequest) as refused:
        check_supported(engine, GenerationRequest(prompt="hi", max_tokens=0, prompt_logprobs=True))
    assert refused.value.param == "echo" and "smollm2-hf" in refused.value.message
    check_supported(engine, GenerationRequest(prompt="hi", max_tokens=0))  # echo alone is text: any engine


def test_engines_that_cannot_call_tools_refuse_them_rather_than_answer_without_them():
    from fmstack.engines.llamacpp import LlamaCppEngine
    from fmstack.engines.transformers import TransformersEngine

    assert LlamaCppEngine.calls_tools and not TransformersEngine.calls_tools
    spec = SimpleNamespace(name="smollm2-hf", engine="transformers")
    engine = SimpleNamespace(scores_prompts=False, calls_tools=False, spec=spec)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(InvalidRequest) as refused:
        check_supported(engine, GenerationRequest(messages=[{"role": "user", "content": "hi"}], tools=tools))
    assert refused.value.param == "tools" and "smollm2-hf" in refused.value.message
