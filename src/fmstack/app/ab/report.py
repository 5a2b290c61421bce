"""`fmstack ab report`: how a route's variants compare on real traffic, each number with a bootstrap interval, and a
verdict a person can act on ("smollm2-shop-v2 better on approval, +12 pts [4, 19]; no difference in latency").

The samples, per variant, from the traces the route served (in a time range):

- latency, TTFT, cost: one value per answered request (status ok), in ms, ms and US dollars;
- error rate: 1 per failed request, 0 per answered one (requests the client abandoned are neither);
- thumbs up: per rated trace, 1 if its latest rating is up, else 0;
- approval: per reviewed answer (first review, decided), 1 if a person approved it as it was, else 0;
- one line per metric scored on the traces after the fact (`fmstack eval score --traces`, judges), the latest score
  per trace and metric.

Each non-baseline variant is compared with the baseline (the variant with the largest share, unless named):
the difference of means, with an unpaired bootstrap interval. An interval that excludes zero is a difference;
with fewer than `MIN_SAMPLES` values on either side there is no verdict on that metric.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from fmstack.app.ab.routes import RouteInfo, VariantInfo
from fmstack.app.ab.stats import Arm
from fmstack.app.ab.times import utc
from fmstack.app.review.stats import DECIDED, human_label
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import Feedback, ReviewItem, Trace, TraceScore

MIN_SAMPLES = 5


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # ms | usd | pts (a rate, shown in percentage points) | "" (a score)
    lower_is_better: bool

    def format(self, value: float, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if self.unit == "pts":
            return f"{value * 100:{sign}.0f}"
        if self.unit == "ms":
            return f"{value:{sign}.0f}"
        return f"{value:{sign}.3g}"


BUILTIN = (
    Metric("latency", "latency", "ms", True),
    Metric("ttft", "TTFT", "ms", True),
    Metric("cost", "cost", "usd", True),
    Metric("errors", "error rate", "pts", True),
    Metric("thumbs", "thumbs up", "pts", False),
    Metric("approval", "approval", "pts", False),
)


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """`variant` minus `baseline` on one metric; `outcome` is better, worse, same or too few."""

    metric: str
    variant: str
    baseline: str
    diff: float
    low: float
    high: float
    outcome: str

    def describe(self, metric: Metric) -> str:
        unit = {"ms": " ms", "pts": " pts", "usd": " USD"}.get(metric.unit, "")
        low, high = metric.format(self.low), metric.format(self.high)
        return f"{self.outcome} on {metric.label}, {metric.format(self.diff, signed=True)}{unit} [{low}, {high}]"


@dataclass
class VariantReport:
    name: str
    model: str
    weight: int
    requests: int
    answered: int
    estimates: dict[str, Estimate] = field(default_factory=dict)


@dataclass
class ABReport:
    route: str
    since: datetime | None
    until: datetime | None
    baseline: str
    metrics: list[Metric]
    variants: list[VariantReport]
    comparisons: list[Comparison]

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    def verdict(self, variant: str) -> str:
        """One sentence: where `variant` is better or worse than the baseline, with numbers; where it is not."""
        mine = [c for c in self.comparisons if c.variant == variant]
        parts = [c.describe(self.metric(c.metric)) for c in mine if c.outcome in ("better", "worse")]
        same = [self.metric(c.metric).label for c in mine if c.outcome == "same"]
        few = [self.metric(c.metric).label for c in mine if c.outcome == "too few"]
        if same:
            parts.append(f"no difference in {', '.join(same)}")
        if few:
            parts.append(f"too few samples for {', '.join(few)} (need {MIN_SAMPLES} a side)")
        return f"{variant} vs {self.baseline}: " + "; ".join(parts or ["nothing to compare yet"])

    def verdicts(self) -> dict[str, str]:
        return {v.name: self.verdict(v.name) for v in self.variants if v.name != self.baseline}

    def gate(self, variant: str, min_requests: int) -> list[str]:
        """Why promoting `variant` is not supported by the numbers (empty: it is): too few answered requests on
        either side, or worse than the baseline on any metric."""
        if variant == self.baseline:
            return []
        arms = {v.name: v for v in self.variants}
        reasons = [
            f"{name} has {arms[name].answered} answered requests; the gate needs {min_requests}"
            for name in (self.baseline, variant)
            if arms[name].answered < min_requests
        ]
        worse = [c for c in self.comparisons if c.variant == variant and c.outcome == "worse"]
        return reasons + [c.describe(self.metric(c.metric)) for c in worse]

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "baseline": self.baseline,
            "metrics": [vars(m) for m in self.metrics],
            "variants": [
                {k: v for k, v in vars(r).items() if k != "estimates"}
                | {"estimates": {k: _finite(vars(e)) for k, e in r.estimates.items()}}
                for r in self.variants
            ],
            "comparisons": [_finite(vars(c)) for c in self.comparisons],
            "verdicts": self.verdicts(),
        }


def build_report(
    sessions: sessionmaker,
    route: RouteInfo,
    since: datetime | None = None,
    until: datetime | None = None,
    baseline: str | None = None,
) -> ABReport:
    """Compare the route's variants on the traces it served between `since` and `until` (default: all)."""
    names = [v.name for v in route.variants]
    if baseline is not None and baseline not in names:
        raise InvalidRequest(
            f"baseline: route '{route.name}' has no variant '{baseline}'; its variants: {', '.join(names)}.",
            param="baseline",
        )
    baseline = baseline or max(route.variants, key=lambda v: v.weight).name
    with sessions() as session:
        samples, requests = collect(session, route.name, since, until)
    scores = sorted({k for per in samples.values() for k in per if k.startswith("score:")})
    metrics = [*BUILTIN, *(Metric(k, k.removeprefix("score:"), "", False) for k in scores)]
    arms = {
        (v.name, m.key): Arm(samples.get(v.name, {}).get(m.key, []), seed=[i, j])
        for i, v in enumerate(route.variants)
        for j, m in enumerate(metrics)
    }
    variants = [_variant(v, requests.get(v.name, 0), metrics, arms) for v in route.variants]
    comparisons = [
        _compare(m, arms[name, m.key], arms[baseline, m.key], name, baseline)
        for name in names
        if name != baseline
        for m in metrics
    ]
    return ABReport(route.name, since, until, baseline, metrics, variants, comparisons)


def collect(
    session: Session, route: str, since: datetime | None, until: datetime | None
) -> tuple[dict[str, dict[str, list[float]]], dict[str, int]]:
    """The samples (variant -> metric -> values) and the number of requests per variant."""
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    requests: dict[str, int] = defaultdict(int)
    traces = select(Trace.variant, Trace.status, Trace.latency_ms, Trace.ttft_ms, Trace.cost)
    for variant, status, latency, ttft, cost in session.execute(_where(traces, route, since, until)):
        requests[variant] += 1
        if status == "cancelled":
            continue
        per = samples[variant]
        per["errors"].append(float(status != "ok"))
        if status == "ok":
            per["cost"].append(cost)
            for key, value in (("latency", latency), ("ttft", ttft)):
                if value is not None:
                    per[key].append(value)
    for variant, key, value in _feedback(session, route, since, until) + _scores(session, route, since, until):
        samples[variant][key].append(value)
    return samples, requests


def _feedback(session: Session, route: str, since, until) -> list[tuple[str, str, float]]:
    """Thumbs (each rated trace's latest rating) and approvals (each decided first review). The latest rating is
    picked here, in id order, not by a subquery: SQLite would probe every rating for every trace."""
    thumbs = select(Trace.variant, Feedback.trace_id, Feedback.rating).join(Feedback, Feedback.trace_id == Trace.id)
    thumbs = _where(thumbs.where(Feedback.rating.is_not(None)).order_by(Feedback.id), route, since, until)
    latest = {trace_id: (variant, rating) for variant, trace_id, rating in session.execute(thumbs)}
    reviews = select(Trace.variant, ReviewItem.status).join(ReviewItem, ReviewItem.trace_id == Trace.id)
    reviews = _where(reviews.where(ReviewItem.copy == 0, ReviewItem.status.in_(DECIDED)), route, since, until)
    return [(v, "thumbs", float(r == 1)) for v, r in latest.values()] + [
        (v, "approval", float(human_label(s))) for v, s in session.execute(reviews)
    ]


def _scores(session: Session, route: str, since, until) -> list[tuple[str, str, float]]:
    """The latest score of each trace on each metric."""
    query = select(Trace.variant, TraceScore.trace_id, TraceScore.metric, TraceScore.value)
    query = query.join(TraceScore, TraceScore.trace_id == Trace.id).where(TraceScore.value.is_not(None))
    rows = session.execute(_where(query.order_by(TraceScore.id), route, since, until))
    latest = {(trace_id, metric): (variant, value) for variant, trace_id, metric, value in rows}
    return [(v, f"score:{metric}", value) for (_, metric), (v, value) in latest.items()]


def _where(query: Select, route: str, since: datetime | None, until: datetime | None) -> Select:
    query = query.where(Trace.route == route, Trace.variant.is_not(None))
    if since is not None:
        query = query.where(Trace.created_at >= utc(since, "since"))
    if until is not None:
        query = query.where(Trace.created_at < utc(until, "until"))
    return query


def _variant(v: VariantInfo, requests: int, metrics: list[Metric], arms: dict[tuple[str, str], Arm]) -> VariantReport:
    report = VariantReport(v.name, v.model, v.weight, requests, arms[v.name, "latency"].n)
    for m in metrics:
        arm = arms[v.name, m.key]
        report.estimates[m.key] = Estimate(arm.n, *arm.ci())
    return report


def _compare(metric: Metric, mine: Arm, theirs: Arm, variant: str, baseline: str) -> Comparison:
    diff, low, high = mine.minus(theirs)
    if min(mine.n, theirs.n) < MIN_SAMPLES:
        outcome = "too few"
    elif low > 0 or high < 0:
        outcome = "worse" if (low > 0) == metric.lower_is_better else "better"
    else:
        outcome = "same"
    return Comparison(metric.key, variant, baseline, diff, low, high, outcome)


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (no samples) as null, which strict JSON readers accept."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
