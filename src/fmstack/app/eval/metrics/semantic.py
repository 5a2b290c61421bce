"""Embedding similarity: does the output *mean* what a reference says, whatever the wording?"""

from __future__ import annotations

import numpy as np

from fmstack.app.eval.metrics.base import Case, Metric, MetricContext, Output, Score, register


def cosine_to_references(embed_output: np.ndarray, embed_references: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector with each row of a matrix (re-normalized: not every embedder is unit-norm)."""
    out = embed_output / max(float(np.linalg.norm(embed_output)), 1e-12)
    refs = embed_references / np.maximum(np.linalg.norm(embed_references, axis=1, keepdims=True), 1e-12)
    return refs @ out


@register("semantic_similarity")
class SemanticSimilarity(Metric):
    """Cosine similarity of the output's embedding with the closest reference's, clipped to 0–1.

    Cosines below 0 (rare with sentence embedders) are reported as 0: both mean "unrelated" on this scale. The raw
    cosine per reference is kept in `details`. Thresholds depend on the embedding model: calibrate them on a few
    known-good and known-bad answers.
    """

    requires = frozenset({"reference", "embed"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.references:
            return Score(None, error="case has no reference")
        if ctx.embed is None:
            return Score(None, error="no embedding model configured")
        vectors = np.asarray(ctx.embed([output.text, *case.references]), dtype=np.float64)
        cosines = cosine_to_references(vectors[0], vectors[1:])
        best = int(np.argmax(cosines))
        value = float(np.clip(cosines[best], 0.0, 1.0))
        details = {"cosines": [round(float(c), 4) for c in cosines], "closest_reference": best}
        return Score(value, passed=self.judge_pass(value), details=details)
