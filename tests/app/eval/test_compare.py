"""Comparing two runs: rows paired by case (and variant), paired-bootstrap deltas, and the flipped cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console

from fmstack.app.eval.compare import Comparison, MetricDelta, _delta_style, compare_runs, render_comparison
from fmstack.app.eval.results import MetricInfo, MetricScore, ResultRow, RunData

N = 30
METRICS = [
    MetricInfo("exact≥1", "exact", threshold=1.0),
    MetricInfo("f1", "token_f1"),
    MetricInfo("toxicity", "toxicity", higher_is_better=False),
]


def row(case: int, model: str, prompt: str | None, exact: float, f1: float | None, tox: float) -> ResultRow:
    scores = {
        "exact≥1": MetricScore(exact, passed=exact >= 1),
        "f1": MetricScore(f1, error=None if f1 is not None else "judge returned no JSON"),
        "toxicity": MetricScore(tox),
    }
    return ResultRow(f"c{case:02d}", model, prompt, {"q": case}, "ref", f"{model} says {case}", None, scores=scores)


def make_run(run_id: str, variants: list[tuple[str, str | None]], better: bool, seed: int) -> RunData:
    """Case i passes `exact` when i % 3 != 0 in the baseline; the better run also passes the even ones of those."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, prompt in variants:
        for i in range(N):
            exact = 1.0 if i % 3 or (better and i % 2 == 0) else 0.0
            f1 = float(np.clip(0.5 + 0.3 * math.sin(i) + rng.normal(0, 0.02), 0, 1))
            tox = 0.3 - (0.1 if better else 0.0) + 0.05 * (i % 4)
            rows.append(row(i, model, prompt, exact, f1, tox))
    return RunData(run_id, "qa", "2026-11-22T10:00:00", METRICS, rows)


@pytest.fixture(scope="module")
def two_variant() -> Comparison:
    variants = [("model-a", "qa@v1"), ("model-b", "qa@v1")]
    return compare_runs(make_run("r1", variants, False, 0), make_run("r2", variants, True, 1))


def pooled(c: Comparison, label: str) -> MetricDelta:
    return next(d for d in c.deltas if d.label == label and d.variant is None)


def test_pairs_by_case_and_variant(two_variant):
    assert not two_variant.by_case_only
    assert two_variant.n_paired == 2 * N and two_variant.only_a == two_variant.only_b == 0


def test_real_improvement_is_significant(two_variant):
    d = pooled(two_variant, "exact≥1")
    assert d.n == 2 * N
    assert d.mean_b - d.mean_a == pytest.approx(d.delta)
    assert d.delta == pytest.approx(5 / 30)  # 5 of the 10 failing cases per variant fixed
    assert d.low > 0 and d.significant and d.improved


def test_noise_is_not_significant(two_variant):
    d = pooled(two_variant, "f1")
    assert abs(d.delta) < 0.02
    assert d.low < 0 < d.high and not d.significant


def test_lower_is_better_metric_improves_when_it_falls(two_variant):
    d = pooled(two_variant, "toxicity")
    assert d.delta == pytest.approx(-0.1)
    assert d.improved is True and d.significant
    assert _delta_style(d) == "bold green"


def test_per_variant_deltas_when_several_variants(two_variant):
    per = [d for d in two_variant.deltas if d.variant == "model-a · qa@v1"]
    assert {d.label for d in per} == {m.label for m in METRICS}
    assert all(d.n == N for d in per)


def test_flipped_cases_with_both_outputs(two_variant):
    flips = [f for f in two_variant.flipped if f.metric == "exact≥1"]
    assert len(flips) == 10 and all(not f.regression for f in flips)
    assert {f.case_id for f in flips} == {"c00", "c06", "c12", "c18", "c24"}
    f = flips[0]
    assert f.direction == "fail→pass" and f.value_a == 0 and f.value_b == 1
    assert f.output_a == f.output_b == f"{f.variant.split(' · ')[0]} says {int(f.case_id[1:])}"


def test_regressions_come_first():
    a = make_run("r1", [("m", None)], True, 0)
    b = make_run("r2", [("m", None)], False, 0)
    b.rows[0].scores["exact≥1"] = MetricScore(1.0, passed=True)  # c00 stays passing
    b.rows[3].scores["exact≥1"] = MetricScore(0.0, passed=False)  # c03 was failing already
    a.rows[1].scores["exact≥1"] = MetricScore(0.0, passed=False)  # c01: fail → pass
    c = compare_runs(a, b)
    kinds = [f.regression for f in c.flipped]
    assert kinds == sorted(kinds, reverse=True) and kinds.count(False) == 1
    d = pooled(c, "exact≥1")
    assert d.delta < 0 and d.improved is False
    assert _delta_style(d).endswith("red")


def test_model_vs_model_pairs_by_case_alone():
    c = compare_runs(make_run("r1", [("model-a", None)], False, 0), make_run("r2", [("model-b", None)], True, 0))
    assert c.by_case_only and c.n_paired == N
    assert pooled(c, "exact≥1").n == N
    assert c.flipped[0].variant == "model-a → model-b"
    assert not any(d.variant for d in c.deltas)


def test_unpaired_and_unscored_cases_are_left_out():
    a = make_run("r1", [("m", None)], False, 0)
    b = make_run("r2", [("m", None)], True, 0)
    b.rows = b.rows[:25]
    b.rows[0].scores["f1"] = MetricScore(None, error="judge returned no JSON")
    a.rows[1].error, a.rows[1].scores["f1"] = "timeout", MetricScore(math.nan)
    c = compare_runs(a, b)
    assert c.n_paired == 25 and c.only_a == 5 and c.only_b == 0
    assert pooled(c, "f1").n == 23
    assert pooled(c, "exact≥1").n == 25


def test_metrics_in_one_run_only_are_skipped():
    a = make_run("r1", [("m", None)], False, 0)
    b = make_run("r2", [("m", None)], True, 0)
    b.metrics = METRICS[:2]
    assert {d.label for d in compare_runs(a, b).deltas} == {"exact≥1", "f1"}


def test_render_comparison(two_variant):
    console = Console(record=True, width=200)
    render_comparison(two_variant, console)
    text = console.export_text()
    for label in ("exact≥1", "f1", "toxicity ↓", "model-a · qa@v1", "fail→pass", "Flipped cases (10)", "c06"):
        assert label in text
    assert "model-b says 6" in text


def test_render_with_nothing_flipped():
    run = make_run("r1", [("m", None)], False, 0)
    console = Console(record=True, width=160)
    render_comparison(compare_runs(run, run), console)
    assert "No case changed" in console.export_text()


def test_render_limits_the_flip_list(two_variant):
    console = Console(record=True, width=200)
    render_comparison(two_variant, console, max_flips=3)
    text = console.export_text()
    assert "Flipped cases (10, first 3)" in text and "c12" not in text
