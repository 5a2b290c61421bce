"""The runner with a scripted generator: matrix, errors, cache, storage, gate, judges and position bias."""

import asyncio
import json
import textwrap

import pytest

from fmstack.app.eval.generate import Generated
from fmstack.app.eval.runner import Runner, RunOptions, gate, load_run
from fmstack.app.eval.suite import load_suite
from fmstack.core.config import get_settings
from fmstack.core.store import open_store

ANSWERS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima"}


class Scripted:
    """Answers capitals; fails on Peru for model 'flaky'; as a judge, follows `judge_replies` in order."""

    def __init__(self, judge_replies=None):
        self.calls = []
        self.judge_replies = list(judge_replies or [])

    async def generate(self, model, messages, params, run_id=None):
        self.calls.append((model, messages))
        text = messages[-1]["content"]
        if model == "judge":
            reply = self.judge_replies.pop(0) if len(self.judge_replies) > 1 else self.judge_replies[0]
            return Generated(reply(text) if callable(reply) else reply, 1.0, 10, 5, 0.0)
        country = next(c for c in ANSWERS if c in text)
        if model == "flaky" and country == "Peru":
            raise RuntimeError("engine exploded")
        answer = ANSWERS[country] if model != "wrong" else "Berlin"
        return Generated(answer, 5.0, 12, 2, 0.001)


def suite_file(tmp_path, extra_metrics=""):
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: capitals
        prompt: "Capital of {{{{ c }}}}?"
        metrics: [{{name: exact_match, threshold: 1}}{extra_metrics}]
        judge: {{model: judge}}
        cases:
          - {{id: fr, vars: {{c: France}}, reference: Paris}}
          - {{id: jp, vars: {{c: Japan}}, reference: Tokyo}}
          - {{id: pe, vars: {{c: Peru}}, reference: Lima}}
    """)
    )
    return path


def run(tmp_path, generator, models, extra_metrics="", use_cache=True, concurrency=4):
    sessions = open_store(get_settings())
    suite = load_suite(suite_file(tmp_path, extra_metrics))
    options = RunOptions(models, concurrency=concurrency, use_cache=use_cache)
    data = asyncio.run(Runner(sessions, generator).run(suite, options))
    return sessions, data


def test_matrix_errors_storage_and_gate(home, tmp_path):
    generator = Scripted()
    sessions, data = run(tmp_path, generator, ["good", "flaky", "wrong"])
    assert len(data.rows) == 9
    by = {(r.model, r.case_id): r for r in data.rows}
    assert by["flaky", "pe"].error == "RuntimeError: engine exploded" and by["flaky", "fr"].output == "Paris"
    assert by["good", "pe"].scores["exact_match≥1"].passed is True
    assert by["wrong", "fr"].scores["exact_match≥1"].value == 0
    assert by["good", "fr"].cost == pytest.approx(0.001)
    stored = load_run(sessions, data.id)
    assert {(r.model, r.case_id, r.output, r.error) for r in stored.rows} == {
        (r.model, r.case_id, r.output, r.error) for r in data.rows
    }
    failures = gate(stored)
    assert len(failures) == 2 and any(f.startswith("flaky") for f in failures)
    assert any(f.startswith("wrong") and "0%" in f for f in failures)


def test_unchanged_rerun_is_served_from_the_cache(home, tmp_path):
    first = Scripted()
    run(tmp_path, first, ["good"])
    second = Scripted()
    _, data = run(tmp_path, second, ["good"])
    assert second.calls == [] and all(r.cached for r in data.rows)
    third = Scripted()
    run(tmp_path, third, ["good"], use_cache=False)
    assert len(third.calls) == 3


def verdict(score):
    return json.dumps({"reason": "because", "score": score})


def test_judge_reply_is_retried_then_recorded_as_error(home, tmp_path):
    generator = Scripted(judge_replies=["not json", "still not", verdict(4)])
    _, data = run(tmp_path, generator, ["good"], ", {name: rubric, retries: 2}", concurrency=1)
    scores = [r.scores["rubric"] for r in data.rows]
    assert scores[0].value == 4 and scores[0].reason == "because"
    assert [s.value for s in scores] == [4, 4, 4]
    retried = [m for _, m in generator.calls if len(m) > 2]
    assert retried and "not a JSON object" in retried[-1][-1]["content"]  # the judge saw its bad reply
    never = Scripted(judge_replies=["I think it is fine"])
    _, data = run(tmp_path, never, ["good"], ", {name: rubric, retries: 1}", use_cache=False)
    assert all(
        r.scores["rubric"].value is None and "no parseable verdict" in r.scores["rubric"].error for r in data.rows
    )


def test_pairwise_cancels_position_bias(home, tmp_path):
    always_a = Scripted(judge_replies=[json.dumps({"reason": "first is best", "winner": "A"})])
    _, data = run(tmp_path, always_a, ["good", "wrong"], ", pairwise")
    wrong = [r for r in data.rows if r.model == "wrong"]
    assert [r.scores["pairwise"].value for r in wrong] == [0.5, 0.5, 0.5]  # a biased judge gives only ties
    assert all("pairwise" not in r.scores for r in data.rows if r.model == "good")  # the baseline

    def prefers_paris(text):
        a = text.split("Answer A:")[1].split("Answer B:")[0]
        return json.dumps(
            {"reason": "right city", "winner": "A" if "Paris" in a or "Tokyo" in a or "Lima" in a else "B"}
        )

    fair = Scripted(judge_replies=[prefers_paris])
    _, data = run(tmp_path, fair, ["good", "wrong"], ", pairwise", use_cache=False)  # not the cached verdicts
    assert [r.scores["pairwise"].value for r in data.rows if r.model == "wrong"] == [0.0, 0.0, 0.0]


def test_a_run_stopped_midway_is_stored_as_interrupted_not_running(home, tmp_path):
    """Ctrl-C during generation: the stored run says so, instead of looking like it is still going."""
    from fmstack.core.store.schema import EvalRun

    class Interrupting(Scripted):
        async def generate(self, model, messages, params, run_id=None):
            raise asyncio.CancelledError  # what Ctrl-C does to the tasks of `asyncio.run`

    with pytest.raises(asyncio.CancelledError):
        run(tmp_path, Interrupting(), ["good"])
    with open_store(get_settings()).begin() as s:
        assert [r.status for r in s.query(EvalRun)] == ["interrupted"]
