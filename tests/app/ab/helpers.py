"""Fixed traffic for the A/B and dashboard tests: traces with their feedback, scores and reviews, written straight
to a real SQLite store, so every number can be checked against a computation by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from fmstack.app.ab import RouteStore
from fmstack.core.config import Settings
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.core.store.schema import Feedback, ReviewItem, Trace, TraceScore

A, B = "smollm2-135m-instruct", "smollm2-priced"
NOW = datetime.now(UTC)
_ids = itertools.count()


def routes(home: Path, database_url: str | None = None) -> RouteStore:
    """Routes on the store in `home` (or at `database_url`), checked against `home`'s registry."""
    settings = Settings(home=home, database_url=database_url)
    return RouteStore(open_store(settings), Registry(settings))


def add_trace(
    sessions: sessionmaker,
    variant: str | None,
    *,
    route: str | None = "shop",
    app: str | None = "shop-bot",
    status: str = "ok",
    latency: float | None = 100.0,
    ttft: float | None = 10.0,
    cost: float = 0.0,
    tokens: tuple[int, int] = (10, 5),
    at: datetime | None = None,
    ratings: tuple[int, ...] = (),
    scores: tuple[tuple[str, float], ...] = (),
    reviews: tuple[tuple[str, str, float | None], ...] = (),  # (status, reason, seconds) of copies 0, 1, …
) -> str:
    """One trace and what hangs off it; returns its id."""
    trace_id = f"chatcmpl-test{next(_ids):06d}"
    ok = status == "ok"
    with sessions.begin() as s:
        s.add(
            Trace(
                id=trace_id,
                created_at=at or NOW - timedelta(minutes=5),
                endpoint="chat.completions",
                model=variant,
                app=app,
                route=route,
                variant=variant,
                status=status,
                status_code=200 if ok else 500,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                latency_ms=latency,
                ttft_ms=ttft if ok else None,
                cost=cost,
            )
        )
        s.flush()
        s.add_all(Feedback(trace_id=trace_id, rating=r) for r in ratings)
        s.add_all(TraceScore(trace_id=trace_id, metric=m, value=v) for m, v in scores)
        s.add_all(
            ReviewItem(
                app=app or "-", trace_id=trace_id, copy=copy, stage="walk", reason=reason, status=state,
                answer="…", skipped_by=[], seconds=seconds,
            )
            for copy, (state, reason, seconds) in enumerate(reviews)
        )
    return trace_id
