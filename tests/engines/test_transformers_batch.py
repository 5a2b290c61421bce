"""Batched decoding on the transformers engine (SmolLM2 converted from its GGUF): requests that wait together
decode as one batch and each still gets what it gets alone; response_format through xgrammar, row by row."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap

import jsonschema
import pytest

from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from fmstack.engines.base import GenerationRequest
from fmstack.engines.transformers import TransformersEngine
from tests.conftest import NO_END
from tests.engines.conftest import HF_MODEL
from tests.engines.streams import Result, alone, chat, collect, together

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Say hi", "Write a haiku about rain.", "Count to ten."]
BAN_END = {int(t): v for t, v in NO_END.items()}
# Batched float32 matmuls sum in another order than a single row's (and the batch's padded KV columns add exact
# zeros to the softmax, which is harmless), so a row's logits differ from its logits alone in the last bits
# (~1e-6). Greedy text can then part only where the top two tokens (nearly) tie.
NEAR_TIE = 1e-3
AGE = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"], "additionalProperties": False}
PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
    },
    "required": ["name", "legs"],
}


def load(hf_home, **settings) -> TransformersEngine:
    s = dataclasses.replace(get_settings(), threads=2, **settings)
    spec = Registry(s).get(HF_MODEL)
    return TransformersEngine(spec, spec.local_path(s), s)


@pytest.fixture(scope="module")
def engine(hf_home):
    e = load(hf_home, parallel=8)
    yield e
    e.close()


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def near_tie_or_equal(a: Result, b: Result) -> str | None:
    """None when both runs chose the same tokens, or when they part at a near tie; else why not."""
    ta, tb = [e[0].token for e in a.logprobs], [e[0].token for e in b.logprobs]
    if ta == tb:
        return None
    i = next((i for i in range(min(len(ta), len(tb))) if ta[i] != tb[i]), min(len(ta), len(tb)))
    if i == min(len(ta), len(tb)):
        return f"one run stopped early at token {i}: {a.finish} vs {b.finish}"
    top = {t.token: t.logprob for t in a.logprobs[i][1]}
    gap = top[ta[i]] - top.get(tb[i], float("-inf"))
    if gap <= NEAR_TIE:
        return None
    return f"token {i} after {''.join(ta[:i])!r}: alone chose {ta[i]!r}, batched {tb[i]!r}; gap {gap:.5f}"


def test_greedy_requests_batched_give_what_each_gives_alone(engine):
    requests = [chat(q, max_tokens=20, temperature=0, logprobs=True, top_logprobs=3) for q in QUESTIONS]
    solo = alone(engine, requests)
    engine.runner.widest = 0  # the most rows one step held, from here on (the module's tests share the engine)
    batched = together(engine, requests)
    assert engine.runner.widest == len(QUESTIONS)  # all four decoded in one batch
    for q, a, b in zip(QUESTIONS, solo, batched, strict=True):
        assert a.finish.completion_tokens > 0
        assert (b.finish.reason, b.finish.completion_tokens) == (a.finish.reason, a.finish.completion_tokens)
        problem = near_tie_or_equal(a, b)
        assert problem is None, f"{q!r}: {problem}"
        if a.text == b.text:  # the same tokens with the same log-probabilities, to float32 rounding
            assert [x[0].logprob for x in b.logprobs] == pytest.approx([x[0].logprob for x in a.logprobs], abs=1e-3)


def test_different_sampling_in_one_batch_behaves_as_alone(engine):
    bang = engine.tokenizer.convert_tokens_to_ids("!")
    requests = [
        chat("Tell me a story.", max_tokens=12, temperature=1.0, seed=1),
        chat("Tell me a story.", max_tokens=12, temperature=0.8, top_p=0.9, seed=2),
        GenerationRequest(prompt="1, 2, 3, 4, 5,", max_tokens=20, temperature=0, stop=["8"]),
        chat(
            "How old is the cat? Answer in JSON.",
            max_tokens=32,
            temperature=0.7,
            seed=5,
            response_format=json_schema(AGE),
        ),
        GenerationRequest(prompt="Hello", max_tokens=5, temperature=0.7, seed=1, logit_bias={bang: 100}),
        chat("Write a long story.", max_tokens=3, temperature=0, logit_bias=BAN_END),
    ]
    solo, batched = alone(engine, requests), together(engine, requests)
    assert [r.text for r in batched] == [r.text for r in solo]
    assert [(r.finish.reason, r.finish.completion_tokens) for r in batched] == [
        (r.finish.reason, r.finish.completion_tokens) for r in solo
    ]
    assert solo[0].text != solo[1].text  # each its own seed
    assert "8" not in solo[2].text and solo[2].finish.reason == "stop"
    assert isinstance(json.loads(solo[3].text)["age"], int)
    assert solo[4].text == "!!!!!"
    assert solo[5].finish.reason == "length" and solo[5].finish.completion_tokens == 3


def test_response_format_rows_always_parse_next_to_free_text(engine):
    """Sampled at temperature 1 with several seeds, the schema rows are valid JSON matching their schema every time
    (the schema bounds their length), while the rows without a grammar in the same batch stay free text. Any JSON
    object (json_object) is unbounded, so that row is greedy."""
    requests = [chat("Describe a pet.", max_tokens=100, temperature=0, response_format={"type": "json_object"})]
    for seed in range(3):
        requests += [
            chat("Describe a pet.", max_tokens=100, temperature=1.0, seed=seed, response_format=json_schema(PET)),
            chat("Describe a pet.", max_tokens=12, temperature=1.0, seed=seed),
        ]
    [any_object, *results] = together(engine, requests)
    assert any_object.finish.reason == "stop" and isinstance(json.loads(any_object.text), dict), any_object
    for schema_row, free in zip(results[::2], results[1::2], strict=True):
        assert schema_row.finish.reason == "stop", schema_row
        jsonschema.validate(json.loads(schema_row.text), PET)
        assert not free.text.lstrip().startswith("{"), free.text


def test_cancelled_stream_frees_its_row(hf_home):
    e = load(hf_home, parallel=2)
    try:
        long = chat("Write a long story.", max_tokens=40, temperature=0, logit_bias=BAN_END)
        short = chat("Say hi", max_tokens=8, temperature=0, logit_bias=BAN_END)

        async def go():
            kept = asyncio.ensure_future(collect(e, long))
            cancelled = e.stream(e.prepare(long))
            for _ in range(3):
                await anext(cancelled)
            await cancelled.aclose()
            # two rows: this one is admitted only once the cancelled row has left the batch
            third = await collect(e, short)
            return await kept, third

        kept, third = asyncio.run(go())
        assert kept.finish.completion_tokens == 40 and third.finish.completion_tokens == 8
        assert e.runner.running == 0 and e.runner.widest == 2
        [expected] = alone(e, [short])
        assert third.text == expected.text
    finally:
        e.close()


def test_eval_judge_on_a_transformers_model_gets_json_on_the_first_try(hf_home, tmp_path):
    """The judge's response_format reaches the transformers engine (no parse-and-retry): one judge call a case."""
    from sqlalchemy import select

    from fmstack.app.eval.generate import LocalGenerator
    from fmstack.app.eval.runner import Runner, RunOptions
    from fmstack.app.eval.suite import load_suite
    from fmstack.core.store.schema import Trace
    from fmstack.gateway import Gateway

    suite = tmp_path / "s.yaml"
    suite.write_text(
        textwrap.dedent(
            """
            name: judged
            prompt: "What is the capital of {{ country }}? Answer in one word."
            params: {max_tokens: 6, temperature: 0}
            metrics: [correctness]
            cases:
              - {id: a, vars: {country: France}, reference: Paris}
              - {id: b, vars: {country: Japan}, reference: Tokyo}
            """
        )
    )
    gateway = Gateway.open()
    try:
        options = RunOptions([HF_MODEL], judge_model=HF_MODEL, use_cache=False)
        data = asyncio.run(Runner(gateway.sessions, LocalGenerator(gateway)).run(load_suite(suite), options))
        gateway.writer.flush()
        with gateway.sessions() as s:
            rows = list(s.scalars(select(Trace).where(Trace.eval_run_id == data.id)))
    finally:
        gateway.close()
    scores = [row.scores["correctness"] for row in data.rows]
    assert all(s.error is None and s.value in (0.0, 1.0) for s in scores), scores
    assert len(rows) == 4  # two answers, two verdicts: no retry
