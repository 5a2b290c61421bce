"""Lexical overlap metrics against known values."""

from __future__ import annotations

import pytest

from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric
from fmstack.app.eval.metrics.lexical import squad_normalize, token_f1_score

CTX = MetricContext()


def value(name: str, output: str, reference, **params) -> float | None:
    return get_metric(name, params).score(Case(id="c", reference=reference), Output(text=output), CTX).value


def test_squad_normalization_and_token_f1() -> None:
    assert squad_normalize("The  Eiffel Tower!") == "eiffel tower"
    assert token_f1_score("the Eiffel Tower", "Eiffel tower.") == 1.0
    # 2 common tokens; precision 2/3, recall 2/4 -> F1 = 4/7
    assert token_f1_score("tower in paris", "eiffel tower in france") == pytest.approx(4 / 7)
    assert token_f1_score("", "") == 1.0 and token_f1_score("x", "") == 0.0
    assert value("token_f1", "tower in paris", ["nothing alike", "eiffel tower in france"]) == pytest.approx(4 / 7)


def test_rouge_l_identical_and_disjoint() -> None:
    assert value("rouge_l", "the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert value("rouge_l", "the cat sat on the mat", "quantum chromodynamics explained") == 0.0
    # LCS "the cat the mat" = 4 of 6 tokens each way -> F = 2/3; the best reference wins.
    partial = value("rouge_l", "the cat sat on the mat", ["the cat lay near the mat", "zzz"])
    assert partial == pytest.approx(2 / 3)


def test_bleu_and_chrf_are_scaled_to_unit_interval() -> None:
    sentence = "the quick brown fox jumps over the lazy dog"
    assert value("bleu", sentence, sentence) == 1.0
    assert value("chrf", sentence, sentence) == 1.0
    assert value("bleu", sentence, "completely different words here") == 0.0
    close = value("bleu", "the quick brown fox jumped over the lazy dog", sentence)
    assert 0.3 < close < 1.0
    # All references at once: a second, matching reference raises the score.
    single = value("bleu", "a fast brown fox", sentence)
    assert value("bleu", "a fast brown fox", [sentence, "a fast brown fox"]) > single
    assert value("chrf", "the quick brown fox", [sentence]) > value("chrf", "a slow red hen", [sentence])


def test_missing_reference_is_an_error() -> None:
    for name in ("token_f1", "rouge_l", "bleu", "chrf"):
        result = get_metric(name).score(Case(id="c"), Output(text="x"), CTX)
        assert result.value is None and result.error == "case has no reference"


def test_threshold_sets_passed() -> None:
    metric = get_metric("rouge_l", {"threshold": 0.5})
    good = metric.score(Case(id="c", reference="a b c d"), Output(text="a b c d"), CTX)
    bad = metric.score(Case(id="c", reference="a b c d"), Output(text="x y"), CTX)
    assert (good.passed, bad.passed) == (True, False)
