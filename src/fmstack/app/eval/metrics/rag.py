"""RAG metrics: is the answer faithful to the retrieved context, relevant to the question, and did the context
hold what the reference answer needs?"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np

from fmstack.app.eval.metrics.base import Case, Metric, MetricContext, Output, Score, register
from fmstack.app.eval.metrics.judge import REASON, JudgeMetric

CLAIMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": REASON,
        "claims": {"type": "integer", "minimum": 0},
        "supported": {"type": "integer", "minimum": 0},
    },
    "required": ["reason", "claims", "supported"],
}


def _context_block(case: Case) -> str:
    return "\n".join(f"[{i}] {passage}" for i, passage in enumerate(case.context or [], 1))


@register("faithfulness")
class Faithfulness(JudgeMetric):
    """Share of the answer's factual claims that the context supports (the judge counts both)."""

    requires: ClassVar[frozenset[str]] = frozenset({"judge", "context"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        prompt = (
            f"Context:\n{_context_block(case)}\n\nAnswer:\n{output.text}\n\nList the factual claims the answer "
            "makes and count how many of them the context states or directly implies. "
            'Reply as {"reason": "<one sentence>", "claims": <number of claims>, "supported": <number '
            "supported>}."
        )
        verdict, raw = self._verdict(ctx, prompt, CLAIMS_SCHEMA)
        if verdict is None or not _counts(verdict):
            return self._unparseable(raw)
        claims, supported = int(verdict["claims"]), int(verdict["supported"])
        value = 1.0 if claims == 0 else min(supported, claims) / claims
        return Score(value, reason=str(verdict.get("reason", "")), details={"claims": claims, "supported": supported})


@register("context_recall")
class ContextRecall(JudgeMetric):
    """Share of the reference answer's sentences that the retrieved context supports."""

    requires: ClassVar[frozenset[str]] = frozenset({"judge", "context", "reference"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(case.references)) if s.strip()]
        prompt = (
            f"Context:\n{_context_block(case)}\n\nStatements:\n"
            + "\n".join(f"- {s}" for s in sentences)
            + "\n\nHow many of these statements can be attributed to the context? "
            'Reply as {"reason": "<one sentence>", "claims": <number of statements>, "supported": <number '
            "attributable>}."
        )
        verdict, raw = self._verdict(ctx, prompt, CLAIMS_SCHEMA)
        if verdict is None or not _counts(verdict):
            return self._unparseable(raw)
        supported = min(int(verdict["supported"]), len(sentences))
        return Score(supported / len(sentences) if sentences else 0.0, reason=str(verdict.get("reason", "")))


@register("answer_relevance")
class AnswerRelevance(Metric):
    """Cosine similarity of the question and the answer embeddings: an evasive or off-topic answer scores low."""

    requires: ClassVar[frozenset[str]] = frozenset({"embed"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not output.text.strip():
            return Score(0.0, reason="empty answer")
        question, answer = ctx.embed([case.question, output.text])
        return Score(float(np.clip(question @ answer, 0.0, 1.0)))


def _counts(verdict: dict) -> bool:
    values = (verdict.get("claims"), verdict.get("supported"))
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
