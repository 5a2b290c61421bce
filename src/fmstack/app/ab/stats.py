"""Bootstrap intervals for comparing two variants on live traffic.

Unlike an eval suite, the two arms of an A/B test answered different requests, so the comparison is *unpaired*:
each arm is resampled on its own and the interval is the percentile range of the difference of the resampled means.
Latency and cost are skewed (a long tail), which is why a bootstrap and not a t-interval. For 0/1 outcomes (thumbs
up, approved, error) the resampled mean of n draws is exactly Binomial(n, p) / n, drawn directly, so a route with
100,000 requests costs no more to report than one with 100. Seeded: a report rendered twice shows the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_CELLS = 4_000_000  # resampled values held at once (~32 MB of float64)
NAN3 = (math.nan, math.nan, math.nan)


def resampled_means(values: Sequence[float], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`n_resamples` means of resamples with replacement of `values` (non-empty)."""
    x = np.asarray(values, dtype=float)
    if np.isin(x, (0.0, 1.0)).all():
        return rng.binomial(len(x), x.mean(), size=n_resamples) / len(x)
    chunk = max(1, MAX_CELLS // len(x))
    parts = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, len(x), size=(min(chunk, n_resamples - start), len(x)))
        parts.append(x[idx].mean(axis=1))
    return np.concatenate(parts)


class Arm:
    """One variant's values on one metric, resampled once: its own interval and its difference with any other arm
    come from the same draws (a report compares every variant with the baseline; drawing once halves the work)."""

    def __init__(self, values: Sequence[float], seed: int | Sequence[int] = 0, n_resamples: int = 2000):
        self.n = len(values)
        self.mean = float(np.mean(values)) if self.n else math.nan
        self.means = resampled_means(values, n_resamples, np.random.default_rng(seed)) if self.n else None

    def ci(self, confidence: float = 0.95) -> tuple[float, float, float]:
        """(mean, low, high); (nan, nan, nan) without values."""
        return (self.mean, *_interval(self.means, confidence)) if self.n else NAN3

    def minus(self, other: Arm, confidence: float = 0.95) -> tuple[float, float, float]:
        """(this mean − the other's, low, high); (nan, nan, nan) if either has no values."""
        if not self.n or not other.n:
            return NAN3
        return (self.mean - other.mean, *_interval(self.means - other.means, confidence))


def mean_ci(
    values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high); (nan, nan, nan) for no values."""
    return Arm(values, seed, n_resamples).ci(confidence)


def diff_ci(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean(b) − mean(a), low, high), resampling each arm independently; (nan, nan, nan) if either is empty."""
    return Arm(b, [seed, 1], n_resamples).minus(Arm(a, [seed, 0], n_resamples), confidence)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.percentile(samples, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)
