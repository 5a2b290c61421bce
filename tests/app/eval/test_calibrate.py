"""Judge calibration: agreement with human labels, kappa bands, judge errors kept apart from disagreements."""

from __future__ import annotations

import pytest
from rich.console import Console
from sklearn.metrics import cohen_kappa_score

from fmstack.app.eval.calibrate import agreement, band, render_agreement


def two_by_two(yy: int, yn: int, ny: int, nn: int) -> tuple[list[str], list[str]]:
    """Human/judge label lists from a 2×2 table (first letter: human, second: judge)."""
    cells = [("pass", "pass", yy), ("pass", "fail", yn), ("fail", "pass", ny), ("fail", "fail", nn)]
    human = [h for h, _, k in cells for _ in range(k)]
    judge = [j for _, j, k in cells for _ in range(k)]
    return human, judge


def test_kappa_from_a_hand_computed_table():
    # po = 42/50 = 0.84; pe = (25·27 + 25·23)/50² = 0.5; kappa = (0.84 − 0.5)/0.5 = 0.68
    human, judge = two_by_two(22, 3, 5, 20)
    r = agreement(human, judge)
    assert r["n"] == 50 and r["judge_errors"] == 0
    assert r["accuracy"] == pytest.approx(0.84)
    assert r["kappa"] == pytest.approx(0.68)
    assert r["kappa_quadratic"] is None  # pass/fail is nominal
    assert r["labels"] == ["fail", "pass"]
    assert r["confusion"] == [[20, 5], [3, 22]]  # rows human, columns judge, in label order
    assert r["band"] == "substantial"
    assert "usable unsupervised" in r["verdict"]


def test_perfect_agreement():
    r = agreement([1, 0, 1, 1, 0] * 8, [1, 0, 1, 1, 0] * 8)
    assert r["accuracy"] == 1.0 and r["kappa"] == pytest.approx(1.0)
    assert r["band"] == "almost perfect"


def test_accuracy_flatters_a_judge_that_always_passes():
    human, judge = two_by_two(45, 0, 5, 0)
    r = agreement(human, judge)
    assert r["accuracy"] == 0.9
    assert r["kappa"] == pytest.approx(0.0)
    assert "do not trust this judge unsupervised" in r["verdict"]


def test_slight_agreement_verdict():
    # po = 0.56, pe = 0.5 → kappa 0.12
    human, judge = two_by_two(14, 11, 11, 14)
    r = agreement(human, judge)
    assert r["kappa"] == pytest.approx(0.12)
    assert r["verdict"].startswith("kappa 0.12: slight agreement — do not trust this judge unsupervised")


def test_judge_errors_are_counted_apart_and_excluded():
    human = ["pass", "pass", "fail", "fail", "pass", "fail"]
    judge = ["pass", None, "fail", None, "pass", "pass"]
    r = agreement(human, judge)
    assert r["judge_errors"] == 2
    assert r["n"] == 4
    assert r["accuracy"] == pytest.approx(0.75)
    assert sum(map(sum, r["confusion"])) == 4


def test_ordinal_scores_report_quadratic_kappa():
    human = [1, 2, 3, 4, 5, 3, 4, 2, 5, 1] * 4
    judge = [1, 3, 3, 5, 4, 3, 4, 2, 5, 2] * 4  # off by one at most
    r = agreement(human, judge)
    assert r["kappa"] == pytest.approx(cohen_kappa_score(human, judge))
    assert r["kappa_quadratic"] == pytest.approx(cohen_kappa_score(human, judge, weights="quadratic"))
    assert r["kappa_quadratic"] > r["kappa"]  # near misses count as partial agreement
    assert r["verdict"].startswith("quadratic-weighted kappa")
    assert r["labels"] == [1, 2, 3, 4, 5]


def test_float_and_int_labels_are_the_same():
    r = agreement([1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert r["accuracy"] == 1.0 and r["labels"] == [1, 2, 3, 4, 5]


def test_explicit_labels_fix_the_confusion_matrix():
    r = agreement([1, 2, 2], [1, 2, 1], labels=[1, 2, 3, 4, 5])
    assert r["labels"] == [1, 2, 3, 4, 5]
    assert len(r["confusion"]) == 5 and r["confusion"][1][0] == 1
    assert "only 3 items" in r["verdict"]


def test_undefined_kappa_is_none_not_nan():
    r = agreement(["pass"] * 5, ["pass"] * 5)
    assert r["kappa"] is None and r["band"] is None
    assert "undefined" in r["verdict"]
    r = agreement(["pass", "fail"], [None, None])
    assert r["n"] == 0 and r["judge_errors"] == 2 and r["accuracy"] is None


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="length"):
        agreement([1, 2], [1])


@pytest.mark.parametrize(
    ("kappa", "name"),
    [
        (-0.1, "poor"),
        (0.0, "slight"),
        (0.2, "slight"),
        (0.35, "fair"),
        (0.5, "moderate"),
        (0.7, "substantial"),
        (0.9, "almost perfect"),
        (1.0, "almost perfect"),
    ],
)
def test_landis_koch_bands(kappa, name):
    assert band(kappa) == name


def test_render_agreement():
    human, judge = two_by_two(14, 11, 11, 14)
    console = Console(record=True, width=120)
    render_agreement(agreement(human, [*judge[:-1], None]), console)
    text = console.export_text()
    assert "Cohen's kappa" in text and "Confusion matrix" in text
    assert "judge errors" in text and "slight agreement" in text
