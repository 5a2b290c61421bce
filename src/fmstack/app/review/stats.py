"""The numbers that say whether an app may need fewer people: per stage, how often reviewers approve, how much they
edit, how far the AI judge agrees with them (Cohen's kappa), how far two reviewers agree, the volume and the human
time; and whether they meet the bars the policy sets for moving on."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from fmstack.app.eval.calibrate import agreement
from fmstack.app.review.policy import STAGES, Policy
from fmstack.core.store.schema import ReviewItem

DECIDED = ("approved", "edited", "rejected")


def edit_distance(before: str, after: str) -> float:
    """Levenshtein distance between the texts (characters), over the longer one's length: 0 unchanged, 1 all
    rewritten. Row by row in numpy: each row's insertions are a running minimum, so no Python loop per cell."""
    if before == after:
        return 0.0
    if not before or not after:
        return 1.0
    a = np.frombuffer(before.encode("utf-32-le"), dtype=np.uint32)
    b = np.frombuffer(after.encode("utf-32-le"), dtype=np.uint32)
    index = np.arange(len(b) + 1)
    row = index.copy()
    for i, char in enumerate(a, 1):
        best = np.empty_like(row)
        best[0] = i
        best[1:] = np.minimum(row[1:] + 1, row[:-1] + (b != char))  # deletion, substitution
        row = np.minimum.accumulate(best - index) + index  # insertion: best[k] + (j - k) for k <= j
    return float(row[-1]) / max(len(a), len(b))


@dataclass
class StageStats:
    """One stage's review numbers; rates over the first review of each answer (a second review only measures
    agreement), human time over every review."""

    stage: str
    queued: int = 0
    pending: int = 0
    reviewed: int = 0
    approved: int = 0
    edited: int = 0
    rejected: int = 0
    skipped: int = 0
    approval_rate: float | None = None
    edit_distance: float | None = None
    judged: int = 0
    judge_kappa: float | None = None
    double_reviewed: int = 0
    reviewer_kappa: float | None = None
    seconds_per_item: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def human_label(status: str) -> int:
    """A reviewer's verdict as a pass/fail label: only an answer approved as it was passes."""
    return int(status == "approved")


def stage_stats(session: Session, policy: Policy) -> dict[str, StageStats]:
    """Every stage's numbers for the app, from its review items."""
    columns = (
        ReviewItem.stage,
        ReviewItem.trace_id,
        ReviewItem.copy,
        ReviewItem.status,
        ReviewItem.reason,
        ReviewItem.edit_distance,
        ReviewItem.seconds,
        ReviewItem.judge_score,
    )
    rows = session.execute(select(*columns).where(ReviewItem.app == policy.app).order_by(ReviewItem.id)).all()
    by_stage: dict[str, list] = defaultdict(list)
    for row in rows:
        by_stage[row.stage].append(row)
    return {stage: _stats(stage, by_stage[stage], policy.threshold) for stage in STAGES}


def _stats(stage: str, rows: list, threshold: float) -> StageStats:
    first = [r for r in rows if r.copy == 0]
    counts = Counter(r.status for r in first)
    decided = [r for r in first if r.status in DECIDED]
    out = StageStats(stage, queued=len(first), pending=counts["pending"], reviewed=len(decided))
    out.approved, out.edited, out.rejected, out.skipped = (counts[s] for s in (*DECIDED, "skipped"))
    out.reasons = dict(Counter(r.reason for r in first))
    if decided:
        out.approval_rate = out.approved / len(decided)
    distances = [r.edit_distance for r in decided if r.edit_distance is not None]
    out.edit_distance = float(np.mean(distances)) if distances else None
    judged = [r for r in decided if r.judge_score is not None]
    out.judged = len(judged)
    out.judge_kappa = _kappa([human_label(r.status) for r in judged], [int(r.judge_score >= threshold) for r in judged])
    pairs = _double_reviews(rows)
    out.double_reviewed = len(pairs)
    out.reviewer_kappa = _kappa([a for a, _ in pairs], [b for _, b in pairs])
    seconds = [r.seconds for r in rows if r.status in DECIDED and r.seconds is not None]
    out.seconds_per_item = float(np.mean(seconds)) if seconds else None
    return out


def _double_reviews(rows: list) -> list[tuple[int, int]]:
    """(first reviewer's label, second reviewer's label) for answers both reviewed."""
    labels: dict[str, dict[int, int]] = defaultdict(dict)
    for r in rows:
        if r.status in DECIDED:
            labels[r.trace_id][r.copy] = human_label(r.status)
    return [(both[0], both[1]) for both in labels.values() if len(both) == 2]


def _kappa(first: list[int], second: list[int]) -> float | None:
    """Cohen's kappa, None when there is nothing to compare or a single label throughout (no chance model)."""
    return agreement(first, second, labels=[0, 1])["kappa"] if first else None


# A bar and the number it reads; `max_` bars are upper limits.
BAR_VALUES = {
    "min_reviewed": "reviewed",
    "min_approval": "approval_rate",
    "max_edit_distance": "edit_distance",
    "min_kappa": "judge_kappa",
    "min_reviewer_kappa": "reviewer_kappa",
}


def bar_checks(stats: StageStats, bars: dict[str, float]) -> list[dict[str, Any]]:
    """Each bar with the stage's value and whether it holds (a number not measured yet does not)."""
    checks = []
    for bar, required in bars.items():
        value = getattr(stats, BAR_VALUES[bar])
        met = value is not None and (value <= required if bar.startswith("max_") else value >= required)
        checks.append({"bar": bar, "required": required, "value": value, "met": met})
    return checks
