"""AI as a judge: a model grades answers. Verdicts are JSON, parsed robustly, retried, and recorded as a judge
error (never silently scored) when they stay unparseable. With llama.cpp judges the JSON is grammar-constrained.

A small local judge is weak: reports show each judge's measured agreement with humans (`fmstack eval calibrate`).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from pydantic import Field

from fmstack.app.eval.metrics.base import Case, Judge, Metric, MetricContext, Output, Score, register

# A bounded reason: small judges asked for "one sentence" wrote 300-token essays inside the JSON string, which made
# every verdict take ~45 s on 2 cores; the grammar stops the string at 300 characters.
REASON = {"type": "string", "maxLength": 300}

SYSTEM = (
    "You are a strict, fair evaluator of AI assistant answers. Judge only what is asked. "
    "Reply with a single JSON object and nothing else."
)


def ask_json(judge: Judge, messages: list[dict], schema: dict, retries: int) -> tuple[dict | None, str]:
    """Ask until the reply parses as a JSON object with the schema's required keys; return it and the last raw
    reply (None when every try failed). A retry shows the judge its bad reply and asks again."""
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    raw = ""
    for _ in range(retries + 1):
        raw = judge(messages, response_format)
        verdict = parse_verdict(raw, schema.get("required", []))
        if verdict is not None:
            return verdict, raw
        keys = ", ".join(f'"{k}"' for k in schema.get("required", []))
        messages = [
            *messages,
            {"role": "assistant", "content": raw},
            {"role": "user", "content": f"That is not a JSON object with {keys}. Reply with only that JSON."},
        ]
    return None, raw


def parse_verdict(raw: str, required: list[str]) -> dict | None:
    """The first JSON object in `raw` (fenced or not) that has the required keys."""
    for candidate in [raw, *re.findall(r"\{.*?\}", raw, re.S), *re.findall(r"\{.*\}", raw, re.S)]:
        try:
            value = json.loads(candidate.strip().removeprefix("```json").removesuffix("```"))
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict) and all(k in value for k in required):
            return value
    return None


class JudgeMetric(Metric):
    requires: ClassVar[frozenset[str]] = frozenset({"judge"})
    retries: int = Field(2, ge=0, le=5)

    def _verdict(self, ctx: MetricContext, prompt: str, schema: dict) -> tuple[dict | None, str]:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        return ask_json(ctx.judge, messages, schema, self.retries)

    def _unparseable(self, raw: str) -> Score:
        return Score(None, error=f"judge gave no parseable verdict after {self.retries + 1} tries: {raw[:200]!r}")


SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": REASON, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["reason", "score"],
}


@register("rubric")
class Rubric(JudgeMetric):
    """Score 1–5 against a rubric written in the suite, with the judge's reason."""

    rubric: str = "The answer is correct, complete, relevant to the question and clearly written."

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        prompt = (
            f"Question:\n{case.question}\n\nAnswer to grade:\n{output.text}\n\nRubric: {self.rubric}\n\n"
            "Give a score from 1 (fails the rubric) to 5 (fully meets it). "
            'Reply as {"reason": "<one sentence>", "score": <1-5>}.'
        )
        verdict, raw = self._verdict(ctx, prompt, SCORE_SCHEMA)
        if verdict is None or not _in_range(verdict.get("score"), 1, 5):
            return self._unparseable(raw)
        return Score(float(verdict["score"]), reason=str(verdict.get("reason", "")))


VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": REASON, "verdict": {"type": "string", "enum": ["correct", "incorrect"]}},
    "required": ["reason", "verdict"],
}


@register("correctness")
class Correctness(JudgeMetric):
    """1 if the judge finds the answer agrees with the reference answer, else 0."""

    requires: ClassVar[frozenset[str]] = frozenset({"judge", "reference"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        prompt = (
            f"Question:\n{case.question}\n\nReference answer:\n{' / '.join(case.references)}\n\n"
            f"Answer to grade:\n{output.text}\n\nDoes the answer give the same facts as the reference "
            "(wording may differ; extra correct detail is fine; any contradiction is incorrect)? "
            'Reply as {"reason": "<one sentence>", "verdict": "correct" or "incorrect"}.'
        )
        verdict, raw = self._verdict(ctx, prompt, VERDICT_SCHEMA)
        if verdict is None or verdict.get("verdict") not in ("correct", "incorrect"):
            return self._unparseable(raw)
        return Score(1.0 if verdict["verdict"] == "correct" else 0.0, reason=str(verdict.get("reason", "")))


PAIR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": REASON, "winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["reason", "winner"],
}


@register("pairwise")
class Pairwise(JudgeMetric):
    """Which of two answers is better. Asked twice with the order swapped to cancel position bias: a side wins
    only if both orders agree; otherwise it is a tie. Scored per row against the run's first model (1 win,
    0.5 tie, 0 loss); the baseline's own rows get no score."""

    criteria: str = "more correct, more helpful and more clearly written"

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        return Score(None, error="pairwise compares two models; run it with two or more --model")

    def compare(self, case: Case, baseline: str, candidate: str, ctx: MetricContext) -> Score:
        first, raw1 = self._ask(case, baseline, candidate, ctx)  # candidate is B
        second, raw2 = self._ask(case, candidate, baseline, ctx)  # candidate is A
        if first is None or second is None:
            return self._unparseable(raw1 if first is None else raw2)
        candidate_wins = (first == "B") + (second == "A")
        baseline_wins = (first == "A") + (second == "B")
        value = 1.0 if candidate_wins == 2 else 0.0 if baseline_wins == 2 else 0.5
        return Score(
            value, reason=f"order 1: {first}, order 2 (swapped): {second}", details={"orders": [first, second]}
        )

    def _ask(self, case: Case, a: str, b: str, ctx: MetricContext) -> tuple[str | None, str]:
        prompt = (
            f"Question:\n{case.question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich answer is "
            f'{self.criteria}? Reply as {{"reason": "<one sentence>", "winner": "A", "B" or '
            '"tie"}.'
        )
        verdict, raw = self._verdict(ctx, prompt, PAIR_SCHEMA)
        winner = verdict.get("winner") if verdict else None
        return (winner if winner in ("A", "B", "tie") else None), raw


def _in_range(value: object, low: int, high: int) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
