"""The review numbers /metrics shows, read from the store at scrape time: the queue, the decisions, the answers
held for a person, and how many answers reached their user with no person before delivery.

They are the store's, not one process's counters: a decision made in the terminal, a restart, or a second server
on the same store changes nothing about them. Only apps with a review policy (or with review items) get labels, so
the series stay few whatever apps clients name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from fmstack.core.store.schema import ReviewItem, ReviewPolicy, Trace

DECIDED = ("approved", "edited", "rejected")


@dataclass
class ReviewCounts:
    stages: dict[str, str] = field(default_factory=dict)  # app -> crawl | walk | run
    pending: dict[tuple[str, str], int] = field(default_factory=dict)  # (app, reason) -> items waiting
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (app, approved|edited|rejected|skipped)
    seconds: dict[str, float] = field(default_factory=dict)  # app -> reviewer seconds on decided (not skipped) items
    held: dict[str, int] = field(default_factory=dict)  # app -> crawl answers waiting for a decision
    answered: dict[str, int] = field(default_factory=dict)  # app -> answered requests (status ok)
    before_delivery: dict[str, int] = field(default_factory=dict)  # app -> of them, held for a person in crawl


def review_counts(session: Session) -> ReviewCounts:
    """Five grouped queries over the review tables and the traces of apps under review."""
    counts = ReviewCounts(stages=dict(session.execute(select(ReviewPolicy.app, ReviewPolicy.stage)).all()))
    by_status = select(ReviewItem.app, ReviewItem.status, ReviewItem.reason, func.count(), func.sum(ReviewItem.seconds))
    pending: dict[tuple[str, str], int] = defaultdict(int)
    decisions: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for app, status, reason, n, spent in session.execute(
        by_status.group_by(ReviewItem.app, ReviewItem.status, ReviewItem.reason)
    ):
        if status == "pending":
            pending[app, reason] += n
        else:
            decisions[app, status] += n
            if status in DECIDED:  # time per reviewed item: skipping is not reviewing
                seconds[app] += spent or 0.0
    counts.pending, counts.decisions, counts.seconds = dict(pending), dict(decisions), dict(seconds)

    # a held answer is released by the first decision on any of its copies (a double-reviewed one has two)
    decided = select(ReviewItem.trace_id).where(ReviewItem.reason == "crawl", ReviewItem.status.in_(DECIDED))
    held = (
        select(ReviewItem.app, func.count(func.distinct(ReviewItem.trace_id)))
        .where(ReviewItem.reason == "crawl", ReviewItem.status == "pending", ReviewItem.trace_id.not_in(decided))
        .group_by(ReviewItem.app)
    )
    counts.held = dict(session.execute(held).all())

    apps = set(counts.stages) | {app for app, _ in pending} | {app for app, _ in decisions}
    if apps:
        answered = select(Trace.app, func.count()).where(Trace.app.in_(apps), Trace.status == "ok")
        counts.answered = dict(session.execute(answered.group_by(Trace.app)).all())
        crawl = and_(ReviewItem.reason == "crawl", ReviewItem.copy == 0)
        before = select(ReviewItem.app, func.count()).where(crawl).group_by(ReviewItem.app)
        counts.before_delivery = dict(session.execute(before).all())
    return counts
