"""The dashboard's numbers: per app and per route/variant over a time range, and over time.

Four aggregated queries, each one pass over the traces in the range along a covering index (`ix_traces_dashboard`,
migration 0009, so no trace row is read): counts, errors, tokens and cost grouped by app, route, variant and time
bucket; thumbs, scores and reviews joined to their traces and grouped by app, route and variant. Percentiles need
the values, so the first query also hands back each group's latencies and TTFTs as one concatenated string
(`group_concat`), which numpy parses in one call: no Python object per trace. With 100,000 traces in the range
the answer takes a fraction of a second (`benchmarks/dashboard.py`).

Definitions (the page shows them too):
- automated share: answered requests that reached the user with no person before delivery, i.e. not held for
  review in crawl; 1 for an app without review;
- approval rate: decided first reviews that a person approved as they were (edits and rejections are not);
- human time per item: mean seconds a reviewer spent on a decided item.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Integer, Select, Text, and_, case, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from fmstack.app.ab.times import utc
from fmstack.app.review.stats import DECIDED
from fmstack.core.errors import InvalidRequest, NotFound
from fmstack.core.store.schema import (
    AbChange,
    AbRoute,
    Feedback,
    ReviewItem,
    ReviewPolicy,
    ReviewStageMove,
    Trace,
    TraceScore,
)

BUCKET_WIDTHS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
TARGET_BUCKETS = 60
FIRST = datetime.min.replace(tzinfo=UTC)  # a day before it there is no default start
GROUP = (Trace.app, Trace.route, Trace.variant)
Key = tuple[str | None, str | None, str | None]


@dataclass
class Tally:
    """Sums for one group and the values its percentiles come from; `row` derives rates, means and percentiles."""

    requests: int = 0
    errors: int = 0
    answered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    thumbs_up: int = 0
    thumbs_down: int = 0
    held: int = 0
    decided: int = 0
    approved: int = 0
    review_seconds: float = 0.0
    timed: int = 0
    latency: list[np.ndarray] = field(default_factory=list)
    ttft: list[np.ndarray] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))

    def add(self, other: Tally) -> None:
        for f in fields(self):
            if f.name != "scores":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        for metric, (total, n) in other.scores.items():
            self.scores[metric][0] += total
            self.scores[metric][1] += n

    def counts(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": _ratio(self.errors, self.requests),
            **_percentiles("latency_ms", self.latency, (50, 95, 99)),
            **_percentiles("ttft_ms", self.ttft, (50, 95)),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }

    def row(self) -> dict[str, Any]:
        return self.counts() | {
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "thumbs_up_share": _ratio(self.thumbs_up, self.thumbs_up + self.thumbs_down),
            "automated_share": _ratio(self.answered - self.held, self.answered),
            "reviewed": self.decided,
            "approval_rate": _ratio(self.approved, self.decided),
            "human_seconds_per_item": _ratio(self.review_seconds, self.timed),
            "scores": {m: {"mean": total / n, "n": n} for m, (total, n) in sorted(self.scores.items()) if n},
        }


@dataclass(frozen=True)
class _Scope:
    since: datetime
    until: datetime
    app: str | None
    route: str | None
    width: int  # seconds per time bucket

    def where(self, query: Select) -> Select:
        query = query.where(Trace.created_at >= self.since, Trace.created_at < self.until)
        if self.app is not None:
            query = query.where(Trace.app == self.app)
        if self.route is not None:
            query = query.where(Trace.route == self.route)
        return query

    @property
    def buckets(self) -> int:
        return math.ceil((self.until - self.since).total_seconds() / self.width)


def overview(
    sessions: sessionmaker,
    since: datetime | None = None,
    until: datetime | None = None,
    app: str | None = None,
    route: str | None = None,
) -> dict[str, Any]:
    """Totals, per app, per route/variant and per time bucket, with the stage and route history, for the traces
    created in [since, until) (default: the last 24 hours), optionally of one app and/or one route."""
    scope = _scope(since, until, app, route)
    with sessions() as session:
        _check_filters(session, app, route)
        cells = _cells(session, scope)
        groups = _groups(cells)
        _join_events(session, scope, groups)
        history = _history(session, app, route)
        known = _known(session)
    return {
        "range": {"since": scope.since.isoformat(), "until": scope.until.isoformat(), "bucket_seconds": scope.width},
        "filters": {"app": app, "route": route},
        "totals": _merge(groups.values()).row(),
        "apps": _rows(groups, lambda k: (k[0],), ("app",)),
        "routes": _rows({k: t for k, t in groups.items() if k[1] is not None}, lambda k: k[1:], ("route", "variant")),
        "series": _series(cells, scope),
        **history,
        **known,
    }


def _scope(since: datetime | None, until: datetime | None, app: str | None, route: str | None) -> _Scope:
    """The range, checked, and the width of its time buckets: the narrowest of `BUCKET_WIDTHS` that makes at most
    `TARGET_BUCKETS` (whole days beyond)."""
    until = utc(until, "until") if until else datetime.now(UTC)
    since = utc(since, "since") if since else until - min(timedelta(days=1), until - FIRST)
    if since >= until:
        raise InvalidRequest("since: the range must start before it ends (since < until).", param="since")
    seconds = (until - since).total_seconds()
    days = math.ceil(seconds / TARGET_BUCKETS / 86400) * 86400
    width = next((w for w in BUCKET_WIDTHS if seconds / w <= TARGET_BUCKETS), days)
    return _Scope(since, until, app, route, width)


def _cells(session: Session, scope: _Scope) -> dict[tuple[Key, int], Tally]:
    """Per (app, route, variant) and time bucket: counts, tokens and cost, and the answered requests' values."""
    ok = Trace.status == "ok"
    bucket = _bucket(session, scope)
    dialect = session.get_bind().dialect.name
    query = select(
        *GROUP,
        bucket,
        func.count(),
        func.sum(case((Trace.status == "error", 1), else_=0)),
        func.sum(case((ok, 1), else_=0)),
        func.sum(Trace.prompt_tokens),
        func.sum(Trace.completion_tokens),
        func.sum(Trace.cost),
        _concat(dialect, case((ok, Trace.latency_ms))),
        _concat(dialect, case((ok, Trace.ttft_ms))),
    ).group_by(*GROUP, bucket)
    cells = {}
    for app, route, variant, b, *sums, latency, ttft in session.execute(scope.where(query)):
        cells[(app, route, variant), b] = Tally(*sums, latency=_parse(latency), ttft=_parse(ttft))
    return cells


def _groups(cells: dict[tuple[Key, int], Tally]) -> dict[Key, Tally]:
    groups: dict[Key, Tally] = defaultdict(Tally)
    for (key, _), tally in cells.items():
        groups[key].add(tally)
    return groups


def _join_events(session: Session, scope: _Scope, groups: dict[Key, Tally]) -> None:
    """Thumbs, scores and reviews of the traces in range, added to their groups."""
    for *key, up, down in session.execute(scope.where(_thumbs())):
        groups[tuple(key)].thumbs_up, groups[tuple(key)].thumbs_down = up, down
    for *key, metric, total, n in session.execute(scope.where(_scores())):
        groups[tuple(key)].scores[metric] = [total, n]
    for *key, held, decided, approved, seconds, timed in session.execute(scope.where(_reviews())):
        t = groups[tuple(key)]
        t.held, t.decided, t.approved, t.review_seconds, t.timed = held, decided, approved, seconds, timed


def _thumbs() -> Select:
    up = func.sum(case((Feedback.rating == 1, 1), else_=0))
    down = func.sum(case((Feedback.rating == -1, 1), else_=0))
    return select(*GROUP, up, down).join(Feedback, Feedback.trace_id == Trace.id).group_by(*GROUP)


def _scores() -> Select:
    scored = and_(TraceScore.trace_id == Trace.id, TraceScore.value.is_not(None))
    return (
        select(*GROUP, TraceScore.metric, func.sum(TraceScore.value), func.count())
        .join(TraceScore, scored)
        .group_by(*GROUP, TraceScore.metric)
    )


def _reviews() -> Select:
    decided = ReviewItem.status.in_(DECIDED)
    timed = and_(decided, ReviewItem.seconds.is_not(None))
    return (
        select(
            *GROUP,
            func.sum(case((ReviewItem.reason == "crawl", 1), else_=0)),
            func.sum(case((decided, 1), else_=0)),
            func.sum(case((ReviewItem.status == "approved", 1), else_=0)),
            func.coalesce(func.sum(case((timed, ReviewItem.seconds))), 0.0),
            func.sum(case((timed, 1), else_=0)),
        )
        .join(ReviewItem, and_(ReviewItem.trace_id == Trace.id, ReviewItem.copy == 0))
        .group_by(*GROUP)
    )


def _bucket(session: Session, scope: _Scope) -> ColumnElement[int]:
    """A trace's time bucket, 0 for the first: seconds since `since` over the bucket width, rounded down."""
    start = scope.since.timestamp()
    if session.get_bind().dialect.name == "sqlite":
        # stored as UTC text, which julianday reads to the millisecond: so is `start` cut, and half a millisecond
        # absorbs the float error, or a trace exactly on a bucket's edge could fall into the bucket before
        seconds = (func.julianday(Trace.created_at) - 2440587.5) * 86400.0 - math.floor(start * 1000) / 1000
        return cast((seconds + 0.0005) / scope.width, Integer)  # truncation is rounding down: never negative
    return cast(func.floor((func.extract("epoch", Trace.created_at) - start) / scope.width), Integer)


def _concat(dialect: str, values: ColumnElement) -> ColumnElement[str]:
    """A group's non-null values as one comma-separated string."""
    if dialect == "sqlite":
        return func.group_concat(values)
    return func.string_agg(cast(values, Text), ",")


def _parse(text: str | None) -> list[np.ndarray]:
    return [np.array(text.split(","), dtype=float)] if text else []


def _series(cells: dict[tuple[Key, int], Tally], scope: _Scope) -> list[dict[str, Any]]:
    """Per time bucket, from its first moment: requests, errors, percentiles, tokens and cost."""
    buckets: dict[int, Tally] = defaultdict(Tally)
    for (_, b), tally in cells.items():
        buckets[b].add(tally)
    return [
        {"start": (scope.since + timedelta(seconds=b * scope.width)).isoformat()} | buckets[b].counts()
        for b in range(scope.buckets)
    ]


def _rows(groups: dict[Key, Tally], label: Callable[[Key], tuple], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per label (an app, or a route and variant), the busiest first."""
    merged: dict[tuple, Tally] = defaultdict(Tally)
    for key, tally in groups.items():
        merged[label(key)].add(tally)
    rows = [dict(zip(names, lab, strict=True)) | t.row() for lab, t in merged.items()]
    return sorted(rows, key=lambda r: -r["requests"])


def _history(session: Session, app: str | None, route: str | None) -> dict[str, Any]:
    """Review stage moves and route changes, oldest first, and each app's review stage now."""
    moves = select(ReviewStageMove).order_by(ReviewStageMove.id)
    changes = select(AbChange).order_by(AbChange.id)
    moves = moves.where(ReviewStageMove.app == app) if app is not None else moves
    changes = changes.where(AbChange.route == route) if route is not None else changes
    return {
        "stage_moves": [
            {"app": m.app, "at": utc(m.created_at).isoformat(), "from": m.from_stage, "to": m.to_stage}
            | {"by": m.by, "bars_met": m.bars_met, "forced": m.forced}
            for m in session.scalars(moves)
        ],
        "route_changes": [
            {"route": c.route, "at": utc(c.created_at).isoformat(), "action": c.action}
            | {"before": c.before, "after": c.after, "actor": c.actor}
            for c in session.scalars(changes)
        ],
        "stages": dict(session.execute(select(ReviewPolicy.app, ReviewPolicy.stage)).all()),
    }


def _check_filters(session: Session, app: str | None, route: str | None) -> None:
    """An app nothing was ever traced under (and with no review policy), or a route that never existed nor
    answered: a 404 naming the filter, not an empty dashboard that looks like no traffic."""
    if app is not None:
        traced = session.scalar(select(Trace.id).where(Trace.app == app).limit(1))
        if traced is None and session.get(ReviewPolicy, app) is None:
            raise NotFound(f"app: no trace or review policy has the app '{app}'.", param="app")
    if route is not None:
        traced = session.scalar(select(Trace.id).where(Trace.route == route).limit(1))
        if traced is None and session.scalar(select(AbChange.id).where(AbChange.route == route).limit(1)) is None:
            raise NotFound(f"route: no route '{route}' ever existed or answered a request.", param="route")


def _known(session: Session) -> dict[str, list[str]]:
    """Every app and route there is, for the page's filters (distinct values read off their indexes)."""
    apps = session.scalars(select(Trace.app).distinct().where(Trace.app.is_not(None)).order_by(Trace.app))
    traced = set(session.scalars(select(Trace.route).distinct().where(Trace.route.is_not(None))))
    return {"known_apps": list(apps), "known_routes": sorted(traced | set(session.scalars(select(AbRoute.name))))}


def _merge(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.add(t)
    return total


def _percentiles(name: str, parts: list[np.ndarray], qs: tuple[int, ...]) -> dict[str, float | None]:
    values = np.concatenate(parts) if parts else np.empty(0)
    if not len(values):
        return {f"{name}_p{q}": None for q in qs}
    return {f"{name}_p{q}": float(v) for q, v in zip(qs, np.percentile(values, qs), strict=True)}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None

