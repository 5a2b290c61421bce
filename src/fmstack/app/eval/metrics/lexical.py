"""Lexical overlap metrics: token F1, ROUGE-L, BLEU and chrF against the case's references.

They reward saying the reference's words, so they suit extractive answers, short factual answers and translation;
for free-form answers prefer `semantic_similarity` or a judge. The established implementations are used
(`rouge-score`, `sacrebleu`) so numbers are comparable with published ones; all are scaled to 0–1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import Field
from sacrebleu.metrics import BLEU, CHRF

from fmstack.app.eval.metrics.base import Case, Metric, MetricContext, Output, Score, register

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

NO_REFERENCE = "case has no reference"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class _ReferenceMetric(Metric):
    """A metric comparing the output with the references: subclasses implement `compare` on a 0–1 scale."""

    requires = frozenset({"reference"})

    def compare(self, output: str, references: list[str]) -> float:
        raise NotImplementedError

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.references:
            return Score(None, error=NO_REFERENCE)
        value = min(
            1.0, max(0.0, float(self.compare(output.text, case.references)))
        )  # sacrebleu gives 100.00000000000004
        return Score(value, passed=self.judge_pass(value))


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def token_f1_score(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after SQuAD normalization (two empty answers agree)."""
    predicted, expected = squad_normalize(prediction).split(), squad_normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@register("token_f1")
class TokenF1(_ReferenceMetric):
    """SQuAD-style token F1, the best over the references."""

    def compare(self, output: str, references: list[str]) -> float:
        return max(token_f1_score(output, reference) for reference in references)


@lru_cache(maxsize=4)
def _rouge_scorer(use_stemmer: bool) -> RougeScorer:
    # Imported here: rouge-score loads nltk and scipy (seconds), and importing this package registers every metric.
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=use_stemmer)


@register("rouge_l")
class RougeL(_ReferenceMetric):
    """ROUGE-L F-measure (longest common subsequence), the best over the references.

    `rouge-score`'s tokenizer keeps only ASCII letters and digits, so it is meaningful for English-like text only.
    """

    use_stemmer: bool = True

    def compare(self, output: str, references: list[str]) -> float:
        return _rouge_scorer(self.use_stemmer).score_multi(references, output)["rougeL"].fmeasure


@lru_cache(maxsize=8)
def _bleu(lowercase: bool) -> BLEU:
    # effective_order: sentence-level BLEU without it is 0 whenever a short output lacks 4-gram matches.
    return BLEU(lowercase=lowercase, effective_order=True)


@register("bleu")
class Bleu(_ReferenceMetric):
    """Sentence-level BLEU (sacrebleu, effective order) against all references at once, scaled to 0–1."""

    lowercase: bool = False

    def compare(self, output: str, references: list[str]) -> float:
        return _bleu(self.lowercase).sentence_score(output, references).score / 100.0


@lru_cache(maxsize=8)
def _chrf(word_order: int) -> CHRF:
    return CHRF(word_order=word_order)


@register("chrf")
class Chrf(_ReferenceMetric):
    """Sentence-level chrF (sacrebleu) against all references at once, scaled to 0–1; `word_order=2` is chrF++."""

    word_order: int = Field(default=0, ge=0, le=2)

    def compare(self, output: str, references: list[str]) -> float:
        return _chrf(self.word_order).sentence_score(output, references).score / 100.0
