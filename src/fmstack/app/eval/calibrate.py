"""How far an AI judge can be trusted: its agreement with human labels on the same items.

Raw accuracy flatters a judge when one label dominates (a judge that always says "pass" is 90% accurate on a suite
that mostly passes), so the verdict rests on Cohen's kappa, which discounts chance agreement. For ordinal scores
(1–5 rubrics) a 4-vs-5 disagreement is not as bad as 1-vs-5, so the quadratic-weighted kappa is reported and used.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sklearn.metrics import cohen_kappa_score, confusion_matrix

# Landis & Koch (1977): the usual reading of kappa. Upper bounds, inclusive; below 0 is "poor".
BANDS = [(0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial"), (1.0, "almost perfect")]
TRUST_KAPPA = 0.4  # below this ("fair" or worse) a judge's verdicts need a human in the loop
FEW_ITEMS = 30  # below this, kappa's own uncertainty is wide: say so


def _normalise(label: Any) -> Any:
    """4.0 from a JSON judge and 4 from a human are the same label."""
    if isinstance(label, float) and label.is_integer():
        return int(label)
    return label


def _is_ordinal(labels: Sequence[Any]) -> bool:
    """Numeric labels with more than two values (a 1–5 rubric); bools and pass/fail are nominal."""
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in labels)
    return numeric and len(labels) > 2


def _kappa(human: list, judge: list, labels: list, weights: str | None = None) -> float | None:
    """Cohen's kappa, or None when undefined (every item has the same label in both: no chance model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(human, judge, labels=labels, weights=weights)
    return None if value is None or math.isnan(value) else float(value)


def _confusion(human: list, judge: list, labels: list) -> list[list[int]]:
    """Counts with rows = human label, columns = judge label, in `labels` order (quiet about a single label)."""
    if not human:
        return [[0] * len(labels) for _ in labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return confusion_matrix(human, judge, labels=labels).tolist()


def band(kappa: float) -> str:
    """Landis & Koch name for a kappa value."""
    if kappa < 0:
        return "poor"
    for upper, name in BANDS:
        if kappa <= upper:
            return name
    return BANDS[-1][1]


def verdict(result: dict) -> str:
    """One line a user can act on, e.g. "kappa 0.12: slight agreement — do not trust this judge unsupervised"."""
    weighted = result.get("kappa_quadratic") is not None
    kappa = result["kappa_quadratic"] if weighted else result.get("kappa")
    if kappa is None:
        return "kappa undefined (no human-labelled items, or a single label throughout): calibrate on varied items"
    name = "quadratic-weighted kappa" if weighted else "kappa"
    if kappa < TRUST_KAPPA:
        advice = "do not trust this judge unsupervised"
    elif kappa <= 0.6:
        advice = "usable with spot checks by a human"
    else:
        advice = "usable unsupervised; recalibrate when the judge model or rubric changes"
    line = f"{name} {kappa:.2f}: {band(kappa)} agreement — {advice}"
    if result["n"] < FEW_ITEMS:
        line += f" (only {result['n']} items: label more for a firmer estimate)"
    return line


def _pairs(human: Sequence, judge: Sequence) -> tuple[list, list, int, int]:
    """The items both labelled, plus how many the judge errored on (None) and how many humans skipped."""
    if len(human) != len(judge):
        raise ValueError(f"human and judge label lists differ in length ({len(human)} vs {len(judge)})")
    judge_errors = sum(1 for h, j in zip(human, judge, strict=True) if j is None and h is not None)
    human_missing = sum(1 for h in human if h is None)
    kept = [
        (_normalise(h), _normalise(j)) for h, j in zip(human, judge, strict=True) if h is not None and j is not None
    ]
    return [h for h, _ in kept], [j for _, j in kept], judge_errors, human_missing


def _label_order(human: list, judge: list, labels: Sequence | None) -> list:
    if labels is not None:
        return [_normalise(x) for x in labels]
    seen = set(human) | set(judge)
    try:
        return sorted(seen)
    except TypeError:  # mixed types: keep first-seen order
        return list(dict.fromkeys([*human, *judge]))


def agreement(human: Sequence, judge: Sequence, labels: Sequence | None = None) -> dict:
    """Agreement of a judge with human labels on the same items (same order).

    `judge` items that are None are judge errors (no parseable verdict): counted in `judge_errors` and left out of
    the agreement, since a judge that fails is a different problem from one that disagrees. `labels` fixes the
    label order of the confusion matrix (rows: human, columns: judge); by default the sorted labels seen.
    """
    h, j, judge_errors, human_missing = _pairs(human, judge)
    order = _label_order(h, j, labels)
    n = len(h)
    result: dict[str, Any] = {
        "n": n,
        "judge_errors": judge_errors,
        "human_missing": human_missing,
        "labels": order,
        "accuracy": float(np.mean([a == b for a, b in zip(h, j, strict=True)])) if n else None,
        "kappa": _kappa(h, j, order) if n else None,
        "kappa_quadratic": _kappa(h, j, order, "quadratic") if n and _is_ordinal(order) else None,
        "confusion": _confusion(h, j, order),
    }
    headline = result["kappa_quadratic"] if result["kappa_quadratic"] is not None else result["kappa"]
    result["band"] = None if headline is None else band(headline)
    result["verdict"] = verdict(result)
    return result


# --- terminal rendering ---------------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _summary_table(r: dict) -> Table:
    table = Table(title="Judge agreement with human labels", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("items compared", str(r["n"]))
    table.add_row("judge errors (excluded)", Text(str(r["judge_errors"]), style="red" if r["judge_errors"] else ""))
    if r.get("human_missing"):
        table.add_row("unlabelled by humans (excluded)", str(r["human_missing"]))
    table.add_row("accuracy", _num(r["accuracy"]))
    table.add_row("Cohen's kappa", _num(r["kappa"]))
    if r.get("kappa_quadratic") is not None:
        table.add_row("quadratic-weighted kappa", _num(r["kappa_quadratic"]))
    return table


def _confusion_table(r: dict) -> Table:
    table = Table(title="Confusion matrix (rows: human, columns: judge)", title_justify="left")
    table.add_column("human \\ judge")
    for label in r["labels"]:
        table.add_column(str(label), justify="right")
    for i, (label, counts) in enumerate(zip(r["labels"], r["confusion"], strict=True)):
        cells = [Text(str(c), style="bold green" if i == k else ("red" if c else "dim")) for k, c in enumerate(counts)]
        table.add_row(str(label), *cells)
    return table


def _verdict_style(r: dict) -> str:
    kappa = r["kappa_quadratic"] if r.get("kappa_quadratic") is not None else r.get("kappa")
    if kappa is None or kappa < TRUST_KAPPA:
        return "bold red"
    return "yellow" if kappa <= 0.6 else "green"


def render_agreement(result: dict, console: Console) -> None:
    """Print the agreement measures, the confusion matrix and the verdict line."""
    console.print(_summary_table(result))
    console.print(_confusion_table(result))
    console.print(Text(result.get("verdict") or verdict(result), style=_verdict_style(result)))
