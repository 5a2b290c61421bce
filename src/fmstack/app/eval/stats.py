"""Bootstrap confidence intervals for eval scores.

Eval suites are small (tens to hundreds of cases) and scores are rarely normal (0/1 pass flags, 1–5 rubrics), so a
t-interval would be misleading; the percentile bootstrap makes no shape assumption and is cheap at these sizes.
Comparisons between two runs of the same cases use a *paired* bootstrap: case difficulty varies far more than the
effect of a prompt change, and pairing cancels it out, giving much tighter intervals than comparing two means.

Everything is seeded so a report rendered twice shows the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

_MAX_CELLS = 4_000_000  # resampled values held in memory at once (~32 MB of float64)

NAN3 = (math.nan, math.nan, math.nan)


def _clean(values: Iterable[Any]) -> np.ndarray:
    """The finite values as floats: None and NaN mean "no score" (an error), never zero."""
    x = np.array([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples with replacement, in chunks so a large suite cannot exhaust memory."""
    chunk = max(1, _MAX_CELLS // len(x))
    means = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, len(x), size=(size, len(x)))
        means.append(x[idx].mean(axis=1))
    return np.concatenate(means)


def _bootstrap(x: np.ndarray, n_resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    if len(x) == 0:
        return NAN3
    mean = float(x.mean())
    if len(x) == 1:
        return mean, mean, mean
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return mean, float(low), float(high)


def bootstrap_mean_ci(
    values: Iterable[float | None], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its percentile-bootstrap confidence interval.

    None/NaN values are ignored (a case whose metric errored has no score; counting it as 0 would bias the mean).
    No values gives (nan, nan, nan); one value gives a zero-width interval, since there is nothing to resample.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return _bootstrap(_clean(values), n_resamples, confidence, seed)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def paired_differences(a: Sequence | Mapping, b: Sequence | Mapping) -> np.ndarray:
    """b − a for the cases scored in both.

    Mappings are paired by key (case id); sequences by position and must have the same length, with None where
    a case has no score. Pairs with a missing side are dropped: the delta is only meaningful on shared cases.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        pairs = [(a[k], b[k]) for k in a if k in b]
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("pass both a and b as mappings (case id -> value) or both as sequences")
    else:
        if len(a) != len(b):
            raise ValueError(f"paired sequences differ in length ({len(a)} vs {len(b)}); pass dicts by case id")
        pairs = list(zip(a, b, strict=True))
    kept = [(x, y) for x, y in pairs if not (_is_missing(x) or _is_missing(y))]
    return np.array([float(y) - float(x) for x, y in kept], dtype=float)


def paired_bootstrap_delta(
    a: Sequence[float | None] | Mapping[Any, float | None],
    b: Sequence[float | None] | Mapping[Any, float | None],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean_delta, low, high) for b − a over the cases present in both, resampling cases (not runs).

    If the interval excludes zero, the change is unlikely to be noise from which cases happened to be in the suite.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return _bootstrap(paired_differences(a, b), n_resamples, confidence, seed)
