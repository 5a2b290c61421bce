"""The transformers engine on SmolLM2 converted from its GGUF (`fmstack models convert`)."""

import asyncio
import json

import pytest

from fmstack.core.config import get_settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import Registry
from fmstack.engines.base import Delta, Finish, GenerationRequest
from fmstack.engines.pool import load_engine
from tests.conftest import NO_END

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(hf_home):
    settings = get_settings()
    registry = Registry(settings)
    hf = load_engine(registry.get("smollm2-hf"), settings)
    gguf = load_engine(registry.get("smollm2-135m-instruct"), settings)
    yield hf, gguf, hf_home
    hf.close()
    gguf.close()


def run(engine, request: GenerationRequest) -> tuple[str, Finish]:
    async def go():
        events = [e async for e in engine.stream(engine.prepare(request))]
        return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]

    return asyncio.run(go())


def test_conversion_writes_a_checkpoint_and_registers_it(engines):
    _, _, home = engines
    out = home / "models" / "smollm2-hf"
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
    assert Registry(get_settings()).get("smollm2-hf").engine == "transformers"


def first_token_logprobs(engine, request: GenerationRequest) -> dict[str, float]:
    async def go():
        async for event in engine.stream(engine.prepare(request)):
            if isinstance(event, Delta) and event.logprobs:
                return {t.token: t.logprob for t in event.logprobs[0][1]}

    return asyncio.run(go())


@pytest.mark.parametrize("question", ["What is the capital of France?", "Say hi", "Write a haiku about rain."])
def test_parity_with_gguf_next_token_distribution(engines, question):
    """Q4_1 dequantized to float32 under PyTorch vs llama.cpp's Q4_1 kernels: same prompt tokens, and the same
    next-token distribution within quantization noise (greedy text may differ where top tokens nearly tie)."""
    hf, gguf, _ = engines
    request = GenerationRequest(
        messages=[{"role": "user", "content": question}], max_tokens=1, temperature=0, logprobs=True, top_logprobs=5
    )
    assert hf.prepare(request).tokens == gguf.prepare(request).tokens
    ours, reference = first_token_logprobs(hf, request), first_token_logprobs(gguf, request)
    shared = set(ours) & set(reference)
    assert len(shared) >= 4, (ours, reference)
    assert max(abs(ours[t] - reference[t]) for t in shared) < 0.3, (ours, reference)


def test_generates_to_max_tokens(engines):
    hf, _, _ = engines
    text, finish = run(
        hf, GenerationRequest(messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=6, temperature=0)
    )
    assert finish.completion_tokens == 6 and finish.reason == "length" and text.strip()


def test_seeded_sampling_repeats_and_logprobs(engines):
    hf, _, _ = engines
    request = GenerationRequest(
        prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=11, logprobs=True, top_logprobs=2
    )
    first, second = run(hf, request), run(hf, request)
    assert first[0] == second[0]

    async def logprobs():
        return [lp async for e in hf.stream(hf.prepare(request)) if isinstance(e, Delta) for lp in e.logprobs]

    entries = asyncio.run(logprobs())
    assert len(entries) == 8 and all(tok.logprob <= 0 and len(top) == 2 for tok, top in entries)


def test_logit_bias_forces_a_token_on_both_engines(engines):
    hf, gguf, _ = engines
    assert hf.eos_ids <= {int(t) for t in NO_END}  # the ids tests ban to make generations run long
    bang = hf.tokenizer.convert_tokens_to_ids("!")
    request = GenerationRequest(prompt="Hello", max_tokens=5, temperature=0.7, seed=1, logit_bias={bang: 100})
    assert run(hf, request)[0] == run(gguf, request)[0] == "!!!!!"
    with pytest.raises(InvalidRequest, match="outside this model's vocabulary"):
        hf.prepare(GenerationRequest(prompt="Hello", logit_bias={10**9: 1}))


def test_stop_and_json_mode(engines):
    hf, _, _ = engines
    text, finish = run(hf, GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=20, temperature=0, stop=["8"]))
    assert "8" not in text and finish.reason == "stop"
    ask = [{"role": "user", "content": "Describe a cat."}]
    text, finish = run(
        hf,
        GenerationRequest(messages=ask, max_tokens=100, temperature=0, response_format={"type": "json_object"}),
    )
    assert finish.reason == "stop" and isinstance(json.loads(text), dict), text
    with pytest.raises(InvalidRequest, match="Unsupported JSON schema"):
        hf.prepare(
            GenerationRequest(
                prompt="x", response_format={"type": "json_schema", "json_schema": {"schema": {"type": "foo"}}}
            )
        )
